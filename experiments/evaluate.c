/* Evaluation: top-1/top-5 accuracy and mean loss over a loader's epoch. */
#include <math.h>

#include "nb_runner.h"

/* 1 when every logit of the row is finite. */
static int row_finite(const float *z, int K) {
    for (int k = 0; k < K; k++)
        if (!isfinite(z[k])) return 0;
    return 1;
}

long nb_nonfinite_rows(const nb_tensor *logits) {
    const int N = logits->shape[0], K = logits->shape[1];
    long bad = 0;
    for (int n = 0; n < N; n++) bad += !row_finite(logits->data + (size_t)n * K, K);
    return bad;
}

void nb_topk_correct(const nb_tensor *logits, const int32_t *labels, long *top1, long *top5) {
    const int N = logits->shape[0], K = logits->shape[1];
    long c1 = 0, c5 = 0;
    for (int n = 0; n < N; n++) {
        const float *z = logits->data + (size_t)n * K;
        if (!row_finite(z, K)) continue; /* every comparison with NaN is false */
        const float zl = z[labels[n]];
        int above = 0; /* logits ranked above the label's */
        for (int k = 0; k < K; k++)
            if (z[k] > zl || (z[k] == zl && k < labels[n])) above++;
        c1 += above == 0;
        c5 += above < 5;
    }
    *top1 += c1;
    *top5 += c5;
}

/* One batch's forward and loss, as a protected call of the tape. */
typedef struct {
    nb_model *m;
    nb_tape *tape;
    nb_tensor *x;
    const int32_t *labels;
    long *c1, *c5, *bad;
    double *loss_sum;
} batch_args;

static nb_status batch_fn(void *user) {
    batch_args *a = user;
    nb_tensor *logits = nb_model_forward(a->m, a->tape, a->x);
    nb_tensor *loss = nb_cross_entropy(a->tape, logits, a->labels, 0.0f);
    *a->loss_sum += (double)loss->data[0] * a->x->shape[0];
    nb_topk_correct(logits, a->labels, a->c1, a->c5);
    *a->bad += nb_nonfinite_rows(logits);
    return NB_OK;
}

nb_status nb_evaluate(nb_model *m, nb_loader *l, nb_tape *tape, nb_eval_result *out) {
    const nb_pass was = m->pass;
    const int had_grad = nb_tape_set_grad(tape, 0);
    nb_model_train(m, 0);
    long n_total = 0, c1 = 0, c5 = 0, bad = 0;
    double loss_sum = 0.0;
    nb_status st = NB_OK;
    const int C = m->opts.in_channels, H = nb_loader_out_h(l), W = nb_loader_out_w(l);
    for (;;) {
        const float *images;
        const int32_t *labels;
        int n;
        st = nb_loader_next(l, &images, &labels, &n);
        if (st != NB_OK || n == 0) break;
        nb_tensor x;
        nb_tensor_wrap(&x, (float *)images, 4, (int[]){n, C, H, W});
        batch_args a = {m, tape, &x, labels, &c1, &c5, &bad, &loss_sum};
        if ((st = nb_tape_protect(tape, batch_fn, &a)) != NB_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", nb_last_error());
            st = nb_set_error(st, "evaluation of a batch of %d images: %s. HINT: a smaller batch or "
                              "fewer threads (now %d), or free memory", n, msg, nb_get_threads());
            break;
        }
        n_total += n;
        nb_tape_reset(tape);
    }
    nb_model_set_pass(m, was);
    nb_tape_set_grad(tape, had_grad);
    out->n = n_total;
    out->nonfinite = bad;
    out->top1 = n_total ? (double)c1 / (double)n_total : 0.0;
    out->top5 = n_total ? (double)c5 / (double)n_total : 0.0;
    out->loss = n_total ? loss_sum / (double)n_total : 0.0;
    return st;
}
