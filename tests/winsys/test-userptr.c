/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Userptr BOs: cohmap_bo_wrap() of the caller's own page-aligned memory,
 * coherent or not, with or without COHMAP_BO_GPU_WRITE, under every
 * method.  The caller's pointer is the mapping, so every check reads the
 * caller's memory directly.
 *
 *  - The initial contents reach the device with the first submission
 *    (coherent: all of it, once) or with an explicit flush (not coherent:
 *    before it the device still has zeros, and nothing was uploaded).
 *  - CPU stores reach the device (coherent: by the next submission; not
 *    coherent: only once flushed, which the test checks by looking before
 *    and after the flush).
 *  - GPU writes reach the caller's memory after the fence (coherent: with
 *    CPU stores made meanwhile to other bytes of the same pages kept; not
 *    coherent: only after cohmap_bo_invalidate(), the memory unchanged
 *    before it).  Without GPU_WRITE, writing commands are refused.
 *  - Kernel writes (read(2) from a pipe into the memory) reach the device:
 *    scan sees them in the page tables, compare and full read the memory
 *    anyway.  fault is skipped: it write-protects the memory with
 *    mprotect(), and a kernel write into a protected page fails with
 *    EFAULT instead of raising a fault the handler could record.  That is
 *    why cohmap never chooses fault itself for a BO without
 *    COHMAP_BO_CPU_STORES_ONLY (checked here with COHMAP_METHOD=fault in
 *    the environment), while a device created with COHMAP_METHOD_FAULT
 *    asked for it explicitly.
 *  - After cohmap_bo_destroy() the memory is the caller's again: its
 *    contents intact, writable (no protection left behind).
 *  - The same memory wrapped twice (two coherent BOs over the same or
 *    partly the same pages): refused with an error, or both BOs see every
 *    store.
 *  - Unmapping wrapped coherent memory while it is wrapped: the next
 *    submission using it fails with -EFAULT, every later one too, nothing
 *    crashes, and other BOs keep working.  Non-coherent wrapped memory is
 *    only ever read or written by the caller's own flush and invalidate
 *    calls, so unmapping it is the caller's use after free and is not
 *    tested.
 *
 * --slow: a larger buffer and more scattered writes.
 */

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "ws-util.h"

static bool slow;

struct variant {
   enum cohmap_method method;
   uint32_t flags; /* BO flags */
   char name[64];
};

static const char *cur_name = "";

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

#define CHECK_U64(got, want, what)                                           \
   do {                                                                      \
      uint64_t g_ = (got), w_ = (want);                                      \
      if (g_ != w_) {                                                        \
         fprintf(stderr,                                                     \
                 "%s:%d: %s: %s: got %" PRIu64 ", expected %" PRIu64 "\n",   \
                 __FILE__, __LINE__, cur_name, (what), g_, w_);              \
         fail();                                                             \
      }                                                                      \
   } while (0)

static bool
same_bytes(const uint8_t *got, const uint8_t *want, size_t size,
           const char *what)
{
   if (memcmp(got, want, size) == 0)
      return true;
   size_t first = SIZE_MAX, count = 0, last = 0;
   for (size_t i = 0; i < size; i++) {
      if (got[i] != want[i]) {
         if (first == SIZE_MAX)
            first = i;
         last = i;
         count++;
      }
   }
   fprintf(stderr,
           "%s: %s: %zu bytes differ in [%zu, %zu]; first at "
           "offset %zu: expected 0x%02x, got 0x%02x\n",
           cur_name, what, count, first, last + 1, first, want[first],
           got[first]);
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

static struct cohmap_bo *
bo_new(struct cohmap_device *dev, size_t size, uint32_t flags)
{
   struct cohmap_bo *bo = NULL;
   CHECK_OK(cohmap_bo_create(dev, size, flags, &bo));
   assert_non_null(bo);
   return bo;
}

static struct cohmap_device_stats
dev_stats(struct cohmap_device *dev)
{
   struct cohmap_device_stats st;
   CHECK_OK(cohmap_device_get_stats(dev, &st));
   return st;
}

/* The device's copy of bo, through a GPU copy into a non-coherent BO and
 * an invalidate. */
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

/* read(2) from a pipe into dst: the kernel writes the memory, no CPU
 * store of ours does. */
static void
kernel_write(uint8_t *dst, const uint8_t *src, size_t len)
{
   int p[2];
   assert_int_equal(pipe(p), 0);
   size_t done = 0;
   while (done < len) {
      /* Less than the pipe's capacity: write() cannot block. */
      size_t n = len - done < 16384 ? len - done : 16384;
      assert_int_equal(write(p[1], src + done, n), (ssize_t)n);
      size_t got = 0;
      while (got < n) {
         ssize_t r = read(p[0], dst + done + got, n - got);
         if (r <= 0) {
            fprintf(stderr, "%s: read(2) into wrapped memory: %zd (%s)\n",
                    cur_name, r, r < 0 ? strerror(errno) : "EOF");
            fail();
         }
         got += (size_t)r;
      }
      done += n;
   }
   close(p[0]);
   close(p[1]);
}

/* Scattered CPU stores into mem (and model): first and last byte, a run
 * across a page boundary, random bytes.  Returns the ranges stored, for
 * flushing. */
static size_t
scribble(uint8_t *mem, uint8_t *model, size_t size, struct tu_rng *rng,
         struct cohmap_range *out, size_t max)
{
   size_t ps = tu_page_size(), n = 0;
   out[n++] = (struct cohmap_range){0, 1};
   out[n++] = (struct cohmap_range){size - 1, 1};
   out[n++] = (struct cohmap_range){3 * ps - 10, 20};
   while (n < max) {
      size_t len = (size_t)tu_rng_range(rng, 1, 300);
      out[n++] =
         (struct cohmap_range){(size_t)tu_rng_below(rng, size - len), len};
   }
   for (size_t i = 0; i < n; i++) {
      for (size_t j = 0; j < out[i].length; j++) {
         /* Always a different value: a store that changes nothing would
          * prove nothing. */
         uint8_t b =
            (uint8_t)(mem[out[i].offset + j] + 1 + tu_rng_below(rng, 255));
         mem[out[i].offset + j] = b;
         model[out[i].offset + j] = b;
      }
   }
   return n;
}

static size_t
buffer_size(void)
{
   return slow ? 8 * TU_MIB : 64 * TU_KIB;
}

/* --- the whole life of a userptr BO ------------------------------------ */

static void
test_lifecycle(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   const bool coherent = v->flags & COHMAP_BO_COHERENT;
   const bool gpu_write = v->flags & COHMAP_BO_GPU_WRITE;
   const size_t size = buffer_size(), ps = tu_page_size();
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));
   struct cohmap_device *dev = ws_device_create(v->method, 0);
   assert_non_null(dev);

   uint8_t *mem = tu_map(size, 0, false);
   uint8_t *model = malloc(size), *zero = calloc(1, size);
   assert_non_null(mem);
   assert_non_null(model);
   assert_non_null(zero);
   tu_rng_fill(&rng, mem, size);
   memcpy(model, mem, size);

   struct cohmap_bo *bo = NULL;
   CHECK_OK(cohmap_bo_wrap(dev, mem, size, v->flags, &bo));
   assert_non_null(bo);
   assert_ptr_equal(cohmap_bo_map(bo), mem);
   assert_int_equal(cohmap_bo_size(bo), size);
   assert_int_equal(cohmap_bo_flags(bo), v->flags);
   assert_int_equal(cohmap_bo_method(bo),
                    coherent ? v->method : COHMAP_METHOD_AUTO);
   /* Wrapping changed nothing in the memory. */
   if (!same_bytes(mem, model, size, "memory after wrapping"))
      fail();

   /* 1. Initial contents. */
   struct cohmap_device_stats st = dev_stats(dev);
   if (coherent) {
      expect_device(dev, bo, model, size, "initial contents");
      CHECK_U64(dev_stats(dev).bytes_uploaded - st.bytes_uploaded, size,
                "bytes uploaded by the first submission");
      st = dev_stats(dev);
      expect_device(dev, bo, model, size, "unchanged contents");
      /* full reports everything every time, unless GPU_WRITE's
       * snapshot narrows it down to the bytes that changed. */
      CHECK_U64(dev_stats(dev).bytes_uploaded - st.bytes_uploaded,
                v->method == COHMAP_METHOD_FULL && !gpu_write ? size : 0,
                "bytes uploaded by the second submission");
   } else {
      expect_device(dev, bo, zero, size, "initial contents, not flushed");
      CHECK_U64(dev_stats(dev).bytes_uploaded - st.bytes_uploaded, 0,
                "bytes uploaded without a flush");
      st = dev_stats(dev);
      CHECK_OK(cohmap_bo_flush(bo, 0, size));
      CHECK_U64(dev_stats(dev).bytes_uploaded - st.bytes_uploaded, size,
                "bytes uploaded by a flush of everything");
      expect_device(dev, bo, model, size, "initial contents, flushed");
   }

   /* 2. CPU stores into the caller's memory. */
   uint8_t *before = malloc(size);
   assert_non_null(before);
   memcpy(before, model, size);
   struct cohmap_range ranges[64];
   size_t nr =
      scribble(mem, model, size, &rng, ranges, TU_ARRAY_SIZE(ranges));
   if (!coherent) {
      /* Nothing of the new stores reaches the device without a flush,
       * not even through a submission that reads the BO. */
      expect_device(dev, bo, before, size, "stores not flushed");
      for (size_t i = 0; i < nr; i++)
         CHECK_OK(cohmap_bo_flush(bo, ranges[i].offset, ranges[i].length));
   }
   free(before);
   expect_device(dev, bo, model, size, "after CPU stores");

   /* 3. GPU writes. */
   struct cohmap_bo *src = bo_new(dev, 200, COHMAP_BO_COHERENT);
   uint8_t srcdata[200], payload[51];
   tu_rng_fill(&rng, srcdata, sizeof(srcdata));
   tu_rng_fill(&rng, payload, sizeof(payload));
   memcpy(cohmap_bo_map(src), srcdata, sizeof(srcdata));
   struct cohmap_submit *s = NULL;
   struct cohmap_fence *f = NULL;
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(
      cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_READ | COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_submit_add_bo(s, src, COHMAP_ACCESS_READ));
   CHECK_OK(cohmap_cmd_fill(s, bo, ps, 1904, 0xc0ffee00));
   CHECK_OK(cohmap_cmd_write(s, bo, 2 * ps + 100, payload, sizeof(payload)));
   CHECK_OK(cohmap_cmd_copy(s, bo, size - 300, src, 0, 200));
   if (!gpu_write) {
      CHECK_RC(cohmap_submit_end(s, &f), -EINVAL);
      assert_null(f);
      CHECK_OK(cohmap_device_wait_idle(dev));
      if (!same_bytes(mem, model, size, "after a refused GPU write"))
         fail();
   } else {
      CHECK_OK(cohmap_submit_end(s, &f));
      /* Stores while the GPU runs, next to its bytes in the same pages:
       * a page-granular merge would lose them. */
      uint8_t cpu_bytes[3] = {0x11, 0x22, 0x33};
      const size_t cpu_offs[3] = {ps + 1904, 2 * ps + 99, 2 * ps + 151};
      for (int i = 0; i < 3; i++) {
         mem[cpu_offs[i]] = (uint8_t)(model[cpu_offs[i]] ^ cpu_bytes[i]);
         model[cpu_offs[i]] = mem[cpu_offs[i]];
      }
      CHECK_OK(cohmap_fence_wait(f, UINT64_MAX));
      cohmap_fence_destroy(f);

      uint8_t *gpu = malloc(size);
      assert_non_null(gpu);
      memcpy(gpu, model, size);
      for (size_t i = 0; i < 1904; i += 4)
         memcpy(gpu + ps + i, "\x00\xee\xff\xc0", 4);
      memcpy(gpu + 2 * ps + 100, payload, sizeof(payload));
      memcpy(gpu + size - 300, srcdata, 200);
      if (coherent) {
         if (!same_bytes(mem, gpu, size, "caller's memory after the fence"))
            fail();
         memcpy(model, gpu, size);
         struct cohmap_bo_stats bst;
         CHECK_OK(cohmap_bo_get_stats(bo, &bst));
         assert_true(bst.bytes_merged > 0);
      } else {
         /* Not coherent: the caller's memory did not change... */
         if (!same_bytes(mem, model, size,
                         "memory after the fence, "
                         "before invalidate (must be unchanged)"))
            fail();
         /* ...until invalidated, which overwrites the CPU's bytes in the
          * range: the device has the GPU's bytes and, for the three CPU
          * stores, the older values. */
         uint8_t *dev_copy = malloc(size);
         assert_non_null(dev_copy);
         memcpy(dev_copy, gpu, size);
         for (int i = 0; i < 3; i++)
            dev_copy[cpu_offs[i]] ^= cpu_bytes[i];
         CHECK_OK(cohmap_bo_invalidate(bo, ps, ps));
         memcpy(model + ps, dev_copy + ps, ps);
         if (!same_bytes(mem, model, size, "after invalidating one page"))
            fail();
         CHECK_OK(cohmap_bo_invalidate(bo, 0, size));
         if (!same_bytes(mem, dev_copy, size, "after invalidating all"))
            fail();
         memcpy(model, dev_copy, size);
         free(dev_copy);
      }
      free(gpu);
      expect_device(dev, bo, model, size, "after GPU writes");
   }
   CHECK_OK(cohmap_bo_destroy(src));

   /* 4. Kernel writes. */
   if (coherent && v->method == COHMAP_METHOD_FAULT) {
      printf("# %s: read(2) into fault-tracked memory fails with EFAULT "
             "by design; not tested\n",
             v->name);
   } else {
      size_t off = ps - 100, len = 2 * ps + 200;
      uint8_t *data = malloc(len);
      assert_non_null(data);
      tu_rng_fill(&rng, data, len);
      kernel_write(mem + off, data, len);
      memcpy(model + off, data, len);
      free(data);
      if (!coherent)
         CHECK_OK(cohmap_bo_flush(bo, off, len));
      expect_device(dev, bo, model, size, "after read(2) into the memory");
   }

   /* 5. Destroy: the memory is the caller's again. */
   CHECK_OK(cohmap_bo_destroy(bo));
   if (!same_bytes(mem, model, size, "memory after cohmap_bo_destroy"))
      fail();
   for (size_t i = 0; i < size; i += 101)
      mem[i] = (uint8_t)i;
   kernel_write(mem + 5, zero, 3 * ps);
   tu_unmap(mem, size);
   free(model);
   free(zero);
   CHECK_OK(cohmap_device_destroy(dev));
}

/* --- who picks fault ---------------------------------------------------- */

static void
test_auto_not_fault(void **state)
{
   (void)state;
   cur_name = "auto";
   const size_t size = 64 * TU_KIB, ps = tu_page_size();
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("auto"));

   /* Even when fault is the preferred method, a BO that may be written
    * by the kernel does not get it. */
   setenv("COHMAP_METHOD", "fault", 1);
   struct cohmap_device *dev = ws_device_create(COHMAP_METHOD_AUTO, 0);
   unsetenv("COHMAP_METHOD");
   assert_non_null(dev);

   uint8_t *mem = tu_map(size, 0, false), *mem2 = tu_map(size, 0, false);
   uint8_t *model = malloc(size);
   assert_non_null(mem);
   assert_non_null(mem2);
   assert_non_null(model);
   tu_rng_fill(&rng, mem, size);
   memcpy(model, mem, size);

   const uint32_t flag_sets[] = {COHMAP_BO_COHERENT,
                                 COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE};
   for (size_t i = 0; i < TU_ARRAY_SIZE(flag_sets); i++) {
      struct cohmap_bo *bo = NULL;
      CHECK_OK(cohmap_bo_wrap(dev, mem, size, flag_sets[i], &bo));
      if (cohmap_bo_method(bo) == COHMAP_METHOD_FAULT) {
         fprintf(stderr, "a wrapped BO without CPU_STORES_ONLY is tracked "
                         "by fault on an AUTO device\n");
         fail();
      }
      struct cohmap_bo *created = bo_new(dev, size, flag_sets[i]);
      assert_true(cohmap_bo_method(created) != COHMAP_METHOD_FAULT);
      CHECK_OK(cohmap_bo_destroy(created));

      expect_device(dev, bo, model, size, "auto: initial contents");
      uint8_t data[3 * 4096];
      tu_rng_fill(&rng, data, sizeof(data));
      kernel_write(mem + ps / 2, data, sizeof(data));
      memcpy(model + ps / 2, data, sizeof(data));
      expect_device(dev, bo, model, size, "auto: after read(2)");
      CHECK_OK(cohmap_bo_destroy(bo));
   }

   /* With the promise, fault is allowed, and is what was asked for. */
   struct cohmap_bo *bo = NULL;
   CHECK_OK(cohmap_bo_wrap(
      dev, mem2, size, COHMAP_BO_COHERENT | COHMAP_BO_CPU_STORES_ONLY, &bo));
   assert_int_equal(cohmap_bo_method(bo), COHMAP_METHOD_FAULT);
   memset(mem2 + 10, 0x42, 100);
   memset(model, 0, size);
   memset(model + 10, 0x42, 100);
   expect_device(dev, bo, model, size, "auto: CPU_STORES_ONLY");
   CHECK_OK(cohmap_bo_destroy(bo));

   tu_unmap(mem, size);
   tu_unmap(mem2, size);
   free(model);
   CHECK_OK(cohmap_device_destroy(dev));
}

/* --- unmapped while wrapped -------------------------------------------- */

static void
test_unmapped(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   const size_t size = 64 * TU_KIB;
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));
   struct cohmap_device *dev = ws_device_create(v->method, 0);
   assert_non_null(dev);

   /* The victim, another userptr BO and a plain BO. */
   uint8_t *mem = tu_map(size, 0, false), *other = tu_map(size, 0, false);
   assert_non_null(mem);
   assert_non_null(other);
   tu_rng_fill(&rng, mem, size);
   tu_rng_fill(&rng, other, size);
   struct cohmap_bo *victim = NULL, *good = NULL;
   CHECK_OK(cohmap_bo_wrap(dev, mem, size, v->flags, &victim));
   CHECK_OK(cohmap_bo_wrap(dev, other, size, v->flags, &good));
   struct cohmap_bo *plain = bo_new(dev, 4096, v->flags);
   uint8_t *plain_cpu = cohmap_bo_map(plain);
   memset(plain_cpu, 0x31, 4096);

   uint8_t *want = malloc(size);
   assert_non_null(want);
   memcpy(want, mem, size);
   expect_device(dev, victim, want, size, "victim before the unmap");

   /* Everything the failing submissions need is allocated before the
    * unmap: a new mapping of the same size would likely land in the hole,
    * and a mapping placed over wrapped memory is a different case (only
    * scan detects it, see cohmap.h). */
   struct cohmap_bo *rbs[3];
   for (int i = 0; i < 3; i++)
      rbs[i] = bo_new(dev, size, COHMAP_BO_GPU_WRITE);

   /* Unreported stores, then the memory goes away. */
   mem[100] ^= 0xff;
   mem[5 * 4096] ^= 0xff;
   assert_int_equal(munmap(mem, size), 0);

   struct cohmap_device_stats st = dev_stats(dev);
   for (int i = 0; i < 3; i++) {
      struct cohmap_submit *s = NULL;
      struct cohmap_fence *f = NULL;
      CHECK_OK(cohmap_submit_begin(dev, &s));
      CHECK_OK(cohmap_submit_add_bo(s, victim, COHMAP_ACCESS_READ));
      if (i == 2) {
         /* With good BOs in the same submission. */
         CHECK_OK(cohmap_submit_add_bo(s, plain, COHMAP_ACCESS_READ));
         CHECK_OK(cohmap_submit_add_bo(s, good, COHMAP_ACCESS_READ));
      }
      struct cohmap_bo *rb = rbs[i];
      CHECK_OK(cohmap_submit_add_bo(s, rb, COHMAP_ACCESS_WRITE));
      CHECK_OK(cohmap_cmd_copy(s, rb, 0, victim, 0, size));
      int rc = cohmap_submit_end(s, &f);
      if (rc != -EFAULT) {
         fprintf(stderr,
                 "%s: submission %d using unmapped wrapped memory "
                 "returned %d (%s), expected -EFAULT\n",
                 cur_name, i, rc, cohmap_error_message());
         if (!rc)
            cohmap_fence_destroy(f);
         fail();
      }
      assert_null(f);
      assert_true(cohmap_error_message()[0] != '\0');
   }
   for (int i = 0; i < 3; i++)
      CHECK_OK(cohmap_bo_destroy(rbs[i]));
   CHECK_U64(dev_stats(dev).submissions - st.submissions, 0,
             "submissions queued");

   /* The others keep working, their stores (made before and after the
    * failures) all arrive. */
   other[4096 + 7] ^= 0x5a;
   plain_cpu[17] = 0x77;
   uint8_t plain_want[4096];
   memcpy(plain_want, plain_cpu, sizeof(plain_want));
   memcpy(want, other, size);
   expect_device(dev, good, want, size, "other userptr BO");
   expect_device(dev, plain, plain_want, sizeof(plain_want), "plain BO");
   if (v->flags & COHMAP_BO_GPU_WRITE) {
      struct cohmap_submit *s = NULL;
      CHECK_OK(cohmap_submit_begin(dev, &s));
      CHECK_OK(cohmap_submit_add_bo(s, good, COHMAP_ACCESS_WRITE));
      CHECK_OK(cohmap_cmd_fill(s, good, 0, 64, 0x12121212));
      CHECK_OK(ws_submit_wait(s));
      memset(want, 0x12, 64);
      if (!same_bytes(other, want, size, "GPU write to the other BO"))
         fail();
   }

   CHECK_OK(cohmap_bo_destroy(victim));
   /* New BOs work after the broken one is gone. */
   struct cohmap_bo *fresh = bo_new(dev, size, v->flags);
   memset(cohmap_bo_map(fresh), 0x3d, size);
   memset(want, 0x3d, size);
   expect_device(dev, fresh, want, size, "BO created afterwards");

   CHECK_OK(cohmap_bo_destroy(fresh));
   CHECK_OK(cohmap_bo_destroy(good));
   CHECK_OK(cohmap_bo_destroy(plain));
   tu_unmap(other, size);
   free(want);
   CHECK_OK(cohmap_device_destroy(dev));
}

/* --- the same memory wrapped twice ------------------------------------- */

/*
 * Two coherent BOs over the same (or partly the same) caller memory, as an
 * application importing one host pointer twice does.  cohmap may refuse
 * the second wrap with an error; if it accepts it, every store must reach
 * both BOs' device copies, whichever BO is submitted first.  Two trackers
 * on the same pages must not steal each other's writes (one's re-arm
 * clearing the dirty state the other has not collected yet).
 */
static void
test_wrap_twice(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   const size_t ps = tu_page_size(), npages = 16, size = npages * ps;
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));
   struct cohmap_device *dev = ws_device_create(v->method, 0);
   assert_non_null(dev);

   for (int overlap = 0; overlap < 2; overlap++) {
      /* Same range, or the second BO starting in the middle of the
       * first. */
      const size_t off2 = overlap ? size / 2 : 0;
      uint8_t *mem = tu_map(size + off2, 0, false);
      assert_non_null(mem);
      tu_rng_fill(&rng, mem, size + off2);

      struct cohmap_bo *a = NULL, *b = NULL;
      CHECK_OK(cohmap_bo_wrap(dev, mem, size, v->flags, &a));
      expect_device(dev, a, mem, size, "first BO, initial contents");
      int rc = cohmap_bo_wrap(dev, mem + off2, size, v->flags, &b);
      if (rc) {
         /* Refused: fine, with a message and nothing made; the first BO
          * is unaffected. */
         printf("# %s: wrapping memory twice%s: refused with %d (%s)\n",
                v->name, overlap ? " (partly)" : "", rc,
                cohmap_error_message());
         assert_true(rc < 0);
         assert_null(b);
         mem[ps + 3] ^= 0xff;
         expect_device(dev, a, mem, size, "first BO after a refused wrap");
      } else {
         expect_device(dev, b, mem + off2, size,
                       "second BO, initial contents");
         /* Stores in the shared pages, then each BO submitted in turn:
          * both must see each store, in either order. */
         for (int round = 0; round < 6; round++) {
            size_t at = off2 + ps * (size_t)tu_rng_below(&rng, npages / 2) +
                        (size_t)tu_rng_below(&rng, ps);
            mem[at] = (uint8_t)(mem[at] + 1 + tu_rng_below(&rng, 255));
            char what[96];
            struct cohmap_bo *first = round % 2 ? b : a;
            struct cohmap_bo *second = round % 2 ? a : b;
            snprintf(what, sizeof(what),
                     "round %d: store at %zu, the %s "
                     "BO submitted first",
                     round, at, round % 2 ? "second" : "first");
            expect_device(dev, first, mem + (first == b ? off2 : 0), size,
                          what);
            snprintf(what, sizeof(what),
                     "round %d: store at %zu, the %s "
                     "BO submitted second",
                     round, at, round % 2 ? "first" : "second");
            expect_device(dev, second, mem + (second == b ? off2 : 0), size,
                          what);
         }
         CHECK_OK(cohmap_bo_destroy(b));
         /* The first still tracks after the second is gone. */
         mem[2 * ps + 1] ^= 0x0f;
         expect_device(dev, a, mem, size,
                       "first BO after the second's "
                       "destroy");
      }
      CHECK_OK(cohmap_bo_destroy(a));
      tu_unmap(mem, size + off2);
   }
   CHECK_OK(cohmap_device_destroy(dev));
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

   static const uint32_t flag_sets[] = {
      COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE,
      COHMAP_BO_COHERENT,
      COHMAP_BO_GPU_WRITE,
      0,
   };
   static struct variant
      variants[TU_METHODS_COUNT * TU_ARRAY_SIZE(flag_sets)];
   static struct CMUnitTest tests[TU_ARRAY_SIZE(variants) * 3 + 1];
   static char names[TU_ARRAY_SIZE(tests)][96];
   size_t nv = 0, nt = 0;

   tu_seed();
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));
   for (size_t i = 0; i < TU_METHODS_COUNT; i++) {
      for (size_t f = 0; f < TU_ARRAY_SIZE(flag_sets); f++) {
         struct variant *v = &variants[nv++];
         v->method = tu_methods[i];
         v->flags = flag_sets[f];
         snprintf(v->name, sizeof(v->name), "%s/%s%s",
                  cohmap_method_name(v->method),
                  (v->flags & COHMAP_BO_COHERENT) ? "coherent"
                                                  : "non-coherent",
                  (v->flags & COHMAP_BO_GPU_WRITE) ? "+gpu-write" : "");
      }
   }
   for (size_t i = 0; i < nv; i++) {
      snprintf(names[nt], sizeof(names[nt]), "lifecycle %s",
               variants[i].name);
      tests[nt] = (struct CMUnitTest){names[nt], test_lifecycle, NULL, NULL,
                                      &variants[i]};
      nt++;
   }
   for (size_t i = 0; i < nv; i++) {
      if (!(variants[i].flags & COHMAP_BO_COHERENT))
         continue;
      snprintf(names[nt], sizeof(names[nt]), "unmapped %s", variants[i].name);
      tests[nt] = (struct CMUnitTest){names[nt], test_unmapped, NULL, NULL,
                                      &variants[i]};
      nt++;
   }
   for (size_t i = 0; i < nv; i++) {
      if (!(variants[i].flags & COHMAP_BO_COHERENT))
         continue;
      snprintf(names[nt], sizeof(names[nt]), "wrap-twice %s",
               variants[i].name);
      tests[nt] = (struct CMUnitTest){names[nt], test_wrap_twice, NULL, NULL,
                                      &variants[i]};
      nt++;
   }
   tests[nt++] = (struct CMUnitTest){"auto never picks fault",
                                     test_auto_not_fault, NULL, NULL, NULL};
   return _cmocka_run_group_tests("winsys-userptr", tests, nt, NULL, NULL);
}
