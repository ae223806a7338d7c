/* facework: command-line entry point. Wiring only: every subcommand is a thin layer over
 * the public libraries. */
#include <dirent.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/ort.h"
#include "facework/facework.h"
#include "util/log.h"

#define DEFAULT_COMPARE_THRESHOLD 0.42f
#define CLI_BATCH 16

static void usage(FILE *out)
{
    fprintf(out,
            "usage: facework COMMAND [options] [args]\n"
            "\n"
            "commands:\n"
            "  detect IMAGE|DIR...    find faces: JSON with boxes, scores, 5 landmarks\n"
            "  analyze IMAGE|DIR...   detect and embed: adds a 512-D embedding per face\n"
            "  compare A B            cosine similarity of the largest face in A and in B\n"
            "  models [DIR]           the model pack: kinds, shapes, providers\n"
            "  worker [options]       run the inference worker (HTTP, port 8765)\n"
            "  backend [options]      run the resilient backend (HTTP, port 8000)\n"
            "  health [URL]           print a worker's or backend's health\n"
            "  submit --queue URL DIR push images to workers through Redis, print results\n"
            "  version                print the version\n"
            "\n"
            "options for detect, analyze, compare, models:\n"
            "  --models DIR           model pack directory (default: FACEWORK_MODELS or the\n"
            "                         pack installed by setup)\n"
            "  --provider NAME        auto|cpu|cuda|tensorrt|dml|rocm|migraphx|coreml|openvino\n"
            "                         (default auto)\n"
            "  --threads N            ONNX Runtime intra-op threads (default: ORT's choice)\n"
            "  --min-score F          detector threshold (default: the model's)\n"
            "  --max-faces N          keep the N highest-scoring faces per image\n"
            "  --min-face-size PX     drop smaller faces\n"
            "  --threshold F          compare: same-person threshold (default 0.42)\n"
            "  --pretty               indent the JSON output\n"
            "\n"
            "`facework worker --help` lists the worker's options.\n");
}

typedef struct cli_opts {
    fw_engine_config cfg;
    fw_analyze_opts aopts;
    float threshold;
    int pretty;
} cli_opts;

/* Parses the shared options; returns the index of the first positional argument, or -1
 * after printing an error. */
static int parse_opts(int argc, char **argv, cli_opts *o)
{
    enum {
        O_MODELS = 256,
        O_PROVIDER,
        O_THREADS,
        O_MIN_SCORE,
        O_MAX_FACES,
        O_MIN_FACE,
        O_THRESHOLD,
        O_PRETTY,
        O_HELP
    };
    static const struct option longopts[] = {
        {"models", required_argument, 0, O_MODELS},
        {"provider", required_argument, 0, O_PROVIDER},
        {"threads", required_argument, 0, O_THREADS},
        {"min-score", required_argument, 0, O_MIN_SCORE},
        {"max-faces", required_argument, 0, O_MAX_FACES},
        {"min-face-size", required_argument, 0, O_MIN_FACE},
        {"threshold", required_argument, 0, O_THRESHOLD},
        {"pretty", no_argument, 0, O_PRETTY},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    fw_engine_config_init(&o->cfg);
    fw_analyze_opts_init(&o->aopts);
    o->threshold = DEFAULT_COMPARE_THRESHOLD;
    o->pretty = 0;
    optind = 1;
    opterr = 1;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_MODELS:
            o->cfg.models_dir = optarg;
            break;
        case O_PROVIDER:
            o->cfg.provider = optarg;
            break;
        case O_THREADS:
            o->cfg.threads = (int)strtol(optarg, &end, 10);
            if (*end || o->cfg.threads < 0) {
                fprintf(stderr, "facework: --threads: not a non-negative integer: %s\n", optarg);
                return -1;
            }
            break;
        case O_MIN_SCORE:
            o->aopts.min_score = strtof(optarg, &end);
            if (*end || o->aopts.min_score < 0 || o->aopts.min_score > 1) {
                fprintf(stderr, "facework: --min-score: expected 0..1: %s\n", optarg);
                return -1;
            }
            break;
        case O_MAX_FACES:
            o->aopts.max_faces = (int)strtol(optarg, &end, 10);
            if (*end || o->aopts.max_faces < 0) {
                fprintf(stderr, "facework: --max-faces: not a non-negative integer: %s\n", optarg);
                return -1;
            }
            break;
        case O_MIN_FACE:
            o->aopts.min_face_size = strtof(optarg, &end);
            if (*end || o->aopts.min_face_size < 0) {
                fprintf(stderr, "facework: --min-face-size: not a size: %s\n", optarg);
                return -1;
            }
            break;
        case O_THRESHOLD:
            o->threshold = strtof(optarg, &end);
            if (*end || o->threshold < -1 || o->threshold > 1) {
                fprintf(stderr, "facework: --threshold: expected -1..1: %s\n", optarg);
                return -1;
            }
            break;
        case O_PRETTY:
            o->pretty = 1;
            break;
        case O_HELP:
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    return optind;
}

/* ------------------------------------------------------------------------------------ */
/* inputs: files and directories                                                        */

typedef struct path_list {
    char **items;
    size_t n, cap;
} path_list;

static int path_push(path_list *l, const char *p)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **items = realloc(l->items, cap * sizeof *items);
        if (!items)
            return -1;
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n] = strdup(p);
    return l->items[l->n] ? (int)l->n++ : -1;
}

static void path_free(path_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int has_image_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    static const char *const exts[] = {".jpg", ".jpeg", ".png", ".webp", ".jfif"};
    if (!dot)
        return 0;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (strcasecmp(dot, exts[i]) == 0)
            return 1;
    return 0;
}

/* Expands arguments: a directory contributes its image files (sorted, not recursive). */
static int collect_inputs(int argc, char **argv, path_list *out)
{
    for (int i = 0; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            DIR *d = opendir(argv[i]);
            if (!d) {
                fprintf(stderr, "facework: cannot open directory %s\n", argv[i]);
                return -1;
            }
            size_t first = out->n;
            struct dirent *e;
            while ((e = readdir(d))) {
                if (e->d_name[0] == '.' || !has_image_ext(e->d_name))
                    continue;
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
                if (path_push(out, path) < 0) {
                    closedir(d);
                    return -1;
                }
            }
            closedir(d);
            qsort(out->items + first, out->n - first, sizeof *out->items, cmp_str);
        } else if (path_push(out, argv[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

static void progress(size_t done, size_t total)
{
    if (total < 2 || !isatty(STDERR_FILENO))
        return;
    const int width = 40;
    int filled = (int)((double)done / (double)total * width);
    fprintf(stderr, "\r[%.*s%*s] %zu/%zu images", filled,
            "========================================", width - filled, "", done, total);
    if (done == total)
        fputc('\n', stderr);
    fflush(stderr);
}

/* ------------------------------------------------------------------------------------ */
/* JSON output                                                                          */

static json_t *face_json(const fw_face *f, size_t dim)
{
    json_t *o = json_object();
    json_t *bbox = json_array();
    for (int k = 0; k < 4; k++)
        json_array_append_new(bbox, json_real(f->bbox[k]));
    json_object_set_new(o, "bbox", bbox);
    json_object_set_new(o, "score", json_real(f->score));
    json_t *lm = json_array();
    for (int k = 0; k < 5; k++) {
        json_t *pt = json_array();
        json_array_append_new(pt, json_real(f->landmarks[k][0]));
        json_array_append_new(pt, json_real(f->landmarks[k][1]));
        json_array_append_new(lm, pt);
    }
    json_object_set_new(o, "landmarks", lm);
    if (f->embedding) {
        json_t *e = json_array();
        for (size_t k = 0; k < dim; k++)
            json_array_append_new(e, json_real(f->embedding[k]));
        json_object_set_new(o, "embedding", e);
    }
    return o;
}

static json_t *result_json(const char *path, const fw_result *r, size_t dim)
{
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(path));
    if (r->status != FW_OK) {
        json_t *e = json_object();
        json_object_set_new(e, "code", json_string(fw_err_name(r->status)));
        json_object_set_new(e, "message", json_string(r->message));
        json_object_set_new(o, "error", e);
        return o;
    }
    json_object_set_new(o, "width", json_integer(r->width));
    json_object_set_new(o, "height", json_integer(r->height));
    json_t *faces = json_array();
    for (size_t i = 0; i < r->n_faces; i++)
        json_array_append_new(faces, face_json(&r->faces[i], dim));
    json_object_set_new(o, "faces", faces);
    return o;
}

static size_t dump_flags(int pretty)
{
    return (pretty ? JSON_INDENT(2) : 0) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7);
}

static fw_engine *open_engine(const cli_opts *o)
{
    fw_engine *eng = NULL;
    fw_error err;
    if (fw_engine_new(&o->cfg, &eng, &err)) {
        fprintf(stderr, "facework: %s\n", err.message);
        return NULL;
    }
    return eng;
}

/* Reads and analyzes paths[0..n) in one engine call; unreadable files become per-item
 * errors. */
static int analyze_paths(fw_engine *eng, char **paths, size_t n, const fw_analyze_opts *aopts,
                         fw_result *res)
{
    fw_blob blobs[CLI_BATCH];
    uint8_t *bufs[CLI_BATCH] = {0};
    fw_error read_err[CLI_BATCH];
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        fw_error_clear(&read_err[i]);
        if (fw_read_file(paths[i], 0, &bufs[i], &len, &read_err[i]) != FW_OK)
            bufs[i] = NULL;
        blobs[i].data = bufs[i];
        blobs[i].len = bufs[i] ? len : 0;
    }
    fw_error err;
    fw_err rc = fw_engine_analyze(eng, blobs, n, aopts, res, &err);
    for (size_t i = 0; i < n; i++) {
        if (rc == FW_OK && !bufs[i]) {
            fw_result_clear(&res[i]);
            res[i].status = read_err[i].code;
            snprintf(res[i].message, sizeof res[i].message, "%s", read_err[i].message);
        }
        free(bufs[i]);
    }
    if (rc) {
        fprintf(stderr, "facework: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int cmd_analyze(int argc, char **argv, int embed)
{
    cli_opts o;
    int first = parse_opts(argc, argv, &o);
    if (first < 0)
        return 2;
    if (first >= argc) {
        fprintf(stderr, "facework: %s needs at least one IMAGE or DIR\n", argv[0]);
        return 2;
    }
    o.aopts.embed = embed;
    path_list paths = {0};
    if (collect_inputs(argc - first, argv + first, &paths) < 0) {
        path_free(&paths);
        return 1;
    }
    fw_engine *eng = open_engine(&o);
    if (!eng) {
        path_free(&paths);
        return 1;
    }
    size_t dim = fw_engine_embedding_dim(eng);
    printf("{\"provider\":\"%s\",\"model\":\"%s\",\"results\":[",
           fw_engine_provider(eng, FW_ROLE_DETECTOR), fw_engine_pack_name(eng));
    int status = 0;
    size_t failed = 0;
    for (size_t i = 0; i < paths.n; i += CLI_BATCH) {
        size_t n = paths.n - i < CLI_BATCH ? paths.n - i : CLI_BATCH;
        fw_result res[CLI_BATCH];
        if (analyze_paths(eng, paths.items + i, n, &o.aopts, res) < 0) {
            status = 1;
            break;
        }
        for (size_t k = 0; k < n; k++) {
            json_t *j = result_json(paths.items[i + k], &res[k], dim);
            char *s = json_dumps(j, dump_flags(o.pretty));
            printf("%s%s%s", i + k ? "," : "", o.pretty ? "\n" : "", s ? s : "null");
            free(s);
            json_decref(j);
            failed += res[k].status != FW_OK;
            fw_result_clear(&res[k]);
        }
        progress(i + n, paths.n);
    }
    printf("%s]}\n", o.pretty ? "\n" : "");
    fw_engine_free(eng);
    path_free(&paths);
    if (status == 0 && failed == paths.n && paths.n > 0)
        status = 1; /* nothing could be read */
    return status;
}

/* Index of the face with the largest box, or -1. */
static long largest_face(const fw_result *r)
{
    long best = -1;
    float area = -1;
    for (size_t i = 0; i < r->n_faces; i++) {
        const float *b = r->faces[i].bbox;
        float a = (b[2] - b[0]) * (b[3] - b[1]);
        if (a > area) {
            area = a;
            best = (long)i;
        }
    }
    return best;
}

static int cmd_compare(int argc, char **argv)
{
    cli_opts o;
    int first = parse_opts(argc, argv, &o);
    if (first < 0)
        return 2;
    if (argc - first != 2) {
        fprintf(stderr, "facework: compare needs exactly two images\n");
        return 2;
    }
    fw_engine *eng = open_engine(&o);
    if (!eng)
        return 1;
    fw_result res[2];
    int rc = 1;
    if (analyze_paths(eng, argv + first, 2, &o.aopts, res) < 0) {
        fw_engine_free(eng);
        return 1;
    }
    long fa = -1, fb = -1;
    for (int k = 0; k < 2; k++) {
        if (res[k].status != FW_OK) {
            fprintf(stderr, "facework: %s: %s\n", argv[first + k], res[k].message);
            goto out;
        }
    }
    fa = largest_face(&res[0]);
    fb = largest_face(&res[1]);
    if (fa < 0 || fb < 0) {
        fprintf(stderr, "facework: no face found in %s\n", argv[first + (fa < 0 ? 0 : 1)]);
        goto out;
    }
    float cos = fw_cosine(res[0].faces[fa].embedding, res[1].faces[fb].embedding,
                          fw_engine_embedding_dim(eng));
    json_t *j = json_object();
    json_object_set_new(j, "a", json_string(argv[first]));
    json_object_set_new(j, "b", json_string(argv[first + 1]));
    json_object_set_new(j, "cosine", json_real(cos));
    json_object_set_new(j, "threshold", json_real(o.threshold));
    json_object_set_new(j, "same", json_boolean(cos >= o.threshold));
    char *s = json_dumps(j, dump_flags(o.pretty));
    printf("%s\n", s ? s : "null");
    free(s);
    json_decref(j);
    rc = 0;
out:
    fw_result_clear(&res[0]);
    fw_result_clear(&res[1]);
    fw_engine_free(eng);
    return rc;
}

static int cmd_models(int argc, char **argv)
{
    cli_opts o;
    int first = parse_opts(argc, argv, &o);
    if (first < 0)
        return 2;
    if (first < argc)
        o.cfg.models_dir = argv[first];
    fw_engine *eng = open_engine(&o);
    if (!eng)
        return 1;
    char *s = fw_engine_describe_json(eng);
    printf("%s\n", s ? s : "null");
    free(s);
    fw_engine_free(eng);
    return s ? 0 : 1;
}

int main(int argc, char **argv)
{
    fw_ort_preinit(); /* while this is the only thread */
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    argc--;
    argv++;
    if (!strcmp(cmd, "detect"))
        return cmd_analyze(argc, argv, 0);
    if (!strcmp(cmd, "analyze"))
        return cmd_analyze(argc, argv, 1);
    if (!strcmp(cmd, "compare"))
        return cmd_compare(argc, argv);
    if (!strcmp(cmd, "models"))
        return cmd_models(argc, argv);
    if (!strcmp(cmd, "worker"))
        return fw_cli_worker(argc, argv);
    if (!strcmp(cmd, "backend"))
        return fw_cli_backend(argc, argv);
    if (!strcmp(cmd, "health"))
        return fw_cli_health(argc, argv);
    if (!strcmp(cmd, "submit"))
        return fw_cli_submit(argc, argv);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("facework %s\n", fw_version());
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "facework: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
