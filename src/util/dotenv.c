#include "util/dotenv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *key;
    char *value;
    unsigned line;
} entry;

/* Entries in order of first appearance, plus an open-addressing index (slot = entry + 1,
 * 0 = empty) so that a file of many distinct keys stays linear to parse. */
struct fw_dotenv {
    entry *items;
    size_t count, cap;
    size_t *slots;
    size_t nslots; /* power of two, at least 2 * cap; 0 while empty */
    size_t invalid;
};

static size_t hash_key(const char *s)
{
    size_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static int is_key_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int is_key_char(char c)
{
    return is_key_start(c) || (c >= '0' && c <= '9') || c == '.';
}

static char *dup_range(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static entry *find(const fw_dotenv *env, const char *key)
{
    if (!env || !key || !env->nslots)
        return NULL;
    size_t mask = env->nslots - 1;
    for (size_t i = hash_key(key) & mask;; i = (i + 1) & mask) {
        size_t s = env->slots[i];
        if (!s)
            return NULL;
        if (strcmp(env->items[s - 1].key, key) == 0)
            return &env->items[s - 1];
    }
}

static void index_entry(fw_dotenv *env, size_t idx)
{
    size_t mask = env->nslots - 1;
    size_t i = hash_key(env->items[idx].key) & mask;
    while (env->slots[i])
        i = (i + 1) & mask;
    env->slots[i] = idx + 1;
}

/* Takes ownership of key and value (frees them on failure). */
static fw_err put(fw_dotenv *env, char *key, char *value, unsigned line)
{
    entry *e = find(env, key);
    if (e) {
        free(key);
        free(e->value);
        e->value = value;
        e->line = line;
        return FW_OK;
    }
    if (env->count == env->cap) {
        size_t ncap = env->cap ? env->cap * 2 : 16;
        entry *n = realloc(env->items, ncap * sizeof *n);
        size_t *slots = n ? calloc(ncap * 2, sizeof *slots) : NULL;
        if (!slots) {
            if (n)
                env->items = n;
            free(key);
            free(value);
            return FW_ERR_NOMEM;
        }
        env->items = n;
        env->cap = ncap;
        free(env->slots);
        env->slots = slots;
        env->nslots = ncap * 2;
        for (size_t i = 0; i < env->count; i++)
            index_entry(env, i);
    }
    env->items[env->count] = (entry){key, value, line};
    index_entry(env, env->count);
    env->count++;
    return FW_OK;
}

/* After a closing quote only blanks and an optional comment may follow. */
static int rest_is_empty(const char *p, const char *end)
{
    while (p < end && is_blank(*p))
        p++;
    return p == end || *p == '#';
}

/* Parses one line (without its terminator). Returns 0 for a blank or comment line, 1 with
 * *key and *value set (malloc'd), -1 with *why set for an invalid line, -2 out of memory. */
static int parse_line(const char *p, const char *end, char **key, char **value, const char **why)
{
    while (p < end && is_blank(*p))
        p++;
    if (p == end || *p == '#')
        return 0;
    if (memchr(p, '\0', (size_t)(end - p))) {
        *why = "contains a NUL byte";
        return -1;
    }
    if (end - p > 6 && memcmp(p, "export", 6) == 0 && is_blank(p[6])) {
        const char *q = p + 6;
        while (q < end && is_blank(*q))
            q++;
        if (q < end && *q != '=')
            p = q;
    }
    const char *k = p;
    if (p == end || !is_key_start(*p)) {
        *why = "expected KEY=VALUE (invalid key)";
        return -1;
    }
    while (p < end && is_key_char(*p))
        p++;
    const char *kend = p;
    while (p < end && is_blank(*p))
        p++;
    if (p == end || *p != '=') {
        *why = "expected KEY=VALUE (no '=' after the key)";
        return -1;
    }
    p++;
    const char *raw = p; /* right after '=' */
    while (p < end && is_blank(*p))
        p++;

    char *val = NULL;
    if (p < end && *p == '\'') {
        const char *q = memchr(p + 1, '\'', (size_t)(end - p - 1));
        if (!q) {
            *why = "unterminated single-quoted value";
            return -1;
        }
        if (!rest_is_empty(q + 1, end)) {
            *why = "unexpected text after the closing quote";
            return -1;
        }
        val = dup_range(p + 1, (size_t)(q - p - 1));
        if (!val)
            return -2;
    } else if (p < end && *p == '"') {
        val = malloc((size_t)(end - p));
        if (!val)
            return -2;
        size_t n = 0;
        const char *q = p + 1;
        int closed = 0;
        while (q < end) {
            char c = *q++;
            if (c == '"') {
                closed = 1;
                break;
            }
            if (c == '\\' && q < end) {
                char e = *q++;
                switch (e) {
                case 'n':
                    val[n++] = '\n';
                    break;
                case 'r':
                    val[n++] = '\r';
                    break;
                case 't':
                    val[n++] = '\t';
                    break;
                case '"':
                case '\\':
                case '$':
                    val[n++] = e;
                    break;
                default:
                    val[n++] = '\\';
                    val[n++] = e;
                    break;
                }
                continue;
            }
            val[n++] = c;
        }
        if (!closed) {
            free(val);
            *why = "unterminated double-quoted value";
            return -1;
        }
        if (!rest_is_empty(q, end)) {
            free(val);
            *why = "unexpected text after the closing quote";
            return -1;
        }
        val[n] = '\0';
    } else {
        const char *vend = end;
        for (const char *q = p; q < end; q++)
            if (*q == '#' && q > raw && is_blank(q[-1])) {
                vend = q;
                break;
            }
        while (vend > p && is_blank(vend[-1]))
            vend--;
        val = dup_range(p, (size_t)(vend - p));
        if (!val)
            return -2;
    }
    *key = dup_range(k, (size_t)(kend - k));
    if (!*key) {
        free(val);
        return -2;
    }
    *value = val;
    return 1;
}

fw_err fw_dotenv_parse(const char *text, size_t len, fw_dotenv **out, fw_error *err)
{
    if (!out || (!text && len))
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "dotenv: NULL argument");
    *out = NULL;
    if (len > FW_DOTENV_MAX_BYTES)
        return fw_error_set(err, FW_ERR_TOO_LARGE, "dotenv: %zu bytes, over the %u-byte limit", len,
                            FW_DOTENV_MAX_BYTES);
    fw_dotenv *env = calloc(1, sizeof *env);
    if (!env)
        return fw_error_set(err, FW_ERR_NOMEM, "dotenv: out of memory");
    unsigned first_bad = 0;
    const char *first_why = NULL;
    const char *p = text, *end = text ? text + len : text;
    unsigned lineno = 0;
    while (p < end) {
        lineno++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *lend = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        if (lend > p && lend[-1] == '\r')
            lend--;
        const char *why = NULL;
        char *key = NULL, *value = NULL;
        int r;
        if ((size_t)(lend - p) > FW_DOTENV_MAX_LINE) {
            why = "line too long";
            r = -1;
        } else {
            r = parse_line(p, lend, &key, &value, &why);
        }
        if (r == -2 || (r == 1 && put(env, key, value, lineno) != FW_OK)) {
            fw_dotenv_free(env);
            return fw_error_set(err, FW_ERR_NOMEM, "dotenv: out of memory");
        }
        if (r == -1) {
            env->invalid++;
            if (!first_bad) {
                first_bad = lineno;
                first_why = why;
            }
        }
        p = next;
    }
    *out = env;
    if (first_bad)
        return fw_error_set(err, FW_ERR_PARSE, "line %u: %s", first_bad, first_why);
    fw_error_clear(err);
    return FW_OK;
}

fw_err fw_dotenv_load(const char *path, fw_dotenv **out, fw_error *err)
{
    if (!path || !out)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "dotenv: NULL argument");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return fw_dotenv_parse("", 0, out, err);
        return fw_error_set(err, FW_ERR_IO, "%s: %s", path, strerror(errno));
    }
    char *buf = malloc(FW_DOTENV_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        return fw_error_set(err, FW_ERR_NOMEM, "dotenv: out of memory");
    }
    size_t n = fread(buf, 1, FW_DOTENV_MAX_BYTES + 1, f);
    int failed = ferror(f);
    int saved = errno;
    fclose(f);
    fw_err rc;
    if (failed)
        rc = fw_error_set(err, FW_ERR_IO, "%s: %s", path, strerror(saved));
    else if (n > FW_DOTENV_MAX_BYTES)
        rc = fw_error_set(err, FW_ERR_TOO_LARGE, "%s: over the %u-byte limit", path,
                          FW_DOTENV_MAX_BYTES);
    else {
        rc = fw_dotenv_parse(buf, n, out, err);
        if (rc == FW_ERR_PARSE && err) {
            char msg[FW_ERROR_MESSAGE_MAX];
            snprintf(msg, sizeof msg, "%s", err->message);
            fw_error_set(err, rc, "%s: %s", path, msg);
        }
    }
    free(buf);
    return rc;
}

const char *fw_dotenv_get(const fw_dotenv *env, const char *key)
{
    const entry *e = find(env, key);
    return e ? e->value : NULL;
}

size_t fw_dotenv_count(const fw_dotenv *env)
{
    return env ? env->count : 0;
}

const char *fw_dotenv_key(const fw_dotenv *env, size_t i)
{
    return env && i < env->count ? env->items[i].key : NULL;
}

const char *fw_dotenv_value(const fw_dotenv *env, size_t i)
{
    return env && i < env->count ? env->items[i].value : NULL;
}

unsigned fw_dotenv_line(const fw_dotenv *env, size_t i)
{
    return env && i < env->count ? env->items[i].line : 0;
}

unsigned fw_dotenv_line_of(const fw_dotenv *env, const char *key)
{
    const entry *e = find(env, key);
    return e ? e->line : 0;
}

size_t fw_dotenv_invalid_lines(const fw_dotenv *env)
{
    return env ? env->invalid : 0;
}

void fw_dotenv_free(fw_dotenv *env)
{
    if (!env)
        return;
    for (size_t i = 0; i < env->count; i++) {
        free(env->items[i].key);
        free(env->items[i].value);
    }
    free(env->items);
    free(env->slots);
    free(env);
}
