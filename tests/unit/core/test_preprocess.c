/* Unit tests for the model-input preprocessing: resize to planar CHW with normalisation,
 * SCRFD letterboxing, and packed RGB -> CHW. Sampling is pixel-centre aligned:
 * destination d samples the source at (d + 0.5) * src / dst - 0.5, clamped to the image.
 * Expected values are worked out by hand in the comments; images are built on the stack. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/preprocess.h"

static fw_image wrap(uint8_t *px, int w, int h)
{
    fw_image img = {w, h, w, h, px};
    return img;
}

/* Channel c of pixel (x, y) of a planar w x h tensor. */
static float at(const float *t, int w, int h, int c, int x, int y)
{
    return t[(size_t)c * w * h + (size_t)y * w + x];
}

/* A constant image gives a constant tensor: (127, 255, 0) with mean 127, std 128 ->
 * 0, 128/128 = 1, -127/128 = -0.9921875, at every pixel, shrinking or enlarging. */
static void test_resize_constant(void **state)
{
    (void)state;
    enum { W = 7, H = 5 };
    uint8_t px[W * H * 3];
    for (int i = 0; i < W * H; i++) {
        px[3 * i] = 127;
        px[3 * i + 1] = 255;
        px[3 * i + 2] = 0;
    }
    fw_image img = wrap(px, W, H);
    const int sizes[2][2] = {{4, 3}, {15, 11}};
    for (int s = 0; s < 2; s++) {
        const int dw = sizes[s][0], dh = sizes[s][1];
        float *t = malloc(3 * (size_t)dw * dh * sizeof *t);
        assert_non_null(t);
        fw_pre_resize_chw(&img, dw, dh, 127.0f, 128.0f, t);
        for (int y = 0; y < dh; y++)
            for (int x = 0; x < dw; x++) {
                assert_float_equal(at(t, dw, dh, 0, x, y), 0.0f, 1e-6);
                assert_float_equal(at(t, dw, dh, 1, x, y), 1.0f, 1e-6);
                assert_float_equal(at(t, dw, dh, 2, x, y), -0.9921875f, 1e-6);
            }
        free(t);
    }
}

/* 3 x 3 image, R = 10x + 100y, G = 7, B = 200 -> 2 x 2, ratio 1.5 on both axes: samples
 * at (d + .5) * 1.5 - .5 = 0.25 and 1.75. R is linear, so bilinear reproduces it:
 * (0.25, 0.25) 27.5; (1.75, 0.25) 42.5; (0.25, 1.75) 177.5; (1.75, 1.75) 192.5.
 * mean 127.5, std 2: R -> -50, -42.5, 25, 32.5; G -> -60.25; B -> 36.25. */
static void test_resize_gradient_2d(void **state)
{
    (void)state;
    uint8_t px[3 * 3 * 3];
    for (int y = 0; y < 3; y++)
        for (int x = 0; x < 3; x++) {
            px[(y * 3 + x) * 3] = (uint8_t)(10 * x + 100 * y);
            px[(y * 3 + x) * 3 + 1] = 7;
            px[(y * 3 + x) * 3 + 2] = 200;
        }
    fw_image img = wrap(px, 3, 3);
    float t[3 * 2 * 2];
    fw_pre_resize_chw(&img, 2, 2, 127.5f, 2.0f, t);
    assert_float_equal(at(t, 2, 2, 0, 0, 0), -50.0f, 1e-4);
    assert_float_equal(at(t, 2, 2, 0, 1, 0), -42.5f, 1e-4);
    assert_float_equal(at(t, 2, 2, 0, 0, 1), 25.0f, 1e-4);
    assert_float_equal(at(t, 2, 2, 0, 1, 1), 32.5f, 1e-4);
    for (int i = 0; i < 4; i++) {
        assert_float_equal(t[4 + i], -60.25f, 1e-4);
        assert_float_equal(t[8 + i], 36.25f, 1e-4);
    }
}

/* Shrinking 8 x 2 -> 4 x 1 (R = 10x, G = 100y): x samples at 2d + .5 -> R 5, 25, 45, 65;
 * y samples at .5 -> G 50. Enlarging 2 x 1 (R 0, 100) -> 5 x 1: ratio .4, samples at
 * (d + .5) * .4 - .5 = -.3 (clamped to 0), .1, .5, .9, 1.3 (clamped to 1) ->
 * R 0, 10, 50, 90, 100. mean 0, std 1 leaves raw values. */
static void test_resize_gradient_1d(void **state)
{
    (void)state;
    uint8_t px[8 * 2 * 3];
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 8; x++) {
            px[(y * 8 + x) * 3] = (uint8_t)(10 * x);
            px[(y * 8 + x) * 3 + 1] = (uint8_t)(100 * y);
            px[(y * 8 + x) * 3 + 2] = 0;
        }
    fw_image img = wrap(px, 8, 2);
    float t[3 * 4];
    fw_pre_resize_chw(&img, 4, 1, 0.0f, 1.0f, t);
    const float want_r[4] = {5, 25, 45, 65};
    for (int x = 0; x < 4; x++) {
        assert_float_equal(t[x], want_r[x], 1e-4);
        assert_float_equal(t[4 + x], 50.0f, 1e-4);
    }

    uint8_t p2[2 * 3] = {0, 0, 0, 100, 0, 0};
    fw_image i2 = wrap(p2, 2, 1);
    float u[3 * 5];
    fw_pre_resize_chw(&i2, 5, 1, 0.0f, 1.0f, u);
    const float want_u[5] = {0, 10, 50, 90, 100};
    for (int x = 0; x < 5; x++)
        assert_float_equal(u[x], want_u[x], 1e-3);
}

/* A non-integer ratio at a realistic size: 250 x 200, R = x, G = y, B = 90 -> 100 x 80
 * (ratio 2.5): samples at (d + .5) * 2.5 - .5 = 2.5d + .75, never clamped (at most
 * 248.25 and 198.25), and R, G are linear: R(x', y') = 2.5x' + .75, G = 2.5y' + .75. */
static void test_resize_linear_ratio_2_5(void **state)
{
    (void)state;
    enum { W = 250, H = 200, DW = 100, DH = 80 };
    uint8_t *px = malloc((size_t)W * H * 3);
    float *t = malloc(3 * (size_t)DW * DH * sizeof *t);
    assert_non_null(px);
    assert_non_null(t);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            px[((size_t)y * W + x) * 3] = (uint8_t)x;
            px[((size_t)y * W + x) * 3 + 1] = (uint8_t)y;
            px[((size_t)y * W + x) * 3 + 2] = 90;
        }
    fw_image img = wrap(px, W, H);
    fw_pre_resize_chw(&img, DW, DH, 0.0f, 1.0f, t);
    for (int y = 0; y < DH; y++)
        for (int x = 0; x < DW; x++) {
            assert_float_equal(at(t, DW, DH, 0, x, y), 2.5f * x + 0.75f, 1e-3);
            assert_float_equal(at(t, DW, DH, 1, x, y), 2.5f * y + 0.75f, 1e-3);
            assert_float_equal(at(t, DW, DH, 2, x, y), 90.0f, 1e-4);
        }
    free(px);
    free(t);
}

/* Deterministic pseudo-random bytes (LCG). */
static void fill_noise(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
}

/* Reference bilinear sample of channel c at destination (dx, dy), straight from the
 * definition, in double precision. */
static double ref_sample(const fw_image *img, int c, int dx, int dy, double rx, double ry)
{
    double s[2] = {(dx + 0.5) * rx - 0.5, (dy + 0.5) * ry - 0.5};
    const int len[2] = {img->width, img->height};
    int i0[2], i1[2];
    double w[2];
    for (int a = 0; a < 2; a++) {
        s[a] = s[a] < 0 ? 0 : s[a] > len[a] - 1 ? len[a] - 1 : s[a];
        i0[a] = (int)s[a];
        i1[a] = i0[a] + 1 < len[a] ? i0[a] + 1 : i0[a];
        w[a] = s[a] - i0[a];
    }
#define PX(x, y) ((double)img->pixels[((size_t)(y)*img->width + (x)) * 3 + c])
    const double top = PX(i0[0], i0[1]) * (1 - w[0]) + PX(i1[0], i0[1]) * w[0];
    const double bot = PX(i0[0], i1[1]) * (1 - w[0]) + PX(i1[0], i1[1]) * w[0];
#undef PX
    return top * (1 - w[1]) + bot * w[1];
}

/* Noise (neighbours differ by up to 255) at odd ratios, shrinking and enlarging: every
 * output value is within 0.02 grey levels of the double-precision definition, right and
 * bottom edges included (the fast path quantises horizontal weights to 1/16384). */
static void test_resize_matches_reference(void **state)
{
    (void)state;
    const int cases[3][4] = {{257, 131, 100, 77}, {37, 29, 101, 83}, {5, 3, 9, 2}};
    for (int k = 0; k < 3; k++) {
        const int w = cases[k][0], h = cases[k][1], dw = cases[k][2], dh = cases[k][3];
        uint8_t *px = malloc((size_t)w * h * 3);
        float *t = malloc(3 * (size_t)dw * dh * sizeof *t);
        assert_non_null(px);
        assert_non_null(t);
        fill_noise(px, (size_t)w * h * 3, (uint32_t)k + 1);
        fw_image img = wrap(px, w, h);
        fw_pre_resize_chw(&img, dw, dh, 0.0f, 1.0f, t);
        const double rx = (double)(float)((float)w / (float)dw);
        const double ry = (double)(float)((float)h / (float)dh);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < dh; y++)
                for (int x = 0; x < dw; x++)
                    assert_float_equal(at(t, dw, dh, c, x, y), ref_sample(&img, c, x, y, rx, ry),
                                       0.02);
        free(px);
        free(t);
    }
}

/* Letterbox of a constant (200, 100, 50) image, mean 127.5, std 128; pad value
 * (0 - 127.5) / 128 = -0.99609375; R (200 - 127.5)/128 = 0.56640625,
 * G (100 - 127.5)/128 = -0.21484375, B (50 - 127.5)/128 = -0.60546875.
 *  4 x 2 into 8 x 8: width limits, scale 8/4 = 2, image rows 0..3 (2*2 = 4), pad 4..7.
 *  2 x 4 into 8 x 8: height limits, scale 2, image columns 0..3, pad 4..7. */
static void check_letterbox_const(int w, int h, int rw, int rh)
{
    enum { D = 8 };
    uint8_t px[8 * 3];
    for (int i = 0; i < w * h; i++) {
        px[3 * i] = 200;
        px[3 * i + 1] = 100;
        px[3 * i + 2] = 50;
    }
    fw_image img = wrap(px, w, h);
    float t[3 * D * D];
    assert_float_equal(fw_pre_letterbox_chw(&img, D, D, 127.5f, 128.0f, t), 2.0f, 1e-6);
    const float want[3] = {0.56640625f, -0.21484375f, -0.60546875f};
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < D; y++)
            for (int x = 0; x < D; x++) {
                const float v = at(t, D, D, c, x, y);
                if (x < rw && y < rh)
                    assert_float_equal(v, want[c], 1e-6);
                else
                    assert_float_equal(v, -0.99609375f, 1e-6);
            }
}

static void test_letterbox_constant(void **state)
{
    (void)state;
    check_letterbox_const(4, 2, 8, 4);
    check_letterbox_const(2, 4, 4, 8);
}

/* Shrinking: 8 x 4 (R = 10x) into 4 x 4: width limits, scale 4/8 = .5, 2 rows of image.
 * x samples at 2d + .5 -> R 5, 25, 45, 65; mean 10, std 2 -> -2.5, 7.5, 17.5, 27.5;
 * rows 2..3 pad (0 - 10) / 2 = -5. */
static void test_letterbox_gradient(void **state)
{
    (void)state;
    uint8_t px[8 * 4 * 3];
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 8; x++) {
            px[(y * 8 + x) * 3] = (uint8_t)(10 * x);
            px[(y * 8 + x) * 3 + 1] = 10;
            px[(y * 8 + x) * 3 + 2] = 10;
        }
    fw_image img = wrap(px, 8, 4);
    float t[3 * 4 * 4];
    assert_float_equal(fw_pre_letterbox_chw(&img, 4, 4, 10.0f, 2.0f, t), 0.5f, 1e-6);
    const float want[4] = {-2.5f, 7.5f, 17.5f, 27.5f};
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) {
            if (y < 2) {
                assert_float_equal(at(t, 4, 4, 0, x, y), want[x], 1e-4);
                assert_float_equal(at(t, 4, 4, 1, x, y), 0.0f, 1e-4);
            } else {
                for (int c = 0; c < 3; c++)
                    assert_float_equal(at(t, 4, 4, c, x, y), -5.0f, 1e-6);
            }
        }
}

/* Rounding the unconstrained side: 300 x 200 into 64 x 64: scale 64/300 = 0.21333,
 * 200 * 0.21333 = 42.67 -> 43 image rows (0..42), pad from row 43. */
static void test_letterbox_rounding(void **state)
{
    (void)state;
    enum { W = 300, H = 200, D = 64 };
    uint8_t *px = malloc((size_t)W * H * 3);
    float *t = malloc(3 * D * D * sizeof *t);
    assert_non_null(px);
    assert_non_null(t);
    memset(px, 255, (size_t)W * H * 3);
    fw_image img = wrap(px, W, H);
    assert_float_equal(fw_pre_letterbox_chw(&img, D, D, 0.0f, 1.0f, t), 64.0f / 300.0f, 1e-6);
    for (int x = 0; x < D; x++) {
        assert_float_equal(at(t, D, D, 1, x, 42), 255.0f, 1e-4);
        assert_float_equal(at(t, D, D, 1, x, 43), 0.0f, 0);
        assert_float_equal(at(t, D, D, 2, x, 63), 0.0f, 0);
    }
    free(px);
    free(t);
}

/* Two pixels (0, 127, 255), (10, 20, 30), mean = std = 127.5:
 * R -1, (10 - 127.5)/127.5 = -0.921569; G -0.003922, -0.843137; B 1, -0.764706. */
static void test_rgb_to_chw(void **state)
{
    (void)state;
    const uint8_t rgb[6] = {0, 127, 255, 10, 20, 30};
    float t[6];
    fw_pre_rgb_to_chw(rgb, 2, 1, 127.5f, 127.5f, t);
    const float want[6] = {-1.0f, -0.921569f, -0.003922f, -0.843137f, 1.0f, -0.764706f};
    for (int i = 0; i < 6; i++)
        assert_float_equal(t[i], want[i], 1e-5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_constant),
        cmocka_unit_test(test_resize_gradient_2d),
        cmocka_unit_test(test_resize_gradient_1d),
        cmocka_unit_test(test_resize_linear_ratio_2_5),
        cmocka_unit_test(test_resize_matches_reference),
        cmocka_unit_test(test_letterbox_constant),
        cmocka_unit_test(test_letterbox_gradient),
        cmocka_unit_test(test_letterbox_rounding),
        cmocka_unit_test(test_rgb_to_chw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
