/* ADQ codebook weights (quant/codebook.c, ALGORITHMS.md §5): layouts;
 * quantile, uniform and k-means initialisation on known distributions;
 * nearest-code assignment against brute force (ties, duplicates, values
 * beyond the ends, both search paths); the EMA update on hand-worked
 * examples (zero fixed, empty code skipped, sides kept sorted, symmetric
 * pooling); the op's forward and gradients (STE, mask, learned scale) by
 * hand, per channel and across thread counts; the quantizer in a model
 * (codebooks from the weights, EMA after a step, warm-up and period, the
 * off switch, a corrupt loaded codebook refused) and the policy's refusals. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nb_test.h"

static void expect_near(const float *got, const double *want, int n, double tol, const char *what) {
    for (int i = 0; i < n; i++)
        ck_assert_msg(fabs((double)got[i] - want[i]) <= tol, "%s[%d]: got %.9g, want %.9g", what, i, (double)got[i],
                      want[i]);
}

START_TEST(test_cb_layout) {
    struct {
        int bits, sym, n, z;
    } c[] = {{1, 1, 2, -1}, {2, 1, 3, 1}, {3, 1, 7, 3}, {4, 1, 15, 7}, {8, 1, 255, 127},
             {1, 0, 2, 0},  {2, 0, 4, 1}, {3, 0, 8, 3}, {4, 0, 16, 7}, {8, 0, 256, 127}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        const nb_cb_spec s = {c[i].bits, c[i].sym};
        ck_assert_int_eq(nb_cb_ncodes(&s), c[i].n);
        ck_assert_int_eq(nb_cb_zero_index(&s), c[i].z);
    }
}
END_TEST

/* |w| evenly spread over [0, 1] (i / (n - 1)), alternating signs: the
 * type-7 quantile at p is p, so the quantile codebook is (j - 1/2) / m. */
START_TEST(test_cb_init_uniform_tensor) {
    enum { N = 1001 };
    float *w = malloc(sizeof(float) * N), codes[16];
    for (int i = 0; i < N; i++) w[i] = (i % 2 ? -1.0f : 1.0f) * (float)i / (N - 1);
    const nb_cb_spec s3 = {3, 1};
    ck_assert_int_eq(nb_cb_init_codes(&s3, NB_CB_INIT_QUANTILE, 0, w, N, codes), NB_OK);
    const double q3[7] = {-5.0 / 6, -0.5, -1.0 / 6, 0, 1.0 / 6, 0.5, 5.0 / 6};
    expect_near(codes, q3, 7, 1e-6, "quantile 3-bit");
    ck_assert(codes[3] == 0.0f);
    ck_assert_int_eq(nb_cb_init_codes(&s3, NB_CB_INIT_UNIFORM, 0, w, N, codes), NB_OK);
    const double u3[7] = {-1, -2.0 / 3, -1.0 / 3, 0, 1.0 / 3, 2.0 / 3, 1};
    expect_near(codes, u3, 7, 1e-6, "uniform 3-bit");
    /* 1 bit: {-median|w|, median|w|} */
    const nb_cb_spec s1 = {1, 1};
    ck_assert_int_eq(nb_cb_init_codes(&s1, NB_CB_INIT_QUANTILE, 0, w, N, codes), NB_OK);
    const double q1[2] = {-0.5, 0.5};
    expect_near(codes, q1, 2, 1e-6, "quantile 1-bit");
    /* asymmetric 3-bit: positives (i + 1) / P (m = 4), negatives -2(i + 1) / M
     * (m = 3) */
    enum { P = 401, M = 301 };
    float *a = malloc(sizeof(float) * (P + M));
    for (int i = 0; i < P; i++) a[i] = (float)(i + 1) / P;
    for (int i = 0; i < M; i++) a[P + i] = -2.0f * (float)(i + 1) / M;
    const nb_cb_spec sa = {3, 0};
    ck_assert_int_eq(nb_cb_init_codes(&sa, NB_CB_INIT_QUANTILE, 0, a, P + M, codes), NB_OK);
    /* magnitudes s(i+1)/n, i = 0..n-1: the type-7 quantile at p is
     * s(1 + p(n-1))/n */
    double qa[8];
    for (int j = 1; j <= 3; j++) qa[3 - j] = -2.0 * (1.0 + (j - 0.5) / 3 * (M - 1)) / M;
    qa[3] = 0.0;
    for (int j = 1; j <= 4; j++) qa[3 + j] = (1.0 + (j - 0.5) / 4 * (P - 1)) / P;
    expect_near(codes, qa, 8, 1e-6, "quantile asymmetric");
    ck_assert_int_eq(nb_cb_init_codes(&sa, NB_CB_INIT_UNIFORM, 0, a, P + M, codes), NB_OK);
    const double ua[8] = {-2, -4.0 / 3, -2.0 / 3, 0, 0.25, 0.5, 0.75, 1};
    expect_near(codes, ua, 8, 1e-6, "uniform asymmetric");
    /* a non-finite weight is named */
    a[5] = NAN;
    ck_assert_int_eq(nb_cb_init_codes(&sa, NB_CB_INIT_QUANTILE, 0, a, P + M, codes), NB_STATUS_NUMERIC);
    ck_assert_msg(strstr(nb_last_error(), "weight 5 is nan"), "%s", nb_last_error());
    free(a);
    free(w);
}
END_TEST

/* Two clusters of magnitudes, 0.01 and 1 (100 each, both signs), ternary:
 * the quantile start is the median 0.505; Lloyd assigns 0.01 to the zero
 * (midpoint 0.2525) and moves c to the mean of the rest, 1, then stops. */
START_TEST(test_cb_kmeans) {
    enum { N = 200 };
    float w[N], codes[3];
    for (int i = 0; i < N; i++) w[i] = (i % 2 ? -1.0f : 1.0f) * (i < 100 ? 0.01f : 1.0f);
    const nb_cb_spec s = {2, 1};
    ck_assert_int_eq(nb_cb_init_codes(&s, NB_CB_INIT_QUANTILE, 0, w, N, codes), NB_OK);
    ck_assert_msg(fabsf(codes[2] - 0.505f) < 1e-6f, "quantile %g", (double)codes[2]);
    ck_assert_int_eq(nb_cb_init_codes(&s, NB_CB_INIT_KMEANS, 1, w, N, codes), NB_OK);
    ck_assert(codes[0] == -1.0f && codes[1] == 0.0f && codes[2] == 1.0f);
    /* random data: the result is a Lloyd fixed point (every code the mean
     * of its cell) within the iteration budget */
    nb_rng r;
    nb_rng_seed(&r, 5, 0);
    enum { R = 5000 };
    float *g = malloc(sizeof(float) * R), cb[8];
    for (int i = 0; i < R; i++) g[i] = nb_rng_normal(&r) * 0.05f;
    const nb_cb_spec s3 = {3, 0};
    ck_assert_int_eq(nb_cb_init_codes(&s3, NB_CB_INIT_KMEANS, 200, g, R, cb), NB_OK);
    double cnt[8], sum[8];
    nb_cb_stats(cb, 8, g, R, 1.0f, cnt, sum);
    for (int k = 0; k < 8; k++) {
        if (k == 3) {
            ck_assert(cb[k] == 0.0f);
            continue;
        }
        ck_assert(cnt[k] > 0);
        ck_assert_msg(fabs(cb[k] - sum[k] / cnt[k]) < 1e-6, "code %d: %g vs centroid %g", k, (double)cb[k],
                      sum[k] / cnt[k]);
        if (k) ck_assert(cb[k] >= cb[k - 1]);
    }
    free(g);
}
END_TEST

/* The reference: the nearest code in double; ties to the smaller |code|,
 * then to the lower index for v >= 0 and the upper one for v < 0. */
static int brute_index(const float *c, int nc, float v) {
    int best = 0;
    for (int k = 1; k < nc; k++) {
        const double d = fabs((double)v - c[k]), db = fabs((double)v - c[best]);
        if (d < db) {
            best = k;
        } else if (d == db) {
            const double mk = fabs((double)c[k]), mb = fabs((double)c[best]);
            if (mk < mb || (mk == mb && v < 0.0f)) best = k;
        }
    }
    return best;
}

START_TEST(test_cb_assign_brute_force) {
    nb_rng r;
    nb_rng_seed(&r, 3, 0);
    const int sizes[] = {2, 3, 4, 7, 8, 15, 16, 17, 18, 31, 64, 255, 256};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        for (int trial = 0; trial < 20; trial++) {
            const int nc = sizes[si];
            float c[256];
            double mid[255];
            for (int k = 0; k < nc; k++) c[k] = nb_rng_normal(&r) * 0.1f;
            /* quantised codes make duplicates and exact midpoints likely */
            if (trial % 2)
                for (int k = 0; k < nc; k++) c[k] = roundf(c[k] * 64.0f) / 64.0f;
            for (int i = 1; i < nc; i++)
                for (int j = i; j > 0 && c[j - 1] > c[j]; j--) {
                    const float t = c[j];
                    c[j] = c[j - 1];
                    c[j - 1] = t;
                }
            nb_cb_midpoints(c, nc, mid);
            float vals[400];
            for (int i = 0; i < 400; i++) {
                float v;
                const int kind = i % 5;
                if (kind == 0) v = (float)((nb_rng_uniform(&r) * 2.0 - 1.0) * 0.6); /* beyond the ends too */
                else if (kind == 1) v = c[nb_rng_below(&r, (uint32_t)nc)];   /* on a code */
                else if (kind == 2 && nc > 1) v = (float)mid[nb_rng_below(&r, (uint32_t)nc - 1)]; /* on a midpoint */
                else if (kind == 3) v = i % 2 ? 0.0f : -0.0f;
                else v = roundf((float)(nb_rng_uniform(&r) * 2.0 - 1.0) * 16.0f) / 128.0f;
                vals[i] = v;
                const int got = nb_cb_assign(mid, nc, v), want = brute_index(c, nc, v);
                /* with duplicate codes only the value is defined */
                ck_assert_msg(got == want || c[got] == c[want], "%d codes, v = %.9g: index %d (%.9g), brute force %d (%.9g)", nc,
                              (double)v, got, (double)c[got], want, (double)c[want]);
            }
            /* the op's block path (float thresholds) and the statistics agree */
            float y[400];
            const nb_cb_args op = {1, 400, nc, c, NULL, 0, 1.0f};
            nb_cb_forward(&op, vals, y);
            double cnt[256], sum[256], wc[256] = {0}, ws[256] = {0};
            nb_cb_stats(c, nc, vals, 400, 1.0f, cnt, sum);
            for (int i = 0; i < 400; i++) {
                const int k = nb_cb_assign(mid, nc, vals[i]);
                ck_assert_msg(y[i] == c[k], "%d codes, v = %.9g: op %.9g, assign %.9g", nc, (double)vals[i],
                              (double)y[i], (double)c[k]);
                wc[k] += 1.0;
                ws[k] += vals[i];
            }
            for (int k = 0; k < nc; k++) ck_assert(cnt[k] == wc[k] && sum[k] == ws[k]);
        }
    }
    /* 0 between -c and c goes to -c; a tie between 0 and c to 0 */
    const float pm[2] = {-0.5f, 0.5f}, t[3] = {-1.0f, 0.0f, 1.0f};
    double m2[1], m3[2];
    nb_cb_midpoints(pm, 2, m2);
    nb_cb_midpoints(t, 3, m3);
    ck_assert_int_eq(nb_cb_assign(m2, 2, 0.0f), 0);
    ck_assert_int_eq(nb_cb_assign(m3, 3, 0.5f), 1);
    ck_assert_int_eq(nb_cb_assign(m3, 3, -0.5f), 1);
    ck_assert_int_eq(nb_cb_assign(m3, 3, 0.50001f), 2);
    ck_assert_int_eq(nb_cb_assign(m3, 3, -7.0f), 0);
}
END_TEST

/* Asymmetric 2-bit codebook {-1, 0, 1, 3}, γ = 0.5, ε = 0:
 *   code 0 gets {-1.2, -0.9, -1.5}: n 3, S -3.6: N = 5 + 1.5 = 6.5,
 *     M = -5 - 1.8 = -6.8, c = -1.04615385
 *   the zero code gets {0.2}: not updated
 *   code 2 gets {1.9, 1.95}: n 2, S 3.85, with N = 1, M = 6 (a state that
 *     had it higher): N = 0.5 + 1 = 1.5, M = 3 + 1.925 = 4.925,
 *     c = 3.28333333 > 3, so it swaps with code 3 (which got nothing and
 *     keeps c = 3, N = 10, M = 30): codes {-1.04615, 0, 3, 3.28333} */
START_TEST(test_cb_ema_hand) {
    const nb_cb_spec s = {2, 0};
    float c[4] = {-1, 0, 1, 3}, N[4] = {10, 5, 1, 10}, M[4] = {-10, 0, 6, 30};
    const float w[6] = {-1.2f, -0.9f, -1.5f, 0.2f, 1.9f, 1.95f};
    double cnt[4], sum[4];
    nb_cb_stats(c, 4, w, 6, 1.0f, cnt, sum);
    ck_assert(cnt[0] == 3 && cnt[1] == 1 && cnt[2] == 2 && cnt[3] == 0);
    nb_cb_ema(&s, c, N, M, cnt, sum, 0.5f, 0.0f);
    const double wc[4] = {-6.8 / 6.5, 0, 3, 4.925 / 1.5}, wn[4] = {6.5, 5, 10, 1.5}, wm[4] = {-6.8, 0, 30, 4.925};
    expect_near(c, wc, 4, 1e-6, "codes");
    expect_near(N, wn, 4, 1e-6, "N");
    expect_near(M, wm, 4, 1e-6, "M");
    ck_assert(c[1] == 0.0f);

    /* symmetric 3-bit {-3..3}, N = 4, M = c·4 each, γ = 0.5:
     *   pair 1 gets {1.3, -0.9}: n 2, S 2.2: N = 3, M = 2 + 1.1 = 3.1, c = 1.0333
     *   pair 2 gets {-2.2}: n 1, S 2.2: N = 2.5, M = 4 + 1.1 = 5.1, c = 2.04
     *   pair 3 gets nothing; 0.2 goes to the zero, which stays */
    const nb_cb_spec s3 = {3, 1};
    float c3[7] = {-3, -2, -1, 0, 1, 2, 3}, N3[7], M3[7];
    double cnt3[7] = {0, 0, 0, 0, 0, 0, 0}, sum3[7];
    nb_cb_ema_start(&s3, c3, N3, M3, (const double[]){2, 2, 2, 5, 2, 2, 2});
    for (int k = 0; k < 7; k++) ck_assert(N3[k] == (k == 3 ? 5.0f : 4.0f) && M3[k] == c3[k] * N3[k]);
    const float w3[4] = {1.3f, -0.9f, -2.2f, 0.2f};
    nb_cb_stats(c3, 7, w3, 4, 1.0f, cnt3, sum3);
    nb_cb_ema(&s3, c3, N3, M3, cnt3, sum3, 0.5f, 0.0f);
    const double w3c[7] = {-3, -5.1 / 2.5, -3.1 / 3, 0, 3.1 / 3, 5.1 / 2.5, 3};
    expect_near(c3, w3c, 7, 1e-6, "symmetric codes");
    ck_assert(c3[3] == 0.0f && N3[3] == 5.0f);
    for (int j = 1; j <= 3; j++) ck_assert(c3[3 - j] == -c3[3 + j] && N3[3 - j] == N3[3 + j] && M3[3 - j] == -M3[3 + j]);
}
END_TEST

/* The op: y = α·c_k(w/α); dw = dy (or masked beyond the ends); dα. */
START_TEST(test_cb_op) {
    const float codes[3] = {-0.5f, 0.0f, 1.0f};
    /* ends with the mask: lo = -0.5 - 0.25 = -0.75, hi = 1 + 0.5 = 1.5 */
    const float w[8] = {-1.0f, -0.75f, -0.3f, 0.2f, 0.5f, 0.6f, 1.5f, 2.0f};
    const float dy[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    nb_tape *t = nb_tape_new();
    float wgrad[8] = {0}, agrad[1] = {0}, adata[1] = {2.0f};
    nb_tensor *wt = nb_tensor_new(1, (int[]){8});
    memcpy(wt->data, w, sizeof w);
    wt->requires_grad = 1;
    wt->is_param = 1;
    wt->grad = wgrad;
    nb_tensor *at = nb_tensor_new(1, (int[]){1});
    at->data[0] = adata[0];
    at->requires_grad = 1;
    at->is_param = 1;
    at->grad = agrad;
    /* α = 2: v = w/2 = {-0.5, -0.375, -0.15, 0.1, 0.25, 0.3, 0.75, 1}
     * codes: -0.5, 0 (tie at -0.25? no: -0.375 < -0.25 -> -0.5), 0, 0,
     * 0 (0.25 < 0.5), 0 (0.3), 1 (0.75 > 0.5), 1; y = 2c */
    const nb_cb_args a = {1, 8, 3, codes, at, 1, 0.5f};
    nb_tensor *y = nb_codebook(t, wt, &a);
    const double wy[8] = {-1, -1, 0, 0, 0, 0, 2, 2};
    expect_near(y->data, wy, 8, 0, "y");
    ck_assert_int_eq(nb_backward_seed(t, y, dy), NB_OK);
    /* mask on v in [-0.75, 1.5]: all inside */
    const double wdw[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    expect_near(wgrad, wdw, 8, 0, "dw");
    /* dα = g Σ dy (c - v) = 0.5 (1·0 + 2(-0.125) + 3(0.15) + 4(-0.1) + 5(-0.25)
     *       + 6(-0.3) + 7(0.25) + 8·0) = 0.5 (-1.5) = -0.75 */
    ck_assert_msg(fabsf(agrad[0] + 0.75f) < 1e-6f, "dalpha %g", (double)agrad[0]);
    nb_tape_reset(t);
    /* α = 1 (NULL), mask on: -1 and 2 are beyond [-0.75, 1.5]; -0.75 and
     * 1.5 are on the ends (inside) */
    memset(wgrad, 0, sizeof wgrad);
    const nb_cb_args b = {1, 8, 3, codes, NULL, 1, 1.0f};
    y = nb_codebook(t, wt, &b);
    const double wy1[8] = {-0.5, -0.5, -0.5, 0, 0, 1, 1, 1}; /* 0.5: the tie goes to 0 */
    expect_near(y->data, wy1, 8, 0, "y (alpha 1)");
    ck_assert_int_eq(nb_backward_seed(t, y, dy), NB_OK);
    const double wdw1[8] = {0, 2, 3, 4, 5, 6, 7, 0};
    expect_near(wgrad, wdw1, 8, 0, "dw masked");
    nb_tape_reset(t);
    /* no mask: plain straight-through */
    memset(wgrad, 0, sizeof wgrad);
    const nb_cb_args c = {1, 8, 3, codes, NULL, 0, 1.0f};
    y = nb_codebook(t, wt, &c);
    ck_assert_int_eq(nb_backward_seed(t, y, dy), NB_OK);
    expect_near(wgrad, wdw, 8, 0, "dw unmasked");
    nb_tape_reset(t);
    nb_tape_free(t);
    wt->grad = NULL;
    at->grad = NULL;
    nb_tensor_free(wt);
    nb_tensor_free(at);
}
END_TEST

/* Per channel (row r uses codebook r) on a large tensor: 1 and 2 threads
 * give the same bits, and the values equal the brute-force code. */
START_TEST(test_cb_rows_threads) {
    enum { ROWS = 64, K = 2304, NC = 7 };
    float *w = malloc(sizeof(float) * ROWS * K), *cb = malloc(sizeof(float) * ROWS * NC);
    float *dy = malloc(sizeof(float) * ROWS * K);
    nb_rng r;
    nb_rng_seed(&r, 9, 0);
    for (int i = 0; i < ROWS * K; i++) {
        w[i] = nb_rng_normal(&r) * 0.05f;
        dy[i] = nb_rng_normal(&r);
    }
    const nb_cb_spec s = {3, 1};
    for (int row = 0; row < ROWS; row++)
        ck_assert_int_eq(nb_cb_init_codes(&s, NB_CB_INIT_QUANTILE, 0, w + (size_t)row * K, K, cb + row * NC), NB_OK);
    nb_tensor *alpha = nb_tensor_new(1, (int[]){1});
    alpha->data[0] = 0.9f;
    const nb_cb_args a = {ROWS, K, NC, cb, alpha, 1, 0.01f};
    float *y1 = malloc(sizeof(float) * ROWS * K), *y2 = malloc(sizeof(float) * ROWS * K);
    float *d1 = malloc(sizeof(float) * ROWS * K), *d2 = malloc(sizeof(float) * ROWS * K);
    float da1 = 0.0f, da2 = 0.0f;
    const int th = nb_get_threads();
    nb_set_threads(1);
    nb_cb_forward(&a, w, y1);
    nb_cb_backward(&a, w, dy, d1, 1, &da1);
    nb_set_threads(2);
    nb_cb_forward(&a, w, y2);
    nb_cb_backward(&a, w, dy, d2, 1, &da2);
    nb_set_threads(th);
    ck_assert(!memcmp(y1, y2, sizeof(float) * ROWS * K) && !memcmp(d1, d2, sizeof(float) * ROWS * K) && da1 == da2);
    for (int i = 0; i < ROWS * K; i += 37) {
        const float *c = cb + (i / K) * NC;
        const float v = w[i] / 0.9f;
        ck_assert(y1[i] == 0.9f * c[brute_index(c, NC, v)]);
    }
    nb_tensor_free(alpha);
    free(w);
    free(cb);
    free(dy);
    free(y1);
    free(y2);
    free(d1);
    free(d2);
}
END_TEST

/* ------------------------------------------------------ in a model */

static void adq_policy(nb_quant_policy *p, const char *gran, int bits, int symmetric) {
    nb_quant_policy_default(p);
    strcpy(p->weights.method, "adq");
    strcpy(p->weights.granularity, gran);
    p->weights.bits = bits;
    p->weights.symmetric = symmetric;
    strcpy(p->activations.method, "lsq");
    p->activations.bits = 4;
}

/* A calibration forward and one SGD training step on a random batch. */
static void calibrate_and_step(nb_model *m, int steps) {
    nb_rng r;
    nb_rng_seed(&r, 2, 0);
    nb_tensor *x = nb_tensor_new(4, (int[]){4, 3, 32, 32});
    for (size_t i = 0; i < x->numel; i++) x->data[i] = nb_rng_normal(&r);
    const int32_t y[4] = {1, 2, 3, 4};
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_model_set_pass(m, NB_PASS_CALIBRATE);
    nb_model_forward(m, t, x);
    nb_tape_reset(t);
    nb_tape_set_grad(t, 1);
    ck_assert_msg(nb_quant_calibrate_finish(m) == NB_OK, "%s", nb_last_error());
    nb_model_train(m, 1);
    for (int s = 0; s < steps; s++) {
        nb_model_zero_grad(m);
        nb_tensor *l = nb_cross_entropy(t, nb_model_forward(m, t, x), y, 0.0f);
        ck_assert_int_eq(nb_backward(t, l), NB_OK);
        for (size_t i = 0; i < m->n_param_floats; i++) m->param_data[i] -= 0.5f * m->param_grad[i];
        ck_assert_int_eq(m->quant->after_step(m->quant->owner), NB_OK);
        nb_tape_reset(t);
    }
    nb_tape_free(t);
    nb_tensor_free(x);
}

START_TEST(test_adq_in_model) {
    const char *grans[2] = {"tensor", "channel"};
    for (int gi = 0; gi < 2; gi++)
        for (int sym = 0; sym < 2; sym++) {
            nb_model *m = nb_test_smallcnn();
            nb_quant_policy p;
            adq_policy(&p, grans[gi], 2, sym);
            ck_assert_msg(nb_quant_attach(m, &p) == NB_OK, "%s", nb_last_error());
            nb_quantizer *q = nb_test_quantizer(m, "features.1.conv.weight");
            const nb_tensor *w = nb_module_weight(q->mod);
            ck_assert(q->method == NB_QM_ADQ && q->ncodes == (sym ? 3 : 4) && q->L.rows == (gi ? w->shape[0] : 1));
            ck_assert(q->qmin == 0 && q->qmax == q->ncodes - 1);
            /* the first and last layers are uniform 8-bit */
            ck_assert(nb_test_quantizer(m, "features.0.conv.weight")->method == NB_QM_UNIFORM);
            float before[64 * 16];
            calibrate_and_step(m, 0);
            ck_assert(q->ready[0] == 1.0f && q->ema_step[0] == 0.0f);
            /* codebooks from the FP32 weights, row by row */
            float want[16];
            for (int r = 0; r < q->L.rows; r++) {
                ck_assert_int_eq(nb_cb_init_codes(&q->cb, NB_CB_INIT_QUANTILE, 20, w->data + (size_t)r * q->L.K, q->L.K, want),
                                 NB_OK);
                ck_assert(!memcmp(want, q->codebook + r * q->ncodes, sizeof(float) * (size_t)q->ncodes));
            }
            memcpy(before, q->codebook, sizeof(float) * (size_t)(q->L.rows * q->ncodes));
            calibrate_and_step(m, 1);
            ck_assert(q->ema_step[0] == 1.0f);
            /* one EMA step with γ = 0.99 moved the codes (the weights moved) by at most a little */
            int moved = 0;
            for (int k = 0; k < q->L.rows * q->ncodes; k++) {
                moved += q->codebook[k] != before[k];
                ck_assert(fabsf(q->codebook[k] - before[k]) <= 0.05f * fabsf(before[k]) + 1e-6f);
            }
            ck_assert(moved > 0);
            nb_model_free(m);
        }
}
END_TEST

/* EMA off, warm-up and period: codebooks move only on the steps they should. */
START_TEST(test_adq_ema_schedule) {
    nb_model *m = nb_test_smallcnn();
    nb_quant_policy p;
    adq_policy(&p, "tensor", 3, 1);
    p.adq.ema = 0;
    ck_assert(nb_quant_attach(m, &p) == NB_OK);
    nb_quantizer *q = nb_test_quantizer(m, "features.1.conv.weight");
    calibrate_and_step(m, 0);
    float c0[7];
    memcpy(c0, q->codebook, sizeof c0);
    calibrate_and_step(m, 2);
    ck_assert(!memcmp(c0, q->codebook, sizeof c0) && q->ema_step[0] == 0.0f);
    nb_model_free(m);

    m = nb_test_smallcnn();
    adq_policy(&p, "tensor", 3, 1);
    p.adq.ema_warmup = 2;
    p.adq.ema_period = 3;
    ck_assert(nb_quant_attach(m, &p) == NB_OK);
    q = nb_test_quantizer(m, "features.1.conv.weight");
    calibrate_and_step(m, 0);
    /* updates at steps 5, 8, ...: after 4 steps still the initial codebook */
    memcpy(c0, q->codebook, sizeof c0);
    float c1[7];
    calibrate_and_step(m, 4);
    memcpy(c1, q->codebook, sizeof c1);
    ck_assert(q->ema_step[0] == 4.0f);
    ck_assert(!memcmp(c0, c1, sizeof c0));
    nb_model_free(m);
}
END_TEST

START_TEST(test_adq_corrupt_state) {
    nb_model *m = nb_test_smallcnn();
    nb_quant_policy p;
    adq_policy(&p, "tensor", 3, 1);
    ck_assert(nb_quant_attach(m, &p) == NB_OK);
    nb_quantizer *q = nb_test_quantizer(m, "features.1.conv.weight");
    calibrate_and_step(m, 0);
    ck_assert_int_eq(m->quant->after_load(m->quant->owner), NB_OK);
    const float keep = q->codebook[1];
    q->codebook[1] = q->codebook[2] + 1.0f;
    ck_assert_int_eq(m->quant->after_load(m->quant->owner), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "/quant/features.1.conv.weight/codebook: code 2 of row 0") &&
                      strstr(nb_last_error(), "ascending"),
                  "%s", nb_last_error());
    q->codebook[1] = keep;
    q->codebook[3] = 0.001f;
    ck_assert_int_eq(m->quant->after_load(m->quant->owner), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "exact zero"), "%s", nb_last_error());
    q->codebook[3] = 0.0f;
    q->ema_count[0] = NAN;
    ck_assert_int_eq(m->quant->after_load(m->quant->owner), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "EMA statistics"), "%s", nb_last_error());
    q->ema_count[0] = 1.0f;
    q->ema_step[0] = 1.5f;
    ck_assert_int_eq(m->quant->after_load(m->quant->owner), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "ema_step = 1.5"), "%s", nb_last_error());
    nb_model_free(m);
}
END_TEST

START_TEST(test_adq_policy_errors) {
    struct {
        const char *wm, *am, *gran, *init;
        int bits;
        const char *msg;
    } cases[] = {
        {"lsq", "adq", "tensor", "quantile", 3, "method \"adq\" is for weights only"},
        {"adq", "lsq", "group", "quantile", 3, "not per group"},
        {"adq", "lsq", "tensor", "median", 3, "quant.adq.init: unknown \"median\""},
        {"adq", "lsq", "tensor", "quantile", 9, "needs 1..8 bits, got 9"},
        {"uniform", "lsq", "tensor", "quantile", 1, "needs 2..8 bits, got 1"},
        {"n2uq", "lsq", "tensor", "quantile", 3, "method \"n2uq\" is for activations only"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nb_model *m = nb_test_smallcnn();
        nb_quant_policy p;
        adq_policy(&p, cases[i].gran, cases[i].bits, 1);
        strcpy(p.weights.method, cases[i].wm);
        strcpy(p.activations.method, cases[i].am);
        strcpy(p.adq.init, cases[i].init);
        ck_assert_int_eq(nb_quant_attach(m, &p), NB_STATUS_BAD_INPUT);
        ck_assert_msg(strstr(nb_last_error(), cases[i].msg), "case %zu: %s", i, nb_last_error());
        ck_assert_ptr_null(m->quant);
        nb_model_free(m);
    }
}
END_TEST

/* N2UQ activations in a model: the image input stays LSQ, the rest get
 * thresholds from the first batch (LSQ's grid), widths kept positive and a
 * non-finite threshold stopping the run; a signed input is refused when
 * first/last layers are not fixed. */
START_TEST(test_n2uq_in_model) {
    nb_model *m = nb_test_smallcnn();
    nb_quant_policy p;
    adq_policy(&p, "tensor", 3, 1);
    strcpy(p.activations.method, "n2uq");
    p.activations.bits = 3;
    ck_assert_msg(nb_quant_attach(m, &p) == NB_OK, "%s", nb_last_error());
    ck_assert(nb_test_quantizer(m, "features.0.conv.input")->method == NB_QM_LSQ);
    ck_assert(nb_test_quantizer(m, "fc.input")->method == NB_QM_LSQ);
    nb_quantizer *q = nb_test_quantizer(m, "features.1.conv.input");
    ck_assert(q->method == NB_QM_N2UQ && q->qmin == 0 && q->qmax == 7 && q->intervals->numel == 6);
    ck_assert(nb_quant_learned(m) && !nb_quant_needs_observers(m));
    calibrate_and_step(m, 0);
    const float s0 = q->step->data[0];
    ck_assert(s0 > 0.0f && q->t0->data[0] == s0 / 2 && q->intervals->data[5] == s0 && q->scale[0] == s0);
    calibrate_and_step(m, 2);
    q->intervals->data[2] = -1.0f;
    ck_assert_int_eq(m->quant->after_step(m->quant->owner), NB_OK);
    ck_assert(q->intervals->data[2] == 1e-8f);
    q->t0->data[0] = NAN;
    ck_assert_int_eq(m->quant->after_step(m->quant->owner), NB_STATUS_NUMERIC);
    ck_assert_msg(strstr(nb_last_error(), "first threshold of quantizer features.1.conv.input"), "%s", nb_last_error());
    q->t0->data[0] = 0.1f;
    q->intervals->data[0] = 0.0f;
    ck_assert_int_eq(m->quant->after_load(m->quant->owner), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "intervals[0] = 0 is not a positive width"), "%s", nb_last_error());
    nb_model_free(m);
    m = nb_test_smallcnn();
    adq_policy(&p, "tensor", 3, 1);
    strcpy(p.activations.method, "n2uq");
    p.first_bits = 0;
    ck_assert_int_eq(nb_quant_attach(m, &p), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "features.0.conv input: method \"n2uq\" quantizes non-negative inputs"), "%s",
                  nb_last_error());
    nb_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("adq");
    TCase *tc = tcase_create("adq");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cb_layout);
    tcase_add_test(tc, test_cb_init_uniform_tensor);
    tcase_add_test(tc, test_cb_kmeans);
    tcase_add_test(tc, test_cb_assign_brute_force);
    tcase_add_test(tc, test_cb_ema_hand);
    tcase_add_test(tc, test_cb_op);
    tcase_add_test(tc, test_cb_rows_threads);
    tcase_add_test(tc, test_adq_in_model);
    tcase_add_test(tc, test_adq_ema_schedule);
    tcase_add_test(tc, test_adq_corrupt_state);
    tcase_add_test(tc, test_adq_policy_errors);
    tcase_add_test(tc, test_n2uq_in_model);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
