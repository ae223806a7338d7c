/* Unit tests for util/buf: appends, printf beyond the small fast path, detach, and the
 * sticky failure flag on size overflow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "util/buf.h"

static void test_append_and_detach(void **state)
{
    (void)state;
    fw_buf b;
    fw_buf_init(&b);
    fw_buf_puts(&b, "{\"a\":");
    fw_buf_printf(&b, "%d", 42);
    fw_buf_putc(&b, '}');
    fw_buf_append(&b, "\0x", 2); /* binary content is kept */
    assert_false(fw_buf_failed(&b));
    size_t len;
    char *s = fw_buf_detach(&b, &len);
    assert_non_null(s);
    assert_int_equal(len, 10);
    assert_memory_equal(s, "{\"a\":42}\0x", 10);
    assert_int_equal(s[10], '\0');
    free(s);
    /* detach reset the buffer: an untouched buffer gives "" */
    s = fw_buf_detach(&b, &len);
    assert_non_null(s);
    assert_int_equal(len, 0);
    assert_string_equal(s, "");
    free(s);
}

static void test_growth_and_long_printf(void **state)
{
    (void)state;
    fw_buf b;
    fw_buf_init(&b);
    char big[1000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    for (int i = 0; i < 100; i++)
        fw_buf_printf(&b, "%s|%d;", big, i); /* each over the 128-byte fast path */
    assert_false(fw_buf_failed(&b));
    assert_int_equal(b.len, 100 * (999 + 1 + 1) + 10 * 1 + 90 * 2);
    assert_true(b.cap > b.len);
    assert_memory_equal(b.data + b.len - 4, "|99;", 4);
    fw_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    fw_buf_free(NULL);
}

static void test_overflow_is_sticky(void **state)
{
    (void)state;
    fw_buf b;
    fw_buf_init(&b);
    fw_buf_puts(&b, "abc");
    assert_false(fw_buf_reserve(&b, SIZE_MAX - 2));
    assert_true(fw_buf_failed(&b));
    fw_buf_puts(&b, "def"); /* ignored */
    assert_false(fw_buf_reserve(&b, 1));
    size_t len = 7;
    assert_null(fw_buf_detach(&b, &len));
    assert_int_equal(len, 0);
    assert_null(b.data);
    assert_false(fw_buf_failed(&b)); /* detach reset it */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_detach),
        cmocka_unit_test(test_growth_and_long_printf),
        cmocka_unit_test(test_overflow_is_sticky),
    };
    return cmocka_run_group_tests(tests, 0, NULL);
}
