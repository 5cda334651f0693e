/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * VK_KHR_map_memory2 (Vulkan 1.4 core) and VK_EXT_map_memory_placed, as
 * the specification defines them: the Debian 12 headers (1.3.239) predate
 * both.  Under the layer's own names, so that newer headers do not clash;
 * the layouts are the specification's.  Used by map2.c and by the tests'
 * emulation of a driver that has them (tests/vulkan/layer-newer-driver.c,
 * tests/vulkan/test-map2.c).
 */

#ifndef COHMAP_VULKAN_MAP2_H
#define COHMAP_VULKAN_MAP2_H

#include <vulkan/vulkan.h>

/* VkMemoryMapInfoKHR / VkMemoryMapInfo. */
struct cm_memory_map_info {
   VkStructureType sType;
   const void *pNext;
   VkMemoryMapFlags flags;
   VkDeviceMemory memory;
   VkDeviceSize offset;
   VkDeviceSize size;
};

/* VkMemoryUnmapInfoKHR / VkMemoryUnmapInfo. */
struct cm_memory_unmap_info {
   VkStructureType sType;
   const void *pNext;
   VkFlags flags;
   VkDeviceMemory memory;
};

/* VkMemoryMapPlacedInfoEXT. */
struct cm_memory_map_placed_info {
   VkStructureType sType;
   const void *pNext;
   void *pPlacedAddress;
};

#define CM_STRUCTURE_TYPE_MEMORY_MAP_INFO        ((VkStructureType)1000271000)
#define CM_STRUCTURE_TYPE_MEMORY_UNMAP_INFO      ((VkStructureType)1000271001)
#define CM_STRUCTURE_TYPE_MEMORY_MAP_PLACED_INFO ((VkStructureType)1000272002)
/* VK_MEMORY_MAP_PLACED_BIT_EXT, VK_MEMORY_UNMAP_RESERVE_BIT_EXT. */
#define CM_MEMORY_MAP_PLACED_BIT    0x1u
#define CM_MEMORY_UNMAP_RESERVE_BIT 0x1u

typedef VkResult(VKAPI_PTR *cm_pfn_map_memory2)(
   VkDevice, const struct cm_memory_map_info *, void **);
typedef VkResult(VKAPI_PTR *cm_pfn_unmap_memory2)(
   VkDevice, const struct cm_memory_unmap_info *);

#endif
