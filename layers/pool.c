/* maxpool2d, global average pooling, flatten, and the option-A shortcut. */
#include <float.h>
#include <string.h>

#include "internal.h"

typedef struct {
    int32_t *argmax; /* (N, C, OH, OW) flat index into the (H, W) plane, -1 if none */
} maxpool_saved;

nb_tensor *nb_maxpool2d(nb_tape *t, nb_tensor *x, int k, int stride, int pad) {
    char s1[64];
    NB_ASSERT(x->ndim == 4 && k >= 1 && stride >= 1 && pad >= 0 && pad <= k / 2,
              "maxpool2d: input %s k %d stride %d pad %d", NB_SHAPE(x, s1), k, stride, pad);
    const int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int OH = (H + 2 * pad - k) / stride + 1, OW = (W + 2 * pad - k) / stride + 1;
    NB_ASSERT(OH > 0 && OW > 0, "maxpool2d: input %s too small for k %d", NB_SHAPE(x, s1), k);
    nb_tensor *y = nb_tape_tensor(t, 4, (int[]){N, C, OH, OW});
    const int rec = nb_tape_wants(t, x, NULL, NULL);
    int32_t *am = rec ? nb_tape_scratch(t, sizeof(int32_t) * y->numel) : NULL;
    NB_ASSERT(y && (!rec || am), "maxpool2d: %s", nb_last_error());
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int nc = 0; nc < N * C; nc++) {
        const float *xp = x->data + (size_t)nc * H * W;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float best = -FLT_MAX;
                int bi = -1;
                for (int kh = 0; kh < k; kh++) {
                    int ih = oh * stride - pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    for (int kw = 0; kw < k; kw++) {
                        int iw = ow * stride - pad + kw;
                        if (iw < 0 || iw >= W) continue;
                        float v = xp[ih * W + iw];
                        if (bi < 0 || v > best) {
                            best = v;
                            bi = ih * W + iw;
                        }
                    }
                }
                size_t o = ((size_t)nc * OH + oh) * OW + ow;
                y->data[o] = best;
                if (am) am[o] = bi;
            }
    }
    if (rec) {
        nb_node *node = nb_tape_record(t, &nb_op_table[NB_OP_MAXPOOL2D], y, x, NULL, NULL);
        maxpool_saved *s = nb_tape_scratch(t, sizeof *s);
        NB_ASSERT(node && s, "maxpool2d: %s", nb_last_error());
        s->argmax = am;
        node->saved = s;
    }
    return y;
}

void nb_maxpool2d_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0], *y = node->out;
    if (!x->requires_grad) return;
    const maxpool_saved *s = node->saved;
    const int NC = x->shape[0] * x->shape[1], HW = x->shape[2] * x->shape[3];
    const int OHW = y->shape[2] * y->shape[3];
    float *dx = nb_tape_grad(t, x);
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int nc = 0; nc < NC; nc++)
        for (int o = 0; o < OHW; o++) {
            int32_t i = s->argmax[(size_t)nc * OHW + o];
            if (i >= 0) dx[(size_t)nc * HW + i] += y->grad[(size_t)nc * OHW + o];
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
    memset(y->data, 0, sizeof(float) * y->numel);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const float *xp = x->data + ((size_t)n * C + c) * H * W;
            float *yp = y->data + ((size_t)n * out_c + c + before) * OH * OW;
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) yp[oh * OW + ow] = xp[oh * stride * W + ow * stride];
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
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            float *dp = dx + ((size_t)n * C + c) * H * W;
            const float *gp = y->grad + ((size_t)n * OC + c + s->before) * OH * OW;
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) dp[oh * s->stride * W + ow * s->stride] += gp[oh * OW + ow];
        }
}
