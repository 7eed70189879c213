/*
 * nb_optim.h — optimizers, parameter groups, learning-rate schedules and
 * gradient clipping over flat parameter arrays.
 *
 * A model keeps its parameters and gradients in contiguous blocks; an
 * optimizer is given ranges of such blocks ("segments"), each in a
 * parameter group with its own lr multiplier and weight decay (by default
 * biases, batchnorm parameters and quantizer parameters get no decay). The
 * optimizer owns its state (momentum, Adam moments) in one contiguous block
 * per kind of state, in segment order, so a checkpoint saves it as a few
 * flat arrays and a later all-reduce can treat gradients the same way.
 *
 * Example:
 *     nb_optim_opts o = nb_optim_opts_default();     // SGD, momentum 0.9
 *     o.weight_decay = 5e-4f;
 *     nb_optimizer *opt = nb_optimizer_new(&o);
 *     int g_decay = nb_optimizer_add_group(opt, "decay", 1.0f, o.weight_decay);
 *     int g_plain = nb_optimizer_add_group(opt, "no_decay", 1.0f, 0.0f);
 *     nb_optimizer_add_segment(opt, g_decay, w, dw, n_w);
 *     nb_optimizer_add_segment(opt, g_plain, b, db, n_b);
 *     nb_schedule s = nb_schedule_default();          // constant
 *     ... each step: nb_optimizer_step(opt, nb_schedule_lr(&s, step));
 *     nb_optimizer_free(opt);
 */
#ifndef NB_OPTIM_H
#define NB_OPTIM_H

#include <stddef.h>

#include "nb_core.h"

/* ------------------------------------------------------------ raw updates */

typedef struct {
    float momentum;   /* default 0.9 */
    float dampening;  /* default 0 */
    int nesterov;     /* default 0 */
} nb_sgd_opts;

nb_sgd_opts nb_sgd_opts_default(void);

/* PyTorch's SGD on n elements: g' = g + wd p; buf = g' on the first step,
 * else momentum buf + (1 - dampening) g'; step = nesterov ? g' + momentum
 * buf : buf; p -= lr step. buf (n floats) is the caller's momentum state.
 * Threaded for large n; p, g and buf must not overlap. */
void nb_sgd_update(const nb_sgd_opts *o, float lr, float wd, float *restrict p, const float *restrict g,
                   float *restrict buf, size_t n, int first_step);

/* PyTorch's AdamW on n elements at step t >= 1 (1 on the first update):
 * p -= lr wd p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 * p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
 * m, v (n floats) are the caller's state, zero before the first step. */
void nb_adamw_update(float lr, float wd, float beta1, float beta2, float eps, float *restrict p,
                     const float *restrict g, float *restrict m, float *restrict v, size_t n, long t);

/* ------------------------------------------------------------- optimizer */

typedef enum {
    NB_OPTIM_SGD = 0,
    NB_OPTIM_ADAMW,
    NB_OPTIM_COUNT
} nb_optim_kind;

typedef struct {
    nb_optim_kind kind;   /* default SGD */
    float momentum;       /* SGD, default 0.9 (0 = plain SGD, no state) */
    float dampening;      /* SGD, default 0 */
    int nesterov;         /* SGD, default 0 */
    float beta1, beta2;   /* AdamW, default 0.9, 0.999 */
    float eps;            /* AdamW, default 1e-8 */
    float weight_decay;   /* default for groups, default 0 */
} nb_optim_opts;

nb_optim_opts nb_optim_opts_default(void);
/* "sgd", "adamw"; NULL for an out-of-range kind. */
const char *nb_optim_kind_name(nb_optim_kind k);

typedef struct nb_optimizer nb_optimizer;

/* A new optimizer with no groups; owned, free with nb_optimizer_free. NULL
 * with a message on OOM or bad options (NB_STATUS_BAD_INPUT names the
 * option, e.g. "optimizer: momentum must be in [0, 1), got 1.5"). */
nb_optimizer *nb_optimizer_new(const nb_optim_opts *o);
void nb_optimizer_free(nb_optimizer *opt);

/* A parameter group: lr = schedule lr * lr_mult, its own weight decay.
 * Returns the group id (>= 0), or -1 with a message on OOM. name is copied
 * (e.g. "decay", "no_decay", "quant"). */
int nb_optimizer_add_group(nb_optimizer *opt, const char *name, float lr_mult, float weight_decay);
/* Add n parameters p with gradients g (borrowed: must outlive the
 * optimizer) to group `group`. The state grows by n floats per kind of
 * state. Segments must be added before the first step. */
nb_status nb_optimizer_add_segment(nb_optimizer *opt, int group, float *p, const float *g,
                                   size_t n);

/* The same, with a name saying what the segment holds (e.g. its first
 * parameter, "conv1.weight"; at most 95 bytes kept). Checkpoints store the
 * names with the state, so a changed model or quantization policy can never
 * silently load momentum into the wrong parameters. */
nb_status nb_optimizer_add_named_segment(nb_optimizer *opt, int group, const char *name, float *p,
                                         const float *g, size_t n);
/* "GROUP NAME NUMEL" per segment, one a line, in order (nb_malloc'ed,
 * caller frees; NULL on OOM). */
char *nb_optimizer_layout(const nb_optimizer *opt);

/* One update of every segment with base learning rate lr. */
void nb_optimizer_step(nb_optimizer *opt, float lr);

/* L2 norm of all segments' gradients (summed in double). With max_norm > 0
 * and norm > max_norm, scales every gradient by max_norm / (norm + 1e-6)
 * (PyTorch's clip_grad_norm_). Returns the norm before clipping (NaN/Inf
 * when a gradient is not finite; nothing is scaled then). The gradients are
 * written through the segments' g pointers (they are the model's). */
double nb_optimizer_clip_grad_norm(nb_optimizer *opt, float max_norm);

size_t nb_optimizer_numel(const nb_optimizer *opt);  /* parameters in all segments */
int nb_optimizer_n_groups(const nb_optimizer *opt);
const char *nb_optimizer_group_name(const nb_optimizer *opt, int group);
size_t nb_optimizer_group_numel(const nb_optimizer *opt, int group);
/* Set a group's lr multiplier / weight decay (e.g. from config). */
void nb_optimizer_set_group(nb_optimizer *opt, int group, float lr_mult, float weight_decay);

/* State for checkpoints: n_state kinds (SGD with momentum: 1 "momentum_buffer";
 * AdamW: 2 "exp_avg", "exp_avg_sq"; plain SGD: 0), each one contiguous
 * array of nb_optimizer_numel() floats in segment order. The pointer is
 * owned by the optimizer; write into it to restore. */
int nb_optimizer_n_state(const nb_optimizer *opt);
const char *nb_optimizer_state_name(const nb_optimizer *opt, int k);
float *nb_optimizer_state(nb_optimizer *opt, int k);
/* Updates done so far (AdamW's t; SGD's "first step" is steps == 0).
 * set_steps restores it from a checkpoint. */
long nb_optimizer_steps(const nb_optimizer *opt);
void nb_optimizer_set_steps(nb_optimizer *opt, long steps);
nb_optim_kind nb_optimizer_kind(const nb_optimizer *opt);

/* -------------------------------------------------------------- schedules */

typedef enum {
    NB_SCHED_CONSTANT = 0,
    NB_SCHED_STEP,       /* lr * gamma^floor(t / step_size) */
    NB_SCHED_MULTISTEP,  /* lr * gamma^(number of milestones <= t) */
    NB_SCHED_COSINE,     /* min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2 */
    NB_SCHED_ONECYCLE,   /* PyTorch OneCycleLR, cosine annealing, two phases */
    NB_SCHED_COUNT
} nb_schedule_kind;

#define NB_SCHED_MAX_MILESTONES 16

/* All times are in optimizer steps (the runner converts epochs to steps).
 * Warmup (any kind but onecycle): for t < warmup_steps the lr rises
 * linearly from warmup_start_factor * lr (t = 0) towards lr (t =
 * warmup_steps), then the schedule runs on t' = t - warmup_steps over
 * total_steps - warmup_steps (step/multistep times count from the start,
 * t, as in a chained PyTorch scheduler). */
typedef struct {
    nb_schedule_kind kind;  /* default constant */
    float lr;               /* base (peak) learning rate, default 0.1 */
    long total_steps;       /* cosine/onecycle length (> 0 for those) */
    long warmup_steps;      /* default 0 */
    float warmup_start_factor; /* default 0.01 */
    float min_lr;           /* cosine floor (eta_min), default 0 */
    long step_size;         /* step: period in steps */
    float gamma;            /* step/multistep factor, default 0.1 */
    long milestones[NB_SCHED_MAX_MILESTONES]; /* multistep, increasing */
    int n_milestones;
    float pct_start;        /* onecycle: fraction rising, default 0.3 */
    float div_factor;       /* onecycle: initial lr = lr / div_factor, default 25 */
    float final_div_factor; /* onecycle: final lr = initial / this, default 1e4 */
} nb_schedule;

nb_schedule nb_schedule_default(void);
/* "constant", "step", "multistep", "cosine", "onecycle"; NULL if out of range. */
const char *nb_schedule_kind_name(nb_schedule_kind k);
/* Check fields for the kind: NB_STATUS_BAD_INPUT with a message naming the
 * field ("schedule: total_steps must be > 0 for cosine"). */
nb_status nb_schedule_check(const nb_schedule *s);
/* The learning rate for step t (0-based: the lr used by update number t + 1).
 * Past total_steps cosine stays at min_lr and onecycle at its final lr. */
float nb_schedule_lr(const nb_schedule *s, long t);

#endif
