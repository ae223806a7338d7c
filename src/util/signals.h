/* Process signals, delivered to a callback on one dedicated thread.
 *
 * fw_signals_start blocks SIGINT, SIGTERM and SIGHUP in the calling thread, which every
 * thread created afterwards inherits, and starts a thread that waits for them and calls
 * cb(signo, user) for each, one at a time. Call it early in main, before creating other
 * threads (a thread created earlier that does not block them could take the signal with
 * its default action). SIGPIPE is ignored process-wide, so writes to a closed socket or
 * pipe fail with EPIPE instead of killing the process.
 *
 * The callback runs on the signal thread, not in a signal handler: it may log, lock and
 * call any function, but should return promptly (flag a shutdown, wake an event loop). */
#ifndef FW_UTIL_SIGNALS_H
#define FW_UTIL_SIGNALS_H

#include "facework/error.h"

typedef void (*fw_signal_fn)(int signo, void *user);

/* Starts the signal thread. FW_ERR_BUSY when it is already running; FW_ERR_INTERNAL when the
 * thread or the mask cannot be set up. */
fw_err fw_signals_start(fw_signal_fn cb, void *user, fw_error *err);

/* Stops and joins the signal thread; no callback runs after it returns. The signals stay
 * blocked (one arriving later stays pending until fw_signals_start is called again). Must not
 * be called from the callback. A no-op when not running. */
void fw_signals_stop(void);

/* Restores the default disposition of SIGINT/SIGTERM/SIGHUP/SIGPIPE and unblocks them in the
 * calling thread: for a child process after fork() and before exec() or its own setup. */
void fw_signals_reset_child(void);

#endif
