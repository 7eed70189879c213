/* nibble's learned quantizers (quant/lsq.c: LSQ, LSQ+ and PACT, the op
 * nb_lsq on the tape) against the same formulas in PyTorch autograd
 * (tests/torch_lsq_oracle.py, float64), where /usr/bin/python3 has torch,
 * numpy and h5py (skipped cleanly otherwise).
 *
 * Per case: x (a conv weight (OC, C, KH, KW) with one step per tensor or
 * per output channel, or an activation (N, C, H, W) with one step), the
 * trained parameters and a random upstream gradient dy; the op runs forward
 * and nb_backward_seed(dy) on the tape. The gradient scale is LSQ's
 * documented g = 1/sqrt(N·Qp), N the weights per step (weights) or the
 * features per example, numel / N (activations); PACT's is 1. The steps are
 * powers of two, so x / s is exact and the data can hold exact ties
 * (k + 1/2)·s (ties to even), values exactly on both ends of the grid (the
 * inclusive "inside" of quant/lsq.c; not for PACT, whose PyTorch form
 * splits the gradient at an end) and values beyond both ends; one case has
 * arbitrary steps and plain random data. One activation is large enough
 * (65536 elements) for the op's parallel forward and chunked backward sums.
 *
 * Compared: y and dx elementwise, max |nibble - torch| / max |torch| < 1e-5;
 * d(step) and d(offset) per segment, |nibble - torch| < 1e-5 · g·Σ|dy·term|
 * (the sum's size; a plain relative error is meaningless for a sum that
 * cancels). The same oracle answers check the direct API, nb_lsq_backward
 * accumulating (fresh = 0) into preset dx, d(step) and d(offset). */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nb_test.h"
#include "nb_test_h5.h"

typedef struct {
    const char *name;
    nb_lsq_kind kind;
    int ndim, shape[4];
    int per_channel;  /* one step per shape[0] row */
    int qmin, qmax;
    int weight_g;     /* g from the weights per step; else from numel / batch */
    int pow2;         /* steps 2^-k (segment j: step·2^-(j % 3)) and exact ties, ends */
    float step;       /* s of segment 0 (PACT: alpha = qmax·s) */
    float offset;     /* LSQ+: beta */
} opcase;

static const opcase cases[] = {
    {"lsq weight per-tensor [-8, 7]", NB_LSQ_LSQ, 4, {8, 4, 3, 3}, 0, -8, 7, 1, 1, 0x1p-4f, 0},
    {"lsq weight per-channel [-8, 7]", NB_LSQ_LSQ, 4, {8, 4, 3, 3}, 1, -8, 7, 1, 1, 0x1p-3f, 0},
    {"lsq weight per-channel narrow [-7, 7]", NB_LSQ_LSQ, 4, {8, 4, 3, 3}, 1, -7, 7, 1, 1, 0x1p-3f, 0},
    {"lsq weight per-tensor 8-bit [-128, 127]", NB_LSQ_LSQ, 4, {8, 4, 3, 3}, 0, -128, 127, 1, 1, 0x1p-7f, 0},
    {"lsq weight per-channel 8-bit [-128, 127]", NB_LSQ_LSQ, 4, {8, 4, 3, 3}, 1, -128, 127, 1, 1, 0x1p-6f, 0},
    {"lsq weight per-channel [-8, 7], arbitrary steps", NB_LSQ_LSQ, 4, {16, 8, 3, 3}, 1, -8, 7, 1, 0, 0.1f, 0},
    {"lsq activation unsigned [0, 15]", NB_LSQ_LSQ, 4, {4, 3, 5, 5}, 0, 0, 15, 0, 1, 0x1p-3f, 0},
    {"lsq activation signed [-8, 7]", NB_LSQ_LSQ, 4, {4, 3, 5, 5}, 0, -8, 7, 0, 1, 0x1p-2f, 0},
    {"lsq activation unsigned [0, 15], 65536 elements", NB_LSQ_LSQ, 4, {4, 16, 32, 32}, 0, 0, 15, 0, 1,
     0x1p-3f, 0},
    {"lsq+ activation [0, 15]", NB_LSQ_PLUS, 4, {4, 3, 5, 5}, 0, 0, 15, 0, 1, 0x1p-3f, -0.5f},
    {"pact activation unsigned [0, 15]", NB_LSQ_PACT, 4, {4, 3, 5, 5}, 0, 0, 15, 0, 1, 0x1p-3f, 0},
    {"pact activation signed [-8, 7]", NB_LSQ_PACT, 4, {4, 3, 5, 5}, 0, -8, 7, 0, 1, 0x1p-2f, 0},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

/* One case's tensors, kept from the tape's backward to the comparison. */
typedef struct {
    nb_lsq_args a;
    nb_tensor *x, *y, *step, *offset;
    float *dy, *dx, *dstep, *doffset; /* copies of the tape's gradients */
    nb_tape *t;
} oprun;

static float *copy_floats(const float *v, size_t n) {
    float *c = malloc(sizeof(float) * (n ? n : 1));
    ck_assert_ptr_nonnull(c);
    memcpy(c, v, sizeof(float) * n);
    return c;
}

/* v = x / s of element i: exact ties k + 1/2 (inside and just beyond both
 * ends), the ends themselves, values beyond the ends, and the rest uniform
 * over [qmin - 1, qmax + 1]. */
static float draw_v(const opcase *c, nb_rng *r) {
    const float u = nb_rng_uniform(r), w = nb_rng_uniform(r);
    const int span = c->qmax - c->qmin;
    if (c->pow2 && u < 0.15f) return (float)(c->qmin - 2 + (int)nb_rng_below(r, (uint32_t)span + 3)) + 0.5f;
    if (c->pow2 && u < 0.22f && c->kind != NB_LSQ_PACT) return (float)(w < 0.5f ? c->qmin : c->qmax);
    if (u < 0.35f) return w < 0.5f ? (float)c->qmin - 0.01f - 4.0f * w : (float)c->qmax + 0.01f + 4.0f * w;
    return (float)(c->qmin - 1) + (float)(span + 2) * w;
}

/* Dataset case<ci>/<leaf> of f. */
static void put(hid_t f, int ci, const char *leaf, const float *v, int ndim, const int *shape) {
    char name[64];
    snprintf(name, sizeof name, "case%d/%s", ci, leaf);
    h5_write(f, name, v, ndim, shape);
}

/* Builds case ci, runs it on a tape, writes it as case<ci>/ of f. */
static void run_case(int ci, hid_t f, oprun *run) {
    const opcase *c = &cases[ci];
    nb_rng r;
    nb_rng_seed(&r, 7000 + (uint64_t)ci, 0);
    nb_tensor *x = nb_tensor_new(c->ndim, c->shape);
    ck_assert_ptr_nonnull(x);
    const int rows = c->per_channel ? c->shape[0] : 1;
    const size_t K = x->numel / (size_t)rows;
    nb_tensor *step = nb_tensor_new(1, (int[]){rows});
    nb_tensor *offset = c->kind == NB_LSQ_PLUS ? nb_tensor_new(1, (int[]){rows}) : NULL;
    float *dy = malloc(sizeof(float) * x->numel);
    ck_assert(step && dy);
    for (int j = 0; j < rows; j++) {
        const float s = c->pow2 ? ldexpf(c->step, -(j % 3)) : c->step * (0.5f + nb_rng_uniform(&r));
        step->data[j] = c->kind == NB_LSQ_PACT ? s * (float)c->qmax : s;
        if (offset) offset->data[j] = c->offset;
        for (size_t k = 0; k < K; k++) {
            const size_t i = (size_t)j * K + k;
            x->data[i] = c->offset + draw_v(c, &r) * s;
            dy[i] = nb_rng_normal(&r);
        }
    }
    const double N = c->weight_g ? (double)K : (double)x->numel / (double)c->shape[0];
    const float g = c->kind == NB_LSQ_PACT ? 1.0f : (float)(1.0 / sqrt(N * (double)c->qmax));
    x->requires_grad = step->requires_grad = 1;
    if (offset) offset->requires_grad = 1;

    run->a = (nb_lsq_args){c->kind, {rows, K, K}, step, offset, c->qmin, c->qmax, g};
    run->x = x;
    run->step = step;
    run->offset = offset;
    run->dy = dy;
    run->t = nb_tape_new();
    run->y = nb_lsq(run->t, x, &run->a);
    ck_assert_int_eq(nb_backward_seed(run->t, run->y, dy), NB_OK);
    ck_assert(x->grad && step->grad && (!offset || offset->grad));
    run->dx = copy_floats(x->grad, x->numel);
    run->dstep = copy_floats(step->grad, (size_t)rows);
    run->doffset = offset ? copy_floats(offset->grad, (size_t)rows) : NULL;

    const float kind = (float)c->kind, qrange[2] = {(float)c->qmin, (float)c->qmax};
    put(f, ci, "kind", &kind, 1, (int[]){1});
    put(f, ci, "qrange", qrange, 1, (int[]){2});
    put(f, ci, "g", &g, 1, (int[]){1});
    put(f, ci, "x", x->data, x->ndim, x->shape);
    put(f, ci, "dy", dy, x->ndim, x->shape);
    put(f, ci, "step", step->data, 1, (int[]){rows});
    if (offset) put(f, ci, "offset", offset->data, 1, (int[]){rows});
}

static void free_run(oprun *run) {
    nb_tape_free(run->t);
    run->x->grad = run->step->grad = NULL;
    if (run->offset) run->offset->grad = NULL;
    nb_tensor_free(run->x);
    nb_tensor_free(run->step);
    nb_tensor_free(run->offset);
    free(run->dy);
    free(run->dx);
    free(run->dstep);
    free(run->doffset);
}

/* Per-segment sums: |nibble - torch| < 1e-5 of the oracle's g·Σ|dy·term|. */
static double expect_sums(hid_t o, const char *what, const char *pre, const char *leaf, const float *ours,
                          size_t n) {
    char name[96], size[96];
    snprintf(name, sizeof name, "%s/%s", pre, leaf);
    snprintf(size, sizeof size, "%s/%s_size", pre, leaf);
    return nb_oracle_close_sums(o, what, name, size, ours, n, 1e-5, NULL);
}

/* Case ci against the oracle: the tape's results, then the direct API. */
static void check_case(hid_t o, int ci, oprun *run) {
    const opcase *c = &cases[ci];
    char pre[32], name[64];
    snprintf(pre, sizeof pre, "case%d", ci);
    const size_t n = run->x->numel, rows = run->step->numel;
    snprintf(name, sizeof name, "%s/y", pre);
    const double e_y = nb_oracle_close(o, c->name, name, run->y->data, n, 1e-5);
    snprintf(name, sizeof name, "%s/dx", pre);
    const double e_dx = nb_oracle_close(o, c->name, name, run->dx, n, 1e-5);
    const double e_ds = expect_sums(o, c->name, pre, "dstep", run->dstep, rows);
    const double e_db = run->offset ? expect_sums(o, c->name, pre, "doffset", run->doffset, rows) : 0.0;

    /* nb_lsq_backward accumulating into preset buffers */
    const float preset = 0.25f;
    float *dx = malloc(sizeof(float) * n), *ds = malloc(sizeof(float) * rows), *db = malloc(sizeof(float) * rows);
    ck_assert(dx && ds && db);
    for (size_t i = 0; i < n; i++) dx[i] = preset;
    for (size_t j = 0; j < rows; j++) ds[j] = db[j] = preset;
    nb_lsq_backward(&run->a, run->x->data, run->dy, dx, 0, ds, run->offset ? db : NULL);
    for (size_t i = 0; i < n; i++) dx[i] -= preset;
    for (size_t j = 0; j < rows; j++) {
        ds[j] -= preset;
        db[j] -= preset;
    }
    char what[160];
    snprintf(what, sizeof what, "%s, nb_lsq_backward accumulating", c->name);
    snprintf(name, sizeof name, "%s/dx", pre);
    nb_oracle_close(o, what, name, dx, n, 1e-5);
    expect_sums(o, what, pre, "dstep", ds, rows);
    if (run->offset) expect_sums(o, what, pre, "doffset", db, rows);
    free(dx);
    free(ds);
    free(db);
    char off[48] = "";
    if (run->offset) snprintf(off, sizeof off, ", d(offset) %.2g", e_db);
    printf("%s: y %.2g, dx %.2g (of max |torch|); d(step) %.2g%s (of g·Σ|dy·term|)\n", c->name, e_y, e_dx, e_ds,
           off);
    fflush(stdout);
}

START_TEST(test_lsq_ops_vs_torch) {
    if (!nb_oracle_available()) {
        nb_test_skip("learned quantizers vs torch", "/usr/bin/python3 has no torch, numpy or h5py");
        return;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/lsq.h5", nb_test_tmpdir());
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_msg(f >= 0, "create %s", path);
    h5_attr_num(f, "cases", NCASES);
    static oprun runs[NCASES];
    for (int ci = 0; ci < NCASES; ci++) run_case(ci, f, &runs[ci]);
    H5Fclose(f);

    hid_t o = nb_oracle_run("torch_lsq_oracle.py", path);
    if (o < 0) {
        nb_test_skip("learned quantizers vs torch", "/usr/bin/python3 cannot import torch, numpy and h5py");
    } else {
        for (int ci = 0; ci < NCASES; ci++) check_case(o, ci, &runs[ci]);
        H5Fclose(o);
    }
    for (int ci = 0; ci < NCASES; ci++) free_run(&runs[ci]);
}
END_TEST

static Suite *torch_lsq_suite(void) {
    Suite *s = suite_create("torch_lsq");
    TCase *tc = tcase_create("oracle");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_lsq_ops_vs_torch);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(torch_lsq_suite()); }
