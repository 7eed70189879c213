/* quant/ internals: its op table and backward kernels. */
#ifndef NB_QUANT_INTERNAL_H
#define NB_QUANT_INTERNAL_H

#include "nb_quant.h"

typedef enum {
    NB_QOP_FAKE_QUANT = 0,
    NB_QOP_BINARY_TERNARY,
    NB_QOP_LSQ,
    NB_QOP_CODEBOOK,
    NB_QOP_N2UQ,
    NB_QOP_COUNT
} nb_qop;

extern const nb_op_def nb_quant_op_table[NB_QOP_COUNT];

void nb_fake_quant_backward(nb_tape *t, nb_node *n);
void nb_binary_ternary_backward(nb_tape *t, nb_node *n);
void nb_lsq_backward_node(nb_tape *t, nb_node *n);
void nb_codebook_backward_node(nb_tape *t, nb_node *n);
void nb_n2uq_backward_node(nb_tape *t, nb_node *n);

#endif
