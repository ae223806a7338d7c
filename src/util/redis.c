#include "util/redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fw_err url_fail(fw_error *err, const char *what)
{
    return fw_error_set(err, FW_ERR_PARSE,
                        "bad Redis URL: %s (expected "
                        "redis://[[USER]:PASSWORD@]HOST[:PORT]/STREAM)",
                        what);
}

static bool copy_part(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return true;
}

fw_err fw_redis_url_parse(const char *url, fw_redis_url *out, fw_error *err)
{
    memset(out, 0, sizeof *out);
    out->port = FW_REDIS_DEFAULT_PORT;
    if (!url || strncmp(url, "redis://", 8) != 0)
        return url_fail(err, "it must start with redis://");
    const char *p = url + 8;
    const char *slash = strchr(p, '/');
    if (!slash)
        return url_fail(err, "no /STREAM after the host");
    const char *at = memchr(p, '@', (size_t)(slash - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (!copy_part(out->user, sizeof out->user, p, (size_t)(colon - p)) ||
                !copy_part(out->password, sizeof out->password, colon + 1,
                           (size_t)(at - colon - 1)))
                return url_fail(err, "credentials too long");
        } else if (!copy_part(out->password, sizeof out->password, p, (size_t)(at - p))) {
            return url_fail(err, "credentials too long");
        }
        p = at + 1;
    }
    const char *host_end;
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(slash - p));
        if (!close)
            return url_fail(err, "unclosed [ in the host");
        if (!copy_part(out->host, sizeof out->host, p + 1, (size_t)(close - p - 1)))
            return url_fail(err, "host too long");
        host_end = close + 1;
    } else {
        host_end = memchr(p, ':', (size_t)(slash - p));
        if (!host_end)
            host_end = slash;
        if (!copy_part(out->host, sizeof out->host, p, (size_t)(host_end - p)))
            return url_fail(err, "host too long");
    }
    if (!out->host[0])
        return url_fail(err, "empty host");
    if (*host_end == ':') {
        char *end;
        long port = strtol(host_end + 1, &end, 10);
        if (end != slash || end == host_end + 1 || port < 1 || port > 65535)
            return url_fail(err, "the port must be a number in 1..65535");
        out->port = (int)port;
    } else if (host_end != slash) {
        return url_fail(err, "unexpected text after the host");
    }
    const char *stream = slash + 1, *q = strchr(stream, '?');
    size_t sn = q ? (size_t)(q - stream) : strlen(stream);
    if (sn == 0)
        return url_fail(err, "empty STREAM");
    if (!copy_part(out->stream, sizeof out->stream, stream, sn))
        return url_fail(err, "STREAM too long");
    if (q) {
        char *end;
        if (strncmp(q + 1, "db=", 3) != 0)
            return url_fail(err, "the only query parameter is db=N");
        long db = strtol(q + 4, &end, 10);
        if (*end || end == q + 4 || db < 0 || db > 1000000)
            return url_fail(err, "db must be a number >= 0");
        out->db = (int)db;
    }
    return FW_OK;
}

const char *fw_redis_url_describe(const fw_redis_url *u, char *buf, size_t cap)
{
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(buf, cap, "redis://%s%s%s:%d/%s", v6 ? "[" : "", u->host, v6 ? "]" : "", u->port,
             u->stream);
    return buf;
}

fw_err fw_redis_cmd_argv(redisContext *c, redisReply **out, fw_error *err, int argc,
                         const char **argv, const size_t *lens)
{
    size_t local[16];
    const size_t *l = lens;
    if (out)
        *out = NULL;
    if (!lens) {
        if (argc > 16)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "too many arguments");
        for (int i = 0; i < argc; i++)
            local[i] = strlen(argv[i]);
        l = local;
    }
    redisReply *r = redisCommandArgv(c, argc, argv, l);
    if (!r) {
        if (c->err == REDIS_ERR_OOM)
            return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
        return fw_error_set(err, FW_ERR_UNAVAILABLE, "redis %s: %s", argv[0],
                            c->errstr[0] ? c->errstr : "connection lost");
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fw_error_set(err, FW_ERR_IO, "redis %s: %.*s", argv[0], (int)(r->len > 300 ? 300 : r->len),
                     r->str);
        freeReplyObject(r);
        return FW_ERR_IO;
    }
    if (out)
        *out = r;
    else
        freeReplyObject(r);
    return FW_OK;
}

fw_err fw_redis_connect(const fw_redis_url *u, int timeout_ms, redisContext **out, fw_error *err)
{
    *out = NULL;
    if (timeout_ms <= 0)
        timeout_ms = 2000;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(u->host, u->port, tv);
    if (!c)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    if (c->err) {
        fw_error_set(err, FW_ERR_UNAVAILABLE, "cannot connect to redis %s:%d: %s", u->host, u->port,
                     c->errstr);
        redisFree(c);
        return FW_ERR_UNAVAILABLE;
    }
    redisSetTimeout(c, tv);
    redisEnableKeepAlive(c);
    fw_err rc = FW_OK;
    if (u->password[0])
        rc = u->user[0] ? fw_redis_cmd(c, NULL, err, FW_RSTR("AUTH", u->user, u->password))
                        : fw_redis_cmd(c, NULL, err, FW_RSTR("AUTH", u->password));
    if (!rc && u->db > 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", u->db);
        rc = fw_redis_cmd(c, NULL, err, FW_RSTR("SELECT", db));
    }
    if (rc) {
        if (rc == FW_ERR_IO)
            rc = fw_error_set(err, FW_ERR_UNAVAILABLE, "redis %s:%d refused the connection: %s",
                              u->host, u->port, err ? err->message : "");
        redisFree(c);
        return rc;
    }
    *out = c;
    return FW_OK;
}

bool fw_redis_error_is(fw_err rc, const fw_error *err, const char *prefix)
{
    const char *m = err ? strstr(err->message, ": ") : NULL;
    return rc == FW_ERR_IO && m && !strncmp(m + 2, prefix, strlen(prefix));
}

const char *fw_redis_field(const redisReply *fields, const char *name, size_t *len)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    size_t n = strlen(name);
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && k->len == n && !memcmp(k->str, name, n) &&
            v->type == REDIS_REPLY_STRING) {
            if (len)
                *len = v->len;
            return v->str;
        }
    }
    return NULL;
}
