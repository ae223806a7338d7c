#include "client/balance.h"

uint32_t fw__rank(int eligible, int tried, int health_failed)
{
    if (!eligible)
        return FW__RANK_NONE;
    return (uint32_t)((tried ? 2 : 0) + (health_failed ? 1 : 0));
}

size_t fw__p2c_pick(const uint32_t *rank, const unsigned *outstanding, size_t n, fw__rng *rng)
{
    uint32_t best = FW__RANK_NONE;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (rank[i] < best) {
            best = rank[i];
            count = 1;
        } else if (rank[i] == best && best != FW__RANK_NONE) {
            count++;
        }
    }
    if (best == FW__RANK_NONE || count == 0)
        return FW__PICK_NONE;
    /* k-th (0-based) worker of the best rank */
    size_t first = 0, second = 0;
    size_t a = count == 1 ? 0 : (size_t)fw__rng_below(rng, count);
    size_t b = a;
    if (count > 1) {
        b = (size_t)fw__rng_below(rng, count - 1);
        if (b >= a)
            b++;
    }
    for (size_t i = 0, k = 0; i < n; i++) {
        if (rank[i] != best)
            continue;
        if (k == a)
            first = i;
        if (k == b)
            second = i;
        k++;
    }
    return outstanding[second] < outstanding[first] ? second : first;
}
