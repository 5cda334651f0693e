#!/bin/sh
# run-fuzz.sh TARGET NAME WORKDIR SEED_DIR...
#
# NAME is the target's name, or NAME/VARIANT for a target run in several
# configurations (vulkan/shadow): its regressions directory is NAME's.
# One bounded libFuzzer run of TARGET (the 'fuzz' suite, -Dfuzz=true):
# COHMAP_FUZZ_TIME seconds (default 5; `bin/test --fuzz-time N` sets it),
# starting from the seed corpus and the regression inputs.  New inputs go
# to WORKDIR/corpus (never into the source tree), a crashing input to
# WORKDIR/crash-*.  Prints the number of executions; exits non-zero when
# libFuzzer found a defect, with the end of its log and what to do next.
set -eu

target="$1" name="$2" work="$3"
shift 3
time="${COHMAP_FUZZ_TIME:-5}"
case "$time" in
'' | *[!0-9]*)
	echo "run-fuzz: COHMAP_FUZZ_TIME='$time': expected whole seconds" >&2
	exit 2
	;;
esac

mkdir -p "$work/corpus"
rm -f "$work/crash-"* "$work/timeout-"* "$work/oom-"* "$work/leak-"*
log="$work/fuzz.log"

# -timeout: one input running this long is a hang (the default is 20
# minutes).  `timeout` is the backstop should libFuzzer itself wedge.
# ASan must let cohmap's SIGSEGV handler (the fault method) be installed.
rc=0
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allow_user_segv_handler=1" \
	timeout -s KILL $((time + 120)) "$target" \
	-max_total_time="$time" -timeout=30 -rss_limit_mb=4096 \
	-print_final_stats=1 -artifact_prefix="$work/" \
	"$work/corpus" "$@" >"$log" 2>&1 || rc=$?

execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
if [ "$rc" -ne 0 ]; then
	tail -n 60 "$log"
	echo "run-fuzz: $name: libFuzzer exited with status $rc (log: $log)"
	for f in "$work"/crash-* "$work"/timeout-* "$work"/oom-* "$work"/leak-*; do
		[ -e "$f" ] || continue
		echo "run-fuzz: $name: failing input $f: fix the defect, then copy it"
		echo "  to tests/fuzz/regressions/${name%%/*}/ so that the replay test keeps it"
	done
	exit 1
fi
echo "run-fuzz: $name: ${execs:-?} executions in $time s, no defect found" \
	"(corpus: $(ls "$work/corpus" | wc -l) new inputs in $work/corpus)"
