/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: winsys devices
 *
 * A device ties a backend (src/device) to a tracking context.  It owns the
 * list of coherent blocks (for cohmap_device_flush_all()), the slabs, and
 * the queue of submitted-but-unmerged submissions (submit.c).
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "track/options.h"
#include "track/track_priv.h"
#include "util/log.h"
#include "winsys/winsys_priv.h"

#define DEFAULT_SLAB_THRESHOLD (32u * 1024)
#define DEFAULT_SLAB_SIZE (2u * 1024 * 1024)
/* One slab must hold at least two slots of the largest class, or slabs
 * save nothing. */
#define MIN_SLAB_SLOTS 2

COHMAP_EXPORT void
cohmap_device_options_init(struct cohmap_device_options *opts)
{
   if (!opts)
      return;
   memset(opts, 0, sizeof(*opts));
   opts->backend = "sim";
   opts->method = COHMAP_METHOD_AUTO;
}

static bool
is_pow2(size_t x)
{
   return x && !(x & (x - 1));
}

COHMAP_EXPORT int
cohmap_device_create(const struct cohmap_device_options *opts,
                     struct cohmap_device **out)
{
   struct cohmap_device_options defaults;
   int ret;

   if (!out)
      return cohmap_errorf(-EINVAL, "out is NULL");
   *out = NULL;
   if (!opts) {
      cohmap_device_options_init(&defaults);
      opts = &defaults;
   }

   const char *name = opts->backend ? opts->backend : "sim";
   const struct cohmap_device_ops *ops = cohmap_device_ops_find(name);
   if (!ops)
      return cohmap_errorf(-ENOENT, "unknown device backend '%s' "
                           "(available: sim)", name);
   if ((unsigned)opts->method >= COHMAP_METHOD_COUNT)
      return cohmap_errorf(-EINVAL, "unknown method %d", (int)opts->method);

   size_t slab_size = opts->slab_size ? opts->slab_size : DEFAULT_SLAB_SIZE;
   size_t threshold =
      opts->slab_threshold ? opts->slab_threshold : DEFAULT_SLAB_THRESHOLD;
   size_t page = (size_t)sysconf(_SC_PAGESIZE);
   if (!is_pow2(slab_size) || slab_size < page)
      return cohmap_errorf(-EINVAL, "slab_size %zu must be a power of two "
                           "of at least a page (%zu)", slab_size, page);
   if (threshold > slab_size / MIN_SLAB_SLOTS)
      return cohmap_errorf(-EINVAL, "slab_threshold %zu must be at most "
                           "slab_size / %d (%zu)", threshold, MIN_SLAB_SLOTS,
                           slab_size / MIN_SLAB_SLOTS);

   struct cohmap_device *dev = calloc(1, sizeof(*dev));
   if (!dev)
      return cohmap_errorf(-ENOMEM, "out of memory");
   dev->ops = ops;
   dev->method = opts->method;
   dev->slab_threshold = threshold;
   dev->slab_size = slab_size;
   dev->inflight_tail = &dev->inflight_head;
   pthread_mutex_init(&dev->lock, NULL);
   pthread_mutex_init(&dev->merge_lock, NULL);

   if (opts->context) {
      dev->ctx = opts->context;
   } else {
      ret = cohmap_context_create(opts->context_options, &dev->ctx);
      if (ret)
         goto fail_ctx;
      dev->own_ctx = true;
   }
   /* The sim reads its knobs next, whatever the context did. */
   cohmap_options_print_once();

   dev->verify = dev->ctx->debug & COHMAP_DEBUG_VERIFY;
   dev->print_stats = dev->ctx->debug & COHMAP_DEBUG_STATS;
   /* The BO and total lines (debug.c) carry what the regions' own stats
    * lines would say: a context of the device's own prints none.  A
    * caller's context keeps them (it may have regions of its own). */
   if (dev->own_ctx)
      dev->ctx->debug &= ~(uint64_t)COHMAP_DEBUG_STATS;

   ret = ops->create(&dev->backend);
   if (ret)
      goto fail_backend;

   cohmap_info("device %p: backend %s, method %s, slabs for BOs under %zu "
               "bytes", (void *)dev, ops->name,
               cohmap_method_name(dev->method), threshold);
   *out = dev;
   return 0;

fail_backend:
   if (dev->own_ctx)
      cohmap_context_destroy(dev->ctx);
fail_ctx:
   pthread_mutex_destroy(&dev->merge_lock);
   pthread_mutex_destroy(&dev->lock);
   free(dev);
   return ret;
}

COHMAP_EXPORT int
cohmap_device_wait_idle(struct cohmap_device *dev)
{
   if (!dev)
      return cohmap_errorf(-EINVAL, "device is NULL");

   pthread_mutex_lock(&dev->lock);
   uint64_t last = 0;
   for (struct cohmap_inflight *f = dev->inflight_head; f; f = f->next)
      last = f->seqno;
   pthread_mutex_unlock(&dev->lock);

   if (last) {
      int ret = dev->ops->wait(dev->backend, last, UINT64_MAX);
      if (ret)
         return ret;
   }
   return cohmap_device_retire(dev);
}

COHMAP_EXPORT int
cohmap_device_destroy(struct cohmap_device *dev)
{
   if (!dev)
      return 0;

   /* Submissions hold BO references: retire them first, so that only the
    * caller's own BOs count as alive. */
   int ret = cohmap_device_wait_idle(dev);
   if (ret)
      return ret;

   pthread_mutex_lock(&dev->lock);
   uint64_t bos = dev->live_bos, fences = dev->live_fences;
   pthread_mutex_unlock(&dev->lock);
   if (bos || fences)
      return cohmap_errorf(-EBUSY, "device %p still has %llu BOs and %llu "
                           "fences: destroy them first", (void *)dev,
                           (unsigned long long)bos,
                           (unsigned long long)fences);

   /* Empty slabs are kept for reuse; free them now. */
   while (dev->slabs) {
      struct cohmap_slab *slab = dev->slabs;
      dev->slabs = slab->next;
      struct cohmap_block *block = slab->block;
      cohmap_stats_slab_freed(slab);
      cohmap_region_destroy(block->region);
      dev->ops->mem_free(dev->backend, block->mem);
      cohmap_verify_block_free(block);
      pthread_mutex_destroy(&block->lock);
      free(block);
      free(slab->free_bits);
      free(slab->ever_bits);
      free(slab->slots);
      free(slab);
   }

   cohmap_stats_print(dev);
   dev->ops->destroy(dev->backend);
   if (dev->own_ctx)
      cohmap_context_destroy(dev->ctx);
   pthread_mutex_destroy(&dev->merge_lock);
   pthread_mutex_destroy(&dev->lock);
   free(dev);
   return 0;
}

COHMAP_EXPORT int
cohmap_device_flush_all(struct cohmap_device *dev)
{
   if (!dev)
      return cohmap_errorf(-EINVAL, "device is NULL");

   /* Blocks are unlinked under dev->lock before they are freed, so
    * holding it keeps every listed block alive while it is flushed.  This
    * is the slow path for callers that do not know their references;
    * submissions flush only their own blocks, without dev->lock. */
   pthread_mutex_lock(&dev->lock);
   size_t n = 0;
   for (struct cohmap_block *b = dev->blocks; b; b = b->next)
      n++;
   struct cohmap_block **list = n ? malloc(n * sizeof(*list)) : NULL;
   if (n && !list) {
      pthread_mutex_unlock(&dev->lock);
      return cohmap_errorf(-ENOMEM, "out of memory");
   }
   n = 0;
   for (struct cohmap_block *b = dev->blocks; b; b = b->next)
      list[n++] = b;
   int ret = 0;
   for (size_t i = 0; i < n; i++) {
      int r = cohmap_block_flush(list[i]);
      if (r && !ret)
         ret = r;
   }
   pthread_mutex_unlock(&dev->lock);
   free(list);
   return ret;
}

COHMAP_EXPORT int
cohmap_device_get_stats(struct cohmap_device *dev,
                        struct cohmap_device_stats *out)
{
   if (!dev || !out)
      return cohmap_errorf(-EINVAL, "device or out is NULL");
   memset(out, 0, sizeof(*out));
   out->submissions = atomic_load(&dev->submissions);
   out->completed = dev->ops->completed(dev->backend);
   out->bytes_uploaded = atomic_load(&dev->bytes_uploaded);
   out->bytes_downloaded = atomic_load(&dev->bytes_downloaded);
   out->bytes_merged = atomic_load(&dev->bytes_merged);
   out->bytes_conflicted = atomic_load(&dev->bytes_conflicted);
   out->collects = atomic_load(&dev->collects);
   out->tracking_ns = atomic_load(&dev->tracking_ns);
   out->verify_checks = atomic_load(&dev->verify_checks);
   out->verify_mismatches = atomic_load(&dev->verify_mismatches);
   pthread_mutex_lock(&dev->lock);
   out->bos = dev->live_bos;
   out->slabs = dev->live_slabs;
   pthread_mutex_unlock(&dev->lock);
   return 0;
}
