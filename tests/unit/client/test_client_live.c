/* The client against the real worker process: results equal the in-process engine, retries
 * skip a dead worker, the CPU fallback takes over when the worker is killed, the deadline
 * holds against a worker that never answers, and with the fallback disabled every item gets
 * a clear error. Needs FW_BUILD_DIR (the facework binary), FW_PHOTOS_DIR and the models. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spng.h>

#include "facework/client.h"
#include "facework/facework.h"
#include "facework/image.h"
#include "util/clock.h"

#define N_PHOTOS 6
#define N_BLOBS (N_PHOTOS + 1) /* + one corrupt blob */

typedef struct fixture {
    char dir[64];
    char port_file[96];
    char lock_file[96];
    char url[96];
    pid_t pid;
    uint8_t *data[N_PHOTOS];
    size_t len[N_PHOTOS];
    fw_blob blobs[N_BLOBS];
    fw_engine *eng; /* reference: in-process, CPU */
    fw_result ref[N_BLOBS];
    size_t dim;
} fixture;

static fixture fx;
static const char corrupt[] = "definitely not an image";

/* Waits (inotify, bounded) until the worker wrote its port file; false on timeout/exit. */
static bool wait_port_file(double timeout_s)
{
    int in = inotify_init1(IN_CLOEXEC);
    if (in < 0)
        return false;
    inotify_add_watch(in, fx.dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE);
    uint64_t deadline = fw_now_ns() + (uint64_t)(timeout_s * 1e9);
    bool ok = false;
    for (;;) {
        FILE *f = fopen(fx.port_file, "r");
        if (f) {
            char hp[64] = "";
            bool got = fgets(hp, sizeof hp, f) != NULL;
            fclose(f);
            hp[strcspn(hp, "\r\n")] = '\0';
            if (got && strchr(hp, ':')) {
                snprintf(fx.url, sizeof fx.url, "http://%s", hp);
                ok = true;
                break;
            }
        }
        int st;
        if (waitpid(fx.pid, &st, WNOHANG) == fx.pid) {
            fx.pid = 0;
            break;
        }
        uint64_t now = fw_now_ns();
        if (now >= deadline)
            break;
        struct pollfd p = {.fd = in, .events = POLLIN};
        int ms = (int)((deadline - now) / 1000000u);
        if (poll(&p, 1, ms > 200 ? 200 : ms) > 0) {
            char buf[4096];
            if (read(in, buf, sizeof buf) < 0 && errno != EAGAIN)
                break;
        }
    }
    close(in);
    return ok;
}

static void start_worker(void)
{
    const char *bd = getenv("FW_BUILD_DIR");
    assert_non_null(bd);
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/facework", bd);
    unlink(fx.port_file);
    fx.pid = fork();
    assert_true(fx.pid >= 0);
    if (fx.pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
        }
        execl(bin, bin, "worker", "--listen", "127.0.0.1:0", "--port-file", fx.port_file,
              "--lock-file", fx.lock_file, "--provider", "cpu", "--log-level", "warn",
              "--max-queue-delay", "0", (char *)NULL);
        _exit(127);
    }
    assert_true(wait_port_file(120));
}

static void kill_worker(void)
{
    if (fx.pid > 0) {
        kill(fx.pid, SIGKILL);
        int st;
        waitpid(fx.pid, &st, 0);
        fx.pid = 0;
    }
}

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof fx);
    snprintf(fx.dir, sizeof fx.dir, "/tmp/fwclient.XXXXXX");
    if (!mkdtemp(fx.dir))
        return -1;
    snprintf(fx.port_file, sizeof fx.port_file, "%s/port", fx.dir);
    snprintf(fx.lock_file, sizeof fx.lock_file, "%s/lock", fx.dir);
    const char *photos = getenv("FW_PHOTOS_DIR");
    if (!photos)
        return -1;
    for (int i = 0; i < N_PHOTOS; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/sample%d.jpg", photos, i + 1);
        if (fw_read_file(path, 0, &fx.data[i], &fx.len[i], NULL))
            return -1;
        fx.blobs[i] = (fw_blob){fx.data[i], fx.len[i]};
    }
    fx.blobs[N_PHOTOS] = (fw_blob){(const uint8_t *)corrupt, sizeof corrupt - 1};
    fw_engine_config ec;
    fw_engine_config_init(&ec);
    ec.provider = "cpu";
    if (fw_engine_new(&ec, &fx.eng, NULL))
        return -1;
    fx.dim = fw_engine_embedding_dim(fx.eng);
    if (fw_engine_analyze(fx.eng, fx.blobs, N_BLOBS, NULL, fx.ref, NULL))
        return -1;
    start_worker();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kill_worker();
    for (int i = 0; i < N_BLOBS; i++)
        fw_result_clear(&fx.ref[i]);
    for (int i = 0; i < N_PHOTOS; i++)
        free(fx.data[i]);
    fw_engine_free(fx.eng);
    unlink(fx.port_file);
    unlink(fx.lock_file);
    rmdir(fx.dir);
    return 0;
}

static void base_config(fw_client_config *cfg, const char *urls)
{
    fw_client_config_init(cfg);
    snprintf(cfg->urls, sizeof cfg->urls, "%s", urls);
    cfg->seed = 12345;
    cfg->health_interval_s = 0; /* tests drive health checks explicitly */
    cfg->backoff_base_s = 0.01;
    cfg->backoff_max_s = 0.05;
    cfg->batch_size = 4; /* the 7 blobs go as two concurrent batches */
}

static float iou(const float *a, const float *b)
{
    float x1 = fmaxf(a[0], b[0]), y1 = fmaxf(a[1], b[1]);
    float x2 = fminf(a[2], b[2]), y2 = fminf(a[3], b[3]);
    float inter = fmaxf(0, x2 - x1) * fmaxf(0, y2 - y1);
    float ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    return ua > 0 ? inter / ua : 0;
}

/* Checks that got equals the in-process reference (faces matched by box overlap). */
static void expect_matches_reference(const fw_client_result *got, bool embed)
{
    for (int i = 0; i < N_BLOBS; i++) {
        const fw_result *r = &fx.ref[i];
        const fw_result *g = &got[i].result;
        assert_int_equal(g->status, r->status);
        if (r->status != FW_OK)
            continue;
        assert_int_equal(g->width, r->width);
        assert_int_equal(g->height, r->height);
        assert_int_equal(g->n_faces, r->n_faces);
        assert_true(r->n_faces > 0);
        assert_int_equal(got[i].embedding_dim, embed ? fx.dim : 0);
        for (size_t j = 0; j < r->n_faces; j++) {
            size_t best = 0;
            float bi = -1;
            for (size_t k = 0; k < g->n_faces; k++) {
                float v = iou(r->faces[j].bbox, g->faces[k].bbox);
                if (v > bi) {
                    bi = v;
                    best = k;
                }
            }
            assert_true(bi > 0.98f);
            const fw_face *gf = &g->faces[best];
            assert_true(fabsf(gf->score - r->faces[j].score) < 1e-3f);
            for (int p = 0; p < 5; p++) {
                assert_true(fabsf(gf->landmarks[p][0] - r->faces[j].landmarks[p][0]) < 1.0f);
                assert_true(fabsf(gf->landmarks[p][1] - r->faces[j].landmarks[p][1]) < 1.0f);
            }
            if (embed) {
                assert_non_null(gf->embedding);
                float cs = fw_cosine(gf->embedding, r->faces[j].embedding, fx.dim);
                assert_true(cs > 0.999f);
            } else {
                assert_null(gf->embedding);
            }
        }
    }
}

static void clear_all(fw_client_result *res, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fw_client_result_clear(&res[i]);
}

/* A local port nothing listens on. */
static int dead_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s);
    return ntohs(a.sin_port);
}

static void test_worker_results_match_engine(void **state)
{
    (void)state;
    fw_client_config cfg;
    base_config(&cfg, fx.url);
    fw_client *c;
    fw_error err;
    assert_int_equal(fw_client_new(&cfg, &c, &err), FW_OK);
    assert_int_equal(fw_client_wait_ready(c, 60, &err), FW_OK);

    fw_client_result res[N_BLOBS];
    assert_int_equal(fw_client_analyze(c, fx.blobs, N_BLOBS, NULL, res, &err), FW_OK);
    for (int i = 0; i < N_BLOBS; i++) {
        assert_string_equal(res[i].origin, fx.url);
        assert_int_equal(res[i].attempts, 1);
    }
    expect_matches_reference(res, true);
    assert_int_equal(res[N_PHOTOS].result.status, FW_ERR_UNSUPPORTED);
    clear_all(res, N_BLOBS);

    /* detection only */
    fw_client_call_opts o;
    fw_client_call_opts_init(&o);
    o.analyze.embed = false;
    assert_int_equal(fw_client_analyze(c, fx.blobs, N_BLOBS, &o, res, &err), FW_OK);
    for (int i = 0; i < N_BLOBS; i++)
        assert_string_equal(res[i].origin, fx.url);
    expect_matches_reference(res, false);
    clear_all(res, N_BLOBS);

    fw_client_status_info st;
    fw_client_status(c, &st);
    assert_int_equal(st.n_workers, 1);
    assert_string_equal(st.workers[0].url, fx.url);
    assert_string_equal(st.workers[0].breaker_name, "closed");
    assert_true(st.workers[0].health_checked && st.workers[0].health_ok);
    assert_int_equal(st.workers[0].health_http_status, 200);
    assert_int_equal(st.workers[0].counters.requests, 4); /* 2 calls x 2 batches */
    assert_int_equal(st.workers[0].counters.successes, 4);
    assert_int_equal(st.workers[0].counters.failures, 0);
    assert_int_equal(st.workers[0].outstanding, 0);
    /* connection reuse: 4 requests (2 concurrent at a time) over at most 2 connections */
    fprintf(stderr, "connections opened: %" PRIu64 " for %" PRIu64 " requests (%s)\n",
            st.workers[0].counters.connects, st.workers[0].counters.requests, st.http_version);
    assert_true(st.workers[0].counters.connects >= 1 && st.workers[0].counters.connects <= 2);
    assert_int_equal(st.items, 2 * N_BLOBS);
    assert_int_equal(st.items_worker, 2 * N_BLOBS);
    assert_int_equal(st.items_fallback, 0);
    assert_true(st.gpu_usage_rate == 1.0);
    assert_false(st.fallback_loaded);
    fw_client_free(c);
}

/* Encodes a 112x112 RGB crop as PNG (caller frees). */
static uint8_t *png_encode(const uint8_t *rgb, size_t *len)
{
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    assert_non_null(ctx);
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ihdr = {.width = FW_ALIGNED_SIZE,
                             .height = FW_ALIGNED_SIZE,
                             .bit_depth = 8,
                             .color_type = SPNG_COLOR_TYPE_TRUECOLOR};
    spng_set_ihdr(ctx, &ihdr);
    assert_int_equal(spng_encode_image(ctx, rgb, (size_t)FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3,
                                       SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE),
                     0);
    int e = 0;
    uint8_t *out = spng_get_png_buffer(ctx, len, &e);
    assert_int_equal(e, 0);
    spng_ctx_free(ctx);
    return out;
}

static void test_embed_crops(void **state)
{
    (void)state;
    /* a crop of the first face of sample1, and a 64x64 PNG (wrong size) */
    fw_image *img;
    assert_int_equal(fw_image_decode(fx.data[0], fx.len[0], NULL, &img, NULL), FW_OK);
    uint8_t crop[FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3];
    fw_align_face(img, fx.ref[0].faces[0].landmarks, crop);
    fw_image_free(img);
    float want[4096];
    assert_true(fx.dim <= 4096);
    assert_int_equal(fw_engine_embed_aligned(fx.eng, crop, 1, want, NULL), FW_OK);
    size_t plen;
    uint8_t *png = png_encode(crop, &plen);
    fw_blob crops[2] = {{png, plen}, {(const uint8_t *)corrupt, sizeof corrupt - 1}};

    fw_client_config cfg;
    base_config(&cfg, fx.url);
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    assert_int_equal(fw_client_wait_ready(c, 60, NULL), FW_OK);
    fw_client_result res[2];
    assert_int_equal(fw_client_embed(c, crops, 2, NULL, res, NULL), FW_OK);
    assert_string_equal(res[0].origin, fx.url);
    assert_int_equal(res[0].result.status, FW_OK);
    assert_int_equal(res[0].result.n_faces, 1);
    assert_int_equal(res[0].embedding_dim, fx.dim);
    assert_true(fw_cosine(res[0].result.faces[0].embedding, want, fx.dim) > 0.999f);
    assert_int_equal(res[1].result.status, FW_ERR_UNSUPPORTED);
    assert_string_equal(res[1].origin, fx.url);
    clear_all(res, 2);
    fw_client_free(c);

    /* the same through the fallback (workers disabled) */
    base_config(&cfg, fx.url);
    cfg.enabled = 0;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    assert_int_equal(fw_client_embed(c, crops, 2, NULL, res, NULL), FW_OK);
    assert_string_equal(res[0].origin, FW_CLIENT_ORIGIN_FALLBACK);
    assert_int_equal(res[0].embedding_dim, fx.dim);
    assert_true(fw_cosine(res[0].result.faces[0].embedding, want, fx.dim) > 0.9999f);
    assert_int_equal(res[1].result.status, FW_ERR_UNSUPPORTED);
    assert_string_equal(res[1].origin, FW_CLIENT_ORIGIN_FALLBACK);
    assert_int_equal(res[0].attempts, 0);
    clear_all(res, 2);
    fw_client_free(c);
    free(png);
}

static void test_retry_skips_dead_worker(void **state)
{
    (void)state;
    char urls[256];
    snprintf(urls, sizeof urls, "http://127.0.0.1:%d,%s", dead_port(), fx.url);
    fw_client_config cfg;
    base_config(&cfg, urls);
    cfg.batch_size = 1; /* 7 batches: p2c sends some to the dead worker first */
    cfg.fallback = 0;   /* every result must come from the live worker */
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_client_result res[N_BLOBS];
    assert_int_equal(fw_client_analyze(c, fx.blobs, N_BLOBS, NULL, res, NULL), FW_OK);
    for (int i = 0; i < N_BLOBS; i++)
        assert_string_equal(res[i].origin, fx.url);
    expect_matches_reference(res, true);
    fw_client_status_info st;
    fw_client_status(c, &st);
    assert_int_equal(st.n_workers, 2);
    uint64_t dead_tries = st.workers[0].counters.failures;
    assert_true(dead_tries > 0); /* seed 12345 picks the dead one at least once */
    assert_int_equal(st.workers[0].counters.successes, 0);
    assert_int_equal(st.workers[1].counters.failures, 0);
    assert_int_equal(st.workers[1].counters.requests, N_BLOBS);
    /* every item tried on the dead worker was retried once, on the live one */
    unsigned retried = 0;
    for (int i = 0; i < N_BLOBS; i++)
        retried += res[i].attempts == 2;
    assert_int_equal(retried, dead_tries);
    assert_int_equal(st.workers[1].counters.retries, dead_tries);
    clear_all(res, N_BLOBS);
    fw_client_free(c);
}

static void test_deadline_with_silent_worker(void **state)
{
    (void)state;
    /* a listening socket that never accepts: connects succeed, requests never get answers */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s, 16), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    fw_client_config cfg;
    base_config(&cfg, url);
    cfg.timeout_s = 1.0;
    cfg.attempt_timeout_s = 0.3;
    cfg.fallback = 0;
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_client_result res[2];
    uint64_t t0 = fw_now_ns();
    assert_int_equal(fw_client_analyze(c, fx.blobs, 2, NULL, res, NULL), FW_OK);
    double took = (double)(fw_now_ns() - t0) / 1e9;
    assert_true(took >= 0.25 && took < 2.0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(res[i].result.status, FW_ERR_TIMEOUT);
        assert_string_equal(res[i].origin, "");
        assert_non_null(strstr(res[i].result.message, "fallback is disabled"));
        assert_true(res[i].attempts >= 2);
    }
    clear_all(res, 2);
    fw_client_free(c);
    close(s);
}

/* Runs last: kills the worker. */
static void test_fallback_after_worker_dies(void **state)
{
    (void)state;
    fw_client_config cfg;
    base_config(&cfg, fx.url);
    cfg.failure_threshold = 2;
    cfg.min_requests = 0;
    cfg.recovery_timeout_s = 3600;
    cfg.max_retries = 1;
    fw_client *c;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    assert_int_equal(fw_client_wait_ready(c, 60, NULL), FW_OK);
    fw_client_result res[N_BLOBS];
    assert_int_equal(fw_client_analyze(c, fx.blobs, N_BLOBS, NULL, res, NULL), FW_OK);
    for (int i = 0; i < N_BLOBS; i++)
        assert_string_equal(res[i].origin, fx.url);
    clear_all(res, N_BLOBS);

    kill_worker();
    assert_int_equal(fw_client_check_health(c), 0);

    /* batches of 4 and 3, each tried twice on the dead worker: the breaker opens after 2
     * failures, and every item is computed by the fallback */
    assert_int_equal(fw_client_analyze(c, fx.blobs, N_BLOBS, NULL, res, NULL), FW_OK);
    for (int i = 0; i < N_BLOBS; i++)
        assert_string_equal(res[i].origin, FW_CLIENT_ORIGIN_FALLBACK);
    expect_matches_reference(res, true);
    clear_all(res, N_BLOBS);

    fw_client_status_info st;
    fw_client_status(c, &st);
    assert_string_equal(st.workers[0].breaker_name, "open");
    assert_int_equal(st.workers[0].counters.transitions[FW_BREAKER_CLOSED][FW_BREAKER_OPEN], 1);
    assert_false(st.workers[0].health_ok);
    assert_true(st.workers[0].health_error[0] != '\0');
    assert_true(st.fallback_loaded);
    assert_int_equal(st.items_fallback, N_BLOBS);
    assert_int_equal(st.items_worker, N_BLOBS);
    assert_true(fabs(st.fallback_rate - 0.5) < 1e-9);

    /* with the breaker open, no request is even attempted */
    uint64_t before = st.workers[0].counters.requests;
    assert_int_equal(fw_client_analyze(c, fx.blobs, 1, NULL, res, NULL), FW_OK);
    assert_string_equal(res[0].origin, FW_CLIENT_ORIGIN_FALLBACK);
    assert_int_equal(res[0].attempts, 0);
    clear_all(res, 1);
    fw_client_status(c, &st);
    assert_int_equal(st.workers[0].counters.requests, before);
    fw_client_free(c);

    /* fallback disabled: a clear per-item error naming the worker */
    base_config(&cfg, fx.url);
    cfg.fallback = 0;
    cfg.max_retries = 2;
    assert_int_equal(fw_client_new(&cfg, &c, NULL), FW_OK);
    fw_error err;
    assert_int_equal(fw_client_wait_ready(c, 0.2, &err), FW_ERR_TIMEOUT);
    assert_non_null(strstr(err.message, fx.url));
    assert_int_equal(fw_client_analyze(c, fx.blobs, N_BLOBS, NULL, res, NULL), FW_OK);
    for (int i = 0; i < N_BLOBS; i++) {
        assert_int_equal(res[i].result.status, FW_ERR_UNAVAILABLE);
        assert_string_equal(res[i].origin, "");
        assert_int_equal(res[i].result.n_faces, 0);
        assert_int_equal(res[i].attempts, 3);
        assert_non_null(strstr(res[i].result.message, fx.url));
        assert_non_null(strstr(res[i].result.message, "fallback is disabled"));
    }
    clear_all(res, N_BLOBS);
    fw_client_status(c, &st);
    assert_int_equal(st.items_error, N_BLOBS);
    fw_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_results_match_engine),
        cmocka_unit_test(test_embed_crops),
        cmocka_unit_test(test_retry_skips_dead_worker),
        cmocka_unit_test(test_deadline_with_silent_worker),
        cmocka_unit_test(test_fallback_after_worker_dies),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
