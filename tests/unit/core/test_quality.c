/* Per-face quality functions (core/quality.h) against values computed independently by
 * tests/data/quality/make_expected.py (NumPy; its output expected.json is committed). */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/quality.h"
#include "facework/facework.h"

static json_t *expected;

static void data_path(char *buf, size_t cap, const char *name)
{
    const char *dir = getenv("FW_TEST_DATA");
    snprintf(buf, cap, "%s/quality/%s", dir ? dir : "tests/data", name);
}

static int setup(void **state)
{
    (void)state;
    char path[1024];
    data_path(path, sizeof path, "expected.json");
    json_error_t e;
    expected = json_load_file(path, 0, &e);
    if (!expected)
        fprintf(stderr, "%s: %s\n", path, e.text);
    return expected ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(expected);
    return 0;
}

/* The pattern make_expected.py's synthetic() draws. */
static uint8_t *synthetic(int w, int h, int seed)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    assert_non_null(p);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *o = p + ((size_t)y * w + x) * 3;
            o[0] = (uint8_t)((x * 7 + y * 13 + (x * y) % 31 + seed) % 256);
            o[1] = (uint8_t)((x * x + 3 * y + seed * 5) % 256);
            o[2] = (uint8_t)(((x ^ y) * 11 + seed) % 256);
        }
    return p;
}

static double num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    assert_true(json_is_number(v));
    return json_number_value(v);
}

static void assert_close(double got, double want, double tol, const char *what)
{
    if (!(fabs(got - want) <= tol))
        fail_msg("%s: got %.9g, want %.9g (tolerance %g)", what, got, want, tol);
}

static void test_sharpness_synthetic(void **state)
{
    (void)state;
    const json_t *cases = json_object_get(expected, "sharpness_synthetic");
    assert_true(json_array_size(cases) >= 5);
    size_t i;
    const json_t *c;
    json_array_foreach(cases, i, c)
    {
        int w = (int)num(c, "w"), h = (int)num(c, "h"), seed = (int)num(c, "seed");
        uint8_t *img = synthetic(w, h, seed);
        int r[4] = {0, 0, w, h};
        const json_t *reg = json_object_get(c, "region");
        if (json_is_array(reg))
            for (int k = 0; k < 4; k++)
                r[k] = (int)json_integer_value(json_array_get(reg, (size_t)k));
        double got = fw_sharpness_rgb(img, (size_t)w * 3, r[0], r[1], r[2] - r[0], r[3] - r[1]);
        char what[64];
        snprintf(what, sizeof what, "synthetic %dx%d seed %d", w, h, seed);
        /* both sides compute integer sums exactly: only the last division rounds */
        assert_close(got, num(c, "expected"), 1e-9 * (1 + num(c, "expected")), what);
        free(img);
    }
    /* an empty region measures nothing */
    uint8_t px[3] = {1, 2, 3};
    assert_true(fw_sharpness_rgb(px, 3, 0, 0, 0, 1) == 0.0);
}

/* Real face crops written as PNG by facework; NumPy decoded them with zlib. */
static void test_sharpness_real_crops(void **state)
{
    (void)state;
    const json_t *cases = json_object_get(expected, "sharpness_files");
    assert_int_equal(json_array_size(cases), 2);
    size_t i;
    const json_t *c;
    json_array_foreach(cases, i, c)
    {
        char path[1024];
        const char *name = json_string_value(json_object_get(c, "file"));
        data_path(path, sizeof path, name);
        fw_image *img = NULL;
        fw_error err;
        assert_int_equal(fw_image_load_file(path, NULL, &img, &err), FW_OK);
        assert_int_equal(img->width, (int)num(c, "w"));
        assert_int_equal(img->height, (int)num(c, "h"));
        double got =
            fw_sharpness_rgb(img->pixels, (size_t)img->width * 3, 0, 0, img->width, img->height);
        assert_close(got, num(c, "expected"), 1e-9 * num(c, "expected"), name);
        fw_image_free(img);
    }
}

static void read_landmarks(const json_t *lm, float out[5][2])
{
    assert_int_equal(json_array_size(lm), 5);
    for (size_t k = 0; k < 5; k++)
        for (size_t d = 0; d < 2; d++)
            out[k][d] = (float)json_number_value(json_array_get(json_array_get(lm, k), d));
}

static double wrap180(double a)
{
    while (a > 180)
        a -= 360;
    while (a <= -180)
        a += 360;
    return a;
}

static void check_pose(const float lm[5][2], const json_t *want3, double tol, const char *what)
{
    float yaw, pitch, roll;
    assert_int_equal(fw_pose_estimate(lm, &yaw, &pitch, &roll), 0);
    const double got[3] = {yaw, pitch, roll};
    static const char *const names[3] = {"yaw", "pitch", "roll"};
    for (size_t k = 0; k < 3; k++) {
        char w[96];
        snprintf(w, sizeof w, "%s %s", what, names[k]);
        double want = json_number_value(json_array_get(want3, k));
        assert_close(wrap180(got[k] - want), 0.0, tol, w);
    }
}

/* Landmarks projected from the 3D model at known angles: the truth is the angles. */
static void test_pose_synthetic_truth(void **state)
{
    (void)state;
    const json_t *cases = json_object_get(expected, "pose_synthetic");
    assert_true(json_array_size(cases) >= 5);
    size_t i;
    const json_t *c;
    json_array_foreach(cases, i, c)
    {
        float lm[5][2];
        read_landmarks(json_object_get(c, "landmarks"), lm);
        check_pose(lm, json_object_get(c, "truth"), 0.01, "synthetic (truth)");
        check_pose(lm, json_object_get(c, "numpy"), 0.01, "synthetic (numpy)");
    }
}

/* Landmarks of real faces: the same angles as NumPy's independent fit. */
static void test_pose_real_matches_numpy(void **state)
{
    (void)state;
    const json_t *cases = json_object_get(expected, "pose_real");
    assert_true(json_array_size(cases) >= 20);
    size_t i;
    const json_t *c;
    json_array_foreach(cases, i, c)
    {
        float lm[5][2];
        read_landmarks(json_object_get(c, "landmarks"), lm);
        check_pose(lm, json_object_get(c, "expected"), 0.01, "real face");
    }
}

static void test_pose_degenerate(void **state)
{
    (void)state;
    float same[5][2] = {{10, 10}, {10, 10}, {10, 10}, {10, 10}, {10, 10}};
    float y = 1, p = 1, r = 1;
    assert_int_equal(fw_pose_estimate(same, &y, &p, &r), -1);
    assert_true(y == 0 && p == 0 && r == 0);
    float line[5][2] = {{0, 0}, {1, 1}, {2, 2}, {3, 3}, {4, 4}};
    assert_int_equal(fw_pose_estimate(line, &y, &p, &r), -1);
    float nan_lm[5][2] = {{NAN, 0}, {1, 1}, {2, 2}, {3, 3}, {4, 4}};
    assert_int_equal(fw_pose_estimate(nan_lm, &y, &p, &r), -1);
}

static void test_scores_and_presets(void **state)
{
    (void)state;
    const json_t *cases = json_object_get(expected, "scores");
    assert_true(json_array_size(cases) >= 30);
    size_t i;
    const json_t *c;
    json_array_foreach(cases, i, c)
    {
        const char *preset = json_string_value(json_object_get(c, "preset"));
        fw_quality_thresholds t;
        assert_int_equal(fw_quality_preset(preset, &t), FW_OK);
        fw_face_quality q = {0};
        q.sharpness_box = (float)num(c, "sharpness");
        q.yaw = (float)num(c, "yaw");
        q.pitch = (float)num(c, "pitch");
        q.size = (float)num(c, "size");
        fw_quality_judge(&q, &t);
        char what[96];
        snprintf(what, sizeof what, "%s score (case %zu)", preset, i);
        assert_close(q.score, num(c, "score"), 1e-5, what);
        unsigned want = 0;
        size_t k;
        const json_t *r;
        json_array_foreach(json_object_get(c, "reasons"), k, r)
        {
            unsigned bit = 0;
            for (unsigned b = 1; b < (1u << FW_QUALITY__REASONS); b <<= 1)
                if (strcmp(fw_quality_reason_name(b), json_string_value(r)) == 0)
                    bit = b;
            assert_true(bit != 0);
            want |= bit;
        }
        if (q.reasons != want)
            fail_msg("%s: reasons 0x%x, want 0x%x", what, q.reasons, want);
        assert_true(q.usable == (want == 0));
    }
    fw_quality_thresholds t;
    assert_int_equal(fw_quality_preset("enrol", &t), FW_OK);
    assert_true(t.min_size == 64 && t.max_yaw == 30);
    assert_int_equal(fw_quality_preset("strict", &t), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_quality_preset(NULL, &t), FW_ERR_INVALID_ARGUMENT);
    assert_null(fw_quality_reason_name(0x40));
}

static void test_explain(void **state)
{
    (void)state;
    fw_quality_thresholds t;
    assert_int_equal(fw_quality_preset("verify", &t), FW_OK);
    fw_face_quality q = {.sharpness_box = 12.0f, .yaw = -31.25f, .pitch = 3, .size = 200};
    fw_quality_judge(&q, &t);
    assert_false(q.usable);
    char buf[256];
    fw_quality_explain(&q, &t, buf, sizeof buf);
    assert_non_null(strstr(buf, "sharpness 12.0 < 60.0"));
    assert_non_null(strstr(buf, "|yaw| 31.2 > 25.0 deg"));
    assert_null(strstr(buf, "pitch"));
    char tiny[8];
    fw_quality_explain(&q, &t, tiny, sizeof tiny); /* truncated, terminated */
    assert_true(strlen(tiny) < sizeof tiny);
}

static void test_crop_region(void **state)
{
    (void)state;
    int r[4];
    const float box[4] = {100, 50, 200, 250}; /* 100 x 200 */
    assert_int_equal(fw_crop_region(box, 0.2f, 1000, 1000, r), 0);
    assert_int_equal(r[0], 80);
    assert_int_equal(r[1], 10);
    assert_int_equal(r[2], 220);
    assert_int_equal(r[3], 290);
    assert_int_equal(fw_crop_region(box, 0.2f, 210, 260, r), 0); /* clipped */
    assert_int_equal(r[0], 80);
    assert_int_equal(r[2], 210);
    assert_int_equal(r[3], 260);
    const float off[4] = {-50, -50, -10, -10};
    assert_int_equal(fw_crop_region(off, 0.0f, 100, 100, r), -1);
    const float flat[4] = {10, 10, 10, 40};
    assert_int_equal(fw_crop_region(flat, 0.2f, 100, 100, r), -1);
    assert_int_equal(fw_crop_region(box, -0.1f, 1000, 1000, r), -1);
}

static void test_resize_area(void **state)
{
    (void)state;
    /* 4x2 -> 2x1: each output pixel is the mean of a 2x2 block */
    const uint8_t src[4 * 2 * 3] = {0,  0,  0,  10, 10, 10, 100, 0,   0,   200, 0,   0,
                                    20, 20, 20, 30, 30, 30, 0,   100, 100, 0,   100, 100};
    uint8_t dst[2 * 3];
    fw_resize_area(src, 4 * 3, 4, 2, dst, 2, 1);
    assert_int_equal(dst[0], 15);
    assert_int_equal(dst[1], 15);
    assert_int_equal(dst[3], 75);
    assert_int_equal(dst[4], 50);
}

static void test_encode_roundtrip(void **state)
{
    (void)state;
    const int w = 61, h = 37, stride = 70 * 3; /* a region of a wider image */
    uint8_t *big = synthetic(70, 37, 3);
    uint8_t *png = NULL, *jpg = NULL;
    size_t png_len = 0, jpg_len = 0;
    fw_error err;
    assert_int_equal(
        fw_encode_rgb(big + 9 * 3, (size_t)stride, w, h, FW_FORMAT_PNG, 0, &png, &png_len, &err),
        FW_OK);
    fw_image *back = NULL;
    assert_int_equal(fw_image_decode(png, png_len, NULL, &back, &err), FW_OK);
    assert_int_equal(back->width, w);
    assert_int_equal(back->height, h);
    for (int y = 0; y < h; y++) /* lossless */
        assert_memory_equal(back->pixels + (size_t)y * w * 3, big + (size_t)y * stride + 9 * 3,
                            (size_t)w * 3);
    fw_image_free(back);

    uint8_t *flat = malloc((size_t)w * h * 3);
    assert_non_null(flat);
    for (int i = 0; i < w * h; i++) {
        flat[3 * i] = 200;
        flat[3 * i + 1] = 120;
        flat[3 * i + 2] = 40;
    }
    assert_int_equal(
        fw_encode_rgb(flat, (size_t)w * 3, w, h, FW_FORMAT_JPEG, 95, &jpg, &jpg_len, &err), FW_OK);
    assert_int_equal(fw_image_decode(jpg, jpg_len, NULL, &back, &err), FW_OK);
    assert_int_equal(back->width, w);
    for (int i = 0; i < w * h * 3; i++)
        assert_true(abs((int)back->pixels[i] - (int)flat[i]) <= 4);
    fw_image_free(back);
    free(flat);

    uint8_t *none = NULL;
    size_t n = 0;
    assert_int_equal(fw_encode_rgb(big, (size_t)stride, w, h, FW_FORMAT_JPEG, 0, &none, &n, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_encode_rgb(big, (size_t)stride, w, h, FW_FORMAT_WEBP, 90, &none, &n, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_encode_rgb(big, 3, w, h, FW_FORMAT_PNG, 90, &none, &n, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_null(none);
    free(png);
    free(jpg);
    free(big);
}

static void test_opts_validate(void **state)
{
    (void)state;
    fw_analyze_opts o;
    fw_analyze_opts_init(&o);
    fw_error err;
    assert_int_equal(fw_analyze_opts_validate(&o, &err), FW_OK);
    assert_true(o.quality && o.face_margin == 0.2f && o.crop_quality == 95);
    assert_true(o.crop_format == FW_FORMAT_JPEG && o.crops == FW_CROP_NONE);
    o.face_margin = 2.5f;
    assert_int_equal(fw_analyze_opts_validate(&o, &err), FW_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "face_margin"));
    fw_analyze_opts_init(&o);
    o.thresholds.max_yaw = 0;
    assert_int_equal(fw_analyze_opts_validate(&o, &err), FW_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "max_yaw"));
    fw_analyze_opts_init(&o);
    o.crop_quality = 101;
    assert_int_equal(fw_analyze_opts_validate(&o, &err), FW_ERR_INVALID_ARGUMENT);
    fw_analyze_opts_init(&o);
    o.thresholds.min_quality = NAN;
    assert_int_equal(fw_analyze_opts_validate(&o, &err), FW_ERR_INVALID_ARGUMENT);
    fw_analyze_opts_init(&o);
    o.crops = (fw_crop_mode)7;
    assert_int_equal(fw_analyze_opts_validate(&o, &err), FW_ERR_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sharpness_synthetic),
        cmocka_unit_test(test_sharpness_real_crops),
        cmocka_unit_test(test_pose_synthetic_truth),
        cmocka_unit_test(test_pose_real_matches_numpy),
        cmocka_unit_test(test_pose_degenerate),
        cmocka_unit_test(test_scores_and_presets),
        cmocka_unit_test(test_explain),
        cmocka_unit_test(test_crop_region),
        cmocka_unit_test(test_resize_area),
        cmocka_unit_test(test_encode_roundtrip),
        cmocka_unit_test(test_opts_validate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
