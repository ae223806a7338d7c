/* fw_soak: a long run of the real worker under mixed, hostile load (make soak).
 *
 * Starts `facework worker` (the real binary, 127.0.0.1 on an ephemeral port read from
 * --port-file, its own lock file and log in a temporary directory), takes a reference answer
 * for each sample photo, notes the worker's idle fd count, then for --seconds keeps up:
 *  - good clients (--clients threads): multipart POST /v1/analyze of 1..--images photos,
 *    HTTP/1.1 keep-alive on even threads, HTTP/2 prior knowledge (a connection per request)
 *    on odd ones; every answer must be 200 with, per image, the reference's face count;
 *  - a bad client: garbage bytes as the image (200 + per-item error), a truncated JPEG
 *    (200, one result), malformed multipart (400), invalid JSON (400);
 *  - a slow client: a whole request trickled over ~2 s, within --read-timeout, over a raw
 *    socket; it must be answered correctly;
 *  - slowloris clients: 4 raw connections trickling HTTP/1.1 headers, an HTTP/1.1 body or
 *    HTTP/2 DATA one byte every 500 ms without end; each must be cut off by the worker
 *    within 1.5 x --read-timeout + 5 s;
 *  - a disconnecting client: closes mid-upload, right after sending a whole request, or
 *    (HTTP/2, libcurl) 50 ms into the request.
 * A sampler records the worker's VmRSS (/proc/PID/status) and open fds (/proc/PID/fd) every
 * --sample seconds. After the load: the fd count must come back to the idle count, /health
 * must answer 200, and SIGTERM must end the worker with status 0.
 *
 * Pass: no crash; every good (and slow) request answered correctly; bad requests get their
 * documented status; every slowloris connection cut off; RSS growth after warm-up below
 * --max-growth (median RSS over the last 10 % of the run vs. over 10..20 %, the first 10 %
 * being warm-up); fds back to idle. Prints a markdown summary (also to --report FILE) and
 * exits 0 on pass, 1 on fail, 2 on a usage or set-up error.
 *
 * usage: fw_soak [--seconds N] [--facework PATH] [--photos DIR] [--clients N] [--images K]
 *                [--read-timeout S] [--sample S] [--max-growth F] [--report FILE]
 *                [--samples FILE.tsv] [-- extra worker arguments]
 * Environment: SOAK_SECONDS (default 1800), FW_FACEWORK, FW_PHOTOS_DIR. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N_PHOTOS 6
#define BOUNDARY "fwsoak5c0e2b9d417a"
#define MAX_FAIL_NOTES 8
#define N_LORIS 4

/* ---------------------------------------------------------------------------------------- */
/* options, global state                                                                    */

typedef struct opts {
    double seconds, read_timeout, sample, max_growth;
    int clients, images;
    const char *facework, *photos, *report, *samples;
    char **worker_args; /* after "--" */
    int n_worker_args;
} opts;

static opts g_o;
static atomic_bool g_stop;
static pid_t g_pid = -1;
static char g_dir[64] = "";
static char g_url[96];
static int g_port;

typedef struct photo {
    uint8_t *data;
    size_t len;
    int faces; /* reference answer */
} photo;
static photo g_photos[N_PHOTOS];

/* A kind of request: counts and the first failures. */
typedef struct stat_kind {
    const char *name;
    atomic_long sent, ok, failed;
    pthread_mutex_t mu;
    char notes[MAX_FAIL_NOTES][200];
    int n_notes;
} stat_kind;

enum {
    K_GOOD,
    K_GARBAGE,
    K_TRUNCATED,
    K_BAD_MULTIPART,
    K_BAD_JSON,
    K_SLOW,
    K_LORIS,
    K_DISC_UPLOAD,
    K_DISC_SENT,
    K_DISC_H2,
    N_KINDS
};

static stat_kind g_k[N_KINDS] = {
    [K_GOOD] = {.name = "good: multipart /v1/analyze, 1-K photos (H1 keep-alive, H2)"},
    [K_GARBAGE] = {.name = "bad: garbage bytes as the image (200 + item error)"},
    [K_TRUNCATED] = {.name = "bad: truncated JPEG (200, one result)"},
    [K_BAD_MULTIPART] = {.name = "bad: malformed multipart (400)"},
    [K_BAD_JSON] = {.name = "bad: invalid JSON (400)"},
    [K_SLOW] = {.name = "slow: whole request trickled over ~2 s (answered)"},
    [K_LORIS] = {.name = "slowloris: trickling without end (cut off)"},
    [K_DISC_UPLOAD] = {.name = "disconnect mid-upload"},
    [K_DISC_SENT] = {.name = "disconnect after sending, before the answer"},
    [K_DISC_H2] = {.name = "disconnect 50 ms into an HTTP/2 request"},
};

/* good-request latencies (s) and images, and slowloris cut-off times */
typedef struct dvec {
    double *v;
    size_t n, cap;
    pthread_mutex_t mu;
} dvec;
static dvec g_lat = {.mu = PTHREAD_MUTEX_INITIALIZER};
static dvec g_cut = {.mu = PTHREAD_MUTEX_INITIALIZER};
static atomic_long g_images;

typedef struct sample {
    double t;
    long rss_kb, fds;
    long good;
} sample;
static sample *g_samples;
static size_t g_n_samples, g_cap_samples;
static pthread_mutex_t g_samples_mu = PTHREAD_MUTEX_INITIALIZER;

static double g_t0; /* load start */

/* ---------------------------------------------------------------------------------------- */
/* small helpers                                                                            */

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

static void cleanup_worker(void)
{
    if (g_pid > 0) {
        kill(g_pid, SIGKILL);
        waitpid(g_pid, NULL, 0);
        g_pid = -1;
    }
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fw_soak: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    cleanup_worker();
    exit(2);
}

static void dvec_push(dvec *d, double x)
{
    pthread_mutex_lock(&d->mu);
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1024;
        double *v = realloc(d->v, cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&d->mu);
            return;
        }
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = x;
    pthread_mutex_unlock(&d->mu);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of v[0..n) (sorts v); NAN when empty. */
static double quantile(double *v, size_t n, double q)
{
    if (!n)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static void record(int k, bool ok, const char *fmt, ...)
{
    atomic_fetch_add(&g_k[k].sent, 1);
    if (ok) {
        atomic_fetch_add(&g_k[k].ok, 1);
        return;
    }
    atomic_fetch_add(&g_k[k].failed, 1);
    pthread_mutex_lock(&g_k[k].mu);
    if (g_k[k].n_notes < MAX_FAIL_NOTES) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_k[k].notes[g_k[k].n_notes++], sizeof g_k[k].notes[0], fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&g_k[k].mu);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = buf ? (size_t)n : 0;
    return buf;
}

/* xorshift per thread */
static uint32_t rnd(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* ---------------------------------------------------------------------------------------- */
/* the worker process                                                                       */

static long proc_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static long proc_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static bool worker_alive(int *wstatus)
{
    if (g_pid <= 0)
        return false;
    pid_t r = waitpid(g_pid, wstatus, WNOHANG);
    if (r == g_pid) {
        g_pid = -1;
        return false;
    }
    return true;
}

static void start_worker(void)
{
    char tmpl[] = "/tmp/fw-soak-XXXXXX";
    if (!mkdtemp(tmpl))
        die("mkdtemp: %s", strerror(errno));
    snprintf(g_dir, sizeof g_dir, "%s", tmpl);
    char port_file[128], lock_file[128], log_file[128], rt[32];
    snprintf(port_file, sizeof port_file, "%s/port", g_dir);
    snprintf(lock_file, sizeof lock_file, "%s/worker.lock", g_dir);
    snprintf(log_file, sizeof log_file, "%s/worker.log", g_dir);
    snprintf(rt, sizeof rt, "%gs", g_o.read_timeout);
    const char *argv[64 + 16];
    int n = 0;
    argv[n++] = g_o.facework;
    argv[n++] = "worker";
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--port-file";
    argv[n++] = port_file;
    argv[n++] = "--lock-file";
    argv[n++] = lock_file;
    argv[n++] = "--log-level";
    argv[n++] = "warn";
    argv[n++] = "--read-timeout";
    argv[n++] = rt;
    for (int i = 0; i < g_o.n_worker_args && n < 64 + 15; i++)
        argv[n++] = g_o.worker_args[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(log_file, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || null < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || dup2(null, 0) < 0)
            _exit(127);
        signal(SIGPIPE, SIG_DFL);
        execv(g_o.facework, (char *const *)argv);
        _exit(127);
    }
    g_pid = pid;
    double deadline = now_s() + 120;
    for (;;) {
        size_t len = 0;
        uint8_t *s = read_file(port_file, &len);
        char *nl = s ? memchr(s, '\n', len) : NULL;
        if (nl) {
            *nl = '\0';
            const char *colon = strrchr((char *)s, ':');
            g_port = colon ? atoi(colon + 1) : 0;
            free(s);
            if (g_port > 0)
                break;
        }
        free(s);
        int st;
        if (!worker_alive(&st))
            die("the worker exited (status %d) before it was ready; log: %s", st, log_file);
        if (now_s() > deadline)
            die("the worker was not ready within 120 s; log: %s", log_file);
        pause_ms(20);
    }
    snprintf(g_url, sizeof g_url, "http://127.0.0.1:%d", g_port);
}

/* ---------------------------------------------------------------------------------------- */
/* libcurl requests                                                                         */

typedef struct body {
    char *p;
    size_t n, cap;
} body;

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    body *b = user;
    size_t n = size * nmemb;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 8192;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, ptr, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

typedef struct part {
    const void *data;
    size_t len;
} part;

/* One request on easy (reset first): a multipart POST of n_parts "image" parts (JPEG) when
 * n_parts > 0, a POST of raw with Content-Type raw_type when raw is non-NULL, else a GET.
 * The body lands in *out. Returns the status (0: no answer; *rc_out says why). */
static long do_request(CURL *easy, const char *path, bool h2, const part *parts, int n_parts,
                       const void *raw, size_t raw_len, const char *raw_type, long timeout_ms,
                       body *out, CURLcode *rc_out)
{
    curl_easy_reset(easy);
    char url[160];
    snprintf(url, sizeof url, "%s%s", g_url, path);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION,
                     h2 ? (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE : (long)CURL_HTTP_VERSION_1_1);
    curl_mime *mime = NULL;
    struct curl_slist *hdrs = NULL;
    if (raw) {
        char ct[200];
        snprintf(ct, sizeof ct, "Content-Type: %s", raw_type);
        hdrs = curl_slist_append(hdrs, ct);
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)raw_len);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, raw);
    } else if (n_parts > 0) {
        mime = curl_mime_init(easy);
        for (int i = 0; i < n_parts; i++) {
            curl_mimepart *mp = curl_mime_addpart(mime);
            char fname[32];
            snprintf(fname, sizeof fname, "part%d.jpg", i);
            curl_mime_name(mp, "image");
            curl_mime_data(mp, parts[i].data, parts[i].len);
            curl_mime_filename(mp, fname);
            curl_mime_type(mp, "image/jpeg");
        }
        curl_easy_setopt(easy, CURLOPT_MIMEPOST, mime);
    } else {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    }
    out->n = 0;
    if (out->p)
        out->p[0] = '\0';
    CURLcode rc = curl_easy_perform(easy);
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_mime_free(mime);
    curl_slist_free_all(hdrs);
    if (rc_out)
        *rc_out = rc;
    return rc == CURLE_OK ? status : 0;
}

/* The parts for photos idx[0..n). */
static void photo_parts(const int *idx, int n, part *out)
{
    for (int i = 0; i < n; i++)
        out[i] = (part){g_photos[idx[i]].data, g_photos[idx[i]].len};
}

/* Checks a /v1/analyze answer for the photos parts[0..n): 200, n results, reference face
 * counts. why gets the reason on failure. */
static bool check_good(long status, const body *b, const int *parts, int n, char *why,
                       size_t why_len)
{
    if (status != 200) {
        snprintf(why, why_len, "status %ld: %.120s", status, b->p ? b->p : "");
        return false;
    }
    json_error_t je;
    json_t *j = json_loadb(b->p, b->n, 0, &je);
    json_t *res = json_object_get(j, "results");
    bool ok = json_is_array(res) && json_array_size(res) == (size_t)n;
    if (!ok)
        snprintf(why, why_len, "not %d results: %.120s", n, b->p ? b->p : "");
    for (int i = 0; ok && i < n; i++) {
        json_t *faces = json_object_get(json_array_get(res, (size_t)i), "faces");
        if (!json_is_array(faces) || json_array_size(faces) != (size_t)g_photos[parts[i]].faces) {
            snprintf(why, why_len, "image %d (sample%d): %zu faces, reference %d", i, parts[i] + 1,
                     json_is_array(faces) ? json_array_size(faces) : 0, g_photos[parts[i]].faces);
            ok = false;
        }
    }
    json_decref(j);
    return ok;
}

/* ---------------------------------------------------------------------------------------- */
/* raw sockets                                                                              */

static int connect_worker(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

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

/* An HTTP/1.1 request (Connection: close) for one photo as multipart: malloc'd. */
static uint8_t *h1_multipart_request(int ph, size_t *len, size_t *header_len)
{
    char head[512], pre[256];
    static const char post[] = "\r\n--" BOUNDARY "--\r\n";
    int pl = snprintf(pre, sizeof pre,
                      "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"image\"; "
                      "filename=\"s%d.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n",
                      ph + 1);
    size_t body_len = (size_t)pl + g_photos[ph].len + sizeof post - 1;
    int hl = snprintf(head, sizeof head,
                      "POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      "Content-Type: multipart/form-data; boundary=" BOUNDARY "\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      body_len);
    size_t n = (size_t)hl + body_len;
    uint8_t *r = malloc(n);
    if (!r)
        return NULL;
    memcpy(r, head, (size_t)hl);
    memcpy(r + hl, pre, (size_t)pl);
    memcpy(r + hl + pl, g_photos[ph].data, g_photos[ph].len);
    memcpy(r + hl + pl + g_photos[ph].len, post, sizeof post - 1);
    *len = n;
    *header_len = (size_t)hl;
    return r;
}

/* Reads a Connection: close response until EOF (deadline timeout_s). Returns the status and
 * the body in *b (0: no complete answer). */
static long read_h1_response(int fd, double timeout_s, body *b)
{
    body all = {0};
    double deadline = now_s() + timeout_s;
    char buf[16384];
    for (;;) {
        int left = (int)((deadline - now_s()) * 1000);
        if (left <= 0)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        on_write(buf, 1, (size_t)n, &all);
    }
    long status = 0;
    if (all.p && !strncmp(all.p, "HTTP/1.1 ", 9))
        status = strtol(all.p + 9, NULL, 10);
    char *eoh = all.p ? strstr(all.p, "\r\n\r\n") : NULL;
    b->n = 0;
    if (eoh)
        on_write(eoh + 4, 1, all.n - (size_t)(eoh + 4 - all.p), b);
    free(all.p);
    return eoh ? status : 0;
}

/* True when the server closed fd (EOF or reset); reads whatever else arrived. */
static bool server_closed(int fd)
{
    char buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0)
            return true;
        if (n < 0)
            return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* load threads                                                                             */

static void *good_client(void *arg)
{
    int id = (int)(intptr_t)arg;
    bool h2 = id % 2 == 1;
    uint32_t seed = 0x9e3779b9u * (uint32_t)(id + 1);
    CURL *easy = curl_easy_init(); /* HTTP/1.1: kept alive across requests */
    body b = {0};
    while (!atomic_load(&g_stop)) {
        int n = 1 + (int)(rnd(&seed) % (uint32_t)g_o.images), parts[64];
        for (int i = 0; i < n; i++)
            parts[i] = (int)(rnd(&seed) % N_PHOTOS);
        CURL *e = easy;
        if (h2) /* libcurl < 8 cannot reuse an idle prior-knowledge connection: a fresh one */
            e = curl_easy_init();
        double t = now_s();
        CURLcode rc;
        part pp[64];
        photo_parts(parts, n, pp);
        long st = do_request(e, "/v1/analyze", h2, pp, n, NULL, 0, NULL, 120000, &b, &rc);
        double dt = now_s() - t;
        if (h2)
            curl_easy_cleanup(e);
        char why[200];
        bool ok = check_good(st, &b, parts, n, why, sizeof why);
        record(K_GOOD, ok, "%s, %d images: %s%s%s", h2 ? "H2" : "H1", n, why,
               rc != CURLE_OK ? "; curl: " : "", rc != CURLE_OK ? curl_easy_strerror(rc) : "");
        if (ok) {
            dvec_push(&g_lat, dt);
            atomic_fetch_add(&g_images, n);
        }
    }
    curl_easy_cleanup(easy);
    free(b.p);
    return NULL;
}

static void *bad_client(void *arg)
{
    (void)arg;
    uint32_t seed = 12345;
    CURL *easy = curl_easy_init();
    body b = {0};
    uint8_t *garbage = malloc(65536);
    for (int round = 0; !atomic_load(&g_stop); round++) {
        int kind = K_GARBAGE + round % 4;
        long st = 0;
        bool ok = false;
        char why[200] = "";
        if (kind == K_GARBAGE || kind == K_TRUNCATED) {
            size_t len;
            const uint8_t *src;
            if (kind == K_GARBAGE) {
                len = 1 + rnd(&seed) % 65536;
                for (size_t i = 0; i < len; i++)
                    garbage[i] = (uint8_t)rnd(&seed);
                src = garbage;
            } else {
                const photo *p = &g_photos[rnd(&seed) % N_PHOTOS];
                len = p->len * (30 + rnd(&seed) % 50) / 100;
                src = p->data;
            }
            part pp = {src, len};
            st = do_request(easy, "/v1/analyze", false, &pp, 1, NULL, 0, NULL, 120000, &b, NULL);
            json_t *j = st == 200 ? json_loadb(b.p, b.n, 0, NULL) : NULL;
            json_t *res = json_object_get(j, "results");
            json_t *r0 = json_array_get(res, 0);
            ok = json_is_array(res) && json_array_size(res) == 1 &&
                 (kind == K_TRUNCATED || json_is_object(json_object_get(r0, "error")));
            json_decref(j);
        } else if (kind == K_BAD_MULTIPART) {
            static const char mp[] = "--elsewhere\r\nContent-Disposition: form-data; "
                                     "name=\"image\"\r\n\r\nxx\r\n--elsewhere";
            st = do_request(easy, "/v1/analyze", false, NULL, 0, mp, sizeof mp - 1,
                            "multipart/form-data; boundary=" BOUNDARY, 120000, &b, NULL);
            ok = st == 400;
        } else {
            static const char js[] = "{\"images\":[{\"id\":\"a\",\"data\":";
            st = do_request(easy, "/v1/analyze", false, NULL, 0, js, sizeof js - 1,
                            "application/json", 120000, &b, NULL);
            ok = st == 400;
        }
        if (!ok)
            snprintf(why, sizeof why, "status %ld: %.120s", st, b.p ? b.p : "");
        record(kind, ok, "%s", why);
        pause_ms(20); /* pacing: at most ~50 a second, so that good requests keep the CPU */
    }
    free(garbage);
    curl_easy_cleanup(easy);
    free(b.p);
    return NULL;
}

/* A whole request trickled in 20 pieces over ~2 s (well within --read-timeout), then its
 * answer checked. */
static void *slow_client(void *arg)
{
    (void)arg;
    uint32_t seed = 777;
    body b = {0};
    while (!atomic_load(&g_stop)) {
        int ph = (int)(rnd(&seed) % N_PHOTOS);
        size_t len, hl;
        uint8_t *req = h1_multipart_request(ph, &len, &hl);
        int fd = req ? connect_worker() : -1;
        bool sent = fd >= 0;
        size_t off = 0, piece = len / 20 + 1;
        while (sent && off < len) {
            size_t n = len - off < piece ? len - off : piece;
            sent = send_all(fd, req + off, n);
            off += n;
            if (off < len)
                pause_ms(100); /* the trickle itself, not a wait for state */
        }
        long st = sent ? read_h1_response(fd, 120, &b) : 0;
        char why[200] = "could not send";
        bool ok = sent && check_good(st, &b, &ph, 1, why, sizeof why);
        record(K_SLOW, ok, "%s", why);
        if (fd >= 0)
            close(fd);
        free(req);
    }
    free(b.p);
    return NULL;
}

/* N_LORIS connections that trickle forever; each must be cut off by the worker. */
static void *loris_client(void *arg)
{
    (void)arg;
    static const char h1_headers[] = "POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    static const char h1_body[] = "POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  "Content-Type: application/json\r\nContent-Length: 100000\r\n"
                                  "\r\n{";
    static const uint8_t h2_open[] = {
        'P',  'R',  'I', ' ', '*',  ' ',  'H',  'T',  'T', 'P',  '/',  '2',  '.',  '0',  '\r', '\n',
        '\r', '\n', 'S', 'M', '\r', '\n', '\r', '\n', 0,   0,    0,    4,    0,    0,    0,    0,
        0,    0,    0,   37,  1,    4,    0,    0,    0,   1,    0x83, 0x86, 0x04, 11,   '/',  'v',
        '1',  '/',  'a', 'n', 'a',  'l',  'y',  'z',  'e', 0x01, 1,    'x',  0x0f, 0x10, 16,   'a',
        'p',  'p',  'l', 'i', 'c',  'a',  't',  'i',  'o', 'n',  '/',  'j',  's',  'o',  'n'};
    /* preface, empty SETTINGS, HEADERS (END_HEADERS, no END_STREAM) of 37 bytes of HPACK:
     * :method POST, :scheme http, :path /v1/analyze, :authority x, content-type json */
    _Static_assert(sizeof h2_open == 24 + 9 + 9 + 37, "h2_open layout");
    static const uint8_t h2_data[] = {0, 0, 1, 0, 0, 0, 0, 0, 1, ' '}; /* DATA, 1 byte */
    struct {
        int fd, kind;
        double opened;
    } c[N_LORIS];
    for (int i = 0; i < N_LORIS; i++)
        c[i].fd = -1;
    double limit = g_o.read_timeout * 1.5 + 5;
    for (int round = 0; !atomic_load(&g_stop); round++) {
        double t = now_s();
        for (int i = 0; i < N_LORIS; i++) {
            if (c[i].fd < 0) { /* (re)open */
                c[i].kind = (round + i) % 3;
                c[i].fd = connect_worker();
                c[i].opened = now_s();
                bool ok = c[i].fd >= 0;
                if (ok && c[i].kind == 0)
                    ok = send_all(c[i].fd, h1_headers, sizeof h1_headers - 1);
                else if (ok && c[i].kind == 1)
                    ok = send_all(c[i].fd, h1_body, sizeof h1_body - 1);
                else if (ok)
                    ok = send_all(c[i].fd, h2_open, sizeof h2_open);
                if (!ok) {
                    record(K_LORIS, false, "could not open a connection");
                    if (c[i].fd >= 0)
                        close(c[i].fd);
                    c[i].fd = -1;
                }
                continue;
            }
            bool closed = server_closed(c[i].fd);
            if (!closed)
                closed = !(c[i].kind == 2 ? send_all(c[i].fd, h2_data, sizeof h2_data)
                                          : send_all(c[i].fd, c[i].kind == 0 ? "X" : " ", 1));
            double held = t - c[i].opened;
            if (closed || held > limit) {
                record(K_LORIS, closed && held >= g_o.read_timeout * 0.9,
                       "%s after %.1f s (kind %d)", closed ? "cut off early" : "still open", held,
                       c[i].kind);
                if (closed)
                    dvec_push(&g_cut, held);
                close(c[i].fd);
                c[i].fd = -1;
            }
        }
        pause_ms(500); /* the trickle rate */
    }
    for (int i = 0; i < N_LORIS; i++)
        if (c[i].fd >= 0)
            close(c[i].fd);
    return NULL;
}

static void *disconnect_client(void *arg)
{
    (void)arg;
    uint32_t seed = 4242;
    CURL *easy = curl_easy_init();
    body b = {0};
    for (int round = 0; !atomic_load(&g_stop); round++) {
        int kind = K_DISC_UPLOAD + round % 3;
        int ph = (int)(rnd(&seed) % N_PHOTOS);
        bool ok = true;
        if (kind == K_DISC_H2) {
            int idx[4] = {ph, (ph + 1) % N_PHOTOS, (ph + 2) % N_PHOTOS, (ph + 3) % N_PHOTOS};
            part pp[4];
            photo_parts(idx, 4, pp);
            CURL *e = curl_easy_init();
            do_request(e, "/v1/analyze", true, pp, 4, NULL, 0, NULL, 50, &b, NULL);
            curl_easy_cleanup(e);
        } else {
            size_t len, hl;
            uint8_t *req = h1_multipart_request(ph, &len, &hl);
            int fd = req ? connect_worker() : -1;
            ok = fd >= 0 && send_all(fd, req, kind == K_DISC_UPLOAD ? hl + (len - hl) / 2 : len);
            if (fd >= 0)
                close(fd);
            free(req);
        }
        record(kind, ok, "could not connect or send");
        pause_ms(200); /* pacing: about five of these a second */
    }
    curl_easy_cleanup(easy);
    free(b.p);
    return NULL;
}

static void *sampler(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stop)) {
        sample s = {.t = now_s() - g_t0,
                    .rss_kb = proc_rss_kb(g_pid),
                    .fds = proc_fds(g_pid),
                    .good = atomic_load(&g_k[K_GOOD].ok)};
        pthread_mutex_lock(&g_samples_mu);
        if (g_n_samples == g_cap_samples) {
            size_t cap = g_cap_samples ? g_cap_samples * 2 : 1024;
            sample *v = realloc(g_samples, cap * sizeof *v);
            if (v) {
                g_samples = v;
                g_cap_samples = cap;
            }
        }
        if (g_n_samples < g_cap_samples)
            g_samples[g_n_samples++] = s;
        pthread_mutex_unlock(&g_samples_mu);
        double next = s.t + g_o.sample;
        while (!atomic_load(&g_stop) && now_s() - g_t0 < next)
            pause_ms(50);
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* report                                                                                   */

/* Median RSS (kB) of the samples with t in [from, to). */
static double median_rss(double from, double to)
{
    double *v = malloc((g_n_samples + 1) * sizeof *v);
    size_t n = 0;
    for (size_t i = 0; v && i < g_n_samples; i++)
        if (g_samples[i].t >= from && g_samples[i].t < to && g_samples[i].rss_kb > 0)
            v[n++] = (double)g_samples[i].rss_kb;
    double m = v ? quantile(v, n, 0.5) : NAN;
    free(v);
    return m;
}

static void machine(char *buf, size_t cap)
{
    char model[512] = "?", line[512];
    long mem_kb = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            snprintf(model, sizeof model, "%.500s", c ? c + 2 : line);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    if (f)
        fclose(f);
    f = fopen("/proc/meminfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "MemTotal:", 9))
            mem_kb = strtol(line + 9, NULL, 10);
    if (f)
        fclose(f);
    struct utsname u;
    uname(&u);
    snprintf(buf, cap, "%s, %ld cores, %.1f GiB RAM, Linux %s", model,
             sysconf(_SC_NPROCESSORS_ONLN), (double)mem_kb / 1048576.0, u.release);
}

typedef struct verdict {
    bool pass;
    char reasons[1024];
} verdict;

static void fail_because(verdict *v, const char *fmt, ...)
{
    v->pass = false;
    size_t l = strlen(v->reasons);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->reasons + l, sizeof v->reasons - l, fmt, ap);
    va_end(ap);
}

static void print_report(FILE *out, const char *cmdline, double load_s, long rss_ready,
                         long idle_fds, long fds_after, double fds_back_s, long rss_idle_after,
                         int exit_code, const verdict *v)
{
    char mach[512];
    machine(mach, sizeof mach);
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    fprintf(out, "## Soak run, %s: %s\n\n", date, v->pass ? "PASS" : "FAIL");
    fprintf(out, "- command: `%s`\n", cmdline);
    fprintf(out, "- machine: %s\n", mach);
    fprintf(out,
            "- load: %.0f s (warm-up: the first 10 %%), %d good clients of 1-%d images, 1 bad, "
            "1 slow, %d slowloris connections, 1 disconnecting; worker --read-timeout %gs\n\n",
            load_s, g_o.clients, g_o.images, N_LORIS, g_o.read_timeout);
    fprintf(out, "| requests | sent | as expected | failed |\n|---|---:|---:|---:|\n");
    for (int k = 0; k < N_KINDS; k++)
        fprintf(out, "| %s | %ld | %ld | %ld |\n", g_k[k].name, atomic_load(&g_k[k].sent),
                atomic_load(&g_k[k].ok), atomic_load(&g_k[k].failed));
    double p50 = quantile(g_lat.v, g_lat.n, 0.5), p99 = quantile(g_lat.v, g_lat.n, 0.99);
    double c50 = quantile(g_cut.v, g_cut.n, 0.5), cmax = quantile(g_cut.v, g_cut.n, 1.0);
    fprintf(out,
            "\nGood requests: %.1f req/s, %.1f images/s, latency p50 %.0f ms, p99 %.0f ms. "
            "Slowloris connections cut off after %.1f s (median), %.1f s (max).\n\n",
            (double)atomic_load(&g_k[K_GOOD].ok) / load_s, (double)atomic_load(&g_images) / load_s,
            p50 * 1000, p99 * 1000, c50, cmax);
    long peak_rss = 0, peak_fds = 0;
    for (size_t i = 0; i < g_n_samples; i++) {
        if (g_samples[i].rss_kb > peak_rss)
            peak_rss = g_samples[i].rss_kb;
        if (g_samples[i].fds > peak_fds)
            peak_fds = g_samples[i].fds;
    }
    double base = median_rss(0.1 * load_s, 0.2 * load_s), end = median_rss(0.9 * load_s, load_s);
    fprintf(out, "| worker memory (VmRSS) | MiB |\n|---|---:|\n");
    fprintf(out, "| ready, before load | %.1f |\n", (double)rss_ready / 1024);
    fprintf(out, "| after warm-up (median over 10-20 %% of the run) | %.1f |\n", base / 1024);
    fprintf(out, "| peak | %.1f |\n", (double)peak_rss / 1024);
    fprintf(out, "| end (median over the last 10 %%) | %.1f |\n", end / 1024);
    fprintf(out, "| idle after the load | %.1f |\n", (double)rss_idle_after / 1024);
    fprintf(out, "| growth after warm-up | %+.2f %% (limit %.0f %%) |\n\n", (end / base - 1) * 100,
            g_o.max_growth * 100);
    fprintf(out,
            "Open fds: idle %ld, peak under load %ld, %ld after the load (back to idle within "
            "%.1f s). Worker exit status after SIGTERM: %d. Samples: %zu, every %g s.\n\n",
            idle_fds, peak_fds, fds_after, fds_back_s, exit_code, g_n_samples, g_o.sample);
    if (!v->pass)
        fprintf(out, "Failed: %s\n\n", v->reasons);
    for (int k = 0; k < N_KINDS; k++)
        for (int i = 0; i < g_k[k].n_notes; i++)
            fprintf(out, "- %s: %s\n", g_k[k].name, g_k[k].notes[i]);
}

/* ---------------------------------------------------------------------------------------- */
/* main                                                                                     */

static void usage(void)
{
    fprintf(stderr, "usage: fw_soak [--seconds N] [--facework PATH] [--photos DIR] [--clients N]\n"
                    "               [--images K] [--read-timeout S] [--sample S] [--max-growth F]\n"
                    "               [--report FILE] [--samples FILE.tsv] [-- worker args...]\n"
                    "SOAK_SECONDS sets the default duration (1800 s).\n");
}

int main(int argc, char **argv)
{
    const char *env_s = getenv("SOAK_SECONDS");
    g_o = (opts){.seconds = env_s && *env_s ? atof(env_s) : 1800,
                 .read_timeout = 10,
                 .sample = 1,
                 .max_growth = 0.05,
                 .clients = 4,
                 .images = 4,
                 .facework = getenv("FW_FACEWORK"),
                 .photos = getenv("FW_PHOTOS_DIR")};
    static const struct option lo[] = {
        {"seconds", 1, 0, 's'}, {"facework", 1, 0, 'f'},   {"photos", 1, 0, 'p'},
        {"clients", 1, 0, 'c'}, {"images", 1, 0, 'i'},     {"read-timeout", 1, 0, 'r'},
        {"sample", 1, 0, 'S'},  {"max-growth", 1, 0, 'g'}, {"report", 1, 0, 'o'},
        {"samples", 1, 0, 't'}, {"help", 0, 0, 'h'},       {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            g_o.seconds = atof(optarg);
            break;
        case 'f':
            g_o.facework = optarg;
            break;
        case 'p':
            g_o.photos = optarg;
            break;
        case 'c':
            g_o.clients = atoi(optarg);
            break;
        case 'i':
            g_o.images = atoi(optarg);
            break;
        case 'r':
            g_o.read_timeout = atof(optarg);
            break;
        case 'S':
            g_o.sample = atof(optarg);
            break;
        case 'g':
            g_o.max_growth = atof(optarg);
            break;
        case 'o':
            g_o.report = optarg;
            break;
        case 't':
            g_o.samples = optarg;
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    g_o.worker_args = argv + optind;
    g_o.n_worker_args = argc - optind;
    if (!g_o.facework || !g_o.photos || g_o.seconds < 10 || g_o.clients < 1 || g_o.clients > 64 ||
        g_o.images < 1 || g_o.images > 64 || g_o.read_timeout < 0.5 || g_o.sample <= 0) {
        usage();
        fprintf(stderr, "fw_soak: need --facework (or FW_FACEWORK), --photos (or "
                        "FW_PHOTOS_DIR), --seconds >= 10, 1..64 clients and images\n");
        return 2;
    }
    char cmdline[2048] = "";
    for (int i = 0; i < argc; i++) {
        size_t l = strlen(cmdline);
        snprintf(cmdline + l, sizeof cmdline - l, "%s%s", i ? " " : "", argv[i]);
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    for (int i = 0; i < N_PHOTOS; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/sample%d.jpg", g_o.photos, i + 1);
        g_photos[i].data = read_file(path, &g_photos[i].len);
        if (!g_photos[i].data)
            die("cannot read %s", path);
    }
    for (int k = 0; k < N_KINDS; k++)
        pthread_mutex_init(&g_k[k].mu, NULL);

    start_worker();
    fprintf(stderr, "fw_soak: worker pid %ld on %s; log %s/worker.log; %g s of load\n", (long)g_pid,
            g_url, g_dir, g_o.seconds);

    /* health, then the reference answers (one photo per request) */
    CURL *easy = curl_easy_init();
    body b = {0};
    double deadline = now_s() + 120;
    while (do_request(easy, "/health", false, NULL, 0, NULL, 0, NULL, 5000, &b, NULL) != 200) {
        if (now_s() > deadline)
            die("/health never answered 200");
        pause_ms(50);
    }
    for (int i = 0; i < N_PHOTOS; i++) {
        part pp;
        photo_parts(&i, 1, &pp);
        long st = do_request(easy, "/v1/analyze", false, &pp, 1, NULL, 0, NULL, 120000, &b, NULL);
        json_t *j = st == 200 ? json_loadb(b.p, b.n, 0, NULL) : NULL;
        json_t *faces = json_object_get(json_array_get(json_object_get(j, "results"), 0), "faces");
        if (!json_is_array(faces))
            die("reference request for sample%d.jpg: status %ld: %.200s", i + 1, st,
                b.p ? b.p : "");
        g_photos[i].faces = (int)json_array_size(faces);
        json_decref(j);
    }
    curl_easy_cleanup(easy); /* closes its connection */
    /* idle fds: settles as soon as the worker has seen the close */
    long idle_fds = proc_fds(g_pid), stable = 0;
    deadline = now_s() + 10;
    while (stable < 10 && now_s() < deadline) {
        pause_ms(20);
        long n = proc_fds(g_pid);
        stable = n == idle_fds ? stable + 1 : 0;
        idle_fds = n;
    }
    long rss_ready = proc_rss_kb(g_pid);
    fprintf(stderr, "fw_soak: reference faces %d %d %d %d %d %d; idle fds %ld; RSS %.1f MiB\n",
            g_photos[0].faces, g_photos[1].faces, g_photos[2].faces, g_photos[3].faces,
            g_photos[4].faces, g_photos[5].faces, idle_fds, (double)rss_ready / 1024);

    /* the load */
    g_t0 = now_s();
    pthread_t th[64 + 5];
    int nth = 0;
    pthread_create(&th[nth++], NULL, sampler, NULL);
    for (int i = 0; i < g_o.clients; i++)
        pthread_create(&th[nth++], NULL, good_client, (void *)(intptr_t)i);
    pthread_create(&th[nth++], NULL, bad_client, NULL);
    pthread_create(&th[nth++], NULL, slow_client, NULL);
    pthread_create(&th[nth++], NULL, loris_client, NULL);
    pthread_create(&th[nth++], NULL, disconnect_client, NULL);
    verdict v = {.pass = true};
    int wstatus = 0;
    double next_note = 60;
    while (now_s() - g_t0 < g_o.seconds) {
        if (!worker_alive(&wstatus)) {
            fail_because(&v, "the worker died under load (status %d); ", wstatus);
            break;
        }
        if (now_s() - g_t0 >= next_note) {
            fprintf(stderr, "fw_soak: %.0f s: %ld good, %ld failed; RSS %.1f MiB, %ld fds\n",
                    now_s() - g_t0, atomic_load(&g_k[K_GOOD].ok), atomic_load(&g_k[K_GOOD].failed),
                    (double)proc_rss_kb(g_pid) / 1024, proc_fds(g_pid));
            next_note += 60;
        }
        pause_ms(200);
    }
    double load_s = now_s() - g_t0;
    atomic_store(&g_stop, true);
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);

    /* after the load: fds back to idle, still healthy, clean exit */
    long fds_after = -1;
    double t_after = now_s(), fds_back_s = NAN;
    deadline = t_after + g_o.read_timeout * 1.5 + 30;
    while (g_pid > 0 && (fds_after = proc_fds(g_pid)) > idle_fds && now_s() < deadline)
        pause_ms(50);
    if (fds_after >= 0 && fds_after <= idle_fds)
        fds_back_s = now_s() - t_after;
    long rss_idle_after = g_pid > 0 ? proc_rss_kb(g_pid) : -1;
    int exit_code = -1;
    if (g_pid > 0) {
        easy = curl_easy_init();
        long st = do_request(easy, "/health", false, NULL, 0, NULL, 0, NULL, 10000, &b, NULL);
        curl_easy_cleanup(easy);
        if (st != 200)
            fail_because(&v, "/health answered %ld after the load; ", st);
        kill(g_pid, SIGTERM);
        deadline = now_s() + 60;
        while (worker_alive(&wstatus) && now_s() < deadline)
            pause_ms(50);
        if (g_pid > 0) {
            fail_because(&v, "the worker did not exit within 60 s of SIGTERM; ");
            cleanup_worker();
        } else {
            exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
        }
    }
    free(b.p);

    /* verdict */
    for (int k = 0; k < N_KINDS; k++)
        if (atomic_load(&g_k[k].failed))
            fail_because(&v, "%ld of %ld \"%s\" not as expected; ", atomic_load(&g_k[k].failed),
                         atomic_load(&g_k[k].sent), g_k[k].name);
    if (!atomic_load(&g_k[K_GOOD].ok))
        fail_because(&v, "no good request succeeded; ");
    double base = median_rss(0.1 * load_s, 0.2 * load_s), end = median_rss(0.9 * load_s, load_s);
    if (!(end / base - 1 < g_o.max_growth))
        fail_because(&v, "RSS grew %.2f %% after warm-up (limit %.0f %%); ", (end / base - 1) * 100,
                     g_o.max_growth * 100);
    if (!(fds_after >= 0 && fds_after <= idle_fds))
        fail_because(&v, "open fds %ld after the load, idle %ld; ", fds_after, idle_fds);
    if (exit_code != 0)
        fail_because(&v, "exit status %d after SIGTERM; ", exit_code);
    char log_path[128];
    snprintf(log_path, sizeof log_path, "%s/worker.log", g_dir);
    size_t log_len = 0;
    uint8_t *log = read_file(log_path, &log_len);
    if (log && (memmem(log, log_len, "AddressSanitizer", 16) ||
                memmem(log, log_len, "runtime error:", 14)))
        fail_because(&v, "sanitizer report in %s; ", log_path);
    free(log);

    print_report(stdout, cmdline, load_s, rss_ready, idle_fds, fds_after, fds_back_s,
                 rss_idle_after, exit_code, &v);
    if (g_o.report) {
        FILE *f = fopen(g_o.report, "w");
        if (f) {
            print_report(f, cmdline, load_s, rss_ready, idle_fds, fds_after, fds_back_s,
                         rss_idle_after, exit_code, &v);
            fclose(f);
        }
    }
    if (g_o.samples) {
        FILE *f = fopen(g_o.samples, "w");
        if (f) {
            fprintf(f, "t_s\trss_kb\tfds\tgood_ok\n");
            for (size_t i = 0; i < g_n_samples; i++)
                fprintf(f, "%.1f\t%ld\t%ld\t%ld\n", g_samples[i].t, g_samples[i].rss_kb,
                        g_samples[i].fds, g_samples[i].good);
            fclose(f);
        }
    }
    if (v.pass) { /* keep the log of a failed run */
        unlink(log_path);
        char p[128];
        snprintf(p, sizeof p, "%s/port", g_dir);
        unlink(p);
        snprintf(p, sizeof p, "%s/worker.lock", g_dir);
        unlink(p);
        rmdir(g_dir);
    } else {
        fprintf(stderr, "fw_soak: the worker's log: %s\n", log_path);
    }
    for (int i = 0; i < N_PHOTOS; i++)
        free(g_photos[i].data);
    free(g_lat.v);
    free(g_cut.v);
    free(g_samples);
    curl_global_cleanup();
    return v.pass ? 0 : 1;
}
