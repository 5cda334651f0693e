/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/* What tests/vulkan/layer-newer-driver.c counts, for test-map2 (which
 * finds it with dlsym(test_newer_driver_counts)). */

#ifndef COHMAP_TEST_NEWER_DRIVER_H
#define COHMAP_TEST_NEWER_DRIVER_H

struct test_newer_driver_counts {
   unsigned map2, unmap2, placed, maps; /* calls that reached the layer */
   void *last_map;                      /* the driver's last vkMapMemory */
};

#endif
