/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Property test: random writes (random offsets, 1 byte to 3 pages, new
 * values, unchanged values, values changed and changed back, sequential
 * page runs) followed by a collect, for many rounds, checked by the model
 * oracle in tests/common:
 *
 *  - every changed byte is reported (no lost write);
 *  - scan and fault report exactly the written pages, except fault's
 *    documented unprotect-ahead (fewer than fault_max_widen_pages pages
 *    after a written page) and, with THP, pages sharing a 2 MiB block with
 *    a written page;
 *  - compare and BYTE_EXACT regions report exactly the changed bytes;
 *  - full reports the whole region;
 *  - the mirror, updated from `data`, equals the memory after each collect.
 *
 * Without arguments: small regions, a few thousand rounds in seconds.
 * With --slow: 16 MiB, 64 MiB and 256 MiB regions, THP off and on.
 * TEST_SEED replays a run.
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

#include "test-util.h"

/* fault's default unprotect-ahead, tested as such. */
#define FAULT_WIDEN 16

enum memory_kind {
   MEMORY_CREATE,     /* cohmap_region_create(), THP off (the default) */
   MEMORY_WRAP,       /* the test's mapping, MADV_NOHUGEPAGE */
   MEMORY_CREATE_THP, /* create with ALLOW_THP, then MADV_HUGEPAGE */
   MEMORY_WRAP_THP,   /* the test's 2 MiB-aligned MADV_HUGEPAGE mapping */
};

static const char *const memory_names[] = {
   "create", "wrap", "create+thp", "wrap+thp",
};

struct oracle_case {
   enum cohmap_method method;
   uint32_t flags;
   uint32_t widen; /* fault_max_widen_pages */
   enum memory_kind memory;
   size_t size;
   unsigned rounds;
   char name[96];
};

static bool
memory_is_thp(enum memory_kind k)
{
   return k == MEMORY_CREATE_THP || k == MEMORY_WRAP_THP;
}

/* A round that stores to the first bytes of consecutive pages in order, as
 * a memcpy into the buffer does: what fault's widening is for. */
static void
sequential_run(struct tu_model *m, struct tu_rng *rng)
{
   size_t pages = (size_t)tu_rng_range(rng, 1, 3 * FAULT_WIDEN);
   if (pages > m->npages)
      pages = m->npages;
   size_t first = (size_t)tu_rng_below(rng, m->npages - pages + 1);
   size_t len = (size_t)tu_rng_range(rng, 1, 64);
   for (size_t p = first; p < first + pages; p++)
      tu_model_bump(m, p * m->page_size, len);
}

static void
test_oracle(void **state)
{
   const struct oracle_case *c = *state;
   const size_t page = tu_page_size();
   uint64_t seed = tu_seed_for(c->name);
   struct tu_rng rng;
   tu_rng_seed(&rng, seed);

   struct cohmap_context *ctx = tu_context_create(c->widen, 0);
   assert_non_null(ctx);
   bool fatal;
   if (!tu_method_available(ctx, c->method, &fatal)) {
      cohmap_context_destroy(ctx);
      if (fatal)
         fail();
      skip();
   }

   bool thp = memory_is_thp(c->memory);
   uint8_t *mine = NULL;
   struct cohmap_region *region = NULL;
   int ret;
   if (c->memory == MEMORY_WRAP || c->memory == MEMORY_WRAP_THP) {
      mine = tu_map(c->size, thp ? TU_HUGE_PAGE_SIZE : page, thp);
      assert_non_null(mine);
      /* Populated before tracking starts, so that huge pages exist. */
      tu_rng_fill(&rng, mine, c->size);
      ret = cohmap_region_wrap(ctx, mine, c->size, c->method, c->flags,
                               &region);
   } else {
      uint32_t flags = c->flags;
      if (thp)
         flags |= COHMAP_REGION_ALLOW_THP;
      ret = cohmap_region_create(ctx, c->size, c->method, flags, &region);
   }
   if (ret)
      fprintf(stderr, "%s: region: %s (%s)\n", c->name, strerror(-ret),
              cohmap_error_message());
   assert_int_equal(ret, 0);
   uint8_t *mem = cohmap_region_ptr(region);

   if (c->memory == MEMORY_CREATE_THP) {
      assert_int_equal(madvise(mem, c->size, MADV_HUGEPAGE), 0);
      /* Not tracked as written: the model starts from these contents. */
      tu_rng_fill(&rng, mem, c->size);
      struct cohmap_dirty d;
      assert_int_equal(cohmap_region_collect(region, 0, &d), 0);
   }
   if (thp) {
      long huge = tu_thp_bytes(mem, c->size);
      printf("# %s: %ld KiB of %zu KiB in huge pages\n", c->name,
             huge < 0 ? -1 : huge / 1024, c->size / 1024);
   }

   struct tu_model model;
   assert_true(tu_model_init(&model, mem, c->size));
   struct tu_expect expect = tu_expect_for(c->method, c->flags, c->widen,
                                           thp);

   size_t max_writes = c->size / page / 2;
   if (max_writes < 4)
      max_writes = 4;
   if (max_writes > 64)
      max_writes = 64;

   uint64_t bytes = 0;
   bool ok = true;
   double start = tu_now();
   for (unsigned round = 0; round < c->rounds && ok; round++) {
      unsigned kind = (unsigned)tu_rng_below(&rng, 100);
      if (kind < 5) {
         /* Nothing written. */
      } else if (kind < 15) {
         sequential_run(&model, &rng);
      } else {
         size_t n = (size_t)tu_rng_range(&rng, 1, max_writes);
         for (size_t i = 0; i < n; i++)
            tu_model_random_write(&model, &rng);
      }

      char what[160];
      snprintf(what, sizeof(what), "%s round %u (TEST_SEED=%" PRIu64 ")",
               c->name, round, tu_seed());
      struct cohmap_dirty d;
      ret = cohmap_region_collect(region, 0, &d);
      if (ret) {
         fprintf(stderr, "%s: collect: %s (%s)\n", what, strerror(-ret),
                 cohmap_error_message());
         ok = false;
         break;
      }
      bytes += d.bytes;
      ok = tu_model_collected(&model, &d, &expect, what);
   }

   printf("# %s: %u rounds, %.2f s\n", c->name, c->rounds,
          tu_now() - start);
   if (ok) {
      struct cohmap_region_stats st;
      assert_int_equal(cohmap_region_get_stats(region, &st), 0);
      uint64_t extra = c->memory == MEMORY_CREATE_THP ? 1 : 0;
      assert_int_equal(st.collects, c->rounds + extra);
      if (!extra)
         assert_int_equal(st.bytes_reported, bytes);
   }

   tu_model_fini(&model);
   assert_int_equal(cohmap_region_destroy(region), 0);
   tu_unmap(mine, c->size);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
   assert_true(ok);
}

struct size_rounds {
   size_t size;
   unsigned rounds;
   enum memory_kind memory;
};

int
main(int argc, char **argv)
{
   bool slow = argc > 1 && strcmp(argv[1], "--slow") == 0;
   const size_t page = tu_page_size();

   const struct size_rounds fast_sizes[] = {
      {page, 150, MEMORY_CREATE},
      {page, 60, MEMORY_WRAP},
      {3 * page, 150, MEMORY_CREATE},
      {3 * page, 60, MEMORY_WRAP},
      {64 * TU_KIB, 100, MEMORY_CREATE},
      {64 * TU_KIB, 50, MEMORY_WRAP},
      {1 * TU_MIB, 40, MEMORY_CREATE},
      {1 * TU_MIB, 20, MEMORY_WRAP},
      /* A taste of THP in the default suite; the slow suite does more. */
      {4 * TU_MIB, 10, MEMORY_WRAP_THP},
   };
   const struct size_rounds slow_sizes[] = {
      {16 * TU_MIB, 30, MEMORY_CREATE},
      {16 * TU_MIB, 30, MEMORY_WRAP_THP},
      {16 * TU_MIB, 20, MEMORY_CREATE_THP},
      {64 * TU_MIB, 12, MEMORY_CREATE},
      {64 * TU_MIB, 12, MEMORY_WRAP_THP},
      {256 * TU_MIB, 4, MEMORY_WRAP},
      {256 * TU_MIB, 4, MEMORY_WRAP_THP},
   };
   const struct size_rounds *sizes = slow ? slow_sizes : fast_sizes;
   size_t nsizes = slow ? TU_ARRAY_SIZE(slow_sizes)
                        : TU_ARRAY_SIZE(fast_sizes);

   /* Each method plain and BYTE_EXACT; fault once strict (no widening)
    * and once with its default widening. */
   struct {
      enum cohmap_method m;
      uint32_t widen;
   } methods[] = {
      {COHMAP_METHOD_SCAN, 1},
      {COHMAP_METHOD_FAULT, 1},
      {COHMAP_METHOD_FAULT, FAULT_WIDEN},
      {COHMAP_METHOD_COMPARE, 1},
      {COHMAP_METHOD_FULL, 1},
   };

   size_t max = TU_ARRAY_SIZE(methods) * 2 * nsizes;
   struct oracle_case *cases = calloc(max, sizeof(*cases));
   struct CMUnitTest *tests = calloc(max, sizeof(*tests));
   if (!cases || !tests)
      return 1;

   tu_seed();
   /* TEST_FILTER=pattern (cmocka wildcards) runs the matching tests only. */
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));
   size_t n = 0;
   for (size_t s = 0; s < nsizes; s++) {
      for (size_t i = 0; i < TU_ARRAY_SIZE(methods); i++) {
         for (uint32_t exact = 0; exact < 2; exact++) {
            /* Populating 256 MiB several times over is what costs on the
             * biggest regions (page faults are slow in VMs): there, skip
             * the variants that add nothing size-dependent -- strict
             * fault (widening is the big-region case), full (reports
             * the region) and compare+BYTE_EXACT (compare already is). */
            if (sizes[s].size > 64 * TU_MIB &&
                ((methods[i].m == COHMAP_METHOD_FAULT &&
                  methods[i].widen == 1) ||
                 (methods[i].m == COHMAP_METHOD_FULL && !exact) ||
                 (methods[i].m == COHMAP_METHOD_COMPARE && exact)))
               continue;
            struct oracle_case *c = &cases[n];
            c->method = methods[i].m;
            c->flags = exact ? COHMAP_REGION_BYTE_EXACT : 0;
            c->widen = methods[i].widen;
            c->memory = sizes[s].memory;
            c->size = sizes[s].size;
            c->rounds = sizes[s].rounds;
            /* full reports everything whatever happens: a few rounds of
             * it on big regions say all there is to say. */
            if (c->method == COHMAP_METHOD_FULL && c->rounds > 20)
               c->rounds /= 4;
            char buf[48];
            snprintf(c->name, sizeof(c->name), "%s%s %zu KiB %s",
                     tu_variant_name(c->method, c->flags, buf, sizeof(buf)),
                     c->method == COHMAP_METHOD_FAULT && c->widen > 1
                        ? "+widen" : "",
                     c->size / 1024, memory_names[c->memory]);
            tests[n] = (struct CMUnitTest){c->name, test_oracle, NULL, NULL,
                                           c};
            n++;
         }
      }
   }

   int failed = _cmocka_run_group_tests(slow ? "oracle-slow" : "oracle",
                                        tests, n, NULL, NULL);
   free(tests);
   free(cases);
   return failed;
}
