/* Integration-test harness: see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define FWT_MAX_WORKERS 64
#define FWT_MAX_FOREIGN 16
#define FWT_READY_DEADLINE_S 60.0

const char *const fwt_proto_name[3] = {"HTTP/1.1", "HTTP/2 prior knowledge", "h2c upgrade"};
const int fwt_photo_faces[7] = {0, 3, 3, 3, 4, 5, 4};

static fwt_worker *g_workers[FWT_MAX_WORKERS];
static pid_t g_foreign[FWT_MAX_FOREIGN];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void kill_everything(void);

/* ---------------------------------------------------------------------------------------- */
/* slow runs: FW_TEST_WRAPPER, FW_TEST_TIME_SCALE                                           */

#define FWT_MAX_WRAPPER_WORDS 48

static char *g_wrapper_buf;
static const char *g_wrapper[FWT_MAX_WRAPPER_WORDS + 1];
static size_t g_n_wrapper;
static double g_time_scale = 1.0;
static pthread_once_t g_slow_once = PTHREAD_ONCE_INIT;

static void slow_init(void)
{
    const char *w = getenv("FW_TEST_WRAPPER");
    if (w && w[0]) {
        g_wrapper_buf = strdup(w);
        for (char *save = NULL, *t = g_wrapper_buf ? strtok_r(g_wrapper_buf, " \t", &save) : NULL;
             t && g_n_wrapper < FWT_MAX_WRAPPER_WORDS; t = strtok_r(NULL, " \t", &save))
            g_wrapper[g_n_wrapper++] = t;
        g_time_scale = 40.0;
    }
    const char *ts = getenv("FW_TEST_TIME_SCALE");
    if (ts && ts[0]) {
        char *end;
        double v = strtod(ts, &end);
        if (end != ts && v >= 1.0)
            g_time_scale = v;
    }
}

double fwt_time_scale(void)
{
    pthread_once(&g_slow_once, slow_init);
    return g_time_scale;
}

bool fwt_wrapped(void)
{
    pthread_once(&g_slow_once, slow_init);
    return g_n_wrapper > 0;
}

bool fwt_reduced(void)
{
    const char *full = getenv("FW_TEST_FULL");
    return fwt_wrapped() && !(full && full[0] && strcmp(full, "0"));
}

static void global_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "harness: curl_global_init failed\n");
        abort();
    }
    atexit(kill_everything);
}

static void init_once(void)
{
    pthread_once(&g_once, global_init);
}

double fwt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void fwt_pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------------------------------- */
/* files                                                                                    */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        char *nb = realloc(buf, cap * 2 + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

uint8_t *fwt_read_file(const char *path, size_t *len)
{
    size_t n = 0;
    char *data = slurp(path, &n);
    if (!data)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    if (len)
        *len = n;
    return (uint8_t *)data;
}

static const char *env_or_fail(const char *name)
{
    const char *v = getenv(name);
    if (!v || !v[0])
        fail_msg("environment variable %s is not set (run the test through ctest)", name);
    return v;
}

const char *fwt_photo_path(int i)
{
    static char paths[7][1024];
    assert_true(i >= 1 && i <= 6);
    snprintf(paths[i], sizeof paths[i], "%s/sample%d.jpg", env_or_fail("FW_PHOTOS_DIR"), i);
    return paths[i];
}

const uint8_t *fwt_photo(int i, size_t *len)
{
    static uint8_t *data[7];
    static size_t lens[7];
    assert_true(i >= 1 && i <= 6);
    if (!data[i])
        data[i] = fwt_read_file(fwt_photo_path(i), &lens[i]);
    if (len)
        *len = lens[i];
    return data[i];
}

/* ---------------------------------------------------------------------------------------- */
/* processes                                                                                */

static void remove_dir(const char *dir)
{
    if (!dir[0])
        return;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void track(fwt_worker *w)
{
    for (size_t i = 0; i < FWT_MAX_WORKERS; i++)
        if (!g_workers[i]) {
            g_workers[i] = w;
            return;
        }
    fail_msg("too many workers started by one test process");
}

static void untrack(fwt_worker *w)
{
    for (size_t i = 0; i < FWT_MAX_WORKERS; i++)
        if (g_workers[i] == w)
            g_workers[i] = NULL;
}

void fwt_track_foreign_pid(pid_t pid)
{
    for (size_t i = 0; i < FWT_MAX_FOREIGN; i++)
        if (!g_foreign[i] || g_foreign[i] == pid) {
            g_foreign[i] = pid;
            return;
        }
}

int fwt_exit_code(int wstatus)
{
    if (WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus))
        return 128 + WTERMSIG(wstatus);
    return -1;
}

static bool reap(fwt_worker *w, bool block)
{
    if (w->exited)
        return true;
    int st;
    pid_t r;
    do
        r = waitpid(w->pid, &st, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == w->pid) {
        w->exited = true;
        w->wstatus = st;
        return true;
    }
    if (r < 0) { /* not our child any more (should not happen): treat as gone */
        w->exited = true;
        w->wstatus = 0xff00;
        return true;
    }
    return false;
}

char *fwt_worker_log(const fwt_worker *w)
{
    char *s = slurp(w->log_file, NULL);
    return s ? s : strdup("");
}

void fwt_worker_print_log(const fwt_worker *w, const char *why)
{
    char *log = fwt_worker_log(w);
    size_t n = strlen(log);
    const char *tail = n > 8000 ? log + n - 8000 : log;
    print_error("---- worker %ld (%s): %s; its log%s:\n%s\n---- end of worker log\n", (long)w->pid,
                w->addr[0] ? w->addr : "no address", why, n > 8000 ? " (tail)" : "", tail);
    free(log);
}

/* Sanitizer reports in the worker's log. */
static const char *sanitizer_report(const char *log)
{
    static const char *const marks[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                        "runtime error:", "WARNING: ThreadSanitizer"};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        const char *p = strstr(log, marks[i]);
        if (p)
            return p;
    }
    /* valgrind writing to the log (no --log-file): "== ERROR SUMMARY: N errors" with N > 0 */
    for (const char *p = log; (p = strstr(p, "== ERROR SUMMARY: ")) != NULL; p++)
        if (p[18] >= '1' && p[18] <= '9')
            return p;
    return NULL;
}

static char **build_env(const char *const *extra)
{
    size_t n = 0, ne = 0;
    while (environ[n])
        n++;
    while (extra && extra[ne])
        ne++;
    char **envp = calloc(n + ne + 1, sizeof *envp);
    if (!envp)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t nl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool overridden = false;
        for (size_t j = 0; j < ne && !overridden; j++)
            overridden = !strncmp(extra[j], environ[i], nl) && extra[j][nl] == '=';
        if (!overridden)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < ne; j++)
        envp[k++] = (char *)extra[j];
    envp[k] = NULL;
    return envp;
}

static bool has_arg(const char *const *args, const char *flag)
{
    size_t fl = strlen(flag);
    for (size_t i = 0; args && args[i]; i++)
        if (!strncmp(args[i], flag, fl) && (args[i][fl] == '\0' || args[i][fl] == '='))
            return true;
    return false;
}

/* True when the test sets flag itself, on the command line or through env_name in its
 * extra environment. */
static bool test_sets(const fwt_worker_opts *o, const char *flag, const char *env_name)
{
    if (has_arg(o->args, flag))
        return true;
    size_t el = strlen(env_name);
    for (size_t i = 0; o->env && o->env[i]; i++)
        if (!strncmp(o->env[i], env_name, el) && o->env[i][el] == '=')
            return true;
    return false;
}

#define FWT_MAX_CLOCKS 16

typedef struct slow_clock {
    char command[16], flag[48], env_name[48];
    double ms; /* the service's default; 0 ends the table */
} slow_clock;

static slow_clock g_clocks[FWT_MAX_CLOCKS + 1];
static pthread_once_t g_clocks_once = PTHREAD_ONCE_INIT;
static char g_clocks_error[1200];

static void clocks_init(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/integration/slow-clocks.txt",
             getenv("FW_SOURCE_DIR") ? getenv("FW_SOURCE_DIR") : ".");
    char *text = slurp(path, NULL);
    if (!text) {
        snprintf(g_clocks_error, sizeof g_clocks_error, "cannot read %s", path);
        return;
    }
    size_t n = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[strspn(line, " \t")] == '#' || line[strspn(line, " \t")] == '\0')
            continue;
        slow_clock c;
        char extra[2];
        if (n == FWT_MAX_CLOCKS ||
            sscanf(line, "%15s %47s %47s %lf %1s", c.command, c.flag, c.env_name, &c.ms, extra) !=
                4 ||
            c.ms <= 0) {
            snprintf(g_clocks_error, sizeof g_clocks_error, "%s: bad entry \"%.80s\"", path, line);
            break;
        }
        g_clocks[n++] = c;
    }
    free(text);
}

/* The clocks of tests/integration/slow-clocks.txt, ended by an entry with ms 0; fails the
 * test when the file cannot be read or parsed. */
static const slow_clock *slow_clocks(void)
{
    pthread_once(&g_clocks_once, clocks_init);
    if (g_clocks_error[0])
        fail_msg("harness: %s", g_clocks_error);
    return g_clocks;
}

static bool read_port_file(fwt_worker *w)
{
    char *s = slurp(w->port_file, NULL);
    if (!s)
        return false;
    char *nl = strchr(s, '\n');
    bool ok = false;
    if (nl && nl != s) {
        *nl = '\0';
        const char *colon = strrchr(s, ':');
        int port = colon ? atoi(colon + 1) : 0;
        if (port > 0 && port < 65536 && strlen(s) < sizeof w->addr) {
            snprintf(w->addr, sizeof w->addr, "%s", s);
            snprintf(w->url, sizeof w->url, "http://%s", s);
            w->port = port;
            ok = true;
        }
    }
    free(s);
    return ok;
}

fwt_worker *fwt_worker_start_opts(const fwt_worker_opts *o)
{
    init_once();
    const char *bin = env_or_fail("FW_FACEWORK");
    fwt_worker *w = calloc(1, sizeof *w);
    assert_non_null(w);
    snprintf(w->dir, sizeof w->dir, "/tmp/fwt-XXXXXX");
    if (!mkdtemp(w->dir))
        fail_msg("mkdtemp: %s", strerror(errno));
    snprintf(w->port_file, sizeof w->port_file, "%s/port", w->dir);
    snprintf(w->log_file, sizeof w->log_file, "%s/worker.log", w->dir);
    snprintf(w->lock_file, sizeof w->lock_file, "%s", o->lock_file ? o->lock_file : w->dir);
    if (!o->lock_file)
        strncat(w->lock_file, "/worker.lock", sizeof w->lock_file - strlen(w->lock_file) - 1);
    track(w);

    const char *argv[128 + FWT_MAX_WRAPPER_WORDS];
    size_t n = 0;
    bool is_worker = !o->command || !strcmp(o->command, "worker");
    fwt_wrapped(); /* parses FW_TEST_WRAPPER */
    for (size_t i = 0; i < g_n_wrapper; i++)
        argv[n++] = g_wrapper[i];
    argv[n++] = bin;
    argv[n++] = is_worker ? "worker" : o->command;
    argv[n++] = "--listen";
    argv[n++] = o->listen ? o->listen : "127.0.0.1:0";
    argv[n++] = "--port-file";
    argv[n++] = w->port_file;
    if (is_worker) {
        argv[n++] = "--lock-file";
        argv[n++] = w->lock_file;
    }
    if (!has_arg(o->args, "--log-level")) {
        argv[n++] = "--log-level";
        argv[n++] = "warn";
    }
    /* slow runs: the service's own clocks scaled as well (at most an hour each), unless the
     * test sets them (tests/integration/slow-clocks.txt) */
    char scaled[FWT_MAX_CLOCKS][32];
    const char *command = o->command ? o->command : "worker";
    const slow_clock *clocks = slow_clocks();
    for (size_t c = 0; fwt_time_scale() > 1.0 && clocks[c].ms > 0; c++) {
        if (strcmp(clocks[c].command, command) || test_sets(o, clocks[c].flag, clocks[c].env_name))
            continue;
        double v = clocks[c].ms * fwt_time_scale();
        snprintf(scaled[c], sizeof scaled[c], "%.0fms", v < 3600e3 ? v : 3600e3);
        argv[n++] = clocks[c].flag;
        argv[n++] = scaled[c];
    }
    for (size_t i = 0; o->args && o->args[i]; i++) {
        assert_true(n < sizeof argv / sizeof argv[0] - 1);
        argv[n++] = o->args[i];
    }
    argv[n] = NULL;
    char **envp = build_env(o->env);
    assert_non_null(envp);

    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(w->log_file, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || null < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || dup2(null, 0) < 0)
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        execvpe(argv[0], (char *const *)argv, envp); /* argv[0]: bin or the wrapper */
        static const char msg[] = "harness: execve failed\n";
        ssize_t wr = write(2, msg, sizeof msg - 1);
        (void)wr;
        _exit(127);
    }
    free(envp);
    w->pid = pid;
    if (o->no_wait)
        return w;

    double ready_s = FWT_READY_DEADLINE_S * fwt_time_scale();
    double deadline = fwt_now() + ready_s;
    while (!read_port_file(w)) {
        if (reap(w, false)) {
            fwt_worker_print_log(w, "exited before it was ready");
            fail_msg("worker exited with status %d before writing its port file",
                     fwt_exit_code(w->wstatus));
        }
        if (fwt_now() > deadline) {
            fwt_worker_print_log(w, "not ready in time");
            fail_msg("worker did not write its port file within %.0f s", ready_s);
        }
        fwt_pause_ms(10);
    }
    json_t *h = fwt_wait_healthy(w, FWT_READY_DEADLINE_S);
    json_decref(h);
    return w;
}

fwt_worker *fwt_worker_start(const char *const *args)
{
    fwt_worker_opts o = {.args = args};
    return fwt_worker_start_opts(&o);
}

json_t *fwt_wait_healthy(const fwt_worker *w, double timeout_s)
{
    timeout_s *= fwt_time_scale();
    double deadline = fwt_now() + timeout_s;
    for (;;) {
        fwt_resp r;
        fwt_get(w, "/health", FWT_H1, &r);
        if (r.status == 200) {
            json_t *j = fwt_expect_json(&r, 200);
            fwt_resp_free(&r);
            return j;
        }
        if (fwt_now() > deadline) {
            fwt_worker_print_log(w, "/health never answered 200");
            fail_msg("GET %s/health: status %ld (%s) after %.0f s", w->url, r.status,
                     r.status ? r.body : r.error, timeout_s);
        }
        fwt_resp_free(&r);
        fwt_pause_ms(20);
    }
}

bool fwt_worker_exited(fwt_worker *w)
{
    return reap(w, false);
}

bool fwt_worker_wait_exit(fwt_worker *w, double timeout_s)
{
    timeout_s *= fwt_time_scale();
    double deadline = fwt_now() + timeout_s;
    while (!reap(w, false)) {
        if (fwt_now() > deadline)
            return false;
        fwt_pause_ms(10);
    }
    return true;
}

int fwt_worker_stop(fwt_worker *w, int signo, double timeout_s)
{
    if (!w->exited && signo)
        kill(w->pid, signo);
    if (!fwt_worker_wait_exit(w, timeout_s)) { /* scales timeout_s */
        timeout_s *= fwt_time_scale();
        kill(w->pid, SIGKILL);
        reap(w, true);
        fwt_worker_print_log(w, "did not exit in time");
        fail_msg("worker %ld did not exit within %.1f s of signal %d", (long)w->pid, timeout_s,
                 signo);
    }
    char *log = fwt_worker_log(w);
    const char *rep = sanitizer_report(log);
    bool bad = rep != NULL;
    free(log);
    if (bad) {
        fwt_worker_print_log(w, "sanitizer report");
        fail_msg("the worker's log holds a sanitizer report");
    }
    return fwt_exit_code(w->wstatus);
}

void fwt_worker_free(fwt_worker *w)
{
    if (!w)
        return;
    if (!w->exited && w->pid > 0) {
        kill(w->pid, SIGKILL);
        reap(w, true);
    }
    untrack(w);
    remove_dir(w->dir);
    free(w);
}

static void kill_everything(void)
{
    for (size_t i = 0; i < FWT_MAX_FOREIGN; i++)
        if (g_foreign[i] > 0) {
            kill(g_foreign[i], SIGKILL);
            g_foreign[i] = 0;
        }
    for (size_t i = 0; i < FWT_MAX_WORKERS; i++)
        if (g_workers[i])
            fwt_worker_free(g_workers[i]); /* untracks */
}

int fwt_teardown(void **state)
{
    (void)state;
    kill_everything();
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* HTTP                                                                                     */

struct fwt_xfer {
    CURL *easy;
    curl_mime *mime;
    struct curl_slist *headers;
    char *buf;
    size_t len, cap;
    bool oom;
    fwt_resp hdr; /* captured headers */
    char error[CURL_ERROR_SIZE];
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user)
{
    fwt_xfer *x = user;
    size_t n = size * nmemb;
    if (x->len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        while (cap < x->len + n + 1)
            cap *= 2;
        char *nb = realloc(x->buf, cap);
        if (!nb) {
            x->oom = true;
            return 0;
        }
        x->buf = nb;
        x->cap = cap;
    }
    memcpy(x->buf + x->len, ptr, n);
    x->len += n;
    x->buf[x->len] = '\0';
    return n;
}

static void capture(char *dst, size_t cap, const char *v, size_t vl)
{
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    if (vl >= cap)
        vl = cap - 1;
    memcpy(dst, v, vl);
    dst[vl] = '\0';
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *user)
{
    fwt_xfer *x = user;
    size_t n = size * nmemb;
    if (n >= 5 && !strncmp(ptr, "HTTP/", 5)) { /* a new response (after 100 or 101) */
        x->hdr.content_type[0] = x->hdr.retry_after[0] = x->hdr.allow[0] = '\0';
        x->hdr.request_id[0] = x->hdr.connection[0] = '\0';
        return n;
    }
    const char *colon = memchr(ptr, ':', n);
    if (!colon)
        return n;
    size_t nl = (size_t)(colon - ptr);
    const char *v = colon + 1;
    size_t vl = n - nl - 1;
    while (vl && (*v == ' ' || *v == '\t'))
        v++, vl--;
    static const struct {
        const char *name;
        size_t off, cap;
    } want[] = {
        {"content-type", offsetof(fwt_resp, content_type), sizeof(((fwt_resp *)0)->content_type)},
        {"retry-after", offsetof(fwt_resp, retry_after), sizeof(((fwt_resp *)0)->retry_after)},
        {"allow", offsetof(fwt_resp, allow), sizeof(((fwt_resp *)0)->allow)},
        {"x-request-id", offsetof(fwt_resp, request_id), sizeof(((fwt_resp *)0)->request_id)},
        {"connection", offsetof(fwt_resp, connection), sizeof(((fwt_resp *)0)->connection)},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (strlen(want[i].name) == nl && !strncasecmp(ptr, want[i].name, nl))
            capture((char *)&x->hdr + want[i].off, want[i].cap, v, vl);
    return n;
}

/* Sets up x->easy (fresh or reset) for rq. */
static bool xfer_setup(fwt_xfer *x, const fwt_req *rq)
{
    CURL *e = x->easy;
    bool ok = true;
    ok &= curl_easy_setopt(e, CURLOPT_URL, rq->url) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    long scale = (long)fwt_time_scale();
    ok &= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                           rq->timeout_ms ? rq->timeout_ms : 180000L * scale) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L * scale) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_WRITEDATA, x) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_HEADERDATA, x) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->error) == CURLE_OK;
    if (getenv("FWT_CURL_VERBOSE")) /* debugging aid: curl's trace on stderr */
        ok &= curl_easy_setopt(e, CURLOPT_VERBOSE, 1L) == CURLE_OK;
    long ver = rq->proto == FWT_H2    ? (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
               : rq->proto == FWT_H2C ? (long)CURL_HTTP_VERSION_2_0
                                      : (long)CURL_HTTP_VERSION_1_1;
    ok &= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, ver) == CURLE_OK;

    for (size_t i = 0; rq->headers && rq->headers[i]; i++) {
        struct curl_slist *s = curl_slist_append(x->headers, rq->headers[i]);
        ok &= s != NULL;
        if (s)
            x->headers = s;
    }
    if (rq->n_parts) {
        x->mime = curl_mime_init(e);
        ok &= x->mime != NULL;
        for (size_t i = 0; ok && i < rq->n_parts; i++) {
            const fwt_part *p = &rq->parts[i];
            curl_mimepart *mp = curl_mime_addpart(x->mime);
            ok &= mp != NULL;
            if (!mp)
                break;
            size_t len = p->len == (size_t)-1 ? strlen(p->data) : p->len;
            ok &= curl_mime_name(mp, p->name) == CURLE_OK;
            ok &= curl_mime_data(mp, p->data ? p->data : "", len) == CURLE_OK;
            if (p->filename)
                ok &= curl_mime_filename(mp, p->filename) == CURLE_OK;
            if (p->type)
                ok &= curl_mime_type(mp, p->type) == CURLE_OK;
        }
        ok &= curl_easy_setopt(e, CURLOPT_MIMEPOST, x->mime) == CURLE_OK;
    } else if (rq->body || (rq->method && !strcmp(rq->method, "POST"))) {
        ok &=
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len) == CURLE_OK;
        ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDS, rq->body ? rq->body : "") == CURLE_OK;
        char ct[256];
        snprintf(ct, sizeof ct, "Content-Type: %s", rq->content_type ? rq->content_type : "");
        /* "Content-Type:" with no value removes the header curl would add */
        struct curl_slist *s = curl_slist_append(x->headers, ct);
        ok &= s != NULL;
        if (s)
            x->headers = s;
    }
    if (rq->method && strcmp(rq->method, "POST") && strcmp(rq->method, "GET"))
        ok &= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, rq->method) == CURLE_OK;
    if (rq->method && !strcmp(rq->method, "GET") && !rq->body && !rq->n_parts)
        ok &= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK;
    if (x->headers)
        ok &= curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers) == CURLE_OK;
    return ok;
}

fwt_xfer *fwt_xfer_new(const fwt_req *rq)
{
    init_once();
    fwt_xfer *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->easy = curl_easy_init();
    if (!x->easy || !xfer_setup(x, rq)) {
        fwt_xfer_free(x);
        return NULL;
    }
    return x;
}

CURL *fwt_xfer_easy(fwt_xfer *x)
{
    return x->easy;
}

void fwt_xfer_finish(fwt_xfer *x, CURLcode rc, fwt_resp *out)
{
    memset(out, 0, sizeof *out);
    *out = x->hdr;
    out->rc = rc;
    long status = 0, ver = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &ver);
    out->status = status;
    out->http_version = ver == CURL_HTTP_VERSION_2_0                                   ? 2
                        : ver == CURL_HTTP_VERSION_1_1 || ver == CURL_HTTP_VERSION_1_0 ? 1
                                                                                       : 0;
    snprintf(out->error, sizeof out->error, "%s", x->error[0] ? x->error : curl_easy_strerror(rc));
    if (x->oom)
        snprintf(out->error, sizeof out->error, "out of memory buffering the body");
    out->body = x->buf ? x->buf : strdup("");
    out->len = x->buf ? x->len : 0;
    x->buf = NULL;
    x->len = x->cap = 0;
}

void fwt_xfer_free(fwt_xfer *x)
{
    if (!x)
        return;
    curl_easy_cleanup(x->easy);
    curl_mime_free(x->mime);
    curl_slist_free_all(x->headers);
    free(x->buf);
    free(x);
}

void fwt_http(const fwt_req *rq, fwt_resp *out)
{
    fwt_xfer *x = fwt_xfer_new(rq);
    if (!x) {
        memset(out, 0, sizeof *out);
        out->rc = CURLE_OUT_OF_MEMORY;
        snprintf(out->error, sizeof out->error, "could not set up the transfer");
        out->body = strdup("");
        return;
    }
    CURLcode rc = curl_easy_perform(x->easy);
    fwt_xfer_finish(x, rc, out);
    fwt_xfer_free(x);
}

void fwt_http_reuse(CURL *easy, const fwt_req *rq, fwt_resp *out)
{
    init_once();
    curl_easy_reset(easy); /* keeps the handle's live connections */
    fwt_xfer x = {.easy = easy};
    CURLcode rc = xfer_setup(&x, rq) ? curl_easy_perform(easy) : CURLE_OUT_OF_MEMORY;
    fwt_xfer_finish(&x, rc, out);
    x.easy = NULL;
    curl_mime_free(x.mime);
    curl_slist_free_all(x.headers);
    free(x.buf);
}

void fwt_resp_free(fwt_resp *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

static void make_url(const fwt_worker *w, const char *path, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s", w->url, path);
}

void fwt_get(const fwt_worker *w, const char *path, fwt_proto proto, fwt_resp *out)
{
    char url[512];
    make_url(w, path, url, sizeof url);
    fwt_req rq = {.method = "GET", .url = url, .proto = proto};
    fwt_http(&rq, out);
}

void fwt_post(const fwt_worker *w, const char *path, const char *content_type, const void *body,
              size_t len, fwt_proto proto, fwt_resp *out)
{
    char url[512];
    make_url(w, path, url, sizeof url);
    fwt_req rq = {.method = "POST",
                  .url = url,
                  .body = body ? body : "",
                  .body_len = len,
                  .content_type = content_type,
                  .proto = proto};
    fwt_http(&rq, out);
}

void fwt_post_parts(const fwt_worker *w, const char *path, const fwt_part *parts, size_t n,
                    fwt_proto proto, fwt_resp *out)
{
    char url[512];
    make_url(w, path, url, sizeof url);
    fwt_req rq = {.url = url, .parts = parts, .n_parts = n, .proto = proto};
    fwt_http(&rq, out);
}

static void print_resp(const fwt_resp *r)
{
    size_t n = r->len;
    print_error("response: status %ld, curl: %s, content-type \"%s\", body (%zu bytes): %.*s\n",
                r->status, r->rc == CURLE_OK ? "ok" : r->error, r->content_type, n,
                (int)(n > 2000 ? 2000 : n), r->body ? r->body : "");
}

json_t *fwt_get_json(const fwt_worker *w, const char *path, long status)
{
    fwt_resp r;
    fwt_get(w, path, FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, status);
    fwt_resp_free(&r);
    return j;
}

const char *fwt_json_str(const json_t *obj, const char *k1, const char *k2)
{
    const json_t *v = json_object_get(obj, k1);
    if (k2)
        v = json_object_get(v, k2);
    if (!json_is_string(v))
        fail_msg("%s%s%s is not a string", k1, k2 ? "." : "", k2 ? k2 : "");
    return json_string_value(v);
}

json_t *fwt_expect_json(const fwt_resp *r, long status)
{
    if (r->status != status) {
        print_resp(r);
        fail_msg("expected HTTP status %ld, got %ld", status, r->status);
    }
    if (strncmp(r->content_type, "application/json", 16) != 0) {
        print_resp(r);
        fail_msg("expected Content-Type application/json, got \"%s\"", r->content_type);
    }
    json_error_t je;
    json_t *j = json_loadb(r->body, r->len, 0, &je);
    if (!j) {
        print_resp(r);
        fail_msg("response body is not JSON: %s (line %d)", je.text, je.line);
    }
    return j;
}

void fwt_expect_error(const fwt_resp *r, long status, const char *code)
{
    json_t *j = fwt_expect_json(r, status);
    json_t *e = json_object_get(j, "error");
    bool shape = json_is_object(j) && json_object_size(j) == 1 && json_is_object(e) &&
                 json_object_size(e) == 2 && json_is_string(json_object_get(e, "code")) &&
                 json_is_string(json_object_get(e, "message")) &&
                 json_string_length(json_object_get(e, "message")) > 0;
    if (!shape) {
        print_resp(r);
        json_decref(j);
        fail_msg("error body is not {\"error\":{\"code\":string,\"message\":string}}");
    }
    if (code && strcmp(json_string_value(json_object_get(e, "code")), code) != 0) {
        print_resp(r);
        char got[128];
        snprintf(got, sizeof got, "%s", json_string_value(json_object_get(e, "code")));
        json_decref(j);
        fail_msg("error code: expected \"%s\", got \"%s\"", code, got);
    }
    json_decref(j);
}

/* ---------------------------------------------------------------------------------------- */
/* data                                                                                     */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *fwt_b64_encode(const void *data, size_t len)
{
    const uint8_t *s = data;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    assert_non_null(out);
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = b64_alphabet[v >> 18 & 63];
        *o++ = b64_alphabet[v >> 12 & 63];
        *o++ = b64_alphabet[v >> 6 & 63];
        *o++ = b64_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *o++ = b64_alphabet[v >> 18 & 63];
        *o++ = b64_alphabet[v >> 12 & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *o++ = b64_alphabet[v >> 18 & 63];
        *o++ = b64_alphabet[v >> 12 & 63];
        *o++ = b64_alphabet[v >> 6 & 63];
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

uint8_t *fwt_b64_decode(const char *s, size_t *len)
{
    size_t n = strlen(s);
    if (n % 4)
        return NULL;
    uint8_t *out = malloc(n / 4 * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = s[i + k];
            const char *p = c ? strchr(b64_alphabet, c) : NULL;
            if (c == '=' && i + 4 == n && k >= 2) {
                pad++;
                v <<= 6;
                continue;
            }
            if (!p || pad) {
                free(out);
                return NULL;
            }
            v = v << 6 | (uint32_t)(p - b64_alphabet);
        }
        out[o++] = (uint8_t)(v >> 16);
        if (pad < 2)
            out[o++] = (uint8_t)(v >> 8);
        if (pad < 1)
            out[o++] = (uint8_t)v;
    }
    *len = o;
    return out;
}

float fwt_half_to_float(uint16_t h)
{
    int sign = h >> 15 ? -1 : 1;
    int exp = h >> 10 & 0x1f;
    int mant = h & 0x3ff;
    if (exp == 0)
        return (float)(sign * ldexp(mant, -24)); /* subnormal (or zero) */
    if (exp == 31)
        return mant ? NAN : (float)sign * INFINITY;
    return (float)(sign * ldexp(1024 + mant, exp - 25));
}

float *fwt_json_floats(const json_t *arr, size_t *n)
{
    if (!json_is_array(arr))
        return NULL;
    size_t len = json_array_size(arr);
    float *v = malloc((len ? len : 1) * sizeof *v);
    if (!v)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        const json_t *x = json_array_get(arr, i);
        if (!json_is_number(x)) {
            free(v);
            return NULL;
        }
        v[i] = (float)json_number_value(x);
    }
    *n = len;
    return v;
}

double fwt_dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

static bool number_array(const json_t *a, size_t n)
{
    if (!json_is_array(a) || json_array_size(a) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!json_is_number(json_array_get(a, i)))
            return false;
    return true;
}

static double num(const json_t *a, size_t i)
{
    return json_number_value(json_array_get(a, i));
}

void fwt_check_face(const json_t *face, int width, int height, bool want_embedding)
{
    char *dump = json_dumps(face, JSON_COMPACT);
    const json_t *bbox = json_object_get(face, "bbox");
    double sx = 0.1 * width, sy = 0.1 * height;
    if (!number_array(bbox, 4))
        fail_msg("face without a 4-number bbox: %.300s", dump);
    double x1 = num(bbox, 0), y1 = num(bbox, 1), x2 = num(bbox, 2), y2 = num(bbox, 3);
    if (!(x1 < x2 && y1 < y2 && x1 > -sx && y1 > -sy && x2 < width + sx && y2 < height + sy))
        fail_msg("implausible bbox in a %dx%d image: %.300s", width, height, dump);
    const json_t *lm = json_object_get(face, "landmarks");
    if (!json_is_array(lm) || json_array_size(lm) != 5)
        fail_msg("face without 5 landmarks: %.300s", dump);
    for (size_t k = 0; k < 5; k++) {
        const json_t *p = json_array_get(lm, k);
        if (!number_array(p, 2))
            fail_msg("landmark %zu is not [x, y]: %.300s", k, dump);
        double x = num(p, 0), y = num(p, 1);
        if (!(x > -sx && x < width + sx && y > -sy && y < height + sy))
            fail_msg("landmark %zu outside the image: %.300s", k, dump);
    }
    if (want_embedding) {
        size_t n = 0;
        float *e = fwt_json_floats(json_object_get(face, "embedding"), &n);
        if (!e || n != 512) {
            free(e);
            fail_msg("face without a 512-float embedding: %.300s", dump);
            return; /* not reached: fail_msg does not return */
        }
        double norm = sqrt(fwt_dot(e, e, n));
        free(e);
        if (fabs(norm - 1.0) > 1e-3)
            fail_msg("embedding norm %.6f is not 1: %.300s", norm, dump);
    }
    free(dump);
}

static double box_diff(const json_t *a, const json_t *b)
{
    double d = 0;
    for (size_t k = 0; k < 4; k++)
        d = fmax(d, fabs(num(a, k) - num(b, k)));
    return d;
}

void fwt_match_faces(const json_t *got, const json_t *want, double box_tol, double min_cos)
{
    assert_true(json_is_array(got));
    assert_true(json_is_array(want));
    size_t n = json_array_size(got), m = json_array_size(want);
    if (n != m)
        fail_msg("face count differs: got %zu, expected %zu", n, m);
    bool used[256] = {false};
    assert_true(m <= 256);
    for (size_t i = 0; i < n; i++) {
        const json_t *g = json_array_get(got, i);
        const json_t *gb = json_object_get(g, "bbox");
        assert_true(number_array(gb, 4));
        size_t best = m;
        double bd = INFINITY;
        for (size_t j = 0; j < m; j++) {
            const json_t *wb = json_object_get(json_array_get(want, j), "bbox");
            assert_true(number_array(wb, 4));
            double d = box_diff(gb, wb);
            if (!used[j] && d < bd)
                bd = d, best = j;
        }
        if (best == m || bd > box_tol) {
            char *gs = json_dumps(gb, JSON_COMPACT);
            fail_msg("face %zu bbox %s has no match within %.2f px (closest differs by %.3f)", i,
                     gs, box_tol, bd);
        }
        used[best] = true;
        if (min_cos > 0) {
            size_t d1 = 0, d2 = 0;
            float *e1 = fwt_json_floats(json_object_get(g, "embedding"), &d1);
            float *e2 =
                fwt_json_floats(json_object_get(json_array_get(want, best), "embedding"), &d2);
            if (!e1 || !e2 || d1 != d2 || d1 == 0) {
                free(e1);
                free(e2);
                fail_msg("face %zu: missing or mismatched embeddings", i);
            }
            double c = fwt_dot(e1, e2, d1);
            free(e1);
            free(e2);
            if (!(c > min_cos))
                fail_msg("face %zu: embedding cosine %.6f <= %.6f", i, c, min_cos);
        }
    }
}

json_t *fwt_cli_analyze(const char *path)
{
    init_once();
    char cmd[4096];
    const char *wrapper = fwt_wrapped() && !fwt_reduced() ? getenv("FW_TEST_WRAPPER") : "";
    snprintf(cmd, sizeof cmd, "%s '%s' analyze '%s' 2>/dev/null", wrapper,
             env_or_fail("FW_FACEWORK"), path);
    fflush(NULL);
    FILE *p = popen(cmd, "r");
    if (!p)
        fail_msg("popen %s: %s", cmd, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n < 2) {
            buf = realloc(buf, cap *= 2);
            assert_non_null(buf);
        }
    }
    buf[n] = '\0';
    int st = pclose(p);
    if (st != 0) {
        free(buf);
        fail_msg("`%s` exited with status %d", cmd, st);
    }
    json_error_t je;
    json_t *j = json_loads(buf, 0, &je);
    if (!j)
        fail_msg("`%s` printed no JSON: %s; output: %.500s", cmd, je.text, buf);
    free(buf);
    return j;
}

bool fwt_metric(const char *text, const char *series, double *value)
{
    size_t sl = strlen(series);
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        if (!strncmp(line, series, sl) && line[sl] == ' ') {
            char *stop;
            double v = strtod(line + sl + 1, &stop);
            if (stop != line + sl + 1) {
                if (value)
                    *value = v;
                return true;
            }
        }
        line = end ? end + 1 : NULL;
    }
    return false;
}

/* ---------------------------------------------------------------------------------------- */
/* sockets                                                                                  */

int fwt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0)
        fail_msg("binding 127.0.0.1:0: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

int fwt_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
