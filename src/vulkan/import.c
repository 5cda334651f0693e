/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: imported host memory on a type the layer made coherent
 *
 * Memory imported from a host pointer (VK_EXT_external_memory_host) is the
 * application's own memory: it writes and reads it through its pointer,
 * mapped or not, so no shadow (shadow mode) and no tracked mapping made
 * at vkMapMemory (direct mode) would see its stores.  It is passed through
 * — but where the driver's type is not coherent and the layer advertises
 * HOST_COHERENT on it (shadow mode on a non-coherent driver, direct mode),
 * the application was promised coherence and will not flush.
 *
 * So the layer keeps such memory mapped in the driver itself, for its
 * whole life, from vkAllocateMemory on (a flush needs a mapping, and the
 * application need never map it), and treats it as wholly written by
 * both sides: every submission flushes all of it, and every observed
 * completion flushes it (the CPU may have written since the submission;
 * an invalidation would discard those lines) and then invalidates all of
 * it.  The application's vkMapMemory returns the layer's mapping at the
 * offset and vkUnmapMemory only forgets it, so the memory stays mapped
 * once in the driver.  This costs a flush of the whole import per
 * submission (cache maintenance of every line, not a copy); tracking its
 * pages instead would mean write-protecting memory the application owns
 * and may hand to the kernel (read(2) into it).  Within one atom, CPU and
 * GPU writes cannot both survive, as in direct mode.
 *
 * Memory imported from an fd or allocated for export is not covered: it
 * is mapped only through vkMapMemory, where a driver that is not coherent
 * still needs the application's flushes (docs/vulkan.md, "Not done yet").
 */

#include <inttypes.h>
#include <string.h>

#include "vulkan/layer.h"

static bool
host_import(const VkMemoryAllocateInfo *info)
{
   for (const VkBaseInStructure *s = info->pNext; s; s = s->pNext) {
      if (s->sType == VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT)
         return true;
   }
   return false;
}

void
cm_import_init(struct cm_device *dev, struct cm_memory *mem,
               const VkMemoryAllocateInfo *info)
{
   if (!mem->passthrough || !mem->noncoherent || !host_import(info))
      return;
   void *p = NULL;
   VkResult res =
      dev->next.MapMemory(dev->device, mem->handle, 0, VK_WHOLE_SIZE, 0, &p);
   if (res != VK_SUCCESS) {
      cm_log("warning: cannot map imported host memory %p (%d): it is not "
             "coherent",
             (void *)mem->handle, res);
      return;
   }
   pthread_mutex_lock(&dev->lock);
   if (dev->import_count == dev->import_cap) {
      uint32_t cap = dev->import_cap ? dev->import_cap * 2 : 8;
      struct cm_memory **n =
         cm_realloc(&dev->alloc, dev->imports, cap * sizeof(*n),
                    VK_SYSTEM_ALLOCATION_SCOPE_DEVICE);
      if (!n) {
         pthread_mutex_unlock(&dev->lock);
         dev->next.UnmapMemory(dev->device, mem->handle);
         cm_log("warning: out of memory: imported host memory %p is not "
                "coherent",
                (void *)mem->handle);
         return;
      }
      dev->imports = n;
      dev->import_cap = cap;
   }
   mem->import_ptr = p;
   mem->import_index = dev->import_count;
   dev->imports[dev->import_count++] = mem;
   /* Counted as one map: the stats line then shows the memory. */
   mem->stats.maps++;
   dev->stat_memories++;
   pthread_mutex_unlock(&dev->lock);
}

void
cm_import_finish(struct cm_device *dev, struct cm_memory *mem)
{
   if (!mem->import_ptr)
      return;
   /* The driver unmaps it with vkFreeMemory (or the device). */
   uint32_t i = mem->import_index;
   dev->imports[i] = dev->imports[--dev->import_count];
   dev->imports[i]->import_index = i;
   mem->import_ptr = NULL;
}

VkResult
cm_import_map(struct cm_device *dev, struct cm_memory *mem,
              VkDeviceSize offset, VkDeviceSize size, VkMemoryMapFlags flags,
              void **out)
{
   if (!mem->import_ptr)
      return dev->next.MapMemory(dev->device, mem->handle, offset, size,
                                 flags, out);
   VkDeviceSize end = size == VK_WHOLE_SIZE ? mem->size : offset + size;
   if (mem->import_app_mapped || offset >= mem->size || size == 0 ||
       end > mem->size || end < offset)
      return cm_map_invalid(dev, mem->handle, offset, size, flags, out, true);
   mem->import_app_mapped = true;
   *out = mem->import_ptr + offset;
   return VK_SUCCESS;
}

bool
cm_import_unmap(struct cm_device *dev, struct cm_memory *mem)
{
   if (!mem->import_ptr)
      return false;
   /* Unmapping memory the application did not map is invalid usage, but
    * passing it down would end the layer's mapping: it is only logged. */
   if (!mem->import_app_mapped)
      cm_log("error: vkUnmapMemory(%p): not mapped", (void *)mem->handle);
   mem->import_app_mapped = false;
   return true;
}

/* Appends all of mem (VK_WHOLE_SIZE: its end need not be atom-aligned). */
static uint32_t
import_ranges(struct cm_device *dev, bool *oom)
{
   if (dev->scratch_cap < dev->import_count) {
      VkMappedMemoryRange *n =
         cm_realloc(&dev->alloc, dev->scratch, dev->import_count * sizeof(*n),
                    VK_SYSTEM_ALLOCATION_SCOPE_DEVICE);
      if (!n) {
         *oom = true;
         return 0;
      }
      dev->scratch = n;
      dev->scratch_cap = dev->import_count;
   }
   for (uint32_t i = 0; i < dev->import_count; i++)
      dev->scratch[i] = (VkMappedMemoryRange){
         .sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
         .memory = dev->imports[i]->handle,
         .offset = 0,
         .size = VK_WHOLE_SIZE,
      };
   return dev->import_count;
}

VkResult
cm_import_flush(struct cm_device *dev)
{
   if (!dev->import_count)
      return VK_SUCCESS;
   bool oom = false;
   uint32_t n = import_ranges(dev, &oom);
   if (oom)
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   VkResult res =
      dev->next.FlushMappedMemoryRanges(dev->device, n, dev->scratch);
   for (uint32_t i = 0; i < n; i++) {
      struct cm_memory *mem = dev->imports[i];
      mem->stats.flushes++;
      mem->stats.bytes_atom_flushed += mem->size;
   }
   return res;
}

void
cm_import_invalidate(struct cm_device *dev)
{
   if (!dev->import_count)
      return;
   /* Flush first: the CPU may have written since the submission. */
   if (cm_import_flush(dev) != VK_SUCCESS) {
      cm_log("error: cannot flush imported host memory: not invalidated");
      return;
   }
   bool oom = false;
   uint32_t n = import_ranges(dev, &oom);
   if (oom)
      return;
   dev->next.InvalidateMappedMemoryRanges(dev->device, n, dev->scratch);
   for (uint32_t i = 0; i < n; i++)
      dev->imports[i]->stats.bytes_atom_invalidated += dev->imports[i]->size;
}
