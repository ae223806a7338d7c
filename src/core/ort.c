/* ONNX Runtime sessions: the only file that includes onnxruntime_c_api.h. */
#include "core/ort.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <onnxruntime_c_api.h>

#include "core/vkinfo.h"
#include "util/log.h"

#define MOD "ort"

/* ------------------------------------------------------------------------------------ */
/* provider names                                                                       */

static const char *const provider_names[FW_PROVIDER__COUNT] = {
    [FW_PROVIDER_AUTO] = "auto",         [FW_PROVIDER_CPU] = "cpu",
    [FW_PROVIDER_CUDA] = "cuda",         [FW_PROVIDER_TENSORRT] = "tensorrt",
    [FW_PROVIDER_DML] = "dml",           [FW_PROVIDER_ROCM] = "rocm",
    [FW_PROVIDER_MIGRAPHX] = "migraphx", [FW_PROVIDER_COREML] = "coreml",
    [FW_PROVIDER_OPENVINO] = "openvino", [FW_PROVIDER_WEBGPU] = "webgpu",
};

/* The names GetAvailableProviders uses. */
static const char *const provider_ort_names[FW_PROVIDER__COUNT] = {
    [FW_PROVIDER_AUTO] = NULL,
    [FW_PROVIDER_CPU] = "CPUExecutionProvider",
    [FW_PROVIDER_CUDA] = "CUDAExecutionProvider",
    [FW_PROVIDER_TENSORRT] = "TensorrtExecutionProvider",
    [FW_PROVIDER_DML] = "DmlExecutionProvider",
    [FW_PROVIDER_ROCM] = "ROCMExecutionProvider",
    [FW_PROVIDER_MIGRAPHX] = "MIGraphXExecutionProvider",
    [FW_PROVIDER_COREML] = "CoreMLExecutionProvider",
    [FW_PROVIDER_OPENVINO] = "OpenVINOExecutionProvider",
    [FW_PROVIDER_WEBGPU] = "WebGpuExecutionProvider",
};

int fw_provider_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < FW_PROVIDER__COUNT; i++)
        if (strcasecmp(name, provider_names[i]) == 0)
            return i;
    if (strcasecmp(name, "directml") == 0)
        return FW_PROVIDER_DML;
    if (strcasecmp(name, "trt") == 0)
        return FW_PROVIDER_TENSORRT;
    return -1;
}

const char *fw_provider_name(fw_provider p)
{
    if ((unsigned)p >= FW_PROVIDER__COUNT)
        return "unknown";
    return provider_names[p];
}

static const char *const webgpu_backend_names[] = {"default", "vulkan", "d3d12"};

int fw_webgpu_backend_parse(const char *name)
{
    if (!name || !*name)
        return FW_WEBGPU_BACKEND_DEFAULT;
    for (int i = 0; i < 3; i++)
        if (strcasecmp(name, webgpu_backend_names[i]) == 0)
            return i;
    return -1;
}

const char *fw_webgpu_backend_name(fw_webgpu_backend b)
{
    return (unsigned)b < 3 ? webgpu_backend_names[b] : "unknown";
}

/* ------------------------------------------------------------------------------------ */
/* process-wide environment                                                             */

static const OrtApi *g_api;
static char g_init_error[FW_ERROR_MESSAGE_MAX];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Providers this build reports, as our names (static strings) or, for providers we do not
 * know, ORT's own name copied into g_avail_other. Filled once with the environment. */
#define MAX_AVAIL 24
static const char *g_avail[MAX_AVAIL];
static char g_avail_other[MAX_AVAIL][64];
static size_t g_n_avail;
static int g_avail_mask; /* bit per fw_provider */

/* ORT's log lines go through our logger; quotes and newlines are replaced so that the
 * message stays one logfmt field. */
static void ort_log(void *param, OrtLoggingLevel severity, const char *category, const char *logid,
                    const char *code_location, const char *message)
{
    (void)param;
    (void)logid;
    (void)code_location;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", message ? message : "");
    for (char *c = buf; *c; c++)
        if (*c == '"' || *c == '\n' || *c == '\r')
            *c = *c == '"' ? '\'' : ' ';
    fw_log_level lvl = severity >= ORT_LOGGING_LEVEL_ERROR     ? FW_LOG_ERROR
                       : severity == ORT_LOGGING_LEVEL_WARNING ? FW_LOG_WARN
                       : severity == ORT_LOGGING_LEVEL_INFO    ? FW_LOG_INFO
                                                               : FW_LOG_DEBUG;
    fw_log(lvl, MOD, "onnxruntime", "category=%s detail=\"%s\"", category ? category : "-", buf);
}

static void read_available(void)
{
    char **list = NULL;
    int n = 0;
    OrtStatus *st = g_api->GetAvailableProviders(&list, &n);
    if (st) {
        FW_WARN(MOD, "GetAvailableProviders failed", "error=\"%s\"", g_api->GetErrorMessage(st));
        g_api->ReleaseStatus(st);
        return;
    }
    for (int i = 0; i < n && g_n_avail < MAX_AVAIL; i++) {
        const char *name = NULL;
        for (int p = FW_PROVIDER_CPU; p < FW_PROVIDER__COUNT; p++)
            if (strcmp(list[i], provider_ort_names[p]) == 0) {
                name = provider_names[p];
                g_avail_mask |= 1 << p;
            }
        if (!name) {
            snprintf(g_avail_other[g_n_avail], sizeof g_avail_other[0], "%s", list[i]);
            name = g_avail_other[g_n_avail];
        }
        g_avail[g_n_avail++] = name;
    }
    st = g_api->ReleaseAvailableProviders(list, n);
    if (st)
        g_api->ReleaseStatus(st);
}

/* The env lives exactly as long as some session needs it: created by the first
 * env_acquire, released by the env_release of the last session. ORT asks for the env to be
 * released before the process exits rather than by its static destructors at exit; doing it
 * in the normal flow, where every library (the CUDA runtime included) is still alive, also
 * keeps it clear of other libraries' exit-time teardown. */
static pthread_mutex_t g_env_mu = PTHREAD_MUTEX_INITIALIZER;
static OrtEnv *g_env;      /* guarded by g_env_mu */
static size_t g_env_users; /* sessions that need g_env; guarded by g_env_mu */

void fw_ort_preinit(void)
{
    if (setenv("ORT_DISABLE_TELEMETRY", "1", 0) != 0)
        FW_WARN(MOD, "cannot turn ORT telemetry off", "%s", "");
}

static void init_once(void)
{
    fw_ort_preinit(); /* before the first env: ORT reads it there */
    const OrtApiBase *base = OrtGetApiBase();
    g_api = base ? base->GetApi(ORT_API_VERSION) : NULL;
    if (!g_api) {
        snprintf(g_init_error, sizeof g_init_error,
                 "the ONNX Runtime library (%s) does not provide C API version %d",
                 base ? base->GetVersionString() : "?", ORT_API_VERSION);
        return;
    }
    read_available();
}

/* FW_OK once the ORT API is usable; the reason otherwise. */
static fw_err api_ready(fw_error *err)
{
    pthread_once(&g_once, init_once);
    if (!g_api)
        return fw_error_set(err, FW_ERR_INTERNAL, "%s", g_init_error);
    return FW_OK;
}

/* Counts one more user of the env (a session about to be created), creating the env when it
 * is the first; *out is the env. Each FW_OK must be paired with one env_release. */
static fw_err env_acquire(OrtEnv **out, fw_error *err)
{
    fw_err rc = api_ready(err);
    if (rc)
        return rc;
    pthread_mutex_lock(&g_env_mu);
    if (!g_env) {
        OrtStatus *st = g_api->CreateEnvWithCustomLogger(ort_log, NULL, ORT_LOGGING_LEVEL_WARNING,
                                                         "facework", &g_env);
        if (st) {
            g_env = NULL;
            pthread_mutex_unlock(&g_env_mu);
            rc = fw_error_set(err, FW_ERR_INTERNAL, "cannot create the ONNX Runtime env: %s",
                              g_api->GetErrorMessage(st));
            g_api->ReleaseStatus(st);
            return rc;
        }
    }
    g_env_users++;
    *out = g_env;
    pthread_mutex_unlock(&g_env_mu);
    return FW_OK;
}

/* Drops one user of the env; the last one releases it. */
static void env_release(void)
{
    pthread_mutex_lock(&g_env_mu);
    if (g_env_users > 0 && --g_env_users == 0) {
        g_api->ReleaseEnv(g_env);
        g_env = NULL;
    }
    pthread_mutex_unlock(&g_env_mu);
}

size_t fw__ort_env_users(void)
{
    pthread_mutex_lock(&g_env_mu);
    size_t n = g_env_users;
    pthread_mutex_unlock(&g_env_mu);
    return n;
}

/* Releases a session made by try_session (NULL: nothing), and its hold on the env. */
static void release_session(OrtSession *s)
{
    if (!s)
        return;
    g_api->ReleaseSession(s);
    env_release();
}

size_t fw_ort_available_providers(const char **names, size_t cap)
{
    if (api_ready(NULL))
        return 0;
    size_t n = 0;
    for (; n < g_n_avail && n < cap; n++)
        names[n] = g_avail[n];
    return n;
}

const char *fw_ort_version(void)
{
    const OrtApiBase *base = OrtGetApiBase();
    return base ? base->GetVersionString() : "unknown";
}

static int provider_in_build(fw_provider p)
{
    return (g_avail_mask >> p) & 1;
}

static int g_trt_libs;
static pthread_once_t g_trt_once = PTHREAD_ONCE_INIT;

static void trt_probe(void)
{
    void *h = dlopen("libnvinfer.so.10", RTLD_LAZY | RTLD_LOCAL);
    g_trt_libs = h != NULL;
    if (h)
        dlclose(h);
}

int fw_ort_tensorrt_libs_present(void)
{
    pthread_once(&g_trt_once, trt_probe);
    return g_trt_libs;
}

void fw_ort_trt_cache_dir(const fw_session_opts *opts, char *buf, size_t cap)
{
    const char *dir = opts && opts->trt_cache_dir && *opts->trt_cache_dir
                          ? opts->trt_cache_dir
                          : getenv("FACEWORK_TRT_CACHE");
    if (dir && *dir) {
        snprintf(buf, cap, "%s", dir);
        return;
    }
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (xdg && *xdg)
        snprintf(buf, cap, "%s/facework/trt", xdg);
    else
        snprintf(buf, cap, "%s/.cache/facework/trt", home && *home ? home : "/tmp");
}

int fw_ort_is_oom_message(const char *msg)
{
    static const char *const needles[] = {
        "out of memory",       "failed to allocate",        "alloc_failed",
        "bad_alloc",           "cudaerrormemoryallocation", "available memory of",
        "insufficient memory", "memory allocation failed",
    };
    if (!msg)
        return 0;
    char low[FW_ERROR_MESSAGE_MAX * 2];
    size_t n = 0;
    for (; msg[n] && n < sizeof low - 1; n++)
        low[n] = (char)((msg[n] >= 'A' && msg[n] <= 'Z') ? msg[n] - 'A' + 'a' : msg[n]);
    low[n] = '\0';
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        if (strstr(low, needles[i]))
            return 1;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* the model                                                                            */

struct fw_model {
    OrtSession *session;
    OrtMemoryInfo *cpu_mem;
    fw_provider provider;
    fw_model_info info;
    const char *in_names[4];
    const char *out_names[FW_MAX_OUTPUTS];
    fw_session_opts opts; /* as loaded; trt_cache_dir points at trt_dir */
    char trt_dir[1024];
    /* Pinned I/O (CUDA, TensorRT): ORT's pinned host allocator for inputs, and outputs
     * bound to pinned memory. bound_state: 0 untried, 1 works, -1 disabled. */
    OrtMemoryInfo *pinned_mem;
    OrtAllocator *pinned_alloc;
    atomic_int bound_state;
    atomic_int bound_misses; /* bound runs that failed where a plain run then worked */
    /* WebGPU: runs padded to batch buckets (fw_model_run), 1 while on; -1 once an output
     * was found not to carry the batch (then runs go as they are). software: the adapter
     * Dawn picks is a CPU-type Vulkan device. */
    atomic_int bucketed;
    int software;
    /* Test hook (fw__model_set_faults). */
    fw_fault_spec fault;
    int has_fault;
    atomic_ulong runs;
};

/* Copies an OrtStatus's message into a buffer and releases it. ORT prefixes messages with
 * a source location and "[ONNXRuntimeError] : 1 : FAIL : "; that is dropped so the reason
 * fits the error message, and line breaks become spaces. */
static void status_msg(OrtStatus *st, char *buf, size_t cap)
{
    const char *msg = g_api->GetErrorMessage(st);
    const char *tag = msg ? strstr(msg, "[ONNXRuntimeError] : ") : NULL;
    if (tag) {
        const char *p = tag + strlen("[ONNXRuntimeError] : ");
        for (int field = 0; field < 2; field++) { /* "<code> : <NAME> : " */
            const char *sep = strstr(p, " : ");
            if (!sep)
                break;
            p = sep + 3;
        }
        msg = p;
    }
    snprintf(buf, cap, "%s", msg ? msg : "unknown ONNX Runtime error");
    g_api->ReleaseStatus(st);
    for (char *c = buf; *c; c++)
        if (*c == '\n' || *c == '\r' || *c == '"')
            *c = *c == '"' ? '\'' : ' ';
    for (size_t n = strlen(buf); n > 0 && buf[n - 1] == ' '; n--)
        buf[n - 1] = '\0';
}

/* Returns code with ORT's message (prefixed by what) in err; releases st. */
static fw_err ort_fail(OrtStatus *st, fw_err code, fw_error *err, const char *what)
{
    char msg[FW_ERROR_MESSAGE_MAX];
    status_msg(st, msg, sizeof msg);
    return fw_error_set(err, code, "%s: %s", what, msg);
}

/* TensorRT optimisation profile for a model whose batch dimension is symbolic:
 * "name:1x3x240x320" (min), and the same at the largest batch (opt and max). Empty strings
 * when the model has no symbolic batch or other symbolic dimensions (TensorRT then builds
 * an engine for each shape it meets). */
typedef struct trt_profile {
    char min[512], max[512];
} trt_profile;

/* Creates a session for path with provider p appended (CPU: none); see below. */
static fw_err try_session(const char *path, const fw_session_opts *opts, fw_provider p,
                          OrtSession **out, char *why, size_t why_cap, fw_error *err);

/* Fills prof from the model's input signature, read from a throw-away CPU session. */
static void trt_profile_for(const char *path, const fw_session_opts *opts, trt_profile *prof)
{
    prof->min[0] = prof->max[0] = '\0';
    fw_session_opts cpu = {.provider = FW_PROVIDER_CPU, .threads = 1};
    OrtSession *s = NULL;
    char why[FW_ERROR_MESSAGE_MAX];
    if (try_session(path, &cpu, FW_PROVIDER_CPU, &s, why, sizeof why, NULL) != FW_OK)
        return;
    OrtAllocator *alloc = NULL;
    OrtStatus *st = g_api->GetAllocatorWithDefaultOptions(&alloc);
    size_t n_in = 0;
    if (!st)
        st = g_api->SessionGetInputCount(s, &n_in);
    size_t off_min = 0, off_max = 0;
    int ok = !st && n_in >= 1;
    if (st)
        g_api->ReleaseStatus(st);
    const int max_batch = opts->max_batch > 0 ? opts->max_batch : 64;
    for (size_t i = 0; ok && i < n_in; i++) {
        char *name = NULL;
        OrtTypeInfo *ti = NULL;
        const OrtTensorTypeAndShapeInfo *tsi = NULL;
        int64_t dims[FW_MAX_RANK];
        size_t rank = 0;
        st = g_api->SessionGetInputName(s, i, alloc, &name);
        if (!st)
            st = g_api->SessionGetInputTypeInfo(s, i, &ti);
        if (!st)
            st = g_api->CastTypeInfoToTensorInfo(ti, &tsi);
        if (!st && tsi)
            st = g_api->GetDimensionsCount(tsi, &rank);
        if (!st && tsi && rank >= 1 && rank <= FW_MAX_RANK)
            st = g_api->GetDimensions(tsi, dims, rank);
        if (st) {
            g_api->ReleaseStatus(st);
            ok = 0;
        } else if (!tsi || rank < 1 || rank > FW_MAX_RANK || dims[0] > 0) {
            ok = 0; /* not a tensor, or a fixed batch: no profile needed */
        } else {
            for (size_t d = 1; d < rank; d++)
                if (dims[d] <= 0)
                    ok = 0;
        }
        if (ok) {
            for (int which = 0; which < 2; which++) {
                char *buf = which ? prof->max : prof->min;
                size_t *off = which ? &off_max : &off_min;
                size_t cap = sizeof prof->min;
                *off += (size_t)snprintf(buf + *off, cap - *off, "%s%s:%d", i ? "," : "", name,
                                         which ? max_batch : 1);
                for (size_t d = 1; d < rank && *off < cap; d++)
                    *off += (size_t)snprintf(buf + *off, cap - *off, "x%lld", (long long)dims[d]);
                if (*off >= cap)
                    ok = 0;
            }
        }
        if (ti)
            g_api->ReleaseTypeInfo(ti);
        if (name) {
            st = g_api->AllocatorFree(alloc, name);
            if (st)
                g_api->ReleaseStatus(st);
        }
    }
    release_session(s);
    if (!ok)
        prof->min[0] = prof->max[0] = '\0';
}

/* Creates dir and its parents (mode 0700 for new ones); returns 0 on success. */
static int mkdir_p(const char *dir)
{
    char tmp[1024];
    size_t n = (size_t)snprintf(tmp, sizeof tmp, "%s", dir);
    if (n == 0 || n >= sizeof tmp)
        return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/* The CUDA options were refused (an ORT build that does not know one of them, say): retry
 * with the device id alone (keys[0]). Returns NULL when that was accepted (st is then
 * released and the reason logged), else st. */
static OrtStatus *retry_cuda_device_only(OrtCUDAProviderOptionsV2 *cuda, OrtStatus *st,
                                         const char *const *keys, const char *const *vals)
{
    OrtStatus *st2 = g_api->UpdateCUDAProviderOptions(cuda, keys, vals, 1);
    if (st2) {
        g_api->ReleaseStatus(st2);
        return st;
    }
    char why[FW_ERROR_MESSAGE_MAX];
    status_msg(st, why, sizeof why);
    FW_WARN(MOD, "cuda options refused; using the device id alone", "reason=\"%s\"", why);
    return NULL;
}

/* Appends one provider to so; on failure returns 0 and writes ORT's reason. prof (TensorRT
 * only) may be NULL. */
static int append_provider(OrtSessionOptions *so, fw_provider p, const fw_session_opts *opts,
                           const trt_profile *prof, char *why, size_t why_cap)
{
    OrtStatus *st = NULL;
    const int device_id = opts->device_id;
    char dev[16];
    snprintf(dev, sizeof dev, "%d", device_id);
    switch (p) {
    case FW_PROVIDER_CUDA: {
        OrtCUDAProviderOptionsV2 *cuda = NULL;
        st = g_api->CreateCUDAProviderOptions(&cuda);
        if (!st) {
            static const char *const algo[] = {"HEURISTIC", "EXHAUSTIVE", "DEFAULT"};
            char limit[32];
            snprintf(limit, sizeof limit, "%zu", opts->gpu_mem_limit);
            const char *keys[8], *vals[8];
            size_t n = 0;
            keys[n] = "device_id", vals[n++] = dev;
            keys[n] = "arena_extend_strategy";
            vals[n++] = opts->gpu_arena_same_as_requested ? "kSameAsRequested" : "kNextPowerOfTwo";
            keys[n] = "cudnn_conv_algo_search";
            vals[n++] = algo[(unsigned)opts->conv_algo < 3 ? opts->conv_algo : 0];
            keys[n] = "cudnn_conv_use_max_workspace", vals[n++] = "1";
            if (opts->gpu_mem_limit > 0)
                keys[n] = "gpu_mem_limit", vals[n++] = limit;
            st = g_api->UpdateCUDAProviderOptions(cuda, keys, vals, n);
            if (st)
                st = retry_cuda_device_only(cuda, st, keys, vals);
        }
        if (!st)
            st = g_api->SessionOptionsAppendExecutionProvider_CUDA_V2(so, cuda);
        if (cuda)
            g_api->ReleaseCUDAProviderOptions(cuda);
        break;
    }
    case FW_PROVIDER_TENSORRT: {
        OrtTensorRTProviderOptionsV2 *trt = NULL;
        st = g_api->CreateTensorRTProviderOptions(&trt);
        if (!st) {
            /* Engine builds take minutes: engines and timing caches go to disk, so a
             * restart loads them instead. */
            char cache[1024], limit[32];
            fw_ort_trt_cache_dir(opts, cache, sizeof cache);
            if (mkdir_p(cache) != 0)
                FW_WARN(MOD, "tensorrt cache directory not created", "dir=\"%s\" error=\"%s\"",
                        cache, strerror(errno));
            snprintf(limit, sizeof limit, "%zu", opts->gpu_mem_limit);
            const char *keys[12], *vals[12];
            size_t n = 0;
            keys[n] = "device_id", vals[n++] = dev;
            keys[n] = "trt_engine_cache_enable", vals[n++] = "1";
            keys[n] = "trt_engine_cache_path", vals[n++] = cache;
            keys[n] = "trt_timing_cache_enable", vals[n++] = "1";
            keys[n] = "trt_timing_cache_path", vals[n++] = cache;
            keys[n] = "trt_fp16_enable", vals[n++] = opts->trt_fp16 ? "1" : "0";
            if (prof && prof->min[0]) {
                keys[n] = "trt_profile_min_shapes", vals[n++] = prof->min;
                keys[n] = "trt_profile_opt_shapes", vals[n++] = prof->max;
                keys[n] = "trt_profile_max_shapes", vals[n++] = prof->max;
            }
            st = g_api->UpdateTensorRTProviderOptions(trt, keys, vals, n);
        }
        if (!st)
            st = g_api->SessionOptionsAppendExecutionProvider_TensorRT_V2(so, trt);
        if (trt)
            g_api->ReleaseTensorRTProviderOptions(trt);
        break;
    }
    case FW_PROVIDER_ROCM: {
        OrtROCMProviderOptions rocm;
        memset(&rocm, 0, sizeof rocm);
        rocm.device_id = device_id;
        rocm.gpu_mem_limit = SIZE_MAX;
        rocm.do_copy_in_default_stream = 1;
        st = g_api->SessionOptionsAppendExecutionProvider_ROCM(so, &rocm);
        break;
    }
    case FW_PROVIDER_MIGRAPHX: {
        OrtMIGraphXProviderOptions mgx;
        memset(&mgx, 0, sizeof mgx);
        mgx.device_id = device_id;
        mgx.migraphx_mem_limit = SIZE_MAX;
        st = g_api->SessionOptionsAppendExecutionProvider_MIGraphX(so, &mgx);
        break;
    }
    case FW_PROVIDER_DML: {
        /* DirectML wants sequential execution without memory patterns. */
        st = g_api->DisableMemPattern(so);
        if (!st)
            st = g_api->SetSessionExecutionMode(so, ORT_SEQUENTIAL);
        const char *keys[] = {"device_id"};
        const char *vals[] = {dev};
        if (!st)
            st = g_api->SessionOptionsAppendExecutionProvider(so, "DML", keys, vals, 1);
        break;
    }
    case FW_PROVIDER_COREML:
        st = g_api->SessionOptionsAppendExecutionProvider(so, "CoreML", NULL, NULL, 0);
        break;
    case FW_PROVIDER_OPENVINO:
        st = g_api->SessionOptionsAppendExecutionProvider_OpenVINO_V2(so, NULL, NULL, 0);
        break;
    case FW_PROVIDER_WEBGPU: {
        /* ORT's "deviceId" here names a WebGPU context; any but 0 needs a WGPUInstance and
         * WGPUDevice made by the application. Dawn picks the adapter from these options. */
        if (device_id != 0) {
            snprintf(why, why_cap,
                     "device id %d: the WebGPU provider picks its adapter by power preference "
                     "and backend (--webgpu-power, --webgpu-backend), not by index; use device "
                     "id 0",
                     device_id);
            return 0;
        }
        const char *keys[2], *vals[2];
        size_t n = 0;
        keys[n] = "powerPreference",
        vals[n++] = opts->webgpu_low_power ? "low-power" : "high-performance";
        if (opts->webgpu_backend == FW_WEBGPU_BACKEND_VULKAN)
            keys[n] = "dawnBackendType", vals[n++] = "Vulkan";
        else if (opts->webgpu_backend == FW_WEBGPU_BACKEND_D3D12)
            keys[n] = "dawnBackendType", vals[n++] = "D3D12";
        st = g_api->SessionOptionsAppendExecutionProvider(so, "WebGPU", keys, vals, n);
        break;
    }
    case FW_PROVIDER_CPU:
        return 1;
    default:
        snprintf(why, why_cap, "unknown provider");
        return 0;
    }
    if (st) {
        status_msg(st, why, why_cap);
        return 0;
    }
    return 1;
}

static fw_err make_options(const fw_session_opts *opts, OrtSessionOptions **out, fw_error *err)
{
    OrtSessionOptions *so = NULL;
    OrtStatus *st = g_api->CreateSessionOptions(&so);
    if (st)
        return ort_fail(st, FW_ERR_INTERNAL, err, "CreateSessionOptions");
    st = g_api->SetSessionGraphOptimizationLevel(so, ORT_ENABLE_ALL);
    if (!st && opts->threads > 0)
        st = g_api->SetIntraOpNumThreads(so, opts->threads);
    if (st) {
        g_api->ReleaseSessionOptions(so);
        return ort_fail(st, FW_ERR_INVALID_ARGUMENT, err, "session options");
    }
    *out = so;
    return FW_OK;
}

/* Creates a session for path with provider p appended (CPU: none). Returns FW_OK, or
 * FW_ERR_PROVIDER when the provider could not be appended (why = ORT's reason), or
 * FW_ERR_MODEL when the session could not be created (why = ORT's reason). */
static fw_err try_session(const char *path, const fw_session_opts *opts, fw_provider p,
                          OrtSession **out, char *why, size_t why_cap, fw_error *err)
{
    /* first: ORT logs through the env's logger while it sets options up */
    OrtEnv *env = NULL;
    fw_err rc = env_acquire(&env, err);
    if (rc)
        return rc;
    trt_profile prof = {{0}, {0}};
    if (p == FW_PROVIDER_TENSORRT)
        trt_profile_for(path, opts, &prof);
    OrtSessionOptions *so = NULL;
    rc = make_options(opts, &so, err);
    if (rc) {
        env_release();
        return rc;
    }
    if (!append_provider(so, p, opts, &prof, why, why_cap)) {
        g_api->ReleaseSessionOptions(so);
        env_release();
        return FW_ERR_PROVIDER;
    }
    /* Nodes TensorRT cannot take go to CUDA rather than the CPU when CUDA is there. */
    if (p == FW_PROVIDER_TENSORRT && provider_in_build(FW_PROVIDER_CUDA)) {
        char cuda_why[FW_ERROR_MESSAGE_MAX];
        if (!append_provider(so, FW_PROVIDER_CUDA, opts, NULL, cuda_why, sizeof cuda_why))
            FW_INFO(MOD, "no cuda fallback for tensorrt", "reason=\"%s\"", cuda_why);
    }
    OrtStatus *st = g_api->CreateSession(env, path, so, out);
    g_api->ReleaseSessionOptions(so);
    if (st) {
        *out = NULL;
        status_msg(st, why, why_cap);
        env_release();
        return FW_ERR_MODEL;
    }
    return FW_OK; /* the session keeps its hold on the env until release_session */
}

/* Reads a tensor type's shape into s (symbolic dims: -1); non-tensors get rank 0. */
static fw_err read_shape(OrtTypeInfo *ti, fw_shape *s, const char *name, fw_error *err)
{
    memset(s, 0, sizeof *s);
    const OrtTensorTypeAndShapeInfo *tsi = NULL;
    OrtStatus *st = g_api->CastTypeInfoToTensorInfo(ti, &tsi);
    if (st)
        return ort_fail(st, FW_ERR_MODEL, err, name);
    if (!tsi)
        return FW_OK; /* a sequence or map: no shape */
    size_t rank = 0;
    st = g_api->GetDimensionsCount(tsi, &rank);
    if (st)
        return ort_fail(st, FW_ERR_MODEL, err, name);
    if (rank > FW_MAX_RANK)
        return fw_error_set(err, FW_ERR_MODEL, "%s: rank %zu is over %d", name, rank, FW_MAX_RANK);
    st = g_api->GetDimensions(tsi, s->dims, rank);
    if (st)
        return ort_fail(st, FW_ERR_MODEL, err, name);
    s->rank = (int)rank;
    for (size_t i = 0; i < rank; i++)
        if (s->dims[i] < 0)
            s->dims[i] = -1;
    return FW_OK;
}

/* Fills m->info from the session: names and shapes of every input and output. */
static fw_err read_info(fw_model *m, fw_error *err)
{
    OrtAllocator *alloc = NULL;
    OrtStatus *st = g_api->GetAllocatorWithDefaultOptions(&alloc);
    if (st)
        return ort_fail(st, FW_ERR_INTERNAL, err, "GetAllocatorWithDefaultOptions");
    fw_model_info *info = &m->info;
    size_t n_in = 0, n_out = 0;
    st = g_api->SessionGetInputCount(m->session, &n_in);
    if (!st)
        st = g_api->SessionGetOutputCount(m->session, &n_out);
    if (st)
        return ort_fail(st, FW_ERR_MODEL, err, "input/output count");
    if (n_in < 1 || n_in > 4)
        return fw_error_set(err, FW_ERR_MODEL, "%s: %zu inputs (1 to 4 supported)", info->path,
                            n_in);
    if (n_out < 1 || n_out > FW_MAX_OUTPUTS)
        return fw_error_set(err, FW_ERR_MODEL, "%s: %zu outputs (1 to %d supported)", info->path,
                            n_out, FW_MAX_OUTPUTS);
    info->n_inputs = n_in;
    info->n_outputs = n_out;
    for (int io = 0; io < 2; io++) {
        size_t n = io ? n_out : n_in;
        for (size_t i = 0; i < n; i++) {
            char *name = NULL;
            st = io ? g_api->SessionGetOutputName(m->session, i, alloc, &name)
                    : g_api->SessionGetInputName(m->session, i, alloc, &name);
            if (st)
                return ort_fail(st, FW_ERR_MODEL, err, "tensor name");
            char *dst = io ? info->output_names[i] : info->input_names[i];
            size_t len = strlen(name);
            if (len < FW_NAME_MAX)
                memcpy(dst, name, len + 1);
            st = g_api->AllocatorFree(alloc, name);
            if (st)
                g_api->ReleaseStatus(st);
            if (len >= FW_NAME_MAX)
                return fw_error_set(err, FW_ERR_MODEL, "%s: a tensor name is over %d bytes",
                                    info->path, FW_NAME_MAX - 1);
            OrtTypeInfo *ti = NULL;
            st = io ? g_api->SessionGetOutputTypeInfo(m->session, i, &ti)
                    : g_api->SessionGetInputTypeInfo(m->session, i, &ti);
            if (st)
                return ort_fail(st, FW_ERR_MODEL, err, dst);
            fw_err rc = read_shape(ti, io ? &info->outputs[i] : &info->inputs[i], dst, err);
            g_api->ReleaseTypeInfo(ti);
            if (rc)
                return rc;
            if (io)
                m->out_names[i] = dst;
            else
                m->in_names[i] = dst;
        }
    }
    return FW_OK;
}

/* The providers AUTO tries, best first; CPU is the fallback after them. */
static const fw_provider auto_order[] = {
    FW_PROVIDER_TENSORRT, FW_PROVIDER_CUDA,   FW_PROVIDER_ROCM,   FW_PROVIDER_MIGRAPHX,
    FW_PROVIDER_DML,      FW_PROVIDER_COREML, FW_PROVIDER_WEBGPU, FW_PROVIDER_OPENVINO,
};

int fw_ort_webgpu_auto_ok(const fw_session_opts *opts, char *why, size_t cap)
{
    if (opts && opts->device_id != 0) {
        snprintf(why, cap, "device id %d: WebGPU picks its adapter by power preference",
                 opts->device_id);
        return 0;
    }
    if (!fw_vk_gpu_hint(why, cap))
        return 0;
    const fw_vk_devices *vk = fw_vk_devices_get();
    int i = fw_vk_preferred(vk, opts && opts->webgpu_low_power);
    if (i < 0) {
        snprintf(why, cap, "no WebGPU adapter: %s", vk->error);
        return 0;
    }
    if (vk->dev[i].type == FW_VK_TYPE_CPU) {
        snprintf(why, cap,
                 "only a software Vulkan device (%s), slower than the CPU provider; "
                 "--provider webgpu uses it",
                 vk->dev[i].name);
        return 0;
    }
    if (cap)
        why[0] = '\0';
    return 1;
}

/* AUTO tries TensorRT when FACEWORK_TRT=1, or when it is unset (or anything but 0) and
 * TensorRT's runtime library loads. */
static int trt_enabled(void)
{
    const char *v = getenv("FACEWORK_TRT");
    if (v && strcmp(v, "1") == 0)
        return 1;
    if (v && strcmp(v, "0") == 0)
        return 0;
    return fw_ort_tensorrt_libs_present();
}

/* Providers whose AUTO fallback was already logged at info level: once per process is
 * enough; later models log it at debug level. */
static atomic_uint auto_skip_logged;

/* AUTO: the first provider that appends and creates a session wins; CPU last. */
static fw_err open_auto(fw_model *m, const fw_session_opts *opts, fw_error *err)
{
    const char *path = m->info.path;
    char why[FW_ERROR_MESSAGE_MAX];
    for (size_t i = 0; i < sizeof auto_order / sizeof auto_order[0]; i++) {
        fw_provider p = auto_order[i];
        const char *name = fw_provider_name(p);
        if (!provider_in_build(p)) {
            FW_DEBUG(MOD, "provider skipped", "provider=%s reason=\"not in this build\"", name);
            continue;
        }
        if (p == FW_PROVIDER_WEBGPU && !fw_ort_webgpu_auto_ok(opts, why, sizeof why)) {
            unsigned bit = 1u << p;
            fw_log(atomic_fetch_or(&auto_skip_logged, bit) & bit ? FW_LOG_DEBUG : FW_LOG_INFO, MOD,
                   "provider skipped", "provider=%s reason=\"%s\"", name, why);
            continue;
        }
        if (p == FW_PROVIDER_TENSORRT && !trt_enabled()) {
            FW_DEBUG(MOD, "provider skipped",
                     "provider=%s reason=\"libnvinfer.so.10 not found, or FACEWORK_TRT=0\"", name);
            continue;
        }
        fw_err rc = try_session(path, opts, p, &m->session, why, sizeof why, err);
        if (rc == FW_OK) {
            m->provider = p;
            return FW_OK;
        }
        if (rc != FW_ERR_PROVIDER && rc != FW_ERR_MODEL)
            return rc;
        unsigned bit = 1u << p;
        fw_log(atomic_fetch_or(&auto_skip_logged, bit) & bit ? FW_LOG_DEBUG : FW_LOG_INFO, MOD,
               "provider skipped, falling back", "provider=%s reason=\"%s failed: %s\"", name,
               rc == FW_ERR_PROVIDER ? "append" : "session", why);
    }
    fw_err rc = try_session(path, opts, FW_PROVIDER_CPU, &m->session, why, sizeof why, err);
    if (rc == FW_ERR_MODEL)
        return fw_error_set(err, FW_ERR_MODEL, "%s: %s", path, why);
    if (rc == FW_OK)
        m->provider = FW_PROVIDER_CPU;
    return rc;
}

/* An explicit provider: it starts or the load fails (no silent fallback). */
static fw_err open_explicit(fw_model *m, const fw_session_opts *opts, fw_error *err)
{
    const char *path = m->info.path;
    const fw_provider p = opts->provider;
    const char *name = fw_provider_name(p);
    char why[FW_ERROR_MESSAGE_MAX];
    if (p != FW_PROVIDER_CPU && !provider_in_build(p)) {
        char avail[160] = "";
        size_t off = 0;
        for (size_t i = 0; i < g_n_avail && off < sizeof avail; i++)
            off +=
                (size_t)snprintf(avail + off, sizeof avail - off, "%s%s", i ? "," : "", g_avail[i]);
        return fw_error_set(err, FW_ERR_PROVIDER,
                            "execution provider %s is not in this ONNX Runtime build "
                            "(available: %s)",
                            name, avail);
    }
    fw_err rc = try_session(path, opts, p, &m->session, why, sizeof why, err);
    if (rc == FW_OK) {
        m->provider = p;
        return FW_OK;
    }
    if (rc == FW_ERR_PROVIDER)
        return fw_error_set(err, FW_ERR_PROVIDER, "execution provider %s failed to start: %s", name,
                            why);
    if (rc != FW_ERR_MODEL || p == FW_PROVIDER_CPU)
        return rc == FW_ERR_MODEL ? fw_error_set(err, FW_ERR_MODEL, "%s: %s", path, why) : rc;
    /* The session failed on the provider: blame the model only when the CPU fails too. */
    char cpu_why[FW_ERROR_MESSAGE_MAX];
    OrtSession *probe = NULL;
    fw_err cpu_rc = try_session(path, opts, FW_PROVIDER_CPU, &probe, cpu_why, sizeof cpu_why, err);
    release_session(probe);
    if (cpu_rc == FW_ERR_MODEL)
        return fw_error_set(err, FW_ERR_MODEL, "%s: %s", path, cpu_why);
    return fw_error_set(err, FW_ERR_PROVIDER, "execution provider %s cannot run %s: %s", name, path,
                        why);
}

/* CUDA / TensorRT sessions: ORT's pinned host allocator (an arena) for input buffers, and
 * the pinned memory info to bind outputs to. Best effort: without them runs use pageable
 * memory (logged). */
static void setup_pinned(fw_model *m)
{
    if (m->opts.pageable_io ||
        (m->provider != FW_PROVIDER_CUDA && m->provider != FW_PROVIDER_TENSORRT))
        return;
    OrtStatus *st = g_api->CreateMemoryInfo("CudaPinned", OrtDeviceAllocator, m->opts.device_id,
                                            OrtMemTypeCPUOutput, &m->pinned_mem);
    if (!st)
        st = g_api->CreateAllocator(m->session, m->pinned_mem, &m->pinned_alloc);
    if (st) {
        char why[FW_ERROR_MESSAGE_MAX];
        status_msg(st, why, sizeof why);
        FW_INFO(MOD, "no pinned host buffers; runs use pageable memory",
                "path=\"%s\" reason=\"%s\"", m->info.path, why);
        if (m->pinned_mem)
            g_api->ReleaseMemoryInfo(m->pinned_mem);
        m->pinned_mem = NULL;
        m->pinned_alloc = NULL;
        atomic_store(&m->bound_state, -1);
    }
}

fw_err fw_model_load(const char *path, const fw_session_opts *opts, fw_model **out, fw_error *err)
{
    if (!out)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_model_load: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_model_load: no path");
    fw_session_opts defaults = {.provider = FW_PROVIDER_AUTO};
    if (!opts)
        opts = &defaults;
    if ((unsigned)opts->provider >= FW_PROVIDER__COUNT || opts->threads < 0 || opts->device_id < 0)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_model_load: bad session options");
    if (strlen(path) >= sizeof((fw_model_info *)0)->path)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "model path too long");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return fw_error_set(err, errno == ENOENT ? FW_ERR_NOT_FOUND : FW_ERR_IO, "%s: %s", path,
                            strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return fw_error_set(err, FW_ERR_MODEL, "%s: not a regular file", path);
    fw_err rc = api_ready(err);
    if (rc)
        return rc;

    fw_model *m = calloc(1, sizeof *m);
    if (!m)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    snprintf(m->info.path, sizeof m->info.path, "%s", path);
    m->opts = *opts;
    if (opts->trt_cache_dir) {
        snprintf(m->trt_dir, sizeof m->trt_dir, "%s", opts->trt_cache_dir);
        m->opts.trt_cache_dir = m->trt_dir;
    }
    atomic_init(&m->bound_state, 0);
    atomic_init(&m->bound_misses, 0);
    atomic_init(&m->runs, 0);
    atomic_init(&m->bucketed, 0);
    rc = opts->provider == FW_PROVIDER_AUTO ? open_auto(m, opts, err) : open_explicit(m, opts, err);
    if (!rc) {
        OrtStatus *st =
            g_api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &m->cpu_mem);
        rc = st ? ort_fail(st, FW_ERR_INTERNAL, err, "CreateCpuMemoryInfo") : FW_OK;
    }
    if (!rc)
        rc = read_info(m, err);
    if (!rc)
        setup_pinned(m);
    if (rc) {
        fw_model_free(m);
        return rc;
    }
    if (m->provider == FW_PROVIDER_WEBGPU) {
        const fw_vk_devices *vk = fw_vk_devices_get();
        int i = fw_vk_preferred(vk, opts->webgpu_low_power);
        m->software = i >= 0 && vk->dev[i].type == FW_VK_TYPE_CPU;
        atomic_store(&m->bucketed, m->info.inputs[0].rank >= 1 && m->info.inputs[0].dims[0] < 0);
    }
    FW_DEBUG(MOD, "model loaded", "path=\"%s\" provider=%s inputs=%zu outputs=%zu", path,
             fw_provider_name(m->provider), m->info.n_inputs, m->info.n_outputs);
    *out = m;
    return FW_OK;
}

void fw_model_free(fw_model *m)
{
    if (!m)
        return;
    if (m->pinned_alloc)
        g_api->ReleaseAllocator(m->pinned_alloc);
    if (m->pinned_mem)
        g_api->ReleaseMemoryInfo(m->pinned_mem);
    release_session(m->session);
    if (m->cpu_mem)
        g_api->ReleaseMemoryInfo(m->cpu_mem);
    free(m);
}

const fw_model_info *fw_model_get_info(const fw_model *m)
{
    return m ? &m->info : NULL;
}

const char *fw_model_provider(const fw_model *m)
{
    if (m && m->has_fault && m->fault.device)
        return "sim-gpu";
    return m ? fw_provider_name(m->provider) : "none";
}

int fw_model_on_device(const fw_model *m)
{
    return m && (m->provider != FW_PROVIDER_CPU || (m->has_fault && m->fault.device));
}

int fw_model_software_device(const fw_model *m)
{
    return m && m->provider == FW_PROVIDER_WEBGPU && m->software;
}

int64_t fw_ort_batch_bucket(int64_t batch, int max_batch)
{
    const int64_t top = max_batch > 0 ? max_batch : 64;
    if (batch >= top)
        return batch;
    int64_t b = 1;
    while (b < batch)
        b *= 2;
    return b < top ? b : top;
}

const fw_session_opts *fw_model_session_opts(const fw_model *m)
{
    return m ? &m->opts : NULL;
}

void *fw_model_host_alloc(fw_model *m, size_t bytes)
{
    if (!bytes)
        bytes = 1;
    if (m && m->pinned_alloc) {
        void *p = NULL;
        OrtStatus *st = g_api->AllocatorAlloc(m->pinned_alloc, bytes, &p);
        if (!st)
            return p;
        g_api->ReleaseStatus(st);
        return NULL;
    }
    return malloc(bytes);
}

void fw_model_host_free(fw_model *m, void *p)
{
    if (!p)
        return;
    if (m && m->pinned_alloc) {
        OrtStatus *st = g_api->AllocatorFree(m->pinned_alloc, p);
        if (st)
            g_api->ReleaseStatus(st);
        return;
    }
    free(p);
}

void fw__model_set_faults(fw_model *m, const fw_fault_spec *spec)
{
    if (!m)
        return;
    m->has_fault = spec != NULL;
    if (spec)
        m->fault = *spec;
    else
        memset(&m->fault, 0, sizeof m->fault);
    atomic_store(&m->runs, 0);
}

/* The test hook: FW_OK, or the injected failure for this run. */
static fw_err injected_fault(fw_model *m, const fw_shape *shape, fw_error *err)
{
    unsigned long run = atomic_fetch_add(&m->runs, 1);
    const fw_fault_spec *f = &m->fault;
    int fail = f->fail_always || (f->fail_first > 0 && run < (unsigned long)f->fail_first) ||
               (f->fail_above > 0 && shape->dims[0] > f->fail_above);
    if (!fail)
        return FW_OK;
    return fw_error_set(err, FW_ERR_INFERENCE, "Run: %s (injected fault, batch %lld)",
                        f->oom ? "CUDA failure 2: out of memory"
                               : "CUDA failure 719: unspecified launch failure",
                        (long long)shape->dims[0]);
}

void fw_tensor_clear(fw_tensor *t)
{
    if (!t)
        return;
    free(t->data);
    memset(t, 0, sizeof *t);
}

/* Copies one float32 output into t. */
static fw_err take_output(OrtValue *v, const char *name, fw_tensor *t, fw_error *err)
{
    if (!v)
        return fw_error_set(err, FW_ERR_INFERENCE, "output %s: no value", name);
    OrtTensorTypeAndShapeInfo *tsi = NULL;
    OrtStatus *st = g_api->GetTensorTypeAndShape(v, &tsi);
    if (st)
        return ort_fail(st, FW_ERR_MODEL, err, name);
    ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    size_t rank = 0, count = 0;
    fw_err rc = FW_OK;
    st = g_api->GetTensorElementType(tsi, &type);
    if (!st)
        st = g_api->GetDimensionsCount(tsi, &rank);
    if (!st && rank <= FW_MAX_RANK)
        st = g_api->GetDimensions(tsi, t->shape.dims, rank);
    if (!st)
        st = g_api->GetTensorShapeElementCount(tsi, &count);
    g_api->ReleaseTensorTypeAndShapeInfo(tsi);
    if (st)
        return ort_fail(st, FW_ERR_INFERENCE, err, name);
    if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        return fw_error_set(err, FW_ERR_MODEL, "output %s is not float32 (ONNX type %d)", name,
                            (int)type);
    if (rank > FW_MAX_RANK)
        return fw_error_set(err, FW_ERR_MODEL, "output %s: rank %zu is over %d", name, rank,
                            FW_MAX_RANK);
    t->shape.rank = (int)rank;
    t->count = count;
    if (count) {
        void *src = NULL;
        st = g_api->GetTensorMutableData(v, &src);
        if (st)
            return ort_fail(st, FW_ERR_INFERENCE, err, name);
        t->data = malloc(count * sizeof(float));
        if (!t->data)
            return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
        memcpy(t->data, src, count * sizeof(float));
    }
    return rc;
}

static fw_err run_plain(fw_model *m, const float *input, const fw_shape *shape, size_t count,
                        fw_tensor *outs, fw_error *err);

/* A run of a bucketed (WebGPU) session: the batch of `shape` padded with zeros to its bucket,
 * then each output cut back to the batch. FW_ERR_UNSUPPORTED (outs cleared) when an output
 * does not carry the padded batch as its first dimension. */
static fw_err run_bucketed(fw_model *m, const float *input, const fw_shape *shape, size_t count,
                           fw_tensor *outs, fw_error *err)
{
    const int64_t b = shape->dims[0];
    const int64_t pb = fw_ort_batch_bucket(b, m->opts.max_batch);
    if (pb == b)
        return run_plain(m, input, shape, count, outs, err);
    const size_t per = count / (size_t)b;
    float *padded = calloc(per * (size_t)pb, sizeof *padded);
    if (!padded)
        return fw_error_set(err, FW_ERR_NOMEM, "out of memory");
    memcpy(padded, input, count * sizeof *padded);
    fw_shape ps = *shape;
    ps.dims[0] = pb;
    fw_err rc = run_plain(m, padded, &ps, per * (size_t)pb, outs, err);
    free(padded);
    if (rc)
        return rc;
    for (size_t i = 0; i < m->info.n_outputs; i++) {
        fw_tensor *t = &outs[i];
        if (t->shape.rank < 1 || t->shape.dims[0] != pb) {
            rc = fw_error_set(err, FW_ERR_UNSUPPORTED,
                              "output %s does not carry the batch (first dimension %lld, batch "
                              "%lld)",
                              m->out_names[i], t->shape.rank ? (long long)t->shape.dims[0] : 0LL,
                              (long long)pb);
            break;
        }
        t->count = t->count / (size_t)pb * (size_t)b;
        t->shape.dims[0] = b;
    }
    if (rc)
        for (size_t i = 0; i < m->info.n_outputs; i++)
            fw_tensor_clear(&outs[i]);
    return rc;
}

/* Run with an I/O binding: the input (in the caller's buffer, pinned when it came from
 * fw_model_host_alloc) is copied to the device once, and every output is copied from the
 * device once, into ORT's pinned host memory, then into the tensor. */
static fw_err run_bound(fw_model *m, const float *input, const fw_shape *shape, size_t count,
                        fw_tensor *outs, fw_error *err)
{
    const fw_model_info *info = &m->info;
    OrtIoBinding *b = NULL;
    OrtValue *in = NULL;
    OrtValue **vals = NULL;
    size_t n_vals = 0;
    OrtAllocator *alloc = NULL;
    fw_err rc = FW_OK;
    OrtStatus *st = g_api->GetAllocatorWithDefaultOptions(&alloc);
    if (!st)
        st = g_api->CreateIoBinding(m->session, &b);
    if (!st)
        st = g_api->CreateTensorWithDataAsOrtValue(m->cpu_mem, (void *)input, count * sizeof(float),
                                                   shape->dims, (size_t)shape->rank,
                                                   ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &in);
    if (!st)
        st = g_api->BindInput(b, m->in_names[0], in);
    for (size_t i = 0; !st && i < info->n_outputs; i++)
        st = g_api->BindOutputToDevice(b, m->out_names[i], m->pinned_mem);
    if (st) {
        rc = ort_fail(st, FW_ERR_INFERENCE, err, "I/O binding");
        goto done;
    }
    st = g_api->RunWithBinding(m->session, NULL, b);
    if (!st)
        st = g_api->SynchronizeBoundOutputs(b);
    if (!st)
        st = g_api->GetBoundOutputValues(b, alloc, &vals, &n_vals);
    if (st) {
        rc = ort_fail(st, FW_ERR_INFERENCE, err, "Run");
        goto done;
    }
    if (n_vals != info->n_outputs)
        rc = fw_error_set(err, FW_ERR_INFERENCE, "Run: %zu outputs bound, %zu returned",
                          info->n_outputs, n_vals);
    for (size_t i = 0; i < n_vals; i++) {
        if (!rc && i < info->n_outputs)
            rc = take_output(vals[i], m->out_names[i], &outs[i], err);
        if (vals[i])
            g_api->ReleaseValue(vals[i]);
    }
    if (vals) {
        st = g_api->AllocatorFree(alloc, vals);
        if (st)
            g_api->ReleaseStatus(st);
    }
    if (rc)
        for (size_t i = 0; i < info->n_outputs; i++)
            fw_tensor_clear(&outs[i]);
done:
    if (in)
        g_api->ReleaseValue(in);
    if (b)
        g_api->ReleaseIoBinding(b);
    return rc;
}

fw_err fw_model_run(fw_model *m, const float *input, const fw_shape *shape, fw_tensor *outs,
                    fw_error *err)
{
    if (!m || !input || !shape || !outs)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "fw_model_run: NULL argument");
    const fw_model_info *info = &m->info;
    if (info->n_inputs != 1)
        return fw_error_set(err, FW_ERR_MODEL, "%s has %zu inputs; one is supported", info->path,
                            info->n_inputs);
    const fw_shape *want = &info->inputs[0];
    if (shape->rank != want->rank || shape->rank < 1)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "input rank %d, the model wants %d",
                            shape->rank, want->rank);
    size_t count = 1;
    for (int i = 0; i < shape->rank; i++) {
        if (shape->dims[i] <= 0 || (want->dims[i] > 0 && shape->dims[i] != want->dims[i]))
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                "input dim %d is %lld, the model wants %lld", i,
                                (long long)shape->dims[i], (long long)want->dims[i]);
        count *= (size_t)shape->dims[i];
    }
    for (size_t i = 0; i < info->n_outputs; i++)
        memset(&outs[i], 0, sizeof outs[i]);
    if (m->has_fault) {
        fw_err frc = injected_fault(m, shape, err);
        if (frc)
            return frc;
    }
    if (m->pinned_alloc && atomic_load(&m->bound_state) >= 0) {
        fw_error bound_err;
        fw_err rc = run_bound(m, input, shape, count, outs, &bound_err);
        if (rc == FW_OK) {
            atomic_store(&m->bound_state, 1);
            return FW_OK;
        }
        if (atomic_load(&m->bound_state) == 1 || rc == FW_ERR_NOMEM) {
            if (err)
                *err = bound_err;
            return rc;
        }
        /* Never worked on this session: maybe this ORT build cannot bind outputs to pinned
         * memory, maybe the device failed once. Try the plain path; when that works twice
         * where binding failed, keep to plain runs. */
        rc = run_plain(m, input, shape, count, outs, err);
        if (rc == FW_OK && atomic_fetch_add(&m->bound_misses, 1) + 1 >= 2) {
            atomic_store(&m->bound_state, -1);
            FW_WARN(MOD, "outputs bound to pinned memory failed; using plain runs",
                    "path=\"%s\" reason=\"%s\"", info->path, bound_err.message);
        }
        return rc;
    }
    if (atomic_load(&m->bucketed) == 1) {
        fw_error berr;
        fw_err rc = run_bucketed(m, input, shape, count, outs, &berr);
        if (rc != FW_ERR_UNSUPPORTED) {
            if (rc && err)
                *err = berr;
            return rc;
        }
        atomic_store(&m->bucketed, -1);
        FW_WARN(MOD, "batches not padded to buckets: the model's outputs do not carry the batch",
                "path=\"%s\" reason=\"%s\"", info->path, berr.message);
    }
    return run_plain(m, input, shape, count, outs, err);
}

/* Every WebGPU session of the process shares ORT's one WebGPU context (context id 0), whose
 * command encoder is not safe for concurrent runs: two threads running WebGPU sessions at
 * once fail with "CommandEncoder is already finished" and then crash inside ORT (seen on
 * lavapipe with the worker's two model threads). So WebGPU runs are serialised here. */
static pthread_mutex_t g_webgpu_run_mu = PTHREAD_MUTEX_INITIALIZER;

/* Run with ORT allocating the outputs in CPU memory. */
static fw_err run_plain(fw_model *m, const float *input, const fw_shape *shape, size_t count,
                        fw_tensor *outs, fw_error *err)
{
    const fw_model_info *info = &m->info;
    OrtValue *in = NULL;
    OrtStatus *st = g_api->CreateTensorWithDataAsOrtValue(
        m->cpu_mem, (void *)input, count * sizeof(float), shape->dims, (size_t)shape->rank,
        ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &in);
    if (st)
        return ort_fail(st, FW_ERR_INFERENCE, err, "input tensor");
    OrtValue *res[FW_MAX_OUTPUTS] = {0};
    const OrtValue *ins[1] = {in};
    const int serial = m->provider == FW_PROVIDER_WEBGPU;
    if (serial)
        pthread_mutex_lock(&g_webgpu_run_mu);
    st = g_api->Run(m->session, NULL, m->in_names, ins, 1, m->out_names, info->n_outputs, res);
    if (serial)
        pthread_mutex_unlock(&g_webgpu_run_mu);
    g_api->ReleaseValue(in);
    fw_err rc = st ? ort_fail(st, FW_ERR_INFERENCE, err, "Run") : FW_OK;
    for (size_t i = 0; i < info->n_outputs; i++) {
        if (!rc)
            rc = take_output(res[i], m->out_names[i], &outs[i], err);
        if (res[i])
            g_api->ReleaseValue(res[i]);
    }
    if (rc)
        for (size_t i = 0; i < info->n_outputs; i++)
            fw_tensor_clear(&outs[i]);
    return rc;
}
