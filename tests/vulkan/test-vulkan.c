/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The layer's correctness tests (issue 5), TAP output.
 *
 *   test-vulkan CONFIG [TEST...]
 *
 * CONFIG is none (no cohmap layer: the baseline), shadow, noncoherent,
 * direct or device-local (vk-util.h).  Each test gets a fresh instance and
 * device with the validation layer and fails on any validation message.  Data
 * checks compare what the GPU copied out of a mapping (CPU → GPU) or what a
 * mapping shows after completion was observed (GPU → CPU) with a model in
 * plain memory; on lavapipe every mapping is coherent, so without the
 * layer they pass trivially, and with it they fail if the layer missed or
 * clobbered a byte.
 */

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test-util.h"
#include "vk-util.h"

static enum vk_config config;
/* Set by a test that does not apply to this configuration. */
static const char *skip_reason;

/* --- helpers --------------------------------------------------------------
 */

static void
copy_cmd(VkCommandBuffer cb, const struct vk_buffer *src,
         VkDeviceSize src_off, const struct vk_buffer *dst,
         VkDeviceSize dst_off, VkDeviceSize size)
{
   VkBufferCopy r = {src_off, dst_off, size};
   vkCmdCopyBuffer(cb, src->buffer, dst->buffer, 1, &r);
}

/* Copies size bytes of src to dst on the GPU and waits with a fence. */
static bool
gpu_copy(struct vk *vk, const struct vk_buffer *src, VkDeviceSize src_off,
         const struct vk_buffer *dst, VkDeviceSize dst_off, VkDeviceSize size,
         bool submit2)
{
   VkCommandBuffer cb;
   if (!vk_cmd_begin(vk, &cb))
      return false;
   copy_cmd(cb, src, src_off, dst, dst_off, size);
   return vk_cmd_submit(vk, cb, VK_COMPLETE_FENCE_WAIT, submit2) &&
          vk_cmd_release(vk, cb);
}

struct capture {
   int saved;
   FILE *file;
};

static void
capture_begin(struct capture *c)
{
   fflush(stderr);
   c->file = tmpfile();
   c->saved = dup(2);
   dup2(fileno(c->file), 2);
}

/* Returns a malloc()ed copy of what was written to stderr. */
static char *
capture_end(struct capture *c)
{
   fflush(stderr);
   dup2(c->saved, 2);
   close(c->saved);
   long n = ftell(c->file);
   char *text = calloc(1, n > 0 ? (size_t)n + 1 : 1);
   rewind(c->file);
   if (n > 0 && fread(text, 1, (size_t)n, c->file) != (size_t)n)
      text[0] = '\0';
   fclose(c->file);
   /* Shown in the test log, as TAP comments. */
   for (const char *line = text; *line;) {
      size_t len = strcspn(line, "\n");
      printf("# stderr: %.*s\n", (int)len, line);
      line += len + (line[len] == '\n');
   }
   return text;
}

/* The number just before label in the first line of text holding
 * "cohmap: vulkan: device"; UINT64_MAX if absent. */
static uint64_t
device_stat(const char *text, const char *label)
{
   const char *line = strstr(text, "cohmap: vulkan: device");
   if (!line)
      return UINT64_MAX;
   const char *end = strchr(line, '\n');
   const char *at = strstr(line, label);
   if (!at || (end && at > end))
      return UINT64_MAX;
   const char *p = at;
   while (p > line && p[-1] >= '0' && p[-1] <= '9')
      p--;
   return strtoull(p, NULL, 10);
}

/* --- CPU → GPU ------------------------------------------------------------
 */

enum pattern { RANDOM, SPARSE, DENSE, WHOLE, NONE, PATTERN_COUNT };
static const char *const pattern_names[] = {"random", "sparse", "dense",
                                            "whole", "none"};

static void
cpu_writes(struct tu_rng *rng, enum pattern p, uint8_t *map, uint8_t *model,
           size_t size)
{
   switch (p) {
   case RANDOM:
      for (int i = 0; i < 200; i++) {
         size_t len = tu_rng_range(rng, 1, 64);
         size_t off = tu_rng_below(rng, size - len);
         for (size_t k = 0; k < len; k++)
            map[off + k] = model[off + k] = (uint8_t)tu_rng_next(rng);
      }
      break;
   case SPARSE:
      for (size_t page = 0; page < size; page += 16384) {
         size_t off = page + tu_rng_below(rng, 16384);
         map[off] = model[off] = (uint8_t)(model[off] + 1);
      }
      break;
   case DENSE: {
      size_t base = tu_rng_below(rng, size - 65536);
      for (size_t k = 0; k < 65536; k++) {
         if (tu_rng_percent(rng, 90))
            map[base + k] = model[base + k] = (uint8_t)tu_rng_next(rng);
      }
      break;
   }
   case WHOLE:
      tu_rng_fill(rng, model, size);
      memcpy(map, model, size);
      break;
   default:
      break;
   }
}

/* A buffer the GPU copies from and into (mapped when map is true), and a
 * mapped one to copy it into for checking. */
static bool
buffer_and_check(struct vk *vk, VkDeviceSize size, bool map,
                 struct vk_buffer *buf, struct vk_buffer *check)
{
   return vk_buffer_create(vk, size,
                           VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                              VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                           map, buf) &&
          vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_DST_BIT, true,
                           check);
}

static bool
test_cpu_to_gpu(struct vk *vk)
{
   const size_t size = 256 * 1024;
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("cpu-to-gpu"));
   struct vk_buffer src, dst;
   if (!vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, true,
                         &src) ||
       !vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_DST_BIT, true,
                         &dst))
      return false;
   uint8_t *model = calloc(1, size);
   bool ok = true;
   for (int round = 0; round < 2 * PATTERN_COUNT && ok; round++) {
      enum pattern p = (enum pattern)(round % PATTERN_COUNT);
      cpu_writes(&rng, p, src.map, model, size);
      ok = gpu_copy(vk, &src, 0, &dst, 0, size, round & 1) &&
           vk_bytes_equal(pattern_names[p], dst.map, model, size);
   }
   free(model);
   vk_buffer_destroy(vk, &src);
   vk_buffer_destroy(vk, &dst);
   return ok;
}

/* --- GPU → CPU ------------------------------------------------------------
 */

static bool
test_gpu_to_cpu(struct vk *vk)
{
   const size_t size = 64 * 1024;
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("gpu-to-cpu"));
   struct vk_buffer src, dst;
   if (!vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, true,
                         &src) ||
       !vk_buffer_create(vk, size,
                         VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                            VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
                         true, &dst))
      return false;
   uint8_t *model = calloc(1, size);
   bool ok = true;
   tu_rng_fill(&rng, src.map, size);

   for (int c = 0; c < VK_COMPLETE_COUNT && ok; c++) {
      VkCommandBuffer cb;
      if (!vk_cmd_begin(vk, &cb)) {
         ok = false;
         break;
      }
      /* A fill, an update and a copy at places that move per method. */
      uint32_t pattern = (uint32_t)tu_rng_next(&rng);
      size_t fill_off = 4 * tu_rng_below(&rng, 4096);
      size_t fill_len = 4 * tu_rng_range(&rng, 1, 1024);
      vkCmdFillBuffer(cb, dst.buffer, fill_off, fill_len, pattern);
      for (size_t i = 0; i < fill_len; i++)
         model[fill_off + i] = (uint8_t)(pattern >> (8 * (i % 4)));

      uint8_t data[1024];
      tu_rng_fill(&rng, data, sizeof(data));
      size_t upd_off = 4 * tu_rng_below(&rng, 16384 - 256);
      vkCmdUpdateBuffer(cb, dst.buffer, upd_off, sizeof(data), data);
      memcpy(model + upd_off, data, sizeof(data));

      size_t copy_off = tu_rng_below(&rng, size - 8192);
      size_t copy_len = tu_rng_range(&rng, 1, 8192);
      VkMemoryBarrier mb = {
         .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
         .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
         .dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
      };
      vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                           VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, NULL,
                           0, NULL);
      copy_cmd(cb, &src, copy_off, &dst, copy_off, copy_len);
      memcpy(model + copy_off, src.map + copy_off, copy_len);

      ok = vk_cmd_submit(vk, cb, (enum vk_completion)c, c & 1);
      /* Checked before anything else could merge. */
      if (ok)
         ok = vk_bytes_equal(vk_completion_name((enum vk_completion)c),
                             dst.map, model, size);
      ok = vk_cmd_release(vk, cb) && ok;
   }
   free(model);
   vk_buffer_destroy(vk, &src);
   vk_buffer_destroy(vk, &dst);
   return ok;
}

/* --- CPU and GPU on disjoint bytes of the same pages ----------------------
 */

static bool
test_disjoint(struct vk *vk)
{
   const size_t size = 64 * 1024, block = 256;
   struct vk_buffer buf, check;
   if (!buffer_and_check(vk, size, true, &buf, &check))
      return false;
   uint8_t *model = calloc(1, size);
   bool ok = true;
   for (uint32_t round = 1; round <= 10 && ok; round++) {
      VkCommandBuffer cb;
      if (!vk_cmd_begin(vk, &cb))
         return false;
      /* The GPU writes the first word of every block ... */
      for (size_t b = 0; b < size; b += block) {
         uint32_t v = round * 0x01010101u ^ (uint32_t)b;
         vkCmdFillBuffer(cb, buf.buffer, b, 4, v);
         memcpy(model + b, &v, 4);
      }
      vk_cmd_transfer_to_host(cb);
      VK_CHECK(vkEndCommandBuffer(cb));
      VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
      VkFence fence;
      VK_CHECK(vkCreateFence(vk->device, &fci, vk->alloc, &fence));
      VkSubmitInfo si = {
         .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
         .commandBufferCount = 1,
         .pCommandBuffers = &cb,
      };
      VK_CHECK(vkQueueSubmit(vk->queue, 1, &si, fence));
      /* ... while the CPU writes the rest of every block. */
      for (size_t b = 0; b < size; b += block) {
         for (size_t k = 4; k < block; k++)
            buf.map[b + k] = model[b + k] = (uint8_t)(round + b + k);
      }
      VK_CHECK(vkWaitForFences(vk->device, 1, &fence, VK_TRUE, UINT64_MAX));
      vkDestroyFence(vk->device, fence, vk->alloc);
      vkFreeCommandBuffers(vk->device, vk->pool, 1, &cb);
      ok = vk_bytes_equal("mapping after the wait", buf.map, model, size) &&
           gpu_copy(vk, &buf, 0, &check, 0, size, false) &&
           vk_bytes_equal("GPU copy", check.map, model, size);
   }
   free(model);
   vk_buffer_destroy(vk, &buf);
   vk_buffer_destroy(vk, &check);
   return ok;
}

/* --- a buffer inside a larger memory, mapped at an offset ------------------
 */

static bool
test_offset_map(struct vk *vk)
{
   const VkDeviceSize mem_size = 1024 * 1024, buf_off = 262400,
                      map_off = 262244, map_size = 100000, buf_size = 65536;
   VkDeviceMemory mem;
   struct vk_buffer a, b, check;
   if (!vk_memory_alloc(vk, mem_size, &mem) ||
       !vk_buffer_bind(vk, 4096, VK_BUFFER_USAGE_TRANSFER_DST_BIT, mem, 0,
                       &a) ||
       !vk_buffer_bind(vk, buf_size,
                       VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                          VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                       mem, buf_off, &b) ||
       !vk_buffer_create(vk, buf_size, VK_BUFFER_USAGE_TRANSFER_DST_BIT, true,
                         &check))
      return false;
   VkPhysicalDeviceProperties props;
   vkGetPhysicalDeviceProperties(vk->physical, &props);

   uint8_t *p;
   VK_CHECK(vkMapMemory(vk->device, mem, map_off, map_size, 0, (void **)&p));
   VK_EXPECT(((uintptr_t)p - map_off) % props.limits.minMemoryMapAlignment ==
                0,
             "pointer - offset aligned to %zu",
             (size_t)props.limits.minMemoryMapAlignment);
   uint8_t *bp = p + (buf_off - map_off);
   uint8_t *model = malloc(buf_size);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("offset-map"));
   tu_rng_fill(&rng, model, buf_size);
   memcpy(bp, model, buf_size);

   bool ok =
      gpu_copy(vk, &b, 0, &check, 0, buf_size, false) &&
      vk_bytes_equal("CPU → GPU at an offset", check.map, model, buf_size);
   if (ok) {
      VkCommandBuffer cb;
      ok = vk_cmd_begin(vk, &cb);
      if (ok) {
         vkCmdFillBuffer(cb, b.buffer, 1024, 1024, 0xa5a5a5a5u);
         memset(model + 1024, 0xa5, 1024);
         ok = vk_cmd_submit(vk, cb, VK_COMPLETE_FENCE_WAIT, false) &&
              vk_bytes_equal("GPU → CPU at an offset", bp, model, buf_size) &&
              vk_cmd_release(vk, cb);
      }
   }
   vkUnmapMemory(vk->device, mem);
   free(model);
   vk_buffer_destroy(vk, &a);
   vk_buffer_destroy(vk, &b);
   vk_buffer_destroy(vk, &check);
   vkFreeMemory(vk->device, mem, vk->alloc);
   return ok;
}

/* --- unmap and map again: the data stays -----------------------------------
 */

static bool
test_remap(struct vk *vk)
{
   const size_t size = 128 * 1024;
   struct vk_buffer buf, check;
   if (!buffer_and_check(vk, size, false, &buf, &check))
      return false;
   uint8_t *model = calloc(1, size);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("remap"));
   bool ok = true;
   for (int round = 0; round < 4 && ok; round++) {
      /* Map (at an offset every other time), write, unmap, copy on the
       * GPU with nothing submitted in between: the unmap handed the
       * bytes over. */
      VkDeviceSize off = (round & 1) ? 8192 + 16 : 0;
      uint8_t *p;
      VK_CHECK(vkMapMemory(vk->device, buf.memory, off, VK_WHOLE_SIZE, 0,
                           (void **)&p));
      if (round > 0)
         ok = vk_bytes_equal("mapping again", p, model + off, size - off);
      tu_rng_fill(&rng, model + off, 4096);
      memcpy(p, model + off, 4096);
      vkUnmapMemory(vk->device, buf.memory);
      ok = ok && gpu_copy(vk, &buf, 0, &check, 0, size, false) &&
           vk_bytes_equal("after unmap", check.map, model, size);

      /* The GPU writes while nothing is mapped. */
      VkCommandBuffer cb;
      if (ok && vk_cmd_begin(vk, &cb)) {
         vkCmdFillBuffer(cb, buf.buffer, 65536, 4096, 0x5a000000u + round);
         for (int i = 0; i < 4096; i++)
            model[65536 + i] =
               (uint8_t)((0x5a000000u + round) >> (8 * (i % 4)));
         ok = vk_cmd_run(vk, cb);
      }
   }
   free(model);
   vk_buffer_destroy(vk, &buf);
   vk_buffer_destroy(vk, &check);
   return ok;
}

/* --- several threads write, two threads submit -----------------------------
 */

struct writer {
   uint8_t *map;
   size_t offset, size;
   int rounds;
   uint64_t seed;
};

static void *
writer_main(void *arg)
{
   struct writer *w = arg;
   struct tu_rng rng;
   tu_rng_seed(&rng, w->seed);
   for (int r = 0; r < w->rounds; r++) {
      size_t off = w->offset + tu_rng_below(&rng, w->size - 64);
      for (int k = 0; k < 64; k++)
         w->map[off + k] = (uint8_t)tu_rng_next(&rng);
      if (r % 64 == 0)
         usleep(100);
   }
   return NULL;
}

struct submitter {
   struct vk *vk;
   VkQueue queue;
   VkCommandPool pool;
   struct vk_buffer *src, *dst;
   int rounds;
   bool ok;
};

static void *
submitter_main(void *arg)
{
   struct submitter *s = arg;
   s->ok = true;
   for (int r = 0; r < s->rounds && s->ok; r++) {
      VkCommandBufferAllocateInfo cai = {
         .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
         .commandPool = s->pool,
         .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
         .commandBufferCount = 1,
      };
      VkCommandBuffer cb;
      VkCommandBufferBeginInfo bi = {
         .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
         .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
      };
      VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
      /* Destroyed below even when its creation was never reached. */
      VkFence fence = VK_NULL_HANDLE;
      VkSubmitInfo si = {
         .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
         .commandBufferCount = 1,
         .pCommandBuffers = &cb,
      };
      s->ok =
         vkAllocateCommandBuffers(s->vk->device, &cai, &cb) == VK_SUCCESS &&
         vkBeginCommandBuffer(cb, &bi) == VK_SUCCESS;
      if (!s->ok)
         break;
      copy_cmd(cb, s->src, 0, s->dst, 0, s->src->size);
      s->ok =
         vkEndCommandBuffer(cb) == VK_SUCCESS &&
         vkCreateFence(s->vk->device, &fci, NULL, &fence) == VK_SUCCESS &&
         vkQueueSubmit(s->queue, 1, &si, fence) == VK_SUCCESS &&
         vkWaitForFences(s->vk->device, 1, &fence, VK_TRUE, UINT64_MAX) ==
            VK_SUCCESS;
      vkDestroyFence(s->vk->device, fence, NULL);
      vkFreeCommandBuffers(s->vk->device, s->pool, 1, &cb);
   }
   return NULL;
}

static bool
test_threads(struct vk *vk)
{
   enum { WRITERS = 4, SUBMITTERS = 2 };
   const size_t size = 256 * 1024;
   struct vk_buffer src, dst[SUBMITTERS];
   if (!vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, true,
                         &src))
      return false;
   for (int i = 0; i < SUBMITTERS; i++) {
      if (!vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_DST_BIT, true,
                            &dst[i]))
         return false;
   }
   struct writer w[WRITERS];
   struct submitter s[SUBMITTERS];
   pthread_t wt[WRITERS], st[SUBMITTERS];
   VkCommandPool pools[SUBMITTERS];
   for (int i = 0; i < SUBMITTERS; i++) {
      VkCommandPoolCreateInfo pci = {
         .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
         .queueFamilyIndex = vk->queue_family,
      };
      VK_CHECK(vkCreateCommandPool(vk->device, &pci, NULL, &pools[i]));
      /* One queue per submitter where the device has two: a queue must
       * not be used by two threads at once. */
      s[i] = (struct submitter){vk, VK_NULL_HANDLE, pools[i], &src, &dst[i],
                                50, false};
      vkGetDeviceQueue(vk->device, vk->queue_family,
                       vk->queue_count > 1 ? (uint32_t)i : 0, &s[i].queue);
   }
   int nsub = vk->queue_count > 1 ? SUBMITTERS : 1;
   for (int i = 0; i < WRITERS; i++) {
      w[i] = (struct writer){src.map, i * size / WRITERS, size / WRITERS,
                             4000, tu_seed_for("threads") + i};
      pthread_create(&wt[i], NULL, writer_main, &w[i]);
   }
   for (int i = 0; i < nsub; i++)
      pthread_create(&st[i], NULL, submitter_main, &s[i]);
   for (int i = 0; i < WRITERS; i++)
      pthread_join(wt[i], NULL);
   bool ok = true;
   for (int i = 0; i < nsub; i++) {
      pthread_join(st[i], NULL);
      ok &= s[i].ok;
   }
   VK_EXPECT(ok, "every submission succeeded");
   /* The writers are done: the next copy must have everything. */
   uint8_t *model = malloc(size);
   memcpy(model, src.map, size);
   ok = gpu_copy(vk, &src, 0, &dst[0], 0, size, false) &&
        vk_bytes_equal("after the writers", dst[0].map, model, size);
   free(model);
   for (int i = 0; i < SUBMITTERS; i++) {
      vkDestroyCommandPool(vk->device, pools[i], NULL);
      vk_buffer_destroy(vk, &dst[i]);
   }
   vk_buffer_destroy(vk, &src);
   return ok;
}

/* --- 1000 small allocations ------------------------------------------------
 */

static bool
test_many_small(struct vk *vk)
{
   enum { COUNT = 1000, SIZE = 256 };
   struct vk_buffer *small = calloc(COUNT, sizeof(*small));
   struct vk_buffer dst;
   uint8_t *model = calloc(COUNT, SIZE);
   bool ok = vk_buffer_create(vk, COUNT * SIZE,
                              VK_BUFFER_USAGE_TRANSFER_DST_BIT, true, &dst);
   for (int i = 0; i < COUNT && ok; i++)
      ok = vk_buffer_create(vk, SIZE, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, true,
                            &small[i]);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("many-small"));
   for (int round = 0; round < 3 && ok; round++) {
      /* All of them, then every seventh. */
      for (int i = 0; i < COUNT; i += round ? 7 : 1) {
         tu_rng_fill(&rng, model + i * SIZE, SIZE);
         memcpy(small[i].map, model + i * SIZE, SIZE);
      }
      VkCommandBuffer cb;
      ok = vk_cmd_begin(vk, &cb);
      for (int i = 0; i < COUNT && ok; i++)
         copy_cmd(cb, &small[i], 0, &dst, (VkDeviceSize)i * SIZE, SIZE);
      ok = ok && vk_cmd_run(vk, cb) &&
           vk_bytes_equal("1000 small buffers", dst.map, model, COUNT * SIZE);
   }
   for (int i = 0; i < COUNT; i++) {
      if (small[i].buffer)
         vk_buffer_destroy(vk, &small[i]);
   }
   vk_buffer_destroy(vk, &dst);
   free(small);
   free(model);
   return ok;
}

/* --- vkFreeMemory while mapped ---------------------------------------------
 */

static bool
test_free_mapped(struct vk *vk)
{
   for (int i = 0; i < 20; i++) {
      struct vk_buffer b;
      if (!vk_buffer_create(vk, 65536 * (i + 1),
                            VK_BUFFER_USAGE_TRANSFER_DST_BIT, true, &b))
         return false;
      memset(b.map, i, 65536);
      vkDestroyBuffer(vk->device, b.buffer, vk->alloc);
      /* No vkUnmapMemory: freeing unmaps. */
      vkFreeMemory(vk->device, b.memory, vk->alloc);
   }
   /* The device still works. */
   return test_cpu_to_gpu(vk);
}

/* --- the application's allocator -------------------------------------------
 */

static long outstanding, total_allocs;

static void *VKAPI_CALL
count_alloc(void *user, size_t size, size_t align,
            VkSystemAllocationScope scope)
{
   void *p = NULL;
   if (posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align,
                      size ? size : 1))
      return NULL;
   __atomic_add_fetch(&outstanding, 1, __ATOMIC_RELAXED);
   __atomic_add_fetch(&total_allocs, 1, __ATOMIC_RELAXED);
   return p;
}

static void *VKAPI_CALL
count_realloc(void *user, void *old, size_t size, size_t align,
              VkSystemAllocationScope scope)
{
   if (!old)
      return count_alloc(user, size, align, scope);
   if (!size) {
      free(old);
      __atomic_sub_fetch(&outstanding, 1, __ATOMIC_RELAXED);
      return NULL;
   }
   /* Alignment up to 16 is what malloc gives; enough for the callers. */
   return realloc(old, size);
}

static void VKAPI_CALL
count_free(void *user, void *p)
{
   if (p) {
      free(p);
      __atomic_sub_fetch(&outstanding, 1, __ATOMIC_RELAXED);
   }
}

/* Runs in its own instance (main() treats it specially). */
static bool
test_allocator(struct vk *vk)
{
   return test_gpu_to_cpu(vk);
}

/* --- knobs and bad input ---------------------------------------------------
 */

static bool
test_stats(struct vk *vk)
{
   /* Rebuild the device with COHMAP_DEBUG=stats; vk_finish prints. */
   vk_finish(vk);
   setenv("COHMAP_DEBUG", "stats", 1);
   bool ok = vk_init(vk, config) && test_gpu_to_cpu(vk);
   unsetenv("COHMAP_DEBUG");
   struct capture c;
   capture_begin(&c);
   vk_finish(vk);
   char *text = capture_end(&c);
   uint64_t merged = device_stat(text, " bytes merged");
   uint64_t flushed = device_stat(text, " bytes flushed");
   uint64_t subs = device_stat(text, " submissions");
   free(text);
   VK_EXPECT(ok, "the test itself passed");
   VK_EXPECT(subs != UINT64_MAX, "a 'cohmap: vulkan: device' line");
   VK_EXPECT(subs == VK_COMPLETE_COUNT, "%" PRIu64 " submissions", subs);
   if (config == VK_CONFIG_DIRECT) {
      /* Direct mode merges nothing; what it flushes includes the bytes
       * lavapipe wrote (docs/vulkan.md, direct mode): at most 13 KiB per
       * submission. */
      VK_EXPECT(merged == 0, "merged %" PRIu64, merged);
      VK_EXPECT(flushed >= 60000 && flushed <= 2 * 65536 + 7 * 13312,
                "flushed %" PRIu64, flushed);
      return true;
   }
   VK_EXPECT(merged > 0 && merged != UINT64_MAX, "merged %" PRIu64, merged);
   /* The source buffer was written once, 64 KiB of random bytes. */
   /* Plus the zeroes vk_buffer_create() wrote over recycled memory. */
   VK_EXPECT(flushed >= 60000 && flushed <= 2 * 65536, "flushed %" PRIu64,
             flushed);
   return true;
}

/* An unknown COHMAP_MODE: a message, and the layer passes through. */
static bool
test_bad_mode(struct vk *vk)
{
   vk_finish(vk);
   char *saved = getenv("COHMAP_MODE") ? strdup(getenv("COHMAP_MODE")) : NULL;
   setenv("COHMAP_MODE", "sparkly", 1);
   setenv("COHMAP_DEBUG", "stats", 1);
   vk_force_layer = true;
   struct capture c;
   capture_begin(&c);
   bool ok = vk_init(vk, VK_CONFIG_ENV) && test_cpu_to_gpu(vk);
   vk_finish(vk);
   char *text = capture_end(&c);
   vk_force_layer = false;
   unsetenv("COHMAP_DEBUG");
   if (saved)
      setenv("COHMAP_MODE", saved, 1);
   else
      unsetenv("COHMAP_MODE");
   free(saved);
   bool said = strstr(text, "COHMAP_MODE: unknown mode 'sparkly'") != NULL;
   bool shadowed = strstr(text, "cohmap: vulkan: device") != NULL;
   free(text);
   VK_EXPECT(ok, "the application works");
   VK_EXPECT(said, "a message naming the bad mode");
   VK_EXPECT(!shadowed, "pass-through (no device stats line)");
   return vk_init(vk, config);
}

/* The layer's own flushes of non-coherent memory cover exactly the bytes
 * that changed, widened to whole atoms, and its invalidations the
 * GPU-writable ranges.  Two bytes far apart are written; with dst_too also
 * four bytes of dst that the GPU copy then changes again (one more atom).
 * mode: the device's mode the stats line must name, or NULL. */
static bool
atoms_case(struct vk *vk, bool dst_too, uint64_t atoms, const char *mode)
{
   vk_finish(vk);
   setenv("COHMAP_DEBUG", "stats", 1);
   bool ok = vk_init(vk, config);
   unsetenv("COHMAP_DEBUG");
   VK_EXPECT(ok, "init");
   const VkDeviceSize mem_size = 1024 * 1024, dst_off = 512 * 1024,
                      dst_size = 65536;
   VkDeviceMemory mem;
   struct vk_buffer src, dst;
   uint8_t *p;
   if (!vk_memory_alloc(vk, mem_size, &mem) ||
       !vk_buffer_bind(vk, 4096, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, mem, 0,
                       &src) ||
       !vk_buffer_bind(vk, dst_size, VK_BUFFER_USAGE_TRANSFER_DST_BIT, mem,
                       dst_off, &dst))
      return false;
   VK_CHECK(vkMapMemory(vk->device, mem, 0, VK_WHOLE_SIZE, 0, (void **)&p));
   /* Different from what is there, in different atoms. */
   p[10] = (uint8_t)~p[10];
   p[100000] = (uint8_t)~p[100000];
   for (int k = 0; dst_too && k < 4; k++)
      p[dst_off + k] = (uint8_t)~p[8 + k];
   uint8_t want[4];
   memcpy(want, p + 8, 4);
   VkCommandBuffer cb;
   ok = vk_cmd_begin(vk, &cb);
   if (ok) {
      copy_cmd(cb, &src, 8, &dst, 0, 4);
      ok = vk_cmd_run(vk, cb) && !memcmp(p + dst_off, want, 4);
   }
   vkUnmapMemory(vk->device, mem);
   vk_buffer_destroy(vk, &src);
   vk_buffer_destroy(vk, &dst);
   vkFreeMemory(vk->device, mem, vk->alloc);
   const uint64_t atom = vk->atom;
   struct capture c;
   capture_begin(&c);
   vk_finish(vk);
   char *text = capture_end(&c);
   bool mode_ok = !mode || strstr(text, mode) != NULL;
   uint64_t flushed = device_stat(text, " atom-flushed");
   uint64_t invalidated = device_stat(text, " atom-invalidated");
   uint64_t merges = device_stat(text, " memory merges");
   free(text);
   VK_EXPECT(ok, "the copy saw the CPU's bytes and the CPU the GPU's");
   VK_EXPECT(mode_ok, "a device in %s mode", mode);
   VK_EXPECT(flushed == atoms * atom,
             "atom-flushed %" PRIu64 ", atom %" PRIu64 ", expected %" PRIu64
             " atoms",
             flushed, atom, atoms);
   VK_EXPECT(merges >= 1 && invalidated == merges * dst_size,
             "atom-invalidated %" PRIu64 " after %" PRIu64 " merges",
             invalidated, merges);
   return vk_init(vk, config);
}

/* Shadow mode on non-coherent memory (config noncoherent only). */
static bool
test_atoms(struct vk *vk)
{
   if (config != VK_CONFIG_NONCOHERENT) {
      skip_reason = "only with the noncoherent config";
      return true;
   }
   return atoms_case(vk, false, 2, NULL);
}

/* Direct mode (config direct only).  What lavapipe writes goes through the
 * CPU's page tables, so the collect before the invalidation reports it
 * too: the dst atom counts once more, which the test expects (on a real
 * device the DMA leaves no trace) -- three atoms written, four flushed. */
static bool
test_direct_atoms(struct vk *vk)
{
   if (config != VK_CONFIG_DIRECT) {
      skip_reason = "only with the direct config";
      return true;
   }
   return atoms_case(vk, true, 4, "(direct)");
}

/* The memory types the application sees, three ways; *coherent: one is
 * HOST_VISIBLE | HOST_COHERENT. */
static bool
memory_types_agree(struct vk *vk, bool *coherent)
{
   VkPhysicalDeviceMemoryProperties p1;
   VkPhysicalDeviceMemoryProperties2 p2 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
   };
   VkPhysicalDeviceMemoryProperties2 p3 = p2;
   vkGetPhysicalDeviceMemoryProperties(vk->physical, &p1);
   vkGetPhysicalDeviceMemoryProperties2(vk->physical, &p2);
   PFN_vkGetPhysicalDeviceMemoryProperties2KHR khr =
      (PFN_vkGetPhysicalDeviceMemoryProperties2KHR)vkGetInstanceProcAddr(
         vk->instance, "vkGetPhysicalDeviceMemoryProperties2KHR");
   if (khr)
      khr(vk->physical, &p3);
   else
      p3 = p2;
   VK_EXPECT(p1.memoryTypeCount == p2.memoryProperties.memoryTypeCount &&
                p1.memoryTypeCount == p3.memoryProperties.memoryTypeCount,
             "the same number of types");
   for (uint32_t i = 0; i < p1.memoryTypeCount; i++) {
      VkMemoryPropertyFlags f = p1.memoryTypes[i].propertyFlags;
      VK_EXPECT(f == p2.memoryProperties.memoryTypes[i].propertyFlags &&
                   f == p3.memoryProperties.memoryTypes[i].propertyFlags,
                "type %u: %#x, %#x, %#x", i, f,
                p2.memoryProperties.memoryTypes[i].propertyFlags,
                p3.memoryProperties.memoryTypes[i].propertyFlags);
   }
   const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                      VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
   *coherent = false;
   for (uint32_t i = 0; i < p1.memoryTypeCount; i++)
      *coherent |= (p1.memoryTypes[i].propertyFlags & want) == want;
   return true;
}

/* COHMAP_MODE=auto picks direct for a driver without coherent types and
 * device-local for one without host-visible types (as the pretend knob
 * makes lavapipe look), pass-through for lavapipe as it is; an explicit
 * mode with nothing to do passes through.  Memory properties agree in
 * the three queries and keep a HOST_VISIBLE | HOST_COHERENT type (and
 * the specification's order of types: vk_init checks it). */
static bool
test_auto_modes(struct vk *vk)
{
   if (config != VK_CONFIG_DIRECT) {
      skip_reason = "only with the direct config (one run is enough)";
      return true;
   }
   static const struct {
      const char *mode, *pretend, *want;
   } cases[] = {
      {"auto", "noncoherent", "(direct)"},
      {"auto", "device-local", "(device-local)"},
      {"auto", "none", NULL},
      {"direct", "none", NULL},
      {"device-local", "noncoherent", NULL},
   };
   vk_finish(vk);
   bool ok = true;
   for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]) && ok; i++) {
      printf("# COHMAP_MODE=%s COHMAP_VK_PRETEND=%s\n", cases[i].mode,
             cases[i].pretend);
      setenv("COHMAP_MODE", cases[i].mode, 1);
      setenv("COHMAP_VK_PRETEND", cases[i].pretend, 1);
      setenv("COHMAP_DEBUG", "stats", 1);
      vk_force_layer = true;
      struct capture c;
      capture_begin(&c);
      bool coherent = false;
      ok = vk_init(vk, VK_CONFIG_ENV) && memory_types_agree(vk, &coherent) &&
           test_cpu_to_gpu(vk);
      vk_finish(vk);
      char *text = capture_end(&c);
      vk_force_layer = false;
      unsetenv("COHMAP_DEBUG");
      bool line = strstr(text, "cohmap: vulkan: device") != NULL;
      bool want = cases[i].want && strstr(text, cases[i].want) != NULL;
      free(text);
      VK_EXPECT(ok, "the application works");
      VK_EXPECT(coherent, "a HOST_VISIBLE | HOST_COHERENT type");
      VK_EXPECT(cases[i].want ? want : !line, "mode %s",
                cases[i].want ? cases[i].want : "pass-through");
   }
   return vk_init(vk, config);
}

/* --- VK_EXT_external_memory_host ------------------------------------------
 */

/* Host memory imported as device memory: the application writes and reads
 * it through its own pointer, mapped or not, and through vkMapMemory's.
 * The layer cannot shadow it (docs/vulkan.md, "Memory left alone"); where
 * it advertises HOST_COHERENT on a type the driver does not keep coherent
 * (noncoherent, direct) it flushes and invalidates all of it, which the
 * stats counters show: lavapipe itself is coherent, so the data checks
 * alone cannot tell. */
static bool
test_host_import(struct vk *vk)
{
   if (!vk->host_import) {
      skip_reason = "the driver lacks VK_EXT_external_memory_host";
      return true;
   }
   if (config == VK_CONFIG_DEVICE_LOCAL) {
      /* Host memory imports into the driver's own types only, and the
       * pretend knob makes lavapipe's one type look device-local only
       * (the layer's host-visible type is an emulation appended after
       * it): no type here is both importable and host-visible. */
      skip_reason = "no host-visible importable type when lavapipe is "
                    "believed device-local only";
      return true;
   }
   bool counts =
      config == VK_CONFIG_NONCOHERENT || config == VK_CONFIG_DIRECT;
   if (counts) {
      vk_finish(vk);
      setenv("COHMAP_DEBUG", "stats", 1);
      bool ok = vk_init(vk, config);
      unsetenv("COHMAP_DEBUG");
      VK_EXPECT(ok, "init");
   }
   const VkExternalMemoryHandleTypeFlagBits handle =
      VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
   VkDeviceSize align = vk->host_import_align;
   VK_EXPECT(align > 0 && (align & (align - 1)) == 0,
             "minImportedHostPointerAlignment %" PRIu64 " a power of two",
             (uint64_t)align);
   const VkDeviceSize size = (256 * 1024 + align - 1) / align * align;
   uint8_t *host = NULL;
   VK_EXPECT(!posix_memalign((void **)&host,
                             align > 4096 ? (size_t)align : 4096,
                             (size_t)size),
             "host memory");
   memset(host, 0, size);

   PFN_vkGetMemoryHostPointerPropertiesEXT host_props =
      (PFN_vkGetMemoryHostPointerPropertiesEXT)vkGetDeviceProcAddr(
         vk->device, "vkGetMemoryHostPointerPropertiesEXT");
   VK_EXPECT(host_props, "vkGetMemoryHostPointerPropertiesEXT");
   VkMemoryHostPointerPropertiesEXT hpp = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT,
   };
   VK_CHECK(host_props(vk->device, handle, host, &hpp));

   VkExternalMemoryBufferCreateInfo ebci = {
      .sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO,
      .handleTypes = handle,
   };
   VkBufferCreateInfo bci = {
      .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
      .pNext = &ebci,
      .size = size,
      .usage =
         VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
      .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
   };
   struct vk_buffer imp = {.size = size};
   VK_CHECK(vkCreateBuffer(vk->device, &bci, vk->alloc, &imp.buffer));
   VkMemoryRequirements req;
   vkGetBufferMemoryRequirements(vk->device, imp.buffer, &req);
   /* A type the import allows, the buffer accepts, and the application
    * was told is host-visible and coherent (what it imports for). */
   VkPhysicalDeviceMemoryProperties mp;
   vkGetPhysicalDeviceMemoryProperties(vk->physical, &mp);
   const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                      VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
   uint32_t type = UINT32_MAX;
   for (uint32_t i = 0; i < mp.memoryTypeCount && type == UINT32_MAX; i++) {
      if ((hpp.memoryTypeBits & req.memoryTypeBits & (1u << i)) &&
          (mp.memoryTypes[i].propertyFlags & want) == want)
         type = i;
   }
   VK_EXPECT(type != UINT32_MAX && req.size <= size,
             "an importable type (host pointer %#x, buffer %#x), %" PRIu64
             " <= %" PRIu64 " bytes",
             hpp.memoryTypeBits, req.memoryTypeBits, (uint64_t)req.size,
             (uint64_t)size);
   VkImportMemoryHostPointerInfoEXT imi = {
      .sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT,
      .handleType = handle,
      .pHostPointer = host,
   };
   VkMemoryAllocateInfo mai = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
      .pNext = &imi,
      .allocationSize = size,
      .memoryTypeIndex = type,
   };
   VK_CHECK(vkAllocateMemory(vk->device, &mai, vk->alloc, &imp.memory));
   VK_CHECK(vkBindBufferMemory(vk->device, imp.buffer, imp.memory, 0));

   /* Not the import's size: the stats lines are found by size. */
   struct vk_buffer dst;
   uint8_t *model = calloc(1, size);
   bool ok = vk_buffer_create(vk, size + 4096,
                              VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                                 VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
                              true, &dst);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("host-import"));
   uint8_t *map = NULL;
   for (int round = 0; round < 6 && ok; round++) {
      /* Rounds 0-2 through the host pointer, unmapped; 3-5 mapped,
       * writing through vkMapMemory's pointer and reading both. */
      if (round == 3) {
         ok = vkMapMemory(vk->device, imp.memory, 0, VK_WHOLE_SIZE, 0,
                          (void **)&map) == VK_SUCCESS &&
              vk_bytes_equal("the mapping of imported memory", map, model,
                             size);
         if (!ok)
            break;
      }
      uint8_t *cpu = map ? map : host;
      /* CPU → GPU: sparse and dense writes, then a GPU copy out. */
      cpu_writes(&rng, round & 1 ? SPARSE : RANDOM, cpu, model, size);
      ok = gpu_copy(vk, &imp, 0, &dst, 0, size, round & 1) &&
           vk_bytes_equal("CPU → GPU, imported", dst.map, model, size);
      /* GPU → CPU: a fill and an update, observed by a fence wait, a
       * timeline wait or an event. */
      VkCommandBuffer cb;
      if (!ok || !vk_cmd_begin(vk, &cb)) {
         ok = false;
         break;
      }
      uint32_t pattern = (uint32_t)tu_rng_next(&rng);
      size_t fill_off = 4 * tu_rng_below(&rng, (size - 8192) / 4);
      vkCmdFillBuffer(cb, imp.buffer, fill_off, 4096, pattern);
      for (size_t i = 0; i < 4096; i++)
         model[fill_off + i] = (uint8_t)(pattern >> (8 * (i % 4)));
      uint8_t data[512];
      tu_rng_fill(&rng, data, sizeof(data));
      size_t upd_off = 4 * tu_rng_below(&rng, (size - 1024) / 4);
      VkMemoryBarrier mb = {
         .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
         .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
         .dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
      };
      vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                           VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, NULL,
                           0, NULL);
      vkCmdUpdateBuffer(cb, imp.buffer, upd_off, sizeof(data), data);
      memcpy(model + upd_off, data, sizeof(data));
      static const enum vk_completion how[] = {VK_COMPLETE_FENCE_WAIT,
                                               VK_COMPLETE_TIMELINE_WAIT,
                                               VK_COMPLETE_EVENT_POLL};
      enum vk_completion c = how[round % 3];
      ok = vk_cmd_submit(vk, cb, c, round & 1);
      if (ok)
         ok =
            vk_bytes_equal("GPU → CPU, host pointer", host, model, size) &&
            (!map || vk_bytes_equal("GPU → CPU, mapping", map, model, size));
      ok = vk_cmd_release(vk, cb) && ok;
   }
   if (map)
      vkUnmapMemory(vk->device, imp.memory);
   vk_buffer_destroy(vk, &dst);
   vkDestroyBuffer(vk->device, imp.buffer, vk->alloc);
   vkFreeMemory(vk->device, imp.memory, vk->alloc);
   free(model);
   if (!counts) {
      free(host);
      return ok;
   }

   /* The layer flushed the imported memory whole at every submission
    * (12 of them) and invalidated it at every completion it saw. */
   struct capture cap;
   capture_begin(&cap);
   vk_finish(vk);
   char *text = capture_end(&cap);
   free(host);
   char what[96];
   snprintf(what, sizeof(what), "memory of %" PRIu64 " bytes, type %u, ",
            (uint64_t)size, type);
   const char *line = strstr(text, what);
   const char *tail = line ? strstr(line, " conflicted, ") : NULL;
   uint64_t flushed = 0, invalidated = 0;
   if (tail)
      sscanf(tail, " conflicted, %" SCNu64 " atom-flushed, %" SCNu64,
             &flushed, &invalidated);
   free(text);
   VK_EXPECT(ok, "the data checks passed");
   VK_EXPECT(line, "a stats line for the imported memory ('%s')", what);
   VK_EXPECT(flushed >= 12 * size,
             "atom-flushed %" PRIu64 " >= 12 x %" PRIu64, flushed,
             (uint64_t)size);
   VK_EXPECT(invalidated >= 6 * size,
             "atom-invalidated %" PRIu64 " >= 6 x %" PRIu64, invalidated,
             (uint64_t)size);
   return vk_init(vk, config);
}

/* --- invalid usage --------------------------------------------------------
 */

/* The validation layer (below the cohmap layer) saw the invalid call made
 * since before: the layer must pass such calls down, not hide them. */
static bool
reported(const char *what, unsigned before)
{
   unsigned n = vk_validation_messages - before;
   printf("# %s: %u validation message%s\n", what, n, n == 1 ? "" : "s");
   vk_validation_expected += n;
   VK_EXPECT(n >= 1, "the validation layer reported %s", what);
   return true;
}

/* Invalid usage the validation layer reports: the layer must neither
 * crash (ASan leg) nor hide it from validation, must not hand out a
 * pointer for a refused map, and the memory must keep working. */
static bool
test_invalid_usage(struct vk *vk)
{
   const VkDeviceSize size = 64 * 1024;
   struct vk_buffer buf, check;
   if (!buffer_and_check(vk, size, true, &buf, &check))
      return false;
   uint8_t *model = malloc(size);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("invalid-usage"));
   tu_rng_fill(&rng, model, size);
   memcpy(buf.map, model, size);

   /* Without the layer lavapipe maps anything it is asked to (the
    * validation layer reports and calls down): only the layer must
    * refuse, as its pointer would not be coherent. */
   const bool layer = config != VK_CONFIG_NONE;
   unsigned n = vk_validation_messages;
   void *p = (void *)1;
   VkResult res =
      vkMapMemory(vk->device, buf.memory, 0, VK_WHOLE_SIZE, 0, &p);
   VK_EXPECT(!layer || res != VK_SUCCESS,
             "mapping mapped memory refused (%d)", res);
   if (config == VK_CONFIG_DEVICE_LOCAL) {
      /* The layer maps device-local memory itself, never in the driver:
       * the validation layer below cannot know it is mapped. */
      printf("# vkMapMemory of mapped memory: refused; validation cannot "
             "see device-local mode's own mappings\n");
      vk_validation_expected += vk_validation_messages - n;
   } else if (!reported("vkMapMemory of mapped memory", n)) {
      return false;
   }

   VkMappedMemoryRange r = {
      .sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
      .memory = buf.memory,
      .offset = size + 4 * vk->atom,
      .size = vk->atom,
   };
   n = vk_validation_messages;
   vkFlushMappedMemoryRanges(vk->device, 1, &r);
   if (!reported("vkFlushMappedMemoryRanges past the end", n))
      return false;
   n = vk_validation_messages;
   vkInvalidateMappedMemoryRanges(vk->device, 1, &r);
   if (!reported("vkInvalidateMappedMemoryRanges past the end", n))
      return false;
   /* Still mapped and working after all that. */
   bool ok = gpu_copy(vk, &buf, 0, &check, 0, size, false) &&
             vk_bytes_equal("after refused calls", check.map, model, size);

   vkUnmapMemory(vk->device, buf.memory);
   buf.map = NULL;
   n = vk_validation_messages;
   vkUnmapMemory(vk->device, buf.memory);
   if (!reported("vkUnmapMemory of unmapped memory", n))
      return false;
   r.offset = 0;
   r.size = VK_WHOLE_SIZE;
   n = vk_validation_messages;
   vkFlushMappedMemoryRanges(vk->device, 1, &r);
   if (!reported("vkFlushMappedMemoryRanges of unmapped memory", n))
      return false;
   n = vk_validation_messages;
   vkInvalidateMappedMemoryRanges(vk->device, 1, &r);
   if (!reported("vkInvalidateMappedMemoryRanges of unmapped memory", n))
      return false;

   VkMemoryRequirements req;
   vkGetBufferMemoryRequirements(vk->device, buf.buffer, &req);
   static const struct {
      const char *what;
      VkDeviceSize offset, size;
   } bad_maps[] = {
      {"vkMapMemory at offset == size", 0, VK_WHOLE_SIZE},
      {"vkMapMemory past the end", 0, 0},
      {"vkMapMemory of size 0", 4096, 0},
   };
   for (size_t i = 0; i < sizeof(bad_maps) / sizeof(*bad_maps); i++) {
      VkDeviceSize off = bad_maps[i].offset, len = bad_maps[i].size;
      if (i == 0)
         off = req.size;
      else if (i == 1)
         len = req.size + 4096;
      p = (void *)1;
      n = vk_validation_messages;
      res = vkMapMemory(vk->device, buf.memory, off, len, 0, &p);
      VK_EXPECT(!layer || res != VK_SUCCESS, "%s refused (%d)",
                bad_maps[i].what, res);
      if (res == VK_SUCCESS)
         vkUnmapMemory(vk->device, buf.memory);
      if (!reported(bad_maps[i].what, n))
         return false;
   }

   /* Valid, and nothing to do. */
   n = vk_validation_messages;
   vkFreeMemory(vk->device, VK_NULL_HANDLE, vk->alloc);
   VK_EXPECT(vk_validation_messages == n, "vkFreeMemory(VK_NULL_HANDLE) is "
                                          "valid usage");

   /* The data survived the refused maps: a valid map sees it, and the
    * device still takes new writes. */
   uint8_t *m;
   VK_CHECK(
      vkMapMemory(vk->device, buf.memory, 0, VK_WHOLE_SIZE, 0, (void **)&m));
   ok = ok && vk_bytes_equal("mapping again", m, model, size);
   m[7] = model[7] = (uint8_t)(model[7] + 1);
   ok = ok && gpu_copy(vk, &buf, 0, &check, 0, size, true) &&
        vk_bytes_equal("after mapping again", check.map, model, size);
   vkUnmapMemory(vk->device, buf.memory);
   free(model);
   vk_buffer_destroy(vk, &buf);
   vk_buffer_destroy(vk, &check);
   VK_EXPECT(ok, "the memory kept working");

   /* A device destroyed with memory still allocated and mapped: the
    * layer's records go with it (ASan), validation reports the leak.
    * lavapipe leaks such memory, so this runs in a child that leaves
    * with _exit(), before LeakSanitizer's exit-time check. */
   vk_finish(vk);
   fflush(stdout);
   pid_t pid = fork();
   VK_EXPECT(pid >= 0, "fork");
   if (pid == 0) {
      VkDeviceMemory leak;
      if (!vk_init(vk, config) || !vk_memory_alloc(vk, size, &leak) ||
          vkMapMemory(vk->device, leak, 0, VK_WHOLE_SIZE, 0, (void **)&m) !=
             VK_SUCCESS)
         _exit(2);
      memset(m, 0x5a, size);
      n = vk_validation_messages;
      vk_finish(vk);
      fflush(stdout);
      _exit(vk_validation_messages > n ? 0 : 1);
   }
   int status = 0;
   VK_EXPECT(waitpid(pid, &status, 0) == pid, "waitpid");
   VK_EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0,
             "vkDestroyDevice with memory mapped: reported and no crash "
             "(status %#x: exit 1 = no validation message)",
             status);
   printf("# vkDestroyDevice with memory mapped: reported (in a child)\n");
   return vk_init(vk, config);
}

/* --- two threads, one queue -----------------------------------------------
 */

struct queue_user {
   struct vk *vk;
   pthread_mutex_t *queue_lock; /* the queue is externally synchronized */
   VkCommandPool pool;
   struct vk_buffer src, dst;
   int index;
   bool ok;
};

static void *
queue_user_main(void *arg)
{
   struct queue_user *u = arg;
   struct vk *vk = u->vk;
   const size_t size = u->src.size;
   uint8_t *model = calloc(1, size);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("one-queue") + (uint64_t)u->index);
   u->ok = model != NULL;
   for (int round = 0; round < 40 && u->ok; round++) {
      cpu_writes(&rng, (enum pattern)(round % 3), u->src.map, model, size);
      VkCommandBufferAllocateInfo cai = {
         .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
         .commandPool = u->pool,
         .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
         .commandBufferCount = 1,
      };
      VkCommandBufferBeginInfo bi = {
         .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
         .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
      };
      VkCommandBuffer cb;
      if (vkAllocateCommandBuffers(vk->device, &cai, &cb) != VK_SUCCESS) {
         u->ok = false;
         break;
      }
      /* The GPU also writes the source's first word: merged back while
       * the other thread writes its own memory. */
      uint32_t word = (uint32_t)round * 0x01000193u + (uint32_t)u->index;
      VkFence fence = VK_NULL_HANDLE;
      VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
      u->ok = vkBeginCommandBuffer(cb, &bi) == VK_SUCCESS;
      if (u->ok) {
         copy_cmd(cb, &u->src, 0, &u->dst, 0, size);
         VkMemoryBarrier mb = {
            .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
            .srcAccessMask = VK_ACCESS_TRANSFER_READ_BIT,
            .dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
         };
         vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                              VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0,
                              NULL, 0, NULL);
         vkCmdFillBuffer(cb, u->src.buffer, 0, 4, word);
         mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
         mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
         vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                              VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL,
                              0, NULL);
         u->ok = vkEndCommandBuffer(cb) == VK_SUCCESS &&
                 vkCreateFence(vk->device, &fci, NULL, &fence) == VK_SUCCESS;
      }
      if (u->ok) {
         /* Thread 0 uses vkQueueSubmit, thread 1 vkQueueSubmit2. */
         pthread_mutex_lock(u->queue_lock);
         if (u->index == 0) {
            VkSubmitInfo si = {
               .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
               .commandBufferCount = 1,
               .pCommandBuffers = &cb,
            };
            u->ok = vkQueueSubmit(vk->queue, 1, &si, fence) == VK_SUCCESS;
         } else {
            VkCommandBufferSubmitInfo cbi = {
               .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_SUBMIT_INFO,
               .commandBuffer = cb,
            };
            VkSubmitInfo2 si = {
               .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO_2,
               .commandBufferInfoCount = 1,
               .pCommandBufferInfos = &cbi,
            };
            u->ok = vkQueueSubmit2(vk->queue, 1, &si, fence) == VK_SUCCESS;
         }
         pthread_mutex_unlock(u->queue_lock);
         u->ok = u->ok && vkWaitForFences(vk->device, 1, &fence, VK_TRUE,
                                          UINT64_MAX) == VK_SUCCESS;
      }
      if (u->ok) {
         char what[64];
         snprintf(what, sizeof(what), "thread %d round %d copy", u->index,
                  round);
         u->ok = vk_bytes_equal(what, u->dst.map, model, size);
         memcpy(model, &word, 4);
         snprintf(what, sizeof(what), "thread %d round %d mapping", u->index,
                  round);
         u->ok = u->ok && vk_bytes_equal(what, u->src.map, model, size);
      }
      vkDestroyFence(vk->device, fence, NULL);
      vkFreeCommandBuffers(vk->device, u->pool, 1, &cb);
   }
   free(model);
   return NULL;
}

/* Two threads submit to the same queue (a mutex: queues are externally
 * synchronized), with vkQueueSubmit and vkQueueSubmit2, each writing its
 * own memories with the CPU and the GPU and checking both directions. */
static bool
test_one_queue(struct vk *vk)
{
   uint32_t families = 0;
   vkGetPhysicalDeviceQueueFamilyProperties(vk->physical, &families, NULL);
   VkQueueFamilyProperties qf[8];
   if (families > 8)
      families = 8;
   vkGetPhysicalDeviceQueueFamilyProperties(vk->physical, &families, qf);
   uint32_t queues = 0;
   for (uint32_t i = 0; i < families; i++)
      queues += qf[i].queueCount;
   if (queues < 2)
      printf("# the driver has %u queue famil%s with %u queue%s in all: "
             "several queues cannot be tested here (test 'threads' uses "
             "two where a device has them); two threads share one\n",
             families, families == 1 ? "y" : "ies", queues,
             queues == 1 ? "" : "s");

   enum { USERS = 2 };
   const size_t size = 128 * 1024;
   pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
   struct queue_user u[USERS];
   pthread_t t[USERS];
   memset(u, 0, sizeof(u));
   bool ok = true;
   for (int i = 0; i < USERS && ok; i++) {
      u[i].vk = vk;
      u[i].queue_lock = &queue_lock;
      u[i].index = i;
      VkCommandPoolCreateInfo pci = {
         .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
         .queueFamilyIndex = vk->queue_family,
      };
      ok = vkCreateCommandPool(vk->device, &pci, NULL, &u[i].pool) ==
              VK_SUCCESS &&
           vk_buffer_create(vk, size,
                            VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                               VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                            true, &u[i].src) &&
           vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_DST_BIT, true,
                            &u[i].dst);
   }
   VK_EXPECT(ok, "pools and buffers");
   for (int i = 0; i < USERS; i++)
      pthread_create(&t[i], NULL, queue_user_main, &u[i]);
   for (int i = 0; i < USERS; i++) {
      pthread_join(t[i], NULL);
      ok &= u[i].ok;
   }
   for (int i = 0; i < USERS; i++) {
      vk_buffer_destroy(vk, &u[i].src);
      vk_buffer_destroy(vk, &u[i].dst);
      vkDestroyCommandPool(vk->device, u[i].pool, NULL);
   }
   return ok;
}

/* --- main ------------------------------------------------------------------
 */

/* --- COHMAP_DEBUG=verify ---------------------------------------------------
 */

/* The layer's verify summary line: checks and mismatches (UINT64_MAX if
 * absent). */
static void
verify_counts(const char *text, uint64_t *checks, uint64_t *mismatches)
{
   *checks = *mismatches = UINT64_MAX;
   const char *line = strstr(text, "): verify: ");
   if (line)
      sscanf(line, "): verify: %" SCNu64 " checks, %" SCNu64, checks,
             mismatches);
}

static const char *
verify_skip(void)
{
   if (config != VK_CONFIG_SHADOW && config != VK_CONFIG_NONCOHERENT)
      return "verify covers shadow mode only";
   return NULL;
}

/* The data tests under COHMAP_DEBUG=verify: many checks, no mismatch. */
static bool
test_verify_clean(struct vk *vk)
{
   if ((skip_reason = verify_skip()))
      return true;
   vk_finish(vk);
   setenv("COHMAP_DEBUG", "verify,stats", 1);
   bool ok = vk_init(vk, config) && test_cpu_to_gpu(vk) &&
             test_gpu_to_cpu(vk) && test_disjoint(vk) && test_threads(vk) &&
             test_many_small(vk);
   unsetenv("COHMAP_DEBUG");
   struct capture c;
   capture_begin(&c);
   vk_finish(vk);
   char *text = capture_end(&c);
   uint64_t checks, mismatches;
   verify_counts(text, &checks, &mismatches);
   bool reports = strstr(text, "cohmap: verify:") != NULL;
   free(text);
   VK_EXPECT(ok, "the tests themselves passed");
   VK_EXPECT(checks != UINT64_MAX && checks > 1000, "%" PRIu64 " checks",
             checks);
   VK_EXPECT(mismatches == 0, "%" PRIu64 " mismatches", mismatches);
   VK_EXPECT(!reports, "no 'cohmap: verify:' line");
   return vk_init(vk, config);
}

/* A real write the tracking engine cannot see: with the fault method a
 * write through /proc/self/mem (a kernel write, FOLL_FORCE) lands in a
 * write-protected page without a fault, so it is never reported and the
 * GPU never gets it.  verify must say so, at the upload after next. */
static bool
test_verify_miss(struct vk *vk)
{
   if ((skip_reason = verify_skip()))
      return true;
   vk_finish(vk);
   setenv("COHMAP_DEBUG", "verify,stats", 1);
   setenv("COHMAP_METHOD", "fault", 1);
   bool ok = vk_init(vk, config);
   unsetenv("COHMAP_DEBUG");
   unsetenv("COHMAP_METHOD");
   const size_t size = 64 * 1024, at = 5000;
   struct vk_buffer src = {0}, dst = {0};
   bool made = ok &&
               vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
                                true, &src) &&
               vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                true, &dst);
   VK_EXPECT(made, "a device and two mapped buffers");

   /* The report comes at the third submission; stderr is kept from
    * here on (no early return before capture_end()). */
   struct capture c;
   capture_begin(&c);
   uint8_t *map = src.map;
   map[100] = 0x11; /* a store the engine sees */
   ok = gpu_copy(vk, &src, 0, &dst, 0, size, false) && dst.map[100] == 0x11;

   int fd = open("/proc/self/mem", O_RDWR);
   const uint8_t v = 0xa5;
   bool wrote = fd >= 0 &&
                pwrite(fd, &v, 1, (off_t)(uintptr_t)(map + at)) == 1 &&
                map[at] == v;
   if (fd >= 0)
      close(fd);
   /* The collect after the write sees nothing, the one after it finds
    * the byte still differing: reported then. */
   for (int i = 0; i < 2 && ok; i++)
      ok = gpu_copy(vk, &src, 0, &dst, 0, size, false);
   bool lost = dst.map[at] != v;
   vk_buffer_destroy(vk, &src);
   vk_buffer_destroy(vk, &dst);
   vk_finish(vk);
   char *text = capture_end(&c);

   uint64_t checks, mismatches;
   verify_counts(text, &checks, &mismatches);
   bool said = strstr(text, "cohmap: verify: memory ") &&
               strstr(text, "never reported by the tracking engine");
   bool fault = strstr(text, ", fault)") != NULL;
   free(text);
   VK_EXPECT(ok, "the copies ran");
   if (!wrote) {
      skip_reason = "/proc/self/mem cannot write this process's memory";
      return vk_init(vk, config);
   }
   VK_EXPECT(fault, "the fault method in use");
   VK_EXPECT(lost, "the GPU did not get the byte (a real miss)");
   VK_EXPECT(checks != UINT64_MAX && checks >= 3, "%" PRIu64 " checks",
             checks);
   VK_EXPECT(mismatches == 1, "1 mismatch, not %" PRIu64, mismatches);
   VK_EXPECT(said, "a 'cohmap: verify:' line naming the missed write");
   return vk_init(vk, config);
}

/* --- dedicated allocations ------------------------------------------------
 */

/* Memory allocated for one buffer (VkMemoryDedicatedAllocateInfo, as VMA
 * does for large buffers), mapped before and after the bind: CPU → GPU
 * and GPU → CPU through it.  Nothing else may be bound to such memory
 * (VUID-vkBindBufferMemory-memory-01508), so device-local mode's staging
 * copies must go through the application's own buffer. */
static bool
test_dedicated(struct vk *vk)
{
   const VkDeviceSize size = 256 * 1024;
   VkBufferCreateInfo bci = {
      .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
      .size = size,
      .usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
      .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
   };
   VkBuffer src;
   VK_CHECK(vkCreateBuffer(vk->device, &bci, vk->alloc, &src));
   VkMemoryRequirements req;
   vkGetBufferMemoryRequirements(vk->device, src, &req);
   VK_EXPECT(req.memoryTypeBits & (1u << vk->host_type), "host-visible");
   VkMemoryDedicatedAllocateInfo dai = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_DEDICATED_ALLOCATE_INFO,
      .buffer = src,
   };
   VkMemoryAllocateInfo ai = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
      .pNext = &dai,
      .allocationSize = req.size,
      .memoryTypeIndex = vk->host_type,
   };
   VkDeviceMemory mem;
   VK_CHECK(vkAllocateMemory(vk->device, &ai, vk->alloc, &mem));
   /* Mapped before the bind (valid), written after it. */
   uint8_t *p;
   VK_CHECK(vkMapMemory(vk->device, mem, 0, VK_WHOLE_SIZE, 0, (void **)&p));
   VK_CHECK(vkBindBufferMemory(vk->device, src, mem, 0));
   static uint8_t want[256 * 1024];
   for (size_t i = 0; i < sizeof(want); i++)
      want[i] = (uint8_t)(i * 29 + 1);
   memcpy(p, want, sizeof(want));

   struct vk_buffer dst;
   if (!vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_DST_BIT, true,
                         &dst))
      return false;
   struct vk_buffer srcb = {.buffer = src, .memory = mem, .size = size};
   if (!gpu_copy(vk, &srcb, 0, &dst, 0, size, false) ||
       !vk_bytes_equal("copied from dedicated memory", dst.map, want,
                       sizeof(want)))
      return false;

   /* GPU → CPU into the dedicated memory: fill a range, then unmap,
    * re-map and check the bytes persist. */
   vkDestroyBuffer(vk->device, src, vk->alloc);
   vkUnmapMemory(vk->device, mem);
   vkFreeMemory(vk->device, mem, vk->alloc);

   bci.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
   VK_CHECK(vkCreateBuffer(vk->device, &bci, vk->alloc, &src));
   dai.buffer = src;
   VK_CHECK(vkAllocateMemory(vk->device, &ai, vk->alloc, &mem));
   VK_CHECK(vkBindBufferMemory(vk->device, src, mem, 0));
   VK_CHECK(vkMapMemory(vk->device, mem, 0, VK_WHOLE_SIZE, 0, (void **)&p));
   memset(p, 0x33, size);
   VkCommandBuffer cb;
   if (!vk_cmd_begin(vk, &cb))
      return false;
   vkCmdFillBuffer(cb, src, 4096, 8192, 0x5a5a5a5au);
   if (!vk_cmd_run(vk, cb))
      return false;
   memset(want, 0x33, sizeof(want));
   memset(want + 4096, 0x5a, 8192);
   if (!vk_bytes_equal("dedicated memory after a GPU fill", p, want,
                       sizeof(want)))
      return false;
   vkUnmapMemory(vk->device, mem);
   VK_CHECK(vkMapMemory(vk->device, mem, 0, VK_WHOLE_SIZE, 0, (void **)&p));
   bool ok = vk_bytes_equal("dedicated memory re-mapped", p, want,
                            sizeof(want));
   vkUnmapMemory(vk->device, mem);
   vkDestroyBuffer(vk->device, src, vk->alloc);
   vkFreeMemory(vk->device, mem, vk->alloc);
   vk_buffer_destroy(vk, &dst);
   return ok;
}

/* --- host signals ---------------------------------------------------------
 */

/* A batch submitted first waits for a host signal, then copies a mapped
 * buffer; the CPU writes the buffer after the submission and before the
 * signal.  The signal is what makes the writes visible to the waiting
 * batch: an event set by vkSetEvent with a HOST_WRITE → TRANSFER_READ
 * barrier in vkCmdWaitEvents (the specification's own example), and a
 * timeline semaphore signalled by vkSignalSemaphore.  Device-local mode
 * cannot upload at a host signal (docs/vulkan.md): it is not run there. */
static bool
host_signal_case(struct vk *vk, bool use_event)
{
   const VkDeviceSize size = 64 * 1024;
   struct vk_buffer src, dst;
   if (!vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, true,
                         &src) ||
       !vk_buffer_create(vk, size, VK_BUFFER_USAGE_TRANSFER_DST_BIT, true,
                         &dst))
      return false;
   memset(src.map, 0x11, size);
   memset(dst.map, 0, size);

   VkEvent event = VK_NULL_HANDLE;
   VkSemaphore timeline = VK_NULL_HANDLE;
   if (use_event) {
      VkEventCreateInfo eci = {.sType = VK_STRUCTURE_TYPE_EVENT_CREATE_INFO};
      VK_CHECK(vkCreateEvent(vk->device, &eci, vk->alloc, &event));
   } else {
      VkSemaphoreTypeCreateInfo sti = {
         .sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO,
         .semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE,
      };
      VkSemaphoreCreateInfo sci = {
         .sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO,
         .pNext = &sti,
      };
      VK_CHECK(vkCreateSemaphore(vk->device, &sci, vk->alloc, &timeline));
   }

   VkCommandBufferAllocateInfo cai = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
      .commandPool = vk->pool,
      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
      .commandBufferCount = 1,
   };
   VkCommandBuffer cb;
   VK_CHECK(vkAllocateCommandBuffers(vk->device, &cai, &cb));
   VkCommandBufferBeginInfo bi = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
   };
   VK_CHECK(vkBeginCommandBuffer(cb, &bi));
   if (use_event) {
      VkMemoryBarrier mb = {
         .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
         .srcAccessMask = VK_ACCESS_HOST_WRITE_BIT,
         .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT,
      };
      vkCmdWaitEvents(cb, 1, &event, VK_PIPELINE_STAGE_HOST_BIT,
                      VK_PIPELINE_STAGE_TRANSFER_BIT, 1, &mb, 0, NULL, 0,
                      NULL);
   }
   VkBufferCopy r = {0, 0, size};
   vkCmdCopyBuffer(cb, src.buffer, dst.buffer, 1, &r);
   vk_cmd_transfer_to_host(cb);
   VK_CHECK(vkEndCommandBuffer(cb));

   const uint64_t wait_value = 1;
   VkPipelineStageFlags wait_stage = VK_PIPELINE_STAGE_TRANSFER_BIT;
   VkTimelineSemaphoreSubmitInfo tsi = {
      .sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
      .waitSemaphoreValueCount = 1,
      .pWaitSemaphoreValues = &wait_value,
   };
   VkSubmitInfo si = {
      .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
      .pNext = use_event ? NULL : &tsi,
      .waitSemaphoreCount = use_event ? 0 : 1,
      .pWaitSemaphores = &timeline,
      .pWaitDstStageMask = &wait_stage,
      .commandBufferCount = 1,
      .pCommandBuffers = &cb,
   };
   VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
   VkFence fence;
   VK_CHECK(vkCreateFence(vk->device, &fci, vk->alloc, &fence));
   VK_CHECK(vkQueueSubmit(vk->queue, 1, &si, fence));

   /* After the submission, before the signal. */
   static uint8_t want[64 * 1024];
   for (size_t i = 0; i < sizeof(want); i++)
      want[i] = (uint8_t)(i * 13 + 5);
   memcpy(src.map, want, sizeof(want));
   if (use_event) {
      VK_CHECK(vkSetEvent(vk->device, event));
   } else {
      VkSemaphoreSignalInfo ssi = {
         .sType = VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO,
         .semaphore = timeline,
         .value = wait_value,
      };
      VK_CHECK(vkSignalSemaphore(vk->device, &ssi));
   }
   VK_CHECK(vkWaitForFences(vk->device, 1, &fence, VK_TRUE, UINT64_MAX));
   bool ok = vk_bytes_equal(use_event ? "copied after vkSetEvent"
                                      : "copied after vkSignalSemaphore",
                            dst.map, want, sizeof(want));
   vkDestroyFence(vk->device, fence, vk->alloc);
   vkFreeCommandBuffers(vk->device, vk->pool, 1, &cb);
   if (event)
      vkDestroyEvent(vk->device, event, vk->alloc);
   if (timeline)
      vkDestroySemaphore(vk->device, timeline, vk->alloc);
   vk_buffer_destroy(vk, &src);
   vk_buffer_destroy(vk, &dst);
   return ok;
}

static bool
test_host_signal(struct vk *vk)
{
   if (config == VK_CONFIG_DEVICE_LOCAL) {
      skip_reason = "device-local mode does not upload at host signals "
                    "(docs/vulkan.md)";
      return true;
   }
   return host_signal_case(vk, true) && host_signal_case(vk, false);
}

struct test {
   const char *name;
   bool (*fn)(struct vk *vk);
   bool layer_only;
};

static const struct test tests[] = {
   {"cpu-to-gpu", test_cpu_to_gpu, false},
   {"gpu-to-cpu", test_gpu_to_cpu, false},
   {"disjoint", test_disjoint, false},
   {"offset-map", test_offset_map, false},
   {"remap", test_remap, false},
   {"threads", test_threads, false},
   {"many-small", test_many_small, false},
   {"free-mapped", test_free_mapped, false},
   {"allocator", test_allocator, false},
   {"stats", test_stats, true},
   {"bad-mode", test_bad_mode, true},
   {"atoms", test_atoms, true},
   {"direct-atoms", test_direct_atoms, true},
   {"auto-modes", test_auto_modes, true},
   {"verify-clean", test_verify_clean, true},
   {"verify-miss", test_verify_miss, true},
   {"host-import", test_host_import, false},
   {"invalid-usage", test_invalid_usage, false},
   {"one-queue", test_one_queue, false},
   {"host-signal", test_host_signal, false},
   {"dedicated", test_dedicated, false},
};

int
main(int argc, char **argv)
{
   setvbuf(stdout, NULL, _IOLBF, 0);
   if (argc < 2 || !vk_config_parse(argv[1], &config)) {
      fprintf(stderr,
              "usage: %s none|shadow|noncoherent|direct|device-local|env "
              "[TEST...]\n",
              argv[0]);
      return 2;
   }
   vk_require_machine();

   size_t n = sizeof(tests) / sizeof(tests[0]);
   printf("1..%zu\n", n);
   int failed = 0;
   for (size_t i = 0; i < n; i++) {
      const struct test *t = &tests[i];
      bool selected = argc == 2;
      for (int a = 2; a < argc; a++)
         selected |= !strcmp(argv[a], t->name);
      if (!selected || (t->layer_only && config == VK_CONFIG_NONE)) {
         printf("ok %zu - %s # SKIP %s\n", i + 1, t->name,
                selected ? "needs the layer" : "not selected");
         continue;
      }
      static VkAllocationCallbacks counting = {
         .pfnAllocation = count_alloc,
         .pfnReallocation = count_realloc,
         .pfnFree = count_free,
      };
      struct vk vk = {0};
      bool use_alloc = t->fn == test_allocator;
      vk.alloc = use_alloc ? &counting : NULL;
      outstanding = total_allocs = 0;
      unsigned before = vk_validation_messages;
      unsigned expected = vk_validation_expected;
      vk_test_failed = false;
      bool ok = vk_init(&vk, config);
      ok = ok && t->fn(&vk);
      vk_finish(&vk);
      unsigned unexpected = (vk_validation_messages - before) -
                            (vk_validation_expected - expected);
      if (unexpected) {
         printf("# %u validation messages\n", unexpected);
         ok = false;
      }
      if (use_alloc && outstanding != 0) {
         printf("# %ld allocations of %ld not freed through the "
                "application's allocator\n",
                outstanding, total_allocs);
         ok = false;
      }
      ok = ok && !vk_test_failed;
      if (ok && skip_reason)
         printf("ok %zu - %s # SKIP %s\n", i + 1, t->name, skip_reason);
      else
         printf("%s %zu - %s\n", ok ? "ok" : "not ok", i + 1, t->name);
      skip_reason = NULL;
      failed += !ok;
   }
   return failed ? 1 : 0;
}
