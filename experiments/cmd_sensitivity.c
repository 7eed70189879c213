/* `nibble sensitivity CONFIG`: per layer and candidate bit width, how much
 * quantizing that layer's weights hurts a trained FP32 model (ALGORITHMS.md
 * §5, [recon]; docs/quantization.md "Mixed precision"):
 *
 *   hessian     Ω_l(b) = |Tr(H_l)| / n_l · ||Q_b(W_l) - W_l||²  (HAWQ-V2; the
 *               trace by Hutchinson with finite-difference Hessian-vector products)
 *   fisher      Ω_l(b) = Σ_batches Σ_i (∂L/∂w_i)² (Q_b(w_i) - w_i)² / batches
 *   loss_delta  Ω_l(b) = L(only layer l quantized at b) - L(FP32), floored at 0
 *
 * Q_b is the config's weight quantizer (ADQ codebooks or the uniform grid)
 * at b bits; L the mean cross-entropy over sensitivity.batches fixed
 * training batches (shuffled by the seed, not augmented), batchnorm on its
 * running statistics. Writes a JSON table (the input of nibble allocate)
 * and a PNG heat map (layers x bits, log10 Ω). */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "nb_cli.h"
#include "nb_plot.h"
#include "run_internal.h"

#define MAX_CANDS 8

static void sens_usage(FILE *f) {
    fprintf(f,
            "usage: nibble sensitivity CONFIG.json [--checkpoint CKPT] [--metric M]\n"
            "                          [--candidates 2,3,4] [-o OUT.json] [--png OUT.png]\n"
            "                          [--set KEY=VALUE]...\n"
            "\n"
            "Per layer (every conv and linear) and per candidate weight bit width, the\n"
            "sensitivity of a trained FP32 model to quantizing that layer's weights with\n"
            "the config's weight quantizer (quant.weights: \"adq\" codebooks, else the\n"
            "uniform grid) at that width:\n"
            "  hessian     |Tr(H_l)|/n_l * ||Q_b(W_l) - W_l||^2, the Hessian trace by\n"
            "              Hutchinson (sensitivity.samples Rademacher vectors, finite-\n"
            "              difference Hessian-vector products, step sensitivity.fd_eps x\n"
            "              the layer's rms weight)\n"
            "  fisher      sum of (dL/dw)^2 (Q_b(w) - w)^2, averaged over the batches\n"
            "  loss_delta  the loss increase when only that layer is quantized\n"
            "The loss is the mean cross-entropy over sensitivity.batches training batches\n"
            "of sensitivity.batch_size images (shuffled by the seed, not augmented), with\n"
            "batchnorm on its running statistics. Writes the table as JSON (the input of\n"
            "nibble allocate) and a heat map PNG (layers x bits, log10 of the metric).\n"
            "\n"
            "  --checkpoint CKPT  the FP32 checkpoint (default: the config's init.checkpoint)\n"
            "  --metric M         hessian | fisher | loss_delta (default: sensitivity.metric)\n"
            "  --candidates LIST  comma-separated bit widths, 1..8 (default 2,3,4)\n"
            "  -o OUT.json        default output.dir/sensitivity.json\n"
            "  --png OUT.png      default: OUT.json with .png\n"
            "  --set KEY=VALUE    override a config key, e.g. --set sensitivity.samples=64\n"
            "\n"
            "Exit codes: 0 success, 2 bad usage or bad input (nothing is written then), 1 failure.\n");
}

typedef struct {
    nb_model *m;
    nb_tape *tape;
    int nb, C, H, W;
    int *n;          /* examples per batch */
    float **x;       /* the fixed batches */
    int32_t **y;
    nb_progress *bar;
    long done;
} sens_ctx;

/* The mean loss over the batches; with grad, its gradient into grad. */
static nb_status loss_over_batches(sens_ctx *s, float *grad, double *loss) {
    nb_model *m = s->m;
    const int had = nb_tape_set_grad(s->tape, grad != NULL);
    if (grad) nb_model_zero_grad(m);
    double total = 0.0;
    long count = 0;
    nb_status st = NB_OK;
    for (int b = 0; b < s->nb && st == NB_OK; b++) {
        nb_tensor x;
        nb_tensor_wrap(&x, s->x[b], 4, (int[]){s->n[b], s->C, s->H, s->W});
        nb_tensor *l = nb_cross_entropy(s->tape, nb_model_forward(m, s->tape, &x), s->y[b], 0.0f);
        const double lv = (double)l->data[0];
        if (!isfinite(lv)) st = nb_set_error(NB_STATUS_NUMERIC, "the loss of batch %d is %g", b, lv);
        /* the batch mean, weighted by its size: the loss over all examples */
        if (st == NB_OK && grad) {
            float seed = (float)s->n[b];
            st = nb_backward_seed(s->tape, l, &seed);
        }
        total += lv * s->n[b];
        count += s->n[b];
        nb_tape_reset(s->tape);
    }
    nb_tape_set_grad(s->tape, had);
    if (st != NB_OK) return st;
    if (grad)
        for (size_t i = 0; i < m->n_param_floats; i++) grad[i] = (float)((double)m->param_grad[i] / (double)count);
    if (loss) *loss = total / (double)count;
    return NB_OK;
}

static nb_status grad_fn(void *ctx, float *grad) { return loss_over_batches(ctx, grad, NULL); }

/* Images through forward and backward per sample: two gradients over the batches. */
static double sample_images(const sens_ctx *s) {
    double n = 0.0;
    for (int b = 0; b < s->nb; b++) n += s->n[b];
    return 2.0 * n;
}

static void on_sample(void *ctx, int done) {
    sens_ctx *s = ctx;
    nb_progress_update(s->bar, done, (double)done * sample_images(s), NULL);
}

static int parse_candidates(const char *s, int *c, int *n) {
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        const long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 8 || *n == MAX_CANDS) return 0;
        for (int i = 0; i < *n; i++)
            if (c[i] >= v) return 0; /* ascending, no repeats */
        c[(*n)++] = (int)v;
        if (*end == ',') end++;
        else if (*end) return 0;
        p = end;
    }
    return *n > 0;
}

typedef struct {
    nb_config c;
    nb_dataset *dtr;
    nb_loader *l;
    nb_model *m;
    nb_tape *tape;
    sens_ctx s;
    float *qbuf, *gbuf, *gbuf2, *save;
    double *omega, *trace;
    char **labels;
    char *json;
} sens_run;

static void sens_free(sens_run *r) {
    for (int b = 0; b < r->s.nb; b++) {
        nb_free(r->s.x[b]);
        nb_free(r->s.y[b]);
    }
    nb_free(r->s.x);
    nb_free(r->s.y);
    nb_free(r->s.n);
    nb_free(r->qbuf);
    nb_free(r->gbuf);
    nb_free(r->gbuf2);
    nb_free(r->save);
    nb_free(r->omega);
    nb_free(r->trace);
    nb_free(r->labels);
    nb_free(r->json);
    nb_tape_free(r->tape);
    nb_model_free(r->m);
    nb_loader_free(r->l);
    nb_dataset_free(r->dtr);
}

/* The fixed batches, copied out of the loader. */
static nb_status load_batches(sens_run *r) {
    const nb_config *c = &r->c;
    nb_loader_opts o = nb_loader_opts_default();
    o.batch = c->sensitivity.batch_size;
    o.shuffle = 1;
    o.augment = 0;
    o.out_h = o.out_w = c->data.size;
    o.seed = c->seed;
    nb_status st = nb_loader_new(r->dtr, &o, &r->l);
    if (st == NB_OK) st = nb_loader_start_epoch(r->l, 0);
    if (st != NB_OK) return st;
    const long avail = (long)nb_loader_batches_per_epoch(r->l);
    const int nb = c->sensitivity.batches < avail ? c->sensitivity.batches : (int)avail;
    sens_ctx *s = &r->s;
    s->C = nb_dataset_channels(r->dtr);
    s->H = nb_loader_out_h(r->l);
    s->W = nb_loader_out_w(r->l);
    s->x = nb_calloc((size_t)nb + 1, sizeof(float *));
    s->y = nb_calloc((size_t)nb + 1, sizeof(int32_t *));
    s->n = nb_calloc((size_t)nb + 1, sizeof(int));
    if (!s->x || !s->y || !s->n) return NB_STATUS_OOM;
    for (int b = 0; b < nb; b++) {
        const float *xb;
        const int32_t *yb;
        int n = 0;
        if ((st = nb_loader_next(r->l, &xb, &yb, &n)) != NB_OK) return st;
        if (n == 0) break;
        const size_t per = (size_t)s->C * s->H * s->W;
        s->x[b] = nb_malloc((size_t)n * per * sizeof(float));
        s->y[b] = nb_malloc((size_t)n * sizeof(int32_t));
        if (!s->x[b] || !s->y[b]) return NB_STATUS_OOM;
        memcpy(s->x[b], xb, (size_t)n * per * sizeof(float));
        memcpy(s->y[b], yb, (size_t)n * sizeof(int32_t));
        s->n[b] = n;
        s->nb = b + 1;
    }
    return s->nb ? NB_OK : nb_set_error(NB_STATUS_BAD_INPUT, "%s: no training images", nb_dataset_path(r->dtr));
}

static const char *role_name(const nb_module *mod) {
    return mod->role == NB_ROLE_FIRST ? "first" : mod->role == NB_ROLE_LAST ? "last" : "hidden";
}

int nb_cmd_sensitivity(int argc, char **argv) {
    static const struct option longopts[] = {{"set", required_argument, 0, 's'},
                                             {"checkpoint", required_argument, 0, 'c'},
                                             {"metric", required_argument, 0, 'm'},
                                             {"candidates", required_argument, 0, 'b'},
                                             {"png", required_argument, 0, 'p'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *sets[64], *ckpt = NULL, *metric = NULL, *out = NULL, *png = NULL;
    int n_sets = 0, opt, cands[MAX_CANDS] = {2, 3, 4}, nc = 3;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            if (n_sets == (int)(sizeof sets / sizeof sets[0])) {
                fprintf(stderr, "nibble sensitivity: at most 64 --set options\n");
                return 2;
            }
            sets[n_sets++] = optarg;
            break;
        case 'c': ckpt = optarg; break;
        case 'm': metric = optarg; break;
        case 'o': out = optarg; break;
        case 'p': png = optarg; break;
        case 'b':
            if (!parse_candidates(optarg, cands, &nc)) {
                fprintf(stderr, "nibble sensitivity: --candidates expects ascending bit widths in 1..8 separated by "
                                "commas (at most %d), got '%s'\n", MAX_CANDS, optarg);
                return 2;
            }
            break;
        case 'h': sens_usage(stdout); return 0;
        default:
            fprintf(stderr, "nibble sensitivity: unknown or incomplete option '%s'\n", argv[optind - 1]);
            sens_usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "nibble sensitivity: expected one CONFIG.json\n");
        sens_usage(stderr);
        return 2;
    }
    char mset[64];
    if (metric) {
        snprintf(mset, sizeof mset, "sensitivity.metric=\"%s\"", metric);
        if (n_sets == (int)(sizeof sets / sizeof sets[0])) return 2;
        sets[n_sets++] = mset;
    }
    sens_run r = {0};
    nb_config *c = &r.c;
    int L = 0;
    const double t0 = nb_now();
    char outp[NB_CFG_PATH_MAX + 32], pngp[NB_CFG_PATH_MAX + 32];
    nb_status st = nb_config_load(argv[optind], sets, n_sets, c);
    if (st != NB_OK) goto done;
    if (!ckpt) ckpt = c->init.checkpoint;
    if (!ckpt[0]) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: init.checkpoint: sensitivity needs a trained FP32 checkpoint (set "
                          "init.checkpoint or --checkpoint)", c->source);
        goto done;
    }
    const nb_quant_policy *qp = &c->quant;
    for (int i = 0; i < nc; i++)
        if (cands[i] < (!strcmp(qp->weights.method, "adq") ? 1 : 2)) {
            st = nb_set_error(NB_STATUS_BAD_INPUT, "--candidates: %d bits needs quant.weights.method \"adq\" (the "
                              "uniform grid takes 2..8)", cands[i]);
            goto done;
        }
    if (out) snprintf(outp, sizeof outp, "%s", out);
    else snprintf(outp, sizeof outp, "%s/sensitivity.json", c->output.dir);
    if (png) {
        snprintf(pngp, sizeof pngp, "%s", png);
    } else {
        snprintf(pngp, sizeof pngp, "%s", outp);
        char *dot = strrchr(pngp, '.'), *slash = strrchr(pngp, '/');
        if (dot && (!slash || dot > slash)) *dot = '\0';
        strncat(pngp, ".png", sizeof pngp - strlen(pngp) - 1);
    }
    nb_set_threads(c->threads > 0 ? c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    if ((st = nb_run_open_split(c, "train", &r.dtr)) != NB_OK) goto done;
    if ((st = load_batches(&r)) != NB_OK) goto done;
    nb_rng rng;
    nb_rng_seed(&rng, c->seed, 0);
    if (!(r.m = nb_config_build_model(c, r.s.C, r.s.H, nb_dataset_classes(r.dtr), &rng))) {
        st = NB_STATUS_BAD_INPUT;
        goto done;
    }
    if ((st = nb_checkpoint_load_model(ckpt, r.m, 1)) != NB_OK) goto done;
    if ((st = nb_checkpoint_load_quant(ckpt, r.m)) != NB_OK) goto done;
    nb_model *m = r.m;
    if (!(r.tape = nb_tape_new())) {
        st = NB_STATUS_OOM;
        goto done;
    }
    /* training pass with batchnorm on its running statistics: the evaluation
     * function, with gradients */
    nb_model_train(m, 1);
    m->bn_frozen = 1;
    r.s.m = m;
    r.s.tape = r.tape;
    for (int i = 0; i < m->n_modules; i++) L += m->modules[i]->type != NB_MOD_BATCHNORM2D;
    nb_segment *seg = nb_calloc((size_t)L + 1, sizeof *seg);
    nb_module **mods = nb_calloc((size_t)L + 1, sizeof *mods);
    r.omega = nb_calloc((size_t)L * nc + 1, sizeof(double));
    r.trace = nb_calloc((size_t)L + 1, sizeof(double));
    r.qbuf = nb_malloc((m->n_param_floats + 1) * sizeof(float));
    r.save = nb_malloc((m->n_param_floats + 1) * sizeof(float));
    r.labels = nb_calloc((size_t)L + 1, sizeof(char *));
    if (!seg || !mods || !r.omega || !r.trace || !r.qbuf || !r.save || !r.labels) {
        nb_free(seg);
        nb_free(mods);
        st = NB_STATUS_OOM;
        goto done;
    }
    L = 0;
    for (int i = 0; i < m->n_modules; i++) {
        nb_module *mod = m->modules[i];
        if (mod->type == NB_MOD_BATCHNORM2D) continue;
        nb_tensor *w = nb_module_weight(mod);
        mods[L] = mod;
        seg[L] = (nb_segment){(size_t)(w->data - m->param_data), w->numel};
        r.labels[L] = mod->name;
        L++;
    }
    const char *mname = c->sensitivity.metric;
    nb_log(NB_LOG_INFO, "%s: %s sensitivity of %d layers of %s from %s at %d candidate widths, %s weights, %d "
           "batches of %d", c->name, mname, L, c->model.arch, ckpt, nc,
           !strcmp(qp->weights.method, "adq") ? "codebook (adq)" : "uniform", r.s.nb, r.s.n[0]);
    nb_progress bar;
    r.s.bar = &bar;
    double base_loss = 0.0;
    if (!strcmp(mname, "hessian")) {
        r.gbuf = nb_malloc((m->n_param_floats + 1) * sizeof(float));
        r.gbuf2 = nb_malloc((m->n_param_floats + 1) * sizeof(float));
        if (!r.gbuf || !r.gbuf2) st = NB_STATUS_OOM;
        nb_progress_init(&bar, "hessian", c->sensitivity.samples, stderr);
        if (st == NB_OK)
            st = nb_hutchinson_trace(m->param_data, seg, L, grad_fn, &r.s, c->sensitivity.samples,
                                     c->sensitivity.fd_eps, c->seed, r.gbuf, r.gbuf2, r.trace, on_sample, &r.s);
        nb_progress_finish(&bar, (double)c->sensitivity.samples * sample_images(&r.s), NULL);
        for (int l = 0; st == NB_OK && l < L; l++)
            for (int k = 0; k < nc && st == NB_OK; k++) {
                const float *w = m->param_data + seg[l].off;
                st = nb_quant_weight_q(qp, w, nb_module_weight(mods[l])->shape[0], seg[l].n, cands[k], r.qbuf);
                double e = 0.0;
                for (size_t i = 0; i < seg[l].n; i++) {
                    const double d = (double)r.qbuf[i] - (double)w[i];
                    e += d * d;
                }
                r.omega[l * nc + k] = fabs(r.trace[l]) / (double)seg[l].n * e;
            }
    } else if (!strcmp(mname, "fisher")) {
        /* a batch at a time: the squared batch gradient times the squared error */
        nb_progress_init(&bar, "fisher", r.s.nb, stderr);
        const int nbatches = r.s.nb;
        r.gbuf = nb_malloc((m->n_param_floats + 1) * sizeof(float));
        float *qall = nb_malloc(((size_t)nc * m->n_param_floats + 1) * sizeof(float));
        if (!r.gbuf || !qall) st = NB_STATUS_OOM;
        for (int l = 0; l < L && st == NB_OK; l++)
            for (int k = 0; k < nc && st == NB_OK; k++)
                st = nb_quant_weight_q(qp, m->param_data + seg[l].off, nb_module_weight(mods[l])->shape[0], seg[l].n,
                                       cands[k], qall + (size_t)k * m->n_param_floats + seg[l].off);
        for (int b = 0; b < nbatches && st == NB_OK; b++) {
            sens_ctx one = r.s;
            one.nb = 1;
            one.x = &r.s.x[b];
            one.y = &r.s.y[b];
            one.n = &r.s.n[b];
            if ((st = loss_over_batches(&one, r.gbuf, NULL)) != NB_OK) break;
            for (int l = 0; l < L; l++)
                for (int k = 0; k < nc; k++) {
                    const float *q = qall + (size_t)k * m->n_param_floats + seg[l].off, *w = m->param_data + seg[l].off;
                    const float *g = r.gbuf + seg[l].off;
                    double acc = 0.0;
                    for (size_t i = 0; i < seg[l].n; i++) {
                        const double d = (double)q[i] - (double)w[i], gg = (double)g[i];
                        acc += gg * gg * d * d;
                    }
                    r.omega[l * nc + k] += acc / nbatches;
                }
            nb_progress_update(&bar, b + 1, (double)(b + 1) * r.s.n[0], NULL);
        }
        nb_progress_finish(&bar, (double)nbatches * r.s.n[0], NULL);
        nb_free(qall);
    } else {
        nb_progress_init(&bar, "loss_delta", (long)L * nc + 1, stderr);
        st = loss_over_batches(&r.s, NULL, &base_loss);
        for (int l = 0; l < L && st == NB_OK; l++) {
            float *w = m->param_data + seg[l].off;
            memcpy(r.save, w, seg[l].n * sizeof(float));
            for (int k = 0; k < nc && st == NB_OK; k++) {
                if ((st = nb_quant_weight_q(qp, r.save, nb_module_weight(mods[l])->shape[0], seg[l].n, cands[k], w)) !=
                    NB_OK)
                    break;
                double lq = 0.0;
                st = loss_over_batches(&r.s, NULL, &lq);
                r.omega[l * nc + k] = lq > base_loss ? lq - base_loss : 0.0;
                nb_progress_update(&bar, (long)l * nc + k + 2, 0.0, NULL);
            }
            memcpy(w, r.save, seg[l].n * sizeof(float));
        }
        nb_progress_finish(&bar, 0.0, NULL);
    }
    if (st != NB_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nb_last_error());
        st = nb_set_error(st, "%s: %s", mname, msg);
        nb_free(seg);
        nb_free(mods);
        goto done;
    }
    /* the table */
    cJSON *root = cJSON_CreateObject(), *cj = cJSON_CreateArray(), *layers = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "format", "nibble-sensitivity-1");
    cJSON_AddStringToObject(root, "arch", c->model.arch);
    cJSON_AddStringToObject(root, "config", c->source);
    cJSON_AddStringToObject(root, "checkpoint", ckpt);
    cJSON_AddStringToObject(root, "metric", mname);
    cJSON_AddStringToObject(root, "quantizer", !strcmp(qp->weights.method, "adq") ? "adq" : "uniform");
    cJSON_AddStringToObject(root, "granularity", qp->weights.granularity);
    for (int k = 0; k < nc; k++) cJSON_AddItemToArray(cj, cJSON_CreateNumber(cands[k]));
    cJSON_AddItemToObject(root, "candidates", cj);
    cJSON_AddNumberToObject(root, "batches", r.s.nb);
    if (!strcmp(mname, "hessian")) cJSON_AddNumberToObject(root, "samples", c->sensitivity.samples);
    if (!strcmp(mname, "loss_delta")) cJSON_AddNumberToObject(root, "fp32_loss", base_loss);
    nb_log(NB_LOG_INFO, "%-24s %-6s %9s %12s  %s", "layer", "role", "params",
           !strcmp(mname, "hessian") ? "trace" : "", "omega at each candidate width");
    for (int l = 0; l < L; l++) {
        cJSON *e = cJSON_CreateObject(), *om = cJSON_CreateArray();
        cJSON_AddStringToObject(e, "name", mods[l]->name);
        cJSON_AddNumberToObject(e, "params", (double)seg[l].n);
        cJSON_AddStringToObject(e, "role", role_name(mods[l]));
        if (!strcmp(mname, "hessian")) cJSON_AddNumberToObject(e, "trace", r.trace[l]);
        char row[256] = "", tr[32] = "";
        size_t len = 0;
        for (int k = 0; k < nc; k++) {
            cJSON_AddItemToArray(om, cJSON_CreateNumber(r.omega[l * nc + k]));
            len += (size_t)snprintf(row + len, sizeof row - len, " %d:%-10.4g", cands[k], r.omega[l * nc + k]);
        }
        cJSON_AddItemToObject(e, "omega", om);
        cJSON_AddItemToArray(layers, e);
        if (!strcmp(mname, "hessian")) snprintf(tr, sizeof tr, "%.5g", r.trace[l]);
        nb_log(NB_LOG_INFO, "%-24s %-6s %9zu %12s %s", mods[l]->name, role_name(mods[l]), seg[l].n, tr, row);
    }
    cJSON_AddItemToObject(root, "layers", layers);
    cJSON_AddNumberToObject(root, "seconds", nb_now() - t0);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    nb_free(seg);
    if (!text) {
        nb_free(mods);
        st = NB_STATUS_OOM;
        goto done;
    }
    r.json = nb_malloc(strlen(text) + 2);
    if (r.json) sprintf(r.json, "%s\n", text);
    free(text);
    if (!r.json) {
        nb_free(mods);
        st = NB_STATUS_OOM;
        goto done;
    }
    /* the heat map, coloured by log10 of the metric */
    float *heat = nb_calloc((size_t)L * nc + 1, sizeof(float));
    char colv[MAX_CANDS][16];
    const char *cols[MAX_CANDS];
    for (int k = 0; k < nc; k++) {
        snprintf(colv[k], sizeof colv[k], "%d bits", cands[k]);
        cols[k] = colv[k];
    }
    if (!heat) {
        nb_free(mods);
        st = NB_STATUS_OOM;
        goto done;
    }
    for (int i = 0; i < L * nc; i++) heat[i] = (float)r.omega[i];
    char title[256];
    snprintf(title, sizeof title, "%s: %s sensitivity per layer and weight bits", c->model.arch, mname);
    nb_heatmap_opts ho = nb_heatmap_opts_default();
    ho.log_scale = 1;
    ho.bar_label = "log10";
    const char *dir_end = strrchr(outp, '/');
    if (dir_end) {
        char dir[NB_CFG_PATH_MAX + 32];
        snprintf(dir, sizeof dir, "%.*s", (int)(dir_end - outp), outp);
        st = nb_run_mkdirs(dir);
    }
    if (st == NB_OK) st = nb_plot_heatmap(pngp, title, L, (const char *const *)r.labels, nc, cols, heat, &ho);
    nb_free(heat);
    nb_free(mods);
    if (st == NB_OK) st = nb_run_write_text(outp, r.json);
done:
    sens_free(&r);
    if (st != NB_OK) {
        fprintf(stderr, "nibble sensitivity: %s\n", nb_last_error());
        return nb_cli_exit_code(st);
    }
    printf("%s: %s sensitivity of %d layers x %d widths in %.1f s; table %s, heat map %s\n", c->name,
           c->sensitivity.metric, L, nc, nb_now() - t0, outp, pngp);
    return 0;
}
