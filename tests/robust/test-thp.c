/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Transparent huge pages.  Arming write-protects a whole 2 MiB block; the
 * first write must be reported as (at least) the written 4 KiB page and
 * nothing outside its 2 MiB block.  With MADV_NOHUGEPAGE exactly one page.
 * Whether THP was really used (AnonHugePages in /proc/self/smaps) is
 * printed: the kernel may not have a huge page to give.
 */

#include "robust-util.h"

#define HPAGE ((size_t)2 << 20)

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

static size_t ps;

/* AnonHugePages (kB) of the mappings overlapping [addr, addr+len). */
static long
anon_huge_kb(const void *addr, size_t len)
{
   FILE *f = fopen("/proc/self/smaps", "r");
   char line[512];
   bool in = false;
   long total = 0;
   uintptr_t a = (uintptr_t)addr;

   CHECK(f, "open smaps: %s", strerror(errno));
   while (fgets(line, sizeof(line), f)) {
      unsigned long lo, hi;
      long kb;
      /* Only the header lines start with "start-end". */
      if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
         in = lo < a + len && a < hi;
      else if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
         total += kb;
   }
   fclose(f);
   return total;
}

static const char *
thp_setting(void)
{
   static char buf[64];
   FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
   if (!f)
      return "unavailable";
   if (!fgets(buf, sizeof(buf), f))
      buf[0] = 0;
   fclose(f);
   buf[strcspn(buf, "\n")] = 0;
   return buf;
}

/* 2 MiB-aligned anonymous memory of n blocks. */
static uint8_t *
aligned_blocks(size_t n, void **raw, size_t *raw_len)
{
   *raw_len = (n + 1) * HPAGE;
   *raw = robust_mmap(*raw_len, PROT_READ | PROT_WRITE);
   uintptr_t a = ((uintptr_t)*raw + HPAGE - 1) & ~(HPAGE - 1);
   return (uint8_t *)a;
}

/* Writes one byte at off, collects, checks it is reported and nothing
 * outside its 2 MiB block is; exact: only its page (or for compare only the
 * byte). */
static void
one_write(struct cohmap_region *r, size_t block_base_off, size_t off,
          uint8_t val, bool exact, const char *what)
{
   struct cohmap_dirty d;
   uint8_t *p = cohmap_region_ptr(r);
   enum cohmap_method m = cohmap_region_method(r);

   ((volatile uint8_t *)p)[off] = val;
   CHECK_COLLECT(r, &d, what);
   robust_print_dirty(what, &d);
   CHECK(robust_dirty_covers(&d, off, 1), "%s: the write at %#zx was not "
         "reported", what, off);
   CHECK(((const uint8_t *)d.data)[off] == val, "%s: wrong data", what);
   size_t region_size = cohmap_region_size(r);
   size_t lo = block_base_off;
   size_t hi = block_base_off + HPAGE < region_size ? block_base_off + HPAGE
                                                    : region_size;
   CHECK(!robust_dirty_touches(&d, 0, lo) &&
            !robust_dirty_touches(&d, hi, region_size - hi),
         "%s: %s reported bytes outside the 2 MiB block [%#zx, %#zx) of a "
         "single write", what, robust_method_str(m), lo, hi);
   if (exact) {
      /* compare (not BYTE_EXACT): the aligned 64-byte chunk. */
      size_t grain = m == COHMAP_METHOD_COMPARE ? 64 : ps;
      size_t want_off = off / grain * grain;
      size_t want_len = grain;
      CHECK(d.count == 1 && d.ranges[0].offset == want_off &&
               d.ranges[0].length == want_len,
            "%s: expected exactly [%#zx,+%#zx)", what, want_off, want_len);
   }
   /* Re-armed: the next collect is empty. */
   CHECK_COLLECT(r, &d, what);
   CHECK(d.count == 0, "%s: %zu ranges reported with no write", what, d.count);
}

static int
thp_case(enum cohmap_method method, bool huge)
{
   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, method))
      return ROBUST_SKIP;
   printf("THP setting: %s\n", thp_setting());

   void *raw;
   size_t raw_len;
   uint8_t *mem = aligned_blocks(2, &raw, &raw_len);
   CHECK_SYS(madvise(mem, 2 * HPAGE, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE));
   /* Populate (huge pages if the kernel has them). */
   for (size_t off = 0; off < 2 * HPAGE; off += ps)
      mem[off] = (uint8_t)(off / ps);
   long kb = anon_huge_kb(mem, 2 * HPAGE);
   printf("%s, MADV_%sHUGEPAGE: AnonHugePages %ld kB before wrap -> THP %s\n",
          robust_method_str(method), huge ? "" : "NO", kb,
          kb > 0 ? "used" : "NOT used");
   if (!huge)
      CHECK(kb == 0, "MADV_NOHUGEPAGE memory has %ld kB of huge pages", kb);

   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_wrap(ctx, mem, 2 * HPAGE, method, 0, &r));
   CHECK(cohmap_region_method(r) == method, "method %s",
         robust_method_str(cohmap_region_method(r)));
   struct cohmap_dirty d;
   CHECK_COLLECT(r, &d, "initial collect");
   CHECK(d.count == 0, "initial collect reported %zu ranges", d.count);

   bool exact = !huge || method == COHMAP_METHOD_COMPARE;
   one_write(r, 0, 37 * ps + 123, 0xe1, exact, "write in block 0");
   kb = anon_huge_kb(mem, 2 * HPAGE);
   printf("AnonHugePages after the first write: %ld kB\n", kb);
   one_write(r, HPAGE, HPAGE + 300 * ps + 5, 0xe2, exact, "write in block 1");
   one_write(r, 0, 37 * ps + 124, 0xe3, exact, "same page again");
   one_write(r, HPAGE, 2 * HPAGE - 1, 0xe4, exact, "last byte");
   one_write(r, 0, 0, 0xe5, exact, "first byte");

   if (huge) {
      /* Collapsing the split block back into a huge page while tracked
       * (khugepaged does this on its own) must not lose a write. */
      int rc = madvise(mem, 2 * HPAGE, MADV_COLLAPSE);
      printf("MADV_COLLAPSE while tracked: %s; AnonHugePages %ld kB\n",
             rc ? strerror(errno) : "done", anon_huge_kb(mem, 2 * HPAGE));
      one_write(r, 0, 37 * ps + 200, 0xe6, exact, "after MADV_COLLAPSE");
      one_write(r, HPAGE, HPAGE + 5 * ps, 0xe7, exact,
                "after MADV_COLLAPSE, block 1");
   }

   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   munmap(raw, raw_len);
   return 0;
}

static int scan_thp(void) { return thp_case(COHMAP_METHOD_SCAN, true); }
static int scan_nothp(void) { return thp_case(COHMAP_METHOD_SCAN, false); }
static int fault_thp(void) { return thp_case(COHMAP_METHOD_FAULT, true); }
static int fault_nothp(void) { return thp_case(COHMAP_METHOD_FAULT, false); }
static int compare_thp(void) { return thp_case(COHMAP_METHOD_COMPARE, true); }

/* cohmap_region_create() with COHMAP_REGION_ALLOW_THP. */
static int
scan_create_allow_thp(void)
{
   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_SCAN))
      return ROBUST_SKIP;
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, 3 * HPAGE, COHMAP_METHOD_SCAN,
                                 COHMAP_REGION_ALLOW_THP, &r));
   uint8_t *p = cohmap_region_ptr(r);
   for (size_t off = 0; off < 3 * HPAGE; off += ps)
      p[off] = 1;
   long kb = anon_huge_kb(p, 3 * HPAGE);
   printf("ALLOW_THP region at %p: AnonHugePages %ld kB -> THP %s\n",
          (void *)p, kb, kb > 0 ? "used" : "NOT used");
   struct cohmap_dirty d;
   CHECK_COLLECT(r, &d, "collect of the populating writes");
   CHECK(d.count == 1 && d.bytes == 3 * HPAGE,
         "populating writes: %zu ranges, %zu bytes", d.count, d.bytes);
   /* The 2 MiB block (by address) holding the write, within the region. */
   size_t off = HPAGE + 77 * ps + 9;
   uintptr_t blk = ((uintptr_t)(p + off)) & ~(HPAGE - 1);
   size_t blk_off = blk < (uintptr_t)p ? 0 : blk - (uintptr_t)p;
   one_write(r, blk_off, off, 0x5e, false, "ALLOW_THP region write");

   /* Default (no ALLOW_THP): cohmap asks for no huge pages, so one page. */
   struct cohmap_region *r2 = NULL;
   CHECK_OK(cohmap_region_create(ctx, 3 * HPAGE, COHMAP_METHOD_SCAN, 0, &r2));
   p = cohmap_region_ptr(r2);
   for (size_t o = 0; o < 3 * HPAGE; o += ps)
      p[o] = 1;
   kb = anon_huge_kb(p, 3 * HPAGE);
   printf("default region: AnonHugePages %ld kB\n", kb);
   CHECK(kb == 0, "a region created without ALLOW_THP got %ld kB of huge "
         "pages", kb);
   CHECK_COLLECT(r2, &d, "collect of the populating writes");
   one_write(r2, HPAGE, off, 0x5f, true, "default region write");

   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_region_destroy(r2));
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

ROBUST_MAIN(ROBUST_CASE(scan_thp), ROBUST_CASE(scan_nothp),
            ROBUST_CASE(fault_thp), ROBUST_CASE(fault_nothp),
            ROBUST_CASE(compare_thp), ROBUST_CASE(scan_create_allow_thp))
