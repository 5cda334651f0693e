/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#include "test-util.h"
#include "util/tsan.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

size_t
tu_page_size(void)
{
   static size_t page_size;
   if (!page_size)
      page_size = (size_t)sysconf(_SC_PAGESIZE);
   return page_size;
}

double
tu_now(void)
{
   struct timespec ts;
   clock_gettime(CLOCK_MONOTONIC, &ts);
   return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* --- PRNG -------------------------------------------------------------- */

/* splitmix64: tiny, fast, and every 64-bit seed (0 included) gives a good
 * sequence, so seeds can be taken from the environment unchecked. */
void
tu_rng_seed(struct tu_rng *rng, uint64_t seed)
{
   rng->state = seed;
}

uint64_t
tu_rng_next(struct tu_rng *rng)
{
   uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);
   z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
   z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
   return z ^ (z >> 31);
}

uint64_t
tu_rng_below(struct tu_rng *rng, uint64_t bound)
{
   if (bound == 0)
      return 0;
   /* The modulo bias is irrelevant for test data. */
   return tu_rng_next(rng) % bound;
}

uint64_t
tu_rng_range(struct tu_rng *rng, uint64_t lo, uint64_t hi)
{
   return lo + tu_rng_below(rng, hi - lo + 1);
}

bool
tu_rng_percent(struct tu_rng *rng, unsigned percent)
{
   return tu_rng_below(rng, 100) < percent;
}

void
tu_rng_fill(struct tu_rng *rng, void *dst, size_t len)
{
   uint8_t *p = dst;
   while (len >= 8) {
      uint64_t v = tu_rng_next(rng);
      memcpy(p, &v, 8);
      p += 8;
      len -= 8;
   }
   if (len) {
      uint64_t v = tu_rng_next(rng);
      memcpy(p, &v, len);
   }
}

static uint64_t base_seed;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

static void
seed_init(void)
{
   const char *env = getenv("TEST_SEED");
   if (env && *env) {
      base_seed = strtoull(env, NULL, 0);
   } else {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      struct tu_rng rng;
      tu_rng_seed(&rng, (uint64_t)ts.tv_sec * 1000000000ull +
                           (uint64_t)ts.tv_nsec + (uint64_t)getpid());
      base_seed = tu_rng_next(&rng);
   }
   printf("# TEST_SEED=%" PRIu64 " (set TEST_SEED to replay)\n", base_seed);
   fflush(stdout);
}

uint64_t
tu_seed(void)
{
   pthread_once(&seed_once, seed_init);
   return base_seed;
}

uint64_t
tu_seed_for(const char *what)
{
   /* FNV-1a of the name, mixed with the base seed. */
   uint64_t h = 0xcbf29ce484222325ull;
   for (const char *c = what; *c; c++)
      h = (h ^ (uint8_t)*c) * 0x100000001b3ull;
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed() ^ h);
   return tu_rng_next(&rng);
}

/* --- methods ----------------------------------------------------------- */

const enum cohmap_method tu_methods[4] = {
   COHMAP_METHOD_SCAN,
   COHMAP_METHOD_FAULT,
   COHMAP_METHOD_COMPARE,
   COHMAP_METHOD_FULL,
};

bool
tu_method_is_page_granular(enum cohmap_method m)
{
   return m == COHMAP_METHOD_SCAN || m == COHMAP_METHOD_FAULT;
}

bool
tu_reports_exact(enum cohmap_method m, uint32_t region_flags)
{
   return m == COHMAP_METHOD_COMPARE ||
          (region_flags & COHMAP_REGION_BYTE_EXACT);
}

const char *
tu_variant_name(enum cohmap_method m, uint32_t region_flags, char *buf,
                size_t buf_size)
{
   const char *name = cohmap_method_name(m);
   snprintf(buf, buf_size, "%s%s%s", name ? name : "(unknown)",
            (region_flags & COHMAP_REGION_BYTE_EXACT) ? "+byte-exact" : "",
            (region_flags & COHMAP_REGION_ALLOW_THP) ? "+thp" : "");
   return buf;
}

struct cohmap_context *
tu_context_create(uint32_t fault_max_widen_pages, uint32_t flags)
{
   struct cohmap_context_options opts;
   cohmap_context_options_init(&opts);
   opts.flags |= COHMAP_CONTEXT_IGNORE_ENV | flags;
   if (fault_max_widen_pages)
      opts.fault_max_widen_pages = fault_max_widen_pages;

   struct cohmap_context *ctx = NULL;
   int ret = cohmap_context_create(&opts, &ctx);
   if (ret) {
      fprintf(stderr, "cohmap_context_create: %s (%s)\n", strerror(-ret),
              cohmap_error_message());
      return NULL;
   }
   return ctx;
}

bool
tu_method_available(struct cohmap_context *ctx, enum cohmap_method m,
                    bool *fatal)
{
   const char *reason = NULL;
   int ret = cohmap_context_method_status(ctx, m, &reason);
   *fatal = false;
   if (ret == 0)
      return true;
   if (m == COHMAP_METHOD_SCAN) {
      printf("# scan unavailable, not tested: %s (%s)\n",
             reason ? reason : "no reason given", strerror(-ret));
      return false;
   }
   fprintf(stderr, "method %s unavailable: %s (%s)\n",
           cohmap_method_name(m), reason ? reason : "no reason given",
           strerror(-ret));
   *fatal = true;
   return false;
}

/* --- memory ------------------------------------------------------------ */

void *
tu_map(size_t size, size_t align, bool huge)
{
   if (align < tu_page_size())
      align = tu_page_size();
   size_t total = size + align;
   uint8_t *raw = mmap(NULL, total, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
   if (raw == MAP_FAILED)
      return NULL;

   /* Trim to an aligned block so that huge pages can back it. */
   uintptr_t start = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
   size_t head = start - (uintptr_t)raw;
   if (head)
      munmap(raw, head);
   size_t tail = total - head - size;
   if (tail)
      munmap((uint8_t *)start + size, tail);

   madvise((void *)start, size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
   return (void *)start;
}

void
tu_unmap(void *ptr, size_t size)
{
   if (ptr)
      munmap(ptr, size);
}

long
tu_thp_bytes(const void *ptr, size_t size)
{
   FILE *f = fopen("/proc/self/smaps", "r");
   if (!f)
      return -1;

   uintptr_t lo = (uintptr_t)ptr, hi = lo + size;
   bool inside = false;
   long total = 0;
   char line[512];
   while (fgets(line, sizeof(line), f)) {
      unsigned long start, end;
      long kib;
      if (sscanf(line, "%lx-%lx ", &start, &end) == 2 &&
          strchr(line, '-') < strchr(line, ' ')) {
         inside = start < hi && end > lo;
      } else if (inside &&
                 sscanf(line, "AnonHugePages: %ld kB", &kib) == 1) {
         total += kib * 1024;
      }
   }
   fclose(f);
   return total;
}

/* --- collect results --------------------------------------------------- */

bool
tu_check_dirty_sorted_coalesced(const struct cohmap_dirty *d,
                                size_t region_size, const char *what)
{
   size_t sum = 0;
   if (d->count && !d->ranges) {
      fprintf(stderr, "%s: %zu ranges but no array\n", what, d->count);
      return false;
   }
   for (size_t i = 0; i < d->count; i++) {
      const struct cohmap_range *r = &d->ranges[i];
      if (r->length == 0) {
         fprintf(stderr, "%s: range %zu is empty (offset %zu)\n", what, i,
                 r->offset);
         return false;
      }
      if (r->offset > region_size || r->length > region_size - r->offset) {
         fprintf(stderr, "%s: range %zu [%zu, +%zu) leaves the region "
                 "(size %zu)\n", what, i, r->offset, r->length, region_size);
         return false;
      }
      if (i > 0) {
         const struct cohmap_range *p = &d->ranges[i - 1];
         /* Touching ranges must have been merged: a caller copying them
          * would issue two copies where one does. */
         if (r->offset <= p->offset + p->length) {
            fprintf(stderr, "%s: ranges %zu [%zu, +%zu) and %zu [%zu, +%zu) "
                    "are unsorted, overlapping or adjacent\n", what, i - 1,
                    p->offset, p->length, i, r->offset, r->length);
            return false;
         }
      }
      sum += r->length;
   }
   if (sum != d->bytes) {
      fprintf(stderr, "%s: bytes is %zu but the ranges sum to %zu\n", what,
              d->bytes, sum);
      return false;
   }
   if (d->count && !d->data) {
      fprintf(stderr, "%s: ranges reported but data is NULL\n", what);
      return false;
   }
   return true;
}

void
tu_apply_dirty(uint8_t *mirror, const struct cohmap_dirty *d)
{
   const uint8_t *data = d->data;
   /* Without a snapshot data is the live memory, which writer threads may
    * be storing to: the copy races with them as a device upload would,
    * and the tests' checkpoints tolerate it (util/tsan.h). */
   COHMAP_APP_MEMORY_READ_BEGIN();
   for (size_t i = 0; i < d->count; i++)
      memcpy(mirror + d->ranges[i].offset, data + d->ranges[i].offset,
             d->ranges[i].length);
   COHMAP_APP_MEMORY_READ_END();
}

size_t
tu_dirty_pages(const struct cohmap_dirty *d)
{
   size_t page = tu_page_size(), pages = 0;
   for (size_t i = 0; i < d->count; i++) {
      size_t first = d->ranges[i].offset / page;
      size_t last = (d->ranges[i].offset + d->ranges[i].length - 1) / page;
      pages += last - first + 1;
   }
   return pages;
}

static void
print_ranges(const char *label, const struct cohmap_range *v, size_t count)
{
   fprintf(stderr, "  %s (%zu):", label, count);
   for (size_t i = 0; i < count && i < 16; i++)
      fprintf(stderr, " [%#zx, +%#zx)", v[i].offset, v[i].length);
   if (count > 16)
      fprintf(stderr, " ...");
   fprintf(stderr, "\n");
}

bool
tu_dirty_equals(const struct cohmap_dirty *d,
                const struct cohmap_range *expect, size_t count,
                const char *what)
{
   bool same = d->count == count;
   for (size_t i = 0; same && i < count; i++)
      same = d->ranges[i].offset == expect[i].offset &&
             d->ranges[i].length == expect[i].length;
   if (!same) {
      fprintf(stderr, "%s: reported ranges differ from the expected ones\n",
              what);
      print_ranges("expected", expect, count);
      print_ranges("reported", d->ranges, d->count);
   }
   return same;
}

bool
tu_mirror_matches(const uint8_t *mirror, const uint8_t *mem, size_t size,
                  const char *what)
{
   if (memcmp(mirror, mem, size) == 0)
      return true;
   size_t i = 0;
   while (mirror[i] == mem[i])
      i++;
   size_t n = 0;
   for (size_t j = i; j < size; j++)
      n += mirror[j] != mem[j];
   fprintf(stderr, "%s: mirror differs from memory: first at offset %#zx "
           "(page %zu): mirror %#04x, memory %#04x; %zu bytes differ -- a "
           "lost write\n", what, i, i / tu_page_size(), mirror[i], mem[i], n);
   return false;
}

/* --- model ------------------------------------------------------------- */

bool
tu_model_init(struct tu_model *m, void *mem, size_t size)
{
   memset(m, 0, sizeof(*m));
   m->size = size;
   m->page_size = tu_page_size();
   m->npages = (size + m->page_size - 1) / m->page_size;
   m->mem = mem;
   /* The mirror is the test's own memory, never tracked: huge pages make
    * populating a big one cheap (page faults are slow in VMs). */
   m->mirror = tu_map(size, size >= TU_HUGE_PAGE_SIZE ? TU_HUGE_PAGE_SIZE
                                                      : 0, true);
   m->written = calloc(size / 8 + 1, 1);
   m->page_written = calloc(m->npages, 1);
   m->page_reported = calloc(m->npages, 1);
   if (!m->mirror || !m->written || !m->page_written || !m->page_reported) {
      tu_model_fini(m);
      return false;
   }
   memcpy(m->mirror, mem, size);
   return true;
}

void
tu_model_fini(struct tu_model *m)
{
   tu_unmap(m->mirror, m->size);
   free(m->written);
   free(m->page_written);
   free(m->page_reported);
   free(m->scratch);
   memset(m, 0, sizeof(*m));
}

static void
mark_written(struct tu_model *m, size_t off, size_t len)
{
   for (size_t i = off; i < off + len; i++)
      m->written[i / 8] |= (uint8_t)(1u << (i % 8));
   for (size_t p = off / m->page_size; p <= (off + len - 1) / m->page_size;
        p++) {
      if (!m->page_written[p]) {
         m->page_written[p] = 1;
         m->pages_written++;
      }
   }
}

static bool
is_written(const struct tu_model *m, size_t i)
{
   return m->written[i / 8] & (1u << (i % 8));
}

/* Volatile stores: every byte is really stored, even when it stores the
 * value already there, which the compiler would otherwise drop.  A page
 * method must see such a store. */
void
tu_model_write(struct tu_model *m, size_t off, const void *src, size_t len)
{
   if (!len)
      return;
   volatile uint8_t *dst = m->mem + off;
   const uint8_t *s = src;
   for (size_t i = 0; i < len; i++)
      dst[i] = s[i];
   mark_written(m, off, len);
}

void
tu_model_fill(struct tu_model *m, size_t off, uint8_t value, size_t len)
{
   if (!len)
      return;
   volatile uint8_t *dst = m->mem + off;
   for (size_t i = 0; i < len; i++)
      dst[i] = value;
   mark_written(m, off, len);
}

void
tu_model_rewrite(struct tu_model *m, size_t off, size_t len)
{
   if (!len)
      return;
   volatile uint8_t *dst = m->mem + off;
   for (size_t i = 0; i < len; i++)
      dst[i] = dst[i];
   mark_written(m, off, len);
}

void
tu_model_bump(struct tu_model *m, size_t off, size_t len)
{
   if (!len)
      return;
   volatile uint8_t *dst = m->mem + off;
   for (size_t i = 0; i < len; i++)
      dst[i] = (uint8_t)(dst[i] + 1);
   mark_written(m, off, len);
}

void
tu_model_random_write(struct tu_model *m, struct tu_rng *rng)
{
   size_t max_len = 3 * m->page_size;
   if (max_len > m->size)
      max_len = m->size;

   /* Mostly small stores, as a CPU filling vertex or uniform data does,
    * with some that cross one or two page boundaries. */
   size_t len;
   unsigned kind = (unsigned)tu_rng_below(rng, 100);
   if (kind < 50)
      len = (size_t)tu_rng_range(rng, 1, 16 < max_len ? 16 : max_len);
   else if (kind < 80)
      len = (size_t)tu_rng_range(rng, 1, m->page_size < max_len ?
                                             m->page_size : max_len);
   else
      len = (size_t)tu_rng_range(rng, 1, max_len);
   size_t off = (size_t)tu_rng_below(rng, m->size - len + 1);

   uint8_t buf[3 * 65536];
   if (len > sizeof(buf))
      len = sizeof(buf);

   unsigned value_kind = (unsigned)tu_rng_below(rng, 100);
   if (value_kind < 55) {
      /* New random values (a byte may still happen to keep its value). */
      tu_rng_fill(rng, buf, len);
      tu_model_write(m, off, buf, len);
   } else if (value_kind < 70) {
      /* The same values: written, but nothing changed. */
      tu_model_rewrite(m, off, len);
   } else if (value_kind < 85) {
      /* Some bytes changed, the others stored unchanged. */
      memcpy(buf, m->mem + off, len);
      for (size_t i = 0; i < len; i++) {
         if (tu_rng_percent(rng, 30))
            buf[i] = (uint8_t)tu_rng_next(rng);
      }
      tu_model_write(m, off, buf, len);
   } else {
      /* Changed and changed back: written, but equal to the mirror. */
      memcpy(buf, m->mem + off, len);
      tu_model_bump(m, off, len);
      tu_model_write(m, off, buf, len);
   }
}

size_t
tu_chunk_runs(struct cohmap_range *v, size_t n, size_t chunk, size_t size)
{
   size_t out = 0;

   for (size_t i = 0; i < n && chunk; i++) {
      size_t start = v[i].offset / chunk * chunk;
      size_t end = (v[i].offset + v[i].length + chunk - 1) / chunk * chunk;
      if (end > size)
         end = size;
      if (out && v[out - 1].offset + v[out - 1].length >= start) {
         v[out - 1].length = end - v[out - 1].offset;
         continue;
      }
      v[out++] = (struct cohmap_range){start, end - start};
   }
   return chunk ? out : n;
}

struct tu_expect
tu_expect_for(enum cohmap_method m, uint32_t region_flags,
              size_t fault_widen_pages, bool thp)
{
   struct tu_expect e = {0};
   /* BYTE_EXACT narrows any method, full included, to the changed bytes. */
   if (tu_reports_exact(m, region_flags)) {
      e.kind = TU_EXPECT_EXACT;
      /* src/track/region.c, REFINE_CHUNK. */
      if (!(region_flags & COHMAP_REGION_BYTE_EXACT))
         e.chunk = 64;
   } else if (m == COHMAP_METHOD_FULL) {
      e.kind = TU_EXPECT_WHOLE;
   } else {
      e.kind = TU_EXPECT_PAGES;
      if (m == COHMAP_METHOD_FAULT)
         e.widen_pages = fault_widen_pages;
      if (thp)
         e.block_size = TU_HUGE_PAGE_SIZE;
   }
   return e;
}

static bool
scratch_add(struct tu_model *m, size_t *count, size_t off)
{
   if (*count && m->scratch[*count - 1].offset +
                        m->scratch[*count - 1].length == off) {
      m->scratch[*count - 1].length++;
      return true;
   }
   if (*count == m->scratch_capacity) {
      size_t cap = m->scratch_capacity ? m->scratch_capacity * 2 : 256;
      struct cohmap_range *v = realloc(m->scratch, cap * sizeof(*v));
      if (!v)
         return false;
      m->scratch = v;
      m->scratch_capacity = cap;
   }
   m->scratch[(*count)++] = (struct cohmap_range){off, 1};
   return true;
}

/* Builds the list of changed runs (memory != mirror) in m->scratch.  Only
 * written pages can hold changed bytes; a changed byte that was not
 * written means something other than the test modified tracked memory. */
static bool
changed_runs(struct tu_model *m, size_t *count, const char *what)
{
   *count = 0;
   for (size_t p = 0; p < m->npages; p++) {
      if (!m->page_written[p])
         continue;
      size_t start = p * m->page_size;
      size_t end = start + m->page_size;
      if (end > m->size)
         end = m->size;
      if (memcmp(m->mem + start, m->mirror + start, end - start) == 0)
         continue;
      for (size_t i = start; i < end; i++) {
         if (m->mem[i] == m->mirror[i])
            continue;
         if (!is_written(m, i)) {
            fprintf(stderr, "%s: byte %#zx changed but the test never "
                    "wrote it (memory modified behind the test's back)\n",
                    what, i);
            return false;
         }
         if (!scratch_add(m, count, i)) {
            fprintf(stderr, "%s: out of memory\n", what);
            return false;
         }
      }
   }
   return true;
}

static bool
covers(const struct cohmap_dirty *d, const struct cohmap_range *changed,
       size_t count, const char *what)
{
   size_t j = 0;
   for (size_t i = 0; i < count; i++) {
      size_t off = changed[i].offset, end = off + changed[i].length;
      while (off < end) {
         while (j < d->count &&
                d->ranges[j].offset + d->ranges[j].length <= off)
            j++;
         if (j == d->count || d->ranges[j].offset > off) {
            fprintf(stderr, "%s: changed byte %#zx (page %zu) was not "
                    "reported -- a lost write\n", what, off,
                    off / tu_page_size());
            print_ranges("changed", changed, count);
            print_ranges("reported", d->ranges, d->count);
            return false;
         }
         off = d->ranges[j].offset + d->ranges[j].length;
      }
   }
   return true;
}

static bool
block_has_written_page(const struct tu_model *m, size_t page,
                       size_t block_size)
{
   size_t per_block = block_size / m->page_size;
   if (per_block == 0)
      return false;
   /* Blocks are aligned in the address space, not in the region. */
   uintptr_t addr = (uintptr_t)m->mem + page * m->page_size;
   uintptr_t block = addr & ~(uintptr_t)(block_size - 1);
   size_t first = block < (uintptr_t)m->mem ?
                     0 : (block - (uintptr_t)m->mem) / m->page_size;
   size_t last = (block + block_size - (uintptr_t)m->mem) / m->page_size;
   if (last > m->npages)
      last = m->npages;
   for (size_t p = first; p < last; p++) {
      if (m->page_written[p])
         return true;
   }
   return false;
}

/* Checks the reported pages against the written ones.  whole_pages: the
 * method reports whole pages, and every written page (not only the
 * changed bytes, which covers() checks). */
static bool
check_pages(struct tu_model *m, const struct cohmap_dirty *d,
            const struct tu_expect *e, bool whole_pages, const char *what)
{
   bool ok = true;
   memset(m->page_reported, 0, m->npages);
   for (size_t i = 0; i < d->count; i++) {
      const struct cohmap_range *r = &d->ranges[i];
      if (whole_pages && (r->offset % m->page_size ||
                          r->length % m->page_size)) {
         fprintf(stderr, "%s: page-granular method reported [%#zx, +%#zx), "
                 "not whole pages\n", what, r->offset, r->length);
         return false;
      }
      size_t first = r->offset / m->page_size;
      size_t last = (r->offset + r->length - 1) / m->page_size;
      memset(m->page_reported + first, 1, last - first + 1);
   }

   size_t last_written = SIZE_MAX;
   size_t extra = 0;
   for (size_t p = 0; p < m->npages && ok; p++) {
      if (m->page_written[p]) {
         last_written = p;
         if (whole_pages && !m->page_reported[p]) {
            fprintf(stderr, "%s: page %zu was written but not reported\n",
                    what, p);
            ok = false;
         }
         continue;
      }
      if (!m->page_reported[p])
         continue;
      if (e->widen_pages > 1 && last_written != SIZE_MAX &&
          p - last_written < e->widen_pages) {
         extra++;
         continue;
      }
      if (e->block_size && block_has_written_page(m, p, e->block_size)) {
         extra++;
         continue;
      }
      fprintf(stderr, "%s: page %zu was reported but not written (%s)\n",
              what, p,
              e->widen_pages > 1 ? "nor within the fault widening window"
              : e->block_size ? "nor in a huge page with a written page"
                              : "over-report");
      ok = false;
   }
   if (!ok) {
      fprintf(stderr, "  %zu pages written\n", m->pages_written);
      print_ranges("reported", d->ranges, d->count);
   }
   return ok;
}

bool
tu_model_collected(struct tu_model *m, const struct cohmap_dirty *d,
                   const struct tu_expect *e, const char *what)
{
   if (!tu_check_dirty_sorted_coalesced(d, m->size, what))
      return false;

   size_t nchanged;
   if (!changed_runs(m, &nchanged, what))
      return false;
   if (!covers(d, m->scratch, nchanged, what))
      return false;

   switch (e->kind) {
   case TU_EXPECT_EXACT:
      nchanged = tu_chunk_runs(m->scratch, nchanged, e->chunk, m->size);
      if (!tu_dirty_equals(d, m->scratch, nchanged, what))
         return false;
      break;
   case TU_EXPECT_WHOLE: {
      struct cohmap_range whole = {0, m->size};
      if (!tu_dirty_equals(d, &whole, 1, what))
         return false;
      break;
   }
   case TU_EXPECT_PAGES:
      if (!check_pages(m, d, e, true, what))
         return false;
      break;
   case TU_EXPECT_SUPERSET:
      if (e->within_written_pages && !check_pages(m, d, e, false, what))
         return false;
      break;
   }

   tu_apply_dirty(m->mirror, d);
   if (!tu_mirror_matches(m->mirror, m->mem, m->size, what))
      return false;

   for (size_t p = 0; p < m->npages; p++) {
      if (!m->page_written[p])
         continue;
      size_t start = p * m->page_size;
      size_t end = start + m->page_size < m->size ? start + m->page_size
                                                  : m->size;
      /* Pages are multiples of 8 bytes, so whole bitmap bytes clear. */
      memset(m->written + start / 8, 0, (end - start + 7) / 8);
      m->page_written[p] = 0;
   }
   m->pages_written = 0;
   return true;
}

bool
tu_model_collect(struct tu_model *m, struct cohmap_region *region,
                 const struct tu_expect *e, const char *what)
{
   struct cohmap_dirty d;
   int ret = cohmap_region_collect(region, 0, &d);
   if (ret) {
      fprintf(stderr, "%s: cohmap_region_collect: %s (%s)\n", what,
              strerror(-ret), cohmap_error_message());
      return false;
   }
   return tu_model_collected(m, &d, e, what);
}

/* --- writer threads ---------------------------------------------------- */

/* Stores between checks for pause/stop, and bursts before a writer
 * yields: often enough that on two CPUs the collecting thread keeps a
 * share, rarely enough that stores really race the collects. */
#define WRITER_BURST 32
#define WRITER_BURSTS_PER_YIELD 8

struct tu_writer {
   struct tu_writers *w;
   unsigned index;
   pthread_t thread;
   bool started;
};

struct tu_writers {
   _Atomic uint64_t *slots;
   size_t first_slot, nslots;
   uint64_t seed;
   unsigned count;
   atomic_bool stop;
   atomic_bool pause;
   atomic_uint paused;
   atomic_uint_fast64_t stores;
   atomic_uint running;
   atomic_uint_fast64_t bursts;
   struct tu_writer writer[];
};

static void *
writer_main(void *arg)
{
   struct tu_writer *me = arg;
   struct tu_writers *w = me->w;
   struct tu_rng rng;
   tu_rng_seed(&rng, w->seed + me->index);
   uint64_t seq = (uint64_t)(me->index + 1) << 56;
   uint64_t stores = 0;
   unsigned bursts = 0;

   atomic_fetch_add(&w->running, 1);
   while (!atomic_load(&w->stop)) {
      if (atomic_load(&w->pause)) {
         /* Every store of this thread has completed here (seq_cst). */
         atomic_fetch_add(&w->paused, 1);
         while (atomic_load(&w->pause) && !atomic_load(&w->stop))
            sched_yield();
         atomic_fetch_sub(&w->paused, 1);
         continue;
      }
      for (int i = 0; i < WRITER_BURST; i++) {
         size_t slot = w->first_slot + (size_t)tu_rng_below(&rng, w->nslots);
         /* Atomic, so that a racing reader never sees a torn slot in the
          * final state, and so that the race is defined behaviour. */
         atomic_store_explicit(&w->slots[slot], ++seq, memory_order_relaxed);
      }
      stores += WRITER_BURST;
      atomic_fetch_add_explicit(&w->bursts, 1, memory_order_relaxed);
      if (++bursts % WRITER_BURSTS_PER_YIELD == 0)
         sched_yield();
   }
   atomic_fetch_add(&w->stores, stores);
   return NULL;
}

struct tu_writers *
tu_writers_start(void *mem, size_t first_slot, size_t nslots,
                 unsigned count, uint64_t seed)
{
   struct tu_writers *w =
      calloc(1, sizeof(*w) + count * sizeof(w->writer[0]));
   if (!w)
      return NULL;
   w->slots = (_Atomic uint64_t *)mem;
   w->first_slot = first_slot;
   w->nslots = nslots;
   w->seed = seed;
   w->count = count;
   for (unsigned i = 0; i < count; i++) {
      w->writer[i] = (struct tu_writer){.w = w, .index = i};
      if (pthread_create(&w->writer[i].thread, NULL, writer_main,
                         &w->writer[i]) != 0) {
         tu_writers_stop(w);
         return NULL;
      }
      w->writer[i].started = true;
   }
   /* Races need writers that run: wait until all of them do. */
   while (atomic_load(&w->running) != count)
      sched_yield();
   return w;
}

void
tu_writers_wait_progress(struct tu_writers *w)
{
   uint_fast64_t start = atomic_load(&w->bursts);
   /* Bounded: a writer starved for long only weakens the test. */
   for (int i = 0; i < 10000 && atomic_load(&w->bursts) == start; i++)
      sched_yield();
}

void
tu_writers_pause(struct tu_writers *w)
{
   atomic_store(&w->pause, true);
   while (atomic_load(&w->paused) != w->count)
      sched_yield();
}

void
tu_writers_resume(struct tu_writers *w)
{
   atomic_store(&w->pause, false);
   /* Wait until they are all running again, so that the next pause cannot
    * count a writer that has not left the previous one. */
   while (atomic_load(&w->paused) != 0)
      sched_yield();
}

uint64_t
tu_writers_stop(struct tu_writers *w)
{
   atomic_store(&w->stop, true);
   for (unsigned i = 0; i < w->count; i++) {
      if (w->writer[i].started)
         pthread_join(w->writer[i].thread, NULL);
   }
   uint64_t stores = atomic_load(&w->stores);
   free(w);
   return stores;
}

/* --- SIGSEGV sentinel -------------------------------------------------- */

/* A fault the library keeps passing on for the same page would loop
 * forever (the store retries): give up after this many. */
#define SENTINEL_MAX_FAULTS 100000

static struct sigaction sentinel_previous;
static _Atomic uintptr_t sentinel_start, sentinel_end;
static atomic_uint_fast64_t sentinel_faults;
static _Atomic uintptr_t sentinel_first;

static void
sentinel_write(const char *msg)
{
   ssize_t ret = write(STDERR_FILENO, msg, strlen(msg));
   (void)ret;
}

static void
sentinel_handler(int sig, siginfo_t *info, void *uctx)
{
   uintptr_t addr = (uintptr_t)info->si_addr;
   if (addr >= atomic_load(&sentinel_start) &&
       addr < atomic_load(&sentinel_end)) {
      uintptr_t none = 0;
      atomic_compare_exchange_strong(&sentinel_first, &none, addr);
      if (atomic_fetch_add(&sentinel_faults, 1) < SENTINEL_MAX_FAULTS)
         return;
      /* Diagnostics on the way out: not async-signal-safe, but the
       * process ends here anyway. */
      char msg[256];
      snprintf(msg, sizeof(msg), "test sentinel: cohmap keeps passing on "
               "SIGSEGVs in tracked memory (offset %#lx, si_code %d): a "
               "page stays protected with nobody to unprotect it; giving "
               "up.  Mappings of the region:\n",
               (unsigned long)(addr - atomic_load(&sentinel_start)),
               info->si_code);
      sentinel_write(msg);
      FILE *f = fopen("/proc/self/maps", "r");
      char line[256];
      while (f && fgets(line, sizeof(line), f)) {
         unsigned long start, end;
         if (sscanf(line, "%lx-%lx", &start, &end) == 2 &&
             start < atomic_load(&sentinel_end) &&
             end > atomic_load(&sentinel_start))
            sentinel_write(line);
      }
      _exit(1);
   }
   /* Not ours either: die as the process would have. */
   signal(sig, SIG_DFL);
}

void
tu_segv_sentinel_watch(const void *mem, size_t size)
{
   atomic_store(&sentinel_start, (uintptr_t)mem);
   atomic_store(&sentinel_end, (uintptr_t)mem + size);
}

void
tu_segv_sentinel_install(void)
{
   tu_segv_sentinel_watch(NULL, 0);
   atomic_store(&sentinel_faults, 0);
   atomic_store(&sentinel_first, 0);
   struct sigaction sa;
   memset(&sa, 0, sizeof(sa));
   sa.sa_sigaction = sentinel_handler;
   sa.sa_flags = SA_SIGINFO;
   sigemptyset(&sa.sa_mask);
   sigaction(SIGSEGV, &sa, &sentinel_previous);
}

uint64_t
tu_segv_sentinel_remove(size_t *first_offset)
{
   sigaction(SIGSEGV, &sentinel_previous, NULL);
   uint64_t n = atomic_load(&sentinel_faults);
   uintptr_t first = atomic_load(&sentinel_first);
   *first_offset = first ? first - atomic_load(&sentinel_start) : 0;
   atomic_store(&sentinel_start, 0);
   atomic_store(&sentinel_end, 0);
   if (n)
      fprintf(stderr, "cohmap passed %" PRIu64 " write faults in tracked "
              "memory on to the previous SIGSEGV handler (first at offset "
              "%#zx); without a handler below cohmap's the process would "
              "have been killed\n", n, *first_offset);
   return n;
}
