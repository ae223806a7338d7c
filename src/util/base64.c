#include "util/base64.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char ALPHABET[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Decoding table: 0..63 sextet values, then the classes below. */
enum { B64_WS = 64, B64_PAD = 65, B64_BAD = 66 };

static const uint8_t DECODE[256] = {
#define BAD B64_BAD
#define WS B64_WS
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, WS,  WS,  WS,  WS,  WS,      BAD, BAD, /* 0x00 */
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,     BAD, BAD, /* 0x10 */
    WS,  BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, 62,  BAD, BAD,     BAD, 63,  /* 0x20 */
    52,  53,  54,  55,  56,  57,  58,  59,  60,  61,  BAD, BAD, BAD, B64_PAD, BAD, BAD,
    BAD, 0,   1,   2,   3,   4,   5,   6,   7,   8,   9,   10,  11,  12,      13,  14, /* 0x40 */
    15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25,  BAD, BAD, BAD,     BAD, BAD,
    BAD, 26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,      39,  40, /* 0x60 */
    41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51,  BAD, BAD, BAD,     BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,     BAD, BAD, /* 0x80 */
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,     BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,     BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,     BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,     BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,     BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,     BAD, BAD,
    BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,     BAD, BAD,
#undef BAD
#undef WS
};

/* Longest data URL header ("data:image/svg+xml;charset=utf-8;base64,") we look into. */
#define DATA_URL_MAX 256

size_t fw_base64_encoded_len(size_t n)
{
    return (n / 3 + (n % 3 != 0)) * 4;
}

size_t fw_base64_decoded_max(size_t len)
{
    return len / 4 * 3 + (len % 4 ? 3 : 0);
}

void fw_base64_encode(const uint8_t *src, size_t n, char *dst)
{
    size_t i = 0;
    char *o = dst;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        o[0] = ALPHABET[v >> 18];
        o[1] = ALPHABET[(v >> 12) & 63];
        o[2] = ALPHABET[(v >> 6) & 63];
        o[3] = ALPHABET[v & 63];
        o += 4;
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)src[i] << 16;
        o[0] = ALPHABET[v >> 18];
        o[1] = ALPHABET[(v >> 12) & 63];
        o[2] = '=';
        o[3] = '=';
        o += 4;
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
        o[0] = ALPHABET[v >> 18];
        o[1] = ALPHABET[(v >> 12) & 63];
        o[2] = ALPHABET[(v >> 6) & 63];
        o[3] = '=';
        o += 4;
    }
    *o = '\0';
}

static bool is_space(unsigned char c)
{
    return DECODE[c] == B64_WS;
}

/* Skips leading whitespace and a "data:...;base64," prefix: sets *start to the first
 * character of the payload. */
static fw_err skip_prefix(const char *src, size_t len, size_t *start, fw_error *err)
{
    size_t i = 0;
    while (i < len && is_space((unsigned char)src[i]))
        i++;
    *start = i;
    if (len - i < 5 || strncasecmp(src + i, "data:", 5) != 0)
        return FW_OK;
    size_t lim = len - i < DATA_URL_MAX ? len : i + DATA_URL_MAX;
    const char *comma = memchr(src + i, ',', lim - i);
    if (!comma)
        return fw_error_set(err, FW_ERR_CORRUPT, "data URL without ',' before the payload");
    size_t hdr_end = (size_t)(comma - src);
    if (hdr_end - i < 5 + 7 || strncasecmp(src + hdr_end - 7, ";base64", 7) != 0)
        return fw_error_set(err, FW_ERR_CORRUPT, "data URL is not base64-encoded");
    *start = hdr_end + 1;
    return FW_OK;
}

static fw_err bad_char(const char *src, size_t i, fw_error *err)
{
    unsigned char c = (unsigned char)src[i];
    if (c >= 0x21 && c < 0x7f)
        return fw_error_set(err, FW_ERR_CORRUPT, "invalid base64 character '%c' at offset %zu", c,
                            i);
    return fw_error_set(err, FW_ERR_CORRUPT, "invalid base64 byte 0x%02x at offset %zu", c, i);
}

static fw_err too_large(size_t cap, fw_error *err)
{
    return fw_error_set(err, FW_ERR_TOO_LARGE, "decoded data longer than %zu bytes", cap);
}

fw_err fw_base64_decode(const char *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len,
                        fw_error *err)
{
    *out_len = 0;
    size_t i;
    fw_err rc = skip_prefix(src, len, &i, err);
    if (rc)
        return rc;
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0;
    uint32_t acc = 0;
    int nacc = 0;
    while (i < len) {
        /* Fast path: four sextets in a row. */
        if (nacc == 0) {
            while (i + 4 <= len) {
                uint8_t a = DECODE[s[i]], b = DECODE[s[i + 1]], c = DECODE[s[i + 2]],
                        d = DECODE[s[i + 3]];
                if ((a | b | c | d) >= 64)
                    break;
                if (cap - o < 3)
                    return too_large(cap, err);
                uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
                dst[o] = (uint8_t)(v >> 16);
                dst[o + 1] = (uint8_t)(v >> 8);
                dst[o + 2] = (uint8_t)v;
                o += 3;
                i += 4;
            }
            if (i >= len)
                break;
        }
        uint8_t v = DECODE[s[i]];
        if (v < 64) {
            acc = acc << 6 | v;
            if (++nacc == 4) {
                if (cap - o < 3)
                    return too_large(cap, err);
                dst[o] = (uint8_t)(acc >> 16);
                dst[o + 1] = (uint8_t)(acc >> 8);
                dst[o + 2] = (uint8_t)acc;
                o += 3;
                nacc = 0;
                acc = 0;
            }
            i++;
        } else if (v == B64_WS) {
            i++;
        } else if (v == B64_PAD) {
            break;
        } else {
            return bad_char(src, i, err);
        }
    }
    /* Padding: only '=' and whitespace may follow the first '='. */
    size_t pad_at = i;
    int pads = 0;
    for (; i < len; i++) {
        uint8_t v = DECODE[s[i]];
        if (v == B64_PAD)
            pads++;
        else if (v != B64_WS)
            return v < 64 ? fw_error_set(err, FW_ERR_CORRUPT,
                                         "base64 data after padding at offset %zu", i)
                          : bad_char(src, i, err);
    }
    switch (nacc) {
    case 0:
        if (pads)
            return fw_error_set(err, FW_ERR_CORRUPT, "unexpected base64 padding at offset %zu",
                                pad_at);
        break;
    case 1:
        return fw_error_set(err, FW_ERR_CORRUPT,
                            "truncated base64: a single character in the last group");
    case 2:
        if (pads != 0 && pads != 2)
            return fw_error_set(err, FW_ERR_CORRUPT, "bad base64 padding at offset %zu", pad_at);
        if (cap - o < 1)
            return too_large(cap, err);
        dst[o++] = (uint8_t)(acc >> 4);
        break;
    case 3:
        if (pads != 0 && pads != 1)
            return fw_error_set(err, FW_ERR_CORRUPT, "bad base64 padding at offset %zu", pad_at);
        if (cap - o < 2)
            return too_large(cap, err);
        dst[o++] = (uint8_t)(acc >> 10);
        dst[o++] = (uint8_t)(acc >> 2);
        break;
    }
    *out_len = o;
    return FW_OK;
}

fw_err fw_base64_decode_alloc(const char *src, size_t len, size_t max_out, uint8_t **out,
                              size_t *out_len, fw_error *err)
{
    *out = NULL;
    *out_len = 0;
    size_t cap = fw_base64_decoded_max(len);
    if (max_out && cap > max_out)
        cap = max_out;
    uint8_t *p = malloc(cap ? cap : 1);
    if (!p)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory decoding %zu base64 bytes", len);
    fw_err rc = fw_base64_decode(src, len, p, cap, out_len, err);
    if (rc) {
        free(p);
        *out_len = 0;
        return rc;
    }
    *out = p;
    return FW_OK;
}
