/* Integration: the worker's v1 API and operational routes against a real `facework worker`
 * (one process for the whole file): /health, /gpu_info, /metrics, /v1/analyze (multipart and
 * JSON), /v1/detect, embedding formats, /v1/embed with real aligned crops, 404 and 405. */
#include "harness.h"

#include <ctype.h>
#include <math.h>
#include <signal.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "core/quality.h"
#include "facework/facework.h"
#include "facework/image.h"

static fwt_worker *g_w;

static int setup(void **state)
{
    (void)state;
    g_w = fwt_worker_start(NULL);
    return 0;
}

/* Width and height of sample<i>.jpg after EXIF orientation, from its header. */
static void photo_size(int i, int *w, int *h)
{
    size_t len;
    const uint8_t *data = fwt_photo(i, &len);
    fw_image_info info;
    assert_int_equal(fw_image_probe(data, len, &info, NULL), FW_OK);
    bool swap = info.orientation >= 5;
    *w = swap ? info.height : info.width;
    *h = swap ? info.width : info.height;
}

static bool is_hex_id(const char *s)
{
    if (strlen(s) != 16)
        return false;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s) || isupper((unsigned char)*s))
            return false;
    return true;
}

/* ---------------------------------------------------------------------------------------- */

static void test_health(void **state)
{
    (void)state;
    for (int p = FWT_H1; p <= FWT_H2; p++) {
        fwt_resp r;
        fwt_get(g_w, "/health", (fwt_proto)p, &r);
        json_t *j = fwt_expect_json(&r, 200);
        assert_int_equal(r.http_version, p == FWT_H2 ? 2 : 1);
        assert_true(is_hex_id(r.request_id));
        assert_string_equal(json_string_value(json_object_get(j, "status")), "healthy");
        assert_true(json_is_boolean(json_object_get(j, "gpu_available")));
        assert_true(json_is_boolean(json_object_get(j, "directml_available")));
        assert_true(json_is_true(json_object_get(j, "model_loaded")));
        json_t *up = json_object_get(j, "uptime_seconds");
        assert_true(json_is_number(up));
        assert_true(json_number_value(up) >= 0 && json_number_value(up) < 3600);
        json_t *prov = json_object_get(j, "provider");
        assert_true(json_is_string(prov) && json_string_length(prov) > 0);
        json_t *qd = json_object_get(j, "queue_depth");
        assert_true(json_is_integer(qd) && json_integer_value(qd) >= 0);
        json_t *ver = json_object_get(j, "version");
        assert_true(json_is_string(ver) && json_string_length(ver) > 0);
        json_t *wid = json_object_get(j, "worker_id");
        assert_true(json_is_string(wid) && json_string_length(wid) > 0);
        /* the default worker_id is HOSTNAME:PORT */
        char port[16];
        snprintf(port, sizeof port, ":%d", g_w->port);
        const char *ws = json_string_value(wid);
        assert_true(strlen(ws) > strlen(port) && !strcmp(ws + strlen(ws) - strlen(port), port));
        json_t *pid = json_object_get(j, "pid");
        assert_true(json_is_integer(pid));
        assert_int_equal(json_integer_value(pid), g_w->pid);
        assert_string_equal(json_string_value(json_object_get(j, "model")), "default");
        /* CPU-only host: no GPU in use; the provider is the one serving the embedder */
        if (!strcmp(json_string_value(prov), "cpu"))
            assert_true(json_is_false(json_object_get(j, "gpu_available")));
        json_decref(j);
        fwt_resp_free(&r);
    }
}

static void test_gpu_info(void **state)
{
    (void)state;
    fwt_resp r;
    fwt_get(g_w, "/gpu_info", FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    assert_true(json_is_boolean(json_object_get(j, "gpu_available")));
    json_t *act = json_object_get(j, "active_providers");
    assert_true(json_is_object(act));
    static const char *const roles[] = {"detector", "landmarks", "embedder"};
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(act, roles[i]);
        assert_true(json_is_string(v) && json_string_length(v) > 0);
    }
    json_t *avail = json_object_get(j, "available_providers");
    assert_true(json_is_array(avail) && json_array_size(avail) > 0);
    bool has_cpu = false;
    for (size_t i = 0; i < json_array_size(avail); i++) {
        assert_true(json_is_string(json_array_get(avail, i)));
        has_cpu |= !strcmp(json_string_value(json_array_get(avail, i)), "cpu");
    }
    assert_true(has_cpu);
    json_t *ortv = json_object_get(j, "onnxruntime_version");
    assert_true(json_is_string(ortv));
    assert_int_equal(strncmp(json_string_value(ortv), "1.", 2), 0);
    json_t *dev = json_object_get(j, "device");
    assert_true(json_is_null(dev) || json_is_object(dev));
    json_t *pack = json_object_get(j, "model_pack");
    assert_true(json_is_object(pack));
    assert_string_equal(json_string_value(json_object_get(pack, "pack")), "default");
    assert_int_equal(json_integer_value(json_object_get(pack, "embedding_dim")), 512);
    json_decref(j);
    fwt_resp_free(&r);
}

/* Every line of a Prometheus text exposition is a comment or "series value". */
static void check_prometheus_syntax(const char *text)
{
    int samples = 0;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        assert_non_null(end); /* every line ends with \n */
        size_t n = (size_t)(end - line);
        if (n && line[0] != '#') {
            size_t i = 0;
            if (!(isalpha((unsigned char)line[0]) || line[0] == '_' || line[0] == ':'))
                fail_msg("bad metric line: %.*s", (int)n, line);
            while (i < n && (isalnum((unsigned char)line[i]) || line[i] == '_' || line[i] == ':'))
                i++;
            if (i < n && line[i] == '{') {
                const char *close = memchr(line + i, '}', n - i);
                if (!close)
                    fail_msg("unterminated labels: %.*s", (int)n, line);
                i = (size_t)(close - line) + 1;
            }
            if (i >= n || line[i] != ' ')
                fail_msg("no value separator: %.*s", (int)n, line);
            char *stop;
            const char *v = line + i + 1;
            if (strncmp(v, "+Inf", 4) && strncmp(v, "-Inf", 4) && strncmp(v, "NaN", 3)) {
                strtod(v, &stop);
                if (stop == v || (stop != end && *stop != ' '))
                    fail_msg("bad sample value: %.*s", (int)n, line);
            }
            samples++;
        } else if (n) {
            if (strncmp(line, "# HELP ", 7) && strncmp(line, "# TYPE ", 7))
                fail_msg("bad comment line: %.*s", (int)n, line);
        }
        line = end + 1;
    }
    assert_true(samples > 10);
}

static void test_metrics(void **state)
{
    (void)state;
    /* one inference request first, so that the histograms have samples */
    size_t len;
    const uint8_t *jpg = fwt_photo(1, &len);
    fwt_part part = {"image", "a.jpg", "image/jpeg", jpg, len};
    fwt_resp r;
    fwt_post_parts(g_w, "/v1/analyze", &part, 1, FWT_H1, &r);
    json_decref(fwt_expect_json(&r, 200));
    fwt_resp_free(&r);

    fwt_get(g_w, "/gpu_info", FWT_H1, &r);
    json_t *gi = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);

    fwt_get(g_w, "/metrics", FWT_H1, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(strncmp(r.content_type, "text/plain", 10), 0);
    check_prometheus_syntax(r.body);
    static const char *const names[] = {
        "# TYPE facework_http_requests_total counter",
        "# TYPE facework_batch_size histogram",
        "# TYPE facework_queue_depth gauge",
        "# TYPE facework_inference_seconds histogram",
        "# TYPE facework_queue_wait_seconds histogram",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE facework_provider_info gauge",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strstr(r.body, names[i]))
            fail_msg("/metrics lacks \"%s\"", names[i]);
    double v = 0;
    assert_true(fwt_metric(r.body,
                           "facework_http_requests_total{route=\"/v1/analyze\","
                           "status=\"200\"}",
                           &v));
    assert_true(v >= 1);
    assert_true(fwt_metric(r.body, "facework_batch_size_count{stage=\"detect\"}", &v));
    assert_true(v >= 1);
    assert_true(fwt_metric(r.body, "facework_batch_size_count{stage=\"embed\"}", &v));
    assert_true(v >= 1);
    assert_true(fwt_metric(r.body, "facework_inference_seconds_count{stage=\"detect\"}", &v));
    assert_true(v >= 1);
    assert_true(fwt_metric(r.body, "facework_queue_wait_seconds_count", &v));
    assert_true(v >= 1);
    assert_true(fwt_metric(r.body, "facework_queue_depth", &v));
    assert_true(v == 0); /* nothing is queued now */
    assert_true(fwt_metric(r.body, "process_resident_memory_bytes", &v));
    assert_true(v > 1e6);
    json_t *act = json_object_get(gi, "active_providers");
    static const char *const roles[] = {"detector", "landmarks", "embedder"};
    for (size_t i = 0; i < 3; i++) {
        char series[256];
        snprintf(series, sizeof series, "facework_provider_info{role=\"%s\",provider=\"%s\"}",
                 roles[i], json_string_value(json_object_get(act, roles[i])));
        if (!fwt_metric(r.body, series, &v))
            fail_msg("/metrics lacks %s", series);
        assert_true(v == 1);
    }
    json_decref(gi);
    fwt_resp_free(&r);
}

/* ---------------------------------------------------------------------------------------- */

static const int k_three[3] = {1, 4, 5}; /* 3, 4 and 5 faces */

/* Checks a v1 analyze/detect response for the photos k_three with the expected ids. */
static void check_v1_results(json_t *j, const char *const ids[3], bool embeddings)
{
    assert_true(json_is_number(json_object_get(j, "took_ms")));
    assert_true(json_number_value(json_object_get(j, "took_ms")) >= 0);
    assert_true(json_is_string(json_object_get(j, "provider")));
    assert_string_equal(json_string_value(json_object_get(j, "model")), "default");
    json_t *res = json_object_get(j, "results");
    assert_true(json_is_array(res));
    assert_int_equal(json_array_size(res), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *it = json_array_get(res, i);
        assert_int_equal(json_integer_value(json_object_get(it, "index")), i);
        assert_true(json_is_integer(json_object_get(it, "index")));
        assert_string_equal(json_string_value(json_object_get(it, "id")), ids[i]);
        assert_null(json_object_get(it, "error"));
        int w, h;
        photo_size(k_three[i], &w, &h);
        assert_true(json_is_integer(json_object_get(it, "width")));
        assert_int_equal(json_integer_value(json_object_get(it, "width")), w);
        assert_int_equal(json_integer_value(json_object_get(it, "height")), h);
        json_t *faces = json_object_get(it, "faces");
        assert_true(json_is_array(faces));
        assert_int_equal(json_array_size(faces), fwt_photo_faces[k_three[i]]);
        for (size_t f = 0; f < json_array_size(faces); f++) {
            json_t *face = json_array_get(faces, f);
            fwt_check_face(face, w, h, embeddings);
            json_t *score = json_object_get(face, "score");
            assert_true(json_is_number(score));
            assert_true(json_number_value(score) > 0 && json_number_value(score) <= 1);
            if (!embeddings)
                assert_null(json_object_get(face, "embedding"));
            /* faces come best first */
            if (f)
                assert_true(
                    json_number_value(score) <=
                    json_number_value(json_object_get(json_array_get(faces, f - 1), "score")));
        }
    }
}

static json_t *analyze_multipart(const char *path, fwt_proto proto)
{
    static const char *const names[3] = {"s1.jpg", "s4.jpg", "s5.jpg"};
    fwt_part parts[3];
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        const uint8_t *d = fwt_photo(k_three[i], &len);
        parts[i] = (fwt_part){"image", names[i], "image/jpeg", d, len};
    }
    fwt_resp r;
    fwt_post_parts(g_w, path, parts, 3, proto, &r);
    json_t *j = fwt_expect_json(&r, 200);
    assert_int_equal(r.http_version, proto == FWT_H1 ? 1 : 2);
    fwt_resp_free(&r);
    check_v1_results(j, names, strcmp(path, "/v1/detect") != 0);
    return j;
}

static char *images_json(const char *const ids[3], const char *options)
{
    json_t *imgs = json_array();
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        const uint8_t *d = fwt_photo(k_three[i], &len);
        char *b64 = fwt_b64_encode(d, len);
        json_t *it = json_object();
        if (i == 1)
            json_object_set_new(it, "id", json_integer(atoi(ids[i]))); /* ids may be integers */
        else if (ids[i])
            json_object_set_new(it, "id", json_string(ids[i]));
        json_object_set_new(it, "data", json_string(b64));
        free(b64);
        json_array_append_new(imgs, it);
    }
    json_t *body = json_object();
    json_object_set_new(body, "images", imgs);
    if (options)
        json_object_set_new(body, "options", json_loads(options, 0, NULL));
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    assert_non_null(s);
    return s;
}

static void test_analyze_multipart_and_json(void **state)
{
    (void)state;
    json_t *mp = analyze_multipart("/v1/analyze", FWT_H1);

    /* the same images as JSON with base64: string id, integer id, no id (= index) */
    const char *const ids[3] = {"first", "42", NULL};
    char *body = images_json(ids, NULL);
    fwt_resp r;
    fwt_post(g_w, "/v1/analyze", "application/json", body, strlen(body), FWT_H1, &r);
    json_t *js = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    const char *const want_ids[3] = {"first", "42", "2"};
    check_v1_results(js, want_ids, true);
    json_t *a = json_object_get(mp, "results"), *b = json_object_get(js, "results");
    for (size_t i = 0; i < 3; i++)
        fwt_match_faces(json_object_get(json_array_get(b, i), "faces"),
                        json_object_get(json_array_get(a, i), "faces"), 0.011, 0.9999);

    /* FastAPI treated a body without Content-Type as JSON: so do we */
    fwt_post(g_w, "/v1/analyze", NULL, body, strlen(body), FWT_H1, &r);
    json_t *nc = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    check_v1_results(nc, want_ids, true);
    json_decref(nc);
    free(body);
    json_decref(mp);
    json_decref(js);
}

static void test_detect_has_no_embeddings(void **state)
{
    (void)state;
    json_t *j = analyze_multipart("/v1/detect", FWT_H2);
    json_decref(j);

    /* options: max_faces 1 and landmarks false, as a multipart "options" part */
    size_t len;
    const uint8_t *d = fwt_photo(5, &len);
    fwt_part parts[2] = {
        {"options", NULL, "application/json", "{\"max_faces\":1,\"landmarks\":false}", (size_t)-1},
        {"image", "five.jpg", "image/jpeg", d, len}};
    fwt_resp r;
    fwt_post_parts(g_w, "/v1/detect", parts, 2, FWT_H1, &r);
    j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    json_t *faces = json_object_get(json_array_get(json_object_get(j, "results"), 0), "faces");
    assert_int_equal(json_array_size(faces), 1);
    json_t *f = json_array_get(faces, 0);
    assert_non_null(json_object_get(f, "bbox"));
    assert_non_null(json_object_get(f, "score"));
    assert_null(json_object_get(f, "landmarks"));
    assert_null(json_object_get(f, "embedding"));
    json_decref(j);
}

/* ---------------------------------------------------------------------------------------- */

/* The first face of sample1 analyzed with embedding_format fmt (NULL: default). The options
 * go in a multipart part, or in the JSON body when as_json. */
static json_t *first_face(const char *fmt, bool as_json)
{
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    char opts[128] = "{}";
    if (fmt)
        snprintf(opts, sizeof opts, "{\"embedding_format\":\"%s\"}", fmt);
    fwt_resp r;
    if (as_json) {
        char *b64 = fwt_b64_encode(d, len);
        size_t cap = strlen(b64) + 256;
        char *body = malloc(cap);
        assert_non_null(body);
        snprintf(body, cap, "{\"images\":[{\"id\":\"x\",\"data\":\"%s\"}],\"options\":%s}", b64,
                 opts);
        fwt_post(g_w, "/v1/analyze", "application/json", body, strlen(body), FWT_H1, &r);
        free(body);
        free(b64);
    } else {
        fwt_part parts[2] = {{"image", "x.jpg", "image/jpeg", d, len},
                             {"options", NULL, NULL, opts, (size_t)-1}};
        fwt_post_parts(g_w, "/v1/analyze", parts, 2, FWT_H1, &r);
    }
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    json_t *faces = json_object_get(json_array_get(json_object_get(j, "results"), 0), "faces");
    assert_int_equal(json_array_size(faces), 3);
    json_t *face = json_incref(json_array_get(faces, 0));
    json_decref(j);
    return face;
}

static void test_embedding_formats(void **state)
{
    (void)state;
    json_t *ff = first_face(NULL, false);
    size_t n = 0;
    float *ref = fwt_json_floats(json_object_get(ff, "embedding"), &n);
    assert_non_null(ref);
    assert_int_equal(n, 512);

    json_t *f32 = first_face("base64-f32", false);
    json_t *e32 = json_object_get(f32, "embedding");
    assert_true(json_is_string(e32));
    size_t blen = 0;
    uint8_t *raw = fwt_b64_decode(json_string_value(e32), &blen);
    assert_non_null(raw);
    assert_int_equal(blen, 512 * 4);
    double norm = 0;
    for (size_t i = 0; i < 512; i++) {
        uint32_t u = (uint32_t)raw[4 * i] | (uint32_t)raw[4 * i + 1] << 8 |
                     (uint32_t)raw[4 * i + 2] << 16 | (uint32_t)raw[4 * i + 3] << 24;
        float x;
        memcpy(&x, &u, sizeof x);
        if (fabsf(x - ref[i]) > 1e-6f)
            fail_msg("base64-f32 value %zu: %.9g vs %.9g", i, (double)x, (double)ref[i]);
        norm += (double)x * x;
    }
    assert_true(fabs(sqrt(norm) - 1) < 1e-3);
    free(raw);

    json_t *f16 = first_face("base64-f16", true);
    json_t *e16 = json_object_get(f16, "embedding");
    assert_true(json_is_string(e16));
    raw = fwt_b64_decode(json_string_value(e16), &blen);
    assert_non_null(raw);
    assert_int_equal(blen, 512 * 2);
    for (size_t i = 0; i < 512; i++) {
        float x = fwt_half_to_float((uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8));
        if (!(fabsf(x - ref[i]) <= 1e-3f))
            fail_msg("base64-f16 value %zu: %.6g vs %.6g", i, (double)x, (double)ref[i]);
    }
    free(raw);

    /* "float" spelled out is the default */
    json_t *ffl = first_face("float", true);
    size_t n2 = 0;
    float *again = fwt_json_floats(json_object_get(ffl, "embedding"), &n2);
    assert_int_equal(n2, 512);
    assert_true(fwt_dot(again, ref, 512) > 0.9999);
    free(again);
    free(ref);
    json_decref(ff);
    json_decref(f32);
    json_decref(f16);
    json_decref(ffl);
}

/* ---------------------------------------------------------------------------------------- */

static uint8_t *encode_png(const uint8_t *rgb, size_t *len)
{
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    assert_non_null(ctx);
    assert_int_equal(spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1), 0);
    struct spng_ihdr ihdr = {.width = FW_ALIGNED_SIZE,
                             .height = FW_ALIGNED_SIZE,
                             .bit_depth = 8,
                             .color_type = SPNG_COLOR_TYPE_TRUECOLOR};
    assert_int_equal(spng_set_ihdr(ctx, &ihdr), 0);
    assert_int_equal(spng_encode_image(ctx, rgb, FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3,
                                       SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE),
                     0);
    int err = 0;
    uint8_t *png = spng_get_png_buffer(ctx, len, &err);
    assert_int_equal(err, 0);
    assert_non_null(png);
    spng_ctx_free(ctx);
    return png; /* free() */
}

static uint8_t *encode_jpeg(const uint8_t *rgb, size_t *len)
{
    tjhandle tj = tjInitCompress();
    assert_non_null(tj);
    unsigned char *jpg = NULL;
    unsigned long jl = 0;
    assert_int_equal(tjCompress2(tj, rgb, FW_ALIGNED_SIZE, 0, FW_ALIGNED_SIZE, TJPF_RGB, &jpg, &jl,
                                 TJSAMP_444, 95, TJFLAG_ACCURATEDCT),
                     0);
    tjDestroy(tj);
    uint8_t *out = malloc(jl);
    assert_non_null(out);
    memcpy(out, jpg, jl);
    tjFree(jpg);
    *len = jl;
    return out;
}

static void test_embed_aligned_crops(void **state)
{
    (void)state;
    /* analyze sample4, then cut each face's aligned crop ourselves from the landmarks */
    size_t len;
    const uint8_t *d = fwt_photo(4, &len);
    fwt_part part = {"image", "s4.jpg", "image/jpeg", d, len};
    fwt_resp r;
    fwt_post_parts(g_w, "/v1/analyze", &part, 1, FWT_H1, &r);
    json_t *an = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    json_t *faces = json_object_get(json_array_get(json_object_get(an, "results"), 0), "faces");
    size_t nf = json_array_size(faces);
    assert_int_equal(nf, 4);

    fw_image *img = NULL;
    fw_error err;
    if (fw_image_decode(d, len, NULL, &img, &err) != FW_OK)
        fail_msg("fw_image_decode: %s", err.message);
    /* per face: a lossless PNG and a JPEG (q95) of the same crop; plus one photo that is
     * not 112 x 112 at the end, which must be a per-item error */
    fwt_part parts[2 * 4 + 1];
    uint8_t *blobs[2 * 4];
    char names[2 * 4][32];
    for (size_t i = 0; i < nf; i++) {
        json_t *lm = json_object_get(json_array_get(faces, i), "landmarks");
        float pts[5][2];
        for (size_t k = 0; k < 5; k++)
            for (size_t c = 0; c < 2; c++)
                pts[k][c] = (float)json_number_value(json_array_get(json_array_get(lm, k), c));
        uint8_t crop[FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3];
        fw_align_face(img, pts, crop);
        size_t pl, jl;
        blobs[2 * i] = encode_png(crop, &pl);
        blobs[2 * i + 1] = encode_jpeg(crop, &jl);
        snprintf(names[2 * i], sizeof names[0], "face%zu.png", i);
        snprintf(names[2 * i + 1], sizeof names[0], "face%zu.jpg", i);
        parts[2 * i] = (fwt_part){"image", names[2 * i], "image/png", blobs[2 * i], pl};
        parts[2 * i + 1] =
            (fwt_part){"image", names[2 * i + 1], "image/jpeg", blobs[2 * i + 1], jl};
    }
    fw_image_free(img);
    parts[2 * nf] = (fwt_part){"image", "photo.jpg", "image/jpeg", d, len};
    fwt_post_parts(g_w, "/v1/embed", parts, 2 * nf + 1, FWT_H1, &r);
    json_t *em = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    json_t *res = json_object_get(em, "results");
    assert_int_equal(json_array_size(res), 2 * nf + 1);
    for (size_t k = 0; k < 2 * nf; k++) {
        json_t *it = json_array_get(res, k);
        assert_int_equal(json_integer_value(json_object_get(it, "index")), k);
        assert_string_equal(json_string_value(json_object_get(it, "id")), names[k]);
        size_t n = 0;
        float *e = fwt_json_floats(json_object_get(it, "embedding"), &n);
        if (!e)
            fail_msg("embed item %zu has no embedding: %s", k, json_dumps(it, JSON_COMPACT));
        assert_int_equal(n, 512);
        assert_true(fabs(sqrt(fwt_dot(e, e, n)) - 1) < 1e-3);
        size_t n2 = 0;
        float *ref =
            fwt_json_floats(json_object_get(json_array_get(faces, k / 2), "embedding"), &n2);
        assert_int_equal(n2, 512);
        double c = fwt_dot(e, ref, 512);
        if (!(c > 0.95))
            fail_msg("%s: cosine with the analyze embedding of face %zu is %.4f", names[k], k / 2,
                     c);
        /* and it is that face's crop, not another one's */
        for (size_t o = 0; o < nf; o++) {
            if (o == k / 2)
                continue;
            float *other =
                fwt_json_floats(json_object_get(json_array_get(faces, o), "embedding"), &n2);
            assert_true(fwt_dot(e, other, 512) < c);
            free(other);
        }
        free(e);
        free(ref);
        free(blobs[k]);
    }
    json_t *bad = json_array_get(res, 2 * nf);
    json_t *be = json_object_get(bad, "error");
    assert_true(json_is_object(be));
    assert_null(json_object_get(bad, "embedding"));
    assert_string_equal(json_string_value(json_object_get(be, "code")), "invalid_argument");
    assert_true(json_is_string(json_object_get(be, "message")));
    json_decref(em);
    json_decref(an);
}

/* ---------------------------------------------------------------------------------------- */

/* POSTs the six photos to /v1/analyze with the options JSON; returns the parsed answer. */
static json_t *analyze_photos(const char *options, fwt_proto proto, long status)
{
    fwt_part parts[7];
    for (int i = 0; i < 6; i++) {
        size_t len;
        const uint8_t *d = fwt_photo(i + 1, &len);
        parts[i] = (fwt_part){"image", "p.jpg", "image/jpeg", d, len};
    }
    parts[6] = (fwt_part){"options", NULL, NULL, options, (size_t)-1};
    fwt_resp r;
    fwt_post_parts(g_w, "/v1/analyze", parts, 7, proto, &r);
    if (status != 200) {
        fwt_expect_error(&r, status, "parse_error");
        fwt_resp_free(&r);
        return NULL;
    }
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    return j;
}

static double jnum(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        fail_msg("\"%s\" is not a number", key);
    return json_number_value(v);
}

/* Quality and box crops over HTTP/2: every face has its quality object; each PNG crop is the
 * box grown by the margin, and its sharpness is the crop's own. */
static void test_quality_and_crops(void **state)
{
    (void)state;
    json_t *j = analyze_photos("{\"crops\":\"box\",\"crop_format\":\"png\",\"face_margin\":0.1,"
                               "\"embed\":false}",
                               FWT_H2, 200);
    json_t *res = json_object_get(j, "results");
    size_t faces = 0;
    for (int i = 0; i < 6; i++) {
        json_t *item = json_array_get(res, (size_t)i);
        int w = (int)jnum(item, "width"), h = (int)jnum(item, "height");
        json_t *fl = json_object_get(item, "faces");
        assert_int_equal(json_array_size(fl), fwt_photo_faces[i + 1]);
        size_t k;
        json_t *f;
        json_array_foreach(fl, k, f)
        {
            faces++;
            fwt_check_face(f, w, h, false);
            json_t *q = json_object_get(f, "quality");
            assert_true(json_is_object(q));
            assert_true(json_is_true(json_object_get(q, "usable"))); /* no preset: all pass */
            assert_int_equal(json_array_size(json_object_get(q, "reasons")), 0);
            double score = jnum(q, "score");
            assert_true(score > 0 && score <= 1);
            assert_true(fabs(jnum(q, "yaw")) < 90 && fabs(jnum(q, "pitch")) < 90);
            json_t *bb = json_object_get(f, "bbox");
            double bw =
                json_number_value(json_array_get(bb, 2)) - json_number_value(json_array_get(bb, 0));
            double bh =
                json_number_value(json_array_get(bb, 3)) - json_number_value(json_array_get(bb, 1));
            assert_true(fabs(jnum(q, "size") - (bw < bh ? bw : bh)) < 0.02);
            json_t *c = json_object_get(f, "crop");
            assert_string_equal(json_string_value(json_object_get(c, "format")), "png");
            size_t len;
            uint8_t *png = fwt_b64_decode(json_string_value(json_object_get(c, "data")), &len);
            assert_non_null(png);
            fw_image *img = NULL;
            assert_int_equal(fw_image_decode(png, len, NULL, &img, NULL), FW_OK);
            assert_int_equal(img->width, (int)jnum(c, "width"));
            assert_int_equal(img->height, (int)jnum(c, "height"));
            /* the box grown by 10 % on each side, clipped (to a pixel: the JSON box has 2
             * decimals) */
            float box[4];
            for (size_t b = 0; b < 4; b++)
                box[b] = (float)json_number_value(json_array_get(bb, b));
            int reg[4];
            assert_int_equal(fw_crop_region(box, 0.1f, w, h, reg), 0);
            assert_true(abs(img->width - (reg[2] - reg[0])) <= 1);
            assert_true(abs(img->height - (reg[3] - reg[1])) <= 1);
            /* box sharpness is measured on exactly these pixels */
            double sh = fw_sharpness_rgb(img->pixels, (size_t)img->width * 3, 0, 0, img->width,
                                         img->height);
            assert_true(fabs(sh - jnum(json_object_get(q, "sharpness"), "box")) <= 0.01);
            fw_image_free(img);
            free(png);
        }
    }
    assert_int_equal(faces, 22);
    json_decref(j);
}

/* A preset with reject: images without a usable face are per-item unusable_face errors
 * saying why, the others keep only their usable faces; a filter keeps every item. */
static void test_quality_reject_and_filter(void **state)
{
    (void)state;
    json_t *ann = analyze_photos("{\"quality_preset\":\"search\",\"quality_action\":\"annotate\"}",
                                 FWT_H1, 200);
    json_t *rej = analyze_photos("{\"quality_preset\":{\"min_sharpness\":100,\"max_yaw\":45,"
                                 "\"max_pitch\":45},\"quality_action\":\"reject\"}",
                                 FWT_H1, 200);
    json_t *fil = analyze_photos("{\"quality_preset\":{\"min_sharpness\":100,\"max_yaw\":45,"
                                 "\"max_pitch\":45}}",
                                 FWT_H2, 200);
    size_t errors = 0, kept = 0;
    for (size_t i = 0; i < 6; i++) {
        json_t *a = json_array_get(json_object_get(ann, "results"), i);
        json_t *r = json_array_get(json_object_get(rej, "results"), i);
        json_t *f = json_array_get(json_object_get(fil, "results"), i);
        assert_non_null(json_object_get(f, "faces")); /* filter: never an item error */
        size_t usable = 0, k;
        json_t *face;
        json_array_foreach(json_object_get(a, "faces"), k, face)
        {
            json_t *q = json_object_get(face, "quality");
            double sharp = jnum(json_object_get(q, "sharpness"), "box");
            if (sharp >= 100 && fabs(jnum(q, "yaw")) <= 45 && fabs(jnum(q, "pitch")) <= 45)
                usable++;
        }
        assert_int_equal(json_array_size(json_object_get(f, "faces")), usable);
        if (usable) {
            kept++;
            assert_int_equal(json_array_size(json_object_get(r, "faces")), usable);
            json_array_foreach(json_object_get(r, "faces"), k, face)
            {
                assert_true(
                    json_is_true(json_object_get(json_object_get(face, "quality"), "usable")));
                assert_non_null(json_object_get(face, "embedding"));
            }
        } else {
            errors++;
            json_t *e = json_object_get(r, "error");
            assert_string_equal(json_string_value(json_object_get(e, "code")), "unusable_face");
            const char *msg = json_string_value(json_object_get(e, "message"));
            assert_non_null(strstr(msg, "no usable face"));
            assert_non_null(strstr(msg, "sharpness"));
        }
    }
    assert_true(errors > 0 && kept > 0); /* both paths ran */
    json_decref(ann);
    json_decref(rej);
    json_decref(fil);
}

/* Bad quality options are 400 naming the option; the worker keeps serving. */
static void test_quality_bad_options(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"quality_preset\":\"strict\"}",
        "{\"quality_preset\":{\"max_yaw\":120}}",
        "{\"quality_preset\":{\"min_blur\":3}}",
        "{\"quality_preset\":7}",
        "{\"quality_action\":\"drop\"}",
        "{\"crops\":\"round\"}",
        "{\"crops\":true}",
        "{\"face_margin\":3}",
        "{\"face_margin\":-0.1}",
        "{\"crop_format\":\"webp\"}",
        "{\"crop_quality\":0}",
        "{\"crop_quality\":95.5}",
        "{\"quality\":\"yes\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_null(analyze_photos(bad[i], i % 2 ? FWT_H2 : FWT_H1, 400));
    json_decref(fwt_wait_healthy(g_w, 10));
}

static void test_not_found_and_method(void **state)
{
    (void)state;
    fwt_resp r;
    fwt_get(g_w, "/nope", FWT_H1, &r);
    fwt_expect_error(&r, 404, "not_found");
    fwt_resp_free(&r);
    fwt_post(g_w, "/v1/analyse", "application/json", "{}", 2, FWT_H2, &r);
    fwt_expect_error(&r, 404, "not_found");
    fwt_resp_free(&r);

    fwt_get(g_w, "/v1/analyze", FWT_H1, &r);
    fwt_expect_error(&r, 405, "method_not_allowed");
    assert_non_null(strstr(r.allow, "POST"));
    fwt_resp_free(&r);
    char url[256];
    snprintf(url, sizeof url, "%s/health", g_w->url);
    fwt_req rq = {.method = "DELETE", .url = url};
    fwt_http(&rq, &r);
    fwt_expect_error(&r, 405, "method_not_allowed");
    assert_non_null(strstr(r.allow, "GET"));
    fwt_resp_free(&r);
    fwt_post(g_w, "/metrics", "application/json", "{}", 2, FWT_H2, &r);
    fwt_expect_error(&r, 405, "method_not_allowed");
    fwt_resp_free(&r);
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
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_gpu_info),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_analyze_multipart_and_json),
        cmocka_unit_test(test_detect_has_no_embeddings),
        cmocka_unit_test(test_embedding_formats),
        cmocka_unit_test(test_embed_aligned_crops),
        cmocka_unit_test(test_quality_and_crops),
        cmocka_unit_test(test_quality_reject_and_filter),
        cmocka_unit_test(test_quality_bad_options),
        cmocka_unit_test(test_not_found_and_method),
        cmocka_unit_test(test_shutdown_clean),
    };
    return cmocka_run_group_tests(tests, setup, fwt_teardown);
}
