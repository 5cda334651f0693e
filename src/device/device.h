/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: device backends
 *
 * What the winsys needs from a GPU: memory objects it cannot see through
 * any CPU mapping, byte-range uploads and downloads, in-order execution of
 * command streams, and fences as sequence numbers.  A backend implements
 * struct cohmap_device_ops; the winsys (src/winsys) does everything else —
 * tracking, validation, merging — so a backend stays small.
 *
 * Rules every backend follows:
 *
 *  1. Submissions execute in submission order; seqno N completing implies
 *     every seqno < N completed.  Seqnos start at 1.
 *  2. upload() and download() are synchronous: the bytes are in device
 *     memory (or in dst) when they return.  They may run while submissions
 *     execute; a command never sees a half-applied upload call (the sim
 *     serializes transfers with commands), but an upload may land between
 *     two commands of one submission.  An upload with zero ranges is a
 *     no-op that still pays the link latency.
 *  3. Commands were validated by the winsys (ranges inside their memory
 *     objects, alignment): a backend may assume it, but must never crash
 *     on a memory object freed by the winsys after the last submission
 *     using it completed.
 *  4. All hooks are thread-safe.
 *  5. Errors: submit() refuses an invalid command stream with -EINVAL
 *     (nothing queued, no seqno used); mem_alloc() of 0 bytes is -EINVAL;
 *     anything may fail with -ENOMEM.  There is no device-lost state yet:
 *     a real backend will need one.
 */

#ifndef COHMAP_DEVICE_H
#define COHMAP_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "cohmap/cohmap.h"

struct cohmap_backend;
struct cohmap_dev_mem;

enum cohmap_cmd_type {
   COHMAP_CMD_COPY,
   COHMAP_CMD_FILL,
   COHMAP_CMD_WRITE,
   COHMAP_CMD_CHECKSUM,
   COHMAP_CMD_COMPUTE,
};

/*
 * A command in device terms: memory objects and offsets into them.
 *
 *  - COPY: size bytes src → dst (memmove: the ranges may overlap).
 *  - FILL: value repeated over size bytes of dst (offset, size % 4 == 0).
 *  - WRITE: size bytes of data → dst.
 *  - CHECKSUM: cohmap_checksum() of size bytes of src, written as a
 *    little-endian uint64_t at dst_offset (8 bytes written).
 *  - COMPUTE: op over size / 4 32-bit little-endian words, src → dst
 *    (offsets and size % 4 == 0; the ranges are identical or disjoint).
 *
 * Fields a type does not use (src for FILL and WRITE, data except for
 * WRITE) are meaningless and must not be read.
 */
struct cohmap_dev_cmd {
   enum cohmap_cmd_type type;
   struct cohmap_dev_mem *dst, *src;
   size_t dst_offset, src_offset;
   size_t size;        /* bytes written, checksum: bytes read */
   uint32_t value;     /* fill pattern, compute operand */
   uint32_t op;        /* enum cohmap_compute_op */
   const void *data;   /* write: size bytes, owned by the caller until the
                        * submission completes */
};

struct cohmap_backend_stats {
   uint64_t uploads, downloads;
   uint64_t bytes_uploaded, bytes_downloaded;
   uint64_t commands;
};

struct cohmap_device_ops {
   const char *name;

   /* Creates the backend; reads its own environment knobs. */
   int (*create)(struct cohmap_backend **out);
   /* Waits for all work, frees everything.  Never fails. */
   void (*destroy)(struct cohmap_backend *b);

   /* Zero-filled device memory of size bytes. */
   int (*mem_alloc)(struct cohmap_backend *b, size_t size,
                    struct cohmap_dev_mem **out);
   /* Only after the last submission using mem completed. */
   void (*mem_free)(struct cohmap_backend *b, struct cohmap_dev_mem *mem);

   /* Copies src[ranges[i].offset + src_bias, +length) to
    * mem[ranges[i].offset + dst_bias, +length) for each range. */
   int (*upload)(struct cohmap_backend *b, struct cohmap_dev_mem *mem,
                 const struct cohmap_range *ranges, size_t count,
                 const void *src, ptrdiff_t src_bias, ptrdiff_t dst_bias);
   /* Copies mem[offset, offset + size) to dst. */
   int (*download)(struct cohmap_backend *b, struct cohmap_dev_mem *mem,
                   size_t offset, size_t size, void *dst);

   /* Queues cmds (copied; cmd data must stay valid until completion) and
    * returns the submission's seqno. */
   int (*submit)(struct cohmap_backend *b, const struct cohmap_dev_cmd *cmds,
                 size_t count, uint64_t *seqno);
   /* The highest completed seqno. */
   uint64_t (*completed)(struct cohmap_backend *b);
   /* Waits until seqno completed: 0, or -ETIME after timeout_ns
    * (UINT64_MAX: no timeout).  Seqno 0 is always complete; one never
    * submitted is -EINVAL. */
   int (*wait)(struct cohmap_backend *b, uint64_t seqno, uint64_t timeout_ns);

   void (*get_stats)(struct cohmap_backend *b,
                     struct cohmap_backend_stats *out);
};

extern const struct cohmap_device_ops cohmap_device_sim_ops;

/* The backend called name, or NULL. */
const struct cohmap_device_ops *cohmap_device_ops_find(const char *name);

#endif
