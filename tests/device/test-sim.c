/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The sim backend on its own, below the winsys: every command against a
 * CPU reference, ordering across submissions and threads, fences and their
 * timeouts while the simulated GPU is busy, byte-range transfers with
 * biases, atomicity of an upload against running commands, the
 * COHMAP_SIM_* knobs, and that device memory is really separate: a CPU
 * store after an upload is invisible to commands until uploaded again.
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cohmap/winsys.h"
#include "device/device.h"
#include "test-util.h"

static const struct cohmap_device_ops *const ops = &cohmap_device_sim_ops;

static const char *const knob_names[] = {
   "COHMAP_SIM_LATENCY_US",
   "COHMAP_SIM_BANDWIDTH_MBPS",
   "COHMAP_SIM_EXEC_US",
};

/* Creates a sim with exactly these knobs (NULL: unset), so that neither
 * the developer's environment nor an earlier test leaks in. */
static struct cohmap_backend *
sim_create(const char *latency_us, const char *bandwidth_mbps,
           const char *exec_us)
{
   const char *values[] = {latency_us, bandwidth_mbps, exec_us};
   struct cohmap_backend *b = NULL;

   for (size_t i = 0; i < TU_ARRAY_SIZE(knob_names); i++) {
      if (values[i])
         setenv(knob_names[i], values[i], 1);
      else
         unsetenv(knob_names[i]);
   }
   int ret = ops->create(&b);
   for (size_t i = 0; i < TU_ARRAY_SIZE(knob_names); i++)
      unsetenv(knob_names[i]);
   if (ret) {
      fprintf(stderr, "sim create failed: %d: %s\n", ret,
              cohmap_error_message());
      return NULL;
   }
   return b;
}

static struct cohmap_dev_mem *
mem_alloc(struct cohmap_backend *b, size_t size)
{
   struct cohmap_dev_mem *mem = NULL;
   assert_int_equal(ops->mem_alloc(b, size, &mem), 0);
   assert_non_null(mem);
   return mem;
}

static void
upload_all(struct cohmap_backend *b, struct cohmap_dev_mem *mem,
           const void *src, size_t size)
{
   const struct cohmap_range r = {0, size};
   assert_int_equal(ops->upload(b, mem, &r, 1, src, 0, 0), 0);
}

static uint64_t
submit(struct cohmap_backend *b, const struct cohmap_dev_cmd *cmds,
       size_t count)
{
   uint64_t seqno = 0;
   assert_int_equal(ops->submit(b, cmds, count, &seqno), 0);
   assert_true(seqno > 0);
   return seqno;
}

static void
wait_forever(struct cohmap_backend *b, uint64_t seqno)
{
   assert_int_equal(ops->wait(b, seqno, UINT64_MAX), 0);
   assert_true(ops->completed(b) >= seqno);
}

/* True if the device bytes of mem equal expect; prints the first
 * difference otherwise. */
static bool
device_matches(struct cohmap_backend *b, struct cohmap_dev_mem *mem,
               const uint8_t *expect, size_t size, const char *what)
{
   uint8_t *got = malloc(size);
   assert_non_null(got);
   assert_int_equal(ops->download(b, mem, 0, size, got), 0);
   bool ok = tu_mirror_matches(expect, got, size, what);
   free(got);
   return ok;
}

static uint32_t
le32(const uint8_t *p)
{
   return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
          (uint32_t)p[3] << 24;
}

static uint64_t
le64(const uint8_t *p)
{
   return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* --- the CPU reference ------------------------------------------------- */

/* A device memory object and what the reference says it holds. */
struct ref_mem {
   struct cohmap_dev_mem *mem;
   uint8_t *ref;
   size_t size;
};

static uint8_t *
ref_of(struct ref_mem *mems, size_t count, const struct cohmap_dev_mem *mem)
{
   for (size_t i = 0; i < count; i++) {
      if (mems[i].mem == mem)
         return mems[i].ref;
   }
   fail_msg("command names a memory object the test does not know");
   return NULL;
}

/* Written independently of the sim: a copy through a temporary buffer,
 * bytes computed with shifts. */
static void
ref_execute(struct ref_mem *mems, size_t count,
            const struct cohmap_dev_cmd *c)
{
   uint8_t *dst = ref_of(mems, count, c->dst) + c->dst_offset;
   const uint8_t *src = NULL;

   if (c->type == COHMAP_CMD_COPY || c->type == COHMAP_CMD_CHECKSUM ||
       c->type == COHMAP_CMD_COMPUTE)
      src = ref_of(mems, count, c->src) + c->src_offset;

   switch (c->type) {
   case COHMAP_CMD_COPY: {
      uint8_t *tmp = malloc(c->size ? c->size : 1);
      assert_non_null(tmp);
      memcpy(tmp, src, c->size);
      memcpy(dst, tmp, c->size);
      free(tmp);
      break;
   }
   case COHMAP_CMD_FILL:
      for (size_t i = 0; i < c->size; i++)
         dst[i] = (uint8_t)(c->value >> (8 * (i % 4)));
      break;
   case COHMAP_CMD_WRITE:
      memcpy(dst, c->data, c->size);
      break;
   case COHMAP_CMD_CHECKSUM: {
      uint64_t sum = cohmap_checksum(src, c->size);
      for (unsigned i = 0; i < 8; i++)
         dst[i] = (uint8_t)(sum >> (8 * i));
      break;
   }
   case COHMAP_CMD_COMPUTE:
      for (size_t i = 0; i < c->size; i += 4) {
         uint32_t w = le32(src + i);
         w = c->op == COHMAP_COMPUTE_ADD32 ? w + c->value : w ^ c->value;
         for (unsigned k = 0; k < 4; k++)
            dst[i + k] = (uint8_t)(w >> (8 * k));
      }
      break;
   }
}

/* A random range of mem: length up to max_len (whole-word aligned if
 * align4). */
static void
random_range(struct tu_rng *rng, size_t mem_size, size_t max_len, bool align4,
             size_t *offset, size_t *len)
{
   size_t unit = align4 ? 4 : 1;
   size_t units = mem_size / unit;
   size_t max_units = max_len / unit < units ? max_len / unit : units;
   size_t n = tu_rng_below(rng, max_units + 1);

   *len = n * unit;
   *offset = tu_rng_below(rng, units - n + 1) * unit;
}

static bool
partly_overlap(const struct cohmap_dev_cmd *c)
{
   return c->dst == c->src && c->dst_offset != c->src_offset &&
          c->dst_offset < c->src_offset + c->size &&
          c->src_offset < c->dst_offset + c->size;
}

/* A random valid command over mems; WRITE data is malloc'ed into *payload
 * (the caller frees it once the submission completed). */
static struct cohmap_dev_cmd
random_cmd(struct tu_rng *rng, struct ref_mem *mems, size_t count,
           void **payload)
{
   struct cohmap_dev_cmd c = {0};
   struct ref_mem *dst = &mems[tu_rng_below(rng, count)];
   struct ref_mem *src = &mems[tu_rng_below(rng, count)];
   /* Mostly small ranges, sometimes a whole object. */
   size_t max_len = tu_rng_percent(rng, 10) ? SIZE_MAX : 600;

   *payload = NULL;
   c.type = (enum cohmap_cmd_type)tu_rng_below(rng, 5);
   c.dst = dst->mem;
   c.value = (uint32_t)tu_rng_next(rng);

   switch (c.type) {
   case COHMAP_CMD_COPY: {
      /* Overlapping copies within one object are common on purpose. */
      size_t len_limit = dst->size < src->size ? dst->size : src->size;
      size_t len, off;
      random_range(rng, len_limit, max_len, false, &off, &len);
      c.src = src->mem;
      c.size = len;
      c.dst_offset = tu_rng_below(rng, dst->size - len + 1);
      c.src_offset = tu_rng_below(rng, src->size - len + 1);
      break;
   }
   case COHMAP_CMD_FILL:
      random_range(rng, dst->size, max_len, true, &c.dst_offset, &c.size);
      break;
   case COHMAP_CMD_WRITE:
      random_range(rng, dst->size, max_len, false, &c.dst_offset, &c.size);
      *payload = malloc(c.size ? c.size : 1);
      assert_non_null(*payload);
      tu_rng_fill(rng, *payload, c.size);
      c.data = *payload;
      break;
   case COHMAP_CMD_CHECKSUM:
      c.src = src->mem;
      random_range(rng, src->size, max_len, false, &c.src_offset, &c.size);
      c.dst_offset = tu_rng_below(rng, dst->size - 8 + 1);
      break;
   case COHMAP_CMD_COMPUTE: {
      size_t len_limit = dst->size < src->size ? dst->size : src->size;
      size_t off;
      random_range(rng, len_limit, max_len, true, &off, &c.size);
      c.src = src->mem;
      c.op = tu_rng_percent(rng, 50) ? COHMAP_COMPUTE_ADD32
                                     : COHMAP_COMPUTE_XOR32;
      c.dst_offset = tu_rng_below(rng, (dst->size - c.size) / 4 + 1) * 4;
      c.src_offset = tu_rng_below(rng, (src->size - c.size) / 4 + 1) * 4;
      /* In place is allowed, partial overlap is not. */
      if (tu_rng_percent(rng, 30) || partly_overlap(&c)) {
         c.src = c.dst;
         c.src_offset = c.dst_offset;
      }
      break;
   }
   }
   return c;
}

/* --- tests ------------------------------------------------------------- */

static void
test_lookup(void **state)
{
   assert_ptr_equal(cohmap_device_ops_find("sim"), &cohmap_device_sim_ops);
   assert_string_equal(cohmap_device_sim_ops.name, "sim");
   assert_null(cohmap_device_ops_find("bogus"));
   assert_null(cohmap_device_ops_find(""));

   /* destroy() accepts NULL like every destroy in cohmap. */
   ops->destroy(NULL);
}

static void
test_mem_alloc(void **state)
{
   struct cohmap_backend *b = sim_create(NULL, NULL, NULL);
   assert_non_null(b);

   /* Sizes that are not whole pages: commands are bounded by the size
    * asked for, not the rounded-up mapping. */
   static const size_t sizes[] = {1, 8, 4095, 4096, 4097, 100000};
   for (size_t i = 0; i < TU_ARRAY_SIZE(sizes); i++) {
      struct cohmap_dev_mem *mem = mem_alloc(b, sizes[i]);
      uint8_t *zero = calloc(1, sizes[i]);
      assert_non_null(zero);
      assert_true(device_matches(b, mem, zero, sizes[i], "fresh memory"));

      uint8_t byte;
      assert_int_equal(ops->download(b, mem, sizes[i], 1, &byte), -EINVAL);
      assert_int_equal(ops->download(b, mem, sizes[i], 0, &byte), 0);
      free(zero);
      ops->mem_free(b, mem);
   }

   struct cohmap_dev_mem *mem = (struct cohmap_dev_mem *)&mem;
   assert_int_equal(ops->mem_alloc(b, 0, &mem), -EINVAL);
   assert_null(mem);
   /* Out of memory is an error, never an abort. */
   mem = (struct cohmap_dev_mem *)&mem;
   assert_int_equal(ops->mem_alloc(b, SIZE_MAX, &mem), -ENOMEM);
   assert_null(mem);
   assert_non_null(strstr(cohmap_error_message(), "sim"));
   assert_int_equal(ops->mem_alloc(b, SIZE_MAX / 2 + 1, &mem), -ENOMEM);
   assert_null(mem);

   ops->destroy(b);
}

static void
test_each_command(void **state)
{
   struct cohmap_backend *b = sim_create(NULL, NULL, NULL);
   assert_non_null(b);
   struct cohmap_dev_mem *m = mem_alloc(b, 256);
   uint8_t init[256], got[256];

   for (size_t i = 0; i < sizeof(init); i++)
      init[i] = (uint8_t)i;
   upload_all(b, m, init, sizeof(init));

   /* COPY, forward and backward overlap within one object: memmove. */
   struct cohmap_dev_cmd copy[] = {
      {.type = COHMAP_CMD_COPY,
       .dst = m,
       .src = m,
       .dst_offset = 4,
       .src_offset = 0,
       .size = 8},
      {.type = COHMAP_CMD_COPY,
       .dst = m,
       .src = m,
       .dst_offset = 32,
       .src_offset = 36,
       .size = 8},
   };
   wait_forever(b, submit(b, copy, TU_ARRAY_SIZE(copy)));
   assert_int_equal(ops->download(b, m, 0, sizeof(got), got), 0);
   static const uint8_t copied_fwd[] = {0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7};
   assert_memory_equal(got, copied_fwd, sizeof(copied_fwd));
   static const uint8_t copied_back[] = {36, 37, 38, 39, 40, 41, 42, 43, 40};
   assert_memory_equal(got + 32, copied_back, sizeof(copied_back));

   /* FILL: a little-endian pattern, only inside the range. */
   struct cohmap_dev_cmd fill = {.type = COHMAP_CMD_FILL,
                                 .dst = m,
                                 .dst_offset = 64,
                                 .size = 8,
                                 .value = 0x11223344};
   wait_forever(b, submit(b, &fill, 1));
   assert_int_equal(ops->download(b, m, 60, 16, got), 0);
   static const uint8_t filled[] = {60,   61,   62,   63,   0x44, 0x33,
                                    0x22, 0x11, 0x44, 0x33, 0x22, 0x11,
                                    72,   73,   74,   75};
   assert_memory_equal(got, filled, sizeof(filled));

   /* WRITE: any alignment. */
   static const char text[] = "foobar";
   struct cohmap_dev_cmd write = {.type = COHMAP_CMD_WRITE,
                                  .dst = m,
                                  .dst_offset = 101,
                                  .size = 6,
                                  .data = text};
   wait_forever(b, submit(b, &write, 1));
   assert_int_equal(ops->download(b, m, 100, 8, got), 0);
   assert_int_equal(got[0], 100);
   assert_memory_equal(got + 1, "foobar", 6);
   assert_int_equal(got[7], 107);

   /* CHECKSUM: FNV-1a 64 of "foobar" and of nothing (the published test
    * vectors), stored little-endian. */
   struct cohmap_dev_cmd sums[] = {
      {.type = COHMAP_CMD_CHECKSUM,
       .dst = m,
       .dst_offset = 128,
       .src = m,
       .src_offset = 101,
       .size = 6},
      {.type = COHMAP_CMD_CHECKSUM,
       .dst = m,
       .dst_offset = 137,
       .src = m,
       .src_offset = 0,
       .size = 0},
   };
   wait_forever(b, submit(b, sums, TU_ARRAY_SIZE(sums)));
   assert_int_equal(ops->download(b, m, 128, 17, got), 0);
   assert_true(le64(got) == 0x85944171f73967e8ull);
   assert_int_equal(got[8], 136);
   assert_true(le64(got + 9) == 0xcbf29ce484222325ull);

   /* COMPUTE: ADD32 in place wraps; XOR32 into another range. */
   uint8_t words[16] = {0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0,
                        0x78, 0x56, 0x34, 0x12, 0, 0, 0, 0x80};
   const struct cohmap_range r = {192, sizeof(words)};
   assert_int_equal(ops->upload(b, m, &r, 1, words, -192, 0), 0);
   struct cohmap_dev_cmd compute[] = {
      {.type = COHMAP_CMD_COMPUTE,
       .op = COHMAP_COMPUTE_ADD32,
       .dst = m,
       .dst_offset = 192,
       .src = m,
       .src_offset = 192,
       .size = 16,
       .value = 2},
      {.type = COHMAP_CMD_COMPUTE,
       .op = COHMAP_COMPUTE_XOR32,
       .dst = m,
       .dst_offset = 224,
       .src = m,
       .src_offset = 192,
       .size = 16,
       .value = 0x80000001},
   };
   wait_forever(b, submit(b, compute, TU_ARRAY_SIZE(compute)));
   assert_int_equal(ops->download(b, m, 192, 48, got), 0);
   assert_int_equal(le32(got + 0), 1);
   assert_int_equal(le32(got + 4), 3);
   assert_int_equal(le32(got + 8), 0x1234567a);
   assert_int_equal(le32(got + 12), 0x80000002);
   assert_int_equal(le32(got + 32), 0x80000000);
   assert_int_equal(le32(got + 36), 0x80000002);
   assert_int_equal(le32(got + 40), 0x9234567b);
   assert_int_equal(le32(got + 44), 0x00000003);

   struct cohmap_backend_stats st;
   ops->get_stats(b, &st);
   assert_int_equal(st.commands, 8);

   ops->mem_free(b, m);
   ops->destroy(b);
}

/* Random command streams over three objects, checked against the CPU
 * reference after every batch of submissions: each command's result and
 * the order in which submissions apply. */
static void
test_random_against_reference(void **state)
{
   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("sim-random"));
   struct cohmap_backend *b = sim_create(NULL, NULL, NULL);
   assert_non_null(b);

   static const size_t sizes[] = {4096, 10000, 65536 + 12};
   struct ref_mem mems[TU_ARRAY_SIZE(sizes)];
   for (size_t i = 0; i < TU_ARRAY_SIZE(mems); i++) {
      mems[i].size = sizes[i];
      mems[i].mem = mem_alloc(b, sizes[i]);
      mems[i].ref = malloc(sizes[i]);
      assert_non_null(mems[i].ref);
      tu_rng_fill(&rng, mems[i].ref, sizes[i]);
      upload_all(b, mems[i].mem, mems[i].ref, sizes[i]);
   }

   enum { ROUNDS = 40, MAX_SUBMITS = 8, MAX_CMDS = 16 };
   uint64_t expect_commands = 0, last = 0;
   for (unsigned round = 0; round < ROUNDS; round++) {
      void *payloads[MAX_SUBMITS * MAX_CMDS];
      size_t npayloads = 0;
      unsigned nsubmits = (unsigned)tu_rng_range(&rng, 1, MAX_SUBMITS);

      for (unsigned s = 0; s < nsubmits; s++) {
         struct cohmap_dev_cmd cmds[MAX_CMDS];
         size_t ncmds = tu_rng_range(&rng, 0, MAX_CMDS);
         for (size_t i = 0; i < ncmds; i++) {
            cmds[i] = random_cmd(&rng, mems, TU_ARRAY_SIZE(mems),
                                 &payloads[npayloads]);
            if (payloads[npayloads])
               npayloads++;
            ref_execute(mems, TU_ARRAY_SIZE(mems), &cmds[i]);
         }
         uint64_t seqno = submit(b, cmds, ncmds);
         /* Seqnos count up from 1, one per submission. */
         assert_int_equal(seqno, last + 1);
         last = seqno;
         expect_commands += ncmds;
      }

      wait_forever(b, last);
      assert_int_equal(ops->completed(b), last);
      for (size_t i = 0; i < npayloads; i++)
         free(payloads[i]);
      for (size_t i = 0; i < TU_ARRAY_SIZE(mems); i++) {
         char what[64];
         snprintf(what, sizeof(what), "round %u, object %zu", round, i);
         assert_true(
            device_matches(b, mems[i].mem, mems[i].ref, mems[i].size, what));
      }

      /* Between rounds, the CPU changes some bytes and uploads them. */
      struct ref_mem *m = &mems[tu_rng_below(&rng, TU_ARRAY_SIZE(mems))];
      size_t off, len;
      random_range(&rng, m->size, 3000, false, &off, &len);
      tu_rng_fill(&rng, m->ref + off, len);
      const struct cohmap_range r = {off, len};
      assert_int_equal(ops->upload(b, m->mem, &r, 1, m->ref, 0, 0), 0);
   }

   struct cohmap_backend_stats st;
   ops->get_stats(b, &st);
   assert_int_equal(st.commands, expect_commands);

   for (size_t i = 0; i < TU_ARRAY_SIZE(mems); i++) {
      ops->mem_free(b, mems[i].mem);
      free(mems[i].ref);
   }
   ops->destroy(b);
}

/* Non-commuting operations on one word, queued without waiting: only
 * in-order execution gives the reference value. */
static void
test_ordering(void **state)
{
   struct cohmap_backend *b = sim_create(NULL, NULL, NULL);
   assert_non_null(b);
   struct cohmap_dev_mem *m = mem_alloc(b, 4096);

   enum { N = 500 };
   uint32_t expect = 0;
   uint64_t seqno = 0, last_completed = 0;
   for (uint32_t i = 0; i < N; i++) {
      struct cohmap_dev_cmd cmds[] = {
         {.type = COHMAP_CMD_COMPUTE,
          .op = COHMAP_COMPUTE_ADD32,
          .dst = m,
          .src = m,
          .size = 4,
          .value = i + 1},
         {.type = COHMAP_CMD_COMPUTE,
          .op = COHMAP_COMPUTE_XOR32,
          .dst = m,
          .src = m,
          .size = 4,
          .value = i * 0x9e3779b9u},
         /* The last submission to fill a slot decides its value. */
         {.type = COHMAP_CMD_FILL,
          .dst = m,
          .dst_offset = 4 + 4 * (i % 16),
          .size = 4,
          .value = i},
      };
      expect = (expect + i + 1) ^ (i * 0x9e3779b9u);
      seqno = submit(b, cmds, TU_ARRAY_SIZE(cmds));
      assert_int_equal(seqno, i + 1);

      /* completed() never goes backwards and never passes submissions. */
      uint64_t c = ops->completed(b);
      assert_true(c >= last_completed);
      assert_true(c <= seqno);
      last_completed = c;
   }
   wait_forever(b, seqno);

   uint8_t got[68];
   assert_int_equal(ops->download(b, m, 0, sizeof(got), got), 0);
   assert_int_equal(le32(got), expect);
   for (uint32_t slot = 0; slot < 16; slot++) {
      uint32_t last_writer = slot + (N - 1 - slot) / 16 * 16;
      assert_int_equal(le32(got + 4 + 4 * slot), last_writer);
   }

   /* Waiting for a completed seqno returns at once, with any timeout. */
   assert_int_equal(ops->wait(b, 1, 0), 0);
   assert_int_equal(ops->wait(b, seqno, 0), 0);
   /* Seqno 0 is complete from the start. */
   assert_int_equal(ops->wait(b, 0, 0), 0);
   /* A seqno never submitted cannot be waited for. */
   assert_int_equal(ops->wait(b, seqno + 1, 0), -EINVAL);
   assert_int_equal(ops->wait(b, seqno + 1, UINT64_MAX), -EINVAL);
   assert_int_equal(ops->wait(b, UINT64_MAX, 1000), -EINVAL);

   ops->mem_free(b, m);
   ops->destroy(b);
}

struct submitter {
   pthread_t thread;
   struct cohmap_backend *b;
   struct cohmap_dev_mem *mem;
   unsigned index;
   uint64_t seqnos[200];
   bool ok;
};

static void *
submitter_main(void *arg)
{
   struct submitter *s = arg;
   const struct cohmap_dev_cmd add = {.type = COHMAP_CMD_COMPUTE,
                                      .op = COHMAP_COMPUTE_ADD32,
                                      .dst = s->mem,
                                      .src = s->mem,
                                      .dst_offset = 4 * s->index,
                                      .src_offset = 4 * s->index,
                                      .size = 4,
                                      .value = 1};

   s->ok = true;
   for (size_t i = 0; i < TU_ARRAY_SIZE(s->seqnos); i++) {
      if (ops->submit(s->b, &add, 1, &s->seqnos[i]) != 0) {
         s->ok = false;
         return NULL;
      }
      if (i % 7 == 0 && ops->wait(s->b, s->seqnos[i], UINT64_MAX) != 0)
         s->ok = false;
   }
   return NULL;
}

/* Submits and waits from several threads: every seqno handed out once,
 * every command executed once. */
static void
test_threads(void **state)
{
   struct cohmap_backend *b = sim_create(NULL, NULL, NULL);
   assert_non_null(b);
   struct cohmap_dev_mem *m = mem_alloc(b, 64);

   struct submitter subs[4];
   for (unsigned i = 0; i < TU_ARRAY_SIZE(subs); i++) {
      subs[i] = (struct submitter){.b = b, .mem = m, .index = i};
      assert_int_equal(
         pthread_create(&subs[i].thread, NULL, submitter_main, &subs[i]), 0);
   }
   for (unsigned i = 0; i < TU_ARRAY_SIZE(subs); i++)
      pthread_join(subs[i].thread, NULL);

   const size_t per = TU_ARRAY_SIZE(subs[0].seqnos);
   const size_t total = per * TU_ARRAY_SIZE(subs);
   bool *seen = calloc(total + 1, sizeof(bool));
   assert_non_null(seen);
   for (unsigned i = 0; i < TU_ARRAY_SIZE(subs); i++) {
      assert_true(subs[i].ok);
      for (size_t k = 0; k < per; k++) {
         uint64_t s = subs[i].seqnos[k];
         assert_true(s >= 1 && s <= total);
         assert_false(seen[s]);
         seen[s] = true;
         /* Each thread's own submissions are in its order. */
         if (k)
            assert_true(s > subs[i].seqnos[k - 1]);
      }
   }
   free(seen);

   wait_forever(b, total);
   uint8_t got[16];
   assert_int_equal(ops->download(b, m, 0, sizeof(got), got), 0);
   for (unsigned i = 0; i < TU_ARRAY_SIZE(subs); i++)
      assert_int_equal(le32(got + 4 * i), per);

   ops->mem_free(b, m);
   ops->destroy(b);
}

/* With COHMAP_SIM_EXEC_US the GPU is busy for a while per submission:
 * submit returns at once, waits time out, completed() lags, and the CPU
 * runs on meanwhile. */
static void
test_busy_gpu(void **state)
{
   enum { EXEC_MS = 300 };
   struct cohmap_backend *b = sim_create(NULL, NULL, "300000");
   assert_non_null(b);
   struct cohmap_dev_mem *m = mem_alloc(b, 4096);

   uint8_t *payload = malloc(16);
   assert_non_null(payload);
   memset(payload, 0xab, 16);
   const struct cohmap_dev_cmd cmds[] = {
      {.type = COHMAP_CMD_FILL, .dst = m, .size = 4096, .value = 0x5a5a5a5a},
      {.type = COHMAP_CMD_WRITE,
       .dst = m,
       .dst_offset = 8,
       .size = 16,
       .data = payload},
   };

   double t0 = tu_now();
   uint64_t first = submit(b, cmds, TU_ARRAY_SIZE(cmds));
   uint64_t second = submit(b, cmds, 1);
   assert_true(tu_now() - t0 < EXEC_MS / 2000.0);

   assert_int_equal(ops->completed(b), 0);
   double w0 = tu_now();
   assert_int_equal(ops->wait(b, first, 20 * 1000 * 1000), -ETIME);
   double waited = tu_now() - w0;
   assert_true(waited >= 0.019);
   assert_int_equal(ops->wait(b, first, 0), -ETIME);
   assert_int_equal(ops->completed(b), 0);

   /* The CPU runs on while the GPU works: here, it computes something and
    * reads device memory, which the submission has not touched yet. */
   uint64_t cpu_work = 0;
   for (unsigned i = 0; i < 100000; i++)
      cpu_work += i * (uint64_t)i;
   assert_true(cpu_work > 0);
   uint8_t got[32];
   assert_int_equal(ops->download(b, m, 0, sizeof(got), got), 0);
   for (size_t i = 0; i < sizeof(got); i++)
      assert_int_equal(got[i], 0);
   assert_true(ops->completed(b) < first);

   wait_forever(b, first);
   /* The payload belongs to the caller again once its submission
    * completed (ASan checks that the sim does not read it later). */
   free(payload);
   double done = tu_now() - t0;
   assert_true(done >= EXEC_MS / 1000.0 * 0.95);

   assert_int_equal(ops->download(b, m, 0, sizeof(got), got), 0);
   for (size_t i = 0; i < sizeof(got); i++)
      assert_int_equal(got[i], i >= 8 && i < 24 ? 0xab : 0x5a);

   /* The second submission pays its own execution time. */
   assert_true(ops->completed(b) < second);
   assert_int_equal(ops->wait(b, second, 1000), -ETIME);
   wait_forever(b, second);
   assert_true(tu_now() - t0 >= 2 * EXEC_MS / 1000.0 * 0.95);

   ops->mem_free(b, m);
   ops->destroy(b);
}

static void
test_transfers(void **state)
{
   struct cohmap_backend *b = sim_create(NULL, NULL, NULL);
   assert_non_null(b);
   enum { SIZE = 1000 };
   struct cohmap_dev_mem *m = mem_alloc(b, SIZE);
   uint8_t expect[SIZE] = {0}, src[3 * SIZE], got[SIZE];

   for (size_t i = 0; i < sizeof(src); i++)
      src[i] = (uint8_t)(i * 7 + 1);

   /* Ranges are offsets into the CPU copy; the biases move the source and
    * the destination independently (a sub-allocated BO at dst_bias in its
    * slab, a staging buffer that starts before the mapping...). */
   const struct cohmap_range ranges[] = {{0, 10}, {100, 1}, {500, 300}};
   assert_int_equal(ops->upload(b, m, ranges, 3, src, 1000, 50), 0);
   for (size_t i = 0; i < TU_ARRAY_SIZE(ranges); i++)
      memcpy(expect + ranges[i].offset + 50, src + ranges[i].offset + 1000,
             ranges[i].length);
   assert_true(device_matches(b, m, expect, SIZE, "positive biases"));

   const struct cohmap_range high[] = {{600, 20}, {990, 10}};
   assert_int_equal(ops->upload(b, m, high, 2, src, 1500, -600), 0);
   for (size_t i = 0; i < TU_ARRAY_SIZE(high); i++)
      memcpy(expect + high[i].offset - 600, src + high[i].offset + 1500,
             high[i].length);
   assert_true(device_matches(b, m, expect, SIZE, "negative dst bias"));

   /* A negative source bias: the source pointer points past the bytes. */
   const struct cohmap_range back[] = {{2000, 16}};
   assert_int_equal(ops->upload(b, m, back, 1, src + 1000, -1000, -1100), 0);
   memcpy(expect + 900, src + 1000 + 1000, 16);
   assert_true(device_matches(b, m, expect, SIZE, "negative src bias"));

   /* A range outside the object: refused, and nothing copied, not even
    * the ranges before it. */
   const struct cohmap_range bad[][2] = {
      {{0, 8}, {995, 6}},
      {{0, 8}, {5, 1}}, /* with dst_bias -6 below */
      {{0, 8}, {SIZE_MAX - 2, 8}},
   };
   const ptrdiff_t bad_bias[] = {0, -6, 0};
   uint8_t ones[2 * SIZE];
   memset(ones, 0xff, sizeof(ones));
   for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
      assert_int_equal(ops->upload(b, m, bad[i], 2, ones, 0, bad_bias[i]),
                       -EINVAL);
   }
   assert_true(device_matches(b, m, expect, SIZE, "after refused uploads"));

   /* Downloads of sub-ranges. */
   assert_int_equal(ops->download(b, m, 900, 16, got), 0);
   assert_memory_equal(got, expect + 900, 16);
   assert_int_equal(ops->download(b, m, SIZE - 1, 1, got), 0);
   assert_int_equal(got[0], expect[SIZE - 1]);
   assert_int_equal(ops->download(b, m, SIZE - 1, 2, got), -EINVAL);
   assert_int_equal(ops->download(b, m, SIZE_MAX, 2, got), -EINVAL);
   assert_int_equal(ops->download(b, m, 2, SIZE_MAX, got), -EINVAL);

   /* An empty upload is a successful no-op. */
   assert_int_equal(ops->upload(b, m, NULL, 0, NULL, 0, 0), 0);

   struct cohmap_backend_stats st;
   ops->get_stats(b, &st);
   /* 4 good uploads (the empty one counts as a call), refused ones not;
    * 4 downloads by device_matches plus 2 successful ones here. */
   assert_int_equal(st.uploads, 4);
   assert_int_equal(st.bytes_uploaded, 10 + 1 + 300 + 20 + 10 + 16);
   assert_int_equal(st.downloads, 4 + 2);
   assert_int_equal(st.bytes_downloaded, 4 * SIZE + 16 + 1);
   assert_int_equal(st.commands, 0);

   ops->mem_free(b, m);
   ops->destroy(b);
}

/* Device memory is not the caller's memory: a CPU store after an upload
 * reaches no command until it is uploaded again. */
static void
test_not_aliased(void **state)
{
   struct cohmap_backend *b = sim_create(NULL, NULL, NULL);
   assert_non_null(b);
   enum { SIZE = 8192 };
   struct cohmap_dev_mem *m = mem_alloc(b, SIZE);
   struct cohmap_dev_mem *out = mem_alloc(b, 64);
   uint8_t *cpu = malloc(SIZE);
   assert_non_null(cpu);

   memset(cpu, 0x11, SIZE);
   upload_all(b, m, cpu, SIZE);
   uint64_t sum_old = cohmap_checksum(cpu, SIZE);

   /* The store the winsys "forgot" to upload. */
   cpu[4000] = 0x22;
   uint64_t sum_new = cohmap_checksum(cpu, SIZE);
   assert_true(sum_old != sum_new);

   const struct cohmap_dev_cmd cmds[] = {
      {.type = COHMAP_CMD_CHECKSUM, .dst = out, .src = m, .size = SIZE},
      {.type = COHMAP_CMD_COPY,
       .dst = out,
       .dst_offset = 8,
       .src = m,
       .src_offset = 4000,
       .size = 1},
   };
   wait_forever(b, submit(b, cmds, 2));
   uint8_t got[9];
   assert_int_equal(ops->download(b, out, 0, sizeof(got), got), 0);
   assert_true(le64(got) == sum_old);
   assert_int_equal(got[8], 0x11);

   /* Nor does a command's write reach the CPU copy. */
   const struct cohmap_dev_cmd fill = {
      .type = COHMAP_CMD_FILL, .dst = m, .size = SIZE, .value = 0};
   wait_forever(b, submit(b, &fill, 1));
   assert_int_equal(cpu[0], 0x11);
   assert_int_equal(cpu[4000], 0x22);

   /* Uploading the one byte makes it visible. */
   upload_all(b, m, cpu, SIZE);
   wait_forever(b, submit(b, cmds, 2));
   assert_int_equal(ops->download(b, out, 0, sizeof(got), got), 0);
   assert_true(le64(got) == sum_new);
   assert_int_equal(got[8], 0x22);

   free(cpu);
   ops->mem_free(b, out);
   ops->mem_free(b, m);
   ops->destroy(b);
}

struct uploader {
   struct cohmap_backend *b;
   struct cohmap_dev_mem *mem;
   size_t size;
   atomic_bool stop;
   uint64_t uploads;
   bool ok;
};

/* Uploads the whole object, uniformly one byte value per call, in four
 * ranges per call. */
static void *
uploader_main(void *arg)
{
   struct uploader *u = arg;
   uint8_t *buf = malloc(u->size);
   const size_t q = u->size / 4;
   const struct cohmap_range ranges[] = {
      {0, q}, {q, q}, {2 * q, q}, {3 * q, u->size - 3 * q}};

   u->ok = buf != NULL;
   for (uint8_t v = 1; u->ok && !atomic_load(&u->stop); v++) {
      memset(buf, v, u->size);
      if (ops->upload(u->b, u->mem, ranges, 4, buf, 0, 0) != 0)
         u->ok = false;
      u->uploads++;
   }
   free(buf);
   return NULL;
}

/* Rule 2 of device.h: a command sees each upload call entirely or not at
 * all.  Checksums taken while another thread keeps uploading uniform
 * contents must each be the checksum of a uniform buffer. */
static void
test_upload_atomic(void **state)
{
   struct cohmap_backend *b = sim_create(NULL, NULL, NULL);
   assert_non_null(b);
   enum { SIZE = 64 * 1024, SUMS = 300 };
   struct cohmap_dev_mem *m = mem_alloc(b, SIZE);
   struct cohmap_dev_mem *out = mem_alloc(b, SUMS * 8);

   uint64_t uniform[256];
   uint8_t *tmp = malloc(SIZE);
   assert_non_null(tmp);
   for (unsigned v = 0; v < 256; v++) {
      memset(tmp, (int)v, SIZE);
      uniform[v] = cohmap_checksum(tmp, SIZE);
   }

   struct uploader u = {.b = b, .mem = m, .size = SIZE};
   atomic_init(&u.stop, false);
   pthread_t thread;
   assert_int_equal(pthread_create(&thread, NULL, uploader_main, &u), 0);

   uint64_t last = 0;
   for (unsigned i = 0; i < SUMS; i++) {
      const struct cohmap_dev_cmd sum = {.type = COHMAP_CMD_CHECKSUM,
                                         .dst = out,
                                         .dst_offset = 8 * i,
                                         .src = m,
                                         .size = SIZE};
      last = submit(b, &sum, 1);
      if (i % 16 == 0)
         wait_forever(b, last);
   }
   wait_forever(b, last);
   atomic_store(&u.stop, true);
   pthread_join(thread, NULL);
   assert_true(u.ok);

   assert_int_equal(ops->download(b, out, 0, SUMS * 8, tmp), 0);
   unsigned distinct = 0;
   uint64_t prev = 0;
   for (unsigned i = 0; i < SUMS; i++) {
      uint64_t s = le64(tmp + 8 * i);
      bool found = false;
      for (unsigned v = 0; v < 256 && !found; v++)
         found = s == uniform[v];
      if (!found)
         fail_msg("checksum %u saw a half-applied upload", i);
      distinct += i == 0 || s != prev;
      prev = s;
   }
   printf("# %" PRIu64 " uploads, %u checksum changes\n", u.uploads,
          distinct);

   free(tmp);
   ops->mem_free(b, out);
   ops->mem_free(b, m);
   ops->destroy(b);
}

static void
test_knobs(void **state)
{
   static const char *const bad[] = {
      "abc",      "-1",  "1x",
      "0x10",     " 5",  "5 ",
      "+5",       "1.5", "99999999999999999999999",
      "10000001",
   };

   for (size_t k = 0; k < TU_ARRAY_SIZE(knob_names); k++) {
      for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
         struct cohmap_backend *b = (struct cohmap_backend *)&b;
         setenv(knob_names[k], bad[i], 1);
         int ret = ops->create(&b);
         unsetenv(knob_names[k]);
         if (ret != -EINVAL)
            fail_msg("%s='%s': got %d", knob_names[k], bad[i], ret);
         assert_null(b);
         /* The message names the variable and the accepted range. */
         assert_non_null(strstr(cohmap_error_message(), knob_names[k]));
         assert_non_null(strstr(cohmap_error_message(), "[0, "));
      }
   }
   struct cohmap_backend *b = NULL;
   setenv("COHMAP_SIM_BANDWIDTH_MBPS", "1000001", 1);
   assert_int_equal(ops->create(&b), -EINVAL);
   unsetenv("COHMAP_SIM_BANDWIDTH_MBPS");

   /* Empty means unset; bounds are accepted. */
   b = sim_create("", "", "");
   assert_non_null(b);
   ops->destroy(b);
   b = sim_create("0", "1000000", "0");
   assert_non_null(b);
   ops->destroy(b);
   b = sim_create("10000000", "0", "10000000");
   assert_non_null(b);
   ops->destroy(b);
}

/* COHMAP_SIM_LATENCY_US and COHMAP_SIM_BANDWIDTH_MBPS slow transfers
 * down by at least what they say. */
static void
test_link_model(void **state)
{
   uint8_t small[64] = {0};

   struct cohmap_backend *b = sim_create("20000", NULL, NULL);
   assert_non_null(b);
   struct cohmap_dev_mem *m = mem_alloc(b, 4096);
   double t0 = tu_now();
   upload_all(b, m, small, sizeof(small));
   assert_int_equal(ops->download(b, m, 0, sizeof(small), small), 0);
   assert_true(tu_now() - t0 >= 2 * 0.020);
   ops->mem_free(b, m);
   ops->destroy(b);

   /* 1 MiB at 10 MB/s: 105 ms. */
   b = sim_create(NULL, "10", NULL);
   assert_non_null(b);
   m = mem_alloc(b, TU_MIB);
   uint8_t *big = calloc(1, TU_MIB);
   assert_non_null(big);
   t0 = tu_now();
   upload_all(b, m, big, TU_MIB);
   assert_true(tu_now() - t0 >= 0.104);
   free(big);
   ops->mem_free(b, m);
   ops->destroy(b);
}

/* A submission the winsys should never have passed on is refused whole,
 * without consuming a seqno or touching memory. */
static void
test_bad_commands(void **state)
{
   struct cohmap_backend *b = sim_create(NULL, NULL, NULL);
   assert_non_null(b);
   struct cohmap_dev_mem *m = mem_alloc(b, 64);
   const struct cohmap_dev_cmd good = {
      .type = COHMAP_CMD_FILL, .dst = m, .size = 64, .value = 0x01010101};
   const struct cohmap_dev_cmd bad[] = {
      {.type = COHMAP_CMD_FILL, .dst = m, .dst_offset = 60, .size = 8},
      {.type = COHMAP_CMD_FILL, .dst = m, .dst_offset = 2, .size = 4},
      {.type = COHMAP_CMD_COPY,
       .dst = m,
       .src = m,
       .src_offset = 1,
       .size = 64},
      {.type = COHMAP_CMD_COPY, .dst = m, .src = NULL, .size = 4},
      {.type = COHMAP_CMD_WRITE, .dst = NULL, .size = 1, .data = "x"},
      {.type = COHMAP_CMD_WRITE, .dst = m, .size = 1, .data = NULL},
      {.type = COHMAP_CMD_CHECKSUM,
       .dst = m,
       .dst_offset = 57,
       .src = m,
       .size = 4},
      {.type = COHMAP_CMD_COMPUTE, .op = 7, .dst = m, .src = m, .size = 4},
      {.type = COHMAP_CMD_COMPUTE,
       .dst = m,
       .src = m,
       .dst_offset = 4,
       .size = 8},
      {.type = COHMAP_CMD_COMPUTE,
       .dst = m,
       .src = m,
       .src_offset = 2,
       .dst_offset = 8,
       .size = 4},
      {.type = (enum cohmap_cmd_type)99, .dst = m},
   };

   for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
      const struct cohmap_dev_cmd pair[] = {good, bad[i]};
      uint64_t seqno = 7;
      if (ops->submit(b, pair, 2, &seqno) != -EINVAL)
         fail_msg("bad command %zu accepted", i);
      assert_int_equal(seqno, 0);
   }
   uint64_t s = submit(b, &good, 0);
   assert_int_equal(s, 1);
   wait_forever(b, s);

   uint8_t zero[64] = {0};
   assert_true(device_matches(b, m, zero, 64, "after refused commands"));
   struct cohmap_backend_stats st;
   ops->get_stats(b, &st);
   assert_int_equal(st.commands, 0);

   ops->mem_free(b, m);
   ops->destroy(b);
}

/* destroy() finishes queued work and frees memory objects the caller
 * leaked (with a warning); ASan's leak check sees the rest. */
static void
test_destroy_busy(void **state)
{
   struct cohmap_backend *b = sim_create(NULL, NULL, "20000");
   assert_non_null(b);
   struct cohmap_dev_mem *m = mem_alloc(b, 4096);
   mem_alloc(b, 100);
   mem_alloc(b, 3 * 4096);

   const struct cohmap_dev_cmd add = {.type = COHMAP_CMD_COMPUTE,
                                      .op = COHMAP_COMPUTE_ADD32,
                                      .dst = m,
                                      .src = m,
                                      .size = 4096,
                                      .value = 3};
   for (unsigned i = 0; i < 5; i++)
      submit(b, &add, 1);
   assert_true(ops->completed(b) < 5);

   double t0 = tu_now();
   ops->destroy(b);
   /* Five submissions of 20 ms each, barely started. */
   assert_true(tu_now() - t0 >= 0.06);
}

int
main(void)
{
   const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lookup),
      cmocka_unit_test(test_mem_alloc),
      cmocka_unit_test(test_each_command),
      cmocka_unit_test(test_random_against_reference),
      cmocka_unit_test(test_ordering),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_busy_gpu),
      cmocka_unit_test(test_transfers),
      cmocka_unit_test(test_not_aliased),
      cmocka_unit_test(test_upload_atomic),
      cmocka_unit_test(test_knobs),
      cmocka_unit_test(test_link_model),
      cmocka_unit_test(test_bad_commands),
      cmocka_unit_test(test_destroy_busy),
   };
   return cmocka_run_group_tests(tests, NULL, NULL);
}
