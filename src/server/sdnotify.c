#include "server/sdnotify.h"

#include <stdarg.h>
#include <stdio.h>

#include <systemd/sd-daemon.h>

int fw_sd_ready(void)
{
    return sd_notify(0, "READY=1");
}

int fw_sd_stopping(void)
{
    return sd_notify(0, "STOPPING=1");
}

int fw_sd_status(const char *fmt, ...)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "STATUS=");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return sd_notify(0, msg);
}

uint64_t fw_sd_watchdog_interval_us(void)
{
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

int fw_sd_watchdog_ping(void)
{
    return sd_notify(0, "WATCHDOG=1");
}
