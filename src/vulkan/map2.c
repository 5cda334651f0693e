/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: VK_KHR_map_memory2 and VK_EXT_map_memory_placed
 *
 * VK_KHR_map_memory2 (core in Vulkan 1.4 as vkMapMemory2/vkUnmapMemory2)
 * is vkMapMemory/vkUnmapMemory with the parameters in a structure.  A
 * driver that has it would otherwise hand the application its own
 * pointer behind the layer's back: a shadow device would never see the
 * application's writes, and a device-local one would pass down a map of
 * memory the driver cannot map.  So the layer intercepts the four names
 * (when the driver has them: an extension the driver lacks stays absent)
 * and sends them through its own vkMapMemory and vkUnmapMemory for the
 * device's mode; the driver's entry points are called only for what the
 * layer cannot do.
 *
 * That is VK_EXT_map_memory_placed: the application chooses the virtual
 * address (VK_MEMORY_MAP_PLACED_BIT_EXT with VkMemoryMapPlacedInfoEXT)
 * and may keep it reserved across an unmap
 * (VK_MEMORY_UNMAP_RESERVE_BIT_EXT).  The layer's shadow cannot be put at
 * an address the application picks while keeping its tracking, so the
 * layer hides the extension from vkEnumerateDeviceExtensionProperties on
 * the devices it works on (layer.c).  An application that enables it
 * anyway (invalid usage) gets the driver's placed mapping, untracked,
 * with an error line saying so.
 *
 * The structures are in map2.h.
 */

#include <string.h>

#include "vulkan/layer.h"
#include "vulkan/map2.h"

/* The driver's entry point called name, as the device was created with. */
static PFN_vkVoidFunction
below(struct cm_device *dev, const char *name)
{
   return dev->next.GetDeviceProcAddr(dev->device, name);
}

static VkResult
map2(VkDevice device, const struct cm_memory_map_info *info, void **out,
     const char *name)
{
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   if (dev->mode == CM_MODE_OFF) {
      cm_pfn_map_memory2 next = (cm_pfn_map_memory2)below(dev, name);
      return next ? next(device, info, out) : VK_ERROR_MEMORY_MAP_FAILED;
   }
   if (info->flags & CM_MEMORY_MAP_PLACED_BIT) {
      cm_log("error: %s(%p) with VK_MEMORY_MAP_PLACED_BIT_EXT: the layer "
             "does not offer VK_EXT_map_memory_placed; this mapping is the "
             "driver's and is not made coherent",
             name, (void *)info->memory);
      cm_pfn_map_memory2 next = (cm_pfn_map_memory2)below(dev, name);
      return next ? next(device, info, out) : VK_ERROR_MEMORY_MAP_FAILED;
   }
   PFN_vkMapMemory map = (PFN_vkMapMemory)cm_device_proc(dev, "vkMapMemory");
   return map(device, info->memory, info->offset, info->size, info->flags,
              out);
}

static VkResult
unmap2(VkDevice device, const struct cm_memory_unmap_info *info,
       const char *name)
{
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   if (!dev)
      return VK_ERROR_INITIALIZATION_FAILED;
   if (dev->mode == CM_MODE_OFF ||
       (info->flags & CM_MEMORY_UNMAP_RESERVE_BIT)) {
      /* Only a placed mapping may keep its range reserved, and placed
       * mappings are the driver's (map2()). */
      cm_pfn_unmap_memory2 next = (cm_pfn_unmap_memory2)below(dev, name);
      return next ? next(device, info) : VK_ERROR_MEMORY_MAP_FAILED;
   }
   PFN_vkUnmapMemory unmap =
      (PFN_vkUnmapMemory)cm_device_proc(dev, "vkUnmapMemory");
   unmap(device, info->memory);
   return VK_SUCCESS;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_MapMemory2KHR(VkDevice device, const struct cm_memory_map_info *info,
                 void **out)
{
   return map2(device, info, out, "vkMapMemory2KHR");
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_MapMemory2(VkDevice device, const struct cm_memory_map_info *info,
              void **out)
{
   return map2(device, info, out, "vkMapMemory2");
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_UnmapMemory2KHR(VkDevice device, const struct cm_memory_unmap_info *info)
{
   return unmap2(device, info, "vkUnmapMemory2KHR");
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_UnmapMemory2(VkDevice device, const struct cm_memory_unmap_info *info)
{
   return unmap2(device, info, "vkUnmapMemory2");
}

PFN_vkVoidFunction
cm_map2_proc(const char *name)
{
#define ENTRY(fn)                                                            \
   if (!strcmp(name, "vk" #fn))                                              \
      return (PFN_vkVoidFunction)cm_##fn;
   ENTRY(MapMemory2KHR)
   ENTRY(MapMemory2)
   ENTRY(UnmapMemory2KHR)
   ENTRY(UnmapMemory2)
#undef ENTRY
   return NULL;
}

bool
cm_extension_hidden(const char *name)
{
   return !strcmp(name, "VK_EXT_map_memory_placed");
}
