/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: loader glue of VK_LAYER_COHMAP_coherent_memory
 *
 * The layer interface of the Vulkan loader (Vulkan-Loader's
 * docs/LoaderLayerInterface.md): the loader finds the layer through its
 * JSON manifest, negotiates the interface version through the only
 * exported symbol, vkNegotiateLoaderLayerInterfaceVersion, and then asks
 * vkGetInstanceProcAddr / vkGetDeviceProcAddr for every entry point.
 * vkCreateInstance and vkCreateDevice find the next layer's
 * Get*ProcAddr in the loader's link info (VkLayerInstanceCreateInfo /
 * VkLayerDeviceCreateInfo with VK_LAYER_LINK_INFO), advance the chain for
 * the layers below, and call down.
 *
 * Every dispatchable handle starts with the loader's dispatch table
 * pointer; physical devices share their instance's, queues and command
 * buffers their device's.  That pointer is the key of the layer's
 * instance and device records (a short list under a global mutex: there
 * are few instances and devices, and a lookup is a couple of compares).
 *
 * Only devices the layer works on get its memory entry points from
 * vkGetDeviceProcAddr; a pass-through device gets the driver's directly
 * and costs nothing.  This file is glue only; the memory logic is in
 * shadow.c, direct.c and devlocal.c.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "track/track_priv.h"
#include "vulkan/layer.h"

#define CM_EXPORT __attribute__((visibility("default")))

/* --- allocation ----------------------------------------------------------
 */

/* The application's allocator when it gave one, as the spec asks of
 * layers for their own objects; malloc otherwise.  Allocations are
 * aligned to 16 bytes, enough for every structure here. */
void *
cm_alloc(const VkAllocationCallbacks *a, size_t size,
         VkSystemAllocationScope scope)
{
   if (a && a->pfnAllocation)
      return a->pfnAllocation(a->pUserData, size, 16, scope);
   return malloc(size);
}

void *
cm_realloc(const VkAllocationCallbacks *a, void *p, size_t size,
           VkSystemAllocationScope scope)
{
   if (a && a->pfnReallocation)
      return a->pfnReallocation(a->pUserData, p, size, 16, scope);
   return realloc(p, size);
}

void
cm_free(const VkAllocationCallbacks *a, void *p)
{
   if (!p)
      return;
   if (a && a->pfnFree)
      a->pfnFree(a->pUserData, p);
   else
      free(p);
}

void
cm_log(const char *fmt, ...)
{
   char msg[512];
   va_list ap;

   va_start(ap, fmt);
   vsnprintf(msg, sizeof(msg), fmt, ap);
   va_end(ap);
   fprintf(stderr, "cohmap: %s\n", msg);
}

/* --- records keyed on dispatch pointers ----------------------------------
 */

#define CM_MAX_OBJECTS 64

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cm_instance *instances[CM_MAX_OBJECTS];
static struct cm_device *devices[CM_MAX_OBJECTS];

static bool
registry_add(void **table, void *obj)
{
   bool ok = false;
   pthread_mutex_lock(&registry_lock);
   for (unsigned i = 0; i < CM_MAX_OBJECTS && !ok; i++) {
      if (!table[i]) {
         table[i] = obj;
         ok = true;
      }
   }
   pthread_mutex_unlock(&registry_lock);
   return ok;
}

static void
registry_remove(void **table, void *obj)
{
   pthread_mutex_lock(&registry_lock);
   for (unsigned i = 0; i < CM_MAX_OBJECTS; i++) {
      if (table[i] == obj)
         table[i] = NULL;
   }
   pthread_mutex_unlock(&registry_lock);
}

static struct cm_instance *
instance_from_key(void *key)
{
   struct cm_instance *found = NULL;
   pthread_mutex_lock(&registry_lock);
   for (unsigned i = 0; i < CM_MAX_OBJECTS && !found; i++) {
      if (instances[i] && instances[i]->key == key)
         found = instances[i];
   }
   pthread_mutex_unlock(&registry_lock);
   return found;
}

struct cm_device *
cm_device_from_key(void *key)
{
   struct cm_device *found = NULL;
   pthread_mutex_lock(&registry_lock);
   for (unsigned i = 0; i < CM_MAX_OBJECTS && !found; i++) {
      if (devices[i] && devices[i]->key == key)
         found = devices[i];
   }
   pthread_mutex_unlock(&registry_lock);
   return found;
}

/* --- knobs ----------------------------------------------------------------
 */

static const struct {
   const char *name;
   enum cm_mode mode;
   const char *desc;
} mode_table[] = {
   {"auto", CM_MODE_AUTO,
    "direct for host-visible types that are not coherent, device-local "
    "for device-local types of a heap without host-visible ones, "
    "pass-through otherwise"},
   {"off", CM_MODE_OFF, "pass-through"},
   {"shadow", CM_MODE_SHADOW,
    "mapped memory is a tracked copy, synchronized at submit and at "
    "observed completion"},
   {"direct", CM_MODE_DIRECT,
    "non-coherent host-visible types made coherent: the driver's pointer, "
    "the written bytes flushed at submit, GPU-writable ranges invalidated "
    "at observed completion"},
   {"device-local", CM_MODE_DEVICE_LOCAL,
    "device-local types offered once more, after the driver's, as "
    "host-visible and coherent: tracked memory, copied through staging "
    "at submit and at observed completion"},
};

static void
print_mode_help(void)
{
   fprintf(stderr, "cohmap: COHMAP_MODE (the Vulkan layer) takes one of:\n");
   for (size_t i = 0; i < sizeof(mode_table) / sizeof(mode_table[0]); i++)
      fprintf(stderr, "cohmap:   %-13s %s\n", mode_table[i].name,
              mode_table[i].desc);
}

/* COHMAP_MODE, read at each vkCreateInstance.  A bad value must not stop
 * the application: the layer says so and passes everything through. */
static enum cm_mode
read_mode(void)
{
   const char *s = getenv("COHMAP_MODE");
   if (!s || !*s)
      return CM_MODE_AUTO;
   if (!strcasecmp(s, "help")) {
      print_mode_help();
      return CM_MODE_AUTO;
   }
   for (size_t i = 0; i < sizeof(mode_table) / sizeof(mode_table[0]); i++) {
      if (!strcasecmp(s, mode_table[i].name))
         return mode_table[i].mode;
   }
   cm_log("error: COHMAP_MODE: unknown mode '%.40s' (auto, off, shadow, "
          "direct, device-local; COHMAP_MODE=help describes them); the "
          "layer passes everything through",
          s);
   return CM_MODE_OFF;
}

const char *
cm_mode_name(enum cm_mode mode)
{
   for (size_t i = 0; i < sizeof(mode_table) / sizeof(mode_table[0]); i++) {
      if (mode_table[i].mode == mode)
         return mode_table[i].name;
   }
   return "?";
}

/* COHMAP_VK_PRETEND: test-only, see enum cm_pretend. */
static uint32_t
read_pretend(void)
{
   const char *s = getenv("COHMAP_VK_PRETEND");
   if (!s || !*s || !strcasecmp(s, "none"))
      return CM_PRETEND_NOTHING;
   if (!strcasecmp(s, "noncoherent"))
      return CM_PRETEND_NONCOHERENT;
   if (!strcasecmp(s, "device-local"))
      return CM_PRETEND_DEVICE_LOCAL;
   cm_log("error: COHMAP_VK_PRETEND: unknown value '%.40s' (none, "
          "noncoherent, device-local); ignored",
          s);
   return CM_PRETEND_NOTHING;
}

/* --- instance -------------------------------------------------------------
 */

static VkLayerInstanceCreateInfo *
find_instance_link(const VkInstanceCreateInfo *info)
{
   for (const VkBaseInStructure *s = info->pNext; s; s = s->pNext) {
      VkLayerInstanceCreateInfo *l = (VkLayerInstanceCreateInfo *)s;
      if (s->sType == VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO &&
          l->function == VK_LAYER_LINK_INFO)
         return l;
   }
   return NULL;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_CreateInstance(const VkInstanceCreateInfo *info,
                  const VkAllocationCallbacks *alloc, VkInstance *out)
{
   VkLayerInstanceCreateInfo *link = find_instance_link(info);
   if (!link || !link->u.pLayerInfo)
      return VK_ERROR_INITIALIZATION_FAILED;

   PFN_vkGetInstanceProcAddr gipa =
      link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
   PFN_vkCreateInstance create =
      (PFN_vkCreateInstance)gipa(VK_NULL_HANDLE, "vkCreateInstance");
   if (!create)
      return VK_ERROR_INITIALIZATION_FAILED;

   struct cm_instance *inst =
      cm_alloc(alloc, sizeof(*inst), VK_SYSTEM_ALLOCATION_SCOPE_INSTANCE);
   if (!inst)
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   memset(inst, 0, sizeof(*inst));
   if (alloc)
      inst->alloc = *alloc;

   /* The layers below read the link info after us. */
   link->u.pLayerInfo = link->u.pLayerInfo->pNext;
   VkResult res = create(info, alloc, out);
   if (res != VK_SUCCESS) {
      cm_free(alloc, inst);
      return res;
   }

   inst->instance = *out;
   inst->key = cm_key(*out);
   inst->mode = read_mode();
   inst->pretend = read_pretend();
   struct cm_instance_dispatch *n = &inst->next;
   n->GetInstanceProcAddr = gipa;
#define LOAD(name) n->name = (PFN_vk##name)gipa(*out, "vk" #name)
   LOAD(DestroyInstance);
   LOAD(EnumerateDeviceExtensionProperties);
   LOAD(GetPhysicalDeviceMemoryProperties);
   LOAD(GetPhysicalDeviceMemoryProperties2);
   LOAD(GetPhysicalDeviceMemoryProperties2KHR);
   LOAD(GetPhysicalDeviceProperties);
   LOAD(GetPhysicalDeviceQueueFamilyProperties);
#undef LOAD

   if (!registry_add((void **)instances, inst)) {
      cm_log("error: more than %d Vulkan instances at once", CM_MAX_OBJECTS);
      n->DestroyInstance(*out, alloc);
      cm_free(alloc, inst);
      return VK_ERROR_INITIALIZATION_FAILED;
   }
   return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL
cm_DestroyInstance(VkInstance instance, const VkAllocationCallbacks *alloc)
{
   if (!instance)
      return;
   struct cm_instance *inst = instance_from_key(cm_key(instance));
   if (!inst)
      return;
   registry_remove((void **)instances, inst);
   inst->next.DestroyInstance(instance, alloc);
   cm_free(alloc, inst);
}

/* The layer adds no extension, instance or device. */
static VKAPI_ATTR VkResult VKAPI_CALL
cm_EnumerateInstanceExtensionProperties(const char *layer, uint32_t *count,
                                        VkExtensionProperties *props)
{
   if (!layer || strcmp(layer, CM_LAYER_NAME))
      return VK_ERROR_LAYER_NOT_PRESENT;
   *count = 0;
   return VK_SUCCESS;
}

static enum cm_mode device_mode(struct cm_instance *inst,
                                VkPhysicalDevice physical,
                                struct cm_types *types);

/* The driver's device extensions less those the layer cannot honour on a
 * device it works on (cm_extension_hidden(): VK_EXT_map_memory_placed),
 * with the usual two-call contract: VK_INCOMPLETE when props is too
 * short. */
static VkResult
hide_extensions(struct cm_instance *inst, VkPhysicalDevice physical,
                uint32_t *count, VkExtensionProperties *props)
{
   PFN_vkEnumerateDeviceExtensionProperties next =
      inst->next.EnumerateDeviceExtensionProperties;
   VkExtensionProperties *all = NULL;
   uint32_t n = 0;
   VkResult res;
   /* The list may grow between the two calls (it does not on any driver
    * known, but the contract allows it): ask again then. */
   do {
      res = next(physical, NULL, &n, NULL);
      if (res != VK_SUCCESS)
         break;
      cm_free(&inst->alloc, all);
      all = n ? cm_alloc(&inst->alloc, n * sizeof(*all),
                         VK_SYSTEM_ALLOCATION_SCOPE_COMMAND)
              : NULL;
      if (n && !all) {
         res = VK_ERROR_OUT_OF_HOST_MEMORY;
         break;
      }
      res = next(physical, NULL, &n, all);
   } while (res == VK_INCOMPLETE);
   if (res != VK_SUCCESS) {
      cm_free(&inst->alloc, all);
      return res;
   }

   uint32_t kept = 0;
   for (uint32_t i = 0; i < n; i++) {
      if (!cm_extension_hidden(all[i].extensionName))
         all[kept++] = all[i];
   }
   if (!props) {
      *count = kept;
   } else {
      if (*count > kept)
         *count = kept;
      memcpy(props, all, *count * sizeof(*props));
      if (*count < kept)
         res = VK_INCOMPLETE;
   }
   cm_free(&inst->alloc, all);
   return res;
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_EnumerateDeviceExtensionProperties(VkPhysicalDevice physical,
                                      const char *layer, uint32_t *count,
                                      VkExtensionProperties *props)
{
   if (layer && !strcmp(layer, CM_LAYER_NAME)) {
      *count = 0;
      return VK_SUCCESS;
   }
   struct cm_instance *inst = instance_from_key(cm_key(physical));
   if (!inst)
      return VK_ERROR_INITIALIZATION_FAILED;
   struct cm_types types;
   if (layer || device_mode(inst, physical, &types) == CM_MODE_OFF)
      return inst->next.EnumerateDeviceExtensionProperties(physical, layer,
                                                           count, props);
   return hide_extensions(inst, physical, count, props);
}

/* The mode of a device on this physical device, never auto, and for
 * direct and device-local what each memory type gets: asked by the
 * memory-properties queries and by vkCreateDevice, which must agree. */
static enum cm_mode
device_mode(struct cm_instance *inst, VkPhysicalDevice physical,
            struct cm_types *types)
{
   if (inst->mode == CM_MODE_SHADOW || inst->mode == CM_MODE_OFF)
      return inst->mode;
   VkPhysicalDeviceMemoryProperties p;
   inst->next.GetPhysicalDeviceMemoryProperties(physical, &p);
   return cm_modes_plan(inst->mode, inst->pretend, &p, types);
}

/* What the application sees of the memory types. */
static void
fix_memory_properties(struct cm_instance *inst, VkPhysicalDevice physical,
                      VkPhysicalDeviceMemoryProperties *p)
{
   struct cm_types types;
   enum cm_mode mode = device_mode(inst, physical, &types);
   if (mode == CM_MODE_SHADOW)
      cm_shadow_fix_memory_properties(inst, p);
   else if (mode != CM_MODE_OFF)
      cm_modes_fix_memory_properties(&types, p);
}

static VKAPI_ATTR void VKAPI_CALL
cm_GetPhysicalDeviceMemoryProperties(VkPhysicalDevice physical,
                                     VkPhysicalDeviceMemoryProperties *p)
{
   struct cm_instance *inst = instance_from_key(cm_key(physical));
   if (!inst)
      return;
   inst->next.GetPhysicalDeviceMemoryProperties(physical, p);
   fix_memory_properties(inst, physical, p);
}

static void
memory_properties2(VkPhysicalDevice physical,
                   VkPhysicalDeviceMemoryProperties2 *p, bool khr)
{
   struct cm_instance *inst = instance_from_key(cm_key(physical));
   if (!inst)
      return;
   if (khr)
      inst->next.GetPhysicalDeviceMemoryProperties2KHR(physical, p);
   else
      inst->next.GetPhysicalDeviceMemoryProperties2(physical, p);
   fix_memory_properties(inst, physical, &p->memoryProperties);
}

static VKAPI_ATTR void VKAPI_CALL
cm_GetPhysicalDeviceMemoryProperties2(VkPhysicalDevice physical,
                                      VkPhysicalDeviceMemoryProperties2 *p)
{
   memory_properties2(physical, p, false);
}

static VKAPI_ATTR void VKAPI_CALL
cm_GetPhysicalDeviceMemoryProperties2KHR(VkPhysicalDevice physical,
                                         VkPhysicalDeviceMemoryProperties2 *p)
{
   memory_properties2(physical, p, true);
}

/* --- device ---------------------------------------------------------------
 */

static VkLayerDeviceCreateInfo *
find_device_info(const VkDeviceCreateInfo *info, VkLayerFunction function)
{
   for (const VkBaseInStructure *s = info->pNext; s; s = s->pNext) {
      VkLayerDeviceCreateInfo *l = (VkLayerDeviceCreateInfo *)s;
      if (s->sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO &&
          l->function == function)
         return l;
   }
   return NULL;
}

static void
device_finish(struct cm_device *dev)
{
   if (dev->mode == CM_MODE_DIRECT || dev->mode == CM_MODE_DEVICE_LOCAL)
      cm_modes_device_finish(dev);
   else {
      cm_shadow_device_finish(dev);
      cm_verify_finish(dev);
   }
}

static VKAPI_ATTR VkResult VKAPI_CALL
cm_CreateDevice(VkPhysicalDevice physical, const VkDeviceCreateInfo *info,
                const VkAllocationCallbacks *alloc, VkDevice *out)
{
   struct cm_instance *inst = instance_from_key(cm_key(physical));
   VkLayerDeviceCreateInfo *link = find_device_info(info, VK_LAYER_LINK_INFO);
   VkLayerDeviceCreateInfo *loader_data =
      find_device_info(info, VK_LOADER_DATA_CALLBACK);
   if (!inst || !link || !link->u.pLayerInfo)
      return VK_ERROR_INITIALIZATION_FAILED;

   PFN_vkGetInstanceProcAddr gipa =
      link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
   PFN_vkGetDeviceProcAddr gdpa =
      link->u.pLayerInfo->pfnNextGetDeviceProcAddr;
   PFN_vkCreateDevice create =
      (PFN_vkCreateDevice)gipa(inst->instance, "vkCreateDevice");
   if (!create)
      return VK_ERROR_INITIALIZATION_FAILED;

   const VkAllocationCallbacks *a = alloc ? alloc : &inst->alloc;
   struct cm_device *dev =
      cm_alloc(a, sizeof(*dev), VK_SYSTEM_ALLOCATION_SCOPE_DEVICE);
   if (!dev)
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   memset(dev, 0, sizeof(*dev));
   if (a->pfnAllocation)
      dev->alloc = *a;

   link->u.pLayerInfo = link->u.pLayerInfo->pNext;
   VkResult res = create(physical, info, alloc, out);
   if (res != VK_SUCCESS) {
      cm_free(a, dev);
      return res;
   }

   dev->device = *out;
   dev->key = cm_key(*out);
   dev->physical = physical;
   dev->instance = inst;
   if (loader_data)
      dev->set_loader_data = loader_data->u.pfnSetDeviceLoaderData;
   pthread_mutex_init(&dev->lock, NULL);
#define LOAD(name) dev->next.name = (PFN_vk##name)gdpa(*out, "vk" #name);
   CM_DEVICE_FUNCS(LOAD)
#undef LOAD
   /* Core 1.1/1.2 functions may be reached through their extension
    * names only (or the other way round): fill each from its alias. */
   if (!dev->next.BindBufferMemory2)
      dev->next.BindBufferMemory2 = dev->next.BindBufferMemory2KHR;
   if (!dev->next.BindImageMemory2)
      dev->next.BindImageMemory2 = dev->next.BindImageMemory2KHR;
   if (!dev->next.WaitSemaphores)
      dev->next.WaitSemaphores = dev->next.WaitSemaphoresKHR;
   if (!dev->next.GetSemaphoreCounterValue)
      dev->next.GetSemaphoreCounterValue =
         dev->next.GetSemaphoreCounterValueKHR;
   if (!dev->next.QueueSubmit2)
      dev->next.QueueSubmit2 = dev->next.QueueSubmit2KHR;
   if (!dev->next.SignalSemaphore)
      dev->next.SignalSemaphore = dev->next.SignalSemaphoreKHR;
   if (!dev->next.GetBufferMemoryRequirements2)
      dev->next.GetBufferMemoryRequirements2 =
         dev->next.GetBufferMemoryRequirements2KHR;
   if (!dev->next.GetImageMemoryRequirements2)
      dev->next.GetImageMemoryRequirements2 =
         dev->next.GetImageMemoryRequirements2KHR;
   if (!dev->next.GetDeviceBufferMemoryRequirements)
      dev->next.GetDeviceBufferMemoryRequirements =
         dev->next.GetDeviceBufferMemoryRequirementsKHR;
   if (!dev->next.GetDeviceImageMemoryRequirements)
      dev->next.GetDeviceImageMemoryRequirements =
         dev->next.GetDeviceImageMemoryRequirementsKHR;

   dev->mode = device_mode(inst, physical, &dev->types);
   if (dev->mode != CM_MODE_OFF) {
      res = dev->mode == CM_MODE_SHADOW ? cm_shadow_device_init(dev)
                                        : cm_modes_device_init(dev, info);
      if (res == VK_SUCCESS && dev->mode == CM_MODE_SHADOW)
         cm_verify_init(dev);
      if (res != VK_SUCCESS) {
         /* Without its tracking context or its queues the layer cannot
          * work: tell and step aside rather than fail the application
          * (whose memory types then say more than the driver gives). */
         cm_log("warning: %s mode unavailable (%s); passing this device "
                "through",
                cm_mode_name(dev->mode), cohmap_error_message());
         dev->mode = CM_MODE_OFF;
      }
   }

   if (!registry_add((void **)devices, dev)) {
      cm_log("error: more than %d Vulkan devices at once", CM_MAX_OBJECTS);
      device_finish(dev);
      dev->next.DestroyDevice(*out, alloc);
      pthread_mutex_destroy(&dev->lock);
      cm_free(a, dev);
      return VK_ERROR_INITIALIZATION_FAILED;
   }
   return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL
cm_DestroyDevice(VkDevice device, const VkAllocationCallbacks *alloc)
{
   if (!device)
      return;
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   if (!dev)
      return;
   registry_remove((void **)devices, dev);
   device_finish(dev);
   PFN_vkDestroyDevice destroy = dev->next.DestroyDevice;
   pthread_mutex_destroy(&dev->lock);
   cm_free(alloc ? alloc : &dev->instance->alloc, dev);
   destroy(device, alloc);
}

/* --- proc addresses -------------------------------------------------------
 */

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL
cm_GetDeviceProcAddr(VkDevice device, const char *name);

static PFN_vkVoidFunction
glue_proc(const char *name)
{
#define ENTRY(fn)                                                            \
   if (!strcmp(name, "vk" #fn))                                              \
      return (PFN_vkVoidFunction)cm_##fn;
   ENTRY(GetDeviceProcAddr)
   ENTRY(CreateDevice)
   ENTRY(DestroyDevice)
   ENTRY(EnumerateDeviceExtensionProperties)
   ENTRY(GetPhysicalDeviceMemoryProperties)
   ENTRY(GetPhysicalDeviceMemoryProperties2)
   ENTRY(GetPhysicalDeviceMemoryProperties2KHR)
#undef ENTRY
   return NULL;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL
cm_GetDeviceProcAddr(VkDevice device, const char *name)
{
   if (!device || !name)
      return NULL;
   struct cm_device *dev = cm_device_from_key(cm_key(device));
   if (!dev)
      return NULL;
   if (!strcmp(name, "vkGetDeviceProcAddr"))
      return (PFN_vkVoidFunction)cm_GetDeviceProcAddr;
   if (!strcmp(name, "vkDestroyDevice"))
      return (PFN_vkVoidFunction)cm_DestroyDevice;

   PFN_vkVoidFunction below = dev->next.GetDeviceProcAddr(device, name);
   /* Intercept only what the driver has (a NULL stays NULL: the
    * extension is not enabled), and only on devices the layer works on. */
   if (!below || dev->mode == CM_MODE_OFF)
      return below;
   PFN_vkVoidFunction ours = cm_device_proc(dev, name);
   return ours ? ours : below;
}

PFN_vkVoidFunction
cm_device_proc(const struct cm_device *dev, const char *name)
{
   /* Direct and device-local devices share shadow mode's tracking of
    * buffers, images and binds. */
   PFN_vkVoidFunction ours =
      dev->mode == CM_MODE_SHADOW ? NULL : cm_modes_proc(name);
   if (!ours)
      ours = cm_shadow_proc(name);
   if (!ours)
      ours = cm_map2_proc(name);
   return ours;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL
cm_GetInstanceProcAddr(VkInstance instance, const char *name)
{
   if (!name)
      return NULL;
   if (!strcmp(name, "vkGetInstanceProcAddr"))
      return (PFN_vkVoidFunction)cm_GetInstanceProcAddr;
   if (!strcmp(name, "vkCreateInstance"))
      return (PFN_vkVoidFunction)cm_CreateInstance;
   if (!strcmp(name, "vkEnumerateInstanceExtensionProperties"))
      return (PFN_vkVoidFunction)cm_EnumerateInstanceExtensionProperties;
   if (!instance)
      return NULL;
   if (!strcmp(name, "vkDestroyInstance"))
      return (PFN_vkVoidFunction)cm_DestroyInstance;

   struct cm_instance *inst = instance_from_key(cm_key(instance));
   if (!inst)
      return NULL;
   PFN_vkVoidFunction below = inst->next.GetInstanceProcAddr(instance, name);
   if (!below)
      return NULL;
   PFN_vkVoidFunction ours = glue_proc(name);
   if (!ours)
      ours = cm_shadow_proc(name);
   if (!ours)
      ours = cm_map2_proc(name);
   return ours ? ours : below;
}

CM_EXPORT VKAPI_ATTR VkResult VKAPI_CALL
vkNegotiateLoaderLayerInterfaceVersion(VkNegotiateLayerInterface *v)
{
   if (!v || v->sType != LAYER_NEGOTIATE_INTERFACE_STRUCT)
      return VK_ERROR_INITIALIZATION_FAILED;
   /* Version 2 is all this layer needs: Get*ProcAddr through the
    * negotiation struct, no physical-device entry points of its own. */
   if (v->loaderLayerInterfaceVersion > 2)
      v->loaderLayerInterfaceVersion = 2;
   if (v->loaderLayerInterfaceVersion < 2)
      return VK_ERROR_INITIALIZATION_FAILED;
   v->pfnGetInstanceProcAddr = cm_GetInstanceProcAddr;
   v->pfnGetDeviceProcAddr = cm_GetDeviceProcAddr;
   v->pfnGetPhysicalDeviceProcAddr = NULL;
   return VK_SUCCESS;
}
