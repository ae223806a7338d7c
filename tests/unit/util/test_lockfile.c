/* Unit tests for the single-instance lock (util/lockfile): pid written, BUSY naming the
 * holder (another lock in this process, and another process), release, automatic release
 * when the holder is killed, unusable paths and the default path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/lockfile.h"

static char tmpdir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fw-lock-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(path, sizeof path, "%s/facework-worker-8765.lock", tmpdir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    rmdir(tmpdir);
    return 0;
}

static void read_file(const char *p, char *buf, size_t cap)
{
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, cap - 1);
    assert_true(n >= 0);
    buf[n] = '\0';
    close(fd);
}

static void test_acquire_writes_pid(void **state)
{
    (void)state;
    fw_lock *lock = NULL;
    long holder = -1;
    fw_error err;
    assert_int_equal(fw_lock_acquire(path, &lock, &holder, &err), FW_OK);
    assert_non_null(lock);
    assert_int_equal(holder, 0);
    assert_string_equal(fw_lock_path(lock), path);
    char buf[64], want[64];
    read_file(path, buf, sizeof buf);
    snprintf(want, sizeof want, "%ld\n", (long)getpid());
    assert_string_equal(buf, want);
    /* close-on-exec: the descriptor does not leak into exec'd programs */
    int flags = -1;
    for (int fd = 3; fd < 64; fd++) {
        char link[64], target[256];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n > 0) {
            target[n] = '\0';
            if (strcmp(target, path) == 0)
                flags = fcntl(fd, F_GETFD);
        }
    }
    assert_true(flags >= 0 && (flags & FD_CLOEXEC));
    fw_lock_release(lock);
    /* released: the pid is cleared, the file stays */
    read_file(path, buf, sizeof buf);
    assert_string_equal(buf, "");
}

static void test_busy_in_same_process(void **state)
{
    (void)state;
    fw_lock *a = NULL, *b = NULL;
    assert_int_equal(fw_lock_acquire(path, &a, NULL, NULL), FW_OK);
    long holder = 0;
    fw_error err;
    assert_int_equal(fw_lock_acquire(path, &b, &holder, &err), FW_ERR_BUSY);
    assert_null(b);
    assert_int_equal(holder, (long)getpid());
    char want[256];
    snprintf(want, sizeof want, "another worker is running (pid %ld, lock %s)", (long)getpid(),
             path);
    assert_string_equal(err.message, want);
    assert_int_equal(err.code, FW_ERR_BUSY);
    /* after release it can be taken again */
    fw_lock_release(a);
    assert_int_equal(fw_lock_acquire(path, &b, &holder, &err), FW_OK);
    fw_lock_release(b);
}

static void test_other_process_and_death(void **state)
{
    (void)state;
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        fw_lock *l = NULL;
        char ok = fw_lock_acquire(path, &l, NULL, NULL) == FW_OK ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1)
            _exit(2);
        for (;;)
            pause(); /* holds the lock until killed */
    }
    close(ready[1]);
    struct pollfd pfd = {.fd = ready[0], .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    char ok = 0;
    assert_int_equal(read(ready[0], &ok, 1), 1);
    close(ready[0]);
    assert_int_equal(ok, 'y');

    fw_lock *mine = NULL;
    long holder = 0;
    fw_error err;
    assert_int_equal(fw_lock_acquire(path, &mine, &holder, &err), FW_ERR_BUSY);
    assert_int_equal(holder, (long)pid);
    char want[256];
    snprintf(want, sizeof want, "another worker is running (pid %ld, lock %s)", (long)pid, path);
    assert_string_equal(err.message, want);

    /* SIGKILL: no cleanup code runs, yet the lock goes away with the process */
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(fw_lock_acquire(path, &mine, &holder, &err), FW_OK);
    char buf[64];
    read_file(path, buf, sizeof buf);
    assert_int_equal(strtol(buf, NULL, 10), (long)getpid());
    fw_lock_release(mine);
}

static void test_unknown_holder_pid(void **state)
{
    (void)state;
    /* a holder that has not written its pid (or wrote garbage) is reported as unknown */
    fw_lock *a = NULL, *b = NULL;
    assert_int_equal(fw_lock_acquire(path, &a, NULL, NULL), FW_OK);
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "garbage", 7), 7);
    close(fd);
    long holder = -1;
    fw_error err;
    assert_int_equal(fw_lock_acquire(path, &b, &holder, &err), FW_ERR_BUSY);
    assert_int_equal(holder, 0);
    assert_non_null(strstr(err.message, "pid unknown"));
    fw_lock_release(a);
}

static void test_bad_paths(void **state)
{
    (void)state;
    fw_lock *l = NULL;
    fw_error err;
    char p[192];
    snprintf(p, sizeof p, "%s/no-such-dir/x.lock", tmpdir);
    assert_int_equal(fw_lock_acquire(p, &l, NULL, &err), FW_ERR_IO);
    assert_null(l);
    assert_non_null(strstr(err.message, p));
    assert_int_equal(fw_lock_acquire(tmpdir, &l, NULL, &err), FW_ERR_IO); /* a directory */
    /* a symbolic link planted at the lock path is refused and its target left alone */
    char target[192], link[192];
    snprintf(target, sizeof target, "%s/victim", tmpdir);
    snprintf(link, sizeof link, "%s/planted.lock", tmpdir);
    int fd = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "precious", 8), 8);
    close(fd);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(fw_lock_acquire(link, &l, NULL, &err), FW_ERR_IO);
    assert_null(l);
    char buf[32];
    read_file(target, buf, sizeof buf);
    assert_string_equal(buf, "precious");
    unlink(link);
    unlink(target);
    /* a FIFO is not a regular file */
    snprintf(link, sizeof link, "%s/fifo.lock", tmpdir);
    assert_int_equal(mkfifo(link, 0600), 0);
    fd = open(link, O_RDONLY | O_NONBLOCK); /* lets the lock's O_RDWR open return at once */
    assert_true(fd >= 0);
    assert_int_equal(fw_lock_acquire(link, &l, NULL, &err), FW_ERR_IO);
    assert_non_null(strstr(err.message, "not a regular file"));
    close(fd);
    unlink(link);
    assert_int_equal(fw_lock_acquire("", &l, NULL, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_lock_acquire(NULL, &l, NULL, &err), FW_ERR_INVALID_ARGUMENT);
    fw_lock_release(NULL);
    assert_null(fw_lock_path(NULL));
}

static void test_default_path(void **state)
{
    (void)state;
    char buf[256];
    assert_int_equal(fw_lock_default_path("facework-worker-8765", buf, sizeof buf, NULL), FW_OK);
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    char want[256];
    if (xdg && xdg[0] == '/') {
        snprintf(want, sizeof want, "%s/facework-worker-8765.lock", xdg);
        /* the helper trims a trailing slash; only compare when there is none */
        if (xdg[strlen(xdg) - 1] != '/')
            assert_string_equal(buf, want);
    } else {
        assert_non_null(strstr(buf, "/facework-worker-8765.lock"));
        assert_true(buf[0] == '/');
    }
    char small[8];
    fw_error err;
    assert_int_equal(fw_lock_default_path("facework-worker-8765", small, sizeof small, &err),
                     FW_ERR_TOO_LARGE);
    assert_int_equal(fw_lock_default_path("a/b", buf, sizeof buf, &err), FW_ERR_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_acquire_writes_pid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_in_same_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_process_and_death, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_holder_pid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_path, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
