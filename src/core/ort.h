/* Internal: ONNX Runtime sessions behind a small interface.
 *
 * The only file that includes onnxruntime_c_api.h is ort.c. One process-wide OrtEnv is
 * created lazily (thread-safe) and lives until exit. A fw_model wraps one session with
 * float32 input(s) and outputs; Run is thread-safe, so one fw_model serves many threads. */
#ifndef FW_CORE_ORT_H
#define FW_CORE_ORT_H

#include <stddef.h>
#include <stdint.h>

#include "facework/error.h"

#define FW_MAX_RANK 6
#define FW_MAX_OUTPUTS 16
#define FW_NAME_MAX 128

typedef enum fw_provider {
    FW_PROVIDER_AUTO = 0,
    FW_PROVIDER_CPU,
    FW_PROVIDER_CUDA,
    FW_PROVIDER_TENSORRT,
    FW_PROVIDER_DML,
    FW_PROVIDER_ROCM,
    FW_PROVIDER_MIGRAPHX,
    FW_PROVIDER_COREML,
    FW_PROVIDER_OPENVINO,
    FW_PROVIDER_WEBGPU,
    FW_PROVIDER__COUNT
} fw_provider;

/* "auto", "cpu", "cuda", ... <-> enum. Parse returns -1 for an unknown name. */
int fw_provider_parse(const char *name);
const char *fw_provider_name(fw_provider p);

/* Shape of one tensor; dims < 0 are symbolic (e.g. a dynamic batch). */
typedef struct fw_shape {
    int rank;
    int64_t dims[FW_MAX_RANK];
} fw_shape;

typedef struct fw_model_info {
    char path[1024];
    size_t n_inputs, n_outputs;
    char input_names[4][FW_NAME_MAX];
    fw_shape inputs[4];
    char output_names[FW_MAX_OUTPUTS][FW_NAME_MAX];
    fw_shape outputs[FW_MAX_OUTPUTS];
} fw_model_info;

/* cuDNN convolution algorithm search (CUDA provider). */
typedef enum fw_conv_algo {
    FW_CONV_ALGO_HEURISTIC = 0, /* cuDNN's heuristics: no per-shape benchmark (default) */
    FW_CONV_ALGO_EXHAUSTIVE,    /* benchmark every algorithm once per input shape */
    FW_CONV_ALGO_DEFAULT,       /* cuDNN's default algorithm */
} fw_conv_algo;

/* The graphics API Dawn drives for the WebGPU provider. */
typedef enum fw_webgpu_backend {
    FW_WEBGPU_BACKEND_DEFAULT = 0, /* Dawn's choice for the platform (Vulkan on Linux) */
    FW_WEBGPU_BACKEND_VULKAN,
    FW_WEBGPU_BACKEND_D3D12,
} fw_webgpu_backend;

/* "default", "vulkan", "d3d12" <-> enum; parse returns -1 for an unknown name (NULL or ""
 * is the default). */
int fw_webgpu_backend_parse(const char *name);
const char *fw_webgpu_backend_name(fw_webgpu_backend b);

typedef struct fw_session_opts {
    fw_provider provider; /* AUTO: best available in order tensorrt (when its libraries load
                             and FACEWORK_TRT is not 0), cuda, rocm/migraphx, dml, coreml,
                             openvino, then cpu (see ort.c) */
    int threads;          /* intra-op threads; 0: ORT default */
    int device_id;
    /* GPU providers only (CUDA, TensorRT); zero values are the defaults. */
    size_t gpu_mem_limit;            /* CUDA arena limit, bytes; 0: none */
    int gpu_arena_same_as_requested; /* 0: arena grows by powers of two; 1: by what is asked */
    fw_conv_algo conv_algo;
    int pageable_io;           /* 1: plain Run on pageable buffers (no pinned I/O) */
    const char *trt_cache_dir; /* NULL: FACEWORK_TRT_CACHE, else ~/.cache/facework/trt */
    int trt_fp16;              /* 1: let TensorRT pick FP16 kernels */
    int max_batch; /* largest batch runs will have: TensorRT's optimisation profile, WebGPU's
                      batch buckets (below); 0: 64 */
    /* WebGPU only. Dawn picks the adapter itself (ORT 1.29's WebGPU "deviceId" is a context
     * id for an application-made WGPUDevice, not an adapter index, so device_id must be 0):
     * by backend and power preference. */
    fw_webgpu_backend webgpu_backend;
    int webgpu_low_power; /* 1: Dawn's "low-power" preference (integrated first); 0: "high-
                             performance" (discrete first) */
} fw_session_opts;

/* A float32 tensor returned by fw_model_run; data is malloc'd, free with fw_tensor_clear. */
typedef struct fw_tensor {
    float *data;
    fw_shape shape;
    size_t count; /* product of dims */
} fw_tensor;

typedef struct fw_model fw_model;

/* Loads an ONNX file. For AUTO, tries the providers this ORT build and host offer and falls
 * back to CPU, logging why each was skipped; an explicitly requested provider that cannot
 * start is an error (FW_ERR_PROVIDER). *out is owned by the caller. */
fw_err fw_model_load(const char *path, const fw_session_opts *opts, fw_model **out, fw_error *err);
void fw_model_free(fw_model *m);

const fw_model_info *fw_model_get_info(const fw_model *m);

/* The provider actually serving this session ("cpu", "cuda", ...; "sim-gpu" for a CPU
 * session that a fault-injection spec with `device` makes stand in for a GPU). */
const char *fw_model_provider(const fw_model *m);

/* True when the session runs on an accelerator (anything but the CPU provider, or the
 * "sim-gpu" test stand-in): a failing run may then be moved to the CPU. */
int fw_model_on_device(const fw_model *m);

/* True when the session runs on the WebGPU provider and the adapter Dawn picks is a
 * software one (a CPU-type Vulkan device such as Mesa's lavapipe): an accelerator for the
 * fault handling, but no GPU for /health's gpu_available. */
int fw_model_software_device(const fw_model *m);

/* The options the model was loaded with (its provider field is the one requested). */
const fw_session_opts *fw_model_session_opts(const fw_model *m);

/* Host buffers for model inputs. On a CUDA/TensorRT session with pinned I/O these come from
 * ONNX Runtime's pinned (page-locked) host allocator, an arena, so the copy to the device is
 * one DMA transfer; elsewhere, or when the pinned allocator is unavailable, from malloc.
 * Free with fw_model_host_free on the same model (which must still be alive). NULL on
 * allocation failure. Thread-safe. */
void *fw_model_host_alloc(fw_model *m, size_t bytes);
void fw_model_host_free(fw_model *m, void *p);

/* Test hook (fault injection): make runs of this model fail like a device fault, with
 * FW_ERR_INFERENCE and a CUDA-like message. Used by the engine for FACEWORK_FAULT_INJECT and
 * by unit tests; never set in production. */
typedef struct fw_fault_spec {
    int fail_above;  /* runs whose batch (first input dim) is above this fail; 0: no rule */
    int fail_first;  /* the first N runs fail; 0: no rule */
    int fail_always; /* every run fails */
    int oom;         /* the message reads as an out-of-memory error (else a launch failure) */
    int device;      /* the model reports itself as "sim-gpu" and counts as on a device */
} fw_fault_spec;

/* Sets (spec non-NULL) or clears (NULL) the faults of m and resets its run counter. Not
 * thread-safe with runs of m: call before m is shared. */
void fw__model_set_faults(fw_model *m, const fw_fault_spec *spec);

/* True when the message of a failed run reads as the device running out of memory (CUDA,
 * cuDNN, cuBLAS, TensorRT, ORT's arena, std::bad_alloc). */
int fw_ort_is_oom_message(const char *msg);

/* Runs the model on one float32 input of the given shape (the first input of the model).
 * outs must have room for info->n_outputs tensors; each is filled (caller clears).
 * On a WebGPU session with a symbolic batch dimension the batch is padded with zeros up to
 * its bucket (the next power of two, at most opts.max_batch; larger batches run as they
 * are) and the outputs cut back to the batch, so that the device only ever sees the shapes
 * the engine's warm-up ran (each new shape compiles shaders: seconds on a software device).
 * Thread-safe. */
fw_err fw_model_run(fw_model *m, const float *input, const fw_shape *shape, fw_tensor *outs,
                    fw_error *err);

void fw_tensor_clear(fw_tensor *t);

/* Providers that this ORT build reports (GetAvailableProviders), as our names, in ORT's
 * order; returns how many were written (at most cap). */
size_t fw_ort_available_providers(const char **names, size_t cap);

/* How many sessions hold the process's ORT env (for tests). The env exists while this is
 * above 0: it is created for the first session and released with the last, so a process
 * that frees its models never leaves the env to ORT's exit-time destructors. */
size_t fw__ort_env_users(void);

/* Turns ONNX Runtime's own telemetry off (ORT_DISABLE_TELEMETRY=1) unless the environment
 * already sets ORT_DISABLE_TELEMETRY. ORT 1.29 otherwise starts a telemetry thread with its
 * first env, which lives to process exit and races ORT's exit-time destructors (valgrind
 * saw it read freed memory at exit). Sets an environment variable: call it before any other
 * thread starts; the first model load calls it too, for programs that did not. */
void fw_ort_preinit(void);

/* The batch a run of `batch` items is padded to on a bucketed (WebGPU) session whose largest
 * batch is max_batch (0: 64): the next power of two, at most max_batch; batches above
 * max_batch are not padded. */
int64_t fw_ort_batch_bucket(int64_t batch, int max_batch);

/* Why AUTO would not use the WebGPU provider with these options on this host ("" when it
 * would try it): no GPU device node (Vulkan then not even loaded, fw_vk_gpu_hint), no
 * Vulkan device, only a software (CPU-type) one, or a device_id other than 0. Writes into why (cap
 * bytes); returns 1 when WebGPU is usable by AUTO. */
int fw_ort_webgpu_auto_ok(const fw_session_opts *opts, char *why, size_t cap);

/* The ORT library's version string ("1.29.0"). */
const char *fw_ort_version(void);

/* True when TensorRT's runtime (libnvinfer.so.10) can be loaded in this process: AUTO then
 * tries the TensorRT provider first (unless FACEWORK_TRT=0). Checked once. */
int fw_ort_tensorrt_libs_present(void);

/* The TensorRT engine cache directory that sessions use (opts->trt_cache_dir, else
 * FACEWORK_TRT_CACHE, else $XDG_CACHE_HOME/facework/trt or ~/.cache/facework/trt) into buf. */
void fw_ort_trt_cache_dir(const fw_session_opts *opts, char *buf, size_t cap);

#endif
