/* Reading checkpoints (the layout is in nb_checkpoint.h): opening with the
 * format check, checked reads shared with checkpoint_state.c, and the model.
 * Every reader validates all it reads (type, shape) into staging memory
 * before it touches the caller's model, optimizer or meta, so a failed load
 * changes nothing. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_internal.h"

#define NOT_CKPT_HINT "HINT: checkpoints are the .h5 files nibble train writes into its run directory"

nb_status nb_ckpt_need_attr(const char *path, hid_t loc, const char *where, const char *name) {
    if (H5Aexists(loc, name) > 0) return NB_OK;
    return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s has no attribute '%s' (not written by nibble?)",
                        path, where, name);
}

/* A scalar numeric attribute of class cls read as mtype into out. */
nb_status nb_ckpt_attr_num(const char *path, hid_t loc, const char *where, const char *name,
                           H5T_class_t cls, hid_t mtype, void *out) {
    nb_status st = nb_ckpt_need_attr(path, loc, where, name);
    if (st != NB_OK) return st;
    char t[32], s[64], d[256];
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t type = a < 0 ? H5I_INVALID_HID : H5Aget_type(a);
    hid_t space = a < 0 ? H5I_INVALID_HID : H5Aget_space(a);
    if (type < 0 || space < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot open attribute '%s' of %s (%s)", path,
                          name, where, nb_h5_error_detail(d, sizeof d));
        goto cleanup;
    }
    if (H5Tget_class(type) != cls) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: attribute '%s' of %s has type %s, expected %s",
                          path, name, where, nb_h5_type_name(type, t, sizeof t),
                          cls == H5T_FLOAT ? "a float" : "an integer");
        goto cleanup;
    }
    if (H5Sget_simple_extent_npoints(space) != 1) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: attribute '%s' of %s has shape %s, expected a scalar", path, name,
                          where, nb_h5_space_str(space, s, sizeof s));
        goto cleanup;
    }
    if (H5Aread(a, mtype, out) < 0)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot read attribute '%s' of %s (%s)", path,
                          name, where, nb_h5_error_detail(d, sizeof d));
cleanup:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (a >= 0) H5Aclose(a);
    return st;
}

/* 1 (with a message) when path is a directory or another non-file, which
 * HDF5 would answer with a raw multi-line error. */
int nb_ckpt_not_a_file(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0 || S_ISREG(sb.st_mode)) return 0;
    nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s, not a checkpoint file (" NOT_CKPT_HINT "%s)", path,
                 S_ISDIR(sb.st_mode) ? "is a directory" : "is not a regular file",
                 S_ISDIR(sb.st_mode) ? ", e.g. last.h5 or best.h5 in a run directory" : "");
    return 1;
}

static nb_status check_format(const char *path, hid_t f) {
    if (H5Aexists(f, "nb_format") <= 0)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "%s: not a nibble checkpoint (no nb_format attribute; " NOT_CKPT_HINT ")",
                            path);
    char *fmt = NULL;
    nb_status st = nb_h5_attr_string(path, f, "nb_format", &fmt);
    if (st == NB_OK && strcmp(fmt, NB_CKPT_FORMAT) != 0)
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: not a nibble checkpoint (nb_format is '%s', expected '%s'; " NOT_CKPT_HINT ")",
                          path, fmt, NB_CKPT_FORMAT);
    nb_free(fmt);
    if (st != NB_OK) return st;
    int version = 0;
    st = nb_ckpt_need_attr(path, f, "the root", "nb_version");
    if (st == NB_OK) st = nb_h5_attr_int(path, f, "nb_version", &version);
    if (st == NB_OK && version != NB_CKPT_VERSION)
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: checkpoint version %d is not supported (this nibble reads version "
                          "%d; HINT: load it with the nibble that wrote it)",
                          path, version, NB_CKPT_VERSION);
    return st;
}

/* Open path read-only and check that it is a checkpoint of this version.
 * The caller holds an nb_h5_quiet scope and closes *out. */
nb_status nb_ckpt_open(const char *path, hid_t *out) {
    char d[256];
    nb_status st = NB_OK;
    hid_t f = H5I_INVALID_HID;
    *out = H5I_INVALID_HID;
    if (access(path, R_OK) != 0) {
        st = nb_set_error(NB_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
        goto cleanup;
    }
    if (nb_ckpt_not_a_file(path)) {
        st = NB_STATUS_BAD_INPUT;
        goto cleanup;
    }
    htri_t is = H5Fis_hdf5(path);
    if (is == 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: not an HDF5 file (" NOT_CKPT_HINT ")", path);
        goto cleanup;
    }
    if (is < 0 || (f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: cannot open as HDF5 (%s; HINT: a truncated or damaged file?)", path,
                          nb_h5_error_detail(d, sizeof d));
        goto cleanup;
    }
    st = check_format(path, f);
    if (st == NB_OK) {
        *out = f;
        f = H5I_INVALID_HID; /* the caller's now */
    }
cleanup:
    if (f >= 0) H5Fclose(f);
    return st;
}

/* Read the float32 dataset <group>/<name> of shape (ndim, shape) into out;
 * `who` ("the model", "the optimizer") names the side that expects it. */
nb_status nb_ckpt_read_f32(const char *path, hid_t g, const char *group, const char *name,
                           int ndim, const int *shape, const char *who, float *out) {
    char want[96], got[96], d[256];
    hsize_t want_dims[NB_MAX_DIMS];
    for (int i = 0; i < ndim; i++) want_dims[i] = (hsize_t)shape[i];
    nb_h5_dims_str(ndim, want_dims, want, sizeof want);
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s%s is missing (%s expects %s)", path,
                            group, name, who, want);
    nb_status st = NB_OK;
    hid_t type = H5I_INVALID_HID, space = H5I_INVALID_HID;
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s%s is not a dataset (%s)", path, group, name,
                          nb_h5_error_detail(d, sizeof d));
        goto cleanup;
    }
    type = H5Dget_type(ds);
    space = H5Dget_space(ds);
    if (type < 0 || space < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot read %s%s (%s)", path, group, name,
                          nb_h5_error_detail(d, sizeof d));
        goto cleanup;
    }
    if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 4) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s%s has type %s, expected float32", path,
                          group, name, nb_h5_type_name(type, got, sizeof got));
        goto cleanup;
    }
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[H5S_MAX_RANK];
    int same = rank == ndim && H5Sget_simple_extent_type(space) != H5S_NULL &&
               H5Sget_simple_extent_dims(space, dims, NULL) == rank;
    for (int i = 0; same && i < rank; i++) same = dims[i] == want_dims[i];
    if (!same) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s%s has shape %s, %s expects %s", path, group,
                          name, nb_h5_space_str(space, got, sizeof got), who, want);
        goto cleanup;
    }
    if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot read %s%s (%s)", path, group, name,
                          nb_h5_error_detail(d, sizeof d));
cleanup:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (ds >= 0) H5Dclose(ds);
    return st;
}

static herr_t count_unknown(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g;
    (void)info;
    nb_ckpt_unknown *u = data;
    if (!u->known(u->user, name) && u->count++ == 0) snprintf(u->first, sizeof u->first, "%s", name);
    return 0;
}

nb_status nb_ckpt_find_unknown(const char *path, hid_t g, const char *group, nb_ckpt_unknown *u) {
    char d[256];
    u->first[0] = '\0';
    u->count = 0;
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, count_unknown, u) < 0)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot list %s (%s)", path, group,
                            nb_h5_error_detail(d, sizeof d));
    return NB_OK;
}

static int model_has(void *user, const char *name) { return nb_model_find(user, name) != NULL; }

/* Appends a hint to a shape/missing error when the file holds another
 * architecture than the model. */
static void hint_arch(const char *path, hid_t f, const nb_model *m) {
    char *arch = NULL, msg[1024];
    if (H5Aexists(f, "arch") <= 0) return;
    snprintf(msg, sizeof msg, "%s", nb_last_error());
    if (nb_h5_attr_string(path, f, "arch", &arch) == NB_OK && strcmp(arch, m->arch) != 0)
        nb_set_error(NB_STATUS_BAD_INPUT, "%s (HINT: the checkpoint holds a %s, the model is a %s)",
                     msg, arch, m->arch);
    else
        nb_set_error(NB_STATUS_BAD_INPUT, "%s", msg);
    nb_free(arch);
}

/* Reads /<group>/<name> of each of the n entries (shape checked; `who`
 * names the side that expects it) into stage, their numels back to back. */
static nb_status read_entries(const char *path, hid_t g, const char *group, const char *who, const nb_entry *e,
                              int n, float *stage) {
    nb_status st = NB_OK;
    for (int i = 0; i < n && st == NB_OK; i++) {
        st = nb_ckpt_read_f32(path, g, group, e[i].name, e[i].t->ndim, e[i].t->shape, who, stage);
        stage += e[i].t->numel;
    }
    return st;
}

/* Exchanges the entries' data with stage (laid out as read_entries fills
 * it): the entries get the loaded values, stage keeps the old ones. */
static void swap_entries(const nb_entry *e, int n, float *stage) {
    for (int i = 0; i < n; i++) {
        float *d = e[i].t->data;
        for (size_t k = 0; k < e[i].t->numel; k++, stage++) {
            const float v = d[k];
            d[k] = *stage;
            *stage = v;
        }
    }
}

nb_status nb_checkpoint_load_model(const char *path, nb_model *m, int strict) {
    nb_status st;
    hid_t f = H5I_INVALID_HID, g = H5I_INVALID_HID;
    float *stage = NULL;
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    st = nb_ckpt_open(path, &f);
    if (st != NB_OK) goto cleanup;
    if (H5Lexists(f, "model", H5P_DEFAULT) <= 0 || (g = H5Gopen2(f, "model", H5P_DEFAULT)) < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: no /model/ group (saved without a model?)", path);
        goto cleanup;
    }
    size_t total = 0;
    for (int i = 0; i < m->n_entries; i++) total += m->entries[i].t->numel;
    stage = nb_malloc((total ? total : 1) * sizeof(float));
    if (!stage) {
        st = nb_set_error(NB_STATUS_OOM, "%s: out of memory allocating %zu floats to load the model", path,
                          total);
        goto cleanup;
    }
    if ((st = read_entries(path, g, "/model/", "the model", m->entries, m->n_entries, stage)) != NB_OK) {
        hint_arch(path, f, m);
        goto cleanup;
    }
    if (strict) {
        nb_ckpt_unknown u = {.known = model_has, .user = m};
        st = nb_ckpt_find_unknown(path, g, "/model/", &u);
        if (st == NB_OK && u.count)
            st = nb_set_error(NB_STATUS_BAD_INPUT,
                              "%s: /model/%s is not in the %s model (%d unknown tensor%s; HINT: "
                              "a non-strict load ignores them)",
                              path, u.first, m->arch, u.count, u.count == 1 ? "" : "s");
        if (st != NB_OK) goto cleanup;
    }
    swap_entries(m->entries, m->n_entries, stage);

cleanup:
    nb_free(stage);
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    nb_h5_quiet_end(&q);
    return st;
}


/* ------------------------------------------------------------------ /quant/ */

typedef struct {
    const nb_model_ext *q;
    char first[128];
    int count;
} quant_visit;

/* Whether name (a path below /quant/) is an entry or a group on the way to one. */
static int quant_known(const nb_model_ext *q, const char *name) {
    const size_t n = strlen(name);
    for (int i = 0; i < q->n_entries; i++) {
        const char *e = q->entries[i].name;
        if (!strcmp(e, name) || (!strncmp(e, name, n) && e[n] == '/')) return 1;
    }
    return 0;
}

static herr_t visit_quant(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g;
    (void)info;
    quant_visit *v = data;
    if (!quant_known(v->q, name) && v->count++ == 0) snprintf(v->first, sizeof v->first, "%s", name);
    return 0;
}

nb_status nb_checkpoint_load_quant(const char *path, nb_model *m) {
    nb_status st = NB_OK;
    hid_t f = H5I_INVALID_HID, g = H5I_INVALID_HID;
    float *stage = NULL;
    const nb_model_ext *q = m->quant;
    nb_h5_quiet hq;
    nb_h5_quiet_begin(&hq);
    if ((st = nb_ckpt_open(path, &f)) != NB_OK) goto cleanup;
    const int has = H5Lexists(f, "quant", H5P_DEFAULT) > 0;
    if (!q) {
        if (has)
            st = nb_set_error(NB_STATUS_BAD_INPUT, "%s holds quantizer state (/quant/) but the model has no "
                              "quantizers (its config has no quant section?)", path);
        goto cleanup;
    }
    if (!has || (g = H5Gopen2(f, "quant", H5P_DEFAULT)) < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: no /quant/ group: the checkpoint is not quantized, but the config asks for "
                          "quantizers (HINT: start QAT from it with init.checkpoint, or quantize it with "
                          "nibble ptq)", path);
        goto cleanup;
    }
    size_t total = q->n_param_floats + q->n_buffer_floats;
    if (!(stage = nb_malloc((total ? total : 1) * sizeof(float)))) {
        st = NB_STATUS_OOM;
        goto cleanup;
    }
    if ((st = read_entries(path, g, "/quant/", "the quant policy", q->entries, q->n_entries, stage)) != NB_OK)
        goto cleanup;
    quant_visit v = {.q = q};
    if (H5Lvisit(g, H5_INDEX_NAME, H5_ITER_INC, visit_quant, &v) < 0) {
        char d[256];
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot list /quant/ (%s)", path, nb_h5_error_detail(d, sizeof d));
        goto cleanup;
    }
    if (v.count) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: /quant/%s is not state of this model's quantizers (%d unknown; the config's "
                          "quant section and the file disagree)", path, v.first, v.count);
        goto cleanup;
    }
    /* Everything read and checked: swap it in and let the owner validate
     * the values (scales, ranges); if it refuses, swap the old state back. */
    swap_entries(q->entries, q->n_entries, stage);
    if (q->after_load && (st = q->after_load(q->owner)) != NB_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nb_last_error());
        st = nb_set_error(st, "%s: %s", path, msg);
        swap_entries(q->entries, q->n_entries, stage);
    }
cleanup:
    nb_free(stage);
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    nb_h5_quiet_end(&hq);
    return st;
}
