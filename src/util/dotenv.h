/* .env files: KEY=VALUE lines read as a fallback configuration source.
 *
 * Syntax, one entry per line (LF or CRLF):
 *   # comment                   blank lines and lines starting with # are skipped
 *   KEY=value                   unquoted: surrounding blanks trimmed, a " #..." tail removed
 *   export KEY=value            an "export " prefix is accepted and ignored
 *   KEY='literal $ \ # text'    single quotes: taken verbatim
 *   KEY="a\nb \"q\" \\"        double quotes: \n \r \t \" \\ \$ escapes; others kept as is
 * Keys are [A-Za-z_][A-Za-z0-9_.]*; blanks may surround '='; after a closing quote only
 * blanks and a # comment may follow. Values never span lines. A key seen twice keeps its
 * last value. Sizes are bounded: FW_DOTENV_MAX_BYTES per file, FW_DOTENV_MAX_LINE per line. */
#ifndef FW_UTIL_DOTENV_H
#define FW_UTIL_DOTENV_H

#include <stddef.h>

#include "facework/error.h"

#define FW_DOTENV_MAX_BYTES (1024u * 1024u)
#define FW_DOTENV_MAX_LINE 16384u

/* Parsed entries; owns its keys and values. */
typedef struct fw_dotenv fw_dotenv;

/* Parses len bytes of .env text (need not be NUL-terminated). On FW_OK *out holds every
 * entry. When some lines are invalid it returns FW_ERR_PARSE, err names the first bad line
 * ("line 3: expected KEY=VALUE") and *out STILL holds the entries of all valid lines, so the
 * caller decides whether that is fatal; it must free *out either way. Other errors
 * (FW_ERR_TOO_LARGE over FW_DOTENV_MAX_BYTES, FW_ERR_NOMEM, FW_ERR_INVALID_ARGUMENT) leave
 * *out NULL. */
fw_err fw_dotenv_parse(const char *text, size_t len, fw_dotenv **out, fw_error *err);

/* Reads and parses the file at path, with fw_dotenv_parse's contract. A missing file is not
 * an error: *out is then an empty set. An unreadable file is FW_ERR_IO. */
fw_err fw_dotenv_load(const char *path, fw_dotenv **out, fw_error *err);

/* Value of key, or NULL when absent. Valid until fw_dotenv_free. env may be NULL. */
const char *fw_dotenv_get(const fw_dotenv *env, const char *key);

/* Number of distinct keys (0 for NULL), and the i-th entry in order of first appearance
 * (NULL when i is out of range). fw_dotenv_line is the 1-based line the value came from
 * (0 when out of range). */
size_t fw_dotenv_count(const fw_dotenv *env);
const char *fw_dotenv_key(const fw_dotenv *env, size_t i);
const char *fw_dotenv_value(const fw_dotenv *env, size_t i);
unsigned fw_dotenv_line(const fw_dotenv *env, size_t i);

/* Line number of the entry for key (0 when absent). */
unsigned fw_dotenv_line_of(const fw_dotenv *env, const char *key);

/* Number of invalid lines seen by the parse that produced env. */
size_t fw_dotenv_invalid_lines(const fw_dotenv *env);

void fw_dotenv_free(fw_dotenv *env);

#endif
