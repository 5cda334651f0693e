/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: fault — mprotect + SIGSEGV
 *
 * The region is mapped PROT_READ.  The first store to a page raises
 * SIGSEGV; cohmap's handler finds the region with a lock-free lookup,
 * makes the page writable again and records it in the region's bitmap
 * (1 = unprotected since the last collect).  The store is then restarted
 * by the kernel and succeeds.  An idle region costs nothing per collect;
 * each first store to a page costs a signal (5-8 µs, more with TLB
 * shootdowns on other CPUs).
 *
 * Ordering, which is what makes it lose nothing:
 *
 *  1. The handler unprotects first, then sets the page's bit.
 *  2. A collect takes the bits (atomic exchange), then re-protects exactly
 *     those pages, then the caller copies them.
 *
 * Proof sketch.  Let store S to page P complete before collect C exchanges
 * P's bit.  P was writable when S ran, so some handler H had unprotected
 * it, and H sets the bit only after unprotecting.  Either H's bit-set
 * happened before C's exchange — C reports P — or after it — the next
 * collect reports P — or H's bit was taken by an earlier collect C0.  C0
 * re-protected P after taking the bit, so S (which did not fault) ran
 * before that re-protect, and C0's caller copied P after it: the copy
 * holds S.  With the reverse order in (1), C could take a freshly set bit
 * and re-protect P before H unprotects it, leaving P writable with a clear
 * bit: every later store to P would be lost.
 *
 * Handlers in flight.  Thread A faults on P and its handler unprotects P;
 * before it sets P's bit, thread B stores to P (no fault: P is writable)
 * and then calls collect.  B's store completed before the collect, so the
 * collect must report it, but P's bit is not set yet.  So a collect first
 * waits for every handler of the region that began before it: handlers
 * count themselves in active[epoch & 1]; the collect advances the epoch
 * and waits until the old epoch's count is zero.  A handler that read the
 * old epoch but counted itself in after the collect looked unprotects only
 * after the collect began, so no store the collect must report depends on
 * it.  Handlers are a few microseconds; the wait is bounded by them.
 *
 * Sequential writers (memcpy into a buffer) would fault on every page.
 * When a fault hits the page right after the span the previous fault
 * unprotected, the handler doubles the span (up to fault_max_widen_pages)
 * and unprotects ahead.  Pages unprotected ahead are reported even if the
 * store never reaches them: the over-report is bounded by the widening
 * limit and documented.
 *
 * mprotect() splits VMAs; a scattered pattern can exhaust
 * vm.max_map_count and mprotect then fails with ENOMEM.  In the handler
 * that would mean the faulting store can never complete, so the handler
 * instead unprotects the whole region (merging its VMAs back into one),
 * marks the region failed and returns; the region core reports the whole
 * region at the next collect and moves the region to another method,
 * arming the new method before it detaches this one.  The same happens
 * when a collect cannot re-protect.
 *
 * Kernel writes are not transparent: read(2) into a protected page makes
 * the kernel's copy fail with EFAULT (no signal is raised for kernel-mode
 * accesses).  Only use fault for memory that the CPU writes with ordinary
 * stores.
 *
 * Signal hygiene: faults outside tracked memory, faults that are not
 * protection faults, and signals sent with kill() go to the handler that
 * was installed before cohmap, or take the default action, exactly as if
 * cohmap were absent.  The handler is async-signal-safe: atomics,
 * mprotect(), a binary search in an immutable table.
 *
 * The table of fault regions is immutable once published.  Writers (under
 * a mutex) build a new table, publish it with an atomic store and then
 * wait until no handler is running before freeing the old one or a
 * detached region: handlers count themselves in and out of
 * handlers_running around the lookup.  Sequentially consistent atomics
 * make "publish, then see zero running" imply that every later handler
 * sees the new table.
 */

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "track/track_priv.h"
#include "util/log.h"

#define BITS_PER_WORD (8 * sizeof(unsigned long))

struct cohmap_fault_state {
   struct cohmap_region *region;
   uintptr_t start, end;
   size_t npages;
   unsigned page_shift;
   uint32_t max_widen;

   /* Bit per page: unprotected since the last collect. */
   _Atomic unsigned long *bits;
   size_t nwords;

   /* First page after the span the last fault unprotected, and that
    * span's length: a fault at next_page is sequential. */
   atomic_size_t next_page;
   atomic_uint span;

   atomic_ulong faults;
   /* Handlers in progress on this region, counted per epoch: a collect
    * starts a new epoch and waits for the previous one to drain (see
    * "Handlers in flight" above). */
   atomic_uint epoch;
   atomic_uint active[2];
   /* The handler could not unprotect a page and unprotected the whole
    * region instead: every page is writable and untracked. */
   atomic_bool failed;
   /* Detached but still in the table (no memory for a smaller one): the
    * handler must ignore it. */
   atomic_bool dead;
};

struct fault_entry {
   uintptr_t start, end;
   struct cohmap_fault_state *fs;
};

struct fault_table {
   size_t count;
   struct fault_entry e[];
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct fault_table *) table;
static atomic_uint handlers_running;
/* Bumped at every table publish: lets the retry logic below tell a repeat
 * of the same fault from a new one raised after the table changed. */
static atomic_ulong table_generation;
static struct sigaction previous_action;
static bool handler_installed;

static struct cohmap_fault_state *
table_lookup(const struct fault_table *t, uintptr_t addr)
{
   if (!t)
      return NULL;
   size_t lo = 0, hi = t->count;
   while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (addr < t->e[mid].start)
         hi = mid;
      else if (addr >= t->e[mid].end)
         lo = mid + 1;
      else
         return t->e[mid].fs;
   }
   return NULL;
}

static void
bits_set(struct cohmap_fault_state *fs, size_t first, size_t count)
{
   for (size_t p = first; p < first + count; p++) {
      atomic_fetch_or(&fs->bits[p / BITS_PER_WORD],
                      1ul << (p % BITS_PER_WORD));
   }
}

/* Handles a protection fault at addr in fs.  Returns false if the fault
 * cannot be resolved (then it is chained). */
static bool
fault_handle(struct cohmap_fault_state *fs, uintptr_t addr)
{
   size_t page = (addr - fs->start) >> fs->page_shift;
   size_t n = 1;

   if (atomic_load_explicit(&fs->next_page, memory_order_relaxed) == page) {
      n = 2 * (size_t)atomic_load_explicit(&fs->span, memory_order_relaxed);
      if (n > fs->max_widen)
         n = fs->max_widen;
   }
   if (n < 1)
      n = 1;
   if (n > fs->npages - page)
      n = fs->npages - page;

   uintptr_t at = fs->start + (page << fs->page_shift);
   if (mprotect((void *)at, n << fs->page_shift, PROT_READ | PROT_WRITE)) {
      /* Most likely ENOMEM at vm.max_map_count.  Unprotecting the whole
       * region merges its VMAs, so it needs no new one. */
      if (n > 1 && mprotect((void *)at, 1ul << fs->page_shift,
                            PROT_READ | PROT_WRITE) == 0) {
         n = 1;
      } else if (mprotect((void *)fs->start, fs->end - fs->start,
                          PROT_READ | PROT_WRITE) == 0) {
         atomic_store(&fs->failed, true);
         atomic_fetch_add_explicit(&fs->faults, 1, memory_order_relaxed);
         return true;
      } else {
         return false;
      }
   }

   /* Unprotect, then record: see the ordering proof above. */
   bits_set(fs, page, n);
   atomic_store_explicit(&fs->span, (unsigned)n, memory_order_relaxed);
   atomic_store_explicit(&fs->next_page, page + n, memory_order_relaxed);
   atomic_fetch_add_explicit(&fs->faults, 1, memory_order_relaxed);
   return true;
}

/* Passes a signal we do not own on, as if cohmap's handler were not
 * installed. */
static void
chain(int sig, siginfo_t *info, void *uctx)
{
   struct sigaction prev_copy = previous_action;
   const struct sigaction *prev = &prev_copy;

   /* SA_RESETHAND: the kernel would have reset the disposition to SIG_DFL
    * when delivering to that handler; do the same to our copy of it, so
    * it runs once and the next fault takes the default action. */
   if (prev->sa_flags & SA_RESETHAND) {
      previous_action.sa_flags = 0;
      previous_action.sa_handler = SIG_DFL;
   }

   if (prev->sa_flags & SA_SIGINFO) {
      if (prev->sa_sigaction) {
         prev->sa_sigaction(sig, info, uctx);
         return;
      }
   } else if (prev->sa_handler == SIG_IGN) {
      /* A synchronous fault cannot be ignored (the kernel would force the
       * default action); a sent signal can. */
      if (info->si_code <= 0)
         return;
   } else if (prev->sa_handler != SIG_DFL) {
      prev->sa_handler(sig);
      return;
   }

   /* Default action: reinstate it.  A fault re-executes the instruction
    * and now kills the process with the right signal and core dump; a sent
    * signal is re-raised (it stays blocked until we return). */
   struct sigaction dfl;
   memset(&dfl, 0, sizeof(dfl));
   dfl.sa_handler = SIG_DFL;
   sigemptyset(&dfl.sa_mask);
   sigaction(sig, &dfl, NULL);
   if (info->si_code <= 0)
      raise(sig);
}

/*
 * A protection fault can be raised while a page is protected and delivered
 * after another thread detached the region (made it writable and removed
 * it from the table).  Chaining it would hand a harmless fault to the
 * previous handler — with SIG_DFL, a dead process.  So a protection fault
 * on an address cohmap does not track is first retried: if it was stale
 * the store now succeeds; if it was real it faults again at the same
 * address in the same thread and is chained then.  One slot per thread
 * hash; a collision only costs one more retry.
 *
 * "Again" means with no table change in between: a slot remembers the
 * table generation its fault saw.  Without that, a thread that once took
 * a stale fault at an address would have its next stale fault there —
 * after the region was re-protected and detached again, possibly much
 * later — taken for a repeat and chained.  A stale fault needs a detach
 * (a publish) between its protection and its lookup, and the protection
 * needs an attach (a publish) after the previous retry, so a stale fault
 * never sees the generation recorded by an earlier one.
 */
#define RETRY_SLOTS 64

static struct {
   atomic_long tid;
   _Atomic uintptr_t addr;
   atomic_ulong generation;
} retry_slots[RETRY_SLOTS];

static bool
retry_first_time(uintptr_t addr, unsigned long generation)
{
   long tid = syscall(SYS_gettid);
   unsigned slot = (unsigned)tid % RETRY_SLOTS;

   if (atomic_load(&retry_slots[slot].tid) == tid &&
       atomic_load(&retry_slots[slot].addr) == addr &&
       atomic_load(&retry_slots[slot].generation) == generation) {
      atomic_store(&retry_slots[slot].tid, 0);
      return false;
   }
   atomic_store(&retry_slots[slot].tid, tid);
   atomic_store(&retry_slots[slot].addr, addr);
   atomic_store(&retry_slots[slot].generation, generation);
   return true;
}

static void
segv_handler(int sig, siginfo_t *info, void *uctx)
{
   int saved_errno = errno;
   bool handled = false;

   if (info->si_code == SEGV_ACCERR) {
      uintptr_t addr = (uintptr_t)info->si_addr;
      atomic_fetch_add(&handlers_running, 1);
      /* Read before the lookup: a publish after it makes the next fault
       * look new, which only costs a retry. */
      unsigned long generation = atomic_load(&table_generation);
      struct cohmap_fault_state *fs = table_lookup(atomic_load(&table), addr);
      if (fs && atomic_load(&fs->dead))
         fs = NULL;
      if (fs) {
         unsigned e = atomic_load(&fs->epoch) & 1;
         atomic_fetch_add(&fs->active[e], 1);
         handled = fault_handle(fs, addr);
         atomic_fetch_sub(&fs->active[e], 1);
      }
      /* Count out before chaining: the previous handler may never return
       * (siglongjmp, exit). */
      atomic_fetch_sub(&handlers_running, 1);
      if (!fs)
         handled = retry_first_time(addr, generation);
   }

   errno = saved_errno;
   if (!handled)
      chain(sig, info, uctx);
}

/* Waits until no handler can still see an unpublished table or region. */
static void
wait_for_handlers(void)
{
   while (atomic_load(&handlers_running) != 0)
      sched_yield();
}

/*
 * fork() may happen while another thread holds table_lock or is inside the
 * handler; only the forking thread exists in the child, so the lock would
 * never be released and handlers_running never drop to zero there.  Take
 * the lock around fork() and reset the counter in the child.
 */
static void
atfork_prepare(void)
{
   pthread_mutex_lock(&table_lock);
}

static void
atfork_parent(void)
{
   pthread_mutex_unlock(&table_lock);
}

static void
atfork_child(void)
{
   /* Handlers of threads that do not exist in the child will never count
    * themselves out. */
   struct fault_table *t = atomic_load(&table);
   for (size_t i = 0; t && i < t->count; i++) {
      atomic_store(&t->e[i].fs->active[0], 0);
      atomic_store(&t->e[i].fs->active[1], 0);
   }
   atomic_store(&handlers_running, 0);
   pthread_mutex_unlock(&table_lock);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
register_atfork(void)
{
   pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Installed with the first fault region and never removed: removing it
 * races with faults raised before and delivered after (they would reach
 * the previous disposition), and a handler installed after ours may chain
 * to it.  With no fault region left it only passes signals on.  Checked
 * again at every attach in case it was replaced by a restore. */
static bool
same_action(const struct sigaction *a, const struct sigaction *b)
{
   if ((a->sa_flags & SA_SIGINFO) != (b->sa_flags & SA_SIGINFO))
      return false;
   return (a->sa_flags & SA_SIGINFO) ? a->sa_sigaction == b->sa_sigaction
                                     : a->sa_handler == b->sa_handler;
}

static int
install_handler_locked(void)
{
   struct sigaction sa, cur;

   if (handler_installed) {
      /* Someone may have put back the disposition we replaced (test
       * harnesses save and restore SIGSEGV around each test): then ours
       * is gone and nothing chains to it, so install it again.  A
       * different handler on top is assumed to chain to us (ASan, JVMs,
       * Wine do); installing over it would make the two chain in a
       * circle. */
      if (sigaction(SIGSEGV, NULL, &cur) != 0)
         return cohmap_errorf(-errno, "fault: sigaction(SIGSEGV) failed");
      if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == segv_handler)
         return 0;
      if (!same_action(&cur, &previous_action))
         return 0;
   }
   memset(&sa, 0, sizeof(sa));
   sa.sa_sigaction = segv_handler;
   /* SA_ONSTACK: a fault on a thread running on an alternate signal stack
    * (Go, JVMs) must not switch stacks under it; SA_RESTART: interrupted
    * system calls resume as before cohmap. */
   sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
   sigemptyset(&sa.sa_mask);
   if (sigaction(SIGSEGV, &sa, &previous_action) != 0)
      return cohmap_errorf(-errno, "fault: sigaction(SIGSEGV) failed");
   handler_installed = true;
   return 0;
}

/* Publishes a table with fs added (add) or removed.  Caller holds
 * table_lock. */
static int
table_update_locked(struct cohmap_fault_state *fs, bool add)
{
   struct fault_table *old = atomic_load(&table);
   size_t count = old ? old->count : 0;
   size_t new_count = add ? count + 1 : count - 1;
   struct fault_table *t = NULL;

   if (new_count) {
      t = malloc(sizeof(*t) + new_count * sizeof(t->e[0]));
      if (!t)
         return -ENOMEM;
      size_t j = 0;
      bool inserted = !add;
      for (size_t i = 0; i < count; i++) {
         if (!add && old->e[i].fs == fs)
            continue;
         if (!inserted && fs->start < old->e[i].start) {
            t->e[j++] = (struct fault_entry){fs->start, fs->end, fs};
            inserted = true;
         }
         t->e[j++] = old->e[i];
      }
      if (!inserted)
         t->e[j++] = (struct fault_entry){fs->start, fs->end, fs};
      t->count = j;
   }

   atomic_store(&table, t);
   atomic_fetch_add(&table_generation, 1);
   wait_for_handlers();
   free(old);
   return 0;
}

static int
fault_attach(struct cohmap_region *r)
{
   size_t ps = r->ctx->page_size;
   struct cohmap_fault_state *fs = calloc(1, sizeof(*fs));
   if (!fs)
      return cohmap_errorf(-ENOMEM, "fault: out of memory");

   fs->region = r;
   fs->start = (uintptr_t)r->ptr;
   fs->end = fs->start + r->size;
   fs->npages = r->npages;
   fs->page_shift = (unsigned)__builtin_ctzl(ps);
   fs->max_widen = r->ctx->opts.fault_max_widen_pages;
   fs->nwords = (r->npages + BITS_PER_WORD - 1) / BITS_PER_WORD;
   fs->bits = calloc(fs->nwords, sizeof(fs->bits[0]));
   atomic_store(&fs->next_page, SIZE_MAX);
   atomic_store(&fs->span, 1);
   if (!fs->bits) {
      free(fs);
      return cohmap_errorf(-ENOMEM, "fault: out of memory");
   }

   pthread_once(&atfork_once, register_atfork);
   pthread_mutex_lock(&table_lock);
   int ret = install_handler_locked();
   if (ret == 0)
      ret = table_update_locked(fs, true);
   pthread_mutex_unlock(&table_lock);
   if (ret)
      goto fail;

   /* Published before protected: a fault can only come after this
    * mprotect, and the handler must find the region then. */
   if (mprotect(r->ptr, r->size, PROT_READ) != 0) {
      ret = cohmap_errorf(-errno, "fault: mprotect(PROT_READ) failed");
      pthread_mutex_lock(&table_lock);
      table_update_locked(fs, false);
      pthread_mutex_unlock(&table_lock);
      goto fail;
   }

   r->fault = fs;
   return 0;

fail:
   free((void *)fs->bits);
   free(fs);
   return ret;
}

/* Unprotects everything and gives up on fault for this region. */
static void
fault_give_up(struct cohmap_region *r, struct cohmap_fault_state *fs)
{
   mprotect(r->ptr, r->size, PROT_READ | PROT_WRITE);
   atomic_store(&fs->failed, true);
}

static int
fault_collect(struct cohmap_region *r, struct cohmap_ranges *out)
{
   struct cohmap_fault_state *fs = r->fault;
   size_t ps = r->ctx->page_size;
   size_t run_start = 0, run_len = 0;
   int ret = 0;

   if (atomic_load(&fs->failed))
      goto failed;

   /* Handlers that began before this collect have recorded their pages
    * once this returns. */
   unsigned old = atomic_fetch_add(&fs->epoch, 1) & 1;
   while (atomic_load(&fs->active[old]) != 0)
      sched_yield();

   for (size_t w = 0; w < fs->nwords; w++) {
      if (atomic_load_explicit(&fs->bits[w], memory_order_relaxed) == 0)
         continue;
      unsigned long taken = atomic_exchange(&fs->bits[w], 0);
      while (taken) {
         unsigned b = (unsigned)__builtin_ctzl(taken);
         taken &= taken - 1;
         size_t page = w * BITS_PER_WORD + b;
         if (run_len && page == run_start + run_len) {
            run_len++;
            continue;
         }
         if (run_len) {
            /* Take, re-protect, then (caller) copy. */
            if (mprotect(r->ptr + run_start * ps, run_len * ps, PROT_READ))
               goto reprotect_failed;
            ret = cohmap_ranges_add(out, run_start * ps, run_len * ps);
            if (ret)
               goto nomem;
         }
         run_start = page;
         run_len = 1;
      }
   }
   if (run_len) {
      if (mprotect(r->ptr + run_start * ps, run_len * ps, PROT_READ))
         goto reprotect_failed;
      ret = cohmap_ranges_add(out, run_start * ps, run_len * ps);
      if (ret)
         goto nomem;
   }

   /* The handler may have given up while we collected. */
   if (atomic_load(&fs->failed))
      goto failed;
   return 0;

reprotect_failed:
   /* Bits already taken would be lost with their pages left writable:
    * make the region consistent (all writable) and report it whole. */
   cohmap_info("fault: re-protect failed (%s) for region %p; moving it to "
               "another method",
               strerror(errno), (void *)r);
   fault_give_up(r, fs);
   goto failed;
nomem:
   fault_give_up(r, fs);
   r->engine_failed = true;
   r->lost_tracking = true;
   return cohmap_errorf(ret, "fault: out of memory");
failed:
   cohmap_ranges_clear(out);
   r->engine_failed = true;
   return cohmap_ranges_add(out, 0, r->size);
}

/*
 * Pages a handler unprotected but had not yet recorded when the final
 * collect took the bits.  A store to such a page by another thread can
 * land before the next method arms and be missing from the final collect
 * (with a snapshot created by the switch, compare would never see it
 * either).  Once the region is unpublished and no handler runs, the bits
 * are final: hand them to the region core, which reports carried ranges
 * whole at the next collect.
 */
static void
carry_late_pages(struct cohmap_region *r, struct cohmap_fault_state *fs)
{
   size_t ps = r->ctx->page_size;

   for (size_t w = 0; w < fs->nwords; w++) {
      unsigned long late = atomic_exchange(&fs->bits[w], 0);
      while (late) {
         unsigned b = (unsigned)__builtin_ctzl(late);
         late &= late - 1;
         size_t page = w * BITS_PER_WORD + b;
         if (cohmap_ranges_add(&r->carry, page * ps, ps) != 0)
            r->lost_tracking = true;
      }
   }
}

static void
fault_detach(struct cohmap_region *r)
{
   struct cohmap_fault_state *fs = r->fault;

   if (!fs)
      return;
   /* Writable first, unpublished second: a store between the two still
    * finds its region. */
   if (mprotect(r->ptr, r->size, PROT_READ | PROT_WRITE) != 0) {
      /* Part of wrapped memory was unmapped: mprotect stops at the first
       * hole.  Give every page that is still there back writable. */
      size_t ps = r->ctx->page_size;
      for (size_t off = 0; off < r->size; off += ps)
         mprotect(r->ptr + off, ps, PROT_READ | PROT_WRITE);
   }

   pthread_mutex_lock(&table_lock);
   if (table_update_locked(fs, false) != 0) {
      /* No memory for a smaller table: leave the entry, tell handlers to
       * ignore it, and leak fs (a few hundred bytes, once in a blue
       * moon) rather than free what the table still points to. */
      atomic_store(&fs->dead, true);
      atomic_fetch_add(&table_generation, 1);
      wait_for_handlers();
      pthread_mutex_unlock(&table_lock);
      carry_late_pages(r, fs);
      r->stats.faults += atomic_load(&fs->faults);
      r->fault = NULL;
      return;
   }
   pthread_mutex_unlock(&table_lock);

   carry_late_pages(r, fs);
   r->stats.faults += atomic_load(&fs->faults);
   free((void *)fs->bits);
   free(fs);
   r->fault = NULL;
}

uint64_t
cohmap_fault_count(const struct cohmap_region *r)
{
   return r->fault ? atomic_load(&r->fault->faults) : 0;
}

const struct cohmap_track_ops cohmap_track_fault_ops = {
   .name = "fault",
   .method = COHMAP_METHOD_FAULT,
   .features = COHMAP_TRACK_PAGE_GRANULAR,
   .attach = fault_attach,
   .collect = fault_collect,
   .detach = fault_detach,
};
