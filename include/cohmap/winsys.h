/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: cohmap winsys API
 *
 * A Mesa-style window-system layer: buffer objects (BOs) with persistent
 * CPU mappings, submissions with a buffer list, and fences, on a device
 * that is *not* cache-coherent with the CPU.  cohmap makes the mappings of
 * COHMAP_BO_COHERENT buffers behave as if the device were coherent:
 *
 *  - CPU → device: every submission uploads the bytes the CPU wrote to the
 *    coherent BOs it references (its validation list) before its commands
 *    run, found by the tracking methods of cohmap.h; tracking is re-armed.
 *  - device → CPU: when the host observes that a submission completed
 *    (cohmap_fence_wait() or cohmap_fence_poll() returning 0, or
 *    cohmap_device_wait_idle()), what its commands wrote to coherent BOs is
 *    merged into their mappings before the call returns (eager readback;
 *    docs/winsys.md explains why not lazy).
 *
 * The merge is byte-exact, three-way (snapshot of the last synchronized
 * state, CPU copy, device copy): a byte the GPU changed is copied into the
 * mapping only if the CPU did not change it since the last upload; a byte
 * both changed keeps the CPU's value (which the next submission uploads).
 * So a CPU store is never overwritten by the merge, and a later upload
 * never overwrites the GPU's bytes with stale CPU data.  BOs the GPU may
 * write (COHMAP_BO_GPU_WRITE) keep a snapshot for this; BOs it only reads
 * are uploaded in whole pages.
 *
 * Non-coherent BOs are synchronized only by the caller:
 * cohmap_bo_flush() / cohmap_bo_flush_box() before a submission reads what
 * the CPU wrote, cohmap_bo_invalidate() after a fence to see what the
 * device wrote.  A flush of a box uploads exactly the box's bytes.
 *
 * Device backends: "sim" (the default) is an embedded simulated GPU whose
 * memory no CPU mapping aliases and which executes submissions on its own
 * thread; it only ever reads its own memory, so a missed upload shows as a
 * wrong result.  Its COHMAP_SIM_* knobs (docs/envvars.md) model a slow link.
 *
 * Errors: 0 or a negative errno value, cohmap_error_message() says more.
 *
 * Thread safety (the contract of Mesa's winsys headers, made explicit):
 *
 *  - A device may be used from any number of threads.  Creating and
 *    destroying BOs, submitting, and waiting on fences are thread-safe.
 *  - BO mappings may be written and read by any thread at any time; the
 *    guarantees above hold for stores that complete before the submission
 *    is submitted (cohmap_submit_end()) and for loads that start after the
 *    fence wait returns.  A store that races with a submit is uploaded by
 *    it or by the next submission that references the BO.
 *  - A byte written by both the CPU and a submission that has not been
 *    observed complete is a data race of the application.  The CPU's
 *    value wins if its store was not uploaded yet when the merge runs; if
 *    a later submission uploaded it before the GPU wrote the byte, the
 *    GPU's write came last and wins, as on coherent hardware.  Either way
 *    the mapping and the device agree from the next submission on.
 *  - A struct cohmap_submit belongs to one thread at a time.
 *  - cohmap_bo_destroy() must not race with other calls on the same BO; it
 *    may be called while unfinished submissions use the BO (the device
 *    storage is released when they complete; their writes to it are
 *    dropped).  The mapping is invalid once it returns.
 *  - cohmap_device_destroy() waits for all submissions, must not race with
 *    any other call on the device, and requires every BO to be destroyed
 *    (-EBUSY otherwise).
 */

#ifndef COHMAP_WINSYS_H
#define COHMAP_WINSYS_H

#include <stddef.h>
#include <stdint.h>

#include "cohmap/cohmap.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cohmap_device;
struct cohmap_bo;
struct cohmap_submit;
struct cohmap_fence;

struct cohmap_device_options {
   /* "sim" (NULL means "sim"). */
   const char *backend;
   /* Tracking method for coherent BOs; COHMAP_METHOD_AUTO lets cohmap
    * choose (and COHMAP_METHOD in the environment override it). */
   enum cohmap_method method;
   /* BOs smaller than this are sub-allocated from shared slabs (0: the
    * default, 32 KiB; 1: no slabs). */
   size_t slab_threshold;
   /* Size of one slab (0: the default, 2 MiB). */
   size_t slab_size;
   /* Context to track with; NULL creates one owned by the device. */
   struct cohmap_context *context;
   /* Options for that context when it is created by the device (NULL:
    * defaults). */
   const struct cohmap_context_options *context_options;
};

COHMAP_EXPORT void
cohmap_device_options_init(struct cohmap_device_options *opts);

/* opts may be NULL for the defaults. */
COHMAP_EXPORT int
cohmap_device_create(const struct cohmap_device_options *opts,
                     struct cohmap_device **out);

/* Waits for every submission, then frees the device.  NULL is accepted.
 * -EBUSY (and nothing freed) while BOs are alive. */
COHMAP_EXPORT int
cohmap_device_destroy(struct cohmap_device *dev);

/* Waits until every submission completed and merges their writes. */
COHMAP_EXPORT int
cohmap_device_wait_idle(struct cohmap_device *dev);

/* Uploads the CPU writes of every mapped coherent BO, for callers that do
 * not know which BOs the next submission uses (the Vulkan layer).  A
 * submission does the same for its own BOs. */
COHMAP_EXPORT int
cohmap_device_flush_all(struct cohmap_device *dev);

struct cohmap_device_stats {
   uint64_t submissions;
   /* Submissions the device has finished executing, whether or not the
    * host has observed them yet (observing is what merges their writes;
    * see cohmap_fence_poll()). */
   uint64_t completed;
   uint64_t bytes_uploaded;    /* CPU → device, tracked and explicit */
   uint64_t bytes_downloaded;  /* device → CPU */
   uint64_t bytes_merged;      /* GPU bytes copied into mappings */
   uint64_t bytes_conflicted;  /* written by both; the CPU's value kept */
   uint64_t collects;          /* tracking collects */
   uint64_t tracking_ns;       /* time in collects and merges */
   uint64_t bos;               /* live BOs */
   uint64_t slabs;             /* live slabs */
   /* COHMAP_DEBUG=verify (docs/envvars.md): BO comparisons made after
    * flushes, and those that found bytes the device does not have. */
   uint64_t verify_checks;
   uint64_t verify_mismatches;
};

COHMAP_EXPORT int
cohmap_device_get_stats(struct cohmap_device *dev,
                        struct cohmap_device_stats *out);

/* BO flags. */
enum cohmap_bo_flags {
   /* The mapping stays valid while the device uses the BO (all cohmap
    * mappings are persistent; accepted for API familiarity). */
   COHMAP_BO_PERSISTENT = 1u << 0,
   /* CPU writes become visible to submissions without explicit flushes,
    * and GPU writes to the mapping once the fence is observed. */
   COHMAP_BO_COHERENT = 1u << 1,
   /* Submissions may write the BO (commands writing a BO without this
    * flag are refused at submit). */
   COHMAP_BO_GPU_WRITE = 1u << 2,
   /* CPU-cached mapping.  The sim's mappings are always cached; other
    * backends may map write-combined without it. */
   COHMAP_BO_CPU_CACHED = 1u << 3,
   /* The mapping is only ever written by CPU stores, never by the kernel
    * (read(2) into it) or other processes: tracking may use `fault`,
    * which is not transparent to kernel writes. */
   COHMAP_BO_CPU_STORES_ONLY = 1u << 4,
};

/* Creates a BO of size bytes (> 0), zero-filled on both sides. */
COHMAP_EXPORT int
cohmap_bo_create(struct cohmap_device *dev, size_t size, uint32_t flags,
                 struct cohmap_bo **out);

/* A BO whose CPU side is caller memory (userptr): ptr and size page-aligned,
 * the memory mapped until cohmap_bo_destroy().  Its current contents are
 * uploaded by the first submission that uses it (coherent) or by an
 * explicit flush. */
COHMAP_EXPORT int
cohmap_bo_wrap(struct cohmap_device *dev, void *ptr, size_t size,
               uint32_t flags, struct cohmap_bo **out);

/* Releases the BO; NULL is accepted; see the thread-safety notes above. */
COHMAP_EXPORT int
cohmap_bo_destroy(struct cohmap_bo *bo);

/* The CPU mapping: one pointer for the BO's life. */
COHMAP_EXPORT void *
cohmap_bo_map(struct cohmap_bo *bo);

COHMAP_EXPORT size_t
cohmap_bo_size(const struct cohmap_bo *bo);

COHMAP_EXPORT uint32_t
cohmap_bo_flags(const struct cohmap_bo *bo);

/* The method tracking a coherent BO (a slab's for sub-allocated BOs), or
 * COHMAP_METHOD_AUTO for non-coherent ones. */
COHMAP_EXPORT enum cohmap_method
cohmap_bo_method(const struct cohmap_bo *bo);

/* A 3D box of bytes: depth slices of height rows of width bytes. */
struct cohmap_box {
   size_t offset;      /* of the first byte */
   size_t row_pitch;   /* bytes between rows (>= width when height > 1) */
   size_t slice_pitch; /* bytes between slices (>= rows when depth > 1) */
   size_t width;       /* bytes per row */
   size_t height;      /* rows (0 counts as 1) */
   size_t depth;       /* slices (0 counts as 1) */
};

/* Makes CPU writes to [offset, offset + size) visible to later
 * submissions.  Needed for non-coherent BOs; harmless on coherent ones. */
COHMAP_EXPORT int
cohmap_bo_flush(struct cohmap_bo *bo, size_t offset, size_t size);

/* The same for a box: exactly the box's bytes are uploaded. */
COHMAP_EXPORT int
cohmap_bo_flush_box(struct cohmap_bo *bo, const struct cohmap_box *box);

/* Makes device writes to [offset, offset + size) visible in the mapping of
 * a non-coherent BO (overwriting those CPU bytes).  Call after the fence
 * of the writing submission.  On a coherent BO this merges instead. */
COHMAP_EXPORT int
cohmap_bo_invalidate(struct cohmap_bo *bo, size_t offset, size_t size);

struct cohmap_bo_stats {
   uint64_t submissions;      /* submissions that referenced it */
   uint64_t bytes_uploaded;
   uint64_t bytes_merged;
   uint64_t bytes_conflicted;
};

COHMAP_EXPORT int
cohmap_bo_get_stats(const struct cohmap_bo *bo, struct cohmap_bo_stats *out);

/* Submissions. */
enum cohmap_access {
   COHMAP_ACCESS_READ = 1u << 0,
   COHMAP_ACCESS_WRITE = 1u << 1,
};

COHMAP_EXPORT int
cohmap_submit_begin(struct cohmap_device *dev, struct cohmap_submit **out);

/* Adds bo to the buffer list; adding it again ORs the access. */
COHMAP_EXPORT int
cohmap_submit_add_bo(struct cohmap_submit *s, struct cohmap_bo *bo,
                     uint32_t access);

/* Commands.  They are checked when recorded where possible and always at
 * cohmap_submit_end(): every BO a command touches must be in the list with
 * the access it needs, every range inside its BO. */
COHMAP_EXPORT int
cohmap_cmd_copy(struct cohmap_submit *s, struct cohmap_bo *dst,
                size_t dst_offset, struct cohmap_bo *src, size_t src_offset,
                size_t size);

/* Fills size bytes with a repeated 32-bit little-endian pattern (offset
 * and size multiples of 4, like vkCmdFillBuffer). */
COHMAP_EXPORT int
cohmap_cmd_fill(struct cohmap_submit *s, struct cohmap_bo *dst,
                size_t offset, size_t size, uint32_t pattern);

/* Writes size bytes (at most 65536) copied from data now (like
 * vkCmdUpdateBuffer, any alignment). */
COHMAP_EXPORT int
cohmap_cmd_write(struct cohmap_submit *s, struct cohmap_bo *dst,
                 size_t offset, const void *data, size_t size);

/* Writes cohmap_checksum() of src's range as a little-endian uint64_t at
 * dst_offset. */
COHMAP_EXPORT int
cohmap_cmd_checksum(struct cohmap_submit *s, struct cohmap_bo *dst,
                    size_t dst_offset, struct cohmap_bo *src,
                    size_t src_offset, size_t size);

enum cohmap_compute_op {
   COHMAP_COMPUTE_ADD32, /* dst[i] = src[i] + operand, 32-bit words */
   COHMAP_COMPUTE_XOR32, /* dst[i] = src[i] ^ operand */
};

/* A compute kernel over 32-bit little-endian words (offsets and size
 * multiples of 4).  src and dst ranges may be the same, not partly
 * overlap. */
COHMAP_EXPORT int
cohmap_cmd_compute(struct cohmap_submit *s, enum cohmap_compute_op op,
                   struct cohmap_bo *dst, size_t dst_offset,
                   struct cohmap_bo *src, size_t src_offset, size_t size,
                   uint32_t operand);

/* Validates, uploads the CPU writes of the listed coherent BOs, queues the
 * commands and frees s (on every path).  fence may be NULL.  On error
 * nothing was queued and no BO changed. */
COHMAP_EXPORT int
cohmap_submit_end(struct cohmap_submit *s, struct cohmap_fence **fence);

/* Frees a submission without submitting it.  NULL is accepted. */
COHMAP_EXPORT void
cohmap_submit_abort(struct cohmap_submit *s);

/* 0 once the submission completed (its writes are then merged), -EBUSY
 * while it runs. */
COHMAP_EXPORT int
cohmap_fence_poll(struct cohmap_fence *fence);

/* Waits up to timeout_ns (UINT64_MAX: forever): 0 when complete (writes
 * merged), -ETIME on timeout. */
COHMAP_EXPORT int
cohmap_fence_wait(struct cohmap_fence *fence, uint64_t timeout_ns);

/* NULL is accepted.  Destroying an unsignalled fence does not cancel the
 * submission. */
COHMAP_EXPORT void
cohmap_fence_destroy(struct cohmap_fence *fence);

/* The checksum of cohmap_cmd_checksum(): 64-bit FNV-1a. */
COHMAP_EXPORT uint64_t
cohmap_checksum(const void *data, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* COHMAP_WINSYS_H */
