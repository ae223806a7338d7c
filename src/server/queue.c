/* Queue mode: see queue.h. */
#include "server/queue.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"
#include "util/redis.h"

#define ENTRY_ID_MAX 48

/* Publishes one result exactly once per job id, then acknowledges the entry.
 * KEYS: result key, destination (results stream or reply list), job stream, dead stream.
 * ARGV: group, entry id, result JSON, ttl s, job id, "list"|"stream", envelope JSON,
 *       consumer, dead-letter reason ("" none), deliveries, status.
 * The result key holds the envelope {"id","entry","status","result"}. Returns 1 when this
 * call published, 0 when the job had a result already; then a reply list of another entry
 * with this job id (a resubmission) gets the stored envelope, while the same entry
 * answered twice (reclaimed from a stalled consumer) gets nothing more. */
static const char PUBLISH_LUA[] =
    "local fresh = redis.call('SET', KEYS[1], ARGV[7], 'NX', 'EX', ARGV[4])\n"
    "if fresh then\n"
    "  if ARGV[9] ~= '' then\n"
    "    redis.call('XADD', KEYS[4], '*', 'id', ARGV[5], 'entry', ARGV[2], 'reason', ARGV[9],\n"
    "               'deliveries', ARGV[10], 'consumer', ARGV[8])\n"
    "  end\n"
    "  if ARGV[6] == 'list' then\n"
    "    redis.call('RPUSH', KEYS[2], ARGV[7])\n"
    "    redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "  else\n"
    "    redis.call('XADD', KEYS[2], '*', 'id', ARGV[5], 'entry', ARGV[2], 'status', ARGV[11],\n"
    "               'consumer', ARGV[8], 'result', ARGV[3])\n"
    "  end\n"
    "elseif ARGV[6] == 'list' then\n"
    "  local v = redis.call('GET', KEYS[1])\n"
    "  if v and cjson.decode(v).entry ~= ARGV[2] then\n"
    "    redis.call('RPUSH', KEYS[2], v)\n"
    "    redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "  end\n"
    "end\n"
    "redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])\n"
    "if fresh then return 1 else return 0 end\n";

/* A job id answered before, submitted again with a reply list: that list gets the stored
 * answer (the same one), the entry is acknowledged. KEYS: result key, reply list, job
 * stream. ARGV: group, entry id, ttl s. */
static const char REPLAY_LUA[] = "local v = redis.call('GET', KEYS[1])\n"
                                 "if v and cjson.decode(v).entry ~= ARGV[2] then\n"
                                 "  redis.call('RPUSH', KEYS[2], v)\n"
                                 "  redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
                                 "end\n"
                                 "redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])\n"
                                 "return 0\n";

struct fw_queue_job {
    fw_queue *q;
    char entry[ENTRY_ID_MAX];
    char *job_id;   /* the entry's id field, or the entry id */
    char *reply_to; /* NULL: the results stream */
    long deliveries;
    double t0;
    fw_api_request *req; /* parsed, until run() takes it (deferred while busy) */
    /* outcome */
    bool done, retry;
    int status;
    char *body;
    size_t len;
    char *dead_reason; /* non-NULL: also a dead letter */
    const char *dead_kind;
    fw_queue_job *next;     /* done list / deferred list */
    fw_queue_job *inflight; /* in-flight list (all jobs of this process not yet answered) */
};

struct fw_queue {
    fw_queue_config cfg;
    fw_redis_url url;
    char *group, *consumer, *results, *dead, *files_root;
    char describe[600];

    pthread_t reader, writer;
    bool reader_started, writer_started;
    pthread_mutex_t mu;
    pthread_cond_t reader_cv; /* a job completed, a result was written, stop */
    pthread_cond_t writer_cv; /* a job is done, stop */
    pthread_cond_t drain_cv;  /* inflight went down */
    bool stop, stop_reading;
    fw_queue_job *done_head, **done_tail; /* outcomes waiting for the writer */
    fw_queue_job *deferred;               /* parsed, refused as busy: retried */
    fw_queue_job *inflight_head;          /* every job read and not yet answered */
    size_t inflight;
    char claim_cursor[ENTRY_ID_MAX];
    unsigned rng;

    atomic_bool connected;
    _Atomic double lag, pending;
    atomic_ullong n_read, n_reclaimed, n_answered, n_duplicates, n_dead, n_reconnects;

    fw_metric_family *m_jobs, *m_dead;
    fw_metric *m_ok, *m_dup, *m_retry, *m_dead_job, *m_reclaimed, *m_reconnects, *m_seconds;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void abs_deadline(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    double s = (double)ts->tv_sec + (double)ts->tv_nsec * 1e-9 + seconds;
    ts->tv_sec = (time_t)s;
    ts->tv_nsec = (long)((s - (double)ts->tv_sec) * 1e9);
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* Waits on cv (q->mu held) at most seconds. */
static void wait_for(fw_queue *q, pthread_cond_t *cv, double seconds)
{
    struct timespec ts;
    abs_deadline(&ts, seconds);
    pthread_cond_timedwait(cv, &q->mu, &ts);
}

/* Exponential backoff with full jitter: 50 ms * 2^attempt, capped. */
static double backoff_s(fw_queue *q, unsigned attempt)
{
    double ceil = 0.05 * (double)(1u << (attempt > 10 ? 10 : attempt));
    if (ceil > q->cfg.backoff_max_s)
        ceil = q->cfg.backoff_max_s;
    return ceil * (0.5 + 0.5 * (double)rand_r(&q->rng) / RAND_MAX);
}

static bool stopping(fw_queue *q)
{
    pthread_mutex_lock(&q->mu);
    bool s = q->stop;
    pthread_mutex_unlock(&q->mu);
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* jobs                                                                                     */

static void job_free(fw_queue_job *j)
{
    if (!j)
        return;
    fw_api_request_free(j->req);
    free(j->job_id);
    free(j->reply_to);
    free(j->body);
    free(j->dead_reason);
    free(j);
}

static fw_queue_job *job_new(fw_queue *q, const char *entry, size_t entry_len, const char *id,
                             size_t id_len, const char *reply_to, size_t reply_len, long deliveries)
{
    fw_queue_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->q = q;
    snprintf(j->entry, sizeof j->entry, "%.*s", (int)entry_len, entry);
    j->job_id = id ? strndup(id, id_len) : strndup(entry, entry_len);
    j->reply_to = reply_to ? strndup(reply_to, reply_len) : NULL;
    j->deliveries = deliveries;
    j->t0 = now_s();
    if (!j->job_id || (reply_to && !j->reply_to)) {
        job_free(j);
        return NULL;
    }
    return j;
}

/* q->mu held. */
static bool entry_in_flight(fw_queue *q, const char *entry)
{
    for (fw_queue_job *j = q->inflight_head; j; j = j->inflight)
        if (!strcmp(j->entry, entry))
            return true;
    return false;
}

/* q->mu held. */
static void inflight_remove(fw_queue *q, fw_queue_job *job)
{
    for (fw_queue_job **p = &q->inflight_head; *p; p = &(*p)->inflight)
        if (*p == job) {
            *p = job->inflight;
            q->inflight--;
            break;
        }
    pthread_cond_broadcast(&q->drain_cv);
    pthread_cond_broadcast(&q->reader_cv);
}

/* Queues a finished job for the writer. */
static void push_done(fw_queue *q, fw_queue_job *j)
{
    pthread_mutex_lock(&q->mu);
    j->done = true;
    j->next = NULL;
    *q->done_tail = j;
    q->done_tail = &j->next;
    pthread_cond_signal(&q->writer_cv);
    pthread_cond_broadcast(&q->reader_cv);
    pthread_mutex_unlock(&q->mu);
}

static char *error_body(int status, const char *code, const char *message, size_t *len)
{
    return fw_api_error_json(status, code, message, len);
}

/* A job answered by a dead letter (parse failure, too many deliveries). Takes body. */
static void dead_letter(fw_queue *q, fw_queue_job *j, int status, char *body, size_t len,
                        const char *kind, const char *reason)
{
    j->status = status;
    j->body = body;
    j->len = len;
    j->dead_kind = kind;
    j->dead_reason = strdup(reason);
    FW_WARN("queue", "dead letter", "job=%s entry=%s deliveries=%ld reason=\"%s\"", j->job_id,
            j->entry, j->deliveries, reason);
    push_done(q, j);
}

void fw_queue_complete(fw_queue_job *j, fw_queue_result *res)
{
    fw_queue *q = j->q;
    j->retry = res->retry || !res->body;
    j->status = res->status ? res->status : 200;
    j->body = res->body;
    j->len = res->len;
    res->body = NULL;
    if (!j->retry && res->n_items > 0 && res->n_failed == res->n_items) {
        char reason[FW_ERROR_MESSAGE_MAX + 64];
        snprintf(reason, sizeof reason, "every image failed: %s", res->first_error);
        j->dead_kind = "images";
        j->dead_reason = strdup(reason);
        FW_WARN("queue", "dead letter", "job=%s entry=%s reason=\"%s\"", j->job_id, j->entry,
                reason);
    }
    push_done(q, j);
}

/* ---------------------------------------------------------------------------------------- */
/* reader                                                                                   */

static fw_err setup_group(fw_queue *q, redisContext *c, fw_error *err)
{
    fw_err rc = fw_redis_cmd(c, NULL, err,
                             FW_RSTR("XGROUP", "CREATE", q->url.stream, q->group, "0", "MKSTREAM"));
    if (fw_redis_error_is(rc, err, "BUSYGROUP"))
        rc = FW_OK;
    return rc;
}

/* Starts one entry: parse, dead-letter or hand to the worker (deferred when busy). */
static fw_err start_entry(fw_queue *q, redisContext *c, const redisReply *e, long deliveries)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return FW_OK;
    const redisReply *idr = e->element[0], *fields = e->element[1];
    size_t id_len = 0, reply_len = 0, body_len = 0, route_len = 0;
    const char *id = fw_redis_field(fields, "id", &id_len);
    const char *reply = fw_redis_field(fields, "reply_to", &reply_len);
    const char *body = fw_redis_field(fields, "body", &body_len);
    const char *route_s = fw_redis_field(fields, "route", &route_len);
    pthread_mutex_lock(&q->mu);
    bool dup = entry_in_flight(q, idr->str);
    pthread_mutex_unlock(&q->mu);
    if (dup)
        return FW_OK; /* reclaimed from ourselves while still being processed */
    if (id && (id_len == 0 || id_len >= FW_API_ID_MAX * 4))
        id = NULL;
    fw_queue_job *j = job_new(q, idr->str, idr->len, id, id_len, reply, reply_len, deliveries);
    if (!j)
        return FW_ERR_NOMEM;
    pthread_mutex_lock(&q->mu);
    j->inflight = q->inflight_head;
    q->inflight_head = j;
    q->inflight++;
    pthread_mutex_unlock(&q->mu);
    atomic_fetch_add(&q->n_read, 1);

    /* idempotent by job id: a job answered before (resubmitted, or reclaimed after its
     * answer) is only acknowledged */
    char key[1200];
    snprintf(key, sizeof key, "%s:result:%s", q->url.stream, j->job_id);
    redisReply *ex = NULL;
    fw_error err;
    fw_err rc = fw_redis_cmd(c, &ex, &err, FW_RSTR("EXISTS", key));
    if (rc == FW_ERR_UNAVAILABLE) {
        pthread_mutex_lock(&q->mu);
        inflight_remove(q, j);
        pthread_mutex_unlock(&q->mu);
        job_free(j);
        return rc;
    }
    bool exists = !rc && ex && ex->type == REDIS_REPLY_INTEGER && ex->integer > 0;
    freeReplyObject(ex);
    if (exists) {
        j->status = 0; /* writer: ack only */
        push_done(q, j);
        return FW_OK;
    }

    char msg[FW_ERROR_MESSAGE_MAX + 64];
    size_t len = 0;
    if (deliveries > q->cfg.max_deliveries) {
        snprintf(msg, sizeof msg, "delivered %ld times, over the limit of %d", deliveries,
                 q->cfg.max_deliveries);
        dead_letter(q, j, 422, error_body(422, "dead_letter", msg, &len), len, "deliveries", msg);
        return FW_OK;
    }
    fw_api_route route = FW_ROUTE_V1_ANALYZE;
    if (route_s &&
        (!fw_api_route_from_path(route_s, route_len, &route) || route > FW_ROUTE_V1_EMBED)) {
        snprintf(msg, sizeof msg, "unknown route \"%.*s\"", (int)(route_len > 64 ? 64 : route_len),
                 route_s);
        dead_letter(q, j, 400, error_body(400, "parse_error", msg, &len), len, "parse", msg);
        return FW_OK;
    }
    if (!body) {
        snprintf(msg, sizeof msg, "the entry has no \"body\" field");
        dead_letter(q, j, 400, error_body(400, "parse_error", msg, &len), len, "parse", msg);
        return FW_OK;
    }
    fw_api_error aerr;
    if (fw_api_parse(route, "application/json", (const uint8_t *)body, body_len, &q->cfg.limits,
                     &j->req, &aerr) != FW_OK) {
        char *eb = fw_api_error_to_json(&aerr, &len);
        dead_letter(q, j, aerr.status, eb, len, "parse", aerr.message);
        return FW_OK;
    }
    /* run() takes req, and the job may be completed (and freed by the writer) before it
     * returns: j is not touched after a success */
    fw_api_request *req = j->req;
    j->req = NULL;
    if (q->cfg.run(q->cfg.user, req, j, &err) == FW_OK)
        return FW_OK;
    j->req = req;
    /* busy (or refused): retried after a completion */
    pthread_mutex_lock(&q->mu);
    j->next = q->deferred;
    q->deferred = j;
    pthread_mutex_unlock(&q->mu);
    return FW_OK;
}

/* Retries deferred jobs; returns how many still wait. */
static size_t run_deferred(fw_queue *q)
{
    pthread_mutex_lock(&q->mu);
    if (q->stop_reading) { /* fw_queue_drain drops them */
        pthread_mutex_unlock(&q->mu);
        return 0;
    }
    fw_queue_job *list = q->deferred;
    q->deferred = NULL;
    pthread_mutex_unlock(&q->mu);
    size_t left = 0;
    fw_queue_job *keep = NULL;
    while (list) {
        fw_queue_job *j = list;
        list = j->next;
        fw_error err;
        fw_api_request *req = j->req;
        j->req = NULL;
        if (!keep && q->cfg.run(q->cfg.user, req, j, &err) == FW_OK)
            continue; /* taken; j may be freed already */
        j->req = req;
        j->next = keep;
        keep = j;
        left++;
    }
    pthread_mutex_lock(&q->mu);
    while (keep) {
        fw_queue_job *j = keep;
        keep = j->next;
        j->next = q->deferred;
        q->deferred = j;
    }
    pthread_mutex_unlock(&q->mu);
    return left;
}

/* Jobs to read now: prefetch minus in flight, within the worker's capacity. */
static size_t admit(fw_queue *q)
{
    pthread_mutex_lock(&q->mu);
    size_t inflight = q->inflight;
    bool deferred = q->deferred != NULL, stop = q->stop_reading || q->stop;
    pthread_mutex_unlock(&q->mu);
    if (stop || deferred || inflight >= (size_t)q->cfg.prefetch)
        return 0;
    size_t n = (size_t)q->cfg.prefetch - inflight, cap = q->cfg.capacity(q->cfg.user);
    return n < cap ? n : cap;
}

/* Deliveries of one pending entry (XPENDING); 1 when unknown. */
static fw_err deliveries_of(fw_queue *q, redisContext *c, const char *entry, long *out)
{
    redisReply *r = NULL;
    fw_error err;
    *out = 1;
    fw_err rc =
        fw_redis_cmd(c, &r, &err, FW_RSTR("XPENDING", q->url.stream, q->group, entry, entry, "1"));
    if (!rc && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 4 &&
        r->element[0]->element[3]->type == REDIS_REPLY_INTEGER)
        *out = (long)r->element[0]->element[3]->integer;
    freeReplyObject(r);
    return rc == FW_ERR_UNAVAILABLE ? rc : FW_OK;
}

static fw_err reclaim(fw_queue *q, redisContext *c, size_t n)
{
    char idle[32], count[32];
    snprintf(idle, sizeof idle, "%lld", (long long)(q->cfg.claim_idle_s * 1000));
    snprintf(count, sizeof count, "%zu", n);
    redisReply *r = NULL;
    fw_error err;
    fw_err rc = fw_redis_cmd(c, &r, &err,
                             FW_RSTR("XAUTOCLAIM", q->url.stream, q->group, q->consumer, idle,
                                     q->claim_cursor, "COUNT", count));
    if (rc) {
        if (rc != FW_ERR_UNAVAILABLE)
            FW_WARN("queue", "XAUTOCLAIM failed", "error=\"%s\"", err.message);
        return rc;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_ARRAY) {
        snprintf(q->claim_cursor, sizeof q->claim_cursor, "%s", r->element[0]->str);
        const redisReply *entries = r->element[1];
        for (size_t i = 0; i < entries->elements && !rc; i++) {
            const redisReply *e = entries->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
                e->element[1]->type != REDIS_REPLY_ARRAY)
                continue; /* deleted entry (Redis 6.2 shape) */
            long deliveries;
            if ((rc = deliveries_of(q, c, e->element[0]->str, &deliveries)))
                break;
            pthread_mutex_lock(&q->mu);
            bool mine = entry_in_flight(q, e->element[0]->str);
            pthread_mutex_unlock(&q->mu);
            if (mine)
                continue;
            atomic_fetch_add(&q->n_reclaimed, 1);
            fw_counter_inc(q->m_reclaimed);
            FW_INFO("queue", "reclaimed", "entry=%s deliveries=%ld", e->element[0]->str,
                    deliveries);
            rc = start_entry(q, c, e, deliveries);
        }
    }
    freeReplyObject(r);
    return rc;
}

static fw_err read_new(fw_queue *q, redisContext *c, size_t n)
{
    char count[32], block[32];
    snprintf(count, sizeof count, "%zu", n);
    snprintf(block, sizeof block, "%lld", (long long)(q->cfg.block_s * 1000));
    redisReply *r = NULL;
    fw_error err;
    fw_err rc = fw_redis_cmd(c, &r, &err,
                             FW_RSTR("XREADGROUP", "GROUP", q->group, q->consumer, "COUNT", count,
                                     "BLOCK", block, "STREAMS", q->url.stream, ">"));
    if (rc) {
        if (fw_redis_error_is(rc, &err, "NOGROUP")) {
            FW_WARN("queue", "group missing: creating it again", "stream=%s group=%s",
                    q->url.stream, q->group);
            return setup_group(q, c, &err);
        }
        if (rc != FW_ERR_UNAVAILABLE)
            FW_WARN("queue", "XREADGROUP failed", "error=\"%s\"", err.message);
        return rc;
    }
    /* [[stream, [[id, fields]...]]] or nil on timeout */
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t s = 0; s < r->elements && !rc; s++) {
            const redisReply *sr = r->element[s];
            if (sr->type != REDIS_REPLY_ARRAY || sr->elements < 2 ||
                sr->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            for (size_t i = 0; i < sr->element[1]->elements && !rc; i++)
                rc = start_entry(q, c, sr->element[1]->element[i], 1);
        }
    freeReplyObject(r);
    return rc;
}

static double reply_number(const redisReply *v)
{
    if (v->type == REDIS_REPLY_INTEGER)
        return (double)v->integer;
    if (v->type == REDIS_REPLY_STRING)
        return atof(v->str);
    return -1;
}

/* XINFO GROUPS: this group's lag (Redis >= 7) and pending count. */
static fw_err refresh_info(fw_queue *q, redisContext *c)
{
    redisReply *r = NULL;
    fw_error err;
    fw_err rc = fw_redis_cmd(c, &r, &err, FW_RSTR("XINFO", "GROUPS", q->url.stream));
    if (rc)
        return rc == FW_ERR_UNAVAILABLE ? rc : FW_OK;
    for (size_t g = 0; r->type == REDIS_REPLY_ARRAY && g < r->elements; g++) {
        const redisReply *m = r->element[g];
        size_t nl = 0;
        const char *name = fw_redis_field(m, "name", &nl);
        if (!name || nl != strlen(q->group) || memcmp(name, q->group, nl))
            continue;
        for (size_t i = 0; i + 1 < m->elements; i += 2) {
            const redisReply *k = m->element[i];
            if (k->type != REDIS_REPLY_STRING)
                continue;
            if (!strcmp(k->str, "lag"))
                atomic_store(&q->lag, reply_number(m->element[i + 1]));
            else if (!strcmp(k->str, "pending"))
                atomic_store(&q->pending, reply_number(m->element[i + 1]));
        }
    }
    freeReplyObject(r);
    return FW_OK;
}

static void *reader_main(void *arg)
{
    fw_queue *q = arg;
    redisContext *c = NULL;
    unsigned fails = 0;
    double next_claim = 0, next_info = 0;
    while (!stopping(q)) {
        fw_error err;
        if (!c) {
            fw_err rc = fw_redis_connect(&q->url, q->cfg.io_timeout_ms, &c, &err);
            if (!rc && (rc = setup_group(q, c, &err))) {
                redisFree(c);
                c = NULL;
            }
            if (rc) {
                if (fails++ == 0)
                    FW_WARN("queue", "redis unavailable: retrying", "url=%s error=\"%s\"",
                            q->describe, err.message);
                double pause = backoff_s(q, fails);
                pthread_mutex_lock(&q->mu);
                if (!q->stop)
                    wait_for(q, &q->reader_cv, pause);
                pthread_mutex_unlock(&q->mu);
                continue;
            }
            FW_INFO("queue", "connected", "url=%s group=%s consumer=%s attempts=%u", q->describe,
                    q->group, q->consumer, fails + 1);
            fails = 0;
            atomic_store(&q->connected, true);
        }
        fw_err rc = FW_OK;
        double now = now_s();
        if (now >= next_info) {
            rc = refresh_info(q, c);
            next_info = now + 1;
        }
        size_t waiting = run_deferred(q);
        size_t n = waiting ? 0 : admit(q);
        if (!rc && n > 0 && now >= next_claim) {
            rc = reclaim(q, c, n);
            next_claim = now + q->cfg.claim_interval_s;
            n = admit(q);
        }
        if (!rc && n > 0) {
            rc = read_new(q, c, n);
        } else if (!rc) {
            /* nothing admitted: wait for a completion (or the next claim / info round) */
            pthread_mutex_lock(&q->mu);
            if (!q->stop)
                wait_for(q, &q->reader_cv, q->cfg.block_s);
            pthread_mutex_unlock(&q->mu);
        }
        if (rc == FW_ERR_UNAVAILABLE) {
            FW_WARN("queue", "redis connection lost: reconnecting", "url=%s", q->describe);
            atomic_store(&q->connected, false);
            atomic_fetch_add(&q->n_reconnects, 1);
            fw_counter_inc(q->m_reconnects);
            redisFree(c);
            c = NULL;
        } else if (rc) {
            pthread_mutex_lock(&q->mu);
            if (!q->stop)
                wait_for(q, &q->reader_cv, backoff_s(q, 3));
            pthread_mutex_unlock(&q->mu);
        }
    }
    atomic_store(&q->connected, false);
    if (c)
        redisFree(c);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* writer                                                                                   */

static fw_err ack_only(fw_queue *q, redisContext *c, fw_queue_job *j)
{
    fw_error err;
    char key[1200], ttl[32];
    snprintf(key, sizeof key, "%s:result:%s", q->url.stream, j->job_id);
    snprintf(ttl, sizeof ttl, "%lld", (long long)(q->cfg.result_ttl_s + 0.5));
    fw_err rc = j->reply_to ? fw_redis_cmd(c, NULL, &err,
                                           FW_RSTR("EVAL", REPLAY_LUA, "3", key, j->reply_to,
                                                   q->url.stream, q->group, j->entry, ttl))
                            : fw_redis_cmd(c, NULL, &err,
                                           FW_RSTR("XACK", q->url.stream, q->group, j->entry));
    if (rc && rc != FW_ERR_UNAVAILABLE)
        FW_WARN("queue", "XACK failed", "entry=%s error=\"%s\"", j->entry, err.message);
    return rc == FW_ERR_UNAVAILABLE ? rc : FW_OK;
}

/* {"id":..., "entry":..., "status":N, "result":<body>} for reply lists. */
static char *envelope(const fw_queue_job *j, size_t *len)
{
    json_t *id = json_string(j->job_id);
    char *ids = id ? json_dumps(id, JSON_ENCODE_ANY) : NULL;
    json_decref(id);
    if (!ids)
        return NULL;
    size_t cap = strlen(ids) + strlen(j->entry) + j->len + 64;
    char *out = malloc(cap);
    if (out)
        *len =
            (size_t)snprintf(out, cap, "{\"id\":%s,\"entry\":\"%s\",\"status\":%d,\"result\":%.*s}",
                             ids, j->entry, j->status, (int)j->len, j->body);
    free(ids);
    return out;
}

static fw_err publish(fw_queue *q, redisContext *c, fw_queue_job *j, bool *fresh)
{
    *fresh = false;
    char key[1200], ttl[32], deliveries[32], status[16];
    snprintf(key, sizeof key, "%s:result:%s", q->url.stream, j->job_id);
    snprintf(ttl, sizeof ttl, "%lld", (long long)(q->cfg.result_ttl_s + 0.5));
    snprintf(deliveries, sizeof deliveries, "%ld", j->deliveries);
    snprintf(status, sizeof status, "%d", j->status);
    size_t env_len = 0;
    char *env = envelope(j, &env_len);
    if (!env)
        return FW_ERR_NOMEM;
    const char *argv[] = {"EVAL",
                          PUBLISH_LUA,
                          "4",
                          key,
                          j->reply_to ? j->reply_to : q->results,
                          q->url.stream,
                          q->dead,
                          q->group,
                          j->entry,
                          j->body,
                          ttl,
                          j->job_id,
                          j->reply_to ? "list" : "stream",
                          env,
                          q->consumer,
                          j->dead_reason ? j->dead_reason : "",
                          deliveries,
                          status};
    size_t lens[sizeof argv / sizeof argv[0]];
    for (size_t i = 0; i < sizeof argv / sizeof argv[0]; i++)
        lens[i] = strlen(argv[i]);
    lens[9] = j->len;
    lens[13] = env_len;
    redisReply *r = NULL;
    fw_error err;
    fw_err rc = fw_redis_cmd_argv(c, &r, &err, (int)(sizeof argv / sizeof argv[0]), argv, lens);
    free(env);
    if (rc) {
        if (rc != FW_ERR_UNAVAILABLE)
            FW_ERROR("queue", "publishing a result failed", "job=%s entry=%s error=\"%s\"",
                     j->job_id, j->entry, err.message);
        return rc;
    }
    *fresh = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return FW_OK;
}

/* Writes one finished job. UNAVAILABLE: keep it and reconnect. */
static fw_err write_job(fw_queue *q, redisContext *c, fw_queue_job *j)
{
    if (j->retry) {
        fw_counter_inc(q->m_retry);
        FW_INFO("queue", "left for another consumer", "job=%s entry=%s", j->job_id, j->entry);
        return FW_OK;
    }
    if (j->status == 0) {
        fw_err rc = ack_only(q, c, j);
        if (!rc) {
            atomic_fetch_add(&q->n_duplicates, 1);
            fw_counter_inc(q->m_dup);
        }
        return rc;
    }
    bool fresh;
    fw_err rc = publish(q, c, j, &fresh);
    if (rc == FW_ERR_UNAVAILABLE)
        return rc;
    if (rc) /* a script error is not retried: the entry stays pending and is reclaimed */
        return FW_OK;
    fw_histogram_observe(q->m_seconds, now_s() - j->t0);
    if (!fresh) {
        atomic_fetch_add(&q->n_duplicates, 1);
        fw_counter_inc(q->m_dup);
        FW_INFO("queue", "duplicate result dropped", "job=%s entry=%s", j->job_id, j->entry);
        return FW_OK;
    }
    atomic_fetch_add(&q->n_answered, 1);
    if (j->dead_reason) {
        atomic_fetch_add(&q->n_dead, 1);
        fw_counter_inc(q->m_dead_job);
        fw_counter_inc(fw_metric_get(q->m_dead, FW_LABELS(j->dead_kind)));
    } else {
        fw_counter_inc(q->m_ok);
    }
    return FW_OK;
}

static void *writer_main(void *arg)
{
    fw_queue *q = arg;
    redisContext *c = NULL;
    unsigned fails = 0;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->done_head && !q->stop)
            pthread_cond_wait(&q->writer_cv, &q->mu);
        if (q->stop)
            break;
        fw_queue_job *j = q->done_head;
        pthread_mutex_unlock(&q->mu);
        fw_err rc = FW_ERR_UNAVAILABLE;
        fw_error err;
        if (c || !(rc = fw_redis_connect(&q->url, q->cfg.io_timeout_ms, &c, &err)))
            rc = write_job(q, c, j);
        else if (fails == 0)
            FW_WARN("queue", "redis unavailable for results: retrying", "url=%s error=\"%s\"",
                    q->describe, err.message);
        pthread_mutex_lock(&q->mu);
        if (rc == FW_ERR_UNAVAILABLE) {
            if (c) {
                redisFree(c);
                c = NULL;
            }
            if (!q->stop)
                wait_for(q, &q->writer_cv, backoff_s(q, ++fails));
            continue;
        }
        fails = 0;
        q->done_head = j->next;
        if (!q->done_head)
            q->done_tail = &q->done_head;
        inflight_remove(q, j);
        pthread_mutex_unlock(&q->mu);
        job_free(j);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    if (c)
        redisFree(c);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* lifecycle                                                                                */

void fw_queue_config_init(fw_queue_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->group = "facework";
    cfg->prefetch = 32;
    cfg->claim_idle_s = 60;
    cfg->max_deliveries = 5;
    cfg->result_ttl_s = 86400;
    cfg->block_s = 0.5;
    cfg->backoff_max_s = 5;
    cfg->io_timeout_ms = 5000;
    fw_api_limits_init(&cfg->limits);
}

static double read_lag(void *user)
{
    return atomic_load(&((fw_queue *)user)->lag);
}

static double read_pending(void *user)
{
    return atomic_load(&((fw_queue *)user)->pending);
}

static double read_inflight(void *user)
{
    fw_queue *q = user;
    pthread_mutex_lock(&q->mu);
    double n = (double)q->inflight;
    pthread_mutex_unlock(&q->mu);
    return n;
}

static double read_connected(void *user)
{
    return atomic_load(&((fw_queue *)user)->connected);
}

static fw_err register_metrics(fw_queue *q, fw_metrics *r, fw_error *err)
{
    static const double seconds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1,     2.5,  5,     10,   30,  60};
    fw_metric_family *reclaimed, *reconnects, *secs;
    fw_err rc;
    if ((rc = fw_metrics_callback(r, FW_METRIC_GAUGE, "facework_queue_lag",
                                  "entries of the job stream not yet delivered to the group",
                                  read_lag, q, NULL, err)) ||
        (rc = fw_metrics_callback(r, FW_METRIC_GAUGE, "facework_queue_pending",
                                  "entries delivered to the group and not yet acknowledged "
                                  "(all consumers)",
                                  read_pending, q, NULL, err)) ||
        (rc = fw_metrics_callback(r, FW_METRIC_GAUGE, "facework_queue_inflight",
                                  "jobs this worker read and has not answered yet", read_inflight,
                                  q, NULL, err)) ||
        (rc = fw_metrics_callback(r, FW_METRIC_GAUGE, "facework_queue_connected",
                                  "1 while the queue reader is connected to Redis", read_connected,
                                  q, NULL, err)) ||
        (rc = fw_metrics_counter(r, "facework_queue_jobs_total",
                                 "queue jobs answered by this consumer, by outcome",
                                 FW_LABELS("consumer", "outcome"), &q->m_jobs, err)) ||
        (rc = fw_metrics_counter(r, "facework_queue_dead_lettered_total",
                                 "jobs sent to the dead-letter stream, by reason",
                                 FW_LABELS("reason"), &q->m_dead, err)) ||
        (rc = fw_metrics_counter(r, "facework_queue_reclaimed_total",
                                 "idle entries of other consumers claimed (XAUTOCLAIM)", NULL,
                                 &reclaimed, err)) ||
        (rc = fw_metrics_counter(r, "facework_queue_reconnects_total",
                                 "connections to Redis lost and made again", NULL, &reconnects,
                                 err)) ||
        (rc = fw_metrics_histogram(r, "facework_queue_job_seconds",
                                   "time from reading a job to publishing its result", NULL,
                                   seconds, sizeof seconds / sizeof seconds[0], &secs, err)))
        return rc;
    q->m_ok = fw_metric_get(q->m_jobs, FW_LABELS(q->consumer, "ok"));
    q->m_dup = fw_metric_get(q->m_jobs, FW_LABELS(q->consumer, "duplicate"));
    q->m_retry = fw_metric_get(q->m_jobs, FW_LABELS(q->consumer, "retry"));
    q->m_dead_job = fw_metric_get(q->m_jobs, FW_LABELS(q->consumer, "dead_letter"));
    q->m_reclaimed = fw_metric_get(reclaimed, NULL);
    q->m_reconnects = fw_metric_get(reconnects, NULL);
    q->m_seconds = fw_metric_get(secs, NULL);
    return FW_OK;
}

static char *join2(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s", a, b);
    return s;
}

fw_err fw_queue_new(const fw_queue_config *cfg, fw_queue **out, fw_error *err)
{
    *out = NULL;
    if (!cfg || !cfg->consumer || !cfg->consumer[0] || !cfg->run || !cfg->capacity)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "queue: consumer, run and capacity are required");
    fw_queue *q = calloc(1, sizeof *q);
    if (!q)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    q->cfg = *cfg;
    fw_err rc = fw_redis_url_parse(cfg->url, &q->url, err);
    if (rc) {
        free(q);
        return rc;
    }
    fw_redis_url_describe(&q->url, q->describe, sizeof q->describe);
    q->group = strdup(cfg->group && cfg->group[0] ? cfg->group : "facework");
    q->consumer = strdup(cfg->consumer);
    q->results = cfg->results_stream && cfg->results_stream[0] ? strdup(cfg->results_stream)
                                                               : join2(q->url.stream, ":results");
    q->dead = cfg->dead_stream && cfg->dead_stream[0] ? strdup(cfg->dead_stream)
                                                      : join2(q->url.stream, ":dead");
    q->files_root = cfg->limits.files_root ? strdup(cfg->limits.files_root) : NULL;
    q->cfg.limits.files_root = q->files_root;
    q->cfg.url = q->cfg.group = q->cfg.consumer = q->cfg.results_stream = q->cfg.dead_stream = NULL;
    if (q->cfg.prefetch <= 0)
        q->cfg.prefetch = 32;
    if (q->cfg.claim_idle_s <= 0)
        q->cfg.claim_idle_s = 60;
    if (q->cfg.claim_interval_s <= 0) {
        q->cfg.claim_interval_s = q->cfg.claim_idle_s / 4;
        if (q->cfg.claim_interval_s > 5)
            q->cfg.claim_interval_s = 5;
    }
    if (q->cfg.max_deliveries <= 0)
        q->cfg.max_deliveries = 5;
    if (q->cfg.result_ttl_s <= 0)
        q->cfg.result_ttl_s = 86400;
    if (q->cfg.block_s <= 0)
        q->cfg.block_s = 0.5;
    if (q->cfg.backoff_max_s <= 0)
        q->cfg.backoff_max_s = 5;
    if (q->cfg.io_timeout_ms <= 0)
        q->cfg.io_timeout_ms = 5000;
    snprintf(q->claim_cursor, sizeof q->claim_cursor, "0-0");
    q->rng = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)q;
    atomic_init(&q->lag, -1);
    atomic_init(&q->pending, -1);
    q->done_tail = &q->done_head;
    pthread_mutex_init(&q->mu, NULL);
    cond_init_mono(&q->reader_cv);
    cond_init_mono(&q->writer_cv);
    cond_init_mono(&q->drain_cv);
    if (!q->group || !q->consumer || !q->results || !q->dead ||
        (cfg->limits.files_root && !q->files_root)) {
        fw_queue_free(q);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    if (cfg->metrics && (rc = register_metrics(q, cfg->metrics, err))) {
        fw_queue_free(q);
        return rc;
    }
    if (pthread_create(&q->writer, NULL, writer_main, q) == 0)
        q->writer_started = true;
    if (q->writer_started && pthread_create(&q->reader, NULL, reader_main, q) == 0)
        q->reader_started = true;
    if (!q->reader_started) {
        fw_queue_free(q);
        return fw_error_set(err, FW_ERR_NOMEM, "cannot start the queue threads");
    }
    FW_INFO("queue", "consuming",
            "url=%s group=%s consumer=%s results=%s dead=%s prefetch=%d "
            "claim_idle_s=%g max_deliveries=%d",
            q->describe, q->group, q->consumer, q->results, q->dead, q->cfg.prefetch,
            q->cfg.claim_idle_s, q->cfg.max_deliveries);
    *out = q;
    return FW_OK;
}

void fw_queue_stop_reading(fw_queue *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->stop_reading = true;
    pthread_cond_broadcast(&q->reader_cv);
    pthread_mutex_unlock(&q->mu);
}

fw_err fw_queue_drain(fw_queue *q, int timeout_ms)
{
    if (!q)
        return FW_OK;
    double deadline = now_s() + (double)timeout_ms / 1000.0;
    pthread_mutex_lock(&q->mu);
    q->stop_reading = true;
    for (;;) {
        /* deferred jobs never reached the worker: they stay pending for another consumer */
        while (q->deferred) {
            fw_queue_job *j = q->deferred;
            q->deferred = j->next;
            inflight_remove(q, j);
            job_free(j);
        }
        if (q->inflight == 0 || (timeout_ms >= 0 && now_s() >= deadline))
            break;
        wait_for(q, &q->drain_cv, 0.05);
    }
    bool ok = q->inflight == 0;
    pthread_mutex_unlock(&q->mu);
    return ok ? FW_OK : FW_ERR_TIMEOUT;
}

void fw_queue_get_stats(fw_queue *q, fw_queue_stats *out)
{
    memset(out, 0, sizeof *out);
    out->connected = atomic_load(&q->connected);
    out->inflight = (size_t)read_inflight(q);
    out->lag = atomic_load(&q->lag);
    out->pending = atomic_load(&q->pending);
    out->read = atomic_load(&q->n_read);
    out->reclaimed = atomic_load(&q->n_reclaimed);
    out->answered = atomic_load(&q->n_answered);
    out->duplicates = atomic_load(&q->n_duplicates);
    out->dead_lettered = atomic_load(&q->n_dead);
    out->reconnects = atomic_load(&q->n_reconnects);
}

void fw_queue_free(fw_queue *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->reader_cv);
    pthread_cond_broadcast(&q->writer_cv);
    pthread_mutex_unlock(&q->mu);
    if (q->reader_started)
        pthread_join(q->reader, NULL);
    if (q->writer_started)
        pthread_join(q->writer, NULL);
    /* every job is on the done list, deferred, or (a bug) still held by the worker */
    while (q->done_head) {
        fw_queue_job *j = q->done_head;
        q->done_head = j->next;
        job_free(j);
    }
    while (q->deferred) {
        fw_queue_job *j = q->deferred;
        q->deferred = j->next;
        job_free(j);
    }
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->reader_cv);
    pthread_cond_destroy(&q->writer_cv);
    pthread_cond_destroy(&q->drain_cv);
    free(q->group);
    free(q->consumer);
    free(q->results);
    free(q->dead);
    free(q->files_root);
    free(q);
}
