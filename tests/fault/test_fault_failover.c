/* Fault scenarios with two workers behind the backend.
 *
 * 1. One worker dies (SIGKILL) under a stream of requests: its images move to the other
 *    worker (retried there, not sent to the CPU fallback), its failed health check keeps it
 *    out of rotation, and once it is restarted on the same address it gets traffic again.
 * 2. Every worker is down: the CPU fallback answers everything, both breakers open and
 *    /health says "degraded"; when one worker returns its breaker goes open -> half-open ->
 *    closed as requests probe it, while the other stays out of rotation.
 * Every image must get exactly one correct result throughout. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REQUEST_S 25.0

static const int PHOTOS[][2] = {{1, 2}, {3, 4}, {5, 6}};

static long worker_counter(const char *backend, const char *worker, const char *name)
{
    json_t *h = fth_get_json(backend, "/health", NULL);
    long v = (long)json_integer_value(json_object_get(fth_backend_worker(h, worker), name));
    json_decref(h);
    return v;
}

/* The value of a Prometheus sample of the backend's /metrics ("name{labels}" exactly as
 * rendered); -1 when absent. */
static double metric(const char *backend, const char *series)
{
    char url[256];
    snprintf(url, sizeof url, "%s/metrics", backend);
    fth_resp r;
    fth_get(url, 5000, &r);
    assert_int_equal(r.status, 200);
    double v = -1;
    size_t sl = strlen(series);
    const char *line = r.body;
    while (line && *line) {
        if (!strncmp(line, series, sl) && line[sl] == ' ') {
            v = strtod(line + sl + 1, NULL);
            break;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    fth_resp_free(&r);
    return v;
}

static double transitions_metric(const char *backend, const char *worker, const char *from,
                                 const char *to)
{
    char series[256];
    snprintf(series, sizeof series,
             "facework_client_breaker_transitions_total{worker=\"%s\",from=\"%s\",to=\"%s\"}",
             worker, from, to);
    return metric(backend, series);
}

static const char *urls(const fth_proc *a, const fth_proc *b, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s,%s", a->url, b->url);
    return buf;
}

static void test_one_of_two_dies(void **state)
{
    (void)state;
    int port1 = fth_free_port();
    fth_proc *w1 = fth_worker_start(port1);
    fth_proc *w2 = fth_worker_start(0);
    char list[256];
    /* generous attempt timeouts: with one worker left, a slow answer must not push images
     * to the fallback on a loaded machine */
    const char *env[] = {"GPU_WORKER_ATTEMPT_TIMEOUT=5s", "GPU_WORKER_TIMEOUT=12s", NULL};
    fth_proc *b = fth_backend_start(urls(w1, w2, list, sizeof list), env, NULL);
    fth_stream *s = fth_stream_start(b->url, 2, 2);

    /* both workers get traffic */
    fth_stream_wait_origin(s, w1->url, 1, 30);
    fth_stream_wait_origin(s, w2->url, 1, 30);

    /* w1 dies: its failed health check takes it out of rotation (the healthy w2 exists),
     * and its share moves to w2 */
    char url1[96];
    snprintf(url1, sizeof url1, "%s", w1->url);
    fth_signal(w1, SIGKILL);
    assert_int_equal(fth_stop(w1, 0, 10), 128 + SIGKILL);
    fth_wait_worker_health(b->url, url1, false, 30);
    /* an attempt sent to w1 before its health check failed is counted when it ends (at
     * once: the connection is refused or reset, but a loaded machine may take a moment) */
    double settle = fth_now() + 10;
    while (worker_counter(b->url, url1, "outstanding") > 0) {
        if (fth_now() > settle)
            fail_msg("an attempt to the killed worker stayed outstanding for 10 s");
        fth_pause_ms(10);
    }
    long attempts = worker_counter(b->url, url1, "requests");
    fth_tally at_kill;
    fth_stream_snapshot(s, &at_kill);
    fth_stream_wait_origin(s, w2->url, fth_tally_of(&at_kill, w2->url) + 5, 60);
    assert_int_equal(worker_counter(b->url, url1, "requests"), attempts);
    fth_wait_breaker(b->url, w2->url, "closed", 1);

    /* w1 is back on the same address: traffic returns to it */
    fth_proc *w1b = fth_worker_start(port1);
    fth_tally at_restart;
    fth_stream_snapshot(s, &at_restart);
    fth_stream_wait_origin(s, w1b->url, fth_tally_of(&at_restart, w1b->url) + 3, 60);
    fth_wait_breaker(b->url, w1b->url, "closed", 30);

    fth_tally t = {0};
    fth_stream_stop(s, &t, MAX_REQUEST_S);
    fth_tally_print(&t, "two workers, one SIGKILLed and restarted");
    /* a worker was always up: nothing needed the CPU fallback */
    assert_int_equal(fth_tally_fallback(&t), 0);
    assert_int_equal(t.items, fth_tally_of(&t, w1b->url) + fth_tally_of(&t, w2->url));
    assert_int_equal(fth_transitions(b->url, w2->url, "closed", "open"), 0);

    assert_int_equal(fth_stop(b, SIGTERM, 30), 0);
    assert_int_equal(fth_stop(w1b, SIGTERM, 30), 0);
    assert_int_equal(fth_stop(w2, SIGTERM, 30), 0);
}

static void test_all_down_then_one_back(void **state)
{
    (void)state;
    int port1 = fth_free_port();
    fth_proc *w1 = fth_worker_start(port1);
    fth_proc *w2 = fth_worker_start(0);
    char list[256], url1[96], url2[96];
    snprintf(url1, sizeof url1, "%s", w1->url);
    snprintf(url2, sizeof url2, "%s", w2->url);
    fth_proc *b = fth_backend_start(urls(w1, w2, list, sizeof list), NULL, NULL);

    fth_tally up = {0};
    for (int i = 0; i < 3; i++)
        fth_analyze_ok(b->url, PHOTOS[i], 2, &up);
    assert_int_equal(fth_tally_fallback(&up), 0);

    /* every worker down: the fallback answers, both breakers open */
    fth_signal(w1, SIGKILL);
    fth_signal(w2, SIGKILL);
    fth_stop(w1, 0, 10);
    fth_stop(w2, 0, 10);
    fth_tally down = {0};
    double deadline = fth_now() + 60;
    char b1[32], b2[32];
    for (int i = 0; strcmp(fth_breaker(b->url, url1, b1, sizeof b1), "open") ||
                    strcmp(fth_breaker(b->url, url2, b2, sizeof b2), "open");
         i++) {
        if (fth_now() > deadline)
            fail_msg("breakers are %s and %s after 60 s without workers", b1, b2);
        fth_analyze_ok(b->url, PHOTOS[i % 3], 2, &down);
    }
    fth_analyze_ok(b->url, PHOTOS[0], 2, &down); /* with both open: straight to the fallback */
    fth_tally_print(&down, "all workers down");
    assert_true(down.items >= 2);
    assert_int_equal(fth_tally_fallback(&down), down.items);
    long code = 0;
    json_t *h = fth_get_json(b->url, "/health", &code);
    assert_int_equal(code, 200);
    assert_string_equal(json_string_value(json_object_get(h, "status")), "degraded");
    assert_int_equal(json_integer_value(json_object_get(h, "workers_healthy")), 0);
    assert_true(json_number_value(json_object_get(h, "fallback_rate")) > 0);
    assert_true(json_is_true(json_object_get(json_object_get(h, "fallback"), "loaded")));
    json_decref(h);
    /* the same story in /metrics */
    assert_true(metric(b->url, "facework_client_fallback_ratio") > 0);
    assert_true(metric(b->url, "facework_client_items_total{served_by=\"fallback\"}") >=
                (double)down.items);
    assert_true(transitions_metric(b->url, url1, "closed", "open") >= 1);
    assert_true(transitions_metric(b->url, url2, "closed", "open") >= 1);

    /* w1 returns: requests probe it (half-open) until its breaker closes */
    fth_proc *w1b = fth_worker_start(port1);
    fth_tally back = {0};
    deadline = fth_now() + 60;
    for (int i = 0; strcmp(fth_breaker(b->url, url1, b1, sizeof b1), "closed"); i++) {
        if (fth_now() > deadline)
            fail_msg("breaker of the returned worker is '%s' after 60 s", b1);
        fth_analyze_ok(b->url, PHOTOS[i % 3], 2, &back);
    }
    assert_true(fth_transitions(b->url, url1, "open", "half_open") >= 1);
    assert_true(fth_transitions(b->url, url1, "half_open", "closed") >= 1);
    /* closed again: the worker computes the images */
    fth_tally after = {0};
    for (int i = 0; i < 3; i++)
        fth_analyze_ok(b->url, PHOTOS[i], 2, &after);
    assert_int_equal(fth_tally_of(&after, url1), 6);
    fth_tally_merge(&back, &after);
    fth_tally_print(&back, "one worker back");
    assert_true(transitions_metric(b->url, url1, "half_open", "closed") >= 1);
    char series[256];
    snprintf(series, sizeof series, "facework_backend_worker_success_ratio{worker=\"%s\"}", url1);
    double ratio = metric(b->url, series);
    assert_true(ratio > 0 && ratio < 1); /* successes before and after, failures between */
    assert_true(metric(b->url, "facework_client_gpu_usage_ratio") > 0);
    /* the dead one stays out of rotation (open, or half-open between probes) */
    assert_string_not_equal(fth_breaker(b->url, url2, b2, sizeof b2), "closed");

    assert_int_equal(fth_stop(b, SIGTERM, 30), 0);
    assert_int_equal(fth_stop(w1b, SIGTERM, 30), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_one_of_two_dies, fth_teardown),
        cmocka_unit_test_teardown(test_all_down_then_one_back, fth_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
