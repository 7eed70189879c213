/* Learned quantizers on the tape (ALGORITHMS.md §4): LSQ (Esser et al.,
 * ICLR 2020), LSQ+ (Bhalgat et al., CVPRW 2020) and PACT (Choi et al.,
 * 2018). One kernel serves the three; x is viewed as an nb_fq_layout and
 * segment j uses the trained parameter p[j]:
 *
 *   LSQ   s = p            v = x / s            y = s·round(clamp(v, qmin, qmax))
 *   LSQ+  s = p, β = b[j]  v = (x - β) / s      y = s·round(clamp(v, qmin, qmax)) + β
 *   PACT  s = α / qmax     v = x / s            y = s·round(clamp(v, qmin, qmax))
 *
 * (clamping then rounding equals rounding then clamping on an integer
 * grid; round is rint, ties to even, as torch.round.)
 *
 * Gradients, with "inside" meaning qmin <= v <= qmax (both ends included,
 * as the backward of torch.clamp: a value exactly on an end takes the
 * inside branch, where round(v) - v = 0):
 *   dx = dy·inside (the straight-through estimator);
 *   LSQ, LSQ+:  ds = g·Σ dy·(inside ? round(v) - v : clamp(v))   [paper, eq. 3]
 *   LSQ+:       dβ = g·Σ dy·(inside ? 0 : 1)
 *   PACT:       dα = Σ dy·(v >= qmax ? 1 : v <= qmin ? qmin / qmax : 0)   [PACT eq. 3;
 *               the rounding term inside the range is dropped, as the paper does]
 * g is the gradient scale (LSQ: 1/sqrt(N·Qp), chosen by the caller). These
 * are exactly the gradients PyTorch's autograd gives for the formula written
 * with the detach trick: round_pass(v) = (round(v) - v).detach() + v and
 * grad_scale(s, g) = (s - s·g).detach() + s·g (tests/torch_lsq_oracle.py).
 *
 * The sums are taken in double, chunk by chunk over a fixed partition (16384
 * elements), then over the chunks in order: the result does not depend on
 * the thread count. */
#include <math.h>
#include <string.h>

#include "internal.h"

#define RND_MAGIC 12582912.0f /* 1.5 * 2^23: (v + M) - M is rint for |v| <= 2^22 */
#define LSQ_CHUNK 16384

#define NB_LSQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

/* Forward of one segment; v is clamped before rounding, so |v| <= 2^22
 * holds for every grid. */
NB_LSQ_CLONES static void lsq_fwd_segment(const float *x, float *y, size_t n, float s, float beta, float qmin,
                                          float qmax) {
    for (size_t i = 0; i < n; i++) {
        float v = (x[i] - beta) / s;
        v = v < qmin ? qmin : v;
        v = v > qmax ? qmax : v;
        y[i] = (v + RND_MAGIC - RND_MAGIC) * s + beta;
    }
}

/* Backward of one segment: dx = dy·inside (when dx is not NULL; dx may be dy
 * itself), returns Σ dy·(step-size term) in *ds and Σ dy·outside in *db.
 * pact selects PACT's α term. The sums run in 16 float lanes (element i in
 * lane i mod 16), added in lane order in double at the end: the same
 * arithmetic on every instruction set, and a loop the compiler vectorises
 * (a single double accumulator would keep it scalar). */
#define LSQ_LANES 16

typedef struct {
    float s, beta, qmin, qmax, lo_term, hi_term, round_on;
    int pact;
} bwd_consts;

/* Elements i0 .. i0 + m - 1 (m <= LSQ_LANES) into the lanes; dx_mode 0: no
 * dx, 1: dx = (fresh), 2: dx += . Inlined with constant m and dx_mode. */
static inline __attribute__((always_inline)) void bwd_block(const bwd_consts *k, const float *x, const float *dy,
                                                            float *dx, size_t i0, size_t m, int dx_mode,
                                                            float *acc_s, float *acc_b) {
    for (size_t j = 0; j < m; j++) {
        const size_t i = i0 + j;
        const float v = (x[i] - k->beta) / k->s, g = dy[i];
        const float out = (float)(v < k->qmin) + (float)(v > k->qmax);
        /* PACT counts v == qmax as clipped (its dα = 1 where x >= α) */
        const float hi = k->pact ? (float)(v >= k->qmax) : (float)(v > k->qmax);
        const float lo = (float)(v < k->qmin) + (k->pact ? (float)(v == k->qmin) : 0.0f);
        const float mid = k->round_on * ((v + RND_MAGIC - RND_MAGIC) - v);
        const float term = hi != 0.0f ? k->hi_term : lo != 0.0f ? k->lo_term : mid;
        acc_s[j] += g * term;
        acc_b[j] += g * out;
        if (dx_mode == 1) dx[i] = g * (1.0f - out);
        if (dx_mode == 2) dx[i] += g * (1.0f - out);
    }
}

NB_LSQ_CLONES static void lsq_bwd_segment(const float *x, const float *dy, float *dx, size_t n, float s, float beta,
                                          float qmin, float qmax, int pact, int fresh, double *ds, double *db) {
    float acc_s[LSQ_LANES] = {0}, acc_b[LSQ_LANES] = {0};
    const bwd_consts k = {s, beta, qmin, qmax, pact ? qmin / qmax : qmin, pact ? 1.0f : qmax, pact ? 0.0f : 1.0f,
                          pact};
    const int mode = !dx ? 0 : fresh ? 1 : 2;
    const size_t nb = n / LSQ_LANES * LSQ_LANES;
    if (mode == 0)
        for (size_t i0 = 0; i0 < nb; i0 += LSQ_LANES) bwd_block(&k, x, dy, dx, i0, LSQ_LANES, 0, acc_s, acc_b);
    else if (mode == 1)
        for (size_t i0 = 0; i0 < nb; i0 += LSQ_LANES) bwd_block(&k, x, dy, dx, i0, LSQ_LANES, 1, acc_s, acc_b);
    else
        for (size_t i0 = 0; i0 < nb; i0 += LSQ_LANES) bwd_block(&k, x, dy, dx, i0, LSQ_LANES, 2, acc_s, acc_b);
    bwd_block(&k, x, dy, dx, nb, n - nb, mode, acc_s, acc_b);
    double ts = 0.0, tb = 0.0;
    for (int j = 0; j < LSQ_LANES; j++) {
        ts += (double)acc_s[j];
        tb += (double)acc_b[j];
    }
    *ds = ts;
    *db = tb;
}

/* The segment's s and β from the parameters. */
static void seg_params(const nb_lsq_args *a, size_t j, float *s, float *beta) {
    const float p = a->step->data[j];
    *s = a->kind == NB_LSQ_PACT ? p / (float)a->qmax : p;
    *beta = a->offset ? a->offset->data[j] : 0.0f;
}

void nb_lsq_forward(const nb_lsq_args *a, const float *x, float *y) {
    const nb_fq_layout *L = &a->L;
    const float qmin = (float)a->qmin, qmax = (float)a->qmax;
    const size_t ng = (L->K + L->G - 1) / L->G;
    if (L->rows == 1 && ng == 1 && L->K >= 4 * LSQ_CHUNK) {
        float s, beta;
        seg_params(a, 0, &s, &beta);
        const long n = (long)L->K;
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
        for (long c = 0; c < (n + LSQ_CHUNK - 1) / LSQ_CHUNK; c++) {
            const long o = c * LSQ_CHUNK;
            lsq_fwd_segment(x + o, y + o, (size_t)(o + LSQ_CHUNK < n ? LSQ_CHUNK : n - o), s, beta, qmin, qmax);
        }
        return;
    }
    for (size_t r = 0; r < (size_t)L->rows; r++)
        for (size_t g = 0; g < ng; g++) {
            float s, beta;
            seg_params(a, r * ng + g, &s, &beta);
            const size_t off = r * L->K + g * L->G;
            lsq_fwd_segment(x + off, y + off, g + 1 < ng ? L->G : L->K - g * L->G, s, beta, qmin, qmax);
        }
}

void nb_lsq_backward(const nb_lsq_args *a, const float *x, const float *dy, float *dx, int fresh, float *dstep,
                     float *doffset) {
    const nb_fq_layout *L = &a->L;
    const float qmin = (float)a->qmin, qmax = (float)a->qmax;
    const int pact = a->kind == NB_LSQ_PACT;
    const size_t ng = (L->K + L->G - 1) / L->G;
    for (size_t r = 0; r < (size_t)L->rows; r++)
        for (size_t g = 0; g < ng; g++) {
            const size_t j = r * ng + g, off = r * L->K + g * L->G, len = g + 1 < ng ? L->G : L->K - g * L->G;
            float s, beta;
            seg_params(a, j, &s, &beta);
            const long nch = (long)((len + LSQ_CHUNK - 1) / LSQ_CHUNK);
            double ds = 0.0, db = 0.0;
            if (nch > 1) {
                double part[2 * 256], *pp = part;
                double *heap = NULL;
                if (nch > 256) {
                    heap = nb_calloc((size_t)nch * 2, sizeof(double));
                    NB_ASSERT(heap, "lsq backward: %s", nb_last_error());
                    pp = heap;
                }
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
                for (long c = 0; c < nch; c++) {
                    const size_t o = off + (size_t)c * LSQ_CHUNK;
                    const size_t n = (size_t)c + 1 < (size_t)nch ? LSQ_CHUNK : len - (size_t)c * LSQ_CHUNK;
                    lsq_bwd_segment(x + o, dy + o, dx ? dx + o : NULL, n, s, beta, qmin, qmax, pact, fresh,
                                    &pp[2 * c], &pp[2 * c + 1]);
                }
                for (long c = 0; c < nch; c++) {
                    ds += pp[2 * c];
                    db += pp[2 * c + 1];
                }
                nb_free(heap);
            } else {
                lsq_bwd_segment(x + off, dy + off, dx ? dx + off : NULL, len, s, beta, qmin, qmax, pact, fresh, &ds,
                                &db);
            }
            if (dstep) dstep[j] += (float)((double)a->grad_scale * ds);
            if (doffset) doffset[j] += (float)((double)a->grad_scale * db);
        }
}

/* ------------------------------------------------------------------ tape op */

nb_tensor *nb_lsq(nb_tape *t, nb_tensor *x, const nb_lsq_args *a) {
    const nb_fq_layout *L = &a->L;
    NB_ASSERT((size_t)L->rows * L->K == x->numel && L->G >= 1 && L->G <= L->K,
              "lsq: layout (%d, %zu, G %zu) does not cover %zu elements", L->rows, L->K, L->G, x->numel);
    NB_ASSERT(a->step->numel == nb_fq_layout_scales(L) && (!a->offset || a->offset->numel == a->step->numel),
              "lsq: %zu step sizes for %zu segments", a->step->numel, nb_fq_layout_scales(L));
    nb_tensor *y = nb_tape_tensor(t, x->ndim, x->shape);
    NB_ASSERT(y, "lsq: %s", nb_last_error());
    nb_lsq_forward(a, x->data, y->data);
    if (!nb_tape_wants(t, x, a->step, a->offset)) return y;
    nb_node *n = nb_tape_record(t, &nb_quant_op_table[NB_QOP_LSQ], y, x, a->step, a->offset);
    nb_lsq_args *s = nb_tape_scratch(t, sizeof *s);
    NB_ASSERT(n && s, "lsq: %s", nb_last_error());
    *s = *a;
    n->saved = s;
    return y;
}

void nb_lsq_backward_node(nb_tape *t, nb_node *n) {
    const nb_lsq_args *a = n->saved;
    nb_tensor *x = n->in[0];
    float *dstep = a->step->requires_grad ? nb_tape_grad(t, a->step) : NULL;
    float *doff = a->offset && a->offset->requires_grad ? nb_tape_grad(t, a->offset) : NULL;
    float *dx = NULL;
    int fresh = 0;
    /* d(out) becomes d(x) in place when the tape allows; the step-size sums
     * read each dy before it is overwritten. */
    const float *dy = n->out->grad;
    if (x->requires_grad && !(dx = nb_tape_grad_take(t, n->out, x))) dx = nb_tape_grad_fresh(t, x, &fresh);
    else if (dx) {
        dy = dx;
        fresh = 1;
    }
    nb_lsq_backward(a, x->data, dy, dx, fresh, dstep, doff);
}
