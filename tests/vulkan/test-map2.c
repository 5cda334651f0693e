/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * VK_KHR_map_memory2 through the layer, on lavapipe made to look like a
 * newer driver by a test layer between the cohmap layer and validation
 * (layer-newer-driver.c: it emulates the extension over vkMapMemory;
 * Mesa 22.3's lavapipe lacks it, and so does the validation layer, which
 * therefore sees only the plain vkMapMemory calls).  TAP output.
 *
 *   test-map2 CONFIG PATH-OF-libVkLayer_COHMAP_test_newer_driver.so
 *
 * Checks, per configuration (vk-util.h):
 *  - the device offers VK_KHR_map_memory2; VK_EXT_map_memory_placed only
 *    without the cohmap layer (the layer hides it: it cannot place its
 *    shadow where the application asks);
 *  - vkMapMemory2KHR / vkUnmapMemory2KHR never reach the driver through
 *    the cohmap layer (they go through its own map and unmap), and do
 *    without it;
 *  - data: CPU writes through a vkMapMemory2KHR mapping at an offset reach
 *    a GPU copy; a GPU fill shows through it after the fence; the bytes
 *    persist across vkUnmapMemory2KHR and a plain re-map;
 *  - a placed map (invalid without the extension) is passed down to the
 *    driver, not mishandled.
 */

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "vk-util.h"
#include "newer-driver.h"
#include "vulkan/map2.h"

static enum vk_config config;
static struct test_newer_driver_counts *counts;
static cm_pfn_map_memory2 map2;
static cm_pfn_unmap_memory2 unmap2;

#define SIZE   (64u * 1024)
#define OFFSET 8192u

static bool
has_extension(struct vk *vk, const char *name)
{
   uint32_t n = 0;
   if (vkEnumerateDeviceExtensionProperties(vk->physical, NULL, &n, NULL))
      return false;
   VkExtensionProperties *p = calloc(n ? n : 1, sizeof(*p));
   bool found = false;
   if (p &&
       !vkEnumerateDeviceExtensionProperties(vk->physical, NULL, &n, p)) {
      for (uint32_t i = 0; i < n; i++)
         found |= !strcmp(p[i].extensionName, name);
   }
   free(p);
   return found;
}

static bool
test_extensions(struct vk *vk)
{
   VK_EXPECT(vk->extra_extension, "VK_KHR_map_memory2 offered and enabled");
   VK_EXPECT(has_extension(vk, "VK_KHR_map_memory2"), "VK_KHR_map_memory2");
   bool placed = has_extension(vk, "VK_EXT_map_memory_placed");
   VK_EXPECT(placed == (config == VK_CONFIG_NONE),
             "VK_EXT_map_memory_placed %s", placed ? "offered" : "hidden");
   return true;
}

static bool
test_map2_data(struct vk *vk)
{
   struct vk_buffer src, dst;
   if (!vk_buffer_create(vk, SIZE,
                         VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                            VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                         false, &src) ||
       !vk_buffer_create(vk, SIZE, VK_BUFFER_USAGE_TRANSFER_DST_BIT, true,
                         &dst))
      return false;

   unsigned map2_before = counts->map2, unmap2_before = counts->unmap2;
   struct cm_memory_map_info mi = {
      .sType = CM_STRUCTURE_TYPE_MEMORY_MAP_INFO,
      .memory = src.memory,
      .offset = OFFSET,
      .size = VK_WHOLE_SIZE,
   };
   uint8_t *p = NULL;
   VK_CHECK(map2(vk->device, &mi, (void **)&p));
   bool direct = config == VK_CONFIG_NONE;
   VK_EXPECT(counts->map2 - map2_before == (direct ? 1u : 0u),
             "vkMapMemory2KHR reached the driver %u times",
             counts->map2 - map2_before);

   /* CPU → GPU through the offset mapping. */
   static uint8_t want[SIZE - OFFSET];
   for (size_t i = 0; i < sizeof(want); i++)
      want[i] = (uint8_t)(i * 7 + 3);
   memcpy(p, want, sizeof(want));
   VkCommandBuffer cb;
   if (!vk_cmd_begin(vk, &cb))
      return false;
   VkBufferCopy r = {OFFSET, 0, SIZE - OFFSET};
   vkCmdCopyBuffer(cb, src.buffer, dst.buffer, 1, &r);
   if (!vk_cmd_run(vk, cb))
      return false;
   if (!vk_bytes_equal("copied from the vkMapMemory2KHR mapping", dst.map,
                       want, sizeof(want)))
      return false;

   /* GPU → CPU: a fill shows through the mapping after the fence. */
   if (!vk_cmd_begin(vk, &cb))
      return false;
   vkCmdFillBuffer(cb, src.buffer, OFFSET + 256, 1024, 0xa5a5a5a5u);
   if (!vk_cmd_run(vk, cb))
      return false;
   memset(want + 256, 0xa5, 1024);
   if (!vk_bytes_equal("the vkMapMemory2KHR mapping after a GPU fill", p,
                       want, sizeof(want)))
      return false;

   /* Unmap, re-map the plain way: the bytes stayed. */
   struct cm_memory_unmap_info ui = {
      .sType = CM_STRUCTURE_TYPE_MEMORY_UNMAP_INFO, .memory = src.memory};
   VK_CHECK(unmap2(vk->device, &ui));
   VK_EXPECT(counts->unmap2 - unmap2_before == (direct ? 1u : 0u),
             "vkUnmapMemory2KHR reached the driver %u times",
             counts->unmap2 - unmap2_before);
   VK_CHECK(
      vkMapMemory(vk->device, src.memory, 0, VK_WHOLE_SIZE, 0, (void **)&p));
   if (!vk_bytes_equal("re-mapped after vkUnmapMemory2KHR", p + OFFSET, want,
                       sizeof(want)))
      return false;
   vkUnmapMemory(vk->device, src.memory);

   vk_buffer_destroy(vk, &src);
   vk_buffer_destroy(vk, &dst);
   return true;
}

/* Without the extension enabled a placed map is invalid usage; through
 * the cohmap layer it is the driver's business (the layer cannot place a
 * shadow): it must reach the driver, which here fails it with
 * VK_ERROR_FEATURE_NOT_PRESENT, as it does without the layer. */
static bool
test_placed_passed_down(struct vk *vk)
{
   VkDeviceMemory mem;
   if (!vk_memory_alloc(vk, SIZE, &mem))
      return false;
   static _Alignas(4096) uint8_t where[SIZE];
   struct cm_memory_map_placed_info pi = {
      .sType = CM_STRUCTURE_TYPE_MEMORY_MAP_PLACED_INFO,
      .pPlacedAddress = where};
   struct cm_memory_map_info mi = {
      .sType = CM_STRUCTURE_TYPE_MEMORY_MAP_INFO,
      .pNext = &pi,
      .flags = CM_MEMORY_MAP_PLACED_BIT,
      .memory = mem,
      .size = VK_WHOLE_SIZE,
   };
   unsigned before = counts->placed;
   void *p = NULL;
   VkResult res = map2(vk->device, &mi, &p);
   VK_EXPECT(res == VK_ERROR_FEATURE_NOT_PRESENT &&
                counts->placed == before + 1,
             "the placed map reached the driver (%d, %u)", res,
             counts->placed - before);
   vkFreeMemory(vk->device, mem, vk->alloc);
   return true;
}

static const struct {
   const char *name;
   bool (*fn)(struct vk *vk);
} tests[] = {
   {"extensions", test_extensions},
   {"map2-data", test_map2_data},
   {"placed-passed-down", test_placed_passed_down},
};

int
main(int argc, char **argv)
{
   setvbuf(stdout, NULL, _IOLBF, 0);
   if (argc != 3 || !vk_config_parse(argv[1], &config)) {
      fprintf(stderr, "usage: %s CONFIG PATH-OF-TEST-LAYER.so\n", argv[0]);
      return 2;
   }
   vk_below_layer = "VK_LAYER_COHMAP_test_newer_driver";
   vk_extra_extension = "VK_KHR_map_memory2";
   vk_require_machine();

   size_t n = sizeof(tests) / sizeof(tests[0]);
   printf("1..%zu\n", n);
   int failed = 0;
   for (size_t i = 0; i < n; i++) {
      struct vk vk = {0};
      unsigned before = vk_validation_messages;
      vk_test_failed = false;
      bool ok = vk_init(&vk, config);
      if (ok && !counts) {
         void *h = dlopen(argv[2], RTLD_NOW | RTLD_NOLOAD);
         counts = h ? ((struct test_newer_driver_counts * (*)(void))
                          dlsym(h, "test_newer_driver_counts"))()
                    : NULL;
         if (!counts) {
            printf("Bail out! the test layer %s is not loaded\n", argv[2]);
            return 1;
         }
      }
      if (ok) {
         map2 = (cm_pfn_map_memory2)vkGetDeviceProcAddr(vk.device,
                                                        "vkMapMemory2KHR");
         unmap2 = (cm_pfn_unmap_memory2)vkGetDeviceProcAddr(
            vk.device, "vkUnmapMemory2KHR");
         if (!map2 || !unmap2) {
            printf("# vkGetDeviceProcAddr: vkMapMemory2KHR %p, "
                   "vkUnmapMemory2KHR %p\n",
                   (void *)map2, (void *)unmap2);
            ok = false;
         }
      }
      ok = ok && tests[i].fn(&vk);
      vk_finish(&vk);
      if (vk_validation_messages != before) {
         printf("# %u validation messages\n",
                vk_validation_messages - before);
         ok = false;
      }
      ok = ok && !vk_test_failed;
      printf("%s %zu - %s\n", ok ? "ok" : "not ok", i + 1, tests[i].name);
      failed += !ok;
   }
   return failed ? 1 : 0;
}
