/*
 * nb_export.h — a quantized model as integers: the export IR (every
 * conv/linear layer's integer weight codes or codebook indices with their
 * scales, the batchnorm folded into a per-channel multiplier and a bias,
 * the input quantizer's parameters) and the network as a node list; the
 * packed HDF5 file (docs/export.md), the integer reference engine and the
 * ONNX (QDQ) writer all work from it.
 *
 * The IR reproduces the fake-quant evaluation forward:
 *   input      x̂ = s·(q - z) + β,   q = clamp(rint((x - β)/s) + z, qmin, qmax)
 *              (β = 0 except LSQ+; z = 0 except asymmetric grids), or N2UQ
 *              x̂ = s·#{i : x >= T_i};
 *   weights    ŵ = s_j·(q - z_j) (uniform; j = r·ng + k/G as nb_fq_layout)
 *              or ŵ = α·codebook[r][q] (codebook), checked bit for bit
 *              against the quantizer's own forward when the IR is built;
 *   layer      y[c] = mul[c]·Σ ŵ·x̂ + bias[c]   (mul, bias: the folded batchnorm,
 *              mul = γ/√(σ²+ε), bias = β + (b - μ)·mul; mul = 1 without one).
 *
 * Example:
 *     nb_xmodel *x;
 *     if (nb_export_build(model, &x) == NB_OK) {
 *         nb_export_write_packed(x, "model.nq.h5");
 *         nb_export_onnx(x, "model.onnx", 13);
 *         nb_xmodel_free(x);
 *     }
 */
#ifndef NB_EXPORT_H
#define NB_EXPORT_H

#include "nb_quant.h"

#define NB_PACKED_FORMAT "nibble-packed"
#define NB_PACKED_VERSION 1

typedef enum {
    NB_XW_FLOAT = 0, /* not quantized: wfloat holds the weights */
    NB_XW_UNIFORM,   /* integer codes on a uniform grid */
    NB_XW_CODEBOOK,  /* indices into per-row codebooks (ADQ) */
    NB_XW_COUNT
} nb_xw_kind;

typedef enum {
    NB_XA_NONE = 0,  /* the input is used as it is (float) */
    NB_XA_UNIFORM,   /* uniform grid: scale, zero point, offset β */
    NB_XA_N2UQ,      /* learned thresholds onto the uniform grid s·{0..n} */
    NB_XA_COUNT
} nb_xa_kind;

typedef struct nb_xlayer {
    char name[80];           /* module name, "layer1.0.conv1" */
    int is_conv;             /* else linear */
    int oc, ic, kh, kw;      /* weight shape (linear: kh = kw = 1) */
    int stride, pad;         /* conv */
    size_t numel;            /* oc·ic·kh·kw */

    /* weights */
    nb_xw_kind wkind;
    int wbits;               /* stored bits per code (uniform: the grid's; codebook: ceil(log2 ncodes)) */
    int32_t *codes;          /* numel: uniform q in [qmin, qmax]; codebook index in [0, ncodes) */
    int qmin, qmax;          /* uniform */
    nb_qgran gran;           /* tensor | channel | group (uniform); tensor | channel (codebook) */
    nb_fq_layout L;          /* rows = 1 (tensor) or oc, K = numel / oc (channel, group) */
    int n_scales;            /* uniform: nb_fq_layout_scales(&L) */
    float *scale;            /* n_scales (uniform) */
    int32_t *zero_point;     /* n_scales (uniform) */
    int cb_rows, ncodes;     /* codebook: cb_rows codebooks (1 or oc) of ncodes ascending codes */
    float *codebook;         /* cb_rows·ncodes */
    float alpha;             /* codebook: the global scale (1 when not learned) */
    float *wfloat;           /* NB_XW_FLOAT: numel */
    float *mul;              /* oc: the folded batchnorm's multiplier */
    float *bias;             /* oc: the folded bias */

    /* the input quantizer */
    nb_xa_kind akind;
    int abits;               /* uniform: the grid's bits; n2uq: bits of the levels (n = 2^b - 1) */
    int aqmin, aqmax;        /* uniform grid; n2uq: 0, n */
    float ascale;            /* uniform: s; n2uq: the output scale */
    int32_t azero;           /* uniform: z */
    float aoffset;           /* uniform: β (LSQ+), else 0 */
    int n_thr;               /* n2uq: n thresholds T_1 < ... < T_n */
    float *thr;
    char amethod[16];        /* the training method ("lsq", "uniform", "n2uq", ...), informative */
    char wmethod[16];
} nb_xlayer;

typedef struct {
    nb_gop op;
    int a, b;                /* input values (node indices), -1 when unused */
    int layer;               /* conv/linear: index into layers, else -1 */
    int k, stride, pad, out_c;
} nb_xnode;

typedef struct nb_xmodel {
    char arch[32];
    nb_model_opts opts;      /* as the model was built (num_classes, in_channels, input_size, ...) */
    int in_c, in_h, in_w;    /* input image shape */
    int n_layers;
    nb_xlayer *layers;
    int n_nodes;
    nb_xnode *nodes;         /* node 0 the input, the last the logits */
    int n_norm;              /* the normalisation the input needs (per channel), 0 if unknown */
    float mean[4], std[4];   /* x = (pixel/255 - mean)/std */
    char *config_json;       /* the training config (nb_malloc'ed), may be NULL */
} nb_xmodel;

/* The IR of model m (quantized or not; evaluation state, ready quantizers).
 * Every uniform or codebook weight's codes are checked to reproduce the
 * quantizer's forward exactly (a mismatch is NB_STATUS_BAD_INPUT naming
 * the layer). Binary and ternary weights become the grid [-1, 1] with one
 * scale α per output channel (2 bits). Owned. */
nb_status nb_export_build(nb_model *m, nb_xmodel **out);
void nb_xmodel_free(nb_xmodel *x);

/* Bits that hold n distinct codes (1 for n <= 2). */
int nb_xbits(long n);
/* The scale index of weight e (flat, (oc, ic, kh, kw) order) of a uniform
 * layer: r·ceil(K/G) + (e mod K)/G with r = e / K, as nb_fq_layout. */
size_t nb_xlayer_scale_index(const nb_xlayer *l, size_t e);
/* Dequantized weights of layer l, unfolded (ŵ: the fake-quant weights) into
 * w (numel floats). */
void nb_xlayer_weights(const nb_xlayer *l, float *w);
/* Apply layer l's input quantizer to n values in place (x̂). */
void nb_xlayer_quant_input(const nb_xlayer *l, float *x, size_t n);
/* The code of one input value (uniform: q; n2uq: the level count). */
int nb_xlayer_input_code(const nb_xlayer *l, float x);

/* Bytes of the weight codes at their bit width (packed) and of everything
 * else the packed file stores per layer (scales, codebooks, mul, bias). */
size_t nb_xlayer_code_bytes(const nb_xlayer *l);

/* ------------------------------------------------------------ packed file */

/* Write x to path (temp file + rename; docs/export.md has the layout). */
nb_status nb_export_write_packed(const nb_xmodel *x, const char *path);
/* Read and validate a packed file: format and version, every layer's shape
 * against the architecture, bit widths, codes within range, scales present
 * and finite and positive; NB_STATUS_BAD_INPUT names the file, the layer
 * and the field. */
nb_status nb_export_read_packed(const char *path, nb_xmodel **out);
/* Whether path is a packed file (its nb_format attribute). */
int nb_export_is_packed(const char *path);
/* The per-layer table (bits, bytes) and the compression ratio against FP32
 * weights, printed to f; returns those FP32 bytes (weights and folded
 * biases at 32 bits). */
double nb_export_summary(const nb_xmodel *x, FILE *f);

/* --------------------------------------------------------- integer engine */

typedef struct nb_int_engine nb_int_engine;
/* An engine for x: codes unpacked into the GEMM layout, fixed-point
 * multipliers precomputed. Owned. */
nb_status nb_int_engine_new(const nb_xmodel *x, nb_int_engine **out);
void nb_int_engine_free(nb_int_engine *e);
/* logits (N, classes) for N normalised images (N, C, H, W). */
nb_status nb_int_engine_forward(nb_int_engine *e, const float *images, int N, float *logits);

/* ------------------------------------------------------------------ ONNX */

/* Write x as an ONNX model in QDQ form at opset (13..17) to path. */
nb_status nb_export_onnx(const nb_xmodel *x, const char *path, int opset);

#endif /* NB_EXPORT_H */
