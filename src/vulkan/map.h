/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#ifndef COHMAP_VULKAN_MAP_H
#define COHMAP_VULKAN_MAP_H

#include <stdbool.h>
#include <stdint.h>

#include <vulkan/vulkan.h>

/*
 * A hash map from non-dispatchable Vulkan handles (64-bit, never
 * VK_NULL_HANDLE, which marks an empty slot) to 64-bit values: open
 * addressing with linear probing and backward-shift deletion, so that
 * lookups on the submit path touch one or two cache lines and no
 * tombstones accumulate under allocate/free churn.  Not thread-safe: the
 * device lock guards it.  Its table comes from the device's allocator.
 */
struct cm_map {
   uint64_t *keys, *values;
   uint32_t mask; /* capacity - 1; capacity is a power of two */
   uint32_t count;
   const VkAllocationCallbacks *alloc;
};

void cm_map_init(struct cm_map *m, const VkAllocationCallbacks *alloc);
void cm_map_finish(struct cm_map *m);
/* Inserts or replaces.  false when out of memory (nothing changed). */
bool cm_map_set(struct cm_map *m, uint64_t key, uint64_t value);
/* true and *value when present. */
bool cm_map_get(const struct cm_map *m, uint64_t key, uint64_t *value);
/* true if it was present. */
bool cm_map_remove(struct cm_map *m, uint64_t key);

/* Iteration: for (uint32_t i = 0; cm_map_next(m, &i, &k, &v); ) */
bool cm_map_next(const struct cm_map *m, uint32_t *i, uint64_t *key,
                 uint64_t *value);

#endif
