/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/**
 * DOC: Vulkan test harness
 *
 * Every test runs on the real loader and lavapipe, with the Khronos
 * validation layer *below* the cohmap layer, so that validation checks
 * what the layer itself asks of the driver (its own maps, flushes and
 * invalidations) as well as what the application passes through; a
 * debug messenger counts every warning and error, and each test ends by
 * asserting there were none.
 *
 * A configuration, chosen on the command line, sets the environment
 * before the instance is created:
 *
 *  - "none":        no cohmap layer (the baseline every test must pass);
 *  - "shadow":      COHMAP_MODE=shadow;
 *  - "noncoherent": COHMAP_MODE=shadow with COHMAP_VK_PRETEND=noncoherent:
 *                   the layer believes lavapipe's memory is not coherent,
 *                   so it shadows and flushes/invalidates itself;
 *  - "direct":      COHMAP_MODE=direct with COHMAP_VK_PRETEND=noncoherent:
 *                   the application keeps lavapipe's pointer, the layer
 *                   flushes and invalidates it;
 *  - "device-local": COHMAP_MODE=device-local with
 *                   COHMAP_VK_PRETEND=device-local: the layer believes
 *                   lavapipe's memory is not host-visible, maps tracked
 *                   memory and copies through staging buffers;
 *  - "env":         nothing set: the environment enables the layer or not
 *                   (`cohmap run`).
 *
 * Failures print what differed and mark the TAP line "not ok"; the
 * program exits 1 if any test failed, 77 if the machine lacks lavapipe or
 * the validation layer (saying which).
 */

#ifndef COHMAP_VK_UTIL_H
#define COHMAP_VK_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <vulkan/vulkan.h>

enum vk_config {
   VK_CONFIG_NONE,
   VK_CONFIG_SHADOW,
   VK_CONFIG_NONCOHERENT,
   VK_CONFIG_DIRECT,
   VK_CONFIG_DEVICE_LOCAL,
   /* The environment decides (`cohmap run`, VK_INSTANCE_LAYERS): the
    * harness sets nothing and enables only validation itself. */
   VK_CONFIG_ENV,
};

struct vk {
   enum vk_config config;
   VkInstance instance;
   VkDebugUtilsMessengerEXT messenger;
   VkPhysicalDevice physical;
   VkDevice device;
   VkQueue queue;
   uint32_t queue_family;
   uint32_t queue_count;
   VkCommandPool pool;
   VkSemaphore timeline;
   uint64_t timeline_value;
   VkEvent event;
   uint32_t host_type; /* a HOST_VISIBLE | HOST_COHERENT memory type */
   VkDeviceSize atom;
   VkAllocationCallbacks *alloc; /* NULL or the counting allocator */
   /* VK_EXT_external_memory_host, enabled when the driver has it, and
    * its minImportedHostPointerAlignment. */
   bool host_import;
   VkDeviceSize host_import_align;
   bool extra_extension;
};

/* A test layer that dresses the driver up (emulates an extension), or
 * NULL: below the cohmap layer, above validation (vk-util.c says why). */
extern const char *vk_below_layer;
/* A device extension to enable when the device offers it, or NULL;
 * vk.extra_extension says whether it was. */
extern const char *vk_extra_extension;

/* Benchmarks: no validation layer, no messenger. */
extern bool vk_no_validation;
/* VK_CONFIG_ENV, but the harness enables the cohmap layer itself. */
extern bool vk_force_layer;

/* Validation warnings and errors since the program started. */
extern unsigned vk_validation_messages;
/* Of those, the ones a test provoked on purpose (invalid usage) and
 * checked for: not counted against it. */
extern unsigned vk_validation_expected;
extern bool vk_test_failed;

#define VK_CHECK(expr)                                                       \
   do {                                                                      \
      VkResult res_ = (expr);                                                \
      if (res_ != VK_SUCCESS) {                                              \
         printf("# %s:%d: %s = %d\n", __FILE__, __LINE__, #expr, res_);      \
         vk_test_failed = true;                                              \
         return false;                                                       \
      }                                                                      \
   } while (0)

#define VK_EXPECT(cond, ...)                                                 \
   do {                                                                      \
      if (!(cond)) {                                                         \
         printf("# %s:%d: expected %s: ", __FILE__, __LINE__, #cond);        \
         printf(__VA_ARGS__);                                                \
         printf("\n");                                                       \
         vk_test_failed = true;                                              \
         return false;                                                       \
      }                                                                      \
   } while (0)

/* Sets the environment for config (before vk_init). */
void vk_config_env(enum vk_config config);
const char *vk_config_name(enum vk_config config);
bool vk_config_parse(const char *name, enum vk_config *out);

/* Checks for lavapipe and the validation layer; exits 77 if missing. */
void vk_require_machine(void);

bool vk_init(struct vk *vk, enum vk_config config);
void vk_finish(struct vk *vk);

struct vk_buffer {
   VkBuffer buffer;
   VkDeviceMemory memory;
   VkDeviceSize size;
   uint8_t *map;
   bool own_memory;
};

/* A buffer with its own host-visible memory, mapped when map is true. */
bool vk_buffer_create(struct vk *vk, VkDeviceSize size,
                      VkBufferUsageFlags usage, bool map,
                      struct vk_buffer *out);
/* A buffer bound to memory at offset (not owned, not mapped). */
bool vk_buffer_bind(struct vk *vk, VkDeviceSize size,
                    VkBufferUsageFlags usage, VkDeviceMemory memory,
                    VkDeviceSize offset, struct vk_buffer *out);
void vk_buffer_destroy(struct vk *vk, struct vk_buffer *b);

/* Memory of the host-visible type. */
bool vk_memory_alloc(struct vk *vk, VkDeviceSize size, VkDeviceMemory *out);

/* How the host learns that a submission completed. */
enum vk_completion {
   VK_COMPLETE_FENCE_WAIT,
   VK_COMPLETE_FENCE_POLL,
   VK_COMPLETE_QUEUE_IDLE,
   VK_COMPLETE_DEVICE_IDLE,
   VK_COMPLETE_TIMELINE_WAIT,
   VK_COMPLETE_TIMELINE_POLL,
   VK_COMPLETE_EVENT_POLL,
   VK_COMPLETE_COUNT,
};

const char *vk_completion_name(enum vk_completion c);

/* A primary command buffer in the recording state. */
bool vk_cmd_begin(struct vk *vk, VkCommandBuffer *out);

/* Records transfer writes → host reads: what an application must record
 * so that the host may read what the GPU wrote. */
void vk_cmd_transfer_to_host(VkCommandBuffer cb);

/* Ends cb (with a transfer → host barrier, and the event for
 * VK_COMPLETE_EVENT_POLL), submits it (vkQueueSubmit, or vkQueueSubmit2
 * when submit2) and returns once completion was observed the way c says:
 * nothing else that could merge GPU writes is called before it returns.
 * vk_cmd_release() waits for the queue and frees cb afterwards. */
bool vk_cmd_submit(struct vk *vk, VkCommandBuffer cb, enum vk_completion c,
                   bool submit2);
bool vk_cmd_release(struct vk *vk, VkCommandBuffer cb);

/* Submit + fence wait + release. */
bool vk_cmd_run(struct vk *vk, VkCommandBuffer cb);

/* Compares and prints the first difference. */
bool vk_bytes_equal(const char *what, const uint8_t *got, const uint8_t *want,
                    size_t size);

#endif
