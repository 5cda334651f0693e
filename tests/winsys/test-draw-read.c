/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The two directions of a coherent mapping, each on its own, against a
 * model of what the BO must hold (the test's own copy, updated by the
 * CPU's stores and by a CPU implementation of each GPU command):
 *
 *  - draw: the CPU writes a coherent BO (random runs, sparse bytes, dense,
 *    the whole BO, or nothing at all) and the GPU reads it -- copies it
 *    into a GPU_WRITE BO, checksums all of it and a part.  The GPU must see
 *    exactly the CPU's bytes, with no flush.  Once for a BO the GPU cannot
 *    write (page uploads) and once for a GPU_WRITE one (byte-exact).
 *  - read: the GPU writes the BO (fill, write, ADD32/XOR32 of CPU-written
 *    input, in place or from another BO, copy); once the host observes
 *    completion the CPU mapping shows the GPU's bytes, with no explicit
 *    call.  Completion is observed by cohmap_fence_wait() on the last of a
 *    few submissions, by a cohmap_fence_poll() loop on a slow GPU (-EBUSY,
 *    then 0) and by cohmap_device_wait_idle().
 *  - round trip: the CPU changes bytes the GPU just wrote -- some of them
 *    back to their value before the GPU's write -- and the GPU reads them
 *    back, again and again.  A snapshot left stale by a merge makes such a
 *    reverted byte look unchanged: it would not be uploaded.
 *
 * The GPU results the CPU checks are poisoned by the CPU before each
 * submission: the poison is uploaded and must be replaced by the GPU's
 * bytes.  Every method; a dedicated BO (not a multiple of the page size)
 * and a slab BO that shares its page with two neighbours the CPU writes.
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
#include <unistd.h>

#include <cmocka.h>

#include "ws-util.h"

/* The poll test's GPU takes this long per submission, so that polls find
 * it busy first. */
#define POLL_EXEC_US "3000"
#define POLL_TIMEOUT_S 10.0

enum group {
   GROUP_DRAW,          /* main BO read-only */
   GROUP_DRAW_GPU_WRITE, /* main BO GPU_WRITE */
   GROUP_READ_WAIT,
   GROUP_READ_POLL,
   GROUP_READ_IDLE,
   GROUP_ROUND_TRIP,
   GROUP_COUNT,
};

static const char *const group_names[GROUP_COUNT] = {
   "draw", "draw gpu-write", "read wait", "read poll", "read idle",
   "round-trip",
};

enum sync_kind { SYNC_WAIT, SYNC_POLL, SYNC_IDLE };

struct placement {
   const char *name;
   size_t slab_threshold;
   size_t size;
   bool neighbours;
};

static const struct placement placements[] = {
   /* Not a whole number of pages: the last page is partly the BO's. */
   {"dedicated", 1, 3 * 4096 + 123, false},
   /* 1 KiB slots: four BOs to a page. */
   {"slab", 0, 700, true},
};

struct dr_case {
   enum cohmap_method method;
   enum group group;
   const struct placement *p;
   unsigned rounds;
   char name[96];
};

enum {
   BO_NB0,   /* neighbours (slab only): created around the main BO */
   BO_MAIN,
   BO_NB1,
   BO_DST,   /* GPU_WRITE: copies of what the GPU read */
   BO_RESULT, /* GPU_WRITE: checksums */
   BO_INPUT, /* read-only: CPU-written input of GPU commands */
   BO_COUNT,
};

#define RESULT_SLOTS 2

struct fx {
   const struct dr_case *c;
   struct tu_rng rng;
   struct cohmap_device *dev;
   struct cohmap_bo *bos[BO_COUNT];
   uint8_t *map[BO_COUNT];
   uint8_t *model[BO_COUNT]; /* what each BO must hold */
   size_t size;              /* of main, dst, input and the neighbours */
   uint64_t busy_polls;
   uint64_t merged;
};

/* --- checks ------------------------------------------------------------ */

static bool
bytes_equal(const struct fx *f, const uint8_t *got, const uint8_t *expect,
            size_t n, const char *what, unsigned round)
{
   if (memcmp(got, expect, n) == 0)
      return true;
   size_t i = 0;
   while (got[i] == expect[i])
      i++;
   size_t diff = 0;
   for (size_t j = i; j < n; j++)
      diff += got[j] != expect[j];
   fprintf(stderr, "%s: round %u: %s: first difference at offset %zu: "
           "expected %#04x, got %#04x (%zu of %zu bytes differ)\n",
           f->c->name, round, what, i, expect[i], got[i], diff, n);
   return false;
}

static bool
api_ok(const struct fx *f, int ret, const char *what)
{
   if (ret == 0)
      return true;
   fprintf(stderr, "%s: %s: %d (%s)\n", f->c->name, what, ret,
           cohmap_error_message());
   return false;
}

static uint64_t
load_le64(const uint8_t *p)
{
   uint64_t v = 0;
   for (unsigned i = 0; i < 8; i++)
      v |= (uint64_t)p[i] << (8 * i);
   return v;
}

static uint32_t
load_le32(const uint8_t *p)
{
   return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
          (uint32_t)p[3] << 24;
}

static void
store_le32(uint8_t *p, uint32_t v)
{
   for (unsigned i = 0; i < 4; i++)
      p[i] = (uint8_t)(v >> (8 * i));
}

/* --- CPU stores: mapping and model together ---------------------------- */

static void
cpu_write(struct fx *f, unsigned bo, size_t off, const void *src, size_t n)
{
   memcpy(f->model[bo] + off, src, n);
   memcpy(f->map[bo] + off, src, n);
}

static void
cpu_random(struct fx *f, unsigned bo, size_t off, size_t n)
{
   uint8_t buf[256];
   while (n) {
      size_t k = n < sizeof(buf) ? n : sizeof(buf);
      tu_rng_fill(&f->rng, buf, k);
      cpu_write(f, bo, off, buf, k);
      off += k;
      n -= k;
   }
}

/* Changes one byte for sure. */
static void
cpu_flip(struct fx *f, unsigned bo, size_t off)
{
   uint8_t v = f->model[bo][off] ^ (uint8_t)tu_rng_range(&f->rng, 1, 255);
   cpu_write(f, bo, off, &v, 1);
}

/* A random run inside a BO of f->size bytes. */
static void
random_run(struct fx *f, size_t max, size_t *off, size_t *n)
{
   *off = (size_t)tu_rng_below(&f->rng, f->size);
   size_t left = f->size - *off;
   *n = (size_t)tu_rng_range(&f->rng, 1, left < max ? left : max);
}

/* A random run of whole 32-bit words. */
static void
random_words(struct fx *f, size_t *off, size_t *n)
{
   size_t words = f->size / 4;
   size_t first = (size_t)tu_rng_below(&f->rng, words);
   *off = 4 * first;
   *n = 4 * (size_t)tu_rng_range(&f->rng, 1, words - first);
}

enum draw_pattern {
   DRAW_RANDOM, DRAW_SPARSE, DRAW_DENSE, DRAW_WHOLE, DRAW_NONE,
   DRAW_PATTERNS,
};

static const char *const draw_names[DRAW_PATTERNS] = {
   "random", "sparse", "dense", "whole", "none",
};

static void
cpu_draw_pattern(struct fx *f, unsigned bo, enum draw_pattern p)
{
   switch (p) {
   case DRAW_RANDOM: {
      unsigned runs = (unsigned)tu_rng_range(&f->rng, 1, 20);
      for (unsigned i = 0; i < runs; i++) {
         size_t off, n;
         random_run(f, 300, &off, &n);
         cpu_random(f, bo, off, n);
      }
      break;
   }
   case DRAW_SPARSE: {
      unsigned bytes = (unsigned)tu_rng_range(&f->rng, 1, 8);
      for (unsigned i = 0; i < bytes; i++)
         cpu_flip(f, bo, (size_t)tu_rng_below(&f->rng, f->size));
      break;
   }
   case DRAW_DENSE:
      for (size_t i = 0; i < f->size; i++) {
         if (tu_rng_percent(&f->rng, 90))
            cpu_flip(f, bo, i);
      }
      break;
   case DRAW_WHOLE:
      cpu_random(f, bo, 0, f->size);
      break;
   case DRAW_NONE:
   case DRAW_PATTERNS:
      break;
   }
}

/* --- GPU commands: recorded and applied to the model ------------------- */

static int
gpu_copy(struct fx *f, struct cohmap_submit *s, unsigned dst, size_t dst_off,
         unsigned src, size_t src_off, size_t n)
{
   memmove(f->model[dst] + dst_off, f->model[src] + src_off, n);
   return cohmap_cmd_copy(s, f->bos[dst], dst_off, f->bos[src], src_off, n);
}

static int
gpu_fill(struct fx *f, struct cohmap_submit *s, unsigned dst, size_t off,
         size_t n, uint32_t pattern)
{
   for (size_t i = 0; i < n; i += 4)
      store_le32(f->model[dst] + off + i, pattern);
   return cohmap_cmd_fill(s, f->bos[dst], off, n, pattern);
}

static int
gpu_write(struct fx *f, struct cohmap_submit *s, unsigned dst, size_t off,
          size_t n)
{
   uint8_t buf[512];
   tu_rng_fill(&f->rng, buf, n);
   memcpy(f->model[dst] + off, buf, n);
   return cohmap_cmd_write(s, f->bos[dst], off, buf, n);
}

static int
gpu_compute(struct fx *f, struct cohmap_submit *s, enum cohmap_compute_op op,
            unsigned dst, size_t dst_off, unsigned src, size_t src_off,
            size_t n, uint32_t operand)
{
   for (size_t i = 0; i < n; i += 4) {
      uint32_t v = load_le32(f->model[src] + src_off + i);
      v = op == COHMAP_COMPUTE_ADD32 ? v + operand : v ^ operand;
      store_le32(f->model[dst] + dst_off + i, v);
   }
   return cohmap_cmd_compute(s, op, f->bos[dst], dst_off, f->bos[src],
                             src_off, n, operand);
}

/* Checksums [off, off + n) of bo into result slot; poisons the slot
 * first (the poison is uploaded, the GPU's checksum must replace it). */
static int
gpu_checksum(struct fx *f, struct cohmap_submit *s, unsigned slot,
             unsigned bo, size_t off, size_t n, uint64_t *expect)
{
   *expect = cohmap_checksum(f->model[bo] + off, n);
   uint64_t poison = ~*expect;
   for (unsigned i = 0; i < 8; i++) {
      uint8_t b = (uint8_t)(poison >> (8 * i));
      cpu_write(f, BO_RESULT, 8 * slot + i, &b, 1);
      f->model[BO_RESULT][8 * slot + i] = (uint8_t)(*expect >> (8 * i));
   }
   return cohmap_cmd_checksum(s, f->bos[BO_RESULT], 8 * slot, f->bos[bo],
                              off, n);
}

/* One random command writing the main BO. */
static int
gpu_random_op(struct fx *f, struct cohmap_submit *s)
{
   size_t off, src_off, n;
   enum cohmap_compute_op op = tu_rng_percent(&f->rng, 50)
                                  ? COHMAP_COMPUTE_ADD32
                                  : COHMAP_COMPUTE_XOR32;
   uint32_t operand = (uint32_t)tu_rng_range(&f->rng, 1, UINT32_MAX);

   switch (tu_rng_below(&f->rng, 5)) {
   case 0:
      random_words(f, &off, &n);
      return gpu_fill(f, s, BO_MAIN, off, n, (uint32_t)tu_rng_next(&f->rng));
   case 1:
      random_run(f, 512, &off, &n);
      return gpu_write(f, s, BO_MAIN, off, n);
   case 2: /* of the CPU-written input BO */
      random_words(f, &off, &n);
      src_off = 4 * (size_t)tu_rng_below(&f->rng, (f->size - n) / 4 + 1);
      return gpu_compute(f, s, op, BO_MAIN, off, BO_INPUT, src_off, n,
                         operand);
   case 3: /* in place, of what the CPU wrote into it */
      random_words(f, &off, &n);
      return gpu_compute(f, s, op, BO_MAIN, off, BO_MAIN, off, n, operand);
   default:
      random_run(f, f->size, &off, &n);
      src_off = (size_t)tu_rng_below(&f->rng, f->size - n + 1);
      return gpu_copy(f, s, BO_MAIN, off, BO_INPUT, src_off, n);
   }
}

/* --- submissions ------------------------------------------------------- */

static int
submit_begin(struct fx *f, struct cohmap_submit **s, bool main_written)
{
   int ret = cohmap_submit_begin(f->dev, s);
   if (ret)
      return ret;
   uint32_t main_access = COHMAP_ACCESS_READ |
                          (main_written ? COHMAP_ACCESS_WRITE : 0);
   ret = cohmap_submit_add_bo(*s, f->bos[BO_MAIN], main_access);
   if (!ret)
      ret = cohmap_submit_add_bo(*s, f->bos[BO_DST], COHMAP_ACCESS_WRITE);
   if (!ret)
      ret = cohmap_submit_add_bo(*s, f->bos[BO_RESULT], COHMAP_ACCESS_WRITE);
   if (!ret)
      ret = cohmap_submit_add_bo(*s, f->bos[BO_INPUT], COHMAP_ACCESS_READ);
   if (ret) {
      cohmap_submit_abort(*s);
      *s = NULL;
   }
   return ret;
}

/* Ends s and observes its completion the way kind says.  Nothing else
 * must make the GPU's writes visible. */
static bool
submit_sync(struct fx *f, struct cohmap_submit *s, enum sync_kind kind)
{
   struct cohmap_fence *fence = NULL;
   int ret = cohmap_submit_end(s, kind == SYNC_IDLE ? NULL : &fence);
   if (!api_ok(f, ret, "submit"))
      return false;

   switch (kind) {
   case SYNC_WAIT:
      ret = cohmap_fence_wait(fence, UINT64_MAX);
      break;
   case SYNC_POLL: {
      double deadline = tu_now() + POLL_TIMEOUT_S;
      while ((ret = cohmap_fence_poll(fence)) == -EBUSY &&
             tu_now() < deadline) {
         f->busy_polls++;
         usleep(100);
      }
      /* Once complete, always complete. */
      if (ret == 0)
         ret = cohmap_fence_poll(fence);
      break;
   }
   case SYNC_IDLE:
      ret = cohmap_device_wait_idle(f->dev);
      break;
   }
   cohmap_fence_destroy(fence);
   return api_ok(f, ret, kind == SYNC_WAIT   ? "fence wait"
                         : kind == SYNC_POLL ? "fence poll"
                                             : "wait idle");
}

/* Checks every BO the test keeps a model of.  The neighbours and the
 * input are written by the CPU only; dst and result by the GPU only. */
static bool
check_all(struct fx *f, unsigned round)
{
   static const char *const names[BO_COUNT] = {
      "neighbour before", "the BO", "neighbour after", "copy destination",
      "checksum results", "input",
   };
   bool ok = true;
   for (unsigned i = 0; i < BO_COUNT; i++) {
      if (!f->bos[i])
         continue;
      size_t n = i == BO_RESULT ? 8 * RESULT_SLOTS : f->size;
      if (i == BO_RESULT && memcmp(f->map[i], f->model[i], n) != 0) {
         for (unsigned s = 0; s < RESULT_SLOTS; s++) {
            uint64_t got = load_le64(f->map[i] + 8 * s);
            uint64_t want = load_le64(f->model[i] + 8 * s);
            if (got != want)
               fprintf(stderr, "%s: round %u: checksum %u: the GPU's is "
                       "%#018" PRIx64 ", the data's %#018" PRIx64 "%s\n",
                       f->c->name, round, s, got, want,
                       got == ~want ? " (the CPU's poison: the result was "
                                      "not merged)" : "");
         }
         ok = false;
         continue;
      }
      ok &= bytes_equal(f, f->map[i], f->model[i], n, names[i], round);
   }
   return ok;
}

/* Poisons a few bytes of the copy destination: uploaded by the next
 * submission, they must be overwritten by its copy. */
static void
poison_dst(struct fx *f)
{
   unsigned k = (unsigned)tu_rng_range(&f->rng, 1, 8);
   for (unsigned i = 0; i < k; i++)
      cpu_flip(f, BO_DST, (size_t)tu_rng_below(&f->rng, f->size));
}

static void
touch_neighbours(struct fx *f)
{
   static const unsigned neighbours[] = {BO_NB0, BO_NB1};
   for (unsigned i = 0; i < TU_ARRAY_SIZE(neighbours); i++) {
      unsigned bo = neighbours[i];
      if (f->bos[bo] && tu_rng_percent(&f->rng, 70))
         cpu_draw_pattern(f, bo, DRAW_RANDOM);
   }
}

/* The GPU reads main: copy all of it, checksum all and a part. */
static int
gpu_read_main(struct fx *f, struct cohmap_submit *s)
{
   size_t off, n;
   uint64_t sum;
   poison_dst(f);
   int ret = gpu_copy(f, s, BO_DST, 0, BO_MAIN, 0, f->size);
   if (!ret)
      ret = gpu_checksum(f, s, 0, BO_MAIN, 0, f->size, &sum);
   random_run(f, f->size, &off, &n);
   if (!ret)
      ret = gpu_checksum(f, s, 1, BO_MAIN, off, n, &sum);
   return ret;
}

/* --- the groups -------------------------------------------------------- */

static bool
run_draw(struct fx *f)
{
   for (unsigned r = 0; r < f->c->rounds; r++) {
      enum draw_pattern p = r < DRAW_PATTERNS
                               ? (enum draw_pattern)r
                               : (enum draw_pattern)tu_rng_below(
                                    &f->rng, DRAW_PATTERNS);
      cpu_draw_pattern(f, BO_MAIN, p);
      touch_neighbours(f);

      struct cohmap_submit *s;
      int ret = submit_begin(f, &s, false);
      if (!ret)
         ret = gpu_read_main(f, s);
      if (ret) {
         cohmap_submit_abort(s);
         return api_ok(f, ret, draw_names[p]);
      }
      if (!submit_sync(f, s, SYNC_WAIT) || !check_all(f, r)) {
         fprintf(stderr, "%s: round %u wrote the '%s' pattern\n",
                 f->c->name, r, draw_names[p]);
         return false;
      }
   }
   return true;
}

static bool
run_read(struct fx *f, enum sync_kind kind)
{
   for (unsigned r = 0; r < f->c->rounds; r++) {
      /* CPU-written input for the compute and copy commands, and in the
       * BO itself for the in-place ones. */
      cpu_draw_pattern(f, BO_INPUT, DRAW_RANDOM);
      if (tu_rng_percent(&f->rng, 60))
         cpu_draw_pattern(f, BO_MAIN, DRAW_RANDOM);
      touch_neighbours(f);

      /* A few submissions; observing the last one must merge them all
       * (they complete in order). */
      unsigned subs = (unsigned)tu_rng_range(&f->rng, 1, 3);
      for (unsigned i = 0; i < subs; i++) {
         struct cohmap_submit *s;
         int ret = submit_begin(f, &s, true);
         unsigned ops = (unsigned)tu_rng_range(&f->rng, 1, 4);
         for (unsigned k = 0; k < ops && !ret; k++)
            ret = gpu_random_op(f, s);
         if (ret) {
            cohmap_submit_abort(s);
            return api_ok(f, ret, "recording");
         }
         if (i + 1 == subs) {
            if (!submit_sync(f, s, kind))
               return false;
            break;
         }
         struct cohmap_fence *fence;
         ret = cohmap_submit_end(s, &fence);
         cohmap_fence_destroy(fence);
         if (!api_ok(f, ret, "submit"))
            return false;
      }
      if (!check_all(f, r))
         return false;
   }
   return true;
}

static bool
run_round_trip(struct fx *f)
{
   uint8_t *before = malloc(f->size); /* main before the GPU's last write */
   size_t gpu_off = 0, gpu_n = 0;      /* what it last wrote */
   bool ok = before != NULL;

   for (unsigned r = 0; ok && r < f->c->rounds; r++) {
      /* Change what the GPU just wrote: some bytes back to their value
       * before its write (the trap for a stale snapshot), some to new
       * values; and a few bytes elsewhere. */
      for (size_t i = gpu_off; i < gpu_off + gpu_n; i++) {
         unsigned dice = (unsigned)tu_rng_below(&f->rng, 4);
         if (dice == 0 && before[i] != f->model[BO_MAIN][i])
            cpu_write(f, BO_MAIN, i, &before[i], 1);
         else if (dice == 1)
            cpu_flip(f, BO_MAIN, i);
      }
      cpu_draw_pattern(f, BO_MAIN, DRAW_SPARSE);
      touch_neighbours(f);

      struct cohmap_submit *s;
      int ret = submit_begin(f, &s, true);
      if (!ret)
         ret = gpu_read_main(f, s);
      /* Then the GPU writes it: in place, over what the CPU wrote. */
      memcpy(before, f->model[BO_MAIN], f->size);
      random_words(f, &gpu_off, &gpu_n);
      if (!ret)
         ret = gpu_compute(f, s, COHMAP_COMPUTE_XOR32, BO_MAIN, gpu_off,
                           BO_MAIN, gpu_off, gpu_n,
                           (uint32_t)tu_rng_range(&f->rng, 1, UINT32_MAX));
      if (ret) {
         cohmap_submit_abort(s);
         ok = api_ok(f, ret, "recording");
         break;
      }
      ok = submit_sync(f, s, (enum sync_kind)(r % 3)) && check_all(f, r);
   }
   free(before);
   return ok;
}

/* --- fixture ----------------------------------------------------------- */

static bool
fx_init(struct fx *f, const struct dr_case *c)
{
   uint32_t coherent = COHMAP_BO_PERSISTENT | COHMAP_BO_COHERENT;
   uint32_t main_flags = coherent;
   if (c->group != GROUP_DRAW)
      main_flags |= COHMAP_BO_GPU_WRITE;

   memset(f, 0, sizeof(*f));
   f->c = c;
   f->size = c->p->size;
   tu_rng_seed(&f->rng, tu_seed_for(c->name));

   if (c->group == GROUP_READ_POLL)
      setenv("COHMAP_SIM_EXEC_US", POLL_EXEC_US, 1);
   f->dev = ws_device_create(c->method, c->p->slab_threshold);
   unsetenv("COHMAP_SIM_EXEC_US");
   if (!f->dev)
      return false;

   for (unsigned i = 0; i < BO_COUNT; i++) {
      uint32_t flags = main_flags;
      size_t size = f->size;
      if (i == BO_DST) {
         flags = coherent | COHMAP_BO_GPU_WRITE;
      } else if (i == BO_RESULT) {
         flags = coherent | COHMAP_BO_GPU_WRITE;
         size = 8 * RESULT_SLOTS;
      } else if (i == BO_INPUT) {
         flags = coherent;
      } else if (i != BO_MAIN && !c->p->neighbours) {
         continue;
      }
      int ret = cohmap_bo_create(f->dev, size, flags, &f->bos[i]);
      if (!api_ok(f, ret, "BO"))
         return false;
      f->map[i] = cohmap_bo_map(f->bos[i]);
      /* A new BO reads as zero on both sides. */
      f->model[i] = calloc(1, size);
      if (!f->map[i] || !f->model[i])
         return false;
   }

   if (cohmap_bo_method(f->bos[BO_MAIN]) != c->method) {
      fprintf(stderr, "%s: the BO is tracked with %s, not %s\n", c->name,
              cohmap_method_name(cohmap_bo_method(f->bos[BO_MAIN])),
              cohmap_method_name(c->method));
      return false;
   }
   if (c->p->neighbours) {
      size_t page = tu_page_size();
      uintptr_t p = (uintptr_t)f->map[BO_MAIN] / page;
      if ((uintptr_t)f->map[BO_NB0] / page != p &&
          (uintptr_t)f->map[BO_NB1] / page != p)
         printf("# %s: the slab BO shares no page with its neighbours\n",
                c->name);
   }
   return check_all(f, 0);
}

static bool
fx_fini(struct fx *f)
{
   bool ok = true;
   if (f->dev) {
      int ret = ws_teardown(f->dev, f->bos, BO_COUNT);
      ok = api_ok(f, ret, "teardown");
   }
   for (unsigned i = 0; i < BO_COUNT; i++)
      free(f->model[i]);
   return ok;
}

static void
test_draw_read(void **state)
{
   const struct dr_case *c = *state;
   bool fatal;

   if (!ws_method_usable(c->method, &fatal)) {
      if (fatal)
         fail();
      skip();
   }

   struct fx f;
   bool ok = fx_init(&f, c);
   if (ok) {
      switch (c->group) {
      case GROUP_DRAW:
      case GROUP_DRAW_GPU_WRITE:
         ok = run_draw(&f);
         break;
      case GROUP_READ_WAIT:
         ok = run_read(&f, SYNC_WAIT);
         break;
      case GROUP_READ_POLL:
         ok = run_read(&f, SYNC_POLL);
         if (ok && f.busy_polls == 0) {
            fprintf(stderr, "%s: cohmap_fence_poll() never returned -EBUSY "
                    "on a GPU taking %s us per submission\n", c->name,
                    POLL_EXEC_US);
            ok = false;
         }
         break;
      case GROUP_READ_IDLE:
         ok = run_read(&f, SYNC_IDLE);
         break;
      case GROUP_ROUND_TRIP:
         ok = run_round_trip(&f);
         break;
      case GROUP_COUNT:
         break;
      }
   }
   if (ok && c->group == GROUP_READ_POLL)
      printf("# %s: %" PRIu64 " polls returned -EBUSY\n", c->name,
             f.busy_polls);
   ok &= fx_fini(&f);
   assert_true(ok);
}

int
main(int argc, char **argv)
{
   bool slow = argc > 1 && strcmp(argv[1], "--slow") == 0;
   struct dr_case cases[GROUP_COUNT * TU_ARRAY_SIZE(placements) *
                        TU_METHODS_COUNT];
   struct CMUnitTest tests[TU_ARRAY_SIZE(cases)];
   size_t n = 0;

   tu_seed();
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));

   for (unsigned g = 0; g < GROUP_COUNT; g++) {
      for (size_t p = 0; p < TU_ARRAY_SIZE(placements); p++) {
         for (size_t m = 0; m < TU_METHODS_COUNT; m++) {
            struct dr_case *c = &cases[n];
            c->method = tu_methods[m];
            c->group = (enum group)g;
            c->p = &placements[p];
            /* The poll test's GPU is slow on purpose. */
            c->rounds = g == GROUP_READ_POLL ? 12 : 100;
            if (slow)
               c->rounds *= 10;
            snprintf(c->name, sizeof(c->name), "%s %s %s", group_names[g],
                     cohmap_method_name(c->method), c->p->name);
            tests[n] = (struct CMUnitTest){c->name, test_draw_read, NULL,
                                           NULL, c};
            n++;
         }
      }
   }
   return _cmocka_run_group_tests(slow ? "draw-read-slow" : "draw-read",
                                  tests, n, NULL, NULL);
}
