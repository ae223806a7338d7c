/* Logging: one line per event, logfmt (default) or JSON, to stderr.
 *
 * fw_log(FW_LOG_INFO, "worker", "listening", "addr=%s", addr) prints
 *   ts=2026-11-26T17:00:00.123Z level=info mod=worker msg=listening addr=127.0.0.1:8765
 * The caller's fields are appended verbatim (logfmt) or as a "fields" string (JSON).
 * Never pass image bytes or secrets. Thread-safe: each line is written with one write(2). */
#ifndef FW_UTIL_LOG_H
#define FW_UTIL_LOG_H

typedef enum fw_log_level {
    FW_LOG_DEBUG = 0,
    FW_LOG_INFO,
    FW_LOG_WARN,
    FW_LOG_ERROR,
    FW_LOG_OFF
} fw_log_level;

typedef enum fw_log_format { FW_LOG_LOGFMT = 0, FW_LOG_JSON } fw_log_format;

/* Sets the minimum level printed (default INFO, or FACEWORK_LOG_LEVEL) and the format. */
void fw_log_set_level(fw_log_level level);
void fw_log_set_format(fw_log_format format);
fw_log_level fw_log_get_level(void);

/* Parses "debug|info|warn|error|off"; returns -1 when unknown. */
int fw_log_level_parse(const char *s);

void fw_log(fw_log_level level, const char *module, const char *msg, const char *fields_fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define FW_DEBUG(mod, msg, ...) fw_log(FW_LOG_DEBUG, mod, msg, __VA_ARGS__)
#define FW_INFO(mod, msg, ...) fw_log(FW_LOG_INFO, mod, msg, __VA_ARGS__)
#define FW_WARN(mod, msg, ...) fw_log(FW_LOG_WARN, mod, msg, __VA_ARGS__)
#define FW_ERROR(mod, msg, ...) fw_log(FW_LOG_ERROR, mod, msg, __VA_ARGS__)

#endif
