/* Internal: the 68-point landmark model's crop and the 68 -> 5 point reduction. */
#ifndef FW_CORE_LANDMARK_H
#define FW_CORE_LANDMARK_H

#include "facework/image.h"

#define FW_LMK68_SIZE 64

/* Squares box to its height (centred on the box, clipped to the image), crops, resizes
 * to 64x64, converts to gray, and writes pixel / 256 floats into dst[64*64]. crop_out
 * receives x0, y0, w, h of the square actually cropped (for mapping outputs back). */
void fw_lmk68_prepare(const fw_image *img, const float box[4], float *dst, float crop_out[4]);

/* Maps the model's 136 outputs (x, y pairs relative to the crop) to image coordinates
 * and reduces them to 5 points: eye (mean of 37,38,40,41), eye (43,44,46,47), nose (30),
 * mouth corners mean(48,60) and mean(54,64). */
void fw_lmk68_to5(const float *out136, const float crop[4], float pts[5][2]);

#endif
