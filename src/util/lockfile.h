/* Single-instance lock: an advisory, exclusive lock on a file that names its holder's pid.
 *
 * The lock belongs to the process that acquired it and goes away with it (also on a crash or
 * SIGKILL), so a stale file never blocks a restart. The file itself is left in place. A
 * child created by fork() shares the lock until it closes its copy; exec() drops it
 * (close-on-exec). */
#ifndef FW_UTIL_LOCKFILE_H
#define FW_UTIL_LOCKFILE_H

#include <stddef.h>

#include "facework/error.h"

typedef struct fw_lock fw_lock;

/* Opens or creates path (mode 0644; a symbolic link or a non-regular file is refused) and
 * takes the lock without waiting. On success *out owns
 * the lock and the file holds our pid. When another process (or another fw_lock in this
 * process) holds it: FW_ERR_BUSY, "another worker is running (pid N, lock PATH)", and
 * *holder_pid (when non-NULL) = N, or 0 when the holder's pid could not be read. Other
 * failures: FW_ERR_IO (path unusable), FW_ERR_NOMEM. */
fw_err fw_lock_acquire(const char *path, fw_lock **out, long *holder_pid, fw_error *err);

/* Releases the lock (clearing the pid from the file) and frees lock. NULL is a no-op. */
void fw_lock_release(fw_lock *lock);

/* The path given to fw_lock_acquire. */
const char *fw_lock_path(const fw_lock *lock);

/* Writes "<dir>/<name>.lock" into buf, dir being $XDG_RUNTIME_DIR when set and absolute,
 * else the system's temporary directory. FW_ERR_TOO_LARGE when it does not fit in cap. */
fw_err fw_lock_default_path(const char *name, char *buf, size_t cap, fw_error *err);

#endif
