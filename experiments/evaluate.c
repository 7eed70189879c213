/* Evaluation: top-1/top-5 accuracy and mean loss over a loader's epoch. */
#include <math.h>
#include <string.h>

#include "nb_export.h"
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

/* Cross-entropy of one row (log-sum-exp in double). */
static double row_ce(const float *z, int K, int label) {
    double mx = (double)z[0], sum = 0.0;
    for (int k = 1; k < K; k++) mx = (double)z[k] > mx ? (double)z[k] : mx;
    for (int k = 0; k < K; k++) sum += exp((double)z[k] - mx);
    return log(sum) + mx - (double)z[label];
}

static int row_argmax(const float *z, int K) {
    int b = 0;
    for (int k = 1; k < K; k++)
        if (z[k] > z[b]) b = k;
    return b;
}

static void finish(nb_eval_result *r, double c1, double c5, double loss) {
    r->top1 = r->n ? c1 / (double)r->n : 0.0;
    r->top5 = r->n ? c5 / (double)r->n : 0.0;
    r->loss = r->n ? loss / (double)r->n : 0.0;
}

nb_status nb_evaluate_int(struct nb_int_engine *e, int classes, nb_model *ref, nb_loader *l, nb_tape *tape,
                          nb_eval_result *out, nb_eval_result *ref_out, nb_eval_compare *cmp) {
    long c[4] = {0, 0, 0, 0};
    double loss[2] = {0.0, 0.0};
    nb_eval_result r[2];
    memset(r, 0, sizeof r);
    nb_eval_compare k = {0};
    const int C = ref ? ref->opts.in_channels : 0, H = nb_loader_out_h(l), W = nb_loader_out_w(l);
    float *buf = NULL;
    int cap = 0;
    nb_status st = NB_OK;
    if (ref) {
        nb_tape_set_grad(tape, 0);
        nb_model_train(ref, 0);
    }
    for (;;) {
        const float *images;
        const int32_t *labels;
        int n;
        st = nb_loader_next(l, &images, &labels, &n);
        if (st != NB_OK || n == 0) break;
        if (n > cap) {
            float *nb = nb_realloc(buf, (size_t)n * (size_t)classes * sizeof(float));
            if (!nb) {
                st = nb_set_error(NB_STATUS_OOM, "integer evaluation: out of memory for %d logits", n * classes);
                break;
            }
            buf = nb;
            cap = n;
        }
        if ((st = nb_int_engine_forward(e, images, n, buf)) != NB_OK) break;
        nb_tensor z;
        nb_tensor_wrap(&z, buf, 2, (int[]){n, classes});
        long t1 = 0, t5 = 0;
        nb_topk_correct(&z, labels, &t1, &t5);
        c[0] += t1;
        c[1] += t5;
        r[0].nonfinite += nb_nonfinite_rows(&z);
        for (int i = 0; i < n; i++) loss[0] += row_ce(buf + (size_t)i * classes, classes, labels[i]);
        r[0].n += n;
        if (ref) {
            nb_tensor x;
            nb_tensor_wrap(&x, (float *)images, 4, (int[]){n, C, H, W});
            const nb_tensor *y = nb_model_forward(ref, tape, &x);
            t1 = t5 = 0;
            nb_topk_correct(y, labels, &t1, &t5);
            c[2] += t1;
            c[3] += t5;
            r[1].nonfinite += nb_nonfinite_rows(y);
            for (int i = 0; i < n; i++) {
                const float *a = buf + (size_t)i * classes, *b = y->data + (size_t)i * classes;
                loss[1] += row_ce(b, classes, labels[i]);
                k.top1_agree += row_argmax(a, classes) == row_argmax(b, classes);
                for (int j = 0; j < classes; j++) {
                    const double d = fabs((double)a[j] - (double)b[j]);
                    k.max_abs_diff = d > k.max_abs_diff ? d : k.max_abs_diff;
                }
            }
            r[1].n += n;
            k.n += n;
            nb_tape_reset(tape);
        }
    }
    nb_free(buf);
    finish(&r[0], (double)c[0], (double)c[1], loss[0]);
    finish(&r[1], (double)c[2], (double)c[3], loss[1]);
    *out = r[0];
    if (ref_out) *ref_out = r[1];
    if (cmp) *cmp = k;
    return st;
}
