/* Writing checkpoints: the model's tensors under /model/, the optimizer's
 * state under /optim/, the run's progress as root attributes. Everything
 * is built in memory, then written to PATH.tmp-<pid>, synced and renamed
 * over PATH only when complete; on any failure the temporary file is
 * removed and an existing PATH is left as it was. Reading is in
 * checkpoint_read.c. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "h5_util.h"
#include "nb_checkpoint.h"

/* The writer's state: the first failure sets st (with HDF5's reason, taken
 * before any later call clears the error stack); later writes are no-ops. */
typedef struct {
    const char *path;
    nb_status st;
} writer;

static void failed(writer *w, const char *what, const char *name) {
    char d[256];
    if (w->st == NB_OK)
        w->st = nb_set_error(NB_STATUS_IO, "%s: cannot write %s%s (%s)", w->path, what, name,
                             nb_h5_error_detail(d, sizeof d));
}

/* A scalar attribute `name` of loc (called `where` in messages) of file type
 * ftype from v (memory type mtype). */
static void attr_scalar(writer *w, hid_t loc, const char *where, const char *name, hid_t ftype,
                        hid_t mtype, const void *v) {
    if (w->st == NB_OK && !nb_h5_write_attr(loc, name, ftype, mtype, 0, 1, v)) failed(w, where, name);
}

static void attr_string(writer *w, hid_t loc, const char *where, const char *name, const char *v) {
    if (w->st != NB_OK) return;
    hid_t t = nb_h5_vlen_str_type();
    if (t < 0) failed(w, where, name);
    else attr_scalar(w, loc, where, name, t, t, &v);
    if (t >= 0) H5Tclose(t);
}

static void attr_i32(writer *w, hid_t loc, const char *where, const char *name, int v) {
    attr_scalar(w, loc, where, name, H5T_STD_I32LE, H5T_NATIVE_INT, &v);
}

static void attr_i64(writer *w, hid_t loc, const char *where, const char *name, long v) {
    int64_t x = v;
    attr_scalar(w, loc, where, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &x);
}

static void attr_u64(writer *w, hid_t loc, const char *where, const char *name, uint64_t v) {
    attr_scalar(w, loc, where, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}

static void attr_f64(writer *w, hid_t loc, const char *where, const char *name, double v) {
    attr_scalar(w, loc, where, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

/* The float32 dataset <group><name> of rank ndim (0: scalar dataspace);
 * lcpl H5P_DEFAULT, or one that creates the groups a "a/b" name needs. */
static void write_f32_lcpl(writer *w, hid_t loc, const char *group, const char *name, int ndim,
                           const hsize_t *dims, const float *data, hid_t lcpl) {
    if (w->st != NB_OK) return;
    hid_t sp = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, dims, NULL);
    hid_t d = sp < 0 ? H5I_INVALID_HID
                     : H5Dcreate2(loc, name, H5T_IEEE_F32LE, sp, lcpl, H5P_DEFAULT,
                                  H5P_DEFAULT);
    if (d < 0 || H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        failed(w, group, name);
    if (d >= 0) H5Dclose(d);
    if (sp >= 0) H5Sclose(sp);
}

static void write_f32(writer *w, hid_t loc, const char *group, const char *name, int ndim,
                      const hsize_t *dims, const float *data) {
    write_f32_lcpl(w, loc, group, name, ndim, dims, data, H5P_DEFAULT);
}

static void write_root_attrs(writer *w, hid_t f, const char *arch, const nb_ckpt_meta *mt) {
    const char *r = "root attribute ";
    attr_string(w, f, r, "nb_format", NB_CKPT_FORMAT);
    attr_i32(w, f, r, "nb_version", NB_CKPT_VERSION);
    attr_string(w, f, r, "arch", arch);
    attr_i32(w, f, r, "epoch", mt->epoch);
    attr_i64(w, f, r, "step", mt->step);
    attr_i64(w, f, r, "step_in_epoch", mt->step_in_epoch);
    attr_u64(w, f, r, "rng_state", mt->rng.state);
    attr_u64(w, f, r, "rng_inc", mt->rng.inc);
    attr_f64(w, f, r, "best_top1", mt->best_top1);
    attr_f64(w, f, r, "train_loss_sum", mt->train_loss_sum);
    attr_i64(w, f, r, "train_correct", mt->train_correct);
    attr_i64(w, f, r, "train_seen", mt->train_seen);
    attr_f64(w, f, r, "train_seconds", mt->train_seconds);
    if (mt->config_json) attr_string(w, f, r, "config", mt->config_json);
}

/* Registry entries as float32 datasets /<group>/<name>: the model's under
 * /model/, its quant ext's under /quant/ (names such as
 * "layer1.0.conv1.weight/scale" hold a '/', so groups are made on the way). */
static void write_entries(writer *w, hid_t f, const char *group, const nb_entry *e, int n) {
    if (w->st != NB_OK) return;
    char where[32];
    snprintf(where, sizeof where, "/%s/", group);
    hid_t g = H5Gcreate2(f, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (g < 0 || lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0) failed(w, where, "");
    for (int i = 0; i < n && w->st == NB_OK; i++) {
        const nb_tensor *t = e[i].t;
        hsize_t dims[NB_MAX_DIMS];
        for (int k = 0; k < t->ndim; k++) dims[k] = (hsize_t)t->shape[k];
        write_f32_lcpl(w, g, where, e[i].name, t->ndim, dims, t->data, lcpl);
    }
    if (lcpl >= 0) H5Pclose(lcpl);
    if (g >= 0) H5Gclose(g);
}

static void write_optim(writer *w, hid_t f, nb_optimizer *opt) {
    if (w->st != NB_OK) return;
    hid_t g = H5Gcreate2(f, "optim", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) {
        failed(w, "/optim", "");
        return;
    }
    const char *kind = nb_optim_kind_name(nb_optimizer_kind(opt));
    attr_string(w, g, "attribute of /optim: ", "kind", kind ? kind : "unknown");
    attr_i64(w, g, "attribute of /optim: ", "steps", nb_optimizer_steps(opt));
    char *layout = nb_optimizer_layout(opt);
    if (!layout && w->st == NB_OK) w->st = nb_set_error(NB_STATUS_OOM, "%s: out of memory", w->path);
    attr_string(w, g, "attribute of /optim: ", "layout", layout);
    nb_free(layout);
    hsize_t n = (hsize_t)nb_optimizer_numel(opt);
    for (int k = 0; k < nb_optimizer_n_state(opt); k++)
        write_f32(w, g, "/optim/", nb_optimizer_state_name(opt, k), 1, &n,
                  nb_optimizer_state(opt, k));
    H5Gclose(g);
}

nb_status nb_checkpoint_save(const char *path, const nb_model *m, nb_optimizer *opt,
                             const nb_ckpt_meta *meta) {
    nb_ckpt_meta none = {.best_top1 = -1.0};
    if (!meta) meta = &none;
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= sizeof tmp)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%.64s...: checkpoint path too long", path);

    writer w = {path, NB_OK};
    int created = 0;
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    hid_t f = nb_h5_mem_create(tmp);
    if (f < 0) {
        char d[256];
        w.st = nb_set_error(NB_STATUS_IO, "%s: cannot create %s (%s)", path, tmp,
                            nb_h5_error_detail(d, sizeof d));
        goto cleanup;
    }
    created = 1;
    write_root_attrs(&w, f, m->arch, meta);
    write_entries(&w, f, "model", m->entries, m->n_entries);
    if (m->quant) write_entries(&w, f, "quant", m->quant->entries, m->quant->n_entries);
    if (opt) write_optim(&w, f, opt);
    if (w.st == NB_OK && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) failed(&w, tmp, "");
    if (w.st == NB_OK) w.st = nb_h5_mem_write(path, tmp, f);
    herr_t closed = H5Fclose(f);
    f = H5I_INVALID_HID;
    if (closed < 0) failed(&w, tmp, "");
    if (w.st == NB_OK && rename(tmp, path) != 0)
        w.st = nb_set_error(NB_STATUS_IO, "%s: cannot rename %s into place: %s", path, tmp,
                            strerror(errno));

cleanup:
    if (f >= 0) H5Fclose(f);
    if (w.st != NB_OK && created) unlink(tmp);
    nb_h5_quiet_end(&q);
    return w.st;
}
