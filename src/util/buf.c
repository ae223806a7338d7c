#include "util/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fw_buf_init(fw_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = false;
}

bool fw_buf_reserve(fw_buf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (extra > SIZE_MAX - 1 - b->len) {
        b->failed = true;
        return false;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void fw_buf_append(fw_buf *b, const void *p, size_t n)
{
    if (n == 0 || !fw_buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void fw_buf_puts(fw_buf *b, const char *s)
{
    fw_buf_append(b, s, strlen(s));
}

void fw_buf_putc(fw_buf *b, char c)
{
    if (!fw_buf_reserve(b, 1))
        return;
    b->data[b->len++] = c;
}

void fw_buf_printf(fw_buf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        fw_buf_append(b, small, (size_t)n);
        return;
    }
    if (!fw_buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

bool fw_buf_failed(const fw_buf *b)
{
    return b->failed;
}

char *fw_buf_detach(fw_buf *b, size_t *len)
{
    if (!fw_buf_reserve(b, 0)) { /* also false when an earlier append failed */
        fw_buf_free(b);
        if (len)
            *len = 0;
        return NULL;
    }
    char *p = b->data;
    p[b->len] = '\0';
    if (len)
        *len = b->len;
    fw_buf_init(b);
    return p;
}

void fw_buf_free(fw_buf *b)
{
    if (!b)
        return;
    free(b->data);
    fw_buf_init(b);
}
