/* Integration: the worker when its GPU fails, on a host without one. The engine's
 * fault-injection test hook (FACEWORK_FAULT_INJECT) makes the embedder stand in for a GPU
 * session that fails every run, and the detector one whose first run runs out of memory
 * (a transient fault: retried, it stays on its "GPU"). A real worker process then:
 *  - answers every image of a six-photo request with the faces the CLI finds in-process
 *    (boxes within 0.5 px, embedding cosine > 0.999): no crash, no wrong answer;
 *  - /health stays 200 "healthy" and names the role that moved to the CPU in gpu_fallback;
 *    its provider is now "cpu";
 *  - /gpu_info says where each role runs, why the embedder left its device, the detector's
 *    failed run, and "nvml": "unavailable" (no libnvidia-ml here);
 *  - /metrics shows the fallback, the failures and the provider change;
 * and FACE_DETECTION_GPU / FACE_EMBEDDING_GPU place roles: both false put every model on
 * the CPU even under --provider cuda; a value that is not a boolean stops the worker. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_faults_fall_back_to_cpu(void **state)
{
    (void)state;
    static const char *const env[] = {
        "FACEWORK_FAULT_INJECT=embedder:device,always;detector:device,oom,first=1", NULL};
    fwt_worker_opts o = {.env = env};
    fwt_worker *w = fwt_worker_start_opts(&o);

    /* before any request: the stand-ins count as GPU sessions */
    json_t *h = fwt_wait_healthy(w, 30);
    assert_true(json_is_true(json_object_get(h, "gpu_available")));
    assert_string_equal(fwt_json_str(h, "provider", NULL), "sim-gpu");
    assert_int_equal(json_array_size(json_object_get(h, "gpu_fallback")), 0);
    json_decref(h);

    /* six photos in one request: every answer right */
    fwt_part parts[6];
    char names[6][16];
    for (int i = 0; i < 6; i++) {
        size_t len;
        const uint8_t *d = fwt_photo(i + 1, &len);
        snprintf(names[i], sizeof names[i], "p%d.jpg", i + 1);
        parts[i] = (fwt_part){"image", names[i], "image/jpeg", d, len};
    }
    fwt_resp r;
    fwt_post_parts(w, "/v1/analyze", parts, 6, FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    json_t *res = json_object_get(j, "results");
    assert_int_equal(json_array_size(res), 6);
    for (int i = 0; i < 6; i++) {
        json_t *item = json_array_get(res, (size_t)i);
        if (json_object_get(item, "error"))
            fail_msg("image %d failed: %s", i + 1, json_dumps(item, 0));
        json_t *cli = fwt_cli_analyze(fwt_photo_path(i + 1));
        json_t *want = json_object_get(json_array_get(json_object_get(cli, "results"), 0), "faces");
        assert_int_equal(json_array_size(json_object_get(item, "faces")), fwt_photo_faces[i + 1]);
        fwt_match_faces(json_object_get(item, "faces"), want, 0.5, 0.999);
        json_decref(cli);
    }
    assert_string_equal(fwt_json_str(j, "provider", NULL), "cpu");
    json_decref(j);

    /* /health: still serving, degraded, says which role moved */
    h = fwt_get_json(w, "/health", 200);
    assert_string_equal(fwt_json_str(h, "status", NULL), "healthy");
    assert_string_equal(fwt_json_str(h, "provider", NULL), "cpu");
    json_t *fb = json_object_get(h, "gpu_fallback");
    assert_int_equal(json_array_size(fb), 1);
    assert_string_equal(json_string_value(json_array_get(fb, 0)), "embedder");
    assert_true(json_is_true(json_object_get(h, "gpu_available"))); /* the detector's */
    json_decref(h);

    /* /gpu_info: where each role runs and why */
    json_t *g = fwt_get_json(w, "/gpu_info", 200);
    assert_string_equal(fwt_json_str(g, "active_providers", "embedder"), "cpu");
    assert_string_equal(fwt_json_str(g, "active_providers", "detector"), "sim-gpu");
    json_t *efb = json_object_get(json_object_get(g, "fallback"), "embedder");
    assert_string_equal(fwt_json_str(efb, "from", NULL), "sim-gpu");
    assert_non_null(strstr(fwt_json_str(efb, "reason", NULL), "injected fault"));
    assert_true(json_is_null(json_object_get(json_object_get(g, "fallback"), "detector")));
    json_t *dfaults = json_object_get(json_object_get(g, "faults"), "detector");
    assert_int_equal(json_integer_value(json_object_get(dfaults, "failed_runs")), 1);
    assert_string_equal(fwt_json_str(g, "nvml", NULL), "unavailable");
    assert_true(json_is_null(json_object_get(g, "device")));
    json_decref(g);

    /* /metrics */
    fwt_get(w, "/metrics", FWT_H1, &r);
    assert_int_equal(r.status, 200);
    double v = -1;
    assert_true(fwt_metric(r.body, "facework_gpu_fallback{role=\"embedder\"}", &v));
    assert_true(v == 1);
    assert_true(fwt_metric(r.body, "facework_gpu_fallback{role=\"detector\"}", &v));
    assert_true(v == 0);
    assert_true(
        fwt_metric(r.body, "facework_provider_info{role=\"embedder\",provider=\"cpu\"}", &v));
    assert_true(v == 1);
    assert_true(
        fwt_metric(r.body, "facework_provider_info{role=\"embedder\",provider=\"sim-gpu\"}", &v));
    assert_true(v == 0);
    assert_true(fwt_metric(r.body, "facework_model_run_failures_total{role=\"embedder\"}", &v));
    assert_true(v >= 2);
    assert_null(strstr(r.body, "facework_gpu_memory_total_bytes")); /* no NVML here */
    fwt_resp_free(&r);

    char *log = fwt_worker_log(w);
    assert_non_null(strstr(log, "model moved to the CPU after device faults"));
    free(log);
    assert_int_equal(fwt_worker_stop(w, SIGTERM, 30), 0);
}

static void test_role_placement_env(void **state)
{
    (void)state;
    /* both roles off the GPU: --provider cuda is not even tried */
    static const char *const off[] = {"FACE_DETECTION_GPU=false", "FACE_EMBEDDING_GPU=false", NULL};
    static const char *const args[] = {"--provider", "cuda", NULL};
    fwt_worker_opts o = {.env = off, .args = args};
    fwt_worker *w = fwt_worker_start_opts(&o);
    json_t *g = fwt_get_json(w, "/gpu_info", 200);
    assert_string_equal(fwt_json_str(g, "active_providers", "detector"), "cpu");
    assert_string_equal(fwt_json_str(g, "active_providers", "landmarks"), "cpu");
    assert_string_equal(fwt_json_str(g, "active_providers", "embedder"), "cpu");
    assert_true(json_is_false(json_object_get(g, "gpu_available")));
    json_decref(g);
    assert_int_equal(fwt_worker_stop(w, SIGTERM, 30), 0);

    /* not a boolean: refused at start */
    static const char *const bad[] = {"FACE_EMBEDDING_GPU=sometimes", NULL};
    fwt_worker_opts ob = {.env = bad, .no_wait = true};
    w = fwt_worker_start_opts(&ob);
    assert_true(fwt_worker_wait_exit(w, 30));
    assert_int_equal(fwt_exit_code(w->wstatus), 2);
    char *log = fwt_worker_log(w);
    assert_non_null(strstr(log, "FACE_EMBEDDING_GPU"));
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faults_fall_back_to_cpu),
        cmocka_unit_test(test_role_placement_env),
    };
    return cmocka_run_group_tests(tests, NULL, fwt_teardown);
}
