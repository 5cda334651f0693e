/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The cohmap command: one binary with subcommands, in the style of
 * libinput's and xkbcommon's tools.  bin/cohmap builds it and runs it.
 */

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
           "  run        run a program with the Vulkan layer\n"
           "             VK_LAYER_COHMAP_coherent_memory enabled\n"
           "  piglit     cohmap's piglit profile on zink through the layer\n"
           "             and without it, with a parity table\n"
           "  glmark2    glmark2's buffer scene on zink through the layer\n"
           "             and without it, side by side\n"
           "  soak       ring and glmark2 for N minutes through the layer\n"
           "             with COHMAP_DEBUG=verify: leaks, lost writes\n"
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

static void
run_usage(FILE *f)
{
   fprintf(f,
           "Usage: cohmap run [--gl] [--mode MODE] -- COMMAND [ARGS...]\n"
           "\n"
           "Runs COMMAND with the Vulkan layer VK_LAYER_COHMAP_coherent_memory\n"
           "enabled (VK_INSTANCE_LAYERS), taken from the build tree when this\n"
           "tool runs from one (VK_LAYER_PATH), else from the installed\n"
           "manifest.  docs/vulkan.md describes the layer.\n"
           "\n"
           "  --gl         also run OpenGL on zink over Vulkan\n"
           "               (LIBGL_ALWAYS_SOFTWARE=1 GALLIUM_DRIVER=zink), so that\n"
           "               GL 4.4 coherent buffer storage goes through the layer\n"
           "  --mode MODE  set COHMAP_MODE (auto, off, shadow, direct,\n"
           "               device-local; default: the environment's, else auto)\n");
}

/* Prepends value to the colon-separated list in variable name. */
static int
env_prepend(const char *name, const char *value)
{
   const char *old = getenv(name);
   char buf[PATH_MAX * 2];
   int n = old && *old ? snprintf(buf, sizeof(buf), "%s:%s", value, old)
                       : snprintf(buf, sizeof(buf), "%s", value);
   if (n < 0 || (size_t)n >= sizeof(buf))
      return -ENAMETOOLONG;
   return setenv(name, buf, 1) ? -errno : 0;
}

static int
cmd_run(int argc, char **argv)
{
   bool gl = false;
   const char *mode = NULL;
   int i = 1;
   for (; i < argc; i++) {
      if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
         run_usage(stdout);
         return 0;
      } else if (!strcmp(argv[i], "--gl")) {
         gl = true;
      } else if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
         mode = argv[++i];
      } else if (!strcmp(argv[i], "--")) {
         i++;
         break;
      } else if (argv[i][0] == '-') {
         fprintf(stderr, "cohmap run: unknown option '%s'\n", argv[i]);
         run_usage(stderr);
         return 1;
      } else {
         break;
      }
   }
   if (i >= argc) {
      fprintf(stderr, "cohmap run: no command given\n");
      run_usage(stderr);
      return 1;
   }

   /* Built tree: <build>/src/cohmap beside <build>/src/vulkan/dev/. */
   char exe[PATH_MAX];
   ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
   if (len > 0) {
      exe[len] = '\0';
      char *slash = strrchr(exe, '/');
      char dir[PATH_MAX + 64], json[PATH_MAX + 128];
      if (slash) {
         *slash = '\0';
         snprintf(dir, sizeof(dir), "%s/vulkan/dev", exe);
         snprintf(json, sizeof(json),
                  "%s/VkLayer_COHMAP_coherent_memory_dev.json", dir);
         /* The system's explicit layers stay findable (validation). */
         if (access(json, R_OK) == 0 &&
             (env_prepend("VK_LAYER_PATH",
                          "/usr/share/vulkan/explicit_layer.d") ||
              env_prepend("VK_LAYER_PATH", dir))) {
            fprintf(stderr, "cohmap run: VK_LAYER_PATH too long\n");
            return 1;
         }
      }
   }
   if (env_prepend("VK_INSTANCE_LAYERS", "VK_LAYER_COHMAP_coherent_memory")) {
      fprintf(stderr, "cohmap run: VK_INSTANCE_LAYERS too long\n");
      return 1;
   }
   if (mode)
      setenv("COHMAP_MODE", mode, 1);
   if (gl) {
      setenv("LIBGL_ALWAYS_SOFTWARE", "1", 1);
      setenv("GALLIUM_DRIVER", "zink", 1);
   }
   execvp(argv[i], argv + i);
   fprintf(stderr, "cohmap run: cannot run '%s': %s\n", argv[i],
           strerror(errno));
   return 127;
}

/*
 * piglit, glmark2 and soak drive other programs and parse their results,
 * which Python does better: these subcommands run the scripts
 * bin/cohmap-<command> of the source tree this tool was built from,
 * telling them the build tree (the layer's manifest) in COHMAP_BUILD_DIR.
 */
static int
cmd_script(const char *cmd, char **argv)
{
   char exe[PATH_MAX];
   ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
   if (len > 0) {
      exe[len] = '\0';
      /* <build>/src/cohmap: the build tree is two levels up. */
      for (int up = 0; up < 2; up++) {
         char *slash = strrchr(exe, '/');
         if (slash)
            *slash = '\0';
      }
      if (!getenv("COHMAP_BUILD_DIR"))
         setenv("COHMAP_BUILD_DIR", exe, 1);
   }
   char script[PATH_MAX];
   int n = snprintf(script, sizeof(script), "%s/bin/cohmap-%s",
                    COHMAP_SOURCE_DIR, cmd);
   if (n < 0 || (size_t)n >= sizeof(script)) {
      fprintf(stderr, "cohmap %s: source path too long\n", cmd);
      return 1;
   }
   argv[0] = script;
   execv(script, argv);
   fprintf(stderr,
           "cohmap %s: cannot run %s: %s (the source tree this tool was "
           "built from)\n",
           cmd, script, strerror(errno));
   return 127;
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
   if (!strcmp(cmd, "run"))
      return cmd_run(argc - 1, argv + 1);
   if (!strcmp(cmd, "piglit") || !strcmp(cmd, "glmark2") ||
       !strcmp(cmd, "soak"))
      return cmd_script(cmd, argv + 1);
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
