/* The quantization pass: a policy (defaults, first/last layer bits,
 * per-layer rules by name or glob) resolved for every conv/linear module,
 * quantizers installed in the modules' weight and input hooks, and their
 * state (scales, zero points, ranges, ready flags) in the model's quant ext
 * so checkpoints save it under /quant/. */
#include <fnmatch.h>
#include <math.h>
#include <string.h>

#include "internal.h"

typedef struct {
    nb_model_ext ext;
    nb_quant_policy policy;
    nb_quantizer *q;
    int n;
    nb_model *m;
    nb_status calib_st;          /* first observer failure while calibrating */
    char calib_msg[512];
    int grad_n;                  /* policy.lsq_grad_n as an index of grad_n_names */
    nb_cb_init cb_init;          /* policy.adq.init */
    double *cb_scratch;          /* adq: per-row counts and sums of the largest codebook set */
} qstate;

/* quant.lsq.grad_scale: N in g = 1/sqrt(N·Qp) for activations */
enum { GRAD_N_EXAMPLE = 0, GRAD_N_BATCH, GRAD_N_NONE, GRAD_N_COUNT };
static const char *const grad_n_names[GRAD_N_COUNT] = {"example", "batch", "none"};

static const char *const method_names[NB_QM_COUNT] = {"none",     "uniform", "binary", "ternary", "lsq",
                                                      "lsq+",     "pact",    "adq",    "n2uq"};
static const char *const gran_names[NB_QG_COUNT] = {"tensor", "channel", "group"};

const char *nb_qmethod_name(nb_qmethod m) { return (unsigned)m < NB_QM_COUNT ? method_names[m] : NULL; }
const char *nb_qgran_name(nb_qgran g) { return (unsigned)g < NB_QG_COUNT ? gran_names[g] : NULL; }

int nb_qmethod_learned(nb_qmethod m) {
    return m == NB_QM_LSQ || m == NB_QM_LSQ_PLUS || m == NB_QM_PACT || m == NB_QM_N2UQ;
}

static int index_of(const char *const *names, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], s)) return i;
    return -1;
}

void nb_quant_policy_default(nb_quant_policy *p) {
    memset(p, 0, sizeof *p);
    nb_qside w = {.bits = 8, .group_size = 64, .symmetric = 1, .recompute = 1};
    strcpy(w.method, "none");
    strcpy(w.granularity, "channel");
    strcpy(w.observer, "minmax");
    nb_qside a = w;
    strcpy(a.granularity, "tensor");
    a.recompute = 0;
    p->weights = w;
    p->activations = a;
    p->first_bits = p->last_bits = 8;
    p->calib_batches = 32;
    p->calib_batch_size = 128;
    p->percentile = 99.99f;
    p->ema_momentum = 0.9f;
    p->mse_grid = 100;
    p->kl_bins = 2048;
    p->lr_scale = 1.0f;
    strcpy(p->lsq_grad_n, "example");
    p->min_step = 1e-8f;
    strcpy(p->adq.init, "quantile");
    p->adq.kmeans_iters = 20;
    p->adq.ema = 1;
    p->adq.ema_decay = 0.99f;
    p->adq.ema_period = 1;
}

int nb_quant_enabled(const nb_quant_policy *p) {
    return strcmp(p->weights.method, "none") != 0 || strcmp(p->activations.method, "none") != 0;
}

/* ------------------------------------------------------------ resolution */

typedef struct {
    nb_qmethod method;
    int bits;
    nb_qgran gran;
    int group_size;
    int symmetric, narrow, recompute;
    nb_observer_kind obs;
} side_cfg;

static nb_status side_from_policy(const nb_qside *s, const char *where, side_cfg *out) {
    int m = index_of(method_names, NB_QM_COUNT, s->method);
    int g = s->granularity[0] ? index_of(gran_names, NB_QG_COUNT, s->granularity) : NB_QG_TENSOR;
    int o = nb_observer_from_name(s->observer);
    if (m < 0) return nb_set_error(NB_STATUS_BAD_INPUT, "%s.method: unknown method \"%s\"", where, s->method);
    if (g < 0)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s.granularity: unknown granularity \"%s\"", where, s->granularity);
    if (o < 0) return nb_set_error(NB_STATUS_BAD_INPUT, "%s.observer: unknown observer \"%s\"", where, s->observer);
    *out = (side_cfg){(nb_qmethod)m, s->bits, (nb_qgran)g, s->group_size, s->symmetric, s->narrow,
                      s->recompute, (nb_observer_kind)o};
    return NB_OK;
}

/* Rules whose pattern is a layer name or matches one by glob. */
static int rule_matches(const nb_qrule *r, const char *name) {
    return !strcmp(r->pattern, name) || fnmatch(r->pattern, name, 0) == 0;
}

static nb_status check_side(const side_cfg *c, const char *layer, const char *side) {
    if (c->method == NB_QM_ADQ) {
        if (strcmp(side, "weight") != 0)
            return nb_set_error(NB_STATUS_BAD_INPUT, "quant: %s input: method \"adq\" is for weights only (activations: "
                                "\"lsq\" or \"n2uq\")", layer);
        if (c->bits < 1 || c->bits > 8)
            return nb_set_error(NB_STATUS_BAD_INPUT, "quant: %s weight: method \"adq\" needs 1..8 bits, got %d", layer,
                                c->bits);
        if (c->gran == NB_QG_GROUP)
            return nb_set_error(NB_STATUS_BAD_INPUT, "quant: %s weight: method \"adq\" has one codebook per layer "
                                "(granularity \"tensor\") or per output channel (\"channel\"), not per group", layer);
        return NB_OK;
    }
    if ((c->method == NB_QM_UNIFORM || nb_qmethod_learned(c->method)) && (c->bits < 2 || c->bits > 8))
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "quant: %s %s: method \"%s\" needs 2..8 bits, got %d (1 bit: method "
                            "\"binary\")", layer, side, method_names[c->method], c->bits);
    if ((c->method == NB_QM_LSQ_PLUS || c->method == NB_QM_PACT || c->method == NB_QM_N2UQ) &&
        strcmp(side, "weight") == 0)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "quant: %s weight: method \"%s\" is for activations only (weights: \"lsq\" or "
                            "\"uniform\")", layer, method_names[c->method]);
    if ((c->method == NB_QM_LSQ || c->method == NB_QM_PACT) && !c->symmetric)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "quant: %s %s: method \"%s\" is symmetric (symmetric: false is not supported; the "
                            "learned asymmetric quantizer is \"lsq+\")", layer, side, method_names[c->method]);
    if ((c->method == NB_QM_BINARY || c->method == NB_QM_TERNARY) && strcmp(side, "input") == 0)
        return nb_set_error(NB_STATUS_BAD_INPUT, "quant: %s input: method \"%s\" is for weights only", layer,
                            method_names[c->method]);
    if (c->gran == NB_QG_GROUP && c->group_size < 1)
        return nb_set_error(NB_STATUS_BAD_INPUT, "quant: %s %s: group_size must be >= 1", layer, side);
    return NB_OK;
}

/* A rule's choice among names: its index, -1 when the rule leaves it
 * ("" inherits), -2 with a message for an unknown name. */
static int rule_choice(const nb_qrule *r, const char *key, const char *v, const char *const *names, int n) {
    if (!v[0]) return -1;
    const int k = index_of(names, n, v);
    if (k < 0) nb_set_error(NB_STATUS_BAD_INPUT, "quant.layers.\"%s\".%s: unknown \"%s\"", r->pattern, key, v);
    return k < 0 ? -2 : k;
}

/* The settings of module mod: defaults, then first/last bits, then rules in
 * order. matched[i] is set for each rule that applies. */
static nb_status resolve(const nb_quant_policy *p, const nb_module *mod, side_cfg *w, side_cfg *a,
                         int *matched) {
    nb_status st = side_from_policy(&p->weights, "quant.weights", w);
    if (st == NB_OK) st = side_from_policy(&p->activations, "quant.activations", a);
    if (st != NB_OK) return st;
    const int fixed = mod->role == NB_ROLE_FIRST ? p->first_bits : mod->role == NB_ROLE_LAST ? p->last_bits : 0;
    if (fixed > 0) {
        /* LSQ practice: the first and last layers stay at 8 bits (binary,
         * ternary and codebook weights become uniform there; learned
         * methods stay learned). */
        if (w->method != NB_QM_NONE) {
            if (w->method == NB_QM_BINARY || w->method == NB_QM_TERNARY || w->method == NB_QM_ADQ)
                w->method = NB_QM_UNIFORM;
            w->bits = fixed;
        }
        if (a->method != NB_QM_NONE) a->bits = fixed;
        /* N2UQ is for the low-bit layers: the 8-bit first and last layers
         * (the image input, whose levels would need a sign) use LSQ */
        if (a->method == NB_QM_N2UQ) a->method = NB_QM_LSQ;
    }
    for (int i = 0; i < p->n_rules; i++) {
        const nb_qrule *r = &p->rules[i];
        if (!rule_matches(r, mod->name)) continue;
        matched[i] = 1;
        int wm, am, wg;
        if ((wm = rule_choice(r, "weight_method", r->weight_method, method_names, NB_QM_COUNT)) == -2 ||
            (am = rule_choice(r, "act_method", r->act_method, method_names, NB_QM_COUNT)) == -2 ||
            (wg = rule_choice(r, "weight_granularity", r->weight_granularity, gran_names, NB_QG_COUNT)) == -2)
            return NB_STATUS_BAD_INPUT;
        if (wm >= 0) w->method = (nb_qmethod)wm;
        if (am >= 0) a->method = (nb_qmethod)am;
        if (wg >= 0) w->gran = (nb_qgran)wg;
        if (r->weight_bits) w->bits = r->weight_bits;
        if (r->act_bits) a->bits = r->act_bits;
        if (r->group_size) w->group_size = r->group_size;
    }
    if ((st = check_side(w, mod->name, "weight")) != NB_OK) return st;
    if (a->method == NB_QM_N2UQ && !mod->input_nonneg)
        return nb_set_error(NB_STATUS_BAD_INPUT, "quant: %s input: method \"n2uq\" quantizes non-negative inputs (after "
                            "a ReLU) to unsigned levels, but this layer's input is signed", mod->name);
    return check_side(a, mod->name, "input");
}

/* ------------------------------------------------------------------ hooks */

/* Weight scales from the current weights, segment by segment. */
static void weight_params(nb_quantizer *q, const float *w) {
    const nb_fq_layout *L = &q->L;
    const size_t ng = (L->K + L->G - 1) / L->G;
    for (size_t r = 0; r < (size_t)L->rows; r++)
        for (size_t g = 0; g < ng; g++) {
            const size_t off = r * L->K + g * L->G, len = g + 1 < ng ? L->G : L->K - g * L->G;
            const size_t si = r * ng + g;
            float lo, hi;
            nb_status st = nb_observe_range(&q->obs, &q->spec, w + off, len, &lo, &hi);
            if (st != NB_OK) {
                /* Non-finite weights: keep them non-finite in the output so
                 * the NaN guard sees them, rather than inventing a scale. */
                q->scale[si] = NAN;
                q->zero_point[si] = 0.0f;
                continue;
            }
            int32_t z;
            nb_qparams_from_range(&q->spec, lo, hi, &q->scale[si], &z);
            q->zero_point[si] = (float)z;
        }
}

static qstate *owner_state(const nb_quantizer *q) { return (qstate *)q->mod->owner->quant->owner; }

/* Learned weights (LSQ): steps from the current weights, segment by segment. */
static void lsq_weight_init(nb_quantizer *q, const float *w) {
    const nb_fq_layout *L = &q->L;
    const size_t ng = (L->K + L->G - 1) / L->G;
    for (size_t r = 0; r < (size_t)L->rows; r++)
        for (size_t g = 0; g < ng; g++)
            q->step->data[r * ng + g] =
                nb_lsq_init_step(w + r * L->K + g * L->G, g + 1 < ng ? L->G : L->K - g * L->G, q->qmax);
    q->ready[0] = 1.0f;
}

/* Learned activations from one batch: LSQ's s0 [paper]; LSQ+ (s, β) from
 * the MSE-optimal asymmetric range [lo, hi] (s = (hi - lo) / qmax, β = lo,
 * the paper's MSE initialisation); PACT's α from the MSE-optimal clipping
 * level (our choice: the paper starts from a constant). Non-finite data
 * give a NaN step, which the NaN guard then reports. */
static void learned_act_init(nb_quantizer *q, const float *x, size_t n) {
    if (q->method == NB_QM_N2UQ) {
        nb_n2uq_init(q->qmax, x, n, q->t0->data, q->intervals->data, q->step->data); /* as LSQ's s0 */
        q->scale[0] = q->step->data[0];
    } else if (q->method == NB_QM_LSQ) {
        q->step->data[0] = nb_lsq_init_step(x, n, q->qmax);
    } else {
        nb_observer_opts o = nb_observer_opts_default(NB_OBS_MSE);
        o.grid = owner_state(q)->policy.mse_grid;
        float lo = 0.0f, hi = 0.0f;
        if (nb_observe_range(&o, &q->spec, x, n, &lo, &hi) != NB_OK) lo = hi = NAN;
        if (q->method == NB_QM_LSQ_PLUS) {
            const float s = (hi - lo) / (float)q->qmax;
            q->step->data[0] = s > 0.0f || s != s ? s : 1.0f;
            q->offset->data[0] = lo;
        } else {
            const float a = lo != lo || hi != hi ? NAN : fmaxf(-lo, hi);
            q->step->data[0] = a > 0.0f || a != a ? a : (float)q->qmax; /* all zeros: s = 1 */
        }
    }
    if (q->method == NB_QM_PACT) q->scale[0] = q->step->data[0] / (float)q->qmax;
    q->ready[0] = 1.0f;
}

/* ADQ: codebooks from the weights (per layer or per output channel) per
 * quant.adq.init, and EMA statistics that start at them. */
static nb_status adq_init(nb_quantizer *q, const float *w) {
    const qstate *qs = owner_state(q);
    const int nc = q->ncodes;
    double cnt[256], sum[256];
    for (int r = 0; r < q->L.rows; r++) {
        const float *wr = w + (size_t)r * q->L.K;
        float *c = q->codebook + (size_t)r * nc;
        nb_status st = nb_cb_init_codes(&q->cb, qs->cb_init, qs->policy.adq.kmeans_iters, wr, q->L.K, c);
        if (st != NB_OK) {
            for (int k = 0; k < nc; k++) c[k] = NAN; /* the NaN guard reports it when training */
            return nb_set_error(st, "%s: %s", q->name, nb_last_error());
        }
        nb_cb_stats(c, nc, wr, q->L.K, 1.0f, cnt, sum);
        nb_cb_ema_start(&q->cb, c, q->ema_count + (size_t)r * nc, q->ema_sum + (size_t)r * nc, cnt);
    }
    q->scale[0] = 1.0f;
    q->ema_step[0] = 0.0f;
    q->ready[0] = 1.0f;
    return NB_OK;
}

/* ADQ after an optimizer step: the EMA update of every codebook from the
 * new weights, every ema_period steps after ema_warmup. */
static void adq_after_step(nb_quantizer *q, const nb_adq_opts *o) {
    if (!o->ema || q->ready[0] == 0.0f) return;
    const long step = (long)(q->ema_step[0] += 1.0f);
    if (step <= o->ema_warmup || (step - o->ema_warmup) % o->ema_period != 0) return;
    const float *w = nb_module_weight(q->mod)->data;
    const int nc = q->ncodes;
    const float inv = 1.0f / q->scale[0];
    double *cnt = owner_state(q)->cb_scratch, *sum = cnt + (size_t)q->L.rows * nc;
    nb_cb_stats_rows(q->codebook, nc, q->L.rows, w, q->L.K, inv, cnt, sum);
    for (int r = 0; r < q->L.rows; r++)
        nb_cb_ema(&q->cb, q->codebook + (size_t)r * nc, q->ema_count + (size_t)r * nc, q->ema_sum + (size_t)r * nc,
                  cnt + (size_t)r * nc, sum + (size_t)r * nc, o->ema_decay, 1e-6f);
}

static nb_tensor *weight_hook(void *state, nb_tape *t, nb_tensor *w, nb_pass pass) {
    nb_quantizer *q = state;
    if (pass == NB_PASS_PROBE || pass == NB_PASS_CALIBRATE || q->method == NB_QM_NONE) return w;
    if (q->method == NB_QM_ADQ) {
        if (q->ready[0] == 0.0f) adq_init(q, w->data);
        const nb_cb_args a = {q->L.rows, q->L.K, q->ncodes, q->codebook, q->step,
                              owner_state(q)->policy.adq.ste_mask, q->grad_scale};
        return nb_codebook(t, w, &a);
    }
    if (q->method == NB_QM_BINARY || q->method == NB_QM_TERNARY) {
        q->ready[0] = 1.0f;
        return nb_binary_ternary(t, w, q->L.rows, q->method == NB_QM_TERNARY, q->scale);
    }
    if (q->method == NB_QM_LSQ) {
        if (q->ready[0] == 0.0f) lsq_weight_init(q, w->data);
        const nb_lsq_args a = {NB_LSQ_LSQ, q->L, q->step, NULL, q->qmin, q->qmax, q->grad_scale};
        return nb_lsq(t, w, &a);
    }
    if (q->recompute || q->ready[0] == 0.0f) {
        weight_params(q, w->data);
        q->ready[0] = 1.0f;
    }
    return nb_fake_quant(t, w, &q->L, q->scale, q->zero_point, q->qmin, q->qmax);
}

/* The LSQ gradient scale of an activation x: 1/sqrt(N·Qp), N per
 * quant.lsq.grad_scale ("example": the features of one example, the
 * paper's; "batch": every element; "none": g = 1). */
static float act_grad_scale(const nb_quantizer *q, const nb_tensor *x) {
    if (q->method == NB_QM_PACT) return 1.0f;
    const int mode = owner_state(q)->grad_n;
    if (mode == GRAD_N_NONE) return 1.0f;
    const double N = mode == GRAD_N_BATCH ? (double)x->numel : (double)x->numel / (double)x->shape[0];
    return (float)(1.0 / sqrt(N * (double)q->qmax));
}

/* A ready learned quantizer q applied to x. */
static nb_lsq_act act_lsq(const nb_quantizer *q, const nb_tensor *x) {
    const nb_lsq_kind kind = q->method == NB_QM_LSQ ? NB_LSQ_LSQ : q->method == NB_QM_PACT ? NB_LSQ_PACT : NB_LSQ_PLUS;
    return (nb_lsq_act){kind, q->step, q->offset, q->qmin, q->qmax, act_grad_scale(q, x)};
}

/* The input hook as a per-tensor quantizer the producing op may apply
 * (nb_hook.as_lsq): learned, ready (no first-batch init pending) and in a
 * pass that quantizes. */
static int input_as_lsq(void *state, const nb_tensor *x, nb_pass pass, nb_lsq_act *aq) {
    const nb_quantizer *q = state;
    if ((pass != NB_PASS_TRAIN && pass != NB_PASS_EVAL) || !nb_qmethod_learned(q->method) || q->method == NB_QM_N2UQ ||
        q->ready[0] == 0.0f)
        return 0;
    *aq = act_lsq(q, x);
    return 1;
}

static nb_tensor *input_hook(void *state, nb_tape *t, nb_tensor *x, nb_pass pass) {
    nb_quantizer *q = state;
    if (pass == NB_PASS_PROBE || q->method == NB_QM_NONE) return x;
    const int learned = nb_qmethod_learned(q->method);
    if (pass == NB_PASS_CALIBRATE && learned) {
        if (q->calib_seen++ == 0) learned_act_init(q, x->data, x->numel); /* [paper]: the first batch */
        return x;
    }
    if (pass == NB_PASS_CALIBRATE) {
        qstate *qs = owner_state(q);
        if (qs->calib_st != NB_OK) return x;
        if (!q->observer && !(q->observer = nb_observer_new(&q->obs))) {
            qs->calib_st = NB_STATUS_OOM;
            snprintf(qs->calib_msg, sizeof qs->calib_msg, "%s: %s", q->name, nb_last_error());
            return x;
        }
        nb_status st = nb_observer_update(q->observer, x->data, x->numel);
        if (st != NB_OK) {
            qs->calib_st = st;
            snprintf(qs->calib_msg, sizeof qs->calib_msg, "%s: %s", q->name, nb_last_error());
        }
        return x;
    }
    if (learned) {
        if (q->ready[0] == 0.0f) learned_act_init(q, x->data, x->numel); /* no calibration pass: this batch */
        if (q->method == NB_QM_N2UQ) {
            const nb_n2uq_args a = {q->qmax, q->t0, q->intervals, q->step, act_grad_scale(q, x)};
            return nb_n2uq(t, x, &a);
        }
        const nb_lsq_act d = act_lsq(q, x);
        const nb_lsq_args a = {d.kind, {1, x->numel, x->numel}, d.step, d.offset, d.qmin, d.qmax, d.grad_scale};
        return nb_lsq(t, x, &a);
    }
    NB_ASSERT(q->ready[0] != 0.0f, "quantizer %s used before calibration (run a calibration pass first)", q->name);
    const nb_fq_layout L = {1, x->numel, x->numel};
    return nb_fake_quant(t, x, &L, q->scale, q->zero_point, q->qmin, q->qmax);
}

/* ------------------------------------------------------------------ attach */

static void qstate_free(void *owner) {
    qstate *qs = owner;
    if (!qs) return;
    for (int i = 0; i < qs->n; i++) nb_observer_free(qs->q[i].observer);
    for (int i = 0; i < qs->ext.n_entries; i++) nb_free(qs->ext.entries[i].t);
    nb_free(qs->ext.entries);
    nb_free(qs->ext.buffer_data);
    nb_free(qs->ext.param_data);
    nb_free(qs->ext.param_grad);
    nb_free(qs->q);
    nb_free(qs->cb_scratch);
    if (qs->m) {
        for (int i = 0; i < qs->m->n_modules; i++) {
            nb_module *mod = qs->m->modules[i];
            mod->weight_hook = mod->input_hook = (nb_hook){0};
        }
        qs->m->quant = NULL;
    }
    nb_free(qs);
}

/* A loaded codebook: finite, each side ascending, the zero code 0, the
 * EMA counts finite and >= 0, the step count a whole number. */
static nb_status adq_check(const nb_quantizer *q) {
    const int nc = q->ncodes, z = nb_cb_zero_index(&q->cb);
    for (int r = 0; r < q->L.rows; r++) {
        const float *c = q->codebook + (size_t)r * nc, *N = q->ema_count + (size_t)r * nc, *M = q->ema_sum + (size_t)r * nc;
        for (int k = 0; k < nc; k++) {
            const char *bad = !isfinite(c[k])                     ? "is not finite"
                              : k > 0 && c[k] < c[k - 1]          ? "is below the code before it (codebooks are ascending)"
                              : k == z && c[k] != 0.0f            ? "should be the exact zero"
                              : !(N[k] >= 0.0f) || !isfinite(N[k]) || !isfinite(M[k]) ? "has invalid EMA statistics"
                                                                  : NULL;
            if (bad)
                return nb_set_error(NB_STATUS_BAD_INPUT, "/quant/%s/codebook: code %d of row %d (%g) %s", q->name, k, r,
                                    (double)c[k], bad);
        }
    }
    if (!(q->ema_step[0] >= 0.0f) || q->ema_step[0] != floorf(q->ema_step[0]))
        return nb_set_error(NB_STATUS_BAD_INPUT, "/quant/%s/ema_step = %g is not a step count", q->name,
                            (double)q->ema_step[0]);
    return NB_OK;
}

static nb_status after_load(void *owner) {
    qstate *qs = owner;
    for (int i = 0; i < qs->n; i++) {
        nb_quantizer *q = &qs->q[i];
        if ((int)q->qrange[0] != q->qmin || (int)q->qrange[1] != q->qmax)
            return nb_set_error(NB_STATUS_BAD_INPUT,
                                "/quant/%s/qrange is [%g, %g] but the config's policy gives [%d, %d] (bits "
                                "%d): the checkpoint and its config disagree",
                                q->name, (double)q->qrange[0], (double)q->qrange[1], q->qmin, q->qmax,
                                q->spec.bits);
        if (q->method == NB_QM_PACT)
            for (int k = 0; k < q->n_scales; k++) q->scale[k] = q->step->data[k] / (float)q->qmax;
        if (q->method == NB_QM_ADQ && q->ready[0] != 0.0f) {
            nb_status st = adq_check(q);
            if (st != NB_OK) return st;
        }
        if (q->method == NB_QM_N2UQ && q->ready[0] != 0.0f) {
            if (!isfinite(q->t0->data[0]))
                return nb_set_error(NB_STATUS_BAD_INPUT, "/quant/%s/threshold = %g is not finite", q->name,
                                    (double)q->t0->data[0]);
            for (size_t k = 0; k < q->intervals->numel; k++)
                if (!(q->intervals->data[k] > 0.0f) || !isfinite(q->intervals->data[k]))
                    return nb_set_error(NB_STATUS_BAD_INPUT, "/quant/%s/intervals[%zu] = %g is not a positive width",
                                        q->name, k, (double)q->intervals->data[k]);
            q->scale[0] = q->step->data[0];
        }
        for (int k = 0; k < q->n_scales && q->offset && q->ready[0] != 0.0f; k++)
            if (!isfinite(q->offset->data[k]))
                return nb_set_error(NB_STATUS_BAD_INPUT, "/quant/%s/offset[%d] = %g is not finite", q->name, k,
                                    (double)q->offset->data[k]);
        for (int k = 0; k < q->n_scales && q->ready[0] != 0.0f; k++)
            if (!(q->scale[k] > 0.0f) || !isfinite(q->scale[k]) || q->zero_point[k] != nb_fq_round(q->zero_point[k]) ||
                q->zero_point[k] < (float)q->qmin || q->zero_point[k] > (float)q->qmax)
                return nb_set_error(NB_STATUS_BAD_INPUT,
                                    "/quant/%s: scale[%d] = %g / zero_point[%d] = %g is not a valid grid (scale "
                                    "> 0 and finite, integer zero point in [%d, %d])",
                                    q->name, k, (double)q->scale[k], k, (double)q->zero_point[k], q->qmin, q->qmax);
    }
    return NB_OK;
}

/* After an optimizer step: learned parameters that became NaN or Inf stop
 * the run (NB_STATUS_NUMERIC naming the quantizer); steps are kept >=
 * quant.min_step (PACT: α >= min_step·qmax), since a step at or below 0
 * breaks the quantizer (a known LSQ failure). */
/* N2UQ: a non-finite threshold stops the run; widths are kept >= min_step
 * (the thresholds stay increasing). */
static nb_status n2uq_after_step(nb_quantizer *q, float min_step) {
    if (!isfinite(q->t0->data[0]))
        return nb_set_error(NB_STATUS_NUMERIC, "the first threshold of quantizer %s (/quant/%s/threshold) is %g", q->name,
                            q->name, (double)q->t0->data[0]);
    for (size_t k = 0; k < q->intervals->numel; k++) {
        float *a = &q->intervals->data[k];
        if (!isfinite(*a))
            return nb_set_error(NB_STATUS_NUMERIC, "the interval width of quantizer %s (/quant/%s/intervals[%zu]) is %g",
                                q->name, q->name, k, (double)*a);
        if (*a < min_step) *a = min_step;
    }
    return NB_OK;
}

static nb_status after_step(void *owner) {
    qstate *qs = owner;
    for (int i = 0; i < qs->n; i++) {
        nb_quantizer *q = &qs->q[i];
        if (q->method == NB_QM_ADQ) adq_after_step(q, &qs->policy.adq);
        if (q->method == NB_QM_N2UQ) {
            nb_status st = n2uq_after_step(q, qs->policy.min_step);
            if (st != NB_OK) return st;
        }
        if (!q->step) continue;
        const int pact = q->method == NB_QM_PACT;
        const float floor = pact ? qs->policy.min_step * (float)q->qmax : qs->policy.min_step;
        for (int k = 0; k < q->n_scales; k++) {
            float *p = &q->step->data[k];
            if (!isfinite(*p))
                return nb_set_error(NB_STATUS_NUMERIC, "the %s of quantizer %s (/quant/%s/%s[%d]) is %g",
                                    pact ? "clipping level" : "step size", q->name, q->name, pact ? "alpha" : "scale",
                                    k, (double)*p);
            if (q->offset && !isfinite(q->offset->data[k]))
                return nb_set_error(NB_STATUS_NUMERIC, "the offset of quantizer %s (/quant/%s/offset[%d]) is %g",
                                    q->name, q->name, k, (double)q->offset->data[k]);
            if (*p < floor) *p = floor;
            if (pact) q->scale[k] = *p / (float)q->qmax;
        }
    }
    return NB_OK;
}

/* Registers entry "<qname>/<leaf>" of n floats (ndim 1, or 0 for n = 1 when
 * scalar) in the ext's list; data assigned later. */
static nb_entry *add_entry(qstate *qs, const char *qname, const char *leaf, int n, int scalar, nb_entry_kind kind) {
    nb_entry *e = &qs->ext.entries[qs->ext.n_entries++];
    memset(e, 0, sizeof *e);
    const int len = snprintf(e->name, sizeof e->name, "%s/%s", qname, leaf);
    if (len < 0 || (size_t)len >= sizeof e->name) {
        nb_set_error(NB_STATUS_BAD_INPUT, "quant: state name %s/%s is too long", qname, leaf);
        return NULL;
    }
    e->t = nb_calloc(1, sizeof(nb_tensor));
    if (!e->t) return NULL;
    if (scalar)
        nb_tensor_wrap(e->t, NULL, 0, NULL);
    else
        nb_tensor_wrap(e->t, NULL, 1, (int[]){n});
    e->t->name = e->name;
    e->kind = kind;
    e->no_decay = 1;
    return e;
}

static void setup_quantizer(nb_quantizer *q, nb_module *mod, int is_weight, const side_cfg *c,
                            const nb_quant_policy *p) {
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s.%s", mod->name, is_weight ? "weight" : "input");
    q->mod = mod;
    q->is_weight = is_weight;
    q->method = c->method;
    q->gran = is_weight ? c->gran : NB_QG_TENSOR;
    q->group_size = c->group_size;
    q->recompute = c->recompute;
    q->spec = (nb_qspec){.bits = c->method == NB_QM_BINARY ? 1 : c->method == NB_QM_TERNARY ? 2 : c->bits,
                         .is_signed = is_weight ? 1 : !mod->input_nonneg,
                         .symmetric = c->method == NB_QM_LSQ_PLUS ? 0 : c->symmetric,
                         .narrow = c->narrow};
    if (c->method == NB_QM_BINARY || c->method == NB_QM_TERNARY) {
        q->qmin = -1;
        q->qmax = 1;
    } else if (c->method == NB_QM_ADQ) {
        q->cb = (nb_cb_spec){c->bits, c->symmetric};
        q->ncodes = nb_cb_ncodes(&q->cb);
        q->qmin = 0; /* code indices */
        q->qmax = q->ncodes - 1;
    } else {
        nb_qspec_range(&q->spec, &q->qmin, &q->qmax);
    }
    q->obs = nb_observer_opts_default(c->obs);
    q->obs.momentum = p->ema_momentum;
    q->obs.percentile = p->percentile;
    q->obs.grid = p->mse_grid;
    q->obs.bins = p->kl_bins;
    if (is_weight) {
        const nb_tensor *w = nb_module_weight(mod);
        const int rows = q->gran == NB_QG_TENSOR ? 1 : w->shape[0];
        const size_t K = w->numel / (size_t)rows;
        size_t G = K;
        if (q->gran == NB_QG_GROUP) G = (size_t)q->group_size < K ? (size_t)q->group_size : K;
        q->L = (nb_fq_layout){rows, K, G};
        q->n_scales = (int)nb_fq_layout_scales(&q->L);
        if (q->method == NB_QM_ADQ) {
            /* one global scale α; its gradient scale 1/sqrt(numel) [recon] */
            q->n_scales = 1;
            q->grad_scale = (float)(1.0 / sqrt((double)w->numel));
            return;
        }
        /* LSQ [paper]: g = 1/sqrt(N·Qp), N the weights sharing one step
         * (the layer's, or a channel's or group's for finer steps) */
        q->grad_scale = (float)(1.0 / sqrt((double)G * (double)(q->qmax > 0 ? q->qmax : 1)));
    } else {
        q->n_scales = 1;
    }
}

nb_status nb_quant_attach(nb_model *m, const nb_quant_policy *p) {
    if (m->quant) return nb_set_error(NB_STATUS_BAD_INPUT, "model %s is already quantized", m->arch);
    int *matched = nb_calloc((size_t)p->n_rules + 1, sizeof(int));
    side_cfg *cw = nb_calloc((size_t)m->n_modules + 1, sizeof *cw), *ca = nb_calloc((size_t)m->n_modules + 1, sizeof *ca);
    qstate *qs = nb_calloc(1, sizeof *qs);
    nb_status st = matched && cw && ca && qs ? NB_OK : NB_STATUS_OOM;
    int nq = 0;
    for (int i = 0; st == NB_OK && i < m->n_modules; i++) {
        const nb_module *mod = m->modules[i];
        if (mod->type == NB_MOD_BATCHNORM2D) continue;
        st = resolve(p, mod, &cw[i], &ca[i], matched);
        nq += 2;
    }
    for (int r = 0; st == NB_OK && r < p->n_rules; r++)
        if (!matched[r])
            st = nb_set_error(NB_STATUS_BAD_INPUT, "quant.layers.\"%s\": matches no layer of %s (layers are named like "
                              "\"layer1.0.conv1\", \"fc\"; nibble inspect lists them)",
                              p->rules[r].pattern, m->arch);
    if (st == NB_OK) {
        qs->q = nb_calloc((size_t)nq + 1, sizeof *qs->q);
        qs->ext.entries = nb_calloc((size_t)nq * 8 + 1, sizeof(nb_entry));
        if (!qs->q || !qs->ext.entries) st = NB_STATUS_OOM;
    }
    if (st != NB_OK) goto fail;
    qs->policy = *p;
    const int cbi = nb_cb_init_from_name(p->adq.init);
    if (cbi < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "quant.adq.init: unknown \"%s\" (\"quantile\", \"uniform\" or \"kmeans\")",
                          p->adq.init);
        goto fail;
    }
    qs->cb_init = (nb_cb_init)cbi;
    if ((qs->grad_n = index_of(grad_n_names, GRAD_N_COUNT, p->lsq_grad_n)) < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "quant.lsq.grad_scale: unknown \"%s\" (\"example\", \"batch\" or \"none\")",
                          p->lsq_grad_n);
        goto fail;
    }
    qs->m = m;
    qs->ext.owner = qs;
    qs->ext.free = qstate_free;
    qs->ext.after_load = after_load;
    /* Entries per quantizer: scale, zero_point, qrange, ready, then
     * "offset" (lsq+) or "alpha" (pact). Learned parameters (the scale of
     * lsq and lsq+, offset, alpha) go to the param block, the rest to the
     * buffer block. */
    int *first = nb_calloc((size_t)nq + 1, sizeof(int));
    if (!first) {
        st = NB_STATUS_OOM;
        goto fail;
    }
    size_t nbuf = 0, npar = 0;
    for (int i = 0; i < m->n_modules; i++) {
        nb_module *mod = m->modules[i];
        if (mod->type == NB_MOD_BATCHNORM2D) continue;
        for (int w = 1; w >= 0; w--) {
            nb_quantizer *q = &qs->q[qs->n];
            first[qs->n++] = qs->ext.n_entries;
            setup_quantizer(q, mod, w, w ? &cw[i] : &ca[i], p);
            const int lsq_scale = q->method == NB_QM_LSQ || q->method == NB_QM_LSQ_PLUS || q->method == NB_QM_N2UQ ||
                                  (q->method == NB_QM_ADQ && p->adq.learn_scale);
            nb_entry *e[8] = {add_entry(qs, q->name, "scale", q->n_scales, 0, lsq_scale ? NB_ENTRY_PARAM : NB_ENTRY_BUFFER),
                              add_entry(qs, q->name, "zero_point", q->n_scales, 0, NB_ENTRY_BUFFER),
                              add_entry(qs, q->name, "qrange", 2, 0, NB_ENTRY_BUFFER),
                              add_entry(qs, q->name, "ready", 1, 1, NB_ENTRY_BUFFER), NULL};
            int ne = 4;
            if (q->method == NB_QM_LSQ_PLUS) e[ne++] = add_entry(qs, q->name, "offset", q->n_scales, 0, NB_ENTRY_PARAM);
            if (q->method == NB_QM_PACT) e[ne++] = add_entry(qs, q->name, "alpha", q->n_scales, 0, NB_ENTRY_PARAM);
            if (q->method == NB_QM_N2UQ) {
                e[ne++] = add_entry(qs, q->name, "threshold", 1, 0, NB_ENTRY_PARAM);
                e[ne++] = add_entry(qs, q->name, "intervals", q->qmax - 1, 0, NB_ENTRY_PARAM);
            }
            if (q->method == NB_QM_ADQ) {
                const int ncb = q->L.rows * q->ncodes;
                e[ne++] = add_entry(qs, q->name, "codebook", ncb, 0, NB_ENTRY_BUFFER);
                e[ne++] = add_entry(qs, q->name, "ema_count", ncb, 0, NB_ENTRY_BUFFER);
                e[ne++] = add_entry(qs, q->name, "ema_sum", ncb, 0, NB_ENTRY_BUFFER);
                e[ne++] = add_entry(qs, q->name, "ema_step", 1, 1, NB_ENTRY_BUFFER);
            }
            for (int k = 0; k < ne; k++) {
                if (!e[k]) {
                    nb_free(first);
                    st = NB_STATUS_BAD_INPUT; /* or OOM: the message says which */
                    goto fail;
                }
                if (e[k]->kind == NB_ENTRY_PARAM)
                    npar += e[k]->t->numel;
                else
                    nbuf += e[k]->t->numel;
            }
        }
    }
    qs->ext.buffer_data = nb_calloc(nbuf + 1, sizeof(float));
    qs->ext.param_data = nb_calloc(npar + 1, sizeof(float));
    qs->ext.param_grad = nb_calloc(npar + 1, sizeof(float));
    if (!qs->ext.buffer_data || !qs->ext.param_data || !qs->ext.param_grad) {
        nb_free(first);
        st = NB_STATUS_OOM;
        goto fail;
    }
    qs->ext.n_buffer_floats = nbuf;
    qs->ext.n_param_floats = npar;
    size_t ob = 0, op = 0;
    for (int i = 0; i < qs->ext.n_entries; i++) {
        nb_tensor *t = qs->ext.entries[i].t;
        if (qs->ext.entries[i].kind == NB_ENTRY_PARAM) {
            t->data = qs->ext.param_data + op;
            t->grad = qs->ext.param_grad + op;
            t->requires_grad = 1;
            t->is_param = 1;
            op += t->numel;
        } else {
            t->data = qs->ext.buffer_data + ob;
            ob += t->numel;
        }
    }
    size_t cb_max = 0; /* EMA scratch: counts and sums of the largest quantizer's codebooks */
    for (int i = 0; i < qs->n; i++)
        if (qs->q[i].method == NB_QM_ADQ && (size_t)qs->q[i].L.rows * qs->q[i].ncodes > cb_max)
            cb_max = (size_t)qs->q[i].L.rows * qs->q[i].ncodes;
    if (cb_max && !(qs->cb_scratch = nb_malloc(2 * cb_max * sizeof(double)))) {
        nb_free(first);
        st = NB_STATUS_OOM;
        goto fail;
    }
    for (int i = 0; i < qs->n; i++) {
        nb_quantizer *q = &qs->q[i];
        nb_entry *e = &qs->ext.entries[first[i]];
        q->scale = e[0].t->data;
        q->zero_point = e[1].t->data;
        q->qrange = e[2].t->data;
        q->ready = e[3].t->data;
        if (q->method == NB_QM_LSQ || q->method == NB_QM_LSQ_PLUS) q->step = e[0].t;
        if (q->method == NB_QM_LSQ_PLUS) q->offset = e[4].t;
        if (q->method == NB_QM_PACT) q->step = e[4].t;
        if (q->method == NB_QM_N2UQ) {
            q->step = e[0].t;
            q->t0 = e[4].t;
            q->intervals = e[5].t;
        }
        if (q->method == NB_QM_ADQ) {
            if (p->adq.learn_scale) q->step = e[0].t;
            q->codebook = e[4].t->data;
            q->ema_count = e[5].t->data;
            q->ema_sum = e[6].t->data;
            q->ema_step = e[7].t->data;
        }
        for (int k = 0; k < q->n_scales; k++) q->scale[k] = 1.0f;
        if (q->method == NB_QM_PACT)
            for (int k = 0; k < q->n_scales; k++) q->step->data[k] = (float)q->qmax;
        q->qrange[0] = (float)q->qmin;
        q->qrange[1] = (float)q->qmax;
        nb_hook h = {q->is_weight ? weight_hook : input_hook, q, q->is_weight ? NULL : input_as_lsq};
        if (q->is_weight)
            q->mod->weight_hook = h;
        else
            q->mod->input_hook = h;
    }
    nb_free(first);
    qs->ext.after_step = after_step;
    m->quant = &qs->ext;
    nb_free(matched);
    nb_free(cw);
    nb_free(ca);
    return NB_OK;
fail:
    nb_free(matched);
    nb_free(cw);
    nb_free(ca);
    if (qs) {
        qs->m = NULL; /* no hooks were installed */
        qstate_free(qs);
    }
    return st;
}

static qstate *state_of(const nb_model *m) { return m->quant ? (qstate *)m->quant->owner : NULL; }

nb_quantizer *nb_quant_list(nb_model *m, int *n) {
    qstate *qs = state_of(m);
    *n = qs ? qs->n : 0;
    return qs ? qs->q : NULL;
}

const nb_quant_policy *nb_quant_policy_of(const nb_model *m) {
    qstate *qs = state_of(m);
    return qs ? &qs->policy : NULL;
}

nb_status nb_quant_calibrate_finish(nb_model *m) {
    qstate *qs = state_of(m);
    if (!qs) return NB_OK;
    if (qs->calib_st != NB_OK) return nb_set_error(qs->calib_st, "calibration: %s", qs->calib_msg);
    for (int i = 0; i < qs->n; i++) {
        nb_quantizer *q = &qs->q[i];
        if (q->method == NB_QM_NONE) continue;
        if (nb_qmethod_learned(q->method)) {
            const long seen = q->calib_seen;
            q->calib_seen = 0;
            if (q->is_weight) {
                lsq_weight_init(q, nb_module_weight(q->mod)->data); /* [paper]: from the FP32 weights */
            } else if (!seen) {
                return nb_set_error(NB_STATUS_BAD_INPUT,
                                    "calibration: %s saw no data (no forward pass in calibration mode)", q->name);
            }
            for (size_t k = 0; q->intervals && k < q->intervals->numel; k++)
                if (!isfinite(q->intervals->data[k]) || !isfinite(q->t0->data[0]))
                    return nb_set_error(NB_STATUS_NUMERIC, "calibration: %s: the activations are not finite", q->name);
            for (int k = 0; k < q->n_scales; k++)
                if (!isfinite(q->step->data[k]) || (q->offset && !isfinite(q->offset->data[k])))
                    return nb_set_error(NB_STATUS_NUMERIC, "calibration: %s: the %s are not finite", q->name,
                                        q->is_weight ? "weights" : "activations");
            continue;
        }
        if (q->method == NB_QM_ADQ) {
            nb_status st = adq_init(q, nb_module_weight(q->mod)->data); /* [paper]: from the FP32 weights */
            if (st != NB_OK) return nb_set_error(st, "calibration: %s", nb_last_error());
            continue;
        }
        if (q->is_weight) {
            if (q->method == NB_QM_UNIFORM) weight_params(q, nb_module_weight(q->mod)->data);
            if (q->method == NB_QM_UNIFORM && !isfinite(q->scale[0]))
                return nb_set_error(NB_STATUS_NUMERIC, "calibration: %s: the weights are not finite", q->name);
            if (q->method != NB_QM_UNIFORM) {
                const nb_tensor *w = nb_module_weight(q->mod);
                nb_binary_ternary_forward(w->data, NULL, q->L.rows, w->numel / (size_t)q->L.rows,
                                          q->method == NB_QM_TERNARY, q->scale);
            }
            q->ready[0] = 1.0f;
            continue;
        }
        if (!q->observer)
            return nb_set_error(NB_STATUS_BAD_INPUT, "calibration: %s saw no data (no forward pass in calibration mode)",
                                q->name);
        float lo, hi;
        nb_status st = nb_observer_range(q->observer, &q->spec, &lo, &hi);
        if (st != NB_OK) return nb_set_error(st, "calibration: %s: %s", q->name, nb_last_error());
        int32_t z;
        nb_qparams_from_range(&q->spec, lo, hi, &q->scale[0], &z);
        q->zero_point[0] = (float)z;
        q->ready[0] = 1.0f;
        nb_observer_free(q->observer);
        q->observer = NULL;
    }
    return NB_OK;
}

int nb_quant_needs_observers(const nb_model *m) {
    const qstate *qs = state_of(m);
    for (int i = 0; qs && i < qs->n; i++)
        if (!qs->q[i].is_weight && qs->q[i].method == NB_QM_UNIFORM) return 1;
    return 0;
}

int nb_quant_learned(const nb_model *m) {
    const qstate *qs = state_of(m);
    for (int i = 0; qs && i < qs->n; i++)
        if (nb_qmethod_learned(qs->q[i].method) || qs->q[i].method == NB_QM_ADQ) return 1;
    return 0;
}

int nb_quant_ready(const nb_model *m) {
    qstate *qs = state_of(m);
    if (!qs) return 1;
    for (int i = 0; i < qs->n; i++)
        if (qs->q[i].method != NB_QM_NONE && !qs->q[i].is_weight && qs->q[i].ready[0] == 0.0f) return 0;
    return 1;
}

/* ----------------------------------------------------------------- summary */

/* Bits a weight of quantizer q takes in storage (32 when not quantized). */
static int stored_bits(const nb_quantizer *q) {
    if (!q || q->method == NB_QM_NONE) return 32;
    return q->spec.bits;
}

static const nb_quantizer *find_q(const qstate *qs, const nb_module *mod, int is_weight) {
    for (int i = 0; qs && i < qs->n; i++)
        if (qs->q[i].mod == mod && qs->q[i].is_weight == is_weight) return &qs->q[i];
    return NULL;
}

double nb_quant_model_bytes(const nb_model *m, double *fp32) {
    const qstate *qs = state_of(m);
    double quantized = 0.0;
    size_t quantized_numel = 0;
    for (int i = 0; i < m->n_modules; i++) {
        nb_module *mod = m->modules[i];
        if (mod->type == NB_MOD_BATCHNORM2D) continue;
        const nb_quantizer *q = find_q(qs, mod, 1);
        if (!q || q->method == NB_QM_NONE) continue;
        const size_t n = nb_module_weight_numel(mod);
        /* codes at their width, a float scale each (and a zero point when asymmetric) */
        if (q->method == NB_QM_ADQ) /* indices at their width, the codebooks and α as floats */
            quantized += (double)n * stored_bits(q) / 8.0 + 4.0 * ((double)q->L.rows * q->ncodes + 1);
        else
            quantized += (double)n * stored_bits(q) / 8.0 + 4.0 * q->n_scales * (q->spec.symmetric ? 1 : 2);
        quantized_numel += n;
    }
    const double all_fp = 4.0 * (double)m->n_param_floats;
    if (fp32) *fp32 = all_fp;
    /* everything else (unquantized weights, biases, batchnorm) at FP32 */
    return quantized + all_fp - 4.0 * (double)quantized_numel;
}

/* The mean of the quantizer's scales (its one scale for per-tensor). */
static double mean_scale(const nb_quantizer *q) {
    double sum = 0.0;
    for (int k = 0; k < q->n_scales; k++) sum += (double)q->scale[k];
    return sum / q->n_scales;
}

static void describe(const nb_quantizer *q, char *buf, size_t n) {
    if (!q || q->method == NB_QM_NONE) {
        snprintf(buf, n, "fp32");
        return;
    }
    if (q->method == NB_QM_BINARY || q->method == NB_QM_TERNARY) {
        snprintf(buf, n, "%s/%s", nb_qmethod_name(q->method), nb_qgran_name(q->gran));
        return;
    }
    const char *grid = !q->is_weight ? (q->spec.symmetric ? (q->spec.is_signed ? "signed" : "unsigned") : "asym")
                                     : (q->spec.symmetric ? "sym" : "asym");
    const char *prefix = q->method == NB_QM_UNIFORM ? "" : nb_qmethod_name(q->method);
    char gran[24] = "";
    if (q->is_weight && q->gran == NB_QG_GROUP)
        snprintf(gran, sizeof gran, " group g%d", q->group_size);
    else if (q->is_weight)
        snprintf(gran, sizeof gran, " %s", nb_qgran_name(q->gran));
    snprintf(buf, n, "%s%s%d %s%s", prefix, *prefix ? " " : "", q->spec.bits, grid, gran);
}

void nb_quant_summary(const nb_model *m) {
    const qstate *qs = state_of(m);
    if (!qs) {
        nb_model_summary(m);
        return;
    }
    nb_log(NB_LOG_INFO, "%-24s %-24s %-18s %9s %10s  %s", "layer", "weights", "input", "params", "bytes",
           "scale (weights mean / input)");
    for (int i = 0; i < m->n_modules; i++) {
        nb_module *mod = m->modules[i];
        if (mod->type == NB_MOD_BATCHNORM2D) continue;
        const nb_quantizer *qw = find_q(qs, mod, 1), *qa = find_q(qs, mod, 0);
        char w[48], a[48], sc[64] = "";
        describe(qw, w, sizeof w);
        describe(qa, a, sizeof a);
        const int wq = qw && qw->method != NB_QM_NONE && qw->ready[0] != 0.0f;
        const int aq = qa && qa->method != NB_QM_NONE && qa->ready[0] != 0.0f;
        if (wq || aq)
            snprintf(sc, sizeof sc, "%-10s / %s", wq ? "" : "-", aq ? "" : "-");
        if (wq && aq)
            snprintf(sc, sizeof sc, "%-10.4g / %.4g", mean_scale(qw), (double)qa->scale[0]);
        else if (wq)
            snprintf(sc, sizeof sc, "%-10.4g / -", mean_scale(qw));
        else if (aq)
            snprintf(sc, sizeof sc, "%-10s / %.4g", "-", (double)qa->scale[0]);
        const size_t n = nb_module_weight_numel(mod);
        const double bytes = (double)n * stored_bits(qw) / 8.0;
        nb_log(NB_LOG_INFO, "%-24s %-24s %-18s %9zu %10.0f  %s", mod->name, w, a, n, bytes, sc);
    }
    for (int i = 0; i < qs->n; i++) {
        const nb_quantizer *q = &qs->q[i];
        if (q->method != NB_QM_ADQ || q->ready[0] == 0.0f) continue;
        char buf[2048];
        size_t len = 0;
        const int show = q->ncodes <= 16 ? q->ncodes : 0;
        for (int k = 0; k < show && len < sizeof buf - 32; k++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%.4g", k ? " " : "", (double)q->codebook[k]);
        if (!show)
            snprintf(buf, sizeof buf, "%d codes in [%.4g, %.4g]", q->ncodes, (double)q->codebook[0],
                     (double)q->codebook[q->ncodes - 1]);
        nb_log(NB_LOG_INFO, "codebook %s%s: %s (EMA steps %.0f%s)", q->name, q->L.rows > 1 ? " row 0" : "", buf,
               (double)q->ema_step[0], q->L.rows > 1 ? "; one codebook per output channel" : "");
    }
    double fp32 = 0.0;
    const double q = nb_quant_model_bytes(m, &fp32);
    nb_log(NB_LOG_INFO, "%s: %zu parameters, %.0f bytes quantized (weights at their bits, scales and the rest at "
           "32 bits) against %.0f bytes FP32: %.2fx smaller", m->arch, m->n_param_floats, q, fp32, fp32 / q);
}
