/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * winsys-model: random steps against a byte-exact model of what the CPU
 * and the device must each see.
 *
 * Every BO of the model (coherent with and without GPU_WRITE, dedicated
 * and slab-sized, and non-coherent) has three arrays:
 *
 *  - cpu:  what its mapping must read;
 *  - dev:  the device copy, as of the last *observed* submission;
 *  - snap: the last synchronized state (coherent BOs): what the winsys
 *          last uploaded or merged.
 *
 * The rules are those of include/cohmap/winsys.h:
 *
 *  1. At submit (and cohmap_device_flush_all()), every byte of a listed
 *     coherent BO with cpu != snap is uploaded: dev := cpu, snap := cpu.
 *     Bytes the CPU did not change keep the device's value.
 *  2. Commands apply to dev in submission order.  The model applies them
 *     lazily, when the submission is observed complete (a fence wait or
 *     poll returning 0, cohmap_device_wait_idle()), which also observes
 *     every earlier submission: the queue is in order.
 *  3. Then, for each command's destination range in a live coherent
 *     GPU_WRITE BO, the three-way merge: a byte with dev != snap becomes
 *     dev in cpu and snap if cpu == snap, else the CPU's value stays.
 *  4. Non-coherent BOs: cohmap_bo_flush*() is dev := cpu for its bytes,
 *     cohmap_bo_invalidate() cpu := dev.
 *
 * Applying commands lazily and uploads eagerly is exact because of the
 * test's discipline, which keeps out the races the contract leaves
 * undefined: the CPU never writes a byte of a coherent BO that an
 * unobserved submission reads or writes (it waits first, or picks
 * another step), and flushes and invalidates stay clear of the bytes
 * unobserved submissions touch.  So every upload touches bytes no
 * unobserved command touches, and commutes with them.
 *
 * One step breaks the discipline on purpose, in the one way the contract
 * does define: a "race" stores to bytes of a coherent GPU_WRITE BO that
 * exactly one unobserved submission writes, with values that differ from
 * both cpu and snap.  The CPU's values must win.  Until that submission,
 * and every unobserved one reading those bytes, is observed, no
 * submission and no flush_all is made (an upload then would race with the
 * GPU on the device copy, which is undefined).
 *
 * After every observation, each mapping must equal cpu, except bytes
 * that unobserved submissions write (the winsys may have merged them
 * already: it retires whatever completed, also at submit).  Every
 * VERIFY_EVERY steps, after cohmap_device_wait_idle(), a submission
 * checksums every BO on the device and compares with the checksum of
 * dev; a difference is then located with a copy to a non-coherent BO.
 *
 * Default: 2,000 steps per method; --slow: 12,000.  TEST_SEED replays.
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

#define MIN_LIVE 6
#define MAX_LIVE 16
/* Unobserved submissions: with a fence, and in all. */
#define MAX_FENCES 3
#define MAX_UNOBSERVED 5
#define MAX_CMDS 6
/* Each command lists at most two BOs, plus extras, plus duplicates. */
#define MAX_LIST (2 * MAX_CMDS + 4)
#define MAX_ENTRIES (2 * MAX_LIST)
#define VERIFY_EVERY 128
#define TRACE_LINES 24
#define HISTORY 32
#define RESULTS_SIZE (32 * TU_KIB)
#define MAX_WRITE_CMD 65536

enum kind {
   KIND_COHERENT_RW_DEDICATED,
   KIND_COHERENT_RW_SLAB,
   KIND_COHERENT_RO_DEDICATED,
   KIND_COHERENT_RO_SLAB,
   KIND_PLAIN_RW,
   KIND_PLAIN_RO,
   KIND_COUNT,
};

static const char *const kind_names[KIND_COUNT] = {
   "coherent+gpu-write dedicated",
   "coherent+gpu-write slab",
   "coherent dedicated",
   "coherent slab",
   "non-coherent+gpu-write",
   "non-coherent",
};

struct mbo {
   unsigned id;
   enum kind kind;
   struct cohmap_bo *bo; /* NULL once destroyed */
   uint8_t *map;
   size_t size;
   bool coherent, gpu_write, internal;
   uint8_t *cpu, *dev, *snap;
   /* One for the caller until destroyed, one per unobserved submission
    * listing it: commands of those still read and write dev. */
   unsigned refs;
};

enum mcmd_type {
   MCMD_COPY,
   MCMD_FILL,
   MCMD_WRITE,
   MCMD_CHECKSUM,
   MCMD_ADD32,
   MCMD_XOR32,
   MCMD_COUNT,
};

static const char *const mcmd_names[MCMD_COUNT] = {
   "copy", "fill", "write", "checksum", "add32", "xor32",
};

struct mcmd {
   enum mcmd_type type;
   struct mbo *dst, *src;
   size_t dst_offset, src_offset, size;
   uint32_t value;
   uint8_t *data; /* MCMD_WRITE */
};

struct msub {
   uint64_t number;
   struct cohmap_fence *fence; /* NULL: submitted without one */
   struct mcmd cmds[MAX_CMDS];
   unsigned cmd_count;
   struct mbo *list[MAX_LIST]; /* distinct */
   uint32_t access[MAX_LIST];
   unsigned list_count;
};

/* A submission as failure reports show it. */
struct history {
   uint64_t number;
   unsigned count;
   struct {
      enum mcmd_type type;
      unsigned dst, src; /* BO ids; src ~0u for none */
      size_t dst_offset, src_offset, size;
   } cmds[MAX_CMDS];
};

struct model {
   enum cohmap_method method;
   const char *mname;
   uint64_t seed;
   unsigned step;
   struct tu_rng rng;
   struct cohmap_device *dev;

   struct mbo *live[MAX_LIVE];
   unsigned live_count;
   struct mbo *results; /* internal: verification checksums */
   unsigned next_id;

   struct msub *queue[MAX_UNOBSERVED]; /* unobserved, oldest first */
   unsigned queued;
   uint64_t submitted;  /* number of the last submission */
   uint64_t observed;   /* every submission up to this one is observed */
   uint64_t race_until; /* no upload until this one is observed */
   /* Bytes raced over, with what they held before: stored back later. */
   struct {
      unsigned id;
      size_t offset, length;
      uint8_t before[64];
   } raced[8];
   unsigned nraced;
   struct cohmap_fence *old_fence; /* observed; for a re-wait */

   char trace[TRACE_LINES][160];
   unsigned trace_next;

   /* The last HISTORY submissions, for failure reports. */
   struct history history[HISTORY];
   unsigned history_next;

   struct {
      unsigned writes, submits, commands, waits, polls_busy, waits_timed_out,
         idles, flush_alls, flushes, invalidates, races, neighbours,
         creates, destroys,
         destroys_in_flight, verifies;
   } n;
};

/* --- helpers ----------------------------------------------------------- */

static void
trace(struct model *m, const char *fmt, ...)
{
   va_list ap;
   char *line = m->trace[m->trace_next++ % TRACE_LINES];
   int len = snprintf(line, sizeof(m->trace[0]), "step %u: ", m->step);

   va_start(ap, fmt);
   vsnprintf(line + len, sizeof(m->trace[0]) - (size_t)len, fmt, ap);
   va_end(ap);
}

static void
print_trace(const struct model *m)
{
   unsigned n = m->trace_next < TRACE_LINES ? m->trace_next : TRACE_LINES;
   fprintf(stderr, "# last %u steps:\n", n);
   for (unsigned i = m->trace_next - n; i < m->trace_next; i++)
      fprintf(stderr, "#   %s\n", m->trace[i % TRACE_LINES]);
}

/* Prints a failure with everything needed to replay it; returns false. */
static bool
failure(struct model *m, const char *fmt, ...)
{
   va_list ap;

   fprintf(stderr, "FAIL %s step %u (TEST_SEED=%" PRIu64 "): ", m->mname,
           m->step, tu_seed());
   va_start(ap, fmt);
   vfprintf(stderr, fmt, ap);
   va_end(ap);
   fprintf(stderr, "\n");
   print_trace(m);
   return false;
}

static bool
api(struct model *m, int ret, const char *what)
{
   if (ret == 0)
      return true;
   return failure(m, "%s: %d (%s): %s", what, ret, strerror(-ret),
                  cohmap_error_message());
}

/* FNV-1a, written out here so that the test does not only check the
 * library against itself. */
static uint64_t
fnv1a(const uint8_t *p, size_t n)
{
   uint64_t h = 0xcbf29ce484222325ull;
   for (size_t i = 0; i < n; i++) {
      h ^= p[i];
      h *= 0x100000001b3ull;
   }
   return h;
}

static uint32_t
load32(const uint8_t *p)
{
   return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
          (uint32_t)p[3] << 24;
}

static void
store32(uint8_t *p, uint32_t v)
{
   for (unsigned i = 0; i < 4; i++)
      p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
load64(const uint8_t *p)
{
   return (uint64_t)load32(p) | (uint64_t)load32(p + 4) << 32;
}

static bool
overlap(size_t a, size_t an, size_t b, size_t bn)
{
   return an && bn && a < b + bn && b < a + an;
}

/* Log-uniform in [lo, hi]: small sizes are as common as big ones. */
static size_t
log_size(struct tu_rng *rng, size_t lo, size_t hi)
{
   unsigned lo_bits = 0, hi_bits = 0;
   while (((size_t)2 << lo_bits) <= lo)
      lo_bits++;
   while (((size_t)2 << hi_bits) <= hi)
      hi_bits++;
   unsigned bits = (unsigned)tu_rng_range(rng, lo_bits, hi_bits);
   size_t a = (size_t)1 << bits, b = ((size_t)2 << bits) - 1;
   if (a < lo)
      a = lo;
   if (b > hi)
      b = hi;
   return (size_t)tu_rng_range(rng, a, b);
}

/* A length in [1, max] (max >= 1), mostly short. */
static size_t
run_length(struct tu_rng *rng, size_t max)
{
   unsigned r = (unsigned)tu_rng_below(rng, 100);
   size_t cap = r < 40 ? 64 : r < 80 ? 4096 : max;
   if (cap > max)
      cap = max;
   return (size_t)tu_rng_range(rng, 1, cap);
}

static struct mbo *
random_live(struct model *m, bool (*want)(const struct mbo *))
{
   struct mbo *pick[MAX_LIVE];
   unsigned n = 0;
   for (unsigned i = 0; i < m->live_count; i++) {
      if (!want || want(m->live[i]))
         pick[n++] = m->live[i];
   }
   return n ? pick[tu_rng_below(&m->rng, n)] : NULL;
}

static bool
is_gpu_writable(const struct mbo *b)
{
   return b->gpu_write;
}

static bool
is_coherent(const struct mbo *b)
{
   return b->coherent;
}

static bool
is_plain(const struct mbo *b)
{
   return !b->coherent;
}

/* --- the model's BOs ---------------------------------------------------- */

static void
mbo_free(struct mbo *b)
{
   free(b->cpu);
   free(b->dev);
   free(b->snap);
   free(b);
}

static void
mbo_unref(struct mbo *b)
{
   if (--b->refs == 0)
      mbo_free(b);
}

static struct mbo *
mbo_create(struct model *m, enum kind kind, size_t size, bool internal)
{
   static const uint32_t kind_flags[KIND_COUNT] = {
      COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE,
      COHMAP_BO_COHERENT | COHMAP_BO_GPU_WRITE,
      COHMAP_BO_COHERENT,
      COHMAP_BO_COHERENT,
      COHMAP_BO_GPU_WRITE,
      0,
   };
   uint32_t flags = kind_flags[kind];

   if (!internal) {
      if (tu_rng_percent(&m->rng, 30))
         flags |= COHMAP_BO_PERSISTENT;
      if (tu_rng_percent(&m->rng, 30))
         flags |= COHMAP_BO_CPU_CACHED;
      /* A separate slab class for the slab kinds. */
      if (tu_rng_percent(&m->rng, 25))
         flags |= COHMAP_BO_CPU_STORES_ONLY;
   }

   struct mbo *b = calloc(1, sizeof(*b));
   if (!b) {
      failure(m, "out of memory");
      return NULL;
   }
   b->id = m->next_id++;
   b->kind = kind;
   b->size = size;
   b->coherent = (flags & COHMAP_BO_COHERENT) != 0;
   b->gpu_write = (flags & COHMAP_BO_GPU_WRITE) != 0;
   b->internal = internal;
   b->cpu = calloc(1, size);
   b->dev = calloc(1, size);
   b->snap = calloc(1, size);
   b->refs = 1;
   if (!b->cpu || !b->dev || !b->snap) {
      mbo_free(b);
      failure(m, "out of memory");
      return NULL;
   }

   int ret = cohmap_bo_create(m->dev, size, flags, &b->bo);
   if (ret) {
      failure(m, "cohmap_bo_create(%zu, 0x%x): %d: %s", size, flags, ret,
              cohmap_error_message());
      mbo_free(b);
      return NULL;
   }
   b->map = cohmap_bo_map(b->bo);
   if (!b->map || cohmap_bo_size(b->bo) != size ||
       cohmap_bo_flags(b->bo) != flags) {
      failure(m, "new BO #%u: map %p, size %zu (want %zu), flags 0x%x "
              "(want 0x%x)", b->id, (void *)b->map, cohmap_bo_size(b->bo),
              size, cohmap_bo_flags(b->bo), flags);
      cohmap_bo_destroy(b->bo);
      mbo_free(b);
      return NULL;
   }
   for (size_t i = 0; i < size; i++) {
      if (b->map[i]) {
         failure(m, "new BO #%u (%s, %zu bytes) is not zero at offset %zu "
                 "(0x%02x)", b->id, kind_names[kind], size, i, b->map[i]);
         cohmap_bo_destroy(b->bo);
         mbo_free(b);
         return NULL;
      }
   }
   trace(m, "create BO #%u: %s, %zu bytes, flags 0x%x%s", b->id,
         kind_names[kind], size, flags, internal ? " (results)" : "");
   return b;
}

static size_t
random_size(struct model *m, enum kind kind)
{
   struct tu_rng *rng = &m->rng;

   switch (kind) {
   case KIND_COHERENT_RW_DEDICATED:
   case KIND_COHERENT_RO_DEDICATED:
      /* At and above the 32 KiB slab threshold, page multiples or not. */
      if (tu_rng_percent(rng, 20))
         return 32 * TU_KIB;
      if (tu_rng_percent(rng, 30))
         return tu_rng_range(rng, 8, 40) * tu_page_size();
      return tu_rng_range(rng, 32 * TU_KIB, 160 * TU_KIB);
   case KIND_COHERENT_RW_SLAB:
   case KIND_COHERENT_RO_SLAB:
      return log_size(rng, 1, 32 * TU_KIB - 1);
   default:
      return log_size(rng, 1, 128 * TU_KIB);
   }
}

static bool
add_live(struct model *m, enum kind kind)
{
   struct mbo *b = mbo_create(m, kind, random_size(m, kind), false);
   if (!b)
      return false;
   m->live[m->live_count++] = b;
   m->n.creates++;
   return true;
}

/* --- observation -------------------------------------------------------- */

static void
apply_cmd(const struct mcmd *c)
{
   uint8_t *d = c->dst->dev + c->dst_offset;

   switch (c->type) {
   case MCMD_COPY:
      memmove(d, c->src->dev + c->src_offset, c->size);
      break;
   case MCMD_FILL:
      for (size_t i = 0; i < c->size; i += 4)
         store32(d + i, c->value);
      break;
   case MCMD_WRITE:
      memcpy(d, c->data, c->size);
      break;
   case MCMD_CHECKSUM: {
      uint64_t h = fnv1a(c->src->dev + c->src_offset, c->size);
      store32(d, (uint32_t)h);
      store32(d + 4, (uint32_t)(h >> 32));
      break;
   }
   case MCMD_ADD32:
   case MCMD_XOR32:
      for (size_t i = 0; i < c->size; i += 4) {
         uint32_t v = load32(c->src->dev + c->src_offset + i);
         v = c->type == MCMD_ADD32 ? v + c->value : v ^ c->value;
         store32(d + i, v);
      }
      break;
   case MCMD_COUNT:
      break;
   }
}

static size_t
cmd_dst_size(const struct mcmd *c)
{
   return c->type == MCMD_CHECKSUM ? 8 : c->size;
}

/* Rule 3, byte by byte.  On a conflict the CPU's byte stays and the
 * device's value becomes the last synchronized state: the CPU's byte,
 * whatever it is by then, differs from what the device holds and must be
 * uploaded by the next submission (even if the CPU stores the byte's
 * pre-conflict value again, which an old snapshot would take for "not
 * changed"). */
static void
merge_range(struct mbo *b, size_t off, size_t n)
{
   for (size_t i = off; i < off + n; i++) {
      if (b->dev[i] == b->snap[i])
         continue;
      if (b->cpu[i] == b->snap[i])
         b->cpu[i] = b->dev[i];
      b->snap[i] = b->dev[i];
   }
}

/* Rule 1 for one coherent BO. */
static void
upload(struct mbo *b)
{
   for (size_t i = 0; i < b->size; i++) {
      if (b->cpu[i] != b->snap[i]) {
         b->dev[i] = b->cpu[i];
         b->snap[i] = b->cpu[i];
      }
   }
}

static void
sub_free(struct msub *s)
{
   for (unsigned i = 0; i < s->cmd_count; i++)
      free(s->cmds[i].data);
   free(s);
}

/* Observes every queued submission up to number, oldest first. */
static void
observe_upto(struct model *m, uint64_t number)
{
   while (m->queued && m->queue[0]->number <= number) {
      struct msub *s = m->queue[0];
      memmove(&m->queue[0], &m->queue[1],
              (m->queued - 1) * sizeof(m->queue[0]));
      m->queued--;

      for (unsigned i = 0; i < s->cmd_count; i++)
         apply_cmd(&s->cmds[i]);
      for (unsigned i = 0; i < s->cmd_count; i++) {
         struct mcmd *c = &s->cmds[i];
         /* Writes to destroyed BOs are dropped; others wait for an
          * invalidate. */
         if (c->dst->bo && c->dst->coherent)
            merge_range(c->dst, c->dst_offset, cmd_dst_size(c));
      }
      for (unsigned i = 0; i < s->list_count; i++)
         mbo_unref(s->list[i]);

      if (s->fence) {
         /* Now and then keep one for a later re-wait, which must
          * succeed at once. */
         if (!m->old_fence && tu_rng_percent(&m->rng, 20)) {
            m->old_fence = s->fence;
         } else {
            cohmap_fence_destroy(s->fence);
         }
      }
      sub_free(s);
   }
   if (number > m->observed)
      m->observed = number;
}

/* May byte off of b still be written by an unobserved submission? */
static bool
unobserved_write(const struct model *m, const struct mbo *b, size_t off)
{
   for (unsigned q = 0; q < m->queued; q++) {
      const struct msub *s = m->queue[q];
      for (unsigned i = 0; i < s->cmd_count; i++) {
         const struct mcmd *c = &s->cmds[i];
         if (c->dst == b && off >= c->dst_offset &&
             off < c->dst_offset + cmd_dst_size(c))
            return true;
      }
   }
   return false;
}

/* The submissions that read (reads) or write [off, off + n) of b: the
 * highest number, or 0. */
static uint64_t
unobserved_touch(const struct model *m, const struct mbo *b, size_t off,
                 size_t n, bool reads, unsigned *writers)
{
   uint64_t last = 0;
   if (writers)
      *writers = 0;
   for (unsigned q = 0; q < m->queued; q++) {
      const struct msub *s = m->queue[q];
      bool writes = false, touches = false;
      for (unsigned i = 0; i < s->cmd_count; i++) {
         const struct mcmd *c = &s->cmds[i];
         if (c->dst == b &&
             overlap(off, n, c->dst_offset, cmd_dst_size(c)))
            writes = touches = true;
         if (reads && c->src == b &&
             overlap(off, n, c->src_offset, c->size))
            touches = true;
      }
      if (touches)
         last = s->number;
      if (writes && writers)
         (*writers)++;
   }
   return last;
}

/* For a failure report: the submissions that touched byte off of b, and
 * what the device holds there now (read back through a copy). */
static void
explain_byte(struct model *m, struct mbo *b, size_t off)
{
   for (unsigned k = 0; k < HISTORY && k < m->history_next; k++) {
      const struct history *h =
         &m->history[(m->history_next - 1 - k) % HISTORY];
      for (unsigned i = 0; i < h->count; i++) {
         size_t dn = h->cmds[i].type == MCMD_CHECKSUM ? 8 : h->cmds[i].size;
         bool dst = h->cmds[i].dst == b->id && off >= h->cmds[i].dst_offset &&
                    off < h->cmds[i].dst_offset + dn;
         bool src = h->cmds[i].src == b->id &&
                    off >= h->cmds[i].src_offset &&
                    off < h->cmds[i].src_offset + h->cmds[i].size;
         if (!dst && !src)
            continue;
         fprintf(stderr, "# submission %" PRIu64 "%s, command %u: %s #%u "
                 "[%zu, +%zu) from #%d [%zu, +%zu): %s the byte\n",
                 h->number, h->number > m->observed ? " (unobserved)" : "",
                 i, mcmd_names[h->cmds[i].type], h->cmds[i].dst,
                 h->cmds[i].dst_offset, dn, (int)h->cmds[i].src,
                 h->cmds[i].src_offset, h->cmds[i].size,
                 dst ? "writes" : "reads");
      }
   }

   struct cohmap_bo *staging = NULL;
   struct cohmap_submit *sub = NULL;
   if (!b->bo || cohmap_bo_create(m->dev, 1, COHMAP_BO_GPU_WRITE, &staging) ||
       cohmap_submit_begin(m->dev, &sub)) {
      cohmap_bo_destroy(staging);
      return;
   }
   /* Reading b uploads its CPU bytes first: that is the device's value
    * only where the CPU did not change the byte. */
   cohmap_submit_add_bo(sub, b->bo, COHMAP_ACCESS_READ);
   cohmap_submit_add_bo(sub, staging, COHMAP_ACCESS_WRITE);
   cohmap_cmd_copy(sub, staging, 0, b->bo, off, 1);
   if (ws_submit_wait(sub) == 0 && cohmap_bo_invalidate(staging, 0, 1) == 0)
      fprintf(stderr, "# the device now holds 0x%02x at that offset (after "
              "an upload of the mapping's changes)\n",
              *(const uint8_t *)cohmap_bo_map(staging));
   cohmap_bo_destroy(staging);
}

static bool
check_one(struct model *m, struct mbo *b, const char *when)
{
   if (memcmp(b->map, b->cpu, b->size) == 0)
      return true;
   for (size_t i = 0; i < b->size; i++) {
      if (b->map[i] == b->cpu[i])
         continue;
      /* The winsys merges whatever completed, also before it is
       * observed: such bytes may already show the GPU's value. */
      if (b->coherent && b->gpu_write && unobserved_write(m, b, i))
         continue;
      explain_byte(m, b, i);
      return failure(m, "%s: BO #%u (%s, %zu bytes), offset %zu: the "
                     "mapping reads 0x%02x, the model expects 0x%02x "
                     "(device copy 0x%02x, last synchronized 0x%02x)",
                     when, b->id,
                     b->internal ? "verification results"
                                 : kind_names[b->kind],
                     b->size, i,
                     b->map[i], b->cpu[i], b->dev[i], b->snap[i]);
   }
   return true;
}

static bool
check_mappings(struct model *m, const char *when)
{
   for (unsigned i = 0; i < m->live_count; i++) {
      if (!check_one(m, m->live[i], when))
         return false;
   }
   return check_one(m, m->results, when);
}

static unsigned
fences_in_flight(const struct model *m)
{
   unsigned n = 0;
   for (unsigned q = 0; q < m->queued; q++)
      n += m->queue[q]->fence != NULL;
   return n;
}

static bool
wait_idle(struct model *m)
{
   trace(m, "wait idle");
   if (!api(m, cohmap_device_wait_idle(m->dev), "cohmap_device_wait_idle"))
      return false;
   m->n.idles++;
   observe_upto(m, m->submitted);
   return check_mappings(m, "after cohmap_device_wait_idle");
}

/* Waits until submission number is observed: on the first fence at or
 * after it, else for idle. */
static bool
observe_through(struct model *m, uint64_t number)
{
   if (number <= m->observed)
      return true;
   for (unsigned q = 0; q < m->queued; q++) {
      struct msub *s = m->queue[q];
      if (s->number < number || !s->fence)
         continue;
      uint64_t n = s->number;
      trace(m, "wait for submission %" PRIu64, n);
      if (!api(m, cohmap_fence_wait(s->fence, UINT64_MAX),
               "cohmap_fence_wait"))
         return false;
      m->n.waits++;
      observe_upto(m, n);
      return check_mappings(m, "after cohmap_fence_wait");
   }
   return wait_idle(m);
}

/* --- steps -------------------------------------------------------------- */

static bool
step_cpu_write(struct model *m)
{
   struct mbo *b = random_live(m, NULL);
   struct tu_rng *rng = &m->rng;
   size_t off, n;
   if (!b)
      return true;
   unsigned r = (unsigned)tu_rng_below(rng, 100);

   if (r < 25) {
      n = 1;
   } else if (r < 80) {
      n = run_length(rng, b->size);
   } else if (r < 90) {
      n = b->size;
   } else {
      n = (size_t)tu_rng_range(rng, 1, 3 * tu_page_size());
      if (n > b->size)
         n = b->size;
   }
   off = (size_t)tu_rng_below(rng, b->size - n + 1);

   if (b->coherent) {
      uint64_t busy = unobserved_touch(m, b, off, n, true, NULL);
      if (busy) {
         if (tu_rng_percent(rng, 50))
            return true; /* another time */
         /* The application waits before it writes. */
         if (!observe_through(m, busy))
            return false;
      }
   }

   /* Random values; the values already there (a store that changes
    * nothing); or a change that is undone before the next upload. */
   unsigned how = (unsigned)tu_rng_below(rng, 100);
   if (how < 70) {
      tu_rng_fill(rng, b->cpu + off, n);
      memcpy(b->map + off, b->cpu + off, n);
   } else if (how < 85) {
      memcpy(b->map + off, b->cpu + off, n);
   } else {
      for (size_t i = 0; i < n; i++)
         b->map[off + i] = (uint8_t)(b->cpu[off + i] + 1);
      memcpy(b->map + off, b->cpu + off, n);
   }
   trace(m, "cpu write BO #%u [%zu, +%zu) (%s)", b->id, off, n,
         how < 70 ? "random" : how < 85 ? "same values" : "changed back");
   m->n.writes++;
   return true;
}

/* A store that races with the one unobserved submission writing those
 * bytes: the CPU's values must win. */
static bool
step_race(struct model *m)
{
   struct tu_rng *rng = &m->rng;
   const struct mcmd *pick[MAX_UNOBSERVED * MAX_CMDS];
   unsigned n = 0;

   for (unsigned q = 0; q < m->queued; q++) {
      for (unsigned i = 0; i < m->queue[q]->cmd_count; i++) {
         const struct mcmd *c = &m->queue[q]->cmds[i];
         if (c->dst->bo && c->dst->coherent && cmd_dst_size(c))
            pick[n++] = c;
      }
   }
   if (!n)
      return true;
   const struct mcmd *c = pick[tu_rng_below(rng, n)];
   struct mbo *b = c->dst;
   size_t len = cmd_dst_size(c);
   size_t sub = (size_t)tu_rng_range(rng, 1, len < 64 ? len : 64);
   size_t off = c->dst_offset + (size_t)tu_rng_below(rng, len - sub + 1);

   /* Exactly one writer: with two, the first merge may already have
    * happened, and a store equal to its value would look like no store
    * to the second (the three-way merge cannot tell). */
   unsigned writers;
   unobserved_touch(m, b, off, sub, false, &writers);
   if (writers != 1)
      return true;
   /* Uploads wait until every unobserved submission that reads or writes
    * these bytes is observed: one that reads them must see the GPU's
    * value, not the racing store. */
   uint64_t last = unobserved_touch(m, b, off, sub, true, NULL);

   if (m->nraced < TU_ARRAY_SIZE(m->raced)) {
      m->raced[m->nraced].id = b->id;
      m->raced[m->nraced].offset = off;
      m->raced[m->nraced].length = sub;
      memcpy(m->raced[m->nraced].before, b->cpu + off, sub);
      m->nraced++;
   }
   for (size_t i = off; i < off + sub; i++) {
      uint8_t v;
      do {
         v = (uint8_t)tu_rng_next(rng);
      } while (v == b->cpu[i] || v == b->snap[i]);
      b->cpu[i] = v;
      b->map[i] = v;
   }
   if (last > m->race_until)
      m->race_until = last;
   trace(m, "race: cpu write BO #%u [%zu, +%zu) under submission %" PRIu64,
         b->id, off, sub, last);
   m->n.races++;
   return true;
}

static bool submit(struct model *m, struct msub *s, bool fenced);
static bool list_add(struct msub *s, struct mbo *b, uint32_t access);

/*
 * "No clobber": the CPU stores next to bytes an unobserved submission
 * writes (same page, or the same slab page for slab BOs), and a new
 * submission reading them is made at once, before the first one is
 * observed.  Its upload must carry the CPU's bytes and must not put stale
 * CPU data over the bytes the GPU writes; the merge must then give the
 * GPU's bytes to the mapping.
 */
static bool
step_neighbour(struct model *m)
{
   struct tu_rng *rng = &m->rng;
   const struct mcmd *pick[MAX_UNOBSERVED * MAX_CMDS];
   unsigned n = 0;

   if (m->race_until > m->observed)
      return true;
   for (unsigned q = 0; q < m->queued; q++) {
      for (unsigned i = 0; i < m->queue[q]->cmd_count; i++) {
         const struct mcmd *c = &m->queue[q]->cmds[i];
         if (c->dst->bo && c->dst->coherent && !c->dst->internal)
            pick[n++] = c;
      }
   }
   if (!n || m->queued >= MAX_UNOBSERVED ||
       fences_in_flight(m) >= MAX_FENCES)
      return true;
   const struct mcmd *c = pick[tu_rng_below(rng, n)];
   struct mbo *b = c->dst;
   size_t len = (size_t)tu_rng_range(rng, 1, 64), off;
   if (tu_rng_percent(rng, 50)) {
      size_t end = c->dst_offset + cmd_dst_size(c);
      off = end + (size_t)tu_rng_below(rng, 64);
   } else {
      size_t back = len + (size_t)tu_rng_below(rng, 64);
      off = c->dst_offset > back ? c->dst_offset - back : 0;
   }
   if (off >= b->size)
      return true;
   if (len > b->size - off)
      len = b->size - off;
   if (unobserved_touch(m, b, off, len, true, NULL))
      return true;

   tu_rng_fill(rng, b->cpu + off, len);
   memcpy(b->map + off, b->cpu + off, len);
   trace(m, "cpu write BO #%u [%zu, +%zu) next to a GPU write", b->id, off,
         len);
   m->n.writes++;

   struct msub *s = calloc(1, sizeof(*s));
   if (!s)
      return failure(m, "out of memory");
   struct mcmd *k = &s->cmds[s->cmd_count++];
   k->type = MCMD_CHECKSUM;
   k->dst = m->results;
   k->dst_offset = 8 * MAX_LIVE + 8 * (size_t)tu_rng_below(rng, 64);
   k->src = b;
   k->src_offset = off;
   k->size = len;
   list_add(s, m->results, COHMAP_ACCESS_WRITE);
   list_add(s, b, COHMAP_ACCESS_READ);
   m->n.neighbours++;
   return submit(m, s, true);
}

/*
 * After a race: the CPU stores back what the bytes held before it (an
 * application restoring a value).  The winsys must upload them like any
 * store: the device holds the GPU's bytes there, and the snapshot must
 * not mistake the old value for "unchanged".
 */
static bool
step_restore(struct model *m)
{
   if (!m->nraced || m->race_until > m->observed)
      return true;
   unsigned k = (unsigned)tu_rng_below(&m->rng, m->nraced);
   unsigned id = m->raced[k].id;
   size_t off = m->raced[k].offset, len = m->raced[k].length;
   uint8_t before[64];
   memcpy(before, m->raced[k].before, len);
   m->raced[k] = m->raced[--m->nraced];

   struct mbo *b = NULL;
   for (unsigned i = 0; i < m->live_count; i++) {
      if (m->live[i]->id == id)
         b = m->live[i];
   }
   if (!b || unobserved_touch(m, b, off, len, true, NULL))
      return true;
   memcpy(b->cpu + off, before, len);
   memcpy(b->map + off, before, len);
   trace(m, "cpu write BO #%u [%zu, +%zu): the values before a race",
         b->id, off, len);
   m->n.writes++;
   return true;
}

/* A range for a command: offset and size multiples of align (1 or 4),
 * size at most max (0 if nothing fits). */
static void
pick_range(struct tu_rng *rng, size_t bo_size, size_t align, size_t size,
           size_t *off)
{
   size_t slots = (bo_size - size) / align;
   *off = (size_t)tu_rng_below(rng, slots + 1) * align;
}

static size_t
pick_size(struct tu_rng *rng, size_t max, size_t align)
{
   max -= max % align;
   if (max < align)
      return 0;
   /* Now and then an empty command: a valid edge case. */
   if (tu_rng_percent(rng, 1))
      return 0;
   size_t n = run_length(rng, max / align);
   return n * align;
}

static bool
list_add(struct msub *s, struct mbo *b, uint32_t access)
{
   for (unsigned i = 0; i < s->list_count; i++) {
      if (s->list[i] == b) {
         s->access[i] |= access;
         return true;
      }
   }
   if (s->list_count == MAX_LIST)
      return false;
   s->list[s->list_count] = b;
   s->access[s->list_count] = access;
   s->list_count++;
   return true;
}

/* Makes up a command; false if the BOs picked cannot hold one. */
static bool
make_cmd(struct model *m, struct mcmd *c)
{
   struct tu_rng *rng = &m->rng;

   memset(c, 0, sizeof(*c));
   c->type = (enum mcmd_type)tu_rng_below(rng, MCMD_COUNT);
   c->dst = random_live(m, is_gpu_writable);
   if (!c->dst)
      return false;
   size_t dsize = c->dst->size;

   switch (c->type) {
   case MCMD_FILL:
      if (dsize < 4)
         return false;
      c->size = pick_size(rng, dsize, 4);
      pick_range(rng, dsize, 4, c->size, &c->dst_offset);
      c->value = (uint32_t)tu_rng_next(rng);
      return true;
   case MCMD_WRITE:
      c->size = pick_size(rng, dsize < MAX_WRITE_CMD ? dsize : MAX_WRITE_CMD,
                          1);
      pick_range(rng, dsize, 1, c->size, &c->dst_offset);
      c->data = malloc(c->size ? c->size : 1);
      if (!c->data)
         return false;
      tu_rng_fill(rng, c->data, c->size);
      return true;
   case MCMD_CHECKSUM:
      if (dsize < 8)
         return false;
      c->src = random_live(m, NULL);
      c->size = pick_size(rng, c->src->size, 1);
      pick_range(rng, c->src->size, 1, c->size, &c->src_offset);
      pick_range(rng, dsize, 1, 8, &c->dst_offset);
      /* The source must not be the result: the device reads it first,
       * but keep the model simple. */
      return !(c->src == c->dst &&
               overlap(c->src_offset, c->size, c->dst_offset, 8));
   case MCMD_COPY:
   case MCMD_ADD32:
   case MCMD_XOR32: {
      size_t align = c->type == MCMD_COPY ? 1 : 4;
      c->src = random_live(m, NULL);
      size_t max = dsize < c->src->size ? dsize : c->src->size;
      if (max < align)
         return false;
      c->size = pick_size(rng, max, align);
      pick_range(rng, dsize, align, c->size, &c->dst_offset);
      pick_range(rng, c->src->size, align, c->size, &c->src_offset);
      c->value = (uint32_t)tu_rng_next(rng);
      if (c->src != c->dst)
         return true;
      /* Within one BO: the ranges must not overlap, except that a
       * compute may work in place. */
      if (c->type != MCMD_COPY && tu_rng_percent(rng, 50)) {
         c->src_offset = c->dst_offset;
         return true;
      }
      return !overlap(c->src_offset, c->size, c->dst_offset, c->size);
   }
   case MCMD_COUNT:
      break;
   }
   return false;
}

static int
record_cmd(struct cohmap_submit *sub, const struct mcmd *c)
{
   switch (c->type) {
   case MCMD_COPY:
      return cohmap_cmd_copy(sub, c->dst->bo, c->dst_offset, c->src->bo,
                             c->src_offset, c->size);
   case MCMD_FILL:
      return cohmap_cmd_fill(sub, c->dst->bo, c->dst_offset, c->size,
                             c->value);
   case MCMD_WRITE: {
      /* The data is copied when recorded (like vkCmdUpdateBuffer): the
       * buffer passed is scribbled over right after. */
      uint8_t *tmp = malloc(c->size ? c->size : 1);
      if (!tmp)
         return -ENOMEM;
      memcpy(tmp, c->data, c->size);
      int ret = cohmap_cmd_write(sub, c->dst->bo, c->dst_offset, tmp,
                                 c->size);
      memset(tmp, 0xa5, c->size);
      free(tmp);
      return ret;
   }
   case MCMD_CHECKSUM:
      return cohmap_cmd_checksum(sub, c->dst->bo, c->dst_offset, c->src->bo,
                                 c->src_offset, c->size);
   case MCMD_ADD32:
   case MCMD_XOR32:
      return cohmap_cmd_compute(sub,
                                c->type == MCMD_ADD32 ? COHMAP_COMPUTE_ADD32
                                                      : COHMAP_COMPUTE_XOR32,
                                c->dst->bo, c->dst_offset, c->src->bo,
                                c->src_offset, c->size, c->value);
   case MCMD_COUNT:
      break;
   }
   return -EINVAL;
}

/* One cohmap_submit_add_bo() call. */
struct entry {
   struct mbo *b;
   uint32_t access;
};

/* Submits s (commands and list filled in): records it through the API in
 * a random order, with duplicate list entries, then applies rule 1 and
 * queues it. */
static bool
submit(struct model *m, struct msub *s, bool fenced)
{
   struct tu_rng *rng = &m->rng;
   struct cohmap_submit *sub = NULL;

   /* The queue has room (callers keep it so; verification submits up to
    * three after an idle wait). */
   if (m->queued == MAX_UNOBSERVED) {
      sub_free(s);
      return failure(m, "test bug: the submission queue is full");
   }
   if (!api(m, cohmap_submit_begin(m->dev, &sub), "cohmap_submit_begin")) {
      sub_free(s);
      return false;
   }

   /* The entries given to cohmap_submit_add_bo(): each BO once with its
    * access, or split into a READ and a WRITE entry, or given twice;
    * shuffled. */
   struct entry e[MAX_ENTRIES];
   unsigned ne = 0;
   for (unsigned i = 0; i < s->list_count; i++) {
      uint32_t a = s->access[i];
      if (a == (COHMAP_ACCESS_READ | COHMAP_ACCESS_WRITE) &&
          tu_rng_percent(rng, 30)) {
         e[ne++] = (struct entry){s->list[i], COHMAP_ACCESS_READ};
         e[ne++] = (struct entry){s->list[i], COHMAP_ACCESS_WRITE};
      } else {
         e[ne++] = (struct entry){s->list[i], a};
         if (tu_rng_percent(rng, 10))
            e[ne++] = (struct entry){s->list[i], a};
      }
   }
   for (unsigned i = ne; i > 1; i--) {
      unsigned j = (unsigned)tu_rng_below(rng, i);
      struct entry t = e[i - 1];
      e[i - 1] = e[j];
      e[j] = t;
   }

   bool cmds_first = tu_rng_percent(rng, 20);
   bool ok = true;
   for (unsigned pass = 0; pass < 2 && ok; pass++) {
      if ((pass == 0) == cmds_first) {
         for (unsigned i = 0; i < s->cmd_count && ok; i++)
            ok = api(m, record_cmd(sub, &s->cmds[i]), "recording a command");
      } else {
         for (unsigned i = 0; i < ne && ok; i++)
            ok = api(m, cohmap_submit_add_bo(sub, e[i].b->bo, e[i].access),
                     "cohmap_submit_add_bo");
      }
   }
   if (!ok) {
      cohmap_submit_abort(sub);
      sub_free(s);
      return false;
   }

   s->number = ++m->submitted;
   int ret = cohmap_submit_end(sub, fenced ? &s->fence : NULL);
   if (ret) {
      sub_free(s);
      return api(m, ret, "cohmap_submit_end");
   }
   if (fenced && !s->fence) {
      sub_free(s);
      return failure(m, "cohmap_submit_end returned 0 but no fence");
   }

   for (unsigned i = 0; i < s->list_count; i++) {
      if (s->list[i]->coherent)
         upload(s->list[i]);
      s->list[i]->refs++;
   }
   m->queue[m->queued++] = s;
   m->n.submits++;
   struct history *h = &m->history[m->history_next++ % HISTORY];
   h->number = s->number;
   h->count = s->cmd_count;
   for (unsigned i = 0; i < s->cmd_count; i++) {
      const struct mcmd *c = &s->cmds[i];
      h->cmds[i].type = c->type;
      h->cmds[i].dst = c->dst->id;
      h->cmds[i].src = c->src ? c->src->id : ~0u;
      h->cmds[i].dst_offset = c->dst_offset;
      h->cmds[i].src_offset = c->src_offset;
      h->cmds[i].size = c->size;
   }
   m->n.commands += s->cmd_count;

   char desc[96];
   int len = 0;
   desc[0] = 0;
   for (unsigned i = 0; i < s->cmd_count && len < 80; i++) {
      const struct mcmd *c = &s->cmds[i];
      len += snprintf(desc + len, sizeof(desc) - (size_t)len, " %s#%u",
                      mcmd_names[c->type], c->dst->id);
   }
   trace(m, "submission %" PRIu64 "%s: %u BOs,%s", s->number,
         fenced ? "" : " (no fence)", s->list_count,
         s->cmd_count ? desc : " no commands");
   return true;
}

static bool
step_submit(struct model *m)
{
   struct tu_rng *rng = &m->rng;

   /* No upload while a racing store waits for its submission. */
   if (m->race_until > m->observed)
      return observe_through(m, m->race_until);
   /* Keep at most MAX_FENCES fences, MAX_UNOBSERVED submissions. */
   if (fences_in_flight(m) >= MAX_FENCES || m->queued >= MAX_UNOBSERVED) {
      if (!observe_through(m, m->queue[0]->number))
         return false;
   }

   struct msub *s = calloc(1, sizeof(*s));
   if (!s)
      return failure(m, "out of memory");
   unsigned want = tu_rng_percent(rng, 5)
                      ? 0
                      : (unsigned)tu_rng_range(rng, 1, MAX_CMDS);
   for (unsigned tries = 0; s->cmd_count < want && tries < 4 * want;
        tries++) {
      struct mcmd *c = &s->cmds[s->cmd_count];
      if (!make_cmd(m, c)) {
         free(c->data);
         continue;
      }
      list_add(s, c->dst, COHMAP_ACCESS_WRITE);
      if (c->src)
         list_add(s, c->src, COHMAP_ACCESS_READ);
      s->cmd_count++;
   }
   /* BOs listed without being used: they are uploaded all the same. */
   unsigned extra = (unsigned)tu_rng_below(rng, 3);
   for (unsigned i = 0; i < extra; i++) {
      struct mbo *b = random_live(m, NULL);
      uint32_t a = COHMAP_ACCESS_READ;
      if (b->gpu_write && tu_rng_percent(rng, 50))
         a |= COHMAP_ACCESS_WRITE;
      list_add(s, b, a);
   }
   return submit(m, s, !tu_rng_percent(rng, 15));
}

static bool
step_wait(struct model *m)
{
   struct tu_rng *rng = &m->rng;

   if (m->old_fence && tu_rng_percent(rng, 15)) {
      /* Waiting again on an observed fence: done at once. */
      trace(m, "re-wait an observed fence");
      int ret = tu_rng_percent(rng, 50) ? cohmap_fence_poll(m->old_fence)
                                        : cohmap_fence_wait(m->old_fence, 0);
      if (!api(m, ret, "waiting again on an observed fence"))
         return false;
      cohmap_fence_destroy(m->old_fence);
      m->old_fence = NULL;
      return check_mappings(m, "after waiting on an observed fence");
   }

   struct msub *pick[MAX_UNOBSERVED];
   unsigned n = 0;
   for (unsigned q = 0; q < m->queued; q++) {
      if (m->queue[q]->fence)
         pick[n++] = m->queue[q];
   }
   if (!n)
      return true;
   struct msub *s = pick[tu_rng_below(rng, n)];
   uint64_t number = s->number;
   unsigned how = (unsigned)tu_rng_below(rng, 4);
   int ret;
   const char *what;

   switch (how) {
   case 0:
      what = "cohmap_fence_poll";
      ret = cohmap_fence_poll(s->fence);
      break;
   case 1:
      what = "cohmap_fence_wait(0)";
      ret = cohmap_fence_wait(s->fence, 0);
      break;
   case 2:
      what = "cohmap_fence_wait(1 ms)";
      ret = cohmap_fence_wait(s->fence, 1000 * 1000);
      break;
   default:
      what = "cohmap_fence_wait(forever)";
      ret = cohmap_fence_wait(s->fence, UINT64_MAX);
      break;
   }
   trace(m, "%s on submission %" PRIu64 ": %d", what, number, ret);
   if ((how == 0 && ret == -EBUSY) || ((how == 1 || how == 2) &&
                                        ret == -ETIME)) {
      if (how == 0)
         m->n.polls_busy++;
      else
         m->n.waits_timed_out++;
      return true;
   }
   if (!api(m, ret, what))
      return false;
   m->n.waits++;
   observe_upto(m, number);
   return check_mappings(m, "after a fence wait or poll");
}

static bool
step_flush_all(struct model *m)
{
   if (m->race_until > m->observed)
      return true;
   trace(m, "cohmap_device_flush_all");
   if (!api(m, cohmap_device_flush_all(m->dev), "cohmap_device_flush_all"))
      return false;
   /* The winsys also uploads the blocks of destroyed BOs that unobserved
    * submissions still hold; those bytes are not read by any command (the
    * discipline), so the model need not follow. */
   for (unsigned i = 0; i < m->live_count; i++) {
      if (m->live[i]->coherent)
         upload(m->live[i]);
   }
   upload(m->results);
   m->n.flush_alls++;
   return true;
}

/* A random box inside a BO of size bytes; false if none fits. */
static bool
random_box(struct tu_rng *rng, size_t size, struct cohmap_box *box)
{
   memset(box, 0, sizeof(*box));
   box->width = (size_t)tu_rng_range(rng, 1, size < 256 ? size : 256);
   box->height = (size_t)tu_rng_range(rng, 0, 8);
   box->depth = (size_t)tu_rng_range(rng, 0, 3);
   size_t h = box->height ? box->height : 1, d = box->depth ? box->depth : 1;
   box->row_pitch = box->width + (size_t)tu_rng_below(rng, 64);
   size_t plane = (h - 1) * box->row_pitch + box->width;
   box->slice_pitch = plane + (size_t)tu_rng_below(rng, 128);
   size_t extent = (d - 1) * box->slice_pitch + plane;
   if (extent > size)
      return false;
   box->offset = (size_t)tu_rng_below(rng, size - extent + 1);
   return true;
}

/* Calls fn(b, off, n) for each row of the box; stops at the first false. */
static bool
box_rows(const struct cohmap_box *box, struct mbo *b, void *ctx,
         bool (*fn)(struct mbo *b, size_t off, size_t n, void *ctx))
{
   size_t h = box->height ? box->height : 1, d = box->depth ? box->depth : 1;
   for (size_t z = 0; z < d; z++) {
      for (size_t y = 0; y < h; y++) {
         if (!fn(b, box->offset + z * box->slice_pitch + y * box->row_pitch,
                 box->width, ctx))
            return false;
      }
   }
   return true;
}

static bool
row_is_idle(struct mbo *b, size_t off, size_t n, void *ctx)
{
   uint64_t *busy = ctx;
   struct model *m = (struct model *)busy[1];
   uint64_t t = unobserved_touch(m, b, off, n, true, NULL);
   if (t > busy[0])
      busy[0] = t;
   return true;
}

static bool
row_flush(struct mbo *b, size_t off, size_t n, void *ctx)
{
   (void)ctx;
   memcpy(b->dev + off, b->cpu + off, n);
   return true;
}

static bool
step_flush_invalidate(struct model *m)
{
   struct tu_rng *rng = &m->rng;
   unsigned what = (unsigned)tu_rng_below(rng, 100);

   if (what < 10) {
      /* On coherent BOs a flush does nothing, an invalidate merges. */
      struct mbo *b = random_live(m, is_coherent);
      /* None may be live (all destroyed, the next created plain). */
      if (!b)
         return true;
      size_t n = run_length(rng, b->size);
      size_t off = (size_t)tu_rng_below(rng, b->size - n + 1);
      if (what < 5) {
         trace(m, "flush coherent BO #%u [%zu, +%zu)", b->id, off, n);
         return api(m, cohmap_bo_flush(b->bo, off, n), "cohmap_bo_flush");
      }
      if (unobserved_touch(m, b, off, n, false, NULL))
         return true;
      trace(m, "invalidate coherent BO #%u [%zu, +%zu)", b->id, off, n);
      if (!api(m, cohmap_bo_invalidate(b->bo, off, n),
               "cohmap_bo_invalidate"))
         return false;
      if (b->gpu_write)
         merge_range(b, off, n);
      m->n.invalidates++;
      return check_one(m, b, "after invalidating a coherent BO");
   }

   struct mbo *b = random_live(m, is_plain);
   if (!b)
      return true;
   size_t off, n;
   if (what < 30) {
      off = 0;
      n = b->size;
   } else {
      n = run_length(rng, b->size);
      off = (size_t)tu_rng_below(rng, b->size - n + 1);
   }

   if (what < 70) {
      struct cohmap_box box;
      bool use_box = what >= 50 && random_box(rng, b->size, &box);
      uint64_t busy[2] = {0, (uint64_t)(uintptr_t)m};
      if (use_box)
         box_rows(&box, b, busy, row_is_idle);
      else
         busy[0] = unobserved_touch(m, b, off, n, true, NULL);
      if (busy[0] && !observe_through(m, busy[0]))
         return false;
      if (use_box) {
         trace(m, "flush box of BO #%u: offset %zu, %zu x %zu x %zu, "
               "pitches %zu/%zu", b->id, box.offset, box.width, box.height,
               box.depth, box.row_pitch, box.slice_pitch);
         if (!api(m, cohmap_bo_flush_box(b->bo, &box), "cohmap_bo_flush_box"))
            return false;
         box_rows(&box, b, NULL, row_flush);
      } else {
         trace(m, "flush BO #%u [%zu, +%zu)", b->id, off, n);
         if (!api(m, cohmap_bo_flush(b->bo, off, n), "cohmap_bo_flush"))
            return false;
         memcpy(b->dev + off, b->cpu + off, n);
      }
      m->n.flushes++;
      return true;
   }

   /* The device's bytes are known once no unobserved submission writes
    * them. */
   uint64_t busy = unobserved_touch(m, b, off, n, false, NULL);
   if (busy && !observe_through(m, busy))
      return false;
   trace(m, "invalidate BO #%u [%zu, +%zu)", b->id, off, n);
   if (!api(m, cohmap_bo_invalidate(b->bo, off, n), "cohmap_bo_invalidate"))
      return false;
   memcpy(b->cpu + off, b->dev + off, n);
   m->n.invalidates++;
   return check_one(m, b, "after cohmap_bo_invalidate");
}

static bool
step_create(struct model *m)
{
   if (m->live_count == MAX_LIVE)
      return true;
   return add_live(m, (enum kind)tu_rng_below(&m->rng, KIND_COUNT));
}

static bool
in_flight(const struct mbo *b)
{
   return b->refs > 1;
}

static bool
step_destroy(struct model *m)
{
   if (m->live_count <= MIN_LIVE)
      return true;
   struct mbo *b = NULL;
   if (tu_rng_percent(&m->rng, 50))
      b = random_live(m, in_flight);
   if (!b)
      b = random_live(m, NULL);

   bool busy = in_flight(b);
   trace(m, "destroy BO #%u%s", b->id, busy ? " (in flight)" : "");
   if (!api(m, cohmap_bo_destroy(b->bo), "cohmap_bo_destroy"))
      return false;
   b->bo = NULL;
   b->map = NULL;
   for (unsigned i = 0; i < m->live_count; i++) {
      if (m->live[i] == b) {
         m->live[i] = m->live[--m->live_count];
         break;
      }
   }
   m->n.destroys++;
   m->n.destroys_in_flight += busy;
   mbo_unref(b);
   return true;
}

/* Locates the first byte where the device copy of b differs from the
 * model, with a copy into a non-coherent BO. */
static void
locate_device_difference(struct model *m, struct mbo *b)
{
   struct cohmap_bo *staging = NULL;
   struct cohmap_submit *sub = NULL;

   if (cohmap_bo_create(m->dev, b->size, COHMAP_BO_GPU_WRITE, &staging) ||
       cohmap_submit_begin(m->dev, &sub)) {
      cohmap_bo_destroy(staging);
      return;
   }
   cohmap_submit_add_bo(sub, b->bo, COHMAP_ACCESS_READ);
   cohmap_submit_add_bo(sub, staging, COHMAP_ACCESS_WRITE);
   cohmap_cmd_copy(sub, staging, 0, b->bo, 0, b->size);
   if (ws_submit_wait(sub) == 0 &&
       cohmap_bo_invalidate(staging, 0, b->size) == 0) {
      const uint8_t *d = cohmap_bo_map(staging);
      for (size_t i = 0; i < b->size; i++) {
         if (d[i] != b->dev[i]) {
            fprintf(stderr, "# BO #%u: the device copy differs first at "
                    "offset %zu: 0x%02x, the model has 0x%02x (CPU 0x%02x)\n",
                    b->id, i, d[i], b->dev[i], b->cpu[i]);
            break;
         }
      }
   }
   cohmap_bo_destroy(staging);
}

/* After a failure: which device copies differ from the model, and where
 * first.  Waits for idle and observes everything first. */
static void
dump_divergence(struct model *m)
{
   if (cohmap_device_wait_idle(m->dev))
      return;
   observe_upto(m, m->submitted);
   for (unsigned i = 0; i <= m->live_count; i++) {
      struct mbo *b = i < m->live_count ? m->live[i] : m->results;
      struct cohmap_bo *staging = NULL;
      struct cohmap_submit *sub = NULL;
      if (cohmap_bo_create(m->dev, b->size, COHMAP_BO_GPU_WRITE, &staging) ||
          cohmap_submit_begin(m->dev, &sub)) {
         cohmap_bo_destroy(staging);
         return;
      }
      cohmap_submit_add_bo(sub, b->bo, COHMAP_ACCESS_READ);
      cohmap_submit_add_bo(sub, staging, COHMAP_ACCESS_WRITE);
      cohmap_cmd_copy(sub, staging, 0, b->bo, 0, b->size);
      if (b->coherent)
         upload(b);
      if (ws_submit_wait(sub) == 0 &&
          cohmap_bo_invalidate(staging, 0, b->size) == 0) {
         const uint8_t *d = cohmap_bo_map(staging);
         size_t first = SIZE_MAX, count = 0;
         for (size_t j = 0; j < b->size; j++) {
            if (d[j] != b->dev[j]) {
               count++;
               if (first == SIZE_MAX)
                  first = j;
            }
         }
         if (count)
            fprintf(stderr, "# BO #%u (%s, %zu bytes): the device copy "
                    "differs from the model in %zu bytes, first at %zu "
                    "(device 0x%02x, model 0x%02x)\n", b->id,
                    b->internal ? "results" : kind_names[b->kind], b->size,
                    count, first, d[first], b->dev[first]);
         if (count)
            explain_byte(m, b, first);
      }
      cohmap_bo_destroy(staging);
   }
}

/* Checksums every BO on the device against the model's device copy. */
static bool
verify_device(struct model *m)
{
   if (m->race_until > m->observed &&
       !observe_through(m, m->race_until))
      return false;
   if (!wait_idle(m))
      return false;

   struct mbo *order[MAX_LIVE];
   unsigned n = m->live_count;
   memcpy(order, m->live, n * sizeof(order[0]));

   /* MAX_CMDS per submission: several submissions, all waited for. */
   for (unsigned first = 0; first < n; first += MAX_CMDS) {
      struct msub *v = calloc(1, sizeof(*v));
      if (!v)
         return failure(m, "out of memory");
      list_add(v, m->results, COHMAP_ACCESS_WRITE);
      for (unsigned i = first; i < n && i < first + MAX_CMDS; i++) {
         struct mcmd *c = &v->cmds[v->cmd_count++];
         c->type = MCMD_CHECKSUM;
         c->dst = m->results;
         c->dst_offset = 8 * i;
         c->src = order[i];
         c->size = order[i]->size;
         list_add(v, order[i], COHMAP_ACCESS_READ);
      }
      if (!submit(m, v, true))
         return false;
   }
   /* Not wait_idle(): the checksums are compared first, which names the
    * BO rather than an offset in the results. */
   trace(m, "wait idle (verification)");
   if (!api(m, cohmap_device_wait_idle(m->dev), "cohmap_device_wait_idle"))
      return false;
   observe_upto(m, m->submitted);

   for (unsigned i = 0; i < n; i++) {
      struct mbo *b = order[i];
      uint64_t got = load64(m->results->map + 8 * i);
      uint64_t want = fnv1a(b->dev, b->size);
      if (got != want) {
         locate_device_difference(m, b);
         return failure(m, "verification: BO #%u (%s, %zu bytes): device "
                        "checksum 0x%016" PRIx64 ", the model's device copy "
                        "0x%016" PRIx64, b->id, kind_names[b->kind],
                        b->size, got, want);
      }
   }
   m->n.verifies++;
   return check_mappings(m, "after the verification");
}

static bool
run_model(struct model *m, unsigned steps)
{
   /* Step weights, in percent. */
   static const struct {
      unsigned weight;
      bool (*fn)(struct model *m);
   } table[] = {
      {24, step_cpu_write},
      {22, step_submit},
      {8, step_neighbour},
      {14, step_wait},
      {4, NULL}, /* wait idle */
      {3, step_flush_all},
      {10, step_flush_invalidate},
      {3, step_race},
      {2, step_restore},
      {5, step_create},
      {5, step_destroy},
   };

   /* At least one BO of each kind to start with. */
   for (unsigned k = 0; k < KIND_COUNT; k++) {
      if (!add_live(m, (enum kind)k))
         return false;
   }
   while (m->live_count < (MIN_LIVE + MAX_LIVE) / 2) {
      if (!step_create(m))
         return false;
   }

   for (m->step = 1; m->step <= steps; m->step++) {
      unsigned r = (unsigned)tu_rng_below(&m->rng, 100), acc = 0;
      bool ok = true;
      for (size_t i = 0; i < TU_ARRAY_SIZE(table); i++) {
         acc += table[i].weight;
         if (r < acc) {
            ok = table[i].fn ? table[i].fn(m) : wait_idle(m);
            break;
         }
      }
      if (ok && m->step % VERIFY_EVERY == 0)
         ok = verify_device(m);
      if (!ok) {
         dump_divergence(m);
         return false;
      }
   }
   return verify_device(m);
}

/* One run of steps on a fresh device for one method; false on failure
 * (printed). */
static bool
run_method(enum cohmap_method method, unsigned steps, unsigned exec_us)
{
   char name[64];
   struct model *m = calloc(1, sizeof(*m));
   if (!m)
      return false;

   m->method = method;
   m->mname = cohmap_method_name(method);
   snprintf(name, sizeof(name), "model-%s-%u", m->mname, exec_us);
   m->seed = tu_seed_for(name);
   tu_rng_seed(&m->rng, m->seed);

   /* The sim reads its knobs when a device is created. */
   char value[16];
   snprintf(value, sizeof(value), "%u", exec_us);
   setenv("COHMAP_SIM_EXEC_US", value, 1);
   m->dev = ws_device_create(method, 0);
   unsetenv("COHMAP_SIM_EXEC_US");
   if (!m->dev) {
      free(m);
      return false;
   }

   double t0 = tu_now();
   m->results = mbo_create(m, KIND_COHERENT_RW_DEDICATED, RESULTS_SIZE, true);
   bool ok = m->results && run_model(m, steps);

   /* Teardown, also after a failure: wait, then free everything. */
   ok &= api(m, cohmap_device_wait_idle(m->dev), "final wait");
   observe_upto(m, m->submitted);
   cohmap_fence_destroy(m->old_fence);
   for (unsigned i = 0; i < m->live_count; i++) {
      ok &= api(m, cohmap_bo_destroy(m->live[i]->bo), "cohmap_bo_destroy");
      mbo_unref(m->live[i]);
   }
   if (m->results) {
      ok &= api(m, cohmap_bo_destroy(m->results->bo), "cohmap_bo_destroy");
      mbo_unref(m->results);
   }
   ok &= api(m, cohmap_device_destroy(m->dev), "cohmap_device_destroy");

   printf("# %s, GPU %u us per submission: %u steps in %.2f s: %u CPU "
          "writes (%u next to GPU writes), %u racing stores, %u "
          "submissions (%u commands), %u waits (%u polls busy, %u timed "
          "out), %u idle waits, %u flush_all, %u flushes, %u invalidates, "
          "%u BOs created, %u destroyed (%u in flight), %u device "
          "verifications\n",
          m->mname, exec_us, m->step > steps ? steps : m->step,
          tu_now() - t0, m->n.writes, m->n.neighbours, m->n.races,
          m->n.submits, m->n.commands, m->n.waits, m->n.polls_busy,
          m->n.waits_timed_out, m->n.idles, m->n.flush_alls, m->n.flushes,
          m->n.invalidates, m->n.creates, m->n.destroys,
          m->n.destroys_in_flight, m->n.verifies);
   fflush(stdout);
   free(m);
   return ok;
}

static void
test_model(void **state)
{
   const unsigned *steps = *state;
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
      /* Half the steps with a GPU that completes at once (completed
       * submissions are then often retired by the next submit, before
       * the test observes them), half with one that is busy for a while
       * (the CPU runs on while submissions are in flight). */
      ok &= run_method(method, *steps / 2, 0);
      ok &= run_method(method, *steps - *steps / 2, 30);
   }
   assert_true(ok);
}

/*
 * The random test's "restore" step, spelled out: the CPU stores a byte
 * while a submission writing it runs (the CPU wins), then, after the wait,
 * stores the byte's earlier value again.  The next submission must upload
 * it: the device holds the GPU's value there.  With the earlier value as
 * the snapshot the store looks like no change and is lost.
 */
static void
test_conflict_restore(void **state)
{
   (void)state;
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
      for (unsigned slab = 0; slab < 2; slab++) {
         /* A GPU busy for 50 ms per submission: the fill cannot complete
          * (and be merged by its own cohmap_submit_end()) before the CPU's
          * store, so the merge does see both. */
         setenv("COHMAP_SIM_EXEC_US", "50000", 1);
         struct cohmap_device *dev = ws_device_create(method, 0);
         unsetenv("COHMAP_SIM_EXEC_US");
         struct cohmap_bo *bo, *out;
         struct cohmap_submit *s;
         struct cohmap_fence *f;
         assert_non_null(dev);
         assert_int_equal(cohmap_bo_create(dev, slab ? 64 : 64 * TU_KIB,
                                           COHMAP_BO_COHERENT |
                                              COHMAP_BO_GPU_WRITE,
                                           &bo),
                          0);
         assert_int_equal(cohmap_bo_create(dev, 4, COHMAP_BO_GPU_WRITE,
                                           &out),
                          0);
         uint8_t *p = cohmap_bo_map(bo);

         /* 0xaa reaches the device. */
         p[0] = 0xaa;
         assert_int_equal(cohmap_submit_begin(dev, &s), 0);
         assert_int_equal(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_READ),
                          0);
         assert_int_equal(ws_submit_wait(s), 0);

         /* The GPU writes 0x11 while the CPU stores 0xbb. */
         assert_int_equal(cohmap_submit_begin(dev, &s), 0);
         assert_int_equal(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_WRITE),
                          0);
         assert_int_equal(cohmap_cmd_fill(s, bo, 0, 4, 0x11111111), 0);
         assert_int_equal(cohmap_submit_end(s, &f), 0);
         p[0] = 0xbb;
         assert_int_equal(cohmap_fence_wait(f, UINT64_MAX), 0);
         cohmap_fence_destroy(f);
         uint8_t after_wait = p[0];

         /* Back to 0xaa; the next submission copies the byte out. */
         p[0] = 0xaa;
         assert_int_equal(cohmap_submit_begin(dev, &s), 0);
         assert_int_equal(cohmap_submit_add_bo(s, bo, COHMAP_ACCESS_READ),
                          0);
         assert_int_equal(cohmap_submit_add_bo(s, out, COHMAP_ACCESS_WRITE),
                          0);
         assert_int_equal(cohmap_cmd_copy(s, out, 0, bo, 0, 1), 0);
         assert_int_equal(ws_submit_wait(s), 0);
         assert_int_equal(cohmap_bo_invalidate(out, 0, 1), 0);
         uint8_t dev_byte = *(const uint8_t *)cohmap_bo_map(out);

         if (after_wait != 0xbb || dev_byte != 0xaa) {
            fprintf(stderr, "FAIL %s, %s BO: after the wait the mapping "
                    "read 0x%02x (the CPU's racing 0xbb must win); after "
                    "the CPU stored 0xaa again and a submission, the "
                    "device holds 0x%02x (want 0xaa)\n",
                    cohmap_method_name(method), slab ? "slab" : "dedicated",
                    after_wait, dev_byte);
            ok = false;
         }
         assert_int_equal(ws_teardown(dev, (struct cohmap_bo *[]){bo, out},
                                      2),
                          0);
      }
   }
   assert_true(ok);
}

int
main(int argc, char **argv)
{
   static unsigned steps = 2000;
   bool slow = false;

   for (int i = 1; i < argc; i++) {
      if (strcmp(argv[i], "--slow") == 0) {
         slow = true;
         steps = 12000;
      } else {
         fprintf(stderr, "usage: %s [--slow]\n", argv[0]);
         return 2;
      }
   }

   tu_seed();
   /* TEST_FILTER=pattern (cmocka wildcards) runs the matching tests only. */
   if (getenv("TEST_FILTER"))
      cmocka_set_test_filter(getenv("TEST_FILTER"));
   /* The model's FNV-1a is the contract's (cohmap_checksum()). */
   static const uint8_t probe[] = "cohmap";
   if (fnv1a(probe, sizeof(probe)) != cohmap_checksum(probe, sizeof(probe))) {
      fprintf(stderr, "cohmap_checksum() is not 64-bit FNV-1a\n");
      return 1;
   }

   const struct CMUnitTest tests[] = {
      {"conflict-restore", test_conflict_restore, NULL, NULL, NULL},
      {slow ? "model (slow)" : "model", test_model, NULL, NULL, &steps},
   };
   return _cmocka_run_group_tests(slow ? "winsys-model-slow"
                                       : "winsys-model",
                                  tests, TU_ARRAY_SIZE(tests), NULL, NULL);
}
