/* conv2d: im2col + one single-threaded sgemm (nibble's own kernels,
 * core/gemm_*.c) per image, or per group of images when an image's output
 * is too small to fill the GEMM; images split across threads (two sgemms
 * on different images beat OpenBLAS's own split of one thin GEMM at ResNet
 * shapes). Weight gradients are summed per thread and
 * reduced in thread order, so results depend only on the thread count. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The paths, picked once per call by conv_path (the forward saves it for
 * the backward and the profiler). */
typedef enum { PATH_DENSE, PATH_WINOGRAD, PATH_SHIFTED, PATH_IM2COL } conv_path;
static const char *const path_names[] = {"dense", "winograd", "shifted", "im2col"};

typedef struct {
    conv_geom g;
    conv_path path;
} conv_saved;

static int is_pointwise(const conv_geom *g) {
    return g->KH == 1 && g->KW == 1 && g->stride == 1 && g->pad == 0;
}

/* NB_CONV: unset or "winograd" (the default choice per shape), "direct"
 * (no Winograd or dense path: shifted GEMMs for stride-1 "same"
 * convolutions) or "im2col" (every convolution by im2col + GEMM), for
 * comparisons and tests. Read once. */
static conv_path conv_path_of(const conv_geom *g) {
    static int env = -1; /* 0 default, 1 direct, 2 im2col */
    if (env < 0) {
        const char *e = getenv("NB_CONV");
        env = e && !strcmp(e, "direct") ? 1 : e && !strcmp(e, "im2col") ? 2 : 0;
    }
    if (env == 0 && nb_conv_dense_applies(g)) return PATH_DENSE;
    if (env == 0 && nb_conv_wino_applies(g)) return PATH_WINOGRAD;
    if (env != 2 && nb_conv_same_applies(g)) return PATH_SHIFTED;
    return PATH_IM2COL;
}

/* col (C*KH*KW, OH*OW), rows ld floats apart, from one image x (C, H, W). */
static void im2col(const conv_geom *g, const float *x, float *col, size_t ld) {
    for (int c = 0; c < g->C; c++)
        for (int kh = 0; kh < g->KH; kh++)
            for (int kw = 0; kw < g->KW; kw++) {
                float *row = col + ((size_t)(c * g->KH + kh) * g->KW + kw) * ld;
                const float *xc = x + (size_t)c * g->H * g->W;
                /* valid ow range: 0 <= ow*s - pad + kw < W */
                int ow_lo = 0, ow_hi = g->OW; /* [lo, hi) */
                while (ow_lo < g->OW && ow_lo * g->stride - g->pad + kw < 0) ow_lo++;
                while (ow_hi > ow_lo && (ow_hi - 1) * g->stride - g->pad + kw >= g->W) ow_hi--;
                for (int oh = 0; oh < g->OH; oh++) {
                    float *r = row + (size_t)oh * g->OW;
                    int ih = oh * g->stride - g->pad + kh;
                    if (ih < 0 || ih >= g->H) {
                        memset(r, 0, sizeof(float) * (size_t)g->OW);
                        continue;
                    }
                    const float *xr = xc + (size_t)ih * g->W;
                    for (int ow = 0; ow < ow_lo; ow++) r[ow] = 0.0f;
                    if (g->stride == 1) {
                        memcpy(r + ow_lo, xr + ow_lo - g->pad + kw, sizeof(float) * (size_t)(ow_hi - ow_lo));
                    } else {
                        for (int ow = ow_lo; ow < ow_hi; ow++) r[ow] = xr[ow * g->stride - g->pad + kw];
                    }
                    for (int ow = ow_hi; ow < g->OW; ow++) r[ow] = 0.0f;
                }
            }
}

/* dx (C, H, W) += col2im(dcol (C*KH*KW, OH*OW), rows ld floats apart). */
static void col2im_add(const conv_geom *g, const float *dcol, size_t ld, float *dx) {
    for (int c = 0; c < g->C; c++)
        for (int kh = 0; kh < g->KH; kh++)
            for (int kw = 0; kw < g->KW; kw++) {
                const float *row = dcol + ((size_t)(c * g->KH + kh) * g->KW + kw) * ld;
                float *xc = dx + (size_t)c * g->H * g->W;
                int ow_lo = 0, ow_hi = g->OW;
                while (ow_lo < g->OW && ow_lo * g->stride - g->pad + kw < 0) ow_lo++;
                while (ow_hi > ow_lo && (ow_hi - 1) * g->stride - g->pad + kw >= g->W) ow_hi--;
                for (int oh = 0; oh < g->OH; oh++) {
                    int ih = oh * g->stride - g->pad + kh;
                    if (ih < 0 || ih >= g->H) continue;
                    const float *r = row + (size_t)oh * g->OW;
                    float *xr = xc + (size_t)ih * g->W - g->pad + kw;
                    if (g->stride == 1) {
                        for (int ow = ow_lo; ow < ow_hi; ow++) xr[ow] += r[ow];
                    } else {
                        for (int ow = ow_lo; ow < ow_hi; ow++) xr[ow * g->stride] += r[ow];
                    }
                }
            }
}

/* Images per GEMM: one when an image has enough output pixels to fill the
 * GEMM's columns, else enough images for about MIN_COLS columns (the
 * stride-2 convolutions of ResNet-18's late stages have 4x4 or 2x2
 * outputs), but at least 4 groups per batch so that the threads share
 * them. Depends on the shapes only, not on the thread count. */
enum { MIN_COLS = 128 };

static int images_per_gemm(const conv_geom *g, int N) {
    const int OHW = g->OH * g->OW;
    if (is_pointwise(g) || OHW >= MIN_COLS) return 1;
    int b = (MIN_COLS + OHW - 1) / OHW, cap = N / 4 > 1 ? N / 4 : 1;
    return b < cap ? b : cap;
}

/* Rows of B images' (OC, OHW) planes side by side, (OC, B * OHW), to or
 * from their places in a (N, OC, OHW) tensor. */
static void gather_planes(const float *src, int B, int OC, int OHW, float *dst) {
    for (int i = 0; i < B; i++)
        for (int oc = 0; oc < OC; oc++)
            memcpy(dst + (size_t)oc * B * OHW + (size_t)i * OHW, src + ((size_t)i * OC + oc) * OHW,
                   sizeof(float) * (size_t)OHW);
}
static void scatter_planes(const float *src, int B, int OC, int OHW, float *dst) {
    for (int i = 0; i < B; i++)
        for (int oc = 0; oc < OC; oc++)
            memcpy(dst + ((size_t)i * OC + oc) * OHW, src + (size_t)oc * B * OHW + (size_t)i * OHW,
                   sizeof(float) * (size_t)OHW);
}

/* im2col (none for pointwise) and one GEMM per group of images. */
static void im2col_forward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                           const float *b, float *y) {
    const int CKK = g->C * g->KH * g->KW, OHW = g->OH * g->OW, nt = nb_get_threads();
    const int pointwise = is_pointwise(g), B = images_per_gemm(g, N), groups = (N + B - 1) / B;
    const size_t cols_sz = pointwise ? 0 : (size_t)CKK * B * OHW, out_sz = B > 1 ? (size_t)g->OC * B * OHW : 0;
    float *scratch = cols_sz + out_sz ? nb_tape_scratch(t, sizeof(float) * (size_t)nt * (cols_sz + out_sz)) : NULL;
    NB_ASSERT(!(cols_sz + out_sz) || scratch, "conv2d: %s", nb_last_error());
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int gi = 0; gi < groups; gi++) {
        const int n0 = gi * B, nb = N - n0 < B ? N - n0 : B;
        float *col = scratch ? scratch + (size_t)omp_get_thread_num() * (cols_sz + out_sz) : NULL;
        float *out = col ? col + cols_sz : NULL;
        const float *bm = x + (size_t)n0 * g->C * g->H * g->W; /* pointwise: the image itself */
        if (!pointwise) {
            for (int i = 0; i < nb; i++)
                im2col(g, x + (size_t)(n0 + i) * g->C * g->H * g->W, col + (size_t)i * OHW, (size_t)nb * OHW);
            bm = col;
        }
        float *yn = y + (size_t)n0 * g->OC * OHW;
        nb_sgemm_nn(g->OC, nb * OHW, CKK, w, CKK, 1, bm, nb * OHW, 0.0f, B > 1 ? out : yn, nb * OHW);
        if (B > 1) scatter_planes(out, nb, g->OC, OHW, yn);
        for (int i = 0; b && i < nb; i++) nb_conv_add_bias(yn + (size_t)i * g->OC * OHW, b, g->OC, OHW);
    }
}

nb_tensor *nb_conv2d(nb_tape *t, nb_tensor *x, nb_tensor *w, nb_tensor *b,
                     const nb_conv2d_params *p) {
    char s1[64], s2[64];
    NB_ASSERT(x->ndim == 4 && w->ndim == 4 && x->shape[1] == w->shape[1],
              "conv2d: input %s and weight %s disagree", NB_SHAPE(x, s1), NB_SHAPE(w, s2));
    NB_ASSERT(p->stride >= 1 && p->pad >= 0, "conv2d: stride %d pad %d", p->stride, p->pad);
    const int N = x->shape[0];
    conv_geom g = {.C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .OC = w->shape[0],
                   .KH = w->shape[2], .KW = w->shape[3], .stride = p->stride, .pad = p->pad};
    g.OH = (g.H + 2 * g.pad - g.KH) / g.stride + 1;
    g.OW = (g.W + 2 * g.pad - g.KW) / g.stride + 1;
    NB_ASSERT(g.OH > 0 && g.OW > 0, "conv2d: input %s too small for kernel %s", NB_SHAPE(x, s1), NB_SHAPE(w, s2));
    NB_ASSERT(!b || (b->numel == (size_t)g.OC), "conv2d: bias has %zu elements, need %d", b->numel, g.OC);

    nb_tensor *y = nb_tape_tensor(t, 4, (int[]){N, g.OC, g.OH, g.OW});
    NB_ASSERT(y, "conv2d: %s", nb_last_error());
    const float *bd = b ? b->data : NULL;
    const conv_path path = conv_path_of(&g);
    const nb_arena_mark scratch = nb_tape_mark(t); /* the paths' scratch ends with the call */
    switch (path) {
    case PATH_DENSE: nb_conv_dense_forward(t, &g, N, x->data, w->data, bd, y->data); break;
    case PATH_WINOGRAD: nb_conv_wino_forward(t, &g, N, x->data, w->data, bd, y->data); break;
    case PATH_SHIFTED: nb_conv_same_forward(t, &g, N, x->data, w->data, bd, y->data); break;
    case PATH_IM2COL: im2col_forward(t, &g, N, x->data, w->data, bd, y->data); break;
    }
    nb_tape_release(t, scratch);

    if (nb_tape_wants(t, x, w, b)) {
        nb_node *node = nb_tape_record(t, &nb_op_table[NB_OP_CONV2D], y, x, w, b);
        NB_ASSERT(node, "conv2d: %s", nb_last_error());
        conv_saved *s = nb_tape_scratch(t, sizeof *s);
        NB_ASSERT(s, "conv2d: %s", nb_last_error());
        *s = (conv_saved){g, path};
        node->saved = s;
    }
    return y;
}

/* "conv2d 3x3/2 64->128 32x32 im2col": kernel/stride, channels, input size, path */
void nb_conv2d_describe(const nb_node *node, char *buf, size_t len) {
    const conv_saved *s = node->saved;
    const conv_geom *g = &s->g;
    const char *path = s->path == PATH_IM2COL && is_pointwise(g) ? "gemm" : path_names[s->path];
    snprintf(buf, len, "conv2d %dx%d/%d %d->%d %dx%d %s", g->KH, g->KW, g->stride, g->C, g->OC, g->H, g->W,
             path);
}

void nb_conv2d_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2], *y = node->out;
    const conv_saved *sv = node->saved;
    const conv_geom g = sv->g;
    const int N = x->shape[0], CKK = g.C * g.KH * g.KW, OHW = g.OH * g.OW;
    const int nt = nb_get_threads();
    const int pointwise = is_pointwise(&g);
    const float *dy = y->grad;
    int dx_fresh = 0; /* a new buffer is zeroed per image, in cache, below */
    float *dx = x->requires_grad ? nb_tape_grad_fresh(t, x, &dx_fresh) : NULL;
    float *dw = w->requires_grad ? nb_tape_grad(t, w) : NULL;
    float *db = (b && b->requires_grad) ? nb_tape_grad(t, b) : NULL;
    switch (sv->path) {
    case PATH_DENSE: nb_conv_dense_backward(t, &g, N, x->data, w->data, dy, dx, dx_fresh, dw, db); return;
    case PATH_WINOGRAD: nb_conv_wino_backward(t, &g, N, x->data, w->data, dy, dx, dx_fresh, dw, db); return;
    case PATH_SHIFTED: nb_conv_same_backward(t, &g, N, x->data, w->data, dy, dx, dx_fresh, dw, db); return;
    case PATH_IM2COL: break;
    }

    /* Per-thread partial sums of dw and db, reduced in thread order. */
    const int B = images_per_gemm(&g, N), groups = (N + B - 1) / B;
    const size_t cols_sz = pointwise ? 0 : (size_t)CKK * B * OHW, dyb_sz = B > 1 ? (size_t)g.OC * B * OHW : 0;
    const size_t dcol_sz = (pointwise || !dx) ? 0 : cols_sz, per = cols_sz + dcol_sz + dyb_sz;
    size_t wsz = (size_t)g.OC * CKK;
    float *dw_part = dw ? nb_tape_scratch(t, sizeof(float) * (size_t)nt * wsz) : NULL;
    float *db_part = db ? nb_tape_scratch(t, sizeof(float) * (size_t)nt * g.OC) : NULL;
    float *scratch = per ? nb_tape_scratch(t, sizeof(float) * (size_t)nt * per) : NULL;
    NB_ASSERT((!dw || dw_part) && (!db || db_part) && (!per || scratch), "conv2d backward: %s", nb_last_error());
    if (db_part) memset(db_part, 0, sizeof(float) * (size_t)nt * g.OC);

#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num();
        float *my_dw = dw ? dw_part + (size_t)tid * wsz : NULL;
        float *my_db = db ? db_part + (size_t)tid * g.OC : NULL;
        float *col = per ? scratch + (size_t)tid * per : NULL;
        float *dcol = per ? col + cols_sz : NULL, *dyb = per ? dcol + dcol_sz : NULL;
        int wrote = 0; /* this thread's first GEMM writes its dw part, the later ones add to it */
#pragma omp for schedule(static)
        for (int gi = 0; gi < groups; gi++) {
            const int n0 = gi * B, nb = N - n0 < B ? N - n0 : B, ld = nb * OHW;
            const float *xn = x->data + (size_t)n0 * g.C * g.H * g.W;
            const float *dyn = dy + (size_t)n0 * g.OC * OHW;
            if (B > 1) { /* the group's dy planes side by side, (OC, nb * OHW) */
                gather_planes(dyn, nb, g.OC, OHW, dyb);
                dyn = dyb;
            }
            if (my_dw) {
                const float *c = xn;
                if (!pointwise) {
                    for (int i = 0; i < nb; i++)
                        im2col(&g, xn + (size_t)i * g.C * g.H * g.W, col + (size_t)i * OHW, (size_t)ld);
                    c = col;
                }
                /* dw (OC, CKK) (+)= dy (OC, ld) * col^T (ld, CKK) */
                nb_sgemm_nt(g.OC, CKK, ld, dyn, ld, c, ld, wrote ? 1.0f : 0.0f, my_dw, CKK);
                wrote = 1;
            }
            if (my_db) nb_conv_sum_planes(dyn, g.OC, ld, my_db);
            if (dx) {
                float *dxn = dx + (size_t)n0 * g.C * g.H * g.W;
                if (pointwise) {
                    /* dx_n (C, HW) (+)= w^T (C, OC) * dy_n (OC, HW) */
                    nb_sgemm_nn(CKK, OHW, g.OC, w->data, 1, CKK, dyn, OHW, dx_fresh ? 0.0f : 1.0f, dxn, OHW);
                } else {
                    if (dx_fresh) memset(dxn, 0, sizeof(float) * (size_t)nb * g.C * g.H * g.W);
                    /* dcol (CKK, ld) = w^T (CKK, OC) * dy (OC, ld) */
                    nb_sgemm_nn(CKK, ld, g.OC, w->data, 1, CKK, dyn, ld, 0.0f, dcol, ld);
                    for (int i = 0; i < nb; i++)
                        col2im_add(&g, dcol + (size_t)i * OHW, (size_t)ld, dxn + (size_t)i * g.C * g.H * g.W);
                }
            }
        }
        if (my_dw && !wrote) memset(my_dw, 0, sizeof(float) * wsz); /* no group came to this thread */
    }
    /* dw += the parts in thread order; each element's sum is the same
     * whatever the split of this loop over the threads */
    if (dw) {
#pragma omp parallel num_threads(wsz >= 65536 ? nt : 1)
        {
            size_t lo, hi;
            nb_thread_range(wsz, &lo, &hi);
            for (int k = 0; k < nt; k++) {
                const float *src = dw_part + (size_t)k * wsz;
                for (size_t i = lo; i < hi; i++) dw[i] += src[i];
            }
        }
    }
    if (db)
        for (int k = 0; k < nt; k++) {
            const float *src = db_part + (size_t)k * g.OC;
            for (int i = 0; i < g.OC; i++) db[i] += src[i];
        }
}
