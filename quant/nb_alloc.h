/*
 * nb_alloc.h — mixed-precision bit allocation (ALGORITHMS.md §5 "Bit
 * allocation"): one weight bit width per layer, chosen from a list of
 * candidates, minimising the summed sensitivity cost Σ_l Ω_l(b_l) subject to
 * the parameter-weighted average Σ n_l b_l / Σ n_l <= B̄ over the layers
 * that count. Pure: no files, no model; `nibble allocate` reads the costs
 * from a sensitivity file and writes the result as a bitmap
 * (docs/quantization.md, "Mixed precision").
 *
 * Convention (stated in every result's `convention`): layers marked fixed
 * (the first conv and the classifier) stay at fixed_bits (8) and are left
 * out of the average; count_fixed puts their n_l·fixed_bits into the
 * numerator and n_l into the denominator; fixed_bits 0 allocates them like
 * the others. Fixed layers add nothing to the cost.
 *
 * Budget: compared exactly in integers, Σ_counted n_l b_l <= floor(B̄·N)
 * (N = Σ_counted n_l), where B̄·N is first rounded to the nearest integer
 * when it lies within 1e-13 (relative) of one, so that an average exactly at
 * a decimal budget such as 2.81 — which has no exact binary form — counts as
 * within it.
 *
 * Optimum and ties: the allocation with the least cost; among equal costs
 * the fewest bits Σ n_l b_l; then the lowest bits in the earliest layer
 * (lexicographic in layer order). The cost of an allocation is summed from
 * the last allocated layer to the first, in double, by every method, so
 * exact and exhaustive search agree bit for bit.
 *
 * Example:
 *     static const double o1[] = {5, 2, 1}, o2[] = {9, 4, 0.5};
 *     nb_alloc_layer ls[] = {{.params = 100, .omega = o1}, {.params = 300, .omega = o2}};
 *     nb_alloc_opts o = nb_alloc_opts_default();
 *     o.candidates[0] = 2, o.candidates[1] = 3, o.candidates[2] = 4, o.n_candidates = 3;
 *     o.avg_bits = 3.0;
 *     nb_alloc_result r;
 *     if (nb_alloc_solve(ls, 2, &o, &r) == NB_OK) { ... r.bits[0], r.bits[1] ...; nb_alloc_result_deinit(&r); }
 */
#ifndef NB_ALLOC_H
#define NB_ALLOC_H

#include <stdint.h>

#include "nb_core.h"

#define NB_ALLOC_MAX_CANDIDATES 8 /* distinct widths in 1..8 */

typedef enum {
    NB_ALLOC_DP = 0,     /* exact: multiple-choice knapsack by dynamic programming */
    NB_ALLOC_GREEDY,     /* heuristic: start at the widest, lower the cheapest Δcost per bit saved */
    NB_ALLOC_EXHAUSTIVE, /* exact: every allocation (at most NB_ALLOC_MAX_EXHAUSTIVE) */
    NB_ALLOC_METHOD_COUNT
} nb_alloc_method;

#define NB_ALLOC_MAX_EXHAUSTIVE (1L << 24) /* allocations exhaustive search visits at most */

/* "dp", "greedy", "exhaustive"; NULL when out of range. */
const char *nb_alloc_method_name(nb_alloc_method m);
/* The method called name; -1 if none. */
int nb_alloc_method_from_name(const char *name);

/* One layer of the problem. */
typedef struct {
    int64_t params;       /* n_l >= 1 */
    int fixed;            /* the first or last layer (see the convention) */
    const double *omega;  /* (n_candidates): Ω_l at each candidate, finite and >= 0; borrowed */
} nb_alloc_layer;

typedef struct {
    int candidates[NB_ALLOC_MAX_CANDIDATES]; /* ascending, distinct, each in 1..8 */
    int n_candidates;
    double avg_bits;      /* B̄ > 0 */
    int fixed_bits;       /* 1..8: fixed layers' width; 0: fixed layers are allocated like the others */
    int count_fixed;      /* fixed layers count in the average */
    nb_alloc_method method;
    int64_t max_cells;    /* dp: largest table (allocated layers x budget cells) before the exact
                             Pareto-frontier fallback */
} nb_alloc_opts;

/* No candidates, avg_bits 0 (the caller sets both), fixed_bits 8,
 * count_fixed 0, method dp, max_cells 2^26. */
nb_alloc_opts nb_alloc_opts_default(void);

/* A solution; caller-owned, release with nb_alloc_result_deinit. */
typedef struct {
    int *bits;            /* (L) width of each layer (fixed ones included); nb_malloc'ed */
    double cost;          /* Σ Ω_l(b_l) over the allocated (non-fixed) layers */
    int64_t counted_bits; /* Σ n_l b_l over the layers that count in the average */
    int64_t counted_params;
    int64_t budget_bits;  /* the largest counted_bits the budget allows */
    int64_t total_bits;   /* Σ n_l b_l over every layer (weight size = total_bits / 8 bytes) */
    int64_t total_params;
    double avg_bits;      /* counted_bits / counted_params */
    const char *solver;   /* static: "dp (table)", "dp (pareto)", "greedy", "exhaustive" */
    char convention[128]; /* e.g. "first/last layers fixed at 8 bits, excluded from the average" */
} nb_alloc_result;

/* The convention sentence of o into buf. */
void nb_alloc_convention(const nb_alloc_opts *o, char *buf, size_t n);

/* Solve the problem of the L layers under o into *out (written only on
 * success). NB_STATUS_BAD_INPUT for bad options or layers (naming the
 * layer index), for no layer to allocate, and for an infeasible budget
 * ("... the smallest candidate everywhere gives X average bits"); exhaustive
 * beyond NB_ALLOC_MAX_EXHAUSTIVE allocations is BAD_INPUT too; NB_STATUS_OOM. */
nb_status nb_alloc_solve(const nb_alloc_layer *layers, int L, const nb_alloc_opts *o, nb_alloc_result *out);
/* Free r's bits (r may be zeroed; safe twice). */
void nb_alloc_result_deinit(nb_alloc_result *r);

#endif /* NB_ALLOC_H */
