/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * track-costs: what each tracking method costs per dirty and per clean
 * page, measured the way an application pays it.
 *
 * A *cycle* is:
 *
 *  1. the application writes one 8-byte value (random, new every cycle)
 *     into each chosen dirty page (random distinct pages, chosen anew each
 *     cycle with a seeded PRNG, at a random 8-byte-aligned offset in the
 *     page; at 100 % every page, in address order);
 *  2. cohmap_region_collect();
 *  3. the upload: a memcpy of every reported range from dirty.data into a
 *     separate "device" buffer of the same size.
 *
 * The whole cycle is timed with CLOCK_MONOTONIC.  The write phase is
 * included on purpose: for fault and scan the first store to a page is
 * where the tracking cost is paid (a signal, or a write-protect fault
 * resolved in the kernel), and leaving it out would make them look free.
 * Choosing the pages is done before the clock starts: it is the
 * benchmark's work, not the application's.
 *
 * Per configuration (method, region size, dirty fraction) a fresh region
 * is created, every page is written and collected once (untimed: first
 * touch populates the pages, which is not tracking cost), then 2 untimed
 * warm-up cycles run, then the timed cycles: at least MIN_CYCLES and until
 * MIN_TIMED_NS of cycle time has accumulated, except for regions of 1 GiB
 * and more, which get exactly MIN_CYCLES.  The cycle time reported is the
 * median of the per-cycle times.
 *
 *    per clean page = median(0 %) / pages
 *    per dirty page = (median(f) - median(0 %)) / dirty pages(f), f > 0
 *
 * After the timed cycles the device buffer must equal the region's memory
 * (memcmp); a mismatch, or any failing collect, makes the program exit
 * with status 1, so that the --quick smoke run in the test suite checks
 * the upload path too, not only that it runs.
 *
 * A line with the machine's syscall and page-fault cost is printed
 * before and after the run: on a shared VM those drift with the host's
 * load, and the scan and fault columns drift with them.
 *
 * The fault method may give up on a region (vm.max_map_count exhausted by
 * scattered unprotects) and move it to another method.  That is reported
 * ("method switches"), not hidden: the numbers of such a row are partly
 * another method's.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cohmap/cohmap.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define KIB ((size_t)1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)

/* Enough cycles for a stable median on small regions (a 64 KiB cycle takes
 * a few µs, so 20 ms is thousands of samples); big regions are bounded by
 * MIN_CYCLES instead so that the whole run stays within minutes. */
#define MIN_CYCLES 5
#define WARMUP_CYCLES 2
#define MIN_TIMED_NS (20ull * 1000 * 1000)
#define MAX_CYCLES 200000
#define EXACT_CYCLES_FROM GIB

#define SEED 0x636f686d61702d62ull

static const unsigned fractions_permille[] = {0, 10, 100, 1000};
#define NFRAC ARRAY_SIZE(fractions_permille)

static const enum cohmap_method all_methods[] = {
   COHMAP_METHOD_SCAN,
   COHMAP_METHOD_FAULT,
   COHMAP_METHOD_COMPARE,
   COHMAP_METHOD_FULL,
};
#define NMETHODS ARRAY_SIZE(all_methods)

static const size_t default_sizes[] = {64 * KIB, MIB, 64 * MIB, GIB};
static const size_t quick_sizes[] = {64 * KIB, MIB};
#define MAX_SIZES 16

struct result {
   bool ran;
   size_t dirty_pages;
   size_t cycles;
   double median_ns;
   double bytes_uploaded; /* mean over the timed cycles */
   enum cohmap_method final_method;
   uint64_t method_switches;
};

struct bench {
   struct cohmap_context *ctx;
   size_t page_size;
   FILE *csv;
   bool failed;

   /* Scratch shared by all configurations of one size. */
   uint32_t *perm;     /* a permutation of the page indices */
   size_t *targets;    /* byte offsets written in one cycle */
   uint64_t *times;    /* per-cycle nanoseconds */
   size_t times_cap;
};

static uint64_t
now_ns(void)
{
   struct timespec ts;

   clock_gettime(CLOCK_MONOTONIC, &ts);
   return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64: tiny, seedable, and good enough to scatter pages. */
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

/*
 * The machine's trap costs, printed before and after the run: on a VM the
 * price of a syscall and of a page fault varies several-fold with the
 * host's load, and the scan and fault columns move with it.  Without this
 * line two runs could not be told apart from a library change.
 */
static void
print_calibration(const char *when, size_t page_size)
{
   enum { SYSCALLS = 20000, PAGES = 256 };
   volatile pid_t sink;

   uint64_t t0 = now_ns();
   for (unsigned i = 0; i < SYSCALLS; i++)
      sink = getppid();
   uint64_t t1 = now_ns();
   (void)sink;

   uint8_t *p = mmap(NULL, PAGES * page_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
   if (p == MAP_FAILED)
      return;
   madvise(p, PAGES * page_size, MADV_NOHUGEPAGE);
   uint64_t t2 = now_ns();
   for (unsigned i = 0; i < PAGES; i++)
      p[i * page_size] = 1;
   uint64_t t3 = now_ns();
   munmap(p, PAGES * page_size);

   printf("machine (%s): syscall (getppid) %.0f ns, first-touch page fault "
          "%.2f µs\n",
          when, (double)(t1 - t0) / SYSCALLS, (double)(t3 - t2) / 1e3 / PAGES);
   fflush(stdout);
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

static const char *
bytes_short(double bytes, char *buf, size_t len)
{
   if (bytes < 10 * KIB)
      snprintf(buf, len, "%.0f", bytes);
   else if (bytes < 10 * MIB)
      snprintf(buf, len, "%.0fK", bytes / KIB);
   else if (bytes < 10.0 * GIB)
      snprintf(buf, len, "%.0fM", bytes / MIB);
   else
      snprintf(buf, len, "%.0fG", bytes / GIB);
   return buf;
}

static size_t
dirty_pages_for(size_t npages, unsigned permille)
{
   if (permille == 0)
      return 0;
   size_t k = (npages * permille + 500) / 1000;
   /* A 16-page region at 1 % still gets one dirty page: "some writes"
    * must not silently turn into "no writes". */
   return k ? k : 1;
}

/*
 * Picks this cycle's targets: k random distinct pages by a partial
 * Fisher-Yates shuffle of b->perm (any permutation is a valid start, so it
 * is not reset between cycles), or every page in order when k == npages.
 */
static void
choose_targets(struct bench *b, size_t npages, size_t k, uint64_t *rng)
{
   size_t ps = b->page_size;

   for (size_t i = 0; i < k; i++) {
      size_t page;
      if (k == npages) {
         page = i;
      } else {
         size_t j = i + (size_t)rng_below(rng, npages - i);
         uint32_t t = b->perm[i];
         b->perm[i] = b->perm[j];
         b->perm[j] = t;
         page = b->perm[i];
      }
      size_t off = (size_t)rng_below(rng, ps / 8) * 8;
      b->targets[i] = page * ps + off;
   }
}

/* One cycle: write, collect, upload.  Returns 0 or the collect's error. */
static int
run_cycle(struct cohmap_region *region, uint8_t *mem, uint8_t *device,
          const size_t *targets, size_t k, uint64_t value, size_t *uploaded)
{
   for (size_t i = 0; i < k; i++) {
      /* A fresh random value every cycle (value is drawn per cycle):
       * compare reports only the bytes that really changed, so values
       * that repeat their predecessors' high bytes would upload less
       * than the 8 bytes an application writes. */
      uint64_t v = value + i * 0x9e3779b97f4a7c15ull;
      memcpy(mem + targets[i], &v, sizeof(v));
   }

   struct cohmap_dirty dirty;
   int ret = cohmap_region_collect(region, 0, &dirty);
   if (ret)
      return ret;

   const uint8_t *src = dirty.data;
   for (size_t i = 0; i < dirty.count; i++) {
      const struct cohmap_range *r = &dirty.ranges[i];
      memcpy(device + r->offset, src + r->offset, r->length);
   }
   *uploaded = dirty.bytes;
   return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
   uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

   return (x > y) - (x < y);
}

static double
median(uint64_t *v, size_t n)
{
   qsort(v, n, sizeof(v[0]), cmp_u64);
   if (n % 2)
      return (double)v[n / 2];
   return ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2.0;
}

/*
 * Measures one configuration into *res.  Returns false on a failure that
 * makes the numbers (or the library) wrong: a failing collect or a device
 * copy that differs from the memory.
 */
static bool
run_config(struct bench *b, enum cohmap_method method, size_t size,
           uint8_t *device, unsigned permille, struct result *res)
{
   const char *mname = cohmap_method_name(method);
   size_t npages = size / b->page_size;
   size_t k = dirty_pages_for(npages, permille);
   uint64_t rng = SEED ^ ((uint64_t)method << 56) ^ size ^
                  ((uint64_t)permille << 40);
   struct cohmap_region *region;
   size_t uploaded;
   char sname[32];
   bool ok = false;
   int ret;

   size_name(size, sname, sizeof(sname));
   fprintf(stderr, "%s %s %u %%...", sname, mname, permille / 10);
   fflush(stderr);

   memset(res, 0, sizeof(*res));
   res->dirty_pages = k;

   ret = cohmap_region_create(b->ctx, size, method, 0, &region);
   if (ret) {
      fprintf(stderr, " region_create failed: %s\n", cohmap_error_message());
      return false;
   }
   uint8_t *mem = cohmap_region_ptr(region);

   /* The device starts equal to a fresh (zeroed) region; the population
    * cycle below writes and uploads every page, so from then on the
    * device must track the memory exactly. */
   memset(device, 0, size);

   /* Untimed population: every page gets written (first touch allocates
    * it) and collected, so no timed cycle pays for page allocation. */
   choose_targets(b, npages, npages, &rng);
   ret = run_cycle(region, mem, device, b->targets, npages, rng_next(&rng),
                   &uploaded);
   for (unsigned i = 0; i < WARMUP_CYCLES && ret == 0; i++) {
      choose_targets(b, npages, k, &rng);
      ret = run_cycle(region, mem, device, b->targets, k, rng_next(&rng),
                      &uploaded);
   }

   uint64_t total_ns = 0;
   double bytes_sum = 0;
   size_t n = 0;
   while (ret == 0) {
      if (n >= MIN_CYCLES &&
          (size >= EXACT_CYCLES_FROM || total_ns >= MIN_TIMED_NS ||
           n >= MAX_CYCLES))
         break;
      if (n == b->times_cap) {
         size_t cap = b->times_cap ? 2 * b->times_cap : 1024;
         uint64_t *t = realloc(b->times, cap * sizeof(*t));
         if (!t) {
            fprintf(stderr, " out of memory\n");
            goto out;
         }
         b->times = t;
         b->times_cap = cap;
      }

      choose_targets(b, npages, k, &rng);
      uint64_t value = rng_next(&rng);
      uint64_t t0 = now_ns();
      ret = run_cycle(region, mem, device, b->targets, k, value, &uploaded);
      uint64_t t1 = now_ns();

      b->times[n++] = t1 - t0;
      total_ns += t1 - t0;
      bytes_sum += (double)uploaded;
   }
   if (ret) {
      fprintf(stderr, " collect failed: %s (%d)\n", cohmap_error_message(),
              ret);
      goto out;
   }

   if (memcmp(device, mem, size) != 0) {
      size_t first = 0;
      while (device[first] == mem[first])
         first++;
      fprintf(stderr, " device copy differs from memory at offset %zu\n",
              first);
      goto out;
   }

   struct cohmap_region_stats stats;
   ret = cohmap_region_get_stats(region, &stats);
   if (ret) {
      fprintf(stderr, " get_stats failed: %s\n", cohmap_error_message());
      goto out;
   }

   res->ran = true;
   res->cycles = n;
   res->median_ns = median(b->times, n);
   res->bytes_uploaded = bytes_sum / (double)n;
   res->final_method = cohmap_region_method(region);
   res->method_switches = stats.method_switches;
   fprintf(stderr, " %.1f µs/cycle, %zu cycles", res->median_ns / 1000.0, n);
   if (res->method_switches)
      fprintf(stderr, ", now %s after %" PRIu64 " method switch(es)",
              cohmap_method_name(res->final_method), res->method_switches);
   fprintf(stderr, "\n");
   ok = true;

out:
   cohmap_region_destroy(region);
   return ok;
}

static double
clean_ns(const struct result *r, size_t npages)
{
   return r[0].median_ns / (double)npages;
}

static double
dirty_ns(const struct result *r, unsigned f)
{
   return (r[f].median_ns - r[0].median_ns) / (double)r[f].dirty_pages;
}

static void
print_table(struct bench *b, size_t size, const enum cohmap_method *methods,
            size_t nmethods, struct result (*res)[NFRAC])
{
   size_t npages = size / b->page_size;
   char sname[32];

   printf("\n### %s (%zu pages; dirty pages at 1/10/100 %%: %zu/%zu/%zu)\n\n",
          size_name(size, sname, sizeof(sname)), npages,
          dirty_pages_for(npages, 10), dirty_pages_for(npages, 100),
          dirty_pages_for(npages, 1000));
   printf("| method | µs/cycle 0 %% | 1 %% | 10 %% | 100 %% "
          "| ns/clean page | ns/dirty page 1 %% | 10 %% | 100 %% "
          "| uploaded/cycle 0/1/10/100 %% | cycles 0/1/10/100 %% |\n");
   printf("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");

   for (size_t m = 0; m < nmethods; m++) {
      const struct result *r = res[m];
      printf("| %s", cohmap_method_name(methods[m]));
      for (unsigned f = 0; f < NFRAC; f++) {
         if (r[f].ran)
            printf(" | %.1f", r[f].median_ns / 1000.0);
         else
            printf(" | -");
      }
      if (r[0].ran)
         printf(" | %.2f", clean_ns(r, npages));
      else
         printf(" | -");
      for (unsigned f = 1; f < NFRAC; f++) {
         if (r[0].ran && r[f].ran)
            printf(" | %.0f", dirty_ns(r, f));
         else
            printf(" | -");
      }
      printf(" | ");
      for (unsigned f = 0; f < NFRAC; f++) {
         char buf[32];
         printf("%s%s", f ? "/" : "",
                r[f].ran ? bytes_short(r[f].bytes_uploaded, buf, sizeof(buf))
                         : "-");
      }
      printf(" | ");
      for (unsigned f = 0; f < NFRAC; f++)
         printf("%s%zu", f ? "/" : "", r[f].cycles);
      printf(" |\n");
   }

   /* A fallback changes what a row measures: say so next to the table. */
   bool any = false;
   for (size_t m = 0; m < nmethods; m++) {
      for (unsigned f = 0; f < NFRAC; f++) {
         const struct result *r = &res[m][f];
         if (!r->ran || !r->method_switches)
            continue;
         if (!any)
            printf("\nmethod switches:\n");
         any = true;
         printf("- %s at %u %%: %" PRIu64 " switch(es), ended as %s\n",
                cohmap_method_name(methods[m]), fractions_permille[f] / 10,
                r->method_switches, cohmap_method_name(r->final_method));
      }
   }
   fflush(stdout);
}

static void
write_csv(struct bench *b, enum cohmap_method method, size_t size,
          const struct result *r)
{
   size_t npages = size / b->page_size;

   if (!b->csv)
      return;
   for (unsigned f = 0; f < NFRAC; f++) {
      if (!r[f].ran)
         continue;
      fprintf(b->csv, "%s,%zu,%u,%zu,%zu,%.0f,", cohmap_method_name(method),
              size, fractions_permille[f] / 10, r[f].dirty_pages,
              r[f].cycles, r[f].median_ns);
      if (r[0].ran)
         fprintf(b->csv, "%.3f,", clean_ns(r, npages));
      else
         fprintf(b->csv, ",");
      if (f > 0 && r[0].ran)
         fprintf(b->csv, "%.1f,", dirty_ns(r, f));
      else
         fprintf(b->csv, ",");
      fprintf(b->csv, "%.0f,%s,%" PRIu64 "\n", r[f].bytes_uploaded,
              cohmap_method_name(r[f].final_method), r[f].method_switches);
   }
   fflush(b->csv);
}

static bool
bench_size(struct bench *b, size_t size, const enum cohmap_method *methods,
           size_t nmethods)
{
   size_t npages = size / b->page_size;
   struct result (*res)[NFRAC] = calloc(nmethods, sizeof(*res));
   bool ok = true;

   /* Fill the device buffer now: its first-touch faults are no more the
    * upload's cost than the region's are the tracking's. */
   uint8_t *device = mmap(NULL, size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
   b->perm = malloc(npages * sizeof(*b->perm));
   b->targets = malloc(npages * sizeof(*b->targets));
   if (device == MAP_FAILED || !b->perm || !b->targets || !res) {
      fprintf(stderr, "out of memory for %zu-byte buffers\n", size);
      ok = false;
      goto out;
   }
   memset(device, 0, size);
   for (size_t i = 0; i < npages; i++)
      b->perm[i] = (uint32_t)i;

   for (size_t m = 0; m < nmethods; m++) {
      for (unsigned f = 0; f < NFRAC; f++) {
         if (!run_config(b, methods[m], size, device, fractions_permille[f],
                         &res[m][f]))
            ok = false;
      }
      write_csv(b, methods[m], size, res[m]);
   }
   print_table(b, size, methods, nmethods, res);

out:
   if (device != MAP_FAILED)
      munmap(device, size);
   free(b->perm);
   free(b->targets);
   b->perm = NULL;
   b->targets = NULL;
   free(res);
   return ok;
}

static int
parse_size(const char *s, size_t *out)
{
   char *end;
   errno = 0;
   unsigned long long v = strtoull(s, &end, 10);
   if (errno || end == s)
      return -EINVAL;
   switch (*end) {
   case 'K': case 'k': v *= KIB; end++; break;
   case 'M': case 'm': v *= MIB; end++; break;
   case 'G': case 'g': v *= GIB; end++; break;
   default: break;
   }
   if (*end == 'i' || *end == 'B')
      end += *end == 'i' && end[1] == 'B' ? 2 : 1;
   if (*end || v == 0)
      return -EINVAL;
   *out = (size_t)v;
   return 0;
}

/* Splits a comma-separated list in place and calls parse on each item. */
static int
parse_list(char *list, size_t max, size_t *count,
           int (*parse)(const char *item, void *out, size_t i), void *out)
{
   *count = 0;
   for (char *save = NULL, *item = strtok_r(list, ",", &save); item;
        item = strtok_r(NULL, ",", &save)) {
      if (*count == max)
         return -E2BIG;
      int ret = parse(item, out, *count);
      if (ret)
         return ret;
      (*count)++;
   }
   return *count ? 0 : -EINVAL;
}

static int
parse_size_item(const char *item, void *out, size_t i)
{
   return parse_size(item, &((size_t *)out)[i]);
}

static int
parse_method_item(const char *item, void *out, size_t i)
{
   enum cohmap_method *m = &((enum cohmap_method *)out)[i];
   int ret = cohmap_method_from_name(item, m);
   return ret == 0 && *m == COHMAP_METHOD_AUTO ? -EINVAL : ret;
}

static void
usage(FILE *f, const char *argv0)
{
   fprintf(f,
           "usage: %s [--quick] [--sizes LIST] [--methods LIST] "
           "[--csv FILE]\n"
           "  --quick         only 64K and 1M (a smoke run)\n"
           "  --sizes LIST    e.g. 64K,1M,64M,1G (default: all four)\n"
           "  --methods LIST  of scan,fault,compare,full (default: all)\n"
           "  --csv FILE      one row per (method, size, dirty fraction)\n",
           argv0);
}

int
main(int argc, char **argv)
{
   size_t sizes[MAX_SIZES];
   size_t nsizes = ARRAY_SIZE(default_sizes);
   enum cohmap_method methods[NMETHODS * 4];
   size_t nmethods = NMETHODS;
   const char *csv_path = NULL;
   struct bench b = {0};
   int status = 0;

   memcpy(sizes, default_sizes, sizeof(default_sizes));
   memcpy(methods, all_methods, sizeof(all_methods));

   for (int i = 1; i < argc; i++) {
      const char *a = argv[i];
      bool has_arg = i + 1 < argc;
      int ret = 0;

      if (!strcmp(a, "--quick")) {
         nsizes = ARRAY_SIZE(quick_sizes);
         memcpy(sizes, quick_sizes, sizeof(quick_sizes));
      } else if (!strcmp(a, "--sizes") && has_arg) {
         ret = parse_list(argv[++i], ARRAY_SIZE(sizes), &nsizes,
                          parse_size_item, sizes);
      } else if (!strcmp(a, "--methods") && has_arg) {
         ret = parse_list(argv[++i], ARRAY_SIZE(methods), &nmethods,
                          parse_method_item, methods);
      } else if (!strcmp(a, "--csv") && has_arg) {
         csv_path = argv[++i];
      } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
         usage(stdout, argv[0]);
         return 0;
      } else {
         ret = -EINVAL;
      }
      if (ret) {
         /* Name the value when it was the value that did not parse. */
         fprintf(stderr, "%s: bad argument '%s'\n", argv[0], argv[i]);
         usage(stderr, argv[0]);
         return 2;
      }
   }

   b.page_size = (size_t)sysconf(_SC_PAGESIZE);
   for (size_t i = 0; i < nsizes; i++) {
      if (sizes[i] % b.page_size) {
         fprintf(stderr, "size %zu is not a multiple of the page size\n",
                 sizes[i]);
         return 2;
      }
   }

   struct cohmap_context_options opts;
   cohmap_context_options_init(&opts);
   /* The benchmark measures the methods it names, whatever the
    * developer's COHMAP_METHOD says. */
   opts.flags = COHMAP_CONTEXT_IGNORE_ENV;
   if (cohmap_context_create(&opts, &b.ctx)) {
      fprintf(stderr, "cohmap_context_create: %s\n", cohmap_error_message());
      return 1;
   }

   /* Unavailable methods (no userfaultfd here) are skipped, loudly. */
   size_t n = 0;
   for (size_t m = 0; m < nmethods; m++) {
      const char *reason = NULL;
      if (cohmap_context_method_status(b.ctx, methods[m], &reason)) {
         printf("note: %s unavailable here (%s), skipped\n",
                cohmap_method_name(methods[m]), reason ? reason : "?");
         continue;
      }
      methods[n++] = methods[m];
   }
   nmethods = n;

   if (csv_path) {
      b.csv = fopen(csv_path, "w");
      if (!b.csv) {
         fprintf(stderr, "%s: %s\n", csv_path, strerror(errno));
         cohmap_context_destroy(b.ctx);
         return 1;
      }
      fprintf(b.csv, "method,size_bytes,dirty_percent,dirty_pages,cycles,"
                     "median_ns_per_cycle,ns_per_clean_page,"
                     "ns_per_dirty_page,bytes_uploaded,final_method,"
                     "method_switches\n");
   }

   printf("cohmap track-costs: median ns per cycle (write + collect + "
          "upload), page size %zu\n",
          b.page_size);
   fflush(stdout);

   print_calibration("before", b.page_size);
   uint64_t t0 = now_ns();
   for (size_t s = 0; s < nsizes; s++) {
      if (!bench_size(&b, sizes[s], methods, nmethods))
         status = 1;
   }
   double total_s = (double)(now_ns() - t0) / 1e9;
   printf("\n");
   print_calibration("after", b.page_size);
   printf("total %.1f s\n", total_s);

   if (b.csv && fclose(b.csv) != 0) {
      fprintf(stderr, "%s: %s\n", csv_path, strerror(errno));
      status = 1;
   }
   free(b.times);
   cohmap_context_destroy(b.ctx);
   if (status)
      fprintf(stderr, "FAILED: see the messages above\n");
   return status;
}
