/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Writes the kernel makes on the process's behalf (read(2), pread(2),
 * recv(2) into tracked memory).
 *
 *  - scan, compare and full report them (also process_vm_writev(2) and
 *    writes through /proc/self/mem, the debugger's way), into pages never touched before
 *    (unpopulated) and into pages already written and re-armed; scan
 *    reports exactly the pages written, compare exactly the 64-byte chunks
 *    holding the bytes.
 *  - fault is documented as not transparent: read(2) into a write-protected
 *    page fails with EFAULT (or returns a short count) and the process
 *    survives; once the CPU has written the page, read(2) into it works and
 *    is reported.
 */

#include <sys/socket.h>
#include <sys/uio.h>

#include "robust-util.h"

#define NPAGES 32

static size_t ps;

enum how { HOW_PIPE, HOW_PREAD, HOW_RECV, HOW_VMWRITEV, HOW_PROCMEM };

static const char *const how_name[] = {"read(pipe)", "pread(memfd)",
                                       "recv(socketpair)",
                                       "process_vm_writev(self)",
                                       "pwrite(/proc/self/mem)"};

/* Has the kernel copy len bytes of src into dst; returns what the syscall
 * returned (errno set on -1). */
static ssize_t
kernel_copy(enum how how, void *dst, const uint8_t *src, size_t len)
{
   int fds[2];
   ssize_t n;
   int err;

   switch (how) {
   case HOW_PIPE:
      CHECK_SYS(pipe(fds));
      CHECK_SYS(fcntl(fds[1], F_SETPIPE_SZ, (int)(1 << 20)));
      CHECK(write(fds[1], src, len) == (ssize_t)len, "write pipe");
      n = read(fds[0], dst, len);
      err = errno;
      close(fds[0]);
      close(fds[1]);
      break;
   case HOW_PREAD: {
      int fd = memfd_create("robust-kernel-writes", MFD_CLOEXEC);
      CHECK_SYS(fd);
      CHECK(pwrite(fd, src, len, 4096) == (ssize_t)len, "pwrite memfd");
      n = pread(fd, dst, len, 4096);
      err = errno;
      close(fd);
      break;
   }
   case HOW_VMWRITEV: {
      struct iovec local = {(void *)src, len}, remote = {dst, len};
      n = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);
      err = errno;
      break;
   }
   case HOW_PROCMEM: {
      int fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
      CHECK_SYS(fd);
      n = pwrite(fd, src, len, (off_t)(uintptr_t)dst);
      err = errno;
      close(fd);
      break;
   }
   case HOW_RECV:
   default:
      CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, fds));
      int sz = 1 << 20;
      setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
      setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
      CHECK(send(fds[0], src, len, 0) == (ssize_t)len, "send");
      n = recv(fds[1], dst, len, MSG_WAITALL);
      err = errno;
      close(fds[0]);
      close(fds[1]);
      break;
   }
   errno = err;
   return n;
}

static void
fill_pattern(uint8_t *buf, size_t len, unsigned seed)
{
   /* Never 0 nor 0xff: differs from zeroed memory and from the CPU marker
    * bytes below, so that compare reports every byte. */
   for (size_t i = 0; i < len; i++)
      buf[i] = (uint8_t)(1 + (i * 7 + seed) % 250);
}

/* Checks the pages [first, last] (or for compare the bytes [off, off+len))
 * are exactly what was reported. */
static void
check_exact(enum cohmap_method method, const struct cohmap_dirty *d,
            size_t off, size_t len, const char *what)
{
   size_t lo = off, hi = off + len;
   if (method == COHMAP_METHOD_SCAN) {
      lo = off / ps * ps;
      hi = (off + len + ps - 1) / ps * ps;
   } else if (method == COHMAP_METHOD_FULL) {
      lo = 0;
      hi = NPAGES * ps;
   } else {
      /* compare without BYTE_EXACT: the aligned 64-byte chunks. */
      lo = off / 64 * 64;
      hi = (off + len + 63) / 64 * 64;
   }
   if (!(d->count == 1 && d->ranges[0].offset == lo &&
         d->ranges[0].length == hi - lo)) {
      robust_print_dirty(what, d);
      CHECK(false, "%s: %s should report exactly [%#zx, %#zx)", what,
            robust_method_str(method), lo, hi);
   }
}

static int
kernel_write_case(enum cohmap_method method, enum how how, bool wrap)
{
   struct cohmap_dirty d;
   char what[128];
   ps = robust_page_size();
   uint8_t *src = malloc(4 * ps);
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, method))
      return ROBUST_SKIP;
   struct cohmap_region *r = NULL;
   void *mem = NULL;
   if (wrap) {
      mem = robust_mmap(NPAGES * ps, PROT_READ | PROT_WRITE);
      CHECK_OK(cohmap_region_wrap(ctx, mem, NPAGES * ps, method, 0, &r));
   } else {
      CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, method, 0, &r));
   }
   CHECK(cohmap_region_method(r) == method, "method is %s, expected %s",
         robust_method_str(cohmap_region_method(r)), robust_method_str(method));
   uint8_t *p = cohmap_region_ptr(r);
   struct robust_mirror m;
   robust_mirror_init(&m, p, NPAGES * ps);

   CHECK_COLLECT(r, &d, "initial collect");

   /* Page 10 populated and re-armed; pages 9 and 11 never touched. */
   robust_mirror_write(&m, 10 * ps, 0xff);
   CHECK_COLLECT(r, &d, "collect of the CPU write");
   robust_mirror_check(&m, &d, "collect of the CPU write");

   for (unsigned round = 0; round < 3; round++) {
      /* Round 0 straddles unpopulated 9 and 11 and populated 10; later
       * rounds write the same, now populated and re-armed, pages again. */
      size_t off = 9 * ps + 100 + round;
      size_t len = 2 * ps + 50;
      fill_pattern(src, len, round * 13 + how);
      ssize_t n = kernel_copy(how, p + off, src, len);
      CHECK(n == (ssize_t)len, "%s of %zu bytes into %s memory returned %zd (%s)",
            how_name[how], len, robust_method_str(method), n,
            n < 0 ? strerror(errno) : "short");
      CHECK(memcmp(p + off, src, len) == 0, "%s did not land", how_name[how]);
      robust_mirror_mark(&m, off, len);

      snprintf(what, sizeof(what), "%s %s round %u", robust_method_str(method),
               how_name[how], round);
      CHECK_COLLECT(r, &d, what);
      robust_mirror_check(&m, &d, what);
      check_exact(method, &d, off, len, what);

      /* Re-armed: nothing new is reported. */
      CHECK_COLLECT(r, &d, "collect with no writes");
      if (method != COHMAP_METHOD_FULL)
         CHECK(d.count == 0, "%s: nothing was written since the last collect "
               "but %zu ranges (%zu bytes) were reported", what, d.count,
               d.bytes);
   }

   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   robust_mirror_fini(&m);
   if (mem)
      munmap(mem, NPAGES * ps);
   free(src);
   return 0;
}

static int scan_pipe(void) { return kernel_write_case(COHMAP_METHOD_SCAN, HOW_PIPE, false); }
static int scan_pread(void) { return kernel_write_case(COHMAP_METHOD_SCAN, HOW_PREAD, false); }
static int scan_recv(void) { return kernel_write_case(COHMAP_METHOD_SCAN, HOW_RECV, false); }
static int scan_wrap_pipe(void) { return kernel_write_case(COHMAP_METHOD_SCAN, HOW_PIPE, true); }
static int compare_pipe(void) { return kernel_write_case(COHMAP_METHOD_COMPARE, HOW_PIPE, false); }
static int compare_pread(void) { return kernel_write_case(COHMAP_METHOD_COMPARE, HOW_PREAD, false); }
static int compare_recv(void) { return kernel_write_case(COHMAP_METHOD_COMPARE, HOW_RECV, true); }
static int scan_vmwritev(void) { return kernel_write_case(COHMAP_METHOD_SCAN, HOW_VMWRITEV, false); }
static int scan_procmem(void) { return kernel_write_case(COHMAP_METHOD_SCAN, HOW_PROCMEM, true); }
static int compare_vmwritev(void) { return kernel_write_case(COHMAP_METHOD_COMPARE, HOW_VMWRITEV, false); }
static int compare_procmem(void) { return kernel_write_case(COHMAP_METHOD_COMPARE, HOW_PROCMEM, false); }
static int full_procmem(void) { return kernel_write_case(COHMAP_METHOD_FULL, HOW_PROCMEM, false); }
static int full_pipe(void) { return kernel_write_case(COHMAP_METHOD_FULL, HOW_PIPE, false); }
static int full_pread(void) { return kernel_write_case(COHMAP_METHOD_FULL, HOW_PREAD, true); }

/*
 * fault: documented as not transparent.
 */
static int
fault_read_efault(void)
{
   struct cohmap_dirty d;
   int fds[2];

   ps = robust_page_size();
   uint8_t *src = malloc(2 * ps + 64);
   struct cohmap_context *ctx = robust_context_create(); /* no widening */
   if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
      return ROBUST_SKIP;
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0, &r));
   uint8_t *p = cohmap_region_ptr(r);
   struct robust_mirror m;
   robust_mirror_init(&m, p, NPAGES * ps);
   CHECK_COLLECT(r, &d, "initial collect");

   /* 1. read(2) into a write-protected page. */
   CHECK_SYS(pipe(fds));
   fill_pattern(src, ps, 1);
   CHECK(write(fds[1], src, ps) == (ssize_t)ps, "write pipe");
   errno = 0;
   ssize_t n = read(fds[0], p + 5 * ps, ps);
   int err = errno;
   printf("read(2) into a protected fault page: %zd (%s)\n", n,
          n < 0 ? strerror(err) : "bytes");
   CHECK((n == -1 && err == EFAULT) || (n >= 0 && n < (ssize_t)ps),
         "read(2) into a write-protected page returned %zd (%s), expected -1 "
         "with EFAULT or a short count",
         n, n < 0 ? strerror(err) : "bytes");
   if (n > 0)
      robust_mirror_mark(&m, 5 * ps, (size_t)n);
   else
      for (size_t i = 0; i < ps; i++)
         CHECK(p[5 * ps + i] == 0, "a failed read(2) changed byte %zu", i);
   CHECK_COLLECT(r, &d, "collect after the failed read");
   robust_mirror_check(&m, &d, "collect after the failed read");

   /* 2. The CPU writes the page (fault, unprotect), then read(2) works. */
   robust_mirror_write(&m, 5 * ps + ps - 1, 0xff);
   size_t left = ps - (n > 0 ? (size_t)n : 0);
   n = read(fds[0], p + 5 * ps, left);
   CHECK(n == (ssize_t)left, "read(2) into a page the CPU wrote returned %zd "
         "(%s), expected %zu", n, n < 0 ? strerror(errno) : "bytes", left);
   CHECK(memcmp(p + 5 * ps, src + (ps - left), left) == 0,
         "read(2) data did not land");
   robust_mirror_mark(&m, 5 * ps, left);
   CHECK_COLLECT(r, &d, "collect after the CPU write and read(2)");
   robust_mirror_check(&m, &d, "collect after the CPU write and read(2)");
   close(fds[0]);
   close(fds[1]);

   /* 3. After the collect the page is protected again: EFAULT again. */
   CHECK_SYS(pipe(fds));
   CHECK(write(fds[1], src, 64) == 64, "write pipe");
   n = read(fds[0], p + 5 * ps, 64);
   err = errno;
   CHECK((n == -1 && err == EFAULT) || (n >= 0 && n < 64),
         "read(2) into a re-protected page returned %zd (%s)", n,
         n < 0 ? strerror(err) : "bytes");
   if (n > 0)
      robust_mirror_mark(&m, 5 * ps, (size_t)n);
   close(fds[0]);
   close(fds[1]);
   CHECK_COLLECT(r, &d, "collect after the second failed read");
   robust_mirror_check(&m, &d, "collect after the second failed read");

   /* 4. Straddling: page 7 unprotected by a CPU write, page 8 protected. */
   robust_mirror_write(&m, 7 * ps, 0xff);
   CHECK_SYS(pipe(fds));
   fill_pattern(src, 2 * ps, 2);
   CHECK(write(fds[1], src, 2 * ps) == (ssize_t)(2 * ps), "write pipe");
   n = read(fds[0], p + 7 * ps, 2 * ps);
   err = errno;
   printf("read(2) over an unprotected and a protected page: %zd (%s)\n", n,
          n < 0 ? strerror(err) : "bytes");
   CHECK((n == -1 && err == EFAULT) || (n >= 0 && n <= (ssize_t)(2 * ps)),
         "read(2) returned %zd (%s)", n, n < 0 ? strerror(err) : "bytes");
   if (n > 0) {
      CHECK(memcmp(p + 7 * ps, src, (size_t)n) == 0, "read data did not land");
      robust_mirror_mark(&m, 7 * ps, (size_t)n);
   }
   close(fds[0]);
   close(fds[1]);
   CHECK_COLLECT(r, &d, "collect after the straddling read");
   robust_mirror_check(&m, &d, "collect after the straddling read");

   /* 5. process_vm_writev(2) into a protected page: EFAULT as well. */
   fill_pattern(src, 64, 3);
   n = kernel_copy(HOW_VMWRITEV, p + 11 * ps, src, 64);
   err = errno;
   CHECK((n == -1 && err == EFAULT) || (n >= 0 && n < 64),
         "process_vm_writev(2) into a write-protected page returned %zd (%s)",
         n, n < 0 ? strerror(err) : "bytes");
   if (n > 0)
      robust_mirror_mark(&m, 11 * ps, (size_t)n);
   CHECK_COLLECT(r, &d, "collect after process_vm_writev");
   robust_mirror_check(&m, &d, "collect after process_vm_writev");

   /* 6. CPU writes keep being tracked. */
   for (size_t pg = 0; pg < NPAGES; pg += 3)
      robust_mirror_write(&m, pg * ps + pg, (uint8_t)pg + 1);
   CHECK_COLLECT(r, &d, "final collect");
   robust_mirror_check(&m, &d, "final collect");

   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   robust_mirror_fini(&m);
   free(src);
   return 0;
}

ROBUST_MAIN(ROBUST_CASE(scan_pipe), ROBUST_CASE(scan_pread),
            ROBUST_CASE(scan_recv), ROBUST_CASE(scan_wrap_pipe),
            ROBUST_CASE(compare_pipe), ROBUST_CASE(compare_pread),
            ROBUST_CASE(compare_recv), ROBUST_CASE(full_pipe),
            ROBUST_CASE(full_pread), ROBUST_CASE(scan_vmwritev),
            ROBUST_CASE(scan_procmem), ROBUST_CASE(compare_vmwritev),
            ROBUST_CASE(compare_procmem), ROBUST_CASE(full_procmem),
            ROBUST_CASE(fault_read_efault))
