/* Integration: `facework backend` in front of a real worker, v1 and legacy API.
 *
 * One worker and one backend pointed at it (GPU_WORKER_URL). Every answer the backend gives
 * is compared with the worker's own answer to the same request: v1 /v1/analyze (multipart
 * over HTTP/1.1, HTTP/2 prior knowledge and h2c upgrade; JSON with options), /v1/detect,
 * /v1/embed with real aligned crops, per-item errors, 400/415/404; the legacy
 * /detect_faces_batch_multipart and /detect_faces_batch (exact key sets, the same faces,
 * worker_id = the backend's id); the unchanged legacy Python client (legacy_client.py)
 * against the backend. Then GET /health (the worker's URL, breaker state, last health
 * check, item shares), GET /metrics (the facework_client_* families) and `facework health`.
 * Last, the worker is stopped: the backend keeps answering v1 and legacy requests with the
 * same faces from its CPU fallback, says "degraded", and counts the fallback share. */
#include "harness.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "core/align.h"
#include "facework/facework.h"

#define BACKEND_ID "test-backend"
#define FALLBACK "cpu-fallback" /* the origin of the CPU fallback's results */

static fwt_worker *g_w, *g_b;
static char g_wurl[96];    /* the worker's URL, kept after it is stopped */
static json_t *g_ref;      /* the worker's /v1/analyze of k_photos (multipart, HTTP/1.1) */
static json_t *g_ref_lgcy; /* the worker's /detect_faces_batch_multipart of k_photos */
static json_t *g_ref_qual; /* the worker's /v1/analyze of k_photos with K_QUALITY_OPTIONS */

/* A quality bar sample4 fails (per-item unusable_face) and the others pass, with crops. */
#define K_QUALITY_OPTIONS                                                                          \
    "{\"quality_preset\":{\"min_sharpness\":100,\"max_yaw\":45,\"max_pitch\":45},"                 \
    "\"quality_action\":\"reject\",\"crops\":\"aligned\",\"crop_format\":\"png\"}"

static const int k_photos[3] = {1, 4, 6}; /* 3, 4, 4 faces */
static const char k_hashes[] = "[{\"phash\":\"ffd8a0c3e1b2\",\"index\":2},"
                               "{\"phash\":\"00ff00ff00ff\",\"index\":0},"
                               "{\"phash\":987654321,\"index\":1}]";
static const char *const k_keys[3] = {"00ff00ff00ff", "987654321", "ffd8a0c3e1b2"}; /* by image */

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                  */

/* parts[0..2]: the k_photos as `field` file parts named p<i>.jpg. */
static void photo_parts(fwt_part parts[3], const char *field)
{
    static const char *const names[3] = {"p0.jpg", "p1.jpg", "p2.jpg"};
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        const uint8_t *d = fwt_photo(k_photos[i], &len);
        parts[i] = (fwt_part){field, names[i], "image/jpeg", d, len};
    }
}

static json_t *post_parts_200(const fwt_worker *t, const char *path, const fwt_part *parts,
                              size_t n, fwt_proto proto)
{
    fwt_resp r;
    fwt_post_parts(t, path, parts, n, proto, &r);
    if (r.status != 200)
        fail_msg("POST %s%s (%s): status %ld: %.400s", t->url, path, fwt_proto_name[proto],
                 r.status, r.status ? r.body : r.error);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    return j;
}

static json_t *post_body_200(const fwt_worker *t, const char *path, const char *ctype,
                             const char *body, fwt_proto proto)
{
    fwt_resp r;
    fwt_post(t, path, ctype, body, strlen(body), proto, &r);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    return j;
}

static json_t *results_of(const json_t *j, size_t i)
{
    return json_array_get(json_object_get(j, "results"), i);
}

/* The backend's v1 answer `got` holds the same results as the worker's `want`: same count,
 * index, id, size, faces (bbox within box_tol px, embedding cosine > min_cos when > 0), or
 * the same per-item error code. */
static void match_v1(const json_t *got, const json_t *want, double box_tol, double min_cos)
{
    size_t n = json_array_size(json_object_get(want, "results"));
    assert_true(n > 0);
    assert_int_equal(json_array_size(json_object_get(got, "results")), n);
    for (size_t i = 0; i < n; i++) {
        json_t *g = results_of(got, i), *w = results_of(want, i);
        assert_int_equal(json_integer_value(json_object_get(g, "index")), i);
        assert_true(json_equal(json_object_get(g, "id"), json_object_get(w, "id")));
        json_t *we = json_object_get(w, "error");
        if (we) {
            json_t *ge = json_object_get(g, "error");
            if (!json_is_object(ge))
                fail_msg("item %zu: the worker answered an error, the backend %s", i,
                         json_dumps(g, JSON_COMPACT));
            assert_string_equal(json_string_value(json_object_get(ge, "code")),
                                json_string_value(json_object_get(we, "code")));
            continue;
        }
        assert_true(json_equal(json_object_get(g, "width"), json_object_get(w, "width")));
        assert_true(json_equal(json_object_get(g, "height"), json_object_get(w, "height")));
        fwt_match_faces(json_object_get(g, "faces"), json_object_get(w, "faces"), box_tol, min_cos);
    }
}

/* "origins" has n entries, entry i equal to want[i]. */
static void expect_origins(const json_t *j, const char *const *want, size_t n)
{
    json_t *o = json_object_get(j, "origins");
    if (json_array_size(o) != n)
        fail_msg("origins: %s (want %zu entries)", json_dumps(o, JSON_COMPACT), n);
    for (size_t i = 0; i < n; i++) {
        const char *got = json_string_value(json_array_get(o, i));
        if (!got || strcmp(got, want[i]))
            fail_msg("origins[%zu] = %s, want \"%s\"", i,
                     json_dumps(json_array_get(o, i), JSON_ENCODE_ANY), want[i]);
    }
}

static void expect_all_origins(const json_t *j, const char *origin, size_t n)
{
    const char *want[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        want[i] = origin;
    expect_origins(j, want, n);
}

/* Exactly these keys, no others. */
static void expect_keys(const json_t *obj, const char *const *keys, size_t n, const char *what)
{
    assert_true(json_is_object(obj));
    for (size_t i = 0; i < n; i++)
        if (!json_object_get(obj, keys[i]))
            fail_msg("%s lacks \"%s\"", what, keys[i]);
    if (json_object_size(obj) != n)
        fail_msg("%s has unexpected keys: %.400s", what, json_dumps(obj, JSON_COMPACT));
}

/* A legacy answer: top-level keys exactly as the Python worker sent them, worker_id the
 * backend's, every face record with its six keys. */
static void check_legacy(const json_t *j, bool dict_results, bool gpu_used)
{
    static const char *const top[] = {"results", "processing_time_ms", "gpu_used", "worker_id"};
    static const char *const face[] = {"bbox",    "landmarks", "embedding",
                                       "quality", "age",       "gender"};
    expect_keys(j, top, 4, "legacy answer");
    assert_true(json_is_number(json_object_get(j, "processing_time_ms")));
    assert_true(json_is_boolean(json_object_get(j, "gpu_used")));
    if (json_is_true(json_object_get(j, "gpu_used")) != gpu_used)
        fail_msg("gpu_used is %s, want %s",
                 json_is_true(json_object_get(j, "gpu_used")) ? "true" : "false",
                 gpu_used ? "true" : "false");
    assert_string_equal(json_string_value(json_object_get(j, "worker_id")), BACKEND_ID);
    json_t *res = json_object_get(j, "results");
    assert_true(dict_results ? json_is_object(res) : json_is_array(res));
    const char *key;
    json_t *faces;
    size_t idx;
    if (dict_results) {
        json_object_foreach(res, key, faces)
        {
            for (size_t f = 0; f < json_array_size(faces); f++)
                expect_keys(json_array_get(faces, f), face, 6, "legacy face");
        }
    } else {
        json_array_foreach(res, idx, faces)
        {
            for (size_t f = 0; f < json_array_size(faces); f++)
                expect_keys(json_array_get(faces, f), face, 6, "legacy face");
        }
    }
}

/* The legacy multipart answer of k_photos with k_hashes (min_face_quality 0.5) from t. */
static json_t *legacy_multipart(const fwt_worker *t)
{
    fwt_part parts[5];
    photo_parts(parts, "images");
    parts[3] = (fwt_part){"image_hashes", NULL, NULL, k_hashes, (size_t)-1};
    parts[4] = (fwt_part){"min_face_quality", NULL, NULL, "0.5", (size_t)-1};
    return post_parts_200(t, "/detect_faces_batch_multipart", parts, 5, FWT_H1);
}

/* Legacy results of `got` match `want` for every k_keys entry. */
static void match_legacy_multipart(const json_t *got, const json_t *want, double box_tol,
                                   double min_cos)
{
    json_t *g = json_object_get(got, "results"), *w = json_object_get(want, "results");
    assert_int_equal(json_object_size(g), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *gf = json_object_get(g, k_keys[i]);
        if (!json_is_array(gf))
            fail_msg("legacy results have no list under \"%s\"", k_keys[i]);
        assert_int_equal(json_array_size(gf), fwt_photo_faces[k_photos[i]]);
        fwt_match_faces(gf, json_object_get(w, k_keys[i]), box_tol, min_cos);
    }
}

static json_t *get_json(const fwt_worker *t, const char *path, long status)
{
    fwt_resp r;
    fwt_get(t, path, FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, status);
    fwt_resp_free(&r);
    return j;
}

static char *get_metrics(void)
{
    fwt_resp r;
    fwt_get(g_b, "/metrics", FWT_H1, &r);
    assert_int_equal(r.status, 200);
    char *text = r.body;
    r.body = NULL;
    fwt_resp_free(&r);
    return text;
}

static double metric_or_fail(const char *text, const char *series)
{
    double v;
    if (!fwt_metric(text, series, &v))
        fail_msg("/metrics has no sample %s", series);
    return v;
}

/* The backend's /health entry of the worker. */
static json_t *health_worker(const json_t *h)
{
    json_t *ws = json_object_get(h, "workers");
    assert_int_equal(json_array_size(ws), 1);
    json_t *w = json_array_get(ws, 0);
    assert_string_equal(json_string_value(json_object_get(w, "url")), g_wurl);
    return w;
}

/* Runs `facework health URL`; returns its exit status, output in out. */
static int health_command(const char *url, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' health '%s' 2>&1", getenv("FW_FACEWORK"), url);
    fflush(NULL);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---------------------------------------------------------------------------------------- */
/* setup                                                                                    */

/* k_photos with K_QUALITY_OPTIONS to /v1/analyze. */
static json_t *quality_request(const fwt_worker *t)
{
    fwt_part parts[4];
    photo_parts(parts, "image");
    parts[3] = (fwt_part){"options", NULL, NULL, K_QUALITY_OPTIONS, (size_t)-1};
    return post_parts_200(t, "/v1/analyze", parts, 4, FWT_H2);
}

/* got and want: the same item errors, and faces with the same quality and crop bytes. */
static void match_quality(const json_t *got, const json_t *want)
{
    const json_t *gr = json_object_get(got, "results"), *wr = json_object_get(want, "results");
    assert_int_equal(json_array_size(gr), json_array_size(wr));
    size_t errors = 0;
    for (size_t i = 0; i < json_array_size(wr); i++) {
        const json_t *g = json_array_get(gr, i), *w = json_array_get(wr, i);
        const json_t *we = json_object_get(w, "error");
        if (we) {
            errors++;
            const json_t *ge = json_object_get(g, "error");
            assert_non_null(ge);
            assert_string_equal(json_string_value(json_object_get(ge, "code")), "unusable_face");
            assert_string_equal(json_string_value(json_object_get(ge, "message")),
                                json_string_value(json_object_get(we, "message")));
            continue;
        }
        const json_t *gf = json_object_get(g, "faces"), *wf = json_object_get(w, "faces");
        assert_true(json_array_size(wf) > 0);
        assert_int_equal(json_array_size(gf), json_array_size(wf));
        for (size_t k = 0; k < json_array_size(wf); k++) {
            const json_t *gq = json_object_get(json_array_get(gf, k), "quality");
            const json_t *wq = json_object_get(json_array_get(wf, k), "quality");
            static const char *const keys[] = {"score", "yaw", "pitch", "roll", "size"};
            for (size_t q = 0; q < 5; q++)
                assert_true(fabs(json_number_value(json_object_get(gq, keys[q])) -
                                 json_number_value(json_object_get(wq, keys[q]))) < 0.011);
            assert_true(json_is_true(json_object_get(gq, "usable")));
            const json_t *gc = json_object_get(json_array_get(gf, k), "crop");
            const json_t *wc = json_object_get(json_array_get(wf, k), "crop");
            assert_string_equal(json_string_value(json_object_get(gc, "data")),
                                json_string_value(json_object_get(wc, "data")));
        }
    }
    assert_int_equal(errors, 1); /* sample4 */
}

static int setup(void **state)
{
    (void)state;
    g_w = fwt_worker_start(NULL);
    snprintf(g_wurl, sizeof g_wurl, "%s", g_w->url);
    char url_env[160];
    snprintf(url_env, sizeof url_env, "GPU_WORKER_URL=%s", g_wurl);
    const char *const env[] = {url_env,
                               "GPU_WORKER_HEALTH_CHECK_INTERVAL=200ms",
                               "GPU_WORKER_MAX_RETRIES=1",
                               "GPU_WORKER_BACKOFF_BASE=10ms",
                               "GPU_WORKER_BACKOFF_MAX=50ms",
                               "GPU_WORKER_CONNECT_TIMEOUT=1s",
                               NULL};
    const char *const args[] = {"--backend-id", BACKEND_ID, "--wait-ready", "30s", NULL};
    fwt_worker_opts o = {.command = "backend", .args = args, .env = env};
    g_b = fwt_worker_start_opts(&o);

    fwt_part parts[3];
    photo_parts(parts, "image");
    g_ref = post_parts_200(g_w, "/v1/analyze", parts, 3, FWT_H1);
    g_ref_lgcy = legacy_multipart(g_w);
    g_ref_qual = quality_request(g_w);
    return 0;
}

static int teardown(void **state)
{
    json_decref(g_ref);
    json_decref(g_ref_lgcy);
    json_decref(g_ref_qual);
    return fwt_teardown(state);
}

/* ---------------------------------------------------------------------------------------- */
/* v1                                                                                       */

static void test_v1_analyze_matches_worker(void **state)
{
    (void)state;
    fwt_part parts[3];
    photo_parts(parts, "image");
    for (int p = FWT_H1; p <= FWT_H2C; p++) {
        json_t *j = post_parts_200(g_b, "/v1/analyze", parts, 3, (fwt_proto)p);
        /* answered by the worker itself: the very same numbers */
        match_v1(j, g_ref, 0.011, 0.9999);
        expect_all_origins(j, g_wurl, 3);
        assert_string_equal(json_string_value(json_object_get(j, "provider")), "worker");
        assert_string_equal(json_string_value(json_object_get(j, "model")), "default");
        assert_true(json_is_number(json_object_get(j, "took_ms")));
        for (size_t i = 0; i < 3; i++) {
            json_t *faces = json_object_get(results_of(j, i), "faces");
            for (size_t f = 0; f < json_array_size(faces); f++)
                fwt_check_face(json_array_get(faces, f),
                               (int)json_integer_value(json_object_get(results_of(j, i), "width")),
                               (int)json_integer_value(json_object_get(results_of(j, i), "height")),
                               true);
        }
        json_decref(j);
    }

    /* JSON body with options: they reach the worker (same answer as the worker's) */
    json_t *imgs = json_array();
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        const uint8_t *d = fwt_photo(k_photos[i], &len);
        char *b64 = fwt_b64_encode(d, len);
        json_array_append_new(
            imgs, json_pack("{s:o,s:s}", "id", json_sprintf("img-%zu", i), "data", b64));
        free(b64);
    }
    json_t *body =
        json_pack("{s:o,s:{s:f,s:i}}", "images", imgs, "options", "min_score", 0.9, "max_faces", 2);
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    json_t *want = post_body_200(g_w, "/v1/analyze", "application/json", s, FWT_H1);
    json_t *got = post_body_200(g_b, "/v1/analyze", "application/json", s, FWT_H2);
    free(s);
    match_v1(got, want, 0.011, 0.9999);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(json_string_value(json_object_get(results_of(got, i), "id")),
                            i == 0   ? "img-0"
                            : i == 1 ? "img-1"
                                     : "img-2");
        assert_true(json_array_size(json_object_get(results_of(got, i), "faces")) <= 2);
    }
    expect_all_origins(got, g_wurl, 3);
    json_decref(want);
    json_decref(got);
}

/* Quality options, the reject action and crops reach the worker through the backend and
 * come back unchanged. */
static void test_v1_quality_matches_worker(void **state)
{
    (void)state;
    json_t *j = quality_request(g_b);
    expect_all_origins(j, g_wurl, 3);
    match_quality(j, g_ref_qual);
    json_decref(j);
}

static void test_v1_detect_matches_worker(void **state)
{
    (void)state;
    fwt_part parts[3];
    photo_parts(parts, "image");
    json_t *want = post_parts_200(g_w, "/v1/detect", parts, 3, FWT_H1);
    json_t *got = post_parts_200(g_b, "/v1/detect", parts, 3, FWT_H1);
    match_v1(got, want, 0.011, 0);
    expect_all_origins(got, g_wurl, 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *faces = json_object_get(results_of(got, i), "faces");
        assert_int_equal(json_array_size(faces), fwt_photo_faces[k_photos[i]]);
        for (size_t f = 0; f < json_array_size(faces); f++)
            assert_null(json_object_get(json_array_get(faces, f), "embedding"));
    }
    json_decref(want);
    json_decref(got);
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

static void test_v1_embed_matches_worker(void **state)
{
    (void)state;
    /* aligned crops of sample4's faces (landmarks from the worker's answer), plus a photo
     * that is not 112 x 112: a per-item error */
    size_t len;
    const uint8_t *d = fwt_photo(4, &len);
    json_t *faces = json_object_get(results_of(g_ref, 1), "faces");
    size_t nf = json_array_size(faces);
    assert_int_equal(nf, 4);
    fw_image *img = NULL;
    fw_error err;
    if (fw_image_decode(d, len, NULL, &img, &err) != FW_OK)
        fail_msg("fw_image_decode: %s", err.message);
    fwt_part parts[5];
    uint8_t *blobs[4];
    static const char *const names[4] = {"f0.jpg", "f1.jpg", "f2.jpg", "f3.jpg"};
    for (size_t i = 0; i < nf; i++) {
        json_t *lm = json_object_get(json_array_get(faces, i), "landmarks");
        float pts[5][2];
        for (size_t k = 0; k < 5; k++)
            for (size_t c = 0; c < 2; c++)
                pts[k][c] = (float)json_number_value(json_array_get(json_array_get(lm, k), c));
        uint8_t crop[FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3];
        fw_align_face(img, pts, crop);
        size_t bl;
        blobs[i] = encode_jpeg(crop, &bl);
        parts[i] = (fwt_part){"image", names[i], "image/jpeg", blobs[i], bl};
    }
    fw_image_free(img);
    parts[4] = (fwt_part){"image", "photo.jpg", "image/jpeg", d, len};
    json_t *want = post_parts_200(g_w, "/v1/embed", parts, 5, FWT_H1);
    json_t *got = post_parts_200(g_b, "/v1/embed", parts, 5, FWT_H2C);
    assert_int_equal(json_array_size(json_object_get(got, "results")), 5);
    for (size_t k = 0; k < nf; k++) {
        size_t n1 = 0, n2 = 0;
        float *e = fwt_json_floats(json_object_get(results_of(got, k), "embedding"), &n1);
        float *r = fwt_json_floats(json_object_get(results_of(want, k), "embedding"), &n2);
        if (!e || !r || n1 != 512 || n2 != 512)
            fail_msg("embed item %zu: backend %s, worker %s", k,
                     json_dumps(results_of(got, k), JSON_COMPACT),
                     json_dumps(results_of(want, k), JSON_COMPACT));
        double c = fwt_dot(e, r, 512);
        if (!(c > 0.9999))
            fail_msg("embed item %zu: cosine %.5f between the backend's and the worker's", k, c);
        free(e);
        free(r);
        free(blobs[k]);
    }
    json_t *ge = json_object_get(results_of(got, 4), "error");
    assert_true(json_is_object(ge));
    assert_string_equal(
        json_string_value(json_object_get(ge, "code")),
        json_string_value(json_object_get(json_object_get(results_of(want, 4), "error"), "code")));
    json_decref(want);
    json_decref(got);
}

static void test_v1_bad_items_and_requests(void **state)
{
    (void)state;
    /* a bad item among good ones: a per-item error in its place, the rest computed */
    fwt_part parts[3];
    photo_parts(parts, "image");
    static const char junk[] = "this is not an image at all";
    parts[1] = (fwt_part){"image", "junk.jpg", "image/jpeg", junk, sizeof junk - 1};
    json_t *want = post_parts_200(g_w, "/v1/analyze", parts, 3, FWT_H1);
    json_t *got = post_parts_200(g_b, "/v1/analyze", parts, 3, FWT_H1);
    match_v1(got, want, 0.011, 0.9999);
    assert_true(json_is_object(json_object_get(results_of(got, 1), "error")));
    json_t *o = json_object_get(got, "origins");
    assert_string_equal(json_string_value(json_array_get(o, 0)), g_wurl);
    assert_string_equal(json_string_value(json_array_get(o, 2)), g_wurl);
    json_decref(want);
    json_decref(got);

    /* malformed requests: the same statuses and codes as the worker */
    static const struct {
        const char *path, *ctype, *body;
        long status;
    } bad[] = {
        {"/v1/analyze", "application/json", "{\"images\": [", 400},
        {"/v1/analyze", "application/json", "{\"images\": 7}", 400},
        {"/v1/analyze", "text/plain", "hello", 415},
        {"/detect_faces_batch", "text/plain", "{\"images\":[]}", 415},
        {"/v1/nothing-here", "application/json", "{}", 404},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fwt_resp rw, rb;
        fwt_post(g_w, bad[i].path, bad[i].ctype, bad[i].body, strlen(bad[i].body), FWT_H1, &rw);
        fwt_post(g_b, bad[i].path, bad[i].ctype, bad[i].body, strlen(bad[i].body), FWT_H1, &rb);
        if (rb.status != bad[i].status || rw.status != bad[i].status)
            fail_msg("POST %s (%s) %s: backend %ld %.200s, worker %ld", bad[i].path, bad[i].ctype,
                     bad[i].body, rb.status, rb.body, rw.status);
        json_t *jw = json_loads(rw.body, 0, NULL);
        const char *code = json_string_value(json_object_get(json_object_get(jw, "error"), "code"));
        fwt_expect_error(&rb, bad[i].status, code);
        json_decref(jw);
        fwt_resp_free(&rw);
        fwt_resp_free(&rb);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* legacy                                                                                   */

static void test_legacy_multipart_matches_worker(void **state)
{
    (void)state;
    json_t *j = legacy_multipart(g_b);
    check_legacy(j, true, true);
    match_legacy_multipart(j, g_ref_lgcy, 0.011, 0.9999);
    json_decref(j);

    /* bad image_hashes: 400 parse_error, as from the worker */
    fwt_part parts[4];
    photo_parts(parts, "images");
    parts[3] =
        (fwt_part){"image_hashes", NULL, NULL, "[{\"phash\":\"a\",\"index\":0}]", (size_t)-1};
    fwt_resp r;
    fwt_post_parts(g_b, "/detect_faces_batch_multipart", parts, 4, FWT_H1, &r);
    fwt_expect_error(&r, 400, "parse_error");
    fwt_resp_free(&r);
}

/* The legacy JSON route's body for k_photos plus one item that is not base64. */
static char *legacy_json_body(void)
{
    json_t *imgs = json_array();
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        const uint8_t *d = fwt_photo(k_photos[i], &len);
        char *b64 = fwt_b64_encode(d, len);
        json_array_append_new(imgs, json_pack("{s:s}", "data", b64));
        free(b64);
    }
    json_array_append_new(
        imgs, json_pack("{s:s,s:s}", "data", "%%% not base64 %%%", "image_id", "broken"));
    json_t *body = json_pack("{s:o,s:f}", "images", imgs, "min_face_quality", 0.5);
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return s;
}

static void test_legacy_json_matches_worker(void **state)
{
    (void)state;
    char *s = legacy_json_body();
    json_t *want = post_body_200(g_w, "/detect_faces_batch", "application/json", s, FWT_H1);
    json_t *got = post_body_200(g_b, "/detect_faces_batch", "application/json", s, FWT_H2);
    free(s);
    check_legacy(got, false, true);
    json_t *res = json_object_get(got, "results");
    assert_int_equal(json_array_size(res), 4);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(json_array_size(json_array_get(res, i)), fwt_photo_faces[k_photos[i]]);
        fwt_match_faces(json_array_get(res, i), json_array_get(json_object_get(want, "results"), i),
                        0.011, 0.9999);
    }
    assert_int_equal(json_array_size(json_array_get(res, 3)), 0);
    json_decref(want);
    json_decref(got);
}

static void test_python_legacy_client(void **state)
{
    (void)state;
    if (access("/usr/bin/python3", X_OK) != 0) {
        print_message("no /usr/bin/python3: the legacy Python client is not run\n");
        skip();
    }
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "FW_TEST_TIME_SCALE=%g /usr/bin/python3 '%s/tests/integration/legacy_client.py' "
             "'%s' '%s' '%s' 2>&1",
             fwt_time_scale(), getenv("FW_SOURCE_DIR"), g_b->url, fwt_photo_path(1),
             fwt_photo_path(5));
    fflush(NULL);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    if (st != 0)
        fail_msg("legacy_client.py against the backend failed (status %d):\n%s", st, out);
    assert_non_null(strstr(out, "legacy_client: 2 images, 8 faces"));
}

/* ---------------------------------------------------------------------------------------- */
/* health, metrics, facework health                                                         */

static void test_health_metrics_and_command(void **state)
{
    (void)state;
    json_t *h = get_json(g_b, "/health", 200);
    assert_string_equal(json_string_value(json_object_get(h, "status")), "healthy");
    assert_string_equal(json_string_value(json_object_get(h, "role")), "backend");
    assert_string_equal(json_string_value(json_object_get(h, "worker_id")), BACKEND_ID);
    /* the legacy fields, with their types */
    assert_true(json_is_true(json_object_get(h, "gpu_available")));
    assert_true(json_is_boolean(json_object_get(h, "directml_available")));
    assert_true(json_is_true(json_object_get(h, "model_loaded")));
    assert_true(json_is_number(json_object_get(h, "uptime_seconds")));
    assert_true(json_is_string(json_object_get(h, "version")));
    json_t *w = health_worker(h);
    assert_string_equal(json_string_value(json_object_get(w, "breaker")), "closed");
    json_t *wh = json_object_get(w, "health");
    assert_true(json_is_true(json_object_get(wh, "checked")));
    assert_true(json_is_true(json_object_get(wh, "ok")));
    assert_int_equal(json_integer_value(json_object_get(wh, "http_status")), 200);
    assert_true(json_number_value(json_object_get(wh, "age_s")) >= 0);
    json_t *tr = json_object_get(w, "transitions");
    assert_int_equal(json_integer_value(json_object_get(tr, "closed->open")), 0);
    long long items = json_integer_value(json_object_get(h, "items"));
    long long by_worker = json_integer_value(json_object_get(h, "items_worker"));
    /* 3 photos x 3 protocols + 3 JSON + 3 detect + 5 embed + 3 with a bad one + 3 legacy
     * multipart (+ 3 with bad hashes: refused before the client) + 4 legacy JSON (one bad,
     * refused) + 2 from the Python client, at least */
    assert_true(by_worker >= 30);
    assert_true(items >= by_worker);
    assert_int_equal(json_integer_value(json_object_get(h, "items_fallback")), 0);
    assert_true(json_number_value(json_object_get(h, "fallback_rate")) == 0);
    assert_true(json_number_value(json_object_get(h, "gpu_usage_rate")) > 0.9);
    assert_false(json_is_true(json_object_get(json_object_get(h, "fallback"), "loaded")));

    /* /metrics: the same figures, by their Prometheus names */
    char *m = get_metrics();
    char series[512];
    assert_true(metric_or_fail(m, "facework_client_items_total{served_by=\"worker\"}") ==
                (double)by_worker);
    assert_true(metric_or_fail(m, "facework_client_items_total{served_by=\"fallback\"}") == 0);
    assert_true(metric_or_fail(m, "facework_client_fallback_ratio") == 0);
    assert_true(metric_or_fail(m, "facework_client_gpu_usage_ratio") > 0.9);
    snprintf(series, sizeof series,
             "facework_client_requests_total{worker=\"%s\",outcome=\"success\"}", g_wurl);
    double ok = metric_or_fail(m, series);
    assert_true(ok >= 10);
    snprintf(series, sizeof series, "facework_client_request_seconds_count{worker=\"%s\"}", g_wurl);
    assert_true(metric_or_fail(m, series) >= ok);
    snprintf(series, sizeof series,
             "facework_client_request_seconds_bucket{worker=\"%s\",le=\"+Inf\"}", g_wurl);
    assert_true(metric_or_fail(m, series) >= ok);
    snprintf(series, sizeof series,
             "facework_client_breaker_transitions_total{worker=\"%s\",from=\"closed\",to=\"open\"}",
             g_wurl);
    assert_true(metric_or_fail(m, series) == 0);
    snprintf(series, sizeof series, "facework_client_breaker_state{worker=\"%s\"}", g_wurl);
    assert_true(metric_or_fail(m, series) == 0);
    snprintf(series, sizeof series, "facework_backend_worker_success_ratio{worker=\"%s\"}", g_wurl);
    assert_true(metric_or_fail(m, series) == 1);
    assert_true(
        metric_or_fail(
            m, "facework_backend_http_requests_total{route=\"/v1/analyze\",status=\"200\"}") >= 5);
    assert_true(metric_or_fail(m, "facework_backend_ready") == 1);
    free(m);
    json_decref(h);

    char out[8192];
    int rc = health_command(g_b->url, out, sizeof out);
    if (rc != 0 || !strstr(out, "healthy (HTTP 200)") || !strstr(out, "role       backend") ||
        !strstr(out, "1 of 1 healthy") || !strstr(out, g_wurl) || !strstr(out, "breaker closed"))
        fail_msg("facework health on the backend: exit %d:\n%s", rc, out);
}

/* ---------------------------------------------------------------------------------------- */
/* the worker goes away                                                                     */

static void test_worker_down_fallback_answers(void **state)
{
    (void)state;
    assert_int_equal(fwt_worker_stop(g_w, SIGTERM, 40), 0);
    /* the backend's health checks notice (every 200 ms) */
    double deadline = fwt_now() + 20 * fwt_time_scale();
    for (;;) {
        json_t *h = get_json(g_b, "/health", 200);
        bool down =
            !json_is_true(json_object_get(json_object_get(health_worker(h), "health"), "ok"));
        bool degraded = !strcmp(json_string_value(json_object_get(h, "status")), "degraded");
        json_decref(h);
        if (down && degraded)
            break;
        if (fwt_now() > deadline)
            fail_msg("the backend's /health never said degraded after the worker stopped");
        fwt_pause_ms(50);
    }

    /* v1: every image answered by the CPU fallback, with the worker's faces */
    fwt_part parts[3];
    photo_parts(parts, "image");
    json_t *j = post_parts_200(g_b, "/v1/analyze", parts, 3, FWT_H1);
    expect_all_origins(j, FALLBACK, 3);
    assert_string_equal(json_string_value(json_object_get(j, "provider")), FALLBACK);
    match_v1(j, g_ref, 0.5, 0.999);
    json_decref(j);
    /* the fallback computes quality, rejects and crops as the worker did */
    j = quality_request(g_b);
    expect_all_origins(j, FALLBACK, 3);
    match_quality(j, g_ref_qual);
    json_decref(j);

    /* legacy: the same contract, gpu_used false */
    json_t *l = legacy_multipart(g_b);
    check_legacy(l, true, false);
    match_legacy_multipart(l, g_ref_lgcy, 0.5, 0.999);
    json_decref(l);
    char *s = legacy_json_body();
    json_t *lj = post_body_200(g_b, "/detect_faces_batch", "application/json", s, FWT_H1);
    free(s);
    check_legacy(lj, false, false);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(json_array_size(json_array_get(json_object_get(lj, "results"), i)),
                         fwt_photo_faces[k_photos[i]]);
    json_decref(lj);

    /* the fallback share shows in /health, /metrics and facework health */
    json_t *h = get_json(g_b, "/health", 200);
    assert_string_equal(json_string_value(json_object_get(h, "status")), "degraded");
    assert_true(json_is_false(json_object_get(h, "gpu_available")));
    assert_true(json_integer_value(json_object_get(h, "items_fallback")) >= 9);
    double rate = json_number_value(json_object_get(h, "fallback_rate"));
    assert_true(rate > 0 && rate < 1);
    assert_true(json_is_true(json_object_get(json_object_get(h, "fallback"), "loaded")));
    json_t *wh = json_object_get(health_worker(h), "health");
    assert_true(json_is_true(json_object_get(wh, "checked")));
    assert_true(json_string_length(json_object_get(wh, "error")) > 0);
    char *m = get_metrics();
    assert_true(metric_or_fail(m, "facework_client_items_total{served_by=\"fallback\"}") ==
                (double)json_integer_value(json_object_get(h, "items_fallback")));
    assert_true(fabs(metric_or_fail(m, "facework_client_fallback_ratio") - rate) < 1e-9);
    free(m);
    json_decref(h);
    char out[8192];
    int rc = health_command(g_b->url, out, sizeof out);
    if (rc != 0 || !strstr(out, "degraded (HTTP 200)") || !strstr(out, "0 of 1 healthy") ||
        !strstr(out, "health FAILED") || !strstr(out, "cpu        enabled, loaded"))
        fail_msg("facework health on the degraded backend: exit %d:\n%s", rc, out);
}

static void test_shutdown_clean(void **state)
{
    (void)state;
    assert_int_equal(fwt_worker_stop(g_b, SIGTERM, 40), 0);
}

int main(void)
{
    if (!getenv("FW_SOURCE_DIR")) {
        fprintf(stderr, "FW_SOURCE_DIR is not set: run through ctest\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_analyze_matches_worker),
        cmocka_unit_test(test_v1_quality_matches_worker),
        cmocka_unit_test(test_v1_detect_matches_worker),
        cmocka_unit_test(test_v1_embed_matches_worker),
        cmocka_unit_test(test_v1_bad_items_and_requests),
        cmocka_unit_test(test_legacy_multipart_matches_worker),
        cmocka_unit_test(test_legacy_json_matches_worker),
        cmocka_unit_test(test_python_legacy_client),
        cmocka_unit_test(test_health_metrics_and_command),
        cmocka_unit_test(test_worker_down_fallback_answers),
        cmocka_unit_test(test_shutdown_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
