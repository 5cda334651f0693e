/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#ifndef COHMAP_UTIL_RANGES_H
#define COHMAP_UTIL_RANGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cohmap/cohmap.h"

/* A growable array of byte ranges.  Appends that touch or overlap the last
 * range extend it, so engines that report in address order produce a
 * coalesced list for free; cohmap_ranges_normalize() sorts and coalesces
 * lists built out of order (e.g. merged from two methods). */
struct cohmap_ranges {
   struct cohmap_range *v;
   size_t count;
   size_t capacity;
};

void cohmap_ranges_init(struct cohmap_ranges *r);
void cohmap_ranges_fini(struct cohmap_ranges *r);

static inline void
cohmap_ranges_clear(struct cohmap_ranges *r)
{
   r->count = 0;
}

/* Ensures room for n more ranges.  -ENOMEM leaves the list intact. */
int cohmap_ranges_reserve(struct cohmap_ranges *r, size_t n);

/* Appends [offset, offset + length), merging with the last range when they
 * touch.  -ENOMEM leaves the list intact. */
int cohmap_ranges_add(struct cohmap_ranges *r, size_t offset, size_t length);

/* Appends all of src.  -ENOMEM leaves r intact. */
int cohmap_ranges_add_all(struct cohmap_ranges *r,
                          const struct cohmap_ranges *src);

/* Sorts by offset and merges overlapping or adjacent ranges. */
void cohmap_ranges_normalize(struct cohmap_ranges *r);

/* Sum of lengths. */
size_t cohmap_ranges_bytes(const struct cohmap_ranges *r);

/* Number of pages of page_size touched by the ranges. */
size_t cohmap_ranges_pages(const struct cohmap_ranges *r, size_t page_size);

/* out = a ∩ b (intersect) or a − b; a and b sorted and disjoint (out is
 * cleared first).  -ENOMEM on failure. */
int cohmap_ranges_op(const struct cohmap_range *a, size_t na,
                     const struct cohmap_range *b, size_t nb, bool intersect,
                     struct cohmap_ranges *out);

/* Appends the runs of [base, base + n) where x and y differ (one memcmp
 * when they do not).  -ENOMEM on failure. */
int cohmap_ranges_add_diff(struct cohmap_ranges *out, size_t base,
                           const uint8_t *x, const uint8_t *y, size_t n);

#endif
