/* HTTP transport on libh2o-evloop 2.2 (the only file that includes h2o).
 *
 * Structure:
 *  - one h2o_globalconf_t per server with one host; the path "/" carries our handler (which
 *    does the routing), both "/" and the fallback path carry a filter that turns h2o's own
 *    plain-text error responses (400, 413, 417, 404 for non-"/" targets...) into our JSON, and
 *    the fallback path carries a logger so those requests reach the access log as well;
 *  - one loop per thread (h2o_evloop_t + h2o_context_t), each with a dup() of every
 *    listening socket and an h2o inter-thread receiver for late responses;
 *  - per request: a struct fw__http_req (malloc'd, refcounted: one reference for the
 *    handler side until it responds, one for the h2o side until h2o disposes the request)
 *    and a small "link" allocated in the h2o request pool with a dispose callback. When h2o
 *    disposes the request (response written, or client gone) the link detaches the
 *    fw__http_req, so a response arriving later is dropped instead of touching freed memory;
 *  - a refcounted "hub" shared by the server and every fw__http_req, holding the receivers
 *    under a mutex, so that fw_http_respond() stays safe even after fw_http_server_free().
 *
 * Loop-thread-only state: fw__http_req.{h2req, link, responded, deadline, live} and
 * everything in fw__http_loop except the atomics. */
#ifndef H2O_USE_LIBUV
#define H2O_USE_LIBUV 0
#endif

#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <h2o.h>
#include <h2o/http2.h>

#include "util/clock.h"
#include "util/log.h"

#define LOG_MOD "http"
#define ACCEPT_BATCH 32
#define REQUEST_ID_LEN 16

/* ---------------------------------------------------------------------------------------- */
/* types                                                                                      */

typedef struct fw__http_slot {
    h2o_multithread_receiver_t *recv; /* NULL once the loop is closed */
    atomic_size_t pending;            /* messages sent, not yet handled by the loop */
} fw__http_slot;

typedef struct fw__http_hub {
    atomic_size_t refs;
    pthread_mutex_t mu;
    size_t n_slots;
    fw__http_slot slots[];
} fw__http_hub;

typedef struct fw__http_loop fw__http_loop;
typedef struct fw__http_resp fw__http_resp;
typedef struct fw__http_link fw__http_link;

typedef struct fw__http_req {
    fw_http_request pub; /* first: fw_http_request* <-> fw__http_req* */
    atomic_uint refs;
    atomic_bool abandoned; /* client gone or deadline passed before the handler answered */
    fw__http_hub *hub;
    size_t loop_index;
    fw__http_loop *loop; /* dereferenced on the loop thread only */
    /* loop-thread only */
    h2o_req_t *h2req; /* NULL once h2o disposed the request */
    fw__http_link *link;
    bool responded;
    h2o_timeout_entry_t deadline;
    h2o_linklist_t live;
    /* owned copies */
    size_t n_headers;
    const char **hnames;
    const char **hvalues;
    char *arena;
    unsigned char *body;
} fw__http_req;

struct fw__http_link {
    fw__http_req *r;
    fw__http_resp *resp;
};

struct fw__http_resp {
    h2o_multithread_message_t msg; /* first */
    fw__http_req *r;
    int status;
    const char *content_type; /* NULL: none */
    size_t n_headers;
    const char **names; /* lower-case */
    const char **values;
    const void *body;
    size_t len;
    void *owned_body; /* freed with the response (fw_http_respond_take) */
};

struct fw__http_loop {
    fw_http_server *srv;
    size_t index;
    pthread_t thread;
    bool thread_started;
    h2o_evloop_t *evloop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_multithread_receiver_t receiver;
    h2o_socket_t **listeners;
    bool listeners_open;
    bool deadline_inited;
    h2o_timeout_t deadline;
    h2o_timeout_t h2_sweep_timeout; /* every read_timeout / 2: see on_h2_sweep */
    h2o_timeout_entry_t h2_sweep;
    h2o_linklist_t live; /* fw__http_req attached to an h2o request */
    size_t nconns;
    atomic_int stop;
};

typedef struct fw__http_route_entry {
    char *method;
    char *path;
    fw_http_handler_fn handler;
} fw__http_route_entry;

typedef struct fw__http_listener {
    int fd;
    int port;
    char address[INET6_ADDRSTRLEN + 16];
} fw__http_listener;

struct fw_http_server {
    fw_http_config cfg; /* listen pointers are not kept */
    void *user;
    fw__http_route_entry *routes;
    size_t n_routes;
    fw__http_listener *listeners;
    size_t n_listeners;
    h2o_globalconf_t h2conf;
    fw__http_hub *hub;
    fw__http_loop *loops;
    size_t n_loops;
    bool started;
    atomic_int stopping_accept;
    atomic_size_t inflight;
    atomic_size_t nconns;
    /* start-up handshake */
    pthread_mutex_t start_mu;
    pthread_cond_t start_cv;
    size_t n_ready;
    size_t n_failed;
};

static _Thread_local fw__http_req *tl_current; /* request whose handler runs on this thread */

/* ---------------------------------------------------------------------------------------- */
/* small helpers                                                                             */

typedef struct fw__status_text {
    int status;
    const char *reason;
    const char *code; /* error code for h2o's own error responses */
} fw__status_text;

static const fw__status_text STATUS_TEXT[] = {
    {200, "OK", NULL},
    {201, "Created", NULL},
    {202, "Accepted", NULL},
    {204, "No Content", NULL},
    {304, "Not Modified", NULL},
    {400, "Bad Request", "bad_request"},
    {401, "Unauthorized", "auth"},
    {403, "Forbidden", "forbidden"},
    {404, "Not Found", "not_found"},
    {405, "Method Not Allowed", "method_not_allowed"},
    {408, "Request Timeout", "timeout"},
    {409, "Conflict", "conflict"},
    {411, "Length Required", "length_required"},
    {413, "Payload Too Large", "too_large"},
    {415, "Unsupported Media Type", "unsupported"},
    {417, "Expectation Failed", "expectation_failed"},
    {422, "Unprocessable Entity", "unprocessable"},
    {429, "Too Many Requests", "busy"},
    {500, "Internal Server Error", "internal"},
    {501, "Not Implemented", "not_implemented"},
    {502, "Bad Gateway", "bad_gateway"},
    {503, "Service Unavailable", "unavailable"},
    {504, "Gateway Timeout", "timeout"},
};

static const fw__status_text *status_text(int status)
{
    for (size_t i = 0; i < sizeof(STATUS_TEXT) / sizeof(STATUS_TEXT[0]); ++i)
        if (STATUS_TEXT[i].status == status)
            return &STATUS_TEXT[i];
    return NULL;
}

static const char *reason_phrase(int status)
{
    const fw__status_text *t = status_text(status);
    if (t != NULL)
        return t->reason;
    return status < 300   ? "OK"
           : status < 400 ? "Redirect"
           : status < 500 ? "Client Error"
                          : "Server Error";
}

static const char *error_code_for_status(int status)
{
    const fw__status_text *t = status_text(status);
    return t != NULL && t->code != NULL ? t->code : "http_error";
}

/* Writes {"error":{"code":..,"message":..}} into buf (always NUL-terminated); returns the
 * length it needs (like snprintf). */
static size_t json_error_format(char *buf, size_t cap, const char *code, const char *message)
{
    size_t n = 0;
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (n + 1 < cap)                                                                           \
            buf[n] = (c);                                                                          \
        ++n;                                                                                       \
    } while (0)
    const char *parts[4] = {"{\"error\":{\"code\":\"", code, "\",\"message\":\"", message};
    for (int p = 0; p < 4; ++p) {
        const char *s = parts[p] != NULL ? parts[p] : "";
        bool escape = (p % 2) == 1;
        for (; *s != '\0'; ++s) {
            unsigned char c = (unsigned char)*s;
            if (escape && (c == '"' || c == '\\')) {
                PUT('\\');
                PUT((char)c);
            } else if (escape && c < 0x20) {
                static const char hex[] = "0123456789abcdef";
                PUT('\\');
                PUT('u');
                PUT('0');
                PUT('0');
                PUT(hex[c >> 4]);
                PUT(hex[c & 15]);
            } else {
                PUT((char)c);
            }
        }
    }
    PUT('"');
    PUT('}');
    PUT('}');
#undef PUT
    if (cap > 0)
        buf[n < cap ? n : cap - 1] = '\0';
    return n;
}

static char *json_error_alloc(const char *code, const char *message, size_t *len)
{
    size_t need = json_error_format(NULL, 0, code, message);
    char *buf = malloc(need + 1);
    if (buf == NULL)
        return NULL;
    json_error_format(buf, need + 1, code, message);
    *len = need;
    return buf;
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static pthread_once_t id_once = PTHREAD_ONCE_INIT;
static uint64_t id_seed;
static atomic_uint_fast64_t id_counter;

static void id_init(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16);
    }
    id_seed = seed;
}

/* Unique per process: mix64 is a bijection, so distinct counters give distinct ids. */
static void request_id_make(char out[REQUEST_ID_LEN + 1])
{
    pthread_once(&id_once, id_init);
    uint64_t v = mix64(id_seed + atomic_fetch_add(&id_counter, 1));
    snprintf(out, REQUEST_ID_LEN + 1, "%016llx", (unsigned long long)v);
}

static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool header_name_ok(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; ++p)
        if (!is_tchar(*p))
            return false;
    /* framing and our own headers are set by the transport */
    static const char *const reserved[] = {"content-length", "transfer-encoding", "connection",
                                           "x-request-id",   "content-type",      "upgrade"};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); ++i)
        if (strcasecmp(s, reserved[i]) == 0)
            return false;
    return true;
}

static bool header_value_ok(const char *s)
{
    if (s == NULL)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; ++p)
        if (*p == '\r' || *p == '\n' || (*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

static void format_sockaddr(const struct sockaddr *sa, socklen_t len, char *out, size_t cap)
{
    /* numeric only: an IPv6 address is at most 45 characters, a port 5 */
    char host[48], serv[8];
    out[0] = '\0';
    if (len == 0 || getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
                                NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return;
    if (sa->sa_family == AF_INET6)
        snprintf(out, cap, "[%s]:%s", host, serv);
    else
        snprintf(out, cap, "%s:%s", host, serv);
}

static uint64_t h2o_req_duration_us(h2o_req_t *req)
{
    struct timeval begin = req->timestamps.request_begin_at;
    if (begin.tv_sec == 0 && begin.tv_usec == 0)
        begin = req->processed_at.at;
    if (begin.tv_sec == 0 && begin.tv_usec == 0)
        return 0;
    struct timeval now;
    gettimeofday(&now, NULL);
    int64_t d = ((int64_t)now.tv_sec - (int64_t)begin.tv_sec) * 1000000 +
                ((int64_t)now.tv_usec - (int64_t)begin.tv_usec);
    return d > 0 ? (uint64_t)d : 0;
}

static fw__http_loop *loop_of_ctx(h2o_context_t *ctx)
{
    return H2O_STRUCT_FROM_MEMBER(fw__http_loop, ctx, ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* hub and request lifetime                                                                  */

static fw__http_hub *hub_new(size_t n_slots)
{
    fw__http_hub *hub = calloc(1, sizeof(*hub) + n_slots * sizeof(hub->slots[0]));
    if (hub == NULL)
        return NULL;
    if (pthread_mutex_init(&hub->mu, NULL) != 0) {
        free(hub);
        return NULL;
    }
    atomic_init(&hub->refs, 1);
    hub->n_slots = n_slots;
    for (size_t i = 0; i < n_slots; ++i)
        atomic_init(&hub->slots[i].pending, 0);
    return hub;
}

static void hub_unref(fw__http_hub *hub)
{
    if (hub != NULL && atomic_fetch_sub(&hub->refs, 1) == 1) {
        pthread_mutex_destroy(&hub->mu);
        free(hub);
    }
}

static void resp_free(fw__http_resp *resp)
{
    if (resp != NULL) {
        free(resp->owned_body);
        free(resp);
    }
}

static void req_unref(fw__http_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1) {
        fw__http_hub *hub = r->hub;
        free(r->arena);
        free(r->body);
        free(r);
        hub_unref(hub);
    }
}

/* Wakes a loop (no message) if it is still open. */
static void hub_wake(fw__http_hub *hub, size_t i)
{
    pthread_mutex_lock(&hub->mu);
    if (hub->slots[i].recv != NULL)
        h2o_multithread_send_message(hub->slots[i].recv, NULL);
    pthread_mutex_unlock(&hub->mu);
}

/* ---------------------------------------------------------------------------------------- */
/* sending responses (loop thread)                                                           */

static void deadline_unlink(fw__http_req *r)
{
    if (h2o_timeout_is_linked(&r->deadline))
        h2o_timeout_unlink(&r->deadline);
}

/* Writes resp to the h2o request of r; r must be attached and not yet answered. The link takes
 * ownership of resp (its strings and body must outlive the write). */
static void send_now(fw__http_req *r, fw__http_resp *resp)
{
    static h2o_generator_t generator = {NULL, NULL};
    h2o_req_t *req = r->h2req;

    r->responded = true;
    deadline_unlink(r);
    r->link->resp = resp;

    /* draining: do not keep HTTP/1.1 connections alive past this response */
    if (atomic_load(&r->loop->srv->stopping_accept))
        req->http1_is_persistent = 0;
    req->res.status = resp->status;
    req->res.reason = reason_phrase(resp->status);
    req->res.content_length = resp->len;
    if (resp->content_type != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       resp->content_type, strlen(resp->content_type));
    for (size_t i = 0; i < resp->n_headers; ++i)
        h2o_add_header_by_str(&req->pool, &req->res.headers, resp->names[i], strlen(resp->names[i]),
                              1, NULL, resp->values[i], strlen(resp->values[i]));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          r->pub.request_id, strlen(r->pub.request_id));

    h2o_start_response(req, &generator);
    bool head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    if (head || resp->len == 0) {
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    } else {
        h2o_iovec_t buf = h2o_iovec_init(resp->body, resp->len);
        h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
    }
}

/* Delivers a response built by fw_http_respond*() (loop thread); consumes the handler's
 * reference on r. */
static void deliver(fw__http_resp *resp)
{
    fw__http_req *r = resp->r;
    if (r->h2req == NULL || r->responded)
        resp_free(resp); /* client gone, deadline passed or shutting down */
    else
        send_now(r, resp);
    req_unref(r);
}

static void on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    fw__http_loop *loop = H2O_STRUCT_FROM_MEMBER(fw__http_loop, receiver, receiver);
    fw__http_slot *slot = &loop->srv->hub->slots[loop->index];
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        deliver((fw__http_resp *)m);
        atomic_fetch_sub(&slot->pending, 1);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* building responses (any thread)                                                           */

static fw__http_resp *resp_build(fw__http_req *r, int status, const char *content_type,
                                 const fw_http_header_kv *headers, size_t n_headers,
                                 const void *body, size_t len, void *owned_body)
{
    size_t strings = content_type != NULL ? strlen(content_type) + 1 : 0;
    for (size_t i = 0; i < n_headers; ++i)
        strings += strlen(headers[i].name) + strlen(headers[i].value) + 2;
    size_t copy = owned_body != NULL ? 0 : len;
    size_t size = sizeof(fw__http_resp) + 2 * n_headers * sizeof(char *) + strings + copy;
    fw__http_resp *resp = calloc(1, size);
    if (resp == NULL)
        return NULL;
    char *p = (char *)(resp + 1);
    resp->names = (const char **)(void *)p;
    resp->values = resp->names + n_headers;
    p = (char *)(resp->values + n_headers);
    resp->r = r;
    resp->status = status;
    resp->n_headers = n_headers;
    if (content_type != NULL) {
        size_t n = strlen(content_type) + 1;
        memcpy(p, content_type, n);
        resp->content_type = p;
        p += n;
    }
    for (size_t i = 0; i < n_headers; ++i) {
        size_t n = strlen(headers[i].name) + 1;
        for (size_t k = 0; k < n; ++k) /* HTTP/2 wants lower-case names */
            p[k] = (char)((headers[i].name[k] >= 'A' && headers[i].name[k] <= 'Z')
                              ? headers[i].name[k] - 'A' + 'a'
                              : headers[i].name[k]);
        resp->names[i] = p;
        p += n;
        n = strlen(headers[i].value) + 1;
        memcpy(p, headers[i].value, n);
        resp->values[i] = p;
        p += n;
    }
    if (owned_body != NULL) {
        resp->owned_body = owned_body;
        resp->body = owned_body;
    } else if (len > 0) {
        memcpy(p, body, len);
        resp->body = p;
    }
    resp->len = len;
    return resp;
}

static fw__http_resp *resp_build_error(fw__http_req *r, int status, const char *code,
                                       const char *message, unsigned retry_after_s,
                                       const char *allow)
{
    size_t len = 0;
    char *json = json_error_alloc(code, message, &len);
    if (json == NULL)
        return NULL;
    char retry[24];
    fw_http_header_kv hdrs[2];
    size_t nh = 0;
    if (retry_after_s > 0) {
        snprintf(retry, sizeof(retry), "%u", retry_after_s);
        hdrs[nh++] = (fw_http_header_kv){"retry-after", retry};
    }
    if (allow != NULL)
        hdrs[nh++] = (fw_http_header_kv){"allow", allow};
    fw__http_resp *resp = resp_build(r, status, "application/json", hdrs, nh, NULL, len, json);
    if (resp == NULL)
        free(json);
    return resp;
}

/* Hands resp to the loop that owns r (consumes the handler's reference). */
static void dispatch(fw__http_resp *resp)
{
    fw__http_req *r = resp->r;
    if (tl_current == r) { /* inside the handler, on the loop thread: answer at once */
        deliver(resp);
        return;
    }
    fw__http_hub *hub = r->hub;
    fw__http_slot *slot = &hub->slots[r->loop_index];
    pthread_mutex_lock(&hub->mu);
    if (slot->recv != NULL) {
        atomic_fetch_add(&slot->pending, 1);
        h2o_multithread_send_message(slot->recv, &resp->msg);
        resp = NULL;
    }
    pthread_mutex_unlock(&hub->mu);
    if (resp != NULL) { /* loop closed: server shutting down or gone */
        resp_free(resp);
        req_unref(r);
    }
}

/* Answers r when the response could not be built: an h2o-generated 503 if possible. */
static fw_err respond_failed(fw__http_req *r, fw_err code)
{
    fw__http_resp *resp = resp_build(r, 503, NULL, NULL, 0, NULL, 0, NULL);
    if (resp != NULL) {
        dispatch(resp);
    } else {
        /* Not even an empty response: drop our side; h2o keeps the request until the
         * connection times out or closes. */
        req_unref(r);
    }
    return code;
}

static fw_err respond_common(fw_http_request *req, int status, const char *content_type,
                             const fw_http_header_kv *headers, size_t n_headers, const void *body,
                             size_t len, void *owned_body)
{
    fw__http_req *r = (fw__http_req *)req;
    bool ok = status >= 200 && status <= 599 && (len == 0 || body != NULL) &&
              (n_headers == 0 || headers != NULL) &&
              (content_type == NULL || header_value_ok(content_type));
    for (size_t i = 0; ok && i < n_headers; ++i)
        ok = header_name_ok(headers[i].name) && header_value_ok(headers[i].value);
    if (!ok) {
        free(owned_body);
        FW_WARN(LOG_MOD, "invalid_response", "request_id=%s status=%d", r->pub.request_id, status);
        fw__http_resp *resp =
            resp_build_error(r, 500, "internal", "the server built an invalid response", 0, NULL);
        if (resp == NULL)
            return respond_failed(r, FW_ERR_INVALID_ARGUMENT);
        dispatch(resp);
        return FW_ERR_INVALID_ARGUMENT;
    }
    fw__http_resp *resp =
        resp_build(r, status, content_type, headers, n_headers, body, len, owned_body);
    if (resp == NULL) {
        free(owned_body);
        return respond_failed(r, FW_ERR_NOMEM);
    }
    dispatch(resp);
    return FW_OK;
}

fw_err fw_http_respond(fw_http_request *req, int status, const char *content_type,
                       const fw_http_header_kv *headers, size_t n_headers, const void *body,
                       size_t len)
{
    if (req == NULL)
        return FW_ERR_INVALID_ARGUMENT;
    return respond_common(req, status, content_type, headers, n_headers, body, len, NULL);
}

fw_err fw_http_respond_take(fw_http_request *req, int status, const char *content_type,
                            const fw_http_header_kv *headers, size_t n_headers, void *body,
                            size_t len)
{
    if (req == NULL) {
        free(body);
        return FW_ERR_INVALID_ARGUMENT;
    }
    if (body == NULL && len > 0)
        return respond_common(req, status, content_type, headers, n_headers, NULL, len, NULL);
    if (body == NULL)
        return respond_common(req, status, content_type, headers, n_headers, NULL, 0, NULL);
    return respond_common(req, status, content_type, headers, n_headers, body, len, body);
}

fw_err fw_http_respond_error(fw_http_request *req, int status, const char *code,
                             const char *message, unsigned retry_after_s)
{
    if (req == NULL)
        return FW_ERR_INVALID_ARGUMENT;
    fw__http_req *r = (fw__http_req *)req;
    if (status < 200 || status > 599)
        return respond_common(req, status, NULL, NULL, 0, NULL, 0, NULL); /* -> 500 */
    fw__http_resp *resp = resp_build_error(r, status, code != NULL ? code : "error",
                                           message != NULL ? message : "", retry_after_s, NULL);
    if (resp == NULL)
        return respond_failed(r, FW_ERR_NOMEM);
    dispatch(resp);
    return FW_OK;
}

/* Sends an error from the loop thread without consuming the handler's reference (deadline,
 * shutdown). */
static void send_error_now(fw__http_req *r, int status, const char *code, const char *message,
                           unsigned retry_after_s)
{
    fw__http_resp *resp = resp_build_error(r, status, code, message, retry_after_s, NULL);
    if (resp == NULL) {
        r->responded = true;
        deadline_unlink(r);
        h2o_send_error_generic(r->h2req, status, reason_phrase(status), "", 0);
        return;
    }
    send_now(r, resp);
}

/* ---------------------------------------------------------------------------------------- */
/* request intake (loop thread)                                                              */

static void access_log_emit(fw_http_server *srv, const fw_http_access_entry *e)
{
    if (srv->cfg.access_log != NULL)
        srv->cfg.access_log(e, srv->cfg.access_log_user);
}

static void on_link_dispose(void *p)
{
    fw__http_link *link = p;
    fw__http_req *r = link->r;
    if (r != NULL) {
        fw__http_loop *loop = r->loop;
        h2o_req_t *req = r->h2req;
        r->h2req = NULL;
        r->link = NULL;
        if (!r->responded)
            atomic_store(&r->abandoned, true);
        deadline_unlink(r);
        if (h2o_linklist_is_linked(&r->live))
            h2o_linklist_unlink(&r->live);
        /* finished before it is logged, so a log consumer sees a consistent in-flight count */
        atomic_fetch_sub(&loop->srv->inflight, 1);
        if (req != NULL && loop->srv->cfg.access_log != NULL) {
            fw_http_access_entry e = {
                .method = r->pub.method,
                .path = r->pub.path,
                .request_id = r->pub.request_id,
                .remote_addr = r->pub.remote_addr,
                .status = req->res.status,
                .http_version = r->pub.http_version,
                .bytes_sent = req->bytes_sent,
                .duration_us = h2o_req_duration_us(req),
            };
            access_log_emit(loop->srv, &e);
        }
        req_unref(r);
    }
    resp_free(link->resp);
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    fw__http_req *r = H2O_STRUCT_FROM_MEMBER(fw__http_req, deadline, entry);
    if (r->h2req == NULL || r->responded)
        return;
    char msg[96];
    snprintf(msg, sizeof(msg), "the request was not answered within %u ms",
             r->loop->srv->cfg.request_timeout_ms);
    FW_WARN(LOG_MOD, "request_timeout", "request_id=%s path=%s", r->pub.request_id, r->pub.path);
    atomic_store(&r->abandoned, true);
    send_error_now(r, 503, "timeout", msg, 1);
}

/* Copies everything the handler may read out of h2o's request (h2o memory can go away with
 * the connection while a handler still holds the request). */
static fw__http_req *req_create(fw__http_loop *loop, h2o_req_t *req)
{
    char remote[INET6_ADDRSTRLEN + 16] = "";
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername != NULL
                       ? req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss)
                       : 0;
    format_sockaddr((struct sockaddr *)&ss, sl, remote, sizeof(remote));

    char id[REQUEST_ID_LEN + 1];
    request_id_make(id);

    h2o_iovec_t path = req->path;
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : path.len;
    size_t query_len = req->query_at != SIZE_MAX ? path.len - req->query_at - 1 : 0;
    char clen[32] = "";
    if (req->entity.base != NULL)
        snprintf(clen, sizeof(clen), "%zu", req->entity.len);

    size_t n_headers = req->headers.size + (req->authority.len > 0) + (clen[0] != '\0');
    size_t strings = req->method.len + 1 + path_len + 1 + query_len + 1 + strlen(remote) + 1 +
                     sizeof(id) + req->authority.len + 1 + strlen(clen) + 1 + sizeof("host") +
                     sizeof("content-length");
    for (size_t i = 0; i < req->headers.size; ++i)
        strings += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 2;

    fw__http_req *r = calloc(1, sizeof(*r) + 2 * n_headers * sizeof(char *));
    char *arena = malloc(strings);
    unsigned char *body = malloc(req->entity.len + 1);
    if (r == NULL || arena == NULL || body == NULL) {
        free(r);
        free(arena);
        free(body);
        return NULL;
    }
    r->hnames = (const char **)(void *)(r + 1);
    r->hvalues = r->hnames + n_headers;
    r->arena = arena;
    r->body = body;

    char *p = arena;
#define ARENA_PUT(dst, src, n)                                                                     \
    do {                                                                                           \
        size_t n_ = (n);                                                                           \
        if (n_ > 0)                                                                                \
            memcpy(p, (src), n_);                                                                  \
        p[n_] = '\0';                                                                              \
        (dst) = p;                                                                                 \
        p += n_ + 1;                                                                               \
    } while (0)
    ARENA_PUT(r->pub.method, req->method.base, req->method.len);
    ARENA_PUT(r->pub.path, path.base, path_len);
    ARENA_PUT(r->pub.query, path.base + path_len + 1, query_len);
    ARENA_PUT(r->pub.remote_addr, remote, strlen(remote));
    ARENA_PUT(r->pub.request_id, id, strlen(id));
    size_t h = 0;
    for (size_t i = 0; i < req->headers.size; ++i, ++h) {
        const h2o_header_t *hd = &req->headers.entries[i];
        ARENA_PUT(r->hnames[h], hd->name->base, hd->name->len);
        for (char *c = (char *)r->hnames[h]; *c != '\0'; ++c)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        ARENA_PUT(r->hvalues[h], hd->value.base, hd->value.len);
    }
    if (req->authority.len > 0) {
        ARENA_PUT(r->hnames[h], "host", 4);
        ARENA_PUT(r->hvalues[h], req->authority.base, req->authority.len);
        ++h;
    }
    if (clen[0] != '\0') {
        ARENA_PUT(r->hnames[h], "content-length", 14);
        ARENA_PUT(r->hvalues[h], clen, strlen(clen));
        ++h;
    }
#undef ARENA_PUT
    r->n_headers = h;

    if (req->entity.len > 0)
        memcpy(body, req->entity.base, req->entity.len);
    body[req->entity.len] = '\0';
    r->pub.body = body;
    r->pub.body_len = req->entity.len;
    r->pub.http_version = req->version >= 0x200 ? 2 : 1;

    atomic_init(&r->refs, 2); /* handler side + h2o side */
    atomic_init(&r->abandoned, false);
    r->hub = loop->srv->hub;
    atomic_fetch_add(&r->hub->refs, 1);
    r->loop_index = loop->index;
    r->loop = loop;
    r->h2req = req;

    fw__http_link *link = h2o_mem_alloc_shared(&req->pool, sizeof(*link), on_link_dispose);
    link->r = r;
    link->resp = NULL;
    r->link = link;
    h2o_linklist_insert(&loop->live, &r->live);
    atomic_fetch_add(&loop->srv->inflight, 1);
    if (loop->deadline_inited) {
        r->deadline.cb = on_deadline;
        h2o_timeout_link(loop->evloop, &loop->deadline, &r->deadline);
    }
    return r;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    fw__http_loop *loop = loop_of_ctx(req->conn->ctx);
    fw_http_server *srv = loop->srv;

    fw__http_req *r = req_create(loop, req);
    if (r == NULL) {
        h2o_send_error_503(req, "Service Unavailable", "out of memory", 0);
        return 0;
    }

    tl_current = r;
    const fw__http_route_entry *match = NULL;
    char allow[128] = "";
    size_t allow_len = 0;
    bool path_known = false;
    const fw__http_route_entry *get_route = NULL;
    for (size_t i = 0; i < srv->n_routes; ++i) {
        const fw__http_route_entry *rt = &srv->routes[i];
        if (strcmp(rt->path, r->pub.path) != 0)
            continue;
        path_known = true;
        if (strcmp(rt->method, r->pub.method) == 0) {
            match = rt;
            break;
        }
        if (strcmp(rt->method, "GET") == 0)
            get_route = rt;
        int n = snprintf(allow + allow_len, sizeof(allow) - allow_len, "%s%s",
                         allow_len > 0 ? ", " : "", rt->method);
        if (n > 0 && (size_t)n < sizeof(allow) - allow_len)
            allow_len += (size_t)n;
    }
    /* HEAD is served by the GET route (the transport drops the body) */
    if (match == NULL && get_route != NULL && strcmp(r->pub.method, "HEAD") == 0)
        match = get_route;

    if (match != NULL) {
        if (r->pub.body_len > srv->cfg.max_body_bytes) {
            char msg[96];
            snprintf(msg, sizeof(msg), "the request body exceeds the limit of %zu bytes",
                     srv->cfg.max_body_bytes);
            fw_http_respond_error(&r->pub, 413, "too_large", msg, 0);
        } else {
            match->handler(&r->pub, srv->user);
        }
    } else if (path_known) {
        fw__http_resp *resp = resp_build_error(r, 405, "method_not_allowed",
                                               "this method is not allowed here", 0, allow);
        if (resp != NULL)
            dispatch(resp);
        else
            respond_failed(r, FW_ERR_NOMEM);
    } else {
        fw_http_respond_error(&r->pub, 404, "not_found", "no such endpoint", 0);
    }
    tl_current = NULL;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* h2o's own error responses -> JSON, and their access log                                    */

typedef struct fw__json_ostream {
    h2o_ostream_t super;
    h2o_iovec_t json;
    bool head;
} fw__json_ostream;

static void json_ostream_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                              h2o_send_state_t state)
{
    (void)bufs;
    (void)bufcnt;
    fw__json_ostream *o = (fw__json_ostream *)self;
    if (h2o_send_state_is_in_progress(state) || o->head) {
        h2o_ostream_send_next(self, req, NULL, 0, state);
        return;
    }
    h2o_ostream_send_next(self, req, &o->json, 1, state);
}

static void on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    (void)self;
    if (req->res.status >= 400 &&
        h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1) == -1) {
        fw__http_loop *loop = loop_of_ctx(req->conn->ctx);
        int status = req->res.status;
        char msg[128];
        if (status == 413)
            snprintf(msg, sizeof(msg), "the request body exceeds the limit of %zu bytes",
                     loop->srv->cfg.max_body_bytes);
        else if (status == 404)
            snprintf(msg, sizeof(msg), "no such endpoint");
        else
            snprintf(msg, sizeof(msg), "%s", req->res.reason != NULL ? req->res.reason : "");
        char buf[320];
        size_t n = json_error_format(buf, sizeof(buf), error_code_for_status(status), msg);
        if (n >= sizeof(buf))
            n = sizeof(buf) - 1;
        char id[REQUEST_ID_LEN + 1];
        request_id_make(id);

        h2o_iovec_t json = h2o_strdup(&req->pool, buf, n);
        h2o_iovec_t idv = h2o_strdup(&req->pool, id, strlen(id));
        h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                       H2O_STRLIT("application/json"), 1);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                              idv.base, idv.len);
        req->res.content_length = json.len;

        fw__json_ostream *o = (fw__json_ostream *)h2o_add_ostream(req, sizeof(*o), slot);
        o->super.do_send = json_ostream_send;
        o->json = json;
        o->head = h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"));
        slot = &o->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

static void on_fallback_log(h2o_logger_t *self, h2o_req_t *req)
{
    (void)self;
    fw__http_loop *loop = loop_of_ctx(req->conn->ctx);
    fw_http_server *srv = loop->srv;
    if (srv->cfg.access_log == NULL)
        return;
    char method[32], path[512], id[REQUEST_ID_LEN + 1] = "", remote[INET6_ADDRSTRLEN + 16];
    size_t ml =
        req->input.method.len < sizeof(method) - 1 ? req->input.method.len : sizeof(method) - 1;
    memcpy(method, req->input.method.base, ml);
    method[ml] = '\0';
    size_t pl = req->input.query_at != SIZE_MAX ? req->input.query_at : req->input.path.len;
    if (pl > sizeof(path) - 1)
        pl = sizeof(path) - 1;
    if (pl > 0)
        memcpy(path, req->input.path.base, pl);
    path[pl] = '\0';
    ssize_t hi = h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1);
    if (hi != -1 && req->res.headers.entries[hi].value.len == REQUEST_ID_LEN) {
        memcpy(id, req->res.headers.entries[hi].value.base, REQUEST_ID_LEN);
        id[REQUEST_ID_LEN] = '\0';
    }
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername != NULL
                       ? req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss)
                       : 0;
    format_sockaddr((struct sockaddr *)&ss, sl, remote, sizeof(remote));
    fw_http_access_entry e = {
        .method = method,
        .path = path,
        .request_id = id,
        .remote_addr = remote,
        .status = req->res.status,
        .http_version = req->version >= 0x200 ? 2 : 1,
        .bytes_sent = req->bytes_sent,
        .duration_us = h2o_req_duration_us(req),
    };
    access_log_emit(srv, &e);
}

/* ---------------------------------------------------------------------------------------- */
/* connections                                                                               */

static void on_conn_close(void *data)
{
    fw__http_loop *loop = data;
    loop->nconns--;
    atomic_fetch_sub(&loop->srv->nconns, 1);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    fw__http_loop *loop = listener->data;
    fw_http_server *srv = loop->srv;
    if (err != NULL)
        return;
    for (int i = 0; i < ACCEPT_BATCH; ++i) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            return;
        if (atomic_fetch_add(&srv->nconns, 1) >= srv->cfg.max_connections) {
            atomic_fetch_sub(&srv->nconns, 1);
            FW_DEBUG(LOG_MOD, "connection_refused", "reason=max_connections max=%zu",
                     srv->cfg.max_connections);
            h2o_socket_close(sock);
            continue;
        }
        loop->nconns++;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = loop;
        h2o_accept(&loop->accept_ctx, sock);
    }
}

/* HTTP/2 slow-request guard. h2o 2.2 cuts off a slow HTTP/1.1 request at --read-timeout
 * (http1.req_timeout runs from the request's first byte), but its HTTP/2 idle timeout starts
 * over on every frame read, so a client trickling a request's HEADERS/CONTINUATION or DATA
 * frames would hold the stream, its buffered body and a connection slot forever. Every
 * read_timeout / 2 the loop walks its HTTP/2 requests (h2o's public foreach_request): one
 * that began (request_begin_at) more than read_timeout ago and was still not handed to a
 * handler (processed_at unset: its headers or body are still arriving) gets its connection
 * shut down; h2o then sees the end of the stream and closes the connection through its usual
 * path, as for a client that went away. */
static int h2_sweep_one(h2o_req_t *req, void *data)
{
    fw__http_loop *loop = data;
    if (req->processed_at.at.tv_sec != 0 || req->timestamps.request_begin_at.tv_sec == 0)
        return 0; /* being processed, or an idle stream (PRIORITY only) */
    struct timeval now = *h2o_get_timestamp(&loop->ctx, NULL, NULL);
    if (h2o_timeval_subtract(&req->timestamps.request_begin_at, &now) <=
        (int64_t)loop->srv->cfg.read_timeout_ms * 1000)
        return 0;
    h2o_socket_t *sock = req->conn->callbacks->get_socket != NULL
                             ? req->conn->callbacks->get_socket(req->conn)
                             : NULL;
    int fd = sock != NULL ? h2o_socket_get_fd(sock) : -1;
    if (fd >= 0) {
        FW_DEBUG(LOG_MOD, "slow_request_cut", "protocol=h2 read_timeout_ms=%u",
                 loop->srv->cfg.read_timeout_ms);
        shutdown(fd, SHUT_RDWR);
    }
    return 0;
}

static void on_h2_sweep(h2o_timeout_entry_t *entry)
{
    fw__http_loop *loop = H2O_STRUCT_FROM_MEMBER(fw__http_loop, h2_sweep, entry);
    H2O_HTTP2_CALLBACKS.foreach_request(&loop->ctx, h2_sweep_one, loop);
    h2o_timeout_link(loop->evloop, &loop->h2_sweep_timeout, &loop->h2_sweep);
}

static void loop_close_listeners(fw__http_loop *loop)
{
    if (!loop->listeners_open)
        return;
    for (size_t i = 0; i < loop->srv->n_listeners; ++i) {
        if (loop->listeners[i] != NULL) {
            h2o_socket_read_stop(loop->listeners[i]);
            h2o_socket_close(loop->listeners[i]);
            loop->listeners[i] = NULL;
        }
    }
    loop->listeners_open = false;
}

/* ---------------------------------------------------------------------------------------- */
/* loop threads                                                                              */

static void loop_report(fw__http_loop *loop, bool ok)
{
    fw_http_server *srv = loop->srv;
    pthread_mutex_lock(&srv->start_mu);
    if (ok)
        srv->n_ready++;
    else
        srv->n_failed++;
    pthread_cond_broadcast(&srv->start_cv);
    pthread_mutex_unlock(&srv->start_mu);
}

static bool loop_init(fw__http_loop *loop)
{
    fw_http_server *srv = loop->srv;
    loop->listeners = calloc(srv->n_listeners, sizeof(*loop->listeners));
    if (loop->listeners == NULL)
        return false;
    /* dup() the listening sockets first so a failure leaves nothing of h2o to undo */
    int *fds = calloc(srv->n_listeners, sizeof(int));
    if (fds == NULL)
        return false;
    bool accept_new = atomic_load(&srv->stopping_accept) == 0;
    for (size_t i = 0; accept_new && i < srv->n_listeners; ++i) {
        fds[i] = fcntl(srv->listeners[i].fd, F_DUPFD_CLOEXEC, 0);
        if (fds[i] < 0) {
            FW_ERROR(LOG_MOD, "dup_failed", "errno=%d", errno);
            for (size_t k = 0; k < i; ++k)
                close(fds[k]);
            free(fds);
            return false;
        }
    }

    loop->evloop = h2o_evloop_create();
    h2o_context_init(&loop->ctx, loop->evloop, &srv->h2conf);
    h2o_multithread_register_receiver(loop->ctx.queue, &loop->receiver, on_messages);
    h2o_linklist_init_anchor(&loop->live);
    if (srv->cfg.request_timeout_ms > 0) {
        h2o_timeout_init(loop->evloop, &loop->deadline, srv->cfg.request_timeout_ms);
        loop->deadline_inited = true;
    }
    h2o_timeout_init(loop->evloop, &loop->h2_sweep_timeout, srv->cfg.read_timeout_ms / 2 + 1);
    loop->h2_sweep.cb = on_h2_sweep;
    h2o_timeout_link(loop->evloop, &loop->h2_sweep_timeout, &loop->h2_sweep);
    loop->accept_ctx.ctx = &loop->ctx;
    loop->accept_ctx.hosts = srv->h2conf.hosts;
    loop->accept_ctx.ssl_ctx = NULL;
    loop->accept_ctx.expect_proxy_line = 0;
    loop->accept_ctx.libmemcached_receiver = NULL;
    if (accept_new) {
        for (size_t i = 0; i < srv->n_listeners; ++i) {
            h2o_socket_t *sock =
                h2o_evloop_socket_create(loop->evloop, fds[i], H2O_SOCKET_FLAG_DONT_READ);
            sock->data = loop;
            h2o_socket_read_start(sock, on_accept);
            loop->listeners[i] = sock;
        }
        loop->listeners_open = true;
    }
    free(fds);

    pthread_mutex_lock(&srv->hub->mu);
    srv->hub->slots[loop->index].recv = &loop->receiver;
    pthread_mutex_unlock(&srv->hub->mu);
    return true;
}

/* Runs on the loop thread once stop is set: answers what is pending, lets responses flush and
 * connections close (bounded by shutdown_grace_ms), then tears the loop down. */
static void loop_shutdown(fw__http_loop *loop)
{
    fw_http_server *srv = loop->srv;
    fw__http_slot *slot = &srv->hub->slots[loop->index];

    loop_close_listeners(loop);
    if (!loop->ctx.shutdown_requested)
        h2o_context_request_shutdown(&loop->ctx);

    /* requests still waiting for their handler: 503 now; a later answer is dropped. Rescan
     * from the head after each answer in case h2o disposed other requests meanwhile. */
    for (;;) {
        fw__http_req *pending = NULL;
        for (h2o_linklist_t *n = loop->live.next; n != &loop->live && pending == NULL;
             n = n->next) {
            fw__http_req *r = H2O_STRUCT_FROM_MEMBER(fw__http_req, live, n);
            if (r->h2req != NULL && !r->responded)
                pending = r;
        }
        if (pending == NULL)
            break;
        send_error_now(pending, 503, "unavailable", "the server is shutting down", 1);
    }

    /* idle keep-alive and HTTP/2 connections: expire their timers right away */
    loop->ctx.http1.req_timeout.timeout = 0;
    loop->ctx.http2.idle_timeout.timeout = 0;

    uint64_t grace = srv->cfg.shutdown_grace_ms;
    uint64_t deadline = fw_now_ms() + grace;
    while ((loop->nconns > 0 || atomic_load(&slot->pending) > 0) && fw_now_ms() < deadline)
        h2o_evloop_run(loop->evloop, 10);

    pthread_mutex_lock(&srv->hub->mu);
    slot->recv = NULL; /* from now on fw_http_respond() drops answers for this loop */
    pthread_mutex_unlock(&srv->hub->mu);
    uint64_t drain_deadline = fw_now_ms() + 1000;
    while (atomic_load(&slot->pending) > 0 && fw_now_ms() < drain_deadline)
        h2o_evloop_run(loop->evloop, 10);

    bool clean =
        loop->nconns == 0 && atomic_load(&slot->pending) == 0 && h2o_linklist_is_empty(&loop->live);
    if (!clean) {
        /* A peer that does not read its response keeps its connection: h2o 2.2 cannot close it
         * from here, so leave this loop's memory alone rather than tear it down under h2o. */
        FW_WARN(LOG_MOD, "shutdown_incomplete", "loop=%zu connections=%zu pending=%zu", loop->index,
                loop->nconns, (size_t)atomic_load(&slot->pending));
        for (h2o_linklist_t *n = loop->live.next; n != &loop->live; n = n->next)
            deadline_unlink(H2O_STRUCT_FROM_MEMBER(fw__http_req, live, n));
        return;
    }
    if (h2o_timeout_is_linked(&loop->ctx.http2._graceful_shutdown_timeout))
        h2o_timeout_unlink(&loop->ctx.http2._graceful_shutdown_timeout);
    h2o_evloop_run(loop->evloop, 0); /* reap sockets closed in the last round */
    h2o_multithread_unregister_receiver(loop->ctx.queue, &loop->receiver);
    if (loop->deadline_inited)
        h2o_timeout_dispose(loop->evloop, &loop->deadline);
    h2o_timeout_unlink(&loop->h2_sweep);
    h2o_timeout_dispose(loop->evloop, &loop->h2_sweep_timeout);
    h2o_context_dispose(&loop->ctx);
    h2o_evloop_destroy(loop->evloop);
    loop->evloop = NULL;
}

static void *loop_main(void *arg)
{
    fw__http_loop *loop = arg;
    fw_http_server *srv = loop->srv;
    if (!loop_init(loop)) {
        /* nothing of h2o was created when loop_init fails */
        loop_report(loop, false);
        return NULL;
    }
    loop_report(loop, true);
    while (!atomic_load(&loop->stop)) {
        if (loop->listeners_open && atomic_load(&srv->stopping_accept)) {
            loop_close_listeners(loop);
            h2o_context_request_shutdown(&loop->ctx);
        }
        h2o_evloop_run(loop->evloop, INT32_MAX);
    }
    loop_shutdown(loop);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* listening sockets                                                                         */

static fw_err parse_listen(const char *text, struct sockaddr_storage *ss, socklen_t *sl,
                           fw_error *err)
{
    if (text == NULL || *text == '\0')
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "empty listen address");
    char host[256];
    const char *port_s;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - text - 1) >= sizeof(host))
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "bad listen address '%s' (expected [ipv6]:port)", text);
        memcpy(host, text + 1, (size_t)(end - text - 1));
        host[end - text - 1] = '\0';
        port_s = end + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon == NULL || colon == text || (size_t)(colon - text) >= sizeof(host))
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "bad listen address '%s' (expected host:port)", text);
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        if (strchr(host, ':') != NULL)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "bad listen address '%s' (write IPv6 as [addr]:port)", text);
        port_s = colon + 1;
    }
    if (*port_s == '\0' || strlen(port_s) > 5 || strspn(port_s, "0123456789") != strlen(port_s))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "bad port in listen address '%s'", text);
    long port = strtol(port_s, NULL, 10);
    if (port > 65535)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "port out of range in '%s'", text);

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "cannot resolve listen host '%s': %s",
                            host, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "unsupported address family in '%s'",
                            text);
    return FW_OK;
}

static fw_err open_listener(const char *text, fw__http_listener *out, fw_error *err)
{
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    fw_err rc = parse_listen(text, &ss, &sl, err);
    if (rc != FW_OK)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fw_error_set(err, FW_ERR_IO, "cannot create a socket for %s: %s", text,
                            strerror(errno));
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (ss.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
        int e = errno;
        close(fd);
        return fw_error_set(err, FW_ERR_IO, "cannot set socket options for %s: %s", text,
                            strerror(e));
    }
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        int e = errno;
        close(fd);
        if (e == EADDRINUSE)
            return fw_error_set(err, FW_ERR_IO,
                                "cannot listen on %s: address already in use (is another "
                                "worker or service running on that port?)",
                                text);
        return fw_error_set(err, FW_ERR_IO, "cannot bind %s: %s", text, strerror(e));
    }
    if (listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        return fw_error_set(err, FW_ERR_IO, "cannot listen on %s: %s", text, strerror(e));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return fw_error_set(err, FW_ERR_IO, "cannot make %s non-blocking: %s", text, strerror(e));
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof(bound);
    if (getsockname(fd, (struct sockaddr *)&bound, &bl) != 0) {
        int e = errno;
        close(fd);
        return fw_error_set(err, FW_ERR_IO, "getsockname failed for %s: %s", text, strerror(e));
    }
    out->fd = fd;
    out->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    format_sockaddr((struct sockaddr *)&bound, bl, out->address, sizeof(out->address));
    return FW_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* public API                                                                                */

void fw_http_config_defaults(fw_http_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->n_threads = 1;
    cfg->max_body_bytes = FW_HTTP_DEFAULT_MAX_BODY_BYTES;
    cfg->read_timeout_ms = FW_HTTP_DEFAULT_READ_TIMEOUT_MS;
    cfg->request_timeout_ms = 0;
    cfg->shutdown_grace_ms = FW_HTTP_DEFAULT_SHUTDOWN_GRACE_MS;
    cfg->max_connections = FW_HTTP_DEFAULT_MAX_CONNECTIONS;
}

static void server_release(fw_http_server *srv)
{
    for (size_t i = 0; i < srv->n_listeners; ++i)
        if (srv->listeners[i].fd >= 0)
            close(srv->listeners[i].fd);
    free(srv->listeners);
    for (size_t i = 0; i < srv->n_routes; ++i) {
        free(srv->routes[i].method);
        free(srv->routes[i].path);
    }
    free(srv->routes);
    if (srv->loops != NULL)
        for (size_t i = 0; i < srv->n_loops; ++i)
            free(srv->loops[i].listeners);
    free(srv->loops);
    if (srv->h2conf.hosts != NULL)
        h2o_config_dispose(&srv->h2conf);
    hub_unref(srv->hub);
    pthread_cond_destroy(&srv->start_cv);
    pthread_mutex_destroy(&srv->start_mu);
    free(srv);
}

fw_err fw_http_server_new(const fw_http_config *cfg_in, const fw_http_route *routes,
                          size_t n_routes, void *user, fw_http_server **out, fw_error *err)
{
    if (out == NULL)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (n_routes > 0 && routes == NULL)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "routes is NULL");
    for (size_t i = 0; i < n_routes; ++i) {
        if (routes[i].method == NULL || routes[i].path == NULL || routes[i].handler == NULL ||
            routes[i].path[0] != '/' || routes[i].method[0] == '\0')
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "route %zu needs a method, a path starting with '/' and a "
                                "handler",
                                i);
    }

    fw_http_config cfg;
    fw_http_config_defaults(&cfg);
    if (cfg_in != NULL) {
        cfg.listen = cfg_in->listen;
        cfg.n_listen = cfg_in->n_listen;
        if (cfg_in->n_threads > 0)
            cfg.n_threads = cfg_in->n_threads;
        if (cfg_in->max_body_bytes > 0)
            cfg.max_body_bytes = cfg_in->max_body_bytes;
        if (cfg_in->read_timeout_ms > 0)
            cfg.read_timeout_ms = cfg_in->read_timeout_ms;
        cfg.request_timeout_ms = cfg_in->request_timeout_ms;
        if (cfg_in->shutdown_grace_ms > 0)
            cfg.shutdown_grace_ms = cfg_in->shutdown_grace_ms;
        if (cfg_in->max_connections > 0)
            cfg.max_connections = cfg_in->max_connections;
        cfg.access_log = cfg_in->access_log;
        cfg.access_log_user = cfg_in->access_log_user;
    }
    if (cfg.n_threads > FW_HTTP_MAX_THREADS)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "n_threads %u is over the maximum %u",
                            cfg.n_threads, FW_HTTP_MAX_THREADS);
    if (cfg.n_listen > 0 && cfg.listen == NULL)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "listen is NULL");

    fw_http_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&srv->start_mu, NULL);
    pthread_cond_init(&srv->start_cv, NULL);
    srv->user = user;
    srv->n_loops = cfg.n_threads;
    atomic_init(&srv->stopping_accept, 0);
    atomic_init(&srv->inflight, 0);
    atomic_init(&srv->nconns, 0);

    static const char *const default_listen[] = {FW_HTTP_DEFAULT_LISTEN};
    const char *const *listen_list = cfg.n_listen > 0 ? cfg.listen : default_listen;
    size_t n_listen = cfg.n_listen > 0 ? cfg.n_listen : 1;
    cfg.listen = NULL; /* not kept: the caller's array may go away */
    cfg.n_listen = n_listen;
    srv->cfg = cfg;

    fw_err rc = FW_OK;
    srv->routes = calloc(n_routes > 0 ? n_routes : 1, sizeof(*srv->routes));
    srv->listeners = calloc(n_listen, sizeof(*srv->listeners));
    srv->loops = calloc(srv->n_loops, sizeof(*srv->loops));
    srv->hub = hub_new(srv->n_loops);
    if (srv->routes == NULL || srv->listeners == NULL || srv->loops == NULL || srv->hub == NULL) {
        rc = fw_error_set(err, FW_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n_routes; ++i) {
        srv->routes[i].method = strdup(routes[i].method);
        srv->routes[i].path = strdup(routes[i].path);
        srv->routes[i].handler = routes[i].handler;
        srv->n_routes = i + 1;
        if (srv->routes[i].method == NULL || srv->routes[i].path == NULL) {
            rc = fw_error_set(err, FW_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    for (size_t i = 0; i < n_listen; ++i)
        srv->listeners[i].fd = -1;
    srv->n_listeners = n_listen;
    for (size_t i = 0; i < n_listen; ++i) {
        rc = open_listener(listen_list[i], &srv->listeners[i], err);
        if (rc != FW_OK)
            goto fail;
    }
    for (size_t i = 0; i < srv->n_loops; ++i) {
        srv->loops[i].srv = srv;
        srv->loops[i].index = i;
        atomic_init(&srv->loops[i].stop, 0);
    }

    h2o_config_init(&srv->h2conf);
    srv->h2conf.server_name = h2o_iovec_init(H2O_STRLIT("facework"));
    srv->h2conf.max_request_entity_size = cfg.max_body_bytes;
    srv->h2conf.http1.req_timeout = cfg.read_timeout_ms;
    srv->h2conf.http1.upgrade_to_http2 = 1;
    srv->h2conf.http2.idle_timeout = cfg.read_timeout_ms;
    h2o_hostconf_t *host =
        h2o_config_register_host(&srv->h2conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *root = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(root, sizeof(*handler));
    handler->on_req = on_req;
    h2o_filter_t *f1 = h2o_create_filter(root, sizeof(*f1));
    f1->on_setup_ostream = on_setup_ostream;
    h2o_filter_t *f2 = h2o_create_filter(&host->fallback_path, sizeof(*f2));
    f2->on_setup_ostream = on_setup_ostream;
    h2o_logger_t *logger = h2o_create_logger(&host->fallback_path, sizeof(*logger));
    logger->log_access = on_fallback_log;

    *out = srv;
    return FW_OK;

fail:
    server_release(srv);
    return rc;
}

size_t fw_http_server_n_listeners(const fw_http_server *srv)
{
    return srv != NULL ? srv->n_listeners : 0;
}

int fw_http_server_port(const fw_http_server *srv, size_t i)
{
    return srv != NULL && i < srv->n_listeners ? srv->listeners[i].port : -1;
}

const char *fw_http_server_address(const fw_http_server *srv, size_t i)
{
    return srv != NULL && i < srv->n_listeners ? srv->listeners[i].address : NULL;
}

static void stop_loops(fw_http_server *srv)
{
    for (size_t i = 0; i < srv->n_loops; ++i)
        atomic_store(&srv->loops[i].stop, 1);
    for (size_t i = 0; i < srv->n_loops; ++i)
        hub_wake(srv->hub, i);
    for (size_t i = 0; i < srv->n_loops; ++i) {
        if (srv->loops[i].thread_started) {
            pthread_join(srv->loops[i].thread, NULL);
            srv->loops[i].thread_started = false;
        }
    }
}

fw_err fw_http_server_start(fw_http_server *srv, fw_error *err)
{
    if (srv == NULL)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "server is NULL");
    if (srv->started)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "server already started");
    srv->started = true;

    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);

    size_t spawned = 0;
    for (size_t i = 0; i < srv->n_loops; ++i) {
        int e = pthread_create(&srv->loops[i].thread, NULL, loop_main, &srv->loops[i]);
        if (e != 0) {
            fw_error_set(err, FW_ERR_IO, "cannot create HTTP thread: %s", strerror(e));
            break;
        }
        srv->loops[i].thread_started = true;
        spawned++;
    }
    pthread_mutex_lock(&srv->start_mu);
    while (srv->n_ready + srv->n_failed < spawned)
        pthread_cond_wait(&srv->start_cv, &srv->start_mu);
    bool failed = srv->n_failed > 0 || spawned < srv->n_loops;
    pthread_mutex_unlock(&srv->start_mu);
    if (failed) {
        if (spawned == srv->n_loops)
            fw_error_set(err, FW_ERR_IO, "an HTTP loop failed to start");
        stop_loops(srv);
        return err != NULL ? err->code : FW_ERR_IO;
    }
    for (size_t i = 0; i < srv->n_listeners; ++i)
        FW_INFO(LOG_MOD, "listening", "addr=%s threads=%zu", srv->listeners[i].address,
                srv->n_loops);
    return FW_OK;
}

void fw_http_server_stop_accepting(fw_http_server *srv)
{
    if (srv == NULL || atomic_exchange(&srv->stopping_accept, 1) != 0)
        return;
    /* shutdown() of a listening socket makes the kernel refuse new connections at once, for
     * every dup() the loops hold; the loops then close their copies. */
    for (size_t i = 0; i < srv->n_listeners; ++i)
        if (srv->listeners[i].fd >= 0)
            shutdown(srv->listeners[i].fd, SHUT_RDWR);
    for (size_t i = 0; i < srv->n_loops; ++i)
        hub_wake(srv->hub, i);
    FW_INFO(LOG_MOD, "stopped_accepting", "inflight=%zu", fw_http_server_inflight(srv));
}

size_t fw_http_server_inflight(const fw_http_server *srv)
{
    return srv != NULL ? atomic_load(&srv->inflight) : 0;
}

size_t fw_http_server_connections(const fw_http_server *srv)
{
    return srv != NULL ? atomic_load(&srv->nconns) : 0;
}

void fw_http_server_free(fw_http_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->started) {
        fw_http_server_stop_accepting(srv);
        stop_loops(srv);
    }
    server_release(srv);
}

bool fw_http_request_abandoned(const fw_http_request *req)
{
    return atomic_load(&((const fw__http_req *)(const void *)req)->abandoned);
}

const char *fw_http_header(const fw_http_request *req, const char *name)
{
    if (req == NULL || name == NULL)
        return NULL;
    const fw__http_req *r = (const fw__http_req *)req;
    for (size_t i = 0; i < r->n_headers; ++i)
        if (strcasecmp(r->hnames[i], name) == 0)
            return r->hvalues[i];
    return NULL;
}

size_t fw_http_header_count(const fw_http_request *req)
{
    return req != NULL ? ((const fw__http_req *)req)->n_headers : 0;
}

int fw_http_header_at(const fw_http_request *req, size_t i, const char **name, const char **value)
{
    if (req == NULL || i >= ((const fw__http_req *)req)->n_headers)
        return 0;
    const fw__http_req *r = (const fw__http_req *)req;
    if (name != NULL)
        *name = r->hnames[i];
    if (value != NULL)
        *value = r->hvalues[i];
    return 1;
}
