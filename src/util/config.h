/* Declarative configuration: one option table, four sources.
 *
 * Each fw_option names a long flag ("listen" -> --listen), an environment variable
 * ("FACEWORK_LISTEN", or a legacy name such as "GPU_WORKER_TIMEOUT") and optionally a second,
 * legacy variable, a type, a default written as text, a help line and the field it fills.
 * fw_config_parse fills every field from the first source that sets it:
 *
 *     flags  >  environment (env, then env_alias)  >  .env file (same names)  >  default
 *
 * Flags: --name=value and --name value (underscores in names may be written as dashes and
 * vice versa); booleans as --name, --no-name or --name=true|false|1|0|yes|no|on|off; an
 * optional one-letter short_name as -x (booleans) or -x value; "--" ends the flags. A flag
 * given twice keeps the last value, except FW_OPT_LIST, whose flags accumulate.
 * An empty environment or .env value counts as unset for every type but STRING and LIST.
 *
 * Value syntax per type (and the C type of *dest):
 *   FW_OPT_STRING    char *           any text; malloc'd copy (NULL when unset)
 *   FW_OPT_INT       int              decimal (or 0x hex) integer, within [min, max]
 *   FW_OPT_DOUBLE    double           finite number, within [min, max]
 *   FW_OPT_BOOL      bool             true|false|1|0|yes|no|on|off (any case)
 *   FW_OPT_DURATION  double (seconds) "30", "1.5", "30s", "500ms", "250us", "2m", "1h",
 *                                     "1m30s"; 0 to FW_DURATION_MAX_S; within [min, max]
 *   FW_OPT_SIZE      size_t (bytes)   "1048576", "20M" = "20MiB" = 20*2^20, "20MB" = 20*10^6,
 *                                     K/Ki/KiB, M, G, T likewise; "B" optional; within [min, max]
 *   FW_OPT_LIST      fw_str_list      comma-separated items (blanks trimmed, empty items
 *                                     dropped); repeated flags accumulate
 * [min, max] applies only when min < max.
 *
 * An invalid value from any source is an error naming the source and the option:
 *   GPU_WORKER_TIMEOUT='abc' (environment): not a duration
 *   --port='0' (flag): must be between 1 and 65535
 * Values of options flagged FW_OPT_SECRET are never printed (errors, help, describe). */
#ifndef FW_UTIL_CONFIG_H
#define FW_UTIL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "facework/error.h"

typedef enum fw_opt_type {
    FW_OPT_STRING = 0,
    FW_OPT_INT,
    FW_OPT_DOUBLE,
    FW_OPT_BOOL,
    FW_OPT_DURATION,
    FW_OPT_SIZE,
    FW_OPT_LIST,
} fw_opt_type;

/* Where an option's effective value came from. */
typedef enum fw_opt_source {
    FW_SRC_DEFAULT = 0,
    FW_SRC_DOTENV,
    FW_SRC_ENV,
    FW_SRC_FLAG,
} fw_opt_source;

/* Longest duration accepted (about 31 years). */
#define FW_DURATION_MAX_S 1e9

/* Option flags. */
#define FW_OPT_SECRET 0x1u /* value redacted wherever it would be printed */

/* Destination of FW_OPT_LIST. items[i] are malloc'd; freed by fw_config_free. */
typedef struct fw_str_list {
    char **items;
    size_t count;
} fw_str_list;

typedef struct fw_option {
    const char *name;      /* long flag without "--"; NULL: environment/.env only */
    const char *env;       /* environment variable; NULL: flag only */
    const char *env_alias; /* second (legacy) variable, read after env; may be NULL */
    fw_opt_type type;
    const char *def;     /* default, in the option's syntax; NULL: unset (STRING -> NULL) */
    const char *help;    /* one line */
    void *dest;          /* field to fill; C type per fw_opt_type */
    double min, max;     /* range for INT, DOUBLE, DURATION, SIZE when min < max */
    unsigned flags;      /* FW_OPT_SECRET */
    const char *metavar; /* placeholder in help ("ADDR"); NULL: one per type */
    char short_name;     /* -x; 0: none */
    /* Output, set by a successful fw_config_parse: */
    fw_opt_source source;
} fw_option;

/* Environment lookup; returns NULL when name is unset. */
typedef const char *(*fw_getenv_fn)(const char *name, void *user);

typedef struct fw_config_opts {
    const char *dotenv_path; /* .env file; NULL: none; a missing file is not an error */
    fw_getenv_fn getenv;     /* NULL: getenv(3) */
    void *getenv_user;
    bool dotenv_lenient; /* invalid .env lines are logged and skipped instead of failing */
    /* Positional arguments (not starting with '-', or after "--"): when positional is
     * non-NULL, up to positional_cap pointers into argv are stored there and their count in
     * *npositional (more than positional_cap is an error); when NULL they are an error. */
    const char **positional;
    size_t positional_cap;
    size_t *npositional;
} fw_config_opts;

/* Fills every option's dest from argv[1..argc-1], the process environment, the .env file at
 * dotenv_path (NULL: none) and the defaults, with the precedence above, and sets each
 * option's source. Any invalid value, unknown flag, missing flag value, positional argument
 * or invalid .env line is an error (FW_ERR_INVALID_ARGUMENT, FW_ERR_PARSE for the .env file,
 * FW_ERR_IO when it cannot be read) with a message naming it; then no dest is modified.
 * dest fields are overwritten without being freed: start from zeroed fields, and release
 * strings and lists with fw_config_free. "--help"/"-h" are accepted and ignored unless the
 * table defines them: call fw_config_wants_help first. */
fw_err fw_config_parse(fw_option *table, size_t n, int argc, char *const *argv,
                       const char *dotenv_path, fw_error *err);

/* fw_config_parse with an injectable environment, lenient .env and positional arguments.
 * opts may be NULL (same as fw_config_parse without a .env file). */
fw_err fw_config_parse_ex(fw_option *table, size_t n, int argc, char *const *argv,
                          const fw_config_opts *opts, fw_error *err);

/* Frees the STRING and LIST destinations of table and resets them to NULL / empty. */
void fw_config_free(fw_option *table, size_t n);

/* True when argv (before any "--") contains --help or -h. */
bool fw_config_wants_help(int argc, char *const *argv);

/* Prints one aligned line per option: flag (with metavar), environment variable(s),
 * default, help text (plus its range). Secret defaults are shown as <redacted>. */
void fw_config_help(const fw_option *table, size_t n, FILE *out);

/* "flag", "environment", ".env" or "default". */
const char *fw_config_source_name(fw_opt_source src);

/* Writes the effective value of opt (after a successful parse) into buf as text that parses
 * back to the same value ("30s", "20MiB", "a,b"; "<unset>" for a NULL string; "<redacted>"
 * for a secret that is set). Returns the length it needed (snprintf-like). */
size_t fw_config_format_value(const fw_option *opt, char *buf, size_t cap);

/* Writes the whole effective configuration as logfmt fields for a startup log line:
 *   listen=127.0.0.1:8765 timeout=60s api_key=<redacted> ... sources="timeout:environment"
 * Option keys are the flag names with '-' turned into '_' (the env name for flag-less
 * options); values with blanks, quotes or '=' are quoted; "sources" lists every option
 * not at its default. Returns the length it needed (snprintf-like); buf may be truncated. */
size_t fw_config_describe(const fw_option *table, size_t n, char *buf, size_t cap);

/* The value parsers, exposed for other modules and tests. Return false on invalid input. */
bool fw_parse_bool(const char *s, bool *out);
bool fw_parse_int(const char *s, long long *out);
bool fw_parse_double(const char *s, double *out);
bool fw_parse_duration(const char *s, double *seconds);
bool fw_parse_size(const char *s, size_t *bytes);

#endif
