/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#include "vk-util.h"

#include <dlfcn.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>

bool vk_no_validation;
bool vk_force_layer;
const char *vk_below_layer;
const char *vk_extra_extension;
unsigned vk_validation_messages;
unsigned vk_validation_expected;
bool vk_test_failed;

#define LAYER_COHMAP     "VK_LAYER_COHMAP_coherent_memory"
#define LAYER_VALIDATION "VK_LAYER_KHRONOS_validation"

static const char *const config_names[] = {
   [VK_CONFIG_NONE] = "none",
   [VK_CONFIG_SHADOW] = "shadow",
   [VK_CONFIG_NONCOHERENT] = "noncoherent",
   [VK_CONFIG_DIRECT] = "direct",
   [VK_CONFIG_DEVICE_LOCAL] = "device-local",
   [VK_CONFIG_ENV] = "env",
};

const char *
vk_config_name(enum vk_config config)
{
   return config_names[config];
}

bool
vk_config_parse(const char *name, enum vk_config *out)
{
   for (unsigned i = 0; i < sizeof(config_names) / sizeof(*config_names);
        i++) {
      if (!strcmp(name, config_names[i])) {
         *out = (enum vk_config)i;
         return true;
      }
   }
   return false;
}

void
vk_config_env(enum vk_config config)
{
   switch (config) {
   case VK_CONFIG_NONE:
      unsetenv("COHMAP_MODE");
      unsetenv("COHMAP_VK_PRETEND");
      break;
   case VK_CONFIG_SHADOW:
      setenv("COHMAP_MODE", "shadow", 1);
      unsetenv("COHMAP_VK_PRETEND");
      break;
   case VK_CONFIG_NONCOHERENT:
      setenv("COHMAP_MODE", "shadow", 1);
      setenv("COHMAP_VK_PRETEND", "noncoherent", 1);
      break;
   case VK_CONFIG_DIRECT:
      setenv("COHMAP_MODE", "direct", 1);
      setenv("COHMAP_VK_PRETEND", "noncoherent", 1);
      break;
   case VK_CONFIG_DEVICE_LOCAL:
      setenv("COHMAP_MODE", "device-local", 1);
      setenv("COHMAP_VK_PRETEND", "device-local", 1);
      break;
   case VK_CONFIG_ENV:
      break;
   }
}

static bool
have_layer(const char *name)
{
   uint32_t n = 0;
   if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS)
      return false;
   VkLayerProperties *p = calloc(n ? n : 1, sizeof(*p));
   bool found = false;
   if (p && vkEnumerateInstanceLayerProperties(&n, p) == VK_SUCCESS) {
      for (uint32_t i = 0; i < n; i++)
         found |= !strcmp(p[i].layerName, name);
   }
   free(p);
   return found;
}

void
vk_require_machine(void)
{
   /* Only lavapipe: other ICDs on the machine (radeon, intel) would fail
    * without hardware or pick a device the tests do not expect. */
   if (!getenv("VK_ICD_FILENAMES") && !getenv("VK_DRIVER_FILES")) {
      glob_t g;
      if (glob("/usr/share/vulkan/icd.d/lvp_icd.*.json", 0, NULL, &g) ||
          g.gl_pathc == 0) {
         printf("1..0 # SKIP lavapipe not installed (Debian: "
                "mesa-vulkan-drivers)\n");
         exit(77);
      }
      setenv("VK_ICD_FILENAMES", g.gl_pathv[0], 1);
      globfree(&g);
   }
   /* The loader dlclose()s lavapipe with each instance; memory lavapipe
    * keeps in its globals (128 bytes, seen in the direct runs) then looks
    * leaked to LeakSanitizer at exit.  Pinning the library keeps its
    * globals scanned; absent, it changes nothing. */
   dlopen("libvulkan_lvp.so", RTLD_NOW | RTLD_NODELETE);
   if (!vk_no_validation && !have_layer(LAYER_VALIDATION)) {
      printf("1..0 # SKIP the Khronos validation layer is not installed "
             "(Debian: vulkan-validationlayers)\n");
      exit(77);
   }
   if (!have_layer(LAYER_COHMAP)) {
      /* Not a skip: it is this project's own build product. */
      printf("Bail out! %s not found: VK_LAYER_PATH=%s\n", LAYER_COHMAP,
             getenv("VK_LAYER_PATH") ? getenv("VK_LAYER_PATH") : "(unset)");
      exit(1);
   }
}

static VKAPI_ATTR VkBool32 VKAPI_CALL
messenger_cb(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
             VkDebugUtilsMessageTypeFlagsEXT type,
             const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
   /* The loader reports through the messenger too (general warnings,
    * e.g. "env var VK_INSTANCE_LAYERS defined"): shown, not counted. */
   bool counts = (type & ~VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT) ||
                 (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT);
   if (counts)
      vk_validation_messages++;
   printf("# %s: %s\n", counts ? "validation" : "loader", data->pMessage);
   return VK_FALSE;
}

bool
vk_init(struct vk *vk, enum vk_config config)
{
   VkAllocationCallbacks *alloc = vk->alloc;
   memset(vk, 0, sizeof(*vk));
   vk->alloc = alloc;
   vk->config = config;
   vk_config_env(config);

   const char *layers[3];
   uint32_t layer_count = 0;
   /* The cohmap layer first (nearest the application), validation below
    * it: validation sees the layer's own calls to the driver. */
   if ((config != VK_CONFIG_NONE && config != VK_CONFIG_ENV) ||
       vk_force_layer)
      layers[layer_count++] = LAYER_COHMAP;
   /* A test layer dressing the driver up goes above validation: the
    * validation layer wraps non-dispatchable handles, so a function it
    * does not know (an emulated extension's) must be implemented above
    * it, where its calls down are ones validation unwraps. */
   if (vk_below_layer)
      layers[layer_count++] = vk_below_layer;
   if (!vk_no_validation)
      layers[layer_count++] = LAYER_VALIDATION;

   const char *ext[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
   VkDebugUtilsMessengerCreateInfoEXT mci = {
      .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
      .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                         VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
      .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
      .pfnUserCallback = messenger_cb,
   };
   VkApplicationInfo app = {
      .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
      .pApplicationName = "cohmap-vulkan-test",
      .apiVersion = VK_API_VERSION_1_3,
   };
   VkInstanceCreateInfo ici = {
      .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
      .pNext = vk_no_validation ? NULL : &mci,
      .pApplicationInfo = &app,
      .enabledLayerCount = layer_count,
      .ppEnabledLayerNames = layers,
      .enabledExtensionCount = vk_no_validation ? 0 : 1,
      .ppEnabledExtensionNames = ext,
   };
   VK_CHECK(vkCreateInstance(&ici, vk->alloc, &vk->instance));

   if (vk_no_validation)
      goto devices;
   PFN_vkCreateDebugUtilsMessengerEXT create_messenger =
      (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
         vk->instance, "vkCreateDebugUtilsMessengerEXT");
   VK_EXPECT(create_messenger, "vkCreateDebugUtilsMessengerEXT");
   VK_CHECK(create_messenger(vk->instance, &mci, vk->alloc, &vk->messenger));

devices:;
   uint32_t n = 1;
   VkResult res = vkEnumeratePhysicalDevices(vk->instance, &n, &vk->physical);
   VK_EXPECT((res == VK_SUCCESS || res == VK_INCOMPLETE) && n == 1,
             "a physical device (%d, %u)", res, n);

   VkPhysicalDeviceProperties props;
   vkGetPhysicalDeviceProperties(vk->physical, &props);
   vk->atom = props.limits.nonCoherentAtomSize;

   VkPhysicalDeviceMemoryProperties mp;
   vkGetPhysicalDeviceMemoryProperties(vk->physical, &mp);
   const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                      VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
   vk->host_type = UINT32_MAX;
   for (uint32_t i = 0; i < mp.memoryTypeCount; i++) {
      if ((mp.memoryTypes[i].propertyFlags & want) == want) {
         vk->host_type = i;
         break;
      }
   }
   VK_EXPECT(vk->host_type != UINT32_MAX, "a host-visible coherent type");
   /* The order the specification requires of memoryTypes (what the
    * layer presents must keep it): a type whose flags are a strict subset
    * of another's comes first, so that taking the first type with the
    * flags one needs gets the least specialised one. */
   for (uint32_t i = 0; i < mp.memoryTypeCount; i++) {
      for (uint32_t j = i + 1; j < mp.memoryTypeCount; j++) {
         VkMemoryPropertyFlags x = mp.memoryTypes[i].propertyFlags;
         VkMemoryPropertyFlags y = mp.memoryTypes[j].propertyFlags;
         VK_EXPECT(!((y & x) == y && y != x),
                   "memory type %u (%#x) before type %u (%#x), whose flags "
                   "are a strict subset of its",
                   i, x, j, y);
      }
   }

   /* vkGetPhysicalDeviceMemoryProperties2 must say the same. */
   VkPhysicalDeviceMemoryProperties2 mp2 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
   };
   vkGetPhysicalDeviceMemoryProperties2(vk->physical, &mp2);
   VK_EXPECT(mp2.memoryProperties.memoryTypeCount == mp.memoryTypeCount &&
                !memcmp(mp2.memoryProperties.memoryTypes, mp.memoryTypes,
                        mp.memoryTypeCount * sizeof(VkMemoryType)),
             "the same memory types from ...Properties and ...2");

   uint32_t qn = 0;
   vkGetPhysicalDeviceQueueFamilyProperties(vk->physical, &qn, NULL);
   VkQueueFamilyProperties qf[8];
   if (qn > 8)
      qn = 8;
   vkGetPhysicalDeviceQueueFamilyProperties(vk->physical, &qn, qf);
   vk->queue_family = UINT32_MAX;
   for (uint32_t i = 0; i < qn; i++) {
      if (qf[i].queueFlags & VK_QUEUE_TRANSFER_BIT ||
          qf[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) {
         vk->queue_family = i;
         vk->queue_count = qf[i].queueCount;
         break;
      }
   }
   VK_EXPECT(vk->queue_family != UINT32_MAX, "a transfer queue");

   /* VK_EXT_external_memory_host (the host-import test): enabled when
    * the driver has it, so that every configuration imports the same
    * way. */
   uint32_t en = 0;
   vkEnumerateDeviceExtensionProperties(vk->physical, NULL, &en, NULL);
   VkExtensionProperties *ep = calloc(en ? en : 1, sizeof(*ep));
   if (ep && vkEnumerateDeviceExtensionProperties(vk->physical, NULL, &en,
                                                  ep) == VK_SUCCESS) {
      for (uint32_t i = 0; i < en; i++) {
         vk->host_import |= !strcmp(
            ep[i].extensionName, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);
         vk->extra_extension |=
            vk_extra_extension &&
            !strcmp(ep[i].extensionName, vk_extra_extension);
      }
   }
   free(ep);
   if (vk->host_import) {
      VkPhysicalDeviceExternalMemoryHostPropertiesEXT hp = {
         .sType =
            VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT,
      };
      VkPhysicalDeviceProperties2 pp2 = {
         .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
         .pNext = &hp,
      };
      vkGetPhysicalDeviceProperties2(vk->physical, &pp2);
      vk->host_import_align = hp.minImportedHostPointerAlignment;
   }
   const char *dev_ext[2];
   uint32_t dev_ext_count = 0;
   if (vk->host_import)
      dev_ext[dev_ext_count++] = VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME;
   if (vk->extra_extension)
      dev_ext[dev_ext_count++] = vk_extra_extension;

   VkPhysicalDeviceVulkan13Features f13 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES,
      .synchronization2 = VK_TRUE,
   };
   VkPhysicalDeviceVulkan12Features f12 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
      .pNext = &f13,
      .timelineSemaphore = VK_TRUE,
   };
   float prio[2] = {1.0f, 1.0f};
   VkDeviceQueueCreateInfo qci = {
      .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
      .queueFamilyIndex = vk->queue_family,
      .queueCount = vk->queue_count >= 2 ? 2 : 1,
      .pQueuePriorities = prio,
   };
   vk->queue_count = qci.queueCount;
   VkDeviceCreateInfo dci = {
      .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
      .pNext = &f12,
      .queueCreateInfoCount = 1,
      .pQueueCreateInfos = &qci,
      .enabledExtensionCount = dev_ext_count,
      .ppEnabledExtensionNames = dev_ext,
   };
   VK_CHECK(vkCreateDevice(vk->physical, &dci, vk->alloc, &vk->device));
   vkGetDeviceQueue(vk->device, vk->queue_family, 0, &vk->queue);

   VkCommandPoolCreateInfo pci = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
      .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
      .queueFamilyIndex = vk->queue_family,
   };
   VK_CHECK(vkCreateCommandPool(vk->device, &pci, vk->alloc, &vk->pool));

   VkSemaphoreTypeCreateInfo sti = {
      .sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO,
      .semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE,
   };
   VkSemaphoreCreateInfo sci = {
      .sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO,
      .pNext = &sti,
   };
   VK_CHECK(vkCreateSemaphore(vk->device, &sci, vk->alloc, &vk->timeline));
   VkEventCreateInfo eci = {.sType = VK_STRUCTURE_TYPE_EVENT_CREATE_INFO};
   VK_CHECK(vkCreateEvent(vk->device, &eci, vk->alloc, &vk->event));
   return true;
}

void
vk_finish(struct vk *vk)
{
   if (vk->device) {
      vkDeviceWaitIdle(vk->device);
      vkDestroyEvent(vk->device, vk->event, vk->alloc);
      vkDestroySemaphore(vk->device, vk->timeline, vk->alloc);
      vkDestroyCommandPool(vk->device, vk->pool, vk->alloc);
      vkDestroyDevice(vk->device, vk->alloc);
   }
   if (vk->messenger) {
      PFN_vkDestroyDebugUtilsMessengerEXT destroy =
         (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
            vk->instance, "vkDestroyDebugUtilsMessengerEXT");
      destroy(vk->instance, vk->messenger, vk->alloc);
   }
   if (vk->instance)
      vkDestroyInstance(vk->instance, vk->alloc);
   VkAllocationCallbacks *alloc = vk->alloc;
   memset(vk, 0, sizeof(*vk));
   vk->alloc = alloc;
}

bool
vk_memory_alloc(struct vk *vk, VkDeviceSize size, VkDeviceMemory *out)
{
   VkMemoryAllocateInfo mai = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
      .allocationSize = size,
      .memoryTypeIndex = vk->host_type,
   };
   VK_CHECK(vkAllocateMemory(vk->device, &mai, vk->alloc, out));
   return true;
}

static bool
buffer_new(struct vk *vk, VkDeviceSize size, VkBufferUsageFlags usage,
           struct vk_buffer *out)
{
   memset(out, 0, sizeof(*out));
   out->size = size;
   VkBufferCreateInfo bci = {
      .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
      .size = size,
      .usage = usage,
      .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
   };
   VK_CHECK(vkCreateBuffer(vk->device, &bci, vk->alloc, &out->buffer));
   return true;
}

bool
vk_buffer_create(struct vk *vk, VkDeviceSize size, VkBufferUsageFlags usage,
                 bool map, struct vk_buffer *out)
{
   if (!buffer_new(vk, size, usage, out))
      return false;
   VkMemoryRequirements req;
   vkGetBufferMemoryRequirements(vk->device, out->buffer, &req);
   VK_EXPECT(req.memoryTypeBits & (1u << vk->host_type), "host-visible");
   if (!vk_memory_alloc(vk, req.size, &out->memory))
      return false;
   out->own_memory = true;
   VK_CHECK(vkBindBufferMemory(vk->device, out->buffer, out->memory, 0));
   /* New memory is not zeroed (lavapipe recycles it): tests start from
    * zeroes written by the CPU. */
   VK_CHECK(vkMapMemory(vk->device, out->memory, 0, VK_WHOLE_SIZE, 0,
                        (void **)&out->map));
   memset(out->map, 0, req.size);
   if (!map) {
      vkUnmapMemory(vk->device, out->memory);
      out->map = NULL;
   }
   return true;
}

bool
vk_buffer_bind(struct vk *vk, VkDeviceSize size, VkBufferUsageFlags usage,
               VkDeviceMemory memory, VkDeviceSize offset,
               struct vk_buffer *out)
{
   if (!buffer_new(vk, size, usage, out))
      return false;
   out->memory = memory;
   VK_CHECK(vkBindBufferMemory(vk->device, out->buffer, memory, offset));
   return true;
}

void
vk_buffer_destroy(struct vk *vk, struct vk_buffer *b)
{
   vkDestroyBuffer(vk->device, b->buffer, vk->alloc);
   if (b->own_memory) {
      if (b->map)
         vkUnmapMemory(vk->device, b->memory);
      vkFreeMemory(vk->device, b->memory, vk->alloc);
   }
   memset(b, 0, sizeof(*b));
}

static const char *const completion_names[] = {
   [VK_COMPLETE_FENCE_WAIT] = "vkWaitForFences",
   [VK_COMPLETE_FENCE_POLL] = "vkGetFenceStatus",
   [VK_COMPLETE_QUEUE_IDLE] = "vkQueueWaitIdle",
   [VK_COMPLETE_DEVICE_IDLE] = "vkDeviceWaitIdle",
   [VK_COMPLETE_TIMELINE_WAIT] = "vkWaitSemaphores",
   [VK_COMPLETE_TIMELINE_POLL] = "vkGetSemaphoreCounterValue",
   [VK_COMPLETE_EVENT_POLL] = "vkGetEventStatus",
};

const char *
vk_completion_name(enum vk_completion c)
{
   return completion_names[c];
}

bool
vk_cmd_begin(struct vk *vk, VkCommandBuffer *out)
{
   VkCommandBufferAllocateInfo cai = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
      .commandPool = vk->pool,
      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
      .commandBufferCount = 1,
   };
   VK_CHECK(vkAllocateCommandBuffers(vk->device, &cai, out));
   VkCommandBufferBeginInfo bi = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
   };
   VK_CHECK(vkBeginCommandBuffer(*out, &bi));
   return true;
}

void
vk_cmd_transfer_to_host(VkCommandBuffer cb)
{
   VkMemoryBarrier mb = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
      .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
      .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
   };
   vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                        VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0,
                        NULL);
}

bool
vk_cmd_submit(struct vk *vk, VkCommandBuffer cb, enum vk_completion c,
              bool submit2)
{
   vk_cmd_transfer_to_host(cb);
   if (c == VK_COMPLETE_EVENT_POLL) {
      VK_CHECK(vkResetEvent(vk->device, vk->event));
      vkCmdSetEvent(cb, vk->event, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT);
   }
   VK_CHECK(vkEndCommandBuffer(cb));

   VkFence fence = VK_NULL_HANDLE;
   if (c == VK_COMPLETE_FENCE_WAIT || c == VK_COMPLETE_FENCE_POLL) {
      VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
      VK_CHECK(vkCreateFence(vk->device, &fci, vk->alloc, &fence));
   }
   bool timeline =
      c == VK_COMPLETE_TIMELINE_WAIT || c == VK_COMPLETE_TIMELINE_POLL;
   uint64_t value = timeline ? ++vk->timeline_value : 0;

   if (submit2) {
      VkCommandBufferSubmitInfo cbi = {
         .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_SUBMIT_INFO,
         .commandBuffer = cb,
      };
      VkSemaphoreSubmitInfo ssi = {
         .sType = VK_STRUCTURE_TYPE_SEMAPHORE_SUBMIT_INFO,
         .semaphore = vk->timeline,
         .value = value,
         .stageMask = VK_PIPELINE_STAGE_2_ALL_COMMANDS_BIT,
      };
      VkSubmitInfo2 si = {
         .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO_2,
         .commandBufferInfoCount = 1,
         .pCommandBufferInfos = &cbi,
         .signalSemaphoreInfoCount = timeline ? 1 : 0,
         .pSignalSemaphoreInfos = &ssi,
      };
      VK_CHECK(vkQueueSubmit2(vk->queue, 1, &si, fence));
   } else {
      VkTimelineSemaphoreSubmitInfo tsi = {
         .sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
         .signalSemaphoreValueCount = 1,
         .pSignalSemaphoreValues = &value,
      };
      VkSubmitInfo si = {
         .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
         .pNext = timeline ? &tsi : NULL,
         .commandBufferCount = 1,
         .pCommandBuffers = &cb,
         .signalSemaphoreCount = timeline ? 1 : 0,
         .pSignalSemaphores = &vk->timeline,
      };
      VK_CHECK(vkQueueSubmit(vk->queue, 1, &si, fence));
   }

   VkResult res;
   switch (c) {
   case VK_COMPLETE_FENCE_WAIT:
      res = vkWaitForFences(vk->device, 1, &fence, VK_TRUE, UINT64_MAX);
      break;
   case VK_COMPLETE_FENCE_POLL:
      while ((res = vkGetFenceStatus(vk->device, fence)) == VK_NOT_READY)
         ;
      break;
   case VK_COMPLETE_QUEUE_IDLE:
      res = vkQueueWaitIdle(vk->queue);
      break;
   case VK_COMPLETE_DEVICE_IDLE:
      res = vkDeviceWaitIdle(vk->device);
      break;
   case VK_COMPLETE_TIMELINE_WAIT: {
      VkSemaphoreWaitInfo wi = {
         .sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO,
         .semaphoreCount = 1,
         .pSemaphores = &vk->timeline,
         .pValues = &value,
      };
      res = vkWaitSemaphores(vk->device, &wi, UINT64_MAX);
      break;
   }
   case VK_COMPLETE_TIMELINE_POLL: {
      uint64_t v = 0;
      while ((res = vkGetSemaphoreCounterValue(vk->device, vk->timeline,
                                               &v)) == VK_SUCCESS &&
             v < value)
         ;
      break;
   }
   case VK_COMPLETE_EVENT_POLL:
      while ((res = vkGetEventStatus(vk->device, vk->event)) ==
             VK_EVENT_RESET)
         ;
      if (res == VK_EVENT_SET)
         res = VK_SUCCESS;
      break;
   default:
      res = VK_ERROR_UNKNOWN;
      break;
   }
   if (fence)
      vkDestroyFence(vk->device, fence, vk->alloc);
   VK_CHECK(res);
   return true;
}

bool
vk_cmd_release(struct vk *vk, VkCommandBuffer cb)
{
   /* After an event was seen set, the submission may still be pending. */
   VK_CHECK(vkQueueWaitIdle(vk->queue));
   vkFreeCommandBuffers(vk->device, vk->pool, 1, &cb);
   return true;
}

bool
vk_cmd_run(struct vk *vk, VkCommandBuffer cb)
{
   return vk_cmd_submit(vk, cb, VK_COMPLETE_FENCE_WAIT, false) &&
          vk_cmd_release(vk, cb);
}

bool
vk_bytes_equal(const char *what, const uint8_t *got, const uint8_t *want,
               size_t size)
{
   if (!memcmp(got, want, size))
      return true;
   size_t first = 0, n = 0;
   while (got[first] == want[first])
      first++;
   for (size_t i = first; i < size; i++)
      n += got[i] != want[i];
   printf("# %s: %zu of %zu bytes differ, first at %zu: got %02x, want "
          "%02x\n",
          what, n, size, first, got[first], want[first]);
   vk_test_failed = true;
   return false;
}
