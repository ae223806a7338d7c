/* The worker's batcher on the real default pack (CPU) and the six group photos
 * ($FW_PHOTOS_DIR/sample1..6.jpg: 3, 3, 3, 4, 5, 4 faces). Waits use condition variables
 * with generous bounds; a test that must hold the pipeline still blocks the detector in
 * its on_batch hook behind a gate the test opens, or holds an image "on its way" to the
 * detector by blocking the CPU thread about to decode it in the job's `cancelled` hook
 * (the decode gate). */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <turbojpeg.h>

#include "server/batcher.h"

#define WAIT_MS 120000 /* failure bound for any wait */

static fw_engine *eng;
static uint8_t *photo[6];
static size_t photo_len[6];
static const size_t expected_faces[6] = {3, 3, 3, 4, 5, 4};

/* ---- completion tracking ------------------------------------------------------------ */

typedef struct tracker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} tracker;

typedef struct jobrec {
    tracker *t;
    fw_result *results;
    size_t n;
    atomic_int calls;
    atomic_int bad_args; /* the callback saw another results array or count */
} jobrec;

static void tracker_init(tracker *t)
{
    pthread_condattr_t ca;
    assert_int_equal(pthread_condattr_init(&ca), 0);
    assert_int_equal(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC), 0);
    assert_int_equal(pthread_cond_init(&t->cv, &ca), 0);
    pthread_condattr_destroy(&ca);
    assert_int_equal(pthread_mutex_init(&t->mu, NULL), 0);
    t->done = 0;
}

static void tracker_destroy(tracker *t)
{
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

static void on_done(void *user, fw_result *results, size_t n)
{
    jobrec *r = user;
    if (results != r->results || n != r->n)
        atomic_fetch_add(&r->bad_args, 1);
    atomic_fetch_add(&r->calls, 1);
    pthread_mutex_lock(&r->t->mu);
    r->t->done++;
    pthread_cond_broadcast(&r->t->cv);
    pthread_mutex_unlock(&r->t->mu);
}

/* Waits until at least `target` callbacks fired; false after ms milliseconds. */
static bool tracker_wait_ms(tracker *t, int target, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    pthread_mutex_lock(&t->mu);
    int rc = 0;
    while (t->done < target && rc == 0)
        rc = pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    bool ok = t->done >= target;
    pthread_mutex_unlock(&t->mu);
    return ok;
}

/* Waits until at least `target` callbacks fired; false after WAIT_MS. */
static bool tracker_wait(tracker *t, int target)
{
    return tracker_wait_ms(t, target, WAIT_MS);
}

static void rec_init(jobrec *r, tracker *t, fw_result *results, size_t n)
{
    r->t = t;
    r->results = results;
    r->n = n;
    atomic_init(&r->calls, 0);
    atomic_init(&r->bad_args, 0);
}

static fw_batcher_job make_job(fw_job_kind kind, const fw_blob *in, size_t n, fw_result *res,
                               jobrec *r)
{
    fw_batcher_job j;
    memset(&j, 0, sizeof j);
    j.kind = kind;
    j.inputs = in;
    j.n = n;
    fw_analyze_opts_init(&j.opts);
    j.results = res;
    j.done = on_done;
    j.user = r;
    return j;
}

static void clear_results(fw_result *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fw_result_clear(&r[i]);
}

/* ---- hooks ---------------------------------------------------------------------------- */

/* Stats fed by the hooks, plus a gate that holds the detector thread after its run. */
static struct {
    atomic_size_t max_detect, max_embed, detect_runs, embed_runs;
    atomic_int jobs_done;
    atomic_size_t job_images, job_faces;
    _Atomic double max_wait;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool gate_closed;
    int held; /* detector runs waiting at the gate */
} hk = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void hooks_reset(void)
{
    atomic_store(&hk.max_detect, 0);
    atomic_store(&hk.max_embed, 0);
    atomic_store(&hk.detect_runs, 0);
    atomic_store(&hk.embed_runs, 0);
    atomic_store(&hk.jobs_done, 0);
    atomic_store(&hk.job_images, 0);
    atomic_store(&hk.job_faces, 0);
    atomic_store(&hk.max_wait, 0.0);
    hk.gate_closed = false;
    hk.held = 0;
}

static void store_max(atomic_size_t *slot, size_t v)
{
    size_t cur = atomic_load(slot);
    while (v > cur && !atomic_compare_exchange_weak(slot, &cur, v))
        ;
}

static void on_batch(void *user, fw_batch_stage stage, size_t n, double secs)
{
    (void)user;
    (void)secs;
    if (stage == FW_BATCH_DETECT) {
        store_max(&hk.max_detect, n);
        atomic_fetch_add(&hk.detect_runs, 1);
        pthread_mutex_lock(&hk.mu);
        hk.held++;
        pthread_cond_broadcast(&hk.cv);
        while (hk.gate_closed)
            pthread_cond_wait(&hk.cv, &hk.mu);
        hk.held--;
        pthread_mutex_unlock(&hk.mu);
    } else {
        store_max(&hk.max_embed, n);
        atomic_fetch_add(&hk.embed_runs, 1);
    }
}

static void on_job_done(void *user, double wait_s, double total_s, size_t n_images, size_t n_faces)
{
    (void)user;
    (void)total_s;
    atomic_fetch_add(&hk.jobs_done, 1);
    atomic_fetch_add(&hk.job_images, n_images);
    atomic_fetch_add(&hk.job_faces, n_faces);
    double cur = atomic_load(&hk.max_wait);
    while (wait_s > cur && !atomic_compare_exchange_weak(&hk.max_wait, &cur, wait_s))
        ;
}

static void gate_close(void)
{
    pthread_mutex_lock(&hk.mu);
    hk.gate_closed = true;
    pthread_mutex_unlock(&hk.mu);
}

static void gate_open(void)
{
    pthread_mutex_lock(&hk.mu);
    hk.gate_closed = false;
    pthread_cond_broadcast(&hk.cv);
    pthread_mutex_unlock(&hk.mu);
}

/* Waits until a detector run is held at the gate. */
static bool gate_wait_held(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&hk.mu);
    int rc = 0;
    while (hk.held == 0 && rc == 0)
        rc = pthread_cond_timedwait(&hk.cv, &hk.mu, &ts);
    bool ok = hk.held > 0;
    pthread_mutex_unlock(&hk.mu);
    return ok;
}

/* The decode gate: a job whose `cancelled` hook is decode_gate holds the CPU thread about
 * to decode its item until the gate opens, then reports the job cancelled (the item ends
 * UNAVAILABLE without being decoded). While held, the item counts as on its way to the
 * detector and the embedder. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool closed;
    int held;
} dg = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static bool decode_gate(void *user)
{
    (void)user;
    pthread_mutex_lock(&dg.mu);
    dg.held++;
    pthread_cond_broadcast(&dg.cv);
    while (dg.closed)
        pthread_cond_wait(&dg.cv, &dg.mu);
    dg.held--;
    pthread_mutex_unlock(&dg.mu);
    return true;
}

static void decode_gate_close(void)
{
    pthread_mutex_lock(&dg.mu);
    dg.closed = true;
    pthread_mutex_unlock(&dg.mu);
}

static void decode_gate_open(void)
{
    pthread_mutex_lock(&dg.mu);
    dg.closed = false;
    pthread_cond_broadcast(&dg.cv);
    pthread_mutex_unlock(&dg.mu);
}

/* Waits until a CPU thread is held at the decode gate. */
static bool decode_gate_wait_held(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&dg.mu);
    int rc = 0;
    while (dg.held == 0 && rc == 0)
        rc = pthread_cond_timedwait(&dg.cv, &dg.mu, &ts);
    bool ok = dg.held > 0;
    pthread_mutex_unlock(&dg.mu);
    return ok;
}

/* Polls the batcher's stats until it reports draining (fw_batcher_free or _drain started
 * on another thread); false after WAIT_MS. */
static bool wait_draining(fw_batcher *b)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        fw_batcher_stats st;
        fw_batcher_get_stats(b, &st);
        if (st.draining)
            return true;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000 > WAIT_MS)
            return false;
        sched_yield();
    }
}

static fw_batcher *new_batcher(fw_batcher_config *cfg)
{
    hooks_reset();
    cfg->on_batch = on_batch;
    cfg->on_job_done = on_job_done;
    fw_batcher *b = NULL;
    fw_error err;
    assert_int_equal(fw_batcher_new(eng, cfg, &b, &err), FW_OK);
    assert_non_null(b);
    return b;
}

/* ---- fixtures ------------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    fw_engine_config cfg;
    fw_engine_config_init(&cfg);
    cfg.models_dir = getenv("FW_MODELS_DIR");
    cfg.provider = "cpu";
    fw_error err;
    if (fw_engine_new(&cfg, &eng, &err) != FW_OK) {
        fprintf(stderr, "engine: %s\n", err.message);
        return -1;
    }
    const char *dir = getenv("FW_PHOTOS_DIR");
    for (int i = 0; i < 6; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/sample%d.jpg", dir ? dir : ".deps/photos", i + 1);
        if (fw_read_file(path, 0, &photo[i], &photo_len[i], &err) != FW_OK) {
            fprintf(stderr, "%s: %s\n", path, err.message);
            return -1;
        }
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 6; i++)
        free(photo[i]);
    fw_engine_free(eng);
    return 0;
}

static fw_blob blob(int i)
{
    return (fw_blob){photo[i], photo_len[i]};
}

static void assert_same_faces(const fw_result *a, const fw_result *b, bool embeddings)
{
    size_t dim = fw_engine_embedding_dim(eng);
    assert_int_equal(a->status, FW_OK);
    assert_int_equal(b->status, FW_OK);
    assert_int_equal(a->width, b->width);
    assert_int_equal(a->height, b->height);
    assert_int_equal(a->n_faces, b->n_faces);
    for (size_t f = 0; f < a->n_faces; f++) {
        for (int k = 0; k < 4; k++)
            assert_true(fabsf(a->faces[f].bbox[k] - b->faces[f].bbox[k]) < 0.01f);
        if (embeddings) {
            assert_non_null(a->faces[f].embedding);
            assert_non_null(b->faces[f].embedding);
            float c = fw_cosine(a->faces[f].embedding, b->faces[f].embedding, dim);
            if (c <= 0.9999f)
                fprintf(stderr, "face %zu: cosine %.6f\n", f, c);
            assert_true(c > 0.9999f);
        }
    }
}

/* ---- tests ---------------------------------------------------------------------------- */

/* One job of the six photos gives what fw_engine_analyze gives on the same inputs; the
 * job hook and counters see 6 images and 22 faces. */
static void test_matches_engine_analyze(void **state)
{
    (void)state;
    fw_blob in[6];
    for (int i = 0; i < 6; i++)
        in[i] = blob(i);
    fw_result want[6], got[6];
    fw_error err;
    assert_int_equal(fw_engine_analyze(eng, in, 6, NULL, want, &err), FW_OK);

    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    jobrec r;
    rec_init(&r, &t, got, 6);
    fw_batcher_job job = make_job(FW_JOB_ANALYZE, in, 6, got, &r);
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait(&t, 1));
    assert_int_equal(atomic_load(&r.calls), 1);
    assert_int_equal(atomic_load(&r.bad_args), 0);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(got[i].n_faces, expected_faces[i]);
        assert_same_faces(&got[i], &want[i], true);
    }
    assert_int_equal(atomic_load(&hk.jobs_done), 1);
    assert_int_equal(atomic_load(&hk.job_images), 6);
    assert_int_equal(atomic_load(&hk.job_faces), 22);
    assert_true(atomic_load(&hk.detect_runs) >= 1);
    assert_true(atomic_load(&hk.max_embed) >= 1);

    fw_batcher_stats st;
    fw_batcher_get_stats(b, &st);
    assert_int_equal(st.jobs_submitted, 1);
    assert_int_equal(st.jobs_completed, 1);
    assert_int_equal(st.images, 6);
    assert_int_equal(st.image_errors, 0);
    assert_int_equal(st.faces, 22);
    assert_int_equal(st.detect_images, 6);
    assert_int_equal(st.embed_faces, 22);
    assert_int_equal(st.queue_depth, 0);
    assert_false(st.draining);

    fw_batcher_free(b);
    assert_int_equal(atomic_load(&r.calls), 1);
    clear_results(want, 6);
    clear_results(got, 6);
    tracker_destroy(&t);
}

/* ---- batching across submitters ---- */

#define SUBMITTERS 8
#define JOBS_EACH 2

typedef struct submitter {
    fw_batcher *b;
    pthread_barrier_t *start;
    int index;
    atomic_int failures;
} submitter;

static void *submitter_main(void *arg)
{
    submitter *s = arg;
    pthread_barrier_wait(s->start);
    for (int k = 0; k < JOBS_EACH; k++) {
        int p = (s->index + k) % 6;
        fw_blob in = blob(p);
        fw_result res;
        tracker t;
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&t.cv, &ca);
        pthread_condattr_destroy(&ca);
        pthread_mutex_init(&t.mu, NULL);
        t.done = 0;
        jobrec r;
        rec_init(&r, &t, &res, 1);
        fw_batcher_job job = make_job(FW_JOB_ANALYZE, &in, 1, &res, &r);
        fw_error err;
        if (fw_batcher_submit(s->b, &job, &err) != FW_OK) {
            fprintf(stderr, "submitter %d: %s\n", s->index, err.message);
            atomic_fetch_add(&s->failures, 1);
        } else if (!tracker_wait(&t, 1)) {
            fprintf(stderr, "submitter %d: no completion\n", s->index);
            atomic_fetch_add(&s->failures, 1);
            tracker_destroy(&t);
            return NULL; /* the callback may still come: keep t alive (test fails anyway) */
        } else {
            if (atomic_load(&r.calls) != 1 || res.status != FW_OK ||
                res.n_faces != expected_faces[p] || (res.n_faces && !res.faces[0].embedding)) {
                fprintf(stderr, "submitter %d: photo %d status %d faces %zu\n", s->index, p + 1,
                        res.status, res.n_faces);
                atomic_fetch_add(&s->failures, 1);
            }
            fw_result_clear(&res);
        }
        tracker_destroy(&t);
    }
    return NULL;
}

/* Eight threads submitting one-image jobs at once: the detector gathers items of several
 * jobs into one run, and every job gets its own photo's faces. */
static void test_batches_across_jobs(void **state)
{
    (void)state;
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.max_batch_images = SUBMITTERS;
    cfg.max_batch_faces = 8;
    cfg.max_queue_delay_us = 500000;
    fw_batcher *b = new_batcher(&cfg);
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, SUBMITTERS), 0);
    submitter s[SUBMITTERS];
    pthread_t tid[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++) {
        s[i].b = b;
        s[i].start = &start;
        s[i].index = i;
        atomic_init(&s[i].failures, 0);
        assert_int_equal(pthread_create(&tid[i], NULL, submitter_main, &s[i]), 0);
    }
    int failures = 0;
    for (int i = 0; i < SUBMITTERS; i++) {
        pthread_join(tid[i], NULL);
        failures += atomic_load(&s[i].failures);
    }
    pthread_barrier_destroy(&start);
    fprintf(stderr, "largest detector batch %zu, largest embedder batch %zu, %zu/%zu runs\n",
            atomic_load(&hk.max_detect), atomic_load(&hk.max_embed), atomic_load(&hk.detect_runs),
            atomic_load(&hk.embed_runs));
    assert_int_equal(failures, 0);
    assert_true(atomic_load(&hk.max_detect) > 1);
    assert_true(atomic_load(&hk.max_detect) <= SUBMITTERS);
    assert_true(atomic_load(&hk.max_embed) <= 8);
    assert_true(atomic_load(&hk.detect_runs) < SUBMITTERS * JOBS_EACH);
    assert_int_equal(atomic_load(&hk.jobs_done), SUBMITTERS * JOBS_EACH);
    assert_true(atomic_load(&hk.max_wait) > 0.0);
    fw_batcher_free(b);
}

/* DETECT jobs return faces without embeddings; a job's options (max_faces) apply to it
 * alone even when another job's items wait beside it. */
static void test_detect_jobs(void **state)
{
    (void)state;
    fw_blob in[2] = {blob(4), blob(3)};
    fw_result want[2], det[2], top1[2];
    fw_error err;
    assert_int_equal(fw_engine_analyze(eng, in, 2, NULL, want, &err), FW_OK);

    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.max_queue_delay_us = 100000;
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    jobrec r1, r2;
    rec_init(&r1, &t, det, 2);
    rec_init(&r2, &t, top1, 2);
    fw_batcher_job j1 = make_job(FW_JOB_DETECT, in, 2, det, &r1);
    fw_batcher_job j2 = make_job(FW_JOB_DETECT, in, 2, top1, &r2);
    j2.opts.max_faces = 1;
    assert_int_equal(fw_batcher_submit(b, &j1, &err), FW_OK);
    assert_int_equal(fw_batcher_submit(b, &j2, &err), FW_OK);
    assert_true(tracker_wait(&t, 2));
    for (int i = 0; i < 2; i++) {
        assert_same_faces(&det[i], &want[i], false);
        for (size_t f = 0; f < det[i].n_faces; f++)
            assert_null(det[i].faces[f].embedding);
        assert_int_equal(top1[i].status, FW_OK);
        assert_int_equal(top1[i].n_faces, 1);
        assert_null(top1[i].faces[0].embedding);
        for (int k = 0; k < 4; k++)
            assert_true(fabsf(top1[i].faces[0].bbox[k] - want[i].faces[0].bbox[k]) < 0.01f);
    }
    assert_int_equal(atomic_load(&hk.embed_runs), 0);
    fw_batcher_free(b);
    assert_int_equal(atomic_load(&r1.calls), 1);
    assert_int_equal(atomic_load(&r2.calls), 1);
    clear_results(want, 2);
    clear_results(det, 2);
    clear_results(top1, 2);
    tracker_destroy(&t);
}

/* EMBED_CROPS: aligned crops give fw_engine_embed_aligned's embeddings; a crop of the
 * wrong size or an empty one is an item error beside them. */
/* EMBED_IMAGES: encoded 112x112 crops are decoded on the pool and embedded; another size
 * or undecodable bytes are per-item errors. */
static void test_embed_images(void **state)
{
    (void)state;
    const size_t crop_bytes = (size_t)FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3;
    fw_blob in = blob(2);
    fw_result face_res;
    fw_error err;
    assert_int_equal(fw_engine_analyze(eng, &in, 1, NULL, &face_res, &err), FW_OK);
    assert_true(face_res.n_faces >= 1);
    fw_image *img;
    assert_int_equal(fw_image_decode(in.data, in.len, NULL, &img, &err), FW_OK);
    uint8_t *crop = malloc(crop_bytes);
    assert_non_null(crop);
    fw_align_face(img, (const float(*)[2])face_res.faces[0].landmarks, crop);
    size_t dim = fw_engine_embedding_dim(eng);
    float *want = malloc(dim * sizeof *want);
    assert_non_null(want);
    assert_int_equal(fw_engine_embed_aligned(eng, crop, 1, want, &err), FW_OK);
    tjhandle tj = tjInitCompress();
    assert_non_null(tj);
    unsigned char *jpg = NULL;
    unsigned long jlen = 0;
    assert_int_equal(tjCompress2(tj, crop, FW_ALIGNED_SIZE, FW_ALIGNED_SIZE * 3, FW_ALIGNED_SIZE,
                                 TJPF_RGB, &jpg, &jlen, TJSAMP_444, 100, 0),
                     0);
    tjDestroy(tj);
    static const uint8_t junk[] = "not an image at all";
    fw_blob cin[3] = {{jpg, jlen}, in, {junk, sizeof junk}};
    fw_result got[3];
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    jobrec r;
    rec_init(&r, &t, got, 3);
    fw_batcher_job job = make_job(FW_JOB_EMBED_IMAGES, cin, 3, got, &r);
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait(&t, 1));
    assert_int_equal(got[0].status, FW_OK);
    assert_int_equal(got[0].n_faces, 1);
    assert_true(fw_cosine(got[0].faces[0].embedding, want, dim) > 0.99f);
    assert_int_equal(got[1].status, FW_ERR_INVALID_ARGUMENT); /* a whole photo, not a crop */
    assert_non_null(strstr(got[1].message, "112x112"));
    assert_int_equal(got[2].status, FW_ERR_UNSUPPORTED);
    fw_batcher_free(b);
    clear_results(got, 3);
    tjFree(jpg);
    fw_result_clear(&face_res);
    fw_image_free(img);
    free(crop);
    free(want);
}

static bool always_cancelled(void *user)
{
    (void)user;
    return true;
}

/* A job nobody waits for any more is not decoded, detected or embedded: every item ends
 * UNAVAILABLE, the callback still fires once, and the queue empties. */
static void test_cancelled_job(void **state)
{
    (void)state;
    fw_blob in[3] = {blob(1), blob(2), blob(3)};
    fw_result got[3];
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    jobrec r;
    rec_init(&r, &t, got, 3);
    fw_batcher_job job = make_job(FW_JOB_ANALYZE, in, 3, got, &r);
    job.cancelled = always_cancelled;
    fw_error err;
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait(&t, 1));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(got[i].status, FW_ERR_UNAVAILABLE);
        assert_int_equal(got[i].n_faces, 0);
    }
    assert_int_equal(atomic_load(&hk.detect_runs), 0);
    assert_int_equal(atomic_load(&hk.embed_runs), 0);
    assert_int_equal(fw_batcher_queue_depth(b), 0);
    fw_batcher_free(b);
    assert_int_equal(atomic_load(&r.calls), 1);
    clear_results(got, 3);
}

static void test_embed_crops(void **state)
{
    (void)state;
    const size_t crop_bytes = (size_t)FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3;
    fw_blob in = blob(1);
    fw_result face_res;
    fw_error err;
    assert_int_equal(fw_engine_analyze(eng, &in, 1, NULL, &face_res, &err), FW_OK);
    assert_int_equal(face_res.n_faces, 3);
    fw_image *img;
    assert_int_equal(fw_image_decode(in.data, in.len, NULL, &img, &err), FW_OK);
    uint8_t *crops = malloc(3 * crop_bytes);
    assert_non_null(crops);
    for (int f = 0; f < 3; f++)
        fw_align_face(img, (const float(*)[2])face_res.faces[f].landmarks,
                      crops + (size_t)f * crop_bytes);
    size_t dim = fw_engine_embedding_dim(eng);
    float *want = malloc(3 * dim * sizeof *want);
    assert_non_null(want);
    assert_int_equal(fw_engine_embed_aligned(eng, crops, 3, want, &err), FW_OK);

    fw_blob cin[5] = {{crops, crop_bytes},
                      {crops + crop_bytes, crop_bytes - 1},
                      {crops + crop_bytes, crop_bytes},
                      {crops, 0},
                      {crops + 2 * crop_bytes, crop_bytes}};
    fw_result got[5];
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    jobrec r;
    rec_init(&r, &t, got, 5);
    fw_batcher_job job = make_job(FW_JOB_EMBED_CROPS, cin, 5, got, &r);
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait(&t, 1));
    const int good[3] = {0, 2, 4};
    for (int g = 0; g < 3; g++) {
        const fw_result *res = &got[good[g]];
        assert_int_equal(res->status, FW_OK);
        assert_int_equal(res->n_faces, 1);
        assert_int_equal(res->width, FW_ALIGNED_SIZE);
        assert_int_equal(res->height, FW_ALIGNED_SIZE);
        assert_non_null(res->faces[0].embedding);
        float c = fw_cosine(res->faces[0].embedding, want + (size_t)g * dim, dim);
        assert_true(c > 0.9999f);
    }
    assert_int_equal(got[1].status, FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(got[1].n_faces, 0);
    assert_true(strlen(got[1].message) > 0);
    assert_int_equal(got[3].status, FW_ERR_EMPTY_INPUT);
    assert_int_equal(atomic_load(&hk.detect_runs), 0);
    assert_int_equal(atomic_load(&hk.job_faces), 3);
    fw_batcher_free(b);
    assert_int_equal(atomic_load(&r.calls), 1);
    clear_results(got, 5);
    fw_result_clear(&face_res);
    fw_image_free(img);
    free(crops);
    free(want);
    tracker_destroy(&t);
}

/* Bad images inside a job are per-item errors; the good ones in the same job succeed. */
static void test_bad_items(void **state)
{
    (void)state;
    uint8_t noise[4096];
    uint32_t s = 12345u;
    for (size_t i = 0; i < sizeof noise; i++) {
        s = s * 1664525u + 1013904223u;
        noise[i] = (uint8_t)(s >> 24);
    }
    /* not a JPEG, PNG or WebP signature */
    assert_false(noise[0] == 0xFF && noise[1] == 0xD8);
    assert_false(noise[0] == 0x89 && noise[1] == 'P');
    assert_false(noise[0] == 'R' && noise[1] == 'I');
    fw_blob in[5] = {
        blob(0), {photo[1], 0}, {noise, sizeof noise}, {photo[2], photo_len[2] / 2}, blob(2)};
    fw_result got[5];
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    jobrec r;
    rec_init(&r, &t, got, 5);
    fw_batcher_job job = make_job(FW_JOB_ANALYZE, in, 5, got, &r);
    fw_error err;
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait(&t, 1));
    assert_int_equal(got[0].status, FW_OK);
    assert_int_equal(got[0].n_faces, 3);
    assert_non_null(got[0].faces[0].embedding);
    assert_int_equal(got[1].status, FW_ERR_EMPTY_INPUT);
    assert_int_equal(got[2].status, FW_ERR_UNSUPPORTED);
    assert_int_equal(got[3].status, FW_ERR_CORRUPT);
    assert_int_equal(got[4].status, FW_OK);
    assert_int_equal(got[4].n_faces, 3);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(got[i].n_faces, 0);
        assert_null(got[i].faces);
        assert_true(strlen(got[i].message) > 0);
    }
    fw_batcher_stats st;
    fw_batcher_get_stats(b, &st);
    assert_int_equal(st.images, 5);
    assert_int_equal(st.image_errors, 3);
    assert_int_equal(st.detect_images, 2);
    fw_batcher_free(b);
    assert_int_equal(atomic_load(&r.calls), 1);
    clear_results(got, 5);
    tracker_destroy(&t);
}

/* The queue holds at most max_queue_images images: a bigger job is refused, and while a
 * job is held in the pipeline, submits past the bound are refused at once; after it
 * completes they are accepted again. */
static void test_bounded_queue(void **state)
{
    (void)state;
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.max_queue_images = 4;
    fw_batcher *b = new_batcher(&cfg);
    fw_blob in[5] = {blob(0), blob(1), blob(2), blob(3), blob(4)};
    fw_result res[5], one[1], again[4];
    tracker t;
    tracker_init(&t);
    jobrec r, r1, r4, never;
    rec_init(&never, &t, res, 5);
    fw_error err;

    fw_batcher_job big = make_job(FW_JOB_ANALYZE, in, 5, res, &never);
    assert_int_equal(fw_batcher_submit(b, &big, &err), FW_ERR_BUSY);
    assert_int_equal(err.code, FW_ERR_BUSY);

    gate_close();
    rec_init(&r, &t, res, 3);
    fw_batcher_job held = make_job(FW_JOB_ANALYZE, in, 3, res, &r);
    assert_int_equal(fw_batcher_submit(b, &held, &err), FW_OK);
    assert_true(gate_wait_held()); /* the job is inside the pipeline now */
    assert_int_equal(fw_batcher_queue_depth(b), 3);
    fw_batcher_job two = make_job(FW_JOB_ANALYZE, in + 3, 2, res + 3, &never);
    assert_int_equal(fw_batcher_submit(b, &two, &err), FW_ERR_BUSY);
    rec_init(&r1, &t, one, 1);
    fw_batcher_job single = make_job(FW_JOB_ANALYZE, in + 3, 1, one, &r1);
    assert_int_equal(fw_batcher_submit(b, &single, &err), FW_OK);
    assert_int_equal(fw_batcher_queue_depth(b), 4);
    fw_batcher_job extra = make_job(FW_JOB_DETECT, in + 4, 1, res + 4, &never);
    assert_int_equal(fw_batcher_submit(b, &extra, &err), FW_ERR_BUSY);
    fw_batcher_stats st;
    fw_batcher_get_stats(b, &st);
    assert_int_equal(st.jobs_rejected, 3);
    assert_int_equal(st.jobs_in_flight, 2);
    assert_int_equal(st.queue_depth, 4);
    gate_open();

    assert_true(tracker_wait(&t, 2));
    assert_int_equal(fw_batcher_queue_depth(b), 0);
    rec_init(&r4, &t, again, 4);
    fw_batcher_job four = make_job(FW_JOB_ANALYZE, in, 4, again, &r4);
    assert_int_equal(fw_batcher_submit(b, &four, &err), FW_OK);
    assert_true(tracker_wait(&t, 3));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].status, FW_OK);
        assert_int_equal(res[i].n_faces, expected_faces[i]);
    }
    assert_int_equal(one[0].n_faces, expected_faces[3]);
    for (int i = 0; i < 4; i++)
        assert_int_equal(again[i].n_faces, expected_faces[i]);
    fw_batcher_free(b);
    assert_int_equal(atomic_load(&never.calls), 0);
    assert_int_equal(atomic_load(&r.calls), 1);
    assert_int_equal(atomic_load(&r1.calls), 1);
    assert_int_equal(atomic_load(&r4.calls), 1);
    clear_results(res, 3);
    clear_results(one, 1);
    clear_results(again, 4);
    tracker_destroy(&t);
}

typedef struct drain_call {
    fw_batcher *b;
    int timeout_ms;
    fw_err rc;
} drain_call;

static void *drain_main(void *arg)
{
    drain_call *d = arg;
    d->rc = fw_batcher_drain(d->b, d->timeout_ms);
    return NULL;
}

/* Drain completes every accepted job without waiting for batches to fill: with an image
 * held on its way to the detector (decode gate) and a 10-minute queue delay, the other
 * jobs would wait; once drain starts they complete while the gate is still closed. Then
 * new work is refused. */
static void test_drain(void **state)
{
    (void)state;
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.max_queue_delay_us = 600u * 1000u * 1000u; /* 10 minutes */
    fw_batcher *b = new_batcher(&cfg);
    tracker t, th;
    tracker_init(&t);
    tracker_init(&th);
    fw_error err;
    fw_blob hin = blob(5);
    fw_result hres;
    jobrec hr;
    rec_init(&hr, &th, &hres, 1);
    fw_batcher_job hjob = make_job(FW_JOB_ANALYZE, &hin, 1, &hres, &hr);
    hjob.cancelled = decode_gate;
    decode_gate_close();
    assert_int_equal(fw_batcher_submit(b, &hjob, &err), FW_OK);
    assert_true(decode_gate_wait_held());
    enum { JOBS = 4 };
    fw_blob in[JOBS][2];
    fw_result res[JOBS][2];
    jobrec r[JOBS];
    for (int k = 0; k < JOBS; k++) {
        in[k][0] = blob(k);
        in[k][1] = blob(k + 1);
        size_t n = k % 2 ? 2 : 1;
        rec_init(&r[k], &t, res[k], n);
        fw_batcher_job job =
            make_job(k == 3 ? FW_JOB_DETECT : FW_JOB_ANALYZE, in[k], n, res[k], &r[k]);
        assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    }
    drain_call d = {.b = b, .timeout_ms = WAIT_MS / 2, .rc = FW_ERR_INTERNAL};
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, drain_main, &d), 0);
    assert_true(tracker_wait(&t, JOBS)); /* the gate is still closed */
    assert_int_equal(atomic_load(&hr.calls), 0);
    decode_gate_open();
    pthread_join(tid, NULL);
    assert_int_equal(d.rc, FW_OK);
    assert_int_equal(atomic_load(&hr.calls), 1);
    assert_int_equal(hres.status, FW_ERR_UNAVAILABLE);
    for (int k = 0; k < JOBS; k++) {
        assert_int_equal(atomic_load(&r[k].calls), 1);
        assert_int_equal(atomic_load(&r[k].bad_args), 0);
        for (size_t i = 0; i < r[k].n; i++) {
            assert_int_equal(res[k][i].status, FW_OK);
            assert_int_equal(res[k][i].n_faces, expected_faces[k + (int)i]);
        }
    }
    fw_batcher_stats st;
    fw_batcher_get_stats(b, &st);
    assert_true(st.draining);
    assert_int_equal(st.jobs_in_flight, 0);
    fw_result late;
    jobrec rl;
    rec_init(&rl, &t, &late, 1);
    fw_batcher_job job = make_job(FW_JOB_ANALYZE, in[0], 1, &late, &rl);
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_ERR_UNAVAILABLE);
    assert_int_equal(fw_batcher_drain(b, 0), FW_OK);
    fw_batcher_free(b);
    assert_int_equal(atomic_load(&rl.calls), 0);
    for (int k = 0; k < JOBS; k++) {
        assert_int_equal(atomic_load(&r[k].calls), 1);
        clear_results(res[k], r[k].n);
    }
    fw_result_clear(&hres);
    tracker_destroy(&t);
    tracker_destroy(&th);
}

/* Drain reports a timeout while a job is held, and succeeds once it completes. */
static void test_drain_timeout(void **state)
{
    (void)state;
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    fw_blob in = blob(5);
    fw_result res;
    jobrec r;
    rec_init(&r, &t, &res, 1);
    fw_batcher_job job = make_job(FW_JOB_ANALYZE, &in, 1, &res, &r);
    fw_error err;
    gate_close();
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(gate_wait_held());
    assert_int_equal(fw_batcher_drain(b, 20), FW_ERR_TIMEOUT);
    assert_int_equal(atomic_load(&r.calls), 0);
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_ERR_UNAVAILABLE);
    gate_open();
    assert_int_equal(fw_batcher_drain(b, -1), FW_OK);
    assert_int_equal(atomic_load(&r.calls), 1);
    assert_int_equal(res.status, FW_OK);
    assert_int_equal(res.n_faces, expected_faces[5]);
    fw_batcher_free(b);
    assert_int_equal(atomic_load(&r.calls), 1);
    fw_result_clear(&res);
    tracker_destroy(&t);
}

static void *free_main(void *arg)
{
    fw_batcher_free(arg);
    return NULL;
}

/* Freeing with jobs waiting for a batch completes each exactly once, its images
 * UNAVAILABLE. The jobs wait because an image is held on its way to the detector (decode
 * gate) and the queue delay is 10 minutes; free runs on another thread, and the gate opens
 * only once free has stopped the batcher, so no model ever runs. */
static void test_free_with_jobs_waiting(void **state)
{
    (void)state;
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.max_queue_delay_us = 600u * 1000u * 1000u;
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    enum { JOBS = 3 };
    fw_blob in[JOBS + 1][2];
    fw_result res[JOBS + 1][2];
    jobrec r[JOBS + 1];
    fw_error err;
    for (int k = 0; k <= JOBS; k++) {
        in[k][0] = blob(k);
        in[k][1] = blob(5 - k);
        rec_init(&r[k], &t, res[k], k == JOBS ? 1 : 2);
    }
    /* the held job first: its one image occupies a CPU thread at the decode gate */
    fw_batcher_job hjob = make_job(FW_JOB_ANALYZE, in[JOBS], 1, res[JOBS], &r[JOBS]);
    hjob.cancelled = decode_gate;
    decode_gate_close();
    assert_int_equal(fw_batcher_submit(b, &hjob, &err), FW_OK);
    assert_true(decode_gate_wait_held());
    for (int k = 0; k < JOBS; k++) {
        fw_batcher_job job = make_job(FW_JOB_ANALYZE, in[k], 2, res[k], &r[k]);
        assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    }
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, free_main, b), 0);
    assert_true(wait_draining(b)); /* free has stopped every thread's next step */
    decode_gate_open();
    pthread_join(tid, NULL);
    for (int k = 0; k <= JOBS; k++) {
        assert_int_equal(atomic_load(&r[k].calls), 1);
        assert_int_equal(atomic_load(&r[k].bad_args), 0);
        for (size_t i = 0; i < r[k].n; i++) {
            assert_int_equal(res[k][i].status, FW_ERR_UNAVAILABLE);
            assert_int_equal(res[k][i].n_faces, 0);
            assert_true(strlen(res[k][i].message) > 0);
        }
        clear_results(res[k], r[k].n);
    }
    assert_int_equal(atomic_load(&hk.detect_runs), 0);
    assert_int_equal(atomic_load(&hk.embed_runs), 0);
    assert_int_equal(atomic_load(&hk.jobs_done), JOBS + 1);
    tracker_destroy(&t);
}

/* Freeing while work is moving through every stage: each callback fires exactly once and
 * every item is either a full result or UNAVAILABLE. */
static void test_free_mid_pipeline(void **state)
{
    (void)state;
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.max_batch_faces = 4;
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    enum { JOBS = 6 };
    fw_blob in[JOBS][2];
    fw_result res[JOBS][2];
    jobrec r[JOBS];
    fw_error err;
    for (int k = 0; k < JOBS; k++) {
        in[k][0] = blob(k);
        in[k][1] = blob((k + 3) % 6);
        rec_init(&r[k], &t, res[k], 2);
        fw_batcher_job job = make_job(FW_JOB_ANALYZE, in[k], 2, res[k], &r[k]);
        assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    }
    assert_true(tracker_wait(&t, 1)); /* at least one job went all the way through */
    fw_batcher_free(b);
    for (int k = 0; k < JOBS; k++) {
        assert_int_equal(atomic_load(&r[k].calls), 1);
        for (int i = 0; i < 2; i++) {
            int p = i == 0 ? k : (k + 3) % 6;
            if (res[k][i].status == FW_OK) {
                assert_int_equal(res[k][i].n_faces, expected_faces[p]);
                assert_non_null(res[k][i].faces[0].embedding);
            } else {
                assert_int_equal(res[k][i].status, FW_ERR_UNAVAILABLE);
            }
        }
        clear_results(res[k], 2);
    }
    tracker_destroy(&t);
}

/* ---- when a model thread waits ---- */

#define LONG_DELAY_US (600u * 1000u * 1000u) /* 10 minutes */
#define LONE_BOUND_MS 60000                  /* a tenth of it */

/* A lone item is not held back by max_queue_delay: with nothing else on its way, each
 * stage runs it at once. The queue delay is 10 minutes and each job must be answered
 * within a tenth of that (waiting once would miss the bound; it takes well under a second
 * on a quiet machine). ANALYZE goes through both the detector and the embedder; then a
 * DETECT job and an EMBED_CROPS job, each alone too. */
static void test_lone_item_not_delayed(void **state)
{
    (void)state;
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.max_queue_delay_us = LONG_DELAY_US;
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    fw_error err;
    fw_blob in = blob(3);
    fw_result got, det;
    jobrec r1, r2;
    rec_init(&r1, &t, &got, 1);
    fw_batcher_job job = make_job(FW_JOB_ANALYZE, &in, 1, &got, &r1);
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait_ms(&t, 1, LONE_BOUND_MS));
    assert_int_equal(got.status, FW_OK);
    assert_int_equal(got.n_faces, expected_faces[3]);
    assert_non_null(got.faces[0].embedding);
    assert_int_equal(atomic_load(&hk.detect_runs), 1);
    assert_int_equal(atomic_load(&hk.embed_runs), 1);
    assert_int_equal(atomic_load(&hk.max_embed), expected_faces[3]);
    assert_true(atomic_load(&hk.max_wait) < LONE_BOUND_MS / 1000.0);

    rec_init(&r2, &t, &det, 1);
    job = make_job(FW_JOB_DETECT, &in, 1, &det, &r2);
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait_ms(&t, 2, LONE_BOUND_MS));
    assert_int_equal(det.n_faces, expected_faces[3]);

    /* one aligned crop, embedded alone */
    fw_image *img;
    assert_int_equal(fw_image_decode(in.data, in.len, NULL, &img, &err), FW_OK);
    const size_t crop_bytes = (size_t)FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3;
    uint8_t *crop = malloc(crop_bytes);
    assert_non_null(crop);
    fw_align_face(img, (const float(*)[2])got.faces[0].landmarks, crop);
    fw_blob cin = {crop, crop_bytes};
    fw_result emb;
    jobrec r3;
    rec_init(&r3, &t, &emb, 1);
    job = make_job(FW_JOB_EMBED_CROPS, &cin, 1, &emb, &r3);
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait_ms(&t, 3, LONE_BOUND_MS));
    assert_int_equal(emb.status, FW_OK);
    assert_int_equal(emb.n_faces, 1);
    assert_int_equal(atomic_load(&hk.embed_runs), 2);
    assert_true(atomic_load(&hk.max_wait) < LONE_BOUND_MS / 1000.0);
    fw_batcher_free(b);
    fw_result_clear(&got);
    fw_result_clear(&det);
    fw_result_clear(&emb);
    fw_image_free(img);
    free(crop);
    tracker_destroy(&t);
}

/* Items arriving together still share runs. Three 2-image jobs are submitted while an image
 * is held on its way to the detector (decode gate); the queue delay is 10 minutes, so the
 * detector waits for everything on its way: once the gate opens, the six images go through
 * one detector run and their 22 faces through one embedder run. */
static void test_together_batched(void **state)
{
    (void)state;
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.max_queue_delay_us = LONG_DELAY_US;
    fw_batcher *b = new_batcher(&cfg);
    tracker t, th;
    tracker_init(&t);
    tracker_init(&th);
    fw_error err;
    fw_blob hin = blob(0);
    fw_result hres;
    jobrec hr;
    rec_init(&hr, &th, &hres, 1);
    fw_batcher_job hjob = make_job(FW_JOB_ANALYZE, &hin, 1, &hres, &hr);
    hjob.cancelled = decode_gate;
    decode_gate_close();
    assert_int_equal(fw_batcher_submit(b, &hjob, &err), FW_OK);
    assert_true(decode_gate_wait_held());
    enum { JOBS = 3 };
    fw_blob in[JOBS][2];
    fw_result res[JOBS][2];
    jobrec r[JOBS];
    for (int k = 0; k < JOBS; k++) {
        in[k][0] = blob(2 * k);
        in[k][1] = blob(2 * k + 1);
        rec_init(&r[k], &t, res[k], 2);
        fw_batcher_job job = make_job(FW_JOB_ANALYZE, in[k], 2, res[k], &r[k]);
        assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    }
    decode_gate_open();
    assert_true(tracker_wait_ms(&th, 1, LONE_BOUND_MS));
    assert_true(tracker_wait_ms(&t, JOBS, LONE_BOUND_MS));
    assert_int_equal(hres.status, FW_ERR_UNAVAILABLE);
    for (int k = 0; k < JOBS; k++)
        for (int i = 0; i < 2; i++) {
            assert_int_equal(res[k][i].status, FW_OK);
            assert_int_equal(res[k][i].n_faces, expected_faces[2 * k + i]);
        }
    fprintf(stderr, "detector runs %zu (largest %zu), embedder runs %zu (largest %zu)\n",
            atomic_load(&hk.detect_runs), atomic_load(&hk.max_detect), atomic_load(&hk.embed_runs),
            atomic_load(&hk.max_embed));
    assert_int_equal(atomic_load(&hk.detect_runs), 1);
    assert_int_equal(atomic_load(&hk.max_detect), 6);
    assert_int_equal(atomic_load(&hk.embed_runs), 1);
    assert_int_equal(atomic_load(&hk.max_embed), 22);
    fw_batcher_free(b);
    for (int k = 0; k < JOBS; k++)
        clear_results(res[k], 2);
    fw_result_clear(&hres);
    tracker_destroy(&t);
    tracker_destroy(&th);
}

/* While more work is on its way, an item does wait for its batch, but no longer than
 * max_queue_delay: with an image held at the decode gate for good, a 1-image job still
 * completes, and its first model run came at least the queue delay after its submit. */
static void test_waits_while_work_upstream(void **state)
{
    (void)state;
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.max_queue_delay_us = 300u * 1000u;
    fw_batcher *b = new_batcher(&cfg);
    tracker t, th;
    tracker_init(&t);
    tracker_init(&th);
    fw_error err;
    fw_blob hin = blob(0), in = blob(1);
    fw_result hres, got;
    jobrec hr, r;
    rec_init(&hr, &th, &hres, 1);
    fw_batcher_job hjob = make_job(FW_JOB_ANALYZE, &hin, 1, &hres, &hr);
    hjob.cancelled = decode_gate;
    decode_gate_close();
    assert_int_equal(fw_batcher_submit(b, &hjob, &err), FW_OK);
    assert_true(decode_gate_wait_held());
    rec_init(&r, &t, &got, 1);
    fw_batcher_job job = make_job(FW_JOB_ANALYZE, &in, 1, &got, &r);
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait(&t, 1)); /* the gate is still closed */
    assert_int_equal(got.status, FW_OK);
    assert_int_equal(got.n_faces, expected_faces[1]);
    fprintf(stderr, "queue wait %.3f s\n", atomic_load(&hk.max_wait));
    assert_true(atomic_load(&hk.max_wait) >= 0.3);
    assert_int_equal(atomic_load(&hr.calls), 0);
    decode_gate_open();
    assert_true(tracker_wait(&th, 1));
    assert_int_equal(hres.status, FW_ERR_UNAVAILABLE);
    fw_batcher_free(b);
    fw_result_clear(&got);
    fw_result_clear(&hres);
    tracker_destroy(&t);
    tracker_destroy(&th);
}

/* Runs one job of n copies of photo p on a new batcher with this memory bound and these
 * decode threads (10-minute queue delay); checks every result; returns the stats. */
static fw_batcher_stats run_copies(int p, size_t n, size_t max_decoded, int decode_threads)
{
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.max_queue_delay_us = LONG_DELAY_US;
    cfg.max_decoded_bytes = max_decoded;
    cfg.decode_threads = decode_threads;
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    fw_blob in[8];
    fw_result res[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        in[i] = blob(p);
    jobrec r;
    rec_init(&r, &t, res, n);
    fw_batcher_job job = make_job(FW_JOB_ANALYZE, in, n, res, &r);
    fw_error err;
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait(&t, 1));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(res[i].status, FW_OK);
        assert_int_equal(res[i].n_faces, expected_faces[p]);
    }
    fw_batcher_stats st;
    fw_batcher_get_stats(b, &st);
    fw_batcher_free(b);
    clear_results(res, n);
    tracker_destroy(&t);
    return st;
}

/* max_decoded_bytes bounds the decoded images held at once, and decoding waits for room
 * rather than failing. Unbounded, six copies of a photo are all decoded before the
 * detector runs them together (it waits for what is on its way): six images' worth held.
 * With a 1-byte bound and one decode thread, an image is decoded only once the previous
 * one has left detection: one image's worth at a time, one detector run per image, and
 * every result still right. */
static void test_memory_bound(void **state)
{
    (void)state;
    fw_batcher_stats one = run_copies(4, 1, SIZE_MAX, 2);
    size_t s = one.decoded_bytes_peak;
    fprintf(stderr, "one decoded image: %zu bytes\n", s);
    assert_true(s > 1000000); /* a multi-megapixel photo */
    assert_int_equal(one.decoded_bytes, 0);

    fw_batcher_stats all = run_copies(4, 6, SIZE_MAX, 2);
    assert_int_equal(all.decoded_bytes_peak, 6 * s);
    assert_int_equal(all.detect_batches, 1);
    assert_int_equal(all.decoded_bytes, 0);

    fw_batcher_stats bounded = run_copies(4, 6, 1, 1);
    assert_int_equal(bounded.decoded_bytes_peak, s);
    assert_int_equal(bounded.detect_batches, 6);
    assert_int_equal(bounded.images, 6);
    assert_int_equal(bounded.image_errors, 0);
    assert_int_equal(bounded.decoded_bytes, 0);
}

/* Once idle for idle_trim_ms the batcher gives freed memory back (glibc malloc_trim). */
static void test_idle_trim(void **state)
{
    (void)state;
#ifdef __GLIBC__
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.idle_trim_ms = 1;
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    fw_blob in = blob(0);
    fw_result res;
    jobrec r;
    rec_init(&r, &t, &res, 1);
    fw_batcher_job job = make_job(FW_JOB_ANALYZE, &in, 1, &res, &r);
    fw_error err;
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait(&t, 1));
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    fw_batcher_stats st;
    for (;;) {
        fw_batcher_get_stats(b, &st);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (st.memory_trims >= 1 || (now.tv_sec - start.tv_sec) * 1000 > WAIT_MS)
            break;
        sched_yield();
    }
    assert_true(st.memory_trims >= 1);
    fw_batcher_free(b);
    fw_result_clear(&res);
    tracker_destroy(&t);
#endif
}

/* Two detector and two embedder threads, small batches so runs split items: six jobs
 * submitted at once each get what fw_engine_analyze gives. */
static void test_several_model_threads(void **state)
{
    (void)state;
    fw_blob in[6];
    for (int i = 0; i < 6; i++)
        in[i] = blob(i);
    fw_result want[6], got[6];
    fw_error err;
    assert_int_equal(fw_engine_analyze(eng, in, 6, NULL, want, &err), FW_OK);
    fw_batcher_config cfg;
    fw_batcher_config_init(&cfg);
    cfg.detect_threads = 2;
    cfg.embed_threads = 2;
    cfg.max_batch_images = 2;
    cfg.max_batch_faces = 4;
    fw_batcher *b = new_batcher(&cfg);
    tracker t;
    tracker_init(&t);
    jobrec r[6];
    for (int i = 0; i < 6; i++) {
        rec_init(&r[i], &t, &got[i], 1);
        fw_batcher_job job = make_job(FW_JOB_ANALYZE, &in[i], 1, &got[i], &r[i]);
        assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    }
    assert_true(tracker_wait(&t, 6));
    for (int i = 0; i < 6; i++) {
        assert_int_equal(atomic_load(&r[i].calls), 1);
        assert_same_faces(&got[i], &want[i], true);
    }
    assert_true(atomic_load(&hk.max_detect) <= 2);
    assert_true(atomic_load(&hk.max_embed) <= 4);
    fw_batcher_free(b);
    clear_results(want, 6);
    clear_results(got, 6);
    tracker_destroy(&t);
}

/* Runs one single-image ANALYZE job through b and checks its faces against want. */
static void analyze_one(fw_batcher *b, const fw_blob *in, const fw_result *want)
{
    tracker t;
    tracker_init(&t);
    fw_result got;
    jobrec r;
    rec_init(&r, &t, &got, 1);
    fw_batcher_job job = make_job(FW_JOB_ANALYZE, in, 1, &got, &r);
    fw_error err;
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_OK);
    assert_true(tracker_wait(&t, 1));
    assert_int_equal(atomic_load(&r.calls), 1);
    assert_same_faces(&got, want, true);
    fw_result_clear(&got);
    tracker_destroy(&t);
}

/* With idle embedder threads, one image's faces are shared among them (each run takes at
 * most its even share) instead of running as one batch on one thread; with a single
 * embedder thread, or share_idle_faces off, they run as one batch. The embeddings are the
 * same either way. A first job lets every thread reach its idle wait before the measured
 * one. */
static void test_idle_embedders_share_faces(void **state)
{
    (void)state;
    fw_blob in[2] = {blob(0), blob(4)}; /* 3 and 5 faces */
    fw_result want[2];
    fw_error err;
    assert_int_equal(fw_engine_analyze(eng, in, 2, NULL, want, &err), FW_OK);
    assert_int_equal(want[1].n_faces, 5);
    const struct {
        int threads;
        bool share, split;
    } cases[] = {{1, true, false}, {2, true, true}, {2, false, false}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fw_batcher_config cfg;
        fw_batcher_config_init(&cfg);
        assert_true(cfg.share_idle_faces); /* the default */
        cfg.embed_threads = cases[c].threads;
        cfg.share_idle_faces = cases[c].share;
        fw_batcher *b = new_batcher(&cfg);
        analyze_one(b, &in[0], &want[0]);
        hooks_reset();
        analyze_one(b, &in[1], &want[1]);
        if (cases[c].split) {
            assert_true(atomic_load(&hk.embed_runs) >= 2);
            assert_true(atomic_load(&hk.max_embed) <= 3);
        } else {
            assert_int_equal(atomic_load(&hk.embed_runs), 1);
            assert_int_equal(atomic_load(&hk.max_embed), 5);
        }
        fw_batcher_free(b);
    }
    clear_results(want, 2);
}

/* Argument checks, and free(NULL). */
static void test_arguments(void **state)
{
    (void)state;
    fw_batcher_free(NULL);
    fw_error err;
    fw_batcher *b = NULL;
    assert_int_equal(fw_batcher_new(NULL, NULL, &b, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_batcher_new(eng, NULL, &b, &err), FW_OK); /* defaults */
    tracker t;
    tracker_init(&t);
    fw_blob in = blob(0);
    fw_result res;
    jobrec r;
    rec_init(&r, &t, &res, 1);
    fw_batcher_job job = make_job(FW_JOB_ANALYZE, &in, 0, &res, &r);
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_ERR_INVALID_ARGUMENT);
    job.n = 1;
    job.done = NULL;
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_ERR_INVALID_ARGUMENT);
    job.done = on_done;
    job.results = NULL;
    assert_int_equal(fw_batcher_submit(b, &job, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_batcher_submit(NULL, &job, &err), FW_ERR_INVALID_ARGUMENT);
    fw_batcher_free(b);
    assert_int_equal(atomic_load(&r.calls), 0);
    tracker_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_matches_engine_analyze),
        cmocka_unit_test(test_batches_across_jobs),
        cmocka_unit_test(test_detect_jobs),
        cmocka_unit_test(test_embed_crops),
        cmocka_unit_test(test_embed_images),
        cmocka_unit_test(test_cancelled_job),
        cmocka_unit_test(test_bad_items),
        cmocka_unit_test(test_bounded_queue),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_drain_timeout),
        cmocka_unit_test(test_free_with_jobs_waiting),
        cmocka_unit_test(test_free_mid_pipeline),
        cmocka_unit_test(test_lone_item_not_delayed),
        cmocka_unit_test(test_together_batched),
        cmocka_unit_test(test_waits_while_work_upstream),
        cmocka_unit_test(test_memory_bound),
        cmocka_unit_test(test_idle_trim),
        cmocka_unit_test(test_several_model_threads),
        cmocka_unit_test(test_idle_embedders_share_faces),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
