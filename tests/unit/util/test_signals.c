/* Unit tests for signal handling (util/signals): SIGTERM/SIGINT/SIGHUP sent to the process
 * reach the callback on the dedicated thread, threads created afterwards have them blocked,
 * SIGPIPE is ignored, stop/start cycles, and the child reset. Each callback writes the signal
 * number to a pipe that the test waits on (bounded by poll). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/signals.h"

typedef struct seen {
    int fd;             /* write end: one byte per signal */
    pthread_t main_tid; /* the callback must not run on it */
    int wrong_thread;
} seen;

static void on_signal(int signo, void *user)
{
    seen *s = user;
    if (pthread_equal(pthread_self(), s->main_tid))
        s->wrong_thread = 1;
    unsigned char b = (unsigned char)signo;
    if (write(s->fd, &b, 1) != 1)
        s->wrong_thread = 2;
}

/* Waits up to 10 s for the next signal number written by the callback. */
static int next_signal(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 10000) != 1)
        return -1;
    unsigned char b;
    return read(fd, &b, 1) == 1 ? b : -1;
}

static void *query_mask(void *arg)
{
    sigset_t *out = arg;
    pthread_sigmask(SIG_BLOCK, NULL, out);
    return NULL;
}

static void test_signals_reach_callback(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    seen s = {.fd = p[1], .main_tid = pthread_self()};
    fw_error err;
    assert_int_equal(fw_signals_start(on_signal, &s, &err), FW_OK);
    assert_int_equal(fw_signals_start(on_signal, &s, &err), FW_ERR_BUSY);

    const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGTERM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        assert_int_equal(kill(getpid(), sigs[i]), 0); /* process-directed */
        assert_int_equal(next_signal(p[0]), sigs[i]);
    }
    assert_int_equal(s.wrong_thread, 0);

    /* a thread created now inherits the blocked mask */
    sigset_t mask;
    sigemptyset(&mask);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, query_mask, &mask), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(sigismember(&mask, SIGTERM));
    assert_true(sigismember(&mask, SIGINT));
    assert_true(sigismember(&mask, SIGHUP));

    fw_signals_stop();
    fw_signals_stop(); /* idempotent */
    close(p[0]);
    close(p[1]);
}

static void test_sigpipe_ignored(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    seen s = {.fd = p[1], .main_tid = pthread_self()};
    assert_int_equal(fw_signals_start(on_signal, &s, NULL), FW_OK);
    int q[2];
    assert_int_equal(pipe(q), 0);
    close(q[0]);
    /* without the ignore, this write would kill the test process */
    errno = 0;
    assert_int_equal(write(q[1], "x", 1), -1);
    assert_int_equal(errno, EPIPE);
    close(q[1]);
    fw_signals_stop();
    close(p[0]);
    close(p[1]);
}

static void test_restart_after_stop(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    seen s = {.fd = p[1], .main_tid = pthread_self()};
    for (int round = 0; round < 3; round++) {
        assert_int_equal(fw_signals_start(on_signal, &s, NULL), FW_OK);
        assert_int_equal(kill(getpid(), SIGHUP), 0);
        assert_int_equal(next_signal(p[0]), SIGHUP);
        fw_signals_stop();
    }
    /* stopped: nothing is consumed; a signal sent now stays pending (blocked) and is
     * delivered by the next start */
    assert_int_equal(kill(getpid(), SIGINT), 0);
    struct pollfd pfd = {.fd = p[0], .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 0), 0);
    sigset_t pending;
    assert_int_equal(sigpending(&pending), 0);
    assert_true(sigismember(&pending, SIGINT));
    assert_int_equal(fw_signals_start(on_signal, &s, NULL), FW_OK);
    assert_int_equal(next_signal(p[0]), SIGINT);
    fw_signals_stop();
    close(p[0]);
    close(p[1]);
}

static void test_reset_child(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    seen s = {.fd = p[1], .main_tid = pthread_self()};
    assert_int_equal(fw_signals_start(on_signal, &s, NULL), FW_OK);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* the forked child has the signals blocked and SIGPIPE ignored: reset, then SIGTERM
         * must kill it with the default action */
        fw_signals_reset_child();
        struct sigaction sa;
        sigaction(SIGPIPE, NULL, &sa);
        if (sa.sa_handler != SIG_DFL)
            _exit(3);
        raise(SIGTERM);
        _exit(4);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGTERM);
    fw_signals_stop();
    close(p[0]);
    close(p[1]);
}

static void test_no_callback(void **state)
{
    (void)state;
    fw_error err;
    assert_int_equal(fw_signals_start(NULL, NULL, &err), FW_ERR_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signals_reach_callback),
        cmocka_unit_test(test_sigpipe_ignored),
        cmocka_unit_test(test_restart_after_stop),
        cmocka_unit_test(test_reset_child),
        cmocka_unit_test(test_no_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
