/* Internal: parsing the worker's v1 JSON responses (src/server/api.h "Responses").
 *
 * A response must be an object with a "results" array of exactly n entries whose "index"
 * values are 0..n-1, each once (in any order). A successful entry of /v1/analyze and
 * /v1/detect has "width", "height" and "faces" (each face: "bbox" [4 numbers], "score",
 * optional "landmarks" [5 [x,y]], optional "embedding"); one of /v1/embed has "embedding".
 * Embeddings are base64 of little-endian float32 ("base64-f32") or, also accepted, a JSON
 * array of numbers; every embedding of a response has the same dimension (1..8192). A failed
 * entry has "error": {"code": string, "message": string}. null numbers (the worker's NaN)
 * read as NaN. Anything else (truncated or garbage text, wrong types, missing or duplicate
 * indexes) fails the whole response with FW_ERR_PARSE: the caller treats it as a failed
 * attempt. Never crashes on any input. */
#ifndef FW_CLIENT_RESPONSE_H
#define FW_CLIENT_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>

#include "facework/error.h"
#include "facework/facework.h"

#define FW__MAX_EMBEDDING_DIM 8192
#define FW__CODE_MAX 32

typedef enum fw__resp_kind {
    FW__RESP_ANALYZE = 0, /* /v1/analyze */
    FW__RESP_DETECT,      /* /v1/detect */
    FW__RESP_EMBED,       /* /v1/embed */
} fw__resp_kind;

typedef struct fw__item_out {
    fw_result res;           /* faces (embeddings in the same allocation), or the error */
    size_t dim;              /* floats per embedding; 0 when none */
    char code[FW__CODE_MAX]; /* the error code as sent (truncated), "" on success */
    bool final;              /* success, or an error that is a final answer about the input */
} fw__item_out;

/* Parses body[0..len) (need not be NUL-terminated) as the response to a request of n items.
 * On success out[0..n) are filled (caller clears each out[i].res with fw_result_clear); on
 * failure every out[i] is zeroed. */
fw_err fw__response_parse(const char *body, size_t len, fw__resp_kind kind, size_t n,
                          fw__item_out *out, fw_error *err);

/* Reads an error body {"error":{"code":..,"message":..}} into code/message (each truncated
 * to its capacity, NUL-terminated). False when the body is not such an object. */
bool fw__error_body_parse(const char *body, size_t len, char *code, size_t code_cap, char *message,
                          size_t message_cap);

/* fw_err for a code name (reverse of fw_err_name); unknown names give FW_ERR_UNAVAILABLE. */
fw_err fw__err_from_name(const char *name);

#endif
