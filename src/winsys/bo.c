/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: buffer objects, blocks and slabs
 *
 * A coherent BO's CPU side is a cohmap region; its device side a memory
 * object of the backend, at the same offsets.  Every submission collects
 * the region and uploads what it reports (cohmap_block_flush()).
 *
 * Small coherent BOs would each cost a collect — a PAGEMAP_SCAN ioctl or a
 * snapshot diff — per submission, more than copying them.  So BOs under
 * the slab threshold are sub-allocated from 2 MiB slabs (one region, one
 * device memory object): a submission collects the slab once, for all its
 * BOs, and uploads every dirty byte of the slab — uploading a neighbour's
 * bytes early is harmless, they are the CPU's latest.  Slots are powers of
 * two (at least 64 bytes, so 32-bit commands stay aligned); slabs are
 * separated by the flags that change tracking (GPU_WRITE needs a
 * snapshot, CPU_STORES_ONLY allows fault).
 *
 * A re-used slot must read as zero on both sides.  Zeroing it is a CPU
 * write the tracker sees; the device side is zeroed directly, under the
 * block lock, so that no upload interleaves.
 *
 * GPU_WRITE BOs keep a snapshot (COHMAP_REGION_BYTE_EXACT): their uploads
 * are byte-exact, so they never overwrite bytes the GPU wrote with stale
 * CPU data, and their readback is the three-way merge of
 * cohmap_region_merge().  Other coherent BOs are uploaded in whole pages:
 * nothing but the CPU writes them.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "track/track_priv.h"
#include "util/log.h"
#include "util/time.h"
#include "winsys/winsys_priv.h"

#define BITS_PER_WORD (8 * sizeof(unsigned long))
#define MIN_SLOT 64
/* Readback goes through a bounded buffer: a 256 MiB BO must not need a
 * 256 MiB temporary. */
#define READBACK_CHUNK (1u << 20)

#define KNOWN_BO_FLAGS                                                     \
   (COHMAP_BO_PERSISTENT | COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE |      \
    COHMAP_BO_CPU_CACHED | COHMAP_BO_CPU_STORES_ONLY)
/* Flags that put BOs into different slabs. */
#define SLAB_CLASS_FLAGS (COHMAP_BO_GPU_WRITE | COHMAP_BO_CPU_STORES_ONLY)

static const uint8_t zeroes[64 * 1024];

bool
cohmap_bo_valid(const struct cohmap_bo *bo)
{
   return bo && bo->magic == COHMAP_BO_MAGIC &&
          !atomic_load(&bo->destroyed);
}

void
cohmap_bo_ref(struct cohmap_bo *bo)
{
   atomic_fetch_add(&bo->refs, 1);
}

static size_t
page_size(void)
{
   return (size_t)sysconf(_SC_PAGESIZE);
}

static size_t
round_up(size_t x, size_t align)
{
   return (x + align - 1) & ~(align - 1);
}

/* Zeroes [offset, offset + size) of a block's device memory. */
static int
device_zero(struct cohmap_block *block, size_t offset, size_t size)
{
   struct cohmap_device *dev = block->dev;

   while (size) {
      size_t n = size < sizeof(zeroes) ? size : sizeof(zeroes);
      struct cohmap_range r = {0, n};
      int ret = dev->ops->upload(dev->backend, block->mem, &r, 1, zeroes, 0,
                                 (ptrdiff_t)offset);
      if (ret)
         return ret;
      offset += n;
      size -= n;
   }
   return 0;
}

static uint32_t
region_flags_for(uint32_t bo_flags, bool wrapped)
{
   uint32_t f = COHMAP_REGION_FALLBACK;
   if (bo_flags & COHMAP_BO_GPU_WRITE)
      f |= COHMAP_REGION_BYTE_EXACT;
   if (wrapped)
      f |= COHMAP_REGION_INITIAL_DIRTY;
   if (bo_flags & COHMAP_BO_CPU_STORES_ONLY)
      f |= COHMAP_REGION_CPU_STORES_ONLY;
   return f;
}

/* The method for a new coherent region.  AUTO goes to the region as is:
 * the tracking policy chooses (fault only with CPU_STORES_ONLY, see
 * region_flags_for()).  fault is not transparent to kernel writes: a
 * context forced to fault (COHMAP_METHOD=fault) still does not get it
 * unless the BO promises CPU stores only (an explicit device method is the
 * caller's decision). */
static enum cohmap_method
method_for(struct cohmap_device *dev, uint32_t bo_flags)
{
   enum cohmap_method m = dev->method;
   if (m == COHMAP_METHOD_AUTO &&
       cohmap_context_auto_method(dev->ctx) == COHMAP_METHOD_FAULT) {
      if (!(bo_flags & COHMAP_BO_CPU_STORES_ONLY))
         m = cohmap_context_method_status(dev->ctx, COHMAP_METHOD_SCAN,
                                          NULL) == 0
                ? COHMAP_METHOD_SCAN
                : COHMAP_METHOD_COMPARE;
   }
   return m;
}

/* Caller holds dev->lock. */
static void
block_link_locked(struct cohmap_block *block)
{
   struct cohmap_device *dev = block->dev;

   block->prev = NULL;
   block->next = dev->blocks;
   if (dev->blocks)
      dev->blocks->prev = block;
   dev->blocks = block;
}

static void
block_link(struct cohmap_block *block)
{
   pthread_mutex_lock(&block->dev->lock);
   block_link_locked(block);
   pthread_mutex_unlock(&block->dev->lock);
}

/* Caller holds dev->lock. */
static void
block_unlink_locked(struct cohmap_block *block)
{
   struct cohmap_device *dev = block->dev;

   if (!block->region)
      return;
   if (block->prev)
      block->prev->next = block->next;
   else if (dev->blocks == block)
      dev->blocks = block->next;
   if (block->next)
      block->next->prev = block->prev;
   block->next = block->prev = NULL;
}

/* Frees an unlinked block. */
static void
block_free(struct cohmap_block *block)
{
   struct cohmap_device *dev = block->dev;

   if (block->region)
      cohmap_region_destroy(block->region);
   else if (block->cpu_owned)
      munmap(block->cpu, block->size);
   if (block->mem)
      dev->ops->mem_free(dev->backend, block->mem);
   cohmap_verify_block_free(block);
   pthread_mutex_destroy(&block->lock);
   free(block);
}

/*
 * A block of size bytes for BOs with bo_flags: tracked (coherent) or plain.
 * user_ptr non-NULL wraps caller memory.  The caller links a coherent
 * block into dev->blocks.
 */
static int
block_create(struct cohmap_device *dev, size_t size, uint32_t bo_flags,
             void *user_ptr, struct cohmap_block **out)
{
   struct cohmap_block *block = calloc(1, sizeof(*block));
   int ret;

   if (!block)
      return cohmap_errorf(-ENOMEM, "out of memory");
   block->dev = dev;
   pthread_mutex_init(&block->lock, NULL);

   if (bo_flags & COHMAP_BO_COHERENT) {
      enum cohmap_method m = method_for(dev, bo_flags);
      uint32_t rf = region_flags_for(bo_flags, user_ptr != NULL);
      ret = user_ptr
               ? cohmap_region_wrap(dev->ctx, user_ptr, size, m, rf,
                                    &block->region)
               : cohmap_region_create(dev->ctx, size, m, rf, &block->region);
      if (ret)
         goto fail;
      block->cpu = cohmap_region_ptr(block->region);
      block->size = cohmap_region_size(block->region);
      block->byte_exact = (rf & COHMAP_REGION_BYTE_EXACT) != 0;
   } else if (user_ptr) {
      block->cpu = user_ptr;
      block->size = size;
   } else {
      block->size = round_up(size, page_size());
      block->cpu = mmap(NULL, block->size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (block->cpu == MAP_FAILED) {
         block->cpu = NULL;
         ret = cohmap_errorf(-ENOMEM, "BO of %zu bytes: out of memory",
                             size);
         goto fail;
      }
      block->cpu_owned = true;
   }

   ret = dev->ops->mem_alloc(dev->backend, block->size, &block->mem);
   if (ret)
      goto fail;

   *out = block;
   return 0;

fail:
   block_free(block);
   return ret;
}

/* Caller holds dev->lock.  A free slot of slot_size in a slab of class, or
 * a new slab. */
static int
slab_reserve_locked(struct cohmap_device *dev, uint32_t class_flags,
                    size_t slot_size, struct cohmap_slab **out_slab,
                    unsigned *out_slot, bool *need_zero)
{
   struct cohmap_slab *slab;

   for (slab = dev->slabs; slab; slab = slab->next) {
      if (slab->class_flags == class_flags && slab->slot_size == slot_size &&
          slab->used < slab->nslots)
         break;
   }

   if (!slab) {
      slab = calloc(1, sizeof(*slab));
      if (!slab)
         return cohmap_errorf(-ENOMEM, "out of memory");
      slab->class_flags = class_flags;
      slab->slot_size = slot_size;
      slab->nslots = (unsigned)(dev->slab_size / slot_size);
      size_t words = (slab->nslots + BITS_PER_WORD - 1) / BITS_PER_WORD;
      slab->free_bits = calloc(words, sizeof(unsigned long));
      slab->ever_bits = calloc(words, sizeof(unsigned long));
      slab->slots = calloc(slab->nslots, sizeof(*slab->slots));
      int ret = -ENOMEM;
      if (slab->free_bits && slab->ever_bits && slab->slots)
         ret = block_create(dev, dev->slab_size,
                            class_flags | COHMAP_BO_COHERENT, NULL,
                            &slab->block);
      if (ret) {
         free(slab->free_bits);
         free(slab->ever_bits);
         free(slab->slots);
         free(slab);
         return ret == -ENOMEM ? cohmap_errorf(ret, "slab: out of memory")
                               : ret;
      }
      slab->block->slab = slab;
      block_link_locked(slab->block);
      for (unsigned i = 0; i < slab->nslots; i++)
         slab->free_bits[i / BITS_PER_WORD] |= 1ul << (i % BITS_PER_WORD);
      slab->next = dev->slabs;
      dev->slabs = slab;
      dev->live_slabs++;
   }

   for (size_t w = 0;; w++) {
      if (!slab->free_bits[w])
         continue;
      unsigned b = (unsigned)__builtin_ctzl(slab->free_bits[w]);
      unsigned slot = (unsigned)(w * BITS_PER_WORD + b);
      slab->free_bits[w] &= ~(1ul << b);
      *need_zero = (slab->ever_bits[w] >> b) & 1;
      slab->ever_bits[w] |= 1ul << b;
      slab->used++;
      *out_slab = slab;
      *out_slot = slot;
      return 0;
   }
}

/* Caller holds dev->lock; the slot's BO is gone.  Returns the slab if it
 * should be freed (empty, and another slab of its class exists). */
static struct cohmap_slab *
slab_release_locked(struct cohmap_device *dev, struct cohmap_slab *slab,
                    unsigned slot)
{
   pthread_mutex_lock(&slab->block->lock);
   slab->slots[slot] = NULL;
   pthread_mutex_unlock(&slab->block->lock);
   slab->free_bits[slot / BITS_PER_WORD] |= 1ul << (slot % BITS_PER_WORD);
   slab->used--;
   if (slab->used)
      return NULL;

   /* Keep one empty slab per class: BO churn would otherwise create and
    * register a 2 MiB region again and again. */
   bool other = false;
   for (struct cohmap_slab *s = dev->slabs; s; s = s->next) {
      if (s != slab && s->class_flags == slab->class_flags &&
          s->slot_size == slab->slot_size)
         other = true;
   }
   if (!other)
      return NULL;

   for (struct cohmap_slab **p = &dev->slabs; *p; p = &(*p)->next) {
      if (*p == slab) {
         *p = slab->next;
         break;
      }
   }
   block_unlink_locked(slab->block);
   dev->live_slabs--;
   return slab;
}

static void
slab_free(struct cohmap_slab *slab)
{
   cohmap_stats_slab_freed(slab);
   block_free(slab->block);
   free(slab->free_bits);
   free(slab->ever_bits);
   free(slab->slots);
   free(slab);
}

static int
bo_check_args(struct cohmap_device *dev, size_t size, uint32_t flags,
              struct cohmap_bo **out)
{
   if (!out)
      return cohmap_errorf(-EINVAL, "out is NULL");
   *out = NULL;
   if (!dev)
      return cohmap_errorf(-EINVAL, "device is NULL");
   if (size == 0)
      return cohmap_errorf(-EINVAL, "a BO cannot be empty (size 0)");
   if (flags & ~KNOWN_BO_FLAGS)
      return cohmap_errorf(-EINVAL, "unknown BO flags 0x%x",
                           flags & ~KNOWN_BO_FLAGS);
   return 0;
}

static struct cohmap_bo *
bo_alloc(struct cohmap_device *dev, size_t size, uint32_t flags)
{
   struct cohmap_bo *bo = calloc(1, sizeof(*bo));
   if (!bo)
      return NULL;
   bo->magic = COHMAP_BO_MAGIC;
   bo->dev = dev;
   bo->size = size;
   bo->flags = flags;
   atomic_init(&bo->refs, 1);
   return bo;
}

static void
bo_count(struct cohmap_device *dev, int delta)
{
   pthread_mutex_lock(&dev->lock);
   dev->live_bos += (uint64_t)(int64_t)delta;
   pthread_mutex_unlock(&dev->lock);
}

COHMAP_EXPORT int
cohmap_bo_create(struct cohmap_device *dev, size_t size, uint32_t flags,
                 struct cohmap_bo **out)
{
   int ret = bo_check_args(dev, size, flags, out);
   if (ret)
      return ret;

   struct cohmap_bo *bo = bo_alloc(dev, size, flags);
   if (!bo)
      return cohmap_errorf(-ENOMEM, "out of memory");

   if ((flags & COHMAP_BO_COHERENT) && size < dev->slab_threshold) {
      size_t slot_size = MIN_SLOT;
      while (slot_size < size)
         slot_size *= 2;
      struct cohmap_slab *slab = NULL;
      unsigned slot = 0;
      bool need_zero = false;

      pthread_mutex_lock(&dev->lock);
      ret = slab_reserve_locked(dev, flags & SLAB_CLASS_FLAGS, slot_size,
                                &slab, &slot, &need_zero);
      pthread_mutex_unlock(&dev->lock);
      if (ret) {
         free(bo);
         return ret;
      }
      bo->block = slab->block;
      bo->offset = (size_t)slot * slot_size;
      bo->slot = slot;

      pthread_mutex_lock(&slab->block->lock);
      if (need_zero) {
         ret = cohmap_region_zero(slab->block->region, bo->offset,
                                  slot_size);
         if (!ret)
            ret = device_zero(slab->block, bo->offset, slot_size);
      }
      if (!ret)
         slab->slots[slot] = bo;
      pthread_mutex_unlock(&slab->block->lock);
      if (ret) {
         pthread_mutex_lock(&dev->lock);
         struct cohmap_slab *dead = slab_release_locked(dev, slab, slot);
         pthread_mutex_unlock(&dev->lock);
         if (dead)
            slab_free(dead);
         free(bo);
         return ret;
      }
   } else {
      ret = block_create(dev, size, flags, NULL, &bo->block);
      if (ret) {
         free(bo);
         return ret;
      }
      bo->block->bo = bo;
      if (bo->block->region)
         block_link(bo->block);
   }

   bo_count(dev, 1);
   *out = bo;
   return 0;
}

COHMAP_EXPORT int
cohmap_bo_wrap(struct cohmap_device *dev, void *ptr, size_t size,
               uint32_t flags, struct cohmap_bo **out)
{
   int ret = bo_check_args(dev, size, flags, out);
   if (ret)
      return ret;
   size_t ps = page_size();
   if (!ptr || ((uintptr_t)ptr & (ps - 1)) || (size & (ps - 1)))
      return cohmap_errorf(-EINVAL, "userptr %p+%zu must be page-aligned "
                           "and not NULL", ptr, size);

   struct cohmap_bo *bo = bo_alloc(dev, size, flags);
   if (!bo)
      return cohmap_errorf(-ENOMEM, "out of memory");
   ret = block_create(dev, size, flags, ptr, &bo->block);
   if (ret) {
      free(bo);
      return ret;
   }
   bo->block->bo = bo;
   if (bo->block->region)
      block_link(bo->block);
   bo_count(dev, 1);
   *out = bo;
   return 0;
}

static void
bo_free(struct cohmap_bo *bo)
{
   struct cohmap_device *dev = bo->dev;
   struct cohmap_block *block = bo->block;

   cohmap_stats_bo_freed(bo);
   bo->magic = 0;
   if (block->slab) {
      pthread_mutex_lock(&dev->lock);
      struct cohmap_slab *dead =
         slab_release_locked(dev, block->slab, bo->slot);
      pthread_mutex_unlock(&dev->lock);
      if (dead)
         slab_free(dead);
   } else {
      pthread_mutex_lock(&dev->lock);
      block_unlink_locked(block);
      pthread_mutex_unlock(&dev->lock);
      block_free(block);
   }
   free(bo);
}

void
cohmap_bo_unref(struct cohmap_bo *bo)
{
   if (atomic_fetch_sub(&bo->refs, 1) == 1)
      bo_free(bo);
}

COHMAP_EXPORT int
cohmap_bo_destroy(struct cohmap_bo *bo)
{
   if (!bo)
      return 0;
   if (!cohmap_bo_valid(bo))
      return cohmap_errorf(-EBADF, "%p is not a live BO", (void *)bo);
   /* A wrapped BO's memory is the caller's again as soon as this returns
    * (it may unmap it, and a new mapping or wrap may take the addresses),
    * while the block lives on for submissions still using its device
    * memory: stop tracking the range now.  Under the block lock, which
    * the flushes hold while they collect and check `destroyed`. */
   struct cohmap_block *block = bo->block;
   pthread_mutex_lock(&block->lock);
   atomic_store(&bo->destroyed, true);
   if (block->bo == bo && block->region)
      cohmap_region_release(block->region);
   pthread_mutex_unlock(&block->lock);
   bo_count(bo->dev, -1);
   cohmap_bo_unref(bo);
   return 0;
}

COHMAP_EXPORT void *
cohmap_bo_map(struct cohmap_bo *bo)
{
   if (!cohmap_bo_valid(bo)) {
      cohmap_errorf(-EBADF, "%p is not a live BO", (void *)bo);
      return NULL;
   }
   return bo->block->cpu + bo->offset;
}

COHMAP_EXPORT size_t
cohmap_bo_size(const struct cohmap_bo *bo)
{
   return cohmap_bo_valid(bo) ? bo->size : 0;
}

COHMAP_EXPORT uint32_t
cohmap_bo_flags(const struct cohmap_bo *bo)
{
   return cohmap_bo_valid(bo) ? bo->flags : 0;
}

COHMAP_EXPORT enum cohmap_method
cohmap_bo_method(const struct cohmap_bo *bo)
{
   if (!cohmap_bo_valid(bo) || !bo->block->region)
      return COHMAP_METHOD_AUTO;
   return cohmap_region_method(bo->block->region);
}

COHMAP_EXPORT int
cohmap_bo_get_stats(const struct cohmap_bo *bo, struct cohmap_bo_stats *out)
{
   if (!cohmap_bo_valid(bo) || !out)
      return cohmap_errorf(-EINVAL, "not a live BO, or out is NULL");
   pthread_mutex_lock(&bo->block->lock);
   *out = bo->stats;
   pthread_mutex_unlock(&bo->block->lock);
   return 0;
}

/* Adds n bytes at block offset off to the upload statistics of the BOs
 * they belong to.  Caller holds block->lock. */
static void
account_upload(struct cohmap_block *block, size_t off, size_t n)
{
   struct cohmap_slab *slab = block->slab;

   if (!slab) {
      if (block->bo)
         block->bo->stats.bytes_uploaded += n;
      return;
   }
   while (n) {
      size_t slot = off / slab->slot_size;
      size_t slot_end = (slot + 1) * slab->slot_size;
      size_t part = slot_end - off < n ? slot_end - off : n;
      if (slab->slots[slot])
         slab->slots[slot]->stats.bytes_uploaded += part;
      off += part;
      n -= part;
   }
}

int
cohmap_block_flush(struct cohmap_block *block)
{
   struct cohmap_device *dev = block->dev;
   struct cohmap_dirty d;

   /* A dedicated block whose BO the caller destroyed only lives on for
    * submissions still using its device memory: its contents no longer
    * matter, and a wrapped BO's memory is the caller's again -- it may
    * already be unmapped (found by fuzz-winsys: flush_all failed with
    * EFAULT on a destroyed userptr BO). */
   pthread_mutex_lock(&block->lock);
   if (block->bo && atomic_load(&block->bo->destroyed)) {
      pthread_mutex_unlock(&block->lock);
      return 0;
   }
   uint64_t t0 = cohmap_now_ns();
   int ret = cohmap_region_collect(block->region, 0, &d);
   atomic_fetch_add(&dev->collects, 1);
   atomic_fetch_add(&dev->tracking_ns, cohmap_now_ns() - t0);
   if (ret == 0 && d.count) {
      ret = dev->ops->upload(dev->backend, block->mem, d.ranges, d.count,
                             d.data, 0, 0);
      if (ret) {
         /* Collected means re-armed: these bytes must come again. */
         cohmap_region_requeue(block->region, d.ranges, d.count);
      } else {
         atomic_fetch_add(&dev->bytes_uploaded, d.bytes);
         for (size_t i = 0; i < d.count; i++)
            account_upload(block, d.ranges[i].offset, d.ranges[i].length);
      }
   }
   if (ret == 0)
      cohmap_verify_flush(block, &d);
   pthread_mutex_unlock(&block->lock);
   return ret;
}

/* Uploads ranges (block offsets) of a non-coherent block from its CPU
 * mapping. */
static int
block_upload(struct cohmap_bo *bo, const struct cohmap_ranges *ranges)
{
   struct cohmap_block *block = bo->block;
   struct cohmap_device *dev = bo->dev;

   if (!ranges->count)
      return 0;
   pthread_mutex_lock(&block->lock);
   int ret = dev->ops->upload(dev->backend, block->mem, ranges->v,
                              ranges->count, block->cpu, 0, 0);
   if (ret == 0) {
      size_t bytes = cohmap_ranges_bytes(ranges);
      atomic_fetch_add(&dev->bytes_uploaded, bytes);
      bo->stats.bytes_uploaded += bytes;
      cohmap_verify_explicit(bo, ranges);
   }
   pthread_mutex_unlock(&block->lock);
   return ret;
}

static bool
range_inside(size_t off, size_t size, size_t limit)
{
   return off <= limit && size <= limit - off;
}

COHMAP_EXPORT int
cohmap_bo_flush(struct cohmap_bo *bo, size_t offset, size_t size)
{
   if (!cohmap_bo_valid(bo))
      return cohmap_errorf(-EBADF, "%p is not a live BO", (void *)bo);
   if (!range_inside(offset, size, bo->size))
      return cohmap_errorf(-EINVAL, "flush of %zu bytes at %zu is outside "
                           "the BO (%zu bytes)", size, offset, bo->size);
   /* Coherent BOs are flushed by every submission, byte-exactly where
    * the GPU may write: uploading the range now would risk overwriting
    * GPU bytes not merged yet. */
   if (bo->block->region || size == 0)
      return 0;

   struct cohmap_ranges r;
   cohmap_ranges_init(&r);
   int ret = cohmap_ranges_add(&r, bo->offset + offset, size);
   if (ret == 0)
      ret = block_upload(bo, &r);
   else
      ret = cohmap_errorf(ret, "out of memory");
   cohmap_ranges_fini(&r);
   return ret;
}

COHMAP_EXPORT int
cohmap_bo_flush_box(struct cohmap_bo *bo, const struct cohmap_box *box)
{
   if (!cohmap_bo_valid(bo))
      return cohmap_errorf(-EBADF, "%p is not a live BO", (void *)bo);
   if (!box)
      return cohmap_errorf(-EINVAL, "box is NULL");

   size_t height = box->height ? box->height : 1;
   size_t depth = box->depth ? box->depth : 1;
   if (box->width == 0)
      return 0;
   if ((height > 1 && box->row_pitch < box->width) ||
       (depth > 1 && box->slice_pitch < (height - 1) * box->row_pitch +
                                            box->width))
      return cohmap_errorf(-EINVAL, "box pitches overlap: row pitch %zu, "
                           "slice pitch %zu for %zu x %zu bytes",
                           box->row_pitch, box->slice_pitch, box->width,
                           height);

   /* Last byte: offset + (depth-1)*slice + (height-1)*row + width, each
    * step checked for overflow. */
   size_t end = box->offset, step;
   if (__builtin_mul_overflow(depth - 1, box->slice_pitch, &step) ||
       __builtin_add_overflow(end, step, &end) ||
       __builtin_mul_overflow(height - 1, box->row_pitch, &step) ||
       __builtin_add_overflow(end, step, &end) ||
       __builtin_add_overflow(end, box->width, &end) || end > bo->size)
      return cohmap_errorf(-EINVAL, "box ends past the BO (%zu bytes)",
                           bo->size);
   if (bo->block->region)
      return 0;

   struct cohmap_ranges r;
   cohmap_ranges_init(&r);
   int ret = cohmap_ranges_reserve(&r, height * depth);
   for (size_t z = 0; z < depth && !ret; z++) {
      for (size_t y = 0; y < height && !ret; y++) {
         ret = cohmap_ranges_add(&r, bo->offset + box->offset +
                                        z * box->slice_pitch +
                                        y * box->row_pitch,
                                 box->width);
      }
   }
   if (ret == 0)
      ret = block_upload(bo, &r);
   else
      ret = cohmap_errorf(ret, "out of memory");
   cohmap_ranges_fini(&r);
   return ret;
}

int
cohmap_bo_readback(struct cohmap_bo *bo, const struct cohmap_range *ranges,
                   size_t count)
{
   struct cohmap_block *block = bo->block;
   struct cohmap_device *dev = bo->dev;
   size_t total = 0;

   for (size_t i = 0; i < count; i++)
      total += ranges[i].length;
   if (!total)
      return 0;
   if (block->region && !block->byte_exact)
      return 0; /* the GPU cannot have written it (checked at submit) */

   size_t chunk = total < READBACK_CHUNK ? total : READBACK_CHUNK;
   uint8_t *tmp = malloc(chunk);
   if (!tmp)
      return cohmap_errorf(-ENOMEM, "readback: out of memory");

   int ret = 0;
   size_t merged = 0, conflicts = 0, downloaded = 0;
   pthread_mutex_lock(&block->lock);
   if (atomic_load(&bo->destroyed)) {
      /* Writes to a released BO are dropped; a wrapped one's memory may
       * be gone (cohmap_bo_destroy()). */
      pthread_mutex_unlock(&block->lock);
      free(tmp);
      return 0;
   }
   uint64_t t0 = cohmap_now_ns();
   for (size_t i = 0; i < count && !ret; i++) {
      size_t off = bo->offset + ranges[i].offset;
      size_t left = ranges[i].length;
      while (left && !ret) {
         size_t n = left < chunk ? left : chunk;
         ret = dev->ops->download(dev->backend, block->mem, off, n, tmp);
         if (ret)
            break;
         downloaded += n;
         if (block->region)
            ret = cohmap_region_merge(block->region, off, tmp, n, &merged,
                                      &conflicts);
         else
            memcpy(block->cpu + off, tmp, n);
         off += n;
         left -= n;
      }
   }
   bo->stats.bytes_merged += merged;
   bo->stats.bytes_conflicted += conflicts;
   atomic_fetch_add(&dev->tracking_ns, cohmap_now_ns() - t0);
   pthread_mutex_unlock(&block->lock);

   atomic_fetch_add(&dev->bytes_downloaded, downloaded);
   atomic_fetch_add(&dev->bytes_merged, merged);
   atomic_fetch_add(&dev->bytes_conflicted, conflicts);
   free(tmp);
   return ret;
}

COHMAP_EXPORT int
cohmap_bo_invalidate(struct cohmap_bo *bo, size_t offset, size_t size)
{
   if (!cohmap_bo_valid(bo))
      return cohmap_errorf(-EBADF, "%p is not a live BO", (void *)bo);
   if (!range_inside(offset, size, bo->size))
      return cohmap_errorf(-EINVAL, "invalidate of %zu bytes at %zu is "
                           "outside the BO (%zu bytes)", size, offset,
                           bo->size);
   struct cohmap_range r = {offset, size};
   return cohmap_bo_readback(bo, &r, 1);
}
