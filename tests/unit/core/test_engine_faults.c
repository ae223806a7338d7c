/* Unit tests for the engine's fault handling (GPU execution without a GPU): model runs made
 * to fail by the fault-injection test hook (fw__engine_inject_faults, FACEWORK_FAULT_INJECT)
 * on the real default pack and the six public group photos.
 *  - a failing batch is split in halves and retried: every image still gets the faces and
 *    embeddings an unfailed engine gives (detector, landmarks and embedder alike);
 *  - an out-of-memory failure on a "device" caps later batches, so they stop failing;
 *  - a device that keeps failing moves the role to the CPU provider: fw_engine_provider,
 *    fw_engine_role_status and fw_engine_describe_json say so, the answers stay right, and
 *    concurrent callers see one move;
 *  - a CPU session that keeps failing makes the call fail (no crash, no partial answer);
 *  - malformed specs are refused, in the API and in the environment. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/pipeline.h"
#include "facework/facework.h"

#define N_PHOTOS 6

static uint8_t *g_data[N_PHOTOS];
static size_t g_len[N_PHOTOS];
static fw_blob g_blobs[N_PHOTOS];
static fw_result g_ref[N_PHOTOS]; /* an engine without faults, all six photos in one call */
static size_t g_dim;
static size_t g_total_faces;

static fw_engine *new_engine(void)
{
    fw_engine_config cfg;
    fw_engine_config_init(&cfg);
    cfg.models_dir = getenv("FW_MODELS_DIR");
    cfg.provider = "cpu";
    cfg.threads = 1;
    fw_engine *eng = NULL;
    fw_error err;
    if (fw_engine_new(&cfg, &eng, &err) != FW_OK)
        fail_msg("engine: %s", err.message);
    return eng;
}

static fw_engine *engine_with_faults(const char *spec)
{
    fw_engine *eng = new_engine();
    fw_error err;
    if (fw__engine_inject_faults(eng, spec, &err) != FW_OK)
        fail_msg("fault spec '%s': %s", spec, err.message);
    return eng;
}

static int setup(void **state)
{
    (void)state;
    const char *dir = getenv("FW_PHOTOS_DIR");
    for (int i = 0; i < N_PHOTOS; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/sample%d.jpg", dir ? dir : ".deps/photos", i + 1);
        fw_error err;
        if (fw_read_file(path, 0, &g_data[i], &g_len[i], &err) != FW_OK) {
            fprintf(stderr, "%s: %s\n", path, err.message);
            return -1;
        }
        g_blobs[i] = (fw_blob){g_data[i], g_len[i]};
    }
    fw_engine *eng = new_engine();
    fw_error err;
    fw_err rc = fw_engine_analyze(eng, g_blobs, N_PHOTOS, NULL, g_ref, &err);
    g_dim = fw_engine_embedding_dim(eng);
    fw_engine_free(eng);
    if (rc != FW_OK) {
        fprintf(stderr, "reference run: %s\n", err.message);
        return -1;
    }
    for (int i = 0; i < N_PHOTOS; i++)
        g_total_faces += g_ref[i].n_faces;
    return g_total_faces >= 10 ? 0 : -1; /* the photos hold 22 faces */
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_PHOTOS; i++) {
        fw_result_clear(&g_ref[i]);
        free(g_data[i]);
    }
    return 0;
}

/* res[0..N_PHOTOS) hold the same faces as the reference: boxes, scores, landmarks and
 * embeddings (batching changes the float rounding, hence the small tolerances). */
static void assert_same_as_reference(const fw_result *res)
{
    for (int i = 0; i < N_PHOTOS; i++) {
        assert_int_equal(res[i].status, FW_OK);
        assert_int_equal(res[i].width, g_ref[i].width);
        if (res[i].n_faces != g_ref[i].n_faces)
            fail_msg("sample%d: %zu faces, the unfailed engine found %zu", i + 1, res[i].n_faces,
                     g_ref[i].n_faces);
        for (size_t f = 0; f < res[i].n_faces; f++) {
            const fw_face *a = &res[i].faces[f], *b = &g_ref[i].faces[f];
            for (int k = 0; k < 4; k++)
                if (!(fabsf(a->bbox[k] - b->bbox[k]) < 0.01f))
                    fail_msg("sample%d face %zu: box %d is %g, reference %g", i + 1, f, k,
                             (double)a->bbox[k], (double)b->bbox[k]);
            assert_true(fabsf(a->score - b->score) < 1e-4f);
            for (int p = 0; p < 5; p++)
                for (int c = 0; c < 2; c++)
                    assert_true(fabsf(a->landmarks[p][c] - b->landmarks[p][c]) < 0.01f);
            assert_non_null(a->embedding);
            float cos = fw_cosine(a->embedding, b->embedding, g_dim);
            if (!(cos > 0.9999f))
                fail_msg("sample%d face %zu: cosine to the reference %g", i + 1, f, (double)cos);
        }
    }
}

static void analyze_all(fw_engine *eng, fw_result *res)
{
    fw_error err;
    fw_err rc = fw_engine_analyze(eng, g_blobs, N_PHOTOS, NULL, res, &err);
    if (rc != FW_OK)
        fail_msg("analyze: %s (%s)", err.message, fw_err_name(rc));
}

static void clear_all(fw_result *res)
{
    for (int i = 0; i < N_PHOTOS; i++)
        fw_result_clear(&res[i]);
}

/* Batches above a size fail in every model: each is split until the pieces run, and the
 * answers are those of an engine without faults. The roles stay where they were. */
static void test_split_and_retry_gives_the_same_answers(void **state)
{
    (void)state;
    fw_engine *eng = engine_with_faults("detector:above=1;landmarks:above=3;embedder:above=2");
    fw_result res[N_PHOTOS];
    analyze_all(eng, res);
    assert_same_as_reference(res);
    clear_all(res);
    static const fw_role roles[] = {FW_ROLE_DETECTOR, FW_ROLE_LANDMARKS, FW_ROLE_EMBEDDER};
    for (size_t r = 0; r < 3; r++) {
        fw_role_status st;
        fw_engine_role_status(eng, roles[r], &st);
        assert_string_equal(st.provider, "cpu");
        assert_false(st.on_device);
        assert_false(st.fell_back);
        assert_true(st.failed_runs > 0);
        assert_true(st.split_batches > 0);
        assert_int_equal(st.batch_cap, 0); /* not out of memory: no cap */
    }
    fw_engine_free(eng);
}

/* Transient faults (the first runs fail) cost a retry, not an answer. */
static void test_transient_faults(void **state)
{
    (void)state;
    fw_engine *eng = engine_with_faults("all:device,first=2");
    fw_result res[N_PHOTOS];
    analyze_all(eng, res);
    assert_same_as_reference(res);
    clear_all(res);
    fw_role_status st;
    fw_engine_role_status(eng, FW_ROLE_EMBEDDER, &st);
    assert_string_equal(st.provider, "sim-gpu");
    assert_true(st.on_device);
    assert_false(st.fell_back);
    assert_int_equal(st.failed_runs, 2);
    fw_engine_free(eng);
}

/* Out of memory above 4 faces on a device: the failing batch is split, later batches are
 * capped to a size that worked, and a second call has no failure at all. */
static void test_out_of_memory_caps_the_batch(void **state)
{
    (void)state;
    fw_engine *eng = engine_with_faults("embedder:device,oom,above=4");
    fw_result res[N_PHOTOS];
    analyze_all(eng, res);
    assert_same_as_reference(res);
    clear_all(res);
    fw_role_status st;
    fw_engine_role_status(eng, FW_ROLE_EMBEDDER, &st);
    assert_string_equal(st.provider, "sim-gpu");
    assert_false(st.fell_back);
    assert_true(st.failed_runs >= 2);
    assert_true(st.batch_cap >= 1 && st.batch_cap <= 4);
    const uint64_t failed = st.failed_runs;
    analyze_all(eng, res);
    assert_same_as_reference(res);
    clear_all(res);
    fw_engine_role_status(eng, FW_ROLE_EMBEDDER, &st);
    assert_int_equal(st.failed_runs, failed);
    fw_engine_free(eng);
}

/* The role's JSON record in the engine description. */
static json_t *described_role(json_t *desc, const char *role)
{
    json_t *models = json_object_get(desc, "models");
    for (size_t i = 0; i < json_array_size(models); i++) {
        json_t *m = json_array_get(models, i);
        if (!strcmp(json_string_value(json_object_get(m, "role")), role))
            return m;
    }
    fail_msg("no %s in the description", role);
    return NULL;
}

/* A device that fails every run: the embedder moves to the CPU, where the answers are
 * computed; provider, status and description say so; later calls do not fail again. */
static void test_persistent_faults_move_to_cpu(void **state)
{
    (void)state;
    fw_engine *eng = engine_with_faults("embedder:device,always");
    assert_string_equal(fw_engine_provider(eng, FW_ROLE_EMBEDDER), "sim-gpu");
    char *before = fw_engine_describe_json(eng);
    assert_non_null(strstr(before, "sim-gpu"));
    free(before);

    fw_result res[N_PHOTOS];
    analyze_all(eng, res);
    assert_same_as_reference(res);
    clear_all(res);

    assert_string_equal(fw_engine_provider(eng, FW_ROLE_EMBEDDER), "cpu");
    assert_string_equal(fw_engine_provider(eng, FW_ROLE_DETECTOR), "cpu");
    fw_role_status st;
    fw_engine_role_status(eng, FW_ROLE_EMBEDDER, &st);
    assert_true(st.fell_back);
    assert_false(st.on_device);
    assert_string_equal(st.fallback_from, "sim-gpu");
    assert_non_null(strstr(st.fallback_reason, "injected fault"));
    assert_true(st.failed_runs >= 2);
    assert_true(st.retries >= 1);
    fw_role_status det;
    fw_engine_role_status(eng, FW_ROLE_DETECTOR, &det);
    assert_false(det.fell_back);
    assert_int_equal(det.failed_runs, 0);

    char *desc = fw_engine_describe_json(eng);
    json_t *j = json_loads(desc, 0, NULL);
    free(desc);
    assert_non_null(j);
    json_t *emb = described_role(j, "embedder");
    assert_string_equal(json_string_value(json_object_get(emb, "provider")), "cpu");
    json_t *fb = json_object_get(emb, "fallback");
    assert_true(json_is_object(fb));
    assert_string_equal(json_string_value(json_object_get(fb, "from")), "sim-gpu");
    assert_null(json_object_get(described_role(j, "detector"), "fallback"));
    json_decref(j);

    const uint64_t failed = st.failed_runs;
    analyze_all(eng, res);
    assert_same_as_reference(res);
    clear_all(res);
    fw_engine_role_status(eng, FW_ROLE_EMBEDDER, &st);
    assert_int_equal(st.failed_runs, failed);

    /* pre-aligned crops go through the same guarded runs */
    uint8_t crop[FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3];
    for (size_t i = 0; i < sizeof crop; i++)
        crop[i] = (uint8_t)(i * 7);
    float out[2][512];
    fw_error err;
    assert_int_equal(g_dim, 512);
    assert_int_equal(fw_engine_embed_aligned(eng, crop, 1, out[0], &err), FW_OK);
    fw_engine_free(eng);
}

/* The same persistent faults while four threads analyze at once: one move, every answer
 * right. */
typedef struct worker_arg {
    fw_engine *eng;
    int ok;
} worker_arg;

static void *analyze_thread(void *p)
{
    worker_arg *a = p;
    fw_result res[N_PHOTOS];
    fw_error err;
    for (int round = 0; round < 2; round++) {
        if (fw_engine_analyze(a->eng, g_blobs, N_PHOTOS, NULL, res, &err) != FW_OK)
            return NULL;
        for (int i = 0; i < N_PHOTOS; i++) {
            if (res[i].status != FW_OK || res[i].n_faces != g_ref[i].n_faces)
                return NULL;
            for (size_t f = 0; f < res[i].n_faces; f++)
                if (!(fw_cosine(res[i].faces[f].embedding, g_ref[i].faces[f].embedding, g_dim) >
                      0.9999f))
                    return NULL;
        }
        clear_all(res);
    }
    a->ok = 1;
    return NULL;
}

static void test_concurrent_callers_see_one_move(void **state)
{
    (void)state;
    fw_engine *eng = engine_with_faults("detector:device,always;embedder:device,always");
    pthread_t t[4];
    worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){eng, 0};
        assert_int_equal(pthread_create(&t[i], NULL, analyze_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_true(args[i].ok);
    }
    fw_role_status st;
    fw_engine_role_status(eng, FW_ROLE_DETECTOR, &st);
    assert_true(st.fell_back);
    assert_string_equal(st.provider, "cpu");
    fw_engine_role_status(eng, FW_ROLE_EMBEDDER, &st);
    assert_true(st.fell_back);
    assert_string_equal(st.provider, "cpu");
    fw_engine_role_status(eng, FW_ROLE_LANDMARKS, &st);
    assert_false(st.fell_back);
    fw_engine_free(eng);
}

/* On the CPU there is nowhere to go: a model that always fails makes the call fail with
 * FW_ERR_INFERENCE and zeroed results (no partial answers), and the engine stays usable
 * for what does not need that model. */
static void test_cpu_failure_is_an_error(void **state)
{
    (void)state;
    fw_engine *eng = engine_with_faults("embedder:always");
    fw_result res[N_PHOTOS];
    fw_error err;
    assert_int_equal(fw_engine_analyze(eng, g_blobs, N_PHOTOS, NULL, res, &err), FW_ERR_INFERENCE);
    assert_non_null(strstr(err.message, "injected fault"));
    for (int i = 0; i < N_PHOTOS; i++) {
        assert_int_equal(res[i].n_faces, 0);
        assert_null(res[i].faces);
    }
    fw_role_status st;
    fw_engine_role_status(eng, FW_ROLE_EMBEDDER, &st);
    assert_string_equal(st.provider, "cpu");
    assert_false(st.fell_back);
    assert_true(st.failed_runs >= 2);
    /* detection alone still works */
    fw_analyze_opts opts;
    fw_analyze_opts_init(&opts);
    opts.embed = false;
    assert_int_equal(fw_engine_analyze(eng, g_blobs, N_PHOTOS, &opts, res, &err), FW_OK);
    for (int i = 0; i < N_PHOTOS; i++) {
        assert_int_equal(res[i].n_faces, g_ref[i].n_faces);
        fw_result_clear(&res[i]);
    }
    fw_engine_free(eng);
}

static void test_spec_parsing(void **state)
{
    (void)state;
    fw_fault_spec specs[FW_ROLE__COUNT];
    int present[FW_ROLE__COUNT];
    fw_error err;
    assert_int_equal(
        fw__fault_parse("detector:above=3,oom;embedder:device,first=2", specs, present, &err),
        FW_OK);
    assert_true(present[FW_ROLE_DETECTOR] && present[FW_ROLE_EMBEDDER]);
    assert_false(present[FW_ROLE_LANDMARKS]);
    assert_int_equal(specs[FW_ROLE_DETECTOR].fail_above, 3);
    assert_true(specs[FW_ROLE_DETECTOR].oom);
    assert_false(specs[FW_ROLE_DETECTOR].device);
    assert_true(specs[FW_ROLE_EMBEDDER].device);
    assert_int_equal(specs[FW_ROLE_EMBEDDER].fail_first, 2);
    assert_int_equal(fw__fault_parse("all:always", specs, present, &err), FW_OK);
    for (int r = 0; r < FW_ROLE__COUNT; r++)
        assert_true(present[r] && specs[r].fail_always);
    static const char *const bad[] = {"gpu:always",        "embedder:sometimes", "embedder:above=x",
                                      "embedder:above=-1", "embedder:,",         "detector:first"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fw_error_clear(&err);
        if (fw__fault_parse(bad[i], specs, present, &err) != FW_ERR_INVALID_ARGUMENT)
            fail_msg("'%s' was accepted", bad[i]);
        assert_true(strlen(err.message) > 0);
    }
}

/* FACEWORK_FAULT_INJECT is read by fw_engine_new (after the warm-up); a malformed one makes
 * the engine refuse to start. */
static void test_environment_hook(void **state)
{
    (void)state;
    setenv("FACEWORK_FAULT_INJECT", "embedder:device,always", 1);
    fw_engine *eng = new_engine();
    assert_string_equal(fw_engine_provider(eng, FW_ROLE_EMBEDDER), "sim-gpu");
    fw_result res[N_PHOTOS];
    analyze_all(eng, res);
    assert_same_as_reference(res);
    clear_all(res);
    assert_string_equal(fw_engine_provider(eng, FW_ROLE_EMBEDDER), "cpu");
    fw_engine_free(eng);

    setenv("FACEWORK_FAULT_INJECT", "embedder:bogus", 1);
    fw_engine_config cfg;
    fw_engine_config_init(&cfg);
    cfg.models_dir = getenv("FW_MODELS_DIR");
    cfg.provider = "cpu";
    fw_error err;
    eng = NULL;
    assert_int_equal(fw_engine_new(&cfg, &eng, &err), FW_ERR_INVALID_ARGUMENT);
    assert_null(eng);
    assert_non_null(strstr(err.message, "bogus"));
    unsetenv("FACEWORK_FAULT_INJECT");
}

/* Warm-up at every power of two (the GPU default) and bad GPU option names. */
static void test_warmup_and_gpu_options(void **state)
{
    (void)state;
    fw_engine_config cfg;
    fw_engine_config_init(&cfg);
    cfg.models_dir = getenv("FW_MODELS_DIR");
    cfg.provider = "cpu";
    cfg.max_batch = 6;
    cfg.warmup = FW_WARMUP_ALL;
    cfg.gpu_arena_extend = "same_as_requested";
    cfg.cudnn_conv_algo = "exhaustive";
    cfg.gpu_mem_limit = 1u << 30;
    fw_engine *eng = NULL;
    fw_error err;
    assert_int_equal(fw_engine_new(&cfg, &eng, &err), FW_OK);
    fw_result res[N_PHOTOS];
    analyze_all(eng, res);
    assert_same_as_reference(res);
    clear_all(res);
    fw_engine_free(eng);

    cfg.gpu_arena_extend = "sometimes";
    assert_int_equal(fw_engine_new(&cfg, &eng, &err), FW_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "arena"));
    cfg.gpu_arena_extend = NULL;
    cfg.cudnn_conv_algo = "fastest";
    assert_int_equal(fw_engine_new(&cfg, &eng, &err), FW_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "cuDNN"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_and_retry_gives_the_same_answers),
        cmocka_unit_test(test_transient_faults),
        cmocka_unit_test(test_out_of_memory_caps_the_batch),
        cmocka_unit_test(test_persistent_faults_move_to_cpu),
        cmocka_unit_test(test_concurrent_callers_see_one_move),
        cmocka_unit_test(test_cpu_failure_is_an_error),
        cmocka_unit_test(test_spec_parsing),
        cmocka_unit_test(test_environment_hook),
        cmocka_unit_test(test_warmup_and_gpu_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
