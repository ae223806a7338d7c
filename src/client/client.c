/* The client: worker selection, retries, batching, fallback, health, status and metrics.
 *
 * Threads: the caller's thread runs each call's state machine (dispatch, wait, decide);
 * transfers run on the transport's I/O thread, whose completion callbacks only queue the
 * finished batch onto its call and signal the caller; the health thread polls /health.
 * c->mu guards the workers (breakers, outstanding counts, health, counters), the RNG and the
 * global counters; a call's own mutex guards only its completion queue. */
#include "facework/client.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "client/backoff.h"
#include "client/balance.h"
#include "client/breaker.h"
#include "client/client_config.h"
#include "client/fallback.h"
#include "client/queue.h"
#include "client/response.h"
#include "client/transport.h"
#include "core/align.h"
#include "util/base64.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/redis.h"

#define NS_PER_S 1000000000.0
#define MAX_BATCH_BYTES ((size_t)32u * 1024u * 1024u) /* image bytes per request */
#define HEALTH_TIMEOUT_MAX_S 5.0
#define N_HIST 12

static const double latency_bounds_ms[N_HIST - 1] = FW_CLIENT_LATENCY_BOUNDS_MS;

typedef struct worker {
    struct fw_client *c;
    size_t index;
    char url[FW_CLIENT_URL_MAX];
    fw__breaker br;
    unsigned outstanding;
    uint64_t pause_until_ns; /* Retry-After */
    bool health_checked, health_ok;
    int health_status;
    char health_error[FW_ERROR_MESSAGE_MAX];
    uint64_t health_ns;
    int64_t health_unix_ms;
    double latency_ewma_ms;
    fw_client_counters counters; /* transitions are read from br */
    /* metrics (NULL without a registry) */
    fw_metric *m_ok, *m_fail, *m_latency, *m_retries, *m_state, *m_outstanding;
    fw_metric *m_trans[FW_BREAKER__COUNT][FW_BREAKER__COUNT];
} worker;

#define QPOOL_MAX 16

struct fw_client {
    fw_client_config cfg; /* resolved */
    fw_client_http http;
    size_t n_workers;
    worker workers[FW_CLIENT_MAX_WORKERS];
    pthread_mutex_t mu;
    fw__rng rng;
    fw__transport *tp;
    fw__fallback fb;
    pthread_t health_thread;
    bool health_started;
    pthread_cond_t health_cv;
    bool stopping;
    uint64_t calls, items, items_worker, items_fallback, items_error;
    uint64_t hist[N_HIST];
    fw_metric *m_items_worker, *m_items_fallback, *m_items_error, *m_gpu_ratio, *m_fb_ratio;
    /* queue transport (cfg.queue): idle connections, each with its reply list */
    char queue_origin[FW_CLIENT_URL_MAX]; /* the stream, without credentials */
    fw_qclient *qpool[QPOOL_MAX];
    size_t n_qpool;
    uint64_t qjobs;
};

/* ---- small helpers --------------------------------------------------------------------- */

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* Waits on cv until signalled or fw_now_ns() >= until_ns; true when it timed out. */
static bool wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t until_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(until_ns / 1000000000u),
                          .tv_nsec = (long)(until_ns % 1000000000u)};
    return pthread_cond_timedwait(cv, mu, &ts) == ETIMEDOUT;
}

static uint64_t s_to_ns(double s)
{
    if (!(s > 0))
        return 0;
    if (s >= 1e9)
        return UINT64_MAX / 2;
    return (uint64_t)(s * NS_PER_S);
}

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- metrics ---------------------------------------------------------------------------- */

static void on_transition(void *user, fw_breaker_state from, fw_breaker_state to)
{
    worker *w = user; /* called with c->mu held */
    fw_counter_inc(w->m_trans[from][to]);
    fw_gauge_set(w->m_state, (double)to);
}

static fw_err register_metrics(fw_client *c, fw_metrics *reg, fw_error *err)
{
    static const double bounds_s[N_HIST - 1] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                0.5,   1,    2.5,   5,    10};
    fw_metric_family *req, *lat, *ret, *items, *gpu, *fbr, *trans, *state, *outst;
    fw_err rc;
    if ((rc = fw_metrics_counter(reg, "facework_client_requests_total",
                                 "HTTP attempts to workers, by outcome.",
                                 FW_LABELS("worker", "outcome"), &req, err)) ||
        (rc = fw_metrics_histogram(reg, "facework_client_request_seconds",
                                   "Latency of HTTP attempts to workers.", FW_LABELS("worker"),
                                   bounds_s, N_HIST - 1, &lat, err)) ||
        (rc = fw_metrics_counter(reg, "facework_client_retries_total",
                                 "HTTP attempts that were retries.", FW_LABELS("worker"), &ret,
                                 err)) ||
        (rc = fw_metrics_counter(reg, "facework_client_items_total",
                                 "Images answered, by where they were computed.",
                                 FW_LABELS("served_by"), &items, err)) ||
        (rc = fw_metrics_gauge(reg, "facework_client_gpu_usage_ratio",
                               "Share of images computed by a worker.", NULL, &gpu, err)) ||
        (rc = fw_metrics_gauge(reg, "facework_client_fallback_ratio",
                               "Share of images computed by the CPU fallback.", NULL, &fbr, err)) ||
        (rc = fw_metrics_counter(reg, "facework_client_breaker_transitions_total",
                                 "Circuit breaker state changes.",
                                 FW_LABELS("worker", "from", "to"), &trans, err)) ||
        (rc = fw_metrics_gauge(reg, "facework_client_breaker_state",
                               "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
                               FW_LABELS("worker"), &state, err)) ||
        (rc = fw_metrics_gauge(reg, "facework_client_outstanding",
                               "HTTP requests in flight per worker.", FW_LABELS("worker"), &outst,
                               err)))
        return rc;
    c->m_items_worker = fw_metric_get(items, FW_LABELS("worker"));
    c->m_items_fallback = fw_metric_get(items, FW_LABELS("fallback"));
    c->m_items_error = fw_metric_get(items, FW_LABELS("error"));
    c->m_gpu_ratio = fw_metric_get(gpu, NULL);
    c->m_fb_ratio = fw_metric_get(fbr, NULL);
    for (size_t i = 0; i < c->n_workers; i++) {
        worker *w = &c->workers[i];
        w->m_ok = fw_metric_get(req, FW_LABELS(w->url, "success"));
        w->m_fail = fw_metric_get(req, FW_LABELS(w->url, "failure"));
        w->m_latency = fw_metric_get(lat, FW_LABELS(w->url));
        w->m_retries = fw_metric_get(ret, FW_LABELS(w->url));
        w->m_state = fw_metric_get(state, FW_LABELS(w->url));
        w->m_outstanding = fw_metric_get(outst, FW_LABELS(w->url));
        static const int pairs[4][2] = {{FW_BREAKER_CLOSED, FW_BREAKER_OPEN},
                                        {FW_BREAKER_OPEN, FW_BREAKER_HALF_OPEN},
                                        {FW_BREAKER_HALF_OPEN, FW_BREAKER_CLOSED},
                                        {FW_BREAKER_HALF_OPEN, FW_BREAKER_OPEN}};
        for (int k = 0; k < 4; k++) {
            int f = pairs[k][0], t = pairs[k][1];
            w->m_trans[f][t] =
                fw_metric_get(trans, FW_LABELS(w->url, fw_breaker_state_name((fw_breaker_state)f),
                                               fw_breaker_state_name((fw_breaker_state)t)));
        }
    }
    return FW_OK;
}

/* ---- calls: batches and their state machine --------------------------------------------- */

enum { IT_PENDING = 0, IT_DONE, IT_FALLBACK };
enum { B_WAITING = 0, B_INFLIGHT, B_DONE };

typedef struct call call;

typedef struct batch {
    call *k;
    size_t *idx; /* item indexes into the call */
    size_t n;
    uint32_t tried; /* bit per worker */
    unsigned attempts;
    uint64_t next_at;
    int state;
    size_t worker;
    fw__breaker_ticket ticket;
    uint64_t sent_ns;
    char *body;
    size_t body_len;
    char content_type[96];
    fw__xfer xfer;
    struct batch *next_all, *next_done;
} batch;

struct call {
    fw_client *c;
    fw__resp_kind kind;
    const fw_blob *blobs;
    size_t n;
    fw_analyze_opts aopts;
    fw_client_result *results;
    unsigned char *state;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    batch *completed;
    batch *all;
    uint64_t deadline;
    char options_json[768];
    size_t inflight;
};

/* The worker options that give what a asks for (every field, so that the worker's
 * defaults never matter). */
static void analyze_options_json(const fw_analyze_opts *a, char *buf, size_t cap)
{
    static const char *const actions[] = {"annotate", "filter", "reject"};
    static const char *const crops[] = {"none", "aligned", "box"};
    const fw_quality_thresholds *t = &a->thresholds;
    snprintf(buf, cap,
             "{\"embedding_format\":\"base64-f32\",\"landmarks\":true,\"min_score\":%.9g,"
             "\"max_faces\":%d,\"min_face_size\":%.9g,\"quality\":%s,"
             "\"quality_preset\":{\"min_size\":%.9g,\"min_sharpness\":%.9g,\"max_yaw\":%.9g,"
             "\"max_pitch\":%.9g,\"min_quality\":%.9g},\"quality_action\":\"%s\","
             "\"crops\":\"%s\",\"face_margin\":%.9g,\"crop_format\":\"%s\","
             "\"crop_quality\":%d}",
             a->min_score > 0 ? (double)a->min_score : 0.0, a->max_faces, (double)a->min_face_size,
             a->quality ? "true" : "false", (double)t->min_size, (double)t->min_sharpness,
             (double)t->max_yaw, (double)t->max_pitch, (double)t->min_quality,
             actions[a->quality_action % 3], crops[a->crops % 3], (double)a->face_margin,
             a->crop_format == FW_FORMAT_PNG ? "png" : "jpeg", a->crop_quality);
}

static const char *route_path(fw__resp_kind kind)
{
    switch (kind) {
    case FW__RESP_ANALYZE:
        return "/v1/analyze";
    case FW__RESP_DETECT:
        return "/v1/detect";
    case FW__RESP_EMBED:
        return "/v1/embed";
    }
    return "/v1/analyze";
}

static void set_item_error(fw_client_result *r, fw_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_item_error(fw_client_result *r, fw_err code, const char *fmt, ...)
{
    fw_result_clear(&r->result);
    r->result.status = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->result.message, sizeof r->result.message, fmt, ap);
    va_end(ap);
    r->embedding_dim = 0;
    r->origin[0] = '\0';
}

static batch *new_batch(call *k, const size_t *idx, size_t n, uint32_t tried, unsigned attempts)
{
    batch *b = calloc(1, sizeof *b);
    size_t *copy = malloc(n * sizeof *copy);
    if (!b || !copy) {
        free(b);
        free(copy);
        return NULL;
    }
    memcpy(copy, idx, n * sizeof *copy);
    b->k = k;
    b->idx = copy;
    b->n = n;
    b->tried = tried;
    b->attempts = attempts;
    b->state = B_WAITING;
    fw_buf_init(&b->xfer.response);
    b->next_all = k->all;
    k->all = b;
    return b;
}

static void free_batches(call *k)
{
    batch *b = k->all;
    while (b) {
        batch *next = b->next_all;
        fw__xfer_cleanup(&b->xfer);
        free(b->body);
        free(b->idx);
        free(b);
        b = next;
    }
    k->all = NULL;
}

/* Gives up on workers for b's items: they go to the CPU fallback (their last error kept). */
static void to_fallback(call *k, batch *b)
{
    for (size_t j = 0; j < b->n; j++)
        if (k->state[b->idx[j]] == IT_PENDING)
            k->state[b->idx[j]] = IT_FALLBACK;
    b->state = B_DONE;
    free(b->body);
    b->body = NULL;
}

static void batch_error(call *k, batch *b, fw_err code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void batch_error(call *k, batch *b, fw_err code, const char *fmt, ...)
{
    char msg[FW_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (size_t j = 0; j < b->n; j++)
        set_item_error(&k->results[b->idx[j]], code, "%s", msg);
}

/* The multipart body of b (built once per batch; retries resend it). */
static bool build_body(call *k, batch *b)
{
    if (b->body)
        return true;
    fw_client *c = k->c;
    char boundary[48];
    for (int tries = 0;; tries++) {
        pthread_mutex_lock(&c->mu);
        uint64_t r1 = fw__rng_next(&c->rng), r2 = fw__rng_next(&c->rng);
        pthread_mutex_unlock(&c->mu);
        snprintf(boundary, sizeof boundary, "fwclient%016" PRIx64 "%016" PRIx64, r1, r2);
        bool clash = false;
        for (size_t j = 0; j < b->n && !clash; j++) {
            const fw_blob *bl = &k->blobs[b->idx[j]];
            clash = bl->len && memmem(bl->data, bl->len, boundary, strlen(boundary)) != NULL;
        }
        if (!clash || tries >= 8)
            break;
    }
    fw_buf buf;
    fw_buf_init(&buf);
    fw_buf_printf(&buf,
                  "--%s\r\nContent-Disposition: form-data; name=\"options\"\r\n"
                  "Content-Type: application/json\r\n\r\n%s\r\n",
                  boundary, k->options_json);
    for (size_t j = 0; j < b->n; j++) {
        const fw_blob *bl = &k->blobs[b->idx[j]];
        fw_buf_printf(&buf,
                      "--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"%zu\"\r\n"
                      "Content-Type: application/octet-stream\r\n\r\n",
                      boundary, j);
        if (bl->len)
            fw_buf_append(&buf, bl->data, bl->len);
        fw_buf_puts(&buf, "\r\n");
    }
    fw_buf_printf(&buf, "--%s--\r\n", boundary);
    size_t len;
    char *body = fw_buf_detach(&buf, &len);
    if (!body)
        return false;
    b->body = body;
    b->body_len = len;
    snprintf(b->content_type, sizeof b->content_type, "multipart/form-data; boundary=%s", boundary);
    return true;
}

static void on_xfer_done(fw__xfer *x, void *user)
{
    (void)x;
    batch *b = user;
    call *k = b->k;
    pthread_mutex_lock(&k->mu);
    b->next_done = k->completed;
    k->completed = b;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

/* Picks a worker for a batch that already tried `tried` and admits the request; with c->mu
 * held. FW__PICK_NONE when none admits traffic now; then *wait_ns is the shortest Retry-After
 * pause left among workers whose breaker admits traffic (UINT64_MAX: none). */
static size_t pick_worker(fw_client *c, uint32_t tried, uint64_t now, fw__breaker_ticket *ticket,
                          uint64_t *wait_ns)
{
    uint32_t rank[FW_CLIENT_MAX_WORKERS];
    unsigned outst[FW_CLIENT_MAX_WORKERS];
    uint64_t min_wait = UINT64_MAX;
    for (size_t i = 0; i < c->n_workers; i++) {
        worker *w = &c->workers[i];
        bool admit = fw__breaker_would_admit(&w->br);
        bool paused = w->pause_until_ns > now;
        outst[i] = w->outstanding;
        if (admit && !paused) {
            rank[i] = fw__rank(1, (tried >> i) & 1u, w->health_checked && !w->health_ok);
            continue;
        }
        rank[i] = FW__RANK_NONE;
        /* worth waiting for: a Retry-After pause of a worker the breaker admits; an open
         * breaker is not waited for (its items go to the fallback at once) */
        if (admit && paused && w->pause_until_ns - now < min_wait)
            min_wait = w->pause_until_ns - now;
    }
    size_t pick = fw__p2c_pick(rank, outst, c->n_workers, &c->rng);
    if (pick == FW__PICK_NONE || !fw__breaker_acquire(&c->workers[pick].br, ticket)) {
        *wait_ns = min_wait;
        return FW__PICK_NONE;
    }
    worker *w = &c->workers[pick];
    w->outstanding++;
    fw_gauge_inc(w->m_outstanding);
    return pick;
}

/* Sends b to a worker. True when sent; false with *wait_ns when no worker admits traffic
 * now, or with b done (sent to the fallback) when the body cannot be built. */
static bool dispatch(call *k, batch *b, uint64_t now, uint64_t *wait_ns)
{
    fw_client *c = k->c;
    *wait_ns = UINT64_MAX;
    if (!build_body(k, b)) {
        batch_error(k, b, FW_ERR_NOMEM, "out of memory building the request");
        to_fallback(k, b);
        return false;
    }
    pthread_mutex_lock(&c->mu);
    size_t wi = pick_worker(c, b->tried, now, &b->ticket, wait_ns);
    if (wi != FW__PICK_NONE && b->attempts > 0) {
        c->workers[wi].counters.retries++;
        fw_counter_inc(c->workers[wi].m_retries);
    }
    pthread_mutex_unlock(&c->mu);
    if (wi == FW__PICK_NONE)
        return false;
    worker *w = &c->workers[wi];
    b->worker = wi;
    b->attempts++;
    for (size_t j = 0; j < b->n; j++)
        k->results[b->idx[j]].attempts++;
    fw__xfer *x = &b->xfer;
    fw__xfer_reset(x);
    snprintf(x->url, sizeof x->url, "%s%s", w->url, route_path(k->kind));
    x->body = b->body;
    x->body_len = b->body_len;
    x->content_type = b->content_type;
    uint64_t left = k->deadline > now ? k->deadline - now : 0;
    uint64_t t = s_to_ns(c->cfg.attempt_timeout_s);
    if (t > left)
        t = left;
    x->timeout_ms = t / 1000000u ? t / 1000000u : 1;
    x->done = on_xfer_done;
    x->user = b;
    b->state = B_INFLIGHT;
    b->sent_ns = now;
    k->inflight++;
    fw__transport_submit(c->tp, x);
    return true;
}

static fw_err transport_err(int curl_code, long status)
{
    if (curl_code == CURLE_OPERATION_TIMEDOUT)
        return FW_ERR_TIMEOUT;
    if (curl_code != CURLE_OK)
        return FW_ERR_UNAVAILABLE;
    switch (status) {
    case 400:
        return FW_ERR_INVALID_ARGUMENT;
    case 401:
    case 403:
        return FW_ERR_AUTH;
    case 413:
        return FW_ERR_TOO_LARGE;
    case 415:
        return FW_ERR_UNSUPPORTED;
    case 429:
    case 503:
        return FW_ERR_BUSY;
    case 504:
        return FW_ERR_TIMEOUT;
    default:
        return FW_ERR_UNAVAILABLE;
    }
}

/* Describes a failed attempt into buf: the curl error, or the status and the worker's error
 * message. */
static void describe_failure(const fw__xfer *x, char *buf, size_t cap)
{
    if (x->curl_code != CURLE_OK) {
        snprintf(buf, cap, "%s", x->error[0] ? x->error : curl_easy_strerror(x->curl_code));
        return;
    }
    char code[64] = "", msg[160] = "";
    if (fw__error_body_parse(x->response.data, x->response.len, code, sizeof code, msg, sizeof msg))
        snprintf(buf, cap, "HTTP %ld %s: %s", x->http_status, code, msg);
    else
        snprintf(buf, cap, "HTTP %ld", x->http_status);
}

/* Schedules b's next attempt after a backoff, or gives its items to the fallback when it
 * has used its attempts or the deadline would pass. */
static void schedule_retry(call *k, batch *b, uint64_t now)
{
    fw_client *c = k->c;
    if (b->attempts > (unsigned)c->cfg.max_retries) {
        to_fallback(k, b);
        return;
    }
    pthread_mutex_lock(&c->mu);
    uint64_t d = fw__backoff_ns(&c->rng, s_to_ns(c->cfg.backoff_base_s),
                                s_to_ns(c->cfg.backoff_max_s), b->attempts - 1);
    pthread_mutex_unlock(&c->mu);
    b->next_at = now + d;
    if (b->next_at >= k->deadline) {
        to_fallback(k, b);
        return;
    }
    b->state = B_WAITING;
}

static void finish_item_worker(call *k, size_t i, fw__item_out *o, const char *url)
{
    fw_client_result *r = &k->results[i];
    fw_result_clear(&r->result);
    r->result = o->res;
    memset(&o->res, 0, sizeof o->res);
    r->embedding_dim = o->dim;
    snprintf(r->origin, sizeof r->origin, "%s", url);
    k->state[i] = IT_DONE;
}

static void handle_completion(call *k, batch *b, uint64_t now)
{
    fw_client *c = k->c;
    worker *w = &c->workers[b->worker];
    fw__xfer *x = &b->xfer;
    k->inflight--;
    double latency_s = (double)(now - b->sent_ns) / NS_PER_S;
    fw__attempt_class cls = fw__classify(x->curl_code, x->http_status);
    bool failure = fw__attempt_is_failure(x->curl_code, x->http_status);
    fw__item_out *outs = NULL;
    char why[FW_ERROR_MESSAGE_MAX] = "";
    size_t worker_faults = 0;
    if (cls == FW__ATTEMPT_OK) {
        fw_error e;
        fw_error_clear(&e);
        outs = calloc(b->n, sizeof *outs);
        if (!outs) {
            cls = FW__ATTEMPT_FINAL;
            snprintf(why, sizeof why, "out of memory reading the response");
        } else if (fw__response_parse(x->response.data, x->response.len, k->kind, b->n, outs, &e) !=
                   FW_OK) {
            cls = e.code == FW_ERR_NOMEM ? FW__ATTEMPT_FINAL : FW__ATTEMPT_RETRY;
            failure = e.code != FW_ERR_NOMEM;
            snprintf(why, sizeof why, "%s", e.message);
            free(outs);
            outs = NULL;
        } else {
            for (size_t j = 0; j < b->n; j++)
                worker_faults += !outs[j].final;
            failure = b->n > 0 && worker_faults == b->n;
        }
    } else {
        describe_failure(x, why, sizeof why);
    }
    double ra = -1;
    if (x->curl_code == CURLE_OK && (x->http_status == 429 || x->http_status == 503) &&
        x->retry_after[0]) {
        double s;
        if (fw__retry_after_parse(x->retry_after, unix_ms() / 1000, &s))
            ra = s;
    }

    pthread_mutex_lock(&c->mu);
    if (w->outstanding)
        w->outstanding--;
    fw_gauge_dec(w->m_outstanding);
    if (x->curl_code == CURLE_ABORTED_BY_CALLBACK)
        fw__breaker_cancel(&w->br, &b->ticket);
    else
        fw__breaker_record(&w->br, &b->ticket, !failure);
    w->counters.requests++;
    w->counters.connects += x->new_connects > 0 ? (uint64_t)x->new_connects : 0;
    if (failure)
        w->counters.failures++;
    else
        w->counters.successes++;
    fw_counter_inc(failure ? w->m_fail : w->m_ok);
    double ms = latency_s * 1000.0;
    w->latency_ewma_ms = w->latency_ewma_ms > 0 ? 0.8 * w->latency_ewma_ms + 0.2 * ms : ms;
    size_t h = 0;
    while (h < N_HIST - 1 && ms > latency_bounds_ms[h])
        h++;
    c->hist[h]++;
    fw_histogram_observe(w->m_latency, latency_s);
    if (ra >= 0) {
        uint64_t until = now + s_to_ns(ra);
        if (until > w->pause_until_ns)
            w->pause_until_ns = until;
    }
    if (cls == FW__ATTEMPT_OK)
        w->counters.items += b->n - worker_faults;
    pthread_mutex_unlock(&c->mu);

    if (failure || cls != FW__ATTEMPT_OK)
        FW_WARN("client", "worker attempt failed",
                "worker=%s route=%s items=%zu attempt=%u "
                "class=%s error=\"%s\" ms=%.1f",
                w->url, route_path(k->kind), b->n, b->attempts, fw__attempt_class_name(cls),
                why[0] ? why : "per-item worker errors", ms);

    uint32_t bit = 1u << b->worker;
    switch (cls) {
    case FW__ATTEMPT_OK: {
        size_t *retry = worker_faults ? malloc(worker_faults * sizeof *retry) : NULL;
        size_t nr = 0;
        for (size_t j = 0; j < b->n; j++) {
            size_t i = b->idx[j];
            if (outs[j].final) {
                finish_item_worker(k, i, &outs[j], w->url);
                continue;
            }
            set_item_error(&k->results[i], outs[j].res.status, "worker %s: %s: %s", w->url,
                           outs[j].code, outs[j].res.message);
            fw_result_clear(&outs[j].res);
            if (retry)
                retry[nr++] = i;
            else
                k->state[i] = IT_FALLBACK; /* out of memory: no retry list */
        }
        b->state = B_DONE;
        free(b->body);
        b->body = NULL;
        if (nr) {
            batch *nb = new_batch(k, retry, nr, b->tried | bit, b->attempts);
            if (!nb) {
                for (size_t j = 0; j < nr; j++)
                    k->state[retry[j]] = IT_FALLBACK;
            } else {
                schedule_retry(k, nb, now);
            }
        }
        free(retry);
        break;
    }
    case FW__ATTEMPT_RETRY:
        batch_error(k, b, transport_err(x->curl_code, x->http_status), "worker %s: %s", w->url,
                    why);
        b->tried |= bit;
        schedule_retry(k, b, now); /* the same items go again: the body is kept */
        break;
    case FW__ATTEMPT_FINAL:
        batch_error(k, b, transport_err(x->curl_code, x->http_status), "worker %s: %s", w->url,
                    why);
        to_fallback(k, b);
        break;
    }
    if (outs) {
        for (size_t j = 0; j < b->n; j++)
            fw_result_clear(&outs[j].res);
        free(outs);
    }
    fw__xfer_cleanup(&b->xfer);
    fw_buf_init(&b->xfer.response);
}

/* Runs the call's batches on the workers until each item is answered or handed to the
 * fallback. */
static void run_workers(call *k)
{
    for (;;) {
        uint64_t now = fw_now_ns();
        uint64_t wake = UINT64_MAX;
        bool waiting = false;
        for (batch *b = k->all; b; b = b->next_all) {
            if (b->state != B_WAITING)
                continue;
            if (now >= k->deadline) {
                if (b->attempts == 0)
                    batch_error(k, b, FW_ERR_TIMEOUT,
                                "the deadline passed before a worker "
                                "could be tried");
                to_fallback(k, b);
                continue;
            }
            if (b->next_at > now) {
                waiting = true;
                if (b->next_at < wake)
                    wake = b->next_at;
                continue;
            }
            uint64_t wait_ns;
            if (dispatch(k, b, now, &wait_ns) || b->state == B_DONE)
                continue;
            if (wait_ns == UINT64_MAX && k->inflight > 0) {
                /* a half-open probe is in flight: look again after a completion */
                waiting = true;
                b->next_at = now + 1;
                if (k->deadline < wake)
                    wake = k->deadline;
                continue;
            }
            if (wait_ns == UINT64_MAX || wait_ns >= k->deadline - now ||
                wait_ns > s_to_ns(k->c->cfg.backoff_max_s)) {
                bool any_error = false;
                for (size_t j = 0; j < b->n; j++)
                    any_error |= k->results[b->idx[j]].result.status != FW_OK;
                if (!any_error)
                    batch_error(k, b, FW_ERR_UNAVAILABLE,
                                "no worker is available (circuit breakers open or workers "
                                "paused)");
                to_fallback(k, b);
                continue;
            }
            b->next_at = now + wait_ns;
            waiting = true;
            if (b->next_at < wake)
                wake = b->next_at;
        }
        if (k->inflight == 0 && !waiting)
            break;
        pthread_mutex_lock(&k->mu);
        while (!k->completed) {
            if (waiting) {
                uint64_t until = wake < k->deadline ? wake : k->deadline;
                if (wait_until(&k->cv, &k->mu, until) && !k->completed)
                    break;
            } else {
                pthread_cond_wait(&k->cv, &k->mu);
            }
        }
        batch *done = k->completed;
        k->completed = NULL;
        pthread_mutex_unlock(&k->mu);
        now = fw_now_ns();
        while (done) {
            batch *next = done->next_done;
            done->next_done = NULL;
            handle_completion(k, done, now);
            done = next;
        }
    }
}

/* ---- the queue transport (GPU_WORKER_QUEUE) ------------------------------------------------ */

/* {"images":[{"id":"0","data":"<base64>"}...],"options":{...}}: the /v1 JSON body. */
static char *queue_body(call *k, const batch *b, size_t *len)
{
    fw_buf buf;
    fw_buf_init(&buf);
    fw_buf_puts(&buf, "{\"images\":[");
    for (size_t j = 0; j < b->n; j++) {
        const fw_blob *bl = &k->blobs[b->idx[j]];
        size_t el = fw_base64_encoded_len(bl->len);
        fw_buf_printf(&buf, "%s{\"id\":\"%zu\",\"data\":\"", j ? "," : "", j);
        if (fw_buf_reserve(&buf, el + 1)) {
            fw_base64_encode(bl->data ? bl->data : (const uint8_t *)"", bl->len,
                             buf.data + buf.len);
            buf.len += el;
        }
        fw_buf_puts(&buf, "\"}");
    }
    fw_buf_printf(&buf, "],\"options\":%s}", k->options_json);
    return fw_buf_detach(&buf, len);
}

/* One answer: the batch whose job id it names gets its items (worker faults and whole-job
 * errors go to the fallback). Returns false when no batch of this call has that id. */
static bool queue_answer(call *k, const fw_qclient_reply *r, const char *prefix)
{
    size_t pl = strlen(prefix);
    if (strncmp(r->id, prefix, pl) != 0)
        return false;
    char *end;
    unsigned long n = strtoul(r->id + pl, &end, 10);
    batch *b = k->all;
    for (unsigned long i = 0; b && i < n; i++)
        b = b->next_all;
    if (*end || !b || b->state == B_DONE)
        return false;
    const char *res = strstr(r->json, ",\"result\":");
    fw__item_out *outs = calloc(b->n, sizeof *outs);
    fw_error e;
    fw_error_clear(&e);
    const char *origin = k->c->queue_origin;
    if (r->status != 200 || !res || !outs ||
        fw__response_parse(res + 10, r->len - (size_t)(res + 10 - r->json) - 1, k->kind, b->n, outs,
                           &e) != FW_OK) {
        batch_error(k, b, FW_ERR_UNAVAILABLE, "queue %s: job answered with status %d%s%s", origin,
                    r->status, e.message[0] ? ": " : "", e.message);
        free(outs);
        to_fallback(k, b);
        return true;
    }
    for (size_t j = 0; j < b->n; j++) {
        size_t i = b->idx[j];
        if (outs[j].final) {
            finish_item_worker(k, i, &outs[j], origin);
            continue;
        }
        set_item_error(&k->results[i], outs[j].res.status, "queue %s: %s: %s", origin, outs[j].code,
                       outs[j].res.message);
        fw_result_clear(&outs[j].res);
        k->state[i] = IT_FALLBACK;
    }
    free(outs);
    b->state = B_DONE;
    return true;
}

/* Runs every batch of k as one job on the queue and waits (until the call's deadline) for
 * the answers; what is not answered goes to the CPU fallback. */
static void run_queue(call *k)
{
    fw_client *c = k->c;
    fw_error e;
    pthread_mutex_lock(&c->mu);
    fw_qclient *q = c->n_qpool ? c->qpool[--c->n_qpool] : NULL;
    uint64_t seq = ++c->qjobs;
    pthread_mutex_unlock(&c->mu);
    uint64_t now = fw_now_ns();
    double left = k->deadline > now ? (double)(k->deadline - now) / NS_PER_S : 0;
    if (!q && fw_qclient_new(c->cfg.queue,
                             left < c->cfg.connect_timeout_s ? left : c->cfg.connect_timeout_s, &q,
                             &e) != FW_OK) {
        for (batch *b = k->all; b; b = b->next_all) {
            batch_error(k, b, FW_ERR_UNAVAILABLE, "queue %s: %s", c->queue_origin, e.message);
            to_fallback(k, b);
        }
        return;
    }
    char prefix[160];
    snprintf(prefix, sizeof prefix, "%s/%" PRIu64 "/", fw_qclient_reply_key(q), seq);
    size_t waiting = 0, n = 0;
    bool broken = false;
    for (batch *b = k->all; b; b = b->next_all, n++) {
        char id[200];
        snprintf(id, sizeof id, "%s%zu", prefix, n);
        size_t len = 0;
        char *body = queue_body(k, b, &len);
        fw_err rc = body ? fw_qclient_submit(q, id, body, len, route_path(k->kind), 0, &e)
                         : fw_error_set(&e, FW_ERR_NOMEM, "out of memory");
        free(body);
        if (rc) {
            broken = rc == FW_ERR_UNAVAILABLE;
            batch_error(k, b, rc, "queue %s: %s", c->queue_origin, e.message);
            to_fallback(k, b);
        } else {
            waiting++;
        }
    }
    while (waiting > 0 && !broken) {
        now = fw_now_ns();
        if (now >= k->deadline)
            break;
        fw_qclient_reply r;
        fw_err rc = fw_qclient_next(q, (double)(k->deadline - now) / NS_PER_S, &r, &e);
        if (rc == FW_ERR_PARSE)
            continue;
        if (rc) {
            broken = rc == FW_ERR_UNAVAILABLE;
            break;
        }
        /* a late answer to an earlier call on this connection is dropped */
        if (queue_answer(k, &r, prefix))
            waiting--;
        fw_qclient_reply_clear(&r);
    }
    for (batch *b = k->all; b; b = b->next_all)
        if (b->state != B_DONE) {
            batch_error(k, b, FW_ERR_TIMEOUT, "queue %s: no answer before the deadline",
                        c->queue_origin);
            to_fallback(k, b);
        }
    pthread_mutex_lock(&c->mu);
    if (!broken && c->n_qpool < QPOOL_MAX) {
        c->qpool[c->n_qpool++] = q;
        q = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    fw_qclient_free(q);
}

/* ---- the CPU fallback -------------------------------------------------------------------- */

static void fallback_disabled(call *k, const size_t *idx, size_t m)
{
    bool enabled = k->c->cfg.enabled && (k->c->n_workers || k->c->cfg.queue[0]);
    for (size_t j = 0; j < m; j++) {
        fw_client_result *r = &k->results[idx[j]];
        if (r->result.status == FW_OK) {
            set_item_error(r, FW_ERR_UNAVAILABLE, "%s and the CPU fallback is disabled",
                           enabled ? "no worker could process this image"
                                   : "GPU workers are disabled");
        } else {
            char msg[FW_ERROR_MESSAGE_MAX];
            snprintf(msg, sizeof msg, "%s", r->result.message);
            set_item_error(r, r->result.status,
                           "no worker could process this image (last error: %.180s); the CPU "
                           "fallback is disabled",
                           msg);
        }
    }
}

static void fallback_analyze(call *k, fw_engine *eng, const size_t *idx, size_t m)
{
    size_t chunk = (size_t)k->c->cfg.batch_size;
    fw_blob *sub = malloc(chunk * sizeof *sub);
    fw_result *tmp = calloc(chunk, sizeof *tmp);
    if (!sub || !tmp) {
        for (size_t j = 0; j < m; j++)
            set_item_error(&k->results[idx[j]], FW_ERR_NOMEM, "out of memory in the CPU fallback");
        free(sub);
        free(tmp);
        return;
    }
    size_t dim = fw_engine_embedding_dim(eng);
    for (size_t s = 0; s < m; s += chunk) {
        size_t cnt = m - s < chunk ? m - s : chunk;
        for (size_t j = 0; j < cnt; j++)
            sub[j] = k->blobs[idx[s + j]];
        fw_error e;
        fw_error_clear(&e);
        memset(tmp, 0, cnt * sizeof *tmp);
        fw_err rc = fw_engine_analyze(eng, sub, cnt, &k->aopts, tmp, &e);
        for (size_t j = 0; j < cnt; j++) {
            fw_client_result *r = &k->results[idx[s + j]];
            if (rc) {
                set_item_error(r, rc, "the CPU fallback failed: %s", e.message);
                continue;
            }
            fw_result_clear(&r->result);
            r->result = tmp[j];
            memset(&tmp[j], 0, sizeof tmp[j]);
            bool has_emb = false;
            for (size_t f = 0; f < r->result.n_faces && !has_emb; f++)
                has_emb = r->result.faces[f].embedding != NULL;
            r->embedding_dim = has_emb ? dim : 0;
            snprintf(r->origin, sizeof r->origin, "%s", FW_CLIENT_ORIGIN_FALLBACK);
        }
    }
    free(sub);
    free(tmp);
}

static void fallback_embed(call *k, fw_engine *eng, const size_t *idx, size_t m)
{
    size_t dim = fw_engine_embedding_dim(eng);
    for (size_t j = 0; j < m; j++) {
        fw_client_result *r = &k->results[idx[j]];
        const fw_blob *bl = &k->blobs[idx[j]];
        fw_image *img = NULL;
        fw_error e;
        fw_error_clear(&e);
        fw_err rc = fw_image_decode(bl->data, bl->len, NULL, &img, &e);
        if (rc) {
            set_item_error(r, rc, "%s", e.message);
            snprintf(r->origin, sizeof r->origin, "%s", FW_CLIENT_ORIGIN_FALLBACK);
            continue;
        }
        if (img->width != FW_ALIGNED_SIZE || img->height != FW_ALIGNED_SIZE) {
            set_item_error(r, FW_ERR_INVALID_ARGUMENT,
                           "expected a 112x112 aligned face crop, got %dx%d", img->width,
                           img->height);
            snprintf(r->origin, sizeof r->origin, "%s", FW_CLIENT_ORIGIN_FALLBACK);
            fw_image_free(img);
            continue;
        }
        fw_face *f = calloc(1, sizeof *f + dim * sizeof(float));
        if (!f) {
            fw_image_free(img);
            set_item_error(r, FW_ERR_NOMEM, "out of memory in the CPU fallback");
            continue;
        }
        f->embedding = (float *)(f + 1);
        rc = fw_engine_embed_aligned(eng, img->pixels, 1, f->embedding, &e);
        fw_image_free(img);
        if (rc) {
            free(f);
            set_item_error(r, rc, "the CPU fallback failed: %s", e.message);
            continue;
        }
        f->bbox[2] = f->bbox[3] = (float)FW_ALIGNED_SIZE;
        f->score = 1.0f;
        memcpy(f->landmarks, fw_arcface_template, sizeof f->landmarks);
        fw_result_clear(&r->result);
        r->result.faces = f;
        r->result.n_faces = 1;
        r->result.width = r->result.height = FW_ALIGNED_SIZE;
        r->embedding_dim = dim;
        snprintf(r->origin, sizeof r->origin, "%s", FW_CLIENT_ORIGIN_FALLBACK);
    }
}

static void run_fallback(call *k)
{
    size_t m = 0;
    for (size_t i = 0; i < k->n; i++)
        m += k->state[i] != IT_DONE;
    if (!m)
        return;
    size_t *idx = malloc(m * sizeof *idx);
    if (!idx) {
        for (size_t i = 0; i < k->n; i++)
            if (k->state[i] != IT_DONE)
                set_item_error(&k->results[i], FW_ERR_NOMEM, "out of memory");
        return;
    }
    m = 0;
    for (size_t i = 0; i < k->n; i++)
        if (k->state[i] != IT_DONE)
            idx[m++] = i;
    fw_client *c = k->c;
    if (!c->cfg.fallback) {
        fallback_disabled(k, idx, m);
    } else {
        fw_engine *eng = NULL;
        fw_error e;
        fw_error_clear(&e);
        if (fw__fallback_get(&c->fb, &eng, &e) != FW_OK) {
            for (size_t j = 0; j < m; j++)
                set_item_error(&k->results[idx[j]], FW_ERR_UNAVAILABLE, "%s", e.message);
        } else if (k->kind == FW__RESP_EMBED) {
            fallback_embed(k, eng, idx, m);
        } else {
            fallback_analyze(k, eng, idx, m);
        }
    }
    for (size_t j = 0; j < m; j++)
        k->state[idx[j]] = IT_DONE;
    free(idx);
}

/* ---- the public calls ------------------------------------------------------------------- */

void fw_client_call_opts_init(fw_client_call_opts *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    fw_analyze_opts_init(&opts->analyze);
}

void fw_client_result_clear(fw_client_result *res)
{
    if (!res)
        return;
    fw_result_clear(&res->result);
    memset(res, 0, sizeof *res);
}

static void account(call *k)
{
    fw_client *c = k->c;
    uint64_t nw = 0, nf = 0, ne = 0;
    for (size_t i = 0; i < k->n; i++) {
        const char *o = k->results[i].origin;
        if (!o[0])
            ne++;
        else if (strcmp(o, FW_CLIENT_ORIGIN_FALLBACK) == 0)
            nf++;
        else
            nw++;
    }
    pthread_mutex_lock(&c->mu);
    c->calls++;
    c->items += k->n;
    c->items_worker += nw;
    c->items_fallback += nf;
    c->items_error += ne;
    fw_counter_add(c->m_items_worker, (double)nw);
    fw_counter_add(c->m_items_fallback, (double)nf);
    fw_counter_add(c->m_items_error, (double)ne);
    if (c->items) {
        fw_gauge_set(c->m_gpu_ratio, (double)c->items_worker / (double)c->items);
        fw_gauge_set(c->m_fb_ratio, (double)c->items_fallback / (double)c->items);
    }
    pthread_mutex_unlock(&c->mu);
    if (nf)
        FW_INFO("client", "items computed by the cpu fallback", "items=%" PRIu64 " of=%zu", nf,
                k->n);
}

static fw_err run_call(fw_client *c, fw__resp_kind kind, const fw_blob *blobs, size_t n,
                       const fw_client_call_opts *opts, fw_client_result *results, fw_error *err)
{
    if (!c || (n && (!blobs || !results)))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "client, blobs and results are required");
    for (size_t i = 0; i < n; i++)
        if (!blobs[i].data && blobs[i].len)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "image %zu has no data", i);
    fw_client_call_opts o;
    fw_client_call_opts_init(&o);
    if (opts)
        o = *opts;
    const fw_analyze_opts *a = &o.analyze;
    if (kind != FW__RESP_EMBED) {
        fw_err vrc = fw_analyze_opts_validate(a, err);
        if (vrc)
            return vrc;
    }
    if (!isfinite(o.timeout_s))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "options: timeout_s is not finite");
    for (size_t i = 0; i < n; i++)
        memset(&results[i], 0, sizeof results[i]);
    fw_error_clear(err);
    if (n == 0)
        return FW_OK;
    if (kind == FW__RESP_ANALYZE && !a->embed)
        kind = FW__RESP_DETECT;

    call k;
    memset(&k, 0, sizeof k);
    k.c = c;
    k.kind = kind;
    k.blobs = blobs;
    k.n = n;
    k.aopts = *a;
    k.aopts.embed = kind == FW__RESP_ANALYZE;
    k.results = results;
    k.deadline = fw_now_ns() + s_to_ns(o.timeout_s > 0 ? o.timeout_s : c->cfg.timeout_s);
    k.state = calloc(n, 1);
    size_t *idx = malloc(n * sizeof *idx);
    if (!k.state || !idx) {
        free(k.state);
        free(idx);
        for (size_t i = 0; i < n; i++)
            set_item_error(&results[i], FW_ERR_NOMEM, "out of memory");
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    if (kind == FW__RESP_EMBED)
        snprintf(k.options_json, sizeof k.options_json, "{\"embedding_format\":\"base64-f32\"}");
    else
        analyze_options_json(a, k.options_json, sizeof k.options_json);
    pthread_mutex_init(&k.mu, NULL);
    cond_init_mono(&k.cv);

    bool nomem = false;
    if (c->cfg.enabled && (c->n_workers || c->cfg.queue[0])) {
        size_t start = 0;
        while (start < n && !nomem) {
            size_t end = start, bytes = 0;
            while (end < n && end - start < (size_t)c->cfg.batch_size &&
                   (end == start || bytes + blobs[end].len <= MAX_BATCH_BYTES)) {
                bytes += blobs[end].len;
                idx[end - start] = end;
                end++;
            }
            if (!new_batch(&k, idx, end - start, 0, 0)) {
                nomem = true;
                break;
            }
            start = end;
        }
        if (nomem) {
            free_batches(&k);
            for (size_t i = 0; i < n; i++)
                k.state[i] = IT_FALLBACK;
        } else if (c->cfg.queue[0]) {
            run_queue(&k);
        } else {
            run_workers(&k);
        }
    }
    run_fallback(&k);
    free_batches(&k);
    account(&k);
    pthread_cond_destroy(&k.cv);
    pthread_mutex_destroy(&k.mu);
    free(k.state);
    free(idx);
    return FW_OK;
}

fw_err fw_client_analyze(fw_client *c, const fw_blob *blobs, size_t n,
                         const fw_client_call_opts *opts, fw_client_result *results, fw_error *err)
{
    return run_call(c, FW__RESP_ANALYZE, blobs, n, opts, results, err);
}

fw_err fw_client_embed(fw_client *c, const fw_blob *crops, size_t n,
                       const fw_client_call_opts *opts, fw_client_result *results, fw_error *err)
{
    return run_call(c, FW__RESP_EMBED, crops, n, opts, results, err);
}

/* ---- health ------------------------------------------------------------------------------ */

typedef struct hwait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t left;
} hwait;

static void on_health_done(fw__xfer *x, void *user)
{
    (void)x;
    hwait *hw = user;
    pthread_mutex_lock(&hw->mu);
    hw->left--;
    pthread_cond_signal(&hw->cv);
    pthread_mutex_unlock(&hw->mu);
}

/* One GET /health of every worker, waited for; returns how many answered 200. */
static size_t health_round(fw_client *c, double timeout_s)
{
    size_t n = c->n_workers;
    fw__xfer *xs = calloc(n ? n : 1, sizeof *xs);
    if (!xs)
        return 0;
    hwait hw = {.left = n};
    pthread_mutex_init(&hw.mu, NULL);
    pthread_cond_init(&hw.cv, NULL);
    uint64_t tmo = s_to_ns(timeout_s) / 1000000u;
    for (size_t i = 0; i < n; i++) {
        fw_buf_init(&xs[i].response);
        fw__xfer_reset(&xs[i]);
        snprintf(xs[i].url, sizeof xs[i].url, "%s/health", c->workers[i].url);
        xs[i].timeout_ms = tmo ? tmo : 1;
        xs[i].done = on_health_done;
        xs[i].user = &hw;
        fw__transport_submit(c->tp, &xs[i]);
    }
    pthread_mutex_lock(&hw.mu);
    while (hw.left)
        pthread_cond_wait(&hw.cv, &hw.mu);
    pthread_mutex_unlock(&hw.mu);
    size_t ok = 0;
    uint64_t now = fw_now_ns();
    int64_t wall = unix_ms();
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        worker *w = &c->workers[i];
        fw__xfer *x = &xs[i];
        if (x->curl_code == CURLE_ABORTED_BY_CALLBACK)
            continue; /* shutting down: not a result */
        bool good = x->curl_code == CURLE_OK && x->http_status == 200;
        w->counters.connects += x->new_connects > 0 ? (uint64_t)x->new_connects : 0;
        bool was = w->health_checked ? w->health_ok : true;
        w->health_checked = true;
        w->health_ok = good;
        w->health_status = x->curl_code == CURLE_OK ? (int)x->http_status : 0;
        w->health_ns = now;
        w->health_unix_ms = wall;
        if (good) {
            w->health_error[0] = '\0';
            ok++;
        } else if (x->curl_code != CURLE_OK) {
            snprintf(w->health_error, sizeof w->health_error, "%s",
                     x->error[0] ? x->error : curl_easy_strerror(x->curl_code));
        } else {
            /* "status" of the health JSON when present ("loading", "draining") */
            static const char key[] = "\"status\":\"";
            const char *st = x->response.data
                                 ? memmem(x->response.data, x->response.len, key, sizeof key - 1)
                                 : NULL;
            char word[32] = "";
            if (st) {
                const char *end = x->response.data + x->response.len;
                size_t k = 0;
                for (st += sizeof key - 1;
                     st < end && k < sizeof word - 1 && ((*st >= 'a' && *st <= 'z') || *st == '_');
                     st++)
                    word[k++] = *st;
                word[k] = '\0';
            }
            snprintf(w->health_error, sizeof w->health_error, "HTTP %ld%s%s", x->http_status,
                     word[0] ? " " : "", word);
        }
        if (was != good)
            FW_INFO("client", good ? "worker healthy" : "worker unhealthy",
                    "worker=%s error=\"%s\"", w->url, w->health_error);
    }
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < n; i++)
        fw__xfer_cleanup(&xs[i]);
    free(xs);
    pthread_cond_destroy(&hw.cv);
    pthread_mutex_destroy(&hw.mu);
    return ok;
}

static double health_timeout(const fw_client *c)
{
    double t = c->cfg.attempt_timeout_s;
    return t < HEALTH_TIMEOUT_MAX_S ? t : HEALTH_TIMEOUT_MAX_S;
}

static void *health_main(void *arg)
{
    fw_client *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        bool stop = c->stopping;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        health_round(c, health_timeout(c));
        pthread_mutex_lock(&c->mu);
        uint64_t until = fw_now_ns() + s_to_ns(c->cfg.health_interval_s);
        while (!c->stopping && !wait_until(&c->health_cv, &c->mu, until))
            ;
        pthread_mutex_unlock(&c->mu);
    }
    return NULL;
}

size_t fw_client_check_health(fw_client *c)
{
    if (!c || !c->cfg.enabled || !c->n_workers)
        return 0;
    return health_round(c, health_timeout(c));
}

fw_err fw_client_wait_ready(fw_client *c, double timeout_s, fw_error *err)
{
    if (!c)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "client is NULL");
    if (!c->cfg.enabled || !c->n_workers)
        return fw_error_set(err, FW_ERR_UNAVAILABLE, "GPU workers are disabled");
    uint64_t start = fw_now_ns();
    uint64_t deadline = start + s_to_ns(timeout_s > 0 ? timeout_s : 0);
    uint64_t delay = 50000000u; /* 50 ms, doubling to 1 s */
    for (;;) {
        uint64_t now = fw_now_ns();
        double left = now < deadline ? (double)(deadline - now) / NS_PER_S : 0.001;
        double t = health_timeout(c);
        if (health_round(c, left < t ? left : t) > 0) {
            FW_INFO("client", "worker ready", "waited_ms=%.1f",
                    (double)(fw_now_ns() - start) / 1e6);
            return FW_OK;
        }
        now = fw_now_ns();
        if (now >= deadline)
            break;
        uint64_t until = now + delay < deadline ? now + delay : deadline;
        pthread_mutex_lock(&c->mu);
        while (!c->stopping && !wait_until(&c->health_cv, &c->mu, until))
            ;
        pthread_mutex_unlock(&c->mu);
        delay = delay * 2 > 1000000000u ? 1000000000u : delay * 2;
    }
    char msg[FW_ERROR_MESSAGE_MAX];
    size_t off = 0;
    msg[0] = '\0';
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_workers && off < sizeof msg; i++) {
        int r = snprintf(msg + off, sizeof msg - off, "%s%s: %s", i ? "; " : "", c->workers[i].url,
                         c->workers[i].health_error);
        if (r > 0)
            off += (size_t)r;
    }
    pthread_mutex_unlock(&c->mu);
    return fw_error_set(err, FW_ERR_TIMEOUT, "no worker ready after %.1f s (%s)", timeout_s, msg);
}

/* ---- lifecycle and status ---------------------------------------------------------------- */

fw_err fw_client_new(const fw_client_config *cfg, fw_client **out, fw_error *err)
{
    if (!out)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    fw_client_config def;
    if (!cfg) {
        fw_client_config_init(&def);
        cfg = &def;
    }
    fw_client *c = calloc(1, sizeof *c);
    if (!c)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    fw_err rc = fw__client_config_resolve(cfg, &c->cfg, err);
    if (rc) {
        free(c);
        return rc;
    }
    char urls[FW_CLIENT_MAX_WORKERS][FW_CLIENT_URL_MAX];
    if ((rc = fw__split_urls(c->cfg.urls, "urls", urls, &c->n_workers, err))) {
        free(c);
        return rc;
    }
    if (c->cfg.queue[0]) {
        fw_redis_url qu;
        if ((rc = fw_redis_url_parse(c->cfg.queue, &qu, err))) {
            free(c);
            return rc;
        }
        fw_redis_url_describe(&qu, c->queue_origin, sizeof c->queue_origin);
    }
    uint64_t seed = c->cfg.seed ? c->cfg.seed : fw_now_ns() ^ ((uint64_t)getpid() << 32);
    fw__rng_seed(&c->rng, seed);
    pthread_mutex_init(&c->mu, NULL);
    cond_init_mono(&c->health_cv);
    fw__breaker_config bc = {
        .failure_threshold = (unsigned)c->cfg.failure_threshold,
        .min_requests = (unsigned)c->cfg.min_requests,
        .recovery_ns = s_to_ns(c->cfg.recovery_timeout_s),
        .success_threshold = (unsigned)c->cfg.success_threshold,
    };
    for (size_t i = 0; i < c->n_workers; i++) {
        worker *w = &c->workers[i];
        w->c = c;
        w->index = i;
        memcpy(w->url, urls[i], sizeof w->url);
        fw__breaker_init(&w->br, &bc, w->url, NULL, NULL, on_transition, w);
    }
    if ((rc =
             fw__fallback_init(&c->fb, c->cfg.fallback_models_dir, c->cfg.fallback_threads, err))) {
        pthread_cond_destroy(&c->health_cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return rc;
    }
    if (c->cfg.metrics && (rc = register_metrics(c, c->cfg.metrics, err))) {
        fw__fallback_destroy(&c->fb);
        pthread_cond_destroy(&c->health_cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return rc;
    }
    c->http = fw__transport_resolve_http((fw_client_http)c->cfg.http_version);
    fw__transport_opts to = {
        .http = c->http,
        .max_connections = (unsigned)c->cfg.max_connections,
        .max_hosts = (unsigned)c->n_workers,
        .connect_timeout_ms = s_to_ns(c->cfg.connect_timeout_s) / 1000000u,
        .api_key = c->cfg.api_key,
    };
    if (c->cfg.enabled && (rc = fw__transport_new(&to, &c->tp, err))) {
        fw__fallback_destroy(&c->fb);
        pthread_cond_destroy(&c->health_cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return rc;
    }
    if (c->cfg.enabled && c->cfg.health_interval_s > 0) {
        if (pthread_create(&c->health_thread, NULL, health_main, c) == 0)
            c->health_started = true;
        else
            FW_WARN("client", "could not start the health thread", "%s", "");
    }
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    FW_INFO("client", "client started",
            "workers=%zu enabled=%d http=%s libcurl=%s timeout_s=%g max_retries=%d batch=%d "
            "fallback=%d api_key=%s",
            c->n_workers, c->cfg.enabled, fw__transport_http_name(c->http), v ? v->version : "?",
            c->cfg.timeout_s, c->cfg.max_retries, c->cfg.batch_size, c->cfg.fallback,
            c->cfg.api_key[0] ? "<redacted>" : "none");
    *out = c;
    return FW_OK;
}

void fw_client_free(fw_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->health_cv);
    pthread_mutex_unlock(&c->mu);
    fw__transport_stop(c->tp); /* unblocks a health round in progress */
    if (c->health_started)
        pthread_join(c->health_thread, NULL);
    fw__transport_free(c->tp);
    for (size_t i = 0; i < c->n_qpool; i++)
        fw_qclient_free(c->qpool[i]);
    fw__fallback_destroy(&c->fb);
    pthread_cond_destroy(&c->health_cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void fw_client_status(fw_client *c, fw_client_status_info *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!c)
        return;
    out->fallback_loaded =
        fw__fallback_loaded(&c->fb, out->fallback_error, sizeof out->fallback_error);
    uint64_t now = fw_now_ns();
    pthread_mutex_lock(&c->mu);
    out->enabled = c->cfg.enabled;
    out->n_workers = c->n_workers;
    out->fallback_enabled = c->cfg.fallback;
    out->http_version = fw__transport_http_name(c->http);
    for (size_t i = 0; i < c->n_workers; i++) {
        worker *w = &c->workers[i];
        fw_client_worker_status *s = &out->workers[i];
        memcpy(s->url, w->url, sizeof s->url);
        s->breaker = w->br.state;
        s->breaker_name = fw_breaker_state_name(s->breaker);
        s->health_checked = w->health_checked;
        s->health_ok = w->health_ok;
        s->health_http_status = w->health_status;
        memcpy(s->health_error, w->health_error, sizeof s->health_error);
        s->health_age_s = w->health_checked ? (double)(now - w->health_ns) / NS_PER_S : -1;
        s->health_unix_ms = w->health_unix_ms;
        s->outstanding = w->outstanding;
        s->latency_ewma_ms = w->latency_ewma_ms;
        s->counters = w->counters;
        memcpy(s->counters.transitions, w->br.transitions, sizeof s->counters.transitions);
    }
    out->calls = c->calls;
    out->items = c->items;
    out->items_worker = c->items_worker;
    out->items_fallback = c->items_fallback;
    out->items_error = c->items_error;
    out->gpu_usage_rate = c->items ? (double)c->items_worker / (double)c->items : 0;
    out->fallback_rate = c->items ? (double)c->items_fallback / (double)c->items : 0;
    memcpy(out->latency_hist, c->hist, sizeof out->latency_hist);
    pthread_mutex_unlock(&c->mu);
}
