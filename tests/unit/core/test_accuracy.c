/* Accuracy of the whole pipeline on public photos (npm @vladmandic/face-api@1.7.15,
 * demo/sample1..6.jpg, installed by setup into $FW_PHOTOS_DIR) with the default pack. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include <cmocka.h>

#include "core/align.h"
#include "facework/facework.h"

static fw_engine *eng;
static const int expected_faces[6] = {3, 3, 3, 4, 5, 4};

static void photo_path(char *buf, size_t cap, int i)
{
    const char *dir = getenv("FW_PHOTOS_DIR");
    snprintf(buf, cap, "%s/sample%d.jpg", dir ? dir : ".deps/photos", i);
}

static int setup(void **state)
{
    (void)state;
    fw_engine_config cfg;
    fw_engine_config_init(&cfg);
    cfg.models_dir = getenv("FW_MODELS_DIR");
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

static void load(int i, uint8_t **data, size_t *len)
{
    char path[1024];
    photo_path(path, sizeof path, i);
    fw_error err;
    assert_int_equal(fw_read_file(path, 0, data, len, &err), FW_OK);
}

static void analyze_one(const uint8_t *data, size_t len, fw_result *res)
{
    fw_blob b = {data, len};
    fw_error err;
    assert_int_equal(fw_engine_analyze(eng, &b, 1, NULL, res, &err), FW_OK);
    assert_int_equal(res->status, FW_OK);
}

/* The detector finds exactly the faces in each group photo, one image per call and all
 * six in one batched call, with the same boxes both ways. */
static void test_face_counts(void **state)
{
    (void)state;
    uint8_t *data[6];
    size_t len[6];
    fw_blob blobs[6];
    fw_result single[6], batch[6];
    for (int i = 0; i < 6; i++) {
        load(i + 1, &data[i], &len[i]);
        blobs[i] = (fw_blob){data[i], len[i]};
        analyze_one(data[i], len[i], &single[i]);
        if ((int)single[i].n_faces != expected_faces[i])
            fprintf(stderr, "sample%d: %zu faces, expected %d\n", i + 1, single[i].n_faces,
                    expected_faces[i]);
        assert_int_equal(single[i].n_faces, expected_faces[i]);
    }
    fw_error err;
    assert_int_equal(fw_engine_analyze(eng, blobs, 6, NULL, batch, &err), FW_OK);
    size_t dim = fw_engine_embedding_dim(eng);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(batch[i].n_faces, single[i].n_faces);
        for (size_t f = 0; f < batch[i].n_faces; f++) {
            for (int k = 0; k < 4; k++)
                assert_true(fabsf(batch[i].faces[f].bbox[k] - single[i].faces[f].bbox[k]) < 0.01f);
            float c = fw_cosine(batch[i].faces[f].embedding, single[i].faces[f].embedding, dim);
            assert_true(c > 0.9999f);
        }
        fw_result_clear(&single[i]);
        fw_result_clear(&batch[i]);
        free(data[i]);
    }
}

/* Embeddings are unit length and faces' boxes lie inside the image. */
static void test_embeddings_normalised(void **state)
{
    (void)state;
    uint8_t *data;
    size_t len;
    load(4, &data, &len);
    fw_result r;
    analyze_one(data, len, &r);
    size_t dim = fw_engine_embedding_dim(eng);
    assert_int_equal(dim, 512);
    for (size_t f = 0; f < r.n_faces; f++) {
        double n2 = 0;
        for (size_t k = 0; k < dim; k++)
            n2 += (double)r.faces[f].embedding[k] * r.faces[f].embedding[k];
        assert_true(fabs(n2 - 1.0) < 1e-4);
        assert_true(r.faces[f].bbox[0] >= 0 && r.faces[f].bbox[2] <= (float)r.width);
        assert_true(r.faces[f].bbox[1] >= 0 && r.faces[f].bbox[3] <= (float)r.height);
        assert_true(r.faces[f].score >= 0.65f && r.faces[f].score <= 1.0f);
    }
    fw_result_clear(&r);
    free(data);
}

/* Two different people in the same photo are below the 0.42 same-person threshold. */
static void test_different_faces_below_threshold(void **state)
{
    (void)state;
    size_t dim = fw_engine_embedding_dim(eng);
    float worst = -1;
    for (int i = 1; i <= 6; i++) {
        uint8_t *data;
        size_t len;
        load(i, &data, &len);
        fw_result r;
        analyze_one(data, len, &r);
        for (size_t a = 0; a < r.n_faces; a++)
            for (size_t b = a + 1; b < r.n_faces; b++) {
                float c = fw_cosine(r.faces[a].embedding, r.faces[b].embedding, dim);
                if (c > worst)
                    worst = c;
                if (c >= 0.42f)
                    fprintf(stderr, "sample%d faces %zu,%zu: cosine %.3f\n", i, a, b, c);
                assert_true(c < 0.42f);
            }
        fw_result_clear(&r);
        free(data);
    }
    fprintf(stderr, "highest different-person cosine: %.3f\n", worst);
}

/* --- transformed copies of a photo --------------------------------------------------- */

static uint8_t *encode_jpeg(const fw_image *img, int quality, size_t *len)
{
    tjhandle h = tjInitCompress();
    assert_non_null(h);
    unsigned char *buf = NULL;
    unsigned long n = 0;
    assert_int_equal(tjCompress2(h, img->pixels, img->width, img->width * 3, img->height, TJPF_RGB,
                                 &buf, &n, TJSAMP_420, quality, 0),
                     0);
    tjDestroy(h);
    uint8_t *out = malloc(n);
    assert_non_null(out);
    memcpy(out, buf, n);
    tjFree(buf);
    *len = n;
    return out;
}

/* Applies M (original -> new coordinates) into a new w x h image. */
static fw_image *transform(const fw_image *src, const float M[2][3], int w, int h)
{
    fw_image *dst = fw_image_new(w, h);
    assert_non_null(dst);
    fw_warp_affine(src, M, dst->pixels, w, h);
    return dst;
}

/* Finds the face in r whose centre is nearest to (x, y). */
static const fw_face *nearest(const fw_result *r, float x, float y)
{
    const fw_face *best = NULL;
    float bd = 1e30f;
    for (size_t i = 0; i < r->n_faces; i++) {
        const float *b = r->faces[i].bbox;
        float dx = (b[0] + b[2]) / 2 - x, dy = (b[1] + b[3]) / 2 - y;
        if (dx * dx + dy * dy < bd) {
            bd = dx * dx + dy * dy;
            best = &r->faces[i];
        }
    }
    return best;
}

/* The same face after resizing, JPEG re-encoding and a few degrees of rotation stays at
 * cosine >= 0.8 with itself. */
static void test_same_face_survives_transforms(void **state)
{
    (void)state;
    size_t dim = fw_engine_embedding_dim(eng);
    for (int photo = 1; photo <= 6; photo += 5) { /* sample1 and sample6 */
        uint8_t *data;
        size_t len;
        load(photo, &data, &len);
        fw_result orig;
        analyze_one(data, len, &orig);
        fw_image *img;
        fw_error err;
        assert_int_equal(fw_image_decode(data, len, NULL, &img, &err), FW_OK);

        const float deg = 4.0f * 3.14159265f / 180.0f;
        const float scales[3] = {0.8f, 1.25f, 1.0f};
        const float angles[3] = {0.0f, 0.0f, deg};
        const int qualities[3] = {90, 85, 70};
        for (int t = 0; t < 3; t++) {
            float s = scales[t], a = angles[t];
            int w = (int)(img->width * s), h = (int)(img->height * s);
            float cx = img->width / 2.0f, cy = img->height / 2.0f;
            /* rotate by a about the centre, scale by s, centre in the new canvas */
            float M[2][3] = {{s * cosf(a), -s * sinf(a), 0}, {s * sinf(a), s * cosf(a), 0}};
            M[0][2] = w / 2.0f - (M[0][0] * cx + M[0][1] * cy);
            M[1][2] = h / 2.0f - (M[1][0] * cx + M[1][1] * cy);
            fw_image *moved = transform(img, M, w, h);
            size_t jlen;
            uint8_t *jpg = encode_jpeg(moved, qualities[t], &jlen);
            fw_result r;
            analyze_one(jpg, jlen, &r);
            for (size_t f = 0; f < orig.n_faces; f++) {
                const float *b = orig.faces[f].bbox;
                float x = (b[0] + b[2]) / 2, y = (b[1] + b[3]) / 2;
                float nx = M[0][0] * x + M[0][1] * y + M[0][2];
                float ny = M[1][0] * x + M[1][1] * y + M[1][2];
                const fw_face *g = nearest(&r, nx, ny);
                assert_non_null(g);
                float c = fw_cosine(orig.faces[f].embedding, g->embedding, dim);
                if (c < 0.8f)
                    fprintf(stderr, "sample%d face %zu transform %d: cosine %.3f\n", photo, f, t,
                            c);
                assert_true(c >= 0.8f);
            }
            fw_result_clear(&r);
            free(jpg);
            fw_image_free(moved);
        }
        fw_image_free(img);
        fw_result_clear(&orig);
        free(data);
    }
}

/* Bad inputs are per-item errors and do not disturb the good ones in the same call. */
static void test_bad_items_are_isolated(void **state)
{
    (void)state;
    uint8_t *data;
    size_t len;
    load(1, &data, &len);
    static const uint8_t junk[] = "definitely not an image";
    fw_blob blobs[4] = {{data, len}, {junk, sizeof junk}, {data, len / 2}, {NULL, 0}};
    fw_result r[4];
    fw_error err;
    assert_int_equal(fw_engine_analyze(eng, blobs, 4, NULL, r, &err), FW_OK);
    assert_int_equal(r[0].status, FW_OK);
    assert_int_equal(r[0].n_faces, 3);
    assert_int_equal(r[1].status, FW_ERR_UNSUPPORTED);
    assert_int_equal(r[2].status, FW_ERR_CORRUPT);
    assert_int_equal(r[3].status, FW_ERR_EMPTY_INPUT);
    for (int i = 0; i < 4; i++) {
        if (i)
            assert_true(strlen(r[i].message) > 0);
        fw_result_clear(&r[i]);
    }
    free(data);
}

/* Options: max_faces keeps the best, min_score and min_face_size filter. */
static void test_options(void **state)
{
    (void)state;
    uint8_t *data;
    size_t len;
    load(5, &data, &len);
    fw_blob b = {data, len};
    fw_analyze_opts o;
    fw_analyze_opts_init(&o);
    o.max_faces = 2;
    o.embed = false;
    fw_result r;
    fw_error err;
    assert_int_equal(fw_engine_analyze(eng, &b, 1, &o, &r, &err), FW_OK);
    assert_int_equal(r.n_faces, 2);
    assert_null(r.faces[0].embedding);
    assert_true(r.faces[0].score >= r.faces[1].score);
    fw_result_clear(&r);
    fw_analyze_opts_init(&o);
    o.min_face_size = 100000;
    assert_int_equal(fw_engine_analyze(eng, &b, 1, &o, &r, &err), FW_OK);
    assert_int_equal(r.status, FW_OK);
    assert_int_equal(r.n_faces, 0);
    fw_result_clear(&r);
    free(data);
}

/* fw_engine_embed_aligned on a crop aligned by fw_align_face gives the pipeline's
 * embedding for that face. */
static void test_embed_aligned_matches_pipeline(void **state)
{
    (void)state;
    uint8_t *data;
    size_t len;
    load(2, &data, &len);
    fw_result r;
    analyze_one(data, len, &r);
    fw_image *img;
    fw_error err;
    assert_int_equal(fw_image_decode(data, len, NULL, &img, &err), FW_OK);
    uint8_t crop[FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3];
    fw_align_face(img, (const float(*)[2])r.faces[0].landmarks, crop);
    float emb[512];
    assert_int_equal(fw_engine_embed_aligned(eng, crop, 1, emb, &err), FW_OK);
    float c = fw_cosine(emb, r.faces[0].embedding, 512);
    assert_true(c > 0.95f);
    fw_image_free(img);
    fw_result_clear(&r);
    free(data);
}

/* One engine serves concurrent callers: 4 threads analyzing different photos at once get
 * what one thread gets. */
typedef struct conc_arg {
    int photo;
    fw_result res;
    fw_err rc;
} conc_arg;

static void *conc_run(void *p)
{
    conc_arg *a = p;
    uint8_t *data;
    size_t len;
    char path[1024];
    photo_path(path, sizeof path, a->photo);
    fw_error err;
    a->rc = fw_read_file(path, 0, &data, &len, &err);
    if (a->rc)
        return NULL;
    for (int round = 0; round < 3 && a->rc == FW_OK; round++) {
        fw_blob b = {data, len};
        if (round)
            fw_result_clear(&a->res);
        a->rc = fw_engine_analyze(eng, &b, 1, NULL, &a->res, &err);
    }
    free(data);
    return NULL;
}

static void test_concurrent_callers(void **state)
{
    (void)state;
    conc_arg args[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].photo = i + 2;
        assert_int_equal(pthread_create(&th[i], NULL, conc_run, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    size_t dim = fw_engine_embedding_dim(eng);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(args[i].rc, FW_OK);
        assert_int_equal(args[i].res.n_faces, expected_faces[args[i].photo - 1]);
        uint8_t *data;
        size_t len;
        load(args[i].photo, &data, &len);
        fw_result solo;
        analyze_one(data, len, &solo);
        for (size_t f = 0; f < solo.n_faces; f++)
            assert_true(fw_cosine(solo.faces[f].embedding, args[i].res.faces[f].embedding, dim) >
                        0.9999f);
        fw_result_clear(&solo);
        fw_result_clear(&args[i].res);
        free(data);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_face_counts),
        cmocka_unit_test(test_embeddings_normalised),
        cmocka_unit_test(test_different_faces_below_threshold),
        cmocka_unit_test(test_same_face_survives_transforms),
        cmocka_unit_test(test_bad_items_are_isolated),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_embed_aligned_matches_pipeline),
        cmocka_unit_test(test_concurrent_callers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
