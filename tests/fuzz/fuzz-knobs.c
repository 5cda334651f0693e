/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * fuzz-knobs: the COHMAP_* parsers, each against a reference written here
 * from the documented grammar (docs/envvars.md), and the knobs end to end
 * (environment → context or device creation).
 *
 * Input: one selector byte, then up to four strings separated by '\n'
 * (a NUL ends the input's strings: an environment value cannot hold one).
 *
 *  - cohmap_debug_parse_uint(): plain decimal digits only; -EINVAL for
 *    anything else, -ERANGE on overflow or outside [min, max]; *value
 *    untouched on error.
 *  - cohmap_debug_parse_bool(): the twelve spellings, any case.
 *  - cohmap_debug_parse_flags(), cohmap_debug_parse_enum(): a table of
 *    names; separators ",|: \t"; "all", "help"; the first unknown name
 *    reported (truncated to 63 bytes).
 *  - COHMAP_DEBUG, COHMAP_METHOD, COHMAP_POLICY_MARGIN/DWELL through
 *    cohmap_context_create(): 0 or -EINVAL, never a crash; -EINVAL exactly
 *    when COHMAP_DEBUG or COHMAP_METHOD holds a name the documentation
 *    does not list (bad policy numbers are warned about and ignored).
 *  - COHMAP_SIM_* through cohmap_device_create(): -EINVAL exactly when
 *    the value is not decimal digits or exceeds its documented maximum.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cohmap/cohmap.h"
#include "cohmap/winsys.h"
#include "fuzz.h"
#include "util/debug.h"

#define MAX_STRINGS 4
#define MAX_STRING 512

/* --- references -------------------------------------------------------- */

static bool
all_digits(const char *s)
{
   if (!*s)
      return false;
   for (; *s; s++) {
      if (*s < '0' || *s > '9')
         return false;
   }
   return true;
}

/* Decimal digits into a 128-bit value: no overflow below 38 digits. */
static int
ref_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
   if (!all_digits(s))
      return -EINVAL;
   unsigned __int128 v = 0;
   for (; *s; s++) {
      v = v * 10 + (unsigned)(*s - '0');
      if (v > UINT64_MAX)
         return -ERANGE;
   }
   if (v < min || v > max)
      return -ERANGE;
   *out = (uint64_t)v;
   return 0;
}

static int
ref_parse_bool(const char *s, bool *out)
{
   static const char *const spellings[] = {"1", "y", "yes", "t", "true",
                                           "on", "0", "n", "no", "f",
                                           "false", "off"};
   for (unsigned i = 0; i < 12; i++) {
      if (strcasecmp(s, spellings[i]) == 0) {
         *out = i < 6;
         return 0;
      }
   }
   return -EINVAL;
}

static const struct cohmap_debug_named_value fuzz_table[] = {
   {"alpha", 1u << 0, NULL},
   {"beta", 1u << 1, NULL},
   {"al", 1u << 2, NULL}, /* a prefix of another name */
   {"x-y", 1ull << 40, NULL},
   COHMAP_DEBUG_NAMED_VALUE_END,
};

static bool
is_separator(char c)
{
   return c && strchr(COHMAP_DEBUG_SEPARATORS, c) != NULL;
}

/* Returns 0 and the flags, or -EINVAL and the first unknown word. */
static int
ref_parse_flags(const char *s, const struct cohmap_debug_named_value *table,
                uint64_t *flags, bool *help, char bad[64])
{
   uint64_t out = 0;
   *help = false;
   while (*s) {
      if (is_separator(*s)) {
         s++;
         continue;
      }
      size_t len = 0;
      while (s[len] && !is_separator(s[len]))
         len++;
      bool known = false;
      for (const struct cohmap_debug_named_value *v = table; v->name; v++) {
         if (strlen(v->name) == len && strncasecmp(v->name, s, len) == 0) {
            out |= v->value;
            known = true;
         }
      }
      if (!known && len == 3 && strncasecmp(s, "all", 3) == 0) {
         for (const struct cohmap_debug_named_value *v = table; v->name; v++)
            out |= v->value;
      } else if (!known && len == 4 && strncasecmp(s, "help", 4) == 0) {
         *help = true;
      } else if (!known) {
         size_t n = len < 63 ? len : 63;
         memcpy(bad, s, n);
         bad[n] = '\0';
         return -EINVAL;
      }
      s += len;
   }
   *flags = out;
   return 0;
}

/* --- checks ------------------------------------------------------------ */

static void
check_uint(const char *s, uint64_t min, uint64_t max)
{
   uint64_t got = 0x5a5a5a5a5a5a5a5aull, want = got;
   int ret = cohmap_debug_parse_uint(s, min, max, &got);
   int ref = ref_parse_uint(s, min, max, &want);
   FUZZ_CHECK(ret == ref, "parse_uint('%s', %llu, %llu) = %d, expected %d",
              s, (unsigned long long)min, (unsigned long long)max, ret, ref);
   FUZZ_CHECK(got == want, "parse_uint('%s') value %llu, expected %llu", s,
              (unsigned long long)got, (unsigned long long)want);
}

static void
check_bool(const char *s)
{
   bool got = true, want = true;
   int ret = cohmap_debug_parse_bool(s, &got);
   int ref = ref_parse_bool(s, &want);
   FUZZ_CHECK(ret == ref && got == want,
              "parse_bool('%s') = %d (%d), expected %d (%d)", s, ret, got,
              ref, want);
   got = false;
   want = false;
   ret = cohmap_debug_parse_bool(s, &got);
   ref_parse_bool(s, &want);
   FUZZ_CHECK(got == want, "parse_bool('%s') changed *value on error", s);
}

static void
check_flags(const char *s)
{
   uint64_t got = 0, want = 0;
   bool help = false, want_help = false;
   const char *bad = NULL;
   char want_bad[64] = "";

   int ret = cohmap_debug_parse_flags(NULL, s, fuzz_table, &got, &help,
                                      &bad);
   int ref = ref_parse_flags(s, fuzz_table, &want, &want_help, want_bad);
   FUZZ_CHECK(ret == ref, "parse_flags('%s') = %d, expected %d", s, ret,
              ref);
   if (ret == 0) {
      FUZZ_CHECK(got == want, "parse_flags('%s') = %#llx, expected %#llx",
                 s, (unsigned long long)got, (unsigned long long)want);
      FUZZ_CHECK(help == want_help, "parse_flags('%s') help %d", s, help);
   } else {
      FUZZ_CHECK(bad && strcmp(bad, want_bad) == 0,
                 "parse_flags('%s') bad '%s', expected '%s'", s,
                 bad ? bad : "(null)", want_bad);
   }

   uint64_t e = 77;
   ret = cohmap_debug_parse_enum(s, fuzz_table, &e);
   bool known = false;
   for (const struct cohmap_debug_named_value *v = fuzz_table; v->name; v++) {
      if (strcasecmp(v->name, s) == 0) {
         known = true;
         FUZZ_CHECK(ret == 0 && e == v->value, "parse_enum('%s')", s);
      }
   }
   FUZZ_CHECK(known || (ret == -EINVAL && e == 77), "parse_enum('%s') = %d",
              s, ret);
}

/* The names docs/envvars.md lists.  A name added to the library later is
 * not a defect here: the checks below only assert about values made of
 * these names, or of words that are no name at all. */
static const struct cohmap_debug_named_value debug_names[] = {
   {"verbose", 1, NULL}, {"stats", 2, NULL},  {"nocal", 4, NULL},
   {"verify", 8, NULL},  COHMAP_DEBUG_NAMED_VALUE_END,
};
static const struct cohmap_debug_named_value method_names[] = {
   {"auto", 0, NULL},    {"auto-fault", 0, NULL}, {"scan", 0, NULL},
   {"fault", 0, NULL},   {"compare", 0, NULL},    {"full", 0, NULL},
   {"help", 0, NULL},    COHMAP_DEBUG_NAMED_VALUE_END,
};

static void
check_context(const char *debug, const char *method, const char *margin,
              const char *dwell)
{
   setenv("COHMAP_DEBUG", debug, 1);
   setenv("COHMAP_METHOD", method, 1);
   setenv("COHMAP_POLICY_MARGIN", margin, 1);
   setenv("COHMAP_POLICY_DWELL", dwell, 1);

   struct cohmap_context *ctx = NULL;
   int ret = cohmap_context_create(NULL, &ctx);
   FUZZ_CHECK(ret == 0 || ret == -EINVAL,
              "context_create(DEBUG='%s', METHOD='%s') = %d", debug, method,
              ret);
   FUZZ_CHECK((ret == 0) == (ctx != NULL), "context pointer on %d", ret);

   uint64_t flags;
   bool help;
   char bad[64];
   bool debug_ok = ref_parse_flags(debug, debug_names, &flags, &help,
                                   bad) == 0;
   bool method_ok = !*method;
   for (const struct cohmap_debug_named_value *v = method_names; v->name;
        v++)
      method_ok |= strcasecmp(v->name, method) == 0;
   if (debug_ok && method_ok)
      FUZZ_CHECK(ret == 0, "context_create(DEBUG='%s', METHOD='%s') = %d",
                 debug, method, ret);
   if (ret == 0)
      FUZZ_CHECK(cohmap_context_destroy(ctx) == 0, "context_destroy");
}

static void
check_sim(const char *var, const char *value, uint64_t max)
{
   struct cohmap_context_options copts;
   struct cohmap_device_options opts;
   struct cohmap_device *dev = NULL;

   setenv(var, value, 1);
   cohmap_context_options_init(&copts);
   copts.flags = COHMAP_CONTEXT_IGNORE_ENV;
   copts.default_method = COHMAP_METHOD_FULL;
   cohmap_device_options_init(&opts);
   opts.context_options = &copts;
   int ret = cohmap_device_create(&opts, &dev);
   uint64_t v;
   bool ok = !*value || ref_parse_uint(value, 0, max, &v) == 0;
   FUZZ_CHECK(ret == (ok ? 0 : -EINVAL), "%s='%s': device_create = %d", var,
              value, ret);
   if (ret == 0)
      FUZZ_CHECK(cohmap_device_destroy(dev) == 0, "device_destroy");
   unsetenv(var);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
   (void)argc;
   (void)argv;
   /* The policy calibrates once per process (20 ms); skip it so that the
    * first input is not slower than the others.  Inputs overwrite it. */
   setenv("COHMAP_DEBUG", "nocal", 1);
   return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
   char strings[MAX_STRINGS][MAX_STRING + 1];
   unsigned n = 0;
   size_t len = 0;

   if (size == 0)
      return 0;
   uint8_t selector = data[0];
   memset(strings, 0, sizeof(strings));
   for (size_t i = 1; i < size && n < MAX_STRINGS; i++) {
      if (data[i] == '\0')
         break;
      if (data[i] == '\n') {
         n++;
         len = 0;
         continue;
      }
      if (len < MAX_STRING)
         strings[n][len++] = (char)data[i];
   }

   for (unsigned i = 0; i < MAX_STRINGS; i++) {
      check_uint(strings[i], 0, UINT64_MAX);
      check_uint(strings[i], selector, 1000u * selector + 7);
      check_bool(strings[i]);
      check_flags(strings[i]);
   }

   /* End to end: creating a context or a sim device costs far more than
    * parsing, so only for some inputs. */
   switch (selector % 8) {
   case 0:
      check_context(strings[0], strings[1], strings[2], strings[3]);
      break;
   case 1:
      check_sim("COHMAP_SIM_LATENCY_US", strings[0], 10000000);
      break;
   case 2:
      check_sim("COHMAP_SIM_BANDWIDTH_MBPS", strings[0], 1000000);
      break;
   case 3:
      check_sim("COHMAP_SIM_EXEC_US", strings[0], 10000000);
      break;
   default:
      break;
   }
   return 0;
}
