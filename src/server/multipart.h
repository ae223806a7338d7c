/* multipart/form-data (RFC 7578 / RFC 2046) parsing of a whole request body in memory.
 *
 * Zero-copy: each part's data points into the body, which must outlive the fw_multipart.
 * Part names, filenames and content types are unescaped copies owned by the fw_multipart.
 *
 * Accepted: a preamble before the first delimiter and an epilogue after the close delimiter
 * (both ignored); transport padding (spaces, tabs) after a delimiter; header lines ending in
 * bare LF instead of CRLF; header names in any case; quoted or token parameter values with
 * backslash escapes inside quotes. The CRLF before each delimiter is required (it belongs to
 * the delimiter, so binary data may contain CR, LF and partial boundary strings freely);
 * "filename*" (RFC 5987) is ignored; other headers are ignored.
 *
 * Time is linear in the body size for any input: the boundary cannot contain CR or LF, so
 * each candidate delimiter comparison stops at the next line break at the latest. */
#ifndef FW_SERVER_MULTIPART_H
#define FW_SERVER_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#include "facework/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FW_MULTIPART_DEFAULT_MAX_PARTS 256
#define FW_MULTIPART_DEFAULT_MAX_HEADER_BYTES 8192
#define FW_MULTIPART_MAX_BOUNDARY 200 /* RFC 2046 says 70; be generous */

typedef struct fw_multipart_limits {
    size_t max_parts;        /* more parts: TOO_LARGE. 0: FW_MULTIPART_DEFAULT_MAX_PARTS */
    size_t max_header_bytes; /* per part, line breaks included; 0: the default above */
} fw_multipart_limits;

typedef struct fw_multipart_part {
    const char *name;         /* Content-Disposition name (NUL-terminated, never NULL) */
    const char *filename;     /* filename parameter, or NULL when the part has none */
    const char *content_type; /* Content-Type header value trimmed, or NULL when absent */
    const uint8_t *data;      /* the part's content: points into the body */
    size_t len;
} fw_multipart_part;

typedef struct fw_multipart {
    size_t n_parts;
    fw_multipart_part *parts; /* in body order */
    char **strings;           /* internal: one allocation per part for its strings */
} fw_multipart;

/* Fills limits with the defaults. */
void fw_multipart_limits_init(fw_multipart_limits *limits);

/* Extracts the boundary parameter of a multipart Content-Type value into out (capacity cap,
 * NUL-terminated; cap > FW_MULTIPART_MAX_BOUNDARY always suffices). Errors: UNSUPPORTED when
 * the media type is not multipart/form-data (content_type may be NULL); PARSE "missing
 * boundary" or an invalid one (empty, too long, CR/LF or other control characters, a space at
 * the end) or a malformed parameter list. */
fw_err fw_multipart_boundary(const char *content_type, char *out, size_t cap, fw_error *err);

/* Parses body[0..len) as multipart/form-data with the boundary from content_type. limits may
 * be NULL (defaults). On success *out is owned by the caller (fw_multipart_free) and has at
 * least one part. Errors (*out is NULL): those of fw_multipart_boundary; PARSE for "no parts",
 * an unterminated part or a missing closing boundary, a header line too long, headers too
 * large, a malformed header, a part without Content-Disposition or without a name;
 * TOO_LARGE for more than max_parts parts; NOMEM. */
fw_err fw_multipart_parse(const char *content_type, const uint8_t *body, size_t len,
                          const fw_multipart_limits *limits, fw_multipart **out, fw_error *err);

/* Frees the part table and strings (not the body). NULL is a no-op. */
void fw_multipart_free(fw_multipart *mp);

#ifdef __cplusplus
}
#endif
#endif
