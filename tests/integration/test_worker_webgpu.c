/* Integration: the worker on ONNX Runtime's WebGPU provider, over real HTTP, on the host's
 * Vulkan device (in `make test`: Mesa's software device lavapipe, installed by `make
 * webgpu-deps`). A real worker process with --provider webgpu:
 *  - answers the six photos and tests/data/images/odd_sampling.jpg in one request with the
 *    faces the CLI finds on the CPU: the same count, boxes within 1 px, every embedding's
 *    cosine to the CPU's above 0.999;
 *  - reports the adapter: /health (provider webgpu, webgpu_adapter with name, vendor, type;
 *    gpu_available false on a software device), /gpu_info (webgpu.adapter, vulkan_devices)
 *    and /metrics (facework_webgpu_adapter_info); the GPU batching settings apply;
 * and, with FACE_DETECTION_GPU=false and the embedder's WebGPU session failing every run
 * (the FACEWORK_FAULT_INJECT hook, no stand-in: the session is a real WebGPU one), the
 * detector runs on the CPU, the embedder moves from webgpu to the CPU and every answer is
 * still right. A --device-id other than 0 is refused at start with the reason.
 * Each worker warms up on WebGPU once (batches 1, 2, 4: shader compilation happens there). */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_IMAGES 7

/* The seven test images: sample1..6.jpg and odd_sampling.jpg (no face). */
static const char *image_path(int i)
{
    static char odd[1024];
    if (i < 6)
        return fwt_photo_path(i + 1);
    snprintf(odd, sizeof odd, "%s/images/odd_sampling.jpg", getenv("FW_TEST_DATA"));
    return odd;
}

/* Posts the seven images in one /v1/analyze request; each answer must match the CLI's on
 * the CPU (computed once per process). Returns the response's provider (static copy). */
static const char *analyze_matches_cpu(const fwt_worker *w)
{
    static json_t *cpu[N_IMAGES];
    static char provider[32];
    fwt_part parts[N_IMAGES];
    uint8_t *data[N_IMAGES];
    char names[N_IMAGES][16];
    for (int i = 0; i < N_IMAGES; i++) {
        size_t len;
        data[i] = fwt_read_file(image_path(i), &len);
        snprintf(names[i], sizeof names[i], "i%d.jpg", i);
        parts[i] = (fwt_part){"image", names[i], "image/jpeg", data[i], len};
        if (!cpu[i])
            cpu[i] = fwt_cli_analyze(image_path(i));
        assert_string_equal(fwt_json_str(cpu[i], "provider", NULL), "cpu");
    }
    fwt_resp r;
    fwt_post_parts(w, "/v1/analyze", parts, N_IMAGES, FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    json_t *res = json_object_get(j, "results");
    assert_int_equal(json_array_size(res), N_IMAGES);
    for (int i = 0; i < N_IMAGES; i++) {
        json_t *item = json_array_get(res, (size_t)i);
        if (json_object_get(item, "error"))
            fail_msg("%s failed: %s", image_path(i), json_dumps(item, 0));
        json_t *want =
            json_object_get(json_array_get(json_object_get(cpu[i], "results"), 0), "faces");
        json_t *got = json_object_get(item, "faces");
        assert_int_equal(json_array_size(got), json_array_size(want));
        if (i < 6)
            assert_int_equal(json_array_size(got), fwt_photo_faces[i + 1]);
        fwt_match_faces(got, want, 1.0, 0.999);
        free(data[i]);
    }
    snprintf(provider, sizeof provider, "%s", fwt_json_str(j, "provider", NULL));
    json_decref(j);
    return provider;
}

static void test_pipeline_on_webgpu(void **state)
{
    (void)state;
    static const char *const args[] = {
        "--provider", "webgpu",      "--max-batch", "4", "--max-batch-faces",
        "4",          "--log-level", "info",        NULL};
    fwt_worker *w = fwt_worker_start(args);

    json_t *h = fwt_wait_healthy(w, 30);
    assert_string_equal(fwt_json_str(h, "provider", NULL), "webgpu");
    json_t *ad = json_object_get(h, "webgpu_adapter");
    assert_true(json_is_object(ad));
    assert_true(strlen(fwt_json_str(ad, "name", NULL)) > 0);
    assert_true(strlen(fwt_json_str(ad, "vendor", NULL)) > 0);
    assert_string_equal(fwt_json_str(ad, "api", NULL), "vulkan");
    const bool software = !strcmp(fwt_json_str(ad, "type", NULL), "cpu");
    assert_true(json_is_boolean(json_object_get(ad, "software")));
    assert_int_equal(json_is_true(json_object_get(ad, "software")), software);
    /* a software device is no GPU; a real adapter is */
    assert_int_equal(json_is_true(json_object_get(h, "gpu_available")), !software);
    json_decref(h);

    assert_string_equal(analyze_matches_cpu(w), "webgpu");

    json_t *g = fwt_get_json(w, "/gpu_info", 200);
    for (int r = 0; r < 3; r++) {
        static const char *const roles[] = {"detector", "landmarks", "embedder"};
        assert_string_equal(fwt_json_str(g, "active_providers", roles[r]), "webgpu");
    }
    json_t *wg = json_object_get(g, "webgpu");
    assert_true(json_is_true(json_object_get(wg, "in_use")));
    assert_string_equal(fwt_json_str(wg, "power_preference", NULL), "high-performance");
    assert_string_equal(fwt_json_str(wg, "backend", NULL), "default");
    json_t *gad = json_object_get(wg, "adapter");
    assert_true(json_is_object(gad));
    json_t *devs = json_object_get(wg, "vulkan_devices");
    assert_true(json_array_size(devs) >= 1);
    json_t *picked =
        json_array_get(devs, (size_t)json_integer_value(json_object_get(gad, "index")));
    assert_string_equal(fwt_json_str(picked, "name", NULL), fwt_json_str(gad, "name", NULL));
    json_t *faults = json_object_get(json_object_get(g, "faults"), "embedder");
    assert_int_equal(json_integer_value(json_object_get(faults, "failed_runs")), 0);
    char series[512];
    snprintf(series, sizeof series,
             "facework_webgpu_adapter_info{name=\"%s\",vendor=\"%s\",type=\"%s\","
             "backend=\"vulkan\"}",
             fwt_json_str(gad, "name", NULL), fwt_json_str(gad, "vendor", NULL),
             fwt_json_str(gad, "type", NULL));
    json_decref(g);

    fwt_resp r;
    fwt_get(w, "/metrics", FWT_H1, &r);
    assert_int_equal(r.status, 200);
    double v = -1;
    if (!fwt_metric(r.body, series, &v))
        fail_msg("no %s in /metrics", series);
    assert_true(v == 1);
    assert_true(
        fwt_metric(r.body, "facework_provider_info{role=\"embedder\",provider=\"webgpu\"}", &v));
    assert_true(v == 1);
    fwt_resp_free(&r);

    /* the GPU batching applies: two model threads per role on the device */
    char *log = fwt_worker_log(w);
    const char *gb = strstr(log, "msg=gpu batching");
    if (!gb)
        fail_msg("no 'gpu batching' line in the log");
    assert_non_null(strstr(gb, "detector=webgpu embedder=webgpu max_batch=4 max_batch_faces=4 "
                               "detect_threads=2 embed_threads=2"));
    free(log);
    assert_int_equal(fwt_worker_stop(w, SIGTERM, 30), 0);
}

static void test_webgpu_faults_and_placement(void **state)
{
    (void)state;
    static const char *const env[] = {"FACE_DETECTION_GPU=false",
                                      "FACEWORK_FAULT_INJECT=embedder:always", NULL};
    static const char *const args[] = {"--provider",        "webgpu", "--max-batch", "4",
                                       "--max-batch-faces", "4",      NULL};
    fwt_worker_opts o = {.env = env, .args = args};
    fwt_worker *w = fwt_worker_start_opts(&o);
    json_t *g = fwt_get_json(w, "/gpu_info", 200);
    assert_string_equal(fwt_json_str(g, "active_providers", "detector"), "cpu");
    assert_string_equal(fwt_json_str(g, "active_providers", "landmarks"), "cpu");
    assert_string_equal(fwt_json_str(g, "active_providers", "embedder"), "webgpu");
    json_decref(g);

    /* every run of the embedder's WebGPU session fails: split, retried, moved to the CPU */
    assert_string_equal(analyze_matches_cpu(w), "cpu");

    json_t *h = fwt_get_json(w, "/health", 200);
    assert_string_equal(fwt_json_str(h, "status", NULL), "healthy");
    json_t *fb = json_object_get(h, "gpu_fallback");
    assert_int_equal(json_array_size(fb), 1);
    assert_string_equal(json_string_value(json_array_get(fb, 0)), "embedder");
    assert_true(json_is_null(json_object_get(h, "webgpu_adapter"))); /* no role on it now */
    assert_true(json_is_false(json_object_get(h, "gpu_available")));
    json_decref(h);
    g = fwt_get_json(w, "/gpu_info", 200);
    json_t *efb = json_object_get(json_object_get(g, "fallback"), "embedder");
    assert_string_equal(fwt_json_str(efb, "from", NULL), "webgpu");
    assert_non_null(strstr(fwt_json_str(efb, "reason", NULL), "injected fault"));
    json_t *faults = json_object_get(json_object_get(g, "faults"), "embedder");
    assert_true(json_integer_value(json_object_get(faults, "split_batches")) >= 1);
    assert_true(json_is_false(json_object_get(json_object_get(g, "webgpu"), "in_use")));
    json_decref(g);
    assert_int_equal(fwt_worker_stop(w, SIGTERM, 30), 0);

    /* WebGPU picks its adapter itself: a device index is refused with the reason */
    static const char *const bad[] = {"--provider", "webgpu", "--device-id", "1", NULL};
    fwt_worker_opts ob = {.args = bad, .no_wait = true};
    w = fwt_worker_start_opts(&ob);
    assert_true(fwt_worker_wait_exit(w, 60));
    assert_true(fwt_exit_code(w->wstatus) != 0);
    char *log = fwt_worker_log(w);
    assert_non_null(strstr(log, "picks its adapter by power preference"));
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipeline_on_webgpu),
        cmocka_unit_test(test_webgpu_faults_and_placement),
    };
    return cmocka_run_group_tests(tests, NULL, fwt_teardown);
}
