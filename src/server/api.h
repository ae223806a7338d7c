/* The worker's HTTP API, transport-independent: request bodies in, JSON bodies out.
 *
 * Routes (DESIGN.md "HTTP API"; the legacy ones are a wire contract with the Python worker
 * this replaces):
 *
 *   POST /v1/analyze, /v1/detect, /v1/embed
 *     multipart/form-data: one or more parts named "image" (or "images"), the part's filename
 *       is the item id (default: the item's index as text); an optional "options" part holding
 *       a JSON object; other parts are ignored.
 *     application/json: {"images":[{"id"?: string|integer, "data": "<base64>"}], "options"?:{}}
 *     options (all optional, null means default; unknown keys are ignored; types are strict):
 *       min_score (number in [0,1]; 0 = detector default), max_faces (integer >= 0; 0 = all),
 *       min_face_size (number >= 0, pixels), embed (bool, default true; /v1/analyze only),
 *       landmarks (bool, default true), embedding_format ("float" | "base64-f32" |
 *       "base64-f16", default "float"); quality (bool, default true: a "quality" object per
 *       face), quality_preset ("none" | "ingest" | "enroll" | "verify" | "search", or an
 *       object {min_size, min_sharpness, max_yaw, max_pitch, min_quality} whose missing keys
 *       keep the "none" values), quality_action ("annotate" | "filter" | "reject"; default
 *       "filter" with a preset other than "none"), crops ("none" | "aligned" | "box"),
 *       face_margin (number in [0, 2], default 0.2), crop_format ("jpeg" | "png"),
 *       crop_quality (integer 1..100, default 95). docs/quality.md has the definitions.
 *     /v1/embed items are pre-aligned 112x112 face crops (JPEG/PNG/WebP), parsed the same way.
 *
 *   POST /detect_faces_batch_multipart (legacy): multipart only. Repeated "images" file parts;
 *     "image_hashes" (JSON text: a list of {"phash": string|integer, "index": integer}, one per
 *     image, indexes in range and unique; a missing "index" means the entry's list position);
 *     "min_face_quality" (float text, default 0.5), "require_face", "crop_faces" (bool text:
 *     true/false/1/0/yes/no/on/off/t/f/y/n, any case), "face_margin" (float text): the last of
 *     repeated fields wins, empty text means the default (as FastAPI did), other parts are
 *     ignored. crop_faces adds "crop" (base64 JPEG, quality 95, of the box grown by
 *     face_margin, clamped to [0, 2]) to each face; otherwise a face record has exactly the
 *     six keys of the old worker ("quality" stays the detector score).
 *
 *   POST /detect_faces_batch (legacy): JSON only. {"images":[{"data":"<base64>",
 *     "image_id"?: string|integer}], "min_face_quality"?, "require_face"?, "crop_faces"?,
 *     "face_margin"?}; like the pydantic model it replaces, numbers may also be numeric
 *     strings and booleans may be 0/1 or the bool texts above; unknown keys are ignored.
 *
 * Media types: v1 routes accept multipart/form-data and JSON; the legacy multipart route only
 * multipart; the legacy JSON route only JSON. "JSON" is application/json or any
 * application/<x>+json, and (as FastAPI did) a request without a Content-Type.
 *
 * Whole-request errors (fw_api_error.status): 400 malformed (bad JSON or multipart, wrong
 * option types or values, bad image_hashes, image_hashes count != image count, no images, a
 * structurally bad item such as a JSON entry without "data", an id longer than
 * FW_API_ID_MAX - 1 bytes); 413 too many images (or multipart parts) or a body over
 * max_body_bytes; 415 unsupported media type for the route; 503 out of memory.
 *
 * Per-item errors (fw_api_item.error; the other items still proceed): invalid base64
 * (CORRUPT), an empty image (EMPTY_INPUT), an image over max_image_bytes (TOO_LARGE). An
 * oversize image is deliberately a per-item error, not a 413, so that one bad file does not
 * fail a batch; the transport still answers 413 for a body over max_body_bytes.
 *
 * Responses: fw_api_encode_response writes the JSON of DESIGN.md. Legacy routes drop faces
 * whose score is below min_face_quality and map every failed item (bad base64, undecodable
 * image, ...) to an empty face list, as the old worker did; a phash repeated in image_hashes
 * is one key (at its first position, holding the faces of its last image), as the old
 * worker's dict did. Numbers: bbox and landmarks with 2 decimals, scores and float
 * embeddings with 9 significant digits (every float32 reads back exactly), took_ms and
 * processing_time_ms with 3 decimals; reals always carry a '.' or an exponent; NaN and
 * infinities become null. */
#ifndef FW_SERVER_API_H
#define FW_SERVER_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "facework/error.h"
#include "facework/facework.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FW_API_ID_MAX 256 /* item ids and phashes: at most 255 bytes */

#define FW_API_DEFAULT_MAX_IMAGES 64
#define FW_API_DEFAULT_MAX_IMAGE_BYTES (20u * 1024u * 1024u)
/* Same as the transport's default (FW_HTTP_DEFAULT_MAX_BODY_BYTES): wire one setting to both. */
#define FW_API_DEFAULT_MAX_BODY_BYTES ((size_t)64u * 1024u * 1024u)

typedef enum fw_api_route {
    FW_ROUTE_V1_ANALYZE = 0,
    FW_ROUTE_V1_DETECT,
    FW_ROUTE_V1_EMBED,
    FW_ROUTE_LEGACY_MULTIPART, /* POST /detect_faces_batch_multipart */
    FW_ROUTE_LEGACY_JSON,      /* POST /detect_faces_batch */
    FW_ROUTE__COUNT
} fw_api_route;

typedef enum fw_embedding_format {
    FW_EMBEDDING_FLOAT = 0,  /* a JSON array of numbers (float32 precision, round-trips) */
    FW_EMBEDDING_BASE64_F32, /* base64 of little-endian float32 values */
    FW_EMBEDDING_BASE64_F16, /* base64 of little-endian IEEE half values */
} fw_embedding_format;

typedef struct fw_api_limits {
    size_t max_images;       /* images per request; more: 413. 0: FW_API_DEFAULT_MAX_IMAGES */
    size_t max_image_bytes;  /* per decoded image; more: per-item TOO_LARGE. 0: default */
    size_t max_body_bytes;   /* whole body; more: 413. 0: FW_API_DEFAULT_MAX_BODY_BYTES */
    size_t max_header_bytes; /* multipart headers per part; 0: the multipart default */
    /* v1 JSON items may name a file instead of carrying bytes: {"id"?, "path": "..."}, read
     * from this directory (a relative path is taken under it; an absolute one must lie in
     * it once symlinks are resolved). NULL: "path" is refused (400), as over HTTP. Queue
     * jobs only (server/queue.h). A missing or unreadable file is a per-item error
     * (NOT_FOUND, IO), one over max_image_bytes TOO_LARGE, one outside the directory
     * INVALID_ARGUMENT. Not owned. */
    const char *files_root;
} fw_api_limits;

typedef struct fw_api_options {
    /* v1 */
    float min_score;     /* 0: the detector's default */
    int max_faces;       /* 0: all */
    float min_face_size; /* pixels, shorter box side; 0: none */
    bool embed;          /* compute embeddings: true for analyze and legacy, false for detect */
    bool landmarks;      /* include landmarks in v1 responses (default true) */
    fw_embedding_format embedding_format;
    /* per-face quality and crops (v1; legacy: crop_faces and face_margin) */
    bool quality;                     /* "quality" (default true) */
    fw_quality_thresholds thresholds; /* "quality_preset" (default "none") */
    fw_quality_action quality_action; /* "quality_action" (default "filter" when a preset
                                         other than "none" is given, else "annotate") */
    fw_crop_mode crops;               /* "crops" (default "none"; legacy crop_faces: box) */
    fw_image_format crop_format;      /* "crop_format" (default "jpeg") */
    int crop_quality;                 /* "crop_quality" (default 95) */
    float face_margin;                /* "face_margin" (default 0.2) */
    /* legacy (accepted and stored) */
    float min_face_quality; /* default 0.5 */
    bool require_face;      /* default false */
    bool crop_faces;        /* default false */
} fw_api_options;

typedef struct fw_api_item {
    char id[FW_API_ID_MAX];    /* client id, filename or index as text; NUL-terminated */
    char phash[FW_API_ID_MAX]; /* legacy multipart: the result key; "" otherwise */
    const uint8_t *data;       /* the encoded image: into the body or into `owned` */
    size_t len;
    uint8_t *owned; /* decoded base64 (internal; freed by fw_api_request_free) */
    fw_err error;   /* FW_OK, or why this item cannot be processed */
    char message[FW_ERROR_MESSAGE_MAX];
} fw_api_item;

typedef struct fw_api_request {
    fw_api_route route;
    size_t n_items;     /* >= 1 */
    fw_api_item *items; /* in input order */
    fw_api_options options;
} fw_api_request;

/* A whole-request failure: the HTTP status to answer and the message for its JSON body. */
typedef struct fw_api_error {
    int status;  /* 400, 413, 415 or 503 */
    fw_err code; /* PARSE, TOO_LARGE, UNSUPPORTED, NOMEM ...: the JSON "code" is its name */
    char message[FW_ERROR_MESSAGE_MAX];
} fw_api_error;

/* What the encoder needs besides the request and the pipeline results. */
typedef struct fw_api_response_info {
    double took_ms;        /* v1 "took_ms", legacy "processing_time_ms" */
    const char *provider;  /* v1 "provider" (NULL: "") */
    const char *model;     /* v1 "model": the pack name (NULL: "") */
    size_t embedding_dim;  /* floats per embedding (needed whenever an embedding is written) */
    bool gpu_used;         /* legacy "gpu_used" */
    const char *worker_id; /* legacy "worker_id" (NULL: "") */
} fw_api_response_info;

/* Fills limits with the defaults. */
void fw_api_limits_init(fw_api_limits *limits);

/* Maps a request path (without query) to its route; false when it is none of the five. */
bool fw_api_route_from_path(const char *path, size_t len, fw_api_route *route);

/* The route's path ("/v1/analyze", ...), for logs and metrics labels. */
const char *fw_api_route_path(fw_api_route route);

/* The HTTP status for a whole-request error code (PARSE -> 400, TOO_LARGE -> 413, ...). */
int fw_api_status_for(fw_err code);

/* Parses a request body for route. content_type is the Content-Type header value (NULL when
 * absent); limits may be NULL (defaults). On success *out is owned by the caller
 * (fw_api_request_free) and its items may point into body, which must outlive it. On failure
 * *out is NULL and *err (when non-NULL) holds the status and message; the return value is
 * err->code. Never fails with a 5xx status for bad input. */
fw_err fw_api_parse(fw_api_route route, const char *content_type, const uint8_t *body, size_t len,
                    const fw_api_limits *limits, fw_api_request **out, fw_api_error *err);

/* Frees a request and its decoded buffers. NULL is a no-op. */
void fw_api_request_free(fw_api_request *req);

/* The pipeline options a request asks for (detector threshold, max faces, embed). Legacy
 * routes keep the detector default: min_face_quality is applied by the encoder. */
void fw_api_analyze_opts(const fw_api_request *req, fw_analyze_opts *opts);

/* Encodes the response body for req. results[i] is the pipeline outcome of req->items[i];
 * items with an error of their own are encoded from it and their results[i] ignored (results
 * may be NULL when every item has one). For /v1/embed, a successful result holds one face
 * whose embedding is the crop's. On success *out is a malloc'd NUL-terminated JSON text
 * (caller frees) of *out_len bytes. Errors: INVALID_ARGUMENT (missing results or info, an
 * embedding with embedding_dim 0), NOMEM. Non-finite floats are written as null. */
fw_err fw_api_encode_response(const fw_api_request *req, const fw_result *results,
                              const fw_api_response_info *info, char **out, size_t *out_len,
                              fw_error *err);

/* {"error":{"code":..., "message":...}}: code NULL picks a name from status ("bad_request",
 * "payload_too_large", ...). Returns a malloc'd string (caller frees) or NULL when out of
 * memory; *len may be NULL. */
char *fw_api_error_json(int status, const char *code, const char *message, size_t *len);

/* The same body for a parse failure (code = fw_err_name(err->code)). */
char *fw_api_error_to_json(const fw_api_error *err, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
