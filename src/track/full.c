/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: full — everything is dirty
 *
 * No tracking at all: every collect reports the whole region.  Cheapest
 * for regions of a few pages, where one ioctl or fault costs more than
 * copying the region, and the reference the other methods are checked
 * against.  With COHMAP_REGION_BYTE_EXACT the region core diffs the whole
 * region against the snapshot, which makes it compare.
 */

#include "track/track_priv.h"

static int
full_attach(struct cohmap_region *r)
{
   return 0;
}

static int
full_collect(struct cohmap_region *r, struct cohmap_ranges *out)
{
   return cohmap_ranges_add(out, 0, r->size);
}

static void
full_detach(struct cohmap_region *r)
{
}

const struct cohmap_track_ops cohmap_track_full_ops = {
   .name = "full",
   .method = COHMAP_METHOD_FULL,
   .features = COHMAP_TRACK_SEES_KERNEL_WRITES,
   .attach = full_attach,
   .collect = full_collect,
   .detach = full_detach,
};
