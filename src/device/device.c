/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#include <string.h>

#include "device/device.h"

static const struct cohmap_device_ops *const backends[] = {
   &cohmap_device_sim_ops,
};

const struct cohmap_device_ops *
cohmap_device_ops_find(const char *name)
{
   for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
      if (strcmp(backends[i]->name, name) == 0)
         return backends[i];
   }
   return NULL;
}
