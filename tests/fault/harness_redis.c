#include "harness_redis.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "util/base64.h"

#define FTHR_MAX 4
static fthr_redis *g_redis[FTHR_MAX];

static void kill_all(void)
{
    for (int i = 0; i < FTHR_MAX; i++)
        if (g_redis[i] && g_redis[i]->pid > 0) {
            kill(g_redis[i]->pid, SIGKILL);
            waitpid(g_redis[i]->pid, NULL, 0);
            g_redis[i]->pid = 0;
        }
}

static void spawn(fthr_redis *r)
{
    char port[16], log[200];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(log, sizeof log, "%s/redis.log", r->dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir",
               r->dir, "--save", "", "--appendonly", r->aof ? "yes" : "no", "--appendfsync",
               "always", "--logfile", log, "--daemonize", "no", "--protected-mode", "no",
               (char *)NULL);
        fprintf(stderr, "cannot run redis-server: %s (scripts/setup.sh installs it)\n",
                strerror(errno));
        _exit(127);
    }
    r->pid = pid;
    double deadline = fth_now() + 20;
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            r->pid = 0;
            fail_msg("redis-server exited at start (status %d); see %s", st, log);
        }
        struct timeval tv = {1, 0};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
        if (c && !c->err) {
            redisReply *rep = redisCommand(c, "PING");
            bool ok = rep && rep->type == REDIS_REPLY_STATUS;
            freeReplyObject(rep);
            if (ok) {
                redisSetTimeout(c, (struct timeval){10, 0});
                if (r->c)
                    redisFree(r->c);
                r->c = c;
                return;
            }
        }
        if (c)
            redisFree(c);
        if (fth_now() > deadline)
            fail_msg("redis-server on port %d not answering after 20 s", r->port);
        fth_pause_ms(20);
    }
}

fthr_redis *fthr_start(bool aof)
{
    static bool registered;
    if (!registered) {
        atexit(kill_all);
        registered = true;
    }
    fthr_redis *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->aof = aof;
    r->port = fth_free_port();
    snprintf(r->dir, sizeof r->dir, "/tmp/fthr-redis-XXXXXX");
    assert_non_null(mkdtemp(r->dir));
    snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d/jobs", r->port);
    for (int i = 0; i < FTHR_MAX; i++)
        if (!g_redis[i]) {
            g_redis[i] = r;
            break;
        }
    spawn(r);
    return r;
}

void fthr_stop(fthr_redis *r, bool kill9)
{
    if (r->pid <= 0)
        return;
    if (r->c) {
        redisFree(r->c);
        r->c = NULL;
    }
    kill(r->pid, kill9 ? SIGKILL : SIGTERM); /* SIGTERM: Redis fsyncs the AOF and exits */
    int st;
    while (waitpid(r->pid, &st, 0) < 0 && errno == EINTR)
        ;
    r->pid = 0;
}

void fthr_restart(fthr_redis *r)
{
    assert_int_equal(r->pid, 0);
    spawn(r);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

void fthr_free(fthr_redis *r)
{
    if (!r)
        return;
    fthr_stop(r, true);
    for (int i = 0; i < FTHR_MAX; i++)
        if (g_redis[i] == r)
            g_redis[i] = NULL;
    nftw(r->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
    free(r);
}

static redisReply *vcmd(fthr_redis *r, const char *fmt, va_list ap)
{
    if (!r->c) {
        r->c = redisConnectWithTimeout("127.0.0.1", r->port, (struct timeval){5, 0});
        assert_non_null(r->c);
        if (r->c->err)
            fail_msg("cannot connect to the test's redis: %s", r->c->errstr);
        redisSetTimeout(r->c, (struct timeval){10, 0});
    }
    redisReply *rep = redisvCommand(r->c, fmt, ap);
    if (!rep)
        fail_msg("redis command %s: %s", fmt, r->c->errstr);
    if (rep->type == REDIS_REPLY_ERROR)
        fail_msg("redis command %s: %s", fmt, rep->str);
    return rep;
}

redisReply *fthr_cmd(fthr_redis *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = vcmd(r, fmt, ap);
    va_end(ap);
    return rep;
}

long long fthr_int(fthr_redis *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = vcmd(r, fmt, ap);
    va_end(ap);
    if (rep->type != REDIS_REPLY_INTEGER)
        fail_msg("redis command %s: not an integer reply (type %d)", fmt, rep->type);
    long long v = rep->integer;
    freeReplyObject(rep);
    return v;
}

void fthr_push_body(fthr_redis *r, const char *job_id, const char *body)
{
    freeReplyObject(fthr_cmd(r, "XADD jobs * id %s body %s", job_id, body));
}

void fthr_push_bytes(fthr_redis *r, const char *job_id, const void *bytes, size_t len,
                     const char *reply_to)
{
    size_t el = fw_base64_encoded_len(len);
    char *body = malloc(el + 64);
    assert_non_null(body);
    int h = sprintf(body, "{\"images\":[{\"id\":\"0\",\"data\":\"");
    fw_base64_encode(bytes, len, body + h);
    strcat(body + h + el, "\"}]}");
    if (reply_to)
        freeReplyObject(
            fthr_cmd(r, "XADD jobs * id %s reply_to %s body %s", job_id, reply_to, body));
    else
        fthr_push_body(r, job_id, body);
    free(body);
}

void fthr_push_photo(fthr_redis *r, const char *job_id, int photo, const char *reply_to)
{
    char path[1024];
    const char *dir = getenv("FW_PHOTOS_DIR");
    snprintf(path, sizeof path, "%s/sample%d.jpg", dir ? dir : ".", photo);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    static char buf[8 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    fthr_push_bytes(r, job_id, buf, n, reply_to);
}

json_t *fthr_stream(fthr_redis *r, const char *key)
{
    redisReply *rep = fthr_cmd(r, "XRANGE %s - +", key);
    json_t *arr = json_array();
    for (size_t i = 0; i < rep->elements; i++) {
        redisReply *e = rep->element[i];
        json_t *o = json_object();
        json_object_set_new(o, "_id", json_string(e->element[0]->str));
        redisReply *f = e->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2)
            json_object_set_new(o, f->element[k]->str,
                                json_stringn(f->element[k + 1]->str, f->element[k + 1]->len));
        json_array_append_new(arr, o);
    }
    freeReplyObject(rep);
    return arr;
}

void fthr_wait_len(fthr_redis *r, const char *key, long long n, double timeout_s)
{
    double deadline = fth_now() + timeout_s;
    long long have;
    while ((have = fthr_int(r, "XLEN %s", key)) < n) {
        if (fth_now() > deadline)
            fail_msg("%s has %lld entries after %.0f s, expected %lld (pending: %lld)", key, have,
                     timeout_s, n, fthr_pending(r, NULL));
        fth_pause_ms(50);
    }
}

long long fthr_pending(fthr_redis *r, const char *consumer)
{
    redisReply *rep = consumer ? fthr_cmd(r, "XPENDING jobs facework - + 1000 %s", consumer)
                               : fthr_cmd(r, "XPENDING jobs facework");
    long long n = 0;
    if (consumer)
        n = (long long)rep->elements;
    else if (rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
             rep->element[0]->type == REDIS_REPLY_INTEGER)
        n = rep->element[0]->integer;
    freeReplyObject(rep);
    return n;
}

json_t *fthr_pending_ids(fthr_redis *r, const char *consumer)
{
    redisReply *rep = fthr_cmd(r, "XPENDING jobs facework - + 1000 %s", consumer);
    json_t *arr = json_array();
    for (size_t i = 0; i < rep->elements; i++)
        json_array_append_new(arr, json_string(rep->element[i]->element[0]->str));
    freeReplyObject(rep);
    return arr;
}
