/* Internal: the face pipeline broken into stages, so that the worker's batcher can run
 * each model over items gathered from many requests. fw_engine_analyze is these stages
 * run back to back on one call's images.
 *
 *   fw_item it; fw_item_init(&it, data, len);
 *   fw_pipeline_decode(eng, &it)                 decode at the detector's scale
 *   fw_pipeline_detect(eng, items, n, opts)      one batched detector (+ landmark) run
 *   fw_pipeline_embed_prepare(eng, &it, chw)     align every face, write model input
 *   fw_pipeline_embed_run(eng, chw, m, out)      one batched embedder run
 *   fw_pipeline_finish(eng, &it, emb, opts, res) copy faces and embeddings into a result
 */
#ifndef FW_CORE_PIPELINE_H
#define FW_CORE_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/detect.h"
#include "core/pack.h"
#include "facework/facework.h"

/* Wall time spent per stage, in nanoseconds; added to by the stage functions when the
 * caller passes one (benchmarks); may be shared by concurrent calls (atomic adds). */
typedef struct fw_stage_times {
    _Atomic uint64_t decode_ns, preprocess_ns, inference_ns, postprocess_ns;
    _Atomic uint64_t quality_ns, crop_ns; /* fw_pipeline_quality: measuring; encoding crops */
    _Atomic uint64_t images, faces, detector_runs, embedder_runs;
} fw_stage_times;

/* An encoded crop of one face (fw_item.crops). */
typedef struct fw_item_crop {
    uint8_t *data; /* malloc'd, len bytes; NULL when none */
    size_t len;
    int width, height;
    fw_image_format format;
} fw_item_crop;

/* One image moving through the stages. Owns img, dets and the per-face arrays. */
typedef struct fw_item {
    const uint8_t *data; /* encoded bytes (not owned), kept for a sharper re-decode */
    size_t len;
    const fw_image *src; /* already-decoded input (not owned), instead of data */
    fw_image *img;       /* decoded at detection scale (owned) */
    int orig_w, orig_h;  /* full-resolution size, orientation applied */
    fw_det *dets;        /* faces in original-image pixels, sorted by score */
    size_t n_dets;
    /* fw_pipeline_quality's output, n_dets entries each (NULL when not computed): */
    fw_face_quality *quality;
    uint8_t *aligned;    /* 112x112 RGB crops, n_dets * 112*112*3 bytes */
    fw_item_crop *crops; /* encoded crops */
    bool quality_done;   /* fw_pipeline_quality ran */
    fw_err status;
    char message[FW_ERROR_MESSAGE_MAX];
} fw_item;

void fw_item_init(fw_item *it, const uint8_t *data, size_t len);
void fw_item_init_image(fw_item *it, const fw_image *img);
void fw_item_clear(fw_item *it);

/* Decodes it->data at the scale the detector needs. Errors go to it->status/message (the
 * return value repeats the status). */
fw_err fw_pipeline_decode(fw_engine *eng, fw_item *it, fw_stage_times *st);

/* Runs the detector (and the landmark model when the pack needs one) over every item whose
 * status is FW_OK, in batches of at most max_batch, and fills dets (filtered by opts).
 * Returns an error only when a model run fails; then every item is marked failed. */
fw_err fw_pipeline_detect(fw_engine *eng, fw_item *const *items, size_t n,
                          const fw_analyze_opts *opts, fw_stage_times *st, fw_error *err);

/* Measures every face of it on the CPU (sharpness of the aligned and the box crop, pose
 * from the landmarks, size), judges it under opts->thresholds, drops unusable faces for
 * FILTER and REJECT (then applies max_faces; REJECT fails an item left without a face with
 * FW_ERR_UNUSABLE_FACE, saying why), and encodes the crops opts asks for. The aligned crops
 * it makes (from a finer re-decode when the detection image holds a face at under 112 px)
 * are kept in it->aligned for fw_pipeline_embed_prepare. Runs once per item (quality_done);
 * does nothing when opts asks for none of it. Errors (NOMEM, an encoder failure) go to
 * it->status/message; the return value repeats the status. */
fw_err fw_pipeline_quality(fw_engine *eng, fw_item *it, const fw_analyze_opts *opts,
                           fw_stage_times *st);

/* True when opts asks fw_pipeline_quality for anything. */
bool fw_pipeline_wants_quality(const fw_analyze_opts *opts);

/* Floats of embedder input per face. */
size_t fw_pipeline_embed_input_size(const fw_engine *eng);

/* Aligns every face of it (re-decoding the JPEG at a finer DCT scale when the detection
 * image holds the faces at under 112 px and the original has more) and writes each face's
 * embedder input into chw + i * fw_pipeline_embed_input_size(). */
fw_err fw_pipeline_embed_prepare(fw_engine *eng, fw_item *it, float *chw, fw_stage_times *st,
                                 fw_error *err);

/* Runs the embedder on m prepared faces (in batches of at most max_batch) and writes m
 * L2-normalised embeddings into out (m * dim). */
fw_err fw_pipeline_embed_run(fw_engine *eng, const float *chw, size_t m, float *out,
                             fw_stage_times *st, fw_error *err);

/* Fills res from it: status, size, faces; embeddings (it->n_dets * dim floats) may be NULL.
 * res is overwritten (clear it first if it held anything). */
fw_err fw_pipeline_finish(const fw_engine *eng, const fw_item *it, const float *embeddings,
                          fw_result *res);

/* fw_engine_analyze with the stage times added to st (may be NULL). */
fw_err fw_pipeline_analyze(fw_engine *eng, const fw_blob *inputs, size_t n,
                           const fw_analyze_opts *opts, fw_result *results, fw_stage_times *st,
                           fw_error *err);

int fw_engine_max_batch(const fw_engine *eng);

/* The decode limits an engine applies (bytes, pixels). */
const fw_decode_opts *fw__engine_decode_opts(const fw_engine *eng);

/* The pack an engine serves (for describing it). Its models' `model` pointers may be
 * swapped by a move to the CPU while the engine serves: read the session serving a role with
 * fw__engine_model. */
const fw_pack *fw__engine_pack(const fw_engine *eng);

/* The session serving role now (NULL when the pack has none). Thread-safe. */
fw_model *fw__engine_model(const fw_engine *eng, fw_role role);

/* Test hook: fault injection (also read from FACEWORK_FAULT_INJECT by fw_engine_new, after
 * the warm-up). spec is ";"-separated clauses "ROLE:opt,opt,...", ROLE one of detector,
 * landmarks, embedder, all; options:
 *   device    the model stands in for a GPU session (provider "sim-gpu"), so that persistent
 *             faults move it to the CPU
 *   always    every run fails
 *   first=N   the first N runs fail
 *   above=N   runs of more than N items fail
 *   oom       the failure reads as out of memory (else a CUDA launch failure)
 * e.g. "embedder:device,always" or "detector:above=2,oom;embedder:first=1".
 * Applies to the sessions serving each role now. Not thread-safe with runs: call before the
 * engine is shared. Errors: INVALID_ARGUMENT for a malformed spec. */
fw_err fw__engine_inject_faults(fw_engine *eng, const char *spec, fw_error *err);

/* Parses a fault spec (above) into specs[role]; present[role] says which roles it names. */
fw_err fw__fault_parse(const char *spec, fw_fault_spec specs[FW_ROLE__COUNT],
                       int present[FW_ROLE__COUNT], fw_error *err);

#endif
