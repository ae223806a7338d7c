/* facework worker: the inference service on port 8765 (DESIGN.md "Worker internals"). */
#include "server/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/pipeline.h"
#include "server/api.h"
#include "server/batcher.h"
#include "server/gpuinfo.h"
#include "server/http.h"
#include "server/queue.h"
#include "server/sdnotify.h"
#include "util/config.h"
#include "util/lockfile.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/procstat.h"
#include "util/redis.h"
#include "util/signals.h"
#include "util/supervise.h"

enum { STATE_LOADING = 0, STATE_READY, STATE_DRAINING };

/* ------------------------------------------------------------------------------------ */
/* options                                                                              */

typedef struct worker_opts {
    fw_str_list listen;
    char *models, *provider, *detection_provider, *embedding_provider;
    int threads, device_id, http_threads, decode_threads, max_batch, max_batch_faces;
    int detect_threads, embed_threads, max_decoded_mb;
    /* GPU (docs/gpu.md) */
    char *detection_gpu, *embedding_gpu, *gpu_arena_extend, *cudnn_conv_algo, *trt_cache, *warmup;
    char *webgpu_backend, *webgpu_power;
    size_t gpu_mem_limit;
    bool gpu_pinned_io, trt_fp16;
    double max_queue_delay;
    int max_queue;
    size_t max_body, max_image_bytes;
    int max_images, max_pixels, max_connections;
    double request_timeout, read_timeout, drain_timeout;
    char *api_key, *api_key_file, *worker_id, *lock_file, *port_file, *log_format, *log_level;
    bool supervise;
    int max_restarts;
    /* queue mode (server/queue.h) */
    char *queue, *queue_group, *queue_consumer, *queue_results, *queue_dead, *queue_files;
    int queue_prefetch, queue_max_deliveries;
    double queue_claim_idle, queue_result_ttl;
} worker_opts;

#define OPT(n, e, t, d, h, f)                                                                      \
    {                                                                                              \
        .name = n, .env = e, .type = t, .def = d, .help = h, .dest = f                             \
    }

/* GPU placement and CUDA/TensorRT settings (docs/gpu.md); returns how many it wrote. */
static size_t gpu_options(worker_opts *o, fw_option *t)
{
    size_t n = 0;
    t[n++] = (fw_option)OPT("detection-gpu", "FACE_DETECTION_GPU", FW_OPT_STRING, NULL,
                            "true: detector and landmarks on the GPU provider (--provider, or "
                            "auto); false: on the CPU (unset: --provider; "
                            "--detection-provider wins)",
                            &o->detection_gpu);
    t[n++] = (fw_option)OPT("embedding-gpu", "FACE_EMBEDDING_GPU", FW_OPT_STRING, NULL,
                            "true: embedder on the GPU provider; false: on the CPU (unset: "
                            "--provider; --embedding-provider wins)",
                            &o->embedding_gpu);
    t[n] = (fw_option)OPT("gpu-mem-limit", "FACEWORK_GPU_MEM_LIMIT", FW_OPT_SIZE, "0",
                          "CUDA arena limit per model session (0: none)", &o->gpu_mem_limit);
    t[n].min = 0, t[n++].max = 1e15;
    t[n++] = (fw_option)OPT(
        "gpu-arena-extend", "FACEWORK_GPU_ARENA_EXTEND", FW_OPT_STRING, "next_power_of_two",
        "CUDA arena growth: next_power_of_two or same_as_requested", &o->gpu_arena_extend);
    t[n++] =
        (fw_option)OPT("cudnn-conv-algo", "FACEWORK_CUDNN_CONV_ALGO", FW_OPT_STRING, "heuristic",
                       "cuDNN convolution algorithm search: heuristic, exhaustive or default",
                       &o->cudnn_conv_algo);
    t[n++] = (fw_option)OPT("gpu-pinned-io", "FACEWORK_GPU_PINNED_IO", FW_OPT_BOOL, "true",
                            "pinned host buffers and outputs bound to pinned memory on CUDA",
                            &o->gpu_pinned_io);
    t[n++] = (fw_option)OPT("trt-cache", "FACEWORK_TRT_CACHE", FW_OPT_STRING, NULL,
                            "TensorRT engine cache directory (default ~/.cache/facework/trt)",
                            &o->trt_cache);
    t[n++] = (fw_option)OPT("trt-fp16", "FACEWORK_TRT_FP16", FW_OPT_BOOL, "false",
                            "let TensorRT use FP16 kernels", &o->trt_fp16);
    t[n++] = (fw_option)OPT("webgpu-backend", "FACEWORK_WEBGPU_BACKEND", FW_OPT_STRING, "default",
                            "graphics API of the WebGPU provider: default (the platform's: "
                            "Vulkan on Linux), vulkan or d3d12",
                            &o->webgpu_backend);
    t[n++] =
        (fw_option)OPT("webgpu-power", "FACEWORK_WEBGPU_POWER", FW_OPT_STRING, "high-performance",
                       "which adapter the WebGPU provider picks: high-performance "
                       "(discrete first) or low-power (integrated first)",
                       &o->webgpu_power);
    t[n++] = (fw_option)OPT("warmup", "FACEWORK_WARMUP", FW_OPT_STRING, "auto",
                            "model warm-up at load: auto (GPU: every power of two up to the "
                            "largest batch; CPU: batch 1), all, one or none",
                            &o->warmup);
    return n;
}

/* Queue mode (server/queue.h); returns how many it wrote. */
static size_t queue_options(worker_opts *o, fw_option *t)
{
    size_t n = 0;
    t[n++] = (fw_option)OPT("queue", "FACEWORK_QUEUE", FW_OPT_STRING, NULL,
                            "also consume jobs from this Redis stream: redis://HOST:PORT/STREAM",
                            &o->queue);
    t[n - 1].flags = FW_OPT_SECRET; /* the URL may hold a password */
    t[n++] = (fw_option)OPT("queue-group", "FACEWORK_QUEUE_GROUP", FW_OPT_STRING, "facework",
                            "consumer group of the job stream", &o->queue_group);
    t[n++] =
        (fw_option)OPT("queue-consumer", "FACEWORK_QUEUE_CONSUMER", FW_OPT_STRING, NULL,
                       "this worker's consumer name (default: the worker id)", &o->queue_consumer);
    t[n++] = (fw_option)OPT("queue-results", "FACEWORK_QUEUE_RESULTS", FW_OPT_STRING, NULL,
                            "results stream for jobs without reply_to (default STREAM:results)",
                            &o->queue_results);
    t[n++] = (fw_option)OPT("queue-dead", "FACEWORK_QUEUE_DEAD", FW_OPT_STRING, NULL,
                            "dead-letter stream (default STREAM:dead)", &o->queue_dead);
    t[n++] = (fw_option)OPT("queue-files", "FACEWORK_QUEUE_FILES", FW_OPT_STRING, NULL,
                            "jobs may name image files (\"path\") under this directory "
                            "(default: inline base64 only)",
                            &o->queue_files);
    t[n] = (fw_option)OPT("queue-prefetch", "FACEWORK_QUEUE_PREFETCH", FW_OPT_INT, "0",
                          "jobs read and not yet answered, at most (0: 2 x --max-batch)",
                          &o->queue_prefetch);
    t[n].min = 0, t[n++].max = 100000;
    t[n] = (fw_option)OPT("queue-claim-idle", "FACEWORK_QUEUE_CLAIM_IDLE", FW_OPT_DURATION, "60s",
                          "reclaim entries another consumer left pending this long",
                          &o->queue_claim_idle);
    t[n].min = 0.01, t[n++].max = 86400;
    t[n] = (fw_option)OPT("queue-max-deliveries", "FACEWORK_QUEUE_MAX_DELIVERIES", FW_OPT_INT, "5",
                          "an entry delivered more often goes to the dead-letter stream",
                          &o->queue_max_deliveries);
    t[n].min = 1, t[n++].max = 1000000;
    t[n] = (fw_option)OPT("queue-result-ttl", "FACEWORK_QUEUE_RESULT_TTL", FW_OPT_DURATION, "24h",
                          "life of result keys (idempotency by job id) and reply lists",
                          &o->queue_result_ttl);
    t[n].min = 1, t[n++].max = 365 * 86400.0;
    return n;
}

static size_t build_options(worker_opts *o, fw_option *t)
{
    size_t n = 0;
    t[n++] = (fw_option)OPT("listen", "FACEWORK_LISTEN", FW_OPT_LIST, "127.0.0.1:8765",
                            "address to listen on, HOST:PORT (repeatable; port 0 = any free)",
                            &o->listen);
    t[n++] = (fw_option)OPT("models", "FACEWORK_MODELS", FW_OPT_STRING, NULL,
                            "model pack directory (default: the pack setup installed)", &o->models);
    t[n++] = (fw_option)OPT("provider", "FACEWORK_PROVIDER", FW_OPT_STRING, "auto",
                            "execution provider: auto|cpu|cuda|tensorrt|dml|rocm|migraphx|"
                            "coreml|openvino|webgpu (auto: never a software WebGPU device)",
                            &o->provider);
    t[n++] = (fw_option)OPT("detection-provider", "FACEWORK_DETECTION_PROVIDER", FW_OPT_STRING,
                            NULL, "provider for the detector and landmarks (default: --provider)",
                            &o->detection_provider);
    t[n++] =
        (fw_option)OPT("embedding-provider", "FACEWORK_EMBEDDING_PROVIDER", FW_OPT_STRING, NULL,
                       "provider for the embedder (default: --provider)", &o->embedding_provider);
    n += gpu_options(o, t + n);
    t[n] = (fw_option)OPT("threads", "FACEWORK_THREADS", FW_OPT_INT, "0",
                          "ONNX Runtime intra-op threads per model (0: ORT default)", &o->threads);
    t[n].min = 0, t[n++].max = 256;
    t[n] = (fw_option)OPT("device-id", "FACEWORK_DEVICE_ID", FW_OPT_INT, "0",
                          "GPU ordinal for CUDA/TensorRT/ROCm/DirectML (WebGPU: 0; it picks "
                          "its adapter by --webgpu-power)",
                          &o->device_id);
    t[n].min = 0, t[n++].max = 64;
    t[n] = (fw_option)OPT("http-threads", "FACEWORK_HTTP_THREADS", FW_OPT_INT, "1",
                          "HTTP event-loop threads", &o->http_threads);
    t[n].min = 1, t[n++].max = 64;
    t[n] = (fw_option)OPT("decode-threads", "FACEWORK_DECODE_THREADS", FW_OPT_INT, "2",
                          "CPU pool for decoding and alignment", &o->decode_threads);
    t[n].min = 1, t[n++].max = 256;
    t[n] = (fw_option)OPT("detect-threads", "FACEWORK_DETECT_THREADS", FW_OPT_INT, "0",
                          "detector threads, each running its own batches (0: automatic: 1, on a "
                          "GPU 2)",
                          &o->detect_threads);
    t[n].min = 0, t[n++].max = 64;
    t[n] = (fw_option)OPT("embed-threads", "FACEWORK_EMBED_THREADS", FW_OPT_INT, "0",
                          "embedder threads (0: automatic: on the CPU provider cores / --threads, "
                          "at most 16; on a GPU 2)",
                          &o->embed_threads);
    t[n].min = 0, t[n++].max = 64;
    t[n] = (fw_option)OPT("max-decoded-mb", "FACEWORK_MAX_DECODED_MB", FW_OPT_INT, "0",
                          "decoded images held at once, MiB; beyond it decoding waits (0: "
                          "automatic: two detector batches of 8 MiB images, at least 64)",
                          &o->max_decoded_mb);
    t[n].min = 0, t[n++].max = 1048576;
    t[n] = (fw_option)OPT("max-batch", "FACEWORK_MAX_BATCH", FW_OPT_INT, "16",
                          "largest detector batch (images)", &o->max_batch);
    t[n].min = 1, t[n++].max = 256;
    t[n] = (fw_option)OPT("max-batch-faces", "FACEWORK_MAX_BATCH_FACES", FW_OPT_INT, "32",
                          "largest embedder batch (faces; unless set, 8 when the embedder runs "
                          "on the CPU)",
                          &o->max_batch_faces);
    t[n].min = 1, t[n++].max = 1024;
    t[n] = (fw_option)OPT("max-queue-delay", "FACEWORK_MAX_QUEUE_DELAY", FW_OPT_DURATION, "2ms",
                          "longest an item waits for its batch to fill", &o->max_queue_delay);
    t[n].min = 0, t[n++].max = 10;
    t[n] = (fw_option)OPT("max-queue", "FACEWORK_MAX_QUEUE", FW_OPT_INT, "256",
                          "images queued or in flight; beyond it 503 + Retry-After", &o->max_queue);
    t[n].min = 1, t[n++].max = 1000000;
    t[n] = (fw_option)OPT("max-body", "FACEWORK_MAX_BODY", FW_OPT_SIZE, "64MiB",
                          "largest request body; beyond it 413", &o->max_body);
    t[n].min = 1024, t[n++].max = 16.0 * 1024 * 1024 * 1024;
    t[n] = (fw_option)OPT("max-images", "FACEWORK_MAX_IMAGES", FW_OPT_INT, "64",
                          "images per request; beyond it 413", &o->max_images);
    t[n].min = 1, t[n++].max = 100000;
    t[n] = (fw_option)OPT("max-image-bytes", "FACEWORK_MAX_IMAGE_BYTES", FW_OPT_SIZE, "20MiB",
                          "bytes per image; beyond it a per-item error", &o->max_image_bytes);
    t[n].min = 1024, t[n++].max = 4.0 * 1024 * 1024 * 1024;
    t[n] = (fw_option)OPT("max-pixels", "FACEWORK_MAX_PIXELS", FW_OPT_INT, "50000000",
                          "pixels per image (from the header); beyond it a per-item error",
                          &o->max_pixels);
    t[n].min = 1, t[n++].max = 2000000000;
    t[n] = (fw_option)OPT("max-connections", "FACEWORK_MAX_CONNECTIONS", FW_OPT_INT, "1024",
                          "open client connections", &o->max_connections);
    t[n].min = 1, t[n++].max = 1000000;
    t[n] = (fw_option)OPT("request-timeout", "FACEWORK_REQUEST_TIMEOUT", FW_OPT_DURATION, "60s",
                          "a request not answered by then gets 503", &o->request_timeout);
    t[n].min = 0, t[n++].max = 3600;
    t[n] = (fw_option)OPT("read-timeout", "FACEWORK_READ_TIMEOUT", FW_OPT_DURATION, "10s",
                          "time to send a request (slow clients are cut off); idle keep-alive",
                          &o->read_timeout);
    t[n].min = 0.1, t[n++].max = 3600;
    t[n] = (fw_option)OPT("drain-timeout", "FACEWORK_DRAIN_TIMEOUT", FW_OPT_DURATION, "30s",
                          "on SIGTERM/SIGINT, how long in-flight requests may take",
                          &o->drain_timeout);
    t[n].min = 0, t[n++].max = 3600;
    t[n] = (fw_option)OPT("api-key", "FACEWORK_API_KEY", FW_OPT_STRING, NULL,
                          "require this key (Authorization: Bearer or X-API-Key)", &o->api_key);
    t[n++].flags = FW_OPT_SECRET;
    t[n++] = (fw_option)OPT("api-key-file", "FACEWORK_API_KEY_FILE", FW_OPT_STRING, NULL,
                            "read the API key from this file (first line)", &o->api_key_file);
    t[n++] =
        (fw_option)OPT("worker-id", "FACEWORK_WORKER_ID", FW_OPT_STRING, NULL,
                       "worker_id in legacy responses (default: HOSTNAME:PORT)", &o->worker_id);
    t[n++] = (fw_option)OPT("lock-file", "FACEWORK_LOCK_FILE", FW_OPT_STRING, NULL,
                            "single-instance lock (default: $XDG_RUNTIME_DIR or /tmp "
                            "facework-worker.lock)",
                            &o->lock_file);
    t[n++] =
        (fw_option)OPT("port-file", "FACEWORK_PORT_FILE", FW_OPT_STRING, NULL,
                       "when ready, write the first bound HOST:PORT to this file", &o->port_file);
    t[n++] = (fw_option)OPT("log-format", "FACEWORK_LOG_FORMAT", FW_OPT_STRING, "logfmt",
                            "logfmt or json", &o->log_format);
    t[n++] = (fw_option)OPT("log-level", "FACEWORK_LOG_LEVEL", FW_OPT_STRING, "info",
                            "debug|info|warn|error", &o->log_level);
    t[n++] =
        (fw_option)OPT("supervise", "FACEWORK_SUPERVISE", FW_OPT_BOOL, "false",
                       "run under a parent that restarts a crashed or hung worker", &o->supervise);
    t[n] = (fw_option)OPT("max-restarts", "FACEWORK_MAX_RESTARTS", FW_OPT_INT, "10",
                          "--supervise: consecutive failed restarts before giving up",
                          &o->max_restarts);
    t[n].min = 0, t[n++].max = 1000000;
    n += queue_options(o, t + n);
    return n;
}

#define MAX_OPTIONS 80

/* ------------------------------------------------------------------------------------ */
/* state                                                                                */

/* One facework_provider_info child: 1 while `provider` serves `role`. */
typedef struct provider_ref {
    const struct worker *w;
    fw_role role;
    const char *provider;
} provider_ref;

typedef struct worker {
    worker_opts o;
    fw_engine *eng;
    fw_batcher *batcher;
    fw_http_server *http;
    fw_queue *queue; /* NULL unless --queue */
    fw_metrics *reg;
    fw_lock *lock;
    atomic_int state;
    atomic_int stop_requested;
    double started;
    char worker_id[256];
    char *api_key;
    size_t api_key_len;
    fw_api_limits limits;
    bool gpu_used;
    bool dml_available;
    fw_gpu_monitor *gpu;    /* NVML and GPU settings (/gpu_info, /metrics) */
    const fw_option *table; /* the parsed options, for their sources */
    size_t n_table;
    provider_ref provider_refs[FW_ROLE__COUNT][2]; /* facework_provider_info children */
    char provider[32];
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;

    /* metrics */
    fw_metric_family *m_requests, *m_req_seconds, *m_images, *m_faces, *m_batch, *m_infer,
        *m_queue_wait, *m_item_errors;
    fw_metric *m_images_total, *m_faces_total, *m_queue_wait_h;
} worker;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The provider serving the embedder now (a GPU fault may have moved it to the CPU). */
static const char *provider_now(const worker *w)
{
    return w->eng ? fw_engine_provider(w->eng, FW_ROLE_EMBEDDER) : w->provider;
}

/* A GPU provider serves at least one model now. */
static bool gpu_used_now(const worker *w)
{
    return w->eng ? fw_engine_gpu_in_use(w->eng) : w->gpu_used;
}

/* True when option `name` was set by a flag, the environment or .env. */
static bool opt_explicit(const worker *w, const char *name)
{
    for (size_t i = 0; i < w->n_table; i++)
        if (w->table[i].name && !strcmp(w->table[i].name, name))
            return w->table[i].source != FW_SRC_DEFAULT;
    return false;
}

static void set_state(worker *w, int state)
{
    static const char *const names[] = {"loading", "ready", "draining"};
    int old = atomic_exchange(&w->state, state);
    if (old != state)
        FW_INFO("worker", "state", "from=%s to=%s", names[old], names[state]);
}

/* Constant-time comparison of the presented key with the configured one: the time taken
 * depends only on the presented key's length, never on where they differ. */
static bool key_matches(const worker *w, const char *given)
{
    size_t glen = strlen(given);
    unsigned char diff = (unsigned char)(glen != w->api_key_len);
    for (size_t i = 0; i < glen; i++)
        diff |= (unsigned char)given[i] ^ (unsigned char)w->api_key[i % w->api_key_len];
    return diff == 0;
}

static bool authorized(const worker *w, fw_http_request *req)
{
    if (!w->api_key)
        return true;
    const char *h = fw_http_header(req, "x-api-key");
    if (h && key_matches(w, h))
        return true;
    h = fw_http_header(req, "authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ')
            h++;
        if (key_matches(w, h))
            return true;
    }
    return false;
}

/* ------------------------------------------------------------------------------------ */
/* inference routes                                                                     */

/* One request's (or queue job's) work: answered over HTTP (req) or to the queue (qjob). */
typedef struct job_ctx {
    worker *w;
    fw_http_request *req;
    fw_queue_job *qjob;
    fw_api_request *api;
    fw_blob *blobs;
    size_t *index;          /* blobs[k] is api->items[index[k]] */
    fw_result *results;     /* api->n_items */
    fw_result *job_results; /* one per blob */
    size_t n_jobs;
    double t0;
} job_ctx;

static void job_free(job_ctx *c)
{
    if (!c)
        return;
    if (c->results && c->api)
        for (size_t i = 0; i < c->api->n_items; i++)
            fw_result_clear(&c->results[i]);
    free(c->results);
    free(c->job_results);
    free(c->blobs);
    free(c->index);
    fw_api_request_free(c->api);
    free(c);
}

/* A queue job's outcome: the body (NULL: not encoded), and whether it is final. Items cut
 * short by a shutdown (UNAVAILABLE) leave the entry for another consumer. */
static void queue_respond(job_ctx *c, char *body, size_t len, size_t errors)
{
    fw_queue_result res = {
        .status = 200, .body = body, .len = len, .n_items = c->api->n_items, .n_failed = errors};
    for (size_t i = 0; i < c->api->n_items; i++) {
        const fw_api_item *it = &c->api->items[i];
        fw_err code = it->error != FW_OK ? it->error : c->results[i].status;
        const char *msg = it->error != FW_OK ? it->message : c->results[i].message;
        if (code == FW_ERR_UNAVAILABLE)
            res.retry = true;
        if (code != FW_OK && !res.first_error[0])
            snprintf(res.first_error, sizeof res.first_error, "%s: %s", fw_err_name(code), msg);
    }
    if (res.retry) {
        free(body);
        res.body = NULL;
    }
    fw_queue_complete(c->qjob, &res);
}

/* Encodes and sends the response for a finished (or item-error-only) job, frees it. */
static void job_respond(job_ctx *c)
{
    worker *w = c->w;
    fw_api_response_info info = {
        .took_ms = (now_s() - c->t0) * 1e3,
        .provider = provider_now(w),
        .model = fw_engine_pack_name(w->eng),
        .embedding_dim = fw_engine_embedding_dim(w->eng),
        .gpu_used = gpu_used_now(w),
        .worker_id = w->worker_id,
    };
    size_t faces = 0, errors = 0;
    for (size_t i = 0; i < c->api->n_items; i++) {
        if (c->api->items[i].error != FW_OK || c->results[i].status != FW_OK)
            errors++;
        else
            faces += c->results[i].n_faces;
    }
    fw_counter_add(w->m_images_total, (double)c->api->n_items);
    fw_counter_add(w->m_faces_total, (double)faces);
    if (errors)
        fw_counter_add(fw_metric_get(w->m_item_errors, FW_LABELS(fw_api_route_path(c->api->route))),
                       (double)errors);
    char *body = NULL;
    size_t len = 0;
    fw_error err;
    fw_err rc = fw_api_encode_response(c->api, c->results, &info, &body, &len, &err);
    if (rc != FW_OK)
        FW_ERROR("worker", "encode failed", "request_id=%s error=\"%s\"",
                 c->req ? c->req->request_id : "queue", err.message);
    if (c->qjob) {
        queue_respond(c, rc == FW_OK ? body : NULL, len, errors);
    } else if (rc != FW_OK) {
        fw_http_respond_error(c->req, 503, "internal_error", "could not encode the response", 1);
    } else {
        fw_http_respond_take(c->req, 200, "application/json", NULL, 0, body, len);
    }
    job_free(c);
}

static void on_job_done(void *user, fw_result *results, size_t n)
{
    job_ctx *c = user;
    for (size_t k = 0; k < n; k++)
        c->results[c->index[k]] = results[k]; /* moves ownership of faces */
    memset(results, 0, n * sizeof *results);
    job_respond(c);
}

/* Batcher hook: skip the work of requests whose client left or whose deadline passed. */
static bool job_cancelled(void *user)
{
    const job_ctx *c = user;
    return c->req && fw_http_request_abandoned(c->req);
}

/* Feeds a parsed request to the batcher; its answer goes to req (HTTP) or qjob (queue).
 * FW_OK: api is taken and the answer will be given exactly once. Otherwise api stays the
 * caller's and nothing was answered: BUSY (queue full), UNAVAILABLE (draining), NOMEM. */
static fw_err start_job(worker *w, fw_api_request *api, fw_http_request *req, fw_queue_job *qjob,
                        fw_error *err)
{
    job_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    c->w = w;
    c->req = req;
    c->qjob = qjob;
    c->api = api;
    c->t0 = now_s();
    size_t n = api->n_items;
    c->results = calloc(n, sizeof *c->results);
    c->job_results = calloc(n, sizeof *c->job_results);
    c->blobs = calloc(n, sizeof *c->blobs);
    c->index = calloc(n, sizeof *c->index);
    if (!c->results || !c->job_results || !c->blobs || !c->index) {
        c->api = NULL;
        job_free(c);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        if (api->items[i].error != FW_OK)
            continue;
        c->blobs[c->n_jobs] = (fw_blob){api->items[i].data, api->items[i].len};
        c->index[c->n_jobs++] = i;
    }
    if (c->n_jobs == 0) {
        job_respond(c); /* every item failed to parse: per-item errors only */
        return FW_OK;
    }
    fw_batcher_job job = {
        .kind = api->route == FW_ROUTE_V1_EMBED    ? FW_JOB_EMBED_IMAGES
                : api->route == FW_ROUTE_V1_DETECT ? FW_JOB_DETECT
                                                   : FW_JOB_ANALYZE,
        .inputs = c->blobs,
        .n = c->n_jobs,
        .results = c->job_results,
        .done = on_job_done,
        .user = c,
        .cancelled = job_cancelled,
    };
    fw_api_analyze_opts(api, &job.opts);
    fw_err rc = fw_batcher_submit(w->batcher, &job, err);
    if (rc == FW_OK)
        return FW_OK;
    c->api = NULL;
    job_free(c);
    return rc;
}

static void handle_infer(fw_http_request *req, void *user)
{
    worker *w = user;
    if (!authorized(w, req)) {
        fw_http_respond_error(req, 401, "unauthorized", "missing or invalid API key", 0);
        return;
    }
    int state = atomic_load(&w->state);
    if (state != STATE_READY) {
        fw_http_respond_error(req, 503, "unavailable",
                              state == STATE_LOADING ? "models are loading"
                                                     : "worker is shutting down",
                              state == STATE_LOADING ? 2 : 5);
        return;
    }
    fw_api_route route;
    if (!fw_api_route_from_path(req->path, strlen(req->path), &route)) {
        fw_http_respond_error(req, 404, "not_found", "no such route", 0);
        return;
    }
    fw_api_request *api = NULL;
    fw_api_error aerr;
    if (fw_api_parse(route, fw_http_header(req, "content-type"), req->body, req->body_len,
                     &w->limits, &api, &aerr) != FW_OK) {
        size_t len = 0;
        char *body = fw_api_error_to_json(&aerr, &len);
        if (body)
            fw_http_respond_take(req, aerr.status, "application/json", NULL, 0, body, len);
        else
            fw_http_respond_error(req, 503, "out_of_memory", "out of memory", 1);
        return;
    }
    fw_error err;
    fw_err rc = start_job(w, api, req, NULL, &err);
    if (rc == FW_OK)
        return;
    fw_api_request_free(api);
    if (rc == FW_ERR_BUSY)
        fw_http_respond_error(req, 503, "busy", "the queue is full; retry later", 1);
    else if (rc == FW_ERR_UNAVAILABLE)
        fw_http_respond_error(req, 503, "unavailable", "worker is shutting down", 5);
    else
        fw_http_respond_error(req, 503, fw_err_name(rc), err.message, 1);
}

/* Queue mode: runs a job read from the stream (server/queue.h). */
static fw_err queue_run(void *user, fw_api_request *api, fw_queue_job *job, fw_error *err)
{
    worker *w = user;
    if (atomic_load(&w->state) != STATE_READY)
        return fw_error_set(err, FW_ERR_BUSY, "not ready");
    return start_job(w, api, NULL, job, err);
}

/* Queue mode: images the batcher would accept now. */
static size_t queue_capacity(void *user)
{
    worker *w = user;
    if (atomic_load(&w->state) != STATE_READY || !w->batcher)
        return 0;
    size_t depth = fw_batcher_queue_depth(w->batcher), max = (size_t)w->o.max_queue;
    return depth < max ? max - depth : 0;
}

/* ------------------------------------------------------------------------------------ */
/* operational routes                                                                   */

static const char *state_name(int s)
{
    return s == STATE_READY ? "healthy" : s == STATE_LOADING ? "loading" : "draining";
}

static void respond_json(fw_http_request *req, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!s) {
        fw_http_respond_error(req, 503, "out_of_memory", "out of memory", 1);
        return;
    }
    fw_http_respond_take(req, status, "application/json", NULL, 0, s, strlen(s));
}

static void handle_health(fw_http_request *req, void *user)
{
    worker *w = user;
    int state = atomic_load(&w->state);
    json_t *j = json_object();
    json_object_set_new(j, "status", json_string(state_name(state)));
    json_object_set_new(j, "gpu_available", json_boolean(gpu_used_now(w)));
    json_object_set_new(j, "directml_available", json_boolean(w->dml_available));
    json_object_set_new(j, "model_loaded", json_boolean(state != STATE_LOADING));
    json_object_set_new(j, "uptime_seconds", json_real(now_s() - w->started));
    json_object_set_new(j, "provider", json_string(provider_now(w)));
    json_object_set_new(
        j, "queue_depth",
        json_integer(w->batcher ? (json_int_t)fw_batcher_queue_depth(w->batcher) : 0));
    json_object_set_new(j, "version", json_string(fw_version()));
    json_object_set_new(j, "worker_id", json_string(w->worker_id));
    json_object_set_new(j, "pid", json_integer((json_int_t)getpid()));
    json_object_set_new(j, "model",
                        w->eng ? json_string(fw_engine_pack_name(w->eng)) : json_null());
    /* roles moved to the CPU after GPU faults: still serving, degraded */
    json_object_set_new(j, "gpu_fallback", fw_gpu_fallback_json(w->eng));
    json_object_set_new(j, "webgpu_adapter", fw_gpu_webgpu_adapter_json(w->gpu, w->eng));
    respond_json(req, state == STATE_READY ? 200 : 503, j);
}

static void handle_gpu_info(fw_http_request *req, void *user)
{
    worker *w = user;
    if (!authorized(w, req)) {
        fw_http_respond_error(req, 401, "unauthorized", "missing or invalid API key", 0);
        return;
    }
    if (!w->eng) {
        fw_http_respond_error(req, 503, "unavailable", "models are loading", 2);
        return;
    }
    char *desc = fw_engine_describe_json(w->eng);
    json_t *pack = desc ? json_loads(desc, 0, NULL) : NULL;
    free(desc);
    json_t *j = json_object();
    json_object_set_new(j, "gpu_available", json_boolean(gpu_used_now(w)));
    json_t *active = json_object();
    json_object_set_new(active, "detector",
                        json_string(fw_engine_provider(w->eng, FW_ROLE_DETECTOR)));
    json_object_set_new(active, "landmarks",
                        json_string(fw_engine_provider(w->eng, FW_ROLE_LANDMARKS)));
    json_object_set_new(active, "embedder",
                        json_string(fw_engine_provider(w->eng, FW_ROLE_EMBEDDER)));
    json_object_set_new(j, "active_providers", active);
    json_t *avail = pack ? json_object_get(pack, "available_providers") : NULL;
    json_object_set_new(j, "available_providers", avail ? json_incref(avail) : json_array());
    json_t *ver = pack ? json_object_get(pack, "onnxruntime_version") : NULL;
    json_object_set_new(j, "onnxruntime_version", ver ? json_incref(ver) : json_null());
    /* device (NVML; null without it), nvml, gpu_settings, fallback, faults */
    fw_gpu_monitor_describe(w->gpu, w->eng, j);
    json_object_set_new(j, "model_pack", pack ? pack : json_null());
    respond_json(req, 200, j);
}

static void handle_metrics(fw_http_request *req, void *user)
{
    worker *w = user;
    char *text = NULL;
    size_t len = 0;
    fw_error err;
    if (fw_metrics_render(w->reg, &text, &len, &err) != FW_OK) {
        fw_http_respond_error(req, 503, "internal_error", err.message, 1);
        return;
    }
    fw_http_respond_take(req, 200, FW_METRICS_CONTENT_TYPE, NULL, 0, text, len);
}

/* ------------------------------------------------------------------------------------ */
/* metrics                                                                              */

static const char *route_label(const char *path)
{
    static const char *const known[] = {
        "/v1/analyze",         "/v1/detect", "/v1/embed", "/detect_faces_batch_multipart",
        "/detect_faces_batch", "/health",    "/gpu_info", "/metrics"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(path, known[i]))
            return known[i];
    return "other";
}

static void access_log(const fw_http_access_entry *e, void *user)
{
    worker *w = user;
    char status[8];
    snprintf(status, sizeof status, "%d", e->status);
    const char *route = route_label(e->path);
    fw_counter_inc(fw_metric_get(w->m_requests, FW_LABELS(route, status)));
    fw_histogram_observe(fw_metric_get(w->m_req_seconds, FW_LABELS(route)),
                         (double)e->duration_us / 1e6);
    fw_log(strcmp(route, "/health") && strcmp(route, "/metrics") ? FW_LOG_INFO : FW_LOG_DEBUG,
           "http", "request",
           "request_id=%s method=%s path=%s status=%d bytes=%llu duration_ms=%.2f http=%d "
           "remote=%s",
           e->request_id, e->method, route, e->status, (unsigned long long)e->bytes_sent,
           (double)e->duration_us / 1e3, e->http_version, e->remote_addr);
}

static void on_batch(void *user, fw_batch_stage stage, size_t size, double seconds)
{
    worker *w = user;
    const char *s = stage == FW_BATCH_DETECT ? "detect" : "embed";
    fw_histogram_observe(fw_metric_get(w->m_batch, FW_LABELS(s)), (double)size);
    fw_histogram_observe(fw_metric_get(w->m_infer, FW_LABELS(s)), seconds);
}

static void on_batcher_job(void *user, double queue_wait_s, double total_s, size_t n_images,
                           size_t n_faces)
{
    worker *w = user;
    (void)total_s;
    (void)n_images;
    (void)n_faces;
    fw_histogram_observe(w->m_queue_wait_h, queue_wait_s);
}

static double gauge_queue_depth(void *user)
{
    worker *w = user;
    return w->batcher ? (double)fw_batcher_queue_depth(w->batcher) : 0;
}

static double gauge_inflight(void *user)
{
    worker *w = user;
    return w->http ? (double)fw_http_server_inflight(w->http) : 0;
}

static double gauge_ready(void *user)
{
    worker *w = user;
    return atomic_load(&w->state) == STATE_READY;
}

static fw_err setup_metrics(worker *w, fw_error *err)
{
    static const double seconds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25,  0.5,    1,     2.5,  5,     10};
    static const double sizes[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    const size_t ns = sizeof seconds / sizeof seconds[0], nz = sizeof sizes / sizeof sizes[0];
    fw_err rc;
    if ((rc = fw_metrics_new(&w->reg, err)))
        return rc;
    fw_metrics *r = w->reg;
    if ((rc = fw_metrics_counter(r, "facework_http_requests_total",
                                 "HTTP requests by route and status", FW_LABELS("route", "status"),
                                 &w->m_requests, err)) ||
        (rc = fw_metrics_histogram(r, "facework_http_request_duration_seconds",
                                   "HTTP request duration", FW_LABELS("route"), seconds, ns,
                                   &w->m_req_seconds, err)) ||
        (rc = fw_metrics_counter(r, "facework_images_total", "images processed", NULL, &w->m_images,
                                 err)) ||
        (rc = fw_metrics_counter(r, "facework_faces_total", "faces returned", NULL, &w->m_faces,
                                 err)) ||
        (rc = fw_metrics_counter(r, "facework_image_errors_total",
                                 "images answered with a per-item error", FW_LABELS("route"),
                                 &w->m_item_errors, err)) ||
        (rc = fw_metrics_histogram(r, "facework_batch_size",
                                   "items per model run (images for detect, faces for embed)",
                                   FW_LABELS("stage"), sizes, nz, &w->m_batch, err)) ||
        (rc = fw_metrics_histogram(r, "facework_inference_seconds", "model run wall time",
                                   FW_LABELS("stage"), seconds, ns, &w->m_infer, err)) ||
        (rc = fw_metrics_histogram(r, "facework_queue_wait_seconds",
                                   "time from accepting a request to its first model run", NULL,
                                   seconds, ns, &w->m_queue_wait, err)) ||
        (rc = fw_metrics_callback(r, FW_METRIC_GAUGE, "facework_queue_depth",
                                  "images queued or in flight in the batcher", gauge_queue_depth, w,
                                  NULL, err)) ||
        (rc = fw_metrics_callback(r, FW_METRIC_GAUGE, "facework_http_inflight",
                                  "HTTP requests being processed", gauge_inflight, w, NULL, err)) ||
        (rc = fw_metrics_callback(r, FW_METRIC_GAUGE, "facework_ready", "1 when serving",
                                  gauge_ready, w, NULL, err)) ||
        (rc = fw_procstat_register(r, err)))
        return rc;
    w->m_images_total = fw_metric_get(w->m_images, NULL);
    w->m_faces_total = fw_metric_get(w->m_faces, NULL);
    w->m_queue_wait_h = fw_metric_get(w->m_queue_wait, NULL);
    return FW_OK;
}

static double gauge_provider(void *user)
{
    const provider_ref *ref = user;
    return !strcmp(fw_engine_provider(ref->w->eng, ref->role), ref->provider);
}

/* The active-provider info metric, registered once the models are loaded: 1 for the
 * provider serving each role; a role on a GPU also has a "cpu" child, 0 until device faults
 * move it there. Plus the GPU metrics (NVML, faults). */
static void register_provider_metric(worker *w)
{
    fw_error err;
    fw_metric_family *f = NULL;
    if (fw_metrics_gauge(w->reg, "facework_provider_info",
                         "execution provider serving each model role",
                         FW_LABELS("role", "provider"), &f, &err))
        return;
    for (int r = 0; r < FW_ROLE__COUNT; r++) {
        const char *now = fw_engine_provider(w->eng, (fw_role)r);
        w->provider_refs[r][0] = (provider_ref){w, (fw_role)r, now};
        fw_metrics_callback_child(f, FW_LABELS(fw_role_name((fw_role)r), now), gauge_provider,
                                  &w->provider_refs[r][0], NULL, &err);
        if (strcmp(now, "cpu") && strcmp(now, "none")) {
            w->provider_refs[r][1] = (provider_ref){w, (fw_role)r, "cpu"};
            fw_metrics_callback_child(f, FW_LABELS(fw_role_name((fw_role)r), "cpu"), gauge_provider,
                                      &w->provider_refs[r][1], NULL, &err);
        }
    }
    if (fw_gpu_monitor_register_metrics(w->gpu, w->eng, w->reg, &err))
        FW_WARN("worker", "GPU metrics not registered", "error=\"%s\"", err.message);
}

/* ------------------------------------------------------------------------------------ */
/* lifecycle                                                                            */

static void on_signal(int signo, void *user)
{
    worker *w = user;
    FW_INFO("worker", "signal", "signo=%d name=%s", signo, strsignal(signo));
    if (signo == SIGHUP)
        return;
    pthread_mutex_lock(&w->stop_mu);
    atomic_store(&w->stop_requested, 1);
    pthread_cond_broadcast(&w->stop_cv);
    pthread_mutex_unlock(&w->stop_mu);
}

static fw_err read_key_file(const char *path, char **out, fw_error *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    fw_err rc = fw_read_file(path, 4096, &data, &len, err);
    if (rc)
        return rc;
    size_t n = 0;
    while (n < len && data[n] != '\n' && data[n] != '\r')
        n++;
    char *key = malloc(n + 1);
    if (!key) {
        free(data);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    memcpy(key, data, n);
    key[n] = '\0';
    free(data);
    *out = key;
    return FW_OK;
}

static void write_port_file(const char *path, const char *addr)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%s\n", addr) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        FW_WARN("worker", "port file not written", "path=\"%s\" error=\"%s\"", path,
                strerror(errno));
        if (f)
            unlink(tmp);
    }
}

/* Pings the systemd watchdog while the batcher makes progress. */
static void *watchdog_thread(void *arg)
{
    worker *w = arg;
    uint64_t interval = fw_sd_watchdog_interval_us();
    struct timespec ts;
    uint64_t last_done = 0;
    int stuck = 0;
    pthread_mutex_lock(&w->stop_mu);
    while (!atomic_load(&w->stop_requested)) {
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + interval / 2 * 1000;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&w->stop_cv, &w->stop_mu, &ts);
        fw_batcher_stats st;
        fw_batcher_get_stats(w->batcher, &st);
        /* work waiting but nothing finished for a whole interval: stop pinging, let systemd
         * restart us */
        stuck = st.queue_depth > 0 && st.jobs_completed == last_done ? stuck + 1 : 0;
        last_done = st.jobs_completed;
        if (stuck < 2)
            fw_sd_watchdog_ping();
        else
            FW_ERROR("worker", "watchdog: no progress", "queue_depth=%zu", st.queue_depth);
    }
    pthread_mutex_unlock(&w->stop_mu);
    return NULL;
}

/* CPUs this process may run on. */
static int usable_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* --detect-threads and --embed-threads, 0 resolved for the CPU: one detector thread; on
 * the CPU provider as many embedder threads as the cores hold ONNX Runtime pools of
 * --threads (ORT's default pool takes every core: then 1), at most 16; else 1 (gpu_batching
 * then decides for a model on a GPU). */
static void model_threads(const worker *w, int *detect, int *embed)
{
    const int cores = usable_cores();
    const bool emb_cpu = !strcmp(fw_engine_provider(w->eng, FW_ROLE_EMBEDDER), "cpu");
    const int per = w->o.threads > 0 ? w->o.threads : cores;
    int auto_embed = emb_cpu ? cores / per : 1;
    auto_embed = auto_embed < 1 ? 1 : auto_embed > 16 ? 16 : auto_embed;
    *detect = w->o.detect_threads > 0 ? w->o.detect_threads : 1;
    *embed = w->o.embed_threads > 0 ? w->o.embed_threads : auto_embed;
}

/* The provider a role takes from FACE_DETECTION_GPU / FACE_EMBEDDING_GPU (flag: the
 * option's value, already checked to be a boolean): NULL (follow --provider) when unset,
 * "cpu" when false, --provider (or "auto" when that is cpu) when true. An explicit
 * --detection-provider / --embedding-provider is used as it is. */
static const char *role_placement(const worker *w, const char *explicit_provider, const char *flag)
{
    bool on = false;
    if (explicit_provider || !flag || !fw_parse_bool(flag, &on))
        return explicit_provider;
    if (!on)
        return "cpu";
    return strcmp(w->o.provider, "cpu") ? w->o.provider : "auto";
}

/* The GPU settings of the engine: role placement, CUDA arena and cuDNN search, pinned I/O,
 * TensorRT cache, warm-up; and, unless --max-batch / --max-batch-faces were given, a largest
 * model batch of 64 (what the batcher uses on a GPU, see gpu_batching). */
static void gpu_engine_config(const worker *w, fw_engine_config *ec)
{
    const char *det = role_placement(w, w->o.detection_provider, w->o.detection_gpu);
    const char *emb = role_placement(w, w->o.embedding_provider, w->o.embedding_gpu);
    ec->role_provider[FW_ROLE_DETECTOR] = ec->role_provider[FW_ROLE_LANDMARKS] = det;
    ec->role_provider[FW_ROLE_EMBEDDER] = emb;
    ec->gpu_mem_limit = w->o.gpu_mem_limit;
    ec->gpu_arena_extend = w->o.gpu_arena_extend;
    ec->cudnn_conv_algo = w->o.cudnn_conv_algo;
    ec->gpu_pageable_io = !w->o.gpu_pinned_io;
    ec->trt_cache_dir = w->o.trt_cache;
    ec->trt_fp16 = w->o.trt_fp16;
    ec->webgpu_backend = w->o.webgpu_backend;
    ec->webgpu_power = w->o.webgpu_power;
    ec->warmup = !strcmp(w->o.warmup, "none")  ? FW_WARMUP_NONE
                 : !strcmp(w->o.warmup, "one") ? FW_WARMUP_ONE
                 : !strcmp(w->o.warmup, "all") ? FW_WARMUP_ALL
                                               : FW_WARMUP_AUTO;
    if ((!opt_explicit(w, "max-batch") || !opt_explicit(w, "max-batch-faces")) &&
        ec->max_batch < 64)
        ec->max_batch = 64;
}

/* On a GPU, unless set explicitly: batches of up to 64 images and 64 faces, and two model
 * threads per role on a GPU (one batch is copied in or out while the other runs; the CPU
 * pool decodes and prepares the next meanwhile). */
static void gpu_batching(const worker *w, fw_batcher_config *bc)
{
    fw_role_status det, emb;
    fw_engine_role_status(w->eng, FW_ROLE_DETECTOR, &det);
    fw_engine_role_status(w->eng, FW_ROLE_EMBEDDER, &emb);
    if (det.on_device && !opt_explicit(w, "max-batch"))
        bc->max_batch_images = 64;
    if (emb.on_device && !opt_explicit(w, "max-batch-faces"))
        bc->max_batch_faces = 64;
    if (det.on_device && !opt_explicit(w, "detect-threads") && w->o.detect_threads == 0)
        bc->detect_threads = 2;
    if (emb.on_device && !opt_explicit(w, "embed-threads") && w->o.embed_threads == 0)
        bc->embed_threads = 2;
    /* one device runs one batch at a time: splitting a small batch only adds launches */
    if (emb.on_device)
        bc->share_idle_faces = false;
    if (det.on_device || emb.on_device)
        FW_INFO("worker", "gpu batching",
                "detector=%s embedder=%s max_batch=%d max_batch_faces=%d detect_threads=%d "
                "embed_threads=%d",
                det.provider, emb.provider, bc->max_batch_images, bc->max_batch_faces,
                bc->detect_threads, bc->embed_threads);
}

static fw_err start_queue(worker *w, fw_error *err)
{
    fw_queue_config qc;
    fw_queue_config_init(&qc);
    qc.url = w->o.queue;
    qc.group = w->o.queue_group;
    qc.consumer = w->o.queue_consumer ? w->o.queue_consumer : w->worker_id;
    qc.results_stream = w->o.queue_results;
    qc.dead_stream = w->o.queue_dead;
    qc.prefetch = w->o.queue_prefetch > 0 ? w->o.queue_prefetch : 2 * w->o.max_batch;
    qc.claim_idle_s = w->o.queue_claim_idle;
    qc.max_deliveries = w->o.queue_max_deliveries;
    qc.result_ttl_s = w->o.queue_result_ttl;
    qc.limits = w->limits;
    qc.limits.files_root = w->o.queue_files;
    qc.metrics = w->reg;
    qc.run = queue_run;
    qc.capacity = queue_capacity;
    qc.user = w;
    return fw_queue_new(&qc, &w->queue, err);
}

static int run_worker(worker *w)
{
    fw_error err;
    int status = 1;
    pthread_t wd;
    bool wd_started = false;

    /* Signals first, so that every thread created later has them blocked. */
    if (fw_signals_start(on_signal, w, &err)) {
        FW_ERROR("worker", "signals", "error=\"%s\"", err.message);
        return 1;
    }
    char lock_path[1024];
    if (w->o.lock_file)
        snprintf(lock_path, sizeof lock_path, "%s", w->o.lock_file);
    else if (fw_lock_default_path("facework-worker", lock_path, sizeof lock_path, &err))
        goto out;
    long holder = 0;
    if (fw_lock_acquire(lock_path, &w->lock, &holder, &err)) {
        fprintf(stderr, "facework worker: %s\n", err.message);
        FW_ERROR("worker", "another instance holds the lock", "pid=%ld lock=\"%s\"", holder,
                 lock_path);
        goto out;
    }
    if (setup_metrics(w, &err)) {
        FW_ERROR("worker", "metrics", "error=\"%s\"", err.message);
        goto out;
    }

    /* HTTP first: /health answers "loading" while the models load. */
    fw_http_route routes[] = {
        {"POST", "/v1/analyze", handle_infer},
        {"POST", "/v1/detect", handle_infer},
        {"POST", "/v1/embed", handle_infer},
        {"POST", "/detect_faces_batch_multipart", handle_infer},
        {"POST", "/detect_faces_batch", handle_infer},
        {"GET", "/health", handle_health},
        {"GET", "/gpu_info", handle_gpu_info},
        {"GET", "/metrics", handle_metrics},
    };
    fw_http_config hc;
    fw_http_config_defaults(&hc);
    hc.listen = (const char *const *)w->o.listen.items;
    hc.n_listen = w->o.listen.count;
    hc.n_threads = (unsigned)w->o.http_threads;
    hc.max_body_bytes = w->o.max_body;
    hc.read_timeout_ms = (unsigned)(w->o.read_timeout * 1000);
    hc.request_timeout_ms = (unsigned)(w->o.request_timeout * 1000);
    hc.max_connections = (size_t)w->o.max_connections;
    hc.access_log = access_log;
    hc.access_log_user = w;
    if (fw_http_server_new(&hc, routes, sizeof routes / sizeof routes[0], w, &w->http, &err) ||
        fw_http_server_start(w->http, &err)) {
        FW_ERROR("worker", "cannot serve", "error=\"%s\"", err.message);
        fprintf(stderr, "facework worker: %s\n", err.message);
        goto out;
    }
    const char *addr = fw_http_server_address(w->http, 0);
    if (!w->o.worker_id) {
        char host[200] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(w->worker_id, sizeof w->worker_id, "%s:%d", host, fw_http_server_port(w->http, 0));
    }
    for (size_t i = 0; i < fw_http_server_n_listeners(w->http); i++)
        FW_INFO("worker", "listening", "addr=%s", fw_http_server_address(w->http, i));

    /* Models. */
    fw_engine_config ec;
    fw_engine_config_init(&ec);
    ec.models_dir = w->o.models;
    ec.provider = w->o.provider;
    ec.role_provider[FW_ROLE_DETECTOR] = w->o.detection_provider;
    ec.role_provider[FW_ROLE_LANDMARKS] = w->o.detection_provider;
    ec.role_provider[FW_ROLE_EMBEDDER] = w->o.embedding_provider;
    ec.threads = w->o.threads;
    ec.device_id = w->o.device_id;
    ec.max_batch = w->o.max_batch > w->o.max_batch_faces ? w->o.max_batch : w->o.max_batch_faces;
    ec.decode.max_bytes = w->o.max_image_bytes;
    ec.decode.max_pixels = (uint64_t)w->o.max_pixels;
    gpu_engine_config(w, &ec);
    if (fw_gpu_monitor_new(NULL, &ec, &w->gpu, &err)) {
        FW_ERROR("worker", "gpu monitor", "error=\"%s\"", err.message);
        goto out;
    }
    if (fw_engine_new(&ec, &w->eng, &err)) {
        FW_ERROR("worker", "cannot load models", "error=\"%s\"", err.message);
        fprintf(stderr, "facework worker: %s\n", err.message);
        goto out;
    }
    snprintf(w->provider, sizeof w->provider, "%s", fw_engine_provider(w->eng, FW_ROLE_EMBEDDER));
    w->gpu_used = strcmp(fw_engine_provider(w->eng, FW_ROLE_DETECTOR), "cpu") != 0 ||
                  strcmp(fw_engine_provider(w->eng, FW_ROLE_EMBEDDER), "cpu") != 0;
    {
        const char *names[16];
        size_t n = fw_ort_available_providers(names, 16);
        for (size_t i = 0; i < n; i++)
            if (!strcmp(names[i], "dml"))
                w->dml_available = true;
    }
    register_provider_metric(w);

    fw_batcher_config bc;
    fw_batcher_config_init(&bc);
    bc.decode_threads = w->o.decode_threads;
    model_threads(w, &bc.detect_threads, &bc.embed_threads);
    bc.max_batch_images = w->o.max_batch;
    bc.max_batch_faces = w->o.max_batch_faces;
    bc.max_queue_delay_us = (uint32_t)(w->o.max_queue_delay * 1e6);
    bc.max_queue_images = (size_t)w->o.max_queue;
    /* on the CPU the embedder costs more per face in runs of more than ~8 faces (cache) */
    if (!opt_explicit(w, "max-batch-faces") &&
        !strcmp(fw_engine_provider(w->eng, FW_ROLE_EMBEDDER), "cpu"))
        bc.max_batch_faces = 8;
    gpu_batching(w, &bc);
    /* automatic memory bound: two full detector batches of 3 MP photos (8 MiB decoded) */
    size_t decoded_mb =
        w->o.max_decoded_mb > 0 ? (size_t)w->o.max_decoded_mb : 2 * 8 * (size_t)bc.max_batch_images;
    bc.max_decoded_bytes = (decoded_mb < 64 && w->o.max_decoded_mb <= 0 ? 64 : decoded_mb) << 20;
    FW_INFO("worker", "model threads",
            "detect_threads=%d detect_auto=%s embed_threads=%d embed_auto=%s cores=%d "
            "ort_threads=%d embedder=%s max_batch_faces=%d max_decoded_mb=%zu",
            bc.detect_threads, w->o.detect_threads > 0 ? "false" : "true", bc.embed_threads,
            w->o.embed_threads > 0 ? "false" : "true", usable_cores(), w->o.threads,
            fw_engine_provider(w->eng, FW_ROLE_EMBEDDER), bc.max_batch_faces,
            bc.max_decoded_bytes >> 20);
    bc.hook_user = w;
    bc.on_batch = on_batch;
    bc.on_job_done = on_batcher_job;
    if (fw_batcher_new(w->eng, &bc, &w->batcher, &err)) {
        FW_ERROR("worker", "batcher", "error=\"%s\"", err.message);
        goto out;
    }
    set_state(w, STATE_READY);
    if (w->o.queue && start_queue(w, &err)) {
        FW_ERROR("worker", "queue", "error=\"%s\"", err.message);
        fprintf(stderr, "facework worker: --queue: %s\n", err.message);
        goto out;
    }
    if (w->o.port_file)
        write_port_file(w->o.port_file, addr);
    fw_sd_ready();
    fw_sd_status("serving on %s", addr);
    if (fw_sd_watchdog_interval_us() > 0 && pthread_create(&wd, NULL, watchdog_thread, w) == 0)
        wd_started = true;
    FW_INFO("worker", "ready", "addr=%s provider=%s pack=%s worker_id=%s", addr, w->provider,
            fw_engine_pack_name(w->eng), w->worker_id);

    /* Serve until SIGTERM/SIGINT. */
    pthread_mutex_lock(&w->stop_mu);
    while (!atomic_load(&w->stop_requested))
        pthread_cond_wait(&w->stop_cv, &w->stop_mu);
    pthread_mutex_unlock(&w->stop_mu);

    /* Graceful shutdown: stop accepting, finish what was accepted, then exit 0. */
    set_state(w, STATE_DRAINING);
    fw_sd_stopping();
    fw_http_server_stop_accepting(w->http);
    fw_queue_stop_reading(w->queue);
    double deadline = now_s() + w->o.drain_timeout;
    int left_ms = (int)(w->o.drain_timeout * 1000);
    if (fw_batcher_drain(w->batcher, left_ms) != FW_OK)
        FW_WARN("worker", "drain timed out", "queue_depth=%zu", fw_batcher_queue_depth(w->batcher));
    /* queue results still being written to Redis */
    left_ms = (int)((deadline - now_s()) * 1000);
    if (w->queue && fw_queue_drain(w->queue, left_ms > 0 ? left_ms : 0) != FW_OK) {
        fw_queue_stats qs;
        fw_queue_get_stats(w->queue, &qs);
        FW_WARN("worker", "queue results not all written: their entries stay pending",
                "inflight=%zu", qs.inflight);
    }
    /* responses already handed to the transport are being written */
    while (fw_http_server_inflight(w->http) > 0 && now_s() < deadline) {
        struct timespec pause = {0, 5 * 1000000};
        nanosleep(&pause, NULL);
    }
    FW_INFO("worker", "drained", "inflight=%zu", fw_http_server_inflight(w->http));
    status = 0;
out:
    if (wd_started) {
        atomic_store(&w->stop_requested, 1);
        pthread_mutex_lock(&w->stop_mu);
        pthread_cond_broadcast(&w->stop_cv);
        pthread_mutex_unlock(&w->stop_mu);
        pthread_join(wd, NULL);
    }
    fw_http_server_free(w->http);
    w->http = NULL;
    fw_batcher_free(w->batcher); /* completes queue jobs still held (left pending) */
    w->batcher = NULL;
    fw_queue_free(w->queue);
    w->queue = NULL;
    fw_engine_free(w->eng);
    w->eng = NULL;
    fw_metrics_free(w->reg);
    w->reg = NULL;
    fw_gpu_monitor_free(w->gpu);
    w->gpu = NULL;
    fw_lock_release(w->lock);
    w->lock = NULL;
    fw_signals_stop();
    FW_INFO("worker", "exit", "status=%d", status);
    return status;
}

/* --supervise: probe the child's /health over a plain socket with a short timeout. */
typedef struct probe_target {
    char host[256];
    char port[16];
} probe_target;

static bool probe_health(long pid, void *user)
{
    (void)pid;
    const probe_target *t = user;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(t->host, t->port, &hints, &ai) != 0 || !ai)
        return false;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    bool ok = false;
    if (fd >= 0) {
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if ((rc == 0 || errno == EINPROGRESS) && poll(&p, 1, 2000) == 1) {
            const char reqs[] = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            if (send(fd, reqs, sizeof reqs - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof reqs - 1)) {
                p.events = POLLIN;
                char buf[64];
                /* any HTTP answer (200 ready, 503 loading/draining) means it is alive */
                if (poll(&p, 1, 5000) == 1 && recv(fd, buf, sizeof buf, 0) >= 12 &&
                    !memcmp(buf, "HTTP/1.", 7))
                    ok = true;
            }
        }
        close(fd);
    }
    freeaddrinfo(ai);
    return ok;
}

static int supervised_child(void *user)
{
    return run_worker(user);
}

static int supervise(worker *w)
{
    probe_target t = {0};
    const char *l = w->o.listen.count ? w->o.listen.items[0] : FW_HTTP_DEFAULT_LISTEN;
    const char *colon = strrchr(l, ':');
    if (!colon || !strcmp(colon + 1, "0")) {
        fprintf(stderr, "facework worker: --supervise needs a fixed port in --listen\n");
        return 2;
    }
    size_t hl = (size_t)(colon - l);
    if (l[0] == '[' && hl >= 2) {
        memcpy(t.host, l + 1, hl - 2 < sizeof t.host - 1 ? hl - 2 : sizeof t.host - 1);
    } else {
        memcpy(t.host, l, hl < sizeof t.host - 1 ? hl : sizeof t.host - 1);
    }
    if (!strcmp(t.host, "0.0.0.0") || !t.host[0])
        snprintf(t.host, sizeof t.host, "127.0.0.1");
    snprintf(t.port, sizeof t.port, "%s", colon + 1);
    fw_supervise_opts so;
    fw_supervise_opts_init(&so);
    so.child_main = supervised_child;
    so.child_user = w;
    so.max_restarts = w->o.max_restarts;
    so.probe = probe_health;
    so.probe_user = &t;
    so.probe_start_delay_s = 30; /* model loading */
    so.handle_signals = true;
    so.stop_grace_s = w->o.drain_timeout + 5;
    fw_error err;
    int rc = fw_supervise(&so, &err);
    if (rc != 0 && err.message[0])
        FW_ERROR("supervise", "ended", "status=%d error=\"%s\"", rc, err.message);
    return rc;
}

int fw_worker_main(int argc, char **argv)
{
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return 1;
    fw_option table[MAX_OPTIONS];
    memset(table, 0, sizeof table);
    size_t n = build_options(&w->o, table);
    w->table = table;
    w->n_table = n;
    if (fw_config_wants_help(argc, argv)) {
        printf("usage: facework worker [options]\n\n"
               "Serves face detection and embeddings over HTTP/1.1 and HTTP/2 (h2c).\n"
               "Settings: flags > environment > ./.env > defaults.\n\n");
        fw_config_help(table, n, stdout);
        free(w);
        return 0;
    }
    fw_error err;
    if (fw_config_parse(table, n, argc, argv, ".env", &err)) {
        fprintf(stderr, "facework worker: %s\n", err.message);
        free(w);
        return 2;
    }
    int status = 2;
    int lvl = fw_log_level_parse(w->o.log_level);
    if (lvl < 0) {
        fprintf(stderr, "facework worker: --log-level: unknown level '%s'\n", w->o.log_level);
        goto done;
    }
    fw_log_set_level((fw_log_level)lvl);
    if (!strcmp(w->o.log_format, "json"))
        fw_log_set_format(FW_LOG_JSON);
    else if (strcmp(w->o.log_format, "logfmt")) {
        fprintf(stderr, "facework worker: --log-format: expected logfmt or json\n");
        goto done;
    }
    {
        bool b;
        const char *bad = w->o.detection_gpu && !fw_parse_bool(w->o.detection_gpu, &b)
                              ? "FACE_DETECTION_GPU / --detection-gpu"
                          : w->o.embedding_gpu && !fw_parse_bool(w->o.embedding_gpu, &b)
                              ? "FACE_EMBEDDING_GPU / --embedding-gpu"
                              : NULL;
        if (bad) {
            fprintf(stderr, "facework worker: %s: expected true or false\n", bad);
            goto done;
        }
        if (strcmp(w->o.warmup, "auto") && strcmp(w->o.warmup, "all") &&
            strcmp(w->o.warmup, "one") && strcmp(w->o.warmup, "none")) {
            fprintf(stderr, "facework worker: --warmup: expected auto, all, one or none\n");
            goto done;
        }
    }
    if (w->o.api_key_file && !w->o.api_key &&
        read_key_file(w->o.api_key_file, &w->o.api_key, &err)) {
        fprintf(stderr, "facework worker: --api-key-file: %s\n", err.message);
        goto done;
    }
    if (w->o.api_key) {
        if (!w->o.api_key[0]) {
            fprintf(stderr, "facework worker: the API key is empty\n");
            goto done;
        }
        w->api_key = w->o.api_key;
        w->api_key_len = strlen(w->api_key);
    }
    if (w->o.worker_id)
        snprintf(w->worker_id, sizeof w->worker_id, "%s", w->o.worker_id);
    if (w->o.queue) {
        fw_redis_url u;
        if (fw_redis_url_parse(w->o.queue, &u, &err)) {
            fprintf(stderr, "facework worker: --queue: %s\n", err.message);
            goto done;
        }
    }
    fw_api_limits_init(&w->limits);
    w->limits.max_images = (size_t)w->o.max_images;
    w->limits.max_image_bytes = w->o.max_image_bytes;
    w->limits.max_body_bytes = w->o.max_body;
    w->started = now_s();
    atomic_init(&w->state, STATE_LOADING);
    pthread_mutex_init(&w->stop_mu, NULL);
    pthread_cond_init(&w->stop_cv, NULL);
    {
        char desc[2048];
        fw_config_describe(table, n, desc, sizeof desc);
        FW_INFO("worker", "config", "%s", desc);
    }
    status = w->o.supervise ? supervise(w) : run_worker(w);
    pthread_mutex_destroy(&w->stop_mu);
    pthread_cond_destroy(&w->stop_cv);
done:
    fw_config_free(table, n);
    free(w);
    return status;
}
