/* `facework submit --queue redis://HOST:PORT/STREAM DIR|FILE...`: one job per image file,
 * pushed to the job stream with at most --window unanswered at once; every answer is printed
 * as one JSON line (the result envelope of server/queue.h) on stdout, a progress bar on
 * stderr when it is a terminal. Exit status: 0 when every job was answered, 1 when some
 * were not (timeout, Redis lost for good), 2 on bad options. */
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

#ifdef FW_HAVE_fw_client
#include "client/queue.h"
#include "facework/image.h"
#include "util/base64.h"
#include "util/buf.h"
#include "util/config.h"

#define SUBMIT_MAX_FILES 10000000

typedef struct file_list {
    char **paths;
    size_t n, cap;
    bool failed;
} file_list;

static file_list *g_walk; /* nftw has no user pointer */

static bool list_add(file_list *l, const char *path)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        char **p = cap <= SUBMIT_MAX_FILES ? realloc(l->paths, cap * sizeof *p) : NULL;
        if (!p)
            return false;
        l->paths = p;
        l->cap = cap;
    }
    if (!(l->paths[l->n] = strdup(path)))
        return false;
    l->n++;
    return true;
}

static int walk_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    const char *base = path + ftw->base;
    if (ftw->level > 0 && base[0] == '.')
        return type == FTW_D ? FTW_SKIP_SUBTREE : FTW_CONTINUE;
    if (type == FTW_F && !list_add(g_walk, path)) {
        g_walk->failed = true;
        return FTW_STOP;
    }
    return FTW_CONTINUE;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_free(file_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->paths[i]);
    free(l->paths);
}

/* The job body for one file: inline base64 bytes, or the absolute path (--paths). */
static char *job_body(const char *path, bool paths, const char *options, size_t max_bytes,
                      size_t *len, fw_error *err)
{
    fw_buf b;
    fw_buf_init(&b);
    json_t *id = json_string(path);
    char *ids = id ? json_dumps(id, JSON_ENCODE_ANY) : NULL;
    json_decref(id);
    if (!ids) {
        fw_error_set(err, FW_ERR_PARSE, "the file name is not UTF-8");
        return NULL;
    }
    fw_buf_printf(&b, "{\"images\":[{\"id\":%s,", ids);
    free(ids);
    if (paths) {
        char real[PATH_MAX];
        if (!realpath(path, real)) {
            fw_buf_free(&b);
            fw_error_set(err, FW_ERR_NOT_FOUND, "cannot resolve the path");
            return NULL;
        }
        json_t *p = json_string(real);
        char *ps = p ? json_dumps(p, JSON_ENCODE_ANY) : NULL;
        json_decref(p);
        fw_buf_printf(&b, "\"path\":%s}]", ps ? ps : "\"\"");
        free(ps);
    } else {
        uint8_t *data = NULL;
        size_t n = 0;
        if (fw_read_file(path, max_bytes, &data, &n, err) != FW_OK) {
            fw_buf_free(&b);
            return NULL;
        }
        size_t el = fw_base64_encoded_len(n);
        char *enc = malloc(el + 1);
        if (enc) {
            fw_base64_encode(data, n, enc);
            fw_buf_puts(&b, "\"data\":\"");
            fw_buf_append(&b, enc, el);
            fw_buf_puts(&b, "\"}]");
        }
        free(enc);
        free(data);
    }
    if (options)
        fw_buf_printf(&b, ",\"options\":%s", options);
    fw_buf_putc(&b, '}');
    char *s = fw_buf_detach(&b, len);
    if (!s)
        fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    return s;
}

static void progress(bool tty, size_t done, size_t total, size_t failed)
{
    if (!tty)
        return;
    int width = 30, filled = total ? (int)((double)done / (double)total * width) : width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r[%s] %zu/%zu jobs, %zu with errors", bar, done, total, failed);
    if (done == total)
        fputc('\n', stderr);
    fflush(stderr);
}

int fw_cli_submit(int argc, char **argv)
{
    char *queue = NULL, *options = NULL, *route = NULL;
    int window = 0;
    double timeout = 0;
    bool paths = false;
    size_t max_bytes = 0;
    fw_option table[] = {
        {.name = "queue",
         .env = "GPU_WORKER_QUEUE",
         .type = FW_OPT_STRING,
         .help = "the job stream: redis://HOST:PORT/STREAM (required)",
         .dest = &queue,
         .flags = FW_OPT_SECRET},
        {.name = "window",
         .type = FW_OPT_INT,
         .def = "64",
         .help = "jobs submitted and not yet answered, at most",
         .dest = &window,
         .min = 1,
         .max = 1000000},
        {.name = "timeout",
         .type = FW_OPT_DURATION,
         .def = "300s",
         .help = "give up when no answer came for this long",
         .dest = &timeout,
         .min = 0.1,
         .max = 86400},
        {.name = "paths",
         .type = FW_OPT_BOOL,
         .def = "false",
         .help = "send absolute file paths instead of the bytes (workers need --queue-files "
                 "on shared storage)",
         .dest = &paths},
        {.name = "options",
         .type = FW_OPT_STRING,
         .help = "/v1/analyze options as a JSON object, e.g. '{\"embed\":false}'",
         .dest = &options},
        {.name = "route",
         .type = FW_OPT_STRING,
         .def = "/v1/analyze",
         .help = "/v1/analyze, /v1/detect or /v1/embed",
         .dest = &route},
        {.name = "max-image-bytes",
         .type = FW_OPT_SIZE,
         .def = "20MiB",
         .help = "larger files are reported and skipped",
         .dest = &max_bytes,
         .min = 1,
         .max = 4.0 * 1024 * 1024 * 1024},
    };
    size_t n = sizeof table / sizeof table[0];
    if (fw_config_wants_help(argc, argv)) {
        printf("usage: facework submit --queue redis://HOST:PORT/STREAM [options] DIR|FILE...\n\n"
               "Pushes one job per image file (directories are walked, hidden entries\n"
               "skipped) to the workers' job stream and prints every answer as a JSON line\n"
               "{\"id\",\"entry\",\"status\",\"result\"}. Exit status: 0 when every job was\n"
               "answered, 1 otherwise, 2 on bad options.\n\n");
        fw_config_help(table, n, stdout);
        return 0;
    }
    const char *pos[4096];
    size_t npos = 0;
    fw_config_opts co = {.dotenv_path = ".env",
                         .dotenv_lenient = true,
                         .positional = pos,
                         .positional_cap = sizeof pos / sizeof pos[0],
                         .npositional = &npos};
    fw_error err;
    int status = 2;
    file_list files = {0};
    fw_qclient *qc = NULL;
    if (fw_config_parse_ex(table, n, argc, argv, &co, &err)) {
        fprintf(stderr, "facework submit: %s\n", err.message);
        goto out;
    }
    if (!queue || npos == 0) {
        fprintf(stderr, "facework submit: needs --queue (or GPU_WORKER_QUEUE) and a DIR or "
                        "FILE\n");
        goto out;
    }
    if (options) {
        json_t *o = json_loads(options, 0, NULL);
        bool ok = json_is_object(o);
        json_decref(o);
        if (!ok) {
            fprintf(stderr, "facework submit: --options must be a JSON object\n");
            goto out;
        }
    }
    for (size_t i = 0; i < npos; i++) {
        struct stat st;
        if (stat(pos[i], &st) != 0) {
            fprintf(stderr, "facework submit: %s: no such file or directory\n", pos[i]);
            goto out;
        }
        g_walk = &files;
        if (S_ISDIR(st.st_mode) ? nftw(pos[i], walk_one, 16, FTW_ACTIONRETVAL) != 0 || files.failed
                                : !list_add(&files, pos[i])) {
            fprintf(stderr, "facework submit: %s: cannot list it\n", pos[i]);
            status = 1;
            goto out;
        }
    }
    qsort(files.paths, files.n, sizeof *files.paths, cmp_str);
    status = 1;
    if (fw_qclient_new(queue, timeout, &qc, &err)) {
        fprintf(stderr, "facework submit: %s\n", err.message);
        goto out;
    }
    bool tty = isatty(STDERR_FILENO);
    size_t next = 0, outstanding = 0, answered = 0, failed = 0, skipped = 0;
    while (next < files.n || outstanding > 0) {
        while (next < files.n && outstanding < (size_t)window) {
            const char *path = files.paths[next++];
            size_t len = 0;
            char *body = job_body(path, paths, options, max_bytes, &len, &err);
            if (!body) {
                fprintf(stderr, "%sfacework submit: %s: skipped: %s\n", tty ? "\n" : "", path,
                        err.message);
                skipped++;
                continue;
            }
            fw_err rc = fw_qclient_submit(qc, path, body, len, route, timeout, &err);
            free(body);
            if (rc) {
                fprintf(stderr, "\nfacework submit: %s\n", err.message);
                goto out;
            }
            outstanding++;
        }
        if (outstanding == 0)
            break;
        fw_qclient_reply r;
        fw_err rc = fw_qclient_next(qc, timeout, &r, &err);
        if (rc == FW_ERR_PARSE)
            continue;
        if (rc) {
            fprintf(stderr, "\nfacework submit: %zu job(s) not answered: %s\n", outstanding,
                    err.message);
            goto out;
        }
        fwrite(r.json, 1, r.len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        /* a 200 answer may still hold per-item errors: count those too */
        if (r.status != 200 || strstr(r.json, "\"error\":{"))
            failed++;
        fw_qclient_reply_clear(&r);
        outstanding--;
        answered++;
        progress(tty, answered, files.n - skipped, failed);
    }
    fprintf(stderr, "facework submit: %zu answered, %zu with errors, %zu skipped\n", answered,
            failed, skipped);
    status = skipped ? 1 : 0;
out:
    fw_qclient_free(qc);
    list_free(&files);
    fw_config_free(table, n);
    return status;
}

#else
int fw_cli_submit(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "facework: 'submit' needs the client library, absent from this build\n");
    return 2;
}
#endif
