/* Process statistics; see procstat.h. */
#include "util/procstat.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#ifdef __linux__

/* Reads /proc/self/statm: total program size and resident set, in bytes. */
static int read_statm(double *vsize, double *rss)
{
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f)
        return -1;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    if (n != 2 || page <= 0)
        return -1;
    *vsize = (double)size * (double)page;
    *rss = (double)resident * (double)page;
    return 0;
}

/* Boot time (seconds since the epoch) from the "btime" line of /proc/stat. */
static double read_btime(void)
{
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return NAN;
    char *line = NULL;
    size_t cap = 0;
    double btime = NAN;
    while (getline(&line, &cap, f) >= 0) {
        unsigned long long v;
        if (strncmp(line, "btime ", 6) == 0 && sscanf(line + 6, "%llu", &v) == 1) {
            btime = (double)v;
            break;
        }
    }
    free(line);
    fclose(f);
    return btime;
}

/* Start time of this process in clock ticks after boot: field 22 of /proc/self/stat. */
static double read_starttime_ticks(void)
{
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return NAN;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Field 2 is the command name in parentheses and may itself contain ") ". */
    char *p = strrchr(buf, ')');
    if (!p)
        return NAN;
    p++;
    /* Fields 3..21 precede starttime. */
    for (int field = 3; field <= 21; field++) {
        while (*p == ' ')
            p++;
        while (*p && *p != ' ')
            p++;
        if (!*p)
            return NAN;
    }
    char *end;
    errno = 0;
    unsigned long long ticks = strtoull(p, &end, 10);
    if (end == p || errno)
        return NAN;
    return (double)ticks;
}

static double start_time_value = NAN;
static pthread_once_t start_time_once = PTHREAD_ONCE_INIT;

static void compute_start_time(void)
{
    long hz = sysconf(_SC_CLK_TCK);
    double btime = read_btime(), ticks = read_starttime_ticks();
    if (hz > 0 && !isnan(btime) && !isnan(ticks))
        start_time_value = btime + ticks / (double)hz;
}

/* The process start never changes: computed once. */
static double start_time_seconds(void)
{
    pthread_once(&start_time_once, compute_start_time);
    return start_time_value;
}

long fw_procstat_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int self = dirfd(d);
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue; /* "." and ".." */
        if (atoi(e->d_name) == self)
            continue;
        n++;
    }
    closedir(d);
    return n;
}

double fw_procstat_resident_bytes(void)
{
    double vsize, rss;
    return read_statm(&vsize, &rss) == 0 ? rss : NAN;
}

#else /* !__linux__ */

static int read_statm(double *vsize, double *rss)
{
    (void)vsize;
    (void)rss;
    return -1;
}

static double start_time_seconds(void)
{
    return NAN;
}

long fw_procstat_open_fds(void)
{
    return -1;
}

double fw_procstat_resident_bytes(void)
{
    return NAN;
}

#endif

double fw_procstat_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return NAN;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long max_fds(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return -1;
    return (long)rl.rlim_cur;
}

fw_err fw_procstat_read(fw_procstat *out, fw_error *err)
{
    if (!out)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "procstat: out is NULL");
    out->resident_bytes = out->virtual_bytes = NAN;
    out->cpu_seconds = fw_procstat_cpu_seconds();
    out->start_time_seconds = start_time_seconds();
    out->open_fds = fw_procstat_open_fds();
    out->max_fds = max_fds();
    int statm = read_statm(&out->virtual_bytes, &out->resident_bytes);
#ifdef __linux__
    if (statm != 0 || out->open_fds < 0 || isnan(out->start_time_seconds))
        return fw_error_set(err, FW_ERR_IO, "procstat: cannot read /proc/self");
#else
    (void)statm;
#endif
    if (isnan(out->cpu_seconds))
        return fw_error_set(err, FW_ERR_IO, "procstat: getrusage failed");
    return FW_OK;
}

/* --- callbacks for the metrics registry ---------------------------------------------- */

static double read_cpu(void *user)
{
    (void)user;
    return fw_procstat_cpu_seconds();
}

static double read_rss(void *user)
{
    (void)user;
    return fw_procstat_resident_bytes();
}

static double read_vsize(void *user)
{
    (void)user;
    double vsize, rss;
    return read_statm(&vsize, &rss) == 0 ? vsize : NAN;
}

static double read_open_fds(void *user)
{
    (void)user;
    long n = fw_procstat_open_fds();
    return n < 0 ? NAN : (double)n;
}

static double read_max_fds(void *user)
{
    (void)user;
    long n = max_fds();
    return n < 0 ? INFINITY : (double)n;
}

static double read_start_time(void *user)
{
    (void)user;
    return start_time_seconds();
}

fw_err fw_procstat_register(fw_metrics *reg, fw_error *err)
{
    static const struct {
        fw_metric_type type;
        const char *name, *help;
        fw_metrics_read_fn read;
    } defs[] = {
        {FW_METRIC_COUNTER, "process_cpu_seconds_total",
         "CPU time (user + system) used by the process, in seconds.", read_cpu},
        {FW_METRIC_GAUGE, "process_open_fds", "File descriptors the process has open.",
         read_open_fds},
        {FW_METRIC_GAUGE, "process_max_fds", "Limit on open file descriptors (soft RLIMIT_NOFILE).",
         read_max_fds},
        {FW_METRIC_GAUGE, "process_virtual_memory_bytes",
         "Virtual memory size of the process, in bytes.", read_vsize},
        {FW_METRIC_GAUGE, "process_resident_memory_bytes",
         "Resident set size of the process, in bytes.", read_rss},
        {FW_METRIC_GAUGE, "process_start_time_seconds",
         "When the process started, in seconds since the Unix epoch.", read_start_time},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        fw_err rc = fw_metrics_callback(reg, defs[i].type, defs[i].name, defs[i].help, defs[i].read,
                                        NULL, NULL, err);
        if (rc != FW_OK)
            return rc;
    }
    return FW_OK;
}
