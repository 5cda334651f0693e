/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#include "util/debug.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void
cohmap_debug_print_table(FILE *f, const char *var,
                         const struct cohmap_debug_named_value *table)
{
   fprintf(f, "%s: a list of these flags (separated by ',', '|', ':' or "
           "spaces; case does not matter):\n", var);
   for (const struct cohmap_debug_named_value *v = table; v->name; v++)
      fprintf(f, "  %-12s %s\n", v->name, v->desc ? v->desc : "");
   fprintf(f, "  %-12s %s\n", "all", "all of the above");
   fprintf(f, "  %-12s %s\n", "help", "print this table (and go on)");
}

void
cohmap_debug_print_enum_table(FILE *f, const char *var,
                              const struct cohmap_debug_named_value *table)
{
   fprintf(f, "%s: one of (case does not matter):\n", var);
   for (const struct cohmap_debug_named_value *v = table; v->name; v++)
      fprintf(f, "  %-12s %s\n", v->name, v->desc ? v->desc : "");
   fprintf(f, "  %-12s %s\n", "help", "print this table (and go on)");
}

static const struct cohmap_debug_named_value *
lookup(const struct cohmap_debug_named_value *table, const char *name,
       size_t len)
{
   for (const struct cohmap_debug_named_value *v = table; v->name; v++) {
      if (strlen(v->name) == len && strncasecmp(v->name, name, len) == 0)
         return v;
   }
   return NULL;
}

int
cohmap_debug_parse_flags(const char *var, const char *str,
                         const struct cohmap_debug_named_value *table,
                         uint64_t *flags, bool *help, const char **bad)
{
   static _Thread_local char bad_name[64];
   uint64_t out = 0;

   if (help)
      *help = false;
   if (!str) {
      *flags = 0;
      return 0;
   }

   const char *p = str;
   while (*p) {
      size_t len = strcspn(p, COHMAP_DEBUG_SEPARATORS);
      if (len == 0) {
         p++;
         continue;
      }
      const struct cohmap_debug_named_value *v = lookup(table, p, len);
      if (v) {
         out |= v->value;
      } else if (len == 3 && strncasecmp(p, "all", 3) == 0) {
         for (v = table; v->name; v++)
            out |= v->value;
      } else if (len == 4 && strncasecmp(p, "help", 4) == 0) {
         if (var)
            cohmap_debug_print_table(stderr, var, table);
         if (help)
            *help = true;
      } else {
         size_t n = len < sizeof(bad_name) - 1 ? len : sizeof(bad_name) - 1;
         memcpy(bad_name, p, n);
         bad_name[n] = '\0';
         if (bad)
            *bad = bad_name;
         return -EINVAL;
      }
      p += len;
   }
   *flags = out;
   return 0;
}

int
cohmap_debug_parse_enum(const char *str,
                        const struct cohmap_debug_named_value *table,
                        uint64_t *value)
{
   if (!str)
      return -EINVAL;
   const struct cohmap_debug_named_value *v = lookup(table, str, strlen(str));
   if (!v)
      return -EINVAL;
   *value = v->value;
   return 0;
}

int
cohmap_debug_parse_uint(const char *str, uint64_t min, uint64_t max,
                        uint64_t *value)
{
   uint64_t v = 0;

   /* Plain decimal digits only: strtoull() would skip leading blanks,
    * accept a sign (and negate "-1" into 2^64 - 1), and read "010" as
    * octal and "0x10" as hex, none of which a user setting a threshold
    * means. */
   if (!str || !*str)
      return -EINVAL;
   /* Every character first: a non-digit is -EINVAL wherever it stands,
    * also after more digits than fit (found by tests/fuzz/fuzz-knobs.c:
    * "99999999999999999999x" gave -ERANGE). */
   for (const char *p = str; *p; p++) {
      if (*p < '0' || *p > '9')
         return -EINVAL;
   }
   for (const char *p = str; *p; p++) {
      if (__builtin_mul_overflow(v, 10, &v) ||
          __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v))
         return -ERANGE;
   }
   if (v < min || v > max)
      return -ERANGE;
   *value = v;
   return 0;
}

int
cohmap_debug_parse_bool(const char *str, bool *value)
{
   static const char *const yes[] = {"1", "y", "yes", "t", "true", "on"};
   static const char *const no[] = {"0", "n", "no", "f", "false", "off"};

   if (!str)
      return -EINVAL;
   for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
      if (strcasecmp(str, yes[i]) == 0) {
         *value = true;
         return 0;
      }
      if (strcasecmp(str, no[i]) == 0) {
         *value = false;
         return 0;
      }
   }
   return -EINVAL;
}
