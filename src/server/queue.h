/* The worker's queue mode: jobs from a Redis stream (consumer group), results back to Redis
 * (DESIGN.md "queue engine for many workers"; README "Scale-out on Redis Streams").
 *
 * A job is one stream entry (XADD STREAM * id JOB_ID body JSON [reply_to KEY] [route R]):
 *   id        the job id (optional: the entry id); results are idempotent by it
 *   body      exactly a /v1/analyze JSON request body: {"images":[{"id"?, "data": base64} |
 *             {"id"?, "path": "file"}], "options"?: {...}}; "path" items are read from the
 *             worker's files_root (fw_api_limits.files_root; not allowed when unset)
 *   reply_to  optional list key: the result envelope is RPUSHed there (expiring with the
 *             result key) instead of being added to the results stream
 *   route     optional "/v1/analyze" (default), "/v1/detect" or "/v1/embed"
 *
 * Its result is the JSON HTTP would answer for that body (the 200 body with per-item errors,
 * or the error body of a whole-job failure), published exactly once per job id by one Lua
 * script that does SET NX EX on STREAM:result:JOB_ID, then XADD to the results stream
 * (fields id, entry, status, consumer, result) or RPUSH of {"id","entry","status","result"}
 * to reply_to (the key holds that envelope), then XACK; when the key already existed
 * (another consumer answered this job), only the XACK. So a reclaimed or resubmitted job
 * never yields two results; a job id submitted again with a reply_to gets the stored answer
 * there (the same one), without being run again.
 *
 * Dead letters (XADD DEAD * id, entry, reason, deliveries, consumer), each with a result
 * (status 422 and {"error":{"code":"dead_letter",...}}, or the per-item errors) so that a
 * submitter always gets one answer: a body that cannot be parsed (the 4xx a request would
 * get), a job whose every image failed (undecodable, too large: the first item's reason),
 * an entry delivered more than max_deliveries times (it probably crashes workers).
 *
 * Threads: a reader (XREADGROUP for as many jobs as the worker admits: prefetch minus jobs
 * in flight, and never more than run() accepts -- a job refused as busy waits in the reader
 * until a completion; XAUTOCLAIM of entries idle over claim_idle_s; XINFO GROUPS for the
 * lag and pending gauges) and a writer (publishes results as they complete). Each has its
 * own connection and reconnects with exponential backoff and jitter while Redis is away;
 * results wait in memory until they are written. Image bytes and credentials are never
 * logged. */
#ifndef FW_SERVER_QUEUE_H
#define FW_SERVER_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

#include "facework/error.h"
#include "server/api.h"
#include "util/metrics.h"

typedef struct fw_queue fw_queue;
typedef struct fw_queue_job fw_queue_job; /* one entry being answered (opaque) */

/* A job's outcome, handed to fw_queue_complete. */
typedef struct fw_queue_result {
    int status; /* 200, or the HTTP status of a whole-job error */
    char *body; /* the JSON answer, malloc'd; taken by fw_queue_complete (NULL with retry) */
    size_t len; /* bytes of body */
    bool retry; /* no final answer (the worker is shutting down): the entry stays pending
                   and another consumer reclaims it */
    size_t n_items, n_failed;                    /* images; images answered with an error */
    char first_error[FW_ERROR_MESSAGE_MAX + 32]; /* "code: message" of the first failed image */
} fw_queue_result;

/* The worker's side. run() starts a parsed job: FW_OK means it took req and will call
 * fw_queue_complete(job, ...) exactly once, from any thread; FW_ERR_BUSY means not now (req
 * stays the caller's; the queue retries after a completion); other errors are final for
 * this consumer (the entry is left pending). capacity() is the number of images the worker
 * would accept now (0: read nothing). Both are called on the reader thread. */
typedef fw_err (*fw_queue_run_fn)(void *user, fw_api_request *req, fw_queue_job *job,
                                  fw_error *err);
typedef size_t (*fw_queue_capacity_fn)(void *user);

typedef struct fw_queue_config {
    const char *url;            /* redis://HOST:PORT/STREAM (util/redis.h) */
    const char *group;          /* consumer group (NULL: "facework"); created at STREAM's
                                   start (id 0) with MKSTREAM when missing */
    const char *consumer;       /* this consumer's name, unique per worker (required) */
    const char *results_stream; /* NULL: "STREAM:results" */
    const char *dead_stream;    /* NULL: "STREAM:dead" */
    int prefetch;               /* jobs read and not yet answered, at most (0: 32) */
    double claim_idle_s;        /* reclaim entries pending longer than this (0: 60) */
    double claim_interval_s;    /* look for them this often (0: claim_idle_s / 4, <= 5) */
    int max_deliveries;         /* more deliveries than this: dead letter (0: 5) */
    double result_ttl_s;        /* life of result keys and reply lists (0: 86400) */
    double block_s;             /* longest XREADGROUP BLOCK (0: 0.5) */
    double backoff_max_s;       /* reconnect backoff ceiling (0: 5) */
    int io_timeout_ms;          /* connect and command timeout (0: 5000) */
    fw_api_limits limits;       /* for parsing job bodies (copied; files_root too) */
    fw_metrics *metrics;        /* metric families are registered there (NULL: none) */
    fw_queue_run_fn run;
    fw_queue_capacity_fn capacity;
    void *user;
} fw_queue_config;

/* Snapshot of the counters (for tests and logs). */
typedef struct fw_queue_stats {
    bool connected;      /* the reader's connection is up */
    size_t inflight;     /* jobs read and not yet answered */
    double lag, pending; /* the group's lag and pending entries at the last look (-1:
                            not known yet) */
    unsigned long long read, reclaimed, answered, duplicates, dead_lettered, reconnects;
} fw_queue_stats;

void fw_queue_config_init(fw_queue_config *cfg);

/* Parses the URL, registers the metrics and starts both threads (they connect in the
 * background: Redis need not be up yet). cfg and its strings are copied. On success *out is
 * owned by the caller (fw_queue_free). Errors: PARSE (bad URL), INVALID_ARGUMENT (missing
 * consumer, run or capacity), NOMEM, or a metrics registration error. */
fw_err fw_queue_new(const fw_queue_config *cfg, fw_queue **out, fw_error *err);

/* Hands the queue a job's outcome (exactly once per job run() accepted; any thread). res
 * is copied, res->body taken. */
void fw_queue_complete(fw_queue_job *job, fw_queue_result *res);

/* Stops reading and claiming entries (jobs already read still complete and are written).
 * Thread-safe; idempotent. */
void fw_queue_stop_reading(fw_queue *q);

/* Waits until every job read has been answered (its result written, or left pending for a
 * retry) or timeout_ms passed (negative: no limit): FW_OK or FW_ERR_TIMEOUT. */
fw_err fw_queue_drain(fw_queue *q, int timeout_ms);

void fw_queue_get_stats(fw_queue *q, fw_queue_stats *out);

/* Stops both threads (results not yet written are dropped: their entries stay pending and
 * are reclaimed by another consumer) and frees q. Jobs the worker still holds must have
 * been completed (fw_batcher_free completes them) before. NULL is a no-op. */
void fw_queue_free(fw_queue *q);

#endif
