/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * COHMAP_DEBUG=verify and COHMAP_DEBUG=stats on winsys devices, and the sim
 * device's knobs.
 *
 * verify must fail when it should: device bytes corrupted behind cohmap's
 * back (through the backend) are reported — at once for BOs with a
 * snapshot (compare, GPU_WRITE), at the next flush for the others — and so
 * is a CPU write the fault method cannot see (/proc/self/mem).  And it must
 * not cry wolf: a writer thread storing all over coherent BOs while
 * submissions write them on a slow GPU, BOs destroyed in flight and slab
 * slots reused, gives no report under any method.
 *
 * stats prints, at device destroy, lines that all start with "cohmap:": the
 * totals, one line per most active BO (at most 16), the rest summed, and
 * no region lines from the device's own context.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "winsys/winsys_priv.h"
#include "ws-util.h"

/* --- stderr capture ---------------------------------------------------- */

struct capture {
   int saved;
   FILE *file;
};

static void
capture_begin(struct capture *cap)
{
   fflush(stderr);
   cap->file = tmpfile();
   assert_non_null(cap->file);
   cap->saved = dup(STDERR_FILENO);
   assert_true(cap->saved >= 0);
   assert_true(dup2(fileno(cap->file), STDERR_FILENO) >= 0);
}

/* Returns what was printed (malloc()ed), and echoes it. */
static char *
capture_end(struct capture *cap)
{
   fflush(stderr);
   dup2(cap->saved, STDERR_FILENO);
   close(cap->saved);
   long size = ftell(cap->file);
   assert_true(size >= 0);
   char *buf = malloc((size_t)size + 1);
   assert_non_null(buf);
   rewind(cap->file);
   size_t n = fread(buf, 1, (size_t)size, cap->file);
   buf[n] = '\0';
   fclose(cap->file);
   fputs(buf, stderr);
   return buf;
}

static size_t
count(const char *text, const char *what)
{
   size_t n = 0;
   for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
      n++;
   return n;
}

static void
assert_all_lines_cohmap(const char *text)
{
   for (const char *p = text; *p;) {
      if (strncmp(p, "cohmap: ", 8) != 0) {
         fprintf(stderr, "a line not starting with \"cohmap: \": %.80s\n", p);
         fail();
      }
      const char *nl = strchr(p, '\n');
      if (!nl)
         break;
      p = nl + 1;
   }
}

/* A device with COHMAP_DEBUG=debug (and the sim's EXEC_US), or NULL if m
 * cannot be used here. */
static struct cohmap_device *
debug_device(const char *debug, enum cohmap_method m, size_t slab_threshold,
             const char *exec_us)
{
   bool fatal = false;
   if (m != COHMAP_METHOD_AUTO && !ws_method_usable(m, &fatal)) {
      assert_false(fatal);
      return NULL;
   }
   assert_int_equal(setenv("COHMAP_DEBUG", debug, 1), 0);
   if (exec_us)
      assert_int_equal(setenv("COHMAP_SIM_EXEC_US", exec_us, 1), 0);
   struct cohmap_device *dev = ws_device_create(m, slab_threshold);
   assert_int_equal(setenv("COHMAP_DEBUG", "", 1), 0);
   assert_int_equal(unsetenv("COHMAP_SIM_EXEC_US"), 0);
   assert_non_null(dev);
   return dev;
}

static struct cohmap_device_stats
stats(struct cohmap_device *dev)
{
   struct cohmap_device_stats st;
   assert_int_equal(cohmap_device_get_stats(dev, &st), 0);
   return st;
}

/* Writes n bytes of value at BO offset off of the device copy, behind
 * cohmap's back. */
static void
corrupt_device(struct cohmap_bo *bo, size_t off, uint8_t value, size_t n)
{
   uint8_t junk[64];
   assert_true(n <= sizeof(junk));
   memset(junk, value, n);
   struct cohmap_device *dev = bo->dev;
   size_t at = bo->offset + off;
   struct cohmap_range r = {at, n};
   assert_int_equal(dev->ops->upload(dev->backend, bo->block->mem, &r, 1,
                                     junk, -(ptrdiff_t)at, 0),
                    0);
}

static void
read_device(struct cohmap_bo *bo, size_t off, void *dst, size_t n)
{
   struct cohmap_device *dev = bo->dev;
   assert_int_equal(dev->ops->download(dev->backend, bo->block->mem,
                                       bo->offset + off, n, dst),
                    0);
}

/* --- verify finds what it should --------------------------------------- */

struct bo_kind {
   const char *name;
   uint32_t flags;
   size_t size;
};

static const struct bo_kind kinds[] = {
   {"dedicated", COHMAP_BO_COHERENT, 64 * 1024},
   {"dedicated gpu-write", COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE,
    64 * 1024},
   {"slab", COHMAP_BO_COHERENT, 4096},
   {"slab gpu-write", COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE, 4096},
};

/* One flush: a submission reading bo, or flush_all. */
static void
flush(struct cohmap_device *dev, struct cohmap_bo *bo, bool use_submit)
{
   if (!use_submit) {
      assert_int_equal(cohmap_device_flush_all(dev), 0);
      return;
   }
   struct cohmap_submit *s = NULL;
   assert_int_equal(cohmap_submit_begin(dev, &s), 0);
   assert_int_equal(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_READ), 0);
   assert_int_equal(ws_submit_wait(s), 0);
}

static void
test_verify_catches_corruption(void **state)
{
   for (size_t mi = 0; mi < TU_METHODS_COUNT; mi++) {
      enum cohmap_method m = tu_methods[mi];
      for (size_t k = 0; k < TU_ARRAY_SIZE(kinds); k++) {
         struct cohmap_device *dev = debug_device("verify", m, 0, NULL);
         if (!dev)
            continue;
         bool use_submit = k % 2 == 0;
         fprintf(stderr, "--- %s, %s BO, flushed by %s\n",
                 cohmap_method_name(m), kinds[k].name,
                 use_submit ? "a submission" : "flush_all");
         struct cohmap_bo *bo = NULL;
         assert_int_equal(
            cohmap_bo_create(dev, kinds[k].size, kinds[k].flags, &bo), 0);
         uint8_t *map = cohmap_bo_map(bo);
         for (size_t i = 0; i < kinds[k].size; i++)
            map[i] = (uint8_t)(i * 7 + 1);

         /* A clean flush checks and finds nothing. */
         flush(dev, bo, use_submit);
         flush(dev, bo, use_submit);
         struct cohmap_device_stats st = stats(dev);
         assert_true(st.verify_checks >= 2);
         assert_int_equal(st.verify_mismatches, 0);

         corrupt_device(bo, 100, 0xee, 4);
         struct capture cap;
         capture_begin(&cap);
         flush(dev, bo, use_submit);
         uint64_t after_one = stats(dev).verify_mismatches;
         flush(dev, bo, use_submit);
         char *text = capture_end(&cap);
         st = stats(dev);

         /* With a snapshot the device must equal it: found at once.
          * Without, the device must equal the CPU where the next collect
          * reports nothing: found one flush later.  full without a
          * snapshot uploads everything: the corruption is gone. */
         bool snapshot = m == COHMAP_METHOD_COMPARE ||
                         (kinds[k].flags & COHMAP_BO_GPU_WRITE);
         if (m == COHMAP_METHOD_FULL && !snapshot) {
            assert_int_equal(st.verify_mismatches, 0);
            uint8_t dv[4];
            read_device(bo, 100, dv, 4);
            assert_memory_equal(dv, map + 100, 4);
            assert_null(strstr(text, "cohmap: verify:"));
         } else {
            assert_true(after_one >= (snapshot ? 1u : 0u));
            assert_true(st.verify_mismatches >= 1);
            char want[96];
            snprintf(want, sizeof(want), "cohmap: verify: BO %p (",
                     (void *)bo);
            assert_non_null(strstr(text, want));
            assert_non_null(strstr(text, "4 bytes in 1 runs"));
            assert_non_null(strstr(text, "first at offset 100:"));
            assert_non_null(strstr(text, "device ee ee ee ee"));
            char cpu[32];
            snprintf(cpu, sizeof(cpu), "cpu %02x %02x", map[100], map[101]);
            assert_non_null(strstr(text, cpu));
            assert_all_lines_cohmap(text);
         }
         free(text);
         assert_int_equal(ws_teardown(dev, &bo, 1), 0);
      }
   }
}

/* A store the fault method cannot see: a write through /proc/self/mem
 * goes past the page protection.  verify reports it one flush later, on a
 * BO without a snapshot and on a GPU_WRITE one (whose snapshot's diff does
 * not look at pages the engine did not report). */
static void
test_verify_catches_missed_write(void **state)
{
   static const uint32_t flags[] = {
      COHMAP_BO_COHERENT | COHMAP_BO_CPU_STORES_ONLY,
      COHMAP_BO_COHERENT | COHMAP_BO_CPU_STORES_ONLY | COHMAP_BO_GPU_WRITE,
   };
   for (size_t f = 0; f < TU_ARRAY_SIZE(flags); f++) {
      struct cohmap_device *dev =
         debug_device("verify", COHMAP_METHOD_FAULT, 1, NULL);
      if (!dev)
         skip();
      struct cohmap_bo *bo = NULL;
      assert_int_equal(cohmap_bo_create(dev, 64 * 1024, flags[f], &bo), 0);
      assert_int_equal(cohmap_bo_method(bo), COHMAP_METHOD_FAULT);
      uint8_t *map = cohmap_bo_map(bo);
      memset(map, 0x11, 64 * 1024);
      flush(dev, bo, true);
      assert_int_equal(stats(dev).verify_mismatches, 0);

      int fd = open("/proc/self/mem", O_RDWR);
      if (fd < 0) {
         ws_teardown(dev, &bo, 1);
         skip();
      }
      static const uint8_t hidden[3] = {0xab, 0xcd, 0xef};
      ssize_t n = pwrite(fd, hidden, sizeof(hidden),
                         (off_t)(uintptr_t)(map + 8192 + 5));
      close(fd);
      assert_int_equal(n, (ssize_t)sizeof(hidden));
      assert_int_equal(map[8192 + 5], 0xab);

      struct capture cap;
      capture_begin(&cap);
      flush(dev, bo, true);
      flush(dev, bo, false);
      char *text = capture_end(&cap);
      /* If fault saw it after all (a kernel that reports it), nothing is
       * missed and nothing may be reported. */
      uint8_t dv[3];
      read_device(bo, 8192 + 5, dv, 3);
      if (memcmp(dv, hidden, 3) == 0) {
         assert_int_equal(stats(dev).verify_mismatches, 0);
      } else {
         assert_int_equal(stats(dev).verify_mismatches, 1);
         assert_non_null(strstr(text, "3 bytes in 1 runs"));
         assert_non_null(strstr(text, "first at offset 8197: cpu ab cd ef "
                                      "11 11 11 11 11, device 11 11 11"));
      }
      free(text);
      assert_int_equal(ws_teardown(dev, &bo, 1), 0);
   }
}

/* --- verify reports nothing when nothing is missed ---------------------
 */

#define NOISE_BOS 8

struct noise {
   struct cohmap_bo *bos[NOISE_BOS];
   uint8_t *maps[NOISE_BOS];
   size_t sizes[NOISE_BOS];
   pthread_mutex_t lock; /* bos[] may be replaced */
   atomic_bool stop;
   atomic_ullong stores;
};

static void *
noise_writer(void *arg)
{
   struct noise *n = arg;
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("noise"));
   while (!atomic_load(&n->stop)) {
      pthread_mutex_lock(&n->lock);
      size_t b = tu_rng_below(&rng, NOISE_BOS);
      size_t off = tu_rng_below(&rng, n->sizes[b]);
      size_t len = 1 + tu_rng_below(&rng, 64);
      if (len > n->sizes[b] - off)
         len = n->sizes[b] - off;
      tu_rng_fill(&rng, n->maps[b] + off, len);
      pthread_mutex_unlock(&n->lock);
      atomic_fetch_add(&n->stores, 1);
   }
   return NULL;
}

static void
noise_create(struct cohmap_device *dev, struct noise *n, size_t i)
{
   /* Even: GPU_WRITE; half dedicated, half in slabs. */
   uint32_t flags =
      COHMAP_BO_COHERENT | (i % 2 == 0 ? COHMAP_BO_GPU_WRITE : 0);
   n->sizes[i] = i < NOISE_BOS / 2 ? 32 * 1024 + 4096 : 4096;
   assert_int_equal(cohmap_bo_create(dev, n->sizes[i], flags, &n->bos[i]), 0);
   n->maps[i] = cohmap_bo_map(n->bos[i]);
}

static void
test_verify_no_false_positives(void **state)
{
   static const enum cohmap_method methods[] = {
      COHMAP_METHOD_AUTO,    COHMAP_METHOD_SCAN, COHMAP_METHOD_FAULT,
      COHMAP_METHOD_COMPARE, COHMAP_METHOD_FULL,
   };
   for (size_t mi = 0; mi < TU_ARRAY_SIZE(methods); mi++) {
      struct cohmap_device *dev =
         debug_device("verify", methods[mi], 0, "300");
      if (!dev)
         continue;
      fprintf(stderr, "--- %s\n", cohmap_method_name(methods[mi]));
      struct noise n = {.stop = false};
      pthread_mutex_init(&n.lock, NULL);
      for (size_t i = 0; i < NOISE_BOS; i++)
         noise_create(dev, &n, i);
      struct cohmap_bo *src = NULL;
      assert_int_equal(cohmap_bo_create(dev, 4096, COHMAP_BO_COHERENT, &src),
                       0);

      struct capture cap;
      capture_begin(&cap);
      pthread_t writer;
      assert_int_equal(pthread_create(&writer, NULL, noise_writer, &n), 0);
      /* On a loaded machine the 60 submissions can all run before the
       * writer is scheduled at all (0 stores: the scan leg failed so under
       * a soak); the point is stores racing the flushes. */
      while (atomic_load(&n.stores) == 0)
         sched_yield();
      struct tu_rng rng;
      tu_rng_seed(&rng, tu_seed_for("submits"));
      struct cohmap_fence *fences[4] = {NULL};
      for (int it = 0; it < 60; it++) {
         struct cohmap_submit *s = NULL;
         assert_int_equal(cohmap_submit_begin(dev, &s), 0);
         assert_int_equal(cohmap_submit_add_bo(s, src, COHMAP_ACCESS_READ),
                          0);
         pthread_mutex_lock(&n.lock);
         for (size_t i = 0; i < NOISE_BOS; i++) {
            struct cohmap_bo *bo = n.bos[i];
            if (i % 2) {
               assert_int_equal(
                  cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_READ), 0);
               continue;
            }
            assert_int_equal(
               cohmap_submit_add_bo(s, bo,
                                    COHMAP_ACCESS_READ | COHMAP_ACCESS_WRITE),
               0);
            size_t off = 4 * tu_rng_below(&rng, n.sizes[i] / 4 - 256);
            assert_int_equal(
               cohmap_cmd_fill(s, bo, off, 512, (uint32_t)it * 0x01010101u),
               0);
            assert_int_equal(
               cohmap_cmd_copy(s, bo, n.sizes[i] - 1024, src, 0, 1000), 0);
            assert_int_equal(
               cohmap_cmd_checksum(s, bo, 8, n.bos[i + 1], 0, n.sizes[i + 1]),
               0);
         }
         pthread_mutex_unlock(&n.lock);
         struct cohmap_fence **f = &fences[it % 4];
         if (*f) {
            assert_int_equal(cohmap_fence_wait(*f, UINT64_MAX), 0);
            cohmap_fence_destroy(*f);
         }
         assert_int_equal(cohmap_submit_end(s, f), 0);
         if (it % 5 == 0)
            assert_int_equal(cohmap_device_flush_all(dev), 0);
         if (it % 7 == 3) {
            /* A slab BO destroyed in flight (its GPU writes dropped) and
             * its slot reused. */
            pthread_mutex_lock(&n.lock);
            size_t i = NOISE_BOS - 2;
            assert_int_equal(cohmap_bo_destroy(n.bos[i]), 0);
            noise_create(dev, &n, i);
            pthread_mutex_unlock(&n.lock);
         }
      }
      atomic_store(&n.stop, true);
      assert_int_equal(pthread_join(writer, NULL), 0);
      for (size_t i = 0; i < 4; i++) {
         if (fences[i]) {
            assert_int_equal(cohmap_fence_wait(fences[i], UINT64_MAX), 0);
            cohmap_fence_destroy(fences[i]);
         }
      }
      /* Quiet now: two more flushes judge the last suspects. */
      assert_int_equal(cohmap_device_wait_idle(dev), 0);
      assert_int_equal(cohmap_device_flush_all(dev), 0);
      assert_int_equal(cohmap_device_flush_all(dev), 0);
      char *text = capture_end(&cap);

      struct cohmap_device_stats st = stats(dev);
      fprintf(stderr, "%llu stores, %llu checks, %llu mismatches\n",
              (unsigned long long)atomic_load(&n.stores),
              (unsigned long long)st.verify_checks,
              (unsigned long long)st.verify_mismatches);
      assert_true(atomic_load(&n.stores) > 0);
      assert_true(st.verify_checks >= 60 * NOISE_BOS);
      assert_int_equal(st.verify_mismatches, 0);
      assert_null(strstr(text, "cohmap: verify:"));
      free(text);

      /* And the device has what the CPU has: nothing was missed. */
      for (size_t i = 0; i < NOISE_BOS; i++) {
         uint8_t *dv = malloc(n.sizes[i]);
         assert_non_null(dv);
         read_device(n.bos[i], 0, dv, n.sizes[i]);
         assert_memory_equal(dv, n.maps[i], n.sizes[i]);
         free(dv);
      }
      struct cohmap_bo *all[NOISE_BOS + 1];
      memcpy(all, n.bos, sizeof(n.bos));
      all[NOISE_BOS] = src;
      assert_int_equal(ws_teardown(dev, all, NOISE_BOS + 1), 0);
      pthread_mutex_destroy(&n.lock);
   }
}

/* Non-coherent BOs: the flushed bytes are compared; unflushed ones are
 * the application's business. */
static void
test_verify_explicit(void **state)
{
   struct cohmap_device *dev =
      debug_device("verify", COHMAP_METHOD_COMPARE, 0, NULL);
   struct cohmap_bo *bo = NULL;
   assert_int_equal(cohmap_bo_create(dev, 16384, 0, &bo), 0);
   uint8_t *map = cohmap_bo_map(bo);
   memset(map, 0x5a, 16384);
   assert_int_equal(cohmap_bo_flush(bo, 0, 8192), 0);
   struct cohmap_box box = {
      .offset = 8192, .row_pitch = 256, .width = 16, .height = 8};
   assert_int_equal(cohmap_bo_flush_box(bo, &box), 0);
   struct cohmap_device_stats st = stats(dev);
   assert_int_equal(st.verify_checks, 2);
   assert_int_equal(st.verify_mismatches, 0);
   assert_int_equal(ws_teardown(dev, &bo, 1), 0);
}

/* Without the flag nothing is checked. */
static void
test_verify_off(void **state)
{
   struct cohmap_device *dev =
      debug_device("", COHMAP_METHOD_COMPARE, 0, NULL);
   struct cohmap_bo *bo = NULL;
   assert_int_equal(cohmap_bo_create(dev, 4096, COHMAP_BO_COHERENT, &bo), 0);
   corrupt_device(bo, 0, 0xee, 4);
   flush(dev, bo, true);
   flush(dev, bo, false);
   assert_int_equal(stats(dev).verify_checks, 0);
   assert_int_equal(stats(dev).verify_mismatches, 0);
   assert_int_equal(ws_teardown(dev, &bo, 1), 0);
}

/* --- stats ------------------------------------------------------------- */

#define STATS_SLAB_BOS 20

static char *
stats_run(struct cohmap_context *ctx, const char *debug)
{
   struct cohmap_device_options opts;
   struct cohmap_device *dev = NULL;
   cohmap_device_options_init(&opts);
   opts.method = COHMAP_METHOD_COMPARE;
   opts.context = ctx;
   assert_int_equal(setenv("COHMAP_DEBUG", debug, 1), 0);
   assert_int_equal(cohmap_device_create(&opts, &dev), 0);
   assert_int_equal(setenv("COHMAP_DEBUG", "", 1), 0);

   struct cohmap_bo *bos[STATS_SLAB_BOS + 2];
   assert_int_equal(cohmap_bo_create(dev, 65536,
                                     COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE,
                                     &bos[0]),
                    0);
   assert_int_equal(cohmap_bo_create(dev, 4096, 0, &bos[1]), 0);
   for (size_t i = 2; i < TU_ARRAY_SIZE(bos); i++)
      assert_int_equal(
         cohmap_bo_create(dev, 4096, COHMAP_BO_COHERENT, &bos[i]), 0);
   for (int it = 0; it < 3; it++) {
      memset(cohmap_bo_map(bos[0]), it + 1, 65536);
      memset(cohmap_bo_map(bos[2 + it]), it + 1, 100);
      struct cohmap_submit *s = NULL;
      assert_int_equal(cohmap_submit_begin(dev, &s), 0);
      assert_int_equal(
         cohmap_submit_add_bo(s, bos[0],
                              COHMAP_ACCESS_READ | COHMAP_ACCESS_WRITE),
         0);
      assert_int_equal(
         cohmap_submit_add_bo(s, bos[2 + it], COHMAP_ACCESS_READ), 0);
      assert_int_equal(cohmap_cmd_fill(s, bos[0], 0, 64, 7), 0);
      assert_int_equal(ws_submit_wait(s), 0);
   }
   struct capture cap;
   capture_begin(&cap);
   assert_int_equal(ws_teardown(dev, bos, TU_ARRAY_SIZE(bos)), 0);
   return capture_end(&cap);
}

static void
test_stats(void **state)
{
   char *text = stats_run(NULL, "stats");
   assert_all_lines_cohmap(text);
   assert_int_equal(count(text, ": total: 3 submissions, "), 1);
   assert_non_null(strstr(text, "method compare (device option)"));
   assert_non_null(strstr(text, ": 22 BOs: 21 tracked (1 dedicated, 20 in "
                                "1 slabs, last on compare), 1 "
                                "non-coherent\n"));
   /* 16 BO lines, the most active first: the dedicated one. */
   assert_int_equal(count(text, ": BO 0x"), COHMAP_STATS_TOP_BOS);
   const char *first = strstr(text, ": BO 0x");
   assert_non_null(first);
   static const char want[] = "bytes, coherent|gpu-write, dedicated, "
                              "compare: 3 submissions, ";
   assert_memory_equal(strstr(first, "bytes, "), want, strlen(want));
   assert_non_null(strstr(first, " collects, "));
   assert_non_null(strstr(text, ": 5 less active BOs not listed: "));
   /* The device's own context prints no region lines. */
   assert_null(strstr(text, "cohmap: region"));
   free(text);

   /* Nothing without the flag. */
   text = stats_run(NULL, "");
   assert_string_equal(text, "");
   free(text);

   /* A caller's context keeps its region lines. */
   assert_int_equal(setenv("COHMAP_DEBUG", "stats", 1), 0);
   struct cohmap_context *ctx = NULL;
   assert_int_equal(cohmap_context_create(NULL, &ctx), 0);
   assert_int_equal(setenv("COHMAP_DEBUG", "", 1), 0);
   text = stats_run(ctx, "");
   assert_non_null(strstr(text, ": total: 3 submissions, "));
   assert_true(count(text, "cohmap: region") >= 2);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
   free(text);
}

/* --- the sim's knobs --------------------------------------------------- */

static void
test_sim_knobs(void **state)
{
   static const char *const vars[] = {
      "COHMAP_SIM_LATENCY_US",
      "COHMAP_SIM_BANDWIDTH_MBPS",
      "COHMAP_SIM_EXEC_US",
   };
   static const char *const bad[] = {
      "abc",
      "-1",
      "+5",
      " 5",
      "5 ",
      "0x10",
      "1e3",
      "2.5",
      "5us",
      "10000001",
      "99999999999999999999999",
      "5,6",
   };
   static const char *const good[] = {"", "0", "00", "7"};
   struct cohmap_device_options opts;
   cohmap_device_options_init(&opts);

   for (size_t v = 0; v < TU_ARRAY_SIZE(vars); v++) {
      for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
         struct cohmap_device *dev = (void *)1;
         assert_int_equal(setenv(vars[v], bad[i], 1), 0);
         struct capture cap;
         capture_begin(&cap);
         int ret = cohmap_device_create(&opts, &dev);
         char *text = capture_end(&cap);
         assert_int_equal(unsetenv(vars[v]), 0);
         if (ret != -EINVAL || dev || !strstr(text, vars[v]) ||
             !strstr(text, bad[i])) {
            fprintf(stderr, "%s='%s': %d\n", vars[v], bad[i], ret);
            fail();
         }
         free(text);
      }
      for (size_t i = 0; i < TU_ARRAY_SIZE(good); i++) {
         struct cohmap_device *dev = NULL;
         assert_int_equal(setenv(vars[v], good[i], 1), 0);
         assert_int_equal(cohmap_device_create(&opts, &dev), 0);
         assert_int_equal(unsetenv(vars[v]), 0);
         assert_int_equal(cohmap_device_destroy(dev), 0);
      }
   }
}

int
main(void)
{
   tu_seed();
   unsetenv("COHMAP_SIM_EXEC_US");
   unsetenv("COHMAP_SIM_LATENCY_US");
   unsetenv("COHMAP_SIM_BANDWIDTH_MBPS");
   setenv("COHMAP_DEBUG", "", 1);
   setenv("COHMAP_METHOD", "", 1);
   const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_verify_catches_corruption),
      cmocka_unit_test(test_verify_catches_missed_write),
      cmocka_unit_test(test_verify_no_false_positives),
      cmocka_unit_test(test_verify_explicit),
      cmocka_unit_test(test_verify_off),
      cmocka_unit_test(test_stats),
      cmocka_unit_test(test_sim_knobs),
   };
   return cmocka_run_group_tests(tests, NULL, NULL);
}
