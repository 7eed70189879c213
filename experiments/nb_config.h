/*
 * nb_config.h — experiment configs: one JSON file describes a run.
 *
 * The file is parsed once (cJSON, in experiments/config.c; a quant.bitmap
 * file in experiments/alloc_files.c) into the
 * typed nb_config below and validated against a schema that lives in code:
 * unknown keys, wrong types and out-of-range values are NB_STATUS_BAD_INPUT
 * errors whose message names the file and the key path, with a "did you
 * mean" for misspelt keys, e.g.
 *     cfg.json: train.optimizer.lr: expected a number > 0, got "0.1"
 *     cfg.json: train.optimiser: unknown key (did you mean "optimizer"?)
 * "extends": "base.json" (relative to the including file) merges a base
 * config first (objects merge key by key, everything else replaces);
 * overrides "a.b.c=value" (value parsed as JSON, else taken as a string)
 * apply last. The effective config (every key, defaults filled in) can be
 * written back as JSON.
 *
 * Example:
 *     nb_config c;
 *     const char *sets[] = {"train.epochs=5"};
 *     if (nb_config_load("experiments/quickstart.json", sets, 1, &c) != NB_OK)
 *         fprintf(stderr, "%s\n", nb_last_error());
 *     char *json = nb_config_to_json(&c);     // nb_malloc'ed
 *     nb_free(json);
 *
 * Keys (defaults in brackets; see docs/configs.md):
 *   name [file name without .json], seed [0], threads [0 = all cores]
 *   data:  path ("FILE.h5" | "synthetic:shapes10"; required),
 *          train_count, test_count [0 = all / synthetic default],
 *          augment {pad [4], flip [true], rrc [false]} | false,
 *          size [0 = native], stream [false], mem_cap_mb [0 = 4096],
 *          prefetch [1]
 *   model: arch (required), num_classes [0 = from the data], shortcut ["A"],
 *          stem ["auto" | "imagenet" | "cifar"], width [16],
 *          bn_momentum [0.1], bn_eps [1e-5]
 *   init:  checkpoint [""], strict [true]
 *   train: epochs (required), batch_size [128], label_smoothing [0],
 *          grad_clip [0 = off], log_every [50], eval_every [1],
 *          freeze_bn_epochs [0] (batchnorm uses its running statistics, frozen,
 *          in the last N epochs),
 *          optimizer {name ["sgd" | "adamw"], lr (required), momentum [0.9],
 *                     nesterov [false], dampening [0], weight_decay [0],
 *                     betas [[0.9, 0.999]], eps [1e-8],
 *                     no_decay_bn_bias [true]},
 *          schedule {name ["constant" | "step" | "multistep" | "cosine" |
 *                     "onecycle"], warmup_epochs [0], warmup_start_factor
 *                     [0.01], min_lr [0], step_size [30], gamma [0.1],
 *                     milestones [[]], pct_start [0.3], div_factor [25],
 *                     final_div_factor [1e4]},
 *          distill {teacher [""], temperature [4], weight [0.5]}
 *   quant: weights {method ["none" | "uniform" | "binary" | "ternary" | "lsq"], bits [8],
 *                   granularity ["channel" | "tensor" | "group"], group_size [64],
 *                   symmetric [true], narrow [false], observer ["minmax" | "ema" |
 *                   "percentile" | "mse" | "kl"], recompute [true]},
 *          activations {method ["none" | "uniform" | "lsq" | "lsq+" | "pact"], bits [8],
 *                   symmetric [true],
 *                   observer ["minmax"]},
 *          first_layer_bits [8], last_layer_bits [8] (0 = as the rest),
 *          layers {"NAME or GLOB": {weight_bits, act_bits, weight_method,
 *                   act_method, weight_granularity, group_size}},
 *          bitmap [""] (a nibble-bitmap-1 file from `nibble allocate`, relative to
                   the working directory like init.checkpoint; the effective config
                   holds it resolved, {"file": PATH, "layers": {"NAME": BITS}}),
          calibration {batches [32], batch_size [128], percentile [99.99],
 *                   ema_momentum [0.9], mse_grid [100], kl_bins [2048]},
 *          fold_bn [false] (set by nibble ptq in the checkpoints it writes),
 *          lr_scale [1] (lr multiplier of the learned quantizer parameters),
 *          lsq {grad_scale ["example" | "batch" | "none"], min_step [1e-8]}
 *   output: dir ["runs/<name>"], steps_every [0 = log_every]
 */
#ifndef NB_CONFIG_H
#define NB_CONFIG_H

#include "nb_core.h"
#include "nb_optim.h"
#include "nb_quant.h"

#define NB_CFG_PATH_MAX 1024

typedef struct {
    char path[NB_CFG_PATH_MAX]; /* a file or "synthetic:NAME" */
    long train_count, test_count; /* 0 = all (files) / default (synthetic) */
    int augment;                /* 0 when "augment": false */
    int pad, flip, rrc;
    int size;                   /* output H = W, 0 = native */
    int stream;
    long mem_cap_mb;            /* 0 = default */
    int prefetch;
} nb_data_config;

typedef struct {
    char arch[32];
    int num_classes;            /* 0 = the data's */
    char shortcut;              /* 'A' | 'B' */
    char stem[16];              /* "auto" | "imagenet" | "cifar" */
    int width;
    float bn_momentum, bn_eps;
} nb_model_config;

typedef struct {
    char checkpoint[NB_CFG_PATH_MAX]; /* "" = none */
    int strict;
} nb_init_config;

typedef struct {
    char name[16];              /* "sgd" | "adamw" */
    float lr, momentum, dampening, weight_decay, beta1, beta2, eps;
    int nesterov;
    int no_decay_bn_bias;
} nb_optimizer_config;

typedef struct {
    char name[16];              /* nb_schedule_kind_name() values */
    double warmup_epochs;       /* may be fractional */
    float warmup_start_factor, min_lr, gamma;
    double step_size;           /* epochs */
    double milestones[NB_SCHED_MAX_MILESTONES]; /* epochs, increasing */
    int n_milestones;
    float pct_start, div_factor, final_div_factor;
} nb_schedule_config;

typedef struct {
    char teacher[NB_CFG_PATH_MAX]; /* "" = no distillation */
    float temperature, weight;
} nb_distill_config;

typedef struct {
    int epochs, batch_size;
    int freeze_bn_epochs;       /* batchnorm statistics frozen (running ones used) for the last N epochs */
    float label_smoothing, grad_clip;
    int log_every, eval_every;
    nb_optimizer_config optimizer;
    nb_schedule_config schedule;
    nb_distill_config distill;
} nb_train_config;

typedef struct {
    char dir[NB_CFG_PATH_MAX];
    int steps_every;
} nb_output_config;

/* nibble sensitivity (docs/quantization.md, "Mixed precision"). */
typedef struct {
    char metric[16];            /* "hessian" | "fisher" | "loss_delta" */
    int batches, batch_size;    /* training images (shuffled, not augmented) the metrics average over */
    int samples;                /* hessian: Hutchinson samples */
    float fd_eps;               /* hessian: finite-difference step relative to each layer's rms weight */
} nb_sensitivity_config;

/* quant.bitmap: per-layer weight bits from `nibble allocate`. At load they
 * become exact-name rules {"weight_bits": b} placed before quant.layers'
 * own rules (which therefore still override them). */
typedef struct {
    char path[NB_CFG_PATH_MAX]; /* the bitmap file, as given ("" = none) */
    int n_rules;                /* the first n_rules of quant.rules are its layers */
} nb_bitmap_config;

typedef struct {
    char name[128];
    char source[NB_CFG_PATH_MAX]; /* the file it was loaded from ("" if none) */
    uint64_t seed;
    int threads;
    nb_data_config data;
    nb_model_config model;
    nb_init_config init;
    nb_train_config train;
    nb_quant_policy quant;      /* methods "none": an FP32 run */
    nb_bitmap_config bitmap;    /* quant.bitmap */
    nb_output_config output;
    nb_sensitivity_config sensitivity;
} nb_config;

/* Defaults for every key (data.path, model.arch, train.epochs and
 * train.optimizer.lr are left empty/0: a config must set them). */
void nb_config_defaults(nb_config *c);

/* Load path (following "extends"), apply the n overrides "key.path=value"
 * and validate. NB_STATUS_IO when a file cannot be read, NB_STATUS_BAD_INPUT
 * for anything wrong in it (message: "FILE: KEY.PATH: what"; overrides are
 * named "--set KEY.PATH"). *out is written only on success. */
nb_status nb_config_load(const char *path, const char *const *overrides, int n, nb_config *out);
/* The same from a JSON string (name: what messages call it, e.g. a
 * checkpoint's path; "extends" is resolved relative to the working dir). */
nb_status nb_config_parse(const char *json, const char *name, const char *const *overrides,
                          int n, nb_config *out);

/* The effective config as pretty-printed JSON (every key), nb_malloc'ed;
 * NULL on OOM. nb_config_parse(nb_config_to_json(c)) gives c back. */
char *nb_config_to_json(const nb_config *c);

#endif
