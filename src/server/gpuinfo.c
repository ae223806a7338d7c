/* NVML through dlopen (see gpuinfo.h). The few NVML declarations needed are written here
 * from NVML's documented C API (types, return codes, function signatures); no NVML header is
 * needed at build time. */
#include "server/gpuinfo.h"

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ort.h"
#include "core/vkinfo.h"
#include "util/log.h"

/* NVML's ABI: opaque device handle, 0 = NVML_SUCCESS. */
typedef void *nvml_device;
typedef int nvml_return;

typedef struct nvml_memory {
    unsigned long long total, free, used;
} nvml_memory;

typedef struct nvml_utilization {
    unsigned int gpu, memory;
} nvml_utilization;

#define NVML_TEMPERATURE_GPU 0

struct fw_nvml {
    void *lib;
    char driver[80];
    nvml_return (*init)(void);
    nvml_return (*shutdown)(void);
    const char *(*error_string)(nvml_return);
    nvml_return (*count)(unsigned int *);
    nvml_return (*by_index)(unsigned int, nvml_device *);
    nvml_return (*by_uuid)(const char *, nvml_device *);
    nvml_return (*get_index)(nvml_device, unsigned int *);
    nvml_return (*name)(nvml_device, char *, unsigned int);
    nvml_return (*uuid)(nvml_device, char *, unsigned int);
    nvml_return (*memory)(nvml_device, nvml_memory *);
    nvml_return (*util)(nvml_device, nvml_utilization *);
    nvml_return (*temperature)(nvml_device, int, unsigned int *);
    nvml_return (*power)(nvml_device, unsigned int *);
    nvml_return (*driver_version)(char *, unsigned int);
};

/* NVML's message for rc, or the number. */
static const char *nv_err(const fw_nvml *nv, nvml_return rc, char *buf, size_t cap)
{
    const char *s = nv->error_string ? nv->error_string(rc) : NULL;
    if (s && *s)
        return s;
    snprintf(buf, cap, "NVML error %d", rc);
    return buf;
}

/* Resolves a symbol into *slot; returns 0 when it is missing. */
static int sym(void *lib, const char *name, void *slot)
{
    void *p = dlsym(lib, name);
    memcpy(slot, &p, sizeof p); /* object pointer -> function pointer, as POSIX allows */
    return p != NULL;
}

fw_err fw_nvml_open(const char *lib, fw_nvml **out, fw_error *err)
{
    *out = NULL;
    const char *path = lib && *lib ? lib : "libnvidia-ml.so.1";
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        return fw_error_set(err, FW_ERR_UNAVAILABLE, "cannot load %s: %s", path,
                            why ? why : "not found");
    }
    fw_nvml *nv = calloc(1, sizeof *nv);
    if (!nv) {
        dlclose(h);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    nv->lib = h;
    /* required */
    static const char *const required[] = {"nvmlInit_v2", "nvmlShutdown", "nvmlDeviceGetCount_v2",
                                           "nvmlDeviceGetHandleByIndex_v2",
                                           "nvmlDeviceGetMemoryInfo"};
    void *slots[] = {&nv->init, &nv->shutdown, &nv->count, &nv->by_index, &nv->memory};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!sym(h, required[i], slots[i])) {
            dlclose(h);
            free(nv);
            return fw_error_set(err, FW_ERR_UNAVAILABLE, "%s lacks %s", path, required[i]);
        }
    /* optional */
    sym(h, "nvmlErrorString", &nv->error_string);
    sym(h, "nvmlDeviceGetHandleByUUID", &nv->by_uuid);
    sym(h, "nvmlDeviceGetIndex", &nv->get_index);
    sym(h, "nvmlDeviceGetName", &nv->name);
    sym(h, "nvmlDeviceGetUUID", &nv->uuid);
    sym(h, "nvmlDeviceGetUtilizationRates", &nv->util);
    sym(h, "nvmlDeviceGetTemperature", &nv->temperature);
    sym(h, "nvmlDeviceGetPowerUsage", &nv->power);
    sym(h, "nvmlSystemGetDriverVersion", &nv->driver_version);
    nvml_return rc = nv->init();
    if (rc != 0) {
        char buf[32];
        fw_error_set(err, FW_ERR_UNAVAILABLE, "nvmlInit: %s", nv_err(nv, rc, buf, sizeof buf));
        dlclose(h);
        free(nv);
        return FW_ERR_UNAVAILABLE;
    }
    if (nv->driver_version && nv->driver_version(nv->driver, sizeof nv->driver) != 0)
        nv->driver[0] = '\0';
    nv->driver[sizeof nv->driver - 1] = '\0';
    *out = nv;
    return FW_OK;
}

void fw_nvml_close(fw_nvml *nv)
{
    if (!nv)
        return;
    nv->shutdown();
    dlclose(nv->lib);
    free(nv);
}

unsigned fw_nvml_device_count(fw_nvml *nv)
{
    unsigned int n = 0;
    if (!nv || nv->count(&n) != 0)
        return 0;
    return n;
}

const char *fw_nvml_driver_version(const fw_nvml *nv)
{
    return nv ? nv->driver : "";
}

unsigned fw_nvml_index_for(fw_nvml *nv, int cuda_ordinal)
{
    unsigned ord = cuda_ordinal > 0 ? (unsigned)cuda_ordinal : 0;
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    if (!vis || !*vis)
        return ord;
    /* the ord-th comma-separated entry */
    const char *p = vis;
    for (unsigned i = 0; i < ord && p; i++) {
        p = strchr(p, ',');
        if (p)
            p++;
    }
    if (!p || !*p)
        return ord;
    char entry[128];
    size_t n = strcspn(p, ",");
    if (n >= sizeof entry)
        return ord;
    memcpy(entry, p, n);
    entry[n] = '\0';
    char *stop;
    unsigned long idx = strtoul(entry, &stop, 10);
    if (stop != entry && *stop == '\0')
        return (unsigned)idx;
    nvml_device dev;
    unsigned int found;
    if (nv && nv->by_uuid && nv->get_index && nv->by_uuid(entry, &dev) == 0 &&
        nv->get_index(dev, &found) == 0)
        return found;
    return ord;
}

fw_err fw_nvml_query(fw_nvml *nv, unsigned index, fw_gpu_device *out, fw_error *err)
{
    memset(out, 0, sizeof *out);
    out->index = index;
    out->util_gpu = out->util_mem = out->temperature_c = -1;
    out->power_w = -1;
    if (!nv)
        return fw_error_set(err, FW_ERR_UNAVAILABLE, "NVML is not loaded");
    char buf[32];
    nvml_device dev = NULL;
    nvml_return rc = nv->by_index(index, &dev);
    if (rc != 0)
        return fw_error_set(err, FW_ERR_UNAVAILABLE, "GPU %u: %s", index,
                            nv_err(nv, rc, buf, sizeof buf));
    nvml_memory mem;
    rc = nv->memory(dev, &mem);
    if (rc != 0)
        return fw_error_set(err, FW_ERR_UNAVAILABLE, "GPU %u memory: %s", index,
                            nv_err(nv, rc, buf, sizeof buf));
    out->mem_total = mem.total;
    out->mem_used = mem.used;
    if (nv->name && nv->name(dev, out->name, sizeof out->name) != 0)
        out->name[0] = '\0';
    out->name[sizeof out->name - 1] = '\0';
    if (nv->uuid && nv->uuid(dev, out->uuid, sizeof out->uuid) != 0)
        out->uuid[0] = '\0';
    out->uuid[sizeof out->uuid - 1] = '\0';
    nvml_utilization u;
    if (nv->util && nv->util(dev, &u) == 0) {
        out->util_gpu = (int)u.gpu;
        out->util_mem = (int)u.memory;
    }
    unsigned int t;
    if (nv->temperature && nv->temperature(dev, NVML_TEMPERATURE_GPU, &t) == 0)
        out->temperature_c = (int)t;
    unsigned int mw;
    if (nv->power && nv->power(dev, &mw) == 0)
        out->power_w = mw / 1000.0;
    return FW_OK;
}

/* ------------------------------------------------------------------------------------ */
/* the worker's view                                                                    */

typedef struct role_ref {
    const fw_engine *eng;
    fw_role role;
} role_ref;

struct fw_gpu_monitor {
    fw_nvml *nvml;
    char nvml_error[FW_ERROR_MESSAGE_MAX];
    int device_id;
    unsigned nvml_index;
    /* settings, for display */
    size_t mem_limit;
    char arena[32], conv_algo[32], trt_cache[1024];
    bool pinned_io, trt_fp16;
    char webgpu_backend[16];
    bool webgpu_low_power;
    /* one NVML sample, reused within a scrape */
    pthread_mutex_t mu;
    double sampled_at;
    fw_gpu_device last;
    bool last_ok;
    role_ref roles[FW_ROLE__COUNT];
};

static bool sample(fw_gpu_monitor *mon, fw_gpu_device *d);

fw_err fw_gpu_monitor_new(const char *nvml_lib, const fw_engine_config *cfg, fw_gpu_monitor **out,
                          fw_error *err)
{
    *out = NULL;
    fw_gpu_monitor *mon = calloc(1, sizeof *mon);
    if (!mon)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    fw_error e;
    if (fw_nvml_open(nvml_lib, &mon->nvml, &e) != FW_OK)
        snprintf(mon->nvml_error, sizeof mon->nvml_error, "%s", e.message);
    mon->device_id = cfg ? cfg->device_id : 0;
    mon->nvml_index = fw_nvml_index_for(mon->nvml, mon->device_id);
    mon->mem_limit = cfg ? cfg->gpu_mem_limit : 0;
    snprintf(mon->arena, sizeof mon->arena, "%s",
             cfg && cfg->gpu_arena_extend ? cfg->gpu_arena_extend : "next_power_of_two");
    snprintf(mon->conv_algo, sizeof mon->conv_algo, "%s",
             cfg && cfg->cudnn_conv_algo ? cfg->cudnn_conv_algo : "heuristic");
    fw_session_opts so = {.trt_cache_dir = cfg ? cfg->trt_cache_dir : NULL};
    fw_ort_trt_cache_dir(&so, mon->trt_cache, sizeof mon->trt_cache);
    mon->pinned_io = cfg ? !cfg->gpu_pageable_io : true;
    mon->trt_fp16 = cfg ? cfg->trt_fp16 : false;
    snprintf(mon->webgpu_backend, sizeof mon->webgpu_backend, "%s",
             cfg && cfg->webgpu_backend && *cfg->webgpu_backend ? cfg->webgpu_backend : "default");
    mon->webgpu_low_power = cfg && cfg->webgpu_power && !strcmp(cfg->webgpu_power, "low-power");
    pthread_mutex_init(&mon->mu, NULL);
    fw_gpu_device d;
    if (!mon->nvml)
        FW_DEBUG("gpu", "NVML unavailable", "reason=\"%s\"", mon->nvml_error);
    else if (sample(mon, &d))
        FW_INFO("gpu", "NVML", "gpu=%u name=\"%s\" memory_total_mib=%llu driver=%s", d.index,
                d.name, (unsigned long long)(d.mem_total >> 20), fw_nvml_driver_version(mon->nvml));
    *out = mon;
    return FW_OK;
}

void fw_gpu_monitor_free(fw_gpu_monitor *mon)
{
    if (!mon)
        return;
    fw_nvml_close(mon->nvml);
    pthread_mutex_destroy(&mon->mu);
    free(mon);
}

fw_nvml *fw_gpu_monitor_nvml(const fw_gpu_monitor *mon)
{
    return mon ? mon->nvml : NULL;
}

const char *fw_gpu_monitor_nvml_error(const fw_gpu_monitor *mon)
{
    return mon ? mon->nvml_error : "";
}

bool fw_engine_gpu_in_use(const fw_engine *eng)
{
    if (!eng)
        return false;
    for (int r = 0; r < FW_ROLE__COUNT; r++) {
        fw_role_status st;
        fw_engine_role_status(eng, (fw_role)r, &st);
        if (st.on_device && !st.software_device)
            return true;
    }
    return false;
}

/* True when a role of eng runs on the WebGPU provider now. */
static bool webgpu_in_use(const fw_engine *eng)
{
    for (int r = 0; eng && r < FW_ROLE__COUNT; r++)
        if (!strcmp(fw_engine_provider(eng, (fw_role)r), "webgpu"))
            return true;
    return false;
}

/* One Vulkan device as JSON. */
static json_t *vk_device_json(const fw_vk_device *d, int index)
{
    char id[16];
    const char *vendor = fw_vk_vendor_name(d->vendor_id);
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(index));
    json_object_set_new(o, "name", json_string(d->name));
    snprintf(id, sizeof id, "0x%04x", d->vendor_id);
    json_object_set_new(o, "vendor", vendor ? json_string(vendor) : json_string(id));
    json_object_set_new(o, "vendor_id", json_string(id));
    snprintf(id, sizeof id, "0x%04x", d->device_id);
    json_object_set_new(o, "device_id", json_string(id));
    json_object_set_new(o, "type", json_string(fw_vk_type_name(d->type)));
    json_object_set_new(o, "vulkan_api", json_string(d->api_version));
    return o;
}

/* The adapter Dawn picks for mon's power preference, as JSON (null when none). */
static json_t *adapter_json(const fw_gpu_monitor *mon, const fw_vk_devices *vk)
{
    const int pick = fw_vk_preferred(vk, mon && mon->webgpu_low_power);
    if (pick < 0)
        return json_null();
    json_t *a = vk_device_json(&vk->dev[pick], pick);
    json_object_set_new(a, "software", json_boolean(vk->dev[pick].type == FW_VK_TYPE_CPU));
    json_object_set_new(a, "api", json_string("vulkan"));
    return a;
}

json_t *fw_gpu_webgpu_adapter_json(const fw_gpu_monitor *mon, const fw_engine *eng)
{
    return webgpu_in_use(eng) ? adapter_json(mon, fw_vk_devices_get()) : json_null();
}

void fw_gpu_monitor_describe_webgpu(const fw_gpu_monitor *mon, const fw_engine *eng, json_t *obj)
{
    /* Vulkan is read when WebGPU serves a role or the host has a GPU device; otherwise (a
     * CPU worker on a CPU-only host) loading the Vulkan drivers would only cost memory. */
    const bool in_use = webgpu_in_use(eng);
    fw_vk_devices not_read;
    memset(&not_read, 0, sizeof not_read);
    const fw_vk_devices *vk = &not_read;
    if (in_use || fw_vk_gpu_hint(not_read.error, sizeof not_read.error))
        vk = fw_vk_devices_get();
    const bool low = mon && mon->webgpu_low_power;
    json_t *w = json_object();
    json_object_set_new(w, "in_use", json_boolean(in_use));
    json_object_set_new(w, "backend", json_string(mon ? mon->webgpu_backend : "default"));
    json_object_set_new(w, "power_preference", json_string(low ? "low-power" : "high-performance"));
    json_object_set_new(w, "adapter", adapter_json(mon, vk));
    json_t *all = json_array();
    for (int i = 0; i < vk->count; i++)
        json_array_append_new(all, vk_device_json(&vk->dev[i], i));
    json_object_set_new(w, "vulkan_devices", all);
    json_object_set_new(w, "vulkan_error", vk->error[0] ? json_string(vk->error) : json_null());
    json_object_set_new(obj, "webgpu", w);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The GPU's facts, sampled at most every 0.2 s (a scrape reads several gauges). */
static bool sample(fw_gpu_monitor *mon, fw_gpu_device *d)
{
    if (!mon || !mon->nvml)
        return false;
    pthread_mutex_lock(&mon->mu);
    double now = mono_s();
    if (mon->sampled_at == 0 || now - mon->sampled_at > 0.2) {
        fw_error e;
        mon->last_ok = fw_nvml_query(mon->nvml, mon->nvml_index, &mon->last, &e) == FW_OK;
        mon->sampled_at = now;
    }
    bool ok = mon->last_ok;
    *d = mon->last;
    pthread_mutex_unlock(&mon->mu);
    return ok;
}

void fw_gpu_monitor_describe(fw_gpu_monitor *mon, const fw_engine *eng, json_t *obj)
{
    fw_gpu_device d;
    if (sample(mon, &d)) {
        json_t *dev = json_object();
        json_object_set_new(dev, "cuda_device_id", json_integer(mon->device_id));
        json_object_set_new(dev, "nvml_index", json_integer(d.index));
        json_object_set_new(dev, "name", json_string(d.name));
        json_object_set_new(dev, "uuid", d.uuid[0] ? json_string(d.uuid) : json_null());
        json_object_set_new(dev, "memory_total_bytes", json_integer((json_int_t)d.mem_total));
        json_object_set_new(dev, "memory_used_bytes", json_integer((json_int_t)d.mem_used));
        json_object_set_new(dev, "utilization_gpu_pct",
                            d.util_gpu >= 0 ? json_integer(d.util_gpu) : json_null());
        json_object_set_new(dev, "utilization_memory_pct",
                            d.util_mem >= 0 ? json_integer(d.util_mem) : json_null());
        json_object_set_new(dev, "temperature_c",
                            d.temperature_c >= 0 ? json_integer(d.temperature_c) : json_null());
        json_object_set_new(dev, "power_w", d.power_w >= 0 ? json_real(d.power_w) : json_null());
        json_object_set_new(obj, "device", dev);
    } else {
        json_object_set_new(obj, "device", json_null());
    }
    fw_nvml *nv = mon ? mon->nvml : NULL;
    json_object_set_new(obj, "gpu_count", json_integer(nv ? fw_nvml_device_count(nv) : 0));
    json_object_set_new(obj, "driver_version",
                        nv && fw_nvml_driver_version(nv)[0]
                            ? json_string(fw_nvml_driver_version(nv))
                            : json_null());
    json_object_set_new(obj, "nvml", json_string(nv ? "available" : "unavailable"));
    json_object_set_new(obj, "nvml_error",
                        !nv && mon && mon->nvml_error[0] ? json_string(mon->nvml_error)
                                                         : json_null());
    json_t *set = json_object();
    if (mon) {
        json_object_set_new(set, "device_id", json_integer(mon->device_id));
        json_object_set_new(set, "gpu_mem_limit_bytes", json_integer((json_int_t)mon->mem_limit));
        json_object_set_new(set, "gpu_arena_extend", json_string(mon->arena));
        json_object_set_new(set, "cudnn_conv_algo", json_string(mon->conv_algo));
        json_object_set_new(set, "pinned_io", json_boolean(mon->pinned_io));
        json_object_set_new(set, "tensorrt_libraries",
                            json_boolean(fw_ort_tensorrt_libs_present()));
        json_object_set_new(set, "trt_cache_dir", json_string(mon->trt_cache));
        json_object_set_new(set, "trt_fp16", json_boolean(mon->trt_fp16));
    }
    json_object_set_new(obj, "gpu_settings", set);
    fw_gpu_monitor_describe_webgpu(mon, eng, obj);
    json_t *fb = json_object(), *faults = json_object();
    for (int r = 0; eng && r < FW_ROLE__COUNT; r++) {
        fw_role_status st;
        fw_engine_role_status(eng, (fw_role)r, &st);
        if (!strcmp(st.provider, "none"))
            continue;
        if (st.fell_back) {
            json_t *o = json_object();
            json_object_set_new(o, "from", json_string(st.fallback_from));
            json_object_set_new(o, "reason", json_string(st.fallback_reason));
            json_object_set_new(fb, fw_role_name((fw_role)r), o);
        } else {
            json_object_set_new(fb, fw_role_name((fw_role)r), json_null());
        }
        json_t *c = json_object();
        json_object_set_new(c, "failed_runs", json_integer((json_int_t)st.failed_runs));
        json_object_set_new(c, "split_batches", json_integer((json_int_t)st.split_batches));
        json_object_set_new(c, "retries", json_integer((json_int_t)st.retries));
        json_object_set_new(c, "batch_cap", json_integer(st.batch_cap));
        json_object_set_new(faults, fw_role_name((fw_role)r), c);
    }
    json_object_set_new(obj, "fallback", fb);
    json_object_set_new(obj, "faults", faults);
}

json_t *fw_gpu_fallback_json(const fw_engine *eng)
{
    json_t *a = json_array();
    for (int r = 0; eng && r < FW_ROLE__COUNT; r++) {
        fw_role_status st;
        fw_engine_role_status(eng, (fw_role)r, &st);
        if (st.fell_back)
            json_array_append_new(a, json_string(fw_role_name((fw_role)r)));
    }
    return a;
}

static double read_failures(void *user)
{
    const role_ref *rr = user;
    fw_role_status st;
    fw_engine_role_status(rr->eng, rr->role, &st);
    return (double)st.failed_runs;
}

static double read_splits(void *user)
{
    const role_ref *rr = user;
    fw_role_status st;
    fw_engine_role_status(rr->eng, rr->role, &st);
    return (double)st.split_batches;
}

static double read_fallback(void *user)
{
    const role_ref *rr = user;
    fw_role_status st;
    fw_engine_role_status(rr->eng, rr->role, &st);
    return st.fell_back;
}

static double read_one(void *user)
{
    (void)user;
    return 1;
}

static double read_mem_total(void *user)
{
    fw_gpu_device d;
    return sample(user, &d) ? (double)d.mem_total : NAN;
}

static double read_mem_used(void *user)
{
    fw_gpu_device d;
    return sample(user, &d) ? (double)d.mem_used : NAN;
}

static double read_util(void *user)
{
    fw_gpu_device d;
    return sample(user, &d) && d.util_gpu >= 0 ? d.util_gpu / 100.0 : NAN;
}

static double read_mem_util(void *user)
{
    fw_gpu_device d;
    return sample(user, &d) && d.util_mem >= 0 ? d.util_mem / 100.0 : NAN;
}

fw_err fw_gpu_monitor_register_metrics(fw_gpu_monitor *mon, const fw_engine *eng, fw_metrics *reg,
                                       fw_error *err)
{
    fw_metric_family *fail = NULL, *split = NULL, *fb = NULL;
    fw_err rc;
    if ((rc = fw_metrics_counter(reg, "facework_model_run_failures_total",
                                 "model runs that failed (then split or retried)",
                                 FW_LABELS("role"), &fail, err)) ||
        (rc = fw_metrics_counter(reg, "facework_batch_splits_total",
                                 "failed batches split in halves and retried", FW_LABELS("role"),
                                 &split, err)) ||
        (rc = fw_metrics_gauge(reg, "facework_gpu_fallback",
                               "1 when the role moved to the CPU after device faults",
                               FW_LABELS("role"), &fb, err)))
        return rc;
    for (int r = 0; r < FW_ROLE__COUNT; r++) {
        fw_role_status st;
        fw_engine_role_status(eng, (fw_role)r, &st);
        if (!strcmp(st.provider, "none"))
            continue;
        mon->roles[r] = (role_ref){eng, (fw_role)r};
        const char *name = fw_role_name((fw_role)r);
        if ((rc = fw_metrics_callback_child(fail, FW_LABELS(name), read_failures, &mon->roles[r],
                                            NULL, err)) ||
            (rc = fw_metrics_callback_child(split, FW_LABELS(name), read_splits, &mon->roles[r],
                                            NULL, err)) ||
            (rc = fw_metrics_callback_child(fb, FW_LABELS(name), read_fallback, &mon->roles[r],
                                            NULL, err)))
            return rc;
    }
    if (webgpu_in_use(eng)) {
        const fw_vk_devices *vk = fw_vk_devices_get();
        const int pick = fw_vk_preferred(vk, mon->webgpu_low_power);
        if (pick >= 0) {
            const fw_vk_device *a = &vk->dev[pick];
            char vid[16];
            snprintf(vid, sizeof vid, "0x%04x", a->vendor_id);
            const char *vendor = fw_vk_vendor_name(a->vendor_id);
            fw_metric_family *wi = NULL;
            if ((rc = fw_metrics_gauge(reg, "facework_webgpu_adapter_info",
                                       "the adapter of the WebGPU provider (read from Vulkan)",
                                       FW_LABELS("name", "vendor", "type", "backend"), &wi, err)) ||
                (rc = fw_metrics_callback_child(
                     wi,
                     FW_LABELS(a->name, vendor ? vendor : vid, fw_vk_type_name(a->type), "vulkan"),
                     read_one, NULL, NULL, err)))
                return rc;
        }
    }
    fw_gpu_device d;
    if (!sample(mon, &d))
        return FW_OK;
    char idx[16];
    snprintf(idx, sizeof idx, "%u", d.index);
    fw_metric_family *info = NULL, *tot = NULL, *used = NULL, *util = NULL, *mutil = NULL;
    if ((rc = fw_metrics_gauge(reg, "facework_gpu_info", "the GPU in use (NVML)",
                               FW_LABELS("gpu", "name"), &info, err)) ||
        (rc = fw_metrics_callback_child(info, FW_LABELS(idx, d.name), read_one, NULL, NULL, err)) ||
        (rc = fw_metrics_gauge(reg, "facework_gpu_memory_total_bytes", "GPU memory (NVML)",
                               FW_LABELS("gpu"), &tot, err)) ||
        (rc = fw_metrics_callback_child(tot, FW_LABELS(idx), read_mem_total, mon, NULL, err)) ||
        (rc = fw_metrics_gauge(reg, "facework_gpu_memory_used_bytes",
                               "GPU memory in use by every process (NVML)", FW_LABELS("gpu"), &used,
                               err)) ||
        (rc = fw_metrics_callback_child(used, FW_LABELS(idx), read_mem_used, mon, NULL, err)) ||
        (rc = fw_metrics_gauge(reg, "facework_gpu_utilization_ratio",
                               "share of the last sample period a kernel ran (NVML)",
                               FW_LABELS("gpu"), &util, err)) ||
        (rc = fw_metrics_callback_child(util, FW_LABELS(idx), read_util, mon, NULL, err)) ||
        (rc = fw_metrics_gauge(reg, "facework_gpu_memory_utilization_ratio",
                               "share of the last sample period device memory was read or "
                               "written (NVML)",
                               FW_LABELS("gpu"), &mutil, err)) ||
        (rc = fw_metrics_callback_child(mutil, FW_LABELS(idx), read_mem_util, mon, NULL, err)))
        return rc;
    return FW_OK;
}
