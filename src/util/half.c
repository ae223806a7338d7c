#include "util/half.h"

#include <string.h>

static uint32_t f32_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static float bits_f32(uint32_t x)
{
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

uint16_t fw_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) { /* inf or NaN */
        if (x == 0x7f800000u)
            return (uint16_t)(sign | 0x7c00u);
        return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x3ffu));
    }
    if (x >= 0x477ff000u) /* >= 65520: rounds (ties to even) past the largest half */
        return (uint16_t)(sign | 0x7c00u);
    if (x >= 0x38800000u) { /* >= 2^-14: a normal half */
        uint32_t h = ((x >> 23) - 112u) << 10 | ((x >> 13) & 0x3ffu);
        uint32_t rem = x & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
            h++; /* a carry into the exponent is the correct next binade */
        return (uint16_t)(sign | h);
    }
    /* Subnormal half: the result counts units of 2^-24. Below 2^-25 everything rounds to 0
     * (2^-25 itself ties to the even 0). */
    uint32_t e = x >> 23;
    if (e < 102u)
        return sign;
    uint32_t m = (x & 0x7fffffu) | 0x800000u; /* value = m * 2^(e - 150) */
    uint32_t shift = 126u - e;                /* 14 .. 24 */
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u)))
        q++; /* q may reach 0x400, which is the smallest normal: still correct */
    return (uint16_t)(sign | q);
}

float fw_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0x1fu)
        return bits_f32(sign | 0x7f800000u | (m << 13));
    if (e != 0)
        return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
    if (m == 0)
        return bits_f32(sign);
    e = 113u;
    while (!(m & 0x400u)) {
        m <<= 1;
        e--;
    }
    return bits_f32(sign | (e << 23) | ((m & 0x3ffu) << 13));
}

void fw_f32_to_f16_le(const float *in, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t h = fw_f32_to_f16(in[i]);
        out[2 * i] = (uint8_t)(h & 0xffu);
        out[2 * i + 1] = (uint8_t)(h >> 8);
    }
}
