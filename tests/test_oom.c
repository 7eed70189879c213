/* Out of memory (issue 13): the n-th allocation failing, for every n, in a
 * model build, a checkpoint save and load, a config load and a whole resumed
 * training run (setup, steps with their tape, evaluation, checkpoints):
 * NB_STATUS_OOM with a message naming what could not be allocated, never an
 * abort, no leak (LeakSanitizer in the NB_SANITIZE build), and the published
 * last.h5 still loads. Then the CLI under `ulimit -v`: exit 2 with a hint. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nb_test.h"

static const char *cfg_json =
    "{\"name\": \"oom\", \"seed\": 3, \"threads\": 2,\n"
    " \"data\": {\"path\": \"synthetic:shapes10\", \"train_count\": 40, \"test_count\": 20,\n"
    "          \"augment\": false, \"prefetch\": 0},\n"
    " \"model\": {\"arch\": \"smallcnn\", \"width\": 4},\n"
    " \"train\": {\"epochs\": 1, \"batch_size\": 20,\n"
    "   \"optimizer\": {\"name\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9}}}\n";

static const char *tmp_path(const char *name) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", nb_test_tmpdir(), name);
    return b;
}

static const char *write_cfg(void) {
    const char *p = tmp_path("oom.json");
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(cfg_json, f);
    fclose(f);
    return p;
}

static int tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp-") != NULL;
    closedir(d);
    return n;
}

/* An out-of-memory status must carry a message saying so. */
static void check_oom(nb_status st, long k, const char *what) {
    ck_assert_msg(st == NB_OK || st == NB_STATUS_OOM, "%s, allocation %ld failing: %s: %s", what, k,
                  nb_status_name(st), nb_last_error());
    if (st == NB_STATUS_OOM)
        ck_assert_msg(strstr(nb_last_error(), "out of memory") || strstr(nb_last_error(), "overflows"),
                      "%s, allocation %ld failing: message '%s'", what, k, nb_last_error());
}

START_TEST(test_build_every_allocation) {
    static const char *const archs[] = {"smallcnn", "resnet20"};
    nb_log_set_level(NB_LOG_WARN);
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++) {
        long k = 1;
        for (;; k++) {
            nb_rng r;
            nb_rng_seed(&r, 1, 0);
            nb_model_opts o = nb_model_opts_default();
            nb_clear_error();
            nb_alloc_fail_after(k);
            nb_model *m = nb_model_build(archs[a], &o, &r);
            nb_alloc_fail_after(0);
            if (m) {
                nb_model_free(m);
                break;
            }
            check_oom(NB_STATUS_OOM, k, archs[a]);
        }
        ck_assert_int_gt(k, 20);
    }
}
END_TEST

START_TEST(test_checkpoint_and_config_every_allocation) {
    nb_log_set_level(NB_LOG_WARN);
    nb_config c;
    ck_assert_int_eq(nb_config_load(write_cfg(), NULL, 0, &c), NB_OK);
    nb_rng r;
    nb_rng_seed(&r, 1, 0);
    nb_model *m = nb_config_build_model(&c, 3, 32, 10, &r);
    ck_assert_ptr_nonnull(m);
    nb_optim_opts oo = nb_optim_opts_default();
    nb_optimizer *opt = nb_optimizer_new(&oo);
    ck_assert_int_ge(nb_optimizer_add_group(opt, "all", 1.0f, 0.0f), 0);
    ck_assert_int_eq(nb_optimizer_add_segment(opt, 0, m->param_data, m->param_grad, m->n_param_floats), NB_OK);
    char *json = nb_config_to_json(&c);
    nb_ckpt_meta meta = {.epoch = 1, .step = 2, .best_top1 = 0.5, .config_json = json};
    const char *path = tmp_path("ck.h5");
    ck_assert_int_eq(nb_checkpoint_save(path, m, opt, &meta), NB_OK);
    long k;
    /* save over a published file: it stays as it was */
    meta.epoch = 2;
    for (k = 1;; k++) {
        nb_alloc_fail_after(k);
        nb_status st = nb_checkpoint_save(path, m, opt, &meta);
        nb_alloc_fail_after(0);
        check_oom(st, k, "save");
        nb_ckpt_meta back;
        ck_assert_msg(nb_checkpoint_load_state(path, NULL, &back) == NB_OK, "%s", nb_last_error());
        nb_free((void *)back.config_json);
        ck_assert_int_eq(back.epoch, st == NB_OK ? 2 : 1);
        ck_assert_int_eq(tmp_files(nb_test_tmpdir()), 0);
        if (st == NB_OK) break;
    }
    for (k = 1;; k++) {
        nb_alloc_fail_after(k);
        nb_status st = nb_checkpoint_load_model(path, m, 1);
        nb_alloc_fail_after(0);
        check_oom(st, k, "load_model");
        if (st == NB_OK) break;
    }
    for (k = 1;; k++) {
        nb_ckpt_meta back = {0};
        nb_alloc_fail_after(k);
        nb_status st = nb_checkpoint_load_state(path, opt, &back);
        nb_alloc_fail_after(0);
        check_oom(st, k, "load_state");
        if (st == NB_OK) {
            nb_free((void *)back.config_json);
            break;
        }
    }
    for (k = 1;; k++) {
        nb_config back;
        nb_alloc_fail_after(k);
        nb_status st = nb_config_from_checkpoint(path, NULL, 0, &back);
        nb_alloc_fail_after(0);
        check_oom(st, k, "config_from_checkpoint");
        if (st == NB_OK) break;
    }
    for (k = 1;; k++) {
        nb_ckpt_tensor *ts = NULL;
        int n = 0;
        nb_alloc_fail_after(k);
        nb_status st = nb_checkpoint_list(path, &ts, &n);
        nb_alloc_fail_after(0);
        check_oom(st, k, "list");
        nb_free(ts);
        if (st == NB_OK) break;
    }
    const char *sets[] = {"train.epochs=3", "model.arch=\"resnet20\""};
    for (k = 1;; k++) {
        nb_config back;
        nb_alloc_fail_after(k);
        nb_status st = nb_config_load(write_cfg(), sets, 2, &back);
        nb_alloc_fail_after(0);
        check_oom(st, k, "config_load");
        if (st == NB_OK) break;
    }
    nb_free(json);
    nb_optimizer_free(opt);
    nb_model_free(m);
}
END_TEST

/* A resumed run (setup, 2 steps, evaluation, last.h5 and best.h5) with its
 * k-th allocation failing, for every k: the previous last.h5 is intact. */
START_TEST(test_resumed_run_every_allocation) {
    nb_log_set_level(NB_LOG_ERROR);
    nb_config c;
    char set[700], cmd[3000], last[800];
    const char *src = tmp_path("run-src"), *dir = tmp_path("run");
    snprintf(set, sizeof set, "output.dir=%s", src);
    const char *sets[] = {set};
    ck_assert_int_eq(nb_config_load(write_cfg(), sets, 1, &c), NB_OK);
    FILE *devnull = fopen("/dev/null", "w");
    nb_train_opts o = nb_train_opts_default();
    o.progress = devnull;
    nb_train_result res;
    ck_assert_msg(nb_train(&c, &o, &res) == NB_OK, "%s", nb_last_error());
    c.train.epochs = 2;
    o.resume_dir = dir;
    snprintf(last, sizeof last, "%s/last.h5", dir);
    long k, failures = 0;
    for (k = 1;; k++) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, src, dir);
        ck_assert_int_eq(nb_test_sh(cmd, NULL, 0), 0);
        nb_alloc_fail_after(k);
        nb_status st = nb_train(&c, &o, &res);
        nb_alloc_fail_after(0);
        check_oom(st, k, "resumed run");
        nb_ckpt_meta back;
        ck_assert_msg(nb_checkpoint_load_state(last, NULL, &back) == NB_OK, "k=%ld: %s", k, nb_last_error());
        nb_free((void *)back.config_json);
        ck_assert_int_eq(back.epoch, st == NB_OK ? 2 : back.epoch);
        ck_assert_int_eq(tmp_files(dir), 0);
        if (st == NB_OK) break;
        failures++;
    }
    printf("resumed run: %ld allocations, each failing in turn, gave a clean out-of-memory error\n", failures);
    ck_assert_int_gt(failures, 50);
    fclose(devnull);
}
END_TEST

/* The CLI under a virtual memory limit: ResNet-18 with the CIFAR stem at
 * batch 256 needs about 3 GB for its activations. */
START_TEST(test_cli_memory_limit) {
#if defined(__SANITIZE_ADDRESS__)
    nb_test_skip("train under ulimit -v", "AddressSanitizer reserves terabytes of address space");
    return;
#endif
    const char *bin = nb_test_cli();
    ck_assert_ptr_nonnull(bin);
    char cmd[4096], out[8192];
    snprintf(cmd, sizeof cmd,
             "ulimit -v 1500000; %s train %s --set model.arch=resnet18 --set model.stem=cifar "
             "--set model.width=16 --set train.batch_size=256 --set data.train_count=256 "
             "--set output.dir=%s/limit 2>&1",
             bin, write_cfg(), nb_test_tmpdir());
    int st = nb_test_sh(cmd, out, sizeof out);
    ck_assert_msg(st == 2, "exit %d: %s", st, out);
    ck_assert_msg(strstr(out, "nibble train: step 1 (epoch 1, batch 1): out of memory allocating ") &&
                      strstr(out, "HINT: lower train.batch_size (now 256)"),
                  "%s", out);
}
END_TEST

static Suite *oom_suite(void) {
    Suite *s = suite_create("oom");
    TCase *tc = tcase_create("oom");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_build_every_allocation);
    tcase_add_test(tc, test_checkpoint_and_config_every_allocation);
    tcase_add_test(tc, test_resumed_run_every_allocation);
    tcase_add_test(tc, test_cli_memory_limit);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(oom_suite()); }
