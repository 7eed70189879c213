/* Codebook (non-uniform) weight quantizers, ADQ (Jia et al. 2025;
 * ALGORITHMS.md §5). [paper] marks what the paper states, [recon] our
 * reconstruction where its details are unknown (docs/quantization.md lists
 * them).
 *
 * Codebook layout, ascending [recon]:
 *   symmetric, b >= 2   {-c_m, …, -c_1, 0, c_1, …, c_m}, m = 2^(b-1) - 1 (b = 2: ternary)
 *   symmetric, b = 1    {-c_1, c_1} (no zero)
 *   asymmetric          {-d_mn, …, -d_1, 0, e_1, …, e_mp}, mn = 2^(b-1) - 1, mp = 2^(b-1):
 *                       2^b codes with an exact zero, one more level on the positive side
 *
 * Initialisation of one side's m magnitudes from its sorted magnitudes:
 *   quantile [paper]  c_j = quantile((j - 1/2) / m), linear interpolation
 *                     between order statistics (numpy's default, type 7)
 *   uniform           c_j = j·max / m (the abs-max uniform grid)
 *   k-means           Lloyd iterations from the quantile codebook, zero fixed
 * Symmetric codebooks take the magnitudes |w| of all weights; asymmetric
 * ones the positive weights and the magnitudes of the negative ones (a side
 * with no weights uses all |w|).
 *
 * Assignment: k(v) = argmin_k |v - c_k|, found against the midpoints of the
 * sorted codebook (in double, so the comparison is exact). A value exactly
 * on a midpoint goes to the code nearer zero: v >= 0 takes the lower code,
 * v < 0 the upper one (for distinct codes this is the code of smaller
 * magnitude; between -c and c, 0 takes -c).
 *
 * The op: v = w / α, ŵ = α·c_k(v) (α = 1 unless a learned global scale);
 * backward (straight-through): dw = dy, or dy·inside with the optional
 * mask, inside = v in [c_0 - δ_0, c_last + δ_1], δ the half outer gaps (the
 * uniform quantizer's rounding range beyond its ends); the codebook gets
 * no gradient; dα = g·Σ dy·(inside ? c_k - v : c_k) (LSQ's step gradient
 * with the codebook in place of the integer grid).
 *
 * EMA adaptation [paper+recon] (VQ-VAE style), after an optimizer step:
 * with n_k weights assigned to code k summing to S_k,
 *   N_k ← γN_k + (1-γ)n_k,  M_k ← γM_k + (1-γ)S_k,  c_k ← M_k / (N_k + ε);
 * the zero code is never updated, codes with n_k = 0 are skipped, a
 * symmetric codebook pools ±c_j (n = n_+ + n_-, S = S_+ - S_-) and stays
 * symmetric, and each side is kept sorted (codes carry their N and M). A
 * Lloyd iteration is the same update with γ = 0, ε = 0. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const init_names[NB_CB_INIT_COUNT] = {"quantile", "uniform", "kmeans"};

int nb_cb_init_from_name(const char *name) {
    for (int i = 0; i < NB_CB_INIT_COUNT; i++)
        if (!strcmp(init_names[i], name)) return i;
    return -1;
}

int nb_cb_ncodes(const nb_cb_spec *s) { return s->symmetric ? (s->bits == 1 ? 2 : (1 << s->bits) - 1) : 1 << s->bits; }

int nb_cb_zero_index(const nb_cb_spec *s) {
    if (s->symmetric) return s->bits == 1 ? -1 : (1 << (s->bits - 1)) - 1;
    return (1 << (s->bits - 1)) - 1;
}

/* ------------------------------------------------------------- assignment */

void nb_cb_midpoints(const float *codes, int ncodes, double *mid) {
    for (int k = 0; k + 1 < ncodes; k++) mid[k] = 0.5 * ((double)codes[k] + (double)codes[k + 1]);
}

/* Index of the code nearest v, from the nm = ncodes - 1 midpoints: the
 * number of midpoints below v (v >= 0) or at or below v (v < 0). Up to 16
 * midpoints by a branch-free count, else binary search; the same answer. */
static inline int cb_index(const double *mid, int nm, float v) {
    const double d = (double)v;
    if (nm <= 16) {
        int k = 0;
        if (d >= 0.0)
            for (int i = 0; i < nm; i++) k += mid[i] < d;
        else
            for (int i = 0; i < nm; i++) k += mid[i] <= d;
        return k;
    }
    int lo = 0, hi = nm; /* first midpoint not below (>= 0) / above (< 0) v */
    while (lo < hi) {
        const int h = (lo + hi) / 2;
        if (d >= 0.0 ? mid[h] < d : mid[h] <= d)
            lo = h + 1;
        else
            hi = h;
    }
    return lo;
}

int nb_cb_assign(const double *mid, int ncodes, float v) { return cb_index(mid, ncodes - 1, v); }

/* The hot path: the midpoints as float thresholds that give the same
 * answer as the double comparisons (ge: the smallest float >= the
 * midpoint, so v >= ge <=> mid <= v; gt: the smallest float > it, so v >= gt
 * <=> mid < v), and indices for a block of values at a time, one threshold
 * over the whole block per pass (a loop the compiler vectorises). Past 16
 * midpoints, the binary search. */
#define CB_BLOCK 256
#define CB_CHUNK 16384

typedef struct {
    int nc;
    const float *codes;
    float ge[255], gt[255];
    double mid[255];
} cb_table;

static void table_make(cb_table *t, const float *codes, int nc) {
    t->nc = nc;
    t->codes = codes;
    nb_cb_midpoints(codes, nc, t->mid);
    for (int i = 0; i + 1 < nc; i++) {
        const double m = t->mid[i];
        float f = (float)m;
        if ((double)f < m) f = nextafterf(f, INFINITY);
        t->ge[i] = f;
        t->gt[i] = (double)f == m ? nextafterf(f, INFINITY) : f;
    }
}

#define NB_CB_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

NB_CB_CLONES static void table_index(const cb_table *t, const float *v, int n, int32_t *k) {
    const int nm = t->nc - 1;
    if (nm > 16) {
        for (int j = 0; j < n; j++) k[j] = cb_index(t->mid, nm, v[j]);
        return;
    }
    for (int j = 0; j < n; j++) k[j] = 0;
    for (int i = 0; i < nm; i++) {
        const float a = t->ge[i], b = t->gt[i];
        for (int j = 0; j < n; j++) k[j] += v[j] >= (v[j] >= 0.0f ? b : a);
    }
}

/* The values of a block: w, or w·inv in buf. */
static const float *block_values(const float *w, int n, float inv, float *buf) {
    if (inv == 1.0f) return w;
    for (int j = 0; j < n; j++) buf[j] = w[j] * inv;
    return buf;
}

/* Work items: (row, chunk of the row); the same partition for any thread
 * count, so per-item sums added in item order do not depend on it. */
static long n_items(int rows, size_t K) { return (long)rows * (long)((K + CB_CHUNK - 1) / CB_CHUNK); }

/* Room for need per-item partial sums: local when it fits (the usual case,
 * so a training step allocates nothing), else *heap. */
static double *partials(double *local, size_t nlocal, size_t need, double **heap, const char *what) {
    if (need <= nlocal) return local;
    *heap = nb_calloc(need, sizeof(double));
    NB_ASSERT(*heap, "%s: %s", what, nb_last_error());
    return *heap;
}

static void item_range(long it, size_t K, int *row, size_t *off, int *len) {
    const long per = (long)((K + CB_CHUNK - 1) / CB_CHUNK);
    *row = (int)(it / per);
    const size_t c = (size_t)(it % per) * CB_CHUNK;
    *off = (size_t)*row * K + c;
    *len = (int)(K - c < CB_CHUNK ? K - c : CB_CHUNK);
}

/* --------------------------------------------------------- initialisation */

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Type-7 quantile of the n sorted values s at p in [0, 1]. */
static double quantile_sorted(const float *s, size_t n, double p) {
    if (n == 0) return 0.0;
    const double h = p * (double)(n - 1);
    const size_t lo = (size_t)floor(h);
    if (lo + 1 >= n) return s[n - 1];
    return (double)s[lo] + (h - (double)lo) * ((double)s[lo + 1] - (double)s[lo]);
}

/* m magnitudes (ascending) from the ns sorted magnitudes of one side. */
static void side_init(const float *sorted, size_t ns, int m, nb_cb_init how, float *mag) {
    for (int j = 1; j <= m; j++) {
        double c = how == NB_CB_INIT_UNIFORM ? (ns ? (double)sorted[ns - 1] : 0.0) * j / m
                                             : quantile_sorted(sorted, ns, (j - 0.5) / m);
        mag[j - 1] = (float)c;
    }
}

/* The layout's side sizes: mn negative and mp positive codes besides the
 * zero (b = 1 symmetric: one of each, no zero). */
static void side_sizes(const nb_cb_spec *s, int *mn, int *mp) {
    if (s->symmetric) {
        *mn = *mp = s->bits == 1 ? 1 : (1 << (s->bits - 1)) - 1;
    } else {
        *mn = (1 << (s->bits - 1)) - 1;
        *mp = 1 << (s->bits - 1);
    }
}

nb_status nb_cb_init_codes(const nb_cb_spec *s, nb_cb_init how, int kmeans_iters, const float *w, size_t n,
                           float *codes) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(w[i])) return nb_set_error(NB_STATUS_NUMERIC, "codebook: weight %zu is %g", i, (double)w[i]);
    int mn, mp;
    side_sizes(s, &mn, &mp);
    const int nc = nb_cb_ncodes(s), z = nb_cb_zero_index(s);
    float *buf = nb_malloc((n + 1) * sizeof(float)), *mag = nb_malloc((size_t)(mn > mp ? mn : mp) * sizeof(float));
    if (!buf || !mag) {
        nb_free(buf);
        nb_free(mag);
        return NB_STATUS_OOM;
    }
    const nb_cb_init first = how == NB_CB_INIT_KMEANS ? NB_CB_INIT_QUANTILE : how;
    if (s->symmetric) {
        for (size_t i = 0; i < n; i++) buf[i] = fabsf(w[i]);
        qsort(buf, n, sizeof(float), cmp_float);
        side_init(buf, n, mp, first, mag);
        for (int j = 0; j < mp; j++) {
            codes[nc - mp + j] = mag[j];
            codes[mn - 1 - j] = -mag[j];
        }
    } else {
        /* negative side, then positive side; an empty side uses all |w| */
        for (int side = 0; side < 2; side++) {
            size_t ns = 0;
            for (size_t i = 0; i < n; i++)
                if (side ? w[i] > 0.0f : w[i] < 0.0f) buf[ns++] = fabsf(w[i]);
            if (ns == 0)
                for (size_t i = 0; i < n; i++) buf[ns++] = fabsf(w[i]);
            qsort(buf, ns, sizeof(float), cmp_float);
            const int m = side ? mp : mn;
            side_init(buf, ns, m, first, mag);
            for (int j = 0; j < m; j++) {
                if (side)
                    codes[z + 1 + j] = mag[j];
                else
                    codes[z - 1 - j] = -mag[j];
            }
        }
    }
    if (z >= 0) codes[z] = 0.0f;
    nb_free(buf);
    nb_free(mag);
    if (how != NB_CB_INIT_KMEANS) return NB_OK;
    /* Lloyd from the quantiles: assignment and centroid until nothing moves */
    double *cnt = nb_calloc((size_t)nc * 2, sizeof(double));
    float *N = nb_calloc((size_t)nc * 2, sizeof(float));
    float *prev = nb_malloc((size_t)nc * sizeof(float));
    nb_status st = cnt && N && prev ? NB_OK : NB_STATUS_OOM;
    for (int it = 0; st == NB_OK && it < kmeans_iters; it++) {
        memcpy(prev, codes, (size_t)nc * sizeof(float));
        nb_cb_stats(codes, nc, w, n, 1.0f, cnt, cnt + nc);
        nb_cb_ema(s, codes, N, N + nc, cnt, cnt + nc, 0.0f, 0.0f);
        if (!memcmp(prev, codes, (size_t)nc * sizeof(float))) break;
    }
    nb_free(cnt);
    nb_free(N);
    nb_free(prev);
    return st;
}

/* ------------------------------------------------------------- statistics */

void nb_cb_stats(const float *codes, int ncodes, const float *w, size_t n, float inv_alpha, double *cnt,
                 double *sum) {
    nb_cb_stats_rows(codes, ncodes, 1, w, n, inv_alpha, cnt, sum);
}

void nb_cb_stats_rows(const float *codes, int nc, int rows, const float *w, size_t K, float inv_alpha, double *cnt,
                      double *sum) {
    const long items = n_items(rows, K);
    /* 8192: a 2.4M-weight layer's 145 chunks at 4 bits fit */
    double local[8192], *heap = NULL;
    double *part = partials(local, 8192, (size_t)items * 2 * (size_t)nc, &heap, "codebook statistics");
#pragma omp parallel for schedule(static) num_threads(nb_get_threads()) if (items > 1)
    for (long it = 0; it < items; it++) {
        int row, len;
        size_t off;
        item_range(it, K, &row, &off, &len);
        cb_table t;
        table_make(&t, codes + (size_t)row * nc, nc);
        double *c = part + (size_t)it * 2 * (size_t)nc, *sm = c + nc;
        for (int k = 0; k < nc; k++) c[k] = sm[k] = 0.0;
        float buf[CB_BLOCK];
        int32_t idx[CB_BLOCK];
        for (int b = 0; b < len; b += CB_BLOCK) {
            const int m = len - b < CB_BLOCK ? len - b : CB_BLOCK;
            const float *v = block_values(w + off + b, m, inv_alpha, buf);
            table_index(&t, v, m, idx);
            for (int j = 0; j < m; j++) {
                c[idx[j]] += 1.0;
                sm[idx[j]] += (double)v[j];
            }
        }
    }
    memset(cnt, 0, (size_t)rows * (size_t)nc * sizeof(double));
    memset(sum, 0, (size_t)rows * (size_t)nc * sizeof(double));
    for (long it = 0; it < items; it++) {
        int row, len;
        size_t off;
        item_range(it, K, &row, &off, &len);
        const double *c = part + (size_t)it * 2 * (size_t)nc;
        for (int k = 0; k < nc; k++) {
            cnt[(size_t)row * nc + k] += c[k];
            sum[(size_t)row * nc + k] += c[nc + k];
        }
    }
    nb_free(heap);
}

/* Insertion sort of codes[lo..hi) ascending, carrying N and M (stable). */
static void sort_side(float *c, float *N, float *M, int lo, int hi) {
    for (int i = lo + 1; i < hi; i++) {
        const float cv = c[i], nv = N[i], mv = M[i];
        int j = i;
        for (; j > lo && c[j - 1] > cv; j--) {
            c[j] = c[j - 1];
            N[j] = N[j - 1];
            M[j] = M[j - 1];
        }
        c[j] = cv;
        N[j] = nv;
        M[j] = mv;
    }
}

/* One code's EMA update from n assigned weights summing to S. */
static void ema_code(float *c, float *N, float *M, double n, double S, float gamma, float eps) {
    const double g = gamma;
    const double Nn = g * (double)*N + (1.0 - g) * n, Mn = g * (double)*M + (1.0 - g) * S;
    *N = (float)Nn;
    *M = (float)Mn;
    *c = (float)(Mn / (Nn + (double)eps));
}

void nb_cb_ema(const nb_cb_spec *s, float *codes, float *N, float *M, const double *cnt, const double *sum,
               float gamma, float eps) {
    int mn, mp;
    side_sizes(s, &mn, &mp);
    const int nc = nb_cb_ncodes(s), z = nb_cb_zero_index(s);
    if (s->symmetric) {
        /* pairs (nc - mp + j, mn - 1 - j): the magnitude c_{j+1} */
        for (int j = 0; j < mp; j++) {
            const int p = nc - mp + j, q = mn - 1 - j;
            const double n = cnt[p] + cnt[q];
            if (n == 0.0) continue;
            ema_code(&codes[p], &N[p], &M[p], n, sum[p] - sum[q], gamma, eps);
            if (codes[p] < 0.0f) codes[p] = 0.0f;
        }
        sort_side(codes, N, M, nc - mp, nc);
        for (int j = 0; j < mp; j++) {
            const int p = nc - mp + j, q = mn - 1 - j;
            codes[q] = -codes[p];
            N[q] = N[p];
            M[q] = -M[p];
        }
        return;
    }
    for (int k = 0; k < nc; k++) {
        if (k == z || cnt[k] == 0.0) continue;
        ema_code(&codes[k], &N[k], &M[k], cnt[k], sum[k], gamma, eps);
        if (k < z && codes[k] > 0.0f) codes[k] = 0.0f; /* each side keeps its sign */
        if (k > z && codes[k] < 0.0f) codes[k] = 0.0f;
    }
    sort_side(codes, N, M, 0, z);
    sort_side(codes, N, M, z + 1, nc);
}

void nb_cb_ema_start(const nb_cb_spec *s, const float *codes, float *N, float *M, const double *cnt) {
    const int nc = nb_cb_ncodes(s);
    int mn, mp;
    side_sizes(s, &mn, &mp);
    for (int k = 0; k < nc; k++) {
        N[k] = (float)cnt[k];
        M[k] = codes[k] * (float)cnt[k];
    }
    if (s->symmetric)
        for (int j = 0; j < mp; j++) {
            const int p = nc - mp + j, q = mn - 1 - j;
            N[p] = N[q] = (float)(cnt[p] + cnt[q]);
            M[p] = codes[p] * N[p];
            M[q] = -M[p];
        }
}

/* --------------------------------------------------------------- the op */

static float args_alpha(const nb_cb_args *a) { return a->alpha ? a->alpha->data[0] : 1.0f; }

void nb_cb_forward(const nb_cb_args *a, const float *w, float *y) {
    const float alpha = args_alpha(a), inv = 1.0f / alpha;
    const long items = n_items(a->rows, a->K);
#pragma omp parallel for schedule(static) num_threads(nb_get_threads()) if (items > 1)
    for (long it = 0; it < items; it++) {
        int row, len;
        size_t off;
        item_range(it, a->K, &row, &off, &len);
        cb_table t;
        table_make(&t, a->codes + (size_t)row * a->ncodes, a->ncodes);
        float buf[CB_BLOCK];
        int32_t idx[CB_BLOCK];
        for (int b = 0; b < len; b += CB_BLOCK) {
            const int m = len - b < CB_BLOCK ? len - b : CB_BLOCK;
            table_index(&t, block_values(w + off + b, m, inv, buf), m, idx);
            float *yb = y + off + b;
            if (alpha == 1.0f)
                for (int j = 0; j < m; j++) yb[j] = t.codes[idx[j]];
            else
                for (int j = 0; j < m; j++) yb[j] = alpha * t.codes[idx[j]];
        }
    }
}

/* One work item's backward: dw (when not NULL) and Σ dy·(α term), returned. */
static double cb_bwd_item(const nb_cb_args *a, const cb_table *t, const float *w, const float *dy, float *dw, int len,
                          int fresh, int want_alpha) {
    const int nc = t->nc;
    const float *codes = t->codes;
    const float alpha = args_alpha(a), inv = 1.0f / alpha;
    const float lo = codes[0] - 0.5f * (codes[1] - codes[0]), hi = codes[nc - 1] + 0.5f * (codes[nc - 1] - codes[nc - 2]);
    double acc = 0.0;
    float buf[CB_BLOCK];
    int32_t idx[CB_BLOCK];
    for (int b = 0; b < len; b += CB_BLOCK) {
        const int m = len - b < CB_BLOCK ? len - b : CB_BLOCK;
        const float *v = block_values(w + b, m, inv, buf);
        if (want_alpha) table_index(t, v, m, idx);
        for (int j = 0; j < m; j++) {
            const int inside = !a->ste_mask || (v[j] >= lo && v[j] <= hi);
            if (dw) {
                const float g = inside ? dy[b + j] : 0.0f;
                dw[b + j] = fresh ? g : dw[b + j] + g;
            }
            if (want_alpha) {
                const float c = codes[idx[j]];
                acc += (double)dy[b + j] * (double)(inside ? c - v[j] : c);
            }
        }
    }
    return acc;
}

void nb_cb_backward(const nb_cb_args *a, const float *w, const float *dy, float *dw, int fresh, float *dalpha) {
    const long items = n_items(a->rows, a->K);
    double local[1024], *heap = NULL;
    double *pp = partials(local, 1024, (size_t)items, &heap, "codebook backward");
#pragma omp parallel for schedule(static) num_threads(nb_get_threads()) if (items > 1)
    for (long it = 0; it < items; it++) {
        int row, len;
        size_t off;
        item_range(it, a->K, &row, &off, &len);
        cb_table t;
        table_make(&t, a->codes + (size_t)row * a->ncodes, a->ncodes);
        pp[it] = cb_bwd_item(a, &t, w + off, dy + off, dw ? dw + off : NULL, len, fresh, dalpha != NULL);
    }
    if (dalpha) {
        double s = 0.0;
        for (long it = 0; it < items; it++) s += pp[it]; /* in item order: independent of the thread count */
        dalpha[0] += (float)((double)a->grad_scale * s);
    }
    nb_free(heap);
}

nb_tensor *nb_codebook(nb_tape *t, nb_tensor *w, const nb_cb_args *a) {
    NB_ASSERT((size_t)a->rows * a->K == w->numel && a->ncodes >= 2 && a->ncodes <= 256,
              "codebook: layout (%d, %zu) with %d codes does not fit %zu weights", a->rows, a->K, a->ncodes, w->numel);
    nb_tensor *y = nb_tape_tensor(t, w->ndim, w->shape);
    NB_ASSERT(y, "codebook: %s", nb_last_error());
    nb_cb_forward(a, w->data, y->data);
    if (!nb_tape_wants(t, w, a->alpha, NULL)) return y;
    nb_node *n = nb_tape_record(t, &nb_quant_op_table[NB_QOP_CODEBOOK], y, w, a->alpha, NULL);
    nb_cb_args *s = nb_tape_scratch(t, sizeof *s);
    NB_ASSERT(n && s, "codebook: %s", nb_last_error());
    *s = *a;
    n->saved = s;
    return y;
}

void nb_codebook_backward_node(nb_tape *t, nb_node *n) {
    const nb_cb_args *a = n->saved;
    nb_tensor *w = n->in[0];
    float *dalpha = a->alpha && a->alpha->requires_grad ? nb_tape_grad(t, a->alpha) : NULL;
    const float *dy = n->out->grad;
    int fresh = 0;
    float *dw = w->requires_grad ? nb_tape_grad_inplace(t, n->out, w, &fresh) : NULL;
    /* without the mask and α, d(out) passes through unchanged */
    if (dw == dy && !a->ste_mask && !dalpha) return;
    nb_cb_backward(a, w->data, dy, dw, fresh, dalpha);
}
