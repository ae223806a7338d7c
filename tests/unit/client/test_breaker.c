/* The circuit breaker with an injected clock: every transition (closed -> open, open ->
 * half-open, half-open -> closed, half-open -> open), min_requests gating, consecutive
 * failure counting, success_threshold, one probe at a time, stale outcomes ignored, and the
 * single transition function counting and reporting each change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "client/breaker.h"

#define S 1000000000ull

static uint64_t fake_now;
static uint64_t fake_clock(void *user)
{
    (void)user;
    return fake_now;
}

typedef struct hook_log {
    int n;
    fw_breaker_state from[16], to[16];
} hook_log;

static void hook(void *user, fw_breaker_state from, fw_breaker_state to)
{
    hook_log *l = user;
    if (l->n < 16) {
        l->from[l->n] = from;
        l->to[l->n] = to;
    }
    l->n++;
}

static void make(fw__breaker *b, hook_log *log, unsigned fail, unsigned minreq, uint64_t rec,
                 unsigned succ)
{
    fake_now = 1000 * S;
    memset(log, 0, sizeof *log);
    fw__breaker_config cfg = {.failure_threshold = fail,
                              .min_requests = minreq,
                              .recovery_ns = rec,
                              .success_threshold = succ};
    fw__breaker_init(b, &cfg, "http://w1", fake_clock, NULL, hook, log);
}

/* acquire + record */
static void outcome(fw__breaker *b, bool ok)
{
    fw__breaker_ticket t;
    assert_true(fw__breaker_acquire(b, &t));
    fw__breaker_record(b, &t, ok);
}

static void test_closed_to_open_after_threshold(void **state)
{
    (void)state;
    fw__breaker b;
    hook_log log;
    make(&b, &log, 3, 0, 20 * S, 2);
    outcome(&b, false);
    outcome(&b, false);
    assert_int_equal(b.state, FW_BREAKER_CLOSED);
    outcome(&b, true); /* a success resets the consecutive count */
    outcome(&b, false);
    outcome(&b, false);
    assert_int_equal(b.state, FW_BREAKER_CLOSED);
    outcome(&b, false); /* third consecutive */
    assert_int_equal(b.state, FW_BREAKER_OPEN);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.from[0], FW_BREAKER_CLOSED);
    assert_int_equal(log.to[0], FW_BREAKER_OPEN);
    assert_int_equal(b.transitions[FW_BREAKER_CLOSED][FW_BREAKER_OPEN], 1);
    fw__breaker_ticket t;
    assert_false(fw__breaker_would_admit(&b));
    assert_false(fw__breaker_acquire(&b, &t));
}

static void test_min_requests_gates_opening(void **state)
{
    (void)state;
    fw__breaker b;
    hook_log log;
    make(&b, &log, 2, 5, 20 * S, 1);
    /* failures 1..4: the threshold (2) is reached at the 2nd, but only 4 < 5 requests */
    for (int i = 0; i < 4; i++) {
        outcome(&b, false);
        assert_int_equal(b.state, FW_BREAKER_CLOSED);
    }
    outcome(&b, false); /* 5th request, 5 consecutive failures >= 2 */
    assert_int_equal(b.state, FW_BREAKER_OPEN);

    /* successes count towards min_requests too */
    make(&b, &log, 2, 5, 20 * S, 1);
    outcome(&b, true);
    outcome(&b, true);
    outcome(&b, true);
    outcome(&b, false);
    assert_int_equal(b.state, FW_BREAKER_CLOSED); /* 4 requests */
    outcome(&b, false);                           /* 5 requests, 2 consecutive failures */
    assert_int_equal(b.state, FW_BREAKER_OPEN);
}

static void test_open_to_half_open_after_recovery(void **state)
{
    (void)state;
    fw__breaker b;
    hook_log log;
    make(&b, &log, 1, 0, 20 * S, 2);
    outcome(&b, false);
    assert_int_equal(b.state, FW_BREAKER_OPEN);
    assert_true(fw__breaker_wait_ns(&b) == 20 * S);
    fake_now += 20 * S - 1;
    assert_true(fw__breaker_wait_ns(&b) == 1);
    assert_false(fw__breaker_would_admit(&b));
    fw__breaker_ticket t;
    assert_false(fw__breaker_acquire(&b, &t));
    assert_int_equal(b.state, FW_BREAKER_OPEN);
    fake_now += 1;
    assert_true(fw__breaker_wait_ns(&b) == 0);
    assert_true(fw__breaker_would_admit(&b));
    assert_int_equal(b.state, FW_BREAKER_OPEN); /* would_admit changes nothing */
    assert_true(fw__breaker_acquire(&b, &t));
    assert_int_equal(b.state, FW_BREAKER_HALF_OPEN);
    assert_true(t.probe);
    assert_int_equal(log.n, 2);
    assert_int_equal(log.from[1], FW_BREAKER_OPEN);
    assert_int_equal(log.to[1], FW_BREAKER_HALF_OPEN);
    /* one probe at a time */
    fw__breaker_ticket t2;
    assert_false(fw__breaker_would_admit(&b));
    assert_false(fw__breaker_acquire(&b, &t2));
    assert_true(fw__breaker_wait_ns(&b) == UINT64_MAX);
    fw__breaker_cancel(&b, &t); /* abandoned: slot free again, nothing counted */
    assert_int_equal(b.state, FW_BREAKER_HALF_OPEN);
    assert_true(fw__breaker_acquire(&b, &t2));
    fw__breaker_record(&b, &t2, true);
    assert_int_equal(b.successes, 1);
}

static void test_half_open_to_closed_after_successes(void **state)
{
    (void)state;
    fw__breaker b;
    hook_log log;
    make(&b, &log, 1, 0, 5 * S, 3);
    outcome(&b, false);
    fake_now += 5 * S;
    outcome(&b, true);
    assert_int_equal(b.state, FW_BREAKER_HALF_OPEN);
    outcome(&b, true);
    assert_int_equal(b.state, FW_BREAKER_HALF_OPEN);
    outcome(&b, true); /* 3rd success */
    assert_int_equal(b.state, FW_BREAKER_CLOSED);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.from[2], FW_BREAKER_HALF_OPEN);
    assert_int_equal(log.to[2], FW_BREAKER_CLOSED);
    assert_int_equal(b.transitions[FW_BREAKER_HALF_OPEN][FW_BREAKER_CLOSED], 1);
    /* counters restart in CLOSED */
    assert_int_equal(b.requests, 0);
    assert_int_equal(b.failures, 0);
}

static void test_half_open_to_open_on_failure(void **state)
{
    (void)state;
    fw__breaker b;
    hook_log log;
    make(&b, &log, 1, 0, 5 * S, 3);
    outcome(&b, false);
    fake_now += 5 * S;
    outcome(&b, true);
    outcome(&b, true);
    outcome(&b, false); /* any failure re-opens, even after successes */
    assert_int_equal(b.state, FW_BREAKER_OPEN);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.from[2], FW_BREAKER_HALF_OPEN);
    assert_int_equal(log.to[2], FW_BREAKER_OPEN);
    /* recovery restarts from the new opening */
    assert_true(fw__breaker_wait_ns(&b) == 5 * S);
    fake_now += 5 * S;
    outcome(&b, true);
    assert_int_equal(b.state, FW_BREAKER_HALF_OPEN);
    assert_int_equal(b.transitions[FW_BREAKER_CLOSED][FW_BREAKER_OPEN], 1);
    assert_int_equal(b.transitions[FW_BREAKER_OPEN][FW_BREAKER_HALF_OPEN], 2);
    assert_int_equal(b.transitions[FW_BREAKER_HALF_OPEN][FW_BREAKER_OPEN], 1);
    assert_int_equal(b.transitions[FW_BREAKER_HALF_OPEN][FW_BREAKER_CLOSED], 0);
}

static void test_stale_outcomes_ignored(void **state)
{
    (void)state;
    fw__breaker b;
    hook_log log;
    make(&b, &log, 2, 0, 5 * S, 1);
    /* three requests in flight while CLOSED */
    fw__breaker_ticket t1, t2, t3;
    assert_true(fw__breaker_acquire(&b, &t1));
    assert_true(fw__breaker_acquire(&b, &t2));
    assert_true(fw__breaker_acquire(&b, &t3));
    fw__breaker_record(&b, &t1, false);
    fw__breaker_record(&b, &t2, false);
    assert_int_equal(b.state, FW_BREAKER_OPEN);
    fake_now += 5 * S;
    fw__breaker_ticket p;
    assert_true(fw__breaker_acquire(&b, &p)); /* half-open probe */
    /* the old request's success must not close the breaker */
    fw__breaker_record(&b, &t3, true);
    assert_int_equal(b.state, FW_BREAKER_HALF_OPEN);
    assert_int_equal(b.successes, 0);
    assert_int_equal(b.probes, 1);
    fw__breaker_record(&b, &p, true);
    assert_int_equal(b.state, FW_BREAKER_CLOSED);
    assert_int_equal(log.n, 3);
}

static void test_transition_function_is_the_only_path(void **state)
{
    (void)state;
    fw__breaker b;
    hook_log log;
    make(&b, &log, 1, 0, 5 * S, 1);
    uint64_t g = b.generation;
    fw__breaker_transition(&b, FW_BREAKER_CLOSED, "no-op");
    assert_int_equal(log.n, 0);
    assert_true(b.generation == g);
    fw__breaker_transition(&b, FW_BREAKER_OPEN, "forced");
    assert_int_equal(log.n, 1);
    assert_true(b.generation == g + 1);
    assert_true(b.changed_ns == fake_now);
    assert_string_equal(fw_breaker_state_name(FW_BREAKER_CLOSED), "closed");
    assert_string_equal(fw_breaker_state_name(FW_BREAKER_OPEN), "open");
    assert_string_equal(fw_breaker_state_name(FW_BREAKER_HALF_OPEN), "half_open");
    assert_string_equal(fw_breaker_state_name((fw_breaker_state)9), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_closed_to_open_after_threshold),
        cmocka_unit_test(test_min_requests_gates_opening),
        cmocka_unit_test(test_open_to_half_open_after_recovery),
        cmocka_unit_test(test_half_open_to_closed_after_successes),
        cmocka_unit_test(test_half_open_to_open_on_failure),
        cmocka_unit_test(test_stale_outcomes_ignored),
        cmocka_unit_test(test_transition_function_is_the_only_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
