/* Stride-1 "same" convolution without im2col.
 *
 * With the image zero-padded to (Hp, Wp) = (H + 2p, W + 2p) and the output
 * computed on rows of width Wp (the last 2p columns of each row are junk
 * and dropped), kernel tap (kh, kw) reads the padded image shifted by
 * kh * Wp + kw. Keeping K copies of each padded channel, copy kw shifted by
 * kw ("X3", a partial im2col along the width only: K copies where im2col
 * makes K*K), the taps of one kernel row kh become one GEMM over rows
 * (c, kw) with a constant row stride:
 *   y_pad (OC, H*Wp) = sum over kh of Wk[kh] (OC, C*K) * (X3 + kh*Wp) (C*K, H*Wp)
 * The backward builds the same from one padded copy of dy: dx with the
 * kernel flipped and transposed, dw[kh] = dy_pad * (X3 + kh*Wp)^T, where the
 * junk columns of dy_pad are zero border and add nothing. Shifted reads run
 * past a plane by up to 2p floats, into the next plane or zeroed slack. */
#include <omp.h>
#include <string.h>

#include "internal.h"

int nb_conv_same_applies(const conv_geom *g) {
    return g->stride == 1 && g->KH == g->KW && g->KH > 1 && g->KH % 2 == 1 && 2 * g->pad == g->KH - 1;
}

/* Interior of the padded planes (C, Hp, Wp) <- x (C, H, W); borders untouched. */
static void pad_in(const conv_geom *g, int C, const float *x, float *xp) {
    const int p = g->pad, Wp = g->W + 2 * p, plane = (g->H + 2 * p) * Wp;
    for (int c = 0; c < C; c++)
        for (int h = 0; h < g->H; h++)
            memcpy(xp + (size_t)c * plane + (size_t)(h + p) * Wp + p, x + ((size_t)c * g->H + h) * g->W,
                   sizeof(float) * (size_t)g->W);
}

/* x3 row (c * K + kw) = padded plane c shifted left by shift0 + sign * kw. */
static void shifted_copies(int C, int K, int plane, const float *xp, int shift0, int sign, float *x3) {
    for (int c = 0; c < C; c++)
        for (int kw = 0; kw < K; kw++)
            memcpy(x3 + ((size_t)c * K + kw) * plane, xp + (size_t)c * plane + shift0 + sign * kw,
                   sizeof(float) * (size_t)plane);
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
    const int p = g->pad, K = g->KH, CK = g->C * K;
    const int Wp = g->W + 2 * p, plane = (g->H + 2 * p) * Wp, L = g->H * Wp, HW = g->H * g->W;
    const int nt = nb_get_threads();
    const size_t xp_sz = (size_t)g->C * plane + 2 * p + 16, x3_sz = (size_t)CK * plane;
    const size_t yp_sz = (size_t)g->OC * L, per = xp_sz + x3_sz + yp_sz;
    float *wk = nb_tape_scratch(t, sizeof(float) * (size_t)K * g->OC * CK);
    float *scratch = nb_tape_scratch(t, sizeof(float) * (size_t)nt * per);
    NB_ASSERT(wk && scratch, "conv2d: %s", nb_last_error());
    regroup_weights(g, w, 0, wk);

#pragma omp parallel num_threads(nt)
    {
        float *xp = scratch + (size_t)omp_get_thread_num() * per, *x3 = xp + xp_sz, *yp = x3 + x3_sz;
        memset(xp, 0, sizeof(float) * xp_sz); /* borders and slack stay zero */
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            pad_in(g, g->C, x + (size_t)n * g->C * HW, xp);
            shifted_copies(g->C, K, plane, xp, 0, 1, x3);
            for (int kh = 0; kh < K; kh++)
                nb_sgemm_nn(g->OC, L, CK, wk + (size_t)kh * g->OC * CK, CK, 1, x3 + kh * Wp, plane,
                            kh ? 1.0f : 0.0f, yp, L);
            float *yn = y + (size_t)n * g->OC * HW;
            for (int oc = 0; oc < g->OC; oc++) {
                const float bv = b ? b[oc] : 0.0f;
                for (int h = 0; h < g->H; h++) {
                    const float *src = yp + (size_t)oc * L + (size_t)h * Wp;
                    float *dst = yn + ((size_t)oc * g->H + h) * g->W;
                    for (int i = 0; i < g->W; i++) dst[i] = src[i] + bv;
                }
            }
        }
    }
}

void nb_conv_same_backward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                           const float *dy, float *dx, int dx_fresh, float *dw, float *db) {
    const int p = g->pad, K = g->KH, KK = K * K, CKK = g->C * KK, CK = g->C * K, OCK = g->OC * K;
    const int Wp = g->W + 2 * p, plane = (g->H + 2 * p) * Wp, L = g->H * Wp, HW = g->H * g->W;
    const int nt = nb_get_threads();
    const size_t slack = 2 * (size_t)p + 16;
    const size_t xp_sz = dw ? (size_t)g->C * plane + slack : 0, x3_sz = dw ? (size_t)CK * plane : 0;
    const size_t dyp_sz = (size_t)g->OC * plane + slack, dy3_sz = dx ? (size_t)OCK * plane : 0;
    const size_t dxp_sz = dx ? (size_t)g->C * L : 0;
    const size_t dwk_sz = dw ? (size_t)K * g->OC * CK : 0, db_sz = db ? (size_t)g->OC : 0;
    const size_t per = xp_sz + x3_sz + dyp_sz + dy3_sz + dxp_sz + dwk_sz + db_sz;
    float *wt = dx ? nb_tape_scratch(t, sizeof(float) * (size_t)K * g->C * OCK) : NULL;
    float *scratch = nb_tape_scratch(t, sizeof(float) * (size_t)nt * per);
    NB_ASSERT(scratch && (!dx || wt), "conv2d backward: %s", nb_last_error());
    if (dx) regroup_weights(g, w, 1, wt);

#pragma omp parallel num_threads(nt)
    {
        float *xp = scratch + (size_t)omp_get_thread_num() * per, *x3 = xp + xp_sz, *dyp = x3 + x3_sz;
        float *dy3 = dyp + dyp_sz, *dxp = dy3 + dy3_sz, *dwk = dxp + dxp_sz, *dbt = dwk + dwk_sz;
        memset(xp, 0, sizeof(float) * per); /* borders, slack, and the partial sums */
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *dyn = dy + (size_t)n * g->OC * HW;
            pad_in(g, g->OC, dyn, dyp);
            if (db)
                for (int oc = 0; oc < g->OC; oc++) {
                    float s = 0.0f;
                    for (int i = 0; i < HW; i++) s += dyn[(size_t)oc * HW + i];
                    dbt[oc] += s;
                }
            if (dw) {
                /* dw[kh] (OC, C*K) += dy_pad (OC, L) * (X3 + kh*Wp)^T */
                pad_in(g, g->C, x + (size_t)n * g->C * HW, xp);
                shifted_copies(g->C, K, plane, xp, 0, 1, x3);
                for (int kh = 0; kh < K; kh++)
                    nb_sgemm_nt(g->OC, CK, L, dyp + p * Wp + p, plane, x3 + kh * Wp, plane, 1.0f,
                                dwk + (size_t)kh * g->OC * CK, CK);
            }
            if (dx) {
                /* dx_pad (C, L) = sum over kh of wt[kh] (C, OC*K) * rows (oc, kw') of dy_pad
                 * shifted by (2p - kh) * Wp + kw', with kw' = K - 1 - kw (the flip) */
                shifted_copies(g->OC, K, plane, dyp, 0, 1, dy3);
                for (int kh = 0; kh < K; kh++)
                    nb_sgemm_nn(g->C, L, OCK, wt + (size_t)kh * g->C * OCK, OCK, 1, dy3 + (2 * p - kh) * Wp,
                                plane, kh ? 1.0f : 0.0f, dxp, L);
                float *dxn = dx + (size_t)n * g->C * HW;
                for (int c = 0; c < g->C; c++)
                    for (int h = 0; h < g->H; h++) {
                        const float *src = dxp + (size_t)c * L + (size_t)h * Wp;
                        float *dst = dxn + ((size_t)c * g->H + h) * g->W;
                        if (dx_fresh)
                            memcpy(dst, src, sizeof(float) * (size_t)g->W);
                        else
                            for (int i = 0; i < g->W; i++) dst[i] += src[i];
                    }
            }
        }
    }
    /* Reduce the per-thread partial sums in thread order (deterministic). */
    for (int th = 0; th < nt; th++) {
        const float *dwk = scratch + (size_t)th * per + xp_sz + x3_sz + dyp_sz + dy3_sz + dxp_sz;
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
