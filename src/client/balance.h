/* Internal: power-of-two-choices worker selection.
 *
 * Each worker has a rank (lower is better; FW__RANK_NONE: not eligible) and a number of
 * outstanding requests. Among the workers of the best rank present, fw__p2c_pick draws two
 * distinct ones uniformly (one draw of fw__rng_below each) and returns the one with fewer
 * outstanding requests (the first drawn on a tie); with a single such worker it returns it
 * without drawing. The client ranks workers so that a retry prefers one not yet tried and
 * a worker whose last health check failed comes after the others. */
#ifndef FW_CLIENT_BALANCE_H
#define FW_CLIENT_BALANCE_H

#include <stddef.h>
#include <stdint.h>

#include "client/backoff.h"

#define FW__RANK_NONE UINT32_MAX
#define FW__PICK_NONE SIZE_MAX

/* Returns the chosen index in [0, n), or FW__PICK_NONE when no worker is eligible. */
size_t fw__p2c_pick(const uint32_t *rank, const unsigned *outstanding, size_t n, fw__rng *rng);

/* The client's ranking: 0 untried and healthy, 1 untried with a failed health check,
 * 2 tried and healthy, 3 tried and unhealthy; FW__RANK_NONE when not eligible. */
uint32_t fw__rank(int eligible, int tried, int health_failed);

#endif
