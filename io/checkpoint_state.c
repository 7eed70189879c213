/* Reading the optimizer state and the run's progress from a checkpoint,
 * the stored config, and the listing for `nibble inspect`. */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "checkpoint_internal.h"

static int optim_has(void *user, const char *name) {
    const nb_optimizer *opt = user;
    for (int k = 0; k < nb_optimizer_n_state(opt); k++)
        if (strcmp(nb_optimizer_state_name(opt, k), name) == 0) return 1;
    return 0;
}

/* /optim/ into stage (n_state * numel floats) and *steps. */
static nb_status read_optim(const char *path, hid_t f, nb_optimizer *opt, float *stage,
                            long *steps) {
    char *kind = NULL;
    const char *want = nb_optim_kind_name(nb_optimizer_kind(opt));
    int64_t s = 0;
    hid_t g = H5I_INVALID_HID;
    nb_status st = NB_OK;
    if (H5Lexists(f, "optim", H5P_DEFAULT) <= 0 || (g = H5Gopen2(f, "optim", H5P_DEFAULT)) < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: no /optim/ group (saved without optimizer state; HINT: start the "
                          "optimizer afresh)",
                          path);
        goto cleanup;
    }
    st = nb_ckpt_need_attr(path, g, "/optim", "kind");
    if (st == NB_OK) st = nb_h5_attr_string(path, g, "kind", &kind);
    if (st == NB_OK && strcmp(kind, want ? want : "") != 0)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: /optim/ holds %s state, the optimizer is %s",
                          path, kind, want ? want : "unknown");
    if (st == NB_OK) st = nb_ckpt_attr_num(path, g, "/optim", "steps", H5T_INTEGER, H5T_NATIVE_INT64, &s);
    if (st == NB_OK && H5Aexists(g, "layout") > 0) {
        /* Which parameters each stretch of the state belongs to (files
         * written before layouts were stored are checked by size only). */
        char *have = NULL, *want_layout = nb_optimizer_layout(opt);
        st = want_layout ? nb_h5_attr_string(path, g, "layout", &have) : NB_STATUS_OOM;
        if (st == NB_OK && strcmp(have, want_layout) != 0) {
            const char *a = have, *b = want_layout;
            while (*a && *a == *b) a++, b++;
            while (a > have && a[-1] != '\n') a--, b--;
            st = nb_set_error(NB_STATUS_BAD_INPUT,
                              "%s: /optim/ state was saved for other parameters: the file has segment "
                              "\"%.*s\" where this run has \"%.*s\" (the model or the quant policy "
                              "changed; HINT: start the optimizer afresh with init.checkpoint)",
                              path, (int)strcspn(a, "\n"), a, (int)strcspn(b, "\n"), b);
        }
        nb_free(have);
        nb_free(want_layout);
    }
    if (st != NB_OK) goto cleanup;
    int n = (int)nb_optimizer_numel(opt);
    for (int k = 0; k < nb_optimizer_n_state(opt) && st == NB_OK; k++)
        st = nb_ckpt_read_f32(path, g, "/optim/", nb_optimizer_state_name(opt, k), 1, &n,
                              "the optimizer", stage + (size_t)k * (size_t)n);
    if (st != NB_OK) goto cleanup;
    nb_ckpt_unknown u = {.known = optim_has, .user = opt};
    st = nb_ckpt_find_unknown(path, g, "/optim/", &u);
    if (st == NB_OK && u.count)
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: /optim/%s is not state of this %s optimizer (other settings than "
                          "the run that saved it?)",
                          path, u.first, want ? want : "unknown");
    *steps = (long)s;
cleanup:
    nb_free(kind);
    if (g >= 0) H5Gclose(g);
    return st;
}

/* An integer attribute of the root in [lo, hi] (hi = LLONG_MAX: no upper
 * bound); a tampered or damaged file says so instead of aborting later. */
static nb_status in_range(const char *path, const char *name, long long v, long long lo, long long hi) {
    if (v >= lo && v <= hi) return NB_OK;
    if (hi == LLONG_MAX)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "%s: attribute '%s' of the root is %lld, expected %lld or more (HINT: a "
                            "damaged or edited checkpoint)", path, name, v, lo);
    return nb_set_error(NB_STATUS_BAD_INPUT,
                        "%s: attribute '%s' of the root is %lld, expected %lld..%lld (HINT: a "
                        "damaged or edited checkpoint)", path, name, v, lo, hi);
}

/* A float attribute that must be finite and >= lo (or exactly alt). */
static nb_status finite_min(const char *path, const char *name, double v, double lo, double alt) {
    if (isfinite(v) && (v >= lo || v == alt)) return NB_OK;
    return nb_set_error(NB_STATUS_BAD_INPUT,
                        "%s: attribute '%s' of the root is %g, expected a finite number >= %g (HINT: "
                        "a damaged or edited checkpoint)", path, name, v, lo);
}

/* The position and running sums of a checkpoint, each within its range. */
static nb_status check_meta(const char *path, const nb_ckpt_meta *mt, int64_t step, int64_t sie,
                            int64_t correct, int64_t seen) {
    nb_status st = in_range(path, "epoch", mt->epoch, 0, LLONG_MAX);
    if (st == NB_OK) st = in_range(path, "step", step, 0, LONG_MAX);
    if (st == NB_OK) st = in_range(path, "step_in_epoch", sie, 0, step);
    if (st == NB_OK) st = in_range(path, "train_seen", seen, 0, LONG_MAX);
    if (st == NB_OK) st = in_range(path, "train_correct", correct, 0, seen);
    if (st == NB_OK && mt->best_top1 != -1.0 && !(mt->best_top1 >= 0.0 && mt->best_top1 <= 1.0))
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: attribute 'best_top1' of the root is %g, expected -1 (none) or 0..1 "
                          "(HINT: a damaged or edited checkpoint)", path, mt->best_top1);
    if (st == NB_OK) st = finite_min(path, "train_loss_sum", mt->train_loss_sum, 0.0, 0.0);
    if (st == NB_OK) st = finite_min(path, "train_seconds", mt->train_seconds, 0.0, 0.0);
    return st;
}

static nb_status read_meta(const char *path, hid_t f, nb_ckpt_meta *mt) {
    const char *r = "the root";
    int64_t step = 0, sie = 0, correct = 0, seen = 0;
    char *config = NULL;
    nb_status st = NB_OK;
#define NUM(name, cls, type, dst) \
    if (st == NB_OK) st = nb_ckpt_attr_num(path, f, r, name, cls, type, dst)
    NUM("epoch", H5T_INTEGER, H5T_NATIVE_INT, &mt->epoch);
    NUM("step", H5T_INTEGER, H5T_NATIVE_INT64, &step);
    NUM("step_in_epoch", H5T_INTEGER, H5T_NATIVE_INT64, &sie);
    NUM("rng_state", H5T_INTEGER, H5T_NATIVE_UINT64, &mt->rng.state);
    NUM("rng_inc", H5T_INTEGER, H5T_NATIVE_UINT64, &mt->rng.inc);
    NUM("best_top1", H5T_FLOAT, H5T_NATIVE_DOUBLE, &mt->best_top1);
    NUM("train_loss_sum", H5T_FLOAT, H5T_NATIVE_DOUBLE, &mt->train_loss_sum);
    NUM("train_correct", H5T_INTEGER, H5T_NATIVE_INT64, &correct);
    NUM("train_seen", H5T_INTEGER, H5T_NATIVE_INT64, &seen);
    NUM("train_seconds", H5T_FLOAT, H5T_NATIVE_DOUBLE, &mt->train_seconds);
#undef NUM
    if (st == NB_OK) st = check_meta(path, mt, step, sie, correct, seen);
    if (st == NB_OK && H5Aexists(f, "config") > 0) st = nb_h5_attr_string(path, f, "config", &config);
    if (st != NB_OK) {
        nb_free(config);
        return st;
    }
    mt->step = (long)step;
    mt->step_in_epoch = (long)sie;
    mt->train_correct = (long)correct;
    mt->train_seen = (long)seen;
    mt->config_json = config;
    return NB_OK;
}

nb_status nb_checkpoint_load_state(const char *path, nb_optimizer *opt, nb_ckpt_meta *meta) {
    hid_t f = H5I_INVALID_HID;
    float *stage = NULL;
    long steps = 0;
    nb_ckpt_meta mt = {0};
    int n_state = opt ? nb_optimizer_n_state(opt) : 0;
    size_t numel = opt ? nb_optimizer_numel(opt) : 0;
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    nb_status st = nb_ckpt_open(path, &f);
    if (st != NB_OK) goto cleanup;
    if (opt) {
        size_t total = (size_t)n_state * numel;
        stage = nb_malloc((total ? total : 1) * sizeof(float));
        if (!stage) {
            st = nb_set_error(NB_STATUS_OOM, "%s: out of memory allocating %zu floats for the optimizer state",
                              path, total);
            goto cleanup;
        }
        st = read_optim(path, f, opt, stage, &steps);
        if (st != NB_OK) goto cleanup;
    }
    if (meta) {
        st = read_meta(path, f, &mt);
        if (st != NB_OK) goto cleanup;
    }
    /* Everything is read: only now change the caller's objects. */
    if (opt) {
        for (int k = 0; k < n_state; k++)
            memcpy(nb_optimizer_state(opt, k), stage + (size_t)k * numel, numel * sizeof(float));
        nb_optimizer_set_steps(opt, steps);
    }
    if (meta) *meta = mt;

cleanup:
    nb_free(stage);
    if (f >= 0) H5Fclose(f);
    nb_h5_quiet_end(&q);
    return st;
}

nb_status nb_checkpoint_read_config(const char *path, char **json, char *arch, size_t n) {
    hid_t f = H5I_INVALID_HID;
    char *a = NULL, *config = NULL;
    if (json) *json = NULL;
    if (arch && n) arch[0] = '\0';
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    nb_status st = nb_ckpt_open(path, &f);
    if (st == NB_OK) st = nb_ckpt_need_attr(path, f, "the root", "arch");
    if (st == NB_OK) st = nb_h5_attr_string(path, f, "arch", &a);
    if (st == NB_OK && json && H5Aexists(f, "config") <= 0)
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: the checkpoint holds no config (it was saved without one)", path);
    if (st == NB_OK && json) st = nb_h5_attr_string(path, f, "config", &config);
    if (st != NB_OK) goto cleanup;
    if (arch && n) snprintf(arch, n, "%s", a);
    if (json) *json = config;
    config = NULL;

cleanup:
    nb_free(config);
    nb_free(a);
    if (f >= 0) H5Fclose(f);
    nb_h5_quiet_end(&q);
    return st;
}

typedef struct {
    nb_ckpt_tensor *v;
    int n, cap;
    nb_status st;
} listing;

static herr_t list_one(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    listing *l = data;
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return 0; /* not openable: not listed */
    if (H5Iget_type(o) != H5I_DATASET) {
        H5Oclose(o);
        return 0;
    }
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        nb_ckpt_tensor *v = nb_realloc(l->v, sizeof *v * (size_t)cap);
        if (!v) {
            H5Oclose(o);
            l->st = NB_STATUS_OOM;
            return -1;
        }
        l->v = v;
        l->cap = cap;
    }
    nb_ckpt_tensor *e = &l->v[l->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    hid_t type = H5Dget_type(o), space = H5Dget_space(o);
    if (type >= 0) nb_h5_type_name(type, e->dtype, sizeof e->dtype);
    if (space >= 0) {
        hsize_t dims[H5S_MAX_RANK];
        int rank = H5Sget_simple_extent_dims(space, dims, NULL);
        /* Ranks above NB_MAX_DIMS cannot come from nibble; list the first ones. */
        e->ndim = rank < 0 ? 0 : rank > NB_MAX_DIMS ? NB_MAX_DIMS : rank;
        for (int i = 0; i < e->ndim; i++) e->shape[i] = (long)dims[i];
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Oclose(o);
    return 0;
}

nb_status nb_checkpoint_list(const char *path, nb_ckpt_tensor **out, int *n) {
    hid_t f = H5I_INVALID_HID;
    listing l = {0};
    *out = NULL;
    *n = 0;
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    nb_status st = nb_ckpt_open(path, &f);
    if (st != NB_OK) goto cleanup;
    /* Name order in every group, each group's contents right after it. */
    if (H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, list_one, &l) < 0) {
        char d[256];
        st = l.st == NB_STATUS_OOM
                 ? nb_set_error(NB_STATUS_OOM, "%s: out of memory listing the file", path)
                 : nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot list the file (%s)", path,
                                nb_h5_error_detail(d, sizeof d));
        goto cleanup;
    }
    *out = l.v;
    *n = l.n;
    l.v = NULL;

cleanup:
    nb_free(l.v);
    if (f >= 0) H5Fclose(f);
    nb_h5_quiet_end(&q);
    return st;
}
