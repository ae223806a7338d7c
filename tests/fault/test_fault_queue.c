/* Queue mode under faults (issue 14): real `facework worker --queue` processes on one Redis
 * stream, a real redis-server, and the checks that every job got exactly one result.
 *
 *   three_workers_kill_and_stop  3 workers; one SIGKILLed while it holds entries, one
 *                                SIGSTOPped while it holds entries: every job has exactly
 *                                one result; the killed and the stopped worker's entries
 *                                were answered by the others (XAUTOCLAIM); once the stopped
 *                                one resumes, its late answers are dropped as duplicates.
 *   redis_restart                Redis (AOF, appendfsync always) SIGKILLed and restarted
 *                                mid-run: workers reconnect with backoff, nothing is lost or
 *                                duplicated, jobs added after the restart flow too.
 *   poison_jobs                  an undecodable image, a huge image, a body that is not
 *                                JSON and an entry delivered too often end in the
 *                                dead-letter stream with their reasons while the good jobs
 *                                get their faces; a job id submitted again gets the stored
 *                                answer; `facework submit` over a directory.
 *
 * Short clocks are injected by flags (--queue-claim-idle, --queue-max-deliveries); every
 * wait polls for its state with a deadline. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "harness_redis.h"

static const int FACES[7] = {0, 3, 3, 3, 4, 5, 4};

static fth_proc *start_worker(const fthr_redis *r, const char *name, const char *const *extra)
{
    const char *args[32];
    size_t n = 0;
    args[n++] = "--queue";
    args[n++] = r->url;
    args[n++] = "--queue-consumer";
    args[n++] = name;
    args[n++] = "--log-level";
    args[n++] = "info";
    for (size_t i = 0; extra && extra[i] && n < 30; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    fth_opts o = {.args = args};
    return fth_start("worker", &o);
}

/* A worker's metric value (first sample whose line starts with `prefix`), or -1. */
static double metric(const fth_proc *p, const char *prefix)
{
    char url[160];
    snprintf(url, sizeof url, "%s/metrics", p->url);
    fth_resp r;
    fth_get(url, 10000, &r);
    double v = -1;
    for (char *line = r.body; line && *line;) {
        char *nl = strchr(line, '\n');
        if (!strncmp(line, prefix, strlen(prefix)))
            v = atof(line + strlen(prefix));
        if (!nl)
            break;
        line = nl + 1;
    }
    fth_resp_free(&r);
    return v;
}

static void wait_metric_at_least(const fth_proc *p, const char *prefix, double min, double t)
{
    double deadline = fth_now() + t;
    while (metric(p, prefix) < min) {
        if (fth_now() > deadline)
            fail_msg("%s of %s stayed below %g for %.0f s", prefix, p->url, min, t);
        fth_pause_ms(50);
    }
}

/* Job "jNN-pP" (P = photo). Checks the results stream: exactly one result per job of
 * jobs[0..n), each with the photo's face count, among `total` results; returns the stream
 * (caller decrefs). */
static json_t *check_results(fthr_redis *r, char ids[][32], size_t n, size_t total)
{
    json_t *res = fthr_stream(r, "jobs:results");
    assert_int_equal(json_array_size(res), total);
    for (size_t i = 0; i < n; i++) {
        size_t seen = 0;
        size_t k;
        json_t *e;
        json_array_foreach(res, k, e)
        {
            if (strcmp(json_string_value(json_object_get(e, "id")), ids[i]))
                continue;
            seen++;
            assert_string_equal(json_string_value(json_object_get(e, "status")), "200");
            json_t *body = json_loads(json_string_value(json_object_get(e, "result")), 0, NULL);
            assert_non_null(body);
            json_t *item = json_array_get(json_object_get(body, "results"), 0);
            int photo = atoi(strstr(ids[i], "-p") + 2);
            if (!json_object_get(item, "faces"))
                fail_msg("job %s: no faces in %s", ids[i],
                         json_string_value(json_object_get(e, "result")));
            assert_int_equal(json_array_size(json_object_get(item, "faces")), FACES[photo]);
            json_decref(body);
        }
        if (seen != 1)
            fail_msg("job %s has %zu results, expected exactly 1", ids[i], seen);
    }
    return res;
}

/* The consumer that answered the entry, or NULL. */
static const char *answered_by(json_t *results, const char *entry)
{
    size_t k;
    json_t *e;
    json_array_foreach(results, k, e)
    {
        if (!strcmp(json_string_value(json_object_get(e, "entry")), entry))
            return json_string_value(json_object_get(e, "consumer"));
    }
    return NULL;
}

static void wait_pending(fthr_redis *r, const char *consumer, long long min, double t)
{
    double deadline = fth_now() + t;
    while (fthr_pending(r, consumer) < min) {
        if (fth_now() > deadline)
            fail_msg("consumer %s never held %lld pending entries", consumer, min);
        fth_pause_ms(5);
    }
}

static void three_workers_kill_and_stop(void **state)
{
    (void)state;
    enum { N = 18 };
    fthr_redis *r = fthr_start(false);
    const char *const opts[] = {
        "--queue-claim-idle", "4s", "--queue-prefetch", "3", "--max-batch", "2", NULL};
    fth_proc *w1 = start_worker(r, "w1", opts);
    fth_proc *w2 = start_worker(r, "w2", opts);
    fth_proc *w3 = start_worker(r, "w3", opts);
    wait_metric_at_least(w1, "facework_queue_connected ", 1, 30);
    wait_metric_at_least(w2, "facework_queue_connected ", 1, 30);
    wait_metric_at_least(w3, "facework_queue_connected ", 1, 30);
    char ids[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "j%02d-p%d", i, 1 + i % 6);
        fthr_push_photo(r, ids[i], 1 + i % 6, NULL);
    }
    /* SIGKILL w2 while it holds entries (mid-batch), SIGSTOP w3 likewise */
    wait_pending(r, "w2", 2, 60);
    fth_signal(w2, SIGKILL);
    json_t *killed = fthr_pending_ids(r, "w2");
    json_t *stopped = NULL;
    for (int attempt = 0; attempt < 20; attempt++) {
        wait_pending(r, "w3", 1, 60);
        fth_signal(w3, SIGSTOP);
        stopped = fthr_pending_ids(r, "w3");
        if (json_array_size(stopped) > 0)
            break;
        json_decref(stopped); /* it answered them in between: try again */
        stopped = NULL;
        fth_signal(w3, SIGCONT);
    }
    assert_non_null(stopped);
    fprintf(stderr, "killed w2 holding %zu entries, stopped w3 holding %zu\n",
            json_array_size(killed), json_array_size(stopped));
    assert_true(json_array_size(killed) > 0);

    fthr_wait_len(r, "jobs:results", N, 300);
    json_t *res = check_results(r, ids, N, N);
    size_t k;
    json_t *e;
    json_array_foreach(killed, k, e)
    {
        const char *by = answered_by(res, json_string_value(e));
        assert_non_null(by);
        assert_string_not_equal(by, "w2");
    }
    json_array_foreach(stopped, k, e)
    {
        const char *by = answered_by(res, json_string_value(e));
        assert_non_null(by);
        assert_string_equal(by, "w1"); /* the only one left */
    }
    assert_true(metric(w1, "facework_queue_reclaimed_total ") >=
                (double)(json_array_size(killed) + json_array_size(stopped)));
    json_decref(res);

    /* the stopped worker resumes: its late answers are dropped, nothing stays pending */
    fth_signal(w3, SIGCONT);
    double deadline = fth_now() + 120;
    while (fthr_pending(r, NULL) > 0) {
        if (fth_now() > deadline)
            fail_msg("%lld entries still pending", fthr_pending(r, NULL));
        fth_pause_ms(50);
    }
    wait_metric_at_least(w3, "facework_queue_jobs_total{consumer=\"w3\",outcome=\"duplicate\"} ", 1,
                         60);
    res = check_results(r, ids, N, N); /* still exactly one each */
    json_decref(res);
    assert_int_equal(fthr_int(r, "XLEN jobs:dead"), 0);
    json_decref(killed);
    json_decref(stopped);
    assert_int_equal(fth_stop(w3, SIGTERM, 60), 0);
    assert_int_equal(fth_stop(w1, SIGTERM, 60), 0);
    fthr_free(r);
}

static void redis_restart(void **state)
{
    (void)state;
    enum { N1 = 10, N2 = 6 };
    fthr_redis *r = fthr_start(true);
    const char *const opts[] = {"--queue-claim-idle", "5s", "--queue-prefetch", "2", NULL};
    fth_proc *w1 = start_worker(r, "w1", opts);
    fth_proc *w2 = start_worker(r, "w2", opts);
    wait_metric_at_least(w1, "facework_queue_connected ", 1, 30);
    wait_metric_at_least(w2, "facework_queue_connected ", 1, 30);
    char ids[N1 + N2][32];
    for (int i = 0; i < N1; i++) {
        snprintf(ids[i], sizeof ids[i], "j%02d-p%d", i, 1 + i % 6);
        fthr_push_photo(r, ids[i], 1 + i % 6, NULL);
    }
    fthr_wait_len(r, "jobs:results", 2, 120);
    fthr_stop(r, true); /* SIGKILL mid-run: the AOF (fsync always) holds every write */
    /* both workers notice and keep retrying with backoff */
    wait_metric_at_least(w1, "facework_queue_reconnects_total ", 1, 60);
    wait_metric_at_least(w2, "facework_queue_reconnects_total ", 1, 60);
    fthr_restart(r);
    for (int i = N1; i < N1 + N2; i++) {
        snprintf(ids[i], sizeof ids[i], "j%02d-p%d", i, 1 + i % 6);
        fthr_push_photo(r, ids[i], 1 + i % 6, NULL);
    }
    fthr_wait_len(r, "jobs:results", N1 + N2, 300);
    json_decref(check_results(r, ids, N1 + N2, N1 + N2));
    double deadline = fth_now() + 60;
    while (fthr_pending(r, NULL) > 0) {
        if (fth_now() > deadline)
            fail_msg("%lld entries still pending", fthr_pending(r, NULL));
        fth_pause_ms(50);
    }
    assert_int_equal(fthr_int(r, "XLEN jobs:dead"), 0);
    wait_metric_at_least(w1, "facework_queue_connected ", 1, 30);
    assert_int_equal(fth_stop(w1, SIGTERM, 60), 0);
    assert_int_equal(fth_stop(w2, SIGTERM, 60), 0);
    fthr_free(r);
}

/* The dead letter of job id, or NULL (borrowed from dead). */
static json_t *dead_of(json_t *dead, const char *id)
{
    size_t k;
    json_t *e;
    json_array_foreach(dead, k, e)
    {
        if (!strcmp(json_string_value(json_object_get(e, "id")), id))
            return e;
    }
    return NULL;
}

static void expect_reason(json_t *dead, const char *id, const char *text)
{
    json_t *e = dead_of(dead, id);
    if (!e)
        fail_msg("job %s is not in the dead-letter stream", id);
    const char *reason = json_string_value(json_object_get(e, "reason"));
    if (!strstr(reason, text))
        fail_msg("job %s: dead-letter reason \"%s\" lacks \"%s\"", id, reason, text);
}

static void poison_jobs(void **state)
{
    (void)state;
    enum { GOOD = 4 };
    fthr_redis *r = fthr_start(false);
    /* an entry that crashed consumers: delivered to "ghost" 4 times before a worker runs */
    freeReplyObject(fthr_cmd(r, "XGROUP CREATE jobs facework 0 MKSTREAM"));
    fthr_push_photo(r, "ghost-job", 1, NULL);
    redisReply *rd = fthr_cmd(r, "XREADGROUP GROUP facework ghost COUNT 1 STREAMS jobs >");
    char ghost_entry[64];
    snprintf(ghost_entry, sizeof ghost_entry, "%s",
             rd->element[0]->element[1]->element[0]->element[0]->str);
    freeReplyObject(rd);
    for (int i = 0; i < 3; i++)
        freeReplyObject(fthr_cmd(r, "XCLAIM jobs facework ghost 0 %s", ghost_entry));
    char ids[GOOD][32];
    for (int i = 0; i < GOOD; i++) {
        snprintf(ids[i], sizeof ids[i], "good%d-p%d", i, 1 + i);
        fthr_push_photo(r, ids[i], 1 + i, NULL);
    }
    fthr_push_bytes(r, "undecodable", "\xff\xd8\xff this is no JPEG", 20, NULL);
    size_t huge_len = 2u << 20; /* over --max-image-bytes 1MiB */
    char *huge = calloc(1, huge_len);
    assert_non_null(huge);
    memcpy(huge, "\xff\xd8\xff\xe0", 4);
    fthr_push_bytes(r, "huge", huge, huge_len, NULL);
    free(huge);
    fthr_push_body(r, "not-json", "{oops");
    const char *const opts[] = {"--queue-claim-idle",
                                "300ms",
                                "--queue-max-deliveries",
                                "3",
                                "--max-image-bytes",
                                "1MiB",
                                NULL};
    fth_proc *w = start_worker(r, "w1", opts);
    fthr_wait_len(r, "jobs:results", GOOD + 4, 240);
    json_t *res = check_results(r, ids, GOOD, GOOD + 4);
    char first_entry[64] = "";
    size_t k;
    json_t *e;
    json_array_foreach(res, k, e)
    {
        if (!strcmp(json_string_value(json_object_get(e, "id")), ids[0]))
            snprintf(first_entry, sizeof first_entry, "%s",
                     json_string_value(json_object_get(e, "entry")));
    }
    json_decref(res);
    json_t *dead = fthr_stream(r, "jobs:dead");
    assert_int_equal(json_array_size(dead), 4);
    expect_reason(dead, "undecodable", "every image failed");
    expect_reason(dead, "huge", "too_large");
    expect_reason(dead, "not-json", "invalid JSON");
    expect_reason(dead, "ghost-job", "delivered 5 times, over the limit of 3");
    json_decref(dead);
    /* a job id answered before, submitted again with a reply list: the stored answer */
    fthr_push_photo(r, ids[0], 1, "replies");
    redisReply *pop = fthr_cmd(r, "BLPOP replies 60");
    assert_int_equal(pop->type, REDIS_REPLY_ARRAY);
    json_t *env = json_loads(pop->element[1]->str, 0, NULL);
    freeReplyObject(pop);
    assert_string_equal(json_string_value(json_object_get(env, "id")), ids[0]);
    assert_string_equal(json_string_value(json_object_get(env, "entry")), first_entry);
    json_decref(env);
    assert_int_equal(fthr_int(r, "XLEN jobs:results"), GOOD + 4);
    assert_true(metric(w, "facework_queue_dead_lettered_total{reason=\"images\"} ") >= 2);

    /* facework submit over a directory: one JSON line per file */
    char dir[] = "/tmp/fthr-submit-XXXXXX", cmd[2048], path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "cp %s/sample2.jpg %s/a.jpg && printf garbage > %s/b.jpg",
             getenv("FW_PHOTOS_DIR"), dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s submit --queue %s --timeout 120s %s", getenv("FW_FACEWORK"),
             r->url, dir);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char line[1 << 16];
    int lines = 0, with_faces = 0, with_error = 0;
    while (fgets(line, sizeof line, f)) {
        /* long lines come in pieces: count the pieces that start an envelope */
        if (strncmp(line, "{\"id\":", 6))
            continue;
        lines++;
        if (strstr(line, "a.jpg"))
            with_faces++;
        if (strstr(line, "b.jpg") && strstr(line, "unsupported"))
            with_error++;
    }
    int st = pclose(f);
    assert_int_equal(st, 0);
    assert_int_equal(lines, 2);
    assert_int_equal(with_faces, 1);
    assert_int_equal(with_error, 1);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    assert_int_equal(system(path), 0);
    assert_int_equal(fth_stop(w, SIGTERM, 60), 0);
    fthr_free(r);
}

/* The backend with GPU_WORKER_QUEUE: its calls reach the worker through the stream. */
static void backend_over_queue(void **state)
{
    (void)state;
    fthr_redis *r = fthr_start(false);
    fth_proc *w = start_worker(r, "w1", NULL);
    char env_queue[200];
    snprintf(env_queue, sizeof env_queue, "GPU_WORKER_QUEUE=%s", r->url);
    const char *const env[] = {env_queue, NULL};
    /* the HTTP URL is never used for calls: no worker listens there (the backend's /health
     * still judges HTTP workers: "degraded" with the fallback; every item below must come
     * from the queue all the same) */
    char unused[64];
    snprintf(unused, sizeof unused, "http://127.0.0.1:%d", fth_free_port());
    fth_proc *b = fth_backend_start(unused, env, NULL);
    const int photos[] = {1, 4, 6};
    fth_tally t = {0};
    fth_analyze_ok(b->url, photos, 3, &t);
    char origin[160];
    snprintf(origin, sizeof origin, "%s", r->url);
    fth_tally_print(&t, "backend over the queue");
    assert_int_equal(fth_tally_of(&t, origin), 3);
    assert_int_equal(fthr_int(r, "XLEN jobs"), 2); /* one job per batch of 2 (the harness) */
    assert_int_equal(fth_stop(b, SIGTERM, 60), 0);
    assert_int_equal(fth_stop(w, SIGTERM, 60), 0);
    fthr_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(backend_over_queue, fth_teardown),
        cmocka_unit_test_teardown(poison_jobs, fth_teardown),
        cmocka_unit_test_teardown(redis_restart, fth_teardown),
        cmocka_unit_test_teardown(three_workers_kill_and_stop, fth_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
