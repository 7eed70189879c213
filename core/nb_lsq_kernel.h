/*
 * nb_lsq_kernel.h — the element arithmetic of the learned quantizers (LSQ,
 * LSQ+, PACT; ALGORITHMS.md §4, formulas and gradients in quant/lsq.c's
 * header), header-only. Two ops run it: quant/lsq.c's quantizer op and
 * layers/'s batchnorm + ReLU + quantizer op, which applies a conv's input
 * quantizer inside the batchnorm that feeds it. Both must give the same bits
 * (the fused op replaces the pair of ops), so the formula exists once, here,
 * and with it the order of the step-size sums: 16 float lanes per chunk of
 * NB_LSQ_CHUNK elements of the flat tensor.
 *
 * Example (one segment, s = 0.5, signed 4-bit grid):
 *     const nb_lsq_consts k = nb_lsq_consts_make(0, 0.5f, 0.0f, -8.0f, 7.0f);
 *     y[i] = nb_lsq_fwd_elem(&k, x[i]);
 */
#ifndef NB_LSQ_KERNEL_H
#define NB_LSQ_KERNEL_H

#include <stddef.h>

#define NB_LSQ_RND_MAGIC 12582912.0f /* 1.5 * 2^23: (v + M) - M is rint for |v| <= 2^22 */
#define NB_LSQ_LANES 16              /* step-size sums: element i in lane i mod 16 */
#define NB_LSQ_CHUNK 16384           /* the fixed partition the sums are taken over */

/* One segment's constants (s, β and the clamp terms of its gradient). */
typedef struct {
    float s, beta, qmin, qmax, lo_term, hi_term, round_on;
    int pact;
} nb_lsq_consts;

/* p is the trained parameter: s (LSQ, LSQ+) or α (PACT, s = α / qmax). */
static inline nb_lsq_consts nb_lsq_consts_make(int pact, float p, float beta, float qmin, float qmax) {
    return (nb_lsq_consts){pact ? p / qmax : p, beta, qmin, qmax, pact ? qmin / qmax : qmin, pact ? 1.0f : qmax,
                           pact ? 0.0f : 1.0f, pact};
}

/* The quantized x. v is clamped before rounding, so |v| <= 2^22 holds for
 * every grid. */
static inline float nb_lsq_fwd_elem(const nb_lsq_consts *k, float x) {
    float v = (x - k->beta) / k->s;
    v = v < k->qmin ? k->qmin : v;
    v = v > k->qmax ? k->qmax : v;
    return (v + NB_LSQ_RND_MAGIC - NB_LSQ_RND_MAGIC) * k->s + k->beta;
}

/* What the backward writes to dx (dx may be dy itself: each dy is read
 * before its dx is written). */
typedef enum {
    NB_LSQ_DX_NONE = 0,
    NB_LSQ_DX_SET,       /* dx = dy·inside */
    NB_LSQ_DX_ADD,       /* dx += dy·inside */
    NB_LSQ_DX_SET_RELU,  /* dx = x > 0 ? dy·inside : 0: the quantizer's input came
                            from a ReLU, whose backward this applies too */
    NB_LSQ_DX_COUNT
} nb_lsq_dx_mode;

/* Elements i0 .. i0 + m - 1 (m <= NB_LSQ_LANES) into the lanes: acc_s[j] +=
 * dy·(step-size term), acc_b[j] += dy·outside. Inlined with constant m and
 * mode, the loop vectorises; the arithmetic is the same on every
 * instruction set. PACT counts v == qmax as clipped (its dα = 1 where
 * x >= α). */
static inline __attribute__((always_inline)) void nb_lsq_bwd_block(const nb_lsq_consts *k, const float *x,
                                                                   const float *dy, float *dx, size_t i0, size_t m,
                                                                   nb_lsq_dx_mode mode, float *acc_s, float *acc_b) {
    for (size_t j = 0; j < m; j++) {
        const size_t i = i0 + j;
        const float v = (x[i] - k->beta) / k->s, g = dy[i];
        const float out = (float)(v < k->qmin) + (float)(v > k->qmax);
        const float hi = k->pact ? (float)(v >= k->qmax) : (float)(v > k->qmax);
        const float lo = (float)(v < k->qmin) + (k->pact ? (float)(v == k->qmin) : 0.0f);
        const float mid = k->round_on * ((v + NB_LSQ_RND_MAGIC - NB_LSQ_RND_MAGIC) - v);
        const float term = hi != 0.0f ? k->hi_term : lo != 0.0f ? k->lo_term : mid;
        acc_s[j] += g * term;
        acc_b[j] += g * out;
        if (mode == NB_LSQ_DX_SET) dx[i] = g * (1.0f - out);
        if (mode == NB_LSQ_DX_ADD) dx[i] += g * (1.0f - out);
        if (mode == NB_LSQ_DX_SET_RELU) dx[i] = x[i] > 0.0f ? g * (1.0f - out) : 0.0f;
    }
}

/* Whole blocks of lanes over the first nb elements (nb a multiple of
 * NB_LSQ_LANES); inlined with a constant mode. */
static inline __attribute__((always_inline)) void nb_lsq_bwd_blocks(const nb_lsq_consts *k, const float *x,
                                                                    const float *dy, float *dx, size_t nb,
                                                                    nb_lsq_dx_mode mode, float *acc_s, float *acc_b) {
    for (size_t i0 = 0; i0 < nb; i0 += NB_LSQ_LANES)
        nb_lsq_bwd_block(k, x, dy, dx, i0, NB_LSQ_LANES, mode, acc_s, acc_b);
}

/* The backward of n elements (one chunk or less) from zeroed lanes: the
 * sums come back in *ds (Σ dy·term) and *db (Σ dy·outside), the lanes added
 * in lane order in double. One call per mode below, so each loop is
 * compiled for a constant mode. */
static inline __attribute__((always_inline)) void nb_lsq_bwd_run(const nb_lsq_consts *k, const float *x,
                                                                 const float *dy, float *dx, size_t n,
                                                                 nb_lsq_dx_mode mode, double *ds, double *db) {
    float acc_s[NB_LSQ_LANES] = {0}, acc_b[NB_LSQ_LANES] = {0};
    const nb_lsq_consts kl = *k; /* a local copy: stores to dx cannot change it */
    const size_t nb = n / NB_LSQ_LANES * NB_LSQ_LANES;
    switch (mode) {
    case NB_LSQ_DX_SET: nb_lsq_bwd_blocks(&kl, x, dy, dx, nb, NB_LSQ_DX_SET, acc_s, acc_b); break;
    case NB_LSQ_DX_ADD: nb_lsq_bwd_blocks(&kl, x, dy, dx, nb, NB_LSQ_DX_ADD, acc_s, acc_b); break;
    case NB_LSQ_DX_SET_RELU: nb_lsq_bwd_blocks(&kl, x, dy, dx, nb, NB_LSQ_DX_SET_RELU, acc_s, acc_b); break;
    default: nb_lsq_bwd_blocks(&kl, x, dy, dx, nb, NB_LSQ_DX_NONE, acc_s, acc_b); break;
    }
    nb_lsq_bwd_block(&kl, x, dy, dx, nb, n - nb, mode, acc_s, acc_b);
    double ts = 0.0, tb = 0.0;
    for (int j = 0; j < NB_LSQ_LANES; j++) {
        ts += (double)acc_s[j];
        tb += (double)acc_b[j];
    }
    *ds = ts;
    *db = tb;
}

/* *d += g·sum, the gradient of a step size or offset from its segment's
 * sum (d may be NULL: not wanted). */
static inline void nb_lsq_grad_add(float *d, float grad_scale, double sum) {
    if (d) *d += (float)((double)grad_scale * sum);
}

#endif /* NB_LSQ_KERNEL_H */
