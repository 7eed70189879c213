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

/* Sums over an epoch of one model's logits. */
typedef struct {
    long c1, c5, bad, n;
    double loss; /* Σ per-batch mean loss × batch size */
} tally;

static void tally_add(tally *t, nb_tape *tape, nb_tensor *logits, const int32_t *labels) {
    const nb_tensor *loss = nb_cross_entropy(tape, logits, labels, 0.0f);
    t->loss += (double)loss->data[0] * logits->shape[0];
    nb_topk_correct(logits, labels, &t->c1, &t->c5);
    t->bad += nb_nonfinite_rows(logits);
    t->n += logits->shape[0];
}

static nb_eval_result tally_result(const tally *t) {
    const double n = t->n ? (double)t->n : 1.0;
    return (nb_eval_result){(double)t->c1 / n, (double)t->c5 / n, t->loss / n, t->n, t->bad};
}

static int row_argmax(const float *z, int K) {
    int b = 0;
    for (int k = 1; k < K; k++)
        if (z[k] > z[b]) b = k;
    return b;
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

/* One pass of an epoch: the model m and/or the integer engine e on every
 * batch, tallied apart, compared when both run. */
typedef struct {
    nb_model *m;             /* may be NULL */
    struct nb_int_engine *e; /* may be NULL */
    int classes;
    nb_tape *tape;
    dump_files dump;
    float *buf;              /* the engine's logits */
    int cap;
    /* this batch */
    nb_tensor *x;
    const int32_t *labels;
    /* the epoch */
    tally tm, te;
    nb_eval_compare cmp;
} pass;

static nb_status batch_fn(void *user) {
    pass *p = user;
    const int n = p->x->shape[0], K = p->classes;
    nb_status st;
    nb_tensor *ym = NULL, ye;
    if ((st = dump_write(&p->dump, 0, p->x->data, sizeof(float), p->x->numel)) != NB_OK ||
        (st = dump_write(&p->dump, 1, p->labels, sizeof(int32_t), (size_t)n)) != NB_OK)
        return st;
    if (p->m) {
        ym = nb_model_forward(p->m, p->tape, p->x);
        tally_add(&p->tm, p->tape, ym, p->labels);
        if ((st = dump_write(&p->dump, 3, ym->data, sizeof(float), ym->numel)) != NB_OK) return st;
    }
    if (!p->e) return NB_OK;
    if (n > p->cap) {
        float *b = nb_realloc(p->buf, (size_t)n * (size_t)K * sizeof(float));
        if (!b) return nb_set_error(NB_STATUS_OOM, "integer evaluation: out of memory for %d logits", n * K);
        p->buf = b;
        p->cap = n;
    }
    if ((st = nb_int_engine_forward(p->e, p->x->data, n, p->buf)) != NB_OK ||
        (st = dump_write(&p->dump, 2, p->buf, sizeof(float), (size_t)n * (size_t)K)) != NB_OK)
        return st;
    nb_tensor_wrap(&ye, p->buf, 2, (int[]){n, K});
    tally_add(&p->te, p->tape, &ye, p->labels);
    for (int i = 0; ym && i < n; i++) {
        const float *a = p->buf + (size_t)i * K, *b = ym->data + (size_t)i * K;
        p->cmp.top1_agree += row_argmax(a, K) == row_argmax(b, K);
        for (int j = 0; j < K; j++) p->cmp.max_abs_diff = fmax(p->cmp.max_abs_diff, fabs((double)a[j] - (double)b[j]));
    }
    if (ym) p->cmp.n += n;
    return NB_OK;
}

static nb_status run_pass(pass *p, nb_loader *l, const char *dump_dir) {
    const nb_pass was = p->m ? p->m->pass : NB_PASS_EVAL;
    const int had_grad = nb_tape_set_grad(p->tape, 0);
    if (p->m) nb_model_train(p->m, 0);
    const int C = nb_loader_out_c(l), H = nb_loader_out_h(l), W = nb_loader_out_w(l);
    nb_status st = dump_open(&p->dump, dump_dir, p->m != NULL);
    while (st == NB_OK) {
        const float *images;
        int n;
        st = nb_loader_next(l, &images, &p->labels, &n);
        if (st != NB_OK || n == 0) break;
        nb_tensor x;
        nb_tensor_wrap(&x, (float *)images, 4, (int[]){n, C, H, W});
        p->x = &x;
        if ((st = nb_tape_protect(p->tape, batch_fn, p)) != NB_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", nb_last_error());
            st = nb_set_error(st, "evaluation of a batch of %d images: %s. HINT: a smaller batch or "
                              "fewer threads (now %d), or free memory", n, msg, nb_get_threads());
        }
        nb_tape_reset(p->tape);
    }
    st = dump_close(&p->dump, st);
    nb_free(p->buf);
    if (p->m) nb_model_set_pass(p->m, was);
    nb_tape_set_grad(p->tape, had_grad);
    return st;
}

nb_status nb_evaluate(nb_model *m, nb_loader *l, nb_tape *tape, nb_eval_result *out) {
    pass p = {.m = m, .classes = m->opts.num_classes, .tape = tape};
    const nb_status st = run_pass(&p, l, NULL);
    *out = tally_result(&p.tm);
    return st;
}

nb_status nb_evaluate_int(struct nb_int_engine *e, int classes, nb_model *ref, nb_loader *l, nb_tape *tape,
                          const char *dump_dir, nb_eval_result *out, nb_eval_result *ref_out, nb_eval_compare *cmp) {
    pass p = {.m = ref, .e = e, .classes = classes, .tape = tape};
    const nb_status st = run_pass(&p, l, dump_dir);
    *out = tally_result(&p.te);
    if (ref_out) *ref_out = tally_result(&p.tm);
    if (cmp) *cmp = p.cmp;
    return st;
}
