/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: COHMAP_DEBUG=verify and COHMAP_DEBUG=stats for winsys devices
 *
 * verify is a safety net for users: after every flush of a coherent block
 * (each submission's upload, cohmap_device_flush_all()) it downloads the
 * block's live BOs from the device and compares them, and reports every
 * byte the device should have and has not.  It changes nothing else: it
 * only reads, under the block lock the flush already holds.
 *
 * What "should have" means needs care, because the CPU may store and the
 * GPU may write while the comparison runs.  Three copies of each byte: C
 * (the mapping, live), S (the region's snapshot, when it has one: compare,
 * and every GPU_WRITE BO) and D (the device's).
 *
 *  1. Bytes an unretired submission may write are skipped.  Each
 *     submission registers the ranges its commands write with their blocks
 *     before its upload (cohmap_verify_register()) and removes them when
 *     it is retired, after the merge, or refused.  Since registering takes
 *     the block lock, a submission not registered while verify holds it
 *     cannot have queued its commands yet.
 *  2. D ≠ S: reported at once.  S is exactly what was uploaded (uploads of
 *     regions with a snapshot copy from it, cohmap.h) or merged, and the
 *     block lock keeps both still; outside (1) nothing else writes D.
 *     Except what the region already owes the next collect: a policy
 *     switch at the end of a collect fills a new snapshot with memory as
 *     of the switch, and the stores between the engine's collect and the
 *     switch wait in the region's carry (and after a failed refine or a
 *     lost engine, report_whole / lost_tracking, nothing is owed
 *     exactly: no check).
 *  3. D ≠ C is not an error by itself: a store after the collect is
 *     legitimately not uploaded yet.  Such bytes become *suspects*.  At the
 *     block's next flush, a suspect that still differs and lies in no page
 *     the engine reported was not stored to since the first collect (the
 *     contract of scan, fault and full: every page stored to is reported
 *     by the next collect), so D had to equal C then: a missed store (an
 *     engine's blind spot, a lost page), reported.  Misses are therefore
 *     found one flush late, and a missed byte the application stores to
 *     again before the next flush is healed without a report.  The
 *     engine's own pages (the region's `pages`, before a snapshot narrows
 *     them to changed bytes) are what counts: a byte stored and stored
 *     back to the snapshot's value is legitimately not uploaded, and must
 *     not look like a miss.  compare is judged by (2) alone: its engine
 *     is that diff, it reports values, not stores.
 *
 * Only live BOs are compared (a destroyed BO's GPU writes are dropped, a
 * free slab slot is zeroed on both sides when reused).  Non-coherent BOs
 * are the application's to flush: after cohmap_bo_flush() the flushed
 * ranges are compared with the mapping (a store racing its own flush is
 * reported too); bytes it never flushed are not compared.
 *
 * stats prints, at cohmap_device_destroy(), the device's totals and one
 * line for each of the COHMAP_STATS_TOP_BOS most active coherent BOs (the
 * rest summed in one line).  BOs are freed before their device, so each
 * BO's figures are recorded when it is freed.  For a device that created
 * its context, the regions' own stats lines (region.c) are switched off:
 * the BO and total lines carry their figures.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "track/options.h"
#include "track/track_priv.h"
#include "util/log.h"
#include "util/tsan.h"
#include "winsys/winsys_priv.h"

/* Downloads for verify go through a bounded buffer. */
#define VERIFY_CHUNK (1u << 20)
/* At most this many verify lines per device: a corrupted BO would
 * otherwise print one per flush forever.  The counters go on. */
#define VERIFY_MAX_LINES 100
/* Bytes shown of the first difference. */
#define VERIFY_SHOW 8

struct cohmap_verify_block {
   /* Block offsets where D differed from C after the last flush (3). */
   struct cohmap_ranges suspects;
   /* Write sets of unretired submissions on this block (1). */
   struct cohmap_write_set **pending;
   size_t pending_count, pending_cap;
};

static struct cohmap_verify_block *
verify_state(struct cohmap_block *block)
{
   if (!block->verify) {
      block->verify = calloc(1, sizeof(*block->verify));
      if (block->verify)
         cohmap_ranges_init(&block->verify->suspects);
   }
   return block->verify;
}

void
cohmap_verify_block_free(struct cohmap_block *block)
{
   if (!block->verify)
      return;
   cohmap_ranges_fini(&block->verify->suspects);
   free(block->verify->pending);
   free(block->verify);
   block->verify = NULL;
}

static void
pending_remove(struct cohmap_block *block, struct cohmap_write_set *w)
{
   struct cohmap_verify_block *vb = block->verify;

   for (size_t i = 0; vb && i < vb->pending_count; i++) {
      if (vb->pending[i] == w) {
         vb->pending[i] = vb->pending[--vb->pending_count];
         return;
      }
   }
}

int
cohmap_verify_register(struct cohmap_inflight *f)
{
   size_t i;

   if (!f->write_count || !f->writes[0].bo->dev->verify)
      return 0;
   for (i = 0; i < f->write_count; i++) {
      struct cohmap_block *block = f->writes[i].bo->block;
      pthread_mutex_lock(&block->lock);
      struct cohmap_verify_block *vb = verify_state(block);
      if (vb && vb->pending_count == vb->pending_cap) {
         size_t cap = vb->pending_cap ? 2 * vb->pending_cap : 8;
         void *p = realloc(vb->pending, cap * sizeof(*vb->pending));
         if (p) {
            vb->pending = p;
            vb->pending_cap = cap;
         }
      }
      bool ok = vb && vb->pending_count < vb->pending_cap;
      if (ok)
         vb->pending[vb->pending_count++] = &f->writes[i];
      pthread_mutex_unlock(&block->lock);
      if (!ok)
         break;
   }
   if (i == f->write_count) {
      f->verify_registered = true;
      return 0;
   }
   while (i--) {
      struct cohmap_block *block = f->writes[i].bo->block;
      pthread_mutex_lock(&block->lock);
      pending_remove(block, &f->writes[i]);
      pthread_mutex_unlock(&block->lock);
   }
   return cohmap_errorf(-ENOMEM, "COHMAP_DEBUG=verify: out of memory");
}

void
cohmap_verify_unregister(struct cohmap_inflight *f)
{
   if (!f->verify_registered)
      return;
   for (size_t i = 0; i < f->write_count; i++) {
      struct cohmap_block *block = f->writes[i].bo->block;
      pthread_mutex_lock(&block->lock);
      pending_remove(block, &f->writes[i]);
      pthread_mutex_unlock(&block->lock);
   }
   f->verify_registered = false;
}

/* A compared part of a block: one live BO. */
struct span {
   struct cohmap_bo *bo;
   size_t start, end; /* block offsets */
};

static const char *
bo_kind(const struct cohmap_bo *bo)
{
   if (!bo->block->region)
      return "non-coherent";
   return bo->block->slab ? "coherent, in a slab" : "coherent";
}

/* Prints one verify line about the bytes of report inside sp, counts it.
 * Caller holds the block lock. */
static void
report_span(const struct span *sp, const struct cohmap_range *v, size_t n,
            const uint8_t *snapshot, const char *when)
{
   struct cohmap_bo *bo = sp->bo;
   struct cohmap_block *block = bo->block;
   struct cohmap_device *dev = bo->dev;
   size_t bytes = 0, runs = 0, first = SIZE_MAX;

   for (size_t i = 0; i < n; i++) {
      size_t lo = v[i].offset > sp->start ? v[i].offset : sp->start;
      size_t hi = v[i].offset + v[i].length < sp->end
                     ? v[i].offset + v[i].length
                     : sp->end;
      if (lo >= hi)
         continue;
      if (first == SIZE_MAX)
         first = lo;
      bytes += hi - lo;
      runs++;
   }
   if (!bytes)
      return;

   bo->verify_mismatches++;
   atomic_fetch_add(&dev->verify_mismatches, 1);
   unsigned line = atomic_fetch_add(&dev->verify_lines, 1);
   if (line > VERIFY_MAX_LINES)
      return;
   if (line == VERIFY_MAX_LINES) {
      fprintf(stderr,
              "cohmap: verify: device %p: more than %d reports; "
              "further ones are only counted (verify_mismatches)\n",
              (void *)dev, VERIFY_MAX_LINES);
      return;
   }

   uint8_t dv[VERIFY_SHOW];
   size_t show =
      sp->end - first < VERIFY_SHOW ? sp->end - first : VERIFY_SHOW;
   char cpu_hex[3 * VERIFY_SHOW + 1], dev_hex[3 * VERIFY_SHOW + 1];
   char snap_hex[3 * VERIFY_SHOW + 1] = "";
   cohmap_format_hex(cpu_hex, sizeof(cpu_hex), block->cpu + first, show);
   if (dev->ops->download(dev->backend, block->mem, first, show, dv) == 0)
      cohmap_format_hex(dev_hex, sizeof(dev_hex), dv, show);
   else
      snprintf(dev_hex, sizeof(dev_hex), "?");
   if (snapshot)
      cohmap_format_hex(snap_hex, sizeof(snap_hex), snapshot + first, show);
   enum cohmap_method m = block->region ? cohmap_region_method(block->region)
                                        : COHMAP_METHOD_AUTO;
   fprintf(stderr,
           "cohmap: verify: BO %p (%zu bytes, %s%s%s): %zu bytes in %zu "
           "runs differ from the device %s; first at offset %zu: cpu %s, "
           "device %s%s%s\n",
           (void *)bo, bo->size, bo_kind(bo), block->region ? ", " : "",
           block->region ? cohmap_method_name(m) : "", bytes, runs, when,
           first - bo->offset, cpu_hex, dev_hex,
           snapshot ? ", uploaded " : "", snap_hex);
}

/* The live BOs of a block, in offset order.  Caller holds the lock. */
static size_t
block_spans(struct cohmap_block *block, struct span **out)
{
   struct cohmap_slab *slab = block->slab;

   *out = NULL;
   if (!slab) {
      struct cohmap_bo *bo = block->bo;
      if (!bo || atomic_load(&bo->destroyed))
         return 0;
      struct span *s = malloc(sizeof(*s));
      if (!s)
         return SIZE_MAX;
      /* The whole mapping: a dedicated block is the BO's alone. */
      *s = (struct span){bo, 0, block->size};
      *out = s;
      return 1;
   }
   size_t n = 0;
   for (unsigned i = 0; i < slab->nslots; i++)
      n += slab->slots[i] && !atomic_load(&slab->slots[i]->destroyed);
   if (!n)
      return 0;
   struct span *s = malloc(n * sizeof(*s));
   if (!s)
      return SIZE_MAX;
   n = 0;
   for (unsigned i = 0; i < slab->nslots; i++) {
      struct cohmap_bo *bo = slab->slots[i];
      if (bo && !atomic_load(&bo->destroyed))
         s[n++] = (struct span){bo, bo->offset, bo->offset + bo->size};
   }
   *out = s;
   return n;
}

static void
verify_oom(struct cohmap_device *dev)
{
   static atomic_bool warned;
   if (!atomic_exchange(&warned, true))
      cohmap_warn("verify: out of memory; some flushes not verified");
   (void)dev;
}

void
cohmap_verify_flush(struct cohmap_block *block, const struct cohmap_dirty *d)
{
   struct cohmap_device *dev = block->dev;

   if (!dev->verify)
      return;
   struct cohmap_verify_block *vb = verify_state(block);
   struct span *spans = NULL;
   size_t nspans = vb ? block_spans(block, &spans) : SIZE_MAX;
   uint8_t *tmp = NULL;
   struct cohmap_ranges excl, diff_s, diff_c, t1, t2, report;
   int ret = 0;

   cohmap_ranges_init(&excl);
   cohmap_ranges_init(&diff_s);
   cohmap_ranges_init(&diff_c);
   cohmap_ranges_init(&t1);
   cohmap_ranges_init(&t2);
   cohmap_ranges_init(&report);
   if (nspans == SIZE_MAX)
      goto oom;

   /* Uploads of a region with a snapshot copy from it (cohmap.h). */
   const uint8_t *snapshot =
      d->data != (const void *)block->cpu ? (const uint8_t *)d->data : NULL;

   /* (1) what unretired submissions may write. */
   for (size_t i = 0; i < vb->pending_count && !ret; i++) {
      const struct cohmap_write_set *w = vb->pending[i];
      for (size_t j = 0; j < w->ranges.count && !ret; j++)
         ret = cohmap_ranges_add(&excl, w->bo->offset + w->ranges.v[j].offset,
                                 w->ranges.v[j].length);
   }
   cohmap_ranges_normalize(&excl);

   size_t chunk = VERIFY_CHUNK < block->size ? VERIFY_CHUNK : block->size;
   if (!ret && nspans && !(tmp = malloc(chunk)))
      ret = -ENOMEM;
   for (size_t i = 0; i < nspans && !ret; i++) {
      atomic_fetch_add(&dev->verify_checks, 1);
      for (size_t off = spans[i].start; off < spans[i].end && !ret;) {
         size_t n = spans[i].end - off < chunk ? spans[i].end - off : chunk;
         if (dev->ops->download(dev->backend, block->mem, off, n, tmp)) {
            /* Not the flush's problem; nothing can be said. */
            ret = -EIO;
            break;
         }
         if (snapshot)
            ret =
               cohmap_ranges_add_diff(&diff_s, off, tmp, snapshot + off, n);
         if (!ret) {
            /* The mapping, which the application may be storing to
             * (util/tsan.h). */
            COHMAP_APP_MEMORY_READ_BEGIN();
            ret =
               cohmap_ranges_add_diff(&diff_c, off, tmp, block->cpu + off, n);
            COHMAP_APP_MEMORY_READ_END();
         }
         off += n;
      }
   }
   if (ret == -EIO) {
      cohmap_ranges_clear(&vb->suspects);
      goto out;
   }
   /* diff_c less (1); diff_s less (1) and less what the region owes the
    * device (2). */
   struct cohmap_region *r = block->region;
   if (!ret && snapshot && !r->report_whole && !r->lost_tracking) {
      ret = cohmap_ranges_add_all(&t2, &excl);
      if (!ret)
         ret = cohmap_ranges_add_all(&t2, &r->carry);
      cohmap_ranges_normalize(&t2);
      if (!ret)
         ret = cohmap_ranges_op(diff_s.v, diff_s.count, t2.v, t2.count, false,
                                &t1);
      if (!ret)
         ret = cohmap_ranges_add_all(&report, &t1);
   }
   if (!ret)
      ret = cohmap_ranges_op(diff_c.v, diff_c.count, excl.v, excl.count,
                             false, &t2);
   /* (3) suspects of the last flush that still differ and that no store
    * since touched: outside what this collect reported and, when a
    * snapshot narrowed that, outside the pages the engine itself
    * reported (r->pages: its raw output, before the snapshot's diff). */
   if (!ret && vb->suspects.count) {
      cohmap_ranges_clear(&t1);
      ret = cohmap_ranges_add_all(&t1, &r->pages);
      for (size_t i = 0; i < d->count && !ret; i++)
         ret =
            cohmap_ranges_add(&t1, d->ranges[i].offset, d->ranges[i].length);
      cohmap_ranges_normalize(&t1);
      if (!ret)
         ret = cohmap_ranges_op(vb->suspects.v, vb->suspects.count, t1.v,
                                t1.count, false, &diff_s);
      if (!ret)
         ret = cohmap_ranges_op(t2.v, t2.count, diff_s.v, diff_s.count, true,
                                &diff_c);
      if (!ret)
         ret = cohmap_ranges_add_all(&report, &diff_c);
   }
   if (ret)
      goto oom;
   cohmap_ranges_normalize(&report);

   /* The next flush judges today's differences, if the engine that
    * tracks until then reports stores, not values: compare's diff does
    * not see a byte stored and stored back (nor need to), so what it
    * leaves out proves nothing; its uploads are checked by (2). */
   struct cohmap_ranges swap = vb->suspects;
   vb->suspects = t2;
   t2 = swap;
   if (cohmap_region_method(r) == COHMAP_METHOD_COMPARE)
      cohmap_ranges_clear(&vb->suspects);

   for (size_t i = 0; i < nspans && report.count; i++)
      report_span(&spans[i], report.v, report.count, snapshot,
                  "after a flush");
   goto out;

oom:
   if (vb)
      cohmap_ranges_clear(&vb->suspects);
   verify_oom(dev);
out:
   free(tmp);
   free(spans);
   cohmap_ranges_fini(&excl);
   cohmap_ranges_fini(&diff_s);
   cohmap_ranges_fini(&diff_c);
   cohmap_ranges_fini(&t1);
   cohmap_ranges_fini(&t2);
   cohmap_ranges_fini(&report);
}

void
cohmap_verify_explicit(struct cohmap_bo *bo,
                       const struct cohmap_ranges *ranges)
{
   struct cohmap_device *dev = bo->dev;
   struct cohmap_block *block = bo->block;

   if (!dev->verify || !ranges->count)
      return;
   size_t total = cohmap_ranges_bytes(ranges);
   size_t chunk = total < VERIFY_CHUNK ? total : VERIFY_CHUNK;
   uint8_t *tmp = malloc(chunk);
   struct cohmap_ranges diff;
   int ret = tmp ? 0 : -ENOMEM;

   cohmap_ranges_init(&diff);
   atomic_fetch_add(&dev->verify_checks, 1);
   for (size_t i = 0; i < ranges->count && !ret; i++) {
      size_t off = ranges->v[i].offset;
      size_t end = off + ranges->v[i].length;
      while (off < end && !ret) {
         size_t n = end - off < chunk ? end - off : chunk;
         if (dev->ops->download(dev->backend, block->mem, off, n, tmp)) {
            ret = -EIO;
            break;
         }
         ret = cohmap_ranges_add_diff(&diff, off, tmp, block->cpu + off, n);
         off += n;
      }
   }
   if (ret == -ENOMEM)
      verify_oom(dev);
   if (!ret && diff.count) {
      cohmap_ranges_normalize(&diff);
      struct span sp = {bo, bo->offset, bo->offset + bo->size};
      report_span(&sp, diff.v, diff.count, NULL, "after an explicit flush");
   }
   cohmap_ranges_fini(&diff);
   free(tmp);
}

/* --- COHMAP_DEBUG=stats ------------------------------------------------ */

static uint64_t
activity(const struct cohmap_bo_record *r)
{
   return r->stats.bytes_uploaded + r->stats.bytes_merged +
          r->stats.submissions;
}

static void
add_bo_stats(struct cohmap_bo_stats *sum, const struct cohmap_bo_stats *s)
{
   sum->submissions += s->submissions;
   sum->bytes_uploaded += s->bytes_uploaded;
   sum->bytes_merged += s->bytes_merged;
   sum->bytes_conflicted += s->bytes_conflicted;
}

static void
add_region_stats(struct cohmap_region_stats *sum,
                 const struct cohmap_region_stats *s)
{
   sum->collects += s->collects;
   sum->pages_reported += s->pages_reported;
   sum->bytes_reported += s->bytes_reported;
   sum->faults += s->faults;
   sum->scans += s->scans;
   sum->method_switches += s->method_switches;
   sum->tracking_ns += s->tracking_ns;
}

void
cohmap_stats_bo_freed(struct cohmap_bo *bo)
{
   struct cohmap_device *dev = bo->dev;
   struct cohmap_block *block = bo->block;
   struct cohmap_bo_record rec = {
      .bo = bo,
      .size = bo->size,
      .flags = bo->flags,
      .in_slab = block->slab != NULL,
      .method = COHMAP_METHOD_AUTO,
   };

   if (!dev->print_stats)
      return;
   pthread_mutex_lock(&block->lock);
   rec.stats = bo->stats;
   rec.verify_mismatches = bo->verify_mismatches;
   if (block->region) {
      rec.method = cohmap_region_method(block->region);
      if (!block->slab)
         rec.has_region =
            cohmap_region_get_stats(block->region, &rec.region) == 0;
   }
   pthread_mutex_unlock(&block->lock);

   pthread_mutex_lock(&dev->lock);
   struct cohmap_stats_log *log = &dev->stats_log;
   log->bos++;
   if (block->region) {
      log->coherent_bos++;
      log->slab_bos += rec.in_slab;
   }
   if (rec.has_region)
      add_region_stats(&log->regions, &rec.region);
   /* Only tracked BOs are listed; the others are in the totals. */
   if (block->region) {
      if (log->top_count < COHMAP_STATS_TOP_BOS) {
         log->top[log->top_count++] = rec;
      } else {
         size_t min = 0;
         for (size_t i = 1; i < log->top_count; i++) {
            if (activity(&log->top[i]) < activity(&log->top[min]))
               min = i;
         }
         struct cohmap_bo_record *out = &rec;
         if (activity(&rec) > activity(&log->top[min])) {
            struct cohmap_bo_record old = log->top[min];
            log->top[min] = rec;
            rec = old;
         }
         log->rest_count++;
         add_bo_stats(&log->rest, &out->stats);
      }
   }
   pthread_mutex_unlock(&dev->lock);
}

void
cohmap_stats_slab_freed(struct cohmap_slab *slab)
{
   struct cohmap_block *block = slab->block;
   struct cohmap_device *dev = block->dev;
   struct cohmap_region_stats rs;

   if (!dev->print_stats || !block->region ||
       cohmap_region_get_stats(block->region, &rs) != 0)
      return;
   enum cohmap_method m = cohmap_region_method(block->region);
   pthread_mutex_lock(&dev->lock);
   dev->stats_log.slabs++;
   dev->stats_log.slab_method = m;
   add_region_stats(&dev->stats_log.regions, &rs);
   pthread_mutex_unlock(&dev->lock);
}

static int
record_cmp(const void *a, const void *b)
{
   uint64_t x = activity(a), y = activity(b);
   return (x < y) - (x > y); /* most active first */
}

static void
print_bo_flags(char *buf, size_t size, uint32_t flags)
{
   snprintf(buf, size, "%s%s%s",
            flags & COHMAP_BO_COHERENT ? "coherent" : "non-coherent",
            flags & COHMAP_BO_GPU_WRITE ? "|gpu-write" : "",
            flags & COHMAP_BO_CPU_STORES_ONLY ? "|cpu-stores-only" : "");
}

void
cohmap_stats_print(struct cohmap_device *dev)
{
   if (!dev->print_stats)
      return;

   struct cohmap_device_stats st;
   cohmap_device_get_stats(dev, &st);
   pthread_mutex_lock(&dev->lock);
   struct cohmap_stats_log *log = &dev->stats_log;
   const struct cohmap_region_stats *rs = &log->regions;
   /* The device's current method: fixed by its options or by
    * COHMAP_METHOD, or the policy's choice per BO (listed below). */
   char method[64];
   if (dev->method != COHMAP_METHOD_AUTO)
      snprintf(method, sizeof(method), "%s (device option)",
               cohmap_method_name(dev->method));
   else if (((struct cohmap_context *)dev->ctx)->policy.enabled)
      snprintf(method, sizeof(method), "auto (adaptive, per BO)");
   else
      snprintf(method, sizeof(method), "%s (COHMAP_METHOD)",
               cohmap_method_name(cohmap_context_auto_method(dev->ctx)));

   fprintf(stderr,
           "cohmap: device %p: total: %" PRIu64 " submissions, %" PRIu64
           " bytes uploaded, %" PRIu64 " downloaded, %" PRIu64
           " merged, %" PRIu64 " conflicted; %" PRIu64 " collects, %" PRIu64
           " faults, %" PRIu64 " scans, %" PRIu64
           " method switches, %.3f ms tracking (collects and merges); "
           "method %s; verify: %" PRIu64 " checks, %" PRIu64 " mismatches\n",
           (void *)dev, st.submissions, st.bytes_uploaded,
           st.bytes_downloaded, st.bytes_merged, st.bytes_conflicted,
           st.collects, rs->faults, rs->scans, rs->method_switches,
           st.tracking_ns / 1e6, method, st.verify_checks,
           st.verify_mismatches);
   fprintf(stderr,
           "cohmap: device %p: %" PRIu64 " BOs: %" PRIu64 " tracked (%" PRIu64
           " dedicated, %" PRIu64 " in %" PRIu64 " slabs%s%s), %" PRIu64
           " non-coherent\n",
           (void *)dev, log->bos, log->coherent_bos,
           log->coherent_bos - log->slab_bos, log->slab_bos, log->slabs,
           log->slabs ? ", last on " : "",
           log->slabs ? cohmap_method_name(log->slab_method) : "",
           log->bos - log->coherent_bos);

   qsort(log->top, log->top_count, sizeof(log->top[0]), record_cmp);
   for (size_t i = 0; i < log->top_count; i++) {
      const struct cohmap_bo_record *r = &log->top[i];
      char flags[64];
      print_bo_flags(flags, sizeof(flags), r->flags);
      fprintf(stderr,
              "cohmap: device %p: BO %p: %zu bytes, %s, %s, %s: %" PRIu64
              " submissions, %" PRIu64 " bytes uploaded, %" PRIu64
              " merged, %" PRIu64 " conflicted",
              (void *)dev, r->bo, r->size, flags,
              r->in_slab ? "in a slab" : "dedicated",
              cohmap_method_name(r->method), r->stats.submissions,
              r->stats.bytes_uploaded, r->stats.bytes_merged,
              r->stats.bytes_conflicted);
      if (r->has_region)
         fprintf(stderr,
                 "; %" PRIu64 " collects, %" PRIu64 " faults, %" PRIu64
                 " scans, %" PRIu64 " method switches, %.3f ms tracking",
                 r->region.collects, r->region.faults, r->region.scans,
                 r->region.method_switches, r->region.tracking_ns / 1e6);
      if (r->verify_mismatches)
         fprintf(stderr, "; %" PRIu64 " verify mismatches",
                 r->verify_mismatches);
      fprintf(stderr, "\n");
   }
   if (log->rest_count)
      fprintf(stderr,
              "cohmap: device %p: %" PRIu64
              " less active BOs not listed: %" PRIu64 " submissions, %" PRIu64
              " bytes uploaded, %" PRIu64 " merged, %" PRIu64 " conflicted\n",
              (void *)dev, log->rest_count, log->rest.submissions,
              log->rest.bytes_uploaded, log->rest.bytes_merged,
              log->rest.bytes_conflicted);
   pthread_mutex_unlock(&dev->lock);
}
