/* Integration: the legacy wire contract of the Python worker this replaces.
 * POST /detect_faces_batch_multipart (repeated `images`, `image_hashes`, `min_face_quality`)
 * and POST /detect_faces_batch (JSON, positional results): field names and types, quality
 * filtering, 400 for bad image_hashes, 415 for the wrong media type; and a stdlib-only
 * Python client written like the original one (legacy_client.py). */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/quality.h"
#include "facework/image.h"

static fwt_worker *g_w;

static int setup(void **state)
{
    (void)state;
    g_w = fwt_worker_start(NULL);
    return 0;
}

static const int k_photos[3] = {1, 4, 6}; /* 3, 4, 4 faces */

/* The v1 faces of k_photos, as the reference for the legacy responses. */
static json_t *v1_reference(void)
{
    fwt_part parts[3];
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        const uint8_t *d = fwt_photo(k_photos[i], &len);
        parts[i] = (fwt_part){"image", "x.jpg", "image/jpeg", d, len};
    }
    fwt_resp r;
    fwt_post_parts(g_w, "/v1/analyze", parts, 3, FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    return j;
}

static json_t *v1_faces(json_t *ref, size_t i)
{
    return json_object_get(json_array_get(json_object_get(ref, "results"), i), "faces");
}

/* Exactly these keys, no others. */
static void expect_keys(const json_t *obj, const char *const *keys, size_t n, const char *what)
{
    assert_true(json_is_object(obj));
    for (size_t i = 0; i < n; i++)
        if (!json_object_get(obj, keys[i]))
            fail_msg("%s lacks \"%s\"", what, keys[i]);
    if (json_object_size(obj) != n) {
        char *s = json_dumps(obj, JSON_COMPACT);
        fail_msg("%s has unexpected keys: %.400s", what, s);
    }
}

/* Checks one legacy face record: names and types exactly as the Python worker sent them. */
static void check_legacy_face(const json_t *face, double min_quality)
{
    static const char *const keys[] = {"bbox",    "landmarks", "embedding",
                                       "quality", "age",       "gender"};
    expect_keys(face, keys, 6, "legacy face");
    fwt_check_face(face, 1920, 1920, true); /* photos are 1920 px wide, at most as high */
    json_t *q = json_object_get(face, "quality");
    assert_true(json_is_number(q));
    assert_true(json_number_value(q) >= min_quality && json_number_value(q) <= 1);
    assert_true(json_is_null(json_object_get(face, "age")));
    assert_true(json_is_null(json_object_get(face, "gender")));
}

static void check_legacy_top(const json_t *j, bool dict_results)
{
    static const char *const keys[] = {"results", "processing_time_ms", "gpu_used", "worker_id"};
    expect_keys(j, keys, 4, "legacy response");
    assert_true(dict_results ? json_is_object(json_object_get(j, "results"))
                             : json_is_array(json_object_get(j, "results")));
    json_t *t = json_object_get(j, "processing_time_ms");
    assert_true(json_is_number(t) && json_number_value(t) >= 0);
    assert_true(json_is_boolean(json_object_get(j, "gpu_used")));
    json_t *wid = json_object_get(j, "worker_id");
    assert_true(json_is_string(wid) && json_string_length(wid) > 0);
}

/* POSTs the k_photos with the given image_hashes text and min_face_quality text (NULL:
 * field omitted); extra fields appended. */
static void post_multipart(const char *hashes, const char *quality, const fwt_part *extra,
                           size_t n_extra, fwt_resp *r)
{
    fwt_part parts[12];
    size_t n = 0;
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        const uint8_t *d = fwt_photo(k_photos[i], &len);
        char *name = malloc(32);
        assert_non_null(name);
        snprintf(name, 32, "photo_%zu.jpg", i);
        parts[n++] = (fwt_part){"images", name, "image/jpeg", d, len};
    }
    if (hashes)
        parts[n++] = (fwt_part){"image_hashes", NULL, NULL, hashes, (size_t)-1};
    if (quality)
        parts[n++] = (fwt_part){"min_face_quality", NULL, NULL, quality, (size_t)-1};
    for (size_t i = 0; i < n_extra; i++)
        parts[n++] = extra[i];
    fwt_post_parts(g_w, "/detect_faces_batch_multipart", parts, n, FWT_H1, r);
    for (size_t i = 0; i < 3; i++)
        free((char *)parts[i].filename);
}

/* image_hashes out of list order: each hash names the image at its "index". */
static const char k_hashes[] = "[{\"phash\":\"ffd8a0c3e1b2\",\"index\":2},"
                               "{\"phash\":\"00ff00ff00ff\",\"index\":0},"
                               "{\"phash\":987654321,\"index\":1}]";
static const char *const k_keys[3] = {"00ff00ff00ff", "987654321", "ffd8a0c3e1b2"}; /* by image */

static void test_multipart_contract(void **state)
{
    (void)state;
    json_t *ref = v1_reference();
    fwt_part extra[3] = {{"require_face", NULL, NULL, "false", (size_t)-1},
                         {"crop_faces", NULL, NULL, "False", (size_t)-1},
                         {"face_margin", NULL, NULL, "0.2", (size_t)-1}};
    fwt_resp r;
    post_multipart(k_hashes, "0.5", extra, 3, &r);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    check_legacy_top(j, true);
    json_t *res = json_object_get(j, "results");
    assert_int_equal(json_object_size(res), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *faces = json_object_get(res, k_keys[i]);
        if (!json_is_array(faces))
            fail_msg("results has no list under \"%s\"", k_keys[i]);
        assert_int_equal(json_array_size(faces), fwt_photo_faces[k_photos[i]]);
        for (size_t f = 0; f < json_array_size(faces); f++)
            check_legacy_face(json_array_get(faces, f), 0.5);
        /* the same faces as v1 for that image: the hash really maps to its index */
        fwt_match_faces(faces, v1_faces(ref, i), 0.011, 0.9999);
    }
    /* no min_face_quality: the default 0.5 */
    post_multipart(k_hashes, NULL, NULL, 0, &r);
    json_t *d = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(json_array_size(json_object_get(json_object_get(d, "results"), k_keys[i])),
                         fwt_photo_faces[k_photos[i]]);
    json_decref(d);
    json_decref(j);
    json_decref(ref);
}

/* A repeated phash keeps its first position and the faces of its last image (a dict built
 * in order, as the Python worker did); an entry without "index" means its list position. */
static void test_phash_duplicates_and_default_index(void **state)
{
    (void)state;
    fwt_resp r;
    /* images: sample1 (3 faces), sample4 (4), sample6 (4) */
    post_multipart("[{\"phash\":\"dup\"},{\"phash\":\"solo\"},{\"phash\":\"dup\"}]", "0.5", NULL, 0,
                   &r);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    json_t *res = json_object_get(j, "results");
    assert_int_equal(json_object_size(res), 2);
    /* key order: "dup" first */
    void *it = json_object_iter(res);
    assert_string_equal(json_object_iter_key(it), "dup");
    json_t *ref = v1_reference();
    fwt_match_faces(json_object_get(res, "dup"), v1_faces(ref, 2), 0.011, 0.9999);
    fwt_match_faces(json_object_get(res, "solo"), v1_faces(ref, 1), 0.011, 0.9999);
    json_decref(ref);
    json_decref(j);
}

static void test_min_face_quality_filters(void **state)
{
    (void)state;
    fwt_resp r;
    post_multipart(k_hashes, "0.5", NULL, 0, &r);
    json_t *all = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    post_multipart(k_hashes, "0.999", NULL, 0, &r);
    json_t *hi = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    check_legacy_top(hi, true);
    size_t dropped = 0;
    for (size_t i = 0; i < 3; i++) {
        json_t *a = json_object_get(json_object_get(all, "results"), k_keys[i]);
        json_t *h = json_object_get(json_object_get(hi, "results"), k_keys[i]);
        assert_true(json_is_array(h));
        /* expected: exactly the faces of the 0.5 answer whose quality is >= 0.999 */
        json_t *want = json_array();
        for (size_t f = 0; f < json_array_size(a); f++) {
            json_t *face = json_array_get(a, f);
            if (json_number_value(json_object_get(face, "quality")) >= 0.999)
                json_array_append(want, face);
        }
        dropped += json_array_size(a) - json_array_size(want);
        for (size_t f = 0; f < json_array_size(h); f++)
            check_legacy_face(json_array_get(h, f), 0.999);
        fwt_match_faces(h, want, 0.011, 0.9999);
        json_decref(want);
    }
    assert_true(dropped > 0); /* the photos do have faces scored below 0.999 */
    json_decref(all);
    json_decref(hi);
}

/* crop_faces: each face gains "crop", a base64 JPEG of its box grown by face_margin (0.2 by
 * default, as the application cropped); the six legacy keys stay; the JSON route too. */
static void test_crop_faces(void **state)
{
    (void)state;
    static const float margins[2] = {0.2f, 0.5f};
    for (int m = 0; m < 2; m++) {
        fwt_part extra[2] = {{"crop_faces", NULL, NULL, "true", (size_t)-1},
                             {"face_margin", NULL, NULL, m ? "0.5" : "", (size_t)-1}};
        fwt_resp r;
        post_multipart(k_hashes, NULL, extra, 2, &r);
        json_t *j = fwt_expect_json(&r, 200);
        fwt_resp_free(&r);
        check_legacy_top(j, true);
        size_t crops = 0;
        for (size_t i = 0; i < 3; i++) {
            json_t *faces = json_object_get(json_object_get(j, "results"), k_keys[i]);
            size_t len;
            const uint8_t *photo = fwt_photo(k_photos[i], &len);
            fw_image_info info;
            assert_int_equal(fw_image_probe(photo, len, &info, NULL), FW_OK);
            for (size_t f = 0; f < json_array_size(faces); f++) {
                json_t *face = json_array_get(faces, f);
                static const char *const keys[] = {"bbox", "landmarks", "embedding", "quality",
                                                   "age",  "gender",    "crop"};
                expect_keys(face, keys, 7, "legacy face with crop");
                size_t n;
                uint8_t *jpg = fwt_b64_decode(json_string_value(json_object_get(face, "crop")), &n);
                assert_non_null(jpg);
                fw_image *img = NULL;
                fw_image_info ci;
                assert_int_equal(fw_image_probe(jpg, n, &ci, NULL), FW_OK);
                assert_int_equal(ci.format, FW_FORMAT_JPEG);
                assert_int_equal(fw_image_decode(jpg, n, NULL, &img, NULL), FW_OK);
                json_t *bb = json_object_get(face, "bbox");
                float box[4];
                for (size_t b = 0; b < 4; b++)
                    box[b] = (float)json_number_value(json_array_get(bb, b));
                int reg[4];
                assert_int_equal(fw_crop_region(box, margins[m], info.width, info.height, reg), 0);
                assert_true(abs(img->width - (reg[2] - reg[0])) <= 1);
                assert_true(abs(img->height - (reg[3] - reg[1])) <= 1);
                fw_image_free(img);
                free(jpg);
                crops++;
            }
        }
        assert_int_equal(crops, 11);
        json_decref(j);
    }

    /* the JSON route: crop_faces as a JSON bool */
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    char *b64 = fwt_b64_encode(d, len);
    size_t cap = strlen(b64) + 128;
    char *body = malloc(cap);
    assert_non_null(body);
    snprintf(body, cap, "{\"images\":[{\"data\":\"%s\"}],\"crop_faces\":true}", b64);
    fwt_resp r;
    fwt_post(g_w, "/detect_faces_batch", "application/json", body, strlen(body), FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    json_t *faces = json_array_get(json_object_get(j, "results"), 0);
    assert_int_equal(json_array_size(faces), 3);
    for (size_t f = 0; f < 3; f++)
        assert_true(json_string_length(json_object_get(json_array_get(faces, f), "crop")) > 100);
    json_decref(j);
    free(body);
    free(b64);
}

static void test_bad_image_hashes(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "not json at all",
        "{\"phash\":\"a\",\"index\":0}",                                 /* not a list */
        "[{\"phash\":\"a\",\"index\":0},{\"phash\":\"b\",\"index\":1}]", /* 2 for 3 images */
        "[{\"phash\":\"a\",\"index\":0},{\"phash\":\"b\",\"index\":1},"
        "{\"phash\":\"c\",\"index\":3}]", /* index out of range */
        "[{\"phash\":\"a\",\"index\":0},{\"phash\":\"b\",\"index\":1},"
        "{\"phash\":\"c\",\"index\":-1}]", /* negative index */
        "[{\"phash\":\"a\",\"index\":0},{\"phash\":\"b\",\"index\":0},"
        "{\"phash\":\"c\",\"index\":1}]", /* duplicate index */
        "[\"a\",\"b\",\"c\"]",            /* entries are not objects */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fwt_resp r;
        post_multipart(bad[i], "0.5", NULL, 0, &r);
        if (r.status != 400)
            fail_msg("image_hashes %s: status %ld, body %.300s", bad[i], r.status, r.body);
        fwt_expect_error(&r, 400, "parse_error");
        fwt_resp_free(&r);
    }
    /* a bad min_face_quality is a 400 too */
    fwt_resp r;
    post_multipart(k_hashes, "high", NULL, 0, &r);
    fwt_expect_error(&r, 400, "parse_error");
    fwt_resp_free(&r);
    json_decref(fwt_wait_healthy(g_w, 5));
}

static void test_wrong_media_types(void **state)
{
    (void)state;
    fwt_resp r;
    /* the multipart route takes multipart only */
    fwt_post(g_w, "/detect_faces_batch_multipart", "application/json", "{\"images\":[]}", 13,
             FWT_H1, &r);
    fwt_expect_error(&r, 415, "unsupported");
    fwt_resp_free(&r);
    fwt_post(g_w, "/detect_faces_batch_multipart", "application/x-www-form-urlencoded",
             "images=abc", 10, FWT_H2, &r);
    fwt_expect_error(&r, 415, "unsupported");
    fwt_resp_free(&r);
    /* the JSON route takes JSON only */
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    fwt_part p = {"images", "a.jpg", "image/jpeg", d, len};
    fwt_post_parts(g_w, "/detect_faces_batch", &p, 1, FWT_H1, &r);
    fwt_expect_error(&r, 415, "unsupported");
    fwt_resp_free(&r);
    fwt_post(g_w, "/detect_faces_batch", "text/plain", "{\"images\":[]}", 13, FWT_H1, &r);
    fwt_expect_error(&r, 415, "unsupported");
    fwt_resp_free(&r);
}

static void test_json_route_positional(void **state)
{
    (void)state;
    json_t *ref = v1_reference();
    json_t *imgs = json_array();
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        const uint8_t *d = fwt_photo(k_photos[i], &len);
        char *b64 = fwt_b64_encode(d, len);
        json_t *it = json_pack("{s:s}", "data", b64);
        if (i != 1)
            json_object_set_new(it, "image_id", json_sprintf("img-%zu", i));
        json_array_append_new(imgs, it);
        free(b64);
    }
    /* a fourth item that is not base64: positional empty list, the others unaffected */
    json_array_append_new(
        imgs, json_pack("{s:s,s:s}", "data", "%%% not base64 %%%", "image_id", "broken"));
    json_t *body = json_pack("{s:o,s:f}", "images", imgs, "min_face_quality", 0.5);
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    fwt_resp r;
    fwt_post(g_w, "/detect_faces_batch", "application/json", s, strlen(s), FWT_H2, &r);
    free(s);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    check_legacy_top(j, false);
    json_t *res = json_object_get(j, "results");
    assert_int_equal(json_array_size(res), 4);
    for (size_t i = 0; i < 3; i++) {
        json_t *faces = json_array_get(res, i);
        assert_true(json_is_array(faces));
        for (size_t f = 0; f < json_array_size(faces); f++)
            check_legacy_face(json_array_get(faces, f), 0.5);
        fwt_match_faces(faces, v1_faces(ref, i), 0.011, 0.9999);
    }
    assert_true(json_is_array(json_array_get(res, 3)));
    assert_int_equal(json_array_size(json_array_get(res, 3)), 0);

    /* pydantic-style coercion: min_face_quality as a numeric string, no image_id at all */
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    char *b64 = fwt_b64_encode(d, len);
    size_t cap = strlen(b64) + 128;
    char *b2 = malloc(cap);
    assert_non_null(b2);
    snprintf(b2, cap, "{\"images\":[{\"data\":\"%s\"}],\"min_face_quality\":\"0.999\"}", b64);
    fwt_post(g_w, "/detect_faces_batch", "application/json", b2, strlen(b2), FWT_H1, &r);
    json_t *q = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    json_t *qf = json_array_get(json_object_get(q, "results"), 0);
    for (size_t f = 0; f < json_array_size(qf); f++)
        check_legacy_face(json_array_get(qf, f), 0.999);
    assert_true(json_array_size(qf) < 3);
    json_decref(q);
    free(b2);
    free(b64);
    json_decref(j);
    json_decref(ref);
}

static void test_python_legacy_client(void **state)
{
    (void)state;
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "FW_TEST_TIME_SCALE=%g /usr/bin/python3 '%s/tests/integration/legacy_client.py' "
             "'%s' '%s' '%s' 2>&1",
             fwt_time_scale(), getenv("FW_SOURCE_DIR"), g_w->url, fwt_photo_path(1),
             fwt_photo_path(5));
    fflush(NULL);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    if (st != 0)
        fail_msg("legacy_client.py failed (status %d):\n%s", st, out);
    /* sample1 + sample5: 3 + 5 faces, all above 0.5 */
    assert_non_null(strstr(out, "legacy_client: 2 images, 8 faces"));
}

static void test_shutdown_clean(void **state)
{
    (void)state;
    json_decref(fwt_wait_healthy(g_w, 10));
    assert_int_equal(fwt_worker_stop(g_w, SIGTERM, 40), 0);
}

int main(void)
{
    if (!getenv("FW_SOURCE_DIR")) {
        fprintf(stderr, "FW_SOURCE_DIR is not set: run through ctest\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multipart_contract),
        cmocka_unit_test(test_phash_duplicates_and_default_index),
        cmocka_unit_test(test_min_face_quality_filters),
        cmocka_unit_test(test_crop_faces),
        cmocka_unit_test(test_bad_image_hashes),
        cmocka_unit_test(test_wrong_media_types),
        cmocka_unit_test(test_json_route_positional),
        cmocka_unit_test(test_python_legacy_client),
        cmocka_unit_test(test_shutdown_clean),
    };
    return cmocka_run_group_tests(tests, setup, fwt_teardown);
}
