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
 *               the rounding term inside the range is dropped, as the paper does;
 *               a value exactly at an end passes dy to x (inside) and counts in dα,
 *               a measure-zero choice that keeps one mask for the three methods]
 * g is the gradient scale (LSQ: 1/sqrt(N·Qp), chosen by the caller). These
 * are exactly the gradients PyTorch's autograd gives for the formula written
 * with the detach trick: round_pass(v) = (round(v) - v).detach() + v and
 * grad_scale(s, g) = (s - s·g).detach() + s·g (tests/torch_lsq_oracle.py).
 *
 * The sums are taken per chunk of a fixed partition (16384 elements) in 16
 * float lanes, then in double over the chunks in order: the result does not
 * depend on the thread count. The element arithmetic and the lane order are
 * in core/nb_lsq_kernel.h, shared with layers/' batchnorm + ReLU + quantizer
 * op (the same bits when an activation quantizer runs fused). */
#include <math.h>
#include <string.h>

#include "internal.h"
#include "nb_lsq_kernel.h"

#define NB_LSQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

/* k by value: stores to y cannot change it, so the loop vectorises. */
NB_LSQ_CLONES static void lsq_fwd_segment(const float *x, float *y, size_t n, nb_lsq_consts k) {
    for (size_t i = 0; i < n; i++) y[i] = nb_lsq_fwd_elem(&k, x[i]);
}

/* Backward of one segment (at most one chunk): dx = dy·inside (when dx is
 * not NULL; dx may be dy itself), returns Σ dy·(step-size term) in *ds and
 * Σ dy·outside in *db. The sums run in 16 float lanes (element i in lane i
 * mod 16), added in lane order in double at the end: the same arithmetic on
 * every instruction set, and a loop the compiler vectorises (a single
 * double accumulator would keep it scalar). */
NB_LSQ_CLONES static void lsq_bwd_segment(const float *x, const float *dy, float *dx, size_t n,
                                          const nb_lsq_consts *k, int fresh, double *ds, double *db) {
    nb_lsq_bwd_run(k, x, dy, dx, n, !dx ? NB_LSQ_DX_NONE : fresh ? NB_LSQ_DX_SET : NB_LSQ_DX_ADD, ds, db);
}

/* Segment j's constants from the parameters. */
static nb_lsq_consts seg_consts(const nb_lsq_args *a, size_t j) {
    return nb_lsq_consts_make(a->kind == NB_LSQ_PACT, a->step->data[j], a->offset ? a->offset->data[j] : 0.0f,
                              (float)a->qmin, (float)a->qmax);
}

void nb_lsq_forward(const nb_lsq_args *a, const float *x, float *y) {
    const nb_fq_layout *L = &a->L;
    const size_t ng = (L->K + L->G - 1) / L->G;
    if (L->rows == 1 && ng == 1 && L->K >= 4 * NB_LSQ_CHUNK) {
        const nb_lsq_consts k = seg_consts(a, 0);
        const long n = (long)L->K;
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
        for (long c = 0; c < (n + NB_LSQ_CHUNK - 1) / NB_LSQ_CHUNK; c++) {
            const long o = c * NB_LSQ_CHUNK;
            lsq_fwd_segment(x + o, y + o, (size_t)(o + NB_LSQ_CHUNK < n ? NB_LSQ_CHUNK : n - o), k);
        }
        return;
    }
    for (size_t r = 0; r < (size_t)L->rows; r++)
        for (size_t g = 0; g < ng; g++) {
            const nb_lsq_consts k = seg_consts(a, r * ng + g);
            const size_t off = r * L->K + g * L->G;
            lsq_fwd_segment(x + off, y + off, g + 1 < ng ? L->G : L->K - g * L->G, k);
        }
}

void nb_lsq_backward(const nb_lsq_args *a, const float *x, const float *dy, float *dx, int fresh, float *dstep,
                     float *doffset) {
    const nb_fq_layout *L = &a->L;
    const size_t ng = (L->K + L->G - 1) / L->G;
    for (size_t r = 0; r < (size_t)L->rows; r++)
        for (size_t g = 0; g < ng; g++) {
            const size_t j = r * ng + g, off = r * L->K + g * L->G, len = g + 1 < ng ? L->G : L->K - g * L->G;
            const nb_lsq_consts k = seg_consts(a, j);
            const long nch = (long)((len + NB_LSQ_CHUNK - 1) / NB_LSQ_CHUNK);
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
                    const size_t o = off + (size_t)c * NB_LSQ_CHUNK;
                    const size_t n = (size_t)c + 1 < (size_t)nch ? NB_LSQ_CHUNK : len - (size_t)c * NB_LSQ_CHUNK;
                    lsq_bwd_segment(x + o, dy + o, dx ? dx + o : NULL, n, &k, fresh, &pp[2 * c], &pp[2 * c + 1]);
                }
                for (long c = 0; c < nch; c++) {
                    ds += pp[2 * c];
                    db += pp[2 * c + 1];
                }
                nb_free(heap);
            } else {
                lsq_bwd_segment(x + off, dy + off, dx ? dx + off : NULL, len, &k, fresh, &ds, &db);
            }
            nb_lsq_grad_add(dstep ? &dstep[j] : NULL, a->grad_scale, ds);
            nb_lsq_grad_add(doffset ? &doffset[j] : NULL, a->grad_scale, db);
        }
}

/* LSQ's initial step [paper]: s0 = 2·mean|v| / sqrt(Qp); a segment of
 * zeros takes 1 (any step represents it), non-finite values give NaN. */
float nb_lsq_init_step(const float *v, size_t n, int qmax) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += fabs((double)v[i]);
    const double s = 2.0 * (sum / (double)n) / sqrt((double)qmax);
    if (!isfinite(s)) return NAN;
    return s > 0.0 ? (float)s : 1.0f;
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
    /* d(out) becomes d(x) in place when the tape allows; the step-size sums
     * read each dy before it is overwritten. */
    const float *dy = n->out->grad;
    int fresh = 0;
    float *dx = x->requires_grad ? nb_tape_grad_inplace(t, n->out, x, &fresh) : NULL;
    nb_lsq_backward(a, x->data, dy, dx, fresh, dstep, doff);
}
