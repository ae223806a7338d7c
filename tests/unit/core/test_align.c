/* Unit tests for the similarity estimate, affine inversion and warping, fw_align_face, and
 * the embedding vector helpers. Expected values are worked out by hand in the comments;
 * images are built on the stack, independent of the image module. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/align.h"
#include "facework/facework.h"

static void assert_M(const float M[2][3], float m00, float m01, float m02, float m10, float m11,
                     float m12, float eps)
{
    assert_float_equal(M[0][0], m00, eps);
    assert_float_equal(M[0][1], m01, eps);
    assert_float_equal(M[0][2], m02, eps);
    assert_float_equal(M[1][0], m10, eps);
    assert_float_equal(M[1][1], m11, eps);
    assert_float_equal(M[1][2], m12, eps);
}

static fw_image wrap(uint8_t *px, int w, int h)
{
    fw_image img = {w, h, w, h, px};
    return img;
}

/* Deterministic pseudo-random bytes (LCG), so that no two neighbours are alike. */
static void fill_noise(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
}

/* ---- similarity estimate ------------------------------------------------------------ */

static void test_similarity_identity(void **state)
{
    (void)state;
    float M[2][3];
    assert_int_equal(fw_similarity_estimate(fw_arcface_template, fw_arcface_template, 5, M), 0);
    assert_M((const float(*)[3])M, 1, 0, 0, 0, 1, 0, 1e-5f);
}

/* Scale 1.5, rotation 30 degrees, translation (10, -5): a = 1.5 cos 30 = 1.2990381,
 * b = 1.5 sin 30 = 0.75, M = [a -b 10; b a -5]. Applied exactly to the template, the
 * estimate must give M back. */
static void test_similarity_recovers_known_transform(void **state)
{
    (void)state;
    const double a = 1.5 * cos(M_PI / 6), b = 1.5 * sin(M_PI / 6);
    float dst[5][2];
    for (int i = 0; i < 5; i++) {
        const double x = fw_arcface_template[i][0], y = fw_arcface_template[i][1];
        dst[i][0] = (float)(a * x - b * y + 10);
        dst[i][1] = (float)(b * x + a * y - 5);
    }
    float M[2][3];
    assert_int_equal(fw_similarity_estimate(fw_arcface_template, (const float(*)[2])dst, 5, M), 0);
    assert_M((const float(*)[3])M, 1.2990381f, -0.75f, 10, 0.75f, 1.2990381f, -5, 1e-4f);
}

/* Two points, exact fit. src (0,0) (1,0) -> dst (1,1) (1,3).
 * Centres: src (0.5, 0), dst (1, 2); centred src (-.5,0) (.5,0), dst (0,-1) (0,1).
 * sum|x|^2 = .5; dot = 0; cross = xx*yy - xy*yx = (-.5)(-1) + (.5)(1) = 1.
 * a = 0, b = 2: M = [0 -2 tx; 2 0 ty], t = (1,2) - (0*.5 - 2*0, 2*.5 + 0) = (1, 1).
 * Check: (0,0) -> (1,1); (1,0) -> (1, 3). */
static void test_similarity_two_points(void **state)
{
    (void)state;
    const float src[2][2] = {{0, 0}, {1, 0}}, dst[2][2] = {{1, 1}, {1, 3}};
    float M[2][3];
    assert_int_equal(fw_similarity_estimate(src, dst, 2, M), 0);
    assert_M((const float(*)[3])M, 0, -2, 1, 2, 0, 1, 1e-6f);
}

/* Three points, least squares (no exact similarity exists):
 * src (0,0) (2,0) (0,2), dst (0,0) (2,0) (0,4).
 * src mean (2/3, 2/3): x = (-2/3,-2/3) (4/3,-2/3) (-2/3,4/3); sum|x|^2 = 8/9+20/9+20/9 = 16/3.
 * dst mean (2/3, 4/3): y = (-2/3,-4/3) (4/3,-4/3) (-2/3,8/3).
 * dot = 12/9 + 24/9 + 36/9 = 8            -> a = 8 / (16/3) = 1.5
 * cross = 4/9 - 8/9 - 8/9 = -4/3         -> b = -1/4
 * t = (2/3, 4/3) - (1.5*2/3 + .25*2/3, -.25*2/3 + 1.5*2/3) = (2/3 - 7/6, 4/3 - 5/6)
 *   = (-1/2, 1/2).  M = [1.5 .25 -.5; -.25 1.5 .5].
 * And it is a minimum: nudging any parameter raises the squared error. */
static double sq_error(const float src[][2], const float dst[][2], int n, const float M[2][3])
{
    double e = 0;
    for (int i = 0; i < n; i++) {
        double u = M[0][0] * src[i][0] + M[0][1] * src[i][1] + M[0][2] - dst[i][0];
        double v = M[1][0] * src[i][0] + M[1][1] * src[i][1] + M[1][2] - dst[i][1];
        e += u * u + v * v;
    }
    return e;
}

static void test_similarity_three_points_least_squares(void **state)
{
    (void)state;
    const float src[3][2] = {{0, 0}, {2, 0}, {0, 2}}, dst[3][2] = {{0, 0}, {2, 0}, {0, 4}};
    float M[2][3];
    assert_int_equal(fw_similarity_estimate(src, dst, 3, M), 0);
    assert_M((const float(*)[3])M, 1.5f, 0.25f, -0.5f, -0.25f, 1.5f, 0.5f, 1e-6f);
    const double e0 = sq_error(src, dst, 3, (const float(*)[3])M);
    /* perturb (a, b, tx, ty) keeping the similarity structure */
    const float d = 0.01f;
    for (int p = 0; p < 8; p++) {
        float N[2][3];
        memcpy(N, M, sizeof N);
        const float s = (p & 1) ? -d : d;
        switch (p / 2) {
        case 0:
            N[0][0] += s;
            N[1][1] += s;
            break;
        case 1:
            N[1][0] += s;
            N[0][1] -= s;
            break;
        case 2:
            N[0][2] += s;
            break;
        default:
            N[1][2] += s;
            break;
        }
        assert_true(sq_error(src, dst, 3, (const float(*)[3])N) > e0);
    }
}

/* A mirrored point set has no proper-rotation fit; the estimate must not reflect.
 * src (-1,0) (1,0) (0,1), dst (1,0) (-1,0) (0,1) (x mirrored). Both means (0, 1/3);
 * x = (-1,-1/3) (1,-1/3) (0,2/3), y = (1,-1/3) (-1,-1/3) (0,2/3); sum|x|^2 = 8/3;
 * dot = (-1 + 1/9)*2 + 4/9 = -4/3 -> a = -1/2; cross = 2/3 - 2/3 + 0 = 0 -> b = 0;
 * t = (0, 1/3) - (-1/2)(0, 1/3) = (0, 1/2). M = [-.5 0 0; 0 -.5 .5]: a half-scale
 * 180-degree rotation, determinant +1/4. */
static void test_similarity_no_reflection(void **state)
{
    (void)state;
    const float src[3][2] = {{-1, 0}, {1, 0}, {0, 1}}, dst[3][2] = {{1, 0}, {-1, 0}, {0, 1}};
    float M[2][3];
    assert_int_equal(fw_similarity_estimate(src, dst, 3, M), 0);
    assert_M((const float(*)[3])M, -0.5f, 0, 0, 0, -0.5f, 0.5f, 1e-6f);
    assert_true(M[0][0] * M[1][1] - M[0][1] * M[1][0] > 0);
}

static void test_similarity_degenerate(void **state)
{
    (void)state;
    const float same[3][2] = {{5, 5}, {5, 5}, {5, 5}};
    float M[2][3];
    assert_int_equal(fw_similarity_estimate(same, fw_arcface_template, 3, M), -1);
    assert_int_equal(fw_similarity_estimate(same, same, 0, M), -1);
}

/* ---- affine inversion and warping ------------------------------------------------- */

/* [2 0 4; 0 4 -8]^-1 = [.5 0 -2; 0 .25 2]; a rank-1 matrix is refused. */
static void test_affine_invert(void **state)
{
    (void)state;
    const float M[2][3] = {{2, 0, 4}, {0, 4, -8}};
    float inv[2][3];
    assert_int_equal(fw_affine_invert(M, inv), 0);
    assert_M((const float(*)[3])inv, 0.5f, 0, -2, 0, 0.25f, 2, 1e-6f);
    /* a rotation + scale round trip: inv(inv(R)) == R */
    const float R[2][3] = {{0.6f, -0.8f, 3}, {0.8f, 0.6f, -7}};
    float Ri[2][3], Rii[2][3];
    assert_int_equal(fw_affine_invert(R, Ri), 0);
    assert_int_equal(fw_affine_invert((const float(*)[3])Ri, Rii), 0);
    assert_M((const float(*)[3])Rii, 0.6f, -0.8f, 3, 0.8f, 0.6f, -7, 1e-5f);
    const float S[2][3] = {{1, 2, 0}, {2, 4, 0}};
    assert_int_equal(fw_affine_invert(S, inv), -1);
}

/* M = [1 0 2; 0 1 1] moves image content by (+2, +1): dst(x, y) = src(x - 2, y - 1)
 * exactly (integer sample positions), and 0 where that falls outside. */
static void test_warp_integer_translation(void **state)
{
    (void)state;
    enum { W = 8, H = 6 };
    uint8_t src[W * H * 3], dst[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++)
                src[(y * W + x) * 3 + c] = (uint8_t)(x * 20 + y * 3 + c + 1);
    fw_image img = wrap(src, W, H);
    const float M[2][3] = {{1, 0, 2}, {0, 1, 1}};
    fw_warp_affine(&img, M, dst, W, H);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) {
                const int sx = x - 2, sy = y - 1;
                const int want = (sx >= 0 && sy >= 0) ? src[(sy * W + sx) * 3 + c] : 0;
                assert_int_equal(dst[(y * W + x) * 3 + c], want);
            }
}

/* 90-degree rotation of a 4 x 3 image into 3 x 4: image (x, y) -> dst (2 - y, x), i.e.
 * M = [0 -1 2; 1 0 0]; so dst(u, v) = src(v, 2 - u). */
static void test_warp_rotate90(void **state)
{
    (void)state;
    enum { W = 4, H = 3 };
    uint8_t src[W * H * 3], dst[H * W * 3];
    fill_noise(src, sizeof src, 7);
    fw_image img = wrap(src, W, H);
    const float M[2][3] = {{0, -1, 2}, {1, 0, 0}};
    fw_warp_affine(&img, M, dst, H, W);
    for (int v = 0; v < W; v++)
        for (int u = 0; u < H; u++)
            for (int c = 0; c < 3; c++)
                assert_int_equal(dst[(v * H + u) * 3 + c], src[((2 - u) * W + v) * 3 + c]);
}

/* A 2 x 2 image sampled at its centre (0.5, 0.5), M = [1 0 -.5; 0 1 -.5]:
 *   R: 10 20 / 30 41 -> (10 + 20 + 30 + 41) / 4 = 25.25 -> 25
 *   G:  0 100 / 100 200 -> 100
 *   B:  1 2 / 3 5 -> 2.75 -> 3
 * and at (0.5, 0) (M = [1 0 -.5; 0 1 0]): R (10 + 20) / 2 = 15, G 50, B 1.5 -> 2. */
static void test_warp_bilinear_midpoint(void **state)
{
    (void)state;
    uint8_t src[2 * 2 * 3] = {10, 0, 1, 20, 100, 2, 30, 100, 3, 41, 200, 5};
    fw_image img = wrap(src, 2, 2);
    uint8_t out[3];
    const float M[2][3] = {{1, 0, -0.5f}, {0, 1, -0.5f}};
    fw_warp_affine(&img, M, out, 1, 1);
    assert_int_equal(out[0], 25);
    assert_int_equal(out[1], 100);
    assert_int_equal(out[2], 3);
    const float N[2][3] = {{1, 0, -0.5f}, {0, 1, 0}};
    fw_warp_affine(&img, N, out, 1, 1);
    assert_int_equal(out[0], 15);
    assert_int_equal(out[1], 50);
    assert_int_equal(out[2], 2);
}

/* Outside the image the samples are 0: shifting by 100 px leaves nothing. Half a pixel
 * past the edge, the outside neighbour counts as 0: M = [1 0 .5; 0 1 0] on the 2 x 2
 * image above, 3 x 1 output, samples x = -.5, .5, 1.5 on row 0 (R 10, 20):
 * .5*0 + .5*10 = 5; (10+20)/2 = 15; .5*20 + .5*0 = 10. */
static void test_warp_outside_is_zero(void **state)
{
    (void)state;
    uint8_t src[2 * 2 * 3] = {10, 0, 1, 20, 100, 2, 30, 100, 3, 41, 200, 5};
    fw_image img = wrap(src, 2, 2);
    uint8_t out[4 * 4 * 3];
    memset(out, 0xAB, sizeof out);
    const float far[2][3] = {{1, 0, 100}, {0, 1, 100}};
    fw_warp_affine(&img, far, out, 4, 4);
    for (size_t i = 0; i < sizeof out; i++)
        assert_int_equal(out[i], 0);
    const float half[2][3] = {{1, 0, 0.5f}, {0, 1, 0}};
    fw_warp_affine(&img, half, out, 3, 1);
    assert_int_equal(out[0], 5);
    assert_int_equal(out[3], 15);
    assert_int_equal(out[6], 10);
    /* a singular M cannot be inverted: all zeros */
    memset(out, 0xAB, sizeof out);
    const float sing[2][3] = {{0, 0, 0}, {0, 0, 0}};
    fw_warp_affine(&img, sing, out, 4, 4);
    for (size_t i = 0; i < sizeof out; i++)
        assert_int_equal(out[i], 0);
}

/* Noise image, a rotation by 0.3 rad, scale 0.8 and a shift that puts part of the output
 * outside the image: every pixel is within one grey level of the definition evaluated in
 * double precision (sample at inv(M) * (x, y), bilinear, neighbours outside = 0). */
static void test_warp_matches_reference(void **state)
{
    (void)state;
    enum { W = 90, H = 70, D = 112 };
    static uint8_t src[W * H * 3], dst[D * D * 3];
    fill_noise(src, sizeof src, 31337);
    fw_image img = wrap(src, W, H);
    const double a = 0.8 * cos(0.3), b = 0.8 * sin(0.3);
    const float M[2][3] = {{(float)a, (float)-b, 20}, {(float)b, (float)a, -10}};
    fw_warp_affine(&img, M, dst, D, D);
    float inv[2][3];
    assert_int_equal(fw_affine_invert(M, inv), 0);
    int inside = 0, outside = 0;
    for (int y = 0; y < D; y++)
        for (int x = 0; x < D; x++) {
            const double sx = (double)inv[0][0] * x + (double)inv[0][1] * y + inv[0][2];
            const double sy = (double)inv[1][0] * x + (double)inv[1][1] * y + inv[1][2];
            const int x0 = (int)floor(sx), y0 = (int)floor(sy);
            const double wx = sx - x0, wy = sy - y0;
            for (int c = 0; c < 3; c++) {
                double v = 0;
                for (int j = 0; j < 2; j++)
                    for (int i = 0; i < 2; i++) {
                        const int xx = x0 + i, yy = y0 + j;
                        if (xx < 0 || yy < 0 || xx >= W || yy >= H)
                            continue;
                        v += (i ? wx : 1 - wx) * (j ? wy : 1 - wy) *
                             src[((size_t)yy * W + xx) * 3 + c];
                    }
                const int want = (int)floor(v + 0.5);
                const int got = dst[((size_t)y * D + x) * 3 + c];
                assert_true(abs(got - want) <= 1);
            }
            if (sx >= 0 && sy >= 0 && sx <= W - 1 && sy <= H - 1)
                inside++;
            else
                outside++;
        }
    /* the case covers both the interior and the border / outside paths */
    assert_true(inside > 1000);
    assert_true(outside > 1000);
}

/* ---- fw_align_face ----------------------------------------------------------------- */

/* Landmarks exactly on the template: M is the identity (to float precision) and the
 * 112 x 112 image comes back pixel for pixel, borders included. */
static void test_align_face_identity(void **state)
{
    (void)state;
    enum { S = FW_ALIGNED_SIZE };
    static uint8_t src[S * S * 3], crop[S * S * 3];
    fill_noise(src, sizeof src, 12345);
    fw_image img = wrap(src, S, S);
    fw_align_face(&img, fw_arcface_template, crop);
    assert_memory_equal(crop, src, sizeof src);
}

/* The same face twice as large and offset: a 2x nearest-neighbour enlargement of the
 * 112 x 112 picture P, placed at (30, 20) in a 300 x 260 image. In pixel-centre
 * coordinates P's pixel x sits between big pixels 2x and 2x + 1, at 2x + 0.5, so the
 * landmarks are 2 * template + (30.5, 20.5). Each crop sample lands between two equal big
 * pixels, so the crop must equal P exactly. */
static void test_align_face_scaled_offset(void **state)
{
    (void)state;
    enum { S = FW_ALIGNED_SIZE, W = 300, H = 260, OX = 30, OY = 20 };
    static uint8_t p[S * S * 3], big[W * H * 3], crop[S * S * 3];
    fill_noise(p, sizeof p, 99);
    memset(big, 0, sizeof big);
    for (int y = 0; y < 2 * S; y++)
        for (int x = 0; x < 2 * S; x++)
            memcpy(big + ((size_t)(y + OY) * W + (x + OX)) * 3, p + ((y / 2) * S + x / 2) * 3, 3);
    float lm[5][2];
    for (int i = 0; i < 5; i++) {
        lm[i][0] = 2 * fw_arcface_template[i][0] + OX + 0.5f;
        lm[i][1] = 2 * fw_arcface_template[i][1] + OY + 0.5f;
    }
    fw_image img = wrap(big, W, H);
    fw_align_face(&img, (const float(*)[2])lm, crop);
    assert_memory_equal(crop, p, sizeof p);
}

/* Degenerate landmarks (all equal) give a black crop rather than garbage. */
static void test_align_face_degenerate(void **state)
{
    (void)state;
    enum { S = FW_ALIGNED_SIZE };
    static uint8_t src[S * S * 3], crop[S * S * 3];
    fill_noise(src, sizeof src, 5);
    memset(crop, 0xAB, sizeof crop);
    fw_image img = wrap(src, S, S);
    const float lm[5][2] = {{50, 50}, {50, 50}, {50, 50}, {50, 50}, {50, 50}};
    fw_align_face(&img, lm, crop);
    for (size_t i = 0; i < sizeof crop; i++)
        assert_int_equal(crop[i], 0);
}

/* ---- vectors ------------------------------------------------------------------------ */

static void test_l2_normalize(void **state)
{
    (void)state;
    float v[2] = {3, 4}; /* norm 5 -> (0.6, 0.8) */
    fw_l2_normalize(v, 2);
    assert_float_equal(v[0], 0.6f, 1e-6);
    assert_float_equal(v[1], 0.8f, 1e-6);
    float z[3] = {0, 0, 0};
    fw_l2_normalize(z, 3);
    assert_true(z[0] == 0 && z[1] == 0 && z[2] == 0);
    fw_l2_normalize(v, 0); /* nothing to do, no crash */
    assert_float_equal(v[0], 0.6f, 1e-6);
}

/* (0.6, 0.8) . (0.8, 0.6) = 0.48 + 0.48 = 0.96; with itself 1; with (-0.8, 0.6) 0; with
 * its negation -1. */
static void test_cosine(void **state)
{
    (void)state;
    const float a[2] = {0.6f, 0.8f}, b[2] = {0.8f, 0.6f}, c[2] = {-0.8f, 0.6f};
    const float d[2] = {-0.6f, -0.8f};
    assert_float_equal(fw_cosine(a, b, 2), 0.96f, 1e-6);
    assert_float_equal(fw_cosine(a, a, 2), 1.0f, 1e-6);
    assert_float_equal(fw_cosine(a, c, 2), 0.0f, 1e-6);
    assert_float_equal(fw_cosine(a, d, 2), -1.0f, 1e-6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_similarity_identity),
        cmocka_unit_test(test_similarity_recovers_known_transform),
        cmocka_unit_test(test_similarity_two_points),
        cmocka_unit_test(test_similarity_three_points_least_squares),
        cmocka_unit_test(test_similarity_no_reflection),
        cmocka_unit_test(test_similarity_degenerate),
        cmocka_unit_test(test_affine_invert),
        cmocka_unit_test(test_warp_integer_translation),
        cmocka_unit_test(test_warp_rotate90),
        cmocka_unit_test(test_warp_bilinear_midpoint),
        cmocka_unit_test(test_warp_outside_is_zero),
        cmocka_unit_test(test_warp_matches_reference),
        cmocka_unit_test(test_align_face_identity),
        cmocka_unit_test(test_align_face_scaled_offset),
        cmocka_unit_test(test_align_face_degenerate),
        cmocka_unit_test(test_l2_normalize),
        cmocka_unit_test(test_cosine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
