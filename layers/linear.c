/* linear: y (N, OUT) = x (N, IN) w^T + b. */
#include <string.h>

#include "internal.h"

nb_tensor *nb_linear(nb_tape *t, nb_tensor *x, nb_tensor *w, nb_tensor *b) {
    char s1[64], s2[64];
    NB_ASSERT(x->ndim == 2 && w->ndim == 2 && x->shape[1] == w->shape[1],
              "linear: input %s and weight %s disagree", NB_SHAPE(x, s1), NB_SHAPE(w, s2));
    const int N = x->shape[0], IN = x->shape[1], OUT = w->shape[0];
    NB_ASSERT(!b || b->numel == (size_t)OUT, "linear: bias has %zu elements, need %d", b->numel, OUT);
    nb_tensor *y = nb_tape_tensor(t, 2, (int[]){N, OUT});
    NB_ASSERT(y, "linear: %s", nb_last_error());
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) y->data[(size_t)n * OUT + o] = b ? b->data[o] : 0.0f;
    nb_gemm(0, 1, N, OUT, IN, 1.0f, x->data, IN, w->data, IN, 1.0f, y->data, OUT);
    if (nb_tape_wants(t, x, w, b))
        NB_ASSERT(nb_tape_record(t, &nb_op_table[NB_OP_LINEAR], y, x, w, b), "linear: %s", nb_last_error());
    return y;
}

void nb_linear_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2];
    const int N = x->shape[0], IN = x->shape[1], OUT = w->shape[0];
    const float *dy = node->out->grad;
    if (x->requires_grad) /* dx (N, IN) += dy (N, OUT) w (OUT, IN) */
        nb_gemm(0, 0, N, IN, OUT, 1.0f, dy, OUT, w->data, IN, 1.0f, nb_tape_grad(t, x), IN);
    if (w->requires_grad) /* dw (OUT, IN) += dy^T x */
        nb_gemm(1, 0, OUT, IN, N, 1.0f, dy, OUT, x->data, IN, 1.0f, nb_tape_grad(t, w), IN);
    if (b && b->requires_grad) {
        float *db = nb_tape_grad(t, b);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OUT; o++) db[o] += dy[(size_t)n * OUT + o];
    }
}
