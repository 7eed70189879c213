/* maxpool2d, global average pooling, flatten, and the option-A shortcut. */
#include <omp.h>
#include <string.h>

#include "internal.h"

/* The forward keeps, per output, which tap of its window won (16 bits:
 * kh * k + kw from the window's clamped corner), the first maximal tap in
 * row-major order as PyTorch's CPU kernel picks it. */
typedef struct {
    int k, stride, pad;
    uint16_t *tap;
} maxpool_saved;

/* Tap range [lo, hi) of output position o along an axis of size n. */
static inline void pool_range(int o, int k, int stride, int pad, int n, int *lo, int *hi) {
    const int a = o * stride - pad;
    *lo = a < 0 ? 0 : a;
    *hi = a + k < n ? a + k : n;
}

/* The ResNet stem's pool (3x3, stride 2, pad 1, even width W = 2 OW), one
 * plane, separably: first each input row's best of the three columns of
 * every window (hv, and hc the winning column 0..2 from the window's
 * clamped first column), each row once; then each output row's best of
 * its (up to) three rows. A strictly greater value wins in both passes, so
 * the winner is the first maximal tap in row-major order, as in the
 * general loop, with the same tap numbering (row * 3 + column from the
 * clamped corner). The loops are written for GCC to vectorise (selects,
 * no branches). ev, od: OW floats; hv, hc: H * OW. */
static void pool_plane_k3s2(const float *xp, int H, int OW, float *restrict ev, float *restrict od,
                            float *restrict hv, int *restrict hc, float *restrict yp, int *restrict arg,
                            uint16_t *tp) {
    /* four outputs at a time in GCC vector types (SSE2 on x86-64; GCC
     * does not if-convert the scalar selects itself) */
    typedef float v4f __attribute__((vector_size(16)));
    typedef int v4i __attribute__((vector_size(16)));
    const int W = 2 * OW, OH = (H - 1) / 2 + 1, OW4 = OW / 4 * 4;
    od[0] = 0.0f; /* od[j + 1] = column 2j + 1; od[0] is read for ow = 0, whose lane is redone */
    for (int h = 0; h < H; h++) {
        const float *xr = xp + (size_t)h * W;
        float *v = hv + (size_t)h * OW;
        int *c = hc + (size_t)h * OW;
        for (int j = 0; j < OW; j++) {
            ev[j] = xr[2 * j];
            od[j + 1] = xr[2 * j + 1];
        }
        /* ow: columns 2 ow - 1, 2 ow, 2 ow + 1 */
        for (int ow = 0; ow < OW4; ow += 4) {
            v4f c0, c1, c2;
            memcpy(&c0, od + ow, sizeof c0);
            memcpy(&c1, ev + ow, sizeof c1);
            memcpy(&c2, od + ow + 1, sizeof c2);
            const v4i g1 = c1 > c0;
            const v4f b1 = (v4f)((g1 & (v4i)c1) | (~g1 & (v4i)c0));
            const v4i g2 = c2 > b1;
            const v4f b = (v4f)((g2 & (v4i)c2) | (~g2 & (v4i)b1));
            const v4i col = (g2 & 2) | (~g2 & (g1 & 1));
            memcpy(v + ow, &b, sizeof b);
            memcpy(c + ow, &col, sizeof col);
        }
        for (int ow = OW4 > 1 ? OW4 : 1; ow < OW; ow++) {
            const float c0 = od[ow], c1 = ev[ow], c2 = od[ow + 1];
            const int g1 = c1 > c0;
            const float b1 = g1 ? c1 : c0;
            const int g2 = c2 > b1;
            v[ow] = g2 ? c2 : b1;
            c[ow] = g2 ? 2 : g1;
        }
        /* ow = 0: columns 0 and 1 only */
        v[0] = od[1] > ev[0] ? od[1] : ev[0];
        c[0] = od[1] > ev[0];
    }
    for (int oh = 0; oh < OH; oh++) {
        const int h0 = oh == 0 ? 0 : 2 * oh - 1, h1 = 2 * oh + 2 < H ? 2 * oh + 2 : H;
        float *y = yp + (size_t)oh * OW;
        memcpy(y, hv + (size_t)h0 * OW, sizeof(float) * (size_t)OW);
        memcpy(arg, hc + (size_t)h0 * OW, sizeof(int) * (size_t)OW);
        for (int r = 1; r < h1 - h0; r++) {
            const float *vr = hv + (size_t)(h0 + r) * OW;
            const int *cr = hc + (size_t)(h0 + r) * OW;
            int ow = 0;
            for (; ow < OW4; ow += 4) {
                v4f b, cv;
                v4i a, cc;
                memcpy(&b, y + ow, sizeof b);
                memcpy(&cv, vr + ow, sizeof cv);
                memcpy(&a, arg + ow, sizeof a);
                memcpy(&cc, cr + ow, sizeof cc);
                const v4i g = cv > b;
                b = (v4f)((g & (v4i)cv) | (~g & (v4i)b));
                a = (g & (cc + 3 * r)) | (~g & a);
                memcpy(y + ow, &b, sizeof b);
                memcpy(arg + ow, &a, sizeof a);
            }
            for (; ow < OW; ow++)
                if (vr[ow] > y[ow]) y[ow] = vr[ow], arg[ow] = 3 * r + cr[ow];
        }
        if (tp)
            for (int ow = 0; ow < OW; ow++) tp[oh * OW + ow] = (uint16_t)arg[ow];
    }
}

nb_tensor *nb_maxpool2d(nb_tape *t, nb_tensor *x, int k, int stride, int pad) {
    char s1[64];
    NB_ASSERT(x->ndim == 4 && k >= 1 && k <= 255 && stride >= 1 && pad >= 0 && pad <= k / 2,
              "maxpool2d: input %s k %d stride %d pad %d (k 1..255, pad <= k / 2)", NB_SHAPE(x, s1), k, stride,
              pad);
    const int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int OH = (H + 2 * pad - k) / stride + 1, OW = (W + 2 * pad - k) / stride + 1;
    NB_ASSERT(OH > 0 && OW > 0, "maxpool2d: input %s too small for k %d", NB_SHAPE(x, s1), k);
    nb_tensor *y = nb_tape_tensor(t, 4, (int[]){N, C, OH, OW});
    const int rec = nb_tape_wants(t, x, NULL, NULL);
    uint16_t *tap = rec ? nb_tape_scratch(t, sizeof(uint16_t) * y->numel) : NULL;
    const nb_arena_mark mark = nb_tape_mark(t);
    const int fast = k == 3 && stride == 2 && pad == 1 && W == 2 * OW;
    /* per thread: best, arg (OW each); for the fast path also ev (OW), od
     * (OW + 1) and hv, hc (H * OW) */
    const size_t per = (size_t)(fast ? 4 + 2 * H : 2) * OW + 1;
    float *rows = nb_tape_scratch(t, sizeof(float) * (size_t)nb_get_threads() * per);
    NB_ASSERT(y && rows && (!rec || tap), "maxpool2d: %s", nb_last_error());
#pragma omp parallel num_threads(nb_get_threads())
    {
        float *best = rows + (size_t)omp_get_thread_num() * per;
        int *arg = (int *)(best + OW);
#pragma omp for schedule(static)
        for (int nc = 0; nc < N * C; nc++) {
            const float *xp = x->data + (size_t)nc * H * W;
            float *yp = y->data + (size_t)nc * OH * OW;
            uint16_t *tp = tap ? tap + (size_t)nc * OH * OW : NULL;
            if (fast) {
                float *ev = best + 2 * OW, *od = ev + OW, *hv = od + OW + 1;
                pool_plane_k3s2(xp, H, OW, ev, od, hv, (int *)(hv + (size_t)H * OW), yp, arg, tp);
                continue;
            }
            for (int oh = 0; oh < OH; oh++) {
                int h0, h1;
                pool_range(oh, k, stride, pad, H, &h0, &h1);
                /* pad <= k / 2 keeps every window inside the image. Row by
                 * row, a strictly greater value replaces the best: the first
                 * maximal tap in row-major order wins. */
                for (int ih = h0; ih < h1; ih++) {
                    const float *xr = xp + (size_t)ih * W;
                    for (int ow = 0; ow < OW; ow++) {
                        int w0, w1;
                        pool_range(ow, k, stride, pad, W, &w0, &w1);
                        float b = ih == h0 ? xr[w0] : best[ow];
                        int a = ih == h0 ? 0 : arg[ow];
                        for (int iw = ih == h0 ? w0 + 1 : w0; iw < w1; iw++) {
                            const int gt = xr[iw] > b;
                            b = gt ? xr[iw] : b;
                            a = gt ? (ih - h0) * k + iw - w0 : a;
                        }
                        best[ow] = b;
                        arg[ow] = a;
                    }
                }
                memcpy(yp + (size_t)oh * OW, best, sizeof(float) * (size_t)OW);
                if (tp)
                    for (int ow = 0; ow < OW; ow++) tp[oh * OW + ow] = (uint16_t)arg[ow];
            }
        }
    }
    nb_tape_release(t, mark);
    if (rec) {
        nb_node *node = nb_tape_record(t, &nb_op_table[NB_OP_MAXPOOL2D], y, x, NULL, NULL);
        maxpool_saved *sv = nb_tape_scratch(t, sizeof *sv);
        NB_ASSERT(node && sv, "maxpool2d: %s", nb_last_error());
        *sv = (maxpool_saved){k, stride, pad, tap};
        node->saved = sv;
    }
    return y;
}

void nb_maxpool2d_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0], *y = node->out;
    if (!x->requires_grad) return;
    const maxpool_saved *sv = node->saved;
    const int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    const int OH = y->shape[2], OW = y->shape[3], k = sv->k;
    float *dx = nb_tape_grad(t, x);
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int nc = 0; nc < NC; nc++) {
        const uint16_t *tp = sv->tap + (size_t)nc * OH * OW;
        const float *gp = y->grad + (size_t)nc * OH * OW;
        float *dp = dx + (size_t)nc * H * W;
        if (k == 3 && sv->stride == 2 && sv->pad == 1) { /* the stem's pool, constants for the compiler */
            for (int oh = 0; oh < OH; oh++) {
                float *d0 = dp + (size_t)(oh == 0 ? 0 : 2 * oh - 1) * W;
                const uint16_t *tr = tp + oh * OW;
                const float *gr = gp + oh * OW;
                for (int ow = 0; ow < OW; ow++) {
                    const int a = tr[ow];
                    d0[(a / 3) * W + (ow == 0 ? 0 : 2 * ow - 1) + a % 3] += gr[ow];
                }
            }
            continue;
        }
        for (int oh = 0; oh < OH; oh++) {
            int h0, h1;
            pool_range(oh, k, sv->stride, sv->pad, H, &h0, &h1);
            for (int ow = 0; ow < OW; ow++) {
                int w0, w1;
                pool_range(ow, k, sv->stride, sv->pad, W, &w0, &w1);
                const int a = tp[oh * OW + ow];
                dp[(h0 + a / k) * W + w0 + a % k] += gp[oh * OW + ow];
            }
        }
    }
}

nb_tensor *nb_global_avgpool(nb_tape *t, nb_tensor *x) {
    char s1[64];
    NB_ASSERT(x->ndim == 4, "global_avgpool: input %s is not (N, C, H, W)", NB_SHAPE(x, s1));
    const int NC = x->shape[0] * x->shape[1], HW = x->shape[2] * x->shape[3];
    nb_tensor *y = nb_tape_tensor(t, 2, (int[]){x->shape[0], x->shape[1]});
    NB_ASSERT(y, "global_avgpool: %s", nb_last_error());
    for (int nc = 0; nc < NC; nc++) {
        const float *xp = x->data + (size_t)nc * HW;
        float s = 0.0f;
        for (int i = 0; i < HW; i++) s += xp[i];
        y->data[nc] = s / (float)HW;
    }
    if (nb_tape_wants(t, x, NULL, NULL))
        NB_ASSERT(nb_tape_record(t, &nb_op_table[NB_OP_GLOBAL_AVGPOOL], y, x, NULL, NULL),
                  "global_avgpool: %s", nb_last_error());
    return y;
}

void nb_global_avgpool_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0];
    if (!x->requires_grad) return;
    const int NC = x->shape[0] * x->shape[1], HW = x->shape[2] * x->shape[3];
    float *dx = nb_tape_grad(t, x);
    for (int nc = 0; nc < NC; nc++) {
        float g = node->out->grad[nc] / (float)HW;
        float *d = dx + (size_t)nc * HW;
        for (int i = 0; i < HW; i++) d[i] += g;
    }
}

nb_tensor *nb_flatten(nb_tape *t, nb_tensor *x) {
    nb_tensor *y = nb_tape_scratch(t, sizeof *y);
    NB_ASSERT(y, "flatten: %s", nb_last_error());
    nb_tensor_wrap(y, x->data, 2, (int[]){x->shape[0], (int)(x->numel / (size_t)x->shape[0])});
    if (nb_tape_wants(t, x, NULL, NULL))
        NB_ASSERT(nb_tape_record(t, &nb_op_table[NB_OP_FLATTEN], y, x, NULL, NULL), "flatten: %s", nb_last_error());
    return y;
}

void nb_flatten_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0];
    if (!x->requires_grad) return;
    float *dx = nb_tape_grad(t, x);
    for (size_t i = 0; i < x->numel; i++) dx[i] += node->out->grad[i];
}

typedef struct {
    int stride, before;
} shortcut_saved;

nb_tensor *nb_shortcut_pad(nb_tape *t, nb_tensor *x, int stride, int out_c) {
    char s1[64];
    NB_ASSERT(x->ndim == 4 && stride >= 1 && out_c >= x->shape[1],
              "shortcut_pad: input %s stride %d out_c %d", NB_SHAPE(x, s1), stride, out_c);
    const int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int OH = (H + stride - 1) / stride, OW = (W + stride - 1) / stride;
    const int before = (out_c - C) / 2;
    nb_tensor *y = nb_tape_tensor(t, 4, (int[]){N, out_c, OH, OW});
    NB_ASSERT(y, "shortcut_pad: %s", nb_last_error());
    /* one output plane per iteration: zeros outside the input's channels */
#pragma omp parallel for schedule(static) num_threads(nb_get_threads()) if (y->numel >= 65536)
    for (int nc = 0; nc < N * out_c; nc++) {
        const int n = nc / out_c, c = nc % out_c - before;
        float *yp = y->data + (size_t)nc * OH * OW;
        if (c < 0 || c >= C) {
            memset(yp, 0, sizeof(float) * (size_t)OH * OW);
            continue;
        }
        const float *xp = x->data + ((size_t)n * C + c) * H * W;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) yp[oh * OW + ow] = xp[(size_t)oh * stride * W + (size_t)ow * stride];
    }
    if (nb_tape_wants(t, x, NULL, NULL)) {
        nb_node *node = nb_tape_record(t, &nb_op_table[NB_OP_SHORTCUT_PAD], y, x, NULL, NULL);
        shortcut_saved *s = nb_tape_scratch(t, sizeof *s);
        NB_ASSERT(node && s, "shortcut_pad: %s", nb_last_error());
        *s = (shortcut_saved){stride, before};
        node->saved = s;
    }
    return y;
}

void nb_shortcut_pad_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0], *y = node->out;
    if (!x->requires_grad) return;
    const shortcut_saved *s = node->saved;
    const int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int OC = y->shape[1], OH = y->shape[2], OW = y->shape[3];
    float *dx = nb_tape_grad(t, x);
#pragma omp parallel for schedule(static) num_threads(nb_get_threads()) if (x->numel >= 65536)
    for (int nc = 0; nc < N * C; nc++) {
        const int n = nc / C, c = nc % C;
        float *dp = dx + (size_t)nc * H * W;
        const float *gp = y->grad + ((size_t)n * OC + c + s->before) * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++)
                dp[(size_t)oh * s->stride * W + (size_t)ow * s->stride] += gp[oh * OW + ow];
    }
}
