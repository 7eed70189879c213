/* Batchnorm + ReLU + a learned per-tensor activation quantizer (LSQ, LSQ+,
 * PACT; ALGORITHMS.md §4) as one op, for a batchnorm whose output goes to a
 * quantized conv alone (a ResNet block's bn1 -> conv2). As two ops the
 * forward writes the ReLU output y and reads it back to quantize it, and
 * the backward reads y and d(out), writes d(y), then reads d(y) and y again
 * for the batchnorm; here the forward reads x and writes the quantized
 * output only, and the backward recomputes y from x in cache.
 *
 * The bits are those of the two ops, by construction:
 *  - elementwise values (affine, ReLU, quantizer, its input gradient) are
 *    the same IEEE operations, from the same code: nb_bn_relu and the other
 *    batchnorm pieces of internal.h, the quantizer's core/nb_lsq_kernel.h;
 *  - the batchnorm's sums: per plane in float by the same function
 *    (nb_bn_plane_dsums), per channel in double over the planes in order;
 *  - the step-size sums: as quant/lsq.c's, 16 float lanes per chunk of
 *    NB_LSQ_CHUNK elements of the flat tensor, the chunks in order. So the
 *    backward walks the tensor chunk by chunk in flat order (the batchnorm's
 *    own backward goes channel by channel), keeping each plane's float sums
 *    for the per-channel totals afterwards. */
#include <omp.h>

#include "internal.h"
#include "nb_lsq_kernel.h"

#define NB_FUSE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

typedef struct {
    float *mean, *invstd; /* (C) as the batchnorm's */
    float *a, *b;         /* (C) y = max(x·a + b, 0) */
    int training;
    nb_lsq_act aq;
    nb_lsq_consts k;      /* the quantizer's, from its parameters at forward time */
} fused_saved;

/* One plane (or any run of one channel): q = quantize(max(x·a + b, 0)). */
NB_FUSE_CLONES static void fwd_plane(const float *x, float *q, int HW, float a, float b, nb_lsq_consts k) {
    for (int i = 0; i < HW; i++) q[i] = nb_lsq_fwd_elem(&k, nb_bn_relu(x[i], a, b));
}

nb_tensor *nb_batchnorm2d_relu_lsq(nb_tape *t, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta,
                                   float *running_mean, float *running_var, const nb_bn_params *p,
                                   const nb_lsq_act *aq) {
    char s1[64];
    NB_ASSERT(x->ndim == 4, "batchnorm2d_relu_lsq: input %s is not (N, C, H, W)", NB_SHAPE(x, s1));
    const int N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    NB_ASSERT(gamma->numel == (size_t)C && beta->numel == (size_t)C,
              "batchnorm2d_relu_lsq: %d channels, gamma %zu, beta %zu", C, gamma->numel, beta->numel);
    NB_ASSERT(aq->step->numel == 1 && (!aq->offset || aq->offset->numel == 1) && aq->qmin < aq->qmax,
              "batchnorm2d_relu_lsq: a per-tensor quantizer has one step size (got %zu) on a grid [%d, %d]",
              aq->step->numel, aq->qmin, aq->qmax);
    NB_ASSERT(!p->training || (size_t)N * HW > 1,
              "batchnorm2d_relu_lsq: training needs more than one value per channel, got input %s",
              NB_SHAPE(x, s1));
    nb_tensor *q = nb_tape_tensor(t, 4, x->shape);
    fused_saved *s = nb_tape_scratch(t, sizeof *s);
    float *chan = nb_tape_scratch(t, sizeof(float) * 4 * (size_t)C);
    NB_ASSERT(q && s && chan, "batchnorm2d_relu_lsq: %s", nb_last_error());
    *s = (fused_saved){chan, chan + C, chan + 2 * C, chan + 3 * C, p->training, *aq,
                       nb_lsq_consts_make(aq->kind == NB_LSQ_PACT, aq->step->data[0],
                                          aq->offset ? aq->offset->data[0] : 0.0f, (float)aq->qmin,
                                          (float)aq->qmax)};

#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int c = 0; c < C; c++) {
        nb_bn_channel(x, gamma, beta, running_mean, running_var, p, c, s->mean, s->invstd, &s->a[c], &s->b[c]);
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * C + c) * HW;
            fwd_plane(x->data + o, q->data + o, HW, s->a[c], s->b[c], s->k);
        }
    }

    if (nb_tape_wants(t, x, gamma, beta) || nb_tape_wants(t, aq->step, aq->offset, NULL)) {
        /* step and offset are parameters: their gradients go to buffers of
         * their own (nb_tape_grad), so they need no slot among the inputs,
         * which only the backward reads. */
        nb_node *node = nb_tape_record(t, &nb_op_table[NB_OP_BN_RELU_LSQ], q, x, gamma, beta);
        NB_ASSERT(node, "batchnorm2d_relu_lsq: %s", nb_last_error());
        node->saved = s;
    }
    return q;
}

/* Elements [lo, hi) of the flat tensor, at most one chunk: y recomputed
 * into yb (yb[0] is element lo), then the quantizer's backward with the
 * ReLU's mask, d(out) in g becoming the gradient at the batchnorm's output
 * (in place); the chunk's step-size and offset sums in *ds, *db. */
NB_FUSE_CLONES static void bwd_chunk(const float *x, float *g, float *yb, size_t lo, size_t hi, int C, int HW,
                                     const float *a, const float *b, nb_lsq_consts k, double *ds, double *db) {
    for (size_t i = lo; i < hi;) {
        const size_t p = i / (size_t)HW, end = (p + 1) * HW < hi ? (p + 1) * HW : hi;
        const float ac = a[p % (size_t)C], bc = b[p % (size_t)C];
        for (size_t j = i; j < end; j++) yb[j - lo] = nb_bn_relu(x[j], ac, bc);
        i = end;
    }
    nb_lsq_bwd_run(&k, yb, g + lo, g + lo, hi - lo, NB_LSQ_DX_SET_RELU, ds, db);
}

/* Whether plane p lies in two or more chunks (possible when HW does not
 * divide NB_LSQ_CHUNK). */
static int plane_split(size_t p, int HW) {
    return p * HW / NB_LSQ_CHUNK != ((p + 1) * HW - 1) / NB_LSQ_CHUNK;
}

void nb_batchnorm2d_relu_lsq_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0], *gamma = node->in[1], *beta = node->in[2];
    const fused_saved *s = node->saved;
    const int N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3], nt = nb_get_threads();
    const size_t total = x->numel, planes = (size_t)N * C;
    const long nch = (long)((total + NB_LSQ_CHUNK - 1) / NB_LSQ_CHUNK);
    const size_t ylen = total < NB_LSQ_CHUNK ? total : NB_LSQ_CHUNK;
    float *dstep = s->aq.step->requires_grad ? nb_tape_grad(t, s->aq.step) : NULL;
    float *doff = s->aq.offset && s->aq.offset->requires_grad ? nb_tape_grad(t, s->aq.offset) : NULL;
    float *dg = gamma->requires_grad ? nb_tape_grad(t, gamma) : NULL;
    float *dbeta = beta->requires_grad ? nb_tape_grad(t, beta) : NULL;
    /* d(out) is rewritten in place into g, the gradient at the batchnorm's
     * output (an op's output gradient is a pooled buffer nothing reads after
     * its node), and g into dx when the tape hands the buffer to x. */
    float *g = node->out->grad;
    int fresh = 0;
    float *dx = x->requires_grad ? nb_tape_grad_inplace(t, node->out, x, &fresh) : NULL;
    double *part = nb_tape_scratch(t, sizeof(double) * 2 * (size_t)nch);
    float *psum = nb_tape_scratch(t, sizeof(float) * 2 * planes);     /* plane p: Σ g, Σ g·(x - m) */
    const size_t ystride = ylen > (size_t)HW ? ylen : (size_t)HW; /* y of a chunk, or of a plane */
    float *ybuf = nb_tape_scratch(t, sizeof(float) * (size_t)nt * ystride);
    nb_bn_dx_consts *kc = nb_tape_scratch(t, sizeof *kc * (size_t)C);
    NB_ASSERT(part && psum && ybuf && kc, "batchnorm2d_relu_lsq backward: %s", nb_last_error());

#pragma omp parallel num_threads(nt)
    {
        float *yb = ybuf + (size_t)omp_get_thread_num() * ystride;
#pragma omp for schedule(static)
        for (long ck = 0; ck < nch; ck++) {
            const size_t lo = (size_t)ck * NB_LSQ_CHUNK, hi = lo + NB_LSQ_CHUNK < total ? lo + NB_LSQ_CHUNK : total;
            bwd_chunk(x->data, g, yb, lo, hi, C, HW, s->a, s->b, s->k, &part[2 * ck], &part[2 * ck + 1]);
            /* the batchnorm sums of the planes inside the chunk, from cache */
            for (size_t p = (lo + HW - 1) / HW; (p + 1) * HW <= hi; p++)
                nb_bn_plane_dsums(x->data + p * HW, g + p * HW, yb + (p * HW - lo), HW, s->mean[p % (size_t)C],
                                  &psum[2 * p], &psum[2 * p + 1]);
        }
        /* planes across chunks: complete only now; y once more */
#pragma omp for schedule(static)
        for (long p = 0; p < (long)planes; p++) {
            if (!plane_split((size_t)p, HW)) continue;
            const size_t o = (size_t)p * HW;
            const size_t c = (size_t)p % (size_t)C;
            for (int i = 0; i < HW; i++) yb[i] = nb_bn_relu(x->data[o + i], s->a[c], s->b[c]);
            nb_bn_plane_dsums(x->data + o, g + o, yb, HW, s->mean[c], &psum[2 * p], &psum[2 * p + 1]);
        }
    }
    double ds = 0.0, db = 0.0;
    for (long ck = 0; ck < nch; ck++) {
        ds += part[2 * ck];
        db += part[2 * ck + 1];
    }
    nb_lsq_grad_add(dstep, s->aq.grad_scale, ds);
    nb_lsq_grad_add(doff, s->aq.grad_scale, db);

    const double cnt = (double)N * HW;
    for (int c = 0; c < C; c++) {
        double sdy = 0.0, sdyx = 0.0;
        for (int n = 0; n < N; n++) {
            sdy += (double)psum[2 * ((size_t)n * C + c)];
            sdyx += (double)psum[2 * ((size_t)n * C + c) + 1];
        }
        kc[c] = nb_bn_channel_grads(sdy, sdyx, s->mean[c], s->invstd[c], gamma->data[c], s->training, cnt,
                                    dg ? &dg[c] : NULL, dbeta ? &dbeta[c] : NULL);
    }
    if (!dx) return;
    /* g is masked already: no y */
#pragma omp parallel for schedule(static) num_threads(nt)
    for (long p = 0; p < (long)planes; p++) {
        const size_t o = (size_t)p * HW;
        nb_bn_dx_plane(&kc[(size_t)p % (size_t)C], x->data + o, g + o, NULL, dx + o, HW, fresh);
    }
}
