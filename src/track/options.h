/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#ifndef COHMAP_TRACK_OPTIONS_H
#define COHMAP_TRACK_OPTIONS_H

#include <stdio.h>

/* COHMAP_DEBUG flags of features outside the tracking core, after those of
 * enum cohmap_debug_flags (track_priv.h). */
enum cohmap_debug_flags_winsys {
   /* Winsys devices compare each flushed BO with its device copy
    * (src/winsys/debug.c). */
   COHMAP_DEBUG_VERIFY = 1u << 3,
};

/* COHMAP_PRINT_OPTIONS (options.c): prints every knob cohmap reads, its
 * value and default, to f; _once() does it at most once per process, if
 * the variable is true, and is called by every context and device
 * creation that reads the environment. */
void cohmap_options_print(FILE *f);
void cohmap_options_print_once(void);

#endif
