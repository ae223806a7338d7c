/* Internal: the Vulkan devices of this host, for the WebGPU execution provider.
 *
 * ONNX Runtime 1.29 says nothing through its C API about the adapter its WebGPU provider
 * (Dawn) picks: GetEpDevices lists no WebGPU device where no hardware GPU was discovered, and
 * no Dawn symbol is exported. On Linux Dawn drives Vulkan, so the devices are read from
 * Vulkan itself: libvulkan.so.1 is loaded at run time with dlopen (no build dependency; the
 * few Vulkan declarations needed are written in vkinfo.c from the Vulkan specification), an
 * instance is created, vkEnumeratePhysicalDevices and vkGetPhysicalDeviceProperties give each
 * device's name, PCI vendor and device ids, type and API version, and the instance is
 * destroyed. Read once per process; thread-safe. */
#ifndef FW_CORE_VKINFO_H
#define FW_CORE_VKINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "facework/error.h"

#define FW_VK_MAX_DEVICES 16

/* Vulkan's VkPhysicalDeviceType, in its numbering. */
typedef enum fw_vk_type {
    FW_VK_TYPE_OTHER = 0,
    FW_VK_TYPE_INTEGRATED = 1,
    FW_VK_TYPE_DISCRETE = 2,
    FW_VK_TYPE_VIRTUAL = 3,
    FW_VK_TYPE_CPU = 4, /* a software device: Mesa's lavapipe (llvmpipe), SwiftShader */
} fw_vk_type;

typedef struct fw_vk_device {
    char name[256]; /* "AMD Radeon RX 7900 XTX (RADV NAVI31)", "llvmpipe (LLVM 19.1.7, 256 bits)" */
    uint32_t vendor_id;   /* PCI vendor id (0x1002 AMD, 0x10de NVIDIA, 0x8086 Intel, ...) */
    uint32_t device_id;   /* PCI device id */
    fw_vk_type type;      /* Vulkan device type */
    char api_version[24]; /* "1.4.305" */
} fw_vk_device;

typedef struct fw_vk_devices {
    bool loaded;                      /* libvulkan.so.1 loaded and an instance was created */
    char error[FW_ERROR_MESSAGE_MAX]; /* why not, or why no device was listed ("" when some) */
    int count;
    fw_vk_device dev[FW_VK_MAX_DEVICES]; /* in Vulkan's enumeration order */
} fw_vk_devices;

/* The host's Vulkan devices, read on the first call (later calls return the same list).
 * Never NULL; count is 0 with error set when the loader is missing, instance creation fails
 * or no device exists. Thread-safe. */
const fw_vk_devices *fw_vk_devices_get(void);

/* A cheap look, without loading Vulkan, for a GPU device on this host: on Linux a DRM node
 * (/dev/dri/renderD*, /dev/dri/card*, /sys/class/drm/card*) or an NVIDIA one
 * (/dev/nvidia0..). False (why says so) when there is none: AUTO then skips WebGPU without
 * loading the Vulkan loader and drivers (lavapipe alone maps LLVM: about 40 MB of resident
 * memory in every CPU process otherwise). True elsewhere than Linux (no such look). */
bool fw_vk_gpu_hint(char *why, size_t cap);

/* Index (into the list) of the device Dawn requests for the given power preference:
 * Dawn orders adapters by type, for high performance (low_power false) discrete, integrated,
 * virtual, other, then CPU; for low power integrated first; ties keep enumeration order.
 * -1 when the list is empty. */
int fw_vk_preferred(const fw_vk_devices *list, bool low_power);

/* "discrete", "integrated", "virtual", "cpu", "other". */
const char *fw_vk_type_name(fw_vk_type t);

/* The vendor's name for a PCI vendor id ("AMD", "NVIDIA", "Intel", "Apple", "ARM",
 * "Qualcomm", "Mesa" for Mesa's software devices, ...), or NULL when unknown. */
const char *fw_vk_vendor_name(uint32_t vendor_id);

#endif
