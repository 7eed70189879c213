/* A conv's learned input quantizer applied inside the batchnorm that feeds
 * it (layers/bn_relu_lsq.c, ResNet's bn1 -> conv2) against the separate
 * batchnorm and quantizer ops (NB_NO_FUSE's path): a W4A4 ResNet-20 from
 * identical state, one training step's forward and backward, then an
 * evaluation forward. Logits, loss, every gradient (weights, batchnorm,
 * step sizes, offsets) and the batchnorm running statistics must be the
 * same bits. Cases: LSQ, LSQ+ and PACT activations; planes that divide the
 * quantizer's 16384-element chunks, planes across chunks (28 px: 784, 196,
 * 49 pixels) and a tensor smaller than one chunk; frozen batchnorm; one
 * and two threads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nb_test.h"

typedef struct {
    const char *act;  /* activation method */
    int size, batch;  /* input size, batch */
    int frozen;       /* batchnorm frozen (running statistics in training) */
    int threads;      /* 2: the backward's chunks split over threads */
} fuse_case;

static const fuse_case cases[] = {
    {"lsq", 32, 16, 0, 2}, {"lsq", 28, 6, 0, 2}, {"lsq", 16, 2, 0, 1},
    {"lsq+", 32, 4, 0, 1}, {"pact", 28, 4, 0, 1},  {"lsq", 32, 4, 1, 1},
};

/* resnet20 at size px from rng r, weights by `weights` (4-bit per tensor
 * when not "none"), 4-bit activations by `act`. */
static nb_model *quantized_resnet20(int size, const char *weights, const char *act, nb_rng *r) {
    nb_model_opts o = nb_model_opts_default();
    o.input_size = size;
    nb_model *m = nb_model_build("resnet20", &o, r);
    ck_assert_ptr_nonnull(m);
    nb_quant_policy p;
    nb_quant_policy_default(&p);
    strcpy(p.weights.method, weights);
    strcpy(p.weights.granularity, "tensor");
    p.weights.bits = 4;
    strcpy(p.activations.method, act);
    p.activations.bits = 4;
    ck_assert_msg(nb_quant_attach(m, &p) == NB_OK, "%s", nb_last_error());
    return m;
}

/* resnet20 at the case's size, W4A4 LSQ weights, calibrated on x. */
static nb_model *build(const fuse_case *c, nb_tensor *x, int fuse) {
    nb_rng r;
    nb_rng_seed(&r, 21, 0);
    nb_model *m = quantized_resnet20(c->size, "lsq", c->act, &r);
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_model_set_pass(m, NB_PASS_CALIBRATE);
    nb_model_forward(m, t, x);
    nb_tape_free(t);
    ck_assert_msg(nb_quant_calibrate_finish(m) == NB_OK, "%s", nb_last_error());
    m->fuse_quant = fuse;
    m->bn_frozen = c->frozen;
    return m;
}

/* Same bits, or the first element that differs. */
static void same(const float *a, const float *b, size_t n, const char *what) {
    if (!memcmp(a, b, n * sizeof(float))) return;
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(!memcmp(&a[i], &b[i], sizeof(float)), "%s[%zu]: fused %.9g, unfused %.9g", what, i,
                      (double)a[i], (double)b[i]);
}

static void same_grad(const nb_entry *f, const nb_entry *u) {
    char what[128];
    snprintf(what, sizeof what, "d %s", f->name);
    same(f->t->grad, u->t->grad, f->t->numel, what);
}

typedef struct {
    nb_tensor *logits, *loss;
    size_t nodes;
} step_out;

static step_out train_step(nb_model *m, nb_tape *t, nb_tensor *x, const int32_t *labels) {
    nb_model_zero_grad(m);
    nb_model_set_pass(m, NB_PASS_TRAIN);
    step_out s;
    s.logits = nb_model_forward(m, t, x);
    s.loss = nb_cross_entropy(t, s.logits, labels, 0.0f);
    s.nodes = nb_tape_nodes(t);
    ck_assert_int_eq(nb_backward(t, s.loss), NB_OK);
    return s;
}

START_TEST(test_fused_bits) {
    const fuse_case *c = &cases[_i];
    nb_set_threads(c->threads);
    nb_rng r;
    nb_rng_seed(&r, 4, 0);
    nb_tensor *x = nb_tensor_new(4, (int[]){c->batch, 3, c->size, c->size});
    nb_tensor_fill_normal(x, &r, 0.0f, 1.0f);
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)c->batch);
    for (int i = 0; i < c->batch; i++) labels[i] = i % 10;
    nb_model *mf = build(c, x, 1), *mu = build(c, x, 0);
    nb_tape *tf = nb_tape_new(), *tu = nb_tape_new();
    /* a different batch from the calibration one: steps and ranges do not fit it exactly */
    nb_tensor_fill_normal(x, &r, 0.2f, 1.5f);

    const step_out f = train_step(mf, tf, x, labels), u = train_step(mu, tu, x, labels);
    /* the fused op replaced each block's quantizer node (9 blocks) */
    ck_assert_msg(f.nodes + 9 == u.nodes, "fused tape %zu nodes, unfused %zu", f.nodes, u.nodes);
    same(f.logits->data, u.logits->data, f.logits->numel, "logits");
    same(f.loss->data, u.loss->data, 1, "loss");
    for (int i = 0; i < mf->n_entries; i++) {
        const nb_entry *ef = &mf->entries[i], *eu = &mu->entries[i];
        same(ef->t->data, eu->t->data, ef->t->numel, ef->name); /* running statistics too */
        if (ef->kind == NB_ENTRY_PARAM) same_grad(ef, eu);
    }
    const nb_model_ext *qf = mf->quant, *qu = mu->quant;
    for (int i = 0; i < qf->n_entries; i++) {
        const nb_entry *ef = &qf->entries[i], *eu = &qu->entries[i];
        same(ef->t->data, eu->t->data, ef->t->numel, ef->name);
        if (ef->kind == NB_ENTRY_PARAM) same_grad(ef, eu);
    }
    /* a step size's gradient is not zero by accident */
    const nb_entry *e = NULL;
    for (int i = 0; i < qf->n_entries && !e; i++)
        if (qf->entries[i].kind == NB_ENTRY_PARAM && (!strcmp(qf->entries[i].name, "layer1.0.conv2.input/scale") ||
                                                      !strcmp(qf->entries[i].name, "layer1.0.conv2.input/alpha")))
            e = &qf->entries[i];
    ck_assert_msg(e && e->t->grad[0] != 0.0f, "no step-size gradient for layer1.0.conv2.input");
    nb_tape_reset(tf);
    nb_tape_reset(tu);

    /* evaluation: running statistics, no tape */
    nb_model_set_pass(mf, NB_PASS_EVAL);
    nb_model_set_pass(mu, NB_PASS_EVAL);
    nb_tape_set_grad(tf, 0);
    nb_tape_set_grad(tu, 0);
    nb_tensor *lf = nb_model_forward(mf, tf, x), *lu = nb_model_forward(mu, tu, x);
    same(lf->data, lu->data, lf->numel, "eval logits");

    nb_tape_free(tf);
    nb_tape_free(tu);
    nb_model_free(mf);
    nb_model_free(mu);
    nb_tensor_free(x);
    free(labels);
}
END_TEST

/* The fusion waits for a quantizer that is not ready yet (no calibration:
 * the hook initialises its step from the first batch) and stays out of the
 * calibration and probe passes. */
START_TEST(test_fused_only_when_ready) {
    nb_rng r;
    nb_rng_seed(&r, 21, 0);
    nb_model *m = quantized_resnet20(16, "none", "lsq", &r);
    m->fuse_quant = 1;
    nb_tensor *x = nb_tensor_new(4, (int[]){2, 3, 16, 16});
    nb_tensor_fill_normal(x, &r, 0.0f, 1.0f);
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_model_set_pass(m, NB_PASS_TRAIN);
    nb_model_forward(m, t, x);
    const size_t first = nb_tape_nodes(t); /* no gradients: nothing recorded either way */
    ck_assert_uint_eq(first, 0);
    int nq;
    nb_quantizer *qs = nb_quant_list(m, &nq);
    for (int i = 0; i < nq; i++)
        if (!qs[i].is_weight) ck_assert_msg(qs[i].ready[0] == 1.0f, "%s not initialised", qs[i].name);
    ck_assert_msg(nb_model_macs(m, 16, 16) > 0.0, "probe");
    nb_tape_free(t);
    nb_tensor_free(x);
    nb_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("lsq_fuse");
    TCase *tc = tcase_create("lsq_fuse");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_fused_bits, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, test_fused_only_when_ready);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
