/* The worker's batcher: a CPU pool and per-model threads that gather items from many jobs
 * into one model run (see batcher.h).
 *
 * Every queue lives under one mutex, held only to push or pop (never during a decode or a
 * model run). An item is always in exactly one place: a queue, or the hands of the thread
 * working on it, so handing it over through the mutex orders every access to it.
 *
 * Whether a model thread waits for its batch to fill depends on what is still on its way
 * to it, counted under the mutex: `decoding` (images in a CPU thread's hands at the decode
 * step) plus the decode queue feed the detector; `emb_up` (items of jobs that want
 * embeddings, at the decode, detect, prepare or crop step, queued or in hand) feed the
 * embedder. Each item records the step it is counted under (`counted`), so a move between
 * queues (route) adjusts the counts exactly once. */
#include "server/batcher.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/align.h"
#include "core/pack.h"
#include "core/pipeline.h"
#include "core/preprocess.h"
#include "util/log.h"

#define CROP_BYTES ((size_t)FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3)

/* What an item needs next. The first four run on the CPU pool, in this priority order
 * (work nearest to completion first). */
enum step {
    STEP_FINISH = 0,
    STEP_PREPARE,
    STEP_CROP,
    STEP_DECODE,
    STEP__CPU,
    STEP_DETECT = STEP__CPU,
    STEP_EMBED,
};

typedef struct job job;

typedef struct bitem {
    fw_item it;
    job *job;
    struct bitem *next; /* queue link */
    uint64_t enq_ns;    /* when it entered its current model queue */
    float *chw;         /* n_faces embedder inputs, then n_faces embeddings (one block) */
    float *emb;
    size_t n_faces;            /* faces to embed */
    size_t emb_next, emb_done; /* faces handed to an embedder run / returned from one */
    fw_det crop_det;           /* EMBED_CROPS: the crop as the item's one "detection" */
    size_t img_bytes;          /* the decoded image's bytes charged to decoded_bytes */
    unsigned char step;
    unsigned char counted; /* the step the upstream counts hold it under (mu) */
    bool finished;         /* its result is written */
} bitem;

struct job {
    job *prev, *next; /* live list */
    fw_batcher_job desc;
    uint64_t submit_ns;
    _Atomic uint64_t start_ns; /* first model run that included one of its items */
    atomic_size_t remaining;   /* items not finished */
    atomic_size_t faces;
    bitem items[];
};

typedef struct queue {
    bitem *head, *tail;
    size_t count;
} queue;

typedef struct segment {
    bitem *item;
    size_t first, count;
} segment;

enum role { ROLE_CPU, ROLE_DETECT, ROLE_EMBED };

typedef struct worker {
    fw_batcher *b;
    pthread_t tid;
    bool started;
    enum role role;
    /* detector scratch */
    fw_item **items;
    bitem **batch;
    /* embedder scratch */
    segment *segs;
    float *chw, *emb;
} worker;

struct fw_batcher {
    fw_engine *eng;
    fw_batcher_config cfg;
    uint64_t delay_ns;
    size_t per; /* embedder input floats per face */
    size_t dim; /* embedding floats per face */
    const fw_pack_model *embedder;
    fw_decode_opts decode_opts; /* the engine's limits, for EMBED_IMAGES crops */

    pthread_mutex_t mu;
    pthread_cond_t cpu_cv, det_cv, emb_cv, idle_cv;
    queue cpu_q[STEP__CPU];
    queue det_q, emb_q;
    size_t emb_waiting; /* faces in emb_q not yet taken by a run */
    size_t emb_idle;    /* embedder threads waiting for faces (none queued when they slept) */
    size_t decoding;    /* items in a CPU thread's hands at STEP_DECODE */
    size_t emb_up;      /* items that may still reach emb_q (see the top of this file) */
    job *jobs;          /* accepted, not completed */
    size_t live_jobs;   /* accepted, callback not yet returned */
    bool accepting, stop;
    bool trim_pending;      /* idle since idle_since_ns and memory not yet trimmed */
    uint64_t idle_since_ns; /* when in_system last fell to 0 */
    uint64_t trim_delay_ns;

    worker *workers;
    size_t n_workers;

    atomic_size_t in_system;
    atomic_size_t decoded_bytes, decoded_peak;
    _Atomic uint64_t memory_trims;
    _Atomic uint64_t jobs_submitted, jobs_rejected, jobs_completed, images, image_errors, faces;
    _Atomic uint64_t detect_batches, detect_images, embed_batches, embed_faces;
};

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                              */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
                          .tv_nsec = (long)(deadline_ns % 1000000000u)};
    pthread_cond_timedwait(cv, mu, &ts);
}

static void bump(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static void q_push(queue *q, bitem *x)
{
    x->next = NULL;
    if (q->tail)
        q->tail->next = x;
    else
        q->head = x;
    q->tail = x;
    q->count++;
}

static bitem *q_pop(queue *q)
{
    bitem *x = q->head;
    if (!x)
        return NULL;
    q->head = x->next;
    if (!q->head)
        q->tail = NULL;
    q->count--;
    x->next = NULL;
    return x;
}

static void item_fail(bitem *x, fw_err code, const char *msg)
{
    x->it.status = code;
    snprintf(x->it.message, sizeof x->it.message, "%s", msg);
}

/* Options that change what the detector returns; items batched together must agree. */
static bool same_detect_opts(const fw_analyze_opts *a, const fw_analyze_opts *b)
{
    return a->min_score == b->min_score && a->max_faces == b->max_faces &&
           a->min_face_size == b->min_face_size &&
           (a->quality_action == FW_QUALITY_ANNOTATE) == (b->quality_action == FW_QUALITY_ANNOTATE);
}

static void mark_started(job *j, uint64_t t)
{
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&j->start_ns, &zero, t);
}

/* True when the job's items end in an embedder run (if they have faces). */
static bool wants_embeddings(const job *j)
{
    return j->desc.kind == FW_JOB_EMBED_CROPS || j->desc.kind == FW_JOB_EMBED_IMAGES ||
           (j->desc.kind == FW_JOB_ANALYZE && j->desc.opts.embed);
}

/* True when an item of j at `step` may still join the embedder queue later. */
static bool feeds_embedder(const job *j, unsigned step)
{
    return (step == STEP_DECODE || step == STEP_DETECT || step == STEP_PREPARE ||
            step == STEP_CROP) &&
           wants_embeddings(j);
}

/* True while the decoded images held leave room to decode another. */
static bool decode_admitted(const fw_batcher *b)
{
    return atomic_load_explicit(&b->decoded_bytes, memory_order_relaxed) < b->cfg.max_decoded_bytes;
}

/* Items that may still join the detector queue soon: those being decoded, and those
 * queued for decoding unless the memory bound holds them back; mu held. */
static size_t detect_upstream(const fw_batcher *b)
{
    return b->decoding + (decode_admitted(b) ? b->cpu_q[STEP_DECODE].count : 0);
}

/* Wakes a model thread whose queue holds work that nothing else can join any more, so it
 * runs now instead of at its batch deadline; mu held. */
static void poke(fw_batcher *b)
{
    if (b->det_q.count && detect_upstream(b) == 0)
        pthread_cond_signal(&b->det_cv);
    if (b->emb_waiting && b->emb_up == 0)
        pthread_cond_signal(&b->emb_cv);
}

/* Charges x's freshly decoded image to the memory bound. */
static void charge_image(fw_batcher *b, bitem *x)
{
    const fw_image *img = x->it.img;
    x->img_bytes = img ? (size_t)img->width * (size_t)img->height * 3 + sizeof *img : 0;
    size_t now = atomic_fetch_add(&b->decoded_bytes, x->img_bytes) + x->img_bytes;
    size_t peak = atomic_load(&b->decoded_peak);
    while (now > peak && !atomic_compare_exchange_weak(&b->decoded_peak, &peak, now))
        ;
}

/* Frees x's decoded image and releases its charge. */
static void drop_image(fw_batcher *b, bitem *x)
{
    fw_image_free(x->it.img);
    x->it.img = NULL;
    if (x->img_bytes) {
        atomic_fetch_sub(&b->decoded_bytes, x->img_bytes);
        x->img_bytes = 0;
    }
}

/* Puts x where x->step says, moving it in the upstream counts; called with mu held. */
static void route(fw_batcher *b, bitem *x)
{
    if (feeds_embedder(x->job, x->counted))
        b->emb_up--;
    x->counted = x->step;
    if (feeds_embedder(x->job, x->step))
        b->emb_up++;
    if (x->step < STEP__CPU) {
        q_push(&b->cpu_q[x->step], x);
        pthread_cond_signal(&b->cpu_cv);
    } else if (x->step == STEP_DETECT) {
        x->enq_ns = now_ns();
        q_push(&b->det_q, x);
        if (b->det_q.count == 1 || b->det_q.count >= (size_t)b->cfg.max_batch_images)
            pthread_cond_signal(&b->det_cv);
    } else {
        x->enq_ns = now_ns();
        q_push(&b->emb_q, x);
        size_t was = b->emb_waiting;
        b->emb_waiting += x->n_faces - x->emb_next;
        if (was == 0 || b->emb_waiting >= (size_t)b->cfg.max_batch_faces)
            pthread_cond_signal(&b->emb_cv);
    }
    poke(b);
}

/* ------------------------------------------------------------------------------------ */
/* completion                                                                           */

static void complete_job(fw_batcher *b, job *j)
{
    uint64_t end = now_ns();
    const size_t n = j->desc.n;
    pthread_mutex_lock(&b->mu);
    if (j->prev)
        j->prev->next = j->next;
    else
        b->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    /* capacity is released before the callback so that a client answered by it can
     * submit again at once */
    if (atomic_fetch_sub(&b->in_system, n) == n && b->trim_delay_ns) {
        b->trim_pending = true; /* a CPU thread trims once the batcher stays idle */
        b->idle_since_ns = end;
        pthread_cond_signal(&b->cpu_cv);
    }
    pthread_mutex_unlock(&b->mu);
    bump(&b->jobs_completed, 1);

    if (b->cfg.on_job_done) {
        uint64_t start = atomic_load(&j->start_ns);
        double wait = start > j->submit_ns ? (double)(start - j->submit_ns) / 1e9 : 0.0;
        b->cfg.on_job_done(b->cfg.hook_user, wait, (double)(end - j->submit_ns) / 1e9, n,
                           atomic_load(&j->faces));
    }
    fw_batcher_done_fn done = j->desc.done;
    void *user = j->desc.user;
    fw_result *results = j->desc.results;
    free(j);
    done(user, results, n);

    pthread_mutex_lock(&b->mu);
    if (--b->live_jobs == 0)
        pthread_cond_broadcast(&b->idle_cv);
    pthread_mutex_unlock(&b->mu);
}

static void item_done(fw_batcher *b, job *j)
{
    if (atomic_fetch_sub_explicit(&j->remaining, 1, memory_order_acq_rel) == 1)
        complete_job(b, j);
}

/* Releases what x holds; its result must be written. x may be gone afterwards. */
static void item_release(fw_batcher *b, bitem *x, const fw_result *res)
{
    job *j = x->job;
    if (x->it.dets == &x->crop_det)
        x->it.dets = NULL;
    drop_image(b, x);
    fw_item_clear(&x->it);
    free(x->chw);
    x->chw = x->emb = NULL;
    x->finished = true;
    bump(&b->images, 1);
    if (res->status == FW_OK) {
        atomic_fetch_add(&j->faces, res->n_faces);
        bump(&b->faces, res->n_faces);
    } else {
        bump(&b->image_errors, 1);
    }
    item_done(b, j);
}

static void finish_item(fw_batcher *b, bitem *x)
{
    job *j = x->job;
    fw_result *res = &j->desc.results[x - j->items];
    const float *emb = x->it.status == FW_OK && x->n_faces ? x->emb : NULL;
    fw_pipeline_finish(b->eng, &x->it, emb, res); /* NOMEM is reported in res */
    item_release(b, x, res);
}

static void cancel_item(fw_batcher *b, bitem *x)
{
    job *j = x->job;
    fw_result *res = &j->desc.results[x - j->items];
    memset(res, 0, sizeof *res);
    res->status = FW_ERR_UNAVAILABLE;
    snprintf(res->message, sizeof res->message, "the worker shut down before this image ran");
    item_release(b, x, res);
}

/* ------------------------------------------------------------------------------------ */
/* CPU pool                                                                             */

/* True (and x failed with UNAVAILABLE) when nobody waits for x's job any more. */
static bool abandoned(bitem *x)
{
    const fw_batcher_job *d = &x->job->desc;
    if (!d->cancelled || !d->cancelled(d->user))
        return false;
    item_fail(x, FW_ERR_UNAVAILABLE, "the request was abandoned");
    return true;
}

static bitem *step_decode(fw_batcher *b, bitem *x)
{
    if (abandoned(x) || fw_pipeline_decode(b->eng, &x->it, b->cfg.stage_times) != FW_OK) {
        finish_item(b, x);
        return NULL;
    }
    charge_image(b, x);
    x->step = STEP_DETECT;
    return x;
}

static bool alloc_faces(fw_batcher *b, bitem *x, size_t n)
{
    x->chw = malloc(n * (b->per + b->dim) * sizeof *x->chw);
    if (!x->chw)
        return false;
    x->emb = x->chw + n * b->per;
    x->n_faces = n;
    x->emb_next = x->emb_done = 0;
    return true;
}

/* Quality, pose and crops of an item out of the detector (analyze and detect jobs). */
static void step_quality(fw_batcher *b, bitem *x)
{
    fw_job_kind k = x->job->desc.kind;
    if (k == FW_JOB_ANALYZE || k == FW_JOB_DETECT)
        fw_pipeline_quality(b->eng, &x->it, &x->job->desc.opts, b->cfg.stage_times);
}

static bitem *step_prepare(fw_batcher *b, bitem *x)
{
    fw_error e;
    fw_error_clear(&e);
    if (!abandoned(x))
        step_quality(b, x); /* may drop faces or fail the item */
    if (x->it.status != FW_OK || x->it.n_dets == 0) {
        /* failed, abandoned or left without a face: skips alignment and the embedder */
    } else if (!alloc_faces(b, x, x->it.n_dets)) {
        item_fail(x, FW_ERR_NOMEM, "out of memory");
    } else {
        fw_err rc = fw_pipeline_embed_prepare(b->eng, &x->it, x->chw, b->cfg.stage_times, &e);
        if (rc)
            item_fail(x, rc, e.message);
    }
    /* the detection image is not needed any more */
    drop_image(b, x);
    if (x->it.status != FW_OK || x->it.n_dets == 0) {
        finish_item(b, x);
        return NULL;
    }
    x->step = STEP_EMBED;
    return x;
}

static bitem *step_crop(fw_batcher *b, bitem *x)
{
    const fw_pack_model *emb = b->embedder;
    const uint8_t *rgb = x->it.data;
    fw_image *img = NULL;
    if (emb->input_w != FW_ALIGNED_SIZE || emb->input_h != FW_ALIGNED_SIZE) {
        item_fail(x, FW_ERR_UNSUPPORTED, "the embedder does not take 112x112 crops");
    } else if (x->job->desc.kind == FW_JOB_EMBED_IMAGES) {
        /* an encoded image of an aligned crop: decode it here, on the CPU pool */
        fw_error e;
        uint64_t t0 = now_ns();
        fw_err rc = fw_image_decode(x->it.data, x->it.len, &b->decode_opts, &img, &e);
        if (b->cfg.stage_times)
            atomic_fetch_add(&b->cfg.stage_times->decode_ns, now_ns() - t0);
        if (rc) {
            item_fail(x, rc, e.message);
        } else if (img->width != FW_ALIGNED_SIZE || img->height != FW_ALIGNED_SIZE) {
            char msg[96];
            snprintf(msg, sizeof msg, "expected a 112x112 aligned face crop, got %dx%d", img->width,
                     img->height);
            item_fail(x, FW_ERR_INVALID_ARGUMENT, msg);
        } else {
            rgb = img->pixels;
        }
    } else if (!x->it.data || x->it.len != CROP_BYTES) {
        char msg[96];
        snprintf(msg, sizeof msg, "a crop must be %zu bytes (112x112 RGB), got %zu", CROP_BYTES,
                 x->it.len);
        item_fail(x, x->it.len ? FW_ERR_INVALID_ARGUMENT : FW_ERR_EMPTY_INPUT, msg);
    }
    if (x->it.status == FW_OK && !alloc_faces(b, x, 1))
        item_fail(x, FW_ERR_NOMEM, "out of memory");
    if (x->it.status != FW_OK) {
        fw_image_free(img);
        finish_item(b, x);
        return NULL;
    }
    uint64_t t0 = now_ns();
    fw_pre_rgb_to_chw(rgb, FW_ALIGNED_SIZE, FW_ALIGNED_SIZE, emb->norm.mean, emb->norm.std, x->chw);
    fw_image_free(img);
    if (b->cfg.stage_times)
        atomic_fetch_add(&b->cfg.stage_times->preprocess_ns, now_ns() - t0);
    x->it.orig_w = x->it.orig_h = FW_ALIGNED_SIZE;
    fw_det *d = &x->crop_det;
    memset(d, 0, sizeof *d);
    d->box[2] = d->box[3] = (float)FW_ALIGNED_SIZE;
    d->score = 1.0f;
    memcpy(d->kps, fw_arcface_template, sizeof d->kps);
    d->has_kps = 1;
    x->it.dets = d;
    x->it.n_dets = 1;
    x->step = STEP_EMBED;
    return x;
}

/* Runs x's CPU step; returns x when it moves on to another queue, NULL when finished. */
static bitem *run_cpu_step(fw_batcher *b, bitem *x)
{
    switch (x->step) {
    case STEP_DECODE:
        return step_decode(b, x);
    case STEP_PREPARE:
        return step_prepare(b, x);
    case STEP_CROP:
        return step_crop(b, x);
    default:
        step_quality(b, x); /* no-op after step_prepare or for an item that failed */
        finish_item(b, x);
        return NULL;
    }
}

/* Gives freed heap memory back to the system (glibc keeps it otherwise). */
static void trim_memory(fw_batcher *b)
{
#ifdef __GLIBC__
    malloc_trim(0);
    bump(&b->memory_trims, 1);
    FW_DEBUG("batcher", "idle: memory trimmed", "decoded_bytes=%zu",
             atomic_load(&b->decoded_bytes));
#else
    (void)b;
#endif
}

/* With no CPU work: waits for some, or trims memory once the batcher has stayed idle for
 * trim_delay_ns; mu held (released while trimming). */
static void cpu_idle(fw_batcher *b)
{
    if (!b->trim_pending || atomic_load(&b->in_system) > 0) {
        pthread_cond_wait(&b->cpu_cv, &b->mu);
        return;
    }
    uint64_t due = b->idle_since_ns + b->trim_delay_ns;
    if (now_ns() < due) {
        wait_until(&b->cpu_cv, &b->mu, due);
        return;
    }
    b->trim_pending = false;
    pthread_mutex_unlock(&b->mu);
    trim_memory(b);
    pthread_mutex_lock(&b->mu);
}

static void *cpu_main(void *arg)
{
    worker *w = arg;
    fw_batcher *b = w->b;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (b->stop)
            break;
        /* nearest to completion first; no new decode while decoded images fill the bound */
        bitem *x = NULL;
        for (int p = 0; p < STEP__CPU && !x; p++)
            if (p != STEP_DECODE || decode_admitted(b))
                x = q_pop(&b->cpu_q[p]);
        if (!x) {
            cpu_idle(b);
            continue;
        }
        const bool decode = x->step == STEP_DECODE;
        const bool upstream = feeds_embedder(x->job, x->counted);
        if (decode)
            b->decoding++;
        pthread_mutex_unlock(&b->mu);
        bitem *next = run_cpu_step(b, x); /* x may be gone when NULL */
        pthread_mutex_lock(&b->mu);
        if (decode)
            b->decoding--;
        if (next) {
            route(b, next);
        } else {
            if (upstream)
                b->emb_up--;
            poke(b);
        }
        /* this step may have released decoded images: let a waiting thread decode */
        if (b->cpu_q[STEP_DECODE].count && decode_admitted(b))
            pthread_cond_signal(&b->cpu_cv);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* detector                                                                             */

/* Takes up to max_batch_images items with the oldest item's options; mu held. */
static size_t take_detect_batch(fw_batcher *b, bitem **batch, fw_analyze_opts *opts)
{
    queue *q = &b->det_q;
    const size_t max = (size_t)b->cfg.max_batch_images;
    *opts = q->head->job->desc.opts;
    size_t n = 0;
    bitem *prev = NULL, *cur = q->head;
    while (cur && n < max) {
        bitem *nx = cur->next;
        if (same_detect_opts(&cur->job->desc.opts, opts)) {
            if (prev)
                prev->next = nx;
            else
                q->head = nx;
            if (q->tail == cur)
                q->tail = prev;
            q->count--;
            cur->next = NULL;
            batch[n++] = cur;
        } else {
            prev = cur;
        }
        cur = nx;
    }
    return n;
}

static void run_detect_batch(fw_batcher *b, worker *w, size_t n, const fw_analyze_opts *opts)
{
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        w->items[i] = &w->batch[i]->it;
        mark_started(w->batch[i]->job, t0);
    }
    fw_error e;
    fw_error_clear(&e);
    fw_err rc = fw_pipeline_detect(b->eng, w->items, n, opts, b->cfg.stage_times, &e);
    double secs = (double)(now_ns() - t0) / 1e9;
    bump(&b->detect_batches, 1);
    bump(&b->detect_images, n);
    if (b->cfg.on_batch)
        b->cfg.on_batch(b->cfg.hook_user, FW_BATCH_DETECT, n, secs);
    if (rc) {
        FW_WARN("batcher", "detector run failed", "batch=%zu error=\"%s\"", n, e.message);
        for (size_t i = 0; i < n; i++)
            item_fail(w->batch[i], FW_ERR_INFERENCE, e.message);
    }
    for (size_t i = 0; i < n; i++) {
        bitem *x = w->batch[i];
        bool embed = x->job->desc.kind == FW_JOB_ANALYZE && x->job->desc.opts.embed;
        x->step = x->it.status == FW_OK && x->it.n_dets > 0 && embed ? STEP_PREPARE : STEP_FINISH;
    }
}

static void *detect_main(void *arg)
{
    worker *w = arg;
    fw_batcher *b = w->b;
    const size_t max = (size_t)b->cfg.max_batch_images;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (b->stop)
            break;
        queue *q = &b->det_q;
        if (q->count == 0) {
            pthread_cond_wait(&b->det_cv, &b->mu);
            continue;
        }
        /* wait for a fuller batch only while more images are on their way */
        if (q->count < max && b->accepting && detect_upstream(b) > 0) {
            uint64_t deadline = q->head->enq_ns + b->delay_ns;
            if (now_ns() < deadline) {
                wait_until(&b->det_cv, &b->mu, deadline);
                continue;
            }
        }
        fw_analyze_opts opts;
        size_t n = take_detect_batch(b, w->batch, &opts);
        if (q->count)
            pthread_cond_signal(&b->det_cv); /* someone must watch the new oldest item */
        pthread_mutex_unlock(&b->mu);
        run_detect_batch(b, w, n, &opts);
        pthread_mutex_lock(&b->mu);
        for (size_t i = 0; i < n; i++)
            route(b, w->batch[i]);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* embedder                                                                             */

/* Takes up to max_batch_faces faces, oldest first, splitting an item when it does not
 * fit whole; mu held. With share_idle_faces and other embedder threads idle, takes only
 * this thread's even share of the waiting faces and leaves the rest to them, so that one
 * request's faces run on several cores at low load; under load no thread is idle and
 * batches stay full. */
static size_t take_embed_batch(fw_batcher *b, segment *segs, size_t *n_faces)
{
    size_t max = (size_t)b->cfg.max_batch_faces;
    if (b->cfg.share_idle_faces) {
        size_t share = (b->emb_waiting + b->emb_idle) / (b->emb_idle + 1);
        if (share < max)
            max = share;
    }
    size_t nseg = 0, m = 0;
    while (m < max && b->emb_q.head) {
        bitem *x = b->emb_q.head;
        size_t left = x->n_faces - x->emb_next;
        size_t take = left < max - m ? left : max - m;
        segs[nseg++] = (segment){x, x->emb_next, take};
        x->emb_next += take;
        m += take;
        if (x->emb_next == x->n_faces)
            q_pop(&b->emb_q);
    }
    b->emb_waiting -= m;
    *n_faces = m;
    return nseg;
}

/* Runs the embedder over the segments; returns the run's status (message in e). */
static fw_err run_embed_batch(fw_batcher *b, worker *w, size_t nseg, size_t m, fw_error *e)
{
    uint64_t t0 = now_ns();
    for (size_t s = 0; s < nseg; s++)
        mark_started(w->segs[s].item->job, t0);
    const float *in;
    float *out;
    if (nseg == 1) {
        in = w->segs[0].item->chw + w->segs[0].first * b->per;
        out = w->segs[0].item->emb + w->segs[0].first * b->dim;
    } else {
        size_t off = 0;
        for (size_t s = 0; s < nseg; s++) {
            const segment *g = &w->segs[s];
            memcpy(w->chw + off * b->per, g->item->chw + g->first * b->per,
                   g->count * b->per * sizeof(float));
            off += g->count;
        }
        in = w->chw;
        out = w->emb;
    }
    fw_err rc = fw_pipeline_embed_run(b->eng, in, m, out, b->cfg.stage_times, e);
    double secs = (double)(now_ns() - t0) / 1e9;
    bump(&b->embed_batches, 1);
    bump(&b->embed_faces, m);
    if (b->cfg.on_batch)
        b->cfg.on_batch(b->cfg.hook_user, FW_BATCH_EMBED, m, secs);
    if (rc) {
        FW_WARN("batcher", "embedder run failed", "batch=%zu error=\"%s\"", m, e->message);
        return rc;
    }
    if (nseg > 1) {
        size_t off = 0;
        for (size_t s = 0; s < nseg; s++) {
            const segment *g = &w->segs[s];
            memcpy(g->item->emb + g->first * b->dim, w->emb + off * b->dim,
                   g->count * b->dim * sizeof(float));
            off += g->count;
        }
    }
    return FW_OK;
}

static void *embed_main(void *arg)
{
    worker *w = arg;
    fw_batcher *b = w->b;
    const size_t max = (size_t)b->cfg.max_batch_faces;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (b->stop)
            break;
        if (b->emb_waiting == 0) {
            b->emb_idle++;
            pthread_cond_wait(&b->emb_cv, &b->mu);
            b->emb_idle--;
            continue;
        }
        /* wait for a fuller batch only while more faces are on their way */
        if (b->emb_waiting < max && b->accepting && b->emb_up > 0) {
            uint64_t deadline = b->emb_q.head->enq_ns + b->delay_ns;
            if (now_ns() < deadline) {
                wait_until(&b->emb_cv, &b->mu, deadline);
                continue;
            }
        }
        size_t m;
        size_t nseg = take_embed_batch(b, w->segs, &m);
        if (b->emb_waiting)
            pthread_cond_signal(&b->emb_cv);
        pthread_mutex_unlock(&b->mu);
        fw_error e;
        fw_error_clear(&e);
        fw_err rc = run_embed_batch(b, w, nseg, m, &e);
        pthread_mutex_lock(&b->mu);
        for (size_t s = 0; s < nseg; s++) {
            bitem *x = w->segs[s].item;
            if (rc)
                item_fail(x, FW_ERR_INFERENCE, e.message);
            x->emb_done += w->segs[s].count;
            if (x->emb_done == x->n_faces) {
                x->step = STEP_FINISH;
                route(b, x);
            }
        }
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* lifetime                                                                             */

void fw_batcher_config_init(fw_batcher_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->decode_threads = 2;
    cfg->detect_threads = 1;
    cfg->embed_threads = 1;
    cfg->max_batch_images = 16;
    cfg->max_batch_faces = 32;
    cfg->max_queue_delay_us = 2000;
    cfg->max_queue_images = 256;
    cfg->max_decoded_bytes = (size_t)512 << 20;
    cfg->idle_trim_ms = 1000;
    cfg->share_idle_faces = true;
}

static void stop_and_join(fw_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    b->accepting = false;
    b->stop = true;
    pthread_cond_broadcast(&b->cpu_cv);
    pthread_cond_broadcast(&b->det_cv);
    pthread_cond_broadcast(&b->emb_cv);
    pthread_mutex_unlock(&b->mu);
    for (size_t i = 0; i < b->n_workers; i++)
        if (b->workers[i].started)
            pthread_join(b->workers[i].tid, NULL);
}

static void destroy(fw_batcher *b)
{
    for (size_t i = 0; b->workers && i < b->n_workers; i++) {
        worker *w = &b->workers[i];
        free(w->items);
        free(w->batch);
        free(w->segs);
        free(w->chw);
        free(w->emb);
    }
    free(b->workers);
    pthread_cond_destroy(&b->cpu_cv);
    pthread_cond_destroy(&b->det_cv);
    pthread_cond_destroy(&b->emb_cv);
    pthread_cond_destroy(&b->idle_cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

static bool worker_scratch(fw_batcher *b, worker *w)
{
    if (w->role == ROLE_DETECT) {
        size_t n = (size_t)b->cfg.max_batch_images;
        w->items = malloc(n * sizeof *w->items);
        w->batch = malloc(n * sizeof *w->batch);
        return w->items && w->batch;
    }
    if (w->role == ROLE_EMBED) {
        size_t n = (size_t)b->cfg.max_batch_faces;
        w->segs = malloc(n * sizeof *w->segs);
        w->chw = malloc(n * b->per * sizeof *w->chw);
        w->emb = malloc(n * b->dim * sizeof *w->emb);
        return w->segs && w->chw && w->emb;
    }
    return true;
}

static fw_err init_sync(fw_batcher *b, fw_error *err)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca))
        return fw_error_set(err, FW_ERR_INTERNAL, "pthread_condattr_init failed");
    int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_t *cvs[4] = {&b->cpu_cv, &b->det_cv, &b->emb_cv, &b->idle_cv};
    int made = 0;
    while (rc == 0 && made < 4 && (rc = pthread_cond_init(cvs[made], &ca)) == 0)
        made++;
    pthread_condattr_destroy(&ca);
    if (rc == 0)
        rc = pthread_mutex_init(&b->mu, NULL);
    if (rc) {
        for (int i = 0; i < made; i++)
            pthread_cond_destroy(cvs[i]);
        return fw_error_set(err, FW_ERR_INTERNAL, "cannot create batcher locks: %s", strerror(rc));
    }
    return FW_OK;
}

fw_err fw_batcher_new(fw_engine *eng, const fw_batcher_config *cfg, fw_batcher **out, fw_error *err)
{
    if (!out || !eng)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_batcher_new: NULL argument");
    *out = NULL;
    fw_batcher_config defaults;
    fw_batcher_config_init(&defaults);
    fw_batcher *b = calloc(1, sizeof *b);
    if (!b)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    b->cfg = cfg ? *cfg : defaults;
    if (b->cfg.decode_threads <= 0)
        b->cfg.decode_threads = defaults.decode_threads;
    if (b->cfg.detect_threads <= 0)
        b->cfg.detect_threads = defaults.detect_threads;
    if (b->cfg.embed_threads <= 0)
        b->cfg.embed_threads = defaults.embed_threads;
    if (b->cfg.max_batch_images <= 0)
        b->cfg.max_batch_images = defaults.max_batch_images;
    if (b->cfg.max_batch_faces <= 0)
        b->cfg.max_batch_faces = defaults.max_batch_faces;
    if (b->cfg.max_queue_images == 0)
        b->cfg.max_queue_images = defaults.max_queue_images;
    if (b->cfg.max_decoded_bytes == 0)
        b->cfg.max_decoded_bytes = defaults.max_decoded_bytes;
    if (b->cfg.idle_trim_ms == 0)
        b->cfg.idle_trim_ms = defaults.idle_trim_ms;
    b->trim_delay_ns = b->cfg.idle_trim_ms < 0 ? 0 : (uint64_t)b->cfg.idle_trim_ms * 1000000u;
    b->eng = eng;
    b->delay_ns = (uint64_t)b->cfg.max_queue_delay_us * 1000u;
    b->per = fw_pipeline_embed_input_size(eng);
    b->dim = fw_engine_embedding_dim(eng);
    b->embedder = &fw__engine_pack(eng)->embedder;
    b->decode_opts = *fw__engine_decode_opts(eng);
    b->accepting = true;
    fw_err rc = init_sync(b, err);
    if (rc) {
        free(b);
        return rc;
    }
    b->n_workers = (size_t)b->cfg.decode_threads + (size_t)b->cfg.detect_threads +
                   (size_t)b->cfg.embed_threads;
    b->workers = calloc(b->n_workers, sizeof *b->workers);
    if (!b->workers) {
        destroy(b);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < b->n_workers; i++) {
        worker *w = &b->workers[i];
        w->b = b;
        w->role = i < (size_t)b->cfg.decode_threads                             ? ROLE_CPU
                  : i < (size_t)(b->cfg.decode_threads + b->cfg.detect_threads) ? ROLE_DETECT
                                                                                : ROLE_EMBED;
        if (!worker_scratch(b, w)) {
            stop_and_join(b);
            destroy(b);
            return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
        }
        void *(*fn)(void *) = w->role == ROLE_CPU      ? cpu_main
                              : w->role == ROLE_DETECT ? detect_main
                                                       : embed_main;
        int e = pthread_create(&w->tid, NULL, fn, w);
        if (e) {
            stop_and_join(b);
            destroy(b);
            return fw_error_set(err, FW_ERR_INTERNAL, "cannot start a batcher thread: %s",
                                strerror(e));
        }
        w->started = true;
    }
    FW_INFO("batcher", "started",
            "decode_threads=%d detect_threads=%d embed_threads=%d max_batch_images=%d "
            "max_batch_faces=%d max_queue_delay_us=%u max_queue_images=%zu "
            "max_decoded_mb=%zu idle_trim_ms=%d share_idle_faces=%s",
            b->cfg.decode_threads, b->cfg.detect_threads, b->cfg.embed_threads,
            b->cfg.max_batch_images, b->cfg.max_batch_faces, (unsigned)b->cfg.max_queue_delay_us,
            b->cfg.max_queue_images, b->cfg.max_decoded_bytes >> 20, b->cfg.idle_trim_ms,
            b->cfg.share_idle_faces ? "true" : "false");
    *out = b;
    return FW_OK;
}

fw_err fw_batcher_submit(fw_batcher *b, const fw_batcher_job *job_in, fw_error *err)
{
    if (!b || !job_in || !job_in->done || !job_in->n || !job_in->inputs || !job_in->results)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "fw_batcher_submit: NULL argument or no images");
    if (job_in->kind != FW_JOB_ANALYZE && job_in->kind != FW_JOB_DETECT &&
        job_in->kind != FW_JOB_EMBED_CROPS && job_in->kind != FW_JOB_EMBED_IMAGES)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_batcher_submit: unknown job kind");
    const size_t n = job_in->n, max = b->cfg.max_queue_images;
    /* cheap early refusal; the check under the lock below is the one that counts */
    if (n > max || atomic_load(&b->in_system) + n > max) {
        bump(&b->jobs_rejected, 1);
        return fw_error_set(err, FW_ERR_BUSY, "queue full (%zu images, limit %zu)", n, max);
    }
    job *j = calloc(1, sizeof *j + n * sizeof(bitem));
    if (!j)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    j->desc = *job_in;
    if (j->desc.kind == FW_JOB_DETECT)
        j->desc.opts.embed = false;
    atomic_init(&j->remaining, n);
    atomic_init(&j->faces, 0);
    atomic_init(&j->start_ns, 0);
    const unsigned char first =
        j->desc.kind == FW_JOB_EMBED_CROPS || j->desc.kind == FW_JOB_EMBED_IMAGES ? STEP_CROP
                                                                                  : STEP_DECODE;
    for (size_t i = 0; i < n; i++) {
        bitem *x = &j->items[i];
        fw_item_init(&x->it, job_in->inputs[i].data, job_in->inputs[i].len);
        x->job = j;
        x->step = x->counted = first;
    }
    j->submit_ns = now_ns();

    pthread_mutex_lock(&b->mu);
    fw_err rc = FW_OK;
    if (!b->accepting)
        rc = FW_ERR_UNAVAILABLE;
    else if (atomic_load(&b->in_system) + n > max)
        rc = FW_ERR_BUSY;
    if (rc == FW_OK) {
        atomic_fetch_add(&b->in_system, n);
        b->live_jobs++;
        j->next = b->jobs;
        if (b->jobs)
            b->jobs->prev = j;
        b->jobs = j;
        for (size_t i = 0; i < n; i++)
            q_push(&b->cpu_q[first], &j->items[i]);
        if (wants_embeddings(j))
            b->emb_up += n;
        if (n >= (size_t)b->cfg.decode_threads)
            pthread_cond_broadcast(&b->cpu_cv);
        else
            for (size_t i = 0; i < n; i++)
                pthread_cond_signal(&b->cpu_cv);
    }
    pthread_mutex_unlock(&b->mu);
    if (rc == FW_ERR_UNAVAILABLE) {
        free(j);
        return fw_error_set(err, rc, "the worker is draining");
    }
    if (rc == FW_ERR_BUSY) {
        free(j);
        bump(&b->jobs_rejected, 1);
        return fw_error_set(err, rc, "queue full (%zu images, limit %zu)", n, max);
    }
    bump(&b->jobs_submitted, 1);
    return FW_OK;
}

fw_err fw_batcher_drain(fw_batcher *b, int timeout_ms)
{
    if (!b)
        return FW_OK;
    uint64_t deadline = timeout_ms < 0 ? 0 : now_ns() + (uint64_t)timeout_ms * 1000000u;
    pthread_mutex_lock(&b->mu);
    if (b->accepting) {
        b->accepting = false;
        /* nothing new can join a batch: let the model threads run what they hold */
        pthread_cond_broadcast(&b->det_cv);
        pthread_cond_broadcast(&b->emb_cv);
    }
    while (b->live_jobs > 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&b->idle_cv, &b->mu);
        } else {
            if (now_ns() >= deadline)
                break;
            wait_until(&b->idle_cv, &b->mu, deadline);
        }
    }
    fw_err rc = b->live_jobs ? FW_ERR_TIMEOUT : FW_OK;
    pthread_mutex_unlock(&b->mu);
    return rc;
}

size_t fw_batcher_queue_depth(fw_batcher *b)
{
    return b ? atomic_load(&b->in_system) : 0;
}

void fw_batcher_get_stats(fw_batcher *b, fw_batcher_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    out->jobs_in_flight = b->live_jobs;
    out->draining = !b->accepting;
    pthread_mutex_unlock(&b->mu);
    out->queue_depth = atomic_load(&b->in_system);
    out->jobs_submitted = atomic_load(&b->jobs_submitted);
    out->jobs_rejected = atomic_load(&b->jobs_rejected);
    out->jobs_completed = atomic_load(&b->jobs_completed);
    out->images = atomic_load(&b->images);
    out->image_errors = atomic_load(&b->image_errors);
    out->faces = atomic_load(&b->faces);
    out->detect_batches = atomic_load(&b->detect_batches);
    out->detect_images = atomic_load(&b->detect_images);
    out->embed_batches = atomic_load(&b->embed_batches);
    out->embed_faces = atomic_load(&b->embed_faces);
    out->decoded_bytes = atomic_load(&b->decoded_bytes);
    out->decoded_bytes_peak = atomic_load(&b->decoded_peak);
    out->memory_trims = atomic_load(&b->memory_trims);
}

void fw_batcher_free(fw_batcher *b)
{
    if (!b)
        return;
    stop_and_join(b);
    /* every thread is gone: whatever is left sits in a queue; complete it */
    size_t cancelled = 0;
    job *j = b->jobs;
    while (j) {
        job *next = j->next;
        size_t left = atomic_load(&j->remaining);
        for (size_t i = 0; left > 0; i++) {
            if (j->items[i].finished)
                continue;
            left--; /* the last cancel_item frees j: test `left` before touching j again */
            cancel_item(b, &j->items[i]);
            cancelled++;
        }
        j = next;
    }
    if (cancelled)
        FW_WARN("batcher", "stopped with work pending", "images_cancelled=%zu", cancelled);
    destroy(b);
}
