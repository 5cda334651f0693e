/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#ifndef COHMAP_UTIL_LOG_H
#define COHMAP_UTIL_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Error reporting in the style of Mesa's vk_errorf: one helper records a
 * message (file:line, what failed) for cohmap_error_message(), prints it
 * when COHMAP_DEBUG=verbose, and returns the error so callers can write
 * `return cohmap_errorf(-EINVAL, "...")`. */
int cohmap_error_at(const char *file, int line, int err, const char *fmt, ...)
   __attribute__((format(printf, 4, 5)));

#define cohmap_errorf(err, ...)                                            \
   cohmap_error_at(__FILE__, __LINE__, (err), __VA_ARGS__)

/* Messages prefixed "cohmap: " on stderr.  Warnings always print (they are
 * rare and mean lost performance or a misconfiguration); info prints with
 * COHMAP_DEBUG=verbose. */
void cohmap_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cohmap_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Set once by the first context that reads COHMAP_DEBUG. */
void cohmap_log_set_verbose(bool verbose);
bool cohmap_log_verbose(void);

/* Writes v[0..n) as "ab cd ef" into buf (size bytes, always terminated;
 * what does not fit is left out): the bytes of verify reports. */
void cohmap_format_hex(char *buf, size_t size, const uint8_t *v, size_t n);

#endif
