/* The face pipeline: engine lifetime and the decode -> detect -> landmarks -> align ->
 * embed stages (see pipeline.h). */
#include "core/pipeline.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/align.h"
#include "core/landmark.h"
#include "core/pack.h"
#include "core/preprocess.h"
#include "core/quality.h"
#include "util/log.h"

#define DEFAULT_MAX_BATCH 64
#define MAX_DETS_PER_IMAGE 4096

/* Fault handling state of one role (see guarded_run). */
typedef struct role_state {
    fw_model *retired; /* the device session a move to the CPU replaced (freed last) */
    atomic_int moved;  /* 1 once the role runs on the CPU after device faults */
    char from[32];     /* provider before the move; written before moved is set */
    char reason[FW_ERROR_MESSAGE_MAX];
    atomic_int batch_cap; /* largest batch since an out-of-memory error; 0: none */
    _Atomic uint64_t failures, splits, retries;
} role_state;

struct fw_engine {
    fw_pack *pack;
    int max_batch;
    int warmup;
    fw_decode_opts decode;
    char models_dir[1024];
    role_state roles[FW_ROLE__COUNT];
    pthread_mutex_t move_mu; /* serialises moves to the CPU */
};

static const char *const role_names[FW_ROLE__COUNT] = {"detector", "landmarks", "embedder"};

const char *fw_role_name(fw_role role)
{
    return (unsigned)role < FW_ROLE__COUNT ? role_names[role] : "unknown";
}

/* The pack model serving a role. */
static fw_pack_model *role_pm(const fw_engine *eng, fw_role role)
{
    fw_pack *p = eng->pack;
    return role == FW_ROLE_DETECTOR    ? &p->detector
           : role == FW_ROLE_LANDMARKS ? &p->landmarks
                                       : &p->embedder;
}

/* The session serving pm now: a move to the CPU swaps it while other threads run, so it is
 * read atomically (the old one stays alive until the engine is freed). */
static fw_model *active_model(const fw_pack_model *pm)
{
    return __atomic_load_n(&pm->model, __ATOMIC_ACQUIRE);
}

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
    opts->quality = true;
    fw_quality_preset("none", &opts->thresholds);
    opts->quality_action = FW_QUALITY_ANNOTATE;
    opts->crops = FW_CROP_NONE;
    opts->face_margin = 0.2f;
    opts->crop_format = FW_FORMAT_JPEG;
    opts->crop_quality = 95;
}

fw_err fw_analyze_opts_validate(const fw_analyze_opts *o, fw_error *err)
{
    const fw_quality_thresholds *t = &o->thresholds;
    const char *bad = NULL;
    if (!isfinite(o->min_score) || o->min_score > 1)
        bad = "min_score must be <= 1";
    else if (o->max_faces < 0)
        bad = "max_faces must be >= 0";
    else if (!isfinite(o->min_face_size) || o->min_face_size < 0)
        bad = "min_face_size must be >= 0";
    else if (!isfinite(t->min_size) || t->min_size < 0 || !isfinite(t->min_sharpness) ||
             t->min_sharpness < 0)
        bad = "min_size and min_sharpness must be >= 0";
    else if (!(t->max_yaw >= 1 && t->max_yaw <= 90) || !(t->max_pitch >= 1 && t->max_pitch <= 90))
        bad = "max_yaw and max_pitch must be in [1, 90]";
    else if (!(t->min_quality >= 0 && t->min_quality <= 1))
        bad = "min_quality must be in [0, 1]";
    else if (!(o->face_margin >= 0 && o->face_margin <= 2))
        bad = "face_margin must be in [0, 2]";
    else if (o->crop_quality < 1 || o->crop_quality > 100)
        bad = "crop_quality must be in 1..100";
    else if (o->crop_format != FW_FORMAT_JPEG && o->crop_format != FW_FORMAT_PNG)
        bad = "crop_format must be JPEG or PNG";
    else if ((unsigned)o->quality_action > FW_QUALITY_REJECT || (unsigned)o->crops > FW_CROP_BOX)
        bad = "unknown quality_action or crops";
    if (bad)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "options: %s", bad);
    return FW_OK;
}

const char *fw_default_models_dir(void)
{
    const char *env = getenv("FACEWORK_MODELS");
    if (env && *env)
        return env;
    return FW_DEFAULT_MODELS_DIR;
}

/* Index of s in names[0..n) (case-insensitive), the first entry for NULL, -1 if absent. */
static int pick(const char *s, const char *const *names, int n)
{
    if (!s || !*s)
        return 0;
    for (int i = 0; i < n; i++)
        if (!strcasecmp(s, names[i]))
            return i;
    return -1;
}

static fw_err session_opts(const fw_engine_config *cfg, fw_role role, fw_session_opts *so,
                           fw_error *err)
{
    static const char *const arena[] = {"next_power_of_two", "same_as_requested"};
    static const char *const algo[] = {"heuristic", "exhaustive", "default"};
    static const char *const power[] = {"high-performance", "low-power"};
    const char *name = cfg->role_provider[role] ? cfg->role_provider[role] : cfg->provider;
    int p = fw_provider_parse(name ? name : "auto");
    if (p < 0)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "unknown provider '%s' (expected auto, cpu, cuda, tensorrt, dml, "
                            "rocm, migraphx, coreml, openvino or webgpu)",
                            name);
    int a = pick(cfg->gpu_arena_extend, arena, 2);
    if (a < 0)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "unknown GPU arena strategy '%s' (expected next_power_of_two or "
                            "same_as_requested)",
                            cfg->gpu_arena_extend);
    int wb = fw_webgpu_backend_parse(cfg->webgpu_backend);
    if (wb < 0)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "unknown WebGPU backend '%s' (expected default, vulkan or d3d12)",
                            cfg->webgpu_backend);
    int wp = pick(cfg->webgpu_power, power, 2);
    if (wp < 0)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "unknown WebGPU power preference '%s' (expected high-performance or "
                            "low-power)",
                            cfg->webgpu_power);
    int c = pick(cfg->cudnn_conv_algo, algo, 3);
    if (c < 0)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "unknown cuDNN algorithm search '%s' (expected heuristic, exhaustive "
                            "or default)",
                            cfg->cudnn_conv_algo);
    memset(so, 0, sizeof *so);
    so->provider = (fw_provider)p;
    so->threads = cfg->threads;
    so->device_id = cfg->device_id;
    so->gpu_mem_limit = cfg->gpu_mem_limit;
    so->gpu_arena_same_as_requested = a;
    so->conv_algo = (fw_conv_algo)c;
    so->pageable_io = cfg->gpu_pageable_io;
    so->trt_cache_dir = cfg->trt_cache_dir;
    so->trt_fp16 = cfg->trt_fp16;
    so->max_batch = cfg->max_batch > 0 ? cfg->max_batch : DEFAULT_MAX_BATCH;
    so->webgpu_backend = (fw_webgpu_backend)wb;
    so->webgpu_low_power = wp == 1;
    return FW_OK;
}

static fw_err guarded_run(fw_engine *eng, fw_role role, const float *input, const fw_shape *shape,
                          fw_tensor *outs, fw_error *err);

/* Runs each model on zeros so the first request does not pay for lazy initialisation
 * (allocator arenas, kernel selection, cuDNN plans per input shape): at batch 1, and on a GPU
 * (FW_WARMUP_AUTO) or with FW_WARMUP_ALL at every power of two up to max_batch and at
 * max_batch. A device that fails here is found here: the run goes through guarded_run. */
static void warm_up(fw_engine *eng)
{
    if (eng->warmup == FW_WARMUP_NONE)
        return;
    for (int r = 0; r < FW_ROLE__COUNT; r++) {
        if (r == FW_ROLE_LANDMARKS && !eng->pack->has_landmarks)
            continue;
        fw_pack_model *pm = role_pm(eng, (fw_role)r);
        fw_model *m = active_model(pm);
        if (!m)
            continue;
        const fw_model_info *info = fw_model_get_info(m);
        const int all = eng->warmup == FW_WARMUP_ALL ||
                        (eng->warmup == FW_WARMUP_AUTO && fw_model_on_device(m));
        const int top = pm->batch_dynamic && all ? eng->max_batch : 1;
        fw_shape shape = info->inputs[0];
        size_t per = 1;
        for (int i = 1; i < shape.rank; i++) {
            if (shape.dims[i] <= 0)
                shape.dims[i] = i == shape.rank - 1 ? pm->input_w : pm->input_h;
            per *= (size_t)shape.dims[i];
        }
        float *zeros = calloc(per * (size_t)top, sizeof *zeros);
        if (!zeros)
            continue;
        for (int b = 1;; b = b * 2 > top && b < top ? top : b * 2) {
            shape.dims[0] = b;
            fw_tensor outs[FW_MAX_OUTPUTS] = {0};
            fw_error e;
            if (guarded_run(eng, (fw_role)r, zeros, &shape, outs, &e) == FW_OK) {
                for (size_t i = 0; i < info->n_outputs; i++)
                    fw_tensor_clear(&outs[i]);
            } else {
                FW_WARN("engine", "warm-up run failed", "role=%s batch=%d error=\"%s\"",
                        role_names[r], b, e.message);
                break;
            }
            if (b >= top)
                break;
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
    eng->warmup = cfg->warmup;
    eng->decode = cfg->decode;
    pthread_mutex_init(&eng->move_mu, NULL);
    for (int r = 0; r < FW_ROLE__COUNT; r++) {
        atomic_init(&eng->roles[r].moved, 0);
        atomic_init(&eng->roles[r].batch_cap, 0);
        atomic_init(&eng->roles[r].failures, 0);
        atomic_init(&eng->roles[r].splits, 0);
        atomic_init(&eng->roles[r].retries, 0);
    }
    fw_err rc = fw_pack_load(eng->models_dir, &so[FW_ROLE_DETECTOR], &so[FW_ROLE_LANDMARKS],
                             &so[FW_ROLE_EMBEDDER], &eng->pack, err);
    if (rc) {
        pthread_mutex_destroy(&eng->move_mu);
        free(eng);
        return rc;
    }
    warm_up(eng);
    /* Test hook, after the warm-up so that the first requests meet the faults. */
    const char *faults = getenv("FACEWORK_FAULT_INJECT");
    if (faults && *faults) {
        rc = fw__engine_inject_faults(eng, faults, err);
        if (rc) {
            fw_engine_free(eng);
            return rc;
        }
    }
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
    for (int r = 0; r < FW_ROLE__COUNT; r++)
        fw_model_free(eng->roles[r].retired);
    pthread_mutex_destroy(&eng->move_mu);
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
    if ((unsigned)role >= FW_ROLE__COUNT)
        return "none";
    fw_model *m = active_model(role_pm(eng, role));
    return m ? fw_model_provider(m) : "none";
}

void fw_engine_role_status(const fw_engine *eng, fw_role role, fw_role_status *out)
{
    memset(out, 0, sizeof *out);
    out->provider = "none";
    if (!eng || (unsigned)role >= FW_ROLE__COUNT)
        return;
    const role_state *rs = &eng->roles[role];
    fw_model *m = active_model(role_pm(eng, role));
    out->provider = m ? fw_model_provider(m) : "none";
    out->on_device = fw_model_on_device(m);
    out->software_device = fw_model_software_device(m);
    if (atomic_load_explicit(&rs->moved, memory_order_acquire)) {
        out->fell_back = true;
        snprintf(out->fallback_from, sizeof out->fallback_from, "%s", rs->from);
        snprintf(out->fallback_reason, sizeof out->fallback_reason, "%s", rs->reason);
    }
    out->failed_runs = atomic_load(&rs->failures);
    out->split_batches = atomic_load(&rs->splits);
    out->retries = atomic_load(&rs->retries);
    out->batch_cap = atomic_load(&rs->batch_cap);
}

fw_model *fw__engine_model(const fw_engine *eng, fw_role role)
{
    if (!eng || (unsigned)role >= FW_ROLE__COUNT)
        return NULL;
    return active_model(role_pm(eng, role));
}

/* ------------------------------------------------------------------------------------ */
/* fault handling: split and retry, then the CPU                                       */

/* Replaces role's session m (which keeps failing on its device) with a CPU session of the
 * same file, unless another thread did so already. The old session is kept until the
 * engine is freed (runs and host buffers of other threads may still use it). */
static void move_to_cpu(fw_engine *eng, fw_role role, fw_model *m, const char *why)
{
    fw_pack_model *pm = role_pm(eng, role);
    role_state *rs = &eng->roles[role];
    pthread_mutex_lock(&eng->move_mu);
    if (active_model(pm) != m || rs->retired) {
        pthread_mutex_unlock(&eng->move_mu);
        return;
    }
    const fw_session_opts *old = fw_model_session_opts(m);
    fw_session_opts cpu = {.provider = FW_PROVIDER_CPU, .threads = old->threads};
    fw_model *nm = NULL;
    fw_error e;
    const char *path = fw_model_get_info(m)->path;
    if (fw_model_load(path, &cpu, &nm, &e) != FW_OK) {
        FW_ERROR("engine", "cannot move the model to the CPU", "role=%s error=\"%s\"",
                 role_names[role], e.message);
        pthread_mutex_unlock(&eng->move_mu);
        return;
    }
    snprintf(rs->from, sizeof rs->from, "%s", fw_model_provider(m));
    snprintf(rs->reason, sizeof rs->reason, "%s", why);
    rs->retired = m;
    atomic_store(&rs->batch_cap, 0);
    __atomic_store_n(&pm->model, nm, __ATOMIC_RELEASE);
    atomic_store_explicit(&rs->moved, 1, memory_order_release);
    pthread_mutex_unlock(&eng->move_mu);
    FW_ERROR("engine", "model moved to the CPU after device faults",
             "role=%s from=%s path=\"%s\" reason=\"%s\"", role_names[role], rs->from, path, why);
}

/* Appends part (the outputs of c items) to acc (the outputs of acc_items items), checking
 * that every output is batched: its first dimension a whole multiple of the items, the
 * other dimensions the same. part's data moves into acc (part is left cleared). */
static fw_err append_outputs(fw_tensor *acc, fw_tensor *part, size_t n_out, size_t acc_items,
                             size_t c, const fw_model *m, fw_error *err)
{
    const fw_model_info *info = fw_model_get_info(m);
    for (size_t o = 0; o < n_out; o++) {
        fw_tensor *a = &acc[o], *p = &part[o];
        if (p->shape.rank < 1 || p->shape.dims[0] % (int64_t)c != 0)
            return fw_error_set(err, FW_ERR_MODEL,
                                "cannot split a failed batch: output %s of %s has no batch "
                                "dimension",
                                info->output_names[o], info->path);
        if (acc_items == 0) {
            *a = *p;
            memset(p, 0, sizeof *p);
            continue;
        }
        int same = a->shape.rank == p->shape.rank &&
                   a->shape.dims[0] / (int64_t)acc_items == p->shape.dims[0] / (int64_t)c;
        for (int d = 1; same && d < p->shape.rank; d++)
            same = a->shape.dims[d] == p->shape.dims[d];
        if (!same)
            return fw_error_set(err, FW_ERR_MODEL,
                                "cannot split a failed batch: output %s of %s changes shape with "
                                "the batch",
                                info->output_names[o], info->path);
        if (p->count) {
            float *grown = realloc(a->data, (a->count + p->count) * sizeof(float));
            if (!grown)
                return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
            memcpy(grown + a->count, p->data, p->count * sizeof(float));
            a->data = grown;
        }
        a->count += p->count;
        a->shape.dims[0] += p->shape.dims[0];
        fw_tensor_clear(p);
    }
    return FW_OK;
}

static fw_err guarded(fw_engine *eng, fw_role role, const float *input, const fw_shape *shape,
                      fw_tensor *outs, fw_error *err, int depth);

/* Runs the batch in pieces of at most `piece` items, each through guarded(), and joins the
 * outputs along the batch dimension into outs. */
static fw_err run_pieces(fw_engine *eng, fw_role role, const float *input, const fw_shape *shape,
                         size_t piece, fw_tensor *outs, fw_error *err, int depth)
{
    const fw_model *m = active_model(role_pm(eng, role));
    const size_t n_out = fw_model_get_info(m)->n_outputs;
    const size_t n = (size_t)shape->dims[0];
    size_t per = 1;
    for (int i = 1; i < shape->rank; i++)
        per *= (size_t)shape->dims[i];
    fw_tensor acc[FW_MAX_OUTPUTS] = {0};
    fw_err rc = FW_OK;
    size_t done = 0;
    while (done < n && rc == FW_OK) {
        size_t c = n - done < piece ? n - done : piece;
        fw_shape s = *shape;
        s.dims[0] = (int64_t)c;
        fw_tensor part[FW_MAX_OUTPUTS] = {0};
        rc = guarded(eng, role, input + done * per, &s, part, err, depth + 1);
        if (rc == FW_OK)
            rc = append_outputs(acc, part, n_out, done, c, m, err);
        for (size_t o = 0; o < n_out; o++)
            fw_tensor_clear(&part[o]);
        done += c;
    }
    for (size_t o = 0; o < n_out; o++) {
        if (rc)
            fw_tensor_clear(&acc[o]);
        outs[o] = acc[o];
    }
    return rc;
}

/* Lowers role's batch cap to `size` (never raises it). */
static void lower_cap(fw_engine *eng, fw_role role, int size)
{
    atomic_int *cap = &eng->roles[role].batch_cap;
    int cur = atomic_load(cap);
    while ((cur == 0 || size < cur) && !atomic_compare_exchange_weak(cap, &cur, size))
        ;
    if (cur == 0 || size < cur)
        FW_WARN("engine", "batch capped after out of memory", "role=%s max_batch=%d",
                role_names[role], size);
}

/* One model run with recovery. A run that fails inside ONNX Runtime (a CUDA error, out of
 * memory, ...) is retried on halves of the batch, recursively; the outputs are joined
 * (every output must carry the batch, else the run fails: never a wrong answer). When the
 * device ran out of memory and the halves worked, later batches of this role are capped to
 * that size. A single item that fails twice on a device moves the role to the CPU
 * (move_to_cpu), where it then runs. Errors of our own (shapes, allocation) are returned
 * at once. */
static fw_err guarded(fw_engine *eng, fw_role role, const float *input, const fw_shape *shape,
                      fw_tensor *outs, fw_error *err, int depth)
{
    fw_pack_model *pm = role_pm(eng, role);
    role_state *rs = &eng->roles[role];
    fw_model *m = active_model(pm);
    const int64_t n = shape->dims[0];
    const int cap = atomic_load(&rs->batch_cap);
    if (pm->batch_dynamic && cap > 0 && n > cap && depth < 64)
        return run_pieces(eng, role, input, shape, (size_t)cap, outs, err, depth);
    fw_error e;
    fw_err rc = fw_model_run(m, input, shape, outs, &e);
    if (rc == FW_OK)
        return FW_OK;
    if (rc != FW_ERR_INFERENCE || depth >= 64) {
        if (err)
            *err = e;
        return rc;
    }
    atomic_fetch_add(&rs->failures, 1);
    const int oom = fw_ort_is_oom_message(e.message);
    FW_WARN("engine", "model run failed", "role=%s provider=%s batch=%lld error=\"%s\"",
            role_names[role], fw_model_provider(m), (long long)n, e.message);
    if (n > 1 && pm->batch_dynamic) {
        atomic_fetch_add(&rs->splits, 1);
        size_t half = (size_t)(n + 1) / 2;
        rc = run_pieces(eng, role, input, shape, half, outs, err, depth);
        if (rc == FW_OK && oom && fw_model_on_device(m) && active_model(pm) == m)
            lower_cap(eng, role, (int)half);
        return rc;
    }
    if (active_model(pm) != m) /* moved meanwhile: run on the new session */
        return guarded(eng, role, input, shape, outs, err, depth + 1);
    atomic_fetch_add(&rs->retries, 1);
    rc = fw_model_run(m, input, shape, outs, &e);
    if (rc == FW_OK)
        return FW_OK;
    if (rc == FW_ERR_INFERENCE)
        atomic_fetch_add(&rs->failures, 1);
    if (rc != FW_ERR_INFERENCE || !fw_model_on_device(m)) {
        if (err)
            *err = e;
        return rc;
    }
    move_to_cpu(eng, role, m, e.message);
    if (active_model(pm) == m) {
        if (err)
            *err = e;
        return rc;
    }
    return guarded(eng, role, input, shape, outs, err, depth + 1);
}

static fw_err guarded_run(fw_engine *eng, fw_role role, const float *input, const fw_shape *shape,
                          fw_tensor *outs, fw_error *err)
{
    return guarded(eng, role, input, shape, outs, err, 0);
}

/* Parses one "ROLE:opt,opt" clause of a FACEWORK_FAULT_INJECT spec. */
static fw_err parse_fault_clause(const char *clause, size_t len, fw_fault_spec *specs, int *present,
                                 fw_error *err)
{
    const char *colon = memchr(clause, ':', len);
    size_t rlen = colon ? (size_t)(colon - clause) : len;
    int roles[FW_ROLE__COUNT] = {0};
    if (rlen == 3 && !strncmp(clause, "all", 3)) {
        for (int r = 0; r < FW_ROLE__COUNT; r++)
            roles[r] = 1;
    } else {
        int found = 0;
        for (int r = 0; r < FW_ROLE__COUNT; r++)
            if (strlen(role_names[r]) == rlen && !strncmp(clause, role_names[r], rlen))
                roles[r] = found = 1;
        if (!found)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "fault spec: unknown role '%.*s' (detector, landmarks, embedder "
                                "or all)",
                                (int)rlen, clause);
    }
    fw_fault_spec f = {0};
    const char *p = colon ? colon + 1 : clause + len, *end = clause + len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t olen = comma ? (size_t)(comma - p) : (size_t)(end - p);
        char opt[64];
        if (olen == 0 || olen >= sizeof opt)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fault spec: bad option in '%.*s'",
                                (int)len, clause);
        memcpy(opt, p, olen);
        opt[olen] = '\0';
        char *eq = strchr(opt, '=');
        long v = 0;
        if (eq) {
            char *stop;
            *eq = '\0';
            v = strtol(eq + 1, &stop, 10);
            if (*stop || stop == eq + 1 || v < 0 || v > INT_MAX)
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fault spec: '%s' needs a count",
                                    opt);
        }
        if (!strcmp(opt, "device") && !eq)
            f.device = 1;
        else if (!strcmp(opt, "always") && !eq)
            f.fail_always = 1;
        else if (!strcmp(opt, "oom") && !eq)
            f.oom = 1;
        else if (!strcmp(opt, "above") && eq)
            f.fail_above = (int)v;
        else if (!strcmp(opt, "first") && eq)
            f.fail_first = (int)v;
        else
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "fault spec: unknown option '%s' (device, always, oom, above=N, "
                                "first=N)",
                                opt);
        p += olen + (comma ? 1 : 0);
    }
    for (int r = 0; r < FW_ROLE__COUNT; r++)
        if (roles[r]) {
            specs[r] = f;
            present[r] = 1;
        }
    return FW_OK;
}

fw_err fw__fault_parse(const char *text, fw_fault_spec specs[FW_ROLE__COUNT],
                       int present[FW_ROLE__COUNT], fw_error *err)
{
    memset(specs, 0, FW_ROLE__COUNT * sizeof *specs);
    memset(present, 0, FW_ROLE__COUNT * sizeof *present);
    if (!text)
        return FW_OK;
    const char *p = text;
    while (*p) {
        const char *semi = strchr(p, ';');
        size_t len = semi ? (size_t)(semi - p) : strlen(p);
        if (len) {
            fw_err rc = parse_fault_clause(p, len, specs, present, err);
            if (rc)
                return rc;
        }
        p += len + (semi ? 1 : 0);
    }
    return FW_OK;
}

fw_err fw__engine_inject_faults(fw_engine *eng, const char *spec, fw_error *err)
{
    fw_fault_spec specs[FW_ROLE__COUNT];
    int present[FW_ROLE__COUNT];
    fw_err rc = fw__fault_parse(spec, specs, present, err);
    if (rc)
        return rc;
    for (int r = 0; r < FW_ROLE__COUNT; r++) {
        fw_model *m = active_model(role_pm(eng, (fw_role)r));
        if (!present[r] || !m)
            continue;
        fw__model_set_faults(m, &specs[r]);
        FW_WARN("engine", "fault injection active (test hook)",
                "role=%s device=%d always=%d first=%d above=%d oom=%d", role_names[r],
                specs[r].device, specs[r].fail_always, specs[r].fail_first, specs[r].fail_above,
                specs[r].oom);
    }
    return FW_OK;
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

/* Frees the per-face quality, aligned crops and encoded crops of it. */
static void item_clear_faces(fw_item *it)
{
    if (it->crops)
        for (size_t k = 0; k < it->n_dets; k++)
            free(it->crops[k].data);
    free(it->crops);
    free(it->quality);
    free(it->aligned);
    it->crops = NULL;
    it->quality = NULL;
    it->aligned = NULL;
}

void fw_item_clear(fw_item *it)
{
    if (!it)
        return;
    item_clear_faces(it);
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
    const fw_model_info *info = fw_model_get_info(active_model(pm));
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
        /* a quality filter picks its max_faces among the usable faces (fw_pipeline_quality) */
        if (opts->max_faces > 0 && (int)k >= opts->max_faces &&
            opts->quality_action == FW_QUALITY_ANNOTATE)
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
    fw_model *hm = active_model(det); /* owner of the (pinned) input buffer */
    float *input = fw_model_host_alloc(hm, n * per * sizeof *input);
    float *scales = malloc(n * sizeof *scales);
    if (!input || !scales) {
        fw_model_host_free(hm, input);
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
    fw_err rc = guarded_run(eng, FW_ROLE_DETECTOR, input, &shape, outs, err);
    STAGE_ADD(st, inference_ns, t0);
    COUNT_ADD(st, detector_runs, 1);
    fw_model_host_free(hm, input);
    const size_t n_outs = fw_model_get_info(active_model(det))->n_outputs;
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
    fw_model *hm = active_model(lm); /* owner of the (pinned) input buffer */
    float *input = fw_model_host_alloc(hm, chunk * per * sizeof *input);
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
        rc = guarded_run(eng, FW_ROLE_LANDMARKS, input, &shape, out, err);
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
    fw_model_host_free(hm, input);
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

/* The image to align it's faces from: the detection image, or a finer re-decode of the
 * JPEG (*sharper, owned by the caller) when the detection image holds a face at under the
 * template's size and the original has more pixels. */
static const fw_image *align_source(fw_engine *eng, const fw_item *it, fw_image **sharper,
                                    fw_stage_times *st)
{
    const fw_image *img = det_image(it);
    *sharper = NULL;
    double have = (double)img->width / (double)it->orig_w;
    double need = needed_scale(it);
    if (it->data && need > have + 1e-6) {
        uint64_t t0 = now_ns();
        fw_decode_opts opts = eng->decode;
        opts.min_width = (int)ceil(need * it->orig_w);
        opts.min_height = (int)ceil(need * it->orig_h);
        fw_error e;
        if (fw_image_decode(it->data, it->len, &opts, sharper, &e) == FW_OK)
            img = *sharper;
        STAGE_ADD(st, decode_ns, t0);
    }
    return img;
}

/* Warps face k of it (landmarks in original pixels) out of img into a 112x112 crop. */
static void align_det(const fw_image *img, const fw_item *it, size_t k, uint8_t *crop)
{
    float sx = (float)img->width / (float)it->orig_w, sy = (float)img->height / (float)it->orig_h;
    float lm[5][2];
    for (int p = 0; p < 5; p++) {
        lm[p][0] = it->dets[k].kps[p][0] * sx;
        lm[p][1] = it->dets[k].kps[p][1] * sy;
    }
    fw_align_face(img, lm, crop);
}

#define ALIGNED_BYTES ((size_t)FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3)

fw_err fw_pipeline_embed_prepare(fw_engine *eng, fw_item *it, float *chw, fw_stage_times *st,
                                 fw_error *err)
{
    if (it->status != FW_OK || it->n_dets == 0)
        return FW_OK;
    const fw_pack_model *emb = &eng->pack->embedder;
    const size_t per = fw_pipeline_embed_input_size(eng);
    if (it->aligned && emb->input_w == FW_ALIGNED_SIZE && emb->input_h == FW_ALIGNED_SIZE) {
        /* fw_pipeline_quality aligned them already, from the same source image */
        uint64_t t0 = now_ns();
        for (size_t k = 0; k < it->n_dets; k++)
            fw_pre_rgb_to_chw(it->aligned + k * ALIGNED_BYTES, emb->input_w, emb->input_h,
                              emb->norm.mean, emb->norm.std, chw + k * per);
        STAGE_ADD(st, preprocess_ns, t0);
        return FW_OK;
    }
    fw_image *sharper = NULL;
    const fw_image *img = align_source(eng, it, &sharper, st);
    uint64_t t0 = now_ns();
    uint8_t *crop = malloc((size_t)emb->input_w * emb->input_h * 3);
    if (!crop) {
        fw_image_free(sharper);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    for (size_t k = 0; k < it->n_dets; k++) {
        align_det(img, it, k, crop);
        fw_pre_rgb_to_chw(crop, emb->input_w, emb->input_h, emb->norm.mean, emb->norm.std,
                          chw + k * per);
    }
    free(crop);
    fw_image_free(sharper);
    STAGE_ADD(st, preprocess_ns, t0);
    return FW_OK;
}

/* ------------------------------------------------------------------------------------ */
/* quality and crops                                                                    */

/* Box crops larger than this on their longer side are scaled down (area average). */
#define CROP_MAX_SIDE 1024

bool fw_pipeline_wants_quality(const fw_analyze_opts *opts)
{
    return opts->quality || opts->quality_action != FW_QUALITY_ANNOTATE ||
           opts->crops != FW_CROP_NONE;
}

/* The region of face d (original pixels) grown by margin, on img. */
static int box_region(const fw_image *img, const fw_item *it, const fw_det *d, float margin,
                      int r[4])
{
    float sx = (float)img->width / (float)it->orig_w, sy = (float)img->height / (float)it->orig_h;
    const float b[4] = {d->box[0] * sx, d->box[1] * sy, d->box[2] * sx, d->box[3] * sy};
    return fw_crop_region(b, margin, img->width, img->height, r);
}

static void measure_face(const fw_image *img, const fw_item *it, size_t k,
                         const fw_analyze_opts *opts, fw_face_quality *q)
{
    const fw_det *d = &it->dets[k];
    float w = d->box[2] - d->box[0], h = d->box[3] - d->box[1];
    q->size = w < h ? w : h;
    fw_pose_estimate((const float(*)[2])d->kps, &q->yaw, &q->pitch, &q->roll);
    q->sharpness_aligned =
        (float)fw_sharpness_rgb(it->aligned + k * ALIGNED_BYTES, (size_t)FW_ALIGNED_SIZE * 3, 0, 0,
                                FW_ALIGNED_SIZE, FW_ALIGNED_SIZE);
    int r[4];
    q->sharpness_box = 0.0f;
    if (box_region(img, it, d, opts->face_margin, r) == 0)
        q->sharpness_box = (float)fw_sharpness_rgb(img->pixels, (size_t)img->width * 3, r[0], r[1],
                                                   r[2] - r[0], r[3] - r[1]);
    fw_quality_judge(q, &opts->thresholds);
}

/* Keeps the usable faces of it (at most max_faces), moving their per-face data along. */
static void keep_usable(fw_item *it, int max_faces)
{
    size_t keep = 0;
    for (size_t k = 0; k < it->n_dets; k++) {
        if (!it->quality[k].usable)
            continue;
        if (max_faces > 0 && keep >= (size_t)max_faces)
            break;
        if (keep != k) {
            it->dets[keep] = it->dets[k];
            it->quality[keep] = it->quality[k];
            if (it->aligned)
                memcpy(it->aligned + keep * ALIGNED_BYTES, it->aligned + k * ALIGNED_BYTES,
                       ALIGNED_BYTES);
        }
        keep++;
    }
    it->n_dets = keep;
}

static fw_err encode_crop(const fw_image *img, const fw_item *it, size_t k,
                          const fw_analyze_opts *opts, fw_item_crop *out, fw_error *err)
{
    out->format = opts->crop_format;
    if (opts->crops == FW_CROP_ALIGNED) {
        out->width = out->height = FW_ALIGNED_SIZE;
        return fw_encode_rgb(it->aligned + k * ALIGNED_BYTES, (size_t)FW_ALIGNED_SIZE * 3,
                             FW_ALIGNED_SIZE, FW_ALIGNED_SIZE, opts->crop_format,
                             opts->crop_quality, &out->data, &out->len, err);
    }
    int r[4];
    if (box_region(img, it, &it->dets[k], opts->face_margin, r) != 0)
        return fw_error_set(err, FW_ERR_INTERNAL, "face %zu has an empty box", k);
    int w = r[2] - r[0], h = r[3] - r[1];
    const size_t stride = (size_t)img->width * 3;
    const uint8_t *src = img->pixels + (size_t)r[1] * stride + (size_t)r[0] * 3;
    int longer = w > h ? w : h;
    if (longer <= CROP_MAX_SIDE) {
        out->width = w;
        out->height = h;
        return fw_encode_rgb(src, stride, w, h, opts->crop_format, opts->crop_quality, &out->data,
                             &out->len, err);
    }
    int dw = (int)((int64_t)w * CROP_MAX_SIDE / longer),
        dh = (int)((int64_t)h * CROP_MAX_SIDE / longer);
    dw = dw < 1 ? 1 : dw;
    dh = dh < 1 ? 1 : dh;
    uint8_t *small = malloc((size_t)dw * dh * 3);
    if (!small)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    fw_resize_area(src, stride, w, h, small, dw, dh);
    out->width = dw;
    out->height = dh;
    fw_err rc = fw_encode_rgb(small, (size_t)dw * 3, dw, dh, opts->crop_format, opts->crop_quality,
                              &out->data, &out->len, err);
    free(small);
    return rc;
}

fw_err fw_pipeline_quality(fw_engine *eng, fw_item *it, const fw_analyze_opts *opts,
                           fw_stage_times *st)
{
    if (it->quality_done || it->status != FW_OK || !fw_pipeline_wants_quality(opts))
        return it->status;
    it->quality_done = true;
    const bool judge = opts->quality || opts->quality_action != FW_QUALITY_ANNOTATE;
    if (it->n_dets == 0) {
        if (opts->quality_action == FW_QUALITY_REJECT)
            item_fail(it, FW_ERR_UNUSABLE_FACE, "no usable face: no face was found");
        return it->status;
    }
    fw_image *sharper = NULL;
    const fw_image *img = align_source(eng, it, &sharper, st);
    uint64_t t0 = now_ns();
    const size_t n = it->n_dets;
    const bool aligned = judge || opts->crops == FW_CROP_ALIGNED;
    it->quality = calloc(n, sizeof *it->quality);
    it->aligned = aligned ? malloc(n * ALIGNED_BYTES) : NULL;
    if (!it->quality || (aligned && !it->aligned)) {
        fw_image_free(sharper);
        item_clear_faces(it);
        return item_fail(it, FW_ERR_NOMEM, "out of memory");
    }
    for (size_t k = 0; k < n; k++) {
        if (aligned)
            align_det(img, it, k, it->aligned + k * ALIGNED_BYTES);
        if (judge)
            measure_face(img, it, k, opts, &it->quality[k]);
    }
    if (opts->quality_action != FW_QUALITY_ANNOTATE) {
        fw_face_quality best = it->quality[0]; /* the detector's most confident face */
        keep_usable(it, opts->max_faces);
        if (it->n_dets == 0 && opts->quality_action == FW_QUALITY_REJECT) {
            char why[FW_ERROR_MESSAGE_MAX - 64];
            fw_quality_explain(&best, &opts->thresholds, why, sizeof why);
            char msg[FW_ERROR_MESSAGE_MAX];
            snprintf(msg, sizeof msg, "no usable face: %zu found, the best fails %s", n, why);
            item_fail(it, FW_ERR_UNUSABLE_FACE, msg);
        }
    }
    STAGE_ADD(st, quality_ns, t0);
    if (opts->crops != FW_CROP_NONE && it->status == FW_OK && it->n_dets) {
        t0 = now_ns();
        it->crops = calloc(it->n_dets, sizeof *it->crops);
        fw_error e;
        fw_error_clear(&e);
        fw_err rc = it->crops ? FW_OK : fw_error_set(&e, FW_ERR_NOMEM, "out of memory");
        for (size_t k = 0; rc == FW_OK && k < it->n_dets; k++)
            rc = encode_crop(img, it, k, opts, &it->crops[k], &e);
        STAGE_ADD(st, crop_ns, t0);
        if (rc)
            item_fail(it, rc, e.message);
    }
    fw_image_free(sharper);
    return it->status;
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
        fw_err rc = guarded_run(eng, FW_ROLE_EMBEDDER, chw + i * per, &shape, outs, err);
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
    size_t crop_bytes = 0;
    for (size_t k = 0; it->crops && k < it->n_dets; k++)
        crop_bytes += it->crops[k].len;
    bytes += crop_bytes;
    res->faces = malloc(bytes);
    if (!res->faces) {
        res->status = FW_ERR_NOMEM;
        snprintf(res->message, sizeof res->message, "out of memory");
        return FW_ERR_NOMEM;
    }
    float *emb_block = (float *)(void *)(res->faces + it->n_dets);
    uint8_t *crop_block = (uint8_t *)(emb_block + (embeddings ? it->n_dets * dim : 0));
    for (size_t k = 0; k < it->n_dets; k++) {
        fw_face *f = &res->faces[k];
        const fw_det *d = &it->dets[k];
        memset(f, 0, sizeof *f);
        memcpy(f->bbox, d->box, sizeof f->bbox);
        f->score = d->score;
        memcpy(f->landmarks, d->kps, sizeof f->landmarks);
        if (embeddings) {
            f->embedding = emb_block + k * dim;
            memcpy(f->embedding, embeddings + k * dim, dim * sizeof(float));
        }
        if (it->quality && it->quality_done) {
            f->has_quality = true;
            f->quality = it->quality[k];
        }
        if (it->crops && it->crops[k].data) {
            memcpy(crop_block, it->crops[k].data, it->crops[k].len);
            f->crop.format = it->crops[k].format;
            f->crop.width = it->crops[k].width;
            f->crop.height = it->crops[k].height;
            f->crop.data = crop_block;
            f->crop.len = it->crops[k].len;
            crop_block += it->crops[k].len;
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
    fw_err rc = fw_analyze_opts_validate(opts, err);
    if (rc) {
        for (size_t i = 0; i < n; i++) {
            fw_item_clear(&items[i]);
            memset(&results[i], 0, sizeof results[i]);
        }
        return rc;
    }
    fw_item **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    float *chw = NULL, *emb = NULL;
    fw_model *ehm = active_model(&eng->pack->embedder); /* owner of chw (pinned) */
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
    for (size_t i = 0; i < n; i++)
        fw_pipeline_quality(eng, &items[i], opts, st); /* item errors stay in the item */
    size_t faces = 0;
    if (opts->embed)
        for (size_t i = 0; i < n; i++)
            faces += items[i].status == FW_OK ? items[i].n_dets : 0;
    const size_t per = fw_pipeline_embed_input_size(eng);
    const size_t dim = eng->pack->embedding_dim;
    if (faces) {
        chw = fw_model_host_alloc(ehm, faces * per * sizeof *chw);
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
    fw_model_host_free(ehm, chw);
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
    fw_model *hm = active_model(emb); /* owner of chw (pinned) */
    float *chw = fw_model_host_alloc(hm, (n ? n : 1) * per * sizeof *chw);
    if (!chw)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        fw_pre_rgb_to_chw(crops + i * crop_bytes, FW_ALIGNED_SIZE, FW_ALIGNED_SIZE, emb->norm.mean,
                          emb->norm.std, chw + i * per);
    fw_err rc = n ? fw_pipeline_embed_run(eng, chw, n, out, NULL, err) : FW_OK;
    fw_model_host_free(hm, chw);
    return rc;
}
