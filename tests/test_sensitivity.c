/* Layer sensitivity (quant/sensitivity.c): Hutchinson traces of the
 * Hessian blocks of a quadratic loss with a known Hessian (exact for a
 * diagonal one, within the estimator's spread for a dense one, the weights
 * restored bit for bit, the same numbers for the same seed), and the
 * per-layer weight quantizer Q_b (codebook and uniform) against direct
 * computation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nb_test.h"

typedef struct {
    int n;
    const double *A; /* (n, n) symmetric */
    const float *w;
    int calls;
} quad;

/* L = 1/2 wᵀAw: ∇L = Aw */
static nb_status quad_grad(void *ctx, float *g) {
    quad *q = ctx;
    for (int i = 0; i < q->n; i++) {
        double s = 0.0;
        for (int j = 0; j < q->n; j++) s += q->A[i * q->n + j] * q->w[j];
        g[i] = (float)s;
    }
    q->calls++;
    return NB_OK;
}

START_TEST(test_hutchinson_diagonal_exact) {
    enum { N = 12 };
    double A[N * N] = {0};
    float w[N], g1[N], g2[N], w0[N];
    for (int i = 0; i < N; i++) {
        A[i * N + i] = 0.5 * (i + 1) - (i == 7 ? 10.0 : 0.0); /* one negative curvature */
        w[i] = 0.1f * (float)(i - 5);
    }
    memcpy(w0, w, sizeof w);
    /* segments [0, 5), [5, 12) (the gap-free case) */
    const nb_segment seg[2] = {{0, 5}, {5, 7}};
    quad q = {N, A, w, 0};
    double tr[2];
    ck_assert_int_eq(nb_hutchinson_trace(w, seg, 2, quad_grad, &q, 3, 1e-2f, 1, g1, g2, tr, NULL, NULL), NB_OK);
    ck_assert_int_eq(q.calls, 6);
    ck_assert(!memcmp(w, w0, sizeof w)); /* restored exactly */
    double want0 = 0.0, want1 = 0.0;
    for (int i = 0; i < 5; i++) want0 += A[i * N + i];
    for (int i = 5; i < N; i++) want1 += A[i * N + i];
    /* zᵀ D z = Tr D for Rademacher z: exact up to float rounding of the FD */
    ck_assert_msg(fabs(tr[0] - want0) < 1e-3 * fabs(want0) + 1e-4, "trace 0: %g vs %g", tr[0], want0);
    ck_assert_msg(fabs(tr[1] - want1) < 1e-3 * fabs(want1) + 1e-4, "trace 1: %g vs %g", tr[1], want1);
}
END_TEST

/* A dense symmetric A with cross-block terms: the mean over many samples is
 * within 5 standard errors of the block traces (the variance of zᵀ B z for
 * Rademacher z is 2 Σ_{i≠j} B_ij² over the rows of the block, including the
 * cross-block entries that the shared z brings in). */
START_TEST(test_hutchinson_dense) {
    enum { N = 16, S = 4000 };
    double A[N * N];
    nb_rng r;
    nb_rng_seed(&r, 4, 0);
    for (int i = 0; i < N; i++)
        for (int j = 0; j <= i; j++) A[i * N + j] = A[j * N + i] = (double)nb_rng_normal(&r) * (i == j ? 2.0 : 0.3);
    float w[N], g1[N], g2[N];
    for (int i = 0; i < N; i++) w[i] = nb_rng_normal(&r);
    const nb_segment seg[2] = {{0, 6}, {6, 10}};
    quad q = {N, A, w, 0};
    double tr[2], again[2];
    ck_assert_int_eq(nb_hutchinson_trace(w, seg, 2, quad_grad, &q, S, 1e-2f, 9, g1, g2, tr, NULL, NULL), NB_OK);
    ck_assert_int_eq(nb_hutchinson_trace(w, seg, 2, quad_grad, &q, S, 1e-2f, 9, g1, g2, again, NULL, NULL), NB_OK);
    ck_assert(tr[0] == again[0] && tr[1] == again[1]); /* the same seed, the same numbers */
    for (int l = 0; l < 2; l++) {
        double want = 0.0, var = 0.0;
        for (size_t i = seg[l].off; i < seg[l].off + seg[l].n; i++) {
            want += A[i * N + i];
            for (int j = 0; j < N; j++)
                if ((size_t)j != i) {
                    const int inside = (size_t)j >= seg[l].off && (size_t)j < seg[l].off + seg[l].n;
                    /* in-block pairs appear twice (i,j) and (j,i); cross pairs once */
                    var += (inside ? 2.0 : 1.0) * A[i * N + j] * A[i * N + j];
                }
        }
        const double se = sqrt(var / S);
        ck_assert_msg(fabs(tr[l] - want) < 5.0 * se, "block %d: trace %g vs %g (se %g)", l, tr[l], want, se);
    }
}
END_TEST

START_TEST(test_weight_q) {
    enum { OC = 4, K = 50 };
    float w[OC * K], q[OC * K], codes[7];
    nb_rng r;
    nb_rng_seed(&r, 6, 0);
    for (int i = 0; i < OC * K; i++) w[i] = nb_rng_normal(&r) * (float)(1 + i / K);
    nb_quant_policy p;
    nb_quant_policy_default(&p);
    strcpy(p.weights.method, "adq");
    strcpy(p.weights.granularity, "channel");
    ck_assert_int_eq(nb_quant_weight_q(&p, w, OC, OC * K, 3, q), NB_OK);
    const nb_cb_spec s = {3, 1};
    for (int row = 0; row < OC; row++) {
        ck_assert_int_eq(nb_cb_init_codes(&s, NB_CB_INIT_QUANTILE, 20, w + row * K, K, codes), NB_OK);
        double mid[6];
        nb_cb_midpoints(codes, 7, mid);
        for (int i = 0; i < K; i++) ck_assert(q[row * K + i] == codes[nb_cb_assign(mid, 7, w[row * K + i])]);
    }
    /* uniform per tensor at 4 bits: s = max|w| / 7, values s·clamp(rint(w/s)) */
    strcpy(p.weights.method, "uniform");
    strcpy(p.weights.granularity, "tensor");
    ck_assert_int_eq(nb_quant_weight_q(&p, w, OC, OC * K, 4, q), NB_OK);
    float mx = 0.0f;
    for (int i = 0; i < OC * K; i++) mx = fmaxf(mx, fabsf(w[i]));
    const float sc = mx / 7.0f;
    for (int i = 0; i < OC * K; i++) {
        const float want = fminf(fmaxf(rintf(w[i] / sc), -8.0f), 7.0f) * sc;
        ck_assert_msg(q[i] == want, "%d: %g vs %g", i, (double)q[i], (double)want);
    }
    /* more bits, less error */
    double prev = INFINITY;
    for (int b = 2; b <= 8; b++) {
        ck_assert_int_eq(nb_quant_weight_q(&p, w, OC, OC * K, b, q), NB_OK);
        double e = 0.0;
        for (int i = 0; i < OC * K; i++) e += ((double)q[i] - w[i]) * ((double)q[i] - w[i]);
        ck_assert(e < prev);
        prev = e;
    }
    ck_assert_int_eq(nb_quant_weight_q(&p, w, OC, OC * K, 1, q), NB_STATUS_BAD_INPUT);
    w[3] = NAN;
    ck_assert_int_eq(nb_quant_weight_q(&p, w, OC, OC * K, 4, q), NB_STATUS_NUMERIC);
    ck_assert_msg(strstr(nb_last_error(), "weight 3 is nan"), "%s", nb_last_error());
}
END_TEST

int main(void) {
    Suite *s = suite_create("sensitivity");
    TCase *tc = tcase_create("sensitivity");
    tcase_add_test(tc, test_hutchinson_diagonal_exact);
    tcase_add_test(tc, test_hutchinson_dense);
    tcase_add_test(tc, test_weight_q);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
