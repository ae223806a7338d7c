/* Internal: 5-point similarity alignment onto the ArcFace 112x112 template, and vector
 * helpers. */
#ifndef FW_CORE_ALIGN_H
#define FW_CORE_ALIGN_H

#include <stddef.h>
#include <stdint.h>

#include "facework/image.h"

/* The ArcFace template (x, y) for a 112x112 crop. */
extern const float fw_arcface_template[5][2];

/* Least-squares similarity transform (rotation, uniform scale, translation; Umeyama, no
 * reflection) taking src[i] to dst[i]: dst ~ M * [x y 1]^T. Returns 0, or -1 when the
 * points are degenerate (all equal). */
int fw_similarity_estimate(const float src[][2], const float dst[][2], int n, float M[2][3]);

/* Inverts a 2x3 affine transform. Returns -1 when singular. */
int fw_affine_invert(const float M[2][3], float inv[2][3]);

/* For each dst pixel (x, y), samples img at inv(M)*(x, y) bilinearly (out-of-image
 * samples are 0) and writes packed RGB into dst (dst_w * dst_h * 3). M maps image
 * coordinates to dst coordinates. */
void fw_warp_affine(const fw_image *img, const float M[2][3], uint8_t *dst, int dst_w, int dst_h);

/* L2-normalises v in place; a zero vector stays zero. */
void fw_l2_normalize(float *v, size_t n);

#endif
