/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#include "cohmap/winsys.h"

/* 64-bit FNV-1a: trivially reproducible by any test or tool, and every
 * byte (and its position) changes the result, which is all a checksum of
 * device memory has to show. */
COHMAP_EXPORT uint64_t
cohmap_checksum(const void *data, size_t size)
{
   const unsigned char *p = data;
   uint64_t h = 0xcbf29ce484222325ull;

   for (size_t i = 0; i < size; i++) {
      h ^= p[i];
      h *= 0x100000001b3ull;
   }
   return h;
}
