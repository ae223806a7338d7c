/* libFuzzer harness for server/multipart.
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DFW_FUZZ=ON && cmake --build build-fuzz --target
 * fuzz_multipart; run: build-fuzz/fuzz_multipart tests/fuzz/corpus/multipart.
 *
 * Input layout: byte 0 = flags (bit 0: quote the boundary; bit 1: small limits, 4 parts and
 * 64 header bytes; bit 2: a different media type), byte 1 = boundary length L (1 + b % 72),
 * the next L bytes = the boundary (used verbatim, so invalid ones are exercised too), the
 * rest = the body. On success the parts must lie inside the body in order, without overlap,
 * and no part's data may contain a complete delimiter line (checked with a naive search). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "server/multipart.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether d[0..n) holds CRLF "--" boundary followed by "--" or by spaces/tabs and a line
 * break: a delimiter the parser should have stopped at. */
static bool has_delimiter(const uint8_t *d, size_t n, const char *b, size_t blen)
{
    for (size_t i = 0; i + 4 + blen <= n; i++) {
        if (d[i] != '\r' || d[i + 1] != '\n' || d[i + 2] != '-' || d[i + 3] != '-' ||
            memcmp(d + i + 4, b, blen) != 0)
            continue;
        size_t j = i + 4 + blen;
        if (j + 1 < n && d[j] == '-' && d[j + 1] == '-')
            return true;
        while (j < n && (d[j] == ' ' || d[j] == '\t'))
            j++;
        if (j < n && (d[j] == '\n' || (d[j] == '\r' && j + 1 < n && d[j + 1] == '\n')))
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    size_t blen = 1 + data[1] % 72;
    if (size < 2 + blen)
        return 0;
    char boundary[80];
    memcpy(boundary, data + 2, blen);
    boundary[blen] = '\0';
    const uint8_t *body = data + 2 + blen;
    size_t len = size - 2 - blen;

    char ct[256];
    const char *mt = (flags & 4) ? "Multipart/Form-Data; charset=utf-8" : "multipart/form-data";
    snprintf(ct, sizeof ct, (flags & 1) ? "%s; boundary=\"%s\"" : "%s; boundary=%s", mt, boundary);
    fw_multipart_limits lim = {0};
    if (flags & 2) {
        lim.max_parts = 4;
        lim.max_header_bytes = 64;
    }
    fw_multipart *mp = (fw_multipart *)1;
    fw_error err;
    fw_err rc = fw_multipart_parse(ct, body, len, &lim, &mp, &err);
    if (rc != FW_OK) {
        CHECK(mp == NULL);
        CHECK(err.code == rc && err.message[0] != '\0');
        CHECK(rc == FW_ERR_PARSE || rc == FW_ERR_TOO_LARGE || rc == FW_ERR_NOMEM);
        return 0;
    }
    char b[FW_MULTIPART_MAX_BOUNDARY + 1];
    CHECK(fw_multipart_boundary(ct, b, sizeof b, NULL) == FW_OK);
    size_t bl = strlen(b);
    CHECK(mp->n_parts >= 1);
    CHECK(mp->n_parts <= ((flags & 2) ? 4u : (size_t)FW_MULTIPART_DEFAULT_MAX_PARTS));
    const uint8_t *prev_end = body;
    for (size_t i = 0; i < mp->n_parts; i++) {
        const fw_multipart_part *p = &mp->parts[i];
        CHECK(p->name != NULL);
        CHECK(p->data >= prev_end && p->data <= body + len);
        CHECK(p->len <= (size_t)(body + len - p->data));
        prev_end = p->data + p->len;
        CHECK(!has_delimiter(p->data, p->len, b, bl));
        volatile size_t sink = strlen(p->name) + (p->filename ? strlen(p->filename) : 0) +
                               (p->content_type ? strlen(p->content_type) : 0);
        (void)sink;
    }
    fw_multipart_free(mp);
    return 0;
}
