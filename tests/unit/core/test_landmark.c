/* Unit tests for the 68-point landmark model's input crop (square to the box height,
 * centred, whole pixels, clipped to the image; 64 x 64 gray / 256) and the 68 -> 5
 * reduction. Expected values are worked out by hand in the comments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/landmark.h"

enum { N = FW_LMK68_SIZE };

static fw_image wrap(uint8_t *px, int w, int h)
{
    fw_image img = {w, h, w, h, px};
    return img;
}

static uint8_t *make_const(int w, int h, uint8_t r, uint8_t g, uint8_t b)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    assert_non_null(p);
    for (int i = 0; i < w * h; i++) {
        p[3 * i] = r;
        p[3 * i + 1] = g;
        p[3 * i + 2] = b;
    }
    return p;
}

static void check_crop(const fw_image *img, float x1, float y1, float x2, float y2, float cx,
                       float cy, float cw, float ch)
{
    static float dst[N * N];
    float crop[4] = {-1, -1, -1, -1};
    const float box[4] = {x1, y1, x2, y2};
    fw_lmk68_prepare(img, box, dst, crop);
    assert_float_equal(crop[0], cx, 0);
    assert_float_equal(crop[1], cy, 0);
    assert_float_equal(crop[2], cw, 0);
    assert_float_equal(crop[3], ch, 0);
}

/* On a 200 x 100 image (side = round(box height), corner = round(centre - side / 2)):
 *  wider than high  (40,20)-(100,60): h 40, centre (70,40) -> (50, 20) 40 x 40
 *  taller than wide (40,10)-(60,90):  h 80, centre (50,50) -> (10, 10) 80 x 80
 *  fractional (10.2,20.1)-(31,50.4):  h 30.3 -> 30, centre (20.6, 35.25)
 *                                      -> (round 5.6, round 20.25) = (6, 20) 30 x 30
 *  left border (0,10)-(20,70):       h 60, centre (10,40) -> (-20,10)..(40,70)
 *                                      clipped to (0, 10) 40 x 60
 *  bottom-right (180,60)-(200,110):  h 50, centre (190,85) -> (165,60)..(215,110)
 *                                      clipped to (165, 60) 35 x 40
 *  entirely outside (300,10)-(320,30): h 20 -> (300,10)..(320,30): nothing left; the
 *                                      nearest column is used: (199, 10) 1 x 20 */
static void test_crop_geometry(void **state)
{
    (void)state;
    uint8_t *px = make_const(200, 100, 1, 2, 3);
    fw_image img = wrap(px, 200, 100);
    check_crop(&img, 40, 20, 100, 60, 50, 20, 40, 40);
    check_crop(&img, 40, 10, 60, 90, 10, 10, 80, 80);
    check_crop(&img, 10.2f, 20.1f, 31.0f, 50.4f, 6, 20, 30, 30);
    check_crop(&img, 0, 10, 20, 70, 0, 10, 40, 60);
    check_crop(&img, 180, 60, 200, 110, 165, 60, 35, 40);
    check_crop(&img, 300, 10, 320, 30, 199, 10, 1, 20);
    free(px);
}

/* Constant (100, 200, 50): gray = .299*100 + .587*200 + .114*50 = 29.9 + 117.4 + 5.7
 * = 153 -> 153 / 256 = 0.59765625 everywhere, whatever the crop's scale. */
static void test_gray_value(void **state)
{
    (void)state;
    uint8_t *px = make_const(200, 100, 100, 200, 50);
    fw_image img = wrap(px, 200, 100);
    static float dst[N * N];
    float crop[4];
    const float boxes[2][4] = {{40, 20, 100, 60}, {150, 0, 190, 100}};
    for (int b = 0; b < 2; b++) {
        fw_lmk68_prepare(&img, boxes[b], dst, crop);
        for (int i = 0; i < N * N; i++)
            assert_float_equal(dst[i], 0.59765625f, 1e-5);
    }
    free(px);
}

/* Resampling inside the crop. Image 200 x 100, R = G = B = 2y (gray = 2y since the
 * weights sum to 1), box (60,0)-(160,100): h 100, centre (110, 50) -> crop (60, 0)
 * 100 x 100. Ratio 100/64 = 1.5625: output row j samples y = (j + .5) * 1.5625 - .5
 * (0.28125 .. 98.71875, never clamped), so dst(i, j) = 2y / 256 for every i.
 * Then R = G = B = x + 20 (<= 219) with the box moved to (10,0)-(110,100): crop (10, 0)
 * 100 x 100, column i samples crop x = (i + .5) * 1.5625 - .5, image x = that + 10,
 * dst(i, j) = (x + 20) / 256. */
static void test_resample(void **state)
{
    (void)state;
    enum { W = 200, H = 100 };
    uint8_t *px = malloc((size_t)W * H * 3);
    assert_non_null(px);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            memset(px + ((size_t)y * W + x) * 3, 2 * y, 3);
    fw_image img = wrap(px, W, H);
    static float dst[N * N];
    float crop[4];
    const float box[4] = {60, 0, 160, 100};
    fw_lmk68_prepare(&img, box, dst, crop);
    assert_float_equal(crop[0], 60, 0);
    assert_float_equal(crop[2], 100, 0);
    for (int j = 0; j < N; j++) {
        const float y = ((float)j + 0.5f) * 1.5625f - 0.5f;
        for (int i = 0; i < N; i++)
            assert_float_equal(dst[j * N + i], 2.0f * y / 256.0f, 1e-4);
    }

    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            memset(px + ((size_t)y * W + x) * 3, x + 20, 3);
    const float box2[4] = {10, 0, 110, 100};
    fw_lmk68_prepare(&img, box2, dst, crop);
    assert_float_equal(crop[0], 10, 0);
    for (int j = 0; j < N; j++)
        for (int i = 0; i < N; i++) {
            const float x = ((float)i + 0.5f) * 1.5625f - 0.5f + 10.0f;
            assert_float_equal(dst[j * N + i], (x + 20.0f) / 256.0f, 1e-4);
        }
    free(px);
}

/* Only the channels' gray mix matters: pure red 255 -> .299*255/256 = 0.297832, pure
 * green -> .587*255/256 = 0.584707, pure blue -> .114*255/256 = 0.113555. */
static void test_gray_weights(void **state)
{
    (void)state;
    const uint8_t rgb[3][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    const float want[3] = {0.297832f, 0.584707f, 0.113555f};
    static float dst[N * N];
    float crop[4];
    const float box[4] = {0, 0, 16, 16};
    for (int c = 0; c < 3; c++) {
        uint8_t *px = make_const(16, 16, rgb[c][0], rgb[c][1], rgb[c][2]);
        fw_image img = wrap(px, 16, 16);
        fw_lmk68_prepare(&img, box, dst, crop);
        assert_float_equal(dst[0], want[c], 1e-5);
        assert_float_equal(dst[N * N - 1], want[c], 1e-5);
        free(px);
    }
}

/* Synthetic model output: point p at (0.01 p, 0.005 p) relative to the crop for the points
 * the reduction uses, garbage (1e6) elsewhere. Crop (10, 20) 100 x 50, so point p maps
 * to (10 + p, 20 + 0.25 p), linear in p, so a mean of points is the point at the mean
 * index:
 *   eye 1   mean(37,38,40,41) = 39 -> (49, 29.75)
 *   eye 2   mean(43,44,46,47) = 45 -> (55, 31.25)
 *   nose    30                     -> (40, 27.5)
 *   mouth L mean(48,60) = 54       -> (64, 33.5)
 *   mouth R mean(54,64) = 59       -> (69, 34.75) */
static void test_to5(void **state)
{
    (void)state;
    float out[136];
    for (int i = 0; i < 136; i++)
        out[i] = 1e6f;
    const int used[] = {37, 38, 40, 41, 43, 44, 46, 47, 30, 48, 60, 54, 64};
    for (size_t k = 0; k < sizeof used / sizeof used[0]; k++) {
        out[2 * used[k]] = 0.01f * (float)used[k];
        out[2 * used[k] + 1] = 0.005f * (float)used[k];
    }
    const float crop[4] = {10, 20, 100, 50};
    float pts[5][2];
    fw_lmk68_to5(out, crop, pts);
    const float want[5][2] = {{49, 29.75f}, {55, 31.25f}, {40, 27.5f}, {64, 33.5f}, {69, 34.75f}};
    for (int i = 0; i < 5; i++) {
        assert_float_equal(pts[i][0], want[i][0], 1e-4);
        assert_float_equal(pts[i][1], want[i][1], 1e-4);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crop_geometry), cmocka_unit_test(test_gray_value),
        cmocka_unit_test(test_resample),      cmocka_unit_test(test_gray_weights),
        cmocka_unit_test(test_to5),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
