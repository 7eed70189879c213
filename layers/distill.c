/* Knowledge distillation: cross-entropy on the labels blended with the
 * temperature-scaled KL divergence from a teacher's softened distribution
 * (Hinton et al. 2015), as PyTorch writes it:
 *   (1 - w) CE(s, y, eps) + w T^2 kl_div(log_softmax(s / T), softmax(t / T), "batchmean"). */
#include <math.h>

#include "internal.h"

/* Log-sum-exp of z (K) / T in double; q (K) gets softmax(z / T). */
static double softmax_row(const float *z, int K, double T, double *q) {
    double mx = (double)z[0] / T;
    for (int k = 1; k < K; k++) mx = fmax(mx, (double)z[k] / T);
    double se = 0.0;
    for (int k = 0; k < K; k++) {
        q[k] = exp((double)z[k] / T - mx);
        se += q[k];
    }
    for (int k = 0; k < K; k++) q[k] /= se;
    return log(se) + mx;
}

nb_tensor *nb_distill_loss(nb_tape *t, nb_tensor *logits, const int32_t *labels, const float *teacher_logits,
                           float temperature, float weight, float label_smoothing) {
    char s1[64];
    NB_ASSERT(logits->ndim == 2, "distill: logits %s are not (N, K)", NB_SHAPE(logits, s1));
    NB_ASSERT(teacher_logits, "distill: NULL teacher logits");
    NB_ASSERT(temperature > 0.0f && isfinite(temperature), "distill: temperature %g must be > 0",
              (double)temperature);
    NB_ASSERT(weight >= 0.0f && weight <= 1.0f, "distill: weight %g outside [0, 1]", (double)weight);
    NB_ASSERT(label_smoothing >= 0.0f && label_smoothing < 1.0f, "distill: label smoothing %g outside [0, 1)",
              (double)label_smoothing);
    const int N = logits->shape[0], K = logits->shape[1];
    const double T = (double)temperature, w = (double)weight, eps = (double)label_smoothing;
    nb_tensor *y = nb_tape_tensor(t, 1, (int[]){1});
    /* dz (N, K): N dL/dlogits, so backward only scales it by dy / N. */
    float *dz = nb_tape_scratch(t, sizeof(float) * logits->numel);
    double *row = nb_tape_scratch(t, sizeof(double) * 3 * (size_t)K);
    NB_ASSERT(y && dz && row, "distill: %s", nb_last_error());
    double *p = row, *pT = row + K, *q = row + 2 * K; /* softmax(s), softmax(s / T), softmax(t / T) */
    double ce = 0.0, kl = 0.0;
    for (int n = 0; n < N; n++) {
        NB_ASSERT(labels[n] >= 0 && labels[n] < K, "distill: label %d of example %d outside [0, %d)",
                  (int)labels[n], n, K);
        const float *z = logits->data + (size_t)n * K, *tz = teacher_logits + (size_t)n * K;
        const double lse = softmax_row(z, K, 1.0, p);
        const double lse_s = softmax_row(z, K, T, pT), lse_t = softmax_row(tz, K, T, q);
        double smooth_sum = 0.0;
        for (int k = 0; k < K; k++) {
            smooth_sum += lse - (double)z[k];
            /* q log(q / p) with 0 log 0 = 0 (PyTorch's xlogy) */
            if (q[k] > 0.0) kl += q[k] * (((double)tz[k] / T - lse_t) - ((double)z[k] / T - lse_s));
            const double target = eps / K + (k == labels[n] ? 1.0 - eps : 0.0);
            /* d/dz of CE is p - target; of T^2 KL(q || softmax(z / T)) is T (pT - q) */
            dz[(size_t)n * K + k] = (float)((1.0 - w) * (p[k] - target) + w * T * (pT[k] - q[k]));
        }
        ce += (1.0 - eps) * (lse - (double)z[labels[n]]) + eps * smooth_sum / K;
    }
    y->data[0] = (float)(((1.0 - w) * ce + w * T * T * kl) / N);
    if (nb_tape_wants(t, logits, NULL, NULL)) {
        nb_node *node = nb_tape_record(t, &nb_op_table[NB_OP_DISTILL], y, logits, NULL, NULL);
        NB_ASSERT(node, "distill: %s", nb_last_error());
        node->saved = dz;
    }
    return y;
}

void nb_distill_backward(nb_tape *t, nb_node *node) {
    nb_tensor *logits = node->in[0];
    if (!logits->requires_grad) return;
    const float *saved = node->saved;
    const float g = node->out->grad[0] / (float)logits->shape[0];
    float *dz = nb_tape_grad(t, logits);
    for (size_t i = 0; i < logits->numel; i++) dz[i] += g * saved[i];
}
