/* conv2d: per-image im2col + one single-threaded sgemm (nibble's own
 * kernels, core/gemm_*.c), images split across threads (two sgemms on different images beat OpenBLAS's own split of one
 * thin GEMM at ResNet shapes). Weight gradients are summed per thread and
 * reduced in thread order, so results depend only on the thread count. */
#include <omp.h>
#include <string.h>

#include "internal.h"

typedef struct {
    conv_geom g;
} conv_saved;

static int is_pointwise(const conv_geom *g) {
    return g->KH == 1 && g->KW == 1 && g->stride == 1 && g->pad == 0;
}

/* col (C*KH*KW, OH*OW) from one image x (C, H, W). */
static void im2col(const conv_geom *g, const float *x, float *col) {
    const int OHW = g->OH * g->OW;
    for (int c = 0; c < g->C; c++)
        for (int kh = 0; kh < g->KH; kh++)
            for (int kw = 0; kw < g->KW; kw++) {
                float *row = col + ((size_t)(c * g->KH + kh) * g->KW + kw) * OHW;
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

/* dx (C, H, W) += col2im(dcol (C*KH*KW, OH*OW)). */
static void col2im_add(const conv_geom *g, const float *dcol, float *dx) {
    const int OHW = g->OH * g->OW;
    for (int c = 0; c < g->C; c++)
        for (int kh = 0; kh < g->KH; kh++)
            for (int kw = 0; kw < g->KW; kw++) {
                const float *row = dcol + ((size_t)(c * g->KH + kh) * g->KW + kw) * OHW;
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

/* Per-image im2col (none for pointwise) and one GEMM per image. */
static void im2col_forward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                           const float *b, float *y) {
    const int CKK = g->C * g->KH * g->KW, OHW = g->OH * g->OW, nt = nb_get_threads();
    const int pointwise = is_pointwise(g);
    float *cols = pointwise ? NULL : nb_tape_scratch(t, sizeof(float) * (size_t)nt * CKK * OHW);
    NB_ASSERT(pointwise || cols, "conv2d: %s", nb_last_error());
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int n = 0; n < N; n++) {
        const float *col = x + (size_t)n * g->C * g->H * g->W;
        float *yn = y + (size_t)n * g->OC * OHW;
        if (!pointwise) {
            float *c = cols + (size_t)omp_get_thread_num() * CKK * OHW;
            im2col(g, col, c);
            col = c;
        }
        nb_sgemm_nn(g->OC, OHW, CKK, w, CKK, 1, col, OHW, 0.0f, yn, OHW);
        if (b) nb_conv_add_bias(yn, b, g->OC, OHW);
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
    const nb_arena_mark scratch = nb_tape_mark(t); /* the paths' scratch ends with the call */
    if (nb_conv_wino_applies(&g))
        nb_conv_wino_forward(t, &g, N, x->data, w->data, bd, y->data);
    else if (nb_conv_same_applies(&g))
        nb_conv_same_forward(t, &g, N, x->data, w->data, bd, y->data);
    else
        im2col_forward(t, &g, N, x->data, w->data, bd, y->data);
    nb_tape_release(t, scratch);

    if (nb_tape_wants(t, x, w, b)) {
        nb_node *node = nb_tape_record(t, &nb_op_table[NB_OP_CONV2D], y, x, w, b);
        NB_ASSERT(node, "conv2d: %s", nb_last_error());
        conv_saved *s = nb_tape_scratch(t, sizeof *s);
        NB_ASSERT(s, "conv2d: %s", nb_last_error());
        s->g = g;
        node->saved = s;
    }
    return y;
}

/* "conv2d 3x3/2 64->128 32x32 im2col": kernel/stride, channels, input size, path */
void nb_conv2d_describe(const nb_node *node, char *buf, size_t len) {
    const conv_geom *g = &((const conv_saved *)node->saved)->g;
    const char *path = nb_conv_wino_applies(g) ? "winograd"
                       : nb_conv_same_applies(g) ? "shifted"
                       : is_pointwise(g)         ? "gemm"
                                                 : "im2col";
    snprintf(buf, len, "conv2d %dx%d/%d %d->%d %dx%d %s", g->KH, g->KW, g->stride, g->C, g->OC, g->H, g->W,
             path);
}

void nb_conv2d_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2], *y = node->out;
    const conv_geom g = ((conv_saved *)node->saved)->g;
    const int N = x->shape[0], CKK = g.C * g.KH * g.KW, OHW = g.OH * g.OW;
    const int nt = nb_get_threads();
    const int pointwise = is_pointwise(&g);
    const float *dy = y->grad;
    int dx_fresh = 0; /* a new buffer is zeroed per image, in cache, below */
    float *dx = x->requires_grad ? nb_tape_grad_fresh(t, x, &dx_fresh) : NULL;
    float *dw = w->requires_grad ? nb_tape_grad(t, w) : NULL;
    float *db = (b && b->requires_grad) ? nb_tape_grad(t, b) : NULL;
    if (nb_conv_wino_applies(&g)) {
        nb_conv_wino_backward(t, &g, N, x->data, w->data, dy, dx, dx_fresh, dw, db);
        return;
    }
    if (nb_conv_same_applies(&g)) {
        nb_conv_same_backward(t, &g, N, x->data, w->data, dy, dx, dx_fresh, dw, db);
        return;
    }

    /* Per-thread partial sums of dw and db, reduced in thread order. */
    size_t wsz = (size_t)g.OC * CKK;
    float *dw_part = dw ? nb_tape_scratch(t, sizeof(float) * (size_t)nt * wsz) : NULL;
    float *db_part = db ? nb_tape_scratch(t, sizeof(float) * (size_t)nt * g.OC) : NULL;
    float *cols = pointwise ? NULL : nb_tape_scratch(t, sizeof(float) * (size_t)nt * CKK * OHW);
    float *dcols = (pointwise || !dx) ? NULL : nb_tape_scratch(t, sizeof(float) * (size_t)nt * CKK * OHW);
    NB_ASSERT((!dw || dw_part) && (!db || db_part) && (pointwise || cols) && (pointwise || !dx || dcols),
              "conv2d backward: %s", nb_last_error());
    if (dw_part) memset(dw_part, 0, sizeof(float) * (size_t)nt * wsz);
    if (db_part) memset(db_part, 0, sizeof(float) * (size_t)nt * g.OC);

#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num();
        float *my_dw = dw ? dw_part + (size_t)tid * wsz : NULL;
        float *my_db = db ? db_part + (size_t)tid * g.OC : NULL;
        float *col = pointwise ? NULL : cols + (size_t)tid * CKK * OHW;
        float *dcol = dcols ? dcols + (size_t)tid * CKK * OHW : NULL;
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *xn = x->data + (size_t)n * g.C * g.H * g.W;
            const float *dyn = dy + (size_t)n * g.OC * OHW;
            if (my_dw) {
                const float *c = xn;
                if (!pointwise) {
                    im2col(&g, xn, col);
                    c = col;
                }
                /* dw (OC, CKK) += dy_n (OC, OHW) * col^T (OHW, CKK) */
                nb_sgemm_nt(g.OC, CKK, OHW, dyn, OHW, c, OHW, 1.0f, my_dw, CKK);
            }
            if (my_db) nb_conv_sum_planes(dyn, g.OC, OHW, my_db);
            if (dx) {
                float *dxn = dx + (size_t)n * g.C * g.H * g.W;
                if (pointwise) {
                    /* dx_n (C, HW) (+)= w^T (C, OC) * dy_n (OC, HW) */
                    nb_sgemm_nn(CKK, OHW, g.OC, w->data, 1, CKK, dyn, OHW, dx_fresh ? 0.0f : 1.0f, dxn, OHW);
                } else {
                    if (dx_fresh) memset(dxn, 0, sizeof(float) * (size_t)g.C * g.H * g.W);
                    /* dcol (CKK, OHW) = w^T (CKK, OC) * dy_n (OC, OHW) */
                    nb_sgemm_nn(CKK, OHW, g.OC, w->data, 1, CKK, dyn, OHW, 0.0f, dcol, OHW);
                    col2im_add(&g, dcol, dxn);
                }
            }
        }
    }
    for (int k = 0; k < nt; k++) {
        if (dw) {
            const float *src = dw_part + (size_t)k * wsz;
            for (size_t i = 0; i < wsz; i++) dw[i] += src[i];
        }
        if (db) {
            const float *src = db_part + (size_t)k * g.OC;
            for (int i = 0; i < g.OC; i++) db[i] += src[i];
        }
    }
}
