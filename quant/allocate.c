/* Mixed-precision bit allocation (ALGORITHMS.md §5; nb_alloc.h states the
 * problem, the convention, the budget rule and the tie rule).
 *
 * Every solver works on the allocated (non-fixed) layers only, with widths
 * as candidate indices j (c[0] < c[1] < ...), and in integers: the budget
 * is Σ n_i c[j_i] <= cap, cap being the counted budget less the fixed
 * layers' share when they count.
 *
 * The exact solver is a multiple-choice knapsack over the *excess* weight
 * u_ij = n_i (c[j] - c[0]) >= 0. All u_ij are divided by their gcd g (the
 * budget rounded down to a multiple of g, which loses nothing since every
 * sum of u_ij is one), and the table is indexed by the exact excess,
 * capped at the largest excess any allocation has. For a ResNet-18 g is
 * 4096 and the table a few thousand cells per layer. When layers x cells
 * still exceed max_cells, the same recurrence runs over each suffix's
 * Pareto frontier of (weight, cost) pairs instead: a state that another
 * beats in both weight and cost can be dropped, since each completion of it
 * is beaten by the same completion of the other (float addition is
 * monotone). Both walk the layers from last to first, so the forward
 * reconstruction can take the smallest width that still reaches the optimum
 * at each layer: the lexicographic tie rule.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nb_alloc.h"

static const char *const method_names[NB_ALLOC_METHOD_COUNT] = {
    [NB_ALLOC_DP] = "dp", [NB_ALLOC_GREEDY] = "greedy", [NB_ALLOC_EXHAUSTIVE] = "exhaustive"};

const char *nb_alloc_method_name(nb_alloc_method m) {
    return (unsigned)m < NB_ALLOC_METHOD_COUNT ? method_names[m] : NULL;
}

int nb_alloc_method_from_name(const char *name) {
    for (int i = 0; i < NB_ALLOC_METHOD_COUNT; i++)
        if (!strcmp(method_names[i], name)) return i;
    return -1;
}

nb_alloc_opts nb_alloc_opts_default(void) {
    return (nb_alloc_opts){.fixed_bits = 8, .method = NB_ALLOC_DP, .max_cells = (int64_t)1 << 26};
}

void nb_alloc_convention(const nb_alloc_opts *o, char *buf, size_t n) {
    if (o->fixed_bits == 0)
        snprintf(buf, n, "first/last layers allocated like the others");
    else
        snprintf(buf, n, "first/last layers fixed at %d bits, %s the average", o->fixed_bits,
                 o->count_fixed ? "included in" : "excluded from");
}

void nb_alloc_result_deinit(nb_alloc_result *r) {
    nb_free(r->bits);
    r->bits = NULL;
}

/* The allocated layers, in integers. */
typedef struct {
    const nb_alloc_layer *layers;
    const int *c;  /* (K) candidate widths, ascending */
    int K;
    int n;         /* allocated layers */
    const int *idx; /* (n) their indices among all layers */
    int64_t cap;   /* Σ n_i c[j_i] <= cap */
} problem;

static int64_t n_of(const problem *p, int i) { return p->layers[p->idx[i]].params; }
static const double *omega_of(const problem *p, int i) { return p->layers[p->idx[i]].omega; }

/* The cost of an allocation, summed from the last layer to the first (the
 * order the dynamic programs add in). */
static double cost_of(const problem *p, const int *j) {
    double c = 0.0;
    for (int i = p->n - 1; i >= 0; i--) c = c + omega_of(p, i)[j[i]];
    return c;
}

static int64_t weight_of(const problem *p, const int *j) {
    int64_t w = 0;
    for (int i = 0; i < p->n; i++) w += n_of(p, i) * p->c[j[i]];
    return w;
}

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        const int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* ----------------------------------------------------------- exact: table */

/* f_i[w] = least cost of layers i..n-1 with excess exactly w units;
 * ch[i][w] the smallest j reaching it. */
static nb_status solve_table(const problem *p, int64_t g, int64_t W, int *j_out) {
    const size_t cells = (size_t)W + 1;
    double *next = nb_malloc(cells * sizeof *next), *cur = nb_malloc(cells * sizeof *cur);
    uint8_t *ch = nb_malloc((size_t)p->n * cells);
    int64_t *u = nb_malloc((size_t)p->K * sizeof *u);
    nb_status st = next && cur && ch && u ? NB_OK : NB_STATUS_OOM;
    if (st != NB_OK) goto done;
    for (size_t w = 0; w < cells; w++) next[w] = INFINITY;
    next[0] = 0.0;
    for (int i = p->n - 1; i >= 0; i--) {
        const double *o = omega_of(p, i);
        for (int j = 0; j < p->K; j++) u[j] = n_of(p, i) * (p->c[j] - p->c[0]) / g;
        uint8_t *chi = ch + (size_t)i * cells;
        for (int64_t w = 0; w <= W; w++) {
            double best = INFINITY;
            int bj = 0;
            for (int j = 0; j < p->K && u[j] <= w; j++) { /* u grows with j */
                const double v = next[w - u[j]] + o[j];
                if (v < best) best = v, bj = j;
            }
            cur[w] = best;
            chi[w] = (uint8_t)bj;
        }
        double *t = next;
        next = cur;
        cur = t;
    }
    int64_t w = 0; /* all at c[0]: reachable and within budget */
    for (int64_t v = 1; v <= W; v++)
        if (next[v] < next[w]) w = v;
    for (int i = 0; i < p->n; i++) {
        const int j = ch[(size_t)i * cells + (size_t)w];
        j_out[i] = j;
        w -= n_of(p, i) * (p->c[j] - p->c[0]) / g;
    }
done:
    nb_free(next);
    nb_free(cur);
    nb_free(ch);
    nb_free(u);
    return st;
}

/* ------------------------------------------------- exact: Pareto frontier */

typedef struct {
    int64_t w;     /* Σ n_i c[j_i] over the suffix */
    double c;      /* its cost */
    int32_t parent; /* index in the next layer's frontier */
    int32_t j;
} state;

static int by_weight_cost_j(const void *a, const void *b) {
    const state *x = a, *y = b;
    if (x->w != y->w) return x->w < y->w ? -1 : 1;
    if (x->c != y->c) return x->c < y->c ? -1 : 1;
    return (x->j > y->j) - (x->j < y->j);
}

/* front[i]: the non-dominated states of layers i..n-1, weight ascending
 * and cost strictly descending; front[n] = {(0, 0)}. */
static nb_status solve_pareto(const problem *p, int *j_out) {
    state **front = nb_calloc((size_t)p->n + 1, sizeof *front);
    size_t *len = nb_calloc((size_t)p->n + 1, sizeof *len);
    nb_status st = front && len ? NB_OK : NB_STATUS_OOM;
    if (st == NB_OK && !(front[p->n] = nb_malloc(sizeof(state)))) st = NB_STATUS_OOM;
    if (st != NB_OK) goto done;
    front[p->n][0] = (state){0, 0.0, -1, 0};
    len[p->n] = 1;
    for (int i = p->n - 1; i >= 0; i--) {
        const size_t nn = len[i + 1];
        if (nn > (SIZE_MAX / sizeof(state)) / (size_t)p->K) {
            st = nb_set_error(NB_STATUS_OOM, "bit allocation: the Pareto frontier outgrew memory");
            goto done;
        }
        state *cand = nb_malloc(nn * (size_t)p->K * sizeof *cand);
        if (!cand) {
            st = NB_STATUS_OOM;
            goto done;
        }
        size_t m = 0;
        const double *o = omega_of(p, i);
        for (size_t k = 0; k < nn; k++) {
            const state *e = &front[i + 1][k];
            for (int j = 0; j < p->K; j++) {
                const int64_t w = e->w + n_of(p, i) * p->c[j];
                if (w > p->cap) break;
                cand[m++] = (state){w, e->c + o[j], (int32_t)k, j};
            }
        }
        qsort(cand, m, sizeof *cand, by_weight_cost_j);
        size_t kept = 0;
        double best = INFINITY;
        for (size_t k = 0; k < m; k++)
            if (cand[k].c < best) best = cand[k].c, cand[kept++] = cand[k];
        front[i] = cand;
        len[i] = kept;
        if (kept > INT32_MAX) {
            st = nb_set_error(NB_STATUS_OOM, "bit allocation: the Pareto frontier outgrew its index");
            goto done;
        }
    }
    /* The last state of front[0] has the least cost (costs fall strictly
     * along a frontier), and the least weight among that cost. */
    const state *e = &front[0][len[0] - 1];
    for (int i = 0; i < p->n; i++) {
        j_out[i] = e->j;
        e = &front[i + 1][e->parent];
    }
done:
    for (int i = 0; front && i <= p->n; i++) nb_free(front[i]);
    nb_free(front);
    nb_free(len);
    return st;
}

/* ------------------------------------------------- exhaustive and greedy */

/* Every allocation in lexicographic order (layer 0 most significant), so
 * the first of equal (cost, weight) is the lexicographically smallest. */
static nb_status solve_exhaustive(const problem *p, int *j_out) {
    double combos = pow((double)p->K, (double)p->n);
    if (combos > (double)NB_ALLOC_MAX_EXHAUSTIVE)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "bit allocation: exhaustive search over %d^%d = %.3g allocations is too large (at most "
                            "%ld); use method \"dp\"", p->K, p->n, combos, (long)NB_ALLOC_MAX_EXHAUSTIVE);
    int *j = nb_calloc((size_t)p->n + 1, sizeof *j);
    if (!j) return NB_STATUS_OOM;
    double best = INFINITY;
    int64_t best_w = 0;
    for (;;) {
        const int64_t w = weight_of(p, j);
        if (w <= p->cap) {
            const double c = cost_of(p, j);
            if (c < best || (c == best && w < best_w)) {
                best = c;
                best_w = w;
                memcpy(j_out, j, (size_t)p->n * sizeof *j);
            }
        }
        int i = p->n - 1;
        while (i >= 0 && ++j[i] == p->K) j[i--] = 0;
        if (i < 0) break;
    }
    nb_free(j);
    return NB_OK;
}

/* Start every layer at the widest candidate; while over budget, lower by
 * one candidate the layer whose step down costs least per bit saved,
 * (Ω(c[j-1]) - Ω(c[j])) / (n (c[j] - c[j-1])), the earlier layer on ties. */
static void solve_greedy(const problem *p, int *j) {
    int64_t w = 0;
    for (int i = 0; i < p->n; i++) {
        j[i] = p->K - 1;
        w += n_of(p, i) * p->c[j[i]];
    }
    while (w > p->cap) {
        int pick = -1;
        double best = INFINITY;
        for (int i = 0; i < p->n; i++) {
            if (j[i] == 0) continue;
            const double *o = omega_of(p, i);
            const double r = (o[j[i] - 1] - o[j[i]]) / (double)(n_of(p, i) * (p->c[j[i]] - p->c[j[i] - 1]));
            if (pick < 0 || r < best) best = r, pick = i;
        }
        /* pick >= 0: with every layer at c[0] the budget holds (checked) */
        w -= n_of(p, pick) * (p->c[j[pick]] - p->c[j[pick] - 1]);
        j[pick]--;
    }
}

/* ------------------------------------------------------------------ solve */

/* The largest Σ n b the budget allows for N counted parameters (see
 * nb_alloc.h: B̄·N within 1e-13 of an integer counts as that integer). */
static int64_t budget_of(double avg, int64_t N) {
    if (avg >= 8.0) return 8 * N; /* no width exceeds 8 */
    const double t = avg * (double)N, r = nearbyint(t);
    return fabs(t - r) <= 1e-13 * fmax(1.0, t) ? (int64_t)r : (int64_t)floor(t);
}

static nb_status check(const nb_alloc_layer *layers, int L, const nb_alloc_opts *o) {
    if (L < 1 || !layers) return nb_set_error(NB_STATUS_BAD_INPUT, "bit allocation: no layers");
    if (o->n_candidates < 1 || o->n_candidates > NB_ALLOC_MAX_CANDIDATES)
        return nb_set_error(NB_STATUS_BAD_INPUT, "bit allocation: 1..%d candidate widths, got %d",
                            NB_ALLOC_MAX_CANDIDATES, o->n_candidates);
    for (int j = 0; j < o->n_candidates; j++)
        if (o->candidates[j] < 1 || o->candidates[j] > 8 || (j && o->candidates[j] <= o->candidates[j - 1]))
            return nb_set_error(NB_STATUS_BAD_INPUT, "bit allocation: candidates[%d] = %d: widths must ascend "
                                "strictly within 1..8", j, o->candidates[j]);
    if (!isfinite(o->avg_bits) || o->avg_bits <= 0)
        return nb_set_error(NB_STATUS_BAD_INPUT, "bit allocation: average bits must be a number > 0, got %g",
                            o->avg_bits);
    if (o->fixed_bits < 0 || o->fixed_bits > 8)
        return nb_set_error(NB_STATUS_BAD_INPUT, "bit allocation: fixed bits must be 0 (allocate like the "
                            "others) or 1..8, got %d", o->fixed_bits);
    if ((unsigned)o->method >= NB_ALLOC_METHOD_COUNT)
        return nb_set_error(NB_STATUS_BAD_INPUT, "bit allocation: unknown method %d", (int)o->method);
    int64_t total = 0;
    for (int l = 0; l < L; l++) {
        const nb_alloc_layer *y = &layers[l];
        /* 2^50 parameters in all keeps every Σ n b below 2^53 */
        if (y->params < 1 || y->params > ((int64_t)1 << 50) - total)
            return nb_set_error(NB_STATUS_BAD_INPUT, "bit allocation: layer %d: params must be >= 1 (and 2^50 "
                                "in all), got %lld", l, (long long)y->params);
        total += y->params;
        if (y->fixed && o->fixed_bits) continue;
        if (!y->omega) return nb_set_error(NB_STATUS_BAD_INPUT, "bit allocation: layer %d: no costs", l);
        for (int j = 0; j < o->n_candidates; j++)
            if (!isfinite(y->omega[j]) || y->omega[j] < 0)
                return nb_set_error(NB_STATUS_BAD_INPUT, "bit allocation: layer %d: cost at %d bits must be a "
                                    "finite number >= 0, got %g", l, o->candidates[j], y->omega[j]);
    }
    return NB_OK;
}

nb_status nb_alloc_solve(const nb_alloc_layer *layers, int L, const nb_alloc_opts *o, nb_alloc_result *out) {
    nb_status st = check(layers, L, o);
    if (st != NB_OK) return st;
    nb_alloc_result r = {.solver = o->method == NB_ALLOC_DP ? "dp (table)" : method_names[o->method]};
    nb_alloc_convention(o, r.convention, sizeof r.convention);
    int *idx = nb_malloc((size_t)L * sizeof *idx), *j = nb_calloc((size_t)L, sizeof *j);
    r.bits = nb_malloc((size_t)L * sizeof *r.bits);
    if (!idx || !j || !r.bits) {
        st = NB_STATUS_OOM;
        goto done;
    }
    problem p = {.layers = layers, .c = o->candidates, .K = o->n_candidates, .idx = idx};
    int64_t fixed_bits = 0, fixed_params = 0, min_bits = 0, alloc_params = 0;
    for (int l = 0; l < L; l++) {
        if (layers[l].fixed && o->fixed_bits) {
            fixed_params += layers[l].params;
            fixed_bits += layers[l].params * o->fixed_bits;
        } else {
            idx[p.n++] = l;
            alloc_params += layers[l].params;
            min_bits += layers[l].params * o->candidates[0];
        }
    }
    if (p.n == 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "bit allocation: no layer to allocate (%d layers, all first/last, "
                          "fixed at %d bits)", L, o->fixed_bits);
        goto done;
    }
    r.counted_params = alloc_params + (o->count_fixed ? fixed_params : 0);
    r.budget_bits = budget_of(o->avg_bits, r.counted_params);
    p.cap = r.budget_bits - (o->count_fixed ? fixed_bits : 0);
    if (min_bits > p.cap) {
        const double least = (double)(min_bits + (o->count_fixed ? fixed_bits : 0)) / (double)r.counted_params;
        st = nb_set_error(NB_STATUS_BAD_INPUT, "bit allocation: an average of %g bits is infeasible: the smallest "
                          "candidate (%d bits) on every allocated layer gives %.6f (%s)", o->avg_bits,
                          o->candidates[0], least, r.convention);
        goto done;
    }
    if (o->method == NB_ALLOC_EXHAUSTIVE) {
        st = solve_exhaustive(&p, j);
    } else if (o->method == NB_ALLOC_GREEDY) {
        solve_greedy(&p, j);
    } else {
        int64_t g = 0, W = 0;
        for (int i = 0; i < p.n; i++) {
            for (int k = 1; k < p.K; k++) g = gcd64(g, n_of(&p, i) * (p.c[k] - p.c[0]));
            W += n_of(&p, i) * (p.c[p.K - 1] - p.c[0]);
        }
        if (g == 0) g = 1; /* one candidate: every excess is 0 */
        W /= g;
        if ((p.cap - min_bits) / g < W) W = (p.cap - min_bits) / g;
        if (W + 1 <= o->max_cells / p.n) {
            st = solve_table(&p, g, W, j);
        } else {
            r.solver = "dp (pareto)";
            st = solve_pareto(&p, j);
        }
    }
    if (st != NB_OK) goto done;
    for (int l = 0; l < L; l++) r.bits[l] = o->fixed_bits;
    for (int i = 0; i < p.n; i++) r.bits[idx[i]] = p.c[j[i]];
    r.cost = cost_of(&p, j);
    r.counted_bits = weight_of(&p, j) + (o->count_fixed ? fixed_bits : 0);
    r.avg_bits = (double)r.counted_bits / (double)r.counted_params;
    r.total_bits = weight_of(&p, j) + fixed_bits;
    r.total_params = alloc_params + fixed_params;
done:
    nb_free(idx);
    nb_free(j);
    if (st != NB_OK) {
        nb_free(r.bits);
        return st;
    }
    *out = r;
    return NB_OK;
}
