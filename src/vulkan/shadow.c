/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: shadow mode
 *
 * The pointer vkMapMemory gives the application is not the driver's: it
 * is a cohmap region (tracked, with a snapshot: COHMAP_REGION_BYTE_EXACT)
 * holding a copy of the mapped bytes.  The driver's own mapping, which the
 * layer keeps for as long as the application's, plays the device memory:
 * on lavapipe it is literally what the GPU reads and writes, on a
 * non-coherent driver it is a cached view the layer flushes and
 * invalidates itself.
 *
 *  1. CPU → GPU: before vkQueueSubmit, vkQueueSubmit2(KHR) and
 *     vkQueueBindSparse the layer collects every mapped memory of the
 *     device (a layer does not know which memories a command buffer uses)
 *     and copies the reported bytes into the driver's mapping, then
 *     flushes them, atom-aligned, if the driver's type is not coherent.
 *     The bytes come from the region's snapshot and are exactly those
 *     that differ from it, so bytes the GPU wrote and the CPU did not are
 *     never overwritten with stale CPU data.
 *  2. GPU → CPU: when the host observes completion (a fence wait or
 *     status, queue or device wait idle, a timeline semaphore wait or
 *     value, an event's status) the GPU's writes are merged into the
 *     shadow with cohmap_region_merge(): a byte the driver's copy changed
 *     relative to the snapshot is taken into the shadow if the CPU did not
 *     change it too (docs/winsys.md, "the merge rule").  Eager, like the
 *     winsys, for the same reasons.
 *  3. Only memory the GPU can write is merged: ranges bound to a buffer or
 *     image whose usage allows a device write (write_usage below).  The
 *     rest cannot differ from the snapshot, and skipping it keeps the
 *     completion path free for the common persistent upload buffer.
 *  4. A device lock is held across each whole upload and each whole
 *     merge, so that the snapshot is always exactly what the driver's
 *     memory was last given or last gave.  Application threads keep
 *     writing their mappings meanwhile: the tracking core guarantees that
 *     a racing store is reported by this collect or the next.
 *  5. vkUnmapMemory uploads what is pending and drops the shadow; the
 *     driver's memory then holds everything, and the next vkMapMemory
 *     loads the shadow from it.  vkFreeMemory while mapped drops it
 *     without an upload (the memory is gone).
 *
 * Memory the application can reach some other way — imported host
 * pointers, memory imported from or exported to other APIs and processes
 * — is passed through untouched: a shadow would not see the other side's
 * writes.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "track/track_priv.h"
#include "vulkan/layer.h"

static VkDeviceSize
page_size(void)
{
   static VkDeviceSize size;
   if (!size) {
      long s = sysconf(_SC_PAGESIZE);
      size = s > 0 ? (VkDeviceSize)s : 4096;
   }
   return size;
}

static VkDeviceSize
align_down(VkDeviceSize v, VkDeviceSize a)
{
   return v / a * a;
}

static VkDeviceSize
align_up(VkDeviceSize v, VkDeviceSize a)
{
   return (v + a - 1) / a * a;
}

static VkResult
vk_result_from_errno(int err)
{
   return err == -ENOMEM ? VK_ERROR_OUT_OF_HOST_MEMORY : VK_ERROR_UNKNOWN;
}

/*
 * What the GPU can write.  A buffer's or image's usage says which device
 * accesses are legal (Vulkan 1.3, "Valid Usage" of every command that
 * writes memory requires a usage bit): transfers need TRANSFER_DST,
 * shader stores STORAGE_*, attachments *_ATTACHMENT, transform feedback
 * its two bits, device addresses SHADER_DEVICE_ADDRESS (a physical
 * storage buffer pointer can be stored through).  Rather than list the
 * writing bits, list the read-only ones: a bit this layer does not know
 * (a newer extension) then counts as writable, which costs a merge but
 * never loses a GPU write.
 */
static bool
buffer_write_usage(VkBufferUsageFlags usage)
{
   const VkBufferUsageFlags read_only =
      VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
      VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT |
      VK_BUFFER_USAGE_UNIFORM_BUFFER_BIT | VK_BUFFER_USAGE_INDEX_BUFFER_BIT |
      VK_BUFFER_USAGE_VERTEX_BUFFER_BIT |
      VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT |
      VK_BUFFER_USAGE_CONDITIONAL_RENDERING_BIT_EXT;
   return (usage & ~read_only) != 0;
}

static bool
image_write_usage(VkImageUsageFlags usage)
{
   const VkImageUsageFlags read_only =
      VK_IMAGE_USAGE_TRANSFER_SRC_BIT | VK_IMAGE_USAGE_SAMPLED_BIT |
      VK_IMAGE_USAGE_INPUT_ATTACHMENT_BIT |
      VK_IMAGE_USAGE_FRAGMENT_DENSITY_MAP_BIT_EXT |
      VK_IMAGE_USAGE_FRAGMENT_SHADING_RATE_ATTACHMENT_BIT_KHR;
   return (usage & ~read_only) != 0;
}

/* The layer's record of the device a dispatchable handle belongs to. */
static struct cm_device *
any_device(const void *dispatchable)
{
   return cm_device_from_key(cm_key(dispatchable));
}

static struct cm_memory *
find_memory(struct cm_device *dev, VkDeviceMemory handle)
{
   uint64_t v;
   if (!cm_map_get(&dev->memories, (uint64_t)(uintptr_t)handle, &v))
      return NULL;
   return (struct cm_memory *)(uintptr_t)v;
}

/* --- device set-up --------------------------------------------------------
 */

void
cm_shadow_fix_memory_properties(const struct cm_instance *inst,
                                VkPhysicalDeviceMemoryProperties *p)
{
   for (uint32_t i = 0; i < p->memoryTypeCount; i++) {
      VkMemoryPropertyFlags *f = &p->memoryTypes[i].propertyFlags;
      if (*f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)
         *f |= VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
   }
}

VkResult
cm_shadow_device_init(struct cm_device *dev)
{
   struct cm_instance *inst = dev->instance;
   const VkAllocationCallbacks *a = &dev->alloc;

   inst->next.GetPhysicalDeviceMemoryProperties(dev->physical, &dev->props);
   if (inst->pretend & CM_PRETEND_NONCOHERENT) {
      for (uint32_t i = 0; i < dev->props.memoryTypeCount; i++)
         dev->props.memoryTypes[i].propertyFlags &=
            ~(VkMemoryPropertyFlags)VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
   }
   VkPhysicalDeviceProperties pp;
   inst->next.GetPhysicalDeviceProperties(dev->physical, &pp);
   dev->atom =
      pp.limits.nonCoherentAtomSize ? pp.limits.nonCoherentAtomSize : 1;

   int ret = cohmap_context_create(NULL, &dev->ctx);
   if (ret)
      return vk_result_from_errno(ret);
   dev->stats = dev->ctx->debug & COHMAP_DEBUG_STATS;
   /* The device's lines at vkDestroyDevice say what the regions' would,
    * once per memory instead of once per map. */
   dev->ctx->debug &= ~(uint64_t)COHMAP_DEBUG_STATS;

   cm_map_init(&dev->memories, a);
   cm_map_init(&dev->writable_buffers, a);
   cm_map_init(&dev->writable_images, a);
   return VK_SUCCESS;
}

static void
stats_add(struct cm_memory_stats *t, const struct cm_memory_stats *s)
{
   t->maps += s->maps;
   t->flushes += s->flushes;
   t->bytes_flushed += s->bytes_flushed;
   t->bytes_merged += s->bytes_merged;
   t->bytes_conflicted += s->bytes_conflicted;
   t->bytes_atom_flushed += s->bytes_atom_flushed;
   t->bytes_atom_invalidated += s->bytes_atom_invalidated;
}

static uint64_t
activity(const struct cm_memory_stats *s)
{
   return s->bytes_flushed + s->bytes_merged;
}

/* Keeps the CM_STATS_LINES most active memories for the stats lines and
 * sums the others. */
static void
stats_record(struct cm_device *dev, const struct cm_memory *mem)
{
   stats_add(&dev->total, &mem->stats);
   if (!dev->stats || mem->stats.maps == 0)
      return;
   struct cm_memory_record rec = {
      .size = mem->size,
      .type = mem->type,
      .stats = mem->stats,
      .method = mem->last_method,
   };
   uint32_t slot = dev->top_count;
   if (dev->top_count == CM_STATS_LINES) {
      slot = 0;
      for (uint32_t i = 1; i < CM_STATS_LINES; i++) {
         if (activity(&dev->top[i].stats) < activity(&dev->top[slot].stats))
            slot = i;
      }
      if (activity(&dev->top[slot].stats) >= activity(&rec.stats)) {
         dev->other_count++;
         stats_add(&dev->other, &rec.stats);
         return;
      }
      dev->other_count++;
      stats_add(&dev->other, &dev->top[slot].stats);
   } else {
      dev->top_count++;
   }
   dev->top[slot] = rec;
}

static void
print_stats_line(const char *what, const struct cm_memory_stats *s)
{
   fprintf(
      stderr,
      "cohmap: vulkan:   %s: %" PRIu64 " maps, %" PRIu64 " uploads, %" PRIu64
      " bytes flushed, %" PRIu64 " merged, %" PRIu64 " conflicted, %" PRIu64
      " atom-flushed, %" PRIu64 " atom-invalidated\n",
      what, s->maps, s->flushes, s->bytes_flushed, s->bytes_merged,
      s->bytes_conflicted, s->bytes_atom_flushed, s->bytes_atom_invalidated);
}

static void
print_stats(struct cm_device *dev)
{
   const struct cm_memory_stats *t = &dev->total;
   fprintf(
      stderr,
      "cohmap: vulkan: device %p (%s): %" PRIu64 " memories tracked, %" PRIu64
      " submissions, %" PRIu64 " memory merges, %" PRIu64
      " bytes flushed, %" PRIu64 " bytes merged, %" PRIu64
      " conflicted, %" PRIu64 " atom-flushed, %" PRIu64 " atom-invalidated\n",
      (void *)dev->device, cm_mode_name(dev->mode), dev->stat_memories,
      dev->stat_submits, dev->stat_merges, t->bytes_flushed, t->bytes_merged,
      t->bytes_conflicted, t->bytes_atom_flushed, t->bytes_atom_invalidated);
   for (uint32_t i = 0; i < dev->top_count; i++) {
      char what[128];
      snprintf(what, sizeof(what), "memory of %" PRIu64 " bytes, type %u, %s",
               (uint64_t)dev->top[i].size, dev->top[i].type,
               cohmap_method_name(dev->top[i].method));
      print_stats_line(what, &dev->top[i].stats);
   }
   if (dev->other_count) {
      char what[64];
      snprintf(what, sizeof(what), "%" PRIu64 " other memories",
               dev->other_count);
      print_stats_line(what, &dev->other);
   }
   fflush(stderr);
}

static void
mapped_remove(struct cm_device *dev, struct cm_memory *mem)
{
   uint32_t i = mem->mapped_index;
   dev->mapped[i] = dev->mapped[--dev->mapped_count];
   dev->mapped[i]->mapped_index = i;
}

/* Drops the shadow (the driver's mapping stays for the caller). */
static void
shadow_drop(struct cm_device *dev, struct cm_memory *mem)
{
   mem->last_method = cohmap_region_method(mem->region);
   cm_verify_drop(dev, mem);
   cohmap_region_destroy(mem->region);
   mem->region = NULL;
   mem->driver_ptr = NULL;
   mapped_remove(dev, mem);
}

static void
memory_free(struct cm_device *dev, struct cm_memory *mem,
            const VkAllocationCallbacks *alloc)
{
   if (mem->region)
      shadow_drop(dev, mem);
   cm_import_finish(dev, mem);
   stats_record(dev, mem);
   cm_free(&dev->alloc, mem->writable);
   cm_free(alloc, mem);
}

void
cm_shadow_device_finish(struct cm_device *dev)
{
   if (!dev->ctx)
      return;
   /* Memories the application did not free: the driver frees them with
    * the device. */
   uint64_t k, v;
   for (uint32_t i = 0; cm_map_next(&dev->memories, &i, &k, &v);) {
      struct cm_memory *mem = (struct cm_memory *)(uintptr_t)v;
      memory_free(dev, mem, &dev->alloc);
   }
   if (dev->stats)
      print_stats(dev);
   cm_map_finish(&dev->memories);
   cm_map_finish(&dev->writable_buffers);
   cm_map_finish(&dev->writable_images);
   cm_free(&dev->alloc, dev->mapped);
   cm_free(&dev->alloc, dev->imports);
   cm_free(&dev->alloc, dev->scratch);
   int ret = cohmap_context_destroy(dev->ctx);
   if (ret)
      cm_log("warning: tracking context not destroyed: %s",
             cohmap_error_message());
   dev->ctx = NULL;
}

/* --- flush/invalidate of the driver's mappings ----------------------------
 */

/* Appends [offset, offset + size) of mem, widened to whole atoms and
 * clamped to the driver's mapping (the spec's rule for
 * VkMappedMemoryRange), merging with the previous range when they touch.
 * false when out of memory. */
static bool
scratch_add(struct cm_device *dev, uint32_t *count, struct cm_memory *mem,
            VkDeviceSize offset, VkDeviceSize size)
{
   VkDeviceSize lo = align_down(offset, dev->atom);
   VkDeviceSize hi = align_up(offset + size, dev->atom);
   VkDeviceSize map_end = mem->map_lo + mem->map_len;
   if (lo < mem->map_lo)
      lo = mem->map_lo;
   if (hi > map_end)
      hi = map_end;

   if (*count) {
      VkMappedMemoryRange *prev = &dev->scratch[*count - 1];
      if (prev->memory == mem->handle && prev->offset + prev->size >= lo) {
         if (hi > prev->offset + prev->size)
            prev->size = hi - prev->offset;
         return true;
      }
   }
   if (*count == dev->scratch_cap) {
      uint32_t cap = dev->scratch_cap ? dev->scratch_cap * 2 : 64;
      VkMappedMemoryRange *n =
         cm_realloc(&dev->alloc, dev->scratch, cap * sizeof(*n),
                    VK_SYSTEM_ALLOCATION_SCOPE_DEVICE);
      if (!n)
         return false;
      dev->scratch = n;
      dev->scratch_cap = cap;
   }
   dev->scratch[(*count)++] = (VkMappedMemoryRange){
      .sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
      .memory = mem->handle,
      .offset = lo,
      .size = hi - lo,
   };
   return true;
}

/* A range that ends where the allocation ends must be given as
 * VK_WHOLE_SIZE or as a size that reaches it exactly; both are fine, but
 * a size past a non-atom-aligned end is not: the clamp above keeps it
 * inside the mapping. */
static uint64_t
scratch_bytes(const struct cm_device *dev, uint32_t first, uint32_t count)
{
   uint64_t bytes = 0;
   for (uint32_t i = first; i < count; i++)
      bytes += dev->scratch[i].size;
   return bytes;
}

/* --- CPU → GPU ------------------------------------------------------------
 */

/* Copies what the CPU wrote to mem since the last upload into the
 * driver's mapping; appends the atom ranges to flush to dev->scratch.
 * Under dev->lock. */
static VkResult
upload_memory(struct cm_device *dev, struct cm_memory *mem, uint32_t *count)
{
   struct cohmap_dirty d;
   int ret = cohmap_region_collect(mem->region, 0, &d);
   if (ret) {
      cm_log("error: cannot collect the CPU's writes to memory %p: %s",
             (void *)mem->handle, cohmap_error_message());
      return vk_result_from_errno(ret);
   }
   if (d.count == 0)
      return VK_SUCCESS;

   const uint8_t *src = d.data;
   uint64_t bytes = 0;
   for (size_t i = 0; i < d.count; i++) {
      size_t off = d.ranges[i].offset, len = d.ranges[i].length;
      if (!cm_clip_to_map(mem, off, &len))
         break;
      memcpy(mem->driver_ptr + off, src + off, len);
      bytes += len;
      if (mem->noncoherent &&
          !scratch_add(dev, count, mem, mem->map_lo + off, len)) {
         /* Nothing is lost: the bytes are in the driver's mapping, and
          * requeued so the next submission flushes them again. */
         cohmap_region_requeue(mem->region, d.ranges + i, d.count - i);
         return VK_ERROR_OUT_OF_HOST_MEMORY;
      }
   }
   mem->stats.flushes++;
   mem->stats.bytes_flushed += bytes;
   return VK_SUCCESS;
}

/* Makes every mapped memory's CPU writes visible to the next submission. */
static VkResult
upload_all(struct cm_device *dev)
{
   VkResult res = VK_SUCCESS;
   uint32_t count = 0;

   for (uint32_t i = 0; i < dev->mapped_count && res == VK_SUCCESS; i++)
      res = upload_memory(dev, dev->mapped[i], &count);
   if (count) {
      VkResult r =
         dev->next.FlushMappedMemoryRanges(dev->device, count, dev->scratch);
      for (uint32_t i = 0; i < count; i++) {
         struct cm_memory *mem = find_memory(dev, dev->scratch[i].memory);
         if (mem)
            mem->stats.bytes_atom_flushed += dev->scratch[i].size;
      }
      if (res == VK_SUCCESS)
         res = r;
   }
   cm_verify_uploads(dev, res);
   return res;
}

/* --- GPU → CPU ------------------------------------------------------------
 */

/* Merges the GPU's writes to [lo, hi) (memory offsets) of mem into its
 * shadow, restricted to what the GPU can write.  Under dev->lock. */
static void
merge_memory(struct cm_device *dev, struct cm_memory *mem, VkDeviceSize lo,
             VkDeviceSize hi)
{
   VkDeviceSize map_end = mem->map_lo + mem->map_len;
   if (lo < mem->map_lo)
      lo = mem->map_lo;
   if (hi > map_end)
      hi = map_end;
   dev->stat_merges++;
   const struct cm_range64 all = {0, mem->size};
   const struct cm_range64 *w = mem->writable_all ? &all : mem->writable;
   uint32_t wn = mem->writable_all ? 1 : mem->writable_count;

   if (mem->noncoherent) {
      uint32_t count = 0;
      for (uint32_t i = 0; i < wn; i++) {
         VkDeviceSize a = w[i].offset;
         VkDeviceSize b = a + w[i].size;
         if (a < lo)
            a = lo;
         if (b > hi)
            b = hi;
         if (a < b && !scratch_add(dev, &count, mem, a, b - a)) {
            /* Without the invalidation the CPU could read stale cache
             * lines: skip the merge rather than merge stale bytes; the
             * next observation merges them. */
            cm_log("error: out of memory merging memory %p",
                   (void *)mem->handle);
            return;
         }
      }
      if (count) {
         dev->next.InvalidateMappedMemoryRanges(dev->device, count,
                                                dev->scratch);
         mem->stats.bytes_atom_invalidated += scratch_bytes(dev, 0, count);
      }
   }

   size_t merged = 0, conflicts = 0;
   for (uint32_t i = 0; i < wn; i++) {
      VkDeviceSize a = w[i].offset;
      VkDeviceSize b = a + w[i].size;
      if (a < lo)
         a = lo;
      if (b > hi)
         b = hi;
      if (a >= b)
         continue;
      size_t off = (size_t)(a - mem->map_lo);
      int ret = cohmap_region_merge(mem->region, off, mem->driver_ptr + off,
                                    (size_t)(b - a), &merged, &conflicts);
      if (ret)
         cm_log("error: cannot merge the GPU's writes to memory %p: %s",
                (void *)mem->handle, cohmap_error_message());
   }
   mem->stats.bytes_merged += merged;
   mem->stats.bytes_conflicted += conflicts;
}

/* The host observed that some work completed: merge everything the GPU
 * may have written.  idle_upto: the submission count before a wait that
 * proved every earlier submission complete (0 if none). */
static void
observed_completion(struct cm_device *dev, uint64_t idle_upto)
{
   pthread_mutex_lock(&dev->lock);
   if (dev->submits != dev->idle_submits) {
      for (uint32_t i = 0; i < dev->mapped_count; i++) {
         struct cm_memory *mem = dev->mapped[i];
         if (mem->writable_count || mem->writable_all)
            merge_memory(dev, mem, 0, mem->size);
      }
      cm_import_invalidate(dev);
   }
   if (idle_upto > dev->idle_submits)
      dev->idle_submits = idle_upto;
   pthread_mutex_unlock(&dev->lock);
}

/* --- memory objects -------------------------------------------------------
 */

/* Memory another pointer, API or process can reach: see the DOC block. */
static bool
shared_memory(const VkMemoryAllocateInfo *info)
{
   for (const VkBaseInStructure *s = info->pNext; s; s = s->pNext) {
      switch (s->sType) {
      case VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT:
      case VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR:
      case VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO:
         return true;
      default:
         break;
      }
   }
   return false;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_AllocateMemory(VkDevice device, const VkMemoryAllocateInfo *info,
                  const VkAllocationCallbacks *alloc, VkDeviceMemory *out)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = dev->next.AllocateMemory(device, info, alloc, out);
   if (res != VK_SUCCESS || dev->mode != CM_MODE_SHADOW ||
       info->memoryTypeIndex >= dev->props.memoryTypeCount)
      return res;
   VkMemoryPropertyFlags flags =
      dev->props.memoryTypes[info->memoryTypeIndex].propertyFlags;
   if (!(flags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
      return res;

   const VkAllocationCallbacks *a = alloc ? alloc : &dev->alloc;
   struct cm_memory *mem =
      cm_alloc(a, sizeof(*mem), VK_SYSTEM_ALLOCATION_SCOPE_OBJECT);
   if (!mem) {
      dev->next.FreeMemory(device, *out, alloc);
      *out = VK_NULL_HANDLE;
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   memset(mem, 0, sizeof(*mem));
   mem->handle = *out;
   mem->size = info->allocationSize;
   mem->type = info->memoryTypeIndex;
   mem->noncoherent = !(flags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
   mem->passthrough = shared_memory(info);

   pthread_mutex_lock(&dev->lock);
   bool ok = cm_map_set(&dev->memories, (uint64_t)(uintptr_t)*out,
                        (uint64_t)(uintptr_t)mem);
   pthread_mutex_unlock(&dev->lock);
   if (!ok) {
      cm_free(a, mem);
      dev->next.FreeMemory(device, *out, alloc);
      *out = VK_NULL_HANDLE;
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   cm_import_init(dev, mem, info);
   return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL
cm_FreeMemory(VkDevice device, VkDeviceMemory memory,
              const VkAllocationCallbacks *alloc)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return;
   if (dev->mode == CM_MODE_SHADOW && memory) {
      pthread_mutex_lock(&dev->lock);
      struct cm_memory *mem = find_memory(dev, memory);
      if (mem) {
         cm_map_remove(&dev->memories, (uint64_t)(uintptr_t)memory);
         memory_free(dev, mem, alloc ? alloc : &dev->alloc);
      }
      pthread_mutex_unlock(&dev->lock);
   }
   /* Freeing mapped memory unmaps it (the spec allows it). */
   dev->next.FreeMemory(device, memory, alloc);
}

static bool
mapped_add(struct cm_device *dev, struct cm_memory *mem)
{
   if (dev->mapped_count == dev->mapped_cap) {
      uint32_t cap = dev->mapped_cap ? dev->mapped_cap * 2 : 16;
      struct cm_memory **n =
         cm_realloc(&dev->alloc, dev->mapped, cap * sizeof(*n),
                    VK_SYSTEM_ALLOCATION_SCOPE_DEVICE);
      if (!n)
         return false;
      dev->mapped = n;
      dev->mapped_cap = cap;
   }
   mem->mapped_index = dev->mapped_count;
   dev->mapped[dev->mapped_count++] = mem;
   return true;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_MapMemory(VkDevice device, VkDeviceMemory memory, VkDeviceSize offset,
             VkDeviceSize size, VkMemoryMapFlags flags, void **out)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   if (dev->mode != CM_MODE_SHADOW)
      return dev->next.MapMemory(device, memory, offset, size, flags, out);

   pthread_mutex_lock(&dev->lock);
   struct cm_memory *mem = find_memory(dev, memory);
   if (!mem || mem->passthrough) {
      VkResult res =
         mem ? cm_import_map(dev, mem, offset, size, flags, out)
             : dev->next.MapMemory(device, memory, offset, size, flags, out);
      pthread_mutex_unlock(&dev->lock);
      return res;
   }

   /* Invalid usage the validation layer reports (misuse.c): never
    * index outside the allocation. */
   VkDeviceSize end = size == VK_WHOLE_SIZE ? mem->size : offset + size;
   if (mem->region || offset >= mem->size || size == 0 || end > mem->size ||
       end < offset) {
      cm_log("error: vkMapMemory(%p, offset %" PRIu64 ", size %" PRIu64
             ") of %" PRIu64 " bytes%s: invalid",
             (void *)memory, (uint64_t)offset, (uint64_t)size,
             (uint64_t)mem->size, mem->region ? ", already mapped" : "");
      VkResult res = cm_map_invalid(dev, memory, offset, size, flags, out,
                                    mem->region != NULL);
      pthread_mutex_unlock(&dev->lock);
      return res;
   }

   /* The driver's mapping starts on a page boundary, so the shadow's
    * pointer keeps the driver's alignment guarantee
    * (minMemoryMapAlignment), and ends on an atom boundary, so that
    * atom-widened flush ranges stay inside it. */
   VkDeviceSize lo = align_down(offset, page_size());
   VkDeviceSize hi = align_up(end, dev->atom);
   if (hi > mem->size)
      hi = mem->size;
   void *dptr = NULL;
   VkResult res = dev->next.MapMemory(
      device, memory, lo, hi == mem->size ? VK_WHOLE_SIZE : hi - lo, flags,
      &dptr);
   if (res != VK_SUCCESS) {
      pthread_mutex_unlock(&dev->lock);
      return res;
   }

   struct cohmap_region *region;
   int ret = cohmap_region_create(
      dev->ctx, (size_t)(hi - lo), COHMAP_METHOD_AUTO,
      COHMAP_REGION_BYTE_EXACT | COHMAP_REGION_FALLBACK, &region);
   if (ret || !mapped_add(dev, mem)) {
      if (!ret)
         cohmap_region_destroy(region);
      pthread_mutex_unlock(&dev->lock);
      dev->next.UnmapMemory(device, memory);
      cm_log("error: cannot create a shadow of %" PRIu64 " bytes: %s",
             (uint64_t)(hi - lo), ret ? cohmap_error_message() : "");
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   mem->region = region;
   mem->driver_ptr = dptr;
   mem->map_lo = lo;
   mem->map_len = hi - lo;
   mem->stats.maps++;
   if (mem->stats.maps == 1)
      dev->stat_memories++;

   /* Load the shadow from the driver's memory.  The region starts as
    * zeroes in both memory and snapshot, so a merge copies exactly the
    * non-zero bytes into both: the next collect reports nothing. */
   if (mem->noncoherent) {
      uint32_t count = 0;
      if (scratch_add(dev, &count, mem, lo, hi - lo))
         dev->next.InvalidateMappedMemoryRanges(device, count, dev->scratch);
   }
   size_t merged = 0, conflicts = 0;
   cohmap_region_merge(region, 0, dptr, (size_t)(hi - lo), &merged,
                       &conflicts);
   pthread_mutex_unlock(&dev->lock);

   *out = (uint8_t *)cohmap_region_ptr(region) + (offset - lo);
   return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL
cm_UnmapMemory(VkDevice device, VkDeviceMemory memory)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return;
   if (dev->mode == CM_MODE_SHADOW) {
      pthread_mutex_lock(&dev->lock);
      struct cm_memory *mem = find_memory(dev, memory);
      if (mem && cm_import_unmap(dev, mem)) {
         pthread_mutex_unlock(&dev->lock);
         return;
      }
      if (mem && mem->region) {
         /* The driver's memory keeps the data from now on: give it the
          * CPU's last writes. */
         uint32_t count = 0;
         VkResult res = upload_memory(dev, mem, &count);
         if (count)
            dev->next.FlushMappedMemoryRanges(device, count, dev->scratch);
         mem->stats.bytes_atom_flushed += scratch_bytes(dev, 0, count);
         if (res != VK_SUCCESS)
            cm_log("error: writes to memory %p before vkUnmapMemory may be "
                   "lost",
                   (void *)memory);
         shadow_drop(dev, mem);
      }
      pthread_mutex_unlock(&dev->lock);
   }
   dev->next.UnmapMemory(device, memory);
}

/* The application's flushes: shadowed memory is uploaded at the next
 * submission anyway (and uploading now could overwrite GPU bytes not yet
 * merged), so only ranges of other memory go down. */
static VkResult
filter_ranges(struct cm_device *dev, uint32_t count,
              const VkMappedMemoryRange *ranges, bool invalidate)
{
   VkResult res = VK_SUCCESS;
   uint32_t start = 0;
   pthread_mutex_lock(&dev->lock);
   for (uint32_t i = 0; i <= count; i++) {
      struct cm_memory *mem =
         i < count ? find_memory(dev, ranges[i].memory) : NULL;
      /* A range outside the mapping is invalid usage: down it goes, for
       * validation to report (misuse.c). */
      bool shadowed =
         mem && mem->region && !cm_range_outside(mem, &ranges[i]);
      if (i < count && !shadowed)
         continue;
      /* Pass the run of other memories before this one down as is. */
      if (i > start) {
         VkResult r = invalidate ? dev->next.InvalidateMappedMemoryRanges(
                                      dev->device, i - start, ranges + start)
                                 : dev->next.FlushMappedMemoryRanges(
                                      dev->device, i - start, ranges + start);
         if (r != VK_SUCCESS)
            res = r;
      }
      start = i + 1;
      if (shadowed && invalidate) {
         /* An invalidate is the application asking for the GPU's
          * writes: merge them now, whatever observed completion. */
         VkDeviceSize lo = ranges[i].offset;
         VkDeviceSize hi =
            ranges[i].size == VK_WHOLE_SIZE ? mem->size : lo + ranges[i].size;
         merge_memory(dev, mem, lo, hi);
      }
   }
   pthread_mutex_unlock(&dev->lock);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_FlushMappedMemoryRanges(VkDevice device, uint32_t count,
                           const VkMappedMemoryRange *ranges)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   if (dev->mode != CM_MODE_SHADOW)
      return dev->next.FlushMappedMemoryRanges(device, count, ranges);
   return filter_ranges(dev, count, ranges, false);
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_InvalidateMappedMemoryRanges(VkDevice device, uint32_t count,
                                const VkMappedMemoryRange *ranges)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   if (dev->mode != CM_MODE_SHADOW)
      return dev->next.InvalidateMappedMemoryRanges(device, count, ranges);
   return filter_ranges(dev, count, ranges, true);
}

/* --- what the GPU can write -----------------------------------------------
 */

/* Adds [offset, offset + size) to mem's writable ranges, coalesced.
 * Under dev->lock. */
static bool
writable_add(struct cm_device *dev, struct cm_memory *mem,
             VkDeviceSize offset, VkDeviceSize size)
{
   if (offset >= mem->size)
      return true;
   if (size > mem->size - offset)
      size = mem->size - offset;
   VkDeviceSize end = offset + size;

   /* Sorted and disjoint: find the first range ending at or after
    * offset, absorb every range that starts at or before end. */
   uint32_t i = 0;
   while (i < mem->writable_count &&
          mem->writable[i].offset + mem->writable[i].size < offset)
      i++;
   uint32_t j = i;
   while (j < mem->writable_count && mem->writable[j].offset <= end) {
      VkDeviceSize e = mem->writable[j].offset + mem->writable[j].size;
      if (mem->writable[j].offset < offset)
         offset = mem->writable[j].offset;
      if (e > end)
         end = e;
      j++;
   }
   if (j == i) {
      if (mem->writable_count == mem->writable_cap) {
         uint32_t cap = mem->writable_cap ? mem->writable_cap * 2 : 4;
         struct cm_range64 *n =
            cm_realloc(&dev->alloc, mem->writable, cap * sizeof(*n),
                       VK_SYSTEM_ALLOCATION_SCOPE_OBJECT);
         if (!n)
            return false;
         mem->writable = n;
         mem->writable_cap = cap;
      }
      memmove(mem->writable + i + 1, mem->writable + i,
              (mem->writable_count - i) * sizeof(*mem->writable));
      mem->writable_count++;
   } else {
      memmove(mem->writable + i + 1, mem->writable + j,
              (mem->writable_count - j) * sizeof(*mem->writable));
      mem->writable_count -= j - i - 1;
   }
   mem->writable[i] = (struct cm_range64){offset, end - offset};
   return true;
}

static void
mark_writable(struct cm_device *dev, VkDeviceMemory memory,
              VkDeviceSize offset, VkDeviceSize size)
{
   struct cm_memory *mem = find_memory(dev, memory);
   if (mem && !mem->passthrough && !writable_add(dev, mem, offset, size)) {
      /* Safer to merge too much than to miss a GPU write. */
      cm_log("warning: out of memory: merging all of memory %p",
             (void *)memory);
      mem->writable_all = true;
   }
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_CreateBuffer(VkDevice device, const VkBufferCreateInfo *info,
                const VkAllocationCallbacks *alloc, VkBuffer *out)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = dev->next.CreateBuffer(device, info, alloc, out);
   if (res != VK_SUCCESS || !cm_tracks_memory(dev) ||
       !buffer_write_usage(info->usage))
      return res;
   pthread_mutex_lock(&dev->lock);
   bool ok = cm_map_set(&dev->writable_buffers, (uint64_t)(uintptr_t)*out,
                        info->size);
   pthread_mutex_unlock(&dev->lock);
   if (!ok) {
      dev->next.DestroyBuffer(device, *out, alloc);
      *out = VK_NULL_HANDLE;
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL
cm_DestroyBuffer(VkDevice device, VkBuffer buffer,
                 const VkAllocationCallbacks *alloc)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return;
   if (cm_tracks_memory(dev) && buffer) {
      pthread_mutex_lock(&dev->lock);
      cm_map_remove(&dev->writable_buffers, (uint64_t)(uintptr_t)buffer);
      pthread_mutex_unlock(&dev->lock);
   }
   dev->next.DestroyBuffer(device, buffer, alloc);
}

/* dev->writable_images values. */
#define CM_IMAGE_WHOLE 1
#define CM_IMAGE_DISJOINT 2

static VKAPI_ATTR VkResult VKAPI_CALL
cm_CreateImage(VkDevice device, const VkImageCreateInfo *info,
               const VkAllocationCallbacks *alloc, VkImage *out)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = dev->next.CreateImage(device, info, alloc, out);
   if (res != VK_SUCCESS || !cm_tracks_memory(dev) ||
       !image_write_usage(info->usage))
      return res;
   /* The value says whether vkGetImageMemoryRequirements may be asked
    * at bind time: not for a disjoint multi-planar image (VUID-
    * vkGetImageMemoryRequirements-image-01588), whose planes are bound
    * one by one. */
   uint64_t kind = info->flags & VK_IMAGE_CREATE_DISJOINT_BIT
                      ? CM_IMAGE_DISJOINT
                      : CM_IMAGE_WHOLE;
   pthread_mutex_lock(&dev->lock);
   bool ok =
      cm_map_set(&dev->writable_images, (uint64_t)(uintptr_t)*out, kind);
   pthread_mutex_unlock(&dev->lock);
   if (!ok) {
      dev->next.DestroyImage(device, *out, alloc);
      *out = VK_NULL_HANDLE;
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL
cm_DestroyImage(VkDevice device, VkImage image,
                const VkAllocationCallbacks *alloc)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return;
   if (cm_tracks_memory(dev) && image) {
      pthread_mutex_lock(&dev->lock);
      cm_map_remove(&dev->writable_images, (uint64_t)(uintptr_t)image);
      pthread_mutex_unlock(&dev->lock);
   }
   dev->next.DestroyImage(device, image, alloc);
}

static void
bound_buffer(struct cm_device *dev, VkBuffer buffer, VkDeviceMemory memory,
             VkDeviceSize offset)
{
   uint64_t size;
   pthread_mutex_lock(&dev->lock);
   if (cm_map_get(&dev->writable_buffers, (uint64_t)(uintptr_t)buffer, &size))
      mark_writable(dev, memory, offset, size);
   pthread_mutex_unlock(&dev->lock);
}

static void
bound_image(struct cm_device *dev, VkImage image, VkDeviceMemory memory,
            VkDeviceSize offset)
{
   uint64_t kind;
   pthread_mutex_lock(&dev->lock);
   bool writable =
      cm_map_get(&dev->writable_images, (uint64_t)(uintptr_t)image, &kind);
   pthread_mutex_unlock(&dev->lock);
   if (!writable || !memory)
      return;
   /* A plane of a disjoint image: its size would need the plane's
    * requirements; the rest of the memory is merged instead (more merging,
    * nothing missed). */
   VkDeviceSize size = VK_WHOLE_SIZE;
   if (kind == CM_IMAGE_WHOLE) {
      VkMemoryRequirements req;
      dev->next.GetImageMemoryRequirements(dev->device, image, &req);
      size = req.size;
   }
   pthread_mutex_lock(&dev->lock);
   mark_writable(dev, memory, offset, size);
   pthread_mutex_unlock(&dev->lock);
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_BindBufferMemory(VkDevice device, VkBuffer buffer, VkDeviceMemory memory,
                    VkDeviceSize offset)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = dev->next.BindBufferMemory(device, buffer, memory, offset);
   if (res == VK_SUCCESS && cm_tracks_memory(dev))
      bound_buffer(dev, buffer, memory, offset);
   return res;
}

static VkResult
bind_buffers2(VkDevice device, uint32_t count,
              const VkBindBufferMemoryInfo *infos, bool khr)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = khr ? dev->next.BindBufferMemory2KHR(device, count, infos)
                      : dev->next.BindBufferMemory2(device, count, infos);
   /* On failure the buffers' memory is undefined (the spec): marking
    * them anyway only costs merges. */
   if (cm_tracks_memory(dev)) {
      for (uint32_t i = 0; i < count; i++)
         bound_buffer(dev, infos[i].buffer, infos[i].memory,
                      infos[i].memoryOffset);
   }
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_BindBufferMemory2(VkDevice device, uint32_t count,
                     const VkBindBufferMemoryInfo *infos)
{
   return bind_buffers2(device, count, infos, false);
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_BindBufferMemory2KHR(VkDevice device, uint32_t count,
                        const VkBindBufferMemoryInfo *infos)
{
   return bind_buffers2(device, count, infos, true);
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_BindImageMemory(VkDevice device, VkImage image, VkDeviceMemory memory,
                   VkDeviceSize offset)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = dev->next.BindImageMemory(device, image, memory, offset);
   if (res == VK_SUCCESS && cm_tracks_memory(dev))
      bound_image(dev, image, memory, offset);
   return res;
}

static VkResult
bind_images2(VkDevice device, uint32_t count,
             const VkBindImageMemoryInfo *infos, bool khr)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = khr ? dev->next.BindImageMemory2KHR(device, count, infos)
                      : dev->next.BindImageMemory2(device, count, infos);
   if (cm_tracks_memory(dev)) {
      for (uint32_t i = 0; i < count; i++)
         bound_image(dev, infos[i].image, infos[i].memory,
                     infos[i].memoryOffset);
   }
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_BindImageMemory2(VkDevice device, uint32_t count,
                    const VkBindImageMemoryInfo *infos)
{
   return bind_images2(device, count, infos, false);
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_BindImageMemory2KHR(VkDevice device, uint32_t count,
                       const VkBindImageMemoryInfo *infos)
{
   return bind_images2(device, count, infos, true);
}

/* --- submissions ----------------------------------------------------------
 */

static VkResult
before_submit(struct cm_device *dev)
{
   pthread_mutex_lock(&dev->lock);
   VkResult res = upload_all(dev);
   if (res == VK_SUCCESS)
      res = cm_import_flush(dev);
   pthread_mutex_unlock(&dev->lock);
   return res;
}

/* Counted after the driver accepted the work, so that a wait that began
 * later covers it (observed_completion()). */
void
cm_after_submit(struct cm_device *dev, VkResult res)
{
   if (res != VK_SUCCESS)
      return;
   pthread_mutex_lock(&dev->lock);
   dev->submits++;
   dev->stat_submits++;
   pthread_mutex_unlock(&dev->lock);
}

/* The submission entry points serve every mode.  What goes before the
 * driver's call: shadow uploads here; direct and device-local devices
 * flush, and upload device-local memory on the submitting queue ahead of
 * the work, holding that queue's lock until the work is queued behind it
 * (cm_modes_submit_begin(); *lock to release after).  upload: false for
 * sparse binds, which read no memory contents and may go to a queue that
 * cannot copy. */
static VkResult
submit_begin(struct cm_device *dev, VkQueue queue, bool upload,
             pthread_mutex_t **lock)
{
   *lock = NULL;
   if (dev->mode == CM_MODE_SHADOW)
      return before_submit(dev);
   return cm_modes_submit_begin(dev, queue, upload, lock);
}

static void
submit_end(struct cm_device *dev, VkResult res, pthread_mutex_t *lock)
{
   cm_after_submit(dev, res);
   if (lock)
      pthread_mutex_unlock(lock);
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_QueueSubmit(VkQueue queue, uint32_t count, const VkSubmitInfo *submits,
               VkFence fence)
{
   struct cm_device *dev = any_device(queue);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   if (dev->mode == CM_MODE_OFF)
      return dev->next.QueueSubmit(queue, count, submits, fence);
   pthread_mutex_t *lock;
   VkResult res = submit_begin(dev, queue, true, &lock);
   if (res == VK_SUCCESS)
      res = dev->next.QueueSubmit(queue, count, submits, fence);
   submit_end(dev, res, lock);
   return res;
}

static VkResult
queue_submit2(VkQueue queue, uint32_t count, const VkSubmitInfo2 *submits,
              VkFence fence, bool khr)
{
   struct cm_device *dev = any_device(queue);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   PFN_vkQueueSubmit2 next =
      khr ? dev->next.QueueSubmit2KHR : dev->next.QueueSubmit2;
   if (dev->mode == CM_MODE_OFF)
      return next(queue, count, submits, fence);
   pthread_mutex_t *lock;
   VkResult res = submit_begin(dev, queue, true, &lock);
   if (res == VK_SUCCESS)
      res = next(queue, count, submits, fence);
   submit_end(dev, res, lock);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_QueueSubmit2(VkQueue queue, uint32_t count, const VkSubmitInfo2 *submits,
                VkFence fence)
{
   return queue_submit2(queue, count, submits, fence, false);
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_QueueSubmit2KHR(VkQueue queue, uint32_t count,
                   const VkSubmitInfo2 *submits, VkFence fence)
{
   return queue_submit2(queue, count, submits, fence, true);
}

/* Sparse binds attach memory to resources the GPU may write (every mode
 * that tracks memory). */
void
cm_sparse_mark_writable(struct cm_device *dev, uint32_t count,
                        const VkBindSparseInfo *infos)
{
   for (uint32_t i = 0; i < count; i++) {
      for (uint32_t b = 0; b < infos[i].bufferBindCount; b++) {
         const VkSparseBufferMemoryBindInfo *bi = &infos[i].pBufferBinds[b];
         uint64_t size;
         pthread_mutex_lock(&dev->lock);
         bool writable = cm_map_get(&dev->writable_buffers,
                                    (uint64_t)(uintptr_t)bi->buffer, &size);
         for (uint32_t k = 0; writable && k < bi->bindCount; k++)
            mark_writable(dev, bi->pBinds[k].memory,
                          bi->pBinds[k].memoryOffset, bi->pBinds[k].size);
         pthread_mutex_unlock(&dev->lock);
      }
      for (uint32_t b = 0; b < infos[i].imageOpaqueBindCount; b++) {
         const VkSparseImageOpaqueMemoryBindInfo *bi =
            &infos[i].pImageOpaqueBinds[b];
         uint64_t one;
         pthread_mutex_lock(&dev->lock);
         bool writable = cm_map_get(&dev->writable_images,
                                    (uint64_t)(uintptr_t)bi->image, &one);
         for (uint32_t k = 0; writable && k < bi->bindCount; k++)
            mark_writable(dev, bi->pBinds[k].memory,
                          bi->pBinds[k].memoryOffset, bi->pBinds[k].size);
         pthread_mutex_unlock(&dev->lock);
      }
      for (uint32_t b = 0; b < infos[i].imageBindCount; b++) {
         const VkSparseImageMemoryBindInfo *bi = &infos[i].pImageBinds[b];
         uint64_t one;
         pthread_mutex_lock(&dev->lock);
         bool writable = cm_map_get(&dev->writable_images,
                                    (uint64_t)(uintptr_t)bi->image, &one);
         /* The bound size of an image block is not given in bytes:
          * merge the whole memory. */
         for (uint32_t k = 0; writable && k < bi->bindCount; k++)
            mark_writable(dev, bi->pBinds[k].memory, 0, VK_WHOLE_SIZE);
         pthread_mutex_unlock(&dev->lock);
      }
   }
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_QueueBindSparse(VkQueue queue, uint32_t count,
                   const VkBindSparseInfo *infos, VkFence fence)
{
   struct cm_device *dev = any_device(queue);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   if (dev->mode == CM_MODE_OFF)
      return dev->next.QueueBindSparse(queue, count, infos, fence);
   cm_sparse_mark_writable(dev, count, infos);
   pthread_mutex_t *lock;
   VkResult res = submit_begin(dev, queue, false, &lock);
   if (res == VK_SUCCESS)
      res = dev->next.QueueBindSparse(queue, count, infos, fence);
   submit_end(dev, res, lock);
   return res;
}

/* --- host-observed completion ---------------------------------------------
 */

static VKAPI_ATTR VkResult VKAPI_CALL
cm_WaitForFences(VkDevice device, uint32_t count, const VkFence *fences,
                 VkBool32 wait_all, uint64_t timeout)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res =
      dev->next.WaitForFences(device, count, fences, wait_all, timeout);
   if (res == VK_SUCCESS && dev->mode == CM_MODE_SHADOW)
      observed_completion(dev, 0);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_GetFenceStatus(VkDevice device, VkFence fence)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = dev->next.GetFenceStatus(device, fence);
   if (res == VK_SUCCESS && dev->mode == CM_MODE_SHADOW)
      observed_completion(dev, 0);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_QueueWaitIdle(VkQueue queue)
{
   struct cm_device *dev = any_device(queue);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = dev->next.QueueWaitIdle(queue);
   if (res == VK_SUCCESS && dev->mode == CM_MODE_SHADOW)
      observed_completion(dev, 0);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_DeviceWaitIdle(VkDevice device)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   if (dev->mode != CM_MODE_SHADOW)
      return dev->next.DeviceWaitIdle(device);
   pthread_mutex_lock(&dev->lock);
   uint64_t before = dev->submits;
   pthread_mutex_unlock(&dev->lock);
   VkResult res = dev->next.DeviceWaitIdle(device);
   if (res == VK_SUCCESS)
      observed_completion(dev, before);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_WaitSemaphores(VkDevice device, const VkSemaphoreWaitInfo *info,
                  uint64_t timeout)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = dev->next.WaitSemaphores(device, info, timeout);
   if (res == VK_SUCCESS && dev->mode == CM_MODE_SHADOW)
      observed_completion(dev, 0);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_WaitSemaphoresKHR(VkDevice device, const VkSemaphoreWaitInfo *info,
                     uint64_t timeout)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = dev->next.WaitSemaphoresKHR(device, info, timeout);
   if (res == VK_SUCCESS && dev->mode == CM_MODE_SHADOW)
      observed_completion(dev, 0);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_GetSemaphoreCounterValue(VkDevice device, VkSemaphore semaphore,
                            uint64_t *value)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res =
      dev->next.GetSemaphoreCounterValue(device, semaphore, value);
   if (res == VK_SUCCESS && dev->mode == CM_MODE_SHADOW)
      observed_completion(dev, 0);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_GetSemaphoreCounterValueKHR(VkDevice device, VkSemaphore semaphore,
                               uint64_t *value)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res =
      dev->next.GetSemaphoreCounterValueKHR(device, semaphore, value);
   if (res == VK_SUCCESS && dev->mode == CM_MODE_SHADOW)
      observed_completion(dev, 0);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_GetEventStatus(VkDevice device, VkEvent event)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = dev->next.GetEventStatus(device, event);
   if (res == VK_EVENT_SET && dev->mode == CM_MODE_SHADOW)
      observed_completion(dev, 0);
   return res;
}

/* Host signals, for every mode.  A batch already submitted may wait for
 * an event the host sets (vkCmdWaitEvents with VK_PIPELINE_STAGE_HOST_BIT
 * and VK_ACCESS_HOST_WRITE_BIT): the host's writes before vkSetEvent must
 * reach it, and the submission that uploaded was before them.  So a host
 * signal uploads as a submission does (direct and device-local devices:
 * cm_modes_before_host_signal()).  A timeline semaphore signalled from the
 * host gets the same, though the specification is less explicit about
 * host writes there: one collect is cheap next to a lost write. */
static VkResult
before_host_signal(struct cm_device *dev, const char *what)
{
   if (dev->mode == CM_MODE_SHADOW)
      return before_submit(dev);
   if (dev->mode != CM_MODE_OFF)
      return cm_modes_before_host_signal(dev, what);
   return VK_SUCCESS;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_SetEvent(VkDevice device, VkEvent event)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = before_host_signal(dev, "vkSetEvent");
   return res == VK_SUCCESS ? dev->next.SetEvent(device, event) : res;
}

static VkResult
signal_semaphore(VkDevice device, const VkSemaphoreSignalInfo *info,
                 bool khr)
{
   struct cm_device *dev = any_device(device);
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = before_host_signal(dev, "vkSignalSemaphore");
   if (res != VK_SUCCESS)
      return res;
   return khr ? dev->next.SignalSemaphoreKHR(device, info)
              : dev->next.SignalSemaphore(device, info);
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_SignalSemaphore(VkDevice device, const VkSemaphoreSignalInfo *info)
{
   return signal_semaphore(device, info, false);
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_SignalSemaphoreKHR(VkDevice device, const VkSemaphoreSignalInfo *info)
{
   return signal_semaphore(device, info, true);
}

PFN_vkVoidFunction
cm_shadow_proc(const char *name)
{
   if (strncmp(name, "vk", 2))
      return NULL;
   name += 2;
#define ENTRY(fn)                                                            \
   if (!strcmp(name, #fn))                                                   \
      return (PFN_vkVoidFunction)cm_##fn;
   ENTRY(AllocateMemory)
   ENTRY(FreeMemory)
   ENTRY(MapMemory)
   ENTRY(UnmapMemory)
   ENTRY(FlushMappedMemoryRanges)
   ENTRY(InvalidateMappedMemoryRanges)
   ENTRY(CreateBuffer)
   ENTRY(DestroyBuffer)
   ENTRY(CreateImage)
   ENTRY(DestroyImage)
   ENTRY(BindBufferMemory)
   ENTRY(BindBufferMemory2)
   ENTRY(BindBufferMemory2KHR)
   ENTRY(BindImageMemory)
   ENTRY(BindImageMemory2)
   ENTRY(BindImageMemory2KHR)
   ENTRY(QueueSubmit)
   ENTRY(QueueSubmit2)
   ENTRY(QueueSubmit2KHR)
   ENTRY(QueueBindSparse)
   ENTRY(WaitForFences)
   ENTRY(GetFenceStatus)
   ENTRY(QueueWaitIdle)
   ENTRY(DeviceWaitIdle)
   ENTRY(WaitSemaphores)
   ENTRY(WaitSemaphoresKHR)
   ENTRY(GetSemaphoreCounterValue)
   ENTRY(GetSemaphoreCounterValueKHR)
   ENTRY(GetEventStatus)
   ENTRY(SetEvent)
   ENTRY(SignalSemaphore)
   ENTRY(SignalSemaphoreKHR)
#undef ENTRY
   return NULL;
}

/* --- shared with the other modes (direct.c, devlocal.c) -------------------
 */

struct cm_memory *
cm_find_memory(struct cm_device *dev, VkDeviceMemory handle)
{
   return find_memory(dev, handle);
}

bool
cm_mapped_add(struct cm_device *dev, struct cm_memory *mem)
{
   return mapped_add(dev, mem);
}

void
cm_mapped_remove(struct cm_device *dev, struct cm_memory *mem)
{
   mapped_remove(dev, mem);
}

bool
cm_scratch_add(struct cm_device *dev, uint32_t *count, struct cm_memory *mem,
               VkDeviceSize offset, VkDeviceSize size)
{
   return scratch_add(dev, count, mem, offset, size);
}

uint64_t
cm_scratch_bytes(const struct cm_device *dev, uint32_t first, uint32_t count)
{
   return scratch_bytes(dev, first, count);
}

void
cm_memory_free(struct cm_device *dev, struct cm_memory *mem,
               const VkAllocationCallbacks *alloc)
{
   memory_free(dev, mem, alloc);
}

bool
cm_shared_memory(const VkMemoryAllocateInfo *info)
{
   return shared_memory(info);
}
