/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Memory already registered with another userfaultfd (the application's, or
 * another library's): scan cannot register it.
 *
 *  - cohmap_region_wrap(..., COHMAP_METHOD_SCAN, 0) fails with -EBUSY and
 *    leaves no region and nothing registered behind (whole range and only
 *    one page of it registered elsewhere);
 *  - with COHMAP_REGION_FALLBACK it succeeds with another method that
 *    tracks;
 *  - fault does not use userfaultfd and works there;
 *  - once the other userfaultfd lets go, scan works on the same memory.
 */

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include "robust-util.h"

#define NPAGES 16

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

static size_t ps;

/* Another user's userfaultfd, registered MODE_MISSING on [addr, +len).
 * Returns -1 (after printing why) if this machine has no userfaultfd. */
static int
other_uffd_register(void *addr, size_t len)
{
   int fd = (int)syscall(SYS_userfaultfd,
                         O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
   if (fd < 0) {
      printf("SKIP: userfaultfd(UFFD_USER_MODE_ONLY): %s\n", strerror(errno));
      return -1;
   }
   struct uffdio_api api = {.api = UFFD_API, .features = 0};
   CHECK_SYS(ioctl(fd, UFFDIO_API, &api));
   struct uffdio_register reg = {
      .range = {.start = (uintptr_t)addr, .len = len},
      .mode = UFFDIO_REGISTER_MODE_MISSING,
   };
   CHECK_SYS(ioctl(fd, UFFDIO_REGISTER, &reg));
   return fd;
}

static void
other_uffd_unregister(int fd, void *addr, size_t len)
{
   struct uffdio_range range = {.start = (uintptr_t)addr, .len = len};
   CHECK_SYS(ioctl(fd, UFFDIO_UNREGISTER, &range));
}

/* Populated memory (a missing-page fault in a MODE_MISSING range would
 * block waiting for the other userfaultfd's handler). */
static uint8_t *
populated(size_t npages)
{
   uint8_t *mem = robust_mmap(npages * ps, PROT_READ | PROT_WRITE);
   for (size_t i = 0; i < npages * ps; i += ps)
      mem[i] = 0x5a;
   return mem;
}

/* A few tracking cycles on r. */
static void
check_tracks(struct cohmap_region *r, const char *what)
{
   struct cohmap_dirty d;
   struct robust_mirror m;
   size_t np = cohmap_region_size(r) / ps;
   /* New values on every call: compare reports only bytes that change. */
   static unsigned calls;
   calls++;

   robust_mirror_init(&m, cohmap_region_ptr(r), cohmap_region_size(r));
   CHECK_COLLECT(r, &d, what);
   for (unsigned cycle = 0; cycle < 3; cycle++) {
      for (size_t pg = cycle; pg < np; pg += 4)
         robust_mirror_write(&m, pg * ps + cycle * 5,
                             (uint8_t)(0x10 + cycle + 16 * calls));
      CHECK_COLLECT(r, &d, what);
      robust_mirror_check(&m, &d, what);
   }
   robust_mirror_fini(&m);
}

static int
ebusy_case(size_t reg_first, size_t reg_pages)
{
   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_SCAN))
      return ROBUST_SKIP;
   uint8_t *mem = populated(NPAGES);
   int ufd = other_uffd_register(mem + reg_first * ps, reg_pages * ps);
   if (ufd < 0)
      return ROBUST_SKIP;

   /* 1. scan, no fallback: -EBUSY, no region. */
   struct cohmap_region *r = NULL;
   CHECK_RC(cohmap_region_wrap(ctx, mem, NPAGES * ps, COHMAP_METHOD_SCAN, 0,
                               &r),
            -EBUSY);
   CHECK(r == NULL, "a failed wrap set *out");
   CHECK(cohmap_error_message()[0] != '\0', "no error message for EBUSY");
   printf("EBUSY message: %s\n", cohmap_error_message());
   /* Twice, and with INITIAL_DIRTY: same answer. */
   CHECK_RC(cohmap_region_wrap(ctx, mem, NPAGES * ps, COHMAP_METHOD_SCAN,
                               COHMAP_REGION_INITIAL_DIRTY, &r),
            -EBUSY);

   /* 2. With FALLBACK: another method that tracks. */
   CHECK_OK(cohmap_region_wrap(ctx, mem, NPAGES * ps, COHMAP_METHOD_SCAN,
                               COHMAP_REGION_FALLBACK, &r));
   enum cohmap_method got = cohmap_region_method(r);
   printf("SCAN with FALLBACK on busy memory got method %s\n",
          robust_method_str(got));
   CHECK(got != COHMAP_METHOD_SCAN && got != COHMAP_METHOD_AUTO &&
            cohmap_method_name(got) != NULL,
         "FALLBACK region on busy memory has method %s", robust_method_str(got));
   check_tracks(r, "fallback region on busy memory");
   CHECK_OK(cohmap_region_destroy(r));

   /* 2b. AUTO picks something that works rather than failing. */
   CHECK_OK(cohmap_region_wrap(ctx, mem, NPAGES * ps, COHMAP_METHOD_AUTO, 0,
                               &r));
   printf("AUTO on busy memory got method %s\n",
          robust_method_str(cohmap_region_method(r)));
   CHECK(cohmap_region_method(r) != COHMAP_METHOD_SCAN &&
            cohmap_region_method(r) != COHMAP_METHOD_FAULT,
         "AUTO region on busy memory has method %s",
         robust_method_str(cohmap_region_method(r)));
   check_tracks(r, "AUTO region on busy memory");

   /* 2c. Switching that region to scan fails with EBUSY, changes nothing
    * and loses nothing. */
   {
      struct cohmap_dirty d;
      enum cohmap_method before = cohmap_region_method(r);
      uint8_t *p = cohmap_region_ptr(r);
      p[2 * ps + 9] = 0x99;
      CHECK_RC(cohmap_region_set_method(r, COHMAP_METHOD_SCAN), -EBUSY);
      CHECK(cohmap_region_method(r) == before, "failed set_method changed the "
            "method to %s", robust_method_str(cohmap_region_method(r)));
      p[5 * ps + 1] = 0x98;
      CHECK_COLLECT(r, &d, "collect after a failed set_method");
      CHECK(robust_dirty_covers(&d, 2 * ps + 9, 1) &&
               robust_dirty_covers(&d, 5 * ps + 1, 1),
            "a write around a failed set_method(SCAN) was lost");
   }
   CHECK_OK(cohmap_region_destroy(r));

   /* 3. fault does not care about userfaultfd. */
   if (cohmap_context_method_status(ctx, COHMAP_METHOD_FAULT, NULL) == 0) {
      CHECK_OK(cohmap_region_wrap(ctx, mem, NPAGES * ps, COHMAP_METHOD_FAULT, 0,
                                  &r));
      CHECK(cohmap_region_method(r) == COHMAP_METHOD_FAULT, "method %s",
            robust_method_str(cohmap_region_method(r)));
      check_tracks(r, "fault region on busy memory");
      CHECK_OK(cohmap_region_destroy(r));
   }

   /* 4. The other userfaultfd is still intact (nothing of cohmap's stayed
    * registered: unregistering ours works), and then scan works. */
   other_uffd_unregister(ufd, mem + reg_first * ps, reg_pages * ps);
   close(ufd);
   CHECK_OK(cohmap_region_wrap(ctx, mem, NPAGES * ps, COHMAP_METHOD_SCAN, 0,
                               &r));
   CHECK(cohmap_region_method(r) == COHMAP_METHOD_SCAN, "method %s",
         robust_method_str(cohmap_region_method(r)));
   check_tracks(r, "scan region after the other uffd left");
   CHECK_OK(cohmap_region_destroy(r));

   /* 0, not -EBUSY: the failed wraps left no region behind. */
   CHECK_OK(cohmap_context_destroy(ctx));
   munmap(mem, NPAGES * ps);
   return 0;
}

static int ebusy_whole_range(void) { return ebusy_case(0, NPAGES); }
static int ebusy_one_middle_page(void) { return ebusy_case(7, 1); }
static int ebusy_last_page(void) { return ebusy_case(NPAGES - 1, 1); }

/* A busy range next to a free one: wrapping the free one works with scan
 * and is not disturbed by the neighbour. */
static int
ebusy_neighbour_is_fine(void)
{
   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_SCAN))
      return ROBUST_SKIP;
   uint8_t *mem = populated(2 * NPAGES);
   int ufd = other_uffd_register(mem, NPAGES * ps);
   if (ufd < 0)
      return ROBUST_SKIP;
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_wrap(ctx, mem + NPAGES * ps, NPAGES * ps,
                               COHMAP_METHOD_SCAN, 0, &r));
   CHECK(cohmap_region_method(r) == COHMAP_METHOD_SCAN, "method %s",
         robust_method_str(cohmap_region_method(r)));
   check_tracks(r, "scan region next to busy memory");
   CHECK_OK(cohmap_region_destroy(r));
   other_uffd_unregister(ufd, mem, NPAGES * ps);
   close(ufd);
   CHECK_OK(cohmap_context_destroy(ctx));
   munmap(mem, 2 * NPAGES * ps);
   return 0;
}

ROBUST_MAIN(ROBUST_CASE(ebusy_whole_range), ROBUST_CASE(ebusy_one_middle_page),
            ROBUST_CASE(ebusy_last_page), ROBUST_CASE(ebusy_neighbour_is_fine))
