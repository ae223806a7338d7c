/* Internal: image -> model input tensors, and tensor-independent geometry helpers. */
#ifndef FW_CORE_PREPROCESS_H
#define FW_CORE_PREPROCESS_H

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

#endif
