/* HTTP transport of the worker: HTTP/1.1 and cleartext HTTP/2 (prior knowledge and
 * "Upgrade: h2c") on h2o's event loop.
 *
 * This header is transport-neutral: handlers see fw_http_request and answer with
 * fw_http_respond*(); only http.c includes h2o, so another transport (Windows) can implement
 * the same interface.
 *
 * Threads. fw_http_server_start() spawns n_threads event loops; all of them accept on the
 * shared listening sockets. A request is parsed (and its body buffered) by the loop that owns
 * its connection, which then calls the route's handler on that loop thread. The handler must
 * not block: it either responds at once or hands the request to another thread (CPU pool,
 * batcher) that calls fw_http_respond*() later. A late response is passed back to the owning
 * loop through an h2o inter-thread queue. If the client went away in the meantime the
 * response is discarded; the fw_http_request stays valid until it is answered either way.
 * (HTTP/2 notices a vanished client at once; h2o 2.2 does not read an HTTP/1.1 connection
 * while its request is being handled, so there the loss shows only when the answer is
 * written. Both are harmless.)
 *
 * Limits. Bodies are buffered whole before the handler runs, up to max_body_bytes:
 *  - HTTP/1.1 with Content-Length over the limit: 413 JSON at once, before any body byte is
 *    read; a chunked body is cut off with 413 JSON as soon as it passes the limit. The
 *    connection is closed after the 413.
 *  - HTTP/2: h2o 2.2 resets the stream (RST_STREAM REFUSED_STREAM) as soon as the DATA
 *    received passes the limit; it has no hook to answer 413 there. Clients see a stream
 *    error, not a status (documented limitation of libh2o 2.2).
 * read_timeout_ms bounds the time a client may take to send a whole request (headers and
 * body: slowloris), over HTTP/1.1 (h2o's request timeout) and over HTTP/2 (a sweep every
 * read_timeout_ms / 2 shuts down a connection with a stream still receiving its request past
 * the limit), and the idle time of a keep-alive or HTTP/2 connection.
 *
 * Error bodies produced here (and the ones h2o itself produces for a parsed request, e.g. 400,
 * 413, 417) are JSON: {"error":{"code":"<snake_case>","message":"..."}}. Exception: a request
 * that h2o's HTTP/1 parser rejects outright (garbage request line, over 100 headers) gets
 * libh2o 2.2's fixed text/plain "Bad Request". Every response carries X-Request-Id.
 *
 * SIGPIPE: fw_http_server_start() sets SIGPIPE to SIG_IGN when it still has its default
 * action (h2o writes with writev(), and a peer that closes early must not kill the process). */
#ifndef FW_SERVER_HTTP_H
#define FW_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "facework/error.h"

#define FW_HTTP_DEFAULT_LISTEN "127.0.0.1:8765"
#define FW_HTTP_DEFAULT_MAX_BODY_BYTES ((size_t)64 * 1024 * 1024)
#define FW_HTTP_DEFAULT_READ_TIMEOUT_MS 10000u
#define FW_HTTP_DEFAULT_SHUTDOWN_GRACE_MS 2000u
#define FW_HTTP_DEFAULT_MAX_CONNECTIONS 1024u
#define FW_HTTP_MAX_THREADS 64u

typedef struct fw_http_server fw_http_server;

/* A request as handlers see it. Every pointer stays valid (and unchanged) until the request
 * is answered with one of the fw_http_respond*() functions; do not copy the struct. Strings
 * are NUL-terminated. */
typedef struct fw_http_request {
    const char *method;        /* "GET", "POST", ... (as sent, case preserved) */
    const char *path;          /* request path without the query, e.g. "/v1/analyze" */
    const char *query;         /* text after '?', "" when there is none */
    const unsigned char *body; /* whole request body; never NULL (points to "" if empty) */
    size_t body_len;           /* <= max_body_bytes */
    const char *remote_addr;   /* "127.0.0.1:54321" or "[::1]:54321" */
    const char *request_id;    /* 16 lower-case hex chars, unique per process */
    int http_version;          /* 1 (HTTP/1.x) or 2 (HTTP/2) */
} fw_http_request;

/* Called on the loop thread that owns the request, once per request. It must eventually
 * answer req with exactly one fw_http_respond*() call, from any thread, before or after it
 * returns. user is the pointer given to fw_http_server_new(). */
typedef void (*fw_http_handler_fn)(fw_http_request *req, void *user);

/* Routing is by exact path and method ("GET", "POST"...). A path with no route answers 404;
 * a path with routes for other methods answers 405 with an Allow header. HEAD without a HEAD
 * route is served by the GET route (its handler sees method "HEAD"; the body is not sent). */
typedef struct fw_http_route {
    const char *method;
    const char *path;
    fw_http_handler_fn handler;
} fw_http_route;

/* One extra response header (e.g. {"Retry-After", "1"}). Names must be tokens and not one of
 * the headers the transport sets itself (Content-Length, Transfer-Encoding, Connection,
 * Upgrade, Content-Type: pass it as content_type, X-Request-Id); values must not contain CR,
 * LF or other control characters except tab. */
typedef struct fw_http_header_kv {
    const char *name;
    const char *value;
} fw_http_header_kv;

/* One access-log record, passed to the access_log callback when a request is finished
 * (response written, or client gone). Pointers are valid during the call only. */
typedef struct fw_http_access_entry {
    const char *method;
    const char *path;        /* without query */
    const char *request_id;  /* "" when the request never got one */
    const char *remote_addr; /* "" when unknown */
    int status;              /* 0 when the client went away before any response */
    int http_version;        /* 1 or 2 */
    uint64_t bytes_sent;     /* response body bytes */
    uint64_t duration_us;    /* first request byte to completion */
} fw_http_access_entry;

/* Called on loop threads (several at once when n_threads > 1): must be thread-safe and fast. */
typedef void (*fw_http_access_log_fn)(const fw_http_access_entry *entry, void *user);

/* Server settings. A zero field means "default" (see fw_http_config_defaults). */
typedef struct fw_http_config {
    const char *const *listen;        /* "host:port" / "[v6addr]:port"; port 0 = ephemeral */
    size_t n_listen;                  /* 0: one listener on FW_HTTP_DEFAULT_LISTEN */
    unsigned n_threads;               /* event loops; 0: 1; at most FW_HTTP_MAX_THREADS */
    size_t max_body_bytes;            /* 0: FW_HTTP_DEFAULT_MAX_BODY_BYTES */
    unsigned read_timeout_ms;         /* 0: FW_HTTP_DEFAULT_READ_TIMEOUT_MS (see top of file) */
    unsigned request_timeout_ms;      /* handler deadline; past it the server answers 503
                                       * {"code":"timeout"} and drops the late answer. 0: none */
    unsigned shutdown_grace_ms;       /* fw_http_server_free(): how long loops keep running to
                                       * flush responses and close connections. 0: default */
    size_t max_connections;           /* open connections over all loops; beyond it new connections
                                       * are closed at once. 0: FW_HTTP_DEFAULT_MAX_CONNECTIONS */
    fw_http_access_log_fn access_log; /* optional */
    void *access_log_user;
} fw_http_config;

/* Fills *cfg with the defaults (all documented above); cfg must not be NULL. */
void fw_http_config_defaults(fw_http_config *cfg);

/* Creates a server and binds its listening sockets (SO_REUSEADDR; IPv6 sockets are
 * V6ONLY) without serving yet. Routes are copied. Fails with FW_ERR_INVALID_ARGUMENT for a
 * malformed address or route, FW_ERR_IO when a socket cannot be bound (the message names
 * the address and says when it is already in use). On success *out owns the server. */
fw_err fw_http_server_new(const fw_http_config *cfg, const fw_http_route *routes, size_t n_routes,
                          void *user, fw_http_server **out, fw_error *err);

/* Number of listening sockets, and the port / "host:port" text each is bound to (useful
 * with port 0). i must be < fw_http_server_n_listeners(). */
size_t fw_http_server_n_listeners(const fw_http_server *srv);
int fw_http_server_port(const fw_http_server *srv, size_t i);
const char *fw_http_server_address(const fw_http_server *srv, size_t i);

/* Spawns the event-loop threads and starts serving; returns once every loop is ready.
 * Call once. */
fw_err fw_http_server_start(fw_http_server *srv, fw_error *err);

/* Graceful shutdown, step 1: closes the listening sockets (new connections are refused from
 * the moment this returns), tells HTTP/1.1 clients "Connection: close" and HTTP/2 clients
 * GOAWAY; requests already received still complete. Idempotent; callable from any thread,
 * e.g. a signal-handling thread. */
void fw_http_server_stop_accepting(fw_http_server *srv);

/* Requests handed to handlers and not finished yet (response not fully written, client not
 * gone). Callable from any thread. */
size_t fw_http_server_inflight(const fw_http_server *srv);

/* Open client connections. Callable from any thread. */
size_t fw_http_server_connections(const fw_http_server *srv);

/* Stops accepting, answers every request still waiting for its handler with 503
 * {"code":"unavailable"}, lets the loops flush for at most shutdown_grace_ms, closes the
 * connections, joins the threads and frees everything. A handler that answers afterwards is
 * safe: its answer is dropped and the request freed. Must not be called from a handler
 * (loop thread) nor concurrently with other calls on srv (fw_http_respond* excepted). A
 * connection whose peer does not read its response within the grace period is abandoned
 * (logged as shutdown_incomplete; that loop's memory is not freed). NULL is a no-op. */
void fw_http_server_free(fw_http_server *srv);

/* True once nobody waits for req's answer any more: the client went away or the request
 * deadline passed (and the client got 503). The handler must still answer (the answer is
 * dropped); work not started yet for it can be skipped. Callable from any thread. */
bool fw_http_request_abandoned(const fw_http_request *req);

/* Request header value by name (case-insensitive), or NULL. With repeated headers, the
 * first. "host" and "content-length" are available too. Valid as long as req. */
const char *fw_http_header(const fw_http_request *req, const char *name);

/* Iterates the request headers: names are lower-case. Returns 0 when i is out of range. */
size_t fw_http_header_count(const fw_http_request *req);
int fw_http_header_at(const fw_http_request *req, size_t i, const char **name, const char **value);

/* Answers req and releases it: after the call req (and everything it points to) must not be
 * used. Callable from any thread, at any later time, exactly once per request. body (len
 * bytes; may be NULL when len is 0) is copied. content_type may be NULL (no Content-Type).
 * status must be 200..599 and header names/values valid: otherwise a 500 JSON is sent
 * instead and FW_ERR_INVALID_ARGUMENT returned (req is released all the same). Returns
 * FW_ERR_NOMEM when the response could not be built (req released, client gets 503 or a
 * reset). When the client is gone or the server is shutting down, the answer is silently
 * dropped and FW_OK returned. */
fw_err fw_http_respond(fw_http_request *req, int status, const char *content_type,
                       const fw_http_header_kv *headers, size_t n_headers, const void *body,
                       size_t len);

/* As fw_http_respond, but takes ownership of body, a malloc()ed buffer (freed by the server
 * with free(), also on failure) instead of copying it. */
fw_err fw_http_respond_take(fw_http_request *req, int status, const char *content_type,
                            const fw_http_header_kv *headers, size_t n_headers, void *body,
                            size_t len);

/* Answers with status and {"error":{"code":code,"message":message}} (application/json);
 * retry_after_s > 0 adds "Retry-After: <n>". Same contract as fw_http_respond. */
fw_err fw_http_respond_error(fw_http_request *req, int status, const char *code,
                             const char *message, unsigned retry_after_s);

#endif
