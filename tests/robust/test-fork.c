/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * fork() while regions are tracked, for every method.
 *
 * The parent writes page A and forks.  A first child only writes tracked
 * memory (faults through the inherited handler, private copies); a second
 * child writes, collects twice (the child's own collect must report at
 * least what the child wrote), destroys its region and context, and exits
 * 0.  The parent's next collect must still report page A: an inherited
 * /proc/self/pagemap fd or uffd would let the child re-arm or unregister
 * the PARENT'S pages, and a shared dirty bitmap would let it steal the
 * parent's dirty bits.  After that the parent's tracking must still be
 * armed (a collect with no writes reports nothing; new writes are
 * reported).  Three rounds, so that a parent that forked once is forked
 * again.
 */

#include <pthread.h>
#include <stdatomic.h>

#include "robust-util.h"

#define NPAGES 64

static size_t ps;

/* The second child: write pages c and c+1, collect after each; the child's
 * collect must work and report at least what it wrote. */
static void
child_collects(struct cohmap_context *ctx, struct cohmap_region *r,
               size_t c, unsigned round)
{
   struct cohmap_dirty d;
   uint8_t *p = cohmap_region_ptr(r);
   struct robust_mirror m;

   robust_mirror_init(&m, p, NPAGES * ps);
   for (unsigned i = 0; i < 2; i++) {
      size_t off = (c + i) * ps + 11 * round + i;
      robust_mirror_write(&m, off, (uint8_t)(0xc0 + round + i));
      int rc = robust_collect(r, &d, "child collect");
      CHECK(rc == 0, "child: collect %u returned %d (%s): %s", i, rc,
            robust_errstr(rc), cohmap_error_message());
      robust_mirror_check(&m, &d, "child collect");
   }
   /* And a third collect after a write on a page the parent dirtied. */
   robust_mirror_write(&m, 5 * ps + 1, 0xcc);
   CHECK_COLLECT(r, &d, "child collect 3");
   robust_mirror_check(&m, &d, "child collect 3");

   /* A new region of the same method on the inherited context. */
   struct cohmap_region *r2 = NULL;
   CHECK_OK(cohmap_region_create(ctx, 8 * ps, cohmap_region_method(r), 0, &r2));
   CHECK_COLLECT(r2, &d, "child: new region, initial");
   ((volatile uint8_t *)cohmap_region_ptr(r2))[3 * ps + 3] = 3;
   CHECK_COLLECT(r2, &d, "child: new region");
   CHECK(robust_dirty_covers(&d, 3 * ps + 3, 1),
         "child: a write to a region created in the child was not reported");
   CHECK_OK(cohmap_region_destroy(r2));

   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   robust_mirror_fini(&m);
}

static int
fork_case(enum cohmap_method method, bool wrap)
{
   struct cohmap_dirty d;
   char what[128];
   void *mem = NULL;

   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, method))
      return ROBUST_SKIP;
   struct cohmap_region *r = NULL;
   if (wrap) {
      mem = robust_mmap(NPAGES * ps, PROT_READ | PROT_WRITE);
      memset(mem, 0x11, NPAGES * ps);
      CHECK_OK(cohmap_region_wrap(ctx, mem, NPAGES * ps, method, 0, &r));
   } else {
      CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, method, 0, &r));
   }
   CHECK(cohmap_region_method(r) == method, "method is %s",
         robust_method_str(cohmap_region_method(r)));
   uint8_t *p = cohmap_region_ptr(r);
   struct robust_mirror m;
   robust_mirror_init(&m, p, NPAGES * ps);
   CHECK_COLLECT(r, &d, "initial collect");

   for (unsigned round = 0; round < 3; round++) {
      size_t a = 5 + round * 7;
      robust_mirror_write(&m, a * ps + round, (uint8_t)(0xa0 + round));
      robust_mirror_write(&m, 3 * ps + 7, (uint8_t)(0xb0 + round));

      /* Child 1: writes only. */
      pid_t pid = robust_fork();
      if (pid == 0) {
         alarm(20);
         for (size_t pg = 0; pg < NPAGES; pg += 5)
            ((volatile uint8_t *)p)[pg * ps + 3] = 0xee;
         p[a * ps + round] = 0x01;
         robust_exit(0);
      }
      int status = robust_waitpid(pid);
      snprintf(what, sizeof(what), "%s round %u child that writes",
               robust_method_str(method), round);
      CHECK_CHILD_EXIT0(status, what);

      /* Child 2: writes, collects, destroys. */
      pid = robust_fork();
      if (pid == 0) {
         alarm(20);
         child_collects(ctx, r, 40 + round, round);
         robust_exit(0);
      }
      status = robust_waitpid(pid);
      snprintf(what, sizeof(what), "%s round %u child that collects",
               robust_method_str(method), round);
      CHECK_CHILD_EXIT0(status, what);

      /* The parent's memory is untouched by the children ... */
      CHECK(p[a * ps + round] == 0xa0 + round && p[3 * ps + 7] == 0xb0 + round,
            "a child's write reached the parent's memory");

      /* ... and its tracking too: page A is still reported. */
      snprintf(what, sizeof(what), "%s round %u parent collect after fork",
               robust_method_str(method), round);
      int rc = robust_collect(r, &d, what);
      CHECK(rc == 0, "%s returned %d (%s): %s", what, rc, robust_errstr(rc),
            cohmap_error_message());
      robust_mirror_check(&m, &d, what);
      printf("%s: %zu ranges, %zu bytes\n", what, d.count, d.bytes);

      /* Still armed in the parent. */
      snprintf(what, sizeof(what), "%s round %u parent collect without writes",
               robust_method_str(method), round);
      CHECK_COLLECT(r, &d, what);
      if (method != COHMAP_METHOD_FULL) {
         if (d.count)
            robust_print_dirty(what, &d);
         CHECK(d.count == 0, "%s: the parent wrote nothing since its last "
               "collect, yet %zu bytes were reported (tracking degraded by "
               "the child)", what, d.bytes);
      }
      robust_mirror_write(&m, 20 * ps + round, 0x20);
      robust_mirror_write(&m, (NPAGES - 1) * ps + round, 0x21);
      snprintf(what, sizeof(what), "%s round %u parent collect of new writes",
               robust_method_str(method), round);
      CHECK_COLLECT(r, &d, what);
      robust_mirror_check(&m, &d, what);
      if (method == COHMAP_METHOD_SCAN || method == COHMAP_METHOD_FAULT) {
         CHECK(d.count == 2 && d.bytes == 2 * ps,
               "%s: expected exactly pages 20 and %d, got %zu ranges, %zu "
               "bytes", what, NPAGES - 1, d.count, d.bytes);
      }
   }

   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   robust_mirror_fini(&m);
   if (mem)
      munmap(mem, NPAGES * ps);
   return 0;
}

static int fork_scan(void) { return fork_case(COHMAP_METHOD_SCAN, false); }
static int fork_scan_wrap(void) { return fork_case(COHMAP_METHOD_SCAN, true); }
static int fork_fault(void) { return fork_case(COHMAP_METHOD_FAULT, false); }
static int fork_fault_wrap(void) { return fork_case(COHMAP_METHOD_FAULT, true); }
static int fork_compare(void) { return fork_case(COHMAP_METHOD_COMPARE, false); }
static int fork_full(void) { return fork_case(COHMAP_METHOD_FULL, false); }

/*
 * The parent keeps writing after a child that collected exited, and a
 * grandchild collects too: the scan engine must follow the process it runs
 * in (reopen after each fork), not just the first fork.
 */
static int
fork_scan_nested(void)
{
   struct cohmap_dirty d;

   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_SCAN))
      return ROBUST_SKIP;
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_SCAN, 0, &r));
   uint8_t *p = cohmap_region_ptr(r);
   struct robust_mirror m;
   robust_mirror_init(&m, p, NPAGES * ps);
   CHECK_COLLECT(r, &d, "initial");

   robust_mirror_write(&m, 2 * ps, 2);
   pid_t pid = robust_fork();
   if (pid == 0) {
      alarm(20);
      /* Child: collect (reports at least page 2, the parent's pending
       * write it inherited, or more), then fork a grandchild. */
      robust_mirror_write(&m, 4 * ps, 4);
      CHECK_COLLECT(r, &d, "child collect");
      robust_mirror_check(&m, &d, "child collect");
      robust_mirror_write(&m, 6 * ps, 6);
      pid_t gpid = robust_fork();
      if (gpid == 0) {
         robust_mirror_write(&m, 8 * ps, 8);
         CHECK_COLLECT(r, &d, "grandchild collect");
         robust_mirror_check(&m, &d, "grandchild collect");
         robust_exit(0);
      }
      int gst = robust_waitpid(gpid);
      CHECK_CHILD_EXIT0(gst, "grandchild");
      /* The child's own page 6 survives the grandchild's collect. */
      CHECK_COLLECT(r, &d, "child collect after the grandchild");
      robust_mirror_check(&m, &d, "child collect after the grandchild");
      robust_exit(0);
   }
   int st = robust_waitpid(pid);
   CHECK_CHILD_EXIT0(st, "child");
   CHECK_COLLECT(r, &d, "parent collect");
   robust_mirror_check(&m, &d, "parent collect");
   CHECK(d.count == 1 && d.ranges[0].offset == 2 * ps &&
            d.ranges[0].length == ps,
         "parent: expected exactly page 2, got %zu ranges, %zu bytes",
         d.count, d.bytes);

   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   robust_mirror_fini(&m);
   return 0;
}

/*
 * fork() while another thread is inside cohmap's fault handler (it keeps
 * writing a fault region that the forking thread keeps re-protecting).
 * The child has only the forking thread: any state "a handler is running"
 * the other thread left is frozen in the child.  The child must still be
 * able to create, use and destroy fault regions (no hang).  (The writer
 * thread calls no cohmap function; it only stores to tracked memory.)
 */
static atomic_bool writer_stop;
static uint8_t *writer_mem;

static void *
writer_thread(void *arg)
{
   (void)arg;
   unsigned v = 0;
   while (!atomic_load(&writer_stop)) {
      for (size_t pg = 0; pg < NPAGES; pg++)
         ((volatile uint8_t *)writer_mem)[pg * ps + (v % 64)] = (uint8_t)v;
      v++;
   }
   return NULL;
}

static int
fork_while_faulting(void)
{
   struct cohmap_dirty d;

   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
      return ROBUST_SKIP;
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0, &r));
   writer_mem = cohmap_region_ptr(r);
   CHECK_COLLECT(r, &d, "initial");
   pthread_t t;
   CHECK(pthread_create(&t, NULL, writer_thread, NULL) == 0, "thread");

   unsigned forks = ROBUST_ASAN ? 60 : 200;
   uint64_t faults_before = 0;
   for (unsigned i = 0; i < forks; i++) {
      CHECK_COLLECT(r, &d, "parent collect while the writer runs");
      pid_t pid = robust_fork();
      if (pid == 0) {
         struct cohmap_dirty cd;
         alarm(5);
         struct cohmap_region *r2 = NULL;
         CHECK_OK(cohmap_region_create(ctx, 4 * ps, COHMAP_METHOD_FAULT, 0,
                                       &r2));
         ((volatile uint8_t *)cohmap_region_ptr(r2))[ps] = 1;
         CHECK_COLLECT(r2, &cd, "child: collect of its new region");
         CHECK(robust_dirty_covers(&cd, ps, 1), "child: write not reported");
         CHECK_OK(cohmap_region_destroy(r2));
         ((volatile uint8_t *)writer_mem)[3 * ps] = 0xcc;
         CHECK_COLLECT(r, &cd, "child: collect of the inherited region");
         CHECK(robust_dirty_covers(&cd, 3 * ps, 1), "child: write not "
               "reported");
         CHECK_OK(cohmap_region_destroy(r));
         CHECK_OK(cohmap_context_destroy(ctx));
         robust_exit(0);
      }
      int st = robust_waitpid(pid);
      char what[64];
      snprintf(what, sizeof(what), "child %u forked while faulting", i);
      CHECK_CHILD_EXIT0(st, what);
   }
   atomic_store(&writer_stop, true);
   pthread_join(t, NULL);
   struct cohmap_region_stats st;
   CHECK_OK(cohmap_region_get_stats(r, &st));
   printf("%u forks while the writer took %" PRIu64 " faults\n", forks,
          st.faults - faults_before);
   CHECK(st.faults > forks, "the writer hardly faulted (%" PRIu64 "): the "
         "test did not test anything", st.faults);
   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

ROBUST_MAIN(ROBUST_CASE(fork_scan), ROBUST_CASE(fork_scan_wrap),
            ROBUST_CASE(fork_fault), ROBUST_CASE(fork_fault_wrap),
            ROBUST_CASE(fork_compare), ROBUST_CASE(fork_full),
            ROBUST_CASE(fork_scan_nested), ROBUST_CASE(fork_while_faulting))
