/* libFuzzer harness for .env parsing (util/dotenv).
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DFW_FUZZ=ON && cmake --build build-fuzz --target
 * fuzz_dotenv; run: build-fuzz/fuzz_dotenv tests/fuzz/corpus/dotenv.
 *
 * Invariants (any broken one traps): every entry has a well-formed key and is found again by
 * lookup with its own value and line; a parse error names a line; and re-serialising every
 * entry as KEY="escaped value" parses back to the same entries. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/dotenv.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int key_ok(const char *k)
{
    if (!((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || *k == '_'))
        return 0;
    for (k++; *k; k++)
        if (!((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || *k == '_' ||
              (*k >= '0' && *k <= '9') || *k == '.'))
            return 0;
    return 1;
}

/* Appends KEY="value" with escapes; returns the new length, or 0 when a line would be too
 * long for the parser. */
static size_t serialise(char *out, size_t len, const char *key, const char *value)
{
    size_t start = len;
    len += (size_t)sprintf(out + len, "%s=\"", key);
    for (const char *p = value; *p; p++) {
        switch (*p) {
        case '\n':
            out[len++] = '\\';
            out[len++] = 'n';
            break;
        case '\r':
            out[len++] = '\\';
            out[len++] = 'r';
            break;
        case '\t':
            out[len++] = '\\';
            out[len++] = 't';
            break;
        case '"':
        case '\\':
        case '$':
            out[len++] = '\\';
            out[len++] = *p;
            break;
        default:
            out[len++] = *p;
        }
    }
    out[len++] = '"';
    if (len - start > FW_DOTENV_MAX_LINE)
        return 0;
    out[len++] = '\n';
    return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fw_dotenv *env = NULL;
    fw_error err;
    fw_err rc = fw_dotenv_parse((const char *)data, size, &env, &err);
    if (rc != FW_OK && rc != FW_ERR_PARSE) {
        CHECK(env == NULL);
        CHECK(rc == FW_ERR_TOO_LARGE && size > FW_DOTENV_MAX_BYTES);
        return 0;
    }
    CHECK(env != NULL);
    if (rc == FW_ERR_PARSE) {
        CHECK(strncmp(err.message, "line ", 5) == 0);
        CHECK(fw_dotenv_invalid_lines(env) > 0);
    } else {
        CHECK(fw_dotenv_invalid_lines(env) == 0);
    }
    size_t n = fw_dotenv_count(env);
    size_t cap = 16, need = 0;
    for (size_t i = 0; i < n; i++) {
        const char *k = fw_dotenv_key(env, i), *v = fw_dotenv_value(env, i);
        CHECK(k && v && key_ok(k));
        CHECK(fw_dotenv_get(env, k) == v);
        CHECK(fw_dotenv_line(env, i) >= 1 && fw_dotenv_line_of(env, k) == fw_dotenv_line(env, i));
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(fw_dotenv_key(env, j), k) != 0);
        need += strlen(k) + 2 * strlen(v) + 5;
    }
    CHECK(fw_dotenv_key(env, n) == NULL);

    /* round trip */
    char *text = malloc(cap + need);
    CHECK(text != NULL);
    size_t len = 0;
    int fits = 1;
    for (size_t i = 0; i < n && fits; i++) {
        size_t l = serialise(text, len, fw_dotenv_key(env, i), fw_dotenv_value(env, i));
        fits = l != 0;
        len = l;
    }
    if (fits && len <= FW_DOTENV_MAX_BYTES) {
        fw_dotenv *again = NULL;
        CHECK(fw_dotenv_parse(text, len, &again, NULL) == FW_OK);
        CHECK(fw_dotenv_count(again) == n);
        for (size_t i = 0; i < n; i++) {
            CHECK(strcmp(fw_dotenv_key(again, i), fw_dotenv_key(env, i)) == 0);
            CHECK(strcmp(fw_dotenv_value(again, i), fw_dotenv_value(env, i)) == 0);
            CHECK(fw_dotenv_line(again, i) == i + 1);
        }
        fw_dotenv_free(again);
    }
    free(text);
    fw_dotenv_free(env);
    return 0;
}
