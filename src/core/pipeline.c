/* The face pipeline: engine lifetime and the decode -> detect -> landmarks -> align ->
 * embed stages (see pipeline.h). */
#include "core/pipeline.h"

#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/align.h"
#include "core/landmark.h"
#include "core/pack.h"
#include "core/preprocess.h"
#include "util/log.h"

#define DEFAULT_MAX_BATCH 64
#define MAX_DETS_PER_IMAGE 4096

struct fw_engine {
    fw_pack *pack;
    int max_batch;
    fw_decode_opts decode;
    char models_dir[1024];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void add_time(_Atomic uint64_t *slot, uint64_t t0)
{
    atomic_fetch_add_explicit(slot, now_ns() - t0, memory_order_relaxed);
}

#define STAGE_ADD(st, field, t0)                                                                   \
    do {                                                                                           \
        if (st)                                                                                    \
            add_time(&(st)->field, (t0));                                                          \
    } while (0)
#define COUNT_ADD(st, field, n)                                                                    \
    do {                                                                                           \
        if (st)                                                                                    \
            atomic_fetch_add_explicit(&(st)->field, (uint64_t)(n), memory_order_relaxed);          \
    } while (0)

/* ------------------------------------------------------------------------------------ */
/* configuration and lifetime                                                           */

void fw_engine_config_init(fw_engine_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->provider = "auto";
    cfg->max_batch = DEFAULT_MAX_BATCH;
}

void fw_analyze_opts_init(fw_analyze_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->embed = true;
}

const char *fw_default_models_dir(void)
{
    const char *env = getenv("FACEWORK_MODELS");
    if (env && *env)
        return env;
    return FW_DEFAULT_MODELS_DIR;
}

static fw_err session_opts(const fw_engine_config *cfg, fw_role role, fw_session_opts *so,
                           fw_error *err)
{
    const char *name = cfg->role_provider[role] ? cfg->role_provider[role] : cfg->provider;
    int p = fw_provider_parse(name ? name : "auto");
    if (p < 0)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "unknown provider '%s' (expected auto, cpu, cuda, tensorrt, dml, "
                            "rocm, migraphx, coreml or openvino)",
                            name);
    so->provider = (fw_provider)p;
    so->threads = cfg->threads;
    so->device_id = cfg->device_id;
    return FW_OK;
}

/* Runs each model once on zeros so the first request does not pay for lazy
 * initialisation (allocator arenas, kernel selection, GPU graph capture). */
static void warm_up(fw_engine *eng)
{
    fw_pack_model *roles[] = {&eng->pack->detector,
                              eng->pack->has_landmarks ? &eng->pack->landmarks : NULL,
                              &eng->pack->embedder};
    for (size_t r = 0; r < 3; r++) {
        fw_pack_model *pm = roles[r];
        if (!pm || !pm->model)
            continue;
        const fw_model_info *info = fw_model_get_info(pm->model);
        fw_shape shape = info->inputs[0];
        shape.dims[0] = 1;
        size_t count = 1;
        for (int i = 1; i < shape.rank; i++) {
            if (shape.dims[i] <= 0)
                shape.dims[i] = i == shape.rank - 1 ? pm->input_w : pm->input_h;
            count *= (size_t)shape.dims[i];
        }
        float *zeros = calloc(count, sizeof *zeros);
        fw_tensor outs[FW_MAX_OUTPUTS] = {0};
        fw_error e;
        if (zeros && fw_model_run(pm->model, zeros, &shape, outs, &e) == FW_OK) {
            for (size_t i = 0; i < info->n_outputs; i++)
                fw_tensor_clear(&outs[i]);
        }
        free(zeros);
    }
}

fw_err fw_engine_new(const fw_engine_config *cfg, fw_engine **out, fw_error *err)
{
    fw_engine_config defaults;
    if (!out)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_engine_new: out is NULL");
    *out = NULL;
    if (!cfg) {
        fw_engine_config_init(&defaults);
        cfg = &defaults;
    }
    fw_session_opts so[FW_ROLE__COUNT];
    for (int r = 0; r < FW_ROLE__COUNT; r++) {
        fw_err rc = session_opts(cfg, (fw_role)r, &so[r], err);
        if (rc)
            return rc;
    }
    fw_engine *eng = calloc(1, sizeof *eng);
    if (!eng)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    const char *dir =
        cfg->models_dir && *cfg->models_dir ? cfg->models_dir : fw_default_models_dir();
    snprintf(eng->models_dir, sizeof eng->models_dir, "%s", dir);
    eng->max_batch = cfg->max_batch > 0 ? cfg->max_batch : DEFAULT_MAX_BATCH;
    eng->decode = cfg->decode;
    fw_err rc = fw_pack_load(eng->models_dir, &so[FW_ROLE_DETECTOR], &so[FW_ROLE_LANDMARKS],
                             &so[FW_ROLE_EMBEDDER], &eng->pack, err);
    if (rc) {
        free(eng);
        return rc;
    }
    warm_up(eng);
    FW_INFO("engine", "models loaded",
            "pack=%s dir=\"%s\" detector=%s/%s landmarks=%s embedder=%s/%s dim=%zu",
            eng->pack->name, eng->models_dir, fw_model_kind_name(eng->pack->detector.kind),
            fw_engine_provider(eng, FW_ROLE_DETECTOR),
            eng->pack->has_landmarks ? fw_engine_provider(eng, FW_ROLE_LANDMARKS) : "none",
            fw_model_kind_name(eng->pack->embedder.kind), fw_engine_provider(eng, FW_ROLE_EMBEDDER),
            eng->pack->embedding_dim);
    *out = eng;
    return FW_OK;
}

void fw_engine_free(fw_engine *eng)
{
    if (!eng)
        return;
    fw_pack_free(eng->pack);
    free(eng);
}

size_t fw_engine_embedding_dim(const fw_engine *eng)
{
    return eng->pack->embedding_dim;
}

const fw_decode_opts *fw__engine_decode_opts(const fw_engine *eng)
{
    return &eng->decode;
}

const fw_pack *fw__engine_pack(const fw_engine *eng)
{
    return eng->pack;
}

int fw_engine_max_batch(const fw_engine *eng)
{
    return eng->max_batch;
}

const char *fw_engine_provider(const fw_engine *eng, fw_role role)
{
    const fw_pack_model *pm = role == FW_ROLE_DETECTOR    ? &eng->pack->detector
                              : role == FW_ROLE_LANDMARKS ? &eng->pack->landmarks
                                                          : &eng->pack->embedder;
    return pm->model ? fw_model_provider(pm->model) : "none";
}

const char *fw_engine_models_dir(const fw_engine *eng)
{
    return eng->models_dir;
}

const char *fw_engine_pack_name(const fw_engine *eng)
{
    return eng->pack->name;
}

void fw_result_clear(fw_result *res)
{
    if (!res)
        return;
    free(res->faces); /* embeddings live in the same allocation */
    memset(res, 0, sizeof *res);
}

/* ------------------------------------------------------------------------------------ */
/* items                                                                                */

void fw_item_init(fw_item *it, const uint8_t *data, size_t len)
{
    memset(it, 0, sizeof *it);
    it->data = data;
    it->len = len;
}

void fw_item_init_image(fw_item *it, const fw_image *img)
{
    memset(it, 0, sizeof *it);
    it->src = img;
}

void fw_item_clear(fw_item *it)
{
    if (!it)
        return;
    fw_image_free(it->img);
    free(it->dets);
    it->img = NULL;
    it->dets = NULL;
    it->n_dets = 0;
}

static fw_err item_fail(fw_item *it, fw_err code, const char *msg)
{
    it->status = code;
    snprintf(it->message, sizeof it->message, "%s", msg);
    return code;
}

/* The image the detector sees: the decoded image, or the caller's. */
static const fw_image *det_image(const fw_item *it)
{
    return it->img ? it->img : it->src;
}

/* Long side below which images are decoded at full resolution: the embedder wants faces
 * at >= template size, and re-decoding a JPEG costs more than the DCT scaling saves, so
 * scaled decoding is kept for images much larger than that (12 MP phone photos...). */
#define DECODE_FULL_BELOW 2048

/* Smallest decoded size the detector (and, usually, the embedder) needs from an oriented
 * w x h image: at least 2x the detector input, and the long side at least
 * DECODE_FULL_BELOW. */
static void detector_min_size(const fw_engine *eng, int w, int h, int *min_w, int *min_h)
{
    const fw_pack_model *det = &eng->pack->detector;
    int long_side = w > h ? w : h;
    double f = (double)DECODE_FULL_BELOW / (double)(long_side > 0 ? long_side : 1);
    if (det->kind == FW_KIND_SCRFD) {
        /* letterboxed: the long side is fitted to the input */
        double g = 2.0 * (double)(det->input_w > det->input_h ? det->input_w : det->input_h) /
                   (double)(long_side > 0 ? long_side : 1);
        if (g > f)
            f = g;
        *min_w = (int)ceil(w * f);
        *min_h = (int)ceil(h * f);
    } else {
        *min_w = (int)ceil(w * f);
        *min_h = (int)ceil(h * f);
        if (*min_w < 2 * det->input_w)
            *min_w = 2 * det->input_w;
        if (*min_h < 2 * det->input_h)
            *min_h = 2 * det->input_h;
    }
}

fw_err fw_pipeline_decode(fw_engine *eng, fw_item *it, fw_stage_times *st)
{
    if (it->src) {
        it->orig_w = it->src->orig_width ? it->src->orig_width : it->src->width;
        it->orig_h = it->src->orig_height ? it->src->orig_height : it->src->height;
        return FW_OK;
    }
    uint64_t t0 = now_ns();
    fw_error e;
    fw_image_info info;
    fw_err rc = fw_image_probe(it->data, it->len, &info, &e);
    if (rc) {
        STAGE_ADD(st, decode_ns, t0);
        return item_fail(it, rc, e.message);
    }
    fw_decode_opts opts = eng->decode;
    int w = info.width, h = info.height;
    if (info.orientation >= 5) {
        w = info.height;
        h = info.width;
    }
    detector_min_size(eng, w, h, &opts.min_width, &opts.min_height);
    rc = fw_image_decode(it->data, it->len, &opts, &it->img, &e);
    STAGE_ADD(st, decode_ns, t0);
    if (rc)
        return item_fail(it, rc, e.message);
    it->orig_w = it->img->orig_width;
    it->orig_h = it->img->orig_height;
    return FW_OK;
}

/* ------------------------------------------------------------------------------------ */
/* detection                                                                            */

static size_t model_input_floats(const fw_pack_model *pm)
{
    const fw_model_info *info = fw_model_get_info(pm->model);
    int c =
        info->inputs[0].rank >= 4 && info->inputs[0].dims[1] > 0 ? (int)info->inputs[0].dims[1] : 3;
    return (size_t)c * (size_t)pm->input_w * (size_t)pm->input_h;
}

static fw_shape nchw_shape(size_t n, int c, int h, int w)
{
    fw_shape s = {.rank = 4, .dims = {(int64_t)n, c, h, w}};
    return s;
}

/* SCRFD output layout of one model: per stride, which outputs hold scores, boxes and
 * keypoints. Found from shapes (last dim 1 / 4 / 10, row count -> stride). */
typedef struct scrfd_layout {
    int n_levels;
    int stride[3];
    int score_out[3], bbox_out[3], kps_out[3];
    int batched; /* outputs carry a leading batch dimension */
    int anchors;
} scrfd_layout;

static fw_err scrfd_find_layout(const fw_pack_model *det, const fw_tensor *outs, size_t n_outs,
                                size_t batch, scrfd_layout *L, fw_error *err)
{
    memset(L, 0, sizeof *L);
    L->anchors = 2;
    static const int strides[3] = {8, 16, 32};
    L->n_levels = 3;
    for (int l = 0; l < 3; l++) {
        L->stride[l] = strides[l];
        L->score_out[l] = L->bbox_out[l] = L->kps_out[l] = -1;
    }
    for (size_t o = 0; o < n_outs; o++) {
        const fw_shape *s = &outs[o].shape;
        if (s->rank < 2)
            return fw_error_set(err, FW_ERR_MODEL, "SCRFD output %zu has rank %d", o, s->rank);
        int64_t last = s->dims[s->rank - 1];
        int64_t rows = s->rank == 3 ? s->dims[1] : s->dims[0];
        if (s->rank == 3)
            L->batched = 1;
        else if (batch > 1)
            rows /= (int64_t)batch; /* [N*A, k] exports */
        for (int l = 0; l < 3; l++) {
            int64_t a =
                (int64_t)(det->input_h / strides[l]) * (det->input_w / strides[l]) * L->anchors;
            if (rows != a)
                continue;
            if (last == 1)
                L->score_out[l] = (int)o;
            else if (last == 4)
                L->bbox_out[l] = (int)o;
            else if (last == 10)
                L->kps_out[l] = (int)o;
        }
    }
    for (int l = 0; l < 3; l++)
        if (L->score_out[l] < 0 || L->bbox_out[l] < 0)
            return fw_error_set(err, FW_ERR_MODEL,
                                "SCRFD outputs do not match strides 8/16/32 at %dx%d", det->input_w,
                                det->input_h);
    return FW_OK;
}

/* Keeps dets that pass opts' filters, in score order, at most max_faces. */
static size_t filter_dets(fw_det *d, size_t n, const fw_analyze_opts *opts)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        float w = d[i].box[2] - d[i].box[0], h = d[i].box[3] - d[i].box[1];
        if (opts->min_face_size > 0 && (w < opts->min_face_size || h < opts->min_face_size))
            continue;
        if (w <= 1.0f || h <= 1.0f)
            continue;
        d[k++] = d[i];
        if (opts->max_faces > 0 && (int)k >= opts->max_faces)
            break;
    }
    return k;
}

/* Converts dets found on the detection image into original-image pixels. */
static void dets_to_original(fw_det *d, size_t n, const fw_image *img, int orig_w, int orig_h)
{
    float sx = (float)orig_w / (float)img->width, sy = (float)orig_h / (float)img->height;
    if (sx == 1.0f && sy == 1.0f)
        return;
    for (size_t i = 0; i < n; i++) {
        d[i].box[0] *= sx;
        d[i].box[2] *= sx;
        d[i].box[1] *= sy;
        d[i].box[3] *= sy;
        for (int k = 0; k < 5; k++) {
            d[i].kps[k][0] *= sx;
            d[i].kps[k][1] *= sy;
        }
    }
}

static fw_err store_dets(fw_item *it, fw_det *tmp, size_t n)
{
    it->dets = n ? malloc(n * sizeof *it->dets) : NULL;
    if (n && !it->dets)
        return item_fail(it, FW_ERR_NOMEM, "out of memory");
    if (n)
        memcpy(it->dets, tmp, n * sizeof *tmp);
    it->n_dets = n;
    return FW_OK;
}

/* Runs the detector over items[0..n) (all OK, n <= max_batch) in one model run. */
static fw_err detect_chunk(fw_engine *eng, fw_item *const *items, size_t n,
                           const fw_analyze_opts *opts, fw_stage_times *st, fw_det *scratch,
                           fw_error *err)
{
    const fw_pack_model *det = &eng->pack->detector;
    const size_t per = model_input_floats(det);
    float *input = malloc(n * per * sizeof *input);
    float *scales = malloc(n * sizeof *scales);
    if (!input || !scales) {
        free(input);
        free(scales);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        const fw_image *img = det_image(items[i]);
        if (det->kind == FW_KIND_SCRFD)
            scales[i] = fw_pre_letterbox_chw(img, det->input_w, det->input_h, det->norm.mean,
                                             det->norm.std, input + i * per);
        else
            fw_pre_resize_chw(img, det->input_w, det->input_h, det->norm.mean, det->norm.std,
                              input + i * per);
    }
    STAGE_ADD(st, preprocess_ns, t0);

    t0 = now_ns();
    fw_shape shape = nchw_shape(n, 3, det->input_h, det->input_w);
    fw_tensor outs[FW_MAX_OUTPUTS] = {0};
    fw_err rc = fw_model_run(det->model, input, &shape, outs, err);
    STAGE_ADD(st, inference_ns, t0);
    COUNT_ADD(st, detector_runs, 1);
    free(input);
    const size_t n_outs = fw_model_get_info(det->model)->n_outputs;
    if (rc) {
        free(scales);
        return rc;
    }

    t0 = now_ns();
    float thr = opts->min_score > 0 ? opts->min_score : det->threshold;
    if (det->kind == FW_KIND_ULTRALIGHT) {
        int si = outs[0].shape.dims[outs[0].shape.rank - 1] == 2 ? 0 : 1;
        const fw_tensor *sc = &outs[si], *bx = &outs[1 - si];
        size_t anchors = sc->count / (2 * n);
        for (size_t i = 0; i < n && rc == FW_OK; i++) {
            fw_item *it = items[i];
            const fw_image *img = det_image(it);
            size_t k = fw_ultralight_decode(sc->data + i * anchors * 2, bx->data + i * anchors * 4,
                                            anchors, thr, img->width, img->height, scratch,
                                            MAX_DETS_PER_IMAGE);
            k = fw_nms(scratch, k, det->nms_iou);
            dets_to_original(scratch, k, img, it->orig_w, it->orig_h);
            k = filter_dets(scratch, k, opts);
            store_dets(it, scratch, k);
        }
    } else {
        scrfd_layout L;
        rc = scrfd_find_layout(det, outs, n_outs, n, &L, err);
        for (size_t i = 0; i < n && rc == FW_OK; i++) {
            fw_item *it = items[i];
            fw_scrfd_level lv[3];
            for (int l = 0; l < L.n_levels; l++) {
                size_t a = (size_t)(det->input_h / L.stride[l]) *
                           (size_t)(det->input_w / L.stride[l]) * (size_t)L.anchors;
                lv[l].stride = L.stride[l];
                lv[l].scores = outs[L.score_out[l]].data + i * a;
                lv[l].bbox = outs[L.bbox_out[l]].data + i * a * 4;
                lv[l].kps = L.kps_out[l] >= 0 ? outs[L.kps_out[l]].data + i * a * 10 : NULL;
            }
            size_t k = fw_scrfd_decode(lv, (size_t)L.n_levels, det->input_w, det->input_h,
                                       L.anchors, thr, scales[i], scratch, MAX_DETS_PER_IMAGE);
            k = fw_nms(scratch, k, det->nms_iou);
            dets_to_original(scratch, k, det_image(it), it->orig_w, it->orig_h);
            k = filter_dets(scratch, k, opts);
            store_dets(it, scratch, k);
        }
    }
    STAGE_ADD(st, postprocess_ns, t0);
    for (size_t o = 0; o < n_outs; o++)
        fw_tensor_clear(&outs[o]);
    free(scales);
    return rc;
}

/* Runs the 68-point landmark model over every face of items[0..n) in batches and fills
 * each det's 5 keypoints. */
static fw_err landmarks_run(fw_engine *eng, fw_item *const *items, size_t n, fw_stage_times *st,
                            fw_error *err)
{
    const fw_pack_model *lm = &eng->pack->landmarks;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (items[i]->status == FW_OK)
            total += items[i]->n_dets;
    if (total == 0)
        return FW_OK;
    const size_t per = FW_LMK68_SIZE * FW_LMK68_SIZE;
    const size_t chunk = lm->batch_dynamic ? (size_t)eng->max_batch : 1;
    float *input = malloc(chunk * per * sizeof *input);
    float(*crops)[4] = malloc(chunk * sizeof *crops);
    fw_det **owners = malloc(chunk * sizeof *owners);
    fw_err rc = FW_OK;
    if (!input || !crops || !owners) {
        rc = fw_error_set(err, FW_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t i = 0, f = 0;
    while (rc == FW_OK) {
        /* gather up to `chunk` faces */
        size_t m = 0;
        uint64_t t0 = now_ns();
        while (m < chunk && i < n) {
            fw_item *it = items[i];
            if (it->status != FW_OK || f >= it->n_dets) {
                i++;
                f = 0;
                continue;
            }
            const fw_image *img = det_image(it);
            float sx = (float)img->width / (float)it->orig_w;
            float sy = (float)img->height / (float)it->orig_h;
            fw_det *d = &it->dets[f++];
            float box[4] = {d->box[0] * sx, d->box[1] * sy, d->box[2] * sx, d->box[3] * sy};
            fw_lmk68_prepare(img, box, input + m * per, crops[m]);
            owners[m] = d;
            m++;
        }
        STAGE_ADD(st, preprocess_ns, t0);
        if (m == 0)
            break;
        t0 = now_ns();
        fw_shape shape = nchw_shape(m, 1, FW_LMK68_SIZE, FW_LMK68_SIZE);
        fw_tensor out[FW_MAX_OUTPUTS] = {0};
        rc = fw_model_run(lm->model, input, &shape, out, err);
        STAGE_ADD(st, inference_ns, t0);
        if (rc)
            break;
        t0 = now_ns();
        size_t stride = out[0].count / m;
        for (size_t k = 0; k < m; k++) {
            fw_det *d = owners[k];
            float pts[5][2];
            fw_lmk68_to5(out[0].data + k * stride, crops[k], pts);
            /* in detection-image pixels for now; mapped to the original below */
            memcpy(d->kps, pts, sizeof d->kps);
            d->has_kps = 2;
        }
        fw_tensor_clear(&out[0]);
        STAGE_ADD(st, postprocess_ns, t0);
    }
    /* landmark points were computed in detection-image pixels: map to the original */
    for (size_t j = 0; j < n; j++) {
        fw_item *it = items[j];
        if (it->status != FW_OK)
            continue;
        const fw_image *img = det_image(it);
        float sx = (float)it->orig_w / (float)img->width;
        float sy = (float)it->orig_h / (float)img->height;
        for (size_t k = 0; k < it->n_dets; k++) {
            fw_det *d = &it->dets[k];
            if (d->has_kps != 2)
                continue;
            for (int p = 0; p < 5; p++) {
                d->kps[p][0] *= sx;
                d->kps[p][1] *= sy;
            }
            d->has_kps = 1;
        }
    }
done:
    free(input);
    free(crops);
    free(owners);
    return rc;
}

fw_err fw_pipeline_detect(fw_engine *eng, fw_item *const *items, size_t n,
                          const fw_analyze_opts *opts, fw_stage_times *st, fw_error *err)
{
    fw_analyze_opts defaults;
    if (!opts) {
        fw_analyze_opts_init(&defaults);
        opts = &defaults;
    }
    const fw_pack_model *det = &eng->pack->detector;
    size_t chunk = det->batch_dynamic ? (size_t)eng->max_batch : 1;
    fw_item **ok = malloc((n ? n : 1) * sizeof *ok);
    fw_det *scratch = malloc(MAX_DETS_PER_IMAGE * sizeof *scratch);
    if (!ok || !scratch) {
        free(ok);
        free(scratch);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        fw_item *it = items[i];
        free(it->dets);
        it->dets = NULL;
        it->n_dets = 0;
        if (it->status == FW_OK && det_image(it))
            ok[m++] = it;
    }
    fw_err rc = FW_OK;
    for (size_t i = 0; i < m && rc == FW_OK; i += chunk) {
        size_t c = m - i < chunk ? m - i : chunk;
        rc = detect_chunk(eng, ok + i, c, opts, st, scratch, err);
    }
    if (rc == FW_OK && eng->pack->has_landmarks && det->kind != FW_KIND_SCRFD)
        rc = landmarks_run(eng, ok, m, st, err);
    if (rc) {
        for (size_t i = 0; i < m; i++)
            item_fail(ok[i], rc, err ? err->message : "inference failed");
    }
    COUNT_ADD(st, images, m);
    free(ok);
    free(scratch);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* embedding                                                                            */

size_t fw_pipeline_embed_input_size(const fw_engine *eng)
{
    return model_input_floats(&eng->pack->embedder);
}

/* Decoded scale (decoded px per original px) at which the alignment of every face of it
 * shrinks or keeps, never enlarges: the similarity transform onto the template has a
 * scale factor s (template px per original px), so decoding at >= s keeps the face at
 * least as large as the 112x112 template. */
static double needed_scale(const fw_item *it)
{
    double need = 0;
    for (size_t k = 0; k < it->n_dets; k++) {
        float M[2][3];
        if (fw_similarity_estimate((const float(*)[2])it->dets[k].kps, fw_arcface_template, 5, M) !=
            0)
            continue;
        double s = sqrt(fabs((double)M[0][0] * M[1][1] - (double)M[0][1] * M[1][0]));
        if (s > need)
            need = s;
    }
    return need > 1.0 ? 1.0 : need;
}

fw_err fw_pipeline_embed_prepare(fw_engine *eng, fw_item *it, float *chw, fw_stage_times *st,
                                 fw_error *err)
{
    if (it->status != FW_OK || it->n_dets == 0)
        return FW_OK;
    const fw_pack_model *emb = &eng->pack->embedder;
    const fw_image *img = det_image(it);
    fw_image *sharper = NULL;
    double have = (double)img->width / (double)it->orig_w;
    double need = needed_scale(it);
    if (it->data && need > have + 1e-6) {
        /* The faces are smaller than the template at this scale: decode again, finer. */
        uint64_t t0 = now_ns();
        fw_decode_opts opts = eng->decode;
        opts.min_width = (int)ceil(need * it->orig_w);
        opts.min_height = (int)ceil(need * it->orig_h);
        fw_error e;
        if (fw_image_decode(it->data, it->len, &opts, &sharper, &e) == FW_OK)
            img = sharper;
        STAGE_ADD(st, decode_ns, t0);
    }
    uint64_t t0 = now_ns();
    float sx = (float)img->width / (float)it->orig_w, sy = (float)img->height / (float)it->orig_h;
    const size_t per = fw_pipeline_embed_input_size(eng);
    uint8_t *crop = malloc((size_t)emb->input_w * emb->input_h * 3);
    if (!crop) {
        fw_image_free(sharper);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    for (size_t k = 0; k < it->n_dets; k++) {
        float lm[5][2];
        for (int p = 0; p < 5; p++) {
            lm[p][0] = it->dets[k].kps[p][0] * sx;
            lm[p][1] = it->dets[k].kps[p][1] * sy;
        }
        fw_align_face(img, lm, crop);
        fw_pre_rgb_to_chw(crop, emb->input_w, emb->input_h, emb->norm.mean, emb->norm.std,
                          chw + k * per);
    }
    free(crop);
    fw_image_free(sharper);
    STAGE_ADD(st, preprocess_ns, t0);
    return FW_OK;
}

fw_err fw_pipeline_embed_run(fw_engine *eng, const float *chw, size_t m, float *out,
                             fw_stage_times *st, fw_error *err)
{
    const fw_pack_model *emb = &eng->pack->embedder;
    const size_t per = fw_pipeline_embed_input_size(eng);
    const size_t dim = eng->pack->embedding_dim;
    const size_t chunk = emb->batch_dynamic ? (size_t)eng->max_batch : 1;
    for (size_t i = 0; i < m; i += chunk) {
        size_t c = m - i < chunk ? m - i : chunk;
        uint64_t t0 = now_ns();
        fw_shape shape = nchw_shape(c, 3, emb->input_h, emb->input_w);
        fw_tensor outs[FW_MAX_OUTPUTS] = {0};
        fw_err rc = fw_model_run(emb->model, chw + i * per, &shape, outs, err);
        STAGE_ADD(st, inference_ns, t0);
        COUNT_ADD(st, embedder_runs, 1);
        if (rc)
            return rc;
        t0 = now_ns();
        if (outs[0].count != c * dim) {
            fw_tensor_clear(&outs[0]);
            return fw_error_set(err, FW_ERR_MODEL, "embedder returned %zu values for %zu faces",
                                outs[0].count, c);
        }
        for (size_t k = 0; k < c; k++) {
            memcpy(out + (i + k) * dim, outs[0].data + k * dim, dim * sizeof(float));
            fw_l2_normalize(out + (i + k) * dim, dim);
        }
        fw_tensor_clear(&outs[0]);
        STAGE_ADD(st, postprocess_ns, t0);
    }
    COUNT_ADD(st, faces, m);
    return FW_OK;
}

fw_err fw_pipeline_finish(const fw_engine *eng, const fw_item *it, const float *embeddings,
                          fw_result *res)
{
    memset(res, 0, sizeof *res);
    res->status = it->status;
    snprintf(res->message, sizeof res->message, "%s", it->status ? it->message : "");
    res->width = it->orig_w;
    res->height = it->orig_h;
    if (it->status != FW_OK || it->n_dets == 0)
        return FW_OK;
    const size_t dim = eng->pack->embedding_dim;
    size_t bytes = it->n_dets * sizeof(fw_face);
    if (embeddings)
        bytes += it->n_dets * dim * sizeof(float);
    res->faces = malloc(bytes);
    if (!res->faces) {
        res->status = FW_ERR_NOMEM;
        snprintf(res->message, sizeof res->message, "out of memory");
        return FW_ERR_NOMEM;
    }
    float *emb_block = (float *)(void *)(res->faces + it->n_dets);
    for (size_t k = 0; k < it->n_dets; k++) {
        fw_face *f = &res->faces[k];
        const fw_det *d = &it->dets[k];
        memcpy(f->bbox, d->box, sizeof f->bbox);
        f->score = d->score;
        memcpy(f->landmarks, d->kps, sizeof f->landmarks);
        f->embedding = NULL;
        if (embeddings) {
            f->embedding = emb_block + k * dim;
            memcpy(f->embedding, embeddings + k * dim, dim * sizeof(float));
        }
    }
    res->n_faces = it->n_dets;
    return FW_OK;
}

/* ------------------------------------------------------------------------------------ */
/* whole-call API                                                                       */

static fw_err analyze_items(fw_engine *eng, fw_item *items, size_t n, const fw_analyze_opts *opts,
                            fw_result *results, fw_stage_times *st, fw_error *err)
{
    fw_analyze_opts defaults;
    if (!opts) {
        fw_analyze_opts_init(&defaults);
        opts = &defaults;
    }
    fw_err rc = FW_OK;
    fw_item **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    float *chw = NULL, *emb = NULL;
    if (!ptrs) {
        rc = fw_error_set(err, FW_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = &items[i];
        fw_pipeline_decode(eng, &items[i], st);
    }
    rc = fw_pipeline_detect(eng, ptrs, n, opts, st, err);
    if (rc)
        goto done;
    size_t faces = 0;
    if (opts->embed)
        for (size_t i = 0; i < n; i++)
            faces += items[i].status == FW_OK ? items[i].n_dets : 0;
    const size_t per = fw_pipeline_embed_input_size(eng);
    const size_t dim = eng->pack->embedding_dim;
    if (faces) {
        chw = malloc(faces * per * sizeof *chw);
        emb = malloc(faces * dim * sizeof *emb);
        if (!chw || !emb) {
            rc = fw_error_set(err, FW_ERR_NOMEM, "out of memory");
            goto done;
        }
        size_t off = 0;
        for (size_t i = 0; i < n && rc == FW_OK; i++) {
            if (items[i].status != FW_OK)
                continue;
            rc = fw_pipeline_embed_prepare(eng, &items[i], chw + off * per, st, err);
            off += items[i].n_dets;
        }
        if (rc == FW_OK)
            rc = fw_pipeline_embed_run(eng, chw, faces, emb, st, err);
        if (rc)
            goto done;
    }
    uint64_t t0 = now_ns();
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const float *e = NULL;
        if (faces && items[i].status == FW_OK) {
            e = emb + off * dim;
            off += items[i].n_dets;
        }
        fw_pipeline_finish(eng, &items[i], e, &results[i]);
    }
    STAGE_ADD(st, postprocess_ns, t0);
done:
    if (rc)
        for (size_t i = 0; i < n; i++)
            memset(&results[i], 0, sizeof results[i]);
    for (size_t i = 0; i < n; i++)
        fw_item_clear(&items[i]);
    free(ptrs);
    free(chw);
    free(emb);
    return rc;
}

fw_err fw_engine_analyze(fw_engine *eng, const fw_blob *inputs, size_t n,
                         const fw_analyze_opts *opts, fw_result *results, fw_error *err)
{
    return fw_pipeline_analyze(eng, inputs, n, opts, results, NULL, err);
}

fw_err fw_pipeline_analyze(fw_engine *eng, const fw_blob *inputs, size_t n,
                           const fw_analyze_opts *opts, fw_result *results, fw_stage_times *st,
                           fw_error *err)
{
    if (!eng || (n && (!inputs || !results)))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_engine_analyze: NULL argument");
    fw_item *items = calloc(n ? n : 1, sizeof *items);
    if (!items)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        fw_item_init(&items[i], inputs[i].data, inputs[i].len);
    fw_err rc = analyze_items(eng, items, n, opts, results, st, err);
    free(items);
    return rc;
}

fw_err fw_engine_analyze_images(fw_engine *eng, const fw_image *const *images, size_t n,
                                const fw_analyze_opts *opts, fw_result *results, fw_error *err)
{
    if (!eng || (n && (!images || !results)))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "fw_engine_analyze_images: NULL argument");
    fw_item *items = calloc(n ? n : 1, sizeof *items);
    if (!items)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        fw_item_init_image(&items[i], images[i]);
        if (!images[i])
            item_fail(&items[i], FW_ERR_INVALID_ARGUMENT, "NULL image");
    }
    fw_err rc = analyze_items(eng, items, n, opts, results, NULL, err);
    free(items);
    return rc;
}

fw_err fw_engine_embed_aligned(fw_engine *eng, const uint8_t *crops, size_t n, float *out,
                               fw_error *err)
{
    if (!eng || (n && (!crops || !out)))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_engine_embed_aligned: NULL argument");
    const fw_pack_model *emb = &eng->pack->embedder;
    if (emb->input_w != FW_ALIGNED_SIZE || emb->input_h != FW_ALIGNED_SIZE)
        return fw_error_set(err, FW_ERR_UNSUPPORTED, "embedder input is %dx%d, not 112x112",
                            emb->input_w, emb->input_h);
    const size_t per = fw_pipeline_embed_input_size(eng);
    const size_t crop_bytes = (size_t)FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3;
    float *chw = malloc((n ? n : 1) * per * sizeof *chw);
    if (!chw)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        fw_pre_rgb_to_chw(crops + i * crop_bytes, FW_ALIGNED_SIZE, FW_ALIGNED_SIZE, emb->norm.mean,
                          emb->norm.std, chw + i * per);
    fw_err rc = n ? fw_pipeline_embed_run(eng, chw, n, out, NULL, err) : FW_OK;
    free(chw);
    return rc;
}
