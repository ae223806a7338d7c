/* Integration: docs/openapi.yaml matches the running worker.
 *  - the spec lists the worker's eight routes, and each (path, method) of the spec exists on
 *    a real worker (neither 404 nor 405);
 *  - for the health, gpu_info, analyze, embed, legacy and error responses, every property the
 *    spec lists appears in a real response, and every field of the real response is in the
 *    spec (both directions, per object: top level and nested records).
 * The YAML is read with a small line-based extraction (the file keeps a regular layout:
 * paths at indent 2, methods at 4; schemas at indent 4 under components/schemas, their
 * "properties:" at 6 and property names at 8). When python3-yaml is installed, the file is
 * also parsed with it and the path count cross-checked. */
#include "harness.h"

#include <ctype.h>
#include <signal.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* the minimal YAML reader                                                                  */

typedef struct spec {
    char *text;
    char **lines;
    size_t n;
} spec;

static spec g_spec;
static fwt_worker *g_w;
static char g_spec_path[1024];

static void spec_load(const char *path)
{
    size_t len;
    g_spec.text = (char *)fwt_read_file(path, &len);
    size_t cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += g_spec.text[i] == '\n';
    g_spec.lines = calloc(cap + 1, sizeof *g_spec.lines);
    assert_non_null(g_spec.lines);
    char *p = g_spec.text; /* split by hand: strtok would merge empty lines */
    while (*p) {
        g_spec.lines[g_spec.n++] = p;
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = '\0';
        p = nl + 1;
    }
}

static int indent_of(const char *l)
{
    int i = 0;
    while (l[i] == ' ')
        i++;
    return i;
}

/* Blank or comment lines carry no structure. */
static bool is_noise(const char *l)
{
    const char *s = l + indent_of(l);
    return *s == '\0' || *s == '#';
}

/* The mapping key of a "key:" or "key: value" line (quotes stripped), or false. */
static bool key_of(const char *l, char *key, size_t cap)
{
    const char *s = l + indent_of(l);
    if (*s == '-' || *s == '\0')
        return false;
    char quote = (*s == '\'' || *s == '"') ? *s : 0;
    if (quote)
        s++;
    size_t n = 0;
    while (s[n] && (quote ? s[n] != quote : s[n] != ':'))
        n++;
    const char *after = s + n + (quote ? 1 : 0);
    if (*after != ':' || (after[1] != '\0' && after[1] != ' ') || n == 0 || n >= cap)
        return false;
    memcpy(key, s, n);
    key[n] = '\0';
    return true;
}

typedef struct route {
    char path[128];
    char method[8];
} route;

/* (path, METHOD) pairs under "paths:". */
static size_t spec_routes(route *out, size_t cap)
{
    size_t n = 0;
    bool in_paths = false;
    char path[128] = "";
    for (size_t i = 0; i < g_spec.n; i++) {
        const char *l = g_spec.lines[i];
        if (is_noise(l))
            continue;
        int ind = indent_of(l);
        char key[128];
        if (ind == 0) {
            in_paths = key_of(l, key, sizeof key) && !strcmp(key, "paths");
            continue;
        }
        if (!in_paths || !key_of(l, key, sizeof key))
            continue;
        if (ind == 2) {
            assert_true(key[0] == '/');
            snprintf(path, sizeof path, "%s", key);
        } else if (ind == 4) {
            static const char *const methods[] = {"get",   "post", "put",    "delete",
                                                  "patch", "head", "options"};
            for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++)
                if (!strcmp(key, methods[m])) {
                    assert_true(n < cap);
                    snprintf(out[n].path, sizeof out[n].path, "%s", path);
                    size_t c = 0;
                    for (; key[c] && c < sizeof out[n].method - 1; c++)
                        out[n].method[c] = (char)toupper((unsigned char)key[c]);
                    out[n].method[c] = '\0';
                    n++;
                }
        }
    }
    return n;
}

/* The property names of components/schemas/<name>; fails the test when the schema is not
 * there. Returns a JSON array of strings (caller decrefs). */
static json_t *spec_properties(const char *name)
{
    enum { OUTSIDE, COMPONENTS, SCHEMAS, SCHEMA, PROPS } st = OUTSIDE;
    json_t *props = json_array();
    bool found = false;
    for (size_t i = 0; i < g_spec.n; i++) {
        const char *l = g_spec.lines[i];
        if (is_noise(l))
            continue;
        int ind = indent_of(l);
        char key[128];
        bool k = key_of(l, key, sizeof key);
        if (ind == 0) {
            st = k && !strcmp(key, "components") ? COMPONENTS : OUTSIDE;
            continue;
        }
        if (st == OUTSIDE)
            continue;
        if (ind == 2) {
            st = k && !strcmp(key, "schemas") ? SCHEMAS : COMPONENTS;
            continue;
        }
        if (st == COMPONENTS)
            continue;
        if (ind == 4) {
            st = k && !strcmp(key, name) ? SCHEMA : SCHEMAS;
            found |= st == SCHEMA;
            continue;
        }
        if (st == SCHEMAS)
            continue;
        if (ind == 6) {
            st = k && !strcmp(key, "properties") ? PROPS : SCHEMA;
            continue;
        }
        if (st == PROPS && ind == 8 && k)
            json_array_append_new(props, json_string(key));
    }
    if (!found)
        fail_msg("docs/openapi.yaml has no schema %s", name);
    return props;
}

static bool has_string(const json_t *arr, const char *s)
{
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (!strcmp(json_string_value(json_array_get(arr, i)), s))
            return true;
    return false;
}

/* Every property of the schema is in obj, and every key of obj is a property. */
static void check_schema(const char *schema, const json_t *obj)
{
    if (!json_is_object(obj))
        fail_msg("schema %s: the real value is not an object", schema);
    json_t *props = spec_properties(schema);
    assert_true(json_array_size(props) > 0);
    char *dump = json_dumps(obj, JSON_COMPACT);
    for (size_t i = 0; i < json_array_size(props); i++) {
        const char *p = json_string_value(json_array_get(props, i));
        if (!json_object_get(obj, p))
            fail_msg("schema %s lists \"%s\", absent from the real response: %.300s", schema, p,
                     dump);
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (!has_string(props, key))
            fail_msg("the real response has \"%s\", not in schema %s", key, schema);
    }
    free(dump);
    json_decref(props);
}

/* ---------------------------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    const char *src = getenv("FW_SOURCE_DIR");
    assert_non_null(src);
    snprintf(g_spec_path, sizeof g_spec_path, "%s/docs/openapi.yaml", src);
    spec_load(g_spec_path);
    g_w = fwt_worker_start(NULL);
    return 0;
}

static int teardown(void **state)
{
    free(g_spec.lines);
    free(g_spec.text);
    return fwt_teardown(state);
}

static void test_yaml_parses(void **state)
{
    (void)state;
    route rs[64];
    size_t n = spec_routes(rs, 64);
    fflush(NULL);
    FILE *p = popen("/usr/bin/python3 -c 'import yaml' 2>/dev/null", "r");
    assert_non_null(p);
    bool have_yaml = pclose(p) == 0;
    if (!have_yaml) {
        print_message("python3-yaml not installed: YAML syntax not checked by a real parser\n");
        return;
    }
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import sys, yaml\n"
             "d = yaml.safe_load(open(sys.argv[1]))\n"
             "assert str(d[\"openapi\"]).startswith(\"3.0\")\n"
             "print(sum(len([m for m in v if m in (\"get\",\"post\",\"put\",\"delete\")])"
             " for v in d[\"paths\"].values()), len(d[\"components\"][\"schemas\"]))' '%s' 2>&1",
             g_spec_path);
    p = popen(cmd, "r");
    assert_non_null(p);
    char out[4096] = "";
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    if (st != 0)
        fail_msg("docs/openapi.yaml does not parse as YAML:\n%s", out);
    unsigned long n_ops = 0, n_schemas = 0;
    assert_int_equal(sscanf(out, "%lu %lu", &n_ops, &n_schemas), 2);
    assert_int_equal(n_ops, n); /* the line-based reader saw every operation */
    assert_true(n_schemas >= 20);
}

static void test_spec_routes_exist(void **state)
{
    (void)state;
    route rs[64];
    size_t n = spec_routes(rs, 64);
    /* the worker's routes (worker.c) are all documented */
    static const route want[] = {
        {"/v1/analyze", "POST"},
        {"/v1/detect", "POST"},
        {"/v1/embed", "POST"},
        {"/detect_faces_batch_multipart", "POST"},
        {"/detect_faces_batch", "POST"},
        {"/health", "GET"},
        {"/gpu_info", "GET"},
        {"/metrics", "GET"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        bool found = false;
        for (size_t k = 0; k < n && !found; k++)
            found = !strcmp(rs[k].path, want[i].path) && !strcmp(rs[k].method, want[i].method);
        if (!found)
            fail_msg("docs/openapi.yaml lacks %s %s", want[i].method, want[i].path);
    }
    /* and everything documented exists */
    for (size_t k = 0; k < n; k++) {
        char url[256];
        snprintf(url, sizeof url, "%.95s%.127s", g_w->url, rs[k].path);
        fwt_req rq = {.method = rs[k].method, .url = url, .proto = FWT_H1};
        if (!strcmp(rs[k].method, "POST")) {
            rq.body = "{}";
            rq.body_len = 2;
            rq.content_type = "application/json";
        }
        fwt_resp r;
        fwt_http(&rq, &r);
        if (r.status == 0 || r.status == 404 || r.status == 405 || r.status >= 500)
            fail_msg("%s %s (documented): status %ld", rs[k].method, rs[k].path, r.status);
        fwt_resp_free(&r);
    }
    assert_int_equal(n, sizeof want / sizeof want[0]);
}

static json_t *get_json(const char *path)
{
    fwt_resp r;
    fwt_get(g_w, path, FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    return j;
}

static void test_health_and_gpu_info_fields(void **state)
{
    (void)state;
    json_t *h = get_json("/health");
    check_schema("HealthResponse", h);
    json_decref(h);
    json_t *g = get_json("/gpu_info");
    check_schema("GpuInfoResponse", g);
    check_schema("ActiveProviders", json_object_get(g, "active_providers"));
    json_decref(g);
}

static uint8_t *gray_crop_png(size_t *len)
{
    static uint8_t px[112 * 112 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(96 + (i / 3) % 112); /* a horizontal ramp */
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    assert_non_null(ctx);
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ihdr = {
        .width = 112, .height = 112, .bit_depth = 8, .color_type = SPNG_COLOR_TYPE_TRUECOLOR};
    assert_int_equal(spng_set_ihdr(ctx, &ihdr), 0);
    assert_int_equal(spng_encode_image(ctx, px, sizeof px, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
    int err = 0;
    uint8_t *png = spng_get_png_buffer(ctx, len, &err);
    assert_int_equal(err, 0);
    spng_ctx_free(ctx);
    return png;
}

static void test_v1_fields(void **state)
{
    (void)state;
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    /* every option AnalyzeOptions lists, and every threshold QualityThresholds lists */
    static const char *const options =
        "{\"min_score\":0,\"max_faces\":0,\"min_face_size\":0,\"embed\":true,"
        "\"landmarks\":true,\"embedding_format\":\"float\",\"quality\":true,"
        "\"quality_preset\":{\"min_size\":32,\"min_sharpness\":10,\"max_yaw\":60,"
        "\"max_pitch\":60,\"min_quality\":0.1},\"quality_action\":\"annotate\","
        "\"crops\":\"box\",\"face_margin\":0.2,\"crop_format\":\"jpeg\",\"crop_quality\":90}";
    json_t *opts = json_loads(options, 0, NULL);
    assert_non_null(opts);
    check_schema("AnalyzeOptions", opts);
    check_schema("QualityThresholds", json_object_get(opts, "quality_preset"));
    json_decref(opts);
    fwt_part parts[3] = {{"image", "good.jpg", "image/jpeg", d, len},
                         {"image", "bad.jpg", "image/jpeg", "not an image", (size_t)-1},
                         {"options", NULL, NULL, options, (size_t)-1}};
    fwt_resp r;
    fwt_post_parts(g_w, "/v1/analyze", parts, 3, FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    check_schema("AnalyzeResponse", j);
    json_t *res = json_object_get(j, "results");
    check_schema("AnalyzeItem", json_array_get(res, 0));
    check_schema("ItemError", json_array_get(res, 1));
    check_schema("ErrorDetail", json_object_get(json_array_get(res, 1), "error"));
    json_t *face = json_array_get(json_object_get(json_array_get(res, 0), "faces"), 0);
    check_schema("Face", face);
    check_schema("FaceQuality", json_object_get(face, "quality"));
    check_schema("Sharpness", json_object_get(json_object_get(face, "quality"), "sharpness"));
    check_schema("FaceCrop", json_object_get(face, "crop"));
    json_decref(j);

    size_t pl;
    uint8_t *png = gray_crop_png(&pl);
    fwt_part ep[2] = {{"image", "crop.png", "image/png", png, pl},
                      {"image", "empty.png", "image/png", "", 0}};
    fwt_post_parts(g_w, "/v1/embed", ep, 2, FWT_H1, &r);
    j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    check_schema("EmbedResponse", j);
    check_schema("EmbedItem", json_array_get(json_object_get(j, "results"), 0));
    check_schema("ItemError", json_array_get(json_object_get(j, "results"), 1));
    json_decref(j);
    free(png);
}

static void test_legacy_fields(void **state)
{
    (void)state;
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    fwt_part parts[3] = {
        {"images", "a.jpg", "image/jpeg", d, len},
        {"image_hashes", NULL, NULL, "[{\"phash\":\"abc\",\"index\":0}]", (size_t)-1},
        {"min_face_quality", NULL, NULL, "0.5", (size_t)-1}};
    fwt_resp r;
    fwt_post_parts(g_w, "/detect_faces_batch_multipart", parts, 3, FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    check_schema("LegacyMultipartResponse", j);
    json_t *faces = json_object_get(json_object_get(j, "results"), "abc");
    assert_true(json_array_size(faces) > 0);
    check_schema("LegacyFace", json_array_get(faces, 0));
    json_decref(j);

    fwt_part cropped[3] = {
        {"images", "a.jpg", "image/jpeg", d, len},
        {"image_hashes", NULL, NULL, "[{\"phash\":\"abc\",\"index\":0}]", (size_t)-1},
        {"crop_faces", NULL, NULL, "true", (size_t)-1}};
    fwt_post_parts(g_w, "/detect_faces_batch_multipart", cropped, 3, FWT_H1, &r);
    j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    faces = json_object_get(json_object_get(j, "results"), "abc");
    assert_true(json_array_size(faces) > 0);
    check_schema("LegacyCroppedFace", json_array_get(faces, 0));
    json_decref(j);

    char *b64 = fwt_b64_encode(d, len);
    size_t cap = strlen(b64) + 64;
    char *body = malloc(cap);
    assert_non_null(body);
    snprintf(body, cap, "{\"images\":[{\"data\":\"%s\",\"image_id\":\"x\"}]}", b64);
    fwt_post(g_w, "/detect_faces_batch", "application/json", body, strlen(body), FWT_H1, &r);
    j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    check_schema("LegacyJsonResponse", j);
    check_schema("LegacyFace", json_array_get(json_array_get(json_object_get(j, "results"), 0), 0));
    json_decref(j);
    free(body);
    free(b64);
}

static void test_error_fields(void **state)
{
    (void)state;
    fwt_resp r;
    fwt_get(g_w, "/no/such/route", FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 404);
    fwt_resp_free(&r);
    check_schema("ErrorResponse", j);
    check_schema("ErrorDetail", json_object_get(j, "error"));
    json_decref(j);
    fwt_post(g_w, "/v1/analyze", "application/json", "{", 1, FWT_H1, &r);
    j = fwt_expect_json(&r, 400);
    fwt_resp_free(&r);
    check_schema("ErrorResponse", j);
    check_schema("ErrorDetail", json_object_get(j, "error"));
    json_decref(j);
}

static void test_shutdown_clean(void **state)
{
    (void)state;
    assert_int_equal(fwt_worker_stop(g_w, SIGTERM, 40), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yaml_parses),
        cmocka_unit_test(test_spec_routes_exist),
        cmocka_unit_test(test_health_and_gpu_info_fields),
        cmocka_unit_test(test_v1_fields),
        cmocka_unit_test(test_legacy_fields),
        cmocka_unit_test(test_error_fields),
        cmocka_unit_test(test_shutdown_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
