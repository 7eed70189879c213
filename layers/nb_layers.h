/*
 * nb_layers.h — differentiable ops, modules and model builders.
 *
 * Ops take the tape, borrow their inputs and return an output tensor in the
 * tape's arena (valid until nb_tape_reset). When gradients are enabled and
 * an input requires grad they record a node whose backward kernel
 * accumulates into the inputs' gradients. Shape errors are programmer
 * errors (the builders check shapes) and assert.
 *
 * Models hold their parameters in one contiguous block (and their gradients
 * in another), registered under PyTorch state_dict names such as
 * "layer2.0.conv1.weight".
 *
 * Example:
 *     nb_model *m = nb_model_build("resnet20", &nb_model_opts_default(), &rng);
 *     nb_tensor *logits = nb_model_forward(m, tape, images);   // (N, classes)
 *     nb_tensor *loss = nb_cross_entropy(tape, logits, labels, 0.0f);
 *     nb_backward(tape, loss);
 *     nb_model_free(m);
 */
#ifndef NB_LAYERS_H
#define NB_LAYERS_H

#include "nb_autograd.h"

/* ------------------------------------------------------------------ ops */

typedef struct {
    int stride;  /* >= 1 */
    int pad;     /* zero padding on each side */
} nb_conv2d_params;

/* y (N, OC, OH, OW) = conv(x (N, C, H, W), w (OC, C, KH, KW)) + b (OC) or
 * no bias when b is NULL. OH = (H + 2 pad - KH) / stride + 1. */
nb_tensor *nb_conv2d(nb_tape *t, nb_tensor *x, nb_tensor *w, nb_tensor *b,
                     const nb_conv2d_params *p);

/* y (N, OUT) = x (N, IN) w^T (w: (OUT, IN)) + b (OUT) (b may be NULL). */
nb_tensor *nb_linear(nb_tape *t, nb_tensor *x, nb_tensor *w, nb_tensor *b);

/* Batch normalisation over (N, H, W) per channel of x (N, C, H, W).
 * training: normalise with the batch statistics and update the running
 * ones: r <- (1 - momentum) r + momentum * stat (unbiased variance, as
 * PyTorch); otherwise normalise with running_mean/var. gamma/beta (C). */
typedef struct {
    float momentum; /* default 0.1 */
    float eps;      /* default 1e-5 */
    int training;
    int relu;       /* fuse max(y, 0) into the output */
} nb_bn_params;

nb_tensor *nb_batchnorm2d(nb_tape *t, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta,
                          float *running_mean, float *running_var, const nb_bn_params *p);

/* max(batchnorm(x) + sc, 0): the end of a residual block in one op. The
 * batchnorm's own output is never stored (one activation less per block);
 * the result equals nb_add_relu(nb_batchnorm2d(x), sc) bit for bit.
 * p->relu is ignored. */
nb_tensor *nb_batchnorm2d_add_relu(nb_tape *t, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta, float *running_mean,
                                   float *running_var, const nb_bn_params *p, nb_tensor *sc);

/* Learned quantizers (ALGORITHMS.md §4; quant/lsq.c has the formulas and
 * gradients): LSQ's step size s, LSQ+'s step size and offset β, PACT's
 * clipping level α (s = α / qmax). */
typedef enum {
    NB_LSQ_LSQ = 0,
    NB_LSQ_PLUS,
    NB_LSQ_PACT
} nb_lsq_kind;

/* A learned per-tensor activation quantizer, as quant/ describes it to an
 * op that applies it itself (quant/'s nb_lsq with a one-segment layout). */
typedef struct {
    nb_lsq_kind kind;
    nb_tensor *step;    /* (1): s (LSQ, LSQ+) or α (PACT); a trained parameter */
    nb_tensor *offset;  /* (1): β (LSQ+, a trained parameter), else NULL */
    int qmin, qmax;
    float grad_scale;   /* g multiplying d(step) and d(offset) */
} nb_lsq_act;

/* q(max(bn(x), 0)) in one op, q the quantizer aq: the same bits, values and
 * gradients as nb_batchnorm2d with relu followed by quant/'s nb_lsq, in
 * fewer passes over memory (the ReLU output is neither written nor read:
 * the backward recomputes it from x). Gradients flow to x, gamma, beta and
 * aq's step and offset, which must be parameters (their gradient buffers
 * are their own; they are not inputs of the node) and stay unchanged until
 * backward. p->relu is ignored (always on). */
nb_tensor *nb_batchnorm2d_relu_lsq(nb_tape *t, nb_tensor *x, nb_tensor *gamma, nb_tensor *beta,
                                   float *running_mean, float *running_var, const nb_bn_params *p,
                                   const nb_lsq_act *aq);

/* max(x, 0). inplace: the output shares x's data (x must not be needed by
 * anyone else afterwards; its own producer's backward must not read it). */
nb_tensor *nb_relu(nb_tape *t, nb_tensor *x, int inplace);
/* a + b, same shapes. */
nb_tensor *nb_add(nb_tape *t, nb_tensor *a, nb_tensor *b);
/* max(a + b, 0) in one pass (the end of a residual block). */
nb_tensor *nb_add_relu(nb_tape *t, nb_tensor *a, nb_tensor *b);
/* Max pooling (N, C, H, W) -> (N, C, OH, OW), padding counts as -inf. */
nb_tensor *nb_maxpool2d(nb_tape *t, nb_tensor *x, int k, int stride, int pad);
/* Mean over H, W: (N, C, H, W) -> (N, C). */
nb_tensor *nb_global_avgpool(nb_tape *t, nb_tensor *x);
/* (N, ...) -> (N, prod(...)). */
nb_tensor *nb_flatten(nb_tape *t, nb_tensor *x);
/* ResNet option-A shortcut: keep every stride-th pixel, zero-pad channels to
 * out_c (pad split (out_c - C) / 2 before, the rest after). */
nb_tensor *nb_shortcut_pad(nb_tape *t, nb_tensor *x, int stride, int out_c);
/* Mean softmax cross-entropy of logits (N, K) against labels (N) in [0, K),
 * with label smoothing eps: target = (1 - eps) onehot + eps / K. Scalar. */
nb_tensor *nb_cross_entropy(nb_tape *t, nb_tensor *logits, const int32_t *labels,
                            float label_smoothing);
/* Knowledge-distillation loss of logits (N, K), scalar: (1 - weight) *
 * cross_entropy(logits, labels, label_smoothing) + weight * T^2 * mean over
 * the batch of KL(softmax(teacher / T) || softmax(logits / T)), T =
 * temperature > 0, weight in [0, 1]. teacher_logits (N, K) is borrowed and
 * gets no gradient; the gradient flows to logits only. */
nb_tensor *nb_distill_loss(nb_tape *t, nb_tensor *logits, const int32_t *labels,
                           const float *teacher_logits, float temperature, float weight,
                           float label_smoothing);

/* ---------------------------------------------------------- model */

typedef enum {
    NB_INIT_NONE = 0,
    NB_INIT_KAIMING_CONV, /* normal(0, sqrt(2 / fan_out)), torchvision's choice */
    NB_INIT_LINEAR,       /* uniform(+-1/sqrt(fan_in)), PyTorch's Linear default */
    NB_INIT_ZERO,
    NB_INIT_ONE,
    NB_INIT_COUNT
} nb_init;

typedef enum {
    NB_ENTRY_PARAM = 0,  /* trained: has a gradient */
    NB_ENTRY_BUFFER,     /* state (running statistics): saved, not trained */
    NB_ENTRY_COUNT
} nb_entry_kind;

typedef struct {
    char name[96];     /* state_dict name, e.g. "layer1.0.bn1.running_mean" */
    nb_tensor *t;      /* data in the model's block */
    nb_entry_kind kind;
    nb_init init;
    int fan_in, fan_out;
    int no_decay;      /* biases and batchnorm parameters */
} nb_entry;

/* What a forward pass is for. Hooks see it: a quantizer fake-quantizes in
 * TRAIN and EVAL, observes (and passes values through) in CALIBRATE, and
 * must be the identity without side effects in PROBE (nb_model_macs). */
typedef enum {
    NB_PASS_TRAIN = 0, /* a training step: batchnorm uses batch statistics */
    NB_PASS_EVAL,      /* evaluation: running statistics */
    NB_PASS_CALIBRATE, /* evaluation forward whose hooks collect statistics */
    NB_PASS_PROBE,     /* shape / MAC probe on a zero image */
    NB_PASS_COUNT
} nb_pass;

/* A hook that replaces a tensor on its way into an op (the quantization pass
 * installs fake-quant here; layers/ holds no quantization math). */
typedef nb_tensor *(*nb_hook_fn)(void *state, nb_tape *t, nb_tensor *x, nb_pass pass);
/* Whether the hook, in this pass and for an input shaped like x, is exactly
 * a learned per-tensor quantizer without side effects, described in *aq:
 * then the op producing the input may apply it instead (and the hook is
 * skipped); 0: call the hook. */
typedef int (*nb_hook_lsq_fn)(void *state, const nb_tensor *x, nb_pass pass, nb_lsq_act *aq);
typedef struct {
    nb_hook_fn fn;  /* NULL: identity */
    void *state;
    nb_hook_lsq_fn as_lsq; /* NULL: never fused */
} nb_hook;

typedef enum {
    NB_MOD_CONV2D = 0,
    NB_MOD_LINEAR,
    NB_MOD_BATCHNORM2D,
    NB_MOD_COUNT
} nb_module_type;

/* Where a conv/linear module sits in its network (recorded by the
 * builders, so folding, quantization policies and export need not re-derive
 * the graph from the forward code). */
typedef enum {
    NB_ROLE_MIDDLE = 0,
    NB_ROLE_FIRST,      /* the first layer: sees the (signed) input image */
    NB_ROLE_LAST,       /* the classifier */
    NB_ROLE_COUNT
} nb_role;

struct nb_model;

/* The header every layer module starts with. */
typedef struct nb_module {
    nb_module_type type;
    char name[80];      /* dotted path, e.g. "layer1.0.conv1" */
    nb_hook weight_hook;
    nb_hook input_hook;
    double macs;        /* multiply-accumulates per image, last forward */
    struct nb_model *owner;   /* the model it belongs to (its pass) */
    /* structure (conv/linear): */
    struct nb_module *bn;     /* conv: the batchnorm applied to its output, or NULL */
    int relu_after;           /* conv: a ReLU follows that batchnorm (maybe after an add) */
    int input_nonneg;         /* its input is >= 0 (comes from a ReLU) */
    nb_role role;
} nb_module;

typedef struct {
    nb_module base;
    nb_tensor *weight;  /* (OC, C, KH, KW) */
    nb_tensor *bias;    /* (OC) or NULL */
    nb_conv2d_params p;
} nb_conv2d_module;

typedef struct {
    nb_module base;
    nb_tensor *weight;  /* (OUT, IN) */
    nb_tensor *bias;    /* (OUT) or NULL */
} nb_linear_module;

typedef struct {
    nb_module base;
    nb_tensor *weight, *bias;              /* gamma, beta (C) */
    nb_tensor *running_mean, *running_var; /* (C) buffers */
    nb_tensor *num_batches_tracked;        /* (1) buffer, a float count */
    float momentum, eps;
} nb_bn_module;

nb_tensor *nb_conv2d_module_forward(nb_conv2d_module *m, nb_tape *t, nb_tensor *x);
nb_tensor *nb_linear_module_forward(nb_linear_module *m, nb_tape *t, nb_tensor *x);
/* relu: fuse max(y, 0) (BN followed by ReLU, one pass). */
nb_tensor *nb_bn_module_forward(nb_bn_module *m, nb_tape *t, nb_tensor *x, int training, int relu);
/* max(bn(x) + sc, 0) (nb_batchnorm2d_add_relu): a residual block's end. */
nb_tensor *nb_bn_add_relu_module_forward(nb_bn_module *m, nb_tape *t, nb_tensor *x, nb_tensor *sc, int training);
/* conv(max(bn(x), 0)) for a batchnorm whose output goes to conv alone: when
 * conv's input hook is a learned per-tensor quantizer for this pass (and
 * the model's fuse_quant is on) the batchnorm op applies it
 * (nb_batchnorm2d_relu_lsq), else the two module forwards. Same results. */
nb_tensor *nb_bn_relu_conv_module_forward(nb_bn_module *bn, nb_conv2d_module *conv, nb_tape *t, nb_tensor *x,
                                          int training);

typedef enum {
    NB_SHORTCUT_A = 0, /* subsample + zero-pad, parameter-free */
    NB_SHORTCUT_B,     /* 1x1 conv + batchnorm */
    NB_SHORTCUT_COUNT
} nb_shortcut;

typedef enum {
    NB_STEM_AUTO = 0,  /* from the input size: >= 128 px ImageNet, else CIFAR */
    NB_STEM_IMAGENET,  /* 7x7 stride 2 + 3x3 maxpool stride 2 */
    NB_STEM_CIFAR,     /* 3x3 stride 1, no maxpool */
    NB_STEM_COUNT
} nb_stem;

/* The stem a model gets for input_size x input_size inputs: stem itself
 * unless it is NB_STEM_AUTO. */
nb_stem nb_stem_resolve(nb_stem stem, int input_size);
/* "auto", "imagenet" or "cifar" into *out; 0 for any other name. */
int nb_stem_from_name(const char *name, nb_stem *out);

typedef struct {
    int num_classes;      /* default 10 */
    int in_channels;      /* default 3 */
    int input_size;       /* H = W, default 32 (used for the stem choice) */
    nb_shortcut shortcut; /* CIFAR ResNets; default A */
    nb_stem stem;         /* ImageNet ResNets; default AUTO */
    float bn_momentum;    /* default 0.1 */
    float bn_eps;         /* default 1e-5 */
    int width;            /* small CNN base width, default 16 */
} nb_model_opts;

nb_model_opts nb_model_opts_default(void);

typedef struct nb_model nb_model;
typedef nb_tensor *(*nb_forward_fn)(nb_model *m, nb_tape *t, nb_tensor *x);

/* The evaluation forward as a list of operations, for export and the
 * integer engine (quant/nb_export.h): value i is node i's output, node 0
 * is the input image (N, C, H, W), the last node gives the logits. */
typedef enum {
    NB_G_INPUT = 0,
    NB_G_CONV,         /* mod (a conv) on value a, then mod->bn when set (running statistics) */
    NB_G_LINEAR,       /* mod (a linear) on value a, (N, C) */
    NB_G_RELU,         /* max(a, 0) */
    NB_G_ADD,          /* a + b */
    NB_G_SHORTCUT_PAD, /* nb_shortcut_pad(a, stride, out_c) */
    NB_G_MAXPOOL,      /* nb_maxpool2d(a, k, stride, pad) */
    NB_G_GAP,          /* nb_global_avgpool(a): (N, C, H, W) -> (N, C) */
    NB_G_COUNT
} nb_gop;

typedef struct {
    nb_gop op;
    int a, b;           /* input values (node indices < this node's), -1 when unused */
    struct nb_module *mod;
    int k, stride, pad; /* maxpool; stride also for the shortcut */
    int out_c;          /* shortcut */
} nb_gnode;

typedef int (*nb_graph_fn)(const nb_model *m, nb_gnode *nodes, int cap);

/* State attached to a finalized model by another module (the quantization
 * pass): named tensors in blocks of its own, so the model's block never
 * moves; checkpoints save them under /quant/<name> (names such as
 * "layer1.0.conv1.weight/scale"). PARAM entries are trained (their
 * gradients live in param_grad, zeroed with the model's); BUFFER entries
 * are state. Freed with the model through free(owner). */
typedef struct nb_model_ext {
    nb_entry *entries;
    int n_entries;
    float *param_data, *param_grad;
    size_t n_param_floats;
    float *buffer_data;
    size_t n_buffer_floats;
    void *owner;
    void (*free)(void *owner);
    /* after every optimizer step (keep step sizes > 0, EMA updates); may be
     * NULL. NB_STATUS_NUMERIC with a message naming the state that became
     * NaN or Inf. */
    nb_status (*after_step)(void *owner);
    /* after its entries were loaded from a checkpoint; may be NULL */
    nb_status (*after_load)(void *owner);
} nb_model_ext;

struct nb_model {
    char arch[32];
    nb_model_opts opts;
    nb_entry *entries;          /* parameters and buffers, registration order */
    int n_entries, cap_entries;
    nb_module **modules;        /* conv/linear/bn modules, forward order */
    int n_modules, cap_modules;
    float *param_data, *param_grad; /* contiguous blocks, n_param_floats each */
    size_t n_param_floats;
    float *buffer_data;
    size_t n_buffer_floats;
    nb_pass pass;               /* NB_PASS_TRAIN: batchnorm uses batch statistics */
    int bn_frozen;              /* batchnorm uses (and keeps) its running statistics in
                                   NB_PASS_TRAIN too (train.freeze_bn_epochs) */
    int fuse_quant;             /* apply a conv's learned input quantizer inside the
                                   batchnorm feeding it (nb_bn_relu_conv_module_forward):
                                   1 unless the environment has NB_NO_FUSE=1; the same
                                   bits either way, so tests compare the two */
    int first_module, last_module; /* indices into modules (roles FIRST, LAST), -1 if none */
    nb_model_ext *quant;        /* NULL for an FP32 model */
    nb_forward_fn forward;
    nb_graph_fn graph;          /* the forward as nodes (nb_model_graph) */
    void *net;                  /* architecture-specific structure */
    void (*net_free)(void *net);
    int build_failed;           /* an allocation failed while building:
                                   nb_model_finalize reports it */
};

/* Build a model by architecture name: resnet20/32/44/56 (CIFAR layout),
 * resnet18/34 (ImageNet layout), smallcnn. Parameters initialised from rng.
 * Owned; NULL with NB_STATUS_BAD_INPUT for an unknown name or bad option,
 * NULL with NB_STATUS_OOM (and the model's size) when memory runs out. */
nb_model *nb_model_build(const char *arch, const nb_model_opts *o, nb_rng *rng);
void nb_model_free(nb_model *m);
/* Names of the architectures nb_model_build knows, NULL-terminated. */
const char *const *nb_model_archs(void);

/* logits (N, classes) from images (N, C, H, W). Records on the tape when
 * gradients are enabled and the model is in training mode or params need
 * grad. */
nb_tensor *nb_model_forward(nb_model *m, nb_tape *t, nb_tensor *x);
/* m's evaluation forward as nodes (at most cap; see nb_gop): the node
 * count, or -1 with the error set when cap is too small. */
int nb_model_graph(const nb_model *m, nb_gnode *nodes, int cap);
/* A printable name of op ("conv", "linear", "relu", "add", "shortcut_pad",
 * "maxpool", "gap", "input"). */
const char *nb_gop_name(nb_gop op);
/* training ? NB_PASS_TRAIN : NB_PASS_EVAL. */
void nb_model_train(nb_model *m, int training);
/* Whether batchnorm uses batch statistics: NB_PASS_TRAIN and not frozen. */
int nb_model_bn_batch_stats(const nb_model *m);
/* Any pass; batchnorm uses batch statistics only in NB_PASS_TRAIN. */
void nb_model_set_pass(nb_model *m, nb_pass pass);
/* Zero the gradients of the parameters and of the attached ext's. */
void nb_model_zero_grad(nb_model *m);
size_t nb_model_param_count(const nb_model *m);
nb_entry *nb_model_find(nb_model *m, const char *name);
/* Forward multiply-accumulates per image for an input of size h x w. */
double nb_model_macs(nb_model *m, int h, int w);
/* Print the per-layer table (name, shape, params) with nb_log. */
void nb_model_summary(const nb_model *m);
/* The conv or linear module called name, or NULL. */
nb_module *nb_model_module(nb_model *m, const char *name);
/* Weights (numel) of a conv/linear module. */
size_t nb_module_weight_numel(const nb_module *mod);
/* The weight tensor of a conv/linear module (NULL for batchnorm). */
nb_tensor *nb_module_weight(nb_module *mod);

/* Builder API (for model files): register modules during construction, then
 * nb_model_finalize() allocates the blocks and initialises. When memory runs
 * out the add functions return NULL (or a module missing a tensor) and set
 * m->build_failed; nb_model_finalize then returns NB_STATUS_OOM, so a
 * builder only checks finalize's status. */
nb_model *nb_model_begin(const char *arch, const nb_model_opts *o);
nb_conv2d_module *nb_model_add_conv(nb_model *m, const char *name, int in_c, int out_c,
                                    int k, int stride, int pad, int bias);
nb_linear_module *nb_model_add_linear(nb_model *m, const char *name, int in_f, int out_f,
                                      int bias);
nb_bn_module *nb_model_add_bn(nb_model *m, const char *name, int c);
/* Record that b normalises c's output, followed by a ReLU when relu. */
void nb_model_link_bn(nb_conv2d_module *c, nb_bn_module *b, int relu);
/* Records roles (the first conv, the classifier) and allocates the blocks. */
nb_status nb_model_finalize(nb_model *m, nb_rng *rng);

/* The op table of layers/ (for the test that walks every table): *n entries. */
const nb_op_def *nb_layers_ops(int *n);

#endif /* NB_LAYERS_H */
