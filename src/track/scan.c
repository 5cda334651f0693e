/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: scan — userfaultfd asynchronous write-protect + PAGEMAP_SCAN
 *
 * The region is registered with the context's userfaultfd in
 * write-protect mode, with UFFD_FEATURE_WP_ASYNC: a write to a protected
 * page is resolved inside the kernel (no signal, no handler thread) by
 * clearing the page's uffd-wp bit, which PAGEMAP_SCAN reports as
 * PAGE_IS_WRITTEN.  UFFD_FEATURE_WP_UNPOPULATED makes pages that were never
 * touched count as protected too, so a fresh region needs no population.
 *
 * A collect is one PAGEMAP_SCAN over the region with PM_SCAN_WP_MATCHING:
 * the kernel reports each written page and write-protects it again under
 * the page-table lock, so reporting and re-arming are one atomic step per
 * PTE.  A store racing with the scan either lands before its PTE is
 * visited (reported now) or faults on the re-protected page (reported
 * next time); none can fall between.  The caller copies after the ioctl
 * returns, so the copy sees at least every reported store.
 *
 * category_mask = return_mask = PAGE_IS_WRITTEN exactly: other masks send
 * the kernel down a per-page path about ten times slower.
 * PM_SCAN_CHECK_WPASYNC makes the scan fail with EPERM if any part of the
 * range is no longer registered (wrapped memory replaced by a new
 * mapping), instead of silently reporting nothing.
 *
 * The kernel stops early when the output vector is full; the scan then
 * resumes from walk_end until the whole range has been walked.
 *
 * Sequential writers.  A ring or stream buffer is written a span at a
 * time, each span starting where the previous one ended, and each of its
 * pages takes a write-protect fault on its first store: 16 per 64 KiB
 * frame, 1.5 µs each on a quiet host and 2-10 µs on a loaded VM, more
 * than the copies themselves.  When the pages a collect reported form one
 * run that continues the previous collect's (starting at its end, or in
 * its last page), cohmap_scan_predict() un-protects the span the writer is
 * predicted to write next, [end, end + run length), capped at
 * SEQ_MAX_BYTES, with one UFFDIO_WRITEPROTECT call.  Nothing can be
 * missed: an un-protected page reads as written, so the next scan reports
 * it (and protects it again) whether it was stored to or not, like a page
 * that took its fault.  A wrong prediction costs reporting the span's
 * pages once; it is only made for regions with a snapshot, whose diff
 * drops the unchanged bytes, and whose exact result tells a written span
 * from one merely opened.  An idle collect (several submissions a frame)
 * opens the same span again, SEQ_IDLE_MAX times at most: the scan
 * protected it again, as it reads as written, and an idle writer must not
 * cost two TLB flushes a collect for ever.
 *
 * fork(): the child's mappings lose their registration and the inherited
 * /proc/self/pagemap descriptor still refers to the parent's address
 * space, so a scan from the child would re-arm the *parent's* pages and
 * lose its writes.  Every entry point therefore compares the owning pid
 * with getpid(); the child reopens both descriptors, registers its regions
 * again and reports each of them whole once.
 */

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "track/track_priv.h"
#include "track/uapi.h"
#include "util/log.h"

/* Entries per PAGEMAP_SCAN call: 256 * 24 bytes stays on the stack; the
 * kernel coalesces runs of written pages into one entry, so one call
 * covers most regions. */
#define SCAN_VEC_LEN 256

/* The most a prediction opens: a wrong one reports (and diffs) this much
 * once. */
#define SEQ_MAX_BYTES ((size_t)1 << 20)
#define SEQ_IDLE_MAX  3

int
cohmap_scan_open(struct cohmap_context *ctx, const char **reason)
{
   int uffd = cohmap_uffd_open(reason);
   if (uffd < 0)
      return uffd;

   /* /proc/self resolves at open time: this fd keeps pointing at this
    * process's address space, which is why a forked child reopens it. */
   int pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
   if (pagemap_fd < 0) {
      int err = errno;
      close(uffd);
      /* EACCES: /proc/self files belong to root in a process that is
       * not dumpable, which is what changing uid or gid makes a process
       * (a daemon dropping root, a setuid program) until it calls
       * prctl(PR_SET_DUMPABLE, 1). */
      if (err == EACCES || err == EPERM)
         *reason = "cannot open /proc/self/pagemap (EACCES): the process "
                   "is not dumpable (it changed uid or gid; "
                   "prctl(PR_SET_DUMPABLE, 1) restores it)";
      else
         *reason = "cannot open /proc/self/pagemap (procfs not mounted?)";
      return -err;
   }

   ctx->uffd = uffd;
   ctx->pagemap_fd = pagemap_fd;
   ctx->owner_pid = getpid();
   return 0;
}

void
cohmap_scan_close(struct cohmap_context *ctx)
{
   if (ctx->uffd >= 0)
      close(ctx->uffd);
   if (ctx->pagemap_fd >= 0)
      close(ctx->pagemap_fd);
   ctx->uffd = -1;
   ctx->pagemap_fd = -1;
}

/* After fork(), gives the child descriptors of its own.  Called with the
 * region lock held; takes the context lock. */
static int
scan_ensure_process(struct cohmap_context *ctx)
{
   pid_t pid = getpid();
   int ret = 0;

   pthread_mutex_lock(&ctx->lock);
   if (ctx->owner_pid != pid || ctx->uffd < 0) {
      const char *reason = "";
      /* Closing our copies does not affect the parent: it holds its own
       * references to the same files. */
      cohmap_scan_close(ctx);
      ret = cohmap_scan_open(ctx, &reason);
      if (ret)
         ret = cohmap_errorf(ret, "scan: reopening after fork failed: %s",
                             reason);
   }
   pthread_mutex_unlock(&ctx->lock);
   return ret;
}

static int
scan_register(struct cohmap_region *r)
{
   struct cohmap_context *ctx = r->ctx;
   struct uffdio_register reg = {
      .range = {.start = (uintptr_t)r->ptr, .len = r->size},
      .mode = UFFDIO_REGISTER_MODE_WP,
   };

   if (ioctl(ctx->uffd, UFFDIO_REGISTER, &reg) != 0) {
      int err = errno;
      if (err == EBUSY)
         return cohmap_errorf(-EBUSY,
                              "scan: memory already registered with another "
                              "userfaultfd");
      if (err == EINVAL)
         return cohmap_errorf(-EINVAL,
                              "scan: memory type cannot be write-protected "
                              "by userfaultfd (file-backed?)");
      return cohmap_errorf(-err, "scan: UFFDIO_REGISTER failed");
   }

   /* Protect the pages that are already present (wrapped memory, a child
    * after fork); unpopulated ones are covered by WP_UNPOPULATED. */
   struct uffdio_writeprotect wp = {
      .range = {.start = (uintptr_t)r->ptr, .len = r->size},
      .mode = UFFDIO_WRITEPROTECT_MODE_WP,
   };
   if (ioctl(ctx->uffd, UFFDIO_WRITEPROTECT, &wp) != 0) {
      int err = errno;
      struct uffdio_range range = {.start = (uintptr_t)r->ptr,
                                   .len = r->size};
      ioctl(ctx->uffd, UFFDIO_UNREGISTER, &range);
      return cohmap_errorf(-err, "scan: UFFDIO_WRITEPROTECT failed");
   }

   r->scan_registered = true;
   r->scan_pid = getpid();
   r->seq_end = 0;
   r->seq_runs = 0;
   r->seq_idle = 0;
   return 0;
}

static int
scan_attach(struct cohmap_region *r)
{
   int ret = scan_ensure_process(r->ctx);
   if (ret)
      return ret;
   return scan_register(r);
}

static int
scan_collect(struct cohmap_region *r, struct cohmap_ranges *out)
{
   struct cohmap_context *ctx = r->ctx;

   if (r->scan_pid != getpid()) {
      /* A forked child: the registration was the parent's.  Whatever was
       * written before and since the fork is unknown: report all. */
      int ret = scan_ensure_process(ctx);
      if (ret == 0)
         ret = scan_register(r);
      if (ret)
         return ret;
      r->lost_tracking = true;
      return 0;
   }

   struct page_region vec[SCAN_VEC_LEN];
   uintptr_t base = (uintptr_t)r->ptr;
   uintptr_t end = base + r->size;
   uintptr_t cur = base;

   while (cur < end) {
      struct pm_scan_arg arg = {
         .size = sizeof(arg),
         .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
         .start = cur,
         .end = end,
         .vec = (uintptr_t)vec,
         .vec_len = SCAN_VEC_LEN,
         .category_mask = PAGE_IS_WRITTEN,
         .return_mask = PAGE_IS_WRITTEN,
      };
      long n = ioctl(ctx->pagemap_fd, PAGEMAP_SCAN, &arg);
      r->stats.scans++;
      if (n < 0) {
         int err = errno;
         /* Pages already visited were re-armed: report everything next
          * time rather than lose them. */
         r->lost_tracking = true;
         if (err == EPERM)
            return cohmap_errorf(-EFAULT,
                                 "scan: region is no longer registered "
                                 "(unmapped or replaced by a new mapping)");
         return cohmap_errorf(-err, "scan: PAGEMAP_SCAN failed");
      }
      for (long i = 0; i < n; i++) {
         int ret = cohmap_ranges_add(out, vec[i].start - base,
                                     vec[i].end - vec[i].start);
         if (ret) {
            r->lost_tracking = true;
            return cohmap_errorf(ret, "scan: out of memory");
         }
      }
      if (arg.walk_end <= cur) {
         /* No progress would loop forever; the kernel guarantees
          * progress, so this means a kernel bug: be safe. */
         r->lost_tracking = true;
         return cohmap_errorf(-EIO, "scan: PAGEMAP_SCAN made no progress");
      }
      cur = arg.walk_end;
   }
   return 0;
}

void
cohmap_scan_predict(struct cohmap_region *r)
{
   size_t page = r->ctx->page_size;
   if (!r->scan_registered || r->scan_pid != getpid() || !r->snapshot)
      return;

   /* The run is taken from the pages the scan reported (the writer may
    * store bytes equal to the old ones, which the diff drops), and must
    * be one run of pages; the exact result only tells whether anything
    * changed at all: an opened span reads as written even if the writer
    * did not touch it. */
   const struct cohmap_ranges *pages = &r->pages;
   bool one_run = pages->count > 0;
   size_t lo = 0, hi = 0;
   if (one_run) {
      lo = pages->v[0].offset / page * page;
      hi = lo;
   }
   for (size_t i = 0; one_run && i < pages->count; i++) {
      const struct cohmap_range *v = &pages->v[i];
      if (v->offset / page * page > hi) {
         one_run = false;
         break;
      }
      size_t end = (v->offset + v->length + page - 1) / page * page;
      if (end > hi)
         hi = end;
   }

   if (r->result.count == 0) {
      /* Nothing changed: the pages were the opened span, or equal bytes
       * stored again. */
      if (!r->seq_end || r->seq_idle >= SEQ_IDLE_MAX) {
         r->seq_end = 0;
         r->seq_runs = 0;
         return;
      }
      r->seq_idle++;
      lo = r->seq_end - r->seq_len;
      hi = r->seq_end;
   } else if (!one_run) {
      r->seq_end = 0;
      r->seq_runs = 0;
      return;
   } else {
      /* A run continues the previous one if it starts at its end, or in
       * its last page (spans that are not whole pages share one). */
      bool continues =
         r->seq_end && lo <= r->seq_end && lo + page >= r->seq_end;
      r->seq_runs = continues ? r->seq_runs + 1 : 1;
      r->seq_end = hi;
      r->seq_len = hi - lo;
      r->seq_idle = 0;
   }
   if (r->seq_runs < 2 || hi >= r->size)
      return;

   size_t len = hi - lo;
   if (len > SEQ_MAX_BYTES)
      len = SEQ_MAX_BYTES;
   if (len > r->size - hi)
      len = r->size - hi;
   struct uffdio_writeprotect wp = {
      .range = {.start = (uintptr_t)r->ptr + hi, .len = len},
      .mode = 0, /* resolve: the pages read as written until re-armed */
   };
   /* A failure leaves the span protected: its stores fault as usual. */
   if (ioctl(r->ctx->uffd, UFFDIO_WRITEPROTECT, &wp) == 0)
      r->seq_opened += len / page;
}

static void
scan_detach(struct cohmap_region *r)
{
   if (!r->scan_registered)
      return;
   /* In a forked child the registration belonged to the parent's
    * mappings; there is nothing of ours to undo. */
   if (r->scan_pid == getpid() && r->ctx->uffd >= 0) {
      struct uffdio_range range = {.start = (uintptr_t)r->ptr,
                                   .len = r->size};
      /* Unregistering drops the write-protection too.  It fails
       * harmlessly when the memory was unmapped under us. */
      ioctl(r->ctx->uffd, UFFDIO_UNREGISTER, &range);
   }
   r->scan_registered = false;
}

const struct cohmap_track_ops cohmap_track_scan_ops = {
   .name = "scan",
   .method = COHMAP_METHOD_SCAN,
   .features = COHMAP_TRACK_PAGE_GRANULAR | COHMAP_TRACK_SEES_KERNEL_WRITES,
   .attach = scan_attach,
   .collect = scan_collect,
   .detach = scan_detach,
};
