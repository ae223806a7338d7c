/* Image -> model input tensors: bilinear resize and letterbox with the normalisation fused,
 * writing planar CHW floats in one pass.
 *
 * Sampling is pixel-centre aligned: destination pixel d of an axis resized from m to n
 * samples the source at (d + 0.5) * m / n - 0.5, clamped to [0, m - 1]. The per-column
 * taps are tabulated once per call (in fixed-size chunks, so nothing is allocated); the
 * per-row taps are computed once per row. On SSE2 targets four destination pixels are
 * produced at a time, horizontal weights quantised to 1/16384 (an error below 0.01 of a
 * grey level); elsewhere, and at the right edge, plain float code does the same. */
#include "core/preprocess.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if defined(__SSE2__) && !defined(FW_NO_SIMD)
#include <emmintrin.h>
#define FW_PRE_SSE2 1
#endif

#define TAP_CHUNK 512
#define WBITS 14

#define GRAY_R 0.299f
#define GRAY_G 0.587f
#define GRAY_B 0.114f

typedef struct tap {
    int32_t o0, o1; /* byte offsets of the two source columns within a row (x * 3) */
    float w;        /* weight of the second column */
    int32_t wpair;  /* the two weights as int16 (low: first) scaled by 2^WBITS */
} tap;

/* Source position of destination index d within [0, len) of an axis, as the first of two
 * neighbours (i0, i1 = i0 + 1, or i0 at the edges) and the weight of the second. */
static void axis_pos(int d, float ratio, int len, int *i0, int *i1, float *w)
{
    float s = ((float)d + 0.5f) * ratio - 0.5f;
    if (!(s > 0.0f)) {
        *i0 = *i1 = 0;
        *w = 0.0f;
        return;
    }
    if (s >= (float)(len - 1)) {
        *i0 = *i1 = len - 1;
        *w = 0.0f;
        return;
    }
    int i = (int)s; /* s > 0: truncation is floor */
    *i0 = i;
    *i1 = i + 1;
    *w = s - (float)i;
}

/* Column taps for destination columns d0 .. d0 + n - 1 of a rectangle starting at column x0,
 * len wide, in an image img_w wide. Returns how many leading taps allow 4-byte loads at
 * both columns without reading past the end of a row. */
static int build_taps(tap *t, int n, int d0, float ratio, int x0, int len, int img_w)
{
    int n_fast = 0;
    for (int i = 0; i < n; i++) {
        int a, b;
        float w;
        axis_pos(d0 + i, ratio, len, &a, &b, &w);
        t[i].o0 = (x0 + a) * 3;
        t[i].o1 = (x0 + b) * 3;
        t[i].w = w;
        const int wq = (int)lrintf(w * (float)(1 << WBITS));
        t[i].wpair = (int32_t)(((uint32_t)wq << 16) | (uint32_t)((1 << WBITS) - wq));
        /* taps are monotonic, so the safe ones form a prefix */
        if (x0 + b <= img_w - 2)
            n_fast = i + 1;
    }
    return n_fast;
}

#ifdef FW_PRE_SSE2
static inline __m128i load_px(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtsi32_si128(v);
}

/* a * (1 - w) + b * w for the 4 bytes at a and at b, as 4 int32 scaled by 2^WBITS. */
static inline __m128i hlerp(const uint8_t *a, const uint8_t *b, __m128i w)
{
    const __m128i z = _mm_setzero_si128();
    const __m128i ab = _mm_unpacklo_epi8(load_px(a), load_px(b));
    return _mm_madd_epi16(_mm_unpacklo_epi8(ab, z), w);
}
#endif

/* One destination row from source rows r0, r1 (weight wy on r1): v * k + c into q0, q1, q2,
 * or gray into q0 when gray is nonzero. */
static void resample_row(const uint8_t *r0, const uint8_t *r1, float wy, const tap *t, int n,
                         int n_fast, float k, float c, int gray, float *restrict q0,
                         float *restrict q1, float *restrict q2)
{
    int i = 0;
#ifdef FW_PRE_SSE2
    const float s = k / (float)(1 << WBITS);
    const __m128 A = _mm_set1_ps((1.0f - wy) * s), B = _mm_set1_ps(wy * s);
    const __m128 C = _mm_set1_ps(c);
    for (; i + 4 <= n_fast; i += 4) {
        __m128 v[4];
        for (int j = 0; j < 4; j++) {
            const tap *tp = &t[i + j];
            const __m128i w = _mm_set1_epi32(tp->wpair);
            const __m128 top = _mm_cvtepi32_ps(hlerp(r0 + tp->o0, r0 + tp->o1, w));
            const __m128 bot = _mm_cvtepi32_ps(hlerp(r1 + tp->o0, r1 + tp->o1, w));
            v[j] = _mm_add_ps(_mm_add_ps(_mm_mul_ps(top, A), _mm_mul_ps(bot, B)), C);
        }
        /* v[j] = (R, G, B, next R) of pixel i + j: transpose into planes */
        const __m128 t0 = _mm_unpacklo_ps(v[0], v[1]); /* R0 R1 G0 G1 */
        const __m128 t1 = _mm_unpacklo_ps(v[2], v[3]); /* R2 R3 G2 G3 */
        const __m128 t2 = _mm_unpackhi_ps(v[0], v[1]); /* B0 B1 .. .. */
        const __m128 t3 = _mm_unpackhi_ps(v[2], v[3]); /* B2 B3 .. .. */
        const __m128 R = _mm_movelh_ps(t0, t1), G = _mm_movehl_ps(t1, t0);
        const __m128 Bl = _mm_movelh_ps(t2, t3);
        if (gray) {
            const __m128 y = _mm_add_ps(
                _mm_add_ps(_mm_mul_ps(R, _mm_set1_ps(GRAY_R)), _mm_mul_ps(G, _mm_set1_ps(GRAY_G))),
                _mm_mul_ps(Bl, _mm_set1_ps(GRAY_B)));
            _mm_storeu_ps(q0 + i, y);
        } else {
            _mm_storeu_ps(q0 + i, R);
            _mm_storeu_ps(q1 + i, G);
            _mm_storeu_ps(q2 + i, Bl);
        }
    }
#else
    (void)n_fast;
#endif
    for (; i < n; i++) {
        const uint8_t *a = r0 + t[i].o0, *b = r0 + t[i].o1;
        const uint8_t *e = r1 + t[i].o0, *f = r1 + t[i].o1;
        const float wx = t[i].w;
        float v[3];
        for (int ch = 0; ch < 3; ch++) {
            const float u = (float)a[ch] + ((float)b[ch] - (float)a[ch]) * wx;
            const float l = (float)e[ch] + ((float)f[ch] - (float)e[ch]) * wx;
            v[ch] = (u + (l - u) * wy) * k + c;
        }
        if (gray) {
            q0[i] = GRAY_R * v[0] + GRAY_G * v[1] + GRAY_B * v[2];
        } else {
            q0[i] = v[0];
            q1[i] = v[1];
            q2[i] = v[2];
        }
    }
}

void fw_pre_resample(const fw_image *img, const int rect[4], int out_w, int out_h, float rx,
                     float ry, float k, float c, int gray, float *dst, int dst_stride, size_t plane)
{
    const size_t stride = (size_t)img->width * 3;
    tap taps[TAP_CHUNK];
    for (int xs = 0; xs < out_w; xs += TAP_CHUNK) {
        const int xn = out_w - xs < TAP_CHUNK ? out_w - xs : TAP_CHUNK;
        const int n_fast = build_taps(taps, xn, xs, rx, rect[0], rect[2], img->width);
        for (int y = 0; y < out_h; y++) {
            int ya, yb;
            float wy;
            axis_pos(y, ry, rect[3], &ya, &yb, &wy);
            const uint8_t *r0 = img->pixels + (size_t)(rect[1] + ya) * stride;
            const uint8_t *r1 = img->pixels + (size_t)(rect[1] + yb) * stride;
            float *q = dst + (size_t)y * (size_t)dst_stride + (size_t)xs;
            resample_row(r0, r1, wy, taps, xn, n_fast, k, c, gray, q, q + plane, q + 2 * plane);
        }
    }
}

static void fill(float *p, size_t n, float v)
{
    for (size_t i = 0; i < n; i++)
        p[i] = v;
}

void fw_pre_resize_chw(const fw_image *img, int dst_w, int dst_h, float mean, float std, float *dst)
{
    if (!dst || dst_w <= 0 || dst_h <= 0)
        return;
    const size_t plane = (size_t)dst_w * (size_t)dst_h;
    const float k = 1.0f / std, c = -mean / std;
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0) {
        fill(dst, 3 * plane, c);
        return;
    }
    const int rect[4] = {0, 0, img->width, img->height};
    fw_pre_resample(img, rect, dst_w, dst_h, (float)img->width / (float)dst_w,
                    (float)img->height / (float)dst_h, k, c, 0, dst, dst_w, plane);
}

float fw_pre_letterbox_chw(const fw_image *img, int dst_w, int dst_h, float mean, float std,
                           float *dst)
{
    if (!dst || dst_w <= 0 || dst_h <= 0)
        return 1.0f;
    const size_t plane = (size_t)dst_w * (size_t)dst_h;
    const float k = 1.0f / std, c = -mean / std;
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0) {
        fill(dst, 3 * plane, c);
        return 1.0f;
    }
    /* The limiting axis fills the destination exactly; the other is scaled by the same
     * factor and rounded to whole pixels. */
    float scale;
    int rw, rh;
    if ((long long)img->width * dst_h >= (long long)img->height * dst_w) {
        scale = (float)dst_w / (float)img->width;
        rw = dst_w;
        rh = (int)lroundf((float)img->height * scale);
    } else {
        scale = (float)dst_h / (float)img->height;
        rh = dst_h;
        rw = (int)lroundf((float)img->width * scale);
    }
    rw = rw < 1 ? 1 : rw > dst_w ? dst_w : rw;
    rh = rh < 1 ? 1 : rh > dst_h ? dst_h : rh;
    float *p[3] = {dst, dst + plane, dst + 2 * plane};
    /* Both axes use exactly 1 / scale so that the returned scale maps every point back. */
    const int rect[4] = {0, 0, img->width, img->height};
    fw_pre_resample(img, rect, rw, rh, 1.0f / scale, 1.0f / scale, k, c, 0, dst, dst_w, plane);
    for (int ch = 0; ch < 3; ch++) {
        if (rw < dst_w)
            for (int y = 0; y < rh; y++)
                fill(p[ch] + (size_t)y * dst_w + rw, (size_t)(dst_w - rw), c);
        fill(p[ch] + (size_t)rh * dst_w, (size_t)(dst_h - rh) * (size_t)dst_w, c);
    }
    return scale;
}

void fw_pre_rgb_to_chw(const uint8_t *rgb, int w, int h, float mean, float std, float *dst)
{
    if (!rgb || !dst || w <= 0 || h <= 0)
        return;
    const size_t n = (size_t)w * (size_t)h;
    const float k = 1.0f / std, c = -mean / std;
    float *restrict q0 = dst, *restrict q1 = dst + n, *restrict q2 = dst + 2 * n;
    for (size_t i = 0; i < n; i++) {
        q0[i] = (float)rgb[3 * i] * k + c;
        q1[i] = (float)rgb[3 * i + 1] * k + c;
        q2[i] = (float)rgb[3 * i + 2] * k + c;
    }
}
