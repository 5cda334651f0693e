/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#include "util/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "cohmap/cohmap.h"

static atomic_bool log_verbose;
static _Thread_local char last_error[512];

void
cohmap_log_set_verbose(bool verbose)
{
   atomic_store_explicit(&log_verbose, verbose, memory_order_relaxed);
}

bool
cohmap_log_verbose(void)
{
   return atomic_load_explicit(&log_verbose, memory_order_relaxed);
}

int
cohmap_error_at(const char *file, int line, int err, const char *fmt, ...)
{
   char msg[400];
   va_list ap;

   va_start(ap, fmt);
   vsnprintf(msg, sizeof(msg), fmt, ap);
   va_end(ap);

   /* Keep the basename only: full build paths make messages unreadable. */
   const char *slash = strrchr(file, '/');
   if (slash)
      file = slash + 1;

   snprintf(last_error, sizeof(last_error), "%s (%s) [%s:%d]", msg,
            strerror(err < 0 ? -err : err), file, line);
   if (cohmap_log_verbose())
      fprintf(stderr, "cohmap: error: %s\n", last_error);
   return err;
}

COHMAP_EXPORT const char *
cohmap_error_message(void)
{
   return last_error;
}

static void
vlog(const char *kind, const char *fmt, va_list ap)
{
   char msg[512];

   vsnprintf(msg, sizeof(msg), fmt, ap);
   fprintf(stderr, "cohmap: %s%s\n", kind, msg);
}

void
cohmap_warn(const char *fmt, ...)
{
   va_list ap;

   va_start(ap, fmt);
   vlog("warning: ", fmt, ap);
   va_end(ap);
}

void
cohmap_info(const char *fmt, ...)
{
   va_list ap;

   if (!cohmap_log_verbose())
      return;
   va_start(ap, fmt);
   vlog("", fmt, ap);
   va_end(ap);
}

void
cohmap_format_hex(char *buf, size_t size, const uint8_t *v, size_t n)
{
   size_t used = 0;
   buf[0] = '\0';
   for (size_t i = 0; i < n && used + 4 < size; i++)
      used += (size_t)snprintf(buf + used, size - used, "%s%02x",
                               i ? " " : "", v[i]);
}
