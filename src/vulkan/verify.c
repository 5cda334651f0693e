/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: COHMAP_DEBUG=verify in the layer's shadow mode
 *
 * The winsys's safety net (src/winsys/debug.c) for the layer: after every
 * submission's upload, with the device lock the upload held still held,
 * each mapped shadow is compared with what it must agree with, and every
 * byte that disagrees without an excuse is reported.  It only reads.
 *
 * Three copies of each byte of a mapping: C (the shadow the application
 * writes, live), S (the region's snapshot: exactly what was last uploaded
 * to or merged from the driver) and D (the driver's memory, the device).
 *
 *  1. D ≠ S outside the GPU-writable ranges: an upload bug, reported at
 *     once.  The device lock keeps uploads and merges out, and nothing but
 *     the layer writes D where the GPU cannot (docs/vulkan.md, "What the
 *     GPU can write").  Bytes the region owes its next collect (its carry,
 *     after a policy switch) are excused, and after a failed refine or a
 *     lost engine (report_whole, lost_tracking) there is nothing exact to
 *     compare with: no check that time.  Inside the writable ranges D may
 *     hold GPU writes not merged yet, so it says nothing.
 *  2. C ≠ S is not an error by itself: a store racing the collect is
 *     reported by the next one.  Such bytes become *suspects*.  At the next
 *     upload, a suspect that still differs and lies neither in the pages
 *     the engine reported (the region's raw `pages`, before the snapshot's
 *     diff narrows them) nor in the collect's result was not stored to
 *     since, so the engine missed the store that made it differ: reported,
 *     one submission late.  This check needs no device copy, so it covers
 *     the GPU-writable ranges too: a merge writes C and S alike, and keeps
 *     C where the CPU stored (C ≠ S stays, the store is reported).
 *     `compare` is judged by (1) alone: its engine diffs values, so a byte
 *     stored and stored back before its read is legitimately left out and
 *     proves nothing.
 *
 * Cost: two comparisons of every mapped byte per submission.  A debugging
 * aid, not for production.  Direct and device-local modes are not
 * verified (direct has no copy to compare with; device-local's would need
 * a GPU download per submission).
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "track/options.h"
#include "track/track_priv.h"
#include "util/log.h"
#include "util/ranges.h"
#include "vulkan/layer.h"

/* At most this many lines per device: a corrupted memory would otherwise
 * print at every submission.  The counters go on. */
#define VERIFY_MAX_LINES 100
/* Bytes shown of the first difference. */
#define VERIFY_SHOW 8

struct cm_verify_memory {
   /* Mapping offsets where C differed from S after the last upload. */
   struct cohmap_ranges suspects;
};

void
cm_verify_init(struct cm_device *dev)
{
   dev->verify = dev->ctx && (dev->ctx->debug & COHMAP_DEBUG_VERIFY);
}

void
cm_verify_drop(struct cm_device *dev, struct cm_memory *mem)
{
   (void)dev;
   if (!mem->verify)
      return;
   cohmap_ranges_fini(&mem->verify->suspects);
   free(mem->verify);
   mem->verify = NULL;
}

/* Counts and prints one verify report about mem.  Under dev->lock. */
static void
report(struct cm_device *dev, const struct cm_memory *mem,
       const struct cohmap_ranges *bad, const char *what)
{
   const struct cohmap_region *r = mem->region;
   size_t bytes = cohmap_ranges_bytes(bad);
   size_t first = bad->v[0].offset;

   dev->verify_mismatches++;
   dev->verify_bytes += bytes;
   if (dev->verify_lines > VERIFY_MAX_LINES)
      return;
   if (dev->verify_lines++ == VERIFY_MAX_LINES) {
      fprintf(stderr,
              "cohmap: verify: device %p: more than %d reports; further "
              "ones are only counted\n",
              (void *)dev->device, VERIFY_MAX_LINES);
      return;
   }
   size_t show = mem->map_len - first < VERIFY_SHOW
                    ? (size_t)(mem->map_len - first)
                    : VERIFY_SHOW;
   char c[3 * VERIFY_SHOW + 1], s[3 * VERIFY_SHOW + 1],
      d[3 * VERIFY_SHOW + 1];
   cohmap_format_hex(c, sizeof(c), r->ptr + first, show);
   cohmap_format_hex(s, sizeof(s), r->snapshot + first, show);
   cohmap_format_hex(d, sizeof(d), mem->driver_ptr + first, show);
   fprintf(stderr,
           "cohmap: verify: memory %p (%" PRIu64 " bytes, type %u, %s): "
           "%zu bytes in %zu runs %s; first at offset %" PRIu64
           ": cpu %s, uploaded %s, driver %s\n",
           (void *)mem->handle, (uint64_t)mem->size, mem->type,
           cohmap_method_name(cohmap_region_method(mem->region)), bytes,
           bad->count, what, (uint64_t)(mem->map_lo + first), c, s, d);
}

/* The GPU-writable ranges of mem as mapping offsets, sorted, plus the
 * region's carry (both excused from check 1). */
static int
excused(const struct cm_memory *mem, struct cohmap_ranges *out)
{
   int ret = 0;
   VkDeviceSize end = mem->map_lo + mem->map_len;
   if (mem->writable_all)
      return cohmap_ranges_add(out, 0, mem->map_len);
   for (uint32_t i = 0; i < mem->writable_count && !ret; i++) {
      VkDeviceSize a = mem->writable[i].offset;
      VkDeviceSize b = a + mem->writable[i].size;
      a = a < mem->map_lo ? mem->map_lo : a;
      b = b > end ? end : b;
      if (a < b)
         ret = cohmap_ranges_add(out, (size_t)(a - mem->map_lo),
                                 (size_t)(b - a));
   }
   if (!ret)
      ret = cohmap_ranges_add_all(out, &mem->region->carry);
   cohmap_ranges_normalize(out);
   return ret;
}

/* Checks one mapped memory right after its upload.  Under dev->lock. */
static int
verify_memory(struct cm_device *dev, struct cm_memory *mem,
              struct cohmap_ranges t[4])
{
   struct cohmap_region *r = mem->region;
   size_t n = (size_t)mem->map_len;
   int ret = 0;

   if (!r->snapshot)
      return 0; /* BYTE_EXACT keeps one; nothing exact to compare with */
   if (!mem->verify) {
      mem->verify = calloc(1, sizeof(*mem->verify));
      if (!mem->verify)
         return -ENOMEM;
      cohmap_ranges_init(&mem->verify->suspects);
   }
   struct cohmap_ranges *suspects = &mem->verify->suspects;
   for (int i = 0; i < 4; i++)
      cohmap_ranges_clear(&t[i]);
   dev->verify_checks++;

   /* (1) D ≠ S, less the excused ranges. */
   if (!r->report_whole && !r->lost_tracking) {
      ret = cohmap_ranges_add_diff(&t[0], 0, mem->driver_ptr, r->snapshot, n);
      if (!ret)
         ret = excused(mem, &t[1]);
      if (!ret)
         ret = cohmap_ranges_op(t[0].v, t[0].count, t[1].v, t[1].count, false,
                                &t[2]);
      if (ret)
         return ret;
      if (t[2].count)
         report(dev, mem, &t[2],
                "differ from the driver's memory after an "
                "upload (not GPU-writable)");
   }

   /* (2) C ≠ S now: this upload's suspects. */
   cohmap_ranges_clear(&t[0]);
   ret = cohmap_ranges_add_diff(&t[0], 0, r->ptr, r->snapshot, n);
   if (ret)
      return ret;
   if (suspects->count) {
      /* What this collect says was stored to since the last one. */
      cohmap_ranges_clear(&t[1]);
      ret = cohmap_ranges_add_all(&t[1], &r->pages);
      if (!ret)
         ret = cohmap_ranges_add_all(&t[1], &r->result);
      cohmap_ranges_normalize(&t[1]);
      if (!ret)
         ret = cohmap_ranges_op(suspects->v, suspects->count, t[1].v,
                                t[1].count, false, &t[2]);
      if (!ret)
         ret = cohmap_ranges_op(t[0].v, t[0].count, t[2].v, t[2].count, true,
                                &t[3]);
      if (ret)
         return ret;
      if (t[3].count)
         report(dev, mem, &t[3],
                "written by the CPU and never reported "
                "by the tracking engine");
   }
   struct cohmap_ranges swap = *suspects;
   *suspects = t[0];
   t[0] = swap;
   if (cohmap_region_method(r) == COHMAP_METHOD_COMPARE)
      cohmap_ranges_clear(suspects);
   return 0;
}

void
cm_verify_uploads(struct cm_device *dev, VkResult upload)
{
   /* A failed upload requeued what it did not copy: D and S are not in
    * step until the next one. */
   if (!dev->verify || upload != VK_SUCCESS)
      return;
   struct cohmap_ranges t[4];
   for (int i = 0; i < 4; i++)
      cohmap_ranges_init(&t[i]);
   for (uint32_t i = 0; i < dev->mapped_count; i++) {
      struct cm_memory *mem = dev->mapped[i];
      if (verify_memory(dev, mem, t)) {
         /* Out of memory: start over with no suspects, say so once. */
         if (mem->verify)
            cohmap_ranges_clear(&mem->verify->suspects);
         if (!dev->verify_oom)
            cm_log("warning: verify: out of memory; some uploads not "
                   "verified");
         dev->verify_oom = true;
      }
   }
   for (int i = 0; i < 4; i++)
      cohmap_ranges_fini(&t[i]);
}

void
cm_verify_finish(const struct cm_device *dev)
{
   if (!dev->verify || !dev->stats)
      return;
   fprintf(stderr,
           "cohmap: vulkan: device %p (%s): verify: %" PRIu64
           " checks, %" PRIu64 " mismatches, %" PRIu64 " bytes\n",
           (void *)dev->device, cm_mode_name(dev->mode), dev->verify_checks,
           dev->verify_mismatches, dev->verify_bytes);
   fflush(stderr);
}
