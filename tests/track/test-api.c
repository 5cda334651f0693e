/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The small promises of the public API: method names, method availability
 * on this machine, the AUTO choice, NULL handling of destroy, and what a
 * freshly created region looks like.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test-util.h"

static void
test_method_names(void **state)
{
   static const struct {
      enum cohmap_method m;
      const char *name;
   } names[] = {
      {COHMAP_METHOD_AUTO, "auto"},
      {COHMAP_METHOD_SCAN, "scan"},
      {COHMAP_METHOD_FAULT, "fault"},
      {COHMAP_METHOD_COMPARE, "compare"},
      {COHMAP_METHOD_FULL, "full"},
   };
   assert_int_equal(TU_ARRAY_SIZE(names), COHMAP_METHOD_COUNT);

   for (size_t i = 0; i < TU_ARRAY_SIZE(names); i++) {
      const char *name = cohmap_method_name(names[i].m);
      assert_non_null(name);
      assert_string_equal(name, names[i].name);

      /* The round trip is what COHMAP_METHOD and the tool rely on. */
      enum cohmap_method m = (enum cohmap_method)-1;
      assert_int_equal(cohmap_method_from_name(name, &m), 0);
      assert_int_equal(m, names[i].m);
   }

   assert_null(cohmap_method_name((enum cohmap_method)COHMAP_METHOD_COUNT));
   assert_null(cohmap_method_name((enum cohmap_method)1000));
   assert_null(cohmap_method_name((enum cohmap_method)-1));

   static const char *const bad[] = {
      "", "bogus", "scanx", "sca", "auto,scan", "full\nscan",
   };
   for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
      enum cohmap_method m = COHMAP_METHOD_FULL;
      assert_int_equal(cohmap_method_from_name(bad[i], &m), -EINVAL);
      /* A failed parse must not half-write the result. */
      assert_int_equal(m, COHMAP_METHOD_FULL);
   }
   enum cohmap_method m;
   assert_int_equal(cohmap_method_from_name(NULL, &m), -EINVAL);
}

static void
test_method_status(void **state)
{
   struct cohmap_context *ctx = tu_context_create(0, 0);
   assert_non_null(ctx);

   const char *reason = NULL;
   assert_int_equal(cohmap_context_method_status(ctx, COHMAP_METHOD_AUTO,
                                                 &reason), 0);

   /* fault, compare and full need nothing from the kernel beyond mprotect
    * and signals: they are never legitimately missing. */
   static const enum cohmap_method always[] = {
      COHMAP_METHOD_FAULT, COHMAP_METHOD_COMPARE, COHMAP_METHOD_FULL,
   };
   for (size_t i = 0; i < TU_ARRAY_SIZE(always); i++) {
      reason = NULL;
      int ret = cohmap_context_method_status(ctx, always[i], &reason);
      if (ret)
         fprintf(stderr, "%s: %s\n", cohmap_method_name(always[i]),
                 reason ? reason : "(no reason)");
      assert_int_equal(ret, 0);
      /* reason may be NULL. */
      assert_int_equal(cohmap_context_method_status(ctx, always[i], NULL),
                       0);
   }

   reason = NULL;
   int scan = cohmap_context_method_status(ctx, COHMAP_METHOD_SCAN, &reason);
   if (scan == 0) {
      /* The best transparent method wins when nothing else is asked. */
      assert_int_equal(cohmap_context_auto_method(ctx), COHMAP_METHOD_SCAN);
   } else {
      /* Unavailable must say why, and AUTO falls back to compare (fault
       * is never picked automatically: it is not transparent). */
      assert_true(scan < 0);
      assert_non_null(reason);
      assert_true(strlen(reason) > 0);
      printf("# scan unavailable: %s\n", reason);
      assert_int_equal(cohmap_context_auto_method(ctx),
                       COHMAP_METHOD_COMPARE);
   }

   assert_int_equal(cohmap_context_destroy(ctx), 0);
}

static void
test_no_uffd(void **state)
{
   /* COHMAP_CONTEXT_NO_UFFD: scan is off, with a reason, and AUTO picks
    * compare rather than the non-transparent fault. */
   struct cohmap_context *ctx = tu_context_create(0, COHMAP_CONTEXT_NO_UFFD);
   assert_non_null(ctx);

   const char *reason = NULL;
   int ret = cohmap_context_method_status(ctx, COHMAP_METHOD_SCAN, &reason);
   assert_true(ret < 0);
   assert_non_null(reason);
   assert_true(strlen(reason) > 0);
   assert_int_equal(cohmap_context_auto_method(ctx), COHMAP_METHOD_COMPARE);
   assert_int_equal(cohmap_context_method_status(ctx, COHMAP_METHOD_FAULT,
                                                 NULL), 0);

   /* An AUTO region is under the adaptive policy, which without scan and
    * without the CPU-stores-only promise has compare and full to choose
    * from (a one-page region: whichever this machine's costs favour). */
   struct cohmap_region *region = NULL;
   assert_int_equal(cohmap_region_create(ctx, 4096, COHMAP_METHOD_AUTO, 0,
                                         &region), 0);
   enum cohmap_method got = cohmap_region_method(region);
   assert_true(got == COHMAP_METHOD_COMPARE || got == COHMAP_METHOD_FULL);
   assert_int_equal(cohmap_region_destroy(region), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
}

static void
test_default_method(void **state)
{
   /* opts.default_method decides what AUTO regions get. */
   for (size_t i = 0; i < TU_METHODS_COUNT; i++) {
      enum cohmap_method m = tu_methods[i];
      struct cohmap_context_options opts;
      cohmap_context_options_init(&opts);
      opts.flags |= COHMAP_CONTEXT_IGNORE_ENV;
      opts.default_method = m;
      struct cohmap_context *ctx = NULL;
      assert_int_equal(cohmap_context_create(&opts, &ctx), 0);

      if (cohmap_context_method_status(ctx, m, NULL) != 0) {
         assert_int_equal(m, COHMAP_METHOD_SCAN);
         assert_int_equal(cohmap_context_destroy(ctx), 0);
         continue;
      }
      assert_int_equal(cohmap_context_auto_method(ctx), m);

      struct cohmap_region *region = NULL;
      assert_int_equal(cohmap_region_create(ctx, 3 * tu_page_size(),
                                            COHMAP_METHOD_AUTO, 0, &region),
                       0);
      assert_int_equal(cohmap_region_method(region), m);
      assert_int_equal(cohmap_region_destroy(region), 0);
      assert_int_equal(cohmap_context_destroy(ctx), 0);
   }
}

static void
test_env_method(void **state)
{
   /* Without IGNORE_ENV, COHMAP_METHOD overrides the default; an empty
    * value (what the test environment sets) means unset; an unknown one
    * fails the create with -EINVAL. */
   struct cohmap_context_options opts;
   struct cohmap_context *ctx = NULL;
   cohmap_context_options_init(&opts);
   opts.default_method = COHMAP_METHOD_COMPARE;

   assert_int_equal(setenv("COHMAP_METHOD", "", 1), 0);
   assert_int_equal(cohmap_context_create(&opts, &ctx), 0);
   assert_int_equal(cohmap_context_auto_method(ctx), COHMAP_METHOD_COMPARE);
   assert_int_equal(cohmap_context_destroy(ctx), 0);

   assert_int_equal(setenv("COHMAP_METHOD", "full", 1), 0);
   ctx = NULL;
   assert_int_equal(cohmap_context_create(&opts, &ctx), 0);
   assert_int_equal(cohmap_context_auto_method(ctx), COHMAP_METHOD_FULL);
   assert_int_equal(cohmap_context_destroy(ctx), 0);

   /* IGNORE_ENV really ignores it. */
   opts.flags |= COHMAP_CONTEXT_IGNORE_ENV;
   ctx = NULL;
   assert_int_equal(cohmap_context_create(&opts, &ctx), 0);
   assert_int_equal(cohmap_context_auto_method(ctx), COHMAP_METHOD_COMPARE);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
   opts.flags &= ~(uint32_t)COHMAP_CONTEXT_IGNORE_ENV;

   assert_int_equal(setenv("COHMAP_METHOD", "no-such-method", 1), 0);
   ctx = (struct cohmap_context *)&opts; /* must be overwritten */
   assert_int_equal(cohmap_context_create(&opts, &ctx), -EINVAL);
   assert_null(ctx);
   assert_true(strlen(cohmap_error_message()) > 0);

   assert_int_equal(setenv("COHMAP_METHOD", "", 1), 0);
}

static void
test_destroy_null(void **state)
{
   assert_int_equal(cohmap_context_destroy(NULL), 0);
   assert_int_equal(cohmap_region_destroy(NULL), 0);
}

static void
test_destroy_busy(void **state)
{
   struct cohmap_context *ctx = tu_context_create(0, 0);
   assert_non_null(ctx);
   struct cohmap_region *region = NULL;
   assert_int_equal(cohmap_region_create(ctx, tu_page_size(),
                                         COHMAP_METHOD_COMPARE, 0, &region),
                    0);

   /* A live region keeps the context: -EBUSY, and nothing torn down. */
   assert_int_equal(cohmap_context_destroy(ctx), -EBUSY);
   ((volatile uint8_t *)cohmap_region_ptr(region))[0] = 1;
   struct cohmap_dirty d;
   assert_int_equal(cohmap_region_collect(region, 0, &d), 0);
   /* compare without BYTE_EXACT reports the 64-byte chunk. */
   assert_int_equal(d.count, 1);
   assert_int_equal(d.bytes, 64);

   assert_int_equal(cohmap_region_destroy(region), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
}

static void
test_region_shape(void **state)
{
   const size_t page = tu_page_size();
   struct cohmap_context *ctx = tu_context_create(0, 0);
   assert_non_null(ctx);

   static const size_t sizes[] = {1, 100, 4095, 4096, 4097, 8191, 8192,
                                  3 * 4096 + 1, 65536, 1000000};
   for (size_t s = 0; s < TU_ARRAY_SIZE(sizes); s++) {
      for (size_t i = 0; i < TU_METHODS_COUNT; i++) {
         enum cohmap_method m = tu_methods[i];
         bool fatal;
         if (!tu_method_available(ctx, m, &fatal)) {
            assert_false(fatal);
            continue;
         }
         for (uint32_t flags = 0; flags <= COHMAP_REGION_BYTE_EXACT;
              flags += COHMAP_REGION_BYTE_EXACT) {
            struct cohmap_region *region = NULL;
            assert_int_equal(cohmap_region_create(ctx, sizes[s], m, flags,
                                                  &region), 0);
            assert_non_null(region);

            size_t want = (sizes[s] + page - 1) / page * page;
            assert_int_equal(cohmap_region_size(region), want);
            assert_int_equal(cohmap_region_method(region), m);

            uint8_t *ptr = cohmap_region_ptr(region);
            assert_non_null(ptr);
            assert_int_equal((uintptr_t)ptr % page, 0);
            for (size_t b = 0; b < want; b++) {
               if (ptr[b]) {
                  fprintf(stderr, "%s size %zu: byte %zu is %#x, not 0\n",
                          cohmap_method_name(m), sizes[s], b, ptr[b]);
                  fail();
               }
            }

            /* Fresh statistics. */
            struct cohmap_region_stats st;
            memset(&st, 0xff, sizeof(st));
            assert_int_equal(cohmap_region_get_stats(region, &st), 0);
            assert_int_equal(st.collects, 0);
            assert_int_equal(st.bytes_reported, 0);
            assert_int_equal(st.pages_reported, 0);
            assert_int_equal(st.method_switches, 0);

            /* The rounded-up tail is part of the region: writable and
             * tracked. */
            ptr[want - 1] = 0x5a;
            struct cohmap_dirty d;
            assert_int_equal(cohmap_region_collect(region, 0, &d), 0);
            assert_true(tu_check_dirty_sorted_coalesced(&d, want, "shape"));
            assert_true(d.count >= 1);
            const struct cohmap_range *last = &d.ranges[d.count - 1];
            assert_int_equal(last->offset + last->length, want);

            assert_int_equal(cohmap_region_destroy(region), 0);
         }
      }
   }
   assert_int_equal(cohmap_context_destroy(ctx), 0);
}

static void
test_auto_region(void **state)
{
   struct cohmap_context *ctx = tu_context_create(0, 0);
   assert_non_null(ctx);
   struct cohmap_region *region = NULL;
   assert_int_equal(cohmap_region_create(ctx, 8 * tu_page_size(),
                                         COHMAP_METHOD_AUTO, 0, &region), 0);
   /* The region reports the method it really uses (the policy's choice),
    * never AUTO, never the non-transparent fault, and one that works. */
   enum cohmap_method got = cohmap_region_method(region);
   assert_int_not_equal(got, COHMAP_METHOD_AUTO);
   assert_int_not_equal(got, COHMAP_METHOD_FAULT);
   assert_int_equal(cohmap_context_method_status(ctx, got, NULL), 0);
   assert_int_equal(cohmap_region_destroy(region), 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
}

static void
test_options_defaults(void **state)
{
   /* options_init must fill every field: poison first. */
   struct cohmap_context_options opts;
   memset(&opts, 0xa5, sizeof(opts));
   cohmap_context_options_init(&opts);
   assert_int_equal(opts.flags, 0);
   assert_int_equal(opts.default_method, COHMAP_METHOD_AUTO);

   struct cohmap_context *ctx = NULL;
   assert_int_equal(cohmap_context_create(NULL, &ctx), 0);
   assert_non_null(ctx);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
}

int
main(void)
{
   const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_method_names),
      cmocka_unit_test(test_method_status),
      cmocka_unit_test(test_no_uffd),
      cmocka_unit_test(test_default_method),
      cmocka_unit_test(test_env_method),
      cmocka_unit_test(test_destroy_null),
      cmocka_unit_test(test_destroy_busy),
      cmocka_unit_test(test_region_shape),
      cmocka_unit_test(test_auto_region),
      cmocka_unit_test(test_options_defaults),
   };
   return cmocka_run_group_tests(tests, NULL, NULL);
}
