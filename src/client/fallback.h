/* Internal: the CPU fallback. An fw_engine on the "cpu" provider, created on first need.
 *
 * fw__fallback_get creates the engine once (callers racing for it wait on the mutex; the
 * winner loads it). A failed load is remembered for the status report and retried on the
 * next fw__fallback_get, at most once per FW__FALLBACK_RETRY_NS. Thread-safe. */
#ifndef FW_CLIENT_FALLBACK_H
#define FW_CLIENT_FALLBACK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "facework/client.h"
#include "facework/facework.h"

#define FW__FALLBACK_RETRY_NS (5ull * 1000000000ull)

typedef struct fw__fallback {
    pthread_mutex_t mu;                  /* serialises loading */
    pthread_mutex_t info_mu;             /* guards last_error (never held for long) */
    fw_engine *_Atomic eng;              /* NULL until loaded */
    char models_dir[FW_CLIENT_PATH_MAX]; /* "" = fw_default_models_dir() */
    int threads;
    char last_error[FW_ERROR_MESSAGE_MAX];
    uint64_t last_try_ns;
    bool tried;
} fw__fallback;

fw_err fw__fallback_init(fw__fallback *fb, const char *models_dir, int threads, fw_error *err);
void fw__fallback_destroy(fw__fallback *fb);

/* The engine, loading it if needed. The pointer stays valid until fw__fallback_destroy. */
fw_err fw__fallback_get(fw__fallback *fb, fw_engine **out, fw_error *err);

/* Whether the engine is loaded, and the last load error ("" when none), copied into msg.
 * Never waits for a load in progress. */
bool fw__fallback_loaded(fw__fallback *fb, char *msg, size_t cap);

#endif
