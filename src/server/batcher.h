/* Internal: the worker's batcher (Triton-style dynamic batching across requests).
 *
 * A job is one request's worth of images. Its items move through stages:
 *
 *   CPU pool (decode_threads)   decode; align + embedder input; copy results out
 *   detector thread             gathers decoded items of ANY job, one detector run
 *   embedder thread             gathers prepared faces of ANY job, one embedder run
 *
 * A model thread runs at once when no more items can join its batch soon: nothing else is
 * on its way to that stage (for the detector: no image being decoded or queued for
 * decoding; for the embedder: no item of a job that wants embeddings still in decode,
 * detection, alignment or crop preparation), or it holds max_batch_* items (faces), or
 * while draining. Only while more work is on its way does it wait, and then at most until
 * its oldest item has waited max_queue_delay_us. So a lone request is never delayed, and
 * items arriving together still share a run. Items with no faces skip the embedder.
 * With share_idle_faces, an embedder thread that finds other embedder threads idle takes
 * only its even share of the waiting faces, so a lone image's faces run on several cores; under
 * load every thread is busy and batches stay full.
 *
 * Capacity is bounded by max_queue_images (images accepted and not yet completed, across
 * all stages): a submit that would exceed it fails with FW_ERR_BUSY at once, never blocks.
 * Memory is bounded by max_decoded_bytes: the CPU pool starts decoding an image only while
 * the decoded images held (waiting for or in detection) take less than that; otherwise the
 * image waits in the decode queue (no error) until detection releases some. The bound can
 * be passed by at most decode_threads images (a decode is admitted before its size is
 * known), and one image larger than the bound still runs alone. When the batcher has been
 * idle for idle_trim_ms it returns freed heap memory to the system (glibc malloc_trim).
 *
 *   fw_batcher_config cfg; fw_batcher_config_init(&cfg);
 *   fw_batcher *b; fw_batcher_new(eng, &cfg, &b, &err);
 *   fw_batcher_job job = {.kind = FW_JOB_ANALYZE, .inputs = blobs, .n = n,
 *                         .results = results, .done = on_done, .user = req};
 *   fw_analyze_opts_init(&job.opts);
 *   if (fw_batcher_submit(b, &job, &err)) ... 503 ...; else on_done fires exactly once
 *   ... fw_batcher_drain(b, 10000); fw_batcher_free(b);
 */
#ifndef FW_SERVER_BATCHER_H
#define FW_SERVER_BATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "facework/facework.h"

struct fw_stage_times; /* core/pipeline.h */

typedef struct fw_batcher fw_batcher;

/* What a job computes. Items whose options (min_score, max_faces, min_face_size) differ
 * never share a detector run, so each job gets exactly what fw_engine_analyze gives.
 * EMBED_CROPS: each input is one aligned crop, 112*112*3 packed RGB bytes (anything else
 * is an item error: INVALID_ARGUMENT, EMPTY_INPUT); its result is 112 x 112 with one face:
 * bbox {0, 0, 112, 112}, score 1, the ArcFace template as landmarks, and the embedding.
 * EMBED_IMAGES: the same, but each input is an encoded image (JPEG/PNG/WebP) of a 112x112
 * aligned crop, decoded on the CPU pool within the engine's limits; a decode failure is
 * that item's error, another size is INVALID_ARGUMENT. */
typedef enum fw_job_kind {
    FW_JOB_ANALYZE = 0,  /* detect + embed (embed skipped when opts.embed is false) */
    FW_JOB_DETECT,       /* detect only: faces carry no embedding */
    FW_JOB_EMBED_CROPS,  /* embed pre-aligned crops (raw RGB) */
    FW_JOB_EMBED_IMAGES, /* embed pre-aligned crops (encoded images) */
} fw_job_kind;

/* Model stage of an on_batch report. */
typedef enum fw_batch_stage { FW_BATCH_DETECT = 0, FW_BATCH_EMBED = 1 } fw_batch_stage;

/* Completion of a job: results[0..n) are the job's results array, every entry filled (the
 * caller clears each with fw_result_clear). Runs on a CPU-pool thread (never on a model
 * thread), or in fw_batcher_free on its caller's thread; keep it short, and do not call
 * fw_batcher_drain or fw_batcher_free from it. */
typedef void (*fw_batcher_done_fn)(void *user, fw_result *results, size_t n);

typedef struct fw_batcher_config {
    int decode_threads;          /* CPU pool: decode, align, finish (default 2) */
    int detect_threads;          /* detector threads, each gathering its own batch (1) */
    int embed_threads;           /* embedder threads (1) */
    bool share_idle_faces;       /* split waiting faces among idle embedder threads (true;
                                    worth it on the CPU, not on one GPU) */
    int max_batch_images;        /* largest detector batch (16) */
    int max_batch_faces;         /* largest embedder batch (32) */
    uint32_t max_queue_delay_us; /* longest an item waits for its batch to fill while more
                                    work is on its way (2000) */
    size_t max_queue_images;     /* images in the system at once (256) */
    size_t max_decoded_bytes;    /* decoded images held at once, bytes (512 MiB; SIZE_MAX:
                                    no bound) */
    int idle_trim_ms;            /* idle this long: give freed memory back (1000; negative:
                                    never) */

    /* Optional hooks for metrics, called on batcher threads (must be thread-safe). */
    void *hook_user;
    /* After each model run: the stage, the number of images (detect) or faces (embed)
     * and the run's wall time. */
    void (*on_batch)(void *user, fw_batch_stage stage, size_t batch_size, double run_seconds);
    /* Before a job's completion callback: time from submit to its first model run (0 when
     * no item reached a model), total time from submit, its images and returned faces. */
    void (*on_job_done)(void *user, double queue_wait_s, double total_s, size_t n_images,
                        size_t n_faces);
    struct fw_stage_times *stage_times; /* optional per-stage time totals (not owned) */
} fw_batcher_config;

/* One request's work. Submit copies this struct; what it points to is not owned. */
typedef struct fw_batcher_job {
    fw_job_kind kind;
    const fw_blob *inputs; /* n encoded images (or crops); array and bytes must stay valid
                              until the completion callback */
    size_t n;              /* >= 1 */
    fw_analyze_opts opts;  /* copied at submit (ignored for EMBED_CROPS) */
    fw_result *results;    /* n entries, overwritten; valid until the callback */
    fw_batcher_done_fn done;
    void *user;
    /* Optional: returns true once nobody waits for the answer (client gone, deadline
     * passed). Checked before each item is decoded and before its faces are aligned and
     * embedded; such items end with FW_ERR_UNAVAILABLE and skip the remaining work (the
     * callback still fires). Called on batcher threads with `user`. */
    bool (*cancelled)(void *user);
} fw_batcher_job;

/* Counters since creation (snapshot; fields read without a common lock). */
typedef struct fw_batcher_stats {
    size_t queue_depth;      /* images accepted and not yet completed */
    size_t jobs_in_flight;   /* accepted jobs whose callback has not returned */
    uint64_t jobs_submitted; /* accepted */
    uint64_t jobs_rejected;  /* FW_ERR_BUSY */
    uint64_t jobs_completed;
    uint64_t images;       /* items completed, whatever their status */
    uint64_t image_errors; /* items completed with status != FW_OK */
    uint64_t faces;        /* faces returned */
    uint64_t detect_batches, detect_images;
    uint64_t embed_batches, embed_faces;
    size_t decoded_bytes;      /* decoded images held now (see max_decoded_bytes) */
    size_t decoded_bytes_peak; /* the most held at once since creation */
    uint64_t memory_trims;     /* times idle memory was given back */
    bool draining;
} fw_batcher_stats;

void fw_batcher_config_init(fw_batcher_config *cfg);

/* Starts the threads. eng is not owned and must outlive the batcher; cfg is copied (NULL:
 * defaults; zero or negative counts and a zero max_decoded_bytes or idle_trim_ms take the
 * defaults). On success *out is owned by the caller (fw_batcher_free). */
fw_err fw_batcher_new(fw_engine *eng, const fw_batcher_config *cfg, fw_batcher **out,
                      fw_error *err);

/* Queues a job; never blocks on the queue. FW_OK: job->done will be called exactly once,
 * with per-item outcomes in job->results (a bad image or a failed model run is an item
 * status, FW_ERR_INFERENCE for the latter). Errors (the callback is then never called):
 * INVALID_ARGUMENT (NULL pointers, n == 0), BUSY (the job's images would exceed
 * max_queue_images; retry later), UNAVAILABLE (draining or shut down), NOMEM.
 * Thread-safe. */
fw_err fw_batcher_submit(fw_batcher *b, const fw_batcher_job *job, fw_error *err);

/* Stops accepting (later submits fail with UNAVAILABLE), runs queued work without waiting
 * for batches to fill, and waits until every accepted job's callback has returned or
 * timeout_ms passed (negative: no limit). Returns FW_OK or FW_ERR_TIMEOUT. Thread-safe. */
fw_err fw_batcher_drain(fw_batcher *b, int timeout_ms);

/* Snapshot of the counters. Thread-safe. */
void fw_batcher_get_stats(fw_batcher *b, fw_batcher_stats *out);

/* Images accepted and not yet completed (for /health and /metrics). Thread-safe. */
size_t fw_batcher_queue_depth(fw_batcher *b);

/* Stops accepting, lets each thread finish the batch or task in hand, joins the threads,
 * then completes every job still pending: its unfinished items get FW_ERR_UNAVAILABLE and
 * its callback fires (exactly once, on the calling thread). NULL is a no-op. No other call
 * on b may be in progress or follow. */
void fw_batcher_free(fw_batcher *b);

#endif
