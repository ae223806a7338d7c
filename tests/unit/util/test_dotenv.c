/* Unit tests for .env parsing (util/dotenv): syntax, quoting, comments, CRLF, invalid lines
 * with their numbers, size limits and loading files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/dotenv.h"

static fw_dotenv *parse_ok(const char *text)
{
    fw_dotenv *env = NULL;
    fw_error err;
    fw_err rc = fw_dotenv_parse(text, strlen(text), &env, &err);
    if (rc != FW_OK)
        fail_msg("parse failed: %s", err.message);
    assert_non_null(env);
    return env;
}

static void test_basic_lines(void **state)
{
    (void)state;
    const char *text = "# a comment\n"
                       "\n"
                       "HOST=127.0.0.1\n"
                       "   \t\n"
                       "export PORT=8765\n"
                       "  # indented comment\n"
                       "lower_case.key=v\n"
                       "LAST=no-newline";
    fw_dotenv *env = parse_ok(text);
    assert_int_equal(fw_dotenv_count(env), 4);
    assert_string_equal(fw_dotenv_get(env, "HOST"), "127.0.0.1");
    assert_string_equal(fw_dotenv_get(env, "PORT"), "8765");
    assert_string_equal(fw_dotenv_get(env, "lower_case.key"), "v");
    assert_string_equal(fw_dotenv_get(env, "LAST"), "no-newline");
    assert_null(fw_dotenv_get(env, "MISSING"));
    assert_null(fw_dotenv_get(env, "export PORT"));
    /* order of first appearance and source lines */
    assert_string_equal(fw_dotenv_key(env, 0), "HOST");
    assert_string_equal(fw_dotenv_value(env, 1), "8765");
    assert_int_equal(fw_dotenv_line(env, 0), 3);
    assert_int_equal(fw_dotenv_line(env, 1), 5);
    assert_int_equal(fw_dotenv_line(env, 3), 8);
    assert_int_equal(fw_dotenv_line_of(env, "lower_case.key"), 7);
    assert_null(fw_dotenv_key(env, 4));
    assert_int_equal(fw_dotenv_line(env, 4), 0);
    assert_int_equal(fw_dotenv_invalid_lines(env), 0);
    fw_dotenv_free(env);
}

static void test_crlf(void **state)
{
    (void)state;
    fw_dotenv *env = parse_ok("A=1\r\nB='two'\r\nC=\"three\"\r\n\r\n# c\r\nD=x y \r\n");
    assert_int_equal(fw_dotenv_count(env), 4);
    assert_string_equal(fw_dotenv_get(env, "A"), "1");
    assert_string_equal(fw_dotenv_get(env, "B"), "two");
    assert_string_equal(fw_dotenv_get(env, "C"), "three");
    assert_string_equal(fw_dotenv_get(env, "D"), "x y");
    assert_int_equal(fw_dotenv_line_of(env, "D"), 6);
    fw_dotenv_free(env);
}

static void test_single_quotes_are_literal(void **state)
{
    (void)state;
    fw_dotenv *env = parse_ok("A='x \\n # $y \"z\"'\n"
                              "B=''\n"
                              "C='  padded  '   # trailing comment\n");
    assert_string_equal(fw_dotenv_get(env, "A"), "x \\n # $y \"z\"");
    assert_string_equal(fw_dotenv_get(env, "B"), "");
    assert_string_equal(fw_dotenv_get(env, "C"), "  padded  ");
    fw_dotenv_free(env);
}

static void test_double_quote_escapes(void **state)
{
    (void)state;
    fw_dotenv *env = parse_ok("A=\"l1\\nl2\"\n"
                              "B=\"say \\\"hi\\\" \\\\ end\"\n"
                              "C=\"tab\\there\\r\"\n"
                              "D=\"keep \\q and # hash\" # comment\n"
                              "E=\"\"\n"
                              "F=\"\\$HOME\"\n");
    assert_string_equal(fw_dotenv_get(env, "A"), "l1\nl2");
    assert_string_equal(fw_dotenv_get(env, "B"), "say \"hi\" \\ end");
    assert_string_equal(fw_dotenv_get(env, "C"), "tab\there\r");
    assert_string_equal(fw_dotenv_get(env, "D"), "keep \\q and # hash");
    assert_string_equal(fw_dotenv_get(env, "E"), "");
    assert_string_equal(fw_dotenv_get(env, "F"), "$HOME");
    fw_dotenv_free(env);
}

static void test_unquoted_trim_and_comments(void **state)
{
    (void)state;
    fw_dotenv *env = parse_ok("A=  hello world   # a comment\n"
                              "B=a#b\n"
                              "C= # only a comment\n"
                              "D=\n"
                              "E=url?x=1&y=2#frag\n"
                              "F=x\t# tab before hash\n"
                              "G =  spaced  \n"
                              "H\t=\tv\n");
    assert_string_equal(fw_dotenv_get(env, "A"), "hello world");
    assert_string_equal(fw_dotenv_get(env, "B"), "a#b");
    assert_string_equal(fw_dotenv_get(env, "C"), "");
    assert_string_equal(fw_dotenv_get(env, "D"), "");
    assert_string_equal(fw_dotenv_get(env, "E"), "url?x=1&y=2#frag");
    assert_string_equal(fw_dotenv_get(env, "F"), "x");
    assert_string_equal(fw_dotenv_get(env, "G"), "spaced");
    assert_string_equal(fw_dotenv_get(env, "H"), "v");
    fw_dotenv_free(env);
}

static void test_export_edge_cases(void **state)
{
    (void)state;
    fw_dotenv *env = parse_ok("export=1\n"
                              "export  \tX=2\n"
                              "exportY=3\n"
                              "export = 4\n");
    /* "export" alone before '=' is a key; "export  X" strips the prefix; "exportY" is a key */
    assert_int_equal(fw_dotenv_count(env), 3);
    assert_string_equal(fw_dotenv_get(env, "export"), "4");
    assert_string_equal(fw_dotenv_get(env, "X"), "2");
    assert_string_equal(fw_dotenv_get(env, "exportY"), "3");
    fw_dotenv_free(env);
}

static void test_duplicate_keeps_last(void **state)
{
    (void)state;
    fw_dotenv *env = parse_ok("K=1\nOTHER=x\nK=2\n");
    assert_int_equal(fw_dotenv_count(env), 2);
    assert_string_equal(fw_dotenv_get(env, "K"), "2");
    assert_int_equal(fw_dotenv_line_of(env, "K"), 3);
    assert_string_equal(fw_dotenv_key(env, 0), "K"); /* position of first appearance */
    fw_dotenv_free(env);
}

static void expect_invalid(const char *text, const char *msg_part, unsigned line)
{
    fw_dotenv *env = NULL;
    fw_error err;
    assert_int_equal(fw_dotenv_parse(text, strlen(text), &env, &err), FW_ERR_PARSE);
    assert_int_equal(err.code, FW_ERR_PARSE);
    char want[32];
    snprintf(want, sizeof want, "line %u:", line);
    if (strncmp(err.message, want, strlen(want)) != 0 || !strstr(err.message, msg_part))
        fail_msg("'%s': got message '%s', want '%s ... %s'", text, err.message, want, msg_part);
    assert_non_null(env);
    fw_dotenv_free(env);
}

static void test_invalid_lines(void **state)
{
    (void)state;
    expect_invalid("OK=1\nno equals here\n", "no '='", 2);
    expect_invalid("1BAD=x\n", "invalid key", 1);
    expect_invalid("=x\n", "invalid key", 1);
    expect_invalid("A=1\n\nB=\"unterminated\n", "unterminated double", 3);
    expect_invalid("B='unterminated\n", "unterminated single", 1);
    expect_invalid("C='x' trailing\n", "after the closing quote", 1);
    expect_invalid("D=\"x\"y\n", "after the closing quote", 1);
    expect_invalid("E=\"ends with backslash\\\"\n", "unterminated double", 1);
    expect_invalid("KEY-DASH=1\n", "no '='", 1);
    expect_invalid("export KEY\n", "no '='", 1);
}

static void test_invalid_lines_keep_the_rest(void **state)
{
    (void)state;
    const char *text = "A=1\nbroken\nB=2\nC='open\nD=4\n";
    fw_dotenv *env = NULL;
    fw_error err;
    assert_int_equal(fw_dotenv_parse(text, strlen(text), &env, &err), FW_ERR_PARSE);
    assert_string_equal(err.message, "line 2: expected KEY=VALUE (no '=' after the key)");
    assert_int_equal(fw_dotenv_count(env), 3);
    assert_int_equal(fw_dotenv_invalid_lines(env), 2);
    assert_string_equal(fw_dotenv_get(env, "A"), "1");
    assert_string_equal(fw_dotenv_get(env, "B"), "2");
    assert_string_equal(fw_dotenv_get(env, "D"), "4");
    assert_null(fw_dotenv_get(env, "C"));
    fw_dotenv_free(env);
}

static void test_nul_byte_line(void **state)
{
    (void)state;
    const char text[] = "A=1\nB=x\0y\nC=3\n";
    fw_dotenv *env = NULL;
    fw_error err;
    assert_int_equal(fw_dotenv_parse(text, sizeof text - 1, &env, &err), FW_ERR_PARSE);
    assert_non_null(strstr(err.message, "line 2: contains a NUL byte"));
    assert_int_equal(fw_dotenv_count(env), 2);
    assert_string_equal(fw_dotenv_get(env, "C"), "3");
    fw_dotenv_free(env);
}

static void test_limits(void **state)
{
    (void)state;
    fw_dotenv *env = NULL;
    fw_error err;
    /* a file one byte over the limit is rejected as a whole */
    size_t big = FW_DOTENV_MAX_BYTES + 1;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, '#', big);
    assert_int_equal(fw_dotenv_parse(text, big, &env, &err), FW_ERR_TOO_LARGE);
    assert_null(env);
    /* exactly at the size limit the text is parsed; its single line is over the line limit */
    assert_int_equal(fw_dotenv_parse(text, FW_DOTENV_MAX_BYTES, &env, &err), FW_ERR_PARSE);
    assert_string_equal(err.message, "line 1: line too long");
    fw_dotenv_free(env);
    /* a line of exactly FW_DOTENV_MAX_LINE bytes is accepted, one more is not */
    size_t n = FW_DOTENV_MAX_LINE;
    memcpy(text, "K=", 2);
    memset(text + 2, 'v', n - 2);
    text[n] = '\n';
    memcpy(text + n + 1, "L=", 2);
    memset(text + n + 3, 'w', n - 1);
    assert_int_equal(fw_dotenv_parse(text, 2 * n + 2, &env, &err), FW_ERR_PARSE);
    assert_string_equal(err.message, "line 2: line too long");
    assert_int_equal(strlen(fw_dotenv_get(env, "K")), n - 2);
    assert_null(fw_dotenv_get(env, "L"));
    fw_dotenv_free(env);
    free(text);
}

static void test_many_keys(void **state)
{
    (void)state;
    enum { N = 20000 };
    char *text = malloc((size_t)N * 24);
    assert_non_null(text);
    size_t len = 0;
    for (int i = 0; i < N; i++)
        len += (size_t)sprintf(text + len, "K%d=%d\n", i, i * 7);
    fw_dotenv *env = NULL;
    assert_int_equal(fw_dotenv_parse(text, len, &env, NULL), FW_OK);
    assert_int_equal(fw_dotenv_count(env), N);
    for (int i = 0; i < N; i += 97) {
        char k[16], v[16];
        snprintf(k, sizeof k, "K%d", i);
        snprintf(v, sizeof v, "%d", i * 7);
        assert_string_equal(fw_dotenv_get(env, k), v);
        assert_int_equal(fw_dotenv_line_of(env, k), (unsigned)i + 1);
    }
    fw_dotenv_free(env);
    free(text);
}

static void test_empty_and_null(void **state)
{
    (void)state;
    fw_dotenv *env = NULL;
    assert_int_equal(fw_dotenv_parse("", 0, &env, NULL), FW_OK);
    assert_int_equal(fw_dotenv_count(env), 0);
    assert_null(fw_dotenv_get(env, "A"));
    fw_dotenv_free(env);
    assert_int_equal(fw_dotenv_parse(NULL, 0, &env, NULL), FW_OK);
    fw_dotenv_free(env);
    fw_error err;
    assert_int_equal(fw_dotenv_parse(NULL, 3, &env, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_dotenv_parse("A=1", 3, NULL, &err), FW_ERR_INVALID_ARGUMENT);
    assert_int_equal(fw_dotenv_count(NULL), 0);
    assert_null(fw_dotenv_get(NULL, "A"));
    fw_dotenv_free(NULL);
}

/* ---- files ---- */

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fw-dotenv-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/.env", tmpdir);
    write_file(path, "GPU_WORKER_URL=http://a:8765,http://b:8765\nGPU_WORKER_API_KEY='s3cret'\n");
    fw_dotenv *env = NULL;
    fw_error err;
    assert_int_equal(fw_dotenv_load(path, &env, &err), FW_OK);
    assert_int_equal(fw_dotenv_count(env), 2);
    assert_string_equal(fw_dotenv_get(env, "GPU_WORKER_URL"), "http://a:8765,http://b:8765");
    assert_string_equal(fw_dotenv_get(env, "GPU_WORKER_API_KEY"), "s3cret");
    fw_dotenv_free(env);
}

static void test_load_missing_is_empty(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/does-not-exist.env", tmpdir);
    fw_dotenv *env = NULL;
    assert_int_equal(fw_dotenv_load(path, &env, NULL), FW_OK);
    assert_non_null(env);
    assert_int_equal(fw_dotenv_count(env), 0);
    fw_dotenv_free(env);
}

static void test_load_errors(void **state)
{
    (void)state;
    fw_dotenv *env = NULL;
    fw_error err;
    /* a directory cannot be read as a file */
    assert_int_equal(fw_dotenv_load(tmpdir, &env, &err), FW_ERR_IO);
    assert_null(env);
    assert_non_null(strstr(err.message, tmpdir));
    /* a parse error names the file and the line */
    char path[128];
    snprintf(path, sizeof path, "%s/bad.env", tmpdir);
    write_file(path, "A=1\nB='x\n");
    assert_int_equal(fw_dotenv_load(path, &env, &err), FW_ERR_PARSE);
    char want[192];
    snprintf(want, sizeof want, "%s: line 2: unterminated single-quoted value", path);
    assert_string_equal(err.message, want);
    assert_string_equal(fw_dotenv_get(env, "A"), "1");
    fw_dotenv_free(env);
    /* a file over the size limit */
    snprintf(path, sizeof path, "%s/big.env", tmpdir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (unsigned i = 0; i <= FW_DOTENV_MAX_BYTES / 8; i++)
        assert_int_equal(fwrite("# pad..\n", 1, 8, f), 8);
    assert_int_equal(fclose(f), 0);
    env = NULL;
    assert_int_equal(fw_dotenv_load(path, &env, &err), FW_ERR_TOO_LARGE);
    assert_null(env);
    assert_int_equal(fw_dotenv_load(NULL, &env, &err), FW_ERR_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_lines),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_single_quotes_are_literal),
        cmocka_unit_test(test_double_quote_escapes),
        cmocka_unit_test(test_unquoted_trim_and_comments),
        cmocka_unit_test(test_export_edge_cases),
        cmocka_unit_test(test_duplicate_keeps_last),
        cmocka_unit_test(test_invalid_lines),
        cmocka_unit_test(test_invalid_lines_keep_the_rest),
        cmocka_unit_test(test_nul_byte_line),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_empty_and_null),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_load_missing_is_empty),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
