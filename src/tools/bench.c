/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: cohmap bench
 *
 * What keeping a CPU→GPU streaming buffer coherent costs per submission,
 * with each tracking method, measured through the winsys API on the sim
 * device — the way a driver using cohmap pays it.
 *
 * A *cell* is (pattern, size, dirty fraction, method).  Its BO is a
 * streaming buffer (COHMAP_BO_COHERENT | COHMAP_BO_PERSISTENT: the GPU
 * only reads it), and every *iteration* is:
 *
 *  1. the CPU stores the pattern into the mapping;
 *  2. (ideal only) cohmap_bo_flush() of exactly the ranges just written;
 *  3. one submission listing the BO for reading, with one command — a
 *     checksum of 64 bytes the CPU just wrote into a small result BO —
 *     and a wait on its fence.
 *
 * The whole iteration is timed.  The stores are included on purpose:
 * fault pays its signal, and scan its write-protect fault, inside them,
 * and the same stores happen for every method, so the difference between
 * two methods is what tracking costs.  Choosing where to write happens
 * before the clock starts; it is the benchmark's work, not the
 * application's.
 *
 * One BO serves the fractions of a (size, pattern, method) in ascending
 * order.  When it is created every page is written once and submitted
 * (untimed): first-touch page allocation on both sides and the first full
 * upload are not steady-state costs.  Each fraction starts with warm-up
 * iterations (enough for an adaptive method to follow the change), then
 * iterations are timed until a time budget is spent, with a minimum count
 * so that big cells still give a median.  The reported figure is the
 * median; bytes uploaded is the mean per submission, from
 * cohmap_bo_get_stats().
 *
 * The result BO is not coherent, so that no tracking cost of its own is
 * added to any method; it is read back (untimed) after every iteration
 * and must hold the checksum of what the CPU wrote — a missed upload makes
 * the cell fail instead of looking fast.  Small BOs (and every BO with
 * --verify) are also checksummed whole at the end of the cell.
 *
 * The random number sequence depends on the cell's pattern, size and
 * fraction, not on the method: every method gets the very same stores.
 *
 * The process runs pinned to one CPU (pin_cpu() says why): the sim's GPU
 * is a thread of this process, and waking it on another vCPU would add
 * noise that no real device has.
 *
 * This file implements no policy: `auto` and `auto-fault` create their
 * device with COHMAP_METHOD_AUTO and report what the library chose.
 */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cohmap/cohmap.h"
#include "cohmap/winsys.h"
#include "tools/bench.h"

extern char **environ;

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define KIB ((size_t)1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)

/* One store of the random pattern: a uniform or a vertex, 64 bytes. */
#define UNIT 64
/* The strided pattern's block: a row of a small texture, a vertex of a
 * fat format. */
#define STRIDE_BLOCK 256
/* What the per-submission command reads back. */
#define CHECK_SIZE     64
#define RESULT_BO_SIZE 4096

/* Stores copy from a pool of random bytes at a base offset drawn per
 * submission, so that every submission writes new values (compare reports
 * only bytes that really changed) without generating them on the clock.
 * A copy takes at most POOL_SPAN bytes at a time. */
#define POOL_SPAN (64 * KIB)
#define POOL_SIZE (2 * POOL_SPAN)

/* The phase-changing workload. */
/* Adaptive methods' warm-up: until this many submissions on one method,
 * at most WARMUP_MAX (run_cell()). */
#define WARMUP_SETTLED 3
#define WARMUP_MAX     32

#define PHASE_PARTS   4
#define PHASE_SUBMITS 50

/* Whole-BO checksums cost about a nanosecond per byte on each side; below
 * this size they are always done, above only with --verify. */
#define VERIFY_WHOLE_MAX MIB

#define MAX_SIZES     16
#define MAX_FRACTIONS 32
#define WORST_CELLS   5

/* The targets, printed next to the ratios (not asserted here). */
#define TARGET_CELL         1.10
#define TARGET_GEOMEAN      1.05
#define TARGET_PHASE        1.5
#define TARGET_IDEAL        3.0
#define IDEAL_FROM_FRACTION 0.01

#define SEED 0x636f686d61702d62ull

enum bench_method {
   BENCH_FULL,
   BENCH_COMPARE,
   BENCH_FAULT,
   BENCH_SCAN,
   BENCH_AUTO,
   BENCH_AUTO_FAULT,
   BENCH_IDEAL,
   BENCH_METHOD_COUNT,
};

/* A CPU→GPU streaming buffer: the CPU writes, the GPU only reads. */
#define STREAM_BO (COHMAP_BO_COHERENT | COHMAP_BO_PERSISTENT)

static const struct method_desc {
   const char *name;
   enum cohmap_method device_method;
   uint32_t bo_flags;
   /* A non-coherent BO that the bench flushes itself. */
   bool app_flushes;
   /* The method the machine must support for the cells to run. */
   enum cohmap_method needs;
} method_descs[BENCH_METHOD_COUNT] = {
   [BENCH_FULL] = {"full", COHMAP_METHOD_FULL, STREAM_BO, false,
                   COHMAP_METHOD_FULL},
   [BENCH_COMPARE] = {"compare", COHMAP_METHOD_COMPARE, STREAM_BO, false,
                      COHMAP_METHOD_COMPARE},
   /* fault is not transparent to kernel writes: only a BO promising CPU
    * stores alone may use it. */
   [BENCH_FAULT] = {"fault", COHMAP_METHOD_FAULT,
                    STREAM_BO | COHMAP_BO_CPU_STORES_ONLY, false,
                    COHMAP_METHOD_FAULT},
   [BENCH_SCAN] = {"scan", COHMAP_METHOD_SCAN, STREAM_BO, false,
                   COHMAP_METHOD_SCAN},
   [BENCH_AUTO] = {"auto", COHMAP_METHOD_AUTO, STREAM_BO, false,
                   COHMAP_METHOD_AUTO},
   [BENCH_AUTO_FAULT] = {"auto-fault", COHMAP_METHOD_AUTO,
                         STREAM_BO | COHMAP_BO_CPU_STORES_ONLY, false,
                         COHMAP_METHOD_AUTO},
   /* The device method does not matter: the BO is not tracked. */
   [BENCH_IDEAL] = {"ideal", COHMAP_METHOD_FULL, COHMAP_BO_PERSISTENT, true,
                    COHMAP_METHOD_AUTO},
};

/* What auto may choose from by default, and with fault allowed. */
static const enum bench_method fixed3[] = {BENCH_FULL, BENCH_COMPARE,
                                           BENCH_SCAN};
static const enum bench_method fixed4[] = {BENCH_FULL, BENCH_COMPARE,
                                           BENCH_SCAN, BENCH_FAULT};

enum bench_pattern {
   PAT_RANDOM,
   PAT_SEQUENTIAL,
   PAT_STRIDED,
   PAT_RING,
   PAT_PHASE,
   PAT_COUNT,
};

static const char *const pattern_names[PAT_COUNT] = {
   [PAT_RANDOM] = "random",   [PAT_SEQUENTIAL] = "sequential",
   [PAT_STRIDED] = "strided", [PAT_RING] = "ring",
   [PAT_PHASE] = "phase",
};

static const struct phase_part {
   const char *name;
   enum bench_pattern pattern;
   double fraction;
} phase_parts[PHASE_PARTS] = {
   {"idle", PAT_RANDOM, 0},
   {"sparse", PAT_RANDOM, 0.001},
   {"dense", PAT_SEQUENTIAL, 0.5},
   {"idle", PAT_RANDOM, 0},
};

static const double default_fractions[] = {0,   0.0001, 0.001, 0.01,
                                           0.1, 0.5,    1.0};
static const size_t default_sizes[] = {64 * KIB, MIB, 16 * MIB, 256 * MIB};
static const size_t quick_sizes[] = {64 * KIB, MIB, 4 * MIB};
#define FULL_EXTRA_SIZE GIB

struct repetitions {
   unsigned warmup;
   unsigned min_submits;
   unsigned max_submits;
   uint64_t budget_ns;
};

/* Default: a stable median for small cells (thousands of submissions),
 * at least 7 for big ones, so that a 256 MiB cell at 100 % stays a few
 * seconds.  At least eight warm-ups for auto and auto-fault (one for the
 * others), then on until the policy settles (run_cell()): the policy's
 * confirmation, dwell and payback hold a switch for 3-6 collects, during
 * which "one method for 3 submissions" alone looks settled; with three
 * the switch often landed in the timed submissions. */
static const struct repetitions default_reps = {8, 7, 5000,
                                                100ull * 1000 * 1000};
/* --quick: a smoke run that still orders the methods, under a minute
 * on two busy cores. */
static const struct repetitions quick_reps = {8, 5, 1000,
                                              10ull * 1000 * 1000};

struct options {
   size_t sizes[MAX_SIZES];
   size_t nsizes;
   double fractions[MAX_FRACTIONS];
   size_t nfractions;
   bool method_on[BENCH_METHOD_COUNT];
   bool pattern_on[PAT_COUNT];
   bool quick, full, sizes_given, verify, no_pin;
   const char *csv_path;
   const char *plot_dir;
   struct repetitions reps;
};

struct cell {
   bool ran;    /* measured, every check passed */
   bool failed; /* an error or a wrong result */
   bool shared; /* fraction 0: a copy of another pattern's measurement */
   unsigned submits;
   double median_ns, mean_ns, total_ns;
   double bytes; /* mean uploaded per submission */
   /* The tracking method at the first and the last timed submission, and
    * how often it changed in between (AUTO for ideal: not tracked). */
   enum cohmap_method first_method, final_method;
   unsigned method_changes;
   /* phase only */
   double part_mean_ns[PHASE_PARTS];
   enum cohmap_method part_method[PHASE_PARTS];
};

struct method_state {
   bool on;
   const char *unavailable; /* why not, or NULL */
   struct cohmap_device *dev;
   struct cohmap_bo *result;
};

/* The writes of one submission. */
struct plan {
   struct cohmap_range *ranges; /* in store order */
   size_t count;
   size_t bytes;
   size_t stride; /* strided: bytes between blocks, 0 otherwise */
   size_t check_offset;
   size_t pool_base;
};

/* A pattern's state across the submissions of one cell. */
struct workload {
   enum bench_pattern pattern;
   double fraction;
   size_t size;
   uint64_t rng;
   size_t ring_pos;
};

struct bench {
   struct options o;
   size_t page_size;
   struct cohmap_context *ctx;
   struct method_state ms[BENCH_METHOD_COUNT];
   int pinned_cpu; /* -1: not pinned */

   struct cell *cells; /* [size][pattern][fraction][method] */
   FILE *csv;
   const char *csv_path;
   char *csv_path_owned;

   uint8_t *pool;
   /* Scratch for plans, sized for the BO size being measured. */
   uint32_t *perm;
   struct cohmap_range *ranges;
   uint64_t *times;
   size_t times_cap;

   unsigned progress, progress_total;
   uint64_t cell_start_ns;
   unsigned failures;
};

static uint64_t
now_ns(void)
{
   struct timespec ts;

   clock_gettime(CLOCK_MONOTONIC, &ts);
   return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64: tiny, seedable, and good enough to scatter writes. */
static uint64_t
rng_next(uint64_t *state)
{
   uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
   z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
   z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
   return z ^ (z >> 31);
}

static uint64_t
rng_below(uint64_t *state, uint64_t bound)
{
   /* The modulo bias is below 2^-40 for the bounds used here. */
   return bound ? rng_next(state) % bound : 0;
}

static struct cell *
cell_at(struct bench *b, size_t si, enum bench_pattern p, size_t fi,
        enum bench_method m)
{
   size_t i = ((si * PAT_COUNT + (size_t)p) * b->o.nfractions + fi) *
                 BENCH_METHOD_COUNT +
              (size_t)m;
   return &b->cells[i];
}

static const char *
size_name(size_t size, char *buf, size_t len)
{
   if (size >= GIB && size % GIB == 0)
      snprintf(buf, len, "%zu GiB", size / GIB);
   else if (size >= MIB && size % MIB == 0)
      snprintf(buf, len, "%zu MiB", size / MIB);
   else if (size >= KIB && size % KIB == 0)
      snprintf(buf, len, "%zu KiB", size / KIB);
   else
      snprintf(buf, len, "%zu B", size);
   return buf;
}

/* For file names: "64KiB". */
static const char *
size_tag(size_t size, char *buf, size_t len)
{
   char tmp[32];
   size_t j = 0;

   size_name(size, tmp, sizeof(tmp));
   for (size_t i = 0; tmp[i] && j + 1 < len; i++) {
      if (tmp[i] != ' ')
         buf[j++] = tmp[i];
   }
   buf[j] = '\0';
   return buf;
}

static const char *
fraction_label(double f, char *buf, size_t len)
{
   snprintf(buf, len, "%g %%", f * 100.0);
   return buf;
}

/* Three significant digits, in the unit that keeps them readable. */
static const char *
fmt_ns(double ns, char *buf, size_t len)
{
   static const struct {
      double scale;
      const char *unit;
   } units[] = {{1, "ns"}, {1e3, "µs"}, {1e6, "ms"}, {1e9, "s"}};
   size_t u = 0;

   /* Thresholds a hair below the unit, so 999.96 ns reads 1.00 µs. */
   while (u + 1 < ARRAY_SIZE(units) && ns >= units[u + 1].scale * 0.99995)
      u++;
   double v = ns / units[u].scale;
   int prec = v >= 99.95 || u == 0 ? 0 : v >= 9.995 ? 1 : 2;
   snprintf(buf, len, "%.*f %s", prec, v, units[u].unit);
   return buf;
}

static const char *
fmt_bytes(double bytes, char *buf, size_t len)
{
   if (bytes < 1024)
      snprintf(buf, len, "%.0f B", bytes);
   else if (bytes < 1024.0 * 1024)
      snprintf(buf, len, "%.1f KiB", bytes / 1024);
   else if (bytes < 1024.0 * 1024 * 1024)
      snprintf(buf, len, "%.1f MiB", bytes / 1024 / 1024);
   else
      snprintf(buf, len, "%.2f GiB", bytes / 1024 / 1024 / 1024);
   return buf;
}

static const char *
method_short(enum cohmap_method m)
{
   const char *n = cohmap_method_name(m);
   return n ? n : "?";
}

/* Pages written by `random` at fraction f: at least one unless f is 0, so
 * that "a few writes" never turns into "no writes" on a small BO. */
static size_t
pages_for(size_t npages, double f)
{
   if (f <= 0)
      return 0;
   size_t k = (size_t)((double)npages * f + 0.5);
   if (k == 0)
      k = 1;
   return k < npages ? k : npages;
}

/* Bytes of a `sequential` run or a `ring` step: whole 64-byte units, at
 * least one unless f is 0. */
static size_t
bytes_for(size_t size, double f)
{
   if (f <= 0)
      return 0;
   size_t units = (size_t)((double)size * f / UNIT + 0.5);
   if (units == 0)
      units = 1;
   if (units > size / UNIT)
      units = size / UNIT;
   return units * UNIT;
}

/* Blocks between two written blocks of `strided`: the fraction is
 * 1 / stride. */
static size_t
stride_for(double f)
{
   size_t k = (size_t)(1.0 / f + 0.5);
   return k ? k : 1;
}

static void
workload_init(struct workload *w, enum bench_pattern p, double f, size_t size)
{
   memset(w, 0, sizeof(*w));
   w->pattern = p;
   w->fraction = f;
   w->size = size;
   /* Not the method: every method must get the same stores. */
   w->rng = SEED ^ ((uint64_t)p << 56) ^ (uint64_t)size ^
            ((uint64_t)(f * 1e9) << 20);
}

static void
workload_set(struct workload *w, enum bench_pattern p, double f)
{
   w->pattern = p;
   w->fraction = f;
}

/* The ranges the next submission writes. */
static void
make_plan(struct bench *b, struct workload *w, struct plan *p)
{
   size_t size = w->size, ps = b->page_size;
   double f = w->fraction;

   p->ranges = b->ranges;
   p->count = 0;
   p->stride = 0;

   switch (w->pattern) {
   case PAT_RANDOM:
   case PAT_PHASE: {
      size_t npages = size / ps;
      size_t k = pages_for(npages, f);
      for (size_t i = 0; i < k; i++) {
         size_t page;
         if (k == npages) {
            /* Every page: in address order, as a full rewrite would. */
            page = i;
         } else {
            /* A partial Fisher-Yates shuffle: k distinct pages.  Any
             * permutation is a valid start, so perm is never reset. */
            size_t j = i + (size_t)rng_below(&w->rng, npages - i);
            uint32_t t = b->perm[i];
            b->perm[i] = b->perm[j];
            b->perm[j] = t;
            page = b->perm[i];
         }
         size_t off = (size_t)rng_below(&w->rng, ps / UNIT) * UNIT;
         p->ranges[p->count++] = (struct cohmap_range){page * ps + off, UNIT};
      }
      break;
   }
   case PAT_SEQUENTIAL: {
      size_t len = bytes_for(size, f);
      if (len) {
         size_t off =
            (size_t)rng_below(&w->rng, (size - len) / UNIT + 1) * UNIT;
         p->ranges[p->count++] = (struct cohmap_range){off, len};
      }
      break;
   }
   case PAT_STRIDED: {
      if (f <= 0)
         break;
      size_t k = stride_for(f);
      size_t nblocks = size / STRIDE_BLOCK;
      /* A new phase each submission, so that other blocks change; at
       * least one block is written even when k exceeds the BO. */
      size_t first = (size_t)rng_below(&w->rng, k < nblocks ? k : nblocks);
      for (size_t blk = first; blk < nblocks; blk += k)
         p->ranges[p->count++] =
            (struct cohmap_range){blk * STRIDE_BLOCK, STRIDE_BLOCK};
      p->stride = k * STRIDE_BLOCK;
      break;
   }
   case PAT_RING: {
      size_t len = bytes_for(size, f);
      while (len) {
         size_t piece = size - w->ring_pos < len ? size - w->ring_pos : len;
         p->ranges[p->count++] = (struct cohmap_range){w->ring_pos, piece};
         w->ring_pos = (w->ring_pos + piece) % size;
         len -= piece;
      }
      break;
   }
   case PAT_COUNT:
      break;
   }

   p->bytes = 0;
   for (size_t i = 0; i < p->count; i++)
      p->bytes += p->ranges[i].length;
   /* Every range is at least 64 bytes (units, blocks), so the command
    * reads bytes this very submission wrote. */
   p->check_offset = p->count ? p->ranges[0].offset : 0;
   p->pool_base = (size_t)rng_below(&w->rng, POOL_SPAN / UNIT) * UNIT;
}

/* The plan that rewrites the whole BO (population). */
static void
whole_plan(struct bench *b, size_t size, uint64_t *rng, struct plan *p)
{
   p->ranges = b->ranges;
   p->ranges[0] = (struct cohmap_range){0, size};
   p->count = 1;
   p->bytes = size;
   p->stride = 0;
   p->check_offset = 0;
   p->pool_base = (size_t)rng_below(rng, POOL_SPAN / UNIT) * UNIT;
}

static void
do_stores(uint8_t *map, const struct plan *p, const uint8_t *pool)
{
   for (size_t i = 0; i < p->count; i++) {
      size_t off = p->ranges[i].offset, len = p->ranges[i].length;
      const uint8_t *src = pool + (p->pool_base + i * UNIT) % POOL_SPAN;
      while (len) {
         size_t n = len < POOL_SPAN ? len : POOL_SPAN;
         memcpy(map + off, src, n);
         off += n;
         len -= n;
      }
   }
}

/* ideal: what an application that flushes by hand calls. */
static int
app_flush(struct cohmap_bo *bo, const struct plan *p)
{
   if (!p->count)
      return 0;
   if (p->stride && p->count > 1) {
      /* Strided writes are one box, as a texture update would be. */
      struct cohmap_box box = {
         .offset = p->ranges[0].offset,
         .row_pitch = p->stride,
         .width = p->ranges[0].length,
         .height = p->count,
      };
      return cohmap_bo_flush_box(bo, &box);
   }
   for (size_t i = 0; i < p->count; i++) {
      int ret = cohmap_bo_flush(bo, p->ranges[i].offset, p->ranges[i].length);
      if (ret)
         return ret;
   }
   return 0;
}

static int
submit_checksum(struct method_state *ms, struct cohmap_bo *bo, size_t off,
                size_t len)
{
   struct cohmap_submit *s;
   struct cohmap_fence *fence;

   int ret = cohmap_submit_begin(ms->dev, &s);
   if (ret)
      return ret;
   cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_READ);
   cohmap_submit_add_bo(s, ms->result, COHMAP_ACCESS_WRITE);
   /* A recording error is also refused by submit_end. */
   cohmap_cmd_checksum(s, ms->result, 0, bo, off, len);
   ret = cohmap_submit_end(s, &fence);
   if (ret)
      return ret;
   ret = cohmap_fence_wait(fence, UINT64_MAX);
   cohmap_fence_destroy(fence);
   return ret;
}

/* Stores, (ideal) flush, submit, wait: what one timed iteration costs. */
static int
iterate(struct bench *b, struct method_state *ms, const struct method_desc *d,
        struct cohmap_bo *bo, uint8_t *map, const struct plan *p,
        uint64_t *ns)
{
   uint64_t t0 = now_ns();
   do_stores(map, p, b->pool);
   int ret = d->app_flushes ? app_flush(bo, p) : 0;
   if (ret == 0)
      ret = submit_checksum(ms, bo, p->check_offset, CHECK_SIZE);
   *ns = now_ns() - t0;
   return ret;
}

/* Whether the device computed the checksum of what the mapping holds at
 * [off, off + len): a byte the upload missed shows here.  -EIO if not. */
static int
check_result(struct method_state *ms, const uint8_t *map, size_t off,
             size_t len)
{
   int ret = cohmap_bo_invalidate(ms->result, 0, sizeof(uint64_t));
   if (ret)
      return ret;
   const uint8_t *r = cohmap_bo_map(ms->result);
   uint64_t got = 0;
   for (unsigned i = 0; i < 8; i++)
      got |= (uint64_t)r[i] << (8 * i);
   return got == cohmap_checksum(map + off, len) ? 0 : -EIO;
}

static const char *
error_text(int ret)
{
   if (ret == -EIO)
      return "WRONG RESULT: the device checksum differs from the mapping "
             "(a write was not uploaded)";
   const char *m = cohmap_error_message();
   return m && *m ? m : strerror(-ret);
}

static int
cmp_u64(const void *a, const void *b)
{
   uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

   return (x > y) - (x < y);
}

static double
median_of(uint64_t *v, size_t n)
{
   qsort(v, n, sizeof(v[0]), cmp_u64);
   if (n % 2)
      return (double)v[n / 2];
   return ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2.0;
}

static uint64_t
bo_uploaded(struct cohmap_bo *bo)
{
   struct cohmap_bo_stats st;

   return cohmap_bo_get_stats(bo, &st) == 0 ? st.bytes_uploaded : 0;
}

static int
times_reserve(struct bench *b, size_t n)
{
   if (n <= b->times_cap)
      return 0;
   uint64_t *t = realloc(b->times, n * sizeof(*t));
   if (!t)
      return -ENOMEM;
   b->times = t;
   b->times_cap = n;
   return 0;
}

/* A fresh BO of the cell's method, every page written once and uploaded
 * (untimed: first-touch allocation and the initial upload are not what is
 * measured). */
static int
cell_setup(struct bench *b, enum bench_method m, size_t size, uint64_t *rng,
           struct cohmap_bo **out)
{
   const struct method_desc *d = &method_descs[m];
   struct method_state *ms = &b->ms[m];
   struct cohmap_bo *bo;
   struct plan p;

   int ret = cohmap_bo_create(ms->dev, size, d->bo_flags, &bo);
   if (ret)
      return ret;
   whole_plan(b, size, rng, &p);
   do_stores(cohmap_bo_map(bo), &p, b->pool);
   ret = d->app_flushes ? app_flush(bo, &p) : 0;
   if (ret == 0)
      ret = submit_checksum(ms, bo, 0, CHECK_SIZE);
   if (ret) {
      cohmap_bo_destroy(bo);
      return ret;
   }
   *out = bo;
   return 0;
}

/* After the timed iterations: the device copy of the whole BO must equal
 * the mapping (small BOs, or --verify). */
static int
cell_verify(struct bench *b, enum bench_method m, struct cohmap_bo *bo,
            size_t size)
{
   if (size > VERIFY_WHOLE_MAX && !b->o.verify)
      return 0;
   int ret = submit_checksum(&b->ms[m], bo, 0, size);
   if (ret == 0)
      ret = check_result(&b->ms[m], cohmap_bo_map(bo), 0, size);
   return ret;
}

static void
track_method(struct cell *c, struct cohmap_bo *bo, unsigned n)
{
   enum cohmap_method now = cohmap_bo_method(bo);

   if (n == 0)
      c->first_method = now;
   else if (now != c->final_method)
      c->method_changes++;
   c->final_method = now;
}

static void
progress_begin(struct bench *b, const char *pattern, size_t size,
               const char *fraction, enum bench_method m)
{
   char sname[32];

   b->progress++;
   b->cell_start_ns = now_ns();
   fprintf(stderr, "[%u/%u] %s %s %s %s ...", b->progress, b->progress_total,
           pattern, size_name(size, sname, sizeof(sname)), fraction,
           method_descs[m].name);
   fflush(stderr);
}

static void
progress_end(struct bench *b, const struct cell *c, int ret)
{
   char t[32], by[32], wall[32];

   fmt_ns((double)(now_ns() - b->cell_start_ns), wall, sizeof(wall));
   if (ret) {
      fprintf(stderr, " FAILED: %s [%s]\n", error_text(ret), wall);
      return;
   }
   fprintf(stderr, " %s, %s/submit, %u submissions",
           fmt_ns(c->median_ns, t, sizeof(t)),
           fmt_bytes(c->bytes, by, sizeof(by)), c->submits);
   if (c->final_method != COHMAP_METHOD_AUTO)
      fprintf(stderr, ", %s", method_short(c->final_method));
   if (c->method_changes)
      fprintf(stderr, " (%u method changes)", c->method_changes);
   fprintf(stderr, " [%s]\n", wall);
}

/* One (pattern, size, fraction, method) cell on bo, a BO of the method
 * that earlier fractions may have used.  Returns 0 or the error that
 * stopped it. */
static int
run_cell(struct bench *b, enum bench_method m, struct cohmap_bo *bo,
         size_t size, enum bench_pattern pat, double f, struct cell *c)
{
   const struct method_desc *d = &method_descs[m];
   const struct repetitions *r = &b->o.reps;
   uint8_t *map = cohmap_bo_map(bo);
   struct workload w;
   struct plan p;
   uint64_t ns;

   memset(c, 0, sizeof(*c));
   workload_init(&w, pat, f, size);
   int ret = times_reserve(b, r->max_submits);

   /* Long enough for an adaptive method to follow the change from the
    * previous fraction before the clock starts: the cells measure where
    * the policy settles (how fast it gets there is what `phase`
    * measures), so its warm-up goes on while it still switches, until
    * WARMUP_SETTLED submissions on one method or WARMUP_MAX in all.  A
    * fixed method is in its steady state after one submission of the new
    * pattern; more would only cost seconds per cell at 256 MiB. */
   bool adaptive = d->device_method == COHMAP_METHOD_AUTO && !d->app_flushes;
   unsigned warmup = adaptive ? r->warmup : 1, since_change = 0;
   enum cohmap_method was = cohmap_bo_method(bo);
   for (unsigned i = 0; ret == 0 && i < WARMUP_MAX; i++) {
      if (i >= warmup && (!adaptive || since_change >= WARMUP_SETTLED))
         break;
      make_plan(b, &w, &p);
      ret = iterate(b, &b->ms[m], d, bo, map, &p, &ns);
      if (ret == 0)
         ret = check_result(&b->ms[m], map, p.check_offset, CHECK_SIZE);
      enum cohmap_method now = cohmap_bo_method(bo);
      since_change = now == was ? since_change + 1 : 0;
      was = now;
   }

   uint64_t total = 0, up0 = bo_uploaded(bo);
   unsigned n = 0;
   while (ret == 0 && (n < r->min_submits ||
                       (total < r->budget_ns && n < r->max_submits))) {
      make_plan(b, &w, &p);
      ret = iterate(b, &b->ms[m], d, bo, map, &p, &ns);
      if (ret)
         break;
      b->times[n] = ns;
      total += ns;
      track_method(c, bo, n);
      n++;
      /* Untimed: the per-submission correctness check. */
      ret = check_result(&b->ms[m], map, p.check_offset, CHECK_SIZE);
   }
   uint64_t uploaded = bo_uploaded(bo) - up0;
   if (ret == 0)
      ret = cell_verify(b, m, bo, size);
   if (ret)
      return ret;

   c->ran = true;
   c->submits = n;
   c->total_ns = (double)total;
   c->mean_ns = (double)total / n;
   c->median_ns = median_of(b->times, n);
   c->bytes = (double)uploaded / n;
   return 0;
}

/* The phase-changing workload: idle, sparse, dense, idle, all timed, no
 * warm-up after the population: how fast a method follows the change is
 * the point. */
static int
run_phase(struct bench *b, enum bench_method m, size_t size, struct cell *c)
{
   const struct method_desc *d = &method_descs[m];
   struct workload w;
   struct cohmap_bo *bo;
   struct plan p;
   uint64_t ns;

   memset(c, 0, sizeof(*c));
   workload_init(&w, PAT_PHASE, 0, size);
   int ret = times_reserve(b, PHASE_PARTS * PHASE_SUBMITS);
   if (ret)
      return ret;
   ret = cell_setup(b, m, size, &w.rng, &bo);
   if (ret)
      return ret;
   uint8_t *map = cohmap_bo_map(bo);

   uint64_t total = 0, up0 = bo_uploaded(bo);
   unsigned n = 0;
   for (unsigned part = 0; part < PHASE_PARTS && ret == 0; part++) {
      const struct phase_part *pp = &phase_parts[part];
      uint64_t part_total = 0;
      workload_set(&w, pp->pattern, pp->fraction);
      for (unsigned i = 0; i < PHASE_SUBMITS; i++) {
         make_plan(b, &w, &p);
         ret = iterate(b, &b->ms[m], d, bo, map, &p, &ns);
         if (ret)
            break;
         b->times[n] = ns;
         part_total += ns;
         track_method(c, bo, n);
         n++;
         ret = check_result(&b->ms[m], map, p.check_offset, CHECK_SIZE);
         if (ret)
            break;
      }
      total += part_total;
      c->part_mean_ns[part] = (double)part_total / PHASE_SUBMITS;
      c->part_method[part] = cohmap_bo_method(bo);
   }
   uint64_t uploaded = bo_uploaded(bo) - up0;
   if (ret == 0)
      ret = cell_verify(b, m, bo, size);
   cohmap_bo_destroy(bo);
   if (ret)
      return ret;

   c->ran = true;
   c->submits = n;
   c->total_ns = (double)total;
   c->mean_ns = (double)total / n;
   c->median_ns = median_of(b->times, n);
   c->bytes = (double)uploaded / n;
   return 0;
}

static bool
best_of(struct bench *b, size_t si, enum bench_pattern p, size_t fi,
        const enum bench_method *set, size_t n, bool use_mean, double *best,
        enum bench_method *which)
{
   bool any = false;

   for (size_t i = 0; i < n; i++) {
      const struct cell *c = cell_at(b, si, p, fi, set[i]);
      if (!c->ran)
         continue;
      double v = use_mean ? c->mean_ns : c->median_ns;
      if (!any || v < *best) {
         *best = v;
         *which = set[i];
      }
      any = true;
   }
   return any;
}

enum ratio_kind {
   RATIO_AUTO_FIXED3,
   RATIO_AUTOF_FIXED4,
   RATIO_AUTO_IDEAL,
   RATIO_COUNT,
};

static const char *const ratio_names[RATIO_COUNT] = {
   "auto / best of full, compare, scan",
   "auto-fault / best of full, compare, scan, fault",
   "auto / ideal",
};

static const char *const ratio_short[RATIO_COUNT] = {
   "auto/best3",
   "auto-fault/best4",
   "auto/ideal",
};

/* One of the ratios of a cell; false when a side did not run. */
static bool
cell_ratio(struct bench *b, size_t si, enum bench_pattern p, size_t fi,
           enum ratio_kind k, double *ratio, enum bench_method *base)
{
   enum bench_method who =
      k == RATIO_AUTOF_FIXED4 ? BENCH_AUTO_FAULT : BENCH_AUTO;
   const struct cell *a = cell_at(b, si, p, fi, who);
   bool mean = p == PAT_PHASE;
   double best = 0;

   if (!a->ran)
      return false;
   bool ok;
   switch (k) {
   case RATIO_AUTO_FIXED3:
      ok =
         best_of(b, si, p, fi, fixed3, ARRAY_SIZE(fixed3), mean, &best, base);
      break;
   case RATIO_AUTOF_FIXED4:
      ok =
         best_of(b, si, p, fi, fixed4, ARRAY_SIZE(fixed4), mean, &best, base);
      break;
   default: {
      static const enum bench_method ideal[] = {BENCH_IDEAL};
      ok = best_of(b, si, p, fi, ideal, 1, mean, &best, base);
      break;
   }
   }
   if (!ok || best <= 0)
      return false;
   *ratio = (mean ? a->mean_ns : a->median_ns) / best;
   return true;
}

static void
print_chose(const struct cell *c)
{
   if (!c->ran) {
      printf(" -");
      return;
   }
   printf(" %s", method_short(c->final_method));
   if (c->first_method != c->final_method || c->method_changes)
      printf(" (from %s, %u changes)", method_short(c->first_method),
             c->method_changes);
}

static void
print_group(struct bench *b, size_t si, enum bench_pattern pat)
{
   size_t size = b->o.sizes[si];
   char sname[32], buf[32];
   bool autos = b->ms[BENCH_AUTO].on || b->ms[BENCH_AUTO_FAULT].on;

   printf("\n### %s, %s (%zu pages): median time per submission\n\n",
          pattern_names[pat], size_name(size, sname, sizeof(sname)),
          size / b->page_size);
   printf("| dirty |");
   for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
      if (b->ms[m].on)
         printf(" %s |", method_descs[m].name);
   }
   for (int k = 0; k < RATIO_COUNT && autos; k++)
      printf(" %s |", ratio_short[k]);
   if (b->ms[BENCH_AUTO].on)
      printf(" auto chose |");
   if (b->ms[BENCH_AUTO_FAULT].on)
      printf(" auto-fault chose |");
   printf("\n|--:|");
   for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
      if (b->ms[m].on)
         printf("--:|");
   }
   for (int k = 0; k < RATIO_COUNT && autos; k++)
      printf("--:|");
   if (b->ms[BENCH_AUTO].on)
      printf("---|");
   if (b->ms[BENCH_AUTO_FAULT].on)
      printf("---|");
   printf("\n");

   for (size_t fi = 0; fi < b->o.nfractions; fi++) {
      printf("| %s |", fraction_label(b->o.fractions[fi], buf, sizeof(buf)));
      for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
         if (!b->ms[m].on)
            continue;
         const struct cell *c = cell_at(b, si, pat, fi, m);
         printf(" %s |", c->ran      ? fmt_ns(c->median_ns, buf, sizeof(buf))
                         : c->failed ? "FAILED"
                                     : "-");
      }
      for (int k = 0; k < RATIO_COUNT && autos; k++) {
         double r;
         enum bench_method base;
         if (cell_ratio(b, si, pat, fi, k, &r, &base))
            printf(" %.2f |", r);
         else
            printf(" - |");
      }
      if (b->ms[BENCH_AUTO].on) {
         print_chose(cell_at(b, si, pat, fi, BENCH_AUTO));
         printf(" |");
      }
      if (b->ms[BENCH_AUTO_FAULT].on) {
         print_chose(cell_at(b, si, pat, fi, BENCH_AUTO_FAULT));
         printf(" |");
      }
      printf("\n");
   }

   printf("\nbytes uploaded per submission (mean):\n\n| dirty |");
   for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
      if (b->ms[m].on)
         printf(" %s |", method_descs[m].name);
   }
   printf("\n|--:|");
   for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
      if (b->ms[m].on)
         printf("--:|");
   }
   printf("\n");
   for (size_t fi = 0; fi < b->o.nfractions; fi++) {
      printf("| %s |", fraction_label(b->o.fractions[fi], buf, sizeof(buf)));
      for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
         if (!b->ms[m].on)
            continue;
         const struct cell *c = cell_at(b, si, pat, fi, m);
         printf(" %s |",
                c->ran ? fmt_bytes(c->bytes, buf, sizeof(buf)) : "-");
      }
      printf("\n");
   }

   /* A fixed method that did not run as itself (fault gives up when
    * vm.max_map_count runs out) measured something else: say so. */
   for (size_t fi = 0; fi < b->o.nfractions; fi++) {
      for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
         const struct cell *c = cell_at(b, si, pat, fi, m);
         enum cohmap_method want = method_descs[m].device_method;
         if (!c->ran || m == BENCH_IDEAL || want == COHMAP_METHOD_AUTO)
            continue;
         if (c->first_method == want && c->final_method == want)
            continue;
         printf("\nnote: %s at %s ran as %s → %s (the library fell back)\n",
                method_descs[m].name,
                fraction_label(b->o.fractions[fi], buf, sizeof(buf)),
                method_short(c->first_method), method_short(c->final_method));
      }
   }
   fflush(stdout);
}

static void
print_phase(struct bench *b, size_t si)
{
   size_t size = b->o.sizes[si];
   char sname[32], buf[32];

   printf("\n### phase, %s: idle → sparse (0.1 %% random) → dense (50 %% "
          "sequential) → idle, %d submissions each\n\n",
          size_name(size, sname, sizeof(sname)), PHASE_SUBMITS);
   printf("| method | mean/submit | median/submit | total |");
   for (int part = 0; part < PHASE_PARTS; part++)
      printf(" %s mean |", phase_parts[part].name);
   printf(" uploaded/submit | methods per part |\n");
   printf("|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
   for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
      if (!b->ms[m].on)
         continue;
      const struct cell *c = cell_at(b, si, PAT_PHASE, 0, m);
      printf("| %s |", method_descs[m].name);
      if (!c->ran) {
         printf(" %s | | | | | | | | |\n", c->failed ? "FAILED" : "-");
         continue;
      }
      printf(" %s |", fmt_ns(c->mean_ns, buf, sizeof(buf)));
      printf(" %s |", fmt_ns(c->median_ns, buf, sizeof(buf)));
      printf(" %s |", fmt_ns(c->total_ns, buf, sizeof(buf)));
      for (int part = 0; part < PHASE_PARTS; part++)
         printf(" %s |", fmt_ns(c->part_mean_ns[part], buf, sizeof(buf)));
      printf(" %s |", fmt_bytes(c->bytes, buf, sizeof(buf)));
      if (m == BENCH_IDEAL) {
         printf(" - |\n");
         continue;
      }
      for (int part = 0; part < PHASE_PARTS; part++)
         printf("%s%s", part ? "/" : " ", method_short(c->part_method[part]));
      printf(" |\n");
   }
   fflush(stdout);
}

/* Rows of one (pattern, size) group, method by method in fraction order:
 * each plotted line is a contiguous run of rows. */
static void
csv_group(struct bench *b, size_t si, enum bench_pattern pat)
{
   if (!b->csv)
      return;
   for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
      size_t nf = pat == PAT_PHASE ? 1 : b->o.nfractions;
      for (size_t fi = 0; fi < nf; fi++) {
         const struct cell *c = cell_at(b, si, pat, fi, m);
         if (!c->ran)
            continue;
         /* phase: dirty_fraction -1 and the mean, whose ratio is the
          * total time's; the median of a mix of idle and dense
          * submissions is only the idle cost. */
         if (pat == PAT_PHASE)
            fprintf(b->csv, "%s,%zu,-1,%s,%.0f,%.0f\n", pattern_names[pat],
                    b->o.sizes[si], method_descs[m].name, c->mean_ns,
                    c->bytes);
         else
            fprintf(b->csv, "%s,%zu,%g,%s,%.0f,%.0f\n", pattern_names[pat],
                    b->o.sizes[si], b->o.fractions[fi], method_descs[m].name,
                    c->median_ns, c->bytes);
      }
   }
   fflush(b->csv);
}

/* A gnuplot string literal: single quotes, in which only '' is special. */
static void
gp_string(FILE *f, const char *s)
{
   fputc('\'', f);
   for (; *s; s++) {
      if (*s == '\'')
         fputc('\'', f);
      fputc(*s, f);
   }
   fputc('\'', f);
}

/* Line styles by method: the same colour in every plot. */
static const char *const method_style[BENCH_METHOD_COUNT] = {
   [BENCH_FULL] = "lc rgb '#1f77b4' pt 5",
   [BENCH_COMPARE] = "lc rgb '#ff7f0e' pt 7",
   [BENCH_FAULT] = "lc rgb '#2ca02c' pt 9",
   [BENCH_SCAN] = "lc rgb '#d62728' pt 11",
   [BENCH_AUTO] = "lc rgb '#000000' lw 3 pt 1",
   [BENCH_AUTO_FAULT] = "lc rgb '#9467bd' lw 3 dt 2 pt 2",
   [BENCH_IDEAL] = "lc rgb '#7f7f7f' dt 3 pt 6",
};

static bool
find_in_path(const char *prog)
{
   const char *path = getenv("PATH");
   if (!path || !*path)
      path = "/usr/bin:/bin";
   while (*path) {
      const char *end = strchr(path, ':');
      size_t len = end ? (size_t)(end - path) : strlen(path);
      char full[4096];
      if (len && len + strlen(prog) + 2 < sizeof(full)) {
         snprintf(full, sizeof(full), "%.*s/%s", (int)len, path, prog);
         if (access(full, X_OK) == 0)
            return true;
      }
      if (!end)
         break;
      path = end + 1;
   }
   return false;
}

static void
gnuplot_missing(void)
{
   fprintf(stderr,
           "cohmap bench: --plot needs gnuplot, which is not installed.\n"
           "Install the Debian package gnuplot-nox:\n"
           "  sudo apt-get install -y gnuplot-nox\n"
           "(bin/cohmap installs it when run as root.)\n");
}

static void
plot_panel(struct bench *b, FILE *f, size_t size, enum bench_pattern pat)
{
   char sname[32];
   bool first = true;

   fprintf(f, "set title '%s, %s'\n", pattern_names[pat],
           size_name(size, sname, sizeof(sname)));
   fprintf(f, "plot ");
   for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
      if (!b->ms[m].on)
         continue;
      fprintf(f,
              "%scsv using ($2 == %zu && strcol(1) eq '%s' && "
              "strcol(4) eq '%s' && $3 > 0 ? $3 * 100 : NaN):($5 / 1000) "
              "with linespoints %s title '%s'",
              first ? "" : ", \\\n     ", size, pattern_names[pat],
              method_descs[m].name, method_style[m], method_descs[m].name);
      first = false;
   }
   fprintf(f, "\n");
}

/* Writes DIR/cohmap-bench.gp and runs gnuplot on it: one PNG per size
 * (a panel per pattern) and phase.png.  Returns 0 or 1. */
static int
make_plots(struct bench *b)
{
   const char *dir = b->o.plot_dir;
   char script[4096], png[4096], tag[32];
   size_t npat = 0;

   for (int p = 0; p < PAT_PHASE; p++)
      npat += b->o.pattern_on[p];

   snprintf(script, sizeof(script), "%s/cohmap-bench.gp", dir);
   FILE *f = fopen(script, "w");
   if (!f) {
      fprintf(stderr, "cohmap bench: %s: %s\n", script, strerror(errno));
      return 1;
   }
   fprintf(f, "# Made by `cohmap bench --plot`: gnuplot %s\n", script);
   fprintf(f, "csv = ");
   gp_string(f, b->csv_path);
   /* Rows filtered out become NaN, which "missing" skips without
    * breaking the line (an undefined 1/0 point would break it). */
   fprintf(f, "\nset datafile separator ','\n"
              "set datafile missing NaN\n"
              "set key outside right top\n"
              "set grid\n"
              "set logscale xy\n"
              "set xlabel 'dirty fraction per submission (%%)'\n"
              "set ylabel 'median time per submission (µs)'\n"
              "set format x '%%g'\n"
              "set format y '%%g'\n");

   for (size_t si = 0; si < b->o.nsizes && npat; si++) {
      size_t size = b->o.sizes[si];
      int cols = npat > 1 ? 2 : 1, rows = npat > 2 ? 2 : 1;
      char sname[32];
      snprintf(png, sizeof(png), "%s/cost-%s.png", dir,
               size_tag(size, tag, sizeof(tag)));
      fprintf(f, "\nset terminal pngcairo size %d,%d font ',10'\n",
              cols * 800, rows * 560);
      fprintf(f, "set output ");
      gp_string(f, png);
      fprintf(f,
              "\nset multiplot layout %d,%d title "
              "'cohmap bench: %s BO (0 %% dirty is not on the log "
              "axis: see the tables)'\n",
              rows, cols, size_name(size, sname, sizeof(sname)));
      for (int p = 0; p < PAT_PHASE; p++) {
         if (b->o.pattern_on[p])
            plot_panel(b, f, size, p);
      }
      fprintf(f, "unset multiplot\nset output\n");
   }

   if (b->o.pattern_on[PAT_PHASE]) {
      snprintf(png, sizeof(png), "%s/phase.png", dir);
      fprintf(f, "\nset terminal pngcairo size 900,600 font ',10'\n"
                 "set output ");
      gp_string(f, png);
      fprintf(f,
              "\nset title 'phase: idle → sparse → dense → idle, %d "
              "submissions each'\n"
              "set xlabel 'BO size (MiB)'\n"
              "set ylabel 'mean time per submission (µs)'\n"
              "plot ",
              PHASE_SUBMITS);
      bool first = true;
      for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
         if (!b->ms[m].on)
            continue;
         fprintf(f,
                 "%scsv using (strcol(1) eq 'phase' && strcol(4) eq "
                 "'%s' ? $2 / 1048576.0 : NaN):($5 / 1000) with "
                 "linespoints %s title '%s'",
                 first ? "" : ", \\\n     ", method_descs[m].name,
                 method_style[m], method_descs[m].name);
         first = false;
      }
      fprintf(f, "\nset output\n");
   }
   if (fclose(f) != 0) {
      fprintf(stderr, "cohmap bench: %s: %s\n", script, strerror(errno));
      return 1;
   }

   pid_t pid;
   char *argv[] = {"gnuplot", script, NULL};
   int err = posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ);
   if (err == ENOENT) {
      gnuplot_missing();
      return 1;
   }
   if (err) {
      fprintf(stderr, "cohmap bench: cannot run gnuplot: %s\n",
              strerror(err));
      return 1;
   }
   int status;
   while (waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) {
         fprintf(stderr, "cohmap bench: waitpid: %s\n", strerror(errno));
         return 1;
      }
   }
   if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "cohmap bench: gnuplot failed on %s\n", script);
      return 1;
   }
   printf("\nplots: %s/cost-*.png%s (script: %s)\n", dir,
          b->o.pattern_on[PAT_PHASE] ? ", phase.png" : "", script);
   return 0;
}

struct ratio_entry {
   double ratio;
   size_t si, fi;
   enum bench_pattern pat;
   enum bench_method base;
};

static int
cmp_ratio_desc(const void *a, const void *b)
{
   double x = ((const struct ratio_entry *)a)->ratio;
   double y = ((const struct ratio_entry *)b)->ratio;

   return (x < y) - (x > y);
}

static void
summary_ratio(struct bench *b, enum ratio_kind k, struct ratio_entry *v)
{
   double min_f = k == RATIO_AUTO_IDEAL ? IDEAL_FROM_FRACTION : 0;
   double target = k == RATIO_AUTO_IDEAL ? TARGET_IDEAL : TARGET_CELL;
   size_t n = 0, above = 0;
   double logsum = 0;

   for (size_t si = 0; si < b->o.nsizes; si++) {
      for (int p = 0; p < PAT_PHASE; p++) {
         for (size_t fi = 0; fi < b->o.nfractions; fi++) {
            struct ratio_entry e;
            if (b->o.fractions[fi] < min_f - 1e-12)
               continue;
            /* Fraction 0 is one measurement shared by the patterns:
             * count it once. */
            if (cell_at(b, si, p, fi, BENCH_AUTO)->shared ||
                cell_at(b, si, p, fi, BENCH_AUTO_FAULT)->shared)
               continue;
            if (!cell_ratio(b, si, p, fi, k, &e.ratio, &e.base))
               continue;
            e.si = si;
            e.fi = fi;
            e.pat = p;
            v[n++] = e;
            logsum += log(e.ratio);
            above += e.ratio > target;
         }
      }
   }
   printf("\n%s", ratio_names[k]);
   if (k == RATIO_AUTO_IDEAL)
      printf(" (cells with ≥ %g %% dirty)", IDEAL_FROM_FRACTION * 100);
   if (!n) {
      printf(": no cells (the methods were not all run)\n");
      return;
   }
   double gm = exp(logsum / (double)n);
   if (k == RATIO_AUTO_IDEAL)
      printf(": geometric mean %.2f× over %zu cells (target ≤ %.1f×)\n", gm,
             n, TARGET_IDEAL);
   else
      printf(": geometric mean %.3f× over %zu cells (target ≤ %.2f×); "
             "%zu cells above %.2f×\n",
             gm, n, TARGET_GEOMEAN, above, TARGET_CELL);

   qsort(v, n, sizeof(*v), cmp_ratio_desc);
   enum bench_method who =
      k == RATIO_AUTOF_FIXED4 ? BENCH_AUTO_FAULT : BENCH_AUTO;
   for (size_t i = 0; i < n && i < WORST_CELLS; i++) {
      const struct ratio_entry *e = &v[i];
      const struct cell *a = cell_at(b, e->si, e->pat, e->fi, who);
      const struct cell *base = cell_at(b, e->si, e->pat, e->fi, e->base);
      char sname[32], fl[32], t1[32], t2[32];
      printf("  %.2f×  %s %s %s: %s %s (on %s), %s %s\n", e->ratio,
             pattern_names[e->pat],
             size_name(b->o.sizes[e->si], sname, sizeof(sname)),
             fraction_label(b->o.fractions[e->fi], fl, sizeof(fl)),
             method_descs[who].name, fmt_ns(a->median_ns, t1, sizeof(t1)),
             method_short(a->final_method), method_descs[e->base].name,
             fmt_ns(base->median_ns, t2, sizeof(t2)));
   }
}

static void
summary_phase(struct bench *b)
{
   static const enum bench_method autos[] = {BENCH_AUTO, BENCH_AUTO_FAULT};
   static const enum bench_method fixed[] = {BENCH_FULL, BENCH_COMPARE,
                                             BENCH_SCAN, BENCH_FAULT};
   char sname[32], buf[32];

   printf("\nphase: speed-up of each auto variant over each fixed method "
          "(mean time per submission; target ≥ %.1f× over each method it "
          "may choose from; fault only for auto-fault)\n\n",
          TARGET_PHASE);
   printf("| size | variant | mean/submit |");
   for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
      printf(" vs %s |", method_descs[fixed[i]].name);
   printf(" vs ideal |\n|---|---|--:|--:|--:|--:|--:|--:|\n");

   for (size_t si = 0; si < b->o.nsizes; si++) {
      for (size_t a = 0; a < ARRAY_SIZE(autos); a++) {
         const struct cell *ac = cell_at(b, si, PAT_PHASE, 0, autos[a]);
         if (!ac->ran)
            continue;
         printf("| %s | %s | %s |",
                size_name(b->o.sizes[si], sname, sizeof(sname)),
                method_descs[autos[a]].name,
                fmt_ns(ac->mean_ns, buf, sizeof(buf)));
         for (size_t i = 0; i <= ARRAY_SIZE(fixed); i++) {
            enum bench_method fm =
               i < ARRAY_SIZE(fixed) ? fixed[i] : BENCH_IDEAL;
            const struct cell *fc = cell_at(b, si, PAT_PHASE, 0, fm);
            if (!fc->ran) {
               printf(" - |");
               continue;
            }
            double speedup = fc->mean_ns / ac->mean_ns;
            /* Mark what misses the target: auto may not choose fault,
             * and nothing has to beat ideal. */
            bool counts = fm != BENCH_IDEAL &&
                          (fm != BENCH_FAULT || autos[a] == BENCH_AUTO_FAULT);
            printf(" %.2f×%s |", speedup,
                   counts && speedup < TARGET_PHASE ? " (miss)" : "");
         }
         printf("\n");
      }
   }
}

static void
print_summary(struct bench *b)
{
   bool plain = false, phase = b->o.pattern_on[PAT_PHASE];
   for (int p = 0; p < PAT_PHASE; p++)
      plain |= b->o.pattern_on[p];

   printf("\n## Summary\n");
   if (!b->ms[BENCH_AUTO].on && !b->ms[BENCH_AUTO_FAULT].on) {
      printf("\nno ratios: neither auto nor auto-fault ran\n");
      return;
   }
   size_t cap = b->o.nsizes * PAT_COUNT * b->o.nfractions + 1;
   struct ratio_entry *v = calloc(cap, sizeof(*v));
   if (plain && v) {
      if (b->ms[BENCH_AUTO].on)
         summary_ratio(b, RATIO_AUTO_FIXED3, v);
      if (b->ms[BENCH_AUTO_FAULT].on)
         summary_ratio(b, RATIO_AUTOF_FIXED4, v);
      if (b->ms[BENCH_AUTO].on && b->ms[BENCH_IDEAL].on)
         summary_ratio(b, RATIO_AUTO_IDEAL, v);
   }
   free(v);
   if (phase && (b->ms[BENCH_AUTO].on || b->ms[BENCH_AUTO_FAULT].on))
      summary_phase(b);
}

static void
count_cells(struct bench *b)
{
   unsigned methods = 0, plain = 0, nonzero = 0;
   bool zero = false;

   for (int m = 0; m < BENCH_METHOD_COUNT; m++)
      methods += b->ms[m].on;
   for (int p = 0; p < PAT_PHASE; p++)
      plain += b->o.pattern_on[p];
   for (size_t fi = 0; fi < b->o.nfractions; fi++) {
      if (b->o.fractions[fi] > 0)
         nonzero++;
      else
         zero = true;
   }
   unsigned per_size = plain * nonzero + (plain && zero ? 1 : 0) +
                       (b->o.pattern_on[PAT_PHASE] ? 1 : 0);
   b->progress_total = (unsigned)b->o.nsizes * per_size * methods;
}

static int
size_scratch(struct bench *b, size_t size)
{
   size_t npages = size / b->page_size;
   /* The most ranges of one plan: strided at 100 %, or a page each. */
   size_t nranges = size / STRIDE_BLOCK;
   if (nranges < npages)
      nranges = npages;
   if (nranges < 2)
      nranges = 2;

   free(b->perm);
   free(b->ranges);
   b->perm = malloc(npages * sizeof(*b->perm));
   b->ranges = malloc(nranges * sizeof(*b->ranges));
   if (!b->perm || !b->ranges)
      return -ENOMEM;
   for (size_t i = 0; i < npages; i++)
      b->perm[i] = (uint32_t)i;
   return 0;
}

static void
record(struct bench *b, struct cell *c, int ret)
{
   if (ret) {
      memset(c, 0, sizeof(*c));
      c->failed = true;
      b->failures++;
   }
   progress_end(b, c, ret);
}

/* Whether bo must be replaced before the next fraction: a fixed method
 * that fell back (fault when vm.max_map_count runs out) would measure
 * another method from then on.  The policy's choices are what auto
 * measures, so its BOs are kept. */
static bool
bo_stale(enum bench_method m, struct cohmap_bo *bo)
{
   enum cohmap_method want = method_descs[m].device_method;

   if (method_descs[m].app_flushes || want == COHMAP_METHOD_AUTO)
      return false;
   return cohmap_bo_method(bo) != want;
}

/*
 * The fractions of one (size, pattern), in ascending order, each measured
 * with every method back to back: the machine is shared and its load
 * drifts over seconds, so methods compared in one cell are measured within
 * a few hundred milliseconds of each other, not minutes apart.  Each method
 * keeps one BO over the fractions: populating a fresh 256 MiB BO costs
 * seconds on this VM (first touch on both sides), more than measuring most
 * cells, and would be paid 25 times per size and method.  The warm-ups at
 * each fraction absorb the change from the previous one.  The BOs are
 * freed before the next pattern.
 */
static void
bench_fractions(struct bench *b, size_t si, enum bench_pattern p,
                bool skip_zero)
{
   size_t size = b->o.sizes[si];
   struct cohmap_bo *bos[BENCH_METHOD_COUNT] = {0};
   char fl[32];

   for (size_t fi = 0; fi < b->o.nfractions; fi++) {
      double f = b->o.fractions[fi];
      if (f <= 0 && skip_zero)
         continue;
      for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
         if (!b->ms[m].on)
            continue;
         struct cell *c = cell_at(b, si, p, fi, m);
         struct cohmap_bo **bo = &bos[m];

         progress_begin(b, f <= 0 ? "(every pattern)" : pattern_names[p],
                        size, fraction_label(f, fl, sizeof(fl)), m);
         int ret = 0;
         if (*bo && bo_stale(m, *bo)) {
            cohmap_bo_destroy(*bo);
            *bo = NULL;
         }
         if (!*bo) {
            uint64_t rng = SEED ^ size;
            ret = cell_setup(b, m, size, &rng, bo);
         }
         if (ret == 0)
            ret = run_cell(b, m, *bo, size, p, f, c);
         if (ret) {
            /* A later fraction starts from a clean BO. */
            cohmap_bo_destroy(*bo);
            *bo = NULL;
         }
         record(b, c, ret);

         /* No writes is the same workload for every pattern. */
         for (int q = p + 1; f <= 0 && q < PAT_PHASE; q++) {
            struct cell *copy = cell_at(b, si, q, fi, m);
            *copy = *c;
            copy->shared = true;
         }
      }
   }
   for (int m = 0; m < BENCH_METHOD_COUNT; m++)
      cohmap_bo_destroy(bos[m]);
}

static void
bench_size(struct bench *b, size_t si)
{
   size_t size = b->o.sizes[si];

   if (size_scratch(b, size)) {
      fprintf(stderr, "cohmap bench: out of memory for %zu-byte plans\n",
              size);
      b->failures++;
      return;
   }

   bool zero_done = false;
   for (int p = 0; p < PAT_PHASE; p++) {
      if (!b->o.pattern_on[p])
         continue;
      bench_fractions(b, si, p, zero_done);
      zero_done = true;
      print_group(b, si, p);
      csv_group(b, si, p);
   }

   if (b->o.pattern_on[PAT_PHASE]) {
      for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
         if (!b->ms[m].on)
            continue;
         struct cell *c = cell_at(b, si, PAT_PHASE, 0, m);
         progress_begin(b, "phase", size, "idle/sparse/dense/idle", m);
         record(b, c, run_phase(b, m, size, c));
      }
      print_phase(b, si);
      csv_group(b, si, PAT_PHASE);
   }
}

/*
 * Pins the process to the CPU it runs on, before the devices start their
 * worker threads (which inherit the mask).  The sim's GPU is a thread of
 * this process, which a real GPU is not, and that adds two costs no real
 * device has: waking the worker on another vCPU (on this VM a halted vCPU
 * takes ~100 µs to wake, so the same cell measured 11 µs or 110 µs per
 * submission from one run to the next), and TLB shootdown IPIs to the
 * worker's CPU whenever write protection changes.  On one CPU a fence
 * round trip is a plain context switch.
 */
static void
pin_cpu(struct bench *b)
{
   b->pinned_cpu = -1;
   if (b->o.no_pin)
      return;
   int cpu = sched_getcpu();
   cpu_set_t set;
   CPU_ZERO(&set);
   if (cpu < 0 || cpu >= CPU_SETSIZE)
      return;
   CPU_SET(cpu, &set);
   if (sched_setaffinity(0, sizeof(set), &set) == 0)
      b->pinned_cpu = cpu;
   else
      fprintf(stderr,
              "cohmap bench: cannot pin to CPU %d (%s): running "
              "unpinned\n",
              cpu, strerror(errno));
}

/* One device per method for the whole run (an application has one
 * device with many BOs), all on one context: the tracking methods and
 * their calibration are the process's. */
static int
open_devices(struct bench *b)
{
   for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
      struct method_state *ms = &b->ms[m];
      const struct method_desc *d = &method_descs[m];
      if (!b->o.method_on[m])
         continue;
      const char *reason = NULL;
      if (cohmap_context_method_status(b->ctx, d->needs, &reason) != 0) {
         ms->unavailable = reason ? reason : "unavailable";
         continue;
      }

      struct cohmap_device_options opts;
      cohmap_device_options_init(&opts);
      opts.method = d->device_method;
      opts.context = b->ctx;
      int ret = cohmap_device_create(&opts, &ms->dev);
      if (ret == 0)
         ret = cohmap_bo_create(ms->dev, RESULT_BO_SIZE,
                                COHMAP_BO_GPU_WRITE | COHMAP_BO_PERSISTENT,
                                &ms->result);
      if (ret) {
         fprintf(stderr, "cohmap bench: cannot create the %s device: %s\n",
                 d->name, cohmap_error_message());
         return 1;
      }
      ms->on = true;
   }
   return 0;
}

static void
close_devices(struct bench *b)
{
   for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
      cohmap_bo_destroy(b->ms[m].result);
      if (cohmap_device_destroy(b->ms[m].dev))
         fprintf(stderr, "cohmap bench: %s device: %s\n",
                 method_descs[m].name, cohmap_error_message());
   }
}

static void
print_header(struct bench *b)
{
   struct utsname u;
   char buf[32];
   const struct repetitions *r = &b->o.reps;

   printf("# cohmap bench\n\n");
   printf("Time per submission = CPU stores + submit + fence wait, on the "
          "sim device;\nmedian over the timed submissions of a cell: at "
          "least %u and until %s of\nthem, at most %u, after at least %u "
          "warm-up submissions for auto and auto-fault\n(until the policy "
          "keeps a method for %u, at most %u), 1 for the others; one BO\n"
          "per (size, pattern, method), fractions in ascending order, "
          "methods back to back\nat each fraction, the first upload "
          "untimed.\n\n",
          r->min_submits, fmt_ns((double)r->budget_ns, buf, sizeof(buf)),
          r->max_submits, r->warmup, WARMUP_SETTLED, WARMUP_MAX);
   if (uname(&u) == 0)
      printf("kernel %s %s, page size %zu, %ld CPUs online\n", u.release,
             u.machine, b->page_size, sysconf(_SC_NPROCESSORS_ONLN));
   if (b->pinned_cpu >= 0)
      printf("pinned to CPU %d with the sim device's threads (--no-pin "
             "to run unpinned)\n",
             b->pinned_cpu);
   else
      printf("not pinned: fence round trips include cross-CPU wake-ups\n");
   printf("methods:");
   for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
      if (b->ms[m].on)
         printf(" %s", method_descs[m].name);
   }
   printf("; cohmap_context_auto_method(): %s\n",
          method_short(cohmap_context_auto_method(b->ctx)));
   for (int m = 0; m < BENCH_METHOD_COUNT; m++) {
      if (b->ms[m].unavailable) {
         printf("note: %s unavailable here (%s): its cells are skipped\n",
                method_descs[m].name, b->ms[m].unavailable);
         fprintf(stderr,
                 "note: %s unavailable here (%s): its cells are "
                 "skipped\n",
                 method_descs[m].name, b->ms[m].unavailable);
      }
   }
   /* Every knob changes what is measured (COHMAP_METHOD steers auto, the
    * COHMAP_SIM_* ones the link): a table must say it ran under them. */
   for (char **e = environ; *e; e++) {
      const char *eq = strchr(*e, '=');
      if (strncmp(*e, "COHMAP_", 7) != 0 || !eq || !eq[1])
         continue;
      printf("environment: %s%s\n", *e,
             strncmp(*e, "COHMAP_METHOD=", 14) == 0
                ? " (auto and auto-fault measure what it selects)"
                : "");
   }
   fflush(stdout);
}

static void
usage(FILE *f)
{
   fprintf(
      f,
      "Usage: cohmap bench [--quick | --full] [--sizes LIST] "
      "[--fractions LIST]\n"
      "                    [--patterns LIST] [--methods LIST] [--csv FILE]\n"
      "                    [--plot DIR] [--verify] [--no-pin]\n"
      "\n"
      "Measures what keeping a CPU->GPU streaming buffer coherent costs per\n"
      "submission with each tracking method, on the sim device through the\n"
      "winsys API.  Per submission the CPU writes a pattern into a\n"
      "COHERENT|PERSISTENT BO, one submission reads it (a checksum of 64\n"
      "bytes into a separate result BO) and its fence is waited for; the\n"
      "whole iteration is timed (fault and scan pay inside the stores).\n"
      "\n"
      "Workloads:\n"
      "  sizes       64 KiB, 1 MiB, 16 MiB, 256 MiB (--full adds 1 GiB)\n"
      "  fractions   0, 0.01, 0.1, 1, 10, 50, 100 %% dirty per submission\n"
      "  random      that fraction of the pages, chosen anew each\n"
      "              submission, 64 bytes at a random offset in each (at\n"
      "              least one page unless 0 %%)\n"
      "  sequential  one run of fraction x size bytes at a random offset\n"
      "  strided     every k-th 256-byte block, k = 1 / fraction\n"
      "  ring        the next fraction x size bytes after the previous\n"
      "              submission's, wrapping (a streaming ring buffer)\n"
      "  phase       idle -> sparse (0.1 %% random) -> dense (50 %%\n"
      "              sequential) -> idle, %d submissions each, per size\n"
      "  0 %% dirty is the same workload for every pattern: measured once\n"
      "  per size and method, reported under each pattern.\n"
      "\n"
      "Methods:\n"
      "  full, compare, fault, scan  the device created with that method\n"
      "              (fault: the BO has COHMAP_BO_CPU_STORES_ONLY)\n"
      "  auto        COHMAP_METHOD_AUTO: the library chooses\n"
      "  auto-fault  COHMAP_METHOD_AUTO and COHMAP_BO_CPU_STORES_ONLY: the\n"
      "              library may choose fault too\n"
      "  ideal       a non-coherent BO; the bench flushes exactly the\n"
      "              bytes it wrote (the lower bound)\n"
      "\n"
      "Options:\n"
      "  --quick           sizes 64 KiB, 1 MiB and 4 MiB, every fraction,\n"
      "                    pattern and method, phase included; at least %u\n"
      "                    timed submissions and up to %.0f ms per cell, %u\n"
      "                    warm-ups for auto.  Under a minute on 2 cores.\n"
      "  --full            add 1 GiB to the default sizes (takes long)\n"
      "  --sizes LIST      e.g. 64K,1M,16M,256M,1G (replaces the sizes)\n"
      "  --fractions LIST  dirty percentages, e.g. 0,0.1,10\n"
      "  --patterns LIST   of random,sequential,strided,ring,phase\n"
      "  --methods LIST    of full,compare,fault,scan,auto,auto-fault,ideal\n"
      "  --csv FILE        one row per (pattern, size, fraction, method):\n"
      "                    pattern,size_bytes,dirty_fraction,method,\n"
      "                    median_ns_per_submit,bytes_uploaded\n"
      "                    (bytes: mean per submission; phase rows have\n"
      "                    dirty_fraction -1 and the mean time)\n"
      "  --plot DIR        PNG plots with gnuplot: DIR/cost-<size>.png "
      "(cost\n"
      "                    against dirty fraction, a panel per pattern, a\n"
      "                    line per method) and DIR/phase.png; the data is\n"
      "                    the CSV (DIR/cohmap-bench.csv without --csv)\n"
      "  --verify          checksum the whole BO on the device after every\n"
      "                    cell (always done up to 1 MiB)\n"
      "  --no-pin          do not pin the bench and the sim device's "
      "threads\n"
      "                    to one CPU (fence round trips then include\n"
      "                    cross-CPU wake-ups, ~100 us on a VM)\n"
      "  -h, --help        this help\n"
      "\n"
      "Default repetitions: at least %u timed submissions and up to %.0f ms\n"
      "per cell (%u at most), after at least %u warm-ups for auto and\n"
      "auto-fault (until the policy settles), 1 for the others.  One BO per\n"
      "(size, pattern, method) serves its fractions in ascending order; at\n"
      "each fraction the methods run back to back.  The process is pinned\n"
      "to one CPU.\n"
      "Progress goes to stderr, tables (Markdown) and a summary of\n"
      "auto/best-fixed and auto/ideal to stdout.  Exit status: 0; 1 if a\n"
      "cell failed (library error or wrong device result) or gnuplot is\n"
      "missing; 2 for bad arguments.  docs/benchmarks.md explains the\n"
      "columns.\n",
      PHASE_SUBMITS, quick_reps.min_submits,
      (double)quick_reps.budget_ns / 1e6, quick_reps.warmup,
      default_reps.min_submits, (double)default_reps.budget_ns / 1e6,
      default_reps.max_submits, default_reps.warmup);
}

static int
parse_size(const char *s, size_t *out)
{
   char *end;

   errno = 0;
   if (*s < '0' || *s > '9')
      return -EINVAL;
   unsigned long long v = strtoull(s, &end, 10);
   if (errno || end == s)
      return -EINVAL;
   unsigned long long mult = 1;
   switch (*end) {
   case 'K':
   case 'k':
      mult = KIB;
      end++;
      break;
   case 'M':
   case 'm':
      mult = MIB;
      end++;
      break;
   case 'G':
   case 'g':
      mult = GIB;
      end++;
      break;
   default:
      break;
   }
   if (mult > 1 && end[0] == 'i' && end[1] == 'B')
      end += 2;
   else if (mult > 1 && end[0] == 'B')
      end++;
   if (*end || v == 0 || v > (64ull * GIB) / mult)
      return -EINVAL;
   *out = (size_t)(v * mult);
   return 0;
}

static int
parse_percent(const char *s, double *out)
{
   char *end;

   errno = 0;
   if ((*s < '0' || *s > '9') && *s != '.')
      return -EINVAL;
   double v = strtod(s, &end);
   if (errno || end == s || *end || !(v >= 0 && v <= 100))
      return -EINVAL;
   *out = v / 100.0;
   return 0;
}

static int
cmp_size(const void *a, const void *b)
{
   size_t x = *(const size_t *)a, y = *(const size_t *)b;
   return (x > y) - (x < y);
}

static int
cmp_double(const void *a, const void *b)
{
   double x = *(const double *)a, y = *(const double *)b;
   return (x > y) - (x < y);
}

static int __attribute__((format(printf, 1, 2))) bad_arg(const char *fmt, ...)
{
   va_list ap;

   fprintf(stderr, "cohmap bench: ");
   va_start(ap, fmt);
   vfprintf(stderr, fmt, ap);
   va_end(ap);
   fprintf(stderr, "\nTry 'cohmap bench --help'.\n");
   return 2;
}

/* Parses a comma-separated LIST option into o.  Returns 0 or 2. */
static int
parse_list(struct options *o, const char *opt, const char *value)
{
   char *copy = strdup(value);
   size_t n = 0;
   int status = 0;

   if (!copy) {
      fprintf(stderr, "cohmap bench: out of memory\n");
      return 2;
   }
   if (!strcmp(opt, "--methods"))
      memset(o->method_on, 0, sizeof(o->method_on));
   else if (!strcmp(opt, "--patterns"))
      memset(o->pattern_on, 0, sizeof(o->pattern_on));

   for (char *save = NULL, *item = strtok_r(copy, ",", &save); item;
        item = strtok_r(NULL, ",", &save), n++) {
      if (!strcmp(opt, "--sizes")) {
         if (n == MAX_SIZES) {
            status =
               bad_arg("%s: at most %d sizes ('%s')", opt, MAX_SIZES, value);
            break;
         }
         if (parse_size(item, &o->sizes[n])) {
            status = bad_arg("%s: bad size '%s' (e.g. 64K, 16M, 1G; at "
                             "most 64G)",
                             opt, item);
            break;
         }
         o->nsizes = n + 1;
      } else if (!strcmp(opt, "--fractions")) {
         if (n == MAX_FRACTIONS) {
            status = bad_arg("%s: at most %d fractions ('%s')", opt,
                             MAX_FRACTIONS, value);
            break;
         }
         if (parse_percent(item, &o->fractions[n])) {
            status = bad_arg("%s: bad dirty percentage '%s' (0 to 100, e.g. "
                             "0.1)",
                             opt, item);
            break;
         }
         o->nfractions = n + 1;
      } else if (!strcmp(opt, "--methods")) {
         int m;
         for (m = 0; m < BENCH_METHOD_COUNT; m++) {
            if (!strcmp(item, method_descs[m].name))
               break;
         }
         if (m == BENCH_METHOD_COUNT) {
            status = bad_arg("%s: unknown method '%s' (full, compare, "
                             "fault, scan, auto, auto-fault, ideal)",
                             opt, item);
            break;
         }
         o->method_on[m] = true;
      } else {
         int p;
         for (p = 0; p < PAT_COUNT; p++) {
            if (!strcmp(item, pattern_names[p]))
               break;
         }
         if (p == PAT_COUNT) {
            status = bad_arg("%s: unknown pattern '%s' (random, "
                             "sequential, strided, ring, phase)",
                             opt, item);
            break;
         }
         o->pattern_on[p] = true;
      }
   }
   if (status == 0 && n == 0)
      status = bad_arg("%s: empty list '%s'", opt, value);
   free(copy);
   return status;
}

/* Sorted, duplicates dropped: tables read in order. */
static void
normalize_options(struct options *o)
{
   size_t j = 0;

   qsort(o->sizes, o->nsizes, sizeof(o->sizes[0]), cmp_size);
   for (size_t i = 0; i < o->nsizes; i++) {
      if (!j || o->sizes[i] != o->sizes[j - 1])
         o->sizes[j++] = o->sizes[i];
   }
   o->nsizes = j;

   j = 0;
   qsort(o->fractions, o->nfractions, sizeof(o->fractions[0]), cmp_double);
   for (size_t i = 0; i < o->nfractions; i++) {
      if (!j || o->fractions[i] != o->fractions[j - 1])
         o->fractions[j++] = o->fractions[i];
   }
   o->nfractions = j;
}

static int
parse_args(struct options *o, int argc, char **argv, bool *help)
{
   memset(o, 0, sizeof(*o));
   for (int m = 0; m < BENCH_METHOD_COUNT; m++)
      o->method_on[m] = true;
   for (int p = 0; p < PAT_COUNT; p++)
      o->pattern_on[p] = true;
   memcpy(o->fractions, default_fractions, sizeof(default_fractions));
   o->nfractions = ARRAY_SIZE(default_fractions);

   for (int i = 1; i < argc; i++) {
      const char *arg = argv[i];
      const char *value = NULL;
      char opt[32];

      /* --opt=value and --opt value. */
      const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
      if (eq && (size_t)(eq - arg) < sizeof(opt)) {
         snprintf(opt, sizeof(opt), "%.*s", (int)(eq - arg), arg);
         value = eq + 1;
      } else {
         snprintf(opt, sizeof(opt), "%s", arg);
      }

      bool takes_value =
         !strcmp(opt, "--sizes") || !strcmp(opt, "--fractions") ||
         !strcmp(opt, "--patterns") || !strcmp(opt, "--methods") ||
         !strcmp(opt, "--csv") || !strcmp(opt, "--plot");
      if (takes_value && !value) {
         if (i + 1 >= argc)
            return bad_arg("%s needs a value", opt);
         value = argv[++i];
      } else if (!takes_value && value) {
         return bad_arg("%s takes no value ('%s')", opt, value);
      }

      int status = 0;
      if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) {
         *help = true;
         return 0;
      } else if (!strcmp(opt, "--quick")) {
         o->quick = true;
      } else if (!strcmp(opt, "--full")) {
         o->full = true;
      } else if (!strcmp(opt, "--verify")) {
         o->verify = true;
      } else if (!strcmp(opt, "--no-pin")) {
         o->no_pin = true;
      } else if (!strcmp(opt, "--csv")) {
         if (!*value)
            return bad_arg("%s needs a file name", opt);
         o->csv_path = value;
      } else if (!strcmp(opt, "--plot")) {
         if (!*value)
            return bad_arg("%s needs a directory", opt);
         o->plot_dir = value;
      } else if (takes_value) {
         if (!strcmp(opt, "--sizes"))
            o->sizes_given = true;
         status = parse_list(o, opt, value);
      } else {
         return bad_arg("unknown option '%s'", arg);
      }
      if (status)
         return status;
   }

   if (o->quick && o->full)
      return bad_arg("--quick and --full exclude each other");
   if (o->full && o->sizes_given)
      return bad_arg("--full adds 1 GiB to the default sizes; with "
                     "--sizes, list 1G there");
   if (!o->sizes_given) {
      const size_t *s = o->quick ? quick_sizes : default_sizes;
      o->nsizes =
         o->quick ? ARRAY_SIZE(quick_sizes) : ARRAY_SIZE(default_sizes);
      memcpy(o->sizes, s, o->nsizes * sizeof(*s));
      if (o->full)
         o->sizes[o->nsizes++] = FULL_EXTRA_SIZE;
   }
   o->reps = o->quick ? quick_reps : default_reps;
   normalize_options(o);
   return 0;
}

/* Creates the plot directory and picks the CSV the plots read. */
static int
prepare_outputs(struct bench *b)
{
   const char *dir = b->o.plot_dir;

   if (dir) {
      if (!find_in_path("gnuplot")) {
         gnuplot_missing();
         return 1;
      }
      struct stat st;
      if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
         fprintf(stderr, "cohmap bench: cannot create %s: %s\n", dir,
                 strerror(errno));
         return 1;
      }
      if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
         fprintf(stderr, "cohmap bench: %s is not a directory\n", dir);
         return 1;
      }
   }

   b->csv_path = b->o.csv_path;
   if (!b->csv_path && dir) {
      size_t len = strlen(dir) + sizeof("/cohmap-bench.csv");
      b->csv_path_owned = malloc(len);
      if (!b->csv_path_owned)
         return 1;
      snprintf(b->csv_path_owned, len, "%s/cohmap-bench.csv", dir);
      b->csv_path = b->csv_path_owned;
   }
   if (b->csv_path) {
      b->csv = fopen(b->csv_path, "w");
      if (!b->csv) {
         fprintf(stderr, "cohmap bench: %s: %s\n", b->csv_path,
                 strerror(errno));
         return 1;
      }
      fprintf(b->csv, "pattern,size_bytes,dirty_fraction,method,"
                      "median_ns_per_submit,bytes_uploaded\n");
   }
   return 0;
}

int
cohmap_tool_bench(int argc, char **argv)
{
   struct bench b;
   bool help = false;
   int status;

   memset(&b, 0, sizeof(b));
   status = parse_args(&b.o, argc, argv, &help);
   if (status)
      return status;
   if (help) {
      usage(stdout);
      return 0;
   }

   b.page_size = (size_t)sysconf(_SC_PAGESIZE);
   for (size_t i = 0; i < b.o.nsizes; i++) {
      if (b.o.sizes[i] % b.page_size) {
         char sname[32];
         return bad_arg("--sizes: size %s is not a multiple of the page "
                        "size (%zu)",
                        size_name(b.o.sizes[i], sname, sizeof(sname)),
                        b.page_size);
      }
   }

   status = prepare_outputs(&b);
   if (status)
      goto out;

   /* The environment is read, as an application's context would: the
    * header says when COHMAP_METHOD steers auto. */
   if (cohmap_context_create(NULL, &b.ctx)) {
      fprintf(stderr, "cohmap bench: cannot create a context: %s\n",
              cohmap_error_message());
      status = 1;
      goto out;
   }
   pin_cpu(&b);
   status = open_devices(&b);
   if (status)
      goto out;

   b.pool = malloc(POOL_SIZE);
   b.cells =
      calloc(b.o.nsizes * PAT_COUNT * b.o.nfractions * BENCH_METHOD_COUNT,
             sizeof(*b.cells));
   if (!b.pool || !b.cells) {
      fprintf(stderr, "cohmap bench: out of memory\n");
      status = 1;
      goto out;
   }
   uint64_t rng = SEED;
   for (size_t i = 0; i < POOL_SIZE; i += 8) {
      uint64_t v = rng_next(&rng);
      memcpy(b.pool + i, &v, sizeof(v));
   }

   count_cells(&b);
   print_header(&b);

   uint64_t t0 = now_ns();
   for (size_t si = 0; si < b.o.nsizes; si++)
      bench_size(&b, si);
   print_summary(&b);

   if (b.csv) {
      if (fclose(b.csv) != 0) {
         fprintf(stderr, "cohmap bench: %s: %s\n", b.csv_path,
                 strerror(errno));
         b.failures++;
      }
      b.csv = NULL;
      printf("\nCSV: %s\n", b.csv_path);
   }
   if (b.o.plot_dir && make_plots(&b))
      b.failures++;

   char tbuf[32];
   printf("\ntotal %s (%u cells)\n",
          fmt_ns((double)(now_ns() - t0), tbuf, sizeof(tbuf)),
          b.progress_total);
   if (b.failures) {
      fprintf(stderr,
              "cohmap bench: %u failure(s): see the messages "
              "above\n",
              b.failures);
      status = 1;
   }

out:
   if (b.csv)
      fclose(b.csv);
   close_devices(&b);
   if (cohmap_context_destroy(b.ctx))
      fprintf(stderr, "cohmap bench: context: %s\n", cohmap_error_message());
   free(b.csv_path_owned);
   free(b.pool);
   free(b.cells);
   free(b.perm);
   free(b.ranges);
   free(b.times);
   return status;
}
