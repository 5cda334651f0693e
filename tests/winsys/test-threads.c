/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * winsys-threads: one device used from several threads, under every
 * method, each part bounded in time.
 *
 * (a) Four threads, each with coherent BOs of its own (two in slabs, which
 *     the threads share: their slots sit side by side in the same pages),
 *     run write / submit / wait / verify loops concurrently, and now and
 *     then replace a BO.  A thread's stores and the merges of other
 *     threads' submissions hit the same slab pages at the same time; no
 *     byte may be lost or overwritten.
 *
 * (b) Writers store to disjoint slots of one shared coherent BO while a
 *     submitter copies it, over and over.  Writer i stores round r into
 *     slot r % SLOTS, then publishes r; the submitter reads the published
 *     rounds, submits a copy of the BO, waits, and the copy must hold
 *     exactly round r in that slot: a store made before the submit is in
 *     the submission.  A writer never gets SLOTS rounds ahead of what the
 *     submitter checked, so the slot checked is not being rewritten; the
 *     other slots are, all the time, racing with the uploads (those only
 *     have to keep their writer's tag: a racing store may be torn).
 *
 * (c) Several threads wait on the same fence at once (wait, poll, short
 *     timeouts) and each must then see the submission's writes, while
 *     other threads call cohmap_device_flush_all() in a loop and create
 *     and destroy BOs, and the submitter's own stores must still reach
 *     its submissions.
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws-util.h"

static struct {
   double part_a_s, part_b_s, part_c_s; /* per method (b: per shape) */
} limits = {0.8, 0.3, 0.6};

/* Set by any failure; threads of a part stop early on it.  Reset for
 * each part, so that one failure does not hide the others: any_failed
 * keeps the verdict. */
static atomic_bool failed;
static bool any_failed;

static void
part_begin(void)
{
   atomic_store(&failed, false);
}

static void
part_end(void)
{
   any_failed |= atomic_load(&failed);
}

static void
failf(const char *method, const char *fmt, ...)
{
   va_list ap;
   char buf[512];

   va_start(ap, fmt);
   vsnprintf(buf, sizeof(buf), fmt, ap);
   va_end(ap);
   fprintf(stderr, "FAIL %s (TEST_SEED=%" PRIu64 "): %s\n", method,
           tu_seed(), buf);
   atomic_store(&failed, true);
}

static bool
api(const char *method, int ret, const char *what)
{
   if (ret == 0)
      return true;
   failf(method, "%s: %d (%s): %s", what, ret, strerror(-ret),
         cohmap_error_message());
   return false;
}

static void
start_threads(pthread_t *tids, unsigned n, void *(*fn)(void *), void *args,
              size_t arg_size)
{
   for (unsigned i = 0; i < n; i++)
      assert_int_equal(pthread_create(&tids[i], NULL, fn,
                                      (char *)args + i * arg_size),
                       0);
}

static void
join_threads(pthread_t *tids, unsigned n)
{
   for (unsigned i = 0; i < n; i++)
      pthread_join(tids[i], NULL);
}

static struct cohmap_device *
device_for(enum cohmap_method m, unsigned exec_us)
{
   char value[16];
   snprintf(value, sizeof(value), "%u", exec_us);
   setenv("COHMAP_SIM_EXEC_US", value, 1);
   struct cohmap_device *dev = ws_device_create(m, 0);
   unsetenv("COHMAP_SIM_EXEC_US");
   return dev;
}

/* Waits for f in one of four ways, chosen by how: 0 or the error. */
static int
wait_some_way(struct cohmap_fence *f, unsigned how)
{
   int ret;
   switch (how % 4) {
   case 0:
      return cohmap_fence_wait(f, UINT64_MAX);
   case 1:
      while ((ret = cohmap_fence_poll(f)) == -EBUSY)
         sched_yield();
      return ret;
   case 2:
      while ((ret = cohmap_fence_wait(f, 50 * 1000)) == -ETIME)
         ;
      return ret;
   default:
      while ((ret = cohmap_fence_wait(f, 0)) == -ETIME)
         sched_yield();
      return ret;
   }
}

/* --- (a) threads with BOs of their own --------------------------------- */

struct own_thread {
   const char *method;
   struct cohmap_device *dev;
   unsigned index;
   uint64_t seed;
   double deadline;
   unsigned loops, replaced;
};

struct own_bos {
   size_t size;           /* of src and dst: a multiple of 8 */
   struct cohmap_bo *src; /* coherent, slab */
   struct cohmap_bo *dst; /* coherent + GPU_WRITE, slab */
   struct cohmap_bo *big; /* coherent + GPU_WRITE, dedicated */
};

#define BIG_SIZE (64 * TU_KIB)

static bool
own_create(struct own_thread *t, struct own_bos *o, struct tu_rng *rng,
           bool src, bool dst)
{
   if (src) {
      if (!api(t->method, cohmap_bo_destroy(o->src), "destroy src"))
         return false;
      o->src = NULL;
      if (!api(t->method, cohmap_bo_create(t->dev, o->size,
                                           COHMAP_BO_COHERENT, &o->src),
               "create src"))
         return false;
   }
   if (dst) {
      if (!api(t->method, cohmap_bo_destroy(o->dst), "destroy dst"))
         return false;
      o->dst = NULL;
      if (!api(t->method, cohmap_bo_create(t->dev, o->size,
                                           COHMAP_BO_COHERENT |
                                              COHMAP_BO_GPU_WRITE,
                                           &o->dst),
               "create dst"))
         return false;
   }
   (void)rng;
   return true;
}

static void *
own_thread_main(void *arg)
{
   struct own_thread *t = arg;
   struct tu_rng rng;
   struct own_bos o = {0};
   uint8_t *want_dst = NULL, *want_big = NULL;

   tu_rng_seed(&rng, t->seed);
   o.size = 8 * (size_t)tu_rng_range(&rng, 8, 1000);
   want_dst = calloc(1, o.size);
   want_big = calloc(1, BIG_SIZE);
   bool ok = want_dst && want_big && own_create(t, &o, &rng, true, true) &&
             api(t->method, cohmap_bo_create(t->dev, BIG_SIZE,
                                             COHMAP_BO_COHERENT |
                                                COHMAP_BO_GPU_WRITE,
                                             &o.big),
                 "create big");

   size_t half = o.size / 2;
   while (ok && !atomic_load(&failed) && tu_now() < t->deadline) {
      uint8_t *src = cohmap_bo_map(o.src), *dst = cohmap_bo_map(o.dst);
      uint8_t *big = cohmap_bo_map(o.big);

      /* CPU: all of src, the upper half of dst, a run of big. */
      tu_rng_fill(&rng, src, o.size);
      tu_rng_fill(&rng, dst + half, o.size - half);
      memcpy(want_dst + half, dst + half, o.size - half);
      size_t run = (size_t)tu_rng_range(&rng, 1, 4096);
      size_t run_off = (size_t)tu_rng_below(&rng, BIG_SIZE / 2 - run);
      tu_rng_fill(&rng, big + run_off, run);
      memcpy(want_big + run_off, big + run_off, run);

      /* GPU: dst low half := src + k (a copy, then an in-place add);
       * big upper half: dst's upper half (the CPU's bytes, uploaded by
       * this submission) and a fill. */
      uint32_t k = (uint32_t)tu_rng_next(&rng);
      size_t copy_off = BIG_SIZE / 2 + 8 * (size_t)tu_rng_below(
                                              &rng, (BIG_SIZE / 4) / 8);
      size_t fill_off = 3 * BIG_SIZE / 4 + 4 * (size_t)tu_rng_below(
                                                  &rng, BIG_SIZE / 16 - 16);
      uint32_t pattern = (uint32_t)tu_rng_next(&rng);
      struct cohmap_submit *s;
      ok = api(t->method, cohmap_submit_begin(t->dev, &s), "begin");
      if (!ok)
         break;
      cohmap_submit_add_bo(s, o.src, COHMAP_ACCESS_READ);
      cohmap_submit_add_bo(s, o.dst, COHMAP_ACCESS_READ |
                                        COHMAP_ACCESS_WRITE);
      cohmap_submit_add_bo(s, o.big, COHMAP_ACCESS_WRITE);
      cohmap_cmd_copy(s, o.dst, 0, o.src, 0, half);
      cohmap_cmd_compute(s, COHMAP_COMPUTE_ADD32, o.dst, 0, o.dst, 0, half,
                         k);
      cohmap_cmd_copy(s, o.big, copy_off, o.dst, half, o.size - half);
      cohmap_cmd_fill(s, o.big, fill_off, 64, pattern);
      struct cohmap_fence *f = NULL;
      ok = api(t->method, cohmap_submit_end(s, &f), "submit_end");
      if (!ok)
         break;
      for (size_t i = 0; i < half; i += 4) {
         uint32_t v;
         memcpy(&v, src + i, 4);
         v += k;
         memcpy(want_dst + i, &v, 4);
      }
      memcpy(want_big + copy_off, want_dst + half, o.size - half);
      for (size_t i = 0; i < 64; i += 4)
         memcpy(want_big + fill_off + i, &pattern, 4);

      ok = api(t->method, wait_some_way(f, t->loops), "fence wait");
      cohmap_fence_destroy(f);
      if (!ok)
         break;

      for (size_t i = 0; i < o.size && ok; i++) {
         if (dst[i] != want_dst[i]) {
            failf(t->method, "thread %u loop %u: dst (%zu bytes, slab) "
                  "offset %zu: 0x%02x, expected 0x%02x (%s)", t->index,
                  t->loops, o.size, i, dst[i], want_dst[i],
                  i < half ? "GPU-written" : "CPU-written");
            ok = false;
         }
      }
      for (size_t i = 0; i < BIG_SIZE && ok; i++) {
         if (big[i] != want_big[i]) {
            failf(t->method, "thread %u loop %u: big (dedicated) offset "
                  "%zu: 0x%02x, expected 0x%02x", t->index, t->loops, i,
                  big[i], want_big[i]);
            ok = false;
         }
      }
      t->loops++;

      /* Now and then a new src or dst: slab slots change hands between
       * threads while the others submit. */
      if (ok && tu_rng_percent(&rng, 10)) {
         bool new_src = tu_rng_percent(&rng, 50);
         ok = own_create(t, &o, &rng, new_src, !new_src);
         if (ok && !new_src)
            memset(want_dst, 0, o.size);
         const uint8_t *p = cohmap_bo_map(new_src ? o.src : o.dst);
         for (size_t i = 0; ok && i < o.size; i++) {
            if (p[i]) {
               failf(t->method, "thread %u: a new BO reads 0x%02x at %zu",
                     t->index, p[i], i);
               ok = false;
            }
         }
         t->replaced++;
      }
   }
   if (!ok)
      atomic_store(&failed, true);
   cohmap_bo_destroy(o.src);
   cohmap_bo_destroy(o.dst);
   cohmap_bo_destroy(o.big);
   free(want_dst);
   free(want_big);
   return NULL;
}

static void
part_a(enum cohmap_method method)
{
   enum { THREADS = 4 };
   const char *mname = cohmap_method_name(method);
   struct own_thread t[THREADS];
   pthread_t tids[THREADS];
   char name[64];

   struct cohmap_device *dev = device_for(method, 0);
   assert_non_null(dev);
   double deadline = tu_now() + limits.part_a_s;
   for (unsigned i = 0; i < THREADS; i++) {
      snprintf(name, sizeof(name), "threads-a-%s-%u", mname, i);
      t[i] = (struct own_thread){mname, dev, i, tu_seed_for(name),
                                 deadline, 0, 0};
   }
   start_threads(tids, THREADS, own_thread_main, t, sizeof(t[0]));
   join_threads(tids, THREADS);
   assert_int_equal(cohmap_device_destroy(dev), 0);

   unsigned loops = 0, replaced = 0;
   for (unsigned i = 0; i < THREADS; i++) {
      loops += t[i].loops;
      replaced += t[i].replaced;
   }
   printf("# %s (a): %u threads, %u write-submit-wait-verify loops, %u BOs "
          "replaced\n", mname, THREADS, loops, replaced);
}

/* --- (b) disjoint stores to one shared BO, copied by a submitter ------- */

#define WRITERS 3
#define SLOTS 16

struct shared_bo {
   const char *method;
   uint8_t *map;
   size_t stride; /* bytes between consecutive slots */
   _Atomic uint64_t published[WRITERS];
   _Atomic uint64_t checked[WRITERS];
   atomic_bool stop;
   atomic_ullong stores;
};

struct writer {
   struct shared_bo *sh;
   unsigned index;
};

static size_t
slot_offset(const struct shared_bo *sh, unsigned writer, unsigned slot)
{
   return ((size_t)slot * WRITERS + writer) * sh->stride;
}

static uint64_t
tag(unsigned writer, uint64_t round)
{
   return (uint64_t)(writer + 1) << 56 | round;
}

static void *
writer_main(void *arg)
{
   struct writer *w = arg;
   struct shared_bo *sh = w->sh;
   uint64_t round = 0;

   while (!atomic_load(&sh->stop)) {
      /* Not SLOTS rounds ahead of the last round the submitter checked:
       * the slot it checks next is not rewritten before it is checked. */
      if (round + 1 - atomic_load(&sh->checked[w->index]) >= SLOTS) {
         sched_yield();
         continue;
      }
      round++;
      _Atomic uint64_t *slot = (_Atomic uint64_t *)(sh->map +
                               slot_offset(sh, w->index, round % SLOTS));
      atomic_store_explicit(slot, tag(w->index, round),
                            memory_order_relaxed);
      atomic_store_explicit(&sh->published[w->index], round,
                            memory_order_release);
      atomic_fetch_add(&sh->stores, 1);
      if (round % 4 == 0)
         sched_yield();
   }
   return NULL;
}

struct shared_shape {
   const char *name;
   size_t size;
   uint32_t flags;
};

/* The newest round writer w stored into slot by round r (0: none). */
static uint64_t
newest_in_slot(uint64_t r, unsigned slot)
{
   if (r < slot)
      return 0;
   return r - (r - slot) % SLOTS;
}

/*
 * Checks a copy of the shared BO.  round[w] is what writer w had
 * published before the submit: that slot must hold exactly that round.
 * When final (the writers stopped), every slot must hold its newest
 * round.  Any other slot may be mid-rewrite, but must hold a value of
 * its writer (the tag byte is never torn: it does not change).
 */
static bool
check_copy(struct shared_bo *sh, const uint8_t *copy, const uint64_t *round,
           bool final, unsigned submission)
{
   for (unsigned w = 0; w < WRITERS; w++) {
      for (unsigned slot = 0; slot < SLOTS; slot++) {
         uint64_t v, want = 0;
         bool exact;
         memcpy(&v, copy + slot_offset(sh, w, slot), 8);
         if (final) {
            exact = true;
            uint64_t r = newest_in_slot(round[w], slot);
            want = r ? tag(w, r) : 0;
         } else {
            exact = round[w] && round[w] % SLOTS == slot;
            want = tag(w, round[w]);
         }
         if (exact && v != want) {
            failf(sh->method, "copy %u: writer %u slot %u (offset %zu): "
                  "the copy holds 0x%016" PRIx64 ", the store published "
                  "before the submit was 0x%016" PRIx64, submission, w,
                  slot, slot_offset(sh, w, slot), v, want);
            return false;
         }
         if (!exact && v && v >> 56 != w + 1) {
            failf(sh->method, "copy %u: writer %u slot %u: 0x%016" PRIx64
                  " is not a value this writer stored", submission, w, slot,
                  v);
            return false;
         }
      }
   }
   return true;
}

/* After a failed check: is the wrong value in the copy's device memory
 * too (a store that was not uploaded), or only in its mapping (a merge
 * that went wrong)? */
static void
locate(struct cohmap_device *dev, struct shared_bo *sh,
       struct cohmap_bo *copy, size_t size, const uint64_t *round)
{
   struct cohmap_bo *staging = NULL;
   struct cohmap_submit *s = NULL;

   if (cohmap_bo_create(dev, size, COHMAP_BO_GPU_WRITE, &staging) ||
       cohmap_submit_begin(dev, &s)) {
      cohmap_bo_destroy(staging);
      return;
   }
   cohmap_submit_add_bo(s, copy, COHMAP_ACCESS_READ);
   cohmap_submit_add_bo(s, staging, COHMAP_ACCESS_WRITE);
   cohmap_cmd_copy(s, staging, 0, copy, 0, size);
   if (ws_submit_wait(s) == 0 &&
       cohmap_bo_invalidate(staging, 0, size) == 0) {
      const uint8_t *d = cohmap_bo_map(staging);
      for (unsigned w = 0; w < WRITERS; w++) {
         if (!round[w])
            continue;
         uint64_t v;
         memcpy(&v, d + slot_offset(sh, w, round[w] % SLOTS), 8);
         fprintf(stderr, "# writer %u slot %u: the copy's device memory "
                 "holds 0x%016" PRIx64 "\n", w,
                 (unsigned)(round[w] % SLOTS), v);
      }
   }
   cohmap_bo_destroy(staging);
}

static void
part_b(enum cohmap_method method, const struct shared_shape *shape)
{
   const char *mname = cohmap_method_name(method);
   struct shared_bo sh = {.method = mname};
   struct writer wr[WRITERS];
   pthread_t tids[WRITERS];
   struct cohmap_bo *bo, *copy;

   struct cohmap_device *dev = device_for(method, 0);
   assert_non_null(dev);
   assert_int_equal(cohmap_bo_create(dev, shape->size, shape->flags, &bo),
                    0);
   /* The copy goes to a dedicated BO (at least 32 KiB). */
   size_t copy_size = shape->size < 32 * TU_KIB ? 32 * TU_KIB : shape->size;
   assert_int_equal(cohmap_bo_create(dev, copy_size,
                                     COHMAP_BO_COHERENT |
                                        COHMAP_BO_GPU_WRITE,
                                     &copy),
                    0);
   sh.map = cohmap_bo_map(bo);
   const uint8_t *copy_map = cohmap_bo_map(copy);
   sh.stride = shape->size / (WRITERS * SLOTS) / 8 * 8;
   for (unsigned i = 0; i < WRITERS; i++)
      wr[i] = (struct writer){&sh, i};
   start_threads(tids, WRITERS, writer_main, wr, sizeof(wr[0]));

   double deadline = tu_now() + limits.part_b_s;
   unsigned submissions = 0;
   uint64_t round[WRITERS];
   bool ok = true;
   while (ok && !atomic_load(&failed) && tu_now() < deadline) {
      for (unsigned w = 0; w < WRITERS; w++)
         round[w] = atomic_load_explicit(&sh.published[w],
                                         memory_order_acquire);
      struct cohmap_submit *s;
      ok = api(mname, cohmap_submit_begin(dev, &s), "begin");
      if (!ok)
         break;
      /* Sometimes a flush_all first: it must not take the stores away
       * from the submission's own upload. */
      if (submissions % 5 == 4)
         ok = api(mname, cohmap_device_flush_all(dev), "flush_all");
      cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_READ);
      cohmap_submit_add_bo(s, copy, COHMAP_ACCESS_WRITE);
      cohmap_cmd_copy(s, copy, 0, bo, 0, shape->size);
      ok = ok && api(mname, ws_submit_wait(s), "copy submission");
      if (ok && !check_copy(&sh, copy_map, round, false, submissions)) {
         locate(dev, &sh, copy, shape->size, round);
         ok = false;
      }
      for (unsigned w = 0; w < WRITERS; w++)
         atomic_store(&sh.checked[w], round[w]);
      submissions++;
   }
   atomic_store(&sh.stop, true);
   join_threads(tids, WRITERS);

   /* Quiet now: one more copy must hold every final store. */
   if (ok && !atomic_load(&failed)) {
      for (unsigned w = 0; w < WRITERS; w++)
         round[w] = atomic_load(&sh.published[w]);
      struct cohmap_submit *s;
      ok = api(mname, cohmap_submit_begin(dev, &s), "begin");
      if (ok) {
         cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_READ);
         cohmap_submit_add_bo(s, copy, COHMAP_ACCESS_WRITE);
         cohmap_cmd_copy(s, copy, 0, bo, 0, shape->size);
         ok = api(mname, ws_submit_wait(s), "final copy") &&
              check_copy(&sh, copy_map, round, true, submissions);
      }
   }
   assert_int_equal(ws_teardown(dev, (struct cohmap_bo *[]){bo, copy}, 2),
                    0);
   printf("# %s (b) %s: %u writers, %llu stores, %u copies checked\n",
          mname, shape->name, WRITERS,
          (unsigned long long)atomic_load(&sh.stores), submissions);
   if (!ok)
      atomic_store(&failed, true);
}

/* --- (c) many waiters on one fence, flush_all and BO churn meanwhile --- */

#define WAITERS 4
#define FLUSHERS 2
#define WSIZE 1024
#define XSIZE (64 * TU_KIB)

struct fence_test {
   const char *method;
   struct cohmap_device *dev;
   pthread_barrier_t start, done;
   struct cohmap_fence *_Atomic fence;
   uint8_t *x1, *x2, *r; /* GPU-written */
   uint32_t pattern;
   uint8_t w_want[WSIZE];
   atomic_bool stop;
   atomic_uint flushes, churns;
   unsigned rounds;
};

struct fence_thread {
   struct fence_test *ft;
   unsigned index;
};

static void *
waiter_main(void *arg)
{
   struct fence_thread *th = arg;
   struct fence_test *ft = th->ft;

   for (unsigned round = 0;; round++) {
      pthread_barrier_wait(&ft->start);
      struct cohmap_fence *f = atomic_load(&ft->fence);
      if (!f)
         break; /* the end */
      int ret = wait_some_way(f, th->index + round);
      if (!api(ft->method, ret, "concurrent fence wait")) {
         pthread_barrier_wait(&ft->done);
         continue;
      }
      /* The wait returned: this thread's loads see the writes. */
      bool ok = true;
      for (size_t i = 0; i < XSIZE && ok; i += 4) {
         uint32_t a = 0, b;
         if (i < 512)
            memcpy(&a, ft->x1 + i, 4);
         else
            a = ft->pattern;
         memcpy(&b, ft->x2 + i, 4);
         if (a != ft->pattern || b != ft->pattern) {
            failf(ft->method, "round %u, waiter %u: after its wait, %s "
                  "offset %zu reads 0x%08x, the fill was 0x%08x", round,
                  th->index, a != ft->pattern ? "slab BO" : "dedicated BO",
                  i, a != ft->pattern ? a : b, ft->pattern);
            ok = false;
         }
      }
      for (size_t i = 0; i < WSIZE && ok; i++) {
         if (ft->r[i] != ft->w_want[i]) {
            failf(ft->method, "round %u, waiter %u: the copy of the CPU's "
                  "BO reads 0x%02x at %zu, the CPU stored 0x%02x before "
                  "the submit", round, th->index, ft->r[i], i,
                  ft->w_want[i]);
            ok = false;
         }
      }
      pthread_barrier_wait(&ft->done);
   }
   return NULL;
}

static void *
flusher_main(void *arg)
{
   struct fence_thread *th = arg;
   struct fence_test *ft = th->ft;

   while (!atomic_load(&ft->stop)) {
      if (!api(ft->method, cohmap_device_flush_all(ft->dev),
               "concurrent cohmap_device_flush_all"))
         break;
      atomic_fetch_add(&ft->flushes, 1);
      /* flush_all holds the device lock throughout: leave the submitter
       * some of it. */
      sched_yield();
   }
   return NULL;
}

/* Creates, writes and destroys BOs while the others run: flush_all walks
 * the block list that this changes. */
static void *
churner_main(void *arg)
{
   struct fence_thread *th = arg;
   struct fence_test *ft = th->ft;
   struct tu_rng rng;

   tu_rng_seed(&rng, tu_seed_for("threads-c-churn") + th->index);
   while (!atomic_load(&ft->stop)) {
      struct cohmap_bo *bo;
      size_t size = tu_rng_percent(&rng, 50)
                       ? (size_t)tu_rng_range(&rng, 1, 8000)
                       : (size_t)tu_rng_range(&rng, 32 * TU_KIB,
                                              96 * TU_KIB);
      uint32_t flags = COHMAP_BO_COHERENT;
      if (tu_rng_percent(&rng, 50))
         flags |= COHMAP_BO_GPU_WRITE;
      if (!api(ft->method, cohmap_bo_create(ft->dev, size, flags, &bo),
               "concurrent bo_create"))
         break;
      memset(cohmap_bo_map(bo), 0x3c, size);
      if (!api(ft->method, cohmap_bo_destroy(bo), "concurrent bo_destroy"))
         break;
      atomic_fetch_add(&ft->churns, 1);
   }
   return NULL;
}

static void
part_c(enum cohmap_method method)
{
   struct fence_test ft = {.method = cohmap_method_name(method)};
   struct fence_thread th[WAITERS + FLUSHERS + 1];
   pthread_t waiters[WAITERS], others[FLUSHERS + 1];
   struct cohmap_bo *bos[4];
   struct tu_rng rng;

   tu_rng_seed(&rng, tu_seed_for("threads-c") ^ (uint64_t)method);
   /* A GPU that is busy for a while: the waiters really wait. */
   ft.dev = device_for(method, 300);
   assert_non_null(ft.dev);
   const uint32_t rw = COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE;
   assert_int_equal(cohmap_bo_create(ft.dev, 512, rw, &bos[0]), 0);
   assert_int_equal(cohmap_bo_create(ft.dev, XSIZE, rw, &bos[1]), 0);
   assert_int_equal(cohmap_bo_create(ft.dev, WSIZE, COHMAP_BO_COHERENT,
                                     &bos[2]),
                    0);
   assert_int_equal(cohmap_bo_create(ft.dev, WSIZE, rw, &bos[3]), 0);
   ft.x1 = cohmap_bo_map(bos[0]);
   ft.x2 = cohmap_bo_map(bos[1]);
   uint8_t *w = cohmap_bo_map(bos[2]);
   ft.r = cohmap_bo_map(bos[3]);
   assert_int_equal(pthread_barrier_init(&ft.start, NULL, WAITERS + 1), 0);
   assert_int_equal(pthread_barrier_init(&ft.done, NULL, WAITERS + 1), 0);

   for (unsigned i = 0; i < WAITERS + FLUSHERS + 1; i++)
      th[i] = (struct fence_thread){&ft, i};
   start_threads(waiters, WAITERS, waiter_main, th, sizeof(th[0]));
   start_threads(others, FLUSHERS, flusher_main, th + WAITERS, sizeof(th[0]));
   start_threads(others + FLUSHERS, 1, churner_main, th + WAITERS + FLUSHERS,
                 sizeof(th[0]));

   double deadline = tu_now() + limits.part_c_s;
   for (unsigned round = 0; tu_now() < deadline && !atomic_load(&failed);
        round++) {
      /* The stores the submission's copy must carry, racing with the
       * flushers' uploads of the same BO. */
      tu_rng_fill(&rng, ft.w_want, WSIZE);
      memcpy(w, ft.w_want, WSIZE);
      ft.pattern = (uint32_t)tu_rng_next(&rng);

      struct cohmap_submit *s;
      struct cohmap_fence *f = NULL;
      bool ok = api(ft.method, cohmap_submit_begin(ft.dev, &s), "begin");
      if (ok) {
         cohmap_submit_add_bo(s, bos[0], COHMAP_ACCESS_WRITE);
         cohmap_submit_add_bo(s, bos[1], COHMAP_ACCESS_WRITE);
         cohmap_submit_add_bo(s, bos[2], COHMAP_ACCESS_READ);
         cohmap_submit_add_bo(s, bos[3], COHMAP_ACCESS_WRITE);
         cohmap_cmd_fill(s, bos[0], 0, 512, ft.pattern);
         cohmap_cmd_fill(s, bos[1], 0, XSIZE, ft.pattern);
         cohmap_cmd_copy(s, bos[3], 0, bos[2], 0, WSIZE);
         ok = api(ft.method, cohmap_submit_end(s, &f), "submit_end");
      }
      if (!ok) {
         /* The waiters still wait at the barrier: give them a done
          * submission. */
         cohmap_submit_begin(ft.dev, &s);
         cohmap_submit_end(s, &f);
      }
      atomic_store(&ft.fence, f);
      pthread_barrier_wait(&ft.start);
      pthread_barrier_wait(&ft.done);
      cohmap_fence_destroy(f);
      ft.rounds++;
   }
   atomic_store(&ft.fence, NULL);
   pthread_barrier_wait(&ft.start);

   atomic_store(&ft.stop, true);
   join_threads(waiters, WAITERS);
   join_threads(others, FLUSHERS + 1);
   pthread_barrier_destroy(&ft.start);
   pthread_barrier_destroy(&ft.done);
   assert_int_equal(ws_teardown(ft.dev, bos, 4), 0);
   printf("# %s (c): %u rounds of %u waiters on one fence, %u flush_all "
          "calls and %u BO create/destroy meanwhile\n", ft.method, ft.rounds,
          WAITERS, atomic_load(&ft.flushes), atomic_load(&ft.churns));
}

/* --- driver ------------------------------------------------------------- */

static const struct shared_shape shapes[] = {
   {"slab BO", 4 * TU_KIB, COHMAP_BO_COHERENT},
   {"slab GPU_WRITE BO", 2 * TU_KIB,
    COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE},
   {"dedicated BO", 64 * TU_KIB, COHMAP_BO_COHERENT},
   {"dedicated GPU_WRITE BO", 128 * TU_KIB,
    COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE},
};

static void
test_threads(void **state)
{
   (void)state;
   for (size_t mi = 0; mi < TU_METHODS_COUNT; mi++) {
      enum cohmap_method method = tu_methods[mi];
      bool fatal;
      if (!ws_method_usable(method, &fatal)) {
         assert_false(fatal);
         printf("# %s: not available here, skipped\n",
                cohmap_method_name(method));
         continue;
      }
      double t0 = tu_now();
      part_begin();
      part_a(method);
      part_end();
      for (size_t i = 0; i < TU_ARRAY_SIZE(shapes); i++) {
         part_begin();
         part_b(method, &shapes[i]);
         part_end();
      }
      part_begin();
      part_c(method);
      part_end();
      printf("# %s: %.2f s\n", cohmap_method_name(method), tu_now() - t0);
      fflush(stdout);
   }
   assert_false(any_failed);
}

int
main(int argc, char **argv)
{
   bool slow = false;

   for (int i = 1; i < argc; i++) {
      if (strcmp(argv[i], "--slow") == 0) {
         slow = true;
         limits.part_a_s = 8.0;
         limits.part_b_s = 3.0;
         limits.part_c_s = 6.0;
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
      {slow ? "threads (slow)" : "threads", test_threads, NULL, NULL, NULL},
   };
   return _cmocka_run_group_tests(slow ? "winsys-threads-slow"
                                       : "winsys-threads",
                                  tests, 1, NULL, NULL);
}
