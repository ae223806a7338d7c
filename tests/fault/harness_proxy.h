/* Fault-injecting TCP proxy for the fault tests.
 *
 * fwp_start() listens on 127.0.0.1:0 and serves each accepted connection on its own thread,
 * either relaying it to the upstream HOST:PORT or answering it itself, according to the
 * fault in force when the connection was accepted. It understands just enough of both
 * protocols the client speaks to count requests and to answer them on its own: HTTP/1.1
 * (request heads, Content-Length and chunked bodies, "Expect: 100-continue") and HTTP/2 with
 * prior knowledge (the connection preface and frame headers; it answers with static-free
 * HPACK literals, acknowledges SETTINGS and PING and opens flow-control windows for request
 * bodies).
 *
 * Changing the fault (fwp_set) closes every open connection (the proxy drops them, as a
 * restarting load balancer would), so that the next request of every client sees the new
 * behaviour at once. Counters are totals since fwp_start().
 *
 * Thread safety: every function may be called from any thread except fwp_stop, which must not
 * run concurrently with other calls on the same proxy. Nothing here uses cmocka assertions. */
#ifndef FWP_HARNESS_PROXY_H
#define FWP_HARNESS_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum fwp_mode {
    FWP_PASS = 0,       /* relay both ways unchanged */
    FWP_DELAY,          /* relay; every upstream byte reaches the client delay_ms late */
    FWP_STALL,          /* accept and read requests; never connect upstream, never answer */
    FWP_RESET_CONNECT,  /* RST (SO_LINGER 0) as soon as the connection is accepted */
    FWP_RESET_REQUEST,  /* read a whole request (nothing goes upstream), then RST */
    FWP_CLOSE_MID_BODY, /* relay; once a request was seen, forward close_after bytes of the
                         * answer, then close both sides */
    FWP_HTTP_500,       /* answer each request with 500 and a JSON error body */
    FWP_HTTP_503,       /* answer each request with 503, Retry-After: retry_after_s */
    FWP_GARBAGE,        /* answer a request with bytes that are not HTTP, then close */
    FWP_TRUNCATED_JSON, /* answer each request with 200 application/json, body cut mid-JSON */
    FWP_MODE__COUNT
} fwp_mode;

typedef struct fwp_fault {
    fwp_mode mode;
    unsigned delay_ms;      /* FWP_DELAY */
    size_t close_after;     /* FWP_CLOSE_MID_BODY: answer bytes forwarded before closing */
    unsigned retry_after_s; /* FWP_HTTP_503 (0: the header says 0) */
    unsigned count;         /* how many faults to inject, then FWP_PASS again; 0: no limit.
                             * A fault is one request for the answering modes and
                             * FWP_RESET_REQUEST, one connection for FWP_RESET_CONNECT and
                             * FWP_CLOSE_MID_BODY; ignored for FWP_DELAY and FWP_STALL. */
} fwp_fault;

typedef struct fwp_stats {
    uint64_t connections; /* accepted */
    uint64_t requests;    /* request heads seen (HTTP/1.1 request lines, HTTP/2 new streams) */
    uint64_t faults;      /* faults injected: per request for the answering modes,
                           * FWP_RESET_REQUEST and FWP_STALL, per connection for
                           * FWP_RESET_CONNECT and FWP_CLOSE_MID_BODY; FWP_DELAY: none */
    uint64_t upstream_failures; /* relayed connections whose upstream connect() failed (the
                                 * client connection is then reset) */
    unsigned active;            /* connections open now */
} fwp_stats;

typedef struct fwp_proxy fwp_proxy;

/* One whole request the proxy received (relayed, answered, reset or stalled; FWP_STALL
 * and FWP_RESET_REQUEST log it when its last byte arrives), in arrival order. */
typedef struct fwp_request_info {
    uint64_t t_ms; /* CLOCK_MONOTONIC milliseconds when its last byte arrived */
    bool has_body; /* it had a body (POST): HTTP/1.1 Content-Length/chunked, HTTP/2 DATA */
    bool faulted;  /* the proxy answered it with a fault (answering modes, reset-request) */
} fwp_request_info;

#define FWP_LOG_MAX 1024

/* Starts a proxy in FWP_PASS mode towards upstream_host (an IPv4 literal) : upstream_port.
 * Returns NULL (with a message on stderr) when it cannot listen. The upstream need not be
 * up yet: it is connected per accepted connection. */
fwp_proxy *fwp_start(const char *upstream_host, int upstream_port);

/* Stops accepting, closes every connection, joins every thread and frees the proxy.
 * NULL is a no-op. */
void fwp_stop(fwp_proxy *p);

/* The proxy's port and "http://127.0.0.1:PORT" (valid until fwp_stop). */
int fwp_port(const fwp_proxy *p);
const char *fwp_url(const fwp_proxy *p);

/* Points new connections at another upstream (e.g. a worker restarted on another port). */
void fwp_set_upstream(fwp_proxy *p, const char *host, int port);

/* Sets the fault for connections accepted from now on and closes every open connection.
 * fault NULL: FWP_PASS. */
void fwp_set(fwp_proxy *p, const fwp_fault *fault);

/* fwp_set with only the mode (delay 0, close_after 0, retry_after 0, unlimited). */
void fwp_set_mode(fwp_proxy *p, fwp_mode mode);

/* Copies the log of the last FWP_LOG_MAX whole requests, oldest first; returns how many. */
size_t fwp_request_log(fwp_proxy *p, fwp_request_info *out, size_t cap);

/* Empties the request log. */
void fwp_clear_log(fwp_proxy *p);

/* Counters since fwp_start(). */
void fwp_get_stats(fwp_proxy *p, fwp_stats *out);

/* "pass", "delay", ... for messages. */
const char *fwp_mode_name(fwp_mode mode);

#endif
