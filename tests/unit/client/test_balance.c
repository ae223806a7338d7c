/* Power-of-two-choices: deterministic for a seed (expected picks computed independently from
 * splitmix64), least-outstanding of the two draws, best rank only, retries prefer untried. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "client/balance.h"

static void test_p2c_seeded_sequence(void **state)
{
    (void)state;
    /* seed 7 draws (a = next % 4, b = next % 3, bumped past a): (3,0) (2,0) (2,0) ...
     * outstanding 5,1,3,2: pick(3 vs 0) = 3, pick(2 vs 0) = 2, ... */
    static const size_t want[8] = {3, 2, 2, 2, 1, 1, 1, 2};
    const uint32_t rank[4] = {0, 0, 0, 0};
    const unsigned outst[4] = {5, 1, 3, 2};
    fw__rng r;
    fw__rng_seed(&r, 7);
    for (int i = 0; i < 8; i++)
        assert_int_equal(fw__p2c_pick(rank, outst, 4, &r), want[i]);
    /* same seed, same picks */
    fw__rng_seed(&r, 7);
    assert_int_equal(fw__p2c_pick(rank, outst, 4, &r), 3);
}

static void test_p2c_prefers_fewer_outstanding(void **state)
{
    (void)state;
    const uint32_t rank[4] = {0, 0, 0, 0};
    const unsigned outst[4] = {0, 10, 10, 10};
    fw__rng r;
    fw__rng_seed(&r, 99);
    int zero = 0;
    for (int i = 0; i < 6000; i++)
        zero += fw__p2c_pick(rank, outst, 4, &r) == 0;
    /* worker 0 is in 3 of the 6 pairs: chosen half of the time (never less) */
    assert_true(zero > 2700 && zero < 3300);
    /* never picks the most loaded when it is compared */
    const unsigned two[2] = {7, 3};
    const uint32_t r2[2] = {0, 0};
    for (int i = 0; i < 100; i++)
        assert_int_equal(fw__p2c_pick(r2, two, 2, &r), 1);
}

static void test_p2c_rank_and_eligibility(void **state)
{
    (void)state;
    fw__rng r;
    fw__rng_seed(&r, 7);
    /* only the best rank (0: workers 1 and 3) competes; 3 has fewer outstanding */
    const uint32_t rank[4] = {2, 0, 3, 0};
    const unsigned outst[4] = {0, 9, 0, 4};
    for (int i = 0; i < 4; i++)
        assert_int_equal(fw__p2c_pick(rank, outst, 4, &r), 3);
    /* a single eligible worker is returned without drawing */
    const uint32_t one[3] = {FW__RANK_NONE, 1, FW__RANK_NONE};
    const unsigned o3[3] = {0, 50, 0};
    fw__rng before = r;
    assert_int_equal(fw__p2c_pick(one, o3, 3, &r), 1);
    assert_true(r.state == before.state);
    /* nobody eligible */
    const uint32_t none[2] = {FW__RANK_NONE, FW__RANK_NONE};
    assert_true(fw__p2c_pick(none, o3, 2, &r) == FW__PICK_NONE);
    assert_true(fw__p2c_pick(none, o3, 0, &r) == FW__PICK_NONE);
}

static void test_rank_order(void **state)
{
    (void)state;
    /* untried healthy < untried unhealthy < tried healthy < tried unhealthy */
    assert_int_equal(fw__rank(1, 0, 0), 0);
    assert_int_equal(fw__rank(1, 0, 1), 1);
    assert_int_equal(fw__rank(1, 1, 0), 2);
    assert_int_equal(fw__rank(1, 1, 1), 3);
    assert_true(fw__rank(0, 0, 0) == FW__RANK_NONE);
    /* a retry goes to the untried worker even when it is busier */
    fw__rng r;
    fw__rng_seed(&r, 3);
    uint32_t rank[2] = {fw__rank(1, 1, 0), fw__rank(1, 0, 0)};
    const unsigned outst[2] = {0, 100};
    assert_int_equal(fw__p2c_pick(rank, outst, 2, &r), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_p2c_seeded_sequence),
        cmocka_unit_test(test_p2c_prefers_fewer_outstanding),
        cmocka_unit_test(test_p2c_rank_and_eligibility),
        cmocka_unit_test(test_rank_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
