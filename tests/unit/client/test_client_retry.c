/* The client's retry, Retry-After, no-retry-on-4xx, per-item retry and API-key behaviour
 * against scripted in-process HTTP/1.1 servers (one thread each, one request per
 * connection), plus concurrent calls from several threads. The per-item fallback case
 * uses the real models (FW_PHOTOS_DIR). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "facework/client.h"
#include "facework/image.h"
#include "util/clock.h"
#include "util/metrics.h"

#define MAX_REQ 64

enum { MODE_SCRIPT = 0, MODE_FAIL_FIRST_IF_MULTI, MODE_FAIL_FIRST_ALWAYS };

typedef struct reply {
    int status;
    const char *headers; /* extra header lines, each ending in \r\n; NULL: none */
    const char *body;    /* NULL: a success for every item of the request */
} reply;

typedef struct fake {
    int fd;
    int port;
    char url[64];
    pthread_t th;
    pthread_mutex_t mu;
    int mode;
    reply script[8];
    size_t nscript; /* request i gets script[min(i, nscript - 1)] */
    size_t requests;
    uint64_t t_ns[MAX_REQ];
    size_t parts[MAX_REQ];
    char api_key[64];
    char path[64];
    _Atomic int stop;
} fake;

static size_t count_parts(const char *body, size_t len)
{
    size_t n = 0;
    const char *needle = "name=\"image\"";
    for (size_t i = 0; i + 12 <= len; i++)
        if (memcmp(body + i, needle, 12) == 0)
            n++;
    return n;
}

/* {"results":[...]} for n items; item 0 fails with inference_error when fail_first. */
static char *success_body(size_t n, bool fail_first)
{
    size_t cap = 128 + n * 128;
    char *b = malloc(cap);
    size_t off = (size_t)snprintf(b, cap, "{\"took_ms\":1.0,\"provider\":\"cpu\",\"results\":[");
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && fail_first)
            off += (size_t)snprintf(b + off, cap - off,
                                    "{\"index\":0,\"id\":\"0\",\"error\":{\"code\":"
                                    "\"inference_error\",\"message\":\"ORT failed\"}}");
        else
            off += (size_t)snprintf(b + off, cap - off,
                                    "%s{\"index\":%zu,\"id\":\"%zu\",\"width\":7,\"height\":9,"
                                    "\"faces\":[]}",
                                    i ? "," : "", i, i);
    }
    snprintf(b + off, cap - off, "]}");
    return b;
}

static void handle(fake *f, int c)
{
    char *buf = malloc(1 << 20);
    size_t len = 0;
    char *hend = NULL;
    while (!hend && len < (1 << 20) - 1) {
        ssize_t r = read(c, buf + len, (1 << 20) - 1 - len);
        if (r <= 0)
            goto out;
        len += (size_t)r;
        buf[len] = '\0';
        hend = strstr(buf, "\r\n\r\n");
    }
    if (!hend)
        goto out;
    size_t hlen = (size_t)(hend + 4 - buf);
    size_t clen = 0;
    const char *cl = strcasestr(buf, "content-length:");
    if (cl && cl < hend)
        clen = strtoul(cl + 15, NULL, 10);
    while (len < hlen + clen && len < (1 << 20) - 1) {
        ssize_t r = read(c, buf + len, (1 << 20) - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    pthread_mutex_lock(&f->mu);
    size_t i = f->requests++;
    if (i < MAX_REQ) {
        f->t_ns[i] = fw_now_ns();
        f->parts[i] = count_parts(buf + hlen, len - hlen);
    }
    const char *key = strcasestr(buf, "x-api-key:");
    if (key && key < hend)
        sscanf(key + 10, " %63[^\r\n]", f->api_key);
    sscanf(buf, "%*s %63s", f->path);
    reply rp = {200, NULL, NULL};
    if (f->mode == MODE_SCRIPT && f->nscript)
        rp = f->script[i < f->nscript ? i : f->nscript - 1];
    size_t parts = i < MAX_REQ ? f->parts[i] : 1;
    int mode = f->mode;
    pthread_mutex_unlock(&f->mu);
    char *dyn = NULL;
    if (!rp.body)
        rp.body = dyn = success_body(parts, (mode == MODE_FAIL_FIRST_IF_MULTI && parts > 1) ||
                                                mode == MODE_FAIL_FIRST_ALWAYS);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n%s\r\n",
                     rp.status, strlen(rp.body), rp.headers ? rp.headers : "");
    if (write(c, head, (size_t)n) < 0 || write(c, rp.body, strlen(rp.body)) < 0) {
        /* the client went away: fine */
    }
    free(dyn);
out:
    free(buf);
}

static void *serve(void *arg)
{
    fake *f = arg;
    while (!f->stop) {
        struct pollfd p = {.fd = f->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(f->fd, NULL, NULL);
        if (c < 0)
            continue;
        handle(f, c);
        shutdown(c, SHUT_WR);
        close(c);
    }
    return NULL;
}

static void fake_start(fake *f, int mode)
{
    memset(f, 0, sizeof *f);
    f->mode = mode;
    pthread_mutex_init(&f->mu, NULL);
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(f->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f->fd, 64), 0);
    assert_int_equal(getsockname(f->fd, (struct sockaddr *)&a, &al), 0);
    f->port = ntohs(a.sin_port);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d", f->port);
    assert_int_equal(pthread_create(&f->th, NULL, serve, f), 0);
}

static void fake_stop(fake *f)
{
    f->stop = 1;
    pthread_join(f->th, NULL);
    close(f->fd);
    pthread_mutex_destroy(&f->mu);
}

static size_t fake_requests(fake *f)
{
    pthread_mutex_lock(&f->mu);
    size_t n = f->requests;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static void config(fw_client_config *cfg, const char *urls)
{
    fw_client_config_init(cfg);
    snprintf(cfg->urls, sizeof cfg->urls, "%s", urls);
    cfg->seed = 99;
    cfg->health_interval_s = 0;
    cfg->http_version = FW_CLIENT_HTTP_1_1;
    cfg->backoff_base_s = 0.001;
    cfg->backoff_max_s = 3;
    cfg->fallback = 0;
    cfg->timeout_s = 10;
}

static const uint8_t dummy[] = "not decoded by the fake worker";
static const fw_blob blobs[4] = {
    {dummy, sizeof dummy}, {dummy, sizeof dummy}, {dummy, sizeof dummy}, {dummy, sizeof dummy}};

static void test_429_retry_after_seconds(void **state)
{
    (void)state;
    fake f;
    fake_start(&f, MODE_SCRIPT);
    f.script[0] = (reply){429, "Retry-After: 1\r\n",
                          "{\"error\":{\"code\":\"busy\",\"message\":\"slow down\"}}"};
    f.script[1] = (reply){200, NULL, NULL};
    f.nscript = 2;
    fw_client_config cfg;
    config(&cfg, f.url);
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_client_result r;
    assert_int_equal(fw_client_analyze(c, blobs, 1, NULL, &r, NULL), FW_OK);
    assert_int_equal(r.result.status, FW_OK);
    assert_string_equal(r.origin, f.url);
    assert_int_equal(r.attempts, 2);
    assert_int_equal(r.result.width, 7);
    assert_int_equal(fake_requests(&f), 2);
    /* the retry waited for Retry-After (1 s), far more than the backoff (<= 1 ms) */
    double gap = (double)(f.t_ns[1] - f.t_ns[0]) / 1e9;
    assert_true(gap >= 0.99 && gap < 2.5);
    assert_string_equal(f.path, "/v1/analyze");
    fw_client_result_clear(&r);
    fw_client_status_info st;
    fw_client_status(c, &st);
    assert_int_equal(st.workers[0].counters.failures, 1);
    assert_int_equal(st.workers[0].counters.successes, 1);
    assert_int_equal(st.workers[0].counters.retries, 1);
    fw_client_free(c);
    fake_stop(&f);
}

static void test_503_retry_after_http_date(void **state)
{
    (void)state;
    fake f;
    fake_start(&f, MODE_SCRIPT);
    char hdr[96];
    time_t when = time(NULL) + 2;
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(hdr, sizeof hdr, "Retry-After: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    f.script[0] = (reply){503, hdr, "{\"error\":{\"code\":\"unavailable\",\"message\":\"full\"}}"};
    f.script[1] = (reply){200, NULL, NULL};
    f.nscript = 2;
    fw_client_config cfg;
    config(&cfg, f.url);
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_client_result r;
    fw_client_call_opts o;
    fw_client_call_opts_init(&o);
    o.analyze.embed = false;
    assert_int_equal(fw_client_analyze(c, blobs, 1, &o, &r, NULL), FW_OK);
    assert_int_equal(r.result.status, FW_OK);
    assert_int_equal(r.attempts, 2);
    assert_string_equal(f.path, "/v1/detect");
    /* the date is 1 to 2 s ahead of the first answer (whole seconds) */
    double gap = (double)(f.t_ns[1] - f.t_ns[0]) / 1e9;
    assert_true(gap >= 0.9 && gap < 3.0);
    fw_client_result_clear(&r);
    fw_client_free(c);
    fake_stop(&f);
}

static void test_long_retry_after_not_waited(void **state)
{
    (void)state;
    fake f;
    fake_start(&f, MODE_SCRIPT);
    f.script[0] = (reply){503, "Retry-After: 30\r\n",
                          "{\"error\":{\"code\":\"unavailable\",\"message\":\"draining\"}}"};
    f.nscript = 1;
    fw_client_config cfg;
    config(&cfg, f.url);
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_client_result r;
    uint64_t t0 = fw_now_ns();
    assert_int_equal(fw_client_analyze(c, blobs, 1, NULL, &r, NULL), FW_OK);
    assert_true(fw_now_ns() - t0 < 2000000000u); /* 30 s > backoff_max_s: not waited */
    assert_int_equal(r.result.status, FW_ERR_BUSY);
    assert_int_equal(r.attempts, 1);
    assert_non_null(strstr(r.result.message, "draining"));
    assert_non_null(strstr(r.result.message, "503"));
    fw_client_result_clear(&r);
    /* the worker stays out of the rotation: the next call does not contact it */
    assert_int_equal(fw_client_analyze(c, blobs, 1, NULL, &r, NULL), FW_OK);
    assert_int_equal(r.attempts, 0);
    assert_int_equal(fake_requests(&f), 1);
    fw_client_result_clear(&r);
    fw_client_free(c);
    fake_stop(&f);
}

static void test_5xx_gateway_errors_retried(void **state)
{
    (void)state;
    fake f;
    fake_start(&f, MODE_SCRIPT);
    f.script[0] = (reply){502, NULL, "bad gateway"};
    f.script[1] = (reply){504, NULL, "gateway timeout"};
    f.script[2] = (reply){200, "", "not json at all"}; /* garbage: retried too */
    f.script[3] = (reply){200, NULL, NULL};
    f.nscript = 4;
    fw_client_config cfg;
    config(&cfg, f.url);
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_client_result r[2];
    assert_int_equal(fw_client_analyze(c, blobs, 2, NULL, r, NULL), FW_OK);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].result.status, FW_OK);
        assert_int_equal(r[i].attempts, 4);
        fw_client_result_clear(&r[i]);
    }
    fw_client_status_info st;
    fw_client_status(c, &st);
    assert_int_equal(st.workers[0].counters.failures, 3);
    assert_int_equal(st.workers[0].counters.successes, 1);
    /* max_retries bounds the attempts */
    fw_client_free(c);
    fake_stop(&f);

    fake_start(&f, MODE_SCRIPT);
    f.script[0] = (reply){503, NULL, "{}"};
    f.nscript = 1;
    config(&cfg, f.url);
    cfg.max_retries = 2;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    assert_int_equal(fw_client_analyze(c, blobs, 1, NULL, r, NULL), FW_OK);
    assert_int_equal(r[0].result.status, FW_ERR_BUSY);
    assert_int_equal(r[0].attempts, 3);
    assert_int_equal(fake_requests(&f), 3);
    fw_client_result_clear(&r[0]);
    fw_client_free(c);
    fake_stop(&f);
}

static void test_4xx_and_500_never_retried(void **state)
{
    (void)state;
    static const struct {
        int status;
        fw_err code;
    } rows[] = {
        {400, FW_ERR_INVALID_ARGUMENT}, {401, FW_ERR_AUTH},        {403, FW_ERR_AUTH},
        {404, FW_ERR_UNAVAILABLE},      {413, FW_ERR_TOO_LARGE},   {415, FW_ERR_UNSUPPORTED},
        {422, FW_ERR_UNAVAILABLE},      {500, FW_ERR_UNAVAILABLE},
    };
    for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
        fake f;
        fake_start(&f, MODE_SCRIPT);
        f.script[0] = (reply){rows[k].status, NULL,
                              "{\"error\":{\"code\":\"nope\",\"message\":\"refused here\"}}"};
        f.nscript = 1;
        fw_client_config cfg;
        config(&cfg, f.url);
        fw_client *c;
        assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
        fw_client_result r[3];
        assert_int_equal(fw_client_analyze(c, blobs, 3, NULL, r, NULL), FW_OK);
        assert_int_equal(fake_requests(&f), 1);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(r[i].result.status, rows[k].code);
            assert_int_equal(r[i].attempts, 1);
            assert_string_equal(r[i].origin, "");
            assert_non_null(strstr(r[i].result.message, "refused here"));
            assert_non_null(strstr(r[i].result.message, f.url));
            fw_client_result_clear(&r[i]);
        }
        fw_client_status_info st;
        fw_client_status(c, &st);
        /* 4xx: the worker is alive (a breaker success); 500: a failure */
        assert_int_equal(st.workers[0].counters.failures, rows[k].status >= 500);
        fw_client_free(c);
        fake_stop(&f);
    }
}

static void test_worker_fault_item_retried_elsewhere(void **state)
{
    (void)state;
    fake a, b;
    fake_start(&a, MODE_FAIL_FIRST_IF_MULTI);
    fake_start(&b, MODE_FAIL_FIRST_IF_MULTI);
    char urls[160];
    snprintf(urls, sizeof urls, "%s,%s", a.url, b.url);
    fw_client_config cfg;
    config(&cfg, urls);
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_client_result r[2];
    assert_int_equal(fw_client_analyze(c, blobs, 2, NULL, r, NULL), FW_OK);
    /* item 1 answered by the worker that got the batch; item 0 failed there with
     * inference_error and was retried on the other worker */
    assert_int_equal(r[0].result.status, FW_OK);
    assert_int_equal(r[1].result.status, FW_OK);
    assert_int_equal(r[0].attempts, 2);
    assert_int_equal(r[1].attempts, 1);
    assert_string_not_equal(r[0].origin, r[1].origin);
    assert_true(strcmp(r[0].origin, a.url) == 0 || strcmp(r[0].origin, b.url) == 0);
    assert_true(strcmp(r[1].origin, a.url) == 0 || strcmp(r[1].origin, b.url) == 0);
    assert_int_equal(fake_requests(&a), 1);
    assert_int_equal(fake_requests(&b), 1);
    fw_client_result_clear(&r[0]);
    fw_client_result_clear(&r[1]);
    fw_client_status_info st;
    fw_client_status(c, &st);
    assert_int_equal(st.items_worker, 2);
    /* a response with some per-item failures is still a success for the breaker */
    assert_int_equal(st.workers[0].counters.failures + st.workers[1].counters.failures, 0);
    fw_client_free(c);
    fake_stop(&a);
    fake_stop(&b);
}

static void test_worker_fault_item_falls_back_to_cpu(void **state)
{
    (void)state;
    const char *photos = getenv("FW_PHOTOS_DIR");
    assert_non_null(photos);
    char path[1024];
    snprintf(path, sizeof path, "%s/sample1.jpg", photos);
    uint8_t *img;
    size_t len;
    assert_int_equal(fw_read_file(path, 0, &img, &len, NULL), FW_OK);
    fw_blob two[2] = {{img, len}, {img, len}};

    fake f;
    fake_start(&f, MODE_FAIL_FIRST_ALWAYS);
    fw_client_config cfg;
    config(&cfg, f.url);
    cfg.fallback = 1;
    cfg.max_retries = 1;
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_client_result r[2];
    assert_int_equal(fw_client_analyze(c, two, 2, NULL, r, NULL), FW_OK);
    /* item 0: failed on the worker twice (1 + max_retries), then the CPU fallback */
    assert_int_equal(r[0].result.status, FW_OK);
    assert_string_equal(r[0].origin, FW_CLIENT_ORIGIN_FALLBACK);
    assert_int_equal(r[0].attempts, 2);
    assert_true(r[0].result.n_faces > 0);
    assert_int_equal(r[0].embedding_dim, 512);
    assert_non_null(r[0].result.faces[0].embedding);
    /* item 1: the worker's answer */
    assert_string_equal(r[1].origin, f.url);
    assert_int_equal(r[1].result.n_faces, 0);
    assert_int_equal(fake_requests(&f), 2);
    assert_int_equal(f.parts[0], 2);
    assert_int_equal(f.parts[1], 1);
    fw_client_result_clear(&r[0]);
    fw_client_result_clear(&r[1]);
    fw_client_status_info st;
    fw_client_status(c, &st);
    assert_int_equal(st.items_fallback, 1);
    assert_int_equal(st.items_worker, 1);
    assert_true(st.fallback_loaded);
    /* the second request failed every item: a breaker failure */
    assert_int_equal(st.workers[0].counters.failures, 1);
    assert_int_equal(st.workers[0].counters.successes, 1);
    fw_client_free(c);
    fake_stop(&f);
    free(img);
}

static void test_api_key_sent(void **state)
{
    (void)state;
    fake f;
    fake_start(&f, MODE_SCRIPT);
    fw_client_config cfg;
    config(&cfg, f.url);
    snprintf(cfg.api_key, sizeof cfg.api_key, "k3y-value");
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_client_result r;
    assert_int_equal(fw_client_analyze(c, blobs, 1, NULL, &r, NULL), FW_OK);
    assert_string_equal(f.api_key, "k3y-value");
    fw_client_result_clear(&r);
    assert_int_equal(fw_client_check_health(c), 1);
    assert_string_equal(f.path, "/health");
    fw_client_free(c);
    fake_stop(&f);
}

typedef struct worker_arg {
    fw_client *c;
    const char *url_a, *url_b;
    int bad;
} worker_arg;

static void *caller(void *p)
{
    worker_arg *w = p;
    for (int k = 0; k < 5; k++) {
        fw_client_result r[3];
        if (fw_client_analyze(w->c, blobs, 3, NULL, r, NULL) != FW_OK) {
            w->bad++;
            continue;
        }
        for (int i = 0; i < 3; i++) {
            if (r[i].result.status != FW_OK ||
                (strcmp(r[i].origin, w->url_a) && strcmp(r[i].origin, w->url_b)))
                w->bad++;
            fw_client_result_clear(&r[i]);
        }
    }
    return NULL;
}

static void test_concurrent_calls(void **state)
{
    (void)state;
    fake a, b;
    fake_start(&a, MODE_SCRIPT);
    fake_start(&b, MODE_SCRIPT);
    char urls[160];
    snprintf(urls, sizeof urls, "%s,%s", a.url, b.url);
    fw_client_config cfg;
    config(&cfg, urls);
    cfg.batch_size = 2;
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    pthread_t th[4];
    worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){c, a.url, b.url, 0};
        assert_int_equal(pthread_create(&th[i], NULL, caller, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].bad, 0);
    }
    /* 4 threads x 5 calls x 2 batches; both workers used */
    assert_int_equal(fake_requests(&a) + fake_requests(&b), 40);
    assert_true(fake_requests(&a) > 0 && fake_requests(&b) > 0);
    fw_client_status_info st;
    fw_client_status(c, &st);
    assert_int_equal(st.calls, 20);
    assert_int_equal(st.items, 60);
    assert_int_equal(st.items_worker, 60);
    assert_int_equal(st.workers[0].outstanding + st.workers[1].outstanding, 0);
    fw_client_free(c);
    fake_stop(&a);
    fake_stop(&b);
}

static void test_argument_errors(void **state)
{
    (void)state;
    fw_client_config cfg;
    config(&cfg, "http://127.0.0.1:1");
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_client_result r[1];
    fw_error err;
    assert_int_equal(fw_client_analyze(c, NULL, 1, NULL, r, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_client_analyze(c, blobs, 1, NULL, NULL, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_client_analyze(NULL, blobs, 1, NULL, r, &err), FW_ERR_INVALID_ARGUMENT);
    fw_blob nodata = {NULL, 5};
    assert_int_equal(fw_client_analyze(c, &nodata, 1, NULL, r, &err), FW_ERR_INVALID_ARGUMENT);
    fw_client_call_opts o;
    fw_client_call_opts_init(&o);
    o.analyze.min_score = 2;
    assert_int_equal(fw_client_analyze(c, blobs, 1, &o, r, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_client_analyze(c, blobs, 0, NULL, r, &err), FW_OK);
    fw_client_result_clear(NULL);
    fw_client_status(NULL, NULL);
    fw_client_free(c);
}

static void expect_line(const char *text, const char *line)
{
    if (!strstr(text, line))
        fail_msg("metric line missing: %s\n%s", line, text);
}

static void test_metrics_registered(void **state)
{
    (void)state;
    fake f;
    fake_start(&f, MODE_SCRIPT);
    f.script[0] = (reply){200, NULL, NULL};
    f.script[1] = (reply){500, NULL, "{\"error\":{\"code\":\"x\",\"message\":\"boom\"}}"};
    f.nscript = 2;
    fw_metrics *reg;
    assert_int_equal(fw_metrics_new(&reg, NULL), FW_OK);
    fw_client_config cfg;
    config(&cfg, f.url);
    cfg.metrics = reg;
    cfg.failure_threshold = 1;
    cfg.min_requests = 0;
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_client_result r[2];
    assert_int_equal(fw_client_analyze(c, blobs, 2, NULL, r, NULL), FW_OK); /* 200 */
    fw_client_result_clear(&r[0]);
    fw_client_result_clear(&r[1]);
    assert_int_equal(fw_client_analyze(c, blobs, 1, NULL, r, NULL), FW_OK); /* 500: opens */
    fw_client_result_clear(&r[0]);
    char *text;
    assert_int_equal(fw_metrics_render(reg, &text, NULL, NULL), FW_OK);
    char line[256];
    snprintf(line, sizeof line,
             "facework_client_requests_total{worker=\"%s\",outcome=\"success\"} 1\n", f.url);
    expect_line(text, line);
    snprintf(line, sizeof line,
             "facework_client_requests_total{worker=\"%s\",outcome=\"failure\"} 1\n", f.url);
    expect_line(text, line);
    snprintf(line, sizeof line, "facework_client_request_seconds_count{worker=\"%s\"} 2\n", f.url);
    expect_line(text, line);
    snprintf(line, sizeof line,
             "facework_client_breaker_transitions_total{worker=\"%s\",from=\"closed\","
             "to=\"open\"} 1\n",
             f.url);
    expect_line(text, line);
    snprintf(line, sizeof line, "facework_client_breaker_state{worker=\"%s\"} 1\n", f.url);
    expect_line(text, line);
    snprintf(line, sizeof line, "facework_client_outstanding{worker=\"%s\"} 0\n", f.url);
    expect_line(text, line);
    expect_line(text, "facework_client_items_total{served_by=\"worker\"} 2\n");
    expect_line(text, "facework_client_items_total{served_by=\"error\"} 1\n");
    expect_line(text, "facework_client_items_total{served_by=\"fallback\"} 0\n");
    /* 2 of 3 items by a worker */
    expect_line(text, "facework_client_gpu_usage_ratio 0.6666666666666666");
    expect_line(text, "facework_client_fallback_ratio 0\n");
    free(text);
    fw_client_free(c);
    /* the registry outlives the client and still renders */
    assert_int_equal(fw_metrics_render(reg, &text, NULL, NULL), FW_OK);
    free(text);
    fw_metrics_free(reg);
    fake_stop(&f);
}

static void test_fallback_load_failure_and_disabled(void **state)
{
    (void)state;
    fw_client_config cfg;
    config(&cfg, "http://127.0.0.1:1");
    cfg.enabled = 0; /* no workers at all: everything needs the fallback */
    cfg.fallback = 1;
    snprintf(cfg.fallback_models_dir, sizeof cfg.fallback_models_dir, "/nonexistent/pack");
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_error err;
    assert_int_equal(fw_client_wait_ready(c, 1, &err), FW_ERR_UNAVAILABLE);
    assert_int_equal(fw_client_check_health(c), 0);
    fw_client_result r[2];
    assert_int_equal(fw_client_analyze(c, blobs, 2, NULL, r, NULL), FW_OK);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].result.status, FW_ERR_UNAVAILABLE);
        assert_string_equal(r[i].origin, "");
        assert_int_equal(r[i].attempts, 0);
        assert_non_null(strstr(r[i].result.message, "could not be loaded"));
        fw_client_result_clear(&r[i]);
    }
    fw_client_status_info st;
    fw_client_status(c, &st);
    assert_false(st.enabled);
    assert_true(st.fallback_enabled);
    assert_false(st.fallback_loaded);
    assert_true(st.fallback_error[0] != '\0');
    assert_int_equal(st.items_error, 2);
    fw_client_free(c);

    cfg.fallback = 0;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    assert_int_equal(fw_client_analyze(c, blobs, 1, NULL, r, NULL), FW_OK);
    assert_int_equal(r[0].result.status, FW_ERR_UNAVAILABLE);
    assert_string_equal(r[0].result.message,
                        "GPU workers are disabled and the CPU fallback is disabled");
    fw_client_result_clear(&r[0]);
    fw_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_429_retry_after_seconds),
        cmocka_unit_test(test_503_retry_after_http_date),
        cmocka_unit_test(test_long_retry_after_not_waited),
        cmocka_unit_test(test_5xx_gateway_errors_retried),
        cmocka_unit_test(test_4xx_and_500_never_retried),
        cmocka_unit_test(test_worker_fault_item_retried_elsewhere),
        cmocka_unit_test(test_worker_fault_item_falls_back_to_cpu),
        cmocka_unit_test(test_api_key_sent),
        cmocka_unit_test(test_concurrent_calls),
        cmocka_unit_test(test_argument_errors),
        cmocka_unit_test(test_metrics_registered),
        cmocka_unit_test(test_fallback_load_failure_and_disabled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
