/* Detector post-processing: Ultra-Light and SCRFD output decoding, IoU and NMS. */
#include "core/detect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

float fw_iou(const float a[4], const float b[4])
{
    float iw = fminf(a[2], b[2]) - fmaxf(a[0], b[0]);
    float ih = fminf(a[3], b[3]) - fmaxf(a[1], b[1]);
    if (!(iw > 0.0f) || !(ih > 0.0f))
        return 0.0f;
    float inter = iw * ih;
    float area_a = (a[2] - a[0]) * (a[3] - a[1]);
    float area_b = (b[2] - b[0]) * (b[3] - b[1]);
    float uni = area_a + area_b - inter;
    if (!(uni > 0.0f))
        return 0.0f;
    return inter / uni;
}

/* Stable descending sort by score. Small inputs (the usual case) use insertion sort; larger
 * ones a bottom-up merge sort, falling back to insertion sort if the buffer cannot be
 * allocated. NaN scores never reach here from the decoders; they would sort last. */
static int score_before(float a, float b)
{
    /* a strictly before b; NaN counts as lowest */
    return a > b || (!isnan(a) && isnan(b));
}

static void insertion_sort(fw_det *d, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        if (!score_before(d[i].score, d[i - 1].score))
            continue;
        fw_det t = d[i];
        size_t j = i;
        while (j > 0 && score_before(t.score, d[j - 1].score)) {
            d[j] = d[j - 1];
            j--;
        }
        d[j] = t;
    }
}

static void sort_by_score(fw_det *d, size_t n)
{
    if (n <= 32) {
        insertion_sort(d, n);
        return;
    }
    fw_det *buf = malloc(n * sizeof *buf);
    if (!buf) {
        insertion_sort(d, n);
        return;
    }
    fw_det *src = d, *dst = buf;
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                dst[k++] = score_before(src[j].score, src[i].score) ? src[j++] : src[i++];
            while (i < mid)
                dst[k++] = src[i++];
            while (j < hi)
                dst[k++] = src[j++];
        }
        fw_det *t = src;
        src = dst;
        dst = t;
    }
    if (src != d)
        memcpy(d, src, n * sizeof *d);
    free(buf);
}

size_t fw_nms(fw_det *dets, size_t n, float iou)
{
    if (!dets || n == 0)
        return 0;
    sort_by_score(dets, n);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        int suppressed = 0;
        for (size_t k = 0; k < kept; k++) {
            if (fw_iou(dets[k].box, dets[i].box) > iou) {
                suppressed = 1;
                break;
            }
        }
        if (!suppressed) {
            if (kept != i)
                dets[kept] = dets[i];
            kept++;
        }
    }
    return kept;
}

/* ---- bounded candidate list ------------------------------------------------------------
 * Decoders append into out[0..cap). When more candidates pass the threshold than fit, the
 * list becomes a min-heap on score so that the cap highest-scoring ones are kept. */

typedef struct det_sink {
    fw_det *out;
    size_t cap, n;
    int heap;
} det_sink;

static void heap_down(fw_det *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].score < h[m].score)
            m = l;
        if (r < n && h[r].score < h[m].score)
            m = r;
        if (m == i)
            return;
        fw_det t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void sink_push(det_sink *s, const fw_det *d)
{
    if (s->cap == 0)
        return;
    if (s->n < s->cap) {
        s->out[s->n++] = *d;
        return;
    }
    if (!s->heap) {
        for (size_t i = s->n / 2; i-- > 0;)
            heap_down(s->out, s->n, i);
        s->heap = 1;
    }
    if (d->score > s->out[0].score) {
        s->out[0] = *d;
        heap_down(s->out, s->n, 0);
    }
}

static int finite4(const float b[4])
{
    return isfinite(b[0]) && isfinite(b[1]) && isfinite(b[2]) && isfinite(b[3]);
}

size_t fw_ultralight_decode(const float *scores, const float *boxes, size_t n_anchors,
                            float threshold, int img_w, int img_h, fw_det *out, size_t cap)
{
    if (!scores || !boxes || !out || img_w <= 0 || img_h <= 0)
        return 0;
    det_sink s = {out, cap, 0, 0};
    const float fw = (float)img_w, fh = (float)img_h;
    for (size_t i = 0; i < n_anchors; i++) {
        float sc = scores[2 * i + 1];
        if (!(sc >= threshold))
            continue;
        const float *b = boxes + 4 * i;
        fw_det d;
        memset(&d, 0, sizeof d);
        d.score = sc;
        d.box[0] = fminf(fmaxf(b[0] * fw, 0.0f), fw);
        d.box[1] = fminf(fmaxf(b[1] * fh, 0.0f), fh);
        d.box[2] = fminf(fmaxf(b[2] * fw, 0.0f), fw);
        d.box[3] = fminf(fmaxf(b[3] * fh, 0.0f), fh);
        if (!finite4(b) || !(d.box[2] > d.box[0]) || !(d.box[3] > d.box[1]))
            continue;
        sink_push(&s, &d);
    }
    return s.n;
}

size_t fw_scrfd_decode(const fw_scrfd_level *levels, size_t n_levels, int in_w, int in_h,
                       int anchors, float threshold, float scale, fw_det *out, size_t cap)
{
    if (!levels || !out || in_w <= 0 || in_h <= 0 || anchors <= 0 || !(scale > 0.0f))
        return 0;
    det_sink s = {out, cap, 0, 0};
    for (size_t l = 0; l < n_levels; l++) {
        const fw_scrfd_level *lv = &levels[l];
        if (!lv->scores || !lv->bbox || lv->stride <= 0)
            continue;
        const int st = lv->stride, gw = in_w / st, gh = in_h / st;
        const float fs = (float)st;
        size_t idx = 0;
        for (int y = 0; y < gh; y++) {
            for (int x = 0; x < gw; x++) {
                const float cx = (float)(x * st), cy = (float)(y * st);
                for (int a = 0; a < anchors; a++, idx++) {
                    float sc = lv->scores[idx];
                    if (!(sc >= threshold))
                        continue;
                    const float *b = lv->bbox + 4 * idx;
                    fw_det d;
                    memset(&d, 0, sizeof d);
                    d.score = sc;
                    d.box[0] = (cx - b[0] * fs) / scale;
                    d.box[1] = (cy - b[1] * fs) / scale;
                    d.box[2] = (cx + b[2] * fs) / scale;
                    d.box[3] = (cy + b[3] * fs) / scale;
                    if (!finite4(d.box))
                        continue;
                    if (lv->kps) {
                        const float *k = lv->kps + 10 * idx;
                        for (int p = 0; p < 5; p++) {
                            d.kps[p][0] = (cx + k[2 * p] * fs) / scale;
                            d.kps[p][1] = (cy + k[2 * p + 1] * fs) / scale;
                        }
                        d.has_kps = 1;
                    }
                    sink_push(&s, &d);
                }
            }
        }
    }
    return s.n;
}
