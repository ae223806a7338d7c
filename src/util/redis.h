/* Redis connections for the queue transport (DESIGN.md "queue engine for many workers"):
 * redis:// URLs and a small synchronous command layer over hiredis, shared by the worker's
 * queue consumer (server/queue.c), the client's queue transport and `facework submit`.
 *
 * URL: redis://[[USER]:PASSWORD@]HOST[:PORT]/STREAM[?db=N]  (PORT defaults to 6379; HOST
 * may be a bracketed IPv6 literal). STREAM is the job stream's key (required: facework has
 * no default stream). Passwords never appear in logs: use fw_redis_url_describe.
 *
 *   fw_redis_url u; fw_redis_url_parse("redis://10.0.0.5/faces", &u, &err);
 *   redisContext *c; fw_redis_connect(&u, 2000, &c, &err);
 *   redisReply *r; fw_redis_cmd(c, &r, &err, FW_RSTR("XLEN", u.stream));
 *   ... freeReplyObject(r); redisFree(c);
 *
 * Errors of fw_redis_cmd: FW_ERR_UNAVAILABLE when the connection failed (the context is then
 * unusable: free it and reconnect), FW_ERR_IO for an error reply from the server (the
 * connection stays usable; the message holds the server's text), FW_ERR_NOMEM. */
#ifndef FW_UTIL_REDIS_H
#define FW_UTIL_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "facework/error.h"

#define FW_REDIS_DEFAULT_PORT 6379

typedef struct fw_redis_url {
    char host[256];
    int port;
    char user[128];     /* "" unless given (Redis 6 ACL user) */
    char password[256]; /* "" unless given */
    int db;             /* SELECT this database when > 0 */
    char stream[256];   /* the job stream key */
} fw_redis_url;

/* Parses url into *out. Errors: PARSE with a message naming what is wrong (the password is
 * never echoed). */
fw_err fw_redis_url_parse(const char *url, fw_redis_url *out, fw_error *err);

/* "redis://HOST:PORT/STREAM" without credentials, for logs. Returns buf. */
const char *fw_redis_url_describe(const fw_redis_url *u, char *buf, size_t cap);

/* Connects, with timeout_ms for the connection and for every later command (0: 2000), then
 * AUTH and SELECT when the URL asks. On success *out is owned by the caller (redisFree).
 * Errors: UNAVAILABLE (cannot connect, or AUTH/SELECT refused), NOMEM. */
fw_err fw_redis_connect(const fw_redis_url *u, int timeout_ms, redisContext **out, fw_error *err);

/* Runs one command given as argc strings with their lengths (lens NULL: each is a C
 * string). On success *out (may be NULL: the reply is dropped) is the reply, owned by the
 * caller (freeReplyObject); error replies are returned as FW_ERR_IO, with *out NULL. */
fw_err fw_redis_cmd_argv(redisContext *c, redisReply **out, fw_error *err, int argc,
                         const char **argv, const size_t *lens);

/* The same with C-string arguments: fw_redis_cmd(c, &r, &err, FW_RSTR("XACK", s, g, id)). */
#define FW_RSTR(...)                                                                               \
    (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),                           \
        ((const char *[]){__VA_ARGS__})
#define fw_redis_cmd(c, out, err, argv_spec) fw_redis_cmd_argv(c, out, err, argv_spec, NULL)

/* True when err holds a server error reply starting with prefix ("BUSYGROUP", "NOGROUP"). */
bool fw_redis_error_is(fw_err rc, const fw_error *err, const char *prefix);

/* Field `name` of a flat [field, value, field, value...] array (a stream entry's fields),
 * or NULL; *len receives the value's length. */
const char *fw_redis_field(const redisReply *fields, const char *name, size_t *len);

#endif
