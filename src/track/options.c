/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: COHMAP_PRINT_OPTIONS
 *
 * Mesa's GALLIUM_PRINT_OPTIONS prints each option as u_debug reads it.
 * cohmap's knobs are read in three places (context creation, the policy,
 * the sim backend), several times per process (once per context or
 * device), so printing at each read would repeat itself; instead the first
 * context or device creation of the process prints the whole table below:
 * every variable cohmap reads, the value it is set to, and its default.
 * Bad values are not judged here: the reader of each knob reports them
 * with its own message.
 *
 * The table is the list of knobs: a knob added elsewhere must be added
 * here, and to docs/envvars.md (tests/track/test-knobs.c checks that every
 * COHMAP_* variable the documentation's tables name is printed).
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "track/options.h"
#include "track/track_priv.h"
#include "util/debug.h"
#include "util/log.h"

/* The sim's knobs default to 0; the policy's defaults come from
 * cohmap_policy_config_init(), so that the two cannot disagree. */
enum option_default {
   DEFAULT_TEXT,
   DEFAULT_POLICY_MARGIN,
   DEFAULT_POLICY_DWELL,
};

static const struct {
   const char *name;
   enum option_default kind;
   const char *text; /* DEFAULT_TEXT */
} options[] = {
   {"COHMAP_DEBUG", DEFAULT_TEXT, "empty"},
   {"COHMAP_METHOD", DEFAULT_TEXT, "auto"},
   {"COHMAP_POLICY_MARGIN", DEFAULT_POLICY_MARGIN, NULL},
   {"COHMAP_POLICY_DWELL", DEFAULT_POLICY_DWELL, NULL},
   {"COHMAP_PRINT_OPTIONS", DEFAULT_TEXT, "false"},
   {"COHMAP_SIM_LATENCY_US", DEFAULT_TEXT, "0"},
   {"COHMAP_SIM_BANDWIDTH_MBPS", DEFAULT_TEXT, "0"},
   {"COHMAP_SIM_EXEC_US", DEFAULT_TEXT, "0"},
   /* Read by the Vulkan layer at vkCreateInstance (src/vulkan). */
   {"COHMAP_MODE", DEFAULT_TEXT, "auto"},
   {"COHMAP_VK_PRETEND", DEFAULT_TEXT, "none"},
};

void
cohmap_options_print(FILE *f)
{
   struct cohmap_policy_config policy;

   cohmap_policy_config_init(&policy);
   fprintf(f, "cohmap: options (COHMAP_PRINT_OPTIONS; each variable's "
              "value in the environment and its default):\n");
   for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
      char def[32];
      switch (options[i].kind) {
      case DEFAULT_POLICY_MARGIN:
         snprintf(def, sizeof(def), "%u", policy.margin_pct);
         break;
      case DEFAULT_POLICY_DWELL:
         snprintf(def, sizeof(def), "%u", policy.dwell);
         break;
      default:
         snprintf(def, sizeof(def), "%s", options[i].text);
         break;
      }
      const char *v = getenv(options[i].name);
      if (v && *v)
         fprintf(f, "cohmap:   %s='%.200s' (default %s)\n", options[i].name,
                 v, def);
      else
         fprintf(f, "cohmap:   %s unset (default %s)\n", options[i].name,
                 def);
   }
   fflush(f);
}

static void
print_options_once(void)
{
   const char *s = getenv("COHMAP_PRINT_OPTIONS");
   bool on = false;

   if (!s || !*s)
      return;
   if (cohmap_debug_parse_bool(s, &on) != 0) {
      /* Like the policy's thresholds: printing options changes nothing
       * else, so a bad value is reported, not fatal. */
      cohmap_warn("COHMAP_PRINT_OPTIONS='%.40s' ignored: expected 1, 0, "
                  "true, false, yes, no, on or off; keeping the default, "
                  "false",
                  s);
      return;
   }
   if (on)
      cohmap_options_print(stderr);
}

void
cohmap_options_print_once(void)
{
   static pthread_once_t once = PTHREAD_ONCE_INIT;

   pthread_once(&once, print_options_once);
}
