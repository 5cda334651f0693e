/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: regions, the byte-exact refinement and method switches
 *
 * A region is memory plus one engine (struct cohmap_track_ops).  The
 * engine reports candidate ranges; this file turns them into the result:
 *
 *  - Without a snapshot the candidates are the result (page granular for
 *    scan and fault, the whole region for full), and the caller copies
 *    from the live memory after collect returned.
 *  - With a snapshot (compare always, any method with
 *    COHMAP_REGION_BYTE_EXACT) each candidate range is diffed against the
 *    snapshot; differing byte runs are copied into the snapshot and
 *    reported, and the caller copies from the snapshot.
 *
 * Why copy from the snapshot: a store racing with the diff may land after
 * the run was found.  If the caller copied from live memory, the device
 * could receive a newer value than the snapshot holds; should the byte
 * then be written back to the snapshot's value, live == snapshot and the
 * byte would never be reported again while the device keeps the wrong
 * value.  Copying from the snapshot keeps device == snapshot for every
 * reported byte, and any later difference between memory and snapshot is
 * found by the next diff of that page (the engine reports the page because
 * the store came after its re-arm).
 *
 * Snapshot invariant: a byte where memory and snapshot differ has been
 * written since it was last reported, so the engine will offer it again.
 *
 * Switching methods (cohmap_region_set_method(), or an engine giving up)
 * follows vmwgfx: arm the new engine first, then collect the old one, then
 * detach it.  Stores after the arm are the new engine's; stores before it
 * are in the old engine's final collect, which is kept in `carry` and
 * reported whole by the next collect.  If the switch creates the snapshot
 * (the old method had none), it holds current memory, so the carried
 * ranges cannot be refined against it and are reported as they are.
 *
 * Adaptive regions (COHMAP_METHOD_AUTO under the policy, policy.c) switch
 * the same way.  At the end of each collect, under the region lock, this
 * file tells the policy what the collect reported and lets it decide the
 * method for the next one.  Deciding there rather than when the next
 * collect starts arms the new method before the application's next
 * stores: a region turning dense on scan pays a fault per page for every
 * period it stays (200 ms for 16 MiB here, against 1 ms on full).  The
 * switch then collects the old method a second time, for the few stores
 * since its collect, into the carry; the result already built keeps its
 * data, because a snapshot the switch drops stays mapped, as the spare,
 * until the next collect.
 */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "track/track_priv.h"
#include "util/log.h"
#include "util/time.h"
#include "util/tsan.h"

/* Regions larger than this are refused: 128 TiB is the x86-64 user
 * address space, anything larger is a corrupted size. */
#define REGION_MAX_SIZE (1ull << 47)

/*
 * Live-handle registry: every public entry point checks that its region
 * pointer is live, so a double destroy or a collect after destroy gives
 * -EBADF instead of a use-after-free.  A tree keyed on the pointer; one
 * mutex (uncontended in practice: a lookup per call).
 */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static void *registry_root;

static int
ptr_cmp(const void *a, const void *b)
{
   uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;

   return (x > y) - (x < y);
}

static bool
registry_contains(const struct cohmap_region *r)
{
   pthread_mutex_lock(&registry_lock);
   bool found = r && tfind(r, &registry_root, ptr_cmp) != NULL;
   pthread_mutex_unlock(&registry_lock);
   return found;
}

/*
 * Two regions on the same memory would share the page-granular state the
 * kernel keeps (one write-protect bit, one protection), so whichever
 * collected first would re-arm the other's pages and its writes would be
 * lost.  Wraps are therefore checked against every live region of the
 * process, under wrap_lock so that two concurrent wraps of the same memory
 * cannot both pass.  Regions detached because their memory was unmapped do
 * not count: that address range may now hold new memory.
 */
static pthread_mutex_t wrap_lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t overlap_start, overlap_end;
static const struct cohmap_region *overlap_found;

static void
overlap_visit(const void *node, VISIT which, void *closure)
{
   const struct cohmap_region *r = *(const struct cohmap_region *const *)node;
   (void)closure;
   if (which != postorder && which != leaf)
      return;
   uintptr_t s = (uintptr_t)r->ptr, e = s + r->size;
   if (!overlap_found && s < overlap_end && overlap_start < e &&
       !r->detached)
      overlap_found = r;
}

/* Caller holds wrap_lock. */
static const struct cohmap_region *
registry_find_overlap(const void *ptr, size_t size)
{
   pthread_mutex_lock(&registry_lock);
   overlap_start = (uintptr_t)ptr;
   overlap_end = overlap_start + size;
   overlap_found = NULL;
   twalk_r(registry_root, overlap_visit, NULL);
   const struct cohmap_region *r = overlap_found;
   pthread_mutex_unlock(&registry_lock);
   return r;
}

static int
registry_add(struct cohmap_region *r)
{
   pthread_mutex_lock(&registry_lock);
   void *node = tsearch(r, &registry_root, ptr_cmp);
   pthread_mutex_unlock(&registry_lock);
   return node ? 0 : -ENOMEM;
}

static bool
registry_remove(struct cohmap_region *r)
{
   pthread_mutex_lock(&registry_lock);
   bool found = tfind(r, &registry_root, ptr_cmp) != NULL;
   if (found)
      tdelete(r, &registry_root, ptr_cmp);
   pthread_mutex_unlock(&registry_lock);
   return found;
}

static bool
needs_snapshot(const struct cohmap_region *r,
               const struct cohmap_track_ops *ops)
{
   return (r->flags & COHMAP_REGION_BYTE_EXACT) ||
          (ops->features & COHMAP_TRACK_NEEDS_SNAPSHOT);
}

static int
snapshot_create(struct cohmap_region *r, bool copy)
{
   /* MAP_POPULATE when every page is about to be written: the kernel
    * fills the pages in one call instead of one user-mode fault per page
    * during the copy, which on a VM is 10-35 µs a page against about 1 µs
    * (8-10 ms against 0.2 ms for 1 MiB here).  That is most of what a
    * switch to compare costs. */
   int populate = copy ? MAP_POPULATE : 0;
   void *s = r->spare;
   r->spare = NULL;
   if (!s)
      s = mmap(NULL, r->size, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | populate, -1, 0);
   if (s == MAP_FAILED)
      return cohmap_errorf(-ENOMEM, "snapshot of %zu bytes: out of memory",
                           r->size);
   if (copy) {
      COHMAP_APP_MEMORY_READ_BEGIN();
      memcpy(s, r->ptr, r->size);
      COHMAP_APP_MEMORY_READ_END();
   }
   r->snapshot = s;
   return 0;
}

static void
snapshot_destroy(struct cohmap_region *r)
{
   if (r->snapshot)
      munmap(r->snapshot, r->size);
   r->snapshot = NULL;
}

/* Adaptive regions up to this size keep a dropped snapshot's pages
 * (cohmap_region_collect()). */
#define SPARE_KEEP_BYTES ((size_t)16 << 20)

static void
spare_destroy(struct cohmap_region *r)
{
   if (r->spare)
      munmap(r->spare, r->size);
   r->spare = NULL;
}

/*
 * Regions that are not BYTE_EXACT report changed bytes by aligned
 * REFINE_CHUNK-byte chunks.  Random data equals its old value in one byte
 * of 256, so an exact diff of a rewritten megabyte is ~4000 ranges, each
 * an upload call for the winsys, and finding exact run boundaries costs a
 * branch per byte: compare cost 25 times full's upload of the whole
 * megabyte that way (cohmap bench, sequential 1 MiB 100 %).  A chunk's
 * unchanged bytes equal the snapshot, so uploading them is harmless where
 * the device cannot have changed them; only BYTE_EXACT regions (whose
 * device may hold GPU writes) need exact runs.
 */
#define REFINE_CHUNK 64

/* Whether the REFINE_CHUNK bytes at a and b are equal: word XORs or-ed
 * together, no branch per word (vectorized by the compiler). */
static bool
chunk_equal(const uint8_t *a, const uint8_t *b)
{
   uint64_t acc = 0;

   for (size_t k = 0; k < REFINE_CHUNK; k += 8) {
      uint64_t x, y;
      memcpy(&x, a + k, 8);
      memcpy(&y, b + k, 8);
      acc |= x ^ y;
   }
   return acc == 0;
}

/* Appends [start, end) to out and, with copy, copies it into the
 * snapshot. */
static int
close_run(struct cohmap_region *r, size_t start, size_t end, bool copy,
          struct cohmap_ranges *out)
{
   if (copy)
      memcpy(r->snapshot + start, r->ptr + start, end - start);
   return cohmap_ranges_add(out, start, end - start);
}

/*
 * Diffs [off, off + len) of memory against the snapshot, copies each
 * differing run into the snapshot and appends it to out.  In a BYTE_EXACT
 * region runs are exact: a byte equal to the snapshot is never reported,
 * which is what lets a three-way merge keep bytes the device wrote next to
 * bytes the CPU wrote.  Elsewhere runs are whole REFINE_CHUNK chunks
 * (aligned to the region's start).
 *
 * Without copy the snapshot is left alone: a switch finds the runs it
 * carries to the next collect that way (region_switch()).
 */
static int
refine_range_diff(struct cohmap_region *r, size_t off, size_t len, bool copy,
                  struct cohmap_ranges *out)
{
   /* Skip equal data a block at a time with memcmp (vectorized in libc);
    * find run boundaries inside differing blocks. */
   enum { BLOCK = 256 };
   const uint8_t *mem = r->ptr, *snap = r->snapshot;
   bool exact = r->flags & COHMAP_REGION_BYTE_EXACT;
   size_t end = off + len;
   size_t run_start = 0;
   bool in_run = false;
   int ret;

   if (!exact) {
      /* Whole chunks: widen to chunk boundaries inside the region. */
      size_t chunk_end = (end + REFINE_CHUNK - 1) / REFINE_CHUNK * REFINE_CHUNK;
      off = off / REFINE_CHUNK * REFINE_CHUNK;
      end = chunk_end < r->size ? chunk_end : r->size;
   }

   for (size_t blk = off; blk < end; blk += BLOCK) {
      size_t blen = end - blk < BLOCK ? end - blk : BLOCK;
      if (!in_run && memcmp(mem + blk, snap + blk, blen) == 0)
         continue;

      if (!exact) {
         for (size_t c = blk; c < blk + blen; c += REFINE_CHUNK) {
            size_t n = blk + blen - c;
            bool equal = n >= REFINE_CHUNK
                            ? chunk_equal(mem + c, snap + c)
                            : memcmp(mem + c, snap + c, n) == 0;
            if (!equal && !in_run) {
               run_start = c;
               in_run = true;
            } else if (equal && in_run) {
               ret = close_run(r, run_start, c, copy, out);
               if (ret)
                  return ret;
               in_run = false;
            }
         }
         continue;
      }

      for (size_t i = blk; i < blk + blen;) {
         if (i % 8 == 0 && i + 8 <= blk + blen) {
            uint64_t a, b;
            memcpy(&a, mem + i, 8);
            memcpy(&b, snap + i, 8);
            uint64_t x = a ^ b;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
            x = __builtin_bswap64(x); /* byte k of x: mem[i + k] */
#endif
            /* Bit 7 of each byte of eq is set where x's byte is zero
             * (memory equals the snapshot), exactly: no carry crosses a
             * byte.  Byte k (bits 8k..8k+7) is mem[i + k]. */
            const uint64_t low7 = 0x7f7f7f7f7f7f7f7full;
            const uint64_t high = ~low7;
            uint64_t eq = ~(((x & low7) + low7) | x | low7);
            /* The word neither starts nor ends a run: skip it. */
            if (eq == (in_run ? 0 : high)) {
               i += 8;
               continue;
            }
            /* Each change of state inside the word is the lowest set bit
             * of the bytes in the other state, from the last change on. */
            for (unsigned k = 0; k < 8;) {
               uint64_t other = (in_run ? eq : ~eq & high) >> (8 * k);
               if (!other)
                  break;
               k += (unsigned)__builtin_ctzll(other) / 8;
               if (in_run) {
                  ret = close_run(r, run_start, i + k, copy, out);
                  if (ret)
                     return ret;
               } else {
                  run_start = i + k;
               }
               in_run = !in_run;
               k++;
            }
            i += 8;
            continue;
         }
         bool differs = mem[i] != snap[i];
         if (differs && !in_run) {
            run_start = i;
            in_run = true;
         } else if (!differs && in_run) {
            ret = close_run(r, run_start, i, copy, out);
            if (ret)
               return ret;
            in_run = false;
         }
         i++;
      }
   }
   if (in_run)
      return close_run(r, run_start, end, copy, out);
   return 0;
}

/* Reads application memory that other threads may be storing to: the race
 * cohmap.h allows (util/tsan.h). */
static int
refine_range(struct cohmap_region *r, size_t off, size_t len, bool copy,
             struct cohmap_ranges *out)
{
   COHMAP_APP_MEMORY_READ_BEGIN();
   int ret = refine_range_diff(r, off, len, copy, out);
   COHMAP_APP_MEMORY_READ_END();
   return ret;
}

/* The method a failing or unavailable method falls back to. */
static const struct cohmap_track_ops *
fallback_ops(const struct cohmap_context *ctx, enum cohmap_method failed)
{
   static const enum cohmap_method order[] = {
      COHMAP_METHOD_SCAN,
      COHMAP_METHOD_COMPARE,
      COHMAP_METHOD_FULL,
   };

   if (ctx->auto_method != failed && ctx->method_status[ctx->auto_method] == 0)
      return cohmap_track_ops_for(ctx->auto_method);
   for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
      if (order[i] != failed && ctx->method_status[order[i]] == 0)
         return cohmap_track_ops_for(order[i]);
   }
   return &cohmap_track_full_ops;
}

/* Arms `to` on r, creating the snapshot it needs.  *created tells whether
 * the snapshot was created now (it then equals current memory). */
static int
engine_attach(struct cohmap_region *r, const struct cohmap_track_ops *to,
              bool *created)
{
   *created = false;
   if (needs_snapshot(r, to) && !r->snapshot) {
      int ret = snapshot_create(r, true);
      if (ret)
         return ret;
      *created = true;
   }
   int ret = to->attach(r);
   if (ret && *created) {
      snapshot_destroy(r);
      *created = false;
   }
   return ret;
}

/*
 * Moves r from its engine to `to`.  old_pages holds the old engine's final
 * ranges (already collected by the caller) or is NULL to collect them
 * here; they end up in r->carry (refined first if the old snapshot
 * survives).  Nothing is lost on any path.
 */
static int
region_switch(struct cohmap_region *r, const struct cohmap_track_ops *to,
              struct cohmap_ranges *old_pages)
{
   const struct cohmap_track_ops *from = r->ops;
   bool from_blind = from == &cohmap_track_full_ops && !r->snapshot;
   bool created;
   int ret;

   ret = engine_attach(r, to, &created);
   if (ret)
      return ret;

   struct cohmap_ranges pages;
   cohmap_ranges_init(&pages);
   if (!old_pages) {
      old_pages = &pages;
      if (from->collect(r, old_pages) < 0)
         r->lost_tracking = true;
   }

   /* Refine against a snapshot that predates the switch; one created by
    * the switch already holds these stores.  The runs are only found
    * here, not copied into the snapshot: build_result() copies the carry
    * when it reports it.  Until then the snapshot must stay what the
    * device was last given, because a three-way merge in between
    * (cohmap_region_merge()) reads "memory == snapshot" as "the CPU did
    * not write this" and would replace these stores with the device's
    * stale bytes (tests/gl/test-merge-after-switch.c). */
   if (r->snapshot && !created) {
      for (size_t i = 0; i < old_pages->count && !r->report_whole; i++) {
         if (refine_range(r, old_pages->v[i].offset, old_pages->v[i].length,
                          false, &r->carry))
            r->report_whole = true;
      }
   } else if (cohmap_ranges_add_all(&r->carry, old_pages)) {
      r->report_whole = true;
   }
   cohmap_ranges_fini(&pages);

   from->detach(r);
   /* Stores the old engine lost (or its late pages it could not carry)
    * are already in a snapshot the switch created. */
   if (created && r->lost_tracking)
      r->report_whole = true;
   if (r->snapshot && !needs_snapshot(r, to)) {
      /* An adaptive region keeps the pages: the result of the collect
       * that switched may point into them, and on full the policy will
       * probe into compare.  collect() frees them otherwise. */
      if (r->policy.adaptive) {
         spare_destroy(r);
         r->spare = r->snapshot;
         r->snapshot = NULL;
      } else {
         snapshot_destroy(r);
      }
   }

   cohmap_info("region %p: %s -> %s", (void *)r, from->name, to->name);
   r->ops = to;
   r->engine_failed = false;
   r->stats.method_switches++;
   cohmap_policy_switched(&r->policy, from_blind);
   return 0;
}

/* The methods the policy may use for r now. */
static uint32_t
policy_allowed(const struct cohmap_region *r)
{
   uint32_t allowed = 0;

   for (unsigned m = COHMAP_METHOD_SCAN; m < COHMAP_METHOD_COUNT; m++) {
      if (r->ctx->method_status[m] != 0 ||
          (r->policy.failed & COHMAP_METHOD_BIT(m)))
         continue;
      /* Not transparent to kernel writes: only where promised. */
      if (m == COHMAP_METHOD_FAULT && !r->policy.allow_fault)
         continue;
      allowed |= COHMAP_METHOD_BIT(m);
   }
   return allowed;
}

static void
policy_input(const struct cohmap_region *r, struct cohmap_policy_input *in)
{
   in->size = r->size;
   in->page_size = r->ctx->page_size;
   in->snapshot = r->flags & COHMAP_REGION_BYTE_EXACT;
   in->spare = r->spare != NULL;
   in->sampled = r->sample != NULL;
   in->current = r->ops ? r->ops->method : COHMAP_METHOD_AUTO;
   in->allowed = policy_allowed(r);
}

/* "scan 2.6 µs, compare 21.0 µs, full 20.1 µs" for the allowed ones. */
static const char *
format_costs(const double cost[COHMAP_METHOD_COUNT], char *buf, size_t size)
{
   size_t len = 0;

   buf[0] = '\0';
   for (unsigned m = COHMAP_METHOD_SCAN; m < COHMAP_METHOD_COUNT; m++) {
      if (!(cost[m] < INFINITY) || len >= size)
         continue;
      int n = snprintf(buf + len, size - len, "%s%s %.1f µs", len ? ", " : "",
                       cohmap_method_name(m), cost[m] / 1e3);
      if (n > 0)
         len += (size_t)n;
   }
   return buf;
}

/* At the end of an adaptive region's collect: switch if the policy says
 * so, for the stores from now on. */
static void
policy_decide(struct cohmap_region *r)
{
   struct cohmap_policy_state *ps = &r->policy;
   struct cohmap_policy_input in;
   struct cohmap_policy_decision dec;
   char costs[160];

   if (!ps->adaptive)
      return;
   policy_input(r, &in);
   cohmap_policy_decide(ps, &r->ctx->policy, &in, &dec);
   if (dec.method == in.current)
      return;

   cohmap_info("region %p: policy: %s -> %s%s at %.1f dirty pages and %.0f "
               "bytes per collect; predicted %s",
               (void *)r, cohmap_method_name(in.current),
               cohmap_method_name(dec.method), dec.probe ? " (probe)" : "",
               dec.dirty_pages, dec.dirty_bytes,
               format_costs(dec.cost, costs, sizeof(costs)));
   if (region_switch(r, cohmap_track_ops_for(dec.method), NULL) != 0) {
      cohmap_info("region %p: policy: %s failed (%s); not used for this "
                  "region again", (void *)r, cohmap_method_name(dec.method),
                  cohmap_error_message());
      ps->failed |= COHMAP_METHOD_BIT(dec.method);
      return;
   }
   if (dec.probe)
      cohmap_policy_probe_started(ps);
}

/* Distinct pages touched by ascending ranges.  (cohmap_ranges_pages()
 * counts a page once per range, which for compare's exact runs, several
 * to a page, would multiply the dirty estimate.) */
static size_t
distinct_pages(const struct cohmap_ranges *v, size_t page_size)
{
   size_t pages = 0, next = 0; /* first page not counted yet */

   for (size_t i = 0; i < v->count; i++) {
      size_t first = v->v[i].offset / page_size;
      size_t last = (v->v[i].offset + v->v[i].length - 1) / page_size;
      if (first < next)
         first = next;
      if (last >= first)
         pages += last - first + 1;
      if (last + 1 > next)
         next = last + 1;
   }
   return pages;
}

/* Sampled pages: one in SAMPLE_DIVISOR, at least SAMPLE_MIN but never
 * more than one in SAMPLE_MIN_DIVISOR, at most SAMPLE_MAX.  Comparing and
 * copying one page in 16 costs about 6 % of full's upload of the region;
 * 1024 pages (4 MiB) bound it for huge regions, where 1024 samples still
 * tell a region dirty at the scan/full crossover (about 2-3 % of 256 MiB
 * here) from an idle one.  Small regions: 16 samples of a 64 KiB region
 * were all of it, a compare pass on top of full's copy (auto on full
 * 13.7-15.5 µs against full's 12.2 in `cohmap bench --sizes 64K`); one
 * page in 4 keeps the estimate in quarters for a quarter of that. */
#define SAMPLE_DIVISOR     16
#define SAMPLE_MIN         16
#define SAMPLE_MIN_DIVISOR 4
#define SAMPLE_MAX         1024

static bool
wants_sample(const struct cohmap_region *r)
{
   return r->policy.adaptive && r->ops == &cohmap_track_full_ops &&
          !r->snapshot;
}

static void
sample_destroy(struct cohmap_region *r)
{
   free(r->sample);
   r->sample = NULL;
   r->sample_pages = 0;
}

/* Copies the sampled pages of r; false without memory (the policy then
 * probes instead). */
static bool
sample_create(struct cohmap_region *r)
{
   size_t n = r->npages, ps = r->ctx->page_size;
   size_t k = n / SAMPLE_DIVISOR;

   if (k < SAMPLE_MIN) {
      k = SAMPLE_MIN;
      if (k > n / SAMPLE_MIN_DIVISOR)
         k = n / SAMPLE_MIN_DIVISOR;
      if (k == 0)
         k = 1;
   }
   if (k > SAMPLE_MAX)
      k = SAMPLE_MAX;
   r->sample = malloc(k * ps);
   if (!r->sample)
      return false;
   r->sample_pages = k;
   r->sample_stride = n / k;
   COHMAP_APP_MEMORY_READ_BEGIN(); /* util/tsan.h */
   for (size_t i = 0; i < k; i++)
      memcpy(r->sample + i * ps, r->ptr + i * r->sample_stride * ps, ps);
   COHMAP_APP_MEMORY_READ_END();
   return true;
}

/* Sampled pages that changed since the last count, refreshing them. */
static size_t
sample_count_changed(struct cohmap_region *r)
{
   size_t ps = r->ctx->page_size, changed = 0;

   COHMAP_APP_MEMORY_READ_BEGIN(); /* util/tsan.h */
   for (size_t i = 0; i < r->sample_pages; i++) {
      uint8_t *copy = r->sample + i * ps;
      const uint8_t *page = r->ptr + i * r->sample_stride * ps;
      if (memcmp(copy, page, ps) != 0) {
         memcpy(copy, page, ps);
         changed++;
      }
   }
   COHMAP_APP_MEMORY_READ_END();
   return changed;
}

/* After a collect of r: what it tells the policy.  whole: the result is
 * the whole region for a reason other than stores (INITIAL_DIRTY, lost
 * tracking, an engine giving up). */
static void
policy_after_collect(struct cohmap_region *r, bool whole, size_t bytes)
{
   struct cohmap_policy_state *ps = &r->policy;

   if (!ps->adaptive) {
      ps->switched = false;
      return;
   }
   bool blind = r->ops == &cohmap_track_full_ops && !r->snapshot;
   bool paged = r->ops->features & COHMAP_TRACK_PAGE_GRANULAR;
   double pages = 0;
   bool own = false;
   if (blind && r->sample) {
      /* The samples say how much of the region this period's stores
       * changed. */
      pages = (double)sample_count_changed(r) * (double)r->npages /
              (double)r->sample_pages;
      blind = false;
      own = true;
   } else if (blind || whole) {
      /* Nothing to count. */
   } else if (paged && !r->snapshot) {
      /* The engine's own pages: exactly this period's stores, even when
       * the result also holds a switch's carry (a probe leaving full
       * carries the whole region). */
      pages = distinct_pages(&r->pages, r->ctx->page_size);
      own = true;
   } else {
      pages = distinct_pages(&r->result, r->ctx->page_size);
      /* Page-granular engines pay per page stored to, even where the
       * refinement finds no byte changed. */
      if (paged) {
         size_t engine = distinct_pages(&r->pages, r->ctx->page_size);
         if (engine > pages)
            pages = engine;
      }
   }
   cohmap_policy_observe(ps, whole, blind, r->snapshot != NULL, own,
                         pages, (double)bytes);
   policy_decide(r);

   /* Samples start (as of now) when the region is on full, and go when it
    * leaves. */
   if (wants_sample(r)) {
      if (!r->sample)
         sample_create(r);
   } else if (r->sample) {
      sample_destroy(r);
   }
}

/* Attaches the policy's first choice for a new adaptive region, trying
 * the next cheapest where one fails (scan on memory another userfaultfd
 * owns). */
static int
policy_attach_initial(struct cohmap_region *r,
                      const struct cohmap_track_ops **ops)
{
   int ret = 0;

   for (unsigned tries = 0; tries < COHMAP_METHOD_COUNT; tries++) {
      struct cohmap_policy_input in;
      policy_input(r, &in);
      if (!in.allowed)
         break;
      enum cohmap_method m = cohmap_policy_initial(&r->ctx->policy, &in);
      const struct cohmap_track_ops *to = cohmap_track_ops_for(m);
      bool created;
      ret = engine_attach(r, to, &created);
      if (ret == 0) {
         *ops = to;
         return 0;
      }
      cohmap_info("region %p: policy: %s failed (%s), trying another",
                  (void *)r, to->name, cohmap_error_message());
      r->policy.failed |= COHMAP_METHOD_BIT(m);
   }
   return ret ? ret : cohmap_errorf(-EINVAL, "no tracking method available");
}

static int
resolve_method(struct cohmap_context *ctx, enum cohmap_method m,
               uint32_t flags, const struct cohmap_track_ops **ops)
{
   if ((unsigned)m >= COHMAP_METHOD_COUNT)
      return cohmap_errorf(-EINVAL, "unknown method %d", (int)m);
   if (m == COHMAP_METHOD_AUTO)
      m = ctx->auto_method;
   if (ctx->method_status[m] != 0) {
      if (!(flags & COHMAP_REGION_FALLBACK))
         return cohmap_errorf(ctx->method_status[m],
                              "method %s unavailable: %s",
                              cohmap_method_name(m), ctx->method_reason[m]);
      *ops = fallback_ops(ctx, m);
      return 0;
   }
   *ops = cohmap_track_ops_for(m);
   return 0;
}

#define REGION_KNOWN_FLAGS                                                 \
   (COHMAP_REGION_BYTE_EXACT | COHMAP_REGION_INITIAL_DIRTY |               \
    COHMAP_REGION_ALLOW_THP | COHMAP_REGION_FALLBACK |                     \
    COHMAP_REGION_CPU_STORES_ONLY)

static int
region_init(struct cohmap_context *ctx, uint8_t *ptr, size_t size,
            bool owned, enum cohmap_method method, uint32_t flags,
            struct cohmap_region **out)
{
   const struct cohmap_track_ops *ops = NULL;
   bool is_auto = method == COHMAP_METHOD_AUTO;
   bool adaptive = is_auto && ctx->policy.enabled;
   int ret = 0;
   if (!adaptive)
      ret = resolve_method(ctx, method, flags, &ops);
   if (ret)
      return ret;

   struct cohmap_region *r = calloc(1, sizeof(*r));
   if (!r)
      return cohmap_errorf(-ENOMEM, "out of memory");
   r->ctx = ctx;
   r->ptr = ptr;
   r->size = size;
   r->npages = size / ctx->page_size;
   r->flags = flags;
   r->owned = owned;
   cohmap_policy_state_init(&r->policy,
                            (flags & COHMAP_REGION_CPU_STORES_ONLY) ||
                               ctx->policy.allow_fault);
   r->policy.adaptive = adaptive;
   cohmap_ranges_init(&r->carry);
   cohmap_ranges_init(&r->pages);
   cohmap_ranges_init(&r->result);
   ret = pthread_mutex_init(&r->lock, NULL);
   if (ret) {
      free(r);
      return cohmap_errorf(-ret, "pthread_mutex_init failed");
   }

   /* The result always has room for one range, so reporting the whole
    * region (the answer to every lost-tracking case) cannot fail. */
   ret = cohmap_ranges_reserve(&r->result, 1);
   if (ret) {
      ret = cohmap_errorf(ret, "out of memory");
      goto fail;
   }

   bool created;
   if (adaptive)
      ret = policy_attach_initial(r, &ops);
   else
      ret = engine_attach(r, ops, &created);
   if (ret && !adaptive && (is_auto || (flags & COHMAP_REGION_FALLBACK))) {
      /* e.g. scan on memory another userfaultfd owns (-EBUSY) or on a
       * file mapping (-EINVAL): fall back rather than fail. */
      const struct cohmap_track_ops *fb = fallback_ops(ctx, ops->method);
      cohmap_info("region %p: %s failed (%s), using %s", (void *)r,
                  ops->name, cohmap_error_message(), fb->name);
      ops = fb;
      ret = engine_attach(r, ops, &created);
   }
   if (ret)
      goto fail;
   r->ops = ops;

   if (flags & COHMAP_REGION_INITIAL_DIRTY)
      r->report_whole = true;

   ret = registry_add(r);
   if (ret) {
      ret = cohmap_errorf(ret, "out of memory");
      ops->detach(r);
      snapshot_destroy(r);
      goto fail;
   }

   pthread_mutex_lock(&ctx->lock);
   r->next = ctx->regions;
   if (ctx->regions)
      ctx->regions->prev = r;
   ctx->regions = r;
   ctx->region_count++;
   pthread_mutex_unlock(&ctx->lock);

   cohmap_info("region %p: %zu bytes at %p, %s%s%s", (void *)r, size,
               (void *)ptr, ops->name, adaptive ? " (adaptive)" : "",
               owned ? "" : " (wrapped)");
   *out = r;
   return 0;

fail:
   cohmap_ranges_fini(&r->result);
   pthread_mutex_destroy(&r->lock);
   free(r);
   return ret;
}

COHMAP_EXPORT int
cohmap_region_create(struct cohmap_context *ctx, size_t size,
                     enum cohmap_method method, uint32_t flags,
                     struct cohmap_region **out)
{
   if (!ctx || !out)
      return cohmap_errorf(-EINVAL, "NULL context or out pointer");
   *out = NULL;
   if (size == 0)
      return cohmap_errorf(-EINVAL, "size is 0");
   if (flags & ~REGION_KNOWN_FLAGS)
      return cohmap_errorf(-EINVAL, "unknown region flags 0x%x",
                           flags & ~REGION_KNOWN_FLAGS);
   if (size > REGION_MAX_SIZE)
      return cohmap_errorf(-ENOMEM, "size %zu is larger than the address "
                           "space", size);

   size_t ps = ctx->page_size;
   size = (size + ps - 1) & ~(ps - 1);

   /* MAP_NORESERVE: a region's pages are committed when written, like
    * any buffer; a huge mostly-idle mapping should not fail up front. */
   uint8_t *ptr = mmap(NULL, size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
   if (ptr == MAP_FAILED)
      return cohmap_errorf(-ENOMEM, "mmap of %zu bytes failed", size);

   /* See docs/tracking.md, "THP": write-protecting a huge page means the
    * first store splits it (~26 µs) and only the 4 KiB page is reported
    * anyway; tracked memory gets no benefit from THP. */
   if (!(flags & COHMAP_REGION_ALLOW_THP))
      madvise(ptr, size, MADV_NOHUGEPAGE);

   int ret = region_init(ctx, ptr, size, true, method, flags, out);
   if (ret)
      munmap(ptr, size);
   return ret;
}

COHMAP_EXPORT int
cohmap_region_wrap(struct cohmap_context *ctx, void *ptr, size_t size,
                   enum cohmap_method method, uint32_t flags,
                   struct cohmap_region **out)
{
   if (!ctx || !out)
      return cohmap_errorf(-EINVAL, "NULL context or out pointer");
   *out = NULL;
   size_t ps = ctx->page_size;
   if (!ptr || ((uintptr_t)ptr & (ps - 1)))
      return cohmap_errorf(-EINVAL, "pointer %p is not page-aligned", ptr);
   if (size == 0 || (size & (ps - 1)))
      return cohmap_errorf(-EINVAL, "size %zu is not a non-zero multiple "
                           "of the page size", size);
   if (size > REGION_MAX_SIZE || (uintptr_t)ptr + size < (uintptr_t)ptr)
      return cohmap_errorf(-EINVAL, "range wraps around the address space");
   if (flags & ~REGION_KNOWN_FLAGS)
      return cohmap_errorf(-EINVAL, "unknown region flags 0x%x",
                           flags & ~REGION_KNOWN_FLAGS);
   /* msync(MS_ASYNC) is a cheap "is all of this mapped" test. */
   if (msync(ptr, size, MS_ASYNC) != 0)
      return cohmap_errorf(-EFAULT, "range %p+%zu is not mapped", ptr, size);

   pthread_mutex_lock(&wrap_lock);
   const struct cohmap_region *other = registry_find_overlap(ptr, size);
   int ret = other ? cohmap_errorf(-EBUSY, "range %p+%zu overlaps region "
                                   "%p (%p+%zu): memory can be tracked by "
                                   "one region only", ptr, size,
                                   (const void *)other,
                                   (const void *)other->ptr, other->size)
                   : region_init(ctx, ptr, size, false, method, flags, out);
   pthread_mutex_unlock(&wrap_lock);
   return ret;
}

COHMAP_EXPORT int
cohmap_region_destroy(struct cohmap_region *r)
{
   if (!r)
      return 0;
   if (!registry_remove(r))
      return cohmap_errorf(-EBADF, "%p is not a live region (destroyed "
                           "twice?)", (void *)r);

   struct cohmap_context *ctx = r->ctx;
   pthread_mutex_lock(&ctx->lock);
   if (r->prev)
      r->prev->next = r->next;
   else
      ctx->regions = r->next;
   if (r->next)
      r->next->prev = r->prev;
   ctx->region_count--;
   pthread_mutex_unlock(&ctx->lock);

   pthread_mutex_lock(&r->lock);
   if (!r->detached)
      r->ops->detach(r);
   if (ctx->debug & COHMAP_DEBUG_STATS) {
      fprintf(stderr,
              "cohmap: region %p: %zu bytes, %s, %" PRIu64 " collects, "
              "%" PRIu64 " pages / %" PRIu64 " bytes reported, %" PRIu64
              " faults, %" PRIu64 " scans, %" PRIu64 " switches, %.3f ms "
              "tracking\n",
              (void *)r, r->size, r->ops ? r->ops->name : "none",
              r->stats.collects, r->stats.pages_reported,
              r->stats.bytes_reported, r->stats.faults, r->stats.scans,
              r->stats.method_switches, r->stats.tracking_ns / 1e6);
   }
   snapshot_destroy(r);
   spare_destroy(r);
   sample_destroy(r);
   if (r->owned)
      munmap(r->ptr, r->size);
   cohmap_ranges_fini(&r->carry);
   cohmap_ranges_fini(&r->pages);
   cohmap_ranges_fini(&r->result);
   pthread_mutex_unlock(&r->lock);
   pthread_mutex_destroy(&r->lock);
   free(r);
   return 0;
}

COHMAP_EXPORT void *
cohmap_region_ptr(const struct cohmap_region *r)
{
   return registry_contains(r) ? r->ptr : NULL;
}

COHMAP_EXPORT size_t
cohmap_region_size(const struct cohmap_region *r)
{
   return registry_contains(r) ? r->size : 0;
}

COHMAP_EXPORT enum cohmap_method
cohmap_region_method(const struct cohmap_region *r)
{
   if (!registry_contains(r))
      return COHMAP_METHOD_AUTO;
   struct cohmap_region *m = (struct cohmap_region *)r;
   pthread_mutex_lock(&m->lock);
   enum cohmap_method method = r->ops->method;
   pthread_mutex_unlock(&m->lock);
   return method;
}

/* set_method(AUTO) on a context with the policy: the region is adaptive
 * from its next collect on; if it is on a method the policy may not use
 * (fault without the promise), it leaves it now. */
static int
policy_resume(struct cohmap_region *r)
{
   pthread_mutex_lock(&r->lock);
   uint64_t t0 = cohmap_now_ns();
   int ret = r->error;
   if (!ret) {
      struct cohmap_policy_input in;
      policy_input(r, &in);
      r->policy.adaptive = true;
      if (in.allowed && !(in.allowed & COHMAP_METHOD_BIT(in.current))) {
         struct cohmap_policy_decision dec;
         cohmap_policy_decide(&r->policy, &r->ctx->policy, &in, &dec);
         ret = region_switch(r, cohmap_track_ops_for(dec.method), NULL);
         if (ret)
            r->policy.failed |= COHMAP_METHOD_BIT(dec.method);
      }
   }
   r->stats.tracking_ns += cohmap_now_ns() - t0;
   pthread_mutex_unlock(&r->lock);
   return ret;
}

COHMAP_EXPORT int
cohmap_region_set_method(struct cohmap_region *r, enum cohmap_method method)
{
   if (!registry_contains(r))
      return cohmap_errorf(-EBADF, "%p is not a live region", (void *)r);
   if (method == COHMAP_METHOD_AUTO && r->ctx->policy.enabled)
      return policy_resume(r);

   const struct cohmap_track_ops *to;
   int ret = resolve_method(r->ctx, method, 0, &to);
   if (ret)
      return ret;

   pthread_mutex_lock(&r->lock);
   uint64_t t0 = cohmap_now_ns();
   if (r->error)
      ret = r->error;
   else if (to != r->ops)
      ret = region_switch(r, to, NULL);
   /* The caller chose: the policy stays out of it. */
   if (ret == 0) {
      r->policy.adaptive = false;
      spare_destroy(r);
      sample_destroy(r);
   }
   r->stats.tracking_ns += cohmap_now_ns() - t0;
   pthread_mutex_unlock(&r->lock);
   return ret;
}

/* Builds r->result from carried and engine ranges.  On -ENOMEM the
 * region falls back to reporting itself whole. */
static int
build_result(struct cohmap_region *r)
{
   struct cohmap_ranges *res = &r->result;
   int ret = 0;

   cohmap_ranges_clear(res);
   if (r->report_whole || (r->lost_tracking && !r->snapshot)) {
      /* Reserved at creation: cannot fail. */
      cohmap_ranges_add(res, 0, r->size);
      if (r->snapshot)
         memcpy(r->snapshot, r->ptr, r->size);
      r->report_whole = false;
      r->lost_tracking = false;
      cohmap_ranges_clear(&r->carry);
      return 0;
   }
   if (r->lost_tracking) {
      /* The snapshot is the last reported state: diff all of it. */
      cohmap_ranges_clear(&r->pages);
      ret = cohmap_ranges_add(&r->pages, 0, r->size);
      r->lost_tracking = false;
   }

   /* Carried ranges are reported whole; with a snapshot they are
    * copied into it first so that `data` holds them. */
   for (size_t i = 0; i < r->carry.count && !ret; i++) {
      const struct cohmap_range *c = &r->carry.v[i];
      if (r->snapshot) {
         COHMAP_APP_MEMORY_READ_BEGIN(); /* util/tsan.h */
         memcpy(r->snapshot + c->offset, r->ptr + c->offset, c->length);
         COHMAP_APP_MEMORY_READ_END();
      }
      ret = cohmap_ranges_add(res, c->offset, c->length);
   }
   for (size_t i = 0; i < r->pages.count && !ret; i++) {
      const struct cohmap_range *p = &r->pages.v[i];
      if (r->snapshot)
         ret = refine_range(r, p->offset, p->length, true, res);
      else
         ret = cohmap_ranges_add(res, p->offset, p->length);
   }
   if (ret) {
      /* The engine has re-armed: report everything rather than lose the
       * part that did not fit. */
      cohmap_ranges_clear(res);
      cohmap_ranges_add(res, 0, r->size);
      if (r->snapshot)
         memcpy(r->snapshot, r->ptr, r->size);
   } else if (r->carry.count) {
      cohmap_ranges_normalize(res);
   }
   cohmap_ranges_clear(&r->carry);
   return 0;
}

COHMAP_EXPORT int
cohmap_region_collect(struct cohmap_region *r, uint32_t flags,
                      struct cohmap_dirty *out)
{
   if (out)
      memset(out, 0, sizeof(*out));
   if (!registry_contains(r))
      return cohmap_errorf(-EBADF, "%p is not a live region", (void *)r);
   if (!out)
      return cohmap_errorf(-EINVAL, "out is NULL");
   if (flags)
      return cohmap_errorf(-EINVAL, "unknown collect flags 0x%x", flags);

   pthread_mutex_lock(&r->lock);
   uint64_t t0 = cohmap_now_ns();
   int ret = r->error;
   if (ret)
      goto out;

   /* Wrapped memory the caller unmapped: reading it would crash.  Stop
    * tracking now, while what is left of the range is still the caller's
    * memory: after this the region never touches the range again (a new
    * mapping may be placed there). */
   if (!r->owned && msync(r->ptr, r->size, MS_ASYNC) != 0) {
      ret = r->error = cohmap_errorf(-EFAULT, "wrapped memory %p+%zu was "
                                     "unmapped while tracked",
                                     (void *)r->ptr, r->size);
      r->ops->detach(r);
      r->detached = true;
      goto out;
   }

   /* The previous result, which the spare may have backed, is gone.  An
    * adaptive region keeps the pages while on full (its probes go to
    * compare), and up to SPARE_KEEP_BYTES whatever its method: then a
    * switch back to compare copies into present pages instead of
    * populating new ones, which on a VM costs 2-8 µs a page (0.5-2 ms per
    * MiB against 20-40 µs for the copy), and the policy may follow a
    * region between scan and compare at the price of the copy.  Larger
    * regions give the memory back. */
   if (r->spare && r->ops != &cohmap_track_full_ops &&
       !(r->policy.adaptive && r->size <= SPARE_KEEP_BYTES))
      spare_destroy(r);

   cohmap_ranges_clear(&r->pages);
   ret = r->ops->collect(r, &r->pages);
   if (ret == -EFAULT)
      r->error = ret;
   if (ret) {
      r->policy.switched = false;
      goto out;
   }

   bool whole = r->engine_failed || r->report_whole ||
                (r->lost_tracking && !r->snapshot);
   if (r->engine_failed) {
      /* The engine reported the whole region and cannot go on: arm a
       * fallback before the caller copies. */
      const struct cohmap_track_ops *to =
         fallback_ops(r->ctx, r->ops->method);
      r->policy.failed |= COHMAP_METHOD_BIT(r->ops->method);
      cohmap_info("region %p: %s gave up, moving to %s", (void *)r,
                  r->ops->name, to->name);
      int sret = region_switch(r, to, &r->pages);
      if (sret && to != &cohmap_track_compare_ops)
         sret = region_switch(r, &cohmap_track_compare_ops, &r->pages);
      if (sret) {
         /* Not even compare attaches (no memory for a snapshot): report
          * everything from now on. */
         r->ops->detach(r);
         r->ops = &cohmap_track_full_ops;
         r->engine_failed = false;
         r->lost_tracking = true;
         r->stats.method_switches++;
         cohmap_policy_switched(&r->policy, false);
      }
      cohmap_ranges_clear(&r->pages);
   }

   build_result(r);

   size_t bytes = cohmap_ranges_bytes(&r->result);
   size_t pages = cohmap_ranges_pages(&r->result, r->ctx->page_size);
   r->stats.collects++;
   r->stats.bytes_reported += bytes;
   r->stats.pages_reported += pages;

   out->ranges = r->result.v;
   out->count = r->result.count;
   out->bytes = bytes;
   out->data = r->snapshot ? r->snapshot : r->ptr;

   /* Last: the policy may switch for the next collect.  A snapshot the
    * switch drops stays mapped (the spare) until then.  One it creates
    * must become this result's data: it holds memory as of the switch,
    * after the engine's collect, so it covers every reported range, and
    * the caller copying from it keeps device == snapshot, which compare
    * relies on.  Copying from live memory instead could hand the device a
    * value newer than the snapshot; were the byte then stored back to the
    * snapshot's value, no diff would ever report it (see "Why copy from
    * the snapshot" above). */
   policy_after_collect(r, whole, bytes);
   if (out->data == r->ptr && r->snapshot)
      out->data = r->snapshot;
   if (r->ops == &cohmap_track_scan_ops)
      cohmap_scan_predict(r);

out:
   r->stats.tracking_ns += cohmap_now_ns() - t0;
   pthread_mutex_unlock(&r->lock);
   return ret;
}

COHMAP_EXPORT int
cohmap_region_get_stats(const struct cohmap_region *r,
                        struct cohmap_region_stats *out)
{
   if (!registry_contains(r))
      return cohmap_errorf(-EBADF, "%p is not a live region", (void *)r);
   if (!out)
      return cohmap_errorf(-EINVAL, "out is NULL");

   struct cohmap_region *m = (struct cohmap_region *)r;
   pthread_mutex_lock(&m->lock);
   *out = r->stats;
   out->faults += cohmap_fault_count(r);
   pthread_mutex_unlock(&m->lock);
   return 0;
}

int
cohmap_region_policy_estimate(struct cohmap_region *r,
                              struct cohmap_policy_estimate *out)
{
   if (!registry_contains(r))
      return cohmap_errorf(-EBADF, "%p is not a live region", (void *)r);
   if (!out)
      return cohmap_errorf(-EINVAL, "out is NULL");

   pthread_mutex_lock(&r->lock);
   const struct cohmap_policy_state *ps = &r->policy;
   struct cohmap_policy_input in;
   policy_input(r, &in);
   out->adaptive = ps->adaptive;
   out->method = in.current;
   out->dirty_pages = ps->have_estimate ? ps->dirty_pages : 0;
   out->bytes_per_page =
      ps->have_ratio ? ps->bytes_per_page : (double)r->ctx->page_size;
   out->probing = ps->probing;
   cohmap_policy_predict(&r->ctx->policy.model, r->size, in.page_size,
                         in.snapshot, out->dirty_pages,
                         out->dirty_pages * out->bytes_per_page, out->cost);
   for (unsigned m = 0; m < COHMAP_METHOD_COUNT; m++) {
      if (!(in.allowed & COHMAP_METHOD_BIT(m)))
         out->cost[m] = INFINITY;
   }
   pthread_mutex_unlock(&r->lock);
   return 0;
}

/* Stores dev's bytes into memory and snapshot where the device changed
 * them and the CPU did not, byte by byte: a wider store would also write
 * bytes the CPU may be storing to at this moment.  (Byte compare-and-swap
 * needs no more than GCC's and Clang's __atomic builtins, which every
 * target Mesa supports has for one byte.) */
static void
merge_bytes(uint8_t *mem, uint8_t *snap, const uint8_t *dev, size_t n,
            size_t *merged, size_t *conflicts)
{
   for (size_t i = 0; i < n; i++) {
      /* One read of the device byte: dev may be live device memory (the
       * Vulkan layer's driver mapping) that a later submission changes,
       * and memory and snapshot must get the same value. */
      uint8_t d = dev[i];
      if (d == snap[i])
         continue;
      /* Compare-and-swap, not a check then a store: another thread's
       * store landing between the two would be overwritten by the GPU's
       * older value, and "a merge never overwrites a CPU store" broken. */
      uint8_t expected = snap[i];
      if (__atomic_compare_exchange_n(&mem[i], &expected, d, false,
                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
         snap[i] = d;
         (*merged)++;
      } else {
         /* The CPU's store since the last upload wins, so memory keeps
          * it; but the device now holds d. Remember that, or a CPU that
          * stores the old value back would compare equal to the snapshot
          * and never be uploaded over the GPU's byte. */
         snap[i] = d;
         (*conflicts)++;
      }
   }
}

/* Bytes of x that are not zero. */
static unsigned
nonzero_bytes(uint64_t x)
{
   unsigned count = 0;
   for (; x; x >>= 8)
      count += (x & 0xff) != 0;
   return count;
}

/* merge_bytes() a word at a time where it can: where the CPU changed none
 * of a word's eight bytes, one 8-byte compare-and-swap stores the device's
 * word (an eighth of the atomics); a word the CPU touched, or that a store
 * races with, goes byte by byte. */
static void
merge_words(uint8_t *mem, uint8_t *snap, const uint8_t *dev, size_t n,
            size_t *merged, size_t *conflicts)
{
   /* The compare-and-swaps race with application stores on purpose (a
    * store is never overwritten); TSan would report them against the
    * application's plain stores (util/tsan.h). */
   COHMAP_APP_MEMORY_READ_BEGIN();
   size_t i = 0;
   while (i < n && ((uintptr_t)(mem + i) % 8)) {
      merge_bytes(mem + i, snap + i, dev + i, 1, merged, conflicts);
      i++;
   }
   for (; i + 8 <= n; i += 8) {
      uint64_t s, d;
      memcpy(&s, snap + i, 8);
      memcpy(&d, dev + i, 8);
      if (s == d)
         continue;
      uint64_t expected = s;
      uint64_t *word = (uint64_t *)(void *)(mem + i);
      if (__atomic_compare_exchange_n(word, &expected, d, false,
                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
         memcpy(snap + i, &d, 8);
         *merged += nonzero_bytes(s ^ d);
      } else {
         /* dev + i is read again there: copy the word read above so the
          * bytes agree with the word test. */
         uint8_t dw[8];
         memcpy(dw, &d, 8);
         merge_bytes(mem + i, snap + i, dw, 8, merged, conflicts);
      }
   }
   if (i < n)
      merge_bytes(mem + i, snap + i, dev + i, n - i, merged, conflicts);
   COHMAP_APP_MEMORY_READ_END();
}

int
cohmap_region_merge(struct cohmap_region *r, size_t offset, const void *dev,
                    size_t length, size_t *merged, size_t *conflicts)
{
   if (!registry_contains(r))
      return cohmap_errorf(-EBADF, "%p is not a live region", (void *)r);
   if (offset > r->size || length > r->size - offset)
      return cohmap_errorf(-EINVAL, "merge of %zu bytes at %zu is outside "
                           "the region (%zu bytes)", length, offset,
                           r->size);

   pthread_mutex_lock(&r->lock);
   int ret = r->error;
   /* Only a BYTE_EXACT region's snapshot is always what the device was
    * last given: a snapshot created by a method switch (other regions)
    * already holds stores not reported yet, which the rule would read as
    * "the CPU did not write this" and overwrite. */
   if (!ret && !(r->flags & COHMAP_REGION_BYTE_EXACT))
      ret = cohmap_errorf(-EINVAL, "merge needs a BYTE_EXACT region");
   if (!ret && !r->snapshot)
      ret = cohmap_errorf(-EINVAL, "merge needs a region with a snapshot");
   if (ret) {
      pthread_mutex_unlock(&r->lock);
      return ret;
   }

   /* The rule reads "memory == snapshot" as "the CPU did not write this
    * byte since the device was last given it".  That does not hold where
    * the snapshot is ahead of the device: while the whole region is due
    * (report_whole: INITIAL_DIRTY memory the device has never been given,
    * or a snapshot a switch created over unreported stores), and in the
    * carry (requeued ranges: reported and copied into the snapshot, but
    * their upload failed).  Those bytes go to the device at the next
    * collect; the CPU's value wins, as in a conflict. */
   if (r->report_whole) {
      pthread_mutex_unlock(&r->lock);
      return 0;
   }
   struct cohmap_ranges todo;
   cohmap_ranges_init(&todo);
   const struct cohmap_range whole = {offset, length};
   const struct cohmap_range *v = &whole;
   size_t count = 1;
   if (r->carry.count) {
      cohmap_ranges_normalize(&r->carry);
      if (cohmap_ranges_op(&whole, 1, r->carry.v, r->carry.count, false,
                           &todo)) {
         pthread_mutex_unlock(&r->lock);
         return cohmap_errorf(-ENOMEM, "merge: out of memory");
      }
      v = todo.v;
      count = todo.count;
   }

   uint64_t t0 = cohmap_now_ns();
   for (size_t k = 0; k < count; k++) {
      /* Skip what the device did not change a block at a time: usually
       * the device wrote a small part of what it may have written. */
      enum { BLOCK = 256 };
      const uint8_t *d = (const uint8_t *)dev + (v[k].offset - offset);
      uint8_t *mem = r->ptr + v[k].offset;
      uint8_t *snap = r->snapshot + v[k].offset;
      size_t len = v[k].length;
      for (size_t blk = 0; blk < len; blk += BLOCK) {
         size_t n = len - blk < BLOCK ? len - blk : BLOCK;
         if (memcmp(d + blk, snap + blk, n) != 0)
            merge_words(mem + blk, snap + blk, d + blk, n, merged,
                        conflicts);
      }
   }
   r->stats.tracking_ns += cohmap_now_ns() - t0;
   pthread_mutex_unlock(&r->lock);
   cohmap_ranges_fini(&todo);
   return 0;
}

int
cohmap_region_zero(struct cohmap_region *r, size_t offset, size_t length)
{
   if (!registry_contains(r))
      return cohmap_errorf(-EBADF, "%p is not a live region", (void *)r);
   if (offset > r->size || length > r->size - offset)
      return cohmap_errorf(-EINVAL, "zeroing %zu bytes at %zu is outside "
                           "the region (%zu bytes)", length, offset,
                           r->size);

   pthread_mutex_lock(&r->lock);
   int ret = r->error;
   if (!ret) {
      memset(r->ptr + offset, 0, length);
      if (r->snapshot)
         memset(r->snapshot + offset, 0, length);
   }
   pthread_mutex_unlock(&r->lock);
   return ret;
}

void
cohmap_region_release(struct cohmap_region *r)
{
   if (!registry_contains(r) || r->owned)
      return;
   /* wrap_lock: a wrap of these addresses either saw the region still
    * attached or sees it detached, never half of it. */
   pthread_mutex_lock(&wrap_lock);
   pthread_mutex_lock(&r->lock);
   if (!r->detached) {
      r->ops->detach(r);
      r->detached = true;
   }
   if (!r->error)
      r->error = -ENXIO;
   pthread_mutex_unlock(&r->lock);
   pthread_mutex_unlock(&wrap_lock);
}

int
cohmap_region_requeue(struct cohmap_region *r, const struct cohmap_range *v,
                      size_t count)
{
   if (!registry_contains(r))
      return cohmap_errorf(-EBADF, "%p is not a live region", (void *)r);

   pthread_mutex_lock(&r->lock);
   for (size_t i = 0; i < count && !r->report_whole; i++) {
      if (v[i].offset > r->size || v[i].length > r->size - v[i].offset ||
          cohmap_ranges_add(&r->carry, v[i].offset, v[i].length))
         r->report_whole = true;
   }
   pthread_mutex_unlock(&r->lock);
   return 0;
}
