/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Self-contained helpers for the robustness tests.
 *
 * Most robustness tests play with SIGSEGV handlers, fork() and the process's
 * mappings, so they do not run under cmocka (which installs and later
 * restores its own SIGSEGV handler around every test with signal(), which
 * would silently replace cohmap's handler).  Instead each test case runs in
 * a forked child of a parent that never touches cohmap: every case starts
 * with a pristine signal disposition and no cohmap state, a crash is
 * reported with the case's name, and the other cases still run.
 *
 * CHECK*() print "file:line: FAILED ..." with the details and end the
 * process with status 1.
 */

#ifndef COHMAP_TESTS_ROBUST_UTIL_H
#define COHMAP_TESTS_ROBUST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cohmap/cohmap.h"

#if defined(__SANITIZE_ADDRESS__)
#define ROBUST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ROBUST_ASAN 1
#endif
#endif
#ifndef ROBUST_ASAN
#define ROBUST_ASAN 0
#endif

#define ROBUST_SKIP 77

/* 0 in the runner, 1 in a test case, 2+ in processes a test case forks. */
static int robust_depth;

static inline void
robust_exit(int code)
{
   fflush(stdout);
   fflush(stderr);
   /* Test cases exit() (LeakSanitizer runs), processes they fork _exit(). */
   if (robust_depth >= 2)
      _exit(code);
   exit(code);
}

static inline void __attribute__((format(printf, 4, 5), noreturn))
robust_check_failed(const char *file, int line, const char *expr,
                    const char *fmt, ...)
{
   va_list ap;

   fflush(stdout);
   fprintf(stderr, "%s:%d: FAILED (pid %d): %s\n    ", file, line,
           (int)getpid(), expr);
   va_start(ap, fmt);
   vfprintf(stderr, fmt, ap);
   va_end(ap);
   fprintf(stderr, "\n");
   robust_exit(1);
   abort();
}

#define CHECK(cond, ...)                                                     \
   do {                                                                      \
      if (!(cond))                                                           \
         robust_check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);        \
   } while (0)

static inline const char *
robust_errstr(int rc)
{
   return rc == 0 ? "success" : strerror(rc < 0 ? -rc : rc);
}

/* An int-returning call must return exactly want. */
#define CHECK_RC(expr, want)                                                 \
   do {                                                                      \
      int rc_ = (expr);                                                      \
      int want_ = (want);                                                    \
      if (rc_ != want_)                                                      \
         robust_check_failed(__FILE__, __LINE__, #expr,                      \
                             "returned %d (%s), expected %d (%s); "          \
                             "cohmap_error_message(): \"%s\"",               \
                             rc_, robust_errstr(rc_), want_,                 \
                             robust_errstr(want_), cohmap_error_message());  \
   } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, 0)

/* A syscall-style call (-1 and errno on failure) must succeed. */
#define CHECK_SYS(expr)                                                      \
   do {                                                                      \
      if ((expr) == -1)                                                      \
         robust_check_failed(__FILE__, __LINE__, #expr, "failed: %s",        \
                             strerror(errno));                               \
   } while (0)

static inline size_t
robust_page_size(void)
{
   return (size_t)sysconf(_SC_PAGESIZE);
}

static inline double
robust_now(void)
{
   struct timespec ts;
   clock_gettime(CLOCK_MONOTONIC, &ts);
   return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline void *
robust_mmap(size_t size, int prot)
{
   void *p = mmap(NULL, size, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
   CHECK(p != MAP_FAILED, "mmap(%zu): %s", size, strerror(errno));
   return p;
}

/* ------------------------------------------------------------------------
 * Contexts and methods
 */

static inline struct cohmap_context *
robust_context_create_opts(struct cohmap_context_options *opts)
{
   struct cohmap_context *ctx = NULL;
   opts->flags |= COHMAP_CONTEXT_IGNORE_ENV;
   CHECK_OK(cohmap_context_create(opts, &ctx));
   CHECK(ctx != NULL, "cohmap_context_create() returned 0 but no context");
   return ctx;
}

/* A context that ignores the environment; fault widening off so that the
 * pages a test expects to be write-protected are. */
static inline struct cohmap_context *
robust_context_create(void)
{
   struct cohmap_context_options opts;
   cohmap_context_options_init(&opts);
   opts.fault_max_widen_pages = 1;
   return robust_context_create_opts(&opts);
}

/* true (after printing why) if method m does not work in this process:
 * the test case must then return ROBUST_SKIP. */
static inline bool
robust_method_unavailable(struct cohmap_context *ctx, enum cohmap_method m)
{
   const char *reason = NULL;
   int rc = cohmap_context_method_status(ctx, m, &reason);
   if (rc == 0)
      return false;
   printf("SKIP: method %s is not available here: %s (%s)\n",
          cohmap_method_name(m) ? cohmap_method_name(m) : "?",
          reason ? reason : "no reason given", robust_errstr(rc));
   return true;
}

static inline const char *
robust_method_str(enum cohmap_method m)
{
   const char *n = cohmap_method_name(m);
   return n ? n : "(invalid)";
}

/* ------------------------------------------------------------------------
 * Checking collect results
 */

/* out must be sorted, coalesced, inside [0, size), with bytes == sum. */
static inline void
robust_check_dirty_wellformed(const struct cohmap_dirty *d, size_t size,
                              const char *what)
{
   size_t sum = 0;

   CHECK(d->count == 0 || d->ranges != NULL, "%s: %zu ranges but ranges=NULL",
         what, d->count);
   CHECK(d->count == 0 || d->data != NULL, "%s: %zu ranges but data=NULL",
         what, d->count);
   for (size_t i = 0; i < d->count; i++) {
      const struct cohmap_range *r = &d->ranges[i];
      CHECK(r->length > 0, "%s: range %zu has length 0", what, i);
      CHECK(r->offset < size && r->length <= size - r->offset,
            "%s: range %zu [%zu, +%zu) is outside the region (size %zu)",
            what, i, r->offset, r->length, size);
      if (i > 0) {
         const struct cohmap_range *p = &d->ranges[i - 1];
         CHECK(p->offset + p->length < r->offset,
               "%s: ranges %zu [%zu,+%zu) and %zu [%zu,+%zu) are not sorted "
               "and coalesced",
               what, i - 1, p->offset, p->length, i, r->offset, r->length);
      }
      sum += r->length;
   }
   CHECK(d->bytes == sum, "%s: bytes=%zu but the ranges sum to %zu", what,
         d->bytes, sum);
}

/* Whether [off, off+len) lies inside one reported range. */
static inline bool
robust_dirty_covers(const struct cohmap_dirty *d, size_t off, size_t len)
{
   size_t lo = 0, hi = d->count;
   while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (d->ranges[mid].offset + d->ranges[mid].length <= off)
         lo = mid + 1;
      else
         hi = mid;
   }
   if (lo == d->count)
      return false;
   const struct cohmap_range *r = &d->ranges[lo];
   return r->offset <= off && off + len <= r->offset + r->length;
}

/* Whether any reported byte lies in [off, off+len). */
static inline bool
robust_dirty_touches(const struct cohmap_dirty *d, size_t off, size_t len)
{
   for (size_t i = 0; i < d->count; i++) {
      const struct cohmap_range *r = &d->ranges[i];
      if (r->offset < off + len && off < r->offset + r->length)
         return true;
   }
   return false;
}

static inline void
robust_print_dirty(const char *what, const struct cohmap_dirty *d)
{
   printf("%s: %zu ranges, %zu bytes:", what, d->count, d->bytes);
   for (size_t i = 0; i < d->count && i < 8; i++)
      printf(" [%#zx,+%#zx)", d->ranges[i].offset, d->ranges[i].length);
   printf("%s\n", d->count > 8 ? " ..." : "");
}

static inline void
robust_dirty_clear(struct cohmap_dirty *d)
{
   memset(d, 0, sizeof(*d));
}

/* Collects and checks that the result is well formed. */
static inline int
robust_collect(struct cohmap_region *r, struct cohmap_dirty *d,
               const char *what)
{
   robust_dirty_clear(d);
   int rc = cohmap_region_collect(r, 0, d);
   if (rc == 0)
      robust_check_dirty_wellformed(d, cohmap_region_size(r), what);
   else
      CHECK(d->count == 0, "%s: collect failed (%d) but returned %zu ranges",
            what, rc, d->count);
   return rc;
}

#define CHECK_COLLECT(region, d, what)                                       \
   CHECK_OK(robust_collect((region), (d), (what)))

/*
 * A mirror records which bytes of a region the test wrote since they were
 * last reported.  It is a plain byte array, allocated up front (tests that
 * exhaust the address space must not allocate later).
 */
struct robust_mirror {
   uint8_t *base; /* the tracked memory */
   size_t size;
   uint8_t *pending; /* 1 = written, not yet reported */
};

static inline void
robust_mirror_init(struct robust_mirror *m, void *base, size_t size)
{
   m->base = base;
   m->size = size;
   m->pending = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
   CHECK(m->pending != MAP_FAILED, "mmap mirror: %s", strerror(errno));
}

static inline void
robust_mirror_fini(struct robust_mirror *m)
{
   munmap(m->pending, m->size);
}

/* Stores val at off (volatile: it must really be a store to memory). */
static inline void
robust_mirror_write(struct robust_mirror *m, size_t off, uint8_t val)
{
   ((volatile uint8_t *)m->base)[off] = val;
   m->pending[off] = 1;
}

/* Marks bytes something else (the kernel) wrote. */
static inline void
robust_mirror_mark(struct robust_mirror *m, size_t off, size_t len)
{
   memset(m->pending + off, 1, len);
}

static inline size_t
robust_mirror_pending(const struct robust_mirror *m)
{
   size_t n = 0;
   for (size_t i = 0; i < m->size; i++)
      n += m->pending[i];
   return n;
}

/*
 * Clears the pending bytes out reports (checking that d->data holds the
 * value the memory holds), returns how many pending bytes it did not
 * report and the first of them in *first_missing.
 */
static inline size_t
robust_mirror_consume(struct robust_mirror *m, const struct cohmap_dirty *d,
                      const char *what, size_t *first_missing)
{
   size_t missing = 0;
   size_t i = 0;
   const uint8_t *data = d->data;

   *first_missing = SIZE_MAX;
   while (i < m->size) {
      /* Skip clean words quickly. */
      if (i % 8 == 0 && i + 8 <= m->size) {
         uint64_t w;
         memcpy(&w, m->pending + i, 8);
         if (w == 0) {
            i += 8;
            continue;
         }
      }
      if (m->pending[i]) {
         if (robust_dirty_covers(d, i, 1)) {
            CHECK(data[i] == m->base[i],
                  "%s: offset %#zx reported, but data holds %#x and the "
                  "memory %#x",
                  what, i, data[i], m->base[i]);
            m->pending[i] = 0;
         } else {
            if (!missing)
               *first_missing = i;
            missing++;
         }
      }
      i++;
   }
   return missing;
}

/* Every pending byte must be reported by d. */
static inline void
robust_mirror_check(struct robust_mirror *m, const struct cohmap_dirty *d,
                    const char *what)
{
   size_t first;
   size_t missing = robust_mirror_consume(m, d, what, &first);
   if (missing)
      robust_print_dirty(what, d);
   CHECK(missing == 0,
         "%s: %zu written bytes were not reported, the first at offset %#zx "
         "(page %zu)",
         what, missing, first, first / robust_page_size());
}

/* ------------------------------------------------------------------------
 * Processes
 */

static inline pid_t
robust_fork(void)
{
   fflush(stdout);
   fflush(stderr);
   pid_t pid = fork();
   CHECK(pid >= 0, "fork: %s", strerror(errno));
   if (pid == 0)
      robust_depth++;
   return pid;
}

static inline int
robust_waitpid(pid_t pid)
{
   int status;
   while (waitpid(pid, &status, 0) < 0) {
      CHECK(errno == EINTR, "waitpid(%d): %s", (int)pid, strerror(errno));
   }
   return status;
}

static inline const char *
robust_status_str(int status, char *buf, size_t len)
{
   if (WIFEXITED(status))
      snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
   else if (WIFSIGNALED(status))
      snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(status),
               strsignal(WTERMSIG(status)),
               WTERMSIG(status) == SIGALRM ? " - it hung" : "");
   else
      snprintf(buf, len, "status %#x", status);
   return buf;
}

#define CHECK_CHILD_EXIT0(status, what)                                      \
   do {                                                                      \
      char sbuf_[96];                                                        \
      CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,                   \
            "%s: child %s, expected exit status 0", (what),                  \
            robust_status_str((status), sbuf_, sizeof(sbuf_)));              \
   } while (0)

/* No core files from children that die on purpose. */
static inline void
robust_no_core(void)
{
   struct rlimit rl = {0, 0};
   setrlimit(RLIMIT_CORE, &rl);
}

/*
 * In a child: make the page at addr read-only and write to it.  Nothing
 * tracks it (any more), so the child must die of SIGSEGV (under ASan, whose
 * handler may be the previous one: exit non-zero).  what names the check.
 */
static inline void
robust_expect_foreign_fault_kills(void *addr, const char *what)
{
   size_t pgsz = robust_page_size();
   void *page = (void *)((uintptr_t)addr & ~(uintptr_t)(pgsz - 1));
   pid_t pid = robust_fork();
   if (pid == 0) {
      robust_no_core();
      alarm(20);
      if (mprotect(page, pgsz, PROT_READ) != 0)
         _exit(4);
      *(volatile uint8_t *)addr = 1;
      _exit(3);
   }
   int status = robust_waitpid(pid);
   char sbuf[96];
   robust_status_str(status, sbuf, sizeof(sbuf));
   CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 4), "%s: mprotect "
         "failed in the child", what);
   CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 3),
         "%s: a write to read-only memory that nothing tracks any more "
         "succeeded: cohmap's SIGSEGV handler still claims it", what);
   if (ROBUST_ASAN)
      CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0) &&
               !(WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM),
            "%s: child %s", what, sbuf);
   else
      CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
            "%s: child %s, expected death by SIGSEGV", what, sbuf);
}

/* ------------------------------------------------------------------------
 * /proc/self/maps
 */

/* Copies the permission string ("rw-p") of the mapping holding addr into
 * perms[5]; false if addr is not mapped. */
static inline bool
robust_maps_perms(const void *addr, char perms[5])
{
   FILE *f = fopen("/proc/self/maps", "r");
   char line[512];
   bool found = false;

   CHECK(f != NULL, "open /proc/self/maps: %s", strerror(errno));
   while (fgets(line, sizeof(line), f)) {
      unsigned long lo, hi;
      char p[5];
      if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) != 3)
         continue;
      if ((uintptr_t)addr >= lo && (uintptr_t)addr < hi) {
         memcpy(perms, p, 5);
         found = true;
         break;
      }
   }
   fclose(f);
   return found;
}

/* ------------------------------------------------------------------------
 * The runner
 */

struct robust_case {
   const char *name;
   int (*fn)(void); /* 0, or ROBUST_SKIP; failures exit(1) */
   unsigned timeout_s; /* 0 = 60 */
};

#define ROBUST_CASE(fn) {#fn, fn, 0}
#define ROBUST_CASE_T(fn, t) {#fn, fn, t}

/*
 * Runs every case (or those whose name contains argv[1]) in its own forked
 * process.  Exit status: 1 if any failed, 77 if all were skipped, else 0.
 */
static inline int
robust_main(int argc, char **argv, const struct robust_case *cases, size_t n)
{
   const char *filter = argc > 1 ? argv[1] : NULL;
   unsigned passed = 0, failed = 0, skipped = 0;

   setvbuf(stdout, NULL, _IOLBF, 0);
   printf("robustness tests (%s build, pid %d)\n",
          ROBUST_ASAN ? "AddressSanitizer" : "normal", (int)getpid());
   for (size_t i = 0; i < n; i++) {
      if (filter && !strstr(cases[i].name, filter))
         continue;
      printf("[ RUN      ] %s\n", cases[i].name);
      double t0 = robust_now();
      pid_t pid = robust_fork();
      if (pid == 0) {
         alarm(cases[i].timeout_s ? cases[i].timeout_s : 60);
         int rc = cases[i].fn();
         robust_exit(rc);
      }
      int status = robust_waitpid(pid);
      double dt = robust_now() - t0;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
         printf("[       OK ] %s (%.2f s)\n", cases[i].name, dt);
         passed++;
      } else if (WIFEXITED(status) && WEXITSTATUS(status) == ROBUST_SKIP) {
         printf("[     SKIP ] %s\n", cases[i].name);
         skipped++;
      } else {
         char buf[96];
         printf("[  FAILED  ] %s: %s (%.2f s)\n", cases[i].name,
                robust_status_str(status, buf, sizeof(buf)), dt);
         failed++;
      }
   }
   printf("%u passed, %u failed, %u skipped\n", passed, failed, skipped);
   if (failed)
      return 1;
   if (skipped && !passed)
      return ROBUST_SKIP;
   return 0;
}

#define ROBUST_MAIN(...)                                                     \
   int main(int argc, char **argv)                                           \
   {                                                                         \
      static const struct robust_case cases_[] = {__VA_ARGS__};              \
      return robust_main(argc, argv, cases_,                                 \
                         sizeof(cases_) / sizeof(cases_[0]));                \
   }

#endif
