/* The fault-injecting proxy itself, in front of a real worker, spoken to by libcurl over
 * HTTP/1.1, HTTP/2 with prior knowledge and the h2c upgrade (what the client library uses
 * with libcurl < 8). Each mode must produce the failure it promises, and the counters must
 * count what crossed the proxy. */
#include "harness.h"
#include "harness_proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fth_proc *g_worker;
static fwp_proxy *g_proxy;

typedef struct answer {
    CURLcode rc;
    long status;
    long http_version; /* CURL_HTTP_VERSION_* negotiated */
    char retry_after[32];
    char *body;
    size_t len;
    double seconds;
} answer;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user)
{
    answer *a = user;
    size_t n = size * nmemb;
    char *b = realloc(a->body, a->len + n + 1);
    if (!b)
        return 0;
    memcpy(b + a->len, ptr, n);
    a->body = b;
    a->len += n;
    a->body[a->len] = '\0';
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *user)
{
    answer *a = user;
    size_t n = size * nmemb;
    if (n > 12 && !strncasecmp(ptr, "retry-after:", 12)) {
        size_t k = 0;
        for (size_t i = 12; i < n && k < sizeof a->retry_after - 1; i++)
            if (ptr[i] != ' ' && ptr[i] != '\r' && ptr[i] != '\n')
                a->retry_after[k++] = ptr[i];
        a->retry_after[k] = '\0';
    }
    return n;
}

/* One request through the proxy on easy handle e (NULL: a fresh one). path "/health" is a
 * GET; "/v1/analyze" POSTs sample1.jpg. */
static answer request(CURL *e, long version, const char *path, long timeout_ms)
{
    answer a = {0};
    bool own = !e;
    if (own)
        e = curl_easy_init();
    else
        curl_easy_reset(e);
    assert_non_null(e);
    char url[256];
    snprintf(url, sizeof url, "%s%s", fwp_url(g_proxy), path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, version);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &a);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms ? timeout_ms : 20000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_mime *mime = NULL;
    char *data = NULL;
    if (!strcmp(path, "/v1/analyze")) {
        char file[1024];
        snprintf(file, sizeof file, "%s/sample1.jpg", getenv("FW_PHOTOS_DIR"));
        FILE *f = fopen(file, "rb");
        assert_non_null(f);
        data = malloc(1 << 20);
        assert_non_null(data);
        size_t len = fread(data, 1, 1 << 20, f);
        fclose(f);
        mime = curl_mime_init(e);
        curl_mimepart *part = curl_mime_addpart(mime);
        curl_mime_name(part, "image");
        curl_mime_filename(part, "a");
        curl_mime_data(part, data, len);
        curl_easy_setopt(e, CURLOPT_MIMEPOST, mime);
    }
    a.rc = curl_easy_perform(e);
    if (a.rc == CURLE_OK) {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &a.status);
        curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &a.http_version);
    }
    curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &a.seconds);
    curl_mime_free(mime);
    free(data);
    if (own)
        curl_easy_cleanup(e);
    return a;
}

static void answer_free(answer *a)
{
    free(a->body);
    a->body = NULL;
}

static const long VERSIONS[] = {CURL_HTTP_VERSION_1_1, CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE,
                                CURL_HTTP_VERSION_2_0};
static const char *const VERSION_NAMES[] = {"HTTP/1.1", "h2 prior knowledge", "h2c upgrade"};

/* libcurl < 8.0 cannot reuse an HTTP/2 prior-knowledge connection (curl issue #10634): the
 * second request on it fails with CURLE_HTTP2. Such requests get a connection each. */
static CURL *conn_for(int v, CURL *shared)
{
    return v == 1 && curl_version_info(CURLVERSION_NOW)->version_num < 0x080000 ? NULL : shared;
}

static uint64_t conns_for(int v, uint64_t requests)
{
    return conn_for(v, (CURL *)1) ? 1 : requests;
}

static fwp_stats stats(void)
{
    fwp_stats s;
    fwp_get_stats(g_proxy, &s);
    return s;
}

static void wait_idle(void)
{
    double deadline = fth_now() + 10;
    while (stats().active > 0) {
        if (fth_now() > deadline)
            fail_msg("proxy connections still open: %u", stats().active);
        fth_pause_ms(10);
    }
}

static int setup(void **state)
{
    (void)state;
    if (!g_worker)
        g_worker = fth_start("worker", NULL);
    g_proxy = fwp_start("127.0.0.1", g_worker->port);
    assert_non_null(g_proxy);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fwp_stop(g_proxy);
    g_proxy = NULL;
    return 0;
}

static int suite_teardown(void **state)
{
    g_worker = NULL;
    return fth_teardown(state);
}

/* Pass-through works in every protocol, and connections and requests are counted. */
static void test_pass(void **state)
{
    (void)state;
    for (int v = 0; v < 3; v++) {
        fwp_stats before = stats();
        CURL *e = curl_easy_init();
        for (int k = 0; k < 3; k++) {
            answer a = request(conn_for(v, e), VERSIONS[v], "/health", 0);
            if (a.rc != CURLE_OK || a.status != 200)
                fail_msg("%s: rc %d status %ld", VERSION_NAMES[v], a.rc, a.status);
            assert_non_null(strstr(a.body, "\"status\":\"healthy\""));
            if (v > 0)
                assert_int_equal(a.http_version, CURL_HTTP_VERSION_2_0);
            answer_free(&a);
        }
        answer a = request(conn_for(v, e), VERSIONS[v], "/v1/analyze", 0);
        assert_int_equal(a.rc, CURLE_OK);
        assert_int_equal(a.status, 200);
        json_t *j = json_loadb(a.body, a.len, 0, NULL);
        assert_non_null(j);
        json_t *faces = json_object_get(json_array_get(json_object_get(j, "results"), 0), "faces");
        assert_int_equal(json_array_size(faces), 3);
        json_decref(j);
        answer_free(&a);
        curl_easy_cleanup(e);
        fwp_stats after = stats();
        /* one kept-alive connection carried the four requests */
        assert_int_equal(after.connections - before.connections, conns_for(v, 4));
        assert_int_equal(after.requests - before.requests, 4);
        assert_int_equal(after.faults, 0);
    }
    wait_idle();
}

static void test_canned_answers(void **state)
{
    (void)state;
    for (int v = 0; v < 3; v++) {
        /* 503 + Retry-After, for a GET and for a POST with a 140 kB body (HTTP/2 needs the
         * proxy to open the flow-control window) */
        fwp_set(g_proxy, &(fwp_fault){.mode = FWP_HTTP_503, .retry_after_s = 7});
        const char *paths[] = {"/health", "/v1/analyze"};
        for (int k = 0; k < 2; k++) {
            answer a = request(NULL, VERSIONS[v], paths[k], 0);
            if (a.rc != CURLE_OK || a.status != 503)
                fail_msg("%s %s: rc %d status %ld", VERSION_NAMES[v], paths[k], a.rc, a.status);
            assert_string_equal(a.retry_after, "7");
            json_t *j = json_loadb(a.body, a.len, 0, NULL);
            assert_non_null(j);
            assert_string_equal(
                json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                "unavailable");
            json_decref(j);
            answer_free(&a);
        }
        fwp_set_mode(g_proxy, FWP_HTTP_500);
        answer a = request(NULL, VERSIONS[v], "/v1/analyze", 0);
        assert_int_equal(a.rc, CURLE_OK);
        assert_int_equal(a.status, 500);
        assert_string_equal(a.retry_after, "");
        answer_free(&a);

        fwp_set_mode(g_proxy, FWP_TRUNCATED_JSON);
        a = request(NULL, VERSIONS[v], "/v1/analyze", 0);
        assert_int_equal(a.rc, CURLE_OK);
        assert_int_equal(a.status, 200);
        assert_true(a.len > 20);
        json_error_t jerr;
        assert_null(json_loadb(a.body, a.len, 0, &jerr)); /* cut mid-JSON */
        answer_free(&a);

        /* several requests on one connection */
        fwp_stats before = stats();
        CURL *e = curl_easy_init();
        for (int k = 0; k < 3; k++) {
            a = request(conn_for(v, e), VERSIONS[v], "/health", 0);
            assert_int_equal(a.status, 200);
            answer_free(&a);
        }
        curl_easy_cleanup(e);
        assert_int_equal(stats().connections - before.connections, conns_for(v, 3));
        assert_int_equal(stats().requests - before.requests, 3);
        assert_int_equal(stats().faults - before.faults, 3);
    }
    fwp_set_mode(g_proxy, FWP_PASS);
    wait_idle();
}

static void test_broken_connections(void **state)
{
    (void)state;
    for (int v = 0; v < 3; v++) {
        fwp_set_mode(g_proxy, FWP_GARBAGE);
        answer a = request(NULL, VERSIONS[v], "/health", 0);
        if (a.rc == CURLE_OK)
            fail_msg("%s: garbage gave status %ld", VERSION_NAMES[v], a.status);
        answer_free(&a);

        fwp_stats before = stats();
        fwp_set_mode(g_proxy, FWP_RESET_CONNECT);
        a = request(NULL, VERSIONS[v], "/health", 0);
        assert_int_not_equal(a.rc, CURLE_OK);
        answer_free(&a);
        assert_int_equal(stats().requests, before.requests); /* reset before any request */
        assert_true(stats().faults > before.faults);

        before = stats();
        fwp_set_mode(g_proxy, FWP_RESET_REQUEST);
        a = request(NULL, VERSIONS[v], "/v1/analyze", 0);
        assert_int_not_equal(a.rc, CURLE_OK);
        answer_free(&a);
        assert_true(stats().requests > before.requests);

        /* the worker's answer is about 21 kB: cut it after 400 bytes */
        fwp_set(g_proxy, &(fwp_fault){.mode = FWP_CLOSE_MID_BODY, .close_after = 400});
        a = request(NULL, VERSIONS[v], "/v1/analyze", 0);
        if (a.rc == CURLE_OK)
            fail_msg("%s: a cut answer was complete (%zu bytes)", VERSION_NAMES[v], a.len);
        assert_true(a.len < 400);
        answer_free(&a);
    }
    fwp_set_mode(g_proxy, FWP_PASS);
    wait_idle();
}

static void test_delay_and_stall(void **state)
{
    (void)state;
    for (int v = 0; v < 3; v++) {
        fwp_set(g_proxy, &(fwp_fault){.mode = FWP_DELAY, .delay_ms = 300});
        answer a = request(NULL, VERSIONS[v], "/health", 0);
        assert_int_equal(a.rc, CURLE_OK);
        assert_int_equal(a.status, 200);
        assert_true(a.seconds >= 0.3);
        answer_free(&a);

        fwp_stats before = stats();
        fwp_set_mode(g_proxy, FWP_STALL);
        a = request(NULL, VERSIONS[v], "/v1/analyze", 400);
        assert_int_equal(a.rc, CURLE_OPERATION_TIMEDOUT);
        assert_int_equal(a.len, 0);
        answer_free(&a);
        assert_int_equal(stats().requests - before.requests, 1);
    }
    fwp_set_mode(g_proxy, FWP_PASS);
    wait_idle();
}

/* A counted fault: the first two requests fail, then the proxy passes again. */
static void test_count(void **state)
{
    (void)state;
    for (int v = 0; v < 3; v++) {
        fwp_stats before = stats();
        fwp_set(g_proxy, &(fwp_fault){.mode = FWP_HTTP_503, .retry_after_s = 1, .count = 2});
        CURL *e = curl_easy_init();
        long want[] = {503, 503, 200, 200};
        for (int k = 0; k < 4; k++) {
            answer a = request(conn_for(v, e), VERSIONS[v], "/health", 0);
            if (a.rc != CURLE_OK || a.status != want[k])
                fail_msg("%s request %d: rc %d status %ld, want %ld", VERSION_NAMES[v], k, a.rc,
                         a.status, want[k]);
            answer_free(&a);
        }
        curl_easy_cleanup(e);
        assert_int_equal(stats().faults - before.faults, 2);

        before = stats();
        fwp_set(g_proxy, &(fwp_fault){.mode = FWP_RESET_CONNECT, .count = 1});
        answer a = request(NULL, VERSIONS[v], "/health", 0);
        assert_int_not_equal(a.rc, CURLE_OK);
        answer_free(&a);
        a = request(NULL, VERSIONS[v], "/health", 0);
        assert_int_equal(a.status, 200);
        answer_free(&a);
        assert_int_equal(stats().faults - before.faults, 1);
    }
    fwp_set_mode(g_proxy, FWP_PASS);
    wait_idle();
}

/* Changing the fault drops open connections; a dead upstream resets the client. */
static void test_switch_and_upstream(void **state)
{
    (void)state;
    CURL *e = curl_easy_init();
    answer a = request(e, CURL_HTTP_VERSION_1_1, "/health", 0);
    assert_int_equal(a.status, 200);
    answer_free(&a);
    assert_int_equal(stats().active, 1);
    fwp_stats before = stats();
    fwp_set_mode(g_proxy, FWP_HTTP_503);
    wait_idle();
    a = request(e, CURL_HTTP_VERSION_1_1, "/health", 0); /* curl reconnects */
    assert_int_equal(a.status, 503);
    answer_free(&a);
    assert_int_equal(stats().connections - before.connections, 1);
    curl_easy_cleanup(e);

    fwp_set_mode(g_proxy, FWP_PASS);
    before = stats();
    fwp_set_upstream(g_proxy, "127.0.0.1", fth_free_port());
    a = request(NULL, CURL_HTTP_VERSION_1_1, "/health", 0);
    assert_int_not_equal(a.rc, CURLE_OK);
    answer_free(&a);
    assert_int_equal(stats().upstream_failures - before.upstream_failures, 1);
    fwp_set_upstream(g_proxy, "127.0.0.1", g_worker->port);
    a = request(NULL, CURL_HTTP_VERSION_1_1, "/health", 0);
    assert_int_equal(a.status, 200);
    answer_free(&a);
    wait_idle();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pass, setup, teardown),
        cmocka_unit_test_setup_teardown(test_canned_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delay_and_stall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_and_upstream, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, suite_teardown);
}
