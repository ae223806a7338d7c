#include "util/signals.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t thread;
static bool running;
static atomic_bool stopping;
static fw_signal_fn callback;
static void *callback_user;

static void handled_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

static void *signal_main(void *arg)
{
    (void)arg;
    sigset_t set;
    handled_set(&set);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        /* fw_signals_stop wakes us with a signal aimed at this thread after setting the
         * flag; a real signal racing with it is dropped, as we are stopping anyway. */
        if (atomic_load(&stopping))
            break;
        callback(sig, callback_user);
    }
    return NULL;
}

fw_err fw_signals_start(fw_signal_fn cb, void *user, fw_error *err)
{
    if (!cb)
        return fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "signals: no callback");
    pthread_mutex_lock(&mu);
    if (running) {
        pthread_mutex_unlock(&mu);
        return fw_error_set(err, FW_ERR_BUSY, "signals: already started");
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) != 0) {
        pthread_mutex_unlock(&mu);
        return fw_error_set(err, FW_ERR_INTERNAL, "signals: cannot ignore SIGPIPE");
    }
    sigset_t set;
    handled_set(&set);
    int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (rc != 0) {
        pthread_mutex_unlock(&mu);
        return fw_error_set(err, FW_ERR_INTERNAL, "signals: pthread_sigmask: %s", strerror(rc));
    }
    callback = cb;
    callback_user = user;
    atomic_store(&stopping, false);
    rc = pthread_create(&thread, NULL, signal_main, NULL);
    if (rc != 0) {
        pthread_mutex_unlock(&mu);
        return fw_error_set(err, FW_ERR_INTERNAL, "signals: pthread_create: %s", strerror(rc));
    }
    running = true;
    pthread_mutex_unlock(&mu);
    fw_error_clear(err);
    return FW_OK;
}

void fw_signals_stop(void)
{
    pthread_mutex_lock(&mu);
    if (running) {
        atomic_store(&stopping, true);
        pthread_kill(thread, SIGHUP);
        pthread_join(thread, NULL);
        running = false;
        callback = NULL;
        callback_user = NULL;
    }
    pthread_mutex_unlock(&mu);
}

void fw_signals_reset_child(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        sigaction(sigs[i], &sa, NULL);
        sigaddset(&set, sigs[i]);
    }
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}
