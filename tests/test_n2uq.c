/* N2UQ activations (quant/n2uq.c, ALGORITHMS.md §5 "Activations"):
 * forward values against hand-computed cases and a brute-force count
 * (values on, below and above the thresholds, infinities, NaN, tails, both
 * search paths); backward values worked out by hand; every gradient against
 * central differences of the documented surrogate for b = 2..8; the op on
 * the tape; sums independent of the thread count on a tensor of many
 * chunks, against a double-precision reference; the initialisation equal to
 * the unsigned uniform quantizer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nb_test.h"

#define MAXL 255

static void expect_near(const float *got, const float *want, int n, double tol, const char *what) {
    for (int i = 0; i < n; i++)
        ck_assert_msg(fabs((double)got[i] - (double)want[i]) <= tol, "%s[%d]: got %.9g, want %.9g", what, i,
                      (double)got[i], (double)want[i]);
}

/* The parameters of one quantizer, in wrapped tensors (not on a tape). */
typedef struct {
    float t0, a[MAXL], s;
    nb_tensor tt0, ta, ts;
    nb_n2uq_args p;
} params;

static void params_set(params *q, int n, float t0, const float *a, float s, float g) {
    q->t0 = t0;
    q->s = s;
    memcpy(q->a, a, sizeof(float) * (size_t)(n - 1));
    nb_tensor_wrap(&q->tt0, &q->t0, 1, (int[]){1});
    nb_tensor_wrap(&q->ta, q->a, 1, (int[]){n - 1});
    nb_tensor_wrap(&q->ts, &q->s, 1, (int[]){1});
    q->p = (nb_n2uq_args){n, &q->tt0, &q->ta, &q->ts, g};
}

/* The thresholds as the documented numerics make them: accumulated in
 * double, each rounded to float. */
static void thresholds(const params *q, float *T) {
    double t = (double)q->t0;
    for (int i = 1; i <= q->p.n_levels; i++) {
        T[i] = (float)t;
        if (i < q->p.n_levels) t += (double)q->a[i - 1];
    }
}

/* Random parameters for n levels (widths in [0.5, 1.5)/n), their
 * thresholds T[1..n], and r seeded for the data. */
static void params_random(params *q, float *T, nb_rng *r, uint64_t seed, int n, float g) {
    float a[MAXL];
    const float w = 1.0f / (float)n;
    nb_rng_seed(r, seed, (uint64_t)n);
    for (int j = 0; j < n - 1; j++) a[j] = w * (0.5f + nb_rng_uniform(r));
    params_set(q, n, 0.3f * w + 0.2f * nb_rng_uniform(r), a, 0.05f + nb_rng_uniform(r), g);
    thresholds(q, T);
}

/* q(x) by the definition: the thresholds at or below x. */
static int count(const float *T, int n, float x) {
    int c = 0;
    for (int i = 1; i <= n; i++) c += x >= T[i];
    return c;
}

/* ------------------------------------------------------------------ forward */

START_TEST(test_n2uq_forward_hand) {
    /* n = 3 (2 bits): t0 = 0.5, a = (1, 0.5), s = 0.25: T = 0.5, 1.5, 2 */
    params q;
    params_set(&q, 3, 0.5f, (const float[]){1.0f, 0.5f}, 0.25f, 1.0f);
    const float x[12] = {-1.0f, 0.49f, 0.5f, 1.0f, 1.5f, 1.99f, 2.0f, 5.0f, INFINITY, -INFINITY, NAN, 0.0f};
    float y[12];
    nb_n2uq_forward(&q.p, x, 12, y);
    /* below T_1: 0; on a threshold: counted (x >= T_i); above T_n: n */
    expect_near(y, (const float[]){0, 0, 0.25f, 0.25f, 0.5f, 0.5f, 0.75f, 0.75f, 0.75f, 0}, 10, 0.0, "y");
    ck_assert_msg(isnan(y[10]), "NaN in, %g out", (double)y[10]);
    ck_assert(y[11] == 0.0f);

    /* non-uniform widths at 4 bits: t0 = 1, a_i = i/4, s = 2: T_i = 1 + (i-1)i/8 */
    float a[14], T[16], xs[40], ys[40];
    for (int i = 1; i <= 14; i++) a[i - 1] = 0.25f * (float)i;
    params_set(&q, 15, 1.0f, a, 2.0f, 1.0f);
    thresholds(&q, T);
    for (int i = 1; i <= 15; i++) {
        ck_assert(T[i] == 1.0f + (float)((i - 1) * i) / 8.0f); /* exact in float */
        xs[2 * i - 2] = T[i];          /* on T_i: q = i */
        xs[2 * i - 1] = T[i] - 0.01f;  /* just below: q = i - 1 */
    }
    for (int k = 30; k < 40; k++) xs[k] = (float)(k - 35); /* -5..4 */
    nb_n2uq_forward(&q.p, xs, 40, ys);
    for (int i = 1; i <= 15; i++) {
        ck_assert_msg(ys[2 * i - 2] == 2.0f * (float)i, "on T_%d: %g", i, (double)ys[2 * i - 2]);
        ck_assert_msg(ys[2 * i - 1] == 2.0f * (float)(i - 1), "below T_%d: %g", i, (double)ys[2 * i - 1]);
    }
    /* -5..0 below T_1 = 1; 1 = T_1, 2 in [T_3, T_4) = [1.75, 2.5), 3 in
     * [T_4, T_5) = [2.5, 3.5), 4 in [T_5, T_6) = [3.5, 4.75) */
    expect_near(ys + 30, (const float[]){0, 0, 0, 0, 0, 0, 2, 6, 8, 10}, 10, 0.0, "y 4 bits");
}
END_TEST

/* Every bit width (and levels that are not 2^b - 1), lengths with tails and
 * several chunks, random thresholds: q from the op equals the count, with
 * x exactly on every threshold and on both sides of it. */
START_TEST(test_n2uq_forward_count) {
    const int levels[] = {3, 7, 15, 31, 63, 127, 255, 2, 5, 20, 100};
    const int n = levels[_i];
    nb_rng r;
    params q;
    float T[MAXL + 1];
    params_random(&q, T, &r, 7, n, 1.0f);
    const size_t lens[] = {1, 17, 16384 * 4 + 21};
    for (int k = 0; k < 3; k++) {
        const size_t len = lens[k];
        float *x = malloc(sizeof(float) * len), *y = malloc(sizeof(float) * len);
        for (size_t i = 0; i < len; i++) {
            const int j = 1 + (int)(i % (size_t)n);
            const int kind = (int)((i / (size_t)n) % 4);
            x[i] = kind == 0 ? T[j] : kind == 1 ? nextafterf(T[j], -INFINITY)
                 : kind == 2 ? nextafterf(T[j], INFINITY) : T[n] * (2.2f * nb_rng_uniform(&r) - 0.6f);
        }
        nb_n2uq_forward(&q.p, x, len, y);
        for (size_t i = 0; i < len; i++) {
            const float want = q.s * (float)count(T, n, x[i]);
            ck_assert_msg(y[i] == want, "%d levels, len %zu: x[%zu] = %.9g: got %.9g, want %.9g", n, len, i,
                          (double)x[i], (double)y[i], (double)want);
        }
        free(x);
        free(y);
    }
}
END_TEST

/* ------------------------------------------------------------------ backward */

START_TEST(test_n2uq_backward_hand) {
    /* n = 3, t0 = 0.5, a = (a_1, a_2) = (1, 0.5), s = 0.25, g = 0.5:
     * T = 0.5, 1.5, 2.
     *  x     dy  interval  dx = dy·s/a_i  dt0 = -dy·s/a_i  da_1           da_2                   dy·q
     *  0.75   2  1         0.5            -0.5            -0.25/1·0.5     0                      2
     *  1.75   1  2         0.5            -0.5            -0.5 (j < i)    -(0.25/0.25)·0.25      2
     *  3      4  above     0              0               0               0                      12
     *  0.2    3  below     0              0               0               0                      0
     *  0.5   -1  1 (on T_1) -0.25         0.25            -0·...= 0       0                      -1
     *  2      1  above (on T_3) 0         0               0               0                      3
     * sums: dt0 = -0.75, da_1 = -0.125 - 0.5 = -0.625, da_2 = -0.25, ds = 18;
     * times g: -0.375, -0.3125, -0.125, 9. */
    params q;
    params_set(&q, 3, 0.5f, (const float[]){1.0f, 0.5f}, 0.25f, 0.5f);
    const float x[6] = {0.75f, 1.75f, 3.0f, 0.2f, 0.5f, 2.0f}, dy[6] = {2, 1, 4, 3, -1, 1};
    float dx[6], dt0 = 0.0f, da[2] = {0, 0}, ds = 0.0f;
    nb_n2uq_backward(&q.p, x, 6, dy, dx, 1, &dt0, da, &ds);
    expect_near(dx, (const float[]){0.5f, 0.5f, 0, 0, -0.25f, 0}, 6, 0.0, "dx");
    expect_near(&dt0, (const float[]){-0.375f}, 1, 1e-7, "dt0");
    expect_near(da, (const float[]){-0.3125f, -0.125f}, 2, 1e-7, "da");
    expect_near(&ds, (const float[]){9.0f}, 1, 1e-6, "ds");

    /* accumulating (fresh = 0) into existing gradients; NULL: not wanted */
    for (int i = 0; i < 6; i++) dx[i] = 1.0f;
    nb_n2uq_backward(&q.p, x, 6, dy, dx, 0, &dt0, NULL, NULL);
    expect_near(dx, (const float[]){1.5f, 1.5f, 1, 1, 0.75f, 1}, 6, 0.0, "dx accumulated");
    expect_near(&dt0, (const float[]){-0.75f}, 1, 1e-7, "dt0 accumulated");
    expect_near(da, (const float[]){-0.3125f, -0.125f}, 2, 0.0, "da untouched");

    /* a width of 0 (an empty interval; thresholds 0.5, 1.5, 1.5, 2): finite
     * gradients. x = 1.7 in interval 3 (a_3 = 0.5), s = 1, dy = 1: dx = 2,
     * dt0 = da_1 = da_2 = -2, da_3 = -(1.7 - 1.5)/0.25 = -0.8, ds = 3 */
    params z;
    params_set(&z, 4, 0.5f, (const float[]){1.0f, 0.0f, 0.5f}, 1.0f, 1.0f);
    const float xz = 1.7f, one = 1.0f;
    float dxz, dt0z = 0.0f, daz[3] = {0, 0, 0}, dsz = 0.0f;
    nb_n2uq_backward(&z.p, &xz, 1, &one, &dxz, 1, &dt0z, daz, &dsz);
    expect_near(&dxz, (const float[]){2.0f}, 1, 0.0, "dx, zero width");
    expect_near(&dt0z, (const float[]){-2.0f}, 1, 0.0, "dt0, zero width");
    expect_near(daz, (const float[]){-2.0f, -2.0f, -0.8f}, 3, 1e-6, "da, zero width");
    expect_near(&dsz, (const float[]){3.0f}, 1, 0.0, "ds, zero width");

    /* dx in place of dy */
    float d[6];
    memcpy(d, dy, sizeof d);
    nb_n2uq_backward(&q.p, x, 6, d, d, 1, NULL, NULL, NULL);
    expect_near(d, (const float[]){0.5f, 0.5f, 0, 0, -0.25f, 0}, 6, 0.0, "dx in place");
}
END_TEST

/* The surrogate F(x) in double on double thresholds (t0 + Σ a). */
static double surrogate(double x, double t0, const double *a, int n) {
    double T = t0;
    if (x < T) return 0.0;
    for (int i = 1; i < n; i++) {
        if (x < T + a[i - 1]) return (double)i + (x - T) / a[i - 1];
        T += a[i - 1];
    }
    return (double)n;
}

/* L = Σ c_i·s·F(x_i) (x, t0, a: the surrogate) or Σ c_i·s·q(x_i) (s). */
static double loss(const double *x, const double *c, int m, double t0, const double *a, double s, int n,
                   int integer) {
    double L = 0.0;
    for (int i = 0; i < m; i++) {
        const double F = surrogate(x[i], t0, a, n);
        L += c[i] * s * (integer ? floor(F) : F);
    }
    return L;
}

/* Central differences (h = 1e-4, 1e-4·a_j for a_j; every x at least 1e-3
 * from a threshold, so no element changes interval) against the op's
 * gradients, g = 1, for b = 2..8 (both backward paths). */
START_TEST(test_n2uq_finite_differences) {
    const int n = (1 << (_i + 2)) - 1, m = 64 + 8 * n;
    nb_rng r;
    params q;
    float T[MAXL + 1];
    params_random(&q, T, &r, 21, n, 1.0f);
    float *xf = malloc(sizeof(float) * (size_t)m), *cf = malloc(sizeof(float) * (size_t)m);
    float *dx = malloc(sizeof(float) * (size_t)m);
    double *x = malloc(sizeof(double) * (size_t)m), *c = malloc(sizeof(double) * (size_t)m);
    double a[MAXL];
    for (int j = 0; j < n - 1; j++) a[j] = (double)q.a[j];
    for (int i = 0; i < m; i++) {
        float v;
        int near;
        do { /* over [T_1 - 0.1, T_n + 0.1], away from every threshold */
            v = T[1] - 0.1f + (T[n] - T[1] + 0.2f) * nb_rng_uniform(&r);
            near = 0;
            for (int j = 1; j <= n; j++) near |= fabsf(v - T[j]) < 1e-3f;
        } while (near);
        xf[i] = v;
        x[i] = (double)v;
        cf[i] = 2.0f * nb_rng_uniform(&r) - 1.0f;
        c[i] = (double)cf[i];
    }
    float dt0 = 0.0f, ds = 0.0f, da[MAXL];
    memset(da, 0, sizeof da);
    nb_n2uq_backward(&q.p, xf, (size_t)m, cf, dx, 1, &dt0, da, &ds);

    const double h = 1e-4, t0 = (double)q.t0, s = (double)q.s;
    /* x: F is linear inside an interval, dL/dx_i = c_i·s/a_i (0 outside) */
    for (int i = 0; i < m; i++) {
        const double want = c[i] * s * (surrogate(x[i] + h, t0, a, n) - surrogate(x[i] - h, t0, a, n)) / (2 * h);
        ck_assert_msg(fabs((double)dx[i] - want) <= 1e-5 * (fabs(want) + 1.0), "n %d dx[%d]: %.9g vs fd %.9g", n, i,
                      (double)dx[i], want);
    }
    /* the sums: tolerance relative to their scale, s·m·n (|c_i| < 1, a ≈
     * 1/n); 1e-5, as the op compares against float thresholds and the
     * reference uses exact ones, which moves a term (x - T_i)/a_i^2 by up
     * to ~1e-5 of itself when a_i is small (a wrong formula is off by O(1)) */
    const double size = s * (double)m * (double)n;
    double want = (loss(x, c, m, t0 + h, a, s, n, 0) - loss(x, c, m, t0 - h, a, s, n, 0)) / (2 * h);
    ck_assert_msg(fabs((double)dt0 - want) <= 1e-5 * size, "n %d dt0: %.9g vs fd %.9g", n, (double)dt0, want);
    int nonzero = 0;
    for (int j = 0; j < n - 1; j++) {
        /* F is not linear in a_j: a step relative to a_j keeps the
         * truncation error (h^2/a_j^3) below the tolerance */
        const double keep = a[j], ha = 1e-4 * keep;
        a[j] = keep + ha;
        const double lp = loss(x, c, m, t0, a, s, n, 0);
        a[j] = keep - ha;
        const double lm = loss(x, c, m, t0, a, s, n, 0);
        a[j] = keep;
        want = (lp - lm) / (2 * ha);
        nonzero += want != 0.0;
        ck_assert_msg(fabs((double)da[j] - want) <= 1e-5 * size, "n %d da[%d]: %.9g vs fd %.9g", n, j, (double)da[j],
                      want);
    }
    ck_assert_msg(nonzero >= n / 2, "n %d: only %d nonzero da", n, nonzero);
    want = (loss(x, c, m, t0, a, s + h, n, 1) - loss(x, c, m, t0, a, s - h, n, 1)) / (2 * h);
    ck_assert_msg(fabs((double)ds - want) <= 1e-6 * (double)m * (double)n, "n %d ds: %.9g vs fd %.9g", n, (double)ds,
                  want);
    free(xf);
    free(cf);
    free(dx);
    free(x);
    free(c);
}
END_TEST

/* ------------------------------------------------------------------ tape op */

static nb_tensor *vec(const float *v, int n, int requires_grad) {
    nb_tensor *t = nb_tensor_new(1, (int[]){n});
    memcpy(t->data, v, sizeof(float) * (size_t)n);
    t->requires_grad = (uint8_t)requires_grad;
    return t;
}

/* A trained parameter: a long-lived gradient like the model's. */
static nb_tensor *param(const float *v, int n, float *grad, int requires_grad) {
    nb_tensor *t = vec(v, n, requires_grad);
    memset(grad, 0, sizeof(float) * (size_t)n);
    t->grad = requires_grad ? grad : NULL;
    t->is_param = 1;
    return t;
}

static void free_leaf(nb_tensor *t) {
    if (t->is_param) t->grad = NULL; /* not the tensor's to free */
    nb_tensor_free(t);
}

/* The hand case of test_n2uq_backward_hand on the tape: the gradients land
 * in x's and the parameters' grad; with only s trained the node is still
 * recorded; with nothing trained there is none. */
START_TEST(test_n2uq_tape) {
    const float x[6] = {0.75f, 1.75f, 3.0f, 0.2f, 0.5f, 2.0f}, dy[6] = {2, 1, 4, 3, -1, 1};
    const float t0v = 0.5f, av[2] = {1.0f, 0.5f}, sv = 0.25f;
    for (int mode = 0; mode < 3; mode++) { /* all trained, only s, nothing */
        nb_tape *t = nb_tape_new();
        float gt0[1], ga[2], gs[1];
        nb_tensor *xt = vec(x, 6, mode == 0), *t0 = param(&t0v, 1, gt0, mode == 0), *a = param(av, 2, ga, mode == 0),
                  *s = param(&sv, 1, gs, mode < 2);
        const nb_n2uq_args p = {3, t0, a, s, 0.5f};
        nb_tensor *y = nb_n2uq(t, xt, &p);
        expect_near(y->data, (const float[]){0.25f, 0.5f, 0.75f, 0, 0.25f, 0.75f}, 6, 0.0, "y");
        ck_assert_int_eq((int)nb_tape_nodes(t), mode < 2 ? 1 : 0);
        ck_assert_int_eq(y->requires_grad, mode < 2);
        if (mode < 2) {
            ck_assert_int_eq(nb_backward_seed(t, y, dy), NB_OK);
            expect_near(gs, (const float[]){9.0f}, 1, 1e-6, "ds");
        }
        if (mode == 0) {
            expect_near(xt->grad, (const float[]){0.5f, 0.5f, 0, 0, -0.25f, 0}, 6, 0.0, "dx");
            expect_near(gt0, (const float[]){-0.375f}, 1, 1e-7, "dt0");
            expect_near(ga, (const float[]){-0.3125f, -0.125f}, 2, 1e-7, "da");
        }
        if (mode == 1) ck_assert(gt0[0] == 0.0f && ga[0] == 0.0f && ga[1] == 0.0f && xt->grad == NULL);
        nb_tape_reset(t);
        xt->grad = NULL;
        nb_tensor_free(xt);
        free_leaf(t0);
        free_leaf(a);
        free_leaf(s);
        nb_tape_free(t);
    }
}
END_TEST

/* ------------------------------------------------------------------ threads */

/* The backward in double, element by element from the definitions. */
static void reference(const params *q, const float *x, const float *dy, size_t len, double *dt0, double *da,
                      double *ds) {
    const int n = q->p.n_levels;
    float T[MAXL + 1];
    thresholds(q, T);
    *dt0 = *ds = 0.0;
    for (int j = 0; j < n - 1; j++) da[j] = 0.0;
    for (size_t e = 0; e < len; e++) {
        const int i = count(T, n, x[e]);
        const double g = (double)dy[e] * (double)q->s;
        *ds += (double)dy[e] * (double)i;
        if (i == 0 || i == n) continue;
        const double ai = (double)q->a[i - 1];
        *dt0 -= g / ai;
        for (int j = 1; j < i; j++) da[j - 1] -= g / ai;
        da[i - 1] -= g * ((double)x[e] - (double)T[i]) / (ai * ai);
    }
}

/* 300000 elements (19 chunks), 4 bits (the vector sums) and 7 bits (the
 * binned ones): 1 and 2 threads give the same bits in dx and in every
 * parameter gradient, which match the double reference. */
START_TEST(test_n2uq_threads) {
    const int n = _i ? 127 : 15;
    const size_t len = 300000;
    float *x = malloc(sizeof(float) * len), *dy = malloc(sizeof(float) * len);
    float *dx[2] = {malloc(sizeof(float) * len), malloc(sizeof(float) * len)};
    nb_rng r;
    params q;
    float T[MAXL + 1];
    params_random(&q, T, &r, 3, n, 0.01f);
    for (size_t i = 0; i < len; i++) {
        const float v = 1.2f * T[n] * nb_rng_normal(&r);
        x[i] = v > 0.0f ? v : 0.0f;
        dy[i] = nb_rng_normal(&r);
    }
    float dt0[2] = {0, 0}, ds[2] = {0, 0}, da[2][MAXL];
    memset(da, 0, sizeof da);
    const int had = nb_get_threads();
    for (int k = 0; k < 2; k++) {
        nb_set_threads(k + 1);
        nb_n2uq_backward(&q.p, x, len, dy, dx[k], 1, &dt0[k], da[k], &ds[k]);
    }
    nb_set_threads(had);
    ck_assert(memcmp(dx[0], dx[1], sizeof(float) * len) == 0);
    ck_assert_msg(dt0[0] == dt0[1] && ds[0] == ds[1], "dt0 %.9g / %.9g, ds %.9g / %.9g", (double)dt0[0],
                  (double)dt0[1], (double)ds[0], (double)ds[1]);
    ck_assert(memcmp(da[0], da[1], sizeof(float) * (size_t)(n - 1)) == 0);
    double rt0, rs, ra[MAXL], size = 0.0;
    reference(&q, x, dy, len, &rt0, ra, &rs);
    for (size_t i = 0; i < len; i++) size += fabs((double)dy[i]);
    size *= 0.01 * (double)q.s * (double)n; /* g·s·Σ|dy|·n: the sums' scale */
    ck_assert_msg(fabs((double)dt0[0] - 0.01 * rt0) <= 1e-6 * size, "dt0 %.9g want %.9g", (double)dt0[0], 0.01 * rt0);
    ck_assert_msg(fabs((double)ds[0] - 0.01 * rs) <= 1e-6 * size, "ds %.9g want %.9g", (double)ds[0], 0.01 * rs);
    for (int j = 0; j < n - 1; j++)
        ck_assert_msg(fabs((double)da[0][j] - 0.01 * ra[j]) <= 1e-6 * size, "da[%d] %.9g want %.9g", j,
                      (double)da[0][j], 0.01 * ra[j]);
    /* and the forward */
    float *y[2] = {malloc(sizeof(float) * len), malloc(sizeof(float) * len)};
    for (int k = 0; k < 2; k++) {
        nb_set_threads(k + 1);
        nb_n2uq_forward(&q.p, x, len, y[k]);
    }
    nb_set_threads(had);
    ck_assert(memcmp(y[0], y[1], sizeof(float) * len) == 0);
    for (size_t i = 0; i < len; i += 97) ck_assert(y[0][i] == q.s * (float)count(T, n, x[i]));
    free(x);
    free(dy);
    free(dx[0]);
    free(dx[1]);
    free(y[0]);
    free(y[1]);
}
END_TEST

/* ------------------------------------------------------------------ init */

/* From the initial parameters the op is the unsigned uniform quantizer
 * s0·clamp(floor(x/s0 + 1/2), 0, n), s0 = 2·mean|x|/sqrt(n) (the
 * comparison skips the rare x within float rounding of a boundary). */
START_TEST(test_n2uq_init) {
    const int n = (1 << (_i + 2)) - 1;
    const size_t len = 20000;
    float *x = malloc(sizeof(float) * len), *y = malloc(sizeof(float) * len);
    nb_rng r;
    nb_rng_seed(&r, 5, (uint64_t)n);
    double sum = 0.0;
    for (size_t i = 0; i < len; i++) {
        const float v = 1.5f * nb_rng_normal(&r);
        x[i] = v > 0.0f ? v : 0.0f; /* after a ReLU */
        sum += (double)x[i];
    }
    params q;
    float a[MAXL];
    nb_n2uq_init(n, x, len, &q.t0, a, &q.s);
    const double s0 = 2.0 * sum / (double)len / sqrt((double)n);
    ck_assert_msg(fabs((double)q.s - s0) <= 1e-6 * s0, "s %.9g want %.9g", (double)q.s, s0);
    ck_assert(q.t0 == 0.5f * q.s);
    for (int j = 0; j < n - 1; j++) ck_assert(a[j] == q.s);
    params_set(&q, n, q.t0, a, q.s, 1.0f);
    nb_n2uq_forward(&q.p, x, len, y);
    int skipped = 0;
    for (size_t i = 0; i < len; i++) {
        const double v = (double)x[i] / (double)q.s + 0.5;
        if (fabs(v - nearbyint(v)) < 1e-5) {
            skipped++;
            continue;
        }
        const double k = fmin(fmax(floor(v), 0.0), (double)n);
        ck_assert_msg(y[i] == q.s * (float)k, "n %d x %.9g: y %.9g want %.9g", n, (double)x[i], (double)y[i],
                      (double)q.s * k);
    }
    ck_assert_msg(skipped < 20, "%d skipped", skipped);
    /* the clamp at both ends */
    const float xp[4] = {-1.0f, q.s * ((float)n + 3.0f), q.s * ((float)n - 0.25f), 1e30f};
    float yp[4];
    nb_n2uq_forward(&q.p, xp, 4, yp);
    expect_near(yp, (const float[]){0, q.s * (float)n, q.s * (float)n, q.s * (float)n}, 4, 0.0, "clamped");

    /* all zeros: s0 = 1; non-finite data: NaN */
    memset(x, 0, sizeof(float) * 10);
    nb_n2uq_init(n, x, 10, &q.t0, a, &q.s);
    ck_assert(q.s == 1.0f && q.t0 == 0.5f && a[0] == 1.0f);
    x[3] = INFINITY;
    nb_n2uq_init(n, x, 10, &q.t0, a, &q.s);
    ck_assert(isnan(q.s) && isnan(q.t0) && isnan(a[0]) && isnan(a[n - 2]));
    free(x);
    free(y);
}
END_TEST

int main(void) {
    Suite *s = suite_create("n2uq");
    TCase *tc = tcase_create("n2uq");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_n2uq_forward_hand);
    tcase_add_loop_test(tc, test_n2uq_forward_count, 0, 11);
    tcase_add_test(tc, test_n2uq_backward_hand);
    tcase_add_loop_test(tc, test_n2uq_finite_differences, 0, 7);
    tcase_add_test(tc, test_n2uq_tape);
    tcase_add_loop_test(tc, test_n2uq_threads, 0, 2);
    tcase_add_loop_test(tc, test_n2uq_init, 0, 7);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
