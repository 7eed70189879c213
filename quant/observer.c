/*
 * Observers: the real range [lo, hi] a uniform quantizer should cover
 * (ALGORITHMS.md §2). nb_observe_range looks at one slice of values at
 * once (a weight tensor, channel or group) and is exact over them;
 * nb_observer_* is fed activation batches one by one and keeps O(bins)
 * state. Every range returned is widened to contain 0 (lo <= 0 <= hi).
 * Options a kind reads must be in range (NB_STATUS_BAD_INPUT, or NULL from
 * nb_observer_new); options it does not read are ignored. A zero-length
 * batch is ignored (not counted); n = 0 in nb_observe_range gives [0, 0].
 *
 * Semantics ("symmetric" and "signed" are the spec's flags; for a symmetric
 * spec the range is [-t, t] when signed and [0, t] when unsigned):
 * - minmax: [min, max] of everything seen.
 * - ema: lo, hi = moving averages of the per-batch min and max,
 *   new = momentum * old + (1 - momentum) * batch, the first batch
 *   initialising them (PyTorch's MovingAverageMinMaxObserver).
 *   nb_observe_range: as minmax.
 * - percentile p: symmetric specs: t = the p-th percentile of |x|;
 *   asymmetric: lo = the (100-p)-th and hi = the p-th percentile of x (the
 *   smaller of the two is lo when p < 50). Exact in nb_observe_range, with
 *   numpy's default ("linear") interpolation: position p/100 * (n - 1) in
 *   the sorted values. Stateful: from the histogram, rank p/100 * N with
 *   linear interpolation inside the bin (within one bin width of exact).
 * - mse: candidates r * [min, max] (r * [-m, m], m = max|x|, for symmetric
 *   signed specs), r = i / grid, i = 1..grid; each goes through
 *   nb_qparams_from_range and the one minimising sum (Q(x) - x)^2 wins,
 *   ties going to the larger r. Q(x) = s (clamp(rint(x / s) + z, qmin,
 *   qmax) - z). Exact over the values in nb_observe_range; stateful: over
 *   the histogram with each bin's count spread uniformly over the bin (its
 *   squared error integrated exactly, the outermost bins cut at the exact
 *   min and max).
 * - kl (TensorRT entropy calibration, Migacz, GTC 2017): a histogram of |x|
 *   (nb_observe_range: `bins` bins over [0, max|x|], as TensorRT; stateful:
 *   the observer's own histogram, between `bins` and 2 `bins` bins over
 *   [0, max|x|], see below). nlevels = qmax + 1 for symmetric specs
 *   (signed: 2^(b-1), TensorRT's 128 at 8 bits; unsigned: 2^b); asymmetric
 *   specs (our choice): 2^b when min >= 0, else 2^(b-1) (the codes are
 *   then shared by both signs). For each i = nlevels..nbins: P = the first i bins with the mass
 *   of bins >= i added to bin i-1; Q = the first i bins *without* that
 *   outlier mass (as TensorRT, MXNet and NVIDIA's pytorch-quantization),
 *   bin j in group floor(j * nlevels / i), each group's mass spread evenly
 *   over the bins of the group where P is non-zero. P and Q are normalised;
 *   KL(P || Q) skips P's zero bins and is +inf where Q is zero and P is not
 *   (no epsilon smoothing; the candidate is rejected). Because Q is non-zero
 *   wherever P is for i = nbins, some candidate is always finite. The
 *   minimum wins (ties within 1e-12: the larger i); t = (i + 0.5) * width
 *   (TensorRT's rule), at most max|x|. With fewer bins than levels, t =
 *   max|x|. Range: symmetric as above; asymmetric [max(min, -t), min(max,
 *   t)]. For data that are all >= 0, bin 0 (the spike of a ReLU's exact
 *   zeros) counts as bin 1 in the search (NVIDIA's pytorch-quantization).
 *
 * Stateful histogram: counts of x >= 0 and of x < 0 by |x|, 2 `bins` bins
 * each over [0, R), R a power of two above every |x| seen. When a batch
 * brings |x| >= R, R doubles and adjacent bin pairs merge (exact: the bin
 * edges of the coarser histogram are edges of the finer one), so one pass
 * over batches of growing range needs no re-binning guess. R >= 2^-60:
 * smaller magnitudes share bin 0. min and max are kept exactly. With a
 * power-of-two `bins` the bin of a value is exact too (|x| * 2 bins / R is
 * a product by a power of two).
 *
 * Non-finite input: NB_STATUS_NUMERIC naming the first bad index, and the
 * observer is left as it was.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nb_quant.h"

#define OBS_MAX_BINS (1 << 16)
#define OBS_MAX_GRID 100000
#define OBS_LANES 4        /* sub-histograms that break the ++ dependency on a hot bin */
#define OBS_R_MIN 0x1p-60  /* smallest histogram half-range */

/* The per-element loops are compiled for AVX-512, AVX2 and the baseline;
 * the loader picks one per CPU (GCC function multi-versioning). They are
 * integer and IEEE float operations without contraction, so every path
 * gives the same result. */
#define OBS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

/* ------------------------------------------------------------------ names */

static const char *const kind_names[] = {
    [NB_OBS_MINMAX] = "minmax", [NB_OBS_EMA] = "ema", [NB_OBS_PERCENTILE] = "percentile",
    [NB_OBS_MSE] = "mse",       [NB_OBS_KL] = "kl",
};
_Static_assert(sizeof kind_names / sizeof kind_names[0] == NB_OBS_COUNT, "a name for every observer kind");

const char *nb_observer_name(nb_observer_kind k) {
    return (int)k >= 0 && k < NB_OBS_COUNT ? kind_names[k] : NULL;
}

int nb_observer_from_name(const char *name) {
    if (!name) return -1;
    for (int k = 0; k < NB_OBS_COUNT; k++)
        if (strcmp(name, kind_names[k]) == 0) return k;
    return -1;
}

nb_observer_opts nb_observer_opts_default(nb_observer_kind kind) {
    return (nb_observer_opts){.kind = kind, .momentum = 0.9f, .percentile = 99.99f, .grid = 100, .bins = 2048};
}

/* The options kind reads must be in range; the others are not looked at. */
static nb_status check_opts(const nb_observer_opts *o, int stateful) {
    if ((int)o->kind < 0 || o->kind >= NB_OBS_COUNT)
        return nb_set_error(NB_STATUS_BAD_INPUT, "observer: unknown kind %d", (int)o->kind);
    const char *name = kind_names[o->kind];
    if (o->kind == NB_OBS_EMA && !(o->momentum >= 0.0f && o->momentum <= 1.0f))
        return nb_set_error(NB_STATUS_BAD_INPUT, "observer %s: momentum %g is not in [0, 1]", name,
                            (double)o->momentum);
    if (o->kind == NB_OBS_PERCENTILE && !(o->percentile > 0.0f && o->percentile <= 100.0f))
        return nb_set_error(NB_STATUS_BAD_INPUT, "observer %s: percentile %g is not in (0, 100]", name,
                            (double)o->percentile);
    if (o->kind == NB_OBS_MSE && (o->grid < 1 || o->grid > OBS_MAX_GRID))
        return nb_set_error(NB_STATUS_BAD_INPUT, "observer %s: grid %d is not in [1, %d]", name, o->grid,
                            OBS_MAX_GRID);
    const int uses_bins = o->kind == NB_OBS_KL || (stateful && o->kind >= NB_OBS_PERCENTILE);
    if (uses_bins && (o->bins < 1 || o->bins > OBS_MAX_BINS))
        return nb_set_error(NB_STATUS_BAD_INPUT, "observer %s: bins %d is not in [1, %d]", name, o->bins,
                            OBS_MAX_BINS);
    return NB_OK;
}

static void check_spec(const nb_qspec *spec) {
    NB_ASSERT(spec && spec->bits >= 1 && spec->bits <= 16, "observer: spec with %d bits", spec ? spec->bits : 0);
}

/* ------------------------------------------------------------ one pass scan */

/* min, max and max |x| of x[0..n) (n >= 1), through the float bits so the
 * loop is integer min/max and vectorises: |x| bits compare as unsigned and
 * key = bits of |x|, bit-inverted for negatives, orders floats as int32.
 * Returns the index of the first non-finite value, or n. */
OBS_CLONES static size_t scan(const float *x, size_t n, float *mn, float *mx, float *amax) {
    uint32_t abits = 0;
    int32_t kmin = INT32_MAX, kmax = INT32_MIN;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        const uint32_t a = u & 0x7fffffffu;
        const int32_t k = (int32_t)a ^ -(int32_t)(u >> 31);
        abits = a > abits ? a : abits;
        kmin = k < kmin ? k : kmin;
        kmax = k > kmax ? k : kmax;
    }
    if (abits >= 0x7f800000u) { /* Inf or NaN somewhere: find the first */
        size_t i = 0;
        while (isfinite(x[i])) i++;
        return i;
    }
    uint32_t b;
    b = kmin >= 0 ? (uint32_t)kmin : 0x80000000u | (uint32_t)~kmin;
    memcpy(mn, &b, sizeof b);
    b = kmax >= 0 ? (uint32_t)kmax : 0x80000000u | (uint32_t)~kmax;
    memcpy(mx, &b, sizeof b);
    memcpy(amax, &abits, sizeof abits);
    return n;
}

static void widen(float *lo, float *hi) {
    if (*lo > 0.0f) *lo = 0.0f;
    if (*hi < 0.0f) *hi = 0.0f;
}

/* The range of threshold t for spec: [-t, t], [0, t] (unsigned symmetric)
 * or the data's [min, max] cut to [-t, t] (asymmetric). */
static void range_from_threshold(const nb_qspec *spec, float t, float mn, float mx, float *lo, float *hi) {
    if (spec->symmetric) {
        *lo = spec->is_signed ? -t : 0.0f;
        *hi = t;
    } else {
        *lo = fmaxf(mn, -t);
        *hi = fminf(mx, t);
    }
}

/* ------------------------------------------------------------- percentile */

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void swapf(float *a, float *b) {
    float t = *a;
    *a = *b;
    *b = t;
}

/* The k-th smallest of a[0..n) (0-based), leaving a permuted so that
 * a[j] >= a[k] for j > k: quickselect with a median-of-three pivot and a
 * three-way partition (activations repeat values: zeros after a ReLU);
 * after 64 rounds the remaining slice is sorted, bounding the worst case. */
static float select_kth(float *a, size_t n, size_t k) {
    size_t l = 0, r = n;
    for (int round = 0; r - l > 1; round++) {
        if (round == 64) {
            qsort(a + l, r - l, sizeof *a, cmp_float);
            break;
        }
        float p0 = a[l], p1 = a[l + (r - l) / 2], p2 = a[r - 1];
        const float p = fmaxf(fminf(p0, p1), fminf(fmaxf(p0, p1), p2));
        size_t lt = l, i = l, gt = r; /* [l, lt) < p, [lt, i) == p, [gt, r) > p */
        while (i < gt) {
            if (a[i] < p)
                swapf(&a[lt++], &a[i++]);
            else if (a[i] > p)
                swapf(&a[i], &a[--gt]);
            else
                i++;
        }
        if (k < lt)
            r = lt;
        else if (k >= gt)
            l = gt;
        else
            return p;
    }
    return a[k];
}

/* The p-th percentile of a[0..n) (n >= 1; a is permuted), numpy's linear
 * interpolation between the order statistics around p/100 * (n - 1). */
static double exact_percentile(float *a, size_t n, double p) {
    const double pos = p / 100.0 * (double)(n - 1);
    size_t k = (size_t)pos;
    if (k > n - 1) k = n - 1;
    const double frac = pos - (double)k;
    const double v = select_kth(a, n, k);
    if (frac <= 0.0 || k + 1 >= n) return v;
    float next = a[k + 1];
    for (size_t j = k + 2; j < n; j++) next = a[j] < next ? a[j] : next;
    return v + frac * ((double)next - v);
}

/* Value at rank c (0 <= c <= total) of the histogram h[0..nb) whose bin j
 * covers [x0 + j w, x0 + (j + 1) w), counts spread evenly inside a bin. */
static double hist_rank(const double *h, size_t nb, double x0, double w, double c) {
    double cum = 0.0;
    for (size_t j = 0; j < nb; j++) {
        if (h[j] > 0.0 && cum + h[j] >= c) return x0 + ((double)j + (c - cum) / h[j]) * w;
        cum += h[j];
    }
    return x0 + (double)nb * w;
}

/* -------------------------------------------------------------------- mse */

/* Candidate i of grid: r * the min-max range, per the spec's symmetry. */
static void mse_candidate(const nb_qspec *spec, int i, int grid, float mn, float mx, float *lo, float *hi) {
    const float r = (float)i / (float)grid;
    if (spec->symmetric && spec->is_signed) {
        const float m = fmaxf(-mn, mx);
        *lo = -r * m;
        *hi = r * m;
    } else {
        *lo = r * fminf(mn, 0.0f);
        *hi = r * fmaxf(mx, 0.0f);
    }
}

/* sum (Q(x) - x)^2 over x[0..n) for scale s and zero point z. rint by the
 * 1.5 * 2^23 shift (exact, ties to even, for |v| < 2^22: v is clamped to
 * the grid first, which commutes with rounding as the bounds are integers)
 * so that the 8-lane body vectorises. The error is formed in float, as the
 * fake-quant op forms it, and squared and summed in double (a float square
 * would overflow for |x| > 1.8e19). */
OBS_CLONES static double sq_error(const float *x, size_t n, float s, int32_t z, int qmin, int qmax) {
    const float fz = (float)z, lo = (float)(qmin - z), hi = (float)(qmax - z), shift = 0x1.8p23f;
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            float v = x[i + j] / s;
            v = v < lo ? lo : v;
            v = v > hi ? hi : v;
            v = (v + shift) - shift;
            const double e = (double)(s * v - x[i + j]);
            acc[j] += e * e;
        }
    double total = 0.0;
    for (; i < n; i++) {
        float q = rintf(x[i] / s) + fz;
        q = fminf(fmaxf(q, (float)qmin), (float)qmax);
        const double e = (double)(s * (q - fz) - x[i]);
        total += e * e;
    }
    for (int j = 0; j < 8; j++) total += acc[j];
    return total;
}

static double cube(double v) { return v * v * v; }

/* Mean of (Q(x) - x)^2 for x uniform on [a, b] (a <= b): the interval is
 * walked cell by cell in code space u = x / s + z, where Q is constant. */
static double interval_error(double a, double b, double s, double z, int qmin, int qmax) {
    const double ua = a / s + z, ub = b / s + z;
    if (!(ub > ua)) {
        double q = fmin(fmax(nearbyint(ua), qmin), qmax);
        return s * s * (q - ua) * (q - ua);
    }
    double acc = 0.0;
    for (double u = ua; u < ub;) {
        /* floor(u + 0.5) rather than rint: at a tie the cell to the right
         * is the one that extends past u (the point itself has no mass). */
        const double q = fmin(fmax(floor(u + 0.5), qmin), qmax);
        const double end = q < qmax ? fmin(q + 0.5, ub) : ub;
        acc += cube(end - q) - cube(u - q);
        u = end;
    }
    return s * s * acc / (3.0 * (ub - ua));
}

/* ---------------------------------------------------------------------- kl */

static double xlogx(double v) { return v > 0.0 ? v * log(v) : 0.0; }

/* Number of quantization levels KL compares against (see the header). */
static int kl_levels(const nb_qspec *spec, float mn) {
    int qmin, qmax;
    nb_qspec_range(spec, &qmin, &qmax);
    if (spec->symmetric || mn >= 0.0f) return qmax + 1;
    return (qmax + 1) / 2 > 0 ? (qmax + 1) / 2 : 1;
}

/* TensorRT's threshold over the histogram h[0..nb) of |x| with bin width w
 * (the header spells out P, Q and the tie rule). With prefix sums of the
 * counts, of the non-empty indicator and of h log h, one candidate costs
 * O(nlevels): inside a group Q is one value q_g on P's non-empty bins, so
 *   N KL = sum p log p - sum_g Pmass_g log q_g - N log N + N log S_Q,
 * with S_Q = the first i bins' counts (Q's total) and N = P's total. */
static nb_status kl_threshold(const double *h, size_t nb, double w, int nlevels, double amax, int nonneg,
                              double *t) {
    const size_t L = (size_t)nlevels;
    *t = amax;
    if (nb < L || amax <= 0.0) return NB_OK;
    double *H = nb_malloc(4 * (nb + 1) * sizeof *H);
    if (!H) return NB_STATUS_OOM;
    double *NZ = H + (nb + 1), *HL = NZ + (nb + 1), *kl = HL + (nb + 1);
    H[0] = NZ[0] = HL[0] = 0.0;
    for (size_t j = 0; j < nb; j++) {
        /* Data that are all >= 0 (ReLU outputs) have a spike of exact zeros
         * in bin 0. Zero is a code whatever the threshold, but the spike
         * makes every candidate that merges bin 0 with its neighbours look
         * costly, which drags the threshold down to the first candidate.
         * NVIDIA's pytorch-quantization replaces bin 0's count by bin 1's;
         * so do we. */
        const double hj = nonneg && j == 0 && nb > 1 ? h[1] : h[j];
        H[j + 1] = H[j] + hj;
        NZ[j + 1] = NZ[j] + (hj > 0.0);
        HL[j + 1] = HL[j] + xlogx(hj);
    }
    const double N = H[nb];
    double best = INFINITY;
    for (size_t i = L; i <= nb; i++) {
        kl[i] = INFINITY;
        const double out = N - H[i], plast = h[i - 1] + out, SQ = H[i];
        if (!(SQ > 0.0)) continue;
        double plogq = 0.0;
        int finite = 1;
        for (size_t g = 0; g < L && finite; g++) {
            const size_t a = (g * i + L - 1) / L, b = ((g + 1) * i + L - 1) / L; /* bins [a, b) */
            const double M = H[b] - H[a];
            double nz = NZ[b] - NZ[a], pm = M;
            if (b == i) { /* the last group holds bin i - 1, where P has the outliers */
                nz += (plast > 0.0) - (h[i - 1] > 0.0);
                pm += out;
            }
            if (pm <= 0.0) continue;
            if (M <= 0.0) finite = 0; /* P has mass where Q has none */
            else plogq += pm * log(M / nz);
        }
        if (!finite) continue;
        const double plogp = HL[i - 1] + xlogx(plast);
        kl[i] = (plogp - plogq) / N - log(N) + log(SQ);
        if (kl[i] < best) best = kl[i];
    }
    for (size_t i = nb; i >= L; i--)
        if (kl[i] <= best + 1e-12) {
            *t = fmin(((double)i + 0.5) * w, amax);
            break;
        }
    nb_free(H);
    return NB_OK;
}

/* -------------------------------------------------------- nb_observe_range */

static nb_status range_percentile(const nb_observer_opts *o, const nb_qspec *spec, const float *x, size_t n,
                                  float mn, float mx, float *lo, float *hi) {
    float *a = nb_malloc(n * sizeof *a);
    if (!a) return NB_STATUS_OOM;
    const double p = (double)o->percentile;
    if (spec->symmetric) {
        for (size_t i = 0; i < n; i++) a[i] = fabsf(x[i]);
        const float t = (float)exact_percentile(a, n, p);
        range_from_threshold(spec, t, mn, mx, lo, hi);
    } else {
        memcpy(a, x, n * sizeof *a);
        const float ql = (float)exact_percentile(a, n, 100.0 - p);
        const float qh = (float)exact_percentile(a, n, p);
        *lo = fminf(ql, qh);
        *hi = fmaxf(ql, qh);
    }
    nb_free(a);
    return NB_OK;
}

static void range_mse(const nb_observer_opts *o, const nb_qspec *spec, const float *x, size_t n, float mn,
                      float mx, float *lo, float *hi) {
    int qmin, qmax;
    nb_qspec_range(spec, &qmin, &qmax);
    double best = INFINITY;
    int chosen = o->grid; /* r = 1 if no error is finite */
    for (int i = o->grid; i >= 1; i--) { /* descending with a strict <: ties keep the larger r */
        float clo, chi, s;
        int32_t z;
        mse_candidate(spec, i, o->grid, mn, mx, &clo, &chi);
        nb_qparams_from_range(spec, clo, chi, &s, &z);
        const double e = sq_error(x, n, s, z, qmin, qmax);
        if (e < best) best = e, chosen = i;
    }
    mse_candidate(spec, chosen, o->grid, mn, mx, lo, hi);
}

static nb_status range_kl(const nb_observer_opts *o, const nb_qspec *spec, const float *x, size_t n, float mn,
                          float mx, float amax, float *lo, float *hi) {
    const size_t nb = (size_t)o->bins;
    double *h = nb_calloc(nb, sizeof *h);
    if (!h) return NB_STATUS_OOM;
    double t = 0.0;
    nb_status st = NB_OK;
    if (amax > 0.0f) {
        const double inv = (double)nb / (double)amax; /* double: amax may be subnormal */
        for (size_t i = 0; i < n; i++) {
            size_t k = (size_t)(fabs((double)x[i]) * inv);
            h[k < nb ? k : nb - 1] += 1.0;
        }
        st = kl_threshold(h, nb, (double)amax / (double)nb, kl_levels(spec, mn), (double)amax, mn >= 0.0f, &t);
    }
    nb_free(h);
    if (st == NB_OK) range_from_threshold(spec, (float)t, mn, mx, lo, hi);
    return st;
}

nb_status nb_observe_range(const nb_observer_opts *o, const nb_qspec *spec, const float *x, size_t n, float *lo,
                           float *hi) {
    NB_ASSERT(o && lo && hi && (x || n == 0), "nb_observe_range: NULL argument");
    check_spec(spec);
    nb_status st = check_opts(o, 0);
    if (st != NB_OK) return st;
    *lo = *hi = 0.0f;
    if (n == 0) return NB_OK;
    float mn, mx, amax;
    const size_t bad = scan(x, n, &mn, &mx, &amax);
    if (bad < n)
        return nb_set_error(NB_STATUS_NUMERIC, "observer %s: non-finite value %g at index %zu of %zu",
                            kind_names[o->kind], (double)x[bad], bad, n);
    float l = mn, h = mx;
    switch (o->kind) {
    case NB_OBS_PERCENTILE: st = range_percentile(o, spec, x, n, mn, mx, &l, &h); break;
    case NB_OBS_MSE: range_mse(o, spec, x, n, mn, mx, &l, &h); break;
    case NB_OBS_KL: st = range_kl(o, spec, x, n, mn, mx, amax, &l, &h); break;
    default: break; /* minmax, ema */
    }
    if (st != NB_OK) return st;
    widen(&l, &h);
    *lo = l;
    *hi = h;
    return NB_OK;
}

/* ------------------------------------------------------ stateful observer */

struct nb_observer {
    nb_observer_opts o;
    long batches;
    uint64_t count;         /* values fed */
    float min, max;         /* exact, over everything fed */
    double ema_lo, ema_hi;
    /* Histogram (percentile, mse, kl only; hist == NULL otherwise). */
    size_t nbin;            /* bins per sign: 2 * o.bins */
    double R;               /* power of two > every |x| seen; 0 until a non-zero value */
    float inv_w;            /* nbin / R (exact: R is a power of two) */
    uint64_t *hist;         /* (2, nbin): row 0 x >= 0, row 1 x < 0; bin k: k w <= |x| < (k + 1) w */
    uint32_t *lanes;        /* (OBS_LANES, 2 * nbin): one batch's counts, flushed into hist */
};

nb_observer *nb_observer_new(const nb_observer_opts *o) {
    NB_ASSERT(o, "nb_observer_new: NULL options");
    if (check_opts(o, 1) != NB_OK) return NULL;
    nb_observer *ob = nb_calloc(1, sizeof *ob);
    if (!ob) return NULL;
    ob->o = *o;
    if (o->kind >= NB_OBS_PERCENTILE) {
        ob->nbin = 2 * (size_t)o->bins;
        ob->hist = nb_calloc(2 * ob->nbin, sizeof *ob->hist);
        ob->lanes = nb_calloc(OBS_LANES * 2 * ob->nbin, sizeof *ob->lanes);
        if (!ob->hist || !ob->lanes) {
            nb_observer_free(ob);
            return NULL;
        }
    }
    return ob;
}

void nb_observer_free(nb_observer *ob) {
    if (!ob) return;
    nb_free(ob->hist);
    nb_free(ob->lanes);
    nb_free(ob);
}

long nb_observer_batches(const nb_observer *ob) { return ob->batches; }

/* Make R > amax, doubling R and merging bin pairs k, k+1 -> k/2. */
static void hist_grow(nb_observer *ob, float amax) {
    if (amax <= 0.0f) return;
    if (ob->R == 0.0) {
        int e;
        frexp((double)amax, &e); /* amax < 2^e */
        ob->R = fmax(ldexp(1.0, e), OBS_R_MIN);
    }
    const size_t nbin = ob->nbin;
    while ((double)amax >= ob->R) {
        for (int side = 0; side < 2; side++) {
            uint64_t *h = ob->hist + side * nbin;
            for (size_t k = 0; k < nbin / 2; k++) h[k] = h[2 * k] + h[2 * k + 1];
            memset(h + nbin / 2, 0, (nbin - nbin / 2) * sizeof *h);
        }
        ob->R *= 2.0;
    }
    ob->inv_w = (float)((double)nbin / ob->R);
}

#define HIST_BLOCK 256

/* The bins of x[0..n) (n <= HIST_BLOCK): |x| * inv clamped to top, plus
 * nbin for negatives (the layout of nb_observer.hist). */
OBS_CLONES static void hist_index(const float *x, size_t n, float inv, uint32_t top, uint32_t nbin, uint32_t *idx) {
    for (size_t i = 0; i < n; i++) {
        const float v = x[i];
        uint32_t k = (uint32_t)(int32_t)(fabsf(v) * inv); /* <= nbin: fits int32 */
        k = k < top ? k : top;
        idx[i] = k + (v < 0.0f ? nbin : 0u);
    }
}

/* Count x[0..n) into the histogram (R already covers them). Bin indices
 * are computed a block at a time (a loop that vectorises), then counted;
 * element i goes to lane i % OBS_LANES, so runs of one value (a ReLU's
 * zeros) do not serialise on one counter. Lanes are flushed into hist
 * before a uint32 could wrap. */
static void hist_add(nb_observer *ob, const float *x, size_t n) {
    const size_t nbin = ob->nbin, stride = 2 * nbin;
    const size_t chunk = (size_t)1 << 30;
    uint32_t idx[HIST_BLOCK];
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
        const size_t m = n - c0 < chunk ? n - c0 : chunk;
        const float *xc = x + c0;
        memset(ob->lanes, 0, OBS_LANES * stride * sizeof *ob->lanes);
        for (size_t b0 = 0; b0 < m; b0 += HIST_BLOCK) {
            const size_t bm = m - b0 < HIST_BLOCK ? m - b0 : HIST_BLOCK;
            hist_index(xc + b0, bm, ob->inv_w, (uint32_t)nbin - 1, (uint32_t)nbin, idx);
            size_t i = 0;
            for (; i + OBS_LANES <= bm; i += OBS_LANES)
                for (int l = 0; l < OBS_LANES; l++) ob->lanes[l * stride + idx[i + l]]++;
            for (; i < bm; i++) ob->lanes[idx[i]]++;
        }
        for (int l = 0; l < OBS_LANES; l++)
            for (size_t k = 0; k < stride; k++) ob->hist[k] += ob->lanes[l * stride + k];
    }
}

nb_status nb_observer_update(nb_observer *ob, const float *x, size_t n) {
    NB_ASSERT(ob && (x || n == 0), "nb_observer_update: NULL argument");
    if (n == 0) return NB_OK;
    float mn, mx, amax;
    const size_t bad = scan(x, n, &mn, &mx, &amax);
    if (bad < n)
        return nb_set_error(NB_STATUS_NUMERIC, "observer %s: non-finite value %g at index %zu of a batch of %zu",
                            kind_names[ob->o.kind], (double)x[bad], bad, n);
    if (ob->count == 0) {
        ob->min = mn;
        ob->max = mx;
        ob->ema_lo = mn;
        ob->ema_hi = mx;
    } else {
        const double m = (double)ob->o.momentum;
        ob->min = fminf(ob->min, mn);
        ob->max = fmaxf(ob->max, mx);
        ob->ema_lo = m * ob->ema_lo + (1.0 - m) * (double)mn;
        ob->ema_hi = m * ob->ema_hi + (1.0 - m) * (double)mx;
    }
    if (ob->hist) {
        hist_grow(ob, amax);
        hist_add(ob, x, n);
    }
    ob->count += n;
    ob->batches++;
    return NB_OK;
}

/* The histogram ordered by x: bin j covers [-R + j w, -R + (j + 1) w),
 * j < nbin from the negative row reversed. out has 2 nbin entries. */
static void hist_signed(const nb_observer *ob, double *out) {
    const size_t nbin = ob->nbin;
    for (size_t k = 0; k < nbin; k++) {
        out[nbin - 1 - k] = (double)ob->hist[nbin + k];
        out[nbin + k] = (double)ob->hist[k];
    }
}

/* The histogram of |x| over [0, R) (nbin entries); returns the number of
 * bins up to the last non-empty one. */
static size_t hist_abs(const nb_observer *ob, double *out) {
    size_t used = 0;
    for (size_t k = 0; k < ob->nbin; k++) {
        out[k] = (double)(ob->hist[k] + ob->hist[ob->nbin + k]);
        if (out[k] > 0.0) used = k + 1;
    }
    return used;
}

static void hist_range_mse(const nb_observer *ob, const nb_qspec *spec, const double *h, float *lo, float *hi) {
    const size_t nb = 2 * ob->nbin;
    const double R = ob->R, w = R / (double)ob->nbin;
    int qmin, qmax;
    nb_qspec_range(spec, &qmin, &qmax);
    double best = INFINITY;
    int chosen = ob->o.grid;
    for (int i = ob->o.grid; i >= 1; i--) {
        float clo, chi, s;
        int32_t z;
        mse_candidate(spec, i, ob->o.grid, ob->min, ob->max, &clo, &chi);
        nb_qparams_from_range(spec, clo, chi, &s, &z);
        double e = 0.0;
        for (size_t j = 0; j < nb; j++) {
            if (h[j] <= 0.0) continue;
            const double a = fmax(-R + (double)j * w, (double)ob->min);
            const double b = fmin(-R + (double)(j + 1) * w, (double)ob->max);
            e += h[j] * interval_error(a, fmax(a, b), (double)s, (double)z, qmin, qmax);
        }
        if (e < best) best = e, chosen = i;
    }
    mse_candidate(spec, chosen, ob->o.grid, ob->min, ob->max, lo, hi);
}

nb_status nb_observer_range(const nb_observer *ob, const nb_qspec *spec, float *lo, float *hi) {
    NB_ASSERT(ob && lo && hi, "nb_observer_range: NULL argument");
    check_spec(spec);
    const char *name = kind_names[ob->o.kind];
    if (ob->count == 0)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "observer %s: asked for a range before any values were fed. HINT: run the "
                            "calibration forward passes first",
                            name);
    float l = ob->min, h = ob->max;
    const float amax = fmaxf(-ob->min, ob->max);
    if (ob->o.kind == NB_OBS_EMA) {
        l = (float)ob->ema_lo;
        h = (float)ob->ema_hi;
    } else if (ob->hist && amax > 0.0f) {
        double *buf = nb_malloc(2 * ob->nbin * sizeof *buf);
        if (!buf) return NB_STATUS_OOM;
        const double N = (double)ob->count, p = (double)ob->o.percentile, w = ob->R / (double)ob->nbin;
        nb_status st = NB_OK;
        if (ob->o.kind == NB_OBS_PERCENTILE && spec->symmetric) {
            hist_abs(ob, buf);
            const double t = fmin(hist_rank(buf, ob->nbin, 0.0, w, p / 100.0 * N), (double)amax);
            range_from_threshold(spec, (float)t, ob->min, ob->max, &l, &h);
        } else if (ob->o.kind == NB_OBS_PERCENTILE) {
            hist_signed(ob, buf);
            const double a = hist_rank(buf, 2 * ob->nbin, -ob->R, w, (100.0 - p) / 100.0 * N);
            const double b = hist_rank(buf, 2 * ob->nbin, -ob->R, w, p / 100.0 * N);
            l = (float)fmin(fmax(fmin(a, b), (double)ob->min), (double)ob->max);
            h = (float)fmin(fmax(fmax(a, b), (double)ob->min), (double)ob->max);
        } else if (ob->o.kind == NB_OBS_MSE) {
            hist_signed(ob, buf);
            hist_range_mse(ob, spec, buf, &l, &h);
        } else { /* kl */
            const size_t used = hist_abs(ob, buf);
            double t;
            st = kl_threshold(buf, used, w, kl_levels(spec, ob->min), (double)amax, ob->min >= 0.0f, &t);
            if (st == NB_OK) range_from_threshold(spec, (float)t, ob->min, ob->max, &l, &h);
        }
        nb_free(buf);
        if (st != NB_OK) return st;
    } else if (ob->hist) {
        l = h = 0.0f; /* only zeros were fed */
    }
    widen(&l, &h);
    *lo = l;
    *hi = h;
    return NB_OK;
}
