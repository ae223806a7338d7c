/* Client configuration: defaults, GPU_WORKER_* from the environment and a .env file,
 * explicit settings winning, invalid values reported by name (and source), URL lists, and
 * fw_client_new rejecting invalid explicit fields by name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/client_config.h"
#include "facework/client.h"

static const char *const vars[] = {
    "GPU_WORKER_ENABLED",
    "GPU_WORKER_URL",
    "GPU_WORKER_TIMEOUT",
    "GPU_WORKER_ATTEMPT_TIMEOUT",
    "GPU_WORKER_CONNECT_TIMEOUT",
    "GPU_WORKER_MAX_RETRIES",
    "GPU_WORKER_BATCH_SIZE",
    "GPU_WORKER_HEALTH_CHECK_INTERVAL",
    "GPU_WORKER_API_KEY",
    "GPU_WORKER_CB_FAILURE_THRESHOLD",
    "GPU_WORKER_CB_RECOVERY_TIMEOUT",
    "GPU_WORKER_CB_SUCCESS_THRESHOLD",
    "GPU_WORKER_CB_MIN_REQUESTS",
    "GPU_WORKER_MAX_CONNECTIONS",
    "GPU_WORKER_BACKOFF_BASE",
    "GPU_WORKER_BACKOFF_MAX",
    "GPU_WORKER_HTTP",
    "GPU_WORKER_CPU_FALLBACK",
    "FACEWORK_MODELS",
    "GPU_WORKER_CPU_FALLBACK_THREADS",
};

static char dotenv[64];

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    snprintf(dotenv, sizeof dotenv, "/tmp/fwclientenv.%d", (int)getpid());
    unlink(dotenv);
    return 0;
}

static void write_dotenv(const char *text)
{
    FILE *f = fopen(dotenv, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_defaults(void **state)
{
    (void)state;
    fw_client_config c;
    fw_client_config_init(&c);
    assert_int_equal(c.enabled, FW_CLIENT_UNSET);
    assert_true(c.timeout_s == FW_CLIENT_UNSET);
    fw_error err;
    assert_int_equal(fw_client_config_from_env(&c, NULL, &err), FW_OK);
    assert_int_equal(c.enabled, 1);
    assert_string_equal(c.urls, "http://127.0.0.1:8765");
    assert_true(c.timeout_s == 60);
    assert_true(c.attempt_timeout_s == 20);
    assert_true(c.connect_timeout_s == 2);
    assert_int_equal(c.max_retries, 5);
    assert_int_equal(c.batch_size, 32);
    assert_true(c.health_interval_s == 10);
    assert_string_equal(c.api_key, "");
    assert_int_equal(c.failure_threshold, 15);
    assert_true(c.recovery_timeout_s == 20);
    assert_int_equal(c.success_threshold, 3);
    assert_int_equal(c.min_requests, 10);
    assert_int_equal(c.max_connections, 8);
    assert_true(c.backoff_base_s == 0.1);
    assert_true(c.backoff_max_s == 5);
    assert_int_equal(c.http_version, FW_CLIENT_HTTP_AUTO);
    assert_int_equal(c.fallback, 1);
    assert_string_equal(c.fallback_models_dir, "");
    assert_int_equal(c.fallback_threads, 0);

    /* resolve fills the same defaults without the environment */
    fw_client_config in, out;
    fw_client_config_init(&in);
    assert_int_equal(fw__client_config_resolve(&in, &out, &err), FW_OK);
    assert_int_equal(out.failure_threshold, 15);
    assert_string_equal(out.urls, "http://127.0.0.1:8765");
}

static void test_environment(void **state)
{
    (void)state;
    setenv("GPU_WORKER_ENABLED", "false", 1);
    setenv("GPU_WORKER_URL", " http://gpu1:8765/ , http://gpu2:9000,,", 1);
    setenv("GPU_WORKER_TIMEOUT", "90", 1);
    setenv("GPU_WORKER_MAX_RETRIES", "2", 1);
    setenv("GPU_WORKER_BATCH_SIZE", "8", 1);
    setenv("GPU_WORKER_HEALTH_CHECK_INTERVAL", "500ms", 1);
    setenv("GPU_WORKER_API_KEY", "s3cret", 1);
    setenv("GPU_WORKER_CB_FAILURE_THRESHOLD", "4", 1);
    setenv("GPU_WORKER_CB_RECOVERY_TIMEOUT", "1m30s", 1);
    setenv("GPU_WORKER_CB_SUCCESS_THRESHOLD", "1", 1);
    setenv("GPU_WORKER_CB_MIN_REQUESTS", "0", 1);
    setenv("GPU_WORKER_HTTP", "1.1", 1);
    setenv("GPU_WORKER_CPU_FALLBACK", "off", 1);
    fw_client_config c;
    fw_client_config_init(&c);
    fw_error err;
    assert_int_equal(fw_client_config_from_env(&c, NULL, &err), FW_OK);
    assert_int_equal(c.enabled, 0);
    assert_string_equal(c.urls, " http://gpu1:8765/ , http://gpu2:9000,,");
    assert_true(c.timeout_s == 90);
    assert_int_equal(c.max_retries, 2);
    assert_int_equal(c.batch_size, 8);
    assert_true(c.health_interval_s == 0.5);
    assert_string_equal(c.api_key, "s3cret");
    assert_int_equal(c.failure_threshold, 4);
    assert_true(c.recovery_timeout_s == 90);
    assert_int_equal(c.success_threshold, 1);
    assert_int_equal(c.min_requests, 0);
    assert_int_equal(c.http_version, FW_CLIENT_HTTP_1_1);
    assert_int_equal(c.fallback, 0);

    char urls[FW_CLIENT_MAX_WORKERS][FW_CLIENT_URL_MAX];
    size_t n;
    assert_int_equal(fw__split_urls(c.urls, "urls", urls, &n, &err), FW_OK);
    assert_int_equal(n, 2);
    assert_string_equal(urls[0], "http://gpu1:8765");
    assert_string_equal(urls[1], "http://gpu2:9000");
}

static void test_explicit_settings_win(void **state)
{
    (void)state;
    setenv("GPU_WORKER_BATCH_SIZE", "8", 1);
    setenv("GPU_WORKER_URL", "http://env:1", 1);
    setenv("GPU_WORKER_CPU_FALLBACK", "false", 1);
    fw_client_config c;
    fw_client_config_init(&c);
    c.batch_size = 16;
    c.fallback = 1;
    snprintf(c.urls, sizeof c.urls, "http://explicit:2");
    assert_int_equal(fw_client_config_from_env(&c, NULL, NULL), FW_OK);
    assert_int_equal(c.batch_size, 16);
    assert_int_equal(c.fallback, 1);
    assert_string_equal(c.urls, "http://explicit:2");
    assert_int_equal(c.max_retries, 5); /* unset: default */
}

static void test_dotenv_file(void **state)
{
    (void)state;
    write_dotenv("# client settings\n"
                 "GPU_WORKER_URL=http://from-dotenv:8765\n"
                 "export GPU_WORKER_MAX_RETRIES=7\n"
                 "GPU_WORKER_TIMEOUT='2m'\n");
    setenv("GPU_WORKER_MAX_RETRIES", "1", 1); /* the environment beats .env */
    fw_client_config c;
    fw_client_config_init(&c);
    fw_error err;
    assert_int_equal(fw_client_config_from_env(&c, dotenv, &err), FW_OK);
    assert_string_equal(c.urls, "http://from-dotenv:8765");
    assert_int_equal(c.max_retries, 1);
    assert_true(c.timeout_s == 120);
    /* a missing file is fine */
    unlink(dotenv);
    fw_client_config_init(&c);
    assert_int_equal(fw_client_config_from_env(&c, dotenv, &err), FW_OK);
    assert_string_equal(c.urls, "http://127.0.0.1:8765");
}

/* Sets one variable, expects an error whose message contains every needle. */
static void expect_env_error(const char *var, const char *value, const char *n1, const char *n2)
{
    clear_env(NULL);
    setenv(var, value, 1);
    fw_client_config c;
    fw_client_config_init(&c);
    c.max_retries = 3; /* explicit: must survive a failed call */
    fw_error err;
    fw_error_clear(&err);
    fw_err rc = fw_client_config_from_env(&c, NULL, &err);
    if (rc == FW_OK)
        fail_msg("%s='%s' was accepted", var, value);
    assert_non_null(strstr(err.message, n1));
    if (n2 && !strstr(err.message, n2))
        fail_msg("'%s' not in '%s'", n2, err.message);
    assert_int_equal(c.max_retries, 3);
    assert_int_equal(c.batch_size, FW_CLIENT_UNSET); /* cfg untouched */
    unsetenv(var);
}

static void test_invalid_values_named(void **state)
{
    (void)state;
    expect_env_error("GPU_WORKER_TIMEOUT", "abc", "GPU_WORKER_TIMEOUT", "environment");
    expect_env_error("GPU_WORKER_TIMEOUT", "0", "GPU_WORKER_TIMEOUT", NULL);
    expect_env_error("GPU_WORKER_ENABLED", "maybe", "GPU_WORKER_ENABLED", NULL);
    expect_env_error("GPU_WORKER_MAX_RETRIES", "-1", "GPU_WORKER_MAX_RETRIES", NULL);
    expect_env_error("GPU_WORKER_MAX_RETRIES", "3x", "GPU_WORKER_MAX_RETRIES", NULL);
    expect_env_error("GPU_WORKER_BATCH_SIZE", "0", "GPU_WORKER_BATCH_SIZE", NULL);
    expect_env_error("GPU_WORKER_HEALTH_CHECK_INTERVAL", "soon", "GPU_WORKER_HEALTH_CHECK_INTERVAL",
                     NULL);
    expect_env_error("GPU_WORKER_CB_FAILURE_THRESHOLD", "0", "GPU_WORKER_CB_FAILURE_THRESHOLD",
                     NULL);
    expect_env_error("GPU_WORKER_CB_RECOVERY_TIMEOUT", "-5s", "GPU_WORKER_CB_RECOVERY_TIMEOUT",
                     NULL);
    expect_env_error("GPU_WORKER_CB_SUCCESS_THRESHOLD", "many", "GPU_WORKER_CB_SUCCESS_THRESHOLD",
                     NULL);
    expect_env_error("GPU_WORKER_CB_MIN_REQUESTS", "1.5", "GPU_WORKER_CB_MIN_REQUESTS", NULL);
    expect_env_error("GPU_WORKER_URL", "ftp://gpu:21", "GPU_WORKER_URL", "ftp://gpu:21");
    expect_env_error("GPU_WORKER_URL", "http://a:1,gpu2:9000", "GPU_WORKER_URL", "gpu2:9000");
    expect_env_error("GPU_WORKER_URL", "http://a:1,http://a:1", "GPU_WORKER_URL", "twice");
    expect_env_error("GPU_WORKER_URL", ", ,", "GPU_WORKER_URL", "no worker URL");
    expect_env_error("GPU_WORKER_HTTP", "spdy", "GPU_WORKER_HTTP", "spdy");
    expect_env_error("GPU_WORKER_CPU_FALLBACK", "2", "GPU_WORKER_CPU_FALLBACK", NULL);
    expect_env_error("GPU_WORKER_BACKOFF_MAX", "10ms", "GPU_WORKER_BACKOFF_MAX", NULL);

    /* an invalid value in .env is named with its source */
    clear_env(NULL);
    write_dotenv("GPU_WORKER_BATCH_SIZE=lots\n");
    fw_client_config c;
    fw_client_config_init(&c);
    fw_error err;
    assert_int_not_equal(fw_client_config_from_env(&c, dotenv, &err), FW_OK);
    assert_non_null(strstr(err.message, "GPU_WORKER_BATCH_SIZE"));
    assert_non_null(strstr(err.message, ".env"));
    /* a malformed .env line is an error too */
    write_dotenv("GPU_WORKER_BATCH_SIZE 8\n");
    fw_client_config_init(&c);
    assert_int_equal(fw_client_config_from_env(&c, dotenv, &err), FW_ERR_PARSE);
    unlink(dotenv);

    /* the API key never appears in an error */
    clear_env(NULL);
    setenv("GPU_WORKER_API_KEY", "topsecret", 1);
    setenv("GPU_WORKER_TIMEOUT", "x", 1);
    fw_client_config_init(&c);
    assert_int_not_equal(fw_client_config_from_env(&c, NULL, &err), FW_OK);
    assert_null(strstr(err.message, "topsecret"));
}

static void expect_new_error(fw_client_config *c, const char *field)
{
    fw_client *cl = (fw_client *)0x1;
    fw_error err;
    assert_int_equal(fw_client_new(c, &cl, &err), FW_ERR_INVALID_ARGUMENT);
    assert_null(cl);
    if (strncmp(err.message, field, strlen(field)) != 0)
        fail_msg("expected '%s: ...', got '%s'", field, err.message);
    fw_client_config_init(c);
}

static void test_new_rejects_invalid_fields(void **state)
{
    (void)state;
    fw_client_config c;
    fw_client_config_init(&c);
    c.batch_size = 0;
    expect_new_error(&c, "batch_size");
    c.timeout_s = 0;
    expect_new_error(&c, "timeout_s");
    c.max_retries = -2;
    expect_new_error(&c, "max_retries");
    snprintf(c.urls, sizeof c.urls, "http://ok:1, gopher://x");
    expect_new_error(&c, "urls");
    c.enabled = 2;
    expect_new_error(&c, "enabled");
    c.failure_threshold = 0;
    expect_new_error(&c, "failure_threshold");
    c.success_threshold = 0;
    expect_new_error(&c, "success_threshold");
    c.recovery_timeout_s = -3;
    expect_new_error(&c, "recovery_timeout_s");
    c.min_requests = -3;
    expect_new_error(&c, "min_requests");
    c.backoff_base_s = 2;
    c.backoff_max_s = 1;
    expect_new_error(&c, "backoff_max_s");
    c.http_version = 17;
    expect_new_error(&c, "http_version");
    c.max_connections = 0;
    expect_new_error(&c, "max_connections");

    /* more than FW_CLIENT_MAX_WORKERS */
    size_t off = 0;
    for (int i = 0; i <= FW_CLIENT_MAX_WORKERS; i++)
        off += (size_t)snprintf(c.urls + off, sizeof c.urls - off, "http://w%d:1,", i);
    expect_new_error(&c, "urls");

    /* a valid config creates and frees a client (nothing is contacted) */
    fw_client_config_init(&c);
    c.health_interval_s = 0;
    fw_client *cl;
    assert_int_equal(fw_client_new(&c, &cl, NULL), FW_OK);
    fw_client_status_info st;
    fw_client_status(cl, &st);
    assert_int_equal(st.n_workers, 1);
    assert_string_equal(st.workers[0].url, "http://127.0.0.1:8765");
    assert_string_equal(st.workers[0].breaker_name, "closed");
    assert_false(st.workers[0].health_checked);
    assert_true(st.workers[0].health_age_s == -1);
    fw_client_free(cl);
    fw_client_free(NULL);
}

static void test_http_mode_names(void **state)
{
    (void)state;
    fw_client_http m;
    assert_true(fw__parse_http_mode("AUTO", &m) && m == FW_CLIENT_HTTP_AUTO);
    assert_true(fw__parse_http_mode("http/1.1", &m) && m == FW_CLIENT_HTTP_1_1);
    assert_true(fw__parse_http_mode("h2c", &m) && m == FW_CLIENT_HTTP_2_UPGRADE);
    assert_true(fw__parse_http_mode("h2-prior-knowledge", &m) && m == FW_CLIENT_HTTP_2_PRIOR);
    assert_false(fw__parse_http_mode("", &m));
    assert_false(fw__parse_http_mode(NULL, &m));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_environment, clear_env),
        cmocka_unit_test_setup(test_explicit_settings_win, clear_env),
        cmocka_unit_test_setup(test_dotenv_file, clear_env),
        cmocka_unit_test_setup(test_invalid_values_named, clear_env),
        cmocka_unit_test_setup(test_new_rejects_invalid_fields, clear_env),
        cmocka_unit_test_setup(test_http_mode_names, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
