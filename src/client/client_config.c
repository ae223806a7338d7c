#include "client/client_config.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/config.h"
#include "util/redis.h"

void fw_client_config_init(fw_client_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->enabled = FW_CLIENT_UNSET;
    cfg->timeout_s = FW_CLIENT_UNSET;
    cfg->attempt_timeout_s = FW_CLIENT_UNSET;
    cfg->connect_timeout_s = FW_CLIENT_UNSET;
    cfg->max_retries = FW_CLIENT_UNSET;
    cfg->batch_size = FW_CLIENT_UNSET;
    cfg->health_interval_s = FW_CLIENT_UNSET;
    cfg->failure_threshold = FW_CLIENT_UNSET;
    cfg->recovery_timeout_s = FW_CLIENT_UNSET;
    cfg->success_threshold = FW_CLIENT_UNSET;
    cfg->min_requests = FW_CLIENT_UNSET;
    cfg->max_connections = FW_CLIENT_UNSET;
    cfg->backoff_base_s = FW_CLIENT_UNSET;
    cfg->backoff_max_s = FW_CLIENT_UNSET;
    cfg->http_version = FW_CLIENT_UNSET;
    cfg->fallback = FW_CLIENT_UNSET;
    cfg->fallback_threads = FW_CLIENT_UNSET;
}

bool fw__parse_http_mode(const char *s, fw_client_http *out)
{
    static const struct {
        const char *name;
        fw_client_http mode;
    } names[] = {
        {"auto", FW_CLIENT_HTTP_AUTO},
        {"1.1", FW_CLIENT_HTTP_1_1},
        {"http/1.1", FW_CLIENT_HTTP_1_1},
        {"http1.1", FW_CLIENT_HTTP_1_1},
        {"h2c", FW_CLIENT_HTTP_2_UPGRADE},
        {"h2c-upgrade", FW_CLIENT_HTTP_2_UPGRADE},
        {"upgrade", FW_CLIENT_HTTP_2_UPGRADE},
        {"h2", FW_CLIENT_HTTP_2_PRIOR},
        {"h2-prior", FW_CLIENT_HTTP_2_PRIOR},
        {"h2-prior-knowledge", FW_CLIENT_HTTP_2_PRIOR},
        {"prior-knowledge", FW_CLIENT_HTTP_2_PRIOR},
    };
    if (!s)
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].mode;
            return true;
        }
    return false;
}

static bool url_ok(const char *u, size_t len)
{
    size_t skip;
    if (len > 7 && strncasecmp(u, "http://", 7) == 0)
        skip = 7;
    else if (len > 8 && strncasecmp(u, "https://", 8) == 0)
        skip = 8;
    else
        return false;
    if (u[skip] == '/' || u[skip] == ':')
        return false; /* no host */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)u[i];
        if (ch <= ' ' || ch == 0x7f || ch == '?' || ch == '#' || ch == '"' || ch == '\\')
            return false;
    }
    return true;
}

fw_err fw__split_urls(const char *list, const char *what, char urls[][FW_CLIENT_URL_MAX], size_t *n,
                      fw_error *err)
{
    *n = 0;
    if (!list)
        list = "";
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        while (b > a && b[-1] == '/')
            b--;
        size_t len = (size_t)(b - a);
        if (len) {
            if (len >= FW_CLIENT_URL_MAX)
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                    "%s: a URL is longer than %d bytes", what,
                                    FW_CLIENT_URL_MAX - 1);
            if (!url_ok(a, len))
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                                    "%s: '%.*s' is not an http:// or https:// URL with a host",
                                    what, (int)(len > 80 ? 80 : len), a);
            if (*n >= FW_CLIENT_MAX_WORKERS)
                return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "%s: more than %d workers", what,
                                    FW_CLIENT_MAX_WORKERS);
            memcpy(urls[*n], a, len);
            urls[*n][len] = '\0';
            for (size_t k = 0; k < *n; k++)
                if (strcasecmp(urls[k], urls[*n]) == 0)
                    return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "%s: '%s' is listed twice",
                                        what, urls[k]);
            (*n)++;
        }
        p = *end ? end + 1 : end;
    }
    if (*n == 0)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "%s: no worker URL", what);
    return FW_OK;
}

/* ---- defaults and validation ----------------------------------------------------------- */

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, __VA_ARGS__);                        \
    } while (0)

static void def_int(int *v, int d)
{
    if (*v == FW_CLIENT_UNSET)
        *v = d;
}

static void def_dbl(double *v, double d)
{
    if (*v == FW_CLIENT_UNSET)
        *v = d;
}

fw_err fw__client_config_resolve(const fw_client_config *in, fw_client_config *out, fw_error *err)
{
    if (!in)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "config: NULL");
    *out = *in;
    def_int(&out->enabled, 1);
    if (!out->urls[0])
        snprintf(out->urls, sizeof out->urls, "%s", FW__DEFAULT_URL);
    def_dbl(&out->timeout_s, 60);
    def_dbl(&out->attempt_timeout_s, 20);
    def_dbl(&out->connect_timeout_s, 2);
    def_int(&out->max_retries, 5);
    def_int(&out->batch_size, 32);
    def_dbl(&out->health_interval_s, 10);
    def_int(&out->failure_threshold, 15);
    def_dbl(&out->recovery_timeout_s, 20);
    def_int(&out->success_threshold, 3);
    def_int(&out->min_requests, 10);
    def_int(&out->max_connections, 8);
    def_dbl(&out->backoff_base_s, 0.1);
    def_dbl(&out->backoff_max_s, 5);
    def_int(&out->http_version, FW_CLIENT_HTTP_AUTO);
    def_int(&out->fallback, 1);
    def_int(&out->fallback_threads, 0);

    CHECK(out->enabled == 0 || out->enabled == 1, "enabled: must be 0 or 1");
    char urls[FW_CLIENT_MAX_WORKERS][FW_CLIENT_URL_MAX];
    size_t n;
    fw_err rc = fw__split_urls(out->urls, "urls", urls, &n, err);
    if (rc)
        return rc;
    CHECK(isfinite(out->timeout_s) && out->timeout_s > 0 && out->timeout_s <= 86400,
          "timeout_s: must be > 0 and <= 86400 seconds");
    CHECK(isfinite(out->attempt_timeout_s) && out->attempt_timeout_s > 0 &&
              out->attempt_timeout_s <= 86400,
          "attempt_timeout_s: must be > 0 and <= 86400 seconds");
    CHECK(isfinite(out->connect_timeout_s) && out->connect_timeout_s > 0 &&
              out->connect_timeout_s <= 3600,
          "connect_timeout_s: must be > 0 and <= 3600 seconds");
    CHECK(out->max_retries >= 0 && out->max_retries <= 100, "max_retries: must be 0..100");
    CHECK(out->batch_size >= 1 && out->batch_size <= 100000, "batch_size: must be 1..100000");
    CHECK(isfinite(out->health_interval_s) && out->health_interval_s >= 0 &&
              out->health_interval_s <= 86400,
          "health_interval_s: must be 0..86400 seconds");
    CHECK(out->failure_threshold >= 1 && out->failure_threshold <= 1000000,
          "failure_threshold: must be 1..1000000");
    CHECK(isfinite(out->recovery_timeout_s) && out->recovery_timeout_s >= 0 &&
              out->recovery_timeout_s <= 86400,
          "recovery_timeout_s: must be 0..86400 seconds");
    CHECK(out->success_threshold >= 1 && out->success_threshold <= 1000000,
          "success_threshold: must be 1..1000000");
    CHECK(out->min_requests >= 0 && out->min_requests <= 1000000,
          "min_requests: must be 0..1000000");
    CHECK(out->max_connections >= 1 && out->max_connections <= 1024,
          "max_connections: must be 1..1024");
    CHECK(isfinite(out->backoff_base_s) && out->backoff_base_s >= 0 && out->backoff_base_s <= 3600,
          "backoff_base_s: must be 0..3600 seconds");
    CHECK(isfinite(out->backoff_max_s) && out->backoff_max_s >= out->backoff_base_s &&
              out->backoff_max_s <= 3600,
          "backoff_max_s: must be backoff_base_s..3600 seconds");
    CHECK(out->http_version >= FW_CLIENT_HTTP_AUTO && out->http_version <= FW_CLIENT_HTTP_2_PRIOR,
          "http_version: not an fw_client_http value");
    CHECK(out->fallback == 0 || out->fallback == 1, "fallback: must be 0 or 1");
    CHECK(out->fallback_threads >= 0 && out->fallback_threads <= 256,
          "fallback_threads: must be 0..256");
    if (out->queue[0]) {
        fw_redis_url u;
        fw_error qe;
        CHECK(fw_redis_url_parse(out->queue, &u, &qe) == FW_OK, "queue: %s", qe.message);
    }
    return FW_OK;
}

/* ---- environment and .env --------------------------------------------------------------- */

enum {
    O_ENABLED,
    O_URL,
    O_TIMEOUT,
    O_ATTEMPT_TIMEOUT,
    O_CONNECT_TIMEOUT,
    O_MAX_RETRIES,
    O_BATCH,
    O_HEALTH,
    O_KEY,
    O_CB_FAIL,
    O_CB_RECOVERY,
    O_CB_SUCCESS,
    O_CB_MIN,
    O_MAXCONN,
    O_BACKOFF_BASE,
    O_BACKOFF_MAX,
    O_HTTP,
    O_FALLBACK,
    O_MODELS,
    O_FB_THREADS,
    O_QUEUE,
    O__COUNT
};

fw_err fw_client_config_from_env(fw_client_config *cfg, const char *dotenv_path, fw_error *err)
{
    if (!cfg)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "config: NULL");
    bool enabled = true, fallback = true;
    char *url = NULL, *key = NULL, *http = NULL, *models = NULL, *queue = NULL;
    double timeout = 0, attempt = 0, connect = 0, health = 0, recovery = 0, bbase = 0, bmax = 0;
    int retries = 0, batch = 0, cbfail = 0, cbsucc = 0, cbmin = 0, maxconn = 0, fbthreads = 0;
#define ENVOPT(env, type, def, help, dest, lo, hi)                                                 \
    {NULL, env, NULL, type, def, help, dest, lo, hi, 0, NULL, 0, FW_SRC_DEFAULT}
    fw_option t[O__COUNT] = {
        [O_ENABLED] =
            ENVOPT("GPU_WORKER_ENABLED", FW_OPT_BOOL, "true", "use GPU workers", &enabled, 0, 0),
        [O_URL] =
            ENVOPT("GPU_WORKER_URL", FW_OPT_STRING, FW__DEFAULT_URL, "worker URLs", &url, 0, 0),
        [O_TIMEOUT] = ENVOPT("GPU_WORKER_TIMEOUT", FW_OPT_DURATION, "60s", "deadline per call",
                             &timeout, 0.001, 86400),
        [O_ATTEMPT_TIMEOUT] = ENVOPT("GPU_WORKER_ATTEMPT_TIMEOUT", FW_OPT_DURATION, "20s",
                                     "timeout per attempt", &attempt, 0.001, 86400),
        [O_CONNECT_TIMEOUT] = ENVOPT("GPU_WORKER_CONNECT_TIMEOUT", FW_OPT_DURATION, "2s",
                                     "connect timeout", &connect, 0.001, 3600),
        [O_MAX_RETRIES] =
            ENVOPT("GPU_WORKER_MAX_RETRIES", FW_OPT_INT, "5", "retries", &retries, 0, 100),
        [O_BATCH] = ENVOPT("GPU_WORKER_BATCH_SIZE", FW_OPT_INT, "32", "images per request", &batch,
                           1, 100000),
        [O_HEALTH] = ENVOPT("GPU_WORKER_HEALTH_CHECK_INTERVAL", FW_OPT_DURATION, "10s",
                            "health check interval", &health, 0, 86400),
        [O_KEY] = ENVOPT("GPU_WORKER_API_KEY", FW_OPT_STRING, NULL, "API key", &key, 0, 0),
        [O_CB_FAIL] = ENVOPT("GPU_WORKER_CB_FAILURE_THRESHOLD", FW_OPT_INT, "15",
                             "breaker failure threshold", &cbfail, 1, 1000000),
        [O_CB_RECOVERY] = ENVOPT("GPU_WORKER_CB_RECOVERY_TIMEOUT", FW_OPT_DURATION, "20s",
                                 "breaker recovery timeout", &recovery, 0, 86400),
        [O_CB_SUCCESS] = ENVOPT("GPU_WORKER_CB_SUCCESS_THRESHOLD", FW_OPT_INT, "3",
                                "breaker success threshold", &cbsucc, 1, 1000000),
        [O_CB_MIN] = ENVOPT("GPU_WORKER_CB_MIN_REQUESTS", FW_OPT_INT, "10",
                            "breaker minimum requests", &cbmin, 0, 1000000),
        [O_MAXCONN] = ENVOPT("GPU_WORKER_MAX_CONNECTIONS", FW_OPT_INT, "8",
                             "connections per worker", &maxconn, 1, 1024),
        [O_BACKOFF_BASE] = ENVOPT("GPU_WORKER_BACKOFF_BASE", FW_OPT_DURATION, "100ms",
                                  "first backoff ceiling", &bbase, 0, 3600),
        [O_BACKOFF_MAX] = ENVOPT("GPU_WORKER_BACKOFF_MAX", FW_OPT_DURATION, "5s", "largest backoff",
                                 &bmax, 0, 3600),
        [O_HTTP] = ENVOPT("GPU_WORKER_HTTP", FW_OPT_STRING, "auto", "HTTP version", &http, 0, 0),
        [O_FALLBACK] =
            ENVOPT("GPU_WORKER_CPU_FALLBACK", FW_OPT_BOOL, "true", "CPU fallback", &fallback, 0, 0),
        [O_MODELS] =
            ENVOPT("FACEWORK_MODELS", FW_OPT_STRING, NULL, "fallback models", &models, 0, 0),
        [O_FB_THREADS] = ENVOPT("GPU_WORKER_CPU_FALLBACK_THREADS", FW_OPT_INT, "0",
                                "fallback threads", &fbthreads, 0, 256),
        [O_QUEUE] =
            ENVOPT("GPU_WORKER_QUEUE", FW_OPT_STRING, NULL, "Redis job stream", &queue, 0, 0),
    };
#undef ENVOPT
    t[O_KEY].flags = FW_OPT_SECRET;
    t[O_QUEUE].flags = FW_OPT_SECRET; /* may hold a password */
    fw_config_opts co = {.dotenv_path = dotenv_path};
    fw_err rc = fw_config_parse_ex(t, O__COUNT, 0, NULL, &co, err);
    if (rc)
        return rc;
    fw_client_config c = *cfg;
    fw_client_http mode = FW_CLIENT_HTTP_AUTO;
    char urls[FW_CLIENT_MAX_WORKERS][FW_CLIENT_URL_MAX];
    size_t nurls;
    if (http && !fw__parse_http_mode(http, &mode)) {
        rc = fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                          "GPU_WORKER_HTTP='%s' (%s): not auto, 1.1, h2c or h2-prior-knowledge",
                          http, fw_config_source_name(t[O_HTTP].source));
    } else if (url && strlen(url) >= FW_CLIENT_URLS_MAX) {
        rc = fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "GPU_WORKER_URL (%s): longer than %d bytes",
                          fw_config_source_name(t[O_URL].source), FW_CLIENT_URLS_MAX - 1);
    } else if ((rc = fw__split_urls(url ? url : "", "GPU_WORKER_URL", urls, &nurls, err))) {
        /* message names the variable */
    } else if (key && strlen(key) >= FW_CLIENT_KEY_MAX) {
        rc = fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                          "GPU_WORKER_API_KEY (%s): longer than %d bytes",
                          fw_config_source_name(t[O_KEY].source), FW_CLIENT_KEY_MAX - 1);
    } else if (models && strlen(models) >= FW_CLIENT_PATH_MAX) {
        rc =
            fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "FACEWORK_MODELS (%s): longer than %d bytes",
                         fw_config_source_name(t[O_MODELS].source), FW_CLIENT_PATH_MAX - 1);
    } else if (queue && strlen(queue) >= FW_CLIENT_URL_MAX) {
        rc = fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                          "GPU_WORKER_QUEUE (%s): longer than %d bytes",
                          fw_config_source_name(t[O_QUEUE].source), FW_CLIENT_URL_MAX - 1);
    } else if (bmax < bbase) {
        rc = fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                          "GPU_WORKER_BACKOFF_MAX (%s): must not be below GPU_WORKER_BACKOFF_BASE",
                          fw_config_source_name(t[O_BACKOFF_MAX].source));
    }
    if (rc == FW_OK) {
        if (c.enabled == FW_CLIENT_UNSET)
            c.enabled = enabled;
        if (!c.urls[0])
            snprintf(c.urls, sizeof c.urls, "%s", url);
        def_dbl(&c.timeout_s, timeout);
        def_dbl(&c.attempt_timeout_s, attempt);
        def_dbl(&c.connect_timeout_s, connect);
        def_int(&c.max_retries, retries);
        def_int(&c.batch_size, batch);
        def_dbl(&c.health_interval_s, health);
        if (!c.api_key[0] && key)
            snprintf(c.api_key, sizeof c.api_key, "%s", key);
        def_int(&c.failure_threshold, cbfail);
        def_dbl(&c.recovery_timeout_s, recovery);
        def_int(&c.success_threshold, cbsucc);
        def_int(&c.min_requests, cbmin);
        def_int(&c.max_connections, maxconn);
        def_dbl(&c.backoff_base_s, bbase);
        def_dbl(&c.backoff_max_s, bmax);
        def_int(&c.http_version, (int)mode);
        def_int(&c.fallback, fallback);
        if (!c.fallback_models_dir[0] && models)
            snprintf(c.fallback_models_dir, sizeof c.fallback_models_dir, "%s", models);
        def_int(&c.fallback_threads, fbthreads);
        if (!c.queue[0] && queue)
            snprintf(c.queue, sizeof c.queue, "%s", queue);
        fw_client_config resolved;
        rc = fw__client_config_resolve(&c, &resolved, err);
        if (rc == FW_OK)
            *cfg = c;
    }
    fw_config_free(t, O__COUNT);
    return rc;
}
