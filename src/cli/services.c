/* Service subcommands: thin wrappers over the server, backend and client layers. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cli.h"
#include "server/worker.h"

#ifdef FW_HAVE_fw_client
#include <curl/curl.h>
#include <jansson.h>

#include "util/config.h"
#endif

int fw_cli_worker(int argc, char **argv)
{
    return fw_worker_main(argc, argv);
}

int fw_cli_backend(int argc, char **argv)
{
    return fw_backend_main(argc, argv);
}

#ifdef FW_HAVE_fw_client

#define HEALTH_DEFAULT_URL "http://127.0.0.1:8765"
#define HEALTH_MAX_BODY (4u << 20)

typedef struct body_buf {
    char *data;
    size_t len;
    bool too_big;
} body_buf;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user)
{
    body_buf *b = user;
    size_t n = size * nmemb;
    if (b->len + n > HEALTH_MAX_BODY) {
        b->too_big = true;
        return 0;
    }
    char *d = realloc(b->data, b->len + n + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, ptr, n);
    b->data = d;
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static const char *str_or(const json_t *o, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : def;
}

static double num_or(const json_t *o, const char *key, double def)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : def;
}

static void print_duration(const char *label, double s)
{
    if (s < 0) {
        printf("%-10s unknown\n", label);
        return;
    }
    long t = (long)s;
    if (t >= 3600)
        printf("%-10s %ldh %02ldm %02lds\n", label, t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60)
        printf("%-10s %ldm %02lds\n", label, t / 60, t % 60);
    else
        printf("%-10s %.1f s\n", label, s);
}

static void print_worker_health(const json_t *j)
{
    printf("%-10s worker %s (pid %lld)\n", "role", str_or(j, "worker_id", "?"),
           (long long)json_integer_value(json_object_get(j, "pid")));
    printf("%-10s %s\n", "version", str_or(j, "version", "?"));
    printf("%-10s %s (gpu available: %s, directml: %s)\n", "provider", str_or(j, "provider", "?"),
           json_is_true(json_object_get(j, "gpu_available")) ? "yes" : "no",
           json_is_true(json_object_get(j, "directml_available")) ? "yes" : "no");
    printf("%-10s %s (%s)\n", "model", str_or(j, "model", "none"),
           json_is_true(json_object_get(j, "model_loaded")) ? "loaded" : "not loaded");
    printf("%-10s %lld image(s)\n", "queue",
           (long long)json_integer_value(json_object_get(j, "queue_depth")));
    print_duration("uptime", num_or(j, "uptime_seconds", -1));
}

static void print_backend_health(const json_t *j)
{
    printf("%-10s backend %s (pid %lld)\n", "role", str_or(j, "worker_id", "?"),
           (long long)json_integer_value(json_object_get(j, "pid")));
    printf("%-10s %s\n", "version", str_or(j, "version", "?"));
    print_duration("uptime", num_or(j, "uptime_seconds", -1));
    long long items = json_integer_value(json_object_get(j, "items"));
    long long by_worker = json_integer_value(json_object_get(j, "items_worker"));
    long long by_fallback = json_integer_value(json_object_get(j, "items_fallback"));
    long long errors = json_integer_value(json_object_get(j, "items_error"));
    printf("%-10s %lld (by workers %lld, CPU fallback %lld, errors %lld)\n", "images", items,
           by_worker, by_fallback, errors);
    printf("%-10s %.1f%% of images (workers %.1f%%)\n", "fallback",
           100.0 * num_or(j, "fallback_rate", 0), 100.0 * num_or(j, "gpu_usage_rate", 0));
    const json_t *fb = json_object_get(j, "fallback");
    const char *fb_err = str_or(fb, "error", "");
    printf("%-10s %s, %s%s%s\n", "cpu",
           json_is_true(json_object_get(fb, "enabled")) ? "enabled" : "disabled",
           json_is_true(json_object_get(fb, "loaded")) ? "loaded" : "not loaded",
           fb_err[0] ? "; last error: " : "", fb_err);
    const json_t *ws = json_object_get(j, "workers");
    printf("%-10s %lld of %zu healthy (%s)\n", "workers",
           (long long)json_integer_value(json_object_get(j, "workers_healthy")),
           json_array_size(ws), str_or(j, "http_version", "?"));
    for (size_t i = 0; i < json_array_size(ws); i++) {
        const json_t *w = json_array_get(ws, i);
        const json_t *h = json_object_get(w, "health");
        char health[320];
        double age = num_or(h, "age_s", -1);
        if (!json_is_true(json_object_get(h, "checked")))
            snprintf(health, sizeof health, "not checked yet");
        else if (json_is_true(json_object_get(h, "ok")))
            snprintf(health, sizeof health, "ok (%.1f s ago)", age);
        else
            snprintf(health, sizeof health, "FAILED: %s (%.1f s ago)", str_or(h, "error", "?"),
                     age);
        printf("  %-32s breaker %-9s health %s; in flight %lld, %lld/%lld requests ok\n",
               str_or(w, "url", "?"), str_or(w, "breaker", "?"), health,
               (long long)json_integer_value(json_object_get(w, "outstanding")),
               (long long)json_integer_value(json_object_get(w, "successes")),
               (long long)json_integer_value(json_object_get(w, "requests")));
        /* breaker transitions, when there were any: "closed->open 2, open->half_open 2" */
        const json_t *tr = json_object_get(w, "transitions");
        const char *key;
        const json_t *v;
        bool any = false;
        json_object_foreach((json_t *)tr, key, v)
        {
            if (json_integer_value(v) <= 0)
                continue;
            printf("%s%s %lld", any ? ", " : "    breaker transitions: ", key,
                   (long long)json_integer_value(v));
            any = true;
        }
        if (any)
            printf("\n");
    }
}

int fw_cli_health(int argc, char **argv)
{
    double timeout = 0;
    bool raw = false;
    fw_option table[] = {
        {.name = "timeout",
         .type = FW_OPT_DURATION,
         .def = "5s",
         .help = "request timeout",
         .dest = &timeout,
         .min = 0.001,
         .max = 3600},
        {.name = "json",
         .type = FW_OPT_BOOL,
         .def = "false",
         .help = "print the /health JSON as it came",
         .dest = &raw},
    };
    size_t n = sizeof table / sizeof table[0];
    if (fw_config_wants_help(argc, argv)) {
        printf("usage: facework health [options] [URL]\n\n"
               "Prints the /health of a worker or backend (default %s) in one screen.\n"
               "Exit status: 0 when it answers 200 (healthy, or degraded but serving),\n"
               "1 otherwise, 2 on bad options.\n\n",
               HEALTH_DEFAULT_URL);
        fw_config_help(table, n, stdout);
        return 0;
    }
    const char *pos[2] = {NULL, NULL};
    size_t npos = 0;
    fw_config_opts co = {.positional = pos, .positional_cap = 1, .npositional = &npos};
    fw_error err;
    if (fw_config_parse_ex(table, n, argc, argv, &co, &err)) {
        fprintf(stderr, "facework health: %s\n", err.message);
        return 2;
    }
    const char *base = npos ? pos[0] : HEALTH_DEFAULT_URL;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    char url[2048];
    if (bl + sizeof "/health" > sizeof url) {
        fprintf(stderr, "facework health: URL too long\n");
        return 2;
    }
    if (bl >= 7 && !strcmp(base + bl - 7, "/health"))
        snprintf(url, sizeof url, "%.*s", (int)bl, base);
    else
        snprintf(url, sizeof url, "%.*s/health", (int)bl, base);
    if (!strstr(url, "://")) {
        if (strlen(url) + 8 > sizeof url) {
            fprintf(stderr, "facework health: URL too long\n");
            return 2;
        }
        memmove(url + 7, url, strlen(url) + 1);
        memcpy(url, "http://", 7);
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "facework health: cannot initialise libcurl\n");
        return 1;
    }
    int status = 1;
    body_buf body = {0};
    char cerr[CURL_ERROR_SIZE] = "";
    long code = 0;
    CURL *e = curl_easy_init();
    if (!e) {
        fprintf(stderr, "facework health: cannot initialise libcurl\n");
        goto out;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "facework-health");
    CURLcode rc = curl_easy_perform(e);
    if (rc != CURLE_OK) {
        printf("%s: no answer: %s\n", url, cerr[0] ? cerr : curl_easy_strerror(rc));
        goto out;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    if (raw) {
        printf("%s\n", body.data ? body.data : "");
        status = code == 200 ? 0 : 1;
        goto out;
    }
    json_t *j = body.data ? json_loads(body.data, 0, NULL) : NULL;
    if (!json_is_object(j)) {
        printf("%s: HTTP %ld, not a health answer: %.200s\n", url, code,
               body.data ? body.data : "");
        json_decref(j);
        goto out;
    }
    printf("%-10s %s\n", "url", url);
    printf("%-10s %s (HTTP %ld)\n", "status", str_or(j, "status", "?"), code);
    if (json_is_array(json_object_get(j, "workers")))
        print_backend_health(j);
    else
        print_worker_health(j);
    json_decref(j);
    status = code == 200 ? 0 : 1;
out:
    if (e)
        curl_easy_cleanup(e);
    free(body.data);
    curl_global_cleanup();
    return status;
}

#else /* no libcurl in this build */

int fw_cli_health(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "facework: 'health' needs the client library, absent from this build\n");
    return 2;
}

#endif
