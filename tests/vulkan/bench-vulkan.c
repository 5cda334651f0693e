/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * What the layer costs an application (issue 5, "Measure").
 *
 *   bench-vulkan CONFIG WORKLOAD [--iterations N] [--repeat R]
 *
 * CONFIG: none (no layer) or shadow (vk-util.h).  WORKLOAD:
 *
 *  - submit: a 64 MiB persistently mapped buffer; each iteration writes
 *    1 KiB at a random place of it, records a copy of those bytes into a
 *    device buffer, submits and waits for the fence (10^4 iterations).
 *  - stream: the map-once streaming pattern of a renderer: a 64 MiB ring
 *    mapped once, 64 KiB written sequentially per frame, copied by that
 *    frame's submission, two frames in flight (2000 frames).
 *
 * Prints one line per repetition and the median, in microseconds per
 * iteration, as "median_us=<value>" for scripts.  No validation layer:
 * this measures the cohmap layer against the bare driver.
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
run(struct vk *vk, bool stream, int iterations, double *us_per_iter)
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

   /* Iterations before t0 warm up: the first submission hands the
    * layer's shadow the whole buffer the set-up zeroed, a one-time cost
    * of mapping, not of streaming. */
   const int warmup = 16;
   double t0 = 0;
   for (int i = -warmup; i < iterations; i++) {
      if (i == 0)
         t0 = tu_now();
      /* submit: one frame in flight; stream: two. */
      int f = stream ? i & 1 : 0;
      if (i < 0)
         f = 0;
      VK_CHECK(
         vkWaitForFences(vk->device, 1, &fence[f], VK_TRUE, UINT64_MAX));
      VK_CHECK(vkResetFences(vk->device, 1, &fence[f]));
      VkDeviceSize off;
      if (stream) {
         off = (VkDeviceSize)(i + warmup) * chunk % big;
         for (VkDeviceSize k = 0; k < chunk; k += sizeof(data))
            memcpy(src.map + off + k, data, sizeof(data));
      } else {
         off = tu_rng_below(&rng, big / chunk) * chunk;
         data[(i + warmup) % sizeof(data)]++;
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
   *us_per_iter = (tu_now() - t0) * 1e6 / iterations;

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
   enum vk_config config;
   if (argc < 3 || !vk_config_parse(argv[1], &config) ||
       config == VK_CONFIG_NONCOHERENT ||
       (strcmp(argv[2], "submit") && strcmp(argv[2], "stream"))) {
      fprintf(stderr,
              "usage: %s none|shadow submit|stream [--iterations N] "
              "[--repeat R]\n",
              argv[0]);
      return 2;
   }
   bool stream = !strcmp(argv[2], "stream");
   int iterations = stream ? 2000 : 10000, repeat = 5;
   for (int i = 3; i + 1 < argc; i += 2) {
      if (!strcmp(argv[i], "--iterations"))
         iterations = atoi(argv[i + 1]);
      else if (!strcmp(argv[i], "--repeat"))
         repeat = atoi(argv[i + 1]);
   }
   if (iterations < 1 || repeat < 1 || repeat > 99) {
      fprintf(stderr, "bench-vulkan: bad --iterations or --repeat\n");
      return 2;
   }
   vk_no_validation = true;
   vk_require_machine();

   struct vk vk = {0};
   if (!vk_init(&vk, config))
      return 1;
   double t[99];
   for (int r = 0; r < repeat; r++) {
      if (!run(&vk, stream, iterations, &t[r]))
         return 1;
      printf("%s %s: %d iterations, %.2f us each\n", vk_config_name(config),
             argv[2], iterations, t[r]);
   }
   vk_finish(&vk);
   qsort(t, (size_t)repeat, sizeof(double), cmp_double);
   printf("median_us=%.2f\n", t[repeat / 2]);
   return 0;
}
