/* Fault scenarios: a worker dies (SIGKILL) or hangs (SIGSTOP, then SIGCONT) in the middle of
 * a stream of requests through the backend. Every image of the stream must get exactly one
 * correct result (from the worker or the CPU fallback), no request may outlive the client's
 * deadline by much, and once the worker is back (restarted on the same port, or continued)
 * traffic must return to it. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

/* A request's worst case: the 5 s deadline on workers, then the CPU fallback computing two
 * images while the machine is busy. */
#define MAX_REQUEST_S 25.0

static void test_sigkill_mid_stream(void **state)
{
    (void)state;
    int port = fth_free_port();
    fth_proc *w = fth_worker_start(port);
    fth_proc *b = fth_backend_start(w->url, NULL, NULL);
    fth_stream *s = fth_stream_start(b->url, 2, 2);

    /* traffic flows to the worker, then it dies with requests in flight */
    fth_stream_wait_origin(s, w->url, 3, 30);
    fth_signal(w, SIGKILL);
    assert_int_equal(fth_stop(w, 0, 10), 128 + SIGKILL);
    fth_tally at_kill;
    fth_stream_snapshot(s, &at_kill);
    fth_stream_wait_origin(s, "cpu-fallback", fth_tally_fallback(&at_kill) + 3, 60);
    fth_wait_breaker(b->url, w->url, "open", 30);

    /* a new worker on the same address: traffic comes back */
    fth_proc *w2 = fth_worker_start(port);
    fth_tally at_restart;
    fth_stream_snapshot(s, &at_restart);
    fth_stream_wait_origin(s, w2->url, fth_tally_of(&at_restart, w2->url) + 3, 60);
    fth_wait_breaker(b->url, w2->url, "closed", 30);

    fth_tally t = {0};
    fth_stream_stop(s, &t, MAX_REQUEST_S);
    fth_tally_print(&t, "worker SIGKILLed mid-stream, then restarted");
    assert_true(fth_tally_fallback(&t) > 0);
    assert_true(fth_tally_of(&t, w2->url) > fth_tally_of(&at_restart, w2->url));
    assert_int_equal(t.items, fth_tally_fallback(&t) + fth_tally_of(&t, w2->url));
    assert_true(fth_transitions(b->url, w2->url, "closed", "open") >= 1);

    assert_int_equal(fth_stop(b, SIGTERM, 30), 0);
    assert_int_equal(fth_stop(w2, SIGTERM, 30), 0);
}

static void test_sigstop_hang(void **state)
{
    (void)state;
    fth_proc *w = fth_worker_start(0);
    fth_proc *b = fth_backend_start(w->url, NULL, NULL);
    fth_stream *s = fth_stream_start(b->url, 2, 2);

    fth_stream_wait_origin(s, w->url, 3, 30);
    fth_signal(w, SIGSTOP); /* hangs: connections are accepted by the kernel, never answered */
    fth_tally at_stop;
    fth_stream_snapshot(s, &at_stop);
    fth_stream_wait_origin(s, "cpu-fallback", fth_tally_fallback(&at_stop) + 3, 60);
    fth_wait_breaker(b->url, w->url, "open", 30);
    fth_wait_worker_health(b->url, w->url, false, 30);

    fth_signal(w, SIGCONT);
    fth_tally at_cont;
    fth_stream_snapshot(s, &at_cont);
    fth_stream_wait_origin(s, w->url, fth_tally_of(&at_cont, w->url) + 3, 60);
    fth_wait_breaker(b->url, w->url, "closed", 30);
    fth_wait_worker_health(b->url, w->url, true, 30);

    fth_tally t = {0};
    fth_stream_stop(s, &t, MAX_REQUEST_S);
    fth_tally_print(&t, "worker SIGSTOPped mid-stream, then SIGCONTinued");
    assert_true(fth_tally_fallback(&t) > 0);
    assert_int_equal(t.items, fth_tally_fallback(&t) + fth_tally_of(&t, w->url));
    assert_true(fth_transitions(b->url, w->url, "open", "half_open") >= 1);
    assert_true(fth_transitions(b->url, w->url, "half_open", "closed") >= 1);

    assert_int_equal(fth_stop(b, SIGTERM, 30), 0);
    assert_int_equal(fth_stop(w, SIGTERM, 30), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sigkill_mid_stream, fth_teardown),
        cmocka_unit_test_teardown(test_sigstop_hang, fth_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
