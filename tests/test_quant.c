/* quant/: grids and fake quantization against hand-computed tables
 * (ALGORITHMS.md §1, §6), the STE mask, batchnorm folding, the pass
 * (policy resolution, rules, errors), /quant/ state through checkpoints, and
 * the op tables. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nb_test.h"

static void expect_vec(const float *got, const float *want, int n, const char *what) {
    for (int i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "%s[%d]: got %.9g, want %.9g", what, i, (double)got[i], (double)want[i]);
}

/* Per-tensor fake quantization of n values with (s, z, qmin, qmax). */
static void fq(const float *x, float *y, int n, float s, float z, int qmin, int qmax) {
    nb_fq_layout L = {1, (size_t)n, (size_t)n};
    nb_fq_forward(&L, &s, &z, qmin, qmax, x, y);
}

START_TEST(test_ranges) {
    int lo, hi;
    nb_qspec q = {.bits = 2, .is_signed = 1, .symmetric = 1};
    nb_qspec_range(&q, &lo, &hi);
    ck_assert(lo == -2 && hi == 1); /* §1: b = 2 gives {-2, -1, 0, 1} */
    q.narrow = 1;
    nb_qspec_range(&q, &lo, &hi);
    ck_assert(lo == -1 && hi == 1);
    q = (nb_qspec){.bits = 8, .is_signed = 1, .symmetric = 1};
    nb_qspec_range(&q, &lo, &hi);
    ck_assert(lo == -128 && hi == 127);
    q = (nb_qspec){.bits = 4, .is_signed = 0, .symmetric = 1};
    nb_qspec_range(&q, &lo, &hi);
    ck_assert(lo == 0 && hi == 15);
    q = (nb_qspec){.bits = 4, .is_signed = 1, .symmetric = 0}; /* asymmetric: always [0, 2^b - 1] */
    nb_qspec_range(&q, &lo, &hi);
    ck_assert(lo == 0 && hi == 15);

    float s;
    int32_t z;
    nb_qparams_from_range(&(nb_qspec){.bits = 4, .is_signed = 1, .symmetric = 1}, -2.0f, 1.0f, &s, &z);
    ck_assert(s == 2.0f / 7.0f && z == 0); /* max|x| / Qp */
    nb_qparams_from_range(&(nb_qspec){.bits = 8, .is_signed = 0, .symmetric = 1}, 0.0f, 3.0f, &s, &z);
    ck_assert(s == 3.0f / 255.0f && z == 0);
    nb_qparams_from_range(&(nb_qspec){.bits = 4, .symmetric = 0}, -1.0f, 2.75f, &s, &z);
    ck_assert(s == 0.25f && z == 4); /* (max - min) / 15, z = rint(1 / 0.25) */
    nb_qparams_from_range(&(nb_qspec){.bits = 4, .symmetric = 0}, 0.5f, 2.0f, &s, &z);
    ck_assert(s == 2.0f / 15.0f && z == 0); /* the range is widened to contain 0 */
    nb_qparams_from_range(&(nb_qspec){.bits = 4, .symmetric = 1, .is_signed = 1}, 0.0f, 0.0f, &s, &z);
    ck_assert(s == 1.0f && z == 0); /* degenerate: not 0 */
}
END_TEST

START_TEST(test_fake_quant_tables) {
    float y[16];
    /* signed 2-bit, s = 0.5: x/s = -2.6 -2.5 -1.5 -0.5 0 0.5 0.6 1.5 2; ties to even */
    const float x2[] = {-1.3f, -1.25f, -0.75f, -0.25f, 0.0f, 0.25f, 0.3f, 0.75f, 1.0f};
    fq(x2, y, 9, 0.5f, 0.0f, -2, 1);
    expect_vec(y, (const float[]){-1, -1, -1, 0, 0, 0, 0.5f, 0.5f, 0.5f}, 9, "sym2");
    /* narrow: [-1, 1] */
    fq(x2, y, 9, 0.5f, 0.0f, -1, 1);
    expect_vec(y, (const float[]){-0.5f, -0.5f, -0.5f, 0, 0, 0, 0.5f, 0.5f, 0.5f}, 9, "narrow2");
    /* signed 8-bit, s = 0.25: 127.5 -> 128 -> 127; -128.4 -> -128; 0.5 -> 0; 1.5 -> 2; 2.5 -> 2 */
    const float x8[] = {31.875f, -32.1f, 0.125f, 0.375f, 0.625f, -100.0f};
    fq(x8, y, 6, 0.25f, 0.0f, -128, 127);
    expect_vec(y, (const float[]){31.75f, -32.0f, 0.0f, 0.5f, 0.5f, -32.0f}, 6, "sym8");
    /* unsigned 4-bit, s = 0.5: -0.6 -> -1 -> 0; 0.5 -> 0; 1.5 -> 2; 15.5 -> 16 -> 15 */
    const float xu[] = {-0.3f, 0.25f, 0.75f, 7.5f, 7.75f, 8.0f};
    fq(xu, y, 6, 0.5f, 0.0f, 0, 15);
    expect_vec(y, (const float[]){0, 0, 1.0f, 7.5f, 7.5f, 7.5f}, 6, "unsigned4");
    /* asymmetric 4-bit over [-1, 2.75]: s = 0.25, z = 4 */
    const float xa[] = {0.0f, 0.375f, 0.125f, -1.2f, 2.9f, -0.125f};
    fq(xa, y, 6, 0.25f, 4.0f, 0, 15);
    expect_vec(y, (const float[]){0.0f, 0.5f, 0.0f, -1.0f, 2.75f, 0.0f}, 6, "asym4");
    /* NaN stays NaN (the NaN guard must see it) */
    fq((const float[]){NAN}, y, 1, 0.5f, 0.0f, -2, 1);
    ck_assert(isnan(y[0]));
}
END_TEST

/* Real zero is exactly representable for every asymmetric range. */
START_TEST(test_zero_exact) {
    nb_rng r;
    nb_rng_seed(&r, 7, 0);
    for (int bits = 2; bits <= 8; bits++)
        for (int t = 0; t < 200; t++) {
            const float lo = -4.0f * nb_rng_uniform(&r), hi = 4.0f * nb_rng_uniform(&r);
            nb_qspec q = {.bits = bits, .symmetric = 0};
            float s, y;
            int32_t z;
            nb_qparams_from_range(&q, lo, hi, &s, &z);
            float zf = (float)z;
            fq((const float[]){0.0f}, &y, 1, s, zf, 0, (1 << bits) - 1);
            ck_assert_msg(y == 0.0f, "bits %d range [%g, %g]: 0 -> %g", bits, (double)lo, (double)hi, (double)y);
        }
}
END_TEST

START_TEST(test_layouts) {
    /* per-channel: 2 rows of 3 with scales 0.5 and 1 */
    const float x[] = {0.3f, 0.8f, -0.9f, 0.3f, 0.8f, -2.6f};
    float y[6];
    nb_fq_layout L = {2, 3, 3};
    ck_assert_int_eq(nb_fq_layout_scales(&L), 2);
    nb_fq_forward(&L, (const float[]){0.5f, 1.0f}, (const float[]){0, 0}, -2, 1, x, y);
    expect_vec(y, (const float[]){0.5f, 0.5f, -1.0f, 0.0f, 1.0f, -2.0f}, 6, "per-channel");
    /* per-group: one row of 5 in groups of 2 (the last group has 1) */
    nb_fq_layout G = {1, 5, 2};
    ck_assert_int_eq(nb_fq_layout_scales(&G), 3);
    const float xg[] = {0.3f, 0.8f, 0.3f, 0.8f, 0.8f};
    float yg[5];
    nb_fq_forward(&G, (const float[]){0.5f, 1.0f, 0.25f}, (const float[]){0, 0, 0}, -2, 1, xg, yg);
    expect_vec(yg, (const float[]){0.5f, 0.5f, 0.0f, 1.0f, 0.25f}, 5, "per-group");
}
END_TEST

/* The STE passes the gradient where the rounded code is inside [qmin, qmax]. */
START_TEST(test_ste_mask) {
    /* s = 1, unsigned [0, 3]: codes -1 (x=-0.6), 0 (x=-0.4), 3 (x=3.4), 4 (x=3.6), 2 */
    const float x[] = {-0.6f, -0.4f, 3.4f, 3.6f, 2.0f, NAN};
    const float dy[] = {1, 2, 3, 4, 5, 6};
    float dx[6];
    nb_fq_layout L = {1, 6, 6};
    const float s = 1.0f, z = 0.0f;
    nb_fq_backward(&L, &s, &z, 0, 3, x, dy, dx, 1);
    expect_vec(dx, (const float[]){0, 2, 3, 0, 5, 0}, 6, "mask");
    float acc[6] = {1, 1, 1, 1, 1, 1};
    nb_fq_backward(&L, &s, &z, 0, 3, x, dy, acc, 0);
    expect_vec(acc, (const float[]){1, 3, 4, 1, 6, 1}, 6, "mask accumulate");

    /* on the tape: d(sum(fq(x) * r)) / dx = r * mask */
    nb_tape *t = nb_tape_new();
    nb_tensor *xt = nb_tensor_new(1, (int[]){6});
    memcpy(xt->data, x, sizeof x);
    xt->data[5] = 1.0f;
    xt->requires_grad = 1;
    nb_tensor *y = nb_fake_quant(t, xt, &L, &s, &z, 0, 3);
    ck_assert(y->requires_grad);
    ck_assert_int_eq(nb_backward_seed(t, y, dy), NB_OK);
    expect_vec(xt->grad, (const float[]){0, 2, 3, 0, 5, 6}, 6, "tape");
    nb_tape_reset(t);
    xt->grad = NULL;
    nb_tensor_free(xt);
    nb_tape_free(t);
}
END_TEST

START_TEST(test_binary_ternary) {
    const float w[] = {0.5f, -1.5f, 0.2f, -0.2f, /* row 2 */ 1.0f, 1.0f, -1.0f, 0.0f};
    float y[8], a[2];
    nb_binary_ternary_forward(w, y, 2, 4, 0, a);
    /* XNOR-Net: alpha = mean |w| = 0.6 and 0.75; sign(0) = +1 */
    ck_assert(a[0] == 0.6f && a[1] == 0.75f);
    expect_vec(y, (const float[]){0.6f, -0.6f, 0.6f, -0.6f, 0.75f, 0.75f, -0.75f, 0.75f}, 8, "binary");
    nb_binary_ternary_forward(w, y, 2, 4, 1, a);
    /* TWN: delta = 0.7 * 0.6 = 0.42 -> {0.5, -1.5} kept, alpha = 1; row 2: delta 0.525, alpha 1 */
    ck_assert_msg(a[0] == 1.0f && a[1] == 1.0f, "%g %g", (double)a[0], (double)a[1]);
    expect_vec(y, (const float[]){1, -1, 0, 0, 1, 1, -1, 0}, 8, "ternary");
    /* binary STE: identity where |w| <= 1 */
    nb_tape *t = nb_tape_new();
    nb_tensor *wt = nb_tensor_new(2, (int[]){2, 4});
    memcpy(wt->data, w, sizeof w);
    wt->requires_grad = 1;
    float alpha[2];
    nb_tensor *q = nb_binary_ternary(t, wt, 2, 0, alpha);
    const float ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    ck_assert_int_eq(nb_backward_seed(t, q, ones), NB_OK);
    expect_vec(wt->grad, (const float[]){1, 0, 1, 1, 1, 1, 1, 1}, 8, "binary STE");
    nb_tape_reset(t);
    wt->grad = NULL;
    nb_tensor_free(wt);
    nb_tape_free(t);
}
END_TEST

/* Every op table entry has a name and a backward (the arrays have COUNT
 * slots whatever their initialisers say). */
START_TEST(test_op_tables) {
    int n = 0;
    const nb_op_def *tabs[2];
    int ns[2];
    tabs[0] = nb_layers_ops(&ns[0]);
    tabs[1] = nb_quant_ops(&ns[1]);
    for (int k = 0; k < 2; k++) {
        ck_assert(ns[k] > 0);
        for (int i = 0; i < ns[k]; i++) {
            ck_assert_msg(tabs[k][i].name && tabs[k][i].backward, "table %d entry %d is empty", k, i);
            n++;
        }
    }
    ck_assert(n >= 14);
}
END_TEST

static nb_model *resnet(const char *arch, uint64_t seed) {
    nb_rng r;
    nb_rng_seed(&r, seed, 0);
    nb_model_opts o = nb_model_opts_default();
    nb_model *m = nb_model_build(arch, &o, &r);
    ck_assert_msg(m != NULL, "%s", nb_last_error());
    /* trained-looking batchnorm statistics */
    for (int i = 0; i < m->n_modules; i++) {
        if (m->modules[i]->type != NB_MOD_BATCHNORM2D) continue;
        nb_bn_module *b = (nb_bn_module *)m->modules[i];
        for (size_t c = 0; c < b->weight->numel; c++) {
            b->weight->data[c] = 0.5f + nb_rng_uniform(&r);
            b->bias->data[c] = 0.2f * nb_rng_normal(&r);
            b->running_mean->data[c] = 0.3f * nb_rng_normal(&r);
            b->running_var->data[c] = 0.2f + nb_rng_uniform(&r);
        }
    }
    return m;
}

static nb_tensor *images(int n, uint64_t seed) {
    nb_rng r;
    nb_rng_seed(&r, seed, 1);
    nb_tensor *x = nb_tensor_new(4, (int[]){n, 3, 32, 32});
    nb_tensor_fill_normal(x, &r, 0.0f, 1.0f);
    return x;
}

/* logits (n, 10) of an evaluation forward, copied out. */
static float *eval_logits(nb_model *m, nb_tensor *x) {
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_model_train(m, 0);
    nb_tensor *y = nb_model_forward(m, t, x);
    float *out = malloc(y->numel * sizeof(float));
    memcpy(out, y->data, y->numel * sizeof(float));
    nb_tape_free(t);
    return out;
}

START_TEST(test_fold_bn) {
    const char *arch[] = {"resnet20", "smallcnn"};
    nb_model *m = resnet(arch[_i], 3);
    nb_tensor *x = images(4, 5);
    float *before = eval_logits(m, x);
    nb_quant_fold_bn(m);
    float *after = eval_logits(m, x);
    double worst = 0.0;
    for (int i = 0; i < 40; i++) worst = fmax(worst, fabs((double)before[i] - after[i]) / fmax(1.0, fabs(before[i])));
    ck_assert_msg(worst < 1e-5, "%s: folded logits differ by %g", arch[_i], worst);
    /* the batchnorms became exact bias adds */
    nb_bn_module *b = (nb_bn_module *)nb_model_module(m, arch[_i][0] == 'r' ? "conv1" : "features.0.conv")->bn;
    ck_assert(b->eps == 0.0f && b->weight->data[0] == 1.0f && b->running_var->data[0] == 1.0f);
    free(before);
    free(after);
    nb_tensor_free(x);
    nb_model_free(m);
}
END_TEST

static void uniform_policy(nb_quant_policy *p, int wbits, int abits) {
    nb_quant_policy_default(p);
    strcpy(p->weights.method, "uniform");
    strcpy(p->activations.method, "uniform");
    p->weights.bits = wbits;
    p->activations.bits = abits;
}

START_TEST(test_policy) {
    nb_model *m = resnet("resnet20", 1);
    nb_quant_policy p;
    uniform_policy(&p, 4, 4);
    p.n_rules = 2;
    strcpy(p.rules[0].pattern, "layer3.*.conv2");
    p.rules[0].weight_bits = 2;
    strcpy(p.rules[1].pattern, "layer1.0.conv1");
    strcpy(p.rules[1].weight_granularity, "group");
    p.rules[1].group_size = 32;
    p.rules[1].act_bits = 6;
    ck_assert_msg(nb_quant_attach(m, &p) == NB_OK, "%s", nb_last_error());
    int n;
    nb_quant_list(m, &n);
    ck_assert_int_eq(n, 2 * 20); /* 19 convs and fc, weight and input each */
    /* first and last layers 8 bits; the image is signed, ReLU outputs unsigned */
    ck_assert_int_eq(nb_test_quantizer(m, "conv1.weight")->spec.bits, 8);
    ck_assert_int_eq(nb_test_quantizer(m, "conv1.input")->qmin, -128);
    ck_assert_int_eq(nb_test_quantizer(m, "fc.input")->spec.bits, 8);
    ck_assert_int_eq(nb_test_quantizer(m, "fc.input")->qmin, 0);
    ck_assert_int_eq(nb_test_quantizer(m, "layer2.0.conv1.input")->qmax, 15);
    ck_assert_int_eq(nb_test_quantizer(m, "layer2.0.conv1.weight")->qmin, -8);
    ck_assert_int_eq(nb_test_quantizer(m, "layer3.1.conv2.weight")->spec.bits, 2);
    ck_assert_int_eq(nb_test_quantizer(m, "layer3.1.conv1.weight")->spec.bits, 4);
    const nb_quantizer *g = nb_test_quantizer(m, "layer1.0.conv1.weight");
    ck_assert_int_eq(g->gran, NB_QG_GROUP);
    ck_assert_int_eq(g->n_scales, 16 * 5); /* 144 per channel in groups of 32: 4 full + 16 */
    ck_assert_int_eq(nb_test_quantizer(m, "layer1.0.conv1.input")->spec.bits, 6);
    ck_assert_int_eq(nb_test_quantizer(m, "layer2.0.conv2.weight")->n_scales, 32);
    /* size: 4-bit weights are about 8x smaller than FP32 */
    double fp32 = 0.0, q = nb_quant_model_bytes(m, &fp32);
    ck_assert(fp32 == 4.0 * (double)m->n_param_floats && q < fp32 / 5.0);
    ck_assert_int_eq(nb_quant_attach(m, &p), NB_STATUS_BAD_INPUT); /* twice */
    nb_model_free(m);

    /* a rule that matches nothing names itself */
    m = resnet("resnet20", 1);
    uniform_policy(&p, 4, 4);
    p.n_rules = 1;
    strcpy(p.rules[0].pattern, "layer4.*");
    ck_assert_int_eq(nb_quant_attach(m, &p), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "quant.layers.\"layer4.*\": matches no layer of resnet20"), "%s",
                  nb_last_error());
    ck_assert(m->quant == NULL && m->modules[0]->weight_hook.fn == NULL);
    /* binary inputs are refused */
    uniform_policy(&p, 4, 4);
    p.n_rules = 1;
    strcpy(p.rules[0].pattern, "fc");
    strcpy(p.rules[0].act_method, "binary");
    ck_assert_int_eq(nb_quant_attach(m, &p), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "fc input: method \"binary\" is for weights only"), "%s", nb_last_error());
    nb_model_free(m);
}
END_TEST

/* Calibrate m on random batches. */
static void calibrate(nb_model *m, int batches) {
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_model_set_pass(m, NB_PASS_CALIBRATE);
    for (int b = 0; b < batches; b++) {
        nb_tensor *x = images(8, 100 + b);
        nb_model_forward(m, t, x);
        nb_tape_reset(t);
        nb_tensor_free(x);
    }
    nb_tape_free(t);
    ck_assert_msg(nb_quant_calibrate_finish(m) == NB_OK, "%s", nb_last_error());
    ck_assert(nb_quant_ready(m));
}

START_TEST(test_calibrate_and_quantize) {
    nb_model *m = resnet("resnet20", 2);
    nb_tensor *x = images(4, 9);
    float *fp = eval_logits(m, x);
    nb_quant_policy p;
    uniform_policy(&p, 4, 4);
    ck_assert_int_eq(nb_quant_attach(m, &p), NB_OK);
    ck_assert(!nb_quant_ready(m));
    /* the MAC probe passes through uncalibrated quantizers and changes nothing */
    const double macs = nb_model_macs(m, 32, 32);
    ck_assert(macs > 40e6 && macs < 41e6);
    ck_assert(!nb_quant_ready(m));
    calibrate(m, 2);
    /* activation scale: max of what the observer saw over qmax */
    const nb_quantizer *a = nb_test_quantizer(m, "layer1.0.conv2.input");
    ck_assert(a->scale[0] > 0.0f && a->zero_point[0] == 0.0f && a->ready[0] == 1.0f);
    /* weight scales per channel: max |w_c| / 7 */
    const nb_quantizer *w = nb_test_quantizer(m, "layer2.1.conv1.weight");
    const nb_tensor *wt = nb_module_weight(w->mod);
    for (int c = 0; c < 32; c++) {
        float mx = 0.0f;
        for (int k = 0; k < 288; k++) mx = fmaxf(mx, fabsf(wt->data[c * 288 + k]));
        ck_assert_msg(w->scale[c] == mx / 7.0f, "channel %d: %g vs %g", c, (double)w->scale[c], (double)(mx / 7.0f));
    }
    float *q = eval_logits(m, x);
    double diff = 0.0;
    for (int i = 0; i < 40; i++) diff = fmax(diff, fabs((double)q[i] - fp[i]));
    ck_assert_msg(diff > 1e-3, "W4A4 logits equal the FP32 ones: quantizers not applied?");
    free(q);
    free(fp);
    nb_tensor_free(x);
    nb_model_free(m);
}
END_TEST

START_TEST(test_state_round_trip) {
    char path[512], path2[512];
    snprintf(path, sizeof path, "%s/q.h5", nb_test_tmpdir());
    snprintf(path2, sizeof path2, "%s/fp.h5", nb_test_tmpdir());
    nb_model *m = resnet("resnet20", 4);
    nb_quant_policy p;
    uniform_policy(&p, 3, 4);
    strcpy(p.activations.observer, "percentile");
    p.activations.symmetric = 0;
    ck_assert_int_eq(nb_quant_attach(m, &p), NB_OK);
    calibrate(m, 2);
    nb_tensor *x = images(4, 11);
    float *a = eval_logits(m, x);
    ck_assert_int_eq(nb_checkpoint_save(path, m, NULL, NULL), NB_OK);

    nb_model *b = resnet("resnet20", 99); /* other weights until loaded */
    ck_assert_int_eq(nb_quant_attach(b, &p), NB_OK);
    ck_assert_msg(nb_checkpoint_load_model(path, b, 1) == NB_OK, "%s", nb_last_error());
    ck_assert_msg(nb_checkpoint_load_quant(path, b) == NB_OK, "%s", nb_last_error());
    ck_assert_int_eq(b->quant->n_buffer_floats, m->quant->n_buffer_floats);
    ck_assert(memcmp(b->quant->buffer_data, m->quant->buffer_data, sizeof(float) * m->quant->n_buffer_floats) == 0);
    float *c = eval_logits(b, x);
    ck_assert(memcmp(a, c, 40 * sizeof(float)) == 0);

    /* an FP32 model refuses the quantized file; a quantized one the FP32 file */
    nb_model *f = resnet("resnet20", 4);
    ck_assert_int_eq(nb_checkpoint_load_quant(path, f), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "holds quantizer state (/quant/) but the model has no quantizers"), "%s",
                  nb_last_error());
    ck_assert_int_eq(nb_checkpoint_save(path2, f, NULL, NULL), NB_OK);
    ck_assert_int_eq(nb_checkpoint_load_quant(path2, b), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "no /quant/ group"), "%s", nb_last_error());
    /* another policy (other bits) is refused and leaves the state alone */
    nb_model *d = resnet("resnet20", 4);
    nb_quant_policy p2 = p;
    p2.weights.bits = 2;
    ck_assert_int_eq(nb_quant_attach(d, &p2), NB_OK);
    float *keep = malloc(sizeof(float) * d->quant->n_buffer_floats);
    memcpy(keep, d->quant->buffer_data, sizeof(float) * d->quant->n_buffer_floats);
    ck_assert_int_eq(nb_checkpoint_load_quant(path, d), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "qrange"), "%s", nb_last_error());
    ck_assert(memcmp(keep, d->quant->buffer_data, sizeof(float) * d->quant->n_buffer_floats) == 0);
    free(keep);
    free(a);
    free(c);
    nb_tensor_free(x);
    nb_model_free(m);
    nb_model_free(b);
    nb_model_free(f);
    nb_model_free(d);
}
END_TEST

int main(void) {
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("quant");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_ranges);
    tcase_add_test(tc, test_fake_quant_tables);
    tcase_add_test(tc, test_zero_exact);
    tcase_add_test(tc, test_layouts);
    tcase_add_test(tc, test_ste_mask);
    tcase_add_test(tc, test_binary_ternary);
    tcase_add_test(tc, test_op_tables);
    tcase_add_loop_test(tc, test_fold_bn, 0, 2);
    tcase_add_test(tc, test_policy);
    tcase_add_test(tc, test_calibrate_and_quantize);
    tcase_add_test(tc, test_state_round_trip);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
