/* facework backend: the worker's API on port 8000, answered through the client library
 * (see backend.h). */
#include "backend/backend.h"

#ifdef FW_HAVE_fw_client

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "client/client_config.h"
#include "facework/client.h"
#include "facework/facework.h"
#include "server/api.h"
#include "server/http.h"
#include "server/sdnotify.h"
#include "util/config.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/procstat.h"
#include "util/signals.h"

enum { STATE_STARTING = 0, STATE_READY, STATE_DRAINING };

#define MOD "backend"
#define MAX_OPTIONS 48

/* ------------------------------------------------------------------------------------ */
/* options                                                                              */

typedef struct backend_opts {
    fw_str_list listen;
    char *port_file;
    int threads, http_threads, max_pending, max_images, max_connections;
    size_t max_body, max_image_bytes;
    double request_timeout, read_timeout, drain_timeout, wait_ready;
    char *api_key, *api_key_file, *backend_id, *log_format, *log_level;
    /* the client's settings: flags only; the client reads GPU_WORKER_* and .env itself */
    char *worker_url, *http_version, *models;
    double timeout, attempt_timeout, connect_timeout, health_interval, cb_recovery_timeout,
        backoff_base, backoff_max;
    int max_retries, batch_size, cb_failure_threshold, cb_success_threshold, cb_min_requests,
        worker_connections, fallback_threads;
    bool cpu_fallback;
} backend_opts;

#define OPT(n, e, t, d, h, f)                                                                      \
    {                                                                                              \
        .name = n, .env = e, .type = t, .def = d, .help = h, .dest = f                             \
    }

/* build_options puts the backend's own options first: this many. */
static size_t n_own_options;

static size_t build_options(backend_opts *o, fw_option *t)
{
    size_t n = 0;
    t[n++] = (fw_option)OPT("listen", "FACEWORK_BACKEND_LISTEN", FW_OPT_LIST, "127.0.0.1:8000",
                            "address to listen on, HOST:PORT (repeatable; port 0 = any free)",
                            &o->listen);
    t[n++] =
        (fw_option)OPT("port-file", "FACEWORK_BACKEND_PORT_FILE", FW_OPT_STRING, NULL,
                       "when ready, write the first bound HOST:PORT to this file", &o->port_file);
    t[n] = (fw_option)OPT("threads", "FACEWORK_BACKEND_THREADS", FW_OPT_INT, "4",
                          "requests answered at once (each may wait on workers or the fallback)",
                          &o->threads);
    t[n].min = 1, t[n++].max = 256;
    t[n] = (fw_option)OPT("http-threads", "FACEWORK_BACKEND_HTTP_THREADS", FW_OPT_INT, "1",
                          "HTTP event-loop threads", &o->http_threads);
    t[n].min = 1, t[n++].max = 64;
    t[n] = (fw_option)OPT("max-pending", "FACEWORK_BACKEND_MAX_PENDING", FW_OPT_INT, "256",
                          "requests waiting for a thread; beyond it 503 + Retry-After",
                          &o->max_pending);
    t[n].min = 1, t[n++].max = 1000000;
    t[n] = (fw_option)OPT("max-body", "FACEWORK_BACKEND_MAX_BODY", FW_OPT_SIZE, "64MiB",
                          "largest request body; beyond it 413", &o->max_body);
    t[n].min = 1024, t[n++].max = 16.0 * 1024 * 1024 * 1024;
    t[n] = (fw_option)OPT("max-images", "FACEWORK_BACKEND_MAX_IMAGES", FW_OPT_INT, "64",
                          "images per request; beyond it 413", &o->max_images);
    t[n].min = 1, t[n++].max = 100000;
    t[n] =
        (fw_option)OPT("max-image-bytes", "FACEWORK_BACKEND_MAX_IMAGE_BYTES", FW_OPT_SIZE, "20MiB",
                       "bytes per image; beyond it a per-item error", &o->max_image_bytes);
    t[n].min = 1024, t[n++].max = 4.0 * 1024 * 1024 * 1024;
    t[n] = (fw_option)OPT("max-connections", "FACEWORK_BACKEND_MAX_CONNECTIONS", FW_OPT_INT, "1024",
                          "open client connections", &o->max_connections);
    t[n].min = 1, t[n++].max = 1000000;
    t[n] = (fw_option)OPT("request-timeout", "FACEWORK_BACKEND_REQUEST_TIMEOUT", FW_OPT_DURATION,
                          "300s", "a request not answered by then gets 503 (0: no limit)",
                          &o->request_timeout);
    t[n].min = 0, t[n++].max = 3600;
    t[n] = (fw_option)OPT("read-timeout", "FACEWORK_BACKEND_READ_TIMEOUT", FW_OPT_DURATION, "10s",
                          "time to send a request (slow clients are cut off); idle keep-alive",
                          &o->read_timeout);
    t[n].min = 0.1, t[n++].max = 3600;
    t[n] = (fw_option)OPT("drain-timeout", "FACEWORK_BACKEND_DRAIN_TIMEOUT", FW_OPT_DURATION, "30s",
                          "on SIGTERM/SIGINT, how long in-flight requests may take",
                          &o->drain_timeout);
    t[n].min = 0, t[n++].max = 3600;
    t[n] = (fw_option)OPT("wait-ready", "FACEWORK_BACKEND_WAIT_READY", FW_OPT_DURATION, "0",
                          "at start, wait this long for a worker before reporting ready "
                          "(requests are served meanwhile)",
                          &o->wait_ready);
    t[n].min = 0, t[n++].max = 3600;
    t[n] = (fw_option)OPT("api-key", "FACEWORK_BACKEND_API_KEY", FW_OPT_STRING, NULL,
                          "require this key from callers (Authorization: Bearer or X-API-Key)",
                          &o->api_key);
    t[n++].flags = FW_OPT_SECRET;
    t[n++] = (fw_option)OPT("api-key-file", "FACEWORK_BACKEND_API_KEY_FILE", FW_OPT_STRING, NULL,
                            "read that key from this file (first line)", &o->api_key_file);
    t[n++] = (fw_option)OPT("backend-id", "FACEWORK_BACKEND_ID", FW_OPT_STRING, NULL,
                            "worker_id in legacy answers (default: backend:HOSTNAME:PORT)",
                            &o->backend_id);
    t[n++] = (fw_option)OPT("log-format", "FACEWORK_LOG_FORMAT", FW_OPT_STRING, "logfmt",
                            "logfmt or json", &o->log_format);
    t[n++] = (fw_option)OPT("log-level", "FACEWORK_LOG_LEVEL", FW_OPT_STRING, "info",
                            "debug|info|warn|error", &o->log_level);

    /* client settings; unset flags leave them to GPU_WORKER_* / .env / the defaults */
    n_own_options = n;
    t[n++] = (fw_option)OPT("worker-url", NULL, FW_OPT_STRING, NULL,
                            "worker base URLs, comma-separated (GPU_WORKER_URL; "
                            "http://127.0.0.1:8765)",
                            &o->worker_url);
    t[n] = (fw_option)OPT("timeout", NULL, FW_OPT_DURATION, NULL,
                          "overall deadline of a call on workers (GPU_WORKER_TIMEOUT; 60s)",
                          &o->timeout);
    t[n].min = 0.001, t[n++].max = 86400;
    t[n] =
        (fw_option)OPT("attempt-timeout", NULL, FW_OPT_DURATION, NULL,
                       "one HTTP attempt (GPU_WORKER_ATTEMPT_TIMEOUT; 20s)", &o->attempt_timeout);
    t[n].min = 0.001, t[n++].max = 86400;
    t[n] = (fw_option)OPT("connect-timeout", NULL, FW_OPT_DURATION, NULL,
                          "TCP connect (GPU_WORKER_CONNECT_TIMEOUT; 2s)", &o->connect_timeout);
    t[n].min = 0.001, t[n++].max = 3600;
    t[n] = (fw_option)OPT("max-retries", NULL, FW_OPT_INT, NULL,
                          "retries per batch (GPU_WORKER_MAX_RETRIES; 5)", &o->max_retries);
    t[n].min = 0, t[n++].max = 100;
    t[n] = (fw_option)OPT("batch-size", NULL, FW_OPT_INT, NULL,
                          "images per worker request (GPU_WORKER_BATCH_SIZE; 32)", &o->batch_size);
    t[n].min = 1, t[n++].max = 100000;
    t[n] = (fw_option)OPT("health-interval", NULL, FW_OPT_DURATION, NULL,
                          "worker health checks, 0: none (GPU_WORKER_HEALTH_CHECK_INTERVAL; 10s)",
                          &o->health_interval);
    t[n].min = 0, t[n++].max = 86400;
    t[n] = (fw_option)OPT("cb-failure-threshold", NULL, FW_OPT_INT, NULL,
                          "breaker: failures that open it (GPU_WORKER_CB_FAILURE_THRESHOLD; 15)",
                          &o->cb_failure_threshold);
    t[n].min = 1, t[n++].max = 1000000;
    t[n] = (fw_option)OPT("cb-recovery-timeout", NULL, FW_OPT_DURATION, NULL,
                          "breaker: open -> half-open after (GPU_WORKER_CB_RECOVERY_TIMEOUT; 20s)",
                          &o->cb_recovery_timeout);
    t[n].min = 0, t[n++].max = 86400;
    t[n] = (fw_option)OPT("cb-success-threshold", NULL, FW_OPT_INT, NULL,
                          "breaker: half-open successes that close it "
                          "(GPU_WORKER_CB_SUCCESS_THRESHOLD; 3)",
                          &o->cb_success_threshold);
    t[n].min = 1, t[n++].max = 1000000;
    t[n] = (fw_option)OPT("cb-min-requests", NULL, FW_OPT_INT, NULL,
                          "breaker: requests seen before it may open (GPU_WORKER_CB_MIN_REQUESTS; "
                          "10)",
                          &o->cb_min_requests);
    t[n].min = 0, t[n++].max = 1000000;
    t[n] = (fw_option)OPT("worker-connections", NULL, FW_OPT_INT, NULL,
                          "connections per worker (GPU_WORKER_MAX_CONNECTIONS; 8)",
                          &o->worker_connections);
    t[n].min = 1, t[n++].max = 1024;
    t[n] = (fw_option)OPT("backoff-base", NULL, FW_OPT_DURATION, NULL,
                          "retry backoff base (GPU_WORKER_BACKOFF_BASE; 100ms)", &o->backoff_base);
    t[n].min = 0, t[n++].max = 3600;
    t[n] = (fw_option)OPT("backoff-max", NULL, FW_OPT_DURATION, NULL,
                          "retry backoff cap (GPU_WORKER_BACKOFF_MAX; 5s)", &o->backoff_max);
    t[n].min = 0, t[n++].max = 3600;
    t[n++] =
        (fw_option)OPT("http-version", NULL, FW_OPT_STRING, NULL,
                       "auto|1.1|h2c|h2-prior-knowledge (GPU_WORKER_HTTP; auto)", &o->http_version);
    t[n++] = (fw_option)OPT("cpu-fallback", NULL, FW_OPT_BOOL, NULL,
                            "compute in-process when no worker can (GPU_WORKER_CPU_FALLBACK; true)",
                            &o->cpu_fallback);
    t[n++] = (fw_option)OPT("models", NULL, FW_OPT_STRING, NULL,
                            "CPU fallback model pack (FACEWORK_MODELS; the pack setup installed)",
                            &o->models);
    /* read here as well as by the client: unset everywhere, the backend picks its own
     * default (fallback_threads_auto) */
    t[n] = (fw_option)OPT("fallback-threads", "GPU_WORKER_CPU_FALLBACK_THREADS", FW_OPT_INT, NULL,
                          "CPU fallback ONNX Runtime intra-op threads per call, 0: ORT's choice "
                          "(default: cores / --threads, at least 1)",
                          &o->fallback_threads);
    t[n].min = 0, t[n++].max = 256;
    return n;
}

static bool flag_set(const fw_option *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].name && !strcmp(t[i].name, name))
            return t[i].source == FW_SRC_FLAG;
    return false;
}

/* True when the option was given at all (flag, environment or .env). */
static bool opt_given(const fw_option *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].name && !strcmp(t[i].name, name))
            return t[i].source != FW_SRC_DEFAULT;
    return false;
}

/* The CPU fallback's intra-op threads when nobody chose: the backend runs up to --threads
 * calls at once, each a fallback run when the workers are down; ONNX Runtime's default (a
 * pool of every core per run, spinning) oversubscribes the cores as soon as two run at once
 * (measured on 2 cores: half the throughput of one thread per run). So the cores are shared
 * out: cores / threads, at least 1. */
static int fallback_threads_auto(int threads)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    long per = cores / (threads > 0 ? threads : 1);
    return per < 1 ? 1 : per > 256 ? 256 : (int)per;
}

/* Client flags given on the command line become explicit client settings. Errors name the
 * flag (FW_ERR_INVALID_ARGUMENT). */
static fw_err client_flags(const backend_opts *o, const fw_option *t, size_t n,
                           fw_client_config *cfg, fw_error *err)
{
#define SETF(name, field, value)                                                                   \
    if (flag_set(t, n, name))                                                                      \
        cfg->field = value;
    if (flag_set(t, n, "worker-url")) {
        char(*urls)[FW_CLIENT_URL_MAX] = malloc(FW_CLIENT_MAX_WORKERS * sizeof *urls);
        size_t nurls = 0;
        if (!urls)
            return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
        fw_err rc = strlen(o->worker_url) >= sizeof cfg->urls
                        ? fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                       "--worker-url: longer than %zu bytes", sizeof cfg->urls - 1)
                        : fw__split_urls(o->worker_url, "--worker-url", urls, &nurls, err);
        free(urls);
        if (rc)
            return rc;
        snprintf(cfg->urls, sizeof cfg->urls, "%s", o->worker_url);
    }
    if (flag_set(t, n, "models")) {
        if (strlen(o->models) >= sizeof cfg->fallback_models_dir)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "--models: longer than %zu bytes",
                                sizeof cfg->fallback_models_dir - 1);
        snprintf(cfg->fallback_models_dir, sizeof cfg->fallback_models_dir, "%s", o->models);
    }
    if (flag_set(t, n, "http-version")) {
        fw_client_http mode;
        if (!fw__parse_http_mode(o->http_version, &mode))
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "--http-version='%s': not auto, 1.1, h2c or h2-prior-knowledge",
                                o->http_version);
        cfg->http_version = (int)mode;
    }
    SETF("timeout", timeout_s, o->timeout);
    SETF("attempt-timeout", attempt_timeout_s, o->attempt_timeout);
    SETF("connect-timeout", connect_timeout_s, o->connect_timeout);
    SETF("max-retries", max_retries, o->max_retries);
    SETF("batch-size", batch_size, o->batch_size);
    SETF("health-interval", health_interval_s, o->health_interval);
    SETF("cb-failure-threshold", failure_threshold, o->cb_failure_threshold);
    SETF("cb-recovery-timeout", recovery_timeout_s, o->cb_recovery_timeout);
    SETF("cb-success-threshold", success_threshold, o->cb_success_threshold);
    SETF("cb-min-requests", min_requests, o->cb_min_requests);
    SETF("worker-connections", max_connections, o->worker_connections);
    SETF("backoff-base", backoff_base_s, o->backoff_base);
    SETF("backoff-max", backoff_max_s, o->backoff_max);
    SETF("cpu-fallback", fallback, o->cpu_fallback ? 1 : 0);
    cfg->fallback_threads = opt_given(t, n, "fallback-threads") ? o->fallback_threads
                                                                : fallback_threads_auto(o->threads);
#undef SETF
    return FW_OK;
}

/* The client's validation names fw_client_config fields ("backoff_max_s: must be ..."); the
 * values the environment gave were already checked under their variable's name, so such an
 * error comes from a flag (alone, or against an environment value). Rewrites the message
 * in place to name the flag and its variable: "--backoff-max (GPU_WORKER_BACKOFF_MAX): must
 * be --backoff-base..3600 seconds". Messages that do not start with a field name are left
 * as they are. */
static void name_flags_in_error(fw_error *err)
{
    static const struct {
        const char *field, *flag, *env;
    } names[] = {
        {"urls", "--worker-url", "GPU_WORKER_URL"},
        {"timeout_s", "--timeout", "GPU_WORKER_TIMEOUT"},
        {"attempt_timeout_s", "--attempt-timeout", "GPU_WORKER_ATTEMPT_TIMEOUT"},
        {"connect_timeout_s", "--connect-timeout", "GPU_WORKER_CONNECT_TIMEOUT"},
        {"max_retries", "--max-retries", "GPU_WORKER_MAX_RETRIES"},
        {"batch_size", "--batch-size", "GPU_WORKER_BATCH_SIZE"},
        {"health_interval_s", "--health-interval", "GPU_WORKER_HEALTH_CHECK_INTERVAL"},
        {"failure_threshold", "--cb-failure-threshold", "GPU_WORKER_CB_FAILURE_THRESHOLD"},
        {"recovery_timeout_s", "--cb-recovery-timeout", "GPU_WORKER_CB_RECOVERY_TIMEOUT"},
        {"success_threshold", "--cb-success-threshold", "GPU_WORKER_CB_SUCCESS_THRESHOLD"},
        {"min_requests", "--cb-min-requests", "GPU_WORKER_CB_MIN_REQUESTS"},
        {"max_connections", "--worker-connections", "GPU_WORKER_MAX_CONNECTIONS"},
        {"backoff_base_s", "--backoff-base", "GPU_WORKER_BACKOFF_BASE"},
        {"backoff_max_s", "--backoff-max", "GPU_WORKER_BACKOFF_MAX"},
        {"http_version", "--http-version", "GPU_WORKER_HTTP"},
        {"fallback_threads", "--fallback-threads", "GPU_WORKER_CPU_FALLBACK_THREADS"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t fl = strlen(names[i].field);
        if (strncmp(err->message, names[i].field, fl) || err->message[fl] != ':')
            continue;
        char rest[sizeof err->message];
        snprintf(rest, sizeof rest, "%s", err->message + fl);
        /* the one cross-field rule: "must be backoff_base_s..3600 seconds" */
        char *ref = strstr(rest, "backoff_base_s");
        if (ref)
            fw_error_set(err, err->code, "%s (%s)%.*s--backoff-base%s", names[i].flag, names[i].env,
                         (int)(ref - rest), rest, ref + strlen("backoff_base_s"));
        else
            fw_error_set(err, err->code, "%s (%s)%s", names[i].flag, names[i].env, rest);
        return;
    }
}

/* ------------------------------------------------------------------------------------ */
/* state                                                                                */

typedef struct job job;

typedef struct worker_ref {
    struct backend *b;
    size_t index;
} worker_ref;

typedef struct backend {
    backend_opts o;
    fw_client *client;
    fw_http_server *http;
    fw_metrics *reg;
    atomic_int state;
    atomic_int stop_requested;
    double started;
    char backend_id[256];
    char model[128];
    char *api_key;
    size_t api_key_len;
    fw_api_limits limits;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;

    /* the thread pool that runs client calls */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv, idle_cv;
    job *head, *tail;
    size_t pending, running;
    bool pool_stop;
    pthread_t *threads;
    size_t n_threads;

    worker_ref refs[FW_CLIENT_MAX_WORKERS];

    /* metrics */
    fw_metric_family *m_requests, *m_req_seconds, *m_success;
} backend;

struct job {
    job *next;
    backend *b;
    fw_http_request *req;
    fw_api_request *api;
    double t0;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void set_state(backend *b, int state)
{
    static const char *const names[] = {"starting", "ready", "draining"};
    int old = atomic_exchange(&b->state, state);
    if (old != state)
        FW_INFO(MOD, "state", "from=%s to=%s", names[old], names[state]);
}

/* Constant-time comparison: the time depends only on the presented key's length. */
static bool key_matches(const backend *b, const char *given)
{
    size_t glen = strlen(given);
    unsigned char diff = (unsigned char)(glen != b->api_key_len);
    for (size_t i = 0; i < glen; i++)
        diff |= (unsigned char)given[i] ^ (unsigned char)b->api_key[i % b->api_key_len];
    return diff == 0;
}

static bool authorized(const backend *b, fw_http_request *req)
{
    if (!b->api_key)
        return true;
    const char *h = fw_http_header(req, "x-api-key");
    if (h && key_matches(b, h))
        return true;
    h = fw_http_header(req, "authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ')
            h++;
        if (key_matches(b, h))
            return true;
    }
    return false;
}

/* ------------------------------------------------------------------------------------ */
/* answering a request (on a pool thread)                                               */

/* Appends s as a JSON string literal to out (at most cap bytes, NUL kept); returns the new
 * length, or (size_t)-1 when it does not fit. */
static size_t json_str(char *out, size_t len, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (len + 2 >= cap)
        return (size_t)-1;
    out[len++] = '"';
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (len + 7 >= cap)
            return (size_t)-1;
        if (ch == '"' || ch == '\\') {
            out[len++] = '\\';
            out[len++] = (char)ch;
        } else if (ch < 0x20) {
            memcpy(out + len, "\\u00", 4);
            out[len + 4] = hex[ch >> 4];
            out[len + 5] = hex[ch & 15];
            len += 6;
        } else {
            out[len++] = (char)ch;
        }
    }
    out[len++] = '"';
    out[len] = '\0';
    return len;
}

/* Inserts "origins":[...] at the front of the v1 JSON object body (len bytes, malloc'd;
 * consumed). Returns the new body or NULL when out of memory (body freed). */
static char *add_origins(char *body, size_t len, char (*origins)[FW_CLIENT_URL_MAX], size_t n,
                         size_t *out_len)
{
    size_t cap = 16 + n * (6 * FW_CLIENT_URL_MAX + 3) + len + 1;
    char *out = malloc(cap);
    if (!out || len < 2 || body[0] != '{') {
        free(out);
        free(body);
        return NULL;
    }
    size_t k = (size_t)snprintf(out, cap, "{\"origins\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            out[k++] = ',';
        k = json_str(out, k, cap, origins[i]);
        if (k == (size_t)-1) {
            free(out);
            free(body);
            return NULL;
        }
    }
    out[k++] = ']';
    if (body[1] != '}')
        out[k++] = ',';
    memcpy(out + k, body + 1, len - 1);
    k += len - 1;
    out[k] = '\0';
    free(body);
    *out_len = k;
    return out;
}

static void run_job(job *j)
{
    backend *b = j->b;
    fw_api_request *api = j->api;
    size_t n = api->n_items, n_ok = 0;
    fw_result *results = calloc(n, sizeof *results);
    fw_blob *blobs = calloc(n, sizeof *blobs);
    size_t *index = calloc(n, sizeof *index);
    fw_client_result *cres = calloc(n, sizeof *cres);
    char(*origins)[FW_CLIENT_URL_MAX] = calloc(n, sizeof *origins);
    char *body = NULL;
    size_t len = 0;
    fw_error err;
    if (!results || !blobs || !index || !cres || !origins) {
        fw_http_respond_error(j->req, 503, "out_of_memory", "out of memory", 1);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (api->items[i].error != FW_OK)
            continue;
        blobs[n_ok] = (fw_blob){api->items[i].data, api->items[i].len};
        index[n_ok++] = i;
    }
    if (n_ok > 0) {
        fw_client_call_opts co;
        fw_client_call_opts_init(&co);
        fw_api_analyze_opts(api, &co.analyze);
        fw_err rc = api->route == FW_ROUTE_V1_EMBED
                        ? fw_client_embed(b->client, blobs, n_ok, &co, cres, &err)
                        : fw_client_analyze(b->client, blobs, n_ok, &co, cres, &err);
        if (rc != FW_OK) {
            FW_ERROR(MOD, "client call failed", "request_id=%s error=\"%s\"", j->req->request_id,
                     err.message);
            if (rc == FW_ERR_NOMEM)
                fw_http_respond_error(j->req, 503, "out_of_memory", "out of memory", 1);
            else
                fw_http_respond_error(j->req, 503, fw_err_name(rc), err.message, 1);
            goto out;
        }
    }
    size_t dim = 0, by_worker = 0, by_fallback = 0;
    for (size_t k = 0; k < n_ok; k++) {
        size_t i = index[k];
        results[i] = cres[k].result; /* moves the faces */
        memset(&cres[k].result, 0, sizeof cres[k].result);
        memcpy(origins[i], cres[k].origin, sizeof origins[i]);
        origins[i][FW_CLIENT_URL_MAX - 1] = '\0';
        if (cres[k].embedding_dim > dim)
            dim = cres[k].embedding_dim;
        if (!strcmp(origins[i], FW_CLIENT_ORIGIN_FALLBACK))
            by_fallback++;
        else if (origins[i][0])
            by_worker++;
    }
    fw_api_response_info info = {
        .took_ms = (now_s() - j->t0) * 1e3,
        .provider = by_worker && by_fallback ? "mixed"
                    : by_worker              ? "worker"
                    : by_fallback            ? FW_CLIENT_ORIGIN_FALLBACK
                                             : "",
        .model = b->model,
        .embedding_dim = dim ? dim : 512,
        .gpu_used = by_worker > 0,
        .worker_id = b->backend_id,
    };
    if (fw_api_encode_response(api, results, &info, &body, &len, &err) != FW_OK) {
        FW_ERROR(MOD, "encode failed", "request_id=%s error=\"%s\"", j->req->request_id,
                 err.message);
        fw_http_respond_error(j->req, 503, "internal_error", "could not encode the response", 1);
        goto out;
    }
    if (api->route == FW_ROUTE_V1_ANALYZE || api->route == FW_ROUTE_V1_DETECT ||
        api->route == FW_ROUTE_V1_EMBED) {
        body = add_origins(body, len, origins, n, &len);
        if (!body) {
            fw_http_respond_error(j->req, 503, "out_of_memory", "out of memory", 1);
            goto out;
        }
    }
    fw_http_respond_take(j->req, 200, "application/json", NULL, 0, body, len);
out:
    if (results)
        for (size_t i = 0; i < n; i++)
            fw_result_clear(&results[i]);
    if (cres)
        for (size_t k = 0; k < n; k++)
            fw_client_result_clear(&cres[k]);
    free(results);
    free(blobs);
    free(index);
    free(cres);
    free(origins);
    fw_api_request_free(api);
    free(j);
}

static void *pool_main(void *arg)
{
    backend *b = arg;
    pthread_mutex_lock(&b->pool_mu);
    for (;;) {
        while (!b->head && !b->pool_stop)
            pthread_cond_wait(&b->pool_cv, &b->pool_mu);
        job *j = b->head;
        if (!j)
            break; /* stopping and nothing left */
        b->head = j->next;
        if (!b->head)
            b->tail = NULL;
        b->pending--;
        b->running++;
        pthread_mutex_unlock(&b->pool_mu);
        run_job(j);
        pthread_mutex_lock(&b->pool_mu);
        b->running--;
        if (!b->head && b->running == 0)
            pthread_cond_broadcast(&b->idle_cv);
    }
    pthread_mutex_unlock(&b->pool_mu);
    return NULL;
}

/* Queues j; false when the queue is full or the pool is stopping. */
static bool pool_submit(backend *b, job *j)
{
    pthread_mutex_lock(&b->pool_mu);
    bool ok = !b->pool_stop && b->pending < (size_t)b->o.max_pending;
    if (ok) {
        j->next = NULL;
        if (b->tail)
            b->tail->next = j;
        else
            b->head = j;
        b->tail = j;
        b->pending++;
        pthread_cond_signal(&b->pool_cv);
    }
    pthread_mutex_unlock(&b->pool_mu);
    return ok;
}

/* Waits until no job is queued or running, at most timeout_s; true when idle. */
static bool pool_wait_idle(backend *b, double timeout_s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double end = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + timeout_s;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&b->pool_mu);
    int rc = 0;
    while ((b->head || b->running) && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&b->idle_cv, &b->pool_mu, &ts);
    bool idle = !b->head && !b->running;
    pthread_mutex_unlock(&b->pool_mu);
    return idle;
}

/* Stops the pool: jobs still queued are answered 503, running ones finish; joins. */
static void pool_stop(backend *b)
{
    pthread_mutex_lock(&b->pool_mu);
    b->pool_stop = true;
    job *left = b->head;
    b->head = b->tail = NULL;
    b->pending = 0;
    pthread_cond_broadcast(&b->pool_cv);
    pthread_mutex_unlock(&b->pool_mu);
    while (left) {
        job *next = left->next;
        fw_http_respond_error(left->req, 503, "unavailable", "the backend is shutting down", 5);
        fw_api_request_free(left->api);
        free(left);
        left = next;
    }
    for (size_t i = 0; i < b->n_threads; i++)
        pthread_join(b->threads[i], NULL);
    free(b->threads);
    b->threads = NULL;
    b->n_threads = 0;
}

static fw_err pool_start(backend *b, fw_error *err)
{
    b->threads = calloc((size_t)b->o.threads, sizeof *b->threads);
    if (!b->threads)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    for (int i = 0; i < b->o.threads; i++) {
        if (pthread_create(&b->threads[i], NULL, pool_main, b) != 0)
            return fw_error_set(err, FW_ERR_INTERNAL, "cannot start a thread: %s", strerror(errno));
        b->n_threads++;
    }
    return FW_OK;
}

/* ------------------------------------------------------------------------------------ */
/* HTTP handlers (loop threads: never block)                                            */

static void handle_infer(fw_http_request *req, void *user)
{
    backend *b = user;
    if (!authorized(b, req)) {
        fw_http_respond_error(req, 401, "unauthorized", "missing or invalid API key", 0);
        return;
    }
    if (atomic_load(&b->state) == STATE_DRAINING) {
        fw_http_respond_error(req, 503, "unavailable", "the backend is shutting down", 5);
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
                     &b->limits, &api, &aerr) != FW_OK) {
        size_t len = 0;
        char *body = fw_api_error_to_json(&aerr, &len);
        if (body)
            fw_http_respond_take(req, aerr.status, "application/json", NULL, 0, body, len);
        else
            fw_http_respond_error(req, 503, "out_of_memory", "out of memory", 1);
        return;
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        fw_api_request_free(api);
        fw_http_respond_error(req, 503, "out_of_memory", "out of memory", 1);
        return;
    }
    j->b = b;
    j->req = req;
    j->api = api;
    j->t0 = now_s();
    if (!pool_submit(b, j)) {
        fw_api_request_free(api);
        free(j);
        fw_http_respond_error(req, 503, "busy", "too many requests waiting; retry later", 1);
    }
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

static json_t *worker_json(const fw_client_worker_status *w)
{
    json_t *o = json_object();
    json_object_set_new(o, "url", json_string(w->url));
    json_object_set_new(o, "breaker", json_string(w->breaker_name));
    json_t *h = json_object();
    json_object_set_new(h, "checked", json_boolean(w->health_checked));
    json_object_set_new(h, "ok", json_boolean(w->health_ok));
    json_object_set_new(h, "http_status", json_integer(w->health_http_status));
    json_object_set_new(h, "error", json_string(w->health_error));
    json_object_set_new(h, "age_s", json_real(w->health_age_s));
    json_object_set_new(o, "health", h);
    json_object_set_new(o, "outstanding", json_integer(w->outstanding));
    json_object_set_new(o, "latency_ewma_ms", json_real(w->latency_ewma_ms));
    const fw_client_counters *c = &w->counters;
    json_object_set_new(o, "requests", json_integer((json_int_t)c->requests));
    json_object_set_new(o, "successes", json_integer((json_int_t)c->successes));
    json_object_set_new(o, "failures", json_integer((json_int_t)c->failures));
    json_object_set_new(o, "retries", json_integer((json_int_t)c->retries));
    json_object_set_new(o, "items", json_integer((json_int_t)c->items));
    json_t *tr = json_object();
    for (int f = 0; f < FW_BREAKER__COUNT; f++)
        for (int t = 0; t < FW_BREAKER__COUNT; t++) {
            if (f == t)
                continue;
            char key[48];
            snprintf(key, sizeof key, "%s->%s", fw_breaker_state_name((fw_breaker_state)f),
                     fw_breaker_state_name((fw_breaker_state)t));
            json_object_set_new(tr, key, json_integer((json_int_t)c->transitions[f][t]));
        }
    json_object_set_new(o, "transitions", tr);
    return o;
}

static void handle_health(fw_http_request *req, void *user)
{
    backend *b = user;
    fw_client_status_info *st = malloc(sizeof *st);
    if (!st) {
        fw_http_respond_error(req, 503, "out_of_memory", "out of memory", 1);
        return;
    }
    fw_client_status(b->client, st);
    size_t healthy = 0;
    json_t *ws = json_array();
    for (size_t i = 0; i < st->n_workers; i++) {
        const fw_client_worker_status *w = &st->workers[i];
        /* without a health check yet (or with checks disabled) the breaker tells */
        healthy += w->health_checked ? w->health_ok : w->breaker != FW_BREAKER_OPEN;
        json_array_append_new(ws, worker_json(w));
    }
    int state = atomic_load(&b->state);
    const char *status = state == STATE_STARTING   ? "starting"
                         : state == STATE_DRAINING ? "draining"
                         : healthy                 ? "healthy"
                         : st->fallback_enabled    ? "degraded"
                                                   : "unavailable";
    int code = !strcmp(status, "healthy") || !strcmp(status, "degraded") ? 200 : 503;
    size_t pending;
    pthread_mutex_lock(&b->pool_mu);
    pending = b->pending + b->running;
    pthread_mutex_unlock(&b->pool_mu);

    json_t *j = json_object();
    json_object_set_new(j, "status", json_string(status));
    json_object_set_new(j, "role", json_string("backend"));
    /* the legacy fields, from the backend's point of view: its "GPU" is its workers */
    json_object_set_new(j, "gpu_available", json_boolean(healthy > 0));
    json_object_set_new(j, "directml_available", json_false());
    json_object_set_new(j, "model_loaded", json_boolean(healthy > 0 || st->fallback_enabled));
    json_object_set_new(j, "uptime_seconds", json_real(now_s() - b->started));
    json_object_set_new(j, "provider", json_string(healthy ? "worker" : FW_CLIENT_ORIGIN_FALLBACK));
    json_object_set_new(j, "queue_depth", json_integer((json_int_t)pending));
    json_object_set_new(j, "version", json_string(fw_version()));
    json_object_set_new(j, "worker_id", json_string(b->backend_id));
    json_object_set_new(j, "pid", json_integer((json_int_t)getpid()));
    json_object_set_new(j, "workers_healthy", json_integer((json_int_t)healthy));
    json_object_set_new(j, "workers", ws);
    json_t *fb = json_object();
    json_object_set_new(fb, "enabled", json_boolean(st->fallback_enabled));
    json_object_set_new(fb, "loaded", json_boolean(st->fallback_loaded));
    json_object_set_new(fb, "error", json_string(st->fallback_error));
    json_object_set_new(j, "fallback", fb);
    json_object_set_new(j, "http_version", json_string(st->http_version ? st->http_version : ""));
    json_object_set_new(j, "calls", json_integer((json_int_t)st->calls));
    json_object_set_new(j, "items", json_integer((json_int_t)st->items));
    json_object_set_new(j, "items_worker", json_integer((json_int_t)st->items_worker));
    json_object_set_new(j, "items_fallback", json_integer((json_int_t)st->items_fallback));
    json_object_set_new(j, "items_error", json_integer((json_int_t)st->items_error));
    json_object_set_new(j, "gpu_usage_rate", json_real(st->gpu_usage_rate));
    json_object_set_new(j, "fallback_rate", json_real(st->fallback_rate));
    free(st);
    respond_json(req, code, j);
}

static void handle_metrics(fw_http_request *req, void *user)
{
    backend *b = user;
    char *text = NULL;
    size_t len = 0;
    fw_error err;
    if (fw_metrics_render(b->reg, &text, &len, &err) != FW_OK) {
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
        "/detect_faces_batch", "/health",    "/metrics"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(path, known[i]))
            return known[i];
    return "other";
}

static void access_log(const fw_http_access_entry *e, void *user)
{
    backend *b = user;
    char status[8];
    snprintf(status, sizeof status, "%d", e->status);
    const char *route = route_label(e->path);
    fw_counter_inc(fw_metric_get(b->m_requests, FW_LABELS(route, status)));
    fw_histogram_observe(fw_metric_get(b->m_req_seconds, FW_LABELS(route)),
                         (double)e->duration_us / 1e6);
    fw_log(strcmp(route, "/health") && strcmp(route, "/metrics") ? FW_LOG_INFO : FW_LOG_DEBUG,
           "http", "request",
           "request_id=%s method=%s path=%s status=%d bytes=%llu duration_ms=%.2f http=%d "
           "remote=%s",
           e->request_id, e->method, route, e->status, (unsigned long long)e->bytes_sent,
           (double)e->duration_us / 1e3, e->http_version, e->remote_addr);
}

static double gauge_pending(void *user)
{
    backend *b = user;
    pthread_mutex_lock(&b->pool_mu);
    double v = (double)b->pending;
    pthread_mutex_unlock(&b->pool_mu);
    return v;
}

static double gauge_ready(void *user)
{
    backend *b = user;
    return atomic_load(&b->state) == STATE_READY;
}

/* Share of one worker's attempts that succeeded (NaN before its first attempt). */
static double worker_success_ratio(void *user)
{
    worker_ref *r = user;
    fw_client_status_info *st = malloc(sizeof *st);
    if (!st)
        return 0.0 / 0.0;
    fw_client_status(r->b->client, st);
    double v = 0.0 / 0.0;
    if (r->index < st->n_workers && st->workers[r->index].counters.requests > 0)
        v = (double)st->workers[r->index].counters.successes /
            (double)st->workers[r->index].counters.requests;
    free(st);
    return v;
}

static fw_err setup_metrics(backend *b, fw_error *err)
{
    static const double seconds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1,     2.5,  5,     10,   30,  60};
    fw_err rc;
    if ((rc = fw_metrics_new(&b->reg, err)))
        return rc;
    fw_metrics *r = b->reg;
    if ((rc = fw_metrics_counter(r, "facework_backend_http_requests_total",
                                 "HTTP requests answered by the backend, by route and status",
                                 FW_LABELS("route", "status"), &b->m_requests, err)) ||
        (rc = fw_metrics_histogram(r, "facework_backend_http_request_duration_seconds",
                                   "backend HTTP request duration", FW_LABELS("route"), seconds,
                                   sizeof seconds / sizeof seconds[0], &b->m_req_seconds, err)) ||
        (rc = fw_metrics_gauge(r, "facework_backend_worker_success_ratio",
                               "share of a worker's HTTP attempts that succeeded",
                               FW_LABELS("worker"), &b->m_success, err)) ||
        (rc = fw_metrics_callback(r, FW_METRIC_GAUGE, "facework_backend_pending_requests",
                                  "requests waiting for a backend thread", gauge_pending, b, NULL,
                                  err)) ||
        (rc = fw_metrics_callback(r, FW_METRIC_GAUGE, "facework_backend_ready",
                                  "1 when the backend reports ready", gauge_ready, b, NULL, err)) ||
        (rc = fw_procstat_register(r, err)))
        return rc;
    return FW_OK;
}

static void register_worker_metrics(backend *b)
{
    fw_client_status_info *st = malloc(sizeof *st);
    if (!st)
        return;
    fw_client_status(b->client, st);
    fw_error err;
    for (size_t i = 0; i < st->n_workers; i++) {
        b->refs[i] = (worker_ref){b, i};
        if (fw_metrics_callback_child(b->m_success, FW_LABELS(st->workers[i].url),
                                      worker_success_ratio, &b->refs[i], NULL, &err))
            FW_WARN(MOD, "metric not registered", "error=\"%s\"", err.message);
    }
    free(st);
}

/* ------------------------------------------------------------------------------------ */
/* lifecycle                                                                            */

static void on_signal(int signo, void *user)
{
    backend *b = user;
    FW_INFO(MOD, "signal", "signo=%d name=%s", signo, strsignal(signo));
    if (signo == SIGHUP)
        return;
    pthread_mutex_lock(&b->stop_mu);
    atomic_store(&b->stop_requested, 1);
    pthread_cond_broadcast(&b->stop_cv);
    pthread_mutex_unlock(&b->stop_mu);
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
        FW_WARN(MOD, "port file not written", "path=\"%s\" error=\"%s\"", path, strerror(errno));
        if (f)
            unlink(tmp);
    }
}

/* The model pack's short name: its directory's last component. */
static void pack_name(const char *dir, char *out, size_t cap)
{
    if (!dir || !dir[0])
        dir = fw_default_models_dir();
    size_t len = dir ? strlen(dir) : 0;
    while (len > 1 && dir[len - 1] == '/')
        len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/')
        start--;
    size_t n = len - start;
    if (n >= cap)
        n = cap - 1;
    if (dir)
        memcpy(out, dir + start, n);
    out[n] = '\0';
}

static bool stop_requested(backend *b)
{
    return atomic_load(&b->stop_requested) != 0;
}

static int run_backend(backend *b, const fw_option *table, size_t n_opts)
{
    fw_error err;
    int status = 1;
    bool pool_started = false;

    /* Signals first, so that every thread created later (client, pool, HTTP) blocks them. */
    if (fw_signals_start(on_signal, b, &err)) {
        FW_ERROR(MOD, "signals", "error=\"%s\"", err.message);
        return 1;
    }
    if (setup_metrics(b, &err)) {
        FW_ERROR(MOD, "metrics", "error=\"%s\"", err.message);
        goto out;
    }

    fw_client_config cc;
    fw_client_config_init(&cc);
    if (client_flags(&b->o, table, n_opts, &cc, &err) ||
        fw_client_config_from_env(&cc, ".env", &err)) {
        name_flags_in_error(&err);
        fprintf(stderr, "facework backend: %s\n", err.message);
        status = 2;
        goto out;
    }
    cc.metrics = b->reg;
    pack_name(cc.fallback_models_dir, b->model, sizeof b->model);
    if (fw_client_new(&cc, &b->client, &err)) {
        fprintf(stderr, "facework backend: %s\n", err.message);
        FW_ERROR(MOD, "client", "error=\"%s\"", err.message);
        status = err.code == FW_ERR_INVALID_ARGUMENT ? 2 : 1;
        goto out;
    }
    FW_INFO(MOD, "cpu fallback", "enabled=%d threads=%d%s", cc.fallback != 0, cc.fallback_threads,
            opt_given(table, n_opts, "fallback-threads") ? "" : " (cores / --threads)");
    register_worker_metrics(b);
    if (pool_start(b, &err)) {
        FW_ERROR(MOD, "pool", "error=\"%s\"", err.message);
        pool_started = true;
        goto out;
    }
    pool_started = true;

    fw_http_route routes[] = {
        {"POST", "/v1/analyze", handle_infer},
        {"POST", "/v1/detect", handle_infer},
        {"POST", "/v1/embed", handle_infer},
        {"POST", "/detect_faces_batch_multipart", handle_infer},
        {"POST", "/detect_faces_batch", handle_infer},
        {"GET", "/health", handle_health},
        {"GET", "/metrics", handle_metrics},
    };
    fw_http_config hc;
    fw_http_config_defaults(&hc);
    hc.listen = (const char *const *)b->o.listen.items;
    hc.n_listen = b->o.listen.count;
    hc.n_threads = (unsigned)b->o.http_threads;
    hc.max_body_bytes = b->o.max_body;
    hc.read_timeout_ms = (unsigned)(b->o.read_timeout * 1000);
    hc.request_timeout_ms = (unsigned)(b->o.request_timeout * 1000);
    hc.max_connections = (size_t)b->o.max_connections;
    hc.access_log = access_log;
    hc.access_log_user = b;
    if (fw_http_server_new(&hc, routes, sizeof routes / sizeof routes[0], b, &b->http, &err) ||
        fw_http_server_start(b->http, &err)) {
        FW_ERROR(MOD, "cannot serve", "error=\"%s\"", err.message);
        fprintf(stderr, "facework backend: %s\n", err.message);
        goto out;
    }
    const char *addr = fw_http_server_address(b->http, 0);
    if (!b->o.backend_id) {
        char host[200] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(b->backend_id, sizeof b->backend_id, "backend:%s:%d", host,
                 fw_http_server_port(b->http, 0));
    }
    for (size_t i = 0; i < fw_http_server_n_listeners(b->http); i++)
        FW_INFO(MOD, "listening", "addr=%s", fw_http_server_address(b->http, i));

    /* The start-up race: optionally wait for a worker before reporting ready. Requests are
     * answered meanwhile (by the fallback when no worker is up yet). */
    if (b->o.wait_ready > 0) {
        FW_INFO(MOD, "waiting for a worker", "timeout_s=%.1f", b->o.wait_ready);
        double deadline = now_s() + b->o.wait_ready;
        fw_err rc = FW_ERR_TIMEOUT;
        while (rc != FW_OK && !stop_requested(b)) {
            double left = deadline - now_s();
            if (left <= 0)
                break;
            rc = fw_client_wait_ready(b->client, left < 1.0 ? left : 1.0, &err);
            if (rc == FW_ERR_UNAVAILABLE)
                break; /* the client is disabled */
        }
        if (rc == FW_OK)
            FW_INFO(MOD, "worker ready", "waited_s=%.3f", now_s() - b->started);
        else
            FW_WARN(MOD, "no worker ready; serving with the CPU fallback", "error=\"%s\"",
                    err.message);
    }
    if (!stop_requested(b)) {
        set_state(b, STATE_READY);
        if (b->o.port_file)
            write_port_file(b->o.port_file, addr);
        fw_sd_ready();
        fw_sd_status("serving on %s", addr);
        FW_INFO(MOD, "ready", "addr=%s backend_id=%s threads=%d", addr, b->backend_id,
                b->o.threads);
    }

    /* Serve until SIGTERM/SIGINT. */
    pthread_mutex_lock(&b->stop_mu);
    while (!stop_requested(b))
        pthread_cond_wait(&b->stop_cv, &b->stop_mu);
    pthread_mutex_unlock(&b->stop_mu);

    /* Graceful shutdown: stop accepting, finish what was accepted, then exit 0. */
    set_state(b, STATE_DRAINING);
    fw_sd_stopping();
    fw_http_server_stop_accepting(b->http);
    double deadline = now_s() + b->o.drain_timeout;
    if (!pool_wait_idle(b, b->o.drain_timeout))
        FW_WARN(MOD, "drain timed out", "inflight=%zu", fw_http_server_inflight(b->http));
    while (fw_http_server_inflight(b->http) > 0 && now_s() < deadline) {
        struct timespec pause = {0, 5 * 1000000};
        nanosleep(&pause, NULL);
    }
    FW_INFO(MOD, "drained", "inflight=%zu", fw_http_server_inflight(b->http));
    status = 0;
out:
    if (pool_started)
        pool_stop(b);
    fw_http_server_free(b->http);
    b->http = NULL;
    fw_client_free(b->client);
    b->client = NULL;
    fw_metrics_free(b->reg);
    b->reg = NULL;
    fw_signals_stop();
    FW_INFO(MOD, "exit", "status=%d", status);
    return status;
}

int fw_backend_main(int argc, char **argv)
{
    backend *b = calloc(1, sizeof *b);
    if (!b)
        return 1;
    fw_option table[MAX_OPTIONS];
    memset(table, 0, sizeof table);
    size_t n = build_options(&b->o, table);
    if (fw_config_wants_help(argc, argv)) {
        printf("usage: facework backend [options]\n\n"
               "Serves the worker's API (v1 and legacy) through the resilient client: every\n"
               "image gets an answer, from a worker or from the in-process CPU fallback.\n"
               "Settings: flags > environment > ./.env > defaults. The client's settings\n"
               "(--worker-url ... --fallback-threads) come from their flags, else from the\n"
               "GPU_WORKER_* variable named in parentheses, else its default.\n\n");
        fw_config_help(table, n, stdout);
        free(b);
        return 0;
    }
    fw_error err;
    if (fw_config_parse(table, n, argc, argv, ".env", &err)) {
        fprintf(stderr, "facework backend: %s\n", err.message);
        free(b);
        return 2;
    }
    int status = 2;
    int lvl = fw_log_level_parse(b->o.log_level);
    if (lvl < 0) {
        fprintf(stderr, "facework backend: --log-level: unknown level '%s'\n", b->o.log_level);
        goto done;
    }
    fw_log_set_level((fw_log_level)lvl);
    if (!strcmp(b->o.log_format, "json"))
        fw_log_set_format(FW_LOG_JSON);
    else if (strcmp(b->o.log_format, "logfmt")) {
        fprintf(stderr, "facework backend: --log-format: expected logfmt or json\n");
        goto done;
    }
    if (b->o.api_key_file && !b->o.api_key &&
        read_key_file(b->o.api_key_file, &b->o.api_key, &err)) {
        fprintf(stderr, "facework backend: --api-key-file: %s\n", err.message);
        goto done;
    }
    if (b->o.api_key) {
        if (!b->o.api_key[0]) {
            fprintf(stderr, "facework backend: the API key is empty\n");
            goto done;
        }
        b->api_key = b->o.api_key;
        b->api_key_len = strlen(b->api_key);
    }
    if (b->o.backend_id)
        snprintf(b->backend_id, sizeof b->backend_id, "%s", b->o.backend_id);
    fw_api_limits_init(&b->limits);
    b->limits.max_images = (size_t)b->o.max_images;
    b->limits.max_image_bytes = b->o.max_image_bytes;
    b->limits.max_body_bytes = b->o.max_body;
    b->started = now_s();
    atomic_init(&b->state, STATE_STARTING);
    pthread_mutex_init(&b->stop_mu, NULL);
    pthread_cond_init(&b->stop_cv, NULL);
    pthread_mutex_init(&b->pool_mu, NULL);
    pthread_cond_init(&b->pool_cv, NULL);
    pthread_cond_init(&b->idle_cv, NULL);
    {
        /* the client logs its own effective settings when it starts */
        char desc[4096];
        fw_config_describe(table, n_own_options, desc, sizeof desc);
        FW_INFO(MOD, "config", "%s", desc);
    }
    status = run_backend(b, table, n);
    pthread_mutex_destroy(&b->stop_mu);
    pthread_cond_destroy(&b->stop_cv);
    pthread_mutex_destroy(&b->pool_mu);
    pthread_cond_destroy(&b->pool_cv);
    pthread_cond_destroy(&b->idle_cv);
done:
    fw_config_free(table, n);
    free(b);
    return status;
}

#else /* no client library in this build */

#include <stdio.h>

int fw_backend_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "facework: 'backend' needs the client library, absent from this build\n");
    return 2;
}

#endif
