/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * winsys-slab: sub-allocation of small coherent BOs from shared slabs.
 *
 * Thousands of coherent BOs of 1 byte to 32 KiB (most of them in slabs,
 * those of 32 KiB dedicated), with and without GPU_WRITE and
 * CPU_STORES_ONLY (separate slab classes), under every method:
 *
 *  - mappings are distinct and do not overlap;
 *  - every new BO reads as zero on the CPU and, checked by a GPU checksum
 *    right after creation, on the device, also in a slot whose previous
 *    BO left data there in every state: CPU stores never uploaded,
 *    uploaded, written by the GPU and merged, or destroyed while a GPU
 *    fill of it was still queued;
 *  - each BO keeps its own bytes: every BO gets its own pattern, by CPU
 *    stores or GPU commands, and afterwards each mapping still holds its
 *    own pattern and each device copy (checksummed) too;
 *  - under destroy/recreate churn the number of live slabs stays within
 *    what the live BOs need (a new slab only when every slab of its class
 *    is full, so at most ceil(peak / slots per slab) + 1 per class, with
 *    2 MiB slabs of power-of-two slots of at least 64 bytes, as
 *    docs/winsys.md says), and once every BO is gone at most one empty
 *    slab per class is left.
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

#include "ws-util.h"

#define SLAB_SIZE (2 * TU_MIB)
#define MIN_SLOT 64
#define MAX_BO_SIZE (32 * TU_KIB)
#define RESULTS_SIZE (64 * TU_KIB) /* 8192 checksums */
#define MAX_CHECKSUMS (RESULTS_SIZE / 8)

/* Flag classes: each its own slabs. */
static const uint32_t class_flags[] = {
   COHMAP_BO_COHERENT,
   COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE,
   COHMAP_BO_COHERENT | COHMAP_BO_CPU_STORES_ONLY,
   COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE | COHMAP_BO_CPU_STORES_ONLY,
};
#define NCLASSES TU_ARRAY_SIZE(class_flags)
/* Slot sizes 64 B .. 32 KiB (BOs under 32 KiB; 32 KiB ones are
 * dedicated). */
#define NSLOTS 10

struct sbo {
   struct cohmap_bo *bo;
   uint8_t *map;
   size_t size;
   unsigned cls;
   unsigned id;
   uint8_t *want; /* what the mapping and the device must hold */
};

struct slab_test {
   const char *mname;
   struct tu_rng rng;
   struct cohmap_device *dev;
   struct cohmap_bo *results;
   const uint8_t *results_map;
   struct sbo *bos;
   size_t count, cap;
   unsigned next_id;
   /* Per (class, slot size): BOs holding a slot now (live, or destroyed
    * but still referenced by a submission) and the most ever. */
   size_t held[NCLASSES][NSLOTS], peak[NCLASSES][NSLOTS];
   /* Destroyed BOs whose slots may still be held, per class and slot,
    * until the next idle wait. */
   size_t pending[NCLASSES][NSLOTS];
   struct cohmap_fence *pending_fences[64];
   unsigned npending_fences;
   uint64_t slabs_max;
   unsigned reused_checks;
};

static bool
failf(struct slab_test *t, const char *fmt, ...)
{
   va_list ap;

   fprintf(stderr, "FAIL %s (TEST_SEED=%" PRIu64 "): ", t->mname,
           tu_seed());
   va_start(ap, fmt);
   vfprintf(stderr, fmt, ap);
   va_end(ap);
   fprintf(stderr, "\n");
   return false;
}

static bool
api(struct slab_test *t, int ret, const char *what)
{
   if (ret == 0)
      return true;
   return failf(t, "%s: %d (%s): %s", what, ret, strerror(-ret),
                cohmap_error_message());
}

/* The slot size index of a slab BO, or -1 for a dedicated one. */
static int
slot_index(size_t size)
{
   if (size >= MAX_BO_SIZE)
      return -1;
   int i = 0;
   for (size_t slot = MIN_SLOT; slot < size; slot *= 2)
      i++;
   return i;
}

static size_t
slot_size(int index)
{
   return (size_t)MIN_SLOT << index;
}

/* Log-uniform over 1 B .. 32 KiB. */
static size_t
random_size(struct tu_rng *rng)
{
   unsigned bits = (unsigned)tu_rng_below(rng, 16);
   size_t lo = (size_t)1 << bits, hi = ((size_t)2 << bits) - 1;
   if (bits == 15)
      return MAX_BO_SIZE; /* dedicated */
   return (size_t)tu_rng_range(rng, lo, hi);
}

static void
hold(struct slab_test *t, unsigned cls, size_t size, int delta)
{
   int s = slot_index(size);
   if (s < 0)
      return;
   t->held[cls][s] += (size_t)(ptrdiff_t)delta;
   if (t->held[cls][s] > t->peak[cls][s])
      t->peak[cls][s] = t->held[cls][s];
}

static bool
create_one(struct slab_test *t, struct sbo *b)
{
   memset(b, 0, sizeof(*b));
   b->size = random_size(&t->rng);
   b->cls = (unsigned)tu_rng_below(&t->rng, NCLASSES);
   b->id = t->next_id++;
   b->want = calloc(1, b->size);
   if (!b->want)
      return failf(t, "out of memory");
   int ret = cohmap_bo_create(t->dev, b->size, class_flags[b->cls], &b->bo);
   if (ret) {
      free(b->want);
      return failf(t, "cohmap_bo_create(%zu, 0x%x): %d: %s", b->size,
                   class_flags[b->cls], ret, cohmap_error_message());
   }
   hold(t, b->cls, b->size, 1);
   b->map = cohmap_bo_map(b->bo);
   if (!b->map)
      return failf(t, "BO %u: no mapping", b->id);
   for (size_t i = 0; i < b->size; i++) {
      if (b->map[i])
         return failf(t, "new BO %u (%zu bytes, flags 0x%x) reads 0x%02x "
                      "at offset %zu on the CPU, not 0", b->id, b->size,
                      class_flags[b->cls], b->map[i], i);
   }
   return true;
}

static void
destroy_one(struct slab_test *t, struct sbo *b, bool in_flight)
{
   int ret = cohmap_bo_destroy(b->bo);
   if (ret)
      failf(t, "cohmap_bo_destroy(BO %u): %d", b->id, ret);
   int s = slot_index(b->size);
   if (in_flight && s >= 0) {
      t->pending[b->cls][s]++;
   } else {
      hold(t, b->cls, b->size, -1);
   }
   free(b->want);
   b->bo = NULL;
   b->want = NULL;
}

static bool
wait_idle(struct slab_test *t)
{
   if (!api(t, cohmap_device_wait_idle(t->dev), "cohmap_device_wait_idle"))
      return false;
   for (unsigned i = 0; i < t->npending_fences; i++) {
      int ret = cohmap_fence_wait(t->pending_fences[i], 0);
      cohmap_fence_destroy(t->pending_fences[i]);
      if (!api(t, ret, "fence of a destroyed BO's submission after idle"))
         return false;
   }
   t->npending_fences = 0;
   /* Retired: the slots of destroyed BOs are free now. */
   for (unsigned c = 0; c < NCLASSES; c++) {
      for (unsigned s = 0; s < NSLOTS; s++) {
         t->held[c][s] -= t->pending[c][s];
         t->pending[c][s] = 0;
      }
   }
   return true;
}

/* Device side: checksums of bos[first, first + n) must be those of want.
 * The submission lists exactly these BOs (and the results BO). */
static bool
check_device(struct slab_test *t, size_t first, size_t n, const char *what)
{
   for (size_t base = first; base < first + n; base += MAX_CHECKSUMS) {
      size_t k = first + n - base < MAX_CHECKSUMS ? first + n - base
                                                  : MAX_CHECKSUMS;
      struct cohmap_submit *s;
      if (!api(t, cohmap_submit_begin(t->dev, &s), "cohmap_submit_begin"))
         return false;
      bool ok = api(t, cohmap_submit_add_bo(s, t->results,
                                            COHMAP_ACCESS_WRITE),
                    "cohmap_submit_add_bo");
      for (size_t i = 0; i < k && ok; i++) {
         struct sbo *b = &t->bos[base + i];
         ok = api(t, cohmap_submit_add_bo(s, b->bo, COHMAP_ACCESS_READ),
                  "cohmap_submit_add_bo") &&
              api(t, cohmap_cmd_checksum(s, t->results, 8 * i, b->bo, 0,
                                         b->size),
                  "cohmap_cmd_checksum");
      }
      if (!ok) {
         cohmap_submit_abort(s);
         return false;
      }
      if (!api(t, ws_submit_wait(s), "checksum submission"))
         return false;
      for (size_t i = 0; i < k; i++) {
         struct sbo *b = &t->bos[base + i];
         uint64_t got;
         memcpy(&got, t->results_map + 8 * i, 8);
         uint64_t want = cohmap_checksum(b->want, b->size);
         if (got != want) {
            bool zero = true;
            for (size_t j = 0; j < b->size && zero; j++)
               zero = b->want[j] == 0;
            return failf(t, "%s: BO %u (%zu bytes, flags 0x%x, mapped at "
                         "%p): the device copy's checksum is 0x%016" PRIx64
                         ", expected 0x%016" PRIx64 " (%s)", what, b->id,
                         b->size, class_flags[b->cls], (void *)b->map, got,
                         want, zero ? "all zero" : "its own pattern");
         }
      }
   }
   return true;
}

/* CPU side: every mapping holds want. */
static bool
check_cpu(struct slab_test *t, const char *what)
{
   for (size_t i = 0; i < t->count; i++) {
      struct sbo *b = &t->bos[i];
      if (memcmp(b->map, b->want, b->size) == 0)
         continue;
      for (size_t j = 0; j < b->size; j++) {
         if (b->map[j] != b->want[j])
            return failf(t, "%s: BO %u (%zu bytes, flags 0x%x) offset %zu: "
                         "the mapping reads 0x%02x, expected 0x%02x", what,
                         b->id, b->size, class_flags[b->cls], j, b->map[j],
                         b->want[j]);
      }
   }
   return true;
}

static int
cmp_by_address(const void *a, const void *b)
{
   const struct sbo *x = *(const struct sbo *const *)a;
   const struct sbo *y = *(const struct sbo *const *)b;
   return (x->map > y->map) - (x->map < y->map);
}

static bool
check_disjoint(struct slab_test *t)
{
   struct sbo **v = malloc(t->count * sizeof(*v));
   if (!v)
      return failf(t, "out of memory");
   for (size_t i = 0; i < t->count; i++)
      v[i] = &t->bos[i];
   qsort(v, t->count, sizeof(*v), cmp_by_address);
   bool ok = true;
   for (size_t i = 1; i < t->count && ok; i++) {
      if (v[i - 1]->map + v[i - 1]->size > v[i]->map)
         ok = failf(t, "BO %u [%p, +%zu) overlaps BO %u at %p", v[i - 1]->id,
                    (void *)v[i - 1]->map, v[i - 1]->size, v[i]->id,
                    (void *)v[i]->map);
   }
   free(v);
   return ok;
}

static bool
check_slabs(struct slab_test *t, const char *what)
{
   struct cohmap_device_stats st;
   if (!api(t, cohmap_device_get_stats(t->dev, &st), "get_stats"))
      return false;
   uint64_t bound = 0;
   for (unsigned c = 0; c < NCLASSES; c++) {
      for (int s = 0; s < NSLOTS; s++) {
         size_t per = SLAB_SIZE / slot_size(s);
         if (t->peak[c][s])
            bound += (t->peak[c][s] + per - 1) / per + 1;
      }
   }
   if (st.slabs > t->slabs_max)
      t->slabs_max = st.slabs;
   if (st.slabs > bound)
      return failf(t, "%s: %" PRIu64 " slabs for %zu live BOs; at most %"
                   PRIu64 " are needed (one per full slab of each class, "
                   "plus one)", what, st.slabs, t->count, bound);
   return true;
}

/* A pattern of its own for each BO and round. */
static void
own_pattern(const struct sbo *b, unsigned round, uint8_t *out)
{
   uint64_t x = ((uint64_t)b->id << 20) ^ round;
   for (size_t i = 0; i < b->size; i++) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      out[i] = (uint8_t)(x >> 56);
   }
}

/*
 * Gives every BO its own pattern: CPU stores for some, a GPU write or fill
 * for GPU_WRITE ones, all submitted at once, then checks both sides.
 */
static bool
write_all(struct slab_test *t, unsigned round)
{
   struct cohmap_submit *s;
   if (!api(t, cohmap_submit_begin(t->dev, &s), "cohmap_submit_begin"))
      return false;
   bool ok = true;
   for (size_t i = 0; i < t->count && ok; i++) {
      struct sbo *b = &t->bos[i];
      own_pattern(b, round, b->want);
      bool gpu = (class_flags[b->cls] & COHMAP_BO_GPU_WRITE) &&
                 tu_rng_percent(&t->rng, 50);
      if (!gpu) {
         memcpy(b->map, b->want, b->size);
         continue;
      }
      ok = api(t, cohmap_submit_add_bo(s, b->bo, COHMAP_ACCESS_WRITE),
               "cohmap_submit_add_bo");
      if (ok && b->size >= 8 && tu_rng_percent(&t->rng, 50)) {
         /* A fill for the aligned part, a write for the tail. */
         size_t body = b->size & ~(size_t)3;
         uint32_t pattern = (uint32_t)tu_rng_next(&t->rng);
         for (size_t j = 0; j < body; j++)
            b->want[j] = (uint8_t)(pattern >> (8 * (j % 4)));
         ok = api(t, cohmap_cmd_fill(s, b->bo, 0, body, pattern),
                  "cohmap_cmd_fill");
         if (ok && body < b->size)
            ok = api(t, cohmap_cmd_write(s, b->bo, body, b->want + body,
                                         b->size - body),
                     "cohmap_cmd_write");
      } else if (ok) {
         ok = api(t, cohmap_cmd_write(s, b->bo, 0, b->want, b->size),
                  "cohmap_cmd_write");
      }
   }
   if (!ok) {
      cohmap_submit_abort(s);
      return false;
   }
   if (!api(t, ws_submit_wait(s), "pattern submission"))
      return false;
   return check_cpu(t, "after giving each BO its own pattern") &&
          check_device(t, 0, t->count, "after giving each BO its pattern");
}

/*
 * Destroys about a third of the BOs, each left in one of the states a
 * re-used slot must not leak, then creates as many new ones, checking
 * each on both sides before anything else touches it.
 */
static bool
churn(struct slab_test *t, unsigned round)
{
   struct cohmap_submit *fills = NULL;
   size_t kept = 0, destroyed = 0;
   bool ok = api(t, cohmap_submit_begin(t->dev, &fills),
                 "cohmap_submit_begin");
   struct sbo *doomed = malloc(t->count * sizeof(*doomed));
   bool *in_flight = malloc(t->count * sizeof(*in_flight));
   if (!doomed || !in_flight) {
      cohmap_submit_abort(fills);
      free(doomed);
      free(in_flight);
      return failf(t, "out of memory");
   }

   for (size_t i = 0; i < t->count && ok; i++) {
      struct sbo *b = &t->bos[i];
      if (!tu_rng_percent(&t->rng, 35)) {
         t->bos[kept++] = *b;
         continue;
      }
      in_flight[destroyed] = false;
      switch (tu_rng_below(&t->rng, 3)) {
      case 0:
         /* CPU stores that no submission uploaded. */
         memset(b->map, 0xc5, b->size);
         break;
      case 1:
         /* Left as it is: uploaded and merged by write_all(). */
         break;
      default:
         /* A GPU fill queued below; destroyed before it ran. */
         if ((class_flags[b->cls] & COHMAP_BO_GPU_WRITE) && b->size >= 4) {
            ok = api(t, cohmap_submit_add_bo(fills, b->bo,
                                             COHMAP_ACCESS_WRITE),
                     "cohmap_submit_add_bo") &&
                 api(t, cohmap_cmd_fill(fills, b->bo, 0,
                                        b->size & ~(size_t)3, 0x5a5a5a5a),
                     "cohmap_cmd_fill");
            in_flight[destroyed] = true;
         }
         break;
      }
      doomed[destroyed++] = *b;
   }
   t->count = kept;

   /* Submit the fills, then destroy every doomed BO at once (those with
    * a queued fill while it may still run). */
   struct cohmap_fence *fence = NULL;
   if (ok)
      ok = api(t, cohmap_submit_end(fills, &fence), "cohmap_submit_end");
   else
      cohmap_submit_abort(fills);
   for (size_t i = 0; i < destroyed; i++)
      destroy_one(t, &doomed[i], in_flight[i] && fence);
   if (fence) {
      if (t->npending_fences < TU_ARRAY_SIZE(t->pending_fences))
         t->pending_fences[t->npending_fences++] = fence;
      else
         cohmap_fence_destroy(fence);
   }
   free(doomed);
   free(in_flight);
   if (!ok)
      return false;

   /* Replacements, checked at once on the CPU (create_one) and on the
    * device, before anything is written to them. */
   size_t first = t->count;
   for (size_t i = 0; i < destroyed && ok; i++) {
      ok = create_one(t, &t->bos[t->count]);
      if (ok)
         t->count++;
   }
   if (!ok)
      return false;
   t->reused_checks += (unsigned)(t->count - first);
   char what[64];
   snprintf(what, sizeof(what), "round %u: new BOs right after creation",
            round);
   return check_disjoint(t) && check_device(t, first, t->count - first,
                                            what);
}

static void
test_slab(void **state)
{
   const unsigned *params = *state; /* BOs, rounds */
   bool ok = true;

   for (size_t mi = 0; mi < TU_METHODS_COUNT; mi++) {
      enum cohmap_method method = tu_methods[mi];
      bool fatal;
      if (!ws_method_usable(method, &fatal)) {
         assert_false(fatal);
         printf("# %s: not available here, skipped\n",
                cohmap_method_name(method));
         continue;
      }

      struct slab_test *t = calloc(1, sizeof(*t));
      assert_non_null(t);
      char name[64];
      t->mname = cohmap_method_name(method);
      snprintf(name, sizeof(name), "slab-%s", t->mname);
      tu_rng_seed(&t->rng, tu_seed_for(name));
      t->cap = params[0];
      t->bos = calloc(t->cap, sizeof(*t->bos));
      assert_non_null(t->bos);
      t->dev = ws_device_create(method, 0);
      assert_non_null(t->dev);
      double t0 = tu_now();

      bool good = api(t, cohmap_bo_create(t->dev, RESULTS_SIZE,
                                          COHMAP_BO_COHERENT |
                                             COHMAP_BO_GPU_WRITE,
                                          &t->results),
                      "results BO");
      if (good)
         t->results_map = cohmap_bo_map(t->results);

      /* Population: all new, checked on both sides right away. */
      while (good && t->count < t->cap) {
         good = create_one(t, &t->bos[t->count]);
         if (good)
            t->count++;
      }
      good = good && check_disjoint(t) &&
             check_device(t, 0, t->count, "new BOs right after creation") &&
             check_slabs(t, "after creating them");

      for (unsigned round = 0; good && round < params[1]; round++) {
         good = write_all(t, round) && churn(t, round);
         /* Slots of destroyed BOs are free once their submissions
          * retired: every few rounds, wait for that. */
         if (good && round % 2)
            good = wait_idle(t);
         good = good && check_slabs(t, "under churn");
      }
      good = good && write_all(t, params[1]) && wait_idle(t);

      /* Everything goes: one empty slab per class may stay. */
      for (size_t i = 0; i < t->count; i++)
         destroy_one(t, &t->bos[i], false);
      size_t live = t->count;
      t->count = 0;
      good &= api(t, cohmap_bo_destroy(t->results), "destroy results");
      struct cohmap_device_stats st = {0};
      good &= api(t, cohmap_device_get_stats(t->dev, &st), "get_stats");
      unsigned classes = 0;
      for (unsigned c = 0; c < NCLASSES; c++) {
         for (unsigned s = 0; s < NSLOTS; s++)
            classes += t->peak[c][s] != 0;
      }
      if (good && (st.bos != 0 || st.slabs > classes))
         good = failf(t, "with no BO left: %" PRIu64 " BOs, %" PRIu64
                      " slabs (at most one empty per class: %u)", st.bos,
                      st.slabs, classes);
      for (unsigned i = 0; i < t->npending_fences; i++)
         cohmap_fence_destroy(t->pending_fences[i]);
      good &= api(t, cohmap_device_destroy(t->dev), "device destroy");

      printf("# %s: %zu BOs, %u rounds, %u BOs checked zero in re-used "
             "slots, at most %" PRIu64 " slabs, %u after destroying all, "
             "%.2f s\n", t->mname, live, params[1], t->reused_checks,
             t->slabs_max, (unsigned)st.slabs, tu_now() - t0);
      fflush(stdout);
      free(t->bos);
      free(t);
      ok &= good;
   }
   assert_true(ok);
}

/*
 * Churn in the class with the fewest slots per slab (BOs just under
 * 32 KiB: 64 slots of 32 KiB), where a slab that is not re-used, or not
 * freed, shows at once: a few hundred BOs, half of them replaced every
 * round (some destroyed while a GPU fill of them is queued), must never
 * need more than ceil(live / 64) + 1 slabs, and once all are destroyed
 * one empty slab at most is left.
 */
static void
test_churn(void **state)
{
   const unsigned *params = *state;
   const size_t live = params[2], rounds = params[3];
   const uint32_t flags = COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE;
   const size_t per_slab = SLAB_SIZE / MAX_BO_SIZE;
   bool ok = true;

   for (size_t mi = 0; mi < TU_METHODS_COUNT; mi++) {
      enum cohmap_method method = tu_methods[mi];
      bool fatal;
      if (!ws_method_usable(method, &fatal)) {
         assert_false(fatal);
         printf("# %s: not available here, skipped\n",
                cohmap_method_name(method));
         continue;
      }
      struct slab_test t = {.mname = cohmap_method_name(method)};
      char name[64];
      snprintf(name, sizeof(name), "churn-%s", t.mname);
      tu_rng_seed(&t.rng, tu_seed_for(name));
      t.dev = ws_device_create(method, 0);
      assert_non_null(t.dev);
      struct cohmap_bo **bos = calloc(live, sizeof(*bos));
      assert_non_null(bos);
      uint64_t most = 0;
      bool good = true;
      double t0 = tu_now();

      for (size_t round = 0; round <= rounds && good; round++) {
         struct cohmap_submit *s = NULL;
         struct cohmap_fence *f = NULL;
         good = api(&t, cohmap_submit_begin(t.dev, &s), "submit_begin");
         for (size_t i = 0; i < live && good; i++) {
            if (bos[i] && tu_rng_percent(&t.rng, 50)) {
               if (tu_rng_percent(&t.rng, 50)) {
                  good = api(&t, cohmap_submit_add_bo(s, bos[i],
                                                      COHMAP_ACCESS_WRITE),
                             "add_bo") &&
                         api(&t, cohmap_cmd_fill(s, bos[i], 0, 16 * TU_KIB,
                                                 0xdeadbeef),
                             "fill");
               }
               continue;
            }
            if (!bos[i])
               continue;
            /* Stores that will never be uploaded. */
            memset(cohmap_bo_map(bos[i]), 0x77, 100);
         }
         if (good)
            good = api(&t, cohmap_submit_end(s, &f), "submit_end");
         else
            cohmap_submit_abort(s);
         /* Replace the BOs not picked above; the ones with a queued
          * fill are destroyed while it may run. */
         for (size_t i = 0; i < live && good; i++) {
            if (bos[i] && tu_rng_percent(&t.rng, 50)) {
               good = api(&t, cohmap_bo_destroy(bos[i]), "bo_destroy");
               bos[i] = NULL;
            }
         }
         good = good && api(&t, cohmap_fence_wait(f, UINT64_MAX),
                            "fence_wait");
         cohmap_fence_destroy(f);
         for (size_t i = 0; i < live && good; i++) {
            if (bos[i])
               continue;
            size_t size = (size_t)tu_rng_range(&t.rng, MAX_BO_SIZE / 2 + 1,
                                               MAX_BO_SIZE - 1);
            good = api(&t, cohmap_bo_create(t.dev, size, flags, &bos[i]),
                       "bo_create");
            const uint8_t *p = good ? cohmap_bo_map(bos[i]) : NULL;
            for (size_t j = 0; p && j < size; j++) {
               if (p[j]) {
                  good = failf(&t, "round %zu: new BO of %zu bytes reads "
                               "0x%02x at offset %zu, not 0", round, size,
                               p[j], j);
                  break;
               }
            }
         }
         struct cohmap_device_stats st = {0};
         good = good && api(&t, cohmap_device_get_stats(t.dev, &st),
                            "get_stats");
         uint64_t bound = (live + per_slab - 1) / per_slab + 1;
         if (st.slabs > most)
            most = st.slabs;
         if (good && st.slabs > bound)
            good = failf(&t, "round %zu: %" PRIu64 " slabs for %zu BOs of "
                         "one class (%zu per slab): at most %" PRIu64
                         " are needed", round, st.slabs, live, per_slab,
                         bound);
      }

      for (size_t i = 0; i < live; i++)
         good &= api(&t, cohmap_bo_destroy(bos[i]), "bo_destroy");
      struct cohmap_device_stats st = {0};
      good &= api(&t, cohmap_device_get_stats(t.dev, &st), "get_stats");
      if (good && st.slabs > 1)
         good = failf(&t, "%" PRIu64 " slabs left with no BO (at most one "
                      "empty slab per class is kept)", st.slabs);
      good &= api(&t, cohmap_device_destroy(t.dev), "device destroy");
      printf("# %s: churn of %zu BOs over %zu rounds: at most %" PRIu64
             " slabs, %" PRIu64 " left, %.2f s\n", t.mname, live, rounds,
             most, st.slabs, tu_now() - t0);
      fflush(stdout);
      free(bos);
      ok &= good;
   }
   assert_true(ok);
}

int
main(int argc, char **argv)
{
   /* BOs and rounds of the main test, then of the churn test. */
   static unsigned params[4] = {2000, 3, 300, 20};
   bool slow = false;

   for (int i = 1; i < argc; i++) {
      if (strcmp(argv[i], "--slow") == 0) {
         slow = true;
         params[0] = 6000;
         params[1] = 12;
         params[3] = 200;
      } else {
         fprintf(stderr, "usage: %s [--slow]\n", argv[0]);
         return 2;
      }
   }

   tu_seed();
   /* TEST_FILTER=pattern (cmocka wildcards) runs the matching tests only. */
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));
   const struct CMUnitTest tests[] = {
      {slow ? "slab (slow)" : "slab", test_slab, NULL, NULL, params},
      {slow ? "churn (slow)" : "churn", test_churn, NULL, NULL, params},
   };
   return _cmocka_run_group_tests(slow ? "winsys-slab-slow" : "winsys-slab",
                                  tests, TU_ARRAY_SIZE(tests), NULL, NULL);
}
