/* Unit tests for the ONNX Runtime wrapper: provider names, the real default models (names,
 * shapes, symbolic batch, batch-N == N x batch-1), explicit providers that cannot start,
 * load and run errors, and concurrent runs on one session; the WebGPU provider on this
 * host's Vulkan device (lavapipe in make test): batch buckets, Dawn's adapter order from the
 * Vulkan list, AUTO refusing a software adapter and a device index, padded batches equal to
 * the CPU's outputs, and two WebGPU sessions run from four threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ort.h"
#include "core/vkinfo.h"

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                              */

static const char *env_or_fail(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        fail_msg("%s is not set (run under ctest)", name);
    return v;
}

static void model_path(char *buf, size_t cap, const char *file)
{
    snprintf(buf, cap, "%s/%s", env_or_fail("FW_MODELS_DIR"), file);
}

static fw_model *load_opts(const char *file, const fw_session_opts *o)
{
    char path[1024];
    model_path(path, sizeof path, file);
    fw_model *m = NULL;
    fw_error e = {0};
    fw_err rc = fw_model_load(path, o, &m, &e);
    if (rc)
        fail_msg("loading %s: %s (%s)", path, e.message, fw_err_name(rc));
    assert_non_null(m);
    return m;
}

static fw_model *load_default(const char *file, fw_provider p)
{
    fw_session_opts o = {.provider = p, .threads = 1};
    return load_opts(file, &o);
}

/* Deterministic pseudo-random floats in [-1, 1) (the range of normalised pixels). */
static void fill_random(float *x, size_t n, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
    }
}

static size_t per_item(const fw_shape *s)
{
    size_t n = 1;
    for (int i = 1; i < s->rank; i++)
        n *= (size_t)s->dims[i];
    return n;
}

static void assert_close(const float *a, const float *b, size_t n, float tol, const char *what)
{
    float worst = 0.0f;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= worst) || isnan(d)) {
            worst = d;
            at = i;
        }
    }
    if (!(worst <= tol))
        fail_msg("%s: element %zu differs by %g (%g vs %g), tolerance %g", what, at, (double)worst,
                 (double)a[at], (double)b[at], (double)tol);
}

/* ------------------------------------------------------------------------------------ */
/* tests                                                                                */

static void test_provider_names(void **state)
{
    (void)state;
    for (int p = 0; p < FW_PROVIDER__COUNT; p++) {
        const char *name = fw_provider_name((fw_provider)p);
        assert_non_null(name);
        assert_int_equal(fw_provider_parse(name), p);
    }
    assert_string_equal(fw_provider_name(FW_PROVIDER_AUTO), "auto");
    assert_string_equal(fw_provider_name(FW_PROVIDER_CPU), "cpu");
    assert_string_equal(fw_provider_name(FW_PROVIDER_CUDA), "cuda");
    assert_string_equal(fw_provider_name(FW_PROVIDER_TENSORRT), "tensorrt");
    assert_string_equal(fw_provider_name(FW_PROVIDER_DML), "dml");
    assert_string_equal(fw_provider_name(FW_PROVIDER_ROCM), "rocm");
    assert_string_equal(fw_provider_name(FW_PROVIDER_MIGRAPHX), "migraphx");
    assert_string_equal(fw_provider_name(FW_PROVIDER_COREML), "coreml");
    assert_string_equal(fw_provider_name(FW_PROVIDER_OPENVINO), "openvino");
    assert_int_equal(fw_provider_parse("CUDA"), FW_PROVIDER_CUDA);
    assert_int_equal(fw_provider_parse("directml"), FW_PROVIDER_DML);
    assert_int_equal(fw_provider_parse("gpu"), -1);
    assert_int_equal(fw_provider_parse(""), -1);
    assert_int_equal(fw_provider_parse(NULL), -1);
    assert_string_equal(fw_provider_name(FW_PROVIDER__COUNT), "unknown");
    assert_string_equal(fw_provider_name((fw_provider)-1), "unknown");
}

static void test_version_and_providers(void **state)
{
    (void)state;
    assert_true(strncmp(fw_ort_version(), "1.29.", 5) == 0);
    const char *names[32];
    size_t n = fw_ort_available_providers(names, 32);
    assert_true(n >= 1);
    int cpu = 0;
    for (size_t i = 0; i < n; i++) {
        assert_non_null(names[i]);
        assert_true(names[i][0] != '\0');
        cpu += strcmp(names[i], "cpu") == 0;
    }
    assert_int_equal(cpu, 1);
    /* a smaller cap truncates */
    assert_int_equal(fw_ort_available_providers(names, 1), 1);
    assert_int_equal(fw_ort_available_providers(names, 0), 0);
}

/* The setup made the first dimension of all three default models symbolic. */
static void test_default_models_info(void **state)
{
    (void)state;
    const char *want_provider = getenv("FW_EXPECT_PROVIDER"); /* set on GPU hosts */
    if (!want_provider)
        want_provider = "cpu";
    static const struct {
        const char *file;
        int64_t in[4];
        size_t n_out;
        const char *out_names[2];
        int out_rank[2];
        int64_t out[2][3];
    } models[] = {
        {"fr_detect.onnx",
         {-1, 3, 240, 320},
         2,
         {"scores", "boxes"},
         {3, 3},
         {{-1, 4420, 2}, {-1, 4420, 4}}},
        {"fr_landmark.onnx", {-1, 1, 64, 64}, 1, {"output", NULL}, {2, 0}, {{-1, 136}}},
        {"fr_feature.onnx", {-1, 3, 112, 112}, 1, {"output", NULL}, {2, 0}, {{-1, 512}}},
    };
    for (size_t k = 0; k < 3; k++) {
        fw_model *m = load_default(models[k].file, FW_PROVIDER_AUTO);
        const fw_model_info *info = fw_model_get_info(m);
        assert_non_null(info);
        assert_non_null(strstr(info->path, models[k].file));
        assert_int_equal(info->n_inputs, 1);
        assert_string_equal(info->input_names[0], "input");
        assert_int_equal(info->inputs[0].rank, 4);
        for (int d = 0; d < 4; d++)
            assert_int_equal(info->inputs[0].dims[d], models[k].in[d]);
        assert_int_equal(info->n_outputs, models[k].n_out);
        for (size_t o = 0; o < models[k].n_out; o++) {
            assert_string_equal(info->output_names[o], models[k].out_names[o]);
            assert_int_equal(info->outputs[o].rank, models[k].out_rank[o]);
            for (int d = 0; d < models[k].out_rank[o]; d++)
                assert_int_equal(info->outputs[o].dims[d], models[k].out[o][d]);
        }
        assert_string_equal(fw_model_provider(m), want_provider);
        fw_model_free(m);
    }
}

/* Runs m on batch n of input (n items of per floats) and returns its outputs. */
static void run_batch(fw_model *m, const float *input, size_t n, fw_tensor *outs)
{
    fw_shape s = fw_model_get_info(m)->inputs[0];
    s.dims[0] = (int64_t)n;
    fw_error e = {0};
    fw_err rc = fw_model_run(m, input, &s, outs, &e);
    if (rc)
        fail_msg("run (batch %zu): %s", n, e.message);
}

/* Batch N must give, item by item, what N batch-1 runs give: for the same input replicated
 * and for N different inputs. This is what proves the setup's batch-dynamic conversion. */
static void check_batch_equivalence(const char *file, float tol)
{
    enum { N = 4 };
    fw_model *m = load_default(file, FW_PROVIDER_CPU);
    const fw_model_info *info = fw_model_get_info(m);
    const size_t per = per_item(&info->inputs[0]);
    float *x = malloc(N * per * sizeof *x);
    float *rep = malloc(N * per * sizeof *rep);
    assert_non_null(x);
    assert_non_null(rep);
    fill_random(x, N * per, 7);
    for (size_t i = 0; i < N; i++)
        memcpy(rep + i * per, x, per * sizeof *x);

    fw_tensor single[N][FW_MAX_OUTPUTS];
    memset(single, 0, sizeof single);
    for (size_t i = 0; i < N; i++)
        run_batch(m, x + i * per, 1, single[i]);
    fw_tensor batch[FW_MAX_OUTPUTS] = {0}, same[FW_MAX_OUTPUTS] = {0};
    run_batch(m, x, N, batch);
    run_batch(m, rep, N, same);

    char what[160];
    for (size_t o = 0; o < info->n_outputs; o++) {
        const size_t out_per = single[0][o].count;
        assert_true(out_per > 0);
        assert_int_equal(batch[o].count, N * out_per);
        assert_int_equal(same[o].count, N * out_per);
        assert_int_equal(batch[o].shape.dims[0], N);
        assert_int_equal(single[0][o].shape.dims[0], 1);
        for (int d = 1; d < batch[o].shape.rank; d++)
            assert_int_equal(batch[o].shape.dims[d], single[0][o].shape.dims[d]);
        for (size_t i = 0; i < N; i++) {
            snprintf(what, sizeof what, "%s output %zu, item %zu of a batch of %d", file, o, i, N);
            assert_close(batch[o].data + i * out_per, single[i][o].data, out_per, tol, what);
            snprintf(what, sizeof what, "%s output %zu, replicated item %zu", file, o, i);
            assert_close(same[o].data + i * out_per, single[0][o].data, out_per, tol, what);
        }
        /* different inputs must give different outputs, or the check proves nothing */
        float diff = 0.0f;
        for (size_t j = 0; j < out_per; j++)
            diff = fmaxf(diff, fabsf(single[0][o].data[j] - single[1][o].data[j]));
        assert_true(diff > 10 * tol);
    }
    for (size_t o = 0; o < info->n_outputs; o++) {
        for (size_t i = 0; i < N; i++)
            fw_tensor_clear(&single[i][o]);
        fw_tensor_clear(&batch[o]);
        fw_tensor_clear(&same[o]);
    }
    free(x);
    free(rep);
    fw_model_free(m);
}

static void test_batch_feature(void **state)
{
    (void)state;
    check_batch_equivalence("fr_feature.onnx", 1e-4f);
}

static void test_batch_detect(void **state)
{
    (void)state;
    check_batch_equivalence("fr_detect.onnx", 1e-4f);
}

static void test_batch_landmark(void **state)
{
    (void)state;
    check_batch_equivalence("fr_landmark.onnx", 1e-4f);
}

static int provider_listed(const char *name)
{
    const char *names[32];
    size_t n = fw_ort_available_providers(names, 32);
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return 1;
    return 0;
}

/* An explicitly requested provider that cannot start is an error, never a CPU fallback. */
static void test_explicit_provider_errors(void **state)
{
    (void)state;
    char path[1024];
    model_path(path, sizeof path, "fr_landmark.onnx");
    fw_model *m = (fw_model *)&m; /* must be reset to NULL */
    fw_error e = {0};

    /* CoreML is never part of a Linux build. */
    fw_session_opts o = {.provider = FW_PROVIDER_COREML};
    assert_int_equal(fw_model_load(path, &o, &m, &e), FW_ERR_PROVIDER);
    assert_null(m);
    assert_int_equal(e.code, FW_ERR_PROVIDER);
    assert_non_null(strstr(e.message, "coreml"));
    assert_non_null(strstr(e.message, "not in this ONNX Runtime build"));

    /* CUDA: this library lists it, but its provider libraries are not installed here. On a
     * GPU host (FW_EXPECT_PROVIDER=cuda) it must start. */
    const char *expect = getenv("FW_EXPECT_PROVIDER");
    o.provider = FW_PROVIDER_CUDA;
    fw_error_clear(&e);
    fw_err rc = fw_model_load(path, &o, &m, &e);
    if (expect && strcmp(expect, "cuda") == 0) {
        assert_int_equal(rc, FW_OK);
        assert_string_equal(fw_model_provider(m), "cuda");
        fw_model_free(m);
    } else {
        assert_int_equal(rc, FW_ERR_PROVIDER);
        assert_null(m);
        assert_non_null(strstr(e.message, "cuda"));
        assert_true(strlen(e.message) > 20);
        if (provider_listed("cuda"))
            assert_non_null(strstr(e.message, "failed to start"));
    }

    /* TensorRT likewise (and it also needs the CUDA libraries). */
    if (!expect) {
        o.provider = FW_PROVIDER_TENSORRT;
        assert_int_equal(fw_model_load(path, &o, &m, &e), FW_ERR_PROVIDER);
        assert_null(m);
        assert_non_null(strstr(e.message, "tensorrt"));
    }
}

/* FACEWORK_TRT=1 lets AUTO try TensorRT first; where it cannot start, AUTO still falls
 * back (here: to the CPU). */
static void test_auto_with_trt_env(void **state)
{
    (void)state;
    const char *want = getenv("FW_EXPECT_PROVIDER");
    assert_int_equal(setenv("FACEWORK_TRT", "1", 1), 0);
    fw_model *m = load_default("fr_landmark.onnx", FW_PROVIDER_AUTO);
    unsetenv("FACEWORK_TRT");
    if (!want)
        assert_string_equal(fw_model_provider(m), "cpu");
    fw_model_free(m);
}

static void test_load_errors(void **state)
{
    (void)state;
    fw_model *m = NULL;
    fw_error e = {0};

    char path[1024];
    model_path(path, sizeof path, "no_such_model.onnx");
    assert_int_equal(fw_model_load(path, NULL, &m, &e), FW_ERR_NOT_FOUND);
    assert_null(m);
    assert_non_null(strstr(e.message, "no_such_model.onnx"));

    /* garbage and empty files */
    char tmpl[] = "/tmp/fw_test_ort_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    close(fd);
    for (int round = 0; round < 2; round++) {
        FILE *f = fopen(tmpl, "wb");
        assert_non_null(f);
        if (round == 0) {
            unsigned char junk[4096];
            for (size_t i = 0; i < sizeof junk; i++)
                junk[i] = (unsigned char)(i * 131u + 7u);
            assert_int_equal(fwrite(junk, 1, sizeof junk, f), sizeof junk);
        }
        fclose(f);
        fw_error_clear(&e);
        fw_session_opts cpu = {.provider = FW_PROVIDER_CPU};
        assert_int_equal(fw_model_load(tmpl, round ? &cpu : NULL, &m, &e), FW_ERR_MODEL);
        assert_null(m);
        assert_true(strlen(e.message) > 0);
    }
    unlink(tmpl);

    /* a directory */
    assert_int_equal(fw_model_load(env_or_fail("FW_MODELS_DIR"), NULL, &m, &e), FW_ERR_MODEL);
    assert_null(m);

    /* bad arguments */
    model_path(path, sizeof path, "fr_landmark.onnx");
    assert_int_equal(fw_model_load(path, NULL, NULL, &e), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_model_load(NULL, NULL, &m, &e), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_model_load("", NULL, &m, NULL), FW_ERR_INVALID_ARGUMENT);
    fw_session_opts bad = {.provider = FW_PROVIDER__COUNT};
    assert_int_equal(fw_model_load(path, &bad, &m, &e), FW_ERR_INVALID_ARGUMENT);
    bad = (fw_session_opts){.provider = FW_PROVIDER_CPU, .threads = -1};
    assert_int_equal(fw_model_load(path, &bad, &m, &e), FW_ERR_INVALID_ARGUMENT);
    assert_null(m);

    /* NULL handles */
    fw_model_free(NULL);
    fw_tensor_clear(NULL);
    assert_null(fw_model_get_info(NULL));
    assert_string_equal(fw_model_provider(NULL), "none");
}

static void test_run_errors(void **state)
{
    (void)state;
    fw_model *m = load_default("fr_landmark.onnx", FW_PROVIDER_CPU);
    float x[2 * 64 * 64] = {0};
    fw_tensor outs[FW_MAX_OUTPUTS];
    memset(outs, 0, sizeof outs);
    fw_error e = {0};

    fw_shape s = {.rank = 4, .dims = {1, 1, 64, 32}}; /* a fixed dim differs */
    assert_int_equal(fw_model_run(m, x, &s, outs, &e), FW_ERR_INVALID_ARGUMENT);
    s = (fw_shape){.rank = 3, .dims = {1, 64, 64}}; /* rank */
    assert_int_equal(fw_model_run(m, x, &s, outs, &e), FW_ERR_INVALID_ARGUMENT);
    s = (fw_shape){.rank = 4, .dims = {0, 1, 64, 64}}; /* empty batch */
    assert_int_equal(fw_model_run(m, x, &s, outs, &e), FW_ERR_INVALID_ARGUMENT);
    s = (fw_shape){.rank = 4, .dims = {2, 1, 64, 64}};
    assert_int_equal(fw_model_run(m, NULL, &s, outs, &e), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_model_run(m, x, NULL, outs, &e), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_model_run(NULL, x, &s, outs, &e), FW_ERR_INVALID_ARGUMENT);
    assert_null(outs[0].data);

    /* a good run: shape and count filled, data owned by the caller */
    assert_int_equal(fw_model_run(m, x, &s, outs, &e), FW_OK);
    assert_int_equal(outs[0].shape.rank, 2);
    assert_int_equal(outs[0].shape.dims[0], 2);
    assert_int_equal(outs[0].shape.dims[1], 136);
    assert_int_equal(outs[0].count, 2 * 136);
    assert_non_null(outs[0].data);
    fw_tensor_clear(&outs[0]);
    assert_null(outs[0].data);
    assert_int_equal(outs[0].count, 0);
    fw_model_free(m);

    /* a model whose output is int64 loads, but running it is a model error */
    char path[1024];
    snprintf(path, sizeof path, "%s/models/misc/int_output.onnx", env_or_fail("FW_TEST_DATA"));
    fw_session_opts cpu = {.provider = FW_PROVIDER_CPU};
    assert_int_equal(fw_model_load(path, &cpu, &m, &e), FW_OK);
    assert_int_equal(fw_model_get_info(m)->inputs[0].dims[0], -1);
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    s = (fw_shape){.rank = 2, .dims = {2, 4}};
    outs[0].data = (float *)v; /* stale: must be reset, not freed */
    assert_int_equal(fw_model_run(m, v, &s, outs, &e), FW_ERR_MODEL);
    assert_non_null(strstr(e.message, "float32"));
    assert_null(outs[0].data);
    fw_model_free(m);
}

/* One session, several threads: every run gives the single-threaded result. */
typedef struct thread_arg {
    fw_model *m;
    const float *inputs;
    const float *expect;
    size_t per_in, per_out, n_inputs;
    int failures;
} thread_arg;

static void *run_thread(void *p)
{
    thread_arg *a = p;
    for (size_t r = 0; r < 3 * a->n_inputs; r++) {
        size_t k = r % a->n_inputs;
        fw_shape s = {.rank = 4, .dims = {1, 1, 64, 64}};
        fw_tensor out[FW_MAX_OUTPUTS] = {0};
        if (fw_model_run(a->m, a->inputs + k * a->per_in, &s, out, NULL) != FW_OK) {
            a->failures++;
            continue;
        }
        if (out[0].count != a->per_out ||
            memcmp(out[0].data, a->expect + k * a->per_out, a->per_out * sizeof(float)) != 0)
            a->failures++;
        fw_tensor_clear(&out[0]);
    }
    return NULL;
}

/* Four threads run the landmark model, alternately on session a and session b (which may be
 * a), each run must give what a gave single-threaded. */
static void check_concurrent_runs(fw_model *a, fw_model *b)
{
    enum { THREADS = 4, INPUTS = 5 };
    fw_model *m = a;
    const size_t per_in = 64 * 64, per_out = 136;
    float *in = malloc(INPUTS * per_in * sizeof *in);
    float *expect = malloc(INPUTS * per_out * sizeof *expect);
    assert_non_null(in);
    assert_non_null(expect);
    fill_random(in, INPUTS * per_in, 99);
    for (size_t k = 0; k < INPUTS; k++) {
        fw_tensor out[FW_MAX_OUTPUTS] = {0};
        run_batch(m, in + k * per_in, 1, out);
        assert_int_equal(out[0].count, per_out);
        memcpy(expect + k * per_out, out[0].data, per_out * sizeof(float));
        fw_tensor_clear(&out[0]);
    }
    pthread_t th[THREADS];
    thread_arg args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (thread_arg){t % 2 ? b : a, in, expect, per_in, per_out, INPUTS, 0};
        assert_int_equal(pthread_create(&th[t], NULL, run_thread, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(args[t].failures, 0);
    }
    free(in);
    free(expect);
}

static void test_concurrent_runs(void **state)
{
    (void)state;
    fw_model *m = load_default("fr_landmark.onnx", FW_PROVIDER_CPU);
    check_concurrent_runs(m, m);
    fw_model_free(m);
}

/* ------------------------------------------------------------------------------------ */
/* WebGPU (on this host's Vulkan device: lavapipe in make test)                         */

static void test_webgpu_batch_bucket(void **state)
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

static void test_webgpu_names(void **state)
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
static void test_webgpu_preferred_order(void **state)
{
    (void)state;
    fw_vk_devices l;
    memset(&l, 0, sizeof l);
    assert_int_equal(fw_vk_preferred(&l, false), -1);
    assert_int_equal(fw_vk_preferred(NULL, false), -1);
    l.count = 1;
    l.dev[0].type = FW_VK_TYPE_CPU;
    assert_int_equal(fw_vk_preferred(&l, false), 0); /* only a CPU device: that one */
    l.count = 2;
    l.dev[1].type = FW_VK_TYPE_INTEGRATED;
    assert_int_equal(fw_vk_preferred(&l, false), 1);
    assert_int_equal(fw_vk_preferred(&l, true), 1);
    l.count = 4;
    l.dev[2].type = l.dev[3].type = FW_VK_TYPE_DISCRETE;
    assert_int_equal(fw_vk_preferred(&l, false), 2);
    assert_int_equal(fw_vk_preferred(&l, true), 1);
    l.dev[1].type = FW_VK_TYPE_VIRTUAL;
    assert_int_equal(fw_vk_preferred(&l, true), 2);
}

/* The host's list (make test installs lavapipe, so there is at least that device). */
static void test_webgpu_host_devices(void **state)
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

/* The adapter Dawn takes here is a software one. */
static int webgpu_software_here(void)
{
    const fw_vk_devices *vk = fw_vk_devices_get();
    const int pick = fw_vk_preferred(vk, false);
    return pick >= 0 && vk->dev[pick].type == FW_VK_TYPE_CPU;
}

/* AUTO never takes a software adapter, nor a device index; an explicit webgpu with a
 * device index fails with the reason. */
static void test_webgpu_auto_and_device_id(void **state)
{
    (void)state;
    const int pick = fw_vk_preferred(fw_vk_devices_get(), false);
    char why[256];
    fw_session_opts o = {.provider = FW_PROVIDER_AUTO, .threads = 1};
    const int ok = fw_ort_webgpu_auto_ok(&o, why, sizeof why);
    char hint_why[256];
    const bool hint = fw_vk_gpu_hint(hint_why, sizeof hint_why);
    if (!hint || pick < 0 || webgpu_software_here()) {
        assert_false(ok);
        assert_non_null(strstr(why, !hint      ? "no GPU device on this host"
                                    : pick < 0 ? "no WebGPU adapter"
                                               : "software Vulkan device"));
        if (!getenv("FW_EXPECT_PROVIDER")) {
            fw_model *m = load_opts("fr_landmark.onnx", &o);
            assert_string_equal(fw_model_provider(m), "cpu");
            fw_model_free(m);
        }
    } else {
        assert_true(ok);
    }
    o.device_id = 1;
    assert_false(fw_ort_webgpu_auto_ok(&o, why, sizeof why));
    assert_non_null(strstr(why, "device id 1"));
    o.provider = FW_PROVIDER_WEBGPU;
    char path[1024];
    model_path(path, sizeof path, "fr_landmark.onnx");
    fw_model *m = NULL;
    fw_error e = {0};
    assert_int_equal(fw_model_load(path, &o, &m, &e), FW_ERR_PROVIDER);
    assert_null(m);
    assert_non_null(strstr(e.message, "picks its adapter by power preference"));
}

/* Batches of 3 padded to 4 (max_batch 4) and of 5 (above it, not padded) give the CPU's
 * outputs, with the batch's own first dimension. */
static void check_webgpu_model(const char *file, float tol)
{
    fw_session_opts wg = {.provider = FW_PROVIDER_WEBGPU, .max_batch = 4};
    fw_model *mc = load_default(file, FW_PROVIDER_CPU), *mw = load_opts(file, &wg);
    assert_string_equal(fw_model_provider(mw), "webgpu");
    assert_true(fw_model_on_device(mw));
    assert_int_equal(fw_model_software_device(mw), webgpu_software_here());
    assert_false(fw_model_software_device(mc));
    const size_t per = per_item(&fw_model_get_info(mc)->inputs[0]);
    float *x = malloc(5 * per * sizeof *x);
    assert_non_null(x);
    fill_random(x, 5 * per, 11);
    char what[160];
    for (size_t n = 3; n <= 5; n += 2) {
        fw_tensor oc[FW_MAX_OUTPUTS] = {0}, ow[FW_MAX_OUTPUTS] = {0};
        run_batch(mc, x, n, oc);
        run_batch(mw, x, n, ow);
        for (size_t o = 0; o < fw_model_get_info(mc)->n_outputs; o++) {
            assert_int_equal(ow[o].shape.dims[0], n);
            assert_int_equal(ow[o].count, oc[o].count);
            snprintf(what, sizeof what, "%s on webgpu, batch %zu, output %zu", file, n, o);
            assert_close(ow[o].data, oc[o].data, oc[o].count, tol, what);
            fw_tensor_clear(&oc[o]);
            fw_tensor_clear(&ow[o]);
        }
    }
    free(x);
    fw_model_free(mw);
    fw_model_free(mc);
}

static void test_webgpu_padded_batches_match_cpu(void **state)
{
    (void)state;
    check_webgpu_model("fr_landmark.onnx", 1e-3f);
    check_webgpu_model("fr_feature.onnx", 1e-3f);
}

/* Two WebGPU sessions run from four threads at once (the worker's model threads): ORT's
 * shared WebGPU context crashes without the serialisation in ort.c. */
static void test_webgpu_concurrent_sessions(void **state)
{
    (void)state;
    fw_session_opts wg = {.provider = FW_PROVIDER_WEBGPU, .max_batch = 1};
    fw_model *a = load_opts("fr_landmark.onnx", &wg), *b = load_opts("fr_landmark.onnx", &wg);
    check_concurrent_runs(a, b);
    fw_model_free(a);
    fw_model_free(b);
}

/* Threads of this process, from /proc/self/task. */
static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* ORT's telemetry is off (fw_ort_preinit), so the first env of the process starts no
 * thread; with one intra-op thread per session, loading a model adds none. Runs first: the
 * telemetry thread would outlive any env an earlier test made. */
static void test_first_env_starts_no_thread(void **state)
{
    (void)state;
    assert_int_equal(fw__ort_env_users(), 0);
    int threads = count_threads();
    fw_model *m = load_default("fr_landmark.onnx", FW_PROVIDER_CPU);
    assert_string_equal(getenv("ORT_DISABLE_TELEMETRY"), "1");
    assert_int_equal(count_threads(), threads);
    fw_model_free(m);
}

/* The env follows the sessions: one hold per live session, released with the last, and a
 * new env serves the models loaded after that. Failed loads leave no hold behind. */
static void test_env_follows_sessions(void **state)
{
    (void)state;
    assert_int_equal(fw__ort_env_users(), 0);
    fw_model *a = load_default("fr_landmark.onnx", FW_PROVIDER_CPU);
    assert_int_equal(fw__ort_env_users(), 1);
    fw_model *b = load_default("fr_feature.onnx", FW_PROVIDER_CPU);
    assert_int_equal(fw__ort_env_users(), 2);

    /* a provider that cannot start and a file that is no model release what they took */
    char path[1024];
    model_path(path, sizeof path, "fr_landmark.onnx");
    fw_model *m = NULL;
    fw_error e = {0};
    if (!getenv("FW_EXPECT_PROVIDER")) { /* no GPU: TensorRT cannot start */
        fw_session_opts trt = {.provider = FW_PROVIDER_TENSORRT, .threads = 1};
        assert_int_equal(fw_model_load(path, &trt, &m, &e), FW_ERR_PROVIDER);
    }
    char empty[] = "/tmp/fw_test_ort_env_XXXXXX";
    int fd = mkstemp(empty);
    assert_true(fd >= 0);
    close(fd);
    fw_session_opts cpu = {.provider = FW_PROVIDER_CPU, .threads = 1};
    assert_int_equal(fw_model_load(empty, &cpu, &m, &e), FW_ERR_MODEL);
    unlink(empty);
    assert_null(m);
    assert_int_equal(fw__ort_env_users(), 2);

    fw_model_free(a);
    assert_int_equal(fw__ort_env_users(), 1);
    fw_model_free(b);
    assert_int_equal(fw__ort_env_users(), 0);

    /* after the env was released, a new one serves a new model, which runs */
    fw_model *c = load_default("fr_landmark.onnx", FW_PROVIDER_CPU);
    assert_int_equal(fw__ort_env_users(), 1);
    float x[64 * 64] = {0};
    fw_shape s = {.rank = 4, .dims = {1, 1, 64, 64}};
    fw_tensor outs[FW_MAX_OUTPUTS];
    memset(outs, 0, sizeof outs);
    assert_int_equal(fw_model_run(c, x, &s, outs, &e), FW_OK);
    assert_int_equal(outs[0].count, 136);
    fw_tensor_clear(&outs[0]);
    fw_model_free(c);
    assert_int_equal(fw__ort_env_users(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_env_starts_no_thread), /* first: see there */
        cmocka_unit_test(test_provider_names),
        cmocka_unit_test(test_version_and_providers),
        cmocka_unit_test(test_default_models_info),
        cmocka_unit_test(test_batch_feature),
        cmocka_unit_test(test_batch_detect),
        cmocka_unit_test(test_batch_landmark),
        cmocka_unit_test(test_explicit_provider_errors),
        cmocka_unit_test(test_auto_with_trt_env),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_run_errors),
        cmocka_unit_test(test_concurrent_runs),
        cmocka_unit_test(test_env_follows_sessions),
        cmocka_unit_test(test_webgpu_batch_bucket),
        cmocka_unit_test(test_webgpu_names),
        cmocka_unit_test(test_webgpu_preferred_order),
        cmocka_unit_test(test_webgpu_host_devices),
        cmocka_unit_test(test_webgpu_auto_and_device_id),
        cmocka_unit_test(test_webgpu_padded_batches_match_cpu),
        cmocka_unit_test(test_webgpu_concurrent_sessions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
