/* Unit tests for declarative configuration (util/config): precedence flags > environment >
 * .env > defaults, flag syntax, value syntax per type, error messages naming the source,
 * secrets, --help and the effective-config line. The environment is a fake (injected getenv);
 * .env files are written to a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/config.h"
#include "util/log.h"

/* ---- fake environment ---- */

typedef struct fake_env {
    const char *kv[16][2];
} fake_env;

static const char *fake_getenv(const char *name, void *user)
{
    const fake_env *e = user;
    for (size_t i = 0; i < 16 && e->kv[i][0]; i++)
        if (strcmp(e->kv[i][0], name) == 0)
            return e->kv[i][1];
    return NULL;
}

/* ---- a worker-like table ---- */

typedef struct cfg {
    char *listen;
    int port;
    double min_score;
    bool gpu;
    double timeout;
    size_t max_body;
    fw_str_list urls;
    char *api_key;
    int retries;
} cfg;

enum { NOPT = 9 };

static void make_table(fw_option t[NOPT], cfg *c)
{
    const fw_option tmpl[NOPT] = {
        {.name = "listen",
         .env = "FACEWORK_LISTEN",
         .type = FW_OPT_STRING,
         .def = "127.0.0.1",
         .help = "Address to bind.",
         .dest = &c->listen,
         .metavar = "ADDR"},
        {.name = "port",
         .env = "FACEWORK_PORT",
         .type = FW_OPT_INT,
         .def = "8765",
         .help = "TCP port.",
         .dest = &c->port,
         .min = 1,
         .max = 65535,
         .short_name = 'p'},
        {.name = "min-score",
         .env = "FACEWORK_MIN_SCORE",
         .type = FW_OPT_DOUBLE,
         .def = "0.5",
         .help = "Detector threshold.",
         .dest = &c->min_score,
         .min = 0,
         .max = 1},
        {.name = "gpu",
         .env = "FACEWORK_GPU",
         .env_alias = "GPU_WORKER_ENABLED",
         .type = FW_OPT_BOOL,
         .def = "true",
         .help = "Use a GPU.",
         .dest = &c->gpu},
        {.name = "timeout",
         .env = "FACEWORK_TIMEOUT",
         .env_alias = "GPU_WORKER_TIMEOUT",
         .type = FW_OPT_DURATION,
         .def = "60",
         .help = "Request timeout.",
         .dest = &c->timeout,
         .min = 0.001,
         .max = 3600},
        {.name = "max-body",
         .env = "FACEWORK_MAX_BODY",
         .type = FW_OPT_SIZE,
         .def = "20MiB",
         .help = "Largest request body.",
         .dest = &c->max_body},
        {.name = "worker-url",
         .env = "GPU_WORKER_URL",
         .type = FW_OPT_LIST,
         .def = "http://127.0.0.1:8765",
         .help = "Workers.",
         .dest = &c->urls},
        {.name = "api-key",
         .env = "GPU_WORKER_API_KEY",
         .type = FW_OPT_STRING,
         .help = "API key.",
         .dest = &c->api_key,
         .flags = FW_OPT_SECRET},
        {.env = "GPU_WORKER_MAX_RETRIES",
         .type = FW_OPT_INT,
         .def = "5",
         .help = "Retries.",
         .dest = &c->retries,
         .min = 0,
         .max = 100},
    };
    memcpy(t, tmpl, sizeof tmpl);
}

typedef struct fixture {
    cfg c;
    fw_option t[NOPT];
    fake_env env;
    char dir[64];
    char dotenv[128];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    make_table(f->t, &f->c);
    snprintf(f->dir, sizeof f->dir, "/tmp/fw-config-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->dotenv, sizeof f->dotenv, "%s/.env", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fw_config_free(f->t, NOPT);
    unlink(f->dotenv);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_dotenv(fixture *f, const char *text)
{
    FILE *fp = fopen(f->dotenv, "wb");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
}

static fw_err parse(fixture *f, int argc, char **argv, bool with_dotenv, fw_error *err)
{
    fw_config_opts o = {.getenv = fake_getenv,
                        .getenv_user = &f->env,
                        .dotenv_path = with_dotenv ? f->dotenv : NULL};
    return fw_config_parse_ex(f->t, NOPT, argc, argv, &o, err);
}

#define ARGV(...) ((char *[]){"facework", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"facework", __VA_ARGS__}) / sizeof(char *)))

static void test_defaults(void **state)
{
    fixture *f = *state;
    fw_error err;
    char *argv[] = {"facework", NULL};
    assert_int_equal(parse(f, 1, argv, false, &err), FW_OK);
    assert_string_equal(f->c.listen, "127.0.0.1");
    assert_int_equal(f->c.port, 8765);
    assert_true(f->c.min_score == 0.5);
    assert_true(f->c.gpu);
    assert_true(f->c.timeout == 60.0);
    assert_int_equal(f->c.max_body, 20u * 1024 * 1024);
    assert_int_equal(f->c.urls.count, 1);
    assert_string_equal(f->c.urls.items[0], "http://127.0.0.1:8765");
    assert_null(f->c.api_key);
    assert_int_equal(f->c.retries, 5);
    for (int i = 0; i < NOPT; i++)
        assert_int_equal(f->t[i].source, FW_SRC_DEFAULT);
}

static void test_precedence(void **state)
{
    fixture *f = *state;
    fw_error err;
    /* port: flag, env and .env -> flag; timeout: alias env and primary .env -> env;
     * min-score: .env only; gpu: primary env beats alias env; listen: env beats .env */
    f->env = (fake_env){{{"FACEWORK_PORT", "9001"},
                         {"GPU_WORKER_TIMEOUT", "30"},
                         {"FACEWORK_GPU", "false"},
                         {"GPU_WORKER_ENABLED", "true"},
                         {"FACEWORK_LISTEN", "0.0.0.0"}}};
    write_dotenv(f, "FACEWORK_PORT=9002\n"
                    "FACEWORK_TIMEOUT=10s\n"
                    "FACEWORK_MIN_SCORE=0.75\n"
                    "FACEWORK_LISTEN=10.0.0.1\n"
                    "GPU_WORKER_MAX_RETRIES=7\n");
    assert_int_equal(parse(f, ARGC("--port", "9000"), ARGV("--port", "9000"), true, &err), FW_OK);
    assert_int_equal(f->c.port, 9000);
    assert_int_equal(f->t[1].source, FW_SRC_FLAG);
    assert_true(f->c.timeout == 30.0);
    assert_int_equal(f->t[4].source, FW_SRC_ENV);
    assert_true(f->c.min_score == 0.75);
    assert_int_equal(f->t[2].source, FW_SRC_DOTENV);
    assert_false(f->c.gpu);
    assert_int_equal(f->t[3].source, FW_SRC_ENV);
    assert_string_equal(f->c.listen, "0.0.0.0");
    assert_int_equal(f->t[0].source, FW_SRC_ENV);
    assert_int_equal(f->c.retries, 7);
    assert_int_equal(f->t[8].source, FW_SRC_DOTENV);
    assert_int_equal(f->t[5].source, FW_SRC_DEFAULT);
}

static void test_flag_syntax(void **state)
{
    fixture *f = *state;
    fw_error err;
    char *argv[] = {"facework",
                    "--listen=::1",
                    "-p",
                    "1234",
                    "--min_score",
                    "0.25",
                    "--no-gpu",
                    "--timeout=500ms",
                    "--max-body",
                    "1.5K",
                    "--worker-url",
                    "http://a, http://b",
                    "--worker-url=http://c",
                    "--api-key",
                    "--not-a-flag-but-a-value",
                    NULL};
    int argc = (int)(sizeof argv / sizeof argv[0]) - 1;
    assert_int_equal(parse(f, argc, argv, false, &err), FW_OK);
    assert_string_equal(f->c.listen, "::1");
    assert_int_equal(f->c.port, 1234);
    assert_true(f->c.min_score == 0.25);
    assert_false(f->c.gpu);
    assert_true(f->c.timeout == 0.5);
    assert_int_equal(f->c.max_body, 1536);
    assert_int_equal(f->c.urls.count, 3);
    assert_string_equal(f->c.urls.items[0], "http://a");
    assert_string_equal(f->c.urls.items[1], "http://b");
    assert_string_equal(f->c.urls.items[2], "http://c");
    assert_string_equal(f->c.api_key, "--not-a-flag-but-a-value");
    for (int i = 0; i < 8; i++)
        assert_int_equal(f->t[i].source, FW_SRC_FLAG);
}

static void test_bool_forms(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *arg;
        bool want;
    } cases[] = {
        {"--gpu", true},     {"--no-gpu", false},  {"--gpu=false", false}, {"--gpu=0", false},
        {"--gpu=no", false}, {"--gpu=OFF", false}, {"--gpu=true", true},   {"--gpu=1", true},
        {"--gpu=Yes", true}, {"--gpu=on", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fw_config_free(f->t, NOPT);
        f->env = (fake_env){{{"FACEWORK_GPU", cases[i].want ? "false" : "true"}}};
        char *argv[] = {"facework", (char *)cases[i].arg, NULL};
        fw_error err;
        assert_int_equal(parse(f, 2, argv, false, &err), FW_OK);
        if (f->c.gpu != cases[i].want)
            fail_msg("%s gave %d", cases[i].arg, f->c.gpu);
    }
    /* environment forms */
    const char *env_true[] = {"1", "TRUE", "yes", "on"}, *env_false[] = {"0", "False", "NO", "off"};
    for (int i = 0; i < 4; i++) {
        fw_config_free(f->t, NOPT);
        f->env = (fake_env){{{"GPU_WORKER_ENABLED", env_false[i]}}};
        assert_int_equal(parse(f, 1, ARGV("x"), false, NULL), FW_OK);
        assert_false(f->c.gpu);
        fw_config_free(f->t, NOPT);
        f->env = (fake_env){{{"GPU_WORKER_ENABLED", env_true[i]}, {"FACEWORK_MIN_SCORE", ""}}};
        assert_int_equal(parse(f, 1, ARGV("x"), false, NULL), FW_OK);
        assert_true(f->c.gpu);
    }
}

static void test_last_flag_wins(void **state)
{
    fixture *f = *state;
    assert_int_equal(parse(f, ARGC("--port=1", "--port", "2", "-p", "3", "--gpu", "--no-gpu"),
                           ARGV("--port=1", "--port", "2", "-p", "3", "--gpu", "--no-gpu"), false,
                           NULL),
                     FW_OK);
    assert_int_equal(f->c.port, 3);
    assert_false(f->c.gpu);
}

static void test_positional(void **state)
{
    fixture *f = *state;
    const char *pos[4];
    size_t npos = 99;
    fw_config_opts o = {.getenv = fake_getenv,
                        .getenv_user = &f->env,
                        .positional = pos,
                        .positional_cap = 4,
                        .npositional = &npos};
    char *argv[] = {"facework", "a.jpg", "--port", "80", "-", "--", "--port=1", NULL};
    assert_int_equal(fw_config_parse_ex(f->t, NOPT, 7, argv, &o, NULL), FW_OK);
    assert_int_equal(npos, 3);
    assert_string_equal(pos[0], "a.jpg");
    assert_string_equal(pos[1], "-");
    assert_string_equal(pos[2], "--port=1");
    assert_int_equal(f->c.port, 80);
    fw_config_free(f->t, NOPT);
    o.positional_cap = 2;
    fw_error err;
    assert_int_equal(fw_config_parse_ex(f->t, NOPT, 7, argv, &o, &err), FW_ERR_INVALID_ARGUMENT);
    assert_string_equal(err.message, "too many arguments ('--port=1')");
}

static void expect_error(fixture *f, int argc, char **argv, bool dotenv, fw_err code,
                         const char *message)
{
    fw_error err;
    memset(&f->c, 0, sizeof f->c);
    fw_err rc = parse(f, argc, argv, dotenv, &err);
    if (rc != code || strcmp(err.message, message) != 0)
        fail_msg("got %d '%s', want %d '%s'", rc, rc ? err.message : "", code, message);
    /* nothing was written */
    assert_null(f->c.listen);
    assert_int_equal(f->c.port, 0);
    assert_int_equal(f->c.urls.count, 0);
}

static void test_errors_name_source_and_option(void **state)
{
    fixture *f = *state;
    expect_error(f, ARGC("--nope"), ARGV("--nope"), false, FW_ERR_INVALID_ARGUMENT,
                 "unknown flag --nope");
    expect_error(f, ARGC("--nope=3"), ARGV("--nope=3"), false, FW_ERR_INVALID_ARGUMENT,
                 "unknown flag --nope");
    expect_error(f, ARGC("-x"), ARGV("-x"), false, FW_ERR_INVALID_ARGUMENT, "unknown flag -x");
    expect_error(f, ARGC("--no-port"), ARGV("--no-port"), false, FW_ERR_INVALID_ARGUMENT,
                 "unknown flag --no-port");
    expect_error(f, ARGC("--port"), ARGV("--port"), false, FW_ERR_INVALID_ARGUMENT,
                 "--port: missing value");
    expect_error(f, ARGC("stray"), ARGV("stray"), false, FW_ERR_INVALID_ARGUMENT,
                 "unexpected argument 'stray'");
    expect_error(f, ARGC("--port=0"), ARGV("--port=0"), false, FW_ERR_INVALID_ARGUMENT,
                 "--port='0' (flag): must be between 1 and 65535");
    expect_error(f, ARGC("--port", "80x"), ARGV("--port", "80x"), false, FW_ERR_INVALID_ARGUMENT,
                 "--port='80x' (flag): not an integer");
    expect_error(f, ARGC("--gpu=maybe"), ARGV("--gpu=maybe"), false, FW_ERR_INVALID_ARGUMENT,
                 "--gpu='maybe' (flag): not a boolean (true/false/1/0/yes/no/on/off)");
    expect_error(f, ARGC("--min-score=1.5"), ARGV("--min-score=1.5"), false,
                 FW_ERR_INVALID_ARGUMENT, "--min-score='1.5' (flag): must be between 0 and 1");
    expect_error(f, ARGC("--timeout=2h"), ARGV("--timeout=2h"), false, FW_ERR_INVALID_ARGUMENT,
                 "--timeout='2h' (flag): must be between 0.001s and 3600s");
    expect_error(f, ARGC("--max-body=lots"), ARGV("--max-body=lots"), false,
                 FW_ERR_INVALID_ARGUMENT, "--max-body='lots' (flag): not a size");

    f->env = (fake_env){{{"GPU_WORKER_TIMEOUT", "abc"}}};
    expect_error(f, 1, ARGV("x"), false, FW_ERR_INVALID_ARGUMENT,
                 "GPU_WORKER_TIMEOUT='abc' (environment): not a duration");
    /* a flag overrides the bad environment value, which is then never looked at */
    assert_int_equal(parse(f, ARGC("--timeout=1"), ARGV("--timeout=1"), false, NULL), FW_OK);
    fw_config_free(f->t, NOPT);

    f->env = (fake_env){{{"GPU_WORKER_MAX_RETRIES", "1000"}}};
    expect_error(f, 1, ARGV("x"), false, FW_ERR_INVALID_ARGUMENT,
                 "GPU_WORKER_MAX_RETRIES='1000' (environment): must be between 0 and 100");

    f->env = (fake_env){{{NULL, NULL}}};
    write_dotenv(f, "# settings\nFACEWORK_PORT=eighty\n");
    expect_error(f, 1, ARGV("x"), true, FW_ERR_INVALID_ARGUMENT,
                 "FACEWORK_PORT='eighty' (.env line 2): not an integer");
    /* an unparsable .env line is fatal unless lenient */
    write_dotenv(f, "FACEWORK_PORT=80\nthis is not an assignment\n");
    char want[256];
    snprintf(want, sizeof want, "%s: line 2: expected KEY=VALUE (no '=' after the key)", f->dotenv);
    expect_error(f, 1, ARGV("x"), true, FW_ERR_PARSE, want);
    fw_log_set_level(FW_LOG_ERROR); /* the lenient path warns */
    fw_config_opts o = {.getenv = fake_getenv,
                        .getenv_user = &f->env,
                        .dotenv_path = f->dotenv,
                        .dotenv_lenient = true};
    assert_int_equal(fw_config_parse_ex(f->t, NOPT, 1, ARGV("x"), &o, NULL), FW_OK);
    fw_log_set_level(FW_LOG_INFO);
    assert_int_equal(f->c.port, 80);
    assert_int_equal(f->t[1].source, FW_SRC_DOTENV);
}

static void test_long_and_control_values_in_errors(void **state)
{
    fixture *f = *state;
    char longv[200];
    memset(longv, '7', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    longv[0] = 'x';
    f->env = (fake_env){{{"FACEWORK_PORT", longv}}};
    fw_error err;
    assert_int_equal(parse(f, 1, ARGV("x"), false, &err), FW_ERR_INVALID_ARGUMENT);
    char want[128];
    snprintf(want, sizeof want, "FACEWORK_PORT='x%.47s...' (environment): not an integer",
             longv + 1);
    assert_string_equal(err.message, want);
    f->env = (fake_env){{{"FACEWORK_PORT", "8\n\x1b[0m"}}};
    assert_int_equal(parse(f, 1, ARGV("x"), false, &err), FW_ERR_INVALID_ARGUMENT);
    assert_string_equal(err.message, "FACEWORK_PORT='8??[0m' (environment): not an integer");
}

static void test_secret_never_printed(void **state)
{
    (void)state;
    int pin = 0;
    char *token = NULL;
    fw_option t[] = {
        {.name = "pin",
         .env = "PIN",
         .type = FW_OPT_INT,
         .dest = &pin,
         .min = 0,
         .max = 9999,
         .flags = FW_OPT_SECRET},
        {.name = "token",
         .env = "TOKEN",
         .type = FW_OPT_STRING,
         .def = "builtin-default",
         .dest = &token,
         .flags = FW_OPT_SECRET},
    };
    fake_env env = {{{"PIN", "12345"}}};
    fw_config_opts o = {.getenv = fake_getenv, .getenv_user = &env};
    fw_error err;
    assert_int_equal(fw_config_parse_ex(t, 2, 1, ARGV("x"), &o, &err), FW_ERR_INVALID_ARGUMENT);
    assert_string_equal(err.message, "PIN='<redacted>' (environment): must be between 0 and 9999");
    assert_null(strstr(err.message, "12345"));
    env = (fake_env){{{"PIN", "42"}, {"TOKEN", "hunter2"}}};
    assert_int_equal(fw_config_parse_ex(t, 2, 1, ARGV("x"), &o, &err), FW_OK);
    assert_int_equal(pin, 42);
    assert_string_equal(token, "hunter2");
    char buf[256];
    fw_config_describe(t, 2, buf, sizeof buf);
    assert_string_equal(buf, "pin=<redacted> token=<redacted> sources=\"pin:environment,"
                             "token:environment\"");
    char *help = NULL;
    size_t hlen = 0;
    FILE *fp = open_memstream(&help, &hlen);
    assert_non_null(fp);
    fw_config_help(t, 2, fp);
    assert_int_equal(fclose(fp), 0);
    assert_null(strstr(help, "builtin-default"));
    assert_non_null(strstr(help, "<redacted>"));
    free(help);
    fw_config_free(t, 2);
    assert_null(token);
}

static void test_empty_env_values(void **state)
{
    fixture *f = *state;
    /* empty counts as unset for numbers (the .env value applies) but is a value for strings
     * and lists */
    f->env = (fake_env){{{"FACEWORK_PORT", ""}, {"FACEWORK_LISTEN", ""}, {"GPU_WORKER_URL", ""}}};
    write_dotenv(f, "FACEWORK_PORT=9100\nFACEWORK_LISTEN=1.2.3.4\n");
    assert_int_equal(parse(f, 1, ARGV("x"), true, NULL), FW_OK);
    assert_int_equal(f->c.port, 9100);
    assert_int_equal(f->t[1].source, FW_SRC_DOTENV);
    assert_string_equal(f->c.listen, "");
    assert_int_equal(f->t[0].source, FW_SRC_ENV);
    assert_int_equal(f->c.urls.count, 0);
    assert_int_equal(f->t[6].source, FW_SRC_ENV);
}

static void test_missing_dotenv_is_fine(void **state)
{
    fixture *f = *state;
    fw_config_opts o = {
        .getenv = fake_getenv, .getenv_user = &f->env, .dotenv_path = "/nonexistent-dir/.env"};
    assert_int_equal(fw_config_parse_ex(f->t, NOPT, 1, ARGV("x"), &o, NULL), FW_OK);
    assert_int_equal(f->c.port, 8765);
}

static void test_duration_syntax(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        double want;
    } ok[] = {
        {"30", 30},    {"30s", 30},      {"500ms", 0.5},    {"2m", 120},     {"1h", 3600},
        {"1m30s", 90}, {"1.5", 1.5},     {"250us", 250e-6}, {"10ns", 10e-9}, {" 5s ", 5},
        {"0", 0},      {"1h1m1s", 3661}, {".5s", 0.5},      {"0.25m", 15},   {"1000000000", 1e9},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        double v = -1;
        if (!fw_parse_duration(ok[i].s, &v) || fabs(v - ok[i].want) > 1e-12)
            fail_msg("'%s' -> %g, want %g", ok[i].s, v, ok[i].want);
    }
    static const char *const bad[] = {"",    "abc",   "-1s", "1x",         "1e3",    "s",
                                      "1s2", "1.2.3", "1 s", "ms",         "1S",     "inf",
                                      "nan", "1m-1s", "+1s", "1000000001", "300000h"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double v;
        if (fw_parse_duration(bad[i], &v))
            fail_msg("'%s' accepted as %g", bad[i], v);
    }
}

static void test_size_syntax(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t want;
    } ok[] = {
        {"1048576", 1048576},
        {"20M", 20971520},
        {"20MiB", 20971520},
        {"20MB", 20000000},
        {"1K", 1024},
        {"1kb", 1000},
        {"1.5K", 1536},
        {"0", 0},
        {"1 GiB", 1073741824},
        {"2Gi", 2147483648u},
        {"1T", 1099511627776u},
        {"512B", 512},
        {"18446744073709551615", SIZE_MAX},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t v = 1;
        if (!fw_parse_size(ok[i].s, &v) || v != ok[i].want)
            fail_msg("'%s' -> %zu, want %zu", ok[i].s, v, ok[i].want);
    }
    static const char *const bad[] = {
        "",   "-1",   "1X",  "M",      "18446744073709551616", "16384PiB",
        "1.", "0x10", "1e3", "20 M B", "17179869184GiB"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t v;
        if (fw_parse_size(bad[i], &v))
            fail_msg("'%s' accepted as %zu", bad[i], v);
    }
}

static void test_int_and_double_syntax(void **state)
{
    (void)state;
    long long i;
    assert_true(fw_parse_int("0x10", &i) && i == 16);
    assert_true(fw_parse_int("-5", &i) && i == -5);
    assert_true(fw_parse_int("+7", &i) && i == 7);
    assert_true(fw_parse_int(" 12 ", &i) && i == 12);
    assert_true(fw_parse_int("9223372036854775807", &i) && i == INT64_MAX);
    assert_false(fw_parse_int("9223372036854775808", &i));
    assert_false(fw_parse_int("1.0", &i));
    assert_false(fw_parse_int("", &i));
    assert_false(fw_parse_int("0x", &i));
    assert_false(fw_parse_int("--1", &i));
    assert_false(fw_parse_int("1 2", &i));
    double d;
    assert_true(fw_parse_double("0.5", &d) && d == 0.5);
    assert_true(fw_parse_double("-1e-3", &d) && d == -1e-3);
    assert_false(fw_parse_double("nan", &d));
    assert_false(fw_parse_double("inf", &d));
    assert_false(fw_parse_double("1e999", &d));
    assert_false(fw_parse_double("0.5x", &d));
    assert_false(fw_parse_double("", &d));
    bool b;
    assert_false(fw_parse_bool("2", &b));
    assert_false(fw_parse_bool("", &b));
    assert_false(fw_parse_bool("truee", &b));
}

static void test_int_type_range(void **state)
{
    (void)state;
    int v = 0;
    fw_option t[] = {{.name = "n", .type = FW_OPT_INT, .dest = &v}};
    fw_error err;
    assert_int_equal(fw_config_parse(t, 1, 2, ARGV("--n=2147483648"), NULL, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_string_equal(err.message, "--n='2147483648' (flag): integer out of range");
    assert_int_equal(fw_config_parse(t, 1, 2, ARGV("--n=-2147483648"), NULL, &err), FW_OK);
    assert_int_equal(v, -2147483647 - 1);
}

static void test_describe(void **state)
{
    fixture *f = *state;
    f->env = (fake_env){{{"FACEWORK_GPU", "off"}, {"GPU_WORKER_API_KEY", "sk-very-secret"}}};
    write_dotenv(f, "GPU_WORKER_TIMEOUT=1m30s\nFACEWORK_LISTEN=\"a b\"\n");
    char *argv[] = {"facework", "-p", "9000", "--worker-url=http://a,http://b", NULL};
    assert_int_equal(parse(f, 4, argv, true, NULL), FW_OK);
    char buf[512];
    size_t need = fw_config_describe(f->t, NOPT, buf, sizeof buf);
    const char *want = "listen=\"a b\" port=9000 min_score=0.5 gpu=false timeout=90s "
                       "max_body=20MiB worker_url=http://a,http://b api_key=<redacted> "
                       "gpu_worker_max_retries=5 sources=\"listen:.env,port:flag,gpu:environment,"
                       "timeout:.env,worker_url:flag,api_key:environment\"";
    assert_string_equal(buf, want);
    assert_int_equal(need, strlen(want));
    assert_null(strstr(buf, "sk-very"));
    /* truncation keeps the snprintf contract */
    char small[16];
    assert_int_equal(fw_config_describe(f->t, NOPT, small, sizeof small), strlen(want));
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_int_equal(strncmp(small, want, sizeof small - 1), 0);
    assert_int_equal(fw_config_describe(f->t, NOPT, NULL, 0), strlen(want));
}

static void test_format_value(void **state)
{
    (void)state;
    double dur = 0;
    size_t sz = 0;
    double x = 0;
    char *s = NULL;
    fw_option d = {.name = "d", .type = FW_OPT_DURATION, .dest = &dur};
    fw_option z = {.name = "z", .type = FW_OPT_SIZE, .dest = &sz};
    fw_option g = {.name = "g", .type = FW_OPT_DOUBLE, .dest = &x};
    fw_option st = {.name = "s", .type = FW_OPT_STRING, .dest = &s};
    static const struct {
        double v;
        const char *want;
    } durs[] = {{0, "0s"},       {0.0005, "500us"}, {0.25, "250ms"},
                {1.5, "1500ms"}, {90, "90s"},       {120, "2m"},
                {7200, "2h"},    {1e-9, "1ns"},     {1.5e-9, "0.0000000015s"}};
    char buf[64];
    for (size_t i = 0; i < sizeof durs / sizeof durs[0]; i++) {
        dur = durs[i].v;
        fw_config_format_value(&d, buf, sizeof buf);
        assert_string_equal(buf, durs[i].want);
        double back;
        assert_true(fw_parse_duration(buf, &back));
        assert_true(fabs(back - dur) <= 1e-15);
    }
    static const struct {
        size_t v;
        const char *want;
    } sizes[] = {
        {0, "0"}, {1536, "1536"}, {2048, "2KiB"}, {20971520, "20MiB"}, {3221225472u, "3GiB"}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        sz = sizes[i].v;
        fw_config_format_value(&z, buf, sizeof buf);
        assert_string_equal(buf, sizes[i].want);
        size_t back;
        assert_true(fw_parse_size(buf, &back) && back == sz);
    }
    x = 0.1;
    fw_config_format_value(&g, buf, sizeof buf);
    assert_string_equal(buf, "0.1");
    x = 1.0 / 3.0;
    fw_config_format_value(&g, buf, sizeof buf);
    assert_true(strtod(buf, NULL) == x);
    fw_config_format_value(&st, buf, sizeof buf);
    assert_string_equal(buf, "<unset>");
}

static void test_help(void **state)
{
    fixture *f = *state;
    char *help = NULL;
    size_t hlen = 0;
    FILE *fp = open_memstream(&help, &hlen);
    assert_non_null(fp);
    fw_config_help(f->t, NOPT, fp);
    assert_int_equal(fclose(fp), 0);
    /* one header, one line per option, plus -h/--help */
    int lines = 0;
    for (const char *p = help; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 1 + NOPT + 1);
    static const char *const expect[] = {
        "--listen=ADDR",
        "FACEWORK_LISTEN",
        "127.0.0.1",
        "-p, --port=N",
        "TCP port. [1..65535]",
        "--[no-]gpu",
        "FACEWORK_GPU, GPU_WORKER_ENABLED",
        "--timeout=DURATION",
        "[0.001s..3600s]",
        "--max-body=SIZE",
        "20MiB",
        "--worker-url=LIST",
        "http://127.0.0.1:8765",
        "GPU_WORKER_API_KEY",
        "(no flag)",
        "GPU_WORKER_MAX_RETRIES",
        "-h, --help",
        "Show this help and exit.",
    };
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        if (!strstr(help, expect[i]))
            fail_msg("help lacks '%s':\n%s", expect[i], help);
    /* aligned: every line's environment column starts at the same offset */
    const char *line = help;
    long col = -1;
    static const char *const envs[] = {
        "ENVIRONMENT",        "FACEWORK_LISTEN",       "FACEWORK_PORT",     "FACEWORK_MIN_SCORE",
        "FACEWORK_GPU",       "FACEWORK_TIMEOUT",      "FACEWORK_MAX_BODY", "GPU_WORKER_URL",
        "GPU_WORKER_API_KEY", "GPU_WORKER_MAX_RETRIES"};
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++) {
        const char *hit = strstr(line, envs[i]);
        assert_non_null(hit);
        const char *bol = hit;
        while (bol > help && bol[-1] != '\n')
            bol--;
        if (col < 0)
            col = hit - bol;
        assert_int_equal(hit - bol, col);
        line = strchr(hit, '\n');
        assert_non_null(line);
    }
    /* the api key line shows "-" as its default (none) */
    const char *ak = strstr(help, "--api-key=STR");
    assert_non_null(ak);
    char tok[3][32];
    assert_int_equal(sscanf(ak, "%31s %31s %31s", tok[0], tok[1], tok[2]), 3);
    assert_string_equal(tok[1], "GPU_WORKER_API_KEY");
    assert_string_equal(tok[2], "-");
    free(help);
}

static void test_wants_help(void **state)
{
    (void)state;
    assert_true(fw_config_wants_help(3, ARGV("--port=1", "--help")));
    assert_true(fw_config_wants_help(2, ARGV("-h")));
    assert_false(fw_config_wants_help(3, ARGV("--", "--help")));
    assert_false(fw_config_wants_help(2, ARGV("--port=1")));
    assert_false(fw_config_wants_help(1, ARGV("x")));
}

static void test_help_flag_ignored_by_parse(void **state)
{
    fixture *f = *state;
    assert_int_equal(parse(f, ARGC("--help", "-h"), ARGV("--help", "-h"), false, NULL), FW_OK);
}

static void test_table_validation(void **state)
{
    (void)state;
    int a = 0, b = 0;
    fw_option dup[] = {{.name = "x", .type = FW_OPT_INT, .dest = &a},
                       {.name = "x", .type = FW_OPT_INT, .dest = &b}};
    fw_error err;
    assert_int_equal(fw_config_parse(dup, 2, 1, ARGV("x"), NULL, &err), FW_ERR_INVALID_ARGUMENT);
    assert_string_equal(err.message, "config table: option x defined twice");
    fw_option nodest[] = {{.name = "x", .type = FW_OPT_INT}};
    assert_int_equal(fw_config_parse(nodest, 1, 1, ARGV("x"), NULL, &err), FW_ERR_INVALID_ARGUMENT);
    fw_option baddef[] = {{.name = "x", .type = FW_OPT_INT, .def = "ten", .dest = &a}};
    assert_int_equal(fw_config_parse(baddef, 1, 1, ARGV("x"), NULL, &err), FW_ERR_INVALID_ARGUMENT);
    assert_string_equal(err.message, "--x='ten' (default): not an integer");
    size_t z = 0;
    fw_option envonly[] = {{.env = "X_ONLY", .type = FW_OPT_SIZE, .def = "5 apples", .dest = &z}};
    assert_int_equal(fw_config_parse(envonly, 1, 1, ARGV("x"), NULL, &err),
                     FW_ERR_INVALID_ARGUMENT);
    assert_string_equal(err.message, "X_ONLY='5 apples' (default): not a size");
    fw_config_free(NULL, 3);
}

static void test_real_environment(void **state)
{
    (void)state;
    const char *path = getenv("PATH");
    if (!path)
        skip();
    char *v = NULL;
    fw_option t[] = {{.env = "PATH", .type = FW_OPT_STRING, .dest = &v}};
    assert_int_equal(fw_config_parse(t, 1, 1, ARGV("x"), NULL, NULL), FW_OK);
    assert_string_equal(v, path);
    assert_int_equal(t[0].source, FW_SRC_ENV);
    fw_config_free(t, 1);
    assert_string_equal(fw_config_source_name(FW_SRC_DOTENV), ".env");
    assert_string_equal(fw_config_source_name(FW_SRC_FLAG), "flag");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_precedence),
        T(test_flag_syntax),
        T(test_bool_forms),
        T(test_last_flag_wins),
        T(test_positional),
        T(test_errors_name_source_and_option),
        T(test_long_and_control_values_in_errors),
        cmocka_unit_test(test_secret_never_printed),
        T(test_empty_env_values),
        T(test_missing_dotenv_is_fine),
        cmocka_unit_test(test_duration_syntax),
        cmocka_unit_test(test_size_syntax),
        cmocka_unit_test(test_int_and_double_syntax),
        cmocka_unit_test(test_int_type_range),
        T(test_describe),
        cmocka_unit_test(test_format_value),
        T(test_help),
        cmocka_unit_test(test_wants_help),
        T(test_help_flag_ignored_by_parse),
        cmocka_unit_test(test_table_validation),
        cmocka_unit_test(test_real_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
