#include "client/transport.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/clock.h"
#include "util/log.h"

#define EXPIRY_GRACE_MS 500u
#define POLL_MAX_MS 1000

struct fw__transport {
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t mu;
    fw__xfer *queue_head, *queue_tail; /* submitted, not yet added to the multi handle */
    bool stop;                         /* asks the I/O thread to end */
    bool stopped;                      /* the I/O thread has ended: submits complete at once */
    bool thread_started;
    fw__transport_opts opts;
    char api_key_header[FW_CLIENT_KEY_MAX + 16];
    fw__xfer *running; /* added to the multi handle (list through next) */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

fw_client_http fw__transport_resolve_http(fw_client_http requested)
{
    pthread_once(&curl_once, curl_init);
    if (requested != FW_CLIENT_HTTP_AUTO)
        return requested;
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (!v || !(v->features & CURL_VERSION_HTTP2))
        return FW_CLIENT_HTTP_1_1;
    /* Prior-knowledge connections are reused correctly only from 8.0.0 (curl #10634). */
    return v->version_num >= 0x080000 ? FW_CLIENT_HTTP_2_PRIOR : FW_CLIENT_HTTP_2_UPGRADE;
}

const char *fw__transport_http_name(fw_client_http h)
{
    switch (h) {
    case FW_CLIENT_HTTP_AUTO:
        return "auto";
    case FW_CLIENT_HTTP_1_1:
        return "http/1.1";
    case FW_CLIENT_HTTP_2_UPGRADE:
        return "h2c-upgrade";
    case FW_CLIENT_HTTP_2_PRIOR:
        return "h2-prior";
    }
    return "unknown";
}

void fw__xfer_reset(fw__xfer *x)
{
    x->curl_code = CURLE_OK;
    x->http_status = 0;
    x->error[0] = '\0';
    fw_buf_free(&x->response);
    fw_buf_init(&x->response);
    x->retry_after[0] = '\0';
    x->http_version = 0;
    x->new_connects = 0;
    x->expires_ns = 0;
    x->easy = NULL;
    x->headers = NULL;
    x->next = NULL;
}

void fw__xfer_cleanup(fw__xfer *x)
{
    if (x)
        fw_buf_free(&x->response);
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *user)
{
    fw__xfer *x = user;
    size_t n = size * nmemb;
    if (x->response.len + n > FW__MAX_RESPONSE_BYTES)
        return 0; /* aborts with CURLE_WRITE_ERROR */
    fw_buf_append(&x->response, p, n);
    return x->response.failed ? 0 : n;
}

static size_t on_header(char *p, size_t size, size_t nitems, void *user)
{
    fw__xfer *x = user;
    size_t n = size * nitems;
    static const char name[] = "retry-after:";
    if (n > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
        size_t vlen = n - (sizeof name - 1);
        const char *v = p + sizeof name - 1;
        while (vlen && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
            vlen--;
        if (vlen >= sizeof x->retry_after)
            vlen = sizeof x->retry_after - 1;
        memcpy(x->retry_after, v, vlen);
        x->retry_after[vlen] = '\0';
    } else if (n >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        x->retry_after[0] = '\0'; /* a new response (after 101 or 100) starts */
    }
    return n;
}

static void finish(fw__xfer *x, int code, const char *msg)
{
    if (code != CURLE_OK && !x->error[0])
        snprintf(x->error, sizeof x->error, "%s", msg ? msg : curl_easy_strerror(code));
    x->curl_code = code;
    if (x->headers)
        curl_slist_free_all(x->headers);
    x->headers = NULL;
    if (x->easy)
        curl_easy_cleanup(x->easy);
    x->easy = NULL;
    x->done(x, x->user);
}

#define SETOPT(e, opt, val)                                                                        \
    do {                                                                                           \
        if (curl_easy_setopt(e, opt, val) != CURLE_OK)                                             \
            goto fail;                                                                             \
    } while (0)

/* Creates x's easy handle and adds it; on failure completes x. */
static void start(fw__transport *t, fw__xfer *x)
{
    CURL *e = curl_easy_init();
    struct curl_slist *h = NULL;
    if (!e) {
        finish(x, CURLE_OUT_OF_MEMORY, "curl_easy_init failed");
        return;
    }
    x->easy = e;
    SETOPT(e, CURLOPT_URL, x->url);
    SETOPT(e, CURLOPT_PRIVATE, (void *)x);
    SETOPT(e, CURLOPT_ERRORBUFFER, x->error);
    SETOPT(e, CURLOPT_NOSIGNAL, 1L);
    SETOPT(e, CURLOPT_PROXY, "");
    SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(e, CURLOPT_TCP_NODELAY, 1L);
    SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(e, CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(e, CURLOPT_WRITEDATA, (void *)x);
    SETOPT(e, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(e, CURLOPT_HEADERDATA, (void *)x);
    SETOPT(e, CURLOPT_TIMEOUT_MS, (long)(x->timeout_ms ? x->timeout_ms : 1));
    SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, (long)t->opts.connect_timeout_ms);
    long ver = CURL_HTTP_VERSION_1_1;
    if (t->opts.http == FW_CLIENT_HTTP_2_UPGRADE)
        ver = CURL_HTTP_VERSION_2_0;
    else if (t->opts.http == FW_CLIENT_HTTP_2_PRIOR)
        ver = strncmp(x->url, "https:", 6) == 0 ? CURL_HTTP_VERSION_2TLS
                                                : CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
    SETOPT(e, CURLOPT_HTTP_VERSION, ver);
    /* Prior knowledge: wait for the one connection rather than open more. Not for the
     * Upgrade: every connection starts as HTTP/1.1, and a parked transfer of libcurl 7.x can
     * outlive its connection. */
    if (t->opts.http == FW_CLIENT_HTTP_2_PRIOR)
        SETOPT(e, CURLOPT_PIPEWAIT, 1L);
    if (t->api_key_header[0] && !(h = curl_slist_append(h, t->api_key_header)))
        goto fail;
    if (x->body) {
        char ct[160];
        snprintf(ct, sizeof ct, "Content-Type: %s",
                 x->content_type ? x->content_type : "application/octet-stream");
        struct curl_slist *h2 = curl_slist_append(h, ct);
        if (!h2)
            goto fail;
        h = h2;
        /* no "Expect: 100-continue" round trip */
        if (!(h2 = curl_slist_append(h, "Expect:")))
            goto fail;
        h = h2;
        SETOPT(e, CURLOPT_POST, 1L);
        SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
        SETOPT(e, CURLOPT_POSTFIELDS, x->body);
    }
    x->headers = h;
    if (h)
        SETOPT(e, CURLOPT_HTTPHEADER, h);
    /* libcurl's own timeout fires first; this one is the backstop */
    x->expires_ns = fw_now_ns() + (x->timeout_ms + EXPIRY_GRACE_MS) * 1000000u;
    if (curl_multi_add_handle(t->multi, e) != CURLM_OK)
        goto fail;
    x->next = t->running;
    t->running = x;
    return;
fail:
    x->headers = h;
    finish(x, CURLE_FAILED_INIT, "could not set up the HTTP transfer");
}

static void unlink_running(fw__transport *t, fw__xfer *x)
{
    for (fw__xfer **p = &t->running; *p; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            x->next = NULL;
            return;
        }
}

static void complete(fw__transport *t, CURL *e, CURLcode rc)
{
    fw__xfer *x = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
    if (!x)
        return;
    curl_multi_remove_handle(t->multi, e);
    unlink_running(t, x);
    long status = 0, ver = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &ver);
    long nc = 0;
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &nc);
    x->new_connects = nc;
    x->http_status = rc == CURLE_OK ? status : 0;
    x->http_version = ver;
    if (rc == CURLE_OK && x->response.failed)
        rc = CURLE_OUT_OF_MEMORY;
    finish(x, rc, NULL);
}

/* Completes every running transfer past its backstop expiry; returns the milliseconds until
 * the next one expires (at most POLL_MAX_MS). */
static int expire(fw__transport *t)
{
    uint64_t now = fw_now_ns(), next = UINT64_MAX;
    for (fw__xfer **p = &t->running; *p;) {
        fw__xfer *x = *p;
        if (x->expires_ns > now) {
            if (x->expires_ns < next)
                next = x->expires_ns;
            p = &x->next;
            continue;
        }
        *p = x->next;
        x->next = NULL;
        curl_multi_remove_handle(t->multi, x->easy);
        FW_WARN("client", "transfer expired", "url=%s timeout_ms=%llu", x->url,
                (unsigned long long)x->timeout_ms);
        finish(x, CURLE_OPERATION_TIMEDOUT, "the transfer did not finish within its timeout");
    }
    if (next == UINT64_MAX || next - now >= (uint64_t)POLL_MAX_MS * 1000000u)
        return POLL_MAX_MS;
    return (int)((next - now) / 1000000u) + 1;
}

static void *io_main(void *arg)
{
    fw__transport *t = arg;
    for (;;) {
        pthread_mutex_lock(&t->mu);
        fw__xfer *q = t->queue_head;
        t->queue_head = t->queue_tail = NULL;
        bool stop = t->stop;
        pthread_mutex_unlock(&t->mu);
        while (q) {
            fw__xfer *next = q->next;
            q->next = NULL;
            if (stop)
                finish(q, CURLE_ABORTED_BY_CALLBACK, "the client is shutting down");
            else
                start(t, q);
            q = next;
        }
        if (stop)
            break;
        int running = 0;
        curl_multi_perform(t->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(t->multi, &left)))
            if (m->msg == CURLMSG_DONE)
                complete(t, m->easy_handle, m->data.result);
        curl_multi_poll(t->multi, NULL, 0, expire(t), NULL);
    }
    while (t->running) {
        fw__xfer *x = t->running;
        t->running = x->next;
        x->next = NULL;
        curl_multi_remove_handle(t->multi, x->easy);
        finish(x, CURLE_ABORTED_BY_CALLBACK, "the client is shutting down");
    }
    return NULL;
}

fw_err fw__transport_new(const fw__transport_opts *opts, fw__transport **out, fw_error *err)
{
    *out = NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return fw_error_set(err, FW_ERR_INTERNAL, "curl_global_init failed: %s",
                            curl_easy_strerror(curl_init_rc));
    fw__transport *t = calloc(1, sizeof *t);
    if (!t)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    t->opts = *opts;
    t->opts.api_key = NULL;
    if (opts->api_key && opts->api_key[0])
        snprintf(t->api_key_header, sizeof t->api_key_header, "X-API-Key: %s", opts->api_key);
    if (pthread_mutex_init(&t->mu, NULL)) {
        free(t);
        return fw_error_set(err, FW_ERR_INTERNAL, "pthread_mutex_init failed");
    }
    t->multi = curl_multi_init();
    if (!t->multi) {
        pthread_mutex_destroy(&t->mu);
        free(t);
        return fw_error_set(err, FW_ERR_NOMEM, "curl_multi_init failed");
    }
    long maxc = opts->max_connections ? (long)opts->max_connections : 1;
    long hosts = opts->max_hosts ? (long)opts->max_hosts : 1;
    if (curl_multi_setopt(t->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxc) != CURLM_OK ||
        curl_multi_setopt(t->multi, CURLMOPT_MAXCONNECTS, maxc * hosts + 4) != CURLM_OK ||
        curl_multi_setopt(t->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX) != CURLM_OK) {
        curl_multi_cleanup(t->multi);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return fw_error_set(err, FW_ERR_INTERNAL, "curl_multi_setopt failed");
    }
    if (pthread_create(&t->thread, NULL, io_main, t)) {
        curl_multi_cleanup(t->multi);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return fw_error_set(err, FW_ERR_INTERNAL, "could not start the client I/O thread");
    }
    t->thread_started = true;
    *out = t;
    return FW_OK;
}

void fw__transport_submit(fw__transport *t, fw__xfer *x)
{
    x->next = NULL;
    pthread_mutex_lock(&t->mu);
    if (t->stopped) {
        pthread_mutex_unlock(&t->mu);
        finish(x, CURLE_ABORTED_BY_CALLBACK, "the client is shutting down");
        return;
    }
    if (t->queue_tail)
        t->queue_tail->next = x;
    else
        t->queue_head = x;
    t->queue_tail = x;
    pthread_mutex_unlock(&t->mu);
    curl_multi_wakeup(t->multi);
}

void fw__transport_stop(fw__transport *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_mutex_unlock(&t->mu);
    curl_multi_wakeup(t->multi);
    if (t->thread_started)
        pthread_join(t->thread, NULL);
    t->thread_started = false;
    /* anything submitted after the thread's last look at the queue */
    pthread_mutex_lock(&t->mu);
    t->stopped = true;
    fw__xfer *q = t->queue_head;
    t->queue_head = t->queue_tail = NULL;
    pthread_mutex_unlock(&t->mu);
    while (q) {
        fw__xfer *next = q->next;
        q->next = NULL;
        finish(q, CURLE_ABORTED_BY_CALLBACK, "the client is shutting down");
        q = next;
    }
}

void fw__transport_free(fw__transport *t)
{
    if (!t)
        return;
    fw__transport_stop(t);
    curl_multi_cleanup(t->multi);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
