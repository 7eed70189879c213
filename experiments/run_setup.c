/* What a run is made of, from its config: datasets (with optional
 * prefixes), loaders, the model, the optimizer's parameter groups and the
 * schedule in steps. Shared by `nibble train` and `nibble eval`. */
#include <math.h>
#include <string.h>

#include "run_internal.h"

nb_status nb_config_from_checkpoint(const char *path, const char *const *overrides, int n,
                                    nb_config *out) {
    char *json = NULL;
    nb_status st = nb_checkpoint_read_config(path, &json, NULL, 0);
    if (st == NB_OK) st = nb_config_parse(json, path, overrides, n, out);
    nb_free(json);
    return st;
}

nb_status nb_model_from_config(const nb_config *c, const char *ckpt, int C, int size, nb_model **out) {
    nb_rng rng;
    nb_rng_seed(&rng, c->seed, 0);
    nb_model *m = nb_config_build_model(c, C, size, c->model.num_classes, &rng);
    if (!m) return nb_last_status();
    nb_status st = nb_config_quantize_model(c, m);
    if (st == NB_OK) st = nb_checkpoint_load_model(ckpt, m, 1);
    /* Always: it also refuses a quantized file for an FP32 model. */
    if (st == NB_OK) st = nb_checkpoint_load_quant(ckpt, m);
    if (st != NB_OK) {
        nb_model_free(m);
        return st;
    }
    *out = m;
    return NB_OK;
}

nb_status nb_run_open_split(const nb_config *c, const char *split, nb_dataset **out) {
    const nb_data_config *d = &c->data;
    const long want = !strcmp(split, "train") ? d->train_count : d->test_count;
    if (!strncmp(d->path, "synthetic:", 10))
        return nb_dataset_synthetic(d->path + 10, split, (size_t)want, c->seed, out);
    nb_dataset_opts o = nb_dataset_opts_default();
    o.force_stream = d->stream;
    if (d->mem_cap_mb > 0) o.mem_cap_bytes = (size_t)d->mem_cap_mb << 20;
    nb_dataset *ds;
    nb_status st = nb_dataset_open(d->path, split, &o, &ds);
    if (st != NB_OK || want <= 0 || (size_t)want >= nb_dataset_count(ds)) {
        if (st == NB_OK) *out = ds;
        return st;
    }
    /* The first `want` examples, in memory (the train split is stored
     * shuffled, so a prefix is roughly class-balanced). */
    const int C = nb_dataset_channels(ds), H = nb_dataset_height(ds), W = nb_dataset_width(ds);
    const int K = nb_dataset_classes(ds);
    uint8_t *images = nb_malloc((size_t)want * C * H * W), *labels = nb_malloc((size_t)want);
    const char **names = nb_malloc(sizeof(char *) * (size_t)K);
    st = images && labels && names ? NB_OK : NB_STATUS_OOM;
    if (st == NB_OK) st = nb_dataset_read(ds, 0, (size_t)want, images, labels);
    if (st == NB_OK) {
        for (int k = 0; k < K; k++) names[k] = nb_dataset_class_name(ds, k);
        st = nb_dataset_from_arrays(nb_dataset_name(ds), K, names, C, H, W, (size_t)want, images,
                                    labels, nb_dataset_mean(ds), nb_dataset_std(ds), out);
    }
    nb_free(images);
    nb_free(labels);
    nb_free(names);
    nb_dataset_free(ds);
    return st;
}

nb_status nb_run_loader(const nb_config *c, nb_dataset *ds, int train, int batch, nb_loader **out) {
    const nb_data_config *d = &c->data;
    nb_loader_opts o = nb_loader_opts_default();
    o.batch = batch;
    o.shuffle = train;
    o.augment = train && d->augment;
    o.pad = d->pad;
    o.flip = d->flip;
    o.rrc = d->rrc;
    o.out_h = o.out_w = d->size;
    o.prefetch = d->prefetch;
    o.seed = c->seed;
    return nb_loader_new(ds, &o, out);
}

nb_model *nb_config_build_model(const nb_config *c, int C, int size, int classes, nb_rng *rng) {
    nb_model_opts o = nb_model_opts_default();
    o.in_channels = C;
    o.input_size = size;
    o.num_classes = c->model.num_classes > 0 ? c->model.num_classes : classes;
    o.shortcut = c->model.shortcut == 'B' ? NB_SHORTCUT_B : NB_SHORTCUT_A;
    if (!nb_stem_from_name(c->model.stem, &o.stem)) o.stem = NB_STEM_AUTO; /* the schema checked the name */
    o.width = c->model.width;
    o.bn_momentum = c->model.bn_momentum;
    o.bn_eps = c->model.bn_eps;
    return nb_model_build(c->model.arch, &o, rng);
}

nb_status nb_config_quantize_model(const nb_config *c, nb_model *m) {
    if (!nb_quant_enabled(&c->quant)) return NB_OK;
    const char *src = c->source[0] ? c->source : c->name;
    /* A bitmap layer that m lacks would reach attach's "matches no layer"
     * as a bare rule; say which file it came from. */
    for (int r = 0; r < c->bitmap.n_rules; r++) {
        const char *name = c->quant.rules[r].pattern;
        int found = 0;
        for (int i = 0; i < m->n_modules && !found; i++)
            found = m->modules[i]->type != NB_MOD_BATCHNORM2D && !strcmp(m->modules[i]->name, name);
        if (!found)
            return nb_set_error(NB_STATUS_BAD_INPUT, "%s: quant.bitmap: %s: layer \"%s\" is not a conv or linear "
                                "layer of %s (a bitmap made for another model? nibble inspect lists the layers)",
                                src, c->bitmap.path, name, m->arch);
    }
    if (c->quant.fold_bn) nb_quant_mark_folded(m);
    nb_status st = nb_quant_attach(m, &c->quant);
    if (st != NB_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nb_last_error());
        return nb_set_error(st, "%s: %s", src, msg);
    }
    return NB_OK;
}

nb_status nb_run_calibrate(const nb_config *c, nb_model *m, nb_dataset *train, nb_tape *tape, FILE *progress) {
    if (!m->quant) return NB_OK;
    const nb_quant_policy *p = &c->quant;
    nb_loader_opts o = nb_loader_opts_default();
    o.batch = p->calib_batch_size;
    o.shuffle = 1; /* a sample of the classes, not the first few of a sorted file */
    o.augment = 0;
    o.out_h = o.out_w = c->data.size;
    o.seed = c->seed;
    nb_loader *l = NULL;
    nb_status st = nb_loader_new(train, &o, &l);
    if (st == NB_OK) st = nb_loader_start_epoch(l, 0);
    if (st != NB_OK) {
        nb_loader_free(l);
        return st;
    }
    /* Learned quantizers start from one batch [LSQ paper]; observers see
     * quant.calibration.batches. */
    const long want = nb_quant_needs_observers(m) ? p->calib_batches : 1;
    const long total = (long)nb_loader_batches_per_epoch(l) < want ? (long)nb_loader_batches_per_epoch(l) : want;
    const int C = nb_dataset_channels(train), H = nb_loader_out_h(l), W = nb_loader_out_w(l);
    const nb_pass was = m->pass;
    const int had = nb_tape_set_grad(tape, 0);
    nb_model_set_pass(m, NB_PASS_CALIBRATE);
    nb_progress bar;
    nb_progress_init(&bar, "calibration", total, progress ? progress : stderr);
    bar.every = 8;
    long seen = 0;
    for (long b = 0; b < total && st == NB_OK; b++) {
        const float *xb;
        const int32_t *yb;
        int n = 0;
        if ((st = nb_loader_next(l, &xb, &yb, &n)) != NB_OK || n == 0) break;
        nb_tensor x;
        nb_tensor_wrap(&x, (float *)xb, 4, (int[]){n, C, H, W});
        nb_model_forward(m, tape, &x);
        nb_tape_reset(tape);
        seen += n;
        nb_progress_update(&bar, b + 1, (double)seen, NULL);
    }
    nb_progress_finish(&bar, (double)seen, NULL);
    nb_model_set_pass(m, was);
    nb_tape_set_grad(tape, had);
    nb_loader_free(l);
    if (st == NB_OK) st = nb_quant_calibrate_finish(m);
    return st;
}

nb_optimizer *nb_run_optimizer(const nb_config *c, nb_model *m) {
    const nb_optimizer_config *oc = &c->train.optimizer;
    nb_optim_opts o = nb_optim_opts_default();
    o.kind = !strcmp(oc->name, "adamw") ? NB_OPTIM_ADAMW : NB_OPTIM_SGD;
    o.momentum = oc->momentum;
    o.dampening = oc->dampening;
    o.nesterov = oc->nesterov;
    o.beta1 = oc->beta1;
    o.beta2 = oc->beta2;
    o.eps = oc->eps;
    o.weight_decay = oc->weight_decay;
    nb_optimizer *opt = nb_optimizer_new(&o);
    if (!opt) return NULL;
    const int g_decay = nb_optimizer_add_group(opt, "decay", 1.0f, oc->weight_decay);
    const int g_plain = oc->no_decay_bn_bias ? nb_optimizer_add_group(opt, "no_decay", 1.0f, 0.0f) : g_decay;
    if (g_decay < 0 || g_plain < 0) goto fail;
    /* Consecutive parameters of one group are one segment: the model's
     * block holds them back to back in registration order. */
    float *start = NULL;
    const float *gstart = NULL;
    const char *first = NULL;
    size_t len = 0;
    int group = -1;
    for (int i = 0; i <= m->n_entries; i++) {
        const nb_entry *e = i < m->n_entries ? &m->entries[i] : NULL;
        if (e && e->kind != NB_ENTRY_PARAM) continue;
        const int g = e ? (e->no_decay ? g_plain : g_decay) : -1;
        if (len && (g != group || e->t->data != start + len)) {
            if (nb_optimizer_add_named_segment(opt, group, first, start, gstart, len) != NB_OK) goto fail;
            len = 0;
        }
        if (!e) break;
        if (!len) {
            start = e->t->data;
            gstart = e->t->grad;
            first = e->name;
            group = g;
        }
        len += e->t->numel;
    }
    /* Trained quantizer parameters (step sizes): their own group, no decay. */
    const nb_model_ext *q = m->quant;
    if (q && q->n_param_floats) {
        const int g_quant = nb_optimizer_add_group(opt, "quant", c->quant.lr_scale, 0.0f);
        if (g_quant < 0) goto fail;
        for (int i = 0; i < q->n_entries; i++) {
            const nb_entry *e = &q->entries[i];
            if (e->kind != NB_ENTRY_PARAM) continue;
            if (nb_optimizer_add_named_segment(opt, g_quant, e->name, e->t->data, e->t->grad, e->t->numel) != NB_OK)
                goto fail;
        }
    }
    return opt;
fail:
    nb_optimizer_free(opt);
    return NULL;
}

static long epochs_to_steps(double epochs, long spe) { return (long)llround(epochs * (double)spe); }

nb_status nb_run_schedule(const nb_config *c, long steps_per_epoch, nb_schedule *s) {
    const nb_schedule_config *sc = &c->train.schedule;
    *s = nb_schedule_default();
    for (int k = 0; k < NB_SCHED_COUNT; k++)
        if (!strcmp(sc->name, nb_schedule_kind_name((nb_schedule_kind)k))) s->kind = (nb_schedule_kind)k;
    s->lr = c->train.optimizer.lr;
    s->total_steps = (long)c->train.epochs * steps_per_epoch;
    s->warmup_steps = epochs_to_steps(sc->warmup_epochs, steps_per_epoch);
    s->warmup_start_factor = sc->warmup_start_factor;
    s->min_lr = sc->min_lr;
    s->gamma = sc->gamma;
    s->step_size = epochs_to_steps(sc->step_size, steps_per_epoch);
    if (s->step_size < 1) s->step_size = 1;
    s->n_milestones = sc->n_milestones;
    for (int i = 0; i < sc->n_milestones; i++) s->milestones[i] = epochs_to_steps(sc->milestones[i], steps_per_epoch);
    s->pct_start = sc->pct_start;
    s->div_factor = sc->div_factor;
    s->final_div_factor = sc->final_div_factor;
    nb_status st = nb_schedule_check(s);
    if (st != NB_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", nb_last_error());
        return nb_set_error(st, "%s: train.schedule: %s", c->source[0] ? c->source : c->name, msg);
    }
    return NB_OK;
}
