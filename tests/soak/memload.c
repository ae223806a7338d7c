/* fw_memload: hostile load aimed at a running worker's memory (scripts/memory-bound.sh).
 *
 * Phases (--phase):
 *  bodies  each of --clients threads uploads, again and again, a multipart body of
 *          --body-bytes made of "image" parts of at most --part-bytes random bytes, sent at a
 *          rate that spreads it over --send-seconds (libcurl's send speed limit), so that
 *          every connection holds a nearly whole body at the same time; HTTP/1.1 and HTTP/2
 *          (prior knowledge) alternate. Expected answers: 200 (item errors) or 413.
 *  bombs   each thread posts, again and again, --images PNGs of --pixels pixels each (a
 *          square, one colour: a few hundred KiB encoded, 3 bytes a pixel decoded).
 *          Expected: 200 (no faces), or 503 when the queue is full.
 *  h2streams  like bodies (one part of --body-bytes), but the --clients uploads are
 *          concurrent streams of ONE HTTP/2 connection (prior knowledge): what a single
 *          client connection can make the worker hold.
 * For --seconds, then waits for the requests in flight. Before starting it resets the
 * worker's peak RSS (writes 5 to /proc/PID/clear_refs) and samples VmRSS every 20 ms; it
 * prints one markdown table row: phase, clients, requests by status, the worker's peak RSS
 * (VmHWM, and the sampled peak) and its RSS at the end, in MiB.
 *
 * usage: fw_memload --url http://127.0.0.1:PORT --pid PID --phase bodies|bombs
 *                   [--clients N] [--seconds S] [--body-bytes N] [--part-bytes N]
 *                   [--send-seconds S] [--pixels N] [--images K] [--label TEXT] */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

typedef struct opts {
    const char *url, *phase, *label;
    long pid;
    int clients, images;
    double seconds, send_seconds;
    size_t body_bytes, part_bytes, pixels;
} opts;

static opts g_o;
static atomic_bool g_stop;
static atomic_long g_status[6]; /* 0: none, 2xx, 3xx, 4xx (not 413), 413, 5xx */
static atomic_long g_requests;
static atomic_bool g_done;
static long g_peak; /* sampled VmRSS peak, kB (sampler thread only until joined) */
static uint8_t *g_png;
static size_t g_png_len;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static long proc_kb(const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", g_o.pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl)) {
            kb = strtol(line + fl, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* ---------------------------------------------------------------------------------------- */
/* a PNG of one colour, streamed through deflate row by row                                 */

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

typedef struct obuf {
    uint8_t *p;
    size_t n, cap;
} obuf;

static void out(obuf *o, const void *d, size_t n)
{
    if (o->n + n > o->cap) {
        size_t cap = o->cap ? o->cap : 1 << 16;
        while (cap < o->n + n)
            cap *= 2;
        uint8_t *p = realloc(o->p, cap);
        if (!p) {
            fprintf(stderr, "fw_memload: out of memory\n");
            exit(2);
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->n, d, n);
    o->n += n;
}

static void chunk(obuf *o, const char *type, const uint8_t *d, size_t n)
{
    uint8_t h[8];
    put32(h, (uint32_t)n);
    memcpy(h + 4, type, 4);
    out(o, h, 8);
    out(o, d, n);
    uint32_t crc = (uint32_t)crc32(0, (const Bytef *)type, 4);
    crc = (uint32_t)crc32(crc, d, (uInt)n);
    uint8_t c[4];
    put32(c, crc);
    out(o, c, 4);
}

/* An RGB PNG of w x h pixels, all one colour. */
static uint8_t *make_png(uint32_t w, uint32_t h, size_t *len)
{
    obuf o = {0};
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    out(&o, sig, 8);
    uint8_t ihdr[13] = {0};
    put32(ihdr, w);
    put32(ihdr + 4, h);
    ihdr[8] = 8; /* bit depth */
    ihdr[9] = 2; /* RGB */
    chunk(&o, "IHDR", ihdr, 13);
    size_t row_len = 1 + (size_t)w * 3;
    uint8_t *row = malloc(row_len);
    obuf z = {0};
    uint8_t zout[1 << 16];
    z_stream s;
    memset(&s, 0, sizeof s);
    deflateInit(&s, 9);
    row[0] = 0; /* filter: none */
    for (size_t i = 1; i < row_len; i += 3)
        row[i] = 200, row[i + 1] = 180, row[i + 2] = 160;
    for (uint32_t y = 0; y < h; y++) {
        s.next_in = row;
        s.avail_in = (uInt)row_len;
        int flush = y + 1 == h ? Z_FINISH : Z_NO_FLUSH;
        do {
            s.next_out = zout;
            s.avail_out = sizeof zout;
            deflate(&s, flush);
            out(&z, zout, sizeof zout - s.avail_out);
        } while (s.avail_out == 0 || (flush == Z_FINISH && s.avail_in));
    }
    deflateEnd(&s);
    free(row);
    chunk(&o, "IDAT", z.p, z.n);
    free(z.p);
    chunk(&o, "IEND", NULL, 0);
    *len = o.n;
    return o.p;
}

/* ---------------------------------------------------------------------------------------- */
/* clients                                                                                  */

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void)p, (void)u;
    return s * n;
}

static void count_status(long st)
{
    int k = st == 0 ? 0 : st == 413 ? 4 : st >= 500 ? 5 : st >= 400 ? 3 : st >= 300 ? 2 : 1;
    atomic_fetch_add(&g_status[k], 1);
    atomic_fetch_add(&g_requests, 1);
}

static void *client(void *arg)
{
    int id = (int)(intptr_t)arg;
    bool bodies = strcmp(g_o.phase, "bombs") != 0;
    uint8_t *junk = NULL;
    size_t n_parts = 0, part = 0;
    if (bodies) {
        part = g_o.part_bytes;
        n_parts = g_o.body_bytes / (part + 200); /* ~200 bytes of multipart framing each */
        if (!n_parts)
            n_parts = 1, part = g_o.body_bytes > 400 ? g_o.body_bytes - 400 : 1;
        junk = malloc(part);
        uint32_t x = 0x12345u + (uint32_t)id;
        for (size_t i = 0; i < part; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            junk[i] = (uint8_t)x;
        }
    }
    char url[256];
    snprintf(url, sizeof url, "%s/v1/analyze", g_o.url);
    for (int round = 0; !atomic_load(&g_stop); round++) {
        CURL *e = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT, 600L);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                         (round + id) % 2 ? (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                                          : (long)CURL_HTTP_VERSION_1_1);
        curl_mime *m = curl_mime_init(e);
        size_t n = bodies ? n_parts : (size_t)g_o.images;
        for (size_t i = 0; i < n; i++) {
            curl_mimepart *p = curl_mime_addpart(m);
            char name[32];
            snprintf(name, sizeof name, "p%zu.%s", i, bodies ? "jpg" : "png");
            curl_mime_name(p, "image");
            curl_mime_filename(p, name);
            curl_mime_type(p, bodies ? "image/jpeg" : "image/png");
            curl_mime_data(p, bodies ? (const char *)junk : (const char *)g_png,
                           bodies ? part : g_png_len);
        }
        curl_easy_setopt(e, CURLOPT_MIMEPOST, m);
        if (bodies && g_o.send_seconds > 0)
            curl_easy_setopt(e, CURLOPT_MAX_SEND_SPEED_LARGE,
                             (curl_off_t)((double)g_o.body_bytes / g_o.send_seconds));
        long st = 0;
        if (curl_easy_perform(e) == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &st);
        count_status(st);
        curl_mime_free(m);
        curl_easy_cleanup(e);
    }
    free(junk);
    return NULL;
}

/* The h2streams phase: rounds of --clients uploads multiplexed on one HTTP/2 connection,
 * spoken directly (libcurl 7.88 cannot multiplex uploads over prior knowledge: "Error in the
 * HTTP2 framing layer"). Each stream: HEADERS, then its multipart body in DATA frames paced
 * over --send-seconds within the flow-control windows the server grants. */
#define H2_BOUNDARY "fwmemload0c7b1e"

static void h2_frame(uint8_t *p, size_t len, uint8_t type, uint8_t flags, uint32_t sid)
{
    p[0] = (uint8_t)(len >> 16), p[1] = (uint8_t)(len >> 8), p[2] = (uint8_t)len;
    p[3] = type, p[4] = flags;
    put32(p + 5, sid & 0x7fffffffu);
}

static bool h2_send(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n, len -= (size_t)n;
    }
    return true;
}

typedef struct h2s {
    size_t sent;
    int64_t window;
    bool done; /* answered or reset */
} h2s;

static void h2_round(const char *host, int port, const uint8_t *body, size_t body_len)
{
    int n = g_o.clients;
    h2s *st = calloc((size_t)n, sizeof *st);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        for (int i = 0; i < n; i++)
            count_status(0);
        if (fd >= 0)
            close(fd);
        free(st);
        return;
    }
    uint8_t buf[16384 + 64];
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    bool ok = h2_send(fd, preface, sizeof preface - 1);
    h2_frame(buf, 0, 0x4, 0, 0);
    ok = ok && h2_send(fd, buf, 9);
    static const char ct[] = "multipart/form-data; boundary=" H2_BOUNDARY;
    uint8_t hb[128];
    size_t hl = 0;
    hb[hl++] = 0x83;                /* :method POST */
    hb[hl++] = 0x86;                /* :scheme http */
    hb[hl++] = 0x04, hb[hl++] = 11; /* :path */
    memcpy(hb + hl, "/v1/analyze", 11), hl += 11;
    hb[hl++] = 0x01, hb[hl++] = 1, hb[hl++] = 'x';                         /* :authority */
    hb[hl++] = 0x0f, hb[hl++] = 0x10, hb[hl++] = (uint8_t)(sizeof ct - 1); /* content-type */
    memcpy(hb + hl, ct, sizeof ct - 1), hl += sizeof ct - 1;
    for (int i = 0; ok && i < n; i++) {
        h2_frame(buf, hl, 0x1, 0x4, (uint32_t)(2 * i + 1));
        memcpy(buf + 9, hb, hl);
        ok = h2_send(fd, buf, 9 + hl);
        st[i].window = 65535; /* until the server's SETTINGS say otherwise */
    }
    int64_t conn_window = 65535;
    double t0 = now_s(), rate = g_o.send_seconds > 0 ? (double)body_len / g_o.send_seconds : 1e12;
    int answered = 0;
    uint8_t in[1 << 16];
    size_t in_len = 0;
    while (ok && answered < n && now_s() - t0 < 600) {
        /* send what the pace and the windows allow */
        double allowed = rate * (now_s() - t0);
        for (int i = 0; ok && i < n; i++) {
            while (ok && !st[i].done && st[i].sent < body_len && (double)st[i].sent < allowed) {
                size_t chunk = body_len - st[i].sent;
                if (chunk > 16384)
                    chunk = 16384;
                if ((int64_t)chunk > st[i].window)
                    chunk = st[i].window > 0 ? (size_t)st[i].window : 0;
                if ((int64_t)chunk > conn_window)
                    chunk = conn_window > 0 ? (size_t)conn_window : 0;
                if (!chunk)
                    break;
                bool last = st[i].sent + chunk == body_len;
                h2_frame(buf, chunk, 0x0, last ? 0x1 : 0, (uint32_t)(2 * i + 1));
                memcpy(buf + 9, body + st[i].sent, chunk);
                ok = h2_send(fd, buf, 9 + chunk);
                st[i].sent += chunk, st[i].window -= (int64_t)chunk, conn_window -= (int64_t)chunk;
            }
        }
        /* read frames: windows, settings, answers */
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 20) <= 0)
            continue;
        ssize_t r = recv(fd, in + in_len, sizeof in - in_len, 0);
        if (r <= 0)
            break;
        in_len += (size_t)r;
        size_t off = 0;
        while (in_len - off >= 9) {
            const uint8_t *f = in + off;
            size_t len = (size_t)f[0] << 16 | (size_t)f[1] << 8 | f[2];
            if (in_len - off < 9 + len)
                break;
            uint8_t type = f[3], flags = f[4];
            uint32_t sid =
                ((uint32_t)f[5] << 24 | (uint32_t)f[6] << 16 | (uint32_t)f[7] << 8 | f[8]) &
                0x7fffffffu;
            const uint8_t *pl = f + 9;
            int idx = sid ? (int)(sid - 1) / 2 : -1;
            if (type == 0x4 && !(flags & 0x1)) { /* SETTINGS: apply the initial window, ack */
                for (size_t k = 0; k + 6 <= len; k += 6)
                    if ((pl[k] << 8 | pl[k + 1]) == 0x4) {
                        int64_t w =
                            (int64_t)((uint32_t)pl[k + 2] << 24 | (uint32_t)pl[k + 3] << 16 |
                                      (uint32_t)pl[k + 4] << 8 | pl[k + 5]);
                        for (int i = 0; i < n; i++)
                            st[i].window += w - 65535;
                    }
                h2_frame(buf, 0, 0x4, 0x1, 0);
                ok = ok && h2_send(fd, buf, 9);
            } else if (type == 0x8 && len == 4) { /* WINDOW_UPDATE */
                int64_t inc = (int64_t)(((uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 |
                                         (uint32_t)pl[2] << 8 | pl[3]) &
                                        0x7fffffffu);
                if (!sid)
                    conn_window += inc;
                else if (idx >= 0 && idx < n)
                    st[idx].window += inc;
            } else if ((type == 0x1 || type == 0x3) && idx >= 0 && idx < n && !st[idx].done) {
                long status = 0; /* HEADERS: :status 200 is static index 8 */
                if (type == 0x1)
                    status = len && pl[(flags & 0x8) ? 1 : 0] == 0x88 ? 200
                             : memmem(pl, len, "413", 3)              ? 413
                             : memmem(pl, len, "503", 3)              ? 503
                                                                      : 400;
                count_status(status); /* RST_STREAM: no answer */
                st[idx].done = true;
                answered++;
            } else if (type == 0x7) { /* GOAWAY */
                ok = false;
            }
            off += 9 + len;
        }
        memmove(in, in + off, in_len - off);
        in_len -= off;
    }
    for (int i = 0; i < n; i++)
        if (!st[i].done)
            count_status(0);
    close(fd);
    free(st);
}

static void h2streams(double t0)
{
    char host[64] = "127.0.0.1";
    int port = 0;
    const char *hp = strstr(g_o.url, "//");
    if (hp && sscanf(hp + 2, "%63[^:]:%d", host, &port) != 2)
        port = 0;
    static const char pre[] =
        "--" H2_BOUNDARY "\r\nContent-Disposition: form-data; "
        "name=\"image\"; filename=\"j.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n";
    static const char post[] = "\r\n--" H2_BOUNDARY "--\r\n";
    size_t body_len = g_o.body_bytes;
    uint8_t *body = malloc(body_len);
    uint32_t x = 0x2545f491u;
    for (size_t i = 0; i < body_len; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        body[i] = (uint8_t)x;
    }
    memcpy(body, pre, sizeof pre - 1);
    memcpy(body + body_len - (sizeof post - 1), post, sizeof post - 1);
    while (port > 0 && now_s() - t0 < g_o.seconds)
        h2_round(host, port, body, body_len);
    free(body);
}

/* Samples the worker's VmRSS every 20 ms until g_done. */
static void *sampler(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_done)) {
        long r = proc_kb("VmRSS:");
        if (r > g_peak)
            g_peak = r;
        pause_ms(20);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    g_o = (opts){.clients = 8,
                 .images = 16,
                 .seconds = 60,
                 .send_seconds = 5,
                 .body_bytes = (size_t)60 << 20,
                 .part_bytes = (size_t)19 << 20,
                 .pixels = 49000000,
                 .label = ""};
    static const struct option lo[] = {
        {"url", 1, 0, 'u'},        {"pid", 1, 0, 'p'},          {"phase", 1, 0, 'P'},
        {"clients", 1, 0, 'c'},    {"seconds", 1, 0, 's'},      {"body-bytes", 1, 0, 'b'},
        {"part-bytes", 1, 0, 'B'}, {"send-seconds", 1, 0, 'S'}, {"pixels", 1, 0, 'x'},
        {"images", 1, 0, 'i'},     {"label", 1, 0, 'l'},        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'u':
            g_o.url = optarg;
            break;
        case 'p':
            g_o.pid = atol(optarg);
            break;
        case 'P':
            g_o.phase = optarg;
            break;
        case 'c':
            g_o.clients = atoi(optarg);
            break;
        case 's':
            g_o.seconds = atof(optarg);
            break;
        case 'b':
            g_o.body_bytes = (size_t)atoll(optarg);
            break;
        case 'B':
            g_o.part_bytes = (size_t)atoll(optarg);
            break;
        case 'S':
            g_o.send_seconds = atof(optarg);
            break;
        case 'x':
            g_o.pixels = (size_t)atoll(optarg);
            break;
        case 'i':
            g_o.images = atoi(optarg);
            break;
        case 'l':
            g_o.label = optarg;
            break;
        default:
            return 2;
        }
    }
    if (!g_o.url || g_o.pid <= 0 || !g_o.phase ||
        (strcmp(g_o.phase, "bodies") && strcmp(g_o.phase, "bombs") &&
         strcmp(g_o.phase, "h2streams")) ||
        g_o.clients < 1 || g_o.clients > 512 || g_o.images < 1 || g_o.part_bytes < 1) {
        fprintf(stderr, "usage: fw_memload --url URL --pid PID --phase bodies|bombs [...]\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!strcmp(g_o.phase, "bombs")) {
        uint32_t side = 1;
        while ((size_t)(side + 1) * (side + 1) <= g_o.pixels)
            side++;
        g_png = make_png(side, side, &g_png_len);
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/clear_refs", g_o.pid);
    FILE *cr = fopen(path, "w");
    bool hwm_reset = cr && fputs("5", cr) >= 0;
    if (cr && fclose(cr) != 0)
        hwm_reset = false;
    long rss0 = proc_kb("VmRSS:");
    g_peak = rss0;
    pthread_t th[512], sth;
    pthread_create(&sth, NULL, sampler, NULL);
    bool multiplexed = !strcmp(g_o.phase, "h2streams");
    double t0 = now_s();
    if (multiplexed) {
        h2streams(t0);
    } else {
        for (int i = 0; i < g_o.clients; i++)
            pthread_create(&th[i], NULL, client, (void *)(intptr_t)i);
        while (now_s() - t0 < g_o.seconds && proc_kb("VmRSS:") >= 0)
            pause_ms(100);
        atomic_store(&g_stop, true);
        for (int i = 0; i < g_o.clients; i++) /* the requests in flight finish */
            pthread_join(th[i], NULL);
    }
    atomic_store(&g_done, true);
    pthread_join(sth, NULL);
    long r = proc_kb("VmRSS:"), peak = g_peak;
    long hwm = hwm_reset ? proc_kb("VmHWM:") : -1;
    bool alive = r >= 0;
    char what[160];
    if (!strcmp(g_o.phase, "bodies"))
        snprintf(what, sizeof what, "bodies of %.0f MiB over %.0f s", g_o.body_bytes / 1048576.0,
                 g_o.send_seconds);
    else if (multiplexed)
        snprintf(what, sizeof what, "bodies of %.0f MiB over %.0f s, all on one HTTP/2 connection",
                 g_o.body_bytes / 1048576.0, g_o.send_seconds);
    else
        snprintf(what, sizeof what, "%d PNGs of %.1f MP (%zu KiB each)", g_o.images,
                 g_o.pixels / 1e6, g_png_len >> 10);
    printf("| %s | %s | %d | %ld | %ld/%ld/%ld/%ld/%ld | %.0f | %.0f | %.0f | %s |\n", g_o.label,
           what, g_o.clients, atomic_load(&g_requests), atomic_load(&g_status[1]),
           atomic_load(&g_status[4]), atomic_load(&g_status[3]), atomic_load(&g_status[5]),
           atomic_load(&g_status[0]), rss0 / 1024.0, (hwm > peak ? hwm : peak) / 1024.0, r / 1024.0,
           alive ? "alive" : "**died**");
    free(g_png);
    curl_global_cleanup();
    return alive ? 0 : 1;
}
