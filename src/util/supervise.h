/* --supervise: a parent process that keeps one child running.
 *
 * fw_supervise starts the child (exec of argv, or fork running child_main), then restarts it
 * whenever it exits abnormally (non-zero status or killed by a signal) or when the caller's
 * health probe fails probe_failures times in a row (the child then gets SIGTERM, and SIGKILL
 * to its whole process group kill_grace_s later). Restarts wait an exponential backoff
 * (fw_backoff_delay) that resets once a child has stayed healthy for healthy_reset_s; after
 * max_restarts consecutive failed runs it gives up. A child that exits 0 by itself ends the
 * supervisor with 0.
 *
 * Stopping: fw_supervise_request_stop(signo) (async-signal-safe; with handle_signals the
 * supervisor calls it from its own SIGTERM/SIGINT handlers) forwards signo to the child and
 * waits stop_grace_s for it to exit, then SIGKILLs its process group; a second request kills
 * at once. fw_supervise then returns the child's status: 0 for a clean exit, 128+N when killed
 * by signal N (with no child running, the status of the last one that ran).
 *
 * Each child runs in its own process group (a terminal's Ctrl-C reaches only the supervisor,
 * which forwards it once) with default signal dispositions and an empty signal mask. When
 * fw_signals runs in the supervising process, SIGTERM/SIGINT are blocked there: leave
 * handle_signals off and call fw_supervise_request_stop from the fw_signals callback. Only
 * one fw_supervise may run per process at a time. */
#ifndef FW_UTIL_SUPERVISE_H
#define FW_UTIL_SUPERVISE_H

#include <stdbool.h>

#include "facework/error.h"

typedef struct fw_backoff {
    double initial_s;  /* delay before the first restart */
    double max_s;      /* cap */
    double multiplier; /* growth per consecutive failure (>= 1) */
} fw_backoff;

/* Delay before restart number attempt + 1 after consecutive failures: attempt 0 ->
 * initial_s, then initial_s * multiplier^attempt, capped at max_s (max_s <= 0: no growth,
 * always initial_s; multiplier < 1 counts as 1). Pure. */
double fw_backoff_delay(unsigned attempt, const fw_backoff *p);

typedef enum fw_supervise_event_kind {
    FW_SUP_STARTED,      /* pid: child started */
    FW_SUP_EXITED,       /* pid, status: child reaped (exit code or 128+signal) */
    FW_SUP_PROBE_FAILED, /* pid, failures: consecutive probe failures so far */
    FW_SUP_KILLING,      /* pid, signo: sending signo (SIGTERM/SIGINT, later SIGKILL) */
    FW_SUP_BACKOFF,      /* attempt, delay_s: waiting before the next start */
    FW_SUP_GIVING_UP,    /* failures: max_restarts exceeded */
    FW_SUP_STOPPING,     /* signo: a stop was requested */
} fw_supervise_event_kind;

typedef struct fw_supervise_event {
    fw_supervise_event_kind kind;
    long pid;
    int status;        /* EXITED: 0..255 exit code, or 128 + signal */
    bool signaled;     /* EXITED: killed by a signal */
    int signo;         /* KILLING, STOPPING */
    unsigned failures; /* consecutive failures (PROBE_FAILED: probe failures) */
    unsigned attempt;  /* BACKOFF */
    double delay_s;    /* BACKOFF */
} fw_supervise_event;

typedef struct fw_supervise_opts {
    /* What to run, one of: */
    char *const *argv;             /* execvp(argv[0], argv) in the child (NULL-terminated) */
    int (*child_main)(void *user); /* or run this in the forked child; it exits with the
                                      returned status (stdio flushed, no atexit handlers) */
    void *child_user;

    fw_backoff backoff;
    double healthy_reset_s; /* a child up this long with no probe failure resets the count;
                               <= 0: never reset */
    int max_restarts;       /* consecutive failed runs tolerated; < 0: unlimited */

    /* Health probe (NULL: none): called every probe_interval_s once the child has run for
     * probe_start_delay_s; returns true when healthy. It runs on the supervisor's thread, so
     * it must bound its own duration (a connect/read timeout). */
    bool (*probe)(long pid, void *user);
    void *probe_user;
    double probe_interval_s;
    double probe_start_delay_s;
    unsigned probe_failures; /* consecutive failures that make the child "hung" (>= 1) */

    double kill_grace_s; /* SIGTERM -> SIGKILL for a hung child */
    double stop_grace_s; /* forwarded stop signal -> SIGKILL */

    bool handle_signals; /* install SIGTERM/SIGINT handlers that request a stop */

    /* Observer, for logs and tests (NULL: none). Runs on the supervisor's thread; it may
     * call fw_supervise_request_stop and kill(2). */
    void (*on_event)(const fw_supervise_event *ev, void *user);
    void *event_user;
} fw_supervise_opts;

/* Defaults: backoff 1 s doubling to 60 s, healthy_reset 60 s, max_restarts 10, probe every
 * 5 s after 30 s, 3 failures, kill_grace 10 s, stop_grace 30 s, handle_signals true. */
void fw_supervise_opts_init(fw_supervise_opts *o);

/* Runs the supervision loop until the child exits cleanly, a stop completes or it gives up.
 * Returns the exit status for the supervisor process (see above); when giving up it is
 * non-zero (the last child's status, or 1) and err says why. Setup failures return 70 with
 * err set. */
int fw_supervise(const fw_supervise_opts *opts, fw_error *err);

/* Asks the running fw_supervise to stop, forwarding signo (0: SIGTERM). Async-signal-safe;
 * callable from any thread or handler. Ignored when no supervisor is running. */
void fw_supervise_request_stop(int signo);

#endif
