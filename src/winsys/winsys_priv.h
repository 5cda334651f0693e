/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#ifndef COHMAP_WINSYS_PRIV_H
#define COHMAP_WINSYS_PRIV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cohmap/winsys.h"
#include "device/device.h"
#include "util/ranges.h"

/*
 * Objects and locks.
 *
 * A *block* is the unit of tracking and of device memory: one CPU range
 * (a cohmap region for coherent memory, plain memory otherwise) and one
 * device memory object of the same size, with identical offsets on both
 * sides.  A BO is a (block, offset, size); a large BO has a block of its
 * own, small coherent BOs share a *slab* block.
 *
 * Lock order (never the reverse):
 *
 *   dev->merge_lock → dev->lock → block->lock → region lock (cohmap_region_*)
 *
 * Nothing takes dev->lock while holding a block lock; submissions and
 * merges take block locks without dev->lock, cohmap_device_flush_all()
 * and freeing a slab slot take them under it.
 *
 * block->lock makes "collect + upload" and "download + merge" of one block
 * atomic with respect to each other, so the snapshot always equals what
 * the device was last given or last gave.
 *
 * Lifetimes: a BO is reference counted: one reference for the caller (until
 * cohmap_bo_destroy()), one per unmerged submission that lists it.  When
 * the last goes, its slab slot or block is freed; device memory is thus
 * never freed while a submission may still use it.
 */

#define COHMAP_BO_MAGIC 0x636f626fu /* "cobo" */

struct cohmap_slab;
/* COHMAP_DEBUG=verify state of a block (debug.c). */
struct cohmap_verify_block;

struct cohmap_block {
   struct cohmap_device *dev;
   struct cohmap_block *next, *prev; /* dev->blocks (coherent only) */

   struct cohmap_region *region; /* coherent blocks */
   uint8_t *cpu;                 /* the CPU mapping */
   bool cpu_owned;               /* munmap(cpu) when freed (non-coherent) */
   size_t size;
   struct cohmap_dev_mem *mem;
   bool byte_exact;              /* has a snapshot: may be merged into */

   pthread_mutex_t lock;
   struct cohmap_slab *slab;     /* NULL unless a slab's block */
   struct cohmap_bo *bo;         /* the BO of a dedicated block */
   /* COHMAP_DEBUG=verify, under lock; NULL until first needed. */
   struct cohmap_verify_block *verify;
};

struct cohmap_bo {
   uint32_t magic;
   struct cohmap_device *dev;
   struct cohmap_block *block;
   size_t offset, size;
   uint32_t flags;
   unsigned slot; /* slab slot */

   atomic_uint refs;
   /* The caller released it; read by retirement in other threads. */
   atomic_bool destroyed;

   /* Under block->lock. */
   struct cohmap_bo_stats stats;
   uint64_t verify_mismatches; /* COHMAP_DEBUG=verify reports about it */
};

struct cohmap_slab {
   struct cohmap_slab *next;
   struct cohmap_block *block;
   uint32_t class_flags; /* BO flags that select the slab */
   size_t slot_size;
   unsigned nslots, used;
   unsigned long *free_bits; /* 1 = free */
   unsigned long *ever_bits; /* 1 = used once: must be zeroed on reuse */
   struct cohmap_bo **slots; /* under block->lock: the BO in each slot */
};

/* What a submission may have written to one BO, merged at completion. */
struct cohmap_write_set {
   struct cohmap_bo *bo;
   struct cohmap_ranges ranges; /* BO offsets */
};

/* A submitted submission until its writes are merged. */
struct cohmap_inflight {
   struct cohmap_inflight *next;
   uint64_t seqno;
   struct cohmap_bo **bos; /* references, released at retirement */
   size_t bo_count;
   struct cohmap_write_set *writes;
   size_t write_count;
   void **payloads; /* cmd_write data */
   size_t payload_count;
   /* COHMAP_DEBUG=verify: the write sets are in their blocks' lists of
    * ranges the GPU may be writing (cohmap_verify_register()). */
   bool verify_registered;
};

/* COHMAP_DEBUG=stats: what one BO did, kept after it is freed (debug.c). */
struct cohmap_bo_record {
   const void *bo;
   size_t size;
   uint32_t flags;
   bool in_slab;
   enum cohmap_method method; /* its block's when it was freed */
   struct cohmap_bo_stats stats;
   uint64_t verify_mismatches;
   bool has_region; /* a dedicated block: region holds its tracking */
   struct cohmap_region_stats region;
};

/* The most active BOs are listed one per line; the others are summed. */
#define COHMAP_STATS_TOP_BOS 16

struct cohmap_stats_log {
   uint64_t bos, coherent_bos, slab_bos, slabs;
   /* Tracking figures of every freed block's region, summed. */
   struct cohmap_region_stats regions;
   struct cohmap_bo_record top[COHMAP_STATS_TOP_BOS];
   size_t top_count;
   uint64_t rest_count;
   struct cohmap_bo_stats rest;
   /* The method of the last slab freed (slabs are not listed). */
   enum cohmap_method slab_method;
};

struct cohmap_device {
   const struct cohmap_device_ops *ops;
   struct cohmap_backend *backend;
   struct cohmap_context *ctx;
   bool own_ctx;
   enum cohmap_method method;
   size_t slab_threshold, slab_size;

   pthread_mutex_t lock; /* leaf: everything below but stats */
   struct cohmap_block *blocks; /* coherent blocks, for flush_all */
   struct cohmap_slab *slabs;
   uint64_t live_bos, live_fences, live_slabs;
   struct cohmap_inflight *inflight_head, **inflight_tail;

   /* Serializes retirement (merges run in seqno order). */
   pthread_mutex_t merge_lock;
   /* Highest seqno retired (merged); under merge_lock. */
   uint64_t retired;

   /* Statistics, atomics. */
   atomic_ullong submissions, bytes_uploaded, bytes_downloaded;
   atomic_ullong bytes_merged, bytes_conflicted, collects, tracking_ns;

   /* COHMAP_DEBUG flags of the context, read at creation. */
   bool verify;      /* compare flushed BOs with the device (debug.c) */
   bool print_stats; /* print stats_log and totals at destroy */
   atomic_ullong verify_checks, verify_mismatches;
   atomic_uint verify_lines; /* printed, to cap a flood */
   struct cohmap_stats_log stats_log; /* under lock */
};

struct cohmap_fence {
   struct cohmap_device *dev;
   uint64_t seqno;
};

/* bo.c */
bool cohmap_bo_valid(const struct cohmap_bo *bo);
void cohmap_bo_ref(struct cohmap_bo *bo);
void cohmap_bo_unref(struct cohmap_bo *bo);
/* Collects the CPU writes of a coherent block and uploads them. */
int cohmap_block_flush(struct cohmap_block *block);
/* Downloads ranges (BO offsets) of bo and merges them (coherent) or
 * copies them into the mapping (non-coherent). */
int cohmap_bo_readback(struct cohmap_bo *bo, const struct cohmap_range *r,
                       size_t count);

/* debug.c: COHMAP_DEBUG=verify.  The hooks do nothing unless dev->verify.
 *
 * Under block->lock, after a successful collect + upload of a coherent
 * block (d is what the collect returned). */
void cohmap_verify_flush(struct cohmap_block *block,
                         const struct cohmap_dirty *d);
/* Under block->lock, after an explicit upload of ranges (block offsets)
 * of a non-coherent BO. */
void cohmap_verify_explicit(struct cohmap_bo *bo,
                            const struct cohmap_ranges *ranges);
/* The ranges f's commands may write are added to their blocks before its
 * upload and removed when f is freed (retired or refused): verify does
 * not compare bytes the GPU may be writing.  -ENOMEM: nothing added. */
int cohmap_verify_register(struct cohmap_inflight *f);
void cohmap_verify_unregister(struct cohmap_inflight *f);
void cohmap_verify_block_free(struct cohmap_block *block);

/* debug.c: COHMAP_DEBUG=stats.  Called before a BO's block or slab slot
 * is released, and before a slab's region is destroyed. */
void cohmap_stats_bo_freed(struct cohmap_bo *bo);
void cohmap_stats_slab_freed(struct cohmap_slab *slab);
/* At cohmap_device_destroy(), once every BO is gone. */
void cohmap_stats_print(struct cohmap_device *dev);

/* submit.c */
/* Merges the writes of every completed submission, in order, and releases
 * them.  Called wherever the host observes completion. */
int cohmap_device_retire(struct cohmap_device *dev);
void cohmap_inflight_free(struct cohmap_inflight *f);

#endif
