/* Integration: `facework backend` start-up settings.
 *
 * - A bad client setting, from the environment (GPU_WORKER_*), from ./.env or from a flag,
 *   stops the backend at start with exit status 2 and a message naming the variable or the
 *   flag and the source, before it listens.
 * - A .env file in the working directory is read (GPU_WORKER_URL from it reaches a worker),
 *   and the environment wins over it.
 * - API keys: the backend requires its own key from callers (--api-key) and sends the
 *   worker's key (GPU_WORKER_API_KEY) to a worker that requires one.
 * - --listen takes several addresses, like the worker's; the CPU fallback's threads default
 *   to cores / --threads.
 * - Breaker transitions show in /metrics and `facework health`. */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Starts a backend expected to refuse its settings; asserts exit status 2 and that its
 * output holds every one of `want` (NULL-terminated). */
static void expect_refused(const char *const *args, const char *const *env, const char *const *want)
{
    fwt_worker_opts o = {.command = "backend", .args = args, .env = env, .no_wait = true};
    fwt_worker *b = fwt_worker_start_opts(&o);
    if (!fwt_worker_wait_exit(b, 30))
        fail_msg("the backend did not refuse its settings within 30 s");
    char *log = fwt_worker_log(b);
    if (fwt_exit_code(b->wstatus) != 2)
        fail_msg("exit status %d, want 2; output:\n%s", fwt_exit_code(b->wstatus), log);
    for (size_t i = 0; want[i]; i++)
        if (!strstr(log, want[i]))
            fail_msg("the refusal does not say \"%s\"; output:\n%s", want[i], log);
    if (strstr(log, "msg=listening"))
        fail_msg("the backend listened before refusing its settings:\n%s", log);
    free(log);
    fwt_worker_free(b);
}

static void test_bad_settings_named(void **state)
{
    (void)state;
    static const struct {
        const char *env, *flag, *flag_value;
        const char *want;
    } cases[] = {
        {"GPU_WORKER_TIMEOUT=abc", NULL, NULL,
         "GPU_WORKER_TIMEOUT='abc' (environment): not a duration"},
        {"GPU_WORKER_URL=ftp://worker:8765", NULL, NULL,
         "GPU_WORKER_URL: 'ftp://worker:8765' is not an http:// or https:// URL"},
        {"GPU_WORKER_URL=http://a:1, http://a:1", NULL, NULL,
         "GPU_WORKER_URL: 'http://a:1' is listed twice"},
        {"GPU_WORKER_MAX_RETRIES=-1", NULL, NULL, "GPU_WORKER_MAX_RETRIES='-1' (environment)"},
        {"GPU_WORKER_BATCH_SIZE=0", NULL, NULL, "GPU_WORKER_BATCH_SIZE='0' (environment)"},
        {"GPU_WORKER_ENABLED=maybe", NULL, NULL,
         "GPU_WORKER_ENABLED='maybe' (environment): not a boolean"},
        {"GPU_WORKER_HEALTH_CHECK_INTERVAL=soon", NULL, NULL,
         "GPU_WORKER_HEALTH_CHECK_INTERVAL='soon' (environment)"},
        {"GPU_WORKER_CB_FAILURE_THRESHOLD=0", NULL, NULL,
         "GPU_WORKER_CB_FAILURE_THRESHOLD='0' (environment)"},
        {"GPU_WORKER_CB_RECOVERY_TIMEOUT=-3s", NULL, NULL,
         "GPU_WORKER_CB_RECOVERY_TIMEOUT='-3s' (environment)"},
        {"GPU_WORKER_HTTP=h3", NULL, NULL, "GPU_WORKER_HTTP='h3' (environment)"},
        {"FACEWORK_BACKEND_THREADS=0", NULL, NULL, "FACEWORK_BACKEND_THREADS='0' (environment)"},
        {NULL, "--worker-url", "http://ok:1,gopher://x", "--worker-url: 'gopher://x'"},
        {NULL, "--worker-connections", "5000", "--worker-connections='5000' (flag)"},
        {NULL, "--http-version", "spdy", "--http-version='spdy'"},
        {NULL, "--backoff-base", "10s", "--backoff-max (GPU_WORKER_BACKOFF_MAX): must be"},
        {NULL, "--timeout", "0", "--timeout='0' (flag)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *env[2] = {cases[i].env, NULL};
        /* at log level info a backend that got as far as listening would say so */
        const char *args[5] = {"--log-level", "info", cases[i].flag, cases[i].flag_value, NULL};
        const char *want[3] = {cases[i].want, "facework backend: ", NULL};
        expect_refused(args, env, want);
    }
}

/* A fresh directory under /tmp with a .env file holding text; returns its path (static). */
static const char *dotenv_dir(const char *text)
{
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/fwt-dotenv-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/.env", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    return dir;
}

static void remove_dotenv_dir(const char *dir)
{
    char path[128];
    snprintf(path, sizeof path, "%s/.env", dir);
    unlink(path);
    rmdir(dir);
}

/* The backend reads ./.env: run it in a directory that has one (the harness runs it in the
 * test's working directory, so change it around the start). */
static fwt_worker *start_backend_in(const char *dir, const fwt_worker_opts *o)
{
    char old[4096];
    assert_non_null(getcwd(old, sizeof old));
    assert_int_equal(chdir(dir), 0);
    fwt_worker *b = fwt_worker_start_opts(o);
    assert_int_equal(chdir(old), 0);
    return b;
}

static void test_dotenv(void **state)
{
    (void)state;
    /* a bad value in .env is named with its line */
    const char *dir = dotenv_dir("# settings\nGPU_WORKER_MAX_RETRIES=lots\n");
    fwt_worker_opts o = {.command = "backend", .no_wait = true};
    fwt_worker *b = start_backend_in(dir, &o);
    assert_true(fwt_worker_wait_exit(b, 30));
    char *log = fwt_worker_log(b);
    if (fwt_exit_code(b->wstatus) != 2 ||
        !strstr(log, "GPU_WORKER_MAX_RETRIES='lots' (.env line 2): not an integer"))
        fail_msg("exit %d; output:\n%s", fwt_exit_code(b->wstatus), log);
    free(log);
    fwt_worker_free(b);
    remove_dotenv_dir(dir);

    /* GPU_WORKER_URL from .env reaches the worker; the environment wins over .env */
    fwt_worker *w = fwt_worker_start(NULL);
    char text[256];
    snprintf(text, sizeof text, "GPU_WORKER_URL=\"%s\"\nGPU_WORKER_BATCH_SIZE=1\n", w->url);
    dir = dotenv_dir(text);
    static const char *const env[] = {"GPU_WORKER_BATCH_SIZE=3", NULL};
    fwt_worker_opts ok = {.command = "backend", .env = env};
    b = start_backend_in(dir, &ok);
    fwt_part parts[4];
    for (size_t i = 0; i < 4; i++) {
        size_t len;
        const uint8_t *d = fwt_photo((int)i + 1, &len);
        parts[i] = (fwt_part){"image", "p.jpg", "image/jpeg", d, len};
    }
    fwt_resp r;
    fwt_post_parts(b, "/v1/detect", parts, 4, FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    json_t *origins = json_object_get(j, "origins");
    assert_int_equal(json_array_size(origins), 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(json_string_value(json_array_get(origins, i)), w->url);
    json_decref(j);
    /* 4 images at GPU_WORKER_BATCH_SIZE=3 (environment, not .env's 1): 2 worker requests */
    fwt_get(b, "/health", FWT_H1, &r);
    json_t *h = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    json_t *hw = json_array_get(json_object_get(h, "workers"), 0);
    assert_string_equal(json_string_value(json_object_get(hw, "url")), w->url);
    assert_int_equal(json_integer_value(json_object_get(hw, "requests")), 2);
    json_decref(h);
    assert_int_equal(fwt_worker_stop(b, SIGTERM, 40), 0);
    assert_int_equal(fwt_worker_stop(w, SIGTERM, 40), 0);
    fwt_worker_free(b);
    fwt_worker_free(w);
    remove_dotenv_dir(dir);
}

#define WORKER_KEY "worker-key-0123456789"
#define BACKEND_KEY "backend-key-9876543210"

static void test_api_keys(void **state)
{
    (void)state;
    static const char *const wargs[] = {"--api-key", WORKER_KEY, NULL};
    fwt_worker *w = fwt_worker_start(wargs);
    char url_env[160];
    snprintf(url_env, sizeof url_env, "GPU_WORKER_URL=%s", w->url);
    const char *const env[] = {url_env, "GPU_WORKER_API_KEY=" WORKER_KEY, NULL};
    static const char *const bargs[] = {"--api-key", BACKEND_KEY, NULL};
    fwt_worker_opts o = {.command = "backend", .args = bargs, .env = env};
    fwt_worker *b = fwt_worker_start_opts(&o);

    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    fwt_part part = {"image", "p.jpg", "image/jpeg", d, len};
    static const char *const no_key[] = {NULL};
    static const char *const wrong[] = {"X-API-Key: " WORKER_KEY, NULL};
    static const char *const bearer[] = {"Authorization: Bearer " BACKEND_KEY, NULL};
    static const char *const header[] = {"X-API-Key: " BACKEND_KEY, NULL};
    const char *const *refused[] = {no_key, wrong};
    for (size_t i = 0; i < 2; i++) {
        fwt_req rq = {.url = NULL, .headers = refused[i], .parts = &part, .n_parts = 1};
        char url[160];
        snprintf(url, sizeof url, "%s/v1/detect", b->url);
        rq.url = url;
        fwt_resp r;
        fwt_http(&rq, &r);
        fwt_expect_error(&r, 401, "unauthorized");
        fwt_resp_free(&r);
    }
    const char *const *accepted[] = {bearer, header};
    for (size_t i = 0; i < 2; i++) {
        char url[160];
        snprintf(url, sizeof url, "%s/v1/detect", b->url);
        fwt_req rq = {.url = url, .headers = accepted[i], .parts = &part, .n_parts = 1};
        fwt_resp r;
        fwt_http(&rq, &r);
        json_t *j = fwt_expect_json(&r, 200);
        fwt_resp_free(&r);
        /* computed by the worker: the backend sent the worker's key */
        assert_string_equal(json_string_value(json_array_get(json_object_get(j, "origins"), 0)),
                            w->url);
        json_decref(j);
    }
    /* /health needs no key (probes), and shows the worker healthy (checked with the key) */
    fwt_resp r;
    fwt_get(b, "/health", FWT_H1, &r);
    json_t *h = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    assert_string_equal(json_string_value(json_object_get(h, "status")), "healthy");
    json_decref(h);
    assert_int_equal(fwt_worker_stop(b, SIGTERM, 40), 0);
    assert_int_equal(fwt_worker_stop(w, SIGTERM, 40), 0);
    fwt_worker_free(b);
    fwt_worker_free(w);
}

static void test_listen_several(void **state)
{
    (void)state;
    /* the port file names the first address; the second one answers as well */
    int p2 = fwt_free_port();
    char second[64];
    snprintf(second, sizeof second, "127.0.0.1:%d", p2);
    const char *const args[] = {"--listen", second, "--log-level", "info", "--threads", "2", NULL};
    static const char *const env[] = {"GPU_WORKER_URL=http://127.0.0.1:9",
                                      "GPU_WORKER_HEALTH_CHECK_INTERVAL=0", NULL};
    fwt_worker_opts o = {.command = "backend", .args = args, .env = env};
    fwt_worker *b = fwt_worker_start_opts(&o);
    char url[96];
    snprintf(url, sizeof url, "http://%s/health", second);
    fwt_req rq = {.url = url};
    fwt_resp r;
    fwt_http(&rq, &r);
    json_t *h = fwt_expect_json(&r, 200);
    fwt_resp_free(&r);
    assert_string_equal(json_string_value(json_object_get(h, "role")), "backend");
    json_decref(h);
    /* nobody chose the fallback's threads: cores / --threads, at least 1 */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char want[96];
    snprintf(want, sizeof want, "msg=cpu fallback enabled=1 threads=%ld (cores / --threads)",
             cores / 2 < 1     ? 1
             : cores / 2 > 256 ? 256
                               : cores / 2);
    char *log = fwt_worker_log(b);
    if (!strstr(log, want))
        fail_msg("the log does not say \"%s\":\n%s", want, log);
    free(log);
    assert_int_equal(fwt_worker_stop(b, SIGTERM, 40), 0);
    fwt_worker_free(b);
}

/* With no worker reachable and a breaker that opens at the first failure, the transitions
 * show in /metrics and in `facework health`, and every image is computed by the fallback. */
static void test_breaker_transitions_reported(void **state)
{
    (void)state;
    int dead = fwt_free_port();
    char url_env[96], wurl[64];
    snprintf(wurl, sizeof wurl, "http://127.0.0.1:%d", dead);
    snprintf(url_env, sizeof url_env, "GPU_WORKER_URL=%s", wurl);
    const char *const env[] = {url_env,
                               "GPU_WORKER_CB_FAILURE_THRESHOLD=1",
                               "GPU_WORKER_CB_MIN_REQUESTS=0",
                               "GPU_WORKER_CB_RECOVERY_TIMEOUT=1h",
                               "GPU_WORKER_MAX_RETRIES=0",
                               "GPU_WORKER_HEALTH_CHECK_INTERVAL=0",
                               NULL};
    fwt_worker_opts o = {.command = "backend", .env = env};
    fwt_worker *b = fwt_worker_start_opts(&o);
    size_t len;
    const uint8_t *d = fwt_photo(2, &len);
    fwt_part part = {"image", "p.jpg", "image/jpeg", d, len};
    for (int i = 0; i < 3; i++) {
        fwt_resp r;
        fwt_post_parts(b, "/v1/detect", &part, 1, FWT_H1, &r);
        json_t *j = fwt_expect_json(&r, 200);
        fwt_resp_free(&r);
        assert_string_equal(json_string_value(json_array_get(json_object_get(j, "origins"), 0)),
                            "cpu-fallback");
        json_decref(j);
    }
    fwt_resp r;
    fwt_get(b, "/metrics", FWT_H1, &r);
    assert_int_equal(r.status, 200);
    char series[256];
    double v = -1;
    snprintf(series, sizeof series,
             "facework_client_breaker_transitions_total{worker=\"%s\",from=\"closed\",to=\"open\"}",
             wurl);
    if (!fwt_metric(r.body, series, &v) || v != 1)
        fail_msg("%s = %g", series, v);
    snprintf(series, sizeof series, "facework_client_breaker_state{worker=\"%s\"}", wurl);
    assert_true(fwt_metric(r.body, series, &v) && v == 1); /* open */
    assert_true(fwt_metric(r.body, "facework_client_fallback_ratio", &v) && v == 1);
    fwt_resp_free(&r);

    char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd, "'%s' health '%s' 2>&1", getenv("FW_FACEWORK"), b->url);
    fflush(NULL);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    if (st != 0 || !strstr(out, "degraded (HTTP 200)") || !strstr(out, "breaker open") ||
        !strstr(out, "breaker transitions: closed->open 1") ||
        !strstr(out, "(by workers 0, CPU fallback 3, errors 0)"))
        fail_msg("facework health (status %d):\n%s", st, out);
    assert_int_equal(fwt_worker_stop(b, SIGTERM, 40), 0);
    fwt_worker_free(b);
}

int main(void)
{
    if (!getenv("FW_SOURCE_DIR")) {
        fprintf(stderr, "FW_SOURCE_DIR is not set: run through ctest\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_bad_settings_named, fwt_teardown),
        cmocka_unit_test_teardown(test_dotenv, fwt_teardown),
        cmocka_unit_test_teardown(test_api_keys, fwt_teardown),
        cmocka_unit_test_teardown(test_listen_several, fwt_teardown),
        cmocka_unit_test_teardown(test_breaker_transitions_reported, fwt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, fwt_teardown);
}
