/* Unit tests for server/api: request parsing on every route (JSON and multipart, good and
 * bad), the HTTP status of each whole-request failure (400/413/415), per-item errors that
 * leave the other items intact, option parsing (strict v1, lax legacy), and response
 * encoding parsed back with jansson field by field: v1 analyze/detect/embed with float,
 * base64-f32 and base64-f16 embeddings decoded back, landmarks on/off, per-item errors,
 * legacy dict/list shapes with min_face_quality filtering, error bodies, and float
 * formatting that round-trips every float32. The image bytes are a real JPEG from
 * tests/data (parsing never decodes them). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "facework/image.h"
#include "server/api.h"
#include "util/base64.h"
#include "util/half.h"

/* ------------------------------------------------------------------------------------ */
/* fixtures                                                                             */

static uint8_t *g_jpeg;
static size_t g_jpeg_len;

static int load_fixtures(void **state)
{
    (void)state;
    const char *dir = getenv("FW_TEST_DATA");
    char path[1024];
    if (dir)
        snprintf(path, sizeof path, "%s/images/odd_sampling.jpg", dir);
    else
        snprintf(path, sizeof path, "%s/tests/data/images/odd_sampling.jpg", FW_SOURCE_DIR);
    fw_error err;
    if (fw_read_file(path, 0, &g_jpeg, &g_jpeg_len, &err) != FW_OK) {
        fprintf(stderr, "cannot read %s: %s\n", path, err.message);
        return -1;
    }
    return 0;
}

static int free_fixtures(void **state)
{
    (void)state;
    free(g_jpeg);
    return 0;
}

static char *b64(const void *p, size_t n)
{
    char *s = malloc(fw_base64_encoded_len(n) + 1);
    assert_non_null(s);
    fw_base64_encode(p, n, s);
    return s;
}

/* A growable string for building bodies. */
typedef struct sb {
    char *p;
    size_t len, cap;
} sb;

static void sb_add(sb *s, const void *p, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->p = realloc(s->p, s->cap);
        assert_non_null(s->p);
    }
    memcpy(s->p + s->len, p, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void sb_addf(sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_addf(sb *s, const char *fmt, ...)
{
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof tmp);
    sb_add(s, tmp, (size_t)n);
}

#define BOUNDARY "----facework7MA4YWxkTrZu0gW"
static const char MP_CT[] = "multipart/form-data; boundary=" BOUNDARY;

/* Appends one part; filename and ctype may be NULL. */
static void mp_part(sb *s, const char *name, const char *filename, const char *ctype,
                    const void *data, size_t len)
{
    sb_addf(s, "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"%s\"", name);
    if (filename)
        sb_addf(s, "; filename=\"%s\"", filename);
    sb_addf(s, "\r\n");
    if (ctype)
        sb_addf(s, "Content-Type: %s\r\n", ctype);
    sb_addf(s, "\r\n");
    sb_add(s, data, len);
    sb_addf(s, "\r\n");
}

static void mp_text(sb *s, const char *name, const char *text)
{
    mp_part(s, name, NULL, NULL, text, strlen(text));
}

static void mp_end(sb *s)
{
    sb_addf(s, "--" BOUNDARY "--\r\n");
}

static fw_api_request *parse_ok(fw_api_route route, const char *ct, const void *body, size_t len,
                                const fw_api_limits *lim)
{
    fw_api_request *req = NULL;
    fw_api_error err;
    fw_err rc = fw_api_parse(route, ct, body, len, lim, &req, &err);
    if (rc)
        fail_msg("parse failed (%d): %s", err.status, err.message);
    assert_non_null(req);
    assert_int_equal(req->route, route);
    return req;
}

static void parse_fails(fw_api_route route, const char *ct, const void *body, size_t len,
                        const fw_api_limits *lim, int status, const char *msg_part)
{
    fw_api_request *req = (fw_api_request *)0x1;
    fw_api_error err;
    fw_err rc = fw_api_parse(route, ct, body, len, lim, &req, &err);
    if (rc == FW_OK)
        fail_msg("parse of %.60s succeeded, expected %d \"%s\"", (const char *)body, status,
                 msg_part);
    assert_null(req);
    assert_int_equal(err.code, rc);
    if (err.status != status)
        fail_msg("status %d (\"%s\"), expected %d", err.status, err.message, status);
    if (msg_part && !strstr(err.message, msg_part))
        fail_msg("message \"%s\" lacks \"%s\"", err.message, msg_part);
}

static void json_fails(fw_api_route route, const char *body, int status, const char *msg_part)
{
    parse_fails(route, "application/json", body, strlen(body), NULL, status, msg_part);
}

static fw_api_request *json_ok(fw_api_route route, const char *body)
{
    return parse_ok(route, "application/json", body, strlen(body), NULL);
}

/* ------------------------------------------------------------------------------------ */
/* routes and small helpers                                                             */

static void test_routes_and_statuses(void **state)
{
    (void)state;
    static const char *const paths[] = {"/v1/analyze", "/v1/detect", "/v1/embed",
                                        "/detect_faces_batch_multipart", "/detect_faces_batch"};
    for (int r = 0; r < FW_ROUTE__COUNT; r++) {
        fw_api_route got;
        assert_true(fw_api_route_from_path(paths[r], strlen(paths[r]), &got));
        assert_int_equal(got, r);
        assert_string_equal(fw_api_route_path((fw_api_route)r), paths[r]);
    }
    fw_api_route got;
    assert_false(fw_api_route_from_path("/v1/analyze/", 12, &got));
    assert_false(fw_api_route_from_path("/detect_faces", 13, &got));
    assert_false(fw_api_route_from_path("/v1/analyzeX", 11 + 1, &got));
    assert_true(fw_api_route_from_path("/v1/analyzeX", 11, &got)); /* length bounds the path */
    assert_false(fw_api_route_from_path(NULL, 0, &got));

    assert_int_equal(fw_api_status_for(FW_ERR_PARSE), 400);
    assert_int_equal(fw_api_status_for(FW_ERR_CORRUPT), 400);
    assert_int_equal(fw_api_status_for(FW_ERR_TOO_LARGE), 413);
    assert_int_equal(fw_api_status_for(FW_ERR_UNSUPPORTED), 415);
    assert_int_equal(fw_api_status_for(FW_ERR_AUTH), 401);
    assert_int_equal(fw_api_status_for(FW_ERR_NOMEM), 503);
    assert_int_equal(fw_api_status_for(FW_ERR_BUSY), 503);
    assert_int_equal(fw_api_status_for(FW_ERR_INFERENCE), 500);

    fw_api_limits lim;
    fw_api_limits_init(&lim);
    assert_int_equal(lim.max_images, 64);
    assert_int_equal(lim.max_image_bytes, 20u * 1024u * 1024u);
    fw_api_request_free(NULL);
}

/* ------------------------------------------------------------------------------------ */
/* v1 JSON                                                                              */

static void test_v1_json_good(void **state)
{
    (void)state;
    char *data = b64(g_jpeg, g_jpeg_len);
    sb s = {0};
    sb_addf(&s, "{\"options\":{\"min_score\":0.6,\"max_faces\":3,\"min_face_size\":20.5,"
                "\"embed\":false,\"landmarks\":false,\"embedding_format\":\"base64-f16\","
                "\"unknown\":[1,2]},\"images\":[");
    sb_addf(&s, "{\"id\":\"first.jpg\",\"data\":\"");
    sb_add(&s, data, strlen(data));
    sb_addf(&s, "\"},{\"id\":42,\"data\":\"data:image/jpeg;base64,");
    sb_add(&s, data, strlen(data));
    sb_addf(&s, "\"},{\"data\":\"");
    sb_add(&s, data, strlen(data));
    sb_addf(&s, "\",\"id\":null}]}");
    fw_api_request *req =
        parse_ok(FW_ROUTE_V1_ANALYZE, "Application/JSON; charset=utf-8", s.p, s.len, NULL);
    assert_int_equal(req->n_items, 3);
    assert_string_equal(req->items[0].id, "first.jpg");
    assert_string_equal(req->items[1].id, "42");
    assert_string_equal(req->items[2].id, "2"); /* default: the index */
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(req->items[i].error, FW_OK);
        assert_int_equal(req->items[i].len, g_jpeg_len);
        assert_memory_equal(req->items[i].data, g_jpeg, g_jpeg_len);
        assert_string_equal(req->items[i].phash, "");
    }
    const fw_api_options *o = &req->options;
    assert_true(fabsf(o->min_score - 0.6f) < 1e-6f);
    assert_int_equal(o->max_faces, 3);
    assert_true(o->min_face_size == 20.5f);
    assert_false(o->embed);
    assert_false(o->landmarks);
    assert_int_equal(o->embedding_format, FW_EMBEDDING_BASE64_F16);

    fw_analyze_opts ao;
    fw_api_analyze_opts(req, &ao);
    assert_true(fabsf(ao.min_score - 0.6f) < 1e-6f);
    assert_int_equal(ao.max_faces, 3);
    assert_true(ao.min_face_size == 20.5f);
    assert_false(ao.embed);
    fw_api_request_free(req);

    /* defaults; a request without Content-Type is JSON; +json media types are JSON */
    sb_addf(&s, " "); /* trailing whitespace is fine */
    req = parse_ok(FW_ROUTE_V1_DETECT, NULL, s.p, s.len, NULL);
    assert_false(req->options.embed); /* /v1/detect never embeds */
    fw_api_request_free(req);
    static const char plain[] = "{\"images\":[{\"data\":\"/9j/\"}]}";
    req =
        parse_ok(FW_ROUTE_V1_ANALYZE, "application/vnd.facework+json", plain, strlen(plain), NULL);
    assert_true(req->options.embed);
    assert_true(req->options.landmarks);
    assert_int_equal(req->options.embedding_format, FW_EMBEDDING_FLOAT);
    assert_true(req->options.min_score == 0.0f);
    assert_int_equal(req->options.max_faces, 0);
    assert_int_equal(req->items[0].len, 3);
    assert_memory_equal(req->items[0].data, "\xff\xd8\xff", 3);
    fw_api_analyze_opts(req, &ao);
    assert_true(ao.embed);
    fw_api_request_free(req);
    req = parse_ok(FW_ROUTE_V1_EMBED, "", plain, strlen(plain), NULL);
    assert_true(req->options.embed);
    fw_api_request_free(req);
    /* null options and null option values mean defaults */
    req = json_ok(FW_ROUTE_V1_ANALYZE, "{\"options\":null,\"images\":[{\"data\":\"/9j/\"}]}");
    fw_api_request_free(req);
    req = json_ok(FW_ROUTE_V1_ANALYZE, "{\"options\":{\"min_score\":null,\"embed\":null,"
                                       "\"embedding_format\":null,\"max_faces\":null},"
                                       "\"images\":[{\"data\":\"/9j/\"}]}");
    assert_true(req->options.embed);
    fw_api_request_free(req);
    free(s.p);
    free(data);
}

static void test_v1_json_item_errors(void **state)
{
    (void)state;
    /* invalid base64, empty data, whitespace-only data, an oversize image and two good
     * ones: per-item errors, the rest intact */
    fw_api_limits lim;
    fw_api_limits_init(&lim);
    lim.max_image_bytes = 6;
    static const char body[] = "{\"images\":[{\"id\":\"good\",\"data\":\"Zm9vYmFy\"},"
                               "{\"id\":\"bad\",\"data\":\"Zm9v!mFy\"},"
                               "{\"id\":\"empty\",\"data\":\"\"},"
                               "{\"id\":\"blank\",\"data\":\" \\n \"},"
                               "{\"id\":\"big\",\"data\":\"Zm9vYmFyYg==\"},"
                               "{\"id\":\"good2\",\"data\":\"Zm9v\\nYmE=\"}]}";
    fw_api_request *req =
        parse_ok(FW_ROUTE_V1_ANALYZE, "application/json", body, strlen(body), &lim);
    assert_int_equal(req->n_items, 6);
    assert_int_equal(req->items[0].error, FW_OK);
    assert_memory_equal(req->items[0].data, "foobar", 6);
    assert_int_equal(req->items[1].error, FW_ERR_CORRUPT);
    assert_non_null(strstr(req->items[1].message, "invalid base64"));
    assert_non_null(strstr(req->items[1].message, "offset 4"));
    assert_null(req->items[1].data);
    assert_int_equal(req->items[2].error, FW_ERR_EMPTY_INPUT);
    assert_int_equal(req->items[3].error, FW_ERR_EMPTY_INPUT);
    assert_int_equal(req->items[4].error, FW_ERR_TOO_LARGE);
    assert_non_null(strstr(req->items[4].message, "6 bytes"));
    assert_int_equal(req->items[5].error, FW_OK);
    assert_int_equal(req->items[5].len, 5);
    assert_memory_equal(req->items[5].data, "fooba", 5);
    assert_string_equal(req->items[5].id, "good2");
    fw_api_request_free(req);
}

static void test_v1_json_errors(void **state)
{
    (void)state;
    const fw_api_route R = FW_ROUTE_V1_ANALYZE;
    json_fails(R, "{\"images\":[", 400, "invalid JSON");
    json_fails(R, "{\"images\":[]} trailing", 400, "invalid JSON");
    json_fails(R, "[{\"data\":\"Zm9v\"}]", 400, "must be an object");
    json_fails(R, "{}", 400, "missing \"images\"");
    json_fails(R, "{\"images\":{\"data\":\"Zm9v\"}}", 400, "must be a list");
    json_fails(R, "{\"images\":[]}", 400, "no images");
    json_fails(R, "{\"images\":[\"Zm9v\"]}", 400, "images[0] must be an object");
    json_fails(R, "{\"images\":[{\"data\":\"Zm9v\"},{\"id\":\"x\"}]}", 400, "images[1].data");
    json_fails(R, "{\"images\":[{\"data\":12}]}", 400, "images[0].data");
    json_fails(R, "{\"images\":[{\"id\":{},\"data\":\"Zm9v\"}]}", 400, "string or an integer");
    json_fails(R, "{\"images\":[{\"id\":\"a\\u0000b\",\"data\":\"Zm9v\"}]}", 400, "JSON");
    char longid[400];
    snprintf(longid, sizeof longid, "{\"images\":[{\"id\":\"%0300d\",\"data\":\"Zm9v\"}]}", 7);
    json_fails(R, longid, 400, "longer than 255");
    /* option types and ranges */
    static const char *const bad_opts[][2] = {
        {"\"options\":[]", "options must be a JSON object"},
        {"\"options\":{\"min_score\":\"0.5\"}", "min_score"},
        {"\"options\":{\"min_score\":1.5}", "min_score must be a number in [0, 1]"},
        {"\"options\":{\"min_score\":-0.1}", "min_score"},
        {"\"options\":{\"max_faces\":-1}", "max_faces"},
        {"\"options\":{\"max_faces\":2.5}", "max_faces"},
        {"\"options\":{\"max_faces\":99999999999}", "max_faces"},
        {"\"options\":{\"min_face_size\":-3}", "min_face_size must be a number >= 0"},
        {"\"options\":{\"embed\":\"yes\"}", "embed must be true or false"},
        {"\"options\":{\"landmarks\":1}", "landmarks"},
        {"\"options\":{\"embedding_format\":\"f64\"}", "embedding_format"},
        {"\"options\":{\"embedding_format\":16}", "embedding_format"},
    };
    for (size_t i = 0; i < sizeof bad_opts / sizeof bad_opts[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "{%s,\"images\":[{\"data\":\"Zm9v\"}]}", bad_opts[i][0]);
        json_fails(R, body, 400, bad_opts[i][1]);
    }
}

static void test_limits_413_and_media_415(void **state)
{
    (void)state;
    fw_api_limits lim;
    fw_api_limits_init(&lim);
    lim.max_images = 2;
    static const char three[] =
        "{\"images\":[{\"data\":\"Zm9v\"},{\"data\":\"Zm9v\"},{\"data\":\"Zm9v\"}]}";
    parse_fails(FW_ROUTE_V1_ANALYZE, "application/json", three, strlen(three), &lim, 413,
                "too many images: 3 (limit 2)");
    parse_fails(FW_ROUTE_LEGACY_JSON, "application/json", three, strlen(three), &lim, 413,
                "too many images");
    lim.max_images = 3;
    fw_api_request *req =
        parse_ok(FW_ROUTE_V1_ANALYZE, "application/json", three, strlen(three), &lim);
    fw_api_request_free(req);
    lim.max_body_bytes = 20;
    parse_fails(FW_ROUTE_V1_ANALYZE, "application/json", three, strlen(three), &lim, 413,
                "over the limit of 20");

    /* multipart: too many image parts, and more parts than any request needs */
    sb s = {0};
    for (int i = 0; i < 3; i++)
        mp_part(&s, "image", NULL, "image/jpeg", "x", 1);
    mp_end(&s);
    lim.max_images = 2;
    lim.max_body_bytes = 0;
    parse_fails(FW_ROUTE_V1_ANALYZE, MP_CT, s.p, s.len, &lim, 413, "too many images");
    s.len = 0;
    for (int i = 0; i < 40; i++)
        mp_text(&s, "junk", "x");
    mp_part(&s, "image", NULL, "image/jpeg", "x", 1);
    mp_end(&s);
    parse_fails(FW_ROUTE_V1_ANALYZE, MP_CT, s.p, s.len, &lim, 413, "too many multipart parts");

    /* 415: a media type the route does not take */
    parse_fails(FW_ROUTE_V1_ANALYZE, "text/plain", three, strlen(three), NULL, 415,
                "\"text/plain\"");
    parse_fails(FW_ROUTE_V1_EMBED, "image/jpeg", g_jpeg, g_jpeg_len, NULL, 415, "image/jpeg");
    parse_fails(FW_ROUTE_V1_DETECT, "application/x-www-form-urlencoded", "a=b", 3, NULL, 415, NULL);
    parse_fails(FW_ROUTE_LEGACY_MULTIPART, "application/json", three, strlen(three), NULL, 415,
                "expected multipart/form-data");
    parse_fails(FW_ROUTE_LEGACY_MULTIPART, NULL, three, strlen(three), NULL, 415, "(none)");
    parse_fails(FW_ROUTE_LEGACY_JSON, MP_CT, s.p, s.len, NULL, 415, "expected application/json");
    parse_fails(FW_ROUTE_V1_ANALYZE, "multipart/mixed; boundary=" BOUNDARY, s.p, s.len, NULL, 415,
                NULL);
    /* an empty body is malformed, not unsupported */
    parse_fails(FW_ROUTE_V1_ANALYZE, "application/json", "", 0, NULL, 400, "empty");
    free(s.p);
}

/* ------------------------------------------------------------------------------------ */
/* v1 multipart                                                                         */

static void test_v1_multipart_good(void **state)
{
    (void)state;
    sb s = {0};
    sb_addf(&s, "preamble\r\n");
    mp_part(&s, "image", "a.jpg", "image/jpeg", g_jpeg, g_jpeg_len);
    mp_text(&s, "options",
            "{\"min_score\":0.7,\"landmarks\":false,"
            "\"embedding_format\":\"base64-f32\"}");
    mp_part(&s, "images", NULL, "image/jpeg", g_jpeg, g_jpeg_len); /* no filename */
    mp_text(&s, "ignored", "whatever");
    mp_part(&s, "image", "", NULL, "", 0); /* empty file: a per-item error */
    mp_part(&s, "image", "b.jpg", "image/jpeg", g_jpeg, g_jpeg_len);
    mp_end(&s);
    fw_api_request *req = parse_ok(FW_ROUTE_V1_ANALYZE, MP_CT, s.p, s.len, NULL);
    assert_int_equal(req->n_items, 4);
    assert_string_equal(req->items[0].id, "a.jpg");
    assert_string_equal(req->items[1].id, "1");
    assert_string_equal(req->items[2].id, "2");
    assert_string_equal(req->items[3].id, "b.jpg");
    for (int i = 0; i < 4; i++) {
        if (i == 2) {
            assert_int_equal(req->items[i].error, FW_ERR_EMPTY_INPUT);
            continue;
        }
        assert_int_equal(req->items[i].error, FW_OK);
        assert_int_equal(req->items[i].len, g_jpeg_len);
        assert_memory_equal(req->items[i].data, g_jpeg, g_jpeg_len);
        /* zero-copy: into the body */
        assert_true((const char *)req->items[i].data > s.p &&
                    (const char *)req->items[i].data < s.p + s.len);
        assert_null(req->items[i].owned);
    }
    assert_true(fabsf(req->options.min_score - 0.7f) < 1e-6f);
    assert_false(req->options.landmarks);
    assert_int_equal(req->options.embedding_format, FW_EMBEDDING_BASE64_F32);
    fw_api_request_free(req);

    /* an empty options part means defaults; an oversize image is a per-item error */
    s.len = 0;
    mp_text(&s, "options", "  ");
    mp_part(&s, "image", "a.jpg", "image/jpeg", g_jpeg, g_jpeg_len);
    mp_part(&s, "image", "tiny.jpg", "image/jpeg", "\xff\xd8", 2);
    mp_end(&s);
    fw_api_limits lim;
    fw_api_limits_init(&lim);
    lim.max_image_bytes = 100;
    req = parse_ok(FW_ROUTE_V1_EMBED, MP_CT, s.p, s.len, &lim);
    assert_int_equal(req->n_items, 2);
    assert_int_equal(req->items[0].error, FW_ERR_TOO_LARGE);
    assert_int_equal(req->items[1].error, FW_OK);
    assert_int_equal(req->items[1].len, 2);
    fw_api_request_free(req);
    free(s.p);
}

static void test_v1_multipart_errors(void **state)
{
    (void)state;
    const fw_api_route R = FW_ROUTE_V1_ANALYZE;
    sb s = {0};
    mp_text(&s, "options", "{\"min_score\":");
    mp_part(&s, "image", "a.jpg", NULL, "x", 1);
    mp_end(&s);
    parse_fails(R, MP_CT, s.p, s.len, NULL, 400, "invalid JSON in the options part");

    s.len = 0;
    mp_text(&s, "options", "{\"embed\":\"no\"}");
    mp_part(&s, "image", "a.jpg", NULL, "x", 1);
    mp_end(&s);
    parse_fails(R, MP_CT, s.p, s.len, NULL, 400, "embed must be true or false");

    s.len = 0;
    mp_text(&s, "options", "{}");
    mp_text(&s, "options", "{}");
    mp_part(&s, "image", "a.jpg", NULL, "x", 1);
    mp_end(&s);
    parse_fails(R, MP_CT, s.p, s.len, NULL, 400, "more than one \"options\"");

    s.len = 0;
    mp_part(&s, "file", "a.jpg", NULL, "x", 1);
    mp_end(&s);
    parse_fails(R, MP_CT, s.p, s.len, NULL, 400, "no images");

    char name[300];
    memset(name, 'n', 299);
    name[299] = '\0';
    s.len = 0;
    mp_part(&s, "image", name, NULL, "x", 1);
    mp_end(&s);
    parse_fails(R, MP_CT, s.p, s.len, NULL, 400, "filename longer than 255");

    s.len = 0;
    mp_part(&s, "image", "a.jpg", NULL, "x", 1);
    parse_fails(R, MP_CT, s.p, s.len, NULL, 400, "malformed multipart body");
    parse_fails(R, "multipart/form-data", s.p, s.len, NULL, 400, "missing boundary");
    parse_fails(R, "multipart/form-data; boundary=other", s.p, s.len, NULL, 400, "no parts");
    sb_addf(&s, "--" BOUNDARY);
    parse_fails(R, MP_CT, s.p, s.len, NULL, 400, "missing closing boundary");
    free(s.p);
}

/* ------------------------------------------------------------------------------------ */
/* legacy                                                                               */

static void test_legacy_multipart_good(void **state)
{
    (void)state;
    sb s = {0};
    /* fields first, as Python requests sends them; indexes shuffled */
    mp_text(&s, "image_hashes",
            "[{\"phash\": \"ph-two\", \"index\": 2}, {\"phash\": \"ph-zero\", "
            "\"index\": 0}, {\"phash\": 12345, \"index\": 1}]");
    mp_text(&s, "min_face_quality", "0.7");
    mp_text(&s, "require_face", "True");
    mp_text(&s, "crop_faces", "0");
    mp_text(&s, "face_margin", " 0.3 ");
    for (int i = 0; i < 3; i++) {
        char fn[32];
        snprintf(fn, sizeof fn, "image_%d.jpg", i);
        mp_part(&s, "images", fn, "image/jpeg", g_jpeg, g_jpeg_len);
    }
    mp_end(&s);
    fw_api_request *req = parse_ok(FW_ROUTE_LEGACY_MULTIPART, MP_CT, s.p, s.len, NULL);
    assert_int_equal(req->n_items, 3);
    assert_string_equal(req->items[0].phash, "ph-zero");
    assert_string_equal(req->items[1].phash, "12345");
    assert_string_equal(req->items[2].phash, "ph-two");
    assert_string_equal(req->items[0].id, "image_0.jpg");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(req->items[i].error, FW_OK);
        assert_memory_equal(req->items[i].data, g_jpeg, g_jpeg_len);
    }
    const fw_api_options *o = &req->options;
    assert_true(fabsf(o->min_face_quality - 0.7f) < 1e-6f);
    assert_true(o->require_face);
    assert_false(o->crop_faces);
    assert_true(fabsf(o->face_margin - 0.3f) < 1e-6f);
    assert_true(o->embed);
    fw_analyze_opts ao;
    fw_api_analyze_opts(req, &ao);
    assert_true(ao.embed);
    assert_true(ao.min_score == 0.0f); /* the encoder applies min_face_quality */
    fw_api_request_free(req);

    /* defaults; a missing index means the list position; empty field text is the default;
     * the last repeated field wins; an "image" part is not an image here */
    s.len = 0;
    mp_text(&s, "min_face_quality", "0.9");
    mp_text(&s, "min_face_quality", "");
    mp_text(&s, "crop_faces", "yes");
    mp_text(&s, "crop_faces", "off");
    mp_text(&s, "image_hashes", "[{\"phash\":\"a\"},{\"phash\":\"b\",\"index\":null}]");
    mp_part(&s, "images", "x.jpg", "image/jpeg", g_jpeg, g_jpeg_len);
    mp_part(&s, "image", "ignored.jpg", "image/jpeg", "x", 1);
    mp_part(&s, "images", "y.jpg", "image/jpeg", "", 0);
    mp_end(&s);
    req = parse_ok(FW_ROUTE_LEGACY_MULTIPART, MP_CT, s.p, s.len, NULL);
    assert_int_equal(req->n_items, 2);
    assert_string_equal(req->items[0].phash, "a");
    assert_string_equal(req->items[1].phash, "b");
    assert_int_equal(req->items[1].error, FW_ERR_EMPTY_INPUT);
    assert_true(req->options.min_face_quality == 0.5f); /* the last, "", is the default */
    assert_false(req->options.crop_faces);
    assert_false(req->options.require_face);
    assert_true(req->options.face_margin == 0.2f);
    fw_api_request_free(req);
    free(s.p);
}

static void legacy_hashes_fail(const char *hashes, int n_images, const char *msg_part)
{
    sb s = {0};
    if (hashes)
        mp_text(&s, "image_hashes", hashes);
    for (int i = 0; i < n_images; i++)
        mp_part(&s, "images", "f.jpg", "image/jpeg", "x", 1);
    mp_end(&s);
    parse_fails(FW_ROUTE_LEGACY_MULTIPART, MP_CT, s.p, s.len, NULL, 400, msg_part);
    free(s.p);
}

static void test_legacy_multipart_errors(void **state)
{
    (void)state;
    legacy_hashes_fail("not json", 1, "image_hashes is not valid JSON");
    legacy_hashes_fail("{\"phash\":\"a\",\"index\":0}", 1, "must be a JSON list");
    legacy_hashes_fail("\"a\"", 1, "must be a JSON list");
    legacy_hashes_fail("[{\"phash\":\"a\",\"index\":0}]", 2, "1 entries for 2 images");
    legacy_hashes_fail("[{\"phash\":\"a\",\"index\":0},{\"phash\":\"b\",\"index\":1}]", 1,
                       "2 entries for 1 images");
    legacy_hashes_fail("[{\"phash\":\"a\",\"index\":1}]", 1, "index 1 is out of range");
    legacy_hashes_fail("[{\"phash\":\"a\",\"index\":-1}]", 1, "out of range");
    legacy_hashes_fail("[{\"phash\":\"a\",\"index\":0},{\"phash\":\"b\",\"index\":0}]", 2,
                       "index 0 is repeated");
    legacy_hashes_fail("[{\"phash\":\"a\",\"index\":\"0\"}]", 1, "must be an integer");
    legacy_hashes_fail("[{\"phash\":null,\"index\":0}]", 1, "phash must be a string");
    legacy_hashes_fail("[{\"index\":0}]", 1, "phash must be a string");
    legacy_hashes_fail("[\"abc\"]", 1, "image_hashes[0] must be an object");
    legacy_hashes_fail(NULL, 1, "missing the image_hashes");
    legacy_hashes_fail("[]", 0, "no images");

    sb s = {0};
    mp_text(&s, "image_hashes", "[{\"phash\":\"a\",\"index\":0}]");
    mp_text(&s, "min_face_quality", "high");
    mp_part(&s, "images", "f.jpg", NULL, "x", 1);
    mp_end(&s);
    parse_fails(FW_ROUTE_LEGACY_MULTIPART, MP_CT, s.p, s.len, NULL, 400,
                "min_face_quality must be a number");
    s.len = 0;
    mp_text(&s, "image_hashes", "[{\"phash\":\"a\",\"index\":0}]");
    mp_text(&s, "require_face", "maybe");
    mp_part(&s, "images", "f.jpg", NULL, "x", 1);
    mp_end(&s);
    parse_fails(FW_ROUTE_LEGACY_MULTIPART, MP_CT, s.p, s.len, NULL, 400,
                "require_face must be a boolean");
    s.len = 0;
    mp_text(&s, "image_hashes", "[{\"phash\":\"a\",\"index\":0}]");
    mp_text(&s, "face_margin", "nan");
    mp_part(&s, "images", "f.jpg", NULL, "x", 1);
    mp_end(&s);
    parse_fails(FW_ROUTE_LEGACY_MULTIPART, MP_CT, s.p, s.len, NULL, 400, "face_margin");
    free(s.p);
}

static void test_legacy_json(void **state)
{
    (void)state;
    char *data = b64(g_jpeg, g_jpeg_len);
    sb s = {0};
    sb_addf(&s,
            "{\"images\":[{\"data\":\"%s\",\"image_id\":\"img-1\"},{\"data\":\"%s\","
            "\"image_id\":7},{\"data\":\"@@\"}],\"min_face_quality\":\"0.6\","
            "\"require_face\":1,\"crop_faces\":\"false\",\"face_margin\":0,\"extra\":{}}",
            "/9j/", "/9j/");
    fw_api_request *req = parse_ok(FW_ROUTE_LEGACY_JSON, NULL, s.p, s.len, NULL);
    assert_int_equal(req->n_items, 3);
    assert_string_equal(req->items[0].id, "img-1");
    assert_string_equal(req->items[1].id, "7");
    assert_string_equal(req->items[2].id, "2");
    assert_int_equal(req->items[0].len, 3);
    assert_int_equal(req->items[2].error, FW_ERR_CORRUPT);
    assert_true(fabsf(req->options.min_face_quality - 0.6f) < 1e-6f);
    assert_true(req->options.require_face);
    assert_false(req->options.crop_faces);
    assert_true(req->options.face_margin == 0.0f);
    assert_true(req->options.embed);
    fw_api_request_free(req);

    /* a real JPEG, default quality */
    s.len = 0;
    sb_add(&s, "{\"images\":[{\"data\":\"", 20);
    sb_add(&s, data, strlen(data));
    sb_add(&s, "\"}]}", 4);
    req = parse_ok(FW_ROUTE_LEGACY_JSON, "application/json", s.p, s.len, NULL);
    assert_int_equal(req->items[0].len, g_jpeg_len);
    assert_memory_equal(req->items[0].data, g_jpeg, g_jpeg_len);
    assert_true(req->options.min_face_quality == 0.5f);
    fw_api_request_free(req);

    const fw_api_route R = FW_ROUTE_LEGACY_JSON;
    json_fails(R, "{\"images\":[{\"data\":\"/9j/\"}]", 400, "invalid JSON");
    json_fails(R, "{\"images\":[{\"data\":\"/9j/\"}],\"min_face_quality\":\"high\"}", 400,
               "min_face_quality");
    json_fails(R, "{\"images\":[{\"data\":\"/9j/\"}],\"min_face_quality\":[]}", 400,
               "min_face_quality");
    json_fails(R, "{\"images\":[{\"data\":\"/9j/\"}],\"require_face\":2}", 400, "require_face");
    json_fails(R, "{\"images\":[{\"image_id\":\"x\"}]}", 400, "images[0].data");
    json_fails(R, "{\"images\":[]}", 400, "no images");
    free(s.p);
    free(data);
}

/* ------------------------------------------------------------------------------------ */
/* response encoding                                                                    */

#define DIM 512

typedef struct fake {
    fw_result res[4];
    float *emb[4];
} fake;

static void fill_face(fw_face *f, float x, float score, float *emb)
{
    f->bbox[0] = x;
    f->bbox[1] = x * 0.5f + 0.123f;
    f->bbox[2] = x + 100.456f;
    f->bbox[3] = x + 120.0f;
    f->score = score;
    for (int k = 0; k < 5; k++) {
        f->landmarks[k][0] = x + 10.0f * (float)k + 0.3333f;
        f->landmarks[k][1] = x + 20.0f + 0.6666f * (float)k;
    }
    f->embedding = emb;
}

static float *make_embedding(uint32_t seed)
{
    float *e = malloc(DIM * sizeof *e);
    assert_non_null(e);
    double norm = 0;
    for (int i = 0; i < DIM; i++) {
        seed = seed * 1664525u + 1013904223u;
        e[i] = (float)((double)(seed >> 8) / (double)(1u << 24) - 0.5);
        norm += (double)e[i] * e[i];
    }
    for (int i = 0; i < DIM; i++)
        e[i] = (float)(e[i] / sqrt(norm));
    return e;
}

/* Results for a 4-item request: item 0 has two faces (scores 0.9 and 0.3), item 1 is
 * expected to carry a parse error of its own, item 2 failed in the pipeline, item 3 has no
 * faces. */
static void fake_results(fake *fk)
{
    memset(fk, 0, sizeof *fk);
    fk->emb[0] = make_embedding(1);
    fk->emb[1] = make_embedding(2);
    fw_result *r = &fk->res[0];
    r->width = 640;
    r->height = 480;
    r->n_faces = 2;
    r->faces = calloc(2, sizeof *r->faces);
    assert_non_null(r->faces);
    fill_face(&r->faces[0], 10.0f, 0.9f, fk->emb[0]);
    fill_face(&r->faces[1], 200.5f, 0.3f, fk->emb[1]);
    fk->res[1].status = FW_ERR_INTERNAL; /* must be ignored: the item has its own error */
    fk->res[2].status = FW_ERR_CORRUPT;
    snprintf(fk->res[2].message, sizeof fk->res[2].message, "cannot decode: not a JPEG");
    fk->res[3].width = 32;
    fk->res[3].height = 16;
}

static void fake_free(fake *fk)
{
    free(fk->res[0].faces);
    free(fk->emb[0]);
    free(fk->emb[1]);
}

/* A 4-item request on route: item 1 has invalid base64. */
static fw_api_request *four_items(fw_api_route route, const char *options)
{
    char body[512];
    if (route == FW_ROUTE_LEGACY_JSON)
        snprintf(body, sizeof body,
                 "{\"images\":[{\"data\":\"/9j/\"},{\"data\":\"!!\"},{\"data\":\"/9j/\"},"
                 "{\"data\":\"/9j/\"}]%s}",
                 options ? options : "");
    else
        snprintf(body, sizeof body,
                 "{\"images\":[{\"id\":\"a\",\"data\":\"/9j/\"},{\"id\":\"b\",\"data\":\"!!\"},"
                 "{\"id\":\"c\",\"data\":\"/9j/\"},{\"id\":\"d\",\"data\":\"/9j/\"}]%s}",
                 options ? options : "");
    fw_api_request *req = parse_ok(route, "application/json", body, strlen(body), NULL);
    assert_int_equal(req->items[1].error, FW_ERR_CORRUPT);
    return req;
}

static json_t *encode(const fw_api_request *req, const fw_result *res, size_t dim)
{
    fw_api_response_info info = {.took_ms = 12.3456,
                                 .provider = "cuda",
                                 .model = "default",
                                 .embedding_dim = dim,
                                 .gpu_used = true,
                                 .worker_id = "host-1:8765"};
    char *out = NULL;
    size_t len = 0;
    fw_error err;
    fw_err rc = fw_api_encode_response(req, res, &info, &out, &len, &err);
    if (rc)
        fail_msg("encode: %s", err.message);
    assert_int_equal(strlen(out), len);
    json_error_t je;
    json_t *j = json_loadb(out, len, 0, &je);
    if (!j)
        fail_msg("response is not JSON (%s): %.200s", je.text, out);
    free(out);
    return j;
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        fail_msg("\"%s\" is not a number", key);
    return json_number_value(v);
}

static const char *str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        fail_msg("\"%s\" is not a string", key);
    return json_string_value(v);
}

static void check_bbox_landmarks(json_t *jf, const fw_face *f, bool landmarks)
{
    json_t *bb = json_object_get(jf, "bbox");
    assert_int_equal(json_array_size(bb), 4);
    for (int k = 0; k < 4; k++) {
        assert_true(json_is_real(json_array_get(bb, k)));
        assert_true(fabs(json_real_value(json_array_get(bb, k)) - f->bbox[k]) <= 0.0051);
    }
    json_t *lm = json_object_get(jf, "landmarks");
    if (!landmarks) {
        assert_null(lm);
        return;
    }
    assert_int_equal(json_array_size(lm), 5);
    for (int k = 0; k < 5; k++) {
        json_t *pt = json_array_get(lm, k);
        assert_int_equal(json_array_size(pt), 2);
        assert_true(fabs(json_real_value(json_array_get(pt, 0)) - f->landmarks[k][0]) <= 0.0051);
        assert_true(fabs(json_real_value(json_array_get(pt, 1)) - f->landmarks[k][1]) <= 0.0051);
    }
}

/* Checks an embedding value in each format against the original floats. */
static void check_embedding(json_t *v, const float *want, fw_embedding_format fmt)
{
    if (fmt == FW_EMBEDDING_FLOAT) {
        assert_true(json_is_array(v));
        assert_int_equal(json_array_size(v), DIM);
        for (int i = 0; i < DIM; i++) {
            float got = (float)json_number_value(json_array_get(v, (size_t)i));
            if (got != want[i])
                fail_msg("embedding[%d] = %.9g, want %.9g", i, (double)got, (double)want[i]);
        }
        return;
    }
    assert_true(json_is_string(v));
    size_t len;
    uint8_t buf[DIM * 4];
    assert_int_equal(
        fw_base64_decode(json_string_value(v), json_string_length(v), buf, sizeof buf, &len, NULL),
        FW_OK);
    if (fmt == FW_EMBEDDING_BASE64_F32) {
        assert_int_equal(len, DIM * 4);
        for (int i = 0; i < DIM; i++) {
            uint32_t x = (uint32_t)buf[4 * i] | (uint32_t)buf[4 * i + 1] << 8 |
                         (uint32_t)buf[4 * i + 2] << 16 | (uint32_t)buf[4 * i + 3] << 24;
            float f;
            memcpy(&f, &x, sizeof f);
            assert_true(f == want[i]);
        }
    } else {
        assert_int_equal(len, DIM * 2);
        for (int i = 0; i < DIM; i++) {
            uint16_t h = (uint16_t)(buf[2 * i] | buf[2 * i + 1] << 8);
            assert_int_equal(h, fw_f32_to_f16(want[i]));
            assert_true(fabsf(fw_f16_to_f32(h) - want[i]) <= 1e-3f);
        }
    }
}

static void check_error_item(json_t *item, size_t index, const char *id, const char *code,
                             const char *msg_part)
{
    assert_int_equal(num(item, "index"), (double)index);
    assert_string_equal(str(item, "id"), id);
    json_t *e = json_object_get(item, "error");
    assert_true(json_is_object(e));
    assert_string_equal(str(e, "code"), code);
    assert_non_null(strstr(str(e, "message"), msg_part));
    assert_null(json_object_get(item, "faces"));
}

static void check_v1_analyze(fw_api_route route, const char *options, bool landmarks,
                             bool embeddings, fw_embedding_format fmt)
{
    fake fk;
    fake_results(&fk);
    fw_api_request *req = four_items(route, options);
    json_t *j = encode(req, fk.res, DIM);
    assert_true(fabs(num(j, "took_ms") - 12.346) < 1e-9);
    assert_string_equal(str(j, "provider"), "cuda");
    assert_string_equal(str(j, "model"), "default");
    json_t *results = json_object_get(j, "results");
    assert_int_equal(json_array_size(results), 4);

    json_t *r0 = json_array_get(results, 0);
    assert_int_equal(num(r0, "index"), 0);
    assert_string_equal(str(r0, "id"), "a");
    assert_int_equal(num(r0, "width"), 640);
    assert_int_equal(num(r0, "height"), 480);
    assert_null(json_object_get(r0, "error"));
    json_t *faces = json_object_get(r0, "faces");
    assert_int_equal(json_array_size(faces), 2); /* v1 does not apply min_face_quality */
    for (size_t k = 0; k < 2; k++) {
        json_t *jf = json_array_get(faces, k);
        const fw_face *f = &fk.res[0].faces[k];
        check_bbox_landmarks(jf, f, landmarks);
        assert_true((float)num(jf, "score") == f->score);
        json_t *emb = json_object_get(jf, "embedding");
        if (embeddings)
            check_embedding(emb, f->embedding, fmt);
        else
            assert_null(emb);
        assert_null(json_object_get(jf, "quality"));
    }
    check_error_item(json_array_get(results, 1), 1, "b", "corrupt", "invalid base64");
    check_error_item(json_array_get(results, 2), 2, "c", "corrupt", "not a JPEG");
    json_t *r3 = json_array_get(results, 3);
    assert_int_equal(num(r3, "width"), 32);
    assert_int_equal(json_array_size(json_object_get(r3, "faces")), 0);
    json_decref(j);
    fw_api_request_free(req);
    fake_free(&fk);
}

/* Quality options: parsed strictly, mapped onto fw_analyze_opts; a named preset filters
 * unless quality_action says otherwise; legacy crop_faces means box crops, JPEG 95. */
static void test_quality_options(void **state)
{
    (void)state;
    const fw_api_route R = FW_ROUTE_V1_ANALYZE;
    fw_analyze_opts ao;
    fw_api_request *req = json_ok(R, "{\"images\":[{\"data\":\"/9j/\"}]}");
    fw_api_analyze_opts(req, &ao);
    assert_true(ao.quality);
    assert_int_equal(ao.quality_action, FW_QUALITY_ANNOTATE);
    assert_int_equal(ao.crops, FW_CROP_NONE);
    assert_true(ao.thresholds.max_yaw == 90 && ao.thresholds.min_size == 0);
    fw_api_request_free(req);

    req = json_ok(R, "{\"images\":[{\"data\":\"/9j/\"}],\"options\":{\"quality_preset\":"
                     "\"ingest\",\"crops\":\"aligned\",\"crop_format\":\"png\",\"crop_quality\":"
                     "80,\"face_margin\":0.5,\"quality\":false}}");
    fw_api_analyze_opts(req, &ao);
    assert_false(ao.quality);
    assert_int_equal(ao.quality_action, FW_QUALITY_FILTER); /* a named preset filters */
    assert_true(ao.thresholds.min_size == 80 && ao.thresholds.min_sharpness == 80);
    assert_true(ao.thresholds.max_yaw == 25 && fabsf(ao.thresholds.min_quality - 0.6f) < 1e-6f);
    assert_int_equal(ao.crops, FW_CROP_ALIGNED);
    assert_int_equal(ao.crop_format, FW_FORMAT_PNG);
    assert_int_equal(ao.crop_quality, 80);
    assert_true(ao.face_margin == 0.5f);
    assert_int_equal(fw_analyze_opts_validate(&ao, NULL), FW_OK);
    fw_api_request_free(req);

    req = json_ok(R, "{\"images\":[{\"data\":\"/9j/\"}],\"options\":{\"quality_action\":"
                     "\"annotate\",\"quality_preset\":{\"max_yaw\":20,\"min_quality\":0.5}}}");
    fw_api_analyze_opts(req, &ao);
    assert_int_equal(ao.quality_action, FW_QUALITY_ANNOTATE); /* explicit wins */
    assert_true(ao.thresholds.max_yaw == 20 && ao.thresholds.max_pitch == 90);
    assert_true(ao.thresholds.min_quality == 0.5f && ao.thresholds.min_size == 0);
    fw_api_request_free(req);
    req = json_ok(R, "{\"images\":[{\"data\":\"/9j/\"}],\"options\":{\"quality_preset\":"
                     "\"none\",\"quality_action\":\"reject\"}}");
    fw_api_analyze_opts(req, &ao);
    assert_int_equal(ao.quality_action, FW_QUALITY_REJECT);
    fw_api_request_free(req);

    static const struct {
        const char *options, *msg;
    } bad[] = {
        {"{\"quality_preset\":\"lenient\"}", "quality_preset"},
        {"{\"quality_preset\":[]}", "quality_preset"},
        {"{\"quality_preset\":{\"max_pitch\":0}}", "quality_preset.max_pitch"},
        {"{\"quality_preset\":{\"min_quality\":1.5}}", "quality_preset.min_quality"},
        {"{\"quality_preset\":{\"yaw\":10}}", "unknown threshold"},
        {"{\"quality_action\":1}", "quality_action"},
        {"{\"crops\":\"face\"}", "crops"},
        {"{\"crop_format\":\"gif\"}", "crop_format"},
        {"{\"crop_quality\":101}", "crop_quality"},
        {"{\"face_margin\":\"0.2\"}", "face_margin"},
        {"{\"quality\":1}", "quality"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"images\":[{\"data\":\"/9j/\"}],\"options\":%s}",
                 bad[i].options);
        json_fails(R, body, 400, bad[i].msg);
    }

    /* legacy: crop_faces and face_margin (clamped), no quality object */
    req = json_ok(FW_ROUTE_LEGACY_JSON,
                  "{\"images\":[{\"data\":\"/9j/\"}],\"crop_faces\":\"yes\",\"face_margin\":5}");
    fw_api_analyze_opts(req, &ao);
    assert_int_equal(ao.crops, FW_CROP_BOX);
    assert_int_equal(ao.crop_format, FW_FORMAT_JPEG);
    assert_int_equal(ao.crop_quality, 95);
    assert_true(ao.face_margin == 2.0f);
    assert_false(ao.quality);
    fw_api_request_free(req);
    req = json_ok(FW_ROUTE_LEGACY_JSON, "{\"images\":[{\"data\":\"/9j/\"}]}");
    fw_api_analyze_opts(req, &ao);
    assert_int_equal(ao.crops, FW_CROP_NONE);
    fw_api_request_free(req);
}

/* The quality object and the crop as the encoder writes them, v1 and legacy. */
static void test_encode_quality_and_crop(void **state)
{
    (void)state;
    static const uint8_t crop[5] = {0xff, 0xd8, 0xff, 0x00, 0x42};
    fw_face face;
    memset(&face, 0, sizeof face);
    face.bbox[2] = face.bbox[3] = 100;
    face.score = 0.9f;
    face.has_quality = true;
    face.quality = (fw_face_quality){.sharpness_aligned = 123.456f,
                                     .sharpness_box = 45.5f,
                                     .yaw = -31.25f,
                                     .pitch = 4.5f,
                                     .roll = 1.125f,
                                     .size = 100,
                                     .score = 0.61234f,
                                     .usable = false,
                                     .reasons = FW_QUALITY_YAW | FW_QUALITY_BLURRY};
    face.crop = (fw_face_crop){FW_FORMAT_JPEG, 120, 140, crop, sizeof crop};
    fw_result res = {.status = FW_OK, .width = 640, .height = 480, .n_faces = 1, .faces = &face};
    fw_api_request *req = json_ok(FW_ROUTE_V1_DETECT, "{\"images\":[{\"data\":\"/9j/\"}]}");
    json_t *j = encode(req, &res, DIM);
    json_t *f = json_array_get(
        json_object_get(json_array_get(json_object_get(j, "results"), 0), "faces"), 0);
    json_t *q = json_object_get(f, "quality");
    assert_true(fabs(num(q, "score") - 0.6123) < 1e-9);
    assert_true(json_is_false(json_object_get(q, "usable")));
    json_t *reasons = json_object_get(q, "reasons");
    assert_int_equal(json_array_size(reasons), 2);
    assert_string_equal(json_string_value(json_array_get(reasons, 0)), "sharpness");
    assert_string_equal(json_string_value(json_array_get(reasons, 1)), "yaw");
    assert_true(fabs(num(json_object_get(q, "sharpness"), "aligned") - 123.46) < 1e-9);
    assert_true(fabs(num(json_object_get(q, "sharpness"), "box") - 45.5) < 1e-9);
    assert_true(fabs(num(q, "yaw") + 31.25) < 1e-9 && fabs(num(q, "roll") - 1.13) < 1e-9);
    json_t *c = json_object_get(f, "crop");
    assert_string_equal(str(c, "format"), "jpeg");
    assert_int_equal(num(c, "width"), 120);
    assert_int_equal(num(c, "height"), 140);
    assert_string_equal(str(c, "data"), "/9j/AEI=");
    json_decref(j);
    fw_api_request_free(req);

    req = json_ok(FW_ROUTE_LEGACY_JSON, "{\"images\":[{\"data\":\"/9j/\"}],\"crop_faces\":true}");
    static float emb[DIM];
    face.embedding = emb;
    j = encode(req, &res, DIM);
    f = json_array_get(json_array_get(json_object_get(j, "results"), 0), 0);
    assert_string_equal(str(f, "crop"), "/9j/AEI=");
    assert_null(json_object_get(f, "face_quality")); /* the six legacy keys and the crop */
    assert_int_equal(json_object_size(f), 7);
    json_decref(j);
    fw_api_request_free(req);
}

static void test_encode_v1_analyze(void **state)
{
    (void)state;
    check_v1_analyze(FW_ROUTE_V1_ANALYZE, NULL, true, true, FW_EMBEDDING_FLOAT);
    check_v1_analyze(FW_ROUTE_V1_ANALYZE, ",\"options\":{\"embedding_format\":\"base64-f32\"}",
                     true, true, FW_EMBEDDING_BASE64_F32);
    check_v1_analyze(FW_ROUTE_V1_ANALYZE,
                     ",\"options\":{\"embedding_format\":\"base64-f16\",\"landmarks\":false}",
                     false, true, FW_EMBEDDING_BASE64_F16);
    check_v1_analyze(FW_ROUTE_V1_ANALYZE, ",\"options\":{\"embed\":false}", true, false,
                     FW_EMBEDDING_FLOAT);
    /* /v1/detect never writes embeddings, even when the results have them */
    check_v1_analyze(FW_ROUTE_V1_DETECT, NULL, true, false, FW_EMBEDDING_FLOAT);
}

static void test_encode_v1_embed(void **state)
{
    (void)state;
    for (int fmt = 0; fmt < 3; fmt++) {
        static const char *const opts[] = {NULL,
                                           ",\"options\":{\"embedding_format\":\"base64-f32\"}",
                                           ",\"options\":{\"embedding_format\":\"base64-f16\"}"};
        fake fk;
        fake_results(&fk);
        fk.res[0].n_faces = 1;
        fk.res[3].status = FW_OK; /* item 3: OK but no embedding: an internal error */
        fw_api_request *req = four_items(FW_ROUTE_V1_EMBED, opts[fmt]);
        json_t *j = encode(req, fk.res, DIM);
        json_t *results = json_object_get(j, "results");
        assert_int_equal(json_array_size(results), 4);
        json_t *r0 = json_array_get(results, 0);
        assert_int_equal(num(r0, "index"), 0);
        assert_string_equal(str(r0, "id"), "a");
        check_embedding(json_object_get(r0, "embedding"), fk.emb[0], (fw_embedding_format)fmt);
        assert_null(json_object_get(r0, "faces"));
        assert_null(json_object_get(r0, "width"));
        check_error_item(json_array_get(results, 1), 1, "b", "corrupt", "invalid base64");
        check_error_item(json_array_get(results, 2), 2, "c", "corrupt", "not a JPEG");
        check_error_item(json_array_get(results, 3), 3, "d", "internal_error", "no embedding");
        json_decref(j);
        fw_api_request_free(req);
        fake_free(&fk);
    }
}

static void check_legacy_face(json_t *jf, const fw_face *f)
{
    check_bbox_landmarks(jf, f, true);
    check_embedding(json_object_get(jf, "embedding"), f->embedding, FW_EMBEDDING_FLOAT);
    assert_true((float)num(jf, "quality") == f->score);
    assert_true(json_is_null(json_object_get(jf, "age")));
    assert_true(json_is_null(json_object_get(jf, "gender")));
    assert_null(json_object_get(jf, "score"));
    assert_int_equal(json_object_size(jf), 6);
}

static void check_legacy_tail(json_t *j)
{
    assert_true(fabs(num(j, "processing_time_ms") - 12.346) < 1e-9);
    assert_true(json_is_true(json_object_get(j, "gpu_used")));
    assert_string_equal(str(j, "worker_id"), "host-1:8765");
    assert_int_equal(json_object_size(j), 4);
}

static void test_encode_legacy_json(void **state)
{
    (void)state;
    fake fk;
    fake_results(&fk);
    fw_api_request *req = four_items(FW_ROUTE_LEGACY_JSON, NULL);
    json_t *j = encode(req, fk.res, DIM);
    check_legacy_tail(j);
    json_t *results = json_object_get(j, "results");
    assert_int_equal(json_array_size(results), 4);
    json_t *l0 = json_array_get(results, 0);
    assert_int_equal(json_array_size(l0), 1); /* 0.3 < default min_face_quality 0.5 */
    check_legacy_face(json_array_get(l0, 0), &fk.res[0].faces[0]);
    for (size_t i = 1; i < 4; i++) /* failures and no faces: empty lists */
        assert_int_equal(json_array_size(json_array_get(results, i)), 0);
    json_decref(j);
    fw_api_request_free(req);

    /* min_face_quality 0.2 keeps both faces, 0.95 none */
    req = four_items(FW_ROUTE_LEGACY_JSON, ",\"min_face_quality\":0.2");
    j = encode(req, fk.res, DIM);
    l0 = json_array_get(json_object_get(j, "results"), 0);
    assert_int_equal(json_array_size(l0), 2);
    check_legacy_face(json_array_get(l0, 1), &fk.res[0].faces[1]);
    json_decref(j);
    fw_api_request_free(req);
    req = four_items(FW_ROUTE_LEGACY_JSON, ",\"min_face_quality\":0.95");
    j = encode(req, fk.res, DIM);
    assert_int_equal(json_array_size(json_array_get(json_object_get(j, "results"), 0)), 0);
    json_decref(j);
    fw_api_request_free(req);
    fake_free(&fk);
}

static void test_encode_legacy_multipart(void **state)
{
    (void)state;
    fake fk;
    fake_results(&fk);
    sb s = {0};
    /* item 0 and item 3 share a phash: like the Python dict, the key keeps its first
     * position and the faces of the last image (item 3: none) */
    mp_text(&s, "image_hashes",
            "[{\"phash\":\"p0\",\"index\":0},{\"phash\":\"p1\",\"index\":1},"
            "{\"phash\":\"p2\",\"index\":2},{\"phash\":\"p3\",\"index\":3}]");
    mp_part(&s, "images", "0.jpg", NULL, "x", 1);
    mp_part(&s, "images", "1.jpg", NULL, "", 0); /* empty: a per-item error */
    mp_part(&s, "images", "2.jpg", NULL, "x", 1);
    mp_part(&s, "images", "3.jpg", NULL, "x", 1);
    mp_end(&s);
    fw_api_request *req = parse_ok(FW_ROUTE_LEGACY_MULTIPART, MP_CT, s.p, s.len, NULL);
    json_t *j = encode(req, fk.res, DIM);
    check_legacy_tail(j);
    json_t *results = json_object_get(j, "results");
    assert_true(json_is_object(results));
    assert_int_equal(json_object_size(results), 4);
    json_t *p0 = json_object_get(results, "p0");
    assert_int_equal(json_array_size(p0), 1);
    check_legacy_face(json_array_get(p0, 0), &fk.res[0].faces[0]);
    assert_int_equal(json_array_size(json_object_get(results, "p1")), 0);
    assert_int_equal(json_array_size(json_object_get(results, "p2")), 0);
    assert_int_equal(json_array_size(json_object_get(results, "p3")), 0);
    json_decref(j);

    strcpy(req->items[3].phash, "p0");
    j = encode(req, fk.res, DIM);
    results = json_object_get(j, "results");
    assert_int_equal(json_object_size(results), 3);
    assert_int_equal(json_array_size(json_object_get(results, "p0")), 0);
    void *it = json_object_iter(results);
    assert_string_equal(json_object_iter_key(it), "p0"); /* first position kept */
    json_decref(j);
    fw_api_request_free(req);
    fake_free(&fk);
    free(s.p);
}

/* Ids from filenames are raw bytes: the output must stay valid JSON and UTF-8. */
static void test_encode_escapes_ids(void **state)
{
    (void)state;
    sb s = {0};
    mp_part(&s, "image", "q\\\"uote\\\\.jpg", NULL, "x", 1);
    mp_part(&s, "image", "bad\xff\xfeutf8\xc3\xa9\xe2\x82.jpg", NULL, "x", 1);
    mp_part(&s, "image", "ctl\x01\x1f\x7f.jpg", NULL, "x", 1);
    mp_part(&s, "image", "\xf0\x9f\x98\x80\xed\xa0\x80\xc0\xaf.jpg", NULL, "x", 1);
    mp_end(&s);
    fw_api_request *req = parse_ok(FW_ROUTE_V1_DETECT, MP_CT, s.p, s.len, NULL);
    fw_result res[4];
    memset(res, 0, sizeof res);
    json_t *j = encode(req, res, 0); /* jansson rejects invalid UTF-8: parsing is the check */
    json_t *results = json_object_get(j, "results");
    assert_string_equal(str(json_array_get(results, 0), "id"), "q\"uote\\.jpg");
    assert_string_equal(str(json_array_get(results, 1), "id"),
                        "bad\xef\xbf\xbd\xef\xbf\xbdutf8\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd.jpg");
    assert_string_equal(str(json_array_get(results, 2), "id"), "ctl\x01\x1f\x7f.jpg");
    /* a valid 4-byte sequence is kept; a surrogate and an overlong form are replaced */
    assert_string_equal(str(json_array_get(results, 3), "id"),
                        "\xf0\x9f\x98\x80\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                        "\xef\xbf\xbd.jpg");
    json_decref(j);
    fw_api_request_free(req);
    free(s.p);
}

/* Every float written must read back as the same float32. */
static void test_float_formatting_round_trips(void **state)
{
    (void)state;
    float *v = malloc(DIM * sizeof *v);
    assert_non_null(v);
    static const float special[] = {
        0.0f,        -0.0f,          1.0f,           -1.0f,        0.1f,          1.0f / 3,
        1e-5f,       9.99999975e-6f, 1.00000001e-5f, 1e-4f,        0.001f,        0.5f,
        123456.789f, 99999999.0f,    999999999.0f,   1e9f,         3.4028235e38f, 1.17549435e-38f,
        1e-45f,      16777216.0f,    0.099999994f,   0.999999940f, 9.9999994e-5f, 1e-38f};
    uint32_t seed = 99;
    for (int rep = 0; rep < 40; rep++) {
        for (int i = 0; i < DIM; i++) {
            if (rep == 0 && (size_t)i < sizeof special / sizeof special[0]) {
                v[i] = special[i];
                continue;
            }
            seed = seed * 1664525u + 1013904223u;
            uint32_t bits = seed;
            if (rep % 2) /* plausible embedding values: magnitudes 1e-6 .. 1 */
                bits = (seed & 0x807fffffu) | ((uint32_t)(107 + (seed >> 9) % 20) << 23);
            if ((bits & 0x7f800000u) == 0x7f800000u)
                bits ^= 0x40000000u; /* keep it finite */
            memcpy(&v[i], &bits, sizeof bits);
        }
        fake fk;
        fake_results(&fk);
        memcpy(fk.emb[0], v, DIM * sizeof *v);
        fk.res[0].faces[0].score = v[rep];
        fw_api_request *req = four_items(FW_ROUTE_V1_ANALYZE, NULL);
        json_t *j = encode(req, fk.res, DIM);
        json_t *f0 = json_array_get(
            json_object_get(json_array_get(json_object_get(j, "results"), 0), "faces"), 0);
        check_embedding(json_object_get(f0, "embedding"), v, FW_EMBEDDING_FLOAT);
        assert_true((float)num(f0, "score") == v[rep]);
        json_t *e = json_object_get(f0, "embedding");
        for (int i = 0; i < DIM; i++) {
            if (v[i] == 0.0f)
                assert_true(!signbit(v[i]) ||
                            signbit(json_number_value(json_array_get(e, (size_t)i))));
            assert_true(json_is_real(json_array_get(e, (size_t)i))); /* never an integer */
        }
        json_decref(j);
        fw_api_request_free(req);
        fake_free(&fk);
    }
    free(v);

    /* non-finite values become null; the document stays valid */
    fake fk;
    fake_results(&fk);
    fk.emb[0][0] = NAN;
    fk.emb[0][1] = INFINITY;
    fk.res[0].faces[0].bbox[0] = -INFINITY;
    fw_api_request *req = four_items(FW_ROUTE_V1_ANALYZE, NULL);
    json_t *j = encode(req, fk.res, DIM);
    json_t *f0 = json_array_get(
        json_object_get(json_array_get(json_object_get(j, "results"), 0), "faces"), 0);
    assert_true(json_is_null(json_array_get(json_object_get(f0, "embedding"), 0)));
    assert_true(json_is_null(json_array_get(json_object_get(f0, "embedding"), 1)));
    assert_true(json_is_null(json_array_get(json_object_get(f0, "bbox"), 0)));
    json_decref(j);
    fw_api_request_free(req);
    fake_free(&fk);
}

static void test_encode_argument_errors(void **state)
{
    (void)state;
    fake fk;
    fake_results(&fk);
    fw_api_request *req = four_items(FW_ROUTE_V1_ANALYZE, NULL);
    fw_api_response_info info = {.embedding_dim = 0};
    char *out = (char *)0x1;
    size_t len = 7;
    fw_error err;
    assert_int_equal(fw_api_encode_response(req, fk.res, &info, &out, &len, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_null(out);
    assert_non_null(strstr(err.message, "embedding_dim"));
    info.embedding_dim = DIM;
    assert_int_equal(fw_api_encode_response(req, NULL, &info, &out, &len, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_api_encode_response(req, fk.res, NULL, &out, &len, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_api_encode_response(NULL, fk.res, &info, &out, &len, &err),
                     FW_ERR_INVALID_ARGUMENT);
    fw_api_request_free(req);

    /* every item failed at parse time: no results needed; NULL info strings are "" */
    static const char body[] = "{\"images\":[{\"data\":\"!\"}]}";
    req = parse_ok(FW_ROUTE_V1_ANALYZE, NULL, body, strlen(body), NULL);
    assert_int_equal(fw_api_encode_response(req, NULL, &info, &out, &len, &err), FW_OK);
    json_t *j = json_loadb(out, len, 0, NULL);
    assert_non_null(j);
    assert_string_equal(str(j, "provider"), "");
    check_error_item(json_array_get(json_object_get(j, "results"), 0), 0, "0", "corrupt",
                     "invalid base64");
    json_decref(j);
    free(out);
    fw_api_request_free(req);
    fake_free(&fk);
}

static void test_error_json(void **state)
{
    (void)state;
    size_t len;
    char *s = fw_api_error_json(400, NULL, "bad \"thing\"\n\\", &len);
    assert_non_null(s);
    assert_int_equal(strlen(s), len);
    json_t *j = json_loads(s, 0, NULL);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_string_equal(str(e, "code"), "bad_request");
    assert_string_equal(str(e, "message"), "bad \"thing\"\n\\");
    assert_int_equal(json_object_size(j), 1);
    json_decref(j);
    free(s);

    static const struct {
        int status;
        const char *code;
    } names[] = {{413, "payload_too_large"}, {415, "unsupported_media_type"},
                 {401, "unauthorized"},      {503, "unavailable"},
                 {418, "client_error"},      {599, "server_error"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        s = fw_api_error_json(names[i].status, NULL, NULL, NULL);
        j = json_loads(s, 0, NULL);
        assert_string_equal(str(json_object_get(j, "error"), "code"), names[i].code);
        assert_string_equal(str(json_object_get(j, "error"), "message"), "");
        json_decref(j);
        free(s);
    }

    s = fw_api_error_json(503, "busy", "queue full", NULL);
    assert_string_equal(s, "{\"error\":{\"code\":\"busy\",\"message\":\"queue full\"}}");
    free(s);

    /* a parse failure's body */
    fw_api_request *req;
    fw_api_error err;
    assert_int_equal(
        fw_api_parse(FW_ROUTE_V1_ANALYZE, "text/plain", (const uint8_t *)"x", 1, NULL, &req, &err),
        FW_ERR_UNSUPPORTED);
    s = fw_api_error_to_json(&err, &len);
    j = json_loads(s, 0, NULL);
    assert_string_equal(str(json_object_get(j, "error"), "code"), "unsupported");
    assert_non_null(strstr(str(json_object_get(j, "error"), "message"), "text/plain"));
    json_decref(j);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_and_statuses),
        cmocka_unit_test(test_v1_json_good),
        cmocka_unit_test(test_quality_options),
        cmocka_unit_test(test_encode_quality_and_crop),
        cmocka_unit_test(test_v1_json_item_errors),
        cmocka_unit_test(test_v1_json_errors),
        cmocka_unit_test(test_limits_413_and_media_415),
        cmocka_unit_test(test_v1_multipart_good),
        cmocka_unit_test(test_v1_multipart_errors),
        cmocka_unit_test(test_legacy_multipart_good),
        cmocka_unit_test(test_legacy_multipart_errors),
        cmocka_unit_test(test_legacy_json),
        cmocka_unit_test(test_encode_v1_analyze),
        cmocka_unit_test(test_encode_v1_embed),
        cmocka_unit_test(test_encode_legacy_json),
        cmocka_unit_test(test_encode_legacy_multipart),
        cmocka_unit_test(test_encode_escapes_ids),
        cmocka_unit_test(test_float_formatting_round_trips),
        cmocka_unit_test(test_encode_argument_errors),
        cmocka_unit_test(test_error_json),
    };
    return cmocka_run_group_tests(tests, load_fixtures, free_fixtures);
}
