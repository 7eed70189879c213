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
 * input row r of the window: output ow sees columns 2ow - 1, 2ow, 2ow + 1,
 * i.e. od[ow - 1], ev[ow], od[ow] of the row split into even and odd
 * columns, which the loop over ow reads contiguously (vectorised). Same
 * rule and tap numbering as the general loop: a strictly greater value
 * wins, tap = r * 3 + column - (clamped) first column. */
static void pool_row_k3s2(const float *xr, int OW, int r, float *restrict ev, float *restrict od,
                          float *restrict best, int *restrict arg) {
    for (int j = 0; j < OW; j++) {
        ev[j] = xr[2 * j];
        od[j] = xr[2 * j + 1];
    }
    /* ow = 0: the window starts at column 0 (columns 0, 1) */
    {
        float b = r == 0 ? ev[0] : best[0];
        int a = r == 0 ? 0 : arg[0];
        if (r > 0 && ev[0] > b) b = ev[0], a = r * 3;
        if (od[0] > b) b = od[0], a = r * 3 + 1;
        best[0] = b;
        arg[0] = a;
    }
    /* ow >= 1, four at a time in GCC vector types (SSE2 on x86-64) */
    typedef float v4f __attribute__((vector_size(16)));
    typedef int v4i __attribute__((vector_size(16)));
    const int base = r * 3;
    int ow = 1;
    for (; ow + 4 <= OW; ow += 4) {
        v4f c0, c1, c2, b;
        v4i a;
        memcpy(&c0, od + ow - 1, sizeof c0);
        memcpy(&c1, ev + ow, sizeof c1);
        memcpy(&c2, od + ow, sizeof c2);
        if (r == 0) {
            b = c0;
            a = (v4i){0, 0, 0, 0};
        } else {
            memcpy(&b, best + ow, sizeof b);
            memcpy(&a, arg + ow, sizeof a);
            v4i m = c0 > b;
            a = (m & base) | (~m & a);
            b = (v4f)((m & (v4i)c0) | (~m & (v4i)b));
        }
        v4i m = c1 > b;
        a = (m & (base + 1)) | (~m & a);
        b = (v4f)((m & (v4i)c1) | (~m & (v4i)b));
        m = c2 > b;
        a = (m & (base + 2)) | (~m & a);
        b = (v4f)((m & (v4i)c2) | (~m & (v4i)b));
        memcpy(best + ow, &b, sizeof b);
        memcpy(arg + ow, &a, sizeof a);
    }
    for (; ow < OW; ow++) {
        const float c[3] = {od[ow - 1], ev[ow], od[ow]};
        float b = r == 0 ? c[0] : best[ow];
        int a = r == 0 ? 0 : arg[ow];
        for (int j = r == 0 ? 1 : 0; j < 3; j++)
            if (c[j] > b) b = c[j], a = base + j;
        best[ow] = b;
        arg[ow] = a;
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
    /* per thread, one output row's maxima and winning taps so far (and
     * for the fast path an input row's even and odd columns) */
    const int fast = k == 3 && stride == 2 && pad == 1 && W == 2 * OW;
    float *rows = nb_tape_scratch(t, sizeof(float) * (size_t)nb_get_threads() * 4 * OW);
    NB_ASSERT(y && rows && (!rec || tap), "maxpool2d: %s", nb_last_error());
#pragma omp parallel num_threads(nb_get_threads())
    {
        float *best = rows + (size_t)omp_get_thread_num() * 4 * OW;
        int *arg = (int *)(best + OW);
        float *ev = best + 2 * OW, *od = best + 3 * OW;
#pragma omp for schedule(static)
        for (int nc = 0; nc < N * C; nc++) {
            const float *xp = x->data + (size_t)nc * H * W;
            float *yp = y->data + (size_t)nc * OH * OW;
            uint16_t *tp = tap ? tap + (size_t)nc * OH * OW : NULL;
            for (int oh = 0; oh < OH; oh++) {
                int h0, h1;
                pool_range(oh, k, stride, pad, H, &h0, &h1);
                /* pad <= k / 2 keeps every window inside the image. Row by
                 * row, a strictly greater value replaces the best: the first
                 * maximal tap in row-major order wins. */
                for (int ih = h0; ih < h1; ih++) {
                    const float *xr = xp + (size_t)ih * W;
                    if (fast) {
                        pool_row_k3s2(xr, OW, ih - h0, ev, od, best, arg);
                        continue;
                    }
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
