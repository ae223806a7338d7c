/* The retry policy: splitmix64, the exact full-jitter backoff sequence for a fixed seed,
 * Retry-After parsing (seconds and the three HTTP-date forms), and the classification table
 * of what is retried. Expected numbers were computed independently (Python, same formulas). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <string.h>

#include "client/backoff.h"

static void test_splitmix64_reference(void **state)
{
    (void)state;
    fw__rng r;
    fw__rng_seed(&r, 0);
    /* splitmix64's published first outputs for seed 0 */
    assert_true(fw__rng_next(&r) == 0xE220A8397B1DCDAFull);
    assert_true(fw__rng_next(&r) == 0x6E789E6AA1B965F4ull);
    fw__rng_seed(&r, 42);
    assert_true(fw__rng_next(&r) == 0xBDD732262FEB6E95ull);
    assert_true(fw__rng_next(&r) == 0x28EFE333B266F103ull);
    fw__rng_seed(&r, 5);
    assert_true(fw__rng_below(&r, 0) == 0);
}

static void test_backoff_sequence_seed_42(void **state)
{
    (void)state;
    /* base 100 ms, cap 5 s: ceilings 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5, 5 s;
     * delay = next() % (ceiling + 1) ns */
    static const uint64_t want[8] = {60701454u,  177761905u, 14554519u,   321758199u,
                                     103505259u, 657994962u, 1971851983u, 4033965644u};
    static const uint64_t ceil_ns[8] = {100000000u,  200000000u,  400000000u,  800000000u,
                                        1600000000u, 3200000000u, 5000000000u, 5000000000u};
    fw__rng r;
    fw__rng_seed(&r, 42);
    for (unsigned k = 0; k < 8; k++) {
        uint64_t d = fw__backoff_ns(&r, 100000000u, 5000000000u, k);
        assert_true(d == want[k]);
        assert_true(d <= ceil_ns[k]);
    }
    /* the same seed gives the same sequence */
    fw__rng_seed(&r, 42);
    assert_true(fw__backoff_ns(&r, 100000000u, 5000000000u, 0) == want[0]);
}

static void test_backoff_bounds(void **state)
{
    (void)state;
    fw__rng r;
    fw__rng_seed(&r, 1);
    /* zero base: never waits */
    for (int i = 0; i < 10; i++)
        assert_true(fw__backoff_ns(&r, 0, 0, (unsigned)i) == 0);
    /* huge retry numbers saturate at the cap, never overflow */
    for (int i = 0; i < 1000; i++)
        assert_true(fw__backoff_ns(&r, 1000, 7000, 200) <= 7000);
    /* full jitter: over many draws both small and large values occur */
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t d = fw__backoff_ns(&r, 1000000, 1000000, 0);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    assert_true(lo < 10000 && hi > 990000);
}

static void test_retry_after(void **state)
{
    (void)state;
    const int64_t t = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
    double s = -1;
    assert_true(fw__retry_after_parse("120", t, &s));
    assert_true(s == 120.0);
    assert_true(fw__retry_after_parse("  0 \r\n", t, &s));
    assert_true(s == 0.0);
    assert_true(fw__retry_after_parse("99999999999999999999", t, &s));
    assert_true(s == 86400.0); /* capped at a day */
    /* IMF-fixdate, 10 s in the future */
    assert_true(fw__retry_after_parse("Sun, 06 Nov 1994 08:49:47 GMT", t, &s));
    assert_true(s == 10.0);
    /* RFC 850 form, 1 min later */
    assert_true(fw__retry_after_parse("Sunday, 06-Nov-94 08:50:37 GMT", t, &s));
    assert_true(s == 60.0);
    /* asctime form, 1 h later (day padded with a blank) */
    assert_true(fw__retry_after_parse("Sun Nov  6 09:49:37 1994", t, &s));
    assert_true(s == 3600.0);
    /* a date in the past: retry now */
    assert_true(fw__retry_after_parse("Sat, 05 Nov 1994 08:49:37 GMT", t, &s));
    assert_true(s == 0.0);
    /* leap day */
    assert_true(fw__retry_after_parse("Thu, 29 Feb 1996 00:00:00 GMT", 825552000 - 5, &s));
    assert_true(s == 5.0);

    static const char *const bad[] = {
        "",
        "   ",
        "abc",
        "12a",
        "-5",
        "1.5",
        "0x10",
        "Sun, 32 Nov 1994 08:49:37 GMT",   /* day */
        "Sun, 06 Foo 1994 08:49:37 GMT",   /* month */
        "Sun, 06 Nov 1994 24:49:37 GMT",   /* hour */
        "Sun, 06 Nov 1994 08:49:37 UTC",   /* zone */
        "Sun, 06 Nov 1994 08:49:37 GMT x", /* trailing text */
        "Xyz, 06 Nov 1994 08:49:37 GMT",   /* day name */
        "Sunday, 06-Nov-94 08:49:37",      /* no zone */
        "Sun Nov  6 08:49:37",             /* no year */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = -7;
        assert_false(fw__retry_after_parse(bad[i], t, &s));
        assert_true(s == -7); /* untouched */
    }
    assert_false(fw__retry_after_parse(NULL, t, &s));
}

static void test_classification_table(void **state)
{
    (void)state;
    static const struct {
        int curl;
        long status;
        fw__attempt_class want;
        bool failure;
    } rows[] = {
        {CURLE_OK, 200, FW__ATTEMPT_OK, false},
        {CURLE_OK, 204, FW__ATTEMPT_OK, false},
        {CURLE_OK, 429, FW__ATTEMPT_RETRY, true},
        {CURLE_OK, 502, FW__ATTEMPT_RETRY, true},
        {CURLE_OK, 503, FW__ATTEMPT_RETRY, true},
        {CURLE_OK, 504, FW__ATTEMPT_RETRY, true},
        {CURLE_OK, 500, FW__ATTEMPT_FINAL, true},
        {CURLE_OK, 501, FW__ATTEMPT_FINAL, true},
        {CURLE_OK, 505, FW__ATTEMPT_FINAL, true},
        {CURLE_OK, 400, FW__ATTEMPT_FINAL, false},
        {CURLE_OK, 401, FW__ATTEMPT_FINAL, false},
        {CURLE_OK, 403, FW__ATTEMPT_FINAL, false},
        {CURLE_OK, 404, FW__ATTEMPT_FINAL, false},
        {CURLE_OK, 408, FW__ATTEMPT_FINAL, false},
        {CURLE_OK, 413, FW__ATTEMPT_FINAL, false},
        {CURLE_OK, 415, FW__ATTEMPT_FINAL, false},
        {CURLE_OK, 422, FW__ATTEMPT_FINAL, false},
        {CURLE_OK, 301, FW__ATTEMPT_FINAL, false},
        {CURLE_OK, 101, FW__ATTEMPT_FINAL, true},
        {CURLE_COULDNT_CONNECT, 0, FW__ATTEMPT_RETRY, true},
        {CURLE_COULDNT_RESOLVE_HOST, 0, FW__ATTEMPT_RETRY, true},
        {CURLE_OPERATION_TIMEDOUT, 0, FW__ATTEMPT_RETRY, true},
        {CURLE_SEND_ERROR, 0, FW__ATTEMPT_RETRY, true},
        {CURLE_RECV_ERROR, 0, FW__ATTEMPT_RETRY, true},
        {CURLE_GOT_NOTHING, 0, FW__ATTEMPT_RETRY, true},
        {CURLE_PARTIAL_FILE, 0, FW__ATTEMPT_RETRY, true},
        {CURLE_HTTP2, 0, FW__ATTEMPT_RETRY, true},
        {CURLE_HTTP2_STREAM, 0, FW__ATTEMPT_RETRY, true},
        {CURLE_URL_MALFORMAT, 0, FW__ATTEMPT_FINAL, true},
        {CURLE_UNSUPPORTED_PROTOCOL, 0, FW__ATTEMPT_FINAL, true},
        {CURLE_OUT_OF_MEMORY, 0, FW__ATTEMPT_FINAL, true},
        {CURLE_WRITE_ERROR, 0, FW__ATTEMPT_FINAL, true},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        fw__attempt_class got = fw__classify(rows[i].curl, rows[i].status);
        if (got != rows[i].want)
            fail_msg("curl=%d status=%ld: got %s, want %s", rows[i].curl, rows[i].status,
                     fw__attempt_class_name(got), fw__attempt_class_name(rows[i].want));
        assert_int_equal(fw__attempt_is_failure(rows[i].curl, rows[i].status), rows[i].failure);
    }
}

static void test_item_error_table(void **state)
{
    (void)state;
    static const char *const final_codes[] = {"corrupt",         "unsupported", "too_large",
                                              "too_many_pixels", "empty_input", "invalid_argument",
                                              "parse_error"};
    static const char *const worker_codes[] = {"inference_error",
                                               "unavailable",
                                               "busy",
                                               "timeout",
                                               "internal_error",
                                               "out_of_memory",
                                               "provider_error",
                                               "model_error",
                                               "io_error",
                                               "something_new",
                                               ""};
    for (size_t i = 0; i < sizeof final_codes / sizeof final_codes[0]; i++)
        assert_true(fw__item_error_is_final(final_codes[i]));
    for (size_t i = 0; i < sizeof worker_codes / sizeof worker_codes[0]; i++)
        assert_false(fw__item_error_is_final(worker_codes[i]));
    assert_false(fw__item_error_is_final(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_splitmix64_reference),
        cmocka_unit_test(test_backoff_sequence_seed_42),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_classification_table),
        cmocka_unit_test(test_item_error_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
