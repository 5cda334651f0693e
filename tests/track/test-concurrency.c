/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * No lost write with writers racing the collects.
 *
 * Writer threads store increasing 64-bit sequence numbers into random
 * aligned slots of the region while the main thread loops: collect, copy
 * the reported ranges from `data` into a mirror.  Every so often the
 * writers pause (each finishes its store and waits), and one collect must
 * then bring the mirror to the memory byte for byte: the contract says a
 * store that completed before collect was called is reported by it.  The
 * same holds after the writers stop.  A write lost in a race shows up as a
 * slot whose mirror value is stale at the next checkpoint (unless
 * rewritten since, which is why checkpoints are frequent).
 *
 * Placements: slots spread over 16 or 4 pages, all writers on one page,
 * and all writers on two adjacent pages (maximum contention: fault
 * handlers racing each other and the collect on the same page's
 * protection).
 *
 * Without arguments: 2,000 collects for the main case of each method,
 * 1,000 for the others.  --slow: 100,000 and 5,000 (--method=NAME picks
 * one method, so that meson runs them in parallel).
 */

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test-util.h"

#define REGION_PAGES 64

enum placement {
   SPREAD,      /* 16 pages */
   FOUR_PAGES,
   ONE_PAGE,
   TWO_PAGES,
};

static const char *const placement_names[] = {
   "16 pages", "4 pages", "one page", "two pages",
};

struct conc_case {
   enum cohmap_method method;
   uint32_t flags;
   uint32_t widen;
   enum placement placement;
   unsigned writers;
   unsigned collects;
   unsigned checkpoint_every;
   char name[96];
};

static bool
collect_into(struct cohmap_region *region, uint8_t *mirror, size_t size,
             const char *what)
{
   struct cohmap_dirty d;
   int ret = cohmap_region_collect(region, 0, &d);
   if (ret) {
      fprintf(stderr, "%s: collect: %s (%s)\n", what, strerror(-ret),
              cohmap_error_message());
      return false;
   }
   if (!tu_check_dirty_sorted_coalesced(&d, size, what))
      return false;
   tu_apply_dirty(mirror, &d);
   return true;
}

static void
test_concurrency(void **state)
{
   const struct conc_case *c = *state;
   const size_t page = tu_page_size();
   const size_t size = REGION_PAGES * page;

   struct cohmap_context *ctx = tu_context_create(c->widen, 0);
   assert_non_null(ctx);
   bool fatal;
   if (!tu_method_available(ctx, c->method, &fatal)) {
      cohmap_context_destroy(ctx);
      if (fatal)
         fail();
      skip();
   }

   /* Below fault's handler, which is installed with the region. */
   tu_segv_sentinel_install();
   struct cohmap_region *region = NULL;
   assert_int_equal(cohmap_region_create(ctx, size, c->method, c->flags,
                                         &region), 0);
   uint8_t *mem = cohmap_region_ptr(region);
   tu_segv_sentinel_watch(mem, size);
   uint8_t *mirror = calloc(1, size);
   assert_non_null(mirror);

   const size_t per_page = page / sizeof(uint64_t);
   /* Spread over 16 pages, not the whole region: with fault every page
    * written faults again after each collect, and 16 page boundaries give
    * plenty of races for a bounded cost. */
   size_t first_slot = 8 * per_page, nslots = 16 * per_page;
   if (c->placement == FOUR_PAGES) {
      nslots = 4 * per_page;
   } else if (c->placement == ONE_PAGE) {
      first_slot = 17 * per_page;
      nslots = per_page;
   } else if (c->placement == TWO_PAGES) {
      first_slot = 40 * per_page;
      nslots = 2 * per_page;
   }
   struct tu_writers *writers = tu_writers_start(
      mem, first_slot, nslots, c->writers, tu_seed_for(c->name));
   assert_non_null(writers);

   char what[160];
   bool ok = true;
   unsigned checkpoints = 0;
   double start = tu_now();
   for (unsigned i = 1; i <= c->collects && ok; i++) {
      tu_writers_wait_progress(writers);
      snprintf(what, sizeof(what), "%s collect %u", c->name, i);
      ok = collect_into(region, mirror, size, what);
      if (ok && i % c->checkpoint_every == 0) {
         tu_writers_pause(writers);
         snprintf(what, sizeof(what), "%s checkpoint after collect %u",
                  c->name, i);
         ok = collect_into(region, mirror, size, what) &&
              tu_mirror_matches(mirror, mem, size, what);
         tu_writers_resume(writers);
         checkpoints++;
      }
   }

   uint64_t stores = tu_writers_stop(writers);

   if (ok) {
      snprintf(what, sizeof(what), "%s final collect", c->name);
      ok = collect_into(region, mirror, size, what) &&
           tu_mirror_matches(mirror, mem, size, what);
   }
   if (ok) {
      /* Quiet now: nothing more to report, except for full. */
      struct cohmap_dirty d;
      assert_int_equal(cohmap_region_collect(region, 0, &d), 0);
      bool whole = c->method == COHMAP_METHOD_FULL &&
                   !(c->flags & COHMAP_REGION_BYTE_EXACT);
      if (whole) {
         ok = d.bytes == size;
      } else {
         ok = d.count == 0;
         if (!ok)
            fprintf(stderr, "%s: %zu bytes reported with no writer\n",
                    c->name, d.bytes);
      }
   }

   double secs = tu_now() - start;
   struct cohmap_region_stats st;
   assert_int_equal(cohmap_region_get_stats(region, &st), 0);
   printf("# %s: %u collects, %u checkpoints, %" PRIu64 " stores, "
          "%" PRIu64 " faults, %.2f s\n", c->name, c->collects, checkpoints,
          stores, st.faults, secs);

   free(mirror);
   assert_int_equal(cohmap_region_destroy(region), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
   size_t first;
   uint64_t passed_on = tu_segv_sentinel_remove(&first);
   assert_true(ok);
   assert_int_equal(passed_on, 0);
}

int
main(int argc, char **argv)
{
   bool slow = false;
   enum cohmap_method only = COHMAP_METHOD_AUTO;
   for (int i = 1; i < argc; i++) {
      if (strcmp(argv[i], "--slow") == 0) {
         slow = true;
      } else if (strncmp(argv[i], "--method=", 9) == 0) {
         if (cohmap_method_from_name(argv[i] + 9, &only) != 0) {
            fprintf(stderr, "unknown method %s\n", argv[i] + 9);
            return 2;
         }
      } else {
         fprintf(stderr, "usage: %s [--slow] [--method=NAME]\n", argv[0]);
         return 2;
      }
   }

   /* The main case gets the bulk of the collects; the others (BYTE_EXACT,
    * contended placements, fault without widening) fewer. */
   unsigned main_collects = slow ? 100000 : 2000;
   unsigned other_collects = slow ? 5000 : 1000;
   /* TEST_COLLECTS=N: N collects per case, for builds that run 10-50x
    * slower (bin/test's ThreadSanitizer leg). */
   const char *collects_env = getenv("TEST_COLLECTS");
   if (collects_env && *collects_env) {
      main_collects = (unsigned)strtoul(collects_env, NULL, 10);
      if (main_collects == 0) {
         fprintf(stderr, "TEST_COLLECTS='%s': expected a number > 0\n",
                 collects_env);
         return 2;
      }
      other_collects = main_collects;
   }

   struct {
      uint32_t flags;
      uint32_t widen;
      enum placement placement;
      unsigned writers;
      bool main_case;
   } shapes[] = {
      /* The long run: with fault each page written faults again after
       * every collect, so 4 pages keep 100,000 collects within minutes. */
      {0, 0, FOUR_PAGES, 2, true},
      {0, 0, SPREAD, 2, false},
      {COHMAP_REGION_BYTE_EXACT, 0, SPREAD, 2, false},
      {0, 0, ONE_PAGE, 3, false},
      {0, 0, TWO_PAGES, 3, false},
      {COHMAP_REGION_BYTE_EXACT, 0, TWO_PAGES, 3, false},
      /* fault only: no unprotect-ahead, so every page faults. */
      {0, 1, SPREAD, 2, false},
   };

   static struct conc_case cases[TU_METHODS_COUNT * TU_ARRAY_SIZE(shapes)];
   struct CMUnitTest tests[TU_ARRAY_SIZE(cases)];
   size_t n = 0;

   tu_seed();
   /* TEST_FILTER=pattern (cmocka wildcards) runs the matching tests only. */
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));
   for (size_t m = 0; m < TU_METHODS_COUNT; m++) {
      if (only != COHMAP_METHOD_AUTO && tu_methods[m] != only)
         continue;
      for (size_t s = 0; s < TU_ARRAY_SIZE(shapes); s++) {
         if (shapes[s].widen == 1 && tu_methods[m] != COHMAP_METHOD_FAULT)
            continue;
         struct conc_case *c = &cases[n];
         c->method = tu_methods[m];
         c->flags = shapes[s].flags;
         c->widen = shapes[s].widen;
         c->placement = shapes[s].placement;
         c->writers = shapes[s].writers;
         c->collects = shapes[s].main_case ? main_collects : other_collects;
         c->checkpoint_every = 50;
         char buf[48];
         snprintf(c->name, sizeof(c->name), "%s%s %s, %u writers",
                  tu_variant_name(c->method, c->flags, buf, sizeof(buf)),
                  c->widen == 1 ? "+no-widen" : "",
                  placement_names[c->placement], c->writers);
         tests[n] = (struct CMUnitTest){c->name, test_concurrency, NULL,
                                        NULL, c};
         n++;
      }
   }
   return _cmocka_run_group_tests(slow ? "concurrency-slow" : "concurrency",
                                  tests, n, NULL, NULL);
}
