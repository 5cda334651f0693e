/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * What the layer costs an application (issue 5, "Measure").
 *
 *   bench-vulkan CONFIG WORKLOAD [--iterations N] [--repeat R]
 *
 * CONFIG: none (no layer), shadow (vk-util.h), or both: the two side by
 * side in one process, repetitions alternating (none, shadow, none, ...),
 * so that a noisy machine slows both alike; it also prints their ratio.
 * WORKLOAD, or "all" for both:
 *
 *  - submit: a 64 MiB persistently mapped buffer; each iteration writes
 *    1 KiB at a random place of it, records a copy of those bytes into a
 *    device buffer, submits and waits for the fence (10^4 iterations).
 *  - stream: the map-once streaming pattern of a renderer: a 64 MiB ring
 *    mapped once, 64 KiB of new data written sequentially per frame,
 *    copied by that frame's submission, two frames in flight (2000
 *    frames: the ring wraps once).
 *
 * An iteration's time runs from its start to the next one's.  Each
 * repetition prints the median and the mean of its iterations' times; the
 * result is the median over the repetitions of the per-repetition
 * medians, as "median_us=<value>" (one config) or "<workload>
 * none_us=<v> shadow_us=<v> ratio=<v>" (both) for scripts.  Medians,
 * because on a shared machine a few iterations stall for milliseconds
 * behind other processes (seen: 1.5 s in one vkQueueSubmit), and the mean
 * measures those stalls rather than the layer.
 * No validation layer: this measures the cohmap layer against the bare
 * driver.
 */

#include <stdlib.h>
#include <string.h>

#include "test-util.h"
#include "vk-util.h"

static int
cmp_double(const void *a, const void *b)
{
   double x = *(const double *)a, y = *(const double *)b;
   return x < y ? -1 : x > y;
}

static double
median(double *t, int n)
{
   qsort(t, (size_t)n, sizeof(double), cmp_double);
   return t[n / 2];
}

static bool
record_copy(VkCommandBuffer cb, VkBuffer src, VkDeviceSize off, VkBuffer dst,
            VkDeviceSize dst_off, VkDeviceSize size)
{
   VkCommandBufferBeginInfo bi = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
   };
   if (vkBeginCommandBuffer(cb, &bi) != VK_SUCCESS)
      return false;
   VkBufferCopy r = {off, dst_off, size};
   vkCmdCopyBuffer(cb, src, dst, 1, &r);
   return vkEndCommandBuffer(cb) == VK_SUCCESS;
}

static bool
run(struct vk *vk, bool stream, int iterations, double *mean_us,
    double *median_us)
{
   const VkDeviceSize big = 64u << 20;
   const VkDeviceSize chunk = stream ? 64 * 1024 : 1024;
   struct vk_buffer src, dst;
   if (!vk_buffer_create(vk, big, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, true,
                         &src) ||
       !vk_buffer_create(vk, stream ? 2 * chunk : chunk,
                         VK_BUFFER_USAGE_TRANSFER_DST_BIT, false, &dst))
      return false;

   VkCommandBuffer cb[2];
   VkFence fence[2];
   VkCommandBufferAllocateInfo cai = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
      .commandPool = vk->pool,
      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
      .commandBufferCount = 2,
   };
   VK_CHECK(vkAllocateCommandBuffers(vk->device, &cai, cb));
   VkFenceCreateInfo fci = {
      .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO,
      .flags = VK_FENCE_CREATE_SIGNALED_BIT,
   };
   for (int i = 0; i < 2; i++)
      VK_CHECK(vkCreateFence(vk->device, &fci, NULL, &fence[i]));

   struct tu_rng rng;
   tu_rng_seed(&rng, 1);
   uint8_t data[1024];
   tu_rng_fill(&rng, data, sizeof(data));

   /* Every page of the buffer is written before the timing, so that
    * both configurations start with the driver's memory populated: an
    * application fills its buffer once, and a page's first touch is a
    * cost of allocating, not of submitting.  Without the layer the fill
    * populates the driver's pages; with it, the first submission uploads
    * the whole buffer into them.  (The harness's zeroing is not enough:
    * zeroes over zeroes are no change, so the layer would never write the
    * driver's pages and each upload in the timed loop would populate
    * one.)  Iterations before t0 warm up. */
   memset(src.map, 0x5a, big);
   const int warmup = 16;
   double *each = malloc((size_t)iterations * sizeof(double));
   if (!each)
      return false;
   double t0 = 0, prev = 0;
   for (int i = -warmup; i < iterations; i++) {
      double now = tu_now();
      if (i == 0)
         t0 = now;
      if (i > 0)
         each[i - 1] = (now - prev) * 1e6;
      prev = now;
      /* submit: one frame in flight; stream: two. */
      int f = stream ? i & 1 : 0;
      if (i < 0)
         f = 0;
      VK_CHECK(
         vkWaitForFences(vk->device, 1, &fence[f], VK_TRUE, UINT64_MAX));
      VK_CHECK(vkResetFences(vk->device, 1, &fence[f]));
      VkDeviceSize off;
      /* New data every iteration: a stream rewriting the bytes its ring
       * held one lap earlier would upload nothing. */
      data[(i + warmup) % sizeof(data)]++;
      if (stream) {
         off = (VkDeviceSize)(i + warmup) * chunk % big;
         for (VkDeviceSize k = 0; k < chunk; k += sizeof(data))
            memcpy(src.map + off + k, data, sizeof(data));
      } else {
         off = tu_rng_below(&rng, big / chunk) * chunk;
         memcpy(src.map + off, data, chunk);
      }
      if (!record_copy(cb[f], src.buffer, off, dst.buffer,
                       stream ? f * chunk : 0, chunk))
         return false;
      VkSubmitInfo si = {
         .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
         .commandBufferCount = 1,
         .pCommandBuffers = &cb[f],
      };
      VK_CHECK(vkQueueSubmit(vk->queue, 1, &si, fence[f]));
   }
   VK_CHECK(vkWaitForFences(vk->device, 2, fence, VK_TRUE, UINT64_MAX));
   double t1 = tu_now();
   each[iterations - 1] = (t1 - prev) * 1e6;
   *mean_us = (t1 - t0) * 1e6 / iterations;
   *median_us = median(each, iterations);
   free(each);

   for (int i = 0; i < 2; i++)
      vkDestroyFence(vk->device, fence[i], NULL);
   vkFreeCommandBuffers(vk->device, vk->pool, 2, cb);
   vk_buffer_destroy(vk, &src);
   vk_buffer_destroy(vk, &dst);
   return true;
}

int
main(int argc, char **argv)
{
   enum vk_config configs[2];
   int nconfigs = 1;
   bool both = argc >= 2 && !strcmp(argv[1], "both");
   bool all = argc >= 3 && !strcmp(argv[2], "all");
   if (both) {
      configs[0] = VK_CONFIG_NONE;
      configs[1] = VK_CONFIG_SHADOW;
      nconfigs = 2;
   }
   if (argc < 3 || (!both && !vk_config_parse(argv[1], &configs[0])) ||
       (!both && configs[0] == VK_CONFIG_NONCOHERENT) ||
       (strcmp(argv[2], "submit") && strcmp(argv[2], "stream") && !all)) {
      fprintf(stderr,
              "usage: %s none|shadow|both submit|stream|all "
              "[--iterations N] [--repeat R]\n",
              argv[0]);
      return 2;
   }
   int iterations = 0, repeat = 5;
   for (int i = 3; i + 1 < argc; i += 2) {
      if (!strcmp(argv[i], "--iterations"))
         iterations = atoi(argv[i + 1]);
      else if (!strcmp(argv[i], "--repeat"))
         repeat = atoi(argv[i + 1]);
   }
   if (iterations < 0 || repeat < 1 || repeat > 99) {
      fprintf(stderr, "bench-vulkan: bad --iterations or --repeat\n");
      return 2;
   }
   vk_no_validation = true;
   vk_require_machine();

   /* Both instances live for the whole run; each config's environment
    * is read when its instance is created. */
   struct vk vk[2] = {{0}};
   for (int c = 0; c < nconfigs; c++) {
      if (!vk_init(&vk[c], configs[c]))
         return 1;
   }
   for (int w = 0; w < 2; w++) {
      bool stream = w == 1;
      if (!all && stream != !strcmp(argv[2], "stream"))
         continue;
      const char *name = stream ? "stream" : "submit";
      int n = iterations ? iterations : stream ? 2000 : 10000;
      double t[2][99], mean[2][99];
      for (int r = 0; r < repeat; r++) {
         for (int c = 0; c < nconfigs; c++) {
            if (!run(&vk[c], stream, n, &mean[c][r], &t[c][r]))
               return 1;
            printf("%s %s: %d iterations, median %.2f us, mean %.2f us\n",
                   vk_config_name(configs[c]), name, n, t[c][r], mean[c][r]);
            fflush(stdout);
         }
      }
      if (both) {
         double a = median(t[0], repeat), b = median(t[1], repeat);
         printf("%s none_us=%.2f shadow_us=%.2f ratio=%.2f\n", name, a, b,
                b / a);
      } else {
         printf("median_us=%.2f\n", median(t[0], repeat));
      }
   }
   for (int c = nconfigs - 1; c >= 0; c--)
      vk_finish(&vk[c]);
   return 0;
}
