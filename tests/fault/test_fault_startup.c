/* Fault scenario: the start-up race. The backend (the client) starts before its worker.
 *
 * 1. With --wait-ready, the backend waits for the worker (GET /health says "starting", 503,
 *    and no port file is written) and reports ready as soon as the worker is up; then every
 *    image is computed by the worker.
 * 2. Without it, the backend serves at once: images sent before the worker exists are
 *    computed by the CPU fallback, and traffic moves to the worker once it starts.
 * 3. `facework health` tells a degraded backend, a healthy one, a worker, a hung worker and
 *    an address where nothing listens apart (exit 0 for HTTP 200, 1 otherwise).
 * Every image must get exactly one result either way. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_wait_ready_then_worker(void **state)
{
    (void)state;
    int wport = fth_free_port();
    int bport = fth_free_port();
    char wurl[64];
    snprintf(wurl, sizeof wurl, "http://127.0.0.1:%d", wport);
    const char *args[] = {"--wait-ready", "60s", "--log-level", "info", NULL};
    fth_opts bo = {.args = args, .port = bport, .no_wait = true};
    fth_proc *b = fth_backend_start(wurl, NULL, &bo);

    /* the backend is up and waiting: it says so, /health answers "starting" */
    fth_wait_log(b, "waiting for a worker", 30);
    long code = 0;
    json_t *h = NULL;
    double deadline = fth_now() + 30;
    while (!(h = fth_get_json(b->url, "/health", &code))) { /* HTTP is served while waiting */
        if (fth_now() > deadline)
            fail_msg("backend /health never answered while waiting for a worker");
        fth_pause_ms(20);
    }
    assert_int_equal(code, 503);
    assert_string_equal(json_string_value(json_object_get(h, "status")), "starting");
    json_decref(h);
    assert_int_not_equal(access(b->port_file, F_OK), 0); /* not ready yet */
    assert_false(fth_log_contains(b, "msg=ready"));

    /* the worker comes up later; the backend notices and becomes ready */
    fth_proc *w = fth_worker_start(wport);
    fth_wait_ready(b, 30);
    assert_true(fth_log_contains(b, "msg=worker ready"));
    h = fth_get_json(b->url, "/health", &code);
    assert_int_equal(code, 200);
    assert_string_equal(json_string_value(json_object_get(h, "status")), "healthy");
    json_t *hw = json_object_get(fth_backend_worker(h, wurl), "health");
    assert_true(json_is_true(json_object_get(hw, "ok")));
    json_decref(h);

    fth_tally t = {0};
    const int photos[][2] = {{1, 2}, {3, 4}, {5, 6}};
    for (int i = 0; i < 3; i++)
        fth_analyze_ok(b->url, photos[i], 2, &t);
    fth_tally_print(&t, "start-up race, --wait-ready");
    assert_int_equal(t.items, 6);
    assert_int_equal(fth_tally_of(&t, wurl), 6); /* no fallback once ready */

    assert_int_equal(fth_stop(b, SIGTERM, 30), 0);
    assert_int_equal(fth_stop(w, SIGTERM, 30), 0);
}

static void test_requests_before_worker(void **state)
{
    (void)state;
    int wport = fth_free_port();
    char wurl[64];
    snprintf(wurl, sizeof wurl, "http://127.0.0.1:%d", wport);
    fth_proc *b = fth_backend_start(wurl, NULL, NULL);

    /* nobody listens on the worker's port: the fallback answers, the backend is degraded */
    fth_tally before = {0};
    const int photos[][2] = {{1, 2}, {3, 4}, {5, 6}};
    for (int i = 0; i < 3; i++)
        fth_analyze_ok(b->url, photos[i], 2, &before);
    fth_tally_print(&before, "start-up race, requests before the worker");
    assert_int_equal(fth_tally_fallback(&before), 6);
    fth_wait_worker_health(b->url, wurl, false, 10);
    long code = 0;
    json_t *h = fth_get_json(b->url, "/health", &code);
    assert_int_equal(code, 200);
    assert_string_equal(json_string_value(json_object_get(h, "status")), "degraded");
    assert_true(json_number_value(json_object_get(h, "fallback_rate")) > 0.99);
    json_decref(h);

    /* the worker starts: traffic moves to it */
    fth_proc *w = fth_worker_start(wport);
    fth_wait_worker_health(b->url, wurl, true, 10);
    fth_tally after = {0};
    double deadline = fth_now() + 30;
    for (int i = 0; fth_tally_of(&after, wurl) < 4; i++) {
        if (fth_now() > deadline) {
            fth_tally_print(&after, "after the worker started");
            fail_msg("the worker computed %zu images in 30 s", fth_tally_of(&after, wurl));
        }
        fth_analyze_ok(b->url, photos[i % 3], 2, &after);
    }
    fth_tally_print(&after, "start-up race, after the worker started");
    fth_wait_breaker(b->url, wurl, "closed", 10);

    assert_int_equal(fth_stop(b, SIGTERM, 30), 0);
    assert_int_equal(fth_stop(w, SIGTERM, 30), 0);
}

/* Runs `facework health URL`; returns its exit status, its output in out. */
static int health_command(const char *url, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' health '%s' 2>&1", getenv("FW_FACEWORK"), url);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `facework health` on a backend (degraded, then healthy), a worker and nothing. */
static void test_health_command(void **state)
{
    (void)state;
    int wport = fth_free_port();
    char wurl[64], out[8192];
    snprintf(wurl, sizeof wurl, "http://127.0.0.1:%d", wport);
    fth_proc *b = fth_backend_start(wurl, NULL, NULL);

    assert_int_equal(health_command(wurl, out, sizeof out), 1); /* nothing listens */
    fth_wait_worker_health(b->url, wurl, false, 10);
    int rc = health_command(b->url, out, sizeof out);
    if (rc != 0 || !strstr(out, "degraded (HTTP 200)") || !strstr(out, "role       backend") ||
        !strstr(out, "0 of 1 healthy") || !strstr(out, "health FAILED"))
        fail_msg("facework health on a backend without workers: exit %d:\n%s", rc, out);

    fth_proc *w = fth_worker_start(wport);
    rc = health_command(wurl, out, sizeof out);
    if (rc != 0 || !strstr(out, "healthy (HTTP 200)") || !strstr(out, "role       worker"))
        fail_msg("facework health on a worker: exit %d:\n%s", rc, out);
    fth_wait_worker_health(b->url, wurl, true, 10);
    rc = health_command(b->url, out, sizeof out);
    if (rc != 0 || !strstr(out, "healthy (HTTP 200)") || !strstr(out, "1 of 1 healthy") ||
        !strstr(out, "breaker closed"))
        fail_msg("facework health on a backend with its worker: exit %d:\n%s", rc, out);
    fprintf(stderr, "%s", out);

    /* a hung worker: no answer within --timeout, exit 1 */
    fth_signal(w, SIGSTOP);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' health --timeout 300ms '%s' >/dev/null 2>&1",
             getenv("FW_FACEWORK"), wurl);
    int st = system(cmd);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    fth_signal(w, SIGCONT);

    assert_int_equal(fth_stop(b, SIGTERM, 30), 0);
    assert_int_equal(fth_stop(w, SIGTERM, 30), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_wait_ready_then_worker, fth_teardown),
        cmocka_unit_test_teardown(test_requests_before_worker, fth_teardown),
        cmocka_unit_test_teardown(test_health_command, fth_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
