/* The optimizer object: parameter groups, segments over the model's flat
 * blocks, state in one contiguous block per kind, step and gradient clipping. */
#include <math.h>
#include <string.h>

#include "nb_optim.h"

#define NB_OPTIM_MAX_STATE 2

typedef struct {
    char *name;            /* owned copy */
    float lr_mult, weight_decay;
    size_t numel;
} optim_group;

typedef struct {
    int group;
    char name[96];         /* what it holds, e.g. its first parameter's name ("" if not named) */
    float *p;              /* (n) borrowed: the model's */
    const float *g;        /* (n) borrowed: the model's */
    size_t n;
    size_t offset;         /* first element in the state blocks */
} optim_segment;

struct nb_optimizer {
    nb_optim_opts o;
    optim_group *groups;   /* (n_groups) */
    int n_groups;
    optim_segment *segs;   /* (n_segs), in the order added */
    int n_segs;
    size_t numel;          /* sum of the segments' n */
    int n_state;           /* 0, 1 (SGD momentum) or 2 (AdamW) */
    float *state[NB_OPTIM_MAX_STATE]; /* (numel) each, segment order */
    long steps;
};

nb_optim_opts nb_optim_opts_default(void) {
    return (nb_optim_opts){.kind = NB_OPTIM_SGD, .momentum = 0.9f, .beta1 = 0.9f,
                           .beta2 = 0.999f, .eps = 1e-8f};
}

const char *nb_optim_kind_name(nb_optim_kind k) {
    static const char *const names[NB_OPTIM_COUNT] = {[NB_OPTIM_SGD] = "sgd", [NB_OPTIM_ADAMW] = "adamw"};
    return (int)k >= 0 && k < NB_OPTIM_COUNT ? names[k] : NULL;
}

/* Range checks written so that NaN fails them. */
static nb_status check_opts(const nb_optim_opts *o) {
    if (!nb_optim_kind_name(o->kind))
        return nb_set_error(NB_STATUS_BAD_INPUT, "optimizer: kind must be sgd or adamw, got %d", (int)o->kind);
    if (!(o->weight_decay >= 0.0f && isfinite(o->weight_decay)))
        return nb_set_error(NB_STATUS_BAD_INPUT, "optimizer: weight_decay must be >= 0, got %g",
                            (double)o->weight_decay);
    if (o->kind == NB_OPTIM_SGD) {
        if (!(o->momentum >= 0.0f && o->momentum < 1.0f))
            return nb_set_error(NB_STATUS_BAD_INPUT, "optimizer: momentum must be in [0, 1), got %g",
                                (double)o->momentum);
        if (!(o->dampening >= 0.0f && o->dampening <= 1.0f))
            return nb_set_error(NB_STATUS_BAD_INPUT, "optimizer: dampening must be in [0, 1], got %g",
                                (double)o->dampening);
        if (o->nesterov && (o->momentum == 0.0f || o->dampening != 0.0f))
            return nb_set_error(NB_STATUS_BAD_INPUT,
                                "optimizer: nesterov needs momentum > 0 and dampening 0, got momentum %g, "
                                "dampening %g",
                                (double)o->momentum, (double)o->dampening);
    } else {
        if (!(o->beta1 >= 0.0f && o->beta1 < 1.0f))
            return nb_set_error(NB_STATUS_BAD_INPUT, "optimizer: beta1 must be in [0, 1), got %g", (double)o->beta1);
        if (!(o->beta2 >= 0.0f && o->beta2 < 1.0f))
            return nb_set_error(NB_STATUS_BAD_INPUT, "optimizer: beta2 must be in [0, 1), got %g", (double)o->beta2);
        if (!(o->eps > 0.0f && isfinite(o->eps)))
            return nb_set_error(NB_STATUS_BAD_INPUT, "optimizer: eps must be > 0, got %g", (double)o->eps);
    }
    return NB_OK;
}

nb_optimizer *nb_optimizer_new(const nb_optim_opts *o) {
    NB_ASSERT(o, "optimizer: NULL options");
    if (check_opts(o) != NB_OK) return NULL;
    nb_optimizer *opt = nb_calloc(1, sizeof *opt);
    if (!opt) return NULL;
    opt->o = *o;
    opt->n_state = o->kind == NB_OPTIM_ADAMW ? 2 : o->momentum != 0.0f ? 1 : 0;
    return opt;
}

void nb_optimizer_free(nb_optimizer *opt) {
    if (!opt) return;
    for (int i = 0; i < opt->n_groups; i++) nb_free(opt->groups[i].name);
    for (int k = 0; k < NB_OPTIM_MAX_STATE; k++) nb_free(opt->state[k]);
    nb_free(opt->groups);
    nb_free(opt->segs);
    nb_free(opt);
}

static void check_group(const nb_optimizer *opt, int group) {
    NB_ASSERT(group >= 0 && group < opt->n_groups, "optimizer: group %d outside [0, %d)", group, opt->n_groups);
}

int nb_optimizer_add_group(nb_optimizer *opt, const char *name, float lr_mult, float weight_decay) {
    NB_ASSERT(opt && name, "optimizer: NULL optimizer or group name");
    char *copy = nb_strdup(name);
    optim_group *g = copy ? nb_realloc(opt->groups, sizeof *g * (size_t)(opt->n_groups + 1)) : NULL;
    if (!g) {
        nb_free(copy);
        return -1;
    }
    opt->groups = g;
    g[opt->n_groups] = (optim_group){copy, lr_mult, weight_decay, 0};
    return opt->n_groups++;
}

/* Grows a state block from n to n + add floats, new part zero; on failure
 * the old block stays. Exact sizes: growing segment by segment copies
 * O(numel x segments) floats once at setup (about 1.5 GB of memcpy for a
 * ResNet-18, well under a second), where doubling capacities would keep up
 * to twice the state in memory for the whole run. */
static nb_status grow_state(float **block, size_t n, size_t add) {
    float *b = nb_calloc(n + add, sizeof(float));
    if (!b) return NB_STATUS_OOM;
    if (n) memcpy(b, *block, sizeof(float) * n);
    nb_free(*block);
    *block = b;
    return NB_OK;
}

nb_status nb_optimizer_add_segment(nb_optimizer *opt, int group, float *p, const float *g, size_t n) {
    return nb_optimizer_add_named_segment(opt, group, "", p, g, n);
}

nb_status nb_optimizer_add_named_segment(nb_optimizer *opt, int group, const char *name, float *p,
                                         const float *g, size_t n) {
    check_group(opt, group);
    NB_ASSERT(n == 0 || (p && g), "optimizer: segment of %zu parameters without data or gradient", n);
    NB_ASSERT(opt->steps == 0, "optimizer: segments must be added before the first step (at step %ld)",
              opt->steps);
    optim_segment *s = nb_realloc(opt->segs, sizeof *s * (size_t)(opt->n_segs + 1));
    if (!s) return NB_STATUS_OOM;
    opt->segs = s;
    /* A failure part-way leaves some blocks longer than numel: harmless. */
    for (int k = 0; k < opt->n_state; k++)
        if (grow_state(&opt->state[k], opt->numel, n) != NB_OK) return NB_STATUS_OOM;
    s[opt->n_segs] = (optim_segment){.group = group, .p = p, .g = g, .n = n, .offset = opt->numel};
    snprintf(s[opt->n_segs].name, sizeof s[opt->n_segs].name, "%s", name ? name : "");
    opt->n_segs++;
    opt->numel += n;
    opt->groups[group].numel += n;
    return NB_OK;
}

void nb_optimizer_step(nb_optimizer *opt, float lr) {
    const nb_optim_opts *o = &opt->o;
    const nb_sgd_opts so = {o->momentum, o->dampening, o->nesterov};
    for (int i = 0; i < opt->n_segs; i++) {
        const optim_segment *s = &opt->segs[i];
        const optim_group *g = &opt->groups[s->group];
        const float glr = lr * g->lr_mult;
        if (o->kind == NB_OPTIM_ADAMW)
            nb_adamw_update(glr, g->weight_decay, o->beta1, o->beta2, o->eps, s->p, s->g,
                            opt->state[0] + s->offset, opt->state[1] + s->offset, s->n, opt->steps + 1);
        else
            nb_sgd_update(&so, glr, g->weight_decay, s->p, s->g,
                          opt->n_state ? opt->state[0] + s->offset : NULL, s->n, opt->steps == 0);
    }
    opt->steps++;
}

double nb_optimizer_clip_grad_norm(nb_optimizer *opt, float max_norm) {
    double ss = 0.0;
    for (int i = 0; i < opt->n_segs; i++)
        for (size_t j = 0; j < opt->segs[i].n; j++) ss += (double)opt->segs[i].g[j] * (double)opt->segs[i].g[j];
    const double norm = sqrt(ss);
    if (!isfinite(norm) || !(max_norm > 0.0f) || norm <= (double)max_norm) return norm;
    const float scale = (float)((double)max_norm / (norm + 1e-6));
    for (int i = 0; i < opt->n_segs; i++) {
        /* The segments' gradients are the model's own, writable, buffers. */
        float *g = (float *)opt->segs[i].g;
        for (size_t j = 0; j < opt->segs[i].n; j++) g[j] *= scale;
    }
    return norm;
}

size_t nb_optimizer_numel(const nb_optimizer *opt) { return opt->numel; }
int nb_optimizer_n_groups(const nb_optimizer *opt) { return opt->n_groups; }

const char *nb_optimizer_group_name(const nb_optimizer *opt, int group) {
    check_group(opt, group);
    return opt->groups[group].name;
}

size_t nb_optimizer_group_numel(const nb_optimizer *opt, int group) {
    check_group(opt, group);
    return opt->groups[group].numel;
}

void nb_optimizer_set_group(nb_optimizer *opt, int group, float lr_mult, float weight_decay) {
    check_group(opt, group);
    opt->groups[group].lr_mult = lr_mult;
    opt->groups[group].weight_decay = weight_decay;
}

int nb_optimizer_n_state(const nb_optimizer *opt) { return opt->n_state; }

const char *nb_optimizer_state_name(const nb_optimizer *opt, int k) {
    NB_ASSERT(k >= 0 && k < opt->n_state, "optimizer: state %d outside [0, %d)", k, opt->n_state);
    if (opt->o.kind == NB_OPTIM_ADAMW) return k == 0 ? "exp_avg" : "exp_avg_sq";
    return "momentum_buffer";
}

float *nb_optimizer_state(nb_optimizer *opt, int k) {
    NB_ASSERT(k >= 0 && k < opt->n_state, "optimizer: state %d outside [0, %d)", k, opt->n_state);
    return opt->state[k];
}

long nb_optimizer_steps(const nb_optimizer *opt) { return opt->steps; }

void nb_optimizer_set_steps(nb_optimizer *opt, long steps) {
    NB_ASSERT(steps >= 0, "optimizer: steps %ld < 0", steps);
    opt->steps = steps;
}

nb_optim_kind nb_optimizer_kind(const nb_optimizer *opt) { return opt->o.kind; }

char *nb_optimizer_layout(const nb_optimizer *opt) {
    size_t cap = 64, len = 0;
    for (int i = 0; i < opt->n_segs; i++) cap += strlen(opt->groups[opt->segs[i].group].name) + 96 + 32;
    char *out = nb_malloc(cap);
    if (!out) return NULL;
    out[0] = '\0';
    for (int i = 0; i < opt->n_segs; i++) {
        const optim_segment *sg = &opt->segs[i];
        len += (size_t)snprintf(out + len, cap - len, "%s %s %zu\n", opt->groups[sg->group].name,
                                sg->name[0] ? sg->name : "-", sg->n);
    }
    return out;
}
