/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/* What every fuzz target provides and shares (tests/fuzz/meson.build). */

#ifndef COHMAP_FUZZ_H
#define COHMAP_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* libFuzzer's entry points (also called by replay.c). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the input front to back; past its end every read gives zeros, so
 * that any input is a complete program. */
struct fuzz_input {
   const uint8_t *data;
   size_t size, pos;
};

static inline uint8_t
fuzz_u8(struct fuzz_input *in)
{
   return in->pos < in->size ? in->data[in->pos++] : 0;
}

static inline uint32_t
fuzz_u16(struct fuzz_input *in)
{
   uint32_t lo = fuzz_u8(in);
   return lo | (uint32_t)fuzz_u8(in) << 8;
}

static inline uint32_t
fuzz_u32(struct fuzz_input *in)
{
   uint32_t lo = fuzz_u16(in);
   return lo | fuzz_u16(in) << 16;
}

static inline bool
fuzz_done(const struct fuzz_input *in)
{
   return in->pos >= in->size;
}

/* A defect: the model and the library disagree, or a call gave a result
 * its contract rules out.  Says what and aborts, which libFuzzer reports
 * as a crash and saves the input (replay.c prints its name first). */
#define FUZZ_CHECK(cond, ...)                                               \
   do {                                                                     \
      if (!(cond)) {                                                        \
         fprintf(stderr, "fuzz: %s:%d: check failed: %s: ", __FILE__,       \
                 __LINE__, #cond);                                          \
         fprintf(stderr, __VA_ARGS__);                                      \
         fputc('\n', stderr);                                               \
         abort();                                                           \
      }                                                                     \
   } while (0)

#endif
