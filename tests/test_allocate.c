/* Mixed-precision bit allocation (quant/allocate.c, nb_alloc.h): the
 * dynamic program against exhaustive search and an independent brute force
 * on random small problems (feasible and infeasible budgets, convex,
 * arbitrary and tied costs), the Pareto fallback against the table, the
 * conventions for the first/last layers, the tie rule, greedy, the
 * messages; and `nibble allocate` end to end. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nb_test.h"

/* ------------------------------------------------------------------ solver */

enum { MAXL = 24 };

/* A problem with its own storage. */
typedef struct {
    nb_alloc_layer layer[MAXL];
    double omega[MAXL][NB_ALLOC_MAX_CANDIDATES];
    int L;
    nb_alloc_opts o;
} prob;

static void prob_set(prob *p, int L, const int *cand, int K) {
    memset(p, 0, sizeof *p);
    p->L = L;
    p->o = nb_alloc_opts_default();
    for (int j = 0; j < K; j++) p->o.candidates[j] = cand[j];
    p->o.n_candidates = K;
    for (int l = 0; l < L; l++) p->layer[l].omega = p->omega[l];
}

static nb_status solve(const prob *p, nb_alloc_method m, int64_t max_cells, nb_alloc_result *r) {
    nb_alloc_opts o = p->o;
    o.method = m;
    o.max_cells = max_cells;
    memset(r, 0, sizeof *r);
    return nb_alloc_solve(p->layer, p->L, &o, r);
}

/* Independent reference: every allocation, the budget checked in long
 * double against B̄·N; the least cost (summed in any order) or -1 when
 * nothing fits. */
static double brute_force(const prob *p) {
    const nb_alloc_opts *o = &p->o;
    int j[MAXL] = {0}, free_l[MAXL], n = 0;
    long double N = 0, fixed = 0;
    for (int l = 0; l < p->L; l++) {
        if (p->layer[l].fixed && o->fixed_bits) {
            if (o->count_fixed) N += p->layer[l].params, fixed += (long double)p->layer[l].params * o->fixed_bits;
        } else {
            free_l[n++] = l;
            N += p->layer[l].params;
        }
    }
    double best = -1;
    for (;;) {
        long double bits = fixed;
        double c = 0;
        for (int i = 0; i < n; i++) {
            bits += (long double)p->layer[free_l[i]].params * o->candidates[j[i]];
            c += p->omega[free_l[i]][j[i]];
        }
        if (bits / N <= (long double)o->avg_bits * (1 + 1e-12L) && (best < 0 || c < best)) best = c;
        int i = n - 1;
        while (i >= 0 && ++j[i] == o->n_candidates) j[i--] = 0;
        if (i < 0) break;
    }
    return best;
}

/* A random problem of 1..8 layers, 2..4 candidates and 1..5000 parameters a
 * layer (or, one time in three, 16, 32, 48 or 64); kind 0: convex
 * decreasing costs (a·4^-b, as quantization noise), 1: arbitrary reals,
 * 2: small integers (many exact ties). */
static void random_prob(prob *p, nb_rng *rng, int kind) {
    int cand[NB_ALLOC_MAX_CANDIDATES], K = 2 + (int)nb_rng_below(rng, 3), pool[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    nb_rng_shuffle(rng, (uint32_t *)pool, 8);
    for (int j = 0; j < K; j++) cand[j] = pool[j];
    for (int a = 0; a < K; a++) /* ascending */
        for (int b = a + 1; b < K; b++)
            if (cand[b] < cand[a]) {
                int t = cand[a];
                cand[a] = cand[b];
                cand[b] = t;
            }
    prob_set(p, 1 + (int)nb_rng_below(rng, 8), cand, K);
    const int few = nb_rng_below(rng, 3) == 0; /* counts from a small set: many equal weights */
    for (int l = 0; l < p->L; l++) {
        p->layer[l].params = few ? 16 * (1 + nb_rng_below(rng, 4)) : 1 + nb_rng_below(rng, 5000);
        p->layer[l].fixed = nb_rng_below(rng, 4) == 0;
        const double a = 0.1 + 10.0 * nb_rng_uniform(rng);
        for (int j = 0; j < K; j++) {
            if (kind == 0) p->omega[l][j] = a * pow(4.0, -cand[j]);
            if (kind == 1) p->omega[l][j] = nb_rng_uniform(rng);
            if (kind == 2) p->omega[l][j] = nb_rng_below(rng, 4);
        }
    }
    const int conv = (int)nb_rng_below(rng, 4); /* fixed at 8, at another width, like the rest */
    p->o.fixed_bits = conv == 0 ? 0 : conv == 1 ? 1 + (int)nb_rng_below(rng, 8) : 8;
    p->o.count_fixed = (int)nb_rng_below(rng, 2);
}

/* Every layer's width in the result is the fixed width or a candidate. */
static void check_widths(const prob *p, const nb_alloc_result *r) {
    for (int l = 0; l < p->L; l++) {
        if (p->layer[l].fixed && p->o.fixed_bits) {
            ck_assert_int_eq(r->bits[l], p->o.fixed_bits);
            continue;
        }
        int ok = 0;
        for (int j = 0; j < p->o.n_candidates; j++) ok |= r->bits[l] == p->o.candidates[j];
        ck_assert_msg(ok, "layer %d: %d bits is not a candidate", l, r->bits[l]);
    }
}

/* Recompute counted bits and params from the widths: the budget holds. */
static void check_budget(const prob *p, const nb_alloc_result *r) {
    int64_t bits = 0, n = 0, total = 0;
    for (int l = 0; l < p->L; l++) {
        const int counts = !(p->layer[l].fixed && p->o.fixed_bits) || p->o.count_fixed;
        total += p->layer[l].params * r->bits[l];
        if (counts) bits += p->layer[l].params * r->bits[l], n += p->layer[l].params;
    }
    ck_assert_int_eq(bits, r->counted_bits);
    ck_assert_int_eq(n, r->counted_params);
    ck_assert_int_eq(total, r->total_bits);
    ck_assert_int_le(r->counted_bits, r->budget_bits);
    ck_assert((long double)bits / n <= (long double)p->o.avg_bits * (1 + 1e-12L));
}

START_TEST(test_dp_equals_exhaustive) {
    nb_rng rng;
    nb_rng_seed(&rng, 1234 + (uint64_t)_i, 0);
    int feasible = 0, infeasible = 0, pareto_cases = 0;
    for (int trial = 0; trial < 1500; trial++) {
        prob p;
        random_prob(&p, &rng, trial % 3);
        /* the budget: anywhere from below the least to above the most
         * average, or exactly the average of a random allocation */
        if (nb_rng_below(&rng, 3) == 0) {
            int64_t bits = 0, n = 0;
            for (int l = 0; l < p.L; l++) {
                const int fixed = p.layer[l].fixed && p.o.fixed_bits;
                if (fixed && !p.o.count_fixed) continue;
                bits += p.layer[l].params *
                        (fixed ? p.o.fixed_bits : p.o.candidates[nb_rng_below(&rng, (uint32_t)p.o.n_candidates)]);
                n += p.layer[l].params;
            }
            p.o.avg_bits = n ? (double)bits / (double)n : 4.0;
        } else {
            p.o.avg_bits = 0.5 + 8.0 * nb_rng_uniform(&rng);
        }
        int all_fixed = p.o.fixed_bits != 0;
        for (int l = 0; l < p.L; l++) all_fixed &= p.layer[l].fixed;
        nb_alloc_result ex, dp, pa, gr;
        const nb_status se = solve(&p, NB_ALLOC_EXHAUSTIVE, 0, &ex);
        const nb_status sd = solve(&p, NB_ALLOC_DP, (int64_t)1 << 26, &dp);
        const nb_status sp = solve(&p, NB_ALLOC_DP, 0, &pa);
        const nb_status sg = solve(&p, NB_ALLOC_GREEDY, 0, &gr);
        const double ref = all_fixed ? -1 : brute_force(&p);
        if (ref < 0) {
            infeasible++;
            ck_assert_int_eq(se, NB_STATUS_BAD_INPUT);
            ck_assert_int_eq(sd, NB_STATUS_BAD_INPUT);
            ck_assert_int_eq(sp, NB_STATUS_BAD_INPUT);
            ck_assert_int_eq(sg, NB_STATUS_BAD_INPUT);
            ck_assert_msg(strstr(nb_last_error(), all_fixed ? "no layer to allocate" : "is infeasible"), "%s",
                          nb_last_error());
            continue;
        }
        feasible++;
        ck_assert_msg(se == NB_OK && sd == NB_OK && sp == NB_OK && sg == NB_OK, "trial %d: %s", trial,
                      nb_last_error());
        ck_assert_msg(fabs(ex.cost - ref) <= 1e-9 * (1 + ref), "trial %d: exhaustive %.17g, brute force %.17g",
                      trial, ex.cost, ref);
        ck_assert_str_eq(dp.solver, "dp (table)");
        ck_assert_str_eq(pa.solver, "dp (pareto)");
        pareto_cases++;
        for (int l = 0; l < p.L; l++) {
            ck_assert_msg(dp.bits[l] == ex.bits[l], "trial %d layer %d: dp %d bits, exhaustive %d", trial, l,
                          dp.bits[l], ex.bits[l]);
            ck_assert_int_eq(pa.bits[l], ex.bits[l]);
        }
        ck_assert(dp.cost == ex.cost && pa.cost == ex.cost); /* the same sums, bit for bit */
        ck_assert_int_eq(dp.counted_bits, ex.counted_bits);
        const nb_alloc_result *all[] = {&ex, &dp, &pa, &gr};
        for (int k = 0; k < 4; k++) {
            check_widths(&p, all[k]);
            check_budget(&p, all[k]);
            ck_assert(all[k]->cost >= ex.cost);
        }
        for (int k = 0; k < 4; k++) nb_alloc_result_deinit((nb_alloc_result *)all[k]);
    }
    ck_assert_int_gt(feasible, 300);
    ck_assert_int_gt(infeasible, 50);
    ck_assert_int_eq(pareto_cases, feasible);
}
END_TEST

/* Larger problems, beyond exhaustive search: the frontier gives the
 * table's answer; both meet the budget. */
START_TEST(test_pareto_equals_table) {
    nb_rng rng;
    nb_rng_seed(&rng, 77, 0);
    for (int trial = 0; trial < 40; trial++) {
        prob p;
        const int cand[] = {2, 3, 4, 8};
        prob_set(&p, MAXL, cand, trial % 2 ? 4 : 3);
        for (int l = 0; l < p.L; l++) {
            /* conv-like counts (multiples of 9·16) and odd ones */
            p.layer[l].params = trial % 4 < 2 ? 144 * (1 + nb_rng_below(&rng, 256)) : 1 + nb_rng_below(&rng, 100000);
            p.layer[l].fixed = l == 0 || l == p.L - 1;
            for (int j = 0; j < p.o.n_candidates; j++)
                p.omega[l][j] = trial % 3 == 2 ? nb_rng_below(&rng, 3) : nb_rng_uniform(&rng) * pow(4.0, -cand[j]);
        }
        p.o.avg_bits = 2.0 + 2.5 * nb_rng_uniform(&rng);
        nb_alloc_result t, f;
        ck_assert_int_eq(solve(&p, NB_ALLOC_DP, (int64_t)1 << 26, &t), NB_OK);
        ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 0, &f), NB_OK);
        ck_assert_str_eq(t.solver, "dp (table)");
        ck_assert_str_eq(f.solver, "dp (pareto)");
        for (int l = 0; l < p.L; l++) ck_assert_int_eq(t.bits[l], f.bits[l]);
        ck_assert(t.cost == f.cost);
        check_budget(&p, &t);
        nb_alloc_result_deinit(&t);
        nb_alloc_result_deinit(&f);
    }
}
END_TEST

/* A ResNet-18-sized problem (11M parameters): the gcd keeps the table
 * small and exact. */
START_TEST(test_large_counts) {
    prob p;
    const int cand[] = {2, 3, 4};
    prob_set(&p, 21, cand, 3);
    const int64_t n[] = {9408, 36864, 36864, 36864, 36864, 73728, 147456, 8192, 147456, 147456, 294912,
                         589824, 32768, 589824, 589824, 1179648, 2359296, 131072, 2359296, 2359296, 5120};
    for (int l = 0; l < p.L; l++) {
        p.layer[l].params = n[l];
        p.layer[l].fixed = l == 0 || l == p.L - 1;
        for (int j = 0; j < 3; j++) p.omega[l][j] = (1.0 + (l % 5)) * pow(4.0, -cand[j]) / (double)(l + 1);
    }
    p.o.avg_bits = 2.81;
    nb_alloc_result r;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, (int64_t)1 << 26, &r), NB_OK);
    ck_assert_str_eq(r.solver, "dp (table)");
    check_budget(&p, &r);
    ck_assert_int_eq(r.bits[0], 8);
    ck_assert_int_eq(r.bits[20], 8);
    ck_assert_double_le(r.avg_bits, 2.81);
    ck_assert_double_gt(r.avg_bits, 2.7); /* uses the budget */
    nb_alloc_result f;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 0, &f), NB_OK);
    for (int l = 0; l < p.L; l++) ck_assert_int_eq(r.bits[l], f.bits[l]);
    nb_alloc_result_deinit(&r);
    nb_alloc_result_deinit(&f);
}
END_TEST

/* Equal costs: fewer bits; then the lower width in the earlier layer. */
START_TEST(test_tie_break) {
    const nb_alloc_method methods[] = {NB_ALLOC_DP, NB_ALLOC_DP, NB_ALLOC_EXHAUSTIVE};
    const int64_t cells[] = {1 << 26, 0, 0};
    for (int m = 0; m < 3; m++) {
        prob p;
        const int cand[] = {2, 3, 4};
        prob_set(&p, 3, cand, 3);
        for (int l = 0; l < 3; l++) p.layer[l].params = 100;
        p.o.avg_bits = 4; /* everything fits; every cost 0 */
        nb_alloc_result r;
        ck_assert_int_eq(solve(&p, methods[m], cells[m], &r), NB_OK);
        for (int l = 0; l < 3; l++) ck_assert_int_eq(r.bits[l], 2);
        nb_alloc_result_deinit(&r);
        /* one layer of three may take 4 bits (average 2.667 <= 2.7): raising
         * any one costs the same, so the last one is raised */
        const double o[] = {1, 1, 0};
        for (int l = 0; l < 3; l++) memcpy(p.omega[l], o, sizeof o);
        p.o.avg_bits = 2.7;
        ck_assert_int_eq(solve(&p, methods[m], cells[m], &r), NB_OK);
        ck_assert_msg(r.bits[0] == 2 && r.bits[1] == 2 && r.bits[2] == 4, "%s: %d %d %d", r.solver, r.bits[0],
                      r.bits[1], r.bits[2]);
        ck_assert_double_eq(r.cost, 2.0);
        nb_alloc_result_deinit(&r);
        /* 3 and 4 bits cost the same: the 3 (fewer bits) */
        const double o2[] = {1, 0, 0};
        for (int l = 0; l < 3; l++) memcpy(p.omega[l], o2, sizeof o2);
        p.o.avg_bits = 4;
        ck_assert_int_eq(solve(&p, methods[m], cells[m], &r), NB_OK);
        for (int l = 0; l < 3; l++) ck_assert_int_eq(r.bits[l], 3);
        nb_alloc_result_deinit(&r);
    }
}
END_TEST

/* conv1 (432) and fc (640) around two hidden layers of 1000. */
static void small_net(prob *p) {
    const int cand[] = {2, 3, 4};
    prob_set(p, 4, cand, 3);
    const int64_t n[] = {432, 1000, 1000, 640};
    for (int l = 0; l < 4; l++) {
        p->layer[l].params = n[l];
        p->layer[l].fixed = l == 0 || l == 3;
        for (int j = 0; j < 3; j++) p->omega[l][j] = (l + 1) * pow(4.0, -cand[j]);
    }
}

START_TEST(test_conventions) {
    prob p;
    nb_alloc_result r;
    small_net(&p);
    p.o.avg_bits = 3.0; /* hidden layers only: 3 and 3 or 2 and 4 */
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_OK);
    ck_assert_str_eq(r.convention, "first/last layers fixed at 8 bits, excluded from the average");
    ck_assert(r.bits[0] == 8 && r.bits[3] == 8);
    ck_assert_int_eq(r.counted_params, 2000);
    ck_assert_int_eq(r.counted_bits, 6000);
    ck_assert_int_eq(r.total_bits, 432 * 8 + 6000 + 640 * 8);
    ck_assert_int_eq(r.total_params, 3072);
    /* Ω = 2·4^-b, 3·4^-b: 3/3 costs 5/64 = 0.078, 2/4 costs 2/16 + 3/256 = 0.137, 4/2 0.195 */
    ck_assert(r.bits[1] == 3 && r.bits[2] == 3);
    ck_assert_double_eq_tol(r.cost, 5.0 / 64, 1e-15);
    nb_alloc_result_deinit(&r);

    /* included: (432 + 640)·8 + Σ 1000 b <= 3·3072 -> Σ b <= 0.6: infeasible */
    p.o.count_fixed = 1;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_STATUS_BAD_INPUT);
    ck_assert_str_eq(nb_last_error(), "bit allocation: an average of 3 bits is infeasible: the smallest candidate "
                                      "(2 bits) on every allocated layer gives 4.093750 (first/last layers fixed at "
                                      "8 bits, included in the average)");
    p.o.avg_bits = 5.0; /* 8576 + 1000 (b1 + b2) <= 15360 -> b1 + b2 <= 6.784 */
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_OK);
    ck_assert_str_eq(r.convention, "first/last layers fixed at 8 bits, included in the average");
    ck_assert_int_eq(r.counted_params, 3072);
    ck_assert(r.bits[1] + r.bits[2] == 6);
    ck_assert_int_eq(r.counted_bits, 8576 + 6000);
    nb_alloc_result_deinit(&r);

    /* another fixed width */
    p.o.fixed_bits = 4;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_OK);
    ck_assert_str_eq(r.convention, "first/last layers fixed at 4 bits, included in the average");
    ck_assert(r.bits[0] == 4 && r.bits[3] == 4 && r.bits[1] == 4 && r.bits[2] == 4);
    nb_alloc_result_deinit(&r);

    /* like the others: all four allocated, counted */
    p.o.fixed_bits = 0;
    p.o.count_fixed = 0;
    p.o.avg_bits = 2.0;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_OK);
    ck_assert_str_eq(r.convention, "first/last layers allocated like the others");
    for (int l = 0; l < 4; l++) ck_assert_int_eq(r.bits[l], 2);
    ck_assert_int_eq(r.counted_params, 3072);
    nb_alloc_result_deinit(&r);

    /* every layer fixed: nothing to allocate */
    p.o.fixed_bits = 8;
    p.layer[1].fixed = p.layer[2].fixed = 1;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_STATUS_BAD_INPUT);
    ck_assert_str_eq(nb_last_error(), "bit allocation: no layer to allocate (4 layers, all first/last, fixed at 8 bits)");
}
END_TEST

START_TEST(test_budget_boundary) {
    /* 2.81 has no exact binary form; an allocation at exactly 2.81 fits */
    prob p;
    const int cand[] = {2, 3};
    prob_set(&p, 2, cand, 2);
    p.layer[0].params = 19;
    p.layer[1].params = 81;
    const double o0[] = {1, 0.5}, o1[] = {1, 0};
    memcpy(p.omega[0], o0, sizeof o0);
    memcpy(p.omega[1], o1, sizeof o1);
    p.o.avg_bits = 2.81; /* 2 and 3 bits: 19·2 + 81·3 = 281, cost 1 (3 and 2: 219, cost 1.5) */
    nb_alloc_result r;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_OK);
    ck_assert_int_eq(r.budget_bits, 281);
    ck_assert(r.bits[0] == 2 && r.bits[1] == 3);
    nb_alloc_result_deinit(&r);
    p.o.avg_bits = 2.8099999;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_OK);
    ck_assert_int_eq(r.budget_bits, 280);
    ck_assert(r.bits[0] == 3 && r.bits[1] == 2);
    nb_alloc_result_deinit(&r);
}
END_TEST

/* Greedy starts at the widest and lowers the cheapest step per bit saved. */
START_TEST(test_greedy) {
    prob p;
    const int cand[] = {2, 4, 8};
    prob_set(&p, 2, cand, 3);
    p.layer[0].params = 100;
    p.layer[1].params = 100;
    const double a[] = {10, 1, 0}, b[] = {3, 2, 0};
    memcpy(p.omega[0], a, sizeof a);
    memcpy(p.omega[1], b, sizeof b);
    p.o.avg_bits = 4;
    nb_alloc_result r;
    /* steps: 8->4 costs 1/400 (layer 0) and 2/400 (layer 1): layer 0 first;
     * then layer 0 4->2 costs 9/200, layer 1 8->4 2/400: layer 1; 4+4 fits */
    ck_assert_int_eq(solve(&p, NB_ALLOC_GREEDY, 0, &r), NB_OK);
    ck_assert_str_eq(r.solver, "greedy");
    ck_assert(r.bits[0] == 4 && r.bits[1] == 4);
    nb_alloc_result_deinit(&r);
    /* the ratio decides, not the layer order: layer 0 goes 8->4 (0.4 per
     * 400 bits), then 4->2 (0.1 per 200) before layer 1's 8->4 (2 per 400) */
    const double a2[] = {0.5, 0.4, 0};
    memcpy(p.omega[0], a2, sizeof a2);
    p.o.avg_bits = 5;
    ck_assert_int_eq(solve(&p, NB_ALLOC_GREEDY, 0, &r), NB_OK);
    ck_assert(r.bits[0] == 2 && r.bits[1] == 8);
    nb_alloc_result_deinit(&r);
}
END_TEST

START_TEST(test_bad_options) {
    prob p;
    small_net(&p);
    p.o.avg_bits = 3;
    nb_alloc_result r;
    p.o.candidates[1] = 2;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_STATUS_BAD_INPUT);
    ck_assert_str_eq(nb_last_error(), "bit allocation: candidates[1] = 2: widths must ascend strictly within 1..8");
    small_net(&p);
    p.o.avg_bits = NAN;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_STATUS_BAD_INPUT);
    p.o.avg_bits = 3;
    p.omega[2][1] = -1;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_STATUS_BAD_INPUT);
    ck_assert_str_eq(nb_last_error(), "bit allocation: layer 2: cost at 3 bits must be a finite number >= 0, got -1");
    p.omega[2][1] = INFINITY;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_STATUS_BAD_INPUT);
    small_net(&p);
    p.o.avg_bits = 3;
    p.layer[1].params = 0;
    ck_assert_int_eq(solve(&p, NB_ALLOC_DP, 1 << 26, &r), NB_STATUS_BAD_INPUT);
    ck_assert_str_eq(nb_last_error(), "bit allocation: layer 1: params must be >= 1 (and 2^50 in all), got 0");
    /* exhaustive refuses what it cannot visit */
    prob big;
    const int cand[] = {1, 2, 3, 4, 5, 6, 7, 8};
    prob_set(&big, MAXL, cand, 8);
    for (int l = 0; l < MAXL; l++) big.layer[l].params = 1;
    big.o.avg_bits = 4;
    ck_assert_int_eq(solve(&big, NB_ALLOC_EXHAUSTIVE, 0, &r), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "too large"), "%s", nb_last_error());
    ck_assert_int_eq(nb_alloc_method_from_name("greedy"), NB_ALLOC_GREEDY);
    ck_assert_int_eq(nb_alloc_method_from_name("knapsack"), -1);
    ck_assert_str_eq(nb_alloc_method_name(NB_ALLOC_EXHAUSTIVE), "exhaustive");
}
END_TEST

/* Failing allocations give NB_STATUS_OOM, never a crash or a leak. */
START_TEST(test_alloc_failure) {
    prob p;
    small_net(&p);
    p.o.avg_bits = 3;
    for (int pareto = 0; pareto < 2; pareto++)
        for (long n = 1; n <= 8; n++) {
            nb_alloc_result r;
            nb_alloc_fail_after(n);
            const nb_status st = solve(&p, NB_ALLOC_DP, pareto ? 0 : 1 << 26, &r);
            nb_alloc_fail_after(0);
            ck_assert_msg(st == NB_OK || st == NB_STATUS_OOM, "n=%ld: %s", n, nb_last_error());
            if (st == NB_OK) nb_alloc_result_deinit(&r);
        }
}
END_TEST

/* --------------------------------------------------------- nibble allocate */

static char out[65536];

static int run(const char *args) {
    const char *cli = nb_test_cli();
    ck_assert_msg(cli != NULL, "NB_CLI is not set to the nibble binary");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", cli, args);
    return nb_test_sh(cmd, out, sizeof out);
}

/* TMP/name with text (TMP/cli/ made first); the path in a rotating buffer. */
static const char *put(const char *name, const char *text) {
    static char paths[4][1024];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 1024, "%s/cli", nb_test_tmpdir());
    mkdir(p, 0755);
    snprintf(p, 1024, "%s/cli/%s", nb_test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static char *slurp(const char *path) {
    static char buf[65536];
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* small_net as a sensitivity file: Ω_l(b) = (l + 1)·4^-b. */
#define SENS_HEAD                                                                                               \
    "{\"format\": \"nibble-sensitivity-1\", \"arch\": \"smallcnn\", \"config\": \"c.json\", \"checkpoint\": " \
    "\"c.h5\", \"metric\": \"hessian\", \"trace\": [1.5, 2], \"candidates\": [2, 3, 4], "
#define L_CONV1 "{\"name\": \"conv1\", \"params\": 432, \"role\": \"first\", \"omega\": [0.0625, 0.015625, 0.00390625]}"
#define L_A(omega) "{\"name\": \"a\", \"params\": 1000, \"role\": \"hidden\", \"omega\": " omega ", \"x\": 0}"
#define L_B "{\"name\": \"b\", \"params\": 1000, \"role\": \"hidden\", \"omega\": [0.1875, 0.046875, 0.01171875]}"
#define L_FC "{\"name\": \"fc\", \"params\": 640, \"role\": \"last\", \"omega\": [0.25, 0.0625, 0.015625]}"
#define OMEGA_A "[0.125, 0.03125, 0.0078125]"
#define SENS_OK SENS_HEAD "\"layers\": [" L_CONV1 ", " L_A(OMEGA_A) ", " L_B ", " L_FC "]}"

START_TEST(test_cli_allocate) {
    const char *sens = put("sens.json", SENS_OK);
    char args[4096], path[1100];
    snprintf(path, sizeof path, "%s/cli/alloc.json", nb_test_tmpdir());
    remove(path);
    snprintf(args, sizeof args, "allocate %s --avg-bits 3", sens);
    ck_assert_msg(run(args) == 0, "%s", out);
    char row_a[128], row_conv1[128];
    snprintf(row_a, sizeof row_a, "%-40s %-6s %10d %4d %14s\n", "a", "hidden", 1000, 3, "0.03125");
    snprintf(row_conv1, sizeof row_conv1, "%-40s %-6s %10d %4d %14s\n", "conv1", "first", 432, 8, "-");
    const char *lines[] = {row_a, row_conv1,
                           "average: 3.0000 bits over 2000 counted parameters (budget 3)",
                           "weights: 1822 bytes at these bits, 12288 bytes in FP32 (6.74x smaller; 3072 parameters)",
                           "cost: 0.078125 (sum of omega over the allocated layers)",
                           "convention: first/last layers fixed at 8 bits, excluded from the average",
                           "method dp (table)"};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        ck_assert_msg(strstr(out, lines[i]) != NULL, "no \"%s\" in:\n%s", lines[i], out);
    /* the bitmap, beside the sensitivity file by default */
    const char *bm = slurp(path);
    char src[1200];
    snprintf(src, sizeof src, "\"source\":\t\"%s\"", sens);
    const char *keys[] = {"\"format\":\t\"nibble-bitmap-1\"", src, "\"metric\":\t\"hessian\"", "\"method\":\t\"dp\"",
                          "\"avg_bits_budget\":\t3,", "\"avg_bits\":\t3,", "\"weight_bytes\":\t1822,",
                          "\"convention\":\t\"first/last layers fixed at 8 bits, excluded from the average\"",
                          "\"conv1\":\t8,", "\"a\":\t3,", "\"b\":\t3,", "\"fc\":\t8\n"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        ck_assert_msg(strstr(bm, keys[i]) != NULL, "no %s in:\n%s", keys[i], bm);
    /* a config reads it back */
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "{\"data\": {\"path\": \"synthetic:shapes10\"}, \"model\": {\"arch\": \"smallcnn\"}, "
             "\"train\": {\"epochs\": 1, \"optimizer\": {\"lr\": 0.1}}, \"quant\": {\"weights\": {\"method\": "
             "\"uniform\"}, \"bitmap\": \"%s\"}}", path);
    nb_config c;
    ck_assert_msg(nb_config_parse(cfg, "t.json", NULL, 0, &c) == NB_OK, "%s", nb_last_error());
    ck_assert_int_eq(c.bitmap.n_rules, 4);
    ck_assert(!strcmp(c.quant.rules[1].pattern, "a") && c.quant.rules[1].weight_bits == 3);

    /* --candidates, -o */
    const char *o2 = put("two.json", "");
    snprintf(args, sizeof args, "allocate --candidates 4,2 %s --avg-bits 3 -o %s", sens, o2);
    ck_assert_msg(run(args) == 0, "%s", out);
    bm = slurp(o2);
    ck_assert_msg(strstr(bm, "\"a\":\t2,") && strstr(bm, "\"b\":\t4,"), "%s", bm);
    ck_assert_msg(strstr(out, "candidates 2 4,"), "%s", out);
    /* --count-fixed: 8576 + 1000 (a + b) <= 5·3072 */
    snprintf(args, sizeof args, "allocate %s --avg-bits 5 --count-fixed -o %s", sens, o2);
    ck_assert_msg(run(args) == 0, "%s", out);
    ck_assert_msg(strstr(slurp(o2), "\"convention\":\t\"first/last layers fixed at 8 bits, included in the average\""),
                  "%s", slurp(o2));
    ck_assert_msg(strstr(out, "over 3072 counted parameters"), "%s", out);
    /* --fixed-bits 0: all four allocated; greedy */
    snprintf(args, sizeof args, "allocate %s --avg-bits 2 --fixed-bits 0 --method greedy -o %s", sens, o2);
    ck_assert_msg(run(args) == 0, "%s", out);
    bm = slurp(o2);
    ck_assert_msg(strstr(bm, "\"conv1\":\t2,") && strstr(bm, "\"method\":\t\"greedy\"") &&
                      strstr(bm, "\"first/last layers allocated like the others\""), "%s", bm);
    /* --fixed-bits 4 with exhaustive search */
    snprintf(args, sizeof args, "allocate %s --avg-bits 4 --fixed-bits 4 --method exhaustive -o %s", sens, o2);
    ck_assert_msg(run(args) == 0, "%s", out);
    ck_assert_msg(strstr(slurp(o2), "\"fc\":\t4\n"), "%s", slurp(o2));

    ck_assert_int_eq(run("allocate --help"), 0);
    ck_assert(strstr(out, "--avg-bits") && strstr(out, "--count-fixed"));
    ck_assert_int_eq(run("--help"), 0);
    ck_assert(strstr(out, "allocate") != NULL);
}
END_TEST

/* Bad input: exit 2, a message naming the file and the key or flag, and no
 * bitmap written. */
START_TEST(test_cli_allocate_errors) {
    static const char *const cases[][3] = {
        /* file text, extra flags, expected message (after "nibble allocate: PATH: ") */
        {"{\"format\": \"nibble-sensitivity-1\", \"layers\": [", "", "invalid JSON at line 1, column 47"},
        {SENS_HEAD "\"layers\": [" L_CONV1 ", " L_A("[0.125, NaN, 0.0078125]") "]}", "",
         "invalid JSON at line 1, column 331 (NaN and Infinity are not JSON numbers)"},
        {"{\"format\": \"nibble-sensitivity-1\", \"arch\": \"smallcnn\", \"config\": \"c.json\", \"checkpoint\": \"c.h5\", "
         "\"candidates\": [2], \"layers\": []}", "", "metric: required key is missing (expected one of \"hessian\", "
         "\"fisher\", \"loss_delta\")"},
        {SENS_HEAD "\"layers\": [" L_A("[0.125, 0.03125, -0.5]") "]}", "",
         "layers[0].omega[2]: expected a finite number >= 0, got -0.5"},
        {SENS_HEAD "\"layers\": [" L_CONV1 ", " L_A("[0.125, 1e999, 0.0078125]") "]}", "",
         "layers[1].omega[1]: expected a finite number >= 0, got a number beyond the range of a double"},
        {SENS_HEAD "\"layers\": [" L_CONV1 ", " L_A("[0.125, null, 0.0078125]") "]}", "",
         "layers[1].omega[1]: expected a finite number >= 0, got null"},
        {SENS_HEAD "\"layers\": [" L_CONV1 ", " L_A("[0.125, 0.03125]") "]}", "",
         "layers[1].omega: expected an array of 3 numbers, one per candidate, got [0.125,0.03125]"},
        {SENS_HEAD "\"layers\": [" L_CONV1 ", " L_CONV1 "]}", "", "layers[1].name: \"conv1\" repeats layers[0]"},
        {SENS_HEAD "\"layers\": [{\"name\": \"a\", \"params\": 0, \"role\": \"hidden\", \"omega\": [1, 1, 1]}]}", "",
         "layers[0].params: expected an integer in [1, 2^50], got 0"},
        {SENS_HEAD "\"layers\": [{\"name\": \"a\", \"params\": 9, \"role\": \"middle\", \"omega\": [1, 1, 1]}]}", "",
         "layers[0].role: expected one of \"first\", \"last\", \"hidden\", got \"middle\""},
        {SENS_HEAD "\"layers\": [{\"name\": \"a\", \"params\": 9, \"params\": 9, \"role\": \"hidden\", \"omega\": [1, 1, 1]}]}", "",
         "layers[0].params: duplicate key"},
        {SENS_HEAD "\"layers\": []}", "", "layers: expected a non-empty array of layers, got []"},
        {"{\"format\": \"nibble-sensitivity-1\", \"arch\": \"smallcnn\", \"config\": \"c.json\", \"checkpoint\": \"c.h5\", "
         "\"metric\": \"fisher\", \"candidates\": [3, 2], \"layers\": []}", "",
         "candidates[1]: expected more than candidates[0] = 3 (ascending), got 2"},
        {"{\"format\": \"nibble-sensitivity-1\", \"arch\": \"smallcnn\", \"config\": \"c.json\", \"checkpoint\": \"c.h5\", "
         "\"metric\": \"fisher\", \"candidates\": [2, 9], \"layers\": []}", "",
         "candidates[1]: expected an integer in [1, 8], got 9"},
        {"{\"format\": \"nibble-bitmap-1\"}", "",
         "format: expected \"nibble-sensitivity-1\" (a file `nibble sensitivity` writes), got \"nibble-bitmap-1\""},
        {"[1]", "", "(top level): expected an object, got [1]"},
        {SENS_OK, "--candidates 2,5", "--candidates: 5 bits is not among the candidates of PATH (2, 3, 4)"},
        {SENS_OK, "--avg-bits 1.5",
         "bit allocation: an average of 1.5 bits is infeasible: the smallest candidate (2 bits) on every allocated "
         "layer gives 2.000000 (first/last layers fixed at 8 bits, excluded from the average)"},
        {SENS_OK, "--avg-bits 3 --count-fixed",
         "bit allocation: an average of 3 bits is infeasible: the smallest candidate (2 bits) on every allocated "
         "layer gives 4.093750 (first/last layers fixed at 8 bits, included in the average)"},
    };
    char dst[1100], args[4096], want[4096];
    snprintf(dst, sizeof dst, "%s/cli/never.json", nb_test_tmpdir());
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *sens = put("bad.json", cases[i][0]);
        snprintf(args, sizeof args, "allocate %s %s %s -o %s", sens,
                 strstr(cases[i][1], "--avg-bits") ? "" : "--avg-bits 3", cases[i][1], dst);
        const int rc = run(args);
        ck_assert_msg(rc == 2, "case %zu: exit %d: %s", i, rc, out);
        const char *m = cases[i][2];
        char msg[2048];
        const char *at = strstr(m, "PATH");
        if (at) snprintf(msg, sizeof msg, "%.*s%s%s", (int)(at - m), m, sens, at + 4);
        else snprintf(msg, sizeof msg, "%s", m);
        snprintf(want, sizeof want, "nibble allocate: %s%s%s\n", strncmp(m, "--", 2) ? sens : "",
                 strncmp(m, "--", 2) ? ": " : "", msg);
        ck_assert_msg(!strcmp(out, want), "case %zu:\n got: %s\nwant: %s", i, out, want);
        ck_assert_msg(access(dst, F_OK) != 0, "case %zu wrote %s", i, dst);
    }
    /* usage errors */
    const char *sens = put("ok.json", SENS_OK);
    static const char *const usage[][2] = {
        {"", "nibble allocate: --avg-bits is required (e.g. --avg-bits 2.81)"},
        {"--avg-bits abc", "nibble allocate: --avg-bits expects a number > 0, got 'abc'"},
        {"--avg-bits -2", "nibble allocate: --avg-bits expects a number > 0, got '-2'"},
        {"--avg-bits 3 --method knapsack", "nibble allocate: --method expects dp, greedy or exhaustive, got 'knapsack'"},
        {"--avg-bits 3 --fixed-bits 9", "nibble allocate: --fixed-bits expects an integer in 0..8, got '9'"},
        {"--avg-bits 3 --candidates 2,,3", "nibble allocate: --candidates expects distinct widths in 1..8"},
        {"--avg-bits 3 --candidates 2,2", "nibble allocate: --candidates expects distinct widths in 1..8"},
        {"--avg-bits 3 --bogus", "nibble allocate: unknown or incomplete option '--bogus'"},
    };
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        snprintf(args, sizeof args, "allocate %s %s -o %s", sens, usage[i][0], dst);
        ck_assert_int_eq(run(args), 2);
        ck_assert_msg(strstr(out, usage[i][1]) != NULL, "case %zu: %s", i, out);
        ck_assert(access(dst, F_OK) != 0);
    }
    ck_assert_int_eq(run("allocate --avg-bits 3"), 2);
    ck_assert(strstr(out, "expected one SENSITIVITY.json") != NULL);
    snprintf(args, sizeof args, "allocate %s/cli/absent.json --avg-bits 3", nb_test_tmpdir());
    ck_assert_int_eq(run(args), 2);
    ck_assert_msg(strstr(out, "absent.json: No such file or directory") != NULL, "%s", out);
    /* an output directory that does not exist: an I/O error, nothing left behind */
    snprintf(args, sizeof args, "allocate %s --avg-bits 3 -o %s/cli/nodir/x.json", sens, nb_test_tmpdir());
    ck_assert_int_eq(run(args), 2);
    ck_assert_msg(strstr(out, "cannot write") != NULL, "%s", out);
}
END_TEST

int main(void) {
    Suite *s = suite_create("allocate");
    TCase *tc = tcase_create("solver");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_dp_equals_exhaustive, 0, 4);
    tcase_add_test(tc, test_pareto_equals_table);
    tcase_add_test(tc, test_large_counts);
    tcase_add_test(tc, test_tie_break);
    tcase_add_test(tc, test_conventions);
    tcase_add_test(tc, test_budget_boundary);
    tcase_add_test(tc, test_greedy);
    tcase_add_test(tc, test_bad_options);
    tcase_add_test(tc, test_alloc_failure);
    suite_add_tcase(s, tc);
    TCase *cli = tcase_create("cli");
    tcase_set_timeout(cli, 120);
    tcase_add_test(cli, test_cli_allocate);
    tcase_add_test(cli, test_cli_allocate_errors);
    suite_add_tcase(s, cli);
    return nb_test_run(s);
}
