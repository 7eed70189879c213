/* 3x3 stride-1 "same" convolutions on maps of at most 2x2 (ResNet-18's
 * last stage at 64 px with the ImageNet stem) as one dense matrix.
 *
 * With P = Q = H*W pixels, the layer is the linear map from an image's
 * C*Q inputs to its OC*P outputs, a (OC*P, C*Q) matrix Wd whose entry
 * ((oc, p), (c, q)) is w[oc][c][tap(p, q)] (zero where q is outside p's
 * window; at 2x2 every pixel is inside every window). Per image that is
 * 16 C OC multiplications at 2x2, the same as Winograd F(2x2, 3x3), but
 * with no transforms of inputs and outputs, and Wd is built by copying
 * w, which at these sizes is the whole cost Winograd adds to its GEMMs.
 * The images are the rows of x (N, C*Q) and y (N, OC*P) as they lie in
 * memory:
 *   y  = x Wd^T          dx (+)= dy Wd          dWd = dy^T x
 * and dw[oc][c][tap] sums dWd's entries of that tap. The GEMMs are split
 * over the threads by output columns (rows of dWd). */
#include <omp.h>
#include <string.h>

#include "internal.h"

int nb_conv_dense_applies(const conv_geom *g) {
    return g->KH == 3 && g->KW == 3 && g->stride == 1 && g->pad == 1 && g->H <= 2 &&
           g->W <= 2;
}

/* The tap of w linking output pixel p to input pixel q, -1 if none. */
static int tap_of(const conv_geom *g, int p, int q) {
    const int kh = q / g->W - p / g->W + g->pad, kw = q % g->W - p % g->W + g->pad;
    return kh >= 0 && kh < g->KH && kw >= 0 && kw < g->KW ? kh * g->KW + kw : -1;
}

/* Wd (OC*P, C*Q) from w (OC, C, 3, 3), rows split over the threads. */
static void build_dense(const conv_geom *g, const float *w, float *wd) {
    const int P = g->H * g->W, Q = P, KK = g->KH * g->KW, KD = g->C * Q;
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int oc = 0; oc < g->OC; oc++)
        for (int p = 0; p < P; p++) {
            float *row = wd + ((size_t)oc * P + p) * KD;
            int tap[4];
            for (int q = 0; q < Q; q++) tap[q] = tap_of(g, p, q);
            for (int c = 0; c < g->C; c++) {
                const float *f = w + ((size_t)oc * g->C + c) * KK;
                for (int q = 0; q < Q; q++) row[c * Q + q] = tap[q] >= 0 ? f[tap[q]] : 0.0f;
            }
        }
}

/* [lo, hi) of n items for thread th of nt, in multiples of 16 where it can. */
static void split(int n, int th, int nt, int *lo, int *hi) {
    const int blocks = (n + 15) / 16;
    *lo = (int)((long)blocks * th / nt) * 16;
    *hi = (int)((long)blocks * (th + 1) / nt) * 16;
    if (*lo > n) *lo = n;
    if (*hi > n) *hi = n;
}

void nb_conv_dense_forward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w, const float *b,
                           float *y) {
    const int P = g->H * g->W, R = g->OC * P, KD = g->C * P, nt = nb_get_threads();
    float *wd = nb_tape_scratch(t, sizeof(float) * (size_t)R * KD);
    NB_ASSERT(wd, "conv2d: %s", nb_last_error());
    build_dense(g, w, wd);
#pragma omp parallel num_threads(nt)
    {
        int lo, hi;
        split(R, omp_get_thread_num(), nt, &lo, &hi);
        /* y[:, lo:hi] = x (N, KD) * Wd[lo:hi]^T */
        if (hi > lo) nb_sgemm_nt(N, hi - lo, KD, x, KD, wd + (size_t)lo * KD, KD, 0.0f, y + lo, R);
    }
    if (b)
        for (int n = 0; n < N; n++) nb_conv_add_bias(y + (size_t)n * R, b, g->OC, P);
}

void nb_conv_dense_backward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w, const float *dy,
                            float *dx, int dx_fresh, float *dw, float *db) {
    const int P = g->H * g->W, R = g->OC * P, KD = g->C * P, KK = g->KH * g->KW, nt = nb_get_threads();
    float *wd = dx ? nb_tape_scratch(t, sizeof(float) * (size_t)R * KD) : NULL;
    float *dwd = dw ? nb_tape_scratch(t, sizeof(float) * (size_t)R * KD) : NULL;
    NB_ASSERT((!dx || wd) && (!dw || dwd), "conv2d backward: %s", nb_last_error());
    if (dx) build_dense(g, w, wd);
#pragma omp parallel num_threads(nt)
    {
        int lo, hi;
        if (dx) { /* dx[:, lo:hi] (+)= dy (N, R) * Wd[:, lo:hi] */
            split(KD, omp_get_thread_num(), nt, &lo, &hi);
            if (hi > lo)
                nb_sgemm_nn(N, hi - lo, R, dy, R, 1, wd + lo, KD, dx_fresh ? 0.0f : 1.0f, dx + lo, KD);
        }
        if (dw) { /* dWd[lo:hi] = dy[:, lo:hi]^T (hi - lo, N) * x (N, KD) */
            split(R, omp_get_thread_num(), nt, &lo, &hi);
            if (hi > lo) nb_sgemm_nn(hi - lo, KD, N, dy + lo, 1, R, x, KD, 0.0f, dwd + (size_t)lo * KD, KD);
        }
    }
    if (dw) {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int oc = 0; oc < g->OC; oc++)
            for (int p = 0; p < P; p++) {
                const float *row = dwd + ((size_t)oc * P + p) * KD;
                int tap[4];
                for (int q = 0; q < P; q++) tap[q] = tap_of(g, p, q);
                for (int c = 0; c < g->C; c++) {
                    float *f = dw + ((size_t)oc * g->C + c) * KK;
                    for (int q = 0; q < P; q++)
                        if (tap[q] >= 0) f[tap[q]] += row[c * P + q];
                }
            }
    }
    if (db)
        for (int oc = 0; oc < g->OC; oc++) {
            float s = 0.0f;
            for (int n = 0; n < N; n++)
                for (int p = 0; p < P; p++) s += dy[(size_t)n * R + (size_t)oc * P + p];
            db[oc] += s;
        }
}
