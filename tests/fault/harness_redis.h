/* Fault-test harness, Redis side: a real `redis-server` (Debian) on 127.0.0.1, on a free port,
 * in a private temporary directory, optionally with AOF persistence (appendfsync always, so
 * a restart loses nothing), plus hiredis helpers for the job, result and dead-letter
 * streams of the worker's queue mode (server/queue.h).
 *
 * fthr_start waits until the server answers PING (deadline 20 s); fthr_stop shuts it down
 * (SHUTDOWN, or SIGKILL when asked) and waits for the exit; fthr_restart starts it again on
 * the same port and directory. fthr_free (and an atexit handler) kill whatever still runs
 * and remove the directory. Helpers never sleep to wait for a state: they poll with a
 * deadline (fth_pause_ms between polls) and fail the test when it passes. */
#ifndef FTHR_HARNESS_REDIS_H
#define FTHR_HARNESS_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

typedef struct fthr_redis {
    pid_t pid; /* 0 while stopped */
    int port;
    bool aof;
    char dir[128];
    char url[128];   /* redis://127.0.0.1:PORT/jobs: the job stream "jobs" */
    redisContext *c; /* the test's connection (reconnected by fthr_cmd when lost) */
} fthr_redis;

fthr_redis *fthr_start(bool aof);
void fthr_stop(fthr_redis *r, bool kill9);
void fthr_restart(fthr_redis *r);
void fthr_free(fthr_redis *r);

/* Runs a command (printf-style, hiredis redisCommand); fails the test on a transport error
 * or an error reply. The reply is the caller's (freeReplyObject). */
redisReply *fthr_cmd(fthr_redis *r, const char *fmt, ...);
long long fthr_int(fthr_redis *r, const char *fmt, ...); /* an integer reply */

/* XADD jobs * id JOB body {"images":[{"id":"0","data":base64(bytes)}]} [reply_to KEY]. */
void fthr_push_bytes(fthr_redis *r, const char *job_id, const void *bytes, size_t len,
                     const char *reply_to);
/* The same with sample<photo>.jpg from FW_PHOTOS_DIR. */
void fthr_push_photo(fthr_redis *r, const char *job_id, int photo, const char *reply_to);
/* XADD jobs * id JOB body BODY (any text). */
void fthr_push_body(fthr_redis *r, const char *job_id, const char *body);

/* The entries of a stream as a JSON array of objects {"_id": entry id, field: value...}. */
json_t *fthr_stream(fthr_redis *r, const char *key);

/* Polls until XLEN key >= n; fails the test after timeout_s (printing what it has). */
void fthr_wait_len(fthr_redis *r, const char *key, long long n, double timeout_s);

/* Entries pending in group "facework" of stream "jobs" for consumer (NULL: all). */
long long fthr_pending(fthr_redis *r, const char *consumer);

/* The ids of the entries pending for consumer (JSON array of strings). */
json_t *fthr_pending_ids(fthr_redis *r, const char *consumer);

#endif
