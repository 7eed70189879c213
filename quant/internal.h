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

/* Export internals (quant/export.c), shared by the packed file's reader. */
struct nb_xmodel;
struct nb_xlayer;
/* x's architecture fields, node list and zeroed layer array (n_layers 0)
 * from m's graph; *mods (caller frees) holds each node's module. */
nb_status nb_xmodel_graph(struct nb_xmodel *x, const nb_model *m, nb_gnode **mods);
/* l's name and shape (oc, ic, kh, kw, stride, pad, numel) from module mod. */
void nb_xlayer_geometry(struct nb_xlayer *l, const nb_module *mod);

#endif
