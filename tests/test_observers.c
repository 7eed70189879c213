/* Observers (quant/observer.c) against hand-computed values and against
 * independent computations in the test: order statistics by qsort, the
 * MSE-optimal clip of N(0, 1) by integration, TensorRT's KL by a direct
 * transcription of its pseudo-code. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nb_quant.h"
#include "nb_test.h"

static const nb_qspec SIGNED_SYM = {.bits = 8, .is_signed = 1, .symmetric = 1};
static const nb_qspec UNSIGNED_SYM = {.bits = 8, .is_signed = 0, .symmetric = 1};
static const nb_qspec ASYM = {.bits = 8, .is_signed = 0, .symmetric = 0};

static nb_observer_opts opts(nb_observer_kind k) { return nb_observer_opts_default(k); }

static void range_of(const nb_observer_opts *o, const nb_qspec *q, const float *x, size_t n, float *lo, float *hi) {
    nb_status st = nb_observe_range(o, q, x, n, lo, hi);
    ck_assert_msg(st == NB_OK, "nb_observe_range: %s", nb_last_error());
}

static void feed(nb_observer *ob, const float *x, size_t n) {
    nb_status st = nb_observer_update(ob, x, n);
    ck_assert_msg(st == NB_OK, "nb_observer_update: %s", nb_last_error());
}

static void obs_range(const nb_observer *ob, const nb_qspec *q, float *lo, float *hi) {
    nb_status st = nb_observer_range(ob, q, lo, hi);
    ck_assert_msg(st == NB_OK, "nb_observer_range: %s", nb_last_error());
}

static void expect_range(float lo, float hi, double want_lo, double want_hi, double tol, const char *what) {
    ck_assert_msg(fabs(lo - want_lo) <= tol && fabs(hi - want_hi) <= tol,
                  "%s: got [%.9g, %.9g], want [%.9g, %.9g] +- %g", what, lo, hi, want_lo, want_hi, tol);
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* x (or |x|) sorted, in double. Owned by the caller (free). */
static double *sorted_copy(const float *x, size_t n, int absolute) {
    double *s = malloc(n * sizeof *s);
    for (size_t i = 0; i < n; i++) s[i] = absolute ? fabs(x[i]) : x[i];
    qsort(s, n, sizeof *s, cmp_double);
    return s;
}

/* numpy's default percentile of sorted s: linear between the order
 * statistics around p/100 * (n - 1). */
static double percentile_sorted(const double *s, size_t n, double p) {
    const double pos = p / 100.0 * (double)(n - 1);
    const size_t k = (size_t)floor(pos);
    return k + 1 < n ? s[k] + (pos - (double)k) * (s[k + 1] - s[k]) : s[n - 1];
}

static double ref_percentile(const float *x, size_t n, int absolute, double p) {
    double *s = sorted_copy(x, n, absolute);
    const double v = percentile_sorted(s, n, p);
    free(s);
    return v;
}

/* ----------------------------------------------------------------- names */

START_TEST(test_names) {
    for (int k = 0; k < NB_OBS_COUNT; k++) {
        const char *name = nb_observer_name((nb_observer_kind)k);
        ck_assert_ptr_nonnull(name);
        ck_assert_int_eq(nb_observer_from_name(name), k);
    }
    ck_assert_str_eq(nb_observer_name(NB_OBS_MINMAX), "minmax");
    ck_assert_str_eq(nb_observer_name(NB_OBS_EMA), "ema");
    ck_assert_str_eq(nb_observer_name(NB_OBS_PERCENTILE), "percentile");
    ck_assert_str_eq(nb_observer_name(NB_OBS_MSE), "mse");
    ck_assert_str_eq(nb_observer_name(NB_OBS_KL), "kl");
    ck_assert_ptr_null(nb_observer_name(NB_OBS_COUNT));
    ck_assert_ptr_null(nb_observer_name((nb_observer_kind)-1));
    ck_assert_int_eq(nb_observer_from_name("entropy"), -1);
    ck_assert_int_eq(nb_observer_from_name("MinMax"), -1);
    ck_assert_int_eq(nb_observer_from_name(""), -1);
    ck_assert_int_eq(nb_observer_from_name(NULL), -1);

    nb_observer_opts o = nb_observer_opts_default(NB_OBS_KL);
    ck_assert_int_eq(o.kind, NB_OBS_KL);
    ck_assert_float_eq(o.momentum, 0.9f);
    ck_assert_float_eq(o.percentile, 99.99f);
    ck_assert_int_eq(o.grid, 100);
    ck_assert_int_eq(o.bins, 2048);
}
END_TEST

/* ------------------------------------------------------------ minmax, ema */

START_TEST(test_minmax_hand) {
    nb_observer_opts o = opts(NB_OBS_MINMAX);
    float lo, hi;
    range_of(&o, &SIGNED_SYM, (float[]){1.0f, -2.0f, 3.0f, 0.5f}, 4, &lo, &hi);
    expect_range(lo, hi, -2.0, 3.0, 0.0, "minmax");
    range_of(&o, &SIGNED_SYM, (float[]){1.0f, 2.0f}, 2, &lo, &hi);
    expect_range(lo, hi, 0.0, 2.0, 0.0, "minmax widened to 0 (positive)");
    range_of(&o, &ASYM, (float[]){-3.0f, -0.25f}, 2, &lo, &hi);
    expect_range(lo, hi, -3.0, 0.0, 0.0, "minmax widened to 0 (negative)");
    range_of(&o, &ASYM, NULL, 0, &lo, &hi);
    expect_range(lo, hi, 0.0, 0.0, 0.0, "n = 0");
    for (int k = 0; k < NB_OBS_COUNT; k++) { /* n = 0 is [0, 0] for every kind */
        nb_observer_opts ok = opts((nb_observer_kind)k);
        lo = hi = 7.0f;
        range_of(&ok, &SIGNED_SYM, NULL, 0, &lo, &hi);
        expect_range(lo, hi, 0.0, 0.0, 0.0, nb_observer_name((nb_observer_kind)k));
    }

    nb_observer *ob = nb_observer_new(&o);
    ck_assert_ptr_nonnull(ob);
    ck_assert_int_eq(nb_observer_batches(ob), 0);
    feed(ob, (float[]){1.0f, 2.0f}, 2);
    obs_range(ob, &SIGNED_SYM, &lo, &hi);
    expect_range(lo, hi, 0.0, 2.0, 0.0, "stateful minmax, one batch");
    feed(ob, (float[]){-1.0f, 5.0f, 0.5f}, 3);
    feed(ob, (float[]){0.5f}, 1);
    ck_assert_int_eq(nb_observer_batches(ob), 3);
    obs_range(ob, &ASYM, &lo, &hi);
    expect_range(lo, hi, -1.0, 5.0, 0.0, "stateful minmax");
    nb_observer_free(ob);
}
END_TEST

START_TEST(test_ema_hand) {
    nb_observer_opts o = opts(NB_OBS_EMA);
    o.momentum = 0.5f; /* every value below is exact in binary */
    nb_observer *ob = nb_observer_new(&o);
    ck_assert_ptr_nonnull(ob);
    float lo, hi;
    feed(ob, (float[]){-1.0f, 2.0f, 0.0f}, 3); /* first batch initialises: [-1, 2] */
    obs_range(ob, &SIGNED_SYM, &lo, &hi);
    expect_range(lo, hi, -1.0, 2.0, 0.0, "ema batch 1");
    feed(ob, (float[]){4.0f, -3.0f}, 2); /* 0.5 (-1) + 0.5 (-3) = -2, 0.5 * 2 + 0.5 * 4 = 3 */
    obs_range(ob, &SIGNED_SYM, &lo, &hi);
    expect_range(lo, hi, -2.0, 3.0, 0.0, "ema batch 2");
    feed(ob, NULL, 0); /* ignored */
    feed(ob, (float[]){1.0f, 2.0f}, 2); /* -1 + 0.5 = -0.5, 1.5 + 1 = 2.5 */
    obs_range(ob, &SIGNED_SYM, &lo, &hi);
    expect_range(lo, hi, -0.5, 2.5, 0.0, "ema batch 3");
    feed(ob, (float[]){3.0f, 2.0f}, 2); /* -0.25 + 1 = 0.75 (widened to 0), 1.25 + 1.5 = 2.75 */
    obs_range(ob, &SIGNED_SYM, &lo, &hi);
    expect_range(lo, hi, 0.0, 2.75, 0.0, "ema batch 4");
    ck_assert_int_eq(nb_observer_batches(ob), 4);
    nb_observer_free(ob);

    /* momentum 0.9: lo = 0.9 * -1 + 0.1 * -2 = -1.1 */
    o.momentum = 0.9f;
    ob = nb_observer_new(&o);
    feed(ob, (float[]){-1.0f, 1.0f}, 2);
    feed(ob, (float[]){-2.0f, 1.0f}, 2);
    obs_range(ob, &SIGNED_SYM, &lo, &hi);
    expect_range(lo, hi, -1.1, 1.0, 1e-6, "ema momentum 0.9");
    nb_observer_free(ob);

    /* nb_observe_range: ema is minmax over the slice */
    range_of(&o, &SIGNED_SYM, (float[]){-1.0f, 4.0f, 2.0f}, 3, &lo, &hi);
    expect_range(lo, hi, -1.0, 4.0, 0.0, "ema stateless");
}
END_TEST

/* ------------------------------------------------------------- percentile */

/* -5000..4999 shuffled */
static float *shuffled_range(size_t n, int first) {
    uint32_t *idx = malloc(n * sizeof *idx);
    for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)i;
    nb_rng rng;
    nb_rng_seed(&rng, 7, 0);
    nb_rng_shuffle(&rng, idx, n);
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)((int)idx[i] + first);
    free(idx);
    return x;
}

START_TEST(test_percentile_exact) {
    const size_t n = 10000;
    float *x = shuffled_range(n, -5000);
    nb_observer_opts o = opts(NB_OBS_PERCENTILE);
    o.percentile = 99.0f;
    float lo, hi;
    /* |x| sorted is 0, 1, 1, 2, 2, ..., 4999, 4999, 5000; position
     * 0.99 * 9999 = 9899.01 falls between a[9899] = a[9900] = 4950. */
    range_of(&o, &SIGNED_SYM, x, n, &lo, &hi);
    expect_range(lo, hi, -4950.0, 4950.0, 0.0, "symmetric signed p99");
    range_of(&o, &UNSIGNED_SYM, x, n, &lo, &hi);
    expect_range(lo, hi, 0.0, 4950.0, 0.0, "symmetric unsigned p99");
    /* x sorted is -5000 + i: positions 0.01 * 9999 = 99.99 and 9899.01 */
    range_of(&o, &ASYM, x, n, &lo, &hi);
    expect_range(lo, hi, -4900.01, 4899.01, 1e-3, "asymmetric p99");

    const float ps[] = {99.99f, 99.9f, 90.0f, 50.0f, 12.5f, 100.0f};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        o.percentile = ps[i];
        const double p = ps[i];
        range_of(&o, &SIGNED_SYM, x, n, &lo, &hi);
        const double t = ref_percentile(x, n, 1, p);
        expect_range(lo, hi, -t, t, 1e-3, "symmetric vs qsort");
        range_of(&o, &ASYM, x, n, &lo, &hi);
        double a = ref_percentile(x, n, 0, 100.0 - p), b = ref_percentile(x, n, 0, p);
        expect_range(lo, hi, fmin(fmin(a, b), 0.0), fmax(fmax(a, b), 0.0), 1e-3, "asymmetric vs qsort");
    }
    o.percentile = 100.0f;
    range_of(&o, &ASYM, x, n, &lo, &hi);
    expect_range(lo, hi, -5000.0, 4999.0, 0.0, "p100 is min-max");

    /* Many repeated values (a ReLU's zeros) and a single value. */
    float *r = malloc(n * sizeof *r);
    for (size_t i = 0; i < n; i++) r[i] = i % 4 ? 0.0f : x[i];
    o.percentile = 97.5f;
    range_of(&o, &SIGNED_SYM, r, n, &lo, &hi);
    const double tr = ref_percentile(r, n, 1, 97.5);
    expect_range(lo, hi, -tr, tr, 1e-3, "repeated zeros");
    range_of(&o, &ASYM, (float[]){2.5f}, 1, &lo, &hi);
    expect_range(lo, hi, 0.0, 2.5, 0.0, "one value");
    free(r);
    free(x);
}
END_TEST

START_TEST(test_percentile_histogram) {
    const size_t n = 10000;
    float *x = shuffled_range(n, -5000);
    const int bins[] = {2048, 64};
    const float ps[] = {99.99f, 99.0f, 90.0f, 50.0f};
    for (size_t b = 0; b < 2; b++) {
        nb_observer_opts o = opts(NB_OBS_PERCENTILE);
        o.bins = bins[b];
        /* R = 8192 (the power of two above 5000), 2 bins bins per sign */
        const double w = 8192.0 / (2.0 * bins[b]);
        for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
            o.percentile = ps[i];
            nb_observer *ob = nb_observer_new(&o);
            for (size_t off = 0; off < n; off += 1000) feed(ob, x + off, 1000);
            float lo, hi;
            obs_range(ob, &SIGNED_SYM, &lo, &hi);
            const double t = ref_percentile(x, n, 1, ps[i]);
            expect_range(lo, hi, -t, t, w, "histogram symmetric");
            obs_range(ob, &ASYM, &lo, &hi);
            const double a = ref_percentile(x, n, 0, 100.0 - ps[i]), c = ref_percentile(x, n, 0, ps[i]);
            expect_range(lo, hi, fmin(a, c), fmax(a, c), w, "histogram asymmetric");
            nb_observer_free(ob);
        }
    }
    free(x);
}
END_TEST

/* --------------------------------------------------------------------- mse */

static double phi(double x) { return exp(-0.5 * x * x) / sqrt(2.0 * M_PI); }
static double Phi(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

/* E[(Q_t(X) - X)^2] for X ~ N(0, 1), Q_t the symmetric grid of step
 * s = t / qmax and codes qmin..qmax: per code q, over the x that round to
 * it, int (v - x)^2 phi = (v^2 + 1) dPhi + 2 v dphi - d(x phi), v = s q. */
static double gauss_mse(double t, int qmin, int qmax) {
    const double s = t / qmax;
    double e = 0.0;
    for (int q = qmin; q <= qmax; q++) {
        const double v = s * q;
        const double a = q == qmin ? -INFINITY : s * (q - 0.5), b = q == qmax ? INFINITY : s * (q + 0.5);
        const double pa = isinf(a) ? 0.0 : phi(a), pb = isinf(b) ? 0.0 : phi(b);
        const double xpa = isinf(a) ? 0.0 : a * pa, xpb = isinf(b) ? 0.0 : b * pb;
        e += (v * v + 1.0) * (Phi(b) - Phi(a)) + 2.0 * v * (pb - pa) - (xpb - xpa);
    }
    return e;
}

/* The same by Simpson's rule on [-12, 12] (the integrand is continuous;
 * only its slope jumps at the rounding boundaries). */
static double gauss_mse_simpson(double t, int qmin, int qmax) {
    const double s = t / qmax, A = -12.0, B = 12.0;
    const int m = 240000;
    const double h = (B - A) / m;
    double acc = 0.0;
    for (int i = 0; i <= m; i++) {
        const double x = A + i * h;
        const double q = fmin(fmax(nearbyint(x / s), qmin), qmax), e = s * q - x;
        acc += (i == 0 || i == m ? 1.0 : i % 2 ? 4.0 : 2.0) * e * e * phi(x);
    }
    return acc * h / 3.0;
}

START_TEST(test_mse_gaussian) {
    const nb_qspec q4 = {.bits = 4, .is_signed = 1, .symmetric = 1};
    int qmin, qmax;
    nb_qspec_range(&q4, &qmin, &qmax); /* -8..7 */
    ck_assert_msg(fabs(gauss_mse(2.5, qmin, qmax) - gauss_mse_simpson(2.5, qmin, qmax)) < 1e-9,
                  "closed form %.12g vs Simpson %.12g", gauss_mse(2.5, qmin, qmax), gauss_mse_simpson(2.5, qmin, qmax));
    /* The optimum clip t* over a grid of step 5e-4. */
    double tstar = 0.0, best = INFINITY;
    for (double t = 1.0; t <= 4.0; t += 5e-4) {
        const double e = gauss_mse(t, qmin, qmax);
        if (e < best) best = e, tstar = t;
    }
    ck_assert_msg(tstar > 2.3 && tstar < 2.8, "t* = %g", tstar);

    const size_t n = 1000000;
    float *x = malloc(n * sizeof *x);
    nb_rng rng;
    nb_rng_seed(&rng, 2024, 1);
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        x[i] = nb_rng_normal(&rng);
        m = fmaxf(m, fabsf(x[i]));
    }
    nb_observer_opts o = opts(NB_OBS_MSE);
    /* The observer can only land on a candidate r m, r = i / grid: the
     * nearest is within half a step of t*, and a flat optimum (a 1e6-sample
     * estimate of it) may pick a neighbour, so allow one step plus 1%. */
    const double tol = m / o.grid + 0.01 * tstar;
    float lo, hi;
    range_of(&o, &q4, x, n, &lo, &hi);
    ck_assert_float_eq(lo, -hi);
    ck_assert_msg(fabs(hi - tstar) <= tol, "exact mse clip %g vs t* %g (tol %g)", hi, tstar, tol);

    nb_observer *ob = nb_observer_new(&o);
    for (size_t off = 0; off < n; off += n / 8) feed(ob, x + off, n / 8);
    float hlo, hhi;
    obs_range(ob, &q4, &hlo, &hhi);
    ck_assert_float_eq(hlo, -hhi);
    ck_assert_msg(fabs(hhi - tstar) <= tol, "histogram mse clip %g vs t* %g (tol %g)", hhi, tstar, tol);
    ck_assert_msg(fabs(hhi - hi) <= 1.01 * m / o.grid, "histogram %g vs exact %g: more than one candidate apart",
                  hhi, hi);
    nb_observer_free(ob);
    free(x);
}
END_TEST

/* sum (Q(x) - x)^2 in double, written from the formula. */
static double ref_sq_error(const float *x, size_t n, const nb_qspec *q, float lo, float hi) {
    float s;
    int32_t z;
    int qmin, qmax;
    nb_qspec_range(q, &qmin, &qmax);
    nb_qparams_from_range(q, lo, hi, &s, &z);
    double e = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double c = fmin(fmax(rintf(x[i] / s) + z, qmin), qmax), d = (double)s * (c - z) - x[i];
        e += d * d;
    }
    return e;
}

/* Exact mse over a small slice against every candidate, for each kind of
 * spec: the observer's choice must be a best candidate. */
START_TEST(test_mse_candidates) {
    const nb_qspec specs[] = {{.bits = 3, .is_signed = 1, .symmetric = 1},
                              {.bits = 3, .is_signed = 1, .symmetric = 1, .narrow = 1},
                              {.bits = 4, .is_signed = 0, .symmetric = 1},
                              {.bits = 3, .symmetric = 0}};
    const size_t n = 3001; /* not a multiple of the 8-lane blocks */
    float *x = malloc(n * sizeof *x);
    nb_rng rng;
    nb_rng_seed(&rng, 11, 0);
    for (size_t i = 0; i < n; i++) { /* skewed: Laplace-like, with a heavier right tail */
        const float u = nb_rng_uniform(&rng) + 1e-7f;
        x[i] = i % 3 ? -logf(u) : 0.5f * logf(u);
    }
    nb_observer_opts o = opts(NB_OBS_MSE);
    o.grid = 40;
    float mn = x[0], mx = x[0];
    for (size_t i = 0; i < n; i++) mn = fminf(mn, x[i]), mx = fmaxf(mx, x[i]);
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        const nb_qspec *q = &specs[k];
        float lo, hi;
        range_of(&o, q, x, n, &lo, &hi);
        double best = INFINITY;
        int bi = 0;
        for (int i = 1; i <= o.grid; i++) {
            const float r = (float)i / (float)o.grid, m = fmaxf(-mn, mx);
            const int sym = q->symmetric && q->is_signed;
            const float cl = sym ? -r * m : r * mn, ch = sym ? r * m : r * mx;
            const double e = ref_sq_error(x, n, q, cl, ch);
            if (e <= best) best = e, bi = i;
        }
        const double got = ref_sq_error(x, n, q, lo, hi);
        ck_assert_msg(got <= best * (1.0 + 1e-6), "spec %zu: chose [%g, %g] with error %.9g, best is %.9g (i = %d)", k,
                      lo, hi, got, best, bi);
        ck_assert_msg(lo <= 0.0f && hi >= 0.0f && bi < o.grid, "spec %zu: [%g, %g], best i %d", k, lo, hi, bi);
    }
    free(x);
}
END_TEST

/* ---------------------------------------------------------------------- kl */

/* TensorRT's loop written out directly: O(i) per candidate, no prefix sums.
 * Fills kl[i] for i = L..nb (INFINITY where Q misses P's mass). */
static void ref_kl(const double *h, size_t nb, size_t L, double *kl) {
    double N = 0.0;
    for (size_t j = 0; j < nb; j++) N += h[j];
    double *P = malloc(nb * sizeof *P), *Q = malloc(nb * sizeof *Q);
    for (size_t i = L; i <= nb; i++) {
        double out = 0.0, sp = 0.0, sq = 0.0;
        for (size_t j = i; j < nb; j++) out += h[j];
        for (size_t j = 0; j < i; j++) P[j] = h[j] + (j == i - 1 ? out : 0.0);
        for (size_t j = 0; j < i;) { /* group g = j * L / i */
            const size_t g = j * L / i;
            size_t e = j;
            double mass = 0.0, nz = 0.0;
            while (e < i && e * L / i == g) mass += h[e], nz += P[e] > 0.0, e++;
            for (size_t k = j; k < e; k++) Q[k] = P[k] > 0.0 ? mass / nz : 0.0;
            j = e;
        }
        for (size_t j = 0; j < i; j++) sp += P[j], sq += Q[j];
        double d = 0.0;
        for (size_t j = 0; j < i; j++) {
            if (P[j] <= 0.0) continue;
            d += Q[j] > 0.0 ? P[j] / sp * log((P[j] / sp) / (Q[j] / sq)) : INFINITY;
        }
        kl[i] = d;
    }
    free(P);
    free(Q);
}

/* Does t = min((i + 0.5) w, amax) for an i whose KL is (within 1e-9) the
 * reference minimum? */
static void check_kl_choice(const double *h, size_t nb, size_t L, double w, double amax, double t, const char *what) {
    double *kl = malloc((nb + 1) * sizeof *kl), best = INFINITY;
    ref_kl(h, nb, L, kl);
    for (size_t i = L; i <= nb; i++) best = fmin(best, kl[i]);
    int ok = 0;
    size_t bi = 0;
    for (size_t i = L; i <= nb; i++) {
        if (kl[i] == best) bi = i;
        if (kl[i] <= best + 1e-9 && fabs(fmin((i + 0.5) * w, amax) - t) <= 1e-5 * amax) ok = 1;
    }
    ck_assert_msg(ok, "%s: threshold %g, reference best i = %zu (t = %g, KL %g)", what, t, bi,
                  fmin((bi + 0.5) * w, amax), best);
    free(kl);
}

START_TEST(test_kl_hand) {
    /* |x| histogram over [0, 4] with 4 bins of width 1: h = [6, 2, 1, 1];
     * 2-bit signed symmetric: nlevels = qmax + 1 = 2. By hand:
     *   i = 2: P = [6, 4]/10, Q = [6, 2]/8          KL = 0.0541
     *   i = 3: P = [6, 2, 2]/10, Q = [4, 4, 1]/9    KL = 0.1379
     *   i = 4: P = [6, 2, 1, 1]/10, Q = [4, 4, 1, 1]/10  KL = 0.1046
     * so i = 2 and t = 2.5 bins. */
    const float x[] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 1.5f, -1.5f, 2.5f, -4.0f};
    const nb_qspec q2 = {.bits = 2, .is_signed = 1, .symmetric = 1};
    const nb_qspec a2 = {.bits = 2, .symmetric = 0};
    nb_observer_opts o = opts(NB_OBS_KL);
    o.bins = 4;
    float lo, hi;
    range_of(&o, &q2, x, 10, &lo, &hi);
    expect_range(lo, hi, -2.5, 2.5, 1e-6, "kl hand, symmetric");
    /* asymmetric: min < 0 so nlevels = 2^(b-1) = 2, [max(min, -t), min(max, t)] */
    range_of(&o, &a2, x, 10, &lo, &hi);
    expect_range(lo, hi, -2.5, 2.5, 1e-6, "kl hand, asymmetric");
    /* The stateful histogram has R = 8 and 8 bins a sign (width 1 again),
     * 4.0 in bin 4: h = [6, 2, 1, 0, 1]. i = 2, 3 as above; i = 4: Q =
     * [4, 4, .5, .5]/9, KL 0.1379; i = 5: Q = [3, 3, 3, 0, 1]/10, KL 0.2249. */
    nb_observer *ob = nb_observer_new(&o);
    feed(ob, x, 10);
    obs_range(ob, &q2, &lo, &hi);
    expect_range(lo, hi, -2.5, 2.5, 1e-6, "kl hand, stateful");
    nb_observer_free(ob);
    /* h = [4, 2, 1, 1]: i = 2: 0.0589, i = 3: 0.0822, i = 4: 0.0425 -> no
     * clipping: t = min(4.5, max|x|) = 4. */
    const float y[] = {0.5f, 0.5f, 0.5f, 0.5f, 1.5f, 1.5f, 2.5f, 4.0f};
    range_of(&o, &q2, y, 8, &lo, &hi);
    expect_range(lo, hi, -4.0, 4.0, 1e-6, "kl hand, no clipping");
    range_of(&o, &(nb_qspec){.bits = 2, .is_signed = 0, .symmetric = 1}, y, 8, &lo, &hi);
    expect_range(lo, hi, 0.0, 4.0, 1e-6, "kl hand, unsigned"); /* 4 levels = 4 bins: only i = 4 */
}
END_TEST

/* Bulk on [-1, 1] and 10 of 100010 values at +-100: unclipped, Q's first
 * group (256 bins of width 100/2048 at 4 bits) holds the whole bulk and
 * flattens it, so the threshold must cut the outliers and sit near 1. */
static void kl_outliers_case(int triangular) {
    const size_t n = 100010;
    float *x = malloc(n * sizeof *x);
    nb_rng rng;
    nb_rng_seed(&rng, 5, (uint64_t)triangular);
    for (size_t i = 0; i < n - 10; i++) {
        /* triangular: min of two uniforms has density 2 (1 - u) */
        const float u = triangular ? fminf(nb_rng_uniform(&rng), nb_rng_uniform(&rng)) : nb_rng_uniform(&rng);
        x[i] = nb_rng_u32(&rng) & 1 ? u : -u;
    }
    for (size_t i = n - 10; i < n; i++) x[i] = i % 2 ? 100.0f : -100.0f;
    const char *what = triangular ? "triangular bulk" : "uniform bulk";
    const nb_qspec q4 = {.bits = 4, .is_signed = 1, .symmetric = 1};
    nb_observer_opts o = opts(NB_OBS_KL);
    float lo, hi;
    range_of(&o, &q4, x, n, &lo, &hi);
    ck_assert_msg(hi > 0.8f && hi < 1.25f && lo == -hi, "%s: [%g, %g]", what, lo, hi);
    nb_observer *ob = nb_observer_new(&o);
    for (size_t off = 0; off < n; off += 20002) feed(ob, x + off, 20002);
    obs_range(ob, &q4, &lo, &hi);
    ck_assert_msg(hi > 0.8f && hi < 1.25f && lo == -hi, "%s, stateful: [%g, %g]", what, lo, hi);
    nb_observer_free(ob);
    /* At 8 bits (128 levels) the bulk spans only ~21 bins: nothing to gain
     * from clipping inside it, and no candidate below 128 bins. */
    const nb_qspec q8 = {.bits = 8, .is_signed = 1, .symmetric = 1};
    range_of(&o, &q8, x, n, &lo, &hi);
    ck_assert_msg(hi >= 128 * 100.0f / 2048, "%s, 8 bits: [%g, %g]", what, lo, hi);
    /* Asymmetric on |x| (min 0: all 16 codes for [0, t]) */
    for (size_t i = 0; i < n; i++) x[i] = fabsf(x[i]);
    range_of(&o, &(nb_qspec){.bits = 4, .symmetric = 0}, x, n, &lo, &hi);
    ck_assert_msg(lo == 0.0f && hi > 0.8f && hi < 1.25f, "%s, asymmetric: [%g, %g]", what, lo, hi);
    free(x);
}

START_TEST(test_kl_outliers) {
    kl_outliers_case(0);
    kl_outliers_case(1);
}
END_TEST

/* The observer's KL against the direct transcription, on Laplace data. */
START_TEST(test_kl_reference) {
    const size_t n = 20000;
    float *x = malloc(n * sizeof *x);
    nb_rng rng;
    nb_rng_seed(&rng, 99, 3);
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float u = nb_rng_uniform(&rng) + 1e-7f;
        x[i] = (nb_rng_u32(&rng) & 1 ? 1.0f : -1.0f) * -logf(u);
        amax = fmaxf(amax, fabsf(x[i]));
    }
    const nb_qspec specs[] = {{.bits = 3, .is_signed = 1, .symmetric = 1},
                              {.bits = 8, .is_signed = 0, .symmetric = 1},
                              {.bits = 4, .symmetric = 0}};
    const size_t levels[] = {4, 256, 8};
    nb_observer_opts o = opts(NB_OBS_KL);
    o.bins = 512;
    for (size_t k = 0; k < 3; k++) {
        /* nb_observe_range: bins over [0, amax] */
        const size_t nb = (size_t)o.bins;
        double *h = calloc(2 * nb, sizeof *h);
        for (size_t i = 0; i < n; i++) {
            size_t b = (size_t)(fabs((double)x[i]) * ((double)nb / amax));
            h[b < nb ? b : nb - 1] += 1.0;
        }
        float lo, hi;
        range_of(&o, &specs[k], x, n, &lo, &hi);
        check_kl_choice(h, nb, levels[k], (double)amax / nb, amax, hi, "nb_observe_range");
        /* stateful: 2 bins bins a sign over [0, R), R = 2^e > amax */
        int e;
        frexp(amax, &e);
        const double R = ldexp(1.0, e), w = R / (2.0 * nb);
        memset(h, 0, 2 * nb * sizeof *h);
        size_t used = 0;
        for (size_t i = 0; i < n; i++) {
            const size_t b = (size_t)(fabs((double)x[i]) / w);
            h[b] += 1.0;
            used = b + 1 > used ? b + 1 : used;
        }
        nb_observer *ob = nb_observer_new(&o);
        feed(ob, x, n / 2);
        feed(ob, x + n / 2, n - n / 2);
        obs_range(ob, &specs[k], &lo, &hi);
        check_kl_choice(h, used, levels[k], w, amax, hi, "stateful");
        nb_observer_free(ob);
        free(h);
    }
    free(x);
}
END_TEST

/* ------------------------------------------------------------------ growth */

/* Three batches, each 10x the range of the last, 1000 values each: the
 * percentile at ranks just below and above 1000 and 2000 tells whether a
 * single count was lost or doubled when bins merged. */
START_TEST(test_histogram_growth_counts) {
    const float vals[3] = {-0.25f, 2.5f, -25.0f};
    nb_observer_opts o = opts(NB_OBS_PERCENTILE);
    float *b = malloc(1000 * sizeof *b);
    /* Final R = 32, 4096 bins a sign: w = 1/128. */
    const double w = 32.0 / 4096.0;
    const struct {
        float p;
        double abs_t, lo, hi;
    } cases[] = {
        {66.68f, 25.0, -25.0, 2.5},   /* ranks 2000.4 (|x|: 25; x: 2.5) and 999.6 (x: -25) */
        {66.65f, 2.5, -0.25, -0.25},  /* 1999.5 (|x|: 2.5; x: -0.25) and 1000.5 (x: -0.25) */
        {33.35f, 2.5, -0.25, -0.25},  /* |x|: 1000.5 -> 2.5; x (p < 50): 1999.5 and 1000.5 */
        {33.32f, 0.25, -25.0, 2.5},   /* |x|: 999.6 -> 0.25; x: 2000.4 and 999.6 */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        o.percentile = cases[c].p;
        nb_observer *ob = nb_observer_new(&o);
        for (int k = 0; k < 3; k++) {
            for (int i = 0; i < 1000; i++) b[i] = vals[k];
            feed(ob, b, 1000);
        }
        ck_assert_int_eq(nb_observer_batches(ob), 3);
        float lo, hi;
        obs_range(ob, &SIGNED_SYM, &lo, &hi);
        expect_range(lo, hi, -cases[c].abs_t, cases[c].abs_t, w, "growth, |x|");
        obs_range(ob, &ASYM, &lo, &hi);
        expect_range(lo, hi, fmin(cases[c].lo, 0.0), fmax(cases[c].hi, 0.0), w, "growth, x");
        nb_observer_free(ob);
    }
    free(b);
}
END_TEST

START_TEST(test_histogram_growth_random) {
    const size_t nb = 100000;
    float *x = malloc(3 * nb * sizeof *x);
    nb_rng rng;
    nb_rng_seed(&rng, 3, 3);
    for (size_t i = 0; i < nb; i++) x[i] = 2.0f * nb_rng_uniform(&rng) - 1.0f;         /* [-1, 1): R = 1 */
    for (size_t i = nb; i < 2 * nb; i++) x[i] = 20.0f * nb_rng_uniform(&rng) - 10.0f; /* 10x: R = 16 */
    for (size_t i = 2 * nb; i < 3 * nb; i++) x[i] = 0.1f * nb_rng_normal(&rng);      /* back small */
    const float ps[] = {50.0f, 90.0f, 99.0f, 99.9f};
    const double w = 16.0 / 4096.0; /* R = 16 */
    double *sa = sorted_copy(x, 3 * nb, 1), *sx = sorted_copy(x, 3 * nb, 0);
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        nb_observer_opts o = opts(NB_OBS_PERCENTILE);
        o.percentile = ps[i];
        nb_observer *ob = nb_observer_new(&o);
        for (int k = 0; k < 3; k++) feed(ob, x + k * nb, nb);
        float lo, hi;
        obs_range(ob, &SIGNED_SYM, &lo, &hi);
        const double t = percentile_sorted(sa, 3 * nb, ps[i]);
        expect_range(lo, hi, -t, t, w, "growth random, |x|");
        obs_range(ob, &ASYM, &lo, &hi);
        const double a = percentile_sorted(sx, 3 * nb, 100.0 - ps[i]), c = percentile_sorted(sx, 3 * nb, ps[i]);
        expect_range(lo, hi, fmin(fmin(a, c), 0.0), fmax(fmax(a, c), 0.0), w, "growth random, x");
        nb_observer_free(ob);
    }
    free(sa);
    free(sx);
    free(x);
}
END_TEST

/* ------------------------------------------------------------------ errors */

START_TEST(test_nonfinite) {
    float x[16];
    for (int i = 0; i < 16; i++) x[i] = 0.1f * i;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < NB_OBS_COUNT; k++) {
        nb_observer_opts o = opts((nb_observer_kind)k);
        for (int b = 0; b < 3; b++) {
            x[7] = bad[b];
            x[12] = bad[(b + 1) % 3];
            float lo = 1.0f, hi = 1.0f;
            ck_assert_int_eq(nb_observe_range(&o, &SIGNED_SYM, x, 16, &lo, &hi), NB_STATUS_NUMERIC);
            ck_assert_msg(strstr(nb_last_error(), "index 7") != NULL, "message: %s", nb_last_error());

            nb_observer *ob = nb_observer_new(&o);
            feed(ob, x, 7); /* the finite prefix */
            ck_assert_int_eq(nb_observer_update(ob, x, 16), NB_STATUS_NUMERIC);
            ck_assert_msg(strstr(nb_last_error(), "index 7") != NULL, "message: %s", nb_last_error());
            ck_assert_int_eq(nb_observer_batches(ob), 1); /* the bad batch left no trace */
            obs_range(ob, &ASYM, &lo, &hi);
            ck_assert_msg(hi <= 0.6f + 1e-6f && lo == 0.0f, "%s after a rejected batch: [%g, %g]",
                          nb_observer_name((nb_observer_kind)k), lo, hi);
            nb_observer_free(ob);
        }
        x[7] = 0.7f;
        x[12] = 1.2f;
    }
}
END_TEST

START_TEST(test_empty_and_bad_options) {
    for (int k = 0; k < NB_OBS_COUNT; k++) {
        nb_observer_opts o = opts((nb_observer_kind)k);
        nb_observer *ob = nb_observer_new(&o);
        ck_assert_ptr_nonnull(ob);
        float lo, hi;
        ck_assert_int_eq(nb_observer_range(ob, &SIGNED_SYM, &lo, &hi), NB_STATUS_BAD_INPUT);
        feed(ob, NULL, 0);
        ck_assert_int_eq(nb_observer_range(ob, &SIGNED_SYM, &lo, &hi), NB_STATUS_BAD_INPUT);
        ck_assert_int_eq(nb_observer_batches(ob), 0);
        /* all zeros: a valid, degenerate range */
        feed(ob, (float[]){0.0f, -0.0f, 0.0f}, 3);
        obs_range(ob, &SIGNED_SYM, &lo, &hi);
        expect_range(lo, hi, 0.0, 0.0, 0.0, "zeros");
        nb_observer_free(ob);
    }
    nb_observer_free(NULL);

    float lo, hi;
    const float x[] = {1.0f, 2.0f};
    nb_observer_opts o = opts(NB_OBS_PERCENTILE);
    o.percentile = 0.0f;
    ck_assert_ptr_null(nb_observer_new(&o));
    ck_assert_int_eq(nb_observe_range(&o, &SIGNED_SYM, x, 2, &lo, &hi), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "percentile") != NULL);
    o.percentile = 100.5f;
    ck_assert_int_eq(nb_observe_range(&o, &SIGNED_SYM, x, 2, &lo, &hi), NB_STATUS_BAD_INPUT);
    o = opts(NB_OBS_KL);
    o.bins = 0;
    ck_assert_ptr_null(nb_observer_new(&o));
    ck_assert_int_eq(nb_observe_range(&o, &SIGNED_SYM, x, 2, &lo, &hi), NB_STATUS_BAD_INPUT);
    o = opts(NB_OBS_MSE);
    o.grid = 0;
    ck_assert_ptr_null(nb_observer_new(&o));
    o = opts(NB_OBS_EMA);
    o.momentum = 1.5f;
    ck_assert_ptr_null(nb_observer_new(&o));
    o = opts(NB_OBS_MINMAX);
    o.bins = 0; /* not read by minmax */
    o.kind = NB_OBS_COUNT;
    ck_assert_ptr_null(nb_observer_new(&o));
    o.kind = NB_OBS_MINMAX;
    nb_observer *ob = nb_observer_new(&o);
    ck_assert_ptr_nonnull(ob);
    nb_observer_free(ob);

    /* Allocation failures come back as NB_STATUS_OOM / NULL. */
    const float y[] = {1.0f, -2.0f, 3.0f};
    o = opts(NB_OBS_PERCENTILE);
    nb_alloc_fail_after(1);
    ck_assert_int_eq(nb_observe_range(&o, &SIGNED_SYM, y, 3, &lo, &hi), NB_STATUS_OOM);
    o = opts(NB_OBS_KL);
    nb_alloc_fail_after(1);
    ck_assert_int_eq(nb_observe_range(&o, &SIGNED_SYM, y, 3, &lo, &hi), NB_STATUS_OOM);
    for (long k = 1; k <= 3; k++) {
        nb_alloc_fail_after(k);
        ck_assert_ptr_null(nb_observer_new(&o));
    }
    nb_alloc_fail_after(0);
    ob = nb_observer_new(&o);
    feed(ob, y, 3);
    for (long k = 1; k <= 2; k++) { /* the histogram copy, then KL's prefix sums */
        nb_alloc_fail_after(k);
        ck_assert_int_eq(nb_observer_range(ob, &SIGNED_SYM, &lo, &hi), NB_STATUS_OOM);
    }
    nb_alloc_fail_after(0);
    obs_range(ob, &SIGNED_SYM, &lo, &hi);
    nb_observer_free(ob);
}
END_TEST

/* ReLU outputs: a spike of exact zeros must not drag the KL threshold to
 * the first candidate (it did: 8-bit thresholds of 0.4% of the range). */
START_TEST(test_kl_relu_spike) {
    const size_t n = 200000;
    float *x = nb_malloc(n * sizeof(float));
    nb_rng r;
    nb_rng_seed(&r, 21, 0);
    for (size_t i = 0; i < n; i++) {
        const float v = nb_rng_normal(&r) - 0.3f;
        x[i] = v > 0.0f ? v : 0.0f; /* ReLU(N(-0.3, 1)): ~62% exact zeros */
    }
    nb_observer_opts o = nb_observer_opts_default(NB_OBS_KL);
    const nb_qspec u8 = {.bits = 8, .is_signed = 0, .symmetric = 1};
    float lo, hi;
    ck_assert_int_eq(nb_observe_range(&o, &u8, x, n, &lo, &hi), NB_OK);
    ck_assert_msg(lo == 0.0f && hi > 2.0f, "stateless KL threshold %g", (double)hi);
    nb_observer *ob = nb_observer_new(&o);
    ck_assert_int_eq(nb_observer_update(ob, x, n), NB_OK);
    ck_assert_int_eq(nb_observer_range(ob, &u8, &lo, &hi), NB_OK);
    ck_assert_msg(lo == 0.0f && hi > 2.0f, "stateful KL threshold %g", (double)hi);
    nb_observer_free(ob);
    nb_free(x);
}
END_TEST

static Suite *observers_suite(void) {
    Suite *s = suite_create("observers");
    TCase *tc = tcase_create("observers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_minmax_hand);
    tcase_add_test(tc, test_ema_hand);
    tcase_add_test(tc, test_percentile_exact);
    tcase_add_test(tc, test_percentile_histogram);
    tcase_add_test(tc, test_mse_gaussian);
    tcase_add_test(tc, test_mse_candidates);
    tcase_add_test(tc, test_kl_hand);
    tcase_add_test(tc, test_kl_outliers);
    tcase_add_test(tc, test_kl_reference);
    tcase_add_test(tc, test_kl_relu_spike);
    tcase_add_test(tc, test_histogram_growth_counts);
    tcase_add_test(tc, test_histogram_growth_random);
    tcase_add_test(tc, test_nonfinite);
    tcase_add_test(tc, test_empty_and_bad_options);
    suite_add_tcase(s, tc);
    return s;
}


int main(void) { return nb_test_run(observers_suite()); }
