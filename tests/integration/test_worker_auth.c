/* Integration: the optional API key. With a key configured (--api-key, FACEWORK_API_KEY or
 * --api-key-file) the inference routes answer 401 JSON without it or with a wrong one, and
 * 200 with "Authorization: Bearer K" or "X-API-Key: K"; /health and /metrics never need it.
 * Without a key configured nothing needs one. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY "s3cr3t-K3y_for-tests"

/* POST /v1/detect (one photo) with the given header lines (NULL-terminated); the status. */
static long detect_with(const fwt_worker *w, const char *const *headers, fwt_proto proto,
                        fwt_resp *out)
{
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    fwt_part p = {"image", "a.jpg", "image/jpeg", d, len};
    char url[256];
    snprintf(url, sizeof url, "%s/v1/detect", w->url);
    fwt_req rq = {.url = url, .parts = &p, .n_parts = 1, .headers = headers, .proto = proto};
    fwt_http(&rq, out);
    return out->status;
}

static void expect_detect_ok(const fwt_worker *w, const char *const *headers, fwt_proto proto)
{
    fwt_resp r;
    detect_with(w, headers, proto, &r);
    json_t *j = fwt_expect_json(&r, 200);
    assert_int_equal(
        json_array_size(json_object_get(json_array_get(json_object_get(j, "results"), 0), "faces")),
        3);
    json_decref(j);
    fwt_resp_free(&r);
}

static void expect_detect_401(const fwt_worker *w, const char *const *headers, fwt_proto proto)
{
    fwt_resp r;
    detect_with(w, headers, proto, &r);
    if (r.status != 401)
        fail_msg("headers %s: status %ld, expected 401", headers && headers[0] ? headers[0] : "-",
                 r.status);
    fwt_expect_error(&r, 401, "unauthorized");
    /* the key (or any part of the presented one) never appears in the answer */
    assert_null(strstr(r.body, KEY));
    assert_null(strstr(r.body, "s3cr3t"));
    fwt_resp_free(&r);
}

/* The full set of checks for a worker that requires KEY. */
static void check_key_required(const fwt_worker *w)
{
    static const char *const none[] = {NULL};
    static const char *const wrong_bearer[] = {"Authorization: Bearer not-the-key", NULL};
    static const char *const wrong_x[] = {"X-API-Key: " KEY "x", NULL};
    static const char *const prefix[] = {"X-API-Key: s3cr3t", NULL};
    static const char *const empty[] = {"X-API-Key;", NULL}; /* present, empty */
    static const char *const basic[] = {"Authorization: Basic " KEY, NULL};
    static const char *const bare[] = {"Authorization: " KEY, NULL};
    static const char *const bearer[] = {"Authorization: Bearer " KEY, NULL};
    static const char *const bearer_lc[] = {"authorization: bearer " KEY, NULL};
    static const char *const xkey[] = {"X-API-Key: " KEY, NULL};
    static const char *const x_lc[] = {"x-api-key: " KEY, NULL};
    static const char *const both[] = {"X-API-Key: wrong", "Authorization: Bearer " KEY, NULL};

    for (int proto = FWT_H1; proto <= FWT_H2; proto++) {
        fwt_proto p = (fwt_proto)proto;
        expect_detect_401(w, none, p);
        expect_detect_401(w, wrong_bearer, p);
        expect_detect_401(w, wrong_x, p);
        expect_detect_401(w, prefix, p);
        expect_detect_401(w, empty, p);
        expect_detect_401(w, basic, p);
        expect_detect_401(w, bare, p);
        expect_detect_ok(w, bearer, p);
        expect_detect_ok(w, xkey, p);
    }
    expect_detect_ok(w, bearer_lc, FWT_H1);
    expect_detect_ok(w, x_lc, FWT_H1);
    expect_detect_ok(w, both, FWT_H1);

    /* the other inference routes are protected too, before their body is even looked at */
    static const char *const routes[] = {"/v1/analyze", "/v1/embed", "/detect_faces_batch",
                                         "/detect_faces_batch_multipart"};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        fwt_resp r;
        fwt_post(w, routes[i], "application/json", "{}", 2, FWT_H1, &r);
        if (r.status != 401)
            fail_msg("%s without a key: status %ld", routes[i], r.status);
        fwt_expect_error(&r, 401, "unauthorized");
        fwt_resp_free(&r);
    }

    /* /health and /metrics need no key */
    for (int proto = FWT_H1; proto <= FWT_H2; proto++) {
        fwt_resp r;
        fwt_get(w, "/health", (fwt_proto)proto, &r);
        json_t *h = fwt_expect_json(&r, 200);
        assert_string_equal(json_string_value(json_object_get(h, "status")), "healthy");
        json_decref(h);
        fwt_resp_free(&r);
        fwt_get(w, "/metrics", (fwt_proto)proto, &r);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "facework_http_requests_total"));
        /* 401s are counted like any other answer */
        assert_non_null(strstr(r.body, "status=\"401\""));
        assert_null(strstr(r.body, KEY));
        fwt_resp_free(&r);
    }
    /* the key never appears in the worker's log */
    char *log = fwt_worker_log(w);
    assert_null(strstr(log, KEY));
    free(log);
}

static void stop_clean(fwt_worker *w)
{
    assert_int_equal(fwt_worker_stop(w, SIGTERM, 40), 0);
    char *log = fwt_worker_log(w);
    assert_null(strstr(log, KEY));
    free(log);
    fwt_worker_free(w);
}

static void test_key_from_flag(void **state)
{
    (void)state;
    static const char *const args[] = {"--api-key", KEY, "--log-level", "info", NULL};
    fwt_worker *w = fwt_worker_start(args);
    check_key_required(w);
    stop_clean(w);
}

static void test_key_from_env(void **state)
{
    (void)state;
    static const char *const env[] = {"FACEWORK_API_KEY=" KEY, NULL};
    fwt_worker_opts o = {.env = env};
    fwt_worker *w = fwt_worker_start_opts(&o);
    check_key_required(w);
    stop_clean(w);
}

static void test_key_from_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/fwt-key-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/key", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(KEY "\nsecond line is ignored\n", f);
    assert_int_equal(fclose(f), 0);
    const char *const args[] = {"--api-key-file", path, NULL};
    fwt_worker *w = fwt_worker_start(args);
    check_key_required(w);
    stop_clean(w);
    unlink(path);
    rmdir(dir);
}

static void test_no_key_configured(void **state)
{
    (void)state;
    fwt_worker *w = fwt_worker_start(NULL);
    static const char *const none[] = {NULL};
    static const char *const junk[] = {"Authorization: Bearer whatever", NULL};
    expect_detect_ok(w, none, FWT_H1);
    expect_detect_ok(w, none, FWT_H2);
    expect_detect_ok(w, junk, FWT_H1); /* a key nobody asked for is ignored */
    assert_int_equal(fwt_worker_stop(w, SIGTERM, 40), 0);
    fwt_worker_free(w);
}

static void test_empty_key_refused(void **state)
{
    (void)state;
    /* an empty key would be "auth on, nobody can pass": the worker refuses to start */
    static const char *const env[] = {"FACEWORK_API_KEY=", NULL};
    fwt_worker_opts o = {.env = env, .no_wait = true};
    fwt_worker *w = fwt_worker_start_opts(&o);
    assert_true(fwt_worker_wait_exit(w, 30));
    assert_int_not_equal(fwt_exit_code(w->wstatus), 0);
    char *log = fwt_worker_log(w);
    if (!strstr(log, "API key"))
        fail_msg("the refusal does not say why: %s", log);
    free(log);
    fwt_worker_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_key_from_flag, fwt_teardown),
        cmocka_unit_test_teardown(test_key_from_env, fwt_teardown),
        cmocka_unit_test_teardown(test_key_from_file, fwt_teardown),
        cmocka_unit_test_teardown(test_no_key_configured, fwt_teardown),
        cmocka_unit_test_teardown(test_empty_key_refused, fwt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, fwt_teardown);
}
