/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: compare — diff against a snapshot
 *
 * The region keeps a snapshot of the bytes last handed to the caller.  A
 * collect offers the whole region as candidate and the region core's
 * byte-exact refinement (region.c) diffs it against the snapshot, copies
 * the differing runs into the snapshot and reports exactly those runs.
 * So compare is "full + refinement": one diff loop serves compare and the
 * COHMAP_REGION_BYTE_EXACT refinement of the page-granular methods.
 *
 * It sees stores from any source (CPU, kernel, another process sharing
 * the memory) and costs about one memcmp of the region per collect plus a
 * memcpy of what changed.  A byte rewritten with its old value is not
 * reported: as far as the device is concerned it did not change.
 */

#include <errno.h>

#include "track/track_priv.h"

static int
compare_attach(struct cohmap_region *r)
{
   /* The region core creates the snapshot before attach
    * (COHMAP_TRACK_NEEDS_SNAPSHOT). */
   return r->snapshot ? 0 : -EINVAL;
}

static int
compare_collect(struct cohmap_region *r, struct cohmap_ranges *out)
{
   return cohmap_ranges_add(out, 0, r->size);
}

static void
compare_detach(struct cohmap_region *r)
{
}

const struct cohmap_track_ops cohmap_track_compare_ops = {
   .name = "compare",
   .method = COHMAP_METHOD_COMPARE,
   .features = COHMAP_TRACK_SEES_KERNEL_WRITES | COHMAP_TRACK_NEEDS_SNAPSHOT,
   .attach = compare_attach,
   .collect = compare_collect,
   .detach = compare_detach,
};
