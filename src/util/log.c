#include "util/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = -1;
static atomic_int log_format = FW_LOG_LOGFMT;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int fw_log_level_parse(const char *s)
{
    if (!s)
        return -1;
    for (int i = 0; i <= FW_LOG_OFF; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return FW_LOG_WARN;
    return -1;
}

fw_log_level fw_log_get_level(void)
{
    int lvl = atomic_load(&min_level);
    if (lvl < 0) {
        lvl = fw_log_level_parse(getenv("FACEWORK_LOG_LEVEL"));
        if (lvl < 0)
            lvl = FW_LOG_INFO;
        atomic_store(&min_level, lvl);
    }
    return (fw_log_level)lvl;
}

void fw_log_set_level(fw_log_level level)
{
    atomic_store(&min_level, (int)level);
}

void fw_log_set_format(fw_log_format format)
{
    atomic_store(&log_format, (int)format);
}

/* Appends s to buf as a JSON string body (escapes quotes, backslashes and controls). */
static size_t json_escape(char *buf, size_t cap, size_t len, const char *s)
{
    for (; *s && len + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)c;
        } else if (c < 0x20) {
            len += (size_t)snprintf(buf + len, cap - len, "\\u%04x", c);
        } else {
            buf[len++] = (char)c;
        }
    }
    return len;
}

void fw_log(fw_log_level level, const char *module, const char *msg, const char *fields_fmt, ...)
{
    if (level < fw_log_get_level() || level >= FW_LOG_OFF)
        return;
    char fields[1024] = "";
    if (fields_fmt && *fields_fmt) {
        va_list ap;
        va_start(ap, fields_fmt);
        vsnprintf(fields, sizeof fields, fields_fmt, ap);
        va_end(ap);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[80];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ts.tv_nsec / 1000000) % 1000);

    char line[1600];
    size_t n;
    if (atomic_load(&log_format) == FW_LOG_JSON) {
        n = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":\"", when,
                             level_names[level]);
        n = json_escape(line, sizeof line, n, module ? module : "");
        n += (size_t)snprintf(line + n, sizeof line - n, "\",\"msg\":\"");
        n = json_escape(line, sizeof line, n, msg ? msg : "");
        if (fields[0]) {
            n += (size_t)snprintf(line + n, sizeof line - n, "\",\"fields\":\"");
            n = json_escape(line, sizeof line, n, fields);
        }
        n += (size_t)snprintf(line + n, sizeof line - n, "\"}\n");
    } else {
        n = (size_t)snprintf(line, sizeof line, "ts=%s level=%s mod=%s msg=%s%s%s\n", when,
                             level_names[level], module ? module : "-", msg ? msg : "",
                             fields[0] ? " " : "", fields);
    }
    if (n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w; /* logging must not fail the caller */
}
