/* The engine end to end on an InsightFace-style pack: the synthetic SCRFD detector of
 * tests/data/make_test_models.py (constant outputs with two known detections, see
 * tests/data/models/scrfd_synth/expected.json) and a tiny embedder. Proves the SCRFD path
 * of the pipeline: output layout by shape, letterbox scale, distance decoding, keypoints,
 * NMS, mapping back to image pixels, alignment and batched embedding. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "facework/facework.h"

static fw_engine *eng;

static int setup(void **state)
{
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/scrfd_synth", getenv("FW_TEST_DATA"));
    fw_engine_config cfg;
    fw_engine_config_init(&cfg);
    cfg.models_dir = dir;
    cfg.provider = "cpu";
    fw_error err;
    if (fw_engine_new(&cfg, &eng, &err) != FW_OK) {
        fprintf(stderr, "engine: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fw_engine_free(eng);
    return 0;
}

/* Input-space (64x64) values from expected.json; a 128x128 image is letterboxed at scale
 * 0.5, so image coordinates are twice these. */
static const float box_in[2][4] = {{8, 8, 40, 56}, {44, 8, 60, 32}};
static const float kps_in[2][5][2] = {
    {{12, 20}, {28, 20}, {20, 28}, {14, 40}, {26, 40}},
    {{46, 12}, {56, 12}, {52, 20}, {48, 28}, {56, 28}},
};
static const float score[2] = {0.9f, 0.8f};

static void check_faces(const fw_result *r, bool embedded)
{
    assert_int_equal(r->status, FW_OK);
    assert_int_equal(r->width, 128);
    assert_int_equal(r->height, 128);
    assert_int_equal(r->n_faces, 2);
    for (int f = 0; f < 2; f++) {
        const fw_face *face = &r->faces[f];
        assert_true(fabsf(face->score - score[f]) < 1e-5f);
        for (int k = 0; k < 4; k++)
            assert_true(fabsf(face->bbox[k] - 2 * box_in[f][k]) < 1e-3f);
        for (int p = 0; p < 5; p++)
            for (int c = 0; c < 2; c++)
                assert_true(fabsf(face->landmarks[p][c] - 2 * kps_in[f][p][c]) < 1e-3f);
        if (embedded) {
            assert_non_null(face->embedding);
            double n2 = 0;
            for (size_t k = 0; k < fw_engine_embedding_dim(eng); k++)
                n2 += (double)face->embedding[k] * face->embedding[k];
            assert_true(fabs(n2 - 1) < 1e-4);
        } else {
            assert_null(face->embedding);
        }
    }
}

static void test_scrfd_pack_detects_known_faces(void **state)
{
    (void)state;
    assert_string_equal(fw_engine_provider(eng, FW_ROLE_DETECTOR), "cpu");
    assert_int_equal(fw_engine_embedding_dim(eng), 512);
    fw_image *img = fw_image_new(128, 128);
    assert_non_null(img);
    for (size_t i = 0; i < 128 * 128 * 3; i++)
        img->pixels[i] = (uint8_t)(i * 7);
    const fw_image *imgs[3] = {img, img, img};
    fw_result r[3];
    fw_error err;
    assert_int_equal(fw_engine_analyze_images(eng, imgs, 3, NULL, r, &err), FW_OK);
    for (int i = 0; i < 3; i++) {
        check_faces(&r[i], true);
        fw_result_clear(&r[i]);
    }
    fw_analyze_opts o;
    fw_analyze_opts_init(&o);
    o.embed = false;
    assert_int_equal(fw_engine_analyze_images(eng, imgs, 1, &o, r, &err), FW_OK);
    check_faces(&r[0], false);
    fw_result_clear(&r[0]);
    /* a threshold between the two scores keeps only the first */
    o.min_score = 0.85f;
    assert_int_equal(fw_engine_analyze_images(eng, imgs, 1, &o, r, &err), FW_OK);
    assert_int_equal(r[0].n_faces, 1);
    assert_true(fabsf(r[0].faces[0].score - 0.9f) < 1e-5f);
    fw_result_clear(&r[0]);
    fw_image_free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scrfd_pack_detects_known_faces),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
