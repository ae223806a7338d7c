#include "client/backoff.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#define RETRY_AFTER_CAP_S 86400.0

void fw__rng_seed(fw__rng *r, uint64_t seed)
{
    r->state = seed;
}

uint64_t fw__rng_next(fw__rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t fw__rng_below(fw__rng *r, uint64_t bound)
{
    uint64_t x = fw__rng_next(r);
    return bound ? x % bound : 0;
}

uint64_t fw__backoff_ns(fw__rng *r, uint64_t base_ns, uint64_t max_ns, unsigned retry)
{
    uint64_t ceiling = base_ns;
    for (unsigned i = 0; i < retry && ceiling < max_ns; i++)
        ceiling = ceiling > UINT64_MAX / 2 ? UINT64_MAX : ceiling * 2;
    if (ceiling > max_ns)
        ceiling = max_ns;
    uint64_t x = fw__rng_next(r);
    return ceiling == UINT64_MAX ? x : x % (ceiling + 1);
}

/* ---- Retry-After ---------------------------------------------------------------------- */

static int month_index(const char *m)
{
    static const char *const names[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (int i = 0; i < 12; i++)
        if (strcmp(m, names[i]) == 0)
            return i;
    return -1;
}

static bool day_name_ok(const char *d, bool long_form)
{
    static const char *const shorts[7] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const longs[7] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                         "Friday", "Saturday", "Sunday"};
    for (int i = 0; i < 7; i++)
        if (strcmp(d, long_form ? longs[i] : shorts[i]) == 0)
            return true;
    return false;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1..12). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool to_unix(int year, int mon0, int day, int hh, int mm, int ss, int64_t *out)
{
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1900 || year > 9999 || mon0 < 0 || mon0 > 11 || day < 1 || day > mdays[mon0] ||
        hh < 0 || hh > 23 || mm < 0 || mm > 59 || ss < 0 || ss > 60)
        return false;
    *out = days_from_civil(year, mon0 + 1, day) * 86400 + hh * 3600 + mm * 60 + ss;
    return true;
}

static bool parse_http_date(const char *s, int64_t *out)
{
    char dn[16], mn[8];
    int day, year, hh, mm, ss, end = -1;
    /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    if (sscanf(s, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", dn, &day, mn, &year, &hh, &mm,
               &ss, &end) == 7 &&
        end >= 0 && s[end] == '\0' && day_name_ok(dn, false))
        return to_unix(year, month_index(mn), day, hh, mm, ss, out);
    end = -1;
    /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
    if (sscanf(s, "%9[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d GMT%n", dn, &day, mn, &year, &hh, &mm,
               &ss, &end) == 7 &&
        end >= 0 && s[end] == '\0' && day_name_ok(dn, true))
        return to_unix(year < 70 ? 2000 + year : 1900 + year, month_index(mn), day, hh, mm, ss,
                       out);
    end = -1;
    /* asctime: Sun Nov  6 08:49:37 1994 */
    if (sscanf(s, "%3[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n", dn, mn, &day, &hh, &mm, &ss, &year,
               &end) == 7 &&
        end >= 0 && s[end] == '\0' && day_name_ok(dn, false))
        return to_unix(year, month_index(mn), day, hh, mm, ss, out);
    return false;
}

bool fw__retry_after_parse(const char *value, int64_t now_unix, double *seconds)
{
    if (!value)
        return false;
    while (*value == ' ' || *value == '\t')
        value++;
    char buf[64];
    size_t n = strlen(value);
    while (n && (value[n - 1] == ' ' || value[n - 1] == '\t' || value[n - 1] == '\r' ||
                 value[n - 1] == '\n'))
        n--;
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, value, n);
    buf[n] = '\0';
    if (isdigit((unsigned char)buf[0])) {
        double v = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)buf[i]))
                return false;
            if (v < RETRY_AFTER_CAP_S)
                v = v * 10 + (buf[i] - '0');
        }
        *seconds = v > RETRY_AFTER_CAP_S ? RETRY_AFTER_CAP_S : v;
        return true;
    }
    int64_t t;
    if (!parse_http_date(buf, &t))
        return false;
    double d = (double)(t - now_unix);
    *seconds = d < 0 ? 0 : d > RETRY_AFTER_CAP_S ? RETRY_AFTER_CAP_S : d;
    return true;
}

/* ---- classification ------------------------------------------------------------------- */

static bool transport_retryable(int code)
{
    switch ((CURLcode)code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_SSL_CONNECT_ERROR:
        return true;
    default:
        return false;
    }
}

fw__attempt_class fw__classify(int curl_code, long http_status)
{
    if (curl_code != CURLE_OK)
        return transport_retryable(curl_code) ? FW__ATTEMPT_RETRY : FW__ATTEMPT_FINAL;
    if (http_status >= 200 && http_status < 300)
        return FW__ATTEMPT_OK;
    if (http_status == 429 || http_status == 502 || http_status == 503 || http_status == 504)
        return FW__ATTEMPT_RETRY;
    return FW__ATTEMPT_FINAL;
}

bool fw__attempt_is_failure(int curl_code, long http_status)
{
    if (curl_code != CURLE_OK)
        return true;
    return http_status >= 500 || http_status == 429 || http_status < 200;
}

bool fw__item_error_is_final(const char *code)
{
    static const char *const final_codes[] = {"corrupt",         "unsupported",  "too_large",
                                              "too_many_pixels", "empty_input",  "invalid_argument",
                                              "parse_error",     "unusable_face"};
    if (!code)
        return false;
    for (size_t i = 0; i < sizeof final_codes / sizeof final_codes[0]; i++)
        if (strcmp(code, final_codes[i]) == 0)
            return true;
    return false;
}

const char *fw__attempt_class_name(fw__attempt_class c)
{
    switch (c) {
    case FW__ATTEMPT_OK:
        return "ok";
    case FW__ATTEMPT_RETRY:
        return "retry";
    case FW__ATTEMPT_FINAL:
        return "final";
    }
    return "unknown";
}
