#include "client/response.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client/backoff.h"
#include "core/align.h"
#include "util/base64.h"

fw_err fw__err_from_name(const char *name)
{
    if (name)
        for (int c = FW_OK + 1; c < FW_ERR__COUNT; c++)
            if (strcmp(name, fw_err_name((fw_err)c)) == 0)
                return (fw_err)c;
    return FW_ERR_UNAVAILABLE;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    if (!cap)
        return;
    size_t n = src ? strlen(src) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

bool fw__error_body_parse(const char *body, size_t len, char *code, size_t code_cap, char *message,
                          size_t message_cap)
{
    if (!body || !len)
        return false;
    json_t *root = json_loadb(body, len, 0, NULL);
    if (!root)
        return false;
    json_t *e = json_object_get(root, "error");
    json_t *c = json_object_get(e, "code");
    json_t *m = json_object_get(e, "message");
    bool ok = json_is_object(e) && json_is_string(c);
    if (ok) {
        copy_str(code, code_cap, json_string_value(c));
        copy_str(message, message_cap, json_is_string(m) ? json_string_value(m) : "");
    }
    json_decref(root);
    return ok;
}

/* A number, or null (NaN). */
static bool get_float(const json_t *v, float *out)
{
    if (json_is_number(v)) {
        double d = json_number_value(v);
        *out = (float)d;
        return true;
    }
    if (json_is_null(v)) {
        *out = NAN;
        return true;
    }
    return false;
}

/* Number of floats in an embedding value (string: base64 of float32; array: numbers). */
static bool embedding_len(const json_t *v, size_t *dim)
{
    if (json_is_array(v)) {
        *dim = json_array_size(v);
    } else if (json_is_string(v)) {
        size_t slen = json_string_length(v);
        size_t cap = fw_base64_decoded_max(slen);
        uint8_t *tmp = malloc(cap ? cap : 1);
        if (!tmp)
            return false;
        size_t got = 0;
        fw_err rc = fw_base64_decode(json_string_value(v), slen, tmp, cap, &got, NULL);
        free(tmp);
        if (rc != FW_OK || got % 4 != 0)
            return false;
        *dim = got / 4;
    } else {
        return false;
    }
    return *dim >= 1 && *dim <= FW__MAX_EMBEDDING_DIM;
}

/* Writes exactly dim floats of an embedding value into dst. */
static bool embedding_read(const json_t *v, size_t dim, float *dst)
{
    if (json_is_array(v)) {
        if (json_array_size(v) != dim)
            return false;
        for (size_t i = 0; i < dim; i++)
            if (!get_float(json_array_get(v, i), &dst[i]))
                return false;
        return true;
    }
    if (!json_is_string(v))
        return false;
    uint8_t *bytes = (uint8_t *)dst; /* decode in place, then fix the byte order */
    size_t got = 0;
    if (fw_base64_decode(json_string_value(v), json_string_length(v), bytes, dim * 4, &got, NULL) !=
            FW_OK ||
        got != dim * 4)
        return false;
    for (size_t i = 0; i < dim; i++) {
        const uint8_t *p = bytes + 4 * i;
        uint32_t x =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        memcpy(&dst[i], &x, sizeof x);
    }
    return true;
}

static bool get_size_int(const json_t *v, int *out)
{
    if (!json_is_integer(v))
        return false;
    json_int_t x = json_integer_value(v);
    if (x < 0 || x > INT_MAX)
        return false;
    *out = (int)x;
    return true;
}

/* Allocates faces + m * dim floats + extra bytes (crops) in one block (fw_result_clear
 * frees it). */
static bool alloc_faces(fw_result *r, size_t m, size_t dim, size_t extra)
{
    if (m == 0)
        return true;
    if (m > SIZE_MAX / 2 / (sizeof(fw_face) + dim * sizeof(float) + 1) || extra > SIZE_MAX / 4)
        return false;
    fw_face *f = calloc(1, m * sizeof(fw_face) + m * dim * sizeof(float) + extra);
    if (!f)
        return false;
    float *emb = (float *)(f + m);
    for (size_t j = 0; j < m; j++)
        f[j].embedding = dim ? emb + j * dim : NULL;
    r->faces = f;
    r->n_faces = m;
    return true;
}

typedef struct pstate {
    size_t dim; /* embedding dimension of the response (0 until one is seen) */
    fw_error *err;
    size_t index;
} pstate;

static fw_err bad(pstate *ps, const char *what)
{
    return fw_error_set(ps->err, FW_ERR_PARSE, "worker response: result %zu: %s", ps->index, what);
}

static fw_err check_dim(pstate *ps, const json_t *v, size_t *dim)
{
    if (!embedding_len(v, dim))
        return bad(ps, "invalid embedding");
    if (ps->dim && ps->dim != *dim)
        return bad(ps, "embeddings of different dimensions");
    ps->dim = *dim;
    return FW_OK;
}

/* A face's "quality" object (the worker's encoding of fw_face_quality). */
static bool parse_quality(const json_t *q, fw_face_quality *out)
{
    const json_t *sh = json_object_get(q, "sharpness");
    const json_t *reasons = json_object_get(q, "reasons");
    const json_t *usable = json_object_get(q, "usable");
    if (!json_is_object(q) || !json_is_object(sh) || !json_is_boolean(usable) ||
        !get_float(json_object_get(q, "score"), &out->score) ||
        !get_float(json_object_get(sh, "aligned"), &out->sharpness_aligned) ||
        !get_float(json_object_get(sh, "box"), &out->sharpness_box) ||
        !get_float(json_object_get(q, "yaw"), &out->yaw) ||
        !get_float(json_object_get(q, "pitch"), &out->pitch) ||
        !get_float(json_object_get(q, "roll"), &out->roll) ||
        !get_float(json_object_get(q, "size"), &out->size))
        return false;
    out->usable = json_is_true(usable);
    out->reasons = 0;
    if (reasons && !json_is_array(reasons))
        return false;
    for (size_t i = 0; i < json_array_size(reasons); i++) {
        const char *name = json_string_value(json_array_get(reasons, i));
        for (unsigned bit = 1; name && bit < (1u << FW_QUALITY__REASONS); bit <<= 1)
            if (strcmp(name, fw_quality_reason_name(bit)) == 0)
                out->reasons |= bit;
    }
    return true;
}

/* A face's "crop" object; its bytes are decoded into *block (advanced past them). */
static bool parse_crop(const json_t *c, fw_face_crop *out, uint8_t **block, size_t *room)
{
    const json_t *data = json_object_get(c, "data");
    const char *fmt = json_string_value(json_object_get(c, "format"));
    if (!json_is_object(c) || !json_is_string(data) || !fmt ||
        !get_size_int(json_object_get(c, "width"), &out->width) ||
        !get_size_int(json_object_get(c, "height"), &out->height))
        return false;
    if (strcmp(fmt, "jpeg") == 0)
        out->format = FW_FORMAT_JPEG;
    else if (strcmp(fmt, "png") == 0)
        out->format = FW_FORMAT_PNG;
    else
        return false;
    size_t got = 0;
    if (fw_base64_decode(json_string_value(data), json_string_length(data), *block, *room, &got,
                         NULL) != FW_OK)
        return false;
    out->data = *block;
    out->len = got;
    *block += got;
    *room -= got;
    return true;
}

static fw_err parse_faces(pstate *ps, const json_t *faces, bool want_emb, fw__item_out *o)
{
    if (!json_is_array(faces))
        return bad(ps, "\"faces\" is not an array");
    size_t m = json_array_size(faces);
    size_t dim = 0, crop_room = 0;
    for (size_t j = 0; j < m; j++) {
        const json_t *f = json_array_get(faces, j);
        if (!json_is_object(f))
            return bad(ps, "a face is not an object");
        const json_t *e = json_object_get(f, "embedding");
        if (e && want_emb && !json_is_null(e)) {
            size_t d;
            fw_err rc = check_dim(ps, e, &d);
            if (rc)
                return rc;
            dim = d;
        }
        const json_t *cd = json_object_get(json_object_get(f, "crop"), "data");
        if (json_is_string(cd))
            crop_room += fw_base64_decoded_max(json_string_length(cd));
    }
    if (!alloc_faces(&o->res, m, dim, crop_room))
        return fw_error_set(ps->err, FW_ERR_NOMEM, "out of memory reading a worker response");
    uint8_t *crop_block = m ? (uint8_t *)((float *)(o->res.faces + m) + m * dim) : NULL;
    for (size_t j = 0; j < m; j++) {
        const json_t *f = json_array_get(faces, j);
        fw_face *face = &o->res.faces[j];
        const json_t *bbox = json_object_get(f, "bbox");
        if (!json_is_array(bbox) || json_array_size(bbox) != 4)
            return bad(ps, "\"bbox\" is not 4 numbers");
        for (size_t k = 0; k < 4; k++)
            if (!get_float(json_array_get(bbox, k), &face->bbox[k]))
                return bad(ps, "\"bbox\" is not 4 numbers");
        if (!get_float(json_object_get(f, "score"), &face->score))
            return bad(ps, "\"score\" is not a number");
        const json_t *lm = json_object_get(f, "landmarks");
        if (lm && !json_is_null(lm)) {
            if (!json_is_array(lm) || json_array_size(lm) != 5)
                return bad(ps, "\"landmarks\" is not 5 points");
            for (size_t k = 0; k < 5; k++) {
                const json_t *pt = json_array_get(lm, k);
                if (!json_is_array(pt) || json_array_size(pt) != 2 ||
                    !get_float(json_array_get(pt, 0), &face->landmarks[k][0]) ||
                    !get_float(json_array_get(pt, 1), &face->landmarks[k][1]))
                    return bad(ps, "\"landmarks\" is not 5 points");
            }
        }
        const json_t *q = json_object_get(f, "quality");
        if (q && !json_is_null(q)) {
            if (!parse_quality(q, &face->quality))
                return bad(ps, "invalid \"quality\"");
            face->has_quality = true;
        }
        const json_t *crop = json_object_get(f, "crop");
        if (crop && !json_is_null(crop) && !parse_crop(crop, &face->crop, &crop_block, &crop_room))
            return bad(ps, "invalid \"crop\"");
        const json_t *e = json_object_get(f, "embedding");
        if (!dim)
            continue;
        if (!e || json_is_null(e)) {
            face->embedding = NULL; /* the worker computed none for this face */
            continue;
        }
        if (!embedding_read(e, dim, face->embedding))
            return bad(ps, "invalid embedding");
    }
    o->dim = dim;
    return FW_OK;
}

static fw_err parse_entry(pstate *ps, const json_t *r, fw__resp_kind kind, fw__item_out *o)
{
    const json_t *e = json_object_get(r, "error");
    if (e) {
        const json_t *code = json_object_get(e, "code");
        const json_t *msg = json_object_get(e, "message");
        if (!json_is_object(e) || !json_is_string(code) || (msg && !json_is_string(msg)))
            return bad(ps, "malformed \"error\"");
        const char *cs = json_string_value(code);
        o->res.status = fw__err_from_name(cs);
        copy_str(o->code, sizeof o->code, cs);
        copy_str(o->res.message, sizeof o->res.message,
                 msg && json_string_length(msg) ? json_string_value(msg) : cs);
        o->final = fw__item_error_is_final(cs);
        return FW_OK;
    }
    o->final = true;
    if (kind == FW__RESP_EMBED) {
        size_t dim;
        const json_t *emb = json_object_get(r, "embedding");
        fw_err rc = check_dim(ps, emb, &dim);
        if (rc)
            return rc;
        if (!alloc_faces(&o->res, 1, dim, 0))
            return fw_error_set(ps->err, FW_ERR_NOMEM, "out of memory reading a worker response");
        fw_face *f = &o->res.faces[0];
        f->bbox[2] = f->bbox[3] = (float)FW_ALIGNED_SIZE;
        f->score = 1.0f;
        memcpy(f->landmarks, fw_arcface_template, sizeof f->landmarks);
        if (!embedding_read(emb, dim, f->embedding))
            return bad(ps, "invalid embedding");
        o->res.width = o->res.height = FW_ALIGNED_SIZE;
        o->dim = dim;
        return FW_OK;
    }
    if (!get_size_int(json_object_get(r, "width"), &o->res.width) ||
        !get_size_int(json_object_get(r, "height"), &o->res.height))
        return bad(ps, "\"width\"/\"height\" missing or invalid");
    return parse_faces(ps, json_object_get(r, "faces"), kind == FW__RESP_ANALYZE, o);
}

static void clear_all(fw__item_out *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fw_result_clear(&out[i].res);
        memset(&out[i], 0, sizeof out[i]);
    }
}

fw_err fw__response_parse(const char *body, size_t len, fw__resp_kind kind, size_t n,
                          fw__item_out *out, fw_error *err)
{
    if (!out && n)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "no output array");
    for (size_t i = 0; i < n; i++)
        memset(&out[i], 0, sizeof out[i]);
    if (!body || !len)
        return fw_error_set(err, FW_ERR_PARSE, "worker response: empty body");
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!root)
        return fw_error_set(err, FW_ERR_PARSE, "worker response: invalid JSON at line %d: %s",
                            jerr.line, jerr.text);
    fw_err rc = FW_OK;
    bool *seen = NULL;
    const json_t *results = json_object_get(root, "results");
    if (!json_is_object(root) || !json_is_array(results)) {
        rc = fw_error_set(err, FW_ERR_PARSE, "worker response: no \"results\" array");
        goto done;
    }
    if (json_array_size(results) != n) {
        rc = fw_error_set(err, FW_ERR_PARSE, "worker response: %zu results for %zu items",
                          json_array_size(results), n);
        goto done;
    }
    seen = calloc(n ? n : 1, sizeof *seen);
    if (!seen) {
        rc = fw_error_set(err, FW_ERR_NOMEM, "out of memory reading a worker response");
        goto done;
    }
    pstate ps = {.err = err};
    for (size_t k = 0; k < n && rc == FW_OK; k++) {
        const json_t *r = json_array_get(results, k);
        const json_t *ix = json_object_get(r, "index");
        ps.index = k;
        if (!json_is_object(r) || !json_is_integer(ix) || json_integer_value(ix) < 0 ||
            (uint64_t)json_integer_value(ix) >= n || seen[json_integer_value(ix)]) {
            rc = bad(&ps, "missing, out-of-range or repeated \"index\"");
            break;
        }
        size_t i = (size_t)json_integer_value(ix);
        seen[i] = true;
        ps.index = i;
        rc = parse_entry(&ps, r, kind, &out[i]);
    }
done:
    free(seen);
    json_decref(root);
    if (rc)
        clear_all(out, n);
    return rc;
}
