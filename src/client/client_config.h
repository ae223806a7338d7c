/* Internal: client configuration resolution (defaults, validation, URL list). */
#ifndef FW_CLIENT_CLIENT_CONFIG_H
#define FW_CLIENT_CLIENT_CONFIG_H

#include <stddef.h>

#include "facework/client.h"

#define FW__DEFAULT_URL "http://127.0.0.1:8765"

/* Splits a comma-separated URL list (blanks trimmed, empty items dropped) into base URLs
 * without a trailing '/'. Each must be http:// or https:// with a host, at most
 * FW_CLIENT_URL_MAX - 1 bytes, no query, fragment, blank or control character; at most
 * FW_CLIENT_MAX_WORKERS of them, no duplicates, at least one. Errors name `what` (the field
 * or variable) and the offending item. */
fw_err fw__split_urls(const char *list, const char *what, char urls[][FW_CLIENT_URL_MAX], size_t *n,
                      fw_error *err);

/* Copies in to out with every unset field at its default, and validates every field
 * (FW_ERR_INVALID_ARGUMENT naming the field). */
fw_err fw__client_config_resolve(const fw_client_config *in, fw_client_config *out, fw_error *err);

/* Parses a GPU_WORKER_HTTP value: auto | 1.1 | http/1.1 | h2c | h2c-upgrade | h2 |
 * h2-prior-knowledge | prior-knowledge (any case). */
bool fw__parse_http_mode(const char *s, fw_client_http *out);

#endif
