/* Integration: the worker's life cycle.
 *  - SIGTERM while requests are in flight: every request the server had accepted completes
 *    with 200, new connections are refused from then on, /health on an open keep-alive
 *    connection says "draining" (503, Connection: close), and the process exits 0.
 *  - One worker per lock file: a second instance exits non-zero within seconds, naming the
 *    holder's pid; the lock goes away with its holder, even after SIGKILL.
 *  - --supervise: SIGKILL of the child brings a new child (another pid) on the same port;
 *    SIGTERM to the supervisor ends everything with exit 0.
 *  - start-up: /health says "loading" (503) until the models are loaded, inference answers
 *    503 with Retry-After meanwhile; --supervise refuses a port-0 listener.
 *  - --request-timeout: a request not answered in time gets 503 "timeout"; clients that go
 *    away early do no harm; the late answers are dropped and the worker drains cleanly. */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------- */
/* drain                                                                                    */

/* 16 images per request keep it running for seconds at native speed; under a slow wrapper
 * (fwt_reduced) 2 already take minutes, and 48 would outlast the scaled drain timeout. */
enum { N_SLOW = 3, N_IMAGES = 16, N_IMAGES_REDUCED = 2 };

typedef struct inflight {
    fwt_part parts[N_IMAGES];
    char names[N_IMAGES][32];
    fwt_xfer *x;
    fwt_resp resp;
    bool done;
} inflight;

/* One curl_multi_perform round plus collection of finished transfers; returns how many are
 * still running. */
static int pump(CURLM *m, inflight *fl, size_t n, int wait_ms)
{
    int running = 0;
    assert_int_equal(curl_multi_perform(m, &running), CURLM_OK);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        for (size_t i = 0; i < n; i++)
            if (fwt_xfer_easy(fl[i].x) == msg->easy_handle) {
                fwt_xfer_finish(fl[i].x, msg->data.result, &fl[i].resp);
                fl[i].done = true;
            }
    }
    if (running && wait_ms > 0)
        assert_int_equal(curl_multi_poll(m, NULL, 0, wait_ms, NULL), CURLM_OK);
    return running;
}

static bool uploads_done(inflight *fl, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        curl_off_t sent = 0, total = -1;
        curl_easy_getinfo(fwt_xfer_easy(fl[i].x), CURLINFO_SIZE_UPLOAD_T, &sent);
        curl_easy_getinfo(fwt_xfer_easy(fl[i].x), CURLINFO_CONTENT_LENGTH_UPLOAD_T, &total);
        if (!fl[i].done && (total <= 0 || sent < total))
            return false;
    }
    return true;
}

static double inflight_gauge(const fwt_worker *w)
{
    fwt_resp r;
    fwt_get(w, "/metrics", FWT_H1, &r);
    double v = -1;
    if (r.status != 200 || !fwt_metric(r.body, "facework_http_inflight", &v))
        v = -1;
    fwt_resp_free(&r);
    return v;
}

/* One GET /health on an open HTTP/1.1 connection: the status, and whether the body says
 * `want_status` and the response says "Connection: close" (*closing). -1 on I/O failure. */
static int raw_health(int fd, const char *want_status, bool *closing)
{
    static const char req[] = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1))
        return -1;
    char buf[8192];
    size_t n = 0;
    const char *body = NULL;
    long clen = -1;
    double deadline = fwt_now() + 10 * fwt_time_scale();
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 1000) == 1) {
            ssize_t got = recv(fd, buf + n, sizeof buf - 1 - n, 0);
            if (got <= 0)
                return -1;
            n += (size_t)got;
            buf[n] = '\0';
        }
        const char *eoh = strstr(buf, "\r\n\r\n");
        if (eoh && clen < 0) {
            const char *cl = strcasestr(buf, "\r\ncontent-length:");
            if (!cl || cl > eoh)
                return -1;
            clen = strtol(cl + 17, NULL, 10);
            body = eoh + 4;
        }
        if (body && (long)(n - (size_t)(body - buf)) >= clen)
            break;
        if (fwt_now() > deadline || n >= sizeof buf - 1)
            return -1;
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
        return -1;
    char want[64];
    snprintf(want, sizeof want, "\"status\":\"%s\"", want_status);
    if (!strstr(body, want))
        return -2;
    const char *conn = strcasestr(buf, "\r\nconnection:");
    *closing = conn && conn < body && !strncasecmp(conn + 13, " close", 6);
    return status;
}

static void test_sigterm_drains_inflight(void **state)
{
    (void)state;
    fwt_worker *w = fwt_worker_start(NULL);
    char url[256];
    snprintf(url, sizeof url, "%s/v1/analyze", w->url);
    static inflight fl[N_SLOW];
    memset(fl, 0, sizeof fl);
    const size_t n_images = fwt_reduced() ? N_IMAGES_REDUCED : N_IMAGES;
    CURLM *m = curl_multi_init();
    assert_non_null(m);
    for (size_t i = 0; i < N_SLOW; i++) {
        for (size_t k = 0; k < n_images; k++) {
            size_t len;
            const uint8_t *d = fwt_photo((int)((i + k) % 6) + 1, &len);
            snprintf(fl[i].names[k], sizeof fl[i].names[k], "i%zu.jpg", k);
            fl[i].parts[k] = (fwt_part){"image", fl[i].names[k], "image/jpeg", d, len};
        }
        /* two over HTTP/1.1, one over HTTP/2 */
        fwt_req rq = {.url = url,
                      .parts = fl[i].parts,
                      .n_parts = n_images,
                      .proto = i == N_SLOW - 1 ? FWT_H2 : FWT_H1};
        fl[i].x = fwt_xfer_new(&rq);
        assert_non_null(fl[i].x);
        assert_int_equal(curl_multi_add_handle(m, fwt_xfer_easy(fl[i].x)), CURLM_OK);
    }
    /* send the requests entirely ... */
    double deadline = fwt_now() + 30 * fwt_time_scale();
    while (!uploads_done(fl, N_SLOW)) {
        pump(m, fl, N_SLOW, 50);
        if (fwt_now() > deadline)
            fail_msg("the requests were not uploaded within %.0f s", 30 * fwt_time_scale());
    }
    /* ... and wait until the worker has accepted all of them (the /metrics request itself
     * is in flight too while it is answered) */
    deadline = fwt_now() + 30 * fwt_time_scale();
    double g;
    while ((g = inflight_gauge(w)) < N_SLOW + 1) {
        int done = 0;
        for (size_t i = 0; i < N_SLOW; i++)
            done += fl[i].done;
        if (done)
            fail_msg("a request finished before SIGTERM could be sent (inflight %.0f): "
                     "make the requests slower",
                     g);
        if (fwt_now() > deadline)
            fail_msg("the worker never had %d requests in flight (last %.0f)", N_SLOW, g);
        pump(m, fl, N_SLOW, 5);
    }
    /* an idle keep-alive connection, opened before the signal */
    int ka = fwt_connect(w->port);
    assert_true(ka >= 0);
    bool closing = true;
    assert_int_equal(raw_health(ka, "healthy", &closing), 200);
    assert_false(closing);
    assert_int_equal(kill(w->pid, SIGTERM), 0);

    /* new connections are refused from now on, while the accepted requests still run */
    deadline = fwt_now() + 10 * fwt_time_scale();
    bool refused = false;
    while (!refused) {
        int fd = fwt_connect(w->port);
        if (fd < 0 && errno == ECONNREFUSED)
            refused = true;
        else if (fd >= 0)
            close(fd);
        if (fwt_now() > deadline)
            fail_msg("connections still accepted 10 s after SIGTERM");
        pump(m, fl, N_SLOW, refused ? 0 : 5);
    }
    /* /health on the old connection says "draining" with 503 and closes the connection */
    int hs = raw_health(ka, "draining", &closing);
    if (hs != 503 || !closing)
        fail_msg("/health while draining: status %d (-2: not \"draining\"), closing %d", hs,
                 closing);
    close(ka);
    int done_when_refused = 0;
    for (size_t i = 0; i < N_SLOW; i++)
        done_when_refused += fl[i].done;
    assert_true(done_when_refused < N_SLOW);

    /* every accepted request completes with its full answer */
    deadline = fwt_now() + 60 * fwt_time_scale();
    while (pump(m, fl, N_SLOW, 100) > 0)
        if (fwt_now() > deadline)
            fail_msg("in-flight requests not finished within %.0f s of SIGTERM",
                     60 * fwt_time_scale());
    pump(m, fl, N_SLOW, 0);
    for (size_t i = 0; i < N_SLOW; i++) {
        assert_true(fl[i].done);
        json_t *j = fwt_expect_json(&fl[i].resp, 200);
        json_t *res = json_object_get(j, "results");
        assert_int_equal(json_array_size(res), n_images);
        for (size_t k = 0; k < n_images; k++) {
            json_t *it = json_array_get(res, k);
            assert_null(json_object_get(it, "error"));
            assert_int_equal(json_array_size(json_object_get(it, "faces")),
                             fwt_photo_faces[(i + k) % 6 + 1]);
        }
        json_decref(j);
        curl_multi_remove_handle(m, fwt_xfer_easy(fl[i].x));
        fwt_resp_free(&fl[i].resp);
        fwt_xfer_free(fl[i].x);
    }
    curl_multi_cleanup(m);
    /* and the process exits 0 (signal 0: no new signal, just wait) */
    assert_int_equal(fwt_worker_stop(w, 0, 40), 0);
    fwt_worker_free(w);
}

/* ---------------------------------------------------------------------------------------- */
/* lock file                                                                                */

static void test_second_instance_refused(void **state)
{
    (void)state;
    char dir[] = "/tmp/fwt-lock-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char lock[256];
    snprintf(lock, sizeof lock, "%s/worker.lock", dir);

    fwt_worker_opts o1 = {.lock_file = lock};
    fwt_worker *w1 = fwt_worker_start_opts(&o1);

    fwt_worker_opts o2 = {.lock_file = lock, .no_wait = true};
    fwt_worker *w2 = fwt_worker_start_opts(&o2);
    double t0 = fwt_now();
    if (!fwt_worker_wait_exit(w2, 10)) {
        fwt_worker_print_log(w2, "second instance still running");
        fail_msg("the second instance did not exit within 10 s");
    }
    print_message("second instance exited after %.2f s\n", fwt_now() - t0);
    assert_int_not_equal(fwt_exit_code(w2->wstatus), 0);
    char *log = fwt_worker_log(w2);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)w1->pid);
    if (!strstr(log, pid))
        fail_msg("the second instance's stderr does not name the holder (\"%s\"):\n%s", pid, log);
    free(log);
    /* it never served: no port file */
    assert_int_not_equal(access(w2->port_file, F_OK), 0);
    fwt_worker_free(w2);
    /* the first one is unaffected */
    json_decref(fwt_wait_healthy(w1, 5));
    assert_int_equal(fwt_worker_stop(w1, SIGTERM, 40), 0);
    fwt_worker_free(w1);

    /* the lock goes away with its holder: a clean exit, and a SIGKILL */
    fwt_worker *w3 = fwt_worker_start_opts(&o1);
    assert_int_equal(fwt_worker_stop(w3, SIGKILL, 10), 128 + SIGKILL);
    fwt_worker_free(w3);
    fwt_worker *w4 = fwt_worker_start_opts(&o1);
    assert_int_equal(fwt_worker_stop(w4, SIGINT, 40), 0); /* SIGINT drains like SIGTERM */
    fwt_worker_free(w4);
    unlink(lock);
    rmdir(dir);
}

/* ---------------------------------------------------------------------------------------- */
/* supervise                                                                                */

static long health_pid(const fwt_worker *w, json_t **out)
{
    json_t *h = fwt_wait_healthy(w, 60);
    json_t *p = json_object_get(h, "pid");
    assert_true(json_is_integer(p));
    long pid = (long)json_integer_value(p);
    if (out)
        *out = h;
    else
        json_decref(h);
    return pid;
}

static void test_supervise_restarts_child(void **state)
{
    (void)state;
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", fwt_free_port());
    static const char *const args[] = {"--supervise", NULL};
    fwt_worker_opts o = {.args = args, .listen = listen};
    fwt_worker *sup = fwt_worker_start_opts(&o);
    long p1 = health_pid(sup, NULL);
    assert_true(p1 > 0);
    assert_int_not_equal(p1, sup->pid); /* /health is answered by the child */
    fwt_track_foreign_pid((pid_t)p1);

    assert_int_equal(kill((pid_t)p1, SIGKILL), 0);
    /* a new child comes up on the same address */
    double deadline = fwt_now() + 60 * fwt_time_scale();
    long p2 = 0;
    for (;;) {
        fwt_resp r;
        fwt_get(sup, "/health", FWT_H1, &r);
        if (r.status == 200) {
            json_t *h = fwt_expect_json(&r, 200);
            p2 = (long)json_integer_value(json_object_get(h, "pid"));
            json_decref(h);
        }
        fwt_resp_free(&r);
        if (p2 && p2 != p1)
            break;
        if (fwt_worker_exited(sup))
            break;
        if (fwt_now() > deadline) {
            fwt_worker_print_log(sup, "no restart");
            fail_msg("no new child answered /health within 60 s of killing pid %ld", p1);
        }
        fwt_pause_ms(50);
    }
    if (sup->exited) {
        fwt_worker_print_log(sup, "supervisor died");
        fail_msg("the supervisor exited (status %d) instead of restarting the child",
                 fwt_exit_code(sup->wstatus));
    }
    fwt_track_foreign_pid((pid_t)p2);
    assert_int_not_equal(p2, sup->pid);
    /* the new child serves inference too */
    size_t len;
    const uint8_t *d = fwt_photo(3, &len);
    fwt_part part = {"image", "s3.jpg", "image/jpeg", d, len};
    fwt_resp r;
    fwt_post_parts(sup, "/v1/detect", &part, 1, FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    assert_int_equal(
        json_array_size(json_object_get(json_array_get(json_object_get(j, "results"), 0), "faces")),
        3);
    json_decref(j);
    fwt_resp_free(&r);

    /* SIGTERM to the supervisor: the child drains, everything exits 0 */
    assert_int_equal(fwt_worker_stop(sup, SIGTERM, 60), 0);
    assert_int_equal(kill((pid_t)p2, 0), -1);
    assert_int_equal(errno, ESRCH);
    fwt_worker_free(sup);
}

/* ---------------------------------------------------------------------------------------- */
/* start-up                                                                                 */

/* While the worker starts, every answer is consistent: /health 503 "loading" with
 * model_loaded false, inference 503 with Retry-After; then /health 200. Whether the loading
 * state is seen at all depends on timing (the models load in well under a second). */
static void test_startup_states(void **state)
{
    (void)state;
    char listen[64];
    int port = fwt_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    fwt_worker_opts o = {.listen = listen, .no_wait = true};
    fwt_worker *w = fwt_worker_start_opts(&o);
    snprintf(w->url, sizeof w->url, "http://%s", listen);
    w->port = port;
    int loading_seen = 0, refused = 0;
    double deadline = fwt_now() + 60 * fwt_time_scale();
    for (;;) {
        fwt_resp r;
        fwt_get(w, "/health", FWT_H1, &r);
        if (r.status == 200) {
            json_t *h = fwt_expect_json(&r, 200);
            assert_string_equal(json_string_value(json_object_get(h, "status")), "healthy");
            assert_true(json_is_true(json_object_get(h, "model_loaded")));
            json_decref(h);
            fwt_resp_free(&r);
            break;
        }
        if (r.status == 503) {
            json_t *h = fwt_expect_json(&r, 503);
            assert_string_equal(json_string_value(json_object_get(h, "status")), "loading");
            assert_true(json_is_false(json_object_get(h, "model_loaded")));
            json_decref(h);
            loading_seen++;
            fwt_resp rr;
            static const char body[] = "{\"images\":[{\"data\":\"AAAA\"}]}";
            fwt_post(w, "/v1/detect", "application/json", body, sizeof body - 1, FWT_H1, &rr);
            if (rr.status != 200) { /* it may have become ready in between */
                fwt_expect_error(&rr, 503, "unavailable");
                assert_true(atoi(rr.retry_after) >= 1);
            }
            fwt_resp_free(&rr);
        } else if (r.status == 0) {
            refused++; /* not listening yet */
        } else {
            fail_msg("/health during start-up: status %ld: %s", r.status, r.body);
        }
        fwt_resp_free(&r);
        if (fwt_worker_exited(w)) {
            fwt_worker_print_log(w, "died while starting");
            fail_msg("the worker exited while starting");
        }
        if (fwt_now() > deadline)
            fail_msg("the worker was not ready within %.0f s", 60 * fwt_time_scale());
        fwt_pause_ms(5);
    }
    print_message("start-up: %d refused, %d loading answers before ready\n", refused, loading_seen);
    assert_int_equal(fwt_worker_stop(w, SIGTERM, 40), 0);
    fwt_worker_free(w);

    /* --supervise needs a fixed port (it probes the child's /health there) */
    static const char *const args[] = {"--supervise", NULL};
    fwt_worker_opts so = {.args = args, .no_wait = true};
    fwt_worker *s = fwt_worker_start_opts(&so);
    assert_true(fwt_worker_wait_exit(s, 10));
    assert_int_equal(fwt_exit_code(s->wstatus), 2);
    char *log = fwt_worker_log(s);
    if (!strstr(log, "fixed port"))
        fail_msg("no reason given: %s", log);
    free(log);
    fwt_worker_free(s);
}

/* ---------------------------------------------------------------------------------------- */
/* request timeout, clients that go away                                                    */

static void test_request_timeout_and_gone_clients(void **state)
{
    (void)state;
    /* A lone request runs at once (the batcher waits for a batch only while more work is on
     * its way), so the requests here are made slow: 64 images, decoded one at a time and
     * only once the previous one has left the detector (one decode thread, a decoded-image
     * bound smaller than one photo). That is about 0.8 s for /v1/detect and 3 s for
     * /v1/analyze on a 2-core CPU, longer than the 1 s request timeout and the clients'
     * 300 ms. Under a slow wrapper all three clocks stretch by fwt_time_scale(): the work
     * slows down far more (valgrind: minutes per request). */
    const double scale = fwt_time_scale();
    char timeout[32];
    snprintf(timeout, sizeof timeout, "%.0fms", 1000 * scale);
    const char *const args[] = {"--request-timeout",
                                timeout,
                                "--decode-threads",
                                "1",
                                "--max-decoded-mb",
                                "1",
                                "--http-threads",
                                "2",
                                NULL};
    fwt_worker *w = fwt_worker_start(args);
    size_t len;
    const uint8_t *d = fwt_photo(4, &len);
    enum { N_MANY = 64 };
    fwt_part p[N_MANY];
    for (int i = 0; i < N_MANY; i++)
        p[i] = (fwt_part){"image", "a.jpg", "image/jpeg", d, len};
    for (int proto = FWT_H1; proto <= FWT_H2; proto++) {
        fwt_resp r;
        double t0 = fwt_now();
        fwt_post_parts(w, "/v1/analyze", p, N_MANY, (fwt_proto)proto, &r);
        fwt_expect_error(&r, 503, "timeout");
        /* answered at the timeout, not after the work */
        assert_true(fwt_now() - t0 < 4.5 * scale);
        fwt_resp_free(&r);
    }
    /* clients that give up before their answer (curl timeout 300 ms, scaled) */
    char url[256];
    snprintf(url, sizeof url, "%s/v1/detect", w->url);
    for (int proto = FWT_H1; proto <= FWT_H2; proto++) {
        fwt_req rq = {.url = url,
                      .parts = p,
                      .n_parts = N_MANY,
                      .proto = (fwt_proto)proto,
                      .timeout_ms = (long)(300 * scale)};
        fwt_resp r;
        fwt_http(&rq, &r);
        assert_true(r.status < 200); /* no answer (HTTP/1.1: at most "100 Continue") */
        assert_int_equal(r.rc, CURLE_OPERATION_TIMEDOUT);
        fwt_resp_free(&r);
    }
    /* the late results are dropped without harm; the worker keeps serving */
    json_t *h = fwt_wait_healthy(w, 10);
    json_decref(h);
    fwt_resp r;
    fwt_get(w, "/metrics", FWT_H2, &r);
    double v = 0;
    assert_true(fwt_metric(r.body,
                           "facework_http_requests_total{route=\"/v1/analyze\","
                           "status=\"503\"}",
                           &v));
    assert_int_equal((int)v, 2);
    fwt_resp_free(&r);
    /* SIGTERM with abandoned work still queued: drains and exits 0 */
    assert_int_equal(fwt_worker_stop(w, SIGTERM, 60), 0);
    fwt_worker_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sigterm_drains_inflight, fwt_teardown),
        cmocka_unit_test_teardown(test_second_instance_refused, fwt_teardown),
        cmocka_unit_test_teardown(test_supervise_restarts_child, fwt_teardown),
        cmocka_unit_test_teardown(test_request_timeout_and_gone_clients, fwt_teardown),
        cmocka_unit_test_teardown(test_startup_states, fwt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, fwt_teardown);
}
