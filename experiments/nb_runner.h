/*
 * nb_runner.h — running a model over data: evaluation now, the training
 * loop as the runner lands.
 *
 * Example:
 *     nb_eval_result r;
 *     nb_evaluate(model, loader, tape, &r);   // loader without augmentation
 *     printf("top-1 %.2f%%\n", 100 * r.top1);
 */
#ifndef NB_RUNNER_H
#define NB_RUNNER_H

#include "nb_datasets.h"
#include "nb_layers.h"

typedef struct {
    double top1, top5; /* fractions in [0, 1] */
    double loss;       /* mean cross-entropy (no label smoothing) */
    long n;            /* examples seen */
} nb_eval_result;

/* Count, for logits (N, K) and labels (N), the examples whose label is the
 * arg-max (*top1) and among the 5 largest logits (*top5; all of them when
 * K <= 5). Ties count against the label: a logit equal to the label's and
 * earlier in the row ranks above it. */
void nb_topk_correct(const nb_tensor *logits, const int32_t *labels, long *top1, long *top5);

/* One pass of the loader's current epoch in eval mode without gradients
 * (the model's train flag is restored). The tape is reset after each batch.
 * Errors from the loader are returned with its message. */
nb_status nb_evaluate(nb_model *m, nb_loader *l, nb_tape *tape, nb_eval_result *out);

#endif
