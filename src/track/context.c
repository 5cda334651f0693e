/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "track/options.h"
#include "track/track_priv.h"
#include "util/debug.h"
#include "util/log.h"

size_t cohmap_page_size_cached;

/* Fault widening default: 16 pages (64 KiB) bounds the over-report of a
 * sequential writer to 64 KiB per run while cutting its faults 16-fold;
 * apitrace's glmemshadow doubles without bound, which over-reports whole
 * buffers. */
#define FAULT_MAX_WIDEN_DEFAULT 16
#define FAULT_MAX_WIDEN_LIMIT   4096

static const struct cohmap_debug_named_value debug_table[] = {
   {"verbose", COHMAP_DEBUG_VERBOSE,
    "print probing, method choices and every error"},
   {"stats", COHMAP_DEBUG_STATS,
    "print region figures at destroy; devices: per-BO and total figures"},
   {"nocal", COHMAP_DEBUG_NOCAL,
    "do not calibrate the policy: use its built-in costs"},
   {"verify", COHMAP_DEBUG_VERIFY,
    "after each flush compare flushed BOs with the device; report misses"},
   COHMAP_DEBUG_NAMED_VALUE_END,
};

/* COHMAP_METHOD's values.  auto-fault is not a method: a region always
 * runs one of the four, and whether the policy may pick fault is the
 * context's setting (COHMAP_CONTEXT_AUTO_FAULT).  It sits here, past the
 * enum, so that COHMAP_METHOD=help lists every value; cohmap_method_name()
 * and cohmap_method_from_name() skip it. */
#define METHOD_ENV_AUTO_FAULT COHMAP_METHOD_COUNT

static const struct cohmap_debug_named_value method_table[] = {
   {"auto", COHMAP_METHOD_AUTO,
    "adaptive policy among scan, compare and full"},
   {"auto-fault", METHOD_ENV_AUTO_FAULT,
    "adaptive policy that may also use fault (kernel writes into tracked "
    "memory fail)"},
   {"scan", COHMAP_METHOD_SCAN, "userfaultfd write-protect + PAGEMAP_SCAN"},
   {"fault", COHMAP_METHOD_FAULT,
    "mprotect + SIGSEGV (kernel writes into tracked memory fail)"},
   {"compare", COHMAP_METHOD_COMPARE, "compare with a snapshot"},
   {"full", COHMAP_METHOD_FULL, "report everything"},
   COHMAP_DEBUG_NAMED_VALUE_END,
};

COHMAP_EXPORT const char *
cohmap_method_name(enum cohmap_method m)
{
   for (const struct cohmap_debug_named_value *v = method_table; v->name;
        v++) {
      if (v->value == (uint64_t)m && v->value < COHMAP_METHOD_COUNT)
         return v->name;
   }
   return NULL;
}

COHMAP_EXPORT int
cohmap_method_from_name(const char *name, enum cohmap_method *out)
{
   uint64_t v;

   if (!name || !out)
      return cohmap_errorf(-EINVAL, "NULL method name or out pointer");
   if (cohmap_debug_parse_enum(name, method_table, &v) != 0)
      return cohmap_errorf(-EINVAL, "unknown method '%s'", name);
   if (v >= COHMAP_METHOD_COUNT)
      return cohmap_errorf(-EINVAL, "'%s' is a policy setting, not a "
                           "method (COHMAP_CONTEXT_AUTO_FAULT)", name);
   *out = (enum cohmap_method)v;
   return 0;
}

COHMAP_EXPORT void
cohmap_context_options_init(struct cohmap_context_options *opts)
{
   if (!opts)
      return;
   memset(opts, 0, sizeof(*opts));
   opts->default_method = COHMAP_METHOD_AUTO;
   opts->fault_max_widen_pages = FAULT_MAX_WIDEN_DEFAULT;
}

/* Reads COHMAP_DEBUG, COHMAP_METHOD and the policy's knobs.  Unknown
 * COHMAP_DEBUG and COHMAP_METHOD values fail: a typo in a knob that
 * silently does nothing costs more than a refused start.  The policy's
 * thresholds only tune performance: a bad one is reported and ignored. */
static int
context_read_env(struct cohmap_context *ctx)
{
   const char *s = getenv("COHMAP_DEBUG");
   const char *bad = NULL;

   cohmap_options_print_once();

   /* help prints the table once per process (each context reads the
    * knobs) and the flags given with it still apply, as in Mesa. */
   static atomic_bool debug_help_printed, method_help_printed;
   bool help = false;
   int ret = 0;
   if (s && *s)
      ret = cohmap_debug_parse_flags(NULL, s, debug_table, &ctx->debug,
                                     &help, &bad);
   if (help && !atomic_exchange(&debug_help_printed, true))
      cohmap_debug_print_table(stderr, "COHMAP_DEBUG", debug_table);
   if (ret) {
      fprintf(stderr,
              "cohmap: error: COHMAP_DEBUG: unknown flag '%s' "
              "(COHMAP_DEBUG=help lists them)\n",
              bad);
      return cohmap_errorf(-EINVAL, "COHMAP_DEBUG: unknown flag '%s'", bad);
   }

   s = getenv("COHMAP_METHOD");
   if (s && *s) {
      uint64_t v;
      /* Like Mesa, help prints the table and goes on (with the default):
       * a program run with it still works. */
      if (strcasecmp(s, "help") == 0) {
         if (!atomic_exchange(&method_help_printed, true))
            cohmap_debug_print_enum_table(stderr, "COHMAP_METHOD",
                                          method_table);
      } else if (cohmap_debug_parse_enum(s, method_table, &v) != 0) {
         fprintf(stderr,
                 "cohmap: error: COHMAP_METHOD: unknown method '%s' "
                 "(auto, auto-fault, scan, fault, compare, full)\n",
                 s);
         return cohmap_errorf(-EINVAL, "COHMAP_METHOD: unknown method '%s'",
                              s);
      } else if (v == METHOD_ENV_AUTO_FAULT) {
         ctx->opts.default_method = COHMAP_METHOD_AUTO;
         ctx->policy.allow_fault = true;
      } else {
         ctx->opts.default_method = (enum cohmap_method)v;
      }
   }
   return cohmap_policy_read_env(&ctx->policy);
}

static bool
method_valid(enum cohmap_method m)
{
   return (unsigned)m < COHMAP_METHOD_COUNT;
}

/* The method AUTO regions get when the policy is off (a fixed default), and
 * the fallback of failing engines: the requested default if it works, else
 * the first transparent method that works.  fault is never picked by
 * fallback: kernel writes into its protected pages fail with EFAULT. */
static enum cohmap_method
choose_auto_method(struct cohmap_context *ctx)
{
   enum cohmap_method want = ctx->opts.default_method;

   if (want != COHMAP_METHOD_AUTO) {
      if (ctx->method_status[want] == 0)
         return want;
      cohmap_warn("method '%s' requested but unavailable (%s); falling back",
                  cohmap_method_name(want), ctx->method_reason[want]);
   }
   if (ctx->method_status[COHMAP_METHOD_SCAN] == 0)
      return COHMAP_METHOD_SCAN;
   return COHMAP_METHOD_COMPARE;
}

COHMAP_EXPORT int
cohmap_context_create(const struct cohmap_context_options *opts,
                      struct cohmap_context **out)
{
   static bool fallback_noticed;
   struct cohmap_context_options defaults;
   int ret;

   if (!out)
      return cohmap_errorf(-EINVAL, "out is NULL");
   *out = NULL;
   if (!opts) {
      cohmap_context_options_init(&defaults);
      opts = &defaults;
   }
   if (!method_valid(opts->default_method))
      return cohmap_errorf(-EINVAL, "invalid default method %d",
                           (int)opts->default_method);
   if (opts->fault_max_widen_pages > FAULT_MAX_WIDEN_LIMIT)
      return cohmap_errorf(-EINVAL, "fault_max_widen_pages %u > %u",
                           opts->fault_max_widen_pages,
                           FAULT_MAX_WIDEN_LIMIT);

   struct cohmap_context *ctx = calloc(1, sizeof(*ctx));
   if (!ctx)
      return cohmap_errorf(-ENOMEM, "out of memory");

   ctx->opts = *opts;
   if (ctx->opts.fault_max_widen_pages == 0)
      ctx->opts.fault_max_widen_pages = FAULT_MAX_WIDEN_DEFAULT;
   ctx->uffd = -1;
   ctx->pagemap_fd = -1;
   ctx->page_size = (size_t)sysconf(_SC_PAGESIZE);
   cohmap_page_size_cached = ctx->page_size;
   cohmap_policy_config_init(&ctx->policy);
   ctx->policy.allow_fault = opts->flags & COHMAP_CONTEXT_AUTO_FAULT;

   if (!(opts->flags & COHMAP_CONTEXT_IGNORE_ENV)) {
      ret = context_read_env(ctx);
      if (ret)
         goto fail_env;
      if (ctx->debug & COHMAP_DEBUG_VERBOSE)
         cohmap_log_set_verbose(true);
   }

   ret = pthread_mutex_init(&ctx->lock, NULL);
   if (ret) {
      ret = cohmap_errorf(-ret, "pthread_mutex_init failed");
      goto fail_env;
   }

   ctx->method_status[COHMAP_METHOD_AUTO] = 0;
   ctx->method_reason[COHMAP_METHOD_AUTO] = "available";
   ctx->method_status[COHMAP_METHOD_COMPARE] = 0;
   ctx->method_reason[COHMAP_METHOD_COMPARE] = "available";
   ctx->method_status[COHMAP_METHOD_FULL] = 0;
   ctx->method_reason[COHMAP_METHOD_FULL] = "available";

   const char *reason = "available";
   ctx->method_status[COHMAP_METHOD_SCAN] = cohmap_probe_scan(ctx, &reason);
   ctx->method_reason[COHMAP_METHOD_SCAN] = reason;

   reason = "available";
   ctx->method_status[COHMAP_METHOD_FAULT] = cohmap_probe_fault(ctx, &reason);
   ctx->method_reason[COHMAP_METHOD_FAULT] = reason;

   ctx->auto_method = choose_auto_method(ctx);
   cohmap_policy_context_init(ctx);

   /* One line per process when the preferred method is missing: users of
    * older kernels or sandboxes should know why cohmap costs more. */
   if (ctx->method_status[COHMAP_METHOD_SCAN] != 0 &&
       !(opts->flags & COHMAP_CONTEXT_NO_UFFD) && !fallback_noticed) {
      fallback_noticed = true;
      cohmap_warn("scan unavailable: %s; using %s",
                  ctx->method_reason[COHMAP_METHOD_SCAN],
                  cohmap_method_name(ctx->auto_method));
   }
   if (ctx->policy.enabled)
      cohmap_info("context %p: adaptive policy%s, margin %u %%, dwell %u "
                  "collects; fallback method %s",
                  (void *)ctx, ctx->policy.allow_fault ? " with fault" : "",
                  ctx->policy.margin_pct, ctx->policy.dwell,
                  cohmap_method_name(ctx->auto_method));
   else
      cohmap_info("context %p: auto method %s", (void *)ctx,
                  cohmap_method_name(ctx->auto_method));

   *out = ctx;
   return 0;

fail_env:
   free(ctx);
   return ret;
}

COHMAP_EXPORT int
cohmap_context_destroy(struct cohmap_context *ctx)
{
   if (!ctx)
      return 0;

   pthread_mutex_lock(&ctx->lock);
   size_t live = ctx->region_count;
   pthread_mutex_unlock(&ctx->lock);
   if (live)
      return cohmap_errorf(-EBUSY, "context has %zu live regions", live);

   cohmap_scan_close(ctx);
   pthread_mutex_destroy(&ctx->lock);
   free(ctx);
   return 0;
}

COHMAP_EXPORT int
cohmap_context_method_status(const struct cohmap_context *ctx,
                             enum cohmap_method m, const char **reason)
{
   if (!ctx)
      return cohmap_errorf(-EINVAL, "ctx is NULL");
   if (!method_valid(m)) {
      if (reason)
         *reason = "unknown method";
      return cohmap_errorf(-EINVAL, "unknown method %d", (int)m);
   }
   if (reason)
      *reason = ctx->method_reason[m];
   return ctx->method_status[m];
}

COHMAP_EXPORT enum cohmap_method
cohmap_context_auto_method(const struct cohmap_context *ctx)
{
   return ctx ? ctx->auto_method : COHMAP_METHOD_COMPARE;
}

const struct cohmap_track_ops *
cohmap_track_ops_for(enum cohmap_method m)
{
   switch (m) {
   case COHMAP_METHOD_SCAN:
      return &cohmap_track_scan_ops;
   case COHMAP_METHOD_FAULT:
      return &cohmap_track_fault_ops;
   case COHMAP_METHOD_COMPARE:
      return &cohmap_track_compare_ops;
   case COHMAP_METHOD_FULL:
      return &cohmap_track_full_ops;
   default:
      return NULL;
   }
}
