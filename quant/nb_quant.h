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

#endif /* NB_QUANT_H */
