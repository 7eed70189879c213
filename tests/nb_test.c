#define _XOPEN_SOURCE 700
#include "nb_test.h"

#include <ftw.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp_dir[256];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int nb_test_run(Suite *s) {
    nb_test_tmpdir(); /* made here, so forked tests share it and it is removed below */
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    /* Keep the temporary files of a failed run for a look; else tidy up. */
    if (tmp_dir[0] && failed == 0) nftw(tmp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? 0 : 1;
}

const char *nb_test_shared_data(const char *file) {
    static char path[4096];
    const char *dir = getenv("NB_SHARED_DATA");
    if (!dir) dir = "../shared/data";
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return access(path, R_OK) == 0 ? path : NULL;
}

const char *nb_test_cli(void) {
    const char *p = getenv("NB_CLI");
    return p && access(p, X_OK) == 0 ? p : NULL;
}

const char *nb_test_tmpdir(void) {
    char *dir = tmp_dir;
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof tmp_dir, "%s/nibble-test-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
    }
    return dir;
}

const char *nb_test_tmp_path(const char *name) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", nb_test_tmpdir(), name);
    return b;
}

void nb_test_skip(const char *what, const char *why) {
    printf("SKIP %s: %s\n", what, why);
    fflush(stdout);
}

int nb_test_sh(const char *cmd, char *out, size_t n) {
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    size_t len = 0;
    char buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, f)) > 0) {
        if (out && len + 1 < n) {
            size_t c = r < n - 1 - len ? r : n - 1 - len;
            memcpy(out + len, buf, c);
            len += c;
        }
    }
    if (out && n) out[len] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

nb_model *nb_test_smallcnn(void) {
    nb_model_opts o = nb_model_opts_default();
    o.num_classes = 10;
    o.width = 8;
    nb_rng r;
    nb_rng_seed(&r, 11, 0);
    nb_model *m = nb_model_build("smallcnn", &o, &r);
    ck_assert_ptr_nonnull(m);
    return m;
}

nb_quantizer *nb_test_quantizer(nb_model *m, const char *name) {
    int n;
    nb_quantizer *q = nb_quant_list(m, &n);
    for (int i = 0; i < n; i++)
        if (!strcmp(q[i].name, name)) return &q[i];
    ck_abort_msg("no quantizer %s", name);
    return NULL;
}

nb_model *nb_test_export_model(const char *arch, int shortcut, const nb_quant_policy *p, int steps) {
    nb_model_opts o = nb_model_opts_default();
    o.num_classes = 10;
    o.width = 8;
    o.shortcut = (nb_shortcut)shortcut;
    nb_rng r;
    nb_rng_seed(&r, 11, 0);
    nb_model *m = nb_model_build(arch, &o, &r);
    ck_assert_msg(m != NULL, "%s", nb_last_error());
    for (int i = 0; i < m->n_modules; i++) {
        if (m->modules[i]->type != NB_MOD_BATCHNORM2D) continue;
        nb_bn_module *bn = (nb_bn_module *)m->modules[i];
        for (size_t c = 0; c < bn->weight->numel; c++) {
            bn->weight->data[c] = 0.6f + 0.8f * nb_rng_uniform(&r);
            bn->bias->data[c] = 0.2f * nb_rng_normal(&r);
            bn->running_mean->data[c] = 0.1f * nb_rng_normal(&r);
            bn->running_var->data[c] = 0.5f + nb_rng_uniform(&r);
        }
    }
    if (p) {
        if (p->fold_bn) nb_quant_fold_bn(m);
        ck_assert_msg(nb_quant_attach(m, p) == NB_OK, "%s", nb_last_error());
    }
    nb_tensor *x = nb_tensor_new(4, (int[]){8, 3, 32, 32});
    nb_tape *t = nb_tape_new();
    ck_assert(x && t);
    const int32_t y[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int b = 0; b < 2 && p; b++) {
        for (size_t i = 0; i < x->numel; i++) x->data[i] = nb_rng_normal(&r);
        nb_tape_set_grad(t, 0);
        nb_model_set_pass(m, NB_PASS_CALIBRATE);
        nb_model_forward(m, t, x);
        nb_tape_reset(t);
    }
    if (p) ck_assert_msg(nb_quant_calibrate_finish(m) == NB_OK, "%s", nb_last_error());
    nb_tape_set_grad(t, 1);
    nb_model_train(m, 1);
    m->bn_frozen = 1; /* keep the random running statistics */
    for (int s = 0; s < steps; s++) {
        nb_model_zero_grad(m);
        nb_tensor *l = nb_cross_entropy(t, nb_model_forward(m, t, x), y, 0.0f);
        ck_assert_int_eq(nb_backward(t, l), NB_OK);
        for (size_t i = 0; i < m->n_param_floats; i++) m->param_data[i] -= 0.05f * m->param_grad[i];
        if (m->quant) {
            nb_model_ext *q = m->quant;
            for (size_t i = 0; i < q->n_param_floats; i++) q->param_data[i] -= 0.01f * q->param_grad[i];
            if (q->after_step) ck_assert_msg(q->after_step(q->owner) == NB_OK, "%s", nb_last_error());
        }
        nb_tape_reset(t);
    }
    m->bn_frozen = 0;
    nb_model_train(m, 0);
    nb_tape_free(t);
    nb_tensor_free(x);
    return m;
}

void nb_test_qcase_policy(const nb_test_qcase *c, nb_quant_policy *p) {
    nb_quant_policy_default(p);
    strcpy(p->weights.method, c->wmethod);
    strcpy(p->weights.granularity, c->wgran);
    p->weights.bits = c->wbits;
    if (c->group) p->weights.group_size = c->group;
    strcpy(p->activations.method, c->amethod);
    p->activations.bits = c->abits;
    p->activations.symmetric = c->asym;
    p->fold_bn = c->fold;
}

nb_model *nb_test_qcase_model(const nb_test_qcase *c) {
    if (!strcmp(c->wmethod, "none")) return nb_test_export_model(c->arch, c->shortcut, NULL, c->steps);
    nb_quant_policy p;
    nb_test_qcase_policy(c, &p);
    return nb_test_export_model(c->arch, c->shortcut, &p, c->steps);
}
