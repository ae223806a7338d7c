#include "server/multipart.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void fw_multipart_limits_init(fw_multipart_limits *limits)
{
    limits->max_parts = FW_MULTIPART_DEFAULT_MAX_PARTS;
    limits->max_header_bytes = FW_MULTIPART_DEFAULT_MAX_HEADER_BYTES;
}

/* ---------------------------------------------------------------------------------------- */
/* header values: "type; a=b; c=\"d\""                                                      */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && is_ows(*p))
        p++;
    return p;
}

/* Trims spaces and tabs at both ends of [*p, *end). */
static void trim(const char **p, const char **end)
{
    *p = skip_ows(*p, *end);
    while (*end > *p && is_ows((*end)[-1]))
        (*end)--;
}

typedef struct param {
    const char *name;
    size_t name_len;
    const char *value; /* raw: inside the quotes when quoted, escapes not yet removed */
    size_t value_len;
    bool quoted;
} param;

/* Reads the next ";name=value" parameter from *pp. Returns 1 with *out filled, 0 at the end,
 * -1 when the list is malformed (an unterminated quoted string, garbage between parameters).
 * Parameters without '=' are skipped. */
static int next_param(const char **pp, const char *end, param *out)
{
    const char *p = *pp;
    for (;;) {
        p = skip_ows(p, end);
        if (p == end)
            return 0;
        if (*p != ';')
            return -1;
        p = skip_ows(p + 1, end);
        if (p == end)
            return 0;
        const char *n = p;
        while (p < end && *p != '=' && *p != ';' && !is_ows(*p))
            p++;
        const char *n_end = p;
        p = skip_ows(p, end);
        if (p == end || *p != '=') {
            /* no value: skip to the next ';' */
            while (p < end && *p != ';')
                p++;
            continue;
        }
        p = skip_ows(p + 1, end);
        out->name = n;
        out->name_len = (size_t)(n_end - n);
        if (p < end && *p == '"') {
            const char *v = ++p;
            while (p < end && *p != '"') {
                if (*p == '\\' && p + 1 < end)
                    p++;
                p++;
            }
            if (p >= end)
                return -1;
            out->value = v;
            out->value_len = (size_t)(p - v);
            out->quoted = true;
            p++;
        } else {
            const char *v = p;
            while (p < end && *p != ';' && !is_ows(*p))
                p++;
            out->value = v;
            out->value_len = (size_t)(p - v);
            out->quoted = false;
        }
        *pp = p;
        return 1;
    }
}

static bool param_is(const param *pr, const char *name)
{
    size_t n = strlen(name);
    return pr->name_len == n && strncasecmp(pr->name, name, n) == 0;
}

/* Copies a parameter value into dst, removing quoted-pair escapes; returns its length. */
static size_t unescape(const param *pr, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < pr->value_len; i++) {
        char c = pr->value[i];
        if (pr->quoted && c == '\\' && i + 1 < pr->value_len)
            c = pr->value[++i];
        dst[o++] = c;
    }
    dst[o] = '\0';
    return o;
}

/* Splits a header value into its first token (the media type / disposition type, trimmed)
 * and sets *params to where the parameter list begins. */
static void split_value(const char *v, const char *end, const char **tok, size_t *tok_len,
                        const char **params)
{
    const char *semi = memchr(v, ';', (size_t)(end - v));
    const char *te = semi ? semi : end;
    const char *tb = v;
    trim(&tb, &te);
    *tok = tb;
    *tok_len = (size_t)(te - tb);
    *params = semi ? semi : end;
}

fw_err fw_multipart_boundary(const char *content_type, char *out, size_t cap, fw_error *err)
{
    if (!content_type)
        return fw_error_set(err, FW_ERR_UNSUPPORTED,
                            "no Content-Type (expected multipart/form-data)");
    const char *end = content_type + strlen(content_type);
    const char *mt, *p;
    size_t mt_len;
    split_value(content_type, end, &mt, &mt_len, &p);
    static const char want[] = "multipart/form-data";
    if (mt_len != sizeof want - 1 || strncasecmp(mt, want, mt_len) != 0)
        return fw_error_set(err, FW_ERR_UNSUPPORTED,
                            "Content-Type is %.*s, expected multipart/form-data",
                            (int)(mt_len > 64 ? 64 : mt_len), mt);
    param pr;
    int rc;
    while ((rc = next_param(&p, end, &pr)) == 1) {
        if (!param_is(&pr, "boundary"))
            continue;
        if (pr.value_len == 0)
            return fw_error_set(err, FW_ERR_PARSE, "empty multipart boundary");
        if (pr.value_len > FW_MULTIPART_MAX_BOUNDARY || pr.value_len >= cap)
            return fw_error_set(err, FW_ERR_PARSE, "multipart boundary longer than %d bytes",
                                FW_MULTIPART_MAX_BOUNDARY);
        size_t n = unescape(&pr, out);
        if (n == 0)
            return fw_error_set(err, FW_ERR_PARSE, "empty multipart boundary");
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)out[i];
            if (c < 0x20 || c > 0x7e)
                return fw_error_set(err, FW_ERR_PARSE, "invalid byte 0x%02x in multipart boundary",
                                    c);
        }
        if (out[n - 1] == ' ')
            return fw_error_set(err, FW_ERR_PARSE, "multipart boundary ends with a space");
        return FW_OK;
    }
    if (rc < 0)
        return fw_error_set(err, FW_ERR_PARSE, "malformed Content-Type parameters");
    return fw_error_set(err, FW_ERR_PARSE, "missing boundary in multipart Content-Type");
}

/* ---------------------------------------------------------------------------------------- */
/* body                                                                                     */

enum delim_kind { DELIM_NONE = 0, DELIM_OPEN, DELIM_CLOSE, DELIM_TRUNCATED };

/* Classifies what follows a "--boundary" match at s: "--" closes; optional spaces/tabs then
 * CRLF (or LF) opens a part (*after is the first byte after the line break); anything else
 * means the match was not a delimiter; the body ending first is TRUNCATED. */
static enum delim_kind delim_tail(const uint8_t *s, const uint8_t *end, const uint8_t **after)
{
    if (s < end && *s == '-') {
        if (s + 1 == end)
            return DELIM_TRUNCATED;
        if (s[1] == '-') {
            *after = s + 2;
            return DELIM_CLOSE;
        }
        return DELIM_NONE;
    }
    const uint8_t *t = s;
    while (t < end && (*t == ' ' || *t == '\t'))
        t++;
    if (t == end)
        return DELIM_TRUNCATED;
    if (*t == '\n') {
        *after = t + 1;
        return DELIM_OPEN;
    }
    if (*t == '\r') {
        if (t + 1 == end)
            return DELIM_TRUNCATED;
        if (t[1] == '\n') {
            *after = t + 2;
            return DELIM_OPEN;
        }
    }
    return DELIM_NONE;
}

typedef struct finder {
    const char *delim; /* "--" boundary */
    size_t dlen;
    bool truncated; /* a delimiter cut short by the end of the body was seen */
} finder;

/* Finds the next delimiter line "\n--boundary" at or after from. With require_cr the LF must
 * be preceded by CR (after part data); then *data_end is the CR, else the LF. Returns the
 * kind and sets *after. Linear: the comparison after each LF stops at the first mismatch, at
 * the next LF at the latest, since the boundary has no LF. */
static enum delim_kind find_delim(finder *f, const uint8_t *from, const uint8_t *end,
                                  bool require_cr, const uint8_t **data_end, const uint8_t **after)
{
    const uint8_t *p = from;
    while (p < end) {
        const uint8_t *q = memchr(p, '\n', (size_t)(end - p));
        if (!q)
            break;
        const uint8_t *r = q + 1;
        size_t k = 0;
        while (k < f->dlen && r + k < end && r[k] == (uint8_t)f->delim[k])
            k++;
        bool cr_ok = !require_cr || (q > from && q[-1] == '\r');
        if (k == f->dlen && cr_ok) {
            enum delim_kind kind = delim_tail(r + k, end, after);
            if (kind == DELIM_OPEN || kind == DELIM_CLOSE) {
                *data_end = require_cr ? q - 1 : q;
                return kind;
            }
            if (kind == DELIM_TRUNCATED)
                f->truncated = true;
        } else if (cr_ok && r + k == end && k < f->dlen) {
            f->truncated = true;
        }
        p = q + 1;
    }
    return DELIM_NONE;
}

typedef struct part_headers {
    const char *disp, *disp_end;   /* Content-Disposition value (trimmed), or NULL */
    const char *ctype, *ctype_end; /* Content-Type value (trimmed), or NULL */
} part_headers;

static bool name_is(const char *n, const char *n_end, const char *want)
{
    size_t len = strlen(want);
    return (size_t)(n_end - n) == len && strncasecmp(n, want, len) == 0;
}

/* Reads the header block of part `index` starting at *pos, up to and including the empty
 * line; on success *pos is the first data byte. */
static fw_err read_headers(const uint8_t **pos, const uint8_t *end, size_t max_bytes, size_t index,
                           part_headers *h, fw_error *err)
{
    const uint8_t *start = *pos, *p = *pos;
    memset(h, 0, sizeof *h);
    for (;;) {
        size_t room = (size_t)(end - p);
        size_t scan = room < max_bytes ? room : max_bytes;
        const uint8_t *q = memchr(p, '\n', scan);
        if (!q) {
            if (scan == room)
                return fw_error_set(err, FW_ERR_PARSE,
                                    "unterminated part %zu: the body ends inside its headers",
                                    index);
            return fw_error_set(err, FW_ERR_PARSE,
                                "part %zu: header line too long (over %zu bytes)", index,
                                max_bytes);
        }
        if ((size_t)(q + 1 - start) > max_bytes)
            return fw_error_set(err, FW_ERR_PARSE, "part %zu: headers larger than %zu bytes", index,
                                max_bytes);
        const char *line = (const char *)p;
        const char *line_end = (const char *)q;
        if (line_end > line && line_end[-1] == '\r')
            line_end--;
        p = q + 1;
        if (line_end == line)
            break; /* the empty line ending the headers */
        if (memchr(line, '\0', (size_t)(line_end - line)))
            return fw_error_set(err, FW_ERR_PARSE, "part %zu: NUL byte in a header", index);
        if (is_ows(*line))
            continue; /* obsolete line folding: ignored */
        const char *colon = memchr(line, ':', (size_t)(line_end - line));
        if (!colon)
            return fw_error_set(err, FW_ERR_PARSE, "part %zu: malformed header line (no ':')",
                                index);
        const char *n = line, *n_end = colon, *v = colon + 1, *v_end = line_end;
        trim(&n, &n_end);
        trim(&v, &v_end);
        if (name_is(n, n_end, "content-disposition")) {
            h->disp = v;
            h->disp_end = v_end;
        } else if (name_is(n, n_end, "content-type")) {
            h->ctype = v;
            h->ctype_end = v_end;
        }
    }
    *pos = p;
    return FW_OK;
}

/* Fills the strings of part from its headers (one allocation, kept in *block). */
static fw_err part_strings(const part_headers *h, size_t index, fw_multipart_part *part,
                           char **block, fw_error *err)
{
    if (!h->disp)
        return fw_error_set(err, FW_ERR_PARSE, "part %zu has no Content-Disposition header", index);
    const char *type, *p;
    size_t type_len;
    split_value(h->disp, h->disp_end, &type, &type_len, &p);
    param name = {0}, filename = {0};
    bool have_name = false, have_filename = false;
    param pr;
    int rc;
    while ((rc = next_param(&p, h->disp_end, &pr)) == 1) {
        if (param_is(&pr, "name")) {
            name = pr;
            have_name = true;
        } else if (param_is(&pr, "filename")) {
            filename = pr;
            have_filename = true;
        }
    }
    if (rc < 0)
        return fw_error_set(err, FW_ERR_PARSE, "part %zu: malformed Content-Disposition", index);
    if (!have_name)
        return fw_error_set(err, FW_ERR_PARSE, "part %zu: Content-Disposition without a name",
                            index);
    size_t ctype_len = h->ctype ? (size_t)(h->ctype_end - h->ctype) : 0;
    size_t need = name.value_len + 1 + (have_filename ? filename.value_len + 1 : 0) +
                  (h->ctype ? ctype_len + 1 : 0);
    char *s = malloc(need);
    if (!s)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory parsing multipart headers");
    *block = s;
    part->name = s;
    s += unescape(&name, s) + 1;
    if (have_filename) {
        part->filename = s;
        s += unescape(&filename, s) + 1;
    }
    if (h->ctype) {
        memcpy(s, h->ctype, ctype_len);
        s[ctype_len] = '\0';
        part->content_type = s;
    }
    return FW_OK;
}

void fw_multipart_free(fw_multipart *mp)
{
    if (!mp)
        return;
    if (mp->strings)
        for (size_t i = 0; i < mp->n_parts; i++)
            free(mp->strings[i]);
    free(mp->strings);
    free(mp->parts);
    free(mp);
}

/* Appends a slot for one more part; grows the tables geometrically. */
static fw_err add_part(fw_multipart *mp, size_t *cap, fw_error *err)
{
    if (mp->n_parts == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        fw_multipart_part *parts = realloc(mp->parts, ncap * sizeof *parts);
        if (!parts)
            return fw_error_set(err, FW_ERR_NOMEM, "out of memory parsing multipart body");
        mp->parts = parts;
        char **strings = realloc(mp->strings, ncap * sizeof *strings);
        if (!strings)
            return fw_error_set(err, FW_ERR_NOMEM, "out of memory parsing multipart body");
        mp->strings = strings;
        *cap = ncap;
    }
    memset(&mp->parts[mp->n_parts], 0, sizeof mp->parts[0]);
    mp->strings[mp->n_parts] = NULL;
    mp->n_parts++;
    return FW_OK;
}

fw_err fw_multipart_parse(const char *content_type, const uint8_t *body, size_t len,
                          const fw_multipart_limits *limits, fw_multipart **out, fw_error *err)
{
    *out = NULL;
    fw_multipart_limits lim;
    fw_multipart_limits_init(&lim);
    if (limits) {
        if (limits->max_parts)
            lim.max_parts = limits->max_parts;
        if (limits->max_header_bytes)
            lim.max_header_bytes = limits->max_header_bytes;
    }
    char delim[2 + FW_MULTIPART_MAX_BOUNDARY + 1] = "--";
    fw_err rc = fw_multipart_boundary(content_type, delim + 2, sizeof delim - 2, err);
    if (rc)
        return rc;
    if (!body || len == 0)
        return fw_error_set(err, FW_ERR_PARSE, "no parts in multipart body (empty body)");
    finder f = {.delim = delim, .dlen = strlen(delim), .truncated = false};
    const uint8_t *end = body + len;

    /* The first delimiter: at the very start, or after a preamble line. */
    const uint8_t *pos = NULL, *unused;
    enum delim_kind kind = DELIM_NONE;
    if (len >= f.dlen && memcmp(body, delim, f.dlen) == 0)
        kind = delim_tail(body + f.dlen, end, &pos);
    if (kind != DELIM_OPEN && kind != DELIM_CLOSE)
        kind = find_delim(&f, body, end, false, &unused, &pos);
    if (kind != DELIM_OPEN)
        return fw_error_set(err, FW_ERR_PARSE, "no parts in multipart body");

    fw_multipart *mp = calloc(1, sizeof *mp);
    if (!mp)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory parsing multipart body");
    size_t cap = 0;
    for (;;) {
        size_t index = mp->n_parts;
        if (index >= lim.max_parts) {
            rc = fw_error_set(err, FW_ERR_TOO_LARGE, "too many multipart parts (limit %zu)",
                              lim.max_parts);
            goto fail;
        }
        part_headers h;
        rc = read_headers(&pos, end, lim.max_header_bytes, index, &h, err);
        if (rc)
            goto fail;
        const uint8_t *data_end, *after;
        f.truncated = false;
        kind = find_delim(&f, pos, end, true, &data_end, &after);
        if (kind == DELIM_NONE) {
            rc = f.truncated ? fw_error_set(err, FW_ERR_PARSE,
                                            "missing closing boundary after part %zu", index)
                             : fw_error_set(err, FW_ERR_PARSE,
                                            "unterminated part %zu (no closing boundary)", index);
            goto fail;
        }
        if ((rc = add_part(mp, &cap, err)))
            goto fail;
        fw_multipart_part *part = &mp->parts[index];
        rc = part_strings(&h, index, part, &mp->strings[index], err);
        if (rc)
            goto fail;
        part->data = pos;
        part->len = (size_t)(data_end - pos);
        if (kind == DELIM_CLOSE)
            break;
        pos = after;
    }
    *out = mp;
    return FW_OK;
fail:
    fw_multipart_free(mp);
    return rc;
}
