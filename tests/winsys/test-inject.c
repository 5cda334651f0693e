/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Allocation failure injection.
 *
 * This program is linked with ld's --wrap for malloc, calloc, realloc,
 * mmap (and mmap64, what glibc's headers call with _FILE_OFFSET_BITS=64),
 * memfd_create and posix_memalign (tests/winsys/meson.build): every
 * reference to them from the objects linked in — this file and the static
 * cohmap_internal library, sim device included — goes to the __wrap_
 * functions below.  Calls made inside libc, libpthread or the sanitizer
 * runtimes are not redirected, which is what we want: only cohmap's own
 * allocations fail.  Under ASan, __real_malloc is ASan's malloc.
 *
 * An injection window is armed around one operation (one API call, or a
 * short sequence of recording calls) on this thread only: the n-th wrapped
 * call in it fails (NULL / MAP_FAILED / -1 with errno ENOMEM, or ENOMEM
 * from posix_memalign), the others succeed.  For each operation the test
 * runs n = 0, 1, 2, ... until a run completes without reaching the n-th
 * call.  Every run must:
 *
 *  - return 0 or a negative errno, never crash or abort;
 *  - on failure, leave no half-made object (out-parameters NULL, live BO
 *    count unchanged) and leave what stays alive fully usable: after a
 *    failed BO creation the device creates BOs and runs submissions; after
 *    a failed cohmap_submit_end() a retry of the same work succeeds with
 *    the right results — computed by a non-idempotent kernel, so a refused
 *    submission that executed anyway shows, and from CPU writes that were
 *    pending during the failure, so a write the failed flush collected
 *    and then dropped shows;  after a failed fence wait (merge), the next
 *    wait merges everything;
 *  - on success despite the injected failure (cohmap degrades, e.g. a
 *    failed probe mapping makes scan unavailable and regions fall back),
 *    work completely;
 *  - leak nothing: the ASan leg (detect_leaks=1) checks at exit, after
 *    every object was destroyed.
 *
 * Each operation must have hit at least one injected failure, which proves
 * that the wrapping reaches the library (and, under ASan, that ASan's
 * interceptors do not bypass it).
 *
 * --slow: longer command streams (more reallocations).
 */

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>

#include <cmocka.h>

#include "ws-util.h"

/* --- the interposer ---------------------------------------------------- */

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd,
                  off_t off);
void *__real_mmap64(void *addr, size_t len, int prot, int flags, int fd,
                    off_t off);
int __real_memfd_create(const char *name, unsigned int flags);
int __real_posix_memalign(void **out, size_t align, size_t size);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd,
                  off_t off);
void *__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd,
                    off_t off);
int __wrap_memfd_create(const char *name, unsigned int flags);
int __wrap_posix_memalign(void **out, size_t align, size_t size);

/* Only the arming thread's calls count: the sim's worker thread and libc
 * internals run on their own schedule, and counting them would make the
 * n-th call a different one from run to run. */
static __thread bool armed;
static unsigned long countdown; /* wrapped calls to let through */
static bool fired;
static unsigned long injected_total;
static unsigned long wrapped_calls_total;

static bool
should_fail(void)
{
   if (!armed)
      return false;
   wrapped_calls_total++;
   if (fired)
      return false;
   if (countdown == 0) {
      fired = true;
      injected_total++;
      return true;
   }
   countdown--;
   return false;
}

void *
__wrap_malloc(size_t size)
{
   if (should_fail()) {
      errno = ENOMEM;
      return NULL;
   }
   return __real_malloc(size);
}

void *
__wrap_calloc(size_t n, size_t size)
{
   if (should_fail()) {
      errno = ENOMEM;
      return NULL;
   }
   return __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t size)
{
   if (should_fail()) {
      errno = ENOMEM;
      return NULL;
   }
   return __real_realloc(p, size);
}

void *
__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
   if (should_fail()) {
      errno = ENOMEM;
      return MAP_FAILED;
   }
   return __real_mmap(addr, len, prot, flags, fd, off);
}

void *
__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
   if (should_fail()) {
      errno = ENOMEM;
      return MAP_FAILED;
   }
   return __real_mmap64(addr, len, prot, flags, fd, off);
}

int
__wrap_memfd_create(const char *name, unsigned int flags)
{
   if (should_fail()) {
      errno = ENOMEM;
      return -1;
   }
   return __real_memfd_create(name, flags);
}

int
__wrap_posix_memalign(void **out, size_t align, size_t size)
{
   if (should_fail())
      return ENOMEM;
   return __real_posix_memalign(out, align, size);
}

static void
arm(unsigned long n)
{
   countdown = n;
   fired = false;
   armed = true;
}

/* Returns whether the armed failure happened. */
static bool
disarm(void)
{
   armed = false;
   return fired;
}

/* --- checks ------------------------------------------------------------ */

static bool slow;

struct variant {
   enum cohmap_method method;
   char name[32];
};

static const char *cur_name = "";

/* More than any operation makes allocation calls: a loop that does not
 * end means the operation never stops hitting the failure. */
#define MAX_RUNS 5000

#define CHECK_RC(expr, want)                                                 \
   do {                                                                      \
      int rc_ = (expr);                                                      \
      if (rc_ != (want)) {                                                   \
         fprintf(stderr, "%s:%d: %s: %s returned %d (%s), expected %d\n",    \
                 __FILE__, __LINE__, cur_name, #expr, rc_,                   \
                 cohmap_error_message(), (int)(want));                       \
         fail();                                                             \
      }                                                                      \
   } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, 0)

/* Per operation: runs, failures, successes despite a failure. */
struct tally {
   const char *op;
   unsigned runs, errors, absorbed;
};

/* rc of an operation run with the n-th call failing (fired: it did). */
static void
tally_rc(struct tally *t, unsigned long n, bool did_fire, int rc)
{
   t->runs++;
   if (!did_fire) {
      if (rc != 0) {
         fprintf(stderr,
                 "%s: %s failed with %d (%s) without an injected "
                 "failure\n",
                 cur_name, t->op, rc, cohmap_error_message());
         fail();
      }
      return;
   }
   if (rc == 0) {
      t->absorbed++;
      return;
   }
   if (rc >= 0 || rc < -4095) {
      fprintf(stderr,
              "%s: %s with allocation call %lu failing returned "
              "%d, not a negative errno\n",
              cur_name, t->op, n, rc);
      fail();
   }
   if (!cohmap_error_message()[0]) {
      fprintf(stderr,
              "%s: %s with allocation call %lu failing: %d but no "
              "error message\n",
              cur_name, t->op, n, rc);
      fail();
   }
   t->errors++;
}

static void
tally_done(const struct tally *t)
{
   printf("# %s: %s: %u runs, %u failed cleanly, %u succeeded despite the "
          "failure\n",
          cur_name, t->op, t->runs, t->errors, t->absorbed);
   /* At least one run must have hit a failure that the operation
    * reported: otherwise the wrapping did not reach the library. */
   if (t->runs < 2 || t->errors == 0) {
      fprintf(stderr,
              "%s: %s: no injected failure was ever reported: the "
              "allocator wrapping does not reach cohmap\n",
              cur_name, t->op);
      fail();
   }
}

static bool
same_bytes(const uint8_t *got, const uint8_t *want, size_t size,
           const char *what)
{
   if (memcmp(got, want, size) == 0)
      return true;
   size_t first = SIZE_MAX, count = 0;
   for (size_t i = 0; i < size; i++) {
      if (got[i] != want[i]) {
         if (first == SIZE_MAX)
            first = i;
         count++;
      }
   }
   fprintf(stderr,
           "%s: %s: %zu bytes differ; first at offset %zu: "
           "expected 0x%02x, got 0x%02x\n",
           cur_name, what, count, first, want[first], got[first]);
   return false;
}

static bool
method_usable(const struct variant *v)
{
   bool fatal;
   cur_name = v->name;
   if (!ws_method_usable(v->method, &fatal)) {
      if (fatal)
         fail();
      return false;
   }
   return true;
}

static struct cohmap_device *
device_new(enum cohmap_method m, const char *exec_us)
{
   if (exec_us)
      setenv("COHMAP_SIM_EXEC_US", exec_us, 1);
   struct cohmap_device *dev = ws_device_create(m, 0);
   if (exec_us)
      unsetenv("COHMAP_SIM_EXEC_US");
   assert_non_null(dev);
   return dev;
}

static struct cohmap_bo *
bo_new(struct cohmap_device *dev, size_t size, uint32_t flags)
{
   struct cohmap_bo *bo = NULL;
   CHECK_OK(cohmap_bo_create(dev, size, flags, &bo));
   assert_non_null(bo);
   return bo;
}

static uint64_t
live_bos(struct cohmap_device *dev)
{
   struct cohmap_device_stats st;
   CHECK_OK(cohmap_device_get_stats(dev, &st));
   return st.bos;
}

/* The device's copy of bo, through a GPU copy into a non-coherent BO. */
static void
read_device(struct cohmap_device *dev, struct cohmap_bo *bo, size_t size,
            uint8_t *out)
{
   struct cohmap_bo *rb = bo_new(dev, size, COHMAP_BO_GPU_WRITE);
   struct cohmap_submit *s = NULL;
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_READ));
   CHECK_OK(cohmap_submit_add_bo(s, rb, COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_cmd_copy(s, rb, 0, bo, 0, size));
   CHECK_OK(ws_submit_wait(s));
   CHECK_OK(cohmap_bo_invalidate(rb, 0, size));
   memcpy(out, cohmap_bo_map(rb), size);
   CHECK_OK(cohmap_bo_destroy(rb));
}

static void
expect_device(struct cohmap_device *dev, struct cohmap_bo *bo,
              const uint8_t *want, size_t size, const char *what)
{
   uint8_t *got = malloc(size);
   assert_non_null(got);
   read_device(dev, bo, size, got);
   bool ok = same_bytes(got, want, size, what);
   free(got);
   if (!ok)
      fail();
}

/*
 * A BO works: CPU data reaches the device (flushed when not coherent), and
 * if the GPU may write it, a GPU fill reaches the mapping (invalidated
 * when not coherent).
 */
static void
bo_works(struct cohmap_device *dev, struct cohmap_bo *bo, struct tu_rng *rng,
         const char *what)
{
   size_t size = cohmap_bo_size(bo);
   uint32_t flags = cohmap_bo_flags(bo);
   bool coherent = flags & COHMAP_BO_COHERENT;
   uint8_t *cpu = cohmap_bo_map(bo);
   uint8_t *want = malloc(size);
   assert_non_null(cpu);
   assert_non_null(want);

   tu_rng_fill(rng, want, size);
   memcpy(cpu, want, size);
   if (!coherent)
      CHECK_OK(cohmap_bo_flush(bo, 0, size));
   expect_device(dev, bo, want, size, what);

   if (flags & COHMAP_BO_GPU_WRITE) {
      size_t n = (size < 256 ? size : 256) & ~(size_t)3;
      struct cohmap_submit *s = NULL;
      CHECK_OK(cohmap_submit_begin(dev, &s));
      CHECK_OK(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_WRITE));
      CHECK_OK(cohmap_cmd_fill(s, bo, 0, n, 0x5a5a5a5a));
      CHECK_OK(ws_submit_wait(s));
      if (!coherent)
         CHECK_OK(cohmap_bo_invalidate(bo, 0, size));
      memset(want, 0x5a, n);
      if (!same_bytes(cpu, want, size, what))
         fail();
   }
   free(want);
}

/* --- device creation --------------------------------------------------- */

static void
test_device_create(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));
   struct tally t = {.op = "cohmap_device_create"};

   for (unsigned long n = 0;; n++) {
      assert_true(n < MAX_RUNS);
      struct cohmap_device_options opts;
      cohmap_device_options_init(&opts);
      opts.method = v->method;
      struct cohmap_device *dev = NULL;
      arm(n);
      int rc = cohmap_device_create(&opts, &dev);
      bool did_fire = disarm();
      tally_rc(&t, n, did_fire, rc);
      if (rc) {
         assert_null(dev);
         continue;
      }
      assert_non_null(dev);
      struct cohmap_bo *bo =
         bo_new(dev, 8192, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
      if (!did_fire)
         assert_int_equal(cohmap_bo_method(bo), v->method);
      bo_works(dev, bo, &rng, "BO of a device created under injection");
      CHECK_OK(cohmap_bo_destroy(bo));
      CHECK_OK(cohmap_device_destroy(dev));
      if (!did_fire)
         break;
   }
   tally_done(&t);
}

/* --- BO creation ------------------------------------------------------- */

enum bo_setup {
   SETUP_NONE,
   SETUP_SLAB_EXISTS, /* a live BO of the same slab class */
   SETUP_SLOT_USED,   /* a destroyed BO left a used slot behind */
};

static const struct bo_kind {
   const char *name;
   size_t size;
   uint32_t flags;
   bool wrap;
   enum bo_setup setup;
} bo_kinds[] = {
   {"coherent GPU_WRITE dedicated", 64 * 1024,
    COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE, false, SETUP_NONE},
   {"coherent dedicated", 64 * 1024, COHMAP_BO_COHERENT, false, SETUP_NONE},
   {"coherent CPU_STORES_ONLY dedicated", 64 * 1024,
    COHMAP_BO_COHERENT | COHMAP_BO_CPU_STORES_ONLY, false, SETUP_NONE},
   {"coherent GPU_WRITE, first of its slab", 1000,
    COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE, false, SETUP_NONE},
   {"coherent, first of its slab", 1000, COHMAP_BO_COHERENT, false,
    SETUP_NONE},
   {"coherent GPU_WRITE, in an existing slab", 1000,
    COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE, false, SETUP_SLAB_EXISTS},
   {"coherent GPU_WRITE, a reused slab slot", 1000,
    COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE, false, SETUP_SLOT_USED},
   {"non-coherent", 64 * 1024, 0, false, SETUP_NONE},
   {"non-coherent GPU_WRITE, small", 1000, COHMAP_BO_GPU_WRITE, false,
    SETUP_NONE},
   {"userptr coherent GPU_WRITE", 64 * 1024,
    COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE, true, SETUP_NONE},
   {"userptr coherent", 64 * 1024, COHMAP_BO_COHERENT, true, SETUP_NONE},
   {"userptr non-coherent GPU_WRITE", 64 * 1024, COHMAP_BO_GPU_WRITE, true,
    SETUP_NONE},
};

static void
bo_kind_case(const struct variant *v, const struct bo_kind *k,
             struct tu_rng *rng)
{
   char op[128];
   snprintf(op, sizeof(op), "%s %s",
            k->wrap ? "cohmap_bo_wrap" : "cohmap_bo_create", k->name);
   struct tally t = {.op = op};
   uint8_t *user = NULL, *pattern = NULL;
   if (k->wrap) {
      user = tu_map(k->size, 0, false);
      pattern = malloc(k->size);
      assert_non_null(user);
      assert_non_null(pattern);
   }

   for (unsigned long n = 0;; n++) {
      assert_true(n < MAX_RUNS);
      /* A fresh device each run: the first BO of a slab creates it, and a
       * failed run must not leave the next one a different path. */
      struct cohmap_device *dev = device_new(v->method, NULL);
      struct cohmap_bo *keep = NULL;
      if (k->setup != SETUP_NONE) {
         keep = bo_new(dev, k->size, k->flags);
         memset(cohmap_bo_map(keep), 0xee, k->size);
         uint8_t *tmp = malloc(k->size);
         assert_non_null(tmp);
         /* Uploads the bytes, so a reused slot has them on both sides. */
         read_device(dev, keep, k->size, tmp);
         free(tmp);
         if (k->setup == SETUP_SLOT_USED) {
            CHECK_OK(cohmap_bo_destroy(keep));
            keep = NULL;
         }
      }
      uint64_t bos_before = live_bos(dev);
      if (user) {
         tu_rng_fill(rng, pattern, k->size);
         memcpy(user, pattern, k->size);
      }

      struct cohmap_bo *bo = NULL;
      arm(n);
      int rc = k->wrap ? cohmap_bo_wrap(dev, user, k->size, k->flags, &bo)
                       : cohmap_bo_create(dev, k->size, k->flags, &bo);
      bool did_fire = disarm();
      tally_rc(&t, n, did_fire, rc);

      if (rc) {
         assert_null(bo);
         if (live_bos(dev) != bos_before) {
            fprintf(stderr,
                    "%s: %s: a failed creation left %" PRIu64
                    " live BOs, %" PRIu64 " before\n",
                    cur_name, op, live_bos(dev), bos_before);
            fail();
         }
         if (user) {
            /* The memory is the caller's again: unchanged, writable
             * (under fault, a half-registered range would stay
             * protected and this store would crash). */
            if (!same_bytes(user, pattern, k->size,
                            "user memory after a failed wrap"))
               fail();
            memset(user, 0x11, k->size);
            memcpy(user, pattern, k->size);
         }
         /* The device still works: the same BO without injection. */
         rc = k->wrap ? cohmap_bo_wrap(dev, user, k->size, k->flags, &bo)
                      : cohmap_bo_create(dev, k->size, k->flags, &bo);
         CHECK_OK(rc);
      }
      assert_non_null(bo);
      if ((k->flags & COHMAP_BO_COHERENT) && !did_fire &&
          cohmap_bo_method(bo) != v->method) {
         fprintf(stderr, "%s: %s: tracked by %s\n", cur_name, op,
                 cohmap_method_name(cohmap_bo_method(bo)));
         fail();
      }

      /* Initial contents on both sides: zero, or the user's memory
       * (uploaded by the first submission when coherent, by a flush
       * otherwise). */
      uint8_t *want = calloc(1, k->size);
      assert_non_null(want);
      if (user) {
         memcpy(want, pattern, k->size);
         if (!(k->flags & COHMAP_BO_COHERENT))
            CHECK_OK(cohmap_bo_flush(bo, 0, k->size));
      }
      if (!same_bytes(cohmap_bo_map(bo), want, k->size,
                      "mapping of a new BO"))
         fail();
      expect_device(dev, bo, want, k->size, "device copy of a new BO");
      free(want);
      bo_works(dev, bo, rng, op);

      CHECK_OK(cohmap_bo_destroy(bo));
      CHECK_OK(cohmap_bo_destroy(keep));
      CHECK_OK(cohmap_device_destroy(dev));
      if (!did_fire)
         break;
   }
   if (user)
      tu_unmap(user, k->size);
   free(pattern);
   tally_done(&t);
}

static void
test_bo_create(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));
   for (size_t i = 0; i < TU_ARRAY_SIZE(bo_kinds); i++)
      bo_kind_case(v, &bo_kinds[i], &rng);
}

/* --- submissions ------------------------------------------------------- */

/*
 * The work: on a (coherent, GPU_WRITE, dedicated), b (coherent, GPU_WRITE,
 * slab), c (coherent, read only, slab) and n (non-coherent, GPU_WRITE):
 *
 *   a[0, 4096)          += 1 per 32-bit word, in place (not idempotent)
 *   b[0, 512)            = c[0, 512)
 *   a[20480 + 100 i, +100) = payload i (cmd_write, one allocation each)
 *   n[0, 4096)           = fill
 *   b[512, 520)          = checksum of c
 *   a[8192, 12288)       = a[0, 4096) ^ 0xffff0000 (after the add)
 *   a[16384 + 64 i, +64) = fill i, 16 of them
 *
 * All CPU contents are written just before, never uploaded: the
 * submission that runs the work must upload them first.
 */
#define A_SIZE     (64 * 1024)
#define B_SIZE     1000
#define C_SIZE     2000
#define N_SIZE     4096
#define MAX_WRITES 400

struct work {
   struct cohmap_device *dev;
   struct cohmap_bo *a, *b, *c, *n;
   uint8_t a0[A_SIZE], b0[B_SIZE], c0[C_SIZE];
   uint8_t payload[MAX_WRITES][100];
   unsigned writes;
};

static void
work_init(struct work *w, struct cohmap_device *dev, struct tu_rng *rng)
{
   w->dev = dev;
   w->writes = slow ? MAX_WRITES : 20;
   w->a = bo_new(dev, A_SIZE, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
   w->b = bo_new(dev, B_SIZE, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
   w->c = bo_new(dev, C_SIZE, COHMAP_BO_COHERENT);
   w->n = bo_new(dev, N_SIZE, COHMAP_BO_GPU_WRITE);
   tu_rng_fill(rng, w->a0, sizeof(w->a0));
   tu_rng_fill(rng, w->b0, sizeof(w->b0));
   tu_rng_fill(rng, w->c0, sizeof(w->c0));
   tu_rng_fill(rng, w->payload, sizeof(w->payload));
   memcpy(cohmap_bo_map(w->a), w->a0, A_SIZE);
   memcpy(cohmap_bo_map(w->b), w->b0, B_SIZE);
   memcpy(cohmap_bo_map(w->c), w->c0, C_SIZE);
   memset(cohmap_bo_map(w->n), 0x99, N_SIZE);
}

static void
work_fini(struct work *w)
{
   struct cohmap_bo *bos[] = {w->a, w->b, w->c, w->n};
   for (size_t i = 0; i < TU_ARRAY_SIZE(bos); i++)
      CHECK_OK(cohmap_bo_destroy(bos[i]));
}

/* Records the work into s, going on after errors like a careless caller;
 * returns the first error. */
static int
work_record(struct work *w, struct cohmap_submit *s)
{
   int first = 0, rc;
#define REC(call)                                                            \
   do {                                                                      \
      rc = (call);                                                           \
      if (rc && !first)                                                      \
         first = rc;                                                         \
   } while (0)
   REC(cohmap_submit_add_bo(s, w->a, COHMAP_ACCESS_READ));
   REC(cohmap_submit_add_bo(s, w->a, COHMAP_ACCESS_WRITE));
   REC(cohmap_submit_add_bo(s, w->b,
                            COHMAP_ACCESS_READ | COHMAP_ACCESS_WRITE));
   REC(cohmap_submit_add_bo(s, w->c, COHMAP_ACCESS_READ));
   REC(cohmap_submit_add_bo(s, w->n, COHMAP_ACCESS_WRITE));
   REC(
      cohmap_cmd_compute(s, COHMAP_COMPUTE_ADD32, w->a, 0, w->a, 0, 4096, 1));
   REC(cohmap_cmd_copy(s, w->b, 0, w->c, 0, 512));
   for (unsigned i = 0; i < w->writes; i++)
      REC(cohmap_cmd_write(s, w->a, 20480 + 100 * (size_t)i, w->payload[i],
                           100));
   REC(cohmap_cmd_fill(s, w->n, 0, N_SIZE, 0x5a5a5a5a));
   REC(cohmap_cmd_checksum(s, w->b, 512, w->c, 0, C_SIZE));
   REC(cohmap_cmd_compute(s, COHMAP_COMPUTE_XOR32, w->a, 8192, w->a, 0, 4096,
                          0xffff0000));
   for (unsigned i = 0; i < 16; i++)
      REC(cohmap_cmd_fill(s, w->a, 16384 + 64 * (size_t)i, 64,
                          0x01010101u * i));
#undef REC
   return first;
}

/* The mappings before the work ran: the CPU's writes, nothing else. */
static void
work_expect_untouched(struct work *w, const char *what)
{
   if (!same_bytes(cohmap_bo_map(w->a), w->a0, A_SIZE, what) ||
       !same_bytes(cohmap_bo_map(w->b), w->b0, B_SIZE, what) ||
       !same_bytes(cohmap_bo_map(w->c), w->c0, C_SIZE, what))
      fail();
}

/* After the work completed (observed): the mappings and device copies
 * hold the results of exactly one execution. */
static void
work_expect_done(struct work *w, const char *what)
{
   static uint8_t a[A_SIZE], b[B_SIZE], nn[N_SIZE];
   memcpy(a, w->a0, A_SIZE);
   memcpy(b, w->b0, B_SIZE);
   for (size_t i = 0; i < 4096; i += 4) {
      uint32_t x;
      memcpy(&x, w->a0 + i, 4);
      x += 1;
      memcpy(a + i, &x, 4);
      x ^= 0xffff0000;
      memcpy(a + 8192 + i, &x, 4);
   }
   for (unsigned i = 0; i < w->writes; i++)
      memcpy(a + 20480 + 100 * (size_t)i, w->payload[i], 100);
   for (unsigned i = 0; i < 16; i++)
      memset(a + 16384 + 64 * (size_t)i, (int)i, 64);
   memcpy(b, w->c0, 512);
   uint64_t sum = cohmap_checksum(w->c0, C_SIZE);
   for (int i = 0; i < 8; i++)
      b[512 + i] = (uint8_t)(sum >> (8 * i));
   memset(nn, 0x5a, N_SIZE);

   char msg[160];
   snprintf(msg, sizeof(msg), "%s: mapping of a", what);
   if (!same_bytes(cohmap_bo_map(w->a), a, A_SIZE, msg))
      fail();
   snprintf(msg, sizeof(msg), "%s: mapping of b", what);
   if (!same_bytes(cohmap_bo_map(w->b), b, B_SIZE, msg))
      fail();
   CHECK_OK(cohmap_bo_invalidate(w->n, 0, N_SIZE));
   snprintf(msg, sizeof(msg), "%s: n after invalidate", what);
   if (!same_bytes(cohmap_bo_map(w->n), nn, N_SIZE, msg))
      fail();
   snprintf(msg, sizeof(msg), "%s: device copy of a", what);
   expect_device(w->dev, w->a, a, A_SIZE, msg);
   snprintf(msg, sizeof(msg), "%s: device copy of c", what);
   expect_device(w->dev, w->c, w->c0, C_SIZE, msg);
}

/* Records and submits the work without injection. */
static struct cohmap_fence *
work_submit(struct work *w)
{
   struct cohmap_submit *s = NULL;
   struct cohmap_fence *f = NULL;
   CHECK_OK(cohmap_submit_begin(w->dev, &s));
   CHECK_OK(work_record(w, s));
   CHECK_OK(cohmap_submit_end(s, &f));
   assert_non_null(f);
   return f;
}

static void
fence_done(struct cohmap_fence *f)
{
   CHECK_OK(cohmap_fence_wait(f, UINT64_MAX));
   cohmap_fence_destroy(f);
}

static void
test_record(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));
   struct cohmap_device *dev = device_new(v->method, NULL);
   struct tally t = {.op = "recording a submission"};
   struct work *w = calloc(1, sizeof(*w));
   assert_non_null(w);

   for (unsigned long n = 0;; n++) {
      assert_true(n < MAX_RUNS);
      work_init(w, dev, &rng);
      struct cohmap_submit *s = NULL;
      arm(n);
      int rc = cohmap_submit_begin(dev, &s);
      if (rc == 0)
         rc = work_record(w, s);
      bool did_fire = disarm();
      tally_rc(&t, n, did_fire, rc);

      if (!s) {
         assert_true(rc < 0);
      } else {
         struct cohmap_fence *f = NULL;
         int end = cohmap_submit_end(s, &f);
         if (rc) {
            /* A recording error poisons the submission. */
            if (end != rc && end >= 0) {
               fprintf(stderr,
                       "%s: recording failed with %d (allocation "
                       "call %lu), but cohmap_submit_end returned %d\n",
                       cur_name, rc, n, end);
               fail();
            }
            assert_null(f);
            CHECK_OK(cohmap_device_wait_idle(dev));
            work_expect_untouched(w, "after a refused submission");
         } else {
            CHECK_OK(end);
            fence_done(f);
            work_expect_done(w, "recorded under injection");
            work_fini(w);
            if (!did_fire)
               break;
            continue;
         }
      }
      /* The same work again, without injection: one execution. */
      fence_done(work_submit(w));
      work_expect_done(w, "retry after a failed recording");
      work_fini(w);
   }
   free(w);
   CHECK_OK(cohmap_device_destroy(dev));
   tally_done(&t);
}

static void
test_submit_end(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));
   struct cohmap_device *dev = device_new(v->method, NULL);
   struct tally t = {.op = "cohmap_submit_end"};
   struct work *w = calloc(1, sizeof(*w));
   assert_non_null(w);

   for (unsigned long n = 0;; n++) {
      assert_true(n < MAX_RUNS);
      work_init(w, dev, &rng);
      struct cohmap_submit *s = NULL;
      struct cohmap_fence *f = NULL;
      CHECK_OK(cohmap_submit_begin(dev, &s));
      CHECK_OK(work_record(w, s));
      arm(n);
      int rc = cohmap_submit_end(s, &f);
      bool did_fire = disarm();
      tally_rc(&t, n, did_fire, rc);

      if (rc) {
         assert_null(f);
         /* Nothing queued: nothing to merge, mappings as the CPU left
          * them. */
         CHECK_OK(cohmap_device_wait_idle(dev));
         work_expect_untouched(w, "after a failed cohmap_submit_end");
         /* The retry uploads every CPU write (including any the failed
          * end collected before failing) and runs the work once. */
         f = work_submit(w);
      }
      fence_done(f);
      work_expect_done(w, rc ? "retry after a failed cohmap_submit_end"
                             : "cohmap_submit_end under injection");
      work_fini(w);
      if (!did_fire)
         break;
   }
   free(w);
   CHECK_OK(cohmap_device_destroy(dev));
   tally_done(&t);
}

/* Completion observed under injection: the merge allocates. */
static void
test_wait(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));
   /* 20 ms of execution: the retirement inside cohmap_submit_end() finds
    * the work unfinished, so the merge happens in the armed wait.  (If a
    * stall of the test thread lets it finish first, that run has nothing
    * to inject into; the loop then simply tries again.) */
   struct cohmap_device *dev = device_new(v->method, "20000");
   struct work *w = calloc(1, sizeof(*w));
   assert_non_null(w);

   for (int how = 0; how < 2; how++) {
      struct tally t = {.op = how ? "cohmap_device_wait_idle"
                                  : "cohmap_fence_wait"};
      for (unsigned long n = 0;; n++) {
         assert_true(n < MAX_RUNS);
         work_init(w, dev, &rng);
         struct cohmap_fence *f = work_submit(w);
         arm(n);
         int rc = how ? cohmap_device_wait_idle(dev)
                      : cohmap_fence_wait(f, UINT64_MAX);
         bool did_fire = disarm();
         tally_rc(&t, n, did_fire, rc);
         /* A failed merge is retried by the next observation. */
         if (rc)
            CHECK_OK(how ? cohmap_fence_wait(f, UINT64_MAX)
                         : cohmap_device_wait_idle(dev));
         cohmap_fence_destroy(f);
         work_expect_done(w, rc ? "after a failed, then a good wait"
                                : "wait under injection");
         work_fini(w);
         if (!did_fire && (t.errors || t.runs >= 5))
            break;
      }
      tally_done(&t);
   }
   free(w);
   CHECK_OK(cohmap_device_destroy(dev));
}

/* --- explicit synchronization ------------------------------------------ */

static void
test_flush_invalidate(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));
   struct cohmap_device *dev = device_new(v->method, NULL);
   const size_t size = 64 * 1024, pitch = 512;
   struct cohmap_bo *bo = bo_new(dev, size, COHMAP_BO_GPU_WRITE);
   uint8_t *cpu = cohmap_bo_map(bo);
   uint8_t *model = calloc(1, size), *garbage = malloc(size);
   assert_non_null(model);
   assert_non_null(garbage);

   /* flush_box of 100 rows: a range list that grows. */
   struct cohmap_box box = {
      .offset = 3, .row_pitch = pitch, .width = 37, .height = 100};
   struct tally t = {.op = "cohmap_bo_flush_box"};
   for (unsigned long n = 0;; n++) {
      assert_true(n < MAX_RUNS);
      tu_rng_fill(&rng, cpu, size);
      arm(n);
      int rc = cohmap_bo_flush_box(bo, &box);
      bool did_fire = disarm();
      tally_rc(&t, n, did_fire, rc);
      if (rc)
         CHECK_OK(cohmap_bo_flush_box(bo, &box));
      for (size_t y = 0; y < box.height; y++) {
         size_t off = box.offset + y * pitch;
         memcpy(model + off, cpu + off, box.width);
      }
      expect_device(dev, bo, model, size, "after flush_box");
      if (!did_fire)
         break;
   }
   tally_done(&t);

   /* invalidate after a GPU write: a download buffer. */
   struct tally ti = {.op = "cohmap_bo_invalidate"};
   for (unsigned long n = 0;; n++) {
      assert_true(n < MAX_RUNS);
      uint32_t pattern = (uint32_t)tu_rng_next(&rng);
      struct cohmap_submit *s = NULL;
      CHECK_OK(cohmap_submit_begin(dev, &s));
      CHECK_OK(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_WRITE));
      CHECK_OK(cohmap_cmd_fill(s, bo, 0, size, pattern));
      CHECK_OK(ws_submit_wait(s));
      tu_rng_fill(&rng, cpu, size);
      memcpy(garbage, cpu, size);
      arm(n);
      int rc = cohmap_bo_invalidate(bo, 0, size);
      bool did_fire = disarm();
      tally_rc(&ti, n, did_fire, rc);
      if (rc)
         CHECK_OK(cohmap_bo_invalidate(bo, 0, size));
      for (size_t i = 0; i < size; i += 4)
         memcpy(model + i, &pattern, 4);
      if (!same_bytes(cpu, model, size, "after invalidate"))
         fail();
      if (!did_fire)
         break;
   }
   tally_done(&ti);

   free(model);
   free(garbage);
   CHECK_OK(cohmap_bo_destroy(bo));
   CHECK_OK(cohmap_device_destroy(dev));
}

/* flush_all collects every coherent BO: a failure must not lose what it
 * collected before failing. */
static void
test_flush_all(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));
   struct cohmap_device *dev = device_new(v->method, NULL);
   const size_t sizes[] = {64 * 1024, 1000, 3000, 40 * 1024};
   struct cohmap_bo *bos[TU_ARRAY_SIZE(sizes)];
   uint8_t *want[TU_ARRAY_SIZE(sizes)];
   for (size_t i = 0; i < TU_ARRAY_SIZE(sizes); i++) {
      bos[i] = bo_new(dev, sizes[i],
                      COHMAP_BO_COHERENT | (i % 2 ? COHMAP_BO_GPU_WRITE : 0));
      want[i] = malloc(sizes[i]);
      assert_non_null(want[i]);
   }

   struct tally t = {.op = "cohmap_device_flush_all"};
   for (unsigned long n = 0;; n++) {
      assert_true(n < MAX_RUNS);
      for (size_t i = 0; i < TU_ARRAY_SIZE(sizes); i++) {
         /* A few scattered writes per BO. */
         for (int k = 0; k < 4; k++) {
            size_t off = (size_t)tu_rng_below(&rng, sizes[i] - 16);
            tu_rng_fill(&rng, (uint8_t *)cohmap_bo_map(bos[i]) + off, 16);
         }
         memcpy(want[i], cohmap_bo_map(bos[i]), sizes[i]);
      }
      arm(n);
      int rc = cohmap_device_flush_all(dev);
      bool did_fire = disarm();
      tally_rc(&t, n, did_fire, rc);
      for (size_t i = 0; i < TU_ARRAY_SIZE(sizes); i++)
         expect_device(dev, bos[i], want[i], sizes[i],
                       rc ? "after a failed flush_all"
                          : "after flush_all under injection");
      if (!did_fire)
         break;
   }
   tally_done(&t);

   for (size_t i = 0; i < TU_ARRAY_SIZE(sizes); i++) {
      free(want[i]);
      CHECK_OK(cohmap_bo_destroy(bos[i]));
   }
   CHECK_OK(cohmap_device_destroy(dev));
}

/* --- is the wrapping in place? ----------------------------------------- */

static void
test_wrapping(void **state)
{
   (void)state;
   cur_name = "wrapping";
   /* This file's own calls go through the wrappers (called through a
    * volatile pointer, or the compiler may drop a malloc/free pair)... */
   void *(*volatile do_malloc)(size_t) = malloc;
   unsigned long before = wrapped_calls_total;
   arm(1000);
   void *p = do_malloc(16);
   void *q = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
   disarm();
   assert_non_null(p);
   assert_true(q != MAP_FAILED);
   free(p);
   munmap(q, 4096);
   assert_true(wrapped_calls_total - before == 2);

   /* ...and so do the library's: a device creation makes several. */
   before = wrapped_calls_total;
   struct cohmap_device *dev = NULL;
   arm(100000);
   int rc = cohmap_device_create(NULL, &dev);
   disarm();
   CHECK_OK(rc);
   printf("# cohmap_device_create made %lu wrapped allocation calls\n",
          wrapped_calls_total - before);
   assert_true(wrapped_calls_total - before >= 2);
   CHECK_OK(cohmap_device_destroy(dev));

   /* And a failing one fails. */
   arm(0);
   p = do_malloc(16);
   assert_true(disarm());
   assert_null(p);
}

int
main(int argc, char **argv)
{
   for (int i = 1; i < argc; i++) {
      if (strcmp(argv[i], "--slow") == 0) {
         slow = true;
      } else {
         fprintf(stderr, "usage: %s [--slow]\n", argv[0]);
         return 1;
      }
   }

   static struct variant variants[TU_METHODS_COUNT];
   static const struct {
      const char *name;
      CMUnitTestFunction fn;
   } cases[] = {
      {"device-create", test_device_create},
      {"bo-create", test_bo_create},
      {"record", test_record},
      {"submit-end", test_submit_end},
      {"wait", test_wait},
      {"flush-invalidate", test_flush_invalidate},
      {"flush-all", test_flush_all},
   };
   static struct CMUnitTest
      tests[TU_ARRAY_SIZE(cases) * TU_METHODS_COUNT + 1];
   static char names[TU_ARRAY_SIZE(tests)][64];
   size_t nt = 0;

   tu_seed();
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));
   for (size_t i = 0; i < TU_METHODS_COUNT; i++) {
      variants[i].method = tu_methods[i];
      snprintf(variants[i].name, sizeof(variants[i].name), "%s",
               cohmap_method_name(tu_methods[i]));
   }
   tests[nt++] =
      (struct CMUnitTest){"wrapping", test_wrapping, NULL, NULL, NULL};
   for (size_t c = 0; c < TU_ARRAY_SIZE(cases); c++) {
      for (size_t i = 0; i < TU_METHODS_COUNT; i++) {
         snprintf(names[nt], sizeof(names[nt]), "%s %s", cases[c].name,
                  variants[i].name);
         tests[nt] = (struct CMUnitTest){names[nt], cases[c].fn, NULL, NULL,
                                         &variants[i]};
         nt++;
      }
   }
   int failed =
      _cmocka_run_group_tests("winsys-inject", tests, nt, NULL, NULL);
   printf("# %lu allocation calls wrapped while armed, %lu failed on "
          "purpose\n",
          wrapped_calls_total, injected_total);
   return failed;
}
