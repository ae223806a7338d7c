/* Tests of the HTTP transport (src/server/http.c) over real sockets on 127.0.0.1.
 *
 * The client is libcurl (HTTP/1.1, HTTP/2 prior knowledge, h2c Upgrade). Unit tests under
 * tests/unit/server are not linked with libcurl, so it is loaded with dlopen() (fw_core links
 * the dl library); a few cases that need byte-level control use a raw socket instead.
 * Waiting is done on condition variables and poll() with generous upper bounds, never on a
 * fixed sleep. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "server/http.h"
#include "util/clock.h"

#define WAIT_MS 10000 /* upper bound for anything that should happen "soon" */

/* cmocka's assert_* must not run outside the test's thread (handlers run on loop threads,
 * curl callbacks on load threads): there, a failed check aborts the process. */
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* ---------------------------------------------------------------------------------------- */
/* libcurl, loaded at run time                                                               */

static struct {
    void *lib;
    CURLcode (*global_init)(long);
    void (*global_cleanup)(void);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_perform)(CURL *);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    void (*easy_cleanup)(CURL *);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
    const char *(*easy_strerror)(CURLcode);
} cu;

static void curl_load(void)
{
    cu.lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (cu.lib == NULL)
        cu.lib = dlopen("libcurl.so", RTLD_NOW | RTLD_LOCAL);
    assert_non_null(cu.lib);
#define LOAD(field, name)                                                                          \
    do {                                                                                           \
        *(void **)&cu.field = dlsym(cu.lib, name);                                                 \
        assert_non_null(cu.field);                                                                 \
    } while (0)
    LOAD(global_init, "curl_global_init");
    LOAD(global_cleanup, "curl_global_cleanup");
    LOAD(easy_init, "curl_easy_init");
    LOAD(easy_setopt, "curl_easy_setopt");
    LOAD(easy_perform, "curl_easy_perform");
    LOAD(easy_getinfo, "curl_easy_getinfo");
    LOAD(easy_cleanup, "curl_easy_cleanup");
    LOAD(slist_append, "curl_slist_append");
    LOAD(slist_free_all, "curl_slist_free_all");
    LOAD(easy_strerror, "curl_easy_strerror");
#undef LOAD
    assert_int_equal(cu.global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
}

typedef struct buf {
    char *data;
    size_t len;
} buf;

static void buf_add(buf *b, const void *p, size_t n)
{
    char *d = realloc(b->data, b->len + n + 1);
    CHECK(d != NULL);
    memcpy(d + b->len, p, n);
    b->data = d;
    b->len += n;
    b->data[b->len] = '\0';
}

typedef struct http_result {
    CURLcode rc;
    long status;
    long version; /* CURL_HTTP_VERSION_1_1 / CURL_HTTP_VERSION_2_0 */
    buf body;
    buf headers; /* raw header lines, lower-cased */
} http_result;

static void result_free(http_result *r)
{
    free(r->body.data);
    free(r->headers.data);
    memset(r, 0, sizeof(*r));
}

/* Value of a response header (lower-case name) copied into out; false when absent. */
static bool result_header(const http_result *r, const char *name, char *out, size_t cap)
{
    if (r->headers.data == NULL)
        return false;
    size_t nl = strlen(name);
    for (const char *line = r->headers.data; *line != '\0';) {
        const char *eol = strstr(line, "\r\n");
        size_t ll = eol != NULL ? (size_t)(eol - line) : strlen(line);
        if (ll > nl && strncmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                ++v;
            size_t vl = ll - (size_t)(v - line);
            if (vl >= cap)
                vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return true;
        }
        line += ll;
        if (*line == '\r')
            line += 2;
    }
    return false;
}

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
    buf_add(user, p, size * n);
    return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *user)
{
    size_t len = size * n;
    buf *b = user;
    size_t old = b->len;
    buf_add(b, p, len);
    /* lower-case the name part */
    for (size_t i = old; i < b->len && b->data[i] != ':'; ++i)
        if (b->data[i] >= 'A' && b->data[i] <= 'Z')
            b->data[i] = (char)(b->data[i] - 'A' + 'a');
    return len;
}

typedef struct http_opts {
    long version;       /* CURL_HTTP_VERSION_* */
    const char *method; /* NULL: GET, or POST when body != NULL */
    const void *body;
    size_t body_len;
    const char *headers[4]; /* extra request headers, NULL-terminated */
    bool fresh;             /* do not reuse the connection afterwards */
    bool head;              /* HEAD request (CURLOPT_NOBODY) */
    int (*xferinfo)(void *, curl_off_t, curl_off_t, curl_off_t, curl_off_t);
    void *xferinfo_user;
} http_opts;

/* One request on a handle (the handle keeps its connection for the next call). */
static void http_do_on(CURL *c, int port, const char *path, const http_opts *o, http_result *r)
{
    memset(r, 0, sizeof(*r));
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    cu.easy_setopt(c, CURLOPT_URL, url);
    cu.easy_setopt(c, CURLOPT_HTTP_VERSION, o->version != 0 ? o->version : CURL_HTTP_VERSION_1_1);
    cu.easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    cu.easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    cu.easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    cu.easy_setopt(c, CURLOPT_HEADERDATA, &r->headers);
    cu.easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(2 * WAIT_MS));
    cu.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    struct curl_slist *hl = cu.slist_append(NULL, "Expect:");
    for (int i = 0; i < 4 && o->headers[i] != NULL; ++i)
        hl = cu.slist_append(hl, o->headers[i]);
    cu.easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    if (o->body != NULL) {
        cu.easy_setopt(c, CURLOPT_POST, 1L);
        cu.easy_setopt(c, CURLOPT_POSTFIELDS, o->body);
        cu.easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    } else {
        cu.easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    cu.easy_setopt(c, CURLOPT_CUSTOMREQUEST, o->method);
    cu.easy_setopt(c, CURLOPT_NOBODY, o->head ? 1L : 0L);
    cu.easy_setopt(c, CURLOPT_FORBID_REUSE, o->fresh ? 1L : 0L);
    if (o->xferinfo != NULL) {
        cu.easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        cu.easy_setopt(c, CURLOPT_XFERINFOFUNCTION, o->xferinfo);
        cu.easy_setopt(c, CURLOPT_XFERINFODATA, o->xferinfo_user);
    } else {
        cu.easy_setopt(c, CURLOPT_NOPROGRESS, 1L);
    }
    r->rc = cu.easy_perform(c);
    cu.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    cu.easy_getinfo(c, CURLINFO_HTTP_VERSION, &r->version);
    cu.easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    cu.slist_free_all(hl);
}

static void http_do(int port, const char *path, const http_opts *o, http_result *r)
{
    CURL *c = cu.easy_init();
    assert_non_null(c);
    http_do_on(c, port, path, o, r);
    cu.easy_cleanup(c);
}

/* ---------------------------------------------------------------------------------------- */
/* raw sockets                                                                               */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void raw_send(int fd, const char *s)
{
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
        assert_true(n > 0);
        off += (size_t)n;
    }
}

/* Reads until the peer closes, or until a full response with Content-Length arrived.
 * Returns false on timeout. */
static bool raw_read_response(int fd, buf *out, int timeout_ms)
{
    uint64_t deadline = fw_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (out->data != NULL) {
            const char *end = strstr(out->data, "\r\n\r\n");
            const char *cl = strstr(out->data, "Content-Length: ");
            if (end != NULL && cl != NULL && cl < end) {
                size_t want = (size_t)(end + 4 - out->data) + strtoul(cl + 16, NULL, 10);
                if (out->len >= want)
                    return true;
            }
        }
        uint64_t now = fw_now_ms();
        if (now >= deadline)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)(deadline - now));
        if (pr <= 0)
            return false;
        char tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
        if (n <= 0)
            return true; /* closed (or reset) */
        buf_add(out, tmp, (size_t)n);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* test server                                                                               */

typedef struct held {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fw_http_request *reqs[64];
    size_t n; /* requests parked by /hold */
    /* access log */
    int log_status[256];
    char log_id[256][20];
    char log_path[256][64];
    uint64_t log_bytes[256];
    int log_version[256];
    size_t n_log;
    /* async responder */
    fw_http_request *queue[1024];
    size_t q_head, q_tail;
    bool q_stop;
    pthread_t responder;
    bool responder_started;
} held;

static held H;

static void held_reset(void)
{
    pthread_mutex_lock(&H.mu);
    H.n = 0;
    H.n_log = 0;
    H.q_head = H.q_tail = 0;
    H.q_stop = false;
    pthread_mutex_unlock(&H.mu);
}

static bool timed_wait(uint64_t deadline_ms)
{
    uint64_t now = fw_now_ms();
    if (now >= deadline_ms)
        return false;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t left = deadline_ms - now;
    ts.tv_sec += (time_t)(left / 1000);
    ts.tv_nsec += (long)(left % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&H.cv, &H.mu, &ts);
    return true;
}

/* Waits until n requests are parked by /hold. */
static bool wait_held(size_t n)
{
    uint64_t deadline = fw_now_ms() + WAIT_MS;
    pthread_mutex_lock(&H.mu);
    while (H.n < n && timed_wait(deadline))
        ;
    bool ok = H.n >= n;
    pthread_mutex_unlock(&H.mu);
    return ok;
}

/* Waits until the access log has an entry for path with the given status. */
static bool wait_logged(const char *path, int status)
{
    uint64_t deadline = fw_now_ms() + WAIT_MS;
    pthread_mutex_lock(&H.mu);
    bool found = false;
    for (;;) {
        for (size_t i = 0; i < H.n_log && !found; ++i)
            found = H.log_status[i] == status && strcmp(H.log_path[i], path) == 0;
        if (found || !timed_wait(deadline))
            break;
    }
    pthread_mutex_unlock(&H.mu);
    return found;
}

/* Waits until the access log has at least n entries for path (any status). */
static bool wait_log_count(const char *path, size_t n)
{
    uint64_t deadline = fw_now_ms() + WAIT_MS;
    pthread_mutex_lock(&H.mu);
    size_t count = 0;
    for (;;) {
        count = 0;
        for (size_t i = 0; i < H.n_log; ++i)
            count += strcmp(H.log_path[i], path) == 0;
        if (count >= n || !timed_wait(deadline))
            break;
    }
    pthread_mutex_unlock(&H.mu);
    return count >= n;
}

static fw_http_request *take_held(size_t i)
{
    pthread_mutex_lock(&H.mu);
    fw_http_request *r = H.reqs[i];
    H.reqs[i] = NULL;
    pthread_mutex_unlock(&H.mu);
    return r;
}

static void on_access(const fw_http_access_entry *e, void *user)
{
    (void)user;
    pthread_mutex_lock(&H.mu);
    if (H.n_log < 256) {
        size_t i = H.n_log++;
        H.log_status[i] = e->status;
        snprintf(H.log_id[i], sizeof(H.log_id[i]), "%s", e->request_id);
        snprintf(H.log_path[i], sizeof(H.log_path[i]), "%s", e->path);
        H.log_bytes[i] = e->bytes_sent;
        H.log_version[i] = e->http_version;
    }
    pthread_cond_broadcast(&H.cv);
    pthread_mutex_unlock(&H.mu);
}

/* GET/POST /echo: answers at once with what it saw. The body does not depend on the HTTP
 * version (so HTTP/1.1 and HTTP/2 bodies can be compared); the version goes in a header. */
static void h_echo(fw_http_request *req, void *user)
{
    (void)user;
    const char *xt = fw_http_header(req, "X-TEST");
    const char *ct = fw_http_header(req, "content-type");
    const char *cl = fw_http_header(req, "Content-Length");
    const char *host = fw_http_header(req, "host");
    bool remote_ok = strncmp(req->remote_addr, "127.0.0.1:", 10) == 0;
    bool id_ok = strlen(req->request_id) == 16 && strspn(req->request_id, "0123456789abcdef") == 16;
    /* iteration: every name lower-case, "x-test" among them */
    const char *name, *value;
    size_t nh = fw_http_header_count(req);
    bool saw_xtest = xt == NULL;
    for (size_t i = 0; i < nh; ++i) {
        CHECK(fw_http_header_at(req, i, &name, &value) == 1);
        CHECK(strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(name));
        saw_xtest = saw_xtest || (strcmp(name, "x-test") == 0 && strcmp(value, xt) == 0);
    }
    CHECK(saw_xtest);
    CHECK(fw_http_header_at(req, nh, &name, &value) == 0);
    CHECK(fw_http_header(req, "no-such-header") == NULL);
    size_t cap = 512 + req->body_len;
    char *out = malloc(cap);
    CHECK(out != NULL);
    int n = snprintf(out, cap,
                     "method=%s path=%s query=%s x-test=%s ct=%s cl=%s host=%s remote_ok=%d "
                     "id_ok=%d len=%zu body=",
                     req->method, req->path, req->query, xt ? xt : "-", ct ? ct : "-",
                     cl ? cl : "-", host ? "yes" : "no", remote_ok, id_ok, req->body_len);
    memcpy(out + n, req->body, req->body_len);
    char ver[8];
    snprintf(ver, sizeof(ver), "%d", req->http_version);
    fw_http_header_kv hdrs[] = {{"X-Seen-Version", ver}};
    CHECK(fw_http_respond_take(req, 200, "text/plain", hdrs, 1, out, (size_t)n + req->body_len) ==
          FW_OK);
}

static void h_ok(fw_http_request *req, void *user)
{
    (void)user;
    fw_http_respond(req, 200, "text/plain", NULL, 0, "ok", 2);
}

/* /hold: parks the request; the test answers it later from its own thread. */
static void h_hold(fw_http_request *req, void *user)
{
    (void)user;
    pthread_mutex_lock(&H.mu);
    CHECK(H.n < 64);
    H.reqs[H.n++] = req;
    pthread_cond_broadcast(&H.cv);
    pthread_mutex_unlock(&H.mu);
}

/* POST /async: queued to the responder thread, which answers "async:" + body. */
static void h_async(fw_http_request *req, void *user)
{
    (void)user;
    pthread_mutex_lock(&H.mu);
    CHECK(H.q_tail - H.q_head < 1024);
    H.queue[H.q_tail++ % 1024] = req;
    pthread_cond_broadcast(&H.cv);
    pthread_mutex_unlock(&H.mu);
}

static void h_bad_header(fw_http_request *req, void *user)
{
    (void)user;
    fw_http_header_kv hdrs[] = {{"X-Evil", "a\r\nSet-Cookie: x=1"}};
    CHECK(fw_http_respond(req, 200, "text/plain", hdrs, 1, "no", 2) == FW_ERR_INVALID_ARGUMENT);
}

static void h_retry(fw_http_request *req, void *user)
{
    (void)user;
    fw_http_respond_error(req, 503, "busy", "queue \"full\"\n\\", 3);
}

static void *responder_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&H.mu);
    for (;;) {
        while (H.q_head == H.q_tail && !H.q_stop)
            pthread_cond_wait(&H.cv, &H.mu);
        if (H.q_head == H.q_tail && H.q_stop)
            break;
        fw_http_request *req = H.queue[H.q_head++ % 1024];
        pthread_mutex_unlock(&H.mu);
        size_t len = 6 + req->body_len;
        char *out = malloc(len + 1);
        CHECK(out != NULL);
        memcpy(out, "async:", 6);
        memcpy(out + 6, req->body, req->body_len);
        fw_http_respond_take(req, 200, "text/plain", NULL, 0, out, len);
        pthread_mutex_lock(&H.mu);
    }
    pthread_mutex_unlock(&H.mu);
    return NULL;
}

static const fw_http_route ROUTES[] = {
    {"GET", "/echo", h_echo},   {"POST", "/echo", h_echo},   {"GET", "/ok", h_ok},
    {"GET", "/hold", h_hold},   {"POST", "/async", h_async}, {"GET", "/bad_header", h_bad_header},
    {"GET", "/retry", h_retry},
};

typedef struct server_opts {
    unsigned threads;
    size_t max_body;
    unsigned read_timeout_ms;
    unsigned request_timeout_ms;
    size_t max_connections;
} server_opts;

static fw_http_server *server_start(const server_opts *so)
{
    held_reset();
    fw_http_config cfg;
    fw_http_config_defaults(&cfg);
    static const char *const listen[] = {"127.0.0.1:0"};
    cfg.listen = listen;
    cfg.n_listen = 1;
    cfg.n_threads = so != NULL && so->threads ? so->threads : 2;
    if (so != NULL && so->max_body)
        cfg.max_body_bytes = so->max_body;
    if (so != NULL && so->read_timeout_ms)
        cfg.read_timeout_ms = so->read_timeout_ms;
    if (so != NULL)
        cfg.request_timeout_ms = so->request_timeout_ms;
    if (so != NULL && so->max_connections)
        cfg.max_connections = so->max_connections;
    cfg.access_log = on_access;
    fw_http_server *srv = NULL;
    fw_error err;
    fw_err rc =
        fw_http_server_new(&cfg, ROUTES, sizeof(ROUTES) / sizeof(ROUTES[0]), NULL, &srv, &err);
    if (rc != FW_OK)
        fail_msg("server_new: %s", err.message);
    rc = fw_http_server_start(srv, &err);
    if (rc != FW_OK)
        fail_msg("server_start: %s", err.message);
    assert_int_equal(pthread_create(&H.responder, NULL, responder_main, NULL), 0);
    H.responder_started = true;
    return srv;
}

static void server_stop(fw_http_server *srv)
{
    fw_http_server_free(srv);
    pthread_mutex_lock(&H.mu);
    H.q_stop = true;
    pthread_cond_broadcast(&H.cv);
    pthread_mutex_unlock(&H.mu);
    if (H.responder_started) {
        pthread_join(H.responder, NULL);
        H.responder_started = false;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* tests                                                                                     */

static const char ECHO_GET[] = "method=GET path=/echo query=a=1&b=2 x-test=hello ct=- cl=- "
                               "host=yes remote_ok=1 id_ok=1 len=0 body=";
static const char ECHO_POST[] = "method=POST path=/echo query= x-test=hello "
                                "ct=application/octet-stream cl=11 host=yes remote_ok=1 "
                                "id_ok=1 len=11 body=hello world";

static void check_echo(long version, long want_version, const char *want_seen)
{
    fw_http_server *srv = server_start(NULL);
    int port = fw_http_server_port(srv, 0);
    http_opts o = {.version = version, .headers = {"X-Test: hello"}};
    http_result r;

    http_do(port, "/echo?a=1&b=2", &o, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.version, want_version);
    assert_string_equal(r.body.data, ECHO_GET);
    char v[64];
    assert_true(result_header(&r, "content-type", v, sizeof(v)));
    assert_string_equal(v, "text/plain");
    assert_true(result_header(&r, "x-seen-version", v, sizeof(v)));
    assert_string_equal(v, want_seen);
    assert_true(result_header(&r, "x-request-id", v, sizeof(v)));
    assert_int_equal(strlen(v), 16);
    char first_id[64];
    snprintf(first_id, sizeof(first_id), "%s", v);
    result_free(&r);

    o.body = "hello world";
    o.body_len = 11;
    o.headers[1] = "Content-Type: application/octet-stream";
    http_do(port, "/echo", &o, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.version, want_version);
    assert_string_equal(r.body.data, ECHO_POST);
    assert_true(result_header(&r, "x-request-id", v, sizeof(v)));
    assert_string_not_equal(v, first_id);
    result_free(&r);

    /* the access log saw both, with the ids the client got */
    assert_true(wait_log_count("/echo", 2));
    pthread_mutex_lock(&H.mu);
    bool found = false;
    for (size_t i = 0; i < H.n_log; ++i) {
        if (strcmp(H.log_id[i], first_id) == 0) {
            found = true;
            assert_int_equal(H.log_status[i], 200);
            assert_string_equal(H.log_path[i], "/echo");
            assert_int_equal(H.log_bytes[i], strlen(ECHO_GET));
            assert_int_equal(H.log_version[i], want_seen[0] - '0');
        }
    }
    pthread_mutex_unlock(&H.mu);
    assert_true(found);
    server_stop(srv);
}

static void test_http1(void **state)
{
    (void)state;
    check_echo(CURL_HTTP_VERSION_1_1, CURL_HTTP_VERSION_1_1, "1");
}

static void test_http2_prior_knowledge(void **state)
{
    (void)state;
    check_echo(CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE, CURL_HTTP_VERSION_2_0, "2");
}

static void test_h2c_upgrade(void **state)
{
    (void)state;
    fw_http_server *srv = server_start(NULL);
    int port = fw_http_server_port(srv, 0);
    http_opts o = {.version = CURL_HTTP_VERSION_2_0, .headers = {"X-Test: hello"}};
    http_result r;
    http_do(port, "/echo?a=1&b=2", &o, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.version, CURL_HTTP_VERSION_2_0); /* upgraded */
    assert_string_equal(r.body.data, ECHO_GET);
    char v[16];
    assert_true(result_header(&r, "x-seen-version", v, sizeof(v)));
    assert_string_equal(v, "2");
    result_free(&r);

    /* a POST with Upgrade: h2c: whichever version ends up serving it, same answer */
    o.body = "hello world";
    o.body_len = 11;
    o.headers[1] = "Content-Type: application/octet-stream";
    http_do(port, "/echo", &o, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, ECHO_POST);
    result_free(&r);
    server_stop(srv);
}

static void test_async_response(void **state)
{
    (void)state;
    fw_http_server *srv = server_start(NULL);
    int port = fw_http_server_port(srv, 0);
    long versions[] = {CURL_HTTP_VERSION_1_1, CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE};
    for (int i = 0; i < 2; ++i) {
        http_opts o = {.version = versions[i], .body = "payload", .body_len = 7};
        http_result r;
        http_do(port, "/async", &o, &r);
        assert_int_equal(r.rc, CURLE_OK);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body.data, "async:payload");
        result_free(&r);
    }

    /* /hold: answered by this thread once the handler has long returned */
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    raw_send(fd, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(wait_held(1));
    assert_true(wait_log_count("/async", 2));
    assert_int_equal(fw_http_server_inflight(srv), 1);
    fw_http_header_kv hdrs[] = {{"Retry-After", "7"}};
    assert_int_equal(fw_http_respond(take_held(0), 202, "application/json", hdrs, 1, "{}", 2),
                     FW_OK);
    buf resp = {0};
    assert_true(raw_read_response(fd, &resp, WAIT_MS));
    assert_non_null(strstr(resp.data, "HTTP/1.1 202 "));
    assert_non_null(strstr(resp.data, "\r\nretry-after: 7\r\n"));
    assert_non_null(strstr(resp.data, "\r\n\r\n{}"));
    free(resp.data);
    close(fd);
    assert_true(wait_logged("/hold", 202));
    server_stop(srv);
}

typedef struct load_arg {
    int port;
    int id;
    int ok;
} load_arg;

/* libcurl 7.88 (Debian 12) cannot reuse a prior-knowledge HTTP/2 connection (curl issue
 * #10634, fixed in 8.0): those threads open a connection per request; the h2c threads upgrade
 * once and multiplex every later request on that HTTP/2 connection. */
static void *load_main(void *p)
{
    load_arg *a = p;
    CURL *c = cu.easy_init();
    if (c == NULL)
        return NULL;
    static const long versions[4] = {CURL_HTTP_VERSION_1_1, CURL_HTTP_VERSION_2_0,
                                     CURL_HTTP_VERSION_1_1, CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE};
    long version = versions[a->id % 4];
    long want_version =
        version == CURL_HTTP_VERSION_1_1 ? CURL_HTTP_VERSION_1_1 : CURL_HTTP_VERSION_2_0;
    for (int i = 0; i < 50; ++i) {
        char body[64], want[80];
        snprintf(body, sizeof(body), "thread-%d-request-%d", a->id, i);
        snprintf(want, sizeof(want), "async:%s", body);
        http_opts o = {.version = version,
                       .body = body,
                       .body_len = strlen(body),
                       .fresh = version == CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE};
        http_result r;
        http_do_on(c, a->port, "/async", &o, &r);
        if (r.rc == CURLE_OK && r.status == 200 && r.version == want_version &&
            r.body.data != NULL && strcmp(r.body.data, want) == 0)
            a->ok++;
        else
            fprintf(stderr, "load %d/%d: rc=%d (%s) status=%ld version=%ld body=%s\n", a->id, i,
                    (int)r.rc, cu.easy_strerror(r.rc), r.status, r.version,
                    r.body.data ? r.body.data : "(null)");
        result_free(&r);
    }
    cu.easy_cleanup(c);
    return NULL;
}

static void test_concurrent_async(void **state)
{
    (void)state;
    fw_http_server *srv = server_start(&(server_opts){.threads = 2});
    int port = fw_http_server_port(srv, 0);
    pthread_t th[8];
    load_arg args[8];
    for (int i = 0; i < 8; ++i) {
        args[i] = (load_arg){.port = port, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, load_main, &args[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 8; ++i) {
        pthread_join(th[i], NULL);
        total += args[i].ok;
    }
    assert_int_equal(total, 8 * 50);
    server_stop(srv);
}

static const char TOO_LARGE_JSON[] =
    "{\"error\":{\"code\":\"too_large\",\"message\":\"the request body exceeds the limit of "
    "1024 bytes\"}}";

static void test_body_too_large(void **state)
{
    (void)state;
    fw_http_server *srv = server_start(&(server_opts){.max_body = 1024});
    int port = fw_http_server_port(srv, 0);
    char *big = malloc(4096);
    assert_non_null(big);
    memset(big, 'x', 4096);

    /* exactly at the limit: accepted */
    http_opts o = {.version = CURL_HTTP_VERSION_1_1, .body = big, .body_len = 1024};
    http_result r;
    http_do(port, "/async", &o, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 6 + 1024);
    result_free(&r);

    /* over it (HTTP/1.1, Content-Length) */
    o.body_len = 4096;
    http_do(port, "/async", &o, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 413);
    assert_string_equal(r.body.data, TOO_LARGE_JSON);
    char v[64];
    assert_true(result_header(&r, "content-type", v, sizeof(v)));
    assert_string_equal(v, "application/json");
    assert_true(result_header(&r, "x-request-id", v, sizeof(v)));
    assert_int_equal(strlen(v), 16);
    result_free(&r);
    assert_true(wait_logged("/async", 413));

    /* a huge Content-Length is refused from the headers alone, before any body byte */
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    raw_send(fd, "POST /async HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000000\r\n\r\n");
    buf resp = {0};
    assert_true(raw_read_response(fd, &resp, WAIT_MS));
    assert_non_null(resp.data);
    assert_non_null(strstr(resp.data, "HTTP/1.1 413 "));
    assert_non_null(strstr(resp.data, TOO_LARGE_JSON));
    free(resp.data);
    close(fd);

    /* chunked: cut off once the decoded body passes the limit */
    fd = raw_connect(port);
    assert_true(fd >= 0);
    raw_send(fd, "POST /async HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n");
    char chunk[2049];
    memset(chunk, 'y', 2048);
    chunk[2048] = '\0';
    raw_send(fd, chunk);
    raw_send(fd, "\r\n");
    memset(&resp, 0, sizeof(resp));
    assert_true(raw_read_response(fd, &resp, WAIT_MS));
    assert_non_null(resp.data);
    assert_non_null(strstr(resp.data, "HTTP/1.1 413 "));
    assert_non_null(strstr(resp.data, TOO_LARGE_JSON));
    free(resp.data);
    close(fd);

    /* HTTP/2: h2o 2.2 resets the stream (documented); no success, and the server lives on */
    o.version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
    http_do(port, "/async", &o, &r);
    assert_false(r.rc == CURLE_OK && r.status == 200);
    result_free(&r);
    http_opts g = {.version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE};
    http_do(port, "/ok", &g, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "ok");
    result_free(&r);

    free(big);
    server_stop(srv);
}

static void test_not_found_and_method(void **state)
{
    (void)state;
    fw_http_server *srv = server_start(NULL);
    int port = fw_http_server_port(srv, 0);
    long versions[] = {CURL_HTTP_VERSION_1_1, CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE};
    for (int i = 0; i < 2; ++i) {
        http_opts o = {.version = versions[i]};
        http_result r;
        http_do(port, "/nope?x=1", &o, &r);
        assert_int_equal(r.rc, CURLE_OK);
        assert_int_equal(r.status, 404);
        assert_string_equal(
            r.body.data, "{\"error\":{\"code\":\"not_found\",\"message\":\"no such endpoint\"}}");
        char v[64];
        assert_true(result_header(&r, "content-type", v, sizeof(v)));
        assert_string_equal(v, "application/json");
        result_free(&r);

        o.method = "DELETE";
        http_do(port, "/echo", &o, &r);
        assert_int_equal(r.rc, CURLE_OK);
        assert_int_equal(r.status, 405);
        assert_true(result_header(&r, "allow", v, sizeof(v)));
        assert_string_equal(v, "GET, POST");
        assert_string_equal(r.body.data, "{\"error\":{\"code\":\"method_not_allowed\",\"message\":"
                                         "\"this method is not allowed here\"}}");
        result_free(&r);

        /* HEAD is served by the GET route, without the body */
        http_opts h = {.version = versions[i], .head = true};
        http_do(port, "/ok", &h, &r);
        assert_int_equal(r.rc, CURLE_OK);
        assert_int_equal(r.status, 200);
        assert_null(r.body.data);
        assert_true(result_header(&r, "content-length", v, sizeof(v)));
        assert_string_equal(v, "2");
        result_free(&r);

        /* respond_error: escaping and Retry-After */
        o.method = NULL;
        http_do(port, "/retry", &o, &r);
        assert_int_equal(r.status, 503);
        assert_string_equal(
            r.body.data,
            "{\"error\":{\"code\":\"busy\",\"message\":\"queue \\\"full\\\"\\u000a\\\\\"}}");
        assert_true(result_header(&r, "retry-after", v, sizeof(v)));
        assert_string_equal(v, "3");
        result_free(&r);

        /* a handler building an invalid header gets a 500 instead of header injection */
        http_do(port, "/bad_header", &o, &r);
        assert_int_equal(r.status, 500);
        assert_false(result_header(&r, "set-cookie", v, sizeof(v)));
        assert_false(result_header(&r, "x-evil", v, sizeof(v)));
        result_free(&r);
    }

    /* a request target h2o routes to its fallback (not under "/") is JSON too */
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    raw_send(fd, "GET * HTTP/1.1\r\nHost: t\r\n\r\n");
    buf resp = {0};
    assert_true(raw_read_response(fd, &resp, WAIT_MS));
    assert_non_null(resp.data);
    assert_non_null(strstr(resp.data, " 404 "));
    assert_non_null(strstr(resp.data, "{\"error\":{\"code\":\"not_found\""));
    free(resp.data);
    close(fd);
    server_stop(srv);
}

static int abort_when_held(void *user, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    size_t want = *(size_t *)user;
    pthread_mutex_lock(&H.mu);
    bool is_held = H.n >= want;
    pthread_mutex_unlock(&H.mu);
    return is_held ? 1 : 0;
}

static void test_client_disconnects(void **state)
{
    (void)state;
    fw_http_server *srv = server_start(NULL);
    int port = fw_http_server_port(srv, 0);

    /* HTTP/2: curl aborts the transfer (and closes the connection) once the request is
     * parked; h2o notices and disposes the request */
    size_t want = 1;
    http_opts o = {.version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE,
                   .xferinfo = abort_when_held,
                   .xferinfo_user = &want};
    http_result r;
    http_do(port, "/hold", &o, &r);
    assert_int_equal(r.rc, CURLE_ABORTED_BY_CALLBACK);
    result_free(&r);
    assert_true(wait_logged("/hold", 0)); /* status 0: no response was sent */
    assert_int_equal(fw_http_server_inflight(srv), 0);
    /* the late answer is dropped */
    assert_int_equal(fw_http_respond(take_held(0), 200, "text/plain", NULL, 0, "late", 4), FW_OK);

    /* again, answering from this thread right away, racing the disposal */
    want = 2;
    http_do(port, "/hold", &o, &r);
    assert_int_equal(r.rc, CURLE_ABORTED_BY_CALLBACK);
    result_free(&r);
    fw_http_respond_error(take_held(1), 503, "busy", "late", 1);

    /* HTTP/1.1: h2o does not read while a request is being handled, so it notices the closed
     * connection only when it writes the late answer; that must be harmless too */
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    raw_send(fd, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(wait_held(3));
    close(fd);
    char big[65536];
    memset(big, 'z', sizeof(big));
    assert_int_equal(fw_http_respond(take_held(2), 200, "text/plain", NULL, 0, big, sizeof(big)),
                     FW_OK);

    /* the server keeps serving, and every request is finished */
    http_opts g = {.version = CURL_HTTP_VERSION_1_1};
    http_do(port, "/ok", &g, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    result_free(&r);
    g.version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
    http_do(port, "/ok", &g, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    result_free(&r);
    /* all five requests finished (in-flight drops before the log entry is written) */
    assert_true(wait_log_count("/hold", 3));
    assert_true(wait_log_count("/ok", 2));
    assert_int_equal(fw_http_server_inflight(srv), 0);
    server_stop(srv);
}

typedef struct bg_req {
    int port;
    long version;
    http_result r;
} bg_req;

static void *bg_main(void *p)
{
    bg_req *b = p;
    http_opts o = {.version = b->version};
    http_do(b->port, "/hold", &o, &b->r);
    return NULL;
}

static void test_stop_accepting(void **state)
{
    (void)state;
    fw_http_server *srv = server_start(NULL);
    int port = fw_http_server_port(srv, 0);
    bg_req b1 = {.port = port, .version = CURL_HTTP_VERSION_1_1};
    bg_req b2 = {.port = port, .version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE};
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, bg_main, &b1), 0);
    assert_true(wait_held(1));
    assert_int_equal(pthread_create(&t2, NULL, bg_main, &b2), 0);
    assert_true(wait_held(2));
    assert_int_equal(fw_http_server_inflight(srv), 2);

    fw_http_server_stop_accepting(srv);
    fw_http_server_stop_accepting(srv); /* idempotent */
    errno = 0;
    int fd = raw_connect(port);
    assert_int_equal(fd, -1);
    assert_int_equal(errno, ECONNREFUSED);

    /* the in-flight requests still complete */
    assert_int_equal(fw_http_respond(take_held(0), 200, "text/plain", NULL, 0, "one", 3), FW_OK);
    assert_int_equal(fw_http_respond(take_held(1), 200, "text/plain", NULL, 0, "two", 3), FW_OK);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_int_equal(b1.r.rc, CURLE_OK);
    assert_int_equal(b1.r.status, 200);
    assert_string_equal(b1.r.body.data, "one");
    char v[32];
    assert_true(result_header(&b1.r, "connection", v, sizeof(v)));
    assert_string_equal(v, "close");
    assert_int_equal(b2.r.rc, CURLE_OK);
    assert_int_equal(b2.r.status, 200);
    assert_int_equal(b2.r.version, CURL_HTTP_VERSION_2_0);
    assert_string_equal(b2.r.body.data, "two");
    result_free(&b1.r);
    result_free(&b2.r);
    server_stop(srv);
}

static void test_slow_client_timeout(void **state)
{
    (void)state;
    fw_http_server *srv = server_start(&(server_opts){.read_timeout_ms = 1000});
    int port = fw_http_server_port(srv, 0);
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    uint64_t t0 = fw_now_ms();
    raw_send(fd, "GET /ok HTTP/1.1\r\nHost: t\r\nX-Half: ");
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, WAIT_MS), 1);
    char tmp[256];
    ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
    uint64_t elapsed = fw_now_ms() - t0;
    assert_true(n <= 0); /* closed without a response */
    assert_true(elapsed >= 900);
    close(fd);

    /* the server keeps serving */
    http_result r;
    http_opts g = {.version = CURL_HTTP_VERSION_1_1};
    http_do(port, "/ok", &g, &r);
    assert_int_equal(r.status, 200);
    result_free(&r);
    server_stop(srv);
}

static void test_request_timeout(void **state)
{
    (void)state;
    fw_http_server *srv = server_start(&(server_opts){.request_timeout_ms = 200});
    int port = fw_http_server_port(srv, 0);
    http_result r;
    http_opts o = {.version = CURL_HTTP_VERSION_1_1};
    http_do(port, "/hold", &o, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body.data, "{\"error\":{\"code\":\"timeout\",\"message\":\"the request "
                                     "was not answered within 200 ms\"}}");
    result_free(&r);
    assert_true(wait_held(1));
    assert_true(wait_logged("/hold", 503));
    /* the handler's answer after the deadline is dropped */
    assert_int_equal(fw_http_respond(take_held(0), 200, NULL, NULL, 0, NULL, 0), FW_OK);
    http_do(port, "/ok", &o, &r);
    assert_int_equal(r.status, 200);
    result_free(&r);
    server_stop(srv);
}

static void test_free_with_pending(void **state)
{
    (void)state;
    fw_http_server *srv = server_start(NULL);
    int port = fw_http_server_port(srv, 0);
    bg_req b1 = {.port = port, .version = CURL_HTTP_VERSION_1_1};
    bg_req b2 = {.port = port, .version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE};
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, bg_main, &b1), 0);
    assert_int_equal(pthread_create(&t2, NULL, bg_main, &b2), 0);
    assert_true(wait_held(2));

    /* idle keep-alive connection too */
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    raw_send(fd, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n");
    buf resp = {0};
    assert_true(raw_read_response(fd, &resp, WAIT_MS));
    free(resp.data);

    server_stop(srv); /* answers 503 to both, closes the idle connection */
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_int_equal(b1.r.status, 503);
    assert_string_equal(b1.r.body.data, "{\"error\":{\"code\":\"unavailable\",\"message\":\"the "
                                        "server is shutting down\"}}");
    assert_int_equal(b2.r.status, 503);
    result_free(&b1.r);
    result_free(&b2.r);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, WAIT_MS), 1);
    char tmp[16];
    assert_true(recv(fd, tmp, sizeof(tmp), 0) <= 0);
    close(fd);

    /* handlers answering after the server is gone: dropped, no crash, no leak */
    assert_int_equal(fw_http_respond(take_held(0), 200, NULL, NULL, 0, NULL, 0), FW_OK);
    assert_int_equal(fw_http_respond_error(take_held(1), 500, "x", "y", 0), FW_OK);
}

static void test_max_connections(void **state)
{
    (void)state;
    fw_http_server *srv = server_start(&(server_opts){.max_connections = 1, .threads = 1});
    int port = fw_http_server_port(srv, 0);
    int fd1 = raw_connect(port);
    assert_true(fd1 >= 0);
    raw_send(fd1, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n");
    buf resp = {0};
    assert_true(raw_read_response(fd1, &resp, WAIT_MS));
    assert_non_null(strstr(resp.data, " 200 "));
    free(resp.data);
    assert_int_equal(fw_http_server_connections(srv), 1);

    int fd2 = raw_connect(port); /* the kernel accepts; the server closes it at once */
    assert_true(fd2 >= 0);
    struct pollfd p = {.fd = fd2, .events = POLLIN};
    assert_int_equal(poll(&p, 1, WAIT_MS), 1);
    char tmp[16];
    assert_true(recv(fd2, tmp, sizeof(tmp), 0) <= 0);
    close(fd2);

    /* the first connection still works */
    raw_send(fd1, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n");
    memset(&resp, 0, sizeof(resp));
    assert_true(raw_read_response(fd1, &resp, WAIT_MS));
    assert_non_null(strstr(resp.data, " 200 "));
    free(resp.data);
    close(fd1);
    server_stop(srv);
}

static bool have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static void test_listen_addresses(void **state)
{
    (void)state;
    /* two ephemeral listeners, IPv4 and IPv6 loopback (a second IPv4 one on hosts without
     * IPv6) */
    bool v6 = have_ipv6_loopback();
    if (!v6)
        fprintf(stderr, "no IPv6 loopback here: testing two IPv4 listeners instead\n");
    fw_http_config cfg;
    fw_http_config_defaults(&cfg);
    const char *listen[] = {"127.0.0.1:0", v6 ? "[::1]:0" : "127.0.0.1:0"};
    cfg.listen = listen;
    cfg.n_listen = 2;
    fw_http_server *srv = NULL;
    fw_error err;
    assert_int_equal(fw_http_server_new(&cfg, ROUTES, 3, NULL, &srv, &err), FW_OK);
    assert_int_equal(fw_http_server_n_listeners(srv), 2);
    int p4 = fw_http_server_port(srv, 0), p6 = fw_http_server_port(srv, 1);
    assert_true(p4 > 0 && p6 > 0);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", p4);
    assert_string_equal(fw_http_server_address(srv, 0), want);
    snprintf(want, sizeof(want), v6 ? "[::1]:%d" : "127.0.0.1:%d", p6);
    assert_string_equal(fw_http_server_address(srv, 1), want);
    assert_int_equal(fw_http_server_port(srv, 2), -1);
    assert_null(fw_http_server_address(srv, 2));
    assert_int_equal(fw_http_server_start(srv, &err), FW_OK);
    CURL *c = cu.easy_init();
    assert_non_null(c);
    buf b = {0};
    snprintf(want, sizeof(want), v6 ? "http://[::1]:%d/ok" : "http://127.0.0.1:%d/ok", p6);
    cu.easy_setopt(c, CURLOPT_URL, want);
    cu.easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    cu.easy_setopt(c, CURLOPT_WRITEDATA, &b);
    cu.easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
    assert_int_equal(cu.easy_perform(c), CURLE_OK);
    assert_string_equal(b.data, "ok");
    free(b.data);
    cu.easy_cleanup(c);

    /* the same port again: a clear error */
    fw_http_server *srv2 = NULL;
    snprintf(want, sizeof(want), "127.0.0.1:%d", p4);
    const char *again[] = {want};
    cfg.listen = again;
    cfg.n_listen = 1;
    assert_int_equal(fw_http_server_new(&cfg, ROUTES, 3, NULL, &srv2, &err), FW_ERR_IO);
    assert_null(srv2);
    assert_int_equal(err.code, FW_ERR_IO);
    assert_non_null(strstr(err.message, "already in use"));
    assert_non_null(strstr(err.message, want));
    fw_http_server_free(srv);

    /* malformed addresses and routes */
    const char *bad[] = {"127.0.0.1", "::1:80", "[::1]80",   "127.0.0.1:99999",
                         "host:port", ":80",    "127.0.0.1:"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        cfg.listen = &bad[i];
        cfg.n_listen = 1;
        assert_int_equal(fw_http_server_new(&cfg, ROUTES, 3, NULL, &srv2, &err),
                         FW_ERR_INVALID_ARGUMENT);
        assert_null(srv2);
    }
    const char *ok_addr[] = {"127.0.0.1:0"};
    cfg.listen = ok_addr;
    fw_http_route bad_route[] = {{"GET", "no-slash", h_ok}};
    assert_int_equal(fw_http_server_new(&cfg, bad_route, 1, NULL, &srv2, &err),
                     FW_ERR_INVALID_ARGUMENT);
    cfg.n_threads = FW_HTTP_MAX_THREADS + 1;
    assert_int_equal(fw_http_server_new(&cfg, ROUTES, 3, NULL, &srv2, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_http_server_new(&cfg, ROUTES, 3, NULL, NULL, &err),
                     FW_ERR_INVALID_ARGUMENT);

    /* a server that never started frees cleanly; free(NULL) is a no-op */
    cfg.n_threads = 1;
    assert_int_equal(fw_http_server_new(&cfg, ROUTES, 3, NULL, &srv2, &err), FW_OK);
    fw_http_server_stop_accepting(srv2);
    fw_http_server_free(srv2);
    fw_http_server_free(NULL);
    assert_int_equal(fw_http_server_inflight(NULL), 0);
}

static int group_setup(void **state)
{
    (void)state;
    pthread_mutex_init(&H.mu, NULL);
    pthread_cond_init(&H.cv, NULL);
    curl_load();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    cu.global_cleanup();
    /* libcurl stays loaded: unloading it while OpenSSL keeps atexit handlers is unsafe */
    pthread_cond_destroy(&H.cv);
    pthread_mutex_destroy(&H.mu);
    return 0;
}

/* libh2o 2.2 keeps freed buffers in per-thread recycling lists that are never released when a
 * loop thread exits, and h2o_multithread_destroy_queue() does not free the queue struct (88
 * bytes per loop). Neither is ours; the same lines belong in tests/lsan.supp. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:h2o_mem_alloc_recycle\nleak:h2o_multithread_create_queue\n";
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http1),
        cmocka_unit_test(test_http2_prior_knowledge),
        cmocka_unit_test(test_h2c_upgrade),
        cmocka_unit_test(test_async_response),
        cmocka_unit_test(test_concurrent_async),
        cmocka_unit_test(test_body_too_large),
        cmocka_unit_test(test_not_found_and_method),
        cmocka_unit_test(test_client_disconnects),
        cmocka_unit_test(test_stop_accepting),
        cmocka_unit_test(test_slow_client_timeout),
        cmocka_unit_test(test_request_timeout),
        cmocka_unit_test(test_free_with_pending),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_listen_addresses),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
