/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#include "vulkan/map.h"

#include <string.h>

#include "vulkan/layer.h"

#define MAP_MIN_CAPACITY 16u

static uint32_t
map_hash(uint64_t key)
{
   /* Handles are pointers or small counters: mix all bits (splitmix64's
    * finalizer) so that neither alignment nor sequence clusters them. */
   key ^= key >> 30;
   key *= 0xbf58476d1ce4e5b9ull;
   key ^= key >> 27;
   key *= 0x94d049bb133111ebull;
   key ^= key >> 31;
   return (uint32_t)key;
}

void
cm_map_init(struct cm_map *m, const VkAllocationCallbacks *alloc)
{
   memset(m, 0, sizeof(*m));
   m->alloc = alloc;
}

void
cm_map_finish(struct cm_map *m)
{
   cm_free(m->alloc, m->keys);
   cm_free(m->alloc, m->values);
   m->keys = m->values = NULL;
   m->mask = m->count = 0;
}

static void
map_put(uint64_t *keys, uint64_t *values, uint32_t mask, uint64_t key,
        uint64_t value)
{
   uint32_t i = map_hash(key) & mask;
   while (keys[i] && keys[i] != key)
      i = (i + 1) & mask;
   keys[i] = key;
   values[i] = value;
}

static bool
map_grow(struct cm_map *m)
{
   uint32_t cap = m->keys ? (m->mask + 1) * 2 : MAP_MIN_CAPACITY;
   if (cap == 0)
      return false;
   uint64_t *keys = cm_alloc(m->alloc, cap * sizeof(uint64_t),
                             VK_SYSTEM_ALLOCATION_SCOPE_DEVICE);
   uint64_t *values = cm_alloc(m->alloc, cap * sizeof(uint64_t),
                               VK_SYSTEM_ALLOCATION_SCOPE_DEVICE);
   if (!keys || !values) {
      cm_free(m->alloc, keys);
      cm_free(m->alloc, values);
      return false;
   }
   memset(keys, 0, cap * sizeof(uint64_t));
   if (m->keys) {
      for (uint32_t i = 0; i <= m->mask; i++) {
         if (m->keys[i])
            map_put(keys, values, cap - 1, m->keys[i], m->values[i]);
      }
   }
   cm_free(m->alloc, m->keys);
   cm_free(m->alloc, m->values);
   m->keys = keys;
   m->values = values;
   m->mask = cap - 1;
   return true;
}

bool
cm_map_set(struct cm_map *m, uint64_t key, uint64_t value)
{
   uint64_t old;
   if (cm_map_get(m, key, &old)) {
      map_put(m->keys, m->values, m->mask, key, value);
      return true;
   }
   /* Load factor at most 1/2: linear probing degrades quickly above. */
   if (!m->keys || (m->count + 1) * 2 > m->mask + 1) {
      if (!map_grow(m))
         return false;
   }
   map_put(m->keys, m->values, m->mask, key, value);
   m->count++;
   return true;
}

bool
cm_map_get(const struct cm_map *m, uint64_t key, uint64_t *value)
{
   if (!m->keys || !key)
      return false;
   uint32_t i = map_hash(key) & m->mask;
   while (m->keys[i]) {
      if (m->keys[i] == key) {
         *value = m->values[i];
         return true;
      }
      i = (i + 1) & m->mask;
   }
   return false;
}

bool
cm_map_remove(struct cm_map *m, uint64_t key)
{
   if (!m->keys || !key)
      return false;
   uint32_t i = map_hash(key) & m->mask;
   while (m->keys[i] && m->keys[i] != key)
      i = (i + 1) & m->mask;
   if (!m->keys[i])
      return false;

   /* Backward-shift deletion: move later entries of the probe run into
    * the hole when their home slot does not lie cyclically in (hole, j],
    * so that every remaining key stays reachable from its home slot. */
   uint32_t hole = i, j = i;
   for (;;) {
      j = (j + 1) & m->mask;
      if (!m->keys[j])
         break;
      uint32_t home = map_hash(m->keys[j]) & m->mask;
      bool reachable =
         hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (reachable)
         continue;
      m->keys[hole] = m->keys[j];
      m->values[hole] = m->values[j];
      hole = j;
   }
   m->keys[hole] = 0;
   m->count--;
   return true;
}

bool
cm_map_next(const struct cm_map *m, uint32_t *i, uint64_t *key,
            uint64_t *value)
{
   if (!m->keys)
      return false;
   for (; *i <= m->mask; (*i)++) {
      if (m->keys[*i]) {
         *key = m->keys[*i];
         *value = m->values[*i];
         (*i)++;
         return true;
      }
   }
   return false;
}
