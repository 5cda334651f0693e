/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The adaptive policy (src/track/policy.c): which method it picks where,
 * that it does not flap, that its switches lose nothing while other
 * threads write, and how its knobs are read.
 *
 * Most tests install a scripted cost model, so that what the policy should
 * choose does not depend on this machine: round numbers in the proportions
 * of docs/benchmarks.md.  The program runs with COHMAP_DEBUG=nocal (set in
 * main()) so that contexts made for scripted models do not calibrate; the
 * calibration test clears it.
 *
 * fault: cohmap installs its SIGSEGV handler once per process, over
 * whatever is current, and re-installs it later only over that same
 * disposition (cmocka saves and restores SIGSEGV around each test).  Every
 * test that may attach fault, or create a context that calibrates fault,
 * therefore installs the test sentinel first (see test-util.h).
 */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test-util.h"
#include "track/track_priv.h"

#define ALL_BUT_FAULT                                                        \
   (COHMAP_METHOD_BIT(COHMAP_METHOD_SCAN) |                                  \
    COHMAP_METHOD_BIT(COHMAP_METHOD_COMPARE) |                               \
    COHMAP_METHOD_BIT(COHMAP_METHOD_FULL))
#define ALL_METHODS (ALL_BUT_FAULT | COHMAP_METHOD_BIT(COHMAP_METHOD_FAULT))

/* This project's VMs in round numbers, with memcmp a little cheaper than
 * memcpy (a device link costs more than a local copy) so that compare,
 * not full, is the idle choice for small regions.  On a 1 MiB region
 * (256 pages): idle scan 2.3 µs, compare 21 µs, full 26 µs; scan and full
 * cross at about two dirty pages. */
static const struct cohmap_cost_model model_vm = {
   .fault_dirty_ns = 20000,
   .scan_ioctl_ns = 2000,
   .scan_page_ns = 1,
   .scan_dirty_ns = 10000,
   .memcmp_byte_ns = 0.02,
   .memcpy_byte_ns = 0.025,
   .populate_page_ns = 1000,
   .large_region_bytes = 8 << 20,
   .large_factor = 2.5,
};

/* For hysteresis: on a 1 MiB region with whole dirty pages, scan
 * (2256 + 1204.8 d ns) and compare (10486 + 409.6 d ns) cross at
 * d = 10.4; full (52 µs) is never best.  The 25 % margin puts the switch
 * points at d > 15.7 (scan -> compare) and d < 7.0 (back). */
static const struct cohmap_cost_model model_cross = {
   .fault_dirty_ns = 20000,
   .scan_ioctl_ns = 2000,
   .scan_page_ns = 1,
   .scan_dirty_ns = 1000,
   .memcmp_byte_ns = 0.01,
   .memcpy_byte_ns = 0.05,
   .populate_page_ns = 1000,
   .large_region_bytes = (size_t)1 << 40,
   .large_factor = 1,
};

static bool
near_check(double got, double want, double tolerance, const char *expr)
{
   double diff = got - want;
   if (diff < 0)
      diff = -diff;
   if (diff <= tolerance)
      return true;
   fprintf(stderr, "%s: got %.9g, want %.9g\n", expr, got, want);
   return false;
}

/* Doubles (cmocka's assert_float_equal rounds to float). */
#define assert_near(got, want, tolerance)                                    \
   assert_true(near_check((got), (want), (tolerance), #got))

static bool
scan_available(struct cohmap_context *ctx)
{
   return cohmap_context_method_status(ctx, COHMAP_METHOD_SCAN, NULL) == 0;
}

/* A context that reads the environment (COHMAP_DEBUG=nocal from main()),
 * with model installed if not NULL. */
static struct cohmap_context *
policy_context(uint32_t flags, const struct cohmap_cost_model *model)
{
   struct cohmap_context_options opts;
   struct cohmap_context *ctx = NULL;

   cohmap_context_options_init(&opts);
   opts.flags = flags;
   int ret = cohmap_context_create(&opts, &ctx);
   if (ret) {
      fprintf(stderr, "cohmap_context_create: %s (%s)\n", strerror(-ret),
              cohmap_error_message());
      return NULL;
   }
   if (model && cohmap_context_set_cost_model(ctx, model) != 0) {
      cohmap_context_destroy(ctx);
      return NULL;
   }
   return ctx;
}

static uint64_t
switches(struct cohmap_region *r)
{
   struct cohmap_region_stats st;
   assert_int_equal(cohmap_region_get_stats(r, &st), 0);
   return st.method_switches;
}

static struct cohmap_policy_estimate
estimate(struct cohmap_region *r)
{
   struct cohmap_policy_estimate e;
   assert_int_equal(cohmap_region_policy_estimate(r, &e), 0);
   return e;
}

/* Collects r into mirror and checks mirror == memory (single-threaded
 * callers, or writers paused). */
static bool
collect_check(struct cohmap_region *r, uint8_t *mirror, bool check,
              const char *what)
{
   struct cohmap_dirty d;
   int ret = cohmap_region_collect(r, 0, &d);
   if (ret) {
      fprintf(stderr, "%s: collect: %s (%s)\n", what, strerror(-ret),
              cohmap_error_message());
      return false;
   }
   if (!tu_check_dirty_sorted_coalesced(&d, cohmap_region_size(r), what))
      return false;
   tu_apply_dirty(mirror, &d);
   return !check || tu_mirror_matches(mirror, cohmap_region_ptr(r),
                                      cohmap_region_size(r), what);
}

/* Rewrites `pages` whole pages (spread over the region) with new values. */
static void
dirty_pages(struct cohmap_region *r, size_t pages, uint8_t round)
{
   uint8_t *p = cohmap_region_ptr(r);
   size_t ps = tu_page_size(), n = cohmap_region_size(r) / ps;
   size_t stride = pages ? n / pages : 1;
   for (size_t i = 0; i < pages; i++)
      memset(p + i * stride * ps, round + (uint8_t)i, ps);
}

/* --- the model, without regions ---------------------------------------- */

static struct cohmap_policy_config
config_with(const struct cohmap_cost_model *model)
{
   struct cohmap_policy_config cfg;
   cohmap_policy_config_init(&cfg);
   cfg.enabled = true;
   cfg.model = *model;
   return cfg;
}

static enum cohmap_method
best(const struct cohmap_policy_config *cfg, size_t size, bool snapshot,
     uint32_t allowed, double fraction, double bytes_per_page)
{
   struct cohmap_policy_input in = {
      .size = size,
      .page_size = tu_page_size(),
      .snapshot = snapshot,
      .current = COHMAP_METHOD_AUTO,
      .allowed = allowed,
   };
   double d = fraction * (double)(size / tu_page_size());
   return cohmap_policy_best(cfg, &in, d, d * bytes_per_page);
}

static void
test_choice(void **state)
{
   const size_t page = tu_page_size();
   struct cohmap_policy_config cfg = config_with(&model_vm);
   const size_t large = 64 * TU_MIB, tiny = 4 * page, mib = TU_MIB;
   const double whole = (double)page;

   /* Idle: fault costs nothing, where allowed; scan's fixed cost is below
    * a pass over a large region, above one over a few pages. */
   assert_int_equal(best(&cfg, large, false, ALL_BUT_FAULT, 0, whole),
                    COHMAP_METHOD_SCAN);
   assert_int_equal(best(&cfg, large, false, ALL_METHODS, 0, whole),
                    COHMAP_METHOD_FAULT);
   assert_int_equal(best(&cfg, tiny, false, ALL_BUT_FAULT, 0, whole),
                    COHMAP_METHOD_COMPARE);
   assert_int_equal(best(&cfg, mib, false, ALL_BUT_FAULT, 0, whole),
                    COHMAP_METHOD_SCAN);
   /* Sparse: scan. */
   assert_int_equal(best(&cfg, large, false, ALL_BUT_FAULT, 0.0005, whole),
                    COHMAP_METHOD_SCAN);
   assert_int_equal(best(&cfg, large, false, ALL_METHODS, 0.0005, whole),
                    COHMAP_METHOD_SCAN);
   /* Dense: a pass over the region. */
   assert_int_equal(best(&cfg, mib, false, ALL_BUT_FAULT, 1.0, whole),
                    COHMAP_METHOD_FULL);
   assert_int_equal(best(&cfg, large, false, ALL_METHODS, 1.0, whole),
                    COHMAP_METHOD_FULL);
   assert_int_equal(best(&cfg, large, false, ALL_BUT_FAULT, 0.5, whole),
                    COHMAP_METHOD_FULL);
   /* Dense in pages but a few bytes each: compare uploads little. */
   assert_int_equal(best(&cfg, mib, false, ALL_BUT_FAULT, 1.0, 8),
                    COHMAP_METHOD_COMPARE);
   /* Without scan: what there is. */
   uint32_t no_scan = ALL_BUT_FAULT & ~COHMAP_METHOD_BIT(COHMAP_METHOD_SCAN);
   assert_int_equal(best(&cfg, large, false, no_scan, 0, whole),
                    COHMAP_METHOD_COMPARE);
   assert_int_equal(best(&cfg, large, false,
                         COHMAP_METHOD_BIT(COHMAP_METHOD_FULL), 0, whole),
                    COHMAP_METHOD_FULL);

   /* The formulas of the DOC block, on one case: 1 MiB, 10 dirty pages,
    * 100 bytes each, no snapshot, in cache. */
   double cost[COHMAP_METHOD_COUNT];
   cohmap_policy_predict(&model_vm, mib, page, false, 10, 1000, cost);
   double up_pages = 10.0 * page * 0.025;
   assert_true(isinf(cost[COHMAP_METHOD_AUTO]));
   assert_near(cost[COHMAP_METHOD_FAULT], 10 * 20000 + up_pages, 1e-6);
   assert_near(cost[COHMAP_METHOD_SCAN],
               2000 + 256 * 1.0 + 10 * 10000 + up_pages, 1e-6);
   assert_near(cost[COHMAP_METHOD_COMPARE], mib * 0.02 + 3 * 1000 * 0.025,
               1e-6);
   assert_near(cost[COHMAP_METHOD_FULL], mib * 0.025, 1e-6);
   /* A large region pays its bytes at large_factor. */
   cohmap_policy_predict(&model_vm, large, page, false, 0, 0, cost);
   assert_near(cost[COHMAP_METHOD_FULL], large * 0.025 * 2.5, 1e-3);

   /* fault is never chosen without permission; with a snapshot full is
    * compare (both refine the whole region). */
   static const size_t sizes[] = {4096, 64 << 10, 1 << 20, 64 << 20,
                                  (size_t)1 << 30};
   static const double fractions[] = {0, 1e-5, 1e-3, 0.01, 0.1, 0.5, 1};
   static const double per_page[] = {1, 8, 4096};
   for (size_t s = 0; s < TU_ARRAY_SIZE(sizes); s++) {
      for (size_t f = 0; f < TU_ARRAY_SIZE(fractions); f++) {
         for (size_t b = 0; b < TU_ARRAY_SIZE(per_page); b++) {
            for (int snap = 0; snap < 2; snap++) {
               enum cohmap_method m =
                  best(&cfg, sizes[s], snap, ALL_BUT_FAULT, fractions[f],
                       per_page[b]);
               assert_int_not_equal(m, COHMAP_METHOD_FAULT);
               assert_int_not_equal(m, COHMAP_METHOD_AUTO);
               double d = fractions[f] * (double)(sizes[s] / page);
               cohmap_policy_predict(&model_vm, sizes[s], page, snap, d,
                                     d * per_page[b], cost);
               if (snap)
                  assert_near(cost[COHMAP_METHOD_FULL],
                              cost[COHMAP_METHOD_COMPARE], 1e-6);
            }
         }
      }
   }

   /* The built-in model gives the same idle choices. */
   cohmap_cost_model_default(&cfg.model);
   assert_int_equal(best(&cfg, large, false, ALL_BUT_FAULT, 0, whole),
                    COHMAP_METHOD_SCAN);
   assert_int_equal(best(&cfg, large, false, ALL_METHODS, 0, whole),
                    COHMAP_METHOD_FAULT);
   assert_int_equal(best(&cfg, tiny, false, ALL_BUT_FAULT, 0, whole),
                    COHMAP_METHOD_COMPARE);
   assert_int_equal(best(&cfg, large, false, ALL_BUT_FAULT, 1, whole),
                    COHMAP_METHOD_FULL);
}

/*
 * A region as policy.c sees it, driven by synthetic observations the way
 * region.c drives it: at the end of each collect, observe, then decide and
 * switch for the next one.
 */
struct sim {
   struct cohmap_policy_config cfg;
   struct cohmap_policy_state ps;
   struct cohmap_policy_input in;
   unsigned switches;
};

static void
sim_init(struct sim *s, const struct cohmap_cost_model *model, size_t size,
         uint32_t allowed)
{
   s->cfg = config_with(model);
   cohmap_policy_state_init(&s->ps,
                            allowed & COHMAP_METHOD_BIT(COHMAP_METHOD_FAULT));
   s->ps.adaptive = true;
   s->in = (struct cohmap_policy_input){
      .size = size,
      .page_size = tu_page_size(),
      .current = COHMAP_METHOD_AUTO,
      .allowed = allowed,
   };
   s->in.current = cohmap_policy_initial(&s->cfg, &s->in);
   s->switches = 0;
}

/* One collect that finds `pages` whole pages dirty. */
static void
sim_collect(struct sim *s, double pages)
{
   bool blind = s->in.current == COHMAP_METHOD_FULL && !s->in.snapshot;
   bool exact = s->in.current == COHMAP_METHOD_COMPARE || s->in.snapshot;
   bool own = s->in.current == COHMAP_METHOD_SCAN ||
              s->in.current == COHMAP_METHOD_FAULT;
   cohmap_policy_observe(&s->ps, false, blind, exact, own, pages,
                         pages * (double)tu_page_size());

   struct cohmap_policy_decision dec;
   cohmap_policy_decide(&s->ps, &s->cfg, &s->in, &dec);
   if (dec.method != s->in.current) {
      s->in.current = dec.method;
      s->switches++;
      cohmap_policy_switched(&s->ps, blind);
      if (dec.probe)
         cohmap_policy_probe_started(&s->ps);
   }
}

static void
test_hysteresis_model(void **state)
{
   struct sim s;

   /* Dirtiness alternating around the scan/compare crossover (4 and 24
    * pages: the estimate swings between about 6.9 and 15.4 around 13.9)
    * keeps the region where it is... */
   sim_init(&s, &model_cross, TU_MIB, ALL_BUT_FAULT);
   assert_int_equal(s.in.current, COHMAP_METHOD_SCAN);
   for (int i = 0; i < 200; i++)
      sim_collect(&s, i % 2 ? 24 : 4);
   printf("# alternating 4/24 pages, defaults: %u switches\n", s.switches);
   assert_true(s.switches <= 1);

   /* ... where a policy without margin, confirmation or dwell flaps. */
   sim_init(&s, &model_cross, TU_MIB, ALL_BUT_FAULT);
   s.cfg.margin_pct = 0;
   s.cfg.confirm = 1;
   s.cfg.dwell = 0;
   s.cfg.payback = 0;
   s.cfg.trap_backoff = 0;
   for (int i = 0; i < 200; i++)
      sim_collect(&s, i % 2 ? 24 : 4);
   printf("# alternating 4/24 pages, no hysteresis: %u switches\n",
          s.switches);
   assert_true(s.switches >= 40);

   /* A real change still moves it within a few collects (2 -> 40 pages)
    * when the switch is cheap... */
   struct cohmap_cost_model cheap_arm = model_cross;
   cheap_arm.populate_page_ns = 0;
   sim_init(&s, &cheap_arm, TU_MIB, ALL_BUT_FAULT);
   for (int i = 0; i < 10; i++)
      sim_collect(&s, 2);
   assert_int_equal(s.in.current, COHMAP_METHOD_SCAN);
   int moved = -1;
   for (int i = 0; i < 20 && moved < 0; i++) {
      sim_collect(&s, 40);
      if (s.in.current != COHMAP_METHOD_SCAN)
         moved = i + 1;
   }
   printf("# step 2 -> 40 pages, cheap switch: moved after %d collects\n",
          moved);
   assert_true(moved >= 2 && moved <= 4);
   assert_int_equal(s.in.current, COHMAP_METHOD_COMPARE);

   /* ... and once staying has cost what switching costs when it is not
    * (a snapshot to populate and fill: 1076 µs against a 15.4 µs saving
    * per collect, of which the payback rule counts 16 collects ahead: 54
    * collects of regret, and the estimate's lag). */
   struct cohmap_cost_model costly_arm = model_cross;
   costly_arm.populate_page_ns *= 4;
   sim_init(&s, &costly_arm, TU_MIB, ALL_BUT_FAULT);
   for (int i = 0; i < 10; i++)
      sim_collect(&s, 2);
   moved = -1;
   for (int i = 0; i < 80 && moved < 0; i++) {
      sim_collect(&s, 40);
      if (s.in.current != COHMAP_METHOD_SCAN)
         moved = i + 1;
   }
   printf("# step 2 -> 40 pages, costly switch: moved after %d collects\n",
          moved);
   assert_true(moved >= 50 && moved <= 64);
   assert_int_equal(s.in.current, COHMAP_METHOD_COMPARE);

   /* A region on scan that turns dense leaves at the first decision, at
    * the end of the collect that saw it: one more dense period on scan
    * costs a hundred passes over the region. */
   sim_init(&s, &model_vm, TU_MIB, ALL_BUT_FAULT);
   for (int i = 0; i < 10; i++)
      sim_collect(&s, 0);
   assert_int_equal(s.in.current, COHMAP_METHOD_SCAN);
   sim_collect(&s, 256);
   assert_int_equal(s.in.current, COHMAP_METHOD_FULL);

   /* Dense then idle on full, which observes nothing: a probe within the
    * probe interval brings it back to scan, and a region that stays
    * dense probes less and less often. */
   sim_init(&s, &model_vm, TU_MIB, ALL_BUT_FAULT);
   for (int i = 0; i < 6; i++)
      sim_collect(&s, 256);
   assert_int_equal(s.in.current, COHMAP_METHOD_FULL);
   unsigned before = s.switches;
   for (int i = 0; i < 300; i++)
      sim_collect(&s, 256);
   unsigned dense_switches = s.switches - before;
   printf("# 300 dense collects on full: %u switches (probes)\n",
          dense_switches);
   assert_true(dense_switches >= 4 && dense_switches <= 20);
   assert_int_equal(s.in.current, COHMAP_METHOD_FULL);
   int back = -1;
   for (int i = 0; i < 100 && back < 0; i++) {
      sim_collect(&s, 0);
      if (s.in.current == COHMAP_METHOD_SCAN)
         back = i + 1;
   }
   printf("# dense -> idle: back on scan after %d collects\n", back);
   assert_true(back > 0 && back <= 64 + 3);
}

/* --- regions ----------------------------------------------------------- */

static void
test_initial_choice(void **state)
{
   const size_t page = tu_page_size();

   tu_segv_sentinel_install();
   struct cohmap_context *ctx = policy_context(0, &model_vm);
   assert_non_null(ctx);
   assert_true(ctx->policy.enabled);
   enum cohmap_method idle_large =
      scan_available(ctx) ? COHMAP_METHOD_SCAN : COHMAP_METHOD_COMPARE;

   struct cohmap_region *r;
   assert_int_equal(
      cohmap_region_create(ctx, 64 * TU_MIB, COHMAP_METHOD_AUTO, 0, &r), 0);
   assert_int_equal(cohmap_region_method(r), idle_large);
   assert_true(estimate(r).adaptive);
   assert_int_equal(cohmap_region_destroy(r), 0);

   assert_int_equal(
      cohmap_region_create(ctx, 4 * page, COHMAP_METHOD_AUTO, 0, &r), 0);
   assert_int_equal(cohmap_region_method(r), COHMAP_METHOD_COMPARE);
   assert_int_equal(cohmap_region_destroy(r), 0);

   /* The promise lets the policy use fault: idle memory costs nothing. */
   assert_int_equal(cohmap_region_create(ctx, 64 * TU_MIB, COHMAP_METHOD_AUTO,
                                         COHMAP_REGION_CPU_STORES_ONLY, &r),
                    0);
   tu_segv_sentinel_watch(cohmap_region_ptr(r), cohmap_region_size(r));
   assert_int_equal(cohmap_region_method(r), COHMAP_METHOD_FAULT);
   ((uint8_t *)cohmap_region_ptr(r))[12345] = 1;
   struct cohmap_dirty d;
   assert_int_equal(cohmap_region_collect(r, 0, &d), 0);
   assert_int_equal(d.count, 1);
   assert_int_equal(cohmap_region_destroy(r), 0);

   /* The flag means nothing to a region with a fixed method. */
   assert_int_equal(cohmap_region_create(ctx, 64 * TU_MIB,
                                         COHMAP_METHOD_COMPARE,
                                         COHMAP_REGION_CPU_STORES_ONLY, &r),
                    0);
   assert_int_equal(cohmap_region_method(r), COHMAP_METHOD_COMPARE);
   assert_false(estimate(r).adaptive);
   assert_int_equal(cohmap_region_destroy(r), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);

   /* auto-fault: every AUTO region may use fault. */
   ctx = policy_context(COHMAP_CONTEXT_AUTO_FAULT, &model_vm);
   assert_non_null(ctx);
   assert_true(ctx->policy.allow_fault);
   assert_int_equal(
      cohmap_region_create(ctx, 64 * TU_MIB, COHMAP_METHOD_AUTO, 0, &r), 0);
   assert_int_equal(cohmap_region_method(r), COHMAP_METHOD_FAULT);
   assert_int_equal(cohmap_region_destroy(r), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);

   /* A fixed default turns the policy off: AUTO regions get it. */
   struct cohmap_context_options opts;
   cohmap_context_options_init(&opts);
   opts.default_method = COHMAP_METHOD_FULL;
   assert_int_equal(cohmap_context_create(&opts, &ctx), 0);
   assert_false(ctx->policy.enabled);
   assert_int_equal(cohmap_region_create(ctx, 64 * TU_MIB, COHMAP_METHOD_AUTO,
                                         COHMAP_REGION_CPU_STORES_ONLY, &r),
                    0);
   assert_int_equal(cohmap_region_method(r), COHMAP_METHOD_FULL);
   assert_false(estimate(r).adaptive);
   assert_int_equal(cohmap_region_destroy(r), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);

   size_t first;
   assert_int_equal(tu_segv_sentinel_remove(&first), 0);
}

/* Idle, dense, idle, sparse on a 1 MiB region, single-threaded, with a
 * mirror: the policy follows and every switch hands everything over. */
static void
test_phases(void **state)
{
   struct cohmap_context *ctx = policy_context(0, &model_vm);
   assert_non_null(ctx);
   enum cohmap_method idle =
      scan_available(ctx) ? COHMAP_METHOD_SCAN : COHMAP_METHOD_COMPARE;
   struct cohmap_region *r;
   assert_int_equal(
      cohmap_region_create(ctx, TU_MIB, COHMAP_METHOD_AUTO, 0, &r), 0);
   uint8_t *mirror = calloc(1, TU_MIB);
   assert_non_null(mirror);
   char what[96];
   uint8_t round = 0;

   assert_int_equal(cohmap_region_method(r), idle);
   for (int i = 0; i < 5; i++)
      assert_true(collect_check(r, mirror, true, "idle"));
   assert_int_equal(cohmap_region_method(r), idle);
   assert_int_equal(switches(r), 0);

   /* Dense: every page rewritten.  The collect that sees it moves the
    * region to full before it returns (scan would cost 50 times as much:
    * no confirmation), so the next period's stores are already free. */
   int on_full = -1;
   for (int i = 0; i < 8; i++) {
      dirty_pages(r, 256, ++round);
      snprintf(what, sizeof(what), "dense %d", i);
      assert_true(collect_check(r, mirror, true, what));
      if (on_full < 0 && cohmap_region_method(r) == COHMAP_METHOD_FULL)
         on_full = i;
   }
   printf("# dense: on full from collect %d\n", on_full);
   assert_int_equal(on_full, 0);
   assert_int_equal(cohmap_region_method(r), COHMAP_METHOD_FULL);
   assert_int_equal(switches(r), 1);

   /* Idle again: full's page samples see it, and the region goes
    * straight back (no probe through compare: two switches in all). */
   int back = -1;
   for (int i = 0; i < 20; i++) {
      snprintf(what, sizeof(what), "idle again %d", i);
      assert_true(collect_check(r, mirror, true, what));
      if (back < 0 && cohmap_region_method(r) == idle)
         back = i;
   }
   printf("# idle again: back on %s from collect %d\n",
          cohmap_method_name(idle), back);
   assert_true(back >= 0 && back <= 6);
   assert_int_equal(cohmap_region_method(r), idle);
   uint64_t after_phases = switches(r);
   assert_int_equal(after_phases, 2);

   /* Sparse: one page per collect stays on scan (or compare). */
   for (int i = 0; i < 12; i++) {
      dirty_pages(r, 1, ++round);
      snprintf(what, sizeof(what), "sparse %d", i);
      assert_true(collect_check(r, mirror, true, what));
   }
   assert_int_equal(cohmap_region_method(r), idle);
   assert_int_equal(switches(r), after_phases);

   free(mirror);
   assert_int_equal(cohmap_region_destroy(r), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
}

/* The same alternating pattern as test_hysteresis_model, on a real
 * region: the observations now come from scan and compare themselves. */
static void
test_hysteresis_region(void **state)
{
   for (int naive = 0; naive < 2; naive++) {
      struct cohmap_context *ctx = policy_context(0, &model_cross);
      assert_non_null(ctx);
      if (!scan_available(ctx)) {
         assert_int_equal(cohmap_context_destroy(ctx), 0);
         skip();
      }
      if (naive) {
         ctx->policy.margin_pct = 0;
         ctx->policy.confirm = 1;
         ctx->policy.dwell = 0;
         ctx->policy.payback = 0;
         ctx->policy.trap_backoff = 0;
      }
      struct cohmap_region *r;
      assert_int_equal(
         cohmap_region_create(ctx, TU_MIB, COHMAP_METHOD_AUTO, 0, &r), 0);
      assert_int_equal(cohmap_region_method(r), COHMAP_METHOD_SCAN);
      uint8_t *mirror = calloc(1, TU_MIB);
      assert_non_null(mirror);
      char what[64];
      for (int i = 0; i < 80; i++) {
         dirty_pages(r, i % 2 ? 24 : 4, (uint8_t)i);
         snprintf(what, sizeof(what), "%s collect %d",
                  naive ? "naive" : "defaults", i);
         assert_true(collect_check(r, mirror, true, what));
      }
      uint64_t n = switches(r);
      printf("# real region, alternating 4/24 pages, %s: %" PRIu64
             " switches\n",
             naive ? "no hysteresis" : "defaults", n);
      if (naive)
         assert_true(n >= 10);
      else
         assert_true(n <= 1);
      free(mirror);
      assert_int_equal(cohmap_region_destroy(r), 0);
      assert_int_equal(cohmap_context_destroy(ctx), 0);
   }
}

static void
test_estimate(void **state)
{
   const size_t page = tu_page_size();
   struct cohmap_context *ctx = policy_context(0, &model_vm);
   assert_non_null(ctx);
   struct cohmap_region *r;

   /* Whole pages, page-granular or not: 8 pages per collect. */
   assert_int_equal(
      cohmap_region_create(ctx, TU_MIB, COHMAP_METHOD_AUTO, 0, &r), 0);
   uint8_t *mirror = calloc(1, TU_MIB);
   assert_non_null(mirror);
   for (int i = 0; i < 3; i++) {
      dirty_pages(r, 8, (uint8_t)(i + 1));
      assert_true(collect_check(r, mirror, true, "8 pages"));
   }
   struct cohmap_policy_estimate e = estimate(r);
   printf("# 8 pages per collect: estimate %.2f pages on %s\n", e.dirty_pages,
          cohmap_method_name(e.method));
   assert_true(e.adaptive);
   assert_near(e.dirty_pages, 8, 0.01);
   assert_false(isinf(e.cost[COHMAP_METHOD_SCAN]) && scan_available(ctx));
   assert_true(isinf(e.cost[COHMAP_METHOD_FAULT]));
   assert_int_equal(cohmap_region_destroy(r), 0);

   /* Exact bytes: 16 bytes in each of 8 pages of a byte-exact region. */
   assert_int_equal(cohmap_region_create(ctx, TU_MIB, COHMAP_METHOD_AUTO,
                                         COHMAP_REGION_BYTE_EXACT, &r),
                    0);
   memset(mirror, 0, TU_MIB);
   uint8_t *p = cohmap_region_ptr(r);
   for (int i = 0; i < 4; i++) {
      for (size_t k = 0; k < 8; k++)
         memset(p + k * 32 * page + 100, i + 1, 16);
      assert_true(collect_check(r, mirror, true, "16 bytes x 8 pages"));
   }
   e = estimate(r);
   printf("# 16 bytes in 8 pages: %.2f pages, %.1f bytes per page on %s\n",
          e.dirty_pages, e.bytes_per_page, cohmap_method_name(e.method));
   assert_near(e.dirty_pages, 8, 0.01);
   assert_near(e.bytes_per_page, 16, 0.01);
   free(mirror);
   assert_int_equal(cohmap_region_destroy(r), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
}

static void
test_set_method(void **state)
{
   tu_segv_sentinel_install();
   struct cohmap_context *ctx = policy_context(0, &model_vm);
   assert_non_null(ctx);
   struct cohmap_region *r;
   assert_int_equal(
      cohmap_region_create(ctx, TU_MIB, COHMAP_METHOD_AUTO, 0, &r), 0);
   tu_segv_sentinel_watch(cohmap_region_ptr(r), TU_MIB);
   enum cohmap_method idle = cohmap_region_method(r);
   uint8_t *mirror = calloc(1, TU_MIB);
   assert_non_null(mirror);

   /* A fixed method: the policy leaves the region alone, however wrong
    * the choice (full on an idle region). */
   assert_int_equal(cohmap_region_set_method(r, COHMAP_METHOD_FULL), 0);
   assert_false(estimate(r).adaptive);
   for (int i = 0; i < 30; i++)
      assert_true(collect_check(r, mirror, true, "pinned full"));
   assert_int_equal(cohmap_region_method(r), COHMAP_METHOD_FULL);

   /* AUTO: back under the policy, which probes out of full. */
   assert_int_equal(cohmap_region_set_method(r, COHMAP_METHOD_AUTO), 0);
   assert_true(estimate(r).adaptive);
   for (int i = 0; i < 14; i++)
      assert_true(collect_check(r, mirror, true, "auto again"));
   assert_int_equal(cohmap_region_method(r), idle);

   /* Pinned to fault, then AUTO without the CPU-stores promise: the
    * policy may not keep fault and leaves it at once. */
   assert_int_equal(cohmap_region_set_method(r, COHMAP_METHOD_FAULT), 0);
   ((uint8_t *)cohmap_region_ptr(r))[5000] = 9;
   assert_int_equal(cohmap_region_set_method(r, COHMAP_METHOD_AUTO), 0);
   assert_int_not_equal(cohmap_region_method(r), COHMAP_METHOD_FAULT);
   assert_true(collect_check(r, mirror, true, "left fault"));
   for (int i = 0; i < 20; i++) {
      dirty_pages(r, 1, (uint8_t)i);
      assert_true(collect_check(r, mirror, true, "after fault"));
      assert_int_not_equal(cohmap_region_method(r), COHMAP_METHOD_FAULT);
   }

   free(mirror);
   assert_int_equal(cohmap_region_destroy(r), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
   size_t first;
   assert_int_equal(tu_segv_sentinel_remove(&first), 0);
}

/* --- switches under concurrent writers --------------------------------- */

struct concurrent_case {
   uint32_t flags;
   const char *name;
};

#define CONC_PAGES  256
#define CONC_CYCLES 24

/*
 * Two groups of writer threads store sequence numbers: `spread` over the
 * first half of the region (dense: the policy wants full), `hot` into two
 * slots of one page in the second half (sparse: scan).  Each cycle runs
 * dense (both groups), sparse (hot only) and idle (none) phases, so that
 * the policy switches scan -> full, probes full -> compare, and goes back
 * compare -> scan (and to fault when idle, where allowed), while stores
 * land.  Without hysteresis every decision that can switch does.  At the
 * end of each phase both groups pause and mirror == memory must hold.
 */
static void
test_concurrent(void **state)
{
   const struct concurrent_case *c = *state;
   const size_t page = tu_page_size(), size = CONC_PAGES * page;
   const size_t slots_per_page = page / sizeof(uint64_t);

   tu_segv_sentinel_install();
   struct cohmap_context *ctx = policy_context(0, &model_vm);
   assert_non_null(ctx);
   ctx->policy.margin_pct = 0;
   ctx->policy.confirm = 1;
   ctx->policy.dwell = 0;
   ctx->policy.payback = 0;
   ctx->policy.trap_backoff = 0;

   struct cohmap_region *r;
   assert_int_equal(
      cohmap_region_create(ctx, size, COHMAP_METHOD_AUTO, c->flags, &r), 0);
   uint8_t *mem = cohmap_region_ptr(r);
   tu_segv_sentinel_watch(mem, size);
   uint8_t *mirror = calloc(1, size);
   assert_non_null(mirror);

   struct tu_writers *spread = tu_writers_start(
      mem, 0, (CONC_PAGES / 2) * slots_per_page, 2, tu_seed_for(c->name));
   assert_non_null(spread);
   tu_writers_pause(spread);
   struct tu_writers *hot =
      tu_writers_start(mem, (CONC_PAGES / 2 + 5) * slots_per_page, 2, 1,
                       tu_seed_for(c->name) + 100);
   assert_non_null(hot);
   tu_writers_pause(hot);

   uint32_t visited = COHMAP_METHOD_BIT(cohmap_region_method(r));
   unsigned checkpoints = 0;
   bool ok = true;
   char what[128];
   double start = tu_now();

   for (unsigned cycle = 0; cycle < CONC_CYCLES && ok; cycle++) {
      static const struct {
         const char *name;
         bool spread, hot;
         unsigned collects;
      } phases[] = {
         {"dense", true, true, 3},
         {"sparse", false, true, 14},
         {"idle", false, false, 5},
      };
      for (size_t ph = 0; ph < TU_ARRAY_SIZE(phases) && ok; ph++) {
         if (phases[ph].spread)
            tu_writers_resume(spread);
         if (phases[ph].hot)
            tu_writers_resume(hot);
         for (unsigned i = 0; i < phases[ph].collects && ok; i++) {
            if (phases[ph].spread)
               tu_writers_wait_progress(spread);
            else if (phases[ph].hot)
               tu_writers_wait_progress(hot);
            snprintf(what, sizeof(what), "%s cycle %u %s collect %u on %s",
                     c->name, cycle, phases[ph].name, i,
                     cohmap_method_name(cohmap_region_method(r)));
            ok = collect_check(r, mirror, false, what);
            visited |= COHMAP_METHOD_BIT(cohmap_region_method(r));
         }
         if (phases[ph].spread)
            tu_writers_pause(spread);
         if (phases[ph].hot)
            tu_writers_pause(hot);
         if (!ok)
            break;
         /* Quiescent: every completed store must have been reported. */
         snprintf(what, sizeof(what),
                  "%s cycle %u: checkpoint after %s "
                  "(on %s)",
                  c->name, cycle, phases[ph].name,
                  cohmap_method_name(cohmap_region_method(r)));
         ok = collect_check(r, mirror, true, what);
         checkpoints++;
      }
   }

   uint64_t stores = tu_writers_stop(spread) + tu_writers_stop(hot);
   uint64_t n = switches(r);
   printf("# %s: %" PRIu64 " switches, methods visited 0x%x, %u "
          "checkpoints, %" PRIu64 " stores, %.2f s\n",
          c->name, n, visited, checkpoints, stores, tu_now() - start);

   free(mirror);
   bool scan = scan_available(ctx);
   assert_int_equal(cohmap_region_destroy(r), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
   size_t first;
   uint64_t passed_on = tu_segv_sentinel_remove(&first);
   assert_true(ok);
   assert_int_equal(passed_on, 0);

   /* The test is only worth something if the policy did switch, between
    * the methods the phases call for. */
   assert_true(n >= CONC_CYCLES);
   if (!(c->flags & COHMAP_REGION_BYTE_EXACT))
      assert_true(visited & COHMAP_METHOD_BIT(COHMAP_METHOD_FULL));
   assert_true(visited & COHMAP_METHOD_BIT(COHMAP_METHOD_COMPARE));
   if (scan)
      assert_true(visited & COHMAP_METHOD_BIT(COHMAP_METHOD_SCAN));
   if (c->flags & COHMAP_REGION_CPU_STORES_ONLY)
      assert_true(visited & COHMAP_METHOD_BIT(COHMAP_METHOD_FAULT));
   else
      assert_false(visited & COHMAP_METHOD_BIT(COHMAP_METHOD_FAULT));
}

/* --- knobs and calibration ---------------------------------------------
 */

/* stderr of fn, into buf. */
struct capture {
   int saved;
   FILE *file;
};

static void
capture_begin(struct capture *cap)
{
   fflush(stderr);
   cap->file = tmpfile();
   assert_non_null(cap->file);
   cap->saved = dup(STDERR_FILENO);
   assert_true(cap->saved >= 0);
   assert_true(dup2(fileno(cap->file), STDERR_FILENO) >= 0);
}

static void
capture_end(struct capture *cap, char *buf, size_t size)
{
   fflush(stderr);
   dup2(cap->saved, STDERR_FILENO);
   close(cap->saved);
   rewind(cap->file);
   size_t n = fread(buf, 1, size - 1, cap->file);
   buf[n] = '\0';
   fclose(cap->file);
}

/* Creates a context with var=value (COHMAP_DEBUG=nocal), returns its
 * policy settings and what it printed. */
static struct cohmap_policy_config
config_from_env(const char *var, const char *value, char *text, size_t size)
{
   struct capture cap;
   struct cohmap_context *ctx = NULL;

   assert_int_equal(setenv(var, value, 1), 0);
   capture_begin(&cap);
   int ret = cohmap_context_create(NULL, &ctx);
   capture_end(&cap, text, size);
   assert_int_equal(unsetenv(var), 0);
   if (ret)
      fprintf(stderr, "%s=%s: create failed: %s\n", var, value,
              cohmap_error_message());
   assert_int_equal(ret, 0);
   struct cohmap_policy_config cfg = ctx->policy;
   assert_int_equal(cohmap_context_destroy(ctx), 0);
   return cfg;
}

static void
test_knobs(void **state)
{
   struct cohmap_policy_config defaults;
   cohmap_policy_config_init(&defaults);
   char text[2048];

   static const struct {
      const char *var;
      size_t field;
   } knobs[] = {
      {"COHMAP_POLICY_MARGIN",
       offsetof(struct cohmap_policy_config, margin_pct)},
      {"COHMAP_POLICY_DWELL", offsetof(struct cohmap_policy_config, dwell)},
   };
   static const char *const bad[] = {
      "abc",  "-5",          "0x10",  " 5",  "5 ",  "+5",
      "1001", "99999999999", "12abc", "2.5", "1e2", "25%",
   };
   static const struct {
      const char *value;
      uint32_t want;
   } good[] = {{"0", 0}, {"7", 7}, {"40", 40}, {"1000", 1000}, {"007", 7}};

   for (size_t k = 0; k < TU_ARRAY_SIZE(knobs); k++) {
      uint32_t def;
      memcpy(&def, (const char *)&defaults + knobs[k].field, sizeof(def));
      char def_text[16];
      snprintf(def_text, sizeof(def_text), "%u", def);

      for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
         struct cohmap_policy_config cfg =
            config_from_env(knobs[k].var, bad[i], text, sizeof(text));
         uint32_t got;
         memcpy(&got, (const char *)&cfg + knobs[k].field, sizeof(got));
         if (got != def || !strstr(text, knobs[k].var) ||
             !strstr(text, bad[i]) || !strstr(text, "default") ||
             !strstr(text, def_text)) {
            fprintf(stderr,
                    "%s='%s': value %u (default %u), message "
                    "\"%s\"\n",
                    knobs[k].var, bad[i], got, def, text);
            fail();
         }
      }
      for (size_t i = 0; i < TU_ARRAY_SIZE(good); i++) {
         struct cohmap_policy_config cfg =
            config_from_env(knobs[k].var, good[i].value, text, sizeof(text));
         uint32_t got;
         memcpy(&got, (const char *)&cfg + knobs[k].field, sizeof(got));
         assert_int_equal(got, good[i].want);
         /* Nothing to complain about. */
         assert_null(strstr(text, knobs[k].var));
      }
      /* Empty means unset. */
      struct cohmap_policy_config cfg =
         config_from_env(knobs[k].var, "", text, sizeof(text));
      uint32_t got;
      memcpy(&got, (const char *)&cfg + knobs[k].field, sizeof(got));
      assert_int_equal(got, def);
      assert_null(strstr(text, knobs[k].var));
   }

   /* COHMAP_METHOD=auto-fault: the policy, allowed to use fault. */
   struct cohmap_policy_config cfg =
      config_from_env("COHMAP_METHOD", "auto-fault", text, sizeof(text));
   assert_true(cfg.enabled);
   assert_true(cfg.allow_fault);
   cfg = config_from_env("COHMAP_METHOD", "auto", text, sizeof(text));
   assert_true(cfg.enabled);
   assert_false(cfg.allow_fault);
   cfg = config_from_env("COHMAP_METHOD", "compare", text, sizeof(text));
   assert_false(cfg.enabled);
   /* It is a setting, not a method. */
   enum cohmap_method m = COHMAP_METHOD_FULL;
   assert_int_equal(cohmap_method_from_name("auto-fault", &m), -EINVAL);
   assert_int_equal(m, COHMAP_METHOD_FULL);
   assert_null(cohmap_method_name((enum cohmap_method)COHMAP_METHOD_COUNT));
   cfg = config_from_env("COHMAP_METHOD", "help", text, sizeof(text));
   assert_non_null(strstr(text, "auto-fault"));

   /* COHMAP_DEBUG lists nocal; nocal gives the built-in model. */
   cfg = config_from_env("COHMAP_DEBUG", "help", text, sizeof(text));
   assert_non_null(strstr(text, "nocal"));
   cfg = config_from_env("COHMAP_DEBUG", "nocal", text, sizeof(text));
   assert_false(cfg.calibrated);
   assert_memory_equal(&cfg.model, &defaults.model, sizeof(cfg.model));

   assert_int_equal(setenv("COHMAP_DEBUG", "nocal", 1), 0);
}

static void
check_model_sane(const struct cohmap_cost_model *m)
{
   printf("# model: scan %.2f µs + %.3f ns/page + %.2f µs/dirty page, "
          "fault %.2f µs/dirty page, memcmp %.4f ns/B, memcpy %.4f ns/B\n",
          m->scan_ioctl_ns / 1e3, m->scan_page_ns, m->scan_dirty_ns / 1e3,
          m->fault_dirty_ns / 1e3, m->memcmp_byte_ns, m->memcpy_byte_ns);
   assert_true(m->scan_ioctl_ns >= 100 && m->scan_ioctl_ns <= 2e5);
   assert_true(m->scan_page_ns >= 0.05 && m->scan_page_ns <= 50);
   assert_true(m->scan_dirty_ns >= 200 && m->scan_dirty_ns <= 1e6);
   assert_true(m->fault_dirty_ns >= 500 && m->fault_dirty_ns <= 1e6);
   assert_true(m->memcmp_byte_ns >= 0.002 && m->memcmp_byte_ns <= 2);
   assert_true(m->memcpy_byte_ns >= 0.002 && m->memcpy_byte_ns <= 2);
}

/* Runs first: the first context with the policy calibrates. */
static void
test_calibration(void **state)
{
   assert_int_equal(unsetenv("COHMAP_DEBUG"), 0);

   struct cohmap_context *ctx = tu_context_create(0, 0);
   assert_non_null(ctx);
   printf("# calibration took %.2f ms\n", ctx->policy.calibration_ns / 1e6);
   assert_true(ctx->policy.calibrated);
   /* 20 ms budget, checked between steps. */
   assert_true(ctx->policy.calibration_ns > 0);
   assert_true(ctx->policy.calibration_ns < 100 * 1000 * 1000);
   struct cohmap_cost_model m;
   cohmap_context_get_cost_model(ctx, &m);
   check_model_sane(&m);
   assert_int_equal(cohmap_context_destroy(ctx), 0);

   /* Cached: the next context does not measure again. */
   ctx = tu_context_create(0, 0);
   assert_non_null(ctx);
   assert_true(ctx->policy.calibrated);
   assert_int_equal(ctx->policy.calibration_ns, 0);
   struct cohmap_cost_model again;
   cohmap_context_get_cost_model(ctx, &again);
   assert_memory_equal(&m, &again, sizeof(m));
   assert_int_equal(cohmap_context_destroy(ctx), 0);

   /* An auto-fault context measures fault itself (cohmap's handler goes
    * in now: over the sentinel). */
   tu_segv_sentinel_install();
   ctx = tu_context_create(0, COHMAP_CONTEXT_AUTO_FAULT);
   assert_non_null(ctx);
   printf("# fault calibration took %.2f ms\n",
          ctx->policy.calibration_ns / 1e6);
   cohmap_context_get_cost_model(ctx, &m);
   check_model_sane(&m);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
   size_t first;
   assert_int_equal(tu_segv_sentinel_remove(&first), 0);

   /* A scripted model replaces it, but not under live regions. */
   ctx = tu_context_create(0, 0);
   assert_non_null(ctx);
   struct cohmap_region *r;
   assert_int_equal(
      cohmap_region_create(ctx, 4096, COHMAP_METHOD_AUTO, 0, &r), 0);
   assert_int_equal(cohmap_context_set_cost_model(ctx, &model_vm), -EBUSY);
   assert_int_equal(cohmap_region_destroy(r), 0);
   struct cohmap_cost_model bad = model_vm;
   bad.scan_page_ns = -1;
   assert_int_equal(cohmap_context_set_cost_model(ctx, &bad), -EINVAL);
   bad.scan_page_ns = NAN;
   assert_int_equal(cohmap_context_set_cost_model(ctx, &bad), -EINVAL);
   assert_int_equal(cohmap_context_set_cost_model(ctx, &model_vm), 0);
   cohmap_context_get_cost_model(ctx, &m);
   assert_memory_equal(&m, &model_vm, sizeof(m));
   assert_int_equal(cohmap_context_destroy(ctx), 0);

   assert_int_equal(setenv("COHMAP_DEBUG", "nocal", 1), 0);
}

int
main(void)
{
   static const struct concurrent_case cases[] = {
      {0, "concurrent plain"},
      {COHMAP_REGION_BYTE_EXACT, "concurrent byte-exact"},
      {COHMAP_REGION_CPU_STORES_ONLY, "concurrent cpu-stores-only"},
   };
   const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_calibration),
      cmocka_unit_test(test_choice),
      cmocka_unit_test(test_hysteresis_model),
      cmocka_unit_test(test_initial_choice),
      cmocka_unit_test(test_phases),
      cmocka_unit_test(test_hysteresis_region),
      cmocka_unit_test(test_estimate),
      cmocka_unit_test(test_set_method),
      {cases[0].name, test_concurrent, NULL, NULL, (void *)&cases[0]},
      {cases[1].name, test_concurrent, NULL, NULL, (void *)&cases[1]},
      {cases[2].name, test_concurrent, NULL, NULL, (void *)&cases[2]},
      cmocka_unit_test(test_knobs),
   };

   /* Contexts read the environment here: only what the tests set. */
   unsetenv("COHMAP_METHOD");
   unsetenv("COHMAP_POLICY_MARGIN");
   unsetenv("COHMAP_POLICY_DWELL");
   setenv("COHMAP_DEBUG", "nocal", 1);
   tu_seed();
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));
   return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
