/* IEEE 754 binary16 ("half") conversions, bit-exact and independent of the compiler's
 * _Float16 support. Used for the base64-f16 embedding format (little-endian halves). */
#ifndef FW_UTIL_HALF_H
#define FW_UTIL_HALF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* float32 -> half bits, rounding to nearest, ties to even. Values whose magnitude rounds
 * past 65504 become +-inf; subnormal halves are produced exactly; +-0 and +-inf keep their
 * sign; NaN stays NaN (quiet, sign and the top payload bits kept). */
uint16_t fw_f32_to_f16(float f);

/* half bits -> float32 (exact: every half is representable). */
float fw_f16_to_f32(uint16_t h);

/* Converts n floats to little-endian halves: out must hold 2 * n bytes. */
void fw_f32_to_f16_le(const float *in, size_t n, uint8_t *out);

#ifdef __cplusplus
}
#endif
#endif
