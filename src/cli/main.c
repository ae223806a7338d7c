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
#include "util/base64.h"
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
            "  --provider NAME        auto|cpu|cuda|tensorrt|dml|rocm|migraphx|coreml|openvino|\n"
            "                         webgpu (default auto; auto never picks a software WebGPU\n"
            "                         device such as lavapipe, webgpu does)\n"
            "  --max-batch N          largest model batch (default 64); on a GPU the warm-up\n"
            "                         runs every power of two up to it\n"
            "  --webgpu-backend B     default|vulkan|d3d12 (WebGPU's graphics API)\n"
            "  --webgpu-power P       high-performance|low-power (which adapter WebGPU picks)\n"
            "  --threads N            ONNX Runtime intra-op threads (default: ORT's choice)\n"
            "  --min-score F          detector threshold (default: the model's)\n"
            "  --max-faces N          keep the N highest-scoring faces per image\n"
            "  --min-face-size PX     drop smaller faces\n"
            "  --threshold F          compare: same-person threshold (default 0.42)\n"
            "  --quality-preset NAME  none|ingest|enroll|verify|search: judge faces\n"
            "                         (docs/quality.md); detect/analyze drop unusable faces,\n"
            "                         compare refuses an image without a usable face\n"
            "  --quality-action A     annotate|filter|reject (default: filter with a preset;\n"
            "                         compare: reject)\n"
            "  --no-quality           omit the per-face quality object\n"
            "  --crops MODE           none|aligned|box: add an encoded crop to each face\n"
            "  --face-margin F        box crops: margin per side, fraction of the box (0.2)\n"
            "  --crop-format FMT      jpeg|png (default jpeg)\n"
            "  --crop-quality N       JPEG quality 1..100 (default 95)\n"
            "  --crops-dir DIR        write crops to DIR/<image>_<face>.<ext> instead of\n"
            "                         base64 in the JSON\n"
            "  --pretty               indent the JSON output\n"
            "\n"
            "`facework worker --help` lists the worker's options.\n");
}

typedef struct cli_opts {
    fw_engine_config cfg;
    fw_analyze_opts aopts;
    float threshold;
    int pretty;
    int action_given;      /* --quality-action was given */
    int preset_given;      /* --quality-preset other than none */
    const char *crops_dir; /* --crops-dir */
} cli_opts;

/* Index of s in names[0..n), or -1. */
static int pick_name(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

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
        O_MAX_BATCH,
        O_WEBGPU_BACKEND,
        O_WEBGPU_POWER,
        O_PRETTY,
        O_PRESET,
        O_ACTION,
        O_NO_QUALITY,
        O_CROPS,
        O_MARGIN,
        O_CROP_FORMAT,
        O_CROP_QUALITY,
        O_CROPS_DIR,
        O_HELP
    };
    static const char *const actions[] = {"annotate", "filter", "reject"};
    static const char *const crops[] = {"none", "aligned", "box"};
    static const struct option longopts[] = {
        {"models", required_argument, 0, O_MODELS},
        {"provider", required_argument, 0, O_PROVIDER},
        {"threads", required_argument, 0, O_THREADS},
        {"min-score", required_argument, 0, O_MIN_SCORE},
        {"max-faces", required_argument, 0, O_MAX_FACES},
        {"min-face-size", required_argument, 0, O_MIN_FACE},
        {"threshold", required_argument, 0, O_THRESHOLD},
        {"max-batch", required_argument, 0, O_MAX_BATCH},
        {"webgpu-backend", required_argument, 0, O_WEBGPU_BACKEND},
        {"webgpu-power", required_argument, 0, O_WEBGPU_POWER},
        {"pretty", no_argument, 0, O_PRETTY},
        {"quality-preset", required_argument, 0, O_PRESET},
        {"quality-action", required_argument, 0, O_ACTION},
        {"no-quality", no_argument, 0, O_NO_QUALITY},
        {"crops", required_argument, 0, O_CROPS},
        {"face-margin", required_argument, 0, O_MARGIN},
        {"crop-format", required_argument, 0, O_CROP_FORMAT},
        {"crop-quality", required_argument, 0, O_CROP_QUALITY},
        {"crops-dir", required_argument, 0, O_CROPS_DIR},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    fw_engine_config_init(&o->cfg);
    fw_analyze_opts_init(&o->aopts);
    o->threshold = DEFAULT_COMPARE_THRESHOLD;
    o->pretty = 0;
    o->action_given = o->preset_given = 0;
    o->crops_dir = NULL;
    int k;
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
        case O_MAX_BATCH: {
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 1 || v > 1024) {
                fprintf(stderr, "facework: --max-batch: expected 1..1024: %s\n", optarg);
                return -1;
            }
            o->cfg.max_batch = (int)v;
            break;
        }
        case O_WEBGPU_BACKEND:
            o->cfg.webgpu_backend = optarg;
            break;
        case O_WEBGPU_POWER:
            o->cfg.webgpu_power = optarg;
            break;
        case O_PRETTY:
            o->pretty = 1;
            break;
        case O_PRESET:
            if (fw_quality_preset(optarg, &o->aopts.thresholds) != FW_OK) {
                fprintf(stderr,
                        "facework: --quality-preset: none|ingest|enroll|verify|search: %s\n",
                        optarg);
                return -1;
            }
            o->preset_given = strcmp(optarg, "none") != 0;
            break;
        case O_ACTION:
            if ((k = pick_name(optarg, actions, 3)) < 0) {
                fprintf(stderr, "facework: --quality-action: annotate|filter|reject: %s\n", optarg);
                return -1;
            }
            o->aopts.quality_action = (fw_quality_action)k;
            o->action_given = 1;
            break;
        case O_NO_QUALITY:
            o->aopts.quality = false;
            break;
        case O_CROPS:
            if ((k = pick_name(optarg, crops, 3)) < 0) {
                fprintf(stderr, "facework: --crops: none|aligned|box: %s\n", optarg);
                return -1;
            }
            o->aopts.crops = (fw_crop_mode)k;
            break;
        case O_MARGIN:
            o->aopts.face_margin = strtof(optarg, &end);
            if (*end || !(o->aopts.face_margin >= 0 && o->aopts.face_margin <= 2)) {
                fprintf(stderr, "facework: --face-margin: expected 0..2: %s\n", optarg);
                return -1;
            }
            break;
        case O_CROP_FORMAT:
            if (strcmp(optarg, "jpeg") == 0 || strcmp(optarg, "jpg") == 0) {
                o->aopts.crop_format = FW_FORMAT_JPEG;
            } else if (strcmp(optarg, "png") == 0) {
                o->aopts.crop_format = FW_FORMAT_PNG;
            } else {
                fprintf(stderr, "facework: --crop-format: jpeg|png: %s\n", optarg);
                return -1;
            }
            break;
        case O_CROP_QUALITY:
            o->aopts.crop_quality = (int)strtol(optarg, &end, 10);
            if (*end || o->aopts.crop_quality < 1 || o->aopts.crop_quality > 100) {
                fprintf(stderr, "facework: --crop-quality: expected 1..100: %s\n", optarg);
                return -1;
            }
            break;
        case O_CROPS_DIR:
            o->crops_dir = optarg;
            break;
        case O_HELP:
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (o->preset_given && !o->action_given)
        o->aopts.quality_action = FW_QUALITY_FILTER;
    if (o->crops_dir && o->aopts.crops == FW_CROP_NONE) {
        fprintf(stderr, "facework: --crops-dir needs --crops aligned|box\n");
        return -1;
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

static json_t *quality_json(const fw_face_quality *q)
{
    json_t *o = json_object();
    json_object_set_new(o, "score", json_real(q->score));
    json_object_set_new(o, "usable", json_boolean(q->usable));
    json_t *reasons = json_array();
    for (unsigned bit = 1; bit < (1u << FW_QUALITY__REASONS); bit <<= 1)
        if (q->reasons & bit)
            json_array_append_new(reasons, json_string(fw_quality_reason_name(bit)));
    json_object_set_new(o, "reasons", reasons);
    json_t *sh = json_object();
    json_object_set_new(sh, "aligned", json_real(q->sharpness_aligned));
    json_object_set_new(sh, "box", json_real(q->sharpness_box));
    json_object_set_new(o, "sharpness", sh);
    json_object_set_new(o, "yaw", json_real(q->yaw));
    json_object_set_new(o, "pitch", json_real(q->pitch));
    json_object_set_new(o, "roll", json_real(q->roll));
    json_object_set_new(o, "size", json_real(q->size));
    return o;
}

/* Where --crops-dir puts face k of the image at path. */
static void crop_path(const char *dir, const char *path, size_t k, const fw_face_crop *c, char *out,
                      size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    int stem = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    snprintf(out, cap, "%s/%.*s_%zu.%s", dir, stem, base, k,
             c->format == FW_FORMAT_PNG ? "png" : "jpg");
}

/* The face's crop: written under crops_dir (its path in the JSON), else base64. */
static json_t *crop_json(const fw_face_crop *c, const char *crops_dir, const char *path, size_t k)
{
    json_t *o = json_object();
    json_object_set_new(o, "format", json_string(c->format == FW_FORMAT_PNG ? "png" : "jpeg"));
    json_object_set_new(o, "width", json_integer(c->width));
    json_object_set_new(o, "height", json_integer(c->height));
    if (crops_dir) {
        char file[4096];
        crop_path(crops_dir, path, k, c, file, sizeof file);
        FILE *f = fopen(file, "wb");
        int ok = f && fwrite(c->data, 1, c->len, f) == c->len;
        if (f && fclose(f) != 0)
            ok = 0;
        if (!ok) {
            fprintf(stderr, "facework: cannot write %s\n", file);
            json_object_set_new(o, "error", json_string("could not be written"));
        } else {
            json_object_set_new(o, "path", json_string(file));
        }
        return o;
    }
    size_t n = fw_base64_encoded_len(c->len);
    char *b64 = malloc(n + 1);
    if (b64) {
        fw_base64_encode(c->data, c->len, b64);
        json_object_set_new(o, "data", json_stringn(b64, n));
        free(b64);
    }
    return o;
}

static json_t *face_json(const fw_face *f, size_t dim, const char *crops_dir, const char *path,
                         size_t index)
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
    if (f->has_quality)
        json_object_set_new(o, "quality", quality_json(&f->quality));
    if (f->crop.data)
        json_object_set_new(o, "crop", crop_json(&f->crop, crops_dir, path, index));
    return o;
}

static json_t *result_json(const char *path, const fw_result *r, size_t dim, const char *crops_dir)
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
        json_array_append_new(faces, face_json(&r->faces[i], dim, crops_dir, path, i));
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
            json_t *j = result_json(paths.items[i + k], &res[k], dim, o.crops_dir);
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
    if (o.preset_given && !o.action_given)
        o.aopts.quality_action = FW_QUALITY_REJECT; /* refuse an image without a usable face */
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
    if (res[0].faces[fa].has_quality && res[1].faces[fb].has_quality) {
        json_t *q = json_object();
        json_object_set_new(q, "a", quality_json(&res[0].faces[fa].quality));
        json_object_set_new(q, "b", quality_json(&res[1].faces[fb].quality));
        json_object_set_new(j, "quality", q);
    }
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
