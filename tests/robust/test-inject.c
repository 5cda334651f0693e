/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Failure injection into the tracking core's system calls (issue 7, item
 * 3): malloc, calloc, realloc, mmap, mprotect, madvise, ioctl and open,
 * each call site in turn.
 *
 * The program is linked with ld's --wrap for those functions
 * (tests/robust/meson.build), so every call from this file and from the
 * static cohmap_internal library goes through the __wrap_ functions below
 * (calls inside libc and the sanitizer runtimes do not).  An injection
 * window is armed around one operation on this thread only — the fault
 * engine's SIGSEGV handler runs on the storing thread, so its mprotect
 * calls count too — and the n-th wrapped call in it fails (NULL,
 * MAP_FAILED or -1, errno ENOMEM; EINTR would be retried).  For each
 * operation and method the test runs n = 0, 1, 2, ... until a run
 * completes without reaching the n-th call.  Every run must:
 *
 *  - return 0 or a negative errno with a message, never crash or hang;
 *  - on failure leave nothing half-made (out-parameters NULL);
 *  - lose no data in what stays alive: every byte written before the
 *    operation is reported by it (if it was a collect that succeeded) or
 *    by the next collect without injection;
 *  - leak nothing (the ASan leg checks at exit).
 *
 * Each operation must have hit at least one injected failure, which proves
 * the wrapping reaches the library.
 */

#include "robust-util.h"

#include <stdatomic.h>
#include <sys/ioctl.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd,
                  off_t off);
void *__real_mmap64(void *addr, size_t len, int prot, int flags, int fd,
                    off_t off);
int __real_mprotect(void *addr, size_t len, int prot);
int __real_madvise(void *addr, size_t len, int advice);
int __real_ioctl(int fd, unsigned long req, ...);
int __real_open(const char *path, int flags, ...);
int __real_open64(const char *path, int flags, ...);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd,
                  off_t off);
void *__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd,
                    off_t off);
int __wrap_mprotect(void *addr, size_t len, int prot);
int __wrap_madvise(void *addr, size_t len, int advice);
int __wrap_ioctl(int fd, unsigned long req, ...);
int __wrap_open(const char *path, int flags, ...);
int __wrap_open64(const char *path, int flags, ...);

/* Only the arming thread's calls count (signal handlers included: they run
 * on it); volatile for the handler's sake. */
static __thread volatile bool armed;
static volatile unsigned long countdown;
static volatile bool fired;
static unsigned long injected_total;

static bool
should_fail(void)
{
   if (!armed || fired)
      return false;
   if (countdown == 0) {
      fired = true;
      injected_total++;
      return true;
   }
   countdown--;
   return false;
}

#define FAIL_PTR(nullv)                                                      \
   do {                                                                      \
      if (should_fail()) {                                                   \
         errno = ENOMEM;                                                     \
         return nullv;                                                       \
      }                                                                      \
   } while (0)

void *
__wrap_malloc(size_t size)
{
   FAIL_PTR(NULL);
   return __real_malloc(size);
}

void *
__wrap_calloc(size_t n, size_t size)
{
   FAIL_PTR(NULL);
   return __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t size)
{
   FAIL_PTR(NULL);
   return __real_realloc(p, size);
}

void *
__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
   FAIL_PTR(MAP_FAILED);
   return __real_mmap(addr, len, prot, flags, fd, off);
}

void *
__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
   FAIL_PTR(MAP_FAILED);
   return __real_mmap64(addr, len, prot, flags, fd, off);
}

int
__wrap_mprotect(void *addr, size_t len, int prot)
{
   FAIL_PTR(-1);
   return __real_mprotect(addr, len, prot);
}

int
__wrap_madvise(void *addr, size_t len, int advice)
{
   FAIL_PTR(-1);
   return __real_madvise(addr, len, advice);
}

/* ioctl's third argument is one pointer-sized value for every request
 * cohmap makes. */
int
__wrap_ioctl(int fd, unsigned long req, ...)
{
   va_list ap;
   va_start(ap, req);
   void *arg = va_arg(ap, void *);
   va_end(ap);
   FAIL_PTR(-1);
   return __real_ioctl(fd, req, arg);
}

int
__wrap_open(const char *path, int flags, ...)
{
   va_list ap;
   va_start(ap, flags);
   int mode = (flags & O_CREAT) ? va_arg(ap, int) : 0;
   va_end(ap);
   FAIL_PTR(-1);
   return __real_open(path, flags, mode);
}

int
__wrap_open64(const char *path, int flags, ...)
{
   va_list ap;
   va_start(ap, flags);
   int mode = (flags & O_CREAT) ? va_arg(ap, int) : 0;
   va_end(ap);
   FAIL_PTR(-1);
   return __real_open64(path, flags, mode);
}

static void
arm(unsigned long n)
{
   countdown = n;
   fired = false;
   armed = true;
}

static bool
disarm(void)
{
   armed = false;
   return fired;
}

/* --- the operations ---------------------------------------------------- */

#define NPAGES 16
#define MAX_RUNS 400

static size_t ps;
static unsigned round_no;

static void
check_rc(int rc, const char *what, unsigned long n)
{
   CHECK(rc == 0 || (rc < 0 && rc > -4096), "%s, failure %lu: returned %d",
         what, n, rc);
   if (rc)
      CHECK(strlen(cohmap_error_message()) > 0,
            "%s, failure %lu: %s without a message", what, n,
            robust_errstr(rc));
}

/* Stores into every other page; the bytes go into m. */
static void
scribble(struct robust_mirror *m)
{
   round_no++;
   for (size_t pg = round_no % 2; pg < NPAGES; pg += 2)
      robust_mirror_write(m, pg * ps + (round_no * 29) % ps,
                          (uint8_t)(round_no * 7 + 1));
}

/* A collect without injection must report everything still pending. */
static void
settle(struct cohmap_region *r, struct robust_mirror *m, const char *what)
{
   struct cohmap_dirty d;
   CHECK_COLLECT(r, &d, what);
   robust_mirror_check(m, &d, what);
}

static struct cohmap_context *
context(void)
{
   struct cohmap_context_options o;
   cohmap_context_options_init(&o);
   o.flags |= COHMAP_CONTEXT_IGNORE_ENV;
   struct cohmap_context *ctx = NULL;
   CHECK_OK(cohmap_context_create(&o, &ctx));
   return ctx;
}

/* Context creation: probing and calibration fail at every call. */
static int
inject_context_create(void)
{
   unsigned long n;
   for (n = 0; n < MAX_RUNS; n++) {
      struct cohmap_context_options o;
      cohmap_context_options_init(&o);
      o.flags |= COHMAP_CONTEXT_IGNORE_ENV;
      struct cohmap_context *ctx = NULL;
      arm(n);
      int rc = cohmap_context_create(&o, &ctx);
      bool hit = disarm();
      check_rc(rc, "context create", n);
      CHECK(rc == 0 ? ctx != NULL : ctx == NULL, "context create: out %p",
            (void *)ctx);
      if (ctx) {
         /* What came up tracks. */
         struct cohmap_region *r = NULL;
         CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_AUTO,
                                       0, &r));
         struct robust_mirror m;
         robust_mirror_init(&m, cohmap_region_ptr(r), NPAGES * ps);
         settle(r, &m, "after an injected context create");
         scribble(&m);
         settle(r, &m, "after an injected context create");
         robust_mirror_fini(&m);
         CHECK_OK(cohmap_region_destroy(r));
         CHECK_OK(cohmap_context_destroy(ctx));
      }
      if (!hit)
         break;
   }
   printf("context create: %lu failures injected\n", n);
   CHECK(n > 0, "no wrapped call reached");
   return 0;
}

/* Region creation, a collect, a switch and destruction, each with its
 * calls failing in turn, under method m. */
static int
inject_method(enum cohmap_method m)
{
   ps = robust_page_size();
   struct cohmap_context *ctx = context();
   if (m != COHMAP_METHOD_AUTO && robust_method_unavailable(ctx, m)) {
      CHECK_OK(cohmap_context_destroy(ctx));
      return ROBUST_SKIP;
   }
   const char *name = robust_method_str(m);
   char what[128];
   unsigned long n, create_n = 0, collect_n = 0, switch_n = 0;

   /* create */
   for (n = 0; n < MAX_RUNS; n++) {
      struct cohmap_region *r = NULL;
      arm(n);
      int rc = cohmap_region_create(ctx, NPAGES * ps, m, 0, &r);
      bool hit = disarm();
      snprintf(what, sizeof(what), "%s: region create", name);
      check_rc(rc, what, n);
      CHECK(rc == 0 ? r != NULL : r == NULL, "%s: out %p", what, (void *)r);
      if (r) {
         struct robust_mirror mm;
         robust_mirror_init(&mm, cohmap_region_ptr(r), NPAGES * ps);
         settle(r, &mm, what);
         scribble(&mm);
         settle(r, &mm, what);
         robust_mirror_fini(&mm);
         CHECK_OK(cohmap_region_destroy(r));
      }
      if (!hit)
         break;
   }
   create_n = n;

   /* collect: writes pending, the collect's calls fail in turn */
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, m, 0, &r));
   struct robust_mirror mm;
   robust_mirror_init(&mm, cohmap_region_ptr(r), NPAGES * ps);
   settle(r, &mm, "collect setup");
   for (n = 0; n < MAX_RUNS; n++) {
      struct cohmap_dirty d;
      scribble(&mm);
      arm(n);
      int rc = cohmap_region_collect(r, 0, &d);
      bool hit = disarm();
      snprintf(what, sizeof(what), "%s: collect (on %s), failure %lu", name,
               robust_method_str(cohmap_region_method(r)), n);
      check_rc(rc, what, n);
      if (rc == 0)
         robust_mirror_check(&mm, &d, what);
      /* Failed or not, nothing is lost for the next collect. */
      scribble(&mm);
      settle(r, &mm, what);
      if (!hit)
         break;
   }
   collect_n = n;

   /* stores: under fault the SIGSEGV handler's mprotect fails in turn
    * (it runs on this thread); the others make no wrapped call there */
   unsigned long store_n = 0;
   for (n = 0; n < MAX_RUNS; n++) {
      /* A fresh region each time: one whose engine gave up is on another
       * method. */
      struct cohmap_region *r2 = NULL;
      struct robust_mirror m2;
      CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, m, 0, &r2));
      robust_mirror_init(&m2, cohmap_region_ptr(r2), NPAGES * ps);
      settle(r2, &m2, "stores setup");
      arm(n);
      scribble(&m2);
      bool hit = disarm();
      snprintf(what, sizeof(what), "%s: stores, failure %lu", name, n);
      settle(r2, &m2, what);
      scribble(&m2);
      settle(r2, &m2, what);
      robust_mirror_fini(&m2);
      CHECK_OK(cohmap_region_destroy(r2));
      store_n += hit;
      if (!hit)
         break;
   }

   /* switches to every other method and back */
   for (enum cohmap_method to = COHMAP_METHOD_SCAN;
        to < COHMAP_METHOD_COUNT; to++) {
      if (robust_method_unavailable(ctx, to))
         continue;
      for (n = 0; n < MAX_RUNS; n++) {
         scribble(&mm);
         arm(n);
         int rc = cohmap_region_set_method(r, to);
         bool hit = disarm();
         snprintf(what, sizeof(what), "%s: switch to %s, failure %lu", name,
                  robust_method_str(to), n);
         check_rc(rc, what, n);
         scribble(&mm);
         settle(r, &mm, what);
         CHECK_OK(cohmap_region_set_method(r, m));
         settle(r, &mm, what);
         switch_n += hit;
         if (!hit)
            break;
      }
   }
   robust_mirror_fini(&mm);

   /* destroy */
   arm(0);
   int rc = cohmap_region_destroy(r);
   disarm();
   check_rc(rc, "destroy", 0);
   if (rc)
      CHECK_OK(cohmap_region_destroy(r));

   printf("%s: failures injected: %lu in create, %lu in collect, %lu in "
          "stores, %lu in switches\n",
          name, create_n, collect_n, store_n, switch_n);
   CHECK(create_n > 0 && switch_n > 0, "%s: no wrapped call reached", name);
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

static int inject_scan(void) { return inject_method(COHMAP_METHOD_SCAN); }
static int inject_fault(void) { return inject_method(COHMAP_METHOD_FAULT); }
static int inject_compare(void) { return inject_method(COHMAP_METHOD_COMPARE); }
static int inject_full(void) { return inject_method(COHMAP_METHOD_FULL); }
static int inject_auto(void) { return inject_method(COHMAP_METHOD_AUTO); }

static int
inject_context(void)
{
   ps = robust_page_size();
   return inject_context_create();
}

ROBUST_MAIN(ROBUST_CASE(inject_context), ROBUST_CASE(inject_scan),
            ROBUST_CASE(inject_fault), ROBUST_CASE(inject_compare),
            ROBUST_CASE(inject_full), ROBUST_CASE(inject_auto))
