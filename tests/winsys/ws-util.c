/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#include <stdio.h>

#include "ws-util.h"

struct cohmap_device *
ws_device_create(enum cohmap_method m, size_t slab_threshold)
{
   struct cohmap_device_options opts;
   struct cohmap_device *dev = NULL;

   cohmap_device_options_init(&opts);
   opts.method = m;
   opts.slab_threshold = slab_threshold;
   int ret = cohmap_device_create(&opts, &dev);
   if (ret) {
      fprintf(stderr, "cohmap_device_create(%s): %d: %s\n",
              cohmap_method_name(m), ret, cohmap_error_message());
      return NULL;
   }
   return dev;
}

bool
ws_method_usable(enum cohmap_method m, bool *fatal)
{
   struct cohmap_context *ctx = tu_context_create(0, 0);
   *fatal = ctx == NULL;
   if (!ctx)
      return false;
   bool ok = tu_method_available(ctx, m, fatal);
   cohmap_context_destroy(ctx);
   return ok;
}

int
ws_submit_wait(struct cohmap_submit *s)
{
   struct cohmap_fence *f = NULL;
   int ret = cohmap_submit_end(s, &f);
   if (ret)
      return ret;
   ret = cohmap_fence_wait(f, UINT64_MAX);
   cohmap_fence_destroy(f);
   return ret;
}

int
ws_teardown(struct cohmap_device *dev, struct cohmap_bo **bos, size_t count)
{
   int first = 0;
   for (size_t i = 0; i < count; i++) {
      int ret = cohmap_bo_destroy(bos[i]);
      if (ret && !first)
         first = ret;
   }
   int ret = cohmap_device_destroy(dev);
   return first ? first : ret;
}
