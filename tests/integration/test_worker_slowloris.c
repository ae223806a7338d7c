/* Integration: slowloris. A worker with --read-timeout 1s --max-connections 8 faces clients
 * that open connections and trickle their requests one byte every 100 ms, so that a timer
 * restarted on every read would never fire:
 *  - HTTP/1.1: request headers trickled; a body trickled after complete headers;
 *  - HTTP/2 (prior knowledge): DATA frames of one byte after HEADERS without END_STREAM;
 *    CONTINUATION frames of one byte after HEADERS without END_HEADERS.
 * Checked: every trickling connection is closed by the worker between --read-timeout and
 * 1.5 x --read-timeout plus slack after it opened, although it kept sending; beyond
 * --max-connections new connections are closed at once and the worker's open fds stay
 * under idle + --max-connections + slack throughout; once the tricklers are cut off a
 * normal client is served (HTTP/1.1 and HTTP/2) and the worker's fd count returns to its
 * idle value. Waits are polls with deadlines (scaled by fwt_time_scale() under valgrind). */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_TIMEOUT_S 1.0
#define MAX_CONNS 8
#define TICK_MS 100
#define FD_SLACK 3 /* accepted-then-closed sockets over the cap, momentarily */

static fwt_worker *g_w;
static int g_idle_fds;

/* ---------------------------------------------------------------------------------------- */
/* worker fds                                                                               */

/* Open fds of the worker process, or -1. */
static int worker_fds(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", (long)g_w->pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Polls until the worker's fd count is <= want (deadline timeout_s); returns the last count. */
static int wait_fds_at_most(int want, double timeout_s)
{
    double deadline = fwt_now() + timeout_s * fwt_time_scale();
    int n;
    while ((n = worker_fds()) > want && fwt_now() < deadline)
        fwt_pause_ms(20);
    return n;
}

/* ---------------------------------------------------------------------------------------- */
/* a normal client                                                                          */

static void serve_normal_client(fwt_proto proto)
{
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    fwt_part p = {"image", "a.jpg", "image/jpeg", d, len};
    fwt_resp r;
    fwt_post_parts(g_w, "/v1/analyze", &p, 1, proto, &r);
    json_t *j = fwt_expect_json(&r, 200);
    json_t *faces = json_object_get(json_array_get(json_object_get(j, "results"), 0), "faces");
    assert_int_equal(json_array_size(faces), fwt_photo_faces[1]);
    json_decref(j);
    fwt_resp_free(&r);
}

/* ---------------------------------------------------------------------------------------- */
/* trickling clients                                                                        */

typedef enum kind { H1_HEADERS, H1_BODY, H2_DATA, H2_CONTINUATION, N_KINDS } kind;
static const char *const kind_name[N_KINDS] = {"HTTP/1.1 headers", "HTTP/1.1 body", "HTTP/2 DATA",
                                               "HTTP/2 CONTINUATION"};

typedef struct trickler {
    int fd;
    kind k;
    double opened, closed; /* closed: 0 while open */
    uint8_t byte[9 + 1];   /* the next unit to send (an HTTP/2 frame of one byte, or a byte) */
    size_t byte_len;
} trickler;

static void put_frame_header(uint8_t *p, size_t len, uint8_t type, uint8_t flags, uint32_t sid)
{
    p[0] = (uint8_t)(len >> 16);
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    p[3] = type;
    p[4] = flags;
    p[5] = (uint8_t)(sid >> 24 & 0x7f);
    p[6] = (uint8_t)(sid >> 16);
    p[7] = (uint8_t)(sid >> 8);
    p[8] = (uint8_t)sid;
}

/* Sends all of buf; false on error. */
static bool send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
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

/* Opens a connection and sends the opening of a request of kind k. fd -1 when the connect
 * itself failed; a send failure leaves the trickler to notice the closed connection. */
static trickler open_trickler(kind k)
{
    trickler t = {.fd = fwt_connect(g_w->port), .k = k, .opened = fwt_now()};
    if (t.fd < 0)
        fail_msg("connect: %s", strerror(errno));
    static const char h1_partial[] = "POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    static const char h1_headers[] = "POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     "Content-Type: application/json\r\n"
                                     "Content-Length: 100000\r\n\r\n{";
    /* HPACK: :method POST, :scheme http (static indexes), :path, :authority, content-type
     * as literals with indexed names, no Huffman */
    static const uint8_t hpack[] = {0x83, 0x86, 0x04, 11,  '/', 'v',  '1', '/', 'a',  'n',
                                    'a',  'l',  'y',  'z', 'e', 0x01, 1,   'x', 0x0f, 0x10,
                                    16,   'a',  'p',  'p', 'l', 'i',  'c', 'a', 't',  'i',
                                    'o',  'n',  '/',  'j', 's', 'o',  'n'};
    uint8_t buf[256];
    size_t n = 0;
    switch (k) {
    case H1_HEADERS:
        memcpy(buf, h1_partial, sizeof h1_partial - 1);
        n = sizeof h1_partial - 1;
        memcpy(t.byte, "X", 1); /* an endless header line */
        t.byte_len = 1;
        break;
    case H1_BODY:
        memcpy(buf, h1_headers, sizeof h1_headers - 1);
        n = sizeof h1_headers - 1;
        memcpy(t.byte, " ", 1);
        t.byte_len = 1;
        break;
    case H2_DATA:
    case H2_CONTINUATION: {
        static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        memcpy(buf, preface, sizeof preface - 1);
        n = sizeof preface - 1;
        put_frame_header(buf + n, 0, 0x4, 0, 0); /* SETTINGS, empty */
        n += 9;
        size_t hl = k == H2_DATA ? sizeof hpack : sizeof hpack - 1; /* CONTINUATION: 'n' */
        /* HEADERS: END_HEADERS for H2_DATA (body follows), neither flag otherwise */
        put_frame_header(buf + n, hl, 0x1, k == H2_DATA ? 0x4 : 0x0, 1);
        n += 9;
        memcpy(buf + n, hpack, hl);
        n += hl;
        if (k == H2_DATA) {
            put_frame_header(t.byte, 1, 0x0, 0, 1); /* DATA, no END_STREAM */
            t.byte[9] = ' ';
        } else {
            /* CONTINUATION of one byte without END_HEADERS: the first completes the
             * content-type value, the following ones add a junk byte to the block the server
             * keeps buffering until END_HEADERS (or its 8 KiB header limit, hours away at
             * this rate) */
            put_frame_header(t.byte, 1, 0x9, 0, 1);
            t.byte[9] = 'n';
        }
        t.byte_len = 10;
        break;
    }
    default:
        fail_msg("bad kind");
    }
    if (!send_all(t.fd, buf, n))
        t.closed = fwt_now();
    return t;
}

/* Reads whatever arrived without blocking; true when the server closed the connection. */
static bool server_closed(int fd)
{
    char buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0)
            return true;
        if (n < 0)
            return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
        /* an answer (e.g. 408, or HTTP/2 SETTINGS / WINDOW_UPDATE / GOAWAY): keep reading */
    }
}

typedef struct trickle_run {
    trickler *t;
    size_t n;
    double timeout_s;
    int peak_fds;   /* out: the worker's highest fd count seen */
    bool timed_out; /* out: some connection was still open at the deadline */
} trickle_run;

/* Trickles one unit on every open connection each TICK_MS until all are closed or the
 * deadline passes; records when each closed and the worker's peak fd count. Never asserts
 * (runs on its own thread while the test's thread plays a normal client). */
static void *trickle_until_closed(void *arg)
{
    trickle_run *run = arg;
    trickler *t = run->t;
    double deadline = fwt_now() + run->timeout_s * fwt_time_scale();
    run->peak_fds = worker_fds();
    for (;;) {
        size_t open = 0;
        for (size_t i = 0; i < run->n; i++) {
            if (t[i].closed)
                continue;
            if (server_closed(t[i].fd) || !send_all(t[i].fd, t[i].byte, t[i].byte_len)) {
                t[i].closed = fwt_now();
                close(t[i].fd);
                t[i].fd = -1;
                continue;
            }
            open++;
        }
        int fds = worker_fds();
        if (fds > run->peak_fds)
            run->peak_fds = fds;
        if (!open)
            return NULL;
        if (fwt_now() > deadline) {
            run->timed_out = true;
            return NULL;
        }
        /* wait for the next tick or a hang-up on any connection */
        struct pollfd p[64];
        nfds_t np = 0;
        for (size_t i = 0; i < run->n && np < 64; i++)
            if (!t[i].closed)
                p[np++] = (struct pollfd){.fd = t[i].fd, .events = POLLIN};
        poll(p, np, TICK_MS);
    }
}

static void trickle_start(trickle_run *run, pthread_t *th)
{
    assert_int_equal(pthread_create(th, NULL, trickle_until_closed, run), 0);
}

/* Joins the trickler thread and fails the test when a connection outlived the deadline. */
static void trickle_join(trickle_run *run, pthread_t th)
{
    assert_int_equal(pthread_join(th, NULL), 0);
    for (size_t i = 0; run->timed_out && i < run->n; i++)
        if (!run->t[i].closed)
            fail_msg("%s connection %zu still open %.1f s after it opened (kept trickling past "
                     "--read-timeout %.1f s)",
                     kind_name[run->t[i].k], i, fwt_now() - run->t[i].opened, READ_TIMEOUT_S);
}

/* ---------------------------------------------------------------------------------------- */
/* tests                                                                                    */

static int setup(void **state)
{
    (void)state;
    static const char *const args[] = {
        "--read-timeout", "1s", "--max-connections", "8", "--http-threads", "1", NULL};
    g_w = fwt_worker_start(args);
    /* one request of each protocol first, so that whatever the worker opens lazily on its
     * first inference is open before the idle fd count is taken */
    serve_normal_client(FWT_H1);
    serve_normal_client(FWT_H2);
    /* the idle count: the clients above have closed their connections; the worker notices
     * at once, so the count settles (to a minimum) within the deadline */
    int prev = worker_fds(), stable = 0;
    double deadline = fwt_now() + 5 * fwt_time_scale();
    while (stable < 5 && fwt_now() < deadline) {
        fwt_pause_ms(20);
        int n = worker_fds();
        stable = n == prev ? stable + 1 : 0;
        prev = n;
    }
    g_idle_fds = prev;
    assert_true(g_idle_fds > 0);
    return 0;
}

/* Four tricklers (half the cap, one of each kind) while a normal client is served over both
 * protocols; then all four are cut off despite trickling, not before --read-timeout. */
static void test_tricklers_cut_off_others_served(void **state)
{
    (void)state;
    trickler t[N_KINDS];
    for (int k = 0; k < N_KINDS; k++)
        t[k] = open_trickler((kind)k);
    trickle_run run = {.t = t, .n = N_KINDS, .timeout_s = READ_TIMEOUT_S * 1.5 + 3};
    pthread_t th;
    trickle_start(&run, &th);
    serve_normal_client(FWT_H1); /* while the tricklers trickle */
    serve_normal_client(FWT_H2);
    trickle_join(&run, th);
    int peak = run.peak_fds;
    for (int k = 0; k < N_KINDS; k++) {
        double held = t[k].closed - t[k].opened;
        print_message("  %-20s cut off after %.2f s\n", kind_name[k], held);
        if (held < READ_TIMEOUT_S * 0.9)
            fail_msg("%s connection closed after %.2f s, before --read-timeout", kind_name[k],
                     held);
    }
    assert_true(peak <= g_idle_fds + MAX_CONNS + FD_SLACK);
    serve_normal_client(FWT_H1);
    serve_normal_client(FWT_H2);
    int fds = wait_fds_at_most(g_idle_fds, 5);
    if (fds > g_idle_fds)
        fail_msg("worker fds: %d, idle %d", fds, g_idle_fds);
}

/* Three times the cap in tricklers: those over --max-connections are closed at once, the
 * worker's fds stay bounded, every admitted one is cut off after --read-timeout, and then the
 * worker serves normally with its idle fd count. */
static void test_max_connections_caps_fds(void **state)
{
    (void)state;
    enum { N = 3 * MAX_CONNS };
    trickler t[N];
    for (int i = 0; i < N; i++)
        t[i] = open_trickler((kind)(i % N_KINDS));
    trickle_run run = {.t = t, .n = N, .timeout_s = READ_TIMEOUT_S * 1.5 + 3};
    pthread_t th;
    trickle_start(&run, &th);
    trickle_join(&run, th);
    int peak = run.peak_fds;
    int early = 0, cut = 0;
    for (int i = 0; i < N; i++) {
        double held = t[i].closed - t[i].opened;
        if (held < READ_TIMEOUT_S * 0.9)
            early++; /* refused: over the cap */
        else
            cut++;
    }
    print_message("  %d connections: %d refused at once, %d cut off at --read-timeout; worker "
                  "fds idle %d, peak %d\n",
                  N, early, cut, g_idle_fds, peak);
    assert_true(cut <= MAX_CONNS);
    assert_true(early >= N - MAX_CONNS);
    if (peak > g_idle_fds + MAX_CONNS + FD_SLACK)
        fail_msg("worker fds peaked at %d: idle %d + --max-connections %d + %d", peak, g_idle_fds,
                 MAX_CONNS, FD_SLACK);
    int fds = wait_fds_at_most(g_idle_fds, 5);
    if (fds > g_idle_fds)
        fail_msg("worker fds: %d after the tricklers left, idle %d", fds, g_idle_fds);
    serve_normal_client(FWT_H1);
    serve_normal_client(FWT_H2);
    json_t *h = fwt_wait_healthy(g_w, 10);
    json_decref(h);
}

static void test_shutdown_clean(void **state)
{
    (void)state;
    assert_int_equal(fwt_worker_stop(g_w, SIGTERM, 40), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tricklers_cut_off_others_served),
        cmocka_unit_test(test_max_connections_caps_fds),
        cmocka_unit_test(test_shutdown_clean),
    };
    return cmocka_run_group_tests(tests, setup, fwt_teardown);
}
