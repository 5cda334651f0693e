/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#include "util/ranges.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void
cohmap_ranges_init(struct cohmap_ranges *r)
{
   r->v = NULL;
   r->count = 0;
   r->capacity = 0;
}

void
cohmap_ranges_fini(struct cohmap_ranges *r)
{
   free(r->v);
   cohmap_ranges_init(r);
}

int
cohmap_ranges_reserve(struct cohmap_ranges *r, size_t n)
{
   if (r->capacity - r->count >= n)
      return 0;
   if (n > SIZE_MAX / sizeof(*r->v) - r->count)
      return -ENOMEM;

   size_t want = r->count + n;
   size_t cap = r->capacity ? r->capacity : 64;
   while (cap < want)
      cap = cap > SIZE_MAX / 2 / sizeof(*r->v) ? want : cap * 2;

   struct cohmap_range *v = realloc(r->v, cap * sizeof(*v));
   if (!v)
      return -ENOMEM;
   r->v = v;
   r->capacity = cap;
   return 0;
}

int
cohmap_ranges_add(struct cohmap_ranges *r, size_t offset, size_t length)
{
   if (length == 0)
      return 0;
   if (r->count) {
      struct cohmap_range *last = &r->v[r->count - 1];
      size_t last_end = last->offset + last->length;
      if (offset >= last->offset && offset <= last_end) {
         if (offset + length > last_end)
            last->length = offset + length - last->offset;
         return 0;
      }
   }
   int ret = cohmap_ranges_reserve(r, 1);
   if (ret)
      return ret;
   r->v[r->count++] = (struct cohmap_range){offset, length};
   return 0;
}

int
cohmap_ranges_add_all(struct cohmap_ranges *r,
                      const struct cohmap_ranges *src)
{
   int ret = cohmap_ranges_reserve(r, src->count);
   if (ret)
      return ret;
   for (size_t i = 0; i < src->count; i++)
      cohmap_ranges_add(r, src->v[i].offset, src->v[i].length);
   return 0;
}

static int
range_cmp(const void *a, const void *b)
{
   const struct cohmap_range *x = a, *y = b;

   return (x->offset > y->offset) - (x->offset < y->offset);
}

void
cohmap_ranges_normalize(struct cohmap_ranges *r)
{
   if (r->count < 2)
      return;

   qsort(r->v, r->count, sizeof(*r->v), range_cmp);

   size_t out = 0;
   for (size_t i = 1; i < r->count; i++) {
      struct cohmap_range *last = &r->v[out];
      size_t last_end = last->offset + last->length;
      if (r->v[i].offset <= last_end) {
         size_t end = r->v[i].offset + r->v[i].length;
         if (end > last_end)
            last->length = end - last->offset;
      } else {
         r->v[++out] = r->v[i];
      }
   }
   r->count = out + 1;
}

size_t
cohmap_ranges_bytes(const struct cohmap_ranges *r)
{
   size_t bytes = 0;

   for (size_t i = 0; i < r->count; i++)
      bytes += r->v[i].length;
   return bytes;
}

size_t
cohmap_ranges_pages(const struct cohmap_ranges *r, size_t page_size)
{
   size_t pages = 0;

   for (size_t i = 0; i < r->count; i++) {
      size_t first = r->v[i].offset / page_size;
      size_t last = (r->v[i].offset + r->v[i].length - 1) / page_size;
      pages += last - first + 1;
   }
   return pages;
}

int
cohmap_ranges_op(const struct cohmap_range *a, size_t na,
                 const struct cohmap_range *b, size_t nb, bool intersect,
                 struct cohmap_ranges *out)
{
   size_t j = 0;
   int ret = 0;

   cohmap_ranges_clear(out);
   for (size_t i = 0; i < na && !ret; i++) {
      size_t lo = a[i].offset, hi = a[i].offset + a[i].length;
      while (j < nb && b[j].offset + b[j].length <= lo)
         j++;
      size_t pos = lo;
      for (size_t k = j; k < nb && b[k].offset < hi && !ret; k++) {
         size_t blo = b[k].offset > lo ? b[k].offset : lo;
         size_t bhi =
            b[k].offset + b[k].length < hi ? b[k].offset + b[k].length : hi;
         if (intersect)
            ret = cohmap_ranges_add(out, blo, bhi - blo);
         else if (blo > pos)
            ret = cohmap_ranges_add(out, pos, blo - pos);
         pos = bhi;
      }
      if (!intersect && pos < hi && !ret)
         ret = cohmap_ranges_add(out, pos, hi - pos);
   }
   return ret;
}

int
cohmap_ranges_add_diff(struct cohmap_ranges *out, size_t base,
                       const uint8_t *x, const uint8_t *y, size_t n)
{
   if (memcmp(x, y, n) == 0)
      return 0;
   for (size_t i = 0; i < n;) {
      if (x[i] == y[i]) {
         i++;
         continue;
      }
      size_t start = i;
      while (i < n && x[i] != y[i])
         i++;
      int ret = cohmap_ranges_add(out, base + start, i - start);
      if (ret)
         return ret;
   }
   return 0;
}
