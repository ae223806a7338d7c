/* Fault scenarios injected by the proxy between the backend (client) and a real worker:
 * 503 with Retry-After, 500, garbage, truncated JSON, answers cut mid-body, connection
 * resets (on connect and after the request), slow answers and a stalled connection.
 *
 * For each: every image gets exactly one correct result (the worker's through the proxy,
 * whose URL is then the origin, or the CPU fallback's); failures are counted against the
 * worker and open its breaker; once the proxy passes traffic again the breaker closes and
 * the worker computes images again. The backend runs without background health checks
 * here, so that only the analyze requests cross the proxy and counted faults hit them. */
#include "harness.h"
#include "harness_proxy.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static fth_proc *g_worker, *g_backend;
static fwp_proxy *g_proxy;
static const char *P; /* the proxy's URL: the origin of images the worker computed */
static const char *B; /* the backend's URL */

static const int PHOTOS[][2] = {{1, 2}, {3, 4}, {5, 6}};

/* No call may take longer: the client's 12 s deadline plus the fallback's time, with room. */
#define MAX_CALL_S 40.0

static int setup(void **state)
{
    (void)state;
    g_worker = fth_worker_start(0);
    g_proxy = fwp_start("127.0.0.1", g_worker->port);
    assert_non_null(g_proxy);
    P = fwp_url(g_proxy);
    /* attempts get 5 s (not the harness's 2 s): a sanitizer build's worker on a loaded
     * 2-core machine needs more than 2 s for two images plus a 300 ms delay */
    const char *env[] = {"GPU_WORKER_HEALTH_CHECK_INTERVAL=0", "GPU_WORKER_ATTEMPT_TIMEOUT=5s",
                         "GPU_WORKER_TIMEOUT=12s", NULL};
    g_backend = fth_backend_start(P, env, NULL);
    B = g_backend->url;
    return 0;
}

static int teardown(void **state)
{
    fwp_stop(g_proxy);
    g_proxy = NULL;
    return fth_teardown(state);
}

static long worker_counter(const char *name)
{
    json_t *h = fth_get_json(B, "/health", NULL);
    long v = (long)json_integer_value(json_object_get(fth_backend_worker(h, P), name));
    json_decref(h);
    return v;
}

/* Sequential requests of two images each. */
static void send_requests(int n, fth_tally *t)
{
    for (int i = 0; i < n; i++)
        fth_analyze_ok_within(B, PHOTOS[i % 3], 2, t, MAX_CALL_S);
}

/* With the proxy passing again: requests until the worker computed 4 more images and its
 * breaker is closed. Requests go on until then because, with health checks off, only traffic
 * moves a half-open breaker (a stale connection's failure may have sent it back to open). */
static void expect_recovery(fth_tally *t, const char *scenario)
{
    fth_tally r = {0};
    double deadline = fth_now() + 30;
    char br[32] = "";
    for (int i = 0; fth_tally_of(&r, P) < 4 || strcmp(br, "closed") != 0; i++) {
        if (fth_now() > deadline) {
            fth_tally_print(&r, scenario);
            fail_msg("%s: within 30 s of recovery the worker computed %zu images and its "
                     "breaker is '%s'",
                     scenario, fth_tally_of(&r, P), br);
        }
        fth_analyze_ok_within(B, PHOTOS[i % 3], 2, &r, MAX_CALL_S);
        fth_breaker(B, P, br, sizeof br);
    }
    fth_tally_merge(t, &r);
}

/* One broken-answer mode: while it lasts every image is computed by the fallback, the
 * worker's failures grow and its breaker opens; afterwards traffic returns. */
static void broken_mode(const fwp_fault *f, const char *scenario)
{
    fth_tally t = {0};
    long failures = worker_counter("failures");
    fwp_stats before;
    fwp_get_stats(g_proxy, &before);
    fwp_set(g_proxy, f);
    send_requests(3, &t);
    assert_int_equal(fth_tally_fallback(&t), 6);
    assert_true(worker_counter("failures") >= failures + 3);
    fwp_stats after;
    fwp_get_stats(g_proxy, &after);
    assert_true(after.faults > before.faults);
    fth_wait_breaker(B, P, "open", 10);

    fwp_set_mode(g_proxy, FWP_PASS);
    expect_recovery(&t, scenario);
    fth_tally_print(&t, scenario);
}

static void test_503_retry_after(void **state)
{
    (void)state;
    fth_tally t = {0};
    send_requests(1, &t); /* a first success: the connection is up */

    /* three 503s with Retry-After: 1, then the proxy passes again */
    fwp_clear_log(g_proxy);
    fwp_set(g_proxy, &(fwp_fault){.mode = FWP_HTTP_503, .retry_after_s = 1, .count = 3});
    double deadline = fth_now() + 40;
    size_t worker_before = fth_tally_of(&t, P);
    fwp_stats st;
    for (int i = 0;; i++) {
        fwp_get_stats(g_proxy, &st);
        if (st.faults >= 3 && fth_tally_of(&t, P) >= worker_before + 4)
            break;
        if (fth_now() > deadline)
            fail_msg("503 phase did not end: %llu faults, %zu images by the worker",
                     (unsigned long long)st.faults, fth_tally_of(&t, P) - worker_before);
        fth_analyze_ok_within(B, PHOTOS[i % 3], 2, &t, MAX_CALL_S);
    }
    assert_int_equal(st.faults, 3);
    /* the three 503s may have opened the breaker: traffic until it is closed again */
    expect_recovery(&t, "proxy: three 503 + Retry-After: 1");
    fth_tally_print(&t, "proxy: three 503 + Retry-After: 1");

    /* Retry-After was honoured: after each 503, the worker got no request for a second
     * (requests here are sequential, so nothing else was in flight) */
    fwp_request_info log[FWP_LOG_MAX];
    size_t n = fwp_request_log(g_proxy, log, FWP_LOG_MAX);
    size_t checked = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (!log[i].faulted)
            continue;
        assert_true(log[i].has_body);
        uint64_t gap = log[i + 1].t_ms - log[i].t_ms;
        if (gap < 950)
            fail_msg("a request reached the worker %llu ms after a 503 with Retry-After: 1",
                     (unsigned long long)gap);
        checked++;
    }
    assert_true(checked >= 2);

    /* 503 without end (and without a pause, so that every call tries the worker): every
     * image by the fallback, breaker open; then recovery */
    broken_mode(&(fwp_fault){.mode = FWP_HTTP_503}, "proxy: 503 forever");
}

static void test_bad_answers(void **state)
{
    (void)state;
    send_requests(1, NULL);
    broken_mode(&(fwp_fault){.mode = FWP_HTTP_500}, "proxy: 500");
    broken_mode(&(fwp_fault){.mode = FWP_GARBAGE}, "proxy: garbage bytes");
    broken_mode(&(fwp_fault){.mode = FWP_TRUNCATED_JSON}, "proxy: 200 with truncated JSON");
    /* the worker's answer for two images is about 40 kB: cut it after 1000 bytes */
    broken_mode(&(fwp_fault){.mode = FWP_CLOSE_MID_BODY, .close_after = 1000},
                "proxy: answer cut mid-body");
}

static void test_resets(void **state)
{
    (void)state;
    send_requests(1, NULL);
    broken_mode(&(fwp_fault){.mode = FWP_RESET_CONNECT}, "proxy: reset on connect");
    broken_mode(&(fwp_fault){.mode = FWP_RESET_REQUEST}, "proxy: reset after the request");

    /* one reset after the request: the client retries and the worker computes the images */
    fth_tally t = {0};
    fwp_stats before, after;
    fwp_get_stats(g_proxy, &before);
    fwp_set(g_proxy, &(fwp_fault){.mode = FWP_RESET_REQUEST, .count = 1});
    send_requests(1, &t);
    fwp_get_stats(g_proxy, &after);
    assert_int_equal(after.faults - before.faults, 1);
    assert_int_equal(fth_tally_of(&t, P), 2);
    assert_true(worker_counter("retries") >= 1);
    fth_tally_print(&t, "proxy: one reset, retried");
}

/* Every connection reset at once, for many calls in a row, in each HTTP mode of the client,
 * with the breaker kept closed (every call tries the worker) and the CPU fallback disabled
 * (calls are quick, items no worker computed get a per-item error): each call must end
 * within its deadline (5 s) with one "unavailable" result per image. */
#define CALLS 100

static void test_resets_every_connection(void **state)
{
    (void)state;
    static const char *const modes[] = {"1.1", "h2-prior-knowledge", "h2c"};
    fwp_set_mode(g_proxy, FWP_RESET_CONNECT);
    for (size_t m = 0; m < 3; m++) {
        char http[64];
        snprintf(http, sizeof http, "GPU_WORKER_HTTP=%s", modes[m]);
        const char *env[] = {"GPU_WORKER_HEALTH_CHECK_INTERVAL=0",
                             http,
                             "GPU_WORKER_CB_FAILURE_THRESHOLD=1000000",
                             "GPU_WORKER_CB_MIN_REQUESTS=1000000",
                             "GPU_WORKER_CPU_FALLBACK=0",
                             NULL};
        fth_proc *b = fth_backend_start(P, env, NULL);
        char url[160];
        snprintf(url, sizeof url, "%s/v1/analyze", b->url);
        fwp_stats before, after;
        fwp_get_stats(g_proxy, &before);
        double slowest = 0;
        for (int i = 0; i < CALLS; i++) {
            const int photo[1] = {1 + i % 6};
            char id[32];
            snprintf(id, sizeof id, "r%d", i);
            const char *ids[1] = {id};
            fth_resp r;
            fth_post_images(url, photo, ids, 1, 15000, &r);
            if (r.status != 200)
                fail_msg("HTTP %s, call %d: no answer within 15 s (status %ld: %s)", modes[m], i,
                         r.status, r.error);
            json_t *j = json_loadb(r.body, r.len, 0, NULL);
            json_t *res = json_array_get(json_object_get(j, "results"), 0);
            const char *code =
                json_string_value(json_object_get(json_object_get(res, "error"), "code"));
            assert_int_equal(json_array_size(json_object_get(j, "results")), 1);
            assert_string_equal(json_string_value(json_object_get(res, "id")), id);
            assert_non_null(code);
            assert_string_equal(code, "unavailable");
            assert_string_equal(json_string_value(json_array_get(json_object_get(j, "origins"), 0)),
                                "");
            json_decref(j);
            if (r.seconds > slowest)
                slowest = r.seconds;
            fth_resp_free(&r);
        }
        fwp_get_stats(g_proxy, &after);
        fprintf(stderr,
                "[fault] proxy: every connection reset, client HTTP %s: %d calls answered "
                "(per-item errors, fallback disabled), slowest %.2f s, %llu resets\n",
                modes[m], CALLS, slowest, (unsigned long long)(after.faults - before.faults));
        assert_true(after.faults - before.faults >= CALLS); /* every call tried the worker */
        assert_true(slowest < 6.0);                         /* the 5 s deadline held */
        assert_int_equal(fth_stop(b, SIGTERM, 30), 0);
        fth_free(b);
    }
}

static void test_slow_and_stalled(void **state)
{
    (void)state;
    send_requests(1, NULL);
    /* slower than usual but well within the attempt timeout: still the worker */
    fth_tally t = {0};
    fwp_set(g_proxy, &(fwp_fault){.mode = FWP_DELAY, .delay_ms = 300});
    double t0 = fth_now();
    send_requests(2, &t);
    assert_true(fth_now() - t0 >= 0.6);
    assert_int_equal(fth_tally_of(&t, P), 4);
    fth_tally_print(&t, "proxy: answers 300 ms late");

    /* a stalled connection: the attempts time out, the fallback answers */
    broken_mode(&(fwp_fault){.mode = FWP_STALL}, "proxy: stalled");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_503_retry_after, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resets_every_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_and_stalled, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
