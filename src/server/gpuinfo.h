/* Internal: GPU device facts from NVML (name, memory, utilisation) for /gpu_info and
 * /metrics.
 *
 * libnvidia-ml.so.1 comes with the NVIDIA driver; it is loaded at run time with dlopen, so the
 * worker builds and runs on hosts without it (then fw_nvml_open fails with
 * FW_ERR_UNAVAILABLE and a reason, and callers report "nvml": "unavailable").
 *
 *   fw_nvml *nv; if (fw_nvml_open(NULL, &nv, &err) == FW_OK) {
 *       fw_gpu_device d; if (fw_nvml_query(nv, fw_nvml_index_for(nv, 0), &d, &err) == FW_OK) ...
 *       fw_nvml_close(nv);
 *   }
 *
 * Thread safety: NVML is thread-safe; an open handle may be queried from any thread. */
#ifndef FW_SERVER_GPUINFO_H
#define FW_SERVER_GPUINFO_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "facework/error.h"
#include "facework/facework.h"
#include "util/metrics.h"

typedef struct fw_nvml fw_nvml;

typedef struct fw_gpu_device {
    unsigned index;     /* NVML index */
    char name[96];      /* "NVIDIA H100 80GB HBM3" */
    char uuid[96];      /* "GPU-..." ("" when NVML does not say) */
    uint64_t mem_total; /* bytes */
    uint64_t mem_used;  /* bytes */
    int util_gpu;       /* % of the last sample period a kernel ran; -1 unknown */
    int util_mem;       /* % of the period device memory was read or written; -1 unknown */
    int temperature_c;  /* -1 unknown */
    double power_w;     /* current draw; < 0 unknown */
} fw_gpu_device;

/* Loads NVML from lib (NULL: "libnvidia-ml.so.1") and initialises it. Errors:
 * UNAVAILABLE (the library cannot be loaded, lacks a needed symbol, or nvmlInit fails:
 * message says which), NOMEM. On success *out is owned by the caller (fw_nvml_close). */
fw_err fw_nvml_open(const char *lib, fw_nvml **out, fw_error *err);

/* Shuts NVML down and unloads it. NULL is a no-op. */
void fw_nvml_close(fw_nvml *nv);

/* Number of GPUs NVML sees (0 on error). */
unsigned fw_nvml_device_count(fw_nvml *nv);

/* The NVIDIA driver's version ("580.159.04"), or "" when unknown. */
const char *fw_nvml_driver_version(const fw_nvml *nv);

/* The NVML index of CUDA device `cuda_ordinal`: when CUDA_VISIBLE_DEVICES lists indices or
 * UUIDs, the ordinal-th entry (a UUID is looked up); otherwise the ordinal itself (NVML and
 * CUDA agree when CUDA_DEVICE_ORDER=PCI_BUS_ID, and on one-GPU hosts). */
unsigned fw_nvml_index_for(fw_nvml *nv, int cuda_ordinal);

/* Fills *out for the GPU at NVML index `index`. Fields NVML cannot give are left unknown
 * (-1 / ""); an unknown index or a failed memory query is an error (UNAVAILABLE). */
fw_err fw_nvml_query(fw_nvml *nv, unsigned index, fw_gpu_device *out, fw_error *err);

/* ------------------------------------------------------------------------------------ */
/* The worker's view: NVML plus the engine's placement, for /gpu_info, /health, /metrics.  */

typedef struct fw_gpu_monitor fw_gpu_monitor;

/* Opens NVML (nvml_lib as in fw_nvml_open; a failure is kept as the reason, not an error)
 * and copies the GPU settings of cfg for display. *out is owned by the caller. Errors:
 * NOMEM only. */
fw_err fw_gpu_monitor_new(const char *nvml_lib, const fw_engine_config *cfg, fw_gpu_monitor **out,
                          fw_error *err);

/* Closes NVML. NULL is a no-op. No other call may be in progress. */
void fw_gpu_monitor_free(fw_gpu_monitor *mon);

/* The NVML handle (NULL when unavailable) and, then, why. */
fw_nvml *fw_gpu_monitor_nvml(const fw_gpu_monitor *mon);
const char *fw_gpu_monitor_nvml_error(const fw_gpu_monitor *mon);

/* True when a role of eng runs on a GPU now (after a fallback it may not): an accelerator
 * that is not a software device (WebGPU on lavapipe counts as none). */
bool fw_engine_gpu_in_use(const fw_engine *eng);

/* Adds to obj (the /gpu_info object) "device" (NVML's facts about the GPU in use, or null),
 * "gpu_count", "driver_version", "nvml" ("available" or "unavailable"), "nvml_error",
 * "gpu_settings", "webgpu" (fw_gpu_monitor_describe_webgpu), "fallback" (role -> null or
 * {"from","reason"}) and "faults" (role -> counters). eng may be NULL (loading): then no
 * fallback or faults entries. Thread-safe. */
void fw_gpu_monitor_describe(fw_gpu_monitor *mon, const fw_engine *eng, json_t *obj);

/* Adds "webgpu" to obj (the /gpu_info object): "in_use" (a role runs on WebGPU), "backend",
 * "power_preference", "adapter" (the Vulkan device Dawn picks by that preference: index,
 * name, vendor, vendor_id, device_id, type discrete|integrated|virtual|cpu|other,
 * vulkan_api, software, api; null when Vulkan lists none), "vulkan_devices" (all of them)
 * and "vulkan_error" (why none, else null). Vulkan is read only when a role runs on WebGPU
 * or fw_vk_gpu_hint finds a GPU device node. mon and eng may be NULL. Thread-safe. */
void fw_gpu_monitor_describe_webgpu(const fw_gpu_monitor *mon, const fw_engine *eng, json_t *obj);

/* /health's "webgpu_adapter": null unless a role of eng runs on WebGPU now; then the
 * adapter as in fw_gpu_monitor_describe_webgpu's "adapter" (name, vendor, type, software,
 * api, ...). */
json_t *fw_gpu_webgpu_adapter_json(const fw_gpu_monitor *mon, const fw_engine *eng);

/* The roles eng moved to the CPU after device faults, as a JSON array of names (/health's
 * "gpu_fallback"); empty when none or eng is NULL. */
json_t *fw_gpu_fallback_json(const fw_engine *eng);

/* Registers on reg, read at each scrape: per role facework_model_run_failures_total,
 * facework_batch_splits_total, facework_gpu_fallback (1 after a move to the CPU); and with
 * a role on WebGPU facework_webgpu_adapter_info{name,vendor,type,backend} 1; with
 * NVML facework_gpu_info{gpu,name} 1, facework_gpu_memory_total_bytes,
 * facework_gpu_memory_used_bytes, facework_gpu_utilization_ratio,
 * facework_gpu_memory_utilization_ratio (0..1; NaN when NVML cannot say). mon and eng
 * must outlive reg's use. */
fw_err fw_gpu_monitor_register_metrics(fw_gpu_monitor *mon, const fw_engine *eng, fw_metrics *reg,
                                       fw_error *err);

#endif
