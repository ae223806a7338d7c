/* Pose error on faces whose pose is known relative to a photo: the public photos
 * (npm @vladmandic/face-api@1.7.15, demo/sample1..6.jpg) rotated in the image plane by known
 * angles (roll must change by exactly that angle, yaw and pitch not at all) and mirrored
 * (yaw and roll must change sign, pitch stay). Prints the error table that docs/quality.md
 * quotes and fails when the errors grow past it. Uses the default pack's real landmarks. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/align.h"
#include "facework/facework.h"

#define N_PHOTOS 6
#define MAX_FACES 16
#define MAX_SAMPLES 256

static fw_engine *eng;
static fw_image *photo[N_PHOTOS];

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
    const char *dir = getenv("FW_PHOTOS_DIR");
    for (int i = 0; i < N_PHOTOS; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/sample%d.jpg", dir ? dir : ".deps/photos", i + 1);
        if (fw_image_load_file(path, NULL, &photo[i], &err) != FW_OK) {
            fprintf(stderr, "%s: %s\n", path, err.message);
            return -1;
        }
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_PHOTOS; i++)
        fw_image_free(photo[i]);
    fw_engine_free(eng);
    return 0;
}

static void detect(const fw_image *img, fw_result *res)
{
    fw_analyze_opts o;
    fw_analyze_opts_init(&o);
    o.embed = false;
    const fw_image *imgs[1] = {img};
    fw_error err;
    assert_int_equal(fw_engine_analyze_images(eng, imgs, 1, &o, res, &err), FW_OK);
    assert_int_equal(res->status, FW_OK);
}

/* The face of r whose box centre is nearest to (x, y), within a quarter of its size. */
static const fw_face *match(const fw_result *r, float x, float y)
{
    const fw_face *best = NULL;
    float bd = INFINITY;
    for (size_t k = 0; k < r->n_faces; k++) {
        const float *b = r->faces[k].bbox;
        float cx = (b[0] + b[2]) / 2, cy = (b[1] + b[3]) / 2, s = b[2] - b[0];
        float d = hypotf(cx - x, cy - y);
        if (d < 0.25f * s && d < bd) {
            bd = d;
            best = &r->faces[k];
        }
    }
    return best;
}

static double wrap180(double a)
{
    while (a > 180)
        a -= 360;
    while (a <= -180)
        a += 360;
    return a;
}

typedef struct errs {
    double v[3][MAX_SAMPLES]; /* yaw, pitch, roll */
    size_t n;
} errs;

static int cmp_abs(const void *a, const void *b)
{
    double x = fabs(*(const double *)a), y = fabs(*(const double *)b);
    return x < y ? -1 : x > y;
}

static void stats(double *v, size_t n, double *median, double *p90, double *max)
{
    qsort(v, n, sizeof *v, cmp_abs);
    *median = fabs(v[n / 2]);
    *p90 = fabs(v[(n * 9) / 10]);
    *max = fabs(v[n - 1]);
}

/* Prints one row per quantity and fails when a median or 90th percentile passes its bound. */
static void report(const char *what, errs *e, const double bound_median[3],
                   const double bound_p90[3])
{
    static const char *const names[3] = {"yaw", "pitch", "roll"};
    for (int q = 0; q < 3; q++) {
        double med, p90, max;
        stats(e->v[q], e->n, &med, &p90, &max);
        printf("pose-error %-22s %-5s n=%3zu median=%5.2f p90=%5.2f max=%5.2f deg\n", what,
               names[q], e->n, med, p90, max);
        if (med > bound_median[q] || p90 > bound_p90[q])
            fail_msg("%s %s: median %.2f (bound %.1f), p90 %.2f (bound %.1f)", what, names[q], med,
                     bound_median[q], p90, bound_p90[q]);
    }
}

/* In-plane rotation by theta degrees (clockwise on screen) about the centre, same canvas:
 * roll must grow by theta, yaw and pitch stay. */
static void test_rotation(void **state)
{
    (void)state;
    static const double angles[] = {-30, -15, 15, 30};
    errs e = {0};
    for (int i = 0; i < N_PHOTOS; i++) {
        fw_result orig;
        detect(photo[i], &orig);
        const fw_image *src = photo[i];
        for (size_t a = 0; a < sizeof angles / sizeof angles[0]; a++) {
            double t = angles[a] * M_PI / 180, c = cos(t), s = sin(t);
            float cx = src->width / 2.0f, cy = src->height / 2.0f;
            /* dst = R (src - centre) + centre */
            const float M[2][3] = {{(float)c, (float)-s, (float)(cx - c * cx + s * cy)},
                                   {(float)s, (float)c, (float)(cy - s * cx - c * cy)}};
            fw_image *rot = fw_image_new(src->width, src->height);
            assert_non_null(rot);
            fw_warp_affine(src, M, rot->pixels, rot->width, rot->height);
            fw_result r;
            detect(rot, &r);
            for (size_t k = 0; k < orig.n_faces; k++) {
                const fw_face *f = &orig.faces[k];
                float x = (f->bbox[0] + f->bbox[2]) / 2, y = (f->bbox[1] + f->bbox[3]) / 2;
                const fw_face *g = match(&r, M[0][0] * x + M[0][1] * y + M[0][2],
                                         M[1][0] * x + M[1][1] * y + M[1][2]);
                if (!g || e.n == MAX_SAMPLES)
                    continue;
                e.v[0][e.n] = g->quality.yaw - f->quality.yaw;
                e.v[1][e.n] = g->quality.pitch - f->quality.pitch;
                e.v[2][e.n] = wrap180(g->quality.roll - f->quality.roll - angles[a]);
                e.n++;
            }
            fw_result_clear(&r);
            fw_image_free(rot);
        }
        fw_result_clear(&orig);
    }
    assert_true(e.n >= 60); /* most of the 22 faces x 4 angles are found again */
    /* measured (docs/quality.md): medians 2.6 / 3.6 / 1.3, p90 10.0 / 9.3 / 5.4 */
    const double med[3] = {4, 5, 2.5}, p90[3] = {14, 13, 8};
    report("rotation +-15,+-30", &e, med, p90);
}

/* Mirror image: yaw and roll change sign, pitch stays. */
static void test_mirror(void **state)
{
    (void)state;
    errs e = {0};
    for (int i = 0; i < N_PHOTOS; i++) {
        const fw_image *src = photo[i];
        fw_image *m = fw_image_new(src->width, src->height);
        assert_non_null(m);
        for (int y = 0; y < src->height; y++)
            for (int x = 0; x < src->width; x++)
                memcpy(m->pixels + ((size_t)y * src->width + (src->width - 1 - x)) * 3,
                       src->pixels + ((size_t)y * src->width + x) * 3, 3);
        fw_result orig, r;
        detect(src, &orig);
        detect(m, &r);
        for (size_t k = 0; k < orig.n_faces; k++) {
            const fw_face *f = &orig.faces[k];
            float x = (f->bbox[0] + f->bbox[2]) / 2, y = (f->bbox[1] + f->bbox[3]) / 2;
            const fw_face *g = match(&r, (float)src->width - x, y);
            if (!g || e.n == MAX_SAMPLES)
                continue;
            e.v[0][e.n] = g->quality.yaw + f->quality.yaw;
            e.v[1][e.n] = g->quality.pitch - f->quality.pitch;
            e.v[2][e.n] = wrap180(g->quality.roll + f->quality.roll);
            e.n++;
        }
        fw_result_clear(&orig);
        fw_result_clear(&r);
        fw_image_free(m);
    }
    assert_true(e.n >= 18);
    /* measured: medians 2.9 / 3.1 / 1.5, p90 5.5 / 5.8 / 3.3 */
    const double med[3] = {4.5, 4.5, 2.5}, p90[3] = {9, 9, 6};
    report("mirror", &e, med, p90);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_mirror),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
