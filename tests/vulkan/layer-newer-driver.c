/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * VK_LAYER_COHMAP_test_newer_driver: a test-only layer placed below the
 * cohmap layer (and above validation, which does not know the extensions
 * and wraps handles) that makes lavapipe look like a newer driver, one with
 * VK_KHR_map_memory2 and VK_EXT_map_memory_placed (Mesa 22.3's lavapipe
 * has neither; no driver on this machine does).  test-map2 uses it to
 * check that the cohmap layer intercepts vkMapMemory2KHR and
 * vkUnmapMemory2KHR and hides VK_EXT_map_memory_placed.
 *
 * It is an emulation, not a driver: vkMapMemory2KHR is vkMapMemory with
 * the parameters in a structure, as the extension defines it, and placed
 * maps (which would need the driver to map at an address of the
 * application's choosing) fail with VK_ERROR_FEATURE_NOT_PRESENT, which
 * no real map returns, so a test sees that one reached it.  It counts
 * what reached it (test_newer_driver_counts(), found by the test with
 * dlopen(RTLD_NOLOAD)) and remembers the last pointer the real
 * vkMapMemory returned, so that the test can tell the driver's pointer
 * from the cohmap layer's shadow.
 *
 * One instance and one device at a time: enough for the test.
 */

#include <stdbool.h>
#include <string.h>

#include <vulkan/vk_layer.h>
#include <vulkan/vulkan.h>

#include "newer-driver.h"
#include "vulkan/map2.h"

#define LAYER_NAME "VK_LAYER_COHMAP_test_newer_driver"
#define EXPORT     __attribute__((visibility("default")))

static struct test_newer_driver_counts counts;
static PFN_vkGetInstanceProcAddr next_gipa;
static PFN_vkGetDeviceProcAddr next_gdpa;
static PFN_vkMapMemory next_map;
static PFN_vkUnmapMemory next_unmap;
static PFN_vkEnumerateDeviceExtensionProperties next_enum;
static VkInstance instance;

static const VkExtensionProperties added[] = {
   {"VK_KHR_map_memory2", 1},
   {"VK_EXT_map_memory_placed", 1},
};
#define ADDED_COUNT (sizeof(added) / sizeof(added[0]))

EXPORT struct test_newer_driver_counts *test_newer_driver_counts(void);

EXPORT struct test_newer_driver_counts *
test_newer_driver_counts(void)
{
   return &counts;
}

static VKAPI_ATTR VkResult VKAPI_CALL
CreateInstance(const VkInstanceCreateInfo *info,
               const VkAllocationCallbacks *alloc, VkInstance *out)
{
   VkLayerInstanceCreateInfo *link = (VkLayerInstanceCreateInfo *)info->pNext;
   while (link &&
          !(link->sType == VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO &&
            link->function == VK_LAYER_LINK_INFO))
      link = (VkLayerInstanceCreateInfo *)link->pNext;
   if (!link)
      return VK_ERROR_INITIALIZATION_FAILED;
   next_gipa = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
   link->u.pLayerInfo = link->u.pLayerInfo->pNext;
   PFN_vkCreateInstance create =
      (PFN_vkCreateInstance)next_gipa(NULL, "vkCreateInstance");
   VkResult res = create(info, alloc, out);
   if (res == VK_SUCCESS) {
      instance = *out;
      next_enum = (PFN_vkEnumerateDeviceExtensionProperties)next_gipa(
         *out, "vkEnumerateDeviceExtensionProperties");
   }
   return res;
}

/* The driver's extensions and the two this layer adds. */
static VKAPI_ATTR VkResult VKAPI_CALL
EnumerateDeviceExtensionProperties(VkPhysicalDevice physical,
                                   const char *layer, uint32_t *count,
                                   VkExtensionProperties *props)
{
   if (layer && !strcmp(layer, LAYER_NAME)) {
      if (!props) {
         *count = ADDED_COUNT;
         return VK_SUCCESS;
      }
      uint32_t n = *count < ADDED_COUNT ? *count : ADDED_COUNT;
      memcpy(props, added, n * sizeof(*props));
      *count = n;
      return n < ADDED_COUNT ? VK_INCOMPLETE : VK_SUCCESS;
   }
   if (layer)
      return next_enum(physical, layer, count, props);
   uint32_t driver = 0;
   VkResult res = next_enum(physical, NULL, &driver, NULL);
   if (res != VK_SUCCESS)
      return res;
   if (!props) {
      *count = driver + ADDED_COUNT;
      return VK_SUCCESS;
   }
   uint32_t n = *count < driver ? *count : driver;
   res = next_enum(physical, NULL, &n, props);
   if (res != VK_SUCCESS)
      return res;
   uint32_t room = *count - n;
   uint32_t extra = room < ADDED_COUNT ? room : ADDED_COUNT;
   memcpy(props + n, added, extra * sizeof(*props));
   *count = n + extra;
   return extra < ADDED_COUNT ? VK_INCOMPLETE : VK_SUCCESS;
}

static bool
is_added(const char *name)
{
   for (size_t i = 0; i < ADDED_COUNT; i++) {
      if (!strcmp(name, added[i].extensionName))
         return true;
   }
   return false;
}

/* The driver does not know the two extensions: they are not passed on. */
static VKAPI_ATTR VkResult VKAPI_CALL
CreateDevice(VkPhysicalDevice physical, const VkDeviceCreateInfo *info,
             const VkAllocationCallbacks *alloc, VkDevice *out)
{
   VkLayerDeviceCreateInfo *link = (VkLayerDeviceCreateInfo *)info->pNext;
   while (link &&
          !(link->sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO &&
            link->function == VK_LAYER_LINK_INFO))
      link = (VkLayerDeviceCreateInfo *)link->pNext;
   if (!link)
      return VK_ERROR_INITIALIZATION_FAILED;
   next_gdpa = link->u.pLayerInfo->pfnNextGetDeviceProcAddr;
   PFN_vkCreateDevice create =
      (PFN_vkCreateDevice)link->u.pLayerInfo->pfnNextGetInstanceProcAddr(
         instance, "vkCreateDevice");
   link->u.pLayerInfo = link->u.pLayerInfo->pNext;

   const char *names[64];
   VkDeviceCreateInfo copy = *info;
   copy.enabledExtensionCount = 0;
   copy.ppEnabledExtensionNames = names;
   for (uint32_t i = 0; i < info->enabledExtensionCount && i < 64; i++) {
      if (!is_added(info->ppEnabledExtensionNames[i]))
         names[copy.enabledExtensionCount++] =
            info->ppEnabledExtensionNames[i];
   }
   VkResult res = create(physical, &copy, alloc, out);
   if (res == VK_SUCCESS) {
      next_map = (PFN_vkMapMemory)next_gdpa(*out, "vkMapMemory");
      next_unmap = (PFN_vkUnmapMemory)next_gdpa(*out, "vkUnmapMemory");
   }
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
MapMemory(VkDevice device, VkDeviceMemory memory, VkDeviceSize offset,
          VkDeviceSize size, VkMemoryMapFlags flags, void **out)
{
   VkResult res = next_map(device, memory, offset, size, flags, out);
   counts.maps++;
   if (res == VK_SUCCESS)
      counts.last_map = *out;
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
MapMemory2KHR(VkDevice device, const struct cm_memory_map_info *info,
              void **out)
{
   counts.map2++;
   if (info->flags & CM_MEMORY_MAP_PLACED_BIT) {
      counts.placed++;
      return VK_ERROR_FEATURE_NOT_PRESENT;
   }
   return MapMemory(device, info->memory, info->offset, info->size,
                    info->flags, out);
}

static VKAPI_ATTR VkResult VKAPI_CALL
UnmapMemory2KHR(VkDevice device, const struct cm_memory_unmap_info *info)
{
   counts.unmap2++;
   if (info->flags & CM_MEMORY_UNMAP_RESERVE_BIT) {
      counts.placed++;
      return VK_ERROR_FEATURE_NOT_PRESENT;
   }
   next_unmap(device, info->memory);
   return VK_SUCCESS;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL
GetDeviceProcAddr(VkDevice device, const char *name)
{
   if (!strcmp(name, "vkGetDeviceProcAddr"))
      return (PFN_vkVoidFunction)GetDeviceProcAddr;
   if (!strcmp(name, "vkMapMemory"))
      return (PFN_vkVoidFunction)MapMemory;
   if (!strcmp(name, "vkMapMemory2KHR"))
      return (PFN_vkVoidFunction)MapMemory2KHR;
   if (!strcmp(name, "vkUnmapMemory2KHR"))
      return (PFN_vkVoidFunction)UnmapMemory2KHR;
   return next_gdpa(device, name);
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL
GetInstanceProcAddr(VkInstance inst, const char *name)
{
   if (!strcmp(name, "vkGetInstanceProcAddr"))
      return (PFN_vkVoidFunction)GetInstanceProcAddr;
   if (!strcmp(name, "vkCreateInstance"))
      return (PFN_vkVoidFunction)CreateInstance;
   if (!strcmp(name, "vkCreateDevice"))
      return (PFN_vkVoidFunction)CreateDevice;
   if (!strcmp(name, "vkEnumerateDeviceExtensionProperties"))
      return (PFN_vkVoidFunction)EnumerateDeviceExtensionProperties;
   if (!strcmp(name, "vkGetDeviceProcAddr"))
      return (PFN_vkVoidFunction)GetDeviceProcAddr;
   return next_gipa(inst, name);
}

EXPORT VKAPI_ATTR VkResult VKAPI_CALL
vkNegotiateLoaderLayerInterfaceVersion(VkNegotiateLayerInterface *v)
{
   if (v->loaderLayerInterfaceVersion < 2)
      return VK_ERROR_INITIALIZATION_FAILED;
   v->loaderLayerInterfaceVersion = 2;
   v->pfnGetInstanceProcAddr = GetInstanceProcAddr;
   v->pfnGetPhysicalDeviceProcAddr = NULL;
   v->pfnGetDeviceProcAddr = GetDeviceProcAddr;
   return VK_SUCCESS;
}
