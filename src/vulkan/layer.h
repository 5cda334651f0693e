/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * VK_LAYER_COHMAP_coherent_memory: private structures shared by the loader
 * glue (layer.c) and the memory logic (shadow.c; direct.c and devlocal.c for
 * the direct and device-local modes).  docs/vulkan.md is the user-facing
 * description; the theory is in the DOC blocks of those files.
 */

#ifndef COHMAP_VULKAN_LAYER_H
#define COHMAP_VULKAN_LAYER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <vulkan/vk_layer.h>
#include <vulkan/vulkan.h>

#include "cohmap/cohmap.h"
#include "vulkan/map.h"

#define CM_LAYER_NAME "VK_LAYER_COHMAP_coherent_memory"

/* COHMAP_MODE. */
enum cm_mode {
   CM_MODE_AUTO,
   CM_MODE_OFF,
   CM_MODE_SHADOW,
   CM_MODE_DIRECT,
   CM_MODE_DEVICE_LOCAL,
};

/* COHMAP_VK_PRETEND (tests): what the layer believes about the driver's
 * memory types, so that the paths for drivers lavapipe is not can be
 * exercised on lavapipe. */
enum cm_pretend {
   CM_PRETEND_NOTHING = 0,
   /* Every memory type lacks HOST_COHERENT: the layer flushes and
    * invalidates the driver's mappings itself. */
   CM_PRETEND_NONCOHERENT = 1u << 0,
   /* Every memory type is DEVICE_LOCAL only (not host-visible): the
    * device-local mode emulates host-visible memory on it, copying
    * through staging buffers of the driver's real host-visible type. */
   CM_PRETEND_DEVICE_LOCAL = 1u << 1,
};

/* How the layer makes one memory type coherent (direct and device-local
 * devices decide per type; a shadow device shadows every host-visible
 * type). */
enum cm_how {
   CM_HOW_PASS = 0, /* left to the driver */
   CM_HOW_DIRECT,   /* driver's pointer, flushed/invalidated by us */
   CM_HOW_DEVLOCAL, /* tracked memory, copied through staging */
};

/* direct and device-local: the memory types the application sees, and
 * what the layer does with each (cm_modes_plan()).  The driver's types
 * come first, at their own indices, with the flags the layer believes
 * (COHMAP_VK_PRETEND); a host-visible type that is not coherent gains
 * HOST_COHERENT in place (direct).  Each device-local type the layer
 * emulates host-visible memory on comes once more after them, as
 * DEVICE_LOCAL | HOST_VISIBLE | HOST_COHERENT on the same heap; the
 * original stays, untouched, for memory the CPU never maps.
 *
 * Both keep the order the specification requires of memoryTypes: a type
 * whose flags are a strict subset of another's comes first, so that an
 * application taking the first type with the flags it needs gets the
 * least specialised one.  Changing a device-local type in place would put
 * the emulated DEVICE_LOCAL | HOST_VISIBLE | HOST_COHERENT before the
 * driver's HOST_VISIBLE | HOST_COHERENT system memory on the usual
 * discrete layout, and every staging buffer would land in the emulation.
 * A change that would break the order anyway is made the other way
 * (direct appended instead of in place), or not at all: that type then
 * goes without (a type with more flags is there to choose). */
struct cm_types {
   uint32_t count;      /* presented */
   uint32_t real_count; /* the driver's; count - real_count are appended */
   enum cm_how how[VK_MAX_MEMORY_TYPES]; /* by presented index */
   uint8_t real[VK_MAX_MEMORY_TYPES];    /* the driver's index */
   VkMemoryPropertyFlags flags[VK_MAX_MEMORY_TYPES]; /* presented */
};

struct cm_instance_dispatch {
   PFN_vkGetInstanceProcAddr GetInstanceProcAddr;
   PFN_vkDestroyInstance DestroyInstance;
   PFN_vkEnumerateDeviceExtensionProperties
      EnumerateDeviceExtensionProperties;
   PFN_vkGetPhysicalDeviceMemoryProperties GetPhysicalDeviceMemoryProperties;
   PFN_vkGetPhysicalDeviceMemoryProperties2
      GetPhysicalDeviceMemoryProperties2;
   PFN_vkGetPhysicalDeviceMemoryProperties2KHR
      GetPhysicalDeviceMemoryProperties2KHR;
   PFN_vkGetPhysicalDeviceProperties GetPhysicalDeviceProperties;
   PFN_vkGetPhysicalDeviceQueueFamilyProperties
      GetPhysicalDeviceQueueFamilyProperties;
};

struct cm_instance {
   void *key; /* the loader's dispatch pointer, shared by its physdevs */
   VkInstance instance;
   VkAllocationCallbacks alloc;
   enum cm_mode mode;
   uint32_t pretend; /* enum cm_pretend */
   bool stats;       /* COHMAP_DEBUG has "stats" */
   struct cm_instance_dispatch next;
};

/* The device functions the layer intercepts, and what it calls below. */
#define CM_DEVICE_FUNCS(X)                                                   \
   X(GetDeviceProcAddr)                                                      \
   X(DestroyDevice)                                                          \
   X(AllocateMemory)                                                         \
   X(FreeMemory)                                                             \
   X(MapMemory)                                                              \
   X(UnmapMemory)                                                            \
   X(FlushMappedMemoryRanges)                                                \
   X(InvalidateMappedMemoryRanges)                                           \
   X(CreateBuffer)                                                           \
   X(DestroyBuffer)                                                          \
   X(CreateImage)                                                            \
   X(DestroyImage)                                                           \
   X(GetImageMemoryRequirements)                                             \
   X(BindBufferMemory)                                                       \
   X(BindBufferMemory2)                                                      \
   X(BindBufferMemory2KHR)                                                   \
   X(BindImageMemory)                                                        \
   X(BindImageMemory2)                                                       \
   X(BindImageMemory2KHR)                                                    \
   X(QueueSubmit)                                                            \
   X(QueueSubmit2)                                                           \
   X(QueueSubmit2KHR)                                                        \
   X(QueueBindSparse)                                                        \
   X(WaitForFences)                                                          \
   X(GetFenceStatus)                                                         \
   X(QueueWaitIdle)                                                          \
   X(DeviceWaitIdle)                                                         \
   X(WaitSemaphores)                                                         \
   X(WaitSemaphoresKHR)                                                      \
   X(GetSemaphoreCounterValue)                                               \
   X(GetSemaphoreCounterValueKHR)                                            \
   X(GetEventStatus)                                                         \
   X(SetEvent)                                                               \
   X(SignalSemaphore)                                                        \
   X(SignalSemaphoreKHR)                                                     \
   X(GetDeviceQueue)                                                         \
   X(GetBufferMemoryRequirements)                                            \
   X(GetBufferMemoryRequirements2)                                           \
   X(GetBufferMemoryRequirements2KHR)                                        \
   X(GetImageMemoryRequirements2)                                            \
   X(GetImageMemoryRequirements2KHR)                                         \
   X(GetDeviceBufferMemoryRequirements)                                      \
   X(GetDeviceBufferMemoryRequirementsKHR)                                   \
   X(GetDeviceImageMemoryRequirements)                                       \
   X(GetDeviceImageMemoryRequirementsKHR)                                    \
   X(CreateCommandPool)                                                      \
   X(DestroyCommandPool)                                                     \
   X(AllocateCommandBuffers)                                                 \
   X(FreeCommandBuffers)                                                     \
   X(BeginCommandBuffer)                                                     \
   X(EndCommandBuffer)                                                       \
   X(ResetCommandBuffer)                                                     \
   X(CmdCopyBuffer)                                                          \
   X(CmdPipelineBarrier)                                                     \
   X(CreateFence)                                                            \
   X(DestroyFence)                                                           \
   X(ResetFences)                                                            \
   X(QueuePresentKHR)

struct cm_device_dispatch {
#define CM_DECLARE(name) PFN_vk##name name;
   CM_DEVICE_FUNCS(CM_DECLARE)
#undef CM_DECLARE
};

/* Figures for COHMAP_DEBUG=stats. */
struct cm_memory_stats {
   uint64_t maps;          /* vkMapMemory calls shadowed */
   uint64_t flushes;       /* submissions that uploaded something */
   uint64_t bytes_flushed; /* CPU → driver memory */
   uint64_t bytes_merged;  /* GPU bytes copied into the shadow */
   uint64_t bytes_conflicted;
   uint64_t bytes_atom_flushed;     /* vkFlushMappedMemoryRanges, ours */
   uint64_t bytes_atom_invalidated; /* vkInvalidateMappedMemoryRanges */
};

struct cm_range64 {
   VkDeviceSize offset, size;
};

/* A VkDeviceMemory the layer knows about (host-visible types only). */
struct cm_memory {
   VkDeviceMemory handle;
   VkDeviceSize size;
   uint32_t type;
   /* The driver's memory type lacks HOST_COHERENT (or we pretend so). */
   bool noncoherent;
   /* Imported host memory and the like: the application has another
    * pointer to it, so a shadow would not see its writes. */
   bool passthrough;

   /* Ranges of memory bound to buffers or images the GPU may write
    * (docs/vulkan.md, "What the GPU can write"), coalesced. */
   struct cm_range64 *writable;
   uint32_t writable_count, writable_cap;
   /* Out of memory recording them: merge the whole memory. */
   bool writable_all;

   /* While mapped: the driver's mapping of [map_lo, map_lo + map_len),
    * which covers the application's range from a page boundary, and the
    * tracked shadow of the same bytes. */
   struct cohmap_region *region;
   uint8_t *driver_ptr;
   VkDeviceSize map_lo, map_len;
   uint32_t mapped_index; /* in cm_device.mapped */

   struct cm_memory_stats stats;
   enum cohmap_method last_method;

   /* direct and device-local devices (direct.c, devlocal.c). */
   enum cm_how how;
   /* direct: the mapping could not be tracked (cohmap_region_wrap
    * refused it): every submission flushes all of it. */
   bool untracked;
   /* device-local: a buffer over the whole memory, the source and
    * destination of the staging copies; VK_NULL_HANDLE if none could be
    * bound (the memory then cannot be mapped). */
   VkBuffer whole;

   /* shadow, COHMAP_DEBUG=verify: its suspects (verify.c), or NULL. */
   struct cm_verify_memory *verify;

   /* Imported host memory of a type the driver does not keep coherent
    * (import.c): the layer's own mapping of all of it, its index in
    * cm_device.imports, whether the application has it mapped. */
   uint8_t *import_ptr;
   uint32_t import_index;
   bool import_app_mapped;
};

/* What COHMAP_DEBUG=stats prints for a freed memory. */
struct cm_memory_record {
   VkDeviceSize size;
   uint32_t type;
   struct cm_memory_stats stats;
   enum cohmap_method method;
};

#define CM_STATS_LINES 16

struct cm_device {
   void *key;
   VkDevice device;
   VkPhysicalDevice physical;
   struct cm_instance *instance;
   VkAllocationCallbacks alloc;
   struct cm_device_dispatch next;
   /* The loader's callback for dispatchable objects the layer creates
    * below itself (device-local mode's command buffers and queues). */
   PFN_vkSetDeviceLoaderData set_loader_data;

   /* The mode this device runs in: shadow, direct, device-local or off
    * (pass-through); never auto. */
   enum cm_mode mode;
   /* direct and device-local: the types the application sees. */
   struct cm_types types;
   /* The driver's real memory types (staging buffers come from them). */
   VkPhysicalDeviceMemoryProperties real_props;
   /* device-local: queues, staging, copies (devlocal.c). */
   struct cm_devlocal *devlocal;
   VkPhysicalDeviceMemoryProperties props; /* the driver's, as believed */
   VkDeviceSize atom;                      /* nonCoherentAtomSize */
   struct cohmap_context *ctx;
   bool stats;

   /* Guards everything below; held across a whole flush or merge so that
    * "collect + upload" and "merge" of one memory never interleave (the
    * snapshot must stay what the driver memory was last given or gave). */
   pthread_mutex_t lock;
   struct cm_map memories;         /* VkDeviceMemory → struct cm_memory * */
   struct cm_map writable_buffers; /* VkBuffer → size */
   struct cm_map writable_images;  /* VkImage → 1 */
   struct cm_memory **mapped;
   uint32_t mapped_count, mapped_cap;
   /* Imported host memory flushed and invalidated whole (import.c). */
   struct cm_memory **imports;
   uint32_t import_count, import_cap;
   /* Submissions so far, and how many of them are known complete because
    * the whole device was seen idle: no merge is needed while equal. */
   uint64_t submits, idle_submits;

   /* Scratch for vkFlush/InvalidateMappedMemoryRanges calls. */
   VkMappedMemoryRange *scratch;
   uint32_t scratch_cap;

   /* COHMAP_DEBUG=stats. */
   uint64_t stat_submits, stat_merges, stat_memories;
   struct cm_memory_stats total;
   struct cm_memory_record top[CM_STATS_LINES];
   uint32_t top_count;
   uint64_t other_count;
   struct cm_memory_stats other;

   /* device-local: the one warning that host signals do not upload. */
   bool devlocal_signal_warned;

   /* COHMAP_DEBUG=verify (shadow mode, verify.c), under lock. */
   bool verify, verify_oom;
   uint32_t verify_lines;
   uint64_t verify_checks, verify_mismatches, verify_bytes;
};

/* verify.c: COHMAP_DEBUG=verify for shadow devices.  cm_verify_init()
 * after cm_shadow_device_init(); cm_verify_uploads() at the end of every
 * upload, under dev->lock; cm_verify_drop() when a shadow goes;
 * cm_verify_finish() after cm_shadow_device_finish() (the stats line). */
void cm_verify_init(struct cm_device *dev);
void cm_verify_uploads(struct cm_device *dev, VkResult upload);
void cm_verify_drop(struct cm_device *dev, struct cm_memory *mem);
void cm_verify_finish(const struct cm_device *dev);

/* layer.c */
void *cm_alloc(const VkAllocationCallbacks *a, size_t size,
               VkSystemAllocationScope scope);
void *cm_realloc(const VkAllocationCallbacks *a, void *p, size_t size,
                 VkSystemAllocationScope scope);
void cm_free(const VkAllocationCallbacks *a, void *p);
struct cm_device *cm_device_from_key(void *key);
void cm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static inline void *
cm_key(const void *dispatchable)
{
   return *(void *const *)dispatchable;
}

/* "shadow", "direct", ...: the stats lines name the device's mode. */
const char *cm_mode_name(enum cm_mode mode);

/* Whether the layer keeps memory records (and what the GPU can write)
 * for this device. */
static inline bool
cm_tracks_memory(const struct cm_device *dev)
{
   return dev->mode != CM_MODE_OFF;
}

/* shadow.c: set-up and tear-down of a device's shadow state. */
VkResult cm_shadow_device_init(struct cm_device *dev);
void cm_shadow_device_finish(struct cm_device *dev);
/* Adds HOST_COHERENT to the host-visible types the layer makes coherent. */
void cm_shadow_fix_memory_properties(const struct cm_instance *inst,
                                     VkPhysicalDeviceMemoryProperties *p);

/* shadow.c: the layer's entry point called name, for a device in shadow
 * mode, or NULL if the layer does not intercept it. */
PFN_vkVoidFunction cm_shadow_proc(const char *name);

/* layer.c: the layer's entry point called name for dev's mode (not off),
 * or NULL if the layer does not intercept it. */
PFN_vkVoidFunction cm_device_proc(const struct cm_device *dev,
                                  const char *name);

/* map2.c: vkMapMemory2(KHR) and vkUnmapMemory2(KHR), or NULL. */
PFN_vkVoidFunction cm_map2_proc(const char *name);
/* map2.c: device extensions the layer hides on the devices it works on. */
bool cm_extension_hidden(const char *name);

/* Clips a collected range [off, off + *len) of mem's region to its mapping:
 * the region is rounded up to whole pages, and the bytes past the driver's
 * mapping are not the application's.  false when nothing is left (the
 * ranges are sorted: none after this one is either). */
static inline bool
cm_clip_to_map(const struct cm_memory *mem, size_t off, size_t *len)
{
   if (off >= mem->map_len)
      return false;
   if (*len > mem->map_len - off)
      *len = mem->map_len - off;
   return true;
}

/* shadow.c: pieces the other modes share (see the functions they wrap). */
/* Counts a submission the driver accepted (res), so that a host wait that
 * began later covers it. */
void cm_after_submit(struct cm_device *dev, VkResult res);
struct cm_memory *cm_find_memory(struct cm_device *dev,
                                 VkDeviceMemory handle);
bool cm_mapped_add(struct cm_device *dev, struct cm_memory *mem);
void cm_mapped_remove(struct cm_device *dev, struct cm_memory *mem);
bool cm_scratch_add(struct cm_device *dev, uint32_t *count,
                    struct cm_memory *mem, VkDeviceSize offset,
                    VkDeviceSize size);
uint64_t cm_scratch_bytes(const struct cm_device *dev, uint32_t first,
                          uint32_t count);
void cm_memory_free(struct cm_device *dev, struct cm_memory *mem,
                    const VkAllocationCallbacks *alloc);
bool cm_shared_memory(const VkMemoryAllocateInfo *info);
void cm_sparse_mark_writable(struct cm_device *dev, uint32_t count,
                             const VkBindSparseInfo *infos);

/* direct.c: the entry points of direct and device-local devices, which
 * share shadow.c's buffer, image and bind tracking. */
VkResult cm_modes_device_init(struct cm_device *dev,
                              const VkDeviceCreateInfo *info);
void cm_modes_device_finish(struct cm_device *dev);
PFN_vkVoidFunction cm_modes_proc(const char *name);
/* What a direct or device-local device does before a host signal
 * (vkSetEvent, vkSignalSemaphore; shadow.c): what says which, for the
 * one-time warning. */
VkResult cm_modes_before_host_signal(struct cm_device *dev,
                                     const char *what);
/* What a direct or device-local device does before a submission on queue
 * (upload: device-local memory too), with *lock, the queue lock to release
 * once the driver has the work (NULL: none; and none on failure). */
VkResult cm_modes_submit_begin(struct cm_device *dev, VkQueue queue,
                               bool upload, pthread_mutex_t **lock);
/* What a direct or device-local device does with the memory types of
 * real (the driver's properties, as the pretend knob says), and the
 * properties the application sees (struct cm_types). */
enum cm_mode cm_modes_plan(enum cm_mode mode, uint32_t pretend,
                           const VkPhysicalDeviceMemoryProperties *real,
                           struct cm_types *types);
void cm_modes_fix_memory_properties(const struct cm_types *types,
                                    VkPhysicalDeviceMemoryProperties *p);
/* A memoryTypeBits of the driver's, with the appended types whose driver
 * type it has. */
uint32_t cm_modes_type_bits(const struct cm_types *types, uint32_t bits);

/* import.c: imported host memory on a type the layer advertises as
 * coherent and the driver does not keep so.  _init after the record is in
 * dev->memories (not under dev->lock); the rest under dev->lock. */
void cm_import_init(struct cm_device *dev, struct cm_memory *mem,
                    const VkMemoryAllocateInfo *info);
void cm_import_finish(struct cm_device *dev, struct cm_memory *mem);
/* The application's vkMapMemory of a passthrough memory. */
VkResult cm_import_map(struct cm_device *dev, struct cm_memory *mem,
                       VkDeviceSize offset, VkDeviceSize size,
                       VkMemoryMapFlags flags, void **out);
/* true: vkUnmapMemory handled (the driver's mapping stays). */
bool cm_import_unmap(struct cm_device *dev, struct cm_memory *mem);
/* Before a submission; at an observed completion (flush, invalidate). */
VkResult cm_import_flush(struct cm_device *dev);
void cm_import_invalidate(struct cm_device *dev);

/* misuse.c: vkMapMemory the layer found invalid (already mapped, a range
 * outside the allocation) goes down as made, so that validation below
 * reports it; VK_ERROR_MEMORY_MAP_FAILED or the driver's error.
 * driver_mapped: the layer has the driver's memory mapped itself. */
VkResult cm_map_invalid(struct cm_device *dev, VkDeviceMemory memory,
                        VkDeviceSize offset, VkDeviceSize size,
                        VkMemoryMapFlags flags, void **out,
                        bool driver_mapped);
/* Whether an application's flush or invalidate range of mapped mem lies
 * outside the layer's mapping of it (invalid usage: passed down). */
bool cm_range_outside(const struct cm_memory *mem,
                      const VkMappedMemoryRange *r);

/* devlocal.c */
VkResult cm_devlocal_init(struct cm_device *dev,
                          const VkDeviceCreateInfo *info);
void cm_devlocal_finish(struct cm_device *dev);
/* The allocation of a memory of an emulated type without its
 * VkMemoryDedicatedAllocateInfo, where the driver does not require it:
 * nothing but the dedicated resource may be bound to dedicated memory
 * (VUID-vkBindBufferMemory-memory-01508), and the layer binds its
 * whole-memory buffer.  Returns the pNext chain to allocate with, built
 * in store (copies of the structures before it); info->pNext where
 * nothing is stripped. */
struct cm_alloc_chain {
   union {
      VkBaseInStructure base;
      VkMemoryAllocateFlagsInfo flags;
      VkMemoryOpaqueCaptureAddressAllocateInfo capture;
      VkMemoryPriorityAllocateInfoEXT priority;
   } s[8];
};
const void *cm_devlocal_strip_dedicated(struct cm_device *dev,
                                        const VkMemoryAllocateInfo *info,
                                        struct cm_alloc_chain *store);
/* Memory records: the whole-memory buffer.  _finish under dev->lock. */
void cm_devlocal_memory_init(struct cm_device *dev, struct cm_memory *mem,
                             const VkMemoryAllocateInfo *info);
void cm_devlocal_memory_finish(struct cm_device *dev, struct cm_memory *mem);
/* Copies [lo, lo + len) of the device memory into the new shadow. */
VkResult cm_devlocal_load(struct cm_device *dev, struct cm_memory *mem);
/* Uploads the CPU's writes to every mapped device-local memory, before
 * work on queue (VK_NULL_HANDLE: the layer's own queue, and wait). */
VkResult cm_devlocal_upload(struct cm_device *dev, VkQueue queue,
                            struct cm_memory *only);
/* Downloads and merges what the GPU may have written to mapped
 * device-local memories (only: just that memory, within [lo, hi)). */
void cm_devlocal_download(struct cm_device *dev, struct cm_memory *only,
                          VkDeviceSize lo, VkDeviceSize hi);
/* The lock of a queue the layer also submits to; VK_NULL_HANDLE or a
 * queue the layer does not know: the layer's own queue's.  Always taken
 * before dev->lock. */
pthread_mutex_t *cm_devlocal_queue_lock(struct cm_device *dev, VkQueue queue);

#endif
