/* Unit tests for model packs: signature rules, the real default pack, the synthetic
 * InsightFace-style pack (tests/data/models, from tests/data/make_test_models.py) including
 * its constant SCRFD outputs and their decoding, pack.json overrides, per-role session
 * options, and the error cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/detect.h"
#include "core/pack.h"

/* ------------------------------------------------------------------------------------ */
/* the synthetic SCRFD model (hand-computed; see tests/data/make_test_models.py)           */

#define SYN_IN 64
static const int SYN_STRIDES[3] = {8, 16, 32};
static const size_t SYN_ROWS[3] = {128, 32, 8}; /* (64/s)^2 * 2 anchors */
static const char *const SYN_OUT_NAMES[9] = {"448", "471", "494", "451", "474",
                                             "497", "454", "477", "500"};

typedef struct syn_det {
    int level;  /* index into SYN_STRIDES */
    size_t row; /* (y * (64/s) + x) * 2 + anchor */
    float score;
    float dist[4];
    float kps_d[10];
    float box[4]; /* decoded, input pixels */
    float kps[5][2];
} syn_det;

static const syn_det SYN_DETS[2] = {
    /* stride 8, (x=2, y=3), anchor 0: row 52, centre (16, 24) */
    {0,
     52,
     0.9f,
     {1, 2, 3, 4},
     {-0.5f, -0.5f, 1.5f, -0.5f, 0.5f, 0.5f, -0.25f, 2.0f, 1.25f, 2.0f},
     {8, 8, 40, 56},
     {{12, 20}, {28, 20}, {20, 28}, {14, 40}, {26, 40}}},
    /* stride 16, (x=3, y=1), anchor 1: row 15, centre (48, 16) */
    {1,
     15,
     0.8f,
     {0.25f, 0.5f, 0.75f, 1.0f},
     {-0.125f, -0.25f, 0.5f, -0.25f, 0.25f, 0.25f, 0.0f, 0.75f, 0.5f, 0.75f},
     {44, 8, 60, 32},
     {{46, 12}, {56, 12}, {52, 20}, {48, 28}, {56, 28}}},
};

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                              */

static const char *env_or_fail(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        fail_msg("%s is not set (run under ctest)", name);
    return v;
}

static void data_path(char *buf, size_t cap, const char *rel)
{
    snprintf(buf, cap, "%s/models/%s", env_or_fail("FW_TEST_DATA"), rel);
}

static fw_pack *load_pack_ok(const char *dir, const fw_session_opts *det,
                             const fw_session_opts *lmk, const fw_session_opts *emb)
{
    fw_pack *p = NULL;
    fw_error e = {0};
    fw_err rc = fw_pack_load(dir, det, lmk, emb, &p, &e);
    if (rc)
        fail_msg("fw_pack_load(%s): %s (%s)", dir, e.message, fw_err_name(rc));
    assert_non_null(p);
    return p;
}

static fw_err load_pack_err(const char *dir, const fw_session_opts *opts, fw_error *e)
{
    fw_pack *p = (fw_pack *)&p; /* must be reset to NULL */
    fw_error_clear(e);
    fw_err rc = fw_pack_load(dir, opts, opts, opts, &p, e);
    assert_null(p);
    assert_int_equal(e->code, rc);
    if (rc)
        assert_true(strlen(e->message) > 0);
    return rc;
}

/* A scratch pack directory with symlinks to chosen test models. */
typedef struct scratch {
    char dir[256];
    char files[8][64];
    int n;
} scratch;

static void scratch_init(scratch *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/fw_test_pack_XXXXXX");
    assert_non_null(mkdtemp(s->dir));
}

static void scratch_link(scratch *s, const char *model_rel, const char *as)
{
    char target[1024], link[512];
    data_path(target, sizeof target, model_rel);
    snprintf(link, sizeof link, "%s/%s", s->dir, as);
    assert_int_equal(symlink(target, link), 0);
    snprintf(s->files[s->n++], sizeof s->files[0], "%s", as);
}

static void scratch_write(scratch *s, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", s->dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    int seen = 0;
    for (int i = 0; i < s->n; i++)
        seen |= strcmp(s->files[i], name) == 0;
    if (!seen)
        snprintf(s->files[s->n++], sizeof s->files[0], "%s", name);
}

static void scratch_free(scratch *s)
{
    char path[512];
    for (int i = 0; i < s->n; i++) {
        snprintf(path, sizeof path, "%s/%s", s->dir, s->files[i]);
        unlink(path);
    }
    assert_int_equal(rmdir(s->dir), 0);
}

static fw_model_info make_info(int64_t c, int64_t h, int64_t w, size_t n_out, int out_rank)
{
    fw_model_info info;
    memset(&info, 0, sizeof info);
    info.n_inputs = 1;
    info.inputs[0] = (fw_shape){.rank = 4, .dims = {-1, c, h, w}};
    info.n_outputs = n_out;
    for (size_t i = 0; i < n_out; i++) {
        info.outputs[i].rank = out_rank;
        for (int d = 0; d < out_rank; d++)
            info.outputs[i].dims[d] = d == 0 ? -1 : 8;
    }
    return info;
}

/* ------------------------------------------------------------------------------------ */
/* tests                                                                                */

static void test_kind_names(void **state)
{
    (void)state;
    assert_string_equal(fw_model_kind_name(FW_KIND_UNKNOWN), "unknown");
    assert_string_equal(fw_model_kind_name(FW_KIND_ULTRALIGHT), "ultralight");
    assert_string_equal(fw_model_kind_name(FW_KIND_SCRFD), "scrfd");
    assert_string_equal(fw_model_kind_name(FW_KIND_LANDMARK68), "landmark68");
    assert_string_equal(fw_model_kind_name(FW_KIND_LANDMARK106), "landmark106");
    assert_string_equal(fw_model_kind_name(FW_KIND_GENDERAGE), "genderage");
    assert_string_equal(fw_model_kind_name(FW_KIND_EMBEDDER), "embedder");
    assert_string_equal(fw_model_kind_name((fw_model_kind)99), "unknown");
}

static void test_classify_rules(void **state)
{
    (void)state;
    fw_model_info i;
    /* SCRFD: by output count, whatever the input */
    i = make_info(3, -1, -1, 9, 2);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_SCRFD);
    i = make_info(3, 640, 640, 6, 2);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_SCRFD);
    i = make_info(3, 640, 640, 9, 3); /* exports with a batch dimension */
    assert_int_equal(fw_classify_signature(&i), FW_KIND_SCRFD);
    i = make_info(3, 640, 640, 5, 2);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_UNKNOWN);
    /* Ultra-Light: 3x240x320 with two outputs */
    i = make_info(3, 240, 320, 2, 3);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_ULTRALIGHT);
    i = make_info(3, 240, 320, 3, 3);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_UNKNOWN);
    i = make_info(3, 320, 240, 2, 3);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_UNKNOWN);
    /* 68-point landmarks: [N,1,64,64] */
    i = make_info(1, 64, 64, 1, 2);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_LANDMARK68);
    i = make_info(3, 64, 64, 1, 2);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_UNKNOWN);
    /* 106 points: 192x192; gender/age: 96x96 */
    i = make_info(3, 192, 192, 1, 2);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_LANDMARK106);
    i = make_info(3, 96, 96, 1, 2);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_GENDERAGE);
    /* embedder: square >= 112, divisible by 16, one [N,D] output */
    i = make_info(3, 112, 112, 1, 2);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_EMBEDDER);
    i = make_info(3, 128, 128, 1, 2);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_EMBEDDER);
    i = make_info(3, 224, 224, 1, 2);
    assert_int_equal(fw_classify_signature(&i), FW_KIND_EMBEDDER);
    i = make_info(3, 120, 120, 1, 2); /* not divisible by 16 */
    assert_int_equal(fw_classify_signature(&i), FW_KIND_UNKNOWN);
    i = make_info(3, 80, 80, 1, 2); /* under 112 */
    assert_int_equal(fw_classify_signature(&i), FW_KIND_UNKNOWN);
    i = make_info(3, 112, 128, 1, 2); /* not square */
    assert_int_equal(fw_classify_signature(&i), FW_KIND_UNKNOWN);
    i = make_info(3, 112, 112, 2, 2); /* two outputs */
    assert_int_equal(fw_classify_signature(&i), FW_KIND_UNKNOWN);
    i = make_info(3, 112, 112, 1, 4); /* output not [N,D] */
    assert_int_equal(fw_classify_signature(&i), FW_KIND_UNKNOWN);
    i = make_info(3, -1, -1, 1, 2); /* symbolic size */
    assert_int_equal(fw_classify_signature(&i), FW_KIND_UNKNOWN);
    /* not NCHW */
    i = make_info(3, 112, 112, 1, 2);
    i.inputs[0].rank = 3;
    assert_int_equal(fw_classify_signature(&i), FW_KIND_UNKNOWN);
    assert_int_equal(fw_classify_signature(NULL), FW_KIND_UNKNOWN);
}

static void test_default_pack(void **state)
{
    (void)state;
    fw_session_opts cpu = {.provider = FW_PROVIDER_CPU, .threads = 1};
    fw_pack *p = load_pack_ok(env_or_fail("FW_MODELS_DIR"), &cpu, &cpu, &cpu);
    assert_string_equal(p->name, "default");
    assert_string_equal(p->dir, env_or_fail("FW_MODELS_DIR"));

    assert_int_equal(p->detector.kind, FW_KIND_ULTRALIGHT);
    assert_non_null(strstr(fw_model_get_info(p->detector.model)->path, "fr_detect.onnx"));
    assert_int_equal(p->detector.input_w, 320);
    assert_int_equal(p->detector.input_h, 240);
    assert_float_equal(p->detector.norm.mean, 127.0f, 0.0f);
    assert_float_equal(p->detector.norm.std, 128.0f, 0.0f);
    assert_float_equal(p->detector.threshold, 0.65f, 1e-6f);
    assert_float_equal(p->detector.nms_iou, 0.4f, 1e-6f);
    assert_int_equal(p->detector.batch_dynamic, 1);

    assert_int_equal(p->has_landmarks, 1);
    assert_int_equal(p->landmarks.kind, FW_KIND_LANDMARK68);
    assert_non_null(strstr(fw_model_get_info(p->landmarks.model)->path, "fr_landmark.onnx"));
    assert_int_equal(p->landmarks.input_w, 64);
    assert_int_equal(p->landmarks.input_h, 64);
    assert_float_equal(p->landmarks.norm.mean, 0.0f, 0.0f);
    assert_float_equal(p->landmarks.norm.std, 256.0f, 0.0f);
    assert_int_equal(p->landmarks.batch_dynamic, 1);

    assert_int_equal(p->embedder.kind, FW_KIND_EMBEDDER);
    assert_non_null(strstr(fw_model_get_info(p->embedder.model)->path, "fr_feature.onnx"));
    assert_int_equal(p->embedder.input_w, 112);
    assert_int_equal(p->embedder.input_h, 112);
    assert_float_equal(p->embedder.norm.mean, 127.0f, 0.0f); /* with Ultra-Light: 127/128 */
    assert_float_equal(p->embedder.norm.std, 128.0f, 0.0f);
    assert_int_equal(p->embedder.batch_dynamic, 1);
    assert_int_equal(p->embedding_dim, 512);

    assert_string_equal(fw_model_provider(p->detector.model), "cpu");
    fw_pack_free(p);
    fw_pack_free(NULL);
}

static void test_synthetic_pack(void **state)
{
    (void)state;
    char dir[1024];
    data_path(dir, sizeof dir, "scrfd_synth/"); /* a trailing slash does not change the name */
    fw_pack *p = load_pack_ok(dir, NULL, NULL, NULL);
    assert_string_equal(p->name, "scrfd_synth");

    assert_int_equal(p->detector.kind, FW_KIND_SCRFD);
    const fw_model_info *di = fw_model_get_info(p->detector.model);
    assert_int_equal(di->n_outputs, 9); /* with keypoints */
    for (int o = 0; o < 9; o++)
        assert_string_equal(di->output_names[o], SYN_OUT_NAMES[o]);
    assert_string_equal(di->input_names[0], "input.1");
    assert_int_equal(p->detector.input_w, 64); /* the model's fixed size, not 640 */
    assert_int_equal(p->detector.input_h, 64);
    assert_float_equal(p->detector.norm.mean, 127.5f, 0.0f);
    assert_float_equal(p->detector.norm.std, 128.0f, 0.0f);
    assert_float_equal(p->detector.threshold, 0.5f, 1e-6f);
    assert_float_equal(p->detector.nms_iou, 0.4f, 1e-6f);
    assert_int_equal(p->detector.batch_dynamic, 0);

    assert_int_equal(p->has_landmarks, 0);
    assert_null(p->landmarks.model);

    assert_int_equal(p->embedder.kind, FW_KIND_EMBEDDER);
    assert_float_equal(p->embedder.norm.mean, 127.5f, 0.0f); /* ArcFace */
    assert_float_equal(p->embedder.norm.std, 127.5f, 0.0f);
    assert_int_equal(p->embedder.input_w, 112);
    assert_int_equal(p->embedder.input_h, 112);
    assert_int_equal(p->embedder.batch_dynamic, 1);
    assert_int_equal(p->embedding_dim, 512);
    fw_pack_free(p);
}

/* expected.json (written by the generator) agrees with the values hand-written above. */
static void test_expected_json_agrees(void **state)
{
    (void)state;
    char path[1024];
    data_path(path, sizeof path, "scrfd_synth/expected.json");
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root)
        fail_msg("%s:%d: %s", path, je.line, je.text);
    json_t *dets = json_object_get(root, "detections");
    assert_int_equal(json_array_size(dets), 2);
    for (size_t k = 0; k < 2; k++) {
        json_t *d = json_array_get(dets, k);
        const syn_det *s = &SYN_DETS[k];
        assert_int_equal(json_integer_value(json_object_get(d, "stride")), SYN_STRIDES[s->level]);
        assert_int_equal(json_integer_value(json_object_get(d, "row")), s->row);
        assert_float_equal(json_number_value(json_object_get(d, "score")), s->score, 1e-6);
        for (size_t j = 0; j < 4; j++)
            assert_float_equal(json_number_value(json_array_get(json_object_get(d, "box"), j)),
                               s->box[j], 0.0);
        for (size_t j = 0; j < 5; j++)
            for (size_t c = 0; c < 2; c++)
                assert_float_equal(json_number_value(json_array_get(
                                       json_array_get(json_object_get(d, "kps"), j), c)),
                                   s->kps[j][c], 0.0);
    }
    json_decref(root);
}

/* Runs the synthetic detector; outs gets its 9 outputs. */
static fw_model *run_synthetic(fw_tensor *outs)
{
    char path[1024];
    data_path(path, sizeof path, "scrfd_synth/scrfd.onnx");
    fw_session_opts cpu = {.provider = FW_PROVIDER_CPU, .threads = 1};
    fw_model *m = NULL;
    fw_error e = {0};
    if (fw_model_load(path, &cpu, &m, &e))
        fail_msg("%s", e.message);
    float *x = malloc(3 * SYN_IN * SYN_IN * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < 3 * SYN_IN * SYN_IN; i++)
        x[i] = (float)((i * 37) % 255) / 128.0f - 1.0f; /* the pixels must not matter */
    fw_shape s = {.rank = 4, .dims = {1, 3, SYN_IN, SYN_IN}};
    if (fw_model_run(m, x, &s, outs, &e))
        fail_msg("%s", e.message);
    free(x);
    return m;
}

static void test_synthetic_outputs(void **state)
{
    (void)state;
    fw_tensor outs[FW_MAX_OUTPUTS] = {0};
    fw_model *m = run_synthetic(outs);
    static const int cols[3] = {1, 4, 10}; /* scores, bbox, kps */
    for (int kind = 0; kind < 3; kind++) {
        for (int l = 0; l < 3; l++) {
            const fw_tensor *t = &outs[kind * 3 + l];
            assert_int_equal(t->shape.rank, 2);
            assert_int_equal(t->shape.dims[0], SYN_ROWS[l]);
            assert_int_equal(t->shape.dims[1], cols[kind]);
            assert_int_equal(t->count, SYN_ROWS[l] * cols[kind]);
            for (size_t r = 0; r < SYN_ROWS[l]; r++) {
                const syn_det *special = NULL;
                for (int k = 0; k < 2; k++)
                    if (SYN_DETS[k].level == l && SYN_DETS[k].row == r)
                        special = &SYN_DETS[k];
                for (int c = 0; c < cols[kind]; c++) {
                    float want = kind == 0 ? 0.01f : kind == 1 ? 1.0f : 0.0f;
                    if (special)
                        want = kind == 0   ? special->score
                               : kind == 1 ? special->dist[c]
                                           : special->kps_d[c];
                    float got = t->data[r * (size_t)cols[kind] + (size_t)c];
                    if (got != want)
                        fail_msg("output %s row %zu col %d: %g, want %g",
                                 SYN_OUT_NAMES[kind * 3 + l], r, c, (double)got, (double)want);
                }
            }
        }
    }
    for (int o = 0; o < 9; o++)
        fw_tensor_clear(&outs[o]);
    fw_model_free(m);
}

/* fw_scrfd_decode on the synthetic outputs finds exactly the two hand-computed faces. */
static void test_synthetic_decode(void **state)
{
    (void)state;
    fw_tensor outs[FW_MAX_OUTPUTS] = {0};
    fw_model *m = run_synthetic(outs);
    fw_scrfd_level levels[3];
    for (int l = 0; l < 3; l++)
        levels[l] = (fw_scrfd_level){.scores = outs[l].data,
                                     .bbox = outs[3 + l].data,
                                     .kps = outs[6 + l].data,
                                     .stride = SYN_STRIDES[l]};
    fw_det dets[16];
    size_t n = fw_scrfd_decode(levels, 3, SYN_IN, SYN_IN, 2, 0.5f, 1.0f, dets, 16);
    assert_int_equal(n, 2);
    for (int k = 0; k < 2; k++) {
        const syn_det *want = &SYN_DETS[k];
        const fw_det *got = NULL;
        for (size_t i = 0; i < n; i++)
            if (fabsf(dets[i].score - want->score) < 1e-6f)
                got = &dets[i];
        assert_non_null(got);
        assert_int_equal(got->has_kps, 1);
        for (int j = 0; j < 4; j++)
            assert_float_equal(got->box[j], want->box[j], 1e-4f);
        for (int j = 0; j < 5; j++) {
            assert_float_equal(got->kps[j][0], want->kps[j][0], 1e-4f);
            assert_float_equal(got->kps[j][1], want->kps[j][1], 1e-4f);
        }
    }
    assert_float_equal(fw_iou(dets[0].box, dets[1].box), 0.0f, 0.0f);
    assert_int_equal(fw_nms(dets, n, 0.4f), 2);
    assert_float_equal(dets[0].score, 0.9f, 1e-6f);

    /* a scale of 2 (input px per image px) halves every coordinate */
    n = fw_scrfd_decode(levels, 3, SYN_IN, SYN_IN, 2, 0.5f, 2.0f, dets, 16);
    assert_int_equal(n, 2);
    const fw_det *first = dets[0].score > dets[1].score ? &dets[0] : &dets[1];
    assert_float_equal(first->box[2], 20.0f, 1e-4f);
    assert_float_equal(first->kps[4][1], 20.0f, 1e-4f);

    for (int o = 0; o < 9; o++)
        fw_tensor_clear(&outs[o]);
    fw_model_free(m);
}

static void test_pack_json(void **state)
{
    (void)state;
    scratch s;
    scratch_init(&s);
    scratch_link(&s, "scrfd_synth/scrfd.onnx", "det.onnx");
    scratch_link(&s, "scrfd_synth/embed.onnx", "rec.onnx");
    scratch_link(&s, "unknown_only/unknown.onnx", "other.onnx");
    fw_error e;

    /* overrides: name, thresholds, norms */
    scratch_write(&s, "pack.json",
                  "{\"name\": \"custom\", \"models\": {"
                  "\"det.onnx\": {\"kind\": \"scrfd\", \"threshold\": 0.3, \"nms\": 0.45,"
                  " \"mean\": 120, \"std\": 100},"
                  "\"rec.onnx\": {\"kind\": \"embedder\", \"mean\": 0, \"std\": 1,"
                  " \"input_size\": [112, 112]},"
                  "\"other.onnx\": {\"kind\": \"unknown\"}}}");
    fw_pack *p = load_pack_ok(s.dir, NULL, NULL, NULL);
    assert_string_equal(p->name, "custom");
    assert_int_equal(p->detector.kind, FW_KIND_SCRFD);
    assert_float_equal(p->detector.threshold, 0.3f, 1e-6f);
    assert_float_equal(p->detector.nms_iou, 0.45f, 1e-6f);
    assert_float_equal(p->detector.norm.mean, 120.0f, 0.0f);
    assert_float_equal(p->detector.norm.std, 100.0f, 0.0f);
    assert_int_equal(p->embedder.kind, FW_KIND_EMBEDDER);
    assert_float_equal(p->embedder.norm.mean, 0.0f, 0.0f);
    assert_float_equal(p->embedder.norm.std, 1.0f, 0.0f);
    assert_int_equal(p->embedding_dim, 512);
    fw_pack_free(p);

    /* no pack.json entries: the name alone */
    scratch_write(&s, "pack.json", "{\"name\": \"only-a-name\"}");
    p = load_pack_ok(s.dir, NULL, NULL, NULL);
    assert_string_equal(p->name, "only-a-name");
    assert_float_equal(p->detector.threshold, 0.5f, 1e-6f);
    fw_pack_free(p);

    /* the embedder stated as unknown: the pack has no embedder */
    scratch_write(&s, "pack.json", "{\"models\": {\"rec.onnx\": {\"kind\": \"unknown\"}}}");
    assert_int_equal(load_pack_err(s.dir, NULL, &e), FW_ERR_MODEL);
    assert_non_null(strstr(e.message, "embedder"));

    /* a kind the signature cannot serve */
    scratch_write(&s, "pack.json",
                  "{\"models\": {\"other.onnx\": {\"kind\": \"embedder\"},"
                  " \"rec.onnx\": {\"kind\": \"genderage\"}}}");
    assert_int_equal(load_pack_err(s.dir, NULL, &e), FW_ERR_MODEL);
    assert_non_null(strstr(e.message, "other.onnx"));

    /* an input size that contradicts the model's fixed input */
    scratch_write(&s, "pack.json", "{\"models\": {\"det.onnx\": {\"input_size\": [640, 640]}}}");
    assert_int_equal(load_pack_err(s.dir, NULL, &e), FW_ERR_MODEL);
    assert_non_null(strstr(e.message, "input_size"));

    /* a file that is not there */
    scratch_write(&s, "pack.json", "{\"models\": {\"missing.onnx\": {\"kind\": \"scrfd\"}}}");
    assert_int_equal(load_pack_err(s.dir, NULL, &e), FW_ERR_NOT_FOUND);
    assert_non_null(strstr(e.message, "missing.onnx"));

    /* malformed JSON, bad kinds and values */
    static const char *const bad[] = {
        "{\"models\": ",
        "[1, 2]",
        "{\"name\": 5}",
        "{\"models\": {\"det.onnx\": {\"kind\": \"yolo\"}}}",
        "{\"models\": {\"det.onnx\": {\"threshold\": 1.5}}}",
        "{\"models\": {\"det.onnx\": {\"std\": 0}}}",
        "{\"models\": {\"det.onnx\": {\"input_size\": [64]}}}",
        "{\"models\": {\"det.onnx\": 3}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        scratch_write(&s, "pack.json", bad[i]);
        if (load_pack_err(s.dir, NULL, &e) != FW_ERR_PARSE)
            fail_msg("pack.json %s: want a parse error, got %s", bad[i], e.message);
    }
    scratch_free(&s);
}

/* Each role gets its own session options: an explicit provider that cannot start fails the
 * role it was given to, and only that role. */
static void test_per_role_options(void **state)
{
    (void)state;
    char dir[1024];
    data_path(dir, sizeof dir, "scrfd_synth");
    const fw_session_opts one = {.provider = FW_PROVIDER_CPU, .threads = 1};
    const fw_session_opts two = {.provider = FW_PROVIDER_CPU, .threads = 2};
    const fw_session_opts bad = {.provider = FW_PROVIDER_COREML};

    fw_pack *p = load_pack_ok(dir, &two, &one, &one);
    assert_int_equal(p->detector.kind, FW_KIND_SCRFD);
    assert_int_equal(p->embedder.kind, FW_KIND_EMBEDDER);
    assert_string_equal(fw_model_provider(p->detector.model), "cpu");
    fw_pack_free(p);

    /* the landmark role is unused by this pack: its options do not matter */
    p = load_pack_ok(dir, &one, &bad, &two);
    assert_int_equal(p->embedding_dim, 512);
    fw_pack_free(p);

    fw_error e = {0};
    p = (fw_pack *)&p;
    assert_int_equal(fw_pack_load(dir, &one, &one, &bad, &p, &e), FW_ERR_PROVIDER);
    assert_null(p);
    assert_non_null(strstr(e.message, "coreml"));
    p = (fw_pack *)&p;
    assert_int_equal(fw_pack_load(dir, &bad, &one, &one, &p, &e), FW_ERR_PROVIDER);
    assert_null(p);

    /* the default pack's landmark model follows the landmark options */
    p = (fw_pack *)&p;
    assert_int_equal(fw_pack_load(env_or_fail("FW_MODELS_DIR"), &one, &bad, &one, &p, &e),
                     FW_ERR_PROVIDER);
    assert_null(p);
}

static void test_pack_errors(void **state)
{
    (void)state;
    char dir[1024];
    fw_error e;
    const fw_session_opts cpu = {.provider = FW_PROVIDER_CPU, .threads = 1};

    data_path(dir, sizeof dir, "unknown_only");
    assert_int_equal(load_pack_err(dir, &cpu, &e), FW_ERR_MODEL);
    assert_non_null(strstr(e.message, "no face detector"));

    data_path(dir, sizeof dir, "detector_only");
    assert_int_equal(load_pack_err(dir, &cpu, &e), FW_ERR_MODEL);
    assert_non_null(strstr(e.message, "no face embedder"));

    data_path(dir, sizeof dir, "no_such_pack");
    assert_int_equal(load_pack_err(dir, &cpu, &e), FW_ERR_NOT_FOUND);

    data_path(dir, sizeof dir, "scrfd_synth/expected.json"); /* a file, not a directory */
    assert_int_equal(load_pack_err(dir, &cpu, &e), FW_ERR_NOT_FOUND);

    /* a directory without ONNX files */
    scratch s;
    scratch_init(&s);
    scratch_write(&s, "readme.txt", "no models here\n");
    assert_int_equal(load_pack_err(s.dir, &cpu, &e), FW_ERR_NOT_FOUND);
    assert_non_null(strstr(e.message, "no .onnx"));

    /* an Ultra-Light detector without a landmark model (it has no keypoints) */
    char models[1024], target[1200], link[512];
    snprintf(models, sizeof models, "%s", env_or_fail("FW_MODELS_DIR"));
    static const char *const files[] = {"fr_detect.onnx", "fr_feature.onnx"};
    for (int i = 0; i < 2; i++) {
        snprintf(target, sizeof target, "%s/%s", models, files[i]);
        snprintf(link, sizeof link, "%s/%s", s.dir, files[i]);
        assert_int_equal(symlink(target, link), 0);
        snprintf(s.files[s.n++], sizeof s.files[0], "%s", files[i]);
    }
    assert_int_equal(load_pack_err(s.dir, &cpu, &e), FW_ERR_MODEL);
    assert_non_null(strstr(e.message, "landmark"));

    /* a file ORT cannot parse */
    scratch_write(&s, "broken.onnx", "this is not a protobuf");
    assert_int_equal(load_pack_err(s.dir, &cpu, &e), FW_ERR_MODEL);
    assert_non_null(strstr(e.message, "broken.onnx"));
    scratch_free(&s);

    fw_pack *p = NULL;
    assert_int_equal(fw_pack_load(NULL, NULL, NULL, NULL, &p, &e), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_pack_load(dir, NULL, NULL, NULL, NULL, &e), FW_ERR_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_names),           cmocka_unit_test(test_classify_rules),
        cmocka_unit_test(test_default_pack),         cmocka_unit_test(test_synthetic_pack),
        cmocka_unit_test(test_expected_json_agrees), cmocka_unit_test(test_synthetic_outputs),
        cmocka_unit_test(test_synthetic_decode),     cmocka_unit_test(test_pack_json),
        cmocka_unit_test(test_per_role_options),     cmocka_unit_test(test_pack_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
