/* Integration: batching does not change results. Requests of 1, 2, 8, 32 and 64 images
 * (cycling through the six photos) give, per image, the faces the CLI finds in-process
 * (`facework analyze FILE`): boxes within 0.5 px, embedding cosine > 0.999; and the same
 * request over HTTP/1.1, HTTP/2 with prior knowledge and an h2c upgrade gives the same JSON
 * results (checking that the negotiated version really is 2 for the HTTP/2 cases).
 * Reduced (fwt_reduced(): under valgrind) the 32-image request has 17 images, still more
 * than one detector batch of --max-batch 16, the 64-image one is skipped and the protocols
 * compare a 2-image request. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fwt_worker *g_w;
static bool g_cpu;       /* the CPU provider gives bit-identical results whatever the batch */
static json_t *g_cli[7]; /* CLI result per photo: {"path","width","height","faces"} */

static int setup(void **state)
{
    (void)state;
    g_w = fwt_worker_start(NULL);
    json_t *h = fwt_wait_healthy(g_w, 10);
    g_cpu = !strcmp(json_string_value(json_object_get(h, "provider")), "cpu");
    json_decref(h);
    for (int i = 1; i <= 6; i++) {
        json_t *out = fwt_cli_analyze(fwt_photo_path(i));
        json_t *res = json_object_get(out, "results");
        assert_int_equal(json_array_size(res), 1);
        g_cli[i] = json_incref(json_array_get(res, 0));
        assert_int_equal(json_array_size(json_object_get(g_cli[i], "faces")), fwt_photo_faces[i]);
        json_decref(out);
    }
    return 0;
}

static int teardown(void **state)
{
    for (int i = 1; i <= 6; i++)
        json_decref(g_cli[i]);
    return fwt_teardown(state);
}

/* POSTs n images (photo k % 6 + 1 for k = 0..n-1) to /v1/analyze as multipart; returns the
 * parsed body after checking it against the CLI results. */
static json_t *analyze_batch(size_t n, fwt_proto proto)
{
    fwt_part *parts = calloc(n, sizeof *parts);
    char(*names)[32] = calloc(n, sizeof *names);
    assert_non_null(parts);
    assert_non_null(names);
    for (size_t k = 0; k < n; k++) {
        size_t len;
        const uint8_t *d = fwt_photo((int)(k % 6) + 1, &len);
        snprintf(names[k], sizeof names[k], "img%03zu.jpg", k);
        parts[k] = (fwt_part){"image", names[k], "image/jpeg", d, len};
    }
    fwt_resp r;
    fwt_post_parts(g_w, "/v1/analyze", parts, n, proto, &r);
    json_t *j = fwt_expect_json(&r, 200);
    if (r.http_version != (proto == FWT_H1 ? 1 : 2))
        fail_msg("%s: negotiated HTTP version %d", fwt_proto_name[proto], r.http_version);
    fwt_resp_free(&r);
    json_t *res = json_object_get(j, "results");
    assert_int_equal(json_array_size(res), n);
    for (size_t k = 0; k < n; k++) {
        json_t *it = json_array_get(res, k);
        json_t *cli = g_cli[k % 6 + 1];
        assert_int_equal(json_integer_value(json_object_get(it, "index")), k);
        assert_string_equal(json_string_value(json_object_get(it, "id")), names[k]);
        assert_int_equal(json_integer_value(json_object_get(it, "width")),
                         json_integer_value(json_object_get(cli, "width")));
        assert_int_equal(json_integer_value(json_object_get(it, "height")),
                         json_integer_value(json_object_get(cli, "height")));
        json_t *faces = json_object_get(it, "faces");
        for (size_t f = 0; f < json_array_size(faces); f++)
            fwt_check_face(json_array_get(faces, f),
                           (int)json_integer_value(json_object_get(it, "width")),
                           (int)json_integer_value(json_object_get(it, "height")), true);
        /* boxes within 0.5 px, embeddings with cosine > 0.999 */
        fwt_match_faces(faces, json_object_get(cli, "faces"), 0.5, 0.999);
    }
    free(parts);
    free(names);
    return j;
}

static void test_batch_1(void **state)
{
    (void)state;
    json_decref(analyze_batch(1, FWT_H1));
}

static void test_batch_2(void **state)
{
    (void)state;
    json_decref(analyze_batch(2, FWT_H2));
}

static void test_batch_8(void **state)
{
    (void)state;
    json_decref(analyze_batch(8, FWT_H1));
}

static void test_batch_32(void **state)
{
    (void)state;
    json_decref(analyze_batch(fwt_reduced() ? 17 : 32, FWT_H2));
}

static void test_batch_64(void **state)
{
    (void)state;
    if (fwt_reduced())
        skip();
    json_decref(analyze_batch(64, FWT_H1));
}

/* The same 6-image (reduced: 2-image) request over the three protocols: identical
 * "results". */
static void test_protocols_agree(void **state)
{
    (void)state;
    const size_t n = fwt_reduced() ? 2 : 6;
    json_t *h1 = analyze_batch(n, FWT_H1);
    json_t *h2 = analyze_batch(n, FWT_H2);
    json_t *up = analyze_batch(n, FWT_H2C);
    json_t *r1 = json_object_get(h1, "results");
    /* same detections exactly; embeddings the same to float precision */
    json_t *rs[2] = {json_object_get(h2, "results"), json_object_get(up, "results")};
    for (size_t p = 0; p < 2; p++) {
        assert_int_equal(json_array_size(rs[p]), n);
        for (size_t k = 0; k < n; k++)
            fwt_match_faces(json_object_get(json_array_get(rs[p], k), "faces"),
                            json_object_get(json_array_get(r1, k), "faces"), g_cpu ? 1e-6 : 0.5,
                            g_cpu ? 0.99999 : 0.999);
    }
    /* and on the CPU provider, byte-identical JSON (its kernels are batch-invariant; GPU
     * providers may differ in the last bits, which the checks above tolerate) */
    if (g_cpu) {
        char *s1 = json_dumps(r1, JSON_COMPACT | JSON_SORT_KEYS);
        char *s2 = json_dumps(rs[0], JSON_COMPACT | JSON_SORT_KEYS);
        char *s3 = json_dumps(rs[1], JSON_COMPACT | JSON_SORT_KEYS);
        assert_string_equal(s1, s2);
        assert_string_equal(s1, s3);
        free(s1);
        free(s2);
        free(s3);
    }
    json_decref(h1);
    json_decref(h2);
    json_decref(up);

    /* the legacy JSON route over h2c as well (a POST body carried by the upgrade) */
    size_t len;
    const uint8_t *d = fwt_photo(2, &len);
    char *b64 = fwt_b64_encode(d, len);
    size_t cap = strlen(b64) + 64;
    char *body = malloc(cap);
    assert_non_null(body);
    snprintf(body, cap, "{\"images\":[{\"data\":\"%s\"}]}", b64);
    fwt_resp r;
    fwt_post(g_w, "/detect_faces_batch", "application/json", body, strlen(body), FWT_H2C, &r);
    json_t *j = fwt_expect_json(&r, 200);
    assert_int_equal(r.http_version, 2);
    assert_int_equal(json_array_size(json_array_get(json_object_get(j, "results"), 0)), 3);
    json_decref(j);
    fwt_resp_free(&r);
    free(body);
    free(b64);
}

static void test_shutdown_clean(void **state)
{
    (void)state;
    json_decref(fwt_wait_healthy(g_w, 10));
    assert_int_equal(fwt_worker_stop(g_w, SIGTERM, 40), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_1),        cmocka_unit_test(test_batch_2),
        cmocka_unit_test(test_batch_8),        cmocka_unit_test(test_batch_32),
        cmocka_unit_test(test_batch_64),       cmocka_unit_test(test_protocols_agree),
        cmocka_unit_test(test_shutdown_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
