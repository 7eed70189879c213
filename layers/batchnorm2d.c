/* batchnorm2d over (N, H, W) per channel, optionally fused with a ReLU on
 * its output; channels split across threads. Per-plane partial sums are
 * float (vectorised in a fixed order), the per-channel totals double, so
 * the result does not depend on the thread count. */
#include <math.h>

#include "internal.h"

typedef struct {
    float *mean;    /* (C) batch mean (training) or running mean (eval) */
    float *invstd;  /* (C) */
    int training;
    int relu;       /* the output went through max(., 0): mask dy by y > 0 */
} bn_saved;

static float plane_sum(const float *x, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += x[i];
    return s;
}

static float plane_sqdev(const float *x, int n, float m) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return s;
}

/* The shared pieces below are noinline: one machine code for both ops,
 * whose vectorised sums then add in the same order. */
__attribute__((noinline)) void nb_bn_channel(const nb_tensor *x, const nb_tensor *gamma, const nb_tensor *beta,
                                             float *running_mean, float *running_var, const nb_bn_params *p, int c,
                                             float *mean, float *invstd, float *a, float *b) {
    const int N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const size_t cnt = (size_t)N * HW;
    float m, var;
    if (p->training) {
        double s = 0.0, s2 = 0.0;
        for (int n = 0; n < N; n++) s += (double)plane_sum(x->data + ((size_t)n * C + c) * HW, HW);
        m = (float)(s / (double)cnt);
        for (int n = 0; n < N; n++) s2 += (double)plane_sqdev(x->data + ((size_t)n * C + c) * HW, HW, m);
        var = (float)(s2 / (double)cnt);
        running_mean[c] = (1.0f - p->momentum) * running_mean[c] + p->momentum * m;
        float unbiased = (float)(s2 / (double)(cnt - 1));
        running_var[c] = (1.0f - p->momentum) * running_var[c] + p->momentum * unbiased;
    } else {
        m = running_mean[c];
        var = running_var[c];
    }
    float is = 1.0f / sqrtf(var + p->eps);
    mean[c] = m;
    invstd[c] = is;
    *a = gamma->data[c] * is;
    *b = beta->data[c] - m * *a;
}

__attribute__((noinline)) void nb_bn_plane_dsums(const float *x, const float *dy, const float *y, int HW, float m,
                                                 float *sg, float *sgx) {
    float a = 0.0f, bsum = 0.0f;
    if (y) {
#pragma omp simd reduction(+ : a, bsum)
        for (int i = 0; i < HW; i++) {
            const float d = dy[i]; /* unconditional loads: GCC if-converts and vectorises */
            const float g = y[i] > 0.0f ? d : 0.0f;
            a += g;
            bsum += g * (x[i] - m);
        }
    } else {
#pragma omp simd reduction(+ : a, bsum)
        for (int i = 0; i < HW; i++) {
            a += dy[i];
            bsum += dy[i] * (x[i] - m);
        }
    }
    *sg = a;
    *sgx = bsum;
}

nb_bn_dx_consts nb_bn_channel_grads(double sdy, double sdyx, float m, float is, float gamma, int training,
                                    double cnt, float *dgamma, float *dbeta) {
    sdyx *= (double)is;
    if (dgamma) *dgamma += (float)sdyx;
    if (dbeta) *dbeta += (float)sdy;
    /* training: dx = k (g - mean(g) - xhat mean(g xhat)); eval: dx = k g */
    return (nb_bn_dx_consts){.k = gamma * is,
                             .mdy = training ? (float)(sdy / cnt) : 0.0f,
                             .mdyx = training ? (float)(sdyx / cnt) * is : 0.0f,
                             .m = m};
}

void nb_bn_dx_plane(const nb_bn_dx_consts *q, const float *x, const float *dy, const float *y, float *dx, int HW,
                    int fresh) {
    const float k = q->k, mdy = q->mdy, mdyx = q->mdyx, m = q->m;
    if (fresh) {
#pragma omp simd
        for (int i = 0; i < HW; i++) {
            const float d = dy[i], yy = y ? y[i] : 1.0f;
            const float g = yy > 0.0f ? d : 0.0f;
            dx[i] = k * (g - mdy - (x[i] - m) * mdyx);
        }
    } else {
#pragma omp simd
        for (int i = 0; i < HW; i++) {
            const float d = dy[i], yy = y ? y[i] : 1.0f;
            const float g = yy > 0.0f ? d : 0.0f;
            dx[i] += k * (g - mdy - (x[i] - m) * mdyx);
        }
    }
}

/* y = bn(x), relu(bn(x)) or, with a shortcut sc, relu(bn(x) + sc). */
static nb_tensor *bn_forward(nb_tape *t, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, float *running_mean,
                             float *running_var, const nb_bn_params *p, nb_tensor *sc) {
    char s1[64], s2[64];
    NB_ASSERT(x->ndim == 4, "batchnorm2d: input %s is not (N, C, H, W)", NB_SHAPE(x, s1));
    const int N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    NB_ASSERT(gamma->numel == (size_t)C && beta->numel == (size_t)C,
              "batchnorm2d: %d channels, gamma %zu, beta %zu", C, gamma->numel, beta->numel);
    NB_ASSERT(!sc || nb_tensor_same_shape(x, sc), "batchnorm2d_add_relu: input %s and shortcut %s differ",
              NB_SHAPE(x, s1), NB_SHAPE(sc, s2));
    nb_tensor *y = nb_tape_tensor(t, 4, x->shape);
    float *mean = nb_tape_scratch(t, sizeof(float) * (size_t)C);
    float *invstd = nb_tape_scratch(t, sizeof(float) * (size_t)C);
    NB_ASSERT(y && mean && invstd, "batchnorm2d: %s", nb_last_error());
    NB_ASSERT(!p->training || (size_t)N * HW > 1,
              "batchnorm2d: training needs more than one value per channel, got input %s", NB_SHAPE(x, s1));
    const int relu = sc || p->relu;

#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int c = 0; c < C; c++) {
        float a, b;
        nb_bn_channel(x, gamma, beta, running_mean, running_var, p, c, mean, invstd, &a, &b);
        for (int n = 0; n < N; n++) {
            const float *xp = x->data + ((size_t)n * C + c) * HW;
            float *yp = y->data + ((size_t)n * C + c) * HW;
            if (sc) { /* as add_relu(bn(x), sc): the batchnorm rounded first */
                const float *sp = sc->data + ((size_t)n * C + c) * HW;
#pragma omp simd
                for (int i = 0; i < HW; i++) {
                    const float v = xp[i] * a + b, u = v + sp[i];
                    yp[i] = u > 0.0f ? u : 0.0f;
                }
            } else if (relu) {
#pragma omp simd
                for (int i = 0; i < HW; i++) yp[i] = nb_bn_relu(xp[i], a, b);
            } else {
#pragma omp simd
                for (int i = 0; i < HW; i++) yp[i] = xp[i] * a + b;
            }
        }
    }

    if (nb_tape_wants(t, x, gamma, beta) || (sc && sc->requires_grad)) {
        nb_node *node = nb_tape_record(t, &nb_op_table[sc ? NB_OP_BN_ADD_RELU : NB_OP_BATCHNORM2D], y, x, gamma, beta);
        bn_saved *s = nb_tape_scratch(t, sizeof *s);
        NB_ASSERT(node && s, "batchnorm2d: %s", nb_last_error());
        *s = (bn_saved){mean, invstd, p->training, relu};
        node->saved = s;
        node->in[3] = sc;
    }
    return y;
}

nb_tensor *nb_batchnorm2d(nb_tape *t, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta,
                          float *running_mean, float *running_var, const nb_bn_params *p) {
    return bn_forward(t, x, gamma, beta, running_mean, running_var, p, NULL);
}

nb_tensor *nb_batchnorm2d_add_relu(nb_tape *t, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, float *running_mean,
                                   float *running_var, const nb_bn_params *p, nb_tensor *sc) {
    NB_ASSERT(sc, "batchnorm2d_add_relu: no shortcut");
    return bn_forward(t, x, gamma, beta, running_mean, running_var, p, sc);
}

static void bn_backward(nb_tape *t, nb_node *node, const float *dy);

/* The shortcut's gradient first: dy masked by y > 0. When the shortcut has
 * no gradient yet it takes over dy's buffer and the mask is applied in
 * place; the batchnorm's backward then reads the masked values from there
 * and masks them again (a no-op). */
void nb_batchnorm2d_add_relu_backward(nb_tape *t, nb_node *node) {
    nb_tensor *sc = node->in[3], *y = node->out;
    const float *dy = y->grad;
    if (sc->requires_grad) {
        int fresh;
        /* not in place when sc is also the batchnorm's input: its dx adds there */
        float *dsc = sc == node->in[0] ? nb_tape_grad_fresh(t, sc, &fresh) : nb_tape_grad_inplace(t, y, sc, &fresh);
        nb_masked_grad(dsc, fresh, y->data, dy, y->numel);
        if (!y->grad) dy = dsc; /* the buffer moved to sc */
    }
    bn_backward(t, node, dy);
}

void nb_batchnorm2d_backward(nb_tape *t, nb_node *node) { bn_backward(t, node, node->out->grad); }

/* dy: the gradient of the node's output. */
static void bn_backward(nb_tape *t, nb_node *node, const float *dy) {
    nb_tensor *x = node->in[0], *gamma = node->in[1], *beta = node->in[2];
    const bn_saved *s = node->saved;
    const int N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const float *yv = s->relu ? node->out->data : NULL;
    int fresh = 0;
    float *dx = x->requires_grad ? nb_tape_grad_fresh(t, x, &fresh) : NULL;
    float *dg = gamma->requires_grad ? nb_tape_grad(t, gamma) : NULL;
    float *dbeta = beta->requires_grad ? nb_tape_grad(t, beta) : NULL;
    const double cnt = (double)N * HW;

#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int c = 0; c < C; c++) {
        double sdy = 0.0, sdyx = 0.0; /* sum g, sum g * (x - mean), g = masked dy */
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * C + c) * HW;
            float a, bsum;
            nb_bn_plane_dsums(x->data + o, dy + o, yv ? yv + o : NULL, HW, s->mean[c], &a, &bsum);
            sdy += (double)a;
            sdyx += (double)bsum;
        }
        const nb_bn_dx_consts k = nb_bn_channel_grads(sdy, sdyx, s->mean[c], s->invstd[c], gamma->data[c],
                                                      s->training, cnt, dg ? &dg[c] : NULL, dbeta ? &dbeta[c] : NULL);
        if (!dx) continue;
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * C + c) * HW;
            nb_bn_dx_plane(&k, x->data + o, dy + o, yv ? yv + o : NULL, dx + o, HW, fresh);
        }
    }
}
