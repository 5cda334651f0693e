/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * slab-scan: what the per-submission tracking of many small coherent BOs
 * costs with one tracked region per BO, and with slabs.
 *
 * Two devices live side by side, each with COUNT (10,000) coherent BOs of
 * 4 KiB: "per-BO" (slab_threshold 1: every BO its own region and device
 * memory object) and "slab" (the default: 4 KiB slots in 2 MiB slabs,
 * 512 BOs per region).  A *cycle* on one device is:
 *
 *  1. the application stores one 8-byte value (new every cycle) at a
 *     random aligned offset of each of 1 % of the BOs (random distinct
 *     BOs, chosen before the clock starts);
 *  2. either a submission listing all COUNT BOs for reading (no commands:
 *     the buffer list alone makes it collect and upload), submitted and
 *     waited for, or one cohmap_device_flush_all().
 *
 * Timed with CLOCK_MONOTONIC: the whole cycle, and its parts (the stores,
 * cohmap_submit_begin() + the cohmap_submit_add_bo() calls, and
 * cohmap_submit_end() + the fence wait, where the collects and uploads
 * happen).  The stores are included: with scan the first store to a page
 * after a collect takes a write-protect fault, part of tracking's price.
 *
 * The configurations are measured alternately, REPS times each (the order
 * flipping every repetition), so that drift of a shared VM hits both
 * alike; each number reported is a median.  Before timing, every BO is
 * written and submitted once and two warm-up cycles run (first-touch page
 * faults are not tracking cost).  The collects per cycle come from
 * cohmap_device_get_stats().
 *
 * At the end every BO's device copy is checksummed on the device and
 * compared with its mapping; a difference (or any failing call) makes the
 * program exit with status 1, so the --quick smoke run in the test suite
 * checks the upload path, not only that the program runs.
 *
 * Per-BO regions cost mappings: each BO is a tracked mapping plus the
 * sim's memfd mapping.  The program reads vm.max_map_count and lowers
 * COUNT (loudly) if the limit would be hit.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cohmap/cohmap.h"
#include "cohmap/winsys.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define BO_SIZE 4096
#define DEFAULT_COUNT 10000
#define DEFAULT_REPS 15
#define DEFAULT_PERMILLE 10
#define QUICK_COUNT 1000
#define QUICK_REPS 5
#define WARMUP_CYCLES 2
/* Mappings besides the BOs' (libraries, heap, slabs, the test's own). */
#define MAP_MARGIN 2000

#define SEED 0x736c61622d736361ull

enum config { PER_BO, SLAB, NCONFIGS };
static const char *const config_names[NCONFIGS] = {"per-BO", "slab"};

enum cycle_kind { SUBMIT, FLUSH_ALL, NKINDS };

struct samples {
   uint64_t *total, *stores, *list, *end; /* ns per cycle */
   uint64_t *collects, *uploaded;
   size_t n;
};

struct side {
   struct cohmap_device *dev;
   struct cohmap_bo **bos;
   uint8_t **maps;
   struct samples s[NKINDS];
   size_t regions; /* tracked regions: BOs or slabs */
};

struct bench {
   size_t count, reps, dirty;
   uint64_t rng;
   size_t *perm, *targets;
   bool failed;
};

static uint64_t
now_ns(void)
{
   struct timespec ts;

   clock_gettime(CLOCK_MONOTONIC, &ts);
   return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64 */
static uint64_t
rng_next(uint64_t *state)
{
   uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
   z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
   z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
   return z ^ (z >> 31);
}

static int
cmp_u64(const void *a, const void *b)
{
   uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

   return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v). */
static double
median(uint64_t *v, size_t n)
{
   if (!n)
      return 0;
   qsort(v, n, sizeof(v[0]), cmp_u64);
   if (n % 2)
      return (double)v[n / 2];
   return ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2.0;
}

static long
read_long(const char *path)
{
   FILE *f = fopen(path, "r");
   long v = -1;

   if (f) {
      if (fscanf(f, "%ld", &v) != 1)
         v = -1;
      fclose(f);
   }
   return v;
}

/* The load average, printed before and after: on a shared VM other
 * work moves these numbers more than anything measured here. */
static void
print_load(const char *when)
{
   FILE *f = fopen("/proc/loadavg", "r");
   char buf[128] = "?";

   if (f) {
      if (!fgets(buf, sizeof(buf), f))
         strcpy(buf, "?\n");
      fclose(f);
   }
   printf("load average (%s): %s", when, buf);
}

static long
count_maps(void)
{
   FILE *f = fopen("/proc/self/maps", "r");
   long n = 0;
   int c;

   if (!f)
      return -1;
   while ((c = fgetc(f)) != EOF)
      n += c == '\n';
   fclose(f);
   return n;
}

static bool
check(struct bench *b, int ret, const char *what)
{
   if (ret == 0)
      return true;
   fprintf(stderr, "%s: %d (%s): %s\n", what, ret, strerror(-ret),
           cohmap_error_message());
   b->failed = true;
   return false;
}

static bool
samples_alloc(struct samples *s, size_t n)
{
   s->total = calloc(n, sizeof(uint64_t));
   s->stores = calloc(n, sizeof(uint64_t));
   s->list = calloc(n, sizeof(uint64_t));
   s->end = calloc(n, sizeof(uint64_t));
   s->collects = calloc(n, sizeof(uint64_t));
   s->uploaded = calloc(n, sizeof(uint64_t));
   return s->total && s->stores && s->list && s->end && s->collects &&
          s->uploaded;
}

static void
samples_free(struct samples *s)
{
   free(s->total);
   free(s->stores);
   free(s->list);
   free(s->end);
   free(s->collects);
   free(s->uploaded);
}

static bool
side_create(struct bench *b, struct side *side, enum cohmap_method method,
            enum config config)
{
   struct cohmap_device_options opts;
   struct cohmap_context_options copts;

   cohmap_context_options_init(&copts);
   /* The benchmark measures the method it names, whatever the
    * developer's COHMAP_METHOD says. */
   copts.flags = COHMAP_CONTEXT_IGNORE_ENV;
   cohmap_device_options_init(&opts);
   opts.method = method;
   opts.slab_threshold = config == PER_BO ? 1 : 0;
   opts.context_options = &copts;

   memset(side, 0, sizeof(*side));
   side->bos = calloc(b->count, sizeof(*side->bos));
   side->maps = calloc(b->count, sizeof(*side->maps));
   if (!side->bos || !side->maps)
      return check(b, -ENOMEM, "out of memory");
   for (unsigned k = 0; k < NKINDS; k++) {
      if (!samples_alloc(&side->s[k], b->reps))
         return check(b, -ENOMEM, "out of memory");
   }
   if (!check(b, cohmap_device_create(&opts, &side->dev), "device_create"))
      return false;
   for (size_t i = 0; i < b->count; i++) {
      if (!check(b, cohmap_bo_create(side->dev, BO_SIZE, COHMAP_BO_COHERENT,
                                     &side->bos[i]),
                 "bo_create"))
         return false;
      side->maps[i] = cohmap_bo_map(side->bos[i]);
   }
   struct cohmap_device_stats st;
   if (!check(b, cohmap_device_get_stats(side->dev, &st), "get_stats"))
      return false;
   side->regions = config == PER_BO ? b->count : (size_t)st.slabs;
   return true;
}

static void
side_destroy(struct bench *b, struct side *side)
{
   for (unsigned k = 0; k < NKINDS; k++)
      samples_free(&side->s[k]);
   if (side->bos) {
      for (size_t i = 0; i < b->count; i++)
         check(b, cohmap_bo_destroy(side->bos[i]), "bo_destroy");
   }
   if (side->dev)
      check(b, cohmap_device_destroy(side->dev), "device_destroy");
   free(side->bos);
   free(side->maps);
}

/* Picks this cycle's BOs (distinct, by a partial Fisher-Yates shuffle)
 * and offsets, before the clock starts. */
static void
choose_targets(struct bench *b)
{
   for (size_t i = 0; i < b->dirty; i++) {
      size_t j = i + (size_t)(rng_next(&b->rng) % (b->count - i));
      size_t t = b->perm[i];
      b->perm[i] = b->perm[j];
      b->perm[j] = t;
      b->targets[i] = (size_t)(rng_next(&b->rng) % (BO_SIZE / 8)) * 8;
   }
}

static void
store_targets(struct bench *b, struct side *side, uint64_t value)
{
   for (size_t i = 0; i < b->dirty; i++) {
      uint64_t v = value + i * 0x9e3779b97f4a7c15ull;
      memcpy(side->maps[b->perm[i]] + b->targets[i], &v, sizeof(v));
   }
}

/* A submission listing every BO for reading; 0 or the error.  *list_ns
 * and *end_ns get the time of the list and of end + wait. */
static int
submit_all(struct side *side, size_t count, uint64_t *list_ns,
           uint64_t *end_ns)
{
   struct cohmap_submit *s;
   struct cohmap_fence *f = NULL;
   uint64_t t0 = now_ns();
   int ret = cohmap_submit_begin(side->dev, &s);
   for (size_t i = 0; i < count && !ret; i++)
      ret = cohmap_submit_add_bo(s, side->bos[i], COHMAP_ACCESS_READ);
   uint64_t t1 = now_ns();
   if (ret) {
      cohmap_submit_abort(s);
      return ret;
   }
   ret = cohmap_submit_end(s, &f);
   if (!ret)
      ret = cohmap_fence_wait(f, UINT64_MAX);
   cohmap_fence_destroy(f);
   uint64_t t2 = now_ns();
   *list_ns = t1 - t0;
   *end_ns = t2 - t1;
   return ret;
}

/* One cycle; recorded as sample rep when rep >= 0. */
static bool
cycle(struct bench *b, struct side *side, enum cycle_kind kind, long rep)
{
   struct cohmap_device_stats s0, s1;
   uint64_t list_ns = 0, end_ns = 0;
   int ret;

   choose_targets(b);
   uint64_t value = rng_next(&b->rng);
   if (!check(b, cohmap_device_get_stats(side->dev, &s0), "get_stats"))
      return false;

   uint64_t t0 = now_ns();
   store_targets(b, side, value);
   uint64_t t1 = now_ns();
   if (kind == SUBMIT) {
      ret = submit_all(side, b->count, &list_ns, &end_ns);
   } else {
      ret = cohmap_device_flush_all(side->dev);
      end_ns = now_ns() - t1;
   }
   uint64_t t2 = now_ns();
   if (!check(b, ret, kind == SUBMIT ? "submission" : "flush_all") ||
       !check(b, cohmap_device_get_stats(side->dev, &s1), "get_stats"))
      return false;

   if (rep >= 0) {
      struct samples *s = &side->s[kind];
      s->total[rep] = t2 - t0;
      s->stores[rep] = t1 - t0;
      s->list[rep] = list_ns;
      s->end[rep] = end_ns;
      s->collects[rep] = s1.collects - s0.collects;
      s->uploaded[rep] = s1.bytes_uploaded - s0.bytes_uploaded;
      s->n = (size_t)rep + 1;
   }
   return true;
}

/* Every BO written and submitted once: pages populated on both sides. */
static bool
populate(struct bench *b, struct side *side)
{
   uint64_t list_ns, end_ns;

   for (size_t i = 0; i < b->count; i++)
      memset(side->maps[i], (int)(i % 251) + 1, BO_SIZE);
   return check(b, submit_all(side, b->count, &list_ns, &end_ns),
                "population submission");
}

/* The device copy of every BO must equal its mapping: checksums computed
 * on the device, in batches. */
static bool
verify(struct bench *b, struct side *side, const char *what)
{
   enum { BATCH = 4096 };
   struct cohmap_bo *results;

   if (!check(b, cohmap_bo_create(side->dev, BATCH * 8,
                                  COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE,
                                  &results),
              "results bo_create"))
      return false;
   const uint8_t *r = cohmap_bo_map(results);
   bool ok = true;
   for (size_t first = 0; first < b->count && ok; first += BATCH) {
      size_t n = b->count - first < BATCH ? b->count - first : BATCH;
      struct cohmap_submit *s;
      struct cohmap_fence *f = NULL;
      int ret = cohmap_submit_begin(side->dev, &s);
      if (!ret)
         ret = cohmap_submit_add_bo(s, results, COHMAP_ACCESS_WRITE);
      for (size_t i = 0; i < n && !ret; i++) {
         ret = cohmap_submit_add_bo(s, side->bos[first + i],
                                    COHMAP_ACCESS_READ);
         if (!ret)
            ret = cohmap_cmd_checksum(s, results, 8 * i,
                                      side->bos[first + i], 0, BO_SIZE);
      }
      if (ret)
         cohmap_submit_abort(s);
      else
         ret = cohmap_submit_end(s, &f);
      if (!ret)
         ret = cohmap_fence_wait(f, UINT64_MAX);
      cohmap_fence_destroy(f);
      ok = check(b, ret, "verification submission");
      for (size_t i = 0; i < n && ok; i++) {
         uint64_t got;
         memcpy(&got, r + 8 * i, 8);
         uint64_t want = cohmap_checksum(side->maps[first + i], BO_SIZE);
         if (got != want) {
            fprintf(stderr, "%s: BO %zu: the device copy differs from the "
                    "mapping (checksum 0x%016" PRIx64 ", mapping 0x%016"
                    PRIx64 ")\n", what, first + i, got, want);
            b->failed = true;
            ok = false;
         }
      }
   }
   check(b, cohmap_bo_destroy(results), "results bo_destroy");
   return ok;
}

static void
print_row(const char *method, struct side *side, enum config c,
          enum cycle_kind k, double *median_total)
{
   struct samples *s = &side->s[k];
   *median_total = median(s->total, s->n);
   double stores = median(s->stores, s->n);
   double list = median(s->list, s->n);
   double end = median(s->end, s->n);
   double collects = median(s->collects, s->n);
   double uploaded = median(s->uploaded, s->n);

   printf("| %s | %s | %s | %zu | %.0f | %.0f | ", method,
          k == SUBMIT ? "submission" : "flush_all", config_names[c],
          side->regions, *median_total / 1000.0, stores / 1000.0);
   if (k == SUBMIT)
      printf("%.0f | ", list / 1000.0);
   else
      printf("- | ");
   printf("%.0f | %.0f | %.0f |\n", end / 1000.0, collects, uploaded);
}

static bool
run_method(struct bench *b, enum cohmap_method method)
{
   const char *mname = cohmap_method_name(method);
   struct side sides[NCONFIGS];
   bool ok = true;

   memset(sides, 0, sizeof(sides));
   fprintf(stderr, "%s: creating 2 x %zu BOs...", mname, b->count);
   for (unsigned c = 0; c < NCONFIGS && ok; c++)
      ok = side_create(b, &sides[c], method, (enum config)c);
   for (unsigned c = 0; c < NCONFIGS && ok; c++)
      ok = populate(b, &sides[c]);
   for (unsigned w = 0; w < WARMUP_CYCLES && ok; w++) {
      for (unsigned c = 0; c < NCONFIGS && ok; c++) {
         for (unsigned k = 0; k < NKINDS && ok; k++)
            ok = cycle(b, &sides[c], (enum cycle_kind)k, -1);
      }
   }
   fprintf(stderr, " measuring...");

   /* Side by side: per-BO then slab, then slab then per-BO, ... */
   for (size_t rep = 0; rep < b->reps && ok; rep++) {
      for (unsigned i = 0; i < NCONFIGS && ok; i++) {
         unsigned c = rep % 2 ? NCONFIGS - 1 - i : i;
         for (unsigned k = 0; k < NKINDS && ok; k++)
            ok = cycle(b, &sides[c], (enum cycle_kind)k, (long)rep);
      }
   }
   fprintf(stderr, " verifying...");
   for (unsigned c = 0; c < NCONFIGS && ok; c++)
      ok = verify(b, &sides[c], config_names[c]);
   fprintf(stderr, "%s\n", ok ? " done" : " FAILED");

   if (ok) {
      printf("\n### %s: %zu BOs of %d bytes, %zu written per cycle, "
             "medians of %zu cycles\n\n", mname, b->count, BO_SIZE,
             b->dirty, b->reps);
      printf("| method | cycle | layout | regions | µs/cycle | µs stores "
             "| µs begin + add_bo | µs end + wait (flush) "
             "| collects/cycle | bytes uploaded/cycle |\n");
      printf("|---|---|---|--:|--:|--:|--:|--:|--:|--:|\n");
      double t[NCONFIGS][NKINDS];
      for (unsigned k = 0; k < NKINDS; k++) {
         for (unsigned c = 0; c < NCONFIGS; c++)
            print_row(mname, &sides[c], (enum config)c, (enum cycle_kind)k,
                      &t[c][k]);
      }
      /* The ratio of the tracking part alone: the buffer list costs the
       * same in both configurations. */
      double end_ratio =
         median(sides[PER_BO].s[SUBMIT].end, sides[PER_BO].s[SUBMIT].n) /
         median(sides[SLAB].s[SUBMIT].end, sides[SLAB].s[SUBMIT].n);
      printf("\n%s per-BO / slab: submission cycle %.1fx (end + wait alone "
             "%.1fx), flush_all cycle %.1fx\n", mname,
             t[PER_BO][SUBMIT] / t[SLAB][SUBMIT], end_ratio,
             t[PER_BO][FLUSH_ALL] / t[SLAB][FLUSH_ALL]);
      fflush(stdout);
   }

   for (unsigned c = 0; c < NCONFIGS; c++)
      side_destroy(b, &sides[c]);
   return ok && !b->failed;
}

static void
usage(FILE *f, const char *argv0)
{
   fprintf(f,
           "usage: %s [--quick] [--count N] [--reps N] [--methods LIST]\n"
           "  --quick         %d BOs, %d repetitions (a smoke run)\n"
           "  --count N       BOs per configuration (default %d)\n"
           "  --reps N        timed cycles per configuration (default %d)\n"
           "  --methods LIST  comma-separated (default: scan,compare)\n",
           argv0, QUICK_COUNT, QUICK_REPS, DEFAULT_COUNT, DEFAULT_REPS);
}

static bool
parse_count(const char *s, size_t *out)
{
   char *end;
   errno = 0;
   unsigned long long v = strtoull(s, &end, 10);
   if (errno || end == s || *end || v == 0)
      return false;
   *out = (size_t)v;
   return true;
}

int
main(int argc, char **argv)
{
   struct bench b = {.count = DEFAULT_COUNT, .reps = DEFAULT_REPS,
                     .rng = SEED};
   enum cohmap_method methods[8] = {COHMAP_METHOD_SCAN,
                                    COHMAP_METHOD_COMPARE};
   size_t nmethods = 2;

   for (int i = 1; i < argc; i++) {
      const char *a = argv[i];
      bool has_arg = i + 1 < argc, ok = true;
      if (!strcmp(a, "--quick")) {
         b.count = QUICK_COUNT;
         b.reps = QUICK_REPS;
      } else if (!strcmp(a, "--count") && has_arg) {
         ok = parse_count(argv[++i], &b.count);
      } else if (!strcmp(a, "--reps") && has_arg) {
         ok = parse_count(argv[++i], &b.reps);
      } else if (!strcmp(a, "--methods") && has_arg) {
         nmethods = 0;
         char *list = argv[++i], *save = NULL;
         for (char *m = strtok_r(list, ",", &save); m && ok;
              m = strtok_r(NULL, ",", &save)) {
            ok = nmethods < ARRAY_SIZE(methods) &&
                 cohmap_method_from_name(m, &methods[nmethods]) == 0 &&
                 methods[nmethods] != COHMAP_METHOD_AUTO;
            nmethods++;
         }
         ok = ok && nmethods;
      } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
         usage(stdout, argv[0]);
         return 0;
      } else {
         ok = false;
      }
      if (!ok) {
         fprintf(stderr, "%s: bad argument '%s'\n", argv[0], argv[i]);
         usage(stderr, argv[0]);
         return 2;
      }
   }

   /* Progress goes to stderr: keep the two in order. */
   setvbuf(stdout, NULL, _IOLBF, 0);

   /* Both configurations live at once: per-BO needs two mappings per BO
    * (the tracked one and the sim's), slabs a handful. */
   long max_maps = read_long("/proc/sys/vm/max_map_count");
   long used = count_maps();
   printf("cohmap slab-scan: vm.max_map_count %ld, %ld mappings in use at "
          "start, %zu BOs per configuration need about %zu more\n",
          max_maps, used, b.count, 2 * b.count);
   if (max_maps > 0 && used >= 0 &&
       (long)(2 * b.count) + used + MAP_MARGIN > max_maps) {
      size_t fit = max_maps > used + MAP_MARGIN
                      ? (size_t)(max_maps - used - MAP_MARGIN) / 2
                      : 0;
      printf("note: vm.max_map_count is too low for %zu per-BO regions; "
             "measuring %zu BOs instead\n", b.count, fit);
      if (fit < 100) {
         fprintf(stderr, "vm.max_map_count %ld leaves no room\n", max_maps);
         return 1;
      }
      b.count = fit;
   }
   b.dirty = (b.count * DEFAULT_PERMILLE + 500) / 1000;
   if (!b.dirty)
      b.dirty = 1;
   b.perm = malloc(b.count * sizeof(*b.perm));
   b.targets = malloc(b.dirty * sizeof(*b.targets));
   if (!b.perm || !b.targets) {
      fprintf(stderr, "out of memory\n");
      return 1;
   }
   for (size_t i = 0; i < b.count; i++)
      b.perm[i] = i;

   /* Methods this machine lacks are skipped, loudly. */
   struct cohmap_context_options copts;
   struct cohmap_context *ctx;
   cohmap_context_options_init(&copts);
   copts.flags = COHMAP_CONTEXT_IGNORE_ENV;
   if (cohmap_context_create(&copts, &ctx)) {
      fprintf(stderr, "cohmap_context_create: %s\n", cohmap_error_message());
      return 1;
   }
   int status = 0;
   print_load("before");
   uint64_t t0 = now_ns();
   for (size_t m = 0; m < nmethods; m++) {
      const char *reason = NULL;
      if (cohmap_context_method_status(ctx, methods[m], &reason)) {
         printf("note: %s unavailable here (%s), skipped\n",
                cohmap_method_name(methods[m]), reason ? reason : "?");
         continue;
      }
      if (!run_method(&b, methods[m]))
         status = 1;
   }
   cohmap_context_destroy(ctx);
   printf("\ntotal %.1f s\n", (double)(now_ns() - t0) / 1e9);
   print_load("after");
   free(b.perm);
   free(b.targets);
   if (status)
      fprintf(stderr, "FAILED: see the messages above\n");
   return status;
}
