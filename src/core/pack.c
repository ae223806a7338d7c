/* Model packs: a directory of ONNX files, each recognised by its signature or named by an
 * optional pack.json, kept as one model per role (detector, landmarks, embedder). */
#include "core/pack.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "util/log.h"

#define MOD "pack"

static const char *const kind_names[] = {
    [FW_KIND_UNKNOWN] = "unknown",
    [FW_KIND_ULTRALIGHT] = "ultralight",
    [FW_KIND_SCRFD] = "scrfd",
    [FW_KIND_LANDMARK68] = "landmark68",
    [FW_KIND_LANDMARK106] = "landmark106",
    [FW_KIND_GENDERAGE] = "genderage",
    [FW_KIND_EMBEDDER] = "embedder",
};
#define N_KINDS ((int)(sizeof kind_names / sizeof kind_names[0]))

const char *fw_model_kind_name(fw_model_kind k)
{
    if ((unsigned)k >= (unsigned)N_KINDS)
        return "unknown";
    return kind_names[k];
}

static int kind_parse(const char *s)
{
    for (int i = 0; i < N_KINDS; i++)
        if (strcasecmp(s, kind_names[i]) == 0)
            return i;
    return -1;
}

/* ------------------------------------------------------------------------------------ */
/* classification                                                                       */

fw_model_kind fw_classify_signature(const fw_model_info *info)
{
    if (!info || info->n_inputs < 1)
        return FW_KIND_UNKNOWN;
    if (info->n_outputs >= 6)
        return FW_KIND_SCRFD;
    const fw_shape *in = &info->inputs[0];
    if (in->rank != 4)
        return FW_KIND_UNKNOWN;
    const int64_t c = in->dims[1], h = in->dims[2], w = in->dims[3];
    if (c == 3 && h == 240 && w == 320 && info->n_outputs == 2)
        return FW_KIND_ULTRALIGHT;
    if (c == 1 && h == 64 && w == 64)
        return FW_KIND_LANDMARK68;
    if (h == 192 && w == 192)
        return FW_KIND_LANDMARK106;
    if (h == 96 && w == 96)
        return FW_KIND_GENDERAGE;
    if (h == w && h >= 112 && h % 16 == 0 && info->n_outputs == 1 && info->outputs[0].rank == 2)
        return FW_KIND_EMBEDDER;
    return FW_KIND_UNKNOWN;
}

/* The detector gives five keypoints itself (SCRFD exported with its keypoint heads). */
static int detector_has_kps(const fw_pack_model *det)
{
    return det->kind == FW_KIND_SCRFD && fw_model_get_info(det->model)->n_outputs >= 9;
}

/* ------------------------------------------------------------------------------------ */
/* pack.json                                                                            */

/* Per-file settings from pack.json; has_* say which were given. */
typedef struct file_cfg {
    int has_kind, has_mean, has_std, has_size, has_threshold, has_nms;
    fw_model_kind kind;
    float mean, std, threshold, nms;
    int input_w, input_h;
} file_cfg;

static fw_err number_field(json_t *obj, const char *file, const char *key, float lo, float hi,
                           int *has, float *out, fw_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return FW_OK;
    if (!json_is_number(v))
        return fw_error_set(err, FW_ERR_PARSE, "pack.json: %s: \"%s\" must be a number", file, key);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi))
        return fw_error_set(err, FW_ERR_PARSE, "pack.json: %s: \"%s\" %g is out of range", file,
                            key, d);
    *out = (float)d;
    *has = 1;
    return FW_OK;
}

/* Reads pack.json's entry for one file (obj may be NULL: no settings). */
static fw_err parse_file_cfg(json_t *obj, const char *file, file_cfg *c, fw_error *err)
{
    memset(c, 0, sizeof *c);
    if (!obj)
        return FW_OK;
    if (!json_is_object(obj))
        return fw_error_set(err, FW_ERR_PARSE, "pack.json: models.%s must be an object", file);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        static const char *const known[] = {"kind",       "mean",      "std",
                                            "input_size", "threshold", "nms"};
        int ok = 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= strcmp(key, known[i]) == 0;
        if (!ok)
            FW_WARN(MOD, "pack.json key ignored", "file=\"%s\" key=\"%s\"", file, key);
    }
    json_t *kind = json_object_get(obj, "kind");
    if (kind) {
        int k = json_is_string(kind) ? kind_parse(json_string_value(kind)) : -1;
        if (k < 0)
            return fw_error_set(err, FW_ERR_PARSE,
                                "pack.json: %s: unknown kind (scrfd, ultralight, landmark68, "
                                "landmark106, genderage, embedder or unknown)",
                                file);
        c->kind = (fw_model_kind)k;
        c->has_kind = 1;
    }
    fw_err rc = number_field(obj, file, "mean", -1e6f, 1e6f, &c->has_mean, &c->mean, err);
    if (!rc)
        rc = number_field(obj, file, "std", 1e-9f, 1e6f, &c->has_std, &c->std, err);
    if (!rc)
        rc =
            number_field(obj, file, "threshold", 0.0f, 1.0f, &c->has_threshold, &c->threshold, err);
    if (!rc)
        rc = number_field(obj, file, "nms", 0.0f, 1.0f, &c->has_nms, &c->nms, err);
    if (rc)
        return rc;
    json_t *size = json_object_get(obj, "input_size");
    if (size) {
        json_t *w = json_array_get(size, 0), *h = json_array_get(size, 1);
        if (!json_is_array(size) || json_array_size(size) != 2 || !json_is_integer(w) ||
            !json_is_integer(h) || json_integer_value(w) < 1 || json_integer_value(h) < 1 ||
            json_integer_value(w) > 8192 || json_integer_value(h) > 8192)
            return fw_error_set(err, FW_ERR_PARSE,
                                "pack.json: %s: \"input_size\" must be [width, height]", file);
        c->input_w = (int)json_integer_value(w);
        c->input_h = (int)json_integer_value(h);
        c->has_size = 1;
    }
    return FW_OK;
}

/* ------------------------------------------------------------------------------------ */
/* directory listing                                                                    */

typedef struct entry {
    char *file; /* base name */
    fw_model *model;
    fw_model_kind kind;
    file_cfg cfg;
} entry;

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->file, ((const entry *)b)->file);
}

static int is_onnx(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 5 && strcasecmp(name + n - 5, ".onnx") == 0;
}

static void free_entries(entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].file);
        fw_model_free(e[i].model);
    }
    free(e);
}

/* Lists dir's regular *.onnx files, sorted by name. */
static fw_err list_models(const char *dir, entry **out, size_t *n_out, fw_error *err)
{
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d)
        return fw_error_set(err, errno == ENOENT || errno == ENOTDIR ? FW_ERR_NOT_FOUND : FW_ERR_IO,
                            "model pack %s: %s", dir, strerror(errno));
    entry *list = NULL;
    size_t n = 0, cap = 0;
    fw_err rc = FW_OK;
    struct dirent *de;
    char path[2048];
    while ((de = readdir(d)) != NULL) {
        if (!is_onnx(de->d_name))
            continue;
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            entry *nl = realloc(list, ncap * sizeof *nl);
            if (!nl) {
                rc = fw_error_set(err, FW_ERR_NOMEM, "out of memory");
                break;
            }
            list = nl;
            cap = ncap;
        }
        memset(&list[n], 0, sizeof list[n]);
        list[n].file = strdup(de->d_name);
        if (!list[n].file) {
            rc = fw_error_set(err, FW_ERR_NOMEM, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (rc) {
        free_entries(list, n);
        return rc;
    }
    if (n == 0) {
        free(list);
        return fw_error_set(err, FW_ERR_NOT_FOUND, "model pack %s has no .onnx files", dir);
    }
    qsort(list, n, sizeof *list, cmp_entry);
    *out = list;
    *n_out = n;
    return FW_OK;
}

/* ------------------------------------------------------------------------------------ */
/* loading                                                                              */

typedef enum role { ROLE_NONE = -1, ROLE_DET = 0, ROLE_LMK, ROLE_EMB } role;

static role kind_role(fw_model_kind k)
{
    switch (k) {
    case FW_KIND_ULTRALIGHT:
    case FW_KIND_SCRFD:
        return ROLE_DET;
    case FW_KIND_LANDMARK68:
        return ROLE_LMK;
    case FW_KIND_EMBEDDER:
        return ROLE_EMB;
    default:
        return ROLE_NONE;
    }
}

static int opts_equal(const fw_session_opts *a, const fw_session_opts *b)
{
    return a->provider == b->provider && a->threads == b->threads && a->device_id == b->device_id;
}

/* Checks that a model's signature can serve the kind it was given (by its signature or by
 * pack.json). */
static fw_err check_kind(const entry *e, fw_error *err)
{
    const fw_model_info *info = fw_model_get_info(e->model);
    const fw_shape *in = &info->inputs[0];
    const char *kind = fw_model_kind_name(e->kind);
    if (in->rank != 4)
        return fw_error_set(err, FW_ERR_MODEL, "%s: a %s model needs an NCHW input (rank %d)",
                            e->file, kind, in->rank);
    switch (e->kind) {
    case FW_KIND_ULTRALIGHT:
        if (info->n_outputs != 2)
            return fw_error_set(err, FW_ERR_MODEL, "%s: ultralight needs 2 outputs, has %zu",
                                e->file, info->n_outputs);
        break;
    case FW_KIND_SCRFD:
        if (info->n_outputs != 6 && info->n_outputs != 9)
            return fw_error_set(err, FW_ERR_MODEL, "%s: scrfd needs 6 or 9 outputs, has %zu",
                                e->file, info->n_outputs);
        break;
    case FW_KIND_LANDMARK68:
        if (in->dims[1] != 1 || info->outputs[0].rank != 2 || info->outputs[0].dims[1] != 136)
            return fw_error_set(err, FW_ERR_MODEL,
                                "%s: landmark68 needs a [N,1,H,W] input and a [N,136] output",
                                e->file);
        break;
    case FW_KIND_EMBEDDER:
        if (in->dims[1] != 3 || info->outputs[0].rank != 2 || info->outputs[0].dims[1] <= 0)
            return fw_error_set(err, FW_ERR_MODEL,
                                "%s: embedder needs a [N,3,H,W] input and a [N,D] output", e->file);
        break;
    default:
        break;
    }
    return FW_OK;
}

/* Loads one file with the options of the role its kind plays. When the roles have different
 * options and the kind is not stated, the file is first opened on the CPU to read its
 * signature, then reopened with its role's options. */
static fw_err load_entry(const char *dir, entry *e, const fw_session_opts *const ropts[3],
                         int same_opts, fw_error *err)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, e->file);
    if (e->cfg.has_kind) {
        e->kind = e->cfg.kind;
        role r = kind_role(e->kind);
        if (r == ROLE_NONE)
            return FW_OK; /* stated as unused: not even loaded */
        return fw_model_load(path, ropts[r], &e->model, err);
    }
    const fw_session_opts probe = {.provider = FW_PROVIDER_CPU, .threads = 1};
    fw_err rc = fw_model_load(path, same_opts ? ropts[0] : &probe, &e->model, err);
    if (rc)
        return rc;
    e->kind = fw_classify_signature(fw_model_get_info(e->model));
    role r = kind_role(e->kind);
    if (r == ROLE_NONE || same_opts || opts_equal(ropts[r], &probe))
        return FW_OK;
    fw_model_free(e->model);
    e->model = NULL;
    return fw_model_load(path, ropts[r], &e->model, err);
}

/* Input size: the model's own when fixed (pack.json must agree), else pack.json's, else the
 * kind's default. */
static fw_err input_size(const entry *e, int def_w, int def_h, int *w, int *h, fw_error *err)
{
    const fw_shape *in = &fw_model_get_info(e->model)->inputs[0];
    const int64_t mh = in->dims[2], mw = in->dims[3];
    if (mh > 0 && mw > 0) {
        if (e->cfg.has_size && (e->cfg.input_w != mw || e->cfg.input_h != mh))
            return fw_error_set(err, FW_ERR_MODEL,
                                "%s: pack.json input_size %dx%d, but the model's input is fixed "
                                "at %lldx%lld",
                                e->file, e->cfg.input_w, e->cfg.input_h, (long long)mw,
                                (long long)mh);
        *w = (int)mw;
        *h = (int)mh;
    } else if (e->cfg.has_size) {
        *w = e->cfg.input_w;
        *h = e->cfg.input_h;
    } else {
        *w = def_w;
        *h = def_h;
    }
    if (e->kind == FW_KIND_SCRFD && (*w % 32 != 0 || *h % 32 != 0))
        return fw_error_set(err, FW_ERR_MODEL, "%s: SCRFD input %dx%d is not a multiple of 32",
                            e->file, *w, *h);
    return FW_OK;
}

/* Moves entry e into role slot pm with its preprocessing and thresholds (defaults per kind,
 * then pack.json). det_kind is the pack's detector kind (it picks the embedder's norm). */
static fw_err take_role(entry *e, fw_pack_model *pm, fw_model_kind det_kind, fw_error *err)
{
    fw_norm norm = {0.0f, 1.0f};
    float thr = 0.0f, nms = 0.0f;
    int dw = 0, dh = 0;
    switch (e->kind) {
    case FW_KIND_ULTRALIGHT:
        norm = (fw_norm){127.0f, 128.0f};
        thr = 0.65f;
        nms = 0.4f;
        dw = 320;
        dh = 240;
        break;
    case FW_KIND_SCRFD:
        norm = (fw_norm){127.5f, 128.0f};
        thr = 0.5f;
        nms = 0.4f;
        dw = dh = 640;
        break;
    case FW_KIND_LANDMARK68:
        norm = (fw_norm){0.0f, 256.0f};
        dw = dh = 64;
        break;
    case FW_KIND_EMBEDDER:
        norm =
            det_kind == FW_KIND_ULTRALIGHT ? (fw_norm){127.0f, 128.0f} : (fw_norm){127.5f, 127.5f};
        dw = dh = 112;
        break;
    default:
        return fw_error_set(err, FW_ERR_INTERNAL, "%s: kind %s has no role", e->file,
                            fw_model_kind_name(e->kind));
    }
    int w = 0, h = 0;
    fw_err rc = input_size(e, dw, dh, &w, &h, err);
    if (rc)
        return rc;
    if (e->cfg.has_mean)
        norm.mean = e->cfg.mean;
    if (e->cfg.has_std)
        norm.std = e->cfg.std;
    if (e->cfg.has_threshold)
        thr = e->cfg.threshold;
    if (e->cfg.has_nms)
        nms = e->cfg.nms;
    pm->model = e->model;
    e->model = NULL;
    pm->kind = e->kind;
    pm->norm = norm;
    pm->input_w = w;
    pm->input_h = h;
    pm->threshold = thr;
    pm->nms_iou = nms;
    pm->batch_dynamic = fw_model_get_info(pm->model)->inputs[0].dims[0] < 0;
    return FW_OK;
}

static void log_role(const fw_pack_model *pm)
{
    const char *path = fw_model_get_info(pm->model)->path;
    const char *file = strrchr(path, '/');
    FW_INFO(MOD, "model", "file=%s kind=%s provider=%s input=%dx%d batch=%s mean=%g std=%g",
            file ? file + 1 : path, fw_model_kind_name(pm->kind), fw_model_provider(pm->model),
            pm->input_w, pm->input_h, pm->batch_dynamic ? "dynamic" : "fixed",
            (double)pm->norm.mean, (double)pm->norm.std);
}

/* Reads pack.json when present: *root is NULL without one. */
static fw_err read_pack_json(const char *dir, json_t **root, fw_error *err)
{
    *root = NULL;
    char path[2048];
    snprintf(path, sizeof path, "%s/pack.json", dir);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return FW_OK;
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j)
        return fw_error_set(err, FW_ERR_PARSE, "%s:%d: %s", path, jerr.line, jerr.text);
    json_t *name = json_object_get(j, "name");
    json_t *models = json_object_get(j, "models");
    if (!json_is_object(j) || (name && !json_is_string(name)) ||
        (models && !json_is_object(models))) {
        json_decref(j);
        return fw_error_set(err, FW_ERR_PARSE,
                            "%s: expected {\"name\": string, \"models\": {file: {...}}}", path);
    }
    *root = j;
    return FW_OK;
}

static void base_name(const char *dir, char *out, size_t cap)
{
    size_t end = strlen(dir);
    while (end > 1 && dir[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && dir[start - 1] != '/')
        start--;
    size_t n = end - start;
    if (n == 0 || (n == 1 && dir[start] == '/'))
        snprintf(out, cap, "pack");
    else
        snprintf(out, cap, "%.*s", (int)n, dir + start);
}

static fw_err load_all(fw_pack *p, entry *ents, size_t n, json_t *models,
                       const fw_session_opts *const ropts[3], fw_error *err)
{
    /* pack.json entries must name files that are here */
    const char *key;
    json_t *v;
    json_object_foreach(models, key, v)
    {
        size_t i = 0;
        while (i < n && strcmp(ents[i].file, key) != 0)
            i++;
        if (i == n)
            return fw_error_set(err, FW_ERR_NOT_FOUND, "pack.json names %s, which is not in %s",
                                key, p->dir);
    }
    const int same = opts_equal(ropts[0], ropts[1]) && opts_equal(ropts[0], ropts[2]);
    entry *slot[3] = {NULL, NULL, NULL};
    for (size_t i = 0; i < n; i++) {
        entry *e = &ents[i];
        fw_err rc = parse_file_cfg(json_object_get(models, e->file), e->file, &e->cfg, err);
        if (!rc)
            rc = load_entry(p->dir, e, ropts, same, err);
        if (rc)
            return rc;
        role r = kind_role(e->kind);
        const char *why = NULL;
        if (r == ROLE_NONE)
            why = e->cfg.has_kind              ? "pack.json gives it no role"
                  : e->kind == FW_KIND_UNKNOWN ? "unknown signature"
                                               : "kind not used";
        else if (slot[r])
            why = "role already taken";
        if (why) {
            FW_INFO(MOD, "model skipped", "file=%s kind=%s reason=\"%s\"", e->file,
                    fw_model_kind_name(e->kind), why);
            fw_model_free(e->model);
            e->model = NULL;
            continue;
        }
        rc = check_kind(e, err);
        if (rc)
            return rc;
        slot[r] = e;
    }
    if (!slot[ROLE_DET])
        return fw_error_set(err, FW_ERR_MODEL, "model pack %s has no face detector", p->dir);
    if (!slot[ROLE_EMB])
        return fw_error_set(err, FW_ERR_MODEL, "model pack %s has no face embedder", p->dir);
    fw_err rc = take_role(slot[ROLE_DET], &p->detector, FW_KIND_UNKNOWN, err);
    if (!rc)
        rc = take_role(slot[ROLE_EMB], &p->embedder, p->detector.kind, err);
    if (rc)
        return rc;
    if (detector_has_kps(&p->detector)) {
        if (slot[ROLE_LMK])
            FW_INFO(MOD, "model skipped", "file=%s kind=landmark68 reason=\"%s\"",
                    slot[ROLE_LMK]->file, "the detector gives keypoints");
    } else {
        if (!slot[ROLE_LMK])
            return fw_error_set(err, FW_ERR_MODEL,
                                "model pack %s: the %s detector gives no keypoints and there "
                                "is no 68-point landmark model",
                                p->dir, fw_model_kind_name(p->detector.kind));
        rc = take_role(slot[ROLE_LMK], &p->landmarks, p->detector.kind, err);
        if (rc)
            return rc;
        p->has_landmarks = 1;
    }
    const fw_shape *eo = &fw_model_get_info(p->embedder.model)->outputs[0];
    p->embedding_dim = (size_t)eo->dims[eo->rank - 1];
    log_role(&p->detector);
    if (p->has_landmarks)
        log_role(&p->landmarks);
    log_role(&p->embedder);
    return FW_OK;
}

fw_err fw_pack_load(const char *dir, const fw_session_opts *det_opts,
                    const fw_session_opts *lmk_opts, const fw_session_opts *emb_opts, fw_pack **out,
                    fw_error *err)
{
    if (!out)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_pack_load: out is NULL");
    *out = NULL;
    if (!dir || !*dir)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_pack_load: no directory");
    if (strlen(dir) >= sizeof((fw_pack *)0)->dir)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "model pack path too long");
    static const fw_session_opts auto_opts = {.provider = FW_PROVIDER_AUTO};
    const fw_session_opts *ropts[3] = {det_opts ? det_opts : &auto_opts,
                                       lmk_opts ? lmk_opts : &auto_opts,
                                       emb_opts ? emb_opts : &auto_opts};
    entry *ents = NULL;
    size_t n = 0;
    fw_err rc = list_models(dir, &ents, &n, err);
    if (rc)
        return rc;
    json_t *root = NULL;
    rc = read_pack_json(dir, &root, err);
    if (rc) {
        free_entries(ents, n);
        return rc;
    }
    fw_pack *p = calloc(1, sizeof *p);
    if (!p) {
        json_decref(root);
        free_entries(ents, n);
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    }
    snprintf(p->dir, sizeof p->dir, "%s", dir);
    json_t *name = json_object_get(root, "name");
    if (name && *json_string_value(name))
        snprintf(p->name, sizeof p->name, "%s", json_string_value(name));
    else
        base_name(dir, p->name, sizeof p->name);
    rc = load_all(p, ents, n, json_object_get(root, "models"), ropts, err);
    json_decref(root);
    free_entries(ents, n);
    if (rc) {
        fw_pack_free(p);
        return rc;
    }
    *out = p;
    return FW_OK;
}

void fw_pack_free(fw_pack *p)
{
    if (!p)
        return;
    fw_model_free(p->detector.model);
    fw_model_free(p->landmarks.model);
    fw_model_free(p->embedder.model);
    free(p);
}
