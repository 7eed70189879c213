/* nibble's N2UQ activation quantizer (quant/n2uq.c, the op nb_n2uq on the
 * tape) against the same definition in PyTorch autograd
 * (tests/torch_n2uq_oracle.py, float64: thresholds from t0 and a cumulative
 * sum, the surrogate F as a sum of clamps, y = s·q with F's gradient
 * attached by the detach trick), where /usr/bin/python3 has torch, numpy
 * and h5py (skipped cleanly otherwise).
 *
 * Per case: an activation x (N, C, H, W) after a ReLU, the parameters, a
 * random upstream gradient dy and LSQ's gradient scale g = 1/sqrt(N·n), N
 * the features per example; the op runs forward and nb_backward_seed(dy)
 * on the tape. t0 and the widths a are multiples of 2^-10, so every
 * threshold is exact in float32 and float64 alike and both sides put each
 * x in the same interval; x keeps 1% of a width clear of every threshold
 * (on a threshold the oracle's clamps would both pass a gradient). 2, 3,
 * 4, 5 bits (the op's vector sums), 6 and 8 bits (its binned sums, with
 * binary search); the 4-bit case has 65536 elements (several chunks, the
 * parallel forward).
 *
 * Compared: y and dx, max |nibble - torch| / max |torch| < 1e-5; dt0, da
 * and ds, |nibble - torch| < 1e-5 · g·Σ|dy·s·dF/dp| (g·Σ|dy|·q for ds): the
 * sum's size. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nb_test.h"
#include "nb_test_h5.h"

typedef struct {
    const char *name;
    int n_levels;
    int shape[4];
} n2case;

static const n2case cases[] = {
    {"2 bits", 3, {4, 3, 5, 5}},
    {"3 bits", 7, {4, 3, 5, 5}},
    {"4 bits, 65536 elements", 15, {4, 16, 32, 32}},
    {"5 bits", 31, {4, 8, 8, 8}},
    {"6 bits", 63, {4, 8, 8, 8}},
    {"8 bits", 255, {2, 4, 16, 16}},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

typedef struct {
    nb_tensor *x, *t0, *a, *s, *y;
    float *dy, *dx, *dt0, *da, *ds; /* copies of the tape's gradients */
    nb_tape *t;
} n2run;

static float *copy_floats(const float *v, size_t n) {
    float *c = malloc(sizeof(float) * (n ? n : 1));
    ck_assert_ptr_nonnull(c);
    memcpy(c, v, sizeof(float) * n);
    return c;
}

static void put(hid_t f, int ci, const char *leaf, const float *v, int ndim, const int *shape) {
    char name[64];
    snprintf(name, sizeof name, "case%d/%s", ci, leaf);
    h5_write(f, name, v, ndim, shape);
}

/* Builds case ci, runs it on a tape, writes it as case<ci>/ of f. */
static void run_case(int ci, hid_t f, n2run *run) {
    const n2case *c = &cases[ci];
    const int n = c->n_levels;
    nb_rng r;
    nb_rng_seed(&r, 8000 + (uint64_t)ci, 0);
    run->x = nb_tensor_new(4, c->shape);
    run->t0 = nb_tensor_new(1, (int[]){1});
    run->a = nb_tensor_new(1, (int[]){n - 1});
    run->s = nb_tensor_new(1, (int[]){1});
    ck_assert(run->x && run->t0 && run->a && run->s);
    /* widths about 1/n (multiples of 2^-10, at least 2 units), t0 about half a width */
    const int unit = 1024 / n > 2 ? 1024 / n : 2;
    double T[256];
    run->t0->data[0] = ldexpf((float)(unit / 2 + 1 + (int)nb_rng_below(&r, (uint32_t)unit)), -10);
    T[1] = (double)run->t0->data[0];
    for (int j = 0; j < n - 1; j++) {
        run->a->data[j] = ldexpf((float)(unit / 2 + 1 + (int)nb_rng_below(&r, (uint32_t)unit)), -10);
        T[j + 2] = T[j + 1] + (double)run->a->data[j];
    }
    run->s->data[0] = 0.1f + nb_rng_uniform(&r);
    const size_t m = run->x->numel;
    run->dy = malloc(sizeof(float) * m);
    ck_assert_ptr_nonnull(run->dy);
    for (size_t i = 0; i < m; i++) {
        const float u = nb_rng_uniform(&r), w = 0.01f + 0.98f * nb_rng_uniform(&r);
        const int k = 1 + (int)nb_rng_below(&r, (uint32_t)(n - 1));
        float v = (float)(T[k] + (double)w * (T[k + 1] - T[k])); /* inside interval k */
        if (u < 0.3f) v = 0.0f;                                    /* a ReLU's zeros */
        else if (u < 0.4f) v = (float)T[1] * w * 0.99f;             /* below T_1 */
        else if (u < 0.5f) v = (float)T[n] * (1.001f + w);          /* above T_n */
        run->x->data[i] = v;
        run->dy[i] = nb_rng_normal(&r);
    }
    const float g = (float)(1.0 / sqrt((double)m / (double)c->shape[0] * (double)n));
    run->x->requires_grad = run->t0->requires_grad = run->a->requires_grad = run->s->requires_grad = 1;
    const nb_n2uq_args p = {n, run->t0, run->a, run->s, g};
    run->t = nb_tape_new();
    run->y = nb_n2uq(run->t, run->x, &p);
    ck_assert_int_eq(nb_backward_seed(run->t, run->y, run->dy), NB_OK);
    ck_assert(run->x->grad && run->t0->grad && run->a->grad && run->s->grad);
    run->dx = copy_floats(run->x->grad, m);
    run->dt0 = copy_floats(run->t0->grad, 1);
    run->da = copy_floats(run->a->grad, (size_t)n - 1);
    run->ds = copy_floats(run->s->grad, 1);

    put(f, ci, "x", run->x->data, 4, c->shape);
    put(f, ci, "dy", run->dy, 4, c->shape);
    put(f, ci, "t0", run->t0->data, 1, (int[]){1});
    put(f, ci, "a", run->a->data, 1, (int[]){n - 1});
    put(f, ci, "s", run->s->data, 1, (int[]){1});
    put(f, ci, "g", &g, 1, (int[]){1});
}

static void free_run(n2run *run) {
    nb_tape_free(run->t);
    run->x->grad = run->t0->grad = run->a->grad = run->s->grad = NULL;
    nb_tensor_free(run->x);
    nb_tensor_free(run->t0);
    nb_tensor_free(run->a);
    nb_tensor_free(run->s);
    free(run->dy);
    free(run->dx);
    free(run->dt0);
    free(run->da);
    free(run->ds);
}

static double expect_sums(hid_t o, const char *what, int ci, const char *leaf, const float *ours, size_t n) {
    char name[64], size[64];
    snprintf(name, sizeof name, "case%d/%s", ci, leaf);
    snprintf(size, sizeof size, "case%d/%s_size", ci, leaf);
    return nb_oracle_close_sums(o, what, name, size, ours, n, 1e-5, NULL);
}

static void check_case(hid_t o, int ci, const n2run *run) {
    const n2case *c = &cases[ci];
    char name[64];
    snprintf(name, sizeof name, "case%d/y", ci);
    const double e_y = nb_oracle_close(o, c->name, name, run->y->data, run->x->numel, 1e-5);
    snprintf(name, sizeof name, "case%d/dx", ci);
    const double e_dx = nb_oracle_close(o, c->name, name, run->dx, run->x->numel, 1e-5);
    const double e_t0 = expect_sums(o, c->name, ci, "dt0", run->dt0, 1);
    const double e_a = expect_sums(o, c->name, ci, "da", run->da, (size_t)c->n_levels - 1);
    const double e_s = expect_sums(o, c->name, ci, "ds", run->ds, 1);
    printf("%s: y %.2g, dx %.2g (of max |torch|); dt0 %.2g, da %.2g, ds %.2g (of the sums' sizes)\n", c->name, e_y,
           e_dx, e_t0, e_a, e_s);
    fflush(stdout);
}

START_TEST(test_n2uq_vs_torch) {
    if (!nb_oracle_available()) {
        nb_test_skip("n2uq vs torch", "/usr/bin/python3 has no torch, numpy or h5py");
        return;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/n2uq.h5", nb_test_tmpdir());
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_msg(f >= 0, "create %s", path);
    h5_attr_num(f, "cases", NCASES);
    static n2run runs[NCASES];
    for (int ci = 0; ci < NCASES; ci++) run_case(ci, f, &runs[ci]);
    H5Fclose(f);

    hid_t o = nb_oracle_run("torch_n2uq_oracle.py", path);
    if (o < 0) {
        nb_test_skip("n2uq vs torch", "/usr/bin/python3 cannot import torch, numpy and h5py");
    } else {
        for (int ci = 0; ci < NCASES; ci++) check_case(o, ci, &runs[ci]);
        H5Fclose(o);
    }
    for (int ci = 0; ci < NCASES; ci++) free_run(&runs[ci]);
}
END_TEST

int main(void) {
    Suite *s = suite_create("torch_n2uq");
    TCase *tc = tcase_create("oracle");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_n2uq_vs_torch);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
