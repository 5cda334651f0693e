/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/* Helpers shared by the winsys tests. */

#ifndef COHMAP_WS_UTIL_H
#define COHMAP_WS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cohmap/winsys.h"
#include "test-util.h"

/* A sim device tracking coherent BOs with method m (slab_threshold 0: the
 * default; 1: no slabs).  NULL, after printing why, on failure. */
struct cohmap_device *ws_device_create(enum cohmap_method m,
                                       size_t slab_threshold);

/* True if m can be tested here.  scan may be missing on old kernels
 * (prints why, returns false); any other missing method sets *fatal. */
bool ws_method_usable(enum cohmap_method m, bool *fatal);

/* Submits s (already filled) and waits for it: 0 or the error. */
int ws_submit_wait(struct cohmap_submit *s);

/* Destroys every BO in bos (NULL entries skipped) and the device,
 * returning the first error. */
int ws_teardown(struct cohmap_device *dev, struct cohmap_bo **bos,
                size_t count);

#endif
