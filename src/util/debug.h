/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#ifndef COHMAP_UTIL_DEBUG_H
#define COHMAP_UTIL_DEBUG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Environment knobs in the style of Mesa's u_debug.c: a table of named
 * values, comma-separated flag lists, "help" prints the table.  Unlike
 * Mesa, an unknown name is an error (the caller fails context creation):
 * a misspelled knob silently ignored is a debugging session lost. */
struct cohmap_debug_named_value {
   const char *name;
   uint64_t value;
   const char *desc;
};

#define COHMAP_DEBUG_NAMED_VALUE_END {NULL, 0, NULL}

/* What separates the names of a flag list: "stats,verify", "stats|verify"
 * (Mesa's u_debug accepts any non-alphanumeric character; these are the
 * ones people type), "stats verify", "stats:verify". */
#define COHMAP_DEBUG_SEPARATORS ",|: \t"

/* Parses a list of names from table (COHMAP_DEBUG_SEPARATORS) into
 * *flags.  "all" sets every flag, "help" prints the table to stderr
 * headed by var (nothing if var is NULL) and sets *help if non-NULL.
 * Returns 0, or -EINVAL with *bad pointing to a
 * static copy of the first unknown name. */
int cohmap_debug_parse_flags(const char *var, const char *str,
                             const struct cohmap_debug_named_value *table,
                             uint64_t *flags, bool *help, const char **bad);

/* Parses one name from table into *value.  -EINVAL for unknown names. */
int cohmap_debug_parse_enum(const char *str,
                            const struct cohmap_debug_named_value *table,
                            uint64_t *value);

/* Parses plain decimal digits (no sign, blank, prefix or suffix) into
 * *value: -EINVAL for anything else (NULL and "" included), -ERANGE when
 * the number overflows or lies outside [min, max].  *value is untouched on
 * error. */
int cohmap_debug_parse_uint(const char *str, uint64_t min, uint64_t max,
                            uint64_t *value);

/* Parses a boolean like Mesa's debug_get_bool_option(), case-insensitive:
 * 1/y/yes/t/true/on and 0/n/no/f/false/off.  -EINVAL otherwise (NULL and
 * "" included); *value is untouched then. */
int cohmap_debug_parse_bool(const char *str, bool *value);

/* The tables "help" prints: a flag list's (with "all" and "help"), and a
 * single choice's (with "help"). */
void cohmap_debug_print_table(FILE *f, const char *var,
                              const struct cohmap_debug_named_value *table);
void cohmap_debug_print_enum_table(FILE *f, const char *var,
                                   const struct cohmap_debug_named_value *table);

#endif
