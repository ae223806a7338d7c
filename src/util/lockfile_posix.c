#include "util/lockfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct fw_lock {
    int fd;
    char *path;
};

/* Reads the pid written by the holder; 0 when absent or garbled. */
static long read_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    if (end == buf || pid <= 0 || (*end && *end != '\n'))
        return 0;
    return pid;
}

fw_err fw_lock_acquire(const char *path, fw_lock **out, long *holder_pid, fw_error *err)
{
    if (holder_pid)
        *holder_pid = 0;
    if (!path || !*path || !out)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "lock: no path");
    *out = NULL;
    int fd;
    do
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return fw_error_set(err, FW_ERR_IO, "lock %s: %s", path, strerror(errno));
    /* Never truncate something planted in a shared directory: only a regular file will do
     * (O_NOFOLLOW already refused a symbolic link). */
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fw_error_set(err, FW_ERR_IO, "lock %s: not a regular file", path);
    }
    int rc;
    do
        rc = flock(fd, LOCK_EX | LOCK_NB);
    while (rc != 0 && errno == EINTR);
    if (rc != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            long pid = read_pid(fd);
            close(fd);
            if (holder_pid)
                *holder_pid = pid;
            if (pid)
                return fw_error_set(err, FW_ERR_BUSY,
                                    "another worker is running (pid %ld, lock %s)", pid, path);
            return fw_error_set(err, FW_ERR_BUSY,
                                "another worker is running (pid unknown, lock %s)", path);
        }
        close(fd);
        return fw_error_set(err, FW_ERR_IO, "lock %s: %s", path, strerror(e));
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        int e = errno;
        close(fd);
        return fw_error_set(err, FW_ERR_IO, "lock %s: writing pid: %s", path, strerror(e));
    }
    fw_lock *l = malloc(sizeof *l);
    char *p = strdup(path);
    if (!l || !p) {
        free(l);
        free(p);
        close(fd);
        return fw_error_set(err, FW_ERR_NOMEM, "lock: out of memory");
    }
    l->fd = fd;
    l->path = p;
    *out = l;
    fw_error_clear(err);
    return FW_OK;
}

void fw_lock_release(fw_lock *lock)
{
    if (!lock)
        return;
    /* Clear the pid while still holding the lock so that nobody reads a stale one. The
     * result does not matter: closing the descriptor releases the lock regardless. */
    if (ftruncate(lock->fd, 0) != 0) {
    }
    close(lock->fd);
    free(lock->path);
    free(lock);
}

const char *fw_lock_path(const fw_lock *lock)
{
    return lock ? lock->path : NULL;
}

fw_err fw_lock_default_path(const char *name, char *buf, size_t cap, fw_error *err)
{
    if (!name || !*name || strchr(name, '/') || !buf)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "lock: invalid name");
    const char *dir = getenv("XDG_RUNTIME_DIR");
    if (!dir || dir[0] != '/') {
        dir = getenv("TMPDIR");
        if (!dir || dir[0] != '/')
            dir = "/tmp";
    }
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    int n = snprintf(buf, cap, "%.*s/%s.lock", (int)dl, dir, name);
    if (n < 0 || (size_t)n >= cap)
        return fw_error_set(err, FW_ERR_TOO_LARGE, "lock: path too long");
    return FW_OK;
}
