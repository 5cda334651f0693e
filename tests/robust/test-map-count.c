/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * fault method vs. vm.max_map_count.
 *
 * Each page the fault handler unprotects in the middle of a protected range
 * splits a VMA; once the process is at vm.max_map_count, mprotect() fails
 * with ENOMEM.  The sysctl is left alone: the test consumes nearly all the
 * process's VMAs itself with 1-page anonymous mappings that cannot merge
 * with each other, then makes cohmap need more.
 *
 *  - handler path: writes to every other page of a 4096-page fault region
 *    (each unprotect needs a split).  No hang (alarm), no crash, every
 *    written byte reported by the next collect, the region moved off fault,
 *    later writes reported, also after the VMAs are given back.
 *  - collect path: fault regions in the middle of a larger read-write
 *    mapping are written completely (their pages merge with the mapping
 *    around them, no VMA needed), then VMAs are exhausted, then collect's
 *    re-protect needs two splits per region and fails for most.  Every
 *    write is reported by the collect that follows it or the next one.
 *
 * The filler mappings alternate PROT_NONE and PROT_READ|PROT_WRITE (not
 * PROT_READ): a PROT_READ filler placed right next to a write-protected
 * region would merge with it, and then no mprotect() of the region alone
 * could ever succeed again without a new VMA, whatever cohmap does.
 */

#include "robust-util.h"

static size_t ps;

#if ROBUST_ASAN
/* At the limit malloc() must fail like libc's (NULL, which cohmap handles),
 * not abort the process as AddressSanitizer does by default. */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
   return "allocator_may_return_null=1";
}
#endif

struct filler {
   void **v;
   size_t n, cap;
};

static long
read_long(const char *path)
{
   FILE *f = fopen(path, "r");
   long v = -1;
   if (f) {
      if (fscanf(f, "%ld", &v) != 1)
         v = -1;
      fclose(f);
   }
   return v;
}

static long
map_count(void)
{
   FILE *f = fopen("/proc/self/maps", "r");
   long n = 0;
   int c;
   CHECK(f, "open maps");
   while ((c = fgetc(f)) != EOF)
      n += c == '\n';
   fclose(f);
   return n;
}

static void
filler_init(struct filler *f)
{
   long max = read_long("/proc/sys/vm/max_map_count");
   CHECK(max > 0, "cannot read vm.max_map_count");
   f->cap = (size_t)max + 1024;
   f->n = 0;
   f->v = mmap(NULL, f->cap * sizeof(void *), PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
   CHECK(f->v != MAP_FAILED, "mmap: %s", strerror(errno));
   printf("vm.max_map_count %ld, this process has %ld mappings\n", max,
          map_count());
}

/* Maps 1-page mappings until mmap() fails with ENOMEM. */
static void
filler_exhaust(struct filler *f)
{
   for (;;) {
      CHECK(f->n < f->cap, "more than vm.max_map_count mappings?");
      int prot = (f->n & 1) ? PROT_NONE : PROT_READ | PROT_WRITE;
      void *p = mmap(NULL, ps, prot,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) {
         CHECK(errno == ENOMEM, "mmap failed with %s, expected ENOMEM",
               strerror(errno));
         break;
      }
      f->v[f->n++] = p;
   }
}

static void
filler_release(struct filler *f, size_t k)
{
   while (k-- && f->n)
      munmap(f->v[--f->n], ps);
}

static void
filler_fini(struct filler *f)
{
   filler_release(f, f->n);
   munmap(f->v, f->cap * sizeof(void *));
}

static void
print_stats(struct cohmap_region *r, const char *what)
{
   struct cohmap_region_stats st;
   CHECK_OK(cohmap_region_get_stats(r, &st));
   printf("%s: method %s, %" PRIu64 " faults, %" PRIu64 " collects, %" PRIu64
          " method switches\n",
          what, robust_method_str(cohmap_region_method(r)), st.faults,
          st.collects, st.method_switches);
}

/* ---------------------------------------------------------------------- */

#define A_PAGES 4096

static int
handler_enomem(void)
{
   struct cohmap_dirty d;
   struct filler f;

   ps = robust_page_size();
   alarm(60);
   struct cohmap_context *ctx = robust_context_create(); /* no widening */
   if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
      return ROBUST_SKIP;
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, A_PAGES * ps, COHMAP_METHOD_FAULT, 0,
                                 &r));
   uint8_t *p = cohmap_region_ptr(r);
   struct robust_mirror m;
   robust_mirror_init(&m, p, A_PAGES * ps);
   filler_init(&f);
   CHECK_COLLECT(r, &d, "initial collect");
   /* Business as usual first. */
   for (size_t pg = 1; pg < A_PAGES; pg += 512)
      robust_mirror_write(&m, pg * ps, 1);
   CHECK_COLLECT(r, &d, "collect before exhaustion");
   robust_mirror_check(&m, &d, "collect before exhaustion");

   double t0 = robust_now();
   filler_exhaust(&f);
   filler_release(&f, 20);
   printf("exhausted: %zu filler mappings (%.2f s), 20 released\n", f.n,
          robust_now() - t0);

   /* Every other page: each unprotect splits a VMA. */
   t0 = robust_now();
   for (size_t pg = 0; pg < A_PAGES; pg += 2)
      robust_mirror_write(&m, pg * ps + pg % 97, (uint8_t)(pg | 1));
   printf("wrote %d pages in %.3f s\n", A_PAGES / 2, robust_now() - t0);
   print_stats(r, "after the writes");

   int rc = robust_collect(r, &d, "collect at vm.max_map_count");
   CHECK(rc == 0, "collect at vm.max_map_count returned %d (%s): %s", rc,
         robust_errstr(rc), cohmap_error_message());
   robust_mirror_check(&m, &d, "collect at vm.max_map_count");
   print_stats(r, "after the collect");
   CHECK(cohmap_region_method(r) != COHMAP_METHOD_FAULT,
         "the region is still tracked by fault after mprotect() failed with "
         "ENOMEM");

   /* Later writes, still at the limit. */
   for (unsigned cycle = 0; cycle < 2; cycle++) {
      for (size_t pg = 1 + cycle; pg < A_PAGES; pg += 3)
         robust_mirror_write(&m, pg * ps + 7, (uint8_t)(0x80 + cycle));
      CHECK_COLLECT(r, &d, "collect at the limit after the switch");
      robust_mirror_check(&m, &d, "collect at the limit after the switch");
   }

   filler_fini(&f);
   for (size_t pg = 0; pg < A_PAGES; pg += 5)
      robust_mirror_write(&m, pg * ps + 9, 0x99);
   CHECK_COLLECT(r, &d, "collect after the VMAs are given back");
   robust_mirror_check(&m, &d, "collect after the VMAs are given back");
   print_stats(r, "end");

   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   robust_mirror_fini(&m);
   /* Nothing is tracked any more: cohmap must not claim faults where the
    * region was. */
   void *again = mmap(p, A_PAGES * ps, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
   CHECK(again == p, "mmap where the region was: %s", strerror(errno));
   robust_expect_foreign_fault_kills(p + 5 * ps, "former region after destroy");
   munmap(again, A_PAGES * ps);
   return 0;
}

/* ---------------------------------------------------------------------- */

/* Under AddressSanitizer its allocator needs mappings of its own (it dies
 * with "Failed to mmap" at the limit): more headroom, and more regions so
 * that most re-protects still fail. */
#if ROBUST_ASAN
#define B_REGIONS 256
#define B_HEADROOM 128
#else
#define B_REGIONS 64
#define B_HEADROOM 4
#endif
#define B_PAGES 16

/* Pending (written, unreported) bytes at offset `at` within a page. */
static size_t
pending_at(const struct robust_mirror *m, size_t at)
{
   size_t n = 0;
   for (size_t off = at; off < m->size; off += ps)
      n += m->pending[off];
   return n;
}

static void
write_phase(struct robust_mirror *m, unsigned phase)
{
   for (size_t pg = 0; pg < B_PAGES; pg++)
      robust_mirror_write(m, pg * ps + phase, (uint8_t)(0x80 + 0x10 * phase + pg));
}

/* Collects every region, consuming what is reported; returns how many
 * collects failed. */
static unsigned
collect_all(struct cohmap_region **r, struct robust_mirror *m,
            const char *what, bool must_succeed)
{
   struct cohmap_dirty d;
   unsigned failed = 0, fault_left = 0;
   int first_rc = 0;
   for (unsigned i = 0; i < B_REGIONS; i++) {
      int rc = robust_collect(r[i], &d, what);
      if (rc) {
         CHECK(!must_succeed, "%s: region %u: collect returned %d (%s): %s",
               what, i, rc, robust_errstr(rc), cohmap_error_message());
         if (!failed)
            first_rc = rc;
         failed++;
         continue;
      }
      size_t first;
      robust_mirror_consume(&m[i], &d, what, &first);
      fault_left += cohmap_region_method(r[i]) == COHMAP_METHOD_FAULT;
   }
   printf("%s: %u of %d collects failed (first: %s), %u regions still on "
          "fault\n",
          what, failed, B_REGIONS, robust_errstr(first_rc), fault_left);
   return failed;
}

static int
collect_enomem(void)
{
   struct filler f;
   struct cohmap_region *r[B_REGIONS];
   struct robust_mirror m[B_REGIONS];

   ps = robust_page_size();
   alarm(60);
   struct cohmap_context *ctx = robust_context_create(); /* no widening */
   if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
      return ROBUST_SKIP;

   /* [pad][region 0][pad][region 1]...[pad], one populated mapping. */
   size_t stride = B_PAGES + 1;
   size_t total = (B_REGIONS * stride + 1) * ps;
   uint8_t *mem = robust_mmap(total, PROT_READ | PROT_WRITE);
   memset(mem, 0x33, total);
   for (unsigned i = 0; i < B_REGIONS; i++) {
      uint8_t *base = mem + (1 + i * stride) * ps;
      CHECK_OK(cohmap_region_wrap(ctx, base, B_PAGES * ps, COHMAP_METHOD_FAULT,
                                  0, &r[i]));
      robust_mirror_init(&m[i], base, B_PAGES * ps);
   }
   filler_init(&f);
   collect_all(r, m, "initial collects", true);

   /* W1: every page of every region.  Each region becomes writable again
    * and merges with the pads around it. */
   for (unsigned i = 0; i < B_REGIONS; i++)
      write_phase(&m[i], 1);

   double t0 = robust_now();
   filler_exhaust(&f);
   /* A few VMAs of headroom: collects need 2 each, so most fail. */
   size_t headroom = B_HEADROOM;
   filler_release(&f, headroom);
   printf("exhausted: %zu filler mappings (%.2f s), %zu released\n", f.n,
          robust_now() - t0, headroom);

   /* collect 1: re-protecting a region needs 2 splits.  It may fail (and
    * report nothing: then the next collect reports it all). */
   collect_all(r, m, "collect 1 at the limit", false);

   /* W2 while still at the limit (faults need splits too), then collect 2,
    * which must report all of W1. */
   for (unsigned i = 0; i < B_REGIONS; i++)
      write_phase(&m[i], 2);
   collect_all(r, m, "collect 2 at the limit", true);
   for (unsigned i = 0; i < B_REGIONS; i++) {
      size_t left = pending_at(&m[i], 1);
      CHECK(left == 0, "region %u: %zu bytes written before collect 1 were "
            "reported neither by it nor by collect 2", i, left);
   }

   /* W3, VMAs given back, collect 3 reports the rest of W2. */
   for (unsigned i = 0; i < B_REGIONS; i++)
      write_phase(&m[i], 3);
   filler_fini(&f);
   collect_all(r, m, "collect 3 after the VMAs are given back", true);
   for (unsigned i = 0; i < B_REGIONS; i++) {
      size_t left = pending_at(&m[i], 2);
      CHECK(left == 0, "region %u: %zu bytes written before collect 2 were "
            "reported neither by it nor by collect 3", i, left);
   }
   collect_all(r, m, "collect 4", true);
   for (unsigned i = 0; i < B_REGIONS; i++) {
      size_t left = robust_mirror_pending(&m[i]);
      CHECK(left == 0, "region %u: %zu bytes written before collect 3 were "
            "reported neither by it nor by collect 4", i, left);
   }

   /* And tracking goes on. */
   for (unsigned i = 0; i < B_REGIONS; i++)
      write_phase(&m[i], 4);
   collect_all(r, m, "collect 5", true);
   for (unsigned i = 0; i < B_REGIONS; i++) {
      size_t left = robust_mirror_pending(&m[i]);
      CHECK(left == 0, "region %u: %zu bytes written after collect 4 were not "
            "reported by collect 5", i, left);
   }
   print_stats(r[0], "region 0");
   print_stats(r[B_REGIONS - 1], "last region");

   for (unsigned i = 0; i < B_REGIONS; i++) {
      CHECK_OK(cohmap_region_destroy(r[i]));
      robust_mirror_fini(&m[i]);
   }
   CHECK_OK(cohmap_context_destroy(ctx));
   /* Nothing is tracked any more: cohmap must not claim faults there. */
   for (unsigned i = 0; i < B_REGIONS; i += B_REGIONS / 4)
      robust_expect_foreign_fault_kills(mem + (1 + i * stride) * ps + 3,
                                        "former region after destroy");
   munmap(mem, total);
   return 0;
}

ROBUST_MAIN(ROBUST_CASE_T(handler_enomem, 90), ROBUST_CASE_T(collect_enomem, 90))
