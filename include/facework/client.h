/* facework: the resilient client library (libfacework-client).
 *
 * An application links this to send images to one or more facework workers (DESIGN.md
 * "Client internals") and always get an answer back: every submitted image gets exactly one
 * result, computed by a worker or, when no worker can, by the in-process CPU fallback.
 *
 *   fw_client_config cfg;
 *   fw_client_config_init(&cfg);                   // every field "unset"
 *   cfg.batch_size = 16;                           // explicit settings win over the env
 *   if (fw_client_config_from_env(&cfg, ".env", &err)) ...   // GPU_WORKER_* and .env
 *   fw_client *c;
 *   if (fw_client_new(&cfg, &c, &err)) ...
 *   fw_client_wait_ready(c, 30.0, NULL);           // optional: the start-up race
 *   fw_client_call_opts o; fw_client_call_opts_init(&o);
 *   fw_client_result res[n];
 *   fw_client_analyze(c, blobs, n, &o, res, &err); // res[i].origin: worker URL or "cpu-fallback"
 *   for (i...) fw_client_result_clear(&res[i]);
 *   fw_client_free(c);
 *
 * Behaviour (all of it configurable through fw_client_config):
 *
 * - Transport: one libcurl multi handle driven by one I/O thread; keep-alive connections,
 *   at most max_connections per worker (CURLMOPT_MAX_HOST_CONNECTIONS), requests multiplexed
 *   over HTTP/2 when it is in use. HTTP version (http_version AUTO): with libcurl >= 8.0
 *   HTTP/2 with prior knowledge on http:// URLs; with an older libcurl (Debian 12 ships
 *   7.88.1) the h2c Upgrade (CURL_HTTP_VERSION_2_0), because libcurl < 8.0 cannot reuse an
 *   HTTP/2 prior-knowledge connection (the second request fails with "Error in the HTTP2
 *   framing layer", curl issue #10634) while an upgraded connection is reused correctly; a
 *   server that ignores the Upgrade keeps talking HTTP/1.1 keep-alive on the same connection.
 *   https:// URLs negotiate h2 or HTTP/1.1 through ALPN. The choice is made at run time from
 *   curl_version_info() and logged once by fw_client_new.
 * - Deadlines: each call has an overall deadline (timeout_s) that includes every attempt and
 *   every backoff sleep; each attempt has its own timeout (attempt_timeout_s, never past the
 *   overall deadline). The deadline bounds the time spent on workers: items still without a
 *   result when it passes go to the CPU fallback (when it is disabled they keep their last
 *   worker error, FW_ERR_TIMEOUT when no worker was tried before the deadline).
 * - Retries: only what is safe to retry: connect failures, timeouts, other transport errors
 *   that happen before a response, HTTP 502/503/504 and 429. `Retry-After` (seconds or an
 *   HTTP-date) on 429 and 503 keeps that worker out of the rotation until then; when no other
 *   worker can take a retry, the call waits for the pause only when it ends within
 *   backoff_max_s and before the deadline (else the items go to the CPU fallback). A call
 *   never waits for an open breaker: with every breaker open, items go to the fallback at
 *   once. Any other 4xx, and 500/501/505+, is never retried on a worker (those items go to
 *   the CPU fallback, whose answer is final). Delays: exponential backoff with full jitter,
 *   uniform in [0, min(backoff_max_s, backoff_base_s * 2^retry)], from a seedable RNG. A
 *   call makes at most 1 + max_retries attempts per batch; a retry prefers a worker not yet
 *   tried.
 * - Circuit breaker per worker: CLOSED -> OPEN after failure_threshold consecutive failures
 *   once at least min_requests requests were seen since the breaker last closed; OPEN ->
 *   HALF_OPEN after recovery_timeout_s; HALF_OPEN admits one probe request at a time and
 *   closes after success_threshold successes, and re-opens on any failure. A failure is a
 *   transport error, a 5xx or 429, an unparseable response, or a 200 response in which every
 *   item failed by the worker's fault; other 4xx answers count as successes (the worker is
 *   alive). Every transition is logged and counted (fw_client_status, metrics).
 * - Load balancing: power of two choices on outstanding requests among the workers whose
 *   breaker admits traffic, which are not in a Retry-After pause, and (when any such worker
 *   exists) whose last health check did not fail.
 * - Health: a background thread GETs /health of every worker every health_interval_s and
 *   records the last result (fw_client_status). fw_client_wait_ready polls with backoff.
 * - Batches: a call's images are split into batches of at most batch_size images (and at
 *   most 32 MiB of image bytes, a single larger image going alone), sent
 *   concurrently as multipart/form-data to /v1/analyze (or /v1/detect) with
 *   embedding_format "base64-f32". Per-item errors that are the worker's fault
 *   (inference_error, unavailable, busy, timeout, internal_error, out_of_memory,
 *   provider_error, model_error, io_error, unknown codes) are retried on another worker,
 *   then computed by the CPU fallback; bad-input errors (corrupt, unsupported, too_large,
 *   too_many_pixels, empty_input, invalid_argument, parse_error) are final answers.
 * - CPU fallback: fw_engine with provider "cpu" on fallback_models_dir, created on first
 *   need (thread-safe, once; a failed load is reported per item and retried by a later
 *   call, at most every 5 s). Results it computes have origin FW_CLIENT_ORIGIN_FALLBACK.
 *   When the fallback is disabled, an item no worker could compute gets a per-item error
 *   (origin "") whose code is that of its last worker failure (FW_ERR_UNAVAILABLE for
 *   refused connections and open breakers, FW_ERR_TIMEOUT, FW_ERR_BUSY, FW_ERR_AUTH, a
 *   worker's per-item code such as FW_ERR_INFERENCE, ...; FW_ERR_UNAVAILABLE when no worker
 *   was tried) and whose message names the worker and the failure and says that the CPU
 *   fallback is disabled.
 *
 * Thread safety: every function taking an fw_client may be called from any number of threads
 * at once, except fw_client_free. Nothing here logs image bytes or the API key. */
#ifndef FACEWORK_CLIENT_H
#define FACEWORK_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "facework/error.h"
#include "facework/facework.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FW_CLIENT_MAX_WORKERS 16                 /* workers one client talks to */
#define FW_CLIENT_URL_MAX 256                    /* one worker's base URL, NUL included */
#define FW_CLIENT_URLS_MAX 4096                  /* the comma-separated list, NUL included */
#define FW_CLIENT_KEY_MAX 512                    /* the API key, NUL included */
#define FW_CLIENT_PATH_MAX 1024                  /* fallback_models_dir, NUL included */
#define FW_CLIENT_ORIGIN_FALLBACK "cpu-fallback" /* fw_client_result.origin of fallback items */

/* "Unset" marker of the int and double fields of fw_client_config (see config_init). */
#define FW_CLIENT_UNSET (-1)

typedef struct fw_client fw_client;
struct fw_metrics; /* src/util/metrics.h */

typedef enum fw_client_http {
    FW_CLIENT_HTTP_AUTO = 0,  /* see "Transport" above */
    FW_CLIENT_HTTP_1_1,       /* HTTP/1.1 keep-alive only */
    FW_CLIENT_HTTP_2_UPGRADE, /* h2c via Upgrade (CURL_HTTP_VERSION_2_0) */
    FW_CLIENT_HTTP_2_PRIOR,   /* h2c prior knowledge (broken reuse before libcurl 8.0) */
} fw_client_http;

typedef enum fw_breaker_state {
    FW_BREAKER_CLOSED = 0,
    FW_BREAKER_OPEN,
    FW_BREAKER_HALF_OPEN,
    FW_BREAKER__COUNT
} fw_breaker_state;

/* Client settings. fw_client_config_init marks every field unset (FW_CLIENT_UNSET for int
 * and double fields, "" for strings, 0 for seed, NULL for metrics); set the fields you want
 * explicitly; fw_client_config_from_env then fills only the fields still unset, from the
 * environment, then the .env file, then the defaults. fw_client_new treats any field still
 * unset as its default (it does not read the environment itself). The struct owns no memory.
 *
 *   field                 environment                        default
 *   enabled               GPU_WORKER_ENABLED                 1 (0: never contact workers)
 *   urls                  GPU_WORKER_URL (comma-separated)   http://127.0.0.1:8765
 *   timeout_s             GPU_WORKER_TIMEOUT                 60 (overall deadline per call)
 *   attempt_timeout_s     GPU_WORKER_ATTEMPT_TIMEOUT         20 (one HTTP attempt)
 *   connect_timeout_s     GPU_WORKER_CONNECT_TIMEOUT         2
 *   max_retries           GPU_WORKER_MAX_RETRIES             5 (attempts = 1 + max_retries)
 *   batch_size            GPU_WORKER_BATCH_SIZE              32 images per request
 *   health_interval_s     GPU_WORKER_HEALTH_CHECK_INTERVAL   10 (0: no background checks)
 *   api_key               GPU_WORKER_API_KEY                 none (sent as X-API-Key)
 *   failure_threshold     GPU_WORKER_CB_FAILURE_THRESHOLD    15
 *   recovery_timeout_s    GPU_WORKER_CB_RECOVERY_TIMEOUT     20
 *   success_threshold     GPU_WORKER_CB_SUCCESS_THRESHOLD    3
 *   min_requests          GPU_WORKER_CB_MIN_REQUESTS         10
 *   max_connections       GPU_WORKER_MAX_CONNECTIONS         8 per worker
 *   backoff_base_s        GPU_WORKER_BACKOFF_BASE            0.1
 *   backoff_max_s         GPU_WORKER_BACKOFF_MAX             5
 *   http_version          GPU_WORKER_HTTP (auto|1.1|h2c|h2-prior-knowledge)   auto
 *   fallback              GPU_WORKER_CPU_FALLBACK            1 (0: per-item errors instead)
 *   fallback_models_dir   FACEWORK_MODELS                    the pack setup installed
 *   fallback_threads      GPU_WORKER_CPU_FALLBACK_THREADS    0 (ONNX Runtime's default)
 *   queue                 GPU_WORKER_QUEUE                   none; redis://HOST:PORT/STREAM:
 *                         calls go to the workers through that Redis stream (their --queue)
 *                         instead of HTTP: one job per batch, answers on a reply list of the
 *                         client; items not answered by the deadline, or answered with a
 *                         worker fault, go to the CPU fallback. urls, retries and the
 *                         breaker are then not used; origin is the stream (no password).
 *
 * Durations in the environment use the config syntax ("60", "1.5", "500ms", "2m"). */
typedef struct fw_client_config {
    int enabled;                                  /* bool, or FW_CLIENT_UNSET */
    char urls[FW_CLIENT_URLS_MAX];                /* "http://a:8765,http://b:8765"; "" = unset */
    double timeout_s;                             /* > 0 */
    double attempt_timeout_s;                     /* > 0 */
    double connect_timeout_s;                     /* > 0 */
    int max_retries;                              /* >= 0 */
    int batch_size;                               /* >= 1 */
    double health_interval_s;                     /* >= 0; 0 disables the background checks */
    char api_key[FW_CLIENT_KEY_MAX];              /* "" = unset (no key sent) */
    int failure_threshold;                        /* >= 1 */
    double recovery_timeout_s;                    /* >= 0 */
    int success_threshold;                        /* >= 1 */
    int min_requests;                             /* >= 0 */
    int max_connections;                          /* >= 1, per worker */
    double backoff_base_s;                        /* >= 0 */
    double backoff_max_s;                         /* >= backoff_base_s */
    int http_version;                             /* fw_client_http, or FW_CLIENT_UNSET */
    int fallback;                                 /* bool, or FW_CLIENT_UNSET */
    char fallback_models_dir[FW_CLIENT_PATH_MAX]; /* "" = unset */
    int fallback_threads;                         /* >= 0 */
    char queue[FW_CLIENT_URL_MAX];                /* redis://HOST:PORT/STREAM; "" = HTTP */
    /* Not from the environment: */
    uint64_t seed;              /* jitter and load-balancing RNG; 0: seeded from the clock */
    struct fw_metrics *metrics; /* optional registry the client registers its metrics in
                                 * (families "facework_client_*", see fw_client_new); not
                                 * owned, must outlive the client; one client per registry */
} fw_client_config;

/* Marks every field of cfg unset (see fw_client_config). */
void fw_client_config_init(fw_client_config *cfg);

/* Fills the unset fields of cfg from the environment (getenv), then the .env file at
 * dotenv_path (NULL: none; a missing file is fine), then the defaults; fields already set
 * are kept. Every invalid value is an error naming its variable and source, e.g.
 *   GPU_WORKER_TIMEOUT='abc' (environment): not a duration
 * (FW_ERR_INVALID_ARGUMENT; FW_ERR_PARSE for a malformed .env line, FW_ERR_IO for an
 * unreadable file); then cfg is left unchanged. URLs are checked as in fw_client_new. */
fw_err fw_client_config_from_env(fw_client_config *cfg, const char *dotenv_path, fw_error *err);

/* Creates a client (starts its I/O and health threads; connects lazily). Unset fields take
 * their defaults. Invalid explicit settings fail with FW_ERR_INVALID_ARGUMENT naming the
 * field (e.g. "urls: 'ftp://x' is not an http:// or https:// URL", "batch_size: must be
 * >= 1"). The CPU fallback is not loaded here. With cfg->metrics, registers (labels in
 * braces):
 *   facework_client_requests_total{worker,outcome}     HTTP attempts; outcome success|failure
 *   facework_client_request_seconds{worker}            attempt latency histogram
 *   facework_client_retries_total{worker}              attempts that were retries
 *   facework_client_items_total{served_by}             worker | fallback | error
 *   facework_client_gpu_usage_ratio                    items served by a worker / all items
 *   facework_client_fallback_ratio                     items served by the fallback / all
 *   facework_client_breaker_transitions_total{worker,from,to}
 *   facework_client_breaker_state{worker}              0 closed, 1 open, 2 half-open
 *   facework_client_outstanding{worker}                requests in flight
 * On success *out is owned by the caller (fw_client_free). */
fw_err fw_client_new(const fw_client_config *cfg, fw_client **out, fw_error *err);

/* Stops the threads, waits for in-flight transfers to end, frees everything. NULL is a
 * no-op. No other call on c may be in progress or start. */
void fw_client_free(fw_client *c);

/* Polls GET /health of every worker (exponential backoff from 50 ms up to 1 s) until one
 * answers 200, or timeout_s passes. FW_OK when a worker is ready; FW_ERR_TIMEOUT (message:
 * each worker's last health error) otherwise; FW_ERR_UNAVAILABLE at once when the client is
 * disabled (enabled = 0). Updates the "last health" of fw_client_status. */
fw_err fw_client_wait_ready(fw_client *c, double timeout_s, fw_error *err);

/* Runs one health check of every worker now and waits for them (each bounded by
 * min(attempt_timeout_s, 5 s)); the results land in fw_client_status. Returns the number of
 * workers that answered 200 (0 when the client is disabled). */
size_t fw_client_check_health(fw_client *c);

/* Per-call options. */
typedef struct fw_client_call_opts {
    fw_analyze_opts analyze; /* analyze.embed false: detection only (/v1/detect) */
    double timeout_s;        /* overall deadline of this call; <= 0: the config's timeout_s */
} fw_client_call_opts;

/* Defaults: fw_analyze_opts_init (embed true), timeout_s 0. */
void fw_client_call_opts_init(fw_client_call_opts *opts);

/* One item's outcome and where it was computed. */
typedef struct fw_client_result {
    fw_result result;     /* faces, or status != FW_OK with a message (a per-item error) */
    size_t embedding_dim; /* floats per face embedding (0 when none was computed) */
    char origin[FW_CLIENT_URL_MAX]; /* worker base URL, FW_CLIENT_ORIGIN_FALLBACK, or ""
                                     * when nothing computed it (fallback disabled/failed) */
    unsigned attempts;              /* worker attempts this item was part of (0: fallback only) */
} fw_client_result;

/* Analyzes (or, with opts->analyze.embed false, only detects faces in) n encoded images.
 * results[0..n) are always filled, in input order, exactly one per image (caller clears
 * each with fw_client_result_clear): a worker's answer, the CPU fallback's, or a per-item
 * error. Embeddings are L2-normalised, landmarks always present; quality, crops and the
 * quality filter (opts->analyze) are the worker's or the fallback's, the same either way.
 * opts may be NULL.
 * Returns an error only for a failure of the whole call: FW_ERR_INVALID_ARGUMENT for NULL
 * arguments, a blob with len > 0 and no data, or options out of range
 * (fw_analyze_opts_validate), then results are untouched;
 * FW_ERR_NOMEM, then every result holds that error. n == 0 is FW_OK. Blocking; thread-safe;
 * the blobs must stay valid until it returns. */
fw_err fw_client_analyze(fw_client *c, const fw_blob *blobs, size_t n,
                         const fw_client_call_opts *opts, fw_client_result *results, fw_error *err);

/* Embeds n pre-aligned 112x112 face crops, each an encoded image (JPEG/PNG/WebP), through
 * /v1/embed with the same retries, breaker and fallback as fw_client_analyze. A successful
 * result holds one face: bbox [0,0,112,112], score 1, the ArcFace template landmarks, and
 * the crop's embedding. A crop of another size is a per-item FW_ERR_INVALID_ARGUMENT. Only
 * opts->timeout_s is used. Blocking; thread-safe. */
fw_err fw_client_embed(fw_client *c, const fw_blob *crops, size_t n,
                       const fw_client_call_opts *opts, fw_client_result *results, fw_error *err);

/* Frees what a result owns and zeroes it. NULL is a no-op. */
void fw_client_result_clear(fw_client_result *res);

/* Counters since fw_client_new. */
typedef struct fw_client_counters {
    uint64_t requests;  /* HTTP attempts (health checks excluded) */
    uint64_t successes; /* attempts that got a usable response */
    uint64_t failures;  /* attempts that counted as a breaker failure */
    uint64_t retries;   /* attempts that were retries */
    uint64_t items;     /* items answered by this worker (incl. its bad-input answers) */
    uint64_t connects;  /* connections opened (attempts and health checks) */
    uint64_t transitions[FW_BREAKER__COUNT][FW_BREAKER__COUNT]; /* [from][to] */
} fw_client_counters;

/* A snapshot of one worker. */
typedef struct fw_client_worker_status {
    char url[FW_CLIENT_URL_MAX];
    fw_breaker_state breaker;
    const char *breaker_name;                /* "closed", "open", "half_open" (static string) */
    bool health_checked;                     /* a health check has completed */
    bool health_ok;                          /* the last one answered 200 */
    int health_http_status;                  /* its HTTP status (0: no response) */
    char health_error[FW_ERROR_MESSAGE_MAX]; /* "" when ok, else why */
    double health_age_s;                     /* seconds since it completed (-1 when never) */
    int64_t health_unix_ms;                  /* wall-clock time it completed (0 when never) */
    unsigned outstanding;                    /* requests in flight */
    double latency_ewma_ms;                  /* moving average attempt latency (0: none yet) */
    fw_client_counters counters;
} fw_client_worker_status;

typedef struct fw_client_status_info {
    bool enabled; /* config enabled */
    size_t n_workers;
    fw_client_worker_status workers[FW_CLIENT_MAX_WORKERS];
    bool fallback_enabled;
    bool fallback_loaded;                      /* the CPU engine exists */
    char fallback_error[FW_ERROR_MESSAGE_MAX]; /* last load failure, "" if none */
    const char *http_version;  /* the mode in use: "http/1.1", "h2c-upgrade", "h2-prior" */
    uint64_t calls;            /* fw_client_analyze / fw_client_embed calls */
    uint64_t items;            /* items answered (one per submitted image) */
    uint64_t items_worker;     /* ... computed by a worker */
    uint64_t items_fallback;   /* ... computed by the CPU fallback */
    uint64_t items_error;      /* ... computed by nobody (per-item error, no origin) */
    double gpu_usage_rate;     /* items_worker / items (0 when no items) */
    double fallback_rate;      /* items_fallback / items (0 when no items) */
    uint64_t latency_hist[12]; /* attempt latency counts, buckets FW_CLIENT_LATENCY_BOUNDS_MS,
                                * last one +Inf */
} fw_client_status_info;

/* Upper bounds (milliseconds) of the first 11 latency buckets. */
// clang-format off
#define FW_CLIENT_LATENCY_BOUNDS_MS {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}
// clang-format on

/* Fills *out with a snapshot taken under the client's lock (it never waits for a CPU
 * fallback load or a transfer). c NULL: *out is zeroed. */
void fw_client_status(fw_client *c, fw_client_status_info *out);

/* "closed", "open", "half_open"; "unknown" out of range. */
const char *fw_breaker_state_name(fw_breaker_state s);

#ifdef __cplusplus
}
#endif
#endif
