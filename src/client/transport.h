/* Internal: the client's HTTP transport. One libcurl multi handle driven by one I/O thread;
 * callers submit transfers from any thread and are told of each completion through a
 * callback run on the I/O thread.
 *
 * Connections are kept alive and reused, at most max_connections per host
 * (CURLMOPT_MAX_HOST_CONNECTIONS), with HTTP/2 multiplexing when the connection speaks it.
 * The HTTP version follows fw_client_http; AUTO resolves with fw__transport_resolve_http
 * (see include/facework/client.h "Transport" for why). Proxies from the environment are
 * never used: workers are reached directly. */
#ifndef FW_CLIENT_TRANSPORT_H
#define FW_CLIENT_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "facework/client.h"
#include "util/buf.h"

#define FW__XFER_URL_MAX (FW_CLIENT_URL_MAX + 64)
#define FW__XFER_ERROR_MAX 256 /* >= CURL_ERROR_SIZE */
#define FW__MAX_RESPONSE_BYTES ((size_t)256u * 1024u * 1024u)

typedef struct fw__transport fw__transport;
typedef struct fw__xfer fw__xfer;

/* Called once per submitted transfer, on the I/O thread, after the result fields are set.
 * It may submit other transfers; it must not free the transport. */
typedef void (*fw__xfer_done_fn)(fw__xfer *x, void *user);

struct fw__xfer {
    /* request: set before fw__transport_submit; body must stay valid until done runs */
    char url[FW__XFER_URL_MAX];
    const char *body; /* NULL: GET */
    size_t body_len;
    const char *content_type; /* for a body */
    uint64_t timeout_ms;      /* whole transfer, connect included (>= 1) */
    fw__xfer_done_fn done;
    void *user;
    /* result: valid in done */
    int curl_code;    /* CURLcode; CURLE_ABORTED_BY_CALLBACK when the transport stops */
    long http_status; /* 0 when no response */
    char error[FW__XFER_ERROR_MAX]; /* libcurl's message when curl_code != 0 */
    fw_buf response;                /* the body (owned by the xfer: fw__xfer_reset frees it) */
    char retry_after[64];           /* the Retry-After header value, "" when absent */
    long http_version;              /* CURL_HTTP_VERSION_* actually used */
    long new_connects;              /* connections libcurl opened for this transfer */
    /* internal */
    uint64_t expires_ns; /* monotonic time after which the transport itself gives up */
    void *easy;
    void *headers;
    fw__xfer *next;
};

typedef struct fw__transport_opts {
    fw_client_http http;      /* already resolved (not AUTO) */
    unsigned max_connections; /* per host, >= 1 */
    unsigned max_hosts;       /* for the connection cache size */
    uint64_t connect_timeout_ms;
    const char *api_key; /* NULL or "": none; copied */
} fw__transport_opts;

/* The mode AUTO stands for with the libcurl loaded at run time: HTTP/2 prior knowledge
 * when libcurl >= 8.0.0, else the h2c Upgrade. Also initialises libcurl (once). */
fw_client_http fw__transport_resolve_http(fw_client_http requested);

/* "http/1.1", "h2c-upgrade", "h2-prior" ("auto" for AUTO). */
const char *fw__transport_http_name(fw_client_http h);

/* Starts the I/O thread. */
fw_err fw__transport_new(const fw__transport_opts *opts, fw__transport **out, fw_error *err);

/* Stops the I/O thread: transfers still running or queued complete with
 * CURLE_ABORTED_BY_CALLBACK (their done callbacks run before this returns); a transfer
 * submitted afterwards completes the same way at once, on the submitting thread. Idempotent.
 * NULL: no-op. */
void fw__transport_stop(fw__transport *t);

/* Stops (if not yet) and frees. No submit may run concurrently. NULL: no-op. */
void fw__transport_free(fw__transport *t);

/* Zeroes the result fields (freeing a previous response) so that x can be submitted. */
void fw__xfer_reset(fw__xfer *x);

/* Releases what x holds (its response). */
void fw__xfer_cleanup(fw__xfer *x);

/* Queues x; thread-safe. done always runs exactly once: on the I/O thread, or (after
 * fw__transport_stop) on the calling thread. It runs at the latest shortly after timeout_ms,
 * even where libcurl would keep a transfer parked (a pending HTTP/2 stream whose connection
 * died): the transport then completes it with CURLE_OPERATION_TIMEDOUT. A transfer that cannot be
 * set up completes with an error code (CURLE_FAILED_INIT, CURLE_OUT_OF_MEMORY). */
void fw__transport_submit(fw__transport *t, fw__xfer *x);

#endif
