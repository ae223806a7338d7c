/* Vulkan devices through dlopen (see vkinfo.h). The declarations below are the few parts of
 * the Vulkan 1.0 C API that are needed, written from the specification (structure layouts,
 * enum values, function signatures); no Vulkan header is needed at build time. */
#include "core/vkinfo.h"

#include <dlfcn.h>
#include <glob.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef int32_t vk_result; /* VK_SUCCESS = 0; VK_INCOMPLETE = 5 */
typedef void *vk_instance;
typedef void *vk_physical_device;
typedef void (*vk_void_fn)(void);

typedef struct vk_application_info {
    int32_t s_type; /* VK_STRUCTURE_TYPE_APPLICATION_INFO = 0 */
    const void *next;
    const char *application_name;
    uint32_t application_version;
    const char *engine_name;
    uint32_t engine_version;
    uint32_t api_version;
} vk_application_info;

typedef struct vk_instance_create_info {
    int32_t s_type; /* VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO = 1 */
    const void *next;
    uint32_t flags;
    const vk_application_info *application_info;
    uint32_t enabled_layer_count;
    const char *const *enabled_layer_names;
    uint32_t enabled_extension_count;
    const char *const *enabled_extension_names;
} vk_instance_create_info;

/* VkPhysicalDeviceProperties: the leading members, then room for the rest (limits and
 * sparse properties: 824 bytes in all on LP64, so 4 KiB is ample). */
typedef struct vk_physical_device_properties {
    uint32_t api_version;
    uint32_t driver_version;
    uint32_t vendor_id;
    uint32_t device_id;
    int32_t device_type;
    char device_name[256];           /* VK_MAX_PHYSICAL_DEVICE_NAME_SIZE */
    uint8_t pipeline_cache_uuid[16]; /* VK_UUID_SIZE */
    _Alignas(8) unsigned char rest[4096];
} vk_physical_device_properties;

#define VK_API_VERSION_1_0 (1u << 22)
#define VK_INCOMPLETE 5

typedef vk_void_fn (*pfn_get_instance_proc_addr)(vk_instance, const char *);
typedef vk_result (*pfn_create_instance)(const vk_instance_create_info *, const void *,
                                         vk_instance *);
typedef void (*pfn_destroy_instance)(vk_instance, const void *);
typedef vk_result (*pfn_enumerate_physical_devices)(vk_instance, uint32_t *, vk_physical_device *);
typedef void (*pfn_get_physical_device_properties)(vk_physical_device,
                                                   vk_physical_device_properties *);

static fw_vk_devices g_list;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Resolves a function pointer from gipa into *slot (POSIX allows the conversion). */
static int resolve(pfn_get_instance_proc_addr gipa, vk_instance inst, const char *name, void *slot)
{
    vk_void_fn f = gipa(inst, name);
    memcpy(slot, &f, sizeof f);
    return f != NULL;
}

static void read_devices(void)
{
    fw_vk_devices *l = &g_list;
    /* Kept loaded for the life of the process: Dawn loads the same loader and drivers, and
     * unloading a Vulkan driver (LLVM inside lavapipe) while others use it is unsafe. */
    void *lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        snprintf(l->error, sizeof l->error, "no Vulkan loader: %s", why ? why : "not found");
        return;
    }
    pfn_get_instance_proc_addr gipa = NULL;
    void *p = dlsym(lib, "vkGetInstanceProcAddr");
    memcpy(&gipa, &p, sizeof p);
    pfn_create_instance create = NULL;
    if (!gipa || !resolve(gipa, NULL, "vkCreateInstance", &create)) {
        snprintf(l->error, sizeof l->error, "libvulkan.so.1 lacks vkGetInstanceProcAddr");
        return;
    }
    vk_application_info app = {.s_type = 0,
                               .application_name = "facework",
                               .engine_name = "facework",
                               .api_version = VK_API_VERSION_1_0};
    vk_instance_create_info ci = {.s_type = 1, .application_info = &app};
    vk_instance inst = NULL;
    vk_result rc = create(&ci, NULL, &inst);
    if (rc != 0 || !inst) {
        snprintf(l->error, sizeof l->error,
                 "vkCreateInstance failed (VkResult %d): no usable Vulkan driver", (int)rc);
        return;
    }
    l->loaded = true;
    pfn_destroy_instance destroy = NULL;
    pfn_enumerate_physical_devices enumerate = NULL;
    pfn_get_physical_device_properties props = NULL;
    if (!resolve(gipa, inst, "vkDestroyInstance", &destroy) ||
        !resolve(gipa, inst, "vkEnumeratePhysicalDevices", &enumerate) ||
        !resolve(gipa, inst, "vkGetPhysicalDeviceProperties", &props)) {
        snprintf(l->error, sizeof l->error, "the Vulkan loader lacks a core 1.0 function");
        if (destroy)
            destroy(inst, NULL);
        return;
    }
    vk_physical_device devs[FW_VK_MAX_DEVICES];
    uint32_t n = FW_VK_MAX_DEVICES;
    rc = enumerate(inst, &n, devs);
    if (rc != 0 && rc != VK_INCOMPLETE) {
        snprintf(l->error, sizeof l->error, "vkEnumeratePhysicalDevices failed (VkResult %d)",
                 (int)rc);
        n = 0;
    }
    for (uint32_t i = 0; i < n && i < FW_VK_MAX_DEVICES; i++) {
        vk_physical_device_properties pr;
        memset(&pr, 0, sizeof pr);
        props(devs[i], &pr);
        fw_vk_device *d = &l->dev[l->count++];
        pr.device_name[sizeof pr.device_name - 1] = '\0';
        snprintf(d->name, sizeof d->name, "%s", pr.device_name);
        d->vendor_id = pr.vendor_id;
        d->device_id = pr.device_id;
        d->type = pr.device_type >= 0 && pr.device_type <= 4 ? (fw_vk_type)pr.device_type
                                                             : FW_VK_TYPE_OTHER;
        snprintf(d->api_version, sizeof d->api_version, "%u.%u.%u", (pr.api_version >> 22) & 0x7f,
                 (pr.api_version >> 12) & 0x3ff, pr.api_version & 0xfff);
    }
    if (l->count == 0 && !l->error[0])
        snprintf(l->error, sizeof l->error, "Vulkan lists no device");
    destroy(inst, NULL);
}

const fw_vk_devices *fw_vk_devices_get(void)
{
    pthread_once(&g_once, read_devices);
    return &g_list;
}

bool fw_vk_gpu_hint(char *why, size_t cap)
{
#ifdef __linux__
    static const char *const patterns[] = {"/dev/dri/renderD*", "/dev/dri/card*",
                                           "/sys/class/drm/card*", "/dev/nvidia[0-9]*"};
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
        glob_t g;
        int rc = glob(patterns[i], 0, NULL, &g);
        size_t n = rc == 0 ? g.gl_pathc : 0;
        globfree(&g);
        if (n > 0)
            return true;
    }
    if (cap)
        snprintf(why, cap,
                 "no GPU device on this host (no /dev/dri, /sys/class/drm card or "
                 "/dev/nvidia* node): Vulkan not probed");
    return false;
#else
    (void)why;
    (void)cap;
    return true;
#endif
}

/* Rank of a type in Dawn's adapter order (lower first). */
static int rank_of(fw_vk_type t, bool low_power)
{
    switch (t) {
    case FW_VK_TYPE_DISCRETE:
        return low_power ? 1 : 0;
    case FW_VK_TYPE_INTEGRATED:
        return low_power ? 0 : 1;
    case FW_VK_TYPE_VIRTUAL:
        return 2;
    case FW_VK_TYPE_CPU:
        return 4;
    default:
        return 3;
    }
}

int fw_vk_preferred(const fw_vk_devices *list, bool low_power)
{
    int best = -1;
    for (int i = 0; list && i < list->count; i++)
        if (best < 0 ||
            rank_of(list->dev[i].type, low_power) < rank_of(list->dev[best].type, low_power))
            best = i;
    return best;
}

const char *fw_vk_type_name(fw_vk_type t)
{
    switch (t) {
    case FW_VK_TYPE_INTEGRATED:
        return "integrated";
    case FW_VK_TYPE_DISCRETE:
        return "discrete";
    case FW_VK_TYPE_VIRTUAL:
        return "virtual";
    case FW_VK_TYPE_CPU:
        return "cpu";
    default:
        return "other";
    }
}

const char *fw_vk_vendor_name(uint32_t vendor_id)
{
    switch (vendor_id) {
    case 0x1002:
    case 0x1022:
        return "AMD";
    case 0x10de:
        return "NVIDIA";
    case 0x8086:
        return "Intel";
    case 0x106b:
        return "Apple";
    case 0x13b5:
        return "ARM";
    case 0x5143:
        return "Qualcomm";
    case 0x1010:
        return "Imagination";
    case 0x1ae0:
        return "Google";
    case 0x14e4:
        return "Broadcom";
    case 0x1414:
        return "Microsoft";
    case 0x10005: /* VK_VENDOR_ID_MESA: lavapipe and other Mesa software devices */
        return "Mesa";
    default:
        return NULL;
    }
}
