/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: shared test helpers
 *
 * The tracking tests all follow the same pattern: write to a tracked
 * region, collect, check the reported ranges against what was written, and
 * copy the reported bytes into a *mirror* standing in for the device's
 * copy.  After every collect the mirror must equal the memory: that single
 * check is what "no lost write" means.  These helpers hold the pieces: a
 * seeded PRNG (TEST_SEED overrides the seed, so that any failure can be
 * replayed), a model of what was written, and the oracle that compares a
 * collect against the model.
 *
 * The check functions print what went wrong and return false instead of
 * failing themselves, so that they can be called from threads and from
 * code that must clean up first; callers wrap them in assert_true().
 */

#ifndef COHMAP_TEST_UTIL_H
#define COHMAP_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cohmap/cohmap.h"

#define TU_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define TU_KIB ((size_t)1024)
#define TU_MIB ((size_t)1024 * 1024)
#define TU_HUGE_PAGE_SIZE (2 * TU_MIB)

/* The exit status meson reads as "skipped". */
#define TU_EXIT_SKIP 77

size_t tu_page_size(void);

/* Monotonic time in seconds. */
double tu_now(void);

/* --- PRNG -------------------------------------------------------------- */

struct tu_rng {
   uint64_t state;
};

void tu_rng_seed(struct tu_rng *rng, uint64_t seed);
uint64_t tu_rng_next(struct tu_rng *rng);
/* Uniform in [0, bound); bound 0 gives 0. */
uint64_t tu_rng_below(struct tu_rng *rng, uint64_t bound);
/* Uniform in [lo, hi]. */
uint64_t tu_rng_range(struct tu_rng *rng, uint64_t lo, uint64_t hi);
bool tu_rng_percent(struct tu_rng *rng, unsigned percent);
void tu_rng_fill(struct tu_rng *rng, void *dst, size_t len);

/* The program's base seed: TEST_SEED from the environment if set, else
 * derived from the time.  Printed on first use so a failure can be
 * replayed with TEST_SEED=<seed>. */
uint64_t tu_seed(void);
/* A seed for one named sub-test, derived from the base seed, so that each
 * sub-test's sequence does not depend on which others ran. */
uint64_t tu_seed_for(const char *what);

/* --- methods ----------------------------------------------------------- */

/* The four concrete methods, in enum order. */
extern const enum cohmap_method tu_methods[4];
#define TU_METHODS_COUNT 4

/* scan and fault report whole pages. */
bool tu_method_is_page_granular(enum cohmap_method m);
/* compare, and any method with a snapshot, report exact byte runs. */
bool tu_reports_exact(enum cohmap_method m, uint32_t region_flags);

/* "fault+byte-exact"-style names for messages; returns buf. */
const char *tu_variant_name(enum cohmap_method m, uint32_t region_flags,
                            char *buf, size_t buf_size);

/* Creates a context that ignores COHMAP_* from the environment.
 * fault_max_widen_pages 0 keeps the library default.  flags are ORed into
 * the context flags.  Returns NULL (after printing why) on failure. */
struct cohmap_context *tu_context_create(uint32_t fault_max_widen_pages,
                                         uint32_t flags);

/* True if m works in ctx.  Only scan may legitimately be missing (an old
 * kernel, userfaultfd disabled): for it, prints the reason and returns
 * false.  For any other method a missing method is a failure: prints and
 * returns false with *fatal set. */
bool tu_method_available(struct cohmap_context *ctx, enum cohmap_method m,
                         bool *fatal);

/* --- memory ------------------------------------------------------------ */

/* Anonymous read-write memory aligned to align (a power of two, at least
 * a page), with MADV_HUGEPAGE if huge else MADV_NOHUGEPAGE, so that the
 * system's THP mode does not decide what a test measures. */
void *tu_map(size_t size, size_t align, bool huge);
void tu_unmap(void *ptr, size_t size);

/* Bytes of ptr..ptr+size currently backed by huge pages (from
 * /proc/self/smaps), or -1 if unknown. */
long tu_thp_bytes(const void *ptr, size_t size);

/* --- collect results --------------------------------------------------- */

/* Checks the structural contract of a collect: ranges inside the region,
 * non-empty, sorted, non-overlapping and non-adjacent; bytes is the sum;
 * data is set when anything is reported. */
bool tu_check_dirty_sorted_coalesced(const struct cohmap_dirty *d,
                                     size_t region_size, const char *what);

/* Copies every reported range from d->data into mirror. */
void tu_apply_dirty(uint8_t *mirror, const struct cohmap_dirty *d);

/* Pages (of the system page size) touched by the ranges. */
size_t tu_dirty_pages(const struct cohmap_dirty *d);

/* Compares the reported ranges with an expected list (offset, length
 * pairs); prints both on mismatch. */
bool tu_dirty_equals(const struct cohmap_dirty *d,
                     const struct cohmap_range *expect, size_t count,
                     const char *what);

/* Checks mirror == mem and prints the first difference. */
bool tu_mirror_matches(const uint8_t *mirror, const uint8_t *mem,
                       size_t size, const char *what);

/* --- model ------------------------------------------------------------- */

/*
 * What a single-threaded test knows about a region: the mirror (the state
 * the device was last given, updated only from collects) and which bytes
 * and pages were stored to since the last collect.  Bytes that differ
 * between memory and mirror are the "changed" bytes; every one of them
 * must be among the written bytes, and must be reported.
 */
struct tu_model {
   size_t size;
   size_t page_size;
   size_t npages;
   uint8_t *mem;          /* the tracked memory */
   uint8_t *mirror;       /* the device's copy */
   uint8_t *written;      /* bitmap: bytes stored to since the collect */
   uint8_t *page_written; /* one flag per page */
   uint8_t *page_reported; /* scratch for the oracle */
   size_t pages_written;  /* number of flags set in page_written */
   struct cohmap_range *scratch; /* expected runs for exact checks */
   size_t scratch_capacity;
};

/* mirror starts as a copy of mem: what the device already has.  (Tests of
 * COHMAP_REGION_INITIAL_DIRTY reset it to something else.) */
bool tu_model_init(struct tu_model *m, void *mem, size_t size);
void tu_model_fini(struct tu_model *m);

/* Stores len bytes of src at off (each byte stored exactly once, in
 * order) and records them as written. */
void tu_model_write(struct tu_model *m, size_t off, const void *src,
                    size_t len);
/* Stores value to len bytes at off. */
void tu_model_fill(struct tu_model *m, size_t off, uint8_t value,
                   size_t len);
/* Stores each byte's current value back: a write that changes nothing. */
void tu_model_rewrite(struct tu_model *m, size_t off, size_t len);
/* Adds one to each byte: a write that changes every byte. */
void tu_model_bump(struct tu_model *m, size_t off, size_t len);

/* One random write: random offset, length 1 byte .. 3 pages, random
 * values, same values, or a value changed and changed back. */
void tu_model_random_write(struct tu_model *m, struct tu_rng *rng);

/* What a collect may report beyond the written pages. */
struct tu_expect {
   enum tu_expect_kind {
      TU_EXPECT_PAGES, /* exactly the written pages (plus allowances) */
      TU_EXPECT_EXACT, /* exactly the changed bytes */
      TU_EXPECT_WHOLE, /* the whole region */
      TU_EXPECT_SUPERSET, /* anything that covers the changed bytes */
   } kind;
   /* TU_EXPECT_SUPERSET: but nothing outside the written pages (and the
    * allowances below). */
   bool within_written_pages;
   /* TU_EXPECT_PAGES: a page not written may still be reported if a
    * written page precedes it by fewer than this many pages (fault's
    * unprotect-ahead); 0 or 1 allows nothing. */
   size_t widen_pages;
   /* TU_EXPECT_PAGES: a page not written may still be reported if it
    * shares an aligned block of this size with a written page (THP); 0
    * allows nothing. */
   size_t block_size;
   /* TU_EXPECT_EXACT: changes are reported as the aligned chunks of
    * this size that hold them (compare without BYTE_EXACT); 0: exact. */
   size_t chunk;
};

/* Rounds ascending runs out to aligned chunks (clamped to size) and joins
 * the ones that then touch, in place; returns the new count.  What
 * compare reports on a region that is not BYTE_EXACT. */
size_t tu_chunk_runs(struct cohmap_range *v, size_t n, size_t chunk,
                     size_t size);

/* The strict expectation for a method on a region without THP. */
struct tu_expect tu_expect_for(enum cohmap_method m, uint32_t region_flags,
                               size_t fault_widen_pages, bool thp);

/* The oracle: checks a collect against the model (structure, superset of
 * the changed bytes, and the expectation), then copies the reported bytes
 * into the mirror, checks mirror == memory and forgets what was written.
 * Prints what went wrong, prefixed with what. */
bool tu_model_collected(struct tu_model *m, const struct cohmap_dirty *d,
                        const struct tu_expect *expect, const char *what);

/* Collects region and runs tu_model_collected(); also fails if collect
 * fails. */
bool tu_model_collect(struct tu_model *m, struct cohmap_region *region,
                      const struct tu_expect *expect, const char *what);

/* --- writer threads ---------------------------------------------------- */

/*
 * Threads storing increasing 64-bit sequence numbers (the writer's index in
 * the top byte, so no slot ever gets back a value it had) into random
 * 8-byte-aligned slots [first_slot, first_slot + nslots) of mem, in bursts,
 * yielding between bursts so that a collecting thread gets its share of two
 * CPUs.  Pausing waits until every writer has finished its current store:
 * a collect called then must report everything.
 */
struct tu_writers;

struct tu_writers *tu_writers_start(void *mem, size_t first_slot,
                                    size_t nslots, unsigned count,
                                    uint64_t seed);
/* Waits (boundedly) until some writer has stored a burst: on two CPUs
 * the collecting thread would otherwise often collect again before any
 * writer ran, and nothing would race. */
void tu_writers_wait_progress(struct tu_writers *w);
void tu_writers_pause(struct tu_writers *w);
void tu_writers_resume(struct tu_writers *w);
/* Stops and joins the writers, frees w, returns the number of stores. */
uint64_t tu_writers_stop(struct tu_writers *w);

/* --- SIGSEGV sentinel -------------------------------------------------- */

/*
 * Installs a SIGSEGV handler below cohmap's (call it before the first fault
 * region is created, remove it after the last is destroyed).  cohmap must
 * resolve every write fault in tracked memory itself and pass on only the
 * others; a fault inside [mem, mem + size) that reaches the sentinel was
 * passed on wrongly -- without the sentinel the process would die.  The
 * sentinel counts it and returns, so that the store is retried and the
 * test can report the bug instead of crashing.  One at a time.
 *
 * cohmap installs its handler once per process, over whatever handler is
 * current then, and later re-installs it only over that same disposition
 * (a harness restored it).  So in a program that uses the sentinel, call
 * tu_segv_sentinel_install() at the start of every test that uses fault,
 * before the region exists: cohmap then always sits on the sentinel.
 */
void tu_segv_sentinel_install(void);
/* Sets the tracked memory the sentinel watches (known only once the
 * region exists, after the sentinel must already be in place). */
void tu_segv_sentinel_watch(const void *mem, size_t size);
/* Restores the previous handler; returns how many tracked-memory faults
 * were passed on, and the offset of the first in *first_offset. */
uint64_t tu_segv_sentinel_remove(size_t *first_offset);

#endif
