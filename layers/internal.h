/* layers/ internals: the op table and the backward kernels it points to. */
#ifndef NB_LAYERS_INTERNAL_H
#define NB_LAYERS_INTERNAL_H

#include "nb_layers.h"

typedef enum {
    NB_OP_CONV2D = 0,
    NB_OP_LINEAR,
    NB_OP_BATCHNORM2D,
    NB_OP_RELU,
    NB_OP_ADD,
    NB_OP_ADD_RELU,
    NB_OP_MAXPOOL2D,
    NB_OP_GLOBAL_AVGPOOL,
    NB_OP_FLATTEN,
    NB_OP_SHORTCUT_PAD,
    NB_OP_CROSS_ENTROPY,
    NB_OP_COUNT
} nb_op;

extern const nb_op_def nb_op_table[NB_OP_COUNT];

void nb_conv2d_backward(nb_tape *t, nb_node *n);
void nb_linear_backward(nb_tape *t, nb_node *n);
void nb_batchnorm2d_backward(nb_tape *t, nb_node *n);
void nb_relu_backward(nb_tape *t, nb_node *n);
void nb_add_backward(nb_tape *t, nb_node *n);
void nb_add_relu_backward(nb_tape *t, nb_node *n);
void nb_maxpool2d_backward(nb_tape *t, nb_node *n);
void nb_global_avgpool_backward(nb_tape *t, nb_node *n);
void nb_flatten_backward(nb_tape *t, nb_node *n);
void nb_shortcut_pad_backward(nb_tape *t, nb_node *n);
void nb_cross_entropy_backward(nb_tape *t, nb_node *n);

/* Shape helper for asserts: "(2, 3, 4, 4)". */
#define NB_SHAPE(t, buf) nb_shape_str((t), (buf), sizeof(buf))

#endif
