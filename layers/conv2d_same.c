/* Stride-1 "same" convolution without im2col.
 *
 * With the image zero-padded to (Hp, Wp) = (H + 2p, W + 2p) and the output
 * computed on rows of width Wp (the last 2p columns of each row are junk
 * and dropped), tap (kh, kw) of the kernel reads the padded image shifted by
 * kh * Wp + kw: a contiguous (C, H * Wp) matrix with row stride Hp * Wp. So
 *   y_pad (OC, H*Wp) = sum over taps of w[:, :, kh, kw] (OC, C) * shift(x_pad)
 * is K*K GEMMs on data the size of the image, where im2col writes and reads
 * K*K copies of it. The backward uses one padded copy of dy for both
 * gradients: dw per tap is dy_pad (junk columns zero) times shift(x_pad)^T,
 * and dx is the same shifted sum with the kernel flipped and transposed.
 * Shifted reads run past the last plane by up to 2p floats, into slack that
 * is kept zero. */
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

void nb_conv_same_forward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                          const float *b, float *y) {
    const int p = g->pad, K = g->KH, KK = K * K, CKK = g->C * KK;
    const int Wp = g->W + 2 * p, plane = (g->H + 2 * p) * Wp, L = g->H * Wp, HW = g->H * g->W;
    const int nt = nb_get_threads();
    const size_t xp_sz = (size_t)g->C * plane + 2 * p + 16, yp_sz = (size_t)g->OC * L;
    float *scratch = nb_tape_scratch(t, sizeof(float) * (size_t)nt * (xp_sz + yp_sz));
    NB_ASSERT(scratch, "conv2d: %s", nb_last_error());

#pragma omp parallel num_threads(nt)
    {
        float *xp = scratch + (size_t)omp_get_thread_num() * (xp_sz + yp_sz), *yp = xp + xp_sz;
        memset(xp, 0, sizeof(float) * xp_sz); /* borders and slack stay zero */
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            pad_in(g, g->C, x + (size_t)n * g->C * HW, xp);
            for (int kh = 0; kh < K; kh++)
                for (int kw = 0; kw < K; kw++) {
                    const int k = kh * K + kw;
                    nb_sgemm_nn(g->OC, L, g->C, w + k, CKK, KK, xp + kh * Wp + kw, plane, k ? 1.0f : 0.0f, yp, L);
                }
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
    const int p = g->pad, K = g->KH, KK = K * K, CKK = g->C * KK;
    const int Wp = g->W + 2 * p, plane = (g->H + 2 * p) * Wp, L = g->H * Wp, HW = g->H * g->W;
    const int nt = nb_get_threads();
    const size_t xp_sz = dw ? (size_t)g->C * plane + 2 * p + 16 : 0;
    const size_t dyp_sz = (size_t)g->OC * plane + 2 * p + 16;
    const size_t dxp_sz = dx ? (size_t)g->C * L : 0;
    const size_t dwk_sz = dw ? (size_t)KK * g->OC * g->C : 0, db_sz = db ? (size_t)g->OC : 0;
    const size_t per = xp_sz + dyp_sz + dxp_sz + dwk_sz + db_sz;
    float *scratch = nb_tape_scratch(t, sizeof(float) * (size_t)nt * per);
    NB_ASSERT(scratch, "conv2d backward: %s", nb_last_error());

#pragma omp parallel num_threads(nt)
    {
        float *xp = scratch + (size_t)omp_get_thread_num() * per;
        float *dyp = xp + xp_sz, *dxp = dyp + dyp_sz, *dwk = dxp + dxp_sz, *dbt = dwk + dwk_sz;
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
                /* dw_k (OC, C) += dy_pad (OC, L) * shift_k(x_pad)^T; junk columns of
                 * dy_pad are the zero border, so they add nothing. */
                pad_in(g, g->C, x + (size_t)n * g->C * HW, xp);
                const float *a = dyp + p * Wp + p;
                for (int k = 0; k < KK; k++)
                    nb_sgemm_nt(g->OC, g->C, L, a, plane, xp + (k / K) * Wp + k % K, plane, 1.0f,
                                dwk + (size_t)k * g->OC * g->C, g->C);
            }
            if (dx) {
                /* dx_pad (C, L) = sum_k w[:, :, kh, kw]^T (C, OC) * shift_{2p-kh, 2p-kw}(dy_pad) */
                for (int k = 0; k < KK; k++) {
                    const int kh = k / K, kw = k % K;
                    nb_sgemm_nn(g->C, L, g->OC, w + k, KK, CKK, dyp + (2 * p - kh) * Wp + (2 * p - kw), plane,
                                k ? 1.0f : 0.0f, dxp, L);
                }
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
        const float *dwk = scratch + (size_t)th * per + xp_sz + dyp_sz + dxp_sz, *dbt = dwk + dwk_sz;
        if (dw)
            for (int k = 0; k < KK; k++)
                for (int oc = 0; oc < g->OC; oc++)
                    for (int c = 0; c < g->C; c++)
                        dw[(size_t)oc * CKK + (size_t)c * KK + k] += dwk[((size_t)k * g->OC + oc) * g->C + c];
        if (db)
            for (int oc = 0; oc < g->OC; oc++) db[oc] += dbt[oc];
    }
}
