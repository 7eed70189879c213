/* The op table: one entry per op, name and backward kernel. */
#include "internal.h"

const nb_op_def nb_op_table[NB_OP_COUNT] = {
    [NB_OP_CONV2D] = {"conv2d", nb_conv2d_backward, nb_conv2d_describe},
    [NB_OP_LINEAR] = {"linear", nb_linear_backward},
    [NB_OP_BATCHNORM2D] = {"batchnorm2d", nb_batchnorm2d_backward},
    [NB_OP_RELU] = {"relu", nb_relu_backward},
    [NB_OP_ADD] = {"add", nb_add_backward},
    [NB_OP_ADD_RELU] = {"add_relu", nb_add_relu_backward},
    [NB_OP_MAXPOOL2D] = {"maxpool2d", nb_maxpool2d_backward},
    [NB_OP_GLOBAL_AVGPOOL] = {"global_avgpool", nb_global_avgpool_backward},
    [NB_OP_FLATTEN] = {"flatten", nb_flatten_backward},
    [NB_OP_SHORTCUT_PAD] = {"shortcut_pad", nb_shortcut_pad_backward},
    [NB_OP_CROSS_ENTROPY] = {"cross_entropy", nb_cross_entropy_backward},
    [NB_OP_DISTILL] = {"distill", nb_distill_backward},
    [NB_OP_BN_RELU_LSQ] = {"batchnorm2d_relu_lsq", nb_batchnorm2d_relu_lsq_backward},
    [NB_OP_BN_ADD_RELU] = {"batchnorm2d_add_relu", nb_batchnorm2d_add_relu_backward},
};

/* The array has NB_OP_COUNT slots whatever its initialisers say, so a
 * missing entry is a NULL name/backward: tests walk the table for that. */
const nb_op_def *nb_layers_ops(int *n) {
    *n = NB_OP_COUNT;
    return nb_op_table;
}
