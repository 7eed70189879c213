/* Stride-1 "same" convolution without im2col.
 *
 * With the image zero-padded to (Hp, W + 2p), Hp = H + 2p, keep K copies of
 * each padded channel, copy kw holding columns kw .. kw + W - 1 of every
 * padded row ("X3": an im2col along the width only, K copies where im2col
 * makes K*K; each copy is a plane of Hp rows of width W). Kernel tap
 * (kh, kw) then reads copy kw shifted down by kh rows, i.e. by kh * W
 * floats, so the taps of one kernel row kh are one GEMM over rows (c, kw)
 * with the constant row stride P = Hp * W, and its columns are exactly the
 * H * W output pixels:
 *   y (OC, H*W) = sum over kh of Wk[kh] (OC, C*K) * (X3 + kh*W) (C*K, H*W)
 * The backward builds the same from dy: dx with the kernel flipped and
 * transposed over the copies of dy, dw[kh] = dy (OC, H*W) * (X3 + kh*W)^T.
 * The zero borders of the copies sit at the same places for every image,
 * so they are cleared once per call and only the interiors are copied. */
#include <omp.h>
#include <string.h>

#include "internal.h"

int nb_conv_same_applies(const conv_geom *g) {
    return g->stride == 1 && g->KH == g->KW && g->KH > 1 && g->KH % 2 == 1 && 2 * g->pad == g->KH - 1;
}

/* x3 row (c * K + kw), a plane (Hp, W): x3[c*K+kw][hp][w] = x[c][hp - p][w + kw - p],
 * written only where that pixel lies inside x (the rest stays zero). */
static void shifted_copies(const conv_geom *g, int C, const float *x, float *x3) {
    const int p = g->pad, K = g->KH, H = g->H, W = g->W;
    const size_t P = (size_t)(H + 2 * p) * W;
    for (int c = 0; c < C; c++)
        for (int kw = 0; kw < K; kw++) {
            const int lo = kw < p ? p - kw : 0, hi = kw > p ? W + p - kw : W; /* [lo, hi) */
            float *dst = x3 + ((size_t)c * K + kw) * P + (size_t)p * W + lo;
            const float *src = x + (size_t)c * H * W + lo + kw - p;
            for (int h = 0; h < H; h++)
                memcpy(dst + (size_t)h * W, src + (size_t)h * W, sizeof(float) * (size_t)(hi - lo));
        }
}

/* wk[kh][oc][c*K + kw] (flip = 0) or wk[kh][c][oc*K + (K-1-kw)] (flip = 1)
 * from w (OC, C, K, K). */
static void regroup_weights(const conv_geom *g, const float *w, int flip, float *wk) {
    const int K = g->KH, KK = K * K, OC = g->OC, C = g->C;
    for (int oc = 0; oc < OC; oc++)
        for (int c = 0; c < C; c++)
            for (int kh = 0; kh < K; kh++)
                for (int kw = 0; kw < K; kw++) {
                    float v = w[((size_t)oc * C + c) * KK + kh * K + kw];
                    if (!flip)
                        wk[(((size_t)kh * OC + oc) * C + c) * K + kw] = v;
                    else
                        wk[(((size_t)kh * C + c) * OC + oc) * K + (K - 1 - kw)] = v;
                }
}

void nb_conv_same_forward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                          const float *b, float *y) {
    const int K = g->KH, CK = g->C * K, W = g->W, HW = g->H * W;
    const int P = (g->H + 2 * g->pad) * W;
    const int nt = nb_get_threads();
    const size_t x3_sz = (size_t)CK * P;
    float *wk = nb_tape_scratch(t, sizeof(float) * (size_t)K * g->OC * CK);
    float *scratch = nb_tape_scratch(t, sizeof(float) * (size_t)nt * x3_sz);
    NB_ASSERT(wk && scratch, "conv2d: %s", nb_last_error());
    regroup_weights(g, w, 0, wk);

#pragma omp parallel num_threads(nt)
    {
        float *x3 = scratch + (size_t)omp_get_thread_num() * x3_sz;
        memset(x3, 0, sizeof(float) * x3_sz); /* the borders stay zero */
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            float *yn = y + (size_t)n * g->OC * HW;
            shifted_copies(g, g->C, x + (size_t)n * g->C * HW, x3);
            for (int kh = 0; kh < K; kh++)
                nb_sgemm_nn(g->OC, HW, CK, wk + (size_t)kh * g->OC * CK, CK, 1, x3 + (size_t)kh * W, P,
                            kh ? 1.0f : 0.0f, yn, HW);
            if (b) nb_conv_add_bias(yn, b, g->OC, HW);
        }
    }
}

void nb_conv_same_backward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                           const float *dy, float *dx, int dx_fresh, float *dw, float *db) {
    const int p = g->pad, K = g->KH, KK = K * K, CKK = g->C * KK, CK = g->C * K, OCK = g->OC * K;
    const int W = g->W, HW = g->H * W, P = (g->H + 2 * p) * W;
    const int nt = nb_get_threads();
    const size_t x3_sz = dw ? (size_t)CK * P : 0, dy3_sz = dx ? (size_t)OCK * P : 0;
    const size_t dwk_sz = dw ? (size_t)K * g->OC * CK : 0, db_sz = db ? (size_t)g->OC : 0;
    const size_t per = x3_sz + dy3_sz + dwk_sz + db_sz;
    float *wt = dx ? nb_tape_scratch(t, sizeof(float) * (size_t)K * g->C * OCK) : NULL;
    float *scratch = nb_tape_scratch(t, sizeof(float) * (size_t)nt * per);
    NB_ASSERT(scratch && (!dx || wt), "conv2d backward: %s", nb_last_error());
    if (dx) regroup_weights(g, w, 1, wt);

#pragma omp parallel num_threads(nt)
    {
        float *x3 = scratch + (size_t)omp_get_thread_num() * per, *dy3 = x3 + x3_sz;
        float *dwk = dy3 + dy3_sz, *dbt = dwk + dwk_sz;
        memset(x3, 0, sizeof(float) * per); /* borders, and the partial sums */
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *dyn = dy + (size_t)n * g->OC * HW;
            if (db) nb_conv_sum_planes(dyn, g->OC, HW, dbt);
            if (dw) {
                /* dw[kh] (OC, C*K) += dy (OC, HW) * (X3 + kh*W)^T */
                shifted_copies(g, g->C, x + (size_t)n * g->C * HW, x3);
                for (int kh = 0; kh < K; kh++)
                    nb_sgemm_nt(g->OC, CK, HW, dyn, HW, x3 + (size_t)kh * W, P, 1.0f,
                                dwk + (size_t)kh * g->OC * CK, CK);
            }
            if (dx) {
                /* dx (C, HW) (+)= sum over kh of wt[kh] (C, OC*K) * rows (oc, kw') of the
                 * copies of dy shifted by (2p - kh) rows, with kw' = K - 1 - kw (the flip) */
                shifted_copies(g, g->OC, dyn, dy3);
                float *dxn = dx + (size_t)n * g->C * HW;
                for (int kh = 0; kh < K; kh++)
                    nb_sgemm_nn(g->C, HW, OCK, wt + (size_t)kh * g->C * OCK, OCK, 1,
                                dy3 + (size_t)(2 * p - kh) * W, P, (kh || !dx_fresh) ? 1.0f : 0.0f, dxn,
                                HW);
            }
        }
    }
    /* Reduce the per-thread partial sums in thread order (deterministic). */
    for (int th = 0; th < nt; th++) {
        const float *dwk = scratch + (size_t)th * per + x3_sz + dy3_sz;
        const float *dbt = dwk + dwk_sz;
        if (dw)
            for (int kh = 0; kh < K; kh++)
                for (int oc = 0; oc < g->OC; oc++)
                    for (int c = 0; c < g->C; c++)
                        for (int kw = 0; kw < K; kw++)
                            dw[(size_t)oc * CKK + (size_t)c * KK + kh * K + kw] +=
                                dwk[(((size_t)kh * g->OC + oc) * g->C + c) * K + kw];
        if (db)
            for (int oc = 0; oc < g->OC; oc++) db[oc] += dbt[oc];
    }
}
