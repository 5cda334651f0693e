/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The memory types a direct or device-local device presents
 * (cm_modes_plan(), struct cm_types in src/vulkan/layer.h), on the memory
 * layouts of drivers this machine does not have: lavapipe has one memory
 * type, so the order of several cannot go wrong on it.  The layouts are
 * typed in from what the drivers report (vulkaninfo); the functions under
 * test are the layer's own, linked from its objects.
 *
 * For every layout and mode: the presented list keeps the order the
 * specification requires (a type whose flags are a strict subset of
 * another's comes first), the driver's types keep their indices, every
 * appended type names the driver type it stands for, and memory
 * requirements gain exactly the appended types of the driver types they
 * had.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vulkan/layer.h"

#define DL VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT
#define HV VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT
#define HC VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
#define CA VK_MEMORY_PROPERTY_HOST_CACHED_BIT

struct layout {
   const char *name;
   uint32_t count;
   VkMemoryPropertyFlags flags[8];
   uint32_t heap[8];
};

static const struct layout layouts[] = {
   /* A discrete GPU without a resizable BAR: VRAM is not host-visible. */
   {"discrete, no BAR", 3, {DL, HV | HC, HV | HC | CA}, {0, 1, 1}},
   /* The same with the 256 MiB BAR window as its own heap. */
   {"discrete, 256 MiB BAR",
    4,
    {DL, HV | HC, HV | HC | CA, DL | HV | HC},
    {0, 1, 1, 2}},
   /* A resizable BAR: every type the application needs is there. */
   {"discrete, resizable BAR",
    4,
    {DL, HV | HC, HV | HC | CA, DL | HV | HC},
    {0, 1, 1, 0}},
   /* An SoC whose host-visible memory is cached but not coherent. */
   {"SoC, cached only", 2, {DL, DL | HV | CA}, {0, 0}},
   /* An SoC with coherent (uncached) and cached (not coherent) types. */
   {"SoC, coherent + cached", 3, {DL, DL | HV | HC, DL | HV | CA}, {0, 0, 0}},
   /* A cached type listed before a coherent one (no order between them):
    * HOST_COHERENT in place would put HV|HC|CA before HV|HC. */
   {"cached listed first", 2, {HV | CA, HV | HC}, {0, 0}},
   /* A device-local heap next to a heap whose type has every flag: an
    * appended DL|HV|HC would come after its superset. */
   {"superset elsewhere", 2, {DL, DL | HV | HC | CA}, {0, 1}},
};

static void
fill(const struct layout *l, VkPhysicalDeviceMemoryProperties *p)
{
   memset(p, 0, sizeof(*p));
   p->memoryTypeCount = l->count;
   p->memoryHeapCount = 3;
   for (uint32_t i = 0; i < l->count; i++) {
      p->memoryTypes[i].propertyFlags = l->flags[i];
      p->memoryTypes[i].heapIndex = l->heap[i];
   }
}

static bool
strict_subset(VkMemoryPropertyFlags a, VkMemoryPropertyFlags b)
{
   return (a & b) == a && a != b;
}

/* Everything that must hold of a plan, whatever the layout. */
static void
check_plan(const struct layout *l, enum cm_mode mode)
{
   VkPhysicalDeviceMemoryProperties real, seen;
   fill(l, &real);
   struct cm_types t;
   enum cm_mode got = cm_modes_plan(mode, CM_PRETEND_NOTHING, &real, &t);
   seen = real;
   cm_modes_fix_memory_properties(&t, &seen);

   print_message("%-24s %-12s -> %-12s:", l->name, cm_mode_name(mode),
                 cm_mode_name(got));
   for (uint32_t i = 0; i < seen.memoryTypeCount; i++)
      print_message(" %#x/h%u%s", seen.memoryTypes[i].propertyFlags,
                    seen.memoryTypes[i].heapIndex,
                    t.how[i] == CM_HOW_DIRECT     ? "(direct)"
                    : t.how[i] == CM_HOW_DEVLOCAL ? "(emulated)"
                                                  : "");
   print_message("\n");

   assert_int_equal(t.real_count, l->count);
   assert_int_equal(seen.memoryTypeCount, t.count);
   assert_true(t.count >= l->count);
   /* The specification's order. */
   for (uint32_t i = 0; i < seen.memoryTypeCount; i++) {
      for (uint32_t j = i + 1; j < seen.memoryTypeCount; j++)
         assert_false(strict_subset(seen.memoryTypes[j].propertyFlags,
                                    seen.memoryTypes[i].propertyFlags));
   }
   bool any_direct = false, any_devlocal = false;
   for (uint32_t i = 0; i < t.count; i++) {
      VkMemoryPropertyFlags f = seen.memoryTypes[i].propertyFlags;
      uint32_t r = t.real[i];
      assert_true(r < l->count);
      assert_int_equal(seen.memoryTypes[i].heapIndex, l->heap[r]);
      if (i < l->count) {
         /* The driver's types keep their index and flags, or gain
          * HOST_COHERENT in place (direct). */
         assert_int_equal(r, i);
         assert_int_equal(f & ~HC, l->flags[i] & ~HC);
         assert_int_equal(f != l->flags[i], t.how[i] == CM_HOW_DIRECT);
      } else {
         assert_int_not_equal(t.how[i], CM_HOW_PASS);
      }
      if (t.how[i] == CM_HOW_DIRECT) {
         assert_true((l->flags[r] & HV) && !(l->flags[r] & HC));
         assert_int_equal(f, l->flags[r] | HC);
         any_direct = true;
      }
      if (t.how[i] == CM_HOW_DEVLOCAL) {
         assert_true(i >= l->count);
         assert_true((l->flags[r] & DL) && !(l->flags[r] & HV));
         assert_int_equal(f, l->flags[r] | HV | HC);
         any_devlocal = true;
      }
   }
   assert_int_equal(got, any_devlocal ? CM_MODE_DEVICE_LOCAL
                         : any_direct ? CM_MODE_DIRECT
                                      : CM_MODE_OFF);
   /* Memory requirements: a driver type's appended types with it. */
   for (uint32_t bits = 0; bits < (1u << l->count); bits++) {
      uint32_t out = cm_modes_type_bits(&t, bits);
      for (uint32_t i = 0; i < t.count; i++)
         assert_int_equal(!!(out & (1u << i)), !!(bits & (1u << t.real[i])));
   }
}

static void
test_every_layout(void **state)
{
   static const enum cm_mode modes[] = {CM_MODE_AUTO, CM_MODE_DIRECT,
                                        CM_MODE_DEVICE_LOCAL};
   for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++) {
      for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++)
         check_plan(&layouts[i], modes[m]);
   }
}

/* What an application taking the first type with the flags it needs
 * gets, on the layouts that matter. */
static uint32_t
first_type(const struct layout *l, enum cm_mode mode,
           VkMemoryPropertyFlags want, struct cm_types *t)
{
   VkPhysicalDeviceMemoryProperties p;
   fill(l, &p);
   cm_modes_plan(mode, CM_PRETEND_NOTHING, &p, t);
   cm_modes_fix_memory_properties(t, &p);
   for (uint32_t i = 0; i < p.memoryTypeCount; i++) {
      if ((p.memoryTypes[i].propertyFlags & want) == want)
         return i;
   }
   return UINT32_MAX;
}

static void
test_choices(void **state)
{
   struct cm_types t;
   /* No BAR: staging goes to system memory, untouched; asking for
    * device-local host-visible memory gets the emulation; GPU-only memory
    * stays the driver's. */
   const struct layout *nobar = &layouts[0];
   uint32_t i = first_type(nobar, CM_MODE_AUTO, HV | HC, &t);
   assert_int_equal(i, 1);
   assert_int_equal(t.how[i], CM_HOW_PASS);
   i = first_type(nobar, CM_MODE_AUTO, DL | HV | HC, &t);
   assert_int_equal(i, 3);
   assert_int_equal(t.how[i], CM_HOW_DEVLOCAL);
   assert_int_equal(t.real[i], 0);
   i = first_type(nobar, CM_MODE_AUTO, DL, &t);
   assert_int_equal(i, 0);
   assert_int_equal(t.how[i], CM_HOW_PASS);
   /* A resizable BAR: auto has nothing to do. */
   VkPhysicalDeviceMemoryProperties p;
   fill(&layouts[2], &p);
   assert_int_equal(cm_modes_plan(CM_MODE_AUTO, CM_PRETEND_NOTHING, &p, &t),
                    CM_MODE_OFF);
   assert_int_equal(t.count, 4);
   /* Cached listed first: HOST_COHERENT cannot go in place; the coherent
    * variant is appended, and HV|HC still finds the driver's type. */
   const struct layout *cached_first = &layouts[5];
   i = first_type(cached_first, CM_MODE_DIRECT, HV | HC | CA, &t);
   assert_int_equal(i, 2);
   assert_int_equal(t.how[i], CM_HOW_DIRECT);
   assert_int_equal(t.real[i], 0);
   assert_int_equal(first_type(cached_first, CM_MODE_DIRECT, HV | HC, &t), 1);
   /* A superset elsewhere: no emulation (the application has the type). */
   const struct layout *superset = &layouts[6];
   fill(superset, &p);
   assert_int_equal(
      cm_modes_plan(CM_MODE_DEVICE_LOCAL, CM_PRETEND_NOTHING, &p, &t),
      CM_MODE_OFF);
   assert_int_equal(t.count, 2);
}

/* All 32 slots taken: nothing can be appended, nothing breaks. */
static void
test_full_table(void **state)
{
   VkPhysicalDeviceMemoryProperties p = {.memoryTypeCount = 32,
                                         .memoryHeapCount = 2};
   for (uint32_t i = 0; i < 32; i++) {
      p.memoryTypes[i].propertyFlags = i < 16 ? DL : HV | HC;
      p.memoryTypes[i].heapIndex = i < 16 ? 0 : 1;
   }
   struct cm_types t;
   assert_int_equal(cm_modes_plan(CM_MODE_AUTO, CM_PRETEND_NOTHING, &p, &t),
                    CM_MODE_OFF);
   assert_int_equal(t.count, 32);
}

int
main(void)
{
   const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_layout),
      cmocka_unit_test(test_choices),
      cmocka_unit_test(test_full_table),
   };
   return cmocka_run_group_tests(tests, NULL, NULL);
}
