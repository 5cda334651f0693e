/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The cohmap command: one binary with subcommands, in the style of
 * libinput's and xkbcommon's tools.  bin/cohmap builds it and runs it.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cohmap/cohmap.h"
#include "tools/bench.h"
#include "track/track_priv.h"

static void
usage(FILE *f)
{
   fprintf(f,
           "Usage: cohmap <command> [options]\n"
           "\n"
           "Commands:\n"
           "  bench      measure what each tracking method costs per\n"
           "             submission, and how the automatic choice compares\n"
           "  info       probe this machine: kernel, THP, limits, and which\n"
           "             tracking methods work here\n"
           "  version    print the version\n"
           "  help       print this help\n"
           "\n"
           "'cohmap <command> --help' describes a command.\n"
           "Environment knobs (COHMAP_DEBUG, COHMAP_METHOD, ...): "
           "docs/envvars.md.\n");
}

static void
info_usage(FILE *f)
{
   fprintf(f,
           "Usage: cohmap info\n"
           "\n"
           "Prints the kernel, page size, transparent huge page mode,\n"
           "vm.max_map_count and, for each tracking method, 'available' or\n"
           "why it is not.  Exits 0 when the preferred method (scan) works,\n"
           "2 when cohmap has to fall back.\n");
}

static int
cmd_info(int argc, char **argv)
{
   for (int i = 1; i < argc; i++) {
      if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
         info_usage(stdout);
         return 0;
      }
      fprintf(stderr, "cohmap info: unknown option '%s'\n", argv[i]);
      info_usage(stderr);
      return 1;
   }

   struct cohmap_sysinfo si;
   cohmap_sysinfo_read(&si);

   printf("cohmap %d.%d.%d\n", COHMAP_VERSION_MAJOR, COHMAP_VERSION_MINOR,
          COHMAP_VERSION_MICRO);
   printf("kernel:                  %s\n", si.kernel);
   printf("page size:               %zu\n", si.page_size);
   printf("transparent huge pages:  %s\n", si.thp_enabled);
   printf("vm.max_map_count:        %ld (this process uses %ld)\n",
          si.max_map_count, si.map_count);
   printf("vm.unprivileged_userfaultfd: %d%s\n", si.unprivileged_userfaultfd,
          si.unprivileged_userfaultfd == 0
             ? " (fine: cohmap uses UFFD_USER_MODE_ONLY)"
             : "");
   printf("seccomp:                 %s\n",
          si.seccomp == 0   ? "off"
          : si.seccomp == 1 ? "strict"
          : si.seccomp == 2 ? "filter"
                            : "unknown");

   struct cohmap_context *ctx;
   int ret = cohmap_context_create(NULL, &ctx);
   if (ret) {
      fprintf(stderr, "cohmap info: cannot create a context: %s\n",
              cohmap_error_message());
      return 1;
   }

   printf("methods:\n");
   for (int m = COHMAP_METHOD_SCAN; m < COHMAP_METHOD_COUNT; m++) {
      const char *reason = NULL;
      int st = cohmap_context_method_status(ctx, (enum cohmap_method)m,
                                            &reason);
      if (st == 0)
         printf("  %-8s available\n", cohmap_method_name(m));
      else
         printf("  %-8s unavailable: %s (%s)\n", cohmap_method_name(m),
                reason, strerror(-st));
   }
   enum cohmap_method auto_m = cohmap_context_auto_method(ctx);
   printf("auto method:             %s\n", cohmap_method_name(auto_m));
   if (si.max_map_count > 0)
      printf("fault limit:             about %ld scattered dirty pages per "
             "collect before\n"
             "                         mprotect hits vm.max_map_count and "
             "cohmap falls back\n",
             (si.max_map_count - si.map_count) / 2);

   ret = cohmap_context_method_status(ctx, COHMAP_METHOD_SCAN, NULL) == 0
            ? 0
            : 2;
   cohmap_context_destroy(ctx);
   return ret;
}

int
main(int argc, char **argv)
{
   if (argc < 2) {
      usage(stderr);
      return 1;
   }

   const char *cmd = argv[1];
   if (!strcmp(cmd, "bench"))
      return cohmap_tool_bench(argc - 1, argv + 1);
   if (!strcmp(cmd, "info"))
      return cmd_info(argc - 1, argv + 1);
   if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
      printf("cohmap %d.%d.%d\n", COHMAP_VERSION_MAJOR, COHMAP_VERSION_MINOR,
             COHMAP_VERSION_MICRO);
      return 0;
   }
   if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
      usage(stdout);
      return 0;
   }
   fprintf(stderr, "cohmap: unknown command '%s'\n\n", cmd);
   usage(stderr);
   return 1;
}
