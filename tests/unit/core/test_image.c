/* Unit tests for image decoding: formats, EXIF orientation, DCT scaling, limits, corrupt
 * input, files. Every fixture is generated in-process (TurboJPEG, libspng and libwebp
 * encoders) except the sample photos in $FW_PHOTOS_DIR. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <spng.h>
#include <turbojpeg.h>
#include <webp/decode.h>
#include <webp/encode.h>

#include "core/exif.h"
#include "facework/image.h"

/* ------------------------------------------------------------------------------------ */
/* fixtures                                                                             */

typedef struct rgb {
    uint8_t r, g, b;
} rgb;

/* Twelve well separated colours for a 4 x 3 grid of flat blocks: no two blocks alike, so
 * any flip or rotation of the grid is detected. */
static const rgb PALETTE[12] = {
    {230, 20, 20}, {20, 200, 20}, {20, 20, 230}, {240, 240, 30},  {230, 30, 230}, {30, 230, 230},
    {120, 10, 10}, {10, 110, 10}, {10, 10, 120}, {250, 250, 250}, {5, 5, 5},      {128, 128, 128},
};

/* A w x h picture of gx x gy flat blocks coloured PALETTE[by * gx + bx]. */
static uint8_t *make_blocks(int w, int h, int gx, int gy)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    assert_non_null(p);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int bx = x * gx / w, by = y * gy / h;
            const rgb c = PALETTE[by * gx + bx];
            uint8_t *q = p + ((size_t)y * w + x) * 3;
            q[0] = c.r;
            q[1] = c.g;
            q[2] = c.b;
        }
    return p;
}

static uint8_t *jpeg_encode(const uint8_t *pix, int w, int h, int pf, int subsamp, int quality,
                            size_t *len)
{
    tjhandle tj = tjInitCompress();
    assert_non_null(tj);
    unsigned char *buf = NULL;
    unsigned long n = 0;
    int rc = tjCompress2(tj, pix, w, 0, h, pf, &buf, &n, subsamp, quality, 0);
    if (rc != 0)
        fail_msg("tjCompress2: %s", tjGetErrorStr2(tj));
    tjDestroy(tj);
    uint8_t *out = malloc(n);
    assert_non_null(out);
    memcpy(out, buf, n);
    tjFree(buf);
    *len = n;
    return out;
}

static void put16(uint8_t *p, unsigned v, int big)
{
    p[big ? 0 : 1] = (uint8_t)(v >> 8);
    p[big ? 1 : 0] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v, int big)
{
    for (int i = 0; i < 4; i++)
        p[big ? 3 - i : i] = (uint8_t)(v >> (8 * i));
}

/* A minimal TIFF with IFD0 holding one entry: tag 0x0112 of `type`, `count`, `value`.
 * Returns its size (26 bytes). */
static size_t make_tiff(uint8_t *t, int big, unsigned type, uint32_t count, uint32_t value)
{
    memcpy(t, big ? "MM" : "II", 2);
    put16(t + 2, 42, big);
    put32(t + 4, 8, big);
    put16(t + 8, 1, big);
    put16(t + 10, 0x0112, big);
    put16(t + 12, type, big);
    put32(t + 14, count, big);
    memset(t + 18, 0, 4);
    if (type == 3)
        put16(t + 18, value, big);
    else
        put32(t + 18, value, big);
    put32(t + 22, 0, big);
    return 26;
}

/* jpeg with an APP1 segment holding `payload` (written after "Exif\0\0") inserted after SOI. */
static uint8_t *jpeg_with_app1(const uint8_t *jpeg, size_t len, const uint8_t *payload, size_t plen,
                               size_t *out_len)
{
    size_t seg = 2 + 6 + plen;
    assert_true(seg <= 0xFFFF);
    uint8_t *o = malloc(len + 2 + seg);
    assert_non_null(o);
    memcpy(o, jpeg, 2);
    o[2] = 0xFF;
    o[3] = 0xE1;
    o[4] = (uint8_t)(seg >> 8);
    o[5] = (uint8_t)seg;
    memcpy(o + 6, "Exif\0\0", 6);
    memcpy(o + 12, payload, plen);
    memcpy(o + 12 + plen, jpeg + 2, len - 2);
    *out_len = len + 2 + seg;
    return o;
}

static uint8_t *jpeg_with_orientation(const uint8_t *jpeg, size_t len, int orientation, int big,
                                      size_t *out_len)
{
    uint8_t t[26];
    size_t n = make_tiff(t, big, 3, 1, (uint32_t)orientation);
    return jpeg_with_app1(jpeg, len, t, n, out_len);
}

/* Stored-only deflate, no filtering (for big fixtures that must stay big and fast). */
static int g_png_store_only;

static uint8_t *png_encode(const void *pix, size_t pix_len, uint32_t w, uint32_t h,
                           uint8_t color_type, uint8_t depth, const struct spng_plte *plte,
                           const uint8_t *exif, size_t exif_len, int interlace, size_t *len)
{
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    assert_non_null(ctx);
    assert_int_equal(spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1), 0);
    if (g_png_store_only) {
        assert_int_equal(spng_set_option(ctx, SPNG_IMG_COMPRESSION_LEVEL, 0), 0);
        assert_int_equal(spng_set_option(ctx, SPNG_FILTER_CHOICE, SPNG_DISABLE_FILTERING), 0);
    }
    struct spng_ihdr ihdr = {w, h, depth, color_type, 0, 0, (uint8_t)interlace};
    assert_int_equal(spng_set_ihdr(ctx, &ihdr), 0);
    if (plte)
        assert_int_equal(spng_set_plte(ctx, (struct spng_plte *)plte), 0);
    if (exif) {
        struct spng_exif ex = {exif_len, (char *)exif};
        assert_int_equal(spng_set_exif(ctx, &ex), 0);
    }
    int rc = spng_encode_image(ctx, pix, pix_len, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    if (rc)
        fail_msg("spng_encode_image: %s", spng_strerror(rc));
    int e = 0;
    void *buf = spng_get_png_buffer(ctx, len, &e);
    assert_int_equal(e, 0);
    assert_non_null(buf);
    spng_ctx_free(ctx);
    return buf;
}

static uint8_t *webp_lossless(const uint8_t *pix, int w, int h, size_t *len)
{
    uint8_t *out = NULL;
    *len = WebPEncodeLosslessRGB(pix, w, h, w * 3, &out);
    assert_true(*len > 0);
    assert_non_null(out);
    return out; /* WebPFree */
}

static void wr32le(uint8_t *p, uint32_t v)
{
    put32(p, v, 0);
}

/* Rewraps a simple (single-chunk) WebP into the extended format: VP8X with `flags`, the image
 * chunk, then an EXIF chunk when exif is non-NULL. Caller frees. */
static uint8_t *webp_extended(const uint8_t *simple, size_t slen, int w, int h, uint8_t flags,
                              const uint8_t *exif, size_t elen, size_t *out_len)
{
    size_t img_chunks = slen - 12;
    size_t exif_chunk = exif ? 8 + elen + (elen & 1) : 0;
    size_t total = 12 + 18 + img_chunks + exif_chunk;
    uint8_t *o = calloc(1, total);
    assert_non_null(o);
    memcpy(o, "RIFF", 4);
    wr32le(o + 4, (uint32_t)(total - 8));
    memcpy(o + 8, "WEBP", 4);
    memcpy(o + 12, "VP8X", 4);
    wr32le(o + 16, 10);
    o[20] = flags;
    uint32_t cw = (uint32_t)(w - 1), ch = (uint32_t)(h - 1);
    o[24] = (uint8_t)cw;
    o[25] = (uint8_t)(cw >> 8);
    o[26] = (uint8_t)(cw >> 16);
    o[27] = (uint8_t)ch;
    o[28] = (uint8_t)(ch >> 8);
    o[29] = (uint8_t)(ch >> 16);
    memcpy(o + 30, simple + 12, img_chunks);
    if (exif) {
        uint8_t *e = o + 30 + img_chunks;
        memcpy(e, "EXIF", 4);
        wr32le(e + 4, (uint32_t)elen);
        memcpy(e + 8, exif, elen);
    }
    *out_len = total;
    return o;
}

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

/* Stored coordinates of displayed pixel (x, y) for EXIF orientation o, where sw x sh is the
 * stored size (the EXIF definition, written independently of the library's code). */
static void stored_coords(int o, int sw, int sh, int x, int y, int *sx, int *sy)
{
    switch (o) {
    case 1:
        *sx = x;
        *sy = y;
        break;
    case 2:
        *sx = sw - 1 - x;
        *sy = y;
        break;
    case 3:
        *sx = sw - 1 - x;
        *sy = sh - 1 - y;
        break;
    case 4:
        *sx = x;
        *sy = sh - 1 - y;
        break;
    case 5:
        *sx = y;
        *sy = x;
        break;
    case 6:
        *sx = y;
        *sy = sh - 1 - x;
        break;
    case 7:
        *sx = sw - 1 - y;
        *sy = sh - 1 - x;
        break;
    default:
        *sx = sw - 1 - y;
        *sy = x;
        break; /* 8 */
    }
}

/* The stored picture that a viewer shows as `up` (w x h) under orientation o. */
static uint8_t *store_for_orientation(const uint8_t *up, int w, int h, int o, int *sw, int *sh)
{
    *sw = o >= 5 ? h : w;
    *sh = o >= 5 ? w : h;
    uint8_t *s = malloc((size_t)w * h * 3);
    assert_non_null(s);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int sx, sy;
            stored_coords(o, *sw, *sh, x, y, &sx, &sy);
            memcpy(s + ((size_t)sy * *sw + sx) * 3, up + ((size_t)y * w + x) * 3, 3);
        }
    return s;
}

/* Checks that img shows the gx x gy block grid: the mean of the central half of every block is
 * within tol of its palette colour. */
static void check_blocks(const fw_image *img, int gx, int gy, int tol)
{
    assert_non_null(img);
    for (int by = 0; by < gy; by++)
        for (int bx = 0; bx < gx; bx++) {
            int x0 = bx * img->width / gx, x1 = (bx + 1) * img->width / gx;
            int y0 = by * img->height / gy, y1 = (by + 1) * img->height / gy;
            int qx = (x1 - x0) / 4, qy = (y1 - y0) / 4;
            long sum[3] = {0, 0, 0}, n = 0;
            for (int y = y0 + qy; y < y1 - qy; y++)
                for (int x = x0 + qx; x < x1 - qx; x++) {
                    const uint8_t *p = img->pixels + ((size_t)y * img->width + x) * 3;
                    for (int c = 0; c < 3; c++)
                        sum[c] += p[c];
                    n++;
                }
            assert_true(n > 0);
            const rgb e = PALETTE[by * gx + bx];
            const int want[3] = {e.r, e.g, e.b};
            for (int c = 0; c < 3; c++) {
                int got = (int)(sum[c] / n);
                if (abs(got - want[c]) > tol)
                    fail_msg("block (%d,%d) channel %d: got %d want %d (image %dx%d)", bx, by, c,
                             got, want[c], img->width, img->height);
            }
        }
}

static void expect_pixel(const fw_image *img, int x, int y, uint8_t r, uint8_t g, uint8_t b)
{
    const uint8_t *p = img->pixels + ((size_t)y * img->width + x) * 3;
    if (p[0] != r || p[1] != g || p[2] != b)
        fail_msg("pixel (%d,%d): got %u,%u,%u want %u,%u,%u", x, y, p[0], p[1], p[2], r, g, b);
}

static fw_image *decode_ok(const uint8_t *d, size_t len, const fw_decode_opts *o)
{
    fw_image *img = NULL;
    fw_error e;
    fw_err rc = fw_image_decode(d, len, o, &img, &e);
    if (rc != FW_OK)
        fail_msg("decode failed: %s: %s", fw_err_name(rc), e.message);
    assert_non_null(img);
    assert_non_null(img->pixels);
    return img;
}

static fw_err decode_err(const uint8_t *d, size_t len, const fw_decode_opts *o)
{
    fw_image *img = (fw_image *)(uintptr_t)1;
    fw_error e = {0};
    fw_err rc = fw_image_decode(d, len, o, &img, &e);
    if (rc == FW_OK)
        fw_image_free(img);
    else {
        assert_null(img);
        assert_true(e.code == rc);
        assert_true(e.message[0] != '\0');
    }
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* JPEG                                                                                 */

static void test_jpeg_rgb(void **state)
{
    (void)state;
    uint8_t *pix = make_blocks(64, 48, 4, 3);
    size_t len;
    uint8_t *jpg = jpeg_encode(pix, 64, 48, TJPF_RGB, TJSAMP_444, 95, &len);

    fw_image_info info;
    fw_error e;
    assert_int_equal(fw_image_probe(jpg, len, &info, &e), FW_OK);
    assert_int_equal(info.format, FW_FORMAT_JPEG);
    assert_int_equal(info.width, 64);
    assert_int_equal(info.height, 48);
    assert_int_equal(info.orientation, 1);

    fw_image *img = decode_ok(jpg, len, NULL);
    assert_int_equal(img->width, 64);
    assert_int_equal(img->height, 48);
    assert_int_equal(img->orig_width, 64);
    assert_int_equal(img->orig_height, 48);
    check_blocks(img, 4, 3, 10);
    fw_image_free(img);

    /* 4:2:0 too (the common camera layout), with a looser tolerance. */
    free(jpg);
    jpg = jpeg_encode(pix, 64, 48, TJPF_RGB, TJSAMP_420, 90, &len);
    img = decode_ok(jpg, len, NULL);
    check_blocks(img, 4, 3, 16);
    fw_image_free(img);
    free(jpg);
    free(pix);
}

static void test_jpeg_gray(void **state)
{
    (void)state;
    uint8_t g[32 * 16];
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 32; x++)
            g[y * 32 + x] = x < 16 ? 40 : 200;
    size_t len;
    uint8_t *jpg = jpeg_encode(g, 32, 16, TJPF_GRAY, TJSAMP_GRAY, 95, &len);
    fw_image *img = decode_ok(jpg, len, NULL);
    assert_int_equal(img->width, 32);
    assert_int_equal(img->height, 16);
    const uint8_t *l = img->pixels + (8 * 32 + 4) * 3, *r = img->pixels + (8 * 32 + 28) * 3;
    for (int c = 0; c < 3; c++) {
        assert_true(abs(l[c] - 40) <= 3);
        assert_true(abs(r[c] - 200) <= 3);
    }
    fw_image_free(img);
    free(jpg);
}

/* CMYK JPEGs (stored as YCCK by TurboJPEG) cannot be converted to RGB by libjpeg itself. */
static void test_jpeg_cmyk(void **state)
{
    (void)state;
    uint8_t *rgbp = make_blocks(64, 48, 4, 3);
    uint8_t *cmyk = malloc(64 * 48 * 4);
    assert_non_null(cmyk);
    /* Inverted CMYK with K = 255 (no black) is the RGB colour itself. */
    for (int i = 0; i < 64 * 48; i++) {
        memcpy(cmyk + 4 * i, rgbp + 3 * i, 3);
        cmyk[4 * i + 3] = 255;
    }
    size_t len;
    uint8_t *jpg = jpeg_encode(cmyk, 64, 48, TJPF_CMYK, TJSAMP_444, 95, &len);
    fw_image *img = decode_ok(jpg, len, NULL);
    assert_int_equal(img->width, 64);
    check_blocks(img, 4, 3, 12);
    fw_image_free(img);
    free(jpg);
    free(cmyk);
    free(rgbp);
}

static const char *test_data_dir(void)
{
    const char *d = getenv("FW_TEST_DATA");
    return d && *d ? d : FW_SOURCE_DIR "/tests/data";
}

/* A JPEG whose chroma sampling (Y 2x2, Cb 2x1, Cr 1x1) TurboJPEG 2.1 cannot name: its header
 * reader fails, the decoder falls back to the SOF marker (tests/data/images/README.md). */
static void test_jpeg_odd_sampling(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/images/odd_sampling.jpg", test_data_dir());
    uint8_t *data;
    size_t len;
    fw_error e;
    if (fw_read_file(path, 0, &data, &len, &e) != FW_OK)
        fail_msg("%s", e.message);
    fw_image_info info;
    assert_int_equal(fw_image_probe(data, len, &info, &e), FW_OK);
    assert_int_equal(info.format, FW_FORMAT_JPEG);
    assert_int_equal(info.width, 48);
    assert_int_equal(info.height, 32);
    fw_image *img = decode_ok(data, len, NULL);
    assert_int_equal(img->width, 48);
    assert_int_equal(img->height, 32);
    check_blocks(img, 3, 2, 12);
    fw_image_free(img);
    fw_decode_opts o = {.min_width = 20, .min_height = 10};
    img = decode_ok(data, len, &o);
    assert_int_equal(img->width, 24);
    assert_int_equal(img->height, 16);
    assert_int_equal(img->orig_width, 48);
    fw_image_free(img);
    /* cut short: still an error, not a crash */
    assert_int_equal(decode_err(data, len - 40, NULL), FW_ERR_CORRUPT);
    free(data);

    /* The thread's decoder is still good for an ordinary JPEG afterwards. */
    uint8_t *pix = make_blocks(64, 48, 4, 3);
    uint8_t *jpg = jpeg_encode(pix, 64, 48, TJPF_RGB, TJSAMP_444, 95, &len);
    img = decode_ok(jpg, len, NULL);
    check_blocks(img, 4, 3, 10);
    fw_image_free(img);
    free(jpg);
    free(pix);
}

static void test_jpeg_exif_orientations(void **state)
{
    (void)state;
    const int W = 64, H = 48;
    uint8_t *up = make_blocks(W, H, 4, 3);
    for (int big = 0; big <= 1; big++)
        for (int o = 1; o <= 8; o++) {
            int sw, sh;
            uint8_t *stored = store_for_orientation(up, W, H, o, &sw, &sh);
            size_t jlen, len;
            uint8_t *jpg = jpeg_encode(stored, sw, sh, TJPF_RGB, TJSAMP_444, 95, &jlen);
            uint8_t *exif = jpeg_with_orientation(jpg, jlen, o, big, &len);

            fw_image_info info;
            assert_int_equal(fw_image_probe(exif, len, &info, NULL), FW_OK);
            assert_int_equal(info.orientation, o);
            assert_int_equal(info.width, sw);
            assert_int_equal(info.height, sh);

            fw_image *img = decode_ok(exif, len, NULL);
            assert_int_equal(img->width, W);
            assert_int_equal(img->height, H);
            assert_int_equal(img->orig_width, W);
            assert_int_equal(img->orig_height, H);
            check_blocks(img, 4, 3, 10);
            fw_image_free(img);

            /* ignore_orientation gives the picture as stored. */
            fw_decode_opts opts = {.ignore_orientation = 1};
            img = decode_ok(exif, len, &opts);
            assert_int_equal(img->width, sw);
            assert_int_equal(img->height, sh);
            assert_int_equal(img->orig_width, sw);
            fw_image_free(img);

            free(exif);
            free(jpg);
            free(stored);
        }
    free(up);
}

static void test_jpeg_dct_scale(void **state)
{
    (void)state;
    const int W = 256, H = 192;
    uint8_t *pix = make_blocks(W, H, 4, 3);
    size_t len;
    uint8_t *jpg = jpeg_encode(pix, W, H, TJPF_RGB, TJSAMP_444, 95, &len);
    /* Only the SIMD scales 1/8, 1/4, 1/2 and 1 are used: 256 -> 32 64 128 256,
     * 192 -> 24 48 96 192. */
    static const struct {
        int min_w, min_h, want_w, want_h;
    } cases[] = {
        {0, 0, 256, 192},     {1, 1, 32, 24},       {32, 24, 32, 24},   {33, 0, 64, 48},
        {64, 48, 64, 48},     {65, 48, 128, 96},    {0, 73, 128, 96},   {100, 10, 128, 96},
        {200, 100, 256, 192}, {256, 192, 256, 192}, {257, 1, 256, 192}, {1000, 1000, 256, 192},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fw_decode_opts o = {.min_width = cases[i].min_w, .min_height = cases[i].min_h};
        fw_image *img = decode_ok(jpg, len, &o);
        if (img->width != cases[i].want_w || img->height != cases[i].want_h)
            fail_msg("min %dx%d: got %dx%d want %dx%d", cases[i].min_w, cases[i].min_h, img->width,
                     img->height, cases[i].want_w, cases[i].want_h);
        assert_int_equal(img->orig_width, W);
        assert_int_equal(img->orig_height, H);
        check_blocks(img, 4, 3, 16);
        fw_image_free(img);
    }

    /* Orientation 6: stored 256x192, shown 192x256. min 64x100 (oriented) needs a scale f
     * with 192f >= 64 and 256f >= 100: f = 1/2 -> shown 96x128. (Ignoring the rotation
     * would need 192f >= 100, i.e. f = 1.) */
    uint8_t *stored;
    int sw, sh;
    free(jpg);
    free(pix);
    pix = make_blocks(H, W, 3, 4); /* upright 192x256, 3 x 4 blocks */
    stored = store_for_orientation(pix, H, W, 6, &sw, &sh);
    assert_int_equal(sw, 256);
    uint8_t *plain = jpeg_encode(stored, sw, sh, TJPF_RGB, TJSAMP_444, 95, &len);
    size_t elen;
    jpg = jpeg_with_orientation(plain, len, 6, 1, &elen);
    fw_decode_opts o = {.min_width = 64, .min_height = 100};
    fw_image *img = decode_ok(jpg, elen, &o);
    assert_int_equal(img->width, 96);
    assert_int_equal(img->height, 128);
    assert_int_equal(img->orig_width, 192);
    assert_int_equal(img->orig_height, 256);
    check_blocks(img, 3, 4, 16);
    fw_image_free(img);
    /* min_width alone: 192f >= 40 -> f = 1/4 (48x64). */
    o = (fw_decode_opts){.min_width = 40};
    img = decode_ok(jpg, elen, &o);
    assert_int_equal(img->width, 48);
    assert_int_equal(img->height, 64);
    fw_image_free(img);
    free(jpg);
    free(plain);
    free(stored);
    free(pix);
}

/* EXIF segments with bad offsets, counts, types or values: the picture still decodes, as
 * stored (orientation 1). */
static void test_jpeg_corrupt_exif(void **state)
{
    (void)state;
    uint8_t *pix = make_blocks(64, 48, 4, 3);
    size_t jlen;
    uint8_t *jpg = jpeg_encode(pix, 64, 48, TJPF_RGB, TJSAMP_444, 95, &jlen);
    for (int variant = 0; variant < 10; variant++) {
        uint8_t t[64];
        size_t n = make_tiff(t, variant & 1, 3, 1, 6);
        switch (variant) {
        case 0: /* IFD offset far outside */
            put32(t + 4, 0xFFFFFFF0u, 0);
            break;
        case 1: /* IFD count straddles the end */
            put32(t + 4, 25, 1);
            break;
        case 2: /* huge count, entry cut short */
            put16(t + 8, 0xFFFF, 0);
            n = 20;
            break;
        case 3: /* orientation out of range */
            put16(t + 18, 9, 1);
            break;
        case 4: /* ASCII instead of SHORT */
            put16(t + 12, 2, 0);
            break;
        case 5: /* orientation 0 */
            put16(t + 18, 0, 1);
            break;
        case 6: /* bad byte order mark */
            memcpy(t, "IM", 2);
            break;
        case 7: /* IFD inside the header */
            put32(t + 4, 4, 1);
            break;
        case 8: /* TIFF header cut short */
            n = 5;
            break;
        case 9: /* wrong magic */
            put16(t + 2, 43, 1);
            break;
        }
        size_t len;
        uint8_t *bad = jpeg_with_app1(jpg, jlen, t, n, &len);
        fw_image_info info;
        assert_int_equal(fw_image_probe(bad, len, &info, NULL), FW_OK);
        if (info.orientation != 1)
            fail_msg("variant %d: orientation %d", variant, info.orientation);
        fw_image *img = decode_ok(bad, len, NULL);
        assert_int_equal(img->width, 64);
        assert_int_equal(img->height, 48);
        check_blocks(img, 4, 3, 10);
        fw_image_free(img);
        free(bad);
    }
    free(jpg);
    free(pix);
}

/* The EXIF reader on its own, with hand-written buffers. */
static void test_exif_parser(void **state)
{
    (void)state;
    uint8_t t[64];
    for (int big = 0; big <= 1; big++)
        for (int o = 1; o <= 8; o++) {
            size_t n = make_tiff(t, big, 3, 1, (uint32_t)o);
            assert_int_equal(fw__exif_orientation_tiff(t, n), o);
            /* every truncation of the structure is refused without reading past it */
            for (size_t cut = 0; cut < 22; cut++) {
                uint8_t *c = malloc(cut ? cut : 1);
                assert_non_null(c);
                memcpy(c, t, cut);
                assert_int_equal(fw__exif_orientation_tiff(c, cut), 1);
                free(c);
            }
        }
    /* LONG instead of SHORT is tolerated; SHORT with count 0 is not. */
    size_t n = make_tiff(t, 1, 4, 1, 8);
    assert_int_equal(fw__exif_orientation_tiff(t, n), 8);
    n = make_tiff(t, 0, 3, 0, 6);
    assert_int_equal(fw__exif_orientation_tiff(t, n), 1);
    /* "Exif\0\0" prefix is skipped (PNG eXIf written by some tools). */
    uint8_t p[6 + 26];
    memcpy(p, "Exif\0\0", 6);
    make_tiff(p + 6, 0, 3, 1, 3);
    assert_int_equal(fw__exif_orientation_tiff(p, sizeof p), 3);
    assert_int_equal(fw__exif_orientation_tiff(NULL, 0), 1);

    /* The tag found after other entries. */
    uint8_t m[8 + 2 + 3 * 12 + 4] = {'I', 'I', 42, 0, 8, 0, 0, 0, 3, 0};
    const uint16_t tags[3] = {0x010F, 0x0110, 0x0112};
    for (int i = 0; i < 3; i++) {
        uint8_t *ent = m + 10 + 12 * i;
        put16(ent, tags[i], 0);
        put16(ent + 2, 3, 0);
        put32(ent + 4, 1, 0);
        put16(ent + 8, 5, 0);
    }
    assert_int_equal(fw__exif_orientation_tiff(m, sizeof m), 5);

    /* JPEG marker walk: no APP1, a segment length past the end, fill bytes. */
    const uint8_t j1[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0, 0, 0xFF, 0xDA};
    assert_int_equal(fw__exif_orientation_jpeg(j1, sizeof j1), 1);
    const uint8_t j2[] = {0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF, 'E', 'x', 'i'};
    assert_int_equal(fw__exif_orientation_jpeg(j2, sizeof j2), 1);
    const uint8_t j3[] = {0xFF, 0xD8, 0xFF, 0xFF, 0xFF};
    assert_int_equal(fw__exif_orientation_jpeg(j3, sizeof j3), 1);
    const uint8_t j4[] = {0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x01};
    assert_int_equal(fw__exif_orientation_jpeg(j4, sizeof j4), 1);
    /* A truncated APP1 still yields its orientation when the IFD entry is present. */
    uint8_t j5[4 + 2 + 6 + 26] = {0xFF, 0xD8, 0xFF, 0xE1, 0x40, 0x00};
    memcpy(j5 + 6, "Exif\0\0", 6);
    make_tiff(j5 + 12, 1, 3, 1, 7);
    assert_int_equal(fw__exif_orientation_jpeg(j5, sizeof j5), 7);

    /* WebP RIFF walk: chunk sizes past the end. */
    uint8_t w1[12 + 8 + 26] = {'R', 'I', 'F', 'F', 0, 0, 0, 0, 'W', 'E', 'B', 'P'};
    wr32le(w1 + 4, sizeof w1 - 8);
    memcpy(w1 + 12, "EXIF", 4);
    wr32le(w1 + 16, 26);
    make_tiff(w1 + 20, 0, 3, 1, 2);
    assert_int_equal(fw__exif_orientation_webp(w1, sizeof w1), 2);
    memcpy(w1 + 12, "XXXX", 4);
    wr32le(w1 + 16, 0xFFFFFFF0u);
    assert_int_equal(fw__exif_orientation_webp(w1, sizeof w1), 1);
    wr32le(w1 + 4, 0xFFFFFFFFu);
    assert_int_equal(fw__exif_orientation_webp(w1, sizeof w1), 1);
}

/* ------------------------------------------------------------------------------------ */
/* PNG                                                                                  */

static void test_png_variants(void **state)
{
    (void)state;
    size_t len;
    fw_image *img;

    /* RGB8: exact colours. */
    uint8_t *pix = make_blocks(64, 48, 4, 3);
    uint8_t *png =
        png_encode(pix, 64 * 48 * 3, 64, 48, SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL, NULL, 0, 0, &len);
    fw_image_info info;
    assert_int_equal(fw_image_probe(png, len, &info, NULL), FW_OK);
    assert_int_equal(info.format, FW_FORMAT_PNG);
    assert_int_equal(info.width, 64);
    assert_int_equal(info.height, 48);
    assert_int_equal(info.orientation, 1);
    img = decode_ok(png, len, NULL);
    assert_int_equal(img->width, 64);
    assert_int_equal(img->orig_height, 48);
    assert_memory_equal(img->pixels, pix, 64 * 48 * 3);
    fw_image_free(img);
    free(png);

    /* min_width/min_height do not scale PNGs. */
    png = png_encode(pix, 64 * 48 * 3, 64, 48, SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL, NULL, 0, 1,
                     &len); /* Adam7 interlaced */
    fw_decode_opts o = {.min_width = 8, .min_height = 8};
    img = decode_ok(png, len, &o);
    assert_int_equal(img->width, 64);
    assert_memory_equal(img->pixels, pix, 64 * 48 * 3);
    fw_image_free(img);
    free(png);

    /* RGBA8: alpha dropped, colour kept. */
    uint8_t rgba[4 * 3 * 4];
    for (int i = 0; i < 12; i++) {
        rgba[4 * i] = PALETTE[i].r;
        rgba[4 * i + 1] = PALETTE[i].g;
        rgba[4 * i + 2] = PALETTE[i].b;
        rgba[4 * i + 3] = (uint8_t)(i * 20);
    }
    png = png_encode(rgba, sizeof rgba, 4, 3, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 8, NULL, NULL, 0, 0,
                     &len);
    img = decode_ok(png, len, NULL);
    assert_int_equal(img->width, 4);
    assert_int_equal(img->height, 3);
    for (int i = 0; i < 12; i++)
        expect_pixel(img, i % 4, i / 4, PALETTE[i].r, PALETTE[i].g, PALETTE[i].b);
    fw_image_free(img);
    free(png);

    /* Gray 8 and gray+alpha 8: replicated to R=G=B. */
    const uint8_t gray[6] = {0, 50, 100, 150, 200, 255};
    png = png_encode(gray, 6, 3, 2, SPNG_COLOR_TYPE_GRAYSCALE, 8, NULL, NULL, 0, 0, &len);
    img = decode_ok(png, len, NULL);
    for (int i = 0; i < 6; i++)
        expect_pixel(img, i % 3, i / 3, gray[i], gray[i], gray[i]);
    fw_image_free(img);
    free(png);
    const uint8_t ga[12] = {0, 255, 50, 0, 100, 128, 150, 1, 200, 2, 255, 3};
    png = png_encode(ga, 12, 3, 2, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, 8, NULL, NULL, 0, 0, &len);
    img = decode_ok(png, len, NULL);
    for (int i = 0; i < 6; i++)
        expect_pixel(img, i % 3, i / 3, gray[i], gray[i], gray[i]);
    fw_image_free(img);
    free(png);

    /* Gray 1-bit: 0 -> 0, 1 -> 255. Rows 0b10110000 and 0b01000000 for width 4. */
    const uint8_t g1[2] = {0xB0, 0x40};
    png = png_encode(g1, 2, 4, 2, SPNG_COLOR_TYPE_GRAYSCALE, 1, NULL, NULL, 0, 0, &len);
    img = decode_ok(png, len, NULL);
    const int bits[8] = {1, 0, 1, 1, 0, 1, 0, 0};
    for (int i = 0; i < 8; i++) {
        uint8_t v = bits[i] ? 255 : 0;
        expect_pixel(img, i % 4, i / 4, v, v, v);
    }
    fw_image_free(img);
    free(png);

    /* Palette, 8-bit and 4-bit indices. */
    struct spng_plte plte = {.n_entries = 12};
    for (int i = 0; i < 12; i++) {
        plte.entries[i].red = PALETTE[i].r;
        plte.entries[i].green = PALETTE[i].g;
        plte.entries[i].blue = PALETTE[i].b;
    }
    const uint8_t idx8[12] = {11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
    png = png_encode(idx8, 12, 4, 3, SPNG_COLOR_TYPE_INDEXED, 8, &plte, NULL, 0, 0, &len);
    img = decode_ok(png, len, NULL);
    for (int i = 0; i < 12; i++)
        expect_pixel(img, i % 4, i / 4, PALETTE[idx8[i]].r, PALETTE[idx8[i]].g, PALETTE[idx8[i]].b);
    fw_image_free(img);
    free(png);
    const uint8_t idx4[6] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xAB}; /* 4 x 3, indices 0..11 */
    png = png_encode(idx4, 6, 4, 3, SPNG_COLOR_TYPE_INDEXED, 4, &plte, NULL, 0, 0, &len);
    img = decode_ok(png, len, NULL);
    for (int i = 0; i < 12; i++)
        expect_pixel(img, i % 4, i / 4, PALETTE[i].r, PALETTE[i].g, PALETTE[i].b);
    fw_image_free(img);
    free(png);

    /* 16-bit RGB and gray: the high byte survives (0x12__ -> 0x12), which also checks the
     * byte order. Samples are host-endian for SPNG_FMT_PNG. */
    uint16_t rgb16[2 * 3] = {0x1234, 0xAB20, 0xFF3F, 0x0010, 0x8000, 0x7F3F};
    png = png_encode(rgb16, sizeof rgb16, 2, 1, SPNG_COLOR_TYPE_TRUECOLOR, 16, NULL, NULL, 0, 0,
                     &len);
    img = decode_ok(png, len, NULL);
    expect_pixel(img, 0, 0, 0x12, 0xAB, 0xFF);
    expect_pixel(img, 1, 0, 0x00, 0x80, 0x7F);
    fw_image_free(img);
    free(png);
    uint16_t g16[2] = {0x5A10, 0xC33F};
    png = png_encode(g16, sizeof g16, 1, 2, SPNG_COLOR_TYPE_GRAYSCALE, 16, NULL, NULL, 0, 0, &len);
    img = decode_ok(png, len, NULL);
    expect_pixel(img, 0, 0, 0x5A, 0x5A, 0x5A);
    expect_pixel(img, 0, 1, 0xC3, 0xC3, 0xC3);
    fw_image_free(img);
    free(png);
    uint16_t rgba16[4] = {0x2210, 0x4420, 0x6630, 0x0000};
    png = png_encode(rgba16, sizeof rgba16, 1, 1, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 16, NULL, NULL,
                     0, 0, &len);
    img = decode_ok(png, len, NULL);
    expect_pixel(img, 0, 0, 0x22, 0x44, 0x66);
    fw_image_free(img);
    free(png);
    free(pix);
}

/* PNG eXIf orientation, all eight, against hand-written results for the 3x2 picture
 *   A B C
 *   D E F
 * as a viewer shows it. */
static void test_png_exif_orientations(void **state)
{
    (void)state;
    /* A..F = PALETTE[0..5] */
    static const struct {
        int w, h;
        char px[7];
    } want[9] = {
        {0, 0, ""},       {3, 2, "ABCDEF"}, {3, 2, "CBAFED"}, {3, 2, "FEDCBA"}, {3, 2, "DEFABC"},
        {2, 3, "ADBECF"}, {2, 3, "DAEBFC"}, {2, 3, "FCEBDA"}, {2, 3, "CFBEAD"},
    };
    uint8_t pix[6 * 3];
    for (int i = 0; i < 6; i++)
        memcpy(pix + 3 * i, &PALETTE[i], 3);
    for (int o = 1; o <= 8; o++) {
        uint8_t t[26];
        size_t tn = make_tiff(t, o & 1, 3, 1, (uint32_t)o);
        size_t len;
        uint8_t *png =
            png_encode(pix, sizeof pix, 3, 2, SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL, t, tn, 0, &len);
        fw_image_info info;
        assert_int_equal(fw_image_probe(png, len, &info, NULL), FW_OK);
        assert_int_equal(info.orientation, o);
        assert_int_equal(info.width, 3);
        fw_image *img = decode_ok(png, len, NULL);
        assert_int_equal(img->width, want[o].w);
        assert_int_equal(img->height, want[o].h);
        assert_int_equal(img->orig_width, want[o].w);
        assert_int_equal(img->orig_height, want[o].h);
        for (int i = 0; i < 6; i++) {
            const rgb c = PALETTE[want[o].px[i] - 'A'];
            expect_pixel(img, i % want[o].w, i / want[o].w, c.r, c.g, c.b);
        }
        fw_image_free(img);
        free(png);
    }
}

/* png with a chunk of `type` and `body` inserted right after IHDR (valid CRC). */
static uint8_t *png_insert_chunk(const uint8_t *png, size_t len, const char *type,
                                 const uint8_t *body, size_t blen, size_t *out_len)
{
    const size_t at = 8 + 25; /* signature + IHDR chunk */
    uint8_t *o = malloc(len + 12 + blen);
    assert_non_null(o);
    memcpy(o, png, at);
    put32(o + at, (uint32_t)blen, 1);
    memcpy(o + at + 4, type, 4);
    if (blen)
        memcpy(o + at + 8, body, blen);
    put32(o + at + 8 + blen, crc32_png(o + at + 4, 4 + blen), 1);
    memcpy(o + at + 12 + blen, png + at, len - at);
    *out_len = len + 12 + blen;
    return o;
}

/* Malformed eXIf chunks (not TIFF, bad offsets, empty): the PNG still decodes, upright. */
static void test_png_bad_exif(void **state)
{
    (void)state;
    uint8_t pix[6 * 3];
    for (int i = 0; i < 6; i++)
        memcpy(pix + 3 * i, &PALETTE[i], 3);
    size_t len;
    uint8_t *png =
        png_encode(pix, sizeof pix, 3, 2, SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL, NULL, 0, 0, &len);
    uint8_t bodies[4][26];
    size_t blens[4];
    memcpy(bodies[0], "XXXXXXXXXXXX", 12); /* not a TIFF header */
    blens[0] = 12;
    blens[1] = make_tiff(bodies[1], 1, 3, 1, 6);
    put32(bodies[1] + 4, 0x7FFFFFF0u, 1); /* IFD offset far outside */
    blens[2] = make_tiff(bodies[2], 0, 3, 1, 6);
    put16(bodies[2] + 8, 500, 0); /* 500 entries announced, one present */
    blens[2] = 20;
    blens[3] = make_tiff(bodies[3], 0, 3, 1, 77); /* orientation out of range */
    for (int v = 0; v < 4; v++) {
        size_t blen;
        uint8_t *bad = png_insert_chunk(png, len, "eXIf", bodies[v], blens[v], &blen);
        fw_image_info info;
        fw_error e;
        fw_err rc = fw_image_probe(bad, blen, &info, &e);
        if (rc != FW_OK || info.orientation != 1)
            fail_msg("variant %d: probe %s '%s' orientation %d", v, fw_err_name(rc), e.message,
                     info.orientation);
        fw_image *img = decode_ok(bad, blen, NULL);
        assert_int_equal(img->width, 3);
        assert_int_equal(img->height, 2);
        assert_memory_equal(img->pixels, pix, sizeof pix);
        fw_image_free(img);
        free(bad);
    }
    /* An empty eXIf chunk (no TIFF header at all) stops libspng: decode says CORRUPT; probe,
     * which only promises the header, still reads IHDR. */
    size_t elen;
    uint8_t *empty = png_insert_chunk(png, len, "eXIf", NULL, 0, &elen);
    fw_image_info info;
    assert_int_equal(fw_image_probe(empty, elen, &info, NULL), FW_OK);
    assert_int_equal(info.width, 3);
    assert_int_equal(info.orientation, 1);
    assert_int_equal(decode_err(empty, elen, NULL), FW_ERR_CORRUPT);
    free(empty);

    /* An unknown ancillary chunk and a text chunk are skipped. */
    const uint8_t txt[] = "Comment\0hello";
    size_t blen;
    uint8_t *with_text = png_insert_chunk(png, len, "tEXt", txt, sizeof txt - 1, &blen);
    fw_image *img = decode_ok(with_text, blen, NULL);
    assert_memory_equal(img->pixels, pix, sizeof pix);
    fw_image_free(img);
    free(with_text);
    const uint8_t junk[3] = {1, 2, 3};
    uint8_t *with_junk = png_insert_chunk(png, len, "zzZz", junk, sizeof junk, &blen);
    img = decode_ok(with_junk, blen, NULL);
    fw_image_free(img);
    free(with_junk);
    free(png);
}

/* Writes a PNG signature + IHDR (with a valid CRC) for w x h RGB8, and nothing else. */
static size_t png_header_only(uint8_t *o, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    memcpy(o, sig, 8);
    put32(o + 8, 13, 1);
    memcpy(o + 12, "IHDR", 4);
    put32(o + 16, w, 1);
    put32(o + 20, h, 1);
    o[24] = 8; /* depth */
    o[25] = 2; /* truecolour */
    o[26] = o[27] = o[28] = 0;
    put32(o + 29, crc32_png(o + 12, 17), 1);
    return 33;
}

/* ------------------------------------------------------------------------------------ */
/* WebP                                                                                 */

static void test_webp(void **state)
{
    (void)state;
    uint8_t *pix = make_blocks(64, 48, 4, 3);
    size_t len;
    uint8_t *wl = webp_lossless(pix, 64, 48, &len);
    fw_image_info info;
    assert_int_equal(fw_image_probe(wl, len, &info, NULL), FW_OK);
    assert_int_equal(info.format, FW_FORMAT_WEBP);
    assert_int_equal(info.width, 64);
    assert_int_equal(info.height, 48);
    fw_image *img = decode_ok(wl, len, NULL);
    assert_int_equal(img->width, 64);
    assert_int_equal(img->height, 48);
    assert_int_equal(img->orig_width, 64);
    assert_memory_equal(img->pixels, pix, 64 * 48 * 3);
    fw_image_free(img);

    /* Lossy. */
    uint8_t *wy = NULL;
    size_t ylen = WebPEncodeRGB(pix, 64, 48, 64 * 3, 95.0f, &wy);
    assert_true(ylen > 0);
    img = decode_ok(wy, ylen, NULL);
    assert_int_equal(img->width, 64);
    check_blocks(img, 4, 3, 16);
    fw_image_free(img);
    WebPFree(wy);

    /* Extended format with an EXIF chunk: orientation 6 on a picture stored for it. */
    int sw, sh;
    uint8_t *up = make_blocks(48, 64, 3, 4);
    uint8_t *stored = store_for_orientation(up, 48, 64, 6, &sw, &sh);
    size_t slen;
    uint8_t *simple = webp_lossless(stored, sw, sh, &slen);
    uint8_t t[26];
    size_t tn = make_tiff(t, 1, 3, 1, 6);
    size_t xlen;
    uint8_t *ext = webp_extended(simple, slen, sw, sh, 0x08, t, tn, &xlen);
    assert_int_equal(fw_image_probe(ext, xlen, &info, NULL), FW_OK);
    assert_int_equal(info.orientation, 6);
    assert_int_equal(info.width, sw);
    img = decode_ok(ext, xlen, NULL);
    assert_int_equal(img->width, 48);
    assert_int_equal(img->height, 64);
    assert_int_equal(img->orig_width, 48);
    assert_int_equal(img->orig_height, 64);
    check_blocks(img, 3, 4, 0);
    fw_image_free(img);
    free(ext);

    /* Animated (VP8X animation flag): unsupported, from probe and decode. */
    ext = webp_extended(simple, slen, sw, sh, 0x02, NULL, 0, &xlen);
    fw_error e;
    assert_int_equal(fw_image_probe(ext, xlen, &info, &e), FW_ERR_UNSUPPORTED);
    assert_non_null(strstr(e.message, "animated"));
    assert_int_equal(decode_err(ext, xlen, NULL), FW_ERR_UNSUPPORTED);
    free(ext);

    WebPFree(simple);
    free(stored);
    free(up);
    WebPFree(wl);
    free(pix);
}

/* ------------------------------------------------------------------------------------ */
/* limits, empty, corrupt, unsupported                                                  */

static void test_limits(void **state)
{
    (void)state;
    uint8_t *pix = make_blocks(64, 48, 4, 3);
    size_t jl, pl, wl;
    uint8_t *jpg = jpeg_encode(pix, 64, 48, TJPF_RGB, TJSAMP_444, 90, &jl);
    uint8_t *png =
        png_encode(pix, 64 * 48 * 3, 64, 48, SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL, NULL, 0, 0, &pl);
    uint8_t *webp = webp_lossless(pix, 64, 48, &wl);
    const uint8_t *bufs[3] = {jpg, png, webp};
    const size_t lens[3] = {jl, pl, wl};
    for (int i = 0; i < 3; i++) {
        fw_decode_opts o = {.max_bytes = lens[i] - 1};
        assert_int_equal(decode_err(bufs[i], lens[i], &o), FW_ERR_TOO_LARGE);
        o.max_bytes = lens[i];
        fw_image_free(decode_ok(bufs[i], lens[i], &o));
        o = (fw_decode_opts){.max_pixels = 64 * 48 - 1};
        assert_int_equal(decode_err(bufs[i], lens[i], &o), FW_ERR_TOO_MANY_PIXELS);
        o.max_pixels = 64 * 48;
        fw_image_free(decode_ok(bufs[i], lens[i], &o));
    }

    /* A PNG header claiming 100000 x 100000 (10 gigapixels): probe reads it, decode refuses
     * it from the header alone (the test would run out of memory or time otherwise). */
    uint8_t hdr[64];
    size_t hl = png_header_only(hdr, 100000, 100000);
    fw_image_info info;
    assert_int_equal(fw_image_probe(hdr, hl, &info, NULL), FW_OK);
    assert_int_equal(info.width, 100000);
    assert_int_equal(info.height, 100000);
    fw_error e;
    fw_image *img = NULL;
    clock_t t0 = clock();
    assert_int_equal(fw_image_decode(hdr, hl, NULL, &img, &e), FW_ERR_TOO_MANY_PIXELS);
    assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 0.5);
    assert_null(img);
    assert_non_null(strstr(e.message, "100000x100000"));
    /* One dimension alone over the pixel budget (libspng's own limit kicks in first). */
    hl = png_header_only(hdr, 100000, 1);
    fw_decode_opts o = {.max_pixels = 50000};
    assert_int_equal(decode_err(hdr, hl, &o), FW_ERR_TOO_MANY_PIXELS);
    /* Header with a bad CRC: corrupt. */
    hl = png_header_only(hdr, 10, 10);
    hdr[30] ^= 1;
    assert_int_equal(decode_err(hdr, hl, NULL), FW_ERR_CORRUPT);

    /* A JPEG whose SOF claims 60000 x 60000: refused before decoding. */
    uint8_t *big = malloc(jl);
    assert_non_null(big);
    memcpy(big, jpg, jl);
    int patched = 0;
    for (size_t i = 2; i + 9 < jl; i++)
        if (big[i] == 0xFF && big[i + 1] == 0xC0) {
            put16(big + i + 5, 60000, 1); /* height */
            put16(big + i + 7, 60000, 1); /* width */
            patched = 1;
            break;
        }
    assert_true(patched);
    assert_int_equal(fw_image_probe(big, jl, &info, NULL), FW_OK);
    assert_int_equal(info.width, 60000);
    assert_int_equal(decode_err(big, jl, NULL), FW_ERR_TOO_MANY_PIXELS);
    free(big);

    /* A lossless WebP whose VP8L header claims 16384 x 16384. */
    big = malloc(wl);
    assert_non_null(big);
    memcpy(big, webp, wl);
    assert_memory_equal(big + 12, "VP8L", 4);
    assert_int_equal(big[20], 0x2F);
    uint32_t bitsv = (uint32_t)big[21] | (uint32_t)big[22] << 8 | (uint32_t)big[23] << 16 |
                     (uint32_t)big[24] << 24;
    bitsv = (bitsv & 0xF0000000u) | 0x3FFFu | (0x3FFFu << 14);
    wr32le(big + 21, bitsv);
    assert_int_equal(fw_image_probe(big, wl, &info, NULL), FW_OK);
    assert_int_equal(info.width, 16384);
    assert_int_equal(decode_err(big, wl, NULL), FW_ERR_TOO_MANY_PIXELS);
    free(big);

    free(jpg);
    free(png);
    WebPFree(webp);
    free(pix);
}

/* A PNG over 8 MiB (one IDAT chunk larger than libspng's ancillary-chunk cache) decodes. */
static void test_png_large(void **state)
{
    (void)state;
    const int W = 2048, H = 1536;
    uint8_t *pix = make_blocks(W, H, 4, 3);
    g_png_store_only = 1;
    size_t len;
    uint8_t *png = png_encode(pix, (size_t)W * H * 3, W, H, SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL,
                              NULL, 0, 0, &len);
    g_png_store_only = 0;
    assert_true(len > 9u * 1024 * 1024); /* 9.4 MB of pixels, stored */
    fw_image *img = decode_ok(png, len, NULL);
    assert_int_equal(img->width, W);
    assert_int_equal(img->height, H);
    assert_memory_equal(img->pixels, pix, (size_t)W * H * 3);
    fw_image_free(img);
    fw_decode_opts o = {.max_bytes = len - 1};
    assert_int_equal(decode_err(png, len, &o), FW_ERR_TOO_LARGE);
    free(png);
    free(pix);
}

/* Valid but unsupported JPEG variants (patched SOF): UNSUPPORTED, not CORRUPT. */
static void test_jpeg_unsupported_variants(void **state)
{
    (void)state;
    uint8_t *pix = make_blocks(32, 16, 4, 2);
    size_t len;
    uint8_t *jpg = jpeg_encode(pix, 32, 16, TJPF_RGB, TJSAMP_444, 90, &len);
    size_t sof = 0;
    for (size_t i = 2; i + 4 < len && !sof; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0)
            sof = i;
    assert_true(sof > 0);
    for (int v = 0; v < 2; v++) {
        uint8_t *b = malloc(len);
        assert_non_null(b);
        memcpy(b, jpg, len);
        if (v == 0)
            b[sof + 1] = 0xC3; /* lossless process */
        else
            b[sof + 4] = 12; /* 12-bit samples */
        fw_error e;
        fw_image *img = NULL;
        fw_err rc = fw_image_decode(b, len, NULL, &img, &e);
        if (rc != FW_ERR_UNSUPPORTED)
            fail_msg("variant %d: %s '%s'", v, fw_err_name(rc), e.message);
        assert_null(img);
        free(b);
    }
    free(jpg);
    free(pix);
}

static void test_empty_and_args(void **state)
{
    (void)state;
    fw_image_info info;
    fw_error e;
    const uint8_t one = 0;
    assert_int_equal(fw_image_probe(&one, 0, &info, &e), FW_ERR_EMPTY_INPUT);
    assert_int_equal(e.code, FW_ERR_EMPTY_INPUT);
    assert_int_equal(fw_image_probe(NULL, 0, &info, NULL), FW_ERR_EMPTY_INPUT);
    assert_int_equal(decode_err(&one, 0, NULL), FW_ERR_EMPTY_INPUT);
    assert_int_equal(decode_err(NULL, 0, NULL), FW_ERR_EMPTY_INPUT);
    /* empty wins over the byte limit */
    fw_decode_opts o = {.max_bytes = 1};
    assert_int_equal(decode_err(&one, 0, &o), FW_ERR_EMPTY_INPUT);
    assert_int_equal(fw_image_decode(&one, 1, NULL, NULL, NULL), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_image_probe(NULL, 5, &info, NULL), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_image_probe(&one, 1, NULL, NULL), FW_ERR_INVALID_ARGUMENT);

    fw_image *img = fw_image_new(3, 2);
    assert_non_null(img);
    assert_int_equal(img->width, 3);
    assert_int_equal(img->height, 2);
    assert_int_equal(img->orig_width, 3);
    assert_int_equal(img->orig_height, 2);
    for (int i = 0; i < 18; i++)
        assert_int_equal(img->pixels[i], 0);
    fw_image_free(img);
    fw_image_free(NULL);
    assert_null(fw_image_new(0, 5));
    assert_null(fw_image_new(-1, 5));
}

static void test_unsupported(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
        fw_err code;
        const char *says;
    } cases[] = {
        {"GIF89a\x10\x00\x10\x00\x80\x00\x00", 13, FW_ERR_UNSUPPORTED, "GIF"},
        {"GIF87a\x01\x00\x01\x00", 10, FW_ERR_UNSUPPORTED, "GIF"},
        {"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0\x28\0", 16, FW_ERR_UNSUPPORTED, "BMP"},
        {"II*\0\x08\0\0\0", 8, FW_ERR_UNSUPPORTED, "TIFF"},
        {"\0\0\0\x1c"
         "ftypheic\0\0\0\0",
         16, FW_ERR_UNSUPPORTED, "HEIF"},
        {"\0\0\0\x1c"
         "ftypavif\0\0\0\0",
         16, FW_ERR_UNSUPPORTED, "AVIF"},
        {"hello, world\n", 13, FW_ERR_UNSUPPORTED, "text"},
        {"<!DOCTYPE html>", 15, FW_ERR_UNSUPPORTED, "HTML"},
        {"RIFF\x24\0\0\0WAVEfmt ", 16, FW_ERR_UNSUPPORTED, "RIFF"},
        {"\x00\x01\x02\x03\xfe", 5, FW_ERR_UNSUPPORTED, "expected JPEG, PNG or WebP"},
        {"\xFF\xD8", 2, FW_ERR_CORRUPT, "JPEG"},
        {"\x89PNG\r\n", 6, FW_ERR_CORRUPT, "PNG"},
        {"RIFF\x10\0\0\0WE", 10, FW_ERR_CORRUPT, "WebP"},
        {"\xFF\xD8\xFF", 3, FW_ERR_CORRUPT, "JPEG"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const uint8_t *d = (const uint8_t *)cases[i].bytes;
        fw_image_info info;
        fw_error e;
        fw_err rc = fw_image_probe(d, cases[i].len, &info, &e);
        if (rc != cases[i].code || !strstr(e.message, cases[i].says))
            fail_msg("case %zu: probe gave %s '%s'", i, fw_err_name(rc), e.message);
        fw_image *img = NULL;
        rc = fw_image_decode(d, cases[i].len, NULL, &img, &e);
        if (rc != cases[i].code || !strstr(e.message, cases[i].says))
            fail_msg("case %zu: decode gave %s '%s'", i, fw_err_name(rc), e.message);
        assert_null(img);
    }
}

/* Cuts each format at several points inside its data: always CORRUPT, never a partial image.
 * The cut copies are exact-size heap buffers so that ASan sees any over-read. */
static void check_truncations(const uint8_t *d, size_t len, const size_t *cuts, size_t ncuts,
                              const char *what)
{
    for (size_t i = 0; i < ncuts; i++) {
        size_t n = cuts[i];
        assert_true(n > 0 && n < len);
        uint8_t *c = malloc(n);
        assert_non_null(c);
        memcpy(c, d, n);
        fw_err rc = decode_err(c, n, NULL);
        if (rc != FW_ERR_CORRUPT)
            fail_msg("%s cut at %zu of %zu: %s", what, n, len, fw_err_name(rc));
        free(c);
    }
}

static void test_truncated(void **state)
{
    (void)state;
    uint8_t *pix = make_blocks(128, 96, 4, 3);
    size_t jl, pl, wl;
    /* noise so the entropy-coded data is long */
    for (int i = 0; i < 128 * 96 * 3; i++)
        pix[i] = (uint8_t)(pix[i] ^ ((i * 2654435761u) >> 27));
    uint8_t *jpg = jpeg_encode(pix, 128, 96, TJPF_RGB, TJSAMP_420, 90, &jl);
    uint8_t *png =
        png_encode(pix, 128 * 96 * 3, 128, 96, SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL, NULL, 0, 0, &pl);
    uint8_t *webp = webp_lossless(pix, 128, 96, &wl);
    uint8_t *wy = NULL;
    size_t yl = WebPEncodeRGB(pix, 128, 96, 128 * 3, 80.0f, &wy);
    assert_true(yl > 100);

    const size_t jc[] = {3, 4, 10, 100, 400, jl / 2, jl - 100, jl - 3, jl - 2 /* no EOI */};
    check_truncations(jpg, jl, jc, sizeof jc / sizeof jc[0], "JPEG");
    /* 8: signature only; 20: inside IHDR; 33: header, no IDAT; then inside IDAT. */
    const size_t pc[] = {8, 20, 33, 60, pl / 2, pl - 20};
    check_truncations(png, pl, pc, sizeof pc / sizeof pc[0], "PNG");
    const size_t wc[] = {12, 20, 30, wl / 2, wl - 1};
    check_truncations(webp, wl, wc, sizeof wc / sizeof wc[0], "WebP lossless");
    const size_t yc[] = {12, 25, 40, yl / 2, yl - 1};
    check_truncations(wy, yl, yc, sizeof yc / sizeof yc[0], "WebP lossy");

    /* Probe needs only the header: a JPEG cut in its scan data still probes. */
    fw_image_info info;
    assert_int_equal(fw_image_probe(jpg, jl / 2, &info, NULL), FW_OK);
    assert_int_equal(info.width, 128);
    assert_int_equal(fw_image_probe(jpg, 10, &info, NULL), FW_ERR_CORRUPT);
    assert_int_equal(fw_image_probe(png, 20, &info, NULL), FW_ERR_CORRUPT);
    assert_int_equal(fw_image_probe(webp, 20, &info, NULL), FW_ERR_CORRUPT);

    /* Corrupt scan data in the middle of the JPEG: an error, never a crash. */
    uint8_t *bad = malloc(jl);
    assert_non_null(bad);
    memcpy(bad, jpg, jl);
    memset(bad + jl / 2, 0xFF, 64);
    fw_err rc = decode_err(bad, jl, NULL);
    assert_true(rc == FW_ERR_CORRUPT);
    free(bad);

    WebPFree(wy);
    WebPFree(webp);
    free(png);
    free(jpg);
    free(pix);
}

static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Random bytes, random bytes behind each format's signature, and randomly mutated valid
 * files: each call returns a defined result (and ASan/UBSan watch the rest). */
static void test_random_bytes(void **state)
{
    (void)state;
    uint32_t seed = 0x9E3779B9u;
    static const char *const magic[4] = {"", "\xFF\xD8\xFF", "\x89PNG\r\n\x1A\n",
                                         "RIFF\x40\0\0\0WEBPVP8 "};
    static const size_t mlen[4] = {0, 3, 8, 16};
    for (int i = 0; i < 400; i++) {
        size_t n = 1 + xorshift(&seed) % 700;
        int m = i % 4;
        if (n < mlen[m])
            n = mlen[m] + 1;
        uint8_t *d = malloc(n);
        assert_non_null(d);
        for (size_t k = 0; k < n; k++)
            d[k] = (uint8_t)xorshift(&seed);
        memcpy(d, magic[m], mlen[m]);
        fw_err rc = decode_err(d, n, NULL);
        if (rc != FW_ERR_CORRUPT && rc != FW_ERR_UNSUPPORTED)
            fail_msg("random %d (magic %d, %zu bytes): %s", i, m, n, fw_err_name(rc));
        fw_image_info info;
        (void)fw_image_probe(d, n, &info, NULL);
        free(d);
    }

    uint8_t *pix = make_blocks(48, 32, 4, 2);
    size_t lens[3];
    uint8_t *files[3];
    files[0] = jpeg_encode(pix, 48, 32, TJPF_RGB, TJSAMP_420, 80, &lens[0]);
    files[1] = png_encode(pix, 48 * 32 * 3, 48, 32, SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL, NULL, 0, 0,
                          &lens[1]);
    uint8_t *w = webp_lossless(pix, 48, 32, &lens[2]);
    files[2] = malloc(lens[2]);
    assert_non_null(files[2]);
    memcpy(files[2], w, lens[2]);
    WebPFree(w);
    int ok = 0, failed = 0;
    for (int i = 0; i < 600; i++) {
        int f = i % 3;
        uint8_t *d = malloc(lens[f]);
        assert_non_null(d);
        memcpy(d, files[f], lens[f]);
        int flips = 1 + (int)(xorshift(&seed) % 4);
        for (int k = 0; k < flips; k++)
            d[xorshift(&seed) % lens[f]] = (uint8_t)xorshift(&seed);
        fw_decode_opts o = {.min_width = (int)(xorshift(&seed) % 64)};
        fw_image *img = NULL;
        fw_err rc = fw_image_decode(d, lens[f], &o, &img, NULL);
        if (rc == FW_OK) {
            assert_non_null(img);
            assert_true(img->width > 0 && img->height > 0);
            assert_true(img->width <= img->orig_width && img->height <= img->orig_height);
            fw_image_free(img);
            ok++;
        } else {
            assert_null(img);
            failed++;
        }
        free(d);
    }
    assert_true(ok > 0 && failed > 0);
    for (int f = 0; f < 3; f++)
        free(files[f]);
    free(pix);
}

/* ------------------------------------------------------------------------------------ */
/* files and real photos                                                                */

static const char *photos_dir(void)
{
    const char *d = getenv("FW_PHOTOS_DIR");
    return d && *d ? d : FW_SOURCE_DIR "/.deps/photos";
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_real_photos(void **state)
{
    (void)state;
    int seen = 0;
    for (int i = 1; i <= 6; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/sample%d.jpg", photos_dir(), i);
        uint8_t *data;
        size_t len;
        fw_error e;
        fw_err rc = fw_read_file(path, 0, &data, &len, &e);
        if (rc != FW_OK)
            fail_msg("%s: %s", path, e.message);
        seen++;
        fw_image_info info;
        assert_int_equal(fw_image_probe(data, len, &info, &e), FW_OK);
        assert_int_equal(info.format, FW_FORMAT_JPEG);
        assert_true(info.width >= 200 && info.width <= 20000);
        assert_true(info.height >= 200 && info.height <= 20000);

        double t0 = now_ms();
        fw_image *img = decode_ok(data, len, NULL);
        double t1 = now_ms();
        int ow = info.orientation >= 5 ? info.height : info.width;
        int oh = info.orientation >= 5 ? info.width : info.height;
        assert_int_equal(img->width, ow);
        assert_int_equal(img->height, oh);
        assert_int_equal(img->orig_width, ow);
        /* a photo, not a flat or broken frame: some spread in the pixel values */
        long sum = 0, sum2 = 0;
        size_t np = (size_t)img->width * img->height * 3;
        for (size_t k = 0; k < np; k += 97) {
            sum += img->pixels[k];
            sum2 += (long)img->pixels[k] * img->pixels[k];
        }
        long cnt = (long)((np + 96) / 97);
        double mean = (double)sum / cnt, var = (double)sum2 / cnt - mean * mean;
        assert_true(mean > 20 && mean < 235);
        assert_true(var > 100);

        fw_decode_opts o = {.min_width = 320, .min_height = 320};
        fw_image *small = decode_ok(data, len, &o);
        assert_true(small->width >= (ow < 320 ? ow : 320));
        assert_true(small->height >= (oh < 320 ? oh : 320));
        assert_true(small->width <= img->width);
        assert_int_equal(small->orig_width, ow);
        assert_int_equal(small->orig_height, oh);
        print_message("      %s: %dx%d orient %d, %zu bytes, full decode %.1f ms, "
                      "scaled to %dx%d\n",
                      path, info.width, info.height, info.orientation, len, t1 - t0, small->width,
                      small->height);
        fw_image_free(small);

        fw_image *viafile = NULL;
        assert_int_equal(fw_image_load_file(path, NULL, &viafile, &e), FW_OK);
        assert_int_equal(viafile->width, img->width);
        assert_memory_equal(viafile->pixels, img->pixels, np);
        fw_image_free(viafile);
        fw_image_free(img);
        free(data);
    }
    assert_int_equal(seen, 6);
}

static void test_read_file(void **state)
{
    (void)state;
    char path[] = "/tmp/fw_test_image_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    uint8_t *pix = make_blocks(16, 8, 4, 2);
    size_t pl;
    uint8_t *png =
        png_encode(pix, 16 * 8 * 3, 16, 8, SPNG_COLOR_TYPE_TRUECOLOR, 8, NULL, NULL, 0, 0, &pl);
    assert_int_equal(write(fd, png, pl), (ssize_t)pl);
    close(fd);

    uint8_t *data;
    size_t len;
    fw_error e;
    assert_int_equal(fw_read_file(path, pl, &data, &len, &e), FW_OK);
    assert_int_equal(len, pl);
    assert_memory_equal(data, png, pl);
    free(data);
    data = (uint8_t *)1;
    assert_int_equal(fw_read_file(path, pl - 1, &data, &len, &e), FW_ERR_TOO_LARGE);
    assert_null(data);

    fw_image *img = NULL;
    assert_int_equal(fw_image_load_file(path, NULL, &img, &e), FW_OK);
    assert_memory_equal(img->pixels, pix, 16 * 8 * 3);
    fw_image_free(img);
    fw_decode_opts o = {.max_bytes = 10};
    assert_int_equal(fw_image_load_file(path, &o, &img, &e), FW_ERR_TOO_LARGE);
    assert_null(img);
    unlink(path);

    assert_int_equal(fw_read_file("/nonexistent/dir/x.jpg", 0, &data, &len, &e), FW_ERR_NOT_FOUND);
    assert_non_null(strstr(e.message, "/nonexistent/dir/x.jpg"));
    assert_int_equal(fw_image_load_file(path, NULL, &img, &e), FW_ERR_NOT_FOUND);
    assert_int_equal(fw_read_file("/tmp", 0, &data, &len, &e), FW_ERR_IO);

    /* An empty file reads as zero bytes and decodes as EMPTY_INPUT. */
    memcpy(path + strlen(path) - 6, "XXXXXX", 6);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(fw_read_file(path, 0, &data, &len, &e), FW_OK);
    assert_int_equal(len, 0);
    free(data);
    assert_int_equal(fw_image_load_file(path, NULL, &img, &e), FW_ERR_EMPTY_INPUT);
    unlink(path);

    /* A non-regular file (a pipe) is read to its end, with the limit enforced. */
    int p[2];
    assert_int_equal(pipe(p), 0);
    uint8_t chunk[300];
    memset(chunk, 7, sizeof chunk);
    assert_int_equal(write(p[1], chunk, sizeof chunk), (ssize_t)sizeof chunk);
    close(p[1]);
    char ppath[64];
    snprintf(ppath, sizeof ppath, "/proc/self/fd/%d", p[0]);
    assert_int_equal(fw_read_file(ppath, 299, &data, &len, &e), FW_ERR_TOO_LARGE);
    close(p[0]);
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], chunk, sizeof chunk), (ssize_t)sizeof chunk);
    close(p[1]);
    snprintf(ppath, sizeof ppath, "/proc/self/fd/%d", p[0]);
    assert_int_equal(fw_read_file(ppath, 300, &data, &len, &e), FW_OK);
    assert_int_equal(len, 300);
    free(data);
    close(p[0]);

    free(png);
    free(pix);
}

/* Several threads decoding at once (each uses its own cached TurboJPEG handle, destroyed
 * when the thread exits: LeakSanitizer checks that in the ASan build). */
typedef struct thread_arg {
    const uint8_t *jpg;
    size_t len;
    const uint8_t *expect;
    int ok;
} thread_arg;

static void *decode_thread(void *p)
{
    thread_arg *a = p;
    a->ok = 1;
    for (int i = 0; i < 20; i++) {
        fw_image *img = NULL;
        /* interleave a failure so that handle recovery is exercised too */
        if (fw_image_decode(a->jpg, 50, NULL, &img, NULL) != FW_ERR_CORRUPT)
            a->ok = 0;
        if (fw_image_decode(a->jpg, a->len, NULL, &img, NULL) != FW_OK) {
            a->ok = 0;
            continue;
        }
        if (img->width != 64 || memcmp(img->pixels, a->expect, 64 * 48 * 3) != 0)
            a->ok = 0;
        fw_image_free(img);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    uint8_t *pix = make_blocks(64, 48, 4, 3);
    size_t len;
    uint8_t *jpg = jpeg_encode(pix, 64, 48, TJPF_RGB, TJSAMP_420, 85, &len);
    fw_image *ref = decode_ok(jpg, len, NULL);
    enum { N = 4 };
    pthread_t th[N];
    thread_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (thread_arg){jpg, len, ref->pixels, 0};
        assert_int_equal(pthread_create(&th[i], NULL, decode_thread, &args[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_true(args[i].ok);
    }
    fw_image_free(ref);
    free(jpg);
    free(pix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jpeg_rgb),
        cmocka_unit_test(test_jpeg_gray),
        cmocka_unit_test(test_jpeg_cmyk),
        cmocka_unit_test(test_jpeg_odd_sampling),
        cmocka_unit_test(test_jpeg_exif_orientations),
        cmocka_unit_test(test_jpeg_dct_scale),
        cmocka_unit_test(test_jpeg_corrupt_exif),
        cmocka_unit_test(test_exif_parser),
        cmocka_unit_test(test_png_variants),
        cmocka_unit_test(test_png_exif_orientations),
        cmocka_unit_test(test_png_bad_exif),
        cmocka_unit_test(test_webp),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_png_large),
        cmocka_unit_test(test_jpeg_unsupported_variants),
        cmocka_unit_test(test_empty_and_args),
        cmocka_unit_test(test_unsupported),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_real_photos),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
