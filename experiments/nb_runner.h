/*
 * nb_runner.h — running a model over data: evaluation and the training
 * loop of an experiment config.
 *
 * Example:
 *     nb_config c;
 *     nb_config_load("experiments/quickstart.json", NULL, 0, &c);
 *     nb_train_opts o = nb_train_opts_default();
 *     nb_train_result r;
 *     if (nb_train(&c, &o, &r) != NB_OK) fprintf(stderr, "%s\n", nb_last_error());
 *     printf("test top-1 %.2f%%\n", 100 * r.last.top1);
 */
#ifndef NB_RUNNER_H
#define NB_RUNNER_H

#include <signal.h>

#include "nb_checkpoint.h"
#include "nb_config.h"
#include "nb_datasets.h"
#include "nb_layers.h"

typedef struct {
    double top1, top5; /* fractions in [0, 1] */
    double loss;       /* mean cross-entropy (no label smoothing) */
    long n;            /* examples seen */
    long nonfinite;    /* examples with a NaN or Inf logit (counted as wrong;
                          the loss is then NaN or Inf too) */
} nb_eval_result;

/* Count, for logits (N, K) and labels (N), the examples whose label is the
 * arg-max (*top1) and among the 5 largest logits (*top5; all of them when
 * K <= 5). Ties count against the label: a logit equal to the label's and
 * earlier in the row ranks above it. A row with a NaN or Inf logit is
 * never correct. */
void nb_topk_correct(const nb_tensor *logits, const int32_t *labels, long *top1, long *top5);

/* Rows of logits (N, K) with at least one NaN or Inf. */
long nb_nonfinite_rows(const nb_tensor *logits);

/* One pass of the loader's current epoch in eval mode without gradients
 * (the model's train flag is restored). The tape is reset after each batch.
 * Errors from the loader are returned with its message. */
nb_status nb_evaluate(nb_model *m, nb_loader *l, nb_tape *tape, nb_eval_result *out);

/* The integer engine (quant/nb_export.h) against a reference model. */
typedef struct {
    double max_abs_diff;  /* largest |logit difference| over all images and classes */
    long top1_agree;      /* images whose arg-max is the same in both */
    long n;
} nb_eval_compare;

struct nb_int_engine;
/* One pass of the loader's current epoch through the integer engine e
 * (logits (N, classes), classes logits per image) into *out; with ref (may
 * be NULL) the same images through ref's evaluation forward too, into
 * *ref_out and *cmp. With dump_dir (may be NULL), raw little-endian files
 * there: images.f32 (the normalised inputs, N·C·H·W), labels.i32,
 * logits_int.f32 and, with ref, logits_fake.f32 (N·classes). */
nb_status nb_evaluate_int(struct nb_int_engine *e, int classes, nb_model *ref, nb_loader *l, nb_tape *tape,
                          const char *dump_dir, nb_eval_result *out, nb_eval_result *ref_out, nb_eval_compare *cmp);

/* ------------------------------------------------------------- training */

typedef struct {
    const char *resume_dir;  /* continue the run in this directory from its
                                last.h5 (NULL: a fresh run; an existing
                                last.h5 in output.dir is then an error) */
    volatile sig_atomic_t *stop; /* when it becomes non-zero (a signal), the
                                current step finishes, last.h5 is written
                                and nb_train returns NB_STATUS_INTERRUPTED */
    FILE *progress;          /* progress bar / log lines (default stderr) */
    long stop_after_steps;   /* test hook: behave as if *stop were set after
                                this many steps of this call (0 = never) */
} nb_train_opts;

nb_train_opts nb_train_opts_default(void);

typedef struct {
    int epochs_done;
    long steps_done;
    nb_eval_result last;     /* test metrics after the last epoch run */
    double best_top1;        /* best test top-1 of the run (-1: none) */
    double seconds;          /* wall time of this call */
    int complete;            /* resumed a run that had already done its
                                epochs: nothing was trained or evaluated */
    char run_dir[NB_CFG_PATH_MAX];
} nb_train_result;

/* Train per the config: data, model (optionally initialised from
 * init.checkpoint), optimizer and schedule, optional distillation from a
 * teacher checkpoint. Writes into output.dir: config.json, metrics.csv (a
 * row per epoch), steps.csv (a row every output.steps_every steps),
 * last.h5 after every epoch (and on interruption), best.h5 when test
 * top-1 improves. With opts->resume_dir, continues from its last.h5 exactly
 * where it stopped (same results, bit for bit, for the same thread count).
 * Errors: NB_STATUS_BAD_INPUT / NB_STATUS_IO (data, checkpoints, run dir),
 * NB_STATUS_NUMERIC for a NaN/Inf loss (names the step; last.h5 keeps the
 * last good state), NB_STATUS_INTERRUPTED after a stop request. */
nb_status nb_train(const nb_config *c, const nb_train_opts *opts, nb_train_result *out);

/* Build the model a config describes for data with C channels, H = W =
 * size pixels and `classes` classes (used when model.num_classes is 0).
 * Owned by the caller; NULL with a message on bad settings. */
nb_model *nb_config_build_model(const nb_config *c, int C, int size, int classes, nb_rng *rng);

/* Attach the config's quant policy to m (nothing when quant methods are
 * "none"; batchnorms marked folded when quant.fold_bn). Messages name the
 * config. */
nb_status nb_config_quantize_model(const nb_config *c, nb_model *m);

/* The effective config stored in a checkpoint, with n overrides
 * ("key.path=value") applied; messages name the checkpoint's path. */
nb_status nb_config_from_checkpoint(const char *path, const char *const *overrides, int n,
                                    nb_config *out);

/* The model of checkpoint ckpt for data with C channels and size x size
 * pixels: built from c, ckpt's config as nb_config_from_checkpoint returns
 * it (only model.* and seed are used, so the caller may change the rest),
 * with ckpt's weights loaded strictly and, for a quantized config, its
 * quantizers attached and their /quant/ state loaded (a quantized file for an
 * FP32 config, or the reverse, is an error). *out is owned. */
nb_status nb_model_from_config(const nb_config *c, const char *ckpt, int C, int size, nb_model **out);

#endif
