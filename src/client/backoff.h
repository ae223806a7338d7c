/* Internal: the client's retry policy. A seedable RNG (splitmix64), exponential backoff with
 * full jitter, Retry-After parsing, and the table of what is safe to retry.
 * Pure functions (the RNG state is the caller's); no clock is read here. */
#ifndef FW_CLIENT_BACKOFF_H
#define FW_CLIENT_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

/* splitmix64: state advances by the golden gamma; every seed (0 included) is valid. */
typedef struct fw__rng {
    uint64_t state;
} fw__rng;

void fw__rng_seed(fw__rng *r, uint64_t seed);

/* Next 64 random bits. */
uint64_t fw__rng_next(fw__rng *r);

/* Uniform integer in [0, bound) (bound 0 gives 0); modulo bias below 2^-40 for our bounds. */
uint64_t fw__rng_below(fw__rng *r, uint64_t bound);

/* Full-jitter delay before retry number `retry` (0 = the first retry):
 * uniform in [0, min(max_ns, base_ns * 2^retry)] nanoseconds, i.e.
 * fw__rng_next(r) % (ceiling + 1). Draws exactly one number from r. */
uint64_t fw__backoff_ns(fw__rng *r, uint64_t base_ns, uint64_t max_ns, unsigned retry);

/* Parses a Retry-After header value: delta-seconds ("120") or an HTTP-date (IMF-fixdate,
 * RFC 850 or asctime form), relative to now_unix (seconds since the epoch). A date in the
 * past gives 0. Surrounding blanks are ignored. Returns false for anything else (then
 * *seconds is untouched). Delays are capped at 1 day. */
bool fw__retry_after_parse(const char *value, int64_t now_unix, double *seconds);

/* What to do after one attempt. */
typedef enum fw__attempt_class {
    FW__ATTEMPT_OK = 0, /* 2xx: use the response */
    FW__ATTEMPT_RETRY,  /* safe to retry: connect failure, timeout, reset, 429, 502-504 */
    FW__ATTEMPT_FINAL,  /* never retried on a worker: other 4xx, 500, 501, 505+, local errors */
} fw__attempt_class;

/* Classifies an attempt from its libcurl result code (a CURLcode as int) and, when that is
 * CURLE_OK, its HTTP status. */
fw__attempt_class fw__classify(int curl_code, long http_status);

/* True when the attempt counts as a failure for the worker's circuit breaker: a transport
 * error, a 5xx or a 429. Other 4xx mean the worker is alive (our request was refused). */
bool fw__attempt_is_failure(int curl_code, long http_status);

/* True for the per-item error codes (fw_err_name strings) that are final answers about the
 * input (corrupt, unsupported, too_large, too_many_pixels, empty_input, invalid_argument,
 * parse_error); false for the worker's faults and for unknown codes. */
bool fw__item_error_is_final(const char *code);

const char *fw__attempt_class_name(fw__attempt_class c);

#endif
