/* Fake quantization on the tape: uniform quantize-dequantize with the
 * straight-through estimator (ALGORITHMS.md §1), and binary / ternary
 * weights (§6).
 *
 * Layout: x is viewed as (rows, K); element (r, k) uses scale index
 * r * ng + k / G with ng = ceil(K / G). Per-tensor is rows = 1, G = K;
 * per-channel (weights, axis 0) is rows = OC, G = K; per-group is G
 * consecutive elements of a row (the last group of a row may be shorter).
 *
 * Rounding is rint (ties to even) done as (v + 1.5·2^23) - 1.5·2^23 on a
 * value first clamped to ±2^22, which is exact in round-to-nearest mode and
 * vectorises (rintf is a libm call at the baseline ISA). NaN stays NaN:
 * the clamps are comparisons, which NaN fails. */
#include <math.h>
#include <string.h>

#include "internal.h"

#define RND_MAGIC 12582912.0f /* 1.5 * 2^23 */
#define RND_LIMIT 4194304.0f  /* 2^22 */

/* rint(v) for any float v (NaN stays NaN; |v| > 2^22 saturates to ±2^22,
 * beyond every grid). */
static inline float rnd(float v) {
    v = v < -RND_LIMIT ? -RND_LIMIT : v;
    v = v > RND_LIMIT ? RND_LIMIT : v;
    return (v + RND_MAGIC) - RND_MAGIC;
}

float nb_fq_round(float v) { return rnd(v); }

/* The segment loops are compiled for AVX-512, AVX2 and the baseline; the
 * loader picks one per CPU (GCC function multi-versioning). The arithmetic is
 * the same IEEE operations on every path, so results do not depend on it. */
#define NB_FQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

/* One segment: y = s (clamp(rint(x / s) + z, qmin, qmax) - z). */
NB_FQ_CLONES static void fq_segment(const float *x, float *y, size_t n, float s, float z, float qmin, float qmax) {
    for (size_t i = 0; i < n; i++) {
        float q = rnd(x[i] / s) + z;
        q = q < qmin ? qmin : q;
        q = q > qmax ? qmax : q;
        y[i] = s * (q - z);
    }
}

/* dx += dy where qmin <= rint(x / s) + z <= qmax: the clip test on the
 * rounded value, as PyTorch's fake_quantize_* backward (it differs from a
 * test on x / s only within half a step beyond each end). */
NB_FQ_CLONES static void ste_segment(const float *x, const float *dy, float *dx, size_t n, float s, float z, float qmin,
                        float qmax, int fresh) {
    /* dy is loaded unconditionally and the mask is a multiply (as PyTorch's
     * dy * mask), which keeps the loops vectorised. */
    if (fresh) {
        for (size_t i = 0; i < n; i++) {
            const float q = rnd(x[i] / s) + z, g = dy[i];
            const float keep = (float)(q >= qmin) * (float)(q <= qmax);
            dx[i] = g * keep;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            const float q = rnd(x[i] / s) + z, g = dy[i];
            const float keep = (float)(q >= qmin) * (float)(q <= qmax);
            dx[i] += g * keep;
        }
    }
}

size_t nb_fq_layout_scales(const nb_fq_layout *L) { return (size_t)L->rows * ((L->K + L->G - 1) / L->G); }

/* One pass of the forward or the backward over a layout's segments. */
typedef struct {
    const float *scale, *zero_point;
    float qmin, qmax;
    const float *x, *dy;
    float *out; /* y (forward) or dx (backward) */
    int backward, fresh;
} fq_pass;

static void run_segment(const fq_pass *p, size_t off, size_t len, size_t si) {
    if (p->backward)
        ste_segment(p->x + off, p->dy + off, p->out + off, len, p->scale[si], p->zero_point[si], p->qmin, p->qmax,
                    p->fresh);
    else
        fq_segment(p->x + off, p->out + off, len, p->scale[si], p->zero_point[si], p->qmin, p->qmax);
}

/* Every segment (r, g) of L: elements r K + g G .. (the last group of a row
 * shorter), scale index r ceil(K / G) + g. One big per-tensor activation is
 * split into chunks over the threads instead. */
static void for_segments(const nb_fq_layout *L, const fq_pass *p) {
    if (L->rows == 1 && L->G == L->K && L->K >= 65536) {
        const long n = (long)L->K, chunk = 16384;
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
        for (long c = 0; c < (n + chunk - 1) / chunk; c++) {
            const long a = c * chunk;
            run_segment(p, (size_t)a, (size_t)(a + chunk < n ? chunk : n - a), 0);
        }
        return;
    }
    const size_t ng = (L->K + L->G - 1) / L->G;
    for (size_t r = 0; r < (size_t)L->rows; r++)
        for (size_t g = 0; g < ng; g++)
            run_segment(p, r * L->K + g * L->G, g + 1 < ng ? L->G : L->K - g * L->G, r * ng + g);
}

void nb_fq_forward(const nb_fq_layout *L, const float *scale, const float *zero_point, int qmin, int qmax,
                   const float *x, float *y) {
    const fq_pass p = {scale, zero_point, (float)qmin, (float)qmax, x, NULL, y, 0, 0};
    for_segments(L, &p);
}

void nb_fq_backward(const nb_fq_layout *L, const float *scale, const float *zero_point, int qmin, int qmax,
                    const float *x, const float *dy, float *dx, int fresh) {
    const fq_pass p = {scale, zero_point, (float)qmin, (float)qmax, x, dy, dx, 1, fresh};
    for_segments(L, &p);
}

/* ------------------------------------------------------------ tape ops */

typedef struct {
    nb_fq_layout L;
    const float *scale, *zero_point; /* (n scales); the quantizer's, stable for the step */
    int qmin, qmax;
} fq_saved;

static nb_tensor *out_like(nb_tape *t, const nb_tensor *x) {
    nb_tensor *y = nb_tape_tensor(t, x->ndim, x->shape);
    NB_ASSERT(y, "fake quant: %s", nb_last_error());
    return y;
}

/* Records op for y = op(x) when x wants a gradient, with a copy of the
 * saved state (bytes) in the tape's arena. */
static void record(nb_tape *t, nb_qop op, nb_tensor *y, nb_tensor *x, const void *saved, size_t bytes) {
    if (!nb_tape_wants(t, x, NULL, NULL)) return;
    nb_node *n = nb_tape_record(t, &nb_quant_op_table[op], y, x, NULL, NULL);
    void *s = nb_tape_scratch(t, bytes);
    NB_ASSERT(n && s, "%s: %s", nb_quant_op_table[op].name, nb_last_error());
    memcpy(s, saved, bytes);
    n->saved = s;
}

nb_tensor *nb_fake_quant(nb_tape *t, nb_tensor *x, const nb_fq_layout *L, const float *scale,
                         const float *zero_point, int qmin, int qmax) {
    NB_ASSERT((size_t)L->rows * L->K == x->numel && L->G >= 1 && L->G <= L->K,
              "fake quant: layout (%d, %zu, G %zu) does not cover %zu elements", L->rows, L->K, L->G, x->numel);
    nb_tensor *y = out_like(t, x);
    nb_fq_forward(L, scale, zero_point, qmin, qmax, x->data, y->data);
    const fq_saved s = {*L, scale, zero_point, qmin, qmax};
    record(t, NB_QOP_FAKE_QUANT, y, x, &s, sizeof s);
    return y;
}

void nb_fake_quant_backward(nb_tape *t, nb_node *n) {
    const fq_saved *s = n->saved;
    nb_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    const float *dy = n->out->grad; /* may become d(x), masked in place */
    int fresh;
    float *dx = nb_tape_grad_inplace(t, n->out, x, &fresh);
    nb_fq_backward(&s->L, s->scale, s->zero_point, s->qmin, s->qmax, x->data, dy, dx, fresh);
}

/* Binary and ternary weights: w (rows, K) -> alpha[r] * t, t in {-1, 1} or
 * {-1, 0, 1}. alpha (rows) is written for export; y may be NULL (alpha
 * only). */
void nb_binary_ternary_forward(const float *w, float *y, int rows, size_t K, int ternary, float *alpha) {
    for (int r = 0; r < rows; r++) {
        const float *wr = w + (size_t)r * K;
        float *yr = y ? y + (size_t)r * K : NULL;
        double sum = 0.0;
        for (size_t k = 0; k < K; k++) sum += fabs((double)wr[k]);
        const double mean = sum / (double)K;
        if (!ternary) {
            /* XNOR-Net: alpha = mean |w|; sign(0) taken as +1 so there are two levels. */
            const float a = (float)mean;
            if (y)
                for (size_t k = 0; k < K; k++) yr[k] = wr[k] >= 0.0f ? a : -a;
            alpha[r] = a;
            continue;
        }
        /* TWN: threshold 0.7 mean |w|, alpha = mean |w| over |w| > threshold. */
        const float delta = (float)(0.7 * mean);
        double s = 0.0;
        long cnt = 0;
        for (size_t k = 0; k < K; k++)
            if (fabsf(wr[k]) > delta) {
                s += fabs((double)wr[k]);
                cnt++;
            }
        const float a = cnt ? (float)(s / (double)cnt) : 0.0f;
        if (y)
            for (size_t k = 0; k < K; k++) yr[k] = wr[k] > delta ? a : (wr[k] < -delta ? -a : 0.0f);
        alpha[r] = a;
    }
}

nb_tensor *nb_binary_ternary(nb_tape *t, nb_tensor *w, int rows, int ternary, float *alpha) {
    NB_ASSERT(rows >= 1 && w->numel % (size_t)rows == 0, "binary/ternary: %zu weights in %d rows", w->numel, rows);
    nb_tensor *y = out_like(t, w);
    const size_t K = w->numel / (size_t)rows;
    nb_binary_ternary_forward(w->data, y->data, rows, K, ternary, alpha);
    record(t, NB_QOP_BINARY_TERNARY, y, w, &ternary, sizeof ternary);
    return y;
}

/* STE: binary passes the gradient where |w| <= 1 (XNOR-Net's clipped
 * identity); ternary passes it everywhere (TWN). */
void nb_binary_ternary_backward(nb_tape *t, nb_node *n) {
    const int ternary = *(const int *)n->saved;
    nb_tensor *w = n->in[0];
    if (!w->requires_grad) return;
    float *dw = nb_tape_grad(t, w);
    const float *dy = n->out->grad;
    for (size_t i = 0; i < w->numel; i++)
        if (ternary || fabsf(w->data[i]) <= 1.0f) dw[i] += dy[i];
}

const nb_op_def nb_quant_op_table[NB_QOP_COUNT] = {
    [NB_QOP_FAKE_QUANT] = {"fake_quant", nb_fake_quant_backward},
    [NB_QOP_BINARY_TERNARY] = {"binary_ternary", nb_binary_ternary_backward},
    [NB_QOP_LSQ] = {"lsq", nb_lsq_backward_node},
    [NB_QOP_CODEBOOK] = {"codebook", nb_codebook_backward_node},
    [NB_QOP_N2UQ] = {"n2uq", nb_n2uq_backward_node},
};

const nb_op_def *nb_quant_ops(int *n) {
    *n = NB_QOP_COUNT;
    return nb_quant_op_table;
}
