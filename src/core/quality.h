/* Internal: per-face quality measurements (sharpness, pose from 5 landmarks), crop geometry
 * and crop encoding. Pure functions over buffers: no ORT, no I/O. docs/quality.md documents
 * the definitions and the measured pose error. */
#ifndef FW_CORE_QUALITY_H
#define FW_CORE_QUALITY_H

#include <stddef.h>
#include <stdint.h>

#include "facework/facework.h"

/* Variance of the Laplacian of the gray version of a w x h region of a packed RGB image
 * (row stride `stride` bytes) starting at (x0, y0): gray as OpenCV's RGB2GRAY (fixed-point
 * 0.299 R + 0.587 G + 0.114 B, rounded to 8 bits), Laplacian as OpenCV's ksize 1 kernel
 * [0 1 0; 1 -4 1; 0 1 0] with BORDER_REFLECT_101 at the region's edges, population
 * variance over every pixel of the region. 0 for an empty region. */
double fw_sharpness_rgb(const uint8_t *rgb, size_t stride, int x0, int y0, int w, int h);

/* Head pose in degrees from 5 landmarks (left eye, right eye, nose, left and right mouth
 * corner, image pixels): a scaled-orthographic fit of a generic 3D five-point face whose
 * frontal projection is the ArcFace template (docs/quality.md). Signs as fw_face_quality.
 * Returns 0, or -1 (angles 0) for degenerate landmarks. */
int fw_pose_estimate(const float lm[5][2], float *yaw, float *pitch, float *roll);

/* The 3D model fw_pose_estimate fits: (x, y, z) in template pixels, x right, y down, z away
 * from the camera. */
extern const float fw_pose_model[5][3];

/* The integer region [x0, x1) x [y0, y1) of a box grown by margin * its width (height) on
 * each side and clipped to a w x h image. Returns 0, or -1 when nothing is left. */
int fw_crop_region(const float box[4], float margin, int w, int h, int region[4]);

/* Area-average resize of a packed RGB region (stride bytes per row) to dw x dh into dst. */
void fw_resize_area(const uint8_t *src, size_t stride, int sw, int sh, uint8_t *dst, int dw,
                    int dh);

/* Encodes a w x h RGB image (rows `stride` bytes apart) as JPEG (quality 1..100, 4:2:0) or
 * PNG into a new malloc'd buffer (*out, caller frees) of *len bytes. Errors:
 * INVALID_ARGUMENT (format, size, quality), NOMEM, INTERNAL (the codec failed). */
fw_err fw_encode_rgb(const uint8_t *rgb, size_t stride, int w, int h, fw_image_format format,
                     int quality, uint8_t **out, size_t *len, fw_error *err);

#endif
