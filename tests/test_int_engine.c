/* The integer engine (quant/int_engine.c, quant/int_kernel.c): hand-worked
 * convolutions (codes, channel scales with a negative multiplier, zero
 * padding on an asymmetric grid, per-group scales); the fixed-point
 * requantizer against exact and double-precision references (negative
 * multipliers, ties); every kernel path (VNNI, AVX2, scalar) bit for bit
 * on random graphs; errors named; and the engine against nibble's own
 * fake-quant evaluation forward of real models on CIFAR images. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "int_kernel.h"
#include "nb_export.h"
#include "nb_test.h"

/* ------------------------------------------------------- hand-made graphs */

/* A model of up to 6 layers and 16 nodes (the engine copies what it
 * needs; the arrays the layers point at belong to the caller). */
typedef struct {
    nb_xmodel x;
    nb_xlayer l[6];
    nb_xnode n[16];
} hand;

static void hand_init(hand *h, int C, int H, int W, int classes) {
    memset(h, 0, sizeof *h);
    h->x.opts = nb_model_opts_default();
    h->x.opts.num_classes = classes;
    h->x.in_c = C, h->x.in_h = H, h->x.in_w = W;
    h->x.layers = h->l;
    h->x.nodes = h->n;
    h->n[0] = (nb_xnode){NB_G_INPUT, -1, -1, -1, 0, 0, 0, 0};
    h->x.n_nodes = 1;
}

static int hand_node(hand *h, nb_gop op, int a, int b, int layer) {
    h->n[h->x.n_nodes] = (nb_xnode){op, a, b, layer, 0, 0, 0, 0};
    return h->x.n_nodes++;
}

/* A uniform-weight layer with per-channel scales and a uniform input grid;
 * the caller points codes, scale, zero_point, mul, bias at its arrays. */
static nb_xlayer *hand_layer(hand *h, const char *name, int is_conv, int oc, int ic, int k, int stride, int pad) {
    nb_xlayer *l = &h->l[h->x.n_layers++];
    snprintf(l->name, sizeof l->name, "%s", name);
    l->is_conv = is_conv;
    l->oc = oc, l->ic = ic, l->kh = l->kw = k;
    l->stride = stride, l->pad = pad;
    l->numel = (size_t)oc * ic * k * k;
    l->wkind = NB_XW_UNIFORM;
    l->qmin = -8, l->qmax = 7;
    l->gran = NB_QG_CHANNEL;
    l->L = (nb_fq_layout){oc, l->numel / (size_t)oc, l->numel / (size_t)oc};
    l->n_scales = oc;
    l->akind = NB_XA_UNIFORM;
    l->aqmin = -8, l->aqmax = 7;
    return l;
}

/* Every kernel path this CPU runs, one after the other. */
static int n_paths(nb_ik_path *p) {
    int n = 0;
    for (int k = 0; k < NB_IK_COUNT; k++)
        if (nb_ik_path_supported((nb_ik_path)k)) p[n++] = (nb_ik_path)k;
    return n;
}

static void use_path(nb_ik_path p) { setenv("NB_INT_KERNEL", nb_ik_path_name(p), 1); }

static void run_engine(const nb_xmodel *x, const float *img, int N, float *out) {
    nb_int_engine *e = NULL;
    ck_assert_msg(nb_int_engine_new(x, &e) == NB_OK, "%s", nb_last_error());
    ck_assert_msg(nb_int_engine_forward(e, img, N, out) == NB_OK, "%s", nb_last_error());
    nb_int_engine_free(e);
}

/* x on one image gives the n logits want (within tol) on every path. */
static void expect_paths(const nb_xmodel *x, const float *img, const float *want, int n, float tol) {
    nb_ik_path p[NB_IK_COUNT];
    for (int k = 0, np = n_paths(p); k < np; k++) {
        use_path(p[k]);
        float y[16];
        run_engine(x, img, 1, y);
        for (int i = 0; i < n; i++)
            ck_assert_msg(fabsf(y[i] - want[i]) <= tol, "%s: logit %d is %.9g, want %.9g", nb_ik_path_name(p[k]), i,
                          (double)y[i], (double)want[i]);
    }
    unsetenv("NB_INT_KERNEL");
}

/* One 3x3 conv on a 3x3 image, no padding: a 1x1 output, the logits.
 * Input grid s = 0.5, z = 0, [-8, 7]:
 *   x  = 0.2 -0.4 1.0 / 0.6 0.0 -1.2 / 0.3 0.7 2.0
 *   q  = 0   -1   2   / 1   0   -2   / 1   1   4      (rint(x/0.5), ties to even)
 * channel 0: Sobel codes 1 0 -1 / 2 0 -2 / 1 0 -1, s_w 0.25, mul 2, bias 0.5
 *   acc = -2 + 2 + 4 + 1 - 4 = 1,   y = 1·0.5·0.25·2 + 0.5 = 0.75
 * channel 1: Laplacian 0 1 0 / 1 -4 1 / 0 1 0, s_w 0.125, mul -1, bias 0.25
 *   acc = -1 + 1 - 2 + 1 = -1,      y = -1·0.5·0.125·(-1) + 0.25 = 0.3125 */
START_TEST(test_hand_conv) {
    static int32_t codes[18] = {1, 0, -1, 2, 0, -2, 1, 0, -1, 0, 1, 0, 1, -4, 1, 0, 1, 0}, zp[2] = {0, 0};
    static float scale[2] = {0.25f, 0.125f}, mul[2] = {2.0f, -1.0f}, bias[2] = {0.5f, 0.25f};
    const float img[9] = {0.2f, -0.4f, 1.0f, 0.6f, 0.0f, -1.2f, 0.3f, 0.7f, 2.0f};
    hand h;
    hand_init(&h, 1, 3, 3, 2);
    nb_xlayer *l = hand_layer(&h, "conv", 1, 2, 1, 3, 1, 0);
    l->codes = codes, l->scale = scale, l->zero_point = zp, l->mul = mul, l->bias = bias;
    l->ascale = 0.5f;
    hand_node(&h, NB_G_CONV, 0, -1, 0);
    expect_paths(&h.x, img, (const float[]){0.75f, 0.3125f}, 2, 0.0f);
    /* float input (no quantizer): the float path, y = Σ ŵ·x·mul + bias */
    l->akind = NB_XA_NONE;
    float want[2];
    for (int c = 0; c < 2; c++) {
        double v = bias[c];
        for (int i = 0; i < 9; i++) v += (double)scale[c] * codes[c * 9 + i] * (double)img[i] * mul[c];
        want[c] = (float)v;
    }
    expect_paths(&h.x, img, want, 2, 1e-6f);
}
END_TEST

/* Padding is real 0, which an asymmetric grid codes as z. A 2x2 image, 3x3
 * kernel, pad 1, stride 2: one output whose window holds the image at
 * kernel taps (1..2, 1..2) and padding elsewhere. Grid s = 0.25, z = 3,
 * [0, 15]: x = 1.0 -0.5 / 0.25 2.0 -> q = 7 1 / 4 11, q - z = 4 -2 / 1 8.
 * Weights (s_w 0.5) 3 -2 5 / 1 2 -1 / -3 4 6: acc = 2·4 - 1·(-2) + 4·1 + 6·8
 * = 62, y = 62·0.25·0.5 = 7.75 (padding coded 0 instead of z would add
 * -3·(3 - 2 + 5 + 1 - 3) = -12 to acc). */
START_TEST(test_hand_padding) {
    static int32_t codes[9] = {3, -2, 5, 1, 2, -1, -3, 4, 6}, zp[1] = {0};
    static float scale[1] = {0.5f}, mul[1] = {1.0f}, bias[1] = {0.0f};
    const float img[4] = {1.0f, -0.5f, 0.25f, 2.0f};
    hand h;
    hand_init(&h, 1, 2, 2, 1);
    nb_xlayer *l = hand_layer(&h, "conv", 1, 1, 1, 3, 2, 1);
    l->codes = codes, l->scale = scale, l->zero_point = zp, l->mul = mul, l->bias = bias;
    l->ascale = 0.25f, l->azero = 3, l->aqmin = 0, l->aqmax = 15;
    hand_node(&h, NB_G_CONV, 0, -1, 0);
    expect_paths(&h.x, img, (const float[]){7.75f}, 1, 0.0f);
}
END_TEST

/* Per-group scales: a linear layer over 8 inputs in 2 groups of 4. Input
 * grid s = 0.5: q = 1 2 3 4 -1 -2 -3 -4. Row 0: codes all 1, group scales
 * 0.5, 0.25: acc 10, -10 -> 0.5·(10·0.5 - 10·0.25) = 1.25, + bias 0.1.
 * Row 1: codes 1 0 0 0 0 0 0 2, scales 1, 0.125: acc 1, -8 -> 0.5·(1 - 1)
 * = 0, + bias -0.3. One scale per row would give other values. */
START_TEST(test_hand_groups) {
    static int32_t codes[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 2}, zp[4] = {0, 0, 0, 0};
    static float scale[4] = {0.5f, 0.25f, 1.0f, 0.125f}, mul[2] = {1.0f, 1.0f}, bias[2] = {0.1f, -0.3f};
    const float img[8] = {0.5f, 1.0f, 1.5f, 2.0f, -0.5f, -1.0f, -1.5f, -2.0f};
    hand h;
    hand_init(&h, 8, 1, 1, 2);
    nb_xlayer *l = hand_layer(&h, "fc", 0, 2, 8, 1, 1, 0);
    l->codes = codes, l->scale = scale, l->zero_point = zp, l->mul = mul, l->bias = bias;
    l->gran = NB_QG_GROUP;
    l->L.G = 4;
    l->n_scales = 4;
    l->ascale = 0.5f;
    hand_node(&h, NB_G_LINEAR, 0, -1, 0);
    expect_paths(&h.x, img, (const float[]){1.35f, -0.3f}, 2, 1e-6f);
}
END_TEST

/* ---------------------------------------------------------- requantizer */

/* The exact value of the fixed-point form, in long double (64-bit
 * mantissa: |A·M0| < 2^62 is exact), rounded half to even. */
static long double rq_exact(const nb_rq *q, int k, int32_t acc) {
    const long double v = ldexpl(((long double)acc * ldexpl(1.0L, k) + (long double)q->B) * (long double)q->M0, -q->n);
    return rintl(v) + (long double)q->off;
}

START_TEST(test_requant) {
    nb_rng r;
    nb_rng_seed(&r, 7, 0);
    long near_tie = 0, checked = 0;
    for (int t = 0; t < 200000; t++) {
        /* M over 2^-20 .. 2^4 of either sign, b up to ±2^14 accumulator units */
        const double M = (nb_rng_u32(&r) & 1 ? -1.0 : 1.0) * ldexp(1.0 + nb_rng_uniform(&r), -20 + (int)nb_rng_below(&r, 24));
        const int k = (int)nb_rng_below(&r, 9);
        /* b on the 2^-k grid, so B holds it exactly (rint is tested below) */
        const double b = ldexp((double)((int32_t)nb_rng_below(&r, 1u << 16) - 32768), -k);
        nb_rq q;
        ck_assert(nb_rq_make(M, b, k, &q));
        /* |acc·2^k + B| < 2^31 (the caller's contract) and |result| < 2^20
         * (codes are at most 255) */
        int32_t amax = (int32_t)(0x7fffffffL >> (k + 1)) - 70000;
        if ((double)amax * fabs(M) > 0x1p20) amax = (int32_t)(0x1p20 / fabs(M));
        const int32_t acc = (int32_t)(nb_rng_u32(&r) % (2u * (uint32_t)amax)) - amax;
        const int32_t got = nb_rq_apply(&q, k, acc);
        ck_assert_msg((long double)got == rq_exact(&q, k, acc), "M %.17g b %.17g k %d acc %d: %d", M, b, k, acc, got);
        /* against round((acc + b)·M) in double: equal unless the value lies
         * within M's representation error (2^-31 relative) of a half-integer */
        const double v = ((double)acc + b) * M, frac = v - floor(v);
        const double err = fabs(v) * 0x1p-30 + 1e-9;
        if (fabs(frac - 0.5) <= err) {
            near_tie++;
            continue;
        }
        checked++;
        ck_assert_msg(got == (int32_t)rint(v), "M %.17g b %.17g k %d acc %d: %d, reference %.17g", M, b, k, acc, got, v);
    }
    ck_assert(checked > 190000);
    /* exact ties round to even, negative multipliers included */
    const double Ms[4] = {0.25, -0.25, 0.5, -0.125};
    for (int i = 0; i < 4; i++) {
        nb_rq q;
        ck_assert(nb_rq_make(Ms[i], 0.0, 0, &q));
        for (int32_t acc = -64; acc <= 64; acc++)
            ck_assert_msg(nb_rq_apply(&q, 0, acc) == (int32_t)rint((double)acc * Ms[i]), "M %g acc %d: %d", Ms[i], acc,
                          nb_rq_apply(&q, 0, acc));
    }
    /* a bias between grid points rounds to the nearest 2^-k (0.3 -> 0.25 at k = 2) */
    nb_rq q;
    ck_assert(nb_rq_make(1.0, 0.3, 2, &q) && q.B == 1);
    ck_assert(nb_rq_make(1.0, -0.375, 2, &q) && q.B == -2); /* -1.5 -> -2 */
    /* -1.5 -> -2, -2.5 -> -2, 2.5 -> 2, 3.5 -> 4 with a bias of half a step */
    ck_assert(nb_rq_make(1.0, 0.5, 1, &q));
    ck_assert(nb_rq_apply(&q, 1, -2) == -2 && nb_rq_apply(&q, 1, -3) == -2 && nb_rq_apply(&q, 1, 2) == 2 &&
              nb_rq_apply(&q, 1, 3) == 4);
    /* M = 0 is 0; out of range is refused */
    ck_assert(nb_rq_make(0.0, 3.0, 0, &q) && nb_rq_apply(&q, 0, 12345) == 0);
    ck_assert(!nb_rq_make(1.0, 3e9, 0, &q));
    ck_assert(!nb_rq_make(0x1p40, 0.0, 0, &q));
    ck_assert(!nb_rq_make(NAN, 0.0, 0, &q));
    printf("requantizer: %ld random cases exact, %ld within the representation error of a tie skipped\n", checked,
           near_tie);

    /* the vector epilogue (VNNI path) against the scalar one on a tile */
    enum { NC = 37, OC = 21, OCP = 32 };
    int32_t C[NC * OCP], corr[OCP];
    int64_t tab[4][OCP];
    int32_t off[OCP];
    for (int o = 0; o < OCP; o++) {
        nb_rq x;
        const double M = (o % 3 ? 1.0 : -1.0) * ldexp(1.0 + nb_rng_uniform(&r), -12 + o % 7);
        ck_assert(nb_rq_make(M, (double)nb_rng_normal(&r) * 300.0, 3, &x));
        tab[0][o] = x.B, tab[1][o] = x.M0, tab[2][o] = x.n, tab[3][o] = ((int64_t)1 << (x.n - 1)) - 1;
        off[o] = o == 5 ? 3 : 0;
        corr[o] = (int32_t)nb_rng_below(&r, 2000) - 1000;
    }
    for (int i = 0; i < NC * OCP; i++) C[i] = (int32_t)nb_rng_below(&r, 200000) - 100000;
    for (int relu = 0; relu < 2; relu++) {
        const nb_ik_rq_tab t = {3, relu, 5, 0, 15, tab[0], tab[1], tab[2], tab[3], off};
        uint8_t a[NC * OC], b[NC * OC];
        nb_ik_requant(NB_IK_SCALAR, C, OCP, NC, OC, corr, &t, a);
        if (nb_ik_path_supported(NB_IK_VNNI)) {
            nb_ik_requant(NB_IK_VNNI, C, OCP, NC, OC, corr, &t, b);
            ck_assert(!memcmp(a, b, sizeof a));
        }
        int lo = 255, hi = 0;
        for (int i = 0; i < NC * OC; i++) lo = a[i] < lo ? a[i] : lo, hi = a[i] > hi ? a[i] : hi;
        ck_assert(lo == (relu ? 5 : 0) && hi == 15); /* both clamps (or the ReLU at z = 5) reached */
    }
}
END_TEST

/* ----------------------------------------------------- random graphs */

/* Reference forward of an IR in NCHW, in double, from the export helpers
 * (nb_xlayer_quant_input, nb_xlayer_weights): the semantics the engine
 * implements, written the plain way. out: the last node's values. */
static void ref_forward(const nb_xmodel *x, const float *img, float *out) {
    float **v = calloc((size_t)x->n_nodes, sizeof(float *));
    int *C = calloc((size_t)x->n_nodes * 3, sizeof(int)), *H = C + x->n_nodes, *W = H + x->n_nodes;
    for (int i = 0; i < x->n_nodes; i++) {
        const nb_xnode *d = &x->nodes[i];
        const int a = d->a;
        if (d->op == NB_G_INPUT) {
            C[i] = x->in_c, H[i] = x->in_h, W[i] = x->in_w;
            v[i] = malloc(sizeof(float) * (size_t)C[i] * H[i] * W[i]);
            memcpy(v[i], img, sizeof(float) * (size_t)C[i] * H[i] * W[i]);
            continue;
        }
        C[i] = C[a], H[i] = H[a], W[i] = W[a];
        if (d->op == NB_G_CONV || d->op == NB_G_LINEAR) {
            const nb_xlayer *l = &x->layers[d->layer];
            const int s = l->is_conv ? l->stride : 1, p = l->is_conv ? l->pad : 0;
            C[i] = l->oc, H[i] = (H[a] + 2 * p - l->kh) / s + 1, W[i] = (W[a] + 2 * p - l->kw) / s + 1;
        } else if (d->op == NB_G_MAXPOOL) {
            H[i] = (H[a] + 2 * d->pad - d->k) / d->stride + 1, W[i] = (W[a] + 2 * d->pad - d->k) / d->stride + 1;
        } else if (d->op == NB_G_GAP) {
            H[i] = W[i] = 1;
        } else if (d->op == NB_G_SHORTCUT_PAD) {
            C[i] = d->out_c, H[i] = (H[a] + d->stride - 1) / d->stride, W[i] = (W[a] + d->stride - 1) / d->stride;
        }
        const size_t n = (size_t)C[i] * H[i] * W[i];
        v[i] = calloc(n, sizeof(float));
        switch (d->op) {
        case NB_G_CONV:
        case NB_G_LINEAR: {
            const nb_xlayer *l = &x->layers[d->layer];
            const int s = l->is_conv ? l->stride : 1, p = l->is_conv ? l->pad : 0;
            const size_t na = (size_t)C[a] * H[a] * W[a];
            float *xq = malloc(sizeof(float) * na), *w = malloc(sizeof(float) * l->numel);
            memcpy(xq, v[a], sizeof(float) * na);
            nb_xlayer_quant_input(l, xq, na);
            nb_xlayer_weights(l, w);
            for (int o = 0; o < l->oc; o++)
                for (int oh = 0; oh < H[i]; oh++)
                    for (int ow = 0; ow < W[i]; ow++) {
                        double acc = 0.0;
                        for (int c = 0; c < l->ic; c++)
                            for (int kh = 0; kh < l->kh; kh++)
                                for (int kw = 0; kw < l->kw; kw++) {
                                    const int ih = oh * s - p + kh, iw = ow * s - p + kw;
                                    if (ih < 0 || ih >= H[a] || iw < 0 || iw >= W[a]) continue;
                                    acc += (double)w[((o * l->ic + c) * l->kh + kh) * l->kw + kw] *
                                           (double)xq[(c * H[a] + ih) * W[a] + iw];
                                }
                        v[i][(o * H[i] + oh) * W[i] + ow] = (float)(acc * (double)l->mul[o] + (double)l->bias[o]);
                    }
            free(xq);
            free(w);
            break;
        }
        case NB_G_RELU:
            for (size_t k = 0; k < n; k++) v[i][k] = v[a][k] > 0.0f ? v[a][k] : 0.0f;
            break;
        case NB_G_ADD:
            for (size_t k = 0; k < n; k++) v[i][k] = v[a][k] + v[d->b][k];
            break;
        case NB_G_MAXPOOL:
            for (int c = 0; c < C[i]; c++)
                for (int oh = 0; oh < H[i]; oh++)
                    for (int ow = 0; ow < W[i]; ow++) {
                        float m = -INFINITY;
                        for (int kh = 0; kh < d->k; kh++)
                            for (int kw = 0; kw < d->k; kw++) {
                                const int ih = oh * d->stride - d->pad + kh, iw = ow * d->stride - d->pad + kw;
                                if (ih >= 0 && ih < H[a] && iw >= 0 && iw < W[a] && v[a][(c * H[a] + ih) * W[a] + iw] > m)
                                    m = v[a][(c * H[a] + ih) * W[a] + iw];
                            }
                        v[i][(c * H[i] + oh) * W[i] + ow] = m;
                    }
            break;
        case NB_G_SHORTCUT_PAD:
            for (int c = 0; c < C[a]; c++)
                for (int oh = 0; oh < H[i]; oh++)
                    for (int ow = 0; ow < W[i]; ow++)
                        v[i][((c + (C[i] - C[a]) / 2) * H[i] + oh) * W[i] + ow] =
                            v[a][(c * H[a] + oh * d->stride) * W[a] + ow * d->stride];
            break;
        case NB_G_GAP:
            for (int c = 0; c < C[i]; c++) {
                double t = 0.0;
                for (int k = 0; k < H[a] * W[a]; k++) t += (double)v[a][c * H[a] * W[a] + k];
                v[i][c] = (float)(t / (H[a] * W[a]));
            }
            break;
        default: ck_abort_msg("op %d", d->op);
        }
    }
    memcpy(out, v[x->n_nodes - 1], sizeof(float) * (size_t)C[x->n_nodes - 1]);
    for (int i = 0; i < x->n_nodes; i++) free(v[i]);
    free(v);
    free(C);
}

/* Storage for a random layer's arrays. */
typedef struct {
    int32_t codes[40000], zp[400];
    float scale[400], mul[64], bias[64], cb[64 * 8], thr[15];
} rand_arrays;

static void rand_layer(nb_rng *r, nb_xlayer *l, rand_arrays *a) {
    l->codes = a->codes, l->zero_point = a->zp, l->scale = a->scale, l->mul = a->mul, l->bias = a->bias;
    ck_assert(l->numel <= 40000 && l->n_scales <= 400 && l->oc <= 64);
    for (size_t i = 0; i < l->numel; i++) l->codes[i] = l->qmin + (int32_t)nb_rng_below(r, (uint32_t)(l->qmax - l->qmin + 1));
    for (int j = 0; j < l->n_scales; j++) {
        l->scale[j] = 0.02f + 0.05f * nb_rng_uniform(r);
        l->zero_point[j] = l->qmin < 0 ? 0 : (int32_t)nb_rng_below(r, (uint32_t)l->qmax + 1);
    }
    for (int o = 0; o < l->oc; o++) {
        l->mul[o] = (o % 5 == 3 ? -1.0f : 1.0f) * (0.5f + nb_rng_uniform(r));
        l->bias[o] = 0.3f * nb_rng_normal(r);
    }
    if (l->oc > 3) l->mul[2] = 0.0f; /* a dead channel: a constant output */
}

/* conv A (uniform 4-bit, signed 8-bit input) -> relu -> conv B (4-bit
 * groups of 30, unsigned 4-bit input: requantized straight from A's
 * accumulators) -> relu -> conv C (1x1 stride 2, asymmetric 8-bit weights
 * beyond int8, asymmetric input) -> relu -> { maxpool, conv D (codebook,
 * N2UQ input) } -> add -> gap -> fc (8-bit). Odd sizes everywhere. */
static void random_graph(hand *h, rand_arrays *ra, nb_rng *r) {
    hand_init(h, 3, 9, 7, 10);
    nb_xlayer *A = hand_layer(h, "A", 1, 20, 3, 3, 1, 1);
    A->aqmin = -128, A->aqmax = 127, A->ascale = 0.03f;
    rand_layer(r, A, &ra[0]);
    nb_xlayer *B = hand_layer(h, "B", 1, 20, 20, 3, 1, 1);
    B->gran = NB_QG_GROUP;
    B->L.G = 30;
    B->n_scales = (int)nb_fq_layout_scales(&B->L);
    B->aqmin = 0, B->aqmax = 15, B->ascale = 0.15f;
    rand_layer(r, B, &ra[1]);
    nb_xlayer *Cl = hand_layer(h, "C", 1, 33, 20, 1, 2, 0);
    Cl->qmin = 0, Cl->qmax = 255;
    Cl->aqmin = 0, Cl->aqmax = 255, Cl->azero = 7, Cl->ascale = 0.02f;
    rand_layer(r, Cl, &ra[2]);
    for (int j = 0; j < 33; j++) ra[2].zp[j] = 100 + j; /* q - z beyond [-128, 127] */
    nb_xlayer *D = hand_layer(h, "D", 1, 33, 33, 3, 2, 1);
    D->wkind = NB_XW_CODEBOOK;
    D->cb_rows = 33, D->ncodes = 7, D->alpha = 0.5f;
    D->qmin = 0, D->qmax = 6;
    rand_layer(r, D, &ra[3]);
    D->codebook = ra[3].cb;
    for (int o = 0; o < 33; o++)
        for (int c = 0; c < 7; c++) ra[3].cb[o * 7 + c] = 0.1f * (float)(c - 3) + 0.01f * (float)o;
    D->akind = NB_XA_N2UQ;
    D->n_thr = 15, D->thr = ra[3].thr, D->ascale = 0.2f, D->aqmin = 0, D->aqmax = 15;
    for (int t = 0; t < 15; t++) ra[3].thr[t] = 0.05f + 0.13f * (float)t + 0.01f * (float)(t * t);
    nb_xlayer *F = hand_layer(h, "fc", 0, 10, 33, 1, 1, 0);
    F->qmin = -128, F->qmax = 127;
    F->aqmin = 0, F->aqmax = 255, F->ascale = 0.01f;
    rand_layer(r, F, &ra[4]);
    const int a = hand_node(h, NB_G_CONV, 0, -1, 0);
    const int b = hand_node(h, NB_G_CONV, hand_node(h, NB_G_RELU, a, -1, -1), -1, 1);
    const int c = hand_node(h, NB_G_RELU, hand_node(h, NB_G_CONV, hand_node(h, NB_G_RELU, b, -1, -1), -1, 2), -1, -1);
    const int mp = hand_node(h, NB_G_MAXPOOL, c, -1, -1);
    h->n[mp].k = 3, h->n[mp].stride = 2, h->n[mp].pad = 1;
    const int d = hand_node(h, NB_G_CONV, c, -1, 3);
    hand_node(h, NB_G_LINEAR, hand_node(h, NB_G_GAP, hand_node(h, NB_G_ADD, mp, d, -1), -1, -1), -1, 4);
}

static rand_arrays g_ra[5];

START_TEST(test_random_graph_paths) {
    nb_rng r;
    nb_rng_seed(&r, 3, 0);
    hand h;
    random_graph(&h, g_ra, &r);
    enum { N = 13 };
    float img[N * 3 * 9 * 7], want[10], got[NB_IK_COUNT][N * 10];
    for (int i = 0; i < N * 3 * 9 * 7; i++) img[i] = nb_rng_normal(&r);
    nb_ik_path p[NB_IK_COUNT];
    const int np = n_paths(p);
    for (int k = 0; k < np; k++) {
        use_path(p[k]);
        run_engine(&h.x, img, N, got[k]);
        if (k) ck_assert_msg(!memcmp(got[0], got[k], sizeof got[0]), "%s and %s differ", nb_ik_path_name(p[0]),
                             nb_ik_path_name(p[k]));
    }
    unsetenv("NB_INT_KERNEL");
    double worst = 0.0;
    for (int n = 0; n < N; n++) {
        ref_forward(&h.x, img + n * 3 * 9 * 7, want);
        for (int c = 0; c < 10; c++) {
            const double d = fabs((double)got[0][n * 10 + c] - (double)want[c]);
            worst = d > worst ? d : worst;
            ck_assert_msg(d <= 1e-4 * (1.0 + fabs((double)want[c])), "image %d logit %d: engine %.9g, reference %.9g", n,
                          c, (double)got[0][n * 10 + c], (double)want[c]);
        }
    }
    printf("random graph: %d kernel paths agree bit for bit; max |logit - reference| %.3g\n", np, worst);
    /* the thread count does not change a bit */
    float one[N * 10];
    const int was = nb_get_threads();
    nb_set_threads(was == 1 ? 2 : 1);
    run_engine(&h.x, img, N, one);
    nb_set_threads(was);
    ck_assert(!memcmp(one, got[np - 1], sizeof one));
}
END_TEST

/* ---------------------------------------------------------------- errors */

static void expect_bad(const nb_xmodel *x, const char *msg) {
    nb_int_engine *e = (nb_int_engine *)1;
    ck_assert_int_eq(nb_int_engine_new(x, &e), NB_STATUS_BAD_INPUT);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(nb_last_error(), msg), "wanted \"%s\" in: %s", msg, nb_last_error());
}

START_TEST(test_errors) {
    nb_rng r;
    nb_rng_seed(&r, 3, 0);
    hand h;
    random_graph(&h, g_ra, &r);
    expect_bad(NULL, "an empty model");
    g_ra[1].codes[5] = 99;
    expect_bad(&h.x, "layer B: a weight code out of range");
    g_ra[1].codes[5] = 0;
    const float t3 = g_ra[3].thr[3];
    g_ra[3].thr[3] = g_ra[3].thr[2] - 0.01f;
    expect_bad(&h.x, "layer D: N2UQ thresholds not ascending");
    g_ra[3].thr[3] = t3;
    g_ra[0].scale[4] = -1.0f;
    expect_bad(&h.x, "layer A: a weight scale is not finite and positive");
    g_ra[0].scale[4] = 0.05f;
    g_ra[4].mul[1] = NAN;
    expect_bad(&h.x, "layer fc: mul and bias missing or not finite");
    g_ra[4].mul[1] = 1.0f;
    h.l[2].ic = 21, h.l[2].numel = 33 * 21, h.l[2].L.K = h.l[2].L.G = 21;
    expect_bad(&h.x, "node 5 (conv C): input (20, 9, 7) does not fit weights (33, 21, 1, 1)");
    h.l[2].ic = 20, h.l[2].numel = 33 * 20, h.l[2].L.K = h.l[2].L.G = 20;
    h.n[3].a = 4;
    expect_bad(&h.x, "node 3 (conv B): input 4/-1 is not an earlier node");
    h.n[3].a = 2;
    h.x.opts.num_classes = 11;
    expect_bad(&h.x, "the last node gives (10, 1, 1), not 11 logits");
    h.x.opts.num_classes = 10;
    h.l[4].akind = (nb_xa_kind)7;
    expect_bad(&h.x, "layer fc: unsupported input quantizer");
    h.l[4].akind = NB_XA_UNIFORM;
    /* a linear layer on a spatial input */
    hand g;
    hand_init(&g, 33, 2, 2, 10);
    g.l[0] = h.l[4];
    g.x.n_layers = 1;
    hand_node(&g, NB_G_LINEAR, 0, -1, 0);
    expect_bad(&g.x, "node 1 (linear fc): input (33, 2, 2) does not fit weights (10, 33, 1, 1)");
    /* forward's arguments; every failed allocation reported, nothing leaked */
    nb_int_engine *e = NULL;
    ck_assert_int_eq(nb_int_engine_new(&h.x, &e), NB_OK);
    float img[3 * 9 * 7] = {0}, y[10];
    ck_assert_int_eq(nb_int_engine_forward(e, img, 0, y), NB_STATUS_BAD_INPUT);
    ck_assert_int_eq(nb_int_engine_forward(e, NULL, 1, y), NB_STATUS_BAD_INPUT);
    ck_assert_int_eq(nb_int_engine_forward(e, img, 1, y), NB_OK);
    nb_int_engine_free(e);
    nb_int_engine_free(NULL);
    int fails = 0;
    for (long n = 1;; n++) {
        nb_alloc_fail_after(n);
        e = NULL;
        const nb_status st = nb_int_engine_new(&h.x, &e);
        nb_alloc_fail_after(0);
        if (st == NB_OK) {
            nb_int_engine_free(e);
            break;
        }
        ck_assert_int_eq(st, NB_STATUS_OOM);
        ck_assert_ptr_null(e);
        fails++;
    }
    ck_assert_int_gt(fails, 10);
    /* a forward on more threads than the engine has tiles for allocates them */
    const int was = nb_get_threads();
    nb_set_threads(1);
    ck_assert_int_eq(nb_int_engine_new(&h.x, &e), NB_OK);
    nb_set_threads(3);
    nb_alloc_fail_after(1);
    ck_assert_int_eq(nb_int_engine_forward(e, img, 1, y), NB_STATUS_OOM);
    nb_alloc_fail_after(0);
    ck_assert_msg(strstr(nb_last_error(), "out of memory for 3 threads"), "%s", nb_last_error());
    ck_assert_int_eq(nb_int_engine_forward(e, img, 1, y), NB_OK);
    nb_int_engine_free(e);
    nb_set_threads(was);
}
END_TEST

/* ------------------------------------------------ against nibble's forward */

/* The CIFAR fixture's test split, normalised as training does: (N, 3, 32,
 * 32) floats (malloc'ed), NULL when the fixture is absent. */
static float *cifar_images(int *n_out) {
    const char *path = nb_test_shared_data("cifar10-mini.h5");
    if (!path) return NULL;
    nb_dataset *ds = NULL;
    ck_assert_msg(nb_dataset_open(path, "test", NULL, &ds) == NB_OK, "%s", nb_last_error());
    const int n = (int)nb_dataset_count(ds);
    uint8_t *px = malloc((size_t)n * 3072);
    float *img = malloc(sizeof(float) * (size_t)n * 3072);
    ck_assert(nb_dataset_read(ds, 0, (size_t)n, px, NULL) == NB_OK);
    const float *mean = nb_dataset_mean(ds), *std = nb_dataset_std(ds);
    for (size_t i = 0; i < (size_t)n * 3072; i++) {
        const int c = (int)(i / 1024 % 3);
        img[i] = ((float)px[i] / 255.0f - mean[c]) / std[c];
    }
    free(px);
    nb_dataset_free(ds);
    *n_out = n;
    return img;
}

/* nb_model_forward in NB_PASS_EVAL over n images, batches of 50. */
static void model_logits(nb_model *m, const float *img, int n, float *out) {
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_model_train(m, 0);
    const int K = m->opts.num_classes;
    for (int i = 0; i < n; i += 50) {
        const int b = n - i < 50 ? n - i : 50;
        nb_tensor x;
        nb_tensor_wrap(&x, (float *)img + (size_t)i * 3072, 4, (int[]){b, 3, 32, 32});
        const nb_tensor *y = nb_model_forward(m, t, &x);
        memcpy(out + (size_t)i * K, y->data, sizeof(float) * (size_t)b * K);
        nb_tape_reset(t);
    }
    nb_tape_free(t);
}

typedef nb_test_qcase mcase;

static const mcase mcases[] = {
    {"resnet20 lsq w4a4", "resnet20", NB_SHORTCUT_A, "lsq", "channel", 4, 0, "lsq", 4, 1, 0, 2},
    {"resnet20 lsq w2a2", "resnet20", NB_SHORTCUT_A, "lsq", "tensor", 2, 0, "lsq", 2, 1, 0, 2},
    {"resnet20 ptq w8a8 folded", "resnet20", NB_SHORTCUT_A, "uniform", "channel", 8, 0, "uniform", 8, 1, 1, 0},
    {"resnet20 ptq w8a8 asym act", "resnet20", NB_SHORTCUT_A, "uniform", "channel", 8, 0, "uniform", 8, 0, 0, 0},
    {"resnet20 adq w3 tensor", "resnet20", NB_SHORTCUT_A, "adq", "tensor", 3, 0, "lsq", 4, 1, 0, 2},
    {"resnet20 adq w2 channel n2uq a3", "resnet20", NB_SHORTCUT_A, "adq", "channel", 2, 0, "n2uq", 3, 1, 0, 2},
    {"resnet20 lsq w4 n2uq a4", "resnet20", NB_SHORTCUT_A, "lsq", "channel", 4, 0, "n2uq", 4, 1, 0, 2},
    {"resnet20-B lsq w4a4", "resnet20", NB_SHORTCUT_B, "lsq", "channel", 4, 0, "lsq", 4, 1, 0, 2},
    {"smallcnn lsq w4a4", "smallcnn", 0, "lsq", "tensor", 4, 0, "lsq", 4, 1, 0, 2},
    {"smallcnn uniform w4 group 16", "smallcnn", 0, "uniform", "group", 4, 16, "uniform", 4, 1, 0, 0},
    {"smallcnn ternary, pact", "smallcnn", 0, "ternary", "channel", 2, 0, "pact", 4, 1, 0, 1},
    {"smallcnn lsq+ (float inputs)", "smallcnn", 0, "lsq", "tensor", 4, 0, "lsq+", 4, 1, 0, 1},
    {"smallcnn fp32", "smallcnn", 0, "none", "tensor", 0, 0, "none", 0, 1, 0, 0},
};
#define N_MCASES ((int)(sizeof mcases / sizeof mcases[0]))


/* How close the engine comes to nibble's fake-quant forward. Both compute
 * the same integers' real values; only the order of float additions
 * differs (conv sums, batchnorm), which moves a value by ~1e-7 relative.
 * So an image's logits agree to float noise (NOISE, relative to its
 * largest |logit|; measured <= 3e-7) unless some pre-quantization value
 * lay within that noise of a rounding boundary and the two rounded it to
 * neighbouring codes. Such a flip moves one activation by one step, and in
 * these networks (random weights, random batchnorm statistics, 2-4 bit
 * activations with steps up to 3) it cascades: one flip in layer1 became
 * ~100 differing codes by layer3 and moved a logit by 26% of the largest
 * (traced code by code through the quantizer hooks; the engine agreed with
 * a double-precision IR reference there). Hence:
 *   - at least MIN_EXACT of the images agree to NOISE (a wrong scale,
 *     padding, rounding or layout would break nearly every image); with
 *     2-4 bit activations ties hit 0-1 of 200 images here, with 8-bit
 *     ones (255 levels: each value ~16x nearer a boundary in code units)
 *     about a third of the images hold a flip, each worth a 2^-8 step;
 *   - every image within FLIP_REL (FLIP_REL8 with 8-bit activations) of
 *     its largest |logit| (measured: 0.26 after the cascade above; 0.015
 *     at 8 bits);
 *   - top-1 agrees unless nibble's top-2 margin is below twice the bound
 *     that image's difference falls under: 2·NOISE for an image within
 *     float noise, 2·FLIP_REL(8) otherwise (a lead a difference within the
 *     bound cannot overturn). */
#define NOISE 1e-5
#define MIN_EXACT 0.95
#define MIN_EXACT8 0.5
#define FLIP_REL 0.4
#define FLIP_REL8 0.05


START_TEST(test_models) {
    const mcase *c = &mcases[_i];
    int n = 0;
    float *img = cifar_images(&n);
    if (!img) {
        nb_test_skip(c->name, "../shared/data/cifar10-mini.h5 absent");
        return;
    }
    nb_model *m = nb_test_qcase_model(c);
    nb_xmodel *x = NULL;
    ck_assert_msg(nb_export_build(m, &x) == NB_OK, "%s: %s", c->name, nb_last_error());
    const int K = m->opts.num_classes;
    float *want = malloc(sizeof(float) * (size_t)n * K), *got = malloc(sizeof(float) * (size_t)n * K);
    model_logits(m, img, n, want);
    run_engine(x, img, n, got);
    const double flip_rel = c->abits >= 8 ? FLIP_REL8 : FLIP_REL, min_exact = c->abits >= 8 ? MIN_EXACT8 : MIN_EXACT;
    double worst = 0.0, worst_rel = 0.0;
    int agree = 0, judged = 0, exact = 0;
    for (int i = 0; i < n; i++) {
        const float *a = got + (size_t)i * K, *b = want + (size_t)i * K;
        int ta = 0, tb = 0;
        double big = 0.0, d = 0.0;
        for (int k = 0; k < K; k++) {
            ta = a[k] > a[ta] ? k : ta;
            tb = b[k] > b[tb] ? k : tb;
            big = fabs((double)b[k]) > big ? fabs((double)b[k]) : big;
            d = fabs((double)a[k] - (double)b[k]) > d ? fabs((double)a[k] - (double)b[k]) : d;
        }
        double second = -INFINITY;
        for (int k = 0; k < K; k++)
            if (k != tb && (double)b[k] > second) second = (double)b[k];
        agree += ta == tb;
        exact += d <= NOISE * big;
        const double margin_tol = 2 * (d <= NOISE * big ? NOISE : flip_rel) * big;
        worst = d > worst ? d : worst;
        worst_rel = d / big > worst_rel ? d / big : worst_rel;
        if ((double)b[tb] - second >= margin_tol) {
            judged++;
            ck_assert_msg(ta == tb, "%s: image %d: top-1 %d, nibble %d (margin %g)", c->name, i, ta, tb,
                          (double)b[tb] - second);
        }
        ck_assert_msg(d <= flip_rel * big, "%s: image %d: |logit diff| %g, largest |logit| %g", c->name, i, d, big);
    }
    printf("%-32s max |logit diff| %.3g (%.2g of the largest logit), %d/%d images within float noise, "
           "top-1 agrees on %d/%d (asserted on the %d with a margin)\n",
           c->name, worst, worst_rel, exact, n, agree, n, judged);
    ck_assert_msg(exact >= min_exact * n, "%s: only %d of %d images within float noise", c->name, exact, n);
    free(want);
    free(got);
    free(img);
    nb_xmodel_free(x);
    nb_model_free(m);
}
END_TEST

/* Every kernel path gives the same logits bit for bit on a real model, and
 * so do 1 and 2 threads and a batch split differently. */
START_TEST(test_model_paths) {
    int n = 0;
    float *img = cifar_images(&n);
    if (!img) {
        nb_test_skip("test_model_paths", "../shared/data/cifar10-mini.h5 absent");
        return;
    }
    n = 40;
    nb_model *m = nb_test_qcase_model(&mcases[0]);
    nb_xmodel *x = NULL;
    ck_assert_msg(nb_export_build(m, &x) == NB_OK, "%s", nb_last_error());
    float *want = malloc(sizeof(float) * (size_t)n * 10), *got = malloc(sizeof(float) * (size_t)n * 10);
    run_engine(x, img, n, want);
    nb_ik_path p[NB_IK_COUNT];
    for (int k = 0, np = n_paths(p); k < np; k++) {
        use_path(p[k]);
        run_engine(x, img, n, got);
        ck_assert_msg(!memcmp(want, got, sizeof(float) * (size_t)n * 10), "path %s differs", nb_ik_path_name(p[k]));
    }
    unsetenv("NB_INT_KERNEL");
    const int was = nb_get_threads();
    nb_set_threads(was == 1 ? 2 : 1);
    nb_int_engine *e = NULL;
    ck_assert(nb_int_engine_new(x, &e) == NB_OK);
    ck_assert(nb_int_engine_forward(e, img, 7, got) == NB_OK);
    ck_assert(nb_int_engine_forward(e, img + 7 * 3072, n - 7, got + 70) == NB_OK);
    nb_int_engine_free(e);
    nb_set_threads(was);
    ck_assert(!memcmp(want, got, sizeof(float) * (size_t)n * 10));
    free(want);
    free(got);
    free(img);
    nb_xmodel_free(x);
    nb_model_free(m);
}
END_TEST

/* A rough speed print (no assertion: timings flake on a shared machine):
 * resnet20 W4A4, batch 256, at the current thread count, best of 3. */
START_TEST(test_speed_print) {
    enum { N = 256 };
    nb_model *m = nb_test_qcase_model(&mcases[0]);
    nb_xmodel *x = NULL;
    ck_assert_msg(nb_export_build(m, &x) == NB_OK, "%s", nb_last_error());
    nb_int_engine *e = NULL;
    ck_assert(nb_int_engine_new(x, &e) == NB_OK);
    float *img = malloc(sizeof(float) * N * 3072), *out = malloc(sizeof(float) * N * 10);
    nb_rng r;
    nb_rng_seed(&r, 9, 0);
    for (int i = 0; i < N * 3072; i++) img[i] = nb_rng_normal(&r);
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_tensor xt;
    nb_tensor_wrap(&xt, img, 4, (int[]){N, 3, 32, 32});
    double best_int = 0.0, best_fake = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        const double t0 = nb_now();
        ck_assert(nb_int_engine_forward(e, img, N, out) == NB_OK);
        const double t1 = nb_now();
        nb_model_forward(m, t, &xt);
        nb_tape_reset(t);
        const double t2 = nb_now();
        best_int = fmax(best_int, N / (t1 - t0));
        best_fake = fmax(best_fake, N / (t2 - t1));
    }
    printf("speed (resnet20 w4a4, batch %d, %d threads): integer engine %.0f img/s, fake-quant forward %.0f img/s\n", N,
           nb_get_threads(), best_int, best_fake);
    nb_tape_free(t);
    free(img);
    free(out);
    nb_int_engine_free(e);
    nb_xmodel_free(x);
    nb_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("int_engine");
    TCase *tc = tcase_create("int_engine");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_hand_conv);
    tcase_add_test(tc, test_hand_padding);
    tcase_add_test(tc, test_hand_groups);
    tcase_add_test(tc, test_requant);
    tcase_add_test(tc, test_random_graph_paths);
    tcase_add_test(tc, test_errors);
    tcase_add_loop_test(tc, test_models, 0, N_MCASES);
    tcase_add_test(tc, test_model_paths);
    tcase_add_test(tc, test_speed_print);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
