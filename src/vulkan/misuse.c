/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Invalid usage.  The layer sits above the Khronos validation layer when
 * both are enabled (the usual order: explicit layers in the order asked
 * for), so a call the layer answers itself never reaches validation, and
 * the application's mistake would go unreported.  Calls the layer finds
 * invalid therefore go down as the application made them — validation
 * reports them, the driver answers — and the layer only makes sure it
 * never hands out a pointer it cannot keep coherent.
 */

#include "vulkan/layer.h"

VkResult
cm_map_invalid(struct cm_device *dev, VkDeviceMemory memory,
               VkDeviceSize offset, VkDeviceSize size, VkMemoryMapFlags flags,
               void **out, bool driver_mapped)
{
   void *p = NULL;
   VkResult res =
      dev->next.MapMemory(dev->device, memory, offset, size, flags, &p);
   if (res != VK_SUCCESS)
      return res;
   /* A driver that does not check (lavapipe maps anything): its mapping
    * goes again unless the layer's own was already there, which an
    * unmap would end too. */
   if (!driver_mapped)
      dev->next.UnmapMemory(dev->device, memory);
   return VK_ERROR_MEMORY_MAP_FAILED;
}

bool
cm_range_outside(const struct cm_memory *mem, const VkMappedMemoryRange *r)
{
   VkDeviceSize end = mem->map_lo + mem->map_len;
   if (r->offset < mem->map_lo || r->offset >= end)
      return true;
   if (r->size == VK_WHOLE_SIZE)
      return false;
   return r->size == 0 || r->size > end - r->offset;
}
