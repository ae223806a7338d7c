/* systemd service notifications (sd_notify), no-ops outside systemd.
 *
 * Each call returns > 0 when a notification was sent, 0 when there is nothing to talk to
 * (no $NOTIFY_SOCKET: not started by systemd with Type=notify), and a negative errno value
 * when sending failed. Callers normally ignore the result. The environment is left intact,
 * so later calls keep working. Under --supervise the child sends these, so the unit needs
 * NotifyAccess=all. */
#ifndef FW_SERVER_SDNOTIFY_H
#define FW_SERVER_SDNOTIFY_H

#include <stdint.h>

/* "READY=1": startup finished (models loaded, listening). */
int fw_sd_ready(void);

/* "STOPPING=1": shutdown began (draining). */
int fw_sd_stopping(void);

/* "STATUS=<text>": a one-line status shown by systemctl status. Newlines become spaces. */
int fw_sd_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The watchdog interval in microseconds when systemd expects keep-alive pings from this
 * process (WatchdogSec= set and meant for our pid), else 0. Ping at half of it. */
uint64_t fw_sd_watchdog_interval_us(void);

/* "WATCHDOG=1": keep-alive ping. */
int fw_sd_watchdog_ping(void);

#endif
