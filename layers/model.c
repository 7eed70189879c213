/* Models: the parameter registry, contiguous parameter/gradient blocks,
 * initialisation, module forwards (with their hooks) and the build table. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

nb_model_opts nb_model_opts_default(void) {
    return (nb_model_opts){.num_classes = 10, .in_channels = 3, .input_size = 32,
                           .shortcut = NB_SHORTCUT_A, .stem = NB_STEM_AUTO,
                           .bn_momentum = 0.1f, .bn_eps = 1e-5f, .width = 16};
}

nb_model *nb_model_begin(const char *arch, const nb_model_opts *o) {
    nb_model *m = nb_calloc(1, sizeof *m);
    if (!m) return NULL;
    snprintf(m->arch, sizeof m->arch, "%s", arch);
    m->opts = *o;
    m->pass = NB_PASS_TRAIN;
    m->first_module = m->last_module = -1;
    const char *nf = getenv("NB_NO_FUSE");
    m->fuse_quant = !(nf && !strcmp(nf, "1"));
    return m;
}

static nb_tensor *add_entry(nb_model *m, const char *prefix, const char *leaf, int ndim,
                            const int *shape, nb_entry_kind kind, nb_init init, int no_decay) {
    if (m->n_entries == m->cap_entries) {
        int cap = m->cap_entries ? 2 * m->cap_entries : 64;
        nb_entry *e = nb_realloc(m->entries, sizeof *e * (size_t)cap);
        if (!e) {
            m->build_failed = 1;
            return NULL;
        }
        m->entries = e;
        m->cap_entries = cap;
    }
    nb_entry *e = &m->entries[m->n_entries++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s.%s", prefix, leaf);
    e->t = nb_calloc(1, sizeof(nb_tensor));
    if (!e->t) {
        m->build_failed = 1;
        return NULL;
    }
    nb_tensor_wrap(e->t, NULL, ndim, shape);
    e->t->name = e->name; /* stable: entries only move before finalize */
    e->kind = kind;
    e->init = init;
    e->no_decay = no_decay;
    if (ndim >= 2) {
        size_t rf = ndim == 4 ? (size_t)shape[2] * shape[3] : 1;
        e->fan_in = (int)(shape[1] * rf);
        e->fan_out = (int)(shape[0] * rf);
    }
    return e->t;
}

/* Registers mod (0 and mod freed when memory runs out: the build failed). */
static int add_module(nb_model *m, nb_module *mod, nb_module_type type, const char *name) {
    if (!mod) {
        m->build_failed = 1;
        return 0;
    }
    mod->type = type;
    mod->owner = m;
    snprintf(mod->name, sizeof mod->name, "%s", name);
    if (m->n_modules == m->cap_modules) {
        int cap = m->cap_modules ? 2 * m->cap_modules : 32;
        nb_module **p = nb_realloc(m->modules, sizeof *p * (size_t)cap);
        if (!p) {
            m->build_failed = 1;
            nb_free(mod);
            return 0;
        }
        m->modules = p;
        m->cap_modules = cap;
    }
    m->modules[m->n_modules++] = mod;
    return 1;
}

nb_conv2d_module *nb_model_add_conv(nb_model *m, const char *name, int in_c, int out_c, int k,
                                    int stride, int pad, int bias) {
    nb_conv2d_module *c = nb_calloc(1, sizeof *c);
    if (!add_module(m, c ? &c->base : NULL, NB_MOD_CONV2D, name)) return NULL;
    c->weight = add_entry(m, name, "weight", 4, (int[]){out_c, in_c, k, k}, NB_ENTRY_PARAM,
                          NB_INIT_KAIMING_CONV, 0);
    if (bias) c->bias = add_entry(m, name, "bias", 1, (int[]){out_c}, NB_ENTRY_PARAM, NB_INIT_ZERO, 1);
    c->p = (nb_conv2d_params){.stride = stride, .pad = pad};
    return c;
}

nb_linear_module *nb_model_add_linear(nb_model *m, const char *name, int in_f, int out_f, int bias) {
    nb_linear_module *l = nb_calloc(1, sizeof *l);
    if (!add_module(m, l ? &l->base : NULL, NB_MOD_LINEAR, name)) return NULL;
    l->weight = add_entry(m, name, "weight", 2, (int[]){out_f, in_f}, NB_ENTRY_PARAM, NB_INIT_LINEAR, 0);
    if (bias) {
        l->bias = add_entry(m, name, "bias", 1, (int[]){out_f}, NB_ENTRY_PARAM, NB_INIT_LINEAR, 1);
        if (l->bias) m->entries[m->n_entries - 1].fan_in = in_f;
    }
    return l;
}

nb_bn_module *nb_model_add_bn(nb_model *m, const char *name, int c) {
    nb_bn_module *b = nb_calloc(1, sizeof *b);
    if (!add_module(m, b ? &b->base : NULL, NB_MOD_BATCHNORM2D, name)) return NULL;
    b->weight = add_entry(m, name, "weight", 1, (int[]){c}, NB_ENTRY_PARAM, NB_INIT_ONE, 1);
    b->bias = add_entry(m, name, "bias", 1, (int[]){c}, NB_ENTRY_PARAM, NB_INIT_ZERO, 1);
    b->running_mean = add_entry(m, name, "running_mean", 1, (int[]){c}, NB_ENTRY_BUFFER, NB_INIT_ZERO, 0);
    b->running_var = add_entry(m, name, "running_var", 1, (int[]){c}, NB_ENTRY_BUFFER, NB_INIT_ONE, 0);
    b->num_batches_tracked = add_entry(m, name, "num_batches_tracked", 0, NULL, NB_ENTRY_BUFFER, NB_INIT_ZERO, 0);
    b->momentum = m->opts.bn_momentum;
    b->eps = m->opts.bn_eps;
    return b;
}

void nb_model_link_bn(nb_conv2d_module *c, nb_bn_module *b, int relu) {
    if (!c || !b) return; /* a failed registration: finalize reports it */
    c->base.bn = &b->base;
    c->base.relu_after = relu;
}

static void init_entry(nb_entry *e, nb_rng *rng) {
    nb_tensor *t = e->t;
    switch (e->init) {
    case NB_INIT_KAIMING_CONV:
        nb_tensor_fill_normal(t, rng, 0.0f, sqrtf(2.0f / (float)e->fan_out));
        break;
    case NB_INIT_LINEAR: {
        float bound = 1.0f / sqrtf((float)e->fan_in);
        nb_tensor_fill_uniform(t, rng, -bound, bound);
        break;
    }
    case NB_INIT_ONE:
        nb_tensor_fill(t, 1.0f);
        break;
    case NB_INIT_ZERO:
    case NB_INIT_NONE:
    case NB_INIT_COUNT:
        nb_tensor_zero(t);
        break;
    }
}

nb_status nb_model_finalize(nb_model *m, nb_rng *rng) {
    if (m->build_failed)
        return nb_set_error(NB_STATUS_OOM, "model %s: out of memory while registering its layers "
                            "(HINT: free memory)", m->arch);
    for (int i = 0; i < m->n_modules; i++) {
        const nb_module_type ty = m->modules[i]->type;
        if (ty == NB_MOD_CONV2D && m->first_module < 0) m->first_module = i;
        if (ty == NB_MOD_LINEAR) m->last_module = i;
    }
    if (m->first_module >= 0) m->modules[m->first_module]->role = NB_ROLE_FIRST;
    if (m->last_module >= 0) m->modules[m->last_module]->role = NB_ROLE_LAST;
    size_t np = 0, nbuf = 0;
    for (int i = 0; i < m->n_entries; i++) {
        nb_entry *e = &m->entries[i];
        e->t->name = e->name; /* entries may have moved while growing */
        if (e->kind == NB_ENTRY_PARAM)
            np += e->t->numel;
        else
            nbuf += e->t->numel;
    }
    m->param_data = nb_calloc(np ? np : 1, sizeof(float));
    m->param_grad = nb_calloc(np ? np : 1, sizeof(float));
    m->buffer_data = nb_calloc(nbuf ? nbuf : 1, sizeof(float));
    if (!m->param_data || !m->param_grad || !m->buffer_data)
        return nb_set_error(NB_STATUS_OOM,
                            "model %s: out of memory allocating %zu parameters, their gradients and "
                            "%zu buffer values (%.1f MiB; HINT: a smaller model, or free memory)",
                            m->arch, np, nbuf, (double)(2 * np + nbuf) * 4.0 / 1048576.0);
    m->n_param_floats = np;
    m->n_buffer_floats = nbuf;
    size_t op = 0, ob = 0;
    for (int i = 0; i < m->n_entries; i++) {
        nb_entry *e = &m->entries[i];
        if (e->kind == NB_ENTRY_PARAM) {
            e->t->data = m->param_data + op;
            e->t->grad = m->param_grad + op;
            e->t->requires_grad = 1;
            e->t->is_param = 1;
            op += e->t->numel;
        } else {
            e->t->data = m->buffer_data + ob;
            ob += e->t->numel;
        }
        init_entry(e, rng);
    }
    return NB_OK;
}

void nb_model_free(nb_model *m) {
    if (!m) return;
    if (m->quant && m->quant->free) m->quant->free(m->quant->owner);
    if (m->net_free) m->net_free(m->net);
    for (int i = 0; i < m->n_entries; i++) nb_free(m->entries[i].t);
    for (int i = 0; i < m->n_modules; i++) nb_free(m->modules[i]);
    nb_free(m->entries);
    nb_free(m->modules);
    nb_free(m->param_data);
    nb_free(m->param_grad);
    nb_free(m->buffer_data);
    nb_free(m);
}

static nb_tensor *apply_hook(const nb_module *mod, const nb_hook *h, nb_tape *t, nb_tensor *x) {
    return h->fn ? h->fn(h->state, t, x, mod->owner->pass) : x;
}

/* The conv of an input that went through the input hook already. */
static nb_tensor *conv_forward_hooked(nb_conv2d_module *m, nb_tape *t, nb_tensor *xi) {
    nb_tensor *w = apply_hook(&m->base, &m->base.weight_hook, t, m->weight);
    nb_tensor *y = nb_conv2d(t, xi, w, m->bias, &m->p);
    m->base.macs = (double)y->shape[1] * y->shape[2] * y->shape[3] * w->shape[1] * w->shape[2] * w->shape[3];
    return y;
}

nb_tensor *nb_conv2d_module_forward(nb_conv2d_module *m, nb_tape *t, nb_tensor *x) {
    return conv_forward_hooked(m, t, apply_hook(&m->base, &m->base.input_hook, t, x));
}

nb_tensor *nb_linear_module_forward(nb_linear_module *m, nb_tape *t, nb_tensor *x) {
    nb_tensor *xi = apply_hook(&m->base, &m->base.input_hook, t, x);
    nb_tensor *w = apply_hook(&m->base, &m->base.weight_hook, t, m->weight);
    m->base.macs = (double)w->shape[0] * w->shape[1];
    return nb_linear(t, xi, w, m->bias);
}

/* The batchnorm's parameters for this forward (counting a training batch). */
static nb_bn_params bn_begin(nb_bn_module *m, int training, int relu) {
    if (training) m->num_batches_tracked->data[0] += 1.0f;
    return (nb_bn_params){.momentum = m->momentum, .eps = m->eps, .training = training, .relu = relu};
}

nb_tensor *nb_bn_module_forward(nb_bn_module *m, nb_tape *t, nb_tensor *x, int training, int relu) {
    const nb_bn_params p = bn_begin(m, training, relu);
    return nb_batchnorm2d(t, x, m->weight, m->bias, m->running_mean->data, m->running_var->data, &p);
}

nb_tensor *nb_bn_add_relu_module_forward(nb_bn_module *m, nb_tape *t, nb_tensor *x, nb_tensor *sc, int training) {
    const nb_bn_params p = bn_begin(m, training, 1);
    return nb_batchnorm2d_add_relu(t, x, m->weight, m->bias, m->running_mean->data, m->running_var->data, &p, sc);
}

nb_tensor *nb_bn_relu_conv_module_forward(nb_bn_module *bn, nb_conv2d_module *conv, nb_tape *t, nb_tensor *x,
                                          int training) {
    const nb_hook *h = &conv->base.input_hook;
    nb_lsq_act aq;
    if (!conv->base.owner->fuse_quant || !h->as_lsq || !h->as_lsq(h->state, x, conv->base.owner->pass, &aq))
        return nb_conv2d_module_forward(conv, t, nb_bn_module_forward(bn, t, x, training, 1));
    const nb_bn_params p = bn_begin(bn, training, 1);
    nb_tensor *q = nb_batchnorm2d_relu_lsq(t, x, bn->weight, bn->bias, bn->running_mean->data,
                                           bn->running_var->data, &p, &aq);
    return conv_forward_hooked(conv, t, q);
}

int nb_model_graph(const nb_model *m, nb_gnode *nodes, int cap) {
    if (!m->graph) {
        nb_set_error(NB_STATUS_BAD_INPUT, "%s: no graph description (export needs one)", m->arch);
        return -1;
    }
    return m->graph(m, nodes, cap);
}

const char *nb_gop_name(nb_gop op) {
    static const char *const names[NB_G_COUNT] = {"input", "conv",         "linear",  "relu",
                                                  "add",   "shortcut_pad", "maxpool", "gap"};
    return (unsigned)op < NB_G_COUNT ? names[op] : "?";
}

nb_tensor *nb_model_forward(nb_model *m, nb_tape *t, nb_tensor *x) {
    char s1[64];
    NB_ASSERT(x->ndim == 4 && x->shape[1] == m->opts.in_channels,
              "model %s: input %s does not have %d channels", m->arch, NB_SHAPE(x, s1), m->opts.in_channels);
    return m->forward(m, t, x);
}

void nb_model_train(nb_model *m, int training) { nb_model_set_pass(m, training ? NB_PASS_TRAIN : NB_PASS_EVAL); }

int nb_model_bn_batch_stats(const nb_model *m) { return m->pass == NB_PASS_TRAIN && !m->bn_frozen; }

void nb_model_set_pass(nb_model *m, nb_pass pass) {
    m->pass = pass;
}

/* n floats of p to zero, in one block per thread when n is large (a
 * ResNet-18's 45 MB of gradients: one core does not fill the memory bus). */
static void zero_floats(float *p, size_t n) {
    const int nt = n >= ((size_t)1 << 18) ? nb_get_threads() : 1;
#pragma omp parallel num_threads(nt)
    {
        size_t lo, hi;
        nb_thread_range(n, &lo, &hi);
        if (hi > lo) memset(p + lo, 0, sizeof(float) * (hi - lo));
    }
}

void nb_model_zero_grad(nb_model *m) {
    zero_floats(m->param_grad, m->n_param_floats);
    if (m->quant && m->quant->n_param_floats) zero_floats(m->quant->param_grad, m->quant->n_param_floats);
}

size_t nb_model_param_count(const nb_model *m) { return m->n_param_floats; }

nb_entry *nb_model_find(nb_model *m, const char *name) {
    for (int i = 0; i < m->n_entries; i++)
        if (!strcmp(m->entries[i].name, name)) return &m->entries[i];
    return NULL;
}

double nb_model_macs(nb_model *m, int h, int w) {
    nb_tape *t = nb_tape_new();
    nb_tensor *x = nb_tensor_new(4, (int[]){1, m->opts.in_channels, h, w});
    NB_ASSERT(t && x, "model macs: %s", nb_last_error());
    const nb_pass was = m->pass;
    nb_model_set_pass(m, NB_PASS_PROBE);
    nb_tape_set_grad(t, 0);
    for (int i = 0; i < m->n_modules; i++) m->modules[i]->macs = 0.0;
    nb_model_forward(m, t, x);
    nb_model_set_pass(m, was);
    double total = 0.0;
    for (int i = 0; i < m->n_modules; i++) total += m->modules[i]->macs;
    nb_tensor_free(x);
    nb_tape_free(t);
    return total;
}

void nb_model_summary(const nb_model *m) {
    nb_log(NB_LOG_INFO, "%-36s %-20s %10s", "parameter", "shape", "count");
    for (int i = 0; i < m->n_entries; i++) {
        const nb_entry *e = &m->entries[i];
        if (e->kind != NB_ENTRY_PARAM) continue;
        char s[64];
        nb_log(NB_LOG_INFO, "%-36s %-20s %10zu", e->name, nb_shape_str(e->t, s, sizeof s), e->t->numel);
    }
    nb_log(NB_LOG_INFO, "%s: %zu parameters", m->arch, m->n_param_floats);
}

nb_module *nb_model_module(nb_model *m, const char *name) {
    for (int i = 0; i < m->n_modules; i++)
        if (!strcmp(m->modules[i]->name, name)) return m->modules[i];
    return NULL;
}

nb_tensor *nb_module_weight(nb_module *mod) {
    switch (mod->type) {
    case NB_MOD_CONV2D: return ((nb_conv2d_module *)mod)->weight;
    case NB_MOD_LINEAR: return ((nb_linear_module *)mod)->weight;
    case NB_MOD_BATCHNORM2D:
    case NB_MOD_COUNT: break;
    }
    return NULL;
}

size_t nb_module_weight_numel(const nb_module *mod) {
    nb_tensor *w = nb_module_weight((nb_module *)mod);
    return w ? w->numel : 0;
}
