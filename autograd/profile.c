/* The per-node-kind profile: rows keyed by a node's description. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
    char key[96];
    double fwd, bwd;
    long count;
} prof_row;

struct nb_profile {
    prof_row *rows;
    size_t n, cap;
};

nb_profile *nb_profile_new(void) { return nb_calloc(1, sizeof(nb_profile)); }

void nb_profile_free(nb_profile *p) {
    if (!p) return;
    nb_free(p->rows);
    nb_free(p);
}

void nb_profile_clear(nb_profile *p) { p->n = 0; }

static void describe(const nb_node *n, char *buf, size_t len) {
    if (n->op->describe) {
        n->op->describe(n, buf, len);
        return;
    }
    /* name and the output's shape without the batch */
    int k = snprintf(buf, len, "%s", n->op->name);
    for (int d = 1; d < n->out->ndim && k > 0 && (size_t)k < len; d++)
        k += snprintf(buf + k, len - (size_t)k, "%s%d", d == 1 ? " " : "x", n->out->shape[d]);
}

void nb_profile_add_nodes(nb_profile *p, const nb_node *nodes, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char key[96];
        describe(&nodes[i], key, sizeof key);
        size_t r = 0;
        while (r < p->n && strcmp(p->rows[r].key, key)) r++;
        if (r == p->n) {
            if (p->n == p->cap) {
                size_t cap = p->cap ? 2 * p->cap : 64;
                prof_row *rows = nb_realloc(p->rows, cap * sizeof *rows);
                if (!rows) return; /* a profile is best effort */
                p->rows = rows;
                p->cap = cap;
            }
            memset(&p->rows[r], 0, sizeof p->rows[r]);
            snprintf(p->rows[r].key, sizeof p->rows[r].key, "%s", key);
            p->n++;
        }
        p->rows[r].fwd += nodes[i].t_fwd;
        p->rows[r].bwd += nodes[i].t_bwd;
        p->rows[r].count++;
    }
}

static int by_total(const void *a, const void *b) {
    const prof_row *x = a, *y = b;
    double tx = x->fwd + x->bwd, ty = y->fwd + y->bwd;
    return (tx < ty) - (tx > ty);
}

void nb_profile_print(const nb_profile *p, int steps, FILE *f) {
    if (steps < 1) steps = 1;
    prof_row *rows = nb_malloc((p->n + 1) * sizeof *rows);
    if (!rows) return;
    memcpy(rows, p->rows, p->n * sizeof *rows);
    qsort(rows, p->n, sizeof *rows, by_total);
    double total = 0.0, tf = 0.0, tb = 0.0;
    for (size_t r = 0; r < p->n; r++) {
        tf += rows[r].fwd;
        tb += rows[r].bwd;
    }
    total = tf + tb;
    fprintf(f, "%-44s %5s %9s %9s %9s %6s\n", "node (per step)", "count", "fwd ms", "bwd ms", "total ms", "share");
    for (size_t r = 0; r < p->n; r++) {
        const prof_row *w = &rows[r];
        fprintf(f, "%-44s %5ld %9.2f %9.2f %9.2f %5.1f%%\n", w->key, w->count / steps, 1e3 * w->fwd / steps,
                1e3 * w->bwd / steps, 1e3 * (w->fwd + w->bwd) / steps,
                total > 0 ? 100.0 * (w->fwd + w->bwd) / total : 0.0);
    }
    fprintf(f, "%-44s %5s %9.2f %9.2f %9.2f\n", "all nodes", "", 1e3 * tf / steps, 1e3 * tb / steps, 1e3 * total / steps);
    nb_free(rows);
}
