/* A fake-quantized ResNet-20 against the same network built from PyTorch's
 * own fake-quantization ops (torch.fake_quantize_per_tensor_affine on every
 * conv/linear input, torch.fake_quantize_per_channel_affine or
 * _per_tensor_affine on every weight), where /usr/bin/python3 has torch,
 * numpy and h5py (skipped cleanly otherwise). The LSQ cases quantize every
 * weight and input with LSQ instead (4 bits, the first conv and the fc at 8;
 * per-tensor or per-channel weight steps), PyTorch's side being the
 * detach-trick formula of tests/torch_lsq_oracle.py with a leaf tensor per
 * step, started from nibble's calibrated steps, and the documented gradient
 * scale g; the step sizes' gradients are compared too.
 *
 * Per case and draw: the model is built, its batchnorm parameters and
 * running statistics randomised, the policy attached and the activation
 * scales calibrated (NB_PASS_CALIBRATE on two random batches without
 * gradients, nb_quant_calibrate_finish); then one step runs in the case's
 * pass: forward, cross entropy on random labels, backward with the input
 * requiring grad. The case file holds the batch, the model's state before
 * the step, every quantizer's scale / zero point / integer range as the
 * step used them (the weight scales as its forward recomputed them) and
 * what every quantizer received and returned in the step.
 * tests/torch_quant_oracle.py (run once for all cases: importing torch is
 * the slow part) builds the network in PyTorch, checks the integer codes
 * quantizer by quantizer and computes the step.
 *
 * Ties. nibble computes rint(x / s), PyTorch rint(x * (1 / s)) (LSQ: x /
 * s', s' = grad_scale(s, g), whose forward value can be an ulp off s), and the
 * activations reach a quantizer through float32 sums taken in different
 * orders, so a value within float rounding of a step boundary k + 1/2 may
 * take a different code in each program, after which the two networks see
 * different numbers. With ~10^5 activations and ~3·10^5 weights some value
 * is always within ~1e-5 steps of a boundary, so no draw would pass a
 * minimum-margin rule; the oracle compares the codes themselves instead. A
 * code that differs within float rounding of a boundary is legitimate (a
 * "flip") and makes that draw unusable; any other difference fails the
 * test, naming the quantizer and the element. Each case writes TRIES
 * independent draws (seeds seed, seed + 1, ...) and is compared end to end
 * on the first draw where every quantized tensor holds identical integers
 * in both programs and no ReLU input is within 3e-6 of 0 (its backward
 * mask could flip). No such draw among TRIES fails the test (about two
 * draws in three are clean: it means the seeds need changing, or that
 * something makes codes differ where they should not).
 *
 * LSQ's mask is on the unrounded x / s (inclusive ends), and its step-size
 * gradient's term round(x/s) - x/s jumps by 1 at a tie: a flip there (or at
 * an end) moves the step's gradient by dy (qmax·dy) of that element, so only
 * a clean draw, where every code and mask agrees, compares the step sizes.
 *
 * Tolerances on the clean draw: max |nibble - torch| / max |torch| per
 * tensor below 1e-4 for the logits, dx and every parameter gradient, 1e-5
 * for the loss and the batchnorm buffers after the step (observed: <= 2e-6).
 * A step size's gradient is a sum g·Σ dy·term that cancels (its value can
 * be 1e-3 of g·Σ|dy·term|, where float32 summation in either program leaves
 * errors ~1e-7 of the latter): |nibble - torch| below 1e-4 of g·Σ|dy·term|
 * (the oracle's, per step; observed <= 1.2e-6, against up to 4e-4 of the
 * value itself).
 * The images are 8x8: the network is the same, and the spatial size only
 * sets how many activations there are and so how often a draw has a flip. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nb_test.h"
#include "nb_test_h5.h"

#define TRIES 6
#define BATCH 8
#define SIZE 8
#define CLASSES 10
#define CALIB_BATCHES 2

/* ------------------------------------------------------------- the cases */

typedef struct {
    const char *name;
    const char *method; /* "uniform" | "lsq" (weights and activations) */
    int wbits, abits;  /* first conv and fc: 8 bits (the policy's default) */
    const char *wgran; /* "channel" | "tensor" */
    int wsym, asym;    /* symmetric weights / activations */
    nb_pass pass;
    uint64_t seed;
} qcase;

static const qcase cases[] = {
    /* LSQ-style W4A4: per-channel symmetric weights, symmetric activations
     * (signed 8-bit image input, unsigned 4-bit after the ReLUs) */
    {"W4A4 per-channel symmetric, train", "uniform", 4, 4, "channel", 1, 1, NB_PASS_TRAIN, 1000},
    /* per-tensor asymmetric weights (a zero point on every layer) and
     * asymmetric activations (the image input's zero point is not 0) */
    {"W4A4 per-tensor asymmetric, train", "uniform", 4, 4, "tensor", 0, 0, NB_PASS_TRAIN, 2000},
    /* per-channel asymmetric 3-bit weights (a zero point per channel), 8-bit
     * activations, batchnorm on running statistics */
    {"W3A8 per-channel asymmetric, eval", "uniform", 3, 8, "channel", 0, 1, NB_PASS_EVAL, 3000},
    /* LSQ W4A4 (first conv and fc at 8 bits): learned steps from the
     * calibration (weights: 2·mean|w|/sqrt(Qp), inputs: the same of the
     * first batch), per-tensor and per-channel weights */
    {"LSQ W4A4 per-tensor weights, train", "lsq", 4, 4, "tensor", 1, 1, NB_PASS_TRAIN, 4000},
    {"LSQ W4A4 per-channel weights, train", "lsq", 4, 4, "channel", 1, 1, NB_PASS_TRAIN, 5000},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

/* ------------------------------------------ what each quantizer saw */

/* Wraps a quantizer's hook: copies its input and output in the step's
 * forward (TRAIN or EVAL; calibration passes straight through). */
typedef struct {
    nb_hook inner;
    float *in, *out;
    int ndim, shape[4];
    size_t n;
} capture;

static nb_tensor *capture_hook(void *state, nb_tape *t, nb_tensor *x, nb_pass pass) {
    capture *c = state;
    nb_tensor *y = c->inner.fn(c->inner.state, t, x, pass);
    if (pass != NB_PASS_TRAIN && pass != NB_PASS_EVAL) return y;
    ck_assert_ptr_null(c->in); /* one step per draw */
    c->n = x->numel;
    c->ndim = x->ndim;
    memcpy(c->shape, x->shape, sizeof(int) * (size_t)x->ndim);
    c->in = malloc(sizeof(float) * c->n);
    c->out = malloc(sizeof(float) * c->n);
    ck_assert(c->in && c->out);
    memcpy(c->in, x->data, sizeof(float) * c->n);
    memcpy(c->out, y->data, sizeof(float) * c->n);
    return y;
}

/* One draw after its step: the model (gradients in it), the batch and the
 * tape holding logits, loss and dx. */
typedef struct {
    nb_model *m;
    nb_tensor *x, *logits, *loss;
    nb_tape *t;
} qtry;

static nb_tensor *randn(nb_rng *r, int requires_grad) {
    nb_tensor *t = nb_tensor_new(4, (int[]){BATCH, 3, SIZE, SIZE});
    nb_tensor_fill_normal(t, r, 0.0f, 1.0f);
    t->requires_grad = requires_grad;
    return t;
}

/* Builds, calibrates and steps draw k of case c; writes it as
 * case<ci>/try<k>/ of f. */
static void build_try(const qcase *c, int ci, int k, hid_t f, qtry *tr) {
    char name[256], pre[32];
    snprintf(pre, sizeof pre, "case%d/try%d", ci, k);
    nb_rng r;
    nb_rng_seed(&r, c->seed + (uint64_t)k, 0);
    nb_model_opts mo = nb_model_opts_default();
    mo.input_size = SIZE;
    mo.num_classes = CLASSES;
    nb_model *m = nb_model_build("resnet20", &mo, &r);
    ck_assert_ptr_nonnull(m);
    /* non-trivial batchnorm parameters and running statistics */
    for (int i = 0; i < m->n_entries; i++) {
        nb_entry *e = &m->entries[i];
        if (!strstr(e->name, "bn")) continue;
        if (strstr(e->name, "running_var") || strstr(e->name, ".weight"))
            nb_tensor_fill_uniform(e->t, &r, 0.5f, 1.5f);
        else if (!strstr(e->name, "num_batches"))
            nb_tensor_fill_uniform(e->t, &r, -0.2f, 0.2f);
    }

    nb_quant_policy p;
    nb_quant_policy_default(&p);
    strcpy(p.weights.method, c->method);
    p.weights.bits = c->wbits;
    strcpy(p.weights.granularity, c->wgran);
    p.weights.symmetric = c->wsym;
    strcpy(p.activations.method, c->method);
    p.activations.bits = c->abits;
    p.activations.symmetric = c->asym;
    ck_assert_msg(nb_quant_attach(m, &p) == NB_OK, "attach: %s", nb_last_error());
    int nq;
    nb_quantizer *qs = nb_quant_list(m, &nq);
    ck_assert_int_eq(nq, 2 * 20); /* 19 convs and fc: weight and input each */
    capture *caps = calloc((size_t)nq, sizeof(capture));
    ck_assert_ptr_nonnull(caps);
    for (int i = 0; i < nq; i++) {
        ck_assert_str_eq(nb_qmethod_name(qs[i].method), c->method);
        nb_hook *h = qs[i].is_weight ? &qs[i].mod->weight_hook : &qs[i].mod->input_hook;
        caps[i].inner = *h;
        *h = (nb_hook){.fn = capture_hook, .state = &caps[i]}; /* not fusable: every input passes here */
    }

    /* calibration: activation scales from random batches, no gradients */
    nb_tape *ct = nb_tape_new();
    nb_tape_set_grad(ct, 0);
    nb_model_set_pass(m, NB_PASS_CALIBRATE);
    for (int b = 0; b < CALIB_BATCHES; b++) {
        nb_tensor *xb = randn(&r, 0);
        nb_model_forward(m, ct, xb);
        nb_tape_reset(ct);
        nb_tensor_free(xb);
    }
    nb_tape_free(ct);
    ck_assert_msg(nb_quant_calibrate_finish(m) == NB_OK, "calibrate: %s", nb_last_error());

    /* the model before the step, the batch */
    for (int i = 0; i < m->n_entries; i++) {
        snprintf(name, sizeof name, "%s/model/%s", pre, m->entries[i].name);
        h5_write_tensor(f, name, m->entries[i].t);
    }
    tr->x = randn(&r, 1);
    int32_t labels[BATCH];
    float fl[BATCH];
    for (int i = 0; i < BATCH; i++) fl[i] = (float)(labels[i] = (int32_t)nb_rng_below(&r, CLASSES));
    snprintf(name, sizeof name, "%s/x", pre);
    h5_write_tensor(f, name, tr->x);
    snprintf(name, sizeof name, "%s/labels", pre);
    h5_write(f, name, fl, 1, (int[]){BATCH});

    /* the step */
    nb_model_set_pass(m, c->pass);
    nb_model_zero_grad(m);
    tr->t = nb_tape_new();
    tr->logits = nb_model_forward(m, tr->t, tr->x);
    tr->loss = nb_cross_entropy(tr->t, tr->logits, labels, 0.0f);
    ck_assert_int_eq(nb_backward(tr->t, tr->loss), NB_OK);
    tr->m = m;

    /* the grids as the step used them, what every quantizer received (the
     * activations; a weight quantizer receives the weight, in model/) and
     * returned */
    for (int i = 0; i < nq; i++) {
        const nb_quantizer *q = &qs[i];
        const capture *cp = &caps[i];
        ck_assert_msg(cp->in, "%s was not used in the step", q->name);
        const float qrange[2] = {(float)q->qmin, (float)q->qmax};
        snprintf(name, sizeof name, "%s/quant/%s/scale", pre, q->name);
        h5_write(f, name, q->scale, 1, &q->n_scales);
        snprintf(name, sizeof name, "%s/quant/%s/zero_point", pre, q->name);
        h5_write(f, name, q->zero_point, 1, &q->n_scales);
        snprintf(name, sizeof name, "%s/quant/%s/qrange", pre, q->name);
        h5_write(f, name, qrange, 1, (int[]){2});
        if (!q->is_weight) {
            snprintf(name, sizeof name, "%s/nb_in/%s", pre, q->name);
            h5_write(f, name, cp->in, cp->ndim, cp->shape);
        } else {
            ck_assert(memcmp(cp->in, nb_module_weight(q->mod)->data, sizeof(float) * cp->n) == 0);
        }
        snprintf(name, sizeof name, "%s/nb_out/%s", pre, q->name);
        h5_write(f, name, cp->out, cp->ndim, cp->shape);
    }
    /* the wrappers go; the quantizers' own hooks stay for the model's life */
    for (int i = 0; i < nq; i++) {
        *(qs[i].is_weight ? &qs[i].mod->weight_hook : &qs[i].mod->input_hook) = caps[i].inner;
        free(caps[i].in);
        free(caps[i].out);
    }
    free(caps);
}

static void free_try(qtry *tr) {
    nb_tape_free(tr->t);
    tr->x->grad = NULL;
    nb_tensor_free(tr->x);
    nb_model_free(tr->m);
}

/* The oracle's status vector of a draw (see torch_quant_oracle.py). */
enum { ST_CLEAN, ST_FLIPS, ST_BAD, ST_RELU_MARGIN, ST_TIE_MARGIN, ST_NEAR, ST_ACT_DISC, ST_UNCHECKED, ST_N };

static void read_status(hid_t o, const char *pre, double *st, char *report, size_t cap) {
    char name[96];
    size_t n;
    snprintf(name, sizeof name, "%s/status", pre);
    double *v = h5_read(o, name, H5T_NATIVE_DOUBLE, sizeof(double), &n);
    ck_assert_uint_eq(n, ST_N);
    memcpy(st, v, sizeof(double) * ST_N);
    free(v);
    snprintf(name, sizeof name, "%s/report", pre);
    unsigned char *s = h5_read(o, name, H5T_NATIVE_UCHAR, 1, &n);
    snprintf(report, cap, "%.*s", (int)n, (const char *)s);
    free(s);
}

/* Case ci against the oracle's answer: its draws' code checks, then the
 * first clean draw end to end. */
static void check_case(hid_t o, int ci, qtry *tries) {
    const qcase *c = &cases[ci];
    char pre[32], name[256], report[2048];
    double st[ST_N];
    snprintf(name, sizeof name, "case%d/done", ci);
    const int done = (int)h5_read_num(o, name);
    int clean = -1;
    for (int k = 0; k < done; k++) {
        snprintf(pre, sizeof pre, "case%d/try%d", ci, k);
        read_status(o, pre, st, report, sizeof report);
        const unsigned long long seed = (unsigned long long)(c->seed + (uint64_t)k);
        ck_assert_msg(st[ST_BAD] == 0, "%s, seed %llu: %s", c->name, seed, report);
        if (st[ST_CLEAN] != 0) {
            clean = k;
            break;
        }
        printf("%s, seed %llu not comparable end to end: %s\n", c->name, seed, report);
    }
    ck_assert_msg(clean >= 0,
                  "%s: none of %d draws is clean (each has a code that differs between nibble and PyTorch within "
                  "float rounding of a rounding boundary, or a ReLU input at 0; reasons above): change the seeds "
                  "or TRIES",
                  c->name, TRIES);

    const qtry *tr = &tries[clean];
    nb_model *m = tr->m;
    snprintf(pre, sizeof pre, "case%d/try%d", ci, clean);
    snprintf(name, sizeof name, "%s/logits", pre);
    const double e_logits = nb_oracle_close(o, c->name, name, tr->logits->data, tr->logits->numel, 1e-4);
    snprintf(name, sizeof name, "%s/loss", pre);
    const double e_loss = nb_oracle_close(o, c->name, name, tr->loss->data, 1, 1e-5);
    snprintf(name, sizeof name, "%s/dx", pre);
    const double e_dx = nb_oracle_close(o, c->name, name, tr->x->grad, tr->x->numel, 1e-4);
    double e_grad = 0, e_buf = 0;
    const char *worst = "";
    for (int i = 0; i < m->n_entries; i++) {
        nb_entry *e = &m->entries[i];
        if (e->kind == NB_ENTRY_PARAM) {
            snprintf(name, sizeof name, "%s/grad/%s", pre, e->name);
            const double d = nb_oracle_close(o, c->name, name, e->t->grad, e->t->numel, 1e-4);
            if (d >= e_grad) {
                e_grad = d;
                worst = e->name;
            }
        } else {
            snprintf(name, sizeof name, "%s/after/%s", pre, e->name);
            e_buf = fmax(e_buf, nb_oracle_close(o, c->name, name, e->t->data, e->t->numel, 1e-5));
        }
    }
    /* the learned step sizes' gradients (LSQ) */
    int nq;
    nb_quantizer *qs = nb_quant_list(m, &nq);
    double e_step = 0, e_step_rel = 0;
    const char *worst_step = "";
    for (int i = 0; i < nq; i++) {
        if (!qs[i].step) continue;
        char size[256];
        snprintf(name, sizeof name, "%s/qgrad/%s", pre, qs[i].name);
        snprintf(size, sizeof size, "%s/qgrad_size/%s", pre, qs[i].name);
        double rel;
        const double d = nb_oracle_close_sums(o, c->name, name, size, qs[i].step->grad, qs[i].step->numel, 1e-4, &rel);
        e_step_rel = fmax(e_step_rel, rel);
        if (d >= e_step) {
            e_step = d;
            worst_step = qs[i].name;
        }
    }
    char steps[200] = "";
    if (*worst_step)
        snprintf(steps, sizeof steps, ", step sizes %.2g of g·Σ|dy·term| (%s; %.2g of max |torch|)", e_step,
                 worst_step, e_step_rel);
    printf("%s, seed %llu: max |nibble - torch| / max |torch|: logits %.2g, loss %.2g, dx %.2g, parameter gradients "
           "%.2g (%s)%s, buffers %.2g; activations reach the quantizers within %.2g steps of PyTorch's; nearest "
           "value to a rounding boundary %.2g steps (%.0f within 1e-4, all with the same code)\n",
           c->name, (unsigned long long)(c->seed + (uint64_t)clean), e_logits, e_loss, e_dx, e_grad, worst, steps,
           e_buf, st[ST_ACT_DISC], st[ST_TIE_MARGIN], st[ST_NEAR]);
    fflush(stdout);
}

START_TEST(test_quant_resnet20_vs_torch) {
    if (!nb_oracle_available()) {
        nb_test_skip("fake-quantized resnet20 vs torch", "/usr/bin/python3 has no torch, numpy or h5py");
        return;
    }
    /* Tiny tensors: a second thread only waits (and spins on a busy machine). */
    nb_set_threads(1);
    char path[512], name[64];
    snprintf(path, sizeof path, "%s/quant.h5", nb_test_tmpdir());
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_msg(f >= 0, "create %s", path);
    h5_attr_str(f, "arch", "resnet20");
    h5_attr_str(f, "shortcut", "A");
    h5_attr_num(f, "classes", CLASSES);
    h5_attr_num(f, "cases", NCASES);
    static qtry tries[NCASES][TRIES];
    for (int ci = 0; ci < NCASES; ci++) {
        snprintf(name, sizeof name, "case%d/training", ci);
        const float training = cases[ci].pass == NB_PASS_TRAIN;
        h5_write(f, name, &training, 1, (int[]){1});
        snprintf(name, sizeof name, "case%d/lsq", ci);
        const float lsq = !strcmp(cases[ci].method, "lsq");
        h5_write(f, name, &lsq, 1, (int[]){1});
        snprintf(name, sizeof name, "case%d/tries", ci);
        const float ntries = TRIES;
        h5_write(f, name, &ntries, 1, (int[]){1});
        for (int k = 0; k < TRIES; k++) build_try(&cases[ci], ci, k, f, &tries[ci][k]);
    }
    H5Fclose(f);

    hid_t o = nb_oracle_run("torch_quant_oracle.py", path);
    if (o < 0) {
        nb_test_skip("fake-quantized resnet20 vs torch", "/usr/bin/python3 cannot import torch, numpy and h5py");
    } else {
        for (int ci = 0; ci < NCASES; ci++) check_case(o, ci, tries[ci]);
        H5Fclose(o);
    }
    for (int ci = 0; ci < NCASES; ci++)
        for (int k = 0; k < TRIES; k++) free_try(&tries[ci][k]);
}
END_TEST

static Suite *torch_quant_suite(void) {
    Suite *s = suite_create("torch_quant");
    TCase *tc = tcase_create("oracle");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_quant_resnet20_vs_torch);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(torch_quant_suite()); }
