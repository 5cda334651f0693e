/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * fuzz-region: random sequences of tracking-API calls (cohmap.h) checked
 * against the byte-exact write model of tests/common (tu_model): after
 * every collect, every byte that differs from what the previous collects
 * reported must be covered, the report must be as tight as the method
 * promises (exact bytes, 64-byte chunks, written pages plus fault's
 * widening, or the whole region), and the reported data must bring the
 * model's mirror to the memory byte for byte.
 *
 * Calls: region create and wrap (every method, flag and context setting,
 * memory another region already tracks), stores (new values, the same
 * values, fills, increments), collects, method switches, destroys, and
 * bad arguments (unknown methods and flags, size 0, unaligned pointers,
 * collect flags, a pointer that is no region), each of which must fail
 * with its documented error and change nothing.
 *
 * The first byte picks the context (method, NO_UFFD, AUTO_FAULT); then
 * each operation is one byte and its arguments.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cohmap/cohmap.h"
#include "fuzz.h"
#include "test-util.h"

#define SLOTS 4
#define MAX_OPS 96
#define MAX_PAGES 12
#define FAULT_WIDEN 16

enum next_expect {
   EXPECT_METHOD,   /* the method's own strictness */
   EXPECT_SWITCHED, /* right after a switch: carried ranges */
};

struct slot {
   struct cohmap_region *region;
   struct tu_model model;
   uint8_t *wrapped; /* caller memory (wrap), unmapped after destroy */
   size_t size;
   uint32_t flags;
   bool adaptive;    /* under the policy: any method at any collect */
   enum next_expect next;
   bool switch_full; /* full on either side of the last switch */
   unsigned collects; /* successful ones */
   bool initial_whole; /* INITIAL_DIRTY, not collected yet */
};

struct run {
   struct fuzz_input in;
   struct cohmap_context *ctx;
   bool policy; /* the context's default is AUTO: AUTO regions adapt */
   size_t page;
   struct slot slots[SLOTS];
};

static struct tu_expect
expect_for(struct run *r, struct slot *s)
{
   struct tu_expect e = {.kind = TU_EXPECT_SUPERSET};
   if (s->initial_whole) {
      /* INITIAL_DIRTY: the whole region, whatever the method. */
      e.kind = TU_EXPECT_WHOLE;
      return e;
   }
   if (s->adaptive)
      return e; /* the policy may switch at any collect */
   enum cohmap_method m = cohmap_region_method(s->region);
   struct tu_expect own = tu_expect_for(m, s->flags, FAULT_WIDEN,
                                        s->flags & COHMAP_REGION_ALLOW_THP);
   if (s->next == EXPECT_SWITCHED) {
      if (own.kind == TU_EXPECT_WHOLE)
         return own;
      /* As tests/track/test-switch.c: bounded by the written pages
       * (plus what fault may have unprotected ahead) unless full was on
       * either side, which collects everything. */
      e.within_written_pages = !s->switch_full;
      e.widen_pages = FAULT_WIDEN;
      e.block_size = own.block_size;
      return e;
   }
   (void)r;
   return own;
}

static void
slot_destroy(struct slot *s)
{
   int ret = cohmap_region_destroy(s->region);
   FUZZ_CHECK(ret == 0, "region_destroy: %d (%s)", ret,
              cohmap_error_message());
   tu_model_fini(&s->model);
   if (s->wrapped)
      tu_unmap(s->wrapped, s->size);
   memset(s, 0, sizeof(*s));
}

static uint32_t
pick_flags(struct run *r)
{
   uint8_t b = fuzz_u8(&r->in);
   uint32_t flags = b & 0x1f;
   /* One input in eight asks for an unknown flag. */
   if ((b >> 5) == 7)
      flags |= 1u << (5 + fuzz_u8(&r->in) % 27);
   return flags;
}

/* The error creating or wrapping with method m and flags must give, or 0. */
static int
expected_error(struct run *r, enum cohmap_method m, uint32_t flags)
{
   if (flags & ~0x1fu || (unsigned)m >= COHMAP_METHOD_COUNT)
      return -EINVAL;
   if (m == COHMAP_METHOD_AUTO || (flags & COHMAP_REGION_FALLBACK))
      return 0;
   return cohmap_context_method_status(r->ctx, m, NULL);
}

static void
op_create(struct run *r, bool wrap)
{
   unsigned i = fuzz_u8(&r->in) % SLOTS;
   struct slot *s = &r->slots[i];
   size_t pages = 1 + fuzz_u8(&r->in) % MAX_PAGES;
   uint8_t mb = fuzz_u8(&r->in);
   enum cohmap_method m = mb % 8 == 7 ? (enum cohmap_method)mb
                                      : (enum cohmap_method)(mb % 5);
   uint32_t flags = pick_flags(r);
   uint8_t bad = fuzz_u8(&r->in);
   struct cohmap_region *region = NULL;
   int ret, want = expected_error(r, m, flags);

   if (s->region)
      slot_destroy(s);
   size_t size = pages * r->page;
   uint8_t *mem = NULL;
   if (wrap) {
      mem = tu_map(size, r->page, false);
      FUZZ_CHECK(mem, "tu_map");
      memset(mem, bad, size);
      if (bad % 16 == 1) {
         /* Not page-aligned. */
         ret = cohmap_region_wrap(r->ctx, mem + 1, size - r->page, m, flags,
                                  &region);
         FUZZ_CHECK(ret == -EINVAL && !region, "unaligned wrap: %d", ret);
      } else if (bad % 16 == 2) {
         /* Memory another live region tracks: never two regions on it. */
         for (unsigned j = 0; j < SLOTS; j++) {
            struct slot *o = &r->slots[j];
            if (!o->region || want)
               continue;
            ret = cohmap_region_wrap(r->ctx, o->model.mem, r->page, m, flags,
                                     &region);
            FUZZ_CHECK(ret == -EBUSY && !region,
                       "wrap of tracked memory: %d", ret);
            break;
         }
      }
      ret = cohmap_region_wrap(r->ctx, mem, size, m, flags, &region);
   } else {
      if (bad % 16 == 1) {
         ret = cohmap_region_create(r->ctx, 0, m, flags, &region);
         FUZZ_CHECK(ret == -EINVAL && !region, "size 0: %d", ret);
      }
      /* Sizes are rounded up to whole pages. */
      size_t ask = size - (bad % 16 == 3 ? r->page - 1 : 0);
      ret = cohmap_region_create(r->ctx, ask, m, flags, &region);
   }
   FUZZ_CHECK(ret == want, "%s(method %d, flags %#x) = %d, expected %d (%s)",
              wrap ? "wrap" : "create", (int)m, flags, ret, want,
              cohmap_error_message());
   if (ret) {
      FUZZ_CHECK(!region, "out set on error");
      if (mem)
         tu_unmap(mem, size);
      return;
   }
   FUZZ_CHECK(cohmap_region_size(region) == size, "size %zu, expected %zu",
              cohmap_region_size(region), size);
   FUZZ_CHECK(!wrap || cohmap_region_ptr(region) == mem, "wrap ptr");
   FUZZ_CHECK(cohmap_region_method(region) != COHMAP_METHOD_AUTO,
              "region method AUTO");

   s->region = region;
   s->wrapped = mem;
   s->size = size;
   s->flags = flags;
   s->adaptive = m == COHMAP_METHOD_AUTO && r->policy;
   s->next = EXPECT_METHOD;
   FUZZ_CHECK(tu_model_init(&s->model, cohmap_region_ptr(region), size),
              "tu_model_init");
   if (flags & COHMAP_REGION_INITIAL_DIRTY) {
      /* The device has seen none of it: every byte must be reported. */
      tu_model_rewrite(&s->model, 0, size);
      s->initial_whole = true;
      for (size_t b = 0; b < size; b++)
         s->model.mirror[b] ^= 0xff;
   }
}

static struct slot *
pick_live(struct run *r)
{
   unsigned i = fuzz_u8(&r->in) % SLOTS;
   for (unsigned k = 0; k < SLOTS; k++) {
      struct slot *s = &r->slots[(i + k) % SLOTS];
      if (s->region)
         return s;
   }
   return NULL;
}

static void
op_write(struct run *r)
{
   struct slot *s = pick_live(r);
   if (!s)
      return;
   size_t off = fuzz_u32(&r->in) % s->size;
   size_t max = s->size - off < 3 * r->page ? s->size - off : 3 * r->page;
   size_t len = 1 + fuzz_u16(&r->in) % max;
   uint8_t kind = fuzz_u8(&r->in);
   uint8_t buf[256];

   switch (kind % 4) {
   case 0:
      /* Bytes of the input, repeated. */
      for (size_t i = 0; i < sizeof(buf); i++)
         buf[i] = fuzz_u8(&r->in) ^ (uint8_t)i;
      for (size_t done = 0; done < len;) {
         size_t n = len - done < sizeof(buf) ? len - done : sizeof(buf);
         tu_model_write(&s->model, off + done, buf, n);
         done += n;
      }
      break;
   case 1:
      tu_model_fill(&s->model, off, kind, len);
      break;
   case 2:
      tu_model_rewrite(&s->model, off, len);
      break;
   default:
      tu_model_bump(&s->model, off, len);
      break;
   }
}

static void
op_collect(struct run *r)
{
   struct slot *s = pick_live(r);
   if (!s)
      return;
   struct cohmap_dirty d;
   if (fuzz_u8(&r->in) % 8 == 0) {
      /* flags must be 0: refused, and nothing lost (checked below). */
      int ret = cohmap_region_collect(s->region, 1u << (fuzz_u8(&r->in) % 32),
                                      &d);
      FUZZ_CHECK(ret == -EINVAL && d.count == 0, "collect flags: %d", ret);
      ret = cohmap_region_collect(s->region, 0, NULL);
      FUZZ_CHECK(ret == -EINVAL, "collect NULL out: %d", ret);
   }
   struct tu_expect e = expect_for(r, s);
   FUZZ_CHECK(tu_model_collect(&s->model, s->region, &e, "fuzz-region"),
              "collect of a %s region (%#x, method %s, expect %d)",
              s->adaptive ? "policy" : "fixed", s->flags,
              cohmap_method_name(cohmap_region_method(s->region)), e.kind);
   s->next = EXPECT_METHOD;
   s->initial_whole = false;
   s->collects++;
}

static void
op_set_method(struct run *r)
{
   struct slot *s = pick_live(r);
   if (!s)
      return;
   uint8_t mb = fuzz_u8(&r->in);
   enum cohmap_method m = mb % 8 == 7 ? (enum cohmap_method)mb
                                      : (enum cohmap_method)(mb % 5);
   enum cohmap_method old = cohmap_region_method(s->region);
   int want = (unsigned)m >= COHMAP_METHOD_COUNT ? -EINVAL : 0;
   if (!want && m != COHMAP_METHOD_AUTO)
      want = cohmap_context_method_status(r->ctx, m, NULL);
   int ret = cohmap_region_set_method(s->region, m);
   if (want && ret == want)
      return;
   FUZZ_CHECK(ret == want, "set_method(%s -> %d) = %d, expected %d (%s)",
              cohmap_method_name(old), (int)m, ret, want,
              cohmap_error_message());
   enum cohmap_method now = cohmap_region_method(s->region);
   FUZZ_CHECK(now != COHMAP_METHOD_AUTO, "method AUTO after set_method");
   if (m != COHMAP_METHOD_AUTO)
      FUZZ_CHECK(now == m, "method %s after set_method(%s)",
                 cohmap_method_name(now), cohmap_method_name(m));
   s->adaptive = m == COHMAP_METHOD_AUTO && r->policy;
   if (now != old) {
      /* Two switches between collects: both sides of both count. */
      if (s->next != EXPECT_SWITCHED)
         s->switch_full = false;
      s->next = EXPECT_SWITCHED;
      s->switch_full |= old == COHMAP_METHOD_FULL ||
                        now == COHMAP_METHOD_FULL;
   }
}

static void
op_bad(struct run *r)
{
   static uint64_t not_a_region[64];
   struct cohmap_region *region = NULL;
   int ret;

   switch (fuzz_u8(&r->in) % 4) {
   case 0:
      ret = cohmap_region_destroy((struct cohmap_region *)not_a_region);
      FUZZ_CHECK(ret == -EBADF, "destroy of a non-region: %d", ret);
      break;
   case 1:
      ret = cohmap_region_create(r->ctx, r->page, COHMAP_METHOD_FULL, 0,
                                 NULL);
      FUZZ_CHECK(ret == -EINVAL, "create with NULL out: %d", ret);
      break;
   case 2:
      ret = cohmap_region_create(NULL, r->page, COHMAP_METHOD_FULL, 0,
                                 &region);
      FUZZ_CHECK(ret == -EINVAL && !region, "create with NULL ctx: %d", ret);
      break;
   default: {
      /* A context with live regions cannot go. */
      bool any = false;
      for (unsigned i = 0; i < SLOTS; i++)
         any |= r->slots[i].region != NULL;
      if (any) {
         ret = cohmap_context_destroy(r->ctx);
         FUZZ_CHECK(ret == -EBUSY, "context_destroy with regions: %d", ret);
      }
      break;
   }
   }
}

static void
op_stats(struct run *r)
{
   struct slot *s = pick_live(r);
   if (!s)
      return;
   struct cohmap_region_stats st;
   int ret = cohmap_region_get_stats(s->region, &st);
   FUZZ_CHECK(ret == 0, "get_stats: %d", ret);
   FUZZ_CHECK(st.collects >= s->collects, "stats: %llu collects, made %u",
              (unsigned long long)st.collects, s->collects);
   FUZZ_CHECK(cohmap_region_get_stats(s->region, NULL) == -EINVAL,
              "get_stats(NULL)");
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
   struct cohmap_context_options opts;

   uint8_t c = fuzz_u8(&r.in);
   cohmap_context_options_init(&opts);
   /* IGNORE_ENV: the developer's COHMAP_* settings must not change what
    * an input does; and the policy's calibration is skipped for the same
    * reason (COHMAP_DEBUG cannot be read). */
   opts.flags = COHMAP_CONTEXT_IGNORE_ENV;
   if (c & 0x08)
      opts.flags |= COHMAP_CONTEXT_NO_UFFD;
   if (c & 0x10)
      opts.flags |= COHMAP_CONTEXT_AUTO_FAULT;
   opts.default_method = (enum cohmap_method)(c % 8 < 5 ? c % 8 : 0);
   opts.fault_max_widen_pages = FAULT_WIDEN;
   int ret = cohmap_context_create(&opts, &r.ctx);
   FUZZ_CHECK(ret == 0, "context_create: %d (%s)", ret,
              cohmap_error_message());
   r.policy = opts.default_method == COHMAP_METHOD_AUTO;

   for (unsigned op = 0; op < MAX_OPS && !fuzz_done(&r.in); op++) {
      switch (fuzz_u8(&r.in) % 10) {
      case 0:
         op_create(&r, false);
         break;
      case 1:
         op_create(&r, true);
         break;
      case 2:
      case 3:
      case 4:
         op_write(&r);
         break;
      case 5:
      case 6:
         op_collect(&r);
         break;
      case 7:
         op_set_method(&r);
         break;
      case 8:
         op_bad(&r);
         break;
      default: {
         struct slot *s = pick_live(&r);
         if (s && fuzz_u8(&r.in) % 2)
            slot_destroy(s);
         else
            op_stats(&r);
         break;
      }
      }
   }

   /* Whatever is left must still be exact, then everything goes. */
   for (unsigned i = 0; i < SLOTS; i++) {
      struct slot *s = &r.slots[i];
      if (!s->region)
         continue;
      struct tu_expect e = expect_for(&r, s);
      FUZZ_CHECK(tu_model_collect(&s->model, s->region, &e, "fuzz-region"),
                 "final collect");
      slot_destroy(s);
   }
   ret = cohmap_context_destroy(r.ctx);
   FUZZ_CHECK(ret == 0, "context_destroy: %d", ret);
   return 0;
}
