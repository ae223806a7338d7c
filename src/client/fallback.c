#include "client/fallback.h"

#include <stdio.h>
#include <string.h>

#include "util/clock.h"
#include "util/log.h"

fw_err fw__fallback_init(fw__fallback *fb, const char *models_dir, int threads, fw_error *err)
{
    memset(fb, 0, sizeof *fb);
    if (models_dir)
        snprintf(fb->models_dir, sizeof fb->models_dir, "%s", models_dir);
    fb->threads = threads;
    atomic_init(&fb->eng, NULL);
    if (pthread_mutex_init(&fb->mu, NULL))
        return fw_error_set(err, FW_ERR_INTERNAL, "pthread_mutex_init failed");
    if (pthread_mutex_init(&fb->info_mu, NULL)) {
        pthread_mutex_destroy(&fb->mu);
        return fw_error_set(err, FW_ERR_INTERNAL, "pthread_mutex_init failed");
    }
    return FW_OK;
}

void fw__fallback_destroy(fw__fallback *fb)
{
    fw_engine_free(atomic_load(&fb->eng));
    atomic_store(&fb->eng, NULL);
    pthread_mutex_destroy(&fb->info_mu);
    pthread_mutex_destroy(&fb->mu);
}

fw_err fw__fallback_get(fw__fallback *fb, fw_engine **out, fw_error *err)
{
    *out = atomic_load(&fb->eng);
    if (*out)
        return FW_OK;
    pthread_mutex_lock(&fb->mu);
    if ((*out = atomic_load(&fb->eng))) {
        pthread_mutex_unlock(&fb->mu);
        return FW_OK;
    }
    uint64_t now = fw_now_ns();
    if (fb->tried && now - fb->last_try_ns < FW__FALLBACK_RETRY_NS) {
        pthread_mutex_lock(&fb->info_mu);
        fw_err rc = fw_error_set(err, FW_ERR_UNAVAILABLE,
                                 "the CPU fallback could not be loaded: %s", fb->last_error);
        pthread_mutex_unlock(&fb->info_mu);
        pthread_mutex_unlock(&fb->mu);
        return rc;
    }
    fb->tried = true;
    fb->last_try_ns = now;
    fw_engine_config cfg;
    fw_engine_config_init(&cfg);
    cfg.models_dir = fb->models_dir[0] ? fb->models_dir : NULL;
    cfg.provider = "cpu";
    cfg.threads = fb->threads;
    fw_error e;
    fw_error_clear(&e);
    uint64_t t0 = fw_now_ns();
    fw_engine *eng = NULL;
    fw_err rc = fw_engine_new(&cfg, &eng, &e);
    pthread_mutex_lock(&fb->info_mu);
    if (rc) {
        snprintf(fb->last_error, sizeof fb->last_error, "%s", e.message);
        FW_ERROR("client", "cpu fallback load failed", "error=\"%s\"", e.message);
        rc = fw_error_set(err, FW_ERR_UNAVAILABLE, "the CPU fallback could not be loaded: %s",
                          e.message);
    } else {
        fb->last_error[0] = '\0';
        FW_INFO("client", "cpu fallback loaded", "models=\"%s\" load_ms=%.1f",
                fw_engine_models_dir(eng), (double)(fw_now_ns() - t0) / 1e6);
        atomic_store(&fb->eng, eng);
        *out = eng;
    }
    pthread_mutex_unlock(&fb->info_mu);
    pthread_mutex_unlock(&fb->mu);
    return rc;
}

bool fw__fallback_loaded(fw__fallback *fb, char *msg, size_t cap)
{
    bool loaded = atomic_load(&fb->eng) != NULL;
    pthread_mutex_lock(&fb->info_mu);
    if (msg && cap)
        snprintf(msg, cap, "%s", fb->last_error);
    pthread_mutex_unlock(&fb->info_mu);
    return loaded;
}
