/* The training loop of an experiment: epochs of steps (forward, loss,
 * backward, clipping, optimizer step), evaluation, metrics files and
 * checkpoints, exact resume, stop requests and the NaN guard.
 *
 * Resume is exact because everything a step depends on is either in the
 * checkpoint (parameters, buffers, optimizer state, step counters, the
 * running sums of an unfinished epoch) or a pure function of (seed, epoch,
 * batch) (the loader's order and augmentation). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "run_internal.h"

nb_train_opts nb_train_opts_default(void) { return (nb_train_opts){.progress = NULL}; }

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

/* Keep the header and the rows whose first field is <= keep_max (rows a
 * resumed run will write again), so a resumed run's files equal those of an
 * uninterrupted one. A missing file is fine. */
static nb_status csv_truncate(const char *path, long keep_max) {
    FILE *f = fopen(path, "r");
    if (!f) return NB_OK;
    size_t cap = 1 << 16, len = 0;
    char *out = nb_malloc(cap), line[1024];
    if (!out) {
        fclose(f);
        return NB_STATUS_OOM;
    }
    out[0] = '\0';
    int first = 1;
    while (fgets(line, sizeof line, f)) {
        if (!first && strtol(line, NULL, 10) > keep_max) continue;
        first = 0;
        size_t n = strlen(line);
        if (len + n + 1 > cap) {
            char *p = nb_realloc(out, cap = 2 * (len + n + 1));
            if (!p) {
                nb_free(out);
                fclose(f);
                return NB_STATUS_OOM;
            }
            out = p;
        }
        memcpy(out + len, line, n + 1);
        len += n;
    }
    fclose(f);
    nb_status st = nb_run_write_text(path, out);
    nb_free(out);
    return st;
}

static FILE *csv_open(const char *path, const char *header, nb_status *st) {
    const int fresh = !file_exists(path);
    FILE *f = fopen(path, "a");
    if (!f) {
        *st = nb_set_error(NB_STATUS_IO, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fresh) fprintf(f, "%s\n", header);
    fflush(f);
    return f;
}

typedef struct {
    const nb_config *c;
    nb_config eff;            /* the effective config (resolved classes, stem) */
    char *config_json;        /* eff as JSON */
    nb_dataset *dtr, *dte;
    nb_loader *ltr, *lte;
    nb_model *m, *teacher;
    nb_optimizer *opt;
    nb_schedule sched;
    nb_tape *tape;
    nb_rng rng;
    FILE *metrics, *steps, *out;
    char dir[NB_CFG_PATH_MAX], last[NB_CFG_PATH_MAX + 16], best[NB_CFG_PATH_MAX + 16];
    long spe;                 /* steps per epoch */
    nb_ckpt_meta meta;        /* position and running sums */
    long saved_step;          /* the step last.h5 holds */
} run;

static void run_free(run *r) {
    if (r->metrics) fclose(r->metrics);
    if (r->steps) fclose(r->steps);
    nb_tape_free(r->tape);
    nb_optimizer_free(r->opt);
    nb_model_free(r->teacher);
    nb_model_free(r->m);
    nb_loader_free(r->ltr);
    nb_loader_free(r->lte);
    nb_dataset_free(r->dtr);
    nb_dataset_free(r->dte);
    nb_free(r->config_json);
}

static nb_status save(run *r, const char *path) {
    r->meta.config_json = r->config_json;
    r->meta.rng = r->rng;
    nb_status st = nb_checkpoint_save(path, r->m, r->opt, &r->meta);
    if (st == NB_OK && path == r->last) r->saved_step = r->meta.step;
    return st;
}

static nb_status setup(run *r, const nb_train_opts *o) {
    const nb_config *c = r->c;
    nb_status st;
    if ((st = nb_run_open_split(c, "train", &r->dtr)) != NB_OK) return st;
    if ((st = nb_run_open_split(c, "test", &r->dte)) != NB_OK) return st;
    if ((st = nb_run_loader(c, r->dtr, 1, c->train.batch_size, &r->ltr)) != NB_OK) return st;
    if ((st = nb_run_loader(c, r->dte, 0, c->train.batch_size, &r->lte)) != NB_OK) return st;
    const int C = nb_dataset_channels(r->dtr), size = nb_loader_out_h(r->ltr);
    const int classes = nb_dataset_classes(r->dtr);
    if (c->model.num_classes > 0 && c->model.num_classes < classes)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: model.num_classes is %d but %s has %d classes",
                            c->source, c->model.num_classes, c->data.path, classes);
    nb_rng_seed(&r->rng, c->seed, 0);
    if (!(r->m = nb_config_build_model(c, C, size, classes, &r->rng))) return nb_last_status();
    if (nb_quant_enabled(&c->quant) && c->quant.fold_bn)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "%s: quant.fold_bn: a model with folded batchnorm cannot train (QAT keeps "
                            "batchnorm unfolded; HINT: start from the FP32 checkpoint with quant.fold_bn false)",
                            c->source[0] ? c->source : c->name);
    if ((st = nb_config_quantize_model(c, r->m)) != NB_OK) return st;
    r->eff = *c;
    r->eff.model.num_classes = r->m->opts.num_classes;
    if (!strcmp(r->eff.model.stem, "auto"))
        snprintf(r->eff.model.stem, sizeof r->eff.model.stem, "%s",
                 nb_stem_resolve(NB_STEM_AUTO, size) == NB_STEM_IMAGENET ? "imagenet" : "cifar");
    snprintf(r->dir, sizeof r->dir, "%s", o->resume_dir ? o->resume_dir : c->output.dir);
    snprintf(r->eff.output.dir, sizeof r->eff.output.dir, "%s", r->dir);
    if (!(r->config_json = nb_config_to_json(&r->eff))) return NB_STATUS_OOM;
    snprintf(r->last, sizeof r->last, "%s/last.h5", r->dir);
    snprintf(r->best, sizeof r->best, "%s/best.h5", r->dir);
    if (!(r->opt = nb_run_optimizer(c, r->m))) return nb_last_status();
    r->spe = (long)nb_loader_batches_per_epoch(r->ltr);
    if ((st = nb_run_schedule(c, r->spe, &r->sched)) != NB_OK) return st;
    if (!(r->tape = nb_tape_new())) return NB_STATUS_OOM;
    r->meta.best_top1 = -1.0;

    if (o->resume_dir) {
        if (!file_exists(r->last))
            return nb_set_error(NB_STATUS_BAD_INPUT, "--resume %s: no last.h5 in that directory", r->dir);
        if ((st = nb_checkpoint_load_model(r->last, r->m, 1)) != NB_OK) return st;
        if ((st = nb_checkpoint_load_quant(r->last, r->m)) != NB_OK) return st;
        if ((st = nb_checkpoint_load_state(r->last, r->opt, &r->meta)) != NB_OK) return st;
        nb_free((void *)r->meta.config_json);
        r->meta.config_json = NULL;
        if ((st = nb_run_check_position(r->last, &r->meta, r->spe)) != NB_OK) return st;
        if ((st = nb_run_repair_best(r->last, r->best, &r->meta)) != NB_OK) return st;
        r->rng = r->meta.rng;
        r->saved_step = r->meta.step;
    } else {
        if (file_exists(r->last))
            return nb_set_error(NB_STATUS_BAD_INPUT,
                                "%s already holds a run (last.h5): resume it with --resume %s, or "
                                "choose another directory with --set output.dir=...",
                                r->dir, r->dir);
        if (file_exists(r->best))
            return nb_set_error(NB_STATUS_BAD_INPUT,
                                "%s already holds best.h5 (of another run?) but no last.h5: move it "
                                "away, or choose another directory with --set output.dir=...",
                                r->dir);
        if (c->init.checkpoint[0] &&
            (st = nb_checkpoint_load_model(c->init.checkpoint, r->m, c->init.strict)) != NB_OK)
            return st;
        if (!c->init.checkpoint[0] && nb_quant_learned(r->m))
            nb_log(NB_LOG_WARN, "%s: learned quantizers (lsq, lsq+, pact, adq) start from a trained FP32 model in "
                   "the LSQ recipe, but init.checkpoint is empty: training from random weights (set "
                   "init.checkpoint to an FP32 checkpoint)", c->source[0] ? c->source : c->name);
        /* Quantizers start from scales calibrated on the (initial) model. */
        if (r->m->quant && (st = nb_run_calibrate(c, r->m, r->dtr, r->tape, o->progress)) != NB_OK) return st;
    }
    if (c->train.distill.teacher[0]) {
        nb_config tc;
        st = nb_config_from_checkpoint(c->train.distill.teacher, NULL, 0, &tc);
        if (st == NB_OK) st = nb_model_from_config(&tc, c->train.distill.teacher, C, size, &r->teacher);
        if (st != NB_OK) return st;
        if (r->teacher->opts.num_classes != r->m->opts.num_classes)
            return nb_set_error(NB_STATUS_BAD_INPUT, "train.distill.teacher %s has %d classes, the model %d",
                                c->train.distill.teacher, r->teacher->opts.num_classes,
                                r->m->opts.num_classes);
        nb_model_train(r->teacher, 0);
    }
    return NB_OK;
}

#define METRICS_HEADER "epoch,lr,train_loss,train_top1,test_loss,test_top1,img_s,seconds"
#define STEPS_HEADER "step,epoch,lr,loss,train_top1,img_s"

/* Run directory: config.json, and the CSV files trimmed to the resumed
 * position and opened for appending (llm.c's logger survives resume so). */
static nb_status open_run_dir(run *r) {
    nb_status st = nb_run_mkdirs(r->dir);
    char path[NB_CFG_PATH_MAX + 32];
    if (st != NB_OK) return st;
    snprintf(path, sizeof path, "%s/config.json", r->dir);
    if ((st = nb_run_write_text(path, r->config_json)) != NB_OK) return st;
    snprintf(path, sizeof path, "%s/metrics.csv", r->dir);
    if ((st = csv_truncate(path, r->meta.epoch)) != NB_OK) return st;
    if (!(r->metrics = csv_open(path, METRICS_HEADER, &st))) return st;
    snprintf(path, sizeof path, "%s/steps.csv", r->dir);
    if ((st = csv_truncate(path, r->meta.step)) != NB_OK) return st;
    if (!(r->steps = csv_open(path, STEPS_HEADER, &st))) return st;
    return NB_OK;
}

/* A non-finite value stops the run; `what` says which ("the loss is nan"). */
static nb_status numeric_stop_text(run *r, const char *what) {
    const long step = r->meta.step + 1, batch = r->meta.step_in_epoch + 1;
    const int epoch = r->meta.epoch + 1;
    if (!file_exists(r->last))
        return nb_set_error(NB_STATUS_NUMERIC,
                            "step %ld (epoch %d, batch %ld): %s; stopping. No checkpoint was "
                            "written yet. HINT: lower train.optimizer.lr, add warmup "
                            "(train.schedule.warmup_epochs) or set train.grad_clip",
                            step, epoch, batch, what);
    return nb_set_error(NB_STATUS_NUMERIC,
                        "step %ld (epoch %d, batch %ld): %s; stopping. %s keeps the last good "
                        "state (step %ld)",
                        step, epoch, batch, what, r->last, r->saved_step);
}

static nb_status numeric_stop(run *r, const char *what, double v) {
    char text[256];
    snprintf(text, sizeof text, "%s is %g", what, v);
    return numeric_stop_text(r, text);
}

/* The teacher's logits were NaN or Inf: its weights are the cause, not the
 * student's learning rate. */
static nb_status teacher_stop(run *r) {
    return nb_set_error(NB_STATUS_NUMERIC,
                        "step %ld (epoch %d, batch %ld): the logits of the distillation teacher %s "
                        "are NaN or Inf; stopping. HINT: its weights are not finite (check it with "
                        "nibble eval)",
                        r->meta.step + 1, r->meta.epoch + 1, r->meta.step_in_epoch + 1,
                        r->c->train.distill.teacher);
}

/* One optimizer step on the batch (x, y, n). */
static nb_status train_step(run *r, nb_tensor *x, const int32_t *y, int n, float lr) {
    const nb_train_config *t = &r->c->train;
    nb_tape *tape = r->tape;
    nb_model_zero_grad(r->m);
    nb_tensor *loss, *logits;
    if (r->teacher) {
        int had = nb_tape_set_grad(tape, 0);
        nb_tensor *tl = nb_model_forward(r->teacher, tape, x);
        nb_tape_set_grad(tape, had);
        if (nb_nonfinite_rows(tl)) return teacher_stop(r);
        logits = nb_model_forward(r->m, tape, x);
        loss = nb_distill_loss(tape, logits, y, tl->data, t->distill.temperature, t->distill.weight,
                               t->label_smoothing);
    } else {
        logits = nb_model_forward(r->m, tape, x);
        loss = nb_cross_entropy(tape, logits, y, t->label_smoothing);
    }
    const float lv = loss->data[0];
    if (!isfinite(lv)) return numeric_stop(r, "the loss", (double)lv);
    nb_status st = nb_backward(tape, loss);
    if (st != NB_OK) return st;
    if (t->grad_clip > 0.0f) {
        double norm = nb_optimizer_clip_grad_norm(r->opt, t->grad_clip);
        if (!isfinite(norm)) return numeric_stop(r, "the gradient norm", norm);
    }
    nb_optimizer_step(r->opt, lr);
    if (r->m->quant && r->m->quant->after_step && (st = r->m->quant->after_step(r->m->quant->owner)) != NB_OK) {
        char what[1024];
        snprintf(what, sizeof what, "%s", nb_last_error());
        return st == NB_STATUS_NUMERIC ? numeric_stop_text(r, what) : st;
    }
    long c1 = 0, c5 = 0;
    nb_topk_correct(logits, y, &c1, &c5);
    r->meta.train_loss_sum += (double)lv * n;
    r->meta.train_correct += c1;
    r->meta.train_seen += n;
    nb_tape_reset(tape);
    return NB_OK;
}

/* train_step as a protected call of the tape: out of memory in an op is a
 * message with a hint, not an abort. */
typedef struct {
    run *r;
    nb_tensor *x;
    const int32_t *y;
    int n;
    float lr;
} step_args;

static nb_status step_fn(void *user) {
    step_args *a = user;
    return train_step(a->r, a->x, a->y, a->n, a->lr);
}

static nb_status protected_step(run *r, nb_tensor *x, const int32_t *y, int n, float lr) {
    step_args a = {r, x, y, n, lr};
    nb_status st = nb_tape_protect(r->tape, step_fn, &a);
    if (st != NB_STATUS_OOM) return st;
    char msg[1024], kept[NB_CFG_PATH_MAX + 64] = "";
    snprintf(msg, sizeof msg, "%s", nb_last_error());
    if (file_exists(r->last))
        snprintf(kept, sizeof kept, "; %s keeps the last good state (step %ld)", r->last, r->saved_step);
    return nb_set_error(NB_STATUS_OOM,
                        "step %ld (epoch %d, batch %ld): %s%s. HINT: lower train.batch_size (now %d) "
                        "or the thread count (now %d), or free memory",
                        r->meta.step + 1, r->meta.epoch + 1, r->meta.step_in_epoch + 1, msg, kept,
                        r->c->train.batch_size, nb_get_threads());
}

/* The epoch's mean train loss and top-1 (%) so far, from the running sums
 * (0 before its first step). */
static double train_loss_avg(const nb_ckpt_meta *m) {
    return m->train_seen ? m->train_loss_sum / (double)m->train_seen : 0.0;
}

static double train_acc(const nb_ckpt_meta *m) {
    return m->train_seen ? 100.0 * (double)m->train_correct / (double)m->train_seen : 0.0;
}

static void fmt_test(char *buf, size_t n, const nb_eval_result *e, int have) {
    if (have)
        snprintf(buf, n, "%.6f,%.4f", e->loss, 100.0 * e->top1);
    else
        snprintf(buf, n, ",");
}

static int stop_requested(const nb_train_opts *o, long steps) {
    return (o->stop && *o->stop) || (o->stop_after_steps > 0 && steps >= o->stop_after_steps);
}

nb_status nb_train(const nb_config *c, const nb_train_opts *opts, nb_train_result *out) {
    nb_train_opts o = opts ? *opts : nb_train_opts_default();
    const double t_start = nb_now();
    run r = {.c = c, .out = o.progress ? o.progress : stderr};
    memset(out, 0, sizeof *out);
    out->best_top1 = -1.0;
    nb_set_threads(c->threads > 0 ? c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    nb_status st = setup(&r, &o);
    const int complete = st == NB_OK && r.meta.epoch >= c->train.epochs; /* a finished run resumed */
    if (st == NB_OK) nb_run_remove_stale_tmp(r.dir);
    if (st == NB_OK && !complete) st = open_run_dir(&r);
    if (st != NB_OK) goto done;
    snprintf(out->run_dir, sizeof out->run_dir, "%s", r.dir);
    const nb_train_config *t = &c->train;
    const int C = nb_dataset_channels(r.dtr), H = nb_loader_out_h(r.ltr), W = nb_loader_out_w(r.ltr);
    const int steps_every = c->output.steps_every > 0 ? c->output.steps_every : t->log_every;
    nb_log(NB_LOG_INFO, "%s: %s (%zu parameters) on %s (%zu train / %zu test), %d epochs of %ld steps, "
           "%d threads, run dir %s", c->name, c->model.arch, nb_model_param_count(r.m), c->data.path,
           nb_dataset_count(r.dtr), nb_dataset_count(r.dte), t->epochs, r.spe, nb_get_threads(), r.dir);
    if (r.m->quant) nb_quant_summary(r.m);
    if (o.resume_dir)
        nb_log(NB_LOG_INFO, "resuming at epoch %d, step %ld", r.meta.epoch + 1, r.meta.step);
    long steps_this_call = 0;
    nb_eval_result ev = {0};
    int have_ev = 0;
    while (r.meta.epoch < t->epochs) {
        const int e = r.meta.epoch;
        if ((st = nb_loader_start_epoch(r.ltr, e)) != NB_OK) goto done;
        /* The recipe's last epochs with batchnorm statistics frozen (derived
         * from the epoch, so a resumed run does the same). */
        const int frozen = t->freeze_bn_epochs > 0 && e >= t->epochs - t->freeze_bn_epochs;
        if (frozen && !r.m->bn_frozen)
            nb_log(NB_LOG_INFO, "epoch %d: batchnorm statistics frozen for the last %d epochs (train.freeze_bn_epochs)",
                   e + 1, t->epochs - e);
        r.m->bn_frozen = frozen;
        const float *xb;
        const int32_t *yb;
        int n = 0;
        for (long b = 0; b < r.meta.step_in_epoch; b++) /* resumed mid-epoch */
            if ((st = nb_loader_next(r.ltr, &xb, &yb, &n)) != NB_OK) goto done;
        char label[32], extra[128];
        snprintf(label, sizeof label, "epoch %d/%d", e + 1, t->epochs);
        nb_progress p;
        nb_progress_init(&p, label, r.spe, r.out);
        p.every = t->log_every;
        /* The bar's rate counts from its start, so not the images of the
         * steps before a mid-epoch resume (steps.csv and metrics.csv count
         * them, but over a time that includes the restored train_seconds). */
        const long seen0 = r.meta.train_seen;
        const double t_epoch = nb_now() - r.meta.train_seconds;
        float lr = 0.0f;
        for (;;) {
            if ((st = nb_loader_next(r.ltr, &xb, &yb, &n)) != NB_OK) goto done;
            if (n == 0) break;
            nb_tensor x;
            nb_tensor_wrap(&x, (float *)xb, 4, (int[]){n, C, H, W});
            lr = nb_schedule_lr(&r.sched, r.meta.step);
            if ((st = protected_step(&r, &x, yb, n, lr)) != NB_OK) goto done;
            r.meta.step++;
            r.meta.step_in_epoch++;
            steps_this_call++;
            const double el = nb_now() - t_epoch;
            const double loss_avg = train_loss_avg(&r.meta), acc = train_acc(&r.meta);
            if (r.meta.step % steps_every == 0) {
                fprintf(r.steps, "%ld,%d,%.6g,%.6f,%.4f,%.1f\n", r.meta.step, e + 1, (double)lr,
                        loss_avg, acc, (double)r.meta.train_seen / el);
                fflush(r.steps);
            }
            snprintf(extra, sizeof extra, "loss %.4f acc %.2f%% lr %.4g", loss_avg, acc, (double)lr);
            nb_progress_update(&p, r.meta.step_in_epoch, (double)(r.meta.train_seen - seen0), extra);
            if (stop_requested(&o, steps_this_call) && r.meta.step_in_epoch < r.spe) {
                r.meta.train_seconds = nb_now() - t_epoch;
                if (r.out) fputc('\n', r.out);
                st = save(&r, r.last);
                if (st == NB_OK)
                    st = nb_set_error(NB_STATUS_INTERRUPTED,
                                      "stopped at step %ld (epoch %d, batch %ld of %ld); %s written: "
                                      "continue with --resume %s",
                                      r.meta.step, e + 1, r.meta.step_in_epoch, r.spe, r.last, r.dir);
                goto done;
            }
        }
        const double train_s = nb_now() - t_epoch;
        const double loss_avg = train_loss_avg(&r.meta), acc = train_acc(&r.meta);
        const double img_s = (double)r.meta.train_seen / train_s;
        snprintf(extra, sizeof extra, "loss %.4f acc %.2f%%", loss_avg, acc);
        nb_progress_finish(&p, (double)(r.meta.train_seen - seen0), extra);
        have_ev = (e + 1) % t->eval_every == 0 || e + 1 == t->epochs;
        if (have_ev) {
            if ((st = nb_loader_start_epoch(r.lte, 0)) != NB_OK) goto done;
            if ((st = nb_evaluate(r.m, r.lte, r.tape, &ev)) != NB_OK) goto done;
        }
        const double secs = nb_now() - t_epoch;
        char test[64];
        fmt_test(test, sizeof test, &ev, have_ev);
        fprintf(r.metrics, "%d,%.6g,%.6f,%.4f,%s,%.1f,%.1f\n", e + 1, (double)lr, loss_avg, acc, test,
                img_s, secs);
        fflush(r.metrics);
        char test_log[512] = ""; /* room for any double */
        if (have_ev)
            snprintf(test_log, sizeof test_log, " | test loss %.4f top-1 %.2f%% top-5 %.2f%%", ev.loss,
                     100.0 * ev.top1, 100.0 * ev.top5);
        nb_log(NB_LOG_INFO, "epoch %d/%d: train loss %.4f top-1 %.2f%%%s | %.0f img/s, %.1f s", e + 1,
               t->epochs, loss_avg, acc, test_log, img_s, secs);
        const int improved = have_ev && ev.top1 > r.meta.best_top1;
        if (improved) r.meta.best_top1 = ev.top1;
        /* The checkpoint describes the state after this epoch. */
        r.meta.epoch = e + 1;
        r.meta.step_in_epoch = 0;
        r.meta.train_loss_sum = 0.0;
        r.meta.train_correct = r.meta.train_seen = 0;
        r.meta.train_seconds = 0.0;
        if ((st = save(&r, r.last)) != NB_OK) goto done;
        if (improved && (st = save(&r, r.best)) != NB_OK) goto done;
        if (stop_requested(&o, steps_this_call) && r.meta.epoch < t->epochs) {
            st = nb_set_error(NB_STATUS_INTERRUPTED, "stopped after epoch %d; %s written: continue with "
                              "--resume %s", r.meta.epoch, r.last, r.dir);
            goto done;
        }
    }
done:
    out->epochs_done = r.meta.epoch;
    out->steps_done = r.meta.step;
    out->last = ev;
    out->best_top1 = r.meta.best_top1;
    out->seconds = nb_now() - t_start;
    out->complete = complete;
    run_free(&r);
    return st;
}
