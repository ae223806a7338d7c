/* Unit tests for process statistics (Linux /proc) and the process_* metrics: plausible
 * values, file descriptor counting that follows open/close exactly, RSS that follows touched
 * memory, CPU time that follows an independent CPU clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/metrics.h"
#include "util/procstat.h"

static double now_seconds(void)
{
    struct timespec ts;
    assert_int_equal(clock_gettime(CLOCK_REALTIME, &ts), 0);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double process_cpu_clock(void)
{
    struct timespec ts;
    assert_int_equal(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts), 0);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_read_plausible(void **state)
{
    (void)state;
    fw_procstat ps;
    fw_error err;
    assert_int_equal(fw_procstat_read(&ps, &err), FW_OK);
    assert_true(ps.resident_bytes > 0);
    assert_true(ps.virtual_bytes >= ps.resident_bytes);
    assert_true(fmod(ps.resident_bytes, (double)sysconf(_SC_PAGESIZE)) == 0);
    assert_true(ps.cpu_seconds > 0);
    assert_true(ps.open_fds >= 3); /* stdin, stdout, stderr */
    assert_true(ps.max_fds == -1 || ps.max_fds >= ps.open_fds);
    /* This test process started moments ago (btime has a one-second resolution). */
    double now = now_seconds();
    assert_true(ps.start_time_seconds <= now + 1.0);
    assert_true(ps.start_time_seconds > now - 600.0);
    assert_int_equal(fw_procstat_read(NULL, &err), FW_ERR_INVALID_ARGUMENT);
}

static void test_open_fds_follow_open_and_close(void **state)
{
    (void)state;
    long n0 = fw_procstat_open_fds();
    assert_true(n0 >= 3);
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(fw_procstat_open_fds(), n0 + 1);
    int fd2 = dup(fd);
    assert_true(fd2 >= 0);
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    assert_int_equal(fw_procstat_open_fds(), n0 + 4);
    close(pipefd[0]);
    close(pipefd[1]);
    close(fd2);
    assert_int_equal(fw_procstat_open_fds(), n0 + 1);
    close(fd);
    assert_int_equal(fw_procstat_open_fds(), n0);
}

static void test_rss_follows_touched_memory(void **state)
{
    (void)state;
    const size_t size = 64u << 20;
    double before = fw_procstat_resident_bytes();
    assert_true(before > 0);
    volatile unsigned char *p = malloc(size);
    assert_non_null((void *)p);
    for (size_t i = 0; i < size; i += 4096)
        p[i] = (unsigned char)i;
    double after = fw_procstat_resident_bytes();
    /* At least 3/4 of the touched pages are resident (nothing else is freed meanwhile). */
    assert_true(after - before >= (double)size * 0.75);
    free((void *)p);
}

static void test_cpu_seconds_follow_cpu_clock(void **state)
{
    (void)state;
    double c0 = fw_procstat_cpu_seconds(), k0 = process_cpu_clock();
    volatile double x = 0;
    while (process_cpu_clock() - k0 < 0.05)
        for (int i = 0; i < 10000; i++)
            x += sqrt((double)i);
    assert_true(x > 0);
    double c1 = fw_procstat_cpu_seconds(), k1 = process_cpu_clock();
    /* getrusage and the CPU clock measure the same time, up to scheduler-tick accounting. */
    assert_true(c1 - c0 >= 0.03);
    assert_true(c1 - c0 <= (k1 - k0) + 0.05);
    assert_true(fabs(c1 - k1) < 0.1);
}

/* Value of the sample `name` in text, NAN if absent. */
static double sample(const char *text, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : NAN;
}

static void test_register_metrics(void **state)
{
    (void)state;
    fw_metrics *reg = NULL;
    fw_error err;
    assert_int_equal(fw_metrics_new(&reg, &err), FW_OK);
    assert_int_equal(fw_procstat_register(reg, &err), FW_OK);
    char *text = NULL;
    assert_int_equal(fw_metrics_render(reg, &text, NULL, &err), FW_OK);

    assert_non_null(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(text, "# TYPE process_resident_memory_bytes gauge\n"));
    assert_non_null(strstr(text, "# TYPE process_virtual_memory_bytes gauge\n"));
    assert_non_null(strstr(text, "# TYPE process_open_fds gauge\n"));
    assert_non_null(strstr(text, "# TYPE process_max_fds gauge\n"));
    assert_non_null(strstr(text, "# TYPE process_start_time_seconds gauge\n"));

    double rss = sample(text, "process_resident_memory_bytes");
    double vsz = sample(text, "process_virtual_memory_bytes");
    double fds = sample(text, "process_open_fds");
    double start = sample(text, "process_start_time_seconds");
    double cpu = sample(text, "process_cpu_seconds_total");
    assert_true(rss > 0);
    assert_true(vsz >= rss);
    assert_true(fds >= 3);
    assert_true(cpu > 0);
    double now = now_seconds();
    assert_true(start <= now + 1.0 && start > now - 600.0);
    free(text);

    /* Values are read at scrape time: one more open file shows in the next rendering. */
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(fw_metrics_render(reg, &text, NULL, &err), FW_OK);
    assert_true(sample(text, "process_open_fds") == fds + 1);
    free(text);
    close(fd);

    /* The names are taken now. */
    assert_int_equal(fw_procstat_register(reg, &err), FW_ERR_INVALID_ARGUMENT);
    fw_metrics_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_plausible),
        cmocka_unit_test(test_open_fds_follow_open_and_close),
        cmocka_unit_test(test_rss_follows_touched_memory),
        cmocka_unit_test(test_cpu_seconds_follow_cpu_clock),
        cmocka_unit_test(test_register_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
