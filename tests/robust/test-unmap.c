/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Wrapped memory unmapped while tracked (cohmap_region_wrap() contract):
 * collects fail with -EFAULT from then on, for every method, with or
 * without dirty pages at the time, whole or partial unmaps; nothing
 * crashes; destroy works and leaves alone whatever was mapped there since.
 * scan also detects a new mapping placed over the memory (MAP_FIXED,
 * mremap).
 */

#include "robust-util.h"

#define NPAGES 16

static size_t ps;

enum unmap_kind {
   UNMAP_WHOLE,
   UNMAP_MIDDLE_PAGE,
   UNMAP_LAST_PAGE,
};

static int
unmap_case(enum cohmap_method method, enum unmap_kind kind, bool dirty)
{
   struct cohmap_dirty d;

   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, method))
      return ROBUST_SKIP;
   uint8_t *mem = robust_mmap(NPAGES * ps, PROT_READ | PROT_WRITE);
   memset(mem, 0x5a, NPAGES * ps);
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_wrap(ctx, mem, NPAGES * ps, method, 0, &r));
   CHECK(cohmap_region_method(r) == method, "method is %s",
         robust_method_str(cohmap_region_method(r)));
   CHECK_COLLECT(r, &d, "initial collect");
   mem[3 * ps] = 1;
   CHECK_COLLECT(r, &d, "collect before the unmap");
   CHECK(robust_dirty_covers(&d, 3 * ps, 1), "write not reported");

   if (dirty) {
      /* Unreported writes, some in pages that get unmapped, some not. */
      for (size_t pg = 0; pg < NPAGES; pg += 2)
         mem[pg * ps + 1] = 2;
   }

   size_t gone_off = 0, gone_len = NPAGES * ps;
   if (kind == UNMAP_MIDDLE_PAGE) {
      gone_off = 7 * ps;
      gone_len = ps;
   } else if (kind == UNMAP_LAST_PAGE) {
      gone_off = (NPAGES - 1) * ps;
      gone_len = ps;
   }
   CHECK_SYS(munmap(mem + gone_off, gone_len));

   for (int i = 0; i < 3; i++) {
      robust_dirty_clear(&d);
      d.count = 12345;
      int rc = cohmap_region_collect(r, 0, &d);
      CHECK(rc == -EFAULT,
            "collect %d of a %s region after munmap(%s) returned %d (%s), "
            "expected -EFAULT; message \"%s\"",
            i, robust_method_str(method),
            kind == UNMAP_WHOLE ? "whole" : "one page", rc, robust_errstr(rc),
            cohmap_error_message());
      CHECK(d.count == 0, "failed collect left %zu ranges in out", d.count);
      CHECK(cohmap_error_message()[0] != '\0',
            "no error message after a failed collect");
      /* Writes to what is still mapped must not bring it back to life. */
      if (kind != UNMAP_WHOLE)
         mem[0] = (uint8_t)(10 + i);
   }
   struct cohmap_region_stats st;
   CHECK_OK(cohmap_region_get_stats(r, &st));

   if (kind == UNMAP_WHOLE) {
      /* Put a new, read-only mapping where the memory was: the region
       * stays in error, and destroy must not touch that mapping. */
      void *fresh = mmap(mem, NPAGES * ps, PROT_READ,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                         -1, 0);
      CHECK(fresh == mem, "mmap at the old address: %s", strerror(errno));
      CHECK_RC(cohmap_region_collect(r, 0, &d), -EFAULT);
      CHECK_OK(cohmap_region_destroy(r));
      char perms[5];
      CHECK(robust_maps_perms(fresh, perms), "new mapping vanished");
      CHECK(strncmp(perms, "r--", 3) == 0,
            "cohmap_region_destroy() changed the protection of a mapping "
            "that replaced the unmapped memory to %s", perms);
   } else {
      /* What is left of the caller's memory is the caller's again, and
       * writable (this dies of SIGSEGV if destroy left it protected). */
      CHECK_OK(cohmap_region_destroy(r));
      for (size_t pg = 0; pg < NPAGES; pg++) {
         if (pg * ps >= gone_off && pg * ps < gone_off + gone_len)
            continue;
         ((volatile uint8_t *)mem)[pg * ps + 5] = 0x77;
      }
   }
   CHECK_OK(cohmap_context_destroy(ctx));
   munmap(mem, NPAGES * ps);
   return 0;
}

#define UNMAP_CASES(m, M)                                                     \
   static int unmap_whole_##m(void)                                          \
   {                                                                         \
      return unmap_case(COHMAP_METHOD_##M, UNMAP_WHOLE, true);               \
   }                                                                         \
   static int unmap_whole_clean_##m(void)                                    \
   {                                                                         \
      return unmap_case(COHMAP_METHOD_##M, UNMAP_WHOLE, false);              \
   }                                                                         \
   static int unmap_middle_##m(void)                                         \
   {                                                                         \
      return unmap_case(COHMAP_METHOD_##M, UNMAP_MIDDLE_PAGE, true);         \
   }                                                                         \
   static int unmap_last_clean_##m(void)                                     \
   {                                                                         \
      return unmap_case(COHMAP_METHOD_##M, UNMAP_LAST_PAGE, false);          \
   }

UNMAP_CASES(scan, SCAN)
UNMAP_CASES(fault, FAULT)
UNMAP_CASES(compare, COMPARE)
UNMAP_CASES(full, FULL)

/* scan: a new mapping placed over the memory without munmap first. */
static int
scan_replaced_case(bool use_mremap)
{
   struct cohmap_dirty d;

   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_SCAN))
      return ROBUST_SKIP;
   uint8_t *mem = robust_mmap(NPAGES * ps, PROT_READ | PROT_WRITE);
   memset(mem, 0x5a, NPAGES * ps);
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_wrap(ctx, mem, NPAGES * ps, COHMAP_METHOD_SCAN, 0,
                               &r));
   CHECK_COLLECT(r, &d, "initial collect");
   mem[ps] = 1;

   void *other = NULL;
   if (use_mremap) {
      /* Move the memory away (the region's range becomes unmapped), then
       * put a fresh mapping there. */
      other = mremap(mem, NPAGES * ps, NPAGES * ps, MREMAP_MAYMOVE | MREMAP_FIXED,
                     robust_mmap(NPAGES * ps, PROT_NONE));
      CHECK(other != MAP_FAILED, "mremap: %s", strerror(errno));
   }
   void *p = mmap(mem, NPAGES * ps, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
   CHECK(p == mem, "mmap MAP_FIXED: %s", strerror(errno));
   mem[2 * ps] = 3;

   robust_dirty_clear(&d);
   int rc = cohmap_region_collect(r, 0, &d);
   CHECK(rc == -EFAULT, "collect after %s returned %d (%s), expected -EFAULT",
         use_mremap ? "mremap + mmap" : "mmap MAP_FIXED over the region", rc,
         robust_errstr(rc));
   CHECK_RC(cohmap_region_collect(r, 0, &d), -EFAULT);
   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   munmap(mem, NPAGES * ps);
   if (other)
      munmap(other, NPAGES * ps);
   return 0;
}

static int scan_mmap_fixed_over(void) { return scan_replaced_case(false); }
static int scan_mremap_away(void) { return scan_replaced_case(true); }

/*
 * madvise(MADV_DONTNEED) on wrapped private memory zeroes it: to the
 * device that is a change like any store.  scan and compare (which see
 * writes from any source) must report the zeroed pages.
 */
static int
dontneed_case(enum cohmap_method method)
{
   struct cohmap_dirty d;

   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, method))
      return ROBUST_SKIP;
   uint8_t *mem = robust_mmap(NPAGES * ps, PROT_READ | PROT_WRITE);
   memset(mem, 0x5a, NPAGES * ps);
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_wrap(ctx, mem, NPAGES * ps, method, 0, &r));
   CHECK_COLLECT(r, &d, "initial collect");
   mem[ps] = 1;
   CHECK_COLLECT(r, &d, "collect of a store");
   CHECK_SYS(madvise(mem + 2 * ps, 3 * ps, MADV_DONTNEED));
   CHECK(mem[3 * ps] == 0, "MADV_DONTNEED did not zero the page");
   CHECK_COLLECT(r, &d, "collect after MADV_DONTNEED");
   robust_print_dirty("collect after MADV_DONTNEED", &d);
   CHECK(robust_dirty_covers(&d, 2 * ps, 3 * ps),
         "%s: pages zeroed by MADV_DONTNEED were not reported",
         robust_method_str(method));
   for (size_t i = 2 * ps; i < 5 * ps; i++)
      CHECK(((const uint8_t *)d.data)[i] == 0, "data[%zu] is not 0", i);
   CHECK_COLLECT(r, &d, "collect with no change");
   CHECK(d.count == 0, "%zu ranges reported with no change", d.count);
   /* Tracking goes on in the zapped pages. */
   mem[3 * ps + 7] = 9;
   CHECK_COLLECT(r, &d, "store into a zapped page");
   CHECK(robust_dirty_covers(&d, 3 * ps + 7, 1), "store not reported");
   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   munmap(mem, NPAGES * ps);
   return 0;
}

static int dontneed_scan(void) { return dontneed_case(COHMAP_METHOD_SCAN); }
static int dontneed_compare(void) { return dontneed_case(COHMAP_METHOD_COMPARE); }

ROBUST_MAIN(ROBUST_CASE(unmap_whole_scan), ROBUST_CASE(unmap_whole_clean_scan),
            ROBUST_CASE(unmap_middle_scan), ROBUST_CASE(unmap_last_clean_scan),
            ROBUST_CASE(unmap_whole_fault),
            ROBUST_CASE(unmap_whole_clean_fault),
            ROBUST_CASE(unmap_middle_fault),
            ROBUST_CASE(unmap_last_clean_fault),
            ROBUST_CASE(unmap_whole_compare),
            ROBUST_CASE(unmap_whole_clean_compare),
            ROBUST_CASE(unmap_middle_compare),
            ROBUST_CASE(unmap_last_clean_compare),
            ROBUST_CASE(unmap_whole_full), ROBUST_CASE(unmap_whole_clean_full),
            ROBUST_CASE(unmap_middle_full), ROBUST_CASE(unmap_last_clean_full),
            ROBUST_CASE(scan_mmap_fixed_over), ROBUST_CASE(scan_mremap_away),
            ROBUST_CASE(dontneed_scan), ROBUST_CASE(dontneed_compare))
