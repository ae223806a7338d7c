/* 5-point similarity alignment onto the ArcFace template, affine warping, and the vector
 * helpers for embeddings. */
#include "core/align.h"

#include <math.h>
#include <string.h>

#include "facework/facework.h"

#if defined(__SSE2__) && !defined(FW_NO_SIMD)
#include <emmintrin.h>
#define FW_ALIGN_SSE2 1
#endif

const float fw_arcface_template[5][2] = {
    {38.2946f, 51.6963f}, {73.5318f, 51.5014f}, {56.0252f, 71.7366f},
    {41.5493f, 92.3655f}, {70.7299f, 92.2041f},
};

/* Least squares over dst ~ [a -b; b a] src + t. With both point sets centred (x_i from src,
 * y_i from dst) the translation separates and the normal equations give
 *   a = sum(x_i . y_i) / sum|x_i|^2,   b = sum(x_i X y_i) / sum|x_i|^2
 * (dot and 2-D cross products); then t = mean(dst) - [a -b; b a] mean(src). This is the
 * Umeyama solution restricted to proper rotations (scale = hypot(a, b) >= 0). */
int fw_similarity_estimate(const float src[][2], const float dst[][2], int n, float M[2][3])
{
    if (!src || !dst || !M || n < 1)
        return -1;
    double msx = 0, msy = 0, mdx = 0, mdy = 0;
    for (int i = 0; i < n; i++) {
        msx += src[i][0];
        msy += src[i][1];
        mdx += dst[i][0];
        mdy += dst[i][1];
    }
    msx /= n;
    msy /= n;
    mdx /= n;
    mdy /= n;
    double ss = 0, dot = 0, cross = 0;
    for (int i = 0; i < n; i++) {
        const double xx = src[i][0] - msx, xy = src[i][1] - msy;
        const double yx = dst[i][0] - mdx, yy = dst[i][1] - mdy;
        ss += xx * xx + xy * xy;
        dot += xx * yx + xy * yy;
        cross += xx * yy - xy * yx;
    }
    if (!(ss > 0.0) || !isfinite(ss) || !isfinite(dot) || !isfinite(cross))
        return -1;
    const double a = dot / ss, b = cross / ss;
    M[0][0] = (float)a;
    M[0][1] = (float)-b;
    M[0][2] = (float)(mdx - (a * msx - b * msy));
    M[1][0] = (float)b;
    M[1][1] = (float)a;
    M[1][2] = (float)(mdy - (b * msx + a * msy));
    return 0;
}

int fw_affine_invert(const float M[2][3], float inv[2][3])
{
    const double det = (double)M[0][0] * M[1][1] - (double)M[0][1] * M[1][0];
    if (det == 0.0 || !isfinite(det))
        return -1;
    const double i00 = M[1][1] / det, i01 = -M[0][1] / det;
    const double i10 = -M[1][0] / det, i11 = M[0][0] / det;
    inv[0][0] = (float)i00;
    inv[0][1] = (float)i01;
    inv[0][2] = (float)(-(i00 * M[0][2] + i01 * M[1][2]));
    inv[1][0] = (float)i10;
    inv[1][1] = (float)i11;
    inv[1][2] = (float)(-(i10 * M[0][2] + i11 * M[1][2]));
    return 0;
}

static inline uint8_t round_u8(float v)
{
    v += 0.5f;
    return v <= 0.0f ? 0 : v >= 255.0f ? 255 : (uint8_t)v;
}

#ifdef FW_ALIGN_SSE2
static inline __m128 load_px(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    const __m128i z = _mm_setzero_si128();
    const __m128i b = _mm_unpacklo_epi8(_mm_cvtsi32_si128(v), z);
    return _mm_cvtepi32_ps(_mm_unpacklo_epi16(b, z));
}
#endif

/* Bilinear sample at (x0 + wx, y0 + wy), x0 in [-1, W - 1], y0 in [-1, H - 1], written to
 * q[0..3); neighbours outside the image count as 0. room4: q[3] may be scribbled on. */
static inline void sample(const fw_image *img, int x0, int y0, float wx, float wy, uint8_t *q,
                          int room4)
{
    const int W = img->width, H = img->height;
    const size_t stride = (size_t)W * 3;
    (void)room4; /* only the SSE2 path uses it */
    if (x0 >= 0 && y0 >= 0 && x0 + 1 < W && y0 + 1 < H) {
        const uint8_t *a = img->pixels + (size_t)y0 * stride + (size_t)x0 * 3;
        const uint8_t *c = a + stride;
#ifdef FW_ALIGN_SSE2
        if (x0 + 2 < W) {
            /* 4-byte loads stay inside the row */
            const __m128 vx = _mm_set1_ps(wx), vy = _mm_set1_ps(wy);
            const __m128 p00 = load_px(a), p01 = load_px(a + 3);
            const __m128 p10 = load_px(c), p11 = load_px(c + 3);
            const __m128 t = _mm_add_ps(p00, _mm_mul_ps(_mm_sub_ps(p01, p00), vx));
            const __m128 u = _mm_add_ps(p10, _mm_mul_ps(_mm_sub_ps(p11, p10), vx));
            const __m128 v = _mm_add_ps(t, _mm_mul_ps(_mm_sub_ps(u, t), vy));
            /* values lie in [0, 255]: + 0.5 and truncation round half up */
            __m128i r = _mm_cvttps_epi32(_mm_add_ps(v, _mm_set1_ps(0.5f)));
            r = _mm_packs_epi32(r, r);
            const int32_t px = _mm_cvtsi128_si32(_mm_packus_epi16(r, r));
            if (room4)
                memcpy(q, &px, 4); /* the 4th byte is the next pixel's, written later */
            else
                memcpy(q, &px, 3); /* little-endian: R, G, B are the low bytes */
            return;
        }
#endif
        for (int ch = 0; ch < 3; ch++) {
            const float t = (float)a[ch] + ((float)a[ch + 3] - (float)a[ch]) * wx;
            const float u = (float)c[ch] + ((float)c[ch + 3] - (float)c[ch]) * wx;
            q[ch] = round_u8(t + (u - t) * wy);
        }
        return;
    }
    float acc[3] = {0, 0, 0};
    for (int j = 0; j < 2; j++) {
        const int yy = y0 + j;
        if (yy < 0 || yy >= H)
            continue;
        const float wyj = j ? wy : 1.0f - wy;
        for (int i = 0; i < 2; i++) {
            const int xx = x0 + i;
            if (xx < 0 || xx >= W)
                continue;
            const float w = wyj * (i ? wx : 1.0f - wx);
            const uint8_t *p = img->pixels + (size_t)yy * stride + (size_t)xx * 3;
            acc[0] += w * (float)p[0];
            acc[1] += w * (float)p[1];
            acc[2] += w * (float)p[2];
        }
    }
    q[0] = round_u8(acc[0]);
    q[1] = round_u8(acc[1]);
    q[2] = round_u8(acc[2]);
}

void fw_warp_affine(const fw_image *img, const float M[2][3], uint8_t *dst, int dst_w, int dst_h)
{
    if (!dst || dst_w <= 0 || dst_h <= 0)
        return;
    const size_t total = (size_t)dst_w * (size_t)dst_h * 3;
    float inv[2][3];
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0 || !M ||
        fw_affine_invert(M, inv)) {
        memset(dst, 0, total);
        return;
    }
    const float fW = (float)img->width, fH = (float)img->height;
    for (int y = 0; y < dst_h; y++) {
        const float bx = inv[0][1] * (float)y + inv[0][2];
        const float by = inv[1][1] * (float)y + inv[1][2];
        uint8_t *q = dst + (size_t)y * (size_t)dst_w * 3;
        for (int x = 0; x < dst_w; x++, q += 3) {
            const float sx = bx + inv[0][0] * (float)x;
            const float sy = by + inv[1][0] * (float)x;
            /* also rejects NaN; samples within a pixel of the border still get a share */
            if (!(sx > -1.0f && sx < fW && sy > -1.0f && sy < fH)) {
                q[0] = q[1] = q[2] = 0;
                continue;
            }
            /* s + 1 > 0, so truncation is floor */
            const int x0 = (int)(sx + 1.0f) - 1, y0 = (int)(sy + 1.0f) - 1;
            sample(img, x0, y0, sx - (float)x0, sy - (float)y0, q, x + 1 < dst_w || y + 1 < dst_h);
        }
    }
}

void fw_align_face(const fw_image *img, const float landmarks[5][2], uint8_t *crop112)
{
    if (!crop112)
        return;
    float M[2][3];
    if (!landmarks || fw_similarity_estimate(landmarks, fw_arcface_template, 5, M)) {
        memset(crop112, 0, (size_t)FW_ALIGNED_SIZE * FW_ALIGNED_SIZE * 3);
        return;
    }
    fw_warp_affine(img, M, crop112, FW_ALIGNED_SIZE, FW_ALIGNED_SIZE);
}

void fw_l2_normalize(float *v, size_t n)
{
    if (!v)
        return;
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (double)v[i] * v[i];
    if (!(ss > 0.0) || !isfinite(ss))
        return;
    const float k = (float)(1.0 / sqrt(ss));
    for (size_t i = 0; i < n; i++)
        v[i] *= k;
}

float fw_cosine(const float *a, const float *b, size_t dim)
{
    if (!a || !b)
        return 0.0f;
    double s = 0.0;
    for (size_t i = 0; i < dim; i++)
        s += (double)a[i] * b[i];
    return (float)s;
}
