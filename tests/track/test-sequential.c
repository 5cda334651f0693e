/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * scan's sequential-writer prediction (src/track/scan.c, "Sequential
 * writers"): once a region's written pages continue the previous
 * collect's run, the span predicted next is un-protected ahead of the
 * writer.  These tests check that it happens (the span reads as written
 * in the kernel's page table before anything is stored to it), and that
 * no path around it loses a write or reports a byte that did not change:
 * a writer that stops, jumps elsewhere, writes part of the span, rewrites
 * equal bytes, writes through the kernel (read(2)), wraps round the ring,
 * or whose region changes method; and a writer thread streaming while
 * another thread collects.  After every single-threaded collect the
 * mirror (what a device was given) must equal the memory exactly.
 *
 * Regions are scan + COHMAP_REGION_BYTE_EXACT: the prediction is made
 * only with a snapshot.  Skipped (77) where scan does not work here.
 */

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cmocka.h>

#include "test-util.h"
#include "track/track_priv.h"
#include "track/uapi.h"

#define REGION_BYTES (4u << 20)
#define SPAN         (64u * 1024)

struct fixture {
   struct cohmap_context *ctx;
   struct cohmap_region *r;
   uint8_t *mem;
   uint8_t *mirror;
   size_t size, page;
   struct tu_rng rng;
};

static bool
fixture_init(struct fixture *f, const char *what)
{
   memset(f, 0, sizeof(*f));
   f->page = tu_page_size();
   f->size = REGION_BYTES;
   f->ctx = tu_context_create(0, 0);
   if (!f->ctx)
      return false;
   bool fatal;
   if (!tu_method_available(f->ctx, COHMAP_METHOD_SCAN, &fatal)) {
      cohmap_context_destroy(f->ctx);
      return false;
   }
   if (cohmap_region_create(f->ctx, f->size, COHMAP_METHOD_SCAN,
                            COHMAP_REGION_BYTE_EXACT, &f->r)) {
      print_error("region: %s\n", cohmap_error_message());
      cohmap_context_destroy(f->ctx);
      return false;
   }
   f->mem = cohmap_region_ptr(f->r);
   f->mirror = calloc(1, f->size);
   assert_non_null(f->mirror);
   tu_rng_seed(&f->rng, tu_seed_for(what));
   return true;
}

static void
fixture_fini(struct fixture *f)
{
   cohmap_region_destroy(f->r);
   cohmap_context_destroy(f->ctx);
   free(f->mirror);
}

/* Collects, applies the result to the mirror and checks mirror ==
 * memory; returns the number of bytes reported. */
static size_t
collect_check(struct fixture *f, const char *what)
{
   struct cohmap_dirty d;
   assert_int_equal(cohmap_region_collect(f->r, 0, &d), 0);
   assert_true(tu_check_dirty_sorted_coalesced(&d, f->size, what));
   tu_apply_dirty(f->mirror, &d);
   assert_true(tu_mirror_matches(f->mirror, f->mem, f->size, what));
   return d.bytes;
}

/* Writes len bytes at off, each different from what the mirror holds. */
static void
write_fresh(struct fixture *f, size_t off, size_t len)
{
   for (size_t i = 0; i < len; i++)
      f->mem[off + i] =
         (uint8_t)(f->mirror[off + i] ^ (1 + tu_rng_below(&f->rng, 255)));
}

/* Pages of [off, off + len) that read as written (not write-protected)
 * in the page table, asked of PAGEMAP_SCAN without re-arming anything. */
static size_t
written_pages(struct fixture *f, size_t off, size_t len)
{
   struct page_region vec[64];
   struct pm_scan_arg arg = {
      .size = sizeof(arg),
      .start = (uintptr_t)f->mem + off,
      .end = (uintptr_t)f->mem + off + len,
      .vec = (uintptr_t)vec,
      .vec_len = 64,
      .category_mask = PAGE_IS_WRITTEN,
      .return_mask = PAGE_IS_WRITTEN,
   };
   long n = ioctl(f->r->ctx->pagemap_fd, PAGEMAP_SCAN, &arg);
   assert_true(n >= 0);
   size_t pages = 0;
   for (long i = 0; i < n; i++)
      pages += (vec[i].end - vec[i].start) / f->page;
   return pages;
}

/* Streams frames of len bytes from off; returns where the next would
 * start. */
static size_t
stream(struct fixture *f, size_t off, size_t len, int frames)
{
   for (int i = 0; i < frames; i++) {
      write_fresh(f, off, len);
      collect_check(f, "stream");
      off += len;
   }
   return off;
}

static void
test_opens_ahead(void **state)
{
   (void)state;
   struct fixture f;
   if (!fixture_init(&f, "opens_ahead"))
      skip();
   /* Whole-page frames, then frames that end mid-page (the next frame
    * starts in the previous one's last page). */
   size_t off = stream(&f, 0, SPAN, 4);
   assert_true(f.r->seq_opened >= 2 * SPAN / f.page);
   assert_int_equal(written_pages(&f, off, SPAN), SPAN / f.page);
   /* The page after the span is still protected. */
   assert_int_equal(written_pages(&f, off + SPAN, f.page), 0);

   uint64_t before = f.r->seq_opened;
   off = stream(&f, 2 * SPAN * 4, 5000, 8);
   assert_true(f.r->seq_opened > before);
   fixture_fini(&f);
}

static void
test_idle_writer(void **state)
{
   (void)state;
   struct fixture f;
   if (!fixture_init(&f, "idle"))
      skip();
   stream(&f, 0, SPAN, 4);
   /* Opened pages that nobody wrote are not reported, and the span is
    * opened again only SEQ_IDLE_MAX (3) times. */
   uint64_t opened = f.r->seq_opened;
   for (int i = 0; i < 6; i++)
      assert_int_equal(collect_check(&f, "idle"), 0);
   assert_int_equal(f.r->seq_opened, opened + 3 * SPAN / f.page);
   assert_int_equal(written_pages(&f, 4 * SPAN, SPAN), 0);
   fixture_fini(&f);
}

static void
test_writer_leaves(void **state)
{
   (void)state;
   struct fixture f;
   if (!fixture_init(&f, "leaves"))
      skip();
   size_t off = stream(&f, 0, SPAN, 4);

   /* Jumps elsewhere: reported, the opened span is not. */
   write_fresh(&f, 3u << 20, 100);
   assert_int_equal(collect_check(&f, "jump"), 100);

   /* Half of the predicted span, then the other half. */
   off = stream(&f, off + SPAN, SPAN, 3);
   write_fresh(&f, off, SPAN / 2);
   collect_check(&f, "half");
   write_fresh(&f, off + SPAN / 2, SPAN / 2);
   collect_check(&f, "other half");

   /* Equal bytes over the span (nothing to report), then one change in
    * its last byte. */
   off = stream(&f, off + SPAN, SPAN, 3);
   memcpy(f.mem + off, f.mirror + off, SPAN);
   assert_int_equal(collect_check(&f, "equal"), 0);
   f.mem[off + SPAN - 1] ^= 0x55;
   assert_int_equal(collect_check(&f, "one byte"), 1);
   fixture_fini(&f);
}

static void
test_kernel_writes(void **state)
{
   (void)state;
   struct fixture f;
   if (!fixture_init(&f, "kernel"))
      skip();
   size_t off = stream(&f, 0, SPAN, 4);
   int p[2];
   assert_int_equal(pipe(p), 0);
   uint8_t buf[3000];
   tu_rng_fill(&f.rng, buf, sizeof(buf));
   buf[0] = (uint8_t)(f.mirror[off + 10] + 1);
   buf[sizeof(buf) - 1] = (uint8_t)(f.mirror[off + 10 + sizeof(buf) - 1] + 1);
   /* Into the opened span, and across a protected page boundary. */
   assert_int_equal(write(p[1], buf, sizeof(buf)), (ssize_t)sizeof(buf));
   assert_int_equal(read(p[0], f.mem + off + 10, sizeof(buf)),
                    (ssize_t)sizeof(buf));
   buf[0] = (uint8_t)(f.mirror[(2u << 20) - 7] + 1);
   buf[sizeof(buf) - 1] =
      (uint8_t)(f.mirror[(2u << 20) - 7 + sizeof(buf) - 1] + 1);
   assert_int_equal(write(p[1], buf, sizeof(buf)), (ssize_t)sizeof(buf));
   assert_int_equal(read(p[0], f.mem + (2u << 20) - 7, sizeof(buf)),
                    (ssize_t)sizeof(buf));
   collect_check(&f, "read(2)");
   close(p[0]);
   close(p[1]);
   fixture_fini(&f);
}

static void
test_wrap_and_switch(void **state)
{
   (void)state;
   struct fixture f;
   if (!fixture_init(&f, "wrap"))
      skip();
   /* Up to the region's end (nothing is opened past it), then round. */
   size_t off = stream(&f, f.size - 4 * SPAN, SPAN, 4);
   assert_int_equal(off, f.size);
   off = stream(&f, 0, SPAN, 4);
   assert_int_equal(written_pages(&f, off, SPAN), SPAN / f.page);

   /* A method switch away and back starts over, and loses nothing. */
   write_fresh(&f, off, 10);
   assert_int_equal(cohmap_region_set_method(f.r, COHMAP_METHOD_COMPARE), 0);
   write_fresh(&f, off + 20, 10);
   assert_int_equal(cohmap_region_set_method(f.r, COHMAP_METHOD_SCAN), 0);
   assert_int_equal(f.r->seq_end, 0);
   write_fresh(&f, off + 40, 10);
   collect_check(&f, "switched");
   assert_int_equal(written_pages(&f, off + SPAN, SPAN), 0);
   fixture_fini(&f);
}

/* A writer thread streams 8-byte sequence numbers round the ring, a
 * 16 KiB frame each time the main thread starts a collect, which waits
 * until the frame has begun, so that its stores race with that collect while
 * each collect's run continues the previous one (spans are opened ahead of
 * it).  The mirror must equal the memory at the end. */
struct streamer {
   struct fixture *f;
   uint64_t started; /* collects started (atomic) */
   uint64_t begun;   /* frames the writer began (atomic) */
   int stop;         /* atomic */
   uint64_t frames;
};

static void *
streamer_main(void *arg)
{
   struct streamer *s = arg;
   uint64_t *words = (uint64_t *)s->f->mem;
   size_t n = s->f->size / sizeof(uint64_t);
   uint64_t seq = 1;
   size_t at = 0;
   while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
      if (__atomic_load_n(&s->started, __ATOMIC_ACQUIRE) <= s->frames) {
         sched_yield();
         continue;
      }
      __atomic_store_n(&s->begun, s->frames + 1, __ATOMIC_RELEASE);
      for (size_t i = 0; i < 2048; i++) {
         __atomic_store_n(&words[at], seq++, __ATOMIC_RELAXED);
         at = (at + 1) % n;
      }
      s->frames++;
   }
   return NULL;
}

static void
test_concurrent(void **state)
{
   (void)state;
   struct fixture f;
   if (!fixture_init(&f, "concurrent"))
      skip();
   struct streamer s = {.f = &f};
   pthread_t th;
   assert_int_equal(pthread_create(&th, NULL, streamer_main, &s), 0);
   double end = tu_now() + 1.0;
   while (tu_now() < end) {
      uint64_t k = __atomic_add_fetch(&s.started, 1, __ATOMIC_RELEASE);
      /* Lockstep, so that scheduling cannot make most collects idle. */
      while (__atomic_load_n(&s.begun, __ATOMIC_ACQUIRE) < k)
         sched_yield();
      struct cohmap_dirty d;
      assert_int_equal(cohmap_region_collect(f.r, 0, &d), 0);
      tu_apply_dirty(f.mirror, &d);
   }
   __atomic_store_n(&s.stop, 1, __ATOMIC_RELEASE);
   pthread_join(th, NULL);
   collect_check(&f, "after the writer stopped");
   print_message("# %llu frames, %llu pages opened ahead\n",
                 (unsigned long long)s.frames,
                 (unsigned long long)f.r->seq_opened);
   assert_true(f.r->seq_opened > 0);
   fixture_fini(&f);
}

int
main(void)
{
   /* Everything here is scan: without it nothing runs (77, not a pass). */
   struct cohmap_context *ctx = tu_context_create(0, 0);
   bool fatal = false;
   bool have_scan =
      ctx && tu_method_available(ctx, COHMAP_METHOD_SCAN, &fatal);
   if (ctx)
      cohmap_context_destroy(ctx);
   if (!have_scan) {
      printf("# SKIP: the scan method does not work here\n");
      return ctx ? 77 : 1;
   }

   const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_opens_ahead),
      cmocka_unit_test(test_idle_writer),
      cmocka_unit_test(test_writer_leaves),
      cmocka_unit_test(test_kernel_writes),
      cmocka_unit_test(test_wrap_and_switch),
      cmocka_unit_test(test_concurrent),
   };
   return cmocka_run_group_tests_name("sequential", tests, NULL, NULL);
}
