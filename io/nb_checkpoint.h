/*
 * nb_checkpoint.h — checkpoints: one HDF5 file holds everything needed to
 * resume, evaluate or export a run.
 *
 * Layout (see ../shared/docs/ARCHITECTURE.md):
 *   /model/<state_dict name>   float32, PyTorch's name and shape for every
 *                              parameter and buffer (num_batches_tracked is
 *                              a scalar; "layer1.0.conv1.weight" (16,16,3,3))
 *   /optim/<state name>        float32 (numel) per kind of optimizer state
 *                              ("momentum_buffer", "exp_avg", "exp_avg_sq"),
 *                              flat in the optimizer's segment order; the
 *                              group has attributes kind ("sgd"|"adamw"),
 *                              steps (int64) and layout (the segments,
 *                              nb_optimizer_layout, checked on load)
 *   /quant/<name>              float32, the entries of the model's quant ext (quantizer
 *                              state: "layer1.0.conv1.weight/scale", ".../zero_point",
 *                              ".../qrange", ".../ready"; see quant/nb_quant.h)
 *   root attributes            nb_format = "nibble-checkpoint", nb_version
 *                              (int32, 1), arch, epoch, step, step_in_epoch,
 *                              rng_state/rng_inc (uint64), the effective
 *                              config (JSON string) and the running metrics
 *                              of an unfinished epoch
 * Writes go to PATH.tmp-<pid>, which is renamed over PATH only when the file
 * is complete, so a crash never leaves a broken checkpoint behind.
 *
 * Example:
 *     nb_ckpt_meta meta = {.epoch = 3, .step = 1170, .config_json = json};
 *     if (nb_checkpoint_save("runs/x/last.h5", model, opt, &meta) != NB_OK)
 *         fprintf(stderr, "%s\n", nb_last_error());
 */
#ifndef NB_CHECKPOINT_H
#define NB_CHECKPOINT_H

#include "nb_layers.h"
#include "nb_optim.h"

#define NB_CKPT_FORMAT "nibble-checkpoint"
#define NB_CKPT_VERSION 1

typedef struct {
    int epoch;             /* epochs completed */
    long step;             /* optimizer steps completed */
    long step_in_epoch;    /* steps of epoch `epoch` already done (0 at a boundary) */
    nb_rng rng;            /* the run's generator */
    double best_top1;      /* best test top-1 so far (fraction), -1 if none */
    /* running sums of the unfinished epoch (0 at a boundary) */
    double train_loss_sum; /* sum of per-batch mean loss x batch size */
    long train_correct, train_seen;
    double train_seconds;
    const char *config_json; /* save: borrowed; load: nb_malloc'ed (caller frees), may be NULL */
} nb_ckpt_meta;

/* Write model (every entry under /model/), opt (may be NULL: no /optim/)
 * and meta to path atomically (temp file + rename). NB_STATUS_IO with the
 * path and HDF5's reason on failure; an existing file at path is left as it
 * was. */
nb_status nb_checkpoint_save(const char *path, const nb_model *m, nb_optimizer *opt,
                             const nb_ckpt_meta *meta);

/* Read /model/ into m: every entry of m must be present with its shape
 * (NB_STATUS_BAD_INPUT names the file, the tensor and both shapes); with
 * strict, tensors in the file that m lacks are errors too. Checks nb_format
 * and nb_version. m is unchanged on error. */
nb_status nb_checkpoint_load_model(const char *path, nb_model *m, int strict);

/* Read /quant/ into m's quant ext: every entry present with its shape and
 * nothing else under /quant/; then the ext's after_load validates it. A
 * file without /quant/ for a quantized model, or with /quant/ for an FP32
 * one, is NB_STATUS_BAD_INPUT with a hint. m is unchanged on error. */
nb_status nb_checkpoint_load_quant(const char *path, nb_model *m);

/* Read /optim/ into opt (kind and numel must match) and the root
 * attributes into meta (meta->config_json allocated). Either may be NULL. */
nb_status nb_checkpoint_load_state(const char *path, nb_optimizer *opt, nb_ckpt_meta *meta);

/* The effective config JSON stored in a checkpoint (nb_malloc'ed, caller
 * frees), and its architecture name into arch (n bytes). */
nb_status nb_checkpoint_read_config(const char *path, char **json, char *arch, size_t n);

/* One /model/ (or other) tensor's listing, for `nibble inspect`. */
typedef struct {
    char name[128];    /* path below the root, e.g. "model/layer1.0.conv1.weight" */
    int ndim;
    long shape[NB_MAX_DIMS];
    char dtype[16];    /* "float32", "int64", ... */
} nb_ckpt_tensor;

/* List every dataset in the file (depth-first, sorted by name) into *out
 * (nb_malloc'ed array, caller frees) and *n. */
nb_status nb_checkpoint_list(const char *path, nb_ckpt_tensor **out, int *n);

#endif
