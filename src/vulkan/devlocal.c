/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: device-local mode
 *
 * Memory of a device-local type that is not host-visible is offered to
 * the application as HOST_VISIBLE | HOST_COHERENT.  The driver cannot map
 * it, so vkMapMemory returns a cohmap region (BYTE_EXACT, as in shadow
 * mode) and the bytes travel through staging buffers of the driver's real
 * host-visible type:
 *
 *  1. Each such memory gets, at allocation, a buffer over all of it
 *     (TRANSFER_SRC | TRANSFER_DST, bound at offset 0), the end of every
 *     staging copy.  A memory that cannot have one (dedicated to an
 *     image, a type the buffer cannot use) fails to map with a message.
 *  2. vkMapMemory creates the region and loads it: a copy of the mapped
 *     range into staging, waited for, merged into the zeroed region (so
 *     memory and snapshot both hold it and the next collect reports
 *     nothing).
 *  3. Before a submission the layer collects every mapped device-local
 *     memory, packs the reported bytes (taken from the snapshot, like
 *     shadow mode) into a staging buffer and submits, on the same queue
 *     and before the application's batches, a command buffer that copies
 *     them into place between two global barriers: the first orders the
 *     copy after earlier work on the queue, the second makes its writes
 *     visible to everything later in submission order, which includes
 *     the application's batches.  Staging buffers, command buffers and
 *     fences are recycled once their fence has signalled.
 *  4. When the host observes completion the layer copies the GPU-writable
 *     ranges of every mapped device-local memory into staging, on its own
 *     queue, waits, and merges them into the regions with the three-way
 *     rule (cohmap_region_merge()).  vkUnmapMemory uploads what is
 *     pending on its own queue and waits.
 *  5. Queues must be externally synchronized, and the layer submits to
 *     queues the application uses: each queue of the device has a lock,
 *     held by the layer's entry points around every use of the queue
 *     (submissions, vkQueueWaitIdle, vkQueuePresentKHR) and taken before
 *     the device lock.  An upload to one queue is waited for before a
 *     submission to another, which the copy does not order.
 */

#include <inttypes.h>
#include <string.h>

#include "track/track_priv.h"
#include "vulkan/layer.h"

struct cm_dl_queue {
   VkQueue queue;
   uint32_t family;
   pthread_mutex_t lock;
};

/* One staging transfer: a command buffer, its fence and its staging
 * buffer, recycled once the fence signalled. */
struct cm_dl_job {
   VkQueue queue;
   uint32_t family;
   VkCommandBuffer cmd;
   VkFence fence;
   VkBuffer staging;
   VkDeviceMemory memory;
   uint8_t *ptr;
   VkDeviceSize capacity;
   bool busy; /* submitted, fence not seen signalled */
};

/* A staged copy: bytes of one memory. */
struct cm_dl_copy {
   struct cm_memory *mem;
   VkBufferCopy region;
};

struct cm_devlocal {
   struct cm_dl_queue *queues;
   uint32_t queue_count;
   uint32_t own; /* the layer's queue: loads, downloads, unmaps */
   VkCommandPool pools[16];
   uint32_t family_count;
   uint32_t staging_type;
   bool staging_coherent;
   struct cm_dl_job *jobs;
   uint32_t job_count, job_cap;
   struct cm_dl_copy *copies;
   uint32_t copy_count, copy_cap;
   VkDeviceSize last_upload; /* sizes the next staging buffer */
};

/* Idle jobs kept for reuse; more are destroyed. */
#define CM_DL_IDLE_JOBS   4
#define CM_DL_MIN_STAGING (64 * 1024)

static const VkQueueFlags copy_queue_flags =
   VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT | VK_QUEUE_TRANSFER_BIT;

/* --- set-up ---------------------------------------------------------------
 */

VkResult
cm_devlocal_init(struct cm_device *dev, const VkDeviceCreateInfo *info)
{
   struct cm_instance *inst = dev->instance;
   struct cm_devlocal *dl =
      cm_alloc(&dev->alloc, sizeof(*dl), VK_SYSTEM_ALLOCATION_SCOPE_DEVICE);
   if (!dl)
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   memset(dl, 0, sizeof(*dl));

   VkQueueFamilyProperties families[16];
   uint32_t nf = 16;
   inst->next.GetPhysicalDeviceQueueFamilyProperties(dev->physical, &nf,
                                                     families);
   dl->family_count = nf;

   uint32_t total = 0;
   for (uint32_t i = 0; i < info->queueCreateInfoCount; i++)
      total += info->pQueueCreateInfos[i].queueCount;
   dl->queues =
      cm_alloc(&dev->alloc, (total ? total : 1) * sizeof(*dl->queues),
               VK_SYSTEM_ALLOCATION_SCOPE_DEVICE);
   if (!dl->queues) {
      cm_free(&dev->alloc, dl);
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   }
   dl->own = UINT32_MAX;
   for (uint32_t i = 0; i < info->queueCreateInfoCount; i++) {
      const VkDeviceQueueCreateInfo *q = &info->pQueueCreateInfos[i];
      /* Queues created with flags (protected) come from
       * vkGetDeviceQueue2 only; the layer never copies on them. */
      if (q->flags || q->queueFamilyIndex >= nf)
         continue;
      for (uint32_t k = 0; k < q->queueCount; k++) {
         struct cm_dl_queue *dq = &dl->queues[dl->queue_count];
         dev->next.GetDeviceQueue(dev->device, q->queueFamilyIndex, k,
                                  &dq->queue);
         /* The loader sets the dispatch pointer when the application
          * asks; the layer may use the queue first. */
         if (dev->set_loader_data)
            dev->set_loader_data(dev->device, dq->queue);
         dq->family = q->queueFamilyIndex;
         pthread_mutex_init(&dq->lock, NULL);
         if (dl->own == UINT32_MAX &&
             (families[q->queueFamilyIndex].queueFlags & copy_queue_flags))
            dl->own = dl->queue_count;
         dl->queue_count++;
      }
   }

   /* Staging: a host-visible type, coherent and cached if there is one
    * (downloads are read by the CPU). */
   int best = -1, best_score = -1;
   for (uint32_t i = 0; i < dev->real_props.memoryTypeCount; i++) {
      VkMemoryPropertyFlags f = dev->real_props.memoryTypes[i].propertyFlags;
      if (!(f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) ||
          (f & VK_MEMORY_PROPERTY_PROTECTED_BIT))
         continue;
      int score = 1 + !!(f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) * 2 +
                  !!(f & VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
      if (score > best_score) {
         best = (int)i;
         best_score = score;
      }
   }
   if (dl->own == UINT32_MAX || best < 0) {
      cm_log("error: device-local mode needs a queue that can copy and a "
             "host-visible memory type for staging");
      for (uint32_t i = 0; i < dl->queue_count; i++)
         pthread_mutex_destroy(&dl->queues[i].lock);
      cm_free(&dev->alloc, dl->queues);
      cm_free(&dev->alloc, dl);
      return VK_ERROR_INITIALIZATION_FAILED;
   }
   dl->staging_type = (uint32_t)best;
   dl->staging_coherent = dev->real_props.memoryTypes[best].propertyFlags &
                          VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
   dev->devlocal = dl;
   return VK_SUCCESS;
}

static void
job_destroy(struct cm_device *dev, struct cm_dl_job *job)
{
   struct cm_devlocal *dl = dev->devlocal;
   if (job->cmd)
      dev->next.FreeCommandBuffers(dev->device, dl->pools[job->family], 1,
                                   &job->cmd);
   if (job->fence)
      dev->next.DestroyFence(dev->device, job->fence, NULL);
   if (job->staging)
      dev->next.DestroyBuffer(dev->device, job->staging, NULL);
   if (job->memory)
      dev->next.FreeMemory(dev->device, job->memory, NULL);
   memset(job, 0, sizeof(*job));
}

/* Waits for every job in flight (on queue other than skip). */
static void
jobs_wait(struct cm_device *dev, VkQueue skip)
{
   struct cm_devlocal *dl = dev->devlocal;
   for (uint32_t i = 0; i < dl->job_count; i++) {
      struct cm_dl_job *job = &dl->jobs[i];
      if (job->busy && job->queue != skip) {
         dev->next.WaitForFences(dev->device, 1, &job->fence, VK_TRUE,
                                 UINT64_MAX);
         job->busy = false;
      }
   }
}

void
cm_devlocal_finish(struct cm_device *dev)
{
   struct cm_devlocal *dl = dev->devlocal;
   if (!dl)
      return;
   jobs_wait(dev, VK_NULL_HANDLE);
   for (uint32_t i = 0; i < dl->job_count; i++)
      job_destroy(dev, &dl->jobs[i]);
   for (uint32_t i = 0; i < dl->family_count && i < 16; i++) {
      if (dl->pools[i])
         dev->next.DestroyCommandPool(dev->device, dl->pools[i], NULL);
   }
   for (uint32_t i = 0; i < dl->queue_count; i++)
      pthread_mutex_destroy(&dl->queues[i].lock);
   cm_free(&dev->alloc, dl->jobs);
   cm_free(&dev->alloc, dl->copies);
   cm_free(&dev->alloc, dl->queues);
   cm_free(&dev->alloc, dl);
   dev->devlocal = NULL;
}

static struct cm_dl_queue *
find_queue(struct cm_devlocal *dl, VkQueue queue)
{
   for (uint32_t i = 0; i < dl->queue_count; i++) {
      if (dl->queues[i].queue == queue)
         return &dl->queues[i];
   }
   return NULL;
}

pthread_mutex_t *
cm_devlocal_queue_lock(struct cm_device *dev, VkQueue queue)
{
   struct cm_devlocal *dl = dev->devlocal;
   struct cm_dl_queue *q = queue ? find_queue(dl, queue) : NULL;
   return q ? &q->lock : &dl->queues[dl->own].lock;
}

/* --- memory records -------------------------------------------------------
 */

/* Whether the dedicated allocation must stay: the driver requires it, or
 * it is an image's. */
static bool
dedicated_required(struct cm_device *dev,
                   const VkMemoryDedicatedAllocateInfo *d)
{
   VkMemoryDedicatedRequirements dr = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_DEDICATED_REQUIREMENTS,
   };
   VkMemoryRequirements2 r = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_REQUIREMENTS_2,
      .pNext = &dr,
   };
   if (d->buffer && dev->next.GetBufferMemoryRequirements2) {
      VkBufferMemoryRequirementsInfo2 bi = {
         .sType = VK_STRUCTURE_TYPE_BUFFER_MEMORY_REQUIREMENTS_INFO_2,
         .buffer = d->buffer,
      };
      dev->next.GetBufferMemoryRequirements2(dev->device, &bi, &r);
      return dr.requiresDedicatedAllocation;
   }
   /* Images keep theirs (mapping the memory of an image, a linear one,
    * is rare; such memory cannot be mapped in this mode: docs/vulkan.md),
    * and so does a buffer where the driver cannot be asked (Vulkan 1.0
    * without VK_KHR_get_memory_requirements2). */
   return true;
}

const void *
cm_devlocal_strip_dedicated(struct cm_device *dev,
                            const VkMemoryAllocateInfo *info,
                            struct cm_alloc_chain *store)
{
   /* Rebuilt from copies of the structures before the dedicated one,
    * which are the application's (const); a structure the layer does not
    * know the size of cannot be copied, and then nothing is stripped. */
   const VkBaseInStructure *s = info->pNext;
   uint32_t n = 0;
   for (; s; s = s->pNext) {
      if (s->sType == VK_STRUCTURE_TYPE_MEMORY_DEDICATED_ALLOCATE_INFO)
         break;
      size_t size;
      switch (s->sType) {
      case VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO:
         size = sizeof(VkMemoryAllocateFlagsInfo);
         break;
      case VK_STRUCTURE_TYPE_MEMORY_OPAQUE_CAPTURE_ADDRESS_ALLOCATE_INFO:
         size = sizeof(VkMemoryOpaqueCaptureAddressAllocateInfo);
         break;
      case VK_STRUCTURE_TYPE_MEMORY_PRIORITY_ALLOCATE_INFO_EXT:
         size = sizeof(VkMemoryPriorityAllocateInfoEXT);
         break;
      default:
         return info->pNext;
      }
      if (n == sizeof(store->s) / sizeof(store->s[0]))
         return info->pNext;
      memcpy(&store->s[n++], s, size);
   }
   if (!s || dedicated_required(dev, (const VkMemoryDedicatedAllocateInfo *)s))
      return info->pNext;
   const void *rest = s->pNext;
   for (uint32_t i = n; i-- > 0;) {
      store->s[i].base.pNext = rest;
      rest = &store->s[i];
   }
   return rest;
}

void
cm_devlocal_memory_init(struct cm_device *dev, struct cm_memory *mem,
                        const VkMemoryAllocateInfo *info)
{
   for (const VkBaseInStructure *s = info->pNext; s; s = s->pNext) {
      if (s->sType == VK_STRUCTURE_TYPE_MEMORY_DEDICATED_ALLOCATE_INFO &&
          ((const VkMemoryDedicatedAllocateInfo *)s)->image)
         return; /* no other resource may be bound to it */
   }
   VkBufferCreateInfo bci = {
      .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
      .size = info->allocationSize,
      .usage =
         VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
      .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
   };
   VkBuffer buffer;
   if (dev->next.CreateBuffer(dev->device, &bci, NULL, &buffer) != VK_SUCCESS)
      return;
   VkMemoryRequirements req;
   dev->next.GetBufferMemoryRequirements(dev->device, buffer, &req);
   if (!(req.memoryTypeBits & (1u << dev->types.real[mem->type])) ||
       req.size > info->allocationSize ||
       dev->next.BindBufferMemory(dev->device, buffer, mem->handle, 0) !=
          VK_SUCCESS) {
      dev->next.DestroyBuffer(dev->device, buffer, NULL);
      return;
   }
   mem->whole = buffer;
}

void
cm_devlocal_memory_finish(struct cm_device *dev, struct cm_memory *mem)
{
   if (!mem->whole)
      return;
   /* A staging copy in flight may still use the buffer. */
   jobs_wait(dev, VK_NULL_HANDLE);
   dev->next.DestroyBuffer(dev->device, mem->whole, NULL);
   mem->whole = VK_NULL_HANDLE;
}

/* --- jobs -----------------------------------------------------------------
 */

static VkResult
job_create(struct cm_device *dev, struct cm_dl_job *job, uint32_t family,
           VkDeviceSize capacity)
{
   struct cm_devlocal *dl = dev->devlocal;
   VkDevice d = dev->device;
   memset(job, 0, sizeof(*job));
   job->family = family;
   VkResult res = VK_SUCCESS;
   if (!dl->pools[family]) {
      VkCommandPoolCreateInfo pci = {
         .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
         .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT |
                  VK_COMMAND_POOL_CREATE_TRANSIENT_BIT,
         .queueFamilyIndex = family,
      };
      res = dev->next.CreateCommandPool(d, &pci, NULL, &dl->pools[family]);
      if (res != VK_SUCCESS)
         return res;
   }
   VkCommandBufferAllocateInfo cai = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
      .commandPool = dl->pools[family],
      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
      .commandBufferCount = 1,
   };
   res = dev->next.AllocateCommandBuffers(d, &cai, &job->cmd);
   if (res != VK_SUCCESS) {
      job->cmd = VK_NULL_HANDLE;
      goto fail;
   }
   /* A dispatchable object made below the loader's trampolines. */
   if (dev->set_loader_data)
      dev->set_loader_data(d, job->cmd);

   VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
   res = dev->next.CreateFence(d, &fci, NULL, &job->fence);
   if (res != VK_SUCCESS)
      goto fail;

   VkBufferCreateInfo bci = {
      .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
      .size = capacity,
      .usage =
         VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
      .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
   };
   res = dev->next.CreateBuffer(d, &bci, NULL, &job->staging);
   if (res != VK_SUCCESS)
      goto fail;
   VkMemoryRequirements req;
   dev->next.GetBufferMemoryRequirements(d, job->staging, &req);
   if (!(req.memoryTypeBits & (1u << dl->staging_type))) {
      res = VK_ERROR_FEATURE_NOT_PRESENT;
      goto fail;
   }
   VkMemoryAllocateInfo mai = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
      .allocationSize = req.size,
      .memoryTypeIndex = dl->staging_type,
   };
   res = dev->next.AllocateMemory(d, &mai, NULL, &job->memory);
   if (res != VK_SUCCESS)
      goto fail;
   res = dev->next.BindBufferMemory(d, job->staging, job->memory, 0);
   if (res != VK_SUCCESS)
      goto fail;
   void *p;
   res = dev->next.MapMemory(d, job->memory, 0, VK_WHOLE_SIZE, 0, &p);
   if (res != VK_SUCCESS)
      goto fail;
   job->ptr = p;
   job->capacity = capacity;
   return VK_SUCCESS;
fail:
   job_destroy(dev, job);
   return res;
}

/* An idle job of family with at least capacity bytes, recording; NULL
 * when out of memory. */
static struct cm_dl_job *
job_get(struct cm_device *dev, uint32_t family, VkDeviceSize capacity)
{
   struct cm_devlocal *dl = dev->devlocal;
   struct cm_dl_job *found = NULL;
   uint32_t idle = 0;
   for (uint32_t i = 0; i < dl->job_count; i++) {
      struct cm_dl_job *job = &dl->jobs[i];
      if (job->busy &&
          dev->next.GetFenceStatus(dev->device, job->fence) == VK_SUCCESS)
         job->busy = false;
      if (job->busy)
         continue;
      idle++;
      if (!found && job->family == family && job->capacity >= capacity)
         found = job;
   }
   if (!found) {
      /* Too many idle ones: drop one that does not fit. */
      for (uint32_t i = 0; i < dl->job_count && idle >= CM_DL_IDLE_JOBS;
           i++) {
         if (!dl->jobs[i].busy) {
            job_destroy(dev, &dl->jobs[i]);
            dl->jobs[i] = dl->jobs[--dl->job_count];
            idle--;
            i--;
         }
      }
      if (dl->job_count == dl->job_cap) {
         uint32_t cap = dl->job_cap ? 2 * dl->job_cap : 8;
         struct cm_dl_job *n =
            cm_realloc(&dev->alloc, dl->jobs, cap * sizeof(*n),
                       VK_SYSTEM_ALLOCATION_SCOPE_DEVICE);
         if (!n)
            return NULL;
         dl->jobs = n;
         dl->job_cap = cap;
      }
      VkDeviceSize size = CM_DL_MIN_STAGING;
      while (size < capacity)
         size *= 2;
      found = &dl->jobs[dl->job_count];
      if (job_create(dev, found, family, size) != VK_SUCCESS) {
         cm_log("error: cannot create a staging buffer of %" PRIu64 " bytes",
                (uint64_t)size);
         return NULL;
      }
      dl->job_count++;
   } else {
      dev->next.ResetFences(dev->device, 1, &found->fence);
      dev->next.ResetCommandBuffer(found->cmd, 0);
   }
   VkCommandBufferBeginInfo bi = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
   };
   if (dev->next.BeginCommandBuffer(found->cmd, &bi) != VK_SUCCESS)
      return NULL;
   return found;
}

static void
barrier(struct cm_device *dev, VkCommandBuffer cmd, VkPipelineStageFlags src,
        VkAccessFlags src_access, VkPipelineStageFlags dst,
        VkAccessFlags dst_access)
{
   VkMemoryBarrier mb = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
      .srcAccessMask = src_access,
      .dstAccessMask = dst_access,
   };
   dev->next.CmdPipelineBarrier(cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* Records dl->copies (staging → memory when upload, else memory →
 * staging) between barriers, ends, submits on queue and, if wait, waits. */
static VkResult
job_run(struct cm_device *dev, struct cm_dl_job *job, VkQueue queue,
        bool upload, bool wait)
{
   struct cm_devlocal *dl = dev->devlocal;
   VkCommandBuffer cmd = job->cmd;
   barrier(dev, cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
           VK_ACCESS_MEMORY_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
           VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT);
   /* One vkCmdCopyBuffer per run of copies of the same memory. */
   for (uint32_t i = 0; i < dl->copy_count;) {
      uint32_t j = i;
      VkBufferCopy regions[64];
      uint32_t n = 0;
      while (j < dl->copy_count && dl->copies[j].mem == dl->copies[i].mem &&
             n < 64) {
         regions[n] = dl->copies[j].region;
         if (!upload) {
            regions[n].srcOffset = dl->copies[j].region.dstOffset;
            regions[n].dstOffset = dl->copies[j].region.srcOffset;
         }
         n++;
         j++;
      }
      VkBuffer whole = dl->copies[i].mem->whole;
      if (upload)
         dev->next.CmdCopyBuffer(cmd, job->staging, whole, n, regions);
      else
         dev->next.CmdCopyBuffer(cmd, whole, job->staging, n, regions);
      i = j;
   }
   if (upload)
      barrier(dev, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
              VK_ACCESS_TRANSFER_WRITE_BIT,
              VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
              VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT);
   else
      barrier(dev, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
              VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
              VK_ACCESS_HOST_READ_BIT);
   VkResult res = dev->next.EndCommandBuffer(cmd);
   if (res != VK_SUCCESS)
      return res;

   if (upload && !dl->staging_coherent) {
      VkMappedMemoryRange r = {
         .sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
         .memory = job->memory,
         .size = VK_WHOLE_SIZE,
      };
      dev->next.FlushMappedMemoryRanges(dev->device, 1, &r);
   }
   VkSubmitInfo si = {
      .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
      .commandBufferCount = 1,
      .pCommandBuffers = &cmd,
   };
   res = dev->next.QueueSubmit(queue, 1, &si, job->fence);
   if (res != VK_SUCCESS)
      return res;
   job->busy = true;
   job->queue = queue;
   if (wait) {
      res = dev->next.WaitForFences(dev->device, 1, &job->fence, VK_TRUE,
                                    UINT64_MAX);
      job->busy = res != VK_SUCCESS;
      if (res == VK_SUCCESS && !upload && !dl->staging_coherent) {
         VkMappedMemoryRange r = {
            .sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
            .memory = job->memory,
            .size = VK_WHOLE_SIZE,
         };
         dev->next.InvalidateMappedMemoryRanges(dev->device, 1, &r);
      }
   }
   return res;
}

static bool
copy_add(struct cm_device *dev, struct cm_memory *mem, VkDeviceSize staging,
         VkDeviceSize offset, VkDeviceSize size)
{
   struct cm_devlocal *dl = dev->devlocal;
   if (dl->copy_count == dl->copy_cap) {
      uint32_t cap = dl->copy_cap ? 2 * dl->copy_cap : 64;
      struct cm_dl_copy *n =
         cm_realloc(&dev->alloc, dl->copies, cap * sizeof(*n),
                    VK_SYSTEM_ALLOCATION_SCOPE_DEVICE);
      if (!n)
         return false;
      dl->copies = n;
      dl->copy_cap = cap;
   }
   dl->copies[dl->copy_count++] = (struct cm_dl_copy){
      .mem = mem,
      .region = {.srcOffset = staging, .dstOffset = offset, .size = size},
   };
   return true;
}

/* --- CPU → GPU ------------------------------------------------------------
 */

/* A bigger job holding what job staged so far; job goes back idle. */
static struct cm_dl_job *
job_grow(struct cm_device *dev, struct cm_dl_job *job, VkDeviceSize used,
         VkDeviceSize need)
{
   struct cm_devlocal *dl = dev->devlocal;
   uint32_t family = job->family;
   VkCommandBuffer cmd = job->cmd;
   VkDeviceSize cap = job->capacity * 2 > need ? job->capacity * 2 : need;
   /* job_get drops idle jobs, so the old one looks busy meanwhile (its
    * fence is unsignalled, so it stays so); and it may move the array
    * (realloc) or move the old job into a dropped one's slot, so it is
    * found again afterwards by its command buffer.  (Found by index
    * before: a moved job stayed "busy" with a fence never submitted, and
    * the next wait for the layer's jobs never returned.) */
   dev->next.EndCommandBuffer(cmd);
   job->busy = true;
   struct cm_dl_job *bigger = job_get(dev, family, cap);
   job = NULL;
   for (uint32_t i = 0; i < dl->job_count && !job; i++) {
      if (dl->jobs[i].cmd == cmd)
         job = &dl->jobs[i];
   }
   job->busy = false;
   if (!bigger)
      return NULL;
   memcpy(bigger->ptr, job->ptr, (size_t)used);
   return bigger;
}

VkResult
cm_devlocal_upload(struct cm_device *dev, VkQueue queue,
                   struct cm_memory *only)
{
   struct cm_devlocal *dl = dev->devlocal;
   struct cm_dl_queue *q = queue ? find_queue(dl, queue) : NULL;
   bool wait = !q;
   if (!q)
      q = &dl->queues[dl->own];
   /* The copy orders itself after earlier work on its own queue only. */
   jobs_wait(dev, q->queue);

   struct cm_dl_job *job = NULL;
   VkDeviceSize used = 0;
   dl->copy_count = 0;
   VkResult res = VK_SUCCESS;
   uint32_t n = only ? 1 : dev->mapped_count;
   for (uint32_t m = 0; m < n && res == VK_SUCCESS; m++) {
      struct cm_memory *mem = only ? only : dev->mapped[m];
      if (mem->how != CM_HOW_DEVLOCAL || !mem->region)
         continue;
      struct cohmap_dirty d;
      int ret = cohmap_region_collect(mem->region, 0, &d);
      if (ret) {
         cm_log("error: cannot collect the CPU's writes to memory %p: %s",
                (void *)mem->handle, cohmap_error_message());
         res = VK_ERROR_UNKNOWN;
         break;
      }
      if (d.count == 0)
         continue;
      VkDeviceSize need = used + d.bytes;
      if (!job) {
         VkDeviceSize want = need > dl->last_upload ? need : dl->last_upload;
         job = job_get(dev, q->family, want);
      } else if (need > job->capacity) {
         job = job_grow(dev, job, used, need);
      }
      if (!job) {
         cohmap_region_requeue(mem->region, d.ranges, d.count);
         res = VK_ERROR_OUT_OF_HOST_MEMORY;
         break;
      }
      const uint8_t *src = d.data;
      uint64_t bytes = 0;
      for (size_t i = 0; i < d.count; i++) {
         size_t off = d.ranges[i].offset, len = d.ranges[i].length;
         if (!cm_clip_to_map(mem, off, &len))
            break;
         memcpy(job->ptr + used, src + off, len);
         if (!copy_add(dev, mem, used, mem->map_lo + off, len)) {
            cohmap_region_requeue(mem->region, d.ranges + i, d.count - i);
            res = VK_ERROR_OUT_OF_HOST_MEMORY;
            break;
         }
         used += len;
         bytes += len;
      }
      mem->stats.flushes++;
      mem->stats.bytes_flushed += bytes;
   }
   if (!job)
      return res;
   dl->last_upload = used;
   if (dl->copy_count == 0) {
      dev->next.EndCommandBuffer(job->cmd);
      return res;
   }
   VkResult r = job_run(dev, job, q->queue, true, wait);
   if (r != VK_SUCCESS)
      cm_log("error: the staging upload failed (%d): the CPU's writes may "
             "not reach the device",
             r);
   return res != VK_SUCCESS ? res : r;
}

/* --- GPU → CPU ------------------------------------------------------------
 */

/* Lists [a, b) of mem, clipped to its mapping, as a staged copy. */
static bool
download_add(struct cm_device *dev, struct cm_memory *mem, VkDeviceSize a,
             VkDeviceSize b, VkDeviceSize *used)
{
   VkDeviceSize map_end = mem->map_lo + mem->map_len;
   if (a < mem->map_lo)
      a = mem->map_lo;
   if (b > map_end)
      b = map_end;
   if (a >= b)
      return true;
   if (!copy_add(dev, mem, *used, a, b - a))
      return false;
   *used += b - a;
   return true;
}

/* Copies the listed ranges to staging on the layer's queue, waits, and
 * merges them.  Under the layer queue's lock and dev->lock. */
static VkResult
download_run(struct cm_device *dev, VkDeviceSize used)
{
   struct cm_devlocal *dl = dev->devlocal;
   if (dl->copy_count == 0)
      return VK_SUCCESS;
   struct cm_dl_queue *q = &dl->queues[dl->own];
   struct cm_dl_job *job = job_get(dev, q->family, used);
   if (!job)
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   VkResult res = job_run(dev, job, q->queue, false, true);
   if (res != VK_SUCCESS) {
      cm_log("error: the staging download failed (%d)", res);
      return res;
   }
   struct cm_memory *last = NULL;
   for (uint32_t i = 0; i < dl->copy_count; i++) {
      const struct cm_dl_copy *c = &dl->copies[i];
      struct cm_memory *mem = c->mem;
      size_t merged = 0, conflicts = 0;
      int ret = cohmap_region_merge(
         mem->region, (size_t)(c->region.dstOffset - mem->map_lo),
         job->ptr + c->region.srcOffset, (size_t)c->region.size, &merged,
         &conflicts);
      if (ret)
         cm_log("error: cannot merge the GPU's writes to memory %p: %s",
                (void *)mem->handle, cohmap_error_message());
      mem->stats.bytes_merged += merged;
      mem->stats.bytes_conflicted += conflicts;
      if (mem != last)
         dev->stat_merges++;
      last = mem;
   }
   return VK_SUCCESS;
}

void
cm_devlocal_download(struct cm_device *dev, struct cm_memory *only,
                     VkDeviceSize lo, VkDeviceSize hi)
{
   struct cm_devlocal *dl = dev->devlocal;
   dl->copy_count = 0;
   VkDeviceSize used = 0;
   uint32_t n = only ? 1 : dev->mapped_count;
   for (uint32_t m = 0; m < n; m++) {
      struct cm_memory *mem = only ? only : dev->mapped[m];
      if (mem->how != CM_HOW_DEVLOCAL || !mem->region)
         continue;
      const struct cm_range64 all = {0, mem->size};
      const struct cm_range64 *w = mem->writable_all ? &all : mem->writable;
      uint32_t wn = mem->writable_all ? 1 : mem->writable_count;
      VkDeviceSize a0 = only ? lo : 0, b0 = only ? hi : mem->size;
      for (uint32_t i = 0; i < wn; i++) {
         VkDeviceSize a = w[i].offset > a0 ? w[i].offset : a0;
         VkDeviceSize e = w[i].offset + w[i].size;
         if (!download_add(dev, mem, a, e < b0 ? e : b0, &used)) {
            cm_log("error: out of memory merging the GPU's writes");
            return;
         }
      }
   }
   download_run(dev, used);
}

VkResult
cm_devlocal_load(struct cm_device *dev, struct cm_memory *mem)
{
   struct cm_devlocal *dl = dev->devlocal;
   dl->copy_count = 0;
   VkDeviceSize used = 0;
   if (!download_add(dev, mem, mem->map_lo, mem->map_lo + mem->map_len,
                     &used))
      return VK_ERROR_OUT_OF_HOST_MEMORY;
   /* The zeroed region and snapshot take every non-zero byte: the next
    * collect reports nothing.  Not a merge of GPU writes: not counted. */
   struct cm_memory_stats saved = mem->stats;
   uint64_t merges = dev->stat_merges;
   VkResult res = download_run(dev, used);
   mem->stats = saved;
   dev->stat_merges = merges;
   return res;
}
