/* Unit tests for the detector output decoders: Ultra-Light (decoded 0..1 corner boxes and
 * softmaxed scores) and SCRFD (per-stride anchor grids, distances in stride units).
 * Expected values are worked out by hand in the comments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "core/detect.h"

static void assert_box(const fw_det *d, float x1, float y1, float x2, float y2)
{
    assert_float_equal(d->box[0], x1, 1e-3);
    assert_float_equal(d->box[1], y1, 1e-3);
    assert_float_equal(d->box[2], x2, 1e-3);
    assert_float_equal(d->box[3], y2, 1e-3);
}

/* Six anchors on a 320 x 240 image, threshold 0.65:
 *   a0 face .10 < .65                                  -> dropped
 *   a1 face .80, box (.25,.5,.75,1)                    -> (80, 120, 240, 240)
 *   a2 face .65 == threshold, box (-.1,-.05,.5,.5)     -> (-32,-12,160,120) clipped to
 *                                                         (0, 0, 160, 120)
 *   a3 face .99, box (.9,.9,1.2,1.1)                   -> (288,216,384,264) clipped to
 *                                                         (288, 216, 320, 240)
 *   a4 face .90, box (1.1,.1,1.3,.2): x clipped to 320..320, empty -> dropped
 *   a5 face .90, NaN box                               -> dropped */
static const float UL_SCORES[6 * 2] = {
    0.90f, 0.10f, 0.20f, 0.80f, 0.35f, 0.65f, 0.01f, 0.99f, 0.10f, 0.90f, 0.10f, 0.90f,
};

static void ul_boxes(float b[6 * 4])
{
    const float v[6 * 4] = {
        0.1f, 0.1f, 0.2f, 0.2f, 0.25f, 0.5f, 0.75f, 1.0f, -0.1f, -0.05f, 0.5f, 0.5f,
        0.9f, 0.9f, 1.2f, 1.1f, 1.1f,  0.1f, 1.3f,  0.2f, 0.1f,  0.1f,   0.2f, 0.2f,
    };
    memcpy(b, v, sizeof v);
    b[5 * 4 + 2] = NAN;
}

static void test_ultralight_decode(void **state)
{
    (void)state;
    float boxes[6 * 4];
    ul_boxes(boxes);
    fw_det out[8];
    size_t n = fw_ultralight_decode(UL_SCORES, boxes, 6, 0.65f, 320, 240, out, 8);
    assert_int_equal(n, 3);
    assert_box(&out[0], 80, 120, 240, 240);
    assert_float_equal(out[0].score, 0.80f, 0);
    assert_box(&out[1], 0, 0, 160, 120);
    assert_float_equal(out[1].score, 0.65f, 0);
    assert_box(&out[2], 288, 216, 320, 240);
    assert_float_equal(out[2].score, 0.99f, 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(out[i].has_kps, 0);
}

/* A non-square image scales x by the width and y by the height. Threshold 0.7 drops a2
 * (.65): a1 on 640 x 100 gives (160, 50, 480, 100), and a3. Threshold 0.9 passes a3 (.99),
 * a4 (.90, but empty after clipping: dropped) and a5 (NaN box: dropped): only a3,
 * (576, 90, 768, 110) clipped to (576, 90, 640, 100). */
static void test_ultralight_scaling_and_threshold(void **state)
{
    (void)state;
    float boxes[6 * 4];
    ul_boxes(boxes);
    fw_det out[8];
    size_t n = fw_ultralight_decode(UL_SCORES, boxes, 6, 0.7f, 640, 100, out, 8);
    assert_int_equal(n, 2);
    assert_box(&out[0], 160, 50, 480, 100);
    n = fw_ultralight_decode(UL_SCORES, boxes, 6, 0.9f, 640, 100, out, 8);
    assert_int_equal(n, 1);
    assert_box(&out[0], 576, 90, 640, 100);
    assert_float_equal(out[0].score, 0.99f, 0);
}

/* With room for two, the two best of the three survivors are kept (a3 .99, a1 .80), not
 * the first two found; cap 0 writes nothing. */
static void test_ultralight_cap_keeps_best(void **state)
{
    (void)state;
    float boxes[6 * 4];
    ul_boxes(boxes);
    fw_det out[2];
    size_t n = fw_ultralight_decode(UL_SCORES, boxes, 6, 0.65f, 320, 240, out, 2);
    assert_int_equal(n, 2);
    float s0 = fmaxf(out[0].score, out[1].score), s1 = fminf(out[0].score, out[1].score);
    assert_float_equal(s0, 0.99f, 0);
    assert_float_equal(s1, 0.80f, 0);
    assert_int_equal(fw_ultralight_decode(UL_SCORES, boxes, 6, 0.65f, 320, 240, out, 0), 0);
    assert_int_equal(fw_ultralight_decode(UL_SCORES, boxes, 0, 0.65f, 320, 240, out, 2), 0);
}

/* SCRFD on a 32 x 32 input, strides 8 / 16 / 32 (grids 4x4, 2x2, 1x1), 2 anchors per
 * location, so 32, 8 and 2 entries; index = (y * grid_w + x) * 2 + anchor. The image was
 * 64 x 64 resized to 32 x 32: scale 0.5 input px per image px, so results are doubled.
 *
 *  stride 8, idx 0 (y0 x0 a0): .30 < .5 -> dropped
 *  stride 8, idx 13 = (1*4+2)*2+1: y1 x2 a1, centre (16, 8), score .9
 *      d = (1, .5, 2, 1.5) * 8 = (8, 4, 16, 12): box (16-8, 8-4, 16+16, 8+12) = (8,4,32,20)
 *      -> image (16, 8, 64, 40)
 *      kp0 (.5, .25)*8 = (4, 2) -> (20, 10) -> (40, 20); kp1..4 (-1, 1)*8 -> (8, 16) -> (16, 32)
 *  stride 16, idx 4 = (1*2+0)*2+0: y1 x0 a0, centre (0, 16), score .5 (== threshold)
 *      d = (.5,.5,.5,.5)*16 = 8: box (-8, 8, 8, 24) -> (-16, 16, 16, 48) (not clipped)
 *      kps all (0, 0) -> centre (0, 16) -> (0, 32)
 *  stride 32, idx 1: y0 x0 a1, centre (0, 0), score .7, d = (0,0,1,1)*32: (0,0,32,32)
 *      -> (0, 0, 64, 64); kps (1, 1)*32 -> (32, 32) -> (64, 64)
 * Output in level order, anchor order within a level. */
typedef struct scrfd_fixture {
    float s8[32], b8[32 * 4], k8[32 * 10];
    float s16[8], b16[8 * 4], k16[8 * 10];
    float s32[2], b32[2 * 4], k32[2 * 10];
} scrfd_fixture;

static void scrfd_fill(scrfd_fixture *f)
{
    memset(f, 0, sizeof *f);
    f->s8[0] = 0.3f;
    f->b8[0] = f->b8[1] = f->b8[2] = f->b8[3] = 1.0f;
    f->s8[13] = 0.9f;
    f->b8[13 * 4 + 0] = 1.0f;
    f->b8[13 * 4 + 1] = 0.5f;
    f->b8[13 * 4 + 2] = 2.0f;
    f->b8[13 * 4 + 3] = 1.5f;
    f->k8[13 * 10 + 0] = 0.5f;
    f->k8[13 * 10 + 1] = 0.25f;
    for (int p = 1; p < 5; p++) {
        f->k8[13 * 10 + 2 * p] = -1.0f;
        f->k8[13 * 10 + 2 * p + 1] = 1.0f;
    }
    f->s16[4] = 0.5f;
    for (int j = 0; j < 4; j++)
        f->b16[4 * 4 + j] = 0.5f;
    f->s32[1] = 0.7f;
    f->b32[1 * 4 + 2] = 1.0f;
    f->b32[1 * 4 + 3] = 1.0f;
    for (int j = 0; j < 10; j++)
        f->k32[1 * 10 + j] = 1.0f;
}

static void test_scrfd_decode(void **state)
{
    (void)state;
    static scrfd_fixture f;
    scrfd_fill(&f);
    fw_scrfd_level lv[3] = {
        {f.s8, f.b8, f.k8, 8}, {f.s16, f.b16, f.k16, 16}, {f.s32, f.b32, f.k32, 32}};
    fw_det out[8];
    size_t n = fw_scrfd_decode(lv, 3, 32, 32, 2, 0.5f, 0.5f, out, 8);
    assert_int_equal(n, 3);

    assert_float_equal(out[0].score, 0.9f, 0);
    assert_box(&out[0], 16, 8, 64, 40);
    assert_int_equal(out[0].has_kps, 1);
    assert_float_equal(out[0].kps[0][0], 40, 1e-4);
    assert_float_equal(out[0].kps[0][1], 20, 1e-4);
    for (int p = 1; p < 5; p++) {
        assert_float_equal(out[0].kps[p][0], 16, 1e-4);
        assert_float_equal(out[0].kps[p][1], 32, 1e-4);
    }

    assert_float_equal(out[1].score, 0.5f, 0);
    assert_box(&out[1], -16, 16, 16, 48);
    for (int p = 0; p < 5; p++) {
        assert_float_equal(out[1].kps[p][0], 0, 1e-4);
        assert_float_equal(out[1].kps[p][1], 32, 1e-4);
    }

    assert_float_equal(out[2].score, 0.7f, 0);
    assert_box(&out[2], 0, 0, 64, 64);
    assert_float_equal(out[2].kps[3][0], 64, 1e-4);
    assert_float_equal(out[2].kps[3][1], 64, 1e-4);
}

/* Without keypoints (6-output models) the same boxes come back with has_kps 0; a higher
 * threshold (.8) keeps only the .9 one; scale 1 leaves input pixels: (8, 4, 32, 20). */
static void test_scrfd_no_kps_threshold_scale1(void **state)
{
    (void)state;
    static scrfd_fixture f;
    scrfd_fill(&f);
    fw_scrfd_level lv[3] = {
        {f.s8, f.b8, NULL, 8}, {f.s16, f.b16, NULL, 16}, {f.s32, f.b32, NULL, 32}};
    fw_det out[8];
    size_t n = fw_scrfd_decode(lv, 3, 32, 32, 2, 0.5f, 1.0f, out, 8);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(out[i].has_kps, 0);
    assert_box(&out[0], 8, 4, 32, 20);
    n = fw_scrfd_decode(lv, 3, 32, 32, 2, 0.8f, 1.0f, out, 8);
    assert_int_equal(n, 1);
    assert_box(&out[0], 8, 4, 32, 20);
}

/* Non-square input 64 x 32 (w x h), stride 16, 2 anchors: grid 4 wide, 2 high, 16 entries.
 * Index 14 = (1*4+3)*2+0 -> y1 x3, centre (48, 16); d = (1,1,1,1)*16: (32, 0, 64, 32).
 * Scale 2 (image upscaled 2x into the input) halves it: (16, 0, 32, 16).
 * One anchor per location, stride 8 on 32 x 32: index 6 = y1 x2, centre (16, 8);
 * d = (.5,.5,.5,.5)*8: (12, 4, 20, 12). */
static void test_scrfd_grid_layout(void **state)
{
    (void)state;
    float s[16] = {0}, b[16 * 4] = {0};
    s[14] = 0.6f;
    for (int j = 0; j < 4; j++)
        b[14 * 4 + j] = 1.0f;
    fw_scrfd_level lv = {s, b, NULL, 16};
    fw_det out[4];
    assert_int_equal(fw_scrfd_decode(&lv, 1, 64, 32, 2, 0.5f, 2.0f, out, 4), 1);
    assert_box(&out[0], 16, 0, 32, 16);

    float s1[16] = {0}, b1[16 * 4] = {0};
    s1[6] = 0.6f;
    for (int j = 0; j < 4; j++)
        b1[6 * 4 + j] = 0.5f;
    fw_scrfd_level l1 = {s1, b1, NULL, 8};
    assert_int_equal(fw_scrfd_decode(&l1, 1, 32, 32, 1, 0.5f, 1.0f, out, 4), 1);
    assert_box(&out[0], 12, 4, 20, 12);
}

/* Every anchor passes: the cap keeps the highest scores. 32 + 8 + 2 = 42 candidates with
 * distinct scores i / 100; cap 5 -> the five best, .41 .. .37. */
static void test_scrfd_cap(void **state)
{
    (void)state;
    static scrfd_fixture f;
    scrfd_fill(&f);
    int i = 0;
    for (int j = 0; j < 32; j++)
        f.s8[j] = (float)(i++) / 100.0f;
    for (int j = 0; j < 8; j++)
        f.s16[j] = (float)(i++) / 100.0f;
    for (int j = 0; j < 2; j++)
        f.s32[j] = (float)(i++) / 100.0f;
    fw_scrfd_level lv[3] = {
        {f.s8, f.b8, f.k8, 8}, {f.s16, f.b16, f.k16, 16}, {f.s32, f.b32, f.k32, 32}};
    fw_det out[5];
    assert_int_equal(fw_scrfd_decode(lv, 3, 32, 32, 2, 0.0f, 1.0f, out, 5), 5);
    float sum = 0;
    for (int j = 0; j < 5; j++) {
        assert_true(out[j].score >= 0.365f);
        sum += out[j].score;
    }
    assert_float_equal(sum, 0.37f + 0.38f + 0.39f + 0.40f + 0.41f, 1e-5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ultralight_decode),
        cmocka_unit_test(test_ultralight_scaling_and_threshold),
        cmocka_unit_test(test_ultralight_cap_keeps_best),
        cmocka_unit_test(test_scrfd_decode),
        cmocka_unit_test(test_scrfd_no_kps_threshold_scale1),
        cmocka_unit_test(test_scrfd_grid_layout),
        cmocka_unit_test(test_scrfd_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
