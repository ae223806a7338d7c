/* Integration: bad input never crashes or wedges the worker. Each bad request gets the
 * documented status with an {"error":{"code","message"}} body, or a per-item error inside a
 * 200 when good items come with it (api.h), and /health stays 200 afterwards. Also: slow
 * clients (half-sent headers or bodies) do not block other requests and are cut off after
 * --read-timeout. The worker runs with --max-body 1MiB --max-images 4
 * --max-image-bytes 200KiB --read-timeout 5s. */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static fwt_worker *g_w;

/* --read-timeout: 5 s, times fwt_time_scale() under valgrind (serving the other clients
 * meanwhile must take less than it) */
#define READ_TIMEOUT_S (5 * fwt_time_scale())

static int setup(void **state)
{
    (void)state;
    char read_timeout[32];
    snprintf(read_timeout, sizeof read_timeout, "%.0fs", READ_TIMEOUT_S);
    const char *const args[] = {
        "--max-body", "1MiB",           "--max-images", "4", "--max-image-bytes",
        "200KiB",     "--read-timeout", read_timeout,   NULL};
    g_w = fwt_worker_start(args);
    return 0;
}

/* After every test: the worker still answers /health with 200. */
static int still_healthy(void **state)
{
    (void)state;
    json_t *h = fwt_wait_healthy(g_w, 10);
    assert_string_equal(json_string_value(json_object_get(h, "status")), "healthy");
    json_decref(h);
    return 0;
}

/* POSTs [sample1, bad] as multipart to /v1/analyze and checks that the good item has its
 * faces and the bad one has a per-item error with the given code. */
static void good_and_bad(const void *bad, size_t bad_len, const char *code, fwt_proto proto)
{
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    fwt_part parts[2] = {{"image", "good.jpg", "image/jpeg", d, len},
                         {"image", "bad.jpg", "image/jpeg", bad, bad_len}};
    fwt_resp r;
    fwt_post_parts(g_w, "/v1/analyze", parts, 2, proto, &r);
    json_t *j = fwt_expect_json(&r, 200);
    json_t *res = json_object_get(j, "results");
    assert_int_equal(json_array_size(res), 2);
    json_t *good = json_array_get(res, 0);
    assert_null(json_object_get(good, "error"));
    assert_int_equal(json_array_size(json_object_get(good, "faces")), 3);
    json_t *b = json_array_get(res, 1);
    assert_int_equal(json_integer_value(json_object_get(b, "index")), 1);
    assert_string_equal(json_string_value(json_object_get(b, "id")), "bad.jpg");
    assert_null(json_object_get(b, "faces"));
    json_t *e = json_object_get(b, "error");
    if (!json_is_object(e) || !json_is_string(json_object_get(e, "code")) ||
        !json_is_string(json_object_get(e, "message")))
        fail_msg("no per-item error object: %.500s", r.body);
    if (strcmp(json_string_value(json_object_get(e, "code")), code) != 0)
        fail_msg("per-item error code \"%s\", expected \"%s\" (%s)",
                 json_string_value(json_object_get(e, "code")), code,
                 json_string_value(json_object_get(e, "message")));
    json_decref(j);
    fwt_resp_free(&r);
}

static void test_empty_image(void **state)
{
    (void)state;
    good_and_bad("", 0, "empty_input", FWT_H1);
    /* alone, and as JSON */
    fwt_part p = {"image", "empty.jpg", "image/jpeg", "", 0};
    fwt_resp r;
    fwt_post_parts(g_w, "/v1/analyze", &p, 1, FWT_H2, &r);
    json_t *j = fwt_expect_json(&r, 200);
    json_t *e = json_object_get(json_array_get(json_object_get(j, "results"), 0), "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "empty_input");
    json_decref(j);
    fwt_resp_free(&r);
    static const char body[] = "{\"images\":[{\"id\":\"e\",\"data\":\"\"}]}";
    fwt_post(g_w, "/v1/detect", "application/json", body, sizeof body - 1, FWT_H1, &r);
    j = fwt_expect_json(&r, 200);
    e = json_object_get(json_array_get(json_object_get(j, "results"), 0), "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "empty_input");
    json_decref(j);
    fwt_resp_free(&r);
}

static void test_truncated_jpeg(void **state)
{
    (void)state;
    size_t len;
    const uint8_t *d = fwt_photo(2, &len);
    good_and_bad(d, len / 2, "corrupt", FWT_H1);
    good_and_bad(d, 300, "corrupt", FWT_H2); /* cut inside the headers */
}

static void test_random_bytes(void **state)
{
    (void)state;
    uint8_t junk[4096];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof junk; i++) {
        x = x * 1103515245u + 12345u;
        junk[i] = (uint8_t)(x >> 16);
    }
    junk[0] = 'Z'; /* not a JPEG, PNG or WebP signature */
    good_and_bad(junk, sizeof junk, "unsupported", FWT_H1);
    /* a JPEG signature followed by junk */
    junk[0] = 0xFF, junk[1] = 0xD8, junk[2] = 0xFF;
    good_and_bad(junk, sizeof junk, "corrupt", FWT_H1);
}

/* CRC-32 (ISO-HDLC, as PNG uses), bitwise. */
static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

static size_t put_chunk(uint8_t *o, const char type[4], const uint8_t *data, uint32_t n)
{
    o[0] = (uint8_t)(n >> 24), o[1] = (uint8_t)(n >> 16), o[2] = (uint8_t)(n >> 8);
    o[3] = (uint8_t)n;
    memcpy(o + 4, type, 4);
    if (n)
        memcpy(o + 8, data, n);
    uint32_t c = crc32_png(o + 4, 4 + n);
    o[8 + n] = (uint8_t)(c >> 24), o[9 + n] = (uint8_t)(c >> 16), o[10 + n] = (uint8_t)(c >> 8);
    o[11 + n] = (uint8_t)c;
    return 12 + n;
}

static void test_png_too_many_pixels(void **state)
{
    (void)state;
    /* the IEND chunk's CRC is well known: checks the CRC routine itself */
    uint8_t iend[12];
    put_chunk(iend, "IEND", NULL, 0);
    static const uint8_t iend_want[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    assert_memory_equal(iend, iend_want, 12);

    uint8_t png[128];
    size_t n = 0;
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    memcpy(png, sig, 8);
    n = 8;
    const uint32_t side = 100000;
    uint8_t ihdr[13] = {(uint8_t)(side >> 24),
                        (uint8_t)(side >> 16),
                        (uint8_t)(side >> 8),
                        (uint8_t)side,
                        (uint8_t)(side >> 24),
                        (uint8_t)(side >> 16),
                        (uint8_t)(side >> 8),
                        (uint8_t)side,
                        8, /* bit depth */
                        2 /* truecolour */,
                        0,
                        0,
                        0};
    n += put_chunk(png + n, "IHDR", ihdr, 13);
    static const uint8_t idat[] = {0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01};
    n += put_chunk(png + n, "IDAT", idat, sizeof idat);
    n += put_chunk(png + n, "IEND", NULL, 0);
    good_and_bad(png, n, "too_many_pixels", FWT_H1);
}

static void test_image_over_max_image_bytes(void **state)
{
    (void)state;
    size_t len;
    const uint8_t *big = fwt_photo(6, &len); /* 302 KB > 200 KiB: per-item, not 413 */
    assert_true(len > 200 * 1024);
    good_and_bad(big, len, "too_large", FWT_H1);
}

static void test_invalid_base64(void **state)
{
    (void)state;
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    char *b64 = fwt_b64_encode(d, len);
    size_t cap = strlen(b64) + 256;
    char *body = malloc(cap);
    assert_non_null(body);
    snprintf(body, cap,
             "{\"images\":[{\"id\":\"ok\",\"data\":\"%s\"},{\"id\":\"bad\",\"data\":\"@@not"
             " base64!!\"}]}",
             b64);
    fwt_resp r;
    fwt_post(g_w, "/v1/analyze", "application/json", body, strlen(body), FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    json_t *res = json_object_get(j, "results");
    assert_int_equal(json_array_size(res), 2);
    assert_int_equal(json_array_size(json_object_get(json_array_get(res, 0), "faces")), 3);
    json_t *e = json_object_get(json_array_get(res, 1), "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "corrupt");
    assert_string_equal(json_string_value(json_object_get(json_array_get(res, 1), "id")), "bad");
    json_decref(j);
    fwt_resp_free(&r);
    free(body);
    free(b64);
}

static void test_wrong_content_type(void **state)
{
    (void)state;
    fwt_resp r;
    fwt_post(g_w, "/v1/analyze", "text/plain", "hello", 5, FWT_H1, &r);
    fwt_expect_error(&r, 415, "unsupported");
    fwt_resp_free(&r);
    fwt_post(g_w, "/v1/embed", "image/jpeg", "\xff\xd8\xff", 3, FWT_H2, &r);
    fwt_expect_error(&r, 415, "unsupported");
    fwt_resp_free(&r);
}

static void test_malformed_multipart(void **state)
{
    (void)state;
    fwt_resp r;
    static const char part[] = "--XyZ\r\nContent-Disposition: form-data; name=\"image\"; "
                               "filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\nabc\r\n"
                               "--XyZ--\r\n";
    /* no boundary parameter */
    fwt_post(g_w, "/v1/analyze", "multipart/form-data", part, sizeof part - 1, FWT_H1, &r);
    fwt_expect_error(&r, 400, "parse_error");
    fwt_resp_free(&r);
    /* an unterminated part: the body ends inside it */
    static const char open_part[] = "--XyZ\r\nContent-Disposition: form-data; name=\"image\"; "
                                    "filename=\"a.jpg\"\r\n\r\n\xff\xd8\xff\xe0 and then nothing";
    fwt_post(g_w, "/v1/analyze", "multipart/form-data; boundary=XyZ", open_part,
             sizeof open_part - 1, FWT_H1, &r);
    fwt_expect_error(&r, 400, "parse_error");
    fwt_resp_free(&r);
    /* headers of a part never end */
    static const char open_headers[] = "--XyZ\r\nContent-Disposition: form-data; name=\"image\"";
    fwt_post(g_w, "/v1/analyze", "multipart/form-data; boundary=XyZ", open_headers,
             sizeof open_headers - 1, FWT_H2, &r);
    fwt_expect_error(&r, 400, "parse_error");
    fwt_resp_free(&r);
    /* a well-formed multipart body with no image part at all */
    static const char no_image[] = "--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n"
                                   "\r\nvalue\r\n--XyZ--\r\n";
    fwt_post(g_w, "/v1/analyze", "multipart/form-data; boundary=XyZ", no_image, sizeof no_image - 1,
             FWT_H1, &r);
    fwt_expect_error(&r, 400, "parse_error");
    fwt_resp_free(&r);
    /* a filename (the item id) of 300 bytes */
    char name[301];
    memset(name, 'n', 300);
    name[300] = '\0';
    fwt_part p = {"image", name, "image/jpeg", "\xff\xd8\xff", 3};
    fwt_post_parts(g_w, "/v1/analyze", &p, 1, FWT_H1, &r);
    fwt_expect_error(&r, 400, "parse_error");
    fwt_resp_free(&r);
}

static void test_invalid_json(void **state)
{
    (void)state;
    const char *bodies[] = {
        "{\"images\":[{\"data\":\"abc\"}", /* truncated */
        "not json",                        /* not JSON */
        "[1,2,3]",                         /* not an object */
        "{\"images\":[]}",                 /* no images */
        "{\"images\":[{\"id\":\"x\"}]}",   /* an item without data */
        "{\"images\":[{\"data\":\"AAAA\"}],\"options\":{\"min_score\":\"high\"}}", /* type */
        "{\"images\":[{\"data\":\"AAAA\"}],\"options\":{\"embedding_format\":\"f64\"}}",
        "{\"images\":\"AAAA\"}",
        "{\"images\":[\"AAAA\"]}",                       /* an item that is not an object */
        "{\"images\":[{\"id\":[1],\"data\":\"AAAA\"}]}", /* an id of the wrong type */
        NULL,                                            /* an id of 300 bytes: built below */
    };
    char long_id[512];
    snprintf(long_id, sizeof long_id, "{\"images\":[{\"id\":\"%0300d\",\"data\":\"AAAA\"}]}", 7);
    bodies[sizeof bodies / sizeof bodies[0] - 1] = long_id;
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        fwt_resp r;
        fwt_post(g_w, "/v1/analyze", "application/json", bodies[i], strlen(bodies[i]),
                 i % 2 ? FWT_H2 : FWT_H1, &r);
        if (r.status != 400)
            fail_msg("body %s: status %ld (%.300s)", bodies[i], r.status, r.body);
        fwt_expect_error(&r, 400, "parse_error");
        fwt_resp_free(&r);
    }
}

static void test_body_over_limit(void **state)
{
    (void)state;
    size_t n = 2u * 1024 * 1024;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, 'A', n);
    memcpy(big, "{\"images\":[{\"data\":\"", 20);
    char url[256];
    snprintf(url, sizeof url, "%s/v1/analyze", g_w->url);
    /* with curl's default "Expect: 100-continue", and without it (body sent at once) */
    static const char *const no_expect[] = {"Expect:", NULL};
    for (int variant = 0; variant < 2; variant++) {
        fwt_req rq = {.method = "POST",
                      .url = url,
                      .body = big,
                      .body_len = n,
                      .content_type = "application/json",
                      .headers = variant ? no_expect : NULL,
                      .proto = FWT_H1};
        fwt_resp r;
        fwt_http(&rq, &r);
        if (r.status != 413)
            fail_msg("2 MiB body (variant %d): status %ld, curl: %s", variant, r.status, r.error);
        fwt_expect_error(&r, 413, "too_large");
        fwt_resp_free(&r);
    }
    /* a chunked body passing the limit is cut off with 413 as well */
    static const char *const chunked[] = {"Transfer-Encoding: chunked", "Expect:", NULL};
    fwt_req rq = {.method = "POST",
                  .url = url,
                  .body = big,
                  .body_len = n,
                  .content_type = "application/json",
                  .headers = chunked,
                  .proto = FWT_H1};
    fwt_resp r;
    fwt_http(&rq, &r);
    if (r.status != 413)
        fail_msg("2 MiB chunked body: status %ld, curl: %s", r.status, r.error);
    fwt_expect_error(&r, 413, "too_large");
    fwt_resp_free(&r);
    /* HTTP/2: libh2o 2.2 resets the stream instead (http.h); never a success or a 5xx */
    rq.headers = NULL;
    rq.proto = FWT_H2;
    fwt_http(&rq, &r);
    if (r.status == 413)
        fwt_expect_error(&r, 413, "too_large");
    else if (r.status != 0)
        fail_msg("2 MiB body over HTTP/2: status %ld", r.status);
    fwt_resp_free(&r);
    free(big);
}

static void test_too_many_images(void **state)
{
    (void)state;
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    fwt_part parts[5];
    for (size_t i = 0; i < 5; i++)
        parts[i] = (fwt_part){"image", "a.jpg", "image/jpeg", d, len};
    fwt_resp r;
    fwt_post_parts(g_w, "/v1/detect", parts, 5, FWT_H1, &r);
    fwt_expect_error(&r, 413, "too_large");
    fwt_resp_free(&r);
    /* the limit itself is fine */
    fwt_post_parts(g_w, "/v1/detect", parts, 4, FWT_H1, &r);
    json_t *j = fwt_expect_json(&r, 200);
    assert_int_equal(json_array_size(json_object_get(j, "results")), 4);
    json_decref(j);
    fwt_resp_free(&r);
    /* legacy multipart and JSON routes count the same way */
    for (size_t i = 0; i < 5; i++)
        parts[i].name = "images";
    fwt_part lp[6];
    memcpy(lp, parts, sizeof parts);
    lp[5] = (fwt_part){"image_hashes", NULL, NULL,
                       "[{\"phash\":\"a\",\"index\":0},{\"phash\":\"b\",\"index\":1},"
                       "{\"phash\":\"c\",\"index\":2},{\"phash\":\"d\",\"index\":3},"
                       "{\"phash\":\"e\",\"index\":4}]",
                       (size_t)-1};
    fwt_post_parts(g_w, "/detect_faces_batch_multipart", lp, 6, FWT_H1, &r);
    fwt_expect_error(&r, 413, "too_large");
    fwt_resp_free(&r);
    static const char five[] = "{\"images\":[{\"data\":\"AAAA\"},{\"data\":\"AAAA\"},"
                               "{\"data\":\"AAAA\"},{\"data\":\"AAAA\"},{\"data\":\"AAAA\"}]}";
    fwt_post(g_w, "/detect_faces_batch", "application/json", five, sizeof five - 1, FWT_H2, &r);
    fwt_expect_error(&r, 413, "too_large");
    fwt_resp_free(&r);
}

static void test_image_hashes_count_mismatch(void **state)
{
    (void)state;
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    fwt_part parts[3] = {
        {"images", "a.jpg", "image/jpeg", d, len},
        {"images", "b.jpg", "image/jpeg", d, len},
        {"image_hashes", NULL, NULL, "[{\"phash\":\"a\",\"index\":0}]", (size_t)-1}};
    fwt_resp r;
    fwt_post_parts(g_w, "/detect_faces_batch_multipart", parts, 3, FWT_H1, &r);
    fwt_expect_error(&r, 400, "parse_error");
    fwt_resp_free(&r);
}

/* True when the server has closed fd (or answered and closed) within timeout_s. */
static bool closed_by_server(int fd, double timeout_s)
{
    double deadline = fwt_now() + timeout_s;
    char buf[4096];
    for (;;) {
        int left = (int)((deadline - fwt_now()) * 1000);
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rc = poll(&p, 1, left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return false;
        ssize_t got = recv(fd, buf, sizeof buf, 0);
        if (got == 0 || (got < 0 && errno == ECONNRESET))
            return true;
        if (got < 0)
            return false;
        /* an early answer (e.g. 408) may come first; keep reading until EOF */
    }
}

static bool still_open(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 0; /* nothing to read, no hang-up */
}

static void test_slow_clients_do_not_block(void **state)
{
    (void)state;
    enum { N_SLOW = 12 };
    int fds[N_SLOW];
    static const char half_headers[] = "POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nConte";
    static const char half_body[] = "POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    "Content-Type: application/json\r\nContent-Length: 1000\r\n"
                                    "\r\n{\"images\":[";
    double t0 = fwt_now();
    for (int i = 0; i < N_SLOW; i++) {
        fds[i] = fwt_connect(g_w->port);
        if (fds[i] < 0)
            fail_msg("connect: %s", strerror(errno));
        const char *s = i % 2 ? half_body : half_headers;
        size_t n = strlen(s);
        assert_int_equal(send(fds[i], s, n, MSG_NOSIGNAL), (ssize_t)n);
    }
    /* other clients are served meanwhile, over both protocols */
    size_t len;
    const uint8_t *d = fwt_photo(1, &len);
    fwt_part p = {"image", "a.jpg", "image/jpeg", d, len};
    for (int proto = FWT_H1; proto <= FWT_H2; proto++) {
        fwt_resp r;
        fwt_post_parts(g_w, "/v1/analyze", &p, 1, (fwt_proto)proto, &r);
        json_t *j = fwt_expect_json(&r, 200);
        assert_int_equal(json_array_size(json_object_get(
                             json_array_get(json_object_get(j, "results"), 0), "faces")),
                         3);
        json_decref(j);
        fwt_resp_free(&r);
        fwt_get(g_w, "/health", (fwt_proto)proto, &r);
        json_decref(fwt_expect_json(&r, 200));
        fwt_resp_free(&r);
    }
    /* ... while the slow connections were still being waited for (not cut off first) */
    double served = fwt_now() - t0;
    for (int i = 0; i < N_SLOW; i++)
        if (!still_open(fds[i]))
            fail_msg("slow connection %d was closed before the others were served (%.2f s)", i,
                     served);
    /* and the slow ones are cut off once --read-timeout passes */
    for (int i = 0; i < N_SLOW; i++) {
        if (!closed_by_server(fds[i], READ_TIMEOUT_S + 15))
            fail_msg("slow connection %d still open %.1f s after it started", i, fwt_now() - t0);
        close(fds[i]);
    }
    assert_true(fwt_now() - t0 >= READ_TIMEOUT_S * 0.9);
}

/* Requests the HTTP parser cannot make sense of: a 400 and a closed connection. (libh2o 2.2
 * answers these itself with a fixed text/plain body, so only the status is checked.) */
static void test_unparseable_requests(void **state)
{
    (void)state;
    static const char *const reqs[] = {
        "\x01\x02\x03 garbage\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        "POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "POST /v1/analyze HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        int fd = fwt_connect(g_w->port);
        assert_true(fd >= 0);
        size_t n = strlen(reqs[i]);
        assert_int_equal(send(fd, reqs[i], n, MSG_NOSIGNAL), (ssize_t)n);
        char buf[2048];
        size_t got = 0;
        double deadline = fwt_now() + 10 * fwt_time_scale();
        for (;;) { /* read until the server closes */
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (poll(&p, 1, 1000) == 1) {
                ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            if (fwt_now() > deadline)
                fail_msg("request %zu: connection not closed within 10 s", i);
            if (got >= sizeof buf - 1)
                break;
        }
        buf[got] = '\0';
        close(fd);
        if (strncmp(buf, "HTTP/1.1 400 ", 13) != 0)
            fail_msg("request %zu: expected a 400, got: %.200s", i, buf);
    }
}

static void test_shutdown_clean(void **state)
{
    (void)state;
    assert_int_equal(fwt_worker_stop(g_w, SIGTERM, 40), 0);
}

#define T(f) cmocka_unit_test_teardown(f, still_healthy)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_empty_image),
        T(test_truncated_jpeg),
        T(test_random_bytes),
        T(test_png_too_many_pixels),
        T(test_image_over_max_image_bytes),
        T(test_invalid_base64),
        T(test_wrong_content_type),
        T(test_malformed_multipart),
        T(test_invalid_json),
        T(test_body_over_limit),
        T(test_too_many_images),
        T(test_image_hashes_count_mismatch),
        T(test_slow_clients_do_not_block),
        T(test_unparseable_requests),
        cmocka_unit_test(test_shutdown_clean),
    };
    return cmocka_run_group_tests(tests, setup, fwt_teardown);
}
