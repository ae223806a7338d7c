/* facework: the in-process face pipeline (decode, detect, landmarks, align, embed).
 *
 * One fw_engine holds a model pack's ONNX Runtime sessions and serves any number of
 * threads at once. Typical use:
 *
 *   fw_engine_config cfg; fw_engine_config_init(&cfg);
 *   fw_engine *eng; if (fw_engine_new(&cfg, &eng, &err)) ...;
 *   fw_result res[2]; fw_engine_analyze(eng, inputs, 2, NULL, res, &err);
 *   ... res[i].faces[j].embedding ...
 *   fw_result_clear(&res[0]); fw_result_clear(&res[1]); fw_engine_free(eng);
 */
#ifndef FACEWORK_FACEWORK_H
#define FACEWORK_FACEWORK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "facework/error.h"
#include "facework/image.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FW_ALIGNED_SIZE 112 /* aligned face crops are 112 x 112 RGB */

typedef struct fw_engine fw_engine;

/* Model roles within a pack. */
typedef enum fw_role {
    FW_ROLE_DETECTOR = 0,
    FW_ROLE_LANDMARKS,
    FW_ROLE_EMBEDDER,
    FW_ROLE__COUNT
} fw_role;

/* Warm-up at load (fw_engine_config.warmup). */
#define FW_WARMUP_AUTO 0  /* batch 1 on the CPU; every power of two up to max_batch on a GPU */
#define FW_WARMUP_NONE -1 /* none: the first requests pay for lazy initialisation */
#define FW_WARMUP_ONE 1   /* batch 1 only */
#define FW_WARMUP_ALL 2   /* every power of two up to max_batch (and max_batch itself) */

typedef struct fw_engine_config {
    const char *models_dir; /* NULL: FACEWORK_MODELS, else the pack installed by setup */
    const char *provider; /* auto|cpu|cuda|tensorrt|dml|rocm|migraphx|coreml|openvino|webgpu (NULL:
                             auto) */
    /* Per-role provider overrides (NULL: use `provider`), e.g. detection on the CPU and
     * embedding on the GPU. */
    const char *role_provider[FW_ROLE__COUNT];
    int threads;           /* intra-op threads per session; 0: ONNX Runtime's default */
    int device_id;         /* GPU ordinal for GPU providers */
    int max_batch;         /* largest batch one model run takes (0: 64) */
    fw_decode_opts decode; /* byte and pixel limits; min size is chosen by the engine */
    int warmup;            /* FW_WARMUP_* (0: auto) */

    /* GPU providers (CUDA, TensorRT); ignored elsewhere. Zero values are the defaults. */
    size_t gpu_mem_limit;         /* bytes the CUDA arena of each session may hold; 0: none */
    const char *gpu_arena_extend; /* "next_power_of_two" (NULL: default) or "same_as_requested" */
    const char *cudnn_conv_algo;  /* "heuristic" (NULL: default), "exhaustive" or "default" */
    bool gpu_pageable_io;         /* plain runs on pageable buffers instead of pinned host
                                     buffers and outputs bound to pinned memory */
    const char *trt_cache_dir;    /* TensorRT engine and timing caches (kept across restarts);
                                     NULL: $FACEWORK_TRT_CACHE, else ~/.cache/facework/trt */
    bool trt_fp16;                /* let TensorRT use FP16 kernels */

    /* WebGPU (Dawn picks the adapter; device_id must be 0 for it). */
    const char *webgpu_backend; /* "vulkan", "d3d12" (NULL or "default": the platform's) */
    const char *webgpu_power;   /* "high-performance" (NULL: default) or "low-power" */
} fw_engine_config;

/* Where a role runs and how its device has behaved (fw_engine_role_status). A model run that
 * fails on a GPU (a CUDA error, out of memory) is split in halves and retried; a single item
 * that fails twice on a GPU moves the role to the CPU provider for the rest of the process. */
typedef struct fw_role_status {
    const char *provider;   /* serving now: "cpu", "cuda", ...; "none" when the pack lacks it */
    bool on_device;         /* served by an accelerator */
    bool software_device;   /* ... that is a software one (WebGPU on a CPU-type Vulkan device
                               such as lavapipe): no GPU for /health's gpu_available */
    bool fell_back;         /* moved to the CPU after device faults */
    char fallback_from[32]; /* the provider it left ("" unless fell_back) */
    char fallback_reason[FW_ERROR_MESSAGE_MAX]; /* the failure that moved it */
    uint64_t failed_runs;   /* model runs that failed (each then split or retried) */
    uint64_t split_batches; /* failed batches split in halves */
    uint64_t retries;       /* single-item runs retried */
    int batch_cap;          /* largest batch since an out-of-memory error; 0: no cap */
} fw_role_status;

/* Per-face quality thresholds (docs/quality.md). A face is usable when every check passes:
 * size >= min_size, box sharpness >= min_sharpness, |yaw| <= max_yaw, |pitch| <= max_pitch
 * and the combined score >= min_quality. max_yaw, max_pitch and min_size also scale the
 * score (fw_quality_score). */
typedef struct fw_quality_thresholds {
    float min_size;      /* pixels, the box's shorter side */
    float min_sharpness; /* variance of the Laplacian of the box crop */
    float max_yaw;       /* degrees, 1..90 */
    float max_pitch;     /* degrees, 1..90 */
    float min_quality;   /* combined score in [0, 1] */
} fw_quality_thresholds;

/* What a request does with faces that are not usable under its thresholds. */
typedef enum fw_quality_action {
    FW_QUALITY_ANNOTATE = 0, /* keep every face; `usable` says which pass */
    FW_QUALITY_FILTER,       /* drop unusable faces (before max_faces and embedding) */
    FW_QUALITY_REJECT,       /* drop them, and fail the item (FW_ERR_UNUSABLE_FACE, saying
                                why) when no face is left */
} fw_quality_action;

/* Face crops returned with each face. */
typedef enum fw_crop_mode {
    FW_CROP_NONE = 0,
    FW_CROP_ALIGNED, /* the 112x112 ArcFace-aligned crop the embedder sees */
    FW_CROP_BOX,     /* the detector box grown by face_margin on every side, clipped */
} fw_crop_mode;

typedef struct fw_analyze_opts {
    float min_score;     /* detector threshold; <= 0: the detector's default */
    int max_faces;       /* keep the highest-scoring N per image; 0: all */
    float min_face_size; /* drop faces whose box is smaller (pixels, shorter side); 0: none */
    bool embed;          /* compute embeddings (fw_engine_analyze); default true */

    bool quality;                     /* fill fw_face.quality (default true) */
    fw_quality_thresholds thresholds; /* default: the "none" preset (every face usable) */
    fw_quality_action quality_action; /* default ANNOTATE; FILTER and REJECT imply quality */
    fw_crop_mode crops;               /* default NONE */
    float face_margin;                /* box crops and box sharpness: fraction of the box's width
                                         (height) added left and right (above and below); 0.2 */
    fw_image_format crop_format;      /* FW_FORMAT_JPEG (default) or FW_FORMAT_PNG */
    int crop_quality;                 /* JPEG quality 1..100 (95) */
} fw_analyze_opts;

/* Reasons a face is not usable (fw_face_quality.reasons, a bit set). */
#define FW_QUALITY_SMALL 0x01u  /* size < min_size */
#define FW_QUALITY_BLURRY 0x02u /* sharpness_box < min_sharpness */
#define FW_QUALITY_YAW 0x04u    /* |yaw| > max_yaw */
#define FW_QUALITY_PITCH 0x08u  /* |pitch| > max_pitch */
#define FW_QUALITY_LOW 0x10u    /* score < min_quality */
#define FW_QUALITY__REASONS 5

typedef struct fw_face_quality {
    float sharpness_aligned; /* variance of the Laplacian of the gray 112x112 aligned crop */
    float sharpness_box;     /* the same over the box crop (face_margin), decoded pixels */
    float yaw, pitch, roll;  /* degrees, from the 5 landmarks (docs/quality.md): yaw > 0 when
                                the face turns to its left (image right), pitch > 0 when it
                                looks up, roll > 0 when it tilts clockwise in the image */
    float size;              /* the box's shorter side, original pixels */
    float score;             /* fw_quality_score under the request's thresholds */
    bool usable;             /* reasons == 0 */
    unsigned reasons;        /* FW_QUALITY_* bits of the failed checks */
} fw_face_quality;

/* An encoded face crop. */
typedef struct fw_face_crop {
    fw_image_format format; /* FW_FORMAT_JPEG or FW_FORMAT_PNG */
    int width, height;
    const uint8_t *data; /* len bytes, in the result's allocation */
    size_t len;
} fw_face_crop;

typedef struct fw_face {
    float bbox[4]; /* x1, y1, x2, y2 in original-image pixels (orientation applied) */
    float score;
    float landmarks[5][2]; /* left eye, right eye, nose, left mouth, right mouth */
    float *embedding;      /* embedding_dim floats, L2-normalised; NULL when not computed */
    bool has_quality;      /* quality was computed */
    fw_face_quality quality;
    fw_face_crop crop; /* data NULL unless crops were asked for */
} fw_face;

/* One input image's outcome. status != FW_OK means this item failed (message says why)
 * while the others may have succeeded. */
typedef struct fw_result {
    fw_err status;
    char message[FW_ERROR_MESSAGE_MAX];
    int width, height; /* original size, orientation applied */
    size_t n_faces;
    fw_face *faces; /* owned; freed by fw_result_clear */
} fw_result;

/* An encoded image in memory (JPEG, PNG or WebP); not owned. */
typedef struct fw_blob {
    const uint8_t *data;
    size_t len;
} fw_blob;

void fw_engine_config_init(fw_engine_config *cfg);
void fw_analyze_opts_init(fw_analyze_opts *opts);

/* Checks that opts is in range: finite numbers, min_score <= 1, max_faces >= 0,
 * min_face_size >= 0, thresholds (min_size, min_sharpness >= 0; max_yaw, max_pitch in
 * [1, 90]; min_quality in [0, 1]), face_margin in [0, 2], crop_quality 1..100, crop_format
 * JPEG or PNG, known enum values. Returns FW_ERR_INVALID_ARGUMENT naming the first bad
 * field. */
fw_err fw_analyze_opts_validate(const fw_analyze_opts *opts, fw_error *err);

/* Loads the model pack and creates sessions on the requested provider ("auto" falls back
 * to CPU with the reason logged). On success *out is owned by the caller. */
fw_err fw_engine_new(const fw_engine_config *cfg, fw_engine **out, fw_error *err);

/* Frees the engine. NULL is a no-op. No call may be in progress. */
void fw_engine_free(fw_engine *eng);

/* Decodes, detects and (when opts->embed) embeds n images, batching model runs across all
 * of them; measures, filters and crops faces as opts asks. results[0..n) are filled (caller
 * clears each with fw_result_clear). Returns an error only for a failure of the whole call
 * (bad arguments, options fw_analyze_opts_validate refuses, inference failure); a bad image
 * or one rejected for want of a usable face is reported in its own result. opts may be
 * NULL. Thread-safe. */
fw_err fw_engine_analyze(fw_engine *eng, const fw_blob *inputs, size_t n,
                         const fw_analyze_opts *opts, fw_result *results, fw_error *err);

/* Same, for images already decoded. */
fw_err fw_engine_analyze_images(fw_engine *eng, const fw_image *const *images, size_t n,
                                const fw_analyze_opts *opts, fw_result *results, fw_error *err);

/* Embeds n pre-aligned 112x112 RGB crops (n * 112*112*3 bytes, packed) into
 * out[n * embedding_dim], each L2-normalised. Thread-safe. */
fw_err fw_engine_embed_aligned(fw_engine *eng, const uint8_t *crops, size_t n, float *out,
                               fw_error *err);

/* Warps the face with the given 5 landmarks out of img onto the 112x112 ArcFace template. */
void fw_align_face(const fw_image *img, const float landmarks[5][2], uint8_t *crop112);

size_t fw_engine_embedding_dim(const fw_engine *eng);

/* Name of the execution provider actually serving a role ("cpu", "cuda", ...); after a
 * fallback, "cpu". Thread-safe. */
const char *fw_engine_provider(const fw_engine *eng, fw_role role);

/* Fills *out with where role runs now and its fault counters. Thread-safe. */
void fw_engine_role_status(const fw_engine *eng, fw_role role, fw_role_status *out);

/* "detector", "landmarks", "embedder". */
const char *fw_role_name(fw_role role);

/* The model pack's directory and a short name ("default", "buffalo_l", ...). */
const char *fw_engine_models_dir(const fw_engine *eng);
const char *fw_engine_pack_name(const fw_engine *eng);

/* A JSON description of the loaded pack: name, directory, and per role the model file,
 * kind, input and output shapes and the provider in use; plus the ONNX Runtime version
 * and the providers it offers. Returns a malloc'd NUL-terminated string (caller frees) or
 * NULL on allocation failure. */
char *fw_engine_describe_json(const fw_engine *eng);

/* Frees what a result owns and zeroes it. NULL is a no-op. */
void fw_result_clear(fw_result *res);

/* Fills *t with a named preset's thresholds: "none" (every face usable: no minimum, 90
 * degree limits), "ingest", "enroll" (or "enrol"), "verify", "search" (docs/quality.md).
 * Returns FW_ERR_INVALID_ARGUMENT for another name (t untouched). */
fw_err fw_quality_preset(const char *name, fw_quality_thresholds *t);

/* The combined quality score in [0, 1] of a face with box sharpness `sharpness`, pose
 * yaw/pitch (degrees) and shorter side `size` under t:
 *   0.4 min(1, sharpness / 500) + 0.2 (1 - |yaw| / max_yaw) + 0.2 (1 - |pitch| / max_pitch)
 *   + 0.2 min(1, size / max(min_size, 112)), each pose term clamped at 0. */
float fw_quality_score(float sharpness, float yaw, float pitch, float size,
                       const fw_quality_thresholds *t);

/* Fills q's score, reasons and usable from its measurements and t. */
void fw_quality_judge(fw_face_quality *q, const fw_quality_thresholds *t);

/* "size", "sharpness", "yaw", "pitch", "score": the name of one FW_QUALITY_* bit (NULL for
 * anything else). */
const char *fw_quality_reason_name(unsigned bit);

/* Writes a sentence naming each failed check of q under t ("yaw 31.2 > 25; sharpness 12.0 <
 * 60") into buf (always NUL-terminated when cap > 0). */
void fw_quality_explain(const fw_face_quality *q, const fw_quality_thresholds *t, char *buf,
                        size_t cap);

/* Cosine similarity of two L2-normalised embeddings (their dot product). */
float fw_cosine(const float *a, const float *b, size_t dim);

/* The default models directory: $FACEWORK_MODELS if set, else the pack setup installed. */
const char *fw_default_models_dir(void);

const char *fw_version(void);

#ifdef __cplusplus
}
#endif
#endif
