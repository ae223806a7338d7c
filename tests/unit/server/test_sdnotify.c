/* Unit tests for systemd notifications (server/sdnotify) against a fake NOTIFY_SOCKET: an
 * AF_UNIX datagram socket in a temporary directory that receives READY=1, STATUS=...,
 * STOPPING=1 and WATCHDOG=1; the watchdog interval from WATCHDOG_USEC/WATCHDOG_PID; and the
 * no-systemd case. This test sets NOTIFY_SOCKET and WATCHDOG_* in its own environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/sdnotify.h"

static char dir[64];
static char sock_path[96]; /* fits sockaddr_un.sun_path (108) */
static int sock = -1;

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/fw-sdnotify-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(sock_path, sizeof sock_path, "%.80s/notify", dir);
    sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -1;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path, sock_path, strlen(sock_path) + 1);
    if (bind(sock, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    return setenv("NOTIFY_SOCKET", sock_path, 1);
}

static int teardown(void **state)
{
    (void)state;
    close(sock);
    unlink(sock_path);
    rmdir(dir);
    unsetenv("NOTIFY_SOCKET");
    return 0;
}

/* Receives one datagram (10 s bound) as a string. */
static void expect_datagram(const char *want)
{
    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    char buf[1024];
    ssize_t n = recv(sock, buf, sizeof buf - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void test_ready_stopping_watchdog(void **state)
{
    (void)state;
    assert_true(fw_sd_ready() > 0);
    expect_datagram("READY=1");
    assert_true(fw_sd_watchdog_ping() > 0);
    expect_datagram("WATCHDOG=1");
    assert_true(fw_sd_stopping() > 0);
    expect_datagram("STOPPING=1");
    /* the environment is kept: a second READY still goes out */
    assert_true(fw_sd_ready() > 0);
    expect_datagram("READY=1");
    /* nothing else was sent */
    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 0), 0);
}

static void test_status(void **state)
{
    (void)state;
    assert_true(fw_sd_status("loading models %d/%d\non cpu", 1, 2) > 0);
    expect_datagram("STATUS=loading models 1/2 on cpu");
}

static void test_watchdog_interval(void **state)
{
    (void)state;
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    assert_int_equal(setenv("WATCHDOG_USEC", "3000000", 1), 0);
    assert_int_equal(setenv("WATCHDOG_PID", pid, 1), 0);
    assert_int_equal(fw_sd_watchdog_interval_us(), 3000000);
    /* meant for another process */
    snprintf(pid, sizeof pid, "%ld", (long)getpid() + 1);
    assert_int_equal(setenv("WATCHDOG_PID", pid, 1), 0);
    assert_int_equal(fw_sd_watchdog_interval_us(), 0);
    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
    assert_int_equal(fw_sd_watchdog_interval_us(), 0);
}

static void test_without_systemd(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(fw_sd_ready(), 0);
    assert_int_equal(fw_sd_status("x"), 0);
    assert_int_equal(fw_sd_watchdog_ping(), 0);
    /* a socket that does not exist is an error, not a crash */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/missing", dir);
    assert_int_equal(setenv("NOTIFY_SOCKET", missing, 1), 0);
    assert_true(fw_sd_ready() < 0);
    assert_int_equal(setenv("NOTIFY_SOCKET", sock_path, 1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready_stopping_watchdog),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_watchdog_interval),
        cmocka_unit_test(test_without_systemd),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
