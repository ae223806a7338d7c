#include "client/queue.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/redis.h"

struct fw_qclient {
    fw_redis_url url;
    redisContext *c;
    char reply_key[512];
    unsigned rng;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void pause_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Connects when not connected, retrying with backoff until deadline. */
static fw_err ensure(fw_qclient *q, double deadline, fw_error *err)
{
    for (unsigned attempt = 0; !q->c; attempt++) {
        fw_err rc = fw_redis_connect(&q->url, 2000, &q->c, err);
        if (rc == FW_OK)
            break;
        if (rc != FW_ERR_UNAVAILABLE || now_s() >= deadline)
            return rc;
        double ceil = 0.05 * (double)(1u << (attempt > 6 ? 6 : attempt));
        double left = deadline - now_s();
        double p = ceil * (0.5 + 0.5 * (double)rand_r(&q->rng) / RAND_MAX);
        pause_s(p < left ? p : (left > 0 ? left : 0));
    }
    return FW_OK;
}

static void drop(fw_qclient *q)
{
    if (q->c)
        redisFree(q->c);
    q->c = NULL;
}

fw_err fw_qclient_new(const char *url, double connect_timeout_s, fw_qclient **out, fw_error *err)
{
    *out = NULL;
    fw_qclient *q = calloc(1, sizeof *q);
    if (!q)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    fw_err rc = fw_redis_url_parse(url, &q->url, err);
    if (rc) {
        free(q);
        return rc;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    q->rng = (unsigned)ts.tv_nsec ^ (unsigned)getpid() ^ (unsigned)(uintptr_t)q;
    char host[128] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(q->reply_key, sizeof q->reply_key, "%s:reply:%s:%ld:%08x", q->url.stream, host,
             (long)getpid(), (unsigned)rand_r(&q->rng));
    if ((rc = ensure(q, now_s() + connect_timeout_s, err))) {
        free(q);
        return rc;
    }
    *out = q;
    return FW_OK;
}

const char *fw_qclient_reply_key(const fw_qclient *c)
{
    return c->reply_key;
}

fw_err fw_qclient_submit(fw_qclient *q, const char *job_id, const char *body, size_t len,
                         const char *route, double timeout_s, fw_error *err)
{
    double deadline = now_s() + timeout_s;
    const char *argv[] = {"XADD",       q->url.stream, "*",  "id",    job_id, "reply_to",
                          q->reply_key, "body",        body, "route", route};
    size_t lens[] = {
        4, strlen(q->url.stream),    1, 2, strlen(job_id), 8, strlen(q->reply_key), 4, len,
        5, route ? strlen(route) : 0};
    int argc = route ? 11 : 9;
    for (;;) {
        fw_err rc = ensure(q, deadline, err);
        if (rc)
            return rc;
        rc = fw_redis_cmd_argv(q->c, NULL, err, argc, argv, lens);
        if (rc != FW_ERR_UNAVAILABLE)
            return rc;
        drop(q);
        if (now_s() >= deadline)
            return rc;
    }
}

void fw_qclient_reply_clear(fw_qclient_reply *r)
{
    free(r->id);
    free(r->json);
    memset(r, 0, sizeof *r);
}

static fw_err parse_envelope(const char *s, size_t n, fw_qclient_reply *out, fw_error *err)
{
    json_error_t je;
    json_t *j = json_loadb(s, n, 0, &je);
    const char *id = j ? json_string_value(json_object_get(j, "id")) : NULL;
    json_t *st = j ? json_object_get(j, "status") : NULL;
    if (!id || !json_is_integer(st)) {
        json_decref(j);
        return fw_error_set(err, FW_ERR_PARSE, "an answer that is not a result envelope");
    }
    out->id = strdup(id);
    out->status = (int)json_integer_value(st);
    out->json = malloc(n + 1);
    json_decref(j);
    if (!out->id || !out->json) {
        fw_qclient_reply_clear(out);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    memcpy(out->json, s, n);
    out->json[n] = '\0';
    out->len = n;
    return FW_OK;
}

fw_err fw_qclient_next(fw_qclient *q, double timeout_s, fw_qclient_reply *out, fw_error *err)
{
    memset(out, 0, sizeof *out);
    double deadline = now_s() + timeout_s;
    for (;;) {
        fw_err rc = ensure(q, deadline, err);
        if (rc)
            return rc;
        double left = deadline - now_s();
        /* BLPOP's timeout is in seconds (fractions since Redis 6); at most 1 s per call so
         * that a dropped connection is noticed */
        char tmo[32];
        snprintf(tmo, sizeof tmo, "%.3f", left > 1 ? 1.0 : (left > 0.01 ? left : 0.01));
        redisReply *r = NULL;
        rc = fw_redis_cmd(q->c, &r, err, FW_RSTR("BLPOP", q->reply_key, tmo));
        if (rc == FW_ERR_UNAVAILABLE) {
            drop(q);
            if (now_s() >= deadline)
                return rc;
            continue;
        }
        if (rc)
            return rc;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[1]->type == REDIS_REPLY_STRING) {
            rc = parse_envelope(r->element[1]->str, r->element[1]->len, out, err);
            freeReplyObject(r);
            return rc;
        }
        freeReplyObject(r);
        if (now_s() >= deadline)
            return fw_error_set(err, FW_ERR_TIMEOUT, "no answer within %.1f s", timeout_s);
    }
}

void fw_qclient_free(fw_qclient *q)
{
    if (!q)
        return;
    if (q->c)
        fw_redis_cmd(q->c, NULL, NULL, FW_RSTR("DEL", q->reply_key));
    drop(q);
    free(q);
}
