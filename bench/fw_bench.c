/* In-process benchmark of the face pipeline against the bare models.
 *
 * For each image set (the six public group photos as shipped, 2.5-3 MP, and the same
 * photos re-encoded at 1440 px wide, 1.4-1.7 MP) it measures, in one
 * run and on the same inputs and thread count:
 *   - the pipeline (decode -> detect -> landmarks -> align -> embed), one image per call,
 *     with wall time split into decode / preprocess / inference / postprocess;
 *   - the bare ONNX Runtime run time of the same models on the same tensors, in the same
 *     call pattern (detector batch 1, landmarks and embedder batched per image).
 * Overhead = (pipeline wall - bare inference) / bare inference: the goal is <= 15%.
 *
 * --ceiling: the bare-model ceiling on the provider instead (the GPU figure the worker is
 * compared with): the captured tensors of the six photos tiled into batches of B images
 * (B from --ceiling-batches, default 1,8,32,64), each batch one detector run, then its faces
 * (B x 22/6 on average) through the landmark and embedding models in runs of at most
 * --max-batch faces, on --streams threads at once (default 2: while one stream's batch is
 * copied, another's runs). Images/s per B, each model's ms per run; the last line reads
 * "ceiling_best_img_per_s=N" for scripts.
 *
 * --quality: what per-face quality and crops add: the pipeline with quality off, on, with box
 * crops and with aligned crops, interleaved, per face (wall and CPU ms) and per stage.
 *
 * usage: fw_bench [--models DIR] [--photos DIR] [--provider P] [--threads N] [--rounds R]
 *                 [--batch B] [--repeats N] [--max-batch N] [--quality]
 *                 [--ceiling [--ceiling-batches 1,8,64] [--streams S] [--seconds T]]
 */
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <turbojpeg.h>

#include "core/align.h"
#include "core/vkinfo.h"
#include "core/landmark.h"
#include "core/pack.h"
#include "core/pipeline.h"
#include "core/preprocess.h"
#include "facework/facework.h"

#define N_PHOTOS 6

typedef struct image_set {
    const char *name;
    fw_blob blobs[N_PHOTOS];
    uint8_t *owned[N_PHOTOS];
    double megapixels;
} image_set;

/* When a role runs on WebGPU: a line naming its adapter (read from Vulkan), flagged when it
 * is a software device, whose figures say nothing about a GPU's speed. */
static void print_webgpu_device(const fw_engine *eng)
{
    int on = 0;
    for (int r = 0; r < FW_ROLE__COUNT; r++)
        on |= !strcmp(fw_engine_provider(eng, (fw_role)r), "webgpu");
    if (!on)
        return;
    const fw_vk_devices *vk = fw_vk_devices_get();
    const int i = fw_vk_preferred(vk, false);
    if (i < 0) {
        printf("webgpu adapter: unknown (%s)\n", vk->error);
        return;
    }
    const char *vendor = fw_vk_vendor_name(vk->dev[i].vendor_id);
    printf("webgpu adapter: %s (%s, %s, Vulkan %s)%s\n", vk->dev[i].name, vendor ? vendor : "?",
           fw_vk_type_name(vk->dev[i].type), vk->dev[i].api_version,
           vk->dev[i].type == FW_VK_TYPE_CPU
               ? ": a SOFTWARE device (CPU emulation of a GPU): correctness cost, not GPU speed"
               : "");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process: unlike wall time, other processes on a loaded machine
 * barely change it, so the pipeline/bare ratio stays stable. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const fw_error *e)
{
    fprintf(stderr, "fw_bench: %s: %s\n", what, e ? e->message : "failed");
    exit(1);
}

/* Re-encodes img scaled to width w (bilinear) at JPEG quality 90. */
static uint8_t *reencode(const fw_image *img, int w, size_t *len)
{
    float s = (float)w / (float)img->width;
    int h = (int)lroundf(img->height * s);
    fw_image *dst = fw_image_new(w, h);
    if (!dst)
        die("alloc", NULL);
    float M[2][3] = {{s, 0, 0.5f * s - 0.5f}, {0, s, 0.5f * s - 0.5f}};
    fw_warp_affine(img, M, dst->pixels, w, h);
    tjhandle t = tjInitCompress();
    unsigned char *buf = NULL;
    unsigned long n = 0;
    if (!t || tjCompress2(t, dst->pixels, w, w * 3, h, TJPF_RGB, &buf, &n, TJSAMP_420, 90, 0))
        die("jpeg encode", NULL);
    tjDestroy(t);
    fw_image_free(dst);
    uint8_t *out = malloc(n);
    if (!out)
        die("alloc", NULL);
    memcpy(out, buf, n);
    tjFree(buf);
    *len = n;
    return out;
}

static void load_sets(const char *dir, image_set *native, image_set *small)
{
    native->name = "native 2.5-3.0 MP";
    small->name = "1440 px wide";
    native->megapixels = small->megapixels = 0;
    for (int i = 0; i < N_PHOTOS; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/sample%d.jpg", dir, i + 1);
        size_t len;
        fw_error e;
        if (fw_read_file(path, 0, &native->owned[i], &len, &e))
            die(path, &e);
        native->blobs[i] = (fw_blob){native->owned[i], len};
        fw_image *img;
        if (fw_image_decode(native->owned[i], len, NULL, &img, &e))
            die(path, &e);
        native->megapixels += img->width * (double)img->height / 1e6 / N_PHOTOS;
        small->owned[i] = reencode(img, 1440, &len);
        small->blobs[i] = (fw_blob){small->owned[i], len};
        small->megapixels += 1440.0 * (1440.0 * img->height / img->width) / 1e6 / N_PHOTOS;
        fw_image_free(img);
    }
}

/* Captured model inputs for one image, to time the bare models on. */
typedef struct captured {
    float *det;
    size_t n_faces;
    float *lmk;
    float *emb;
} captured;

static void capture(fw_engine *eng, const fw_blob *b, captured *c)
{
    const fw_pack *p = fw__engine_pack(eng);
    fw_item it;
    fw_item_init(&it, b->data, b->len);
    fw_item *ptr = &it;
    fw_error e;
    if (fw_pipeline_decode(eng, &it, NULL) || fw_pipeline_detect(eng, &ptr, 1, NULL, NULL, &e))
        die("capture", &e);
    const fw_pack_model *det = &p->detector;
    c->det = malloc(sizeof(float) * 3 * (size_t)det->input_w * det->input_h);
    fw_pre_resize_chw(it.img, det->input_w, det->input_h, det->norm.mean, det->norm.std, c->det);
    c->n_faces = it.n_dets;
    const size_t lper = FW_LMK68_SIZE * FW_LMK68_SIZE;
    c->lmk = malloc(sizeof(float) * lper * (it.n_dets ? it.n_dets : 1));
    float sx = (float)it.img->width / it.orig_w, sy = (float)it.img->height / it.orig_h;
    for (size_t k = 0; k < it.n_dets; k++) {
        const float *bx = it.dets[k].box;
        float box[4] = {bx[0] * sx, bx[1] * sy, bx[2] * sx, bx[3] * sy}, crop[4];
        fw_lmk68_prepare(it.img, box, c->lmk + k * lper, crop);
    }
    size_t eper = fw_pipeline_embed_input_size(eng);
    c->emb = malloc(sizeof(float) * eper * (it.n_dets ? it.n_dets : 1));
    if (fw_pipeline_embed_prepare(eng, &it, c->emb, NULL, &e))
        die("capture", &e);
    fw_item_clear(&it);
}

static void run_model(fw_model *m, const float *in, size_t n, int c, int h, int w)
{
    fw_shape s = {.rank = 4, .dims = {(int64_t)n, c, h, w}};
    fw_tensor outs[FW_MAX_OUTPUTS] = {0};
    fw_error e;
    if (fw_model_run(m, in, &s, outs, &e))
        die("bare run", &e);
    for (size_t i = 0; i < fw_model_get_info(m)->n_outputs; i++)
        fw_tensor_clear(&outs[i]);
}

/* Seconds for `rounds` passes of the bare models over the captured inputs; *cpu gets the
 * process CPU seconds spent. */
static double bare_time(fw_engine *eng, captured *cap, int rounds, double *cpu)
{
    double c0 = cpu_s();
    const fw_pack *p = fw__engine_pack(eng);
    const fw_pack_model *det = &p->detector, *lmk = &p->landmarks, *emb = &p->embedder;
    double t0 = now_s();
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < N_PHOTOS; i++) {
            run_model(det->model, cap[i].det, 1, 3, det->input_h, det->input_w);
            if (!cap[i].n_faces)
                continue;
            if (p->has_landmarks)
                run_model(lmk->model, cap[i].lmk, cap[i].n_faces, 1, FW_LMK68_SIZE, FW_LMK68_SIZE);
            run_model(emb->model, cap[i].emb, cap[i].n_faces, 3, emb->input_h, emb->input_w);
        }
    *cpu = cpu_s() - c0;
    return now_s() - t0;
}

static double pipeline_time_opts(fw_engine *eng, const image_set *set, int rounds, int batch,
                                 const fw_analyze_opts *opts, fw_stage_times *st, double *cpu,
                                 size_t *faces);

static double pipeline_time(fw_engine *eng, const image_set *set, int rounds, int batch,
                            fw_stage_times *st, double *cpu)
{
    return pipeline_time_opts(eng, set, rounds, batch, NULL, st, cpu, NULL);
}

/* The same with opts; *faces (when non-NULL) gets the faces returned per round. */
static double pipeline_time_opts(fw_engine *eng, const image_set *set, int rounds, int batch,
                                 const fw_analyze_opts *opts, fw_stage_times *st, double *cpu,
                                 size_t *faces)
{
    fw_result res[N_PHOTOS];
    fw_error e;
    double c0 = cpu_s();
    double t0 = now_s();
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < N_PHOTOS; i += batch) {
            int n = N_PHOTOS - i < batch ? N_PHOTOS - i : batch;
            if (fw_pipeline_analyze(eng, set->blobs + i, (size_t)n, opts, res, st, &e))
                die("analyze", &e);
            for (int k = 0; k < n; k++) {
                if (faces && r == 0)
                    *faces += res[k].n_faces;
                fw_result_clear(&res[k]);
            }
        }
    *cpu = cpu_s() - c0;
    return now_s() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------------------------ */
/* --ceiling: the bare models at batch B, S streams                                     */

typedef struct ceiling_plan {
    fw_engine *eng;
    int batch, max_faces;
    float *det;       /* batch x detector input */
    float *lmk, *emb; /* faces x inputs */
    size_t faces;     /* faces of the batch */
    double seconds;   /* measured window per stream */
} ceiling_plan;

typedef struct ceiling_stream {
    const ceiling_plan *plan;
    uint64_t batches;
    double det_s, lmk_s, emb_s, wall_s;
    uint64_t det_runs, lmk_runs, emb_runs;
} ceiling_stream;

static double timed_run(fw_model *m, const float *in, size_t n, int c, int h, int w)
{
    double t0 = now_s();
    run_model(m, in, n, c, h, w);
    return now_s() - t0;
}

static void *ceiling_thread(void *arg)
{
    ceiling_stream *cs = arg;
    const ceiling_plan *pl = cs->plan;
    const fw_pack *p = fw__engine_pack(pl->eng);
    fw_model *det = fw__engine_model(pl->eng, FW_ROLE_DETECTOR);
    fw_model *lmk = fw__engine_model(pl->eng, FW_ROLE_LANDMARKS);
    fw_model *emb = fw__engine_model(pl->eng, FW_ROLE_EMBEDDER);
    const size_t lper = FW_LMK68_SIZE * FW_LMK68_SIZE;
    const size_t eper = fw_pipeline_embed_input_size(pl->eng);
    double t0 = now_s();
    while (now_s() - t0 < pl->seconds || cs->batches == 0) {
        cs->det_s +=
            timed_run(det, pl->det, (size_t)pl->batch, 3, p->detector.input_h, p->detector.input_w);
        cs->det_runs++;
        for (size_t f = 0; f < pl->faces; f += (size_t)pl->max_faces) {
            size_t c =
                pl->faces - f < (size_t)pl->max_faces ? pl->faces - f : (size_t)pl->max_faces;
            if (p->has_landmarks) {
                cs->lmk_s += timed_run(lmk, pl->lmk + f * lper, c, 1, FW_LMK68_SIZE, FW_LMK68_SIZE);
                cs->lmk_runs++;
            }
            cs->emb_s +=
                timed_run(emb, pl->emb + f * eper, c, 3, p->embedder.input_h, p->embedder.input_w);
            cs->emb_runs++;
        }
        cs->batches++;
    }
    cs->wall_s = now_s() - t0;
    return NULL;
}

/* Tiles the captured tensors of the photos into one batch of B images. */
static void ceiling_fill(fw_engine *eng, captured *cap, int batch, ceiling_plan *pl)
{
    const fw_pack *p = fw__engine_pack(eng);
    const size_t dper = 3 * (size_t)p->detector.input_w * (size_t)p->detector.input_h;
    const size_t lper = FW_LMK68_SIZE * FW_LMK68_SIZE;
    const size_t eper = fw_pipeline_embed_input_size(eng);
    pl->batch = batch;
    pl->faces = 0;
    for (int b = 0; b < batch; b++)
        pl->faces += cap[b % N_PHOTOS].n_faces;
    /* pinned host memory on a GPU session: the ceiling copies as fast as the engine can */
    pl->det = fw_model_host_alloc(fw__engine_model(eng, FW_ROLE_DETECTOR),
                                  sizeof(float) * dper * (size_t)batch);
    pl->lmk = fw_model_host_alloc(fw__engine_model(eng, FW_ROLE_LANDMARKS),
                                  sizeof(float) * lper * (pl->faces ? pl->faces : 1));
    pl->emb = fw_model_host_alloc(fw__engine_model(eng, FW_ROLE_EMBEDDER),
                                  sizeof(float) * eper * (pl->faces ? pl->faces : 1));
    if (!pl->det || !pl->lmk || !pl->emb)
        die("alloc", NULL);
    size_t f = 0;
    for (int b = 0; b < batch; b++) {
        const captured *c = &cap[b % N_PHOTOS];
        memcpy(pl->det + (size_t)b * dper, c->det, sizeof(float) * dper);
        memcpy(pl->lmk + f * lper, c->lmk, sizeof(float) * lper * c->n_faces);
        memcpy(pl->emb + f * eper, c->emb, sizeof(float) * eper * c->n_faces);
        f += c->n_faces;
    }
}

/* Parses "1,8,32,64" into out (at most cap); returns the count (0: malformed). */
static int parse_list(const char *s, int *out, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096)
            return 0;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return 0;
    }
    return n;
}

static int run_ceiling(fw_engine *eng, const image_set *set, const char *batches, int streams,
                       int max_faces, double seconds)
{
    int bs[16];
    int nb = parse_list(batches, bs, 16);
    if (nb == 0 || streams < 1 || streams > 64) {
        fprintf(stderr, "fw_bench: bad --ceiling-batches or --streams\n");
        return 2;
    }
    captured cap[N_PHOTOS];
    size_t faces = 0;
    for (int i = 0; i < N_PHOTOS; i++) {
        capture(eng, &set->blobs[i], &cap[i]);
        faces += cap[i].n_faces;
    }
    printf("## bare-model ceiling (%s photos, %.2f faces per image; providers: detector=%s "
           "landmarks=%s embedder=%s; %d streams, faces in runs of <= %d)\n\n",
           set->name, (double)faces / N_PHOTOS, fw_engine_provider(eng, FW_ROLE_DETECTOR),
           fw_engine_provider(eng, FW_ROLE_LANDMARKS), fw_engine_provider(eng, FW_ROLE_EMBEDDER),
           streams, max_faces);
    printf("| images per batch | img/s | detector ms/run | landmarks ms/run | embedder ms/run | "
           "model busy %% of wall (sum over streams) |\n|---|---|---|---|---|---|\n");
    double best = 0;
    for (int k = 0; k < nb; k++) {
        ceiling_plan pl = {.eng = eng, .max_faces = max_faces, .seconds = seconds};
        ceiling_fill(eng, cap, bs[k], &pl);
        /* warm-up: one pass at this shape on every stream's session */
        ceiling_plan warm = pl;
        warm.seconds = 0;
        ceiling_stream ws = {.plan = &warm};
        ceiling_thread(&ws);
        ceiling_stream cs[64];
        pthread_t th[64];
        for (int t = 0; t < streams; t++) {
            memset(&cs[t], 0, sizeof cs[t]);
            cs[t].plan = &pl;
            if (pthread_create(&th[t], NULL, ceiling_thread, &cs[t]))
                die("pthread_create", NULL);
        }
        double imgs = 0, wall = 0, det = 0, lmk = 0, emb = 0;
        uint64_t dr = 0, lr = 0, er = 0;
        for (int t = 0; t < streams; t++) {
            pthread_join(th[t], NULL);
            imgs += (double)cs[t].batches * bs[k];
            wall = cs[t].wall_s > wall ? cs[t].wall_s : wall;
            det += cs[t].det_s, lmk += cs[t].lmk_s, emb += cs[t].emb_s;
            dr += cs[t].det_runs, lr += cs[t].lmk_runs, er += cs[t].emb_runs;
        }
        double rate = imgs / wall;
        best = rate > best ? rate : best;
        char lms[32] = "-";
        if (lr)
            snprintf(lms, sizeof lms, "%.2f", 1e3 * lmk / (double)lr);
        printf("| %d | %.1f | %.2f | %s | %.2f | %.0f%% |\n", bs[k], rate, 1e3 * det / (double)dr,
               lms, 1e3 * emb / (double)(er ? er : 1), 100.0 * (det + lmk + emb) / wall);
        fw_model_host_free(fw__engine_model(eng, FW_ROLE_DETECTOR), pl.det);
        fw_model_host_free(fw__engine_model(eng, FW_ROLE_LANDMARKS), pl.lmk);
        fw_model_host_free(fw__engine_model(eng, FW_ROLE_EMBEDDER), pl.emb);
    }
    printf("\nceiling_best_img_per_s=%.1f\n", best);
    for (int i = 0; i < N_PHOTOS; i++) {
        free(cap[i].det);
        free(cap[i].lmk);
        free(cap[i].emb);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* --quality: what per-face quality and crops add to the pipeline                        */

/* The pipeline with quality off, on (the default), and with box and aligned JPEG crops,
 * interleaved `repeats` times on the same images; per face: median wall and CPU ms, the
 * added share against quality off, and the quality and crop stage times. */
static int run_quality(fw_engine *eng, const image_set *sets, int threads, int rounds, int repeats)
{
    enum { OFF, ON, BOX, ALIGNED, MODES };
    static const char *const names[MODES] = {"quality off", "quality on (default)",
                                             "quality + box crops (JPEG q95)",
                                             "quality + aligned crops (JPEG q95)"};
    fw_analyze_opts opts[MODES];
    for (int m = 0; m < MODES; m++)
        fw_analyze_opts_init(&opts[m]);
    opts[OFF].quality = false;
    opts[BOX].crops = FW_CROP_BOX;
    opts[ALIGNED].crops = FW_CROP_ALIGNED;
    if (repeats > 16)
        repeats = 16;
    printf("## per-face quality and crops (threads=%d rounds=%d x %d images, median of %d, "
           "modes interleaved)\n\n",
           threads, rounds, N_PHOTOS, repeats);
    printf("| image set | mode | wall ms/face | CPU ms/face | added wall vs off | added CPU vs off "
           "| quality stage ms/face | crop stage ms/face |\n|---|---|---|---|---|---|---|---|\n");
    for (int s = 0; s < 2; s++) {
        double wall[MODES][16], cpu[MODES][16], qs[MODES][16], cs[MODES][16];
        size_t faces = 0;
        double dummy;
        pipeline_time_opts(eng, &sets[s], 1, 1, &opts[ON], NULL, &dummy, &faces); /* warm-up */
        double per = (double)rounds * (double)faces;
        for (int r = 0; r < repeats; r++)
            for (int m = 0; m < MODES; m++) {
                fw_stage_times st;
                memset(&st, 0, sizeof st);
                wall[m][r] =
                    pipeline_time_opts(eng, &sets[s], rounds, 1, &opts[m], &st, &cpu[m][r], NULL) *
                    1e3 / per;
                cpu[m][r] *= 1e3 / per;
                qs[m][r] = (double)atomic_load(&st.quality_ns) / 1e6 / per;
                cs[m][r] = (double)atomic_load(&st.crop_ns) / 1e6 / per;
            }
        double med[MODES][4];
        for (int m = 0; m < MODES; m++) {
            double *v[4] = {wall[m], cpu[m], qs[m], cs[m]};
            for (int k = 0; k < 4; k++) {
                qsort(v[k], (size_t)repeats, sizeof(double), cmp_double);
                med[m][k] = v[k][repeats / 2];
            }
        }
        for (int m = 0; m < MODES; m++)
            printf("| %s | %s | %.3f | %.3f | %+.1f%% | %+.1f%% | %.3f | %.3f |\n", sets[s].name,
                   names[m], med[m][0], med[m][1], 100.0 * (med[m][0] - med[OFF][0]) / med[OFF][0],
                   100.0 * (med[m][1] - med[OFF][1]) / med[OFF][1], med[m][2], med[m][3]);
    }
    printf("\nquality_goal=added CPU per face with quality on, crops off, under 3%% of the "
           "pipeline's\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *models = NULL, *photos = NULL, *provider = "auto", *batches = "1,8,32,64";
    int threads = 1, rounds = 10, batch = 1, repeats = 5, ceiling = 0, streams = 2, max_batch = 64;
    int quality = 0;
    double seconds = 3;
    static const struct option longopts[] = {
        {"models", required_argument, 0, 'm'},   {"photos", required_argument, 0, 'p'},
        {"threads", required_argument, 0, 't'},  {"rounds", required_argument, 0, 'r'},
        {"batch", required_argument, 0, 'b'},    {"repeats", required_argument, 0, 'n'},
        {"provider", required_argument, 0, 'P'}, {"max-batch", required_argument, 0, 'M'},
        {"ceiling", no_argument, 0, 'C'},        {"ceiling-batches", required_argument, 0, 'B'},
        {"streams", required_argument, 0, 'S'},  {"seconds", required_argument, 0, 's'},
        {"quality", no_argument, 0, 'Q'},        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            models = optarg;
            break;
        case 'p':
            photos = optarg;
            break;
        case 't':
            threads = atoi(optarg);
            break;
        case 'r':
            rounds = atoi(optarg);
            break;
        case 'b':
            batch = atoi(optarg);
            break;
        case 'n':
            repeats = atoi(optarg);
            break;
        case 'P':
            provider = optarg;
            break;
        case 'M':
            max_batch = atoi(optarg);
            break;
        case 'C':
            ceiling = 1;
            break;
        case 'B':
            batches = optarg;
            break;
        case 'S':
            streams = atoi(optarg);
            break;
        case 's':
            seconds = atof(optarg);
            break;
        case 'Q':
            quality = 1;
            break;
        default:
            return 2;
        }
    }
    if (!photos)
        photos = getenv("FW_PHOTOS_DIR");
    if (!photos)
        photos = FW_SOURCE_DIR "/.deps/photos";
    if (batch < 1 || batch > N_PHOTOS || rounds < 1 || repeats < 1 || max_batch < 1 ||
        !(seconds > 0)) {
        fprintf(stderr, "fw_bench: bad --batch/--rounds/--repeats/--max-batch/--seconds\n");
        return 2;
    }
    fw_engine_config cfg;
    fw_engine_config_init(&cfg);
    cfg.models_dir = models;
    cfg.threads = threads;
    cfg.provider = provider;
    cfg.max_batch = max_batch;
    fw_engine *eng;
    fw_error e;
    if (fw_engine_new(&cfg, &eng, &e))
        die("engine", &e);

    image_set sets[2];
    load_sets(photos, &sets[0], &sets[1]);
    if (quality) {
        int rc = run_quality(eng, sets, threads, rounds, repeats);
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < N_PHOTOS; i++)
                free(sets[s].owned[i]);
        fw_engine_free(eng);
        return rc;
    }
    if (ceiling) {
        int rc = run_ceiling(eng, &sets[1], batches, streams, max_batch, seconds);
        print_webgpu_device(eng);
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < N_PHOTOS; i++)
                free(sets[s].owned[i]);
        fw_engine_free(eng);
        return rc;
    }
    printf("## in-process pipeline vs bare models (threads=%d, batch=%d, %d rounds x %d "
           "images, median of %d)\n\n",
           threads, batch, rounds, N_PHOTOS, repeats);
    printf("| image set | MP | pipeline img/s | bare-model img/s | decode ms | preprocess ms | "
           "inference ms | postprocess ms | other ms | non-inference / bare inference (wall) | "
           "same, CPU time |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int s = 0; s < 2; s++) {
        captured cap[N_PHOTOS];
        for (int i = 0; i < N_PHOTOS; i++)
            capture(eng, &sets[s].blobs[i], &cap[i]);
        double cw, cb;
        pipeline_time(eng, &sets[s], 1, batch, NULL, &cw); /* warm-up */
        bare_time(eng, cap, 1, &cb);
        double wall[16], bare[16], ratio[16], cratio[16];
        fw_stage_times st_med, sts[16];
        if (repeats > 16)
            repeats = 16;
        for (int r = 0; r < repeats; r++) {
            /* interleave the two measurements so drift hits both alike */
            memset(&sts[r], 0, sizeof sts[r]);
            wall[r] = pipeline_time(eng, &sets[s], rounds, batch, &sts[r], &cw);
            bare[r] = bare_time(eng, cap, rounds, &cb);
            ratio[r] = (wall[r] - bare[r]) / bare[r];
            cratio[r] = (cw - cb) / cb;
        }
        double sw[16], sb[16], sr[16];
        memcpy(sw, wall, sizeof wall);
        memcpy(sb, bare, sizeof bare);
        memcpy(sr, ratio, sizeof ratio);
        qsort(sw, (size_t)repeats, sizeof(double), cmp_double);
        qsort(sb, (size_t)repeats, sizeof(double), cmp_double);
        qsort(sr, (size_t)repeats, sizeof(double), cmp_double);
        qsort(cratio, (size_t)repeats, sizeof(double), cmp_double);
        /* stage split from the repeat whose wall time is the median */
        int mi = 0;
        for (int r = 0; r < repeats; r++)
            if (wall[r] == sw[repeats / 2])
                mi = r;
        st_med = sts[mi];
        double n_img = (double)rounds * N_PHOTOS;
        double dec = (double)atomic_load(&st_med.decode_ns) / 1e6 / n_img;
        double pre = (double)atomic_load(&st_med.preprocess_ns) / 1e6 / n_img;
        double inf = (double)atomic_load(&st_med.inference_ns) / 1e6 / n_img;
        double post = (double)atomic_load(&st_med.postprocess_ns) / 1e6 / n_img;
        double other = wall[mi] * 1e3 / n_img - dec - pre - inf - post;
        printf("| %s | %.2f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f%% | %.1f%% |\n",
               sets[s].name, sets[s].megapixels, n_img / sw[repeats / 2], n_img / sb[repeats / 2],
               dec, pre, inf, post, other, 100.0 * sr[repeats / 2], 100.0 * cratio[repeats / 2]);
        for (int i = 0; i < N_PHOTOS; i++) {
            free(cap[i].det);
            free(cap[i].lmk);
            free(cap[i].emb);
        }
    }
    printf("\nproviders: detector=%s landmarks=%s embedder=%s\n",
           fw_engine_provider(eng, FW_ROLE_DETECTOR), fw_engine_provider(eng, FW_ROLE_LANDMARKS),
           fw_engine_provider(eng, FW_ROLE_EMBEDDER));
    print_webgpu_device(eng);
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < N_PHOTOS; i++)
            free(sets[s].owned[i]);
    fw_engine_free(eng);
    return 0;
}
