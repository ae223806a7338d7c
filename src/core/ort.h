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

typedef struct fw_session_opts {
    fw_provider provider; /* AUTO: best available in order tensorrt?, cuda, rocm/migraphx,
                             dml, coreml, openvino, then cpu (see ort.c) */
    int threads;          /* intra-op threads; 0: ORT default */
    int device_id;
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

/* The provider actually serving this session ("cpu", "cuda", ...). */
const char *fw_model_provider(const fw_model *m);

/* Runs the model on one float32 input of the given shape (the first input of the model).
 * outs must have room for info->n_outputs tensors; each is filled (caller clears).
 * Thread-safe. */
fw_err fw_model_run(fw_model *m, const float *input, const fw_shape *shape, fw_tensor *outs,
                    fw_error *err);

void fw_tensor_clear(fw_tensor *t);

/* Providers that this ORT build reports (GetAvailableProviders), as our names, in ORT's
 * order; returns how many were written (at most cap). */
size_t fw_ort_available_providers(const char **names, size_t cap);

/* The ORT library's version string ("1.29.0"). */
const char *fw_ort_version(void);

#endif
