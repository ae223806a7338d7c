/* Process statistics (memory, CPU time, file descriptors, start time) and the standard
 * Prometheus process_* metrics built on them.
 *
 * Linux reads /proc/self; elsewhere only what getrusage()/getrlimit() give is available and
 * the other fields are NaN / -1. All functions are thread-safe and allocate nothing that
 * outlives the call. */
#ifndef FW_UTIL_PROCSTAT_H
#define FW_UTIL_PROCSTAT_H

#include "facework/error.h"
#include "util/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fw_procstat {
    double resident_bytes;     /* resident set size; NaN when unknown */
    double virtual_bytes;      /* virtual memory size; NaN when unknown */
    double cpu_seconds;        /* user + system CPU time of the whole process */
    double start_time_seconds; /* process start, seconds since the Unix epoch; NaN unknown */
    long open_fds;             /* open file descriptors; -1 when unknown */
    long max_fds;              /* soft RLIMIT_NOFILE; -1 when unlimited or unknown */
} fw_procstat;

/* Fills *out with the current statistics of this process. Fails (FW_ERR_IO, with *out
 * still filled as far as possible) when a source that should exist could not be read. */
fw_err fw_procstat_read(fw_procstat *out, fw_error *err);

/* Resident set size in bytes, from /proc/self/statm; NaN when it cannot be read. */
double fw_procstat_resident_bytes(void);

/* Number of open file descriptors (the directory handle used to count them excluded);
 * -1 when it cannot be determined. */
long fw_procstat_open_fds(void);

/* User + system CPU seconds of the process (getrusage); NaN on failure. */
double fw_procstat_cpu_seconds(void);

/* Registers on reg the callback metrics
 *   process_cpu_seconds_total (counter), process_resident_memory_bytes,
 *   process_virtual_memory_bytes, process_open_fds, process_max_fds,
 *   process_start_time_seconds (gauges),
 * each read at scrape time. Fails if any of these names is already registered (the ones
 * registered before the failure stay). */
fw_err fw_procstat_register(fw_metrics *reg, fw_error *err);

#ifdef __cplusplus
}
#endif
#endif
