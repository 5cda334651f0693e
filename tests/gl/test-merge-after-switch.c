/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * A method switch between two collects must not lose CPU stores to the
 * next three-way merge (suite gl: the root cause of test-gl's compute
 * failures under COHMAP_METHOD=auto).
 *
 * What test-gl saw: the CPU wrote words of a persistent coherent buffer
 * while a dispatch ran; zink's submission collected, and at the end of
 * that collect the policy moved the region from compare to scan.  The
 * switch diffed the old method's pages against the snapshot and copied the
 * differing runs into the snapshot, to report them (carried) at the next
 * collect.  Before that collect came, zink's fence wait merged the
 * device's bytes: device != snapshot (the device still had the old value),
 * memory == snapshot (the switch had just copied it), so the merge took the
 * device's stale word over the CPU's new one.  The merge is only right if
 * the snapshot is exactly what the device was last given.
 *
 * Here, deterministically and without a GPU (the "device" is a plain copy
 * that a collect's reported bytes are copied into, as the layer does):
 * write, collect, upload; the CPU writes B; the method is switched; the
 * device writes C elsewhere in the same pages; merge.  Memory must hold
 * both B and C, and after the next collect and upload the device must
 * equal memory.  For every pair of methods this machine has.
 */

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test-util.h"
#include "track/track_priv.h"

#define SIZE (64 * 1024)

static void
upload(const struct cohmap_dirty *d, uint8_t *dev)
{
   const uint8_t *src = d->data;
   for (size_t i = 0; i < d->count; i++)
      memcpy(dev + d->ranges[i].offset, src + d->ranges[i].offset,
             d->ranges[i].length);
}

static bool
check_pair(struct cohmap_context *ctx, enum cohmap_method from,
           enum cohmap_method to)
{
   struct cohmap_region *r;
   if (cohmap_region_create(ctx, SIZE, from, COHMAP_REGION_BYTE_EXACT, &r)) {
      printf("# cannot create a %s region: %s\n", cohmap_method_name(from),
             cohmap_error_message());
      return false;
   }
   uint8_t *mem = cohmap_region_ptr(r);
   uint8_t *dev = calloc(1, SIZE);
   struct cohmap_dirty d;
   bool ok = dev != NULL;

   /* A: everything, uploaded. */
   for (size_t i = 0; ok && i < SIZE; i++)
      mem[i] = (uint8_t)(i * 7 + 1);
   ok = ok && cohmap_region_collect(r, 0, &d) == 0;
   if (ok)
      upload(&d, dev);

   /* B: the CPU, words 2 and 3 of every 16-byte group, then the switch
    * with B not yet uploaded. */
   for (size_t g = 0; ok && g < SIZE; g += 16)
      memset(mem + g + 8, 0xb0 | (uint8_t)(g >> 4 & 0xf), 8);
   ok = ok && cohmap_region_set_method(r, to) == 0;
   /* C: the device, word 0 of every group. */
   for (size_t g = 0; ok && g < SIZE; g += 16)
      memset(dev + g, 0xc0 | (uint8_t)(g >> 4 & 0xf), 4);
   size_t merged = 0, conflicts = 0;
   ok = ok && cohmap_region_merge(r, 0, dev, SIZE, &merged, &conflicts) == 0;

   size_t lost_b = 0, lost_c = 0, first = SIZE;
   for (size_t g = 0; ok && g < SIZE; g += 16) {
      for (size_t k = 0; k < 16; k++) {
         uint8_t want = k < 4    ? (uint8_t)(0xc0 | (g >> 4 & 0xf))
                        : k >= 8 ? (uint8_t)(0xb0 | (g >> 4 & 0xf))
                                 : (uint8_t)((g + k) * 7 + 1);
         if (mem[g + k] != want) {
            if (k >= 8)
               lost_b++;
            else
               lost_c++;
            if (first == SIZE)
               first = g + k;
         }
      }
   }
   if (ok && (lost_b || lost_c))
      printf("# %s -> %s: after the merge %zu CPU bytes and %zu device "
             "bytes wrong (first at %zu: %02x)\n",
             cohmap_method_name(from), cohmap_method_name(to), lost_b, lost_c,
             first, mem[first]);
   ok = ok && !lost_b && !lost_c;

   /* The next upload brings the device up to date. */
   ok = ok && cohmap_region_collect(r, 0, &d) == 0;
   if (ok) {
      upload(&d, dev);
      if (memcmp(dev, mem, SIZE)) {
         printf("# %s -> %s: device differs from memory after the next "
                "upload\n",
                cohmap_method_name(from), cohmap_method_name(to));
         ok = false;
      }
   }
   free(dev);
   cohmap_region_destroy(r);
   return ok;
}

int
main(void)
{
   struct cohmap_context *ctx;
   if (cohmap_context_create(NULL, &ctx)) {
      printf("Bail out! no context: %s\n", cohmap_error_message());
      return 1;
   }
   static const enum cohmap_method methods[] = {
      COHMAP_METHOD_SCAN,
      COHMAP_METHOD_FAULT,
      COHMAP_METHOD_COMPARE,
      COHMAP_METHOD_FULL,
   };
   printf("TAP version 13\n");
   int n = 0, failed = 0;
   for (size_t i = 0; i < TU_ARRAY_SIZE(methods); i++) {
      for (size_t j = 0; j < TU_ARRAY_SIZE(methods); j++) {
         enum cohmap_method from = methods[i], to = methods[j];
         if (from == to)
            continue;
         const char *why = NULL;
         n++;
         if (cohmap_context_method_status(ctx, from, &why) ||
             cohmap_context_method_status(ctx, to, &why)) {
            printf("ok %d - %s -> %s # SKIP %s\n", n,
                   cohmap_method_name(from), cohmap_method_name(to), why);
            continue;
         }
         bool ok = check_pair(ctx, from, to);
         failed += !ok;
         printf("%s %d - %s -> %s\n", ok ? "ok" : "not ok", n,
                cohmap_method_name(from), cohmap_method_name(to));
      }
   }

   /* The same loss is possible in any region whose snapshot a switch
    * created (it copies unreported stores): the merge is only defined for
    * BYTE_EXACT regions and must refuse the others, even with a snapshot
    * (compare keeps one). */
   struct cohmap_region *r;
   n++;
   if (cohmap_region_create(ctx, SIZE, COHMAP_METHOD_COMPARE, 0, &r)) {
      printf("not ok %d - merge refused without BYTE_EXACT # %s\n", n,
             cohmap_error_message());
      failed++;
   } else {
      uint8_t *dev = calloc(1, SIZE);
      size_t merged = 0, conflicts = 0;
      int ret =
         dev ? cohmap_region_merge(r, 0, dev, SIZE, &merged, &conflicts) : 0;
      bool ok = dev && ret == -EINVAL && merged == 0;
      failed += !ok;
      printf("%s %d - merge refused without BYTE_EXACT (%d)\n",
             ok ? "ok" : "not ok", n, ret);
      free(dev);
      cohmap_region_destroy(r);
   }
   printf("1..%d\n", n);
   cohmap_context_destroy(ctx);
   return failed ? 1 : 0;
}
