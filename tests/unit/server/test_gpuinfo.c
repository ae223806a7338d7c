/* Unit tests for the NVML loader (src/server/gpuinfo.c):
 *  - no NVML (this host: no NVIDIA driver), a path that does not exist, and a library that is
 *    not NVML: each is FW_ERR_UNAVAILABLE with the reason, never a crash;
 *  - a stand-in libnvidia-ml built here from a few lines of C (the system compiler, at test
 *    time; skipped when there is none): device count, name, UUID, memory, utilisation,
 *    temperature, power, driver version, CUDA_VISIBLE_DEVICES mapping (indices and UUIDs),
 *    an unknown index, and an nvmlInit that fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/vkinfo.h"
#include "server/gpuinfo.h"

static char g_dir[256];
static char g_fake[512]; /* "" when it could not be built */

/* The stand-in: two GPUs, index i has (i + 1) GiB used of 80 GiB, 37 + i % busy. */
static const char fake_src[] =
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "#include <string.h>\n"
    "typedef struct { unsigned long long total, free, used; } mem_t;\n"
    "typedef struct { unsigned int gpu, memory; } util_t;\n"
    "static int inits;\n"
    "int nvmlInit_v2(void) { if (getenv(\"FAKE_NVML_FAIL\")) return 9; inits++; return 0; }\n"
    "int nvmlShutdown(void) { inits--; return 0; }\n"
    "const char *nvmlErrorString(int rc) { return rc == 9 ? \"Driver Not Loaded\" : \"Fake\"; }\n"
    "int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 2; return 0; }\n"
    "int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **d) {\n"
    "  if (i >= 2) return 2; *d = (void *)(unsigned long)(i + 1); return 0; }\n"
    "int nvmlDeviceGetHandleByUUID(const char *u, void **d) {\n"
    "  if (!strcmp(u, \"GPU-fake-0\")) { *d = (void *)1ul; return 0; }\n"
    "  if (!strcmp(u, \"GPU-fake-1\")) { *d = (void *)2ul; return 0; } return 13; }\n"
    "int nvmlDeviceGetIndex(void *d, unsigned int *i) { *i = (unsigned)(unsigned long)d - 1; "
    "return 0; }\n"
    "int nvmlDeviceGetName(void *d, char *b, unsigned int n) {\n"
    "  snprintf(b, n, \"Fake GPU %lu\", (unsigned long)d - 1); return 0; }\n"
    "int nvmlDeviceGetUUID(void *d, char *b, unsigned int n) {\n"
    "  snprintf(b, n, \"GPU-fake-%lu\", (unsigned long)d - 1); return 0; }\n"
    "int nvmlDeviceGetMemoryInfo(void *d, mem_t *m) {\n"
    "  m->total = 80ull << 30; m->used = ((unsigned long)d) << 30; m->free = m->total - m->used;"
    " return 0; }\n"
    "int nvmlDeviceGetUtilizationRates(void *d, util_t *u) {\n"
    "  u->gpu = 36 + (unsigned)(unsigned long)d; u->memory = 5; return 0; }\n"
    "int nvmlDeviceGetTemperature(void *d, int s, unsigned int *t) { (void)d; (void)s; *t = 41; "
    "return 0; }\n"
    "int nvmlDeviceGetPowerUsage(void *d, unsigned int *mw) { (void)d; *mw = 123456; return 0; }\n"
    "int nvmlSystemGetDriverVersion(char *b, unsigned int n) { snprintf(b, n, \"580.1.2\"); "
    "return 0; }\n";

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s/fw-nvml-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_dir))
        return -1;
    char src[512], cmd[2048];
    snprintf(src, sizeof src, "%s/fake_nvml.c", g_dir);
    FILE *f = fopen(src, "w");
    if (!f || fputs(fake_src, f) < 0 || fclose(f) != 0)
        return -1;
    snprintf(g_fake, sizeof g_fake, "%s/libfake-nvidia-ml.so.1", g_dir);
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    snprintf(cmd, sizeof cmd, "%s -shared -fPIC -O1 -o '%s' '%s' 2>'%s/cc.log'", cc, g_fake, src,
             g_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "note: could not build the stand-in NVML (%s); those tests skip\n", cc);
        g_fake[0] = '\0';
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* This host has no NVIDIA driver: loading NVML is UNAVAILABLE with dlopen's reason. */
static void test_absent_library(void **state)
{
    (void)state;
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h) {
        dlclose(h);
        skip(); /* a host with the driver: the absence path cannot be seen here */
    }
    fw_nvml *nv = (fw_nvml *)0x1;
    fw_error err;
    assert_int_equal(fw_nvml_open(NULL, &nv, &err), FW_ERR_UNAVAILABLE);
    assert_null(nv);
    assert_non_null(strstr(err.message, "libnvidia-ml.so.1"));
    fw_nvml_close(NULL); /* no-op */
    assert_int_equal(fw_nvml_device_count(NULL), 0);
    assert_string_equal(fw_nvml_driver_version(NULL), "");
    fw_gpu_device d;
    assert_int_equal(fw_nvml_query(NULL, 0, &d, &err), FW_ERR_UNAVAILABLE);
    assert_int_equal(d.util_gpu, -1);
}

static void test_missing_path_and_wrong_library(void **state)
{
    (void)state;
    fw_nvml *nv = NULL;
    fw_error err;
    assert_int_equal(fw_nvml_open("/nonexistent/libnvidia-ml.so.1", &nv, &err), FW_ERR_UNAVAILABLE);
    assert_null(nv);
    assert_non_null(strstr(err.message, "cannot load"));
    /* a real library that is not NVML */
    assert_int_equal(fw_nvml_open("libm.so.6", &nv, &err), FW_ERR_UNAVAILABLE);
    assert_null(nv);
    assert_non_null(strstr(err.message, "lacks nvmlInit_v2"));
}

static void test_stand_in_devices(void **state)
{
    (void)state;
    if (!g_fake[0])
        skip();
    fw_nvml *nv = NULL;
    fw_error err;
    unsetenv("CUDA_VISIBLE_DEVICES");
    if (fw_nvml_open(g_fake, &nv, &err) != FW_OK)
        fail_msg("stand-in NVML: %s", err.message);
    assert_int_equal(fw_nvml_device_count(nv), 2);
    assert_string_equal(fw_nvml_driver_version(nv), "580.1.2");
    fw_gpu_device d;
    assert_int_equal(fw_nvml_query(nv, 1, &d, &err), FW_OK);
    assert_int_equal(d.index, 1);
    assert_string_equal(d.name, "Fake GPU 1");
    assert_string_equal(d.uuid, "GPU-fake-1");
    assert_true(d.mem_total == 80ull << 30);
    assert_true(d.mem_used == 2ull << 30);
    assert_int_equal(d.util_gpu, 38);
    assert_int_equal(d.util_mem, 5);
    assert_int_equal(d.temperature_c, 41);
    assert_true(d.power_w > 123.4 && d.power_w < 123.5);
    assert_int_equal(fw_nvml_query(nv, 5, &d, &err), FW_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.message, "GPU 5"));

    /* CUDA ordinal -> NVML index */
    assert_int_equal(fw_nvml_index_for(nv, 0), 0);
    assert_int_equal(fw_nvml_index_for(nv, 1), 1);
    setenv("CUDA_VISIBLE_DEVICES", "1", 1);
    assert_int_equal(fw_nvml_index_for(nv, 0), 1);
    setenv("CUDA_VISIBLE_DEVICES", "1,0", 1);
    assert_int_equal(fw_nvml_index_for(nv, 1), 0);
    setenv("CUDA_VISIBLE_DEVICES", "GPU-fake-1", 1);
    assert_int_equal(fw_nvml_index_for(nv, 0), 1);
    setenv("CUDA_VISIBLE_DEVICES", "GPU-unknown", 1);
    assert_int_equal(fw_nvml_index_for(nv, 0), 0);
    unsetenv("CUDA_VISIBLE_DEVICES");
    fw_nvml_close(nv);
}

static void test_init_failure(void **state)
{
    (void)state;
    if (!g_fake[0])
        skip();
    setenv("FAKE_NVML_FAIL", "1", 1);
    fw_nvml *nv = NULL;
    fw_error err;
    assert_int_equal(fw_nvml_open(g_fake, &nv, &err), FW_ERR_UNAVAILABLE);
    unsetenv("FAKE_NVML_FAIL");
    assert_null(nv);
    assert_non_null(strstr(err.message, "nvmlInit: Driver Not Loaded"));
}

/* /gpu_info's "webgpu" without an engine: not in use, the power preference and backend of
 * the config, and, on a host with a GPU device node, the adapter Dawn would take and every
 * Vulkan device as vkinfo lists them (on a CPU-only host none: Vulkan is not loaded for a
 * description); /health's webgpu_adapter is null then. */
static void test_webgpu_description(void **state)
{
    (void)state;
    fw_engine_config cfg;
    fw_engine_config_init(&cfg);
    cfg.webgpu_power = "low-power";
    cfg.webgpu_backend = "vulkan";
    fw_gpu_monitor *mon = NULL;
    assert_int_equal(fw_gpu_monitor_new("/nonexistent/libnvidia-ml.so.1", &cfg, &mon, NULL), FW_OK);
    json_t *obj = json_object();
    fw_gpu_monitor_describe_webgpu(mon, NULL, obj);
    json_t *w = json_object_get(obj, "webgpu");
    assert_true(json_is_false(json_object_get(w, "in_use")));
    assert_string_equal(json_string_value(json_object_get(w, "power_preference")), "low-power");
    assert_string_equal(json_string_value(json_object_get(w, "backend")), "vulkan");
    json_t *devs = json_object_get(w, "vulkan_devices");
    json_t *a = json_object_get(w, "adapter");
    char why[256];
    if (!fw_vk_gpu_hint(why, sizeof why)) { /* a CPU-only host: Vulkan is not loaded for this */
        assert_int_equal(json_array_size(devs), 0);
        assert_true(json_is_null(a));
        assert_string_equal(json_string_value(json_object_get(w, "vulkan_error")), why);
        json_decref(obj);
        obj = json_object();
        fw_gpu_monitor_describe_webgpu(mon, NULL, obj);
        assert_int_equal(
            json_array_size(json_object_get(json_object_get(obj, "webgpu"), "vulkan_devices")), 0);
        json_decref(obj);
        fw_gpu_monitor_free(mon);
        return;
    }
    const fw_vk_devices *vk = fw_vk_devices_get();
    assert_int_equal(json_array_size(devs), (size_t)vk->count);
    const int pick = fw_vk_preferred(vk, true);
    if (pick < 0) {
        assert_true(json_is_null(a));
        assert_string_equal(json_string_value(json_object_get(w, "vulkan_error")), vk->error);
    } else {
        assert_string_equal(json_string_value(json_object_get(a, "name")), vk->dev[pick].name);
        assert_string_equal(json_string_value(json_object_get(a, "type")),
                            fw_vk_type_name(vk->dev[pick].type));
        assert_int_equal(json_is_true(json_object_get(a, "software")),
                         vk->dev[pick].type == FW_VK_TYPE_CPU);
        char id[16];
        snprintf(id, sizeof id, "0x%04x", vk->dev[pick].vendor_id);
        assert_string_equal(json_string_value(json_object_get(a, "vendor_id")), id);
    }
    json_decref(obj);
    json_t *h = fw_gpu_webgpu_adapter_json(mon, NULL);
    assert_true(json_is_null(h));
    json_decref(h);
    assert_false(fw_engine_gpu_in_use(NULL));
    fw_gpu_monitor_free(mon);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absent_library),
        cmocka_unit_test(test_missing_path_and_wrong_library),
        cmocka_unit_test(test_stand_in_devices),
        cmocka_unit_test(test_init_failure),
        cmocka_unit_test(test_webgpu_description),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
