/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: the simulated GPU
 *
 * A GPU that is as non-coherent as a GPU can be: its memory is separate
 * memory (one memfd per memory object, as in Mesa's drm-shim) that no CPU
 * mapping handed to the application aliases, and it only ever reads that
 * memory when it executes.  So a byte the winsys forgot to upload shows up
 * as a wrong result, never as a lucky one.
 *
 * Submissions go into a FIFO that one worker thread drains in order; after
 * the last command of submission N the worker publishes N as completed and
 * wakes the waiters.  Transfers run on the caller's thread.
 *
 * Races, and why they cannot hurt:
 *
 *  1. The worker holds exec_lock while it executes one command, and
 *     upload()/download() hold it for the whole call.  A command therefore
 *     sees every upload call either entirely or not at all, and a download
 *     never copies half of a command's output.  Commands of one submission
 *     may interleave with transfers between them; the winsys only uploads
 *     what a submission needs before submitting it, and downloads only
 *     after its completion.
 *  2. completed is stored (release) after the submission's last command,
 *     under queue_lock, then waiters are woken: a thread that reads
 *     completed >= N (acquire), with or without wait(), sees everything
 *     submission N wrote.
 *  3. The worker forgets a submission (and its memory pointers) before it
 *     publishes its completion, so the winsys may free memory objects as
 *     soon as completed() says their last user finished.
 *  4. WRITE data is read only by the worker, before completion; the caller
 *     owns it until then, so it is not copied.
 *
 * Knobs (docs/envvars.md) model a slow link: COHMAP_SIM_LATENCY_US and
 * COHMAP_SIM_BANDWIDTH_MBPS stretch transfers, COHMAP_SIM_EXEC_US makes
 * the GPU busy for a while per submission, so the CPU visibly runs on.
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cohmap/winsys.h"
#include "device/device.h"
#include "util/debug.h"
#include "util/log.h"
#include "util/time.h"
#include "util/tsan.h"

/* Ten seconds: any more and a test or a benchmark run by mistake with it
 * looks hung; a real link is microseconds. */
#define SIM_MAX_US 10000000ull
/* 1 TB/s: far above any real link, so every useful cap is accepted. */
#define SIM_MAX_MBPS 1000000ull

struct cohmap_dev_mem {
   void *map;
   size_t size;     /* what the caller asked for: the bounds of commands */
   size_t map_size; /* rounded up to pages */
   /* All live memory objects, so that destroy() can free what the caller
    * leaked (protected by mems_lock). */
   struct cohmap_dev_mem *prev, *next;
};

struct sim_job {
   struct sim_job *next;
   uint64_t seqno;
   size_t count;
   struct cohmap_dev_cmd cmds[];
};

struct cohmap_backend {
   /* Protects head, tail, submitted and stop; queue_cond wakes the worker,
    * done_cond (CLOCK_MONOTONIC) the waiters. */
   pthread_mutex_t queue_lock;
   pthread_cond_t queue_cond;
   pthread_cond_t done_cond;
   struct sim_job *head, *tail;
   uint64_t submitted;
   bool stop;
   _Atomic uint64_t completed;

   /* Serializes command execution with transfers (note 1 above). */
   pthread_mutex_t exec_lock;

   pthread_mutex_t mems_lock;
   struct cohmap_dev_mem *mems;

   pthread_t worker;

   uint64_t latency_ns;
   uint64_t bandwidth_mbps;
   uint64_t exec_ns;

   _Atomic uint64_t uploads, downloads;
   _Atomic uint64_t bytes_uploaded, bytes_downloaded;
   _Atomic uint64_t commands;
};

static void
sim_sleep_ns(uint64_t ns)
{
   struct timespec ts;

   if (ns == 0)
      return;

   /* An absolute deadline, so a signal interrupting the sleep does not
    * restart it from scratch. */
   uint64_t deadline = cohmap_now_ns() + ns;
   ts.tv_sec = (time_t)(deadline / 1000000000ull);
   ts.tv_nsec = (long)(deadline % 1000000000ull);
   while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
      ;
}

/* What one transfer of bytes costs on the simulated link. */
static uint64_t
sim_transfer_ns(const struct cohmap_backend *b, uint64_t bytes)
{
   uint64_t ns = b->latency_ns;

   if (b->bandwidth_mbps) {
      /* bytes / (mbps * 10^6) seconds, split so that bytes * 1000 cannot
       * overflow. */
      uint64_t mbps = b->bandwidth_mbps;
      ns += bytes / mbps * 1000 + bytes % mbps * 1000 / mbps;
   }
   return ns;
}

/* True if [offset, offset + size) lies inside mem. */
static bool
sim_in_bounds(const struct cohmap_dev_mem *mem, size_t offset, size_t size)
{
   return offset <= mem->size && size <= mem->size - offset;
}

static bool
sim_aligned4(size_t v)
{
   return (v & 3) == 0;
}

/* The winsys validates commands; this check exists so that a bug there
 * is reported at the submit that carries it, rather than corrupting
 * memory on the worker thread.  Returns NULL or what is wrong. */
static const char *
sim_cmd_problem(const struct cohmap_dev_cmd *c)
{
   bool reads_src = false;
   size_t dst_size = c->size;

   switch (c->type) {
   case COHMAP_CMD_COPY:
      reads_src = true;
      break;
   case COHMAP_CMD_FILL:
      if (!sim_aligned4(c->dst_offset) || !sim_aligned4(c->size))
         return "fill offset or size not a multiple of 4";
      break;
   case COHMAP_CMD_WRITE:
      if (c->size && !c->data)
         return "write without data";
      break;
   case COHMAP_CMD_CHECKSUM:
      reads_src = true;
      dst_size = sizeof(uint64_t);
      break;
   case COHMAP_CMD_COMPUTE:
      reads_src = true;
      if (c->op != COHMAP_COMPUTE_ADD32 && c->op != COHMAP_COMPUTE_XOR32)
         return "unknown compute op";
      if (!sim_aligned4(c->dst_offset) || !sim_aligned4(c->src_offset) ||
          !sim_aligned4(c->size))
         return "compute offset or size not a multiple of 4";
      break;
   default:
      return "unknown command type";
   }

   if (!c->dst)
      return "no destination memory";
   if (!sim_in_bounds(c->dst, c->dst_offset, dst_size))
      return "destination range outside its memory";
   if (reads_src) {
      if (!c->src)
         return "no source memory";
      if (!sim_in_bounds(c->src, c->src_offset, c->size))
         return "source range outside its memory";
   }
   /* Word by word in place is well defined for identical ranges only; a
    * real GPU gives no answer for partial overlap either.  (The sums
    * cannot overflow: both ranges are inside their memory.) */
   if (c->type == COHMAP_CMD_COMPUTE && c->dst == c->src &&
       c->dst_offset != c->src_offset &&
       c->dst_offset < c->src_offset + c->size &&
       c->src_offset < c->dst_offset + c->size)
      return "compute source and destination partly overlap";
   return NULL;
}

static uint32_t
sim_load_le32(const uint8_t *p)
{
   return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
          (uint32_t)p[3] << 24;
}

static void
sim_store_le32(uint8_t *p, uint32_t v)
{
   p[0] = (uint8_t)v;
   p[1] = (uint8_t)(v >> 8);
   p[2] = (uint8_t)(v >> 16);
   p[3] = (uint8_t)(v >> 24);
}

static void
sim_execute(const struct cohmap_dev_cmd *c)
{
   uint8_t *dst = (uint8_t *)c->dst->map + c->dst_offset;
   /* src is only meaningful for the commands that read it. */
   const uint8_t *src = NULL;

   if (c->type == COHMAP_CMD_COPY || c->type == COHMAP_CMD_CHECKSUM ||
       c->type == COHMAP_CMD_COMPUTE)
      src = (const uint8_t *)c->src->map + c->src_offset;

   switch (c->type) {
   case COHMAP_CMD_COPY:
      memmove(dst, src, c->size);
      break;
   case COHMAP_CMD_FILL:
      for (size_t i = 0; i < c->size; i += 4)
         sim_store_le32(dst + i, c->value);
      break;
   case COHMAP_CMD_WRITE:
      if (c->size)
         memcpy(dst, c->data, c->size);
      break;
   case COHMAP_CMD_CHECKSUM: {
      uint64_t sum = cohmap_checksum(src, c->size);
      for (unsigned i = 0; i < 8; i++)
         dst[i] = (uint8_t)(sum >> (8 * i));
      break;
   }
   case COHMAP_CMD_COMPUTE:
      /* Each word is read before it is written: dst may be src. */
      for (size_t i = 0; i < c->size; i += 4) {
         uint32_t v = sim_load_le32(src + i);
         v = c->op == COHMAP_COMPUTE_ADD32 ? v + c->value : v ^ c->value;
         sim_store_le32(dst + i, v);
      }
      break;
   }
}

static void *
sim_worker(void *arg)
{
   struct cohmap_backend *b = arg;

   pthread_mutex_lock(&b->queue_lock);
   for (;;) {
      while (!b->head && !b->stop)
         pthread_cond_wait(&b->queue_cond, &b->queue_lock);
      /* stop only ends the loop once the queue is drained: destroy()
       * waits for all work. */
      if (!b->head)
         break;

      struct sim_job *job = b->head;
      b->head = job->next;
      if (!b->head)
         b->tail = NULL;
      pthread_mutex_unlock(&b->queue_lock);

      sim_sleep_ns(b->exec_ns);

      for (size_t i = 0; i < job->count; i++) {
         pthread_mutex_lock(&b->exec_lock);
         sim_execute(&job->cmds[i]);
         pthread_mutex_unlock(&b->exec_lock);
      }
      atomic_fetch_add_explicit(&b->commands, job->count,
                                memory_order_relaxed);

      uint64_t seqno = job->seqno;
      free(job);

      pthread_mutex_lock(&b->queue_lock);
      atomic_store_explicit(&b->completed, seqno, memory_order_release);
      pthread_cond_broadcast(&b->done_cond);
   }
   pthread_mutex_unlock(&b->queue_lock);
   return NULL;
}

/* Reads one knob: unset or empty means 0; anything but decimal digits, or
 * a value above max, is an error naming the variable. */
static int
sim_read_knob(const char *var, uint64_t max, const char *unit, uint64_t *out)
{
   const char *s = getenv(var);

   *out = 0;
   if (!s || !*s)
      return 0;

   /* Decimal only (docs/envvars.md): strtoull's base 0 would read "010"
    * as 8 and "0x10" as 16, which nobody setting a latency means. */
   bool digits = true;
   for (const char *p = s; *p; p++) {
      if (*p < '0' || *p > '9')
         digits = false;
   }
   if (!digits || cohmap_debug_parse_uint(s, 0, max, out) != 0) {
      *out = 0;
      /* Printed even without COHMAP_DEBUG=verbose, like the other knobs:
       * device creation fails, and the caller may not show why. */
      fprintf(stderr,
              "cohmap: error: %s='%s': expected a decimal number of %s in "
              "[0, %" PRIu64 "]\n",
              var, s, unit, max);
      return cohmap_errorf(-EINVAL,
                           "%s='%s': expected %s in [0, %" PRIu64 "]", var, s,
                           unit, max);
   }
   return 0;
}

static int
sim_create(struct cohmap_backend **out)
{
   uint64_t latency_us, bandwidth_mbps, exec_us;
   pthread_condattr_t cattr;
   sigset_t all, old;
   int ret;

   *out = NULL;

   ret = sim_read_knob("COHMAP_SIM_LATENCY_US", SIM_MAX_US, "microseconds",
                       &latency_us);
   if (ret)
      return ret;
   ret = sim_read_knob("COHMAP_SIM_BANDWIDTH_MBPS", SIM_MAX_MBPS,
                       "MB/s (0: unlimited)", &bandwidth_mbps);
   if (ret)
      return ret;
   ret = sim_read_knob("COHMAP_SIM_EXEC_US", SIM_MAX_US, "microseconds",
                       &exec_us);
   if (ret)
      return ret;

   struct cohmap_backend *b = calloc(1, sizeof(*b));
   if (!b)
      return cohmap_errorf(-ENOMEM, "sim: out of memory for the device");

   b->latency_ns = latency_us * 1000;
   b->bandwidth_mbps = bandwidth_mbps;
   b->exec_ns = exec_us * 1000;
   atomic_init(&b->completed, 0);
   atomic_init(&b->uploads, 0);
   atomic_init(&b->downloads, 0);
   atomic_init(&b->bytes_uploaded, 0);
   atomic_init(&b->bytes_downloaded, 0);
   atomic_init(&b->commands, 0);

   ret = -pthread_mutex_init(&b->queue_lock, NULL);
   if (ret) {
      ret = cohmap_errorf(ret, "sim: cannot create the queue lock");
      goto fail_queue_lock;
   }
   ret = -pthread_cond_init(&b->queue_cond, NULL);
   if (ret) {
      ret = cohmap_errorf(ret, "sim: cannot create the queue condition");
      goto fail_queue_cond;
   }
   /* CLOCK_MONOTONIC: wait() timeouts must not jump with the wall clock. */
   ret = -pthread_condattr_init(&cattr);
   if (ret) {
      ret = cohmap_errorf(ret, "sim: cannot create a condition attribute");
      goto fail_condattr;
   }
   ret = -pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
   if (!ret)
      ret = -pthread_cond_init(&b->done_cond, &cattr);
   pthread_condattr_destroy(&cattr);
   if (ret) {
      ret = cohmap_errorf(ret, "sim: cannot create the fence condition");
      goto fail_condattr;
   }
   ret = -pthread_mutex_init(&b->exec_lock, NULL);
   if (ret) {
      ret = cohmap_errorf(ret, "sim: cannot create the execution lock");
      goto fail_exec_lock;
   }
   ret = -pthread_mutex_init(&b->mems_lock, NULL);
   if (ret) {
      ret = cohmap_errorf(ret, "sim: cannot create the memory list lock");
      goto fail_mems_lock;
   }

   /* The worker inherits this thread's signal mask: block the
    * asynchronous signals so that the application's handlers (and
    * sigwait threads) keep getting them on its own threads.  Faults stay
    * deliverable: blocking them would turn a bug into a silent kill. */
   sigfillset(&all);
   sigdelset(&all, SIGSEGV);
   sigdelset(&all, SIGBUS);
   sigdelset(&all, SIGFPE);
   sigdelset(&all, SIGILL);
   sigdelset(&all, SIGTRAP);
   sigdelset(&all, SIGSYS);
   pthread_sigmask(SIG_SETMASK, &all, &old);
   ret = -pthread_create(&b->worker, NULL, sim_worker, b);
   pthread_sigmask(SIG_SETMASK, &old, NULL);
   if (ret) {
      ret = cohmap_errorf(ret, "sim: cannot start the worker thread");
      goto fail_worker;
   }

   cohmap_info("sim: latency %" PRIu64 " us, bandwidth %" PRIu64
               " MB/s (0: unlimited), %" PRIu64 " us per submission",
               latency_us, bandwidth_mbps, exec_us);
   *out = b;
   return 0;

fail_worker:
   pthread_mutex_destroy(&b->mems_lock);
fail_mems_lock:
   pthread_mutex_destroy(&b->exec_lock);
fail_exec_lock:
   pthread_cond_destroy(&b->done_cond);
fail_condattr:
   pthread_cond_destroy(&b->queue_cond);
fail_queue_cond:
   pthread_mutex_destroy(&b->queue_lock);
fail_queue_lock:
   free(b);
   return ret;
}

static void
sim_mem_release(struct cohmap_dev_mem *mem)
{
   munmap(mem->map, mem->map_size);
   free(mem);
}

static void
sim_destroy(struct cohmap_backend *b)
{
   if (!b)
      return;

   pthread_mutex_lock(&b->queue_lock);
   b->stop = true;
   pthread_cond_signal(&b->queue_cond);
   pthread_mutex_unlock(&b->queue_lock);
   pthread_join(b->worker, NULL);

   size_t leaked = 0;
   while (b->mems) {
      struct cohmap_dev_mem *mem = b->mems;
      b->mems = mem->next;
      sim_mem_release(mem);
      leaked++;
   }
   if (leaked)
      cohmap_warn("sim: %zu device memory objects were never freed", leaked);

   pthread_mutex_destroy(&b->mems_lock);
   pthread_mutex_destroy(&b->exec_lock);
   pthread_cond_destroy(&b->done_cond);
   pthread_cond_destroy(&b->queue_cond);
   pthread_mutex_destroy(&b->queue_lock);
   free(b);
}

static int
sim_mem_alloc(struct cohmap_backend *b, size_t size,
              struct cohmap_dev_mem **out)
{
   int ret;

   *out = NULL;
   if (size == 0)
      return cohmap_errorf(-EINVAL, "sim: zero-sized device memory");

   size_t page = (size_t)sysconf(_SC_PAGESIZE);
   if (size > SIZE_MAX - (page - 1))
      return cohmap_errorf(-ENOMEM,
                           "sim: %zu bytes of device memory is "
                           "more than can be mapped",
                           size);
   size_t map_size = (size + page - 1) & ~(page - 1);

   struct cohmap_dev_mem *mem = calloc(1, sizeof(*mem));
   if (!mem)
      return cohmap_errorf(-ENOMEM, "sim: out of memory for a device "
                                    "memory object");

   /* A memfd mapped MAP_SHARED rather than anonymous private memory:
    * like device memory it stays shared, not copy-on-write, across
    * fork(), and it is recognizable as /memfd:cohmap-sim in
    * /proc/self/maps when debugging.  The mapping keeps the file alive,
    * so the descriptor is closed at once: a process with many BOs would
    * otherwise run out of descriptors. */
   int fd = memfd_create("cohmap-sim", MFD_CLOEXEC);
   if (fd < 0) {
      ret = cohmap_errorf(-ENOMEM,
                          "sim: memfd_create for %zu bytes of "
                          "device memory failed: %s",
                          size, strerror(errno));
      goto fail_memfd;
   }
   if (ftruncate(fd, (off_t)map_size) != 0) {
      ret = cohmap_errorf(-ENOMEM,
                          "sim: cannot size device memory to %zu "
                          "bytes: %s",
                          map_size, strerror(errno));
      goto fail_truncate;
   }
   mem->map = mmap(NULL, map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
   if (mem->map == MAP_FAILED) {
      ret = cohmap_errorf(-ENOMEM,
                          "sim: cannot map %zu bytes of device "
                          "memory: %s",
                          map_size, strerror(errno));
      goto fail_truncate;
   }
   close(fd);

   mem->size = size;
   mem->map_size = map_size;

   pthread_mutex_lock(&b->mems_lock);
   mem->next = b->mems;
   if (b->mems)
      b->mems->prev = mem;
   b->mems = mem;
   pthread_mutex_unlock(&b->mems_lock);

   *out = mem;
   return 0;

fail_truncate:
   close(fd);
fail_memfd:
   free(mem);
   return ret;
}

static void
sim_mem_free(struct cohmap_backend *b, struct cohmap_dev_mem *mem)
{
   if (!mem)
      return;

   pthread_mutex_lock(&b->mems_lock);
   if (mem->prev)
      mem->prev->next = mem->next;
   else
      b->mems = mem->next;
   if (mem->next)
      mem->next->prev = mem->prev;
   pthread_mutex_unlock(&b->mems_lock);

   sim_mem_release(mem);
}

static int
sim_upload(struct cohmap_backend *b, struct cohmap_dev_mem *mem,
           const struct cohmap_range *ranges, size_t count, const void *src,
           ptrdiff_t src_bias, ptrdiff_t dst_bias)
{
   uint64_t bytes = 0;

   if (!mem || (count && (!ranges || !src)))
      return cohmap_errorf(-EINVAL, "sim: upload without memory, ranges "
                                    "or source");

   /* Everything is checked before anything is copied: a refused upload
    * leaves device memory as it was.  A negative destination offset
    * wraps to a huge one and fails the bounds check. */
   for (size_t i = 0; i < count; i++) {
      size_t dst_offset = ranges[i].offset + (size_t)dst_bias;
      if (!sim_in_bounds(mem, dst_offset, ranges[i].length))
         return cohmap_errorf(-EINVAL,
                              "sim: upload range %zu (offset %zu + bias "
                              "%td, %zu bytes) outside %zu bytes of device "
                              "memory",
                              i, ranges[i].offset, dst_bias, ranges[i].length,
                              mem->size);
      bytes += ranges[i].length;
   }

   sim_sleep_ns(sim_transfer_ns(b, bytes));

   pthread_mutex_lock(&b->exec_lock);
   /* src may be a coherent BO's mapping, which the application may be
    * storing to right now (util/tsan.h). */
   COHMAP_APP_MEMORY_READ_BEGIN();
   for (size_t i = 0; i < count; i++) {
      /* The source offset is signed arithmetic: a negative bias must not
       * wrap a pointer. */
      ptrdiff_t src_offset = (ptrdiff_t)ranges[i].offset + src_bias;
      size_t dst_offset = ranges[i].offset + (size_t)dst_bias;
      memcpy((uint8_t *)mem->map + dst_offset,
             (const uint8_t *)src + src_offset, ranges[i].length);
   }
   COHMAP_APP_MEMORY_READ_END();
   pthread_mutex_unlock(&b->exec_lock);

   atomic_fetch_add_explicit(&b->uploads, 1, memory_order_relaxed);
   atomic_fetch_add_explicit(&b->bytes_uploaded, bytes, memory_order_relaxed);
   return 0;
}

static int
sim_download(struct cohmap_backend *b, struct cohmap_dev_mem *mem,
             size_t offset, size_t size, void *dst)
{
   if (!mem || (size && !dst))
      return cohmap_errorf(-EINVAL, "sim: download without memory or "
                                    "destination");
   if (!sim_in_bounds(mem, offset, size))
      return cohmap_errorf(-EINVAL,
                           "sim: download of %zu bytes at %zu "
                           "outside %zu bytes of device memory",
                           size, offset, mem->size);

   sim_sleep_ns(sim_transfer_ns(b, size));

   pthread_mutex_lock(&b->exec_lock);
   memcpy(dst, (const uint8_t *)mem->map + offset, size);
   pthread_mutex_unlock(&b->exec_lock);

   atomic_fetch_add_explicit(&b->downloads, 1, memory_order_relaxed);
   atomic_fetch_add_explicit(&b->bytes_downloaded, size,
                             memory_order_relaxed);
   return 0;
}

static int
sim_submit(struct cohmap_backend *b, const struct cohmap_dev_cmd *cmds,
           size_t count, uint64_t *seqno)
{
   *seqno = 0;
   if (count && !cmds)
      return cohmap_errorf(-EINVAL, "sim: %zu commands but no array", count);

   for (size_t i = 0; i < count; i++) {
      const char *problem = sim_cmd_problem(&cmds[i]);
      if (problem) {
         /* Always printed: this is a winsys bug, not a user error. */
         cohmap_warn("sim: refusing submission: command %zu (type %d): %s", i,
                     (int)cmds[i].type, problem);
         return cohmap_errorf(-EINVAL, "sim: command %zu: %s", i, problem);
      }
   }

   if (count > (SIZE_MAX - sizeof(struct sim_job)) / sizeof(cmds[0]))
      return cohmap_errorf(-ENOMEM, "sim: %zu commands in one submission",
                           count);
   struct sim_job *job =
      malloc(sizeof(struct sim_job) + count * sizeof(cmds[0]));
   if (!job)
      return cohmap_errorf(-ENOMEM,
                           "sim: out of memory for a submission "
                           "of %zu commands",
                           count);
   job->next = NULL;
   job->count = count;
   if (count)
      memcpy(job->cmds, cmds, count * sizeof(cmds[0]));

   pthread_mutex_lock(&b->queue_lock);
   job->seqno = ++b->submitted;
   if (b->tail)
      b->tail->next = job;
   else
      b->head = job;
   b->tail = job;
   pthread_cond_signal(&b->queue_cond);
   *seqno = job->seqno;
   pthread_mutex_unlock(&b->queue_lock);
   return 0;
}

static uint64_t
sim_completed(struct cohmap_backend *b)
{
   return atomic_load_explicit(&b->completed, memory_order_acquire);
}

static int
sim_wait(struct cohmap_backend *b, uint64_t seqno, uint64_t timeout_ns)
{
   struct timespec deadline;
   int ret = 0;

   /* The common case, without the lock. */
   if (sim_completed(b) >= seqno)
      return 0;

   /* A timeout too long to express as a deadline is no timeout. */
   bool forever = timeout_ns == UINT64_MAX;
   if (!forever) {
      uint64_t now = cohmap_now_ns();
      if (timeout_ns > UINT64_MAX - now) {
         forever = true;
      } else {
         uint64_t end = now + timeout_ns;
         deadline.tv_sec = (time_t)(end / 1000000000ull);
         deadline.tv_nsec = (long)(end % 1000000000ull);
      }
   }

   pthread_mutex_lock(&b->queue_lock);
   if (seqno > b->submitted) {
      uint64_t submitted = b->submitted;
      pthread_mutex_unlock(&b->queue_lock);
      return cohmap_errorf(-EINVAL,
                           "sim: wait for seqno %" PRIu64
                           ", but only %" PRIu64 " were submitted",
                           seqno, submitted);
   }
   while (sim_completed(b) < seqno) {
      if (forever) {
         pthread_cond_wait(&b->done_cond, &b->queue_lock);
      } else if (pthread_cond_timedwait(&b->done_cond, &b->queue_lock,
                                        &deadline) == ETIMEDOUT) {
         if (sim_completed(b) < seqno)
            ret = -ETIME;
         break;
      }
   }
   pthread_mutex_unlock(&b->queue_lock);
   return ret;
}

static void
sim_get_stats(struct cohmap_backend *b, struct cohmap_backend_stats *out)
{
   out->uploads = atomic_load_explicit(&b->uploads, memory_order_relaxed);
   out->downloads = atomic_load_explicit(&b->downloads, memory_order_relaxed);
   out->bytes_uploaded =
      atomic_load_explicit(&b->bytes_uploaded, memory_order_relaxed);
   out->bytes_downloaded =
      atomic_load_explicit(&b->bytes_downloaded, memory_order_relaxed);
   out->commands = atomic_load_explicit(&b->commands, memory_order_relaxed);
}

const struct cohmap_device_ops cohmap_device_sim_ops = {
   .name = "sim",
   .create = sim_create,
   .destroy = sim_destroy,
   .mem_alloc = sim_mem_alloc,
   .mem_free = sim_mem_free,
   .upload = sim_upload,
   .download = sim_download,
   .submit = sim_submit,
   .completed = sim_completed,
   .wait = sim_wait,
   .get_stats = sim_get_stats,
};
