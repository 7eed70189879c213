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

/* At 2x2, output pixel p's row of Wd holds, per input channel, the taps
 * of its window over q = 0..3 as two pairs adjacent in w: the taps
 * (a, a + 1, a + 3, a + 4) with a = 4, 3, 1, 0 for p = 0..3. */
static const int tap0_2x2[4] = {4, 3, 1, 0};

/* Wd (OC*P, C*Q) from w (OC, C, 3, 3), split over the threads by oc. */
static void build_dense(const conv_geom *g, const float *w, float *wd) {
    const int P = g->H * g->W, Q = P, KK = g->KH * g->KW, KD = g->C * Q, C = g->C;
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int oc = 0; oc < g->OC; oc++) {
        float *rows = wd + (size_t)oc * P * KD;
        const float *wo = w + (size_t)oc * C * KK;
        if (P == 4) { /* 2x2: all four rows in one pass over w[oc], as 8-byte pairs */
            for (int c = 0; c < C; c++) {
                const float *f = wo + (size_t)c * KK;
                for (int p = 0; p < 4; p++) {
                    float *r = rows + (size_t)p * KD + 4 * c;
                    memcpy(r, f + tap0_2x2[p], 2 * sizeof(float));
                    memcpy(r + 2, f + tap0_2x2[p] + 3, 2 * sizeof(float));
                }
            }
            continue;
        }
        for (int p = 0; p < P; p++) {
            float *row = rows + (size_t)p * KD;
            int tap[4];
            for (int q = 0; q < Q; q++) tap[q] = tap_of(g, p, q);
            for (int c = 0; c < C; c++) {
                const float *f = wo + (size_t)c * KK;
                for (int q = 0; q < Q; q++) row[c * Q + q] = tap[q] >= 0 ? f[tap[q]] : 0.0f;
            }
        }
    }
}

/* dw (OC, C, 3, 3) += dWd's entries summed by tap, split over the threads
 * by oc. Each tap's entries are added in the order of p, then q. */
static void reduce_dense(const conv_geom *g, const float *dwd, float *dw) {
    const int P = g->H * g->W, KK = g->KH * g->KW, KD = g->C * P, C = g->C;
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int oc = 0; oc < g->OC; oc++) {
        const float *rows = dwd + (size_t)oc * P * KD;
        float *fo = dw + (size_t)oc * C * KK;
        if (P == 4) { /* 2x2: the four rows of oc together, the 9 sums in registers */
            const float *r0 = rows, *r1 = rows + KD, *r2 = rows + 2 * (size_t)KD, *r3 = rows + 3 * (size_t)KD;
            for (int c = 0; c < C; c++) {
                const float *a = r0 + 4 * c, *b = r1 + 4 * c, *d = r2 + 4 * c, *e = r3 + 4 * c;
                float *f = fo + (size_t)c * KK;
                f[0] += e[0];
                f[1] = (f[1] + d[0]) + e[1];
                f[2] += d[1];
                f[3] = (f[3] + b[0]) + e[2];
                f[4] = (((f[4] + a[0]) + b[1]) + d[2]) + e[3];
                f[5] = (f[5] + a[1]) + d[3];
                f[6] += b[2];
                f[7] = (f[7] + a[2]) + b[3];
                f[8] += a[3];
            }
            continue;
        }
        for (int p = 0; p < P; p++) {
            const float *row = rows + (size_t)p * KD;
            int tap[4];
            for (int q = 0; q < P; q++) tap[q] = tap_of(g, p, q);
            for (int c = 0; c < C; c++) {
                float *f = fo + (size_t)c * KK;
                for (int q = 0; q < P; q++)
                    if (tap[q] >= 0) f[tap[q]] += row[c * P + q];
            }
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
    const int P = g->H * g->W, R = g->OC * P, KD = g->C * P, nt = nb_get_threads();
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
    if (dw) reduce_dense(g, dwd, dw);
    if (db)
        for (int oc = 0; oc < g->OC; oc++) {
            float s = 0.0f;
            for (int n = 0; n < N; n++)
                for (int p = 0; p < P; p++) s += dy[(size_t)n * R + (size_t)oc * P + p];
            db[oc] += s;
        }
}
