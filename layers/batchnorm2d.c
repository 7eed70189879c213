/* batchnorm2d over (N, H, W) per channel; channels split across threads.
 * Statistics are accumulated in double per channel, so the result does not
 * depend on the thread count. */
#include <math.h>

#include "internal.h"

typedef struct {
    float *mean;    /* (C) batch mean (training) or running mean (eval) */
    float *invstd;  /* (C) */
    int training;
} bn_saved;

nb_tensor *nb_batchnorm2d(nb_tape *t, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta,
                          float *running_mean, float *running_var, const nb_bn_params *p) {
    char s1[64];
    NB_ASSERT(x->ndim == 4, "batchnorm2d: input %s is not (N, C, H, W)", NB_SHAPE(x, s1));
    const int N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    NB_ASSERT(gamma->numel == (size_t)C && beta->numel == (size_t)C,
              "batchnorm2d: %d channels, gamma %zu, beta %zu", C, gamma->numel, beta->numel);
    nb_tensor *y = nb_tape_tensor(t, 4, x->shape);
    float *mean = nb_tape_scratch(t, sizeof(float) * (size_t)C);
    float *invstd = nb_tape_scratch(t, sizeof(float) * (size_t)C);
    NB_ASSERT(y && mean && invstd, "batchnorm2d: %s", nb_last_error());
    const size_t cnt = (size_t)N * HW;
    NB_ASSERT(!p->training || cnt > 1, "batchnorm2d: training needs more than one value per channel, got input %s",
              NB_SHAPE(x, s1));

#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int c = 0; c < C; c++) {
        float m, var;
        if (p->training) {
            double s = 0.0, s2 = 0.0;
            for (int n = 0; n < N; n++) {
                const float *xp = x->data + ((size_t)n * C + c) * HW;
                float ps = 0.0f;
                for (int i = 0; i < HW; i++) ps += xp[i];
                s += (double)ps;
            }
            double md = s / (double)cnt;
            for (int n = 0; n < N; n++) {
                const float *xp = x->data + ((size_t)n * C + c) * HW;
                float ps = 0.0f, mf = (float)md;
                for (int i = 0; i < HW; i++) {
                    float d = xp[i] - mf;
                    ps += d * d;
                }
                s2 += (double)ps;
            }
            m = (float)md;
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
        float a = gamma->data[c] * is, bb = beta->data[c] - m * a;
        for (int n = 0; n < N; n++) {
            const float *xp = x->data + ((size_t)n * C + c) * HW;
            float *yp = y->data + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) yp[i] = xp[i] * a + bb;
        }
    }

    if (nb_tape_wants(t, x, gamma, beta)) {
        nb_node *node = nb_tape_record(t, &nb_op_table[NB_OP_BATCHNORM2D], y, x, gamma, beta);
        bn_saved *s = nb_tape_scratch(t, sizeof *s);
        NB_ASSERT(node && s, "batchnorm2d: %s", nb_last_error());
        *s = (bn_saved){mean, invstd, p->training};
        node->saved = s;
    }
    return y;
}

void nb_batchnorm2d_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0], *gamma = node->in[1], *beta = node->in[2];
    const bn_saved *s = node->saved;
    const int N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const float *dy = node->out->grad;
    float *dx = x->requires_grad ? nb_tape_grad(t, x) : NULL;
    float *dg = gamma->requires_grad ? nb_tape_grad(t, gamma) : NULL;
    float *dbeta = beta->requires_grad ? nb_tape_grad(t, beta) : NULL;
    const double cnt = (double)N * HW;

#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int c = 0; c < C; c++) {
        const float m = s->mean[c], is = s->invstd[c];
        double sdy = 0.0, sdyx = 0.0; /* sum dy, sum dy * xhat */
        for (int n = 0; n < N; n++) {
            const float *xp = x->data + ((size_t)n * C + c) * HW;
            const float *dp = dy + ((size_t)n * C + c) * HW;
            float a = 0.0f, bsum = 0.0f;
            for (int i = 0; i < HW; i++) {
                a += dp[i];
                bsum += dp[i] * (xp[i] - m);
            }
            sdy += (double)a;
            sdyx += (double)bsum;
        }
        sdyx *= (double)is;
        if (dg) dg[c] += (float)sdyx;
        if (dbeta) dbeta[c] += (float)sdy;
        if (!dx) continue;
        const float g = gamma->data[c];
        if (s->training) {
            /* dx = g * is * (dy - mean(dy) - xhat * mean(dy * xhat)) */
            const float k = g * is, mdy = (float)(sdy / cnt), mdyx = (float)(sdyx / cnt);
            for (int n = 0; n < N; n++) {
                const float *xp = x->data + ((size_t)n * C + c) * HW;
                const float *dp = dy + ((size_t)n * C + c) * HW;
                float *dxp = dx + ((size_t)n * C + c) * HW;
                for (int i = 0; i < HW; i++) {
                    float xh = (xp[i] - m) * is;
                    dxp[i] += k * (dp[i] - mdy - xh * mdyx);
                }
            }
        } else {
            const float k = g * is;
            for (int n = 0; n < N; n++) {
                const float *dp = dy + ((size_t)n * C + c) * HW;
                float *dxp = dx + ((size_t)n * C + c) * HW;
                for (int i = 0; i < HW; i++) dxp[i] += k * dp[i];
            }
        }
    }
}
