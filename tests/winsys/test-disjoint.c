/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The CPU and the GPU write disjoint bytes of the same pages -- legal in
 * GL and Vulkan -- and neither may clobber the other.  The GPU is slow
 * (COHMAP_SIM_EXEC_US), so the CPU's stores really land while the GPU's
 * submission is in flight.  Each round splits the bytes of GPU_WRITE
 * coherent BOs between the two -- alternate 4-byte words (swapped every
 * round), alternate 16-byte runs, random runs of 1 to 16 bytes, or, for
 * slab BOs sharing a page, whole BOs -- and then:
 *
 *  1. the GPU's submission S1 writes its bytes, either with many small
 *     commands (a fill per run of whole words, a write per other run) or
 *     with one copy over each whole BO that carries the *old* values of
 *     the CPU's bytes: the GPU's written range then covers the CPU's
 *     bytes, and only a per-byte merge against the snapshot keeps them;
 *  2. the CPU writes its bytes: some before S1 (uploaded by it, before
 *     its commands run), the rest while S1 runs;
 *  3. the host synchronizes in one of three ways:
 *     A. it waits for S1: the mapping must hold both sides' bytes (a
 *        page-granular or unmerged readback overwrites the CPU's), none
 *        counted as conflicted, exactly the GPU's changed bytes merged;
 *     B. it leaves S1 to finish unobserved and submits S2: S2 uploads the
 *        CPU's bytes over device memory that already holds the GPU's -- an
 *        upload that is not byte-exact overwrites them with stale bytes
 *        (and S2 must upload no more than the CPU wrote since S1);
 *     C. it submits S2 while S1 still runs;
 *  4. S2 copies every BO to another BO and checksums it: the device must
 *     hold both sides' bytes too.
 *
 * The conflict rule (winsys.h): a byte written by both the CPU and a
 * submission not yet observed complete is a race of the application.
 * When the CPU's store is still unuploaded at the merge (A, B), the CPU's
 * value stays, in the mapping and -- after the next submission -- on the
 * device; with A, cohmap_device_get_stats() counts exactly those bytes
 * (that the GPU changed) as conflicted.  Every conflict round is followed
 * by a round in which the GPU alone writes every byte: its values must win
 * again.  "conflict" rounds use A and B; "conflict-in-flight" rounds use
 * C: S2 uploads the CPU's bytes, then S1's commands overwrite them on the
 * device -- as on coherent hardware, the GPU's write came last.  Either
 * value may then win each such byte, but the mapping and the device must
 * agree by the next submission (S3), and no byte may take a value neither
 * side wrote.  The same race with the GPU's copy carrying old values over
 * the CPU's words is a conflict too, so it is there and not in the
 * disjoint cases.
 *
 * Every method; a dedicated BO (not a whole number of pages), a slab BO,
 * and four 256-byte slab BOs sharing one page.
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
#include <unistd.h>

#include <cmocka.h>

#include "ws-util.h"

/* The GPU spends this long on each submission before executing it. */
#define EXEC_US 2000
#define EXEC_US_STR "2000"
/* B waits until the device has finished S1 (without observing it) before
 * S2, polling this often, for at most SETTLE_MAX_US.  A fixed sleep was
 * not enough on a loaded machine: S1 then still ran at S2's upload, which
 * is case C, where a GPU copy carrying old values over the CPU's late
 * bytes is a race the GPU may win (it wrote last) -- lost CPU bytes that
 * were the test's timing, not the library. */
#define SETTLE_US (EXEC_US / 4)
#define SETTLE_MAX_US (60u * 1000 * 1000)
#define MAX_PARTS 4
#define MAX_WRITE 65536

#if defined(__GNUC__) && __GNUC__ >= 7
#define FALLTHROUGH __attribute__((fallthrough))
#else
#define FALLTHROUGH ((void)0)
#endif

struct placement {
   const char *name;
   size_t slab_threshold;
   size_t part_size;
   unsigned parts;
};

static const struct placement placements[] = {
   {"dedicated", 1, 5 * 4096 + 52, 1},
   {"slab", 0, 6000, 1},
   {"slab-neighbours", 0, 256, MAX_PARTS},
};

enum pattern {
   PATTERN_WORDS,    /* alternate 4-byte words, swapped every round */
   PATTERN_RUNS16,   /* alternate 16-byte runs, random phase */
   PATTERN_RANDOM,   /* alternate random runs of 1..16 bytes */
   PATTERN_BOS,      /* alternate whole BOs (slab neighbours) */
   PATTERN_CONFLICT, /* the GPU writes everything, the CPU some bytes */
   PATTERN_RACE,     /* conflicts, the next submission while S1 runs */
   PATTERN_COUNT,
};

static const char *const pattern_names[PATTERN_COUNT] = {
   "words", "runs16", "random", "bos", "conflict", "conflict-in-flight",
};

enum direction {
   DIR_WAIT,       /* A */
   DIR_UNOBSERVED, /* B */
   DIR_IN_FLIGHT,  /* C */
   DIR_COUNT,
};

static const char *const direction_names[DIR_COUNT] = {
   "S1 waited on", "S1 done unobserved, then S2",
   "S2 submitted while S1 runs",
};

enum gpu_mode {
   GPU_FINE,  /* a command per run of GPU bytes */
   GPU_COVER, /* one copy over each whole BO */
};

struct dj_case {
   enum cohmap_method method;
   enum pattern pattern;
   const struct placement *p;
   unsigned rounds;
   char name[96];
};

enum owner {
   OWNER_NONE,
   OWNER_GPU,
   OWNER_CPU_EARLY, /* written before S1 */
   OWNER_CPU_LATE,  /* written while S1 runs */
   OWNER_BOTH,      /* the GPU, and the CPU while S1 runs */
};

struct part {
   struct cohmap_bo *bo, *dst;
   uint8_t *map, *dst_map;
   size_t base; /* in the concatenation of all parts */
};

struct fx {
   const struct dj_case *c;
   struct tu_rng rng;
   struct cohmap_device *dev;
   struct part parts[MAX_PARTS];
   unsigned nparts;
   size_t part_size, total;
   struct cohmap_bo *src, *result;
   uint8_t *src_map, *result_map;

   /* Over the concatenation of the parts: */
   uint8_t *model;  /* what the BOs must hold */
   uint8_t *before; /* ... before this round */
   uint8_t *owner;  /* this round's enum owner */
   uint8_t *gpu;    /* this round's GPU values */
   uint8_t *cpu;    /* this round's CPU values */

   unsigned round;
   enum direction dir;
   enum gpu_mode mode;
   unsigned in_flight, checked_in_flight;
};

/* --- checks ------------------------------------------------------------ */

static bool
api_ok(const struct fx *f, int ret, const char *what)
{
   if (ret == 0)
      return true;
   fprintf(stderr, "%s: round %u: %s: %d (%s)\n", f->c->name, f->round,
           what, ret, cohmap_error_message());
   return false;
}

static const char *
owner_name(uint8_t o)
{
   switch (o) {
   case OWNER_GPU:
      return "written by the GPU";
   case OWNER_CPU_EARLY:
      return "written by the CPU before the GPU's submission";
   case OWNER_CPU_LATE:
      return "written by the CPU while the GPU's submission ran";
   case OWNER_BOTH:
      return "written by both: the CPU's value must win";
   default:
      return "written by nobody this round";
   }
}

/* Compares one part's bytes with the model and names the first byte that
 * differs: who wrote it, each side's value, and its value before. */
static bool
part_equal(const struct fx *f, unsigned p, const uint8_t *got,
           const char *what)
{
   const uint8_t *expect = f->model + f->parts[p].base;
   size_t n = f->part_size;
   if (memcmp(got, expect, n) == 0)
      return true;

   size_t i = 0;
   while (got[i] == expect[i])
      i++;
   size_t diff = 0, gpu_lost = 0, cpu_lost = 0;
   for (size_t j = i; j < n; j++) {
      if (got[j] == expect[j])
         continue;
      diff++;
      uint8_t o = f->owner[f->parts[p].base + j];
      gpu_lost += o == OWNER_GPU;
      cpu_lost += o != OWNER_GPU && o != OWNER_NONE;
   }
   size_t at = f->parts[p].base + i;
   fprintf(stderr, "%s: round %u (%s, %s): %s of BO %u: first difference "
           "at offset %zu, %s: expected %#04x, got %#04x (GPU's %#04x, "
           "CPU's %#04x, before the round %#04x); %zu of %zu bytes differ: "
           "%zu of the GPU's, %zu of the CPU's\n", f->c->name, f->round,
           direction_names[f->dir],
           f->mode == GPU_FINE ? "small GPU commands" : "GPU copy over all",
           what, p, i, owner_name(f->owner[at]), expect[i], got[i],
           f->gpu[at], f->cpu[at], f->before[at], diff, n, gpu_lost,
           cpu_lost);
   return false;
}

static bool
check_mappings(const struct fx *f)
{
   bool ok = true;
   for (unsigned p = 0; p < f->nparts; p++)
      ok &= part_equal(f, p, f->parts[p].map, "the mapping");
   return ok;
}

/*
 * In a race round, a byte both sides wrote ends up with either side's
 * value (or, where the GPU's copy carried the byte's old value over the
 * CPU's store, that old value): adopt what the mapping shows into the
 * model, so that S3 checks the device agrees with it.  Any other value is
 * a corruption and fails.
 */
static uint8_t *byte_ptr(const struct fx *f, size_t i);

static bool
settle_race(struct fx *f)
{
   for (size_t i = 0; i < f->total; i++) {
      uint8_t o = f->owner[i];
      bool both = o == OWNER_BOTH ||
                  (f->mode != GPU_FINE && o == OWNER_CPU_LATE);
      if (!both)
         continue;
      uint8_t got = *byte_ptr(f, i);
      if (got != f->cpu[i] && got != f->gpu[i] && got != f->before[i]) {
         fprintf(stderr, "%s: round %u: byte %zu raced and holds %#04x, "
                 "neither the CPU's %#04x, the GPU's %#04x nor the old "
                 "%#04x\n", f->c->name, f->round, i, got, f->cpu[i],
                 f->gpu[i], f->before[i]);
         return false;
      }
      f->model[i] = got;
   }
   return true;
}

/* After S2: what it copied and checksummed on the device. */
static bool
check_device(const struct fx *f)
{
   bool ok = true;
   for (unsigned p = 0; p < f->nparts; p++) {
      ok &= part_equal(f, p, f->parts[p].dst_map,
                       "the device's bytes (copied to another BO)");
      uint64_t want = cohmap_checksum(f->model + f->parts[p].base,
                                      f->part_size);
      uint64_t got = 0;
      for (unsigned i = 0; i < 8; i++)
         got |= (uint64_t)f->result_map[8 * p + i] << (8 * i);
      if (got != want) {
         fprintf(stderr, "%s: round %u: BO %u: the GPU's checksum is "
                 "%#018" PRIx64 ", the expected bytes' %#018" PRIx64 "\n",
                 f->c->name, f->round, p, got, want);
         ok = false;
      }
   }
   return ok;
}

static bool
get_stats(const struct fx *f, struct cohmap_device_stats *out)
{
   return api_ok(f, cohmap_device_get_stats(f->dev, out), "stats");
}

/* --- bytes ------------------------------------------------------------- */

static uint8_t *
byte_ptr(const struct fx *f, size_t i)
{
   size_t p = i / f->part_size;
   return f->parts[p].map + (i - p * f->part_size);
}

static bool
gpu_owned(uint8_t o)
{
   return o == OWNER_GPU || o == OWNER_BOTH;
}

static bool
cpu_owned(uint8_t o)
{
   return o == OWNER_CPU_EARLY || o == OWNER_CPU_LATE || o == OWNER_BOTH;
}

/* The end of the run of bytes from i on that match (never across BOs). */
static size_t
run_end(const struct fx *f, size_t i, bool (*match)(uint8_t), size_t max)
{
   size_t end = i + 1;
   while (end < f->total && match(f->owner[end]) &&
          end % f->part_size != 0 && end - i < max)
      end++;
   return end;
}

static bool
is_early(uint8_t o)
{
   return o == OWNER_CPU_EARLY;
}

static bool
is_late(uint8_t o)
{
   return o == OWNER_CPU_LATE || o == OWNER_BOTH;
}

/* The CPU stores a class of its bytes, a run at a time (a memcpy per run,
 * as an application would). */
static void
cpu_store(struct fx *f, bool (*which)(uint8_t))
{
   for (size_t i = 0; i < f->total;) {
      if (!which(f->owner[i])) {
         i++;
         continue;
      }
      size_t end = run_end(f, i, which, SIZE_MAX);
      memcpy(byte_ptr(f, i), f->cpu + i, end - i);
      i = end;
   }
}

static uint8_t
differs_from(struct tu_rng *rng, uint8_t a, uint8_t b)
{
   uint8_t v;
   do
      v = (uint8_t)tu_rng_next(rng);
   while (v == a || v == b);
   return v;
}

/* --- a round ----------------------------------------------------------- */

static void
make_owners(struct fx *f)
{
   struct tu_rng *rng = &f->rng;
   unsigned round = f->round;
   size_t i = 0;

   switch (f->c->pattern) {
   case PATTERN_WORDS:
      for (i = 0; i < f->total; i++)
         f->owner[i] = ((i % f->part_size) / 4 + round) % 2
                          ? OWNER_GPU : OWNER_CPU_LATE;
      break;
   case PATTERN_RUNS16: {
      unsigned phase = (unsigned)tu_rng_below(rng, 2);
      for (i = 0; i < f->total; i++)
         f->owner[i] = ((i % f->part_size) / 16 + phase) % 2
                          ? OWNER_GPU : OWNER_CPU_LATE;
      break;
   }
   case PATTERN_RANDOM: {
      uint8_t o = tu_rng_percent(rng, 50) ? OWNER_GPU : OWNER_CPU_LATE;
      while (i < f->total) {
         size_t n = (size_t)tu_rng_range(rng, 1, 16);
         for (size_t k = 0; k < n && i < f->total; k++)
            f->owner[i++] = o;
         o = o == OWNER_GPU ? OWNER_CPU_LATE : OWNER_GPU;
      }
      break;
   }
   case PATTERN_BOS:
      for (i = 0; i < f->total; i++)
         f->owner[i] = (i / f->part_size + round) % 2 ? OWNER_GPU
                                                      : OWNER_CPU_LATE;
      break;
   case PATTERN_RACE:
      if (round % 4 == 2) {
         /* Alternate words; the GPU's copy (COVER) carries the old
          * values of the CPU's over them. */
         for (i = 0; i < f->total; i++)
            f->owner[i] = ((i % f->part_size) / 4) % 2 ? OWNER_GPU
                                                       : OWNER_CPU_LATE;
         break;
      }
      FALLTHROUGH;
   case PATTERN_CONFLICT:
      /* Even rounds: the GPU everything, the CPU random runs (about a
       * tenth of the bytes) too.  Odd rounds: the GPU alone. */
      memset(f->owner, OWNER_GPU, f->total);
      while (round % 2 == 0 && i < f->total) {
         i += (size_t)tu_rng_range(rng, 1, 150);
         size_t n = (size_t)tu_rng_range(rng, 1, 16);
         for (size_t k = 0; k < n && i < f->total; k++)
            f->owner[i++] = OWNER_BOTH;
      }
      break;
   case PATTERN_COUNT:
      break;
   }

   /* Some of the CPU's disjoint bytes are written before S1: they reach
    * the device with it, before the GPU's commands run. */
   for (i = 0; i < f->total; i += 64) {
      if (!tu_rng_percent(rng, 30))
         continue;
      for (size_t k = i; k < i + 64 && k < f->total; k++) {
         if (f->owner[k] == OWNER_CPU_LATE)
            f->owner[k] = OWNER_CPU_EARLY;
      }
   }
}

static int
add_parts(struct fx *f, struct cohmap_submit *s, uint32_t access)
{
   int ret = 0;
   for (unsigned p = 0; p < f->nparts && !ret; p++)
      ret = cohmap_submit_add_bo(s, f->parts[p].bo, access);
   return ret;
}

/*
 * Chooses the GPU's values and, in FINE mode, records its commands: a
 * fill for half of the runs of whole words, a write for the others.
 */
static int
record_gpu_fine(struct fx *f, struct cohmap_submit *s)
{
   struct tu_rng *rng = &f->rng;
   int ret = 0;

   for (size_t i = 0; i < f->total && !ret;) {
      if (!gpu_owned(f->owner[i])) {
         i++;
         continue;
      }
      size_t end = run_end(f, i, gpu_owned, MAX_WRITE);
      unsigned p = (unsigned)(i / f->part_size);
      size_t off = i - f->parts[p].base, n = end - i;
      bool fill = off % 4 == 0 && n % 4 == 0 && tu_rng_percent(rng, 50);
      uint32_t pattern = (uint32_t)tu_rng_next(rng);

      for (size_t k = 0; k < n; k++) {
         f->gpu[i + k] = fill ? (uint8_t)(pattern >> (8 * (k % 4)))
                              : differs_from(rng, f->before[i + k],
                                             f->before[i + k]);
      }
      if (f->mode == GPU_FINE) {
         ret = fill ? cohmap_cmd_fill(s, f->parts[p].bo, off, n, pattern)
                    : cohmap_cmd_write(s, f->parts[p].bo, off, f->gpu + i,
                                       n);
      }
      i = end;
   }
   return ret;
}

/* COVER mode: one copy per BO from src, which the CPU stages before S1
 * with what each byte must become by S1's hand: the GPU's value where it
 * writes, the CPU's early value (already uploaded) where that was
 * written, and the old value everywhere else -- over the bytes the CPU
 * writes while S1 runs too. */
static int
record_gpu_cover(struct fx *f, struct cohmap_submit *s)
{
   for (size_t i = 0; i < f->total; i++) {
      uint8_t o = f->owner[i];
      f->src_map[i] = gpu_owned(o)          ? f->gpu[i]
                      : o == OWNER_CPU_EARLY ? f->cpu[i]
                                             : f->before[i];
   }
   int ret = cohmap_submit_add_bo(s, f->src, COHMAP_ACCESS_READ);
   for (unsigned p = 0; p < f->nparts && !ret; p++)
      ret = cohmap_cmd_copy(s, f->parts[p].bo, 0, f->src, f->parts[p].base,
                            f->part_size);
   return ret;
}

/* S2: copies every BO to its destination and checksums it.  A few
 * destination and result bytes are poisoned first: uploaded with S2,
 * they must be overwritten by its commands. */
static int
record_readback(struct fx *f, struct cohmap_submit *s, size_t *poison)
{
   int ret = add_parts(f, s, COHMAP_ACCESS_READ);
   if (!ret)
      ret = cohmap_submit_add_bo(s, f->result, COHMAP_ACCESS_WRITE);
   *poison = 0;
   for (unsigned p = 0; p < f->nparts && !ret; p++) {
      struct part *pt = &f->parts[p];
      for (unsigned k = 0; k < 4; k++)
         pt->dst_map[tu_rng_below(&f->rng, f->part_size)] ^= 0x5a;
      for (unsigned i = 0; i < 8; i++)
         f->result_map[8 * p + i] ^= 0xa5;
      *poison += 4 + 8;
      ret = cohmap_submit_add_bo(s, pt->dst, COHMAP_ACCESS_WRITE);
      if (!ret)
         ret = cohmap_cmd_copy(s, pt->dst, 0, pt->bo, 0, f->part_size);
      if (!ret)
         ret = cohmap_cmd_checksum(s, f->result, 8 * p, pt->bo, 0,
                                   f->part_size);
   }
   return ret;
}

static bool
submit(struct fx *f, struct cohmap_submit *s, int ret,
       struct cohmap_fence **fence, const char *what)
{
   if (ret) {
      cohmap_submit_abort(s);
      return api_ok(f, ret, what);
   }
   return api_ok(f, cohmap_submit_end(s, fence), what);
}

static bool
wait_fence(struct fx *f, struct cohmap_fence *fence, const char *what)
{
   return api_ok(f, cohmap_fence_wait(fence, UINT64_MAX), what);
}

/* Is S1 still running?  -EBUSY does not retire anything. */
static bool
note_in_flight(struct fx *f, struct cohmap_fence *fence, bool *busy)
{
   int ret = cohmap_fence_poll(fence);
   *busy = ret == -EBUSY;
   f->checked_in_flight++;
   f->in_flight += *busy;
   return *busy || api_ok(f, ret, "poll");
}

/* Waits until the device has executed the first `count` submissions,
 * without observing (merging) any of them. */
static bool
settle(struct fx *f, uint64_t count)
{
   struct cohmap_device_stats d;
   for (unsigned waited = 0;; waited += SETTLE_US) {
      if (!get_stats(f, &d))
         return false;
      if (d.completed >= count)
         return true;
      if (waited >= SETTLE_MAX_US) {
         fprintf(stderr, "%s: round %u: S1 not executed after %u s\n",
                 f->c->name, f->round, SETTLE_MAX_US / 1000000);
         return false;
      }
      usleep(SETTLE_US);
   }
}

static bool
round_run(struct fx *f)
{
   struct cohmap_fence *f1 = NULL, *f2 = NULL;
   struct cohmap_submit *s = NULL;
   struct cohmap_device_stats d0, d1, d2, d3;
   bool busy = false, ok = false;
   size_t poison = 0;

   memcpy(f->before, f->model, f->total);
   memset(f->gpu, 0, f->total);
   memset(f->cpu, 0, f->total);
   make_owners(f);

   /* The values: the GPU's first, then the CPU's, different from the old
    * ones and, where both write, from each other. */
   int ret = cohmap_submit_begin(f->dev, &s);
   if (ret)
      return api_ok(f, ret, "submit begin");
   ret = add_parts(f, s, COHMAP_ACCESS_WRITE);
   if (!ret)
      ret = record_gpu_fine(f, s);
   uint64_t merges = 0, conflicts = 0, late = 0;
   for (size_t i = 0; i < f->total; i++) {
      uint8_t o = f->owner[i];
      if (cpu_owned(o))
         f->cpu[i] = differs_from(&f->rng, f->before[i], f->gpu[i]);
      f->model[i] = cpu_owned(o) ? f->cpu[i]
                    : o == OWNER_GPU ? f->gpu[i] : f->before[i];
      merges += o == OWNER_GPU && f->gpu[i] != f->before[i];
      conflicts += o == OWNER_BOTH && f->gpu[i] != f->before[i];
      late += is_late(o);
   }
   if (!ret && f->mode == GPU_COVER)
      ret = record_gpu_cover(f, s);

   cpu_store(f, is_early);
   if (!get_stats(f, &d0) || !submit(f, s, ret, &f1, "S1"))
      goto out;
   cpu_store(f, is_late);

   switch (f->dir) {
   case DIR_WAIT:
      if (!note_in_flight(f, f1, &busy) || !wait_fence(f, f1, "S1") ||
          !get_stats(f, &d1))
         goto out;
      if (!check_mappings(f))
         goto out;
      if (d1.bytes_conflicted - d0.bytes_conflicted != conflicts ||
          d1.bytes_merged - d0.bytes_merged != merges) {
         fprintf(stderr, "%s: round %u: S1's merge counted %" PRIu64
                 " conflicted and %" PRIu64 " merged bytes; the GPU "
                 "changed %" PRIu64 " bytes the CPU wrote too and %" PRIu64
                 " it alone wrote\n", f->c->name, f->round,
                 d1.bytes_conflicted - d0.bytes_conflicted,
                 d1.bytes_merged - d0.bytes_merged, conflicts, merges);
         goto out;
      }
      break;
   case DIR_UNOBSERVED:
      if (!settle(f, d0.submissions + 1))
         goto out;
      break;
   case DIR_IN_FLIGHT:
      if (!note_in_flight(f, f1, &busy))
         goto out;
      break;
   case DIR_COUNT:
      break;
   }

   if (!get_stats(f, &d2))
      goto out;
   ret = cohmap_submit_begin(f->dev, &s);
   if (ret) {
      api_ok(f, ret, "submit begin");
      goto out;
   }
   ret = record_readback(f, s, &poison);
   if (!submit(f, s, ret, &f2, "S2") || !get_stats(f, &d3))
      goto out;
   /* Since S1, the CPU wrote only its late bytes and the poison: S2's
    * upload is byte-exact, or it carried stale bytes. */
   uint64_t uploaded = d3.bytes_uploaded - d2.bytes_uploaded;
   if (f->dir != DIR_WAIT && uploaded > late + poison) {
      fprintf(stderr, "%s: round %u (%s): S2 uploaded %" PRIu64 " bytes; "
              "since S1 the CPU wrote %" PRIu64 " bytes of the BOs and "
              "%zu of poison\n", f->c->name, f->round,
              direction_names[f->dir], uploaded, late, poison);
      goto out;
   }
   /* In the race, S2's commands ran after S1's: they may see the GPU's
    * values of the bytes both wrote.  The next submission after the
    * merge must see the CPU's. */
   bool race = f->c->pattern == PATTERN_RACE;
   if (!wait_fence(f, f2, "S2") || (race && !settle_race(f)) ||
       !check_mappings(f) ||
       (!race && !check_device(f)))
      goto out;
   if (race) {
      struct cohmap_fence *f3 = NULL;
      ret = cohmap_submit_begin(f->dev, &s);
      if (ret) {
         api_ok(f, ret, "submit begin");
         goto out;
      }
      ret = record_readback(f, s, &poison);
      bool done = submit(f, s, ret, &f3, "S3") && wait_fence(f, f3, "S3");
      cohmap_fence_destroy(f3);
      if (!done || !check_mappings(f) || !check_device(f))
         goto out;
   }

   struct cohmap_device_stats d4;
   if (!get_stats(f, &d4))
      goto out;
   /* Disjoint bytes never conflict, however the host synchronizes.  (In
    * the race the count depends on whether S1 ran before S2's upload:
    * if it did, the upload simply overwrote the GPU's bytes.) */
   if (f->c->pattern != PATTERN_CONFLICT && !race &&
       d4.bytes_conflicted != d0.bytes_conflicted) {
      fprintf(stderr, "%s: round %u (%s): %" PRIu64 " bytes counted as "
              "conflicted; the CPU and the GPU wrote disjoint bytes\n",
              f->c->name, f->round, direction_names[f->dir],
              d4.bytes_conflicted - d0.bytes_conflicted);
      goto out;
   }
   ok = true;

out:
   if (!ok)
      fprintf(stderr, "%s: round %u: %s, %s; S1 %s when last polled\n",
              f->c->name, f->round, direction_names[f->dir],
              f->mode == GPU_FINE ? "small GPU commands"
                                  : "a GPU copy over each BO",
              busy ? "was running" : "had completed or was not polled");
   cohmap_fence_destroy(f1);
   cohmap_fence_destroy(f2);
   return ok;
}

/* --- fixture ----------------------------------------------------------- */

static bool
fx_init(struct fx *f, const struct dj_case *c)
{
   uint32_t flags = COHMAP_BO_PERSISTENT | COHMAP_BO_COHERENT |
                    COHMAP_BO_GPU_WRITE;
   int ret = 0;

   memset(f, 0, sizeof(*f));
   f->c = c;
   f->nparts = c->p->parts;
   f->part_size = c->p->part_size;
   f->total = f->nparts * f->part_size;
   tu_rng_seed(&f->rng, tu_seed_for(c->name));

   f->dev = ws_device_create(c->method, c->p->slab_threshold);
   if (!f->dev)
      return false;

   /* The parts first, so that slab parts are neighbours. */
   for (unsigned p = 0; p < f->nparts && !ret; p++) {
      f->parts[p].base = p * f->part_size;
      ret = cohmap_bo_create(f->dev, f->part_size, flags, &f->parts[p].bo);
   }
   for (unsigned p = 0; p < f->nparts && !ret; p++)
      ret = cohmap_bo_create(f->dev, f->part_size, flags, &f->parts[p].dst);
   if (!ret)
      ret = cohmap_bo_create(f->dev, f->total,
                             COHMAP_BO_PERSISTENT | COHMAP_BO_COHERENT,
                             &f->src);
   if (!ret)
      ret = cohmap_bo_create(f->dev, 8 * MAX_PARTS, flags, &f->result);
   if (!api_ok(f, ret, "BO"))
      return false;

   for (unsigned p = 0; p < f->nparts; p++) {
      f->parts[p].map = cohmap_bo_map(f->parts[p].bo);
      f->parts[p].dst_map = cohmap_bo_map(f->parts[p].dst);
      if (!f->parts[p].map || !f->parts[p].dst_map)
         return false;
      if (cohmap_bo_method(f->parts[p].bo) != c->method) {
         fprintf(stderr, "%s: BO %u is tracked with %s, not %s\n", c->name,
                 p, cohmap_method_name(cohmap_bo_method(f->parts[p].bo)),
                 cohmap_method_name(c->method));
         return false;
      }
   }
   if (f->nparts > 1) {
      size_t page = tu_page_size();
      for (unsigned p = 1; p < f->nparts; p++) {
         if ((uintptr_t)f->parts[p].map / page !=
             (uintptr_t)f->parts[0].map / page)
            printf("# %s: BO %u does not share BO 0's page\n", c->name, p);
      }
   }
   f->src_map = cohmap_bo_map(f->src);
   f->result_map = cohmap_bo_map(f->result);
   f->model = calloc(1, f->total); /* new BOs read as zero */
   f->before = calloc(1, f->total);
   f->owner = calloc(1, f->total);
   f->gpu = calloc(1, f->total);
   f->cpu = calloc(1, f->total);
   return f->src_map && f->result_map && f->model && f->before &&
          f->owner && f->gpu && f->cpu;
}

static bool
fx_fini(struct fx *f)
{
   bool ok = true;
   if (f->dev) {
      struct cohmap_bo *bos[2 * MAX_PARTS + 2];
      size_t n = 0;
      for (unsigned p = 0; p < f->nparts; p++) {
         bos[n++] = f->parts[p].bo;
         bos[n++] = f->parts[p].dst;
      }
      bos[n++] = f->src;
      bos[n++] = f->result;
      ok = api_ok(f, ws_teardown(f->dev, bos, n), "teardown");
   }
   free(f->model);
   free(f->before);
   free(f->owner);
   free(f->gpu);
   free(f->cpu);
   return ok;
}

static void
test_disjoint(void **state)
{
   const struct dj_case *c = *state;
   bool fatal;

   if (!ws_method_usable(c->method, &fatal)) {
      if (fatal)
         fail();
      skip();
   }

   struct fx f;
   bool ok = fx_init(&f, c);
   for (unsigned r = 0; ok && r < c->rounds; r++) {
      f.round = r;
      /* Each conflict round is followed by a round in which the GPU
       * alone writes, waited on. */
      if (c->pattern == PATTERN_CONFLICT) {
         f.dir = r % 2 ? DIR_WAIT : r / 2 % 2 ? DIR_UNOBSERVED : DIR_WAIT;
         f.mode = r % 2 ? GPU_FINE : (enum gpu_mode)(r / 4 % 2);
      } else if (c->pattern == PATTERN_RACE) {
         f.dir = r % 2 ? DIR_WAIT : DIR_IN_FLIGHT;
         f.mode = r % 4 == 2 ? GPU_COVER : GPU_FINE;
      } else {
         /* The race -- the GPU's copy over the CPU's bytes while S2 is
          * submitted -- is PATTERN_RACE's. */
         static const struct {
            enum direction dir;
            enum gpu_mode mode;
         } schedule[] = {
            {DIR_WAIT, GPU_FINE},       {DIR_UNOBSERVED, GPU_FINE},
            {DIR_IN_FLIGHT, GPU_FINE},  {DIR_WAIT, GPU_COVER},
            {DIR_UNOBSERVED, GPU_COVER},
         };
         f.dir = schedule[r % TU_ARRAY_SIZE(schedule)].dir;
         f.mode = schedule[r % TU_ARRAY_SIZE(schedule)].mode;
      }
      ok = round_run(&f);
   }
   if (ok) {
      printf("# %s: the GPU's submission was still running after the "
             "CPU's stores in %u of %u polls\n", c->name, f.in_flight,
             f.checked_in_flight);
      /* Not a single store during a submission: the test tested
       * nothing it means to. */
      if (f.checked_in_flight && !f.in_flight) {
         fprintf(stderr, "%s: the GPU never ran while the CPU stored\n",
                 c->name);
         ok = false;
      }
   }
   ok &= fx_fini(&f);
   assert_true(ok);
}

int
main(int argc, char **argv)
{
   bool slow = argc > 1 && strcmp(argv[1], "--slow") == 0;
   struct dj_case cases[TU_METHODS_COUNT * TU_ARRAY_SIZE(placements) *
                        PATTERN_COUNT];
   struct CMUnitTest tests[TU_ARRAY_SIZE(cases)];
   size_t n = 0;

   /* Read by each sim device when it is created: a slow GPU, so that the
    * CPU's stores land while its submissions run. */
   setenv("COHMAP_SIM_EXEC_US", EXEC_US_STR, 1);
   tu_seed();
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));

   for (unsigned pat = 0; pat < PATTERN_COUNT; pat++) {
      for (size_t p = 0; p < TU_ARRAY_SIZE(placements); p++) {
         if (pat == PATTERN_BOS && placements[p].parts == 1)
            continue;
         for (size_t m = 0; m < TU_METHODS_COUNT; m++) {
            struct dj_case *c = &cases[n];
            c->method = tu_methods[m];
            c->pattern = (enum pattern)pat;
            c->p = &placements[p];
            /* Each direction with each GPU mode, twice. */
            c->rounds = (pat == PATTERN_CONFLICT || pat == PATTERN_RACE
                            ? 12 : 10) * (slow ? 5 : 1);
            snprintf(c->name, sizeof(c->name), "%s %s %s",
                     pattern_names[pat], cohmap_method_name(c->method),
                     c->p->name);
            tests[n] = (struct CMUnitTest){c->name, test_disjoint, NULL,
                                           NULL, c};
            n++;
         }
      }
   }
   return _cmocka_run_group_tests(slow ? "disjoint-slow" : "disjoint",
                                  tests, n, NULL, NULL);
}
