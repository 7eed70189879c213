/* Internals shared by the runner's files (train.c, run_setup.c, the CLI
 * commands that build runs). */
#ifndef NB_RUN_INTERNAL_H
#define NB_RUN_INTERNAL_H

#include "nibble.h"

/* One split of the config's data; with data.train_count / test_count set
 * (files), only the first that many examples, in memory. Owned. */
nb_status nb_run_open_split(const nb_config *c, const char *split, nb_dataset **out);
/* A loader over ds (borrowed) with the config's augmentation when train. */
nb_status nb_run_loader(const nb_config *c, nb_dataset *ds, int train, int batch, nb_loader **out);
/* The optimizer with the config's settings and parameter groups ("decay",
 * and "no_decay" for biases and batchnorm parameters unless
 * train.optimizer.no_decay_bn_bias is false) over m's parameters. Owned;
 * NULL with a message. */
nb_optimizer *nb_run_optimizer(const nb_config *c, nb_model *m);
/* Calibrate m's quantizers (no-op for an FP32 model): forward
 * quant.calibration.batches batches of quant.calibration.batch_size shuffled,
 * un-augmented training images in NB_PASS_CALIBRATE without gradients,
 * with a progress bar on `progress`, then nb_quant_calibrate_finish. */
nb_status nb_run_calibrate(const nb_config *c, nb_model *m, nb_dataset *train, nb_tape *tape, FILE *progress);
/* The config's schedule in optimizer steps. */
nb_status nb_run_schedule(const nb_config *c, long steps_per_epoch, nb_schedule *s);

/* run_dir.c: mkdir -p (NB_STATUS_IO naming the path; also when it exists
 * but is not a directory). */
nb_status nb_run_mkdirs(const char *path);
/* Write text to path through PATH.tmp-PID and a rename (NB_STATUS_IO). */
nb_status nb_run_write_text(const char *path, const char *text);
/* run_dir.c: remove the temporary files ("NAME.tmp-PID") of writes that a
 * kill stopped, from dir (those of live processes stay); returns how many. */
int nb_run_remove_stale_tmp(const char *dir);
/* Write best.h5 from last.h5 (meta: last.h5's) when the run stopped between
 * the last.h5 and best.h5 writes of its best epoch; NB_OK when nothing was
 * due. */
nb_status nb_run_repair_best(const char *last, const char *best, const nb_ckpt_meta *meta);
/* NB_STATUS_BAD_INPUT naming last when meta's position does not fit an
 * epoch of steps_per_epoch steps. */
nb_status nb_run_check_position(const char *last, const nb_ckpt_meta *meta, long steps_per_epoch);

#endif
