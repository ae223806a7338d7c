/* Internal: model packs, i.e. directories of ONNX files whose kinds are recognised from
 * their signatures (MODELS.md) or stated by an optional pack.json. */
#ifndef FW_CORE_PACK_H
#define FW_CORE_PACK_H

#include "core/ort.h"

typedef enum fw_model_kind {
    FW_KIND_UNKNOWN = 0,
    FW_KIND_ULTRALIGHT,  /* input [N,3,240,320]; outputs scores [N,A,2], boxes [N,A,4] */
    FW_KIND_SCRFD,       /* >= 6 outputs (6: no keypoints, 9: with keypoints) */
    FW_KIND_LANDMARK68,  /* input [N,1,64,64] gray; output [N,136] */
    FW_KIND_LANDMARK106, /* input 192x192: recognised, not used */
    FW_KIND_GENDERAGE,   /* input 96x96: recognised, not used */
    FW_KIND_EMBEDDER,    /* square input >= 112, divisible by 16, one output [N,D] */
} fw_model_kind;

const char *fw_model_kind_name(fw_model_kind k);

/* Preprocessing constants: value = (pixel - mean) / std, RGB channel order. */
typedef struct fw_norm {
    float mean, std;
} fw_norm;

typedef struct fw_pack_model {
    fw_model *model; /* owned by the pack */
    fw_model_kind kind;
    fw_norm norm;
    int input_w, input_h; /* model input size (SCRFD: configurable, default 640x640) */
    float threshold;      /* detectors: default score threshold */
    float nms_iou;        /* detectors: NMS IoU */
    int batch_dynamic;    /* 1 when the first input dimension is symbolic */
} fw_pack_model;

typedef struct fw_pack {
    char dir[1024];
    char name[64];           /* pack.json "name", else the directory's base name */
    fw_pack_model detector;  /* ULTRALIGHT or SCRFD (required) */
    fw_pack_model landmarks; /* LANDMARK68, needed when the detector has no keypoints */
    fw_pack_model embedder;  /* EMBEDDER (required) */
    int has_landmarks;
    size_t embedding_dim;
} fw_pack;

/* Loads every *.onnx in dir, classifies each (pack.json may map file -> kind and set norm,
 * input size, threshold), and keeps one model per role. Per-role session options let
 * detection and embedding be placed on different providers. Errors: NOT_FOUND (no dir or
 * no ONNX files), MODEL (a required role missing, or a file ORT cannot load). */
fw_err fw_pack_load(const char *dir, const fw_session_opts *det_opts,
                    const fw_session_opts *lmk_opts, const fw_session_opts *emb_opts, fw_pack **out,
                    fw_error *err);
void fw_pack_free(fw_pack *p);

/* Classifies a model from its signature alone (exposed for tests). */
fw_model_kind fw_classify_signature(const fw_model_info *info);

#endif
