/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: direct mode, and the entry points of direct and device-local devices
 *
 * A direct or device-local device decides per memory type what the layer
 * does (cm_modes_plan()): CM_HOW_DIRECT for host-visible types that lack
 * HOST_COHERENT, CM_HOW_DEVLOCAL for device-local types that are not
 * host-visible (devlocal.c), CM_HOW_PASS for the rest.  The application
 * sees HOST_COHERENT on the first; the second stay as they are and come
 * once more after the driver's types as DEVICE_LOCAL | HOST_VISIBLE |
 * HOST_COHERENT (struct cm_types says why), which the memory requirements
 * of buffers and images include wherever they include the original.
 * Buffers, images and binds go through shadow.c's tracking of what the
 * GPU can write; everything else about memory is here.
 *
 * Direct: the application gets the driver's own pointer, so nothing is
 * copied; the layer only has to find the CPU's writes and flush them, and
 * invalidate what the GPU may have written.
 *
 *  1. vkMapMemory maps the driver's memory from the page boundary at or
 *     below the offset to the atom boundary at or above the end (as
 *     shadow mode does: the pointer keeps the driver's alignment, every
 *     atom-widened range stays inside the mapping) and tracks that
 *     mapping with cohmap_region_wrap(), BYTE_EXACT: the collect at
 *     submit reports exactly the bytes that changed since the last one,
 *     and the layer flushes them widened to nonCoherentAtomSize.  The
 *     adaptive method picks scan where userfaultfd write-protect works on
 *     the driver's memory (anonymous or shmem pages) and falls back to
 *     compare elsewhere (device memory).  Only the mapping's whole pages
 *     are wrapped (the rest of the last page may be the driver's other
 *     data): a partial last page is flushed at every submission.  Where
 *     the wrap is refused (a pointer not page-aligned, pages another
 *     region tracks, less than a page) the memory is "untracked": every
 *     submission flushes all of its mapping.
 *  2. When the host observes completion, every mapped direct memory the
 *     GPU can write is first collected and its changes flushed, then its
 *     GPU-writable ranges are invalidated, atom-aligned.  The flush comes
 *     first because an invalidation discards dirty CPU cache lines: an
 *     application that believes the memory coherent may have written
 *     bytes next to the GPU's since the submission.  The collect cannot
 *     tell the CPU's stores from the device's, so where the device writes
 *     through the CPU's page tables (lavapipe) the GPU's bytes are
 *     flushed too; that is harmless (after the invalidation those lines
 *     are clean) and the counters show it.  Within one atom, CPU and GPU
 *     bytes cannot both survive on a non-coherent device: that needs
 *     shadow mode.
 *  3. The application's own vkFlushMappedMemoryRanges go down unchanged;
 *     its vkInvalidateMappedMemoryRanges are preceded by a flush of what
 *     the CPU wrote to that memory (which the invalidation would discard).
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "track/track_priv.h"
#include "vulkan/layer.h"

static VkDeviceSize
page_round_down(VkDeviceSize v)
{
   VkDeviceSize ps = (VkDeviceSize)cohmap_page_size();
   return v / ps * ps;
}

static VkDeviceSize
round_up(VkDeviceSize v, VkDeviceSize a)
{
   return (v + a - 1) / a * a;
}

/* --- which memory types, and what the application sees --------------------
 */

static VkMemoryPropertyFlags
believed_flags(uint32_t pretend, VkMemoryPropertyFlags f)
{
   if (pretend & CM_PRETEND_NONCOHERENT)
      f &= ~(VkMemoryPropertyFlags)VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
   if (pretend & CM_PRETEND_DEVICE_LOCAL)
      f &= ~(VkMemoryPropertyFlags)(VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                    VK_MEMORY_PROPERTY_HOST_COHERENT_BIT |
                                    VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
   return f;
}

/* Whether presented type k is where the specification's order wants it
 * against every other type (struct cm_types).  Only pairs with k: the
 * driver's own order is the driver's. */
static bool
in_order(const struct cm_types *t, uint32_t k)
{
   for (uint32_t i = 0; i < t->count; i++) {
      VkMemoryPropertyFlags lo = t->flags[i < k ? i : k];
      VkMemoryPropertyFlags hi = t->flags[i < k ? k : i];
      if (i != k && (hi & lo) == hi && hi != lo)
         return false; /* a strict subset after its superset */
   }
   return true;
}

/* Presents real type r once more, after the driver's, as flags. */
static bool
append_type(struct cm_types *t, uint32_t r, VkMemoryPropertyFlags flags,
            enum cm_how how)
{
   if (t->count == VK_MAX_MEMORY_TYPES)
      return false;
   t->flags[t->count] = flags;
   t->real[t->count] = (uint8_t)r;
   t->how[t->count] = how;
   if (!in_order(t, t->count))
      return false;
   t->count++;
   return true;
}

enum cm_mode
cm_modes_plan(enum cm_mode mode, uint32_t pretend,
              const VkPhysicalDeviceMemoryProperties *real,
              struct cm_types *types)
{
   bool want_direct = mode == CM_MODE_AUTO || mode == CM_MODE_DIRECT;
   bool want_devlocal = mode == CM_MODE_AUTO || mode == CM_MODE_DEVICE_LOCAL;
   /* Heaps with a host-visible type: auto leaves their device-local
    * types alone (the application has a host-visible choice there). */
   bool heap_visible[VK_MAX_MEMORY_HEAPS] = {false};
   memset(types, 0, sizeof(*types));
   types->real_count = types->count = real->memoryTypeCount;
   for (uint32_t i = 0; i < real->memoryTypeCount; i++) {
      VkMemoryPropertyFlags f =
         believed_flags(pretend, real->memoryTypes[i].propertyFlags);
      types->flags[i] = f;
      types->real[i] = (uint8_t)i;
      if ((f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) &&
          real->memoryTypes[i].heapIndex < VK_MAX_MEMORY_HEAPS)
         heap_visible[real->memoryTypes[i].heapIndex] = true;
   }

   const VkMemoryPropertyFlags visible = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                         VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
   bool any_direct = false, any_devlocal = false;
   for (uint32_t i = 0; i < real->memoryTypeCount; i++) {
      VkMemoryPropertyFlags f = types->flags[i];
      /* Protected and lazily allocated memory can never be mapped. */
      if (f & (VK_MEMORY_PROPERTY_PROTECTED_BIT |
               VK_MEMORY_PROPERTY_LAZILY_ALLOCATED_BIT))
         continue;
      if (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) {
         if (!want_direct || (f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT))
            continue;
         types->flags[i] = f | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
         types->how[i] = CM_HOW_DIRECT;
         if (in_order(types, i)) {
            any_direct = true;
            continue;
         }
         types->flags[i] = f;
         types->how[i] = CM_HOW_PASS;
         any_direct |= append_type(types, i,
                                   f | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                   CM_HOW_DIRECT);
      } else if ((f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) && want_devlocal &&
                 (mode == CM_MODE_DEVICE_LOCAL ||
                  !heap_visible[real->memoryTypes[i].heapIndex])) {
         any_devlocal |= append_type(types, i, f | visible, CM_HOW_DEVLOCAL);
      }
   }
   if (any_devlocal)
      return CM_MODE_DEVICE_LOCAL;
   return any_direct ? CM_MODE_DIRECT : CM_MODE_OFF;
}

void
cm_modes_fix_memory_properties(const struct cm_types *types,
                               VkPhysicalDeviceMemoryProperties *p)
{
   VkMemoryType real[VK_MAX_MEMORY_TYPES];
   memcpy(real, p->memoryTypes, sizeof(real));
   for (uint32_t i = 0; i < types->count; i++) {
      p->memoryTypes[i].heapIndex = real[types->real[i]].heapIndex;
      p->memoryTypes[i].propertyFlags = types->flags[i];
   }
   p->memoryTypeCount = types->count;
}

uint32_t
cm_modes_type_bits(const struct cm_types *types, uint32_t bits)
{
   for (uint32_t i = types->real_count; i < types->count; i++) {
      if (bits & (1u << types->real[i]))
         bits |= 1u << i;
   }
   return bits;
}

VkResult
cm_modes_device_init(struct cm_device *dev, const VkDeviceCreateInfo *info)
{
   struct cm_instance *inst = dev->instance;
   VkResult res = cm_shadow_device_init(dev);
   if (res != VK_SUCCESS)
      return res;
   inst->next.GetPhysicalDeviceMemoryProperties(dev->physical,
                                                &dev->real_props);
   cm_modes_plan(inst->mode, inst->pretend, &dev->real_props, &dev->types);
   for (uint32_t i = 0; i < dev->props.memoryTypeCount; i++)
      dev->props.memoryTypes[i].propertyFlags = believed_flags(
         inst->pretend, dev->real_props.memoryTypes[i].propertyFlags);
   if (dev->mode == CM_MODE_DEVICE_LOCAL) {
      res = cm_devlocal_init(dev, info);
      if (res != VK_SUCCESS) {
         cm_shadow_device_finish(dev);
         return res;
      }
   }
   return VK_SUCCESS;
}

static void mapping_drop(struct cm_device *dev, struct cm_memory *mem);
static bool is_mapped(const struct cm_memory *mem);

void
cm_modes_device_finish(struct cm_device *dev)
{
   /* Memories the application left mapped or did not free: their
    * tracking goes before the driver's memory, the whole-memory buffers
    * before the device. */
   uint64_t k, v;
   for (uint32_t i = 0; cm_map_next(&dev->memories, &i, &k, &v);) {
      struct cm_memory *mem = (struct cm_memory *)(uintptr_t)v;
      if (is_mapped(mem))
         mapping_drop(dev, mem);
      if (dev->devlocal)
         cm_devlocal_memory_finish(dev, mem);
   }
   cm_devlocal_finish(dev);
   cm_shadow_device_finish(dev);
}

/* --- direct: flush and invalidate -----------------------------------------
 */

/* Appends the atom ranges of what the CPU changed in mem's mapping.
 * Under dev->lock. */
static VkResult
direct_collect(struct cm_device *dev, struct cm_memory *mem, uint32_t *count)
{
   if (mem->untracked || !mem->region) {
      mem->stats.flushes++;
      mem->stats.bytes_flushed += mem->map_len;
      return cm_scratch_add(dev, count, mem, mem->map_lo, mem->map_len)
                ? VK_SUCCESS
                : VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   struct cohmap_dirty d;
   int ret = cohmap_region_collect(mem->region, 0, &d);
   if (ret) {
      /* Nothing is lost by flushing everything. */
      cm_log("error: cannot collect the CPU's writes to memory %p (%s): "
             "flushing all of it",
             (void *)mem->handle, cohmap_error_message());
      return cm_scratch_add(dev, count, mem, mem->map_lo, mem->map_len)
                ? VK_SUCCESS
                : VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   uint64_t bytes = 0;
   for (size_t i = 0; i < d.count; i++) {
      size_t off = d.ranges[i].offset, len = d.ranges[i].length;
      if (!cm_clip_to_map(mem, off, &len))
         break;
      bytes += len;
      if (!cm_scratch_add(dev, count, mem, mem->map_lo + off, len)) {
         cohmap_region_requeue(mem->region, d.ranges + i, d.count - i);
         return VK_ERROR_OUT_OF_HOST_MEMORY;
      }
   }
   /* The partial page past the region. */
   VkDeviceSize tracked = cohmap_region_size(mem->region);
   if (mem->map_len > tracked) {
      bytes += mem->map_len - tracked;
      if (!cm_scratch_add(dev, count, mem, mem->map_lo + tracked,
                          mem->map_len - tracked))
         return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   if (bytes) {
      mem->stats.flushes++;
      mem->stats.bytes_flushed += bytes;
   }
   return VK_SUCCESS;
}

/* Flushes dev->scratch[0, count) and counts the bytes per memory. */
static VkResult
scratch_flush(struct cm_device *dev, uint32_t count)
{
   if (!count)
      return VK_SUCCESS;
   VkResult res =
      dev->next.FlushMappedMemoryRanges(dev->device, count, dev->scratch);
   for (uint32_t i = 0; i < count; i++) {
      struct cm_memory *mem = cm_find_memory(dev, dev->scratch[i].memory);
      if (mem)
         mem->stats.bytes_atom_flushed += dev->scratch[i].size;
   }
   return res;
}

/* Flushes what the CPU wrote to direct memories (only, or all mapped
 * ones).  Under dev->lock. */
static VkResult
direct_flush(struct cm_device *dev, struct cm_memory *only)
{
   VkResult res = VK_SUCCESS;
   uint32_t count = 0;
   if (only) {
      res = direct_collect(dev, only, &count);
   } else {
      for (uint32_t i = 0; i < dev->mapped_count && res == VK_SUCCESS; i++) {
         if (dev->mapped[i]->how == CM_HOW_DIRECT)
            res = direct_collect(dev, dev->mapped[i], &count);
      }
   }
   VkResult r = scratch_flush(dev, count);
   return res != VK_SUCCESS ? res : r;
}

/* Invalidates the GPU-writable ranges of mem within [lo, hi).  Under
 * dev->lock, after direct_flush() of mem. */
static void
direct_invalidate(struct cm_device *dev, struct cm_memory *mem,
                  VkDeviceSize lo, VkDeviceSize hi)
{
   const struct cm_range64 all = {0, mem->size};
   const struct cm_range64 *w = mem->writable_all ? &all : mem->writable;
   uint32_t wn = mem->writable_all ? 1 : mem->writable_count;
   uint32_t count = 0;
   dev->stat_merges++;
   for (uint32_t i = 0; i < wn; i++) {
      VkDeviceSize a = w[i].offset > lo ? w[i].offset : lo;
      VkDeviceSize b =
         w[i].offset + w[i].size < hi ? w[i].offset + w[i].size : hi;
      if (a < b && !cm_scratch_add(dev, &count, mem, a, b - a)) {
         /* Invalidate it all rather than leave stale lines. */
         count = 0;
         if (!cm_scratch_add(dev, &count, mem, mem->map_lo, mem->map_len))
            return;
         break;
      }
   }
   if (count) {
      dev->next.InvalidateMappedMemoryRanges(dev->device, count,
                                             dev->scratch);
      mem->stats.bytes_atom_invalidated += cm_scratch_bytes(dev, 0, count);
   }
}

/* --- host-observed completion ---------------------------------------------
 */

static void
observed_completion(struct cm_device *dev, uint64_t idle_upto)
{
   pthread_mutex_t *ql =
      dev->devlocal ? cm_devlocal_queue_lock(dev, VK_NULL_HANDLE) : NULL;
   if (ql)
      pthread_mutex_lock(ql);
   pthread_mutex_lock(&dev->lock);
   if (dev->submits != dev->idle_submits) {
      /* Flush first: the invalidations must not discard CPU writes. */
      bool any_direct = false;
      for (uint32_t i = 0; i < dev->mapped_count && !any_direct; i++)
         any_direct = dev->mapped[i]->how == CM_HOW_DIRECT;
      if (any_direct)
         direct_flush(dev, NULL);
      for (uint32_t i = 0; i < dev->mapped_count; i++) {
         struct cm_memory *mem = dev->mapped[i];
         if (mem->how == CM_HOW_DIRECT &&
             (mem->writable_count || mem->writable_all))
            direct_invalidate(dev, mem, 0, mem->size);
      }
      cm_import_invalidate(dev);
      if (dev->devlocal)
         cm_devlocal_download(dev, NULL, 0, 0);
   }
   if (idle_upto > dev->idle_submits)
      dev->idle_submits = idle_upto;
   pthread_mutex_unlock(&dev->lock);
   if (ql)
      pthread_mutex_unlock(ql);
}

/* Each calls down and, when the result says some work is complete,
 * brings the GPU's writes to the CPU. */
#define CM_COMPLETION(name, done, params, args)                              \
   static VKAPI_ATTR VkResult VKAPI_CALL modes_##name params                 \
   {                                                                         \
      struct cm_device *dev = cm_device_from_key(cm_key(device));            \
      if (!dev)                                                              \
         return VK_ERROR_INITIALIZATION_FAILED;                              \
      VkResult res = dev->next.name args;                                    \
      if (res == (done))                                                     \
         observed_completion(dev, 0);                                        \
      return res;                                                            \
   }

CM_COMPLETION(WaitForFences, VK_SUCCESS,
              (VkDevice device, uint32_t count, const VkFence *fences,
               VkBool32 wait_all, uint64_t timeout),
              (device, count, fences, wait_all, timeout))
CM_COMPLETION(GetFenceStatus, VK_SUCCESS, (VkDevice device, VkFence fence),
              (device, fence))
CM_COMPLETION(WaitSemaphores, VK_SUCCESS,
              (VkDevice device, const VkSemaphoreWaitInfo *info,
               uint64_t timeout),
              (device, info, timeout))
CM_COMPLETION(WaitSemaphoresKHR, VK_SUCCESS,
              (VkDevice device, const VkSemaphoreWaitInfo *info,
               uint64_t timeout),
              (device, info, timeout))
CM_COMPLETION(GetSemaphoreCounterValue, VK_SUCCESS,
              (VkDevice device, VkSemaphore semaphore, uint64_t *value),
              (device, semaphore, value))
CM_COMPLETION(GetSemaphoreCounterValueKHR, VK_SUCCESS,
              (VkDevice device, VkSemaphore semaphore, uint64_t *value),
              (device, semaphore, value))
CM_COMPLETION(GetEventStatus, VK_EVENT_SET, (VkDevice device, VkEvent event),
              (device, event))

#undef CM_COMPLETION

/* A queue the layer may also submit to (device-local) is locked around
 * every use: Vulkan requires queues to be externally synchronized. */
static pthread_mutex_t *
lock_queue(struct cm_device *dev, VkQueue queue)
{
   pthread_mutex_t *l =
      dev->devlocal ? cm_devlocal_queue_lock(dev, queue) : NULL;
   if (l)
      pthread_mutex_lock(l);
   return l;
}

static void
unlock_queue(pthread_mutex_t *l)
{
   if (l)
      pthread_mutex_unlock(l);
}

static VKAPI_ATTR VkResult VKAPI_CALL
modes_QueueWaitIdle(VkQueue queue)
{
   struct cm_device *dev = cm_device_from_key(cm_key(queue));
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   pthread_mutex_t *l = lock_queue(dev, queue);
   VkResult res = dev->next.QueueWaitIdle(queue);
   unlock_queue(l);
   if (res == VK_SUCCESS)
      observed_completion(dev, 0);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
modes_DeviceWaitIdle(VkDevice device)
{
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   pthread_mutex_lock(&dev->lock);
   uint64_t before = dev->submits;
   pthread_mutex_unlock(&dev->lock);
   VkResult res = dev->next.DeviceWaitIdle(device);
   if (res == VK_SUCCESS)
      observed_completion(dev, before);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
modes_QueuePresentKHR(VkQueue queue, const VkPresentInfoKHR *info)
{
   struct cm_device *dev = cm_device_from_key(cm_key(queue));
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   pthread_mutex_t *l = lock_queue(dev, queue);
   VkResult res = dev->next.QueuePresentKHR(queue, info);
   unlock_queue(l);
   return res;
}

/* --- submissions ----------------------------------------------------------
 */

/* What a submission on queue needs first: direct memories flushed,
 * device-local ones uploaded (on queue, ahead of the work). */
static VkResult
before_submit(struct cm_device *dev, VkQueue queue, bool upload)
{
   pthread_mutex_lock(&dev->lock);
   VkResult res = direct_flush(dev, NULL);
   if (res == VK_SUCCESS)
      res = cm_import_flush(dev);
   if (res == VK_SUCCESS && dev->devlocal && upload)
      res = cm_devlocal_upload(dev, queue, NULL);
   pthread_mutex_unlock(&dev->lock);
   return res;
}

VkResult
cm_modes_submit_begin(struct cm_device *dev, VkQueue queue, bool upload,
                      pthread_mutex_t **lock)
{
   *lock = lock_queue(dev, queue);
   VkResult res = before_submit(dev, queue, upload);
   if (res != VK_SUCCESS) {
      unlock_queue(*lock);
      *lock = NULL;
   }
   return res;
}

/* Host signals (shadow.c says why they upload).  Direct memories are
 * flushed.  Device-local ones are not uploaded: the copy would have to run
 * on a queue, and the layer's is the application's first, where the batch
 * waiting for this very signal may sit in front of it; the next
 * submission uploads them (docs/vulkan.md, "Device-local mode"). */
VkResult
cm_modes_before_host_signal(struct cm_device *dev, const char *what)
{
   pthread_mutex_lock(&dev->lock);
   bool warn = dev->devlocal && !dev->devlocal_signal_warned;
   dev->devlocal_signal_warned |= warn;
   pthread_mutex_unlock(&dev->lock);
   if (warn) {
      cm_log("warning: %s: CPU writes to device-local memory since the "
             "last submission reach the device at the next submission, not "
             "at this host signal",
             what);
   }
   return before_submit(dev, VK_NULL_HANDLE, false);
}

/* --- memory objects -------------------------------------------------------
 */

static VKAPI_ATTR VkResult VKAPI_CALL
modes_AllocateMemory(VkDevice device, const VkMemoryAllocateInfo *info,
                     const VkAllocationCallbacks *alloc, VkDeviceMemory *out)
{
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   /* An appended type is the driver's type it emulates. */
   uint32_t type = info->memoryTypeIndex;
   VkMemoryAllocateInfo real_info = *info;
   struct cm_alloc_chain chain;
   if (type < dev->types.count) {
      real_info.memoryTypeIndex = dev->types.real[type];
      if (dev->types.how[type] == CM_HOW_DEVLOCAL && !cm_shared_memory(info))
         real_info.pNext = cm_devlocal_strip_dedicated(dev, info, &chain);
   }
   VkResult res = dev->next.AllocateMemory(device, &real_info, alloc, out);
   if (res != VK_SUCCESS || type >= dev->types.count ||
       dev->types.how[type] == CM_HOW_PASS)
      return res;

   const VkAllocationCallbacks *a = alloc ? alloc : &dev->alloc;
   struct cm_memory *mem =
      cm_alloc(a, sizeof(*mem), VK_SYSTEM_ALLOCATION_SCOPE_OBJECT);
   if (!mem) {
      dev->next.FreeMemory(device, *out, alloc);
      *out = VK_NULL_HANDLE;
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   *mem = (struct cm_memory){
      .handle = *out,
      .size = info->allocationSize,
      .type = type,
      .how = dev->types.how[type],
      .noncoherent = dev->types.how[type] == CM_HOW_DIRECT,
      .passthrough = cm_shared_memory(info),
   };
   /* Shared memory is the application's (or another API's): nothing to
    * stage, and a buffer of ours bound to it would need the external
    * handle types (VUID-vkBindBufferMemory-memory-02727). */
   if (mem->how == CM_HOW_DEVLOCAL && !mem->passthrough)
      cm_devlocal_memory_init(dev, mem, &real_info);

   pthread_mutex_lock(&dev->lock);
   bool ok = cm_map_set(&dev->memories, (uint64_t)(uintptr_t)*out,
                        (uint64_t)(uintptr_t)mem);
   pthread_mutex_unlock(&dev->lock);
   if (!ok) {
      pthread_mutex_lock(&dev->lock);
      cm_devlocal_memory_finish(dev, mem);
      pthread_mutex_unlock(&dev->lock);
      cm_free(a, mem);
      dev->next.FreeMemory(device, *out, alloc);
      *out = VK_NULL_HANDLE;
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   cm_import_init(dev, mem, info);
   return VK_SUCCESS;
}

/* Ends the application's mapping of mem: its tracking goes (before the
 * driver's memory can), the driver's mapping stays for the caller.
 * Under dev->lock. */
static void
mapping_drop(struct cm_device *dev, struct cm_memory *mem)
{
   if (mem->region) {
      mem->last_method = cohmap_region_method(mem->region);
      cohmap_region_destroy(mem->region);
      mem->region = NULL;
   }
   cm_mapped_remove(dev, mem);
   mem->driver_ptr = NULL;
   mem->untracked = false;
}

static bool
is_mapped(const struct cm_memory *mem)
{
   return mem->region || mem->driver_ptr;
}

static VKAPI_ATTR void VKAPI_CALL
modes_FreeMemory(VkDevice device, VkDeviceMemory memory,
                 const VkAllocationCallbacks *alloc)
{
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   if (!dev)
      return;
   if (memory) {
      pthread_mutex_lock(&dev->lock);
      struct cm_memory *mem = cm_find_memory(dev, memory);
      if (mem) {
         cm_map_remove(&dev->memories, (uint64_t)(uintptr_t)memory);
         if (is_mapped(mem))
            mapping_drop(dev, mem);
         cm_devlocal_memory_finish(dev, mem);
         cm_memory_free(dev, mem, alloc ? alloc : &dev->alloc);
      }
      pthread_mutex_unlock(&dev->lock);
   }
   dev->next.FreeMemory(device, memory, alloc);
}

static VkResult
direct_map(struct cm_device *dev, struct cm_memory *mem, VkDeviceSize offset,
           VkDeviceSize end, VkMemoryMapFlags flags, void **out)
{
   VkDeviceSize lo = page_round_down(offset);
   VkDeviceSize hi = round_up(end, dev->atom);
   if (hi > mem->size)
      hi = mem->size;
   void *dptr = NULL;
   VkResult res = dev->next.MapMemory(
      dev->device, mem->handle, lo, hi == mem->size ? VK_WHOLE_SIZE : hi - lo,
      flags, &dptr);
   if (res != VK_SUCCESS)
      return res;
   if (!cm_mapped_add(dev, mem)) {
      dev->next.UnmapMemory(dev->device, mem->handle);
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   mem->driver_ptr = dptr;
   mem->map_lo = lo;
   mem->map_len = hi - lo;
   mem->stats.maps++;
   if (mem->stats.maps == 1)
      dev->stat_memories++;

   /* Only the whole pages of the mapping: the rest of the last page may
    * be another allocation of the driver's (lavapipe's are malloc()ed),
    * which the region must neither snapshot nor protect.  The partial
    * page is flushed at every submission (direct_collect()). */
   size_t len = (size_t)page_round_down(hi - lo);
   int ret = len ? cohmap_region_wrap(dev->ctx, dptr, len, COHMAP_METHOD_AUTO,
                                      COHMAP_REGION_BYTE_EXACT |
                                         COHMAP_REGION_FALLBACK,
                                      &mem->region)
                 : -EINVAL;
   if (ret) {
      mem->region = NULL;
      mem->untracked = true;
      mem->last_method = COHMAP_METHOD_FULL;
   }
   *out = (uint8_t *)dptr + (offset - lo);
   return VK_SUCCESS;
}

static VkResult
devlocal_map(struct cm_device *dev, struct cm_memory *mem,
             VkDeviceSize offset, VkDeviceSize end, void **out)
{
   if (!mem->whole) {
      cm_log("error: vkMapMemory(%p): this device-local memory cannot be "
             "copied through staging (docs/vulkan.md, device-local mode)",
             (void *)mem->handle);
      return VK_ERROR_MEMORY_MAP_FAILED;
   }
   /* From a page boundary: the pointer is page-aligned less the offset,
    * more than minMemoryMapAlignment asks. */
   VkDeviceSize lo = page_round_down(offset);
   struct cohmap_region *region;
   int ret = cohmap_region_create(
      dev->ctx, (size_t)(end - lo), COHMAP_METHOD_AUTO,
      COHMAP_REGION_BYTE_EXACT | COHMAP_REGION_FALLBACK, &region);
   if (ret) {
      cm_log("error: cannot create a shadow of %" PRIu64 " bytes: %s",
             (uint64_t)(end - lo), cohmap_error_message());
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   if (!cm_mapped_add(dev, mem)) {
      cohmap_region_destroy(region);
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   mem->region = region;
   mem->map_lo = lo;
   mem->map_len = end - lo;
   VkResult res = cm_devlocal_load(dev, mem);
   if (res != VK_SUCCESS) {
      mapping_drop(dev, mem);
      return res;
   }
   mem->stats.maps++;
   if (mem->stats.maps == 1)
      dev->stat_memories++;
   *out = (uint8_t *)cohmap_region_ptr(region) + (offset - lo);
   return VK_SUCCESS;
}

static VKAPI_ATTR VkResult VKAPI_CALL
modes_MapMemory(VkDevice device, VkDeviceMemory memory, VkDeviceSize offset,
                VkDeviceSize size, VkMemoryMapFlags flags, void **out)
{
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   pthread_mutex_t *ql = lock_queue(dev, VK_NULL_HANDLE);
   pthread_mutex_lock(&dev->lock);
   struct cm_memory *mem = cm_find_memory(dev, memory);
   VkResult res;
   if (!mem || mem->passthrough) {
      res =
         mem ? cm_import_map(dev, mem, offset, size, flags, out)
             : dev->next.MapMemory(device, memory, offset, size, flags, out);
      goto out;
   }
   VkDeviceSize end = size == VK_WHOLE_SIZE ? mem->size : offset + size;
   if (is_mapped(mem) || offset >= mem->size || size == 0 ||
       end > mem->size || end < offset) {
      /* Invalid usage the validation layer reports (misuse.c): never
       * reach outside the allocation.  Device-local memory is not mapped
       * in the driver. */
      cm_log("error: vkMapMemory(%p, offset %" PRIu64 ", size %" PRIu64
             ") of %" PRIu64 " bytes%s: invalid",
             (void *)memory, (uint64_t)offset, (uint64_t)size,
             (uint64_t)mem->size, is_mapped(mem) ? ", already mapped" : "");
      res = cm_map_invalid(dev, memory, offset, size, flags, out,
                           mem->how == CM_HOW_DIRECT && is_mapped(mem));
      goto out;
   }
   res = mem->how == CM_HOW_DIRECT
            ? direct_map(dev, mem, offset, end, flags, out)
            : devlocal_map(dev, mem, offset, end, out);
out:
   pthread_mutex_unlock(&dev->lock);
   unlock_queue(ql);
   return res;
}

static VKAPI_ATTR void VKAPI_CALL
modes_UnmapMemory(VkDevice device, VkDeviceMemory memory)
{
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   if (!dev)
      return;
   pthread_mutex_t *ql = lock_queue(dev, VK_NULL_HANDLE);
   pthread_mutex_lock(&dev->lock);
   struct cm_memory *mem = cm_find_memory(dev, memory);
   bool driver_mapped = true;
   if (mem && cm_import_unmap(dev, mem)) {
      driver_mapped = false; /* the layer's mapping stays */
   } else if (mem && is_mapped(mem) && !mem->passthrough) {
      /* Whatever the CPU wrote must reach the device memory, which keeps
       * the data from now on. */
      VkResult res = mem->how == CM_HOW_DIRECT
                        ? direct_flush(dev, mem)
                        : cm_devlocal_upload(dev, VK_NULL_HANDLE, mem);
      if (res != VK_SUCCESS)
         cm_log("error: writes to memory %p before vkUnmapMemory may be "
                "lost",
                (void *)memory);
      driver_mapped = mem->how == CM_HOW_DIRECT;
      mapping_drop(dev, mem);
   }
   pthread_mutex_unlock(&dev->lock);
   unlock_queue(ql);
   if (driver_mapped)
      dev->next.UnmapMemory(device, memory);
}

/* The application's flushes and invalidations, one range at a time:
 * device-local memory is not mapped in the driver (its ranges are ours),
 * direct memory is flushed before it is invalidated. */
static VkResult
app_ranges(VkDevice device, uint32_t count, const VkMappedMemoryRange *ranges,
           bool invalidate)
{
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   VkResult res = VK_SUCCESS;
   pthread_mutex_t *ql = lock_queue(dev, VK_NULL_HANDLE);
   pthread_mutex_lock(&dev->lock);
   for (uint32_t i = 0; i < count; i++) {
      struct cm_memory *mem = cm_find_memory(dev, ranges[i].memory);
      /* A range outside the mapping is invalid usage: down it goes, for
       * validation to report (misuse.c). */
      bool ours = mem && !mem->passthrough && is_mapped(mem) &&
                  !cm_range_outside(mem, ranges + i);
      VkResult r = VK_SUCCESS;
      if (ours && mem->how == CM_HOW_DEVLOCAL) {
         if (invalidate) {
            VkDeviceSize lo = ranges[i].offset;
            VkDeviceSize hi = ranges[i].size == VK_WHOLE_SIZE
                                 ? mem->size
                                 : lo + ranges[i].size;
            cm_devlocal_download(dev, mem, lo, hi);
         }
         /* A flush: the next submission uploads what changed. */
         continue;
      }
      if (ours && invalidate)
         r = direct_flush(dev, mem);
      VkResult r2 =
         invalidate
            ? dev->next.InvalidateMappedMemoryRanges(device, 1, ranges + i)
            : dev->next.FlushMappedMemoryRanges(device, 1, ranges + i);
      if (r == VK_SUCCESS)
         r = r2;
      if (r != VK_SUCCESS)
         res = r;
   }
   pthread_mutex_unlock(&dev->lock);
   unlock_queue(ql);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
modes_FlushMappedMemoryRanges(VkDevice device, uint32_t count,
                              const VkMappedMemoryRange *ranges)
{
   return app_ranges(device, count, ranges, false);
}

static VKAPI_ATTR VkResult VKAPI_CALL
modes_InvalidateMappedMemoryRanges(VkDevice device, uint32_t count,
                                   const VkMappedMemoryRange *ranges)
{
   return app_ranges(device, count, ranges, true);
}

/* --- memory requirements: the appended types -----------------------------
 */

static VKAPI_ATTR void VKAPI_CALL
modes_GetBufferMemoryRequirements(VkDevice device, VkBuffer buffer,
                                  VkMemoryRequirements *req)
{
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   dev->next.GetBufferMemoryRequirements(device, buffer, req);
   req->memoryTypeBits = cm_modes_type_bits(&dev->types, req->memoryTypeBits);
}

static VKAPI_ATTR void VKAPI_CALL
modes_GetImageMemoryRequirements(VkDevice device, VkImage image,
                                 VkMemoryRequirements *req)
{
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   dev->next.GetImageMemoryRequirements(device, image, req);
   req->memoryTypeBits = cm_modes_type_bits(&dev->types, req->memoryTypeBits);
}

/* The ...2 forms and the maintenance4 queries: one body each for the
 * core and KHR names, which reach the same driver function. */
#define REQUIREMENTS2(fn, info_type)                                         \
   static VKAPI_ATTR void VKAPI_CALL modes_##fn(                             \
      VkDevice device, const info_type *info, VkMemoryRequirements2 *req)    \
   {                                                                         \
      struct cm_device *dev = cm_device_from_key(cm_key(device));            \
      dev->next.fn(device, info, req);                                       \
      req->memoryRequirements.memoryTypeBits = cm_modes_type_bits(           \
         &dev->types, req->memoryRequirements.memoryTypeBits);              \
   }                                                                         \
   static VKAPI_ATTR void VKAPI_CALL modes_##fn##KHR(                        \
      VkDevice device, const info_type *info, VkMemoryRequirements2 *req)    \
   {                                                                         \
      modes_##fn(device, info, req);                                         \
   }
REQUIREMENTS2(GetBufferMemoryRequirements2, VkBufferMemoryRequirementsInfo2)
REQUIREMENTS2(GetImageMemoryRequirements2, VkImageMemoryRequirementsInfo2)
REQUIREMENTS2(GetDeviceBufferMemoryRequirements,
              VkDeviceBufferMemoryRequirements)
REQUIREMENTS2(GetDeviceImageMemoryRequirements,
              VkDeviceImageMemoryRequirements)
#undef REQUIREMENTS2

PFN_vkVoidFunction
cm_modes_proc(const char *name)
{
   if (strncmp(name, "vk", 2))
      return NULL;
   name += 2;
#define ENTRY(fn)                                                            \
   if (!strcmp(name, #fn))                                                   \
      return (PFN_vkVoidFunction)modes_##fn;
   ENTRY(AllocateMemory)
   ENTRY(FreeMemory)
   ENTRY(MapMemory)
   ENTRY(UnmapMemory)
   ENTRY(FlushMappedMemoryRanges)
   ENTRY(InvalidateMappedMemoryRanges)
   ENTRY(GetBufferMemoryRequirements)
   ENTRY(GetImageMemoryRequirements)
   ENTRY(GetBufferMemoryRequirements2)
   ENTRY(GetBufferMemoryRequirements2KHR)
   ENTRY(GetImageMemoryRequirements2)
   ENTRY(GetImageMemoryRequirements2KHR)
   ENTRY(GetDeviceBufferMemoryRequirements)
   ENTRY(GetDeviceBufferMemoryRequirementsKHR)
   ENTRY(GetDeviceImageMemoryRequirements)
   ENTRY(GetDeviceImageMemoryRequirementsKHR)
   ENTRY(QueuePresentKHR)
   ENTRY(WaitForFences)
   ENTRY(GetFenceStatus)
   ENTRY(QueueWaitIdle)
   ENTRY(DeviceWaitIdle)
   ENTRY(WaitSemaphores)
   ENTRY(WaitSemaphoresKHR)
   ENTRY(GetSemaphoreCounterValue)
   ENTRY(GetSemaphoreCounterValueKHR)
   ENTRY(GetEventStatus)
#undef ENTRY
   return NULL;
}
