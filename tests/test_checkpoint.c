/* Checkpoints: bit-exact round trips of models, optimizer state and run
 * progress; strict and non-strict loading; corrupt files; atomic writes;
 * the listing; and, where PyTorch is importable, loading /model/ into a
 * torch ResNet-20 with load_state_dict(strict=True). */
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nb_checkpoint.h"
#include "nb_test.h"

static const char *tmp_file(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", nb_test_tmpdir(), name);
    return buf;
}

static nb_model *build(const char *arch, uint64_t seed) {
    nb_log_set_level(NB_LOG_WARN); /* no layer tables in the test output */
    nb_rng r;
    nb_rng_seed(&r, seed, 0);
    nb_model_opts o = nb_model_opts_default();
    if (!strcmp(arch, "smallcnn")) o.width = 4;
    nb_model *m = nb_model_build(arch, &o, &r);
    ck_assert_msg(m != NULL, "build %s: %s", arch, nb_last_error());
    return m;
}

/* Every float of every entry, buffers included, from rng. */
static void randomise(nb_model *m, uint64_t seed) {
    nb_rng r;
    nb_rng_seed(&r, seed, 1);
    for (int i = 0; i < m->n_entries; i++) nb_tensor_fill_normal(m->entries[i].t, &r, 0.0f, 1.0f);
}

/* A copy of all entries' data, in entry order (caller frees). */
static float *snapshot(const nb_model *m) {
    size_t total = 0;
    for (int i = 0; i < m->n_entries; i++) total += m->entries[i].t->numel;
    float *s = malloc(total * sizeof(float)), *p = s;
    for (int i = 0; i < m->n_entries; i++) {
        memcpy(p, m->entries[i].t->data, m->entries[i].t->numel * sizeof(float));
        p += m->entries[i].t->numel;
    }
    return s;
}

/* 1 when every entry equals the snapshot bit for bit. */
static int same_as(const nb_model *m, const float *s) {
    for (int i = 0; i < m->n_entries; i++) {
        size_t b = m->entries[i].t->numel * sizeof(float);
        if (memcmp(s, m->entries[i].t->data, b) != 0) return 0;
        s += m->entries[i].t->numel;
    }
    return 1;
}

/* HDF5 objects still open in this process (every reader and writer must
 * close all it opened, on error paths too). */
static long open_handles(void) { return (long)H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL); }

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* The temporary name nb_checkpoint_save uses for path. */
static int tmp_left(const char *path) {
    char t[1024];
    snprintf(t, sizeof t, "%s.tmp-%ld", path, (long)getpid());
    return exists(t);
}

START_TEST(test_roundtrip_resnet20) {
    char path[512];
    tmp_file(path, sizeof path, "rt.h5");
    nb_model *a = build("resnet20", 1);
    randomise(a, 11);
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_OK);
    ck_assert(!tmp_left(path));
    nb_model *b = build("resnet20", 2);
    float *sa = snapshot(a);
    ck_assert(!same_as(b, sa));
    ck_assert_msg(nb_checkpoint_load_model(path, b, 1) == NB_OK, "%s", nb_last_error());
    ck_assert(same_as(b, sa));
    /* num_batches_tracked is a scalar (rank 0), stored as such */
    nb_entry *e = nb_model_find(b, "bn1.num_batches_tracked");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->t->ndim, 0);
    free(sa);
    nb_model_free(a);
    nb_model_free(b);
}
END_TEST

START_TEST(test_meta_roundtrip) {
    char path[512];
    tmp_file(path, sizeof path, "meta.h5");
    nb_model *m = build("smallcnn", 1);
    nb_ckpt_meta in = {.epoch = 3, .step = 1170, .step_in_epoch = 42, .best_top1 = 0.8125,
                       .train_loss_sum = 123.456789012345, .train_correct = 789,
                       .train_seen = 1000, .train_seconds = 12.5,
                       .config_json = "{\"model\": {\"arch\": \"smallcnn\"}, \"name\": \"caf\xc3\xa9\"}"};
    nb_rng_seed(&in.rng, 0x123456789abcdefULL, 77);
    for (int i = 0; i < 5; i++) nb_rng_u32(&in.rng);
    in.step = 5000000000L; /* needs 64 bits */
    ck_assert_int_eq(nb_checkpoint_save(path, m, NULL, &in), NB_OK);

    nb_ckpt_meta out;
    memset(&out, 0xff, sizeof out);
    ck_assert_msg(nb_checkpoint_load_state(path, NULL, &out) == NB_OK, "%s", nb_last_error());
    ck_assert_int_eq(out.epoch, 3);
    ck_assert_int_eq(out.step, 5000000000L);
    ck_assert_int_eq(out.step_in_epoch, 42);
    ck_assert(out.rng.state == in.rng.state && out.rng.inc == in.rng.inc);
    ck_assert(out.best_top1 == in.best_top1);
    ck_assert(out.train_loss_sum == in.train_loss_sum);
    ck_assert_int_eq(out.train_correct, 789);
    ck_assert_int_eq(out.train_seen, 1000);
    ck_assert(out.train_seconds == 12.5);
    ck_assert_str_eq(out.config_json, in.config_json);
    /* the generator continues where it stopped */
    ck_assert_uint_eq(nb_rng_u32(&out.rng), nb_rng_u32(&in.rng));
    nb_free((void *)out.config_json);

    char *json = NULL, arch[32];
    ck_assert_int_eq(nb_checkpoint_read_config(path, &json, arch, sizeof arch), NB_OK);
    ck_assert_str_eq(arch, "smallcnn");
    ck_assert_str_eq(json, in.config_json);
    nb_free(json);

    /* no config: NULL back (read_config: an error); no meta: zeros, best_top1 -1 */
    ck_assert_int_eq(nb_checkpoint_save(path, m, NULL, NULL), NB_OK);
    ck_assert_int_eq(nb_checkpoint_load_state(path, NULL, &out), NB_OK);
    ck_assert_ptr_null(out.config_json);
    ck_assert_int_eq(out.epoch, 0);
    ck_assert(out.best_top1 == -1.0);
    ck_assert_int_eq(nb_checkpoint_read_config(path, &json, arch, sizeof arch), NB_STATUS_BAD_INPUT);
    char msg[4096];
    snprintf(msg, sizeof msg, "%s: the checkpoint holds no config (it was saved without one)", path);
    ck_assert_str_eq(nb_last_error(), msg);
    ck_assert_ptr_null(json);
    /* only the architecture */
    ck_assert_int_eq(nb_checkpoint_read_config(path, NULL, arch, sizeof arch), NB_OK);
    ck_assert_str_eq(arch, "smallcnn");
    nb_model_free(m);
    ck_assert_int_eq(open_handles(), 0);
}
END_TEST

/* An optimizer over m's parameters that has taken `steps` steps on random
 * gradients, so that its state is not zero. */
static nb_optimizer *trained_opt(nb_model *m, nb_optim_kind kind, float momentum, int steps,
                                 uint64_t seed) {
    nb_optim_opts o = nb_optim_opts_default();
    o.kind = kind;
    o.momentum = momentum;
    nb_optimizer *opt = nb_optimizer_new(&o);
    ck_assert_msg(opt != NULL, "%s", nb_last_error());
    int g = nb_optimizer_add_group(opt, "decay", 1.0f, 5e-4f);
    size_t half = m->n_param_floats / 2;
    ck_assert_int_eq(nb_optimizer_add_segment(opt, g, m->param_data, m->param_grad, half), NB_OK);
    ck_assert_int_eq(nb_optimizer_add_segment(opt, g, m->param_data + half, m->param_grad + half,
                                              m->n_param_floats - half),
                     NB_OK);
    nb_rng r;
    nb_rng_seed(&r, seed, 3);
    for (int s = 0; s < steps; s++) {
        for (size_t i = 0; i < m->n_param_floats; i++) m->param_grad[i] = nb_rng_normal(&r);
        nb_optimizer_step(opt, 0.01f);
    }
    return opt;
}

START_TEST(test_optim_roundtrip) {
    char path[512];
    tmp_file(path, sizeof path, "optim.h5");
    const nb_optim_kind kinds[] = {NB_OPTIM_SGD, NB_OPTIM_ADAMW, NB_OPTIM_SGD};
    const float momenta[] = {0.9f, 0.9f, 0.0f};
    nb_optim_kind kind = kinds[_i];
    nb_model *m = build("smallcnn", 1);
    nb_optimizer *a = trained_opt(m, kind, momenta[_i], 3, 5);
    ck_assert_int_eq(nb_optimizer_steps(a), 3);
    ck_assert_int_eq(nb_optimizer_n_state(a), kind == NB_OPTIM_ADAMW ? 2 : momenta[_i] > 0 ? 1 : 0);
    ck_assert_int_eq(nb_checkpoint_save(path, m, a, NULL), NB_OK);

    nb_optimizer *b = trained_opt(m, kind, momenta[_i], 1, 9);
    size_t n = nb_optimizer_numel(a);
    for (int k = 0; k < nb_optimizer_n_state(a); k++)
        ck_assert(memcmp(nb_optimizer_state(a, k), nb_optimizer_state(b, k), n * sizeof(float)) != 0);
    ck_assert_msg(nb_checkpoint_load_state(path, b, NULL) == NB_OK, "%s", nb_last_error());
    ck_assert_int_eq(nb_optimizer_steps(b), 3);
    for (int k = 0; k < nb_optimizer_n_state(a); k++)
        ck_assert(memcmp(nb_optimizer_state(a, k), nb_optimizer_state(b, k), n * sizeof(float)) == 0);
    nb_optimizer_free(a);
    nb_optimizer_free(b);
    nb_model_free(m);
}
END_TEST

START_TEST(test_optim_mismatch) {
    char path[512], msg[4096];
    tmp_file(path, sizeof path, "optim_mm.h5");
    nb_model *m = build("smallcnn", 1);
    nb_optimizer *sgd = trained_opt(m, NB_OPTIM_SGD, 0.9f, 2, 5);
    ck_assert_int_eq(nb_checkpoint_save(path, m, sgd, NULL), NB_OK);

    /* another kind */
    nb_optimizer *adam = trained_opt(m, NB_OPTIM_ADAMW, 0.9f, 1, 6);
    float *before = malloc(nb_optimizer_numel(adam) * sizeof(float));
    memcpy(before, nb_optimizer_state(adam, 0), nb_optimizer_numel(adam) * sizeof(float));
    ck_assert_int_eq(nb_checkpoint_load_state(path, adam, NULL), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg, "%s: /optim/ holds sgd state, the optimizer is adamw", path);
    ck_assert_str_eq(nb_last_error(), msg);
    ck_assert_int_eq(nb_optimizer_steps(adam), 1);
    ck_assert(memcmp(before, nb_optimizer_state(adam, 0), nb_optimizer_numel(adam) * sizeof(float)) == 0);

    /* another size */
    nb_optim_opts o = nb_optim_opts_default();
    nb_optimizer *small = nb_optimizer_new(&o);
    int g = nb_optimizer_add_group(small, "decay", 1.0f, 0.0f);
    ck_assert_int_eq(nb_optimizer_add_segment(small, g, m->param_data, m->param_grad, 10), NB_OK);
    ck_assert_int_eq(nb_checkpoint_load_state(path, small, NULL), NB_STATUS_BAD_INPUT);
    /* the stored segment layout catches it before the sizes do */
    ck_assert_msg(strstr(nb_last_error(), "/optim/ state was saved for other parameters") &&
                      strstr(nb_last_error(), "where this run has \"decay - 10\""),
                  "%s", nb_last_error());

    /* same sizes, other parameters: named segments tell them apart */
    nb_optimizer *renamed = nb_optimizer_new(&o);
    g = nb_optimizer_add_group(renamed, "decay", 1.0f, 0.0f);
    char *layout = nb_optimizer_layout(sgd);
    size_t off = 0;
    for (char *line = layout; *line;) {
        char grp[32], nm[128];
        size_t cnt = 0;
        ck_assert_int_eq(sscanf(line, "%31s %127s %zu", grp, nm, &cnt), 3);
        ck_assert_int_eq(nb_optimizer_add_named_segment(renamed, g, "layer9.0.conv1.weight", m->param_data + off,
                                                        m->param_grad + off, cnt), NB_OK);
        off += cnt;
        line = strchr(line, '\n') + 1;
    }
    nb_free(layout);
    ck_assert_int_eq(nb_optimizer_numel(renamed), nb_optimizer_numel(sgd));
    ck_assert_int_eq(nb_checkpoint_load_state(path, renamed, NULL), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "layer9.0.conv1.weight"), "%s", nb_last_error());
    nb_optimizer_free(renamed);

    /* plain SGD keeps no momentum: the file's buffer is not its state */
    o.momentum = 0.0f;
    nb_optimizer *plain = nb_optimizer_new(&o);
    g = nb_optimizer_add_group(plain, "decay", 1.0f, 0.0f);
    const size_t half = m->n_param_floats / 2; /* the same segments as the saved one */
    ck_assert_int_eq(nb_optimizer_add_segment(plain, g, m->param_data, m->param_grad, half), NB_OK);
    ck_assert_int_eq(nb_optimizer_add_segment(plain, g, m->param_data + half, m->param_grad + half,
                                              m->n_param_floats - half),
                     NB_OK);
    ck_assert_int_eq(nb_checkpoint_load_state(path, plain, NULL), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg,
             "%s: /optim/momentum_buffer is not state of this sgd optimizer (other settings than "
             "the run that saved it?)",
             path);
    ck_assert_str_eq(nb_last_error(), msg);
    ck_assert_int_eq(nb_optimizer_steps(plain), 0);

    /* a checkpoint saved without an optimizer */
    ck_assert_int_eq(nb_checkpoint_save(path, m, NULL, NULL), NB_OK);
    ck_assert_int_eq(nb_checkpoint_load_state(path, sgd, NULL), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg,
             "%s: no /optim/ group (saved without optimizer state; HINT: start the optimizer "
             "afresh)",
             path);
    ck_assert_str_eq(nb_last_error(), msg);
    free(before);
    nb_optimizer_free(sgd);
    nb_optimizer_free(adam);
    nb_optimizer_free(small);
    nb_optimizer_free(plain);
    nb_model_free(m);
    ck_assert_int_eq(open_handles(), 0);
}
END_TEST

/* Open a checkpoint for editing with the raw HDF5 API. */
static hid_t edit(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_msg(f >= 0, "open %s", path);
    return f;
}

static void put_dataset(hid_t f, const char *name, hid_t type, int ndim, const hsize_t *dims) {
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_msg(d >= 0, "create %s", name);
    H5Dclose(d);
    H5Sclose(sp);
}

START_TEST(test_strict_and_non_strict) {
    char path[512], msg[4096];
    tmp_file(path, sizeof path, "strict.h5");
    nb_model *a = build("smallcnn", 1), *b = build("smallcnn", 2);
    float *sb = snapshot(b), *sa = snapshot(a);

    /* an extra tensor: an error only when strict */
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_OK);
    hid_t f = edit(path);
    put_dataset(f, "/model/extra.weight", H5T_IEEE_F32LE, 1, (hsize_t[]){3});
    H5Fclose(f);
    ck_assert_int_eq(nb_checkpoint_load_model(path, b, 1), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg,
             "%s: /model/extra.weight is not in the smallcnn model (1 unknown tensor; HINT: a "
             "non-strict load ignores them)",
             path);
    ck_assert_str_eq(nb_last_error(), msg);
    ck_assert(same_as(b, sb));
    ck_assert_int_eq(nb_checkpoint_load_model(path, b, 0), NB_OK);
    ck_assert(same_as(b, sa));

    /* a missing tensor: an error either way */
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_OK);
    f = edit(path);
    ck_assert(H5Ldelete(f, "/model/fc.bias", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    snprintf(msg, sizeof msg, "%s: /model/fc.bias is missing (the model expects (10,))", path);
    for (int strict = 0; strict < 2; strict++) {
        randomise(b, 99);
        float *sr = snapshot(b);
        ck_assert_int_eq(nb_checkpoint_load_model(path, b, strict), NB_STATUS_BAD_INPUT);
        ck_assert_str_eq(nb_last_error(), msg);
        ck_assert(same_as(b, sr));
        free(sr);
    }

    /* a wrong shape: an error either way, naming both shapes */
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_OK);
    f = edit(path);
    ck_assert(H5Ldelete(f, "/model/features.1.conv.weight", H5P_DEFAULT) >= 0);
    put_dataset(f, "/model/features.1.conv.weight", H5T_IEEE_F32LE, 4, (hsize_t[]){16, 4, 3, 3});
    H5Fclose(f);
    snprintf(msg, sizeof msg,
             "%s: /model/features.1.conv.weight has shape (16, 4, 3, 3), the model expects (8, "
             "4, 3, 3)",
             path);
    for (int strict = 0; strict < 2; strict++) {
        randomise(b, 98);
        float *sr = snapshot(b);
        ck_assert_int_eq(nb_checkpoint_load_model(path, b, strict), NB_STATUS_BAD_INPUT);
        ck_assert_str_eq(nb_last_error(), msg);
        ck_assert(same_as(b, sr));
        free(sr);
    }
    free(sa);
    free(sb);
    nb_model_free(a);
    nb_model_free(b);
    ck_assert_int_eq(open_handles(), 0);
}
END_TEST

START_TEST(test_other_architecture) {
    char path[512], msg[4096];
    tmp_file(path, sizeof path, "arch.h5");
    nb_model *a = build("smallcnn", 1), *b = build("resnet20", 2);
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_OK);
    ck_assert_int_eq(nb_checkpoint_load_model(path, b, 1), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg,
             "%s: /model/conv1.weight is missing (the model expects (16, 3, 3, 3)) (HINT: the "
             "checkpoint holds a smallcnn, the model is a resnet20)",
             path);
    ck_assert_str_eq(nb_last_error(), msg);
    nb_model_free(a);
    nb_model_free(b);
    ck_assert_int_eq(open_handles(), 0);
}
END_TEST

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(*n);
    ck_assert_uint_eq(fread(p, 1, *n, f), *n);
    fclose(f);
    return p;
}

static void set_string_attr(hid_t f, const char *name, const char *v) {
    if (H5Aexists(f, name) > 0) H5Adelete(f, name);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, v);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
}

/* Each bad file fails with its message and leaves the model as it was. */
START_TEST(test_corrupt_inputs) {
    char good[512], path[512], msg[4096];
    tmp_file(good, sizeof good, "good.h5");
    nb_model *a = build("smallcnn", 1), *b = build("smallcnn", 2);
    float *sb = snapshot(b);
    ck_assert_int_eq(nb_checkpoint_save(good, a, NULL, NULL), NB_OK);

    /* missing file */
    tmp_file(path, sizeof path, "nope.h5");
    ck_assert_int_eq(nb_checkpoint_load_model(path, b, 1), NB_STATUS_IO);
    snprintf(msg, sizeof msg, "%s: cannot open: No such file or directory", path);
    ck_assert_str_eq(nb_last_error(), msg);

    /* not HDF5 */
    tmp_file(path, sizeof path, "text.h5");
    write_bytes(path, "epoch,loss\n1,2.3\n", 17);
    ck_assert_int_eq(nb_checkpoint_load_model(path, b, 1), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg,
             "%s: not an HDF5 file (HINT: checkpoints are the .h5 files nibble train writes into "
             "its run directory)",
             path);
    ck_assert_str_eq(nb_last_error(), msg);
    ck_assert(same_as(b, sb));

    /* truncated: the first half of a good checkpoint */
    size_t n;
    void *bytes = read_bytes(good, &n);
    tmp_file(path, sizeof path, "trunc.h5");
    write_bytes(path, bytes, n / 2);
    ck_assert_int_eq(nb_checkpoint_load_model(path, b, 1), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg, "%s: cannot open as HDF5 (", path);
    ck_assert_msg(strncmp(nb_last_error(), msg, strlen(msg)) == 0 &&
                      strstr(nb_last_error(), "truncated"),
                  "got: %s", nb_last_error());
    ck_assert(same_as(b, sb));
    /* ...and the first 100 bytes: a superblock with nothing behind it */
    write_bytes(path, bytes, 100);
    ck_assert_int_eq(nb_checkpoint_load_model(path, b, 1), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strncmp(nb_last_error(), msg, strlen(msg)) == 0, "got: %s", nb_last_error());
    ck_assert(same_as(b, sb));
    free(bytes);

    /* another format, and no format at all */
    tmp_file(path, sizeof path, "dataset.h5");
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_OK);
    hid_t f = edit(path);
    set_string_attr(f, "nb_format", "nibble-dataset");
    H5Fclose(f);
    ck_assert_int_eq(nb_checkpoint_load_model(path, b, 1), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg,
             "%s: not a nibble checkpoint (nb_format is 'nibble-dataset', expected "
             "'nibble-checkpoint'; HINT: checkpoints are the .h5 files nibble train writes into "
             "its run directory)",
             path);
    ck_assert_str_eq(nb_last_error(), msg);
    ck_assert(same_as(b, sb));
    f = edit(path);
    H5Adelete(f, "nb_format");
    H5Fclose(f);
    ck_assert_int_eq(nb_checkpoint_load_state(path, NULL, &(nb_ckpt_meta){0}), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg,
             "%s: not a nibble checkpoint (no nb_format attribute; HINT: checkpoints are the .h5 "
             "files nibble train writes into its run directory)",
             path);
    ck_assert_str_eq(nb_last_error(), msg);

    /* a newer version */
    tmp_file(path, sizeof path, "v2.h5");
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_OK);
    f = edit(path);
    int v2 = 2;
    hid_t at = H5Aopen(f, "nb_version", H5P_DEFAULT);
    H5Awrite(at, H5T_NATIVE_INT, &v2);
    H5Aclose(at);
    H5Fclose(f);
    ck_assert_int_eq(nb_checkpoint_load_model(path, b, 1), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg,
             "%s: checkpoint version 2 is not supported (this nibble reads version 1; HINT: load "
             "it with the nibble that wrote it)",
             path);
    ck_assert_str_eq(nb_last_error(), msg);
    ck_assert(same_as(b, sb));

    /* float64 where float32 is expected (the last tensor: all others read fine) */
    tmp_file(path, sizeof path, "f64.h5");
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_OK);
    f = edit(path);
    H5Ldelete(f, "/model/fc.bias", H5P_DEFAULT);
    put_dataset(f, "/model/fc.bias", H5T_IEEE_F64LE, 1, (hsize_t[]){10});
    H5Fclose(f);
    ck_assert_int_eq(nb_checkpoint_load_model(path, b, 0), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg, "%s: /model/fc.bias has type float64, expected float32", path);
    ck_assert_str_eq(nb_last_error(), msg);
    ck_assert(same_as(b, sb));

    /* a group where a tensor should be */
    tmp_file(path, sizeof path, "group.h5");
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_OK);
    f = edit(path);
    H5Ldelete(f, "/model/fc.weight", H5P_DEFAULT);
    H5Gclose(H5Gcreate2(f, "/model/fc.weight", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Fclose(f);
    ck_assert_int_eq(nb_checkpoint_load_model(path, b, 0), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg, "%s: /model/fc.weight is not a dataset", path);
    ck_assert_msg(strncmp(nb_last_error(), msg, strlen(msg)) == 0, "got: %s", nb_last_error());
    ck_assert(same_as(b, sb));

    /* a meta attribute of the wrong type */
    tmp_file(path, sizeof path, "meta_bad.h5");
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_OK);
    f = edit(path);
    set_string_attr(f, "step", "1170");
    H5Fclose(f);
    nb_ckpt_meta mt = {.epoch = 5};
    ck_assert_int_eq(nb_checkpoint_load_state(path, NULL, &mt), NB_STATUS_BAD_INPUT);
    snprintf(msg, sizeof msg,
             "%s: attribute 'step' of the root has type string, expected an integer", path);
    ck_assert_str_eq(nb_last_error(), msg);
    ck_assert_int_eq(mt.epoch, 5);
    free(sb);
    nb_model_free(a);
    nb_model_free(b);
    ck_assert_int_eq(open_handles(), 0);
}
END_TEST

/* Every allocation of the readers failing in turn: an OOM status (never a
 * crash), nothing changed, no handle left open. */
START_TEST(test_alloc_failures) {
    char path[512];
    tmp_file(path, sizeof path, "oom.h5");
    nb_model *a = build("smallcnn", 1), *b = build("smallcnn", 2);
    nb_optimizer *oa = trained_opt(a, NB_OPTIM_ADAMW, 0.9f, 2, 5);
    nb_optimizer *ob = trained_opt(b, NB_OPTIM_ADAMW, 0.9f, 1, 6);
    nb_ckpt_meta in = {.epoch = 2, .step = 10, .config_json = "{}"};
    ck_assert_int_eq(nb_checkpoint_save(path, a, oa, &in), NB_OK);
    float *sb = snapshot(b);
    int failed = 0;
    for (long k = 1; k <= 8; k++) {
        nb_alloc_fail_after(k);
        nb_status st = nb_checkpoint_load_model(path, b, 1);
        nb_alloc_fail_after(0);
        ck_assert(st == NB_OK || st == NB_STATUS_OOM);
        if (st == NB_OK) break;
        failed++;
        ck_assert(same_as(b, sb));
        ck_assert_int_eq(open_handles(), 0);
    }
    ck_assert_int_ge(failed, 1);
    failed = 0;
    for (long k = 1; k <= 16; k++) {
        nb_ckpt_meta out = {.epoch = -7};
        nb_alloc_fail_after(k);
        nb_status st = nb_checkpoint_load_state(path, ob, &out);
        nb_alloc_fail_after(0);
        ck_assert(st == NB_OK || st == NB_STATUS_OOM);
        ck_assert_int_eq(open_handles(), 0);
        if (st == NB_OK) {
            nb_free((void *)out.config_json);
            break;
        }
        failed++;
        ck_assert_int_eq(out.epoch, -7);
        ck_assert_int_eq(nb_optimizer_steps(ob), 1);
    }
    ck_assert_int_ge(failed, 2);
    ck_assert_int_eq(nb_optimizer_steps(ob), 2);
    free(sb);
    nb_optimizer_free(oa);
    nb_optimizer_free(ob);
    nb_model_free(a);
    nb_model_free(b);
}
END_TEST

START_TEST(test_atomic_save) {
    char path[512], good[512], msg[4096];
    nb_model *a = build("smallcnn", 1), *b = build("smallcnn", 2);

    /* a directory that does not exist: a clean IO error, nothing created */
    tmp_file(path, sizeof path, "no/such/dir/ck.h5");
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_STATUS_IO);
    snprintf(msg, sizeof msg, "%s: cannot create %s.tmp-%ld (", path, path, (long)getpid());
    ck_assert_msg(strncmp(nb_last_error(), msg, strlen(msg)) == 0, "got: %s", nb_last_error());
    ck_assert(!exists(path));

    /* a save that fails half way (two tensors of one name: HDF5 refuses the
     * second) over a good checkpoint leaves the good one in place */
    tmp_file(good, sizeof good, "atomic.h5");
    ck_assert_int_eq(nb_checkpoint_save(good, a, NULL, NULL), NB_OK);
    char saved[96];
    memcpy(saved, b->entries[3].name, sizeof saved);
    snprintf(b->entries[3].name, sizeof b->entries[3].name, "%s", b->entries[0].name);
    ck_assert_int_eq(nb_checkpoint_save(good, b, NULL, NULL), NB_STATUS_IO);
    snprintf(msg, sizeof msg, "%s: cannot write /model/%s (", good, b->entries[0].name);
    ck_assert_msg(strncmp(nb_last_error(), msg, strlen(msg)) == 0 &&
                      strstr(nb_last_error(), "already exists"),
                  "got: %s", nb_last_error());
    ck_assert(!tmp_left(good));
    memcpy(b->entries[3].name, saved, sizeof saved);
    float *sa = snapshot(a);
    ck_assert_int_eq(nb_checkpoint_load_model(good, b, 1), NB_OK);
    ck_assert(same_as(b, sa));

    /* the rename fails (a directory is in the way): the temporary file goes */
    tmp_file(path, sizeof path, "dir.h5");
    ck_assert_int_eq(mkdir(path, 0755), 0);
    ck_assert_int_eq(nb_checkpoint_save(path, a, NULL, NULL), NB_STATUS_IO);
    snprintf(msg, sizeof msg, "%s: cannot rename %s.tmp-%ld into place: ", path, path,
             (long)getpid());
    ck_assert_msg(strncmp(nb_last_error(), msg, strlen(msg)) == 0, "got: %s", nb_last_error());
    ck_assert(!tmp_left(path));
    free(sa);
    nb_model_free(a);
    nb_model_free(b);
    ck_assert_int_eq(open_handles(), 0);
}
END_TEST

START_TEST(test_list) {
    char path[512];
    tmp_file(path, sizeof path, "list.h5");
    nb_model *m = build("smallcnn", 1);
    nb_optimizer *opt = trained_opt(m, NB_OPTIM_SGD, 0.9f, 1, 5);
    ck_assert_int_eq(nb_checkpoint_save(path, m, opt, NULL), NB_OK);
    nb_ckpt_tensor *v;
    int n;
    ck_assert_int_eq(nb_checkpoint_list(path, &v, &n), NB_OK);
    /* smallcnn: 3 x (conv weight + 5 bn entries) + fc weight, bias; 1 state */
    ck_assert_int_eq(n, 3 * 6 + 2 + 1);
    ck_assert_int_eq(n, m->n_entries + 1);
    for (int i = 1; i < n; i++)
        ck_assert_msg(strcmp(v[i - 1].name, v[i].name) < 0, "%s before %s", v[i - 1].name, v[i].name);
    for (int i = 0; i < n; i++) ck_assert_str_eq(v[i].dtype, "float32");
    ck_assert_str_eq(v[0].name, "model/fc.bias");
    ck_assert_int_eq(v[0].ndim, 1);
    ck_assert_int_eq(v[0].shape[0], 10);
    ck_assert_str_eq(v[1].name, "model/fc.weight");
    ck_assert_int_eq(v[1].ndim, 2);
    ck_assert_int_eq(v[1].shape[0], 10);
    ck_assert_int_eq(v[1].shape[1], 16);
    ck_assert_str_eq(v[2].name, "model/features.0.bn.bias");
    ck_assert_str_eq(v[4].name, "model/features.0.bn.running_mean");
    ck_assert_str_eq(v[3].name, "model/features.0.bn.num_batches_tracked");
    ck_assert_int_eq(v[3].ndim, 0);
    ck_assert_str_eq(v[7].name, "model/features.0.conv.weight");
    ck_assert_int_eq(v[7].ndim, 4);
    ck_assert(v[7].shape[0] == 4 && v[7].shape[1] == 3 && v[7].shape[2] == 3 && v[7].shape[3] == 3);
    ck_assert_str_eq(v[n - 1].name, "optim/momentum_buffer");
    ck_assert_int_eq(v[n - 1].ndim, 1);
    ck_assert_int_eq(v[n - 1].shape[0], (long)m->n_param_floats);
    nb_free(v);
    nb_optimizer_free(opt);
    nb_model_free(m);
    ck_assert_int_eq(open_handles(), 0);
}
END_TEST

/* --------------------------------------------------- PyTorch interop */

static const char torch_script[] =
    "import sys\n"
    "import h5py, numpy as np, torch, torch.nn as nn, torch.nn.functional as F\n"
    "torch.set_num_threads(1)\n"
    "class Block(nn.Module):\n"
    "    def __init__(self, cin, cout, stride):\n"
    "        super().__init__()\n"
    "        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)\n"
    "        self.bn1 = nn.BatchNorm2d(cout)\n"
    "        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)\n"
    "        self.bn2 = nn.BatchNorm2d(cout)\n"
    "        self.stride, self.pad = stride, cout - cin\n"
    "    def forward(self, x):\n"
    "        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))\n"
    "        sc = x\n"
    "        if self.stride != 1 or self.pad:\n"
    "            sc = F.pad(x[:, :, ::self.stride, ::self.stride],\n"
    "                       (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))\n"
    "        return F.relu(out + sc)\n"
    "class ResNet20(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)\n"
    "        self.bn1 = nn.BatchNorm2d(16)\n"
    "        cin = 16\n"
    "        for s, w in enumerate([16, 32, 64]):\n"
    "            blocks = []\n"
    "            for i in range(3):\n"
    "                blocks.append(Block(cin, w, 2 if s > 0 and i == 0 else 1))\n"
    "                cin = w\n"
    "            setattr(self, 'layer%d' % (s + 1), nn.Sequential(*blocks))\n"
    "        self.fc = nn.Linear(64, 10)\n"
    "    def forward(self, x):\n"
    "        x = F.relu(self.bn1(self.conv1(x)))\n"
    "        x = self.layer3(self.layer2(self.layer1(x)))\n"
    "        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))\n"
    "net = ResNet20()\n"
    "with h5py.File(sys.argv[1], 'r') as f:\n"
    "    sd = {k: torch.from_numpy(np.array(v)) for k, v in f['model'].items()}\n"
    "net.load_state_dict(sd, strict=True)\n"
    "net.eval()\n"
    "with h5py.File(sys.argv[2], 'r') as f:\n"
    "    x = torch.from_numpy(np.array(f['x']))\n"
    "with torch.no_grad():\n"
    "    y = net(x)\n"
    "with h5py.File(sys.argv[3], 'w') as f:\n"
    "    f['logits'] = y.numpy()\n";

START_TEST(test_torch_loads_checkpoint) {
    if (nb_test_sh("/usr/bin/python3 -c 'import h5py, torch' 2>/dev/null", NULL, 0) != 0) {
        nb_test_skip("checkpoint into torch", "/usr/bin/python3 cannot import h5py and torch");
        return;
    }
    nb_set_threads(2);
    char ck[512], xin[512], out[512], py[512];
    tmp_file(ck, sizeof ck, "torch_ck.h5");
    tmp_file(xin, sizeof xin, "torch_x.h5");
    tmp_file(out, sizeof out, "torch_logits.h5");
    tmp_file(py, sizeof py, "load_ck.py");
    nb_model *m = build("resnet20", 3);
    nb_rng r;
    nb_rng_seed(&r, 17, 0);
    /* non-trivial batchnorm parameters and statistics, so they matter */
    for (int i = 0; i < m->n_entries; i++) {
        nb_entry *e = &m->entries[i];
        if (!strstr(e->name, "bn")) continue;
        if (strstr(e->name, "running_var") || strstr(e->name, ".weight"))
            nb_tensor_fill_uniform(e->t, &r, 0.5f, 1.5f);
        else if (strstr(e->name, "num_batches"))
            e->t->data[0] = 7.0f;
        else
            nb_tensor_fill_uniform(e->t, &r, -0.2f, 0.2f);
    }
    ck_assert_int_eq(nb_checkpoint_save(ck, m, NULL, NULL), NB_OK);

    nb_tensor *x = nb_tensor_new(4, (int[]){2, 3, 32, 32});
    nb_tensor_fill_normal(x, &r, 0.0f, 1.0f);
    hid_t f = H5Fcreate(xin, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    put_dataset(f, "x", H5T_IEEE_F32LE, 4, (hsize_t[]){2, 3, 32, 32});
    hid_t d = H5Dopen2(f, "x", H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x->data);
    H5Dclose(d);
    H5Fclose(f);
    write_bytes(py, torch_script, sizeof torch_script - 1);

    char cmd[4096], log[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %s %s 2>&1", py, ck, xin, out);
    int rc = nb_test_sh(cmd, log, sizeof log);
    ck_assert_msg(rc == 0, "python failed (%d): %s", rc, log);

    nb_model_train(m, 0);
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_tensor *y = nb_model_forward(m, t, x);
    ck_assert_int_eq(y->numel, 20);
    float ref[20];
    f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert(f >= 0);
    d = H5Dopen2(f, "logits", H5P_DEFAULT);
    ck_assert(d >= 0);
    hid_t sp = H5Dget_space(d);
    ck_assert_int_eq(H5Sget_simple_extent_npoints(sp), 20);
    ck_assert(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, ref) >= 0);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    double maxref = 0, maxdiff = 0;
    for (int i = 0; i < 20; i++) {
        maxref = fmax(maxref, fabs(ref[i]));
        maxdiff = fmax(maxdiff, fabs((double)y->data[i] - ref[i]));
    }
    ck_assert_msg(maxdiff / maxref < 1e-4, "max |nibble - torch| / max |torch| = %.3g",
                  maxdiff / maxref);
    nb_tape_free(t);
    nb_tensor_free(x);
    nb_model_free(m);
}
END_TEST

static Suite *checkpoint_suite(void) {
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("checkpoint");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_roundtrip_resnet20);
    tcase_add_test(tc, test_meta_roundtrip);
    tcase_add_loop_test(tc, test_optim_roundtrip, 0, 3);
    tcase_add_test(tc, test_optim_mismatch);
    tcase_add_test(tc, test_strict_and_non_strict);
    tcase_add_test(tc, test_other_architecture);
    tcase_add_test(tc, test_corrupt_inputs);
    tcase_add_test(tc, test_alloc_failures);
    tcase_add_test(tc, test_atomic_save);
    tcase_add_test(tc, test_list);
    tcase_add_test(tc, test_torch_loads_checkpoint);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(checkpoint_suite()); }
