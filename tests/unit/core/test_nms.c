/* Unit tests for fw_iou and fw_nms (score-sorted greedy suppression, IoU > threshold).
 * Expected values are worked out by hand in the comments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/detect.h"

static fw_det mk(float x1, float y1, float x2, float y2, float score)
{
    fw_det d;
    memset(&d, 0, sizeof d);
    d.box[0] = x1;
    d.box[1] = y1;
    d.box[2] = x2;
    d.box[3] = y2;
    d.score = score;
    return d;
}

static void assert_box(const fw_det *d, float x1, float y1, float x2, float y2)
{
    assert_float_equal(d->box[0], x1, 1e-6);
    assert_float_equal(d->box[1], y1, 1e-6);
    assert_float_equal(d->box[2], x2, 1e-6);
    assert_float_equal(d->box[3], y2, 1e-6);
}

static void test_iou(void **state)
{
    (void)state;
    const float a[4] = {0, 0, 10, 10};
    /* partial overlap: intersection 5 x 5 = 25, union 100 + 100 - 25 = 175 -> 1/7 */
    const float b[4] = {5, 5, 15, 15};
    assert_float_equal(fw_iou(a, b), 25.0f / 175.0f, 1e-6);
    assert_float_equal(fw_iou(b, a), 25.0f / 175.0f, 1e-6);
    /* contained: 4 x 4 = 16 inside 100 -> 0.16 */
    const float c[4] = {2, 2, 6, 6};
    assert_float_equal(fw_iou(a, c), 0.16f, 1e-6);
    /* identical -> 1 */
    assert_float_equal(fw_iou(a, a), 1.0f, 1e-6);
    /* sharing only an edge -> 0; disjoint -> 0 */
    const float d[4] = {10, 0, 20, 10};
    const float e[4] = {30, 30, 40, 40};
    assert_float_equal(fw_iou(a, d), 0.0f, 0);
    assert_float_equal(fw_iou(a, e), 0.0f, 0);
    /* zero-area boxes -> 0, not NaN */
    const float z[4] = {3, 3, 3, 3};
    assert_float_equal(fw_iou(z, z), 0.0f, 0);
    /* half overlap in one axis: [0,10]x[0,10] vs [0,10]x[0,5]: 50 / 100 = 0.5 exactly */
    const float h[4] = {0, 0, 10, 5};
    assert_true(fw_iou(a, h) == 0.5f);
}

/* A .9 [0,0,10,10]; B .8 [1,0,11,10]: inter 9*10 = 90, union 110 -> 0.82 > 0.4: suppressed;
 * C .7 far away: kept. Input given in C, A, B order: output sorted by score. */
static void test_nms_overlap_and_disjoint(void **state)
{
    (void)state;
    fw_det d[3] = {mk(20, 20, 30, 30, 0.7f), mk(0, 0, 10, 10, 0.9f), mk(1, 0, 11, 10, 0.8f)};
    size_t k = fw_nms(d, 3, 0.4f);
    assert_int_equal(k, 2);
    assert_float_equal(d[0].score, 0.9f, 0);
    assert_box(&d[0], 0, 0, 10, 10);
    assert_float_equal(d[1].score, 0.7f, 0);
    assert_box(&d[1], 20, 20, 30, 30);
}

/* Greedy order matters: A .9 [0,0,10,10], B .8 [4,0,14,10], C .7 [8,0,18,10].
 * IoU(A,B) = 6*10 / (200 - 60) = 0.43 > 0.4 -> B suppressed by A.
 * IoU(A,C) = 2*10 / (200 - 20) = 0.11 -> C kept (B would have suppressed C: 60/140, but a
 * suppressed box suppresses nothing). */
static void test_nms_suppressed_box_suppresses_nothing(void **state)
{
    (void)state;
    fw_det d[3] = {mk(0, 0, 10, 10, 0.9f), mk(4, 0, 14, 10, 0.8f), mk(8, 0, 18, 10, 0.7f)};
    size_t k = fw_nms(d, 3, 0.4f);
    assert_int_equal(k, 2);
    assert_box(&d[0], 0, 0, 10, 10);
    assert_box(&d[1], 8, 0, 18, 10);
}

/* Equal scores keep their input order; with overlap the earlier one wins.
 * [0,0,10,10] vs [0,0,10,9]: 90 / 100 = 0.9. */
static void test_nms_equal_scores_stable(void **state)
{
    (void)state;
    fw_det d[3] = {mk(40, 0, 50, 10, 0.5f), mk(0, 0, 10, 10, 0.5f), mk(20, 0, 30, 10, 0.5f)};
    assert_int_equal(fw_nms(d, 3, 0.4f), 3);
    assert_box(&d[0], 40, 0, 50, 10);
    assert_box(&d[1], 0, 0, 10, 10);
    assert_box(&d[2], 20, 0, 30, 10);

    fw_det e[2] = {mk(0, 0, 10, 10, 0.5f), mk(0, 0, 10, 9, 0.5f)};
    assert_int_equal(fw_nms(e, 2, 0.4f), 1);
    assert_box(&e[0], 0, 0, 10, 10);
    fw_det f[2] = {mk(0, 0, 10, 9, 0.5f), mk(0, 0, 10, 10, 0.5f)};
    assert_int_equal(fw_nms(f, 2, 0.4f), 1);
    assert_box(&f[0], 0, 0, 10, 9);
}

/* [0,0,10,10] .9 and [0,0,10,5] .8: IoU = 50 / 100 = 0.5 exactly. Suppression needs
 * IoU > threshold: at 0.5 both stay; just below, one goes. */
static void test_nms_iou_exactly_at_threshold(void **state)
{
    (void)state;
    fw_det d[2] = {mk(0, 0, 10, 10, 0.9f), mk(0, 0, 10, 5, 0.8f)};
    assert_int_equal(fw_nms(d, 2, 0.5f), 2);
    fw_det e[2] = {mk(0, 0, 10, 10, 0.9f), mk(0, 0, 10, 5, 0.8f)};
    assert_int_equal(fw_nms(e, 2, 0.49f), 1);
    assert_float_equal(e[0].score, 0.9f, 0);
}

static void test_nms_empty(void **state)
{
    (void)state;
    assert_int_equal(fw_nms(NULL, 0, 0.4f), 0);
    fw_det d[1] = {mk(0, 0, 1, 1, 0.5f)};
    assert_int_equal(fw_nms(d, 0, 0.4f), 0);
    /* a single box is always kept */
    assert_int_equal(fw_nms(d, 1, 0.4f), 1);
}

/* Five boxes [i,0,10+i,10] with scores 0.1*(i+1): the best is i = 4, [4,0,14,10]. Its IoU
 * with i = 0 (the farthest) is 6*10 / (200 - 60) = 0.43 > 0.4, with the others larger:
 * everything else goes. */
static void test_nms_all_suppressed_but_one(void **state)
{
    (void)state;
    fw_det d[5];
    for (int i = 0; i < 5; i++)
        d[i] = mk((float)i, 0, 10.0f + (float)i, 10, 0.1f * (float)(i + 1));
    assert_int_equal(fw_nms(d, 5, 0.4f), 1);
    assert_box(&d[0], 4, 0, 14, 10);
    assert_float_equal(d[0].score, 0.5f, 1e-6);
}

/* More than the small-input path handles: 100 disjoint boxes, scores (i*37 % 10) / 10 with
 * many ties. All are kept, sorted by score descending, ties in input (x) order; the rest
 * of the det (keypoints) travels with its box. */
static void test_nms_large_sort(void **state)
{
    (void)state;
    enum { N = 100 };
    fw_det d[N];
    for (int i = 0; i < N; i++) {
        d[i] = mk(20.0f * (float)i, 0, 20.0f * (float)i + 10.0f, 10, (float)((i * 37) % 10) / 10);
        d[i].kps[0][0] = (float)i;
        d[i].has_kps = 1;
    }
    assert_int_equal(fw_nms(d, N, 0.4f), N);
    for (int i = 0; i < N; i++) {
        assert_float_equal(d[i].kps[0][0] * 20.0f, d[i].box[0], 0);
        if (i == 0)
            continue;
        assert_true(d[i - 1].score >= d[i].score);
        if (d[i - 1].score == d[i].score)
            assert_true(d[i - 1].box[0] < d[i].box[0]);
    }
    assert_float_equal(d[0].score, 0.9f, 1e-6);
    assert_float_equal(d[N - 1].score, 0.0f, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iou),
        cmocka_unit_test(test_nms_overlap_and_disjoint),
        cmocka_unit_test(test_nms_suppressed_box_suppresses_nothing),
        cmocka_unit_test(test_nms_equal_scores_stable),
        cmocka_unit_test(test_nms_iou_exactly_at_threshold),
        cmocka_unit_test(test_nms_empty),
        cmocka_unit_test(test_nms_all_suppressed_but_one),
        cmocka_unit_test(test_nms_large_sort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
