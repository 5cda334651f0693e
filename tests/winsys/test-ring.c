/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The persistent mapped ring of GL 4.4 streaming (ARB_buffer_storage,
 * GL_MAP_PERSISTENT_BIT | GL_MAP_COHERENT_BIT): one coherent BO mapped for
 * its whole life, written by the CPU a frame at a time into the next
 * section, wrapping around, with a few frames in flight.  Nothing but the
 * fence protects a section: the CPU waits on the fence of the frame that
 * last read a section before writing it again, and never flushes.
 *
 * Each frame the GPU checksums its section into a result BO and copies it
 * into a destination BO (both GPU_WRITE, coherent); once the frame's fence
 * is waited on, both must show exactly the bytes the CPU wrote.  Before
 * submitting, the CPU also writes poison into the frame's result slot and
 * into the ends of its destination section, right next to bytes that
 * frames still in flight are writing: the poison is uploaded by the
 * submission and must then be replaced by the GPU's result (so a stale
 * snapshot, or an upload that is not byte-exact, shows up).
 *
 * Every submission must upload only what changed: at most the frame's
 * bytes, rounded out to pages (plus one page each side, and fault's
 * documented widening after a sequential run) where the ring is tracked
 * page-granularly, exactly the written bytes where it is byte-exact --
 * except the full method on a ring the GPU cannot write, which uploads the
 * whole block by definition.
 *
 * Rings: 1 MiB dedicated and 16 KiB in a slab, each once read-only (page
 * uploads) and once GPU_WRITE (snapshot, byte-exact uploads).  1000
 * submissions per method and ring; --slow does 10 000.
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

#include <cmocka.h>

#include "ws-util.h"

#define FRAMES_IN_FLIGHT 3
/* docs/tracking.md: fault unprotects up to this many pages ahead of a
 * sequential run (the default fault_max_widen_pages) and reports them. */
#define FAULT_WIDEN_PAGES 16
/* docs/winsys.md: the default slab size, the block full uploads. */
#define SLAB_SIZE (2 * TU_MIB)
/* The GPU is a little slow, so that the next frame really is written
 * while the previous ones are in flight. */
#define EXEC_US "20"

struct ring_variant {
   const char *name;
   size_t size;
   size_t slab_threshold; /* 1: dedicated */
   bool gpu_write;
   size_t max_frame;
};

static const struct ring_variant variants[] = {
   {"dedicated 1 MiB", 1 * TU_MIB, 1, false, 64 * TU_KIB},
   {"dedicated 1 MiB gpu-write", 1 * TU_MIB, 1, true, 64 * TU_KIB},
   {"slab 16 KiB", 16 * TU_KIB, 0, false, 4 * TU_KIB},
   {"slab 16 KiB gpu-write", 16 * TU_KIB, 0, true, 4 * TU_KIB},
};

struct ring_case {
   enum cohmap_method method;
   const struct ring_variant *v;
   unsigned submissions;
   char name[96];
};

struct frame {
   unsigned index;
   size_t offset, size;
   unsigned slot;
   uint64_t sum;
   struct cohmap_fence *fence;
};

struct ring {
   const struct ring_case *c;
   size_t page;
   struct cohmap_device *dev;
   struct cohmap_bo *bos[3]; /* ring, dst, result */
   uint8_t *map, *dst, *result;
   uint8_t *shadow; /* what the CPU wrote into the ring */
   size_t size, head;
   struct frame fifo[FRAMES_IN_FLIGHT];
   unsigned first, count;

   uint64_t written;        /* bytes the CPU wrote into the ring */
   uint64_t ring_uploaded;  /* the ring BO's upload statistic */
   uint64_t dev_uploaded;   /* the device's */
   uint64_t overlapped;     /* frames still running when the next came */
};

static size_t
round_down(size_t x, size_t a)
{
   return x / a * a;
}

static size_t
round_up(size_t x, size_t a)
{
   return (x + a - 1) / a * a;
}

static bool
bytes_equal(const uint8_t *got, const uint8_t *expect, size_t n,
            size_t base, const char *what, const struct ring_case *c)
{
   if (memcmp(got, expect, n) == 0)
      return true;
   size_t i = 0;
   while (got[i] == expect[i])
      i++;
   size_t diff = 0;
   for (size_t j = i; j < n; j++)
      diff += got[j] != expect[j];
   fprintf(stderr, "%s: %s: first difference at offset %zu: expected "
           "%#04x, got %#04x (%zu of %zu bytes differ)\n", c->name, what,
           base + i, expect[i], got[i], diff, n);
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

static void
store_le64(uint8_t *p, uint64_t v)
{
   for (unsigned i = 0; i < 8; i++)
      p[i] = (uint8_t)(v >> (8 * i));
}

/* Mostly the sizes streaming apps upload -- a few uniforms, a draw's
 * vertices -- and now and then anything up to max. */
static size_t
frame_size(struct tu_rng *rng, size_t max)
{
   switch (tu_rng_below(rng, 4)) {
   case 0:
      return (size_t)tu_rng_range(rng, 1, 64);
   case 1:
      return (size_t)tu_rng_range(rng, 65, max / 16);
   case 2:
      return (size_t)tu_rng_range(rng, max / 16 + 1, max / 2);
   default:
      return (size_t)tu_rng_range(rng, 1, max);
   }
}

/*
 * The most a submission may upload for size bytes written at offset of
 * the ring.  clamp limits page-granular allowances to the ring's own pages
 * (for its per-BO statistic); unclamped, they may spill into the rest of
 * a slab (the device statistic).
 */
static uint64_t
upload_bound(const struct ring *r, size_t offset, size_t size, bool clamp)
{
   const struct ring_case *c = r->c;
   uintptr_t base = (uintptr_t)r->map;
   uintptr_t lo = round_down(base + offset, r->page);
   uintptr_t hi = round_up(base + offset + size, r->page);

   if (c->v->gpu_write)
      return size;

   switch (c->method) {
   case COHMAP_METHOD_COMPARE:
      /* The aligned 64-byte chunks holding the bytes (a BO in a slab
       * starts on a slot boundary, a multiple of 64 bytes). */
      lo = round_down(base + offset, 64);
      hi = round_up(base + offset + size, 64);
      break;
   case COHMAP_METHOD_SCAN:
      lo -= r->page;
      hi += r->page;
      break;
   case COHMAP_METHOD_FAULT:
      lo -= r->page;
      hi += FAULT_WIDEN_PAGES * r->page;
      break;
   default: /* full: the whole block, by definition */
      if (clamp)
         return round_up(r->size, r->page);
      return c->v->slab_threshold == 1 ? round_up(r->size, r->page)
                                       : SLAB_SIZE;
   }
   if (clamp) {
      uintptr_t first = round_down(base, r->page);
      uintptr_t end = round_up(base + r->size, r->page);
      lo = lo < first ? first : lo;
      hi = hi > end ? end : hi;
   }
   return hi - lo;
}

static bool
overlaps_inflight(const struct ring *r, size_t offset, size_t size)
{
   for (unsigned i = 0; i < r->count; i++) {
      const struct frame *f = &r->fifo[(r->first + i) % FRAMES_IN_FLIGHT];
      if (offset < f->offset + f->size && f->offset < offset + size)
         return true;
   }
   return false;
}

/* Waits for the oldest frame and checks everything it produced. */
static bool
frame_retire(struct ring *r)
{
   const struct ring_case *c = r->c;
   struct frame *f = &r->fifo[r->first];
   char what[96];
   bool ok = true;

   int ret = cohmap_fence_wait(f->fence, UINT64_MAX);
   cohmap_fence_destroy(f->fence);
   f->fence = NULL;
   r->first = (r->first + 1) % FRAMES_IN_FLIGHT;
   r->count--;
   if (ret) {
      fprintf(stderr, "%s: frame %u: fence wait: %d (%s)\n", c->name,
              f->index, ret, cohmap_error_message());
      return false;
   }

   uint64_t got = load_le64(r->result + 8 * f->slot);
   if (got != f->sum) {
      fprintf(stderr, "%s: frame %u (%zu bytes at %zu): the GPU's checksum "
              "is %#018" PRIx64 ", the CPU wrote data with checksum "
              "%#018" PRIx64 "%s\n", c->name, f->index, f->size, f->offset,
              got, f->sum,
              got == ~f->sum ? " (that is the poison the CPU wrote before "
                               "submitting: the GPU's result was not "
                               "merged)" : "");
      ok = false;
   }
   snprintf(what, sizeof(what), "frame %u: destination after the copy",
            f->index);
   ok &= bytes_equal(r->dst + f->offset, r->shadow + f->offset, f->size,
                     f->offset, what, c);
   snprintf(what, sizeof(what), "frame %u: the ring's own mapping",
            f->index);
   ok &= bytes_equal(r->map + f->offset, r->shadow + f->offset, f->size,
                     f->offset, what, c);
   return ok;
}

static bool
get_stats(const struct ring *r, struct cohmap_device_stats *d,
          struct cohmap_bo_stats *b)
{
   int ret = cohmap_device_get_stats(r->dev, d);
   if (!ret)
      ret = cohmap_bo_get_stats(r->bos[0], b);
   if (ret)
      fprintf(stderr, "%s: stats: %d (%s)\n", r->c->name, ret,
              cohmap_error_message());
   return ret == 0;
}

static bool
frame_submit(struct ring *r, struct tu_rng *rng, unsigned index)
{
   static const size_t aligns[] = {1, 4, 64, 256};
   const struct ring_case *c = r->c;
   size_t size = frame_size(rng, c->v->max_frame);
   size_t offset = round_up(r->head, aligns[tu_rng_below(rng, 4)]);
   if (offset + size > r->size)
      offset = 0; /* wrap: the data must be contiguous */

   /* The sections this one overlaps were read by frames that may still
    * run: wait for them (oldest first; fences signal in order), and for
    * a free slot. */
   while (r->count == FRAMES_IN_FLIGHT ||
          overlaps_inflight(r, offset, size)) {
      if (!frame_retire(r))
         return false;
   }

   struct cohmap_device_stats d0, d1;
   struct cohmap_bo_stats b0, b1;
   if (!get_stats(r, &d0, &b0))
      return false;

   tu_rng_fill(rng, r->shadow + offset, size);
   memcpy(r->map + offset, r->shadow + offset, size);
   r->written += size;

   struct frame *f = &r->fifo[(r->first + r->count) % FRAMES_IN_FLIGHT];
   *f = (struct frame){
      .index = index,
      .offset = offset,
      .size = size,
      /* The frames in flight have the previous slots. */
      .slot = index % FRAMES_IN_FLIGHT,
      .sum = cohmap_checksum(r->shadow + offset, size),
   };

   /* Poison where this frame's GPU results go, next to bytes frames in
    * flight are writing: uploaded now, replaced by the GPU. */
   store_le64(r->result + 8 * f->slot, ~f->sum);
   size_t ends = size < 8 ? size : 8;
   uint64_t poison_bytes = 8 + 2 * ends;
   for (size_t i = 0; i < ends; i++) {
      r->dst[offset + i] = (uint8_t)~r->shadow[offset + i];
      r->dst[offset + size - 1 - i] =
         (uint8_t)~r->shadow[offset + size - 1 - i];
   }

   /* Is the previous frame still running?  (A poll that finds it done
    * retires it, as a glClientWaitSync with no timeout would.) */
   if (r->count) {
      struct frame *prev =
         &r->fifo[(r->first + r->count - 1) % FRAMES_IN_FLIGHT];
      int ret = cohmap_fence_poll(prev->fence);
      if (ret == -EBUSY) {
         r->overlapped++;
      } else if (ret) {
         fprintf(stderr, "%s: frame %u: poll: %d (%s)\n", c->name,
                 prev->index, ret, cohmap_error_message());
         return false;
      }
   }

   struct cohmap_submit *s;
   int ret = cohmap_submit_begin(r->dev, &s);
   if (ret)
      goto fail;
   ret = cohmap_submit_add_bo(s, r->bos[0], COHMAP_ACCESS_READ);
   if (!ret)
      ret = cohmap_submit_add_bo(s, r->bos[1], COHMAP_ACCESS_WRITE);
   if (!ret)
      ret = cohmap_submit_add_bo(s, r->bos[2], COHMAP_ACCESS_WRITE);
   if (!ret)
      ret = cohmap_cmd_checksum(s, r->bos[2], 8 * f->slot, r->bos[0], offset,
                                size);
   if (!ret)
      ret = cohmap_cmd_copy(s, r->bos[1], offset, r->bos[0], offset, size);
   if (ret) {
      cohmap_submit_abort(s);
      goto fail;
   }
   ret = cohmap_submit_end(s, &f->fence);
   if (ret)
      goto fail;
   r->count++;
   r->head = offset + size;

   if (!get_stats(r, &d1, &b1))
      return false;
   uint64_t ring_up = b1.bytes_uploaded - b0.bytes_uploaded;
   uint64_t dev_up = d1.bytes_uploaded - d0.bytes_uploaded;
   uint64_t ring_max = upload_bound(r, offset, size, true);
   uint64_t dev_max = upload_bound(r, offset, size, false) + poison_bytes;
   r->ring_uploaded += ring_up;
   r->dev_uploaded += dev_up;
   if (ring_up > ring_max || dev_up > dev_max) {
      fprintf(stderr, "%s: frame %u wrote %zu bytes at %zu; its submission "
              "uploaded %" PRIu64 " bytes of the ring (at most %" PRIu64
              " allowed) and %" PRIu64 " in all (at most %" PRIu64 ", "
              "with %" PRIu64 " bytes of poison): more than what changed\n",
              c->name, index, size, offset, ring_up, ring_max, dev_up,
              dev_max, poison_bytes);
      return false;
   }
   return true;

fail:
   fprintf(stderr, "%s: frame %u: submission: %d (%s)\n", c->name, index,
           ret, cohmap_error_message());
   return false;
}

static bool
ring_init(struct ring *r, const struct ring_case *c)
{
   const struct ring_variant *v = c->v;
   uint32_t coherent = COHMAP_BO_PERSISTENT | COHMAP_BO_COHERENT;

   memset(r, 0, sizeof(*r));
   r->c = c;
   r->page = tu_page_size();
   r->size = v->size;
   r->dev = ws_device_create(c->method, v->slab_threshold);
   if (!r->dev)
      return false;

   int ret = cohmap_bo_create(r->dev, v->size,
                              coherent | (v->gpu_write ? COHMAP_BO_GPU_WRITE
                                                       : 0),
                              &r->bos[0]);
   if (!ret)
      ret = cohmap_bo_create(r->dev, v->size, coherent | COHMAP_BO_GPU_WRITE,
                             &r->bos[1]);
   if (!ret)
      ret = cohmap_bo_create(r->dev, 8 * FRAMES_IN_FLIGHT,
                             coherent | COHMAP_BO_GPU_WRITE, &r->bos[2]);
   if (ret) {
      fprintf(stderr, "%s: BO: %d (%s)\n", c->name, ret,
              cohmap_error_message());
      return false;
   }
   if (cohmap_bo_method(r->bos[0]) != c->method) {
      fprintf(stderr, "%s: the ring is tracked with %s, not %s\n", c->name,
              cohmap_method_name(cohmap_bo_method(r->bos[0])),
              cohmap_method_name(c->method));
      return false;
   }
   r->map = cohmap_bo_map(r->bos[0]);
   r->dst = cohmap_bo_map(r->bos[1]);
   r->result = cohmap_bo_map(r->bos[2]);
   r->shadow = calloc(1, v->size);
   return r->map && r->dst && r->result && r->shadow;
}

static bool
ring_fini(struct ring *r)
{
   bool ok = true;

   /* After a failure frames may still be in flight: drop them. */
   for (unsigned i = 0; i < r->count; i++) {
      struct frame *f = &r->fifo[(r->first + i) % FRAMES_IN_FLIGHT];
      cohmap_fence_destroy(f->fence);
   }
   if (r->dev) {
      int ret = ws_teardown(r->dev, r->bos, TU_ARRAY_SIZE(r->bos));
      if (ret) {
         fprintf(stderr, "%s: teardown: %d (%s)\n", r->c->name, ret,
                 cohmap_error_message());
         ok = false;
      }
   }
   free(r->shadow);
   return ok;
}

static void
test_ring(void **state)
{
   const struct ring_case *c = *state;
   bool fatal;

   if (!ws_method_usable(c->method, &fatal)) {
      if (fatal)
         fail();
      skip();
   }

   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(c->name));

   struct ring r;
   bool ok = ring_init(&r, c);
   double t0 = tu_now();
   for (unsigned i = 0; ok && i < c->submissions; i++)
      ok = frame_submit(&r, &rng, i);
   while (ok && r.count)
      ok = frame_retire(&r);
   double secs = tu_now() - t0;

   if (ok) {
      printf("# %s: %u submissions in %.2f s, %.0f submissions/s; per "
             "submission %.0f bytes written, %.0f uploaded for the ring, "
             "%.0f in all; %" PRIu64 " frames still running when the next "
             "was written\n", c->name, c->submissions, secs,
             c->submissions / secs, (double)r.written / c->submissions,
             (double)r.ring_uploaded / c->submissions,
             (double)r.dev_uploaded / c->submissions, r.overlapped);
      /* Streaming must cost what was streamed, not the ring: full on a
       * ring the GPU cannot write is the one method that uploads the
       * block by definition. */
      bool whole = c->method == COHMAP_METHOD_FULL && !c->v->gpu_write;
      uint64_t streamed = (uint64_t)c->v->size * c->submissions;
      if (!whole && c->v->size >= TU_MIB && r.ring_uploaded > streamed / 8) {
         fprintf(stderr, "%s: %" PRIu64 " bytes uploaded for the ring in "
                 "%u submissions: not far below the ring's size times the "
                 "submissions (%" PRIu64 ")\n", c->name, r.ring_uploaded,
                 c->submissions, streamed);
         ok = false;
      }
      if (r.ring_uploaded < r.written / 2) {
         /* Random bytes equal the old ones one time in 256: half is a
          * generous floor, far above what a skipped upload gives. */
         fprintf(stderr, "%s: %" PRIu64 " bytes written but only %" PRIu64
                 " uploaded\n", c->name, r.written, r.ring_uploaded);
         ok = false;
      }
   }
   ok &= ring_fini(&r);
   assert_true(ok);
}

int
main(int argc, char **argv)
{
   bool slow = argc > 1 && strcmp(argv[1], "--slow") == 0;
   unsigned submissions = slow ? 10000 : 1000;
   struct ring_case cases[TU_METHODS_COUNT * TU_ARRAY_SIZE(variants)];
   struct CMUnitTest tests[TU_ARRAY_SIZE(cases)];
   size_t n = 0;

   /* Read by each sim device when it is created. */
   setenv("COHMAP_SIM_EXEC_US", EXEC_US, 1);
   tu_seed();
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));

   for (size_t v = 0; v < TU_ARRAY_SIZE(variants); v++) {
      for (size_t m = 0; m < TU_METHODS_COUNT; m++) {
         struct ring_case *c = &cases[n];
         c->method = tu_methods[m];
         c->v = &variants[v];
         c->submissions = submissions;
         snprintf(c->name, sizeof(c->name), "ring %s %s",
                  cohmap_method_name(c->method), c->v->name);
         tests[n] = (struct CMUnitTest){c->name, test_ring, NULL, NULL, c};
         n++;
      }
   }
   return _cmocka_run_group_tests(slow ? "ring-slow" : "ring", tests, n,
                                  NULL, NULL);
}
