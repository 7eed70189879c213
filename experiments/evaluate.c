/* Evaluation: top-1/top-5 accuracy and mean loss over a loader's epoch. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
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

/* The dump files of nb_evaluate_int, opened (all NULL without a dump). */
typedef struct {
    FILE *f[4]; /* images, labels, logits_int, logits_fake */
    const char *dir;
} dump_files;

static nb_status dump_open(dump_files *d, const char *dir, int with_ref) {
    static const char *const names[4] = {"images.f32", "labels.i32", "logits_int.f32", "logits_fake.f32"};
    memset(d, 0, sizeof *d);
    d->dir = dir;
    for (int i = 0; dir && i < 4 - !with_ref; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (!(d->f[i] = fopen(path, "wb")))
            return nb_set_error(NB_STATUS_IO, "--dump: cannot create %s: %s", path, strerror(errno));
    }
    return NB_OK;
}

static nb_status dump_write(dump_files *d, int i, const void *p, size_t size, size_t n) {
    if (d->f[i] && fwrite(p, size, n, d->f[i]) != n)
        return nb_set_error(NB_STATUS_IO, "--dump: cannot write in %s: %s", d->dir, strerror(errno));
    return NB_OK;
}

static nb_status dump_close(dump_files *d, nb_status st) {
    for (int i = 0; i < 4; i++)
        if (d->f[i] && fclose(d->f[i]) != 0 && st == NB_OK)
            st = nb_set_error(NB_STATUS_IO, "--dump: cannot write in %s: %s", d->dir, strerror(errno));
    return st;
}

nb_status nb_evaluate_int(struct nb_int_engine *e, int classes, nb_model *ref, nb_loader *l, nb_tape *tape,
                          const char *dump_dir, nb_eval_result *out, nb_eval_result *ref_out, nb_eval_compare *cmp) {
    long c[4] = {0, 0, 0, 0};
    double loss[2] = {0.0, 0.0};
    nb_eval_result r[2];
    memset(r, 0, sizeof r);
    nb_eval_compare k = {0};
    const int H = nb_loader_out_h(l), W = nb_loader_out_w(l);
    float *buf = NULL;
    int cap = 0;
    dump_files d;
    nb_status st = dump_open(&d, dump_dir, ref != NULL);
    if (ref) {
        nb_tape_set_grad(tape, 0);
        nb_model_train(ref, 0);
    }
    const int CC = nb_loader_out_c(l);
    for (; st == NB_OK;) {
        const float *images;
        const int32_t *labels;
        int n;
        st = nb_loader_next(l, &images, &labels, &n);
        if (st != NB_OK || n == 0) break;
        const size_t npix = (size_t)n * (size_t)CC * (size_t)H * (size_t)W;
        if ((st = dump_write(&d, 0, images, sizeof(float), npix)) != NB_OK ||
            (st = dump_write(&d, 1, labels, sizeof(int32_t), (size_t)n)) != NB_OK)
            break;
        if (n > cap) {
            float *nb = nb_realloc(buf, (size_t)n * (size_t)classes * sizeof(float));
            if (!nb) {
                st = nb_set_error(NB_STATUS_OOM, "integer evaluation: out of memory for %d logits", n * classes);
                break;
            }
            buf = nb;
            cap = n;
        }
        if ((st = nb_int_engine_forward(e, images, n, buf)) != NB_OK ||
            (st = dump_write(&d, 2, buf, sizeof(float), (size_t)n * (size_t)classes)) != NB_OK)
            break;
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
            nb_tensor_wrap(&x, (float *)images, 4, (int[]){n, CC, H, W});
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
                    const double diff = fabs((double)a[j] - (double)b[j]);
                    k.max_abs_diff = diff > k.max_abs_diff ? diff : k.max_abs_diff;
                }
            }
            r[1].n += n;
            k.n += n;
            st = dump_write(&d, 3, y->data, sizeof(float), (size_t)n * (size_t)classes);
            nb_tape_reset(tape);
        }
    }
    nb_free(buf);
    st = dump_close(&d, st);
    finish(&r[0], (double)c[0], (double)c[1], loss[0]);
    finish(&r[1], (double)c[2], (double)c[3], loss[1]);
    *out = r[0];
    if (ref_out) *ref_out = r[1];
    if (cmp) *cmp = k;
    return st;
}
