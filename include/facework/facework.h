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

typedef struct fw_analyze_opts {
    float min_score;     /* detector threshold; <= 0: the detector's default */
    int max_faces;       /* keep the highest-scoring N per image; 0: all */
    float min_face_size; /* drop faces whose box is smaller (pixels, shorter side); 0: none */
    bool embed;          /* compute embeddings (fw_engine_analyze); default true */
} fw_analyze_opts;

typedef struct fw_face {
    float bbox[4]; /* x1, y1, x2, y2 in original-image pixels (orientation applied) */
    float score;
    float landmarks[5][2]; /* left eye, right eye, nose, left mouth, right mouth */
    float *embedding;      /* embedding_dim floats, L2-normalised; NULL when not computed */
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

/* Loads the model pack and creates sessions on the requested provider ("auto" falls back
 * to CPU with the reason logged). On success *out is owned by the caller. */
fw_err fw_engine_new(const fw_engine_config *cfg, fw_engine **out, fw_error *err);

/* Frees the engine. NULL is a no-op. No call may be in progress. */
void fw_engine_free(fw_engine *eng);

/* Decodes, detects and (when opts->embed) embeds n images, batching model runs across all
 * of them. results[0..n) are filled (caller clears each with fw_result_clear). Returns an
 * error only for a failure of the whole call (bad arguments, inference failure); a bad
 * image is reported in its own result. opts may be NULL. Thread-safe. */
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

/* Cosine similarity of two L2-normalised embeddings (their dot product). */
float fw_cosine(const float *a, const float *b, size_t dim);

/* The default models directory: $FACEWORK_MODELS if set, else the pack setup installed. */
const char *fw_default_models_dir(void);

const char *fw_version(void);

#ifdef __cplusplus
}
#endif
#endif
