/* Fault-test harness: real `facework worker` and `facework backend` processes, HTTP to them,
 * concurrent request streams, and checks that every submitted image got exactly one result.
 *
 * Processes. fth_start() forks and execs $FW_FACEWORK worker|backend in a private temporary
 * directory (its working directory, so no stray .env is read; port file, lock file, log
 * file), with FACEWORK_MODELS=$FW_MODELS_DIR, and (unless no_wait) waits for its port file
 * and for GET /health to answer 200 (deadline 60 s, the child's liveness checked all along).
 * Every child is recorded; fth_teardown() (the cmocka teardown of each test) and an atexit
 * handler SIGCONT+SIGKILL and reap whatever still runs. Children get PR_SET_PDEATHSIG.
 *
 * HTTP. fth_get()/fth_post_images() perform one HTTP/1.1 request on a fresh libcurl easy
 * handle and never assert. The backend's v1 answers carry a top-level "origins" array (one
 * per result: the worker URL or "cpu-fallback"), which fth_check_analyze() tallies.
 *
 * Streams. fth_stream_start() runs `threads` threads, each POSTing requests of
 * `per_request` images to the backend's /v1/analyze back to back, every image with a unique
 * id; fth_stream_stop() joins them and checks every answer (one result per image, in order,
 * id and face count right, no error); problems are collected and reported on the test's
 * thread.
 *
 * Environment (set by CTest): FW_FACEWORK, FW_PHOTOS_DIR (sample1..6.jpg with 3,3,3,4,5,4
 * faces), FW_MODELS_DIR. */
#ifndef FTH_HARNESS_H
#define FTH_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

/* ---------------------------------------------------------------------------------------- */
/* processes                                                                                */

typedef struct fth_proc {
    char kind[16]; /* "worker" or "backend" */
    pid_t pid;
    char dir[128]; /* private temporary directory (cwd of the child) */
    char port_file[256];
    char lock_file[256];
    char log_file[256]; /* stdout + stderr */
    char listen[64];    /* what --listen got */
    char url[96];       /* "http://127.0.0.1:PORT" once known */
    int port;
    bool exited;
    int wstatus;
} fth_proc;

typedef struct fth_opts {
    const char *const *args; /* extra arguments, NULL-terminated; may be NULL */
    const char *const *env;  /* extra "NAME=value" entries, NULL-terminated; may be NULL */
    int port;                /* 0: any free port (127.0.0.1:0, read from the port file) */
    bool no_wait;            /* return right after fork/exec */
} fth_opts;

/* Starts `facework worker` / `facework backend` (kind) with --listen, --port-file,
 * --log-level (warn unless args set it) and, for a worker, --lock-file. Fails the test when
 * it dies or is not ready in time (its log is printed). */
fth_proc *fth_start(const char *kind, const fth_opts *o);

/* Starts `facework backend` in front of worker_urls (comma-separated) with settings that
 * make every scenario run in seconds: overall deadline 5 s, attempt 2 s, connect 0.5 s,
 * 2 retries, batches of 2, health checks every 0.2 s, breaker failure threshold 3 after 3
 * requests, recovery 1 s, success threshold 2, backoff 20..200 ms, 4 threads. extra_env
 * entries (NULL-terminated, may be NULL) override them; o (may be NULL) adds arguments,
 * a fixed port or no_wait. */
fth_proc *fth_backend_start(const char *worker_urls, const char *const *extra_env,
                            const fth_opts *o);

/* Starts a worker on 127.0.0.1:port (0: any) and waits until it is ready. */
fth_proc *fth_worker_start(int port);

/* Waits for the port file (and then GET /health == 200) of a process started with no_wait;
 * fails the test after timeout_s. */
void fth_wait_ready(fth_proc *p, double timeout_s);

/* Sends a signal (SIGKILL, SIGSTOP, SIGCONT...). */
void fth_signal(fth_proc *p, int signo);

/* True when the process has exited (reaps it without waiting). */
bool fth_exited(fth_proc *p);

/* Sends signo (0: none), waits up to timeout_s for the exit and returns the exit code
 * (128 + N for signal N); on timeout SIGKILLs it and fails the test. Also fails the test
 * when its log holds a sanitizer report. */
int fth_stop(fth_proc *p, int signo, double timeout_s);

/* Kills (SIGCONT + SIGKILL) a process still running, reaps it, removes its directory and
 * frees p. NULL: no-op. */
void fth_free(fth_proc *p);

/* Its log so far (malloc'd) / the tail printed to stderr, headed by why. */
char *fth_log(const fth_proc *p);
void fth_print_log(const fth_proc *p, const char *why);

/* True when the log contains text. */
bool fth_log_contains(const fth_proc *p, const char *text);

/* Polls until the log contains text; fails the test after timeout_s. */
void fth_wait_log(const fth_proc *p, const char *text, double timeout_s);

/* cmocka teardown: kills and reaps every child still running, frees them. */
int fth_teardown(void **state);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int fth_free_port(void);

/* ---------------------------------------------------------------------------------------- */
/* HTTP                                                                                     */

typedef struct fth_resp {
    long status; /* 0: no response (see rc, error) */
    CURLcode rc;
    char error[CURL_ERROR_SIZE];
    char *body; /* NUL-terminated, never NULL after a request */
    size_t len;
    char retry_after[32];
    double seconds; /* total time */
} fth_resp;

/* GET url (full URL). timeout_ms 0: 30 s. */
void fth_get(const char *url, long timeout_ms, fth_resp *out);

/* POSTs images sample<photos[i]>.jpg as multipart "image" parts named ids[i] to url (full
 * URL, e.g. backend + "/v1/analyze"). timeout_ms 0: 120 s. */
void fth_post_images(const char *url, const int *photos, const char *const *ids, size_t n,
                     long timeout_ms, fth_resp *out);

void fth_resp_free(fth_resp *r);

/* GET base + path, expecting JSON (any status); returns the parsed body or NULL (no answer
 * or not JSON); *status (may be NULL) receives the status. */
json_t *fth_get_json(const char *base, const char *path, long *status);

/* ---------------------------------------------------------------------------------------- */
/* results                                                                                  */

#define FTH_MAX_ORIGINS 8

/* Where the results came from: counts per origin ("cpu-fallback" or a worker URL). */
typedef struct fth_tally {
    size_t items;
    size_t n_origins;
    char origin[FTH_MAX_ORIGINS][96];
    size_t count[FTH_MAX_ORIGINS];
} fth_tally;

void fth_tally_add(fth_tally *t, const char *origin, size_t n);
size_t fth_tally_of(const fth_tally *t, const char *origin); /* 0 when absent */
size_t fth_tally_fallback(const fth_tally *t);
void fth_tally_merge(fth_tally *into, const fth_tally *from);

/* Prints "<scenario>: N items; fallback rate R; origins: a=n b=m" to stderr. */
void fth_tally_print(const fth_tally *t, const char *scenario);

/* Checks a backend /v1/analyze answer for images photos[0..n) sent with ids: 200 JSON, one
 * result per image in input order with index i, id ids[i], no error, the photo's face count,
 * 512-float embeddings, and an "origins" array of n non-empty strings; tallies the origins.
 * On a violation writes why into problem (cap bytes) and returns false; never asserts. */
bool fth_check_analyze(const fth_resp *r, const int *photos, const char *const *ids, size_t n,
                       fth_tally *t, char *problem, size_t cap);

/* POSTs photos with unique ids to backend/v1/analyze, asserts fth_check_analyze and tallies
 * (t may be NULL). fth_analyze_ok_within fails the test when no answer came in timeout_s
 * (fth_analyze_ok waits 120 s). */
void fth_analyze_ok(const char *backend_url, const int *photos, size_t n, fth_tally *t);
void fth_analyze_ok_within(const char *backend_url, const int *photos, size_t n, fth_tally *t,
                           double timeout_s);

/* ---------------------------------------------------------------------------------------- */
/* backend status (GET /health)                                                             */

/* The worker entry of a backend /health answer whose "url" is url (borrowed from root), or
 * NULL. */
json_t *fth_backend_worker(json_t *health, const char *url);

/* Breaker state name ("closed", "open", "half_open") of url in the backend's /health, or ""
 * when unknown; copies into buf. */
const char *fth_breaker(const char *backend_url, const char *worker_url, char *buf, size_t cap);

/* Transition count from -> to ("closed","open","half_open") of url in the backend's
 * /health (0 when unknown). */
long fth_transitions(const char *backend_url, const char *worker_url, const char *from,
                     const char *to);

/* Polls the backend's /health until the worker's breaker is `state`; fails the test after
 * timeout_s (printing the last /health). */
void fth_wait_breaker(const char *backend_url, const char *worker_url, const char *state,
                      double timeout_s);

/* Polls until the worker's last health check in the backend's /health is ok (want true) or
 * failed (want false). */
void fth_wait_worker_health(const char *backend_url, const char *worker_url, bool want,
                            double timeout_s);

/* ---------------------------------------------------------------------------------------- */
/* request streams                                                                          */

typedef struct fth_stream fth_stream;

fth_stream *fth_stream_start(const char *backend_url, unsigned threads, size_t per_request);

/* Images answered so far (successfully or not). */
size_t fth_stream_items(fth_stream *s);

/* Waits until the stream has answered at least `total` images in all; fails the test after
 * timeout_s. */
void fth_stream_wait(fth_stream *s, size_t total, double timeout_s);

/* The origins of the images answered correctly so far. */
void fth_stream_snapshot(fth_stream *s, fth_tally *out);

/* Waits until the stream's tally counts more than `than` images from origin; fails the test
 * after timeout_s. Returns the count. */
size_t fth_stream_wait_origin(fth_stream *s, const char *origin, size_t than, double timeout_s);

/* Stops, joins, asserts that every request was answered correctly (see top), adds the
 * origins to t (may be NULL) and frees the stream. Also asserts that no request took longer
 * than max_request_s (0: no limit). */
void fth_stream_stop(fth_stream *s, fth_tally *t, double max_request_s);

/* ---------------------------------------------------------------------------------------- */
/* time                                                                                     */

double fth_now(void);      /* monotonic seconds */
void fth_pause_ms(int ms); /* a short pause between polls of a condition with a deadline */

#endif
