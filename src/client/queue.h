/* Internal: the submitting side of the queue transport (server/queue.h describes the jobs and
 * results): `facework submit` and GPU_WORKER_QUEUE=redis://... callers.
 *
 * A client owns one connection and one reply list, STREAM:reply:HOST:PID:RANDOM, which every
 * job it submits names as reply_to; fw_qclient_next pops the envelopes
 * {"id","entry","status","result"} in the order workers answered. While Redis is away,
 * submit and next reconnect with backoff (jobs already added and answers already pushed are
 * in Redis, not lost). One thread at a time per client.
 *
 *   fw_qclient *c; fw_qclient_new("redis://10.0.0.5:6379/faces", &c, &err);
 *   fw_qclient_submit(c, "photo-1", body, len, &err);      // body: a /v1/analyze JSON
 *   fw_qclient_reply r; fw_qclient_next(c, 30.0, &r, &err); // r.id, r.status, r.json
 *   fw_qclient_reply_clear(&r); fw_qclient_free(c); */
#ifndef FW_CLIENT_QUEUE_H
#define FW_CLIENT_QUEUE_H

#include <stddef.h>

#include "facework/error.h"

typedef struct fw_qclient fw_qclient;

typedef struct fw_qclient_reply {
    char *id;   /* the job id (malloc'd) */
    int status; /* 200, or the whole-job error status (4xx; 422 for a dead letter) */
    char *json; /* the whole envelope, NUL-terminated (malloc'd) */
    size_t len; /* bytes of json */
} fw_qclient_reply;

/* Parses url (util/redis.h) and connects (retrying with backoff for up to connect_timeout_s,
 * 0: once). On success *out is owned by the caller (fw_qclient_free). Errors: PARSE,
 * UNAVAILABLE, NOMEM. */
fw_err fw_qclient_new(const char *url, double connect_timeout_s, fw_qclient **out, fw_error *err);

/* Adds a job (XADD STREAM * id JOB_ID reply_to LIST body BODY [route ROUTE]); route NULL:
 * /v1/analyze. Retries a lost connection until timeout_s (0: once). */
fw_err fw_qclient_submit(fw_qclient *c, const char *job_id, const char *body, size_t len,
                         const char *route, double timeout_s, fw_error *err);

/* Waits up to timeout_s for the next answer. FW_OK: *out filled (caller clears);
 * FW_ERR_TIMEOUT: none came; UNAVAILABLE: Redis unreachable all that time; PARSE: an
 * answer that is not an envelope (skipped). */
fw_err fw_qclient_next(fw_qclient *c, double timeout_s, fw_qclient_reply *out, fw_error *err);

void fw_qclient_reply_clear(fw_qclient_reply *r);

/* The reply list's key (for logs and tests). */
const char *fw_qclient_reply_key(const fw_qclient *c);

/* Deletes the reply list and frees c. NULL is a no-op. */
void fw_qclient_free(fw_qclient *c);

#endif
