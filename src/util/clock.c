#include "util/clock.h"

#include <errno.h>
#include <time.h>

uint64_t fw_now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0; /* cannot happen with CLOCK_MONOTONIC on a supported system */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t fw_now_ms(void)
{
    return fw_now_ns() / 1000000u;
}

uint64_t fw_clock_monotonic(void *user)
{
    (void)user;
    return fw_now_ns();
}

void fw_sleep_ns(uint64_t ns)
{
    struct timespec req = {.tv_sec = (time_t)(ns / 1000000000u),
                           .tv_nsec = (long)(ns % 1000000000u)};
    struct timespec rem;
    while (nanosleep(&req, &rem) != 0 && errno == EINTR)
        req = rem;
}
