/* Internal: image -> model input tensors, and tensor-independent geometry helpers. */
#ifndef FW_CORE_PREPROCESS_H
#define FW_CORE_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "facework/image.h"

/* Resizes the whole img to dst_w x dst_h (bilinear, area-averaging when shrinking by more
 * than 2x is acceptable) and writes planar CHW RGB floats (v - mean) / std into dst
 * (3 * dst_w * dst_h floats). */
void fw_pre_resize_chw(const fw_image *img, int dst_w, int dst_h, float mean, float std,
                       float *dst);

/* SCRFD letterbox: resizes keeping aspect ratio so the image fits dst_w x dst_h, places it
 * at the top-left, pads the rest with value (0 - mean) / std. Returns the scale used
 * (resized size / original size). */
float fw_pre_letterbox_chw(const fw_image *img, int dst_w, int dst_h, float mean, float std,
                           float *dst);

/* Packed RGB crop (w x h x 3 bytes) -> CHW floats (v - mean) / std. */
void fw_pre_rgb_to_chw(const uint8_t *rgb, int w, int h, float mean, float std, float *dst);

/* The resampler behind the functions above (also used for the landmark crop). Bilinear,
 * pixel-centre aligned: destination pixel d of an axis samples the rectangle
 * rect = {x, y, w, h} (which must lie inside img) at (d + 0.5) * ratio - 0.5, clamped to
 * the rectangle. Writes out_w x out_h pixels as v * k + c into three planes (dst,
 * dst + plane, dst + 2 * plane) of dst_stride-float rows, or, when gray is nonzero, one
 * plane of 0.299 R + 0.587 G + 0.114 B (of the normalised values). */
void fw_pre_resample(const fw_image *img, const int rect[4], int out_w, int out_h, float rx,
                     float ry, float k, float c, int gray, float *dst, int dst_stride,
                     size_t plane);

#endif
