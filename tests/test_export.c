/* Export (quant/nb_export.h): the models' node lists; the IR's codes give
 * back the fake-quant weights and inputs bit for bit (compared with the
 * hooks the model's own forward calls); the packed file round-trips every
 * field exactly; corrupt, truncated and hand-edited files are refused with
 * a message naming the layer and field; the CLI's export and inspect. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nb_export.h"
#include "nb_test.h"

/* ------------------------------------------------------------------ graph */

static int count_op(const nb_gnode *g, int n, nb_gop op) {
    int k = 0;
    for (int i = 0; i < n; i++) k += g[i].op == op;
    return k;
}

START_TEST(test_graph) {
    nb_gnode g[128];
    nb_model *m = nb_test_export_model("resnet20", NB_SHORTCUT_A, NULL, 0);
    int n = nb_model_graph(m, g, 128);
    ck_assert_int_gt(n, 0);
    ck_assert(g[0].op == NB_G_INPUT && g[n - 1].op == NB_G_LINEAR && g[n - 2].op == NB_G_GAP);
    ck_assert_int_eq(count_op(g, n, NB_G_CONV), 19);
    ck_assert_int_eq(count_op(g, n, NB_G_ADD), 9);
    ck_assert_int_eq(count_op(g, n, NB_G_SHORTCUT_PAD), 2);
    for (int i = 1; i < n; i++) { /* inputs come before their users */
        ck_assert(g[i].a >= 0 && g[i].a < i && g[i].b < i);
        if (g[i].op == NB_G_SHORTCUT_PAD) ck_assert(g[i].stride == 2 && (g[i].out_c == 32 || g[i].out_c == 64));
    }
    /* every conv/linear module appears once */
    int seen = 0;
    for (int k = 0; k < m->n_modules; k++)
        for (int i = 0; i < n; i++) seen += g[i].mod == m->modules[k];
    ck_assert_int_eq(seen, 20);
    ck_assert_int_eq(nb_model_graph(m, g, 10), -1);
    ck_assert_msg(strstr(nb_last_error(), "room for 10"), "%s", nb_last_error());
    nb_model_free(m);
    m = nb_test_export_model("resnet20", NB_SHORTCUT_B, NULL, 0);
    n = nb_model_graph(m, g, 128);
    ck_assert_int_eq(count_op(g, n, NB_G_CONV), 21);
    ck_assert_int_eq(count_op(g, n, NB_G_SHORTCUT_PAD), 0);
    nb_model_free(m);
    m = nb_test_export_model("smallcnn", 0, NULL, 0);
    n = nb_model_graph(m, g, 128);
    ck_assert_int_eq(count_op(g, n, NB_G_MAXPOOL), 2);
    ck_assert(g[3].op == NB_G_MAXPOOL && g[3].k == 2 && g[3].stride == 2 && g[3].pad == 0);
    nb_model_free(m);
}
END_TEST

/* ------------------------------------------------------------- the cases */

typedef nb_test_qcase xcase;

static const xcase cases[] = {
    {"lsq w4a4", "smallcnn", NB_SHORTCUT_A, "lsq", "tensor", 4, 0, "lsq", 4, 1, 0, 2},
    {"lsq w2a2 resnet20", "resnet20", NB_SHORTCUT_A, "lsq", "channel", 2, 0, "lsq", 2, 1, 0, 1},
    {"ptq w8a8 channel folded", "smallcnn", NB_SHORTCUT_A, "uniform", "channel", 8, 0, "uniform", 8, 1, 1, 0},
    {"ptq w4a8 asym act", "smallcnn", NB_SHORTCUT_A, "uniform", "tensor", 4, 0, "uniform", 8, 0, 0, 0},
    {"uniform w4 group 16", "smallcnn", NB_SHORTCUT_A, "uniform", "group", 4, 16, "uniform", 4, 1, 0, 0},
    {"adq w3 tensor", "smallcnn", NB_SHORTCUT_A, "adq", "tensor", 3, 0, "lsq", 4, 1, 0, 2},
    {"adq w2 channel n2uq", "smallcnn", NB_SHORTCUT_A, "adq", "channel", 2, 0, "n2uq", 3, 1, 0, 2},
    {"ternary", "smallcnn", NB_SHORTCUT_A, "ternary", "channel", 2, 0, "lsq", 4, 1, 0, 1},
    {"binary", "smallcnn", NB_SHORTCUT_A, "binary", "channel", 2, 0, "pact", 4, 1, 0, 1},
    {"lsq+ act", "smallcnn", NB_SHORTCUT_A, "lsq", "tensor", 4, 0, "lsq+", 4, 1, 0, 1},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

static nb_model *case_model(const xcase *c) { return nb_test_qcase_model(c); }

static nb_module *module_named(nb_model *m, const char *name) {
    for (int i = 0; i < m->n_modules; i++)
        if (!strcmp(m->modules[i]->name, name)) return m->modules[i];
    ck_abort_msg("no module %s", name);
    return NULL;
}

static int same_bits(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof(float)); }

/* The IR's weights and input quantizer against the hooks the forward calls. */
START_TEST(test_build_exact) {
    const xcase *c = &cases[_i];
    nb_model *m = case_model(c);
    nb_xmodel *x = NULL;
    ck_assert_msg(nb_export_build(m, &x) == NB_OK, "%s: %s", c->name, nb_last_error());
    nb_tape *t = nb_tape_new();
    nb_tape_set_grad(t, 0);
    nb_rng r;
    nb_rng_seed(&r, 5, 0);
    int quantized = 0;
    for (int i = 0; i < x->n_layers; i++) {
        const nb_xlayer *l = &x->layers[i];
        nb_module *mod = module_named(m, l->name);
        nb_tensor *w = nb_module_weight(mod);
        float *got = malloc(l->numel * sizeof(float));
        nb_xlayer_weights(l, got);
        const nb_tensor *want = mod->weight_hook.fn ? mod->weight_hook.fn(mod->weight_hook.state, t, w, NB_PASS_EVAL) : w;
        ck_assert_msg(same_bits(got, want->data, l->numel), "%s: %s weights differ", c->name, l->name);
        quantized += l->wkind != NB_XW_FLOAT;
        if (l->wkind == NB_XW_UNIFORM)
            for (size_t e = 0; e < l->numel; e++) ck_assert(l->codes[e] >= l->qmin && l->codes[e] <= l->qmax);
        if (l->wkind == NB_XW_CODEBOOK)
            for (size_t e = 0; e < l->numel; e++) ck_assert(l->codes[e] >= 0 && l->codes[e] < l->ncodes);
        /* inputs: values across and beyond the grid, ties included */
        nb_tensor *in = nb_tensor_new(4, (int[]){2, l->ic, 4, 4});
        for (size_t k = 0; k < in->numel; k++) {
            const float s = l->ascale > 0.0f ? l->ascale : 1.0f;
            in->data[k] = k % 7 == 0 ? s * ((float)(int)(k % 40) - 20.0f + 0.5f) : 3.0f * s * nb_rng_normal(&r) * 8.0f;
            if (mod->input_nonneg && in->data[k] < 0.0f) in->data[k] = -in->data[k];
        }
        const nb_tensor *aq = mod->input_hook.fn ? mod->input_hook.fn(mod->input_hook.state, t, in, NB_PASS_EVAL) : in;
        nb_xlayer_quant_input(l, in->data, in->numel);
        ck_assert_msg(same_bits(in->data, aq->data, in->numel), "%s: %s inputs differ", c->name, l->name);
        /* the folded batchnorm */
        const nb_bn_module *bn = (const nb_bn_module *)mod->bn;
        for (int o = 0; o < l->oc && bn; o++) {
            const double k = bn->weight->data[o] / sqrt((double)bn->running_var->data[o] + bn->eps);
            ck_assert(fabs(l->mul[o] - k) <= 1e-6 * fabs(k));
        }
        nb_tape_reset(t);
        nb_tensor_free(in);
        free(got);
    }
    ck_assert_int_eq(quantized, x->n_layers);
    nb_tape_free(t);
    nb_xmodel_free(x);
    nb_model_free(m);
}
END_TEST

/* -------------------------------------------------------------- round trip */

static void same_layer(const nb_xlayer *a, const nb_xlayer *b) {
    ck_assert_str_eq(a->name, b->name);
    ck_assert(a->is_conv == b->is_conv && a->oc == b->oc && a->ic == b->ic && a->kh == b->kh && a->kw == b->kw);
    ck_assert(a->stride == b->stride && a->pad == b->pad && a->numel == b->numel);
    ck_assert(a->wkind == b->wkind && a->wbits == b->wbits);
    ck_assert_str_eq(a->wmethod, b->wmethod);
    ck_assert_str_eq(a->amethod, b->amethod);
    if (a->wkind != NB_XW_FLOAT) ck_assert(!memcmp(a->codes, b->codes, a->numel * sizeof(int32_t)));
    if (a->wkind == NB_XW_UNIFORM) {
        ck_assert(a->qmin == b->qmin && a->qmax == b->qmax && a->n_scales == b->n_scales && a->gran == b->gran);
        ck_assert(a->L.rows == b->L.rows && a->L.K == b->L.K && a->L.G == b->L.G);
        ck_assert(same_bits(a->scale, b->scale, (size_t)a->n_scales));
        ck_assert(!memcmp(a->zero_point, b->zero_point, (size_t)a->n_scales * sizeof(int32_t)));
    }
    if (a->wkind == NB_XW_CODEBOOK) {
        ck_assert(a->cb_rows == b->cb_rows && a->ncodes == b->ncodes && a->alpha == b->alpha);
        ck_assert(same_bits(a->codebook, b->codebook, (size_t)a->cb_rows * (size_t)a->ncodes));
    }
    ck_assert(same_bits(a->mul, b->mul, (size_t)a->oc) && same_bits(a->bias, b->bias, (size_t)a->oc));
    ck_assert(a->akind == b->akind && a->abits == b->abits && a->aqmin == b->aqmin && a->aqmax == b->aqmax);
    ck_assert(a->ascale == b->ascale && a->azero == b->azero && a->aoffset == b->aoffset && a->n_thr == b->n_thr);
    if (a->n_thr) ck_assert(same_bits(a->thr, b->thr, (size_t)a->n_thr));
}

START_TEST(test_packed_round_trip) {
    const xcase *c = &cases[_i];
    nb_model *m = case_model(c);
    nb_xmodel *x = NULL, *y = NULL;
    ck_assert_msg(nb_export_build(m, &x) == NB_OK, "%s", nb_last_error());
    x->n_norm = 3;
    for (int k = 0; k < 3; k++) x->mean[k] = 0.4f + 0.01f * (float)k, x->std[k] = 0.25f;
    x->config_json = strdup("{\"name\": \"t\"}");
    const char *path = nb_test_tmp_path("rt.nq.h5");
    ck_assert_msg(nb_export_write_packed(x, path) == NB_OK, "%s", nb_last_error());
    ck_assert(nb_export_is_packed(path));
    ck_assert_msg(nb_export_read_packed(path, &y) == NB_OK, "%s: %s", c->name, nb_last_error());
    ck_assert_str_eq(x->arch, y->arch);
    ck_assert(x->n_layers == y->n_layers && x->n_nodes == y->n_nodes && y->n_norm == 3);
    ck_assert(y->mean[2] == x->mean[2] && y->std[0] == x->std[0]);
    ck_assert_str_eq(y->config_json, "{\"name\": \"t\"}");
    for (int i = 0; i < x->n_nodes; i++) ck_assert(!memcmp(&x->nodes[i], &y->nodes[i], sizeof x->nodes[i]));
    for (int i = 0; i < x->n_layers; i++) same_layer(&x->layers[i], &y->layers[i]);
    /* a 2-bit layer takes 2 bits a weight */
    for (int i = 0; i < y->n_layers; i++)
        if (y->layers[i].wbits == 2) ck_assert_uint_eq(nb_xlayer_code_bytes(&y->layers[i]), (y->layers[i].numel + 3) / 4);
    nb_xmodel_free(x);
    nb_xmodel_free(y);
    nb_model_free(m);
}
END_TEST

/* ------------------------------------------------------------ corrupt files */

/* The layers attribute of path, as text (caller frees). */
static char *read_layers(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t a = H5Aopen(f, "layers", H5P_DEFAULT), t = H5Aget_type(a);
    char *v = NULL;
    ck_assert(H5Aread(a, t, &v) >= 0);
    char *copy = strdup(v);
    H5free_memory(v);
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(f);
    return copy;
}

static void write_string_attr(const char *path, const char *name, const char *text) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(f >= 0);
    H5Adelete(f, name);
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(H5Awrite(a, t, &text) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
}

/* Replace the first occurrence of from (after the first occurrence of
 * after) in s by to; the result is malloc'ed. */
static char *edit(const char *s, const char *after, const char *from, const char *to) {
    const char *p = strstr(s, after);
    ck_assert_msg(p, "no %s", after);
    p = strstr(p, from);
    ck_assert_msg(p, "no %s after %s", from, after);
    char *o = malloc(strlen(s) + strlen(to) + 1);
    sprintf(o, "%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
    return o;
}

static void copy_file(const char *from, const char *to) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    ck_assert_int_eq(system(cmd), 0);
}

static void expect_refused(const char *path, const char *msg) {
    nb_xmodel *x = NULL;
    ck_assert_int_eq(nb_export_read_packed(path, &x), NB_STATUS_BAD_INPUT);
    ck_assert_ptr_null(x);
    ck_assert_msg(strstr(nb_last_error(), msg), "wanted \"%s\" in: %s", msg, nb_last_error());
}

START_TEST(test_packed_corrupt) {
    /* ADQ 3-bit symmetric: 7 codes in 3 bits, so index 7 is out of range */
    nb_model *m = case_model(&cases[5]);
    nb_xmodel *x = NULL;
    ck_assert(nb_export_build(m, &x) == NB_OK);
    const char *good = nb_test_tmp_path("good.nq.h5"), *bad = nb_test_tmp_path("bad.nq.h5");
    ck_assert(nb_export_write_packed(x, good) == NB_OK);
    char *layers = read_layers(good);
    struct {
        const char *after, *from, *to, *msg;
    } edits[] = {
        {"\"features.1.conv\"", "\"bits\":3", "\"bits\":2", "layer features.1.conv: weight.bits is 2, but 7 codes take 3 bits"},
        {"\"features.0.conv\"", "\"bits\":8", "\"bits\":7", "layer features.0.conv: weight.bits is 7, but the grid [-128, 127] takes 8 bits"},
        {"\"features.0.conv\"", "\"scale\":", "\"scalex\":", "layer features.0.conv: scale is missing"},
        {"\"features.1.conv\"", "\"shape\":[16,8,3,3]", "\"shape\":[16,8,3,2]", "layer features.1.conv: shape is not the architecture's (16, 8, 3, 3)"},
        {"\"features.1.conv\"", "\"kind\":\"codebook\"", "\"kind\":\"lut\"", "weight.kind must be float, uniform or codebook"},
        {"\"fc\"", "\"zero_point\":0", "\"zero_point\":300", "layer fc: zero_point must be an integer in"},
        {"\"name\":\"features.2.conv\"", "\"name\":\"features.2.conv\"", "\"name\":\"features.9.conv\"", "layer features.9.conv: the architecture has features.2.conv here"},
        {"\"fc\"", "\"mul\":[", "\"mul\":[9", "layer fc: mul: ["},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        copy_file(good, bad);
        char *e = edit(layers, edits[i].after, edits[i].from, edits[i].to);
        write_string_attr(bad, "layers", e);
        expect_refused(bad, edits[i].msg);
        free(e);
    }
    /* a code out of range: index 7 of a 7-code codebook, in features.1.conv's codes */
    copy_file(good, bad);
    {
        const char *p = strstr(layers, "\"features.1.conv\"");
        p = strstr(p, "\"codes\":[");
        long off = strtol(p + 9, NULL, 10);
        hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
        hid_t d = H5Dopen2(f, "codes", H5P_DEFAULT), fs = H5Dget_space(d);
        hsize_t start = (hsize_t)off, count = 1;
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
        hid_t ms = H5Screate_simple(1, &count, NULL);
        uint8_t v = 0xFF; /* codes 0 and 1 become 7, the low bit of code 2 set */
        ck_assert(H5Dwrite(d, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, &v) >= 0);
        H5Sclose(ms);
        H5Sclose(fs);
        H5Dclose(d);
        H5Fclose(f);
    }
    expect_refused(bad, "layer features.1.conv: weight code 0 is 7, beyond the range (at most 6)");
    /* a non-finite scale */
    copy_file(good, bad);
    {
        hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
        hid_t d = H5Dopen2(f, "floats", H5P_DEFAULT);
        hsize_t n = 0;
        hid_t fs = H5Dget_space(d);
        H5Sget_simple_extent_dims(fs, &n, NULL);
        float *v = malloc(n * sizeof(float));
        H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        v[0] = NAN; /* features.0.conv's first weight scale */
        H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        free(v);
        H5Sclose(fs);
        H5Dclose(d);
        H5Fclose(f);
    }
    expect_refused(bad, "layer features.0.conv: scale[0] is nan: must be finite and > 0");
    /* a missing blob, another format, a truncated file, not HDF5 at all */
    copy_file(good, bad);
    {
        hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
        H5Ldelete(f, "ints", H5P_DEFAULT);
        H5Fclose(f);
    }
    expect_refused(bad, "the dataset /ints is missing");
    copy_file(good, bad);
    write_string_attr(bad, "nb_format", "nibble-checkpoint");
    expect_refused(bad, "nb_format is \"nibble-checkpoint\", not a packed export");
    copy_file(good, bad);
    write_string_attr(bad, "model", "{\"arch\": \"resnet99\"}");
    expect_refused(bad, "model");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "head -c 3000 '%s' > '%s'", good, bad);
    ck_assert_int_eq(system(cmd), 0);
    expect_refused(bad, bad);
    snprintf(cmd, sizeof cmd, "echo hello > '%s'", bad);
    ck_assert_int_eq(system(cmd), 0);
    expect_refused(bad, "not an HDF5 file");
    /* the CLI: exit 2 and the message, the good file listed */
    const char *cli = nb_test_cli();
    if (cli) {
        char out[8192];
        snprintf(cmd, sizeof cmd, "'%s' inspect '%s' 2>&1", cli, bad);
        ck_assert_int_eq(nb_test_sh(cmd, out, sizeof out), 2);
        ck_assert_msg(strstr(out, "not an HDF5 file"), "%s", out);
        snprintf(cmd, sizeof cmd, "'%s' eval '%s' 2>&1", cli, bad);
        ck_assert_int_eq(nb_test_sh(cmd, out, sizeof out), 2);
        snprintf(cmd, sizeof cmd, "'%s' inspect '%s' 2>&1", cli, good);
        ck_assert_int_eq(nb_test_sh(cmd, out, sizeof out), 0);
        ck_assert_msg(strstr(out, "features.1.conv") && strstr(out, "adq 7 codes 3-bit tensor") && strstr(out, "smaller"),
                      "%s", out);
    }
    free(layers);
    nb_xmodel_free(x);
    nb_model_free(m);
}
END_TEST

START_TEST(test_write_errors) {
    nb_model *m = case_model(&cases[0]);
    nb_xmodel *x = NULL;
    ck_assert(nb_export_build(m, &x) == NB_OK);
    ck_assert_int_eq(nb_export_write_packed(x, "/nonexistent-dir/x.nq.h5"), NB_STATUS_IO);
    ck_assert_msg(strstr(nb_last_error(), "/nonexistent-dir/x.nq.h5"), "%s", nb_last_error());
    nb_xmodel_free(x);
    /* uncalibrated quantizers are refused */
    nb_model *u = nb_test_smallcnn();
    nb_quant_policy p;
    nb_quant_policy_default(&p);
    strcpy(p.weights.method, "uniform");
    strcpy(p.activations.method, "uniform");
    ck_assert(nb_quant_attach(u, &p) == NB_OK);
    ck_assert_int_eq(nb_export_build(u, &x), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "not calibrated"), "%s", nb_last_error());
    nb_model_free(u);
    nb_model_free(m);
}
END_TEST

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    Suite *s = suite_create("export");
    TCase *tc = tcase_create("export");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_graph);
    tcase_add_loop_test(tc, test_build_exact, 0, N_CASES);
    tcase_add_loop_test(tc, test_packed_round_trip, 0, N_CASES);
    tcase_add_test(tc, test_packed_corrupt);
    tcase_add_test(tc, test_write_errors);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
