/* N2UQ activations (Liu et al., CVPR 2022), the activation side of ADQ
 * (ALGORITHMS.md §5 "Activations"). This is our reconstruction; the ADQ
 * paper's code was not available.
 *
 * n output levels above 0 (n = 2^b - 1 for b bits; any 2 <= n <= 255
 * works), learned parameters t0 (1), a[0..n-2] (n - 1 interval widths, kept
 * > 0 by the caller: with a width < 0 the thresholds are out of order and
 * the results unspecified, though memory-safe) and s (1, the uniform output
 * scale). Thresholds, with a indexed from 1 in the formulas (a_i = a[i-1]
 * in C):
 *
 *   T_1 = t0,  T_{i+1} = T_i + a_i  (i = 1..n-1)
 *   q(x) = #{i in 1..n : x >= T_i},  y = s·q   (NaN x gives NaN y)
 *
 * so the integer q in {0..n} is what an integer runtime keeps, on a
 * uniform output grid. Every gradient comes from one surrogate (the
 * generalised straight-through estimator), continuous except at T_1:
 *
 *   F(x) = 0                          x < T_1
 *   F(x) = i + (x - T_i)/a_i          T_i <= x < T_{i+1}  (interval i, 1 <= i <= n-1)
 *   F(x) = n                          x >= T_n
 *
 * q = floor(F) in exact arithmetic. With dy the upstream gradient and g the
 * gradient scale (LSQ's 1/sqrt(N·n), chosen by the caller), for x in
 * interval i (all terms 0 outside [T_1, T_n)):
 *
 *   dx  = dy·s/a_i
 *   dt0 += g·Σ dy·s·(-1/a_i)
 *   da_j += g·Σ dy·s·(-1/a_i)             j < i
 *   da_i += g·Σ dy·s·(-(x - T_i)/a_i^2)
 *   ds  += g·Σ dy·q                        (every x, the forward integer, not F)
 *
 * Numerics. The thresholds are accumulated in double and each rounded once
 * to float; forward and backward build the same table (n2uq_consts_make)
 * and compare the float x against it, so an element falls in the same
 * interval in both. The interval is found by counting the thresholds below
 * x, 16 elements at a time in GCC vector extensions: a linear count for up
 * to 15 thresholds, and above that a linear count over every 2^r-th
 * threshold followed by r steps of binary search. The backward adds, per
 * interval k, Y_k = Σ dy and Z_k = Σ dy·(x - T_k), and S = Σ dy·q; the
 * parameter gradients follow from them in double (dt0 = -Σ_k s/a_k·Y_k,
 * da_j = -Σ_{k>j} s/a_k·Y_k - s/a_j^2·Z_j). For n <= NB_N2UQ_SMALL the sums
 * run in 16 float lanes (element i in lane i mod 16, as LSQ's), else in
 * double, one element at a time into per-interval bins. Either way they are
 * taken per chunk of the fixed partition NB_N2UQ_CHUNK and then over the
 * chunks in order: the result does not depend on the thread count. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define NB_N2UQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define N2_INLINE static inline __attribute__((always_inline))

#define NB_N2UQ_MAX 255    /* most levels: thresholds in one 256-entry table */
#define NB_N2UQ_CHUNK 16384 /* the fixed partition the backward's sums are taken over */
#define NB_N2UQ_SMALL 31    /* up to this many levels the backward runs wholly in vectors */
#define N2_W 16             /* elements per block (one lane each) */
#define N2_BINS 4           /* large n: bins per interval, element i in bin i mod 4 */

typedef float n2_vf __attribute__((vector_size(4 * N2_W)));
typedef int32_t n2_vi __attribute__((vector_size(4 * N2_W)));

/* The per-call table. T[1..n] are the thresholds and T[n+1 .. 2^B - 1] NaN
 * (no x compares >= NaN), so the binary search of B steps over a complete
 * table needs no bounds; T[0] = 0 is never compared. */
typedef struct {
    float T[NB_N2UQ_MAX + 1];
    float inv[NB_N2UQ_MAX + 1]; /* s/a_q for q = 1..n-1; 0 at q = 0, q = n (no gradient) and the pads */
    float s;
    int n;
    int coarse; /* thresholds T[j << rem], j = 1..coarse, counted linearly */
    int rem;    /* binary-search steps after that */
} n2uq_consts;

static void n2uq_consts_make(const nb_n2uq_args *p, n2uq_consts *k) {
    const int n = p->n_levels;
    int B = 1;
    while ((1 << B) - 1 < n) B++;
    k->n = n;
    k->s = p->s->data[0];
    k->rem = B > 4 ? B - 4 : 0;
    k->coarse = (1 << (B - k->rem)) - 1;
    k->T[0] = 0.0f;
    k->inv[0] = 0.0f;
    double t = (double)p->t0->data[0];
    for (int i = 1; i <= n; i++) {
        k->T[i] = (float)t;
        k->inv[i] = i < n ? k->s / p->a->data[i - 1] : 0.0f;
        if (i < n) t += (double)p->a->data[i - 1];
    }
    for (int i = n + 1; i <= NB_N2UQ_MAX; i++) {
        k->T[i] = NAN;
        k->inv[i] = 0.0f;
    }
}

/* q[l] = #{i : x[l] >= T_i} for one block of N2_W elements. */
N2_INLINE void search_block(const n2uq_consts *restrict k, const float *x, int32_t *restrict q) {
    n2_vf v;
    memcpy(&v, x, sizeof v);
    n2_vi c = {0};
    for (int j = 1; j <= k->coarse; j++) c -= (n2_vi)(v >= k->T[j << k->rem]);
    c <<= k->rem;
    memcpy(q, &c, sizeof c);
    for (int st = k->rem ? 1 << (k->rem - 1) : 0; st; st >>= 1)
        for (int l = 0; l < N2_W; l++) q[l] += (int32_t)(x[l] >= k->T[q[l] + st]) * st;
}

N2_INLINE void fwd_block(const n2uq_consts *restrict k, const float *x, float *y) {
    int32_t qa[N2_W];
    search_block(k, x, qa);
    n2_vi q;
    n2_vf v;
    memcpy(&q, qa, sizeof q);
    memcpy(&v, x, sizeof v);
    const n2_vi nan = (n2_vi)(v != v);
    const n2_vf r = (n2_vf)((nan & (n2_vi)v) | (~nan & (n2_vi)(__builtin_convertvector(q, n2_vf) * k->s)));
    memcpy(y, &r, sizeof r);
}

/* A short tail runs as one block padded with NaN (q = 0, dropped). */
NB_N2UQ_CLONES static void fwd_segment(const n2uq_consts *restrict k, const float *x, float *y, size_t len) {
    const size_t nb = len / N2_W * N2_W;
    for (size_t i = 0; i < nb; i += N2_W) fwd_block(k, x + i, y + i);
    if (nb == len) return;
    float xt[N2_W], yt[N2_W];
    for (int l = 0; l < N2_W; l++) xt[l] = nb + (size_t)l < len ? x[nb + (size_t)l] : NAN;
    fwd_block(k, xt, yt);
    memcpy(y + nb, yt, sizeof(float) * (len - nb));
}

/* ------------------------------------------------------------------ backward */

typedef enum { N2_DX_NONE = 0, N2_DX_SET, N2_DX_ADD } n2_dx_mode;

/* Small n, one block: dx, and Y_k, Z_k (k = 1..n-1) and S in 16 float lanes
 * (acc holds Y at [0..n-2], Z at [n-1..2n-3], S at [2n-2]). dx may be dy. */
N2_INLINE void small_block(const n2uq_consts *restrict k, const float *x, const float *dy, float *dx,
                           n2_dx_mode mode, n2_vf *restrict acc) {
    const int n = k->n;
    n2_vf v, g;
    memcpy(&v, x, sizeof v);
    memcpy(&g, dy, sizeof g);
    n2_vi q = {0}, iq = {0};
    for (int j = 1; j <= n; j++) {
        const n2_vi m = (n2_vi)(v >= k->T[j]);
        q -= m;
        int32_t b; /* inv[j]'s bits: a float splat would cost an add (0 + x is not x for -0) */
        memcpy(&b, &k->inv[j], sizeof b);
        iq = (m & b) | (~m & iq);
    }
    const n2_vf w = g * (n2_vf)iq;
    if (mode == N2_DX_SET) memcpy(dx, &w, sizeof w);
    if (mode == N2_DX_ADD) {
        n2_vf d;
        memcpy(&d, dx, sizeof d);
        d += w;
        memcpy(dx, &d, sizeof d);
    }
    acc[2 * n - 2] += g * __builtin_convertvector(q, n2_vf);
    for (int j = 1; j < n; j++) {
        const n2_vi e = q == j;
        acc[j - 1] += (n2_vf)(e & (n2_vi)g);
        acc[n - 2 + j] += (n2_vf)(e & (n2_vi)(g * (v - k->T[j])));
    }
}

/* Large n, one block: the interval by search_block, then element by element
 * dx and the bins (bins[(q·N2_BINS + b)·2 + {0, 1}] += dy, dy·(x - T_q) in
 * double, b = element mod N2_BINS so consecutive adds do not wait on each
 * other). */
N2_INLINE void large_block(const n2uq_consts *restrict k, const float *x, const float *dy, float *dx,
                           n2_dx_mode mode, double *restrict bins) {
    int32_t q[N2_W];
    search_block(k, x, q);
    for (int l = 0; l < N2_W; l++) {
        const float g = dy[l], w = g * k->inv[q[l]];
        if (mode == N2_DX_SET) dx[l] = w;
        if (mode == N2_DX_ADD) dx[l] += w;
        double *b = bins + ((size_t)q[l] * N2_BINS + (size_t)(l % N2_BINS)) * 2;
        b[0] += (double)g;
        b[1] += (double)g * ((double)x[l] - (double)k->T[q[l]]);
    }
}

/* The blocks of one segment in a constant mode; a tail runs as a block
 * padded with x = NaN, dy = 0 (no contribution). */
N2_INLINE void bwd_blocks(const n2uq_consts *restrict k, const float *x, const float *dy, float *dx, size_t len,
                          n2_dx_mode mode, int small, n2_vf *restrict acc, double *restrict bins) {
    const size_t nb = len / N2_W * N2_W;
    for (size_t i = 0; i < nb; i += N2_W) {
        if (small) small_block(k, x + i, dy + i, dx ? dx + i : NULL, mode, acc);
        else large_block(k, x + i, dy + i, dx ? dx + i : NULL, mode, bins);
    }
    if (nb == len) return;
    float xt[N2_W], gt[N2_W], dt[N2_W];
    for (int l = 0; l < N2_W; l++) {
        const int in = nb + (size_t)l < len;
        xt[l] = in ? x[nb + (size_t)l] : NAN;
        gt[l] = in ? dy[nb + (size_t)l] : 0.0f;
        dt[l] = in && mode == N2_DX_ADD ? dx[nb + (size_t)l] : 0.0f;
    }
    if (small) small_block(k, xt, gt, dt, mode, acc);
    else large_block(k, xt, gt, dt, mode, bins);
    if (mode != N2_DX_NONE) memcpy(dx + nb, dt, sizeof(float) * (len - nb));
}

/* The backward of one segment (at most one chunk): dx per mode, and its
 * sums out[0..n-2] = Y_k, out[n-1..2n-3] = Z_k (k = 1..n-1), out[2n-2] = S. */
NB_N2UQ_CLONES static void bwd_segment(const n2uq_consts *restrict k, const float *x, const float *dy, float *dx,
                                       size_t len, n2_dx_mode mode, double *restrict out) {
    const int n = k->n;
    if (n <= NB_N2UQ_SMALL) {
        n2_vf acc[2 * NB_N2UQ_SMALL - 1];
        memset(acc, 0, sizeof(n2_vf) * (size_t)(2 * n - 1));
        switch (mode) {
        case N2_DX_SET: bwd_blocks(k, x, dy, dx, len, N2_DX_SET, 1, acc, NULL); break;
        case N2_DX_ADD: bwd_blocks(k, x, dy, dx, len, N2_DX_ADD, 1, acc, NULL); break;
        default: bwd_blocks(k, x, dy, dx, len, N2_DX_NONE, 1, acc, NULL); break;
        }
        for (int j = 0; j < 2 * n - 1; j++) {
            double t = 0.0;
            for (int l = 0; l < N2_W; l++) t += (double)acc[j][l];
            out[j] = t;
        }
        return;
    }
    double bins[(NB_N2UQ_MAX + 1) * N2_BINS * 2];
    memset(bins, 0, sizeof(double) * (size_t)(n + 1) * N2_BINS * 2);
    switch (mode) {
    case N2_DX_SET: bwd_blocks(k, x, dy, dx, len, N2_DX_SET, 0, NULL, bins); break;
    case N2_DX_ADD: bwd_blocks(k, x, dy, dx, len, N2_DX_ADD, 0, NULL, bins); break;
    default: bwd_blocks(k, x, dy, dx, len, N2_DX_NONE, 0, NULL, bins); break;
    }
    double S = 0.0;
    for (int q = 1; q <= n; q++) {
        double y = 0.0, z = 0.0;
        for (int b = 0; b < N2_BINS; b++) {
            y += bins[((size_t)q * N2_BINS + (size_t)b) * 2];
            z += bins[((size_t)q * N2_BINS + (size_t)b) * 2 + 1];
        }
        if (q < n) {
            out[q - 1] = y;
            out[n - 2 + q] = z;
        }
        S += (double)q * y;
    }
    out[2 * n - 2] = S;
}

/* ------------------------------------------------------------------ the kernels */

static void check_args(const nb_n2uq_args *p) {
    NB_ASSERT(p->n_levels >= 2 && p->n_levels <= NB_N2UQ_MAX, "n2uq: %d levels (2..%d)", p->n_levels, NB_N2UQ_MAX);
    NB_ASSERT(p->t0 && p->t0->numel == 1 && p->s && p->s->numel == 1 && p->a &&
                  p->a->numel == (size_t)p->n_levels - 1,
              "n2uq: t0 (%zu), a (%zu), s (%zu) for %d levels: want 1, %d, 1", p->t0 ? p->t0->numel : 0,
              p->a ? p->a->numel : 0, p->s ? p->s->numel : 0, p->n_levels, p->n_levels - 1);
}

void nb_n2uq_forward(const nb_n2uq_args *p, const float *x, size_t n, float *y) {
    check_args(p);
    n2uq_consts k;
    n2uq_consts_make(p, &k);
    const long nch = (long)((n + NB_N2UQ_CHUNK - 1) / NB_N2UQ_CHUNK);
    if (nch < 4) {
        fwd_segment(&k, x, y, n);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (long c = 0; c < nch; c++) {
        const size_t o = (size_t)c * NB_N2UQ_CHUNK;
        fwd_segment(&k, x + o, y + o, o + NB_N2UQ_CHUNK < n ? NB_N2UQ_CHUNK : n - o);
    }
}

void nb_n2uq_backward(const nb_n2uq_args *p, const float *x, size_t n, const float *dy, float *dx, int fresh,
                      float *dt0, float *da, float *ds) {
    check_args(p);
    n2uq_consts k;
    n2uq_consts_make(p, &k);
    const int L = p->n_levels, P = 2 * L - 1; /* sums per chunk */
    const n2_dx_mode mode = !dx ? N2_DX_NONE : fresh ? N2_DX_SET : N2_DX_ADD;
    const long nch = (long)((n + NB_N2UQ_CHUNK - 1) / NB_N2UQ_CHUNK);
    double stack[4096], *part = stack, *heap = NULL;
    if ((size_t)nch * (size_t)P > sizeof stack / sizeof stack[0]) {
        heap = nb_malloc((size_t)nch * (size_t)P * sizeof(double));
        NB_ASSERT(heap, "n2uq backward: %s", nb_last_error());
        part = heap;
    }
    if (nch > 1) {
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
        for (long c = 0; c < nch; c++) {
            const size_t o = (size_t)c * NB_N2UQ_CHUNK;
            bwd_segment(&k, x + o, dy + o, dx ? dx + o : NULL, o + NB_N2UQ_CHUNK < n ? NB_N2UQ_CHUNK : n - o, mode,
                        part + (size_t)c * (size_t)P);
        }
    } else if (nch == 1) {
        bwd_segment(&k, x, dy, dx, n, mode, part);
    }
    /* totals over the chunks in order, into part[0..P-1] */
    for (long c = 1; c < nch; c++)
        for (int j = 0; j < P; j++) part[j] += part[(size_t)c * (size_t)P + (size_t)j];
    if (nch == 0) memset(part, 0, sizeof(double) * (size_t)P);
    const double g = (double)p->grad_scale, s = (double)k.s;
    const float *a = p->a->data;
    /* an empty interval adds nothing, also when its width is 0 (no 0·inf) */
    double suf = 0.0; /* Σ_{k>j} s/a_k·Y_k */
    for (int j = L - 1; j >= 1; j--) {
        const double aj = (double)a[j - 1], y = part[j - 1], z = part[L - 2 + j];
        if (da) da[j - 1] += (float)(g * -(suf + (z != 0.0 ? s / (aj * aj) * z : 0.0)));
        suf += y != 0.0 ? s / aj * y : 0.0;
    }
    if (dt0) *dt0 += (float)(g * -suf);
    if (ds) *ds += (float)(g * part[P - 1]);
    nb_free(heap);
}

void nb_n2uq_init(int n_levels, const float *x, size_t n, float *t0, float *a, float *s) {
    NB_ASSERT(n_levels >= 2 && n_levels <= NB_N2UQ_MAX, "n2uq init: %d levels (2..%d)", n_levels, NB_N2UQ_MAX);
    const float v = nb_lsq_init_step(x, n, n_levels); /* LSQ's step: the op starts as its grid */
    *s = v;
    *t0 = 0.5f * v;
    for (int j = 0; j < n_levels - 1; j++) a[j] = v;
}

/* ------------------------------------------------------------------ tape op */

nb_tensor *nb_n2uq(nb_tape *t, nb_tensor *x, const nb_n2uq_args *p) {
    nb_tensor *y = nb_tape_tensor(t, x->ndim, x->shape);
    NB_ASSERT(y, "n2uq: %s", nb_last_error());
    nb_n2uq_forward(p, x->data, x->numel, y->data);
    if (!nb_tape_wants(t, x, p->t0, p->a) && !nb_tape_wants(t, p->s, NULL, NULL)) return y;
    nb_node *n = nb_tape_record(t, &nb_quant_op_table[NB_QOP_N2UQ], y, x, p->t0, p->a);
    nb_n2uq_args *sv = nb_tape_scratch(t, sizeof *sv);
    NB_ASSERT(n && sv, "n2uq: %s", nb_last_error());
    n->in[3] = p->s;
    *sv = *p;
    n->saved = sv;
    return y;
}

void nb_n2uq_backward_node(nb_tape *t, nb_node *n) {
    const nb_n2uq_args *p = n->saved;
    nb_tensor *x = n->in[0];
    float *dt0 = p->t0->requires_grad ? nb_tape_grad(t, p->t0) : NULL;
    float *da = p->a->requires_grad ? nb_tape_grad(t, p->a) : NULL;
    float *ds = p->s->requires_grad ? nb_tape_grad(t, p->s) : NULL;
    /* d(out) becomes d(x) in place when the tape allows; each dy is read
     * before its dx is written. */
    const float *dy = n->out->grad;
    int fresh = 0;
    float *dx = x->requires_grad ? nb_tape_grad_inplace(t, n->out, x, &fresh) : NULL;
    nb_n2uq_backward(p, x->data, x->numel, dy, dx, fresh, dt0, da, ds);
}
