/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * cohmap_region_set_method() between every ordered pair of methods, with
 * and without COHMAP_REGION_BYTE_EXACT.  The header promises the switch
 * loses nothing: the new method is armed first, the old one collected, and
 * its ranges reported by the next collect.
 *
 * Single-threaded: writes before the switch, a switch, writes after; the
 * next collect must cover every changed byte and stay within the written
 * pages (carried ranges may be whole pages even on exact regions); the
 * collect after that must already be as strict as the new method is.
 *
 * Threaded: writers store all the time while the main thread walks through
 * every ordered pair, switching with the writers running, collecting, and
 * pausing the writers for checkpoints where mirror == memory must hold;
 * then switches rapidly into and out of fault.  Writers either spread
 * over the region or hammer two slots of one page ("hot slots": the same
 * thread faults at the same address again and again).  A SIGSEGV sentinel
 * below cohmap's handler catches faults in tracked memory that cohmap
 * passes on instead of resolving (which would kill a real process).
 *
 * --slow: many more cycles and rapid switches.
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

#define REGION_PAGES 32

static bool slow;

struct switch_case {
   uint32_t flags;
   /* Threaded: writers store to this many slots of one page (hot), or
    * anywhere in the region (0). */
   unsigned hot_slots;
   char name[64];
};

static void
random_writes(struct tu_model *m, struct tu_rng *rng)
{
   size_t n = (size_t)tu_rng_range(rng, 0, 12);
   for (size_t i = 0; i < n; i++)
      tu_model_random_write(m, rng);
}

static bool
available(struct cohmap_context *ctx, enum cohmap_method m)
{
   bool fatal;
   if (tu_method_available(ctx, m, &fatal))
      return true;
   if (fatal)
      fail();
   return false;
}

static uint64_t
switches(struct cohmap_region *region)
{
   struct cohmap_region_stats st;
   assert_int_equal(cohmap_region_get_stats(region, &st), 0);
   return st.method_switches;
}

static void
test_pairs(void **state)
{
   const struct switch_case *c = *state;
   const size_t size = REGION_PAGES * tu_page_size();
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(c->name));

   tu_segv_sentinel_install();
   struct cohmap_context *ctx = tu_context_create(1, 0);
   assert_non_null(ctx);

   unsigned rounds = slow ? 40 : 3;
   for (size_t i = 0; i < TU_METHODS_COUNT; i++) {
      enum cohmap_method a = tu_methods[i];
      if (!available(ctx, a))
         continue;
      for (size_t j = 0; j < TU_METHODS_COUNT; j++) {
         enum cohmap_method b = tu_methods[j];
         if (a == b || !available(ctx, b))
            continue;
         for (unsigned round = 0; round < rounds; round++) {
            char what[160];
            snprintf(what, sizeof(what), "%s: %s -> %s round %u (TEST_SEED="
                     "%" PRIu64 ")", c->name, cohmap_method_name(a),
                     cohmap_method_name(b), round, tu_seed());

            struct cohmap_region *region = NULL;
            assert_int_equal(cohmap_region_create(ctx, size, a, c->flags,
                                                  &region), 0);
            struct tu_model model;
            assert_true(tu_model_init(&model, cohmap_region_ptr(region),
                                      size));
            struct tu_expect ea = tu_expect_for(a, c->flags, 1, false);
            struct tu_expect eb = tu_expect_for(b, c->flags, 1, false);

            /* Steady state in a. */
            random_writes(&model, &rng);
            assert_true(tu_model_collect(&model, region, &ea, what));

            /* Written before the switch: a must hand these over. */
            random_writes(&model, &rng);
            uint64_t before = switches(region);
            int ret = cohmap_region_set_method(region, b);
            if (ret)
               fprintf(stderr, "%s: set_method: %s (%s)\n", what,
                       strerror(-ret), cohmap_error_message());
            assert_int_equal(ret, 0);
            assert_int_equal(cohmap_region_method(region), b);
            assert_int_equal(switches(region), before + 1);

            /* Written after the switch: b must see these. */
            random_writes(&model, &rng);

            /* Carried ranges are reported whole, so the collect right
             * after a switch is only bounded by the written pages -- or
             * by nothing when full (which collects everything) is on
             * either side. */
            struct tu_expect after = {
               .kind = TU_EXPECT_SUPERSET,
               .within_written_pages = a != COHMAP_METHOD_FULL &&
                                       b != COHMAP_METHOD_FULL,
            };
            if (eb.kind == TU_EXPECT_WHOLE)
               after.kind = TU_EXPECT_WHOLE;
            assert_true(tu_model_collect(&model, region, &after, what));

            /* From now on, b's own strictness. */
            for (int k = 0; k < 2; k++) {
               random_writes(&model, &rng);
               assert_true(tu_model_collect(&model, region, &eb, what));
            }

            /* Switching to the current method changes nothing. */
            assert_int_equal(cohmap_region_set_method(region, b), 0);
            assert_int_equal(cohmap_region_method(region), b);
            random_writes(&model, &rng);
            assert_true(tu_model_collect(&model, region, &eb, what));

            /* And back, with nothing written in between. */
            before = switches(region);
            assert_int_equal(cohmap_region_set_method(region, a), 0);
            assert_int_equal(cohmap_region_method(region), a);
            assert_int_equal(switches(region), before + 1);
            struct tu_expect back = {
               .kind = ea.kind == TU_EXPECT_WHOLE ? TU_EXPECT_WHOLE
                                                  : TU_EXPECT_SUPERSET,
               .within_written_pages = b != COHMAP_METHOD_FULL,
            };
            assert_true(tu_model_collect(&model, region, &back, what));
            random_writes(&model, &rng);
            assert_true(tu_model_collect(&model, region, &ea, what));

            tu_model_fini(&model);
            assert_int_equal(cohmap_region_destroy(region), 0);
         }
      }
   }
   assert_int_equal(cohmap_context_destroy(ctx), 0);
   size_t first;
   assert_int_equal(tu_segv_sentinel_remove(&first), 0);
}

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
test_threaded(void **state)
{
   const struct switch_case *c = *state;
   const size_t size = REGION_PAGES * tu_page_size();

   /* Default fault widening: switches must not lose the pages it
    * unprotected ahead either. */
   struct cohmap_context *ctx = tu_context_create(0, 0);
   assert_non_null(ctx);

   enum cohmap_method methods[TU_METHODS_COUNT];
   size_t nmethods = 0;
   for (size_t i = 0; i < TU_METHODS_COUNT; i++) {
      if (available(ctx, tu_methods[i]))
         methods[nmethods++] = tu_methods[i];
   }

   /* Start in compare, which installs no signal handler, so that the
    * sentinel sits below fault's handler. */
   tu_segv_sentinel_install();
   struct cohmap_region *region = NULL;
   assert_int_equal(cohmap_region_create(ctx, size, COHMAP_METHOD_COMPARE,
                                         c->flags, &region), 0);
   uint8_t *mem = cohmap_region_ptr(region);
   tu_segv_sentinel_watch(mem, size);
   uint8_t *mirror = calloc(1, size);
   assert_non_null(mirror);

   /* Hot slots: the same thread faults at the same address again and
    * again, and both writers fault on the same page at once. */
   size_t first_slot = 0, nslots = size / sizeof(uint64_t);
   if (c->hot_slots) {
      first_slot = 5 * tu_page_size() / sizeof(uint64_t);
      nslots = c->hot_slots;
   }
   struct tu_writers *writers = tu_writers_start(
      mem, first_slot, nslots, 2, tu_seed_for(c->name));
   assert_non_null(writers);

   enum cohmap_method current = COHMAP_METHOD_COMPARE;
   uint64_t expected_switches = 0;
   unsigned cycles = slow ? 40 : 4;
   unsigned checkpoints = 0;
   bool ok = true;
   char what[160];
   double start = tu_now();

   for (unsigned cycle = 0; cycle < cycles && ok; cycle++) {
      for (size_t i = 0; i < nmethods && ok; i++) {
         for (size_t j = 0; j < nmethods && ok; j++) {
            if (i == j)
               continue;
            /* a -> b with the writers running; every other cycle with
             * collects in between, else back to back. */
            enum cohmap_method pair[2] = {methods[i], methods[j]};
            for (int k = 0; k < 2 && ok; k++) {
               if (pair[k] == current)
                  continue;
               snprintf(what, sizeof(what), "%s cycle %u: %s -> %s",
                        c->name, cycle, cohmap_method_name(current),
                        cohmap_method_name(pair[k]));
               int ret = cohmap_region_set_method(region, pair[k]);
               if (ret) {
                  fprintf(stderr, "%s: set_method: %s (%s)\n", what,
                          strerror(-ret), cohmap_error_message());
                  ok = false;
                  break;
               }
               current = pair[k];
               expected_switches++;
               if (cohmap_region_method(region) != current) {
                  fprintf(stderr, "%s: region_method says %s\n", what,
                          cohmap_method_name(cohmap_region_method(region)));
                  ok = false;
                  break;
               }
               unsigned collects = cycle % 2 ? 0 : 3;
               for (unsigned n = 0; n < collects && ok; n++)
                  ok = collect_into(region, mirror, size, what);
            }
            if (!ok)
               break;

            /* Checkpoint: every completed store reported. */
            tu_writers_pause(writers);
            snprintf(what, sizeof(what), "%s cycle %u: checkpoint after "
                     "%s -> %s", c->name, cycle,
                     cohmap_method_name(methods[i]),
                     cohmap_method_name(methods[j]));
            ok = collect_into(region, mirror, size, what) &&
                 tu_mirror_matches(mirror, mem, size, what);
            tu_writers_resume(writers);
            checkpoints++;
         }
      }
   }

   /* Rapid switches into and out of fault with stores landing on
    * protected pages all the time: a store that faulted just before the
    * protection was dropped must simply be retried, and a store another
    * thread made to a page whose fault handler had not yet recorded it
    * when the switch collected must not be lost either. */
   static const enum cohmap_method away[] = {
      COHMAP_METHOD_COMPARE, COHMAP_METHOD_SCAN,
      COHMAP_METHOD_COMPARE, COHMAP_METHOD_FULL,
   };
   unsigned rapid = slow ? 8000 : 400;
   for (unsigned i = 0; i < rapid && ok; i++) {
      enum cohmap_method to = COHMAP_METHOD_FAULT;
      if (current == COHMAP_METHOD_FAULT) {
         to = away[(i / 2) % TU_ARRAY_SIZE(away)];
         if (cohmap_context_method_status(ctx, to, NULL) != 0)
            to = COHMAP_METHOD_COMPARE;
      }
      if (to == current)
         continue;
      int ret = cohmap_region_set_method(region, to);
      if (ret) {
         fprintf(stderr, "%s: rapid switch %u to %s: %s\n", c->name, i,
                 cohmap_method_name(to), strerror(-ret));
         ok = false;
         break;
      }
      /* Check right after each switch away from fault: a lost store is
       * only visible until some writer stores to its slot again. */
      if (to != COHMAP_METHOD_FAULT) {
         snprintf(what, sizeof(what), "%s: rapid switch %u, %s -> %s",
                  c->name, i, cohmap_method_name(current),
                  cohmap_method_name(to));
         tu_writers_pause(writers);
         ok = collect_into(region, mirror, size, what) &&
              tu_mirror_matches(mirror, mem, size, what);
         tu_writers_resume(writers);
         checkpoints++;
      }
      current = to;
      expected_switches++;
   }

   uint64_t stores = tu_writers_stop(writers);
   if (ok) {
      snprintf(what, sizeof(what), "%s: final collect", c->name);
      ok = collect_into(region, mirror, size, what) &&
           tu_mirror_matches(mirror, mem, size, what);
   }

   struct cohmap_region_stats st;
   assert_int_equal(cohmap_region_get_stats(region, &st), 0);
   printf("# %s: %" PRIu64 " switches, %u checkpoints, %" PRIu64 " stores, "
          "%.2f s\n", c->name, st.method_switches, checkpoints, stores,
          tu_now() - start);

   free(mirror);
   assert_int_equal(cohmap_region_destroy(region), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
   size_t first;
   uint64_t passed_on = tu_segv_sentinel_remove(&first);
   assert_true(ok);
   assert_int_equal(st.method_switches, expected_switches);
   /* A store racing a switch away from fault must be retried, not handed
    * to the application's handler (or kill the process). */
   assert_int_equal(passed_on, 0);
}

int
main(int argc, char **argv)
{
   slow = argc > 1 && strcmp(argv[1], "--slow") == 0;

   static struct switch_case cases[] = {
      {0, 0, "plain"},
      {COHMAP_REGION_BYTE_EXACT, 0, "byte-exact"},
      {0, 2, "plain, hot slots"},
      {COHMAP_REGION_BYTE_EXACT, 2, "byte-exact, hot slots"},
   };
   static char names[2 * TU_ARRAY_SIZE(cases)][96];
   struct CMUnitTest tests[2 * TU_ARRAY_SIZE(cases)];
   size_t n = 0;

   tu_seed();
   /* TEST_FILTER=pattern (cmocka wildcards) runs the matching tests only. */
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));
   for (size_t i = 0; i < TU_ARRAY_SIZE(cases); i++) {
      if (!cases[i].hot_slots) {
         snprintf(names[n], sizeof(names[n]), "pairs %s", cases[i].name);
         tests[n] = (struct CMUnitTest){names[n], test_pairs, NULL, NULL,
                                        &cases[i]};
         n++;
      }
      snprintf(names[n], sizeof(names[n]), "threaded %s", cases[i].name);
      tests[n] = (struct CMUnitTest){names[n], test_threaded, NULL, NULL,
                                     &cases[i]};
      n++;
   }
   return _cmocka_run_group_tests(slow ? "switch-slow" : "switch", tests, n,
                                  NULL, NULL);
}
