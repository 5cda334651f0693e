/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#ifndef COHMAP_TRACK_PRIV_H
#define COHMAP_TRACK_PRIV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cohmap/cohmap.h"
#include "util/ranges.h"

/* COHMAP_DEBUG flags. */
enum cohmap_debug_flags {
   COHMAP_DEBUG_VERBOSE = 1u << 0,
   COHMAP_DEBUG_STATS = 1u << 1,
   /* The policy uses its built-in cost model instead of calibrating. */
   COHMAP_DEBUG_NOCAL = 1u << 2,
};

/* Engine features. */
enum cohmap_track_features {
   /* Reports whole pages: with a snapshot its ranges are refined. */
   COHMAP_TRACK_PAGE_GRANULAR = 1u << 0,
   /* Sees writes made by the kernel on the process's behalf (read(2)). */
   COHMAP_TRACK_SEES_KERNEL_WRITES = 1u << 1,
   /* Needs the region's snapshot (compare). */
   COHMAP_TRACK_NEEDS_SNAPSHOT = 1u << 2,
};

struct cohmap_region;

/*
 * A tracking method.  The region core (region.c) serializes all hooks of
 * one region with the region lock; only the fault engine's signal handler
 * runs outside it.
 */
struct cohmap_track_ops {
   const char *name;
   enum cohmap_method method;
   uint32_t features; /* enum cohmap_track_features */

   /* Starts tracking: every store that completes after attach returns is
    * reported by a later collect.  On failure nothing has changed. */
   int (*attach)(struct cohmap_region *r);

   /* Appends ranges covering every store since attach or the previous
    * collect to out (in ascending order, page-aligned for page-granular
    * engines) and re-arms, so that stores after the re-arm are reported
    * next time.  On error the engine must not have lost anything: either
    * nothing was re-armed, or it sets r->lost_tracking so the region core
    * reports the whole region. */
   int (*collect)(struct cohmap_region *r, struct cohmap_ranges *out);

   /* Stops tracking.  Memory stays mapped read-write.  Never fails. */
   void (*detach)(struct cohmap_region *r);
};

extern const struct cohmap_track_ops cohmap_track_scan_ops;
extern const struct cohmap_track_ops cohmap_track_fault_ops;
extern const struct cohmap_track_ops cohmap_track_compare_ops;
extern const struct cohmap_track_ops cohmap_track_full_ops;

const struct cohmap_track_ops *cohmap_track_ops_for(enum cohmap_method m);

/*
 * The adaptive policy (policy.c; theory in its DOC block).
 *
 * What one collect of a region costs, in nanoseconds, by the parts that
 * scale differently.  Stores that trap (scan's write-protect fault,
 * fault's signal) are charged to the collect that reports their page: the
 * application pays them because of the method.
 */
struct cohmap_cost_model {
   double fault_dirty_ns; /* fault: signal, unprotect, re-protect, per page */
   double scan_ioctl_ns;  /* scan: fixed cost of a collect */
   double scan_page_ns;   /* scan: per page walked */
   double scan_dirty_ns;  /* scan: per dirty page, store's fault included */
   /* scan: once per collect that found a dirty page: write-protecting
    * pages again flushes the TLB (about 20 µs on this project's VMs). */
   double scan_rearm_ns;
   double memcmp_byte_ns; /* compare's diff, per byte */
   double memcpy_byte_ns; /* snapshot copies and uploads, per byte */
   double populate_page_ns; /* a new snapshot's pages, per page */
   /* Regions larger than this stream from memory rather than cache: their
    * per-byte costs are multiplied by large_factor. */
   size_t large_region_bytes;
   double large_factor;
};

/* Per-context policy settings.  Read-only once the context has regions
 * (cohmap_context_set_cost_model() refuses then). */
struct cohmap_policy_config {
   /* AUTO regions are adaptive (the default method is AUTO). */
   bool enabled;
   /* The policy may use fault for every AUTO region (auto-fault). */
   bool allow_fault;
   uint32_t margin_pct; /* COHMAP_POLICY_MARGIN */
   uint32_t dwell;      /* COHMAP_POLICY_DWELL */
   uint32_t confirm;    /* consecutive decisions before a switch */
   uint32_t payback;    /* collects a switch must pay for itself in */
   uint32_t trap_backoff; /* first back-off from scan/fault; 0: none */
   struct cohmap_cost_model model;
   bool calibrated;         /* model measured in this process */
   uint64_t calibration_ns; /* what measuring it took (0: cached) */
};

/* Per-region policy state, under the region lock. */
struct cohmap_policy_state {
   bool adaptive;    /* the policy chooses this region's method */
   bool allow_fault; /* CPU_STORES_ONLY or the context's auto-fault */
   uint32_t failed;  /* bit per method that failed to attach here */

   bool have_estimate;
   double dirty_pages;    /* EWMA of the pages dirtied per collect */
   bool have_ratio;
   double bytes_per_page; /* EWMA of exact dirty bytes per dirty page */

   bool fresh;            /* an observation was made since the switch */
   uint32_t since_switch; /* collects since the last switch */
   uint32_t streak;       /* consecutive decisions wanting a switch */
   double regret;         /* what staying cost during the streak, ns */
   uint32_t blind;        /* collects on full without a snapshot */
   uint32_t probe_interval;
   /* Collects a trapping method (scan, fault) stays out of reach after the
    * region left one quickly for cost, and the next such wait. */
   uint32_t trap_wait, trap_backoff;
   bool probing;          /* switched away from full to measure */

   /* This collect switched; from full without a snapshot. */
   bool switched;
   bool switched_blind;
};

/* What the policy knows about a region when it decides. */
struct cohmap_policy_input {
   size_t size;
   size_t page_size;
   /* The region keeps a snapshot whatever the method (BYTE_EXACT). */
   bool snapshot;
   /* A populated buffer is at hand for a new snapshot. */
   bool spare;
   /* On full without a snapshot, but observing through page samples. */
   bool sampled;
   enum cohmap_method current;
   uint32_t allowed; /* bit per method it may use */
};

struct cohmap_policy_decision {
   enum cohmap_method method; /* == input.current: stay */
   bool probe;                /* leaving full to measure */
   double dirty_pages, dirty_bytes; /* the estimate used */
   /* Predicted ns per collect; INFINITY where not allowed. */
   double cost[COHMAP_METHOD_COUNT];
};

#define COHMAP_METHOD_BIT(m) (1u << (unsigned)(m))

/* The built-in model (docs/benchmarks.md): COHMAP_DEBUG=nocal. */
void cohmap_cost_model_default(struct cohmap_cost_model *m);

/* Predicted cost of one collect for every method (cost[AUTO] is
 * INFINITY).  snapshot: the region keeps one whatever the method. */
void cohmap_policy_predict(const struct cohmap_cost_model *m, size_t size,
                           size_t page_size, bool snapshot,
                           double dirty_pages, double dirty_bytes,
                           double cost[COHMAP_METHOD_COUNT]);

/* The cheapest allowed method at an estimate (ties: fault, scan, compare,
 * full), and for an idle region (a new region's first method). */
enum cohmap_method
cohmap_policy_best(const struct cohmap_policy_config *cfg,
                   const struct cohmap_policy_input *in, double dirty_pages,
                   double dirty_bytes);
enum cohmap_method
cohmap_policy_initial(const struct cohmap_policy_config *cfg,
                      const struct cohmap_policy_input *in);

void cohmap_policy_state_init(struct cohmap_policy_state *ps,
                              bool allow_fault);

/* Called at the end of each collect of an adaptive region, after
 * cohmap_policy_observe(): the method for the next collect
 * (out->method == in->current to stay). */
void cohmap_policy_decide(struct cohmap_policy_state *ps,
                          const struct cohmap_policy_config *cfg,
                          const struct cohmap_policy_input *in,
                          struct cohmap_policy_decision *out);

/* Called after each collect with what it reported: whole if it reported
 * the whole region for another reason than stores (INITIAL_DIRTY, lost
 * tracking, an engine giving up); blind if the region is on full without
 * a snapshot; exact if the bytes come from a snapshot's diff; own if the
 * figures count only what the current method saw since it was armed (not
 * what a switch carried over). */
void cohmap_policy_observe(struct cohmap_policy_state *ps, bool whole,
                           bool blind, bool exact, bool own,
                           double dirty_pages, double dirty_bytes);

/* Called by every switch (policy, set_method, engine failure), and after
 * a switch the decision marked as a probe. */
void cohmap_policy_switched(struct cohmap_policy_state *ps, bool from_blind);
void cohmap_policy_probe_started(struct cohmap_policy_state *ps);

/* Context set-up (context.c): defaults, knobs, calibration. */
void cohmap_policy_config_init(struct cohmap_policy_config *cfg);
int cohmap_policy_read_env(struct cohmap_policy_config *cfg);
void cohmap_policy_context_init(struct cohmap_context *ctx);

struct cohmap_context {
   struct cohmap_context_options opts;
   uint64_t debug; /* enum cohmap_debug_flags */
   size_t page_size;
   enum cohmap_method auto_method;
   int method_status[COHMAP_METHOD_COUNT]; /* 0 or -errno */
   const char *method_reason[COHMAP_METHOD_COUNT];
   struct cohmap_policy_config policy;

   pthread_mutex_t lock; /* protects everything below */
   struct cohmap_region *regions; /* list of live regions */
   size_t region_count;

   /* scan engine: one userfaultfd and one pagemap fd shared by all regions,
    * valid for the process with pid owner_pid (after fork() the child
    * reopens both; see scan.c). */
   int uffd;
   int pagemap_fd;
   pid_t owner_pid;
};

/* Fault-engine state of a region (fault.c). */
struct cohmap_fault_state;

struct cohmap_region {
   struct cohmap_context *ctx;
   struct cohmap_region *next, *prev; /* ctx->regions, under ctx->lock */

   uint8_t *ptr;
   size_t size; /* multiple of the page size */
   size_t npages;
   uint32_t flags; /* enum cohmap_region_flags */
   bool owned;     /* cohmap mmap()ed ptr */

   pthread_mutex_t lock; /* serializes the public calls on this region */
   const struct cohmap_track_ops *ops;

   /* Sticky error: once set (-EFAULT for unmapped wrapped memory), every
    * collect returns it. */
   int error;

   /* Set by an engine that lost track of which pages were stored to
    * (after fork(), after an mprotect failure).  The next collect reports
    * every byte that differs from the snapshot if the region has one (the
    * snapshot still holds the last reported state, so this is exact and
    * keeps bytes a device wrote meanwhile), else the whole region. */
   bool lost_tracking;

   /* Report the whole region at the next collect, snapshot or not: set at
    * creation with COHMAP_REGION_INITIAL_DIRTY, and when the snapshot may
    * already hold unreported stores (a switch created it and the old
    * engine's final collect failed; a refinement ran out of memory). */
   bool report_whole;

   /* The engine was detached because wrapped memory disappeared. */
   bool detached;

   /* Set by an engine that cannot go on for this region (fault after
    * mprotect ENOMEM): the region core moves it to the fallback method at
    * the end of the current collect. */
   bool engine_failed;

   /* The last state handed to the caller (compare, BYTE_EXACT), or NULL.
    * Invariant: every byte where ptr and snapshot differ has been written
    * since it was last reported, so the engine reports it again. */
   uint8_t *snapshot;
   /* An adaptive region on full keeps its dropped snapshot's pages here
    * (contents meaningless), so that a probe into compare does not
    * populate a new one: on a VM that costs ten times the copy. */
   uint8_t *spare;
   /* An adaptive region on full without a snapshot keeps copies of every
    * sample_stride-th page here (sample_pages of them) and counts which
    * changed at each collect: a dirty estimate for a few percent of
    * full's cost, so it need not probe other methods blindly. */
   uint8_t *sample;
   size_t sample_pages, sample_stride;

   /* Ranges collected from a previous method by set_method(): reported
    * whole (not refined) by the next collect. */
   struct cohmap_ranges carry;
   /* Engine output, refined into result. */
   struct cohmap_ranges pages;
   struct cohmap_ranges result;

   struct cohmap_region_stats stats;

   struct cohmap_policy_state policy;

   /* scan engine */
   bool scan_registered;
   pid_t scan_pid; /* process the registration belongs to */
   /* Sequential writers (cohmap_scan_predict): where the last run of
    * changed pages ended (0: none), and how many runs in a row each
    * continued the previous one. */
   size_t seq_end, seq_len;
   uint32_t seq_runs;
   uint32_t seq_idle; /* idle collects since the last run */
   uint64_t seq_opened; /* pages opened ahead so far (tests) */

   /* fault engine */
   struct cohmap_fault_state *fault;
};

static inline size_t
cohmap_page_size(void)
{
   extern size_t cohmap_page_size_cached;
   return cohmap_page_size_cached;
}

/* Capability probes (probe.c).  Each returns 0 or -errno and a static
 * reason. */
int cohmap_probe_scan(struct cohmap_context *ctx, const char **reason);
int cohmap_probe_fault(struct cohmap_context *ctx, const char **reason);

/* Opens a userfaultfd with the WP_ASYNC features: fd or -errno (probe.c). */
int cohmap_uffd_open(const char **reason);

/* scan: after a collect of a region with a snapshot (its pages and
 * result still in place): if the pages the scan reported continue a
 * sequential run (a ring or a stream), opens the span the writer is
 * predicted to write next, so that its stores do not fault (scan.c,
 * "Sequential writers").  Under the region lock; never fails (a span not
 * opened just faults as usual). */
void cohmap_scan_predict(struct cohmap_region *r);

/* Opens the scan engine's file descriptors for this process (scan.c). */
int cohmap_scan_open(struct cohmap_context *ctx, const char **reason);
void cohmap_scan_close(struct cohmap_context *ctx);

/*
 * Three-way merge of device bytes into a region with a snapshot (winsys):
 * dev holds the device's copy of [offset, offset + length).  Every byte
 * where dev differs from the snapshot was written by the device: it is
 * copied into memory and the snapshot if memory still equals the snapshot
 * (the CPU did not write it since it was last reported), and left alone
 * otherwise (the CPU's value wins and is reported by the next collect).
 * Adds to *merged and *conflicts.  -EINVAL unless the region is
 * COHMAP_REGION_BYTE_EXACT (and so has a snapshot).
 */
int cohmap_region_merge(struct cohmap_region *r, size_t offset,
                        const void *dev, size_t length, size_t *merged,
                        size_t *conflicts);

/* Zeroes [offset, offset + length) of memory and snapshot (re-used slab
 * slots): the device side must be zeroed by the caller. */
int cohmap_region_zero(struct cohmap_region *r, size_t offset,
                       size_t length);

/* Stops tracking a wrapped region's memory for good (the winsys, when the
 * BO that wraps it is destroyed while submissions still hold the region):
 * the engine lets go of the range, which stops counting against other
 * wraps of the same addresses, and every later collect or merge fails
 * with -ENXIO without touching it.  No effect on regions cohmap
 * allocated. */
void cohmap_region_release(struct cohmap_region *r);

/* Ranges a collect reported that could not be delivered (the upload
 * failed): the next collect reports them again, whole. */
int cohmap_region_requeue(struct cohmap_region *r,
                          const struct cohmap_range *v, size_t count);

/* Installs a scripted cost model (tests, benchmarks): -EBUSY while the
 * context has regions.  The getter returns the model in use. */
int cohmap_context_set_cost_model(struct cohmap_context *ctx,
                                  const struct cohmap_cost_model *model);
void cohmap_context_get_cost_model(const struct cohmap_context *ctx,
                                   struct cohmap_cost_model *out);

/* What the policy currently believes about a region. */
struct cohmap_policy_estimate {
   bool adaptive;
   enum cohmap_method method;
   double dirty_pages;
   double bytes_per_page;
   bool probing;
   /* Predicted ns per collect at the estimate; INFINITY where the policy
    * may not use the method. */
   double cost[COHMAP_METHOD_COUNT];
};

int cohmap_region_policy_estimate(struct cohmap_region *r,
                                  struct cohmap_policy_estimate *out);

/* A fault-engine statistic, readable without the region lock. */
uint64_t cohmap_fault_count(const struct cohmap_region *r);

/* System facts for `cohmap info` (probe.c). */
struct cohmap_sysinfo {
   char kernel[256];
   unsigned kernel_major, kernel_minor;
   size_t page_size;
   char thp_enabled[32];  /* "always", "madvise", "never", "unknown" */
   long max_map_count;    /* -1 if unknown */
   int unprivileged_userfaultfd; /* -1 if unknown */
   int seccomp;           /* 0 off, 1 strict, 2 filter, -1 unknown */
   long map_count;        /* current /proc/self/maps lines */
};

void cohmap_sysinfo_read(struct cohmap_sysinfo *info);

#endif
