/* Learned quantizers (quant/lsq.c, ALGORITHMS.md §4): LSQ, LSQ+ and PACT
 * forward values and gradients against hand-computed cases (inside the
 * range, below, above, exactly on an end, rounding ties), per tensor and per
 * channel, on the tape; LSQ's initial steps from known tensors; steps kept
 * positive; a NaN step named; the policy's refusals. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nb_test.h"

static void expect_near(const float *got, const float *want, int n, double tol, const char *what) {
    for (int i = 0; i < n; i++)
        ck_assert_msg(fabs((double)got[i] - (double)want[i]) <= tol, "%s[%d]: got %.9g, want %.9g", what, i,
                      (double)got[i], (double)want[i]);
}

static nb_tensor *vec(const float *v, int n, int requires_grad) {
    nb_tensor *t = nb_tensor_new(1, (int[]){n});
    memcpy(t->data, v, sizeof(float) * (size_t)n);
    t->requires_grad = (uint8_t)requires_grad;
    return t;
}

/* A trained parameter: a long-lived gradient like the model's. */
static nb_tensor *param(const float *v, int n, float *grad) {
    nb_tensor *t = vec(v, n, 1);
    memset(grad, 0, sizeof(float) * (size_t)n);
    t->grad = grad;
    t->is_param = 1;
    return t;
}

static void free_leaf(nb_tensor *t) {
    if (t && t->is_param) t->grad = NULL; /* not the tensor's to free */
    nb_tensor_free(t);
}

/* One forward and backward of the op on the tape: y, dx, dstep, doffset. */
typedef struct {
    float y[16], dx[16], ds[4], db[4];
} lsq_result;

static lsq_result run_op(nb_lsq_kind kind, const nb_fq_layout *L, const float *x, const float *dy, const float *step,
                         const float *offset, int qmin, int qmax, float g) {
    const int n = (int)((size_t)L->rows * L->K), ns = (int)nb_fq_layout_scales(L);
    lsq_result r;
    memset(&r, 0, sizeof r);
    nb_tape *t = nb_tape_new();
    nb_tensor *xt = vec(x, n, 1), *st = param(step, ns, r.ds), *bt = offset ? param(offset, ns, r.db) : NULL;
    const nb_lsq_args a = {kind, *L, st, bt, qmin, qmax, g};
    nb_tensor *y = nb_lsq(t, xt, &a);
    ck_assert(y->requires_grad);
    memcpy(r.y, y->data, sizeof(float) * (size_t)n);
    ck_assert_int_eq(nb_backward_seed(t, y, dy), NB_OK);
    memcpy(r.dx, xt->grad, sizeof(float) * (size_t)n);
    nb_tape_reset(t);
    xt->grad = NULL;
    nb_tensor_free(xt);
    free_leaf(st);
    free_leaf(bt);
    nb_tape_free(t);
    return r;
}

START_TEST(test_lsq_per_tensor) {
    /* s = 0.5, 4-bit signed [-8, 7], g = 0.25. v = x / s:
     *   0.6 (round 1, term 0.4), 0.5 (tie: round 0, term -0.5), 1.5 (tie:
     *   round 2, term 0.5), -10 (below: -8), 8 (above: 7), 7 (on the upper
     *   end: inside, term 0), -8 (on the lower end: term 0), -0.5 (tie:
     *   round -0, term 0.5) */
    const float x[8] = {0.3f, 0.25f, 0.75f, -5.0f, 4.0f, 3.5f, -4.0f, -0.25f};
    const float dy[8] = {1, 2, 1, 1, 1, 3, 2, 1};
    const nb_fq_layout L = {1, 8, 8};
    const float s = 0.5f;
    lsq_result r = run_op(NB_LSQ_LSQ, &L, x, dy, &s, NULL, -8, 7, 0.25f);
    expect_near(r.y, (const float[]){0.5f, 0, 1, -4, 3.5f, 3.5f, -4, 0}, 8, 0.0, "y");
    expect_near(r.dx, (const float[]){1, 2, 1, 0, 0, 3, 2, 1}, 8, 0.0, "dx");
    /* sum dy * term = 0.4 - 1 + 0.5 - 8 + 7 + 0 + 0 + 0.5 = -0.6; g = 0.25 */
    expect_near(r.ds, (const float[]){-0.15f}, 1, 1e-7, "ds");

    /* the kernel alone, accumulating into existing gradients */
    float ds[1] = {1.0f}, dx[8];
    nb_tensor st;
    nb_tensor_wrap(&st, (float *)&s, 1, (int[]){1});
    const nb_lsq_args a = {NB_LSQ_LSQ, L, &st, NULL, -8, 7, 0.25f};
    for (int i = 0; i < 8; i++) dx[i] = 1.0f;
    nb_lsq_backward(&a, x, dy, dx, 0, ds, NULL);
    expect_near(dx, (const float[]){2, 3, 2, 1, 1, 4, 3, 2}, 8, 0.0, "dx accumulated");
    expect_near(ds, (const float[]){0.85f}, 1, 1e-7, "ds accumulated");
}
END_TEST

START_TEST(test_lsq_per_channel) {
    /* rows of 4 with s = 0.5 and 0.25, g = 0.5:
     * row 0: v = 0.6, 8 (above), -10 (below), 0.5 (tie) -> 0.4 + 7 - 8 - 0.5 = -1.1
     * row 1: v = 1.2, 0.5 (tie), 8 (above), -12 (below) -> -0.2 - 0.5 + 7 - 8 = -1.7 */
    const float x[8] = {0.3f, 4.0f, -5.0f, 0.25f, 0.3f, 0.125f, 2.0f, -3.0f};
    const float dy[8] = {1, 1, 1, 1, 1, 1, 1, 1}, s[2] = {0.5f, 0.25f};
    const nb_fq_layout L = {2, 4, 4};
    lsq_result r = run_op(NB_LSQ_LSQ, &L, x, dy, s, NULL, -8, 7, 0.5f);
    expect_near(r.y, (const float[]){0.5f, 3.5f, -4, 0, 0.25f, 0, 1.75f, -2}, 8, 1e-7, "y");
    expect_near(r.dx, (const float[]){1, 0, 0, 1, 1, 1, 0, 0}, 8, 0.0, "dx");
    expect_near(r.ds, (const float[]){-0.55f, -0.85f}, 2, 1e-6, "ds");
}
END_TEST

START_TEST(test_lsq_plus) {
    /* s = 0.5, beta = -1, [0, 15], g = 1: v = (x + 1) / 0.5 = -0.4 (below),
     * 2 (inside), 16 (above), 2.6 (round 3, term 0.4) */
    const float x[4] = {-1.2f, 0.0f, 7.0f, 0.3f}, dy[4] = {1, 1, 1, 1}, s = 0.5f, beta = -1.0f;
    const nb_fq_layout L = {1, 4, 4};
    lsq_result r = run_op(NB_LSQ_PLUS, &L, x, dy, &s, &beta, 0, 15, 1.0f);
    expect_near(r.y, (const float[]){-1, 0, 6.5f, 0.5f}, 4, 1e-7, "y");
    expect_near(r.dx, (const float[]){0, 1, 0, 1}, 4, 0.0, "dx");
    expect_near(r.ds, (const float[]){15.4f}, 1, 1e-5, "ds"); /* 0 + 0 + 15 + 0.4 */
    expect_near(r.db, (const float[]){2.0f}, 1, 0.0, "dbeta"); /* the two outside */
}
END_TEST

START_TEST(test_pact) {
    /* unsigned: alpha = 3, [0, 15], s = 0.2: x = 4 (clipped at alpha: dalpha
     * 1), -1 (clipped at 0: 0), 1 and 2.9 (inside: 0) */
    const float x[4] = {4.0f, -1.0f, 1.0f, 2.9f}, dy[4] = {1, 1, 1, 1}, alpha = 3.0f;
    const nb_fq_layout L = {1, 4, 4};
    lsq_result r = run_op(NB_LSQ_PACT, &L, x, dy, &alpha, NULL, 0, 15, 1.0f);
    expect_near(r.y, (const float[]){3, 0, 1, 2.8f}, 4, 1e-6, "y");
    expect_near(r.dx, (const float[]){0, 0, 1, 1}, 4, 0.0, "dx");
    expect_near(r.ds, (const float[]){1.0f}, 1, 0.0, "dalpha");
    /* signed: alpha = 2, [-8, 7]: below -> qmin / qmax = -8/7, above -> 1 */
    const float xs[3] = {-5.0f, 3.0f, 0.5f}, dys[3] = {1, 1, 1}, a2 = 2.0f;
    const nb_fq_layout L3 = {1, 3, 3};
    r = run_op(NB_LSQ_PACT, &L3, xs, dys, &a2, NULL, -8, 7, 1.0f);
    expect_near(r.y, (const float[]){-16.0f / 7.0f, 2, 4.0f / 7.0f}, 3, 1e-6, "y signed");
    expect_near(r.dx, (const float[]){0, 0, 1}, 3, 0.0, "dx signed");
    expect_near(r.ds, (const float[]){1.0f - 8.0f / 7.0f}, 1, 1e-6, "dalpha signed");
}
END_TEST

/* A big per-tensor activation takes the threaded chunked path; its sums do
 * not depend on the thread count. */
START_TEST(test_lsq_threads) {
    const int n = 300000;
    float *x = malloc(sizeof(float) * (size_t)n), *dy = malloc(sizeof(float) * (size_t)n);
    nb_rng rng;
    nb_rng_seed(&rng, 3, 0);
    for (int i = 0; i < n; i++) {
        x[i] = 3.0f * nb_rng_normal(&rng);
        dy[i] = nb_rng_normal(&rng);
    }
    float s = 0.3f, ds[2] = {0, 0};
    nb_tensor st;
    nb_tensor_wrap(&st, &s, 1, (int[]){1});
    const nb_lsq_args a = {NB_LSQ_LSQ, {1, (size_t)n, (size_t)n}, &st, NULL, -8, 7, 0.01f};
    double want = 0.0;
    for (int i = 0; i < n; i++) {
        const double v = (double)(x[i] / s);
        const double term = v < -8 ? -8 : v > 7 ? 7 : (double)nb_fq_round((float)v) - (double)(float)v;
        want += (double)dy[i] * term;
    }
    const int had = nb_get_threads();
    nb_set_threads(1);
    nb_lsq_backward(&a, x, dy, NULL, 0, &ds[0], NULL);
    nb_set_threads(2);
    nb_lsq_backward(&a, x, dy, NULL, 0, &ds[1], NULL);
    nb_set_threads(had);
    ck_assert_msg(ds[0] == ds[1], "1 thread %.9g, 2 threads %.9g", (double)ds[0], (double)ds[1]);
    ck_assert_msg(fabs((double)ds[0] - 0.01 * want) <= 1e-5 * fabs(0.01 * want) + 1e-6, "ds %.9g want %.9g",
                  (double)ds[0], 0.01 * want);
    free(x);
    free(dy);
}
END_TEST

static void lsq_policy(nb_quant_policy *p, const char *wg, const char *act) {
    nb_quant_policy_default(p);
    strcpy(p->weights.method, "lsq");
    strcpy(p->weights.granularity, wg);
    p->weights.bits = 4;
    strcpy(p->activations.method, act);
    p->activations.bits = 4;
}

/* One calibration forward of the batch x (N, 3, 32, 32). */
static void calibrate(nb_model *m, nb_tensor *x) {
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_model_set_pass(m, NB_PASS_CALIBRATE);
    nb_model_forward(m, t, x);
    nb_tape_reset(t);
    nb_tape_free(t);
}

START_TEST(test_lsq_init) {
    for (int pc = 0; pc < 2; pc++) {
        nb_model *m = nb_test_smallcnn();
        nb_quant_policy p;
        lsq_policy(&p, pc ? "channel" : "tensor", "lsq");
        ck_assert_msg(nb_quant_attach(m, &p) == NB_OK, "%s", nb_last_error());
        nb_rng r;
        nb_rng_seed(&r, 5, 0);
        nb_tensor *x = nb_tensor_new(4, (int[]){4, 3, 32, 32}), *x2 = nb_tensor_new(4, (int[]){4, 3, 32, 32});
        nb_tensor_fill_normal(x, &r, 0.0f, 1.0f);
        nb_tensor_fill_normal(x2, &r, 0.0f, 5.0f);
        calibrate(m, x);
        calibrate(m, x2); /* [paper]: the first batch only */
        ck_assert_msg(nb_quant_calibrate_finish(m) == NB_OK, "%s", nb_last_error());
        /* the image input of the first conv (8 bits signed: Qp = 127) */
        nb_quantizer *qi = nb_test_quantizer(m, "features.0.conv.input");
        double sum = 0.0;
        for (size_t i = 0; i < x->numel; i++) sum += fabs((double)x->data[i]);
        const double want_in = 2.0 * (sum / (double)x->numel) / sqrt(127.0);
        ck_assert_msg(fabs((double)qi->scale[0] - want_in) <= 1e-6 * want_in, "input step %.9g, want %.9g",
                      (double)qi->scale[0], want_in);
        ck_assert(qi->step->data == qi->scale && qi->ready[0] == 1.0f);
        /* a 4-bit weight: Qp = 7, per tensor or per output channel */
        nb_quantizer *qw = nb_test_quantizer(m, "features.1.conv.weight");
        const nb_tensor *w = nb_module_weight(qw->mod);
        const int rows = pc ? w->shape[0] : 1;
        const size_t K = w->numel / (size_t)rows;
        ck_assert_int_eq(qw->n_scales, rows);
        for (int c = 0; c < rows; c++) {
            double a = 0.0;
            for (size_t k = 0; k < K; k++) a += fabs((double)w->data[(size_t)c * K + k]);
            const double want = 2.0 * (a / (double)K) / sqrt(7.0);
            ck_assert_msg(fabs((double)qw->scale[c] - want) <= 1e-6 * want, "weight step[%d] %.9g, want %.9g", c,
                          (double)qw->scale[c], want);
        }
        /* [paper] gradient scale 1/sqrt(N Qp), N the weights per step */
        ck_assert_msg(fabs((double)qw->grad_scale - 1.0 / sqrt((double)K * 7.0)) <= 1e-7, "g %.9g",
                      (double)qw->grad_scale);
        nb_tensor_free(x);
        nb_tensor_free(x2);
        nb_model_free(m);
    }
}
END_TEST

/* LSQ+ starts from the MSE range of the first batch (β = lo, s = (hi -
 * lo) / qmax); PACT from the MSE clipping level. */
START_TEST(test_lsq_plus_pact_init) {
    const char *acts[2] = {"lsq+", "pact"};
    for (int k = 0; k < 2; k++) {
        nb_model *m = nb_test_smallcnn();
        nb_quant_policy p;
        lsq_policy(&p, "tensor", acts[k]);
        ck_assert_msg(nb_quant_attach(m, &p) == NB_OK, "%s", nb_last_error());
        nb_rng r;
        nb_rng_seed(&r, 9, 0);
        nb_tensor *x = nb_tensor_new(4, (int[]){2, 3, 32, 32});
        nb_tensor_fill_normal(x, &r, 0.5f, 1.0f);
        calibrate(m, x);
        ck_assert_msg(nb_quant_calibrate_finish(m) == NB_OK, "%s", nb_last_error());
        nb_quantizer *q = nb_test_quantizer(m, "features.0.conv.input");
        nb_observer_opts o = nb_observer_opts_default(NB_OBS_MSE);
        float lo, hi;
        ck_assert_int_eq(nb_observe_range(&o, &q->spec, x->data, x->numel, &lo, &hi), NB_OK);
        if (k == 0) {
            ck_assert(q->qmin == 0 && q->qmax == 255 && q->offset); /* asymmetric 8-bit first layer */
            ck_assert_msg(q->offset->data[0] == lo && q->scale[0] == (hi - lo) / 255.0f, "beta %g s %g (lo %g hi %g)",
                          (double)q->offset->data[0], (double)q->scale[0], (double)lo, (double)hi);
        } else {
            ck_assert(q->qmin == -128 && q->qmax == 127 && !q->offset);
            ck_assert_msg(q->step->data[0] == fmaxf(-lo, hi) && q->scale[0] == q->step->data[0] / 127.0f,
                          "alpha %g scale %g", (double)q->step->data[0], (double)q->scale[0]);
        }
        nb_tensor_free(x);
        nb_model_free(m);
    }
}
END_TEST

/* Steps stay >= quant.min_step whatever the update did; a NaN step is an
 * error naming the quantizer; the learned parameters are in the ext's
 * param block with their gradients. */
START_TEST(test_lsq_after_step) {
    nb_model *m = nb_test_smallcnn();
    nb_quant_policy p;
    lsq_policy(&p, "channel", "pact");
    ck_assert_msg(nb_quant_attach(m, &p) == NB_OK, "%s", nb_last_error());
    ck_assert_ptr_nonnull(m->quant->after_step);
    nb_quantizer *qw = nb_test_quantizer(m, "features.1.conv.weight"), *qa = nb_test_quantizer(m, "features.1.conv.input");
    ck_assert(qw->step->grad >= m->quant->param_grad && qw->step->grad < m->quant->param_grad + m->quant->n_param_floats);
    /* a large negative step (an SGD update with a large positive gradient) */
    qw->step->data[0] = 0.01f - 0.1f * 1e4f;
    qa->step->data[0] = -3.0f;
    ck_assert_int_eq(m->quant->after_step(m->quant->owner), NB_OK);
    ck_assert(qw->step->data[0] == 1e-8f && qw->scale[0] == 1e-8f);
    ck_assert(qa->step->data[0] == 1e-8f * 15.0f && qa->scale[0] == qa->step->data[0] / 15.0f);
    qw->step->data[3] = NAN;
    ck_assert_int_eq(m->quant->after_step(m->quant->owner), NB_STATUS_NUMERIC);
    ck_assert_msg(strstr(nb_last_error(), "step size of quantizer features.1.conv.weight (/quant/features.1.conv.weight/scale[3]) is nan"),
                  "%s", nb_last_error());
    qw->step->data[3] = 0.1f;
    qa->step->data[0] = INFINITY;
    ck_assert_int_eq(m->quant->after_step(m->quant->owner), NB_STATUS_NUMERIC);
    ck_assert_msg(strstr(nb_last_error(), "clipping level of quantizer features.1.conv.input"), "%s", nb_last_error());
    nb_model_free(m);
}
END_TEST

START_TEST(test_lsq_policy_errors) {
    struct {
        const char *wm, *am;
        int wsym, asym;
        const char *msg;
    } cases[] = {
        {"lsq+", "lsq", 1, 1, "method \"lsq+\" is for activations only"},
        {"pact", "lsq", 1, 1, "method \"pact\" is for activations only"},
        {"lsq", "lsq", 1, 0, "method \"lsq\" is symmetric"},
        {"lsq", "pact", 1, 0, "method \"pact\" is symmetric"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nb_model *m = nb_test_smallcnn();
        nb_quant_policy p;
        lsq_policy(&p, "tensor", cases[i].am);
        strcpy(p.weights.method, cases[i].wm);
        p.weights.symmetric = cases[i].wsym;
        p.activations.symmetric = cases[i].asym;
        ck_assert_int_eq(nb_quant_attach(m, &p), NB_STATUS_BAD_INPUT);
        ck_assert_msg(strstr(nb_last_error(), cases[i].msg), "case %zu: %s", i, nb_last_error());
        ck_assert_ptr_null(m->quant);
        nb_model_free(m);
    }
    /* lsq+ activations take the asymmetric [0, 2^b - 1] grid whatever symmetric says */
    nb_model *m = nb_test_smallcnn();
    nb_quant_policy p;
    lsq_policy(&p, "tensor", "lsq+");
    ck_assert_int_eq(nb_quant_attach(m, &p), NB_OK);
    nb_quantizer *q = nb_test_quantizer(m, "features.1.conv.input");
    ck_assert(q->qmin == 0 && q->qmax == 15 && !q->spec.symmetric);
    ck_assert(nb_quant_learned(m) && !nb_quant_needs_observers(m));
    nb_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("lsq");
    TCase *tc = tcase_create("lsq");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_lsq_per_tensor);
    tcase_add_test(tc, test_lsq_per_channel);
    tcase_add_test(tc, test_lsq_plus);
    tcase_add_test(tc, test_pact);
    tcase_add_test(tc, test_lsq_threads);
    tcase_add_test(tc, test_lsq_init);
    tcase_add_test(tc, test_lsq_plus_pact_init);
    tcase_add_test(tc, test_lsq_after_step);
    tcase_add_test(tc, test_lsq_policy_errors);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
