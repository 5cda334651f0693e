/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Restricted environments (issue 7): cohmap inside a sandbox.
 *
 *  - userfaultfd() blocked by a seccomp filter, as container runtimes do:
 *    Docker's default profile answers EPERM, others ENOSYS.  The context
 *    must come up, say once on stderr why scan is unavailable (naming
 *    seccomp), and track with what is left: AUTO regions on compare or
 *    full, writes reported, no crash.
 *  - An unprivileged process (root drops to uid/gid 65534 in the test
 *    case's child): scan keeps working through UFFD_USER_MODE_ONLY, which
 *    needs no privilege even with vm.unprivileged_userfaultfd = 0.  Right
 *    after the drop the process is not dumpable and its /proc/self files
 *    are root's: scan is then unavailable, and the reason must say why.
 *
 * Each case runs in its own forked child (robust-util.h), so the filter
 * and the dropped privileges stay there.  The stderr notice is checked by
 * redirecting the child's stderr into a pipe read by the same child after
 * the context is created.
 */

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "robust-util.h"

#define NPAGES 32

static size_t ps;

/* Installs a filter that fails userfaultfd() with err and allows all else
 * (x86-64 only: the filter must check the architecture, and the syscall
 * number is per architecture).  false if the kernel refuses it. */
static bool
block_userfaultfd(int err)
{
#if defined(__x86_64__) && defined(SYS_userfaultfd)
   struct sock_filter prog[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
      BPF_STMT(BPF_RET | BPF_K,
               SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
   };
   struct sock_fprog fprog = {
      .len = (unsigned short)(sizeof(prog) / sizeof(prog[0])),
      .filter = prog,
   };
   if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
      printf("SKIP: PR_SET_NO_NEW_PRIVS: %s\n", strerror(errno));
      return false;
   }
   if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) {
      printf("SKIP: seccomp filter: %s\n", strerror(errno));
      return false;
   }
   /* The filter really blocks it. */
   long fd = syscall(SYS_userfaultfd, O_CLOEXEC);
   CHECK(fd < 0 && errno == err, "userfaultfd() under the filter: %ld (%s)",
         fd, strerror(errno));
   return true;
#else
   (void)err;
   printf("SKIP: the seccomp filter of this test is written for x86-64\n");
   return false;
#endif
}

/* Writes a few pages, collects, and checks every written byte reported
 * with its value. */
static void
check_tracks(struct cohmap_region *r, const char *what)
{
   struct robust_mirror m;
   struct cohmap_dirty d;
   uint8_t *p = cohmap_region_ptr(r);

   robust_mirror_init(&m, p, NPAGES * ps);
   CHECK_COLLECT(r, &d, what);
   for (unsigned round = 1; round <= 4; round++) {
      for (size_t pg = round; pg < NPAGES; pg += 5)
         robust_mirror_write(&m, pg * ps + 17 * round, (uint8_t)(0x40 + round));
      CHECK_COLLECT(r, &d, what);
      robust_mirror_check(&m, &d, what);
   }
   robust_mirror_fini(&m);
}

/* stderr into a pipe; returns the read end.  The pipe holds 64 KiB, far
 * more than the few lines written before it is read. */
static int
capture_stderr(void)
{
   int fds[2];
   CHECK_SYS(pipe(fds));
   fflush(stderr);
   CHECK_SYS(dup2(fds[1], STDERR_FILENO));
   close(fds[1]);
   CHECK_SYS(fcntl(fds[0], F_SETFL, O_NONBLOCK));
   return fds[0];
}

static size_t
read_captured(int fd, char *buf, size_t size)
{
   fflush(stderr);
   ssize_t n = read(fd, buf, size - 1);
   buf[n > 0 ? n : 0] = '\0';
   return n > 0 ? (size_t)n : 0;
}

static int
seccomp_case(int err)
{
   ps = robust_page_size();
   if (!block_userfaultfd(err))
      return ROBUST_SKIP;

   int fd = capture_stderr();
   struct cohmap_context *ctx = robust_context_create();
   char text[4096];
   read_captured(fd, text, sizeof(text));
   /* Show what was captured in the test log. */
   printf("stderr of context creation: %s", text[0] ? text : "(nothing)\n");

   const char *reason = NULL;
   CHECK(cohmap_context_method_status(ctx, COHMAP_METHOD_SCAN, &reason) != 0,
         "scan reported available under a filter blocking userfaultfd");
   CHECK(reason && strstr(reason, "seccomp"),
         "the reason does not name seccomp: %s", reason ? reason : "(null)");
   CHECK(strstr(text, "scan unavailable") && strstr(text, "seccomp"),
         "no one-line notice naming seccomp on stderr");
   /* One line, not one per context. */
   struct cohmap_context *ctx2 = robust_context_create();
   read_captured(fd, text, sizeof(text));
   CHECK(!strstr(text, "scan unavailable"), "the notice came again: %s",
         text);

   enum cohmap_method auto_method = cohmap_context_auto_method(ctx);
   CHECK(auto_method == COHMAP_METHOD_COMPARE ||
            auto_method == COHMAP_METHOD_FULL,
         "fallback method %s", robust_method_str(auto_method));

   /* Adaptive, fixed-with-fallback and explicitly scan regions. */
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_AUTO, 0,
                                 &r));
   CHECK(cohmap_region_method(r) != COHMAP_METHOD_SCAN &&
            cohmap_region_method(r) != COHMAP_METHOD_FAULT,
         "AUTO region on %s", robust_method_str(cohmap_region_method(r)));
   check_tracks(r, "AUTO region under seccomp");
   CHECK_OK(cohmap_region_destroy(r));

   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_SCAN,
                                 COHMAP_REGION_FALLBACK, &r));
   check_tracks(r, "scan with FALLBACK under seccomp");
   CHECK_OK(cohmap_region_destroy(r));

   int rc = cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_SCAN, 0, &r);
   CHECK(rc < 0, "a scan region without FALLBACK was created under seccomp");
   CHECK(strlen(cohmap_error_message()) > 0, "no error message");
   printf("scan without FALLBACK: %s (%s)\n", robust_errstr(rc),
          cohmap_error_message());

   CHECK_OK(cohmap_context_destroy(ctx2));
   CHECK_OK(cohmap_context_destroy(ctx));
   close(fd);
   return 0;
}

static int seccomp_eperm(void) { return seccomp_case(EPERM); }
static int seccomp_enosys(void) { return seccomp_case(ENOSYS); }

/* Root drops to nobody; anyone else already is unprivileged. */
static int
unprivileged(void)
{
   ps = robust_page_size();
   if (geteuid() == 0) {
      CHECK_SYS(setgroups(0, NULL));
      CHECK_SYS(setgid(65534));
      CHECK_SYS(setuid(65534));
      /* Changing credentials made the process non-dumpable, and its
       * /proc/self files root's: cohmap cannot open pagemap then, and
       * says so (checked here).  A process started unprivileged is
       * dumpable; become one. */
      struct cohmap_context *c = robust_context_create();
      const char *why = NULL;
      CHECK(cohmap_context_method_status(c, COHMAP_METHOD_SCAN, &why) != 0,
            "scan available in a non-dumpable process");
      CHECK(why && strstr(why, "dumpable"), "reason: %s", why);
      CHECK_OK(cohmap_context_destroy(c));
      CHECK_SYS(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0));
   }
   CHECK(geteuid() != 0, "still root");
   printf("running as uid %d; vm.unprivileged_userfaultfd is %s\n",
          (int)geteuid(), "irrelevant with UFFD_USER_MODE_ONLY");

   struct cohmap_context *ctx = robust_context_create();
   const char *reason = NULL;
   if (cohmap_context_method_status(ctx, COHMAP_METHOD_SCAN, &reason) != 0) {
      /* Only a kernel without UFFD_USER_MODE_ONLY or WP_ASYNC lacks it
       * here (then the other tests skip scan too). */
      printf("SKIP: scan unavailable unprivileged: %s\n", reason);
      CHECK_OK(cohmap_context_destroy(ctx));
      return ROBUST_SKIP;
   }
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_SCAN, 0, &r));
   CHECK(cohmap_region_method(r) == COHMAP_METHOD_SCAN, "on %s",
         robust_method_str(cohmap_region_method(r)));
   check_tracks(r, "scan, unprivileged");
   CHECK_OK(cohmap_region_destroy(r));

   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0,
                                 &r));
   check_tracks(r, "fault, unprivileged");
   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

ROBUST_MAIN(ROBUST_CASE(seccomp_eperm), ROBUST_CASE(seccomp_enosys),
            ROBUST_CASE(unprivileged))
