/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Bad input to the winsys gets -errno and a message, never a crash, never
 * a half-executed submission, never lost data:
 *
 *  - a command touching a BO that is not in the buffer list, or listed
 *    without the access it needs, or written without COHMAP_BO_GPU_WRITE:
 *    cohmap_submit_end() refuses the submission.  Refused means refused:
 *    nothing was uploaded (the listed coherent BOs have pending CPU writes
 *    that a premature flush would count), nothing executed (the device
 *    copies are read back by a later valid submission), no mapping
 *    changed, and the pending writes still reach the device later;
 *  - out-of-range commands (offsets past the end, sizes whose arithmetic
 *    overflows), misaligned fill/compute, oversized writes, partially
 *    overlapping compute: -EINVAL when recorded, and the submission is
 *    poisoned (refused at end even if the caller ignored the error), with
 *    the exact-fit ranges next to them accepted and executed correctly;
 *  - bad BO creation and wrapping arguments; NULL for every pointer
 *    argument of every function of winsys.h; BOs of another device;
 *  - cohmap_bo_destroy() of BOs that unfinished submissions use
 *    (COHMAP_SIM_EXEC_US keeps them unfinished): the submission completes
 *    with correct results in the other BOs, a slab slot is not handed out
 *    with the old submission's writes in it, nothing leaks (ASan leg);
 *  - cohmap_device_destroy() with live BOs or fences: -EBUSY, the device
 *    still works; cohmap_fence_wait() with a zero timeout on a busy
 *    device: -ETIME;
 *  - bad COHMAP_SIM_* values: cohmap_device_create() fails with -EINVAL
 *    and a message naming the variable.
 *
 * Destroying a BO twice is a use after free by contract, so it is not
 * tested.
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

#include <cmocka.h>

#include "ws-util.h"

struct variant {
   enum cohmap_method method;
   char name[32];
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

/* The call must fail with want and leave a message of its own. */
#define CHECK_ERR(expr, want)                                                \
   do {                                                                      \
      message_sentinel();                                                    \
      CHECK_RC(expr, want);                                                  \
      check_new_message(#expr, __LINE__);                                    \
   } while (0)

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

/* Sets the thread's error message to a known one, so that a later check
 * can tell that a failing call left a message of its own (a stale one
 * from an earlier error would otherwise pass). */
static char sentinel_message[256];

static void
message_sentinel(void)
{
   enum cohmap_method m;
   cohmap_method_from_name("test-sentinel-no-such-method", &m);
   snprintf(sentinel_message, sizeof(sentinel_message), "%s",
            cohmap_error_message());
}

static void
check_new_message(const char *what, int line)
{
   const char *msg = cohmap_error_message();
   if (!msg || !msg[0] || strcmp(msg, sentinel_message) == 0) {
      fprintf(stderr,
              "%s:%d: %s: %s failed without a message of its own "
              "(cohmap_error_message() is \"%s\")\n",
              __FILE__, line, cur_name, what, msg ? msg : "(null)");
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
device_for(const struct variant *v)
{
   if (!method_usable(v))
      skip();
   struct cohmap_device *dev = ws_device_create(v->method, 0);
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

static struct cohmap_device_stats
dev_stats(struct cohmap_device *dev)
{
   struct cohmap_device_stats st;
   CHECK_OK(cohmap_device_get_stats(dev, &st));
   return st;
}

/* The device's copy of bo[0, size), through a GPU copy into a fresh
 * non-coherent BO and an invalidate. */
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

/* --- refused submissions ----------------------------------------------- */

/*
 * BOs for the refusal tests, each with a model of its mapping (cpu) and of
 * its device copy (dev):
 *  - coh: coherent, GPU_WRITE, dedicated (128 KiB: room for the largest
 *    cmd_write and more), with pending CPU writes;
 *  - slab: coherent, GPU_WRITE, a slab slot, with pending CPU writes;
 *  - nc: non-coherent, GPU_WRITE;
 *  - ro: coherent without GPU_WRITE;
 *  - nc_ro: non-coherent without GPU_WRITE.
 */
enum { COH, SLAB, NC, RO, NC_RO, NBOS };

static const struct {
   size_t size;
   uint32_t flags;
   const char *name;
} world_bos[NBOS] = {
   [COH] = {128 * 1024, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE, "coh"},
   [SLAB] = {1000, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE, "slab"},
   [NC] = {4096, COHMAP_BO_GPU_WRITE, "nc"},
   [RO] = {8192, COHMAP_BO_COHERENT, "ro"},
   [NC_RO] = {4096, 0, "nc_ro"},
};

struct world {
   struct cohmap_device *dev;
   struct cohmap_bo *bo[NBOS];
   uint8_t *cpu[NBOS];
   struct tu_rng rng;
};

static void
world_init(struct world *w, const struct variant *v)
{
   memset(w, 0, sizeof(*w));
   w->dev = device_for(v);
   tu_rng_seed(&w->rng, tu_seed_for(v->name));
   for (int i = 0; i < NBOS; i++) {
      w->bo[i] = bo_new(w->dev, world_bos[i].size, world_bos[i].flags);
      w->cpu[i] = cohmap_bo_map(w->bo[i]);
      if (world_bos[i].flags & COHMAP_BO_COHERENT)
         assert_int_equal(cohmap_bo_method(w->bo[i]), v->method);
   }
}

/* New CPU writes to the coherent BOs: the next submission listing them
 * has something to upload. */
static void
world_scribble(struct world *w)
{
   for (int i = 0; i < NBOS; i++) {
      if (!(world_bos[i].flags & COHMAP_BO_COHERENT))
         continue;
      size_t off = (size_t)tu_rng_below(&w->rng, world_bos[i].size - 64);
      tu_rng_fill(&w->rng, w->cpu[i] + off, 64);
   }
}

/* Filler BOs listed (READ) at the start of every submission of
 * test_buffer_list's second pass: past 16 entries the winsys looks the
 * list up through a hash index, and every check must hold there too. */
#define NPAD 40
static struct cohmap_bo *pad_bos[NPAD];
static unsigned npad;

static void
begin_padded(struct world *w, struct cohmap_submit **s)
{
   CHECK_OK(cohmap_submit_begin(w->dev, s));
   for (unsigned i = 0; i < npad; i++)
      CHECK_OK(cohmap_submit_add_bo(*s, pad_bos[i], COHMAP_ACCESS_READ));
}

/* A submission listing every BO with all the access it may have. */
static struct cohmap_submit *
world_begin(struct world *w)
{
   struct cohmap_submit *s = NULL;
   begin_padded(w, &s);
   for (int i = 0; i < NBOS; i++) {
      uint32_t access = COHMAP_ACCESS_READ;
      if (world_bos[i].flags & COHMAP_BO_GPU_WRITE)
         access |= COHMAP_ACCESS_WRITE;
      CHECK_OK(cohmap_submit_add_bo(s, w->bo[i], access));
   }
   return s;
}

/*
 * Ends s, which must be refused with -EINVAL (rc_record: what recording
 * returned, checked by the caller).  Nothing may have been uploaded or
 * submitted, and no mapping changed.
 */
static void
expect_refused(struct world *w, struct cohmap_submit *s, const char *what)
{
   struct cohmap_device_stats before = dev_stats(w->dev);
   struct cohmap_bo_stats bst[NBOS];
   uint8_t *copy[NBOS];
   for (int i = 0; i < NBOS; i++) {
      CHECK_OK(cohmap_bo_get_stats(w->bo[i], &bst[i]));
      copy[i] = malloc(world_bos[i].size);
      assert_non_null(copy[i]);
      memcpy(copy[i], w->cpu[i], world_bos[i].size);
   }

   struct cohmap_fence *f = NULL;
   message_sentinel();
   int rc = cohmap_submit_end(s, &f);
   if (rc != -EINVAL) {
      fprintf(stderr,
              "%s: %s: cohmap_submit_end returned %d (%s), "
              "expected -EINVAL\n",
              cur_name, what, rc, cohmap_error_message());
      if (rc == 0) {
         cohmap_fence_wait(f, UINT64_MAX);
         cohmap_fence_destroy(f);
      }
      fail();
   }
   check_new_message(what, __LINE__);
   assert_null(f);

   struct cohmap_device_stats after = dev_stats(w->dev);
   char msg[160];
   snprintf(msg, sizeof(msg), "%s: bytes uploaded by a refused submission",
            what);
   CHECK_U64(after.bytes_uploaded - before.bytes_uploaded, 0, msg);
   snprintf(msg, sizeof(msg), "%s: submissions", what);
   CHECK_U64(after.submissions - before.submissions, 0, msg);
   for (int i = 0; i < NBOS; i++) {
      struct cohmap_bo_stats st;
      CHECK_OK(cohmap_bo_get_stats(w->bo[i], &st));
      snprintf(msg, sizeof(msg), "%s: %s: BO submissions", what,
               world_bos[i].name);
      CHECK_U64(st.submissions, bst[i].submissions, msg);
      CHECK_U64(st.bytes_uploaded, bst[i].bytes_uploaded, msg);
   }
   /* Completion of earlier work is observed, in case a refused
    * submission was queued after all: its writes would show now. */
   CHECK_OK(cohmap_device_wait_idle(w->dev));
   for (int i = 0; i < NBOS; i++) {
      snprintf(msg, sizeof(msg), "%s: mapping of %s", what,
               world_bos[i].name);
      bool ok = same_bytes(w->cpu[i], copy[i], world_bos[i].size, msg);
      free(copy[i]);
      if (!ok)
         fail();
   }
}

/* A recorded command that must be refused: rc is what recording returned
 * (-EINVAL, or 0 where the check can only happen at end). */
static void
expect_record(int rc, bool at_record, const char *what)
{
   if (at_record ? rc != -EINVAL : (rc != 0 && rc != -EINVAL)) {
      fprintf(stderr,
              "%s: %s: recording returned %d (%s), expected "
              "%s\n",
              cur_name, what, rc, cohmap_error_message(),
              at_record ? "-EINVAL" : "0 or -EINVAL");
      fail();
   }
   if (rc)
      assert_true(cohmap_error_message()[0] != '\0');
}

/* After every refusal: the device copies equal the CPU writes (all of
 * them, including those pending during the refusals) and nothing any
 * refused command would have written.  Non-coherent BOs were never
 * flushed: zero. */
static void
world_verify(struct world *w, const char *what)
{
   char msg[160];
   for (int i = 0; i < NBOS; i++) {
      snprintf(msg, sizeof(msg), "%s: device copy of %s", what,
               world_bos[i].name);
      if (world_bos[i].flags & COHMAP_BO_COHERENT) {
         expect_device(w->dev, w->bo[i], w->cpu[i], world_bos[i].size, msg);
      } else {
         uint8_t *zero = calloc(1, world_bos[i].size);
         assert_non_null(zero);
         expect_device(w->dev, w->bo[i], zero, world_bos[i].size, msg);
         free(zero);
      }
   }
}

static void
world_fini(struct world *w)
{
   /* The refused submissions released their BO references: everything
    * can be destroyed, and the device then too. */
   CHECK_OK(ws_teardown(w->dev, w->bo, NBOS));
}

static void
buffer_list_checks(struct world *wp)
{
   struct world w = *wp;
   struct cohmap_submit *s;
   static const uint8_t data[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9};

   /* Bring the device in sync, then leave CPU writes pending. */
   world_scribble(&w);
   world_verify(&w, "start");

   /* Written BO not in the list at all. */
   world_scribble(&w);
   begin_padded(&w, &s);
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[COH],
                                 COHMAP_ACCESS_READ | COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[SLAB], COHMAP_ACCESS_READ));
   CHECK_OK(cohmap_cmd_fill(s, w.bo[COH], 0, 4096, 0x11111111));
   expect_record(cohmap_cmd_fill(s, w.bo[NC], 0, 4096, 0x22222222), false,
                 "fill of an unlisted BO");
   expect_refused(&w, s, "fill of an unlisted BO");

   /* Read BO not in the list. */
   world_scribble(&w);
   begin_padded(&w, &s);
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[COH], COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[SLAB], COHMAP_ACCESS_READ));
   expect_record(cohmap_cmd_copy(s, w.bo[COH], 0, w.bo[NC], 0, 4096), false,
                 "copy from an unlisted BO");
   expect_refused(&w, s, "copy from an unlisted BO");

   /* Every command type, the unlisted BO on each side. */
   world_scribble(&w);
   begin_padded(&w, &s);
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[COH], COHMAP_ACCESS_READ));
   expect_record(cohmap_cmd_checksum(s, w.bo[SLAB], 0, w.bo[COH], 0, 64),
                 false, "checksum into an unlisted BO");
   expect_refused(&w, s, "checksum into an unlisted BO");

   world_scribble(&w);
   begin_padded(&w, &s);
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[COH], COHMAP_ACCESS_WRITE));
   expect_record(cohmap_cmd_compute(s, COHMAP_COMPUTE_ADD32, w.bo[COH], 0,
                                    w.bo[SLAB], 0, 64, 1),
                 false, "compute from an unlisted BO");
   expect_refused(&w, s, "compute from an unlisted BO");

   world_scribble(&w);
   begin_padded(&w, &s);
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[COH], COHMAP_ACCESS_READ));
   expect_record(cohmap_cmd_write(s, w.bo[SLAB], 0, data, sizeof(data)),
                 false, "write to an unlisted BO");
   expect_refused(&w, s, "write to an unlisted BO");

   /* Listed READ but written (the BO has GPU_WRITE). */
   world_scribble(&w);
   begin_padded(&w, &s);
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[COH], COHMAP_ACCESS_READ));
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[SLAB], COHMAP_ACCESS_READ));
   expect_record(cohmap_cmd_copy(s, w.bo[SLAB], 0, w.bo[COH], 0, 512), false,
                 "copy into a BO listed for reading");
   expect_refused(&w, s, "copy into a BO listed for reading");

   world_scribble(&w);
   begin_padded(&w, &s);
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[NC], COHMAP_ACCESS_READ));
   expect_record(cohmap_cmd_fill(s, w.bo[NC], 0, 64, 1), false,
                 "fill of a non-coherent BO listed for reading");
   expect_refused(&w, s, "fill of a non-coherent BO listed for reading");

   /* Listed WRITE only but read. */
   world_scribble(&w);
   begin_padded(&w, &s);
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[COH], COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[SLAB], COHMAP_ACCESS_WRITE));
   expect_record(cohmap_cmd_copy(s, w.bo[COH], 0, w.bo[SLAB], 0, 512), false,
                 "copy from a BO listed for writing only");
   expect_refused(&w, s, "copy from a BO listed for writing only");

   /* Written without COHMAP_BO_GPU_WRITE, though listed WRITE. */
   const int no_gpu_write[] = {RO, NC_RO};
   for (size_t i = 0; i < TU_ARRAY_SIZE(no_gpu_write); i++) {
      int b = no_gpu_write[i];
      char what[96];
      snprintf(what, sizeof(what), "fill of %s, created without GPU_WRITE",
               world_bos[b].name);
      world_scribble(&w);
      begin_padded(&w, &s);
      CHECK_OK(cohmap_submit_add_bo(s, w.bo[COH], COHMAP_ACCESS_READ));
      int rc = cohmap_submit_add_bo(s, w.bo[b],
                                    COHMAP_ACCESS_READ | COHMAP_ACCESS_WRITE);
      /* Refusing WRITE access here already is fine too. */
      expect_record(rc, false, what);
      expect_record(cohmap_cmd_fill(s, w.bo[b], 0, 64, 0x33333333), false,
                    what);
      expect_refused(&w, s, what);

      snprintf(what, sizeof(what),
               "copy into %s, created without "
               "GPU_WRITE",
               world_bos[b].name);
      world_scribble(&w);
      begin_padded(&w, &s);
      CHECK_OK(cohmap_submit_add_bo(s, w.bo[COH], COHMAP_ACCESS_READ));
      rc = cohmap_submit_add_bo(s, w.bo[b], COHMAP_ACCESS_WRITE);
      expect_record(rc, false, what);
      expect_record(cohmap_cmd_copy(s, w.bo[b], 0, w.bo[COH], 0, 64), false,
                    what);
      expect_refused(&w, s, what);
   }

   /* Bad access bits poison the submission. */
   world_scribble(&w);
   s = world_begin(&w);
   CHECK_ERR(cohmap_submit_add_bo(s, w.bo[NC], 0), -EINVAL);
   CHECK_OK(cohmap_cmd_fill(s, w.bo[NC], 0, 64, 1));
   expect_refused(&w, s, "access 0");
   world_scribble(&w);
   s = world_begin(&w);
   CHECK_ERR(cohmap_submit_add_bo(s, w.bo[NC], 1u << 7), -EINVAL);
   CHECK_OK(cohmap_cmd_fill(s, w.bo[NC], 0, 64, 1));
   expect_refused(&w, s, "unknown access bit");

   /* Adding a BO again ORs the access: READ then WRITE allows a write.
    * (A positive control for the refusals above.) */
   world_scribble(&w);
   begin_padded(&w, &s);
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[COH], COHMAP_ACCESS_READ));
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[SLAB], COHMAP_ACCESS_READ));
   CHECK_OK(cohmap_submit_add_bo(s, w.bo[SLAB], COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_cmd_copy(s, w.bo[SLAB], 0, w.bo[COH], 100, 512));
   CHECK_OK(ws_submit_wait(s));
   /* The copy's source is the COH bytes as uploaded, which are the CPU's
    * (uploaded by this very submission); the merge brings them into
    * SLAB's mapping. */
   if (!same_bytes(w.cpu[SLAB], w.cpu[COH] + 100, 512,
                   "copy after READ then WRITE"))
      fail();

   world_verify(&w, "after the refusals");
   *wp = w;
}

static void
test_buffer_list(void **state)
{
   const struct variant *v = *state;
   struct world w;
   world_init(&w, v);

   npad = 0;
   buffer_list_checks(&w);

   /* Again with NPAD more BOs in every list: the hashed lookup. */
   for (unsigned i = 0; i < NPAD; i++)
      CHECK_OK(cohmap_bo_create(w.dev, 64, 0, &pad_bos[i]));
   npad = NPAD;
   buffer_list_checks(&w);
   npad = 0;
   for (unsigned i = 0; i < NPAD; i++)
      CHECK_OK(cohmap_bo_destroy(pad_bos[i]));
   world_fini(&w);
}

/* --- out-of-range commands --------------------------------------------- */

struct bad_cmd {
   const char *what;
   int type; /* enum cohmap_cmd_type of device.h, spelled out */
   int dst, src;
   size_t dst_offset, src_offset, size;
};

enum { COPY, FILL, WRITE, CHECKSUM, COMPUTE };

static int
record(struct world *w, struct cohmap_submit *s, const struct bad_cmd *c,
       const uint8_t *payload)
{
   struct cohmap_bo *dst = w->bo[c->dst], *src = w->bo[c->src];
   switch (c->type) {
   case COPY:
      return cohmap_cmd_copy(s, dst, c->dst_offset, src, c->src_offset,
                             c->size);
   case FILL:
      return cohmap_cmd_fill(s, dst, c->dst_offset, c->size, 0x44444444);
   case WRITE:
      return cohmap_cmd_write(s, dst, c->dst_offset, payload, c->size);
   case CHECKSUM:
      return cohmap_cmd_checksum(s, dst, c->dst_offset, src, c->src_offset,
                                 c->size);
   case COMPUTE:
      return cohmap_cmd_compute(s, COHMAP_COMPUTE_XOR32, dst, c->dst_offset,
                                src, c->src_offset, c->size, 0x55555555);
   }
   return -1;
}

static void
test_ranges(void **state)
{
   const struct variant *v = *state;
   struct world w;
   world_init(&w, v);
   world_scribble(&w);

   const size_t coh = world_bos[COH].size, slab = world_bos[SLAB].size;
   const size_t big = SIZE_MAX & ~(size_t)3; /* aligned, huge */
   const struct bad_cmd bad[] = {
      {"copy: destination offset past the end", COPY, COH, SLAB, coh + 4, 0,
       4},
      {"copy: destination one byte too long", COPY, COH, SLAB, coh - 3, 0, 4},
      {"copy: source past the end", COPY, COH, SLAB, 0, slab - 3, 4},
      {"copy: source offset SIZE_MAX", COPY, COH, SLAB, 0, SIZE_MAX, 1},
      {"copy: size SIZE_MAX", COPY, COH, SLAB, 0, 0, SIZE_MAX},
      {"copy: destination offset + size wraps", COPY, COH, SLAB,
       SIZE_MAX - 10, 0, 20},
      {"copy: source offset + size wraps", COPY, COH, SLAB, 0, SIZE_MAX - 10,
       20},
      {"fill: offset past the end", FILL, COH, 0, coh + 4, 0, 4},
      {"fill: one word too long", FILL, COH, 0, coh - 4, 0, 8},
      {"fill: size SIZE_MAX & ~3", FILL, COH, 0, 0, 0, big},
      {"fill: offset + size wraps", FILL, COH, 0, big - 12, 0, 32},
      {"fill: a slab BO's neighbour", FILL, SLAB, 0, 0, 0, 1024},
      {"write: past the end", WRITE, SLAB, 0, slab - 3, 0, 4},
      {"write: offset SIZE_MAX", WRITE, COH, 0, SIZE_MAX, 0, 1},
      {"write: offset + size wraps", WRITE, COH, 0, SIZE_MAX - 1, 0, 16},
      {"checksum: result one byte past the end", CHECKSUM, SLAB, COH,
       slab - 7, 0, 64},
      {"checksum: result offset SIZE_MAX - 3", CHECKSUM, SLAB, COH,
       SIZE_MAX - 3, 0, 64},
      {"checksum: source past the end", CHECKSUM, SLAB, COH, 0, 1, coh},
      {"checksum: source size SIZE_MAX", CHECKSUM, SLAB, COH, 0, 0, SIZE_MAX},
      {"checksum: source offset + size wraps", CHECKSUM, SLAB, COH, 0,
       SIZE_MAX - 7, 16},
      {"compute: destination past the end", COMPUTE, SLAB, COH, slab - 4 + 8,
       0, 8},
      {"compute: source past the end", COMPUTE, COH, SLAB, 0, 1000 - 8 + 4,
       8},
      {"compute: size SIZE_MAX & ~3", COMPUTE, COH, COH, 0, 0, big},
      {"compute: destination offset + size wraps", COMPUTE, COH, SLAB,
       big - 4, 0, 16},
      {"misaligned fill offset", FILL, COH, 0, 2, 0, 8},
      {"misaligned fill size", FILL, COH, 0, 4, 0, 6},
      {"fill size 2", FILL, COH, 0, 0, 0, 2},
      {"misaligned compute destination", COMPUTE, COH, SLAB, 2, 0, 8},
      {"misaligned compute source", COMPUTE, COH, SLAB, 0, 6, 8},
      {"misaligned compute size", COMPUTE, COH, SLAB, 0, 0, 10},
      {"write of 65537 bytes", WRITE, COH, 0, 0, 0, 65537},
      {"compute: destination 4 bytes after the source, same BO", COMPUTE, COH,
       COH, 4, 0, 64},
      {"compute: destination 4 bytes before the source, same BO", COMPUTE,
       COH, COH, 0, 4, 64},
      {"compute: one word of overlap", COMPUTE, COH, COH, 60, 0, 64},
   };

   uint8_t *payload = malloc(65537);
   assert_non_null(payload);
   tu_rng_fill(&w.rng, payload, 65537);

   for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
      world_scribble(&w);
      struct cohmap_submit *s = world_begin(&w);
      /* Good commands before and after the bad one: refused with it. */
      CHECK_OK(cohmap_cmd_fill(s, w.bo[NC], 0, 4096, 0x66666666));
      message_sentinel();
      int rc = record(&w, s, &bad[i], payload);
      if (rc != -EINVAL) {
         fprintf(stderr, "%s: %s: recording returned %d, expected -EINVAL\n",
                 cur_name, bad[i].what, rc);
         cohmap_submit_abort(s);
         fail();
      }
      check_new_message(bad[i].what, __LINE__);
      CHECK_OK(cohmap_cmd_fill(s, w.bo[COH], 0, 64, 0x77777777));
      expect_refused(&w, s, bad[i].what);
   }

   /* Exact fits next to the bad ones are accepted and execute right. */
   world_scribble(&w);
   uint8_t *coh_before = malloc(coh), *slab_before = malloc(slab);
   assert_non_null(coh_before);
   assert_non_null(slab_before);
   memcpy(coh_before, w.cpu[COH], coh);
   memcpy(slab_before, w.cpu[SLAB], slab);
   struct cohmap_submit *s = world_begin(&w);
   /* The one command of the submission that reads COH must see the
    * original bytes: copy first into SLAB's tail. */
   CHECK_OK(
      cohmap_cmd_copy(s, w.bo[SLAB], slab - 200, w.bo[COH], coh - 200, 200));
   CHECK_OK(
      cohmap_cmd_checksum(s, w.bo[SLAB], slab - 200 - 8, w.bo[COH], 0, coh));
   CHECK_OK(cohmap_cmd_fill(s, w.bo[COH], coh - 4, 4, 0x01020304));
   CHECK_OK(cohmap_cmd_write(s, w.bo[COH], 0, payload, 65536));
   CHECK_OK(cohmap_cmd_write(s, w.bo[SLAB], slab - 1 - 200 - 8, payload, 1));
   CHECK_OK(cohmap_cmd_compute(s, COHMAP_COMPUTE_ADD32, w.bo[SLAB], 0,
                               w.bo[SLAB], 0, 64, 5));
   CHECK_OK(cohmap_cmd_compute(s, COHMAP_COMPUTE_XOR32, w.bo[SLAB], 64,
                               w.bo[SLAB], 128, 64, 0xffffffff));
   CHECK_OK(ws_submit_wait(s));

   uint8_t *want_coh = malloc(coh), *want_slab = malloc(slab);
   assert_non_null(want_coh);
   assert_non_null(want_slab);
   memcpy(want_coh, coh_before, coh);
   memcpy(want_coh, payload, 65536);
   memcpy(want_coh + coh - 4, "\x04\x03\x02\x01", 4);
   memcpy(want_slab, slab_before, slab);
   memcpy(want_slab + slab - 200, coh_before + coh - 200, 200);
   uint64_t sum = cohmap_checksum(coh_before, coh);
   for (int i = 0; i < 8; i++)
      want_slab[slab - 208 + i] = (uint8_t)(sum >> (8 * i));
   want_slab[slab - 209] = payload[0];
   for (size_t i = 0; i < 64; i += 4) {
      uint32_t x, y;
      memcpy(&x, slab_before + i, 4);
      x += 5;
      memcpy(want_slab + i, &x, 4);
      memcpy(&y, slab_before + 128 + i, 4);
      y ^= 0xffffffff;
      memcpy(want_slab + 64 + i, &y, 4);
   }
   if (!same_bytes(w.cpu[COH], want_coh, coh, "exact fits: COH mapping") ||
       !same_bytes(w.cpu[SLAB], want_slab, slab, "exact fits: SLAB mapping"))
      fail();

   free(payload);
   free(coh_before);
   free(slab_before);
   free(want_coh);
   free(want_slab);
   world_verify(&w, "after the bad commands");
   world_fini(&w);
}

/* --- BO arguments ------------------------------------------------------ */

static void
test_bo_args(void **state)
{
   const struct variant *v = *state;
   struct cohmap_device *dev = device_for(v);
   const size_t ps = tu_page_size();
   struct cohmap_bo *bo;

   const uint32_t flag_sets[] = {
      0,
      COHMAP_BO_COHERENT,
      COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE,
      COHMAP_BO_GPU_WRITE,
      COHMAP_BO_COHERENT | COHMAP_BO_CPU_STORES_ONLY,
   };
   const uint32_t unknown[] = {1u << 5, 1u << 31, 0xffffffffu,
                               COHMAP_BO_COHERENT | (1u << 12)};

   uint8_t *mem = tu_map(4 * ps, 0, false);
   assert_non_null(mem);

   for (size_t f = 0; f < TU_ARRAY_SIZE(flag_sets); f++) {
      uint32_t fl = flag_sets[f];
      bo = NULL;
      CHECK_ERR(cohmap_bo_create(dev, 0, fl, &bo), -EINVAL);
      assert_null(bo);
      CHECK_ERR(cohmap_bo_wrap(dev, mem, 0, fl, &bo), -EINVAL);
      assert_null(bo);

      /* Unaligned user memory. */
      CHECK_ERR(cohmap_bo_wrap(dev, mem + 1, ps, fl, &bo), -EINVAL);
      CHECK_ERR(cohmap_bo_wrap(dev, mem + 64, 2 * ps, fl, &bo), -EINVAL);
      CHECK_ERR(cohmap_bo_wrap(dev, mem, ps + 1, fl, &bo), -EINVAL);
      CHECK_ERR(cohmap_bo_wrap(dev, mem, 100, fl, &bo), -EINVAL);
      CHECK_ERR(cohmap_bo_wrap(dev, NULL, ps, fl, &bo), -EINVAL);
      assert_null(bo);

      /* The memory was left alone: writable and not tracked (under
       * fault, a half-made registration would leave it protected and
       * this store would kill the test). */
      memset(mem, (int)f, 4 * ps);

      for (size_t u = 0; u < TU_ARRAY_SIZE(unknown); u++) {
         CHECK_ERR(cohmap_bo_create(dev, 4096, fl | unknown[u], &bo),
                   -EINVAL);
         assert_null(bo);
         CHECK_ERR(cohmap_bo_wrap(dev, mem, ps, fl | unknown[u], &bo),
                   -EINVAL);
         assert_null(bo);
      }
      memset(mem, (int)f + 1, 4 * ps);
   }

   /* Sizes no memory can hold fail cleanly too. */
   CHECK_RC(cohmap_bo_create(dev, SIZE_MAX, COHMAP_BO_COHERENT, &bo) < 0, 1);
   assert_null(bo);
   CHECK_RC(cohmap_bo_create(dev, SIZE_MAX, 0, &bo) < 0, 1);
   assert_null(bo);
   CHECK_RC(cohmap_bo_create(dev, SIZE_MAX - 4095, 0, &bo) < 0, 1);
   assert_null(bo);
   CHECK_RC(cohmap_bo_create(dev, SIZE_MAX / 2, COHMAP_BO_GPU_WRITE, &bo) < 0,
            1);
   assert_null(bo);

   struct cohmap_device_stats st = dev_stats(dev);
   CHECK_U64(st.bos, 0, "live BOs after refused creations");

   /* The device works. */
   bo = bo_new(dev, 4096, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
   memset(cohmap_bo_map(bo), 0x3c, 4096);
   uint8_t want[4096];
   memset(want, 0x3c, sizeof(want));
   expect_device(dev, bo, want, sizeof(want), "BO after refused creations");
   CHECK_OK(cohmap_bo_destroy(bo));

   tu_unmap(mem, 4 * ps);
   CHECK_OK(cohmap_device_destroy(dev));
}

/* --- NULL everywhere --------------------------------------------------- */

static void
test_null(void **state)
{
   const struct variant *v = *state;
   struct cohmap_device *dev = device_for(v);
   struct cohmap_bo *bo =
      bo_new(dev, 4096, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
   struct cohmap_submit *s = NULL;
   struct cohmap_fence *f = NULL;
   struct cohmap_device_stats dst;
   struct cohmap_bo_stats bst;
   struct cohmap_box box = {.width = 4};
   struct cohmap_bo *out = NULL;
   struct cohmap_device *dout = NULL;
   const size_t ps = tu_page_size();
   uint8_t *mem = tu_map(ps, 0, false);
   assert_non_null(mem);

   /* Documented no-ops. */
   cohmap_device_options_init(NULL);
   CHECK_OK(cohmap_device_destroy(NULL));
   CHECK_OK(cohmap_bo_destroy(NULL));
   cohmap_submit_abort(NULL);
   cohmap_fence_destroy(NULL);

   CHECK_ERR(cohmap_device_create(NULL, NULL), -EINVAL);
   struct cohmap_device_options opts;
   cohmap_device_options_init(&opts);
   CHECK_ERR(cohmap_device_create(&opts, NULL), -EINVAL);
   CHECK_ERR(cohmap_device_wait_idle(NULL), -EINVAL);
   CHECK_ERR(cohmap_device_flush_all(NULL), -EINVAL);
   CHECK_ERR(cohmap_device_get_stats(NULL, &dst), -EINVAL);
   CHECK_ERR(cohmap_device_get_stats(dev, NULL), -EINVAL);
   CHECK_ERR(cohmap_device_get_stats(NULL, NULL), -EINVAL);

   CHECK_ERR(cohmap_bo_create(NULL, 4096, 0, &out), -EINVAL);
   assert_null(out);
   CHECK_ERR(cohmap_bo_create(dev, 4096, 0, NULL), -EINVAL);
   CHECK_ERR(cohmap_bo_create(NULL, 4096, 0, NULL), -EINVAL);
   CHECK_ERR(cohmap_bo_wrap(NULL, mem, ps, 0, &out), -EINVAL);
   assert_null(out);
   CHECK_ERR(cohmap_bo_wrap(dev, NULL, ps, 0, &out), -EINVAL);
   assert_null(out);
   CHECK_ERR(cohmap_bo_wrap(dev, mem, ps, COHMAP_BO_COHERENT, NULL), -EINVAL);
   /* No BO was made of mem by the call without out. */
   CHECK_U64(dev_stats(dev).bos, 1, "live BOs");
   mem[0] = 1;

   assert_null(cohmap_bo_map(NULL));
   assert_int_equal(cohmap_bo_size(NULL), 0);
   assert_int_equal(cohmap_bo_flags(NULL), 0);
   assert_int_equal(cohmap_bo_method(NULL), COHMAP_METHOD_AUTO);
   assert_true(cohmap_bo_flush(NULL, 0, 1) < 0);
   assert_true(cohmap_bo_flush_box(NULL, &box) < 0);
   CHECK_ERR(cohmap_bo_flush_box(bo, NULL), -EINVAL);
   assert_true(cohmap_bo_flush_box(NULL, NULL) < 0);
   assert_true(cohmap_bo_invalidate(NULL, 0, 1) < 0);
   assert_true(cohmap_bo_get_stats(NULL, &bst) < 0);
   CHECK_ERR(cohmap_bo_get_stats(bo, NULL), -EINVAL);

   CHECK_ERR(cohmap_submit_begin(NULL, &s), -EINVAL);
   assert_null(s);
   CHECK_ERR(cohmap_submit_begin(dev, NULL), -EINVAL);
   CHECK_ERR(cohmap_submit_add_bo(NULL, bo, COHMAP_ACCESS_READ), -EINVAL);
   CHECK_ERR(cohmap_cmd_copy(NULL, bo, 0, bo, 0, 4), -EINVAL);
   CHECK_ERR(cohmap_cmd_fill(NULL, bo, 0, 4, 0), -EINVAL);
   CHECK_ERR(cohmap_cmd_write(NULL, bo, 0, "abcd", 4), -EINVAL);
   CHECK_ERR(cohmap_cmd_checksum(NULL, bo, 0, bo, 0, 4), -EINVAL);
   CHECK_ERR(
      cohmap_cmd_compute(NULL, COHMAP_COMPUTE_ADD32, bo, 0, bo, 0, 4, 1),
      -EINVAL);
   f = (struct cohmap_fence *)&f; /* must be cleared */
   CHECK_ERR(cohmap_submit_end(NULL, &f), -EINVAL);
   assert_null(f);
   CHECK_ERR(cohmap_submit_end(NULL, NULL), -EINVAL);
   CHECK_ERR(cohmap_fence_poll(NULL), -EINVAL);
   CHECK_ERR(cohmap_fence_wait(NULL, 0), -EINVAL);
   CHECK_ERR(cohmap_fence_wait(NULL, UINT64_MAX), -EINVAL);

   /* NULL BOs in a submission: each poisons it. */
   for (int i = 0; i < 8; i++) {
      CHECK_OK(cohmap_submit_begin(dev, &s));
      CHECK_OK(cohmap_submit_add_bo(
         s, bo, COHMAP_ACCESS_READ | COHMAP_ACCESS_WRITE));
      int rc = 0;
      const char *what = "";
      message_sentinel();
      switch (i) {
      case 0:
         what = "add_bo(NULL)";
         rc = cohmap_submit_add_bo(s, NULL, COHMAP_ACCESS_READ);
         break;
      case 1:
         what = "copy to NULL";
         rc = cohmap_cmd_copy(s, NULL, 0, bo, 0, 4);
         break;
      case 2:
         what = "copy from NULL";
         rc = cohmap_cmd_copy(s, bo, 0, NULL, 0, 4);
         break;
      case 3:
         what = "fill of NULL";
         rc = cohmap_cmd_fill(s, NULL, 0, 4, 0);
         break;
      case 4:
         what = "write to NULL";
         rc = cohmap_cmd_write(s, NULL, 0, "abcd", 4);
         break;
      case 5:
         what = "write of NULL data";
         rc = cohmap_cmd_write(s, bo, 0, NULL, 4);
         break;
      case 6:
         what = "checksum of NULL into NULL";
         rc = cohmap_cmd_checksum(s, NULL, 0, NULL, 0, 4);
         break;
      case 7:
         what = "compute with NULL source";
         rc =
            cohmap_cmd_compute(s, COHMAP_COMPUTE_XOR32, bo, 0, NULL, 0, 4, 1);
         break;
      }
      if (rc != -EINVAL) {
         fprintf(stderr, "%s: %s returned %d, expected -EINVAL\n", cur_name,
                 what, rc);
         fail();
      }
      check_new_message(what, __LINE__);
      CHECK_OK(cohmap_cmd_fill(s, bo, 0, 64, 0x12345678));
      f = NULL;
      CHECK_ERR(cohmap_submit_end(s, &f), -EINVAL);
      assert_null(f);
   }
   /* Unknown compute op. */
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(
      cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_READ | COHMAP_ACCESS_WRITE));
   CHECK_ERR(
      cohmap_cmd_compute(s, (enum cohmap_compute_op)99, bo, 0, bo, 0, 4, 1),
      -EINVAL);
   CHECK_ERR(cohmap_submit_end(s, NULL), -EINVAL);

   /* None of the refused fills ran. */
   CHECK_OK(cohmap_device_wait_idle(dev));
   uint8_t zero[4096] = {0};
   if (!same_bytes(cohmap_bo_map(bo), zero, sizeof(zero),
                   "mapping after refused submissions"))
      fail();
   expect_device(dev, bo, zero, sizeof(zero),
                 "device after refused submissions");

   /* Aborting a recorded submission releases its BO references and its
    * payloads (the device destroy below and the ASan leg check). */
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_cmd_write(s, bo, 0, "abcdefgh", 8));
   CHECK_OK(cohmap_cmd_fill(s, bo, 0, 64, 0x12345678));
   cohmap_submit_abort(s);

   /* A submission without a fence, and an empty one. */
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_cmd_fill(s, bo, 0, 64, 0x12345678));
   CHECK_OK(cohmap_submit_end(s, NULL));
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(ws_submit_wait(s));
   CHECK_OK(cohmap_device_wait_idle(dev));
   assert_int_equal(((uint8_t *)cohmap_bo_map(bo))[0], 0x78);

   /* cohmap_checksum of nothing is FNV-1a's offset basis, NULL or not. */
   assert_true(cohmap_checksum(NULL, 0) == 0xcbf29ce484222325ull);
   assert_true(cohmap_checksum("", 0) == 0xcbf29ce484222325ull);
   assert_true(cohmap_checksum("a", 1) == 0xaf63dc4c8601ec8cull);
   assert_non_null(cohmap_error_message());

   /* device_create with NULL options uses the defaults. */
   CHECK_OK(cohmap_device_create(NULL, &dout));
   assert_non_null(dout);
   CHECK_OK(cohmap_device_destroy(dout));

   tu_unmap(mem, ps);
   CHECK_OK(cohmap_bo_destroy(bo));
   CHECK_OK(cohmap_device_destroy(dev));
}

/* --- device options ---------------------------------------------------- */

static void
test_device_options(void **state)
{
   (void)state;
   cur_name = "device options";
   struct cohmap_device_options opts;
   struct cohmap_device *dev;

   cohmap_device_options_init(&opts);
   opts.backend = "no-such-gpu";
   dev = NULL;
   message_sentinel();
   CHECK_RC(cohmap_device_create(&opts, &dev) < 0, 1);
   check_new_message("an unknown backend", __LINE__);
   assert_null(dev);

   cohmap_device_options_init(&opts);
   opts.method = (enum cohmap_method)COHMAP_METHOD_COUNT;
   CHECK_ERR(cohmap_device_create(&opts, &dev), -EINVAL);
   assert_null(dev);
   opts.method = (enum cohmap_method) - 1;
   CHECK_ERR(cohmap_device_create(&opts, &dev), -EINVAL);
   assert_null(dev);
}

/* --- another device's BOs ---------------------------------------------- */

static void
test_foreign(void **state)
{
   const struct variant *v = *state;
   struct world w;
   world_init(&w, v);
   struct cohmap_device *dev2 = ws_device_create(v->method, 0);
   assert_non_null(dev2);
   struct cohmap_bo *other =
      bo_new(dev2, 4096, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
   struct cohmap_bo *other_nc = bo_new(dev2, 4096, COHMAP_BO_GPU_WRITE);
   memset(cohmap_bo_map(other), 0x5e, 4096);
   struct cohmap_device_stats st2 = dev_stats(dev2);

   world_scribble(&w);
   struct cohmap_submit *s = world_begin(&w);
   CHECK_ERR(cohmap_submit_add_bo(s, other,
                                  COHMAP_ACCESS_READ | COHMAP_ACCESS_WRITE),
             -EINVAL);
   CHECK_OK(cohmap_cmd_fill(s, w.bo[NC], 0, 64, 1));
   expect_refused(&w, s, "another device's BO in the list");

   const char *what[] = {
      "copy into another device's BO", "copy from another device's BO",
      "fill of another device's BO", "checksum of another device's BO"};
   for (int i = 0; i < 4; i++) {
      world_scribble(&w);
      s = world_begin(&w);
      int rc = 0;
      message_sentinel();
      switch (i) {
      case 0:
         rc = cohmap_cmd_copy(s, other, 0, w.bo[COH], 0, 64);
         break;
      case 1:
         rc = cohmap_cmd_copy(s, w.bo[COH], 0, other_nc, 0, 64);
         break;
      case 2:
         rc = cohmap_cmd_fill(s, other, 0, 64, 7);
         break;
      case 3:
         rc = cohmap_cmd_checksum(s, w.bo[COH], 0, other, 0, 64);
         break;
      }
      expect_record(rc, false, what[i]);
      expect_refused(&w, s, what[i]);
   }

   /* A submission on dev2 with a BO of the first device. */
   CHECK_OK(cohmap_submit_begin(dev2, &s));
   CHECK_OK(cohmap_submit_add_bo(s, other, COHMAP_ACCESS_WRITE));
   int rc = cohmap_cmd_copy(s, other, 0, w.bo[COH], 0, 64);
   expect_record(rc, false, "dev2: copy from the first device's BO");
   message_sentinel();
   CHECK_RC(cohmap_submit_end(s, NULL), -EINVAL);
   check_new_message("dev2 submission", __LINE__);

   /* Neither device uploaded anything for the refused work; dev2's BO
    * still has its pending CPU bytes, which reach its device now. */
   struct cohmap_device_stats st2_after = dev_stats(dev2);
   CHECK_U64(st2_after.bytes_uploaded - st2.bytes_uploaded, 0,
             "dev2 bytes uploaded");
   CHECK_U64(st2_after.submissions - st2.submissions, 0, "dev2 submissions");
   uint8_t want[4096];
   memset(want, 0x5e, sizeof(want));
   expect_device(dev2, other, want, sizeof(want), "dev2 BO");
   CHECK_OK(cohmap_bo_destroy(other));
   CHECK_OK(cohmap_bo_destroy(other_nc));
   CHECK_OK(cohmap_device_destroy(dev2));

   world_verify(&w, "after foreign BOs");
   world_fini(&w);
}

/* --- destroying BOs in use --------------------------------------------- */

static struct cohmap_device *
slow_device(enum cohmap_method m, const char *exec_us)
{
   /* The sim reads its knobs when the device is created. */
   setenv("COHMAP_SIM_EXEC_US", exec_us, 1);
   struct cohmap_device *dev = ws_device_create(m, 0);
   unsetenv("COHMAP_SIM_EXEC_US");
   assert_non_null(dev);
   return dev;
}

static void
test_destroy_in_flight(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   struct cohmap_device *dev = slow_device(v->method, "5000");
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for(v->name));

   /* Sources (read, then destroyed before the GPU reads them), written
    * BOs destroyed before the GPU writes them, and survivors. */
   const size_t sizes[] = {1000, 64 * 1024};
   for (size_t k = 0; k < TU_ARRAY_SIZE(sizes); k++) {
      const size_t size = sizes[k];
      struct cohmap_bo *src = bo_new(dev, size, COHMAP_BO_COHERENT);
      struct cohmap_bo *src_nc = bo_new(dev, size, 0);
      struct cohmap_bo *gone =
         bo_new(dev, size, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
      struct cohmap_bo *gone_nc = bo_new(dev, size, COHMAP_BO_GPU_WRITE);
      struct cohmap_bo *dst =
         bo_new(dev, 2 * size + 8, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
      uint8_t *data = malloc(size), *data_nc = malloc(size);
      assert_non_null(data);
      assert_non_null(data_nc);
      tu_rng_fill(&rng, data, size);
      tu_rng_fill(&rng, data_nc, size);
      memcpy(cohmap_bo_map(src), data, size);
      memcpy(cohmap_bo_map(src_nc), data_nc, size);
      CHECK_OK(cohmap_bo_flush(src_nc, 0, size));

      struct cohmap_submit *s = NULL;
      struct cohmap_fence *f = NULL;
      CHECK_OK(cohmap_submit_begin(dev, &s));
      CHECK_OK(cohmap_submit_add_bo(s, src, COHMAP_ACCESS_READ));
      CHECK_OK(cohmap_submit_add_bo(s, src_nc, COHMAP_ACCESS_READ));
      CHECK_OK(cohmap_submit_add_bo(s, gone, COHMAP_ACCESS_WRITE));
      CHECK_OK(cohmap_submit_add_bo(s, gone_nc, COHMAP_ACCESS_WRITE));
      CHECK_OK(cohmap_submit_add_bo(s, dst, COHMAP_ACCESS_WRITE));
      CHECK_OK(cohmap_cmd_fill(s, gone, 0, size & ~(size_t)3, 0xabababab));
      CHECK_OK(cohmap_cmd_fill(s, gone_nc, 0, size & ~(size_t)3, 0xcd));
      CHECK_OK(cohmap_cmd_copy(s, dst, 0, src, 0, size));
      CHECK_OK(cohmap_cmd_copy(s, dst, size, src_nc, 0, size));
      CHECK_OK(cohmap_cmd_checksum(s, dst, 2 * size, src, 0, size));
      CHECK_OK(cohmap_submit_end(s, &f));

      /* 5 ms of simulated execution: all of this almost certainly
       * happens before it (if not, the test proves less, but cannot fail
       * wrongly). */
      CHECK_OK(cohmap_bo_destroy(src));
      CHECK_OK(cohmap_bo_destroy(src_nc));
      CHECK_OK(cohmap_bo_destroy(gone));
      CHECK_OK(cohmap_bo_destroy(gone_nc));
      CHECK_U64(dev_stats(dev).bos, 1, "live BOs after the destroys");

      /* New BOs of the same kinds may take the released slots, but not
       * before the submission is done with them: they read as zero on
       * both sides, during and after it. */
      struct cohmap_bo *fresh =
         bo_new(dev, size, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
      struct cohmap_bo *fresh_ro = bo_new(dev, size, COHMAP_BO_COHERENT);

      CHECK_OK(cohmap_fence_wait(f, UINT64_MAX));
      cohmap_fence_destroy(f);

      uint8_t *want = calloc(1, 2 * size + 8);
      assert_non_null(want);
      memcpy(want, data, size);
      memcpy(want + size, data_nc, size);
      uint64_t sum = cohmap_checksum(data, size);
      for (int i = 0; i < 8; i++)
         want[2 * size + i] = (uint8_t)(sum >> (8 * i));
      if (!same_bytes(cohmap_bo_map(dst), want, 2 * size + 8,
                      "results of a submission whose other BOs were "
                      "destroyed"))
         fail();
      expect_device(dev, dst, want, 2 * size + 8, "device copy of dst");

      uint8_t *zero = calloc(1, size);
      assert_non_null(zero);
      struct cohmap_bo *fr[] = {fresh, fresh_ro};
      for (int i = 0; i < 2; i++) {
         if (!same_bytes(cohmap_bo_map(fr[i]), zero, size,
                         "mapping of a BO created after a destroy"))
            fail();
         expect_device(dev, fr[i], zero, size,
                       "device copy of a BO created after a destroy");
      }
      /* And once more after everything retired: a slot reused now. */
      struct cohmap_bo *later =
         bo_new(dev, size, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
      if (!same_bytes(cohmap_bo_map(later), zero, size,
                      "mapping of a BO created after retirement"))
         fail();
      expect_device(dev, later, zero, size,
                    "device copy of a BO created after retirement");

      free(zero);
      free(want);
      free(data);
      free(data_nc);
      CHECK_OK(cohmap_bo_destroy(later));
      CHECK_OK(cohmap_bo_destroy(fresh));
      CHECK_OK(cohmap_bo_destroy(fresh_ro));
      CHECK_OK(cohmap_bo_destroy(dst));
   }

   /* A BO destroyed while listed in a submission being recorded: the
    * submission is refused, or submitted without it (its writes
    * dropped); either way the other results are right. */
   struct cohmap_bo *a =
      bo_new(dev, 4096, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
   struct cohmap_bo *b =
      bo_new(dev, 4096, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
   struct cohmap_submit *s = NULL;
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(cohmap_submit_add_bo(s, a, COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_submit_add_bo(s, b, COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_cmd_fill(s, a, 0, 4096, 0x01010101));
   CHECK_OK(cohmap_cmd_fill(s, b, 0, 4096, 0x02020202));
   CHECK_OK(cohmap_bo_destroy(a));
   int rc = ws_submit_wait(s);
   assert_true(rc == 0 || rc == -EINVAL);
   uint8_t want[4096];
   memset(want, rc == 0 ? 0x02 : 0, sizeof(want));
   if (!same_bytes(cohmap_bo_map(b), want, sizeof(want),
                   "the other BO of a submission with a destroyed BO"))
      fail();
   CHECK_OK(cohmap_bo_destroy(b));

   /* Destroying the device waits for what is still running. */
   a = bo_new(dev, 64 * 1024, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(cohmap_submit_add_bo(s, a, COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_cmd_fill(s, a, 0, 64 * 1024, 0x03030303));
   CHECK_OK(cohmap_submit_end(s, NULL));
   CHECK_OK(cohmap_bo_destroy(a));
   CHECK_OK(cohmap_device_destroy(dev));
}

/* --- busy devices ------------------------------------------------------ */

static void
test_busy(void **state)
{
   const struct variant *v = *state;
   if (!method_usable(v))
      skip();
   /* 500 ms per submission: long enough that a zero-timeout wait right
    * after submitting cannot find it done, even on a loaded machine.
    * Two submissions in all, to keep the test short. */
   struct cohmap_device *dev = slow_device(v->method, "500000");
   struct cohmap_bo *bo =
      bo_new(dev, 4096, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
   struct cohmap_bo *nc = bo_new(dev, 4096, COHMAP_BO_GPU_WRITE);
   uint8_t *cpu = cohmap_bo_map(bo);

   struct cohmap_submit *s = NULL;
   struct cohmap_fence *f = NULL;
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_cmd_fill(s, bo, 0, 4096, 0x0f0f0f0f));
   CHECK_OK(cohmap_submit_end(s, &f));

   CHECK_RC(cohmap_fence_wait(f, 0), -ETIME);
   CHECK_RC(cohmap_fence_wait(f, 1000), -ETIME);
   CHECK_RC(cohmap_fence_poll(f), -EBUSY);
   assert_int_equal(cpu[0], 0);

   /* Live BOs: -EBUSY, and nothing was freed. */
   message_sentinel();
   CHECK_RC(cohmap_device_destroy(dev), -EBUSY);
   check_new_message("cohmap_device_destroy with live BOs", __LINE__);
   CHECK_OK(cohmap_fence_wait(f, UINT64_MAX));
   assert_int_equal(cpu[0], 0x0f);
   assert_int_equal(cpu[4095], 0x0f);

   /* Only a fence left: still -EBUSY. */
   CHECK_OK(cohmap_bo_destroy(bo));
   CHECK_OK(cohmap_bo_destroy(nc));
   message_sentinel();
   CHECK_RC(cohmap_device_destroy(dev), -EBUSY);
   check_new_message("cohmap_device_destroy with a live fence", __LINE__);
   CHECK_OK(cohmap_fence_poll(f));
   CHECK_OK(cohmap_fence_wait(f, 0));
   cohmap_fence_destroy(f);

   /* The device still works after the refused destroys: new BOs, a
    * submission reading one and writing the other. */
   bo = bo_new(dev, 4096, COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE);
   nc = bo_new(dev, 4096, 0);
   cpu = cohmap_bo_map(bo);
   memset(cpu, 0x0f, 4096);
   memset(cohmap_bo_map(nc), 0x42, 4096);
   CHECK_OK(cohmap_bo_flush(nc, 0, 4096));
   CHECK_OK(cohmap_submit_begin(dev, &s));
   CHECK_OK(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_WRITE));
   CHECK_OK(cohmap_submit_add_bo(s, nc, COHMAP_ACCESS_READ));
   CHECK_OK(cohmap_cmd_copy(s, bo, 100, nc, 0, 100));
   CHECK_OK(ws_submit_wait(s));
   uint8_t want[4096];
   memset(want, 0x0f, sizeof(want));
   memset(want + 100, 0x42, 100);
   if (!same_bytes(cpu, want, sizeof(want), "after two refused destroys"))
      fail();
   CHECK_RC(cohmap_device_destroy(dev), -EBUSY);
   CHECK_OK(cohmap_bo_destroy(bo));
   CHECK_OK(cohmap_bo_destroy(nc));
   CHECK_OK(cohmap_device_destroy(dev));
}

/* --- COHMAP_SIM_* ------------------------------------------------------ */

static void
test_sim_env(void **state)
{
   (void)state;
   cur_name = "sim environment";
   static const char *const vars[] = {
      "COHMAP_SIM_LATENCY_US",
      "COHMAP_SIM_BANDWIDTH_MBPS",
      "COHMAP_SIM_EXEC_US",
   };
   static const char *const values[] = {
      "abc",
      "-1",
      "99999999999999999999999",
      "18446744073709551616",
      "12abc",
      "0x10",
      "1.5",
      " 5",
   };

   for (size_t i = 0; i < TU_ARRAY_SIZE(vars); i++) {
      for (size_t j = 0; j < TU_ARRAY_SIZE(values); j++) {
         setenv(vars[i], values[j], 1);
         struct cohmap_device *dev = NULL;
         int rc = cohmap_device_create(NULL, &dev);
         const char *msg = cohmap_error_message();
         bool named = msg && strstr(msg, vars[i]);
         unsetenv(vars[i]);
         if (rc != -EINVAL || dev || !named) {
            fprintf(stderr,
                    "%s=\"%s\": cohmap_device_create returned %d "
                    "(expected -EINVAL), device %p, message \"%s\" (must "
                    "name the variable)\n",
                    vars[i], values[j], rc, (void *)dev,
                    msg ? msg : "(null)");
            cohmap_device_destroy(dev);
            fail();
         }
      }
      /* Valid values are accepted. */
      setenv(vars[i], "0", 1);
      struct cohmap_device *dev = NULL;
      int rc = cohmap_device_create(NULL, &dev);
      unsetenv(vars[i]);
      CHECK_OK(rc);
      CHECK_OK(cohmap_device_destroy(dev));
   }
}

int
main(int argc, char **argv)
{
   for (int i = 1; i < argc; i++) {
      if (strcmp(argv[i], "--slow") != 0) {
         fprintf(stderr, "usage: %s [--slow]\n", argv[0]);
         return 1;
      }
   }

   static struct variant variants[TU_METHODS_COUNT];
   static const struct {
      const char *name;
      CMUnitTestFunction fn;
   } cases[] = {
      {"buffer-list", test_buffer_list},
      {"ranges", test_ranges},
      {"bo-args", test_bo_args},
      {"null", test_null},
      {"foreign", test_foreign},
      {"destroy-in-flight", test_destroy_in_flight},
      {"busy", test_busy},
   };
   static struct CMUnitTest
      tests[TU_ARRAY_SIZE(cases) * TU_METHODS_COUNT + 2];
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
   tests[nt++] = (struct CMUnitTest){"device-options", test_device_options,
                                     NULL, NULL, NULL};
   tests[nt++] =
      (struct CMUnitTest){"sim-env", test_sim_env, NULL, NULL, NULL};
   for (size_t c = 0; c < TU_ARRAY_SIZE(cases); c++) {
      for (size_t i = 0; i < TU_METHODS_COUNT; i++) {
         snprintf(names[nt], sizeof(names[nt]), "%s %s", cases[c].name,
                  variants[i].name);
         tests[nt] = (struct CMUnitTest){names[nt], cases[c].fn, NULL, NULL,
                                         &variants[i]};
         nt++;
      }
   }
   return _cmocka_run_group_tests("winsys-badinput", tests, nt, NULL, NULL);
}
