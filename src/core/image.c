/* facework: image decoding (JPEG via TurboJPEG, PNG via libspng, WebP via libwebp), EXIF
 * orientation and size limits. See include/facework/image.h for the contract. */
#include "facework/image.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spng.h>
#include <turbojpeg.h>
#include <webp/decode.h>

#include "core/exif.h"

/* Chunk data libspng may keep in memory for ancillary chunks (text, ICC, EXIF...). */
#define PNG_CHUNK_CACHE_LIMIT (8u * 1024u * 1024u)

/* ------------------------------------------------------------------------------------ */
/* images                                                                               */

static fw_image *image_alloc(int width, int height, int zero)
{
    if (width <= 0 || height <= 0 || (size_t)width > SIZE_MAX / 3 / (size_t)height)
        return NULL;
    fw_image *img = calloc(1, sizeof(*img));
    if (!img)
        return NULL;
    size_t n = (size_t)width * (size_t)height * 3;
    img->pixels = zero ? calloc(n, 1) : malloc(n);
    if (!img->pixels) {
        free(img);
        return NULL;
    }
    img->width = img->orig_width = width;
    img->height = img->orig_height = height;
    return img;
}

fw_image *fw_image_new(int width, int height)
{
    return image_alloc(width, height, 1);
}

void fw_image_free(fw_image *img)
{
    if (!img)
        return;
    free(img->pixels);
    free(img);
}

/* ------------------------------------------------------------------------------------ */
/* orientation                                                                          */

static void swap3(uint8_t *a, uint8_t *b)
{
    uint8_t t0 = a[0], t1 = a[1], t2 = a[2];
    a[0] = b[0];
    a[1] = b[1];
    a[2] = b[2];
    b[0] = t0;
    b[1] = t1;
    b[2] = t2;
}

static void mirror_h(fw_image *img)
{
    const size_t stride = (size_t)img->width * 3;
    for (int y = 0; y < img->height; y++) {
        uint8_t *row = img->pixels + (size_t)y * stride;
        for (int l = 0, r = img->width - 1; l < r; l++, r--)
            swap3(row + (size_t)l * 3, row + (size_t)r * 3);
    }
}

static void mirror_v(fw_image *img)
{
    const size_t stride = (size_t)img->width * 3;
    for (int t = 0, b = img->height - 1; t < b; t++, b--) {
        uint8_t *p = img->pixels + (size_t)t * stride, *q = img->pixels + (size_t)b * stride;
        for (size_t i = 0; i < stride; i++) {
            uint8_t v = p[i];
            p[i] = q[i];
            q[i] = v;
        }
    }
}

/* Orientations 5..8 swap the axes: the result is h x w. Destination pixel (x, y) comes from
 * source column sx = (flip_col ? w-1-y : y) and row sy = (flip_row ? h-1-x : x). The loops are
 * tiled so that reads and writes stay in cache and TLB; pixels move as 4-byte words (the 4th
 * byte lands on the next destination pixel, rewritten right after) except where the word would
 * end past a row: the last pixel of each tile row and the source's last column. */
static fw_err rotate_swap(fw_image *img, int flip_col, int flip_row)
{
    const int w = img->width, h = img->height, dw = h, dh = w;
    const size_t sstride = (size_t)w * 3, dstride = (size_t)dw * 3;
    const ptrdiff_t step = flip_row ? -(ptrdiff_t)sstride : (ptrdiff_t)sstride;
    uint8_t *dst = malloc((size_t)w * (size_t)h * 3);
    if (!dst)
        return FW_ERR_NOMEM;
    const uint8_t *src = img->pixels;
    enum { TILE = 64 };
    for (int ty = 0; ty < dh; ty += TILE) {
        const int ye = ty + TILE < dh ? ty + TILE : dh;
        for (int tx = 0; tx < dw; tx += TILE) {
            const int xe = tx + TILE < dw ? tx + TILE : dw;
            for (int y = ty; y < ye; y++) {
                const int sx = flip_col ? w - 1 - y : y;
                const int sy0 = flip_row ? h - 1 - tx : tx;
                const uint8_t *s = src + (size_t)sy0 * sstride + (size_t)sx * 3;
                uint8_t *d = dst + (size_t)y * dstride + (size_t)tx * 3;
                int x = tx;
                if (sx < w - 1) {
                    for (; x < xe - 1; x++, s += step, d += 3) {
                        uint32_t v;
                        memcpy(&v, s, 4);
                        memcpy(d, &v, 4);
                    }
                }
                for (; x < xe; x++, s += step, d += 3) {
                    d[0] = s[0];
                    d[1] = s[1];
                    d[2] = s[2];
                }
            }
        }
    }
    free(img->pixels);
    img->pixels = dst;
    img->width = dw;
    img->height = dh;
    return FW_OK;
}

/* Orientation 3: the pixel sequence reversed. */
static void rotate_180(fw_image *img)
{
    const size_t n = (size_t)img->width * (size_t)img->height;
    uint8_t *p = img->pixels;
    for (size_t i = 0, j = n - 1; i < j; i++, j--)
        swap3(p + 3 * i, p + 3 * j);
}

/* Turns a decoded image as stored into the image as displayed for EXIF orientation o. */
static fw_err apply_orientation(fw_image *img, int o)
{
    switch (o) {
    case 2:
        mirror_h(img);
        return FW_OK;
    case 3:
        rotate_180(img);
        return FW_OK;
    case 4:
        mirror_v(img);
        return FW_OK;
    case 5: /* transpose */
        return rotate_swap(img, 0, 0);
    case 6: /* rotate 90 clockwise */
        return rotate_swap(img, 0, 1);
    case 7: /* transverse */
        return rotate_swap(img, 1, 1);
    case 8: /* rotate 90 counter-clockwise */
        return rotate_swap(img, 1, 0);
    default:
        return FW_OK;
    }
}

/* ------------------------------------------------------------------------------------ */
/* format sniffing                                                                      */

static const uint8_t JPEG_MAGIC[3] = {0xFF, 0xD8, 0xFF};
static const uint8_t PNG_MAGIC[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

static int has_prefix(const uint8_t *d, size_t len, const void *magic, size_t n)
{
    return len >= n && memcmp(d, magic, n) == 0;
}

static fw_image_format sniff(const uint8_t *d, size_t len)
{
    if (has_prefix(d, len, JPEG_MAGIC, sizeof JPEG_MAGIC))
        return FW_FORMAT_JPEG;
    if (has_prefix(d, len, PNG_MAGIC, sizeof PNG_MAGIC))
        return FW_FORMAT_PNG;
    if (len >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0)
        return FW_FORMAT_WEBP;
    return FW_FORMAT_UNKNOWN;
}

/* Input too short to hold a whole signature but equal to the start of one. */
static const char *truncated_magic(const uint8_t *d, size_t len)
{
    if (len < sizeof JPEG_MAGIC && memcmp(d, JPEG_MAGIC, len) == 0)
        return "JPEG";
    if (len < sizeof PNG_MAGIC && memcmp(d, PNG_MAGIC, len) == 0)
        return "PNG";
    if (len < 12 && memcmp(d, "RIFF", len < 4 ? len : 4) == 0 &&
        (len <= 8 || memcmp(d + 8, "WEBP", len - 8) == 0))
        return "WebP";
    return NULL;
}

/* A short name for what unsupported bytes look like, for the error message. */
static const char *looks_like(const uint8_t *d, size_t len)
{
    if (has_prefix(d, len, "GIF87a", 6) || has_prefix(d, len, "GIF89a", 6))
        return "GIF";
    if (has_prefix(d, len, "II*\0", 4) || has_prefix(d, len, "MM\0*", 4))
        return "TIFF";
    if (len >= 12 && memcmp(d + 4, "ftyp", 4) == 0) {
        if (memcmp(d + 8, "avif", 4) == 0 || memcmp(d + 8, "avis", 4) == 0)
            return "AVIF";
        if (memcmp(d + 8, "hei", 3) == 0 || memcmp(d + 8, "mif1", 4) == 0 ||
            memcmp(d + 8, "msf1", 4) == 0 || memcmp(d + 8, "hev", 3) == 0)
            return "HEIF/HEIC";
        return "ISO media (MP4/MOV)";
    }
    if (has_prefix(d, len, "\xFF\x0A", 2) || has_prefix(d, len, "\0\0\0\x0CJXL ", 8))
        return "JPEG XL";
    if (has_prefix(d, len, "\0\0\0\x0CjP  ", 8) || has_prefix(d, len, "\xFF\x4F\xFF\x51", 4))
        return "JPEG 2000";
    if (has_prefix(d, len, "RIFF", 4))
        return "RIFF (not WebP)";
    if (has_prefix(d, len, "BM", 2) && len >= 14)
        return "BMP";
    if (has_prefix(d, len, "\0\0\1\0", 4))
        return "ICO";
    if (has_prefix(d, len, "8BPS", 4))
        return "PSD";
    if (has_prefix(d, len, "%PDF", 4))
        return "PDF";
    if (has_prefix(d, len, "\x1F\x8B", 2))
        return "gzip";
    if (has_prefix(d, len, "PK\3\4", 4))
        return "ZIP";
    size_t n = len < 64 ? len : 64, i = 0;
    while (i < n && d[i] == ' ')
        i++;
    if (i < n && d[i] == '<')
        return "HTML/XML/SVG text";
    for (i = 0; i < n; i++)
        if (!(d[i] == '\t' || d[i] == '\n' || d[i] == '\r' || (d[i] >= 0x20 && d[i] < 0x7F)))
            return NULL;
    return "text";
}

static fw_err unsupported(const uint8_t *d, size_t len, fw_error *err)
{
    const char *t = truncated_magic(d, len);
    if (t)
        return fw_error_set(err, FW_ERR_CORRUPT, "truncated %s signature (%zu bytes)", t, len);
    const char *what = looks_like(d, len);
    if (what)
        return fw_error_set(err, FW_ERR_UNSUPPORTED,
                            "unsupported image format (looks like %s); expected JPEG, PNG or WebP",
                            what);
    return fw_error_set(err, FW_ERR_UNSUPPORTED,
                        "unsupported image format; expected JPEG, PNG or WebP");
}

/* ------------------------------------------------------------------------------------ */
/* JPEG                                                                                 */

/* One decompressor per thread, created on first use and destroyed at thread exit (the key's
 * destructor). The _Thread_local copy is the fast path and keeps the handle reachable. */
static pthread_once_t tj_once = PTHREAD_ONCE_INIT;
static pthread_key_t tj_key;
static int tj_key_ok;
static _Thread_local tjhandle tj_cached;

static void tj_key_destroy(void *h)
{
    if (h)
        tjDestroy(h);
}

static void tj_key_init(void)
{
    tj_key_ok = pthread_key_create(&tj_key, tj_key_destroy) == 0;
}

static tjhandle tj_acquire(void)
{
    if (tj_cached)
        return tj_cached;
    tjhandle h = tjInitDecompress();
    if (!h)
        return NULL;
    pthread_once(&tj_once, tj_key_init);
    if (tj_key_ok && pthread_setspecific(tj_key, h) == 0)
        tj_cached = h;
    return h;
}

/* Gives the handle back; an uncached one, or one that hit a fatal error, is destroyed. */
static void tj_release(tjhandle h, int failed)
{
    if (!h)
        return;
    if (h != tj_cached) {
        tjDestroy(h);
        return;
    }
    if (failed) {
        pthread_setspecific(tj_key, NULL);
        tj_cached = NULL;
        tjDestroy(h);
    }
}

typedef struct jpeg_header {
    int width, height, colorspace;
} jpeg_header;

/* Frame size from the first SOFn marker, for JPEGs whose subsampling TurboJPEG 2.1 cannot
 * name (tjDecompressHeader3 refuses them although tjDecompress2 decodes them). */
static int jpeg_sof(const uint8_t *d, size_t len, jpeg_header *hd)
{
    size_t p = 2;
    while (p < len) {
        if (d[p] != 0xFF)
            return -1;
        while (p < len && d[p] == 0xFF)
            p++;
        if (p >= len)
            return -1;
        uint8_t m = d[p++];
        if (m == 0xD9 || m == 0xDA)
            return -1;
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7))
            continue;
        if (len - p < 2)
            return -1;
        size_t seg = ((size_t)d[p] << 8) | d[p + 1];
        if (seg < 2 || seg > len - p)
            return -1;
        int is_sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
        if (is_sof) {
            if (seg < 8)
                return -1;
            hd->height = (d[p + 3] << 8) | d[p + 4];
            hd->width = (d[p + 5] << 8) | d[p + 6];
            int ncomp = d[p + 7];
            hd->colorspace = ncomp == 1 ? TJCS_GRAY : ncomp == 4 ? TJCS_CMYK : TJCS_YCbCr;
            return hd->width > 0 && hd->height > 0 ? 0 : -1;
        }
        p += seg;
    }
    return -1;
}

static fw_err jpeg_error(tjhandle h, const char *what, fw_error *err)
{
    const char *msg = h ? tjGetErrorStr2(h) : NULL;
    if (!msg || !*msg)
        msg = "unknown error";
    /* Valid JPEGs that libjpeg-turbo 2.1 cannot decode: lossless or hierarchical processes,
     * 12-bit samples, colour spaces it cannot convert. (Other "Unsupported ..." messages, such
     * as an unknown marker, mean corrupt data.) */
    if (strstr(msg, "Unsupported JPEG process") || strstr(msg, "Unsupported JPEG data precision") ||
        strstr(msg, "Unsupported color conversion"))
        return fw_error_set(err, FW_ERR_UNSUPPORTED, "unsupported JPEG variant: %s", msg);
    return fw_error_set(err, FW_ERR_CORRUPT, "corrupt JPEG (%s): %s", what, msg);
}

/* Reads the frame header. A failed read leaves the handle in an unknown state, so it is
 * released (destroyed) then; when the SOF fallback still succeeds, *h is a fresh handle. */
static fw_err jpeg_read_header(tjhandle *h, const uint8_t *d, size_t len, jpeg_header *hd,
                               fw_error *err)
{
    int subsamp = 0;
    /* A tables-only stream (or one cut before its frame header) "succeeds" without setting
     * the size: start from 0 x 0. */
    hd->width = hd->height = 0;
    hd->colorspace = TJCS_YCbCr;
    if (tjDecompressHeader3(*h, d, (unsigned long)len, &hd->width, &hd->height, &subsamp,
                            &hd->colorspace) == 0) {
        if (hd->width < 1 || hd->height < 1)
            return fw_error_set(err, FW_ERR_CORRUPT, "corrupt JPEG: no frame header");
        return FW_OK;
    }
    const char *msg = tjGetErrorStr2(*h);
    int fallback = msg && strstr(msg, "subsampling") && jpeg_sof(d, len, hd) == 0;
    fw_err rc = fallback ? FW_OK : jpeg_error(*h, "header", err);
    tj_release(*h, 1);
    *h = NULL;
    if (fallback) {
        *h = tj_acquire();
        if (!*h)
            rc = fw_error_set(err, FW_ERR_NOMEM, "cannot create JPEG decoder");
    }
    return rc;
}

/* The smallest DCT scale whose (oriented) output still covers min_w x min_h. Only 1/1, 1/2,
 * 1/4 and 1/8 are considered: libjpeg-turbo has SIMD inverse DCTs for those, while the
 * other factors (3/8, 5/8, ...) use plain C and measured slower than a full-size decode
 * (sample1.jpg, 1920x1280: 1/1 4.7 ms, 1/2 3.0 ms, 3/8 3.7 ms, 5/8 6.5 ms). */
static void jpeg_pick_scale(int w, int h, int swap_axes, int min_w, int min_h, int *out_w,
                            int *out_h)
{
    *out_w = w;
    *out_h = h;
    if (min_w <= 0 && min_h <= 0)
        return;
    int n = 0;
    tjscalingfactor *sf = tjGetScalingFactors(&n);
    if (!sf)
        return;
    uint64_t best = (uint64_t)w * (uint64_t)h;
    for (int i = 0; i < n; i++) {
        if (sf[i].num != 1 ||
            (sf[i].denom != 1 && sf[i].denom != 2 && sf[i].denom != 4 && sf[i].denom != 8))
            continue;
        int sw = TJSCALED(w, sf[i]), sh = TJSCALED(h, sf[i]);
        int ow = swap_axes ? sh : sw, oh = swap_axes ? sw : sh;
        uint64_t area = (uint64_t)sw * (uint64_t)sh;
        if (ow >= min_w && oh >= min_h && area < best) {
            best = area;
            *out_w = sw;
            *out_h = sh;
        }
    }
}

/* Inverted (Adobe) CMYK, as libjpeg returns it, to RGB. In place: dst may equal src. */
static void cmyk_to_rgb(const uint8_t *src, uint8_t *dst, size_t npix)
{
    for (size_t i = 0; i < npix; i++) {
        unsigned c = src[4 * i], m = src[4 * i + 1], y = src[4 * i + 2], k = src[4 * i + 3];
        dst[3 * i] = (uint8_t)((c * k + 127) / 255);
        dst[3 * i + 1] = (uint8_t)((m * k + 127) / 255);
        dst[3 * i + 2] = (uint8_t)((y * k + 127) / 255);
    }
}

/* ------------------------------------------------------------------------------------ */
/* PNG                                                                                  */

static fw_err png_error(int rc, const char *what, fw_error *err)
{
    if (rc == SPNG_EMEM)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory decoding PNG");
    if (rc == SPNG_EUSER_WIDTH || rc == SPNG_EUSER_HEIGHT)
        return fw_error_set(err, FW_ERR_TOO_MANY_PIXELS, "PNG dimension over the limit (%s)",
                            spng_strerror(rc));
    return fw_error_set(err, FW_ERR_CORRUPT, "corrupt PNG (%s): %s", what, spng_strerror(rc));
}

/* Opens a decoder on d and reads IHDR. dim_limit caps each dimension (0: libspng's default).
 * On success the caller frees *out_ctx. */
static fw_err png_open(const uint8_t *d, size_t len, uint64_t dim_limit, spng_ctx **out_ctx,
                       struct spng_ihdr *ihdr, fw_error *err)
{
    *out_ctx = NULL;
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory creating PNG decoder");
    /* No chunk can be longer than the file; the cache must hold at least one chunk. */
    size_t chunk_limit = len < 0x7FFFFFFFu ? len : 0x7FFFFFFFu;
    int rc = spng_set_chunk_limits(ctx, chunk_limit,
                                   chunk_limit > PNG_CHUNK_CACHE_LIMIT ? chunk_limit
                                                                       : PNG_CHUNK_CACHE_LIMIT);
    if (!rc && dim_limit) {
        uint32_t lim = dim_limit > 0x7FFFFFFFu ? 0x7FFFFFFFu : (uint32_t)dim_limit;
        rc = spng_set_image_limits(ctx, lim, lim);
    }
    if (!rc)
        rc = spng_set_png_buffer(ctx, d, len);
    if (!rc)
        rc = spng_get_ihdr(ctx, ihdr);
    if (rc) {
        spng_ctx_free(ctx);
        return png_error(rc, "header", err);
    }
    *out_ctx = ctx;
    return FW_OK;
}

/* Orientation from the eXIf chunk (1 when absent). This reads every chunk before IDAT, so it
 * returns libspng's error for a malformed or truncated one; the context is unusable then. */
static int png_orientation(spng_ctx *ctx, int *orientation)
{
    *orientation = 1;
    struct spng_exif exif;
    int rc = spng_get_exif(ctx, &exif);
    if (rc == SPNG_ECHUNKAVAIL)
        return 0;
    if (rc == 0)
        *orientation = fw__exif_orientation_tiff((const uint8_t *)exif.data, exif.length);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* WebP                                                                                 */

static fw_err webp_features(const uint8_t *d, size_t len, WebPBitstreamFeatures *f, fw_error *err)
{
    VP8StatusCode st = WebPGetFeatures(d, len, f);
    if (st == VP8_STATUS_OUT_OF_MEMORY)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory reading WebP header");
    if (st == VP8_STATUS_UNSUPPORTED_FEATURE)
        return fw_error_set(err, FW_ERR_UNSUPPORTED, "unsupported WebP feature");
    if (st != VP8_STATUS_OK)
        return fw_error_set(err, FW_ERR_CORRUPT, "corrupt WebP header (status %d%s)", (int)st,
                            st == VP8_STATUS_NOT_ENOUGH_DATA ? ", truncated" : "");
    if (f->has_animation)
        return fw_error_set(err, FW_ERR_UNSUPPORTED, "animated WebP is not supported");
    if (f->width < 1 || f->height < 1)
        return fw_error_set(err, FW_ERR_CORRUPT, "corrupt WebP header (empty image)");
    return FW_OK;
}

/* ------------------------------------------------------------------------------------ */
/* public API                                                                           */

fw_err fw_image_probe(const uint8_t *data, size_t len, fw_image_info *info, fw_error *err)
{
    if (!info || (!data && len))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_image_probe: NULL argument");
    memset(info, 0, sizeof(*info));
    info->orientation = 1;
    if (len == 0)
        return fw_error_set(err, FW_ERR_EMPTY_INPUT, "empty image");
    fw_image_format fmt = sniff(data, len);
    switch (fmt) {
    case FW_FORMAT_JPEG: {
        tjhandle h = tj_acquire();
        if (!h)
            return fw_error_set(err, FW_ERR_NOMEM, "cannot create JPEG decoder");
        jpeg_header hd;
        fw_err rc = jpeg_read_header(&h, data, len, &hd, err);
        tj_release(h, 0);
        if (rc)
            return rc;
        info->width = hd.width;
        info->height = hd.height;
        info->orientation = fw__exif_orientation_jpeg(data, len);
        break;
    }
    case FW_FORMAT_PNG: {
        spng_ctx *ctx;
        struct spng_ihdr ihdr;
        fw_err rc = png_open(data, len, 0, &ctx, &ihdr, err);
        if (rc)
            return rc;
        /* The header was readable; chunks after it are the decoder's business. */
        (void)png_orientation(ctx, &info->orientation);
        spng_ctx_free(ctx);
        info->width = (int)ihdr.width;
        info->height = (int)ihdr.height;
        break;
    }
    case FW_FORMAT_WEBP: {
        WebPBitstreamFeatures f;
        fw_err rc = webp_features(data, len, &f, err);
        if (rc)
            return rc;
        info->width = f.width;
        info->height = f.height;
        info->orientation = fw__exif_orientation_webp(data, len);
        break;
    }
    default:
        return unsupported(data, len, err);
    }
    info->format = fmt;
    return FW_OK;
}

static fw_err check_pixels(const char *fmt, uint64_t w, uint64_t h, uint64_t max_pixels,
                           fw_error *err)
{
    if (w * h > max_pixels)
        return fw_error_set(err, FW_ERR_TOO_MANY_PIXELS,
                            "%s is %llux%llu = %llu pixels, over the limit of %llu", fmt,
                            (unsigned long long)w, (unsigned long long)h,
                            (unsigned long long)(w * h), (unsigned long long)max_pixels);
    if (w > INT_MAX || h > INT_MAX || w * h > SIZE_MAX / 4)
        return fw_error_set(err, FW_ERR_TOO_MANY_PIXELS, "%s dimensions too large", fmt);
    return FW_OK;
}

static fw_err decode_jpeg(const uint8_t *d, size_t len, const fw_decode_opts *o,
                          uint64_t max_pixels, fw_image **out, fw_error *err)
{
    tjhandle h = tj_acquire();
    if (!h)
        return fw_error_set(err, FW_ERR_NOMEM, "cannot create JPEG decoder");
    jpeg_header hd;
    fw_err rc = jpeg_read_header(&h, d, len, &hd, err);
    if (!rc)
        rc = check_pixels("JPEG", (uint64_t)hd.width, (uint64_t)hd.height, max_pixels, err);
    if (rc) {
        tj_release(h, 0);
        return rc;
    }
    const int orient = o->ignore_orientation ? 1 : fw__exif_orientation_jpeg(d, len);
    const int swap = orient >= 5;
    int sw, sh;
    jpeg_pick_scale(hd.width, hd.height, swap, o->min_width, o->min_height, &sw, &sh);

    const int cmyk = hd.colorspace == TJCS_CMYK || hd.colorspace == TJCS_YCCK;
    fw_image *img = image_alloc(sw, sh, 0);
    uint8_t *cmyk_buf = NULL;
    if (img && cmyk)
        cmyk_buf = malloc((size_t)sw * (size_t)sh * 4);
    if (!img || (cmyk && !cmyk_buf)) {
        fw_image_free(img);
        tj_release(h, 0);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory for a %dx%d image", sw, sh);
    }
    const int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
    int r =
        cmyk
            ? tjDecompress2(h, d, (unsigned long)len, cmyk_buf, sw, sw * 4, sh, TJPF_CMYK, flags)
            : tjDecompress2(h, d, (unsigned long)len, img->pixels, sw, sw * 3, sh, TJPF_RGB, flags);
    if (r != 0) {
        rc = jpeg_error(h, "data", err);
        free(cmyk_buf);
        fw_image_free(img);
        tj_release(h, 1);
        return rc;
    }
    tj_release(h, 0);
    if (cmyk) {
        cmyk_to_rgb(cmyk_buf, img->pixels, (size_t)sw * (size_t)sh);
        free(cmyk_buf);
    }
    rc = apply_orientation(img, orient);
    if (rc) {
        fw_image_free(img);
        return fw_error_set(err, rc, "out of memory rotating the image");
    }
    img->orig_width = swap ? hd.height : hd.width;
    img->orig_height = swap ? hd.width : hd.height;
    *out = img;
    return FW_OK;
}

static fw_err decode_png(const uint8_t *d, size_t len, const fw_decode_opts *o, uint64_t max_pixels,
                         fw_image **out, fw_error *err)
{
    spng_ctx *ctx;
    struct spng_ihdr ihdr;
    int orient;
    fw_err rc = png_open(d, len, max_pixels, &ctx, &ihdr, err);
    if (rc)
        return rc;
    rc = check_pixels("PNG", ihdr.width, ihdr.height, max_pixels, err);
    if (!rc) {
        int src = png_orientation(ctx, &orient);
        if (src)
            rc = png_error(src, "chunks", err);
    }
    if (rc) {
        spng_ctx_free(ctx);
        return rc;
    }
    if (o->ignore_orientation)
        orient = 1;
    size_t need = 0;
    int src = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &need);
    if (src) {
        spng_ctx_free(ctx);
        return png_error(src, "size", err);
    }
    if (need != (size_t)ihdr.width * (size_t)ihdr.height * 3) {
        spng_ctx_free(ctx);
        return fw_error_set(err, FW_ERR_INTERNAL, "libspng wants %zu bytes for a %ux%u RGB image",
                            need, ihdr.width, ihdr.height);
    }
    fw_image *img = image_alloc((int)ihdr.width, (int)ihdr.height, 0);
    if (!img) {
        spng_ctx_free(ctx);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory for a %ux%u image", ihdr.width,
                            ihdr.height);
    }
    src = spng_decode_image(ctx, img->pixels, need, SPNG_FMT_RGB8, 0);
    spng_ctx_free(ctx);
    if (src) {
        fw_image_free(img);
        return png_error(src, "data", err);
    }
    rc = apply_orientation(img, orient);
    if (rc) {
        fw_image_free(img);
        return fw_error_set(err, rc, "out of memory rotating the image");
    }
    img->orig_width = img->width;
    img->orig_height = img->height;
    *out = img;
    return FW_OK;
}

static fw_err decode_webp(const uint8_t *d, size_t len, const fw_decode_opts *o,
                          uint64_t max_pixels, fw_image **out, fw_error *err)
{
    WebPBitstreamFeatures f;
    fw_err rc = webp_features(d, len, &f, err);
    if (!rc)
        rc = check_pixels("WebP", (uint64_t)f.width, (uint64_t)f.height, max_pixels, err);
    if (rc)
        return rc;
    fw_image *img = image_alloc(f.width, f.height, 0);
    if (!img)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory for a %dx%d image", f.width,
                            f.height);
    const size_t size = (size_t)f.width * (size_t)f.height * 3;
    if (!WebPDecodeRGBInto(d, len, img->pixels, size, f.width * 3)) {
        fw_image_free(img);
        return fw_error_set(err, FW_ERR_CORRUPT, "corrupt or truncated WebP data");
    }
    const int orient = o->ignore_orientation ? 1 : fw__exif_orientation_webp(d, len);
    rc = apply_orientation(img, orient);
    if (rc) {
        fw_image_free(img);
        return fw_error_set(err, rc, "out of memory rotating the image");
    }
    img->orig_width = img->width;
    img->orig_height = img->height;
    *out = img;
    return FW_OK;
}

fw_err fw_image_decode(const uint8_t *data, size_t len, const fw_decode_opts *opts, fw_image **out,
                       fw_error *err)
{
    if (!out || (!data && len))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_image_decode: NULL argument");
    *out = NULL;
    fw_decode_opts o = {0};
    if (opts)
        o = *opts;
    const size_t max_bytes = o.max_bytes ? o.max_bytes : FW_DEFAULT_MAX_IMAGE_BYTES;
    const uint64_t max_pixels = o.max_pixels ? o.max_pixels : FW_DEFAULT_MAX_PIXELS;
    if (len == 0)
        return fw_error_set(err, FW_ERR_EMPTY_INPUT, "empty image");
    if (len > max_bytes)
        return fw_error_set(err, FW_ERR_TOO_LARGE, "image is %zu bytes, over the limit of %zu", len,
                            max_bytes);
    switch (sniff(data, len)) {
    case FW_FORMAT_JPEG:
        return decode_jpeg(data, len, &o, max_pixels, out, err);
    case FW_FORMAT_PNG:
        return decode_png(data, len, &o, max_pixels, out, err);
    case FW_FORMAT_WEBP:
        return decode_webp(data, len, &o, max_pixels, out, err);
    default:
        return unsupported(data, len, err);
    }
}

/* strerror is not thread-safe; _GNU_SOURCE gives the char*-returning strerror_r. */
static const char *errno_str(int e, char *buf, size_t n)
{
    return strerror_r(e, buf, n);
}

fw_err fw_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len, fw_error *err)
{
    if (!path || !data || !len)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_read_file: NULL argument");
    *data = NULL;
    *len = 0;
    char ebuf[128];
    if (!max_bytes)
        max_bytes = FW_DEFAULT_MAX_IMAGE_BYTES;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return fw_error_set(err, e == ENOENT || e == ENOTDIR ? FW_ERR_NOT_FOUND : FW_ERR_IO,
                            "cannot open %s: %s", path, errno_str(e, ebuf, sizeof ebuf));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return fw_error_set(err, FW_ERR_IO, "cannot stat %s: %s", path,
                            errno_str(e, ebuf, sizeof ebuf));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return fw_error_set(err, FW_ERR_IO, "%s is a directory", path);
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_bytes) {
        close(fd);
        return fw_error_set(err, FW_ERR_TOO_LARGE, "%s is %lld bytes, over the limit of %zu", path,
                            (long long)st.st_size, max_bytes);
    }
    /* Regular files: one read of the known size plus one that sees EOF. Others: grow. */
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 64 * 1024;
    if (cap < 4096) /* also /proc-like files that report size 0 */
        cap = 4096;
    if (cap > max_bytes + 1)
        cap = max_bytes + 1;
    uint8_t *buf = malloc(cap);
    size_t n = 0;
    fw_err rc = FW_OK;
    if (!buf)
        rc = fw_error_set(err, FW_ERR_NOMEM, "out of memory reading %s", path);
    while (!rc) {
        if (n == cap) {
            if (cap > max_bytes) {
                rc = fw_error_set(err, FW_ERR_TOO_LARGE, "%s is over the limit of %zu bytes", path,
                                  max_bytes);
                break;
            }
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                rc = fw_error_set(err, FW_ERR_NOMEM, "out of memory reading %s", path);
                break;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = fw_error_set(err, FW_ERR_IO, "cannot read %s: %s", path,
                              errno_str(errno, ebuf, sizeof ebuf));
        } else if (r == 0) {
            break;
        } else {
            n += (size_t)r;
        }
    }
    close(fd);
    if (!rc && n > max_bytes)
        rc = fw_error_set(err, FW_ERR_TOO_LARGE, "%s is over the limit of %zu bytes", path,
                          max_bytes);
    if (rc) {
        free(buf);
        return rc;
    }
    *data = buf;
    *len = n;
    return FW_OK;
}

fw_err fw_image_load_file(const char *path, const fw_decode_opts *opts, fw_image **out,
                          fw_error *err)
{
    if (!out)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_image_load_file: NULL argument");
    *out = NULL;
    uint8_t *data;
    size_t len;
    fw_err rc = fw_read_file(path, opts ? opts->max_bytes : 0, &data, &len, err);
    if (rc)
        return rc;
    rc = fw_image_decode(data, len, opts, out, err);
    free(data);
    return rc;
}
