/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Bad input gets a clear -errno and an error message, never a crash, never
 * a half-made object, and never lost data:
 *
 *  - wrap/create argument checks (alignment, size 0, NULL, huge sizes,
 *    size rounding overflow, unknown methods), for every method; nothing is
 *    left registered or protected, the context can be destroyed afterwards;
 *  - wrapping memory that is not mapped: an error, or collects fail;
 *  - collect with unknown flags fails without re-arming (the write is
 *    reported by the next good collect);
 *  - stale and never-created region pointers give -EBADF (under ASan this
 *    also proves the library does not read freed memory to find out);
 *  - a context with live regions cannot be destroyed and keeps working;
 *  - method names and enum values;
 *  - cohmap_error_message() (per thread);
 *  - COHMAP_METHOD / COHMAP_DEBUG environment parsing (setenv() here).
 */

#include <pthread.h>

#include "robust-util.h"

#define NPAGES 4

static size_t ps;

static const enum cohmap_method all_methods[] = {
   COHMAP_METHOD_AUTO, COHMAP_METHOD_SCAN, COHMAP_METHOD_FAULT,
   COHMAP_METHOD_COMPARE, COHMAP_METHOD_FULL,
};
#define N_METHODS (sizeof(all_methods) / sizeof(all_methods[0]))

static bool
usable(struct cohmap_context *ctx, enum cohmap_method m)
{
   return cohmap_context_method_status(ctx, m, NULL) == 0;
}

/* rc must be want; the error message must be set. */
#define CHECK_ERR(expr, want)                                                \
   do {                                                                      \
      CHECK_RC(expr, want);                                                  \
      CHECK(cohmap_error_message()[0] != '\0',                               \
            "%s failed with %d but cohmap_error_message() is empty", #expr,  \
            (int)(want));                                                    \
   } while (0)

/* rc must be negative (the exact errno is not specified). */
#define CHECK_FAILS(expr)                                                    \
   do {                                                                      \
      int rcf_ = (expr);                                                     \
      CHECK(rcf_ < 0, "%s returned %d, expected a negative errno", #expr,    \
            rcf_);                                                           \
   } while (0)

static int
wrap_bad_args(void)
{
   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   uint8_t *mem = robust_mmap(NPAGES * ps, PROT_READ | PROT_WRITE);
   memset(mem, 0x42, NPAGES * ps);

   for (size_t i = 0; i < N_METHODS; i++) {
      enum cohmap_method m = all_methods[i];
      struct cohmap_region *r = NULL;
      printf("method %s\n", robust_method_str(m));
      CHECK_ERR(cohmap_region_wrap(ctx, mem + 1, ps, m, 0, &r), -EINVAL);
      CHECK_ERR(cohmap_region_wrap(ctx, mem + ps / 2, ps, m, 0, &r), -EINVAL);
      CHECK_ERR(cohmap_region_wrap(ctx, mem, ps + 1, m, 0, &r), -EINVAL);
      CHECK_ERR(cohmap_region_wrap(ctx, mem, ps - 1, m, 0, &r), -EINVAL);
      CHECK_ERR(cohmap_region_wrap(ctx, mem, 0, m, 0, &r), -EINVAL);
      CHECK_ERR(cohmap_region_wrap(ctx, NULL, ps, m, 0, &r), -EINVAL);
      CHECK_ERR(cohmap_region_wrap(ctx, NULL, 0, m, 0, &r), -EINVAL);
      CHECK_ERR(cohmap_region_wrap(NULL, mem, ps, m, 0, &r), -EINVAL);
      CHECK_ERR(cohmap_region_wrap(ctx, mem, ps, m, 0, NULL), -EINVAL);
      /* ptr + size wraps around the address space. */
      CHECK_FAILS(cohmap_region_wrap(ctx, mem, SIZE_MAX - ps + 1, m, 0, &r));
      CHECK_FAILS(cohmap_region_wrap(ctx, mem, (size_t)1 << 62, m, 0, &r));
      CHECK(r == NULL, "a failed wrap set *out to %p", (void *)r);
   }
   struct cohmap_region *r = NULL;
   CHECK_ERR(cohmap_region_wrap(ctx, mem, ps, (enum cohmap_method)99, 0, &r),
             -EINVAL);
   CHECK_ERR(cohmap_region_wrap(ctx, mem, ps, (enum cohmap_method)-1, 0, &r),
             -EINVAL);
   CHECK_ERR(cohmap_region_wrap(ctx, mem, ps,
                                (enum cohmap_method)COHMAP_METHOD_COUNT, 0, &r),
             -EINVAL);
   CHECK_ERR(cohmap_region_wrap(ctx, mem, ps, COHMAP_METHOD_AUTO, 1u << 31, &r),
             -EINVAL);
   CHECK(r == NULL, "a failed wrap set *out");

   /* Nothing was left protected or changed: write every page (a page left
    * write-protected kills the test here). */
   for (size_t i = 0; i < NPAGES * ps; i++)
      CHECK(mem[i] == 0x42, "byte %zu changed by failed wraps", i);
   for (size_t pg = 0; pg < NPAGES; pg++)
      ((volatile uint8_t *)mem)[pg * ps] = 1;
   /* No region was left in the context. */
   CHECK_OK(cohmap_context_destroy(ctx));
   munmap(mem, NPAGES * ps);
   return 0;
}

static int
create_bad_args(void)
{
   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   for (size_t i = 0; i < N_METHODS; i++) {
      enum cohmap_method m = all_methods[i];
      struct cohmap_region *r = NULL;
      printf("method %s\n", robust_method_str(m));
      CHECK_ERR(cohmap_region_create(ctx, 0, m, 0, &r), -EINVAL);
      CHECK_ERR(cohmap_region_create(NULL, ps, m, 0, &r), -EINVAL);
      CHECK_ERR(cohmap_region_create(ctx, ps, m, 0, NULL), -EINVAL);
      size_t huge[] = {SIZE_MAX, SIZE_MAX - ps + 2, SIZE_MAX / 2 + 1,
                       (size_t)1 << 62, (size_t)1 << 50};
      for (size_t h = 0; h < sizeof(huge) / sizeof(huge[0]); h++) {
         int rc = cohmap_region_create(ctx, huge[h], m, 0, &r);
         CHECK(rc == -ENOMEM || rc == -EINVAL,
               "cohmap_region_create(size %#zx) returned %d (%s), expected "
               "-ENOMEM or -EINVAL; message \"%s\"",
               huge[h], rc, robust_errstr(rc), cohmap_error_message());
         CHECK(cohmap_error_message()[0], "no error message");
      }
      CHECK(r == NULL, "a failed create set *out");
   }
   struct cohmap_region *r = NULL;
   CHECK_ERR(cohmap_region_create(ctx, ps, (enum cohmap_method)99, 0, &r),
             -EINVAL);
   CHECK_ERR(cohmap_region_create(ctx, ps, COHMAP_METHOD_AUTO, 1u << 31, &r),
             -EINVAL);
   CHECK(r == NULL, "a failed create set *out");
   /* An odd size works and is rounded up. */
   CHECK_OK(cohmap_region_create(ctx, 3, COHMAP_METHOD_AUTO, 0, &r));
   CHECK(cohmap_region_size(r) == ps, "size 3 rounded to %zu",
         cohmap_region_size(r));
   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

/* Wrapping memory that is not mapped: fails, or the collect does; never a
 * crash.  Each method in its own child so that a crash names it. */
static int
wrap_unmapped(void)
{
   ps = robust_page_size();
   for (size_t i = 0; i < N_METHODS; i++) {
      enum cohmap_method m = all_methods[i];
      pid_t pid = robust_fork();
      if (pid == 0) {
         alarm(20);
         struct cohmap_context *ctx = robust_context_create();
         if (!usable(ctx, m))
            robust_exit(0);
         uint8_t *hole = robust_mmap(NPAGES * ps, PROT_READ | PROT_WRITE);
         CHECK_SYS(munmap(hole, NPAGES * ps));
         struct cohmap_region *r = NULL;
         int rc = cohmap_region_wrap(ctx, hole, NPAGES * ps, m, 0, &r);
         printf("%s: wrap of unmapped memory: %d (%s)\n", robust_method_str(m),
                rc, robust_errstr(rc));
         if (rc == 0) {
            struct cohmap_dirty d;
            CHECK_RC(cohmap_region_collect(r, 0, &d), -EFAULT);
            CHECK_OK(cohmap_region_destroy(r));
         } else {
            CHECK(rc < 0, "positive return %d", rc);
            CHECK(r == NULL, "failed wrap set *out");
         }
         /* Half mapped. */
         uint8_t *half = robust_mmap(NPAGES * ps, PROT_READ | PROT_WRITE);
         CHECK_SYS(munmap(half + 2 * ps, 2 * ps));
         r = NULL;
         rc = cohmap_region_wrap(ctx, half, NPAGES * ps, m, 0, &r);
         printf("%s: wrap of half-mapped memory: %d (%s)\n",
                robust_method_str(m), rc, robust_errstr(rc));
         if (rc == 0) {
            struct cohmap_dirty d;
            CHECK_RC(cohmap_region_collect(r, 0, &d), -EFAULT);
            CHECK_OK(cohmap_region_destroy(r));
         } else {
            CHECK(r == NULL, "failed wrap set *out");
         }
         /* The mapped half is still the caller's and writable. */
         ((volatile uint8_t *)half)[0] = 1;
         ((volatile uint8_t *)half)[ps] = 1;
         CHECK_OK(cohmap_context_destroy(ctx));
         robust_exit(0);
      }
      int st = robust_waitpid(pid);
      char what[64];
      snprintf(what, sizeof(what), "wrap of unmapped memory with %s",
               robust_method_str(m));
      CHECK_CHILD_EXIT0(st, what);
   }
   return 0;
}

static int
collect_bad_args(void)
{
   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   for (size_t i = 0; i < N_METHODS; i++) {
      enum cohmap_method m = all_methods[i];
      if (!usable(ctx, m))
         continue;
      printf("method %s\n", robust_method_str(m));
      struct cohmap_region *r = NULL;
      struct cohmap_dirty d;
      CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, m, 0, &r));
      uint8_t *p = cohmap_region_ptr(r);
      CHECK_COLLECT(r, &d, "initial");
      p[ps + 3] = 7;
      CHECK_ERR(cohmap_region_collect(r, 1, &d), -EINVAL);
      CHECK_ERR(cohmap_region_collect(r, 0x80000000u, &d), -EINVAL);
      CHECK_ERR(cohmap_region_collect(r, 0, NULL), -EINVAL);
      int rc = cohmap_region_collect(NULL, 0, &d);
      CHECK(rc == -EINVAL || rc == -EBADF, "collect(NULL) returned %d", rc);
      struct cohmap_region_stats st;
      CHECK_ERR(cohmap_region_get_stats(r, NULL), -EINVAL);
      rc = cohmap_region_get_stats(NULL, &st);
      CHECK(rc == -EINVAL || rc == -EBADF, "get_stats(NULL) returned %d", rc);
      CHECK_ERR(cohmap_region_set_method(r, (enum cohmap_method)99), -EINVAL);
      CHECK(cohmap_region_method(r) != (enum cohmap_method)99 &&
               cohmap_method_name(cohmap_region_method(r)) != NULL,
            "a failed set_method changed the method");
      /* The failed calls re-armed nothing: the write is reported now. */
      CHECK_COLLECT(r, &d, "collect after the bad calls");
      CHECK(robust_dirty_covers(&d, ps + 3, 1),
            "%s: a write made before collects that failed with -EINVAL was "
            "not reported by the next good collect",
            robust_method_str(m));
      CHECK(((const uint8_t *)d.data)[ps + 3] == 7, "wrong data");
      CHECK_OK(cohmap_region_destroy(r));
   }
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

static int
stale_pointers(void)
{
   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   struct cohmap_dirty d;
   struct cohmap_region_stats st;

   CHECK_OK(cohmap_region_destroy(NULL));
   CHECK_OK(cohmap_context_destroy(NULL));

   for (size_t i = 0; i < N_METHODS; i++) {
      enum cohmap_method m = all_methods[i];
      if (!usable(ctx, m))
         continue;
      printf("method %s\n", robust_method_str(m));
      for (int wrap = 0; wrap < 2; wrap++) {
         struct cohmap_region *r = NULL;
         uint8_t *mem = NULL;
         if (wrap) {
            mem = robust_mmap(NPAGES * ps, PROT_READ | PROT_WRITE);
            CHECK_OK(cohmap_region_wrap(ctx, mem, NPAGES * ps, m, 0, &r));
         } else {
            CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, m, 0, &r));
         }
         ((uint8_t *)cohmap_region_ptr(r))[0] = 1;
         CHECK_OK(cohmap_region_destroy(r));
         CHECK_ERR(cohmap_region_destroy(r), -EBADF);
         CHECK_ERR(cohmap_region_collect(r, 0, &d), -EBADF);
         CHECK_ERR(cohmap_region_get_stats(r, &st), -EBADF);
         int rc = cohmap_region_set_method(r, COHMAP_METHOD_FULL);
         CHECK(rc == -EBADF || rc == -EINVAL,
               "set_method on a destroyed region returned %d", rc);
         CHECK_ERR(cohmap_region_destroy(r), -EBADF);
         if (wrap) {
            /* The caller's memory is the caller's again, writable. */
            for (size_t pg = 0; pg < NPAGES; pg++)
               ((volatile uint8_t *)mem)[pg * ps + 1] = 2;
            munmap(mem, NPAGES * ps);
         }
      }
   }

   /* Pointers that never were regions. */
   static uint64_t zeros[64];
   uint64_t junk[64];
   memset(junk, 0xa5, sizeof(junk));
   struct cohmap_region *fake[] = {
      (struct cohmap_region *)zeros,
      (struct cohmap_region *)junk,
      (struct cohmap_region *)ctx,
   };
   for (size_t i = 0; i < sizeof(fake) / sizeof(fake[0]); i++) {
      CHECK_ERR(cohmap_region_destroy(fake[i]), -EBADF);
      CHECK_ERR(cohmap_region_collect(fake[i], 0, &d), -EBADF);
      CHECK_ERR(cohmap_region_get_stats(fake[i], &st), -EBADF);
   }
   /* And the context survived all that. */
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, ps, COHMAP_METHOD_AUTO, 0, &r));
   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

static int
context_destroy_busy(void)
{
   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   struct cohmap_region *r1 = NULL, *r2 = NULL;
   struct cohmap_dirty d;

   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_AUTO, 0, &r1));
   CHECK_ERR(cohmap_context_destroy(ctx), -EBUSY);
   CHECK_ERR(cohmap_context_destroy(ctx), -EBUSY);
   /* Still works: a region created after, tracking of the old one. */
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_COMPARE, 0,
                                 &r2));
   CHECK_COLLECT(r1, &d, "r1 initial");
   CHECK_COLLECT(r2, &d, "r2 initial");
   ((uint8_t *)cohmap_region_ptr(r1))[5] = 5;
   ((uint8_t *)cohmap_region_ptr(r2))[6] = 6;
   CHECK_COLLECT(r1, &d, "r1");
   CHECK(robust_dirty_covers(&d, 5, 1), "r1 write not reported");
   CHECK_COLLECT(r2, &d, "r2");
   CHECK(robust_dirty_covers(&d, 6, 1), "r2 write not reported");
   CHECK_OK(cohmap_region_destroy(r1));
   CHECK_ERR(cohmap_context_destroy(ctx), -EBUSY);
   CHECK_OK(cohmap_region_destroy(r2));
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

static int
method_names_and_values(void)
{
   struct cohmap_context *ctx = robust_context_create();
   const char *reason = "untouched";
   enum cohmap_method out = COHMAP_METHOD_FULL;
   static const char *const names[] = {"auto", "scan", "fault", "compare",
                                       "full"};

   for (int m = 0; m < COHMAP_METHOD_COUNT; m++) {
      CHECK(cohmap_method_name((enum cohmap_method)m) &&
               strcmp(cohmap_method_name((enum cohmap_method)m), names[m]) == 0,
            "name of %d", m);
      CHECK_OK(cohmap_method_from_name(names[m], &out));
      CHECK(out == (enum cohmap_method)m, "from_name(%s) = %d", names[m], out);
   }
   CHECK(cohmap_method_name((enum cohmap_method)99) == NULL, "name of 99");
   CHECK(cohmap_method_name((enum cohmap_method)-1) == NULL, "name of -1");
   CHECK(cohmap_method_name((enum cohmap_method)COHMAP_METHOD_COUNT) == NULL,
         "name of COUNT");
   out = COHMAP_METHOD_FULL;
   CHECK_ERR(cohmap_method_from_name("bogus", &out), -EINVAL);
   CHECK_ERR(cohmap_method_from_name("", &out), -EINVAL);
   CHECK_ERR(cohmap_method_from_name("scan ", &out), -EINVAL);
   CHECK_ERR(cohmap_method_from_name("scanx", &out), -EINVAL);
   CHECK_ERR(cohmap_method_from_name(NULL, &out), -EINVAL);
   CHECK(out == COHMAP_METHOD_FULL, "failed from_name changed *out");

   CHECK_OK(cohmap_context_method_status(ctx, COHMAP_METHOD_AUTO, &reason));
   CHECK_ERR(cohmap_context_method_status(ctx, (enum cohmap_method)99, &reason),
             -EINVAL);
   CHECK_ERR(cohmap_context_method_status(ctx, (enum cohmap_method)-1, NULL),
             -EINVAL);
   CHECK(cohmap_context_method_status(NULL, COHMAP_METHOD_SCAN, NULL) < 0,
         "method_status(NULL ctx)");
   for (int m = 1; m < COHMAP_METHOD_COUNT; m++) {
      reason = NULL;
      int rc = cohmap_context_method_status(ctx, (enum cohmap_method)m, &reason);
      printf("%-8s %s%s%s\n", names[m], rc ? "unavailable: " : "available",
             rc && reason ? reason : "", rc ? "" : "");
      if (rc)
         CHECK(reason && reason[0], "no reason for unavailable %s", names[m]);
   }
   enum cohmap_method am = cohmap_context_auto_method(ctx);
   CHECK(am == COHMAP_METHOD_SCAN || am == COHMAP_METHOD_COMPARE,
         "auto method is %s (fault is never chosen automatically)",
         robust_method_str(am));
   CHECK_OK(cohmap_context_destroy(ctx));

   /* A bad default method in the options. */
   struct cohmap_context_options opts;
   cohmap_context_options_init(&opts);
   opts.flags = COHMAP_CONTEXT_IGNORE_ENV;
   opts.default_method = (enum cohmap_method)99;
   ctx = NULL;
   CHECK_ERR(cohmap_context_create(&opts, &ctx), -EINVAL);
   CHECK(ctx == NULL, "failed create set *out");
   cohmap_context_options_init(&opts);
   opts.flags = COHMAP_CONTEXT_IGNORE_ENV;
   CHECK_ERR(cohmap_context_create(&opts, NULL), -EINVAL);
   return 0;
}

static void *
thread_error_message(void *arg)
{
   (void)arg;
   return (void *)(uintptr_t)(cohmap_error_message()[0] != '\0');
}

static int
error_message_per_thread(void)
{
   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   struct cohmap_region *r = NULL;
   CHECK_ERR(cohmap_region_create(ctx, 0, COHMAP_METHOD_AUTO, 0, &r), -EINVAL);
   const char *msg = cohmap_error_message();
   printf("message: \"%s\"\n", msg);
   CHECK(msg && strlen(msg) > 5, "short error message");
   pthread_t t;
   void *ret;
   CHECK(pthread_create(&t, NULL, thread_error_message, NULL) == 0, "thread");
   pthread_join(t, &ret);
   CHECK(ret == NULL, "another thread sees this thread's error message");
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

/* ---------------------------------------------------------------------- */
/* Environment */

static int saved_stderr = -1;
static int capture_fd = -1;

static void
capture_stderr_begin(void)
{
   fflush(stderr);
   saved_stderr = dup(2);
   capture_fd = memfd_create("robust-stderr", MFD_CLOEXEC);
   CHECK_SYS(capture_fd);
   CHECK_SYS(dup2(capture_fd, 2));
}

static char *
capture_stderr_end(void)
{
   static char buf[8192];
   fflush(stderr);
   CHECK_SYS(dup2(saved_stderr, 2));
   close(saved_stderr);
   ssize_t n = pread(capture_fd, buf, sizeof(buf) - 1, 0);
   close(capture_fd);
   buf[n > 0 ? n : 0] = '\0';
   fprintf(stderr, "--- captured stderr ---\n%s--- end ---\n", buf);
   return buf;
}

/* Creates a context that reads the environment. */
static int
env_context_create(struct cohmap_context **ctx, char **err_text)
{
   struct cohmap_context_options opts;
   cohmap_context_options_init(&opts);
   *ctx = NULL;
   capture_stderr_begin();
   int rc = cohmap_context_create(&opts, ctx);
   *err_text = capture_stderr_end();
   return rc;
}

static int
env_method_bogus(void)
{
   struct cohmap_context *ctx;
   char *text;
   CHECK_SYS(setenv("COHMAP_METHOD", "bogus", 1));
   int rc = env_context_create(&ctx, &text);
   CHECK(rc == -EINVAL, "COHMAP_METHOD=bogus: create returned %d (%s)", rc,
         robust_errstr(rc));
   CHECK(ctx == NULL, "failed create set *out");
   CHECK(strstr(text, "bogus") != NULL,
         "COHMAP_METHOD=bogus: stderr does not name the bad value: \"%s\"",
         text);
   /* NULL options read the environment too. */
   ctx = NULL;
   CHECK_RC(cohmap_context_create(NULL, &ctx), -EINVAL);
   /* IGNORE_ENV does not look. */
   ctx = robust_context_create();
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

static int
env_debug_bogus(void)
{
   struct cohmap_context *ctx;
   char *text;
   CHECK_SYS(setenv("COHMAP_DEBUG", "stats,bogusflag", 1));
   int rc = env_context_create(&ctx, &text);
   CHECK(rc == -EINVAL, "COHMAP_DEBUG=stats,bogusflag: create returned %d", rc);
   CHECK(ctx == NULL, "failed create set *out");
   CHECK(strstr(text, "bogusflag") != NULL,
         "stderr does not name the bad flag: \"%s\"", text);
   CHECK_SYS(setenv("COHMAP_DEBUG", "bogus", 1));
   rc = env_context_create(&ctx, &text);
   CHECK(rc == -EINVAL, "COHMAP_DEBUG=bogus: create returned %d", rc);
   ctx = robust_context_create();
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

static int
env_debug_help(void)
{
   struct cohmap_context *ctx;
   char *text;
   CHECK_SYS(setenv("COHMAP_DEBUG", "help", 1));
   int rc = env_context_create(&ctx, &text);
   CHECK(rc == 0, "COHMAP_DEBUG=help: create returned %d (%s)", rc,
         robust_errstr(rc));
   CHECK(ctx != NULL, "no context");
   CHECK(strstr(text, "COHMAP_DEBUG") != NULL,
         "COHMAP_DEBUG=help printed no table naming the variable: \"%s\"",
         text);
   CHECK(strstr(text, "verbose") != NULL && strstr(text, "stats") != NULL,
         "COHMAP_DEBUG=help table lacks flags: \"%s\"", text);
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

static int
env_method_valid(void)
{
   struct cohmap_context *ctx;
   char *text;
   struct cohmap_region *r = NULL;

   ps = robust_page_size();
   CHECK_SYS(setenv("COHMAP_METHOD", "compare", 1));
   CHECK_OK(env_context_create(&ctx, &text));
   CHECK(cohmap_context_auto_method(ctx) == COHMAP_METHOD_COMPARE,
         "COHMAP_METHOD=compare: auto method %s",
         robust_method_str(cohmap_context_auto_method(ctx)));
   CHECK_OK(cohmap_region_create(ctx, ps, COHMAP_METHOD_AUTO, 0, &r));
   CHECK(cohmap_region_method(r) == COHMAP_METHOD_COMPARE,
         "AUTO region got %s", robust_method_str(cohmap_region_method(r)));
   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));

   /* The variable overrides the options' default_method. */
   CHECK_SYS(setenv("COHMAP_METHOD", "full", 1));
   struct cohmap_context_options opts;
   cohmap_context_options_init(&opts);
   opts.default_method = COHMAP_METHOD_COMPARE;
   ctx = NULL;
   CHECK_OK(cohmap_context_create(&opts, &ctx));
   CHECK(cohmap_context_auto_method(ctx) == COHMAP_METHOD_FULL,
         "COHMAP_METHOD=full over default_method=compare: auto method %s",
         robust_method_str(cohmap_context_auto_method(ctx)));
   CHECK_OK(cohmap_context_destroy(ctx));

   /* ... unless the environment is ignored. */
   opts.flags = COHMAP_CONTEXT_IGNORE_ENV;
   ctx = NULL;
   CHECK_OK(cohmap_context_create(&opts, &ctx));
   CHECK(cohmap_context_auto_method(ctx) == COHMAP_METHOD_COMPARE,
         "IGNORE_ENV: auto method %s",
         robust_method_str(cohmap_context_auto_method(ctx)));
   CHECK_OK(cohmap_context_destroy(ctx));

   /* Empty means unset. */
   CHECK_SYS(setenv("COHMAP_METHOD", "", 1));
   CHECK_SYS(setenv("COHMAP_DEBUG", "", 1));
   CHECK_OK(env_context_create(&ctx, &text));
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

ROBUST_MAIN(ROBUST_CASE(wrap_bad_args), ROBUST_CASE(create_bad_args),
            ROBUST_CASE(wrap_unmapped), ROBUST_CASE(collect_bad_args),
            ROBUST_CASE(stale_pointers), ROBUST_CASE(context_destroy_busy),
            ROBUST_CASE(method_names_and_values),
            ROBUST_CASE(error_message_per_thread),
            ROBUST_CASE(env_method_bogus), ROBUST_CASE(env_debug_bogus),
            ROBUST_CASE(env_debug_help), ROBUST_CASE(env_method_valid))
