# shellcheck shell=bash
# Shared by bin/cohmap and bin/test: Debian package bootstrap and the
# configure/build step.  Sourced, never executed.
#
# After sourcing, the working directory is the repository root and
# COHMAP_ROOT names it.

set -euo pipefail

# Debian packages the build and the test suite need.  Add new ones here.
REQUIRED_PACKAGES=(
	meson
	ninja-build
	gcc
	pkg-config
	libcmocka-dev
	libc6-dev
	python3
	gnuplot-nox # `cohmap bench --plot`
	libvulkan-dev           # the Vulkan layer: headers, loader
	mesa-vulkan-drivers     # lavapipe, the layer tests' driver
	vulkan-validationlayers # the layer tests run under validation
	clang                   # the fuzz leg of bin/test (libFuzzer)
	libclang-rt-14-dev      # libFuzzer's runtime for clang 14 (Debian 12)
	libepoxy-dev            # tests/gl: GL 4.4 entry points on EGL
	libegl-dev              # tests/gl: EGL headers (surfaceless)
	libegl-mesa0            # Mesa's EGL (surfaceless platform)
	libgl1-mesa-dri         # zink, GL on Vulkan (suite gl, piglit)
	piglit                  # bin/cohmap-piglit (suite piglit)
	xvfb                    # cohmap piglit --platform glx, cohmap glmark2
	glmark2-x11             # cohmap glmark2 (docs/benchmarks.md, gl)
)

COHMAP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$COHMAP_ROOT"

cohmap_msg() {
	printf 'cohmap: %s\n' "$*" >&2
}

# Prints the REQUIRED_PACKAGES that are not installed, space-separated.
cohmap_missing_packages() {
	local pkg status missing=()
	for pkg in "${REQUIRED_PACKAGES[@]}"; do
		status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
		if [[ "$status" != *"install ok installed"* ]]; then
			missing+=("$pkg")
		fi
	done
	printf '%s' "${missing[*]-}"
}

# Makes sure REQUIRED_PACKAGES are installed: installs the missing ones with
# apt-get when running as root, otherwise says what to run.  Returns 0 when
# everything is there, 1 otherwise (with a message on stderr).
cohmap_check_packages() {
	local missing log
	if ! command -v dpkg-query >/dev/null 2>&1; then
		cohmap_msg "dpkg-query not found: these scripts install dependencies on Debian only."
		cohmap_msg "install these Debian packages (or your system's equivalents) and build with meson by hand: ${REQUIRED_PACKAGES[*]}"
		return 1
	fi
	missing="$(cohmap_missing_packages)"
	[[ -z "$missing" ]] && return 0

	if [[ "$(id -u)" != 0 ]]; then
		printf 'cohmap: missing Debian packages; run: sudo apt-get install -y %s\n' "$missing" >&2
		return 1
	fi

	cohmap_msg "installing $missing (apt-get)…"
	log="$(mktemp "${TMPDIR:-/tmp}/cohmap-apt.XXXXXX")"
	# shellcheck disable=SC2086 # $missing is a list of package names
	if ! { apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $missing; } </dev/null >"$log" 2>&1; then
		cat "$log" >&2
		rm -f "$log"
		cohmap_msg "apt-get failed to install: $missing"
		return 1
	fi
	rm -f "$log"
	missing="$(cohmap_missing_packages)"
	if [[ -n "$missing" ]]; then
		cohmap_msg "still missing after apt-get: $missing"
		return 1
	fi
	return 0
}

# Like cohmap_check_packages, but exits on failure.
cohmap_ensure_packages() {
	cohmap_check_packages || exit 1
}

# cohmap_build DIR [MESON SETUP OPTIONS...]
#
# Configures DIR with `meson setup` when it has no build.ninja (wiping a
# broken earlier configuration), reconfigures it when OPTIONS changed since
# the last call, then runs `meson compile` (ninja rebuilds what is out of
# date and regenerates itself when a meson.build changed; only the targets
# named in COHMAP_BUILD_TARGETS when it is set).  Quiet on
# success apart from progress lines on stderr; the full log goes to
# DIR/bootstrap.log and is printed on failure.  Returns 0 or 1.
cohmap_build() {
	local dir="$1"
	shift
	local opts="$*" stamp="$dir/.cohmap-setup-options" log step="" rc=0

	log="$(mktemp "${TMPDIR:-/tmp}/cohmap-build.XXXXXX")"

	if [[ ! -f "$dir/build.ninja" ]]; then
		step="configure"
		if [[ -f "$dir/meson-private/coredata.dat" ]]; then
			cohmap_msg "configuring $dir/ (wiping a broken configuration)…"
			meson setup --wipe "$dir" "$@" >"$log" 2>&1 || rc=$?
		else
			cohmap_msg "configuring $dir/…"
			meson setup "$dir" "$@" >"$log" 2>&1 || rc=$?
		fi
	elif [[ ! -f "$stamp" && -z "$opts" ]]; then
		# Configured by someone else, and no options to apply: keep it.
		printf '%s' "$opts" >"$stamp"
	elif [[ ! -f "$stamp" || "$(cat "$stamp")" != "$opts" ]]; then
		step="reconfigure"
		cohmap_msg "reconfiguring $dir/ (options: ${opts:-none})…"
		meson setup --reconfigure "$dir" "$@" >"$log" 2>&1 || rc=$?
	fi
	if [[ $rc -eq 0 && -n "$step" ]]; then
		printf '%s' "$opts" >"$stamp"
	fi

	if [[ $rc -eq 0 ]]; then
		step="build"
		if ! ninja -C "$dir" -n 2>/dev/null | grep -q 'no work to do'; then
			cohmap_msg "building $dir/…"
		fi
		# shellcheck disable=SC2086 # a list of target names
		meson compile -C "$dir" ${COHMAP_BUILD_TARGETS:-} >>"$log" 2>&1 || rc=$?
	fi

	if [[ -d "$dir" ]]; then
		cp "$log" "$dir/bootstrap.log" 2>/dev/null || true
	fi
	if [[ $rc -ne 0 ]]; then
		cat "$log" >&2
		cohmap_msg "$step of $dir/ failed (log: $dir/bootstrap.log)"
		rm -f "$log"
		return 1
	fi
	rm -f "$log"
	return 0
}
