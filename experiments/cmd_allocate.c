/* `nibble allocate SENSITIVITY.json --avg-bits B`: mixed-precision bit
 * allocation (ALGORITHMS.md §5; quant/nb_alloc.h) from the per-layer costs
 * `nibble sensitivity` measured, written as a bitmap that a config's
 * quant.bitmap consumes. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nb_alloc_files.h"
#include "nb_cli.h"
#include "run_internal.h"

static void allocate_usage(FILE *f) {
    fprintf(f,
            "usage: nibble allocate SENSITIVITY.json --avg-bits B [--candidates 2,3,4]\n"
            "                       [--method dp|greedy|exhaustive] [--fixed-bits N] [--count-fixed]\n"
            "                       [-o BITMAP.json]\n"
            "\n"
            "Chooses one weight bit width per layer from the candidates of a sensitivity file\n"
            "(written by nibble sensitivity), minimising the summed cost omega under the\n"
            "parameter-weighted average bits B, and writes the per-layer bitmap that a\n"
            "config's quant.bitmap reads (docs/quantization.md, \"Mixed precision\").\n"
            "Prints each layer (name, role, params, bits, omega), the average achieved, the\n"
            "weight size at those bits (sum of params x bits / 8 over every layer) against\n"
            "FP32, the total cost and the convention.\n"
            "\n"
            "  --avg-bits B       the budget: sum(n_l b_l) / sum(n_l) <= B over the layers that count\n"
            "  --candidates LIST  only these of the file's widths (comma-separated)\n"
            "  --method M         dp (default; exact), greedy (start at the widest, lower the\n"
            "                     layer with the least cost increase per bit saved until the\n"
            "                     budget holds) or exhaustive (exact; small problems only)\n"
            "  --fixed-bits N     the first and last layers' width (default 8); 0 allocates\n"
            "                     them like the others\n"
            "  --count-fixed      the fixed layers count in the average (default: excluded)\n"
            "  -o, --output FILE  the bitmap (default: alloc.json beside SENSITIVITY.json);\n"
            "                     written through a temporary file and a rename\n"
            "\n"
            "Ties in cost go to fewer bits, then to the lower width in the earlier layer.\n"
            "Exit codes: 0 success, 2 bad usage or bad input (an infeasible budget too;\n"
            "nothing is written then), 1 failure.\n");
}

typedef struct {
    const char *sens, *out;
    double avg_bits;
    int want[NB_ALLOC_MAX_CANDIDATES], n_want; /* --candidates, ascending; 0 = all */
    nb_alloc_opts o;
} alloc_args;

/* "2,3,4" -> ascending distinct widths in 1..8; 0 on a bad list. */
static int parse_widths(const char *s, int *w, int *n) {
    int seen[9] = {0};
    *n = 0;
    for (const char *p = s;;) {
        char *end;
        errno = 0;
        const long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > 8 || seen[v]) return 0;
        seen[v] = 1;
        if (*end == '\0') break;
        if (*end != ',') return 0;
        p = end + 1;
    }
    for (int b = 1; b <= 8; b++)
        if (seen[b]) w[(*n)++] = b;
    return 1;
}

/* -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, alloc_args *a) {
    static const struct option longopts[] = {
        {"avg-bits", required_argument, 0, 'a'},   {"candidates", required_argument, 0, 'c'},
        {"method", required_argument, 0, 'm'},     {"fixed-bits", required_argument, 0, 'f'},
        {"count-fixed", no_argument, 0, 'n'},      {"output", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    int c, m;
    long fixed;
    char *end;
    optind = 1;
    opterr = 0;
    a->o = nb_alloc_opts_default();
    while ((c = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
        switch (c) {
        case 'a':
            errno = 0;
            a->avg_bits = strtod(optarg, &end);
            if (*optarg == '\0' || *end != '\0' || errno || !isfinite(a->avg_bits) || a->avg_bits <= 0) {
                fprintf(stderr, "nibble allocate: --avg-bits expects a number > 0, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'c':
            if (!parse_widths(optarg, a->want, &a->n_want)) {
                fprintf(stderr, "nibble allocate: --candidates expects distinct widths in 1..8 separated by "
                        "commas (e.g. 2,3,4), got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'm':
            if ((m = nb_alloc_method_from_name(optarg)) < 0) {
                fprintf(stderr, "nibble allocate: --method expects dp, greedy or exhaustive, got '%s'\n", optarg);
                return 2;
            }
            a->o.method = (nb_alloc_method)m;
            break;
        case 'f':
            if (!nb_cli_parse_long("allocate", "--fixed-bits", optarg, 0, 8, &fixed)) return 2;
            a->o.fixed_bits = (int)fixed;
            break;
        case 'n': a->o.count_fixed = 1; break;
        case 'o': a->out = optarg; break;
        case 'h': allocate_usage(stdout); return 0;
        default:
            fprintf(stderr, "nibble allocate: unknown or incomplete option '%s'\n", argv[optind - 1]);
            allocate_usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "nibble allocate: expected one SENSITIVITY.json\n");
        allocate_usage(stderr);
        return 2;
    }
    if (a->avg_bits <= 0) {
        fprintf(stderr, "nibble allocate: --avg-bits is required (e.g. --avg-bits 2.81)\n");
        return 2;
    }
    a->sens = argv[optind];
    a->o.avg_bits = a->avg_bits;
    return -1;
}

/* The candidates to allocate (--candidates, each one of the file's) and
 * where each sits among the file's: o->candidates[j] = s->candidates[col[j]]. */
static nb_status pick_candidates(const alloc_args *a, const nb_sensitivity *s, nb_alloc_opts *o, int *col) {
    o->n_candidates = 0;
    for (int j = 0; j < s->n_candidates; j++) {
        int keep = a->n_want == 0;
        for (int k = 0; k < a->n_want; k++) keep |= a->want[k] == s->candidates[j];
        if (keep) col[o->n_candidates] = j, o->candidates[o->n_candidates++] = s->candidates[j];
    }
    if (o->n_candidates == a->n_want || a->n_want == 0) return NB_OK;
    char have[64] = "";
    size_t len = 0;
    for (int j = 0; j < s->n_candidates; j++)
        len += (size_t)snprintf(have + len, sizeof have - len, "%s%d", j ? ", " : "", s->candidates[j]);
    for (int k = 0; k < a->n_want; k++) {
        int found = 0;
        for (int j = 0; j < s->n_candidates; j++) found |= a->want[k] == s->candidates[j];
        if (!found)
            return nb_set_error(NB_STATUS_BAD_INPUT, "--candidates: %d bits is not among the candidates of %s "
                                "(%s)", a->want[k], a->sens, have);
    }
    return NB_STATUS_INTERNAL; /* unreachable: some width was missing */
}

/* The default bitmap path: alloc.json in SENSITIVITY.json's directory. */
static void default_output(const char *sens, char *buf, size_t n) {
    const char *slash = strrchr(sens, '/');
    snprintf(buf, n, "%.*salloc.json", slash ? (int)(slash - sens) + 1 : 0, sens);
}

static void print_result(const alloc_args *a, const nb_sensitivity *s, const nb_alloc_result *r) {
    printf("%s: %s, metric %s, %d layers; candidates", a->sens, s->arch, s->metric, s->n_layers);
    for (int j = 0; j < a->o.n_candidates; j++) printf(" %d", a->o.candidates[j]);
    printf(", method %s\n\n%-40s %-6s %10s %4s %14s\n", r->solver, "layer", "role", "params", "bits", "omega");
    for (int i = 0; i < s->n_layers; i++) {
        const nb_sens_layer *y = &s->layers[i];
        char omega[32] = "-"; /* a fixed width outside the file's candidates has no cost */
        for (int j = 0; j < s->n_candidates; j++)
            if (s->candidates[j] == r->bits[i]) snprintf(omega, sizeof omega, "%.6g", y->omega[j]);
        printf("%-40s %-6s %10lld %4d %14s\n", y->name, y->role, (long long)y->params, r->bits[i], omega);
    }
    const double bytes = (double)r->total_bits / 8.0, fp32 = 4.0 * (double)r->total_params;
    printf("\naverage: %.4f bits over %lld counted parameters (budget %g)\n", r->avg_bits,
           (long long)r->counted_params, a->avg_bits);
    printf("weights: %.0f bytes at these bits, %.0f bytes in FP32 (%.2fx smaller; %lld parameters)\n", bytes, fp32,
           fp32 / bytes, (long long)r->total_params);
    printf("cost: %.6g (sum of omega over the allocated layers)\n", r->cost);
    printf("convention: %s\n", r->convention);
}

int nb_cmd_allocate(int argc, char **argv) {
    alloc_args a = {0};
    const int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    nb_sensitivity s = {0};
    nb_alloc_result r = {0};
    nb_alloc_layer *layers = NULL;
    double *omega = NULL;
    const char **names = NULL;
    int col[NB_ALLOC_MAX_CANDIDATES];
    char out[NB_CFG_PATH_MAX + 16];
    nb_status st = nb_sensitivity_load(a.sens, &s);
    if (st == NB_OK) st = pick_candidates(&a, &s, &a.o, col);
    if (st != NB_OK) goto done;
    const int L = s.n_layers, K = a.o.n_candidates;
    layers = nb_calloc((size_t)L, sizeof *layers);
    omega = nb_calloc((size_t)L * (size_t)K, sizeof *omega);
    names = nb_calloc((size_t)L, sizeof *names);
    if (!layers || !omega || !names) {
        st = NB_STATUS_OOM;
        goto done;
    }
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < K; j++) omega[(size_t)i * K + j] = s.layers[i].omega[col[j]];
        layers[i] = (nb_alloc_layer){.params = s.layers[i].params, .fixed = strcmp(s.layers[i].role, "hidden") != 0,
                                     .omega = omega + (size_t)i * K};
        names[i] = s.layers[i].name;
    }
    if ((st = nb_alloc_solve(layers, L, &a.o, &r)) != NB_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nb_last_error());
        st = nb_set_error(st, "%s: %s", a.sens, msg);
        goto done;
    }
    if (a.out)
        snprintf(out, sizeof out, "%s", a.out);
    else
        default_output(a.sens, out, sizeof out);
    const nb_bitmap b = {.source = a.sens, .metric = s.metric, .method = nb_alloc_method_name(a.o.method),
                         .convention = r.convention, .avg_bits_budget = a.avg_bits, .avg_bits = r.avg_bits,
                         .weight_bytes = (double)r.total_bits / 8.0, .names = names, .bits = r.bits, .n = L};
    if ((st = nb_bitmap_save(out, &b)) != NB_OK) goto done;
    print_result(&a, &s, &r);
    printf("bitmap: %s\n", out);
done:
    nb_alloc_result_deinit(&r);
    nb_sensitivity_deinit(&s);
    nb_free(layers);
    nb_free(omega);
    nb_free(names);
    if (st != NB_OK) {
        fprintf(stderr, "nibble allocate: %s\n", nb_last_error());
        return nb_cli_exit_code(st);
    }
    return 0;
}
