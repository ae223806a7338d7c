/* libFuzzer harness for configuration parsing (util/config).
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DFW_FUZZ=ON && cmake --build build-fuzz --target
 * fuzz_config; run: build-fuzz/fuzz_config tests/fuzz/corpus/config.
 *
 * Input: NUL-separated strings. The first byte picks options (bit 0: allow positional
 * arguments). Strings up to the first empty one are argv[1..]; the strings after it are
 * NAME=VALUE pairs served by a fake getenv. Invariants (any broken one traps): a failure sets
 * a message and leaves every destination untouched; a success gives values inside their
 * ranges, whose formatted text parses back to the same value, and describe/help/free work. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/config.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define MAX_ARGS 64
#define MAX_ENV 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fenv {
    char *names[MAX_ENV];
    char *values[MAX_ENV];
    int n;
} fenv;

static const char *fake_getenv(const char *name, void *user)
{
    const fenv *e = user;
    for (int i = e->n - 1; i >= 0; i--)
        if (strcmp(e->names[i], name) == 0)
            return e->values[i];
    return NULL;
}

typedef struct cfg {
    char *s;
    int i;
    double d;
    bool b;
    double dur;
    size_t z;
    fw_str_list l;
    char *secret;
    int j;
} cfg;

#define NOPT 9

static void make_table(fw_option *t, cfg *c)
{
    const fw_option tmpl[NOPT] = {
        {.name = "listen",
         .env = "FW_LISTEN",
         .type = FW_OPT_STRING,
         .def = "127.0.0.1",
         .dest = &c->s},
        {.name = "port",
         .env = "FW_PORT",
         .type = FW_OPT_INT,
         .def = "8765",
         .dest = &c->i,
         .min = 1,
         .max = 65535,
         .short_name = 'p'},
        {.name = "score", .env = "FW_SCORE", .type = FW_OPT_DOUBLE, .def = "0.5", .dest = &c->d},
        {.name = "gpu",
         .env = "FW_GPU",
         .env_alias = "GPU_WORKER_ENABLED",
         .type = FW_OPT_BOOL,
         .def = "true",
         .dest = &c->b,
         .short_name = 'g'},
        {.name = "timeout",
         .env = "FW_TIMEOUT",
         .env_alias = "GPU_WORKER_TIMEOUT",
         .type = FW_OPT_DURATION,
         .def = "60",
         .dest = &c->dur},
        {.name = "max-body",
         .env = "FW_MAX_BODY",
         .type = FW_OPT_SIZE,
         .def = "20MiB",
         .dest = &c->z,
         .min = 0,
         .max = 1e12},
        {.name = "url",
         .env = "GPU_WORKER_URL",
         .type = FW_OPT_LIST,
         .def = "http://a,http://b",
         .dest = &c->l},
        {.name = "api-key",
         .env = "FW_KEY",
         .type = FW_OPT_STRING,
         .dest = &c->secret,
         .flags = FW_OPT_SECRET},
        {.env = "FW_RETRIES", .type = FW_OPT_INT, .def = "5", .dest = &c->j, .min = -3, .max = 100},
    };
    memcpy(t, tmpl, sizeof tmpl);
}

static void check_roundtrip(const fw_option *o)
{
    char buf[512];
    size_t n = fw_config_format_value(o, buf, sizeof buf);
    if (n >= sizeof buf)
        return;
    switch (o->type) {
    case FW_OPT_INT: {
        long long v;
        CHECK(fw_parse_int(buf, &v) && v == *(int *)o->dest);
        break;
    }
    case FW_OPT_DOUBLE: {
        double v;
        CHECK(fw_parse_double(buf, &v) && v == *(double *)o->dest);
        break;
    }
    case FW_OPT_BOOL: {
        bool v;
        CHECK(fw_parse_bool(buf, &v) && v == *(bool *)o->dest);
        break;
    }
    case FW_OPT_DURATION: {
        double v, want = *(double *)o->dest;
        CHECK(fw_parse_duration(buf, &v));
        CHECK(fabs(v - want) <= 1e-9 * (want > 1 ? want : 1));
        break;
    }
    case FW_OPT_SIZE: {
        size_t v;
        CHECK(fw_parse_size(buf, &v) && v == *(size_t *)o->dest);
        break;
    }
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    unsigned mode = data[0];
    char *copy = malloc(size); /* data[1..] plus a terminating NUL */
    CHECK(copy != NULL);
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';

    char *argv[MAX_ARGS + 2] = {"facework"};
    int argc = 1;
    fenv env = {.n = 0};
    bool in_env = false;
    char *const end = copy + size - 1; /* the terminating NUL */
    for (char *p = copy, *next; p <= end; p = next) {
        size_t len = strlen(p);
        next = p + len + 1;
        if (!in_env && len == 0) {
            in_env = true;
        } else if (!in_env) {
            if (argc <= MAX_ARGS)
                argv[argc++] = p;
        } else if (env.n < MAX_ENV) {
            char *eq = strchr(p, '=');
            if (eq) {
                *eq = '\0';
                env.names[env.n] = p;
                env.values[env.n] = eq + 1;
                env.n++;
            }
        }
    }
    argv[argc] = NULL;

    cfg c;
    memset(&c, 0, sizeof c);
    fw_option t[NOPT];
    make_table(t, &c);
    const char *pos[4];
    size_t npos = 0;
    fw_config_opts o = {.getenv = fake_getenv, .getenv_user = &env};
    if (mode & 1) {
        o.positional = pos;
        o.positional_cap = 4;
        o.npositional = &npos;
    }
    fw_error err;
    fw_err rc = fw_config_parse_ex(t, NOPT, argc, argv, &o, &err);
    if (rc != FW_OK) {
        CHECK(err.code == rc && err.message[0] != '\0');
        cfg zero;
        memset(&zero, 0, sizeof zero);
        CHECK(memcmp(&c, &zero, sizeof c) == 0);
        free(copy);
        return 0;
    }
    CHECK(npos <= 4);
    CHECK(c.i >= 1 && c.i <= 65535);
    CHECK(c.j >= -3 && c.j <= 100);
    CHECK(c.z <= (size_t)1e12);
    CHECK(isfinite(c.d) && isfinite(c.dur) && c.dur >= 0);
    CHECK(c.s != NULL);
    for (size_t i = 0; i < c.l.count; i++)
        CHECK(c.l.items[i][0] != '\0' && !strchr(c.l.items[i], ','));
    for (int i = 0; i < NOPT; i++) {
        CHECK(t[i].source <= FW_SRC_FLAG);
        check_roundtrip(&t[i]);
    }
    size_t need = fw_config_describe(t, NOPT, NULL, 0);
    char *d = malloc(need + 1);
    CHECK(d != NULL);
    CHECK(fw_config_describe(t, NOPT, d, need + 1) == need && strlen(d) == need);
    if (c.secret && c.secret[0])
        CHECK(strstr(d, "api_key=<redacted>") != NULL);
    free(d);
    static FILE *devnull;
    if (!devnull)
        devnull = fopen("/dev/null", "w");
    if (devnull)
        fw_config_help(t, NOPT, devnull);
    fw_config_free(t, NOPT);
    CHECK(c.s == NULL && c.secret == NULL && c.l.count == 0 && c.l.items == NULL);
    free(copy);
    return 0;
}
