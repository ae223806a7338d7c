/* Unit tests for --supervise (util/supervise): the backoff schedule (pure function), and the
 * supervision loop with real child processes: crash loops that give up, exec'd shell
 * children, a child killed with SIGKILL, a child whose health probe fails (SIGTERM, and
 * SIGKILL when it ignores SIGTERM), stop requests (API and real SIGTERM), stop during
 * backoff and the healthy-run reset. Children report readiness on a pipe; the test waits on
 * it with poll (10 s bound) and never sleeps to wait for a state. Every test also runs
 * under alarm(60) so that a hang fails instead of blocking CTest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/log.h"
#include "util/supervise.h"

/* ---- recording fixture ---- */

enum { MAXEV = 128 };

typedef struct rec rec;
struct rec {
    fw_supervise_event ev[MAXEV];
    uint64_t t[MAXEV];
    int n;
    int starts;   /* STARTED events so far */
    int ready[2]; /* children write their pid when set up */
    void (*react)(rec *r, const fw_supervise_event *ev);
    long first_pid;
    bool first_ready;
};

static void on_event(const fw_supervise_event *ev, void *user)
{
    rec *r = user;
    if (r->n < MAXEV) {
        r->ev[r->n] = *ev;
        r->t[r->n] = fw_now_ns();
        r->n++;
    }
    if (ev->kind == FW_SUP_STARTED) {
        r->starts++;
        if (r->starts == 1)
            r->first_pid = ev->pid;
    }
    if (r->react)
        r->react(r, ev);
}

/* Reads the next ready pid (10 s bound). */
static long wait_ready(rec *r)
{
    struct pollfd pfd = {.fd = r->ready[0], .events = POLLIN};
    if (poll(&pfd, 1, 10000) != 1)
        return -1;
    long pid = 0;
    return read(r->ready[0], &pid, sizeof pid) == (ssize_t)sizeof pid ? pid : -1;
}

static int setup(void **state)
{
    rec *r = calloc(1, sizeof *r);
    if (!r || pipe(r->ready) != 0)
        return -1;
    *state = r;
    alarm(60);
    return 0;
}

static int teardown(void **state)
{
    rec *r = *state;
    alarm(0);
    close(r->ready[0]);
    close(r->ready[1]);
    free(r);
    return 0;
}

static void base_opts(fw_supervise_opts *o, rec *r)
{
    fw_supervise_opts_init(o);
    o->backoff = (fw_backoff){0.01, 0.04, 2.0};
    o->healthy_reset_s = 60;
    o->handle_signals = false;
    o->on_event = on_event;
    o->event_user = r;
    o->kill_grace_s = 10;
    o->stop_grace_s = 10;
}

static int count_kind(const rec *r, fw_supervise_event_kind k)
{
    int n = 0;
    for (int i = 0; i < r->n; i++)
        n += r->ev[i].kind == k;
    return n;
}

/* Index of the i-th (0-based) event of kind k, or -1. */
static int find_kind(const rec *r, fw_supervise_event_kind k, int nth)
{
    for (int i = 0; i < r->n; i++)
        if (r->ev[i].kind == k && nth-- == 0)
            return i;
    return -1;
}

static double secs_between(const rec *r, int a, int b)
{
    return (double)(r->t[b] - r->t[a]) / 1e9;
}

/* ---- children (run in the forked process) ---- */

static void announce(rec *r)
{
    long pid = (long)getpid();
    if (write(r->ready[1], &pid, sizeof pid) != (ssize_t)sizeof pid)
        _exit(99);
}

static int child_exit1(void *user)
{
    (void)user;
    return 1;
}

static volatile sig_atomic_t got_term;

static void on_term(int sig)
{
    (void)sig;
    got_term = 1;
}

/* Handles SIGTERM by exiting 0, like the worker's graceful shutdown. */
static int child_graceful(void *user)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    announce(user);
    while (!got_term)
        sigsuspend(&old);
    return 0;
}

/* A hung child: ignores SIGTERM. */
static int child_stubborn(void *user)
{
    signal(SIGTERM, SIG_IGN);
    announce(user);
    for (;;)
        pause();
    return 0;
}

/* ---- tests ---- */

static void test_backoff_delay(void **state)
{
    (void)state;
    const fw_backoff p = {0.01, 0.05, 2.0};
    /* 0.01 * 2^k capped at 0.05 */
    const double want[] = {0.01, 0.02, 0.04, 0.05, 0.05};
    for (unsigned k = 0; k < 5; k++)
        assert_true(fabs(fw_backoff_delay(k, &p) - want[k]) < 1e-12);
    assert_true(fw_backoff_delay(100000, &p) == 0.05); /* pow overflow -> cap */
    const fw_backoff q = {1.0, 60.0, 1.5};
    assert_true(fabs(fw_backoff_delay(3, &q) - 3.375) < 1e-12);
    assert_true(fw_backoff_delay(20, &q) == 60.0);
    const fw_backoff flat = {0.5, 0, 3.0}; /* no max: constant */
    assert_true(fw_backoff_delay(7, &flat) == 0.5);
    const fw_backoff shrink = {2.0, 10.0, 0.5}; /* multiplier < 1 acts as 1 */
    assert_true(fw_backoff_delay(4, &shrink) == 2.0);
    const fw_backoff zero = {0, 10.0, 2.0};
    assert_true(fw_backoff_delay(4, &zero) == 0);
    assert_true(fw_backoff_delay(0, NULL) == 0);
}

static void test_opts_init(void **state)
{
    (void)state;
    fw_supervise_opts o;
    fw_supervise_opts_init(&o);
    assert_true(o.backoff.initial_s == 1.0 && o.backoff.max_s == 60.0);
    assert_true(o.backoff.multiplier == 2.0);
    assert_int_equal(o.max_restarts, 10);
    assert_int_equal(o.probe_failures, 3);
    assert_true(o.handle_signals);
    assert_null(o.argv);
    assert_null(o.child_main);
}

static void test_crash_loop_gives_up(void **state)
{
    rec *r = *state;
    fw_supervise_opts o;
    base_opts(&o, r);
    o.child_main = child_exit1;
    o.max_restarts = 3;
    fw_error err;
    int rc = fw_supervise(&o, &err);
    assert_int_equal(rc, 1);
    assert_int_equal(err.code, FW_ERR_UNAVAILABLE);
    assert_string_equal(err.message,
                        "supervise: gave up after 4 consecutive failures (last status 1)");
    /* S E B S E B S E B S E G */
    const fw_supervise_event_kind want[] = {FW_SUP_STARTED, FW_SUP_EXITED, FW_SUP_BACKOFF,
                                            FW_SUP_STARTED, FW_SUP_EXITED, FW_SUP_BACKOFF,
                                            FW_SUP_STARTED, FW_SUP_EXITED, FW_SUP_BACKOFF,
                                            FW_SUP_STARTED, FW_SUP_EXITED, FW_SUP_GIVING_UP};
    assert_int_equal(r->n, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < r->n; i++)
        assert_int_equal(r->ev[i].kind, want[i]);
    const double delays[] = {0.01, 0.02, 0.04};
    for (int k = 0; k < 3; k++) {
        int b = find_kind(r, FW_SUP_BACKOFF, k);
        int e = find_kind(r, FW_SUP_EXITED, k);
        assert_int_equal(r->ev[e].status, 1);
        assert_false(r->ev[e].signaled);
        assert_int_equal(r->ev[b].attempt, (unsigned)k);
        assert_true(fabs(r->ev[b].delay_s - delays[k]) < 1e-12);
        /* the next start waited at least the delay (1 ms slack for event timestamps) */
        double waited = secs_between(r, b, find_kind(r, FW_SUP_STARTED, k + 1));
        if (waited < delays[k] - 0.001)
            fail_msg("restart %d after %.4f s, backoff %.3f s", k + 1, waited, delays[k]);
    }
    assert_int_equal(r->ev[r->n - 1].failures, 4);
}

static void test_exec_child_gives_up_with_its_status(void **state)
{
    rec *r = *state;
    char *argv[] = {"/bin/sh", "-c", "exit 3", NULL};
    fw_supervise_opts o;
    base_opts(&o, r);
    o.argv = argv;
    o.max_restarts = 2;
    assert_int_equal(fw_supervise(&o, NULL), 3);
    assert_int_equal(count_kind(r, FW_SUP_STARTED), 3);
    assert_int_equal(count_kind(r, FW_SUP_GIVING_UP), 1);
}

static void test_exec_child_clean_exit(void **state)
{
    rec *r = *state;
    char *argv[] = {"/bin/sh", "-c", "exit 0", NULL};
    fw_supervise_opts o;
    base_opts(&o, r);
    o.argv = argv;
    fw_error err;
    assert_int_equal(fw_supervise(&o, &err), 0);
    assert_int_equal(count_kind(r, FW_SUP_STARTED), 1);
    assert_int_equal(count_kind(r, FW_SUP_BACKOFF), 0);
}

static void test_exec_missing_binary(void **state)
{
    rec *r = *state;
    char *argv[] = {"/nonexistent/facework-no-such-binary", NULL};
    fw_supervise_opts o;
    base_opts(&o, r);
    o.argv = argv;
    o.max_restarts = 0; /* no restarts at all */
    assert_int_equal(fw_supervise(&o, NULL), 127);
    assert_int_equal(count_kind(r, FW_SUP_STARTED), 1);
}

static void react_kill_then_stop(rec *r, const fw_supervise_event *ev)
{
    if (ev->kind != FW_SUP_STARTED)
        return;
    assert_int_equal(wait_ready(r), ev->pid);
    if (r->starts == 1)
        assert_int_equal(kill((pid_t)ev->pid, SIGKILL), 0);
    else
        fw_supervise_request_stop(SIGTERM);
}

static void test_sigkilled_child_is_restarted_then_stopped(void **state)
{
    rec *r = *state;
    r->react = react_kill_then_stop;
    fw_supervise_opts o;
    base_opts(&o, r);
    o.child_main = child_graceful;
    o.child_user = r;
    assert_int_equal(fw_supervise(&o, NULL), 0);
    int e1 = find_kind(r, FW_SUP_EXITED, 0);
    assert_int_equal(r->ev[e1].status, 128 + SIGKILL);
    assert_true(r->ev[e1].signaled);
    assert_int_equal(r->ev[e1].pid, r->first_pid);
    assert_int_equal(count_kind(r, FW_SUP_STARTED), 2);
    int k = find_kind(r, FW_SUP_KILLING, 0);
    assert_int_equal(r->ev[k].signo, SIGTERM);
    assert_int_equal(r->ev[k].pid, r->ev[find_kind(r, FW_SUP_STARTED, 1)].pid);
    int e2 = find_kind(r, FW_SUP_EXITED, 1);
    assert_int_equal(r->ev[e2].status, 0);
    assert_int_equal(r->ev[r->n - 1].kind, FW_SUP_EXITED);
}

/* Fails for the first child (once it is set up), succeeds for later ones. */
static bool probe_first_fails(long pid, void *user)
{
    rec *r = user;
    if (pid != r->first_pid)
        return true;
    if (!r->first_ready) {
        assert_int_equal(wait_ready(r), pid);
        r->first_ready = true;
    }
    return false;
}

static void react_stop_second(rec *r, const fw_supervise_event *ev)
{
    if (ev->kind == FW_SUP_STARTED && r->starts == 2) {
        assert_int_equal(wait_ready(r), ev->pid);
        fw_supervise_request_stop(0);
    }
}

static void test_failing_probe_kills_and_restarts(void **state)
{
    rec *r = *state;
    r->react = react_stop_second;
    fw_supervise_opts o;
    base_opts(&o, r);
    o.child_main = child_graceful;
    o.child_user = r;
    o.probe = probe_first_fails;
    o.probe_user = r;
    o.probe_interval_s = 0.01;
    o.probe_start_delay_s = 0;
    o.probe_failures = 3;
    assert_int_equal(fw_supervise(&o, NULL), 0);
    assert_int_equal(count_kind(r, FW_SUP_PROBE_FAILED), 3);
    for (int i = 0; i < 3; i++) {
        const fw_supervise_event *pf = &r->ev[find_kind(r, FW_SUP_PROBE_FAILED, i)];
        assert_int_equal(pf->failures, (unsigned)i + 1);
        assert_int_equal(pf->pid, r->first_pid);
    }
    const fw_supervise_event *k = &r->ev[find_kind(r, FW_SUP_KILLING, 0)];
    assert_int_equal(k->signo, SIGTERM);
    assert_int_equal(k->pid, r->first_pid);
    /* the hung child exited 0 on SIGTERM, yet that counts as a failure: restarted */
    const fw_supervise_event *e = &r->ev[find_kind(r, FW_SUP_EXITED, 0)];
    assert_int_equal(e->status, 0);
    assert_int_equal(count_kind(r, FW_SUP_BACKOFF), 1);
    assert_int_equal(count_kind(r, FW_SUP_STARTED), 2);
    assert_int_equal(count_kind(r, FW_SUP_STOPPING), 1);
    assert_true(find_kind(r, FW_SUP_PROBE_FAILED, 2) < find_kind(r, FW_SUP_KILLING, 0));
}

static void test_stubborn_child_gets_sigkill(void **state)
{
    rec *r = *state;
    r->react = react_stop_second;
    fw_supervise_opts o;
    base_opts(&o, r);
    o.child_main = child_stubborn;
    o.child_user = r;
    o.probe = probe_first_fails;
    o.probe_user = r;
    o.probe_interval_s = 0.01;
    o.probe_start_delay_s = 0;
    o.probe_failures = 2;
    o.kill_grace_s = 0.05;
    o.stop_grace_s = 0.05;
    /* the second child ignores the forwarded SIGTERM too: SIGKILL after stop_grace, and the
     * supervisor reports 128 + 9 */
    assert_int_equal(fw_supervise(&o, NULL), 128 + SIGKILL);
    int t1 = find_kind(r, FW_SUP_KILLING, 0), k1 = find_kind(r, FW_SUP_KILLING, 1);
    int t2 = find_kind(r, FW_SUP_KILLING, 2), k2 = find_kind(r, FW_SUP_KILLING, 3);
    assert_true(t1 >= 0 && k1 >= 0 && t2 >= 0 && k2 >= 0);
    assert_int_equal(r->ev[t1].signo, SIGTERM);
    assert_int_equal(r->ev[k1].signo, SIGKILL);
    assert_int_equal(r->ev[t2].signo, SIGTERM);
    assert_int_equal(r->ev[k2].signo, SIGKILL);
    assert_true(secs_between(r, t1, k1) >= 0.05 - 0.001);
    assert_true(secs_between(r, t2, k2) >= 0.05 - 0.001);
    assert_int_equal(r->ev[find_kind(r, FW_SUP_EXITED, 0)].status, 128 + SIGKILL);
    assert_int_equal(r->ev[find_kind(r, FW_SUP_EXITED, 1)].status, 128 + SIGKILL);
}

static void react_raise_term(rec *r, const fw_supervise_event *ev)
{
    if (ev->kind == FW_SUP_STARTED) {
        assert_int_equal(wait_ready(r), ev->pid);
        assert_int_equal(kill(getpid(), SIGTERM), 0); /* to the supervisor itself */
    }
}

static void test_sigterm_to_supervisor_stops_child(void **state)
{
    rec *r = *state;
    r->react = react_raise_term;
    fw_supervise_opts o;
    base_opts(&o, r);
    o.child_main = child_graceful;
    o.child_user = r;
    o.handle_signals = true;
    assert_int_equal(fw_supervise(&o, NULL), 0);
    int s = find_kind(r, FW_SUP_STOPPING, 0);
    assert_true(s >= 0);
    assert_int_equal(r->ev[s].signo, SIGTERM);
    assert_int_equal(r->ev[find_kind(r, FW_SUP_KILLING, 0)].signo, SIGTERM);
    assert_int_equal(r->ev[find_kind(r, FW_SUP_EXITED, 0)].status, 0);
    /* the supervisor's handlers are gone again */
    struct sigaction sa;
    assert_int_equal(sigaction(SIGTERM, NULL, &sa), 0);
    assert_true(sa.sa_handler == SIG_DFL);
    /* and requests outside a running supervisor are ignored */
    fw_supervise_request_stop(SIGTERM);
}

static void react_stop_in_backoff(rec *r, const fw_supervise_event *ev)
{
    (void)r;
    if (ev->kind == FW_SUP_BACKOFF)
        fw_supervise_request_stop(SIGINT);
}

static void test_stop_during_backoff(void **state)
{
    rec *r = *state;
    r->react = react_stop_in_backoff;
    fw_supervise_opts o;
    base_opts(&o, r);
    o.child_main = child_exit1;
    o.backoff = (fw_backoff){30.0, 60.0, 2.0}; /* would wait 30 s without the stop */
    uint64_t t0 = fw_now_ns();
    assert_int_equal(fw_supervise(&o, NULL), 1); /* the last child's status */
    assert_true(fw_now_ns() - t0 < 10ull * 1000000000u);
    assert_int_equal(count_kind(r, FW_SUP_STARTED), 1);
    assert_int_equal(r->ev[find_kind(r, FW_SUP_STOPPING, 0)].signo, SIGINT);
}

/* Run 0 fails at once, run 1 fails after staying up 0.3 s, run 2 exits cleanly. The parent's
 * start count at fork time tells the child which run it is. */
static int child_by_run(void *user)
{
    rec *r = user;
    if (r->starts == 0)
        return 1;
    if (r->starts == 1) {
        struct timespec ts = {0, 300 * 1000 * 1000};
        while (nanosleep(&ts, &ts) != 0) {
        }
        return 1;
    }
    return 0;
}

static void test_healthy_run_resets_backoff(void **state)
{
    rec *r = *state;
    fw_supervise_opts o;
    base_opts(&o, r);
    o.child_main = child_by_run;
    o.child_user = r;
    o.max_restarts = 1;      /* two failures in a row would give up... */
    o.healthy_reset_s = 0.1; /* ...but run 1 stays up long enough to reset the count */
    assert_int_equal(fw_supervise(&o, NULL), 0);
    assert_int_equal(count_kind(r, FW_SUP_STARTED), 3);
    assert_int_equal(count_kind(r, FW_SUP_BACKOFF), 2);
    assert_int_equal(r->ev[find_kind(r, FW_SUP_BACKOFF, 0)].attempt, 0);
    assert_int_equal(r->ev[find_kind(r, FW_SUP_BACKOFF, 1)].attempt, 0);
    assert_int_equal(count_kind(r, FW_SUP_GIVING_UP), 0);
}

static void test_invalid_options(void **state)
{
    rec *r = *state;
    char *argv[] = {"/bin/true", NULL};
    fw_supervise_opts o;
    base_opts(&o, r);
    fw_error err;
    assert_int_equal(fw_supervise(&o, &err), 70); /* nothing to run */
    assert_int_equal(err.code, FW_ERR_INVALID_ARGUMENT);
    o.argv = argv;
    o.child_main = child_exit1; /* both */
    assert_int_equal(fw_supervise(&o, &err), 70);
    o.child_main = NULL;
    o.probe = probe_first_fails;
    o.probe_failures = 0;
    assert_int_equal(fw_supervise(&o, &err), 70);
    assert_int_equal(fw_supervise(NULL, &err), 70);
    assert_int_equal(r->n, 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    fw_log_set_level(FW_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_delay),
        cmocka_unit_test(test_opts_init),
        T(test_crash_loop_gives_up),
        T(test_exec_child_gives_up_with_its_status),
        T(test_exec_child_clean_exit),
        T(test_exec_missing_binary),
        T(test_sigkilled_child_is_restarted_then_stopped),
        T(test_failing_probe_kills_and_restarts),
        T(test_stubborn_child_gets_sigkill),
        T(test_sigterm_to_supervisor_stops_child),
        T(test_stop_during_backoff),
        T(test_healthy_run_resets_backoff),
        T(test_invalid_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
