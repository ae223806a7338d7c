#include "server/api.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "server/multipart.h"
#include "util/base64.h"
#include "util/buf.h"
#include "util/half.h"

/* Non-image parts a multipart request may carry besides its images (options, image_hashes,
 * min_face_quality, ...): the part limit is max_images plus this. */
#define EXTRA_PARTS 16

/* ======================================================================================== */
/* small helpers                                                                             */

void fw_api_limits_init(fw_api_limits *limits)
{
    limits->max_images = FW_API_DEFAULT_MAX_IMAGES;
    limits->max_image_bytes = FW_API_DEFAULT_MAX_IMAGE_BYTES;
    limits->max_body_bytes = FW_API_DEFAULT_MAX_BODY_BYTES;
    limits->max_header_bytes = FW_MULTIPART_DEFAULT_MAX_HEADER_BYTES;
    limits->files_root = NULL;
}

static const char *const ROUTE_PATHS[FW_ROUTE__COUNT] = {
    [FW_ROUTE_V1_ANALYZE] = "/v1/analyze",
    [FW_ROUTE_V1_DETECT] = "/v1/detect",
    [FW_ROUTE_V1_EMBED] = "/v1/embed",
    [FW_ROUTE_LEGACY_MULTIPART] = "/detect_faces_batch_multipart",
    [FW_ROUTE_LEGACY_JSON] = "/detect_faces_batch",
};

bool fw_api_route_from_path(const char *path, size_t len, fw_api_route *route)
{
    if (!path)
        return false;
    for (int r = 0; r < FW_ROUTE__COUNT; r++) {
        size_t n = strlen(ROUTE_PATHS[r]);
        if (n == len && memcmp(path, ROUTE_PATHS[r], n) == 0) {
            *route = (fw_api_route)r;
            return true;
        }
    }
    return false;
}

const char *fw_api_route_path(fw_api_route route)
{
    if ((unsigned)route >= FW_ROUTE__COUNT)
        return "?";
    return ROUTE_PATHS[route];
}

int fw_api_status_for(fw_err code)
{
    switch (code) {
    case FW_OK:
        return 200;
    case FW_ERR_TOO_LARGE:
    case FW_ERR_TOO_MANY_PIXELS:
        return 413;
    case FW_ERR_UNSUPPORTED:
        return 415;
    case FW_ERR_AUTH:
        return 401;
    case FW_ERR_NOT_FOUND:
        return 404;
    case FW_ERR_NOMEM:
    case FW_ERR_BUSY:
    case FW_ERR_UNAVAILABLE:
        return 503;
    case FW_ERR_TIMEOUT:
        return 504;
    case FW_ERR_INVALID_ARGUMENT:
    case FW_ERR_EMPTY_INPUT:
    case FW_ERR_CORRUPT:
    case FW_ERR_PARSE:
        return 400;
    default:
        return 500;
    }
}

static fw_err api_fail(fw_api_error *e, fw_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static fw_err api_fail(fw_api_error *e, fw_err code, const char *fmt, ...)
{
    e->code = code;
    e->status = fw_api_status_for(code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return code;
}

static void item_fail(fw_api_item *it, fw_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void item_fail(fw_api_item *it, fw_err code, const char *fmt, ...)
{
    it->error = code;
    it->data = NULL;
    it->len = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->message, sizeof it->message, fmt, ap);
    va_end(ap);
}

/* ======================================================================================== */
/* media types                                                                               */

typedef enum media { MEDIA_JSON, MEDIA_MULTIPART, MEDIA_OTHER } media;

static media classify(const char *ct, char *shown, size_t shown_cap)
{
    shown[0] = '\0';
    if (!ct)
        return MEDIA_JSON;
    const char *p = ct;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = strcspn(p, ";");
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0)
        return MEDIA_JSON;
    snprintf(shown, shown_cap, "%.*s", (int)(n < 64 ? n : 64), p);
    for (char *s = shown; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            *s = '?';
    static const char mp[] = "multipart/form-data", js[] = "application/json",
                      app[] = "application/";
    if (n == sizeof mp - 1 && strncasecmp(p, mp, n) == 0)
        return MEDIA_MULTIPART;
    if (n == sizeof js - 1 && strncasecmp(p, js, n) == 0)
        return MEDIA_JSON;
    if (n > sizeof app - 1 + 5 && strncasecmp(p, app, sizeof app - 1) == 0 &&
        strncasecmp(p + n - 5, "+json", 5) == 0)
        return MEDIA_JSON;
    return MEDIA_OTHER;
}

/* ======================================================================================== */
/* request construction                                                                      */

typedef struct parse_ctx {
    fw_api_request *req;
    fw_api_limits lim;
    fw_api_error *err;
} parse_ctx;

static void options_defaults(fw_api_route route, fw_api_options *o)
{
    memset(o, 0, sizeof *o);
    o->embed = route != FW_ROUTE_V1_DETECT;
    o->landmarks = true;
    o->embedding_format = FW_EMBEDDING_FLOAT;
    o->min_face_quality = 0.5f;
    o->require_face = false;
    o->crop_faces = false;
    fw_analyze_opts a;
    fw_analyze_opts_init(&a);
    o->quality = a.quality;
    o->thresholds = a.thresholds;
    o->quality_action = a.quality_action;
    o->crops = a.crops;
    o->crop_format = a.crop_format;
    o->crop_quality = a.crop_quality;
    o->face_margin = a.face_margin;
}

static fw_err alloc_items(parse_ctx *c, size_t n)
{
    if (n == 0)
        return api_fail(c->err, FW_ERR_PARSE, "no images in the request");
    if (n > c->lim.max_images)
        return api_fail(c->err, FW_ERR_TOO_LARGE, "too many images: %zu (limit %zu)", n,
                        c->lim.max_images);
    c->req->items = calloc(n, sizeof *c->req->items);
    if (!c->req->items)
        return api_fail(c->err, FW_ERR_NOMEM, "out of memory");
    c->req->n_items = n;
    for (size_t i = 0; i < n; i++)
        snprintf(c->req->items[i].id, sizeof c->req->items[i].id, "%zu", i);
    return FW_OK;
}

/* Copies an id of n bytes; 400 when too long or holding a NUL. */
static fw_err copy_id(parse_ctx *c, char *dst, const char *s, size_t n, const char *what,
                      size_t index)
{
    if (n >= FW_API_ID_MAX)
        return api_fail(c->err, FW_ERR_PARSE, "image %zu: %s longer than %d bytes", index, what,
                        FW_API_ID_MAX - 1);
    if (memchr(s, '\0', n))
        return api_fail(c->err, FW_ERR_PARSE, "image %zu: %s contains a NUL byte", index, what);
    memcpy(dst, s, n);
    dst[n] = '\0';
    return FW_OK;
}

static void item_set_bytes(parse_ctx *c, fw_api_item *it, const uint8_t *data, size_t len)
{
    if (len == 0) {
        item_fail(it, FW_ERR_EMPTY_INPUT, "empty image");
    } else if (len > c->lim.max_image_bytes) {
        item_fail(it, FW_ERR_TOO_LARGE, "image is %zu bytes, over the limit of %zu", len,
                  c->lim.max_image_bytes);
    } else {
        it->data = data;
        it->len = len;
    }
}

static fw_err item_set_base64(parse_ctx *c, fw_api_item *it, const char *s, size_t n)
{
    uint8_t *buf;
    size_t len;
    fw_error e;
    fw_err rc = fw_base64_decode_alloc(s, n, c->lim.max_image_bytes, &buf, &len, &e);
    if (rc == FW_ERR_NOMEM)
        return api_fail(c->err, FW_ERR_NOMEM, "out of memory decoding base64");
    if (rc == FW_ERR_TOO_LARGE) {
        item_fail(it, FW_ERR_TOO_LARGE, "image is over the limit of %zu bytes",
                  c->lim.max_image_bytes);
        return FW_OK;
    }
    if (rc) {
        item_fail(it, rc, "invalid base64: %s", e.message);
        return FW_OK;
    }
    if (len == 0) {
        free(buf);
        item_fail(it, FW_ERR_EMPTY_INPUT, "empty image");
        return FW_OK;
    }
    it->owned = buf;
    it->data = buf;
    it->len = len;
    return FW_OK;
}

/* An item named by a file under lim.files_root (queue jobs). */
static fw_err item_set_file(parse_ctx *c, fw_api_item *it, const char *s, size_t n)
{
    if (n == 0 || memchr(s, '\0', n) || n >= 4096) {
        item_fail(it, FW_ERR_INVALID_ARGUMENT, "bad file path");
        return FW_OK;
    }
    char joined[8192], root[PATH_MAX], real[PATH_MAX];
    snprintf(joined, sizeof joined, "%s%s%.*s", s[0] == '/' ? "" : c->lim.files_root,
             s[0] == '/' ? "" : "/", (int)n, s);
    if (!realpath(c->lim.files_root, root)) {
        item_fail(it, FW_ERR_NOT_FOUND, "the worker's files directory is missing");
        return FW_OK;
    }
    if (!realpath(joined, real)) {
        item_fail(it, FW_ERR_NOT_FOUND, "no such file");
        return FW_OK;
    }
    size_t rl = strlen(root);
    if (strncmp(real, root, rl) != 0 || (real[rl] != '/' && !(rl == 1 && root[0] == '/'))) {
        item_fail(it, FW_ERR_INVALID_ARGUMENT, "the file is outside the worker's files directory");
        return FW_OK;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    fw_error e;
    fw_err rc = fw_read_file(real, c->lim.max_image_bytes, &buf, &len, &e);
    if (rc == FW_ERR_NOMEM)
        return api_fail(c->err, FW_ERR_NOMEM, "out of memory reading a file");
    if (rc) {
        item_fail(it, rc, "%s",
                  rc == FW_ERR_TOO_LARGE ? "image is over the byte limit" : "cannot read the file");
        return FW_OK;
    }
    if (len == 0) {
        free(buf);
        item_fail(it, FW_ERR_EMPTY_INPUT, "empty image");
        return FW_OK;
    }
    it->owned = buf;
    it->data = buf;
    it->len = len;
    return FW_OK;
}

/* ======================================================================================== */
/* option values                                                                             */

/* Strict (v1): numbers are numbers, booleans are booleans. */
static fw_err opt_number(parse_ctx *c, json_t *v, const char *name, double lo, double hi,
                         float *out)
{
    if (json_is_null(v))
        return FW_OK;
    double d = json_number_value(v);
    if (!json_is_number(v) || !isfinite(d) || d < lo || d > hi) {
        if (isinf(hi))
            return api_fail(c->err, FW_ERR_PARSE, "option %s must be a number >= %g", name, lo);
        return api_fail(c->err, FW_ERR_PARSE, "option %s must be a number in [%g, %g]", name, lo,
                        hi);
    }
    *out = (float)d;
    return FW_OK;
}

static fw_err opt_bool(parse_ctx *c, json_t *v, const char *name, bool *out)
{
    if (json_is_null(v))
        return FW_OK;
    if (!json_is_boolean(v))
        return api_fail(c->err, FW_ERR_PARSE, "option %s must be true or false", name);
    *out = json_is_true(v);
    return FW_OK;
}

/* One of names (a string option); *out gets its index. */
static fw_err opt_choice(parse_ctx *c, json_t *v, const char *name, const char *const *names, int n,
                         const char *expect, int *out)
{
    if (json_is_null(v))
        return FW_OK;
    const char *s = json_string_value(v);
    for (int i = 0; s && i < n; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return FW_OK;
        }
    return api_fail(c->err, FW_ERR_PARSE, "option %s must be %s", name, expect);
}

/* quality_preset: a preset name, or an object of thresholds over the "none" preset. */
static fw_err opt_preset(parse_ctx *c, json_t *v, fw_quality_thresholds *t, bool *named)
{
    *named = false;
    if (json_is_null(v))
        return FW_OK;
    if (json_is_string(v)) {
        if (fw_quality_preset(json_string_value(v), t) != FW_OK)
            return api_fail(c->err, FW_ERR_PARSE,
                            "option quality_preset must be \"none\", \"ingest\", \"enroll\", "
                            "\"verify\", \"search\" or an object of thresholds");
        *named = strcmp(json_string_value(v), "none") != 0;
        return FW_OK;
    }
    if (!json_is_object(v))
        return api_fail(c->err, FW_ERR_PARSE,
                        "option quality_preset must be a preset name or an object");
    fw_quality_preset("none", t);
    static const struct {
        const char *key;
        size_t off;
        double lo, hi;
    } fields[] = {
        {"min_size", offsetof(fw_quality_thresholds, min_size), 0, INFINITY},
        {"min_sharpness", offsetof(fw_quality_thresholds, min_sharpness), 0, INFINITY},
        {"max_yaw", offsetof(fw_quality_thresholds, max_yaw), 1, 90},
        {"max_pitch", offsetof(fw_quality_thresholds, max_pitch), 1, 90},
        {"min_quality", offsetof(fw_quality_thresholds, min_quality), 0, 1},
    };
    const char *key;
    json_t *x;
    json_object_foreach(v, key, x)
    {
        size_t i = 0;
        while (i < sizeof fields / sizeof fields[0] && strcmp(key, fields[i].key) != 0)
            i++;
        if (i == sizeof fields / sizeof fields[0])
            return api_fail(c->err, FW_ERR_PARSE,
                            "option quality_preset: unknown threshold \"%.64s\" (min_size, "
                            "min_sharpness, max_yaw, max_pitch, min_quality)",
                            key);
        char name[64];
        snprintf(name, sizeof name, "quality_preset.%s", fields[i].key);
        fw_err rc = opt_number(c, x, name, fields[i].lo, fields[i].hi,
                               (float *)(void *)((char *)t + fields[i].off));
        if (rc)
            return rc;
    }
    *named = true;
    return FW_OK;
}

static fw_err parse_v1_options(parse_ctx *c, json_t *obj)
{
    fw_api_options *o = &c->req->options;
    if (!json_is_object(obj))
        return api_fail(c->err, FW_ERR_PARSE, "options must be a JSON object");
    static const char *const actions[] = {"annotate", "filter", "reject"};
    static const char *const crops[] = {"none", "aligned", "box"};
    static const char *const formats[] = {"jpeg", "png"};
    const char *key;
    json_t *v;
    fw_err rc = FW_OK;
    bool preset = false;
    int action = -1;
    json_object_foreach(obj, key, v)
    {
        if (strcmp(key, "min_score") == 0) {
            rc = opt_number(c, v, key, 0.0, 1.0, &o->min_score);
        } else if (strcmp(key, "min_face_size") == 0) {
            rc = opt_number(c, v, key, 0.0, INFINITY, &o->min_face_size);
        } else if (strcmp(key, "max_faces") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX)
                return api_fail(c->err, FW_ERR_PARSE, "option max_faces must be an integer >= 0");
            o->max_faces = (int)json_integer_value(v);
        } else if (strcmp(key, "embed") == 0) {
            rc = opt_bool(c, v, key, &o->embed);
        } else if (strcmp(key, "landmarks") == 0) {
            rc = opt_bool(c, v, key, &o->landmarks);
        } else if (strcmp(key, "embedding_format") == 0) {
            if (json_is_null(v))
                continue;
            const char *s = json_string_value(v);
            if (s && strcmp(s, "float") == 0)
                o->embedding_format = FW_EMBEDDING_FLOAT;
            else if (s && strcmp(s, "base64-f32") == 0)
                o->embedding_format = FW_EMBEDDING_BASE64_F32;
            else if (s && strcmp(s, "base64-f16") == 0)
                o->embedding_format = FW_EMBEDDING_BASE64_F16;
            else
                return api_fail(c->err, FW_ERR_PARSE,
                                "option embedding_format must be \"float\", \"base64-f32\" or "
                                "\"base64-f16\"");
        } else if (strcmp(key, "quality") == 0) {
            rc = opt_bool(c, v, key, &o->quality);
        } else if (strcmp(key, "quality_preset") == 0) {
            rc = opt_preset(c, v, &o->thresholds, &preset);
        } else if (strcmp(key, "quality_action") == 0) {
            rc = opt_choice(c, v, key, actions, 3, "\"annotate\", \"filter\" or \"reject\"",
                            &action);
        } else if (strcmp(key, "crops") == 0) {
            int m = (int)o->crops;
            rc = opt_choice(c, v, key, crops, 3, "\"none\", \"aligned\" or \"box\"", &m);
            o->crops = (fw_crop_mode)m;
        } else if (strcmp(key, "crop_format") == 0) {
            int f = o->crop_format == FW_FORMAT_PNG;
            rc = opt_choice(c, v, key, formats, 2, "\"jpeg\" or \"png\"", &f);
            o->crop_format = f ? FW_FORMAT_PNG : FW_FORMAT_JPEG;
        } else if (strcmp(key, "crop_quality") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 100)
                return api_fail(c->err, FW_ERR_PARSE,
                                "option crop_quality must be an integer in [1, 100]");
            o->crop_quality = (int)json_integer_value(v);
        } else if (strcmp(key, "face_margin") == 0) {
            rc = opt_number(c, v, key, 0.0, 2.0, &o->face_margin);
        }
        if (rc)
            return rc;
    }
    if (action >= 0)
        o->quality_action = (fw_quality_action)action;
    else if (preset)
        o->quality_action = FW_QUALITY_FILTER;
    return FW_OK;
}

/* Lax (legacy, like pydantic): bool texts, case-insensitive. Returns -1 when not a bool. */
static int bool_text(const char *s, size_t n)
{
    static const char *const yes[] = {"true", "1", "yes", "on", "t", "y"};
    static const char *const no[] = {"false", "0", "no", "off", "f", "n"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strlen(yes[i]) == n && strncasecmp(s, yes[i], n) == 0)
            return 1;
        if (strlen(no[i]) == n && strncasecmp(s, no[i], n) == 0)
            return 0;
    }
    return -1;
}

/* Trims ASCII whitespace of [*s, *s + *n). */
static void trim_text(const char **s, size_t *n)
{
    while (*n && strchr(" \t\r\n\f\v", (*s)[0]) && (*s)[0])
        (*s)++, (*n)--;
    while (*n && strchr(" \t\r\n\f\v", (*s)[*n - 1]) && (*s)[*n - 1])
        (*n)--;
}

/* A float from text (legacy form fields, numeric strings). Empty text means dflt, as
 * FastAPI treated an empty form field as absent. */
static fw_err float_text(parse_ctx *c, const char *s, size_t n, const char *name, float dflt,
                         float *out)
{
    trim_text(&s, &n);
    if (n == 0) {
        *out = dflt;
        return FW_OK;
    }
    char tmp[64];
    if (n >= sizeof tmp || memchr(s, '\0', n))
        return api_fail(c->err, FW_ERR_PARSE, "%s must be a number", name);
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    double d = strtod(tmp, &end);
    if (end != tmp + n || !isfinite(d) || fabs(d) > 3.0e38)
        return api_fail(c->err, FW_ERR_PARSE, "%s must be a number, got \"%.40s\"", name, tmp);
    *out = (float)d;
    return FW_OK;
}

static fw_err bool_field_text(parse_ctx *c, const char *s, size_t n, const char *name, bool dflt,
                              bool *out)
{
    trim_text(&s, &n);
    if (n == 0) {
        *out = dflt;
        return FW_OK;
    }
    int b = bool_text(s, n);
    if (b < 0)
        return api_fail(c->err, FW_ERR_PARSE, "%s must be a boolean (true/false)", name);
    *out = b == 1;
    return FW_OK;
}

static fw_err lax_float(parse_ctx *c, json_t *v, const char *name, float *out)
{
    if (!v || json_is_null(v))
        return FW_OK;
    if (json_is_string(v))
        return float_text(c, json_string_value(v), json_string_length(v), name, *out, out);
    double d = json_number_value(v);
    if (!json_is_number(v) || !isfinite(d) || fabs(d) > 3.0e38)
        return api_fail(c->err, FW_ERR_PARSE, "%s must be a number", name);
    *out = (float)d;
    return FW_OK;
}

static fw_err lax_bool(parse_ctx *c, json_t *v, const char *name, bool *out)
{
    if (!v || json_is_null(v))
        return FW_OK;
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return FW_OK;
    }
    if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1)) {
        *out = json_integer_value(v) == 1;
        return FW_OK;
    }
    if (json_is_string(v) && json_string_length(v) > 0) {
        int b = bool_text(json_string_value(v), json_string_length(v));
        if (b >= 0) {
            *out = b == 1;
            return FW_OK;
        }
    }
    return api_fail(c->err, FW_ERR_PARSE, "%s must be a boolean", name);
}

/* ======================================================================================== */
/* JSON bodies                                                                               */

static fw_err load_json(parse_ctx *c, const uint8_t *body, size_t len, json_t **out)
{
    json_error_t je;
    *out = json_loadb((const char *)body, len, 0, &je);
    if (!*out)
        return api_fail(c->err, FW_ERR_PARSE, "invalid JSON at line %d column %d: %s", je.line,
                        je.column, je.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return api_fail(c->err, FW_ERR_PARSE, "the JSON body must be an object");
    }
    return FW_OK;
}

/* An id from a JSON string or integer. */
static fw_err json_id(parse_ctx *c, json_t *v, const char *key, size_t index, char *dst)
{
    if (!v || json_is_null(v))
        return FW_OK;
    if (json_is_string(v))
        return copy_id(c, dst, json_string_value(v), json_string_length(v), key, index);
    if (json_is_integer(v)) {
        snprintf(dst, FW_API_ID_MAX, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return FW_OK;
    }
    return api_fail(c->err, FW_ERR_PARSE, "image %zu: %s must be a string or an integer", index,
                    key);
}

static fw_err json_images(parse_ctx *c, json_t *root, const char *id_key)
{
    json_t *arr = json_object_get(root, "images");
    if (!arr)
        return api_fail(c->err, FW_ERR_PARSE, "missing \"images\"");
    if (!json_is_array(arr))
        return api_fail(c->err, FW_ERR_PARSE, "\"images\" must be a list");
    fw_err rc = alloc_items(c, json_array_size(arr));
    if (rc)
        return rc;
    for (size_t i = 0; i < c->req->n_items; i++) {
        json_t *e = json_array_get(arr, i);
        fw_api_item *it = &c->req->items[i];
        if (!json_is_object(e))
            return api_fail(c->err, FW_ERR_PARSE, "images[%zu] must be an object", i);
        if ((rc = json_id(c, json_object_get(e, id_key), id_key, i, it->id)))
            return rc;
        json_t *data = json_object_get(e, "data"), *path = json_object_get(e, "path");
        if (!data && json_is_string(path) && c->lim.files_root) {
            if ((rc = item_set_file(c, it, json_string_value(path), json_string_length(path))))
                return rc;
            continue;
        }
        if (!data && path && !c->lim.files_root)
            return api_fail(c->err, FW_ERR_PARSE,
                            "images[%zu].path: file paths are not accepted here (queue jobs "
                            "of a worker with --queue-files only)",
                            i);
        if (!json_is_string(data))
            return api_fail(c->err, FW_ERR_PARSE, "images[%zu].data must be a base64 string", i);
        if ((rc = item_set_base64(c, it, json_string_value(data), json_string_length(data))))
            return rc;
    }
    return FW_OK;
}

static fw_err parse_v1_json(parse_ctx *c, const uint8_t *body, size_t len)
{
    json_t *root;
    fw_err rc = load_json(c, body, len, &root);
    if (rc)
        return rc;
    json_t *opts = json_object_get(root, "options");
    if (opts && !json_is_null(opts))
        rc = parse_v1_options(c, opts);
    if (!rc)
        rc = json_images(c, root, "id");
    json_decref(root);
    return rc;
}

static fw_err parse_legacy_json(parse_ctx *c, const uint8_t *body, size_t len)
{
    json_t *root;
    fw_err rc = load_json(c, body, len, &root);
    if (rc)
        return rc;
    fw_api_options *o = &c->req->options;
    if (!(rc = lax_float(c, json_object_get(root, "min_face_quality"), "min_face_quality",
                         &o->min_face_quality)) &&
        !(rc = lax_bool(c, json_object_get(root, "require_face"), "require_face",
                        &o->require_face)) &&
        !(rc = lax_bool(c, json_object_get(root, "crop_faces"), "crop_faces", &o->crop_faces)) &&
        !(rc = lax_float(c, json_object_get(root, "face_margin"), "face_margin", &o->face_margin)))
        rc = json_images(c, root, "image_id");
    json_decref(root);
    return rc;
}

/* ======================================================================================== */
/* multipart bodies                                                                          */

static fw_err load_multipart(parse_ctx *c, const char *ct, const uint8_t *body, size_t len,
                             fw_multipart **mp)
{
    fw_multipart_limits ml = {.max_parts = c->lim.max_images + EXTRA_PARTS,
                              .max_header_bytes = c->lim.max_header_bytes};
    fw_error e;
    fw_err rc = fw_multipart_parse(ct, body, len, &ml, mp, &e);
    if (rc == FW_ERR_TOO_LARGE)
        return api_fail(c->err, rc, "%s (at most %zu images)", e.message, c->lim.max_images);
    if (rc == FW_ERR_NOMEM)
        return api_fail(c->err, rc, "out of memory");
    if (rc)
        return api_fail(c->err, FW_ERR_PARSE, "malformed multipart body: %s", e.message);
    return FW_OK;
}

static bool is_image_part(const fw_multipart_part *p, bool v1)
{
    return strcmp(p->name, "images") == 0 || (v1 && strcmp(p->name, "image") == 0);
}

/* Allocates the items for the image parts and fills their data and ids (filenames). */
static fw_err multipart_images(parse_ctx *c, const fw_multipart *mp, bool v1)
{
    size_t n = 0;
    for (size_t i = 0; i < mp->n_parts; i++)
        n += is_image_part(&mp->parts[i], v1);
    if (n == 0)
        return api_fail(c->err, FW_ERR_PARSE,
                        "no images in the request (expected parts named "
                        "\"%s\")",
                        v1 ? "image" : "images");
    fw_err rc = alloc_items(c, n);
    if (rc)
        return rc;
    size_t k = 0;
    for (size_t i = 0; i < mp->n_parts; i++) {
        const fw_multipart_part *p = &mp->parts[i];
        if (!is_image_part(p, v1))
            continue;
        fw_api_item *it = &c->req->items[k];
        if (p->filename && p->filename[0]) {
            rc = copy_id(c, it->id, p->filename, strlen(p->filename), "filename", k);
            if (rc)
                return rc;
        }
        item_set_bytes(c, it, p->data, p->len);
        k++;
    }
    return FW_OK;
}

static fw_err parse_v1_multipart(parse_ctx *c, const char *ct, const uint8_t *body, size_t len)
{
    fw_multipart *mp;
    fw_err rc = load_multipart(c, ct, body, len, &mp);
    if (rc)
        return rc;
    const fw_multipart_part *opts = NULL;
    for (size_t i = 0; i < mp->n_parts && !rc; i++) {
        if (strcmp(mp->parts[i].name, "options") != 0)
            continue;
        if (opts)
            rc = api_fail(c->err, FW_ERR_PARSE, "more than one \"options\" part");
        opts = &mp->parts[i];
    }
    if (!rc && opts) {
        const char *s = (const char *)opts->data;
        size_t n = opts->len;
        trim_text(&s, &n);
        if (n > 0) {
            json_error_t je;
            json_t *o = json_loadb(s, n, 0, &je);
            if (!o)
                rc = api_fail(c->err, FW_ERR_PARSE,
                              "invalid JSON in the options part at line %d column %d: %s", je.line,
                              je.column, je.text);
            else
                rc = parse_v1_options(c, o);
            json_decref(o);
        }
    }
    if (!rc)
        rc = multipart_images(c, mp, true);
    fw_multipart_free(mp);
    return rc;
}

/* image_hashes: a JSON list of {"phash","index"} mapping each image to its result key. */
static fw_err parse_image_hashes(parse_ctx *c, const fw_multipart_part *part)
{
    fw_api_request *req = c->req;
    json_error_t je;
    json_t *arr = json_loadb((const char *)part->data, part->len, JSON_DECODE_ANY, &je);
    if (!arr)
        return api_fail(c->err, FW_ERR_PARSE, "image_hashes is not valid JSON: %s", je.text);
    fw_err rc = FW_OK;
    bool *seen = NULL;
    if (!json_is_array(arr)) {
        rc = api_fail(c->err, FW_ERR_PARSE, "image_hashes must be a JSON list");
        goto done;
    }
    if (json_array_size(arr) != req->n_items) {
        rc = api_fail(c->err, FW_ERR_PARSE, "image_hashes has %zu entries for %zu images",
                      json_array_size(arr), req->n_items);
        goto done;
    }
    seen = calloc(req->n_items, sizeof *seen);
    if (!seen) {
        rc = api_fail(c->err, FW_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < req->n_items; i++) {
        json_t *e = json_array_get(arr, i);
        if (!json_is_object(e)) {
            rc = api_fail(c->err, FW_ERR_PARSE, "image_hashes[%zu] must be an object", i);
            goto done;
        }
        json_t *jidx = json_object_get(e, "index");
        json_int_t idx = (json_int_t)i;
        if (jidx && !json_is_null(jidx)) {
            if (!json_is_integer(jidx)) {
                rc =
                    api_fail(c->err, FW_ERR_PARSE, "image_hashes[%zu].index must be an integer", i);
                goto done;
            }
            idx = json_integer_value(jidx);
        }
        if (idx < 0 || (size_t)idx >= req->n_items) {
            rc = api_fail(c->err, FW_ERR_PARSE,
                          "image_hashes[%zu].index %" JSON_INTEGER_FORMAT
                          " is out of range (%zu images)",
                          i, idx, req->n_items);
            goto done;
        }
        if (seen[idx]) {
            rc = api_fail(c->err, FW_ERR_PARSE,
                          "image_hashes[%zu].index %" JSON_INTEGER_FORMAT " is repeated", i, idx);
            goto done;
        }
        seen[idx] = true;
        json_t *ph = json_object_get(e, "phash");
        char *dst = req->items[idx].phash;
        if (json_is_string(ph)) {
            if (json_string_length(ph) >= FW_API_ID_MAX) {
                rc = api_fail(c->err, FW_ERR_PARSE,
                              "image_hashes[%zu].phash is longer than %d "
                              "bytes",
                              i, FW_API_ID_MAX - 1);
                goto done;
            }
            memcpy(dst, json_string_value(ph), json_string_length(ph) + 1);
        } else if (json_is_integer(ph)) {
            snprintf(dst, FW_API_ID_MAX, "%" JSON_INTEGER_FORMAT, json_integer_value(ph));
        } else {
            rc = api_fail(c->err, FW_ERR_PARSE, "image_hashes[%zu].phash must be a string", i);
            goto done;
        }
    }
done:
    free(seen);
    json_decref(arr);
    return rc;
}

static fw_err parse_legacy_multipart(parse_ctx *c, const char *ct, const uint8_t *body, size_t len)
{
    fw_multipart *mp;
    fw_err rc = load_multipart(c, ct, body, len, &mp);
    if (rc)
        return rc;
    rc = multipart_images(c, mp, false);
    fw_api_options *o = &c->req->options, dflt;
    options_defaults(c->req->route, &dflt);
    const fw_multipart_part *hashes = NULL;
    for (size_t i = 0; i < mp->n_parts && !rc; i++) {
        const fw_multipart_part *p = &mp->parts[i];
        const char *s = (const char *)p->data;
        if (strcmp(p->name, "image_hashes") == 0)
            hashes = p; /* the last one wins, as with any repeated form field */
        else if (strcmp(p->name, "min_face_quality") == 0)
            rc = float_text(c, s, p->len, p->name, dflt.min_face_quality, &o->min_face_quality);
        else if (strcmp(p->name, "face_margin") == 0)
            rc = float_text(c, s, p->len, p->name, dflt.face_margin, &o->face_margin);
        else if (strcmp(p->name, "require_face") == 0)
            rc = bool_field_text(c, s, p->len, p->name, dflt.require_face, &o->require_face);
        else if (strcmp(p->name, "crop_faces") == 0)
            rc = bool_field_text(c, s, p->len, p->name, dflt.crop_faces, &o->crop_faces);
    }
    if (!rc && !hashes)
        rc = api_fail(c->err, FW_ERR_PARSE, "missing the image_hashes field");
    if (!rc)
        rc = parse_image_hashes(c, hashes);
    fw_multipart_free(mp);
    return rc;
}

/* ======================================================================================== */
/* fw_api_parse                                                                              */

void fw_api_request_free(fw_api_request *req)
{
    if (!req)
        return;
    if (req->items)
        for (size_t i = 0; i < req->n_items; i++)
            free(req->items[i].owned);
    free(req->items);
    free(req);
}

fw_err fw_api_parse(fw_api_route route, const char *content_type, const uint8_t *body, size_t len,
                    const fw_api_limits *limits, fw_api_request **out, fw_api_error *err)
{
    fw_api_error local;
    parse_ctx c = {.err = err ? err : &local};
    c.err->status = 200;
    c.err->code = FW_OK;
    c.err->message[0] = '\0';
    *out = NULL;
    fw_api_limits_init(&c.lim);
    if (limits) {
        if (limits->max_images)
            c.lim.max_images = limits->max_images;
        if (limits->max_image_bytes)
            c.lim.max_image_bytes = limits->max_image_bytes;
        if (limits->max_body_bytes)
            c.lim.max_body_bytes = limits->max_body_bytes;
        if (limits->max_header_bytes)
            c.lim.max_header_bytes = limits->max_header_bytes;
        c.lim.files_root = limits->files_root;
    }
    if ((unsigned)route >= FW_ROUTE__COUNT)
        return api_fail(c.err, FW_ERR_NOT_FOUND, "unknown route");

    char shown[80];
    media m = classify(content_type, shown, sizeof shown);
    bool ok = m == MEDIA_JSON ? route != FW_ROUTE_LEGACY_MULTIPART
                              : m == MEDIA_MULTIPART && route != FW_ROUTE_LEGACY_JSON;
    if (!ok) {
        const char *want = route == FW_ROUTE_LEGACY_MULTIPART ? "multipart/form-data"
                           : route == FW_ROUTE_LEGACY_JSON
                               ? "application/json"
                               : "multipart/form-data or application/json";
        return api_fail(c.err, FW_ERR_UNSUPPORTED,
                        "unsupported media type %s%s%s for %s: expected %s", shown[0] ? "\"" : "",
                        shown[0] ? shown : "(none)", shown[0] ? "\"" : "", ROUTE_PATHS[route],
                        want);
    }
    if (len > c.lim.max_body_bytes)
        return api_fail(c.err, FW_ERR_TOO_LARGE,
                        "request body of %zu bytes is over the limit "
                        "of %zu",
                        len, c.lim.max_body_bytes);
    if (len == 0 || !body)
        return api_fail(c.err, FW_ERR_PARSE, "empty request body");

    c.req = calloc(1, sizeof *c.req);
    if (!c.req)
        return api_fail(c.err, FW_ERR_NOMEM, "out of memory");
    c.req->route = route;
    options_defaults(route, &c.req->options);

    fw_err rc;
    switch (route) {
    case FW_ROUTE_LEGACY_JSON:
        rc = parse_legacy_json(&c, body, len);
        break;
    case FW_ROUTE_LEGACY_MULTIPART:
        rc = parse_legacy_multipart(&c, content_type, body, len);
        break;
    default:
        rc = m == MEDIA_JSON ? parse_v1_json(&c, body, len)
                             : parse_v1_multipart(&c, content_type, body, len);
        break;
    }
    if (rc) {
        fw_api_request_free(c.req);
        return rc;
    }
    if (route == FW_ROUTE_V1_DETECT)
        c.req->options.embed = false;
    else if (route != FW_ROUTE_V1_ANALYZE)
        c.req->options.embed = true;
    *out = c.req;
    return FW_OK;
}

void fw_api_analyze_opts(const fw_api_request *req, fw_analyze_opts *opts)
{
    fw_analyze_opts_init(opts);
    if (!req)
        return;
    const fw_api_options *o = &req->options;
    if (req->route == FW_ROUTE_LEGACY_JSON || req->route == FW_ROUTE_LEGACY_MULTIPART) {
        opts->embed = true;
        opts->quality = false; /* the legacy face record has exactly its six keys */
        if (o->crop_faces) {
            /* as the application cropped: the box grown by face_margin, JPEG quality 95 */
            opts->crops = FW_CROP_BOX;
            float m = o->face_margin;
            opts->face_margin = !(m >= 0.0f) ? 0.0f : m > 2.0f ? 2.0f : m;
        }
        return;
    }
    opts->min_score = o->min_score;
    opts->max_faces = o->max_faces;
    opts->min_face_size = o->min_face_size;
    opts->embed = o->embed;
    if (req->route == FW_ROUTE_V1_EMBED)
        return;
    opts->quality = o->quality;
    opts->thresholds = o->thresholds;
    opts->quality_action = o->quality_action;
    opts->crops = o->crops;
    opts->face_margin = o->face_margin;
    opts->crop_format = o->crop_format;
    opts->crop_quality = o->crop_quality;
}

/* ======================================================================================== */
/* JSON writing                                                                              */

/* Number formatting writes into a caller-reserved area: at most NUM_MAX bytes. */
#define NUM_MAX 32

static const double POW10[] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6, 1e7,
                               1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14};

/* Writes the decimal digits of v (v < 10^20) right-aligned ending at end; returns the start. */
static char *digits_rev(char *end, unsigned long long v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

/* Writes d with `decimals` (0..6) fixed decimals, trailing zeros trimmed but at least one
 * decimal kept ("12.5", "3.0"). Non-finite: null. */
static size_t fmt_fixed(char *o, double d, int decimals)
{
    if (!isfinite(d)) {
        memcpy(o, "null", 4);
        return 4;
    }
    if (fabs(d) >= 1e15) {
        int n = snprintf(o, NUM_MAX, "%.17g", d);
        return (size_t)n;
    }
    double scale = POW10[decimals];
    long long v = llround(d * scale);
    size_t len = 0;
    if (v < 0) {
        o[len++] = '-';
        v = -v;
    }
    unsigned long long u = (unsigned long long)v;
    unsigned long long ip = u / (unsigned long long)scale, fp = u % (unsigned long long)scale;
    char tmp[24];
    char *s = digits_rev(tmp + sizeof tmp, ip);
    memcpy(o + len, s, (size_t)(tmp + sizeof tmp - s));
    len += (size_t)(tmp + sizeof tmp - s);
    o[len++] = '.';
    if (decimals == 0 || fp == 0) {
        o[len++] = '0';
        return len;
    }
    char fd[8];
    for (int i = decimals - 1; i >= 0; i--) {
        fd[i] = (char)('0' + fp % 10);
        fp /= 10;
    }
    int n = decimals;
    while (n > 1 && fd[n - 1] == '0')
        n--;
    memcpy(o + len, fd, (size_t)n);
    return len + (size_t)n;
}

/* Writes a float with 9 significant digits (enough for any float32 to round-trip), in plain
 * decimal notation for magnitudes in [1e-5, 1e9) (the fast path: embeddings, scores), else
 * via printf. Integral values keep a ".0" so that they read back as reals. Non-finite: null. */
static size_t fmt_float(char *o, float f)
{
    double d = f;
    if (!isfinite(d)) {
        memcpy(o, "null", 4);
        return 4;
    }
    size_t len = 0;
    if (d == 0.0) {
        if (signbit(d))
            o[len++] = '-';
        memcpy(o + len, "0.0", 3);
        return len + 3;
    }
    double a = fabs(d);
    if (a < 1e-5 || a >= 1e9) {
        int n = snprintf(o, NUM_MAX, "%.9g", d);
        return (size_t)n;
    }
    if (d < 0)
        o[len++] = '-';
    /* a = m * 10^(e - 8) with m a 9-digit integer */
    int e;
    if (a >= 1.0) {
        e = 0;
        while (e < 8 && a >= POW10[e + 1])
            e++;
    } else {
        e = -1;
        while (e > -5 && a < 1.0 / POW10[-e])
            e--;
    }
    int k = 8 - e; /* 0 .. 13 */
    unsigned long long m = (unsigned long long)llround(a * POW10[k]);
    if (m >= 1000000000ULL) { /* rounded up to the next power of ten */
        m /= 10;
        e++;
        k--;
    }
    char dig[9];
    for (int i = 8; i >= 0; i--) {
        dig[i] = (char)('0' + m % 10);
        m /= 10;
    }
    int nd = 9;
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    if (e >= 0) {
        /* integer part: e + 1 digits (may run past the significant ones: zeros) */
        for (int i = 0; i <= e; i++)
            o[len++] = i < 9 ? dig[i] : '0';
        o[len++] = '.';
        if (nd <= e + 1) {
            o[len++] = '0';
        } else {
            memcpy(o + len, dig + e + 1, (size_t)(nd - e - 1));
            len += (size_t)(nd - e - 1);
        }
    } else {
        o[len++] = '0';
        o[len++] = '.';
        for (int i = 0; i < -e - 1; i++)
            o[len++] = '0';
        memcpy(o + len, dig, (size_t)nd);
        len += (size_t)nd;
    }
    return len;
}

static void put_fixed(fw_buf *b, double d, int decimals)
{
    if (!fw_buf_reserve(b, NUM_MAX))
        return;
    b->len += fmt_fixed(b->data + b->len, d, decimals);
}

static void put_float(fw_buf *b, float f)
{
    if (!fw_buf_reserve(b, NUM_MAX))
        return;
    b->len += fmt_float(b->data + b->len, f);
}

static void put_size(fw_buf *b, size_t v)
{
    char tmp[24];
    char *s = digits_rev(tmp + sizeof tmp, v);
    fw_buf_append(b, s, (size_t)(tmp + sizeof tmp - s));
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not valid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < need + 1)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i <= need; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return need + 1;
}

/* Writes s[0..n) as a JSON string: quotes, backslashes and control characters escaped,
 * invalid UTF-8 replaced by U+FFFD, so that the output is always valid JSON. */
static void put_str(fw_buf *b, const char *str, size_t n)
{
    if (n > (SIZE_MAX - 2) / 6 || !fw_buf_reserve(b, 6 * n + 2)) {
        b->failed = true;
        return;
    }
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    char *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c < 0x20) {
            *o++ = '\\';
            switch (c) {
            case '\n':
                *o++ = 'n';
                break;
            case '\r':
                *o++ = 'r';
                break;
            case '\t':
                *o++ = 't';
                break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
            i++;
            continue;
        }
        size_t k = utf8_len(s + i, n - i);
        if (k == 0) {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(o, s + i, k);
            o += k;
            i += k;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
}

static void put_cstr(fw_buf *b, const char *s)
{
    put_str(b, s ? s : "", s ? strlen(s) : 0);
}

/* ======================================================================================== */
/* response encoding                                                                         */

typedef struct enc {
    fw_buf b;
    const fw_api_request *req;
    const fw_api_response_info *info;
    uint8_t *scratch; /* embedding bytes for the base64 formats */
    char *b64;
} enc;

static void put_bbox(fw_buf *b, const fw_face *f)
{
    fw_buf_puts(b, "[");
    for (int k = 0; k < 4; k++) {
        if (k)
            fw_buf_putc(b, ',');
        put_fixed(b, f->bbox[k], 2);
    }
    fw_buf_putc(b, ']');
}

static void put_landmarks(fw_buf *b, const fw_face *f)
{
    fw_buf_putc(b, '[');
    for (int k = 0; k < 5; k++) {
        fw_buf_puts(b, k ? ",[" : "[");
        put_fixed(b, f->landmarks[k][0], 2);
        fw_buf_putc(b, ',');
        put_fixed(b, f->landmarks[k][1], 2);
        fw_buf_putc(b, ']');
    }
    fw_buf_putc(b, ']');
}

static void put_float_array(fw_buf *b, const float *v, size_t n)
{
    if (n > SIZE_MAX / (NUM_MAX + 1) - 2 || !fw_buf_reserve(b, n * (NUM_MAX + 1) + 2)) {
        b->failed = true;
        return;
    }
    char *o = b->data + b->len;
    *o++ = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        o += fmt_float(o, v[i]);
    }
    *o++ = ']';
    b->len = (size_t)(o - b->data);
}

static void put_embedding(enc *e, const float *v, fw_embedding_format fmt)
{
    size_t dim = e->info->embedding_dim;
    if (fmt == FW_EMBEDDING_FLOAT) {
        put_float_array(&e->b, v, dim);
        return;
    }
    size_t nbytes;
    if (fmt == FW_EMBEDDING_BASE64_F16) {
        fw_f32_to_f16_le(v, dim, e->scratch);
        nbytes = 2 * dim;
    } else {
        for (size_t i = 0; i < dim; i++) {
            uint32_t x;
            memcpy(&x, &v[i], sizeof x);
            e->scratch[4 * i] = (uint8_t)x;
            e->scratch[4 * i + 1] = (uint8_t)(x >> 8);
            e->scratch[4 * i + 2] = (uint8_t)(x >> 16);
            e->scratch[4 * i + 3] = (uint8_t)(x >> 24);
        }
        nbytes = 4 * dim;
    }
    fw_base64_encode(e->scratch, nbytes, e->b64);
    fw_buf_putc(&e->b, '"');
    fw_buf_append(&e->b, e->b64, fw_base64_encoded_len(nbytes));
    fw_buf_putc(&e->b, '"');
}

static void put_item_head(enc *e, size_t i)
{
    fw_buf_puts(&e->b, "{\"index\":");
    put_size(&e->b, i);
    fw_buf_puts(&e->b, ",\"id\":");
    put_cstr(&e->b, e->req->items[i].id);
}

static void put_item_error(enc *e, fw_err code, const char *message)
{
    fw_buf_puts(&e->b, ",\"error\":{\"code\":");
    put_cstr(&e->b, fw_err_name(code));
    fw_buf_puts(&e->b, ",\"message\":");
    put_cstr(&e->b, message && message[0] ? message : fw_err_name(code));
    fw_buf_puts(&e->b, "}}");
}

/* The outcome of item i: NULL with *code and *message set when it failed. */
static const fw_result *item_result(const enc *e, const fw_result *results, size_t i, fw_err *code,
                                    const char **message)
{
    const fw_api_item *it = &e->req->items[i];
    if (it->error != FW_OK) {
        *code = it->error;
        *message = it->message;
        return NULL;
    }
    const fw_result *r = &results[i];
    if (r->status != FW_OK) {
        *code = r->status;
        *message = r->message;
        return NULL;
    }
    return r;
}

static void put_quality(fw_buf *b, const fw_face_quality *q)
{
    fw_buf_puts(b, "{\"score\":");
    put_fixed(b, q->score, 4);
    fw_buf_puts(b, q->usable ? ",\"usable\":true" : ",\"usable\":false");
    fw_buf_puts(b, ",\"reasons\":[");
    bool first = true;
    for (unsigned bit = 1; bit < (1u << FW_QUALITY__REASONS); bit <<= 1) {
        if (!(q->reasons & bit))
            continue;
        if (!first)
            fw_buf_putc(b, ',');
        first = false;
        put_cstr(b, fw_quality_reason_name(bit));
    }
    fw_buf_puts(b, "],\"sharpness\":{\"aligned\":");
    put_fixed(b, q->sharpness_aligned, 2);
    fw_buf_puts(b, ",\"box\":");
    put_fixed(b, q->sharpness_box, 2);
    fw_buf_puts(b, "},\"yaw\":");
    put_fixed(b, q->yaw, 2);
    fw_buf_puts(b, ",\"pitch\":");
    put_fixed(b, q->pitch, 2);
    fw_buf_puts(b, ",\"roll\":");
    put_fixed(b, q->roll, 2);
    fw_buf_puts(b, ",\"size\":");
    put_fixed(b, q->size, 2);
    fw_buf_putc(b, '}');
}

/* The crop's bytes as a base64 JSON string. */
static void put_base64(fw_buf *b, const uint8_t *data, size_t len)
{
    if (len >= SIZE_MAX / 4 * 3) {
        b->failed = true;
        return;
    }
    size_t n = fw_base64_encoded_len(len);
    fw_buf_putc(b, '"');
    if (!fw_buf_reserve(b, n))
        return;
    fw_base64_encode(data, len, b->data + b->len); /* its NUL fits the reserve */
    b->len += n;
    fw_buf_putc(b, '"');
}

static void put_crop(fw_buf *b, const fw_face_crop *c)
{
    fw_buf_puts(b, c->format == FW_FORMAT_PNG ? "{\"format\":\"png\",\"width\":"
                                              : "{\"format\":\"jpeg\",\"width\":");
    put_size(b, (size_t)(c->width > 0 ? c->width : 0));
    fw_buf_puts(b, ",\"height\":");
    put_size(b, (size_t)(c->height > 0 ? c->height : 0));
    fw_buf_puts(b, ",\"data\":");
    put_base64(b, c->data, c->len);
    fw_buf_putc(b, '}');
}

static void put_v1_faces(enc *e, const fw_result *r)
{
    const fw_api_options *o = &e->req->options;
    bool emb = e->req->route == FW_ROUTE_V1_ANALYZE && o->embed;
    fw_buf_puts(&e->b, ",\"faces\":[");
    for (size_t j = 0; j < r->n_faces; j++) {
        const fw_face *f = &r->faces[j];
        fw_buf_puts(&e->b, j ? ",{\"bbox\":" : "{\"bbox\":");
        put_bbox(&e->b, f);
        fw_buf_puts(&e->b, ",\"score\":");
        put_float(&e->b, f->score);
        if (o->landmarks) {
            fw_buf_puts(&e->b, ",\"landmarks\":");
            put_landmarks(&e->b, f);
        }
        if (emb && f->embedding) {
            fw_buf_puts(&e->b, ",\"embedding\":");
            put_embedding(e, f->embedding, o->embedding_format);
        }
        if (f->has_quality) {
            fw_buf_puts(&e->b, ",\"quality\":");
            put_quality(&e->b, &f->quality);
        }
        if (f->crop.data) {
            fw_buf_puts(&e->b, ",\"crop\":");
            put_crop(&e->b, &f->crop);
        }
        fw_buf_putc(&e->b, '}');
    }
    fw_buf_putc(&e->b, ']');
}

static void encode_v1(enc *e, const fw_result *results)
{
    const fw_api_request *req = e->req;
    fw_buf_puts(&e->b, "{\"took_ms\":");
    put_fixed(&e->b, e->info->took_ms >= 0 ? e->info->took_ms : 0, 3);
    fw_buf_puts(&e->b, ",\"provider\":");
    put_cstr(&e->b, e->info->provider);
    fw_buf_puts(&e->b, ",\"model\":");
    put_cstr(&e->b, e->info->model);
    fw_buf_puts(&e->b, ",\"results\":[");
    for (size_t i = 0; i < req->n_items; i++) {
        if (i)
            fw_buf_putc(&e->b, ',');
        put_item_head(e, i);
        fw_err code;
        const char *msg;
        const fw_result *r = item_result(e, results, i, &code, &msg);
        if (r && req->route == FW_ROUTE_V1_EMBED &&
            (r->n_faces < 1 || !r->faces || !r->faces[0].embedding)) {
            r = NULL;
            code = FW_ERR_INTERNAL;
            msg = "no embedding was computed for this item";
        }
        if (!r) {
            put_item_error(e, code, msg);
            continue;
        }
        if (req->route == FW_ROUTE_V1_EMBED) {
            fw_buf_puts(&e->b, ",\"embedding\":");
            put_embedding(e, r->faces[0].embedding, req->options.embedding_format);
        } else {
            fw_buf_puts(&e->b, ",\"width\":");
            put_size(&e->b, (size_t)(r->width > 0 ? r->width : 0));
            fw_buf_puts(&e->b, ",\"height\":");
            put_size(&e->b, (size_t)(r->height > 0 ? r->height : 0));
            put_v1_faces(e, r);
        }
        fw_buf_putc(&e->b, '}');
    }
    fw_buf_puts(&e->b, "]}");
}

/* The legacy face list of item i: faces at or above min_face_quality; [] for failures. */
static void put_legacy_faces(enc *e, const fw_result *results, size_t i)
{
    fw_err code;
    const char *msg;
    const fw_result *r = item_result(e, results, i, &code, &msg);
    fw_buf_putc(&e->b, '[');
    bool first = true;
    for (size_t j = 0; r && j < r->n_faces; j++) {
        const fw_face *f = &r->faces[j];
        if (!(f->score >= e->req->options.min_face_quality))
            continue;
        fw_buf_puts(&e->b, first ? "{\"bbox\":" : ",{\"bbox\":");
        first = false;
        put_bbox(&e->b, f);
        fw_buf_puts(&e->b, ",\"landmarks\":");
        put_landmarks(&e->b, f);
        fw_buf_puts(&e->b, ",\"embedding\":");
        if (f->embedding)
            put_float_array(&e->b, f->embedding, e->info->embedding_dim);
        else
            fw_buf_puts(&e->b, "null");
        fw_buf_puts(&e->b, ",\"quality\":");
        put_float(&e->b, f->score);
        fw_buf_puts(&e->b, ",\"age\":null,\"gender\":null");
        if (f->crop.data) {
            fw_buf_puts(&e->b, ",\"crop\":");
            put_base64(&e->b, f->crop.data, f->crop.len);
        }
        fw_buf_putc(&e->b, '}');
    }
    fw_buf_putc(&e->b, ']');
}

static void encode_legacy(enc *e, const fw_result *results)
{
    const fw_api_request *req = e->req;
    fw_buf_puts(&e->b, "{\"results\":");
    if (req->route == FW_ROUTE_LEGACY_JSON) {
        fw_buf_putc(&e->b, '[');
        for (size_t i = 0; i < req->n_items; i++) {
            if (i)
                fw_buf_putc(&e->b, ',');
            put_legacy_faces(e, results, i);
        }
        fw_buf_putc(&e->b, ']');
    } else {
        /* A dict keyed by phash, as the Python worker built it: a repeated phash keeps the
         * position of its first image and the faces of its last. n_items <= max_images, so
         * the quadratic duplicate search stays small. */
        fw_buf_putc(&e->b, '{');
        bool first = true;
        for (size_t i = 0; i < req->n_items; i++) {
            const char *key = req->items[i].phash;
            bool earlier = false;
            for (size_t j = 0; j < i && !earlier; j++)
                earlier = strcmp(req->items[j].phash, key) == 0;
            if (earlier)
                continue;
            size_t last = i;
            for (size_t j = i + 1; j < req->n_items; j++)
                if (strcmp(req->items[j].phash, key) == 0)
                    last = j;
            if (!first)
                fw_buf_putc(&e->b, ',');
            first = false;
            put_cstr(&e->b, key);
            fw_buf_putc(&e->b, ':');
            put_legacy_faces(e, results, last);
        }
        fw_buf_putc(&e->b, '}');
    }
    fw_buf_puts(&e->b, ",\"processing_time_ms\":");
    put_fixed(&e->b, e->info->took_ms >= 0 ? e->info->took_ms : 0, 3);
    fw_buf_puts(&e->b, e->info->gpu_used ? ",\"gpu_used\":true" : ",\"gpu_used\":false");
    fw_buf_puts(&e->b, ",\"worker_id\":");
    put_cstr(&e->b, e->info->worker_id);
    fw_buf_putc(&e->b, '}');
}

fw_err fw_api_encode_response(const fw_api_request *req, const fw_result *results,
                              const fw_api_response_info *info, char **out, size_t *out_len,
                              fw_error *err)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!req || !info || (unsigned)req->route >= FW_ROUTE__COUNT)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "missing request or response info");
    bool needs_dim = false;
    for (size_t i = 0; i < req->n_items; i++) {
        if (req->items[i].error != FW_OK)
            continue;
        if (!results)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "no pipeline results for item %zu",
                                i);
        const fw_result *r = &results[i];
        if (r->status != FW_OK)
            continue;
        if (r->n_faces && !r->faces)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "item %zu has n_faces without "
                                "faces",
                                i);
        for (size_t j = 0; j < r->n_faces && !needs_dim; j++)
            needs_dim = r->faces[j].embedding != NULL;
    }
    if (needs_dim && info->embedding_dim == 0)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                            "embeddings present but embedding_dim is 0");
    enc e = {.req = req, .info = info};
    fw_buf_init(&e.b);
    size_t dim = info->embedding_dim;
    if (needs_dim && req->options.embedding_format != FW_EMBEDDING_FLOAT &&
        req->route != FW_ROUTE_LEGACY_JSON && req->route != FW_ROUTE_LEGACY_MULTIPART) {
        if (dim > SIZE_MAX / 8)
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "embedding_dim too large");
        e.scratch = malloc(4 * dim);
        e.b64 = malloc(fw_base64_encoded_len(4 * dim) + 1);
        if (!e.scratch || !e.b64) {
            free(e.scratch);
            free(e.b64);
            return fw_error_set(err, FW_ERR_NOMEM, "out of memory encoding the response");
        }
    }
    if (req->route == FW_ROUTE_LEGACY_JSON || req->route == FW_ROUTE_LEGACY_MULTIPART)
        encode_legacy(&e, results);
    else
        encode_v1(&e, results);
    free(e.scratch);
    free(e.b64);
    size_t len;
    char *s = fw_buf_detach(&e.b, &len);
    if (!s)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory encoding the response");
    *out = s;
    if (out_len)
        *out_len = len;
    return FW_OK;
}

/* ======================================================================================== */
/* error bodies                                                                              */

static const char *status_code_name(int status)
{
    switch (status) {
    case 400:
        return "bad_request";
    case 401:
        return "unauthorized";
    case 403:
        return "forbidden";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 408:
        return "request_timeout";
    case 413:
        return "payload_too_large";
    case 415:
        return "unsupported_media_type";
    case 429:
        return "too_many_requests";
    case 500:
        return "internal_error";
    case 503:
        return "unavailable";
    case 504:
        return "timeout";
    default:
        return status >= 500 ? "server_error" : "client_error";
    }
}

char *fw_api_error_json(int status, const char *code, const char *message, size_t *len)
{
    fw_buf b;
    fw_buf_init(&b);
    fw_buf_puts(&b, "{\"error\":{\"code\":");
    put_cstr(&b, code ? code : status_code_name(status));
    fw_buf_puts(&b, ",\"message\":");
    put_cstr(&b, message);
    fw_buf_puts(&b, "}}");
    return fw_buf_detach(&b, len);
}

char *fw_api_error_to_json(const fw_api_error *err, size_t *len)
{
    if (!err)
        return fw_api_error_json(500, NULL, "unknown error", len);
    return fw_api_error_json(err->status, fw_err_name(err->code), err->message, len);
}
