/* The worker-response parser: real worker JSON (captured from `facework worker`, kept as the
 * fuzz seeds in tests/fuzz/corpus/client_response), exact values from hand-written
 * responses, every truncation and structural damage rejected with FW_ERR_PARSE, random
 * garbage never crashing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client/backoff.h"
#include "client/response.h"
#include "core/align.h"
#include "facework/image.h"

static char *load(const char *name, size_t *len)
{
    const char *src = getenv("FW_SOURCE_DIR");
    assert_non_null(src);
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fuzz/corpus/client_response/%s", src, name);
    uint8_t *d;
    assert_int_equal(fw_read_file(path, 0, &d, len, NULL), FW_OK);
    return (char *)d;
}

static void clear_out(fw__item_out *o, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fw_result_clear(&o[i].res);
}

static float norm(const float *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    return (float)sqrt(s);
}

static void test_real_analyze_base64(void **state)
{
    (void)state;
    size_t len;
    char *body = load("analyze_f32.json", &len);
    fw__item_out o[3];
    fw_error err;
    assert_int_equal(fw__response_parse(body, len, FW__RESP_ANALYZE, 3, o, &err), FW_OK);
    /* item 0: sample1.jpg, 3 faces, 512-D unit embeddings */
    assert_int_equal(o[0].res.status, FW_OK);
    assert_true(o[0].final);
    assert_int_equal(o[0].res.width, 1920);
    assert_int_equal(o[0].res.height, 1280);
    assert_int_equal(o[0].res.n_faces, 3);
    assert_int_equal(o[0].dim, 512);
    assert_true(fabsf(o[0].res.faces[0].bbox[0] - 413.78f) < 1e-3f);
    assert_true(fabsf(o[0].res.faces[0].score - 0.999248087f) < 1e-7f);
    assert_true(fabsf(o[0].res.faces[0].landmarks[0][0] - 438.67f) < 1e-3f);
    for (size_t j = 0; j < o[0].res.n_faces; j++)
        assert_true(fabsf(norm(o[0].res.faces[j].embedding, 512) - 1.0f) < 1e-4f);
    /* item 1: the text file, a final bad-input error */
    assert_int_equal(o[1].res.status, FW_ERR_UNSUPPORTED);
    assert_string_equal(o[1].code, "unsupported");
    assert_true(o[1].final);
    assert_non_null(strstr(o[1].res.message, "unsupported image format"));
    assert_int_equal(o[1].res.n_faces, 0);
    /* item 2: sample4.jpg, 4 faces */
    assert_int_equal(o[2].res.n_faces, 4);
    assert_int_equal(o[2].dim, 512);
    clear_out(o, 3);

    /* the same response with a different item count is rejected */
    assert_int_equal(fw__response_parse(body, len, FW__RESP_ANALYZE, 2, o, &err), FW_ERR_PARSE);
    assert_non_null(strstr(err.message, "3 results for 2 items"));
    free(body);
}

/* Quality objects and crops as the worker writes them come back into fw_face. */
static void test_real_quality_and_crops(void **state)
{
    (void)state;
    size_t len;
    char *body = load("analyze_quality.json", &len);
    fw__item_out o[2];
    fw_error err;
    assert_int_equal(fw__response_parse(body, len, FW__RESP_ANALYZE, 2, o, &err), FW_OK);
    assert_int_equal(o[0].res.n_faces, 3);
    const fw_face *f = &o[0].res.faces[0];
    assert_true(f->has_quality);
    assert_true(fabsf(f->quality.score - 0.5421f) < 1e-6f);
    assert_false(f->quality.usable);
    assert_int_equal(f->quality.reasons, FW_QUALITY_BLURRY);
    assert_true(fabsf(f->quality.sharpness_aligned - 292.86f) < 1e-3f);
    assert_true(fabsf(f->quality.sharpness_box - 101.69f) < 1e-3f);
    assert_true(fabsf(f->quality.yaw + 42.99f) < 1e-4f);
    assert_true(fabsf(f->quality.roll + 8.16f) < 1e-4f);
    assert_true(fabsf(f->quality.size - 182.21f) < 1e-3f);
    for (size_t k = 0; k < 3; k++) {
        const fw_face_crop *c = &o[0].res.faces[k].crop;
        assert_int_equal(c->format, FW_FORMAT_JPEG);
        assert_int_equal(c->width, 112);
        fw_image *img = NULL;
        assert_int_equal(fw_image_decode(c->data, c->len, NULL, &img, NULL), FW_OK);
        assert_int_equal(img->width, 112);
        assert_int_equal(img->height, 112);
        fw_image_free(img);
        assert_int_equal(fabsf(norm(o[0].res.faces[k].embedding, 512) - 1.0f) < 1e-4f, 1);
    }
    assert_int_equal(o[1].res.status, FW_ERR_UNSUPPORTED);
    clear_out(o, 2);

    /* damaged quality or crop objects are parse errors */
    static const char *const bad[] = {
        "\"quality\":{\"score\":\"high\"",
        "\"quality\":{\"score\":0.5,\"usable\":1",
        "\"crop\":{\"format\":\"gif\"",
        "\"crop\":{\"format\":\"jpeg\",\"width\":-1",
        "\"crop\":{\"format\":\"jpeg\",\"width\":1,\"height\":1,\"data\":\"@@@\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char doc[512];
        snprintf(doc, sizeof doc,
                 "{\"results\":[{\"index\":0,\"id\":\"0\",\"width\":10,\"height\":10,"
                 "\"faces\":[{\"bbox\":[0,0,5,5],\"score\":0.9,%s}]}]}",
                 bad[i]);
        /* close what the fragment left open: the object it starts */
        size_t n = strlen(doc);
        if (!strstr(bad[i], "}"))
            snprintf(doc + n - 5, sizeof doc - (n - 5), "}}]}]}");
        json_t *valid = json_loads(doc, 0, NULL); /* damaged content, not damaged JSON */
        assert_non_null(valid);
        json_decref(valid);
        fw__item_out x[1];
        assert_int_equal(fw__response_parse(doc, strlen(doc), FW__RESP_ANALYZE, 1, x, &err),
                         FW_ERR_PARSE);
    }
    free(body);
}

static void test_real_float_and_detect(void **state)
{
    (void)state;
    size_t len;
    char *body = load("analyze_float.json", &len);
    fw__item_out o[1];
    assert_int_equal(fw__response_parse(body, len, FW__RESP_ANALYZE, 1, o, NULL), FW_OK);
    assert_int_equal(o[0].res.n_faces, 2); /* max_faces 2 */
    assert_int_equal(o[0].dim, 512);
    assert_true(fabsf(norm(o[0].res.faces[1].embedding, 512) - 1.0f) < 1e-4f);
    clear_out(o, 1);
    free(body);

    body = load("detect.json", &len);
    fw__item_out d[2];
    assert_int_equal(fw__response_parse(body, len, FW__RESP_DETECT, 2, d, NULL), FW_OK);
    assert_true(d[0].res.n_faces >= 1);
    assert_int_equal(d[0].dim, 0);
    assert_null(d[0].res.faces[0].embedding);
    assert_int_equal(d[0].res.width, 1920);
    assert_int_equal(d[1].res.status, FW_ERR_UNSUPPORTED);
    clear_out(d, 2);
    free(body);
}

static void test_hand_written(void **state)
{
    (void)state;
    /* [1.0, -2.0] little-endian float32 = 00 00 80 3F 00 00 00 C0 = "AACAPwAAAMA=";
     * results out of order, a worker-fault error, a null score (NaN) */
    const char *j = "{\"took_ms\":1.0,\"provider\":\"cpu\",\"model\":\"default\",\"results\":["
                    "{\"index\":2,\"id\":\"c\",\"error\":{\"code\":\"inference_error\","
                    "\"message\":\"ORT failed\"}},"
                    "{\"index\":0,\"id\":\"a\",\"width\":10,\"height\":20,\"faces\":[{\"bbox\":"
                    "[1,2,3.5,4],\"score\":null,\"landmarks\":[[1,1],[2,2],[3,3],[4,4],[5,5]],"
                    "\"embedding\":\"AACAPwAAAMA=\"}]},"
                    "{\"index\":1,\"id\":\"b\",\"width\":5,\"height\":6,\"faces\":[]}]}";
    fw__item_out o[3];
    assert_int_equal(fw__response_parse(j, strlen(j), FW__RESP_ANALYZE, 3, o, NULL), FW_OK);
    assert_int_equal(o[0].res.n_faces, 1);
    assert_int_equal(o[0].dim, 2);
    assert_true(o[0].res.faces[0].embedding[0] == 1.0f);
    assert_true(o[0].res.faces[0].embedding[1] == -2.0f);
    assert_true(o[0].res.faces[0].bbox[2] == 3.5f);
    assert_true(isnan(o[0].res.faces[0].score));
    assert_true(o[0].res.faces[0].landmarks[4][1] == 5.0f);
    assert_int_equal(o[1].res.n_faces, 0);
    assert_null(o[1].res.faces);
    assert_int_equal(o[1].res.width, 5);
    assert_int_equal(o[2].res.status, FW_ERR_INFERENCE);
    assert_false(o[2].final); /* the worker's fault: retried elsewhere */
    assert_string_equal(o[2].res.message, "ORT failed");
    clear_out(o, 3);

    /* /v1/embed: one face with the template landmarks */
    const char *e = "{\"results\":[{\"index\":0,\"id\":\"0\",\"embedding\":[0.6,0.8]},"
                    "{\"index\":1,\"id\":\"1\",\"error\":{\"code\":\"invalid_argument\","
                    "\"message\":\"expected a 112x112 aligned face crop, got 64x64\"}}]}";
    assert_int_equal(fw__response_parse(e, strlen(e), FW__RESP_EMBED, 2, o, NULL), FW_OK);
    assert_int_equal(o[0].res.n_faces, 1);
    assert_int_equal(o[0].dim, 2);
    assert_true(o[0].res.faces[0].embedding[1] == 0.8f);
    assert_true(o[0].res.faces[0].bbox[2] == 112.0f);
    assert_true(o[0].res.faces[0].landmarks[0][0] == fw_arcface_template[0][0]);
    assert_int_equal(o[1].res.status, FW_ERR_INVALID_ARGUMENT);
    assert_true(o[1].final);
    clear_out(o, 2);

    /* an unknown error code is the worker's fault; the message defaults to the code */
    const char *u = "{\"results\":[{\"index\":0,\"error\":{\"code\":\"gpu_on_fire\"}}]}";
    assert_int_equal(fw__response_parse(u, strlen(u), FW__RESP_ANALYZE, 1, o, NULL), FW_OK);
    assert_int_equal(o[0].res.status, FW_ERR_UNAVAILABLE);
    assert_false(o[0].final);
    assert_string_equal(o[0].res.message, "gpu_on_fire");
    clear_out(o, 1);

    /* zero items */
    const char *z = "{\"results\":[]}";
    assert_int_equal(fw__response_parse(z, strlen(z), FW__RESP_ANALYZE, 0, NULL, NULL), FW_OK);
}

static void expect_bad(const char *json, fw__resp_kind kind, size_t n)
{
    fw__item_out o[4];
    fw_error err;
    fw_err rc = fw__response_parse(json, strlen(json), kind, n, o, &err);
    if (rc != FW_ERR_PARSE)
        fail_msg("accepted (%d): %s", rc, json);
    for (size_t i = 0; i < n; i++) {
        assert_null(o[i].res.faces);
        assert_int_equal(o[i].res.n_faces, 0);
    }
}

static void test_structural_damage(void **state)
{
    (void)state;
    const fw__resp_kind A = FW__RESP_ANALYZE;
#define FACE "{\"bbox\":[1,2,3,4],\"score\":0.9}"
    expect_bad("", A, 1);
    expect_bad("null", A, 1);
    expect_bad("[]", A, 1);
    expect_bad("{}", A, 1);
    expect_bad("{\"results\":{}}", A, 1);
    expect_bad("{\"results\":[1]}", A, 1);
    expect_bad("{\"results\":[{}]}", A, 1);                /* no index */
    expect_bad("{\"results\":[{\"index\":\"0\"}]}", A, 1); /* string index */
    expect_bad("{\"results\":[{\"index\":1,\"width\":1,\"height\":1,\"faces\":[]}]}", A, 1);
    expect_bad("{\"results\":[{\"index\":-1,\"width\":1,\"height\":1,\"faces\":[]}]}", A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[]},"
               "{\"index\":0,\"width\":1,\"height\":1,\"faces\":[]}]}",
               A, 2); /* duplicate index */
    expect_bad("{\"results\":[{\"index\":0,\"height\":1,\"faces\":[]}]}", A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":-1,\"height\":1,\"faces\":[]}]}", A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":1.5,\"height\":1,\"faces\":[]}]}", A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1}]}", A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[1]}]}", A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[{\"bbox\":[1,2,"
               "3],\"score\":1}]}]}",
               A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[{\"bbox\":[1,2,"
               "3,\"4\"],\"score\":1}]}]}",
               A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[{\"bbox\":[1,2,"
               "3,4]}]}]}",
               A, 1); /* no score */
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[{\"bbox\":[1,2,"
               "3,4],\"score\":1,\"landmarks\":[[1,2]]}]}]}",
               A, 1);
    /* embeddings: bad base64, not a multiple of 4 bytes, mixed dimensions, wrong type */
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[{\"bbox\":[1,2,"
               "3,4],\"score\":1,\"embedding\":\"@@@@\"}]}]}",
               A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[{\"bbox\":[1,2,"
               "3,4],\"score\":1,\"embedding\":\"AACA\"}]}]}",
               A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[{\"bbox\":[1,2,"
               "3,4],\"score\":1,\"embedding\":[1,2]},{\"bbox\":[1,2,3,4],\"score\":1,"
               "\"embedding\":[1,2,3]}]}]}",
               A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[" FACE "]},"
               "{\"index\":1,\"width\":1,\"height\":1,\"faces\":[{\"bbox\":[1,2,3,4],"
               "\"score\":1,\"embedding\":[1]}]},"
               "{\"index\":2,\"width\":1,\"height\":1,\"faces\":[{\"bbox\":[1,2,3,4],"
               "\"score\":1,\"embedding\":[1,2]}]}]}",
               A, 3); /* dimensions differ across items */
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[{\"bbox\":[1,2,"
               "3,4],\"score\":1,\"embedding\":7}]}]}",
               A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"width\":1,\"height\":1,\"faces\":[{\"bbox\":[1,2,"
               "3,4],\"score\":1,\"embedding\":[]}]}]}",
               A, 1);
    /* errors must have a string code */
    expect_bad("{\"results\":[{\"index\":0,\"error\":\"boom\"}]}", A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"error\":{\"code\":5}}]}", A, 1);
    expect_bad("{\"results\":[{\"index\":0,\"error\":{\"code\":\"x\",\"message\":1}}]}", A, 1);
    /* embed entries need an embedding */
    expect_bad("{\"results\":[{\"index\":0}]}", FW__RESP_EMBED, 1);
    /* an error body instead of results */
    expect_bad("{\"error\":{\"code\":\"bad_request\",\"message\":\"no images\"}}", A, 1);
#undef FACE
}

static void test_every_truncation_rejected(void **state)
{
    (void)state;
    size_t len;
    char *body = load("analyze_f32.json", &len);
    fw__item_out o[3];
    size_t rejected = 0, tried = 0;
    /* every prefix up to 4 KiB, then every 13th: none parses, none crashes */
    for (size_t n = 0; n < len; n += n < 4096 ? 1 : 13) {
        char *cut = malloc(n ? n : 1);
        assert_non_null(cut);
        memcpy(cut, body, n);
        fw_err rc = fw__response_parse(cut, n, FW__RESP_ANALYZE, 3, o, NULL);
        tried++;
        rejected += rc == FW_ERR_PARSE;
        if (rc == FW_OK)
            clear_out(o, 3);
        free(cut);
    }
    assert_int_equal(rejected, tried);
    free(body);
}

static void test_garbage_never_crashes(void **state)
{
    (void)state;
    size_t len;
    char *body = load("analyze_f32.json", &len);
    fw__rng r;
    fw__rng_seed(&r, 2024);
    fw__item_out o[3];
    size_t ok = 0;
    for (int round = 0; round < 400; round++) {
        /* flip a few bytes of the real response, or write random bytes */
        char *buf = malloc(len);
        assert_non_null(buf);
        memcpy(buf, body, len);
        size_t flips = 1 + fw__rng_below(&r, 4);
        for (size_t k = 0; k < flips; k++)
            buf[fw__rng_below(&r, len)] = (char)fw__rng_below(&r, 256);
        if (round % 10 == 0)
            for (size_t k = 0; k < len; k++)
                buf[k] = (char)fw__rng_below(&r, 256);
        fw__resp_kind kind = (fw__resp_kind)(round % 3);
        fw_err rc = fw__response_parse(buf, len, kind, 3, o, NULL);
        assert_true(rc == FW_OK || rc == FW_ERR_PARSE);
        if (rc == FW_OK) {
            ok++;
            clear_out(o, 3);
        }
        free(buf);
    }
    (void)ok; /* flips inside numbers or messages may still parse: that is fine */
    free(body);
}

static void test_error_body(void **state)
{
    (void)state;
    char code[32], msg[64];
    const char *b = "{\"error\":{\"code\":\"unauthorized\",\"message\":\"missing API key\"}}";
    assert_true(fw__error_body_parse(b, strlen(b), code, sizeof code, msg, sizeof msg));
    assert_string_equal(code, "unauthorized");
    assert_string_equal(msg, "missing API key");
    assert_false(fw__error_body_parse("<html>", 6, code, sizeof code, msg, sizeof msg));
    assert_false(fw__error_body_parse(NULL, 0, code, sizeof code, msg, sizeof msg));
    assert_int_equal(fw__err_from_name("too_large"), FW_ERR_TOO_LARGE);
    assert_int_equal(fw__err_from_name("ok"), FW_ERR_UNAVAILABLE);
    assert_int_equal(fw__err_from_name(NULL), FW_ERR_UNAVAILABLE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_analyze_base64),
        cmocka_unit_test(test_real_quality_and_crops),
        cmocka_unit_test(test_real_float_and_detect),
        cmocka_unit_test(test_hand_written),
        cmocka_unit_test(test_structural_damage),
        cmocka_unit_test(test_every_truncation_rejected),
        cmocka_unit_test(test_garbage_never_crashes),
        cmocka_unit_test(test_error_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
