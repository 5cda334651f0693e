/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * fuzz-winsys: random sequences of winsys calls (winsys.h) on the sim
 * device, checked against a byte-exact model of each BO: cpu (what its
 * mapping must read), dev (the device's copy) and snap (the last state
 * the winsys synchronized, coherent BOs).  The rules are those of
 * tests/winsys/test-model.c, under a stricter discipline that keeps the
 * model simple enough for arbitrary call orders:
 *
 *  1. The CPU writes, flushes and invalidates only BOs that no unobserved
 *     submission lists.  So commands can be applied to dev at submit, in
 *     submission order, right after the upload of the listed coherent
 *     BOs (bytes with cpu != snap: dev := snap := cpu).
 *  2. Submissions are observed all at once: cohmap_device_wait_idle(), or
 *     a wait or poll of the fence of the latest submission (one without a
 *     fence drops the kept fence).  Then each byte a command wrote to a
 *     live coherent GPU_WRITE BO is merged three-way: if dev != snap and
 *     cpu == snap, cpu := snap := dev.
 *  3. After every observation, each mapping must equal cpu and the
 *     device's memory (read through the backend) must equal dev; for a
 *     coherent BO a byte may instead already hold cpu where cpu != snap:
 *     the winsys uploads whole slab blocks and pages, so a CPU write may
 *     reach the device before a submission lists its BO.  A "checkpoint"
 *     (cohmap_device_flush_all() then wait_idle) must leave every device
 *     byte exactly equal to the mapping.
 *
 * Bad arguments (size 0, unknown flags, unaligned userptrs, ranges past
 * the BO, misaligned fills and computes, partly overlapping computes,
 * oversized writes, BOs missing from the buffer list or listed without
 * the access a command needs, GPU writes to a BO without GPU_WRITE, a
 * listed BO destroyed before the submission ends, bad boxes) must fail
 * with -EINVAL and change nothing: the model does not move, and the next
 * check would see any byte that did.
 *
 * The first byte picks the tracking method and whether small BOs go to
 * slabs; then each operation is one byte and its arguments.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cohmap/winsys.h"
#include "fuzz.h"
#include "test-util.h"
#include "winsys/winsys_priv.h"

#define MAX_BOS 8
#define MAX_OPS 64
#define MAX_CMDS 4
#define MAX_PENDING 8
#define MAX_WRITES (MAX_PENDING * MAX_CMDS)
#define WRITE_CMD_MAX 65536

struct mbo {
   struct cohmap_bo *bo; /* NULL: free slot */
   unsigned id;          /* tells a slot's BOs apart */
   uint8_t *map, *cpu, *dev, *snap;
   size_t size;
   uint32_t flags;
   bool coherent, gpu_write;
   void *userptr; /* wrap: unmapped after destroy */
   unsigned busy; /* unobserved submissions listing it */
};

/* A range an unobserved submission's command wrote. */
struct mwrite {
   unsigned slot, id;
   size_t offset, length;
};

struct run {
   struct fuzz_input in;
   struct cohmap_device *dev;
   size_t page;
   struct mbo bos[MAX_BOS];
   unsigned next_id;
   struct mwrite writes[MAX_WRITES];
   unsigned nwrites;
   /* BOs (slot and id) listed by each unobserved submission, for the
    * busy counts: a slot may hold a new BO by the time it is observed. */
   struct {
      unsigned slot, id;
   } pending_lists[MAX_PENDING][MAX_BOS];
   unsigned pending_count[MAX_PENDING];
   unsigned pending;
   struct cohmap_fence *fence; /* of the latest submission, or NULL */
   uint8_t *scratch;
   size_t scratch_size;
};

static uint8_t big_write[WRITE_CMD_MAX + 1];

/* --- model ------------------------------------------------------------- */

static void
device_bytes(struct run *r, struct mbo *m, uint8_t *out)
{
   struct cohmap_bo *bo = m->bo;
   struct cohmap_device *dev = r->dev;
   int ret = dev->ops->download(dev->backend, bo->block->mem, bo->offset,
                                bo->size, out);
   FUZZ_CHECK(ret == 0, "download: %d", ret);
}

/* Rule 3.  strict: after a checkpoint, no pending CPU write anywhere. */
static void
check_all(struct run *r, bool strict)
{
   for (unsigned i = 0; i < MAX_BOS; i++) {
      struct mbo *m = &r->bos[i];
      if (!m->bo)
         continue;
      for (size_t b = 0; b < m->size; b++)
         FUZZ_CHECK(m->map[b] == m->cpu[b],
                    "BO %u (%zu bytes, flags %#x): mapping byte %zu is "
                    "%#x, model %#x",
                    i, m->size, m->flags, b, m->map[b], m->cpu[b]);
      device_bytes(r, m, r->scratch);
      for (size_t b = 0; b < m->size; b++) {
         uint8_t got = r->scratch[b];
         bool ok = got == m->dev[b];
         if (!ok && m->coherent && !strict)
            ok = m->cpu[b] != m->snap[b] && got == m->cpu[b];
         FUZZ_CHECK(ok,
                    "BO %u (%zu bytes, flags %#x): device byte %zu is %#x, "
                    "model %#x (cpu %#x, snap %#x)%s",
                    i, m->size, m->flags, b, got, m->dev[b], m->cpu[b],
                    m->snap[b], strict ? " after a checkpoint" : "");
      }
   }
}

static void
upload(struct mbo *m)
{
   for (size_t b = 0; b < m->size; b++) {
      if (m->cpu[b] != m->snap[b])
         m->dev[b] = m->snap[b] = m->cpu[b];
   }
}

/* Rule 2: every submission is now observed. */
static void
observe_all(struct run *r)
{
   for (unsigned w = 0; w < r->nwrites; w++) {
      struct mwrite *x = &r->writes[w];
      struct mbo *m = &r->bos[x->slot];
      if (!m->bo || m->id != x->id || !m->coherent || !m->gpu_write)
         continue; /* destroyed since: its writes are dropped */
      for (size_t b = x->offset; b < x->offset + x->length; b++) {
         if (m->dev[b] != m->snap[b] && m->cpu[b] == m->snap[b])
            m->cpu[b] = m->snap[b] = m->dev[b];
      }
   }
   r->nwrites = 0;
   for (unsigned p = 0; p < r->pending; p++) {
      for (unsigned k = 0; k < r->pending_count[p]; k++) {
         struct mbo *m = &r->bos[r->pending_lists[p][k].slot];
         if (m->bo && m->id == r->pending_lists[p][k].id) {
            FUZZ_CHECK(m->busy > 0, "busy count");
            m->busy--;
         }
      }
   }
   r->pending = 0;
   check_all(r, false);
}

/* --- BOs --------------------------------------------------------------- */

static void
mbo_free(struct mbo *m)
{
   free(m->cpu);
   free(m->dev);
   free(m->snap);
   if (m->userptr)
      tu_unmap(m->userptr, m->size);
   memset(m, 0, sizeof(*m));
}

static struct mbo *
pick_bo(struct run *r)
{
   unsigned i = fuzz_u8(&r->in) % MAX_BOS;
   for (unsigned k = 0; k < MAX_BOS; k++) {
      struct mbo *m = &r->bos[(i + k) % MAX_BOS];
      if (m->bo)
         return m;
   }
   return NULL;
}

static void
op_create(struct run *r, bool wrap)
{
   unsigned i = fuzz_u8(&r->in) % MAX_BOS;
   struct mbo *m = &r->bos[i];
   if (m->bo)
      return;
   uint8_t fb = fuzz_u8(&r->in);
   uint32_t flags = fb & 0x1f;
   bool bad_flags = (fb >> 5) == 7;
   if (bad_flags)
      flags |= 1u << 5;
   size_t size;
   uint8_t sb = fuzz_u8(&r->in);
   if (wrap)
      size = (1 + sb % 4) * r->page;
   else if (sb < 8)
      size = sb == 0 ? 0 : 40000 + fuzz_u16(&r->in); /* dedicated */
   else
      size = 1 + (sb - 8) * 37 + fuzz_u8(&r->in); /* slab-sized */

   struct cohmap_bo *bo = NULL;
   int ret, want = size == 0 || bad_flags ? -EINVAL : 0;
   void *mem = NULL;
   if (wrap) {
      mem = tu_map(size, r->page, false);
      FUZZ_CHECK(mem, "tu_map");
      memset(mem, sb, size);
      if (fb % 8 == 1) {
         ret = cohmap_bo_wrap(r->dev, (uint8_t *)mem + 8, r->page, flags,
                              &bo);
         FUZZ_CHECK(ret == -EINVAL && !bo, "unaligned userptr: %d", ret);
      }
      ret = cohmap_bo_wrap(r->dev, mem, size, flags, &bo);
   } else {
      ret = cohmap_bo_create(r->dev, size, flags, &bo);
   }
   FUZZ_CHECK(ret == want, "%s(%zu, %#x) = %d, expected %d (%s)",
              wrap ? "bo_wrap" : "bo_create", size, flags, ret, want,
              cohmap_error_message());
   FUZZ_CHECK(!ret == !!bo, "out on %d", ret);
   if (ret) {
      if (mem)
         tu_unmap(mem, size);
      return;
   }

   memset(m, 0, sizeof(*m));
   m->bo = bo;
   m->id = ++r->next_id;
   m->size = size;
   m->flags = flags;
   m->coherent = flags & COHMAP_BO_COHERENT;
   m->gpu_write = flags & COHMAP_BO_GPU_WRITE;
   m->map = cohmap_bo_map(bo);
   m->userptr = mem;
   m->cpu = malloc(size);
   m->dev = calloc(1, size);
   m->snap = calloc(1, size);
   FUZZ_CHECK(m->cpu && m->dev && m->snap && m->map, "out of memory");
   FUZZ_CHECK(cohmap_bo_size(bo) == size && cohmap_bo_flags(bo) == flags,
              "size or flags");
   if (wrap) {
      /* A userptr's contents are the CPU's, not yet the device's. */
      memcpy(m->cpu, mem, size);
   } else {
      memset(m->cpu, 0, size);
      for (size_t b = 0; b < size; b++)
         FUZZ_CHECK(m->map[b] == 0, "new BO not zero-filled at %zu", b);
   }
   if (size > r->scratch_size) {
      free(r->scratch);
      r->scratch = malloc(size);
      r->scratch_size = size;
      FUZZ_CHECK(r->scratch, "out of memory");
   }
}

static void
op_destroy(struct run *r)
{
   struct mbo *m = pick_bo(r);
   if (!m)
      return;
   int ret = cohmap_bo_destroy(m->bo);
   FUZZ_CHECK(ret == 0, "bo_destroy: %d", ret);
   /* Unobserved submissions keep the device memory; their writes to it
    * are dropped (observe_all skips the slot's old id). */
   mbo_free(m);
}

/* --- CPU side ---------------------------------------------------------- */

static void
pick_range(struct run *r, struct mbo *m, size_t *off, size_t *len)
{
   *off = fuzz_u16(&r->in) % m->size;
   *len = 1 + fuzz_u16(&r->in) % (m->size - *off);
}

static void
op_cpu_write(struct run *r)
{
   struct mbo *m = pick_bo(r);
   if (!m || m->busy)
      return;
   size_t off, len;
   pick_range(r, m, &off, &len);
   uint8_t seed = fuzz_u8(&r->in);
   for (size_t b = off; b < off + len; b++) {
      /* Sometimes the value it already has: a store that changes nothing. */
      uint8_t v = seed & 1 ? m->cpu[b] : (uint8_t)(seed + b * 7);
      m->map[b] = v;
      m->cpu[b] = v;
   }
}

static void
op_flush_invalidate(struct run *r)
{
   struct mbo *m = pick_bo(r);
   if (!m || m->busy)
      return;
   uint8_t kind = fuzz_u8(&r->in);
   size_t off, len;
   pick_range(r, m, &off, &len);
   int ret;

   switch (kind % 4) {
   case 0:
      ret = cohmap_bo_flush(m->bo, off, len);
      FUZZ_CHECK(ret == 0, "flush: %d", ret);
      if (!m->coherent)
         memcpy(m->dev + off, m->cpu + off, len);
      break;
   case 1:
      ret = cohmap_bo_invalidate(m->bo, off, len);
      FUZZ_CHECK(ret == 0, "invalidate: %d", ret);
      /* Coherent: a merge, which finds nothing (rule 1). */
      if (!m->coherent)
         memcpy(m->cpu + off, m->dev + off, len);
      break;
   case 2: {
      struct cohmap_box box = {
         .offset = off,
         .width = 1 + fuzz_u8(&r->in) % 64,
         .height = fuzz_u8(&r->in) % 5,
         .depth = fuzz_u8(&r->in) % 3,
      };
      box.row_pitch = box.width + fuzz_u8(&r->in) % 32;
      size_t rows = box.height ? box.height : 1;
      box.slice_pitch = (rows - 1) * box.row_pitch + box.width +
                        fuzz_u8(&r->in) % 64;
      bool overlap = kind & 0x80 && rows > 1;
      if (overlap)
         box.row_pitch = box.width - 1;
      size_t depth = box.depth ? box.depth : 1;
      size_t end = off + (depth - 1) * box.slice_pitch +
                   (rows - 1) * box.row_pitch + box.width;
      int want = overlap || end > m->size ? -EINVAL : 0;
      ret = cohmap_bo_flush_box(m->bo, &box);
      FUZZ_CHECK(ret == want, "flush_box: %d, expected %d", ret, want);
      if (ret || m->coherent)
         break;
      for (size_t z = 0; z < depth; z++) {
         for (size_t y = 0; y < rows; y++) {
            size_t o = off + z * box.slice_pitch + y * box.row_pitch;
            memcpy(m->dev + o, m->cpu + o, box.width);
         }
      }
      break;
   }
   default:
      /* Past the end: refused, nothing changes. */
      ret = cohmap_bo_flush(m->bo, off, m->size - off + 1);
      FUZZ_CHECK(ret == -EINVAL, "flush past the end: %d", ret);
      ret = cohmap_bo_invalidate(m->bo, m->size + 1, 0);
      FUZZ_CHECK(ret == -EINVAL, "invalidate past the end: %d", ret);
      ret = cohmap_bo_flush_box(m->bo, NULL);
      FUZZ_CHECK(ret == -EINVAL, "flush_box(NULL): %d", ret);
      break;
   }
}

/* --- submissions ------------------------------------------------------- */

struct mcmd {
   unsigned type; /* 0 copy, 1 fill, 2 write, 3 checksum, 4 add32, 5 xor32 */
   struct mbo *dst, *src;
   size_t dst_offset, src_offset, size;
   uint32_t value;
   const uint8_t *data;
   int want; /* what recording it must return */
};

static size_t
pick_offset(struct run *r, struct mbo *m, unsigned align)
{
   size_t o = fuzz_u16(&r->in) % (m->size + 1);
   return o - o % align;
}

static void
apply(struct mcmd *c)
{
   uint8_t *d = c->dst->dev + c->dst_offset;
   switch (c->type) {
   case 0:
      memmove(d, c->src->dev + c->src_offset, c->size);
      break;
   case 1:
      for (size_t i = 0; i < c->size; i++)
         d[i] = (uint8_t)(c->value >> (8 * (i % 4)));
      break;
   case 2:
      memcpy(d, c->data, c->size);
      break;
   case 3: {
      uint64_t sum = cohmap_checksum(c->src->dev + c->src_offset, c->size);
      for (unsigned i = 0; i < 8; i++)
         d[i] = (uint8_t)(sum >> (8 * i));
      break;
   }
   default: {
      const uint8_t *s = c->src->dev + c->src_offset;
      for (size_t i = 0; i < c->size; i += 4) {
         uint32_t w = (uint32_t)s[i] | (uint32_t)s[i + 1] << 8 |
                      (uint32_t)s[i + 2] << 16 | (uint32_t)s[i + 3] << 24;
         w = c->type == 4 ? w + c->value : w ^ c->value;
         for (unsigned k = 0; k < 4; k++)
            d[i + k] = (uint8_t)(w >> (8 * k));
      }
      break;
   }
   }
}

static size_t
written_length(const struct mcmd *c)
{
   return c->type == 3 ? 8 : c->size;
}

/* Builds one command from the input; sets c->want from the rules of
 * submit.c's recording checks. */
static void
make_cmd(struct run *r, struct mcmd *c)
{
   uint8_t t = fuzz_u8(&r->in);
   c->type = t % 6;
   c->dst = pick_bo(r);
   c->src = t & 0x40 ? c->dst : pick_bo(r);
   unsigned align = c->type == 1 || c->type >= 4 ? 4 : 1;
   c->dst_offset = pick_offset(r, c->dst, align);
   c->src_offset = c->type == 1 || c->type == 2
                      ? 0
                      : pick_offset(r, c->src, align);
   size_t room = c->dst->size - c->dst_offset;
   if (c->type == 0 || c->type >= 4) {
      size_t src_room = c->src->size - c->src_offset;
      room = room < src_room ? room : src_room;
   } else if (c->type == 3) {
      room = c->src->size - c->src_offset;
   }
   c->size = room ? fuzz_u16(&r->in) % (room + 1) : 0;
   c->size -= c->size % align;
   c->value = fuzz_u32(&r->in);
   c->data = big_write;
   c->want = 0;

   /* Every so often, something the recording checks refuse. */
   uint8_t bad = fuzz_u8(&r->in);
   if (bad % 16 == 1)
      c->size = room + 1 + align; /* past the end */
   else if (bad % 16 == 2 && align == 4 && c->dst_offset + 1 < c->dst->size)
      c->dst_offset++; /* misaligned */
   else if (bad % 16 == 3 && c->type == 2)
      c->size = WRITE_CMD_MAX + 1;

   size_t dst_len = c->type == 3 ? 8 : c->size;
   if (c->dst_offset > c->dst->size || dst_len > c->dst->size - c->dst_offset)
      c->want = -EINVAL;
   if ((c->type == 0 || c->type >= 3) &&
       (c->src_offset > c->src->size ||
        c->size > c->src->size - c->src_offset))
      c->want = -EINVAL;
   if (align == 4 && (c->dst_offset % 4 || c->src_offset % 4 || c->size % 4))
      c->want = -EINVAL;
   if (c->type == 2 && c->size > WRITE_CMD_MAX)
      c->want = -EINVAL;
   if (c->type >= 4 && c->dst == c->src && c->dst_offset != c->src_offset &&
       c->dst_offset < c->src_offset + c->size &&
       c->src_offset < c->dst_offset + c->size)
      c->want = -EINVAL;
   if (c->type == 2 && c->size <= WRITE_CMD_MAX) {
      /* The payload: input bytes (the command copies them now). */
      for (size_t i = 0; i < 64 && i < c->size; i++)
         big_write[i] = fuzz_u8(&r->in);
   }
}

static int
record(struct cohmap_submit *s, const struct mcmd *c)
{
   switch (c->type) {
   case 0:
      return cohmap_cmd_copy(s, c->dst->bo, c->dst_offset, c->src->bo,
                             c->src_offset, c->size);
   case 1:
      return cohmap_cmd_fill(s, c->dst->bo, c->dst_offset, c->size,
                             c->value);
   case 2:
      return cohmap_cmd_write(s, c->dst->bo, c->dst_offset, c->data,
                              c->size);
   case 3:
      return cohmap_cmd_checksum(s, c->dst->bo, c->dst_offset, c->src->bo,
                                 c->src_offset, c->size);
   default:
      return cohmap_cmd_compute(s,
                                c->type == 4 ? COHMAP_COMPUTE_ADD32
                                             : COHMAP_COMPUTE_XOR32,
                                c->dst->bo, c->dst_offset, c->src->bo,
                                c->src_offset, c->size, c->value);
   }
}

static bool
reads_src(const struct mcmd *c)
{
   return c->type == 0 || c->type >= 3;
}

static void
op_submit(struct run *r)
{
   if (!pick_bo(r) || r->pending == MAX_PENDING)
      return;
   struct mcmd cmds[MAX_CMDS];
   unsigned ncmds = 1 + fuzz_u8(&r->in) % MAX_CMDS;
   uint8_t mode = fuzz_u8(&r->in);
   int want = 0;

   struct cohmap_submit *s = NULL;
   int ret = cohmap_submit_begin(r->dev, &s);
   FUZZ_CHECK(ret == 0, "submit_begin: %d", ret);

   /* The buffer list: what the commands need, unless the input drops or
    * weakens an entry (the submission must then be refused). */
   uint32_t access[MAX_BOS] = {0};
   for (unsigned i = 0; i < ncmds; i++) {
      make_cmd(r, &cmds[i]);
      struct mcmd *c = &cmds[i];
      access[c->dst - r->bos] |= COHMAP_ACCESS_WRITE;
      if (reads_src(c))
         access[c->src - r->bos] |= COHMAP_ACCESS_READ;
   }
   uint8_t drop = fuzz_u8(&r->in);
   /* Extra entries: BOs listed that no command touches. */
   if (drop & 0x10) {
      struct mbo *x = pick_bo(r);
      access[x - r->bos] |= COHMAP_ACCESS_READ;
   }
   if (drop % 8 == 1) {
      unsigned k = cmds[0].dst - r->bos;
      access[k] &= ~COHMAP_ACCESS_WRITE;
   } else if (drop % 8 == 2 && reads_src(&cmds[0])) {
      unsigned k = cmds[0].src - r->bos;
      access[k] &= ~COHMAP_ACCESS_READ;
   }
   for (unsigned k = 0; k < MAX_BOS; k++) {
      if (!access[k])
         continue;
      ret = cohmap_submit_add_bo(s, r->bos[k].bo, access[k]);
      FUZZ_CHECK(ret == 0, "add_bo: %d", ret);
      if (drop & 0x20) {
         /* Again, part of it: accesses are ORed. */
         ret = cohmap_submit_add_bo(s, r->bos[k].bo,
                                    access[k] & COHMAP_ACCESS_READ
                                       ? COHMAP_ACCESS_READ
                                       : access[k]);
         FUZZ_CHECK(ret == 0, "add_bo again: %d", ret);
      }
   }
   if (drop % 32 == 3) {
      ret = cohmap_submit_add_bo(s, r->bos[0].bo ? r->bos[0].bo
                                                 : cmds[0].dst->bo,
                                 COHMAP_ACCESS_WRITE << 1);
      FUZZ_CHECK(ret == -EINVAL, "add_bo with bad access: %d", ret);
      want = -EINVAL;
   }

   for (unsigned i = 0; i < ncmds; i++) {
      struct mcmd *c = &cmds[i];
      ret = record(s, c);
      FUZZ_CHECK(ret == c->want,
                 "command %u (type %u, dst %zu+%zu of %zu, src %zu) = %d, "
                 "expected %d (%s)",
                 i, c->type, c->dst_offset, c->size, c->dst->size,
                 c->src_offset, ret, c->want, cohmap_error_message());
      if (ret && !want)
         want = ret;
      unsigned d = c->dst - r->bos;
      if (!(access[d] & COHMAP_ACCESS_WRITE) || !c->dst->gpu_write)
         want = want ? want : -EINVAL;
      if (reads_src(c) && !(access[c->src - r->bos] & COHMAP_ACCESS_READ))
         want = want ? want : -EINVAL;
   }

   if (mode % 16 == 1) {
      cohmap_submit_abort(s);
      return;
   }
   bool with_fence = mode & 0x20;
   struct cohmap_fence *fence = NULL;
   ret = cohmap_submit_end(s, with_fence ? &fence : NULL);
   FUZZ_CHECK(ret == want, "submit_end = %d, expected %d (%s)", ret, want,
              cohmap_error_message());
   FUZZ_CHECK(!ret || !fence, "fence on error");
   if (ret)
      return; /* nothing queued, nothing changed (the next check sees) */

   /* Rule 1: upload the listed coherent BOs, then run the commands. */
   unsigned p = r->pending++;
   r->pending_count[p] = 0;
   for (unsigned k = 0; k < MAX_BOS; k++) {
      if (!access[k])
         continue;
      struct mbo *m = &r->bos[k];
      if (m->coherent)
         upload(m);
      m->busy++;
      r->pending_lists[p][r->pending_count[p]].slot = k;
      r->pending_lists[p][r->pending_count[p]++].id = m->id;
   }
   for (unsigned i = 0; i < ncmds; i++) {
      struct mcmd *c = &cmds[i];
      apply(c);
      FUZZ_CHECK(r->nwrites < MAX_WRITES, "write sets");
      r->writes[r->nwrites++] = (struct mwrite){
         (unsigned)(c->dst - r->bos), c->dst->id, c->dst_offset,
         written_length(c)};
   }
   cohmap_fence_destroy(r->fence);
   r->fence = fence;
}

/* A listed BO destroyed before the submission ends: refused. */
static void
op_destroyed_in_list(struct run *r)
{
   struct mbo *m = pick_bo(r);
   if (!m || m->busy)
      return;
   struct cohmap_submit *s = NULL;
   FUZZ_CHECK(cohmap_submit_begin(r->dev, &s) == 0, "submit_begin");
   FUZZ_CHECK(cohmap_submit_add_bo(s, m->bo, COHMAP_ACCESS_READ) == 0,
              "add_bo");
   FUZZ_CHECK(cohmap_bo_destroy(m->bo) == 0, "bo_destroy");
   mbo_free(m);
   struct cohmap_fence *fence = NULL;
   int ret = cohmap_submit_end(s, &fence);
   FUZZ_CHECK(ret == -EINVAL && !fence, "submit_end with a destroyed BO: %d",
              ret);
}

static void
op_observe(struct run *r)
{
   uint8_t kind = fuzz_u8(&r->in);
   int ret;

   switch (kind % 5) {
   case 0:
      ret = cohmap_device_wait_idle(r->dev);
      FUZZ_CHECK(ret == 0, "wait_idle: %d", ret);
      observe_all(r);
      break;
   case 1:
   case 2:
      if (!r->fence)
         return;
      ret = kind % 5 == 1 ? cohmap_fence_wait(r->fence, UINT64_MAX)
                          : cohmap_fence_poll(r->fence);
      FUZZ_CHECK(ret == 0 || (kind % 5 == 2 && ret == -EBUSY),
                 "fence wait/poll: %d", ret);
      if (ret == 0)
         observe_all(r);
      break;
   case 3:
      if (!r->fence)
         return;
      ret = cohmap_fence_wait(r->fence, 0);
      FUZZ_CHECK(ret == 0 || ret == -ETIME, "fence wait(0): %d", ret);
      if (ret == 0)
         observe_all(r);
      break;
   default: {
      /* Checkpoint: everything uploaded and observed, device == CPU. */
      ret = cohmap_device_flush_all(r->dev);
      FUZZ_CHECK(ret == 0, "flush_all: %d", ret);
      for (unsigned i = 0; i < MAX_BOS; i++) {
         if (r->bos[i].bo && r->bos[i].coherent)
            upload(&r->bos[i]);
      }
      ret = cohmap_device_wait_idle(r->dev);
      FUZZ_CHECK(ret == 0, "wait_idle: %d", ret);
      observe_all(r);
      check_all(r, true);
      break;
   }
   }
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
   (void)argc;
   (void)argv;
   return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
   struct run r = {.in = {data, size, 0}, .page = tu_page_size()};
   struct cohmap_context_options copts;
   struct cohmap_device_options opts;

   uint8_t c = fuzz_u8(&r.in);
   cohmap_context_options_init(&copts);
   /* The developer's COHMAP_* settings must not change what an input
    * does (nor calibrate the policy, which needs COHMAP_DEBUG=nocal
    * otherwise). */
   copts.flags = COHMAP_CONTEXT_IGNORE_ENV;
   if (c & 0x08)
      copts.flags |= COHMAP_CONTEXT_NO_UFFD;
   cohmap_device_options_init(&opts);
   opts.method = (enum cohmap_method)(c % 5);
   opts.slab_threshold = c & 0x10 ? 1 : 0;
   opts.context_options = &copts;
   int ret = cohmap_device_create(&opts, &r.dev);
   if (ret == -ENOTSUP || ret == -ENOSYS || ret == -EPERM) {
      /* scan where userfaultfd is missing: the method cannot be tested
       * here; the other four bits of the byte still can. */
      opts.method = COHMAP_METHOD_AUTO;
      ret = cohmap_device_create(&opts, &r.dev);
   }
   FUZZ_CHECK(ret == 0, "device_create(method %d): %d (%s)",
              (int)opts.method, ret, cohmap_error_message());

   for (unsigned op = 0; op < MAX_OPS && !fuzz_done(&r.in); op++) {
      switch (fuzz_u8(&r.in) % 12) {
      case 0:
      case 1:
         op_create(&r, false);
         break;
      case 2:
         op_create(&r, true);
         break;
      case 3:
         op_destroy(&r);
         break;
      case 4:
      case 5:
         op_cpu_write(&r);
         break;
      case 6:
         op_flush_invalidate(&r);
         break;
      case 7:
      case 8:
         op_submit(&r);
         break;
      case 9:
      case 10:
         op_observe(&r);
         break;
      default:
         op_destroyed_in_list(&r);
         break;
      }
   }

   /* Everything observed and checked, then torn down. */
   ret = cohmap_device_wait_idle(r.dev);
   FUZZ_CHECK(ret == 0, "wait_idle: %d", ret);
   observe_all(&r);
   cohmap_fence_destroy(r.fence);
   for (unsigned i = 0; i < MAX_BOS; i++) {
      if (!r.bos[i].bo)
         continue;
      FUZZ_CHECK(cohmap_bo_destroy(r.bos[i].bo) == 0, "bo_destroy");
      mbo_free(&r.bos[i]);
   }
   ret = cohmap_device_destroy(r.dev);
   FUZZ_CHECK(ret == 0, "device_destroy: %d (%s)", ret,
              cohmap_error_message());
   free(r.scratch);
   return 0;
}
