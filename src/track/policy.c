/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: the adaptive policy — a method per region from a calibrated model
 *
 * No method wins everywhere (DESIGN.md, docs/benchmarks.md).  fault costs
 * nothing on an idle region and the most per dirty page; scan costs a
 * little per page of the region and a lot per dirty page (the store takes
 * a write-protect fault); compare and full cost a pass over the region
 * whatever changed.  Where they cross moves tenfold between machines: the
 * scan/compare crossover is at 20-30 % dirty on DESIGN.md's machine and at
 * about 1 % on this project's VMs, where traps are expensive.  So, like
 * vmwgfx_page_dirty.c, cohmap switches per region between methods; unlike
 * it, the thresholds are not constants but fall out of a cost model
 * measured on the running machine and an estimate of each region's
 * dirtiness.
 *
 * Model (struct cohmap_cost_model).  For a region of n pages, S bytes,
 * with d dirty pages and b dirty bytes per collect, one collect costs:
 *
 *    fault   = d * fault_dirty + upload(d pages)
 *    scan    = ioctl + n * walk + min(d, 1) * rearm + d * scan_dirty
 *              + upload(d pages)
 *    compare = S * memcmp + 2 * b * memcpy (finding the changed chunks,
 *              copying them into the snapshot) + upload(b)
 *    full    = upload(S)
 *
 * where upload(x) = x * memcpy (the winsys's uploads are copies into
 * device memory).  A region with a snapshot (COHMAP_REGION_BYTE_EXACT)
 * refines whatever its method reports: it adds reported bytes * memcmp and
 * b * memcpy and uploads b bytes instead, so full becomes compare.  b is
 * estimated from d with the bytes per dirty page seen whenever a collect
 * reports exact bytes (default: a whole page).  Per-byte costs of regions
 * over large_region_bytes are multiplied by large_factor: calibration
 * measures them in cache, and a large region streams from memory.
 *
 * Estimate.  After each collect the policy observes d (the pages the
 * engine reported, or the distinct pages compare's exact runs touch) and
 * b, and updates an exponentially weighted average with weight 1/2: a step
 * change is 75 % absorbed after two collects and 87.5 % after three.
 *
 * Decision.  Right after observing, at the end of the collect and under
 * the region lock, the policy predicts every allowed method's cost at the
 * estimate and picks the method for the next collect.  Deciding there,
 * not when the next collect starts, arms the new method before the
 * application's next stores: a dense period on scan is a fault per page.
 * It switches only if the cheapest beats the current one by more than the
 * margin (COHMAP_POLICY_MARGIN) on POLICY_CONFIRM_DECISIONS consecutive
 * decisions, the region has been on its method for COHMAP_POLICY_DWELL
 * collects, and the switch pays for itself: what staying has cost during
 * the streak plus the saving expected over POLICY_PAYBACK_COLLECTS
 * collects reaches what arming the new method costs (arming scan or fault
 * walks the page table; arming compare fills a snapshot, which on a VM
 * costs 20-100 passes over the region when its pages are new: populating
 * them, then the hypervisor's first touch).  A method predicted to cost
 * POLICY_URGENT_RATIO times the best is left at once.  Decisions are made
 * only on an estimate refreshed since the last switch.  A new region
 * starts on the cheapest method for d = 0, which the model makes fault
 * where allowed, else scan above a few dozen pages (its fixed cost is
 * below a pass over the region) and compare or full below (ties go to
 * compare: it observes).
 *
 * Two refinements.  compare is preferred to full where it costs at most
 * the margin more: it uploads only what changed (a real link costs more
 * per byte than the model's memcpy) and it observes exactly.  And only a
 * trapping method (scan, fault) is left urgently: full and compare cost a
 * bounded pass or two, so leaving them waits for confirmation and dwell.
 *
 * Samples.  full without a snapshot reports everything and so observes
 * nothing by itself.  An adaptive region on full keeps copies of one page
 * in 16 (16 to 1024 pages, region.c) and counts at each collect which of
 * them changed: an unbiased, if coarse, estimate of the dirty pages for a
 * few percent of full's cost.  Its noise at low densities is why the
 * decision rules above keep hysteresis on full and compare.
 *
 * Probes.  A region on full without samples (no memory for them) probes
 * instead: it moves to the other method that is
 * cheapest to arm and run at the stale estimate (compare, when that says
 * dense), whose first observation replaces the estimate and is acted on
 * at once.  It probes after probe_interval collects, and not before the
 * collects spent blind would have saved, had the region gone idle, what
 * the probe costs beyond a collect on full.  A probe that sends the region
 * back to full doubles the interval (up to a limit), so that a region that
 * stays dense pays for few probes; and while on full an adaptive region
 * keeps its last snapshot's pages as a spare, so that later probes copy
 * into present pages instead of populating new ones.
 *
 * Calibration (cohmap_policy_context_init()).  The first context with the
 * policy times the library's own engines on scratch regions (scan collects
 * of clean 64 KiB and 1 MiB regions for the fixed and per-page costs, 32
 * dirty pages for the per-dirty-page cost with the stores, switches to
 * compare for what a new snapshot costs, compare collects and memcpy of
 * 1 MiB, an mprotect pair), and caches the result for the process.  It
 * stops at CAL_BUDGET_NS, cheapest measurements first, and keeps built-in
 * costs for what it did not reach.  Each figure is the low end of its
 * repetitions (preemption only adds time) and is clamped to a band around
 * the built-in figure.  fault is only timed for a context that may use it
 * everywhere (auto-fault): running the fault engine installs cohmap's
 * SIGSEGV handler for good, which a process that never uses fault should
 * not get.  Otherwise its cost is derived as scan's dirty-page cost (a
 * trap) plus two mprotect calls (unprotect in the handler, re-protect at
 * collect), which matches the 22-31 µs measured here.  COHMAP_DEBUG=nocal
 * skips all of it and uses the built-in costs (this project's VMs,
 * docs/benchmarks.md).
 *
 * Why fault is opt-in: a kernel write into a protected page (read(2) into
 * the buffer, recv, io_uring) fails with EFAULT and raises no signal, so
 * choosing fault behind the application's back can break correct
 * programs.  The policy uses it only for regions created with
 * COHMAP_REGION_CPU_STORES_ONLY or on contexts with
 * COHMAP_CONTEXT_AUTO_FAULT (COHMAP_METHOD=auto-fault).
 *
 * Notes:
 *
 *  1. A switch is region_switch(): arm the new method, collect the old
 *     one into the carry, detach it.  Stores before the arm are in the
 *     carry, stores after it are the new method's, so no write is lost
 *     whatever the policy decides or how often.
 *  2. The estimate, counters and decisions of a region live under its
 *     lock.  The context's settings are read-only once it has regions.
 *  3. A method that fails to attach to a region (scan on memory another
 *     userfaultfd owns, compare without memory for a snapshot) is not
 *     tried again for that region.
 */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "track/track_priv.h"
#include "util/log.h"
#include "util/time.h"

/* A switch costs an arm and, for one collect, both methods' work; 25 %
 * keeps a region whose estimate wanders around a crossover (two methods
 * within the model's own error of each other) where it is.  Knob:
 * COHMAP_POLICY_MARGIN. */
#define POLICY_MARGIN_DEFAULT 25
#define POLICY_MARGIN_MAX     1000

/* Collects a region stays on a method it moved to: bounds the switch rate
 * to one per three collects even if estimates were to swing.  Short,
 * because the phase a region moved for may last only dozens of collects.
 * Knob: COHMAP_POLICY_DWELL. */
#define POLICY_DWELL_DEFAULT 3
#define POLICY_DWELL_MAX     1000

/* Consecutive decisions that must want the same switch: one odd collect (a
 * buffer cleared once) does not move a region; vmwgfx asks for three
 * scans, two suffice on a smoothed estimate and react within 2-3 collects
 * of a phase change. */
#define POLICY_CONFIRM_DECISIONS 2

/* A switch must pay for its arm: the saving it expects over this many
 * collects, plus what staying has already cost during the streak (the
 * ski-rental rule: once staying has cost as much as switching, switch),
 * must reach the arm's cost.  So a cheap switch happens at once and an
 * expensive one (a snapshot to fill) once the region has shown it will
 * stay where it is.  16 collects (a quarter second at 60 submissions a
 * second): with 4, a 4 MiB region on scan that turned 1 % dense waited
 * 20-50 collects to pay for populating compare's snapshot on this VM. */
#define POLICY_PAYBACK_COLLECTS 16

/* A method predicted to cost this many times the best is left at the first
 * decision, without confirmation or dwell: one more period there (a dense
 * region on scan pays a fault per page, up to 100 times a pass over it)
 * costs more than a wrong move does (a probe, and collects on full until
 * it).  3: a region on scan that turns 10 % dense shows 3.1x at its first
 * collect here (its estimate is still half the old one). */
#define POLICY_URGENT_RATIO 3

/* A region that leaves scan or fault for cost within POLICY_TRAP_SHORT_STAY
 * collects of arriving keeps away from both for POLICY_TRAP_BACKOFF_MIN
 * collects, doubled at each such short stay up to POLICY_TRAP_BACKOFF_MAX.
 * Without it a 1 MiB region with one dirty page per collect cycled
 * full -> scan -> full every six collects (22 switches in 80 submissions,
 * at 3.7x compare's cost): on full, 16 page samples read "idle", and scan
 * then saw the page. */
#define POLICY_TRAP_SHORT_STAY  16
#define POLICY_TRAP_BACKOFF_MIN 16
#define POLICY_TRAP_BACKOFF_MAX 512

/* Weight of the newest observation in the dirty estimate: half, so the
 * estimate follows a phase change within two or three collects. */
#define POLICY_EWMA_WEIGHT 0.5
/* ... and when it falls: 1024 dirty pages fall to below 4 in four
 * collects. */
#define POLICY_EWMA_WEIGHT_DOWN 0.75

/* Collects on full (which observes nothing) before a probe, doubled after
 * each probe that finds the region still dense: a probe into compare with
 * its pages at hand costs about three passes over the region, so at the
 * limit it adds under 5 %.  A probe that must populate a new snapshot
 * costs far more (50-100 passes on a VM), and waits until the time spent
 * blind could have cost as much had the region gone idle (ski rental
 * again), up to POLICY_PROBE_WAIT_MAX collects. */
#define POLICY_PROBE_INTERVAL_MIN 8
#define POLICY_PROBE_INTERVAL_MAX 64
#define POLICY_PROBE_WAIT_MAX     256

/* Calibration measures per-byte costs on 1 MiB, in cache.  Regions over
 * 8 MiB (with their snapshot, more than this machine's per-core caches)
 * stream from memory: compare and full cost 2.2-2.5 times the 1 MiB figure
 * per page at 64 MiB and 1 GiB on a quiet machine (docs/benchmarks.md). */
#define POLICY_LARGE_REGION_BYTES ((size_t)8 << 20)
#define POLICY_LARGE_FACTOR       2.5

/* Calibration: issue 4 allows 20 ms per process. */
#define CAL_BUDGET_NS   (20ull * 1000 * 1000)
#define CAL_REPS        5
#define CAL_DIRTY_REPS  3
#define CAL_DIRTY_PAGES 32
#define CAL_BIG_BYTES   ((size_t)1 << 20)
#define CAL_SMALL_BYTES ((size_t)64 << 10)

void
cohmap_cost_model_default(struct cohmap_cost_model *m)
{
   /* This project's VMs, quiet state (docs/benchmarks.md): fault 22-31 µs
    * per scattered dirty page; scan ~2.5 µs per collect, 0.8-0.9 ns per
    * clean page, 12-18 µs per dirty page; compare and full ~80 ns per
    * 4 KiB in cache; a new snapshot 4-10 µs per page beyond the copy
    * (populating, then the hypervisor's first touch). */
   *m = (struct cohmap_cost_model){
      .fault_dirty_ns = 25000,
      .scan_ioctl_ns = 2500,
      .scan_page_ns = 0.9,
      .scan_dirty_ns = 15000,
      .scan_rearm_ns = 20000,
      .memcmp_byte_ns = 0.02,
      .memcpy_byte_ns = 0.02,
      .populate_page_ns = 5000,
      .large_region_bytes = POLICY_LARGE_REGION_BYTES,
      .large_factor = POLICY_LARGE_FACTOR,
   };
}

static double
clampd(double v, double lo, double hi)
{
   return v < lo ? lo : v > hi ? hi : v;
}

void
cohmap_policy_predict(const struct cohmap_cost_model *m, size_t size,
                      size_t page_size, bool snapshot, double dirty_pages,
                      double dirty_bytes, double cost[COHMAP_METHOD_COUNT])
{
   double n = (double)(size / page_size);
   double s = (double)size;
   double scale = size > m->large_region_bytes ? m->large_factor : 1.0;
   double cmp = m->memcmp_byte_ns * scale;
   double cpy = m->memcpy_byte_ns * scale;
   double d = clampd(dirty_pages, 0, n);
   double b = clampd(dirty_bytes, 0, s);
   double page_bytes = d * (double)page_size;

   /* What the page-granular methods hand over: whole pages, or with a
    * snapshot their refinement (a diff of the pages, the changed bytes
    * copied into the snapshot) and the exact bytes. */
   double handed =
      snapshot ? page_bytes * cmp + 2 * b * cpy : page_bytes * cpy;

   cost[COHMAP_METHOD_AUTO] = INFINITY;
   cost[COHMAP_METHOD_FAULT] = d * m->fault_dirty_ns + handed;
   /* The re-arm is paid by a collect that found at least one dirty page:
    * with d < 1 on average, by about a fraction d of them. */
   cost[COHMAP_METHOD_SCAN] = m->scan_ioctl_ns + n * m->scan_page_ns +
                              (d < 1 ? d : 1) * m->scan_rearm_ns +
                              d * m->scan_dirty_ns + handed;
   /* compare's diff reads a changed chunk twice more (the word compare
    * that finds it, then the copy into the snapshot) before the upload:
    * three passes over b beyond the memcmp (cohmap bench: 1.2-1.35x full
    * at 10 % dirty, which 2 passes predicted as 1.04x). */
   cost[COHMAP_METHOD_COMPARE] = s * cmp + 3 * b * cpy;
   cost[COHMAP_METHOD_FULL] = snapshot ? cost[COHMAP_METHOD_COMPARE] : s * cpy;
}

/* The cheapest allowed method not in exclude, COHMAP_METHOD_AUTO if none.
 * Ties go to the earlier in this order: fault and scan cost least to keep
 * if the region stays idle, and compare observes what full cannot. */
static enum cohmap_method
cheapest(const double cost[COHMAP_METHOD_COUNT], uint32_t allowed,
         uint32_t exclude)
{
   static const enum cohmap_method order[] = {
      COHMAP_METHOD_FAULT,
      COHMAP_METHOD_SCAN,
      COHMAP_METHOD_COMPARE,
      COHMAP_METHOD_FULL,
   };
   enum cohmap_method best = COHMAP_METHOD_AUTO;

   for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
      enum cohmap_method m = order[i];
      if (!(allowed & COHMAP_METHOD_BIT(m)) ||
          (exclude & COHMAP_METHOD_BIT(m)))
         continue;
      if (best == COHMAP_METHOD_AUTO || cost[m] < cost[best])
         best = m;
   }
   return best;
}

/* compare over full where it is predicted to cost at most
 * POLICY_PREFER_COMPARE_PCT more: it uploads only what changed (a link to
 * a real device costs more per byte than the memcpy the model counts) and
 * it observes, where full can only sample.  Not the margin: the model
 * underestimates compare's pass against full's copy (on cohmap bench's
 * 4 MiB cells at 10 % dirty, predicted 1.2x, measured 1.6x), so the slack
 * covers the sparse cases only, where the two differ by the diff's few
 * copies. */
#define POLICY_PREFER_COMPARE_PCT 10

static enum cohmap_method
prefer_compare(const struct cohmap_policy_config *cfg,
               const struct cohmap_policy_input *in,
               const double cost[COHMAP_METHOD_COUNT], enum cohmap_method best)
{
   if (best != COHMAP_METHOD_FULL ||
       !(in->allowed & COHMAP_METHOD_BIT(COHMAP_METHOD_COMPARE)))
      return best;
   (void)cfg;
   double limit =
      cost[COHMAP_METHOD_FULL] * (100.0 + POLICY_PREFER_COMPARE_PCT) / 100.0;
   return cost[COHMAP_METHOD_COMPARE] <= limit ? COHMAP_METHOD_COMPARE : best;
}

enum cohmap_method
cohmap_policy_best(const struct cohmap_policy_config *cfg,
                   const struct cohmap_policy_input *in, double dirty_pages,
                   double dirty_bytes)
{
   double cost[COHMAP_METHOD_COUNT];

   cohmap_policy_predict(&cfg->model, in->size, in->page_size, in->snapshot,
                         dirty_pages, dirty_bytes, cost);
   enum cohmap_method m = cheapest(cost, in->allowed, 0);
   return m == COHMAP_METHOD_AUTO ? COHMAP_METHOD_FULL
                                  : prefer_compare(cfg, in, cost, m);
}

enum cohmap_method
cohmap_policy_initial(const struct cohmap_policy_config *cfg,
                      const struct cohmap_policy_input *in)
{
   return cohmap_policy_best(cfg, in, 0, 0);
}

void
cohmap_policy_state_init(struct cohmap_policy_state *ps, bool allow_fault)
{
   memset(ps, 0, sizeof(*ps));
   ps->allow_fault = allow_fault;
   ps->probe_interval = POLICY_PROBE_INTERVAL_MIN;
   /* Never switched: the dwell does not hold a new region. */
   ps->since_switch = UINT32_MAX;
}

/* What arming `to` costs: scan registers and write-protects the region,
 * fault mprotects it (both a walk of its page table); compare fills a new
 * snapshot (pages populated, then a copy) unless the region keeps one
 * anyway. */
static double
switch_cost(const struct cohmap_cost_model *m,
            const struct cohmap_policy_input *in, enum cohmap_method to)
{
   double n = (double)(in->size / in->page_size);
   double scale = in->size > m->large_region_bytes ? m->large_factor : 1.0;

   switch (to) {
   case COHMAP_METHOD_SCAN:
   case COHMAP_METHOD_FAULT:
      return m->scan_ioctl_ns + n * m->scan_page_ns;
   case COHMAP_METHOD_COMPARE:
      if (in->snapshot)
         return 0;
      /* New pages cost more per page in large regions too (1 MiB: ~3 µs
       * cold here, 16-64 MiB: 8-11 µs), and calibration on 1 MiB often
       * gets pages the kernel recycles warm. */
      return (in->spare ? 0 : n * m->populate_page_ns * scale) +
             (double)in->size * m->memcpy_byte_ns * scale;
   default:
      return 0;
   }
}

void
cohmap_policy_decide(struct cohmap_policy_state *ps,
                     const struct cohmap_policy_config *cfg,
                     const struct cohmap_policy_input *in,
                     struct cohmap_policy_decision *out)
{
   double d = ps->have_estimate ? ps->dirty_pages : 0;
   double per_page =
      ps->have_ratio ? ps->bytes_per_page : (double)in->page_size;
   enum cohmap_method cur = in->current;

   out->method = cur;
   out->probe = false;
   out->dirty_pages = d;
   out->dirty_bytes = d * per_page;
   cohmap_policy_predict(&cfg->model, in->size, in->page_size, in->snapshot,
                         d, d * per_page, out->cost);
   for (unsigned m = 0; m < COHMAP_METHOD_COUNT; m++) {
      if (!(in->allowed & COHMAP_METHOD_BIT(m)))
         out->cost[m] = INFINITY;
   }

   /* Back off from trapping methods the region just left (see
    * POLICY_TRAP_BACKOFF_MIN). */
   uint32_t traps_bits =
      COHMAP_METHOD_BIT(COHMAP_METHOD_SCAN) |
      COHMAP_METHOD_BIT(COHMAP_METHOD_FAULT);
   bool on_trap = cur == COHMAP_METHOD_SCAN || cur == COHMAP_METHOD_FAULT;
   uint32_t exclude = 0;
   if (ps->trap_wait) {
      ps->trap_wait--;
      if (!on_trap)
         exclude = traps_bits;
   }
   enum cohmap_method best = cheapest(out->cost, in->allowed, exclude);
   if (best == COHMAP_METHOD_AUTO)
      best = cheapest(out->cost, in->allowed, 0);
   if (best == COHMAP_METHOD_AUTO)
      return;
   best = prefer_compare(cfg, in, out->cost, best);

   /* A method the policy may not use (the region was put back under the
    * policy while on fault): leave it now. */
   if (!(in->allowed & COHMAP_METHOD_BIT(cur))) {
      out->method = best;
      return;
   }

   if (cur == COHMAP_METHOD_FULL && !in->snapshot && !in->sampled) {
      if (ps->blind < ps->probe_interval)
         return;
      /* The cheapest way to measure: arm plus a collect at the (stale)
       * estimate. */
      double probe_cost[COHMAP_METHOD_COUNT];
      for (unsigned m = 0; m < COHMAP_METHOD_COUNT; m++)
         probe_cost[m] = out->cost[m] + switch_cost(&cfg->model, in, m);
      enum cohmap_method probe =
         cheapest(probe_cost, in->allowed, COHMAP_METHOD_BIT(cur));
      if (probe == COHMAP_METHOD_AUTO)
         return;
      /* Worth it only if the region may have gone idle, and once the
       * collects spent blind would have saved as much as the probe costs
       * beyond a collect on full. */
      double idle[COHMAP_METHOD_COUNT];
      cohmap_policy_predict(&cfg->model, in->size, in->page_size, false, 0, 0,
                            idle);
      enum cohmap_method idle_best = cheapest(idle, in->allowed, 0);
      double saving = idle[cur] - idle[idle_best];
      if (idle_best == cur || !(saving > 0))
         return;
      double excess = probe_cost[probe] - out->cost[cur];
      if (excess > 0 && ps->blind < POLICY_PROBE_WAIT_MAX &&
          (double)ps->blind * saving < excess)
         return;
      out->method = probe;
      out->probe = true;
      return;
   }

   /* The estimate must describe the method the region is on. */
   if (!ps->fresh)
      return;

   double limit = out->cost[best] * (100.0 + cfg->margin_pct) / 100.0;
   bool better = best != cur && out->cost[cur] > limit;

   if (ps->probing) {
      /* The probe measured the region: act on it at once, it is why the
       * region left full. */
      ps->probing = false;
      if (better && best == COHMAP_METHOD_FULL) {
         ps->probe_interval *= 2;
         if (ps->probe_interval > POLICY_PROBE_INTERVAL_MAX)
            ps->probe_interval = POLICY_PROBE_INTERVAL_MAX;
      } else {
         ps->probe_interval = POLICY_PROBE_INTERVAL_MIN;
      }
      if (better)
         out->method = best;
      return;
   }

   if (!better) {
      ps->streak = 0;
      ps->regret = 0;
      return;
   }
   double saving = out->cost[cur] - out->cost[best];
   if (ps->streak < UINT32_MAX)
      ps->streak++;
   ps->regret += saving;
   /* Only a trapping method's cost grows without bound with the stores;
    * full and compare cost a pass or two however dense the region, so
    * leaving them is never urgent (on a noisy estimate it would flap). */
   bool traps = cur == COHMAP_METHOD_SCAN || cur == COHMAP_METHOD_FAULT;
   bool urgent =
      traps && out->cost[cur] >= POLICY_URGENT_RATIO * out->cost[best];
   if (!urgent &&
       (ps->streak < cfg->confirm || ps->since_switch < cfg->dwell))
      return;
   if (cfg->payback && ps->regret + saving * cfg->payback <
                          switch_cost(&cfg->model, in, best))
      return;
   if (best == COHMAP_METHOD_FULL)
      ps->probe_interval = POLICY_PROBE_INTERVAL_MIN;
   if (on_trap && !(traps_bits & COHMAP_METHOD_BIT(best))) {
      /* Leaving a trap for cost: if the stay was short, the estimate that
       * sent the region there was wrong (full's samples cannot tell one
       * dirty page in 256 from none), and it would be sent there again. */
      if (ps->since_switch < POLICY_TRAP_SHORT_STAY) {
         uint32_t b = ps->trap_backoff ? 2 * ps->trap_backoff
                                       : cfg->trap_backoff;
         ps->trap_backoff =
            b > POLICY_TRAP_BACKOFF_MAX ? POLICY_TRAP_BACKOFF_MAX : b;
      } else {
         ps->trap_backoff = 0;
      }
      ps->trap_wait = ps->trap_backoff;
   }
   out->method = best;
}

void
cohmap_policy_observe(struct cohmap_policy_state *ps, bool whole, bool blind,
                      bool exact, bool own, double dirty_pages,
                      double dirty_bytes)
{
   /* full reports everything, and so does the collect that leaves it (its
    * final collect is carried); neither says what was stored to, unless
    * the figures are the current method's own. */
   bool valid =
      !whole && !blind && (own || !(ps->switched && ps->switched_blind));
   /* A switching collect's carry may be whole pages. */
   bool bytes_valid = valid && exact && !ps->switched;
   bool switched = ps->switched && !own;

   ps->switched = false;
   if (ps->since_switch < UINT32_MAX)
      ps->since_switch++;
   if (blind && ps->blind < UINT32_MAX)
      ps->blind++;
   if (!valid)
      return;

   if (!ps->have_estimate) {
      ps->dirty_pages = dirty_pages;
      ps->have_estimate = true;
   } else {
      /* Down faster than up: a region that went idle on compare or full
       * pays a pass over itself per collect until it moves, one that
       * turned dense on scan shows it at once (the urgent ratio). */
      double w = dirty_pages < ps->dirty_pages ? POLICY_EWMA_WEIGHT_DOWN
                                               : POLICY_EWMA_WEIGHT;
      ps->dirty_pages += w * (dirty_pages - ps->dirty_pages);
   }
   if (bytes_valid && dirty_pages > 0) {
      double ratio = dirty_bytes / dirty_pages;
      if (!ps->have_ratio) {
         ps->bytes_per_page = ratio;
         ps->have_ratio = true;
      } else {
         ps->bytes_per_page +=
            POLICY_EWMA_WEIGHT * (ratio - ps->bytes_per_page);
      }
   }
   /* What a switching collect reports is mostly the old method's. */
   if (!switched)
      ps->fresh = true;
}

void
cohmap_policy_probe_started(struct cohmap_policy_state *ps)
{
   /* The estimate is as old as the time on full: the probe's first
    * observation replaces it, and is acted on at once. */
   ps->probing = true;
   ps->have_estimate = false;
}

void
cohmap_policy_switched(struct cohmap_policy_state *ps, bool from_blind)
{
   ps->switched = true;
   ps->switched_blind = from_blind;
   ps->fresh = false;
   ps->since_switch = 0;
   ps->streak = 0;
   ps->regret = 0;
   ps->blind = 0;
   ps->probing = false;
}

/* --- knobs ------------------------------------------------------------- */

void
cohmap_policy_config_init(struct cohmap_policy_config *cfg)
{
   memset(cfg, 0, sizeof(*cfg));
   cfg->margin_pct = POLICY_MARGIN_DEFAULT;
   cfg->dwell = POLICY_DWELL_DEFAULT;
   cfg->confirm = POLICY_CONFIRM_DECISIONS;
   cfg->payback = POLICY_PAYBACK_COLLECTS;
   cfg->trap_backoff = POLICY_TRAP_BACKOFF_MIN;
   cohmap_cost_model_default(&cfg->model);
}

/*
 * Reads a whole-number knob.  Strict: plain decimal digits only (no sign,
 * blanks, hex or suffix), within [0, max].  Unlike COHMAP_DEBUG and
 * COHMAP_METHOD a bad value does not fail context creation: a threshold
 * only tunes performance, so cohmap says what it ignored and keeps its
 * default.
 */
static void
read_uint_knob(const char *var, const char *unit, uint32_t max,
               uint32_t *value)
{
   const char *s = getenv(var);

   if (!s || !*s)
      return;

   size_t len = strlen(s);
   bool ok = len <= 9 && strspn(s, "0123456789") == len;
   unsigned long v = ok ? strtoul(s, NULL, 10) : 0;
   if (!ok || v > max) {
      cohmap_warn("%s='%.40s' ignored: expected a whole number of %s from "
                  "0 to %u in plain decimal digits; keeping the default, %u",
                  var, s, unit, max, *value);
      return;
   }
   *value = (uint32_t)v;
}

int
cohmap_policy_read_env(struct cohmap_policy_config *cfg)
{
   read_uint_knob("COHMAP_POLICY_MARGIN", "percent", POLICY_MARGIN_MAX,
                  &cfg->margin_pct);
   read_uint_knob("COHMAP_POLICY_DWELL", "collects", POLICY_DWELL_MAX,
                  &cfg->dwell);
   return 0;
}

/* --- calibration ------------------------------------------------------- */

enum cal_part {
   CAL_BASE = 1u << 0,  /* memcmp (compare collects), memcpy, mprotect */
   CAL_SCAN = 1u << 1,  /* needs scan */
   CAL_FAULT = 1u << 2, /* needs a context allowed to use fault */
};

/* The process's calibration: parts are measured once each, by the first
 * context that needs them (a context without userfaultfd cannot measure
 * scan; only an auto-fault context measures fault). */
static pthread_mutex_t cal_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned cal_done;
static bool cal_started;
static struct cohmap_cost_model cal_model;
static double cal_mprotect_ns;
static bool cal_fault_measured;

struct cal_run {
   struct cohmap_context *ctx;
   uint64_t start;
   bool over_budget;
};

static bool
cal_in_budget(struct cal_run *run)
{
   if (!run->over_budget && cohmap_now_ns() - run->start > CAL_BUDGET_NS)
      run->over_budget = true;
   return !run->over_budget;
}

static int
u64_cmp(const void *a, const void *b)
{
   uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

   return (x > y) - (x < y);
}

/* The low end of the n >= 1 samples taken: the second fastest of four or
 * more, else the fastest.  On a shared host preemption and interrupts only
 * ever add time, and a loaded one adds it to most samples, so a median of a
 * few is often a measure of the load; the single fastest can be a timer
 * quirk, hence the second where there are enough. */
static double
low_end(uint64_t *v, size_t n)
{
   qsort(v, n, sizeof(v[0]), u64_cmp);
   return (double)v[n >= 4 ? 1 : 0];
}

/* The median of n >= 1 samples, for traps: a write-protect fault and a
 * TLB flush vary with the host (VM exits) far more than a copy does, and
 * the policy weighs them against copies; at their low end they came out
 * 3x below what cohmap bench measured per dirty page. */
static double
median(uint64_t *v, size_t n)
{
   qsort(v, n, sizeof(v[0]), u64_cmp);
   return n % 2 ? (double)v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

static uint64_t
time_collect(struct cohmap_region *r)
{
   struct cohmap_dirty d;
   uint64_t t0 = cohmap_now_ns();
   cohmap_region_collect(r, 0, &d);
   return cohmap_now_ns() - t0;
}

/* Stores to `pages` pages spread over r, then collects: what a
 * page-granular method costs for that many dirty pages, stores included. */
static uint64_t
time_dirty_cycle(struct cohmap_region *r, unsigned round, size_t pages)
{
   volatile uint8_t *p = cohmap_region_ptr(r);
   size_t ps = cohmap_page_size();
   size_t stride = cohmap_region_size(r) / pages;
   size_t off = (round * 64) % ps;
   struct cohmap_dirty d;

   uint64_t t0 = cohmap_now_ns();
   for (size_t i = 0; i < pages; i++)
      p[i * stride + off] = (uint8_t)(round + 1);
   cohmap_region_collect(r, 0, &d);
   return cohmap_now_ns() - t0;
}

/* A scratch region with every page present, as in a buffer in use: a walk
 * over never-touched pages costs about twice as much per page, and first
 * touches from user mode cost 10-35 µs each on a VM (MADV_POPULATE_WRITE
 * fills them from the kernel at about 1 µs). */
static int
cal_region(struct cal_run *run, size_t size, enum cohmap_method m,
           struct cohmap_region **out)
{
   int ret = cohmap_region_create(run->ctx, size, m, 0, out);
   if (ret)
      return ret;
   uint8_t *p = cohmap_region_ptr(*out);
#ifdef MADV_POPULATE_WRITE
   if (madvise(p, size, MADV_POPULATE_WRITE) != 0)
#endif
   {
      volatile uint8_t *v = p;
      for (size_t i = 0; i < size; i += cohmap_page_size())
         v[i] = 0;
   }
   /* Re-arm what populating dirtied. */
   struct cohmap_dirty d;
   cohmap_region_collect(*out, 0, &d);
   return 0;
}

/* scan on clean regions: fixed and per-page costs. */
static void
cal_scan_clean(struct cal_run *run, struct cohmap_cost_model *m,
               struct cohmap_region *big)
{
   struct cohmap_region *small;
   uint64_t ts[CAL_REPS], tb[CAL_REPS];
   size_t ps = run->ctx->page_size, n = 0;

   if (cal_region(run, CAL_SMALL_BYTES, COHMAP_METHOD_SCAN, &small))
      return;
   while (n < CAL_REPS && (n == 0 || cal_in_budget(run))) {
      ts[n] = time_collect(small);
      tb[n] = time_collect(big);
      n++;
   }
   cohmap_region_destroy(small);

   double small_ns = low_end(ts, n), big_ns = low_end(tb, n);
   double extra_pages = (double)((CAL_BIG_BYTES - CAL_SMALL_BYTES) / ps);
   m->scan_page_ns = (big_ns - small_ns) / extra_pages;
   if (m->scan_page_ns < 0)
      m->scan_page_ns = 0;
   m->scan_ioctl_ns =
      small_ns - (double)(CAL_SMALL_BYTES / ps) * m->scan_page_ns;
}

/* scan with dirty pages, stores included; after the clean figures.  One
 * dirty page and CAL_DIRTY_PAGES of them: the difference is the per-page
 * cost, the rest of the first page's cost the per-collect re-arm. */
static void
cal_scan_dirty(struct cal_run *run, struct cohmap_cost_model *m,
               struct cohmap_region *big)
{
   uint64_t t[CAL_DIRTY_REPS], t1[CAL_DIRTY_REPS];
   size_t n = 0, n1 = 0;

   double clean_ns =
      m->scan_ioctl_ns +
      (double)(CAL_BIG_BYTES / run->ctx->page_size) * m->scan_page_ns;
   while (n < CAL_DIRTY_REPS && cal_in_budget(run)) {
      t[n] = time_dirty_cycle(big, (unsigned)n, CAL_DIRTY_PAGES);
      n++;
   }
   while (n1 < CAL_DIRTY_REPS && cal_in_budget(run)) {
      t1[n1] = time_dirty_cycle(big, (unsigned)(n + n1), 1);
      n1++;
   }
   if (!n)
      return;
   double many = median(t, n) - clean_ns;
   if (!n1) {
      m->scan_dirty_ns = many / CAL_DIRTY_PAGES;
      return;
   }
   double one = median(t1, n1) - clean_ns;
   m->scan_dirty_ns = (many - one) / (CAL_DIRTY_PAGES - 1);
   m->scan_rearm_ns = one - m->scan_dirty_ns;
   if (m->scan_rearm_ns < 0)
      m->scan_rearm_ns = 0;
}

/* A switch to compare with a new snapshot (its pages populated, then
 * copied into: the first touch is what costs on a VM), compare's collect
 * on a clean region (the diff loop as it runs), memcpy between present
 * pages, an mprotect pair.  Leaves big on compare. */
static void
cal_base(struct cal_run *run, struct cohmap_cost_model *m,
         struct cohmap_region *big)
{
   uint64_t t[CAL_REPS];
   struct cohmap_dirty d;
   size_t ps = run->ctx->page_size, n;

   /* From full, the switch is the snapshot and nothing else.  Its cost
    * depends on whether the kernel hands back pages the hypervisor has
    * already mapped (0.3 to 5 ms per MiB here): the median, not the low
    * end, of up to three. */
   uint64_t ts[3];
   int ret = 0;
   for (n = 0; n < 3 && ret == 0 && (n == 0 || cal_in_budget(run)); n++) {
      cohmap_region_set_method(big, COHMAP_METHOD_FULL);
      uint64_t start = cohmap_now_ns();
      ret = cohmap_region_set_method(big, COHMAP_METHOD_COMPARE);
      ts[n] = cohmap_now_ns() - start;
   }
   qsort(ts, n, sizeof(ts[0]), u64_cmp);
   double snapshot_ns = (double)ts[(n - 1) / 2 + (n == 2)];
   if (ret == 0) {
      cohmap_region_collect(big, 0, &d);
      for (n = 0; n < CAL_REPS && (n == 0 || cal_in_budget(run)); n++)
         t[n] = time_collect(big);
      m->memcmp_byte_ns = low_end(t, n) / (double)CAL_BIG_BYTES;

      /* Snapshot and memory are both present and equal: a plain copy
       * between them is the snapshot refresh and upload cost.  No other
       * thread knows this region. */
      for (n = 0; n < CAL_REPS && (n == 0 || cal_in_budget(run)); n++) {
         uint64_t t0 = cohmap_now_ns();
         memcpy(big->snapshot, big->ptr, CAL_BIG_BYTES);
         t[n] = cohmap_now_ns() - t0;
      }
      m->memcpy_byte_ns = low_end(t, n) / (double)CAL_BIG_BYTES;
      m->populate_page_ns =
         (snapshot_ns - m->memcpy_byte_ns * (double)CAL_BIG_BYTES) /
         (double)(CAL_BIG_BYTES / ps);
   }

   void *page = mmap(NULL, ps, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
   if (page == MAP_FAILED)
      return;
   *(volatile uint8_t *)page = 1;
   for (n = 0; n < CAL_REPS && (n == 0 || cal_in_budget(run)); n++) {
      uint64_t t0 = cohmap_now_ns();
      mprotect(page, ps, PROT_READ);
      mprotect(page, ps, PROT_READ | PROT_WRITE);
      t[n] = cohmap_now_ns() - t0;
   }
   munmap(page, ps);
   cal_mprotect_ns = low_end(t, n) / 2;
}

/* fault's cost per dirty page, signal and re-protect included. */
static bool
cal_fault(struct cal_run *run, struct cohmap_cost_model *m,
          struct cohmap_region *big)
{
   uint64_t tc[CAL_REPS], td[CAL_DIRTY_REPS];
   struct cohmap_dirty d;
   size_t nc = 0, nd = 0;

   if (cohmap_region_set_method(big, COHMAP_METHOD_FAULT) != 0)
      return false;
   cohmap_region_collect(big, 0, &d);
   while (nc < CAL_REPS && (nc == 0 || cal_in_budget(run)))
      tc[nc++] = time_collect(big);
   while (nd < CAL_DIRTY_REPS && cal_in_budget(run)) {
      td[nd] = time_dirty_cycle(big, (unsigned)nd, CAL_DIRTY_PAGES);
      nd++;
   }
   if (!nd)
      return false;
   m->fault_dirty_ns = (low_end(td, nd) - low_end(tc, nc)) / CAL_DIRTY_PAGES;
   return true;
}

/* Keeps measurements within a factor of the built-in figures (this
 * project's VMs) that covers the machines in DESIGN.md and
 * docs/benchmarks.md: traps 10x cheaper on bare metal (scan's dirty page
 * 1.1-1.5 µs there, 12-18 µs here), memory 2-5x slower from DRAM or under
 * a noisy neighbour.  Beyond that a sample was preempted (or the timer
 * misbehaved), and one bad figure would steer every region of the process
 * for its lifetime. */
static void
cal_clamp(struct cohmap_cost_model *m)
{
   m->fault_dirty_ns = clampd(m->fault_dirty_ns, 1000, 100000);
   m->scan_ioctl_ns = clampd(m->scan_ioctl_ns, 200, 20000);
   m->scan_page_ns = clampd(m->scan_page_ns, 0.1, 10);
   m->scan_dirty_ns = clampd(m->scan_dirty_ns, 500, 60000);
   m->scan_rearm_ns = clampd(m->scan_rearm_ns, 0, 100000);
   m->memcmp_byte_ns = clampd(m->memcmp_byte_ns, 0.002, 0.2);
   m->memcpy_byte_ns = clampd(m->memcpy_byte_ns, 0.002, 0.2);
   m->populate_page_ns = clampd(m->populate_page_ns, 200, 20000);
}

/*
 * Measures the parts asked for, cheapest first, so that a loaded machine
 * that runs out of budget still gets the fixed and per-byte costs; what
 * is not reached keeps the built-in figure.
 */
static void
calibrate(struct cohmap_context *ctx, unsigned parts)
{
   struct cal_run run = {.ctx = ctx, .start = cohmap_now_ns()};
   struct cohmap_cost_model m = cal_model;
   struct cohmap_region *big = NULL;
   bool scan = parts & CAL_SCAN;

   /* The scratch regions are not the application's: no statistics lines
    * for them. */
   uint64_t debug = ctx->debug;
   ctx->debug &= ~(uint64_t)COHMAP_DEBUG_STATS;
   cohmap_info("policy: calibrating the cost model");

   if (cal_region(&run, CAL_BIG_BYTES,
                  scan ? COHMAP_METHOD_SCAN : COHMAP_METHOD_COMPARE, &big)) {
      cohmap_info("policy: no scratch region (%s): built-in costs",
                  cohmap_error_message());
      ctx->debug = debug;
      return;
   }

   if (scan)
      cal_scan_clean(&run, &m, big);
   if ((parts & CAL_BASE) && cal_in_budget(&run)) {
      /* Leaves big on compare; scan's dirty figure needs it back. */
      cal_base(&run, &m, big);
   }
   if (scan && cal_in_budget(&run) &&
       cohmap_region_set_method(big, COHMAP_METHOD_SCAN) == 0) {
      struct cohmap_dirty d;
      cohmap_region_collect(big, 0, &d);
      cal_scan_dirty(&run, &m, big);
   }
   bool fault_measured = false;
   if ((parts & CAL_FAULT) && cal_in_budget(&run))
      fault_measured = cal_fault(&run, &m, big);
   cohmap_region_destroy(big);
   ctx->debug = debug;

   /* fault without running it: its trap costs what scan's does, plus the
    * handler's unprotect and the collect's re-protect. */
   if (fault_measured)
      cal_fault_measured = true;
   else if (!cal_fault_measured && cal_mprotect_ns > 0)
      m.fault_dirty_ns = m.scan_dirty_ns + 2 * cal_mprotect_ns;

   cal_clamp(&m);
   cal_model = m;
   /* Once per process, measured or not: on a host so loaded that the
    * budget ran out, every later context would pay it again. */
   cal_done |= parts;

   uint64_t took = cohmap_now_ns() - run.start;
   ctx->policy.calibration_ns = took;
   if (run.over_budget)
      cohmap_info("policy: calibration reached its %.0f ms budget; what it "
                  "did not measure keeps the built-in costs",
                  CAL_BUDGET_NS / 1e6);
   cohmap_info("policy: calibrated in %.2f ms: scan %.2f µs + %.2f ns/page "
               "+ %.2f µs re-arm + %.2f µs/dirty page, fault %.2f µs/dirty "
               "page (%s), "
               "memcmp %.4f ns/byte, memcpy %.4f ns/byte, populate %.2f "
               "µs/page",
               took / 1e6, m.scan_ioctl_ns / 1e3, m.scan_page_ns,
               m.scan_rearm_ns / 1e3, m.scan_dirty_ns / 1e3,
               m.fault_dirty_ns / 1e3,
               cal_fault_measured ? "measured" : "scan + 2 mprotect",
               m.memcmp_byte_ns, m.memcpy_byte_ns, m.populate_page_ns / 1e3);
}

void
cohmap_policy_context_init(struct cohmap_context *ctx)
{
   struct cohmap_policy_config *cfg = &ctx->policy;

   cfg->enabled = ctx->opts.default_method == COHMAP_METHOD_AUTO;
   if (!cfg->enabled)
      return;
   if (ctx->debug & COHMAP_DEBUG_NOCAL) {
      cohmap_info("policy: built-in costs (COHMAP_DEBUG=nocal)");
      return;
   }

   unsigned want = CAL_BASE;
   if (ctx->method_status[COHMAP_METHOD_SCAN] == 0)
      want |= CAL_SCAN;
   if (cfg->allow_fault && ctx->method_status[COHMAP_METHOD_FAULT] == 0)
      want |= CAL_FAULT;

   pthread_mutex_lock(&cal_lock);
   if (!cal_started) {
      cohmap_cost_model_default(&cal_model);
      cal_started = true;
   }
   if (want & ~cal_done)
      calibrate(ctx, want & ~cal_done);
   cfg->model = cal_model;
   cfg->calibrated = cal_done != 0;
   pthread_mutex_unlock(&cal_lock);
}

int
cohmap_context_set_cost_model(struct cohmap_context *ctx,
                              const struct cohmap_cost_model *model)
{
   if (!ctx || !model)
      return cohmap_errorf(-EINVAL, "NULL context or model");
   const double v[] = {
      model->fault_dirty_ns,   model->scan_ioctl_ns,  model->scan_page_ns,
      model->scan_dirty_ns,    model->scan_rearm_ns,
      model->memcmp_byte_ns,   model->memcpy_byte_ns,
      model->populate_page_ns, model->large_factor,
   };
   for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
      if (!(v[i] >= 0 && v[i] < INFINITY))
         return cohmap_errorf(-EINVAL, "cost model: negative or not finite "
                                       "value");
   }

   pthread_mutex_lock(&ctx->lock);
   int ret = 0;
   if (ctx->region_count)
      ret = cohmap_errorf(-EBUSY, "cost model: the context has %zu regions",
                          ctx->region_count);
   else
      ctx->policy.model = *model;
   pthread_mutex_unlock(&ctx->lock);
   return ret;
}

void
cohmap_context_get_cost_model(const struct cohmap_context *ctx,
                              struct cohmap_cost_model *out)
{
   *out = ctx->policy.model;
}
