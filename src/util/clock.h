/* Monotonic time and sleeping.
 *
 * fw_now_ns()/fw_now_ms() read CLOCK_MONOTONIC: use them for durations, deadlines and
 * timeouts, never for wall-clock timestamps. Modules whose timing tests must control take a
 * fw_clock_fn (plus a user pointer) and fall back to fw_clock_monotonic when given NULL. */
#ifndef FW_UTIL_CLOCK_H
#define FW_UTIL_CLOCK_H

#include <stdint.h>

/* Nanoseconds / milliseconds since an arbitrary fixed point (monotonic, never jumps). */
uint64_t fw_now_ns(void);
uint64_t fw_now_ms(void);

/* An injectable clock: returns monotonic nanoseconds. */
typedef uint64_t (*fw_clock_fn)(void *user);

/* The real clock in fw_clock_fn form (ignores user). */
uint64_t fw_clock_monotonic(void *user);

/* Sleeps for at least ns nanoseconds (resumes after signal interruptions). */
void fw_sleep_ns(uint64_t ns);

#endif
