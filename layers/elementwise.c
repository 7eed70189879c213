/* relu, add, and add followed by relu (the end of a residual block) fused:
 * one pass over memory instead of two, forward and backward. */
#include "internal.h"

#define PAR_MIN 65536 /* below this, threads cost more than they save */

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
#pragma omp parallel for simd schedule(static) num_threads(nb_get_threads()) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        const float v = xp[i];
        yp[i] = v > 0.0f ? v : 0.0f;
    }
    if (nb_tape_wants(t, x, NULL, NULL))
        NB_ASSERT(nb_tape_record(t, &nb_op_table[NB_OP_RELU], y, x, NULL, NULL), "relu: %s", nb_last_error());
    return y;
}

void nb_masked_grad(float *d, int fresh, const float *y, const float *dy, size_t n) {
    if (fresh) {
#pragma omp parallel for simd schedule(static) num_threads(nb_get_threads()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            const float g = dy[i]; /* unconditional load: if-converted, vectorised */
            d[i] = y[i] > 0.0f ? g : 0.0f;
        }
    } else {
#pragma omp parallel for simd schedule(static) num_threads(nb_get_threads()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            const float g = dy[i];
            d[i] += y[i] > 0.0f ? g : 0.0f;
        }
    }
}

void nb_relu_backward(nb_tape *t, nb_node *node) {
    nb_tensor *x = node->in[0], *y = node->out;
    if (!x->requires_grad) return;
    /* Reads the output (x may have been overwritten in place). */
    int fresh;
    float *dx = nb_tape_grad_fresh(t, x, &fresh);
    nb_masked_grad(dx, fresh, y->data, y->grad, y->numel);
}

static nb_tensor *add_op(nb_tape *t, nb_tensor *a, nb_tensor *b, int relu) {
    char s1[64], s2[64];
    NB_ASSERT(nb_tensor_same_shape(a, b), "add: shapes %s and %s differ", NB_SHAPE(a, s1), NB_SHAPE(b, s2));
    nb_tensor *y = nb_tape_tensor(t, a->ndim, a->shape);
    NB_ASSERT(y, "add: %s", nb_last_error());
    const size_t n = a->numel;
    const float *ap = a->data, *bp = b->data;
    float *yp = y->data;
    if (relu) {
#pragma omp parallel for simd schedule(static) num_threads(nb_get_threads()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float v = ap[i] + bp[i];
            yp[i] = v > 0.0f ? v : 0.0f;
        }
    } else {
#pragma omp parallel for simd schedule(static) num_threads(nb_get_threads()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) yp[i] = ap[i] + bp[i];
    }
    if (nb_tape_wants(t, a, b, NULL))
        NB_ASSERT(nb_tape_record(t, &nb_op_table[relu ? NB_OP_ADD_RELU : NB_OP_ADD], y, a, b, NULL),
                  "add: %s", nb_last_error());
    return y;
}

nb_tensor *nb_add(nb_tape *t, nb_tensor *a, nb_tensor *b) { return add_op(t, a, b, 0); }

nb_tensor *nb_add_relu(nb_tape *t, nb_tensor *a, nb_tensor *b) { return add_op(t, a, b, 1); }

/* Both inputs of add_relu want the same masked gradient: one pass when
 * both buffers are fresh (the usual case) or both accumulate. */
static void add_relu_backward_both(float *d0, int f0, float *d1, int f1, const float *y, const float *dy,
                                   size_t n) {
    if (f0 != f1 || d0 == d1) {
        nb_masked_grad(d0, f0, y, dy, n);
        nb_masked_grad(d1, f1, y, dy, n);
    } else if (f0) {
#pragma omp parallel for simd schedule(static) num_threads(nb_get_threads()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            const float d = dy[i], g = y[i] > 0.0f ? d : 0.0f;
            d0[i] = g;
            d1[i] = g;
        }
    } else {
#pragma omp parallel for simd schedule(static) num_threads(nb_get_threads()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            const float d = dy[i], g = y[i] > 0.0f ? d : 0.0f;
            d0[i] += g;
            d1[i] += g;
        }
    }
}

static void add_backward(nb_tape *t, nb_node *node, int relu) {
    const float *dy = node->out->grad, *y = node->out->data;
    const size_t n = node->out->numel;
    if (relu && node->in[0]->requires_grad && node->in[1]->requires_grad) {
        int f0, f1;
        float *d0 = nb_tape_grad_fresh(t, node->in[0], &f0);
        float *d1 = nb_tape_grad_fresh(t, node->in[1], &f1);
        add_relu_backward_both(d0, f0, d1, f1, y, dy, n);
        return;
    }
    for (int k = 0; k < 2; k++) {
        nb_tensor *in = node->in[k];
        if (!in->requires_grad) continue;
        int fresh;
        float *d = nb_tape_grad_fresh(t, in, &fresh);
        if (relu) {
            nb_masked_grad(d, fresh, y, dy, n);
        } else if (fresh) {
#pragma omp parallel for simd schedule(static) num_threads(nb_get_threads()) if (n > PAR_MIN)
            for (size_t i = 0; i < n; i++) d[i] = dy[i];
        } else {
#pragma omp parallel for simd schedule(static) num_threads(nb_get_threads()) if (n > PAR_MIN)
            for (size_t i = 0; i < n; i++) d[i] += dy[i];
        }
    }
}

void nb_add_backward(nb_tape *t, nb_node *node) { add_backward(t, node, 0); }

void nb_add_relu_backward(nb_tape *t, nb_node *node) { add_backward(t, node, 1); }
