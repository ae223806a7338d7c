/* A growable byte buffer with a sticky out-of-memory flag.
 *
 * Appends never fail loudly: when an allocation fails the buffer remembers it (fw_buf_failed)
 * and ignores every later append, so that a writer checks once at the end:
 *
 *   fw_buf b; fw_buf_init(&b);
 *   fw_buf_puts(&b, "{\"a\":"); fw_buf_printf(&b, "%d", 1); fw_buf_putc(&b, '}');
 *   size_t len; char *s = fw_buf_detach(&b, &len);   // NULL when an append failed
 *   ... free(s);
 *
 * Ownership: the buffer owns `data` until fw_buf_detach hands it to the caller. The contents
 * may be binary; detach adds a NUL after the last byte (not counted in len). Not thread-safe. */
#ifndef FW_UTIL_BUF_H
#define FW_UTIL_BUF_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fw_buf {
    char *data; /* len bytes written; capacity cap (always room for a final NUL) */
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed; appends are ignored from then on */
} fw_buf;

/* An empty buffer (no allocation yet). */
void fw_buf_init(fw_buf *b);

/* Makes room for `extra` more bytes plus a NUL, so that the caller may write up to `extra`
 * bytes at data + len and then advance len. Returns false (and sets failed) when the
 * allocation fails or the size overflows, or when the buffer has already failed. */
bool fw_buf_reserve(fw_buf *b, size_t extra);

/* Appends n bytes / a NUL-terminated string / one byte / printf-formatted text. */
void fw_buf_append(fw_buf *b, const void *p, size_t n);
void fw_buf_puts(fw_buf *b, const char *s);
void fw_buf_putc(fw_buf *b, char c);
void fw_buf_printf(fw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Whether an append failed since init. */
bool fw_buf_failed(const fw_buf *b);

/* Hands the contents to the caller (NUL-terminated; free with free()) and resets the buffer
 * to empty. Returns NULL when an append failed (the contents are then freed). *len may be
 * NULL. An untouched buffer yields an empty string. */
char *fw_buf_detach(fw_buf *b, size_t *len);

/* Frees the contents and resets to empty. NULL is a no-op. */
void fw_buf_free(fw_buf *b);

#ifdef __cplusplus
}
#endif
#endif
