#include "core/quality.h"

#include <math.h>
#include <spng.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "core/align.h"

/* ------------------------------------------------------------------------------------ */
/* sharpness                                                                            */

/* OpenCV's RGB2GRAY in fixed point (coefficients scaled by 2^14, rounded). */
static inline uint8_t gray_of(const uint8_t *p)
{
    return (uint8_t)((p[0] * 4899u + p[1] * 9617u + p[2] * 1868u + 8192u) >> 14);
}

/* BORDER_REFLECT_101 index into [0, n). */
static inline int reflect101(int i, int n)
{
    if (n == 1)
        return 0;
    if (i < 0)
        return -i;
    if (i >= n)
        return 2 * n - 2 - i;
    return i;
}

double fw_sharpness_rgb(const uint8_t *rgb, size_t stride, int x0, int y0, int w, int h)
{
    if (!rgb || w <= 0 || h <= 0 || x0 < 0 || y0 < 0)
        return 0.0;
    uint8_t *buf = malloc(3 * (size_t)w);
    if (!buf)
        return NAN;
    /* rows y-1, y, y+1 are distinct mod 3: slot r % 3 caches gray row r */
    int tag[3] = {-1, -1, -1};
    int64_t s = 0, s2 = 0;
    for (int y = 0; y < h; y++) {
        const int want[3] = {reflect101(y - 1, h), y, reflect101(y + 1, h)};
        const uint8_t *r[3];
        for (int k = 0; k < 3; k++) {
            int slot = want[k] % 3;
            uint8_t *dst = buf + (size_t)slot * w;
            if (tag[slot] != want[k]) {
                const uint8_t *src = rgb + (size_t)(y0 + want[k]) * stride + (size_t)x0 * 3;
                for (int x = 0; x < w; x++)
                    dst[x] = gray_of(src + 3 * x);
                tag[slot] = want[k];
            }
            r[k] = dst;
        }
        const uint8_t *up = r[0], *c = r[1], *dn = r[2];
        for (int x = 0; x < w; x++) {
            int xl = x > 0 ? x - 1 : reflect101(-1, w);
            int xr = x + 1 < w ? x + 1 : reflect101(w, w);
            int l = up[x] + dn[x] + c[xl] + c[xr] - 4 * c[x];
            s += l;
            s2 += (int64_t)l * l;
        }
    }
    free(buf);
    const double n = (double)w * (double)h;
    const double mean = (double)s / n;
    double var = (double)s2 / n - mean * mean;
    return var > 0 ? var : 0.0;
}

/* ------------------------------------------------------------------------------------ */
/* pose                                                                                 */

/* x, y: the ArcFace template (a frontal face); z: depth behind the nose tip, from average
 * adult proportions (eye centres ~18 mm, mouth corners ~22 mm behind the nose tip, at the
 * template's 0.56 px per mm for a 63 mm interpupillary distance). */
const float fw_pose_model[5][3] = {
    {38.2946f, 51.6963f, 10.0f}, {73.5318f, 51.5014f, 10.0f}, {56.0252f, 71.7366f, 0.0f},
    {41.5493f, 92.3655f, 12.3f}, {70.7299f, 92.2041f, 12.3f},
};

/* The model centred on its mean, and the inverse of its 3x3 scatter matrix. */
typedef struct pose_model {
    double X[5][3];
    double Minv[3][3];
} pose_model;

static int invert3(const double m[3][3], double inv[3][3])
{
    double c00 = m[1][1] * m[2][2] - m[1][2] * m[2][1];
    double c01 = m[1][2] * m[2][0] - m[1][0] * m[2][2];
    double c02 = m[1][0] * m[2][1] - m[1][1] * m[2][0];
    double det = m[0][0] * c00 + m[0][1] * c01 + m[0][2] * c02;
    if (fabs(det) < 1e-12)
        return -1;
    inv[0][0] = c00 / det;
    inv[0][1] = (m[0][2] * m[2][1] - m[0][1] * m[2][2]) / det;
    inv[0][2] = (m[0][1] * m[1][2] - m[0][2] * m[1][1]) / det;
    inv[1][0] = c01 / det;
    inv[1][1] = (m[0][0] * m[2][2] - m[0][2] * m[2][0]) / det;
    inv[1][2] = (m[0][2] * m[1][0] - m[0][0] * m[1][2]) / det;
    inv[2][0] = c02 / det;
    inv[2][1] = (m[0][1] * m[2][0] - m[0][0] * m[2][1]) / det;
    inv[2][2] = (m[0][0] * m[1][1] - m[0][1] * m[1][0]) / det;
    return 0;
}

static void pose_model_build(pose_model *pm)
{
    double mean[3] = {0, 0, 0};
    for (int i = 0; i < 5; i++)
        for (int c = 0; c < 3; c++)
            mean[c] += fw_pose_model[i][c] / 5.0;
    double M[3][3] = {{0}};
    for (int i = 0; i < 5; i++) {
        for (int c = 0; c < 3; c++)
            pm->X[i][c] = fw_pose_model[i][c] - mean[c];
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                M[a][b] += pm->X[i][a] * pm->X[i][b];
    }
    invert3(M, pm->Minv); /* the model is not planar: never singular */
}

static double deg(double rad)
{
    return rad * (180.0 / M_PI);
}

int fw_pose_estimate(const float lm[5][2], float *yaw, float *pitch, float *roll)
{
    pose_model pm; /* about a hundred flops: cheaper than sharing it between threads */
    pose_model_build(&pm);
    *yaw = *pitch = *roll = 0.0f;
    double mx = 0, my = 0;
    for (int i = 0; i < 5; i++) {
        if (!isfinite(lm[i][0]) || !isfinite(lm[i][1]))
            return -1;
        mx += lm[i][0] / 5.0;
        my += lm[i][1] / 5.0;
    }
    /* least-squares affine camera: A = (P X^T) (X X^T)^-1, P the centred points */
    double B[2][3] = {{0}};
    for (int i = 0; i < 5; i++)
        for (int c = 0; c < 3; c++) {
            B[0][c] += (lm[i][0] - mx) * pm.X[i][c];
            B[1][c] += (lm[i][1] - my) * pm.X[i][c];
        }
    double A[2][3];
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 3; c++)
            A[r][c] = B[r][0] * pm.Minv[0][c] + B[r][1] * pm.Minv[1][c] + B[r][2] * pm.Minv[2][c];
    /* nearest matrix with orthonormal rows: (A A^T)^(-1/2) A */
    double n00 = 0, n01 = 0, n11 = 0;
    for (int c = 0; c < 3; c++) {
        n00 += A[0][c] * A[0][c];
        n01 += A[0][c] * A[1][c];
        n11 += A[1][c] * A[1][c];
    }
    double det = n00 * n11 - n01 * n01;
    if (!(det > 1e-12 * (n00 + n11) * (n00 + n11)) || !isfinite(det))
        return -1;
    double sd = sqrt(det), t = sqrt(n00 + n11 + 2.0 * sd);
    double s00 = (n00 + sd) / t, s01 = n01 / t, s11 = (n11 + sd) / t; /* sqrt(A A^T) */
    double sdet = s00 * s11 - s01 * s01;
    double i00 = s11 / sdet, i01 = -s01 / sdet, i11 = s00 / sdet;
    double R[3][3];
    for (int c = 0; c < 3; c++) {
        R[0][c] = i00 * A[0][c] + i01 * A[1][c];
        R[1][c] = i01 * A[0][c] + i11 * A[1][c];
    }
    R[2][0] = R[0][1] * R[1][2] - R[0][2] * R[1][1];
    R[2][1] = R[0][2] * R[1][0] - R[0][0] * R[1][2];
    R[2][2] = R[0][0] * R[1][1] - R[0][1] * R[1][0];
    /* R = Rz(roll) Rx(b) Ry(a): the head turns about its vertical axis, then nods, then
     * tilts in the image plane */
    double sb = R[2][1] > 1 ? 1 : R[2][1] < -1 ? -1 : R[2][1];
    double a = atan2(-R[2][0], R[2][2]);
    double b = asin(sb);
    double g = atan2(-R[0][1], R[1][1]);
    *yaw = (float)deg(-a);   /* a > 0 moves the nose to image left */
    *pitch = (float)deg(-b); /* b > 0 moves the nose down */
    *roll = (float)deg(g);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* thresholds and scores                                                                */

typedef struct preset {
    const char *name;
    fw_quality_thresholds t;
} preset;

/* min size, min sharpness, max yaw, max pitch, min score (the application's presets) */
static const preset PRESETS[] = {
    {"none", {0.0f, 0.0f, 90.0f, 90.0f, 0.0f}},
    {"ingest", {80.0f, 80.0f, 25.0f, 25.0f, 0.60f}},
    {"enroll", {64.0f, 30.0f, 30.0f, 30.0f, 0.40f}},
    {"enrol", {64.0f, 30.0f, 30.0f, 30.0f, 0.40f}},
    {"verify", {80.0f, 60.0f, 25.0f, 25.0f, 0.55f}},
    {"search", {32.0f, 30.0f, 45.0f, 45.0f, 0.30f}},
};

fw_err fw_quality_preset(const char *name, fw_quality_thresholds *t)
{
    for (size_t i = 0; name && t && i < sizeof PRESETS / sizeof PRESETS[0]; i++)
        if (strcmp(name, PRESETS[i].name) == 0) {
            *t = PRESETS[i].t;
            return FW_OK;
        }
    return FW_ERR_INVALID_ARGUMENT;
}

static double clamp01(double v)
{
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

float fw_quality_score(float sharpness, float yaw, float pitch, float size,
                       const fw_quality_thresholds *t)
{
    double max_yaw = t->max_yaw > 0 ? t->max_yaw : 90.0;
    double max_pitch = t->max_pitch > 0 ? t->max_pitch : 90.0;
    double ref = t->min_size > 112.0f ? t->min_size : 112.0;
    double s = 0.4 * clamp01(sharpness / 500.0) + 0.2 * clamp01(1.0 - fabs(yaw) / max_yaw) +
               0.2 * clamp01(1.0 - fabs(pitch) / max_pitch) + 0.2 * clamp01(size / ref);
    return (float)s;
}

void fw_quality_judge(fw_face_quality *q, const fw_quality_thresholds *t)
{
    q->score = fw_quality_score(q->sharpness_box, q->yaw, q->pitch, q->size, t);
    unsigned r = 0;
    if (!(q->size >= t->min_size))
        r |= FW_QUALITY_SMALL;
    if (!(q->sharpness_box >= t->min_sharpness))
        r |= FW_QUALITY_BLURRY;
    if (!(fabsf(q->yaw) <= t->max_yaw))
        r |= FW_QUALITY_YAW;
    if (!(fabsf(q->pitch) <= t->max_pitch))
        r |= FW_QUALITY_PITCH;
    if (!(q->score >= t->min_quality))
        r |= FW_QUALITY_LOW;
    q->reasons = r;
    q->usable = r == 0;
}

const char *fw_quality_reason_name(unsigned bit)
{
    switch (bit) {
    case FW_QUALITY_SMALL:
        return "size";
    case FW_QUALITY_BLURRY:
        return "sharpness";
    case FW_QUALITY_YAW:
        return "yaw";
    case FW_QUALITY_PITCH:
        return "pitch";
    case FW_QUALITY_LOW:
        return "score";
    default:
        return NULL;
    }
}

void fw_quality_explain(const fw_face_quality *q, const fw_quality_thresholds *t, char *buf,
                        size_t cap)
{
    if (!buf || cap == 0)
        return;
    buf[0] = '\0';
    size_t n = 0;
    for (unsigned bit = 1; bit < (1u << FW_QUALITY__REASONS) && n < cap; bit <<= 1) {
        if (!(q->reasons & bit))
            continue;
        const char *sep = n ? "; " : "";
        int w = 0;
        switch (bit) {
        case FW_QUALITY_SMALL:
            w = snprintf(buf + n, cap - n, "%ssize %.0f < %.0f px", sep, q->size, t->min_size);
            break;
        case FW_QUALITY_BLURRY:
            w = snprintf(buf + n, cap - n, "%ssharpness %.1f < %.1f", sep, q->sharpness_box,
                         t->min_sharpness);
            break;
        case FW_QUALITY_YAW:
            w = snprintf(buf + n, cap - n, "%s|yaw| %.1f > %.1f deg", sep, fabsf(q->yaw),
                         t->max_yaw);
            break;
        case FW_QUALITY_PITCH:
            w = snprintf(buf + n, cap - n, "%s|pitch| %.1f > %.1f deg", sep, fabsf(q->pitch),
                         t->max_pitch);
            break;
        default:
            w = snprintf(buf + n, cap - n, "%sscore %.2f < %.2f", sep, q->score, t->min_quality);
            break;
        }
        if (w < 0)
            return;
        n += (size_t)w;
    }
}

/* ------------------------------------------------------------------------------------ */
/* crops                                                                                */

int fw_crop_region(const float box[4], float margin, int w, int h, int region[4])
{
    double bw = (double)box[2] - box[0], bh = (double)box[3] - box[1];
    if (!(bw > 0) || !(bh > 0) || !(margin >= 0) || w <= 0 || h <= 0)
        return -1;
    /* a thousandth of a pixel of slack: 0.2f * 100 is not exactly 20 */
    const double eps = 1e-3;
    double x0 = floor(box[0] - margin * bw + eps), x1 = ceil(box[2] + margin * bw - eps);
    double y0 = floor(box[1] - margin * bh + eps), y1 = ceil(box[3] + margin * bh - eps);
    x0 = x0 < 0 ? 0 : x0 > w ? w : x0;
    x1 = x1 < 0 ? 0 : x1 > w ? w : x1;
    y0 = y0 < 0 ? 0 : y0 > h ? h : y0;
    y1 = y1 < 0 ? 0 : y1 > h ? h : y1;
    if (x1 - x0 < 1 || y1 - y0 < 1)
        return -1;
    region[0] = (int)x0;
    region[1] = (int)y0;
    region[2] = (int)x1;
    region[3] = (int)y1;
    return 0;
}

void fw_resize_area(const uint8_t *src, size_t stride, int sw, int sh, uint8_t *dst, int dw, int dh)
{
    for (int y = 0; y < dh; y++) {
        int ya = (int)((int64_t)y * sh / dh), yb = (int)((int64_t)(y + 1) * sh / dh);
        if (yb <= ya)
            yb = ya + 1;
        for (int x = 0; x < dw; x++) {
            int xa = (int)((int64_t)x * sw / dw), xb = (int)((int64_t)(x + 1) * sw / dw);
            if (xb <= xa)
                xb = xa + 1;
            uint32_t acc[3] = {0, 0, 0};
            for (int yy = ya; yy < yb; yy++) {
                const uint8_t *p = src + (size_t)yy * stride + (size_t)xa * 3;
                for (int xx = xa; xx < xb; xx++, p += 3) {
                    acc[0] += p[0];
                    acc[1] += p[1];
                    acc[2] += p[2];
                }
            }
            uint32_t n = (uint32_t)((yb - ya) * (xb - xa));
            uint8_t *o = dst + ((size_t)y * dw + x) * 3;
            for (int c = 0; c < 3; c++)
                o[c] = (uint8_t)((acc[c] + n / 2) / n);
        }
    }
}

static fw_err encode_jpeg(const uint8_t *rgb, size_t stride, int w, int h, int quality,
                          uint8_t **out, size_t *len, fw_error *err)
{
    tjhandle tj = tjInitCompress();
    if (!tj)
        return fw_error_set(err, FW_ERR_NOMEM, "JPEG encoder: %s", tjGetErrorStr());
    unsigned char *buf = NULL;
    unsigned long n = 0;
    /* 4:2:0, as libjpeg's and OpenCV's defaults */
    int rc = tjCompress2(tj, rgb, w, (int)stride, h, TJPF_RGB, &buf, &n, TJSAMP_420, quality, 0);
    if (rc != 0) {
        fw_error_set(err, FW_ERR_INTERNAL, "JPEG encoder: %s", tjGetErrorStr2(tj));
        tjFree(buf);
        tjDestroy(tj);
        return FW_ERR_INTERNAL;
    }
    tjDestroy(tj);
    /* hand out plain malloc'd memory: callers free() */
    *out = malloc(n);
    if (!*out) {
        tjFree(buf);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    memcpy(*out, buf, n);
    *len = n;
    tjFree(buf);
    return FW_OK;
}

static fw_err encode_png(const uint8_t *rgb, size_t stride, int w, int h, uint8_t **out,
                         size_t *len, fw_error *err)
{
    const size_t row = (size_t)w * 3;
    uint8_t *packed = NULL;
    if (stride != row) {
        packed = malloc(row * (size_t)h);
        if (!packed)
            return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
        for (int y = 0; y < h; y++)
            memcpy(packed + row * (size_t)y, rgb + stride * (size_t)y, row);
        rgb = packed;
    }
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    if (!ctx) {
        free(packed);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    struct spng_ihdr ihdr = {.width = (uint32_t)w,
                             .height = (uint32_t)h,
                             .bit_depth = 8,
                             .color_type = SPNG_COLOR_TYPE_TRUECOLOR};
    int rc = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    if (!rc)
        rc = spng_set_ihdr(ctx, &ihdr);
    if (!rc)
        rc = spng_encode_image(ctx, rgb, row * (size_t)h, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    free(packed);
    if (rc) {
        spng_ctx_free(ctx);
        return fw_error_set(err, FW_ERR_INTERNAL, "PNG encoder: %s", spng_strerror(rc));
    }
    size_t n = 0;
    void *png = spng_get_png_buffer(ctx, &n, &rc);
    spng_ctx_free(ctx);
    if (!png)
        return fw_error_set(err, FW_ERR_INTERNAL, "PNG encoder: %s", spng_strerror(rc));
    *out = png; /* malloc'd by libspng; the caller frees it */
    *len = n;
    return FW_OK;
}

fw_err fw_encode_rgb(const uint8_t *rgb, size_t stride, int w, int h, fw_image_format format,
                     int quality, uint8_t **out, size_t *len, fw_error *err)
{
    if (!rgb || !out || !len || w <= 0 || h <= 0 || stride < (size_t)w * 3)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_encode_rgb: bad arguments");
    *out = NULL;
    *len = 0;
    if (format == FW_FORMAT_JPEG) {
        if (quality < 1 || quality > 100)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "JPEG quality %d not in 1..100",
                                quality);
        return encode_jpeg(rgb, stride, w, h, quality, out, len, err);
    }
    if (format == FW_FORMAT_PNG)
        return encode_png(rgb, stride, w, h, out, len, err);
    return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "crops are encoded as JPEG or PNG");
}
