/* Load generator for the worker: keeps C requests in flight against POST /v1/analyze and
 * measures images/s and per-request latency, with the worker's CPU time and memory.
 *
 * HTTP mode (--url): libcurl's multi interface, one easy handle per in-flight slot, kept
 * connections. HTTP/1.1 opens one connection per slot; HTTP/2 (cleartext h2c, by upgrade:
 * --help says why not prior knowledge) multiplexes every slot over one connection. Each
 * request is a multipart body of K images cycling through the six sample photos; the six
 * possible bodies are built once, before the clock starts, so the client spends its CPU on
 * HTTP only. The worker's CPU time and peak resident memory come from /proc/<--pid>, and
 * its own view of the window (request time, queue wait, batch sizes, model time) from
 * GET /metrics at both ends of the window.
 * A request counts as good when the status is 200; faces are counted from the response by
 * its "embedding" keys, and every body must give the same face count each time (a change is
 * counted as a mismatch).
 *
 * In-process mode (--in-process): the same bodies' images go through fw_engine_analyze in
 * this process, C threads each with one call in flight: the reference the worker is
 * compared with, measured the same way.
 *
 * Timeline: warm-up (not measured), then a window of --duration seconds in which completed
 * requests are counted, then the requests still in flight are awaited (not counted) so the
 * next run starts on an idle worker. Prints one line: JSON (default) or TSV (--format tsv,
 * --header for the column names).
 *
 * usage: fw_loadgen (--url http://HOST:PORT | --in-process) [options]  (--help lists them)
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "core/align.h"
#include "facework/facework.h"
#include "util/buf.h"
#include "util/log.h"

#define N_PHOTOS 6
#define BOUNDARY "fwloadgen7d41c9a0b3e2"

typedef struct opts {
    const char *url, *path, *photos, *set, *models, *format;
    int http, concurrency, images, connections, threads, header, in_process, verbose, poll_ms;
    double duration, warmup, timeout;
    long pid;
} opts;

/* ------------------------------------------------------------------------------------ */
/* small helpers                                                                        */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "fw_loadgen: %s: %s\n", what, why ? why : "failed");
    exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        die("alloc", "out of memory");
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile(const double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    return v[rank ? rank - 1 : 0];
}

/* A growable array of latencies (ms). */
typedef struct lat_vec {
    double *v;
    size_t n, cap;
} lat_vec;

static void lat_push(lat_vec *l, double ms)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        double *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            die("alloc", "out of memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = ms;
}

/* ------------------------------------------------------------------------------------ */
/* the target process: CPU time and memory from /proc                                   */

/* utime + stime of pid in seconds; NaN when unreadable. */
static double proc_cpu_seconds(long pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NAN;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the command name may hold spaces and parentheses: fields resume after the last ')' */
    const char *p = strrchr(buf, ')');
    if (!p)
        return NAN;
    unsigned long long ut = 0, st = 0;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return NAN;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

/* A "Vm...:" field of /proc/<pid>/status in MiB; NaN when unreadable. */
static double proc_status_mb(long pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NAN;
    double mb = NAN;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl) && line[fl] == ':') {
            mb = strtod(line + fl + 1, NULL) / 1024.0; /* kB */
            break;
        }
    fclose(f);
    return mb;
}

/* CPU seconds all processes spent busy, from /proc/stat (user + nice + system + irq +
 * softirq + steal over every CPU); NaN when unreadable. */
static double system_busy_seconds(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return NAN;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return NAN;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)(hz > 0 ? hz : 100);
}

static double self_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru))
        return NAN;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* ------------------------------------------------------------------------------------ */
/* photos and request bodies                                                            */

typedef struct photo {
    uint8_t *data;
    size_t len;
    char name[32];
} photo;

/* Re-encodes img scaled to width w (bilinear) at JPEG quality 90, as fw_bench does, so
 * that both benchmarks see the same bytes. */
static uint8_t *reencode(const fw_image *img, int w, size_t *len)
{
    float s = (float)w / (float)img->width;
    int h = (int)lroundf((float)img->height * s);
    fw_image *dst = fw_image_new(w, h);
    if (!dst)
        die("alloc", "out of memory");
    float M[2][3] = {{s, 0, 0.5f * s - 0.5f}, {0, s, 0.5f * s - 0.5f}};
    fw_warp_affine(img, M, dst->pixels, w, h);
    tjhandle t = tjInitCompress();
    unsigned char *buf = NULL;
    unsigned long n = 0;
    if (!t || tjCompress2(t, dst->pixels, w, w * 3, h, TJPF_RGB, &buf, &n, TJSAMP_420, 90, 0))
        die("jpeg encode", t ? tjGetErrorStr2(t) : "tjInitCompress");
    tjDestroy(t);
    fw_image_free(dst);
    uint8_t *out = xcalloc(n, 1);
    memcpy(out, buf, n);
    tjFree(buf);
    *len = n;
    return out;
}

static void load_photos(const char *dir, const char *set, photo *ph)
{
    bool small = !strcmp(set, "1440");
    for (int i = 0; i < N_PHOTOS; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/sample%d.jpg", dir, i + 1);
        snprintf(ph[i].name, sizeof ph[i].name, "sample%d.jpg", i + 1);
        fw_error e;
        if (fw_read_file(path, 0, &ph[i].data, &ph[i].len, &e))
            die(path, e.message);
        if (!small)
            continue;
        fw_image *img;
        if (fw_image_decode(ph[i].data, ph[i].len, NULL, &img, &e))
            die(path, e.message);
        free(ph[i].data);
        ph[i].data = reencode(img, 1440, &ph[i].len);
        fw_image_free(img);
    }
}

/* Body b holds photos b, b+1, ..., b+k-1 (mod 6): request r uses body r % 6, so every
 * photo is sent equally often whatever k is. */
typedef struct body {
    char *data;
    size_t len;
    fw_blob *blobs;    /* k images, pointing into the photos (in-process mode) */
    atomic_long faces; /* faces the first answer gave; -1 until known */
} body;

static void build_bodies(const photo *ph, int k, body *bodies)
{
    for (int b = 0; b < N_PHOTOS; b++) {
        fw_buf buf;
        fw_buf_init(&buf);
        bodies[b].blobs = xcalloc((size_t)k, sizeof(fw_blob));
        for (int j = 0; j < k; j++) {
            const photo *p = &ph[(b + j) % N_PHOTOS];
            fw_buf_printf(&buf,
                          "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"image\"; "
                          "filename=\"%d-%s\"\r\nContent-Type: image/jpeg\r\n\r\n",
                          j, p->name);
            fw_buf_append(&buf, p->data, p->len);
            fw_buf_puts(&buf, "\r\n");
            bodies[b].blobs[j] = (fw_blob){p->data, p->len};
        }
        fw_buf_puts(&buf, "--" BOUNDARY "--\r\n");
        bodies[b].data = fw_buf_detach(&buf, &bodies[b].len);
        if (!bodies[b].data)
            die("alloc", "out of memory");
        atomic_init(&bodies[b].faces, -1);
    }
}

static size_t on_write_buf(char *ptr, size_t size, size_t nmemb, void *user)
{
    fw_buf *b = user;
    size_t n = size * nmemb;
    fw_buf_append(b, ptr, n);
    return b->failed ? 0 : n;
}

/* ------------------------------------------------------------------------------------ */
/* the worker's own view: counters from GET /metrics                                    */

enum {
    M_REQ_SUM,
    M_REQ_COUNT,
    M_QWAIT_SUM,
    M_QWAIT_COUNT,
    M_DET_BATCH_SUM,
    M_DET_BATCH_COUNT,
    M_EMB_BATCH_SUM,
    M_EMB_BATCH_COUNT,
    M_DET_INFER_SUM,
    M_EMB_INFER_SUM,
    N_METRICS
};

/* The request-time keys hold the route as %s. */
static const char *const metric_keys[N_METRICS] = {
    "facework_http_request_duration_seconds_sum{route=\"%s\"}",
    "facework_http_request_duration_seconds_count{route=\"%s\"}",
    "facework_queue_wait_seconds_sum",
    "facework_queue_wait_seconds_count",
    "facework_batch_size_sum{stage=\"detect\"}",
    "facework_batch_size_count{stage=\"detect\"}",
    "facework_batch_size_sum{stage=\"embed\"}",
    "facework_batch_size_count{stage=\"embed\"}",
    "facework_inference_seconds_sum{stage=\"detect\"}",
    "facework_inference_seconds_sum{stage=\"embed\"}",
};

/* The value of the sample named key (with its labels) in a Prometheus text page; 0 when
 * absent (a series appears only once observed), NaN when text is NULL. */
static double metric_value(const char *text, const char *key)
{
    if (!text)
        return NAN;
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, key, kl) && p[kl] == ' ')
            return strtod(p + kl + 1, NULL);
    return 0;
}

/* Reads GET <url>/metrics into out[] (request times of route); every value NaN when it
 * cannot be fetched. */
static void fetch_metrics(CURL *e, const char *base, const char *route, double *out)
{
    char url[1024];
    snprintf(url, sizeof url, "%s/metrics", base);
    fw_buf b;
    fw_buf_init(&b);
    long status = 0;
    CURLcode rc = CURLE_OK;
    rc |= curl_easy_setopt(e, CURLOPT_URL, url);
    rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write_buf);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    if (rc == CURLE_OK)
        rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    size_t len;
    char *text = fw_buf_detach(&b, &len);
    bool ok = rc == CURLE_OK && status == 200 && text;
    for (int i = 0; i < N_METRICS; i++) {
        char key[256];
        if (i == M_REQ_SUM || i == M_REQ_COUNT)
            snprintf(key, sizeof key, metric_keys[i], route);
        else
            snprintf(key, sizeof key, "%s", metric_keys[i]);
        out[i] = metric_value(ok ? text : NULL, key);
    }
    free(text);
}

/* ------------------------------------------------------------------------------------ */
/* measurement common to both modes                                                     */

typedef struct stats {
    lat_vec lat;           /* good requests completed inside the window */
    long requests, errors; /* completed inside the window (errors: not 200 / transport) */
    long images, faces, item_errors, mismatches;
    double win_start, win_end;
    double wcpu0, wcpu1, ccpu0, ccpu1; /* target and client CPU seconds at the window ends */
    double scpu0, scpu1;               /* the whole machine's busy CPU seconds */
    double rss_peak_mb;
    double m0[N_METRICS], m1[N_METRICS]; /* the worker's /metrics at the window ends */
    char first_error[256];
} stats;

/* Records one answer's face count against the body's first one. Returns false on a change. */
static bool check_faces(body *b, long faces)
{
    long expect = -1;
    if (atomic_compare_exchange_strong(&b->faces, &expect, faces))
        return true;
    return expect == faces;
}

static void sample_rss(stats *s, long pid)
{
    double mb = proc_status_mb(pid, "VmRSS");
    if (!isnan(mb) && (isnan(s->rss_peak_mb) || mb > s->rss_peak_mb))
        s->rss_peak_mb = mb;
}

/* One output column: a number (NaN printed as null / "-") or, when str is set, a string. */
typedef struct field {
    const char *name;
    double v;
    int decimals;
    const char *str;
} field;

static double ratio(double num, double den)
{
    return den > 0 ? num / den : NAN;
}

static void print_result(const opts *o, stats *s, double body_kb)
{
    double win = s->win_end - s->win_start;
    if (s->lat.n)
        qsort(s->lat.v, s->lat.n, sizeof(double), cmp_double);
    double mean = 0;
    for (size_t i = 0; i < s->lat.n; i++)
        mean += s->lat.v[i];
    mean = s->lat.n ? mean / (double)s->lat.n : NAN;
    double own = s->wcpu1 - s->wcpu0; /* in-process: the worker is this process */
    if (!o->in_process && o->pid != (long)getpid())
        own += s->ccpu1 - s->ccpu0;
    double d[N_METRICS];
    for (int i = 0; i < N_METRICS; i++)
        d[i] = o->in_process ? NAN : s->m1[i] - s->m0[i];
    const field f[] = {
        {"mode", 0, 0,
         o->in_process  ? "inproc"
         : o->http == 2 ? "http2"
                        : "http1"},
        {"set", 0, 0, o->set},
        {"concurrency", o->concurrency, 0, NULL},
        {"images_per_request", o->images, 0, NULL},
        {"window_s", win, 3, NULL},
        {"requests", (double)s->requests, 0, NULL},
        {"images", (double)s->images, 0, NULL},
        {"faces", (double)s->faces, 0, NULL},
        {"errors", (double)s->errors, 0, NULL},
        {"item_errors", (double)s->item_errors, 0, NULL},
        {"mismatches", (double)s->mismatches, 0, NULL},
        {"img_per_s", (double)s->images / win, 3, NULL},
        {"req_per_s", (double)s->requests / win, 3, NULL},
        {"mean_ms", mean, 2, NULL},
        {"p50_ms", percentile(s->lat.v, s->lat.n, 50), 2, NULL},
        {"p95_ms", percentile(s->lat.v, s->lat.n, 95), 2, NULL},
        {"p99_ms", percentile(s->lat.v, s->lat.n, 99), 2, NULL},
        {"max_ms", s->lat.n ? s->lat.v[s->lat.n - 1] : NAN, 2, NULL},
        {"worker_cpu_pct", 100.0 * (s->wcpu1 - s->wcpu0) / win, 1, NULL},
        {"worker_rss_mb", s->rss_peak_mb, 1, NULL},
        {"worker_hwm_mb", proc_status_mb(o->pid, "VmHWM"), 1, NULL},
        {"client_cpu_pct", 100.0 * (s->ccpu1 - s->ccpu0) / win, 1, NULL},
        /* everything else on the machine: a benchmark on a shared host shows its noise */
        {"other_cpu_pct", 100.0 * (s->scpu1 - s->scpu0 - own) / win, 1, NULL},
        {"body_kb", body_kb, 1, NULL},
        /* the worker's /metrics over the window */
        {"server_ms", 1e3 * ratio(d[M_REQ_SUM], d[M_REQ_COUNT]), 2, NULL},
        {"queue_wait_ms", 1e3 * ratio(d[M_QWAIT_SUM], d[M_QWAIT_COUNT]), 2, NULL},
        {"detect_batch", ratio(d[M_DET_BATCH_SUM], d[M_DET_BATCH_COUNT]), 2, NULL},
        {"embed_batch", ratio(d[M_EMB_BATCH_SUM], d[M_EMB_BATCH_COUNT]), 2, NULL},
        {"detect_ms_per_run", 1e3 * ratio(d[M_DET_INFER_SUM], d[M_DET_BATCH_COUNT]), 2, NULL},
        {"embed_ms_per_run", 1e3 * ratio(d[M_EMB_INFER_SUM], d[M_EMB_BATCH_COUNT]), 2, NULL},
        {"detect_busy_pct", 100.0 * d[M_DET_INFER_SUM] / win, 1, NULL},
        {"embed_busy_pct", 100.0 * d[M_EMB_INFER_SUM] / win, 1, NULL},
    };
    const size_t n = sizeof f / sizeof f[0];
    bool tsv = !strcmp(o->format, "tsv");
    if (tsv && o->header)
        for (size_t i = 0; i < n; i++)
            printf("%s%c", f[i].name, i + 1 < n ? '\t' : '\n');
    if (!tsv)
        putchar('{');
    for (size_t i = 0; i < n; i++) {
        if (!tsv)
            printf("%s\"%s\":", i ? "," : "", f[i].name);
        if (f[i].str)
            printf(tsv ? "%s" : "\"%s\"", f[i].str);
        else if (!isfinite(f[i].v))
            fputs(tsv ? "-" : "null", stdout);
        else
            printf("%.*f", f[i].decimals, f[i].v);
        if (tsv)
            putchar(i + 1 < n ? '\t' : '\n');
    }
    if (!tsv)
        puts("}");
    fflush(stdout);
    if (s->first_error[0])
        fprintf(stderr, "fw_loadgen: %ld errors; first: %s\n", s->errors, s->first_error);
}

/* ------------------------------------------------------------------------------------ */
/* HTTP mode                                                                            */

typedef struct slot {
    CURL *easy;
    fw_buf resp;
    body *body;
    double started;
    bool active;
} slot;

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    slot *s = user;
    return on_write_buf(ptr, size, nmemb, &s->resp);
}

/* Occurrences of needle in hay[0..n). */
static long count_str(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    long c = 0;
    const char *p = hay, *end = hay + n;
    while ((size_t)(end - p) >= m && (p = memmem(p, (size_t)(end - p), needle, m))) {
        c++;
        p += m;
    }
    return c;
}

static void start_slot(CURLM *multi, slot *s, body *b)
{
    s->body = b;
    s->resp.len = 0;
    s->resp.failed = false;
    if (curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, b->data) != CURLE_OK ||
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->len) != CURLE_OK)
        die("curl", "setting the body");
    s->started = now_s();
    s->active = true;
    CURLMcode mc = curl_multi_add_handle(multi, s->easy);
    if (mc != CURLM_OK)
        die("curl_multi_add_handle", curl_multi_strerror(mc));
}

/* Books a finished transfer. In the window: counts it (latency for good ones). */
static void finish_slot(const opts *o, stats *st, slot *s, CURLcode rc, double t)
{
    long status = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    bool in_window = st->win_start > 0 && t >= st->win_start && st->win_end == 0;
    bool ok = rc == CURLE_OK && status == 200 && !s->resp.failed;
    long faces = 0, item_errors = 0;
    if (ok) {
        faces = count_str(s->resp.data, s->resp.len, "\"embedding\"");
        item_errors = count_str(s->resp.data, s->resp.len, "\"error\"");
    }
    if (ok && !check_faces(s->body, faces) && in_window)
        st->mismatches++;
    if (!in_window)
        return;
    st->requests++;
    if (!ok) {
        st->errors++;
        if (!st->first_error[0]) {
            if (rc != CURLE_OK)
                snprintf(st->first_error, sizeof st->first_error, "%s", curl_easy_strerror(rc));
            else
                snprintf(st->first_error, sizeof st->first_error, "HTTP %ld: %.*s", status,
                         (int)(s->resp.len < 160 ? s->resp.len : 160),
                         s->resp.data ? s->resp.data : "");
        }
        return;
    }
    st->images += o->images;
    st->faces += faces;
    st->item_errors += item_errors;
    lat_push(&st->lat, (t - s->started) * 1e3);
}

static void run_http(const opts *o, body *bodies, stats *st)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT))
        die("curl_global_init", NULL);
    CURLM *multi = curl_multi_init();
    if (!multi)
        die("curl_multi_init", NULL);
    long max_conn = o->http == 2 ? o->connections : o->concurrency;
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_conn);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)o->concurrency);
    curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);

    char url[1024];
    snprintf(url, sizeof url, "%s%s", o->url, o->path);
    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, "Content-Type: multipart/form-data; boundary=" BOUNDARY);
    if (hdrs)
        hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip */
    if (!hdrs)
        die("alloc", "out of memory");

    slot *slots = xcalloc((size_t)o->concurrency, sizeof *slots);
    for (int i = 0; i < o->concurrency; i++) {
        CURL *e = curl_easy_init();
        if (!e)
            die("curl_easy_init", NULL);
        slots[i].easy = e;
        fw_buf_init(&slots[i].resp);
        CURLcode rc = CURLE_OK;
        rc |= curl_easy_setopt(e, CURLOPT_URL, url);
        rc |= curl_easy_setopt(e, CURLOPT_POST, 1L);
        rc |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
        rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
        rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, &slots[i]);
        rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, &slots[i]);
        rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        rc |= curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
        rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(o->timeout * 1000));
        rc |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                               o->http == 2 ? (long)CURL_HTTP_VERSION_2_0
                                            : (long)CURL_HTTP_VERSION_1_1);
        if (o->http == 2)
            rc |= curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
        if (o->verbose)
            rc |= curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
        if (rc != CURLE_OK)
            die("curl_easy_setopt", NULL);
    }

    CURL *mcurl = curl_easy_init(); /* GET /metrics at the window ends */
    if (!mcurl)
        die("curl_easy_init", NULL);
    long next = 0; /* request number: picks the body */
    double t0 = now_s(), warm_end = t0 + o->warmup, end = warm_end + o->duration;
    double drain_deadline = end + o->timeout, next_sample = 0;
    for (int i = 0; i < o->concurrency; i++)
        start_slot(multi, &slots[i], &bodies[next++ % N_PHOTOS]);
    int active = o->concurrency;
    while (active > 0) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(multi, &running);
        if (mc != CURLM_OK)
            die("curl_multi_perform", curl_multi_strerror(mc));
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            char *priv = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
            slot *s = (slot *)priv;
            if (!s)
                die("curl", "a transfer without its slot");
            CURLcode rc = m->data.result;
            double t = now_s();
            curl_multi_remove_handle(multi, m->easy_handle);
            finish_slot(o, st, s, rc, t);
            s->active = false;
            active--;
            if (t < end) {
                start_slot(multi, s, &bodies[next++ % N_PHOTOS]);
                active++;
            }
        }
        double t = now_s();
        if (st->win_start == 0 && t >= warm_end) {
            fetch_metrics(mcurl, o->url, o->path, st->m0);
            st->win_start = t;
            st->wcpu0 = proc_cpu_seconds(o->pid);
            st->ccpu0 = self_cpu_seconds();
            st->scpu0 = system_busy_seconds();
        }
        if (st->win_start > 0 && st->win_end == 0) {
            if (t >= next_sample) {
                sample_rss(st, o->pid);
                next_sample = t + 0.1;
            }
            if (t >= end) {
                st->win_end = t;
                st->wcpu1 = proc_cpu_seconds(o->pid);
                st->ccpu1 = self_cpu_seconds();
                st->scpu1 = system_busy_seconds();
                sample_rss(st, o->pid);
                fetch_metrics(mcurl, o->url, o->path, st->m1);
            }
        }
        if (t > drain_deadline) {
            fprintf(stderr, "fw_loadgen: %d requests still in flight after the window\n", active);
            break;
        }
        if (active > 0 && (mc = curl_multi_poll(multi, NULL, 0, o->poll_ms, NULL)) != CURLM_OK)
            die("curl_multi_poll", curl_multi_strerror(mc));
    }
    for (int i = 0; i < o->concurrency; i++) {
        if (slots[i].active)
            curl_multi_remove_handle(multi, slots[i].easy);
        curl_easy_cleanup(slots[i].easy);
        free(slots[i].resp.data);
    }
    free(slots);
    curl_easy_cleanup(mcurl);
    curl_slist_free_all(hdrs);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
}

/* ------------------------------------------------------------------------------------ */
/* in-process mode                                                                      */

typedef struct inproc {
    const opts *o;
    fw_engine *eng;
    body *bodies;
    atomic_long next;
    double warm_end, end;
} inproc;

typedef struct inproc_thread {
    inproc *shared;
    lat_vec lat;
    long requests, errors, images, faces, item_errors, mismatches;
    char first_error[256];
} inproc_thread;

static void *inproc_main(void *arg)
{
    inproc_thread *th = arg;
    inproc *ip = th->shared;
    const opts *o = ip->o;
    fw_result *res = xcalloc((size_t)o->images, sizeof *res);
    for (;;) {
        double t0 = now_s();
        if (t0 >= ip->end)
            break;
        body *b = &ip->bodies[atomic_fetch_add(&ip->next, 1) % N_PHOTOS];
        fw_error e;
        fw_err rc = fw_engine_analyze(ip->eng, b->blobs, (size_t)o->images, NULL, res, &e);
        double t1 = now_s();
        long faces = 0, item_errors = 0;
        if (rc == FW_OK)
            for (int i = 0; i < o->images; i++) {
                if (res[i].status != FW_OK)
                    item_errors++;
                else
                    faces += (long)res[i].n_faces;
                fw_result_clear(&res[i]);
            }
        bool in_window = t1 >= ip->warm_end && t1 < ip->end;
        if (rc == FW_OK && !check_faces(b, faces) && in_window)
            th->mismatches++;
        if (!in_window)
            continue;
        th->requests++;
        if (rc != FW_OK) {
            th->errors++;
            if (!th->first_error[0])
                snprintf(th->first_error, sizeof th->first_error, "%s", e.message);
            continue;
        }
        th->images += o->images;
        th->faces += faces;
        th->item_errors += item_errors;
        lat_push(&th->lat, (t1 - t0) * 1e3);
    }
    free(res);
    return NULL;
}

static void run_inproc(const opts *o, body *bodies, stats *st)
{
    fw_engine_config cfg;
    fw_engine_config_init(&cfg);
    cfg.models_dir = o->models;
    cfg.threads = o->threads;
    fw_engine *eng;
    fw_error e;
    if (fw_engine_new(&cfg, &eng, &e))
        die("engine", e.message);
    inproc ip = {.o = o, .eng = eng, .bodies = bodies};
    atomic_init(&ip.next, 0);
    double t0 = now_s();
    ip.warm_end = t0 + o->warmup;
    ip.end = ip.warm_end + o->duration;
    inproc_thread *th = xcalloc((size_t)o->concurrency, sizeof *th);
    pthread_t *tid = xcalloc((size_t)o->concurrency, sizeof *tid);
    for (int i = 0; i < o->concurrency; i++) {
        th[i].shared = &ip;
        if (pthread_create(&tid[i], NULL, inproc_main, &th[i]))
            die("pthread_create", strerror(errno));
    }
    /* the window's CPU time and memory, sampled by this (otherwise idle) thread */
    struct timespec tick = {0, 20 * 1000000};
    while (now_s() < ip.warm_end)
        nanosleep(&tick, NULL);
    st->win_start = ip.warm_end;
    st->wcpu0 = st->ccpu0 = proc_cpu_seconds(o->pid);
    st->scpu0 = system_busy_seconds();
    while (now_s() < ip.end) {
        sample_rss(st, o->pid);
        nanosleep(&tick, NULL);
    }
    st->win_end = ip.end;
    st->wcpu1 = st->ccpu1 = proc_cpu_seconds(o->pid);
    st->scpu1 = system_busy_seconds();
    for (int i = 0; i < o->concurrency; i++) {
        pthread_join(tid[i], NULL);
        for (size_t k = 0; k < th[i].lat.n; k++)
            lat_push(&st->lat, th[i].lat.v[k]);
        free(th[i].lat.v);
        st->requests += th[i].requests;
        st->errors += th[i].errors;
        st->images += th[i].images;
        st->faces += th[i].faces;
        st->item_errors += th[i].item_errors;
        st->mismatches += th[i].mismatches;
        if (!st->first_error[0] && th[i].first_error[0])
            snprintf(st->first_error, sizeof st->first_error, "%s", th[i].first_error);
    }
    free(th);
    free(tid);
    fw_engine_free(eng);
}

/* ------------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: fw_loadgen (--url http://HOST:PORT | --in-process) [options]\n"
               "  --http 1|2                  HTTP/1.1 (a connection per slot) or h2c (default 1)\n"
               "  --connections N             HTTP/2: most connections libcurl may open (1)\n"
               "  --concurrency C             requests kept in flight (1)\n"
               "  --images-per-request K      images in each request, 1-64 (1)\n"
               "  --duration S                measured window in seconds (5)\n"
               "  --warmup S                  unmeasured lead-in in seconds (1)\n"
               "  --photos DIR                sample1..6.jpg (FW_PHOTOS_DIR or .deps/photos)\n"
               "  --set native|1440           the photos as shipped or re-encoded 1440 px wide\n"
               "  --path P                    route (/v1/analyze)\n"
               "  --pid PID                   process whose CPU and memory to report (HTTP: the\n"
               "                              worker; default: this process)\n"
               "  --timeout S                 per-request limit, and the wait after the window\n"
               "                              (120)\n"
               "  --in-process                run fw_engine_analyze here instead of HTTP\n"
               "  --models DIR, --threads N   engine for --in-process (threads: intra-op, 1)\n"
               "  --format json|tsv, --header result line format; --header prints TSV names\n"
               "  --poll-ms N                 longest wait for socket activity (HTTP/1.1: 20,\n"
               "                              HTTP/2: 1, see below)\n"
               "  --verbose                   libcurl's trace on stderr\n"
               "HTTP/2 uses h2c upgrade, not prior knowledge: libcurl 7.88 fails every request\n"
               "after the first on a prior-knowledge connection (\"Error in the HTTP2 framing\n"
               "layer\"), and notices a finished HTTP/2 transfer only at its next timeout, hence\n"
               "the 1 ms poll (without it each request looks up to 20 ms slower).\n");
}

int main(int argc, char **argv)
{
    opts o = {.path = "/v1/analyze",
              .set = "native",
              .format = "json",
              .http = 1,
              .concurrency = 1,
              .images = 1,
              .connections = 1,
              .threads = 1,
              .duration = 5,
              .warmup = 1,
              .timeout = 120,
              .pid = 0,
              .poll_ms = -1};
    enum {
        O_URL = 256,
        O_HTTP,
        O_CONC,
        O_IMG,
        O_DUR,
        O_WARM,
        O_PHOTOS,
        O_SET,
        O_PATH,
        O_PID,
        O_CONN,
        O_TIMEOUT,
        O_INPROC,
        O_MODELS,
        O_THREADS,
        O_FORMAT,
        O_HEADER,
        O_VERBOSE,
        O_POLL,
        O_HELP
    };
    static const struct option longopts[] = {
        {"url", required_argument, 0, O_URL},
        {"http", required_argument, 0, O_HTTP},
        {"concurrency", required_argument, 0, O_CONC},
        {"images-per-request", required_argument, 0, O_IMG},
        {"duration", required_argument, 0, O_DUR},
        {"warmup", required_argument, 0, O_WARM},
        {"photos", required_argument, 0, O_PHOTOS},
        {"set", required_argument, 0, O_SET},
        {"path", required_argument, 0, O_PATH},
        {"pid", required_argument, 0, O_PID},
        {"connections", required_argument, 0, O_CONN},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"in-process", no_argument, 0, O_INPROC},
        {"models", required_argument, 0, O_MODELS},
        {"threads", required_argument, 0, O_THREADS},
        {"format", required_argument, 0, O_FORMAT},
        {"header", no_argument, 0, O_HEADER},
        {"verbose", no_argument, 0, O_VERBOSE},
        {"poll-ms", required_argument, 0, O_POLL},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_URL:
            o.url = optarg;
            break;
        case O_HTTP:
            o.http = atoi(optarg);
            break;
        case O_CONC:
            o.concurrency = atoi(optarg);
            break;
        case O_IMG:
            o.images = atoi(optarg);
            break;
        case O_DUR:
            o.duration = atof(optarg);
            break;
        case O_WARM:
            o.warmup = atof(optarg);
            break;
        case O_PHOTOS:
            o.photos = optarg;
            break;
        case O_SET:
            o.set = optarg;
            break;
        case O_PATH:
            o.path = optarg;
            break;
        case O_PID:
            o.pid = atol(optarg);
            break;
        case O_CONN:
            o.connections = atoi(optarg);
            break;
        case O_TIMEOUT:
            o.timeout = atof(optarg);
            break;
        case O_INPROC:
            o.in_process = 1;
            break;
        case O_MODELS:
            o.models = optarg;
            break;
        case O_THREADS:
            o.threads = atoi(optarg);
            break;
        case O_FORMAT:
            o.format = optarg;
            break;
        case O_HEADER:
            o.header = 1;
            break;
        case O_VERBOSE:
            o.verbose = 1;
            break;
        case O_POLL:
            o.poll_ms = atoi(optarg);
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || (!o.url == !o.in_process) || (o.http != 1 && o.http != 2) ||
        o.concurrency < 1 || o.concurrency > 4096 || o.images < 1 || o.images > 64 ||
        o.connections < 1 || !(o.duration > 0) || !(o.warmup >= 0) || !(o.timeout > 0) ||
        o.threads < 0 || o.poll_ms < -1 || (strcmp(o.set, "native") && strcmp(o.set, "1440")) ||
        (strcmp(o.format, "json") && strcmp(o.format, "tsv"))) {
        usage(stderr);
        return 2;
    }
    if (!o.pid)
        o.pid = (long)getpid();
    if (o.poll_ms < 0)
        o.poll_ms = o.http == 2 ? 1 : 20;
    if (!getenv("FACEWORK_LOG_LEVEL"))
        fw_log_set_level(FW_LOG_WARN);
    if (!o.photos)
        o.photos = getenv("FW_PHOTOS_DIR");
    if (!o.photos)
        o.photos = FW_SOURCE_DIR "/.deps/photos";

    photo ph[N_PHOTOS];
    load_photos(o.photos, o.set, ph);
    body bodies[N_PHOTOS];
    build_bodies(ph, o.images, bodies);
    double body_kb = 0;
    for (int b = 0; b < N_PHOTOS; b++)
        body_kb += (double)bodies[b].len / 1024.0 / N_PHOTOS;

    stats st = {.rss_peak_mb = NAN};
    if (o.in_process)
        run_inproc(&o, bodies, &st);
    else
        run_http(&o, bodies, &st);
    if (st.win_end == 0) /* stopped early (requests stuck): report what was seen */
        st.win_end = now_s();
    print_result(&o, &st, body_kb);
    int status = st.requests > 0 && st.errors == 0 && st.mismatches == 0 ? 0 : 1;
    free(st.lat.v);
    for (int b = 0; b < N_PHOTOS; b++) {
        free(bodies[b].data);
        free(bodies[b].blobs);
    }
    for (int i = 0; i < N_PHOTOS; i++)
        free(ph[i].data);
    return status;
}
