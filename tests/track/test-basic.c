/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Hand-written write patterns with exactly known answers, for every method
 * with and without COHMAP_REGION_BYTE_EXACT, on memory cohmap allocates and
 * on memory the test maps and wraps.  Each step writes, collects, compares
 * the ranges with the answer written out here (independently of the model
 * oracle, which then checks the same collect again), and copies the
 * reported bytes into a mirror that must then equal the memory.
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

#include "test-util.h"

#define REGION_PAGES 64

struct variant {
   enum cohmap_method method;
   uint32_t flags;
   bool wrap;
   char name[64];
};

struct fixture {
   const struct variant *v;
   struct cohmap_context *ctx;
   struct cohmap_region *region;
   uint8_t *wrapped; /* the test's own mapping, or NULL */
   size_t size;
   size_t page;
   struct tu_model model;
   struct tu_expect expect;

   /* What the statistics must add up to. */
   uint64_t collects;
   uint64_t bytes;
   uint64_t pages;
   uint64_t written_pages; /* fault: one fault per page per round */
};

static bool
fixture_init(struct fixture *f, const struct variant *v, uint32_t flags,
             uint64_t seed)
{
   memset(f, 0, sizeof(*f));
   f->v = v;
   f->page = tu_page_size();
   f->size = REGION_PAGES * f->page;

   /* No fault widening: this test wants exactly the written pages. */
   f->ctx = tu_context_create(1, 0);
   if (!f->ctx)
      return false;

   bool fatal;
   if (!tu_method_available(f->ctx, v->method, &fatal)) {
      cohmap_context_destroy(f->ctx);
      if (fatal)
         fail();
      skip();
   }

   int ret;
   if (v->wrap) {
      f->wrapped = tu_map(f->size, 0, false);
      if (!f->wrapped)
         return false;
      /* Contents the device already has (unless INITIAL_DIRTY): they
       * must not be reported, and the snapshot must start from them. */
      struct tu_rng rng;
      tu_rng_seed(&rng, seed);
      tu_rng_fill(&rng, f->wrapped, f->size);
      ret = cohmap_region_wrap(f->ctx, f->wrapped, f->size, v->method,
                               v->flags | flags, &f->region);
   } else {
      ret = cohmap_region_create(f->ctx, f->size, v->method,
                                 v->flags | flags, &f->region);
   }
   if (ret) {
      fprintf(stderr, "%s: region: %s (%s)\n", v->name, strerror(-ret),
              cohmap_error_message());
      return false;
   }
   if (v->wrap && cohmap_region_ptr(f->region) != f->wrapped) {
      fprintf(stderr, "%s: wrapped region does not use the given memory\n",
              v->name);
      return false;
   }
   if (!tu_model_init(&f->model, cohmap_region_ptr(f->region), f->size))
      return false;
   f->expect = tu_expect_for(v->method, v->flags, 1, false);
   return true;
}

static void
fixture_fini(struct fixture *f)
{
   assert_int_equal(cohmap_region_destroy(f->region), 0);
   if (f->wrapped) {
      /* Tracking ended: the memory is plain read-write memory again (a
       * left-over protection would kill the test here). */
      for (size_t i = 0; i < f->size; i += 97)
         f->wrapped[i] = (uint8_t)i;
      tu_unmap(f->wrapped, f->size);
   }
   tu_model_fini(&f->model);
   assert_int_equal(cohmap_context_destroy(f->ctx), 0);
}

/* Sorts expected byte runs and merges touching ones, as collect must. */
static size_t
normalize(struct cohmap_range *v, size_t n)
{
   for (size_t i = 1; i < n; i++) {
      struct cohmap_range x = v[i];
      size_t j = i;
      while (j > 0 && v[j - 1].offset > x.offset) {
         v[j] = v[j - 1];
         j--;
      }
      v[j] = x;
   }
   size_t out = 0;
   for (size_t i = 0; i < n; i++) {
      if (out && v[out - 1].offset + v[out - 1].length >= v[i].offset) {
         size_t end = v[i].offset + v[i].length;
         if (end > v[out - 1].offset + v[out - 1].length)
            v[out - 1].length = end - v[out - 1].offset;
      } else {
         v[out++] = v[i];
      }
   }
   return out;
}

/*
 * Collects and checks against the answer: changed lists the bytes that
 * changed value, written_only the bytes stored with their old value.  A
 * page method reports the pages of both, an exact one only the changed
 * bytes, full everything.
 */
static void
collect_expect(struct fixture *f, const char *step,
               const struct cohmap_range *changed, size_t nchanged,
               const struct cohmap_range *written_only, size_t nwritten)
{
   char what[160];
   snprintf(what, sizeof(what), "%s: %s", f->v->name, step);

   struct cohmap_range *want =
      calloc(nchanged + nwritten + 1, sizeof(*want));
   assert_non_null(want);
   size_t n = 0;

   switch (f->expect.kind) {
   case TU_EXPECT_WHOLE:
      want[n++] = (struct cohmap_range){0, f->size};
      break;
   case TU_EXPECT_EXACT:
      if (nchanged)
         memcpy(want, changed, nchanged * sizeof(*want));
      n = normalize(want, nchanged);
      n = tu_chunk_runs(want, n, f->expect.chunk, f->size);
      break;
   default:
      for (size_t i = 0; i < nchanged + nwritten; i++) {
         const struct cohmap_range *r =
            i < nchanged ? &changed[i] : &written_only[i - nchanged];
         size_t start = r->offset / f->page * f->page;
         size_t end = (r->offset + r->length + f->page - 1) / f->page *
                      f->page;
         want[n++] = (struct cohmap_range){start, end - start};
      }
      n = normalize(want, n);
      break;
   }

   struct cohmap_dirty d;
   int ret = cohmap_region_collect(f->region, 0, &d);
   if (ret)
      fprintf(stderr, "%s: collect: %s\n", what, strerror(-ret));
   assert_int_equal(ret, 0);
   f->collects++;
   f->bytes += d.bytes;
   f->pages += tu_dirty_pages(&d);
   f->written_pages += f->model.pages_written;

   bool ok = tu_dirty_equals(&d, want, n, what);
   free(want);
   assert_true(ok);
   /* The oracle checks the same collect again and updates the mirror. */
   assert_true(tu_model_collected(&f->model, &d, &f->expect, what));
}

static void
collect_expect_empty(struct fixture *f, const char *step)
{
   collect_expect(f, step, NULL, 0, NULL, 0);
}

/* Bumps the byte at off and returns its range. */
static struct cohmap_range
bump(struct fixture *f, size_t off, size_t len)
{
   tu_model_bump(&f->model, off, len);
   return (struct cohmap_range){off, len};
}

static void
check_stats(struct fixture *f)
{
   struct cohmap_region_stats st;
   assert_int_equal(cohmap_region_get_stats(f->region, &st), 0);
   assert_int_equal(st.collects, f->collects);
   assert_int_equal(st.bytes_reported, f->bytes);
   assert_int_equal(st.pages_reported, f->pages);
   assert_int_equal(st.method_switches, 0);
   if (f->v->method == COHMAP_METHOD_SCAN)
      assert_true(st.scans > 0);
   if (f->v->method == COHMAP_METHOD_FAULT) {
      /* Without widening, every written page faults once per round: no
       * more (a page left writable), no fewer (a store not tracked). */
      if (st.faults != f->written_pages)
         fprintf(stderr, "%s: %" PRIu64 " faults, %" PRIu64 " pages "
                 "written\n", f->v->name, st.faults, f->written_pages);
      assert_int_equal(st.faults, f->written_pages);
   } else {
      assert_int_equal(st.faults, 0);
   }
}

static void
test_patterns(void **state)
{
   const struct variant *v = *state;
   struct fixture f;
   uint64_t seed = tu_seed_for(v->name);
   assert_true(fixture_init(&f, v, 0, seed));
   const size_t page = f.page, size = f.size;
   struct cohmap_range r[REGION_PAGES * 2];

   collect_expect_empty(&f, "untouched region");
   collect_expect_empty(&f, "nothing written");

   r[0] = bump(&f, 5 * page, 1);
   collect_expect(&f, "first byte of a page", r, 1, NULL, 0);

   r[0] = bump(&f, 6 * page - 1, 1);
   collect_expect(&f, "last byte of a page", r, 1, NULL, 0);

   r[0] = bump(&f, 0, 1);
   r[1] = bump(&f, size - 1, 1);
   collect_expect(&f, "first and last byte of the region", r, 2, NULL, 0);

   /* Two bytes on both sides of a page boundary: one run, two pages. */
   r[0] = bump(&f, 3 * page - 1, 1);
   r[1] = bump(&f, 3 * page, 1);
   collect_expect(&f, "across a page boundary", r, 2, NULL, 0);

   r[0] = bump(&f, 0, size);
   collect_expect(&f, "whole region", r, 1, NULL, 0);
   collect_expect_empty(&f, "after the whole region");

   r[0] = bump(&f, 17, size - 17 - 5);
   collect_expect(&f, "all but the ends", r, 1, NULL, 0);

   /* Sparse random pages, one random byte each, written in random order
    * (the answer must still be sorted). */
   struct tu_rng rng;
   tu_rng_seed(&rng, seed);
   for (int round = 0; round < 8; round++) {
      size_t n = 0;
      bool used[REGION_PAGES] = {0};
      size_t want = (size_t)tu_rng_range(&rng, 1, 12);
      while (n < want) {
         size_t p = (size_t)tu_rng_below(&rng, REGION_PAGES);
         if (used[p])
            continue;
         used[p] = true;
         r[n++] = bump(&f, p * page + (size_t)tu_rng_below(&rng, page), 1);
      }
      collect_expect(&f, "sparse random pages", r, n, NULL, 0);
   }

   /* Strided pages, one byte and whole pages. */
   static const size_t strides[] = {3, 16};
   for (size_t s = 0; s < TU_ARRAY_SIZE(strides); s++) {
      size_t n = 0;
      for (size_t p = 0; p < REGION_PAGES; p += strides[s])
         r[n++] = bump(&f, p * page + (p * 37) % page, 1);
      collect_expect(&f, "strided bytes", r, n, NULL, 0);

      n = 0;
      for (size_t p = 1; p < REGION_PAGES; p += strides[s])
         r[n++] = bump(&f, p * page, page);
      collect_expect(&f, "strided pages", r, n, NULL, 0);
   }

   /* A store of the value already there: page methods cannot tell, exact
    * ones must not report it. */
   tu_model_rewrite(&f.model, 7 * page + 100, 10);
   r[0] = (struct cohmap_range){7 * page + 100, 10};
   collect_expect(&f, "same-value store", NULL, 0, r, 1);

   /* Changed and changed back before the collect. */
   tu_model_bump(&f.model, 9 * page + 4000, 96);
   uint8_t back[96];
   memcpy(back, f.model.mirror + 9 * page + 4000, sizeof(back));
   tu_model_write(&f.model, 9 * page + 4000, back, sizeof(back));
   r[0] = (struct cohmap_range){9 * page + 4000, 96};
   collect_expect(&f, "changed back", NULL, 0, r, 1);

   /* Mixed: a changed byte and a same-value store on other pages. */
   r[0] = bump(&f, 20 * page + 1, 1);
   tu_model_rewrite(&f.model, 40 * page, page);
   r[1] = (struct cohmap_range){40 * page, page};
   collect_expect(&f, "changed and same-value", &r[0], 1, &r[1], 1);

   collect_expect_empty(&f, "nothing written at the end");
   check_stats(&f);
   fixture_fini(&f);
}

static void
test_initial_dirty(void **state)
{
   const struct variant *v = *state;
   struct fixture f;
   assert_true(fixture_init(&f, v, COHMAP_REGION_INITIAL_DIRTY,
                            tu_seed_for(v->name)));

   /* The device has never seen this memory. */
   memset(f.model.mirror, 0xee, f.size);

   /* The first collect reports the whole region, whatever the method and
    * however exact it is. */
   struct cohmap_dirty d;
   assert_int_equal(cohmap_region_collect(f.region, 0, &d), 0);
   struct cohmap_range whole = {0, f.size};
   assert_true(tu_dirty_equals(&d, &whole, 1, v->name));
   tu_apply_dirty(f.model.mirror, &d);
   assert_true(tu_mirror_matches(f.model.mirror, f.model.mem, f.size,
                                 v->name));
   f.collects++;
   f.bytes += d.bytes;
   f.pages += tu_dirty_pages(&d);

   /* Then it is an ordinary region. */
   collect_expect_empty(&f, "after the initial collect");
   struct cohmap_range r = bump(&f, 11 * f.page + 11, 3);
   collect_expect(&f, "a write after the initial collect", &r, 1, NULL, 0);
   collect_expect_empty(&f, "nothing written");

   check_stats(&f);
   fixture_fini(&f);
}

int
main(void)
{
   static struct variant variants[TU_METHODS_COUNT * 4];
   struct CMUnitTest tests[TU_ARRAY_SIZE(variants) * 2];
   static char names[TU_ARRAY_SIZE(tests)][96];
   size_t nv = 0, nt = 0;

   tu_seed();
   /* TEST_FILTER=pattern (cmocka wildcards) runs the matching tests only. */
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));
   for (size_t wrap = 0; wrap < 2; wrap++) {
      for (size_t i = 0; i < TU_METHODS_COUNT; i++) {
         for (size_t exact = 0; exact < 2; exact++) {
            struct variant *v = &variants[nv++];
            v->method = tu_methods[i];
            v->flags = exact ? COHMAP_REGION_BYTE_EXACT : 0;
            v->wrap = wrap;
            char buf[48];
            snprintf(v->name, sizeof(v->name), "%s/%s",
                     tu_variant_name(v->method, v->flags, buf, sizeof(buf)),
                     wrap ? "wrap" : "create");
         }
      }
   }
   for (size_t i = 0; i < nv; i++) {
      snprintf(names[nt], sizeof(names[nt]), "patterns %s",
               variants[i].name);
      tests[nt] = (struct CMUnitTest){names[nt], test_patterns, NULL, NULL,
                                      &variants[i]};
      nt++;
   }
   for (size_t i = 0; i < nv; i++) {
      snprintf(names[nt], sizeof(names[nt]), "initial-dirty %s",
               variants[i].name);
      tests[nt] = (struct CMUnitTest){names[nt], test_initial_dirty, NULL,
                                      NULL, &variants[i]};
      nt++;
   }
   return _cmocka_run_group_tests("basic", tests, nt, NULL, NULL);
}
