/*
 * The config schema: one row per key, in the order nb_config_to_json writes
 * them. config.c walks a JSON tree against it (types, ranges, unknown keys)
 * and writes the tree back from it; nb_config_defaults reads the defaults
 * from it, so a key is added by adding its field and one row here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"

static const char *const optimizers[] = {"sgd", "adamw", NULL};
static const char *const schedules[] = {"constant", "step", "multistep", "cosine", "onecycle", NULL};
static const char *const shortcuts[] = {"A", "B", NULL};
static const char *const stems[] = {"auto", "imagenet", "cifar", NULL};
const char *const nb_cfg_weight_methods[] = {"none", "uniform", "binary", "ternary", "lsq", "adq", NULL};
const char *const nb_cfg_act_methods[] = {"none", "uniform", "lsq", "lsq+", "pact", "n2uq", NULL};
static const char *const lsq_grad_n[] = {"example", "batch", "none", NULL};
static const char *const adq_inits[] = {"quantile", "uniform", "kmeans", NULL};
static const char *const sens_metrics[] = {"hessian", "fisher", "loss_delta", NULL};
const char *const nb_cfg_granularities[] = {"tensor", "channel", "group", NULL};
static const char *const observers[] = {"minmax", "ema", "percentile", "mse", "kl", NULL};

#define FIELD(f) .off = offsetof(nb_config, f), .size = sizeof(((nb_config *)0)->f)
#define KEY(p, k, f) .path = p, .kind = NB_CFG_##k, FIELD(f)
#define OBJ(p) {.path = p, .kind = NB_CFG_OBJECT}
#define GE(x) .flags = NB_CFG_MIN, .min = (x)
#define GT(x) .flags = NB_CFG_MIN | NB_CFG_MIN_EXCL, .min = (x)
/* [lo, hi) and [lo, hi] */
#define IN_HALF(lo, hi) .flags = NB_CFG_MIN | NB_CFG_MAX | NB_CFG_MAX_EXCL, .min = (lo), .max = (hi)
#define IN_CLOSED(lo, hi) .flags = NB_CFG_MIN | NB_CFG_MAX, .min = (lo), .max = (hi)

const nb_cfg_key nb_cfg_keys[] = {
    {KEY("name", STRING, name), .sdef = ""}, /* "" = the file's base name */
    /* 2^53: the largest integer a JSON number (a double in cJSON) carries exactly */
    {KEY("seed", U64, seed), .flags = NB_CFG_MIN | NB_CFG_MAX, .min = 0, .max = 9007199254740992.0},
    {KEY("threads", INT, threads), GE(0), .def = 0},

    OBJ("data"),
    {KEY("data.path", STRING, data.path), .flags = NB_CFG_REQUIRED | NB_CFG_NONEMPTY, .sdef = ""},
    {KEY("data.train_count", LONG, data.train_count), GE(0), .def = 0},
    {KEY("data.test_count", LONG, data.test_count), GE(0), .def = 0},
    {KEY("data.augment", AUGMENT, data.augment), .def = 1},
    {KEY("data.augment.pad", INT, data.pad), GE(0), .def = 4},
    {KEY("data.augment.flip", BOOL, data.flip), .def = 1},
    {KEY("data.augment.rrc", BOOL, data.rrc), .def = 0},
    {KEY("data.size", INT, data.size), GE(0), .def = 0},
    {KEY("data.stream", BOOL, data.stream), .def = 0},
    {KEY("data.mem_cap_mb", LONG, data.mem_cap_mb), GE(0), .def = 0},
    {KEY("data.prefetch", INT, data.prefetch), GE(0), .def = 1},

    OBJ("model"),
    {KEY("model.arch", ARCH, model.arch), .flags = NB_CFG_REQUIRED | NB_CFG_NONEMPTY, .sdef = ""},
    {KEY("model.num_classes", INT, model.num_classes), GE(0), .def = 0},
    {KEY("model.shortcut", CHAR, model.shortcut), .names = shortcuts, .sdef = "A"},
    {KEY("model.stem", ENUM, model.stem), .names = stems, .sdef = "auto"},
    {KEY("model.width", INT, model.width), GE(1), .def = 16},
    {KEY("model.bn_momentum", FLOAT, model.bn_momentum), IN_CLOSED(0, 1), .def = 0.1},
    {KEY("model.bn_eps", FLOAT, model.bn_eps), GT(0), .def = 1e-5},

    OBJ("init"),
    {KEY("init.checkpoint", STRING, init.checkpoint), .sdef = ""},
    {KEY("init.strict", BOOL, init.strict), .def = 1},

    OBJ("train"),
    {KEY("train.epochs", INT, train.epochs), .flags = NB_CFG_MIN | NB_CFG_REQUIRED, .min = 1},
    {KEY("train.batch_size", INT, train.batch_size), GE(1), .def = 128},
    {KEY("train.label_smoothing", FLOAT, train.label_smoothing), IN_HALF(0, 1), .def = 0},
    {KEY("train.grad_clip", FLOAT, train.grad_clip), GE(0), .def = 0},
    {KEY("train.log_every", INT, train.log_every), GE(1), .def = 50},
    {KEY("train.eval_every", INT, train.eval_every), GE(1), .def = 1},
    {KEY("train.freeze_bn_epochs", INT, train.freeze_bn_epochs), GE(0), .def = 0},

    OBJ("train.optimizer"),
    {KEY("train.optimizer.name", ENUM, train.optimizer.name), .names = optimizers, .sdef = "sgd"},
    {KEY("train.optimizer.lr", FLOAT, train.optimizer.lr),
     .flags = NB_CFG_MIN | NB_CFG_MIN_EXCL | NB_CFG_REQUIRED, .min = 0},
    {KEY("train.optimizer.momentum", FLOAT, train.optimizer.momentum), IN_HALF(0, 1), .def = 0.9},
    {KEY("train.optimizer.nesterov", BOOL, train.optimizer.nesterov), .def = 0},
    {KEY("train.optimizer.dampening", FLOAT, train.optimizer.dampening), IN_HALF(0, 1), .def = 0},
    {KEY("train.optimizer.weight_decay", FLOAT, train.optimizer.weight_decay), GE(0), .def = 0},
    {KEY("train.optimizer.betas", PAIR, train.optimizer.beta1), .off2 = offsetof(nb_config, train.optimizer.beta2),
     IN_HALF(0, 1), .def = 0.9, .def2 = 0.999},
    {KEY("train.optimizer.eps", FLOAT, train.optimizer.eps), GT(0), .def = 1e-8},
    {KEY("train.optimizer.no_decay_bn_bias", BOOL, train.optimizer.no_decay_bn_bias), .def = 1},

    OBJ("train.schedule"),
    {KEY("train.schedule.name", ENUM, train.schedule.name), .names = schedules, .sdef = "constant"},
    {KEY("train.schedule.warmup_epochs", DOUBLE, train.schedule.warmup_epochs), GE(0), .def = 0},
    {KEY("train.schedule.warmup_start_factor", FLOAT, train.schedule.warmup_start_factor), IN_CLOSED(0, 1),
     .def = 0.01},
    {KEY("train.schedule.min_lr", FLOAT, train.schedule.min_lr), GE(0), .def = 0},
    {KEY("train.schedule.step_size", DOUBLE, train.schedule.step_size), GT(0), .def = 30},
    {KEY("train.schedule.gamma", FLOAT, train.schedule.gamma), GT(0), .def = 0.1},
    {KEY("train.schedule.milestones", MILESTONES, train.schedule.milestones),
     .off2 = offsetof(nb_config, train.schedule.n_milestones), GE(0)},
    {KEY("train.schedule.pct_start", FLOAT, train.schedule.pct_start),
     .flags = NB_CFG_MIN | NB_CFG_MIN_EXCL | NB_CFG_MAX | NB_CFG_MAX_EXCL, .min = 0, .max = 1, .def = 0.3},
    {KEY("train.schedule.div_factor", FLOAT, train.schedule.div_factor), GT(0), .def = 25},
    {KEY("train.schedule.final_div_factor", FLOAT, train.schedule.final_div_factor), GT(0), .def = 1e4},

    OBJ("train.distill"),
    {KEY("train.distill.teacher", STRING, train.distill.teacher), .sdef = ""},
    {KEY("train.distill.temperature", FLOAT, train.distill.temperature), GT(0), .def = 4},
    {KEY("train.distill.weight", FLOAT, train.distill.weight), IN_CLOSED(0, 1), .def = 0.5},

    OBJ("quant"),
    OBJ("quant.weights"),
    {KEY("quant.weights.method", ENUM, quant.weights.method), .names = nb_cfg_weight_methods, .sdef = "none"},
    {KEY("quant.weights.bits", INT, quant.weights.bits), IN_CLOSED(1, 8), .def = 8},
    {KEY("quant.weights.granularity", ENUM, quant.weights.granularity), .names = nb_cfg_granularities, .sdef = "channel"},
    {KEY("quant.weights.group_size", INT, quant.weights.group_size), GE(1), .def = 64},
    {KEY("quant.weights.symmetric", BOOL, quant.weights.symmetric), .def = 1},
    {KEY("quant.weights.narrow", BOOL, quant.weights.narrow), .def = 0},
    {KEY("quant.weights.observer", ENUM, quant.weights.observer), .names = observers, .sdef = "minmax"},
    {KEY("quant.weights.recompute", BOOL, quant.weights.recompute), .def = 1},
    OBJ("quant.activations"),
    {KEY("quant.activations.method", ENUM, quant.activations.method), .names = nb_cfg_act_methods, .sdef = "none"},
    {KEY("quant.activations.bits", INT, quant.activations.bits), IN_CLOSED(2, 8), .def = 8},
    {KEY("quant.activations.symmetric", BOOL, quant.activations.symmetric), .def = 1},
    {KEY("quant.activations.observer", ENUM, quant.activations.observer), .names = observers, .sdef = "minmax"},
    {KEY("quant.first_layer_bits", INT, quant.first_bits), IN_CLOSED(0, 8), .def = 8},
    {KEY("quant.last_layer_bits", INT, quant.last_bits), IN_CLOSED(0, 8), .def = 8},
    {KEY("quant.bitmap", BITMAP, bitmap), .sdef = ""}, /* "" = none */
    {KEY("quant.layers", QRULES, quant.rules), .off2 = offsetof(nb_config, quant.n_rules)},
    OBJ("quant.calibration"),
    {KEY("quant.calibration.batches", INT, quant.calib_batches), GE(1), .def = 32},
    {KEY("quant.calibration.batch_size", INT, quant.calib_batch_size), GE(1), .def = 128},
    {KEY("quant.calibration.percentile", FLOAT, quant.percentile), .flags = NB_CFG_MIN | NB_CFG_MIN_EXCL | NB_CFG_MAX,
     .min = 0, .max = 100, .def = 99.99},
    {KEY("quant.calibration.ema_momentum", FLOAT, quant.ema_momentum), IN_HALF(0, 1), .def = 0.9},
    {KEY("quant.calibration.mse_grid", INT, quant.mse_grid), GE(1), .def = 100},
    {KEY("quant.calibration.kl_bins", INT, quant.kl_bins), IN_CLOSED(16, 1 << 20), .def = 2048},
    {KEY("quant.fold_bn", BOOL, quant.fold_bn), .def = 0},
    {KEY("quant.lr_scale", FLOAT, quant.lr_scale), GT(0), .def = 1},
    OBJ("quant.lsq"),
    {KEY("quant.lsq.grad_scale", ENUM, quant.lsq_grad_n), .names = lsq_grad_n, .sdef = "example"},
    {KEY("quant.lsq.min_step", FLOAT, quant.min_step), GT(0), .def = 1e-8},
    OBJ("quant.adq"),
    {KEY("quant.adq.init", ENUM, quant.adq.init), .names = adq_inits, .sdef = "quantile"},
    {KEY("quant.adq.kmeans_iters", INT, quant.adq.kmeans_iters), GE(1), .def = 20},
    {KEY("quant.adq.ema", BOOL, quant.adq.ema), .def = 1},
    {KEY("quant.adq.ema_decay", FLOAT, quant.adq.ema_decay), IN_HALF(0, 1), .def = 0.99},
    {KEY("quant.adq.ema_period", INT, quant.adq.ema_period), GE(1), .def = 1},
    {KEY("quant.adq.ema_warmup", INT, quant.adq.ema_warmup), GE(0), .def = 0},
    {KEY("quant.adq.ste_mask", BOOL, quant.adq.ste_mask), .def = 0},
    {KEY("quant.adq.learn_scale", BOOL, quant.adq.learn_scale), .def = 0},

    OBJ("output"),
    {KEY("output.dir", STRING, output.dir), .sdef = ""}, /* "" = runs/<name> */
    {KEY("output.steps_every", INT, output.steps_every), GE(0), .def = 0}, /* 0 = log_every */
    OBJ("sensitivity"),
    {KEY("sensitivity.metric", ENUM, sensitivity.metric), .names = sens_metrics, .sdef = "hessian"},
    {KEY("sensitivity.batches", INT, sensitivity.batches), GE(1), .def = 4},
    {KEY("sensitivity.batch_size", INT, sensitivity.batch_size), GE(1), .def = 128},
    {KEY("sensitivity.samples", INT, sensitivity.samples), GE(1), .def = 32},
    {KEY("sensitivity.fd_eps", FLOAT, sensitivity.fd_eps), GT(0), .def = 1e-3},
};
const int nb_cfg_n_keys = (int)(sizeof nb_cfg_keys / sizeof nb_cfg_keys[0]);

void nb_config_defaults(nb_config *c) {
    /* Zero first: callers compare configs with memcmp, padding included. */
    memset(c, 0, sizeof *c);
    for (int i = 0; i < nb_cfg_n_keys; i++) {
        const nb_cfg_key *k = &nb_cfg_keys[i];
        char *f = (char *)c + k->off;
        switch (k->kind) {
        case NB_CFG_INT:
        case NB_CFG_BOOL:
        case NB_CFG_AUGMENT: *(int *)f = (int)k->def; break;
        case NB_CFG_LONG: *(long *)f = (long)k->def; break;
        case NB_CFG_U64: *(uint64_t *)f = (uint64_t)k->def; break;
        case NB_CFG_FLOAT: *(float *)f = (float)k->def; break;
        case NB_CFG_DOUBLE: *(double *)f = k->def; break;
        case NB_CFG_PAIR:
            *(float *)f = (float)k->def;
            *(float *)((char *)c + k->off2) = (float)k->def2;
            break;
        case NB_CFG_STRING:
        case NB_CFG_ENUM:
        case NB_CFG_ARCH: strncpy(f, k->sdef, k->size - 1); break;
        case NB_CFG_CHAR: *f = k->sdef[0]; break;
        case NB_CFG_MILESTONES: /* none: already zero */
        case NB_CFG_QRULES:
        case NB_CFG_BITMAP:
        case NB_CFG_OBJECT:
        case NB_CFG_KIND_COUNT: break;
        }
    }
}

const nb_cfg_key *nb_cfg_find(const char *path) {
    for (int i = 0; i < nb_cfg_n_keys; i++)
        if (strcmp(nb_cfg_keys[i].path, path) == 0) return &nb_cfg_keys[i];
    return NULL;
}

/* Optimal string alignment distance (Levenshtein plus adjacent swaps), so
 * "optimiser" -> "optimizer" and "rl" -> "lr" are both one edit. */
static int edit_distance(const char *a, const char *b) {
    enum { L = 64 };
    size_t n = strlen(a), m = strlen(b);
    if (n >= L || m >= L) return L;
    int d[L][L];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            int cost = a[i - 1] != b[j - 1];
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[n][m];
}

/* A candidate is close when within 2 edits and not a rewrite of the whole
 * word ("xy" is not a misspelling of "lr"). */
static void consider(const char *cand, const char *s, const char **best, int *best_d) {
    int d = edit_distance(cand, s);
    if (d <= 2 && d < (int)strlen(s) && d < *best_d) {
        *best = cand;
        *best_d = d;
    }
}

const char *nb_cfg_suggest(const char *parent, const char *key) {
    const char *best = NULL;
    int best_d = 3;
    size_t pl = strlen(parent);
    for (int i = 0; i < nb_cfg_n_keys; i++) {
        const char *p = nb_cfg_keys[i].path;
        if (pl) {
            if (strncmp(p, parent, pl) != 0 || p[pl] != '.') continue;
            p += pl + 1;
        }
        if (strchr(p, '.')) continue; /* a grandchild */
        consider(p, key, &best, &best_d);
    }
    return best;
}

const char *nb_cfg_suggest_among(const char *const *names, const char *s) {
    const char *best = NULL;
    int best_d = 3;
    for (; *names; names++) consider(*names, s, &best, &best_d);
    return best;
}

void nb_cfg_range(const nb_cfg_key *k, char *buf, size_t n) {
    char lo[NB_CFG_NUM_LEN], hi[NB_CFG_NUM_LEN];
    nb_cfg_fmt_double(lo, k->min);
    nb_cfg_fmt_double(hi, k->max);
    unsigned f = k->flags;
    if ((f & NB_CFG_MIN) && (f & NB_CFG_MAX))
        snprintf(buf, n, "in %c%s, %s%c", f & NB_CFG_MIN_EXCL ? '(' : '[', lo, hi, f & NB_CFG_MAX_EXCL ? ')' : ']');
    else if (f & NB_CFG_MIN)
        snprintf(buf, n, "%s %s", f & NB_CFG_MIN_EXCL ? ">" : ">=", lo);
    else if (f & NB_CFG_MAX)
        snprintf(buf, n, "%s %s", f & NB_CFG_MAX_EXCL ? "<" : "<=", hi);
    else
        snprintf(buf, n, "%s", "");
}

int nb_cfg_is_integer(const nb_cfg_key *k) {
    return k->kind == NB_CFG_INT || k->kind == NB_CFG_LONG || k->kind == NB_CFG_U64;
}

void nb_cfg_describe(const nb_cfg_key *k, char *buf, size_t n) {
    int integer = nb_cfg_is_integer(k);
    char range[80];
    nb_cfg_range(k, range, sizeof range);
    snprintf(buf, n, "%s%s%s", integer ? "an integer" : "a number", range[0] ? " " : "", range);
}

int nb_cfg_in_range(const nb_cfg_key *k, double v) {
    unsigned f = k->flags;
    if (f & NB_CFG_MIN) {
        if (f & NB_CFG_MIN_EXCL ? !(v > k->min) : !(v >= k->min)) return 0;
    }
    if (f & NB_CFG_MAX) {
        if (f & NB_CFG_MAX_EXCL ? !(v < k->max) : !(v <= k->max)) return 0;
    }
    return 1;
}
