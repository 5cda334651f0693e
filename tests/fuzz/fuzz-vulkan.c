/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * fuzz-vulkan: the Vulkan layer's entry points in arbitrary, valid call
 * orders (issue 7), on the real loader and lavapipe with the layer from
 * the build tree, checked against a byte-exact model of every memory.
 *
 * The mode is the environment's, as for any application: COHMAP_MODE and
 * COHMAP_VK_PRETEND are read by the layer when the instance is created,
 * which happens once per process (in the first input; libFuzzer calls the
 * target many times), so tests/fuzz/meson.build runs one test per mode.
 * Every object an input creates is destroyed before it returns, so inputs
 * are independent; the instance, device, command pool, timeline semaphore
 * and event stay (vk-util.c's).
 *
 * Calls, each clamped to valid usage: vkAllocateMemory (sizes that are
 * and are not page or word multiples, up to 1 MiB, at most MAX_MEMS
 * live) with a TRANSFER_SRC (| TRANSFER_DST) buffer bound at 0, the
 * memory sometimes larger than the buffer; vkFreeMemory (mapped or not,
 * before or after destroying the buffer); vkMapMemory (whole, at an
 * offset, with a size or VK_WHOLE_SIZE) and vkUnmapMemory; CPU stores
 * and loads through the mapping; vkFlushMappedMemoryRanges and
 * vkInvalidateMappedMemoryRanges on atom-aligned ranges inside the
 * mappings; command buffers of vkCmdCopyBuffer (between buffers, or within
 * one without overlap), vkCmdFillBuffer and vkCmdUpdateBuffer, separated
 * by transfer barriers, submitted with vkQueueSubmit or vkQueueSubmit2,
 * with a fence and sometimes a timeline semaphore signal and an event;
 * and the host observing completion by vkWaitForFences, polling
 * vkGetFenceStatus, vkQueueWaitIdle, vkDeviceWaitIdle, vkWaitSemaphores,
 * polling vkGetSemaphoreCounterValue or polling vkGetEventStatus.
 *
 * The model, and the contract it encodes (docs/vulkan.md): each memory
 * has the bytes it must hold (expect) and whether they are known (new
 * memory is undefined; a GPU copy of unknown bytes is unknown).
 *
 *  1. At most one submission is in flight.  Its commands are applied to
 *     the model when it is submitted: every CPU store before it is visible
 *     to it, and while it runs the CPU stores no byte it reads or writes
 *     (that would be a data race with an undefined result).  The CPU may
 *     store other bytes, of the same pages too: a coherent mapping must
 *     keep both sides' bytes exactly.
 *  2. What the GPU writes is visible to the CPU once the host observed
 *     completion.  Until then loads of those bytes are not checked; every
 *     other mapped byte is, at any time.
 *  3. Right after an observation, before any other call that could make
 *     the layer merge, every mapped byte must equal the model.  vkMapMemory
 *     must show the model too (data persists across unmap and map,
 *     including what the GPU wrote meanwhile), and at the end of the input
 *     each memory is unmapped, mapped whole and compared byte for byte.
 *
 * A difference prints the operation's index and name, the memory, the
 * offset, the expected and the actual byte, and aborts (libFuzzer saves
 * the input).  In the replays the validation layer sits below the cohmap
 * layer as in tests/vulkan, and any message it prints is a failure.  In
 * the layer's modes it sees the layer's own calls to the driver; the
 * application's calls the layer answers itself (a flush of shadowed
 * memory) reach it only in mode auto, pass-through on lavapipe, whose
 * replay thus checks that the sequences are valid usage — the contract
 * says nothing about invalid ones.  The libFuzzer build leaves validation
 * out (FUZZ_VULKAN_NO_VALIDATION) for speed: measured on the corpus of a
 * long run, it costs 20-30% per input in shadow mode and 4x in
 * device-local mode (whose maps and submissions add the layer's own
 * staging copies, fences and waits, all validated).  Replaying a run's
 * corpus with fuzz-replay-vulkan checks its inputs under validation.
 *
 * Each operation is one byte and its arguments (fuzz.h: past the end of
 * the input every read is 0).
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "test-util.h"
#include "vk-util.h"

/* The model's byte loops (up to 8 MiB compared per check) are not what
 * the fuzzer should steer by, and with coverage instrumentation every
 * comparison calls into libFuzzer: they cost 4/5 of the run time. */
#if defined(__clang__) && __clang_major__ >= 13
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define NO_COVERAGE
#endif

#define MAX_MEMS   8
#define MAX_OPS    64
#define MAX_CMDS   4
#define MAX_RANGES (2 * MAX_CMDS)
#define UPDATE_MAX 65536 /* vkCmdUpdateBuffer's dataSize limit */

struct mem {
   bool live;
   unsigned id; /* tells a slot's memories apart in messages */
   VkDeviceMemory memory;
   VkBuffer buffer;
   VkDeviceSize size;     /* the allocation's */
   VkDeviceSize buf_size; /* the buffer's: what GPU commands reach */
   bool gpu_write;        /* the buffer has TRANSFER_DST */
   uint8_t *expect, *known;
   uint8_t *map; /* byte 0 of the memory as the mapping shows it */
   bool mapped;
   VkDeviceSize map_offset, map_size;
};

/* A byte range the submission in flight reads or writes. */
struct busy {
   unsigned slot;
   VkDeviceSize offset, length;
   bool write;
};

enum path {
   PATH_FENCE_WAIT,
   PATH_FENCE_POLL,
   PATH_QUEUE_IDLE,
   PATH_DEVICE_IDLE,
   PATH_TIMELINE_WAIT,
   PATH_TIMELINE_POLL,
   PATH_EVENT_POLL,
   PATH_COUNT,
};

static const char *const path_names[] = {
   [PATH_FENCE_WAIT] = "vkWaitForFences",
   [PATH_FENCE_POLL] = "vkGetFenceStatus",
   [PATH_QUEUE_IDLE] = "vkQueueWaitIdle",
   [PATH_DEVICE_IDLE] = "vkDeviceWaitIdle",
   [PATH_TIMELINE_WAIT] = "vkWaitSemaphores",
   [PATH_TIMELINE_POLL] = "vkGetSemaphoreCounterValue",
   [PATH_EVENT_POLL] = "vkGetEventStatus",
};

struct run {
   struct fuzz_input in;
   unsigned op;
   const char *op_name;
   struct mem mems[MAX_MEMS];
   unsigned next_id;
   struct tu_rng rng; /* data of stores and updates, seeded by the input */

   /* The submission in flight (rule 1). */
   bool flying;
   VkCommandBuffer cb;
   VkFence fence;
   bool timeline, event;
   uint64_t value;
   bool uses[MAX_MEMS];
   struct busy busy[MAX_RANGES];
   unsigned nbusy;
};

/* Per process: vk-util's instance and device, made in the first input. */
static struct {
   bool ready;
   struct vk vk;
   VkDeviceSize atom, map_align;
   const char *mode, *pretend;
   unsigned validation_seen;
} g;

static uint8_t update_data[UPDATE_MAX];

#define VKF(r, expr)                                                         \
   do {                                                                      \
      VkResult res_ = (expr);                                                \
      FUZZ_CHECK(res_ == VK_SUCCESS, "op %u (%s): %s = %d", (r)->op,         \
                 (r)->op_name, #expr, res_);                                 \
   } while (0)

/* --- process setup ------------------------------------------------------ */

static void
teardown(void)
{
   if (g.ready)
      vk_finish(&g.vk);
   g.ready = false;
}

static void
setup(void)
{
   /* The validation messages go to stdout (vk-util.c): not lost in a
    * buffer when a check aborts. */
   setvbuf(stdout, NULL, _IOLBF, 0);
   g.mode = getenv("COHMAP_MODE");
   g.pretend = getenv("COHMAP_VK_PRETEND");
   g.mode = g.mode && *g.mode ? g.mode : "auto";
   g.pretend = g.pretend && *g.pretend ? g.pretend : "nothing";
#ifdef FUZZ_VULKAN_NO_VALIDATION
   vk_no_validation = true; /* the libFuzzer build: see the top */
#endif
   /* Exits 77 (skip) without lavapipe or (when wanted) validation. */
   vk_require_machine();
   /* The harness enables the cohmap layer (and validation below it); the
    * environment says in which mode. */
   vk_force_layer = true;
   FUZZ_CHECK(vk_init(&g.vk, VK_CONFIG_ENV),
              "instance and device creation failed (mode %s, pretending "
              "%s)",
              g.mode, g.pretend);
   VkPhysicalDeviceProperties props;
   vkGetPhysicalDeviceProperties(g.vk.physical, &props);
   g.atom = props.limits.nonCoherentAtomSize;
   g.map_align = props.limits.minMemoryMapAlignment;
   FUZZ_CHECK(g.atom > 0 && g.map_align > 0, "limits");
   g.ready = true;
   atexit(teardown);
   fprintf(stderr,
           "fuzz-vulkan: COHMAP_MODE %s, pretending %s, validation %s, "
           "atom %" PRIu64 "\n",
           g.mode, g.pretend, vk_no_validation ? "off" : "on",
           (uint64_t)g.atom);
}

/* --- the model -------------------------------------------------------- */

NO_COVERAGE static bool
in_flight_range(const struct run *r, unsigned slot, VkDeviceSize b,
                bool writes_only, VkDeviceSize *end)
{
   for (unsigned i = 0; i < r->nbusy; i++) {
      const struct busy *x = &r->busy[i];
      if (x->slot != slot || (writes_only && !x->write))
         continue;
      if (b >= x->offset && b < x->offset + x->length) {
         if (end)
            *end = x->offset + x->length;
         return true;
      }
   }
   return false;
}

/* Compares [off, off + len) of the mapping with the model: known bytes
 * that no unobserved GPU command writes (rule 2). */
NO_COVERAGE static void
check_range(struct run *r, unsigned slot, VkDeviceSize off, VkDeviceSize len,
            const char *when)
{
   struct mem *m = &r->mems[slot];
   FUZZ_CHECK(m->mapped && off >= m->map_offset &&
                 off + len <= m->map_offset + m->map_size,
              "check outside the mapping");
   VkDeviceSize bad = 0, first = 0, last = 0;
   for (VkDeviceSize b = off; b < off + len; b++) {
      /* Whole equal chunks at once (the usual case). */
      if (b % 4096 == 0 && off + len - b >= 4096 &&
          !memcmp(m->map + b, m->expect + b, 4096)) {
         b += 4095;
         continue;
      }
      if (!m->known[b] || m->map[b] == m->expect[b])
         continue;
      if (r->flying && in_flight_range(r, slot, b, true, NULL))
         continue;
      if (!bad)
         first = b;
      last = b;
      bad++;
   }
   if (!bad)
      return;
   fprintf(stderr,
           "fuzz-vulkan: op %u (%s), %s: memory %u (slot %u, %" PRIu64
           " bytes, buffer %" PRIu64 "%s, mapped at %" PRIu64 "+%" PRIu64
           "): %" PRIu64 " bytes differ in %" PRIu64 "..%" PRIu64
           "; first at %" PRIu64
           ": expected 0x%02x, got 0x%02x; last at %" PRIu64
           ": expected 0x%02x, got 0x%02x (mode %s, pretending %s)\n",
           r->op, r->op_name, when, m->id, slot, (uint64_t)m->size,
           (uint64_t)m->buf_size, m->gpu_write ? "" : " read-only",
           (uint64_t)m->map_offset, (uint64_t)m->map_size, (uint64_t)bad,
           (uint64_t)off, (uint64_t)(off + len), (uint64_t)first,
           m->expect[first], m->map[first], (uint64_t)last, m->expect[last],
           m->map[last], g.mode, g.pretend);
   abort();
}

static void
check_mapped(struct run *r, const char *when)
{
   for (unsigned i = 0; i < MAX_MEMS; i++) {
      struct mem *m = &r->mems[i];
      if (m->live && m->mapped)
         check_range(r, i, m->map_offset, m->map_size, when);
   }
}

static void
check_validation(struct run *r)
{
   FUZZ_CHECK(vk_validation_messages == g.validation_seen,
              "op %u (%s): %u validation messages (printed above): the "
              "sequence is not valid usage, or the layer's own calls are "
              "not",
              r->op, r->op_name, vk_validation_messages - g.validation_seen);
}

/* --- memories --------------------------------------------------------- */

static struct mem *
pick(struct run *r, bool (*ok)(const struct run *, unsigned))
{
   unsigned start = fuzz_u8(&r->in) % MAX_MEMS;
   for (unsigned k = 0; k < MAX_MEMS; k++) {
      unsigned i = (start + k) % MAX_MEMS;
      if (r->mems[i].live && (!ok || ok(r, i)))
         return &r->mems[i];
   }
   return NULL;
}

static bool
is_mapped(const struct run *r, unsigned i)
{
   return r->mems[i].mapped;
}

static bool
is_unmapped(const struct run *r, unsigned i)
{
   return !r->mems[i].mapped;
}

static bool
is_idle(const struct run *r, unsigned i)
{
   return !(r->flying && r->uses[i]);
}

static bool
is_writable(const struct run *r, unsigned i)
{
   return r->mems[i].gpu_write;
}

static unsigned
slot_of(const struct run *r, const struct mem *m)
{
   return (unsigned)(m - r->mems);
}

static void
do_map(struct run *r, struct mem *m, VkDeviceSize offset, VkDeviceSize size)
{
   void *p = NULL;
   VKF(r, vkMapMemory(g.vk.device, m->memory, offset, size, 0, &p));
   FUZZ_CHECK(p, "op %u: vkMapMemory gave NULL", r->op);
   FUZZ_CHECK(((uintptr_t)p - offset) % g.map_align == 0,
              "op %u: vkMapMemory(offset %" PRIu64 ") = %p: pointer - "
              "offset not aligned to minMemoryMapAlignment %" PRIu64,
              r->op, (uint64_t)offset, p, (uint64_t)g.map_align);
   m->mapped = true;
   m->map = (uint8_t *)p - offset;
   m->map_offset = offset;
   m->map_size = size == VK_WHOLE_SIZE ? m->size - offset : size;
   /* The data persists: what the CPU stored before an unmap, and what
    * the GPU wrote while the memory was not mapped. */
   check_range(r, slot_of(r, m), m->map_offset, m->map_size,
               "right after vkMapMemory");
}

static void
do_unmap(struct run *r, struct mem *m)
{
   vkUnmapMemory(g.vk.device, m->memory);
   m->mapped = false;
   m->map = NULL;
}

static void
do_free(struct run *r, struct mem *m, bool buffer_first)
{
   (void)r;
   if (buffer_first)
      vkDestroyBuffer(g.vk.device, m->buffer, NULL);
   /* Mapped or not: vkFreeMemory unmaps. */
   vkFreeMemory(g.vk.device, m->memory, NULL);
   if (!buffer_first)
      vkDestroyBuffer(g.vk.device, m->buffer, NULL);
   free(m->expect);
   free(m->known);
   memset(m, 0, sizeof(*m));
}

static const VkDeviceSize buffer_sizes[] = {
   4,     256,   1000,  1001,   4096,   4100,    4097,
   12300, 65536, 65540, 200004, 262140, 1048576,
};

static void
op_alloc(struct run *r)
{
   unsigned slot = fuzz_u8(&r->in) % MAX_MEMS;
   uint8_t how = fuzz_u8(&r->in);
   uint8_t sb = fuzz_u8(&r->in);
   struct mem *m = &r->mems[slot];
   if (m->live)
      return;
   VkDeviceSize buf_size;
   if (sb < 128)
      buf_size =
         buffer_sizes[sb % (sizeof(buffer_sizes) / sizeof(buffer_sizes[0]))];
   else
      buf_size = 1 + fuzz_u16(&r->in) * (VkDeviceSize)(1 + sb % 4);
   /* Sometimes a buffer the GPU cannot write: the layer must not merge
    * it, and nothing may be lost for that. */
   bool gpu_write = how % 8 != 7;
   VkBufferCreateInfo bci = {
      .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
      .size = buf_size,
      .usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
               (gpu_write ? VK_BUFFER_USAGE_TRANSFER_DST_BIT : 0),
      .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
   };
   VkBuffer buffer;
   VKF(r, vkCreateBuffer(g.vk.device, &bci, NULL, &buffer));
   VkMemoryRequirements req;
   vkGetBufferMemoryRequirements(g.vk.device, buffer, &req);
   FUZZ_CHECK(req.memoryTypeBits & (1u << g.vk.host_type),
              "the buffer cannot use the host-visible type");
   /* Sometimes more memory than the buffer: bytes only the CPU reaches. */
   VkDeviceSize size = req.size + (how & 0x10 ? 64 * (how >> 5) + 3 : 0);
   VkMemoryAllocateInfo mai = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
      .allocationSize = size,
      .memoryTypeIndex = g.vk.host_type,
   };
   VkDeviceMemory memory;
   VKF(r, vkAllocateMemory(g.vk.device, &mai, NULL, &memory));
   VKF(r, vkBindBufferMemory(g.vk.device, buffer, memory, 0));

   memset(m, 0, sizeof(*m));
   m->live = true;
   m->id = ++r->next_id;
   m->memory = memory;
   m->buffer = buffer;
   m->size = size;
   m->buf_size = buf_size;
   m->gpu_write = gpu_write;
   m->expect = calloc(1, size);
   m->known = calloc(1, size); /* new memory is undefined */
   FUZZ_CHECK(m->expect && m->known, "out of memory");
   if (how & 0x08)
      do_map(r, m, 0, VK_WHOLE_SIZE);
}

static void
op_free(struct run *r)
{
   uint8_t how = fuzz_u8(&r->in);
   struct mem *m = pick(r, is_idle);
   if (m)
      do_free(r, m, how & 1);
}

static void
op_map(struct run *r)
{
   uint8_t how = fuzz_u8(&r->in);
   uint32_t a = fuzz_u32(&r->in), b = fuzz_u32(&r->in);
   struct mem *m = pick(r, is_unmapped);
   if (!m)
      return;
   VkDeviceSize offset = 0, size = VK_WHOLE_SIZE;
   switch (how % 4) {
   case 0:
      break;
   case 1:
      offset = a % m->size;
      break;
   case 2:
      offset = a % m->size;
      size = 1 + b % (m->size - offset);
      break;
   default:
      /* A page-aligned offset, a size that ends inside a page. */
      offset = (a % m->size) & ~(VkDeviceSize)4095;
      size = 1 + b % (m->size - offset);
      break;
   }
   do_map(r, m, offset, size);
}

static void
op_unmap(struct run *r)
{
   struct mem *m = pick(r, is_mapped);
   if (m)
      do_unmap(r, m);
}

/* --- the CPU ---------------------------------------------------------- */

/* A range inside the mapping of m: [*off, *off + *len). */
static void
pick_mapped_range(struct run *r, const struct mem *m, VkDeviceSize *off,
                  VkDeviceSize *len)
{
   uint8_t how = fuzz_u8(&r->in);
   uint32_t a = fuzz_u32(&r->in), b = fuzz_u32(&r->in);
   *off = m->map_offset + a % m->map_size;
   VkDeviceSize room = m->map_offset + m->map_size - *off;
   VkDeviceSize cap = how % 4 == 0 ? 16 : how % 4 == 1 ? 4096 : room;
   if (how % 4 == 3) {
      *off = m->map_offset; /* all of it */
      *len = m->map_size;
      return;
   }
   *len = 1 + b % (cap < room ? cap : room);
}

NO_COVERAGE static void
op_cpu_write(struct run *r)
{
   struct mem *m = pick(r, is_mapped);
   if (!m)
      return;
   unsigned slot = slot_of(r, m);
   VkDeviceSize off, len;
   pick_mapped_range(r, m, &off, &len);
   uint8_t style = fuzz_u8(&r->in);
   uint8_t value = fuzz_u8(&r->in);
   unsigned stride = 1 + style / 64 * (style / 64) * 7; /* 1, 8, 29, 64 */
   for (VkDeviceSize b = off; b < off + len; b += stride) {
      VkDeviceSize end;
      /* Rule 1: never a byte the submission in flight reads or writes. */
      if (r->flying && in_flight_range(r, slot, b, false, &end)) {
         b = end - stride; /* resumes at end (unsigned wrap is defined) */
         continue;
      }
      uint8_t v;
      switch (style % 4) {
      case 0:
         v = (uint8_t)tu_rng_next(&r->rng);
         break;
      case 1:
         v = value;
         break;
      case 2:
         /* The value it has: a store that changes nothing. */
         v = m->known[b] ? m->expect[b] : value;
         break;
      default:
         v = (uint8_t)(value + b);
         break;
      }
      m->map[b] = v;
      m->expect[b] = v;
      m->known[b] = 1;
   }
}

static void
op_cpu_read(struct run *r)
{
   uint8_t how = fuzz_u8(&r->in);
   struct mem *m = pick(r, is_mapped);
   if (!m)
      return;
   if (how & 1) {
      check_mapped(r, "loads of every mapping");
      return;
   }
   VkDeviceSize off, len;
   pick_mapped_range(r, m, &off, &len);
   check_range(r, slot_of(r, m), off, len, "CPU loads");
}

/* One flush or invalidate range inside m's mapping, valid for the
 * VkMappedMemoryRange rules: offset a multiple of nonCoherentAtomSize,
 * size one too or reaching the end of the memory, or VK_WHOLE_SIZE when
 * the mapping ends on an atom or at the end of the memory. */
static bool
pick_atom_range(struct run *r, const struct mem *m, VkMappedMemoryRange *out)
{
   VkDeviceSize atom = g.atom;
   uint8_t how = fuzz_u8(&r->in);
   uint32_t a = fuzz_u32(&r->in), b = fuzz_u32(&r->in);
   VkDeviceSize lo = (m->map_offset + atom - 1) / atom * atom;
   VkDeviceSize end = m->map_offset + m->map_size;
   if (lo >= end)
      return false;
   VkDeviceSize atoms = (end - lo + atom - 1) / atom;
   VkDeviceSize offset = lo + (a % atoms) * atom;
   VkDeviceSize size;
   bool end_ok = end == m->size || end % atom == 0;
   if (how % 3 == 0 && end_ok) {
      size = VK_WHOLE_SIZE;
   } else if (how % 3 == 1 && end == m->size) {
      /* To the end of the memory: need not be a multiple of the atom. */
      size = end - offset;
   } else {
      VkDeviceSize whole = (end - offset) / atom;
      if (!whole)
         return false;
      size = (1 + b % whole) * atom;
   }
   *out = (VkMappedMemoryRange){
      .sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
      .memory = m->memory,
      .offset = offset,
      .size = size,
   };
   return true;
}

static void
op_flush_invalidate(struct run *r)
{
   uint8_t how = fuzz_u8(&r->in);
   VkMappedMemoryRange ranges[3];
   uint32_t n = 0;
   for (unsigned i = 0; i < 1 + (how & 3) % 3u; i++) {
      struct mem *m = pick(r, is_mapped);
      if (m && pick_atom_range(r, m, &ranges[n]))
         n++;
   }
   if (!n)
      return;
   /* On coherent memory both change nothing; the next check would see a
    * byte that moved (an invalidate may merge the GPU's bytes of the
    * submission in flight early, which rule 2 allows). */
   if (how & 0x10) {
      r->op_name = "vkInvalidateMappedMemoryRanges";
      VKF(r, vkInvalidateMappedMemoryRanges(g.vk.device, n, ranges));
   } else {
      r->op_name = "vkFlushMappedMemoryRanges";
      VKF(r, vkFlushMappedMemoryRanges(g.vk.device, n, ranges));
   }
}

/* --- the GPU ---------------------------------------------------------- */

static void
busy_add(struct run *r, const struct mem *m, VkDeviceSize offset,
         VkDeviceSize length, bool write)
{
   FUZZ_CHECK(r->nbusy < MAX_RANGES, "busy ranges");
   unsigned slot = slot_of(r, m);
   r->busy[r->nbusy++] = (struct busy){slot, offset, length, write};
   r->uses[slot] = true;
}

NO_COVERAGE static void
model_copy(struct mem *dst, VkDeviceSize dst_off, const struct mem *src,
           VkDeviceSize src_off, VkDeviceSize size)
{
   /* Regions never overlap (valid usage), so memmove == memcpy. */
   memmove(dst->expect + dst_off, src->expect + src_off, size);
   memmove(dst->known + dst_off, src->known + src_off, size);
}

static void
barrier(VkCommandBuffer cb, VkAccessFlags dst_access,
        VkPipelineStageFlags dst_stage)
{
   VkMemoryBarrier mb = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
      .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
      .dstAccessMask = dst_access,
   };
   vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT, dst_stage, 0, 1,
                        &mb, 0, NULL, 0, NULL);
}

/* Records one command (and applies it to the model); false: none. */
static bool
record_cmd(struct run *r, VkCommandBuffer cb)
{
   uint8_t type = fuzz_u8(&r->in);
   uint32_t a = fuzz_u32(&r->in), b = fuzz_u32(&r->in);
   uint32_t c = fuzz_u32(&r->in);
   struct mem *dst = pick(r, is_writable);
   if (!dst)
      return false;

   switch (type % 4) {
   case 0:
   case 1: {
      /* vkCmdCopyBuffer: from another memory (type 0, unless it picks
       * dst), or within dst (type 1), regions apart. */
      struct mem *src = type % 4 == 0 ? pick(r, NULL) : dst;
      FUZZ_CHECK(src, "a live memory");
      VkDeviceSize room =
         dst->buf_size < src->buf_size ? dst->buf_size : src->buf_size;
      VkDeviceSize size, src_off, dst_off;
      if (src == dst) {
         if (dst->buf_size < 2)
            return false;
         size = 1 + a % (dst->buf_size / 2);
         /* src first or dst first, each anywhere that leaves room. */
         VkDeviceSize gap = dst->buf_size - 2 * size;
         VkDeviceSize lo = b % (gap + 1);
         VkDeviceSize hi = lo + size + c % (gap - lo + 1);
         src_off = type & 0x80 ? hi : lo;
         dst_off = type & 0x80 ? lo : hi;
      } else {
         size = 1 + a % (type & 0x40 ? room : (room < 256 ? room : 256));
         src_off = b % (src->buf_size - size + 1);
         dst_off = c % (dst->buf_size - size + 1);
      }
      VkBufferCopy region = {src_off, dst_off, size};
      vkCmdCopyBuffer(cb, src->buffer, dst->buffer, 1, &region);
      model_copy(dst, dst_off, src, src_off, size);
      busy_add(r, src, src_off, size, false);
      busy_add(r, dst, dst_off, size, true);
      return true;
   }
   case 2: {
      /* vkCmdFillBuffer: 4-byte aligned, or VK_WHOLE_SIZE. */
      VkDeviceSize words = dst->buf_size / 4;
      if (!words)
         return false;
      VkDeviceSize offset = 4 * (a % words);
      VkDeviceSize size = 4 * (1 + b % (words - offset / 4));
      bool whole = type & 0x80;
      if (whole)
         size = (dst->buf_size - offset) / 4 * 4;
      vkCmdFillBuffer(cb, dst->buffer, offset, whole ? VK_WHOLE_SIZE : size,
                      c);
      for (VkDeviceSize i = 0; i < size; i++) {
         dst->expect[offset + i] = (uint8_t)(c >> (8 * (i % 4)));
         dst->known[offset + i] = 1;
      }
      busy_add(r, dst, offset, size, true);
      return true;
   }
   default: {
      /* vkCmdUpdateBuffer: 4-byte aligned, at most 65536 bytes. */
      VkDeviceSize words = dst->buf_size / 4;
      if (!words)
         return false;
      VkDeviceSize offset = 4 * (a % words);
      VkDeviceSize room = words - offset / 4;
      VkDeviceSize max = type & 0x80 ? UPDATE_MAX / 4 : 16;
      VkDeviceSize size = 4 * (1 + b % (room < max ? room : max));
      tu_rng_fill(&r->rng, update_data, size);
      vkCmdUpdateBuffer(cb, dst->buffer, offset, size, update_data);
      memcpy(dst->expect + offset, update_data, size);
      memset(dst->known + offset, 1, size);
      busy_add(r, dst, offset, size, true);
      return true;
   }
   }
}

static void observe(struct run *r, enum path path);

static void
op_submit(struct run *r)
{
   uint8_t how = fuzz_u8(&r->in);
   uint8_t ncmds = 1 + fuzz_u8(&r->in) % MAX_CMDS;
   if (r->flying)
      observe(r, (enum path)(how % PATH_COUNT)); /* rule 1: one at a time */
   if (!pick(r, is_writable))
      return;

   VkCommandBufferAllocateInfo cai = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
      .commandPool = g.vk.pool,
      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
      .commandBufferCount = 1,
   };
   VkCommandBuffer cb;
   VKF(r, vkAllocateCommandBuffers(g.vk.device, &cai, &cb));
   VkCommandBufferBeginInfo bi = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
   };
   VKF(r, vkBeginCommandBuffer(cb, &bi));
   memset(r->uses, 0, sizeof(r->uses));
   r->nbusy = 0;
   for (unsigned i = 0; i < ncmds; i++) {
      /* Each command after the previous one's writes (the model applies
       * them in order). */
      if (i)
         barrier(cb,
                 VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                 VK_PIPELINE_STAGE_TRANSFER_BIT);
      record_cmd(r, cb);
   }
   /* Transfer writes → host reads: what lets the host read them. */
   barrier(cb, VK_ACCESS_HOST_READ_BIT, VK_PIPELINE_STAGE_HOST_BIT);
   r->event = how & 0x20;
   if (r->event) {
      VKF(r, vkResetEvent(g.vk.device, g.vk.event));
      vkCmdSetEvent(cb, g.vk.event, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT);
   }
   VKF(r, vkEndCommandBuffer(cb));

   VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
   VKF(r, vkCreateFence(g.vk.device, &fci, NULL, &r->fence));
   r->timeline = how & 0x40;
   r->value = r->timeline ? ++g.vk.timeline_value : 0;
   if (how & 0x80) {
      r->op_name = "vkQueueSubmit2";
      VkCommandBufferSubmitInfo cbi = {
         .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_SUBMIT_INFO,
         .commandBuffer = cb,
      };
      VkSemaphoreSubmitInfo ssi = {
         .sType = VK_STRUCTURE_TYPE_SEMAPHORE_SUBMIT_INFO,
         .semaphore = g.vk.timeline,
         .value = r->value,
         .stageMask = VK_PIPELINE_STAGE_2_ALL_COMMANDS_BIT,
      };
      VkSubmitInfo2 si = {
         .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO_2,
         .commandBufferInfoCount = 1,
         .pCommandBufferInfos = &cbi,
         .signalSemaphoreInfoCount = r->timeline ? 1 : 0,
         .pSignalSemaphoreInfos = &ssi,
      };
      VKF(r, vkQueueSubmit2(g.vk.queue, 1, &si, r->fence));
   } else {
      r->op_name = "vkQueueSubmit";
      VkTimelineSemaphoreSubmitInfo tsi = {
         .sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
         .signalSemaphoreValueCount = 1,
         .pSignalSemaphoreValues = &r->value,
      };
      VkSubmitInfo si = {
         .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
         .pNext = r->timeline ? &tsi : NULL,
         .commandBufferCount = 1,
         .pCommandBuffers = &cb,
         .signalSemaphoreCount = r->timeline ? 1 : 0,
         .pSignalSemaphores = &g.vk.timeline,
      };
      VKF(r, vkQueueSubmit(g.vk.queue, 1, &si, r->fence));
   }
   r->cb = cb;
   r->flying = true;
   /* Sometimes observed at once; otherwise later operations (stores to
    * other bytes, maps, flushes, ...) run while it is in flight. */
   if ((how & 0x18) == 0x18)
      observe(r, (enum path)(how % PATH_COUNT));
}

/* Rule 3: the host observes completion the way path says (another when
 * the submission lacks what it needs), every mapped byte is checked before
 * anything else could merge, then the submission is released. */
static void
observe(struct run *r, enum path path)
{
   if (!r->flying)
      return;
   if ((path == PATH_TIMELINE_WAIT || path == PATH_TIMELINE_POLL) &&
       !r->timeline)
      path = PATH_FENCE_WAIT;
   if (path == PATH_EVENT_POLL && !r->event)
      path = PATH_QUEUE_IDLE;
   const char *saved = r->op_name;
   r->op_name = path_names[path];

   VkResult res;
   switch (path) {
   case PATH_FENCE_WAIT:
      res = vkWaitForFences(g.vk.device, 1, &r->fence, VK_TRUE, UINT64_MAX);
      break;
   case PATH_FENCE_POLL:
      while ((res = vkGetFenceStatus(g.vk.device, r->fence)) == VK_NOT_READY)
         ;
      break;
   case PATH_QUEUE_IDLE:
      res = vkQueueWaitIdle(g.vk.queue);
      break;
   case PATH_DEVICE_IDLE:
      res = vkDeviceWaitIdle(g.vk.device);
      break;
   case PATH_TIMELINE_WAIT: {
      VkSemaphoreWaitInfo wi = {
         .sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO,
         .semaphoreCount = 1,
         .pSemaphores = &g.vk.timeline,
         .pValues = &r->value,
      };
      res = vkWaitSemaphores(g.vk.device, &wi, UINT64_MAX);
      break;
   }
   case PATH_TIMELINE_POLL: {
      uint64_t v = 0;
      while ((res = vkGetSemaphoreCounterValue(g.vk.device, g.vk.timeline,
                                               &v)) == VK_SUCCESS &&
             v < r->value)
         ;
      break;
   }
   default:
      while ((res = vkGetEventStatus(g.vk.device, g.vk.event)) ==
             VK_EVENT_RESET)
         ;
      if (res == VK_EVENT_SET)
         res = VK_SUCCESS;
      break;
   }
   FUZZ_CHECK(res == VK_SUCCESS, "op %u: %s = %d", r->op, r->op_name, res);
   r->flying = false; /* every byte is checked now */
   check_mapped(r, "right after the host observed completion");

   /* After an event the submission may still be pending. */
   VKF(r, vkWaitForFences(g.vk.device, 1, &r->fence, VK_TRUE, UINT64_MAX));
   vkDestroyFence(g.vk.device, r->fence, NULL);
   vkFreeCommandBuffers(g.vk.device, g.vk.pool, 1, &r->cb);
   r->fence = VK_NULL_HANDLE;
   r->cb = VK_NULL_HANDLE;
   r->nbusy = 0;
   memset(r->uses, 0, sizeof(r->uses));
   r->op_name = saved;
}

static void
op_observe(struct run *r)
{
   observe(r, (enum path)(fuzz_u8(&r->in) % PATH_COUNT));
}

/* --- the input -------------------------------------------------------- */

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
   if (!g.ready)
      setup();
   struct run r = {.in = {data, size, 0}, .op_name = "start"};
   tu_rng_seed(&r.rng, fuzz_u32(&r.in));
   g.validation_seen = vk_validation_messages;

   for (r.op = 0; r.op < MAX_OPS && !fuzz_done(&r.in); r.op++) {
      switch (fuzz_u8(&r.in) % 12) {
      case 0:
         r.op_name = "allocate";
         op_alloc(&r);
         break;
      case 1:
         r.op_name = "vkFreeMemory";
         op_free(&r);
         break;
      case 2:
         r.op_name = "vkMapMemory";
         op_map(&r);
         break;
      case 3:
         r.op_name = "vkUnmapMemory";
         op_unmap(&r);
         break;
      case 4:
      case 5:
         r.op_name = "CPU stores";
         op_cpu_write(&r);
         break;
      case 6:
         r.op_name = "CPU loads";
         op_cpu_read(&r);
         break;
      case 7:
         r.op_name = "flush/invalidate";
         op_flush_invalidate(&r);
         break;
      case 8:
      case 9:
         r.op_name = "submit";
         op_submit(&r);
         break;
      default:
         r.op_name = "observe";
         op_observe(&r);
         break;
      }
      check_validation(&r);
   }

   /* The end: the submission observed, then every memory unmapped,
    * mapped whole and compared (the driver's memory, in every mode), and
    * freed. */
   r.op_name = "end";
   observe(&r, (enum path)(fuzz_u8(&r.in) % PATH_COUNT));
   for (unsigned i = 0; i < MAX_MEMS; i++) {
      struct mem *m = &r.mems[i];
      if (!m->live)
         continue;
      if (m->mapped)
         do_unmap(&r, m);
      do_map(&r, m, 0, VK_WHOLE_SIZE);
      do_free(&r, m, i & 1);
   }
   check_validation(&r);
   return 0;
}
