/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: cohmap tracking API
 *
 * cohmap finds out which bytes of a CPU mapping were written since the last
 * time it was asked, so that exactly those bytes can be made visible to a
 * device that is not cache-coherent with the CPU.
 *
 * Objects:
 *
 *  - A *context* probes the kernel once (userfaultfd write-protect,
 *    PAGEMAP_SCAN, signal handling) and owns the shared file descriptors.
 *  - A *region* is a range of page-aligned memory whose writes are tracked:
 *    either memory cohmap allocates (cohmap_region_create()) or memory the
 *    caller already owns (cohmap_region_wrap(), like a userptr BO).
 *  - cohmap_region_collect() returns the byte ranges written since the
 *    previous collect (or since the region was created), sorted and
 *    coalesced, and re-arms tracking.
 *
 * Methods (enum cohmap_method), selectable per region, or chosen per region
 * and changed over time by the adaptive policy (COHMAP_METHOD_AUTO, see
 * docs/tracking.md, "Policy"):
 *
 *  - scan:    userfaultfd asynchronous write-protect + PAGEMAP_SCAN.  Page
 *             granular.  Sees kernel writes (read(2) into the buffer).
 *  - fault:   mprotect(PROT_READ) + a SIGSEGV handler.  Page granular (may
 *             over-report a few pages after sequential writes, see
 *             docs/tracking.md).  Costs nothing on an idle region, but is
 *             *not transparent*: a kernel write into a protected page, e.g.
 *             read(2) into the buffer, fails with EFAULT instead of faulting.
 *             Only choose it for memory written by CPU stores alone.
 *  - compare: a snapshot of the last collected state; reports what
 *             differs from it: exact byte runs with BYTE_EXACT, otherwise
 *             the aligned 64-byte chunks that hold a changed byte (each
 *             range costs an upload call, and exact boundaries a branch
 *             per byte).  Sees writes from any source.
 *  - full:    reports the whole region every time.
 *
 * COHMAP_REGION_BYTE_EXACT adds a snapshot to any method and narrows the
 * pages the method reports to the exact bytes that differ from it.
 *
 * Error convention: functions return 0 or a negative errno value and never
 * abort.  cohmap_error_message() describes the last error of the calling
 * thread.
 *
 * Thread safety:
 *
 *  - Stores that race with cohmap_region_create()/cohmap_region_wrap()
 *    itself may or may not be reported: start writing after it returned.
 *  - Tracked memory may be written by any thread at any time, including
 *    while another thread collects.  No write is lost: a store that
 *    completed before cohmap_region_collect() was called is reported by
 *    that collect; a store that completes after the collect returned is
 *    reported by a later one.  Stores racing with a collect are reported by
 *    that collect or the next one.
 *  - All functions taking a region may be called from any thread; calls on
 *    the same region are serialized internally.  cohmap_region_destroy()
 *    must not race with other calls on the same region.
 *  - Contexts may be used from any thread.  cohmap_context_destroy() must
 *    not race with other calls on the same context.
 */

#ifndef COHMAP_H
#define COHMAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define COHMAP_EXPORT __attribute__((visibility("default")))
#else
#define COHMAP_EXPORT
#endif

#define COHMAP_VERSION_MAJOR 0
#define COHMAP_VERSION_MINOR 1
#define COHMAP_VERSION_MICRO 0

struct cohmap_context;
struct cohmap_region;

enum cohmap_method {
   /* Let cohmap choose, per region and again at every collect, from a
    * cost model calibrated on this machine and the region's recent
    * dirtiness: among scan, compare and full, and fault only where that
    * cannot break kernel writes (COHMAP_REGION_CPU_STORES_ONLY,
    * COHMAP_CONTEXT_AUTO_FAULT).  A context whose default method is a
    * fixed one gives AUTO regions that method instead. */
   COHMAP_METHOD_AUTO = 0,
   COHMAP_METHOD_SCAN = 1,
   COHMAP_METHOD_FAULT = 2,
   COHMAP_METHOD_COMPARE = 3,
   COHMAP_METHOD_FULL = 4,
};

#define COHMAP_METHOD_COUNT 5

/* Context flags. */
enum cohmap_context_flags {
   /* Do not read COHMAP_* environment variables (embedding, tests). */
   COHMAP_CONTEXT_IGNORE_ENV = 1u << 0,
   /* Do not probe or use userfaultfd even where it works. */
   COHMAP_CONTEXT_NO_UFFD = 1u << 1,
   /* The adaptive policy may use fault for every AUTO region, as if each
    * had COHMAP_REGION_CPU_STORES_ONLY (COHMAP_METHOD=auto-fault).  Only
    * for processes whose tracked memory is never written by the kernel. */
   COHMAP_CONTEXT_AUTO_FAULT = 1u << 2,
};

struct cohmap_context_options {
   uint32_t flags;           /* enum cohmap_context_flags */
   /* Method used for regions created with COHMAP_METHOD_AUTO:
    * COHMAP_METHOD_AUTO (the default) puts them under the adaptive
    * policy, a fixed method turns the policy off.  The COHMAP_METHOD
    * environment variable overrides it. */
   enum cohmap_method default_method;
   /* fault: most pages unprotected by one fault when faults are
    * sequential (0 = default, 16).  1 disables widening. */
   uint32_t fault_max_widen_pages;
};

/* Fills *opts with defaults.  Always use it before setting fields, so that
 * fields added later get their defaults. */
COHMAP_EXPORT void
cohmap_context_options_init(struct cohmap_context_options *opts);

/* Creates a context.  opts may be NULL for defaults.  Reads COHMAP_DEBUG,
 * COHMAP_METHOD and the COHMAP_POLICY_* knobs (see docs/envvars.md) unless
 * COHMAP_CONTEXT_IGNORE_ENV is set; an unknown COHMAP_DEBUG or
 * COHMAP_METHOD value fails with -EINVAL and a message on stderr.  The
 * first context with the adaptive policy calibrates its cost model (a
 * 20 ms budget, once per process; COHMAP_DEBUG=nocal skips it). */
COHMAP_EXPORT int
cohmap_context_create(const struct cohmap_context_options *opts,
                      struct cohmap_context **out);

/* Destroys a context.  NULL is accepted.  Fails with -EBUSY, leaving the
 * context intact, while regions created from it are alive. */
COHMAP_EXPORT int
cohmap_context_destroy(struct cohmap_context *ctx);

/* 0 if method m works in this process; otherwise a negative errno value
 * and, if reason is not NULL, a static human-readable reason.
 * COHMAP_METHOD_AUTO is always available. */
COHMAP_EXPORT int
cohmap_context_method_status(const struct cohmap_context *ctx,
                             enum cohmap_method m, const char **reason);

/* With a fixed default method, the method regions created with
 * COHMAP_METHOD_AUTO get.  With the adaptive policy (the default), the
 * best available transparent method (scan, else compare) that regions fall
 * back to when their engine fails; ask cohmap_region_method() what a
 * region uses now. */
COHMAP_EXPORT enum cohmap_method
cohmap_context_auto_method(const struct cohmap_context *ctx);

/* "auto", "scan", "fault", "compare", "full"; NULL for unknown values.
 * (COHMAP_METHOD also accepts "auto-fault", which is a context setting,
 * COHMAP_CONTEXT_AUTO_FAULT, not a method: cohmap_method_from_name()
 * rejects it.) */
COHMAP_EXPORT const char *
cohmap_method_name(enum cohmap_method m);

/* Parses a method name (as above).  -EINVAL for unknown names. */
COHMAP_EXPORT int
cohmap_method_from_name(const char *name, enum cohmap_method *out);

/* Region flags. */
enum cohmap_region_flags {
   /* Keep a snapshot of the last collected state and report exact byte
    * runs (compare always has one).  Doubles the memory used. */
   COHMAP_REGION_BYTE_EXACT = 1u << 0,
   /* The first collect reports the whole region (e.g. a wrapped buffer
    * whose current contents the device has never seen). */
   COHMAP_REGION_INITIAL_DIRTY = 1u << 1,
   /* cohmap_region_create(): keep transparent huge pages allowed.  By
    * default cohmap-allocated regions get MADV_NOHUGEPAGE, because
    * write-protecting a huge page and splitting it on the first write costs
    * more than THP saves (docs/tracking.md). */
   COHMAP_REGION_ALLOW_THP = 1u << 2,
   /* If the requested method does not work for this region, use the next
    * available one (scan, compare, full) instead of failing. */
   COHMAP_REGION_FALLBACK = 1u << 3,
   /* Only CPU stores ever write this memory (never the kernel, e.g.
    * read(2) into it, nor another process): the adaptive policy may use
    * fault for it, which is the cheapest method for idle memory but makes
    * kernel writes into protected pages fail with EFAULT.  No effect on
    * regions with a fixed method. */
   COHMAP_REGION_CPU_STORES_ONLY = 1u << 4,
};

/* Allocates size bytes (rounded up to whole pages) of zeroed, page-aligned
 * tracked memory. */
COHMAP_EXPORT int
cohmap_region_create(struct cohmap_context *ctx, size_t size,
                     enum cohmap_method method, uint32_t flags,
                     struct cohmap_region **out);

/* Tracks caller-owned memory: ptr and size must be page-aligned and
 * non-zero; the memory must stay mapped until cohmap_region_destroy().  If
 * it is unmapped while tracked, collects fail with -EFAULT from then on (the
 * region stays in error until destroyed) instead of crashing.  scan also
 * detects a new mapping placed over it (mmap MAP_FIXED, mremap).
 * Memory already tracked by another live region (of any context) gives
 * -EBUSY: two regions would share one write-protect or protection state
 * and lose each other's writes. */
COHMAP_EXPORT int
cohmap_region_wrap(struct cohmap_context *ctx, void *ptr, size_t size,
                   enum cohmap_method method, uint32_t flags,
                   struct cohmap_region **out);

/* Stops tracking and frees the region (and its memory if cohmap allocated
 * it).  NULL is accepted.  A pointer that is not a live region (destroyed
 * already, never created) gives -EBADF and changes nothing. */
COHMAP_EXPORT int
cohmap_region_destroy(struct cohmap_region *region);

COHMAP_EXPORT void *
cohmap_region_ptr(const struct cohmap_region *region);

COHMAP_EXPORT size_t
cohmap_region_size(const struct cohmap_region *region);

/* The method the region uses now, never COHMAP_METHOD_AUTO: an AUTO
 * region's method changes when the policy switches it. */
COHMAP_EXPORT enum cohmap_method
cohmap_region_method(const struct cohmap_region *region);

/* Switches the tracking method without losing a write: the new method is
 * armed first, then the old one is collected; its ranges are reported by
 * the next collect.  A fixed method takes the region off the adaptive
 * policy; COHMAP_METHOD_AUTO puts it (back) under the policy where the
 * context has one, else switches to the context's auto method. */
COHMAP_EXPORT int
cohmap_region_set_method(struct cohmap_region *region,
                         enum cohmap_method method);

struct cohmap_range {
   size_t offset;
   size_t length;
};

struct cohmap_dirty {
   /* Sorted by offset, non-overlapping, non-adjacent (coalesced). */
   const struct cohmap_range *ranges;
   size_t count;
   /* Sum of the lengths. */
   size_t bytes;
   /* Where to copy the reported bytes from: data + range.offset.  For
    * regions with a snapshot (compare, COHMAP_REGION_BYTE_EXACT) this is
    * the snapshot, which holds exactly the bytes that were compared, so
    * that a store racing with the copy can never be lost (it differs from
    * the snapshot next time); otherwise it is the region's memory. */
   const void *data;
};

/* Reports the bytes written since the previous collect and re-arms
 * tracking.  flags must be 0.  out stays valid until the next collect,
 * set_method or destroy on this region.  On error (-errno) *out is empty
 * and nothing is lost: the writes are reported by a later collect, or the
 * whole region is, once the error condition is gone. */
COHMAP_EXPORT int
cohmap_region_collect(struct cohmap_region *region, uint32_t flags,
                      struct cohmap_dirty *out);

struct cohmap_region_stats {
   uint64_t collects;
   uint64_t pages_reported;  /* pages touched by reported ranges, summed */
   uint64_t bytes_reported;
   uint64_t faults;          /* fault: write faults handled */
   uint64_t scans;           /* scan: PAGEMAP_SCAN ioctls issued */
   uint64_t method_switches; /* set_method, fallbacks and the policy */
   uint64_t tracking_ns;     /* time spent in collect and set_method */
};

COHMAP_EXPORT int
cohmap_region_get_stats(const struct cohmap_region *region,
                        struct cohmap_region_stats *out);

/* The message describing the last error returned to the calling thread,
 * "" if none. */
COHMAP_EXPORT const char *
cohmap_error_message(void);

#ifdef __cplusplus
}
#endif

#endif /* COHMAP_H */
