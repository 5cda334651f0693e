/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#ifndef COHMAP_UTIL_TIME_H
#define COHMAP_UTIL_TIME_H

#include <stdint.h>
#include <time.h>

static inline uint64_t
cohmap_now_ns(void)
{
   struct timespec ts;

   clock_gettime(CLOCK_MONOTONIC, &ts);
   return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
