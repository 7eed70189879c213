/* The ONNX writer (quant/export_onnx.c) against two oracles outside nibble:
 *
 *   onnx.checker   every file passes check_model(full_check=True) (schema
 *                  and strict shape inference) with /usr/bin/python3's onnx
 *                  (Debian's 1.12; tests/onnx_check.py), and its inferred
 *                  output is [N, classes];
 *   ONNX Runtime   onnxruntime-node (scripts/ort_eval.js, the CPU provider;
 *                  node_modules found from NB_SOURCE_DIR upwards) runs it.
 *
 * Models: nb_test_export_model's (batchnorm statistics random, so folding
 * matters; quantized per a policy, calibrated, a few SGD steps for the
 * learned ones), exported through nb_export_build. Three checks each:
 *
 *   - every kind of layer alone (input -> the layer) in ORT against the
 *     IR's definition in double, mul·Σ ŵ·x̂ + bias, within 2^-16 of the sum
 *     of |terms| (the float summation; x̂ is the same bits on both sides),
 *     with some multipliers negated (a negative batchnorm γ);
 *   - the whole graph in ORT without graph optimizations ("as written")
 *     against nibble's own fake-quant evaluation forward on 200 CIFAR-10
 *     test images (the cifar10-mini fixture): not the same bits, since ONNX
 *     folds the batchnorm multiplier into the weights and sums in its own
 *     order; an activation within float rounding of a grid's rounding
 *     boundary can then land one step apart and move the next layers'
 *     inputs. Asserted: most images (the median) reproduce nibble's logits
 *     to 1e-5 of their range, and top-1 agrees on at least 97% (measured:
 *     198-200 of 200 move by nothing, all agree but 0-2);
 *   - the same with ORT's optimizations on (what a user runs), where its
 *     QDQ rewrites round a float bias, and requantize codebook or float
 *     weights, of a conv between a DequantizeLinear and a QuantizeLinear
 *     (docs/export.md): asserted as above for the models without such a
 *     conv, reported for the others.
 *
 * The input quantizers are checked apart, on a hand-built IR (input -> 1x1
 * average pool -> identity linear layer, so the logits are x̂ itself): ORT
 * must give the same bits as nibble's quantizer kernels for values at every
 * rounding tie, at and beyond the grid's ends, and at the N2UQ thresholds.
 *
 * A trained checkpoint (experiments/pretrained, ResNet-20 LSQ W4A4) goes
 * through `nibble export --format onnx` and is held to the same agreement.
 *
 * Each oracle is skipped cleanly (nb_test_skip) when absent; the export
 * itself always runs. Also: the refused opsets, an unwritable path, a
 * malformed node list, failing allocations. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nb_export.h"
#include "nb_test.h"

/* ------------------------------------------------------------ oracles */

/* Whether /usr/bin/python3 can import onnx (asked once per process). */
static int have_onnx_python(void) {
    static int have = -1;
    if (have < 0) have = nb_test_sh("/usr/bin/python3 -c 'import onnx' 2>/dev/null", NULL, 0) == 0;
    return have;
}

/* The onnxruntime-node package folder (node_modules searched from
 * NB_SOURCE_DIR up to /, as node's require does), or NULL when it or node
 * is absent. Static storage. */
static const char *ort_dir(void) {
    static char dir[4200];
    static int state = -1;
    if (state >= 0) return state ? dir : NULL;
    state = 0;
    const char *src = getenv("NB_SOURCE_DIR");
    if (!src || nb_test_sh("node --version > /dev/null 2>&1", NULL, 0) != 0) return NULL;
    char base[4096];
    snprintf(base, sizeof base, "%s", src);
    for (;;) {
        snprintf(dir, sizeof dir, "%s/node_modules/onnxruntime-node", base);
        char pkg[4300];
        snprintf(pkg, sizeof pkg, "%s/package.json", dir);
        if (access(pkg, R_OK) == 0) return state = 1, dir;
        char *slash = strrchr(base, '/');
        if (!slash || slash == base) return NULL;
        *slash = '\0';
    }
}

/* Runs the checker on path; its report in out. */
static void onnx_check(const char *path, char *out, size_t n) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/onnx_check.py' '%s' 2>&1", getenv("NB_SOURCE_DIR"), path);
    ck_assert_msg(nb_test_sh(cmd, out, n) == 0, "onnx.checker refused %s:\n%s", path, out);
}

static void write_bytes(const char *path, const void *v, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f && fwrite(v, 1, n, f) == n && fclose(f) == 0, "%s: %s", path, strerror(errno));
}

/* ORT's logits (N, classes) for the N images x (N, C, H, W), H = W, through
 * path at a graph optimization level: scripts/ort_eval.js on a dump folder
 * (images.f32, labels.i32), which writes logits_ort.f32 there. */
static void ort_run(const char *path, const char *optimization, const float *x, int N, int C, int H, int W,
                    float *logits, int classes) {
    ck_assert(H == W);
    char dir[1100], file[1200];
    snprintf(dir, sizeof dir, "%s", nb_test_tmp_path("ort"));
    ck_assert(mkdir(dir, 0755) == 0 || errno == EEXIST);
    snprintf(file, sizeof file, "%s/images.f32", dir);
    write_bytes(file, x, sizeof(float) * (size_t)N * C * H * W);
    int32_t *labels = calloc((size_t)N, sizeof(int32_t));
    snprintf(file, sizeof file, "%s/labels.i32", dir);
    write_bytes(file, labels, sizeof(int32_t) * (size_t)N);
    free(labels);
    char cmd[8192], msg[4096];
    snprintf(cmd, sizeof cmd, "node '%s/scripts/ort_eval.js' '%s' '%s' --channels %d --batch %d --optimization %s --json 2>&1",
             getenv("NB_SOURCE_DIR"), path, dir, C, N, optimization);
    ck_assert_msg(nb_test_sh(cmd, msg, sizeof msg) == 0, "ONNX Runtime on %s:\n%s", path, msg);
    snprintf(file, sizeof file, "%s/logits_ort.f32", dir);
    FILE *f = fopen(file, "rb");
    ck_assert_msg(f != NULL, "%s: %s", file, strerror(errno));
    ck_assert_msg(fread(logits, sizeof(float), (size_t)N * classes, f) == (size_t)N * classes && fgetc(f) == EOF,
                  "%s: not %d x %d logits", file, N, classes);
    fclose(f);
}

/* --------------------------------------------------- models vs ORT */

typedef struct {
    nb_test_qcase q;
    int wasym;        /* asymmetric weights (uniform: zero points; adq: codebooks without a zero, learned α) */
    int opset;
    const char *must; /* an op the graph must hold ("op NAME") */
    int rewritten;    /* ONNX Runtime's optimizer requantizes some layer: a conv between a uniform
                         DequantizeLinear and a QuantizeLinear (a block's conv1, before conv2) */
} ocase;

static const ocase cases[] = {
    {{"resnet20 (A) LSQ W4A4", "resnet20", NB_SHORTCUT_A, "lsq", "tensor", 4, 0, "lsq", 4, 1, 0, 3}, 0, 13, "op Pad", 1},
    {{"smallcnn PTQ per-channel W8A8, folded", "smallcnn", 0, "uniform", "channel", 8, 0, "uniform", 8, 1, 1, 0}, 0, 17,
     "op MaxPool", 0},
    {{"smallcnn PTQ asymmetric W4A4", "smallcnn", 0, "uniform", "tensor", 4, 0, "uniform", 4, 0, 1, 0}, 1, 13,
     "op QuantizeLinear", 0},
    {{"resnet20 (B) ADQ 3-bit tensor codebooks, LSQ A4", "resnet20", NB_SHORTCUT_B, "adq", "tensor", 3, 0, "lsq", 4, 1,
      0, 3},
     0, 15, "op Gather", 1},
    {{"smallcnn ADQ 3-bit channel codebooks (asym, learned alpha), LSQ+ A4", "smallcnn", 0, "adq", "channel", 3, 0,
      "lsq+", 4, 1, 0, 3},
     1, 17, "op Sub", 0},
    {{"resnet20 (A) LSQ W4, N2UQ A3", "resnet20", NB_SHORTCUT_A, "lsq", "channel", 4, 0, "n2uq", 3, 1, 0, 3}, 0, 14,
     "op GreaterOrEqual", 0},
    {{"smallcnn per-group W4 (float weights), PACT A4", "smallcnn", 0, "uniform", "group", 4, 32, "pact", 4, 1, 0, 2}, 0,
     16, "op Clip", 0},
    {{"smallcnn ternary weights, LSQ A4", "smallcnn", 0, "ternary", "channel", 2, 0, "lsq", 4, 1, 0, 2}, 0, 13,
     "op DequantizeLinear", 0},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

enum { NTEST = 200 };

/* n images from the split of the CIFAR fixture, normalised as the loader
 * does (no augmentation, file order). */
static float *cifar_images(const char *split, int n) {
    nb_dataset *ds;
    ck_assert_msg(nb_dataset_open(nb_test_shared_data("cifar10-mini.h5"), split, NULL, &ds) == NB_OK, "%s",
                  nb_last_error());
    nb_loader_opts o = nb_loader_opts_default();
    o.batch = n;
    o.shuffle = o.augment = o.prefetch = 0;
    nb_loader *l;
    ck_assert(nb_loader_new(ds, &o, &l) == NB_OK && nb_loader_start_epoch(l, 0) == NB_OK);
    const float *img;
    const int32_t *lab;
    int got;
    ck_assert(nb_loader_next(l, &img, &lab, &got) == NB_OK && got == n);
    float *x = malloc(sizeof(float) * (size_t)n * 3 * 32 * 32);
    memcpy(x, img, sizeof(float) * (size_t)n * 3 * 32 * 32);
    nb_loader_free(l);
    nb_dataset_free(ds);
    return x;
}

/* The case's model (nb_test_export_model: random batchnorm statistics,
 * calibrated, a few SGD steps). */
static nb_model *case_model(const ocase *c) {
    nb_quant_policy p;
    nb_test_qcase_policy(&c->q, &p);
    p.weights.symmetric = !c->wasym;
    p.adq.learn_scale = c->wasym;
    return nb_test_export_model(c->q.arch, c->q.shortcut, &p, c->q.steps);
}

/* One layer of an IR on its own: input (N, ic, H, W) -> the layer (a
 * linear one behind a 1x1 average pool, which is exact), random inputs that
 * cover its input grid; ORT's output against the IR's definition computed
 * in double from nibble's x̂ and ŵ, mul[c]·Σ ŵ·x̂ + bias[c]. The input
 * quantizer gives the same x̂ bits on both sides (test_onnx_input_exact),
 * so the difference is the float summation alone: within 2^-16 of Σ|terms|
 * per output (576 terms at most). Returns the largest difference relative
 * to that sum. */
static double layer_vs_ort(const nb_xlayer *l0, int opset) {
    enum { N = 2 };
    nb_xlayer l = *l0; /* shares l0's arrays but mul: every third channel's negated, as a negative
                          batchnorm γ would (negative DequantizeLinear scales) */
    float *mul = malloc(sizeof(float) * (size_t)l.oc);
    for (int c = 0; c < l.oc; c++) mul[c] = c % 3 == 1 ? -l0->mul[c] : l0->mul[c];
    l.mul = mul;
    const int H = l.is_conv ? 6 : 1, W = H;
    const int OH = l.is_conv ? (H + 2 * l.pad - l.kh) / l.stride + 1 : 1, OW = OH;
    nb_xnode conv[2] = {{NB_G_INPUT, -1, -1, -1, 0, 0, 0, 0}, {NB_G_CONV, 0, -1, 0, 0, 0, 0, 0}};
    nb_xnode lin[3] = {{NB_G_INPUT, -1, -1, -1, 0, 0, 0, 0}, {NB_G_GAP, 0, -1, -1, 0, 0, 0, 0},
                       {NB_G_LINEAR, 1, -1, 0, 0, 0, 0, 0}};
    nb_xmodel x;
    memset(&x, 0, sizeof x);
    snprintf(x.arch, sizeof x.arch, "layer");
    x.in_c = l.ic;
    x.in_h = H;
    x.in_w = W;
    x.n_layers = 1;
    x.layers = &l;
    x.n_nodes = l.is_conv ? 2 : 3;
    x.nodes = l.is_conv ? conv : lin;
    char path[1024];
    snprintf(path, sizeof path, "%s", nb_test_tmp_path("layer.onnx"));
    ck_assert_msg(nb_export_onnx(&x, path, opset) == NB_OK, "%s: %s", l.name, nb_last_error());

    /* inputs over the grid and a little beyond */
    const size_t nin = (size_t)N * l.ic * H * W, nout = (size_t)N * l.oc * OH * OW;
    float *in = malloc(sizeof(float) * nin), *xq = malloc(sizeof(float) * nin), *w = malloc(sizeof(float) * l.numel);
    float *got = malloc(sizeof(float) * nout);
    nb_rng r;
    nb_rng_seed(&r, 77, 0);
    for (size_t i = 0; i < nin; i++) {
        const float u = nb_rng_uniform(&r);
        if (l.akind == NB_XA_UNIFORM)
            in[i] = ((float)(l.aqmin - l.azero - 2) + u * (float)(l.aqmax - l.aqmin + 4)) * l.ascale + l.aoffset;
        else if (l.akind == NB_XA_N2UQ)
            in[i] = -0.2f * l.thr[0] + u * 1.3f * l.thr[l.n_thr - 1];
        else
            in[i] = 2.0f * nb_rng_normal(&r);
    }
    memcpy(xq, in, sizeof(float) * nin);
    nb_xlayer_quant_input(&l, xq, nin);
    nb_xlayer_weights(&l, w);
    ort_run(path, "disabled", in, N, l.ic, H, W, got, l.oc * OH * OW);

    double worst = 0.0;
    const int KH = l.is_conv ? l.kh : 1, KW = l.is_conv ? l.kw : 1;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < l.oc; c++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double sum = 0.0, mag = 0.0;
                    for (int ci = 0; ci < l.ic; ci++)
                        for (int kh = 0; kh < KH; kh++)
                            for (int kw = 0; kw < KW; kw++) {
                                const int ih = oh * l.stride - l.pad + kh, iw = ow * l.stride - l.pad + kw;
                                if (l.is_conv && (ih < 0 || ih >= H || iw < 0 || iw >= W)) continue;
                                const double t = (double)w[((size_t)(c * l.ic + ci) * KH + kh) * KW + kw] *
                                                 (double)xq[((size_t)(n * l.ic + ci) * H + (l.is_conv ? ih : 0)) * W +
                                                            (l.is_conv ? iw : 0)];
                                sum += t;
                                mag += fabs(t);
                            }
                    const double want = (double)l.mul[c] * sum + (double)l.bias[c];
                    mag = fabs((double)l.mul[c]) * mag + fabs((double)l.bias[c]) + 1e-30;
                    const double d = fabs((double)got[((size_t)(n * l.oc + c) * OH + oh) * OW + ow] - want) / mag;
                    ck_assert_msg(d <= 0x1p-16, "%s: output (%d, %d, %d, %d): ORT %.9g, want %.9g (|terms| %g)", l.name,
                                  n, c, oh, ow, (double)got[((size_t)(n * l.oc + c) * OH + oh) * OW + ow], want, mag);
                    worst = fmax(worst, d);
                }
    free(in);
    free(xq);
    free(w);
    free(got);
    free(mul);
    return worst;
}

typedef struct {
    float lo, hi;      /* nibble's logits range */
    float maxd;        /* max |nibble - ORT| */
    int moved;         /* images whose logits differ by more than 1e-5 of the range */
    int agree;         /* images with the same top-1 */
    float flip_margin; /* the largest nibble top-2 margin among the images that disagree */
} agreement;

/* ORT's logits for the NTEST images x through path at an optimization
 * level, against nibble's logits y (NTEST, 10). */
static agreement vs_ort(const char *path, const char *optimization, const float *x, const float *y) {
    float *o = malloc(sizeof(float) * NTEST * 10);
    ort_run(path, optimization, x, NTEST, 3, 32, 32, o, 10);
    agreement r = {INFINITY, -INFINITY, 0.0f, 0, 0, 0.0f};
    for (int i = 0; i < NTEST * 10; i++) {
        r.lo = fminf(r.lo, y[i]);
        r.hi = fmaxf(r.hi, y[i]);
        r.maxd = fmaxf(r.maxd, fabsf(y[i] - o[i]));
    }
    for (int n = 0; n < NTEST; n++) {
        const float *a = y + n * 10, *b = o + n * 10;
        int ta = 0, tb = 0;
        float d = 0.0f, second = -INFINITY;
        for (int k = 0; k < 10; k++) {
            ta = a[k] > a[ta] ? k : ta;
            tb = b[k] > b[tb] ? k : tb;
            d = fmaxf(d, fabsf(a[k] - b[k]));
        }
        for (int k = 0; k < 10; k++)
            if (k != ta) second = fmaxf(second, a[k]);
        r.moved += d > 1e-5f * (r.hi - r.lo);
        r.agree += ta == tb;
        if (ta != tb) r.flip_margin = fmaxf(r.flip_margin, a[ta] - second);
    }
    free(o);
    return r;
}

/* Most images reproduce nibble's logits to float rounding (the median
 * image did not move), and top-1 agrees on 97% of them: the images that
 * moved are those where one activation landed on the other side of a
 * rounding boundary (the two sides sum in different orders), which then
 * moves the values the next quantizers see. */
static void check_agreement(const char *name, const char *how, const agreement *a) {
    ck_assert_msg(a->moved <= NTEST / 2, "%s: ORT %s: %d of %d images moved (max |diff| %g)", name, how, a->moved,
                  NTEST, (double)a->maxd);
    ck_assert_msg(a->agree >= NTEST * 97 / 100, "%s: ORT %s: top-1 agrees on %d of %d images", name, how, a->agree,
                  NTEST);
}

START_TEST(test_onnx_model) {
    const ocase *c = &cases[_i];
    if (!nb_test_shared_data("cifar10-mini.h5")) {
        nb_test_skip(c->q.name, "../shared/data/cifar10-mini.h5 absent");
        return;
    }
    float *test = cifar_images("test", NTEST);
    nb_model *m = case_model(c);

    /* nibble's fake-quant evaluation forward */
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_model_set_pass(m, NB_PASS_EVAL);
    nb_tensor x;
    nb_tensor_wrap(&x, test, 4, (int[]){NTEST, 3, 32, 32});
    nb_tensor *y = nb_model_forward(m, t, &x);
    ck_assert(y->ndim == 2 && y->shape[0] == NTEST && y->shape[1] == 10);

    nb_xmodel *xm;
    ck_assert_msg(nb_export_build(m, &xm) == NB_OK, "%s: %s", c->q.name, nb_last_error());
    char path[1024];
    snprintf(path, sizeof path, "%s", nb_test_tmp_path("model.onnx"));
    ck_assert_msg(nb_export_onnx(xm, path, c->opset) == NB_OK, "%s: %s", c->q.name, nb_last_error());

    if (!have_onnx_python()) {
        nb_test_skip(c->q.name, "/usr/bin/python3 cannot import onnx (python3-onnx): checker not run");
    } else {
        char rep[16384], want[128];
        onnx_check(path, rep, sizeof rep);
        snprintf(want, sizeof want, "opset %d\n", c->opset);
        ck_assert_msg(strstr(rep, want), "%s:\n%s", c->q.name, rep);
        ck_assert_msg(strstr(rep, c->opset <= 14 ? "ir_version 7\n" : "ir_version 8\n"), "%s:\n%s", c->q.name, rep);
        ck_assert_msg(strstr(rep, "input input Nx3x32x32\n") && strstr(rep, "output logits Nx10\n"), "%s:\n%s",
                      c->q.name, rep);
        ck_assert_msg(strstr(rep, c->must), "%s: no %s in\n%s", c->q.name, c->must, rep);
        snprintf(want, sizeof want, "meta arch=%s\n", c->q.arch);
        ck_assert_msg(strstr(rep, want), "%s:\n%s", c->q.name, rep);
    }

    if (!ort_dir()) {
        nb_test_skip(c->q.name, "node or node_modules/onnxruntime-node absent: ONNX Runtime not run");
    } else {
        /* each kind of layer on its own: first, strided, 1x1, linear, ... */
        char seen[32][64];
        int nseen = 0;
        double worst = 0.0;
        for (int i = 0; i < xm->n_layers; i++) {
            const nb_xlayer *l = &xm->layers[i];
            char key[64];
            snprintf(key, sizeof key, "%d %d %d %d %d %d %d", l->is_conv, l->kh, l->stride, l->wkind, l->gran,
                     l->akind, l->aqmin < 0);
            int k = 0;
            while (k < nseen && strcmp(seen[k], key)) k++;
            if (k < nseen || nseen == 32) continue;
            snprintf(seen[nseen++], sizeof seen[0], "%s", key);
            worst = fmax(worst, layer_vs_ort(l, c->opset));
        }
        printf("%s: %d layers alone: ORT within %.2g of the sum of |terms|\n", c->q.name, nseen, worst);

        const agreement exact = vs_ort(path, "disabled", test, y->data), user = vs_ort(path, "all", test, y->data);
        printf("%s: opset %d, logits in [%.3g, %.3g]; ORT as written: max |diff| %.3g, %d/%d images moved, top-1 "
               "%d/%d (largest margin flipped %.3g); ORT optimized: max |diff| %.3g, %d moved, top-1 %d/%d\n",
               c->q.name, c->opset, (double)exact.lo, (double)exact.hi, (double)exact.maxd, exact.moved, NTEST,
               exact.agree, NTEST, (double)exact.flip_margin, (double)user.maxd, user.moved, user.agree, NTEST);
        check_agreement(c->q.name, "as written", &exact);
        if (!c->rewritten) check_agreement(c->q.name, "optimized", &user);
        ck_assert_msg(user.maxd == user.maxd && user.maxd < INFINITY, "%s: ORT optimized gives non-finite logits",
                      c->q.name);
    }
    nb_xmodel_free(xm);
    nb_tape_free(t);
    nb_model_free(m);
    free(test);
}
END_TEST

/* A trained checkpoint (experiments/pretrained, ResNet-20 LSQ W4A4, 87.75%)
 * through `nibble export --format onnx`: the checker, the normalisation in
 * the metadata, and ORT against the checkpoint's own fake-quant forward. */
START_TEST(test_onnx_cli_pretrained) {
    char ckpt[1024], path[1024], cmd[4096], out[8192];
    snprintf(ckpt, sizeof ckpt, "%s/experiments/pretrained/cifar10_resnet20_lsq_w4a4_e15.h5", getenv("NB_SOURCE_DIR"));
    const char *data = nb_test_shared_data("cifar10-mini.h5");
    if (!nb_test_cli() || access(ckpt, R_OK) != 0 || !data) {
        nb_test_skip("test_onnx_cli_pretrained", "the CLI, the pretrained checkpoint or cifar10-mini.h5 absent");
        return;
    }
    snprintf(path, sizeof path, "%s", nb_test_tmp_path("pretrained.onnx"));
    snprintf(cmd, sizeof cmd, "'%s' export '%s' --format onnx --opset 17 -o '%s' --data '%s' 2>&1", nb_test_cli(), ckpt,
             path, data);
    ck_assert_msg(nb_test_sh(cmd, out, sizeof out) == 0, "%s", out);
    ck_assert_msg(strstr(out, "wrote ") && strstr(out, "ONNX QDQ"), "%s", out);
    if (have_onnx_python()) {
        onnx_check(path, out, sizeof out);
        ck_assert_msg(strstr(out, "opset 17\n") && strstr(out, "meta mean=0.4") && strstr(out, "meta std=0.2") &&
                          strstr(out, "meta bits.layer2.0.conv1=w4 a4 (lsq, lsq)\n"),
                      "%s", out);
    }
    if (!ort_dir()) {
        nb_test_skip("test_onnx_cli_pretrained", "node or node_modules/onnxruntime-node absent");
        return;
    }
    nb_config cfg;
    nb_model *m;
    ck_assert_msg(nb_config_from_checkpoint(ckpt, NULL, 0, &cfg) == NB_OK, "%s", nb_last_error());
    ck_assert_msg(nb_model_from_config(&cfg, ckpt, 3, 32, &m) == NB_OK, "%s", nb_last_error());
    float *test = cifar_images("test", NTEST);
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_model_set_pass(m, NB_PASS_EVAL);
    nb_tensor x;
    nb_tensor_wrap(&x, test, 4, (int[]){NTEST, 3, 32, 32});
    const nb_tensor *y = nb_model_forward(m, t, &x);
    const agreement exact = vs_ort(path, "disabled", test, y->data), user = vs_ort(path, "all", test, y->data);
    printf("pretrained LSQ W4A4: logits in [%.3g, %.3g]; ORT as written: max |diff| %.3g, %d/%d images moved, top-1 "
           "%d/%d; ORT optimized: max |diff| %.3g, top-1 %d/%d\n",
           (double)exact.lo, (double)exact.hi, (double)exact.maxd, exact.moved, NTEST, exact.agree, NTEST,
           (double)user.maxd, user.agree, NTEST);
    check_agreement("pretrained LSQ W4A4", "as written", &exact);
    nb_tape_free(t);
    nb_model_free(m);
    free(test);
}
END_TEST

/* --------------------------------------- exact input quantizers */

enum { QK = 64 }; /* values per "image" (the layer's width) */

/* A one-layer IR: input (N, QK, 1, 1) -> average pool (exact on 1x1) ->
 * linear with identity float weights and zero bias, whose input quantizer
 * is l's: the logits are x̂. Owns nothing: the arrays are static. */
static nb_xmodel identity_ir(nb_xlayer *l) {
    static float eye[QK * QK], ones[QK], zeros[QK];
    static nb_xnode nodes[3] = {{NB_G_INPUT, -1, -1, -1, 0, 0, 0, 0},
                                {NB_G_GAP, 0, -1, -1, 0, 0, 0, 0},
                                {NB_G_LINEAR, 1, -1, 0, 0, 0, 0, 0}};
    for (int i = 0; i < QK; i++) {
        eye[i * QK + i] = 1.0f;
        ones[i] = 1.0f;
    }
    snprintf(l->name, sizeof l->name, "fc");
    l->is_conv = 0;
    l->oc = l->ic = QK;
    l->kh = l->kw = 1;
    l->numel = QK * QK;
    l->wkind = NB_XW_FLOAT;
    l->wbits = 32;
    l->wfloat = eye;
    l->mul = ones;
    l->bias = zeros;
    nb_xmodel x;
    memset(&x, 0, sizeof x);
    snprintf(x.arch, sizeof x.arch, "identity");
    x.in_c = QK;
    x.in_h = x.in_w = 1;
    x.n_layers = 1;
    x.layers = l;
    x.n_nodes = 3;
    x.nodes = nodes;
    return x;
}

/* Values at every rounding tie and grid point of a uniform grid (offset
 * beta), one float either side of them, beyond both ends, and random ones:
 * n in all. */
static void uniform_probe(const nb_xlayer *l, float *v, int n, nb_rng *r) {
    int k = 0;
    for (int q = l->aqmin - 2; q <= l->aqmax + 2 && k + 6 <= n; q++) {
        const float tie = (float)(q - l->azero) * l->ascale + 0.5f * l->ascale + l->aoffset;
        const float pt = (float)(q - l->azero) * l->ascale + l->aoffset;
        v[k++] = tie;
        v[k++] = nextafterf(tie, -INFINITY);
        v[k++] = nextafterf(tie, INFINITY);
        v[k++] = pt;
        v[k++] = nextafterf(pt, -INFINITY);
        v[k++] = nextafterf(pt, INFINITY);
    }
    const float lo = (float)(l->aqmin - l->azero - 3) * l->ascale, span = (float)(l->aqmax - l->aqmin + 6) * l->ascale;
    while (k < n) v[k++] = lo + span * nb_rng_uniform(r) + l->aoffset;
}

/* Runs l's quantizer through ORT on v (N·QK values) and compares the bits
 * with want. */
static void ort_exact(nb_xlayer *l, const float *v, const float *want, int N, const char *what) {
    nb_xmodel x = identity_ir(l);
    char path[1024];
    snprintf(path, sizeof path, "%s", nb_test_tmp_path("quant.onnx"));
    ck_assert_msg(nb_export_onnx(&x, path, 13) == NB_OK, "%s: %s", what, nb_last_error());
    float *got = malloc(sizeof(float) * (size_t)N * QK);
    ort_run(path, "all", v, N, QK, 1, 1, got, QK);
    for (int i = 0; i < N * QK; i++)
        ck_assert_msg(!memcmp(&got[i], &want[i], sizeof(float)), "%s: x = %.9g: ORT %.9g, nibble %.9g", what,
                      (double)v[i], (double)got[i], (double)want[i]);
    free(got);
}

START_TEST(test_onnx_input_exact) {
    if (!ort_dir()) {
        nb_test_skip("test_onnx_input_exact", "node or node_modules/onnxruntime-node absent");
        return;
    }
    enum { N = 8 };
    nb_rng r;
    nb_rng_seed(&r, 5, 0);
    float v[N * QK], want[N * QK];
    /* uniform grids: nibble's fake-quant kernel (asymmetric, signed),
     * LSQ+ with its offset β; scales not powers of two */
    static const struct {
        int qmin, qmax, z;
        float s, beta;
    } grids[] = {{0, 7, 3, 0.1f, 0.0f}, {-8, 7, 0, 0.37f, 0.0f}, {0, 255, 37, 0.0123f, 0.0f},
                 {-128, 127, 0, 0.021f, 0.0f}, {-8, 7, 0, 0.13f, -0.31f}};
    for (int g = 0; g < (int)(sizeof grids / sizeof grids[0]); g++) {
        nb_xlayer l;
        memset(&l, 0, sizeof l);
        l.akind = NB_XA_UNIFORM;
        l.abits = 8;
        l.aqmin = grids[g].qmin;
        l.aqmax = grids[g].qmax;
        l.azero = grids[g].z;
        l.ascale = grids[g].s;
        l.aoffset = grids[g].beta;
        uniform_probe(&l, v, N * QK, &r);
        const nb_fq_layout L = {1, (size_t)N * QK, (size_t)N * QK};
        if (l.aoffset == 0.0f) {
            const float zf = (float)l.azero;
            nb_fq_forward(&L, &l.ascale, &zf, l.aqmin, l.aqmax, v, want);
        } else {
            nb_tensor *step = nb_tensor_new(1, (int[]){1}), *off = nb_tensor_new(1, (int[]){1});
            step->data[0] = l.ascale;
            off->data[0] = l.aoffset;
            const nb_lsq_args a = {NB_LSQ_PLUS, L, step, off, l.aqmin, l.aqmax, 1.0f};
            nb_lsq_forward(&a, v, want);
            nb_tensor_free(step);
            nb_tensor_free(off);
        }
        /* the IR's own definition agrees with the kernels */
        float ir[N * QK];
        memcpy(ir, v, sizeof ir);
        nb_xlayer_quant_input(&l, ir, N * QK);
        ck_assert(!memcmp(ir, want, sizeof ir));
        char what[96];
        snprintf(what, sizeof what, "grid [%d, %d] z %d s %g beta %g", l.aqmin, l.aqmax, l.azero, (double)l.ascale,
                 (double)l.aoffset);
        ort_exact(&l, v, want, N, what);
    }

    /* N2UQ, 3 bits: t0 and widths multiples of 2^-10 (the thresholds are
     * exact however they are summed); values at, just below and just above
     * each threshold, then random ones */
    nb_tensor *t0 = nb_tensor_new(1, (int[]){1}), *a = nb_tensor_new(1, (int[]){6}), *s = nb_tensor_new(1, (int[]){1});
    t0->data[0] = ldexpf(97.0f, -10);
    float thr[7];
    thr[0] = t0->data[0];
    for (int i = 0; i < 6; i++) {
        a->data[i] = ldexpf((float)(150 + 37 * i), -10);
        thr[i + 1] = thr[i] + a->data[i];
    }
    s->data[0] = 0.173f;
    int k = 0;
    for (int i = 0; i < 7; i++) {
        v[k++] = thr[i];
        v[k++] = nextafterf(thr[i], -INFINITY);
        v[k++] = nextafterf(thr[i], INFINITY);
    }
    while (k < N * QK) v[k++] = -0.5f + 2.5f * nb_rng_uniform(&r);
    const nb_n2uq_args p = {7, t0, a, s, 1.0f};
    nb_n2uq_forward(&p, v, N * QK, want);
    nb_xlayer l;
    memset(&l, 0, sizeof l);
    l.akind = NB_XA_N2UQ;
    l.abits = 3;
    l.aqmax = l.n_thr = 7;
    l.ascale = s->data[0];
    l.thr = thr;
    ort_exact(&l, v, want, N, "n2uq 3 bits");
    nb_tensor_free(t0);
    nb_tensor_free(a);
    nb_tensor_free(s);
}
END_TEST

/* ------------------------------------------------------------- errors */

START_TEST(test_onnx_errors) {
    nb_xlayer l;
    memset(&l, 0, sizeof l);
    nb_xmodel x = identity_ir(&l);
    const char *path = nb_test_tmp_path("err.onnx");
    static const int bad[] = {0, 12, 18, 21};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(nb_export_onnx(&x, path, bad[i]), NB_STATUS_BAD_INPUT);
        char want[64];
        snprintf(want, sizeof want, "opset %d: nibble writes 13 to 17", bad[i]);
        ck_assert_str_eq(nb_last_error(), want);
    }
    ck_assert(access(path, F_OK) != 0);
    /* an unwritable place: the error names the path, nothing is left */
    char nodir[1100];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/m.onnx", nb_test_tmpdir());
    ck_assert_int_eq(nb_export_onnx(&x, nodir, 13), NB_STATUS_IO);
    ck_assert_msg(strstr(nb_last_error(), nodir), "%s", nb_last_error());
    /* a directory in the way of the rename */
    const char *asdir = nb_test_tmp_path("adir.onnx");
    ck_assert(mkdir(asdir, 0755) == 0);
    ck_assert_int_eq(nb_export_onnx(&x, asdir, 13), NB_STATUS_IO);
    ck_assert_msg(strstr(nb_last_error(), asdir), "%s", nb_last_error());
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", asdir, (long)getpid());
    ck_assert_msg(access(tmp, F_OK) != 0, "%s left behind", tmp);
    /* a malformed node list */
    x.nodes[2].a = 2;
    ck_assert_int_eq(nb_export_onnx(&x, path, 13), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "node 2 (linear)"), "%s", nb_last_error());
    x.nodes[2].a = 1;
    /* every allocation failing in turn: out of memory, nothing written */
    int n = 1;
    for (;; n++) {
        nb_alloc_fail_after(n);
        const nb_status st = nb_export_onnx(&x, path, 13);
        nb_alloc_fail_after(0);
        if (st == NB_OK) break;
        ck_assert_int_eq(st, NB_STATUS_OOM);
        ck_assert(access(path, F_OK) != 0);
    }
    ck_assert_int_gt(n, 1);
    ck_assert(access(path, R_OK) == 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("onnx");
    TCase *tc = tcase_create("onnx");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_onnx_model, 0, NCASES);
    tcase_add_test(tc, test_onnx_cli_pretrained);
    tcase_add_test(tc, test_onnx_input_exact);
    tcase_add_test(tc, test_onnx_errors);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
