#include "client/breaker.h"

#include <string.h>

#include "util/log.h"

static uint64_t now_ns(const fw__breaker *b)
{
    return b->clock(b->clock_user);
}

void fw__breaker_init(fw__breaker *b, const fw__breaker_config *cfg, const char *name,
                      fw_clock_fn clock, void *clock_user, fw__breaker_hook hook, void *hook_user)
{
    memset(b, 0, sizeof *b);
    b->cfg = *cfg;
    if (b->cfg.failure_threshold < 1)
        b->cfg.failure_threshold = 1;
    if (b->cfg.success_threshold < 1)
        b->cfg.success_threshold = 1;
    b->name = name ? name : "";
    b->clock = clock ? clock : fw_clock_monotonic;
    b->clock_user = clock_user;
    b->on_transition = hook;
    b->hook_user = hook_user;
    b->state = FW_BREAKER_CLOSED;
    b->changed_ns = now_ns(b);
}

void fw__breaker_transition(fw__breaker *b, fw_breaker_state to, const char *reason)
{
    fw_breaker_state from = b->state;
    if (from == to || (unsigned)to >= FW_BREAKER__COUNT)
        return;
    b->state = to;
    b->generation++;
    b->changed_ns = now_ns(b);
    b->requests = 0;
    b->failures = 0;
    b->successes = 0;
    b->probes = 0;
    b->transitions[from][to]++;
    fw_log(to == FW_BREAKER_OPEN ? FW_LOG_WARN : FW_LOG_INFO, "client", "breaker transition",
           "worker=%s from=%s to=%s reason=\"%s\"", b->name, fw_breaker_state_name(from),
           fw_breaker_state_name(to), reason ? reason : "");
    if (b->on_transition)
        b->on_transition(b->hook_user, from, to);
}

static bool recovered(const fw__breaker *b)
{
    return now_ns(b) - b->changed_ns >= b->cfg.recovery_ns;
}

bool fw__breaker_would_admit(const fw__breaker *b)
{
    switch (b->state) {
    case FW_BREAKER_CLOSED:
        return true;
    case FW_BREAKER_OPEN:
        return recovered(b);
    case FW_BREAKER_HALF_OPEN:
        return b->probes == 0;
    default:
        return false;
    }
}

bool fw__breaker_acquire(fw__breaker *b, fw__breaker_ticket *ticket)
{
    if (!fw__breaker_would_admit(b))
        return false;
    if (b->state == FW_BREAKER_OPEN)
        fw__breaker_transition(b, FW_BREAKER_HALF_OPEN, "recovery timeout elapsed");
    ticket->generation = b->generation;
    ticket->probe = b->state == FW_BREAKER_HALF_OPEN;
    if (ticket->probe)
        b->probes++;
    return true;
}

void fw__breaker_cancel(fw__breaker *b, const fw__breaker_ticket *ticket)
{
    if (ticket->generation == b->generation && ticket->probe && b->probes > 0)
        b->probes--;
}

void fw__breaker_record(fw__breaker *b, const fw__breaker_ticket *ticket, bool success)
{
    if (ticket->generation != b->generation)
        return; /* the state changed since this request was admitted */
    switch (b->state) {
    case FW_BREAKER_CLOSED:
        if (b->requests < UINT32_MAX)
            b->requests++;
        if (success) {
            b->failures = 0;
        } else {
            if (b->failures < UINT32_MAX)
                b->failures++;
            if (b->failures >= b->cfg.failure_threshold && b->requests >= b->cfg.min_requests)
                fw__breaker_transition(b, FW_BREAKER_OPEN, "failure threshold reached");
        }
        break;
    case FW_BREAKER_HALF_OPEN:
        if (ticket->probe && b->probes > 0)
            b->probes--;
        if (!success) {
            fw__breaker_transition(b, FW_BREAKER_OPEN, "probe failed");
        } else if (++b->successes >= b->cfg.success_threshold) {
            fw__breaker_transition(b, FW_BREAKER_CLOSED, "probes succeeded");
        }
        break;
    default:
        break; /* OPEN: nothing was admitted in this generation */
    }
}

uint64_t fw__breaker_wait_ns(const fw__breaker *b)
{
    switch (b->state) {
    case FW_BREAKER_CLOSED:
        return 0;
    case FW_BREAKER_OPEN: {
        uint64_t el = now_ns(b) - b->changed_ns;
        return el >= b->cfg.recovery_ns ? 0 : b->cfg.recovery_ns - el;
    }
    case FW_BREAKER_HALF_OPEN:
        return b->probes == 0 ? 0 : UINT64_MAX;
    default:
        return UINT64_MAX;
    }
}

const char *fw_breaker_state_name(fw_breaker_state s)
{
    switch (s) {
    case FW_BREAKER_CLOSED:
        return "closed";
    case FW_BREAKER_OPEN:
        return "open";
    case FW_BREAKER_HALF_OPEN:
        return "half_open";
    default:
        return "unknown";
    }
}
