/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Explicit synchronization: cohmap_bo_flush(), cohmap_bo_flush_box() and
 * cohmap_bo_invalidate().
 *
 * Non-coherent BOs are synchronized only by these calls, so what reaches
 * the device is exactly what was flushed.  Every step here fills the whole
 * CPU mapping with fresh garbage, flushes one range or box, and then reads
 * the device's copy back (a GPU copy into a second non-coherent BO, then an
 * invalidate of that BO) and compares it with a model of the device: the
 * flushed bytes must have changed to the CPU's values and *no other byte*
 * may have.  bytes_uploaded (device and BO statistics) must grow by exactly
 * the box's byte count: a flush that uploads whole rows or pages would
 * still produce the right picture when the garbage happens to match, the
 * count catches it.
 *
 * The readback BO also proves the device is really non-coherent: its
 * mapping holds a marker while the GPU writes it, and must still hold the
 * marker after the fence until cohmap_bo_invalidate() is called.
 *
 * Bad ranges and boxes (pitches that overlap, boxes past the end, sizes
 * whose arithmetic overflows) fail with -EINVAL and upload nothing.
 *
 * Coherent BOs accept the same calls (they return 0 and change nothing the
 * tracking would not), under every method, slab and dedicated: in
 * particular a flush must not upload stale CPU bytes over GPU writes that
 * were not merged yet, and an invalidate of a coherent BO merges instead
 * of overwriting CPU writes.
 *
 * --slow runs many more random boxes.
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
#include <time.h>

#include <cmocka.h>

#include "ws-util.h"

static bool slow;

struct variant {
   enum cohmap_method method;
   char name[32];
};

/* The calling test's variant, for messages. */
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

/* Compares size bytes, printing the first difference and how many bytes
 * differ. */
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

static struct cohmap_device *
device_for(const struct variant *v, size_t slab_threshold)
{
   bool fatal;
   cur_name = v->name;
   if (!ws_method_usable(v->method, &fatal)) {
      if (fatal)
         fail();
      skip();
   }
   struct cohmap_device *dev = ws_device_create(v->method, slab_threshold);
   assert_non_null(dev);
   return dev;
}

static struct cohmap_bo *
bo_new(struct cohmap_device *dev, size_t size, uint32_t flags)
{
   struct cohmap_bo *bo = NULL;
   CHECK_OK(cohmap_bo_create(dev, size, flags, &bo));
   assert_non_null(bo);
   assert_non_null(cohmap_bo_map(bo));
   return bo;
}

static struct cohmap_device_stats
dev_stats(struct cohmap_device *dev)
{
   struct cohmap_device_stats st;
   CHECK_OK(cohmap_device_get_stats(dev, &st));
   return st;
}

static struct cohmap_bo_stats
bo_stats(struct cohmap_bo *bo)
{
   struct cohmap_bo_stats st;
   CHECK_OK(cohmap_bo_get_stats(bo, &st));
   return st;
}

#define MARKER 0xa5

/*
 * The device's copy of src[0, size) lands in out: a GPU copy into rb (a
 * non-coherent GPU_WRITE BO of at least size bytes), then an invalidate of
 * rb.  rb's mapping is set to MARKER first and must still hold it after
 * the fence: the sim is not coherent, and nothing but the invalidate may
 * bring device bytes into a non-coherent mapping.  The copy itself must
 * upload nothing when src is not coherent.
 */
static void
read_device(struct cohmap_device *dev, struct cohmap_bo *src,
            struct cohmap_bo *rb, size_t size, uint8_t *out)
{
   uint8_t *rbmap = cohmap_bo_map(rb);
   bool src_coherent = cohmap_bo_flags(src) & COHMAP_BO_COHERENT;
   memset(rbmap, MARKER, size);

   struct cohmap_device_stats before = dev_stats(dev);
   struct cohmap_bo_stats src_before = bo_stats(src);
   struct cohmap_submit *s = NULL;
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(cohmap_submit_add_bo(s, src, COHMAP_ACCESS_READ));
   CHECK_OK(cohmap_submit_add_bo(s, rb, COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_cmd_copy(s, rb, 0, src, 0, size));
   CHECK_OK(ws_submit_wait(s));

   struct cohmap_device_stats after = dev_stats(dev);
   if (!src_coherent)
      CHECK_U64(after.bytes_uploaded - before.bytes_uploaded, 0,
                "bytes uploaded by a submission of non-coherent BOs");
   CHECK_U64(after.submissions - before.submissions, 1, "submissions");
   CHECK_U64(bo_stats(src).submissions - src_before.submissions, 1,
             "BO submissions");

   /* Not coherent: the GPU's copy is not in the mapping yet. */
   for (size_t i = 0; i < size; i++) {
      if (rbmap[i] != MARKER) {
         fprintf(stderr,
                 "%s: the mapping of a non-coherent BO changed "
                 "without cohmap_bo_invalidate() at offset %zu (0x%02x)\n",
                 cur_name, i, rbmap[i]);
         fail();
      }
   }
   CHECK_OK(cohmap_bo_invalidate(rb, 0, size));
   memcpy(out, rbmap, size);
}

/* The device's copy of bo must equal model. */
static void
expect_device(struct cohmap_device *dev, struct cohmap_bo *bo,
              struct cohmap_bo *rb, const uint8_t *model, size_t size,
              uint8_t *scratch, const char *what)
{
   read_device(dev, bo, rb, size, scratch);
   if (!same_bytes(scratch, model, size, what))
      fail();
}

/* Applies a box to the model: its bytes get the CPU's values.  Returns
 * the number of bytes in the box. */
static size_t
model_box(uint8_t *model, const uint8_t *cpu, const struct cohmap_box *b)
{
   size_t h = b->height ? b->height : 1, d = b->depth ? b->depth : 1;
   for (size_t z = 0; z < d; z++) {
      for (size_t y = 0; y < h; y++) {
         size_t off = b->offset + z * b->slice_pitch + y * b->row_pitch;
         memcpy(model + off, cpu + off, b->width);
      }
   }
   return b->width * h * d;
}

/* Flushes box b of bo and checks the upload count and the device. */
static void
flush_box_expect(struct cohmap_device *dev, struct cohmap_bo *bo,
                 struct cohmap_bo *rb, uint8_t *model, size_t size,
                 uint8_t *scratch, const struct cohmap_box *b,
                 const char *what)
{
   const uint8_t *cpu = cohmap_bo_map(bo);
   struct cohmap_device_stats before = dev_stats(dev);
   struct cohmap_bo_stats bo_before = bo_stats(bo);
   CHECK_OK(cohmap_bo_flush_box(bo, b));
   size_t bytes = model_box(model, cpu, b);
   char msg[160];
   snprintf(msg, sizeof(msg), "%s: bytes uploaded by the flush", what);
   CHECK_U64(dev_stats(dev).bytes_uploaded - before.bytes_uploaded, bytes,
             msg);
   CHECK_U64(bo_stats(bo).bytes_uploaded - bo_before.bytes_uploaded, bytes,
             msg);
   expect_device(dev, bo, rb, model, size, scratch, what);
}

static void
flush_range_expect(struct cohmap_device *dev, struct cohmap_bo *bo,
                   struct cohmap_bo *rb, uint8_t *model, size_t size,
                   uint8_t *scratch, size_t off, size_t len, const char *what)
{
   const uint8_t *cpu = cohmap_bo_map(bo);
   struct cohmap_device_stats before = dev_stats(dev);
   struct cohmap_bo_stats bo_before = bo_stats(bo);
   CHECK_OK(cohmap_bo_flush(bo, off, len));
   memcpy(model + off, cpu + off, len);
   char msg[160];
   snprintf(msg, sizeof(msg), "%s: bytes uploaded by the flush", what);
   CHECK_U64(dev_stats(dev).bytes_uploaded - before.bytes_uploaded, len, msg);
   CHECK_U64(bo_stats(bo).bytes_uploaded - bo_before.bytes_uploaded, len,
             msg);
   expect_device(dev, bo, rb, model, size, scratch, what);
}

/* --- a 1600x1200 RGBA8 image ------------------------------------------- */

#define IMG_W     1600
#define IMG_H     1200
#define IMG_BPP   4
#define IMG_PITCH (IMG_W * IMG_BPP)
#define IMG_SIZE  ((size_t)IMG_PITCH * IMG_H)

/* A box of w x h pixels at (x, y) of the image. */
static struct cohmap_box
img_box(size_t x, size_t y, size_t w, size_t h)
{
   return (struct cohmap_box){
      .offset = y * IMG_PITCH + x * IMG_BPP,
      .row_pitch = IMG_PITCH,
      .width = w * IMG_BPP,
      .height = h,
      .depth = 1,
   };
}

static void
test_image(void **state)
{
   const struct variant *v = *state;
   struct cohmap_device *dev = device_for(v, 0);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));

   struct cohmap_bo *img = bo_new(dev, IMG_SIZE, COHMAP_BO_GPU_WRITE);
   struct cohmap_bo *rb = bo_new(dev, IMG_SIZE, COHMAP_BO_GPU_WRITE);
   assert_int_equal(cohmap_bo_method(img), COHMAP_METHOD_AUTO);
   uint8_t *cpu = cohmap_bo_map(img);
   uint8_t *model = calloc(1, IMG_SIZE);
   uint8_t *scratch = malloc(IMG_SIZE);
   assert_non_null(model);
   assert_non_null(scratch);

   /* A new BO is zero on the device too. */
   expect_device(dev, img, rb, model, IMG_SIZE, scratch, "new BO");

   /* A base picture, flushed whole. */
   tu_rng_fill(&rng, cpu, IMG_SIZE);
   flush_range_expect(dev, img, rb, model, IMG_SIZE, scratch, 0, IMG_SIZE,
                      "whole image");

   /* Each step: garbage over the whole mapping, then one box. */
   const struct {
      struct cohmap_box box;
      const char *what;
   } boxes[] = {
      {img_box(123, 456, 10, 10), "10x10 pixels"},
      {img_box(0, 0, 10, 10), "10x10 pixels at the origin"},
      {img_box(IMG_W - 10, 7, 10, 10), "10x10 pixels at the right edge"},
      {img_box(IMG_W - 10, IMG_H - 10, 10, 10),
       "10x10 pixels at the bottom right corner (the BO's last byte)"},
      {img_box(0, 600, IMG_W, 3), "three whole rows"},
      {img_box(17, 33, 1, IMG_H - 33), "one pixel wide column"},
      {img_box(800, 1, 100, 0), "height 0 counts as one row"},
      {{.offset = 5 * IMG_PITCH + 13,
        .row_pitch = IMG_PITCH,
        .width = 7,
        .height = 9,
        .depth = 0,
        .slice_pitch = 0},
       "unaligned bytes, depth 0 counts as one slice"},
      {{.offset = 100 * IMG_PITCH + 400,
        .row_pitch = 2 * IMG_PITCH,
        .width = 64,
        .height = 20,
        .depth = 1},
       "every other row"},
      {{.offset = 3, .row_pitch = 0, .width = 5, .height = 1, .depth = 1},
       "one row needs no pitch"},
   };
   for (size_t i = 0; i < TU_ARRAY_SIZE(boxes); i++) {
      tu_rng_fill(&rng, cpu, IMG_SIZE);
      flush_box_expect(dev, img, rb, model, IMG_SIZE, scratch, &boxes[i].box,
                       boxes[i].what);
   }

   /* The 10 x 10 box uploads 10 rows of 40 bytes, nothing else. */
   struct cohmap_device_stats before = dev_stats(dev);
   struct cohmap_box b = img_box(321, 654, 10, 10);
   tu_rng_fill(&rng, cpu, IMG_SIZE);
   CHECK_OK(cohmap_bo_flush_box(img, &b));
   CHECK_U64(dev_stats(dev).bytes_uploaded - before.bytes_uploaded, 10 * 40,
             "10x10 RGBA8 box");
   model_box(model, cpu, &b);
   expect_device(dev, img, rb, model, IMG_SIZE, scratch, "10x10 again");

   /* 1D ranges. */
   const struct {
      size_t off, len;
      const char *what;
   } ranges[] = {
      {7, 1, "one byte"},
      {IMG_SIZE - 1, 1, "the last byte"},
      {0, 1, "the first byte"},
      {IMG_PITCH - 1, 2, "across a row"},
      {4096 - 3, 10, "across a page"},
      {12345, 3 * 4096 + 17, "several pages, unaligned"},
      {IMG_SIZE - 100000, 100000, "up to the end"},
   };
   for (size_t i = 0; i < TU_ARRAY_SIZE(ranges); i++) {
      tu_rng_fill(&rng, cpu, IMG_SIZE);
      flush_range_expect(dev, img, rb, model, IMG_SIZE, scratch,
                         ranges[i].off, ranges[i].len, ranges[i].what);
   }

   /* Garbage never flushed must never appear: a submission, a wait and
    * flush_all do not upload non-coherent BOs. */
   tu_rng_fill(&rng, cpu, IMG_SIZE);
   before = dev_stats(dev);
   CHECK_OK(cohmap_device_flush_all(dev));
   CHECK_OK(cohmap_device_wait_idle(dev));
   CHECK_U64(dev_stats(dev).bytes_uploaded - before.bytes_uploaded, 0,
             "flush_all with only non-coherent BOs");
   expect_device(dev, img, rb, model, IMG_SIZE, scratch, "unflushed garbage");

   free(model);
   free(scratch);
   struct cohmap_bo *bos[] = {img, rb};
   CHECK_OK(ws_teardown(dev, bos, TU_ARRAY_SIZE(bos)));
}

/* --- a 3D texture ------------------------------------------------------ */

#define VOL_W           64 /* texels of 4 bytes */
#define VOL_H           48
#define VOL_D           16
#define VOL_ROW_PITCH   320                           /* 256 + padding */
#define VOL_SLICE_PITCH (VOL_H * VOL_ROW_PITCH + 448) /* + padding */
#define VOL_SIZE        ((size_t)VOL_D * VOL_SLICE_PITCH)

static struct cohmap_box
vol_box(size_t x, size_t y, size_t z, size_t w, size_t h, size_t d)
{
   return (struct cohmap_box){
      .offset = z * VOL_SLICE_PITCH + y * VOL_ROW_PITCH + x * 4,
      .row_pitch = VOL_ROW_PITCH,
      .slice_pitch = VOL_SLICE_PITCH,
      .width = w * 4,
      .height = h,
      .depth = d,
   };
}

static void
test_volume(void **state)
{
   const struct variant *v = *state;
   struct cohmap_device *dev = device_for(v, 0);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));

   struct cohmap_bo *vol = bo_new(dev, VOL_SIZE, COHMAP_BO_GPU_WRITE);
   struct cohmap_bo *rb = bo_new(dev, VOL_SIZE, COHMAP_BO_GPU_WRITE);
   uint8_t *cpu = cohmap_bo_map(vol);
   uint8_t *model = calloc(1, VOL_SIZE);
   uint8_t *scratch = malloc(VOL_SIZE);
   assert_non_null(model);
   assert_non_null(scratch);

   tu_rng_fill(&rng, cpu, VOL_SIZE);
   flush_range_expect(dev, vol, rb, model, VOL_SIZE, scratch, 0, VOL_SIZE,
                      "whole volume");

   struct cohmap_box tight = vol_box(1, 2, 3, 5, 4, 6);
   /* The smallest slice pitch that does not overlap: the last row of a
    * slice ends where the next slice starts. */
   tight.slice_pitch = 3 * VOL_ROW_PITCH + 20;
   struct cohmap_box every_other = vol_box(10, 0, 1, 3, VOL_H, 7);
   every_other.slice_pitch = 2 * VOL_SLICE_PITCH;

   const struct {
      struct cohmap_box box;
      size_t bytes;
      const char *what;
   } boxes[] = {
      {vol_box(5, 3, 2, 12, 10, 5), 48 * 10 * 5, "12x10x5 texels"},
      {vol_box(0, 0, 0, VOL_W, VOL_H, VOL_D), 256 * VOL_H * VOL_D,
       "every texel, not the padding"},
      {vol_box(VOL_W - 1, VOL_H - 1, VOL_D - 1, 1, 1, 1), 4,
       "the last texel"},
      {vol_box(0, 0, 4, VOL_W, VOL_H, 1), 256 * VOL_H, "one slice"},
      {tight, 20 * 4 * 6, "tight slice pitch"},
      {every_other, 12 * VOL_H * 7, "every other slice"},
      {vol_box(7, 9, 0, 2, 0, VOL_D), 8 * VOL_D,
       "height 0 counts as one row"},
   };
   for (size_t i = 0; i < TU_ARRAY_SIZE(boxes); i++) {
      struct cohmap_device_stats before = dev_stats(dev);
      tu_rng_fill(&rng, cpu, VOL_SIZE);
      flush_box_expect(dev, vol, rb, model, VOL_SIZE, scratch, &boxes[i].box,
                       boxes[i].what);
      /* The expected count is written out, not derived from the box. */
      CHECK_U64(dev_stats(dev).bytes_uploaded - before.bytes_uploaded,
                boxes[i].bytes, boxes[i].what);
   }

   /* The padding after the last slice's rows up to the BO's end: a box
    * may end exactly at the end of the BO. */
   size_t tail = VOL_SLICE_PITCH - VOL_H * VOL_ROW_PITCH;
   struct cohmap_box end = {
      .offset = VOL_SIZE - tail - (VOL_D - 1) * VOL_SLICE_PITCH,
      .slice_pitch = VOL_SLICE_PITCH,
      .width = tail,
      .depth = VOL_D,
   };
   tu_rng_fill(&rng, cpu, VOL_SIZE);
   flush_box_expect(dev, vol, rb, model, VOL_SIZE, scratch, &end,
                    "slice padding, ending at the BO's end");

   free(model);
   free(scratch);
   struct cohmap_bo *bos[] = {vol, rb};
   CHECK_OK(ws_teardown(dev, bos, TU_ARRAY_SIZE(bos)));
}

/* --- random boxes ------------------------------------------------------ */

static void
test_random(void **state)
{
   const struct variant *v = *state;
   struct cohmap_device *dev = device_for(v, 0);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));

   /* Not a whole number of pages: the end of the BO is not the end of a
    * page. */
   const size_t size = 96 * TU_KIB + 40;
   struct cohmap_bo *bo = bo_new(dev, size, 0);
   struct cohmap_bo *rb = bo_new(dev, size, COHMAP_BO_GPU_WRITE);
   uint8_t *cpu = cohmap_bo_map(bo);
   uint8_t *model = calloc(1, size);
   uint8_t *scratch = malloc(size);
   assert_non_null(model);
   assert_non_null(scratch);

   unsigned rounds = slow ? 3000 : 150;
   for (unsigned i = 0; i < rounds; i++) {
      tu_rng_fill(&rng, cpu, size);
      /* A few boxes per round, checked together. */
      unsigned nboxes = (unsigned)tu_rng_range(&rng, 1, 3);
      size_t bytes = 0;
      struct cohmap_device_stats before = dev_stats(dev);
      for (unsigned n = 0; n < nboxes; n++) {
         struct cohmap_box b;
         b.width = (size_t)tu_rng_range(&rng, 1, 600);
         b.height = (size_t)tu_rng_range(&rng, 0, 40);
         b.depth = (size_t)tu_rng_range(&rng, 0, 6);
         size_t h = b.height ? b.height : 1, d = b.depth ? b.depth : 1;
         b.row_pitch = h > 1 ? b.width + (size_t)tu_rng_below(&rng, 700)
                             : (size_t)tu_rng_below(&rng, 3);
         size_t slice_min = (h - 1) * b.row_pitch + b.width;
         b.slice_pitch = d > 1 ? slice_min + (size_t)tu_rng_below(&rng, 2000)
                               : (size_t)tu_rng_below(&rng, 3);
         size_t extent = (d - 1) * b.slice_pitch + slice_min;
         if (extent > size) {
            n--;
            continue;
         }
         b.offset = (size_t)tu_rng_below(&rng, size - extent + 1);
         CHECK_OK(cohmap_bo_flush_box(bo, &b));
         bytes += model_box(model, cpu, &b);
      }
      char what[64];
      snprintf(what, sizeof(what), "round %u", i);
      CHECK_U64(dev_stats(dev).bytes_uploaded - before.bytes_uploaded, bytes,
                what);
      expect_device(dev, bo, rb, model, size, scratch, what);
   }

   free(model);
   free(scratch);
   struct cohmap_bo *bos[] = {bo, rb};
   CHECK_OK(ws_teardown(dev, bos, TU_ARRAY_SIZE(bos)));
}

/* --- bad boxes and ranges ---------------------------------------------- */

struct bad_box {
   struct cohmap_box box;
   const char *what;
};

/* Boxes that must be refused on a BO of size bytes. */
static size_t
bad_boxes(size_t size, struct bad_box *out)
{
   size_t n = 0;
#define BAD(...) out[n++] = (struct bad_box){__VA_ARGS__}
   BAD({.offset = 0, .row_pitch = 39, .width = 40, .height = 2},
       "row pitch smaller than the width");
   BAD({.offset = 0,
        .row_pitch = 100,
        .slice_pitch = 9 * 100 + 40 - 1,
        .width = 40,
        .height = 10,
        .depth = 2},
       "slice pitch smaller than a slice's rows");
   BAD({.offset = 0,
        .row_pitch = 100,
        .slice_pitch = 0,
        .width = 40,
        .height = 1,
        .depth = 2},
       "slice pitch 0 with two slices");
   BAD({.offset = size - 39, .width = 40}, "one row, one byte past the end");
   BAD({.offset = size, .width = 1}, "starts at the end");
   BAD({.offset = size + 1, .width = 1}, "starts past the end");
   BAD({.offset = size - 40, .row_pitch = 40, .width = 40, .height = 2},
       "the second row past the end");
   BAD({.offset = 0,
        .row_pitch = size / 4,
        .slice_pitch = size / 2,
        .width = 8,
        .height = 2,
        .depth = 3},
       "the third slice past the end");
   BAD({.offset = 0, .width = size + 1}, "wider than the BO");
   BAD({.offset = SIZE_MAX, .width = 1}, "offset SIZE_MAX");
   BAD({.offset = SIZE_MAX - 10, .width = 20}, "offset + width wraps around");
   BAD({.offset = 8, .width = SIZE_MAX}, "width SIZE_MAX");
   BAD({.offset = 0, .row_pitch = 1, .width = 1, .height = SIZE_MAX},
       "height SIZE_MAX");
   BAD({.offset = 0, .row_pitch = SIZE_MAX, .width = 1, .height = 2},
       "row pitch SIZE_MAX");
   BAD({.offset = 0, .row_pitch = SIZE_MAX / 2 + 1, .width = 1, .height = 3},
       "rows overflow (pitch x rows wraps to a small number)");
   BAD({.offset = 0,
        .row_pitch = 1,
        .slice_pitch = 1,
        .width = 1,
        .height = 1,
        .depth = SIZE_MAX},
       "depth SIZE_MAX");
   BAD({.offset = 0,
        .row_pitch = 1,
        .slice_pitch = SIZE_MAX,
        .width = 1,
        .height = 1,
        .depth = 2},
       "slice pitch SIZE_MAX");
   BAD({.offset = 0,
        .row_pitch = 1,
        .slice_pitch = (SIZE_MAX >> 2) + 1,
        .width = 1,
        .height = 1,
        .depth = 5},
       "slices overflow (pitch x slices wraps to 0)");
   BAD(
      {.offset = 4096, .row_pitch = SIZE_MAX - 4095, .width = 1, .height = 2},
      "offset + row pitch wraps to 0");
#undef BAD
   return n;
}

static void
check_bad_input(struct cohmap_device *dev, struct cohmap_bo *bo,
                const char *kind)
{
   const size_t size = cohmap_bo_size(bo);
   struct bad_box boxes[32];
   size_t n = bad_boxes(size, boxes);
   assert_true(n <= TU_ARRAY_SIZE(boxes));

   struct cohmap_device_stats before = dev_stats(dev);
   struct cohmap_bo_stats bo_before = bo_stats(bo);
   for (size_t i = 0; i < n; i++) {
      int rc = cohmap_bo_flush_box(bo, &boxes[i].box);
      if (rc != -EINVAL) {
         fprintf(stderr,
                 "%s: %s BO: flush_box (%s): returned %d, expected "
                 "-EINVAL\n",
                 cur_name, kind, boxes[i].what, rc);
         fail();
      }
      assert_true(cohmap_error_message()[0] != '\0');
   }
   CHECK_RC(cohmap_bo_flush_box(bo, NULL), -EINVAL);

   const struct {
      size_t off, len;
      const char *what;
   } ranges[] = {
      {size, 1, "starts at the end"},
      {size - 1, 2, "one byte past the end"},
      {0, size + 1, "longer than the BO"},
      {SIZE_MAX, 1, "offset SIZE_MAX"},
      {SIZE_MAX - 10, 20, "offset + size wraps around"},
      {1, SIZE_MAX, "size SIZE_MAX"},
      {SIZE_MAX, SIZE_MAX, "both SIZE_MAX"},
   };
   for (size_t i = 0; i < TU_ARRAY_SIZE(ranges); i++) {
      int rc = cohmap_bo_flush(bo, ranges[i].off, ranges[i].len);
      if (rc != -EINVAL) {
         fprintf(stderr,
                 "%s: %s BO: flush (%s): returned %d, expected "
                 "-EINVAL\n",
                 cur_name, kind, ranges[i].what, rc);
         fail();
      }
      assert_true(cohmap_error_message()[0] != '\0');
      rc = cohmap_bo_invalidate(bo, ranges[i].off, ranges[i].len);
      if (rc != -EINVAL) {
         fprintf(stderr,
                 "%s: %s BO: invalidate (%s): returned %d, "
                 "expected -EINVAL\n",
                 cur_name, kind, ranges[i].what, rc);
         fail();
      }
   }

   /* Empty boxes and ranges are harmless (accepted or refused, but
    * nothing moves). */
   struct cohmap_box empty = {
      .offset = 16, .width = 0, .height = 4, .row_pitch = 64};
   int rc = cohmap_bo_flush_box(bo, &empty);
   assert_true(rc == 0 || rc == -EINVAL);
   rc = cohmap_bo_flush(bo, 16, 0);
   assert_true(rc == 0 || rc == -EINVAL);

   char what[64];
   snprintf(what, sizeof(what), "%s BO: bytes uploaded by bad flushes", kind);
   CHECK_U64(dev_stats(dev).bytes_uploaded - before.bytes_uploaded, 0, what);
   CHECK_U64(bo_stats(bo).bytes_uploaded - bo_before.bytes_uploaded, 0, what);
   snprintf(what, sizeof(what),
            "%s BO: bytes downloaded by bad "
            "invalidates",
            kind);
   CHECK_U64(dev_stats(dev).bytes_downloaded - before.bytes_downloaded, 0,
             what);
}

static void
test_bad(void **state)
{
   const struct variant *v = *state;
   struct cohmap_device *dev = device_for(v, 0);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));

   const size_t size = 64 * TU_KIB;
   struct cohmap_bo *bo = bo_new(dev, size, COHMAP_BO_GPU_WRITE);
   struct cohmap_bo *rb = bo_new(dev, size, COHMAP_BO_GPU_WRITE);
   uint8_t *cpu = cohmap_bo_map(bo);
   uint8_t *model = calloc(1, size);
   uint8_t *scratch = malloc(size);
   assert_non_null(model);
   assert_non_null(scratch);

   /* Garbage in the mapping that a wrong upload would carry over. */
   tu_rng_fill(&rng, cpu, size);
   uint8_t *before = malloc(size);
   assert_non_null(before);
   memcpy(before, cpu, size);
   check_bad_input(dev, bo, "non-coherent");
   /* Refused invalidates did not touch the mapping either. */
   if (!same_bytes(cpu, before, size, "mapping after refused invalidates"))
      fail();
   expect_device(dev, bo, rb, model, size, scratch,
                 "device after refused flushes");

   /* Coherent BOs check their arguments the same way. */
   struct cohmap_bo *coh[4];
   const size_t coh_sizes[] = {1000, 256 * TU_KIB};
   size_t nc = 0;
   for (size_t s = 0; s < TU_ARRAY_SIZE(coh_sizes); s++) {
      for (int w = 0; w < 2; w++) {
         coh[nc] = bo_new(dev, coh_sizes[s],
                          COHMAP_BO_COHERENT | (w ? COHMAP_BO_GPU_WRITE : 0));
         tu_rng_fill(&rng, cohmap_bo_map(coh[nc]), coh_sizes[s]);
         check_bad_input(dev, coh[nc], w ? "coherent GPU_WRITE" : "coherent");
         nc++;
      }
   }

   free(before);
   free(model);
   free(scratch);
   for (size_t i = 0; i < nc; i++)
      CHECK_OK(cohmap_bo_destroy(coh[i]));
   struct cohmap_bo *bos[] = {bo, rb};
   CHECK_OK(ws_teardown(dev, bos, TU_ARRAY_SIZE(bos)));
}

/* --- invalidate -------------------------------------------------------- */

static void
test_invalidate(void **state)
{
   const struct variant *v = *state;
   struct cohmap_device *dev = device_for(v, 0);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));

   /* Not page-sized: the last partial page belongs to nobody else. */
   const size_t size = 64 * TU_KIB + 100;
   struct cohmap_bo *bo = bo_new(dev, size, COHMAP_BO_GPU_WRITE);
   struct cohmap_bo *src = bo_new(dev, 8192, 0);
   uint8_t *cpu = cohmap_bo_map(bo);
   uint8_t *device = calloc(1, size); /* model of the device's copy */
   uint8_t *mapping = malloc(size);   /* model of the mapping */
   uint8_t payload[100], srcdata[8192];
   assert_non_null(device);
   assert_non_null(mapping);
   tu_rng_fill(&rng, payload, sizeof(payload));
   tu_rng_fill(&rng, srcdata, sizeof(srcdata));
   memcpy(cohmap_bo_map(src), srcdata, sizeof(srcdata));
   CHECK_OK(cohmap_bo_flush(src, 0, sizeof(srcdata)));

   /* CPU garbage, never flushed. */
   tu_rng_fill(&rng, cpu, size);
   memcpy(mapping, cpu, size);

   struct cohmap_submit *s = NULL;
   struct cohmap_fence *f = NULL;
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_submit_add_bo(s, src, COHMAP_ACCESS_READ));
   CHECK_OK(cohmap_cmd_fill(s, bo, 4096, 8192, 0xdeadbeef));
   CHECK_OK(cohmap_cmd_write(s, bo, 1, payload, sizeof(payload)));
   CHECK_OK(cohmap_cmd_copy(s, bo, size - 8192, src, 0, 8192));
   CHECK_OK(cohmap_submit_end(s, &f));
   for (size_t i = 0; i < 8192; i += 4) {
      const uint32_t pattern = 0xdeadbeef;
      memcpy(device + 4096 + i, &pattern, 4);
   }
   memcpy(device + 1, payload, sizeof(payload));
   memcpy(device + size - 8192, srcdata, 8192);

   /* Completion observed three ways: none of them may touch a
    * non-coherent mapping. */
   CHECK_OK(cohmap_fence_wait(f, UINT64_MAX));
   if (!same_bytes(cpu, mapping, size,
                   "after the fence wait, before "
                   "any invalidate (the device must not be coherent)"))
      fail();
   CHECK_OK(cohmap_fence_poll(f));
   CHECK_OK(cohmap_device_wait_idle(dev));
   cohmap_fence_destroy(f);
   if (!same_bytes(cpu, mapping, size, "after poll and wait_idle"))
      fail();

   /* Partial invalidates overwrite exactly their bytes. */
   const struct {
      size_t off, len;
      const char *what;
   } parts[] = {
      {4096 + 100, 50, "inside the fill"},
      {4095, 2, "across the start of the fill"},
      {0, 1, "the first byte"},
      {size - 1, 1, "the last byte"},
      {50, 9000, "the write and part of the fill"},
      {size - 9000, 100, "zeros before the copy"},
   };
   for (size_t i = 0; i < TU_ARRAY_SIZE(parts); i++) {
      /* New CPU garbage, so an overwrite of too much shows. */
      tu_rng_fill(&rng, cpu, size);
      memcpy(mapping, cpu, size);
      CHECK_OK(cohmap_bo_invalidate(bo, parts[i].off, parts[i].len));
      memcpy(mapping + parts[i].off, device + parts[i].off, parts[i].len);
      if (!same_bytes(cpu, mapping, size, parts[i].what))
         fail();
   }

   CHECK_OK(cohmap_bo_invalidate(bo, 0, size));
   if (!same_bytes(cpu, device, size, "whole invalidate"))
      fail();

   /* A CPU store after the invalidate stays until the next one. */
   cpu[4096] = 0x11;
   CHECK_OK(cohmap_device_wait_idle(dev));
   assert_int_equal(cpu[4096], 0x11);
   CHECK_OK(cohmap_bo_invalidate(bo, 4096, 1));
   assert_int_equal(cpu[4096], 0xef);

   free(device);
   free(mapping);
   struct cohmap_bo *bos[] = {bo, src};
   CHECK_OK(ws_teardown(dev, bos, TU_ARRAY_SIZE(bos)));
}

/* --- coherent BOs ------------------------------------------------------ */

static void
coherent_case(struct cohmap_device *dev, enum cohmap_method m, size_t size,
              uint32_t flags, struct tu_rng *rng)
{
   char kind[96];
   snprintf(kind, sizeof(kind), "coherent%s %zu-byte BO",
            (flags & COHMAP_BO_GPU_WRITE) ? " GPU_WRITE" : "", size);

   struct cohmap_bo *bo = bo_new(dev, size, COHMAP_BO_COHERENT | flags);
   struct cohmap_bo *rb = bo_new(dev, size, COHMAP_BO_GPU_WRITE);
   if (cohmap_bo_method(bo) != m) {
      fprintf(stderr, "%s: %s tracked by %s, not %s\n", cur_name, kind,
              cohmap_method_name(cohmap_bo_method(bo)),
              cohmap_method_name(m));
      fail();
   }
   uint8_t *cpu = cohmap_bo_map(bo);
   uint8_t *model = malloc(size);
   uint8_t *scratch = malloc(size);
   assert_non_null(model);
   assert_non_null(scratch);

   /* Flushes are accepted; the submission sees every CPU write (flushed
    * or not: tracking does it). */
   tu_rng_fill(rng, cpu, size);
   memcpy(model, cpu, size);
   CHECK_OK(cohmap_bo_flush(bo, 0, size));
   CHECK_OK(cohmap_bo_flush(bo, size / 3, size / 5));
   struct cohmap_box b = {
      .offset = 8, .row_pitch = 64, .width = 16, .height = size / 64 - 1};
   CHECK_OK(cohmap_bo_flush_box(bo, &b));
   b = (struct cohmap_box){.offset = 0,
                           .row_pitch = 32,
                           .slice_pitch = 128,
                           .width = 8,
                           .height = 3,
                           .depth = size / 128};
   CHECK_OK(cohmap_bo_flush_box(bo, &b));
   tu_rng_fill(rng, cpu + size / 2, size / 4);
   memcpy(model + size / 2, cpu + size / 2, size / 4);
   char what[160];
   snprintf(what, sizeof(what), "%s: device after flushes", kind);
   expect_device(dev, bo, rb, model, size, scratch, what);

   if (flags & COHMAP_BO_GPU_WRITE) {
      /*
       * A flush must not upload stale CPU bytes over GPU writes that are
       * not merged yet.  The sleep lets the sim execute the fill before
       * the flushes (without observing the fence, which would merge); if
       * it has not, the test proves less but cannot fail wrongly.
       */
      struct cohmap_submit *s = NULL;
      struct cohmap_fence *f = NULL;
      CHECK_OK(cohmap_submit_begin(dev, &s));
      CHECK_OK(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_WRITE));
      CHECK_OK(cohmap_cmd_fill(s, bo, 0, 256, 0x01020304));
      CHECK_OK(cohmap_submit_end(s, &f));
      nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
      cpu[300] ^= 0xff; /* same page as the fill */
      model[300] = cpu[300];
      CHECK_OK(cohmap_bo_flush(bo, 0, size));
      CHECK_OK(cohmap_bo_flush_box(
         bo, &(struct cohmap_box){.offset = 0, .width = size}));
      CHECK_OK(cohmap_device_flush_all(dev));
      CHECK_OK(cohmap_fence_wait(f, UINT64_MAX));
      cohmap_fence_destroy(f);
      for (size_t i = 0; i < 256; i += 4)
         memcpy(model + i, &(uint32_t){0x01020304}, 4);
      snprintf(what, sizeof(what),
               "%s: mapping after a GPU fill and "
               "flushes before the fence",
               kind);
      if (!same_bytes(cpu, model, size, what))
         fail();
      snprintf(what, sizeof(what),
               "%s: device after a GPU fill and "
               "flushes before the fence",
               kind);
      expect_device(dev, bo, rb, model, size, scratch, what);

      /* An invalidate of a coherent BO merges: a CPU store into bytes
       * the GPU wrote is kept, and reaches the device next time. */
      cpu[10] = 0x77;
      model[10] = 0x77;
      CHECK_OK(cohmap_bo_invalidate(bo, 0, size));
      snprintf(what, sizeof(what), "%s: mapping after an invalidate", kind);
      if (!same_bytes(cpu, model, size, what))
         fail();
      snprintf(what, sizeof(what), "%s: device after an invalidate", kind);
      expect_device(dev, bo, rb, model, size, scratch, what);
   }

   free(model);
   free(scratch);
   CHECK_OK(cohmap_bo_destroy(bo));
   CHECK_OK(cohmap_bo_destroy(rb));
}

static void
test_coherent(void **state)
{
   const struct variant *v = *state;
   struct cohmap_device *dev = device_for(v, 0);
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));

   /* 1000 bytes: a slab slot (and not a multiple of its 1 KiB slot);
    * 256 KiB: a dedicated block. */
   const size_t sizes[] = {1000, 256 * TU_KIB};
   for (size_t i = 0; i < TU_ARRAY_SIZE(sizes); i++) {
      coherent_case(dev, v->method, sizes[i], 0, &rng);
      coherent_case(dev, v->method, sizes[i], COHMAP_BO_GPU_WRITE, &rng);
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

   static struct variant variants[TU_METHODS_COUNT];
   static const struct {
      const char *name;
      CMUnitTestFunction fn;
   } cases[] = {
      {"image", test_image},           {"volume", test_volume},
      {"random", test_random},         {"bad", test_bad},
      {"invalidate", test_invalidate}, {"coherent", test_coherent},
   };
   static struct CMUnitTest tests[TU_ARRAY_SIZE(cases) * TU_METHODS_COUNT];
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
   for (size_t c = 0; c < TU_ARRAY_SIZE(cases); c++) {
      for (size_t i = 0; i < TU_METHODS_COUNT; i++) {
         snprintf(names[nt], sizeof(names[nt]), "%s %s", cases[c].name,
                  variants[i].name);
         tests[nt] = (struct CMUnitTest){names[nt], cases[c].fn, NULL, NULL,
                                         &variants[i]};
         nt++;
      }
   }
   return _cmocka_run_group_tests("winsys-box", tests, nt, NULL, NULL);
}
