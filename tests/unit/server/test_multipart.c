/* Unit tests for server/multipart: bodies exactly as curl 7.88 and Python requests (urllib3)
 * write them, boundary extraction (quoted, case, parameter order, invalid ones), preamble and
 * epilogue, transport padding, header variants (bare LF, case, escapes, unquoted values),
 * binary data holding CRLF and partial boundaries, and every error: missing boundary, no
 * parts, unterminated part, missing closing boundary, header line too long, headers too
 * large, too many parts, missing Content-Disposition or name. Plus a large adversarial body
 * that a quadratic scanner could not finish. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/multipart.h"

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                              */

static fw_multipart *parse_ok(const char *ct, const void *body, size_t len)
{
    fw_multipart *mp = NULL;
    fw_error err = {0};
    fw_err rc = fw_multipart_parse(ct, body, len, NULL, &mp, &err);
    if (rc)
        fail_msg("parse failed: %s", err.message);
    assert_non_null(mp);
    return mp;
}

static void parse_fails(const char *ct, const void *body, size_t len,
                        const fw_multipart_limits *lim, fw_err code, const char *msg_part)
{
    fw_multipart *mp = (fw_multipart *)0x1;
    fw_error err = {0};
    fw_err rc = fw_multipart_parse(ct, body, len, lim, &mp, &err);
    if (rc == FW_OK)
        fail_msg("parse succeeded, expected \"%s\"", msg_part);
    assert_null(mp);
    assert_int_equal(rc, code);
    assert_int_equal(err.code, code);
    if (msg_part && !strstr(err.message, msg_part))
        fail_msg("message \"%s\" lacks \"%s\"", err.message, msg_part);
}

static void assert_part(const fw_multipart_part *p, const char *name, const char *filename,
                        const char *ctype, const void *data, size_t len)
{
    assert_string_equal(p->name, name);
    if (filename)
        assert_string_equal(p->filename, filename);
    else
        assert_null(p->filename);
    if (ctype)
        assert_string_equal(p->content_type, ctype);
    else
        assert_null(p->content_type);
    assert_int_equal(p->len, len);
    assert_memory_equal(p->data, data, len);
}

#define S(lit) lit, sizeof(lit) - 1

/* ------------------------------------------------------------------------------------ */
/* real clients                                                                         */

/* Captured from `curl -F image=@a.jpg -F 'options={"min_score":0.5};type=application/json'
 * -F 'name with "quote"=x'` (curl 7.88.1): no CRLF after the close delimiter, and a.jpg holds
 * CRLF and a "--X" line. */
static const char CURL_CT[] =
    "multipart/form-data; boundary=------------------------adac95a725b5077b";
static const char CURL_BODY[] =
    "--------------------------adac95a725b5077b\r\n"
    "Content-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
    "Content-Type: image/jpeg\r\n"
    "\r\n"
    "\xff\xd8\xff\xe0\r\n--X\r\nJFIF\r\n"
    "--------------------------adac95a725b5077b\r\n"
    "Content-Disposition: form-data; name=\"options\"\r\n"
    "Content-Type: application/json\r\n"
    "\r\n"
    "{\"min_score\":0.5}\r\n"
    "--------------------------adac95a725b5077b\r\n"
    "Content-Disposition: form-data; name=\"name with %22quote%22\"\r\n"
    "\r\n"
    "x\r\n"
    "--------------------------adac95a725b5077b--";

static void test_curl_body(void **state)
{
    (void)state;
    fw_multipart *mp = parse_ok(CURL_CT, S(CURL_BODY));
    assert_int_equal(mp->n_parts, 3);
    assert_part(&mp->parts[0], "image", "a.jpg", "image/jpeg",
                S("\xff\xd8\xff\xe0\r\n--X\r\nJFIF"));
    assert_part(&mp->parts[1], "options", NULL, "application/json", S("{\"min_score\":0.5}"));
    assert_part(&mp->parts[2], "name with %22quote%22", NULL, NULL, S("x"));
    /* zero-copy: the data points into the body */
    assert_true((const char *)mp->parts[0].data > CURL_BODY &&
                (const char *)mp->parts[0].data < CURL_BODY + sizeof CURL_BODY);
    fw_multipart_free(mp);
}

/* What `requests.post(url, data={"image_hashes": ...}, files=[("images", ("image_0.jpg",
 * b, "image/jpeg")), ...])` sends: urllib3 puts fields first, a 32-hex-digit boundary, and a
 * CRLF after the close delimiter. */
static const char PY_CT[] = "multipart/form-data; boundary=8c6ad1b0c1f84d1b9e54a7d2c1e0f3a5";
static const char PY_BODY[] =
    "--8c6ad1b0c1f84d1b9e54a7d2c1e0f3a5\r\n"
    "Content-Disposition: form-data; name=\"image_hashes\"\r\n"
    "\r\n"
    "[{\"phash\": \"a1b2\", \"index\": 0}, {\"phash\": \"c3d4\", \"index\": 1}]\r\n"
    "--8c6ad1b0c1f84d1b9e54a7d2c1e0f3a5\r\n"
    "Content-Disposition: form-data; name=\"min_face_quality\"\r\n"
    "\r\n"
    "0.7\r\n"
    "--8c6ad1b0c1f84d1b9e54a7d2c1e0f3a5\r\n"
    "Content-Disposition: form-data; name=\"images\"; filename=\"image_0.jpg\"\r\n"
    "Content-Type: image/jpeg\r\n"
    "\r\n"
    "\xff\xd8\x00\x01\r\n\r\n\xff\xd9\r\n"
    "--8c6ad1b0c1f84d1b9e54a7d2c1e0f3a5\r\n"
    "Content-Disposition: form-data; name=\"images\"; filename=\"image_1.jpg\"\r\n"
    "Content-Type: image/jpeg\r\n"
    "\r\n"
    "\xff\xd8\r\n"
    "--8c6ad1b0c1f84d1b9e54a7d2c1e0f3a5--\r\n";

static void test_python_requests_body(void **state)
{
    (void)state;
    fw_multipart *mp = parse_ok(PY_CT, S(PY_BODY));
    assert_int_equal(mp->n_parts, 4);
    assert_part(&mp->parts[0], "image_hashes", NULL, NULL,
                S("[{\"phash\": \"a1b2\", \"index\": 0}, {\"phash\": \"c3d4\", \"index\": 1}]"));
    assert_part(&mp->parts[1], "min_face_quality", NULL, NULL, S("0.7"));
    assert_part(&mp->parts[2], "images", "image_0.jpg", "image/jpeg",
                S("\xff\xd8\x00\x01\r\n\r\n\xff\xd9"));
    assert_part(&mp->parts[3], "images", "image_1.jpg", "image/jpeg", S("\xff\xd8"));
    fw_multipart_free(mp);
}

/* ------------------------------------------------------------------------------------ */
/* boundary                                                                             */

static void boundary_is(const char *ct, const char *want)
{
    char b[FW_MULTIPART_MAX_BOUNDARY + 1];
    fw_error err = {0};
    fw_err rc = fw_multipart_boundary(ct, b, sizeof b, &err);
    if (rc)
        fail_msg("boundary of \"%s\": %s", ct, err.message);
    assert_string_equal(b, want);
}

static void boundary_fails(const char *ct, fw_err code, const char *msg_part)
{
    char b[FW_MULTIPART_MAX_BOUNDARY + 1];
    fw_error err = {0};
    assert_int_equal(fw_multipart_boundary(ct, b, sizeof b, &err), code);
    if (msg_part && !strstr(err.message, msg_part))
        fail_msg("message \"%s\" lacks \"%s\"", err.message, msg_part);
}

static void test_boundary_forms(void **state)
{
    (void)state;
    boundary_is("multipart/form-data; boundary=abc", "abc");
    boundary_is("Multipart/Form-Data;BOUNDARY=abc", "abc");
    boundary_is("multipart/form-data; charset=utf-8; boundary=xyz", "xyz");
    boundary_is("multipart/form-data; boundary=xyz; charset=utf-8", "xyz");
    boundary_is("multipart/form-data; boundary=\"simple boundary\"", "simple boundary");
    boundary_is("multipart/form-data; boundary=\"a;b=c\"; x=y", "a;b=c");
    boundary_is("multipart/form-data; boundary=\"q\\\"uote\"", "q\"uote");
    boundary_is("  multipart/form-data ;  boundary = 'odd'()+_,-./:=?  ", "'odd'()+_,-./:=?");
    char ct[200], want[80];
    memset(want, 'x', 70);
    want[70] = '\0';
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", want);
    boundary_is(ct, want); /* RFC 2046's maximum */
}

static void test_boundary_errors(void **state)
{
    (void)state;
    boundary_fails("multipart/form-data", FW_ERR_PARSE, "missing boundary");
    boundary_fails("multipart/form-data; charset=utf-8", FW_ERR_PARSE, "missing boundary");
    boundary_fails("multipart/form-data; boundaryx=abc", FW_ERR_PARSE, "missing boundary");
    boundary_fails("multipart/form-data; boundary=", FW_ERR_PARSE, "empty");
    boundary_fails("multipart/form-data; boundary=\"\"", FW_ERR_PARSE, "empty");
    boundary_fails("multipart/form-data; boundary=\"abc", FW_ERR_PARSE, "malformed");
    boundary_fails("multipart/form-data; boundary=\"ab\rc\"", FW_ERR_PARSE, "0x0d");
    boundary_fails("multipart/form-data; boundary=\"ab \"", FW_ERR_PARSE, "space");
    boundary_fails("application/json", FW_ERR_UNSUPPORTED, "application/json");
    boundary_fails("multipart/mixed; boundary=abc", FW_ERR_UNSUPPORTED, NULL);
    boundary_fails(NULL, FW_ERR_UNSUPPORTED, NULL);
    char ct[300], b[FW_MULTIPART_MAX_BOUNDARY + 2];
    memset(b, 'x', sizeof b - 1);
    b[sizeof b - 1] = '\0';
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", b);
    boundary_fails(ct, FW_ERR_PARSE, "longer than");
    /* parse reports the same errors */
    parse_fails("multipart/form-data", S("--x\r\n"), NULL, FW_ERR_PARSE, "missing boundary");
    parse_fails("text/plain", S("--x\r\n"), NULL, FW_ERR_UNSUPPORTED, NULL);
}

/* ------------------------------------------------------------------------------------ */
/* structure                                                                            */

static const char CT_B[] = "multipart/form-data; boundary=bnd";

static void test_preamble_and_epilogue(void **state)
{
    (void)state;
    static const char body[] = "This is the preamble.  It is to be ignored.\r\n"
                               "--bnd\r\n"
                               "Content-Disposition: form-data; name=\"a\"\r\n"
                               "\r\n"
                               "one\r\n"
                               "--bnd \t\r\n" /* transport padding */
                               "Content-Disposition: form-data; name=\"b\"\r\n"
                               "\r\n"
                               "\r\n"
                               "--bnd--\r\n"
                               "This is the epilogue.\r\n--bnd\r\nnot a part\r\n";
    fw_multipart *mp = parse_ok(CT_B, S(body));
    assert_int_equal(mp->n_parts, 2);
    assert_part(&mp->parts[0], "a", NULL, NULL, S("one"));
    assert_part(&mp->parts[1], "b", NULL, NULL, "", 0); /* empty data */
    fw_multipart_free(mp);

    /* A bare-LF preamble line works as well. */
    static const char lf[] = "preamble\n--bnd\r\nContent-Disposition: form-data; name=a\r\n\r\n"
                             "x\r\n--bnd--";
    mp = parse_ok(CT_B, S(lf));
    assert_int_equal(mp->n_parts, 1);
    assert_part(&mp->parts[0], "a", NULL, NULL, S("x"));
    fw_multipart_free(mp);
}

static void test_binary_with_partial_boundaries(void **state)
{
    (void)state;
    /* The data holds CRLFs, "--bnd" not preceded by CRLF, "\r\n--bn", "\r\n--bndX" (a longer
     * token), "\n--bnd\r\n" without CR (not a delimiter: the CR is required), "\r\n--bnd-x"
     * (not a close), NUL bytes and a trailing CR. */
    static const char data[] = "--bnd\r\n\r\n--bn\r\n--bndX\r\n\n--bnd\r\n\r\n--bnd-x\0\0\xff\r";
    char body[512];
    int n = snprintf(body, sizeof body,
                     "--bnd\r\nContent-Disposition: form-data; name=\"images\"; "
                     "filename=\"x.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n");
    memcpy(body + n, data, sizeof data - 1);
    n += (int)(sizeof data - 1);
    memcpy(body + n, "\r\n--bnd--\r\n", 11);
    n += 11;
    fw_multipart *mp = parse_ok(CT_B, body, (size_t)n);
    assert_int_equal(mp->n_parts, 1);
    assert_part(&mp->parts[0], "images", "x.bin", "application/octet-stream", data,
                sizeof data - 1);
    fw_multipart_free(mp);
}

static void test_header_variants(void **state)
{
    (void)state;
    static const char body[] =
        "--bnd\n" /* bare LF after the delimiter and in the headers */
        "content-disposition:form-data;name=image;filename=plain.jpg\n"
        "X-Other: ignored\n"
        "\n"
        "A\r\n"
        "--bnd\r\n"
        "CONTENT-DISPOSITION: form-data; name=\"im\\\"g\"; filename=\"a \\\"b\\\\ c;d.jpg\"; "
        "filename*=UTF-8''%e2%82%ac.jpg\r\n"
        "Content-Type:   image/png  \r\n"
        "\r\n"
        "B\r\n"
        "--bnd\r\n"
        "Content-Disposition: form-data; filename=\"\"; name=\"empty\"\r\n"
        "\r\n"
        "C\r\n"
        "--bnd--";
    fw_multipart *mp = parse_ok(CT_B, S(body));
    assert_int_equal(mp->n_parts, 3);
    assert_part(&mp->parts[0], "image", "plain.jpg", NULL, S("A"));
    assert_part(&mp->parts[1], "im\"g", "a \"b\\ c;d.jpg", "image/png", S("B"));
    assert_part(&mp->parts[2], "empty", "", NULL, S("C"));
    fw_multipart_free(mp);
}

/* ------------------------------------------------------------------------------------ */
/* errors                                                                               */

static void test_no_parts(void **state)
{
    (void)state;
    parse_fails(CT_B, S(""), NULL, FW_ERR_PARSE, "no parts");
    parse_fails(CT_B, S("--bnd--\r\n"), NULL, FW_ERR_PARSE, "no parts");
    parse_fails(CT_B, S("hello world, no delimiter here\r\n"), NULL, FW_ERR_PARSE, "no parts");
    parse_fails(CT_B, S("--bndX\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--bnd--"),
                NULL, FW_ERR_PARSE, "no parts");
    parse_fails(CT_B, NULL, 0, NULL, FW_ERR_PARSE, "no parts");
}

static void test_unterminated(void **state)
{
    (void)state;
    parse_fails(CT_B, S("--bnd\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello"), NULL,
                FW_ERR_PARSE, "unterminated part 0");
    parse_fails(CT_B, S("--bnd\r\nContent-Disposition: form-data; name=\"a\""), NULL, FW_ERR_PARSE,
                "ends inside its headers");
    /* the body stops right after a delimiter, or inside the close delimiter */
    parse_fails(CT_B, S("--bnd\r\nContent-Disposition: form-data; name=a\r\n\r\nhello\r\n--bnd"),
                NULL, FW_ERR_PARSE, "missing closing boundary");
    parse_fails(CT_B, S("--bnd\r\nContent-Disposition: form-data; name=a\r\n\r\nhello\r\n--bnd-"),
                NULL, FW_ERR_PARSE, "missing closing boundary");
    parse_fails(CT_B, S("--bnd\r\nContent-Disposition: form-data; name=a\r\n\r\nhello\r\n--bn"),
                NULL, FW_ERR_PARSE, "missing closing boundary");
    /* an open delimiter and then nothing */
    parse_fails(CT_B,
                S("--bnd\r\nContent-Disposition: form-data; name=a\r\n\r\nhello\r\n--bnd\r\n"),
                NULL, FW_ERR_PARSE, "unterminated part 1");
    /* LF-only delimiters after data are not delimiters */
    parse_fails(CT_B, S("--bnd\nContent-Disposition: form-data; name=a\n\nhello\n--bnd--\n"), NULL,
                FW_ERR_PARSE, "unterminated part 0");
}

static void test_header_limits(void **state)
{
    (void)state;
    size_t n = 20000;
    char *body = malloc(n + 200);
    assert_non_null(body);
    /* one 9000-byte header line: over the default 8192 */
    int k = snprintf(body, 200, "--bnd\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Long: ");
    memset(body + k, 'a', 9000);
    k += 9000;
    k += snprintf(body + k, 200, "\r\n\r\ndata\r\n--bnd--\r\n");
    parse_fails(CT_B, body, (size_t)k, NULL, FW_ERR_PARSE, "header line too long");

    /* many short lines adding up to more than the limit */
    k = snprintf(body, 200, "--bnd\r\nContent-Disposition: form-data; name=\"a\"\r\n");
    for (int i = 0; i < 100; i++)
        k += snprintf(body + k, 200, "X-H%d: %090d\r\n", i, i);
    k += snprintf(body + k, 200, "\r\ndata\r\n--bnd--\r\n");
    parse_fails(CT_B, body, (size_t)k, NULL, FW_ERR_PARSE, "headers larger than 8192");

    /* a custom limit: the same part passes with enough room, fails with less */
    fw_multipart_limits lim = {.max_parts = 0, .max_header_bytes = 16384};
    fw_multipart *mp = NULL;
    assert_int_equal(fw_multipart_parse(CT_B, (const uint8_t *)body, (size_t)k, &lim, &mp, NULL),
                     FW_OK);
    assert_int_equal(mp->n_parts, 1);
    assert_part(&mp->parts[0], "a", NULL, NULL, S("data"));
    fw_multipart_free(mp);
    static const char small[] = "--bnd\r\nContent-Disposition: form-data; name=\"abc\"\r\n\r\nx\r\n"
                                "--bnd--";
    lim.max_header_bytes = 40;
    parse_fails(CT_B, S(small), &lim, FW_ERR_PARSE, "header line too long (over 40 bytes)");
    lim.max_header_bytes = 45; /* the line (44 bytes with CRLF) fits, the empty line does not */
    parse_fails(CT_B, S(small), &lim, FW_ERR_PARSE, "headers larger than 45");
    lim.max_header_bytes = 46;
    assert_int_equal(
        fw_multipart_parse(CT_B, (const uint8_t *)small, sizeof small - 1, &lim, &mp, NULL), FW_OK);
    fw_multipart_free(mp);
    free(body);
}

static void test_too_many_parts(void **state)
{
    (void)state;
    char body[2048];
    int k = 0;
    for (int i = 0; i < 5; i++)
        k += snprintf(body + k, sizeof body - (size_t)k,
                      "--bnd\r\nContent-Disposition: form-data; name=\"p%d\"\r\n\r\n%d\r\n", i, i);
    k += snprintf(body + k, sizeof body - (size_t)k, "--bnd--\r\n");
    fw_multipart_limits lim = {.max_parts = 4, .max_header_bytes = 0};
    parse_fails(CT_B, body, (size_t)k, &lim, FW_ERR_TOO_LARGE, "too many multipart parts");
    lim.max_parts = 5;
    fw_multipart *mp = NULL;
    assert_int_equal(fw_multipart_parse(CT_B, (const uint8_t *)body, (size_t)k, &lim, &mp, NULL),
                     FW_OK);
    assert_int_equal(mp->n_parts, 5);
    assert_part(&mp->parts[4], "p4", NULL, NULL, S("4"));
    fw_multipart_free(mp);

    /* The default limit applies when none is given: 300 tiny parts are too many. */
    size_t cap = 300 * 64 + 16;
    char *big = malloc(cap);
    assert_non_null(big);
    size_t len = 0;
    for (int i = 0; i < 300; i++)
        len += (size_t)snprintf(big + len, cap - len,
                                "--bnd\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n");
    len += (size_t)snprintf(big + len, cap - len, "--bnd--");
    parse_fails(CT_B, big, len, NULL, FW_ERR_TOO_LARGE, "limit 256");
    free(big);
}

static void test_bad_part_headers(void **state)
{
    (void)state;
    parse_fails(CT_B, S("--bnd\r\nContent-Type: image/jpeg\r\n\r\nx\r\n--bnd--"), NULL,
                FW_ERR_PARSE, "no Content-Disposition");
    parse_fails(CT_B,
                S("--bnd\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\nx\r\n--bnd--"),
                NULL, FW_ERR_PARSE, "without a name");
    parse_fails(CT_B, S("--bnd\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--bnd--"),
                NULL, FW_ERR_PARSE, "malformed Content-Disposition");
    parse_fails(CT_B,
                S("--bnd\r\nContent-Disposition: form-data; name=\"a\"junk\r\n\r\nx\r\n--bnd--"),
                NULL, FW_ERR_PARSE, "malformed Content-Disposition");
    parse_fails(CT_B, S("--bnd\r\nno colon here\r\n\r\nx\r\n--bnd--"), NULL, FW_ERR_PARSE,
                "no ':'");
    parse_fails(CT_B,
                S("--bnd\r\nContent-Disposition: form-data; name=\"a\0b\"\r\n\r\nx\r\n--bnd--"),
                NULL, FW_ERR_PARSE, "NUL");
    /* the error names the failing part */
    parse_fails(CT_B,
                S("--bnd\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n"
                  "--bnd\r\nContent-Type: text/plain\r\n\r\ny\r\n--bnd--"),
                NULL, FW_ERR_PARSE, "part 1 has no Content-Disposition");
}

/* A 4 MiB body made of near-delimiters ("\r\n--bndbndbn..." cut one byte short of the long
 * boundary) and long runs of LFs: a scanner that restarts a boundary comparison at every
 * byte, or rescans the body per candidate, would take far longer than the bound. */
static void test_adversarial_linear_time(void **state)
{
    (void)state;
    char boundary[71];
    memset(boundary, 'b', 70);
    boundary[70] = '\0';
    char ct[128];
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", boundary);
    size_t cap = 4u << 20;
    char *body = malloc(cap + 512);
    assert_non_null(body);
    size_t len = (size_t)snprintf(
        body, 512, "--%s\r\nContent-Disposition: form-data; name=a\r\n\r\n", boundary);
    while (len + 80 < cap) {
        memcpy(body + len, "\r\n--", 4);
        memset(body + len + 4, 'b', 69); /* one short of the boundary */
        len += 73;
        memset(body + len, '\n', 7);
        len += 7;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    parse_fails(ct, body, len, NULL, FW_ERR_PARSE, "closing boundary");
    /* and once more with a valid close delimiter at the very end */
    len += (size_t)snprintf(body + len, 512, "\r\n--%s--\r\n", boundary);
    fw_multipart *mp = parse_ok(ct, body, len);
    assert_int_equal(mp->n_parts, 1);
    assert_true(mp->parts[0].len > cap - 200);
    fw_multipart_free(mp);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (s > 5.0)
        fail_msg("parsing 2 x 4 MiB adversarial bodies took %.2f s", s);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curl_body),
        cmocka_unit_test(test_python_requests_body),
        cmocka_unit_test(test_boundary_forms),
        cmocka_unit_test(test_boundary_errors),
        cmocka_unit_test(test_preamble_and_epilogue),
        cmocka_unit_test(test_binary_with_partial_boundaries),
        cmocka_unit_test(test_header_variants),
        cmocka_unit_test(test_no_parts),
        cmocka_unit_test(test_unterminated),
        cmocka_unit_test(test_header_limits),
        cmocka_unit_test(test_too_many_parts),
        cmocka_unit_test(test_bad_part_headers),
        cmocka_unit_test(test_adversarial_linear_time),
    };
    return cmocka_run_group_tests(tests, 0, NULL);
}
