/* Internal: detector pre- and post-processing (Ultra-Light RFB-320 and SCRFD) and NMS.
 * Pure functions over buffers: no ORT, no I/O, so every step is unit-testable. */
#ifndef FW_CORE_DETECT_H
#define FW_CORE_DETECT_H

#include <stddef.h>

#include "facework/image.h"

typedef struct fw_det {
    float box[4]; /* x1, y1, x2, y2 in image pixels */
    float score;
    float kps[5][2];
    int has_kps;
} fw_det;

/* Sorts dets by score (descending) and suppresses boxes overlapping a kept one with
 * IoU > iou. Keeps order stable among equal scores. Returns the number kept; the kept
 * ones are dets[0..ret). */
size_t fw_nms(fw_det *dets, size_t n, float iou);

float fw_iou(const float a[4], const float b[4]);

/* Ultra-Light: decodes one image's outputs. scores[n_anchors*2] (softmaxed, column 1 =
 * face), boxes[n_anchors*4] (corners scaled 0..1). Keeps scores >= threshold, scales to
 * img_w x img_h, clips to the image, writes at most cap detections (before NMS), returns
 * the count written. */
size_t fw_ultralight_decode(const float *scores, const float *boxes, size_t n_anchors,
                            float threshold, int img_w, int img_h, fw_det *out, size_t cap);

/* SCRFD: one stride's outputs for one image. scores[n], bbox[n*4] (distances l,t,r,b in
 * stride units), kps[n*10] (dx,dy pairs in stride units) or NULL. Anchors: for each
 * location (y, x) of the (in_h/stride) x (in_w/stride) grid, `anchors` anchors centred
 * at (x*stride, y*stride). Boxes/keypoints are divided by `scale` (input px per image px)
 * to map back to the image. Returns the count written (score >= threshold). */
typedef struct fw_scrfd_level {
    const float *scores;
    const float *bbox;
    const float *kps; /* NULL when the model has no keypoints */
    int stride;
} fw_scrfd_level;

size_t fw_scrfd_decode(const fw_scrfd_level *levels, size_t n_levels, int in_w, int in_h,
                       int anchors, float threshold, float scale, fw_det *out, size_t cap);

#endif
