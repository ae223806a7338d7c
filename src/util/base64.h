/* Base64 (RFC 4648, standard alphabet) encoding and decoding.
 *
 * The decoder is lenient where clients differ and strict where data would be lost:
 *   - ASCII whitespace (space, \t, \n, \v, \f, \r) anywhere is ignored (MIME line breaks);
 *   - trailing '=' padding may be omitted, but when present it must be complete;
 *   - a leading data URL prefix "data:<media type>[;params];base64," is skipped;
 *   - any other character outside A-Z a-z 0-9 + / is an error naming its byte offset;
 *   - unused bits in the last quantum are ignored (as Python's base64 does).
 * All functions are pure and thread-safe. */
#ifndef FW_UTIL_BASE64_H
#define FW_UTIL_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "facework/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Length of the padded encoding of n bytes (without a NUL). n must be < SIZE_MAX / 4 * 3. */
size_t fw_base64_encoded_len(size_t n);

/* Upper bound on the bytes that decoding `len` characters can produce (for pre-sizing). */
size_t fw_base64_decoded_max(size_t len);

/* Writes the padded encoding of src[0..n) to dst followed by a NUL: dst must hold
 * fw_base64_encoded_len(n) + 1 bytes. */
void fw_base64_encode(const uint8_t *src, size_t n, char *dst);

/* Decodes src[0..len) into dst (capacity cap) and sets *out_len to the bytes written.
 * Errors: CORRUPT (bad character with its offset in src, bad padding, a dangling single
 * character, a data URL that is not base64), TOO_LARGE (the output would exceed cap: with
 * cap >= fw_base64_decoded_max(len) that never happens). dst is unspecified on error. */
fw_err fw_base64_decode(const char *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len,
                        fw_error *err);

/* Like fw_base64_decode into a new malloc'd buffer (caller frees *out) of at most max_out
 * bytes (0: no limit): TOO_LARGE when the decoded data would be longer. NOMEM when the
 * allocation fails. On error *out is NULL. */
fw_err fw_base64_decode_alloc(const char *src, size_t len, size_t max_out, uint8_t **out,
                              size_t *out_len, fw_error *err);

#ifdef __cplusplus
}
#endif
#endif
