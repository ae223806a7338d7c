/* facework: image decoding (JPEG, PNG, WebP) with EXIF orientation and size limits. */
#ifndef FACEWORK_IMAGE_H
#define FACEWORK_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "facework/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FW_DEFAULT_MAX_IMAGE_BYTES (20u * 1024u * 1024u) /* 20 MiB */
#define FW_DEFAULT_MAX_PIXELS (50u * 1000u * 1000u)      /* 50 megapixels */

typedef enum fw_image_format {
    FW_FORMAT_UNKNOWN = 0,
    FW_FORMAT_JPEG,
    FW_FORMAT_PNG,
    FW_FORMAT_WEBP,
} fw_image_format;

/* An 8-bit RGB image, rows packed (stride == width * 3). Owned by whoever holds the
 * pointer; release with fw_image_free. */
typedef struct fw_image {
    int width, height;           /* of `pixels` */
    int orig_width, orig_height; /* full resolution, after EXIF orientation */
    uint8_t *pixels;             /* width * height * 3 bytes, RGB */
} fw_image;

/* What the header says, read without decoding pixels. */
typedef struct fw_image_info {
    fw_image_format format;
    int width, height; /* as stored, before orientation */
    int orientation;   /* EXIF orientation 1..8 (JPEG APP1, PNG eXIf, WebP EXIF; 1 when absent) */
} fw_image_info;

typedef struct fw_decode_opts {
    size_t max_bytes;    /* 0: FW_DEFAULT_MAX_IMAGE_BYTES */
    uint64_t max_pixels; /* 0: FW_DEFAULT_MAX_PIXELS; checked from the header, before decoding */
    /* JPEG only: decode at the smallest DCT scale (1/8 .. 8/8) whose oriented result is at
     * least min_width x min_height. 0 x 0 decodes at full resolution. */
    int min_width, min_height;
    int ignore_orientation; /* nonzero: do not apply EXIF orientation (tests only) */
} fw_decode_opts;

/* Reads format, stored size and EXIF orientation from the header. Errors: EMPTY_INPUT,
 * UNSUPPORTED (not JPEG/PNG/WebP), CORRUPT (header unreadable). */
fw_err fw_image_probe(const uint8_t *data, size_t len, fw_image_info *info, fw_error *err);

/* Decodes data into a new RGB image with orientation applied. opts may be NULL (defaults).
 * Limits are checked before any pixel is decoded: TOO_LARGE for bytes, TOO_MANY_PIXELS for
 * the header's width x height. Corrupt or truncated input gives CORRUPT, never a crash.
 * On success *out is owned by the caller. */
fw_err fw_image_decode(const uint8_t *data, size_t len, const fw_decode_opts *opts, fw_image **out,
                       fw_error *err);

/* Reads a whole file (at most opts->max_bytes) and decodes it. */
fw_err fw_image_load_file(const char *path, const fw_decode_opts *opts, fw_image **out,
                          fw_error *err);

/* Reads a whole file into a new malloc'd buffer (caller frees); at most max_bytes
 * (0: FW_DEFAULT_MAX_IMAGE_BYTES), TOO_LARGE beyond. */
fw_err fw_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len, fw_error *err);

/* A new zeroed width x height image (orig size = size), or NULL on allocation failure or
 * when width or height <= 0. */
fw_image *fw_image_new(int width, int height);

/* Frees img and its pixels. NULL is a no-op. */
void fw_image_free(fw_image *img);

#ifdef __cplusplus
}
#endif
#endif
