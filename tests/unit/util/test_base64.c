/* Unit tests for util/base64 (RFC 4648 vectors, whitespace, padding, bad characters, data
 * URLs, limits, random round trips) and util/half (float32 -> binary16 rounding, checked
 * against hand-computed bit patterns and exhaustively against every half and every midpoint
 * between adjacent halves). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/base64.h"
#include "util/half.h"

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                              */

/* Decodes a NUL-terminated string; on success returns a malloc'd copy (NUL-terminated) */
static fw_err dec(const char *s, char **out, size_t *len, fw_error *err)
{
    size_t n = strlen(s);
    uint8_t *buf = malloc(fw_base64_decoded_max(n) + 1);
    assert_non_null(buf);
    fw_err rc = fw_base64_decode(s, n, buf, fw_base64_decoded_max(n), len, err);
    if (rc) {
        free(buf);
        *out = NULL;
        return rc;
    }
    buf[*len] = '\0';
    *out = (char *)buf;
    return FW_OK;
}

static void assert_decodes(const char *in, const char *want)
{
    char *out;
    size_t len;
    fw_error err;
    fw_err rc = dec(in, &out, &len, &err);
    if (rc)
        fail_msg("decoding \"%s\" failed: %s", in, err.message);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(out, want, len);
    free(out);
}

static void assert_rejects(const char *in, fw_err code, const char *msg_part)
{
    char *out;
    size_t len;
    fw_error err = {0};
    fw_err rc = dec(in, &out, &len, &err);
    if (rc == FW_OK) {
        free(out);
        fail_msg("\"%s\" decoded but should fail", in);
    }
    assert_int_equal(rc, code);
    assert_int_equal(err.code, code);
    if (msg_part && !strstr(err.message, msg_part))
        fail_msg("message \"%s\" lacks \"%s\"", err.message, msg_part);
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* ------------------------------------------------------------------------------------ */
/* base64                                                                               */

static const char *const RFC_PLAIN[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
static const char *const RFC_B64[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};

static void test_rfc4648_encode(void **state)
{
    (void)state;
    for (size_t i = 0; i < 7; i++) {
        size_t n = strlen(RFC_PLAIN[i]);
        char out[16];
        memset(out, 'X', sizeof out);
        assert_int_equal(fw_base64_encoded_len(n), strlen(RFC_B64[i]));
        fw_base64_encode((const uint8_t *)RFC_PLAIN[i], n, out);
        assert_string_equal(out, RFC_B64[i]);
    }
}

static void test_rfc4648_decode(void **state)
{
    (void)state;
    for (size_t i = 0; i < 7; i++)
        assert_decodes(RFC_B64[i], RFC_PLAIN[i]);
}

static void test_missing_padding(void **state)
{
    (void)state;
    assert_decodes("Zg", "f");
    assert_decodes("Zm8", "fo");
    assert_decodes("Zm9vYg", "foob");
    assert_decodes("Zm9vYmE", "fooba");
}

static void test_whitespace(void **state)
{
    (void)state;
    assert_decodes("Zm9v\r\nYmFy", "foobar");
    assert_decodes("  Zm9vYmFy\n", "foobar");
    assert_decodes("Z m 9 v\tY\vm\fF y", "foobar");
    assert_decodes("Zm9vYg = =\r\n", "foob");
    assert_decodes(" \n\t ", "");
    /* MIME-style 76-column lines */
    assert_decodes("Zm9vYmFy\r\nZm9vYmFy\r\nZg==\r\n", "foobarfoobarf");
}

static void test_bad_characters(void **state)
{
    (void)state;
    assert_rejects("Zm9v!mFy", FW_ERR_CORRUPT, "'!' at offset 4");
    assert_rejects("Zm9vYmF\xff", FW_ERR_CORRUPT, "0xff at offset 7");
    assert_rejects("Zm9v-_Fy", FW_ERR_CORRUPT, "'-' at offset 4"); /* URL-safe alphabet */
    assert_rejects("Zm9v\x01YmFy", FW_ERR_CORRUPT, "0x01 at offset 4");
    assert_rejects("\"Zm9v\"", FW_ERR_CORRUPT, "offset 0");
}

static void test_padding_errors(void **state)
{
    (void)state;
    assert_rejects("Z", FW_ERR_CORRUPT, "truncated");
    assert_rejects("Zm9vY", FW_ERR_CORRUPT, "truncated");
    assert_rejects("Zg=", FW_ERR_CORRUPT, "padding");
    assert_rejects("Zm8==", FW_ERR_CORRUPT, "padding");
    assert_rejects("Zm9v=", FW_ERR_CORRUPT, "padding");
    assert_rejects("=", FW_ERR_CORRUPT, "padding at offset 0");
    assert_rejects("Zg===", FW_ERR_CORRUPT, "padding");
    assert_rejects("Zg==Zg==", FW_ERR_CORRUPT, "after padding at offset 4");
    assert_rejects("Zg==!", FW_ERR_CORRUPT, "'!' at offset 4");
    /* non-zero unused bits are accepted, as Python does */
    assert_decodes("Zh==", "f");
}

static void test_data_url(void **state)
{
    (void)state;
    assert_decodes("data:image/png;base64,Zm9v", "foo");
    assert_decodes("  DATA:image/jpeg;BASE64,Zm9vYmFy", "foobar");
    assert_decodes("data:image/svg+xml;charset=utf-8;base64,Zm9v\n", "foo");
    assert_decodes("data:;base64,Zg", "f");
    assert_rejects("data:text/plain,hello", FW_ERR_CORRUPT, "not base64");
    assert_rejects("data:image/png;base64", FW_ERR_CORRUPT, "without ','");
    /* offsets count from the start of the input, prefix included */
    assert_rejects("data:image/png;base64,Zm9v!", FW_ERR_CORRUPT, "offset 26");
}

static void test_sizes_and_limits(void **state)
{
    (void)state;
    for (size_t n = 0; n < 64; n++) {
        size_t e = fw_base64_encoded_len(n);
        assert_int_equal(e % 4, 0);
        assert_true(fw_base64_decoded_max(e) >= n);
        assert_true(fw_base64_decoded_max(e) <= n + 2);
        /* unpadded and whitespace-padded forms fit too */
        assert_true(fw_base64_decoded_max(e - (n % 3 ? 3 - n % 3 : 0)) >= n);
    }
    assert_int_equal(fw_base64_decoded_max(0), 0);
    assert_int_equal(fw_base64_decoded_max(2), 3);
    assert_int_equal(fw_base64_decoded_max(8), 6);

    uint8_t buf[8];
    size_t len = 99;
    fw_error err = {0};
    assert_int_equal(fw_base64_decode("Zm9vYmFy", 8, buf, 5, &len, &err), FW_ERR_TOO_LARGE);
    assert_int_equal(err.code, FW_ERR_TOO_LARGE);
    assert_int_equal(fw_base64_decode("Zm9vYmE", 7, buf, 4, &len, &err), FW_ERR_TOO_LARGE);
    assert_int_equal(fw_base64_decode("Zm9vYmE", 7, buf, 5, &len, &err), FW_OK);
    assert_int_equal(len, 5);

    uint8_t *out = (uint8_t *)"x";
    assert_int_equal(fw_base64_decode_alloc("Zm9vYmFy", 8, 5, &out, &len, &err), FW_ERR_TOO_LARGE);
    assert_null(out);
    assert_int_equal(fw_base64_decode_alloc("Zm9vYmFy", 8, 6, &out, &len, &err), FW_OK);
    assert_int_equal(len, 6);
    assert_memory_equal(out, "foobar", 6);
    free(out);
    /* max_out 0 means no limit (found by fuzz_base64: a harness assumed a 0-byte limit) */
    assert_int_equal(fw_base64_decode_alloc("YQ==", 4, 0, &out, &len, &err), FW_OK);
    assert_int_equal(len, 1);
    assert_int_equal(out[0], 'a');
    free(out);
    assert_int_equal(fw_base64_decode_alloc("", 0, 0, &out, &len, &err), FW_OK);
    assert_int_equal(len, 0);
    free(out);
    assert_int_equal(fw_base64_decode_alloc("Zm9v!", 5, 0, &out, &len, &err), FW_ERR_CORRUPT);
    assert_null(out);
}

static void test_random_round_trips(void **state)
{
    (void)state;
    uint8_t src[300], back[300];
    char enc[404], spaced[1300];
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = rnd() % sizeof src;
        for (size_t i = 0; i < n; i++)
            src[i] = (uint8_t)rnd();
        fw_base64_encode(src, n, enc);
        size_t elen = strlen(enc);
        assert_int_equal(elen, fw_base64_encoded_len(n));
        size_t len;
        fw_error err;
        assert_int_equal(fw_base64_decode(enc, elen, back, sizeof back, &len, &err), FW_OK);
        assert_int_equal(len, n);
        assert_memory_equal(back, src, n);
        /* the same with random whitespace and without padding */
        size_t k = 0;
        size_t unpadded = elen;
        while (unpadded && enc[unpadded - 1] == '=')
            unpadded--;
        for (size_t i = 0; i < unpadded; i++) {
            if (rnd() % 5 == 0)
                spaced[k++] = " \r\n\t"[rnd() % 4];
            spaced[k++] = enc[i];
        }
        assert_int_equal(fw_base64_decode(spaced, k, back, sizeof back, &len, &err), FW_OK);
        assert_int_equal(len, n);
        assert_memory_equal(back, src, n);
    }
}

static void test_all_byte_values(void **state)
{
    (void)state;
    uint8_t src[256], back[256];
    for (int i = 0; i < 256; i++)
        src[i] = (uint8_t)i;
    char enc[400];
    fw_base64_encode(src, 256, enc);
    size_t len;
    assert_int_equal(fw_base64_decode(enc, strlen(enc), back, sizeof back, &len, NULL), FW_OK);
    assert_int_equal(len, 256);
    assert_memory_equal(back, src, 256);
    /* Every byte outside the alphabet, whitespace and '=' is rejected. */
    for (int c = 0; c < 256; c++) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/' || c == ' ' || (c >= '\t' && c <= '\r');
        char in[5] = {'Z', 'm', '9', (char)c, 0};
        uint8_t out[8];
        fw_err rc = fw_base64_decode(in, 4, out, sizeof out, &len, NULL);
        if (c == '=')
            assert_int_equal(rc, FW_OK); /* "Zm9=" is a padded 2-byte group */
        else
            assert_int_equal(rc, ok ? FW_OK : FW_ERR_CORRUPT);
    }
}

/* ------------------------------------------------------------------------------------ */
/* half floats                                                                          */

static float from_bits(uint32_t x)
{
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static void test_half_vectors(void **state)
{
    (void)state;
    assert_int_equal(fw_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(fw_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(fw_f32_to_f16(0.5f), 0x3800);
    assert_int_equal(fw_f32_to_f16(0.0f), 0x0000);
    assert_int_equal(fw_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(fw_f32_to_f16(65504.0f), 0x7bff); /* largest half */
    assert_int_equal(fw_f32_to_f16(65519.0f), 0x7bff); /* below the midpoint 65520 */
    assert_int_equal(fw_f32_to_f16(65520.0f), 0x7c00); /* midpoint ties to even: inf */
    assert_int_equal(fw_f32_to_f16(-1e6f), 0xfc00);
    assert_int_equal(fw_f32_to_f16(0.1f), 0x2e66); /* 0.0999755859375 */
    assert_int_equal(fw_f32_to_f16(0.333333f), 0x3555);
    /* normal/subnormal boundary: 2^-14 = 6.1035156e-5 is the smallest normal */
    assert_int_equal(fw_f32_to_f16(6.1035156e-5f), 0x0400);
    assert_int_equal(fw_f32_to_f16(6.1e-5f), 0x03ff);           /* 1023.4 units of 2^-24 */
    assert_int_equal(fw_f32_to_f16(6.0975552e-5f), 0x03ff);     /* largest subnormal */
    assert_int_equal(fw_f32_to_f16(ldexpf(1.0f, -24)), 0x0001); /* smallest subnormal */
    assert_int_equal(fw_f32_to_f16(ldexpf(1.0f, -25)), 0x0000); /* tie to even: 0 */
    assert_int_equal(fw_f32_to_f16(nextafterf(ldexpf(1.0f, -25), 1.0f)), 0x0001);
    assert_int_equal(fw_f32_to_f16(ldexpf(3.0f, -25)), 0x0002); /* 1.5 units: to even 2 */
    assert_int_equal(fw_f32_to_f16(ldexpf(5.0f, -25)), 0x0002); /* 2.5 units: to even 2 */
    assert_int_equal(fw_f32_to_f16(-ldexpf(1.0f, -24)), 0x8001);
    assert_int_equal(fw_f32_to_f16(1e-10f), 0x0000);
    assert_int_equal(fw_f32_to_f16(-1e-10f), 0x8000);
    assert_int_equal(fw_f32_to_f16(from_bits(0x00000001u)), 0x0000); /* float subnormal */
    /* rounding in the normal range: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 */
    assert_int_equal(fw_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);
    assert_int_equal(fw_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02);
    assert_int_equal(fw_f32_to_f16(1.0f + ldexpf(1.0f, -11) + ldexpf(1.0f, -20)), 0x3c01);
    assert_int_equal(fw_f32_to_f16(2047.0f / 1024.0f + ldexpf(1.0f, -11)), 0x4000); /* carry */
    /* infinities and NaN */
    assert_int_equal(fw_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(fw_f32_to_f16(-INFINITY), 0xfc00);
    uint16_t h = fw_f32_to_f16(NAN);
    assert_int_equal(h & 0x7c00, 0x7c00);
    assert_true((h & 0x3ff) != 0);
    h = fw_f32_to_f16(from_bits(0xff800001u)); /* a signalling NaN with a low payload */
    assert_int_equal(h & 0xfc00, 0xfc00);
    assert_true((h & 0x3ff) != 0);
    assert_true(isnan(fw_f16_to_f32(h)));

    assert_true(fw_f16_to_f32(0x3c00) == 1.0f);
    assert_true(fw_f16_to_f32(0xc000) == -2.0f);
    assert_true(fw_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(fw_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(fw_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    assert_true(isinf(fw_f16_to_f32(0xfc00)) && fw_f16_to_f32(0xfc00) < 0);
    assert_true(signbit(fw_f16_to_f32(0x8000)));

    uint8_t le[4];
    float two[2] = {1.0f, -2.0f};
    fw_f32_to_f16_le(two, 2, le);
    assert_int_equal(le[0], 0x00);
    assert_int_equal(le[1], 0x3c);
    assert_int_equal(le[2], 0x00);
    assert_int_equal(le[3], 0xc0);
}

/* Every half converts to a float and back unchanged; every midpoint between adjacent halves
 * rounds to the even one and its neighbours to the nearer one. */
static void test_half_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = fw_f16_to_f32((uint16_t)h);
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) {
            assert_true(isnan(f));
            assert_true((fw_f32_to_f16(f) & 0x7fffu) > 0x7c00u);
            continue;
        }
        assert_int_equal(fw_f32_to_f16(f), h);
    }
    for (uint32_t h = 0; h < 0x7c00u; h++) {
        for (int sign = 0; sign < 2; sign++) {
            uint16_t lo = (uint16_t)(h | (sign ? 0x8000u : 0)), hi = (uint16_t)(lo + 1);
            float a = fw_f16_to_f32(lo),
                  b = h + 1 == 0x7c00u ? (sign ? -65536.0f : 65536.0f) : fw_f16_to_f32(hi);
            float mid = (a + b) / 2; /* exact: halves have 11 significant bits */
            uint16_t even = (lo & 1) ? hi : lo;
            assert_int_equal(fw_f32_to_f16(mid), even);
            assert_int_equal(fw_f32_to_f16(nextafterf(mid, a)), lo);
            assert_int_equal(fw_f32_to_f16(nextafterf(mid, b)), hi);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_encode),     cmocka_unit_test(test_rfc4648_decode),
        cmocka_unit_test(test_missing_padding),    cmocka_unit_test(test_whitespace),
        cmocka_unit_test(test_bad_characters),     cmocka_unit_test(test_padding_errors),
        cmocka_unit_test(test_data_url),           cmocka_unit_test(test_sizes_and_limits),
        cmocka_unit_test(test_random_round_trips), cmocka_unit_test(test_all_byte_values),
        cmocka_unit_test(test_half_vectors),       cmocka_unit_test(test_half_exhaustive),
    };
    return cmocka_run_group_tests(tests, 0, NULL);
}
