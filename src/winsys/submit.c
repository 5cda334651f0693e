/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: submissions, fences and the merge
 *
 * cohmap_submit_end():
 *
 *  1. validates every command against the buffer list (a BO a command
 *     writes must be listed with COHMAP_ACCESS_WRITE and created with
 *     COHMAP_BO_GPU_WRITE; one it reads, listed with READ) — nothing has
 *     happened yet if this fails;
 *  2. collects each distinct coherent block of the list once and uploads
 *     what the CPU wrote (cohmap_block_flush());
 *  3. queues the commands with the backend and, under the same lock,
 *     appends an inflight record: the BO references, the ranges each
 *     command may write, and cmd_write payloads.
 *
 * Readback is eager: when the host observes that seqno N completed, the
 * inflight records up to N are retired in order — each written range is
 * downloaded and three-way merged into the mapping — before the wait
 * returns.  Eager, because the layer and GL apps read results right after
 * the wait, and because the lazy alternative (protect the pages, merge on
 * first access) would fault on every first read and, like the fault
 * method, break kernel accesses (write(2) from the buffer would fail with
 * EFAULT).  The cost is a download of what the commands could have
 * written, which the winsys knows exactly here; the Vulkan backend, which
 * does not, merges only memory bound to written resources.
 *
 * Completed submissions are also retired at the next submit, so that a
 * caller who never waits does not accumulate records (and sees GPU writes
 * early, which coherent memory allows).
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "winsys/winsys_priv.h"

#define MAX_WRITE_SIZE 65536

struct cmd_rec {
   enum cohmap_cmd_type type;
   struct cohmap_bo *dst, *src;
   size_t dst_offset, src_offset, size;
   uint32_t value, op;
   void *data;
};

struct list_entry {
   struct cohmap_bo *bo;
   uint32_t access;
};

struct cohmap_submit {
   struct cohmap_device *dev;
   struct list_entry *list;
   size_t list_count, list_cap;
   /* Open-addressing index of list by BO pointer (slot: entry + 1, 0 =
    * empty; index_cap a power of two, at most half full), built once the
    * list is longer than LIST_SCAN_MAX: a list of 10,000 BOs looked up
    * linearly cost 22-35 ms per submission in add_bo and validation. */
   uint32_t *index;
   size_t index_cap;
   struct cmd_rec *cmds;
   size_t cmd_count, cmd_cap;
   /* First error while recording: the submission is refused at end, so a
    * caller who ignores a failed cmd_* never submits a partial stream. */
   int error;
};

/* Lists up to this long are searched linearly (cheaper than hashing). */
#define LIST_SCAN_MAX 16

static size_t
bo_hash(const struct cohmap_bo *bo, size_t cap)
{
   /* Fibonacci hashing of the pointer (its low bits are alignment). */
   uint64_t h = (uint64_t)(uintptr_t)bo * 0x9e3779b97f4a7c15ull;
   return (size_t)(h >> 32) & (cap - 1);
}

static void
index_put(struct cohmap_submit *s, size_t entry)
{
   size_t i = bo_hash(s->list[entry].bo, s->index_cap);
   while (s->index[i])
      i = (i + 1) & (s->index_cap - 1);
   s->index[i] = (uint32_t)(entry + 1);
}

/* Keeps the index at most half full for one more entry.  Without memory
 * for a bigger one it drops the index: the list is then searched
 * linearly, slower but correct. */
static void
index_reserve(struct cohmap_submit *s)
{
   size_t want = s->list_count + 1;
   if (want <= LIST_SCAN_MAX || (s->index && 2 * want <= s->index_cap))
      return;
   size_t cap = s->index_cap ? s->index_cap : 64;
   while (cap < 2 * want)
      cap *= 2;
   uint32_t *index = want < UINT32_MAX / 2 ? calloc(cap, sizeof(*index))
                                           : NULL;
   free(s->index);
   s->index = index;
   s->index_cap = index ? cap : 0;
   for (size_t e = 0; index && e < s->list_count; e++)
      index_put(s, e);
}

static struct list_entry *
find_entry(const struct cohmap_submit *s, const struct cohmap_bo *bo)
{
   if (!s->index) {
      for (size_t i = 0; i < s->list_count; i++) {
         if (s->list[i].bo == bo)
            return &s->list[i];
      }
      return NULL;
   }
   for (size_t i = bo_hash(bo, s->index_cap); s->index[i];
        i = (i + 1) & (s->index_cap - 1)) {
      struct list_entry *e = &s->list[s->index[i] - 1];
      if (e->bo == bo)
         return e;
   }
   return NULL;
}

static int
grow(void **v, size_t *cap, size_t count, size_t elem)
{
   if (count < *cap)
      return 0;
   size_t ncap = *cap ? *cap * 2 : 16;
   void *n = realloc(*v, ncap * elem);
   if (!n)
      return -ENOMEM;
   *v = n;
   *cap = ncap;
   return 0;
}

COHMAP_EXPORT int
cohmap_submit_begin(struct cohmap_device *dev, struct cohmap_submit **out)
{
   if (!out)
      return cohmap_errorf(-EINVAL, "out is NULL");
   *out = NULL;
   if (!dev)
      return cohmap_errorf(-EINVAL, "device is NULL");
   struct cohmap_submit *s = calloc(1, sizeof(*s));
   if (!s)
      return cohmap_errorf(-ENOMEM, "out of memory");
   s->dev = dev;
   *out = s;
   return 0;
}

static int
record_error(struct cohmap_submit *s, int err)
{
   if (!s->error)
      s->error = err;
   return err;
}

COHMAP_EXPORT int
cohmap_submit_add_bo(struct cohmap_submit *s, struct cohmap_bo *bo,
                     uint32_t access)
{
   if (!s)
      return cohmap_errorf(-EINVAL, "submission is NULL");
   if (!cohmap_bo_valid(bo) || bo->dev != s->dev)
      return record_error(s, cohmap_errorf(-EINVAL, "%p is not a live BO "
                                           "of this device", (void *)bo));
   if (!access || (access & ~(COHMAP_ACCESS_READ | COHMAP_ACCESS_WRITE)))
      return record_error(s, cohmap_errorf(-EINVAL, "bad access 0x%x",
                                           access));

   struct list_entry *e = find_entry(s, bo);
   if (e) {
      e->access |= access;
      return 0;
   }
   if (grow((void **)&s->list, &s->list_cap, s->list_count,
            sizeof(*s->list)))
      return record_error(s, cohmap_errorf(-ENOMEM, "out of memory"));
   index_reserve(s);
   cohmap_bo_ref(bo);
   s->list[s->list_count++] = (struct list_entry){bo, access};
   if (s->index)
      index_put(s, s->list_count - 1);
   return 0;
}

static int
check_range(struct cohmap_submit *s, const char *what, struct cohmap_bo *bo,
            size_t offset, size_t size)
{
   if (!cohmap_bo_valid(bo) || bo->dev != s->dev)
      return cohmap_errorf(-EINVAL, "%s: %p is not a live BO of this "
                           "device", what, (void *)bo);
   if (offset > bo->size || size > bo->size - offset)
      return cohmap_errorf(-EINVAL, "%s: %zu bytes at %zu are outside the "
                           "BO (%zu bytes)", what, size, offset, bo->size);
   return 0;
}

static int
add_cmd(struct cohmap_submit *s, const struct cmd_rec *c)
{
   if (grow((void **)&s->cmds, &s->cmd_cap, s->cmd_count, sizeof(*s->cmds)))
      return cohmap_errorf(-ENOMEM, "out of memory");
   s->cmds[s->cmd_count++] = *c;
   return 0;
}

static bool
overlap(size_t a, size_t b, size_t n)
{
   return a < b + n && b < a + n;
}

COHMAP_EXPORT int
cohmap_cmd_copy(struct cohmap_submit *s, struct cohmap_bo *dst,
                size_t dst_offset, struct cohmap_bo *src, size_t src_offset,
                size_t size)
{
   if (!s)
      return cohmap_errorf(-EINVAL, "submission is NULL");
   int ret = check_range(s, "copy destination", dst, dst_offset, size);
   if (!ret)
      ret = check_range(s, "copy source", src, src_offset, size);
   if (!ret)
      ret = add_cmd(s, &(struct cmd_rec){
                          .type = COHMAP_CMD_COPY, .dst = dst, .src = src,
                          .dst_offset = dst_offset, .src_offset = src_offset,
                          .size = size});
   return ret ? record_error(s, ret) : 0;
}

COHMAP_EXPORT int
cohmap_cmd_fill(struct cohmap_submit *s, struct cohmap_bo *dst,
                size_t offset, size_t size, uint32_t pattern)
{
   if (!s)
      return cohmap_errorf(-EINVAL, "submission is NULL");
   int ret = check_range(s, "fill", dst, offset, size);
   if (!ret && (offset % 4 || size % 4))
      ret = cohmap_errorf(-EINVAL, "fill: offset %zu and size %zu must be "
                          "multiples of 4", offset, size);
   if (!ret)
      ret = add_cmd(s, &(struct cmd_rec){.type = COHMAP_CMD_FILL,
                                         .dst = dst, .dst_offset = offset,
                                         .size = size, .value = pattern});
   return ret ? record_error(s, ret) : 0;
}

COHMAP_EXPORT int
cohmap_cmd_write(struct cohmap_submit *s, struct cohmap_bo *dst,
                 size_t offset, const void *data, size_t size)
{
   if (!s)
      return cohmap_errorf(-EINVAL, "submission is NULL");
   int ret = check_range(s, "write", dst, offset, size);
   if (!ret && size > MAX_WRITE_SIZE)
      ret = cohmap_errorf(-EINVAL, "write: %zu bytes, at most %d", size,
                          MAX_WRITE_SIZE);
   if (!ret && size && !data)
      ret = cohmap_errorf(-EINVAL, "write: data is NULL");
   void *copy = NULL;
   if (!ret && size) {
      copy = malloc(size);
      if (!copy)
         ret = cohmap_errorf(-ENOMEM, "out of memory");
      else
         memcpy(copy, data, size);
   }
   if (!ret)
      ret = add_cmd(s, &(struct cmd_rec){.type = COHMAP_CMD_WRITE,
                                         .dst = dst, .dst_offset = offset,
                                         .size = size, .data = copy});
   if (ret)
      free(copy);
   return ret ? record_error(s, ret) : 0;
}

COHMAP_EXPORT int
cohmap_cmd_checksum(struct cohmap_submit *s, struct cohmap_bo *dst,
                    size_t dst_offset, struct cohmap_bo *src,
                    size_t src_offset, size_t size)
{
   if (!s)
      return cohmap_errorf(-EINVAL, "submission is NULL");
   int ret = check_range(s, "checksum source", src, src_offset, size);
   if (!ret)
      ret = check_range(s, "checksum result", dst, dst_offset,
                        sizeof(uint64_t));
   if (!ret)
      ret = add_cmd(s, &(struct cmd_rec){
                          .type = COHMAP_CMD_CHECKSUM, .dst = dst,
                          .src = src, .dst_offset = dst_offset,
                          .src_offset = src_offset, .size = size});
   return ret ? record_error(s, ret) : 0;
}

COHMAP_EXPORT int
cohmap_cmd_compute(struct cohmap_submit *s, enum cohmap_compute_op op,
                   struct cohmap_bo *dst, size_t dst_offset,
                   struct cohmap_bo *src, size_t src_offset, size_t size,
                   uint32_t operand)
{
   if (!s)
      return cohmap_errorf(-EINVAL, "submission is NULL");
   int ret = 0;
   if (op != COHMAP_COMPUTE_ADD32 && op != COHMAP_COMPUTE_XOR32)
      ret = cohmap_errorf(-EINVAL, "compute: unknown op %d", (int)op);
   if (!ret)
      ret = check_range(s, "compute destination", dst, dst_offset, size);
   if (!ret)
      ret = check_range(s, "compute source", src, src_offset, size);
   if (!ret && (dst_offset % 4 || src_offset % 4 || size % 4))
      ret = cohmap_errorf(-EINVAL, "compute: offsets and size must be "
                          "multiples of 4");
   if (!ret && dst == src && dst_offset != src_offset &&
       overlap(dst_offset, src_offset, size))
      ret = cohmap_errorf(-EINVAL, "compute: source and destination "
                          "partly overlap");
   if (!ret)
      ret = add_cmd(s, &(struct cmd_rec){
                          .type = COHMAP_CMD_COMPUTE, .dst = dst,
                          .src = src, .dst_offset = dst_offset,
                          .src_offset = src_offset, .size = size,
                          .value = operand, .op = (uint32_t)op});
   return ret ? record_error(s, ret) : 0;
}

static void
submit_free(struct cohmap_submit *s, bool drop_refs)
{
   if (drop_refs) {
      for (size_t i = 0; i < s->list_count; i++)
         cohmap_bo_unref(s->list[i].bo);
   }
   for (size_t i = 0; s->cmds && i < s->cmd_count; i++)
      free(s->cmds[i].data);
   free(s->cmds);
   free(s->list);
   free(s->index);
   free(s);
}

COHMAP_EXPORT void
cohmap_submit_abort(struct cohmap_submit *s)
{
   if (s)
      submit_free(s, true);
}

static const char *
cmd_name(enum cohmap_cmd_type t)
{
   switch (t) {
   case COHMAP_CMD_COPY: return "copy";
   case COHMAP_CMD_FILL: return "fill";
   case COHMAP_CMD_WRITE: return "write";
   case COHMAP_CMD_CHECKSUM: return "checksum";
   case COHMAP_CMD_COMPUTE: return "compute";
   }
   return "?";
}

/* Step 1: every BO a command touches is listed with the access it needs
 * and still alive. */
static int
validate(const struct cohmap_submit *s)
{
   for (size_t i = 0; i < s->list_count; i++) {
      if (atomic_load(&s->list[i].bo->destroyed))
         return cohmap_errorf(-EINVAL, "BO %p in the buffer list was "
                              "destroyed", (void *)s->list[i].bo);
   }
   for (size_t i = 0; i < s->cmd_count; i++) {
      const struct cmd_rec *c = &s->cmds[i];
      const struct list_entry *e = find_entry(s, c->dst);
      if (!e || !(e->access & COHMAP_ACCESS_WRITE))
         return cohmap_errorf(-EINVAL, "command %zu (%s) writes BO %p, "
                              "which is not in the buffer list with "
                              "COHMAP_ACCESS_WRITE", i, cmd_name(c->type),
                              (void *)c->dst);
      if (!(c->dst->flags & COHMAP_BO_GPU_WRITE))
         return cohmap_errorf(-EINVAL, "command %zu (%s) writes BO %p, "
                              "which was created without "
                              "COHMAP_BO_GPU_WRITE", i, cmd_name(c->type),
                              (void *)c->dst);
      if (c->src) {
         e = find_entry(s, c->src);
         if (!e || !(e->access & COHMAP_ACCESS_READ))
            return cohmap_errorf(-EINVAL, "command %zu (%s) reads BO %p, "
                                 "which is not in the buffer list with "
                                 "COHMAP_ACCESS_READ", i, cmd_name(c->type),
                                 (void *)c->src);
      }
   }
   return 0;
}

void
cohmap_inflight_free(struct cohmap_inflight *f)
{
   if (!f)
      return;
   /* Before the references go: a block may go with them. */
   cohmap_verify_unregister(f);
   for (size_t i = 0; i < f->bo_count; i++)
      cohmap_bo_unref(f->bos[i]);
   for (size_t i = 0; i < f->write_count; i++)
      cohmap_ranges_fini(&f->writes[i].ranges);
   for (size_t i = 0; i < f->payload_count; i++)
      free(f->payloads[i]);
   free(f->bos);
   free(f->writes);
   free(f->payloads);
   free(f);
}

/* The inflight record: the BO references move from s into it. */
static int
build_inflight(struct cohmap_submit *s, struct cohmap_inflight **out)
{
   struct cohmap_inflight *f = calloc(1, sizeof(*f));
   if (!f)
      return -ENOMEM;
   f->bos = malloc((s->list_count ? s->list_count : 1) * sizeof(*f->bos));
   f->writes = calloc(s->list_count ? s->list_count : 1, sizeof(*f->writes));
   f->payloads = malloc((s->cmd_count ? s->cmd_count : 1) *
                        sizeof(*f->payloads));
   if (!f->bos || !f->writes || !f->payloads)
      goto fail;

   /* One write set per coherent BO listed for writing: merging is what
    * makes their GPU writes visible.  Non-coherent BOs wait for an
    * explicit cohmap_bo_invalidate(). */
   for (size_t i = 0; i < s->list_count; i++) {
      const struct list_entry *e = &s->list[i];
      if (!(e->access & COHMAP_ACCESS_WRITE) || !e->bo->block->region)
         continue;
      struct cohmap_write_set *w = &f->writes[f->write_count++];
      w->bo = e->bo;
      cohmap_ranges_init(&w->ranges);
      for (size_t j = 0; j < s->cmd_count; j++) {
         const struct cmd_rec *c = &s->cmds[j];
         if (c->dst != e->bo)
            continue;
         size_t n = c->type == COHMAP_CMD_CHECKSUM ? sizeof(uint64_t)
                                                   : c->size;
         if (cohmap_ranges_add(&w->ranges, c->dst_offset, n))
            goto fail;
      }
      cohmap_ranges_normalize(&w->ranges);
   }

   for (size_t i = 0; i < s->list_count; i++)
      f->bos[i] = s->list[i].bo;
   f->bo_count = s->list_count;
   *out = f;
   return 0;

fail:
   for (size_t i = 0; f->writes && i < f->write_count; i++)
      cohmap_ranges_fini(&f->writes[i].ranges);
   free(f->bos);
   free(f->writes);
   free(f->payloads);
   free(f);
   return -ENOMEM;
}

static int
block_cmp(const void *a, const void *b)
{
   uintptr_t x = (uintptr_t)*(struct cohmap_block *const *)a;
   uintptr_t y = (uintptr_t)*(struct cohmap_block *const *)b;
   return (x > y) - (x < y);
}

/* Step 2: each distinct coherent block once. */
static int
flush_blocks(struct cohmap_submit *s)
{
   if (!s->list_count)
      return 0;
   struct cohmap_block **blocks = malloc(s->list_count * sizeof(*blocks));
   if (!blocks)
      return cohmap_errorf(-ENOMEM, "out of memory");
   size_t n = 0;
   for (size_t i = 0; i < s->list_count; i++) {
      if (s->list[i].bo->block->region)
         blocks[n++] = s->list[i].bo->block;
   }
   qsort(blocks, n, sizeof(*blocks), block_cmp);
   int ret = 0;
   for (size_t i = 0; i < n && !ret; i++) {
      if (i && blocks[i] == blocks[i - 1])
         continue;
      ret = cohmap_block_flush(blocks[i]);
   }
   free(blocks);
   return ret;
}

COHMAP_EXPORT int
cohmap_submit_end(struct cohmap_submit *s, struct cohmap_fence **fence)
{
   if (fence)
      *fence = NULL;
   if (!s)
      return cohmap_errorf(-EINVAL, "submission is NULL");

   struct cohmap_device *dev = s->dev;
   struct cohmap_inflight *f = NULL;
   struct cohmap_fence *fe = NULL;
   struct cohmap_dev_cmd *dcmds = NULL;
   int ret = s->error;
   if (ret) {
      cohmap_errorf(ret, "submission refused: a command or buffer could "
                    "not be recorded");
      goto fail;
   }
   ret = validate(s);
   if (ret)
      goto fail;

   /* Everything that can fail for lack of memory comes before the
    * upload, so that a refused submission changed nothing. */
   if (fence && !(fe = calloc(1, sizeof(*fe)))) {
      ret = cohmap_errorf(-ENOMEM, "out of memory");
      goto fail;
   }
   dcmds = calloc(s->cmd_count ? s->cmd_count : 1, sizeof(*dcmds));
   if (!dcmds || build_inflight(s, &f)) {
      ret = cohmap_errorf(-ENOMEM, "out of memory");
      goto fail;
   }
   for (size_t i = 0; i < s->cmd_count; i++) {
      const struct cmd_rec *c = &s->cmds[i];
      dcmds[i] = (struct cohmap_dev_cmd){
         .type = c->type,
         .dst = c->dst->block->mem,
         .dst_offset = c->dst->offset + c->dst_offset,
         .src = c->src ? c->src->block->mem : NULL,
         .src_offset = c->src ? c->src->offset + c->src_offset : 0,
         .size = c->size,
         .value = c->value,
         .op = c->op,
         .data = c->data,
      };
   }

   ret = cohmap_verify_register(f);
   if (ret)
      goto fail;
   ret = flush_blocks(s);
   if (ret)
      goto fail;

   /* Payloads belong to the inflight record from here on (the backend
    * reads them until completion; inflight_free() releases them on the
    * failure path too). */
   for (size_t i = 0; i < s->cmd_count; i++) {
      if (s->cmds[i].data)
         f->payloads[f->payload_count++] = s->cmds[i].data;
      s->cmds[i].data = NULL;
   }

   /* The BOs are alive while s holds their references; once f is queued
    * another thread's retirement may merge and free it, and drop them, at
    * any moment: nothing below may touch f or the BOs. */
   for (size_t i = 0; i < s->list_count; i++) {
      struct cohmap_bo *bo = s->list[i].bo;
      pthread_mutex_lock(&bo->block->lock);
      bo->stats.submissions++;
      pthread_mutex_unlock(&bo->block->lock);
   }

   uint64_t seqno = 0;
   pthread_mutex_lock(&dev->lock);
   ret = dev->ops->submit(dev->backend, dcmds, s->cmd_count, &f->seqno);
   if (ret == 0) {
      seqno = f->seqno;
      *dev->inflight_tail = f;
      dev->inflight_tail = &f->next;
      if (fe)
         dev->live_fences++;
   }
   pthread_mutex_unlock(&dev->lock);
   if (ret)
      goto fail;
   f = NULL;

   atomic_fetch_add(&dev->submissions, 1);
   if (fe) {
      fe->dev = dev;
      fe->seqno = seqno;
      *fence = fe;
   }
   free(dcmds);
   submit_free(s, false); /* references moved to f */
   /* Retire what completed meanwhile; its errors belong to whoever waits. */
   cohmap_device_retire(dev);
   return 0;

fail:
   if (f) {
      /* Its references are still the submission's. */
      f->bo_count = 0;
      cohmap_inflight_free(f);
   }
   free(dcmds);
   free(fe);
   submit_free(s, true);
   return ret;
}

int
cohmap_device_retire(struct cohmap_device *dev)
{
   int ret = 0;

   pthread_mutex_lock(&dev->merge_lock);
   uint64_t completed = dev->ops->completed(dev->backend);
   for (;;) {
      pthread_mutex_lock(&dev->lock);
      struct cohmap_inflight *f = dev->inflight_head;
      pthread_mutex_unlock(&dev->lock);
      if (!f || f->seqno > completed)
         break;

      /* Only retirement removes records, and it is serialized by
       * merge_lock: f stays at the head while it is merged. */
      for (size_t i = 0; i < f->write_count && !ret; i++) {
         struct cohmap_write_set *w = &f->writes[i];
         if (atomic_load(&w->bo->destroyed))
            continue; /* writes to a released BO are dropped */
         ret = cohmap_bo_readback(w->bo, w->ranges.v, w->ranges.count);
      }
      if (ret)
         break; /* kept: the next wait retries the merge */

      pthread_mutex_lock(&dev->lock);
      dev->inflight_head = f->next;
      if (!dev->inflight_head)
         dev->inflight_tail = &dev->inflight_head;
      pthread_mutex_unlock(&dev->lock);
      dev->retired = f->seqno;
      cohmap_inflight_free(f);
   }
   pthread_mutex_unlock(&dev->merge_lock);
   return ret;
}

COHMAP_EXPORT int
cohmap_fence_poll(struct cohmap_fence *fence)
{
   if (!fence)
      return cohmap_errorf(-EINVAL, "fence is NULL");
   struct cohmap_device *dev = fence->dev;
   if (dev->ops->completed(dev->backend) < fence->seqno)
      return -EBUSY;
   return cohmap_device_retire(dev);
}

COHMAP_EXPORT int
cohmap_fence_wait(struct cohmap_fence *fence, uint64_t timeout_ns)
{
   if (!fence)
      return cohmap_errorf(-EINVAL, "fence is NULL");
   struct cohmap_device *dev = fence->dev;
   int ret = dev->ops->wait(dev->backend, fence->seqno, timeout_ns);
   if (ret)
      return ret;
   return cohmap_device_retire(dev);
}

COHMAP_EXPORT void
cohmap_fence_destroy(struct cohmap_fence *fence)
{
   if (!fence)
      return;
   struct cohmap_device *dev = fence->dev;
   pthread_mutex_lock(&dev->lock);
   dev->live_fences--;
   pthread_mutex_unlock(&dev->lock);
   free(fence);
}
