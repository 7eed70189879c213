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
    NB_OP_DISTILL,
    NB_OP_BN_RELU_LSQ,
    NB_OP_BN_ADD_RELU,
    NB_OP_COUNT
} nb_op;

extern const nb_op_def nb_op_table[NB_OP_COUNT];

void nb_conv2d_backward(nb_tape *t, nb_node *n);
void nb_conv2d_describe(const nb_node *n, char *buf, size_t len);
void nb_linear_backward(nb_tape *t, nb_node *n);
void nb_batchnorm2d_backward(nb_tape *t, nb_node *n);
void nb_batchnorm2d_add_relu_backward(nb_tape *t, nb_node *n);
void nb_relu_backward(nb_tape *t, nb_node *n);
void nb_add_backward(nb_tape *t, nb_node *n);
void nb_add_relu_backward(nb_tape *t, nb_node *n);
void nb_maxpool2d_backward(nb_tape *t, nb_node *n);
void nb_global_avgpool_backward(nb_tape *t, nb_node *n);
void nb_flatten_backward(nb_tape *t, nb_node *n);
void nb_shortcut_pad_backward(nb_tape *t, nb_node *n);
void nb_cross_entropy_backward(nb_tape *t, nb_node *n);
void nb_distill_backward(nb_tape *t, nb_node *n);
void nb_batchnorm2d_relu_lsq_backward(nb_tape *t, nb_node *n);

/* Geometry of one conv2d call. */
typedef struct {
    int C, H, W, OC, KH, KW, OH, OW, stride, pad;
} conv_geom;

/* Stride-1 "same" convolutions (odd square kernel, pad = (K - 1) / 2, K > 1)
 * run as K*K shifted GEMMs over a zero-padded copy of each image instead of
 * im2col (layers/conv2d_same.c). x (N, C, H, W), w (OC, C, K, K), b (OC) or
 * NULL, y (N, OC, H, W); dx/dw/db NULL when not wanted, dx_fresh: write dx
 * instead of adding. */
int nb_conv_same_applies(const conv_geom *g);
void nb_conv_same_forward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                          const float *b, float *y);
void nb_conv_same_backward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                           const float *dy, float *dx, int dx_fresh, float *dw, float *db);

/* 3x3 stride-1 pad-1 convolutions with at least 8 input and output
 * channels run by Winograd F(2x2, 3x3) (layers/conv2d_wino.c); same
 * arguments as nb_conv_same_*. */
int nb_conv_wino_applies(const conv_geom *g);
void nb_conv_wino_forward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                          const float *b, float *y);
void nb_conv_wino_backward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                           const float *dy, float *dx, int dx_fresh, float *dw, float *db);

/* 3x3 stride-1 pad-1 convolutions on maps of at most 2x2 as one dense
 * (OC*H*W, C*H*W) matrix (layers/conv2d_dense.c); same arguments as
 * nb_conv_same_*. (layers/conv2d.c picks among the paths, NB_CONV
 * included.) */
int nb_conv_dense_applies(const conv_geom *g);
void nb_conv_dense_forward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                           const float *b, float *y);
void nb_conv_dense_backward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                            const float *dy, float *dx, int dx_fresh, float *dw, float *db);

/* Per-image bias helpers shared by the convolution paths:
 * y (OC, HW) += b[oc]; acc[oc] += sum of dy's plane oc. */
static inline void nb_conv_add_bias(float *y, const float *b, int OC, int HW) {
    for (int oc = 0; oc < OC; oc++)
        for (int i = 0; i < HW; i++) y[(size_t)oc * HW + i] += b[oc];
}
static inline void nb_conv_sum_planes(const float *dy, int OC, int HW, float *acc) {
    for (int oc = 0; oc < OC; oc++) {
        float s = 0.0f;
        for (int i = 0; i < HW; i++) s += dy[(size_t)oc * HW + i];
        acc[oc] += s;
    }
}

/* Batchnorm pieces shared by nb_batchnorm2d and the fused batchnorm + ReLU
 * + quantizer op (layers/bn_relu_lsq.c), so that both compute the same
 * bits. x is (N, C, H, W), planes are HW = H*W floats.
 *
 * max(x·a + b, 0), a channel's batchnorm and ReLU of one element. */
static inline float nb_bn_relu(float x, float a, float b) {
    const float v = x * a + b;
    return v > 0.0f ? v : 0.0f;
}
/* Channel c: the batch statistics (training; the running ones updated) or
 * the running ones (eval) into mean[c], invstd[c]; y = x·a + b. */
void nb_bn_channel(const nb_tensor *x, const nb_tensor *gamma, const nb_tensor *beta, float *running_mean,
                   float *running_var, const nb_bn_params *p, int c, float *mean, float *invstd, float *a, float *b);
/* One plane's float sums of g and g·(x - m), g = dy masked by y > 0 (y
 * NULL: dy itself). */
void nb_bn_plane_dsums(const float *x, const float *dy, const float *y, int HW, float m, float *sg, float *sgx);
/* What dx needs of a channel: dx = k (g - mdy - (x - m) mdyx). */
typedef struct {
    float k, mdy, mdyx, m;
} nb_bn_dx_consts;
/* From a channel's sums (in double over its planes, in order): adds its
 * dgamma and dbeta (either may be NULL), returns its dx constants. */
nb_bn_dx_consts nb_bn_channel_grads(double sdy, double sdyx, float m, float is, float gamma, int training,
                                    double cnt, float *dgamma, float *dbeta);
/* One plane: dx (+)= k (g - mdy - (x - m) mdyx), g = dy masked by y > 0 (y
 * NULL: dy); fresh: write instead of adding. */
void nb_bn_dx_plane(const nb_bn_dx_consts *k, const float *x, const float *dy, const float *y, float *dx, int HW,
                    int fresh);

/* d (+)= dy where y > 0 (fresh: =): the backward of relu, add_relu and
 * batchnorm + add + relu. */
void nb_masked_grad(float *d, int fresh, const float *y, const float *dy, size_t n);

/* Shape helper for asserts: "(2, 3, 4, 4)". */
#define NB_SHAPE(t, buf) nb_shape_str((t), (buf), sizeof(buf))

#endif
