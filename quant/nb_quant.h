/*
 * nb_quant.h — quantization: integer grids, fake-quant ops with
 * straight-through gradients, observers for calibration, the pass that
 * wraps a model's weights and activations per a policy, and batchnorm
 * folding. Formulas: ../shared/docs/ALGORITHMS.md §1-3, §6.
 *
 * A quantized tensor is x̂ = s·(q - z) with q = clamp(rint(x/s) + z, qmin,
 * qmax): rint rounds half to even (torch.round, ONNX QuantizeLinear).
 * Symmetric grids have z = 0; asymmetric ones take [0, 2^b - 1] and an
 * integer z that makes real 0 exactly representable.
 *
 * Example (PTQ of a built FP32 model, as `nibble ptq` does):
 *     nb_quant_policy p;
 *     nb_quant_policy_default(&p);
 *     p.weights.bits = 4; strcpy(p.weights.method, "uniform");
 *     p.activations.bits = 8; strcpy(p.activations.method, "uniform");
 *     nb_quant_fold_bn(model);                       // §3
 *     if (nb_quant_attach(model, &p) != NB_OK) ...    // hooks + /quant/ state
 *     nb_model_set_pass(model, NB_PASS_CALIBRATE);
 *     ... forward N batches without gradients ...
 *     nb_quant_calibrate_finish(model);               // observers -> s, z
 *     nb_model_train(model, 0);                       // fake-quant evaluation
 */
#ifndef NB_QUANT_H
#define NB_QUANT_H

#include "nb_layers.h"

/* ------------------------------------------------------------ integer grids */

/* How real values map to integers (ALGORITHMS.md §1). */
typedef struct {
    int bits;       /* 2..8 for uniform grids */
    int is_signed;  /* symmetric grids: signed [-2^(b-1), 2^(b-1)-1]; else unsigned [0, 2^b-1] */
    int symmetric;  /* z = 0; asymmetric grids are always [0, 2^b - 1] with an integer z */
    int narrow;     /* symmetric signed only: [-(2^(b-1)-1), 2^(b-1)-1] */
} nb_qspec;

/* The integer range [*qmin, *qmax] of spec. */
void nb_qspec_range(const nb_qspec *q, int *qmin, int *qmax);

/* Scale and zero point for the real range [lo, hi] (lo <= hi; the range is
 * first widened to contain 0): symmetric s = max(|lo|, |hi|) / Qp (Qp =
 * qmax; unsigned grids use hi / qmax), z = 0; asymmetric s = (hi - lo) /
 * (2^b - 1), z = clamp(rint(-lo / s), 0, 2^b - 1). A degenerate range (all
 * zeros) gives s = 1 (any s represents 0 exactly) rather than 0. */
void nb_qparams_from_range(const nb_qspec *q, float lo, float hi, float *scale, int32_t *zero_point);

/* ---------------------------------------------------------------- observers */

/* Range estimators (ALGORITHMS.md §2). */
typedef enum {
    NB_OBS_MINMAX = 0,   /* [min, max] of everything seen */
    NB_OBS_EMA,          /* moving average of per-batch min and max */
    NB_OBS_PERCENTILE,   /* clip at a percentile of |x| (symmetric) or of x (lo and hi tails) */
    NB_OBS_MSE,          /* clip ratio r in (0, 1] of the min-max range minimising ||Q(x) - x||^2 */
    NB_OBS_KL,           /* TensorRT: threshold minimising KL(P || Q) over a histogram of |x| */
    NB_OBS_COUNT
} nb_observer_kind;

/* "minmax", "ema", "percentile", "mse", "kl"; NULL when out of range. */
const char *nb_observer_name(nb_observer_kind k);
/* The kind called name; -1 if none. */
int nb_observer_from_name(const char *name);

typedef struct {
    nb_observer_kind kind;
    float momentum;    /* ema: new = momentum * old + (1 - momentum) * batch; default 0.9 */
    float percentile;  /* percentile: in (0, 100], default 99.99 */
    int grid;          /* mse: candidate clip ratios r = i / grid, i = 1..grid; default 100 */
    int bins;          /* kl (and the histogram behind percentile and mse): default 2048 */
} nb_observer_opts;

/* Defaults for kind (the values in the comments above). */
nb_observer_opts nb_observer_opts_default(nb_observer_kind kind);

/* The range [*lo, *hi] (lo <= 0 <= hi) that kind would choose for the n
 * values of x, quantized with spec: exact over the values (no histogram
 * for minmax, percentile and mse; kl uses its histogram). Used for weights,
 * where the whole tensor (or one channel or group of it) is at hand. ema
 * behaves as minmax for one tensor. NB_STATUS_NUMERIC when x holds a
 * non-finite value. */
nb_status nb_observe_range(const nb_observer_opts *o, const nb_qspec *spec, const float *x, size_t n,
                           float *lo, float *hi);

/* A stateful observer for activations: fed batch by batch, asked for a
 * range at the end. Per-tensor. Owned; free with nb_observer_free. */
typedef struct nb_observer nb_observer;

nb_observer *nb_observer_new(const nb_observer_opts *o);
void nb_observer_free(nb_observer *ob);
/* Feed n values (one batch). NB_STATUS_NUMERIC names the first non-finite
 * value's index. */
nb_status nb_observer_update(nb_observer *ob, const float *x, size_t n);
/* Batches fed so far. */
long nb_observer_batches(const nb_observer *ob);
/* The range for spec from everything fed so far (lo <= 0 <= hi);
 * NB_STATUS_BAD_INPUT when nothing was fed. */
nb_status nb_observer_range(const nb_observer *ob, const nb_qspec *spec, float *lo, float *hi);

/* ----------------------------------------------------- fake-quant kernels */

/* x viewed as (rows, K); element (r, k) uses scale index r * ng + k / G,
 * ng = ceil(K / G) (the last group of a row may be shorter). Per-tensor:
 * rows 1, G = K; per-channel: rows = OC, G = K; per-group: G. */
typedef struct {
    int rows;
    size_t K, G;
} nb_fq_layout;

/* Number of scales a layout uses: rows * ceil(K / G). */
size_t nb_fq_layout_scales(const nb_fq_layout *L);
/* rint for any float, ties to even (NaN stays NaN). */
float nb_fq_round(float v);
/* y = s (clamp(rint(x / s) + z, qmin, qmax) - z), scale/zero_point per the
 * layout's scale index (zero points are integers held in floats). */
void nb_fq_forward(const nb_fq_layout *L, const float *scale, const float *zero_point, int qmin, int qmax,
                   const float *x, float *y);
/* STE: dx (+)= dy where qmin <= rint(x / s) + z <= qmax, else 0 (dx may
 * be dy itself, for an in-place mask); fresh:
 * write dx instead of adding. */
void nb_fq_backward(const nb_fq_layout *L, const float *scale, const float *zero_point, int qmin, int qmax,
                    const float *x, const float *dy, float *dx, int fresh);
/* The op on the tape: returns x̂ (tape arena), records the STE backward.
 * scale/zero_point are borrowed and must stay unchanged until backward. */
nb_tensor *nb_fake_quant(nb_tape *t, nb_tensor *x, const nb_fq_layout *L, const float *scale,
                         const float *zero_point, int qmin, int qmax);

/* Binary (XNOR-Net: alpha[r] = mean |w_r|, sign(0) = +1) or ternary (TWN:
 * threshold 0.7 mean |w_r|, alpha[r] = mean of |w| above it) weights, one
 * alpha per row of w viewed as (rows, K); y = alpha[r] * t (y may be NULL:
 * alpha only). */
void nb_binary_ternary_forward(const float *w, float *y, int rows, size_t K, int ternary, float *alpha);
/* The op: STE backward (binary: identity where |w| <= 1; ternary: identity). */
nb_tensor *nb_binary_ternary(nb_tape *t, nb_tensor *w, int rows, int ternary, float *alpha);

/* Learned quantizers (ALGORITHMS.md §4; quant/lsq.c has the formulas and
 * gradients; nb_lsq_kind is in nb_layers.h, whose fused batchnorm op
 * applies activation quantizers too). */
typedef struct {
    nb_lsq_kind kind;
    nb_fq_layout L;
    nb_tensor *step;    /* (n scales): s (LSQ, LSQ+) or α (PACT); a trained parameter */
    nb_tensor *offset;  /* (n scales): β (LSQ+), else NULL */
    int qmin, qmax;
    float grad_scale;   /* g multiplying d(step) and d(offset): LSQ 1/sqrt(N·Qp) */
} nb_lsq_args;

/* LSQ's initial step [paper]: 2·mean|v| / sqrt(qmax) for the n values v;
 * 1 for all zeros (any step represents them), NaN for non-finite data. */
float nb_lsq_init_step(const float *v, size_t n, int qmax);
/* y = the quantized x per a (no tape). */
void nb_lsq_forward(const nb_lsq_args *a, const float *x, float *y);
/* dx (+)= dy·inside (dx may be NULL, or dy itself with fresh), dstep[j] +=
 * g·Σ term, doffset[j] += g·Σ dy·outside (either may be NULL). */
void nb_lsq_backward(const nb_lsq_args *a, const float *x, const float *dy, float *dx, int fresh, float *dstep,
                     float *doffset);
/* The op on the tape: gradients flow to x, a->step and a->offset (those that
 * require them). The parameters must stay unchanged until backward. */
nb_tensor *nb_lsq(nb_tape *t, nb_tensor *x, const nb_lsq_args *a);

/* Codebook (non-uniform) weight quantizers, ADQ (ALGORITHMS.md §5; the
 * layout, initialisation, tie rule and EMA update are described in
 * quant/codebook.c). */
typedef struct {
    int bits;       /* 1..8 */
    int symmetric;  /* {0, ±c_1..±c_m}, m = 2^(b-1) - 1 ({±c_1} at 1 bit); else 2^b codes with an exact zero */
} nb_cb_spec;

typedef enum {
    NB_CB_INIT_QUANTILE = 0, /* c_j = quantile((j - 1/2) / m) of the side's magnitudes [paper] */
    NB_CB_INIT_UNIFORM,      /* c_j = j·max / m */
    NB_CB_INIT_KMEANS,       /* Lloyd iterations from the quantiles */
    NB_CB_INIT_COUNT
} nb_cb_init;

/* The init called name ("quantile", "uniform", "kmeans"); -1 if none. */
int nb_cb_init_from_name(const char *name);
/* Codes per codebook; the index of the exact zero (-1 when none). */
int nb_cb_ncodes(const nb_cb_spec *s);
int nb_cb_zero_index(const nb_cb_spec *s);
/* The ascending codebook (nb_cb_ncodes floats) for the n values w.
 * NB_STATUS_NUMERIC names a non-finite weight; kmeans_iters bounds Lloyd. */
nb_status nb_cb_init_codes(const nb_cb_spec *s, nb_cb_init how, int kmeans_iters, const float *w, size_t n,
                           float *codes);
/* The ncodes - 1 midpoints of a sorted codebook, in double (exact). */
void nb_cb_midpoints(const float *codes, int ncodes, double *mid);
/* The index of the code nearest v (ties: toward zero, see codebook.c). */
int nb_cb_assign(const double *mid, int ncodes, float v);
/* Per code: count and sum of the values w·inv_alpha assigned to it. */
void nb_cb_stats(const float *codes, int ncodes, const float *w, size_t n, float inv_alpha, double *cnt,
                 double *sum);
/* The same for w viewed as (rows, K) with codebook r for row r: cnt and sum
 * (rows·ncodes) per row; threaded over a fixed partition, so the sums do
 * not depend on the thread count. */
void nb_cb_stats_rows(const float *codes, int ncodes, int rows, const float *w, size_t K, float inv_alpha,
                      double *cnt, double *sum);
/* One EMA update of the codebook and its statistics N, M from this step's
 * counts and sums (γ = gamma; γ = 0, eps = 0 is a Lloyd step). */
void nb_cb_ema(const nb_cb_spec *s, float *codes, float *N, float *M, const double *cnt, const double *sum,
               float gamma, float eps);
/* EMA statistics for a fresh codebook: N_k = n_k, M_k = c_k·n_k (pooled
 * over ±c for a symmetric one), so the codes start where they are. */
void nb_cb_ema_start(const nb_cb_spec *s, const float *codes, float *N, float *M, const double *cnt);

/* The codebook op: w viewed as (rows, K), row r quantized with codebook r. */
typedef struct {
    int rows;
    size_t K;
    int ncodes;
    const float *codes;  /* rows·ncodes, each row ascending; must stay unchanged until backward */
    nb_tensor *alpha;    /* learned global scale (1 element), or NULL for α = 1 */
    int ste_mask;        /* zero dw outside [c_0 - δ_0, c_last + δ_1] */
    float grad_scale;    /* g multiplying dα */
} nb_cb_args;

void nb_cb_forward(const nb_cb_args *a, const float *w, float *y);
/* dw (+)= dy·inside (dw may be dy itself with fresh), dalpha[0] += g·Σ term
 * (dw and dalpha may be NULL). */
void nb_cb_backward(const nb_cb_args *a, const float *w, const float *dy, float *dw, int fresh, float *dalpha);
nb_tensor *nb_codebook(nb_tape *t, nb_tensor *w, const nb_cb_args *a);
/* N2UQ activations (ALGORITHMS.md §5 "Activations", ADQ's activation side;
 * quant/n2uq.c has the formulas and gradients): learned thresholds T_1 =
 * t0, T_{i+1} = T_i + a_i, y = s·#{i : x >= T_i} in {0, s, ..., n·s};
 * gradients through the generalised STE (slope s/a_i inside interval i). */
typedef struct {
    int n_levels;       /* n output levels above 0: 2^b - 1 for b bits (2..255 accepted) */
    nb_tensor *t0;      /* (1): the first threshold; a trained parameter */
    nb_tensor *a;       /* (n_levels - 1): interval widths, kept > 0 by the caller; trained */
    nb_tensor *s;       /* (1): the uniform output scale; trained */
    float grad_scale;   /* g multiplying dt0, da and ds: LSQ's 1/sqrt(N·n) */
} nb_n2uq_args;

/* y = s·q(x) for the n values of x (no tape); NaN x gives NaN. */
void nb_n2uq_forward(const nb_n2uq_args *p, const float *x, size_t n, float *y);
/* dx (+)= dy·s/a_i inside interval i, else 0 (dx may be NULL, or dy itself
 * with fresh: write instead of add); *dt0, da[0..n_levels-2] and *ds +=
 * g·(their sums) (each may be NULL: not wanted). The sums do not depend on
 * the thread count. */
void nb_n2uq_backward(const nb_n2uq_args *p, const float *x, size_t n, const float *dy, float *dx, int fresh,
                      float *dt0, float *da, float *ds);
/* The op on the tape: returns y (tape arena); gradients flow to x, t0, a
 * and s (those that require them). The parameters must stay unchanged
 * until backward. */
nb_tensor *nb_n2uq(nb_tape *t, nb_tensor *x, const nb_n2uq_args *p);
/* Initial parameters from one batch x (n values): s0 = 2·mean|x|/sqrt(n_levels)
 * (LSQ's step; 1 when x is all zeros), t0 = s0/2, a[j] = s0, s = s0, so the
 * op starts as the unsigned uniform quantizer s0·clamp(floor(x/s0 + 1/2), 0,
 * n_levels). Non-finite data give NaN in all of them. a has n_levels - 1 slots. */
void nb_n2uq_init(int n_levels, const float *x, size_t n, float *t0, float *a, float *s);

/* quant/'s op table (for the test that walks every table): *n entries. */
const nb_op_def *nb_quant_ops(int *n);

/* ------------------------------------------------------------- the policy */

#define NB_QNAME 16
#define NB_QUANT_MAX_RULES 128 /* quant.layers and a quant.bitmap (one rule a layer) together */

/* Quantizer settings for one side (weights or activations). Names are the
 * config's strings (docs/configs.md). */
typedef struct {
    char method[NB_QNAME];      /* "none" | "uniform" | "binary" | "ternary" | "lsq" | "adq" (weights) */
    int bits;                   /* 2..8 for uniform and learned methods, 1..8 for adq */
    char granularity[NB_QNAME]; /* weights: "tensor" | "channel" | "group" */
    int group_size;             /* "group": elements per group (e.g. 32, 64, 128) */
    int symmetric;              /* zero point 0 (signed, or unsigned after a ReLU) */
    int narrow;                 /* symmetric signed: drop -2^(b-1) */
    char observer[NB_QNAME];    /* nb_observer_name() values */
    int recompute;              /* weights: scales from the current weights at every forward */
} nb_qside;

/* A per-layer override; 0 / "" fields inherit. */
typedef struct {
    char pattern[96];           /* a layer name or a glob (fnmatch: "layer3.*.conv2") */
    int weight_bits, act_bits;
    char weight_method[NB_QNAME], act_method[NB_QNAME], weight_granularity[NB_QNAME];
    int group_size;
} nb_qrule;

/* ADQ codebook weights (quant.adq.* in the config; ALGORITHMS.md §5). The
 * codebook's side (symmetric with zero or asymmetric) is quant.weights.
 * symmetric, its granularity quant.weights.granularity ("tensor": one per
 * layer, "channel": one per output channel). */
typedef struct {
    char init[NB_QNAME];  /* "quantile" | "uniform" | "kmeans" */
    int kmeans_iters;     /* Lloyd iterations at most (kmeans) */
    int ema;              /* EMA adaptation after optimizer steps */
    float ema_decay;      /* γ */
    int ema_period;       /* update every this many steps ... */
    int ema_warmup;       /* ... after this many steps without */
    int ste_mask;         /* zero the weight gradient beyond the codebook's ends */
    int learn_scale;      /* a learned global scale α (ŵ = α·c) */
} nb_adq_opts;

typedef struct {
    nb_qside weights, activations;
    int first_bits, last_bits;  /* the first conv / the classifier (weights and input); 0 = as the rest */
    nb_qrule rules[NB_QUANT_MAX_RULES]; /* applied in order after first/last */
    int n_rules;
    int calib_batches, calib_batch_size; /* calibration pass (ptq, and QAT's start) */
    float percentile, ema_momentum;      /* observer options */
    int mse_grid, kl_bins;
    int fold_bn;                /* batchnorm folded into the convolutions (PTQ checkpoints) */
    float lr_scale;             /* learned quantizer parameters: lr multiplier of their optimizer group */
    char lsq_grad_n[NB_QNAME];  /* LSQ activations' N in g = 1/sqrt(N·Qp): "example" (features per
                                   example, the paper), "batch" (all elements), "none" (g = 1) */
    float min_step;             /* learned step sizes are kept >= this after every step */
    nb_adq_opts adq;            /* codebook weights (method "adq") */
} nb_quant_policy;

/* Defaults: methods "none" (no quantization), 8 bits, per-channel symmetric
 * weights recomputed every forward, symmetric activations, min-max
 * observers, first/last layers 8 bits, 32 calibration batches of 128. */
void nb_quant_policy_default(nb_quant_policy *p);
/* Whether p quantizes anything. */
int nb_quant_enabled(const nb_quant_policy *p);

/* ------------------------------------------------------------ quantizers */

typedef enum {
    NB_QM_NONE = 0,
    NB_QM_UNIFORM,
    NB_QM_BINARY,
    NB_QM_TERNARY,
    NB_QM_LSQ,       /* learned step size (weights and activations) */
    NB_QM_LSQ_PLUS,  /* learned step size and offset (activations) */
    NB_QM_PACT,      /* learned clipping level (activations) */
    NB_QM_ADQ,       /* codebook weights with EMA adaptation */
    NB_QM_N2UQ,      /* learned thresholds onto a uniform output grid (activations) */
    NB_QM_COUNT
} nb_qmethod;

typedef enum {
    NB_QG_TENSOR = 0,
    NB_QG_CHANNEL,
    NB_QG_GROUP,
    NB_QG_COUNT
} nb_qgran;

/* "none", "uniform", ...; "tensor", "channel", "group". */
const char *nb_qmethod_name(nb_qmethod m);
const char *nb_qgran_name(nb_qgran g);

/* One quantizer, on a module's weight or input (read-only for users). Its
 * state lives in the model's quant ext: scale, zero_point (n_scales each),
 * qrange (qmin, qmax) and ready (1 once scales are valid), saved as
 * /quant/<name>/scale etc. */
typedef struct nb_quantizer {
    char name[96];          /* "layer1.0.conv1.weight", "layer1.0.conv1.input" */
    nb_module *mod;
    int is_weight;
    nb_qmethod method;
    nb_qspec spec;
    int qmin, qmax;
    nb_qgran gran;
    int group_size;
    nb_fq_layout L;
    int n_scales;
    nb_observer_opts obs;
    int recompute;
    nb_observer *observer;  /* activations while calibrating */
    long calib_seen;        /* calibration batches seen (learned quantizers start from the first) */
    float *scale, *zero_point, *qrange, *ready; /* in the ext's blocks */
    /* learned methods: the trained parameters (entries "scale" for LSQ and
     * LSQ+, "offset" for LSQ+, "alpha" for PACT, whose "scale" is α / qmax) */
    nb_tensor *step, *offset;
    float grad_scale;       /* weights: 1/sqrt(N·Qp), N the weights per step size */
    /* adq: L.rows codebooks of ncodes (qrange holds [0, ncodes - 1]) and
     * their EMA statistics, entries "codebook", "ema_count", "ema_sum",
     * "ema_step" (optimizer steps seen); step is "scale" (α) when learned */
    nb_cb_spec cb;
    int ncodes;
    float *codebook, *ema_count, *ema_sum, *ema_step;
    /* n2uq: the first threshold ("threshold", 1) and the interval widths
     * ("intervals", qmax - 1), trained; step is the output scale "scale" */
    nb_tensor *t0, *intervals;
} nb_quantizer;

/* Whether method m trains its quantizer parameters (lsq, lsq+, pact, n2uq;
 * adq's optional global scale is not counted here). */
int nb_qmethod_learned(nb_qmethod m);

/* Wrap every conv/linear module of m per p (weights through weight_hook,
 * inputs through input_hook) and attach the quantizer state as m->quant.
 * NB_STATUS_BAD_INPUT names the problem: a rule that matches no layer
 * ("quant.layers.\"layer9.*\": matches no layer of resnet20"), bits out
 * of range for a method, an already quantized model. */
nb_status nb_quant_attach(nb_model *m, const nb_quant_policy *p);
/* The quantizers of a quantized model (NULL, *n = 0 for an FP32 one). */
nb_quantizer *nb_quant_list(nb_model *m, int *n);
/* The policy it was attached with (NULL for an FP32 model). */
const nb_quant_policy *nb_quant_policy_of(const nb_model *m);
/* After forward passes in NB_PASS_CALIBRATE: activation scales from the
 * observers, weight scales from the weights; every quantizer ready. */
nb_status nb_quant_calibrate_finish(nb_model *m);
/* Whether some activation quantizer needs calibration batches beyond the
 * first (observers); learned quantizers start from one batch. */
int nb_quant_needs_observers(const nb_model *m);
/* Whether some quantizer of m learns from the training run (lsq, lsq+, pact,
 * adq): such runs should start from a trained FP32 checkpoint. */
int nb_quant_learned(const nb_model *m);
/* Whether every quantizer has valid scales. */
int nb_quant_ready(const nb_model *m);
/* Model size: bytes of conv/linear weights at their quantized bit widths
 * plus everything else (biases, batchnorm, scales) at 32 bits; *fp32 gets
 * the same model's size in FP32. */
double nb_quant_model_bytes(const nb_model *m, double *fp32);
/* The per-layer table (name, weight bits/granularity, input bits,
 * parameters, bytes) and the model size against FP32, with nb_log; for an
 * FP32 model, nb_model_summary. */
void nb_quant_summary(const nb_model *m);

/* ------------------------------------------------------------ sensitivity */

/* out = Q_b(w) for one layer's weights (numel floats, oc output channels)
 * under p's weight quantizer at b bits: "adq" codebooks per p->adq.init,
 * p->weights.symmetric and the granularity ("channel": one per output
 * channel, else one per layer); any other method the symmetric abs-max
 * uniform grid. NB_STATUS_NUMERIC names a non-finite weight. */
nb_status nb_quant_weight_q(const nb_quant_policy *p, const float *w, int oc, size_t numel, int bits, float *out);

/* A slice [off, off + n) of a parameter vector (one layer's weights). */
typedef struct {
    size_t off, n;
} nb_segment;

/* The gradient of the loss at the current parameters into grad (the
 * vector's full length). */
typedef nb_status (*nb_grad_fn)(void *ctx, float *grad);
/* Called after each Hutchinson sample (progress). */
typedef void (*nb_sample_fn)(void *ctx, int done);

/* Hutchinson traces of the Hessian blocks of the nseg segments of w
 * (quant/sensitivity.c): `samples` Rademacher vectors from seed, each
 * needing two gradients (gbuf and gbuf2: scratch of w's full length); the
 * finite-difference step of segment l is fd_eps·rms(w_l). w is restored
 * exactly. trace[l] gets the estimate (signed: callers take |.|). */
nb_status nb_hutchinson_trace(float *w, const nb_segment *seg, int nseg, nb_grad_fn grad, void *ctx, int samples,
                              float fd_eps, uint64_t seed, float *gbuf, float *gbuf2, double *trace,
                              nb_sample_fn on_sample, void *sample_ctx);

/* --------------------------------------------------------- batchnorm folding */

/* ALGORITHMS.md §3: every conv with a linked batchnorm gets w' = w γ/√(σ²+ε)
 * and the batchnorm becomes an exact bias add (γ = 1, μ = 0, σ² = 1, ε =
 * 0, β' = β + (b - μ)γ/√(σ²+ε), the conv's own bias moved into it), so the
 * evaluation output is unchanged and a checkpoint keeps the usual tensors.
 * Evaluation only: a folded model must not train. */
void nb_quant_fold_bn(nb_model *m);
/* The folding of conv/linear module mod's output channel c: *mul = γ/√(σ²+ε)
 * and *bias = β + (b - μ)·mul (1 and the module's bias without a batchnorm),
 * in double. */
void nb_quant_bn_coeffs(const nb_module *mod, int c, double *mul, double *bias);
/* Mark the batchnorms of a model whose weights were folded before (ε = 0),
 * as loading a PTQ checkpoint needs. */
void nb_quant_mark_folded(nb_model *m);

#endif /* NB_QUANT_H */
