/* Fault-injecting TCP proxy: see harness_proxy.h. */
#include "harness_proxy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define POLL_MS 100
#define H1_HEAD_MAX 16384
#define H2_PAYLOAD_KEEP 16

static const char H2_PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"; /* 24 bytes */
#define H2_PREFACE_LEN 24

enum { PROTO_UNKNOWN = 0, PROTO_H1, PROTO_H2 };

enum {
    H2_DATA = 0,
    H2_HEADERS = 1,
    H2_RST_STREAM = 3,
    H2_SETTINGS = 4,
    H2_PING = 6,
    H2_GOAWAY = 7,
    H2_WINDOW_UPDATE = 8,
};
#define H2_FLAG_END_STREAM 0x1
#define H2_FLAG_ACK 0x1
#define H2_FLAG_END_HEADERS 0x4
#define H2_REFUSED_STREAM 0x7

enum { H1_HEAD = 0, H1_BODY, H1_CHUNK_SIZE, H1_CHUNK_DATA, H1_CHUNK_CRLF, H1_TRAILER };

typedef struct chunk {
    struct chunk *next;
    uint64_t due_us; /* CLOCK_MONOTONIC µs; +1 so truncation never shortens a delay */
    size_t len, off;
    unsigned char data[];
} chunk;

typedef struct fwp_conn {
    struct fwp_proxy *p;
    struct fwp_conn *next;
    pthread_t thread;
    int cfd, ufd; /* client / upstream sockets; -1 once closed (changed under p->mu) */
    atomic_bool done, killed;
    fwp_fault fault; /* effective fault, fixed at accept */
    unsigned gen;    /* p->gen at accept */
    bool local;      /* answered here, no upstream */
    bool closing;    /* stop after the current answer */

    int proto;
    unsigned char pre[H2_PREFACE_LEN];
    size_t pre_len;
    uint64_t requests;

    /* HTTP/1.1 request parser */
    int h1_state;
    char head[H1_HEAD_MAX];
    size_t head_len;
    uint64_t remaining;
    bool expect_continue, answered_early;
    bool h2c_pending; /* the last request asked for "Upgrade: h2c" */
    bool h1_has_body;
    char line[128];
    size_t line_len;

    /* HTTP/2 frame parser (client -> server) */
    unsigned char fh[9];
    size_t fh_len;
    uint32_t f_len, f_stream, f_got;
    uint8_t f_type, f_flags;
    unsigned char f_payload[H2_PAYLOAD_KEEP];
    uint32_t h2_max_stream, h2_last_answered;

    /* relay */
    chunk *q_head, *q_tail;
    size_t answer_bytes; /* FWP_CLOSE_MID_BODY: forwarded since the first request */
} fwp_conn;

struct fwp_proxy {
    int lfd;
    int port;
    char url[64];
    pthread_t acceptor;
    atomic_bool stop;
    pthread_mutex_t mu;
    /* under mu */
    char up_host[64];
    int up_port;
    fwp_fault fault;
    unsigned remaining; /* faults left when fault.count > 0 */
    unsigned gen;       /* fwp_set calls so far */
    fwp_conn *conns;
    fwp_request_info log[FWP_LOG_MAX];
    uint64_t log_n;
    /* counters */
    atomic_uint_fast64_t n_connections, n_requests, n_faults, n_upstream_failures;
    atomic_uint n_active;
};

static const char *const mode_names[FWP_MODE__COUNT] = {
    "pass",           "delay",    "stall",    "reset-connect", "reset-request",
    "close-mid-body", "http-500", "http-503", "garbage",       "truncated-json"};

const char *fwp_mode_name(fwp_mode mode)
{
    return (unsigned)mode < FWP_MODE__COUNT ? mode_names[mode] : "?";
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static bool send_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Takes one unit of a counted fault; false when the budget is spent. */
static bool take_fault(fwp_conn *c)
{
    fwp_proxy *p = c->p;
    bool ok = true;
    if (c->fault.count > 0) {
        pthread_mutex_lock(&p->mu);
        ok = p->remaining > 0 && c->gen == p->gen; /* not the budget of a later fwp_set */
        if (ok)
            p->remaining--;
        if (p->remaining == 0)
            c->closing = true; /* the budget is spent: this connection ends after this answer */
        pthread_mutex_unlock(&p->mu);
    }
    if (ok)
        atomic_fetch_add(&p->n_faults, 1);
    return ok;
}

/* Closes the connection's sockets; rst: SO_LINGER 0 on the client side (RST). */
static void conn_close(fwp_conn *c, bool rst)
{
    pthread_mutex_lock(&c->p->mu);
    if (c->cfd >= 0) {
        if (rst) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(c->cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(c->cfd);
        c->cfd = -1;
    }
    if (c->ufd >= 0) {
        close(c->ufd);
        c->ufd = -1;
    }
    pthread_mutex_unlock(&c->p->mu);
}

/* ------------------------------------------------------------------------------------ */
/* canned answers                                                                       */

static const char ERROR_500[] =
    "{\"error\":{\"code\":\"internal\",\"message\":\"injected by the fault proxy\"}}";
static const char ERROR_503[] =
    "{\"error\":{\"code\":\"unavailable\",\"message\":\"injected by the fault proxy\"}}";
static const char TRUNCATED[] =
    "{\"took_ms\":1.5,\"provider\":\"cpu\",\"model\":\"default\",\"results\":[{\"index\":0,"
    "\"id\":\"0\",\"width\":640,\"height\":480,\"faces\":[{\"bbox\":[10.0,20.0,";
static const unsigned char GARBAGE[] = "\x17\x03\x03\x7f\xff not HTTP at all \x00\x01\x02\xfe"
                                       "\xff garbage garbage garbage\r\n\r\n";

static void canned(const fwp_conn *c, int *status, const char **body, char *retry, size_t cap)
{
    retry[0] = '\0';
    switch (c->fault.mode) {
    case FWP_HTTP_500:
        *status = 500, *body = ERROR_500;
        break;
    case FWP_HTTP_503:
        *status = 503, *body = ERROR_503;
        snprintf(retry, cap, "%u", c->fault.retry_after_s);
        break;
    default:
        *status = 200, *body = TRUNCATED;
        break;
    }
}

static bool h1_answer(fwp_conn *c, bool close_after)
{
    int status;
    const char *body;
    char retry[16], head[512];
    canned(c, &status, &body, retry, sizeof retry);
    const char *reason = status == 500   ? "Internal Server Error"
                         : status == 503 ? "Service Unavailable"
                                         : "OK";
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%s%s%s%s\r\n",
                     status, reason, strlen(body), retry[0] ? "Retry-After: " : "", retry,
                     retry[0] ? "\r\n" : "", close_after ? "Connection: close\r\n" : "");
    return send_all(c->cfd, head, (size_t)n) && send_all(c->cfd, body, strlen(body));
}

static size_t h2_frame(unsigned char *out, uint8_t type, uint8_t flags, uint32_t stream,
                       const void *payload, size_t len)
{
    out[0] = (unsigned char)(len >> 16);
    out[1] = (unsigned char)(len >> 8);
    out[2] = (unsigned char)len;
    out[3] = type;
    out[4] = flags;
    out[5] = (unsigned char)((stream >> 24) & 0x7f);
    out[6] = (unsigned char)(stream >> 16);
    out[7] = (unsigned char)(stream >> 8);
    out[8] = (unsigned char)stream;
    if (len)
        memcpy(out + 9, payload, len);
    return 9 + len;
}

static bool h2_send(fwp_conn *c, uint8_t type, uint8_t flags, uint32_t stream, const void *pl,
                    size_t len)
{
    unsigned char buf[9 + 1024];
    if (len > 1024)
        return false;
    size_t n = h2_frame(buf, type, flags, stream, pl, len);
    return send_all(c->cfd, buf, n);
}

/* HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2), short strings. */
static size_t hpack_literal(unsigned char *out, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value), k = 0;
    out[k++] = 0x00;
    out[k++] = (unsigned char)nl;
    memcpy(out + k, name, nl);
    k += nl;
    out[k++] = (unsigned char)vl;
    memcpy(out + k, value, vl);
    return k + vl;
}

static bool h2_answer(fwp_conn *c, uint32_t stream)
{
    int status;
    const char *body;
    char retry[16], st[8], cl[24];
    canned(c, &status, &body, retry, sizeof retry);
    snprintf(st, sizeof st, "%d", status);
    snprintf(cl, sizeof cl, "%zu", strlen(body));
    unsigned char hb[512];
    size_t k = hpack_literal(hb, ":status", st);
    k += hpack_literal(hb + k, "content-type", "application/json");
    k += hpack_literal(hb + k, "content-length", cl);
    if (retry[0])
        k += hpack_literal(hb + k, "retry-after", retry);
    c->h2_last_answered = stream;
    return h2_send(c, H2_HEADERS, H2_FLAG_END_HEADERS, stream, hb, k) &&
           h2_send(c, H2_DATA, H2_FLAG_END_STREAM, stream, body, strlen(body));
}

static bool h2_goaway(fwp_conn *c)
{
    unsigned char pl[8] = {0};
    uint32_t last = c->h2_last_answered;
    pl[0] = (unsigned char)((last >> 24) & 0x7f);
    pl[1] = (unsigned char)(last >> 16);
    pl[2] = (unsigned char)(last >> 8);
    pl[3] = (unsigned char)last;
    return h2_send(c, H2_GOAWAY, 0, 0, pl, sizeof pl);
}

/* ------------------------------------------------------------------------------------ */
/* what the answering modes do with a request                                           */

typedef enum { ACT_CONTINUE = 0, ACT_CLOSE, ACT_RESET } act;

/* What an answering mode does with a whole request; *faulted: a fault was injected. */
static act answer_request(fwp_conn *c, uint32_t stream, bool *faulted)
{
    if (!c->local)
        return ACT_CONTINUE;
    fwp_mode m = c->fault.mode;
    if (m == FWP_STALL) { /* never answered: a fault of its own, not counted against count */
        atomic_fetch_add(&c->p->n_faults, 1);
        *faulted = true;
        return ACT_CONTINUE;
    }
    if (!(*faulted = take_fault(c))) {
        /* budget spent by other connections meanwhile: refuse (HTTP/2 clients retry a
         * refused stream), or close an HTTP/1.1 connection without an answer */
        if (c->proto == PROTO_H2) {
            unsigned char code[4] = {0, 0, 0, H2_REFUSED_STREAM};
            h2_send(c, H2_RST_STREAM, 0, stream, code, 4);
            h2_goaway(c);
        }
        return ACT_CLOSE;
    }
    switch (m) {
    case FWP_RESET_REQUEST:
        return ACT_RESET;
    case FWP_GARBAGE:
        send_all(c->cfd, GARBAGE, sizeof GARBAGE - 1);
        return ACT_CLOSE;
    default:
        break;
    }
    if (c->proto == PROTO_H2) {
        if (!h2_answer(c, stream))
            return ACT_CLOSE;
        if (c->closing) {
            h2_goaway(c);
            return ACT_CLOSE;
        }
        return ACT_CONTINUE;
    }
    bool close_after = c->closing || c->answered_early;
    if (!h1_answer(c, close_after) || close_after)
        return ACT_CLOSE;
    return ACT_CONTINUE;
}

/* A whole request was received (HTTP/1.1, or HTTP/2 stream `stream`): logs it and, in the
 * answering modes, answers it. */
static act on_request_done(fwp_conn *c, uint32_t stream, bool has_body)
{
    fwp_request_info info = {.t_ms = now_ms(), .has_body = has_body};
    act a = answer_request(c, stream, &info.faulted);
    fwp_proxy *p = c->p;
    pthread_mutex_lock(&p->mu);
    p->log[p->log_n % FWP_LOG_MAX] = info;
    p->log_n++;
    pthread_mutex_unlock(&p->mu);
    return a;
}

/* ------------------------------------------------------------------------------------ */
/* HTTP/1.1 request parser                                                              */

static const char *header_value(const char *head, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = strchr(head, '\n'); p; p = strchr(p, '\n')) {
        p++;
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            p += nl + 1;
            while (*p == ' ' || *p == '\t')
                p++;
            return p;
        }
    }
    return NULL;
}

/* The head is complete (NUL-terminated in c->head). */
static act h1_on_head(fwp_conn *c)
{
    atomic_fetch_add(&c->p->n_requests, 1);
    c->requests++;
    const char *te = header_value(c->head, "transfer-encoding");
    const char *cl = header_value(c->head, "content-length");
    const char *ex = header_value(c->head, "expect");
    const char *up = header_value(c->head, "upgrade");
    c->h2c_pending = up && !strncasecmp(up, "h2c", 3);
    c->expect_continue = ex && !strncasecmp(ex, "100-continue", 12);
    c->remaining = cl ? strtoull(cl, NULL, 10) : 0;
    if (te && !strncasecmp(te, "chunked", 7)) {
        c->h1_state = H1_CHUNK_SIZE;
        c->line_len = 0;
    } else {
        c->h1_state = c->remaining ? H1_BODY : H1_HEAD;
    }
    c->answered_early = false;
    c->h1_has_body = c->h1_state != H1_HEAD;
    if (c->local && c->expect_continue && c->h1_state != H1_HEAD && c->fault.mode != FWP_STALL) {
        /* answer before the body, as a server refusing it would; the client then does not
         * send it, so the connection cannot be reused */
        c->answered_early = true;
        return on_request_done(c, 0, c->h1_has_body) == ACT_RESET ? ACT_RESET : ACT_CLOSE;
    }
    if (c->h1_state == H1_HEAD)
        return on_request_done(c, 0, c->h1_has_body);
    return ACT_CONTINUE;
}

static act client_feed(fwp_conn *c, const unsigned char *d, size_t n);

static act h1_feed(fwp_conn *c, const unsigned char *d, size_t n)
{
    size_t i = 0;
    while (i < n) {
        act a = ACT_CONTINUE;
        switch (c->h1_state) {
        case H1_HEAD: {
            if (c->head_len == 0 && c->h2c_pending) {
                /* after an upgrade request, the client speaks HTTP/2 (preface first) if the
                 * server agreed; the upgrade request itself was stream 1 */
                c->h2c_pending = false;
                c->proto = PROTO_UNKNOWN;
                c->pre_len = 0;
                c->h2_max_stream = 1;
                return client_feed(c, d + i, n - i);
            }
            char ch = (char)d[i++];
            if (c->head_len == 0 && (ch == '\r' || ch == '\n'))
                break; /* stray CRLF between requests */
            if (c->head_len >= H1_HEAD_MAX - 1)
                return ACT_CLOSE;
            c->head[c->head_len++] = ch;
            size_t L = c->head_len;
            if ((L >= 4 && !memcmp(c->head + L - 4, "\r\n\r\n", 4)) ||
                (L >= 2 && !memcmp(c->head + L - 2, "\n\n", 2))) {
                c->head[L] = '\0';
                c->head_len = 0;
                a = h1_on_head(c);
            }
            break;
        }
        case H1_BODY: {
            size_t take = n - i < c->remaining ? n - i : (size_t)c->remaining;
            i += take;
            c->remaining -= take;
            if (c->remaining == 0) {
                c->h1_state = H1_HEAD;
                a = on_request_done(c, 0, c->h1_has_body);
            }
            break;
        }
        case H1_CHUNK_SIZE:
        case H1_TRAILER: {
            char ch = (char)d[i++];
            if (ch != '\n') {
                if (c->line_len < sizeof c->line - 1)
                    c->line[c->line_len++] = ch;
                break;
            }
            c->line[c->line_len] = '\0';
            bool empty = c->line_len == 0 || (c->line_len == 1 && c->line[0] == '\r');
            c->line_len = 0;
            if (c->h1_state == H1_TRAILER) {
                if (empty) {
                    c->h1_state = H1_HEAD;
                    a = on_request_done(c, 0, c->h1_has_body);
                }
                break;
            }
            uint64_t size = strtoull(c->line, NULL, 16);
            if (size == 0) {
                c->h1_state = H1_TRAILER;
            } else {
                c->remaining = size;
                c->h1_state = H1_CHUNK_DATA;
            }
            break;
        }
        case H1_CHUNK_DATA: {
            size_t take = n - i < c->remaining ? n - i : (size_t)c->remaining;
            i += take;
            c->remaining -= take;
            if (c->remaining == 0) {
                c->remaining = 2;
                c->h1_state = H1_CHUNK_CRLF;
            }
            break;
        }
        case H1_CHUNK_CRLF: {
            size_t take = n - i < c->remaining ? n - i : (size_t)c->remaining;
            i += take;
            c->remaining -= take;
            if (c->remaining == 0)
                c->h1_state = H1_CHUNK_SIZE;
            break;
        }
        }
        if (a != ACT_CONTINUE)
            return a;
    }
    return ACT_CONTINUE;
}

/* ------------------------------------------------------------------------------------ */
/* HTTP/2 frame parser (client side of the connection)                                  */

static act h2_on_frame_start(fwp_conn *c)
{
    if (c->f_type == H2_HEADERS && c->f_stream > c->h2_max_stream) {
        c->h2_max_stream = c->f_stream;
        atomic_fetch_add(&c->p->n_requests, 1);
        c->requests++;
    }
    if (!c->local)
        return ACT_CONTINUE;
    if (c->f_type == H2_DATA && c->f_len > 0 && c->fault.mode != FWP_STALL) {
        /* open the windows again for what the client sent, so bodies of any size arrive */
        unsigned char inc[4] = {(unsigned char)(c->f_len >> 24), (unsigned char)(c->f_len >> 16),
                                (unsigned char)(c->f_len >> 8), (unsigned char)c->f_len};
        if (!h2_send(c, H2_WINDOW_UPDATE, 0, 0, inc, 4))
            return ACT_CLOSE;
        if (!(c->f_flags & H2_FLAG_END_STREAM) &&
            !h2_send(c, H2_WINDOW_UPDATE, 0, c->f_stream, inc, 4))
            return ACT_CLOSE;
    }
    return ACT_CONTINUE;
}

static act h2_on_frame_end(fwp_conn *c)
{
    if ((c->f_type == H2_HEADERS || c->f_type == H2_DATA) && (c->f_flags & H2_FLAG_END_STREAM))
        return on_request_done(c, c->f_stream, c->f_type == H2_DATA);
    if (!c->local)
        return ACT_CONTINUE;
    bool stall = c->fault.mode == FWP_STALL;
    switch (c->f_type) {
    case H2_SETTINGS:
        if (!(c->f_flags & H2_FLAG_ACK) && !stall &&
            !h2_send(c, H2_SETTINGS, H2_FLAG_ACK, 0, NULL, 0))
            return ACT_CLOSE;
        return ACT_CONTINUE;
    case H2_PING:
        if (!(c->f_flags & H2_FLAG_ACK) && !stall && c->f_len == 8 &&
            !h2_send(c, H2_PING, H2_FLAG_ACK, 0, c->f_payload, 8))
            return ACT_CLOSE;
        return ACT_CONTINUE;
    case H2_GOAWAY:
        return ACT_CLOSE;
    default:
        return ACT_CONTINUE;
    }
}

static act h2_feed(fwp_conn *c, const unsigned char *d, size_t n)
{
    size_t i = 0;
    while (i < n) {
        act a = ACT_CONTINUE;
        if (c->fh_len < 9) {
            c->fh[c->fh_len++] = d[i++];
            if (c->fh_len < 9)
                continue;
            c->f_len = (uint32_t)c->fh[0] << 16 | (uint32_t)c->fh[1] << 8 | c->fh[2];
            c->f_type = c->fh[3];
            c->f_flags = c->fh[4];
            c->f_stream = ((uint32_t)c->fh[5] & 0x7f) << 24 | (uint32_t)c->fh[6] << 16 |
                          (uint32_t)c->fh[7] << 8 | c->fh[8];
            c->f_got = 0;
            a = h2_on_frame_start(c);
        } else {
            size_t left = c->f_len - c->f_got;
            size_t take = n - i < left ? n - i : left;
            for (size_t k = 0; k < take; k++)
                if (c->f_got + k < H2_PAYLOAD_KEEP)
                    c->f_payload[c->f_got + k] = d[i + k];
            c->f_got += (uint32_t)take;
            i += take;
        }
        if (a == ACT_CONTINUE && c->fh_len == 9 && c->f_got == c->f_len) {
            c->fh_len = 0;
            a = h2_on_frame_end(c);
        }
        if (a != ACT_CONTINUE)
            return a;
    }
    return ACT_CONTINUE;
}

/* Client bytes: protocol detection, then the protocol's parser. */
static act client_feed(fwp_conn *c, const unsigned char *d, size_t n)
{
    if (c->proto == PROTO_UNKNOWN) {
        size_t i = 0;
        while (i < n && c->pre_len < H2_PREFACE_LEN &&
               d[i] == (unsigned char)H2_PREFACE[c->pre_len])
            c->pre[c->pre_len++] = d[i++];
        if (c->pre_len == H2_PREFACE_LEN) {
            c->proto = PROTO_H2;
            if (c->local && c->fault.mode != FWP_STALL && !h2_send(c, H2_SETTINGS, 0, 0, NULL, 0))
                return ACT_CLOSE;
            return h2_feed(c, d + i, n - i);
        }
        if (i < n) { /* not the preface: HTTP/1.1 from the start */
            c->proto = PROTO_H1;
            act a = h1_feed(c, c->pre, c->pre_len);
            if (a != ACT_CONTINUE)
                return a;
            return h1_feed(c, d + i, n - i);
        }
        return ACT_CONTINUE;
    }
    return c->proto == PROTO_H2 ? h2_feed(c, d, n) : h1_feed(c, d, n);
}

/* ------------------------------------------------------------------------------------ */
/* connection threads                                                                   */

static void queue_free(fwp_conn *c)
{
    while (c->q_head) {
        chunk *k = c->q_head;
        c->q_head = k->next;
        free(k);
    }
    c->q_tail = NULL;
}

/* Sends the delayed chunks that are due; false when the client is gone. */
static bool flush_due(fwp_conn *c)
{
    uint64_t t = now_us();
    while (c->q_head && c->q_head->due_us <= t) {
        chunk *k = c->q_head;
        if (!send_all(c->cfd, k->data + k->off, k->len - k->off))
            return false;
        c->q_head = k->next;
        if (!c->q_head)
            c->q_tail = NULL;
        free(k);
    }
    return true;
}

static int connect_upstream(fwp_proxy *p)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    pthread_mutex_lock(&p->mu);
    int ok = inet_pton(AF_INET, p->up_host, &sa.sin_addr);
    sa.sin_port = htons((uint16_t)p->up_port);
    pthread_mutex_unlock(&p->mu);
    if (ok != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int r;
    do
        r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Relays one connection; returns true to reset the client side at the end. */
static bool relay(fwp_conn *c)
{
    fwp_proxy *p = c->p;
    int ufd = connect_upstream(p);
    if (ufd < 0) {
        atomic_fetch_add(&p->n_upstream_failures, 1);
        return true;
    }
    pthread_mutex_lock(&p->mu);
    c->ufd = ufd;
    bool killed = atomic_load(&c->killed);
    pthread_mutex_unlock(&p->mu);
    if (killed)
        return true;
    bool upstream_eof = false;
    unsigned char buf[65536];
    for (;;) {
        if (atomic_load(&c->killed))
            return true;
        if (!flush_due(c))
            return true;
        if (upstream_eof && !c->q_head)
            return false; /* everything the upstream said was delivered */
        int timeout = POLL_MS;
        if (c->q_head) {
            uint64_t t = now_us();
            /* rounded up: waking early would only spin */
            timeout = c->q_head->due_us > t ? (int)((c->q_head->due_us - t + 999) / 1000) : 0;
            if (timeout > POLL_MS)
                timeout = POLL_MS;
        }
        struct pollfd pf[2] = {{.fd = c->cfd, .events = POLLIN},
                               {.fd = upstream_eof ? -1 : c->ufd, .events = POLLIN}};
        int r = poll(pf, 2, timeout);
        if (r < 0 && errno != EINTR)
            return true;
        if (r <= 0)
            continue;
        if (pf[0].revents) {
            ssize_t n = recv(c->cfd, buf, sizeof buf, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return false; /* the client is done */
            client_feed(c, buf, (size_t)n);
            if (!send_all(c->ufd, buf, (size_t)n))
                return true;
        }
        if (pf[1].revents) {
            ssize_t n = recv(c->ufd, buf, sizeof buf, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                upstream_eof = true;
                continue;
            }
            size_t len = (size_t)n;
            if (c->fault.mode == FWP_CLOSE_MID_BODY && c->requests > 0) {
                size_t room = c->fault.close_after - c->answer_bytes;
                bool cut = len >= room;
                if (cut)
                    len = room;
                c->answer_bytes += len;
                if (len && !send_all(c->cfd, buf, len))
                    return true;
                if (cut)
                    return false; /* FIN after a partial answer */
                continue;
            }
            if (c->fault.mode == FWP_DELAY) {
                chunk *k = malloc(sizeof *k + len);
                if (!k)
                    return true;
                k->next = NULL;
                k->due_us = now_us() + (uint64_t)c->fault.delay_ms * 1000u + 1;
                k->len = len;
                k->off = 0;
                memcpy(k->data, buf, len);
                if (c->q_tail)
                    c->q_tail->next = k;
                else
                    c->q_head = k;
                c->q_tail = k;
                continue;
            }
            if (!send_all(c->cfd, buf, len))
                return true;
        }
    }
}

/* Answers one connection here; returns true to reset the client side at the end. */
static bool answer_locally(fwp_conn *c)
{
    unsigned char buf[65536];
    for (;;) {
        if (atomic_load(&c->killed))
            return true;
        struct pollfd pf = {.fd = c->cfd, .events = POLLIN};
        int r = poll(&pf, 1, POLL_MS);
        if (r < 0 && errno != EINTR)
            return true;
        if (r <= 0)
            continue;
        ssize_t n = recv(c->cfd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        act a = client_feed(c, buf, (size_t)n);
        if (a == ACT_RESET)
            return true;
        if (a == ACT_CLOSE) {
            /* let the answer reach the client before closing: FIN first, then drain what
             * the client still sends for a moment so that close() does not turn into RST */
            shutdown(c->cfd, SHUT_WR);
            uint64_t until = now_ms() + 200;
            while (now_ms() < until && !atomic_load(&c->killed)) {
                pf.revents = 0;
                if (poll(&pf, 1, 20) > 0 && recv(c->cfd, buf, sizeof buf, 0) <= 0)
                    break;
            }
            return false;
        }
    }
}

static void *conn_main(void *arg)
{
    fwp_conn *c = arg;
    bool rst;
    if (c->fault.mode == FWP_RESET_CONNECT) {
        rst = true;
    } else if (c->local) {
        rst = answer_locally(c);
    } else {
        rst = relay(c);
    }
    queue_free(c);
    conn_close(c, rst);
    atomic_fetch_sub(&c->p->n_active, 1);
    atomic_store(&c->done, true);
    return NULL;
}

/* Joins and frees finished connections (all of them when all is set, after killing). */
static void reap_conns(fwp_proxy *p, bool all)
{
    for (;;) {
        fwp_conn *victim = NULL;
        pthread_mutex_lock(&p->mu);
        for (fwp_conn **pp = &p->conns; *pp; pp = &(*pp)->next) {
            if (all || atomic_load(&(*pp)->done)) {
                victim = *pp;
                *pp = victim->next;
                break;
            }
        }
        pthread_mutex_unlock(&p->mu);
        if (!victim)
            return;
        pthread_join(victim->thread, NULL);
        free(victim);
    }
}

/* Under p->mu: asks every open connection to end now. */
static void kill_all_locked(fwp_proxy *p)
{
    for (fwp_conn *c = p->conns; c; c = c->next) {
        atomic_store(&c->killed, true);
        if (c->cfd >= 0)
            shutdown(c->cfd, SHUT_RDWR);
        if (c->ufd >= 0)
            shutdown(c->ufd, SHUT_RDWR);
    }
}

static void *acceptor_main(void *arg)
{
    fwp_proxy *p = arg;
    while (!atomic_load(&p->stop)) {
        reap_conns(p, false);
        struct pollfd pf = {.fd = p->lfd, .events = POLLIN};
        if (poll(&pf, 1, POLL_MS) <= 0)
            continue;
        int fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fwp_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->p = p;
        c->cfd = fd;
        c->ufd = -1;
        atomic_fetch_add(&p->n_connections, 1);
        /* one critical section: a concurrent fwp_set either comes before (new fault) or
         * after (kills this connection) */
        pthread_mutex_lock(&p->mu);
        c->fault = p->fault;
        c->gen = p->gen;
        fwp_mode m = c->fault.mode;
        if (c->fault.count > 0) {
            bool per_conn = m == FWP_RESET_CONNECT || m == FWP_CLOSE_MID_BODY;
            if (p->remaining == 0)
                c->fault = (fwp_fault){.mode = FWP_PASS};
            else if (per_conn)
                p->remaining--;
        }
        m = c->fault.mode;
        if (m == FWP_RESET_CONNECT || m == FWP_CLOSE_MID_BODY)
            atomic_fetch_add(&p->n_faults, 1);
        c->local = m != FWP_PASS && m != FWP_DELAY && m != FWP_CLOSE_MID_BODY;
        atomic_fetch_add(&p->n_active, 1);
        c->next = p->conns;
        p->conns = c;
        if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
            p->conns = c->next;
            pthread_mutex_unlock(&p->mu);
            atomic_fetch_sub(&p->n_active, 1);
            close(fd);
            free(c);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* public                                                                               */

fwp_proxy *fwp_start(const char *upstream_host, int upstream_port)
{
    fwp_proxy *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(p->lfd, 128) != 0 || getsockname(p->lfd, (struct sockaddr *)&sa, &sl) != 0) {
        fprintf(stderr, "proxy: cannot listen: %s\n", strerror(errno));
        if (p->lfd >= 0)
            close(p->lfd);
        free(p);
        return NULL;
    }
    p->port = ntohs(sa.sin_port);
    snprintf(p->url, sizeof p->url, "http://127.0.0.1:%d", p->port);
    snprintf(p->up_host, sizeof p->up_host, "%s", upstream_host);
    p->up_port = upstream_port;
    pthread_mutex_init(&p->mu, NULL);
    if (pthread_create(&p->acceptor, NULL, acceptor_main, p) != 0) {
        fprintf(stderr, "proxy: cannot start its thread\n");
        pthread_mutex_destroy(&p->mu);
        close(p->lfd);
        free(p);
        return NULL;
    }
    return p;
}

void fwp_stop(fwp_proxy *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->acceptor, NULL);
    close(p->lfd);
    pthread_mutex_lock(&p->mu);
    kill_all_locked(p);
    pthread_mutex_unlock(&p->mu);
    reap_conns(p, true);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int fwp_port(const fwp_proxy *p)
{
    return p->port;
}

const char *fwp_url(const fwp_proxy *p)
{
    return p->url;
}

void fwp_set_upstream(fwp_proxy *p, const char *host, int port)
{
    pthread_mutex_lock(&p->mu);
    snprintf(p->up_host, sizeof p->up_host, "%s", host);
    p->up_port = port;
    pthread_mutex_unlock(&p->mu);
}

void fwp_set(fwp_proxy *p, const fwp_fault *fault)
{
    pthread_mutex_lock(&p->mu);
    p->fault = fault ? *fault : (fwp_fault){.mode = FWP_PASS};
    p->remaining = p->fault.count;
    p->gen++;
    kill_all_locked(p);
    pthread_mutex_unlock(&p->mu);
}

void fwp_set_mode(fwp_proxy *p, fwp_mode mode)
{
    fwp_fault f = {.mode = mode};
    fwp_set(p, &f);
}

size_t fwp_request_log(fwp_proxy *p, fwp_request_info *out, size_t cap)
{
    pthread_mutex_lock(&p->mu);
    uint64_t first = p->log_n > FWP_LOG_MAX ? p->log_n - FWP_LOG_MAX : 0;
    size_t n = 0;
    for (uint64_t i = first; i < p->log_n && n < cap; i++)
        out[n++] = p->log[i % FWP_LOG_MAX];
    pthread_mutex_unlock(&p->mu);
    return n;
}

void fwp_clear_log(fwp_proxy *p)
{
    pthread_mutex_lock(&p->mu);
    p->log_n = 0;
    pthread_mutex_unlock(&p->mu);
}

void fwp_get_stats(fwp_proxy *p, fwp_stats *out)
{
    out->connections = atomic_load(&p->n_connections);
    out->requests = atomic_load(&p->n_requests);
    out->faults = atomic_load(&p->n_faults);
    out->upstream_failures = atomic_load(&p->n_upstream_failures);
    out->active = atomic_load(&p->n_active);
}
