/* Softmax cross-entropy with label smoothing, mean over the batch. */
#include <math.h>
#include <string.h>

#include "internal.h"

typedef struct {
    float *prob;      /* (N, K) softmax */
    int32_t *labels;  /* (N) copy */
    float smoothing;
} ce_saved;

nb_tensor *nb_cross_entropy(nb_tape *t, nb_tensor *logits, const int32_t *labels, float smoothing) {
    char s1[64];
    NB_ASSERT(logits->ndim == 2, "cross_entropy: logits %s are not (N, K)", NB_SHAPE(logits, s1));
    const int N = logits->shape[0], K = logits->shape[1];
    nb_tensor *y = nb_tape_tensor(t, 1, (int[]){1});
    float *prob = nb_tape_scratch(t, sizeof(float) * logits->numel);
    NB_ASSERT(y && prob, "cross_entropy: %s", nb_last_error());
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        NB_ASSERT(labels[n] >= 0 && labels[n] < K, "cross_entropy: label %d of example %d outside [0, %d)",
                  (int)labels[n], n, K);
        const float *z = logits->data + (size_t)n * K;
        float *p = prob + (size_t)n * K;
        float mx = z[0];
        for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
        double se = 0.0;
        for (int k = 0; k < K; k++) {
            p[k] = expf(z[k] - mx);
            se += (double)p[k];
        }
        const double lse = log(se) + (double)mx; /* log-sum-exp */
        double smooth_sum = 0.0;
        for (int k = 0; k < K; k++) {
            p[k] = (float)((double)p[k] / se);
            smooth_sum += lse - (double)z[k];
        }
        const double nll = lse - (double)z[labels[n]], eps = (double)smoothing;
        total += (1.0 - eps) * nll + eps * smooth_sum / K;
    }
    y->data[0] = (float)(total / N);
    if (nb_tape_wants(t, logits, NULL, NULL)) {
        nb_node *node = nb_tape_record(t, &nb_op_table[NB_OP_CROSS_ENTROPY], y, logits, NULL, NULL);
        ce_saved *s = nb_tape_scratch(t, sizeof *s);
        int32_t *lab = nb_tape_scratch(t, sizeof(int32_t) * (size_t)N);
        NB_ASSERT(node && s && lab, "cross_entropy: %s", nb_last_error());
        memcpy(lab, labels, sizeof(int32_t) * (size_t)N);
        *s = (ce_saved){prob, lab, smoothing};
        node->saved = s;
    }
    return y;
}

void nb_cross_entropy_backward(nb_tape *t, nb_node *node) {
    nb_tensor *logits = node->in[0];
    if (!logits->requires_grad) return;
    const ce_saved *s = node->saved;
    const int N = logits->shape[0], K = logits->shape[1];
    const float g = node->out->grad[0] / (float)N;
    float *dz = nb_tape_grad(t, logits);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            float target = s->smoothing / (float)K + (k == s->labels[n] ? 1.0f - s->smoothing : 0.0f);
            dz[(size_t)n * K + k] += g * (s->prob[(size_t)n * K + k] - target);
        }
}
