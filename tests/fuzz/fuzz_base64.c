/* libFuzzer harness for util/base64 and util/half.
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DFW_FUZZ=ON && cmake --build build-fuzz --target
 * fuzz_base64; run: build-fuzz/fuzz_base64 tests/fuzz/corpus/base64.
 *
 * The input is decoded as base64 text (success or a clean error; a decoded result re-encodes
 * and decodes to the same bytes), encoded as binary and decoded back (must be identical), and
 * read as float32 values converted to half and back (must stay within half an ulp, keep
 * sign, infinity and NaN). Any broken invariant traps. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/base64.h"
#include "util/half.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_half(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i + 4 <= size && i < 64; i += 4) {
        float f;
        memcpy(&f, data + i, sizeof f);
        uint16_t h = fw_f32_to_f16(f);
        float back = fw_f16_to_f32(h);
        if (isnan(f)) {
            CHECK(isnan(back));
            continue;
        }
        CHECK(signbit(back) == signbit(f));
        float a = fabsf(f);
        if (a >= 65520.0f) {
            CHECK(isinf(back));
            continue;
        }
        /* half ulp of the result's binade (2^-25 absolute in the subnormal range) */
        int e;
        frexpf(a < 6.103515625e-05f ? 6.103515625e-05f : a, &e);
        float half_ulp = ldexpf(1.0f, e - 12);
        CHECK(fabsf(back - f) <= half_ulp);
        CHECK(fw_f32_to_f16(back) == h); /* halves are fixed points */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. decode arbitrary text */
    size_t cap = fw_base64_decoded_max(size);
    uint8_t *out = malloc(cap ? cap : 1);
    CHECK(out != NULL);
    size_t len = (size_t)-1;
    fw_error err;
    fw_err rc = fw_base64_decode((const char *)data, size, out, cap, &len, &err);
    if (rc == FW_OK) {
        CHECK(len <= cap);
        char *enc = malloc(fw_base64_encoded_len(len) + 1);
        CHECK(enc != NULL);
        fw_base64_encode(out, len, enc);
        CHECK(strlen(enc) == fw_base64_encoded_len(len));
        uint8_t *again = malloc(len ? len : 1);
        CHECK(again != NULL);
        size_t len2;
        CHECK(fw_base64_decode(enc, strlen(enc), again, len, &len2, NULL) == FW_OK);
        CHECK(len2 == len && memcmp(again, out, len) == 0);
        free(again);
        free(enc);
    } else {
        CHECK(rc == FW_ERR_CORRUPT); /* cap is always enough: never TOO_LARGE */
        CHECK(err.code == rc && err.message[0] != '\0');
    }
    free(out);

    /* 2. binary -> base64 -> binary */
    size_t elen = fw_base64_encoded_len(size);
    char *enc = malloc(elen + 1);
    CHECK(enc != NULL);
    fw_base64_encode(data, size, enc);
    CHECK(strlen(enc) == elen);
    uint8_t *back = NULL;
    CHECK(fw_base64_decode_alloc(enc, elen, size, &back, &len, NULL) == FW_OK);
    CHECK(len == size && (size == 0 || memcmp(back, data, size) == 0));
    free(back);
    if (size > 1) { /* one byte less room than needed: TOO_LARGE (max_out 0 means no limit) */
        back = (uint8_t *)enc;
        CHECK(fw_base64_decode_alloc(enc, elen, size - 1, &back, &len, NULL) == FW_ERR_TOO_LARGE);
        CHECK(back == NULL);
    }
    free(enc);

    /* 3. half floats */
    check_half(data, size);
    return 0;
}
