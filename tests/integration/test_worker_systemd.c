/* The worker under systemd: READY=1 once the models are loaded, WATCHDOG=1 pings at half
 * WATCHDOG_USEC while it works, STOPPING=1 on SIGTERM. A datagram socket of ours stands in
 * for systemd's NOTIFY_SOCKET. */
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

/* Receives datagrams until one contains `want` or the deadline passes. */
static bool wait_for(int fd, const char *want, double timeout_s)
{
    double deadline = fwt_now() + timeout_s;
    char buf[512];
    while (fwt_now() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ms = (int)((deadline - fwt_now()) * 1000) + 1;
        if (poll(&p, 1, ms) != 1)
            continue;
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        if (strstr(buf, want))
            return true;
    }
    return false;
}

static void test_notify_ready_watchdog_stopping(void **state)
{
    (void)state;
    char dir[] = "/tmp/fw-sd-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/notify", dir);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char env_sock[200];
    snprintf(env_sock, sizeof env_sock, "NOTIFY_SOCKET=%s", sa.sun_path);
    const char *env[] = {env_sock, "WATCHDOG_USEC=300000", NULL};
    fwt_worker_opts o = {.env = env};
    fwt_worker *w = fwt_worker_start_opts(&o);
    assert_true(wait_for(fd, "READY=1", 30));
    /* pings every 150 ms: two of them well within 5 s */
    assert_true(wait_for(fd, "WATCHDOG=1", 5));
    assert_true(wait_for(fd, "WATCHDOG=1", 5));
    assert_int_equal(fwt_worker_stop(w, SIGTERM, 30), 0);
    assert_true(wait_for(fd, "STOPPING=1", 5));
    fwt_worker_free(w);
    close(fd);
    unlink(sa.sun_path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notify_ready_watchdog_stopping),
    };
    return cmocka_run_group_tests(tests, NULL, fwt_teardown);
}
