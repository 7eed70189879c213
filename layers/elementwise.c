/* relu and add. */
#include "internal.h"

nb_tensor *nb_relu(nb_tape *t, nb_tensor *x, int inplace) {
    nb_tensor *y;
    if (inplace) {
        y = nb_tape_scratch(t, sizeof *y);
        NB_ASSERT(y, "relu: %s", nb_last_error());
        nb_tensor_wrap(y, x->data, x->ndim, x->shape);
    } else {
        y = nb_tape_tensor(t, x->ndim, x->shape);
        NB_ASSERT(y, "relu: %s", nb_last_error());
    }
    const size_t n = x->numel;
    const float *xp = x->data;
    float *yp = y->data;
#pragma omp parallel for schedule(static) num_threads(nb_get_threads()) if (n > 65536)
    for (size_t i = 0; i < n; i++) yp[i] = xp[i] > 0.0f ? xp[i] : 0.0f;
    if (nb_tape_wants(t, x, NULL, NULL))
        NB_ASSERT(nb_tape_record(t, &nb_op_table[NB_OP_RELU], y, x, NULL, NULL), "relu: %s", nb_last_error());
    return y;
}

void nb_relu_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0], *y = node->out;
    if (!x->requires_grad) return;
    /* Reads the output (x may have been overwritten in place). */
    const size_t n = y->numel;
    const float *yp = y->data, *dy = y->grad;
    float *dx = nb_tape_grad(t, x);
#pragma omp parallel for schedule(static) num_threads(nb_get_threads()) if (n > 65536)
    for (size_t i = 0; i < n; i++) dx[i] += yp[i] > 0.0f ? dy[i] : 0.0f;
}

nb_tensor *nb_add(nb_tape *t, nb_tensor *a, nb_tensor *b) {
    char s1[64], s2[64];
    NB_ASSERT(nb_tensor_same_shape(a, b), "add: shapes %s and %s differ", NB_SHAPE(a, s1), NB_SHAPE(b, s2));
    nb_tensor *y = nb_tape_tensor(t, a->ndim, a->shape);
    NB_ASSERT(y, "add: %s", nb_last_error());
    const size_t n = a->numel;
    const float *ap = a->data, *bp = b->data;
    float *yp = y->data;
#pragma omp parallel for schedule(static) num_threads(nb_get_threads()) if (n > 65536)
    for (size_t i = 0; i < n; i++) yp[i] = ap[i] + bp[i];
    if (nb_tape_wants(t, a, b, NULL))
        NB_ASSERT(nb_tape_record(t, &nb_op_table[NB_OP_ADD], y, a, b, NULL), "add: %s", nb_last_error());
    return y;
}

void nb_add_backward(nb_tape *t, nb_node *node) {
    const float *dy = node->out->grad;
    const size_t n = node->out->numel;
    for (int k = 0; k < 2; k++) {
        nb_tensor *in = node->in[k];
        if (!in->requires_grad) continue;
        float *d = nb_tape_grad(t, in);
#pragma omp parallel for schedule(static) num_threads(nb_get_threads()) if (n > 65536)
        for (size_t i = 0; i < n; i++) d[i] += dy[i];
    }
}
