/* Integration-test harness: real `facework worker` processes driven over real HTTP.
 *
 * Processes. fwt_worker_start() forks and execs $FW_FACEWORK worker in a private temporary
 * directory (port file, lock file, log file), waits for the port file (deadline 60 s, the
 * child's liveness checked all along) and for GET /health to answer 200. Every child started
 * here is recorded; fwt_teardown() (use it as the cmocka teardown of each test) and an atexit
 * handler SIGKILL and reap whatever is still running, so a failed assertion never leaves a
 * worker behind. Children also get PR_SET_PDEATHSIG(SIGKILL).
 *
 * HTTP. fwt_http() performs one request on a fresh libcurl easy handle: HTTP/1.1, HTTP/2
 * with prior knowledge, or HTTP/1.1 with "Upgrade: h2c"; multipart bodies are built with
 * curl_mime like real clients do. fwt_xfer_* expose the same set-up for curl multi users.
 * The response carries the status, the body, the negotiated HTTP version and a few headers.
 *
 * Helpers that take no fwt_resp* and return data fail the current cmocka test on error
 * (they use cmocka assertions), so call them from the test's thread only. fwt_http() and
 * fwt_xfer_*() never assert: worker threads of load tests may use them.
 *
 * FWT_CURL_VERBOSE=1 in the environment prints libcurl's trace of every transfer.
 *
 * Slow runs (valgrind, scripts/valgrind.sh). FW_TEST_WRAPPER, when set, is a command line
 * (words split on blanks, no quoting) put in front of every facework the harness starts
 * (workers and fwt_cli_analyze), e.g. "valgrind --error-exitcode=99 --leak-check=full".
 * FW_TEST_TIME_SCALE (a number >= 1; default 1, or 40 when FW_TEST_WRAPPER is set)
 * multiplies every deadline the harness applies itself: the start-up deadline, the
 * timeouts given to fwt_wait_healthy, fwt_worker_wait_exit and fwt_worker_stop, and the
 * default libcurl timeouts (a timeout_ms given in an fwt_req is used as it is), and, when it
 * is above 1, the service's own clocks (the worker's and the backend's timeouts, as
 * tests/integration/slow-clocks.txt lists them) unless the test sets them (flag or
 * environment; at most an hour each). Tests scale their
 * own waits with fwt_time_scale(), and shrink their heaviest workloads when fwt_reduced()
 * says so (FW_TEST_FULL=1 keeps them whole).
 *
 * Environment (set by CTest): FW_FACEWORK (the facework binary), FW_PHOTOS_DIR
 * (sample1..6.jpg), FW_MODELS_DIR, FW_SOURCE_DIR, FW_TEST_DATA. */
#ifndef FWT_HARNESS_H
#define FWT_HARNESS_H

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
/* worker processes                                                                         */

/* The factor FW_TEST_TIME_SCALE sets (see above); 1 in normal runs. */
double fwt_time_scale(void);

/* True when FW_TEST_WRAPPER is set (the worker runs under valgrind or similar). */
bool fwt_wrapped(void);

/* True when a wrapped run should shrink the heaviest workloads (FW_TEST_WRAPPER set and
 * FW_TEST_FULL unset or 0). Under valgrind every image costs about 100 s of CPU, so the
 * load and batch tests then send a few dozen images instead of a few hundred: the same code
 * paths (batches over --max-batch, every protocol, a full queue), not the same volume; and
 * the CLI runs that only compute reference answers run unwrapped (test_cli checks the CLI
 * under the wrapper). */
bool fwt_reduced(void);

typedef struct fwt_worker {
    pid_t pid;
    char dir[128];       /* private temporary directory, removed by fwt_worker_free */
    char port_file[256]; /* <dir>/port */
    char lock_file[256]; /* <dir>/worker.lock unless the caller gave one */
    char log_file[256];  /* <dir>/worker.log: the child's stdout and stderr */
    char addr[64];       /* "127.0.0.1:PORT" from the port file */
    char url[96];        /* "http://127.0.0.1:PORT" */
    int port;
    bool exited; /* reaped; wstatus valid */
    int wstatus;
} fwt_worker;

typedef struct fwt_worker_opts {
    const char *command;     /* subcommand, NULL: "worker"; others (e.g. "backend") get no
                              * --lock-file */
    const char *const *args; /* extra worker arguments, NULL-terminated; may be NULL */
    const char *const *env;  /* extra "NAME=value" environment entries, NULL-terminated */
    const char *lock_file;   /* NULL: <dir>/worker.lock */
    const char *listen;      /* NULL: 127.0.0.1:0 */
    bool no_wait;            /* return right after fork/exec: no port file, no /health */
} fwt_worker_opts;

/* Starts a ready worker with the default options and extra args (NULL-terminated, may be
 * NULL): --listen 127.0.0.1:0 --port-file --lock-file --log-level warn. Fails the test when
 * the worker dies or is not ready in 60 s (its log is printed). */
fwt_worker *fwt_worker_start(const char *const *args);
fwt_worker *fwt_worker_start_opts(const fwt_worker_opts *opts);

/* True when the worker has exited (reaps it without waiting). */
bool fwt_worker_exited(fwt_worker *w);

/* Waits up to timeout_s for the worker to exit (reaping it). True when it has exited. */
bool fwt_worker_wait_exit(fwt_worker *w, double timeout_s);

/* Sends signo (0: none), waits up to timeout_s for the exit and returns the exit code
 * (128 + N when killed by signal N). On timeout: SIGKILL, reap, and fail the test. Fails the
 * test as well when the worker's log holds a sanitizer report or a valgrind error summary
 * with errors. */
int fwt_worker_stop(fwt_worker *w, int signo, double timeout_s);

/* The exit code of a reaped worker (128 + N for signal N). */
int fwt_exit_code(int wstatus);

/* Kills (SIGKILL) a still-running worker, reaps it and removes its directory. NULL: no-op. */
void fwt_worker_free(fwt_worker *w);

/* The worker's stdout+stderr so far (malloc'd, caller frees). */
char *fwt_worker_log(const fwt_worker *w);

/* Prints the tail of the worker's log to stderr, headed by why. */
void fwt_worker_print_log(const fwt_worker *w, const char *why);

/* Asks the teardown to SIGKILL pid too (a process that is not our child, e.g. a
 * supervised worker). */
void fwt_track_foreign_pid(pid_t pid);

/* cmocka teardown: SIGKILLs and reaps every child still running, frees the workers. */
int fwt_teardown(void **state);

/* GET /health until it answers 200 (deadline timeout_s); fails the test otherwise. Returns
 * the parsed body (caller decrefs). */
json_t *fwt_wait_healthy(const fwt_worker *w, double timeout_s);

/* ---------------------------------------------------------------------------------------- */
/* HTTP                                                                                     */

typedef enum fwt_proto {
    FWT_H1 = 0, /* HTTP/1.1 */
    FWT_H2,     /* HTTP/2 with prior knowledge (h2c) */
    FWT_H2C,    /* HTTP/1.1 request with "Upgrade: h2c" */
} fwt_proto;

extern const char *const fwt_proto_name[3];

/* One multipart part. filename NULL: a plain field. len (size_t)-1: strlen(data). */
typedef struct fwt_part {
    const char *name;
    const char *filename;
    const char *type; /* NULL: curl's choice */
    const void *data;
    size_t len;
} fwt_part;

typedef struct fwt_req {
    const char *method;         /* NULL: POST when a body or parts are given, else GET */
    const char *url;            /* full URL */
    const char *const *headers; /* "Name: value" lines, NULL-terminated; may be NULL */
    const void *body;           /* raw body (with content_type), or NULL */
    size_t body_len;
    const char *content_type; /* Content-Type of body; NULL: none is sent */
    const fwt_part *parts;    /* multipart/form-data body via curl_mime */
    size_t n_parts;
    fwt_proto proto;
    long timeout_ms; /* 0: 180 s */
} fwt_req;

typedef struct fwt_resp {
    long status; /* 0 when no response arrived (see rc, error) */
    CURLcode rc;
    char error[CURL_ERROR_SIZE];
    char *body; /* NUL-terminated; never NULL after fwt_http */
    size_t len;
    int http_version; /* 1 or 2 as negotiated (0: none) */
    char content_type[128];
    char retry_after[64];
    char allow[128];
    char request_id[64];
    char connection[64];
} fwt_resp;

typedef struct fwt_xfer fwt_xfer;

/* A prepared easy handle for rq (rq's data must outlive the transfer). NULL on failure. */
fwt_xfer *fwt_xfer_new(const fwt_req *rq);
CURL *fwt_xfer_easy(fwt_xfer *x);
/* After the transfer ended with rc: fills *out (body ownership moves to out). */
void fwt_xfer_finish(fwt_xfer *x, CURLcode rc, fwt_resp *out);
void fwt_xfer_free(fwt_xfer *x);

/* Performs rq; never asserts. */
void fwt_http(const fwt_req *rq, fwt_resp *out);
void fwt_resp_free(fwt_resp *r);

/* Performs rq on a caller-owned easy handle (reset first), so that its connection is kept
 * alive and reused across calls; never asserts. Not with FWT_H2 on libcurl < 8.0: it cannot
 * reuse an idle prior-knowledge connection (curl issue #10634, "Error in the HTTP2 framing
 * layer"); FWT_H2C connections are reused correctly. */
void fwt_http_reuse(CURL *easy, const fwt_req *rq, fwt_resp *out);

/* Shortcuts on a worker's URL + path. */
void fwt_get(const fwt_worker *w, const char *path, fwt_proto proto, fwt_resp *out);
void fwt_post(const fwt_worker *w, const char *path, const char *content_type, const void *body,
              size_t len, fwt_proto proto, fwt_resp *out);
void fwt_post_parts(const fwt_worker *w, const char *path, const fwt_part *parts, size_t n,
                    fwt_proto proto, fwt_resp *out);

/* The parsed JSON body of a response that must be `status` with Content-Type
 * application/json; fails the test (printing the body) otherwise. Caller decrefs. */
json_t *fwt_expect_json(const fwt_resp *r, long status);

/* GET path (HTTP/1.1) that must answer `status` with JSON: the parsed body (caller
 * decrefs); fails the test otherwise. */
json_t *fwt_get_json(const fwt_worker *w, const char *path, long status);

/* obj[k1] (or obj[k1][k2] when k2 is non-NULL), which must be a string; fails the test
 * otherwise. The string belongs to obj. */
const char *fwt_json_str(const json_t *obj, const char *k1, const char *k2);

/* Asserts r is `status` with an {"error":{"code":string,"message":string}} JSON body and
 * nothing else at the top level; when code is non-NULL the code must equal it. */
void fwt_expect_error(const fwt_resp *r, long status, const char *code);

/* ---------------------------------------------------------------------------------------- */
/* data                                                                                     */

/* Faces in FW_PHOTOS_DIR/sample<i>.jpg, i = 1..6 (index 0 unused). */
extern const int fwt_photo_faces[7];

/* Whole file into a malloc'd buffer (NUL appended, not counted); fails the test on error. */
uint8_t *fwt_read_file(const char *path, size_t *len);

/* sample<i>.jpg (i = 1..6), read once and cached for the process; do not free. */
const uint8_t *fwt_photo(int i, size_t *len);
const char *fwt_photo_path(int i); /* static buffer per i */

/* Base64 (standard alphabet, padded): malloc'd, NUL-terminated. */
char *fwt_b64_encode(const void *data, size_t len);
/* NULL on invalid input; *len = decoded bytes. */
uint8_t *fwt_b64_decode(const char *s, size_t *len);

/* IEEE 754 half (binary16) to float. */
float fwt_half_to_float(uint16_t h);

/* A JSON array of numbers to a malloc'd float vector (*n = length); NULL when arr is not an
 * array of numbers. */
float *fwt_json_floats(const json_t *arr, size_t *n);

double fwt_dot(const float *a, const float *b, size_t n);

/* Asserts that `face` (v1 or legacy) has a well-formed "bbox" (4 numbers, x1 < x2, y1 < y2,
 * inside width x height with a little slack), 5 [x, y] "landmarks" inside the image, and,
 * when want_embedding, an "embedding" of 512 floats with unit norm (within 1e-3). */
void fwt_check_face(const json_t *face, int width, int height, bool want_embedding);

/* Asserts that two face lists describe the same faces: same count, each face of `got` has a
 * face in `want` whose bbox is within box_tol px on every side and, when min_cos > 0, whose
 * embedding has cosine > min_cos. */
void fwt_match_faces(const json_t *got, const json_t *want, double box_tol, double min_cos);

/* `$FW_FACEWORK analyze path` (under FW_TEST_WRAPPER unless fwt_reduced()): the parsed JSON
 * output (caller decrefs). */
json_t *fwt_cli_analyze(const char *path);

/* The value of a Prometheus sample line "series value" (series = name or name{labels}
 * exactly as rendered). False when absent. */
bool fwt_metric(const char *text, const char *series, double *value);

/* ---------------------------------------------------------------------------------------- */
/* sockets, time                                                                            */

/* A TCP port that was free a moment ago (bound to 127.0.0.1:0, then closed). */
int fwt_free_port(void);

/* A blocking TCP connection to 127.0.0.1:port, or -1 (errno set). */
int fwt_connect(int port);

double fwt_now(void);      /* monotonic seconds */
void fwt_pause_ms(int ms); /* a short pause between polls of a condition with a deadline */

#endif
