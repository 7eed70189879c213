/* Optimizers, groups, clipping and schedules against hand-computed values,
 * and against PyTorch where /usr/bin/python3 can import torch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nb_test.h"

#define TOL 1e-6

static void expect_near(double got, double want, const char *what) {
    ck_assert_msg(fabs(got - want) <= TOL * fmax(1.0, fabs(want)), "%s: got %.9g, want %.9g", what, got, want);
}

/* ------------------------------------------------------------ raw updates */

START_TEST(test_sgd_hand_values) {
    nb_sgd_opts o = nb_sgd_opts_default();
    ck_assert_float_eq(o.momentum, 0.9f);
    float p, g, buf = 123.0f;

    /* plain: p = 1 - 0.1 * 0.5 = 0.95; buf untouched */
    o = (nb_sgd_opts){.momentum = 0.0f};
    p = 1.0f, g = 0.5f;
    nb_sgd_update(&o, 0.1f, 0.0f, &p, &g, &buf, 1, 1);
    expect_near(p, 0.95, "plain");
    ck_assert_float_eq(buf, 123.0f);

    /* weight decay: g' = 0.5 + 0.25 * 2 = 1, p = 2 - 0.5 * 1 = 1.5 */
    p = 2.0f;
    nb_sgd_update(&o, 0.5f, 0.25f, &p, &g, NULL, 1, 0);
    expect_near(p, 1.5, "weight decay");

    /* momentum 0.9, first step: buf = g = 0.5 (not 0.9 * 123 + ...), p = 1 - 0.05 = 0.95;
     * second step g = 0.25: buf = 0.9 * 0.5 + 0.25 = 0.7, p = 0.95 - 0.07 = 0.88 */
    o = (nb_sgd_opts){.momentum = 0.9f};
    p = 1.0f, g = 0.5f;
    nb_sgd_update(&o, 0.1f, 0.0f, &p, &g, &buf, 1, 1);
    expect_near(buf, 0.5, "first-step buffer");
    expect_near(p, 0.95, "momentum step 1");
    g = 0.25f;
    nb_sgd_update(&o, 0.1f, 0.0f, &p, &g, &buf, 1, 0);
    expect_near(buf, 0.7, "momentum buffer 2");
    expect_near(p, 0.88, "momentum step 2");

    /* dampening 0.5: the first buffer is still g = 0.5 (PyTorch), then
     * buf = 0.9 * 0.5 + 0.5 * 0.25 = 0.575, p = 0.95 - 0.0575 = 0.8925 */
    o = (nb_sgd_opts){.momentum = 0.9f, .dampening = 0.5f};
    p = 1.0f, g = 0.5f;
    nb_sgd_update(&o, 0.1f, 0.0f, &p, &g, &buf, 1, 1);
    expect_near(buf, 0.5, "dampened first buffer");
    g = 0.25f;
    nb_sgd_update(&o, 0.1f, 0.0f, &p, &g, &buf, 1, 0);
    expect_near(buf, 0.575, "dampened buffer");
    expect_near(p, 0.8925, "dampened step 2");

    /* nesterov: step 1 buf = 0.5, d = 0.5 + 0.9 * 0.5 = 0.95, p = 1 - 0.095 = 0.905;
     * step 2 g = 0.25: buf = 0.45 + 0.25 = 0.7, d = 0.25 + 0.63 = 0.88, p = 0.905 - 0.088 = 0.817 */
    o = (nb_sgd_opts){.momentum = 0.9f, .nesterov = 1};
    p = 1.0f, g = 0.5f;
    nb_sgd_update(&o, 0.1f, 0.0f, &p, &g, &buf, 1, 1);
    expect_near(p, 0.905, "nesterov step 1");
    g = 0.25f;
    nb_sgd_update(&o, 0.1f, 0.0f, &p, &g, &buf, 1, 0);
    expect_near(p, 0.817, "nesterov step 2");

    /* momentum + weight decay: g' = 0.5 + 0.1 * 1 = 0.6 = buf, p = 1 - 0.06 = 0.94 */
    o = (nb_sgd_opts){.momentum = 0.9f};
    p = 1.0f, g = 0.5f;
    nb_sgd_update(&o, 0.1f, 0.1f, &p, &g, &buf, 1, 1);
    expect_near(buf, 0.6, "decayed buffer");
    expect_near(p, 0.94, "momentum + decay");
}
END_TEST

START_TEST(test_adamw_hand_values) {
    /* lr 0.1, wd 0.5, betas (0.9, 0.999), eps 1e-8, p = 1, g = 0.5, -0.25, 1.
     * t = 1: p = 1 (1 - 0.05) = 0.95; m = 0.1 * 0.5 = 0.05; v = 0.001 * 0.25 = 2.5e-4;
     *        mhat = 0.05 / 0.1 = 0.5, vhat = 2.5e-4 / 0.001 = 0.25, sqrt 0.5;
     *        p = 0.95 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.850000002
     * t = 2: p = 0.850000002 * 0.95 = 0.8075000019; m = 0.045 - 0.025 = 0.02;
     *        v = 0.999 * 2.5e-4 + 0.001 * 0.0625 = 3.1225e-4;
     *        mhat = 0.02 / (1 - 0.81) = 0.105263158, vhat = 3.1225e-4 / (1 - 0.998001)
     *        = 0.156203102, sqrt 0.395225381; p -= 0.1 * 0.266337033 -> 0.780866299
     * t = 3: p = 0.780866299 * 0.95 = 0.741822984; m = 0.018 + 0.1 = 0.118;
     *        v = 0.999 * 3.1225e-4 + 0.001 = 1.31193775e-3;
     *        mhat = 0.118 / 0.271 = 0.435424354, vhat = 1.31193775e-3 / 2.997001e-3
     *        = 0.437750188, sqrt 0.661626925; p -= 0.1 * 0.65811159 -> 0.676011825 */
    const float gs[3] = {0.5f, -0.25f, 1.0f};
    const double want_p[3] = {0.850000002, 0.780866299, 0.676011825};
    const double want_m[3] = {0.05, 0.02, 0.118}, want_v[3] = {2.5e-4, 3.1225e-4, 1.31193775e-3};
    float p = 1.0f, m = 0.0f, v = 0.0f;
    for (int t = 0; t < 3; t++) {
        nb_adamw_update(0.1f, 0.5f, 0.9f, 0.999f, 1e-8f, &p, &gs[t], &m, &v, 1, t + 1);
        expect_near(m, want_m[t], "exp_avg");
        /* 1 - beta2 is 0.00099998713 in float: v is off by 1.3e-5 relative */
        ck_assert_msg(fabs(v - want_v[t]) < 2e-5 * want_v[t], "exp_avg_sq %d: %.9g", t, (double)v);
        expect_near(p, want_p[t], "param");
    }
    /* without decay the first step moves by lr sign(g) (eps aside): 1 - 0.1 */
    p = 1.0f, m = v = 0.0f;
    nb_adamw_update(0.1f, 0.0f, 0.9f, 0.999f, 1e-8f, &p, &gs[0], &m, &v, 1, 1);
    expect_near(p, 0.9, "no decay");
}
END_TEST

/* ------------------------------------------------------------- optimizer */

/* The vector loops, threaded above 65536 elements, against a scalar loop
 * written the way the formula reads: bit for bit, on 1 and 2 threads, for
 * each SGD case (no momentum, first step, momentum, dampening, Nesterov)
 * and AdamW. n is odd so the vector loops have a tail. */
START_TEST(test_updates_threaded_match_scalar) {
    const size_t n = 100003;
    float *p0 = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n), *b0 = malloc(sizeof(float) * n);
    float *p = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    float *pw = malloc(sizeof(float) * n), *bw = malloc(sizeof(float) * n), *vw = malloc(sizeof(float) * n);
    ck_assert(p0 && g && b0 && p && b && pw && bw && vw);
    nb_rng r;
    nb_rng_seed(&r, 5, 0);
    for (size_t i = 0; i < n; i++) {
        p0[i] = nb_rng_normal(&r);
        g[i] = nb_rng_normal(&r);
        b0[i] = nb_rng_normal(&r);
    }
    const nb_sgd_opts cases[] = {{0.0f, 0.0f, 0}, {0.9f, 0.0f, 0}, {0.9f, 0.3f, 0}, {0.8f, 0.0f, 1}};
    const int saved = nb_get_threads();
    for (int threads = 1; threads <= 2; threads++) {
        nb_set_threads(threads);
        for (int c = 0; c < 4; c++)
            for (int first = 0; first <= 1; first++) {
                const nb_sgd_opts *o = &cases[c];
                const float lr = 0.05f, wd = 1e-3f;
                memcpy(p, p0, sizeof(float) * n);
                memcpy(b, b0, sizeof(float) * n);
                nb_sgd_update(o, lr, wd, p, g, b, n, first);
                /* the first mismatch, then one check (a check per element
                 * costs Check a pipe write each) */
                size_t i = 0;
                float want = 0.0f, bi = 0.0f;
                for (; i < n; i++) {
                    float d = g[i] + wd * p0[i];
                    bi = b0[i];
                    if (o->momentum != 0.0f) {
                        bi = first ? d : o->momentum * b0[i] + (1.0f - o->dampening) * d;
                        d = o->nesterov ? d + o->momentum * bi : bi;
                    }
                    want = p0[i] - lr * d;
                    if (p[i] != want || b[i] != bi) break;
                }
                ck_assert_msg(i == n, "sgd case %d first %d threads %d at %zu: p %.9g want %.9g, buf %.9g want %.9g",
                              c, first, threads, i, i < n ? (double)p[i] : 0.0, (double)want,
                              i < n ? (double)b[i] : 0.0, (double)bi);
            }
        /* AdamW at step 3 from nonzero moments */
        memcpy(pw, p0, sizeof(float) * n);
        memcpy(bw, b0, sizeof(float) * n);
        for (size_t i = 0; i < n; i++) vw[i] = b0[i] * b0[i];
        nb_adamw_update(1e-3f, 1e-2f, 0.9f, 0.999f, 1e-8f, pw, g, bw, vw, n, 3);
        const float decay = (float)(1.0 - 1e-3 * (double)1e-2f);
        const float step = (float)((double)1e-3f / (1.0 - pow(0.9f, 3.0)));
        const float bc2 = (float)sqrt(1.0 - pow(0.999f, 3.0));
        size_t i = 0;
        float want = 0.0f;
        for (; i < n; i++) {
            const float m = 0.9f * b0[i] + (1.0f - 0.9f) * g[i];
            const float v = 0.999f * (b0[i] * b0[i]) + (1.0f - 0.999f) * g[i] * g[i];
            want = p0[i] * decay - step * m / (sqrtf(v) / bc2 + 1e-8f);
            if (pw[i] != want || bw[i] != m || vw[i] != v) break;
        }
        ck_assert_msg(i == n, "adamw threads %d at %zu: p %.9g want %.9g", threads, i, i < n ? (double)pw[i] : 0.0,
                      (double)want);
    }
    nb_set_threads(saved);
    free(p0), free(g), free(b0), free(p), free(b), free(pw), free(bw), free(vw);
}
END_TEST

START_TEST(test_optimizer_groups_and_layout) {
    nb_optim_opts o = nb_optim_opts_default();
    ck_assert_int_eq(o.kind, NB_OPTIM_SGD);
    ck_assert_str_eq(nb_optim_kind_name(NB_OPTIM_ADAMW), "adamw");
    ck_assert_ptr_null(nb_optim_kind_name(NB_OPTIM_COUNT));
    o.momentum = 0.5f;
    nb_optimizer *opt = nb_optimizer_new(&o);
    ck_assert_ptr_nonnull(opt);
    int gd = nb_optimizer_add_group(opt, "decay", 1.0f, 0.5f);
    int gp = nb_optimizer_add_group(opt, "no_decay", 0.5f, 0.0f);
    ck_assert_int_eq(gd, 0);
    ck_assert_int_eq(gp, 1);
    /* segments interleave the groups: A (decay), B (no_decay), C (decay) */
    float a[2] = {2, 2}, da[2] = {1, 1}, b[1] = {2}, db[1] = {1}, c[3] = {4, 4, 4}, dc[3] = {2, 2, 2};
    ck_assert_int_eq(nb_optimizer_add_segment(opt, gd, a, da, 2), NB_OK);
    ck_assert_int_eq(nb_optimizer_add_segment(opt, gp, b, db, 1), NB_OK);
    ck_assert_int_eq(nb_optimizer_add_segment(opt, gd, c, dc, 3), NB_OK);
    ck_assert_uint_eq(nb_optimizer_numel(opt), 6);
    ck_assert_int_eq(nb_optimizer_n_groups(opt), 2);
    ck_assert_str_eq(nb_optimizer_group_name(opt, gp), "no_decay");
    ck_assert_uint_eq(nb_optimizer_group_numel(opt, gd), 5);
    ck_assert_uint_eq(nb_optimizer_group_numel(opt, gp), 1);
    ck_assert_int_eq(nb_optimizer_n_state(opt), 1);
    ck_assert_str_eq(nb_optimizer_state_name(opt, 0), "momentum_buffer");
    ck_assert_int_eq(nb_optimizer_steps(opt), 0);

    /* lr 0.1, first step (buf = g'):
     * A: g' = 1 + 0.5 * 2 = 2, p = 2 - 0.1 * 2 = 1.8
     * B: g' = 1, lr 0.05, p = 2 - 0.05 = 1.95
     * C: g' = 2 + 0.5 * 4 = 4, p = 4 - 0.4 = 3.6 */
    nb_optimizer_step(opt, 0.1f);
    ck_assert_int_eq(nb_optimizer_steps(opt), 1);
    expect_near(a[0], 1.8, "A");
    expect_near(a[1], 1.8, "A");
    expect_near(b[0], 1.95, "B");
    for (int i = 0; i < 3; i++) expect_near(c[i], 3.6, "C");
    const float *st = nb_optimizer_state(opt, 0);
    const double want_buf[6] = {2, 2, 1, 4, 4, 4}; /* segment order */
    for (int i = 0; i < 6; i++) expect_near(st[i], want_buf[i], "state layout");

    /* second step, group no_decay now lr_mult 2, wd 1:
     * B: g' = 1 + 1.95 = 2.95, buf = 0.5 * 1 + 2.95 = 3.45, p = 1.95 - 0.2 * 3.45 = 1.26 */
    nb_optimizer_set_group(opt, gp, 2.0f, 1.0f);
    nb_optimizer_step(opt, 0.1f);
    expect_near(st[2], 3.45, "B buffer");
    expect_near(b[0], 1.26, "B after set_group");
    /* A: g' = 1 + 0.5 * 1.8 = 1.9, buf = 1 + 1.9 = 2.9, p = 1.8 - 0.29 = 1.51 */
    expect_near(a[0], 1.51, "A step 2");
    nb_optimizer_set_steps(opt, 41);
    ck_assert_int_eq(nb_optimizer_steps(opt), 41);
    nb_optimizer_free(opt);

    /* plain SGD keeps no state; AdamW two blocks */
    o.momentum = 0.0f;
    opt = nb_optimizer_new(&o);
    ck_assert_int_eq(nb_optimizer_n_state(opt), 0);
    nb_optimizer_free(opt);
    o.kind = NB_OPTIM_ADAMW;
    opt = nb_optimizer_new(&o);
    ck_assert_int_eq(nb_optimizer_kind(opt), NB_OPTIM_ADAMW);
    ck_assert_int_eq(nb_optimizer_n_state(opt), 2);
    ck_assert_str_eq(nb_optimizer_state_name(opt, 0), "exp_avg");
    ck_assert_str_eq(nb_optimizer_state_name(opt, 1), "exp_avg_sq");
    nb_optimizer_free(opt);
}
END_TEST

START_TEST(test_optimizer_adamw_groups) {
    nb_optim_opts o = nb_optim_opts_default();
    o.kind = NB_OPTIM_ADAMW;
    nb_optimizer *opt = nb_optimizer_new(&o);
    int gd = nb_optimizer_add_group(opt, "decay", 1.0f, 0.5f);
    int gq = nb_optimizer_add_group(opt, "quant", 0.5f, 0.0f);
    float w = 1.0f, dw = 0.5f, q[2] = {1.0f, -1.0f}, dq[2] = {-2.0f, 3.0f};
    nb_optimizer_add_segment(opt, gq, q, dq, 2);
    nb_optimizer_add_segment(opt, gd, &w, &dw, 1);
    /* step t = 1 with lr 0.1 moves each element by lr_mult lr sign(g) (eps aside),
     * after decoupled decay: w = 1 * (1 - 0.05) - 0.1 = 0.85; q = 1 + 0.05, -1 - 0.05 */
    nb_optimizer_step(opt, 0.1f);
    expect_near(w, 0.85, "decay group");
    expect_near(q[0], 1.05, "quant group");
    expect_near(q[1], -1.05, "quant group");
    /* state in segment order: q's moments first, then w's; m = 0.1 g, v = 0.001 g^2 */
    const float *m = nb_optimizer_state(opt, 0), *v = nb_optimizer_state(opt, 1);
    expect_near(m[0], -0.2, "exp_avg q0");
    expect_near(m[1], 0.3, "exp_avg q1");
    expect_near(m[2], 0.05, "exp_avg w");
    expect_near(v[1], 0.009, "exp_avg_sq q1");
    expect_near(v[2], 2.5e-4, "exp_avg_sq w");
    /* the step count is AdamW's t: t = 2 as in the hand values above */
    dw = -0.25f;
    nb_optimizer_step(opt, 0.1f);
    expect_near(w, 0.780866299, "decay group step 2");
    nb_optimizer_free(opt);
}
END_TEST

START_TEST(test_clip_grad_norm) {
    nb_optimizer *opt = nb_optimizer_new(&(nb_optim_opts){.kind = NB_OPTIM_SGD});
    int g0 = nb_optimizer_add_group(opt, "a", 1.0f, 0.0f), g1 = nb_optimizer_add_group(opt, "b", 1.0f, 0.0f);
    float p[3] = {0}, g[3] = {3, 4, 12}; /* norm sqrt(9 + 16 + 144) = 13 across segments */
    nb_optimizer_add_segment(opt, g0, p, g, 2);
    nb_optimizer_add_segment(opt, g1, p + 2, g + 2, 1);
    ck_assert_double_eq_tol(nb_optimizer_clip_grad_norm(opt, 0.0f), 13.0, 1e-12); /* 0: measure only */
    ck_assert_double_eq_tol(nb_optimizer_clip_grad_norm(opt, 26.0f), 13.0, 1e-12);
    ck_assert_double_eq_tol(nb_optimizer_clip_grad_norm(opt, 13.0f), 13.0, 1e-12); /* not above */
    ck_assert_float_eq(g[0], 3.0f);
    ck_assert_float_eq(g[2], 12.0f);
    /* max 6.5: scale 6.5 / (13 + 1e-6) -> (1.5, 2, 6) less 1e-7 relative */
    ck_assert_double_eq_tol(nb_optimizer_clip_grad_norm(opt, 6.5f), 13.0, 1e-12);
    expect_near(g[0], 1.5 * 13 / (13 + 1e-6), "clipped g0");
    expect_near(g[1], 2.0 * 13 / (13 + 1e-6), "clipped g1");
    expect_near(g[2], 6.0 * 13 / (13 + 1e-6), "clipped g2");
    ck_assert_double_eq_tol(nb_optimizer_clip_grad_norm(opt, 0.0f), 6.5, 1e-5);
    /* a NaN gradient: the norm is NaN and nothing is scaled */
    g[1] = NAN;
    const float g0_before = g[0], g2_before = g[2];
    ck_assert(isnan(nb_optimizer_clip_grad_norm(opt, 1.0f)));
    ck_assert_float_eq(g[0], g0_before);
    ck_assert_float_eq(g[2], g2_before);
    g[1] = INFINITY;
    ck_assert(isinf(nb_optimizer_clip_grad_norm(opt, 1.0f)));
    ck_assert_float_eq(g[0], g0_before);
    nb_optimizer_free(opt);
}
END_TEST

static void expect_bad_opts(const nb_optim_opts *o, const char *msg) {
    nb_clear_error();
    nb_optimizer *opt = nb_optimizer_new(o);
    ck_assert_ptr_null(opt);
    ck_assert_str_eq(nb_last_error(), msg);
}

START_TEST(test_optimizer_bad_options) {
    nb_optim_opts o = nb_optim_opts_default();
    o.momentum = 1.5f;
    expect_bad_opts(&o, "optimizer: momentum must be in [0, 1), got 1.5");
    o.momentum = NAN;
    expect_bad_opts(&o, "optimizer: momentum must be in [0, 1), got nan");
    o = nb_optim_opts_default();
    o.dampening = -0.5f;
    expect_bad_opts(&o, "optimizer: dampening must be in [0, 1], got -0.5");
    o = nb_optim_opts_default();
    o.nesterov = 1;
    o.momentum = 0.0f;
    expect_bad_opts(&o, "optimizer: nesterov needs momentum > 0 and dampening 0, got momentum 0, dampening 0");
    o = nb_optim_opts_default();
    o.weight_decay = -1.0f;
    expect_bad_opts(&o, "optimizer: weight_decay must be >= 0, got -1");
    o = nb_optim_opts_default();
    o.kind = (nb_optim_kind)7;
    expect_bad_opts(&o, "optimizer: kind must be sgd or adamw, got 7");
    o = nb_optim_opts_default();
    o.kind = NB_OPTIM_ADAMW;
    o.momentum = 5.0f; /* SGD's option, ignored by AdamW */
    nb_optimizer *ok = nb_optimizer_new(&o);
    ck_assert_ptr_nonnull(ok);
    nb_optimizer_free(ok);
    o.beta2 = 1.0f;
    expect_bad_opts(&o, "optimizer: beta2 must be in [0, 1), got 1");
    o.beta2 = 0.999f;
    o.beta1 = -0.1f;
    expect_bad_opts(&o, "optimizer: beta1 must be in [0, 1), got -0.1");
    o.beta1 = 0.9f;
    o.eps = 0.0f;
    expect_bad_opts(&o, "optimizer: eps must be > 0, got 0");
}
END_TEST

START_TEST(test_optimizer_oom) {
    nb_optim_opts o = nb_optim_opts_default();
    o.kind = NB_OPTIM_ADAMW;
    nb_optimizer *opt = nb_optimizer_new(&o);
    float p[4] = {1, 2, 3, 4}, g[4] = {0};
    int grp = nb_optimizer_add_group(opt, "decay", 1.0f, 0.0f);
    ck_assert_int_eq(nb_optimizer_add_segment(opt, grp, p, g, 2), NB_OK);
    nb_optimizer_state(opt, 0)[1] = 7.0f;
    /* each of the segment table and the two state blocks may fail */
    for (int k = 1; k <= 3; k++) {
        nb_alloc_fail_after(k);
        ck_assert_int_eq(nb_optimizer_add_segment(opt, grp, p + 2, g + 2, 2), NB_STATUS_OOM);
        nb_alloc_fail_after(0);
        ck_assert_uint_eq(nb_optimizer_numel(opt), 2);
        ck_assert_uint_eq(nb_optimizer_group_numel(opt, grp), 2);
        ck_assert_float_eq(nb_optimizer_state(opt, 0)[1], 7.0f); /* state kept */
    }
    nb_alloc_fail_after(1);
    ck_assert_int_eq(nb_optimizer_add_group(opt, "quant", 1.0f, 0.0f), -1);
    nb_alloc_fail_after(0);
    ck_assert_int_eq(nb_optimizer_n_groups(opt), 1);
    ck_assert_int_eq(nb_optimizer_add_segment(opt, grp, p + 2, g + 2, 2), NB_OK);
    ck_assert_uint_eq(nb_optimizer_numel(opt), 4);
    ck_assert_float_eq(nb_optimizer_state(opt, 0)[1], 7.0f);
    ck_assert_float_eq(nb_optimizer_state(opt, 1)[3], 0.0f);
    nb_alloc_fail_after(1);
    ck_assert_ptr_null(nb_optimizer_new(&o));
    nb_alloc_fail_after(0);
    nb_optimizer_free(opt);
}
END_TEST

/* -------------------------------------------------------------- schedules */

static void expect_lr(const nb_schedule *s, long t, double want) {
    char what[64];
    snprintf(what, sizeof what, "%s lr at step %ld", nb_schedule_kind_name(s->kind), t);
    expect_near(nb_schedule_lr(s, t), want, what);
}

START_TEST(test_schedule_values) {
    nb_schedule s = nb_schedule_default();
    ck_assert_int_eq(nb_schedule_check(&s), NB_OK);
    ck_assert_str_eq(nb_schedule_kind_name(NB_SCHED_ONECYCLE), "onecycle");
    ck_assert_ptr_null(nb_schedule_kind_name(NB_SCHED_COUNT));
    expect_lr(&s, 0, 0.1);
    expect_lr(&s, 1000, 0.1);

    /* constant with warmup 4 from 0.25: 0.1 (0.25 + 0.75 t / 4) */
    s.warmup_steps = 4;
    s.warmup_start_factor = 0.25f;
    expect_lr(&s, 0, 0.025);
    expect_lr(&s, 2, 0.0625);
    expect_lr(&s, 3, 0.08125);
    expect_lr(&s, 4, 0.1);
    expect_lr(&s, 50, 0.1);

    /* step: 1 * 0.5^floor(t / 3) */
    s = nb_schedule_default();
    s.kind = NB_SCHED_STEP;
    s.lr = 1.0f;
    s.gamma = 0.5f;
    s.step_size = 3;
    ck_assert_int_eq(nb_schedule_check(&s), NB_OK);
    expect_lr(&s, 0, 1.0);
    expect_lr(&s, 2, 1.0);
    expect_lr(&s, 3, 0.5);
    expect_lr(&s, 5, 0.5);
    expect_lr(&s, 6, 0.25);
    expect_lr(&s, 10, 0.125);

    /* multistep {2, 5}, gamma 0.1: 1 before 2, 0.1 on [2, 5), 0.01 from 5 */
    s.kind = NB_SCHED_MULTISTEP;
    s.gamma = 0.1f;
    s.milestones[0] = 2;
    s.milestones[1] = 5;
    s.n_milestones = 2;
    ck_assert_int_eq(nb_schedule_check(&s), NB_OK);
    expect_lr(&s, 1, 1.0);
    expect_lr(&s, 2, 0.1);
    expect_lr(&s, 4, 0.1);
    expect_lr(&s, 5, 0.01);
    expect_lr(&s, 500, 0.01);
    /* with warmup 4 from 0.5 the milestone at 2 counts from the start (chained):
     * t = 1: 0.5 + 0.5 / 4 = 0.625; t = 2: (0.5 + 0.5 * 2 / 4) * 0.1 = 0.075; t = 4: 0.1 */
    s.warmup_steps = 4;
    s.warmup_start_factor = 0.5f;
    expect_lr(&s, 1, 0.625);
    expect_lr(&s, 2, 0.075);
    expect_lr(&s, 4, 0.1);
    expect_lr(&s, 5, 0.01);

    /* cosine 1 -> 0.1 over 10: 0.1 + 0.9 (1 + cos(pi t / 10)) / 2 */
    s = nb_schedule_default();
    s.kind = NB_SCHED_COSINE;
    s.lr = 1.0f;
    s.min_lr = 0.1f;
    s.total_steps = 10;
    ck_assert_int_eq(nb_schedule_check(&s), NB_OK);
    expect_lr(&s, 0, 1.0);
    expect_lr(&s, 5, 0.55);                     /* cos(pi / 2) = 0 */
    expect_lr(&s, 2, 0.1 + 0.45 * (1 + cos(M_PI / 5))); /* 0.914 */
    expect_lr(&s, 10, 0.1);
    expect_lr(&s, 15, 0.1);                     /* stays at min_lr past T */
    /* warmup 2 from 0.01, then cosine over 12 - 2 = 10 steps on t - 2 */
    s.warmup_steps = 2;
    s.total_steps = 12;
    expect_lr(&s, 0, 0.01);
    expect_lr(&s, 1, 0.505);                    /* 0.01 + 0.99 / 2 */
    expect_lr(&s, 2, 1.0);
    expect_lr(&s, 7, 0.55);
    expect_lr(&s, 12, 0.1);

    /* onecycle, lr 1, T 100, pct 0.25, div 25, final 1e4: initial 0.04, peak at
     * 0.25 * 100 - 1 = 24, min 0.04 / 1e4 = 4e-6 at 99.
     * rise half-way (t 12): 1 + (0.04 - 1) / 2 (cos(pi / 2) + 1) = 0.52;
     * fall a third (t 24 + 75 / 3 = 49): 4e-6 + (1 - 4e-6) / 2 (cos(pi / 3) + 1) = 0.750001 */
    s = nb_schedule_default();
    s.kind = NB_SCHED_ONECYCLE;
    s.lr = 1.0f;
    s.total_steps = 100;
    s.pct_start = 0.25f;
    ck_assert_int_eq(nb_schedule_check(&s), NB_OK);
    expect_lr(&s, 0, 0.04);
    expect_lr(&s, 12, 0.52);
    expect_lr(&s, 24, 1.0);
    expect_lr(&s, 49, 0.750001);
    ck_assert_msg(fabs(nb_schedule_lr(&s, 99) - 4e-6) < 1e-12, "onecycle end %.9g", (double)nb_schedule_lr(&s, 99));
    ck_assert_float_eq(nb_schedule_lr(&s, 250), nb_schedule_lr(&s, 99)); /* stays at the final lr */
}
END_TEST

static void expect_bad_schedule(const nb_schedule *s, const char *msg) {
    nb_clear_error();
    ck_assert_int_eq(nb_schedule_check(s), NB_STATUS_BAD_INPUT);
    ck_assert_str_eq(nb_last_error(), msg);
}

START_TEST(test_schedule_check) {
    nb_schedule s = nb_schedule_default();
    s.kind = NB_SCHED_COSINE;
    expect_bad_schedule(&s, "schedule: total_steps must be > 0 for cosine, got 0");
    s.total_steps = 10;
    s.warmup_steps = 10;
    expect_bad_schedule(&s, "schedule: warmup_steps (10) must be < total_steps (10) for cosine");
    s.warmup_steps = 0;
    s.min_lr = 0.5f;
    expect_bad_schedule(&s, "schedule: min_lr must be in [0, lr = 0.1], got 0.5");
    s = nb_schedule_default();
    s.lr = 0.0f;
    expect_bad_schedule(&s, "schedule: lr must be > 0, got 0");
    s.lr = 0.1f;
    s.warmup_steps = -1;
    expect_bad_schedule(&s, "schedule: warmup_steps must be >= 0, got -1");
    s.warmup_steps = 5;
    s.warmup_start_factor = 1.5f;
    expect_bad_schedule(&s, "schedule: warmup_start_factor must be in [0, 1], got 1.5");
    s = nb_schedule_default();
    s.kind = NB_SCHED_STEP;
    expect_bad_schedule(&s, "schedule: step_size must be > 0 for step, got 0");
    s.step_size = 10;
    s.gamma = 0.0f;
    expect_bad_schedule(&s, "schedule: gamma must be > 0 for step, got 0");
    s = nb_schedule_default();
    s.kind = NB_SCHED_MULTISTEP;
    expect_bad_schedule(&s, "schedule: n_milestones must be in [1, 16] for multistep, got 0");
    s.n_milestones = 3;
    s.milestones[0] = 10;
    s.milestones[1] = 30;
    s.milestones[2] = 20;
    expect_bad_schedule(&s, "schedule: milestones must be increasing and >= 0, got 20 at index 2");
    s = nb_schedule_default();
    s.kind = NB_SCHED_ONECYCLE;
    s.total_steps = 3;
    expect_bad_schedule(&s, "schedule: pct_start * total_steps must be > 1 for onecycle, got 0.3 * 3");
    s.total_steps = 100;
    s.pct_start = 1.0f;
    expect_bad_schedule(&s, "schedule: pct_start must be in (0, 1), got 1");
    s.pct_start = 0.3f;
    s.warmup_steps = 5;
    expect_bad_schedule(&s, "schedule: warmup_steps must be 0 for onecycle (it warms up by itself), got 5");
    s.warmup_steps = 0;
    s.div_factor = -1.0f;
    expect_bad_schedule(&s, "schedule: div_factor must be > 0, got -1");
    s.div_factor = 25.0f;
    s.final_div_factor = 0.0f;
    expect_bad_schedule(&s, "schedule: final_div_factor must be > 0, got 0");
    s.kind = (nb_schedule_kind)9;
    expect_bad_schedule(&s, "schedule: kind must be constant, step, multistep, cosine or onecycle, got 9");
}
END_TEST

/* ---------------------------------------------------------------- PyTorch */

static int have_torch = -1;

static int torch_available(void) {
    if (have_torch < 0) have_torch = nb_test_sh("/usr/bin/python3 -c 'import torch' 2>/dev/null", NULL, 0) == 0;
    return have_torch;
}

#define SKIP_WITHOUT_TORCH(name)                                                  \
    do {                                                                          \
        if (!torch_available()) {                                                 \
            nb_test_skip(name, "/usr/bin/python3 cannot import torch");           \
            return;                                                               \
        }                                                                         \
    } while (0)

/* The oracle script: `opt` runs 20 steps of SGD or AdamW on two parameter
 * groups from a float32 file (params, then one gradient row per step) and
 * prints the parameters after each step; `cosine` and `onecycle` print the
 * scheduler's lr before each step. */
static const char *oracle_py =
    "import sys, warnings\n"
    "import numpy as np, torch\n"
    "torch.set_num_threads(1)\n"
    "warnings.simplefilter('ignore')\n"
    "a = sys.argv[1:]\n"
    "if a[0] == 'opt':\n"
    "    kind, path, n, na, steps = a[1], a[2], int(a[3]), int(a[4]), int(a[5])\n"
    "    lr_a, wd_a, lr_b, wd_b = map(float, a[6:10])\n"
    "    x = np.fromfile(path, dtype=np.float32)\n"
    "    p = torch.from_numpy(x[:n].copy()); g = torch.from_numpy(x[n:].copy()).reshape(steps, n)\n"
    "    pa = p[:na].clone().requires_grad_(); pb = p[na:].clone().requires_grad_()\n"
    "    groups = [{'params': [pa], 'lr': lr_a, 'weight_decay': wd_a},\n"
    "              {'params': [pb], 'lr': lr_b, 'weight_decay': wd_b}]\n"
    "    if kind == 'sgd':\n"
    "        opt = torch.optim.SGD(groups, lr=lr_a, momentum=float(a[10]), nesterov=bool(int(a[11])))\n"
    "    else:\n"
    "        opt = torch.optim.AdamW(groups, lr=lr_a, betas=(float(a[10]), float(a[11])), eps=float(a[12]))\n"
    "    for s in range(steps):\n"
    "        pa.grad = g[s, :na].clone(); pb.grad = g[s, na:].clone()\n"
    "        opt.step()\n"
    "        print(' '.join('%.9g' % v for v in torch.cat([pa, pb]).detach().tolist()))\n"
    "else:\n"
    "    w = torch.zeros(1, requires_grad=True)\n"
    "    lr, T = float(a[1]), int(a[2])\n"
    "    opt = torch.optim.SGD([w], lr=lr)\n"
    "    S = torch.optim.lr_scheduler\n"
    "    if a[0] == 'cosine':\n"
    "        sch, n = S.CosineAnnealingLR(opt, T_max=T, eta_min=float(a[3])), T + 1\n"
    "    else:\n"
    "        sch, n = S.OneCycleLR(opt, max_lr=lr, total_steps=T, pct_start=float(a[3]),\n"
    "                              div_factor=float(a[4]), final_div_factor=float(a[5]),\n"
    "                              anneal_strategy='cos', three_phase=False, cycle_momentum=False), T\n"
    "    for s in range(n):\n"
    "        print('%.17g' % opt.param_groups[0]['lr'])\n"
    "        opt.step(); sch.step()\n";

static char oracle_out[1 << 16];

/* Runs the oracle with `args`; its stdout lands in oracle_out. */
static void run_oracle(const char *args) {
    static char script[512];
    snprintf(script, sizeof script, "%s/optim_oracle.py", nb_test_tmpdir());
    FILE *f = fopen(script, "w");
    ck_assert_ptr_nonnull(f);
    fputs(oracle_py, f);
    fclose(f);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s 2>&1", script, args);
    int rc = nb_test_sh(cmd, oracle_out, sizeof oracle_out);
    ck_assert_msg(rc == 0, "oracle failed (%d): %s", rc, oracle_out);
}

/* Reads n numbers from oracle_out starting at *pos. */
static void read_numbers(char **pos, double *v, int n) {
    for (int i = 0; i < n; i++) {
        char *end;
        v[i] = strtod(*pos, &end);
        ck_assert_msg(end != *pos, "oracle output ends after %d numbers: %s", i, oracle_out);
        *pos = end;
    }
}

#define OPT_N 8
#define OPT_NA 5
#define OPT_STEPS 20

/* 20 steps on two groups (decay: lr_mult 1, wd; no_decay: lr_mult 0.5, no wd),
 * compared after every step: max |nibble - torch| / max |torch| < 1e-6 (an
 * element shrunk by cancellation keeps the absolute rounding of its past). */
static void compare_optimizer(const nb_optim_opts *o, float lr, float wd, const char *extra) {
    nb_rng r;
    nb_rng_seed(&r, 90 + (uint64_t)o->kind, 0);
    float p[OPT_N], g[OPT_STEPS][OPT_N];
    for (int i = 0; i < OPT_N; i++) p[i] = nb_rng_normal(&r);
    for (int s = 0; s < OPT_STEPS; s++)
        for (int i = 0; i < OPT_N; i++) g[s][i] = nb_rng_normal(&r);
    char path[512], args[1024];
    snprintf(path, sizeof path, "%s/optim_case.f32", nb_test_tmpdir());
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fwrite(p, sizeof p, 1, f);
    fwrite(g, sizeof g, 1, f);
    fclose(f);
    const float mult_b = 0.5f;
    snprintf(args, sizeof args, "opt %s %s %d %d %d %.9g %.9g %.9g 0 %s", nb_optim_kind_name(o->kind), path, OPT_N,
             OPT_NA, OPT_STEPS, (double)lr, (double)wd, (double)(lr * mult_b), extra);
    run_oracle(args);

    nb_optimizer *opt = nb_optimizer_new(o);
    ck_assert_ptr_nonnull(opt);
    float grad[OPT_N];
    nb_optimizer_add_segment(opt, nb_optimizer_add_group(opt, "decay", 1.0f, wd), p, grad, OPT_NA);
    nb_optimizer_add_segment(opt, nb_optimizer_add_group(opt, "no_decay", mult_b, 0.0f), p + OPT_NA,
                             grad + OPT_NA, OPT_N - OPT_NA);
    char *pos = oracle_out;
    for (int s = 0; s < OPT_STEPS; s++) {
        memcpy(grad, g[s], sizeof grad);
        nb_optimizer_step(opt, lr);
        double ref[OPT_N], scale = 0, diff = 0;
        int worst = 0;
        read_numbers(&pos, ref, OPT_N);
        for (int i = 0; i < OPT_N; i++) {
            scale = fmax(scale, fabs(ref[i]));
            if (fabs(p[i] - ref[i]) > diff) diff = fabs(p[worst = i] - ref[i]);
        }
        ck_assert_msg(diff < 1e-6 * scale, "%s step %d: max |nibble - torch| / max |torch| = %.3g (element %d: nibble %.9g, torch %.9g)",
                      nb_optim_kind_name(o->kind), s + 1, diff / scale, worst, (double)p[worst], ref[worst]);
    }
    nb_optimizer_free(opt);
}

START_TEST(test_sgd_vs_torch) {
    SKIP_WITHOUT_TORCH("sgd vs torch");
    nb_optim_opts o = nb_optim_opts_default();
    o.momentum = 0.9f;
    o.nesterov = 1;
    compare_optimizer(&o, 0.05f, 0.05f, "0.9 1"); /* wd large enough to show */
    o.nesterov = 0;
    compare_optimizer(&o, 0.05f, 0.01f, "0.9 0");
}
END_TEST

START_TEST(test_adamw_vs_torch) {
    SKIP_WITHOUT_TORCH("adamw vs torch");
    nb_optim_opts o = nb_optim_opts_default();
    o.kind = NB_OPTIM_ADAMW;
    o.beta1 = 0.8f;
    o.beta2 = 0.99f;
    o.eps = 1e-6f;
    char extra[128];
    snprintf(extra, sizeof extra, "%.9g %.9g %.9g", (double)o.beta1, (double)o.beta2, (double)o.eps);
    compare_optimizer(&o, 0.01f, 0.1f, extra);
}
END_TEST

/* The lr at every step up to T against PyTorch: within 1e-6 of the peak lr
 * (PyTorch's CosineAnnealingLR is recursive, so near 0 only absolutely). */
static void compare_schedule(const nb_schedule *s, long n, const char *args) {
    run_oracle(args);
    char *pos = oracle_out;
    for (long t = 0; t < n; t++) {
        double ref;
        read_numbers(&pos, &ref, 1);
        const double got = nb_schedule_lr(s, t);
        ck_assert_msg(fabs(got - ref) <= 1e-6 * (double)s->lr, "%s step %ld: nibble %.9g, torch %.9g",
                      nb_schedule_kind_name(s->kind), t, got, ref);
    }
}

START_TEST(test_schedules_vs_torch) {
    SKIP_WITHOUT_TORCH("schedules vs torch");
    char args[512];
    nb_schedule s = nb_schedule_default();
    s.kind = NB_SCHED_COSINE;
    s.lr = 0.1f;
    s.min_lr = 0.001f;
    s.total_steps = 37;
    snprintf(args, sizeof args, "cosine %.9g %ld %.9g", (double)s.lr, s.total_steps, (double)s.min_lr);
    compare_schedule(&s, s.total_steps + 1, args);

    s = nb_schedule_default();
    s.kind = NB_SCHED_ONECYCLE;
    s.lr = 0.2f;
    s.total_steps = 53;
    snprintf(args, sizeof args, "onecycle %.9g %ld %.9g %.9g %.9g", (double)s.lr, s.total_steps,
             (double)s.pct_start, (double)s.div_factor, (double)s.final_div_factor);
    compare_schedule(&s, s.total_steps, args);
    /* a fractional peak (0.3 * 53 - 1 = 14.9) was covered; an integral one too */
    s.pct_start = 0.25f;
    s.total_steps = 40;
    snprintf(args, sizeof args, "onecycle %.9g %ld %.9g %.9g %.9g", (double)s.lr, s.total_steps,
             (double)s.pct_start, (double)s.div_factor, (double)s.final_div_factor);
    compare_schedule(&s, s.total_steps, args);
}
END_TEST

static Suite *optim_suite(void) {
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("optim");
    tcase_add_test(tc, test_sgd_hand_values);
    tcase_add_test(tc, test_adamw_hand_values);
    tcase_add_test(tc, test_updates_threaded_match_scalar);
    tcase_add_test(tc, test_optimizer_groups_and_layout);
    tcase_add_test(tc, test_optimizer_adamw_groups);
    tcase_add_test(tc, test_clip_grad_norm);
    tcase_add_test(tc, test_optimizer_bad_options);
    tcase_add_test(tc, test_optimizer_oom);
    tcase_add_test(tc, test_schedule_values);
    tcase_add_test(tc, test_schedule_check);
    suite_add_tcase(s, tc);
    TCase *tt = tcase_create("torch");
    tcase_set_timeout(tt, 120);
    tcase_add_test(tt, test_sgd_vs_torch);
    tcase_add_test(tt, test_adamw_vs_torch);
    tcase_add_test(tt, test_schedules_vs_torch);
    suite_add_tcase(s, tt);
    return s;
}

int main(void) { return nb_test_run(optim_suite()); }
