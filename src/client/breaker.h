/* Internal: one worker's circuit breaker (DESIGN.md "Client internals").
 *
 *   CLOSED    --(failures >= failure_threshold consecutive, requests >= min_requests)--> OPEN
 *   OPEN      --(recovery_timeout elapsed, checked when traffic is asked for)--> HALF_OPEN
 *   HALF_OPEN --(success_threshold successes)--> CLOSED
 *   HALF_OPEN --(any failure)--> OPEN
 *
 * "requests" counts outcomes recorded since the breaker last entered CLOSED (or since init);
 * "failures" counts consecutive failures (a success resets it). HALF_OPEN admits one probe at
 * a time. Every request is a ticket from fw__breaker_acquire; an outcome recorded with a
 * ticket from before the latest transition is ignored (it describes the old state), as is
 * one recorded while OPEN. Every state change goes through fw__breaker_transition, which
 * logs it, counts it in `transitions` and calls the on_transition hook.
 *
 * Not thread-safe: the caller serialises access (the client holds its mutex). */
#ifndef FW_CLIENT_BREAKER_H
#define FW_CLIENT_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "facework/client.h"
#include "util/clock.h"

typedef struct fw__breaker_config {
    unsigned failure_threshold; /* >= 1 */
    unsigned min_requests;
    uint64_t recovery_ns;
    unsigned success_threshold; /* >= 1 */
} fw__breaker_config;

typedef void (*fw__breaker_hook)(void *user, fw_breaker_state from, fw_breaker_state to);

typedef struct fw__breaker {
    fw__breaker_config cfg;
    const char *name; /* for logs (a worker URL); not owned */
    fw_clock_fn clock;
    void *clock_user;
    fw__breaker_hook on_transition;
    void *hook_user;
    /* state */
    fw_breaker_state state;
    uint64_t generation; /* bumped by every transition */
    uint64_t changed_ns; /* clock at the latest transition */
    unsigned requests;   /* outcomes recorded since entering CLOSED */
    unsigned failures;   /* consecutive failures while CLOSED */
    unsigned successes;  /* successes while HALF_OPEN */
    unsigned probes;     /* HALF_OPEN requests in flight (0 or 1) */
    uint64_t transitions[FW_BREAKER__COUNT][FW_BREAKER__COUNT]; /* [from][to] */
} fw__breaker;

/* A request's admission: pass it back to record or cancel. */
typedef struct fw__breaker_ticket {
    uint64_t generation;
    bool probe;
} fw__breaker_ticket;

/* CLOSED, zero counts. clock NULL: fw_clock_monotonic. name, hook may be NULL. */
void fw__breaker_init(fw__breaker *b, const fw__breaker_config *cfg, const char *name,
                      fw_clock_fn clock, void *clock_user, fw__breaker_hook hook, void *hook_user);

/* Would a request be admitted now? Pure (no transition): CLOSED yes; OPEN once recovery has
 * elapsed; HALF_OPEN when no probe is in flight. */
bool fw__breaker_would_admit(const fw__breaker *b);

/* Admits a request: true and *ticket filled when fw__breaker_would_admit; moves OPEN to
 * HALF_OPEN when recovery has elapsed and takes the probe slot in HALF_OPEN. */
bool fw__breaker_acquire(fw__breaker *b, fw__breaker_ticket *ticket);

/* Records the outcome of an admitted request (see the state machine above). */
void fw__breaker_record(fw__breaker *b, const fw__breaker_ticket *ticket, bool success);

/* Releases an admitted request that ended without an outcome (abandoned): frees the probe
 * slot, counts nothing. */
void fw__breaker_cancel(fw__breaker *b, const fw__breaker_ticket *ticket);

/* Nanoseconds until an OPEN breaker admits traffic again (0 when it admits now; for
 * HALF_OPEN with a probe in flight, UINT64_MAX: unknown). */
uint64_t fw__breaker_wait_ns(const fw__breaker *b);

/* THE transition function: sets the state, resets the counters of the new state, bumps the
 * generation, logs "breaker transition" with from/to/reason, counts it, calls the hook.
 * A transition to the current state is a no-op. */
void fw__breaker_transition(fw__breaker *b, fw_breaker_state to, const char *reason);

#endif
