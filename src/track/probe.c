/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: capability probing
 *
 * What works is found out by trying it, not by reading version numbers:
 * kernels are patched, seccomp filters and sysctls differ, containers lie
 * about uname.  The scan probe creates a userfaultfd, asks for the
 * asynchronous write-protect features, registers one small test mapping,
 * writes one page and checks that PAGEMAP_SCAN reports exactly that page.
 * Versions and sysctls are read only to explain a failure.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "track/track_priv.h"
#include "track/uapi.h"
#include "util/log.h"

static long
read_long_file(const char *path)
{
   char buf[64];
   long v = -1;
   FILE *f = fopen(path, "re");

   if (!f)
      return -1;
   if (fgets(buf, sizeof(buf), f))
      v = strtol(buf, NULL, 10);
   fclose(f);
   return v;
}

static int
read_seccomp_mode(void)
{
   char line[256];
   int mode = -1;
   FILE *f = fopen("/proc/self/status", "re");

   if (!f)
      return -1;
   while (fgets(line, sizeof(line), f)) {
      if (strncmp(line, "Seccomp:", 8) == 0) {
         mode = atoi(line + 8);
         break;
      }
   }
   fclose(f);
   return mode;
}

void
cohmap_sysinfo_read(struct cohmap_sysinfo *info)
{
   struct utsname u;
   char buf[256];

   memset(info, 0, sizeof(*info));
   if (uname(&u) == 0) {
      snprintf(info->kernel, sizeof(info->kernel), "%.60s %.120s %.60s",
               u.sysname, u.release, u.machine);
      sscanf(u.release, "%u.%u", &info->kernel_major, &info->kernel_minor);
   } else {
      snprintf(info->kernel, sizeof(info->kernel), "unknown");
   }

   info->page_size = (size_t)sysconf(_SC_PAGESIZE);

   snprintf(info->thp_enabled, sizeof(info->thp_enabled), "unknown");
   FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
   if (f) {
      if (fgets(buf, sizeof(buf), f)) {
         /* The active mode is the bracketed word: "always [madvise] never" */
         char *open = strchr(buf, '['), *close = open ? strchr(open, ']') : 0;
         if (open && close) {
            *close = '\0';
            snprintf(info->thp_enabled, sizeof(info->thp_enabled), "%s",
                     open + 1);
         }
      }
      fclose(f);
   }

   info->max_map_count = read_long_file("/proc/sys/vm/max_map_count");
   info->unprivileged_userfaultfd =
      (int)read_long_file("/proc/sys/vm/unprivileged_userfaultfd");
   info->seccomp = read_seccomp_mode();

   info->map_count = 0;
   f = fopen("/proc/self/maps", "re");
   if (f) {
      int c;
      while ((c = fgetc(f)) != EOF)
         info->map_count += c == '\n';
      fclose(f);
   } else {
      info->map_count = -1;
   }
}

/* Explains why userfaultfd() failed, for `cohmap info` and the fallback
 * notice.  The reasons are static strings. */
static const char *
uffd_failure_reason(int err)
{
   int seccomp = read_seccomp_mode();

   switch (err) {
   case ENOSYS:
      if (seccomp == 2)
         return "userfaultfd() is blocked (ENOSYS) by a seccomp filter, "
                "as container runtimes do";
      return "userfaultfd() does not exist (kernel built without "
             "CONFIG_USERFAULTFD)";
   case EPERM:
      if (seccomp == 2)
         return "userfaultfd() is refused (EPERM) by a seccomp filter "
                "(e.g. Docker's default profile)";
      return "userfaultfd() is refused (EPERM): vm.unprivileged_userfaultfd "
             "or an LSM forbids it";
   case EINVAL:
      return "kernel does not know UFFD_USER_MODE_ONLY (needs Linux >= 5.11; "
             "scan needs >= 6.7)";
   case EMFILE:
   case ENFILE:
      return "out of file descriptors";
   default:
      return "userfaultfd() failed";
   }
}

/* Opens a userfaultfd with the asynchronous write-protect features the scan
 * engine needs.  Returns the fd or -errno with *reason set. */
int
cohmap_uffd_open(const char **reason)
{
   /* UFFD_USER_MODE_ONLY: only user-mode faults are handled, which is all
    * we need, and lets unprivileged processes use userfaultfd even with
    * vm.unprivileged_userfaultfd=0. */
   int fd = (int)syscall(SYS_userfaultfd,
                         O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
   if (fd < 0) {
      int err = errno;
      *reason = uffd_failure_reason(err);
      return -err;
   }

   struct uffdio_api api = {
      .api = UFFD_API,
      .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
   };
   if (ioctl(fd, UFFDIO_API, &api) != 0) {
      int err = errno;
      close(fd);
      /* EINVAL is the kernel refusing the features; anything else (out
       * of memory) is not about the kernel's version. */
      *reason = err == EINVAL ? "kernel lacks UFFD_FEATURE_WP_ASYNC/"
                                "WP_UNPOPULATED (needs Linux >= 6.7)"
                              : "UFFDIO_API failed (out of memory?)";
      return -(err == EINVAL ? ENOTSUP : err);
   }
   if ((api.features & (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED)) !=
       (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED)) {
      close(fd);
      *reason = "kernel lacks UFFD_FEATURE_WP_ASYNC/WP_UNPOPULATED "
                "(needs Linux >= 6.7)";
      return -ENOTSUP;
   }
   return fd;
}

/* Registers a 4-page test mapping, writes page 1 and expects PAGEMAP_SCAN
 * to report exactly page 1. */
static int
probe_scan_works(int uffd, int pagemap_fd, size_t ps, const char **reason)
{
   uint8_t *p = mmap(NULL, 4 * ps, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
   if (p == MAP_FAILED) {
      *reason = "mmap of the probe page failed";
      return -ENOMEM;
   }

   int ret = 0;
   struct uffdio_register reg = {
      .range = {.start = (uintptr_t)p, .len = 4 * ps},
      .mode = UFFDIO_REGISTER_MODE_WP,
   };
   if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
      ret = -errno;
      *reason = "UFFDIO_REGISTER in write-protect mode failed on anonymous "
                "memory";
      goto out;
   }

   /* Registration alone leaves unpopulated pages counting as written;
    * write-protecting the range installs the markers WP_UNPOPULATED
    * needs (the scan engine does the same on attach). */
   struct uffdio_writeprotect wp = {
      .range = {.start = (uintptr_t)p, .len = 4 * ps},
      .mode = UFFDIO_WRITEPROTECT_MODE_WP,
   };
   if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0) {
      ret = -errno;
      *reason = "UFFDIO_WRITEPROTECT failed on anonymous memory";
      goto unregister;
   }

   p[ps] = 1;

   struct page_region vec[4];
   struct pm_scan_arg arg = {
      .size = sizeof(arg),
      .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
      .start = (uintptr_t)p,
      .end = (uintptr_t)p + 4 * ps,
      .vec = (uintptr_t)vec,
      .vec_len = 4,
      .category_mask = PAGE_IS_WRITTEN,
      .return_mask = PAGE_IS_WRITTEN,
   };
   long n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
   if (n < 0) {
      ret = -errno;
      *reason = errno == ENOTTY || errno == EINVAL
                   ? "kernel lacks the PAGEMAP_SCAN ioctl (needs Linux >= 6.7)"
                   : "PAGEMAP_SCAN failed on a registered test mapping";
      if (errno == ENOTTY || errno == EINVAL)
         ret = -ENOTSUP;
   } else if (n != 1 || vec[0].start != (uintptr_t)p + ps ||
              vec[0].end != (uintptr_t)p + 2 * ps) {
      ret = -ENOTSUP;
      *reason = "PAGEMAP_SCAN misreported a written test page";
   }

unregister:;
   struct uffdio_range range = {.start = (uintptr_t)p, .len = 4 * ps};
   ioctl(uffd, UFFDIO_UNREGISTER, &range);
out:
   munmap(p, 4 * ps);
   return ret;
}

int
cohmap_probe_scan(struct cohmap_context *ctx, const char **reason)
{
   if (ctx->opts.flags & COHMAP_CONTEXT_NO_UFFD) {
      *reason = "disabled by COHMAP_CONTEXT_NO_UFFD";
      return -ENOTSUP;
   }

   int ret = cohmap_scan_open(ctx, reason);
   if (ret < 0)
      return ret;

   ret = probe_scan_works(ctx->uffd, ctx->pagemap_fd, ctx->page_size, reason);
   if (ret < 0)
      cohmap_scan_close(ctx);
   return ret;
}

int
cohmap_probe_fault(struct cohmap_context *ctx, const char **reason)
{
   /* mprotect on private anonymous memory works everywhere Linux runs;
    * what can fail later (vm.max_map_count) is handled per region.  Check
    * that nobody blocks mprotect() (some sandboxes filter it). */
   size_t ps = ctx->page_size;
   void *p = mmap(NULL, ps, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
   if (p == MAP_FAILED) {
      *reason = "mmap failed";
      return -ENOMEM;
   }
   int ret = 0;
   if (mprotect(p, ps, PROT_READ) != 0) {
      ret = -errno;
      *reason = "mprotect(PROT_READ) is refused";
   }
   munmap(p, ps);
   return ret;
}
