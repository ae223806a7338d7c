/* The 68-point landmark model's input crop and the 68 -> 5 point reduction. */
#include "core/landmark.h"

#include "core/preprocess.h"

#include <math.h>
#include <stddef.h>

/* Whole-pixel crop rectangle [x0, x1) x [y0, y1): the box squared to its height around its
 * centre, then clipped to the image; never empty for a non-empty image. */
static void square_crop(const fw_image *img, const float box[4], int *x0, int *y0, int *x1, int *y1)
{
    float h = box[3] - box[1];
    float cx = 0.5f * (box[0] + box[2]), cy = 0.5f * (box[1] + box[3]);
    if (!isfinite(h) || !isfinite(cx) || !isfinite(cy)) {
        h = 1.0f;
        cx = 0.5f;
        cy = 0.5f;
    }
    /* clamp before converting so that absurd boxes cannot overflow an int */
    const float lim = 4.0f * (float)(img->width > img->height ? img->width : img->height) + 4.0f;
    h = fminf(fmaxf(h, 1.0f), lim);
    cx = fminf(fmaxf(cx, -lim), lim);
    cy = fminf(fmaxf(cy, -lim), lim);
    const int side = (int)lroundf(h);
    int ax = (int)lroundf(cx - 0.5f * (float)side);
    int ay = (int)lroundf(cy - 0.5f * (float)side);
    int bx = ax + side, by = ay + side;
    ax = ax < 0 ? 0 : ax;
    ay = ay < 0 ? 0 : ay;
    bx = bx > img->width ? img->width : bx;
    by = by > img->height ? img->height : by;
    /* a box entirely outside the image: take the nearest single pixel row/column */
    if (ax >= bx) {
        ax = ax >= img->width ? img->width - 1 : bx <= 0 ? 0 : ax;
        bx = ax + 1;
    }
    if (ay >= by) {
        ay = ay >= img->height ? img->height - 1 : by <= 0 ? 0 : ay;
        by = ay + 1;
    }
    *x0 = ax;
    *y0 = ay;
    *x1 = bx;
    *y1 = by;
}

void fw_lmk68_prepare(const fw_image *img, const float box[4], float *dst, float crop_out[4])
{
    enum { N = FW_LMK68_SIZE };
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0 || !box) {
        if (dst)
            for (int i = 0; i < N * N; i++)
                dst[i] = 0.0f;
        if (crop_out)
            crop_out[0] = crop_out[1] = crop_out[2] = crop_out[3] = 0.0f;
        return;
    }
    int x0, y0, x1, y1;
    square_crop(img, box, &x0, &y0, &x1, &y1);
    const int cw = x1 - x0, ch = y1 - y0;
    if (crop_out) {
        crop_out[0] = (float)x0;
        crop_out[1] = (float)y0;
        crop_out[2] = (float)cw;
        crop_out[3] = (float)ch;
    }
    if (!dst)
        return;

    /* pixel-centre aligned bilinear from the crop to N x N, gray / 256 */
    const int rect[4] = {x0, y0, cw, ch};
    fw_pre_resample(img, rect, N, N, (float)cw / (float)N, (float)ch / (float)N, 1.0f / 256.0f,
                    0.0f, 1, dst, N, 0);
}

void fw_lmk68_to5(const float *out136, const float crop[4], float pts[5][2])
{
    static const int groups[5][4] = {
        {37, 38, 40, 41}, {43, 44, 46, 47}, {30, -1, -1, -1}, {48, 60, -1, -1}, {54, 64, -1, -1},
    };
    for (int g = 0; g < 5; g++) {
        float sx = 0.0f, sy = 0.0f;
        int n = 0;
        for (int j = 0; j < 4 && groups[g][j] >= 0; j++, n++) {
            const int p = groups[g][j];
            sx += out136[2 * p] * crop[2] + crop[0];
            sy += out136[2 * p + 1] * crop[3] + crop[1];
        }
        pts[g][0] = sx / (float)n;
        pts[g][1] = sy / (float)n;
    }
}
