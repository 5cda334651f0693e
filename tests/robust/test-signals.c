/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The fault method's SIGSEGV handler must be invisible to everything that is
 * not tracked memory:
 *
 *  - a fault outside tracked memory reaches the handler installed before
 *    cohmap (SA_SIGINFO or plain), with the right siginfo, and with
 *    SIG_DFL/SIG_IGN before cohmap the process dies of SIGSEGV, exactly as
 *    without cohmap;
 *  - a handler installed after cohmap that chains to the one it replaced
 *    still gets its own faults, and tracked writes keep working through the
 *    chain, also for regions and contexts created after it.
 */

#include <setjmp.h>

#include "robust-util.h"

#define NPAGES 16

static size_t ps;

/* ---------------------------------------------------------------------- */
/* A handler that owns one page ("foreign" to cohmap) and makes it writable
 * on the first write fault. */

static volatile uint8_t *volatile own_page;
static volatile sig_atomic_t own_count;
static volatile sig_atomic_t own_bad;
static void *volatile own_last_addr;
static volatile int own_last_code;
static volatile int own_last_signo;

static void
own_siginfo_handler(int sig, siginfo_t *si, void *uc)
{
   uint8_t *a = si->si_addr;
   (void)uc;
   own_last_signo = si->si_signo;
   own_last_code = si->si_code;
   own_last_addr = si->si_addr;
   if (sig == SIGSEGV && a >= own_page && a < own_page + ps) {
      mprotect((void *)own_page, ps, PROT_READ | PROT_WRITE);
      own_count++;
   } else {
      /* Not ours: the fault repeats and kills the process. */
      own_bad++;
      signal(SIGSEGV, SIG_DFL);
   }
}

/* A plain (non-SA_SIGINFO) handler: it cannot see the address, so it
 * unprotects its page and counts. */
static void
own_plain_handler(int sig)
{
   if (sig != SIGSEGV) {
      own_bad++;
      signal(SIGSEGV, SIG_DFL);
      return;
   }
   mprotect((void *)own_page, ps, PROT_READ | PROT_WRITE);
   own_count++;
}

static void
install_own(bool siginfo)
{
   struct sigaction sa;
   memset(&sa, 0, sizeof(sa));
   sigemptyset(&sa.sa_mask);
   if (siginfo) {
      sa.sa_sigaction = own_siginfo_handler;
      sa.sa_flags = SA_SIGINFO;
   } else {
      sa.sa_handler = own_plain_handler;
   }
   CHECK_SYS(sigaction(SIGSEGV, &sa, NULL));
}

/* Writes one byte into each of the given pages of a fault region, collects,
 * and checks they are all reported. */
static void
tracked_cycle(struct cohmap_region *r, struct robust_mirror *m, unsigned seed,
              const char *what)
{
   struct cohmap_dirty d;
   for (unsigned i = 0; i < 4; i++) {
      size_t page = (seed * 7 + i * 3) % (cohmap_region_size(r) / ps);
      robust_mirror_write(m, page * ps + (seed + i) % ps,
                          (uint8_t)(0x40 + seed + i));
   }
   CHECK_COLLECT(r, &d, what);
   robust_mirror_check(m, &d, what);
}

static int
prev_handler_case(bool siginfo)
{
   struct cohmap_dirty d;

   ps = robust_page_size();
   own_page = robust_mmap(ps, PROT_READ);
   install_own(siginfo);

   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
      return ROBUST_SKIP;
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0, &r));
   CHECK(cohmap_region_method(r) == COHMAP_METHOD_FAULT, "method is %s",
         robust_method_str(cohmap_region_method(r)));
   uint8_t *p = cohmap_region_ptr(r);
   struct robust_mirror m;
   robust_mirror_init(&m, p, NPAGES * ps);

   CHECK_COLLECT(r, &d, "initial collect");
   CHECK(d.count == 0, "nothing was written, yet %zu ranges were reported",
         d.count);

   /* A tracked write is cohmap's business: the earlier handler must not
    * see it, and errno must survive the handler. */
   errno = EOWNERDEAD;
   robust_mirror_write(&m, 3 * ps + 17, 0x33);
   CHECK(errno == EOWNERDEAD, "errno changed to %d (%s) across a tracked write",
         errno, strerror(errno));
   CHECK(own_count == 0 && own_bad == 0,
         "the handler installed before cohmap saw a tracked write "
         "(count %d, unexpected %d)",
         (int)own_count, (int)own_bad);

   /* A foreign write fault goes to the earlier handler. */
   own_page[100] = 0x77;
   CHECK(own_count == 1, "earlier handler called %d times for a foreign write, "
         "expected once", (int)own_count);
   CHECK(own_bad == 0, "earlier handler got a fault it does not own");
   CHECK(own_page[100] == 0x77, "the foreign write was lost");
   if (siginfo) {
      CHECK(own_last_signo == SIGSEGV, "si_signo %d", own_last_signo);
      CHECK(own_last_code == SEGV_ACCERR, "si_code %d, expected SEGV_ACCERR",
            own_last_code);
      CHECK(own_last_addr == (void *)(own_page + 100),
            "si_addr %p, expected %p", own_last_addr,
            (void *)(own_page + 100));
   }

   CHECK_COLLECT(r, &d, "collect after the foreign fault");
   robust_mirror_check(&m, &d, "collect after the foreign fault");
   CHECK(!robust_dirty_touches(&d, 0, 3 * ps) &&
            !robust_dirty_touches(&d, 4 * ps, (NPAGES - 4) * ps),
         "fault reported a page that was not written");

   for (unsigned cycle = 0; cycle < 4; cycle++) {
      tracked_cycle(r, &m, cycle, "tracked cycle");
      CHECK_SYS(mprotect((void *)own_page, ps, PROT_READ));
      own_page[cycle] = (uint8_t)cycle + 1;
      CHECK(own_count == 2 + (int)cycle, "earlier handler count %d, expected %u",
            (int)own_count, 2 + cycle);
   }
   CHECK(own_bad == 0, "earlier handler got a fault it does not own");

   /* Foreign faults still reach it after cohmap is gone. */
   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   CHECK_SYS(mprotect((void *)own_page, ps, PROT_READ));
   int before = own_count;
   own_page[5] = 5;
   CHECK(own_count == before + 1,
         "after cohmap_context_destroy() a foreign fault did not reach the "
         "earlier handler");
   robust_mirror_fini(&m);
   munmap((void *)own_page, ps);
   return 0;
}

static int
prev_siginfo_handler_gets_foreign_faults(void)
{
   return prev_handler_case(true);
}

static int
prev_plain_handler_gets_foreign_faults(void)
{
   return prev_handler_case(false);
}

/* ---------------------------------------------------------------------- */
/* Default action. */

enum foreign_kind {
   FOREIGN_ACCERR, /* write to a PROT_READ page nobody tracks */
   FOREIGN_MAPERR, /* write to an unmapped page */
};

/*
 * In a child: set the disposition to disp, start tracking, write tracked
 * memory, then make a foreign write fault.  The child must die of SIGSEGV
 * just as it would without cohmap.
 */
static int
default_action_case(void (*disp)(int), enum foreign_kind kind)
{
   int pfd[2];

   ps = robust_page_size();
   CHECK_SYS(pipe(pfd));
   pid_t pid = robust_fork();
   if (pid == 0) {
      struct cohmap_dirty d;
      close(pfd[0]);
      robust_no_core();
      alarm(20); /* a handler that returns for a fault it cannot fix spins */
      if (disp) {
         struct sigaction sa;
         memset(&sa, 0, sizeof(sa));
         sa.sa_handler = disp;
         CHECK_SYS(sigaction(SIGSEGV, &sa, NULL));
      }
      struct cohmap_context *ctx = robust_context_create();
      if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
         robust_exit(ROBUST_SKIP);
      struct cohmap_region *r = NULL;
      CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0,
                                    &r));
      uint8_t *p = cohmap_region_ptr(r);
      struct robust_mirror m;
      robust_mirror_init(&m, p, NPAGES * ps);
      CHECK_COLLECT(r, &d, "child: initial collect");
      tracked_cycle(r, &m, 1, "child: tracked writes");
      robust_mirror_write(&m, 9 * ps, 9); /* leave one page unprotected */

      volatile uint8_t *target;
      if (kind == FOREIGN_ACCERR) {
         target = robust_mmap(ps, PROT_READ);
      } else {
         target = robust_mmap(ps, PROT_READ);
         munmap((void *)target, ps);
      }
      CHECK(write(pfd[1], "R", 1) == 1, "write pipe");
      *target = 1;
      /* Still alive: cohmap swallowed the fault. */
      CHECK(write(pfd[1], "S", 1) == 1, "write pipe");
      _exit(3);
   }
   close(pfd[1]);
   char buf[4] = {0};
   ssize_t n = 0, k;
   while (n < 2 && (k = read(pfd[0], buf + n, 2 - n)) > 0)
      n += k;
   close(pfd[0]);
   int status = robust_waitpid(pid);
   char sbuf[96];
   robust_status_str(status, sbuf, sizeof(sbuf));
   if (WIFEXITED(status) && WEXITSTATUS(status) == ROBUST_SKIP)
      return ROBUST_SKIP;
   CHECK(n >= 1 && buf[0] == 'R',
         "the child failed before its foreign write (%s)", sbuf);
   CHECK(n == 1, "the child survived a write to %s memory nobody handles "
         "(%s)", kind == FOREIGN_ACCERR ? "read-only" : "unmapped", sbuf);
   if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) {
      printf("child died of SIGSEGV, as it would without cohmap\n");
      return 0;
   }
   /* AddressSanitizer's own SIGSEGV handler (if it was the previous one)
    * reports and exits instead. */
   CHECK(ROBUST_ASAN && !(WIFEXITED(status) && WEXITSTATUS(status) == 0) &&
            !(WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM),
         "child %s, expected death by SIGSEGV", sbuf);
   printf("child %s (accepted under AddressSanitizer)\n", sbuf);
   return 0;
}

/* Whatever disposition the process had (SIG_DFL, or ASan's handler). */
static int
default_inherited_accerr_dies(void)
{
   return default_action_case(NULL, FOREIGN_ACCERR);
}

static int
default_sig_dfl_accerr_dies(void)
{
   return default_action_case(SIG_DFL, FOREIGN_ACCERR);
}

static int
default_sig_dfl_maperr_dies(void)
{
   return default_action_case(SIG_DFL, FOREIGN_MAPERR);
}

/* The kernel kills a process whose SIGSEGV is ignored when a fault is not
 * handled; cohmap must not turn that into an endless fault loop. */
static int
default_sig_ign_accerr_dies(void)
{
   return default_action_case(SIG_IGN, FOREIGN_ACCERR);
}

/* ---------------------------------------------------------------------- */
/* A handler installed after cohmap that chains. */

static struct sigaction later_old;
static volatile uint8_t *volatile later_page;
static volatile sig_atomic_t later_own;
static volatile sig_atomic_t later_chained;

static void
later_handler(int sig, siginfo_t *si, void *uc)
{
   uint8_t *a = si->si_addr;
   if (a >= later_page && a < later_page + ps) {
      mprotect((void *)later_page, ps, PROT_READ | PROT_WRITE);
      later_own++;
      return;
   }
   later_chained++;
   if (later_old.sa_flags & SA_SIGINFO) {
      later_old.sa_sigaction(sig, si, uc);
   } else if (later_old.sa_handler == SIG_DFL ||
              later_old.sa_handler == SIG_IGN) {
      signal(SIGSEGV, SIG_DFL); /* the fault repeats and kills */
   } else {
      later_old.sa_handler(sig);
   }
}

static void
install_later(void)
{
   struct sigaction sa;
   memset(&sa, 0, sizeof(sa));
   sigemptyset(&sa.sa_mask);
   sa.sa_sigaction = later_handler;
   sa.sa_flags = SA_SIGINFO;
   CHECK_SYS(sigaction(SIGSEGV, &sa, &later_old));
}

static int
later_handler_chains_to_cohmap(void)
{
   struct cohmap_dirty d;

   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
      return ROBUST_SKIP;
   struct cohmap_region *r1 = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0, &r1));
   struct robust_mirror m1;
   robust_mirror_init(&m1, cohmap_region_ptr(r1), NPAGES * ps);
   CHECK_COLLECT(r1, &d, "r1 initial");
   tracked_cycle(r1, &m1, 1, "r1 before the later handler");

   later_page = robust_mmap(ps, PROT_READ);
   install_later();
   CHECK((later_old.sa_flags & SA_SIGINFO) ||
            (later_old.sa_handler != SIG_DFL && later_old.sa_handler != SIG_IGN),
         "no SIGSEGV handler is installed while a fault region exists");

   /* Its own fault. */
   later_page[1] = 1;
   CHECK(later_own == 1 && later_chained == 0,
         "later handler: own %d chained %d after a write to its page",
         (int)later_own, (int)later_chained);

   /* Tracked writes through the chain, over several re-arm cycles. */
   for (unsigned cycle = 0; cycle < 4; cycle++) {
      int before = later_chained;
      tracked_cycle(r1, &m1, 10 + cycle, "r1 through the chain");
      CHECK(later_chained > before,
            "tracked writes did not fault (chained %d)", (int)later_chained);
   }

   /* A region and a context created after the later handler: cohmap must
    * not take the handler back (the later one would stop seeing its faults)
    * nor recurse into itself. */
   struct cohmap_context *ctx2 = robust_context_create();
   struct cohmap_region *r2 = NULL, *r3 = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0, &r2));
   CHECK_OK(cohmap_region_create(ctx2, NPAGES * ps, COHMAP_METHOD_FAULT, 0, &r3));
   struct robust_mirror m2, m3;
   robust_mirror_init(&m2, cohmap_region_ptr(r2), NPAGES * ps);
   robust_mirror_init(&m3, cohmap_region_ptr(r3), NPAGES * ps);
   CHECK_COLLECT(r2, &d, "r2 initial");
   CHECK_COLLECT(r3, &d, "r3 initial");

   CHECK_SYS(mprotect((void *)later_page, ps, PROT_READ));
   later_page[2] = 2;
   CHECK(later_own == 2, "later handler lost its own fault after new regions "
         "were created (own %d)", (int)later_own);

   for (unsigned cycle = 0; cycle < 3; cycle++) {
      tracked_cycle(r1, &m1, 20 + cycle, "r1 after new regions");
      tracked_cycle(r2, &m2, 30 + cycle, "r2 created after the later handler");
      tracked_cycle(r3, &m3, 40 + cycle, "r3 in a context created after it");
      CHECK_SYS(mprotect((void *)later_page, ps, PROT_READ));
      later_page[3] = (uint8_t)cycle;
      CHECK(later_own == 3 + (int)cycle, "later handler own %d, expected %u",
            (int)later_own, 3 + cycle);
   }

   /* A fault nobody owns still kills (later -> cohmap -> the disposition
    * the process had before cohmap). */
   pid_t pid = robust_fork();
   if (pid == 0) {
      robust_no_core();
      alarm(20);
      volatile uint8_t *nobody = robust_mmap(ps, PROT_READ);
      *nobody = 1;
      _exit(3);
   }
   int status = robust_waitpid(pid);
   char sbuf[96];
   robust_status_str(status, sbuf, sizeof(sbuf));
   if (ROBUST_ASAN) {
      CHECK(!(WIFEXITED(status) && (WEXITSTATUS(status) == 0 ||
                                    WEXITSTATUS(status) == 3)) &&
               !(WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM),
            "child writing memory nobody handles %s", sbuf);
   } else {
      CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
            "child writing memory nobody handles %s, expected SIGSEGV", sbuf);
   }

   CHECK_OK(cohmap_region_destroy(r3));
   CHECK_OK(cohmap_region_destroy(r2));
   CHECK_OK(cohmap_region_destroy(r1));
   CHECK_OK(cohmap_context_destroy(ctx2));
   CHECK_OK(cohmap_context_destroy(ctx));
   robust_mirror_fini(&m1);
   robust_mirror_fini(&m2);
   robust_mirror_fini(&m3);

   /* Still gets its own faults with cohmap gone. */
   CHECK_SYS(mprotect((void *)later_page, ps, PROT_READ));
   int before = later_own;
   later_page[4] = 4;
   CHECK(later_own == before + 1, "later handler lost its fault after cohmap "
         "was destroyed");
   munmap((void *)later_page, ps);
   return 0;
}

/* ---------------------------------------------------------------------- */
/* Signals sent with kill()/raise(): not faults, never cohmap's. */

static volatile sig_atomic_t kill_count;
static volatile int kill_code;
static volatile pid_t kill_pid;

static void
kill_handler(int sig, siginfo_t *si, void *uc)
{
   (void)sig;
   (void)uc;
   kill_code = si->si_code;
   kill_pid = si->si_pid;
   kill_count++;
}

static int
sent_sigsegv_reaches_prev_handler(void)
{
   struct sigaction sa;
   struct cohmap_dirty d;

   ps = robust_page_size();
   memset(&sa, 0, sizeof(sa));
   sa.sa_sigaction = kill_handler;
   sa.sa_flags = SA_SIGINFO;
   CHECK_SYS(sigaction(SIGSEGV, &sa, NULL));
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
      return ROBUST_SKIP;
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0, &r));
   struct robust_mirror m;
   robust_mirror_init(&m, cohmap_region_ptr(r), NPAGES * ps);
   CHECK_COLLECT(r, &d, "initial");
   tracked_cycle(r, &m, 1, "before kill");

   CHECK_SYS(kill(getpid(), SIGSEGV));
   CHECK(kill_count == 1, "kill(SIGSEGV) reached the earlier handler %d times",
         (int)kill_count);
   CHECK(kill_code == SI_USER && kill_pid == getpid(),
         "kill(SIGSEGV): earlier handler saw si_code %d si_pid %d, expected "
         "SI_USER from %d", kill_code, (int)kill_pid, (int)getpid());
   CHECK(raise(SIGSEGV) == 0, "raise");
   CHECK(kill_count == 2, "raise(SIGSEGV) reached the earlier handler %d "
         "times in all", (int)kill_count);
   CHECK(kill_code == SI_TKILL, "raise(SIGSEGV): si_code %d, expected SI_TKILL",
         kill_code);
   tracked_cycle(r, &m, 2, "after kill");
   CHECK(kill_count == 2, "tracked writes reached the earlier handler");

   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   robust_mirror_fini(&m);
   return 0;
}

/* kill(getpid(), SIGSEGV) with SIG_DFL kills, with SIG_IGN is ignored. */
static int
sent_sigsegv_case(void (*disp)(int))
{
   ps = robust_page_size();
   pid_t pid = robust_fork();
   if (pid == 0) {
      struct cohmap_dirty d;
      robust_no_core();
      alarm(20);
      struct sigaction sa;
      memset(&sa, 0, sizeof(sa));
      sa.sa_handler = disp;
      CHECK_SYS(sigaction(SIGSEGV, &sa, NULL));
      struct cohmap_context *ctx = robust_context_create();
      if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
         robust_exit(ROBUST_SKIP);
      struct cohmap_region *r = NULL;
      CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0,
                                    &r));
      struct robust_mirror m;
      robust_mirror_init(&m, cohmap_region_ptr(r), NPAGES * ps);
      CHECK_COLLECT(r, &d, "child: initial");
      tracked_cycle(r, &m, 1, "child: before kill");
      CHECK_SYS(kill(getpid(), SIGSEGV));
      if (disp == SIG_DFL)
         _exit(3); /* should be dead */
      tracked_cycle(r, &m, 2, "child: after an ignored kill");
      CHECK_OK(cohmap_region_destroy(r));
      CHECK_OK(cohmap_context_destroy(ctx));
      robust_exit(0);
   }
   int status = robust_waitpid(pid);
   char sbuf[96];
   robust_status_str(status, sbuf, sizeof(sbuf));
   if (WIFEXITED(status) && WEXITSTATUS(status) == ROBUST_SKIP)
      return ROBUST_SKIP;
   if (disp == SIG_IGN) {
      CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "SIGSEGV sent with kill() while ignored: child %s, expected it to "
            "be ignored (exit 0)", sbuf);
   } else if (!ROBUST_ASAN || WIFSIGNALED(status)) {
      CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
            "SIGSEGV sent with kill() under SIG_DFL: child %s, expected death "
            "by SIGSEGV", sbuf);
   } else {
      CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0 &&
               WEXITSTATUS(status) != 3,
            "SIGSEGV sent with kill() under SIG_DFL: child %s", sbuf);
   }
   return 0;
}

static int sent_sigsegv_dfl_kills(void) { return sent_sigsegv_case(SIG_DFL); }
static int sent_sigsegv_ign_ignored(void) { return sent_sigsegv_case(SIG_IGN); }

/* ---------------------------------------------------------------------- */
/* A one-shot (SA_RESETHAND) crash handler installed before cohmap: without
 * cohmap, a foreign fault runs it once, the disposition resets to SIG_DFL,
 * the faulting store re-executes and the process dies of SIGSEGV. */

static int resethand_pipe = -1;

static void
resethand_siginfo(int sig, siginfo_t *si, void *uc)
{
   (void)sig;
   (void)si;
   (void)uc;
   if (write(resethand_pipe, "H", 1) != 1) {
   }
}

static void
resethand_plain(int sig)
{
   (void)sig;
   if (write(resethand_pipe, "H", 1) != 1) {
   }
}

static int
resethand_case(bool siginfo)
{
   int pfd[2];

   ps = robust_page_size();
   CHECK_SYS(pipe(pfd));
   pid_t pid = robust_fork();
   if (pid == 0) {
      struct cohmap_dirty d;
      close(pfd[0]);
      resethand_pipe = pfd[1];
      robust_no_core();
      alarm(5);
      struct sigaction sa;
      memset(&sa, 0, sizeof(sa));
      if (siginfo) {
         sa.sa_sigaction = resethand_siginfo;
         sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
      } else {
         sa.sa_handler = resethand_plain;
         sa.sa_flags = SA_RESETHAND;
      }
      CHECK_SYS(sigaction(SIGSEGV, &sa, NULL));
      struct cohmap_context *ctx = robust_context_create();
      if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
         robust_exit(ROBUST_SKIP);
      struct cohmap_region *r = NULL;
      CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0,
                                    &r));
      struct robust_mirror m;
      robust_mirror_init(&m, cohmap_region_ptr(r), NPAGES * ps);
      CHECK_COLLECT(r, &d, "child: initial");
      tracked_cycle(r, &m, 1, "child: tracked writes");
      volatile uint8_t *ro = robust_mmap(ps, PROT_READ);
      CHECK(write(pfd[1], "R", 1) == 1, "pipe");
      *ro = 1;
      _exit(3);
   }
   close(pfd[1]);
   /* Count the handler's calls; a looping child is stopped at 100. */
   char buf[128];
   size_t n = 0;
   ssize_t k;
   bool looping = false;
   while ((k = read(pfd[0], buf + n, sizeof(buf) - 1 - n)) > 0) {
      n += (size_t)k;
      if (n > 100) {
         looping = true;
         kill(pid, SIGKILL);
         break;
      }
   }
   close(pfd[0]);
   buf[n] = 0;
   int status = robust_waitpid(pid);
   char sbuf[96];
   robust_status_str(status, sbuf, sizeof(sbuf));
   if (looping)
      snprintf(sbuf, sizeof(sbuf), "looping, killed by the test");
   if (WIFEXITED(status) && WEXITSTATUS(status) == ROBUST_SKIP)
      return ROBUST_SKIP;
   size_t calls = n > 0 ? n - 1 : 0;
   CHECK(n >= 1 && buf[0] == 'R', "child failed before its foreign write (%s)",
         sbuf);
   CHECK(calls == 1,
         "a SA_RESETHAND handler installed before cohmap ran %s%zu times for "
         "one foreign fault (child %s); without cohmap it runs once and the "
         "process then dies of SIGSEGV", looping ? "at least " : "", calls,
         sbuf);
   if (ROBUST_ASAN && !WIFSIGNALED(status))
      CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0 &&
               WEXITSTATUS(status) != 3, "child %s", sbuf);
   else
      CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
            "child %s, expected death by SIGSEGV after the one-shot handler",
            sbuf);
   return 0;
}

static int prev_resethand_siginfo_runs_once(void) { return resethand_case(true); }
static int prev_resethand_plain_runs_once(void) { return resethand_case(false); }

/* ---------------------------------------------------------------------- */
/* A test harness (cmocka does this around every test) restores the
 * disposition cohmap replaced; the next fault region brings cohmap's
 * handler back, and the older regions work again. */
static int
restored_disposition_is_reinstalled(void)
{
   struct sigaction before;
   struct cohmap_dirty d;

   ps = robust_page_size();
   CHECK_SYS(sigaction(SIGSEGV, NULL, &before));
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
      return ROBUST_SKIP;
   struct cohmap_region *r1 = NULL, *r2 = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0, &r1));
   struct robust_mirror m1, m2;
   robust_mirror_init(&m1, cohmap_region_ptr(r1), NPAGES * ps);
   CHECK_COLLECT(r1, &d, "r1 initial");
   tracked_cycle(r1, &m1, 1, "r1");
   CHECK_OK(cohmap_region_destroy(r1));

   for (int round = 0; round < 2; round++) {
      /* The harness puts back what it saw before the test. */
      CHECK_SYS(sigaction(SIGSEGV, &before, NULL));
      CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0,
                                    &r1));
      robust_mirror_init(&m1, cohmap_region_ptr(r1), NPAGES * ps);
      CHECK_COLLECT(r1, &d, "r1 initial");
      tracked_cycle(r1, &m1, 2, "region created after the restore");
      /* Again with a region alive across the restore. */
      CHECK_SYS(sigaction(SIGSEGV, &before, NULL));
      CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0,
                                    &r2));
      robust_mirror_init(&m2, cohmap_region_ptr(r2), NPAGES * ps);
      CHECK_COLLECT(r2, &d, "r2 initial");
      tracked_cycle(r1, &m1, 3, "region alive across the restore");
      tracked_cycle(r2, &m2, 4, "region created after the second restore");
      CHECK_OK(cohmap_region_destroy(r2));
      CHECK_OK(cohmap_region_destroy(r1));
      robust_mirror_fini(&m1);
      robust_mirror_fini(&m2);
   }
   CHECK_OK(cohmap_context_destroy(ctx));
   return 0;
}

/* ---------------------------------------------------------------------- */
/* "Is this address writable?" probes (Wine, JVMs, safe-read helpers): the
 * handler installed before cohmap siglongjmp()s out of a foreign fault.
 * Tracked writes in between keep working; a tracked write inside the probe
 * never reaches the probe handler. */

static sigjmp_buf probe_env;
static volatile sig_atomic_t probe_jumps;

static void
probe_handler(int sig, siginfo_t *si, void *uc)
{
   (void)sig;
   (void)si;
   (void)uc;
   probe_jumps++;
   siglongjmp(probe_env, 1);
}

static int
prev_handler_siglongjmp(void)
{
   struct sigaction sa;
   struct cohmap_dirty d;

   ps = robust_page_size();
   memset(&sa, 0, sizeof(sa));
   sa.sa_sigaction = probe_handler;
   sa.sa_flags = SA_SIGINFO;
   CHECK_SYS(sigaction(SIGSEGV, &sa, NULL));
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
      return ROBUST_SKIP;
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0, &r));
   volatile uint8_t *tracked = cohmap_region_ptr(r);
   static struct robust_mirror m;
   robust_mirror_init(&m, cohmap_region_ptr(r), NPAGES * ps);
   CHECK_COLLECT(r, &d, "initial");
   volatile uint8_t *ro = robust_mmap(ps, PROT_READ);

   for (volatile unsigned i = 0; i < 40; i++) {
      robust_mirror_write(&m, (i % NPAGES) * ps + i, (uint8_t)(i + 1));
      if (sigsetjmp(probe_env, 1) == 0) {
         ro[i] = 1;
         CHECK(false, "a write to read-only memory succeeded");
      }
      CHECK(probe_jumps == (int)i + 1, "probe %u: %d jumps", i,
            (int)probe_jumps);
      /* A tracked write inside a probe is cohmap's, not the prober's. */
      if (sigsetjmp(probe_env, 1) == 0) {
         size_t off = ((i * 5 + 3) % NPAGES) * ps + 2 * i;
         tracked[off] = (uint8_t)(0x80 + i);
         m.pending[off] = 1;
      } else {
         CHECK(false, "a tracked write inside a probe reached the probe "
               "handler");
      }
      if (i % 8 == 7) {
         CHECK_COLLECT(r, &d, "collect between probes");
         robust_mirror_check(&m, &d, "collect between probes");
      }
   }
   CHECK_COLLECT(r, &d, "final collect");
   robust_mirror_check(&m, &d, "final collect");
   sigset_t cur;
   sigprocmask(SIG_SETMASK, NULL, &cur);
   CHECK(!sigismember(&cur, SIGSEGV), "SIGSEGV left blocked");
   CHECK_OK(cohmap_region_destroy(r));
   CHECK_OK(cohmap_context_destroy(ctx));
   robust_mirror_fini(&m);
   munmap((void *)ro, ps);
   return 0;
}

/* ---------------------------------------------------------------------- */
/* After a fault region is destroyed, its range is not cohmap's: a write
 * fault there (the caller protected its memory itself, or a new mapping
 * took the place of an owned region) takes the normal course. */
static int
destroyed_region_is_not_claimed(void)
{
   struct cohmap_dirty d;

   ps = robust_page_size();
   struct cohmap_context *ctx = robust_context_create();
   if (robust_method_unavailable(ctx, COHMAP_METHOD_FAULT))
      return ROBUST_SKIP;

   /* Wrapped: the memory stays, read-write, then the caller protects it. */
   uint8_t *mem = robust_mmap(NPAGES * ps, PROT_READ | PROT_WRITE);
   struct cohmap_region *r = NULL;
   CHECK_OK(cohmap_region_wrap(ctx, mem, NPAGES * ps, COHMAP_METHOD_FAULT, 0,
                               &r));
   CHECK_COLLECT(r, &d, "initial");
   mem[ps] = 1; /* page 1 unprotected, page 2 still protected */
   CHECK_OK(cohmap_region_destroy(r));
   for (size_t pg = 0; pg < NPAGES; pg++)
      ((volatile uint8_t *)mem)[pg * ps + 2] = 2; /* all writable again */
   robust_expect_foreign_fault_kills(mem + 2 * ps, "wrapped, destroyed");

   /* Owned: a new mapping where the region was. */
   CHECK_OK(cohmap_region_create(ctx, NPAGES * ps, COHMAP_METHOD_FAULT, 0, &r));
   uint8_t *p = cohmap_region_ptr(r);
   CHECK_COLLECT(r, &d, "initial");
   p[ps] = 1;
   CHECK_OK(cohmap_region_destroy(r));
   void *again = mmap(p, NPAGES * ps, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
   CHECK(again == p, "mmap where the region was: %s", strerror(errno));
   robust_expect_foreign_fault_kills(p + 3 * ps, "owned, destroyed");

   CHECK_OK(cohmap_context_destroy(ctx));
   munmap(mem, NPAGES * ps);
   munmap(again, NPAGES * ps);
   return 0;
}

ROBUST_MAIN(ROBUST_CASE(prev_siginfo_handler_gets_foreign_faults),
            ROBUST_CASE(prev_plain_handler_gets_foreign_faults),
            ROBUST_CASE(default_inherited_accerr_dies),
            ROBUST_CASE(default_sig_dfl_accerr_dies),
            ROBUST_CASE(default_sig_dfl_maperr_dies),
            ROBUST_CASE(default_sig_ign_accerr_dies),
            ROBUST_CASE(later_handler_chains_to_cohmap),
            ROBUST_CASE(sent_sigsegv_reaches_prev_handler),
            ROBUST_CASE(sent_sigsegv_dfl_kills),
            ROBUST_CASE(sent_sigsegv_ign_ignored),
            ROBUST_CASE(prev_resethand_siginfo_runs_once),
            ROBUST_CASE(prev_resethand_plain_runs_once),
            ROBUST_CASE(restored_disposition_is_reinstalled),
            ROBUST_CASE(prev_handler_siglongjmp),
            ROBUST_CASE(destroyed_region_is_not_claimed))
