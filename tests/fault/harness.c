/* Fault-test harness: see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define FTH_MAX_PROCS 32
#define FTH_READY_S 60.0
#define FTH_MAX_THREADS 16

static const int PHOTO_FACES[7] = {0, 3, 3, 3, 4, 5, 4};

static fth_proc *g_procs[FTH_MAX_PROCS];
static struct fth_stream *g_streams[FTH_MAX_PROCS]; /* running streams, for the teardown */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void kill_everything(void);

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

double fth_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void fth_pause_ms(int ms)
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
        n += fread(buf + n, 1, cap - n, f);
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

static const char *env_or_fail(const char *name)
{
    const char *v = getenv(name);
    if (!v || !v[0])
        fail_msg("environment variable %s is not set (run the test through ctest)", name);
    return v;
}

/* sample<i>.jpg, read once (the first call must come from the test's thread). */
static const uint8_t *photo(int i, size_t *len)
{
    static char *data[7];
    static size_t lens[7];
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    if (i < 1 || i > 6)
        return NULL;
    pthread_mutex_lock(&mu);
    if (!data[i]) {
        char path[1024];
        const char *dir = getenv("FW_PHOTOS_DIR");
        snprintf(path, sizeof path, "%s/sample%d.jpg", dir ? dir : ".", i);
        data[i] = slurp(path, &lens[i]);
    }
    pthread_mutex_unlock(&mu);
    if (len)
        *len = lens[i];
    return (const uint8_t *)data[i];
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

static void track(fth_proc *p)
{
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < FTH_MAX_PROCS; i++)
        if (!g_procs[i]) {
            g_procs[i] = p;
            pthread_mutex_unlock(&g_mu);
            return;
        }
    pthread_mutex_unlock(&g_mu);
    fail_msg("too many processes started by one test");
}

static void untrack(fth_proc *p)
{
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < FTH_MAX_PROCS; i++)
        if (g_procs[i] == p)
            g_procs[i] = NULL;
    pthread_mutex_unlock(&g_mu);
}

static int exit_code(int wstatus)
{
    if (WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus))
        return 128 + WTERMSIG(wstatus);
    return -1;
}

static bool reap(fth_proc *p, bool block)
{
    if (p->exited)
        return true;
    int st;
    pid_t r;
    do
        r = waitpid(p->pid, &st, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == p->pid) {
        p->exited = true;
        p->wstatus = st;
        return true;
    }
    if (r < 0) {
        p->exited = true;
        p->wstatus = 0xff00;
        return true;
    }
    return false;
}

char *fth_log(const fth_proc *p)
{
    char *s = slurp(p->log_file, NULL);
    return s ? s : strdup("");
}

void fth_print_log(const fth_proc *p, const char *why)
{
    char *log = fth_log(p);
    size_t n = strlen(log);
    const char *tail = n > 6000 ? log + n - 6000 : log;
    fprintf(stderr, "---- %s %ld (%s): %s; its log%s:\n%s\n---- end of log\n", p->kind,
            (long)p->pid, p->url[0] ? p->url : p->listen, why, n > 6000 ? " (tail)" : "", tail);
    free(log);
}

bool fth_log_contains(const fth_proc *p, const char *text)
{
    char *log = fth_log(p);
    bool found = strstr(log, text) != NULL;
    free(log);
    return found;
}

void fth_wait_log(const fth_proc *p, const char *text, double timeout_s)
{
    double deadline = fth_now() + timeout_s;
    while (!fth_log_contains(p, text)) {
        if (fth_now() > deadline) {
            fth_print_log(p, "expected log line missing");
            fail_msg("%s log never said \"%s\" within %.0f s", p->kind, text, timeout_s);
        }
        fth_pause_ms(20);
    }
}

static const char *sanitizer_report(const char *log)
{
    static const char *const marks[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                        "runtime error:", "WARNING: ThreadSanitizer"};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        const char *p = strstr(log, marks[i]);
        if (p)
            return p;
    }
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
        /* settings of the parent's own environment must not leak into the children */
        bool ours = !strncmp(environ[i], "GPU_WORKER_", 11) || !strncmp(environ[i], "FACEWORK_", 9);
        if (!overridden && !ours)
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

static bool read_port_file(fth_proc *p)
{
    char *s = slurp(p->port_file, NULL);
    if (!s)
        return false;
    char *nl = strchr(s, '\n');
    bool ok = false;
    if (nl && nl != s) {
        *nl = '\0';
        const char *colon = strrchr(s, ':');
        int port = colon ? atoi(colon + 1) : 0;
        if (port > 0 && port < 65536) {
            snprintf(p->url, sizeof p->url, "http://%s", s);
            p->port = port;
            ok = true;
        }
    }
    free(s);
    return ok;
}

int fth_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

fth_proc *fth_start(const char *kind, const fth_opts *o)
{
    init_once();
    static const fth_opts none;
    if (!o)
        o = &none;
    const char *bin = env_or_fail("FW_FACEWORK");
    fth_proc *p = calloc(1, sizeof *p);
    assert_non_null(p);
    snprintf(p->kind, sizeof p->kind, "%s", kind);
    snprintf(p->dir, sizeof p->dir, "/tmp/fth-%s-XXXXXX", kind);
    if (!mkdtemp(p->dir))
        fail_msg("mkdtemp: %s", strerror(errno));
    snprintf(p->port_file, sizeof p->port_file, "%s/port", p->dir);
    snprintf(p->log_file, sizeof p->log_file, "%s/%s.log", p->dir, kind);
    snprintf(p->lock_file, sizeof p->lock_file, "%s/worker.lock", p->dir);
    snprintf(p->listen, sizeof p->listen, "127.0.0.1:%d", o->port);
    if (o->port) {
        snprintf(p->url, sizeof p->url, "http://127.0.0.1:%d", o->port);
        p->port = o->port;
    }
    track(p);

    const char *argv[128];
    size_t n = 0;
    argv[n++] = bin;
    argv[n++] = kind;
    argv[n++] = "--listen";
    argv[n++] = p->listen;
    argv[n++] = "--port-file";
    argv[n++] = p->port_file;
    if (!strcmp(kind, "worker")) {
        argv[n++] = "--lock-file";
        argv[n++] = p->lock_file;
    }
    if (!has_arg(o->args, "--log-level")) {
        const char *lvl = getenv("FTH_LOG_LEVEL"); /* debugging a scenario: more logs */
        argv[n++] = "--log-level";
        argv[n++] = lvl && lvl[0] ? lvl : "warn";
    }
    for (size_t i = 0; o->args && o->args[i]; i++) {
        assert_true(n < sizeof argv / sizeof argv[0] - 1);
        argv[n++] = o->args[i];
    }
    argv[n] = NULL;

    char models[1100];
    snprintf(models, sizeof models, "FACEWORK_MODELS=%s", env_or_fail("FW_MODELS_DIR"));
    const char *extra[64];
    size_t ne = 0;
    extra[ne++] = models;
    for (size_t i = 0; o->env && o->env[i]; i++) {
        assert_true(ne < sizeof extra / sizeof extra[0] - 1);
        extra[ne++] = o->env[i];
    }
    extra[ne] = NULL;
    char **envp = build_env(extra);
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
        int fd = open(p->log_file, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || null < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || dup2(null, 0) < 0 ||
            chdir(p->dir) != 0)
            _exit(127);
        sigset_t empty;
        sigemptyset(&empty);
        sigprocmask(SIG_SETMASK, &empty, NULL);
        signal(SIGPIPE, SIG_DFL);
        execve(bin, (char *const *)argv, envp);
        static const char msg[] = "harness: execve failed\n";
        ssize_t wr = write(2, msg, sizeof msg - 1);
        (void)wr;
        _exit(127);
    }
    free(envp);
    p->pid = pid;
    if (!o->no_wait)
        fth_wait_ready(p, FTH_READY_S);
    return p;
}

fth_proc *fth_worker_start(int port)
{
    fth_opts o = {.port = port};
    return fth_start("worker", &o);
}

fth_proc *fth_backend_start(const char *worker_urls, const char *const *extra_env,
                            const fth_opts *o)
{
    char url[1100];
    snprintf(url, sizeof url, "GPU_WORKER_URL=%s", worker_urls);
    const char *env[64] = {
        url,
        "GPU_WORKER_TIMEOUT=5s",
        "GPU_WORKER_ATTEMPT_TIMEOUT=2s",
        "GPU_WORKER_CONNECT_TIMEOUT=500ms",
        "GPU_WORKER_MAX_RETRIES=2",
        "GPU_WORKER_BATCH_SIZE=2",
        "GPU_WORKER_HEALTH_CHECK_INTERVAL=200ms",
        "GPU_WORKER_CB_FAILURE_THRESHOLD=3",
        "GPU_WORKER_CB_MIN_REQUESTS=3",
        "GPU_WORKER_CB_RECOVERY_TIMEOUT=1s",
        "GPU_WORKER_CB_SUCCESS_THRESHOLD=2",
        "GPU_WORKER_BACKOFF_BASE=20ms",
        "GPU_WORKER_BACKOFF_MAX=200ms",
        "FACEWORK_BACKEND_THREADS=4",
    };
    size_t n = 0;
    while (env[n])
        n++;
    for (size_t i = 0; extra_env && extra_env[i]; i++) {
        const char *eq = strchr(extra_env[i], '=');
        assert_non_null(eq);
        size_t nl = (size_t)(eq - extra_env[i]) + 1;
        size_t k = 0;
        while (k < n && strncmp(env[k], extra_env[i], nl))
            k++;
        if (k == n) {
            assert_true(n < sizeof env / sizeof env[0] - 1);
            n++;
        }
        env[k] = extra_env[i];
    }
    env[n] = NULL;
    fth_opts opts = o ? *o : (fth_opts){0};
    opts.env = env;
    return fth_start("backend", &opts);
}

void fth_wait_ready(fth_proc *p, double timeout_s)
{
    double deadline = fth_now() + timeout_s;
    while (!read_port_file(p)) {
        if (reap(p, false)) {
            fth_print_log(p, "exited before it was ready");
            fail_msg("%s exited with status %d before writing its port file", p->kind,
                     exit_code(p->wstatus));
        }
        if (fth_now() > deadline) {
            fth_print_log(p, "not ready in time");
            fail_msg("%s did not write its port file within %.0f s", p->kind, timeout_s);
        }
        fth_pause_ms(10);
    }
    char url[160];
    snprintf(url, sizeof url, "%s/health", p->url);
    for (;;) {
        fth_resp r;
        fth_get(url, 2000, &r);
        long st = r.status;
        fth_resp_free(&r);
        if (st == 200)
            return;
        if (reap(p, false)) {
            fth_print_log(p, "exited");
            fail_msg("%s exited with status %d", p->kind, exit_code(p->wstatus));
        }
        if (fth_now() > deadline) {
            fth_print_log(p, "not healthy in time");
            fail_msg("%s /health not 200 within %.0f s (last %ld)", p->kind, timeout_s, st);
        }
        fth_pause_ms(20);
    }
}

void fth_signal(fth_proc *p, int signo)
{
    assert_false(p->exited);
    assert_int_equal(kill(p->pid, signo), 0);
}

bool fth_exited(fth_proc *p)
{
    return reap(p, false);
}

int fth_stop(fth_proc *p, int signo, double timeout_s)
{
    if (signo && !p->exited)
        kill(p->pid, signo);
    double deadline = fth_now() + timeout_s;
    while (!reap(p, false)) {
        if (fth_now() > deadline) {
            kill(p->pid, SIGKILL);
            reap(p, true);
            fth_print_log(p, "did not exit in time");
            fail_msg("%s did not exit within %.1f s of signal %d", p->kind, timeout_s, signo);
        }
        fth_pause_ms(10);
    }
    char *log = fth_log(p);
    const char *rep = sanitizer_report(log);
    if (rep) {
        fth_print_log(p, "sanitizer report");
        free(log);
        fail_msg("%s log holds a sanitizer report", p->kind);
    }
    free(log);
    return exit_code(p->wstatus);
}

void fth_free(fth_proc *p)
{
    if (!p)
        return;
    if (!p->exited) {
        kill(p->pid, SIGCONT);
        kill(p->pid, SIGKILL);
        reap(p, true);
    }
    untrack(p);
    remove_dir(p->dir);
    free(p);
}

static void kill_everything(void)
{
    for (size_t i = 0; i < FTH_MAX_PROCS; i++) {
        fth_proc *p = g_procs[i];
        if (p && !p->exited) {
            kill(p->pid, SIGCONT);
            kill(p->pid, SIGKILL);
            reap(p, true);
        }
    }
}

static void stream_abandon(struct fth_stream *s);

int fth_teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < FTH_MAX_PROCS; i++) {
        fth_proc *p = g_procs[i];
        if (!p)
            continue;
        /* a child that died on its own, or reported a sanitizer error, explains a failure */
        bool died =
            reap(p, false) && exit_code(p->wstatus) != 0 && exit_code(p->wstatus) != 128 + SIGKILL;
        char *log = fth_log(p);
        if (died || sanitizer_report(log))
            fth_print_log(p, died ? "died" : "sanitizer report");
        free(log);
        if (getenv("FTH_KEEP_DIRS")) {
            fprintf(stderr, "[fault] kept %s\n", p->dir);
            p->dir[0] = '\0';
        }
        fth_free(p);
    }
    /* streams a failed test left running: their requests now fail fast */
    for (size_t i = 0; i < FTH_MAX_PROCS; i++)
        if (g_streams[i])
            stream_abandon(g_streams[i]);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* HTTP                                                                                     */

typedef struct sink {
    char *data;
    size_t len, cap;
    bool oom;
} sink;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user)
{
    sink *s = user;
    size_t n = size * nmemb;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *d = realloc(s->data, cap);
        if (!d) {
            s->oom = true;
            return 0;
        }
        s->data = d;
        s->cap = cap;
    }
    memcpy(s->data + s->len, ptr, n);
    s->len += n;
    s->data[s->len] = '\0';
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *user)
{
    fth_resp *r = user;
    size_t n = size * nmemb;
    if (n > 12 && !strncasecmp(ptr, "retry-after:", 12)) {
        const char *v = ptr + 12;
        size_t vl = n - 12;
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl >= sizeof r->retry_after)
            vl = sizeof r->retry_after - 1;
        memcpy(r->retry_after, v, vl);
        r->retry_after[vl] = '\0';
    }
    return n;
}

static void perform(CURL *e, fth_resp *out)
{
    sink s = {0};
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, out->error);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    out->rc = curl_easy_perform(e);
    if (out->rc == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &out->seconds);
    if (!s.data)
        s.data = calloc(1, 1);
    out->body = s.data;
    out->len = s.len;
}

void fth_get(const char *url, long timeout_ms, fth_resp *out)
{
    init_once();
    memset(out, 0, sizeof *out);
    CURL *e = curl_easy_init();
    if (!e) {
        out->body = calloc(1, 1);
        snprintf(out->error, sizeof out->error, "curl_easy_init failed");
        return;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 30000L);
    perform(e, out);
    curl_easy_cleanup(e);
}

void fth_post_images(const char *url, const int *photos, const char *const *ids, size_t n,
                     long timeout_ms, fth_resp *out)
{
    init_once();
    memset(out, 0, sizeof *out);
    CURL *e = curl_easy_init();
    curl_mime *mime = e ? curl_mime_init(e) : NULL;
    if (!mime) {
        if (e)
            curl_easy_cleanup(e);
        out->body = calloc(1, 1);
        snprintf(out->error, sizeof out->error, "curl init failed");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        const uint8_t *data = photo(photos[i], &len);
        curl_mimepart *part = curl_mime_addpart(mime);
        curl_mime_name(part, "image");
        curl_mime_filename(part, ids[i]);
        curl_mime_type(part, "image/jpeg");
        curl_mime_data(part, (const char *)data, data ? len : 0);
    }
    struct curl_slist *hdr = curl_slist_append(NULL, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 120000L);
    perform(e, out);
    curl_easy_cleanup(e);
    curl_mime_free(mime);
    curl_slist_free_all(hdr);
}

void fth_resp_free(fth_resp *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
}

json_t *fth_get_json(const char *base, const char *path, long *status)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    fth_resp r;
    fth_get(url, 5000, &r);
    if (status)
        *status = r.status;
    json_t *j = r.status ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    fth_resp_free(&r);
    return j;
}

/* ---------------------------------------------------------------------------------------- */
/* results                                                                                  */

void fth_tally_add(fth_tally *t, const char *origin, size_t n)
{
    t->items += n;
    for (size_t i = 0; i < t->n_origins; i++)
        if (!strcmp(t->origin[i], origin)) {
            t->count[i] += n;
            return;
        }
    size_t i = t->n_origins < FTH_MAX_ORIGINS ? t->n_origins++ : FTH_MAX_ORIGINS - 1;
    snprintf(t->origin[i], sizeof t->origin[i], "%s", origin);
    t->count[i] += n;
}

size_t fth_tally_of(const fth_tally *t, const char *origin)
{
    for (size_t i = 0; i < t->n_origins; i++)
        if (!strcmp(t->origin[i], origin))
            return t->count[i];
    return 0;
}

size_t fth_tally_fallback(const fth_tally *t)
{
    return fth_tally_of(t, "cpu-fallback");
}

void fth_tally_merge(fth_tally *into, const fth_tally *from)
{
    for (size_t i = 0; i < from->n_origins; i++)
        fth_tally_add(into, from->origin[i], from->count[i]);
}

void fth_tally_print(const fth_tally *t, const char *scenario)
{
    char line[1024];
    size_t k = 0;
    for (size_t i = 0; i < t->n_origins && k < sizeof line; i++)
        k += (size_t)snprintf(line + k, sizeof line - k, " %s=%zu", t->origin[i], t->count[i]);
    if (k == 0)
        snprintf(line, sizeof line, " none");
    fprintf(stderr, "[fault] %s: %zu items; fallback rate %.3f; origins:%s\n", scenario, t->items,
            t->items ? (double)fth_tally_fallback(t) / (double)t->items : 0.0, line);
}

bool fth_check_analyze(const fth_resp *r, const int *photos, const char *const *ids, size_t n,
                       fth_tally *t, char *problem, size_t cap)
{
    if (r->status != 200) {
        snprintf(problem, cap, "status %ld (%s) body %.300s", r->status, r->status ? "" : r->error,
                 r->body ? r->body : "");
        return false;
    }
    json_error_t jerr;
    json_t *root = json_loadb(r->body, r->len, 0, &jerr);
    if (!root) {
        snprintf(problem, cap, "answer is not JSON: %s", jerr.text);
        return false;
    }
    bool ok = false;
    json_t *results = json_object_get(root, "results");
    json_t *origins = json_object_get(root, "origins");
    if (!json_is_array(results) || json_array_size(results) != n) {
        snprintf(problem, cap, "%zu results for %zu images", json_array_size(results), n);
        goto out;
    }
    if (!json_is_array(origins) || json_array_size(origins) != n) {
        snprintf(problem, cap, "%zu origins for %zu images", json_array_size(origins), n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *res = json_array_get(results, i);
        json_t *idx = json_object_get(res, "index");
        const char *id = json_string_value(json_object_get(res, "id"));
        const char *origin = json_string_value(json_array_get(origins, i));
        if (!json_is_integer(idx) || json_integer_value(idx) != (json_int_t)i || !id ||
            strcmp(id, ids[i])) {
            snprintf(problem, cap, "result %zu has index/id %lld/%s, want %zu/%s", i,
                     (long long)json_integer_value(idx), id ? id : "(none)", i, ids[i]);
            goto out;
        }
        if (json_object_get(res, "error")) {
            char *e = json_dumps(json_object_get(res, "error"), JSON_COMPACT);
            snprintf(problem, cap, "image %s failed: %s (origin %s)", ids[i], e ? e : "?",
                     origin ? origin : "?");
            free(e);
            goto out;
        }
        json_t *faces = json_object_get(res, "faces");
        if (!json_is_array(faces) || json_array_size(faces) != (size_t)PHOTO_FACES[photos[i]]) {
            snprintf(problem, cap, "image %s (sample%d): %zu faces, want %d (origin %s)", ids[i],
                     photos[i], json_array_size(faces), PHOTO_FACES[photos[i]],
                     origin ? origin : "?");
            goto out;
        }
        for (size_t f = 0; f < json_array_size(faces); f++) {
            json_t *emb = json_object_get(json_array_get(faces, f), "embedding");
            if (json_array_size(emb) != 512) {
                snprintf(problem, cap, "image %s face %zu: embedding of %zu values", ids[i], f,
                         json_array_size(emb));
                goto out;
            }
        }
        if (!origin || !origin[0]) {
            snprintf(problem, cap, "image %s: no origin", ids[i]);
            goto out;
        }
    }
    for (size_t i = 0; i < n && t; i++)
        fth_tally_add(t, json_string_value(json_array_get(origins, i)), 1);
    ok = true;
out:
    json_decref(root);
    return ok;
}

void fth_analyze_ok(const char *backend_url, const int *photos, size_t n, fth_tally *t)
{
    fth_analyze_ok_within(backend_url, photos, n, t, 120);
}

void fth_analyze_ok_within(const char *backend_url, const int *photos, size_t n, fth_tally *t,
                           double timeout_s)
{
    static atomic_uint seq;
    char idbuf[16][32];
    const char *ids[16];
    assert_true(n <= 16);
    unsigned s = atomic_fetch_add(&seq, 1);
    for (size_t i = 0; i < n; i++) {
        snprintf(idbuf[i], sizeof idbuf[i], "m%u-%zu", s, i);
        ids[i] = idbuf[i];
    }
    char url[256];
    snprintf(url, sizeof url, "%s/v1/analyze", backend_url);
    fth_resp r;
    fth_post_images(url, photos, ids, n, (long)(timeout_s * 1000), &r);
    char problem[512];
    bool ok = fth_check_analyze(&r, photos, ids, n, t, problem, sizeof problem);
    fth_resp_free(&r);
    if (!ok)
        fail_msg("backend answer: %s", problem);
}

/* ---------------------------------------------------------------------------------------- */
/* backend status                                                                           */

json_t *fth_backend_worker(json_t *health, const char *url)
{
    json_t *ws = json_object_get(health, "workers");
    for (size_t i = 0; i < json_array_size(ws); i++) {
        json_t *w = json_array_get(ws, i);
        const char *u = json_string_value(json_object_get(w, "url"));
        if (u && !strcmp(u, url))
            return w;
    }
    return NULL;
}

const char *fth_breaker(const char *backend_url, const char *worker_url, char *buf, size_t cap)
{
    buf[0] = '\0';
    json_t *h = fth_get_json(backend_url, "/health", NULL);
    json_t *w = fth_backend_worker(h, worker_url);
    const char *b = json_string_value(json_object_get(w, "breaker"));
    snprintf(buf, cap, "%s", b ? b : "");
    json_decref(h);
    return buf;
}

long fth_transitions(const char *backend_url, const char *worker_url, const char *from,
                     const char *to)
{
    json_t *h = fth_get_json(backend_url, "/health", NULL);
    json_t *w = fth_backend_worker(h, worker_url);
    char key[64];
    snprintf(key, sizeof key, "%s->%s", from, to);
    long n = (long)json_integer_value(json_object_get(json_object_get(w, "transitions"), key));
    json_decref(h);
    return n;
}

static void print_health(const char *backend_url)
{
    json_t *h = fth_get_json(backend_url, "/health", NULL);
    char *s = h ? json_dumps(h, JSON_INDENT(1)) : NULL;
    fprintf(stderr, "backend /health: %s\n", s ? s : "(no answer)");
    free(s);
    json_decref(h);
}

void fth_wait_breaker(const char *backend_url, const char *worker_url, const char *state,
                      double timeout_s)
{
    double deadline = fth_now() + timeout_s;
    char buf[32];
    while (strcmp(fth_breaker(backend_url, worker_url, buf, sizeof buf), state)) {
        if (fth_now() > deadline) {
            print_health(backend_url);
            fail_msg("breaker of %s is '%s', not '%s', after %.1f s", worker_url, buf, state,
                     timeout_s);
        }
        fth_pause_ms(20);
    }
}

void fth_wait_worker_health(const char *backend_url, const char *worker_url, bool want,
                            double timeout_s)
{
    double deadline = fth_now() + timeout_s;
    for (;;) {
        json_t *h = fth_get_json(backend_url, "/health", NULL);
        json_t *hw = json_object_get(fth_backend_worker(h, worker_url), "health");
        bool checked = json_is_true(json_object_get(hw, "checked"));
        bool ok = json_is_true(json_object_get(hw, "ok"));
        json_decref(h);
        if (checked && ok == want)
            return;
        if (fth_now() > deadline) {
            print_health(backend_url);
            fail_msg("health of %s never became %s within %.1f s", worker_url,
                     want ? "ok" : "failed", timeout_s);
        }
        fth_pause_ms(20);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* streams                                                                                  */

struct fth_stream;
typedef struct stream_arg {
    struct fth_stream *s;
    unsigned me;
} stream_arg;

struct fth_stream {
    char url[256];
    unsigned n_threads;
    size_t per;
    pthread_t th[FTH_MAX_THREADS];
    stream_arg args[FTH_MAX_THREADS];
    atomic_bool stop;
    atomic_uint running; /* threads still sending */
    pthread_mutex_t mu;
    /* under mu */
    size_t items, requests, bad;
    double slowest;
    fth_tally tally;
    char problems[2048];
};

static void *stream_main(void *arg)
{
    fth_stream *s = ((stream_arg *)arg)->s;
    unsigned me = ((stream_arg *)arg)->me;
    size_t seq = 0;
    while (!atomic_load(&s->stop)) {
        int photos[16];
        char idbuf[16][40];
        const char *ids[16];
        for (size_t i = 0; i < s->per; i++) {
            photos[i] = (int)((seq * s->per + i + me) % 6) + 1;
            snprintf(idbuf[i], sizeof idbuf[i], "s%u-%zu-%zu", me, seq, i);
            ids[i] = idbuf[i];
        }
        seq++;
        fth_resp r;
        fth_post_images(s->url, photos, ids, s->per, 0, &r);
        fth_tally t = {0};
        char problem[512];
        bool ok = fth_check_analyze(&r, photos, ids, s->per, &t, problem, sizeof problem);
        pthread_mutex_lock(&s->mu);
        s->requests++;
        s->items += s->per;
        if (r.seconds > s->slowest)
            s->slowest = r.seconds;
        if (ok) {
            fth_tally_merge(&s->tally, &t);
        } else {
            s->bad++;
            size_t used = strlen(s->problems);
            if (used < sizeof s->problems - 1)
                snprintf(s->problems + used, sizeof s->problems - used, "  %s\n", problem);
        }
        bool give_up = s->bad >= 5; /* the backend is broken or gone: stop hammering it */
        pthread_mutex_unlock(&s->mu);
        long status = r.status;
        fth_resp_free(&r);
        if (give_up)
            break;
        if (status == 0)
            fth_pause_ms(50);
    }
    atomic_fetch_sub(&s->running, 1);
    return NULL;
}

fth_stream *fth_stream_start(const char *backend_url, unsigned threads, size_t per_request)
{
    init_once();
    assert_true(threads >= 1 && threads <= FTH_MAX_THREADS);
    assert_true(per_request >= 1 && per_request <= 16);
    for (int i = 1; i <= 6; i++)
        assert_non_null(photo(i, NULL));
    fth_stream *s = calloc(1, sizeof *s);
    assert_non_null(s);
    snprintf(s->url, sizeof s->url, "%s/v1/analyze", backend_url);
    s->n_threads = threads;
    s->per = per_request;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < FTH_MAX_PROCS; i++)
        if (!g_streams[i]) {
            g_streams[i] = s;
            break;
        }
    pthread_mutex_unlock(&g_mu);
    atomic_store(&s->running, threads);
    for (unsigned i = 0; i < threads; i++) {
        s->args[i] = (stream_arg){s, i};
        assert_int_equal(pthread_create(&s->th[i], NULL, stream_main, &s->args[i]), 0);
    }
    return s;
}

size_t fth_stream_items(fth_stream *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->items;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Fails the test when every thread of the stream gave up (too many wrong answers). */
static void stream_check_alive(fth_stream *s)
{
    if (atomic_load(&s->running) > 0)
        return;
    char problems[sizeof s->problems];
    pthread_mutex_lock(&s->mu);
    memcpy(problems, s->problems, sizeof problems);
    pthread_mutex_unlock(&s->mu);
    fail_msg("the stream gave up after wrong answers:\n%s", problems);
}

void fth_stream_wait(fth_stream *s, size_t total, double timeout_s)
{
    double deadline = fth_now() + timeout_s;
    while (fth_stream_items(s) < total) {
        stream_check_alive(s);
        if (fth_now() > deadline)
            fail_msg("the stream answered %zu images, not %zu, within %.0f s", fth_stream_items(s),
                     total, timeout_s);
        fth_pause_ms(20);
    }
}

void fth_stream_snapshot(fth_stream *s, fth_tally *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->tally;
    pthread_mutex_unlock(&s->mu);
}

size_t fth_stream_wait_origin(fth_stream *s, const char *origin, size_t than, double timeout_s)
{
    double deadline = fth_now() + timeout_s;
    for (;;) {
        fth_tally t;
        fth_stream_snapshot(s, &t);
        size_t n = fth_tally_of(&t, origin);
        if (n > than)
            return n;
        stream_check_alive(s);
        if (fth_now() > deadline) {
            fth_tally_print(&t, "stream so far");
            fail_msg("no new image answered by %s within %.0f s (still %zu)", origin, timeout_s, n);
        }
        fth_pause_ms(20);
    }
}

static void stream_join(fth_stream *s)
{
    atomic_store(&s->stop, true);
    for (unsigned i = 0; i < s->n_threads; i++)
        pthread_join(s->th[i], NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < FTH_MAX_PROCS; i++)
        if (g_streams[i] == s)
            g_streams[i] = NULL;
    pthread_mutex_unlock(&g_mu);
}

static void stream_abandon(struct fth_stream *s)
{
    stream_join(s);
    free(s);
}

void fth_stream_stop(fth_stream *s, fth_tally *t, double max_request_s)
{
    stream_join(s);
    size_t bad = s->bad, requests = s->requests, items = s->items;
    double slowest = s->slowest;
    char problems[sizeof s->problems];
    memcpy(problems, s->problems, sizeof problems);
    if (t)
        fth_tally_merge(t, &s->tally);
    size_t answered = s->tally.items;
    free(s);
    fprintf(stderr, "[fault]   stream: %zu requests, %zu images, slowest %.2f s\n", requests, items,
            slowest);
    if (bad)
        fail_msg("%zu of %zu requests were answered wrongly:\n%s", bad, requests, problems);
    assert_int_equal(answered, items);
    if (max_request_s > 0 && slowest > max_request_s)
        fail_msg("a request took %.2f s (limit %.2f s)", slowest, max_request_s);
}
