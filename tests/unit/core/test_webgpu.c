/* The WebGPU provider: batch buckets, the Vulkan device list (core/vkinfo) and Dawn's
 * adapter order, AUTO never taking a software adapter, the options' errors, and real WebGPU
 * sessions on this host's Vulkan device (lavapipe in `make test`): padded batches and
 * concurrent runs from two threads give the CPU's outputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ort.h"
#include "core/vkinfo.h"

static fw_model *load(const char *file, const fw_session_opts *o)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", getenv("FW_MODELS_DIR"), file);
    fw_model *m = NULL;
    fw_error e = {0};
    fw_err rc = fw_model_load(path, o, &m, &e);
    if (rc)
        fail_msg("loading %s: %s (%s)", path, e.message, fw_err_name(rc));
    return m;
}

static void fill_random(float *x, size_t n, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
    }
}

/* Runs m on n items of x (its first input's shape, batch n); outs filled. */
static void run_n(fw_model *m, const float *x, int n, fw_tensor *outs)
{
    fw_shape s = fw_model_get_info(m)->inputs[0];
    s.dims[0] = n;
    fw_error e = {0};
    fw_err rc = fw_model_run(m, x, &s, outs, &e);
    if (rc)
        fail_msg("run of batch %d: %s", n, e.message);
}

static size_t per_item(const fw_model *m)
{
    const fw_shape *s = &fw_model_get_info(m)->inputs[0];
    size_t n = 1;
    for (int i = 1; i < s->rank; i++)
        n *= (size_t)s->dims[i];
    return n;
}

static void test_batch_bucket(void **state)
{
    (void)state;
    static const int64_t cases[][3] = {
        /* batch, max_batch, bucket */
        {1, 64, 1},   {2, 64, 2},  {3, 64, 4}, {5, 64, 8}, {33, 64, 64}, {64, 64, 64},
        {65, 64, 65}, {3, 4, 4},   {4, 4, 4},  {5, 4, 5},  {40, 48, 48}, {47, 48, 48},
        {49, 48, 49}, {17, 0, 32}, {1, 1, 1},  {2, 1, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (fw_ort_batch_bucket(cases[i][0], (int)cases[i][1]) != cases[i][2])
            fail_msg("bucket(%lld, %lld) = %lld, want %lld", (long long)cases[i][0],
                     (long long)cases[i][1],
                     (long long)fw_ort_batch_bucket(cases[i][0], (int)cases[i][1]),
                     (long long)cases[i][2]);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(fw_provider_name(FW_PROVIDER_WEBGPU), "webgpu");
    assert_int_equal(fw_provider_parse("WebGPU"), FW_PROVIDER_WEBGPU);
    assert_int_equal(fw_webgpu_backend_parse(NULL), FW_WEBGPU_BACKEND_DEFAULT);
    assert_int_equal(fw_webgpu_backend_parse(""), FW_WEBGPU_BACKEND_DEFAULT);
    assert_int_equal(fw_webgpu_backend_parse("Vulkan"), FW_WEBGPU_BACKEND_VULKAN);
    assert_int_equal(fw_webgpu_backend_parse("d3d12"), FW_WEBGPU_BACKEND_D3D12);
    assert_int_equal(fw_webgpu_backend_parse("metal"), -1);
    assert_string_equal(fw_webgpu_backend_name(FW_WEBGPU_BACKEND_VULKAN), "vulkan");
    assert_string_equal(fw_webgpu_backend_name((fw_webgpu_backend)7), "unknown");
    assert_string_equal(fw_vk_type_name(FW_VK_TYPE_CPU), "cpu");
    assert_string_equal(fw_vk_type_name(FW_VK_TYPE_DISCRETE), "discrete");
    assert_string_equal(fw_vk_type_name((fw_vk_type)9), "other");
    assert_string_equal(fw_vk_vendor_name(0x1002), "AMD");
    assert_string_equal(fw_vk_vendor_name(0x10de), "NVIDIA");
    assert_string_equal(fw_vk_vendor_name(0x8086), "Intel");
    assert_string_equal(fw_vk_vendor_name(0x10005), "Mesa");
    assert_null(fw_vk_vendor_name(0x1234));
}

/* Dawn's order: high performance takes a discrete GPU over an integrated one over a CPU
 * device; low power takes the integrated one; ties keep the enumeration order. */
static void test_preferred_order(void **state)
{
    (void)state;
    fw_vk_devices l;
    memset(&l, 0, sizeof l);
    assert_int_equal(fw_vk_preferred(&l, false), -1);
    assert_int_equal(fw_vk_preferred(NULL, false), -1);
    const fw_vk_type types[] = {FW_VK_TYPE_CPU, FW_VK_TYPE_INTEGRATED, FW_VK_TYPE_DISCRETE,
                                FW_VK_TYPE_DISCRETE};
    l.count = 1;
    l.dev[0].type = types[0];
    assert_int_equal(fw_vk_preferred(&l, false), 0); /* only a CPU device: that one */
    l.count = 2;
    l.dev[1].type = types[1];
    assert_int_equal(fw_vk_preferred(&l, false), 1);
    assert_int_equal(fw_vk_preferred(&l, true), 1);
    l.count = 4;
    l.dev[2].type = types[2];
    l.dev[3].type = types[3];
    assert_int_equal(fw_vk_preferred(&l, false), 2);
    assert_int_equal(fw_vk_preferred(&l, true), 1);
    l.dev[1].type = FW_VK_TYPE_VIRTUAL;
    assert_int_equal(fw_vk_preferred(&l, true), 2);
}

/* The host's list (make test installs lavapipe, so there is at least that device). */
static void test_host_devices(void **state)
{
    (void)state;
    const fw_vk_devices *vk = fw_vk_devices_get();
    assert_ptr_equal(vk, fw_vk_devices_get()); /* read once */
    if (vk->count == 0)
        fail_msg("no Vulkan device: %s (make webgpu-deps installs lavapipe)", vk->error);
    assert_true(vk->loaded);
    for (int i = 0; i < vk->count; i++) {
        assert_true(vk->dev[i].name[0] != '\0');
        assert_true(vk->dev[i].api_version[0] >= '1');
        assert_true((unsigned)vk->dev[i].type <= FW_VK_TYPE_CPU);
    }
}

/* AUTO never takes a software adapter, nor a device index; an explicit webgpu with a
 * device index fails with the reason. */
static void test_auto_and_device_id(void **state)
{
    (void)state;
    const fw_vk_devices *vk = fw_vk_devices_get();
    const int pick = fw_vk_preferred(vk, false);
    char why[256];
    fw_session_opts o = {.provider = FW_PROVIDER_AUTO, .threads = 1};
    const int ok = fw_ort_webgpu_auto_ok(&o, why, sizeof why);
    if (pick < 0 || vk->dev[pick].type == FW_VK_TYPE_CPU) {
        assert_false(ok);
        assert_non_null(strstr(why, pick < 0 ? "no WebGPU adapter" : "software Vulkan device"));
        fw_model *m = load("fr_landmark.onnx", &o);
        assert_string_equal(fw_model_provider(m), "cpu");
        fw_model_free(m);
    } else {
        assert_true(ok);
    }
    o.device_id = 1;
    assert_false(fw_ort_webgpu_auto_ok(&o, why, sizeof why));
    assert_non_null(strstr(why, "device id 1"));
    o.provider = FW_PROVIDER_WEBGPU;
    char path[1024];
    snprintf(path, sizeof path, "%s/fr_landmark.onnx", getenv("FW_MODELS_DIR"));
    fw_model *m = NULL;
    fw_error e = {0};
    assert_int_equal(fw_model_load(path, &o, &m, &e), FW_ERR_PROVIDER);
    assert_null(m);
    assert_non_null(strstr(e.message, "picks its adapter by power preference"));
}

/* Batches of 3 padded to 4 (max_batch 4) and of 5 (above it, not padded) give the CPU's
 * outputs item by item, with the batch's own first dimension. */
static void check_model(const char *file, float tol)
{
    fw_session_opts cpu = {.provider = FW_PROVIDER_CPU, .threads = 1};
    fw_session_opts wg = {.provider = FW_PROVIDER_WEBGPU, .max_batch = 4};
    fw_model *mc = load(file, &cpu), *mw = load(file, &wg);
    assert_string_equal(fw_model_provider(mw), "webgpu");
    assert_true(fw_model_on_device(mw));
    const fw_vk_devices *vk = fw_vk_devices_get();
    const int pick = fw_vk_preferred(vk, false);
    assert_int_equal(fw_model_software_device(mw),
                     pick >= 0 && vk->dev[pick].type == FW_VK_TYPE_CPU);
    assert_false(fw_model_software_device(mc));
    const size_t per = per_item(mc);
    float *x = malloc(5 * per * sizeof *x);
    assert_non_null(x);
    fill_random(x, 5 * per, 11);
    for (int n = 3; n <= 5; n += 2) {
        fw_tensor oc[FW_MAX_OUTPUTS] = {0}, ow[FW_MAX_OUTPUTS] = {0};
        run_n(mc, x, n, oc);
        run_n(mw, x, n, ow);
        for (size_t o = 0; o < fw_model_get_info(mc)->n_outputs; o++) {
            assert_int_equal(ow[o].shape.dims[0], n);
            assert_int_equal(ow[o].count, oc[o].count);
            float worst = 0;
            for (size_t i = 0; i < oc[o].count; i++)
                worst = fmaxf(worst, fabsf(oc[o].data[i] - ow[o].data[i]));
            if (!(worst <= tol))
                fail_msg("%s batch %d output %zu: webgpu differs from cpu by %g", file, n, o,
                         (double)worst);
            fw_tensor_clear(&oc[o]);
            fw_tensor_clear(&ow[o]);
        }
    }
    free(x);
    fw_model_free(mw);
    fw_model_free(mc);
}

static void test_padded_batches_match_cpu(void **state)
{
    (void)state;
    check_model("fr_landmark.onnx", 1e-3f);
    check_model("fr_feature.onnx", 1e-3f);
}

typedef struct run_arg {
    fw_model *m;
    const float *x;
    const float *want;
    size_t count;
    int failures;
} run_arg;

static void *run_thread(void *p)
{
    run_arg *a = p;
    for (int k = 0; k < 3; k++) {
        fw_tensor out[FW_MAX_OUTPUTS] = {0};
        fw_shape s = fw_model_get_info(a->m)->inputs[0];
        s.dims[0] = 2;
        fw_error e;
        if (fw_model_run(a->m, a->x, &s, out, &e) != FW_OK || out[0].count != a->count) {
            a->failures++;
        } else {
            for (size_t i = 0; i < a->count; i++)
                if (fabsf(out[0].data[i] - a->want[i]) > 1e-4f) {
                    a->failures++;
                    break;
                }
        }
        fw_tensor_clear(&out[0]);
    }
    return NULL;
}

/* Two sessions of the same process on WebGPU, run from two threads at once (the worker's
 * two model threads): ORT's shared WebGPU context crashes without the serialisation. */
static void test_concurrent_sessions(void **state)
{
    (void)state;
    fw_session_opts wg = {.provider = FW_PROVIDER_WEBGPU, .max_batch = 2};
    fw_model *m[2] = {load("fr_landmark.onnx", &wg), load("fr_landmark.onnx", &wg)};
    const size_t per = per_item(m[0]);
    float *x = malloc(2 * per * sizeof *x);
    assert_non_null(x);
    fill_random(x, 2 * per, 5);
    fw_tensor ref[FW_MAX_OUTPUTS] = {0};
    run_n(m[0], x, 2, ref);
    pthread_t th[4];
    run_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (run_arg){m[t % 2], x, ref[0].data, ref[0].count, 0};
        assert_int_equal(pthread_create(&th[t], NULL, run_thread, &args[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(args[t].failures, 0);
    }
    fw_tensor_clear(&ref[0]);
    free(x);
    fw_model_free(m[0]);
    fw_model_free(m[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_bucket),        cmocka_unit_test(test_names),
        cmocka_unit_test(test_preferred_order),     cmocka_unit_test(test_host_devices),
        cmocka_unit_test(test_auto_and_device_id),  cmocka_unit_test(test_padded_batches_match_cpu),
        cmocka_unit_test(test_concurrent_sessions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
