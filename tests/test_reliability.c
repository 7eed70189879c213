/* Reliability (issue 13): what hostile use found, kept away. Non-finite
 * weights in eval, data with another class count, SIGTERM/SIGHUP, the
 * last.h5/best.h5 pair after a stop between the two writes, temporary files
 * of killed writes, tampered checkpoint attributes, a finished run resumed,
 * damaged image folders, side effects of a failed start, and the smaller
 * messages, damaged image folders. Runs use a tiny smallcnn (4 steps an
 * epoch). */
#include <hdf5.h>
#include <jpeglib.h>
#include <png.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nb_test.h"
#include "nb_test_data.h"

/* smallcnn width 4 on shapes10: 200 train / 100 test images, batch 50 (4
 * steps an epoch), 2 epochs. */
static const char *base_json =
    "{\"name\": \"rel\", \"seed\": 3, \"threads\": 2,\n"
    " \"data\": {\"path\": \"synthetic:shapes10\", \"train_count\": 200, \"test_count\": 100,\n"
    "          \"augment\": false},\n"
    " \"model\": {\"arch\": \"smallcnn\", \"width\": 4},\n"
    " \"train\": {\"epochs\": 2, \"batch_size\": 50, \"log_every\": 1,\n"
    "   \"optimizer\": {\"name\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9}}}\n";

static char out[1 << 16];

static const char *tmp_path(const char *name) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", nb_test_tmpdir(), name);
    return b;
}

static int exists(const char *p) { return access(p, F_OK) == 0; }

static const char *write_base(void) {
    const char *path = tmp_path("rel.json");
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(base_json, f);
    fclose(f);
    return path;
}

/* The base config with output.dir = tmp/dir and an optional override. */
static void load_cfg(nb_config *c, const char *dir, const char *extra) {
    char set_dir[1100];
    snprintf(set_dir, sizeof set_dir, "output.dir=%s", tmp_path(dir));
    const char *sets[2] = {set_dir, extra};
    nb_log_set_level(NB_LOG_WARN);
    ck_assert_msg(nb_config_load(write_base(), sets, extra ? 2 : 1, c) == NB_OK, "%s", nb_last_error());
}

static nb_status train_dir(const char *dir, const char *extra, int resume, nb_train_result *r) {
    nb_config c;
    load_cfg(&c, dir, extra);
    nb_train_opts o = nb_train_opts_default();
    FILE *devnull = fopen("/dev/null", "w");
    o.progress = devnull;
    o.resume_dir = resume ? tmp_path(dir) : NULL;
    nb_status st = nb_train(&c, &o, r);
    fclose(devnull);
    return st;
}

static int cli(const char *args) {
    const char *bin = nb_test_cli();
    ck_assert_msg(bin != NULL, "NB_CLI is not set to the nibble binary");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin, args);
    return nb_test_sh(cmd, out, sizeof out);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* A scalar attribute of the root of path overwritten (int64 or float64). */
static void set_attr_i64(const char *path, const char *name, int64_t v) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(H5Awrite(a, H5T_NATIVE_INT64, &v), 0);
    H5Aclose(a);
    H5Fclose(f);
}

/* Every value of /model/NAME set to v. */
static void fill_dataset(const char *path, const char *name, float v) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    hid_t sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    float *buf = malloc(sizeof(float) * (size_t)n);
    for (hssize_t i = 0; i < n; i++) buf[i] = v;
    ck_assert_int_ge(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
    free(buf);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* One finished 2-epoch run in tmp/done, made once and copied by the tests
 * that change it (the tests of a suite run one after the other). */
static const char *done_run(void) {
    const char *dir = tmp_path("done");
    char last[1100];
    snprintf(last, sizeof last, "%s/last.h5", dir);
    if (!exists(last)) {
        nb_train_result r;
        nb_status st = train_dir("done", NULL, 0, &r);
        ck_assert_msg(st == NB_OK, "%s", nb_last_error());
    }
    return dir;
}

/* A copy of tmp/done as tmp/name. */
static const char *copy_run(const char *name) {
    const char *from = done_run(), *to = tmp_path(name);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", to, from, to);
    ck_assert_int_eq(nb_test_sh(cmd, NULL, 0), 0);
    return to;
}

/* ------------------------------------------------ 1: eval of NaN weights */

START_TEST(test_eval_nonfinite_weights) {
    const char *dir = copy_run("nonfinite");
    char ck[1100], a[2400];
    snprintf(ck, sizeof ck, "%s/last.h5", dir);
    snprintf(a, sizeof a, "eval %s --json", ck);
    ck_assert_msg(cli(a) == 0, "%s", out);
    ck_assert_msg(strstr(out, "\"nonfinite\": 0}"), "%s", out);
    fill_dataset(ck, "/model/fc.weight", NAN);
    ck_assert_msg(cli(a) == 1, "%s", out);
    ck_assert_msg(strstr(out, "{\"top1\": 0.000000, \"top5\": 0.000000, \"loss\": null, \"n\": 100, "
                              "\"nonfinite\": 100}") &&
                      strstr(out, "100 of 100 images gave NaN or Inf logits") && !strstr(out, "nan"),
                  "%s", out);
    snprintf(a, sizeof a, "eval %s", ck);
    ck_assert_msg(cli(a) == 1, "%s", out);
    ck_assert_msg(strstr(out, "top-1 0.00% top-5 0.00% loss NaN (100 images, 100 with NaN or Inf logits)"),
                  "%s", out);
    fill_dataset(ck, "/model/fc.weight", INFINITY);
    snprintf(a, sizeof a, "eval %s --json", ck);
    ck_assert_msg(cli(a) == 1 && strstr(out, "\"loss\": null") && !strstr(out, "inf"), "%s", out);
}
END_TEST

/* ------------------------------------- 9: eval --data, another class count */

START_TEST(test_eval_other_class_count) {
    const char *dir = done_run();
    nb_fixture f = nb_fixture_default();
    f.classes = 3;
    f.H = f.W = 32;
    const char *data = tmp_path("three.h5");
    ck_assert_int_eq(nb_fixture_write(data, &f), 0);
    char a[2400];
    snprintf(a, sizeof a, "eval %s/last.h5 --data %s", dir, data);
    ck_assert_int_eq(cli(a), 2);
    ck_assert_msg(strstr(out, "three.h5 has 3 classes, the model in ") &&
                      strstr(out, "last.h5 has 10") && count_lines(out) == 1,
                  "%s", out);
}
END_TEST

/* --------------------------------------------------- 5: SIGTERM, SIGHUP */

/* nibble train in the background, signalled after its 3rd step. */
static void signal_run(const char *name, int sig, int want_status) {
    const char *cfg = write_base(), *bin = nb_test_cli(), *dir = tmp_path(name);
    ck_assert_ptr_nonnull(bin);
    char steps[1100], set_dir[1100], last[1100];
    snprintf(steps, sizeof steps, "%s/steps.csv", dir);
    snprintf(set_dir, sizeof set_dir, "output.dir=%s", dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execl(bin, bin, "train", cfg, "--set", "train.epochs=1000", "--set", set_dir, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1200; i++) {
        FILE *f = fopen(steps, "r");
        int lines = 0;
        if (f) {
            for (int ch; (ch = fgetc(f)) != EOF;) lines += ch == '\n';
            fclose(f);
        }
        if (lines >= 4) break;
        usleep(50000);
    }
    ck_assert_int_eq(kill(pid, sig), 0);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    ck_assert_int_eq(WEXITSTATUS(status), want_status);
    snprintf(last, sizeof last, "%s/last.h5", dir);
    nb_ckpt_meta meta;
    ck_assert_msg(nb_checkpoint_load_state(last, NULL, &meta) == NB_OK, "%s", nb_last_error());
    nb_free((void *)meta.config_json);
    ck_assert_int_ge(meta.step, 3);
}

START_TEST(test_sigterm_sighup_write_last) {
    signal_run("sigterm", SIGTERM, 143);
    signal_run("sighup", SIGHUP, 129);
    ck_assert_int_eq(cli("train --help"), 0);
    ck_assert_msg(strstr(out, "143") && strstr(out, "129") && strstr(out, "SIGTERM"), "%s", out);
}
END_TEST

/* -------------------------- 3: a stop between the last.h5 and best.h5 writes */

START_TEST(test_best_repaired_on_resume) {
    /* A directory in the way of best.h5's temporary file makes its write
     * fail right after last.h5's: the state a kill there leaves. */
    const char *dir = tmp_path("best");
    char block[1100], best[1100];
    mkdir(dir, 0755);
    snprintf(block, sizeof block, "%s/best.h5.tmp-%ld", dir, (long)getpid());
    snprintf(best, sizeof best, "%s/best.h5", dir);
    ck_assert_int_eq(mkdir(block, 0755), 0);
    nb_train_result r;
    ck_assert_int_eq(train_dir("best", "train.epochs=1", 0, &r), NB_STATUS_IO);
    ck_assert(!exists(best));
    rmdir(block);
    /* the run is complete (1 epoch): resuming repairs best.h5 all the same */
    ck_assert_msg(train_dir("best", "train.epochs=1", 1, &r) == NB_OK, "%s", nb_last_error());
    ck_assert_msg(exists(best), "no best.h5 after resume");
    nb_ckpt_meta m;
    ck_assert_msg(nb_checkpoint_load_state(best, NULL, &m) == NB_OK, "%s", nb_last_error());
    nb_free((void *)m.config_json);
    ck_assert_int_eq(m.epoch, 1);
    ck_assert_double_ge(m.best_top1, 0.0);
}
END_TEST

/* --------------------------------------- 6: temporary files of killed writes */

START_TEST(test_stale_temporary_files_removed) {
    const char *dir = copy_run("stale");
    const char *names[] = {"last.h5.tmp-999999", "best.h5.tmp-999998", "config.json.tmp-999997",
                           "metrics.csv.tmp-999996"};
    char p[1200], live[1200];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        FILE *f = fopen(p, "w");
        fputs("half a file", f);
        fclose(f);
    }
    /* a temporary file of a live process (this one) is not touched */
    snprintf(live, sizeof live, "%s/last.h5.tmp-%ld", dir, (long)getppid());
    fclose(fopen(live, "w"));
    nb_train_result r;
    ck_assert_msg(train_dir("stale", "train.epochs=3", 1, &r) == NB_OK, "%s", nb_last_error());
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        ck_assert_msg(!exists(p), "%s left", p);
    }
    ck_assert(exists(live));
    unlink(live);
}
END_TEST

/* ------------------------------------------ 7: tampered or odd checkpoints */

START_TEST(test_tampered_attributes) {
    struct {
        const char *attr;
        int64_t v;
        const char *msg;
    } cases[] = {
        {"epoch", -1, "attribute 'epoch' of the root is -1, expected 0 or more"},
        {"step", -5, "attribute 'step' of the root is -5, expected 0 or more"},
        {"step_in_epoch", 7, "step_in_epoch is 7, but an epoch of this run has 4 steps"},
        {"step_in_epoch", 999, "attribute 'step_in_epoch' of the root is 999, expected 0..8"},
        {"step_in_epoch", -2, "attribute 'step_in_epoch' of the root is -2, expected 0..8"},
        {"train_seen", -1, "attribute 'train_seen' of the root is -1, expected 0 or more"},
        {"train_correct", 1000, "attribute 'train_correct' of the root is 1000, expected 0..0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *dir = copy_run("tamper");
        char last[1100], cfg[1100];
        snprintf(last, sizeof last, "%s/last.h5", dir);
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        set_attr_i64(last, cases[i].attr, cases[i].v);
        /* config.json as the finished run wrote it: a failed start keeps it */
        char *before = nb_strdup(slurp(cfg));
        nb_train_result r;
        nb_status st = train_dir("tamper", "train.epochs=3", 1, &r);
        ck_assert_msg(st == NB_STATUS_BAD_INPUT, "%s: %s", cases[i].attr, nb_last_error());
        ck_assert_msg(strstr(nb_last_error(), cases[i].msg) && strstr(nb_last_error(), "last.h5"), "%s: %s",
                      cases[i].attr, nb_last_error());
        ck_assert_str_eq(slurp(cfg), before);
        nb_free(before);
    }
}
END_TEST

START_TEST(test_resume_finished_run) {
    const char *dir = copy_run("finished");
    char a[2400];
    snprintf(a, sizeof a, "train --resume %s", dir);
    ck_assert_msg(cli(a) == 0, "%s", out);
    ck_assert_msg(strstr(out, "this run is already complete (2 of 2 epochs") && !strstr(out, "0 images"),
                  "%s", out);
}
END_TEST

/* --------------------------------------------- 10: side effects of a failed start */

START_TEST(test_failed_start_leaves_directory) {
    /* a resume refused on validation (another architecture) keeps config.json */
    const char *dir = copy_run("refused");
    char cfg[1100], best[1100], a[2400];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    char *before = nb_strdup(slurp(cfg));
    snprintf(a, sizeof a, "train --resume %s --set model.width=8", dir);
    ck_assert_int_eq(cli(a), 2);
    ck_assert_str_eq(slurp(cfg), before);
    nb_free(before);
    /* a fresh run refuses a directory holding a best.h5 (of another run) */
    snprintf(a, sizeof a, "rm %s/last.h5", dir);
    ck_assert_int_eq(nb_test_sh(a, NULL, 0), 0);
    snprintf(best, sizeof best, "%s/best.h5", dir);
    struct stat sb0, sb1;
    ck_assert_int_eq(stat(best, &sb0), 0);
    nb_train_result r;
    ck_assert_int_eq(train_dir("refused", NULL, 0, &r), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "already holds best.h5"), "%s", nb_last_error());
    ck_assert_int_eq(stat(best, &sb1), 0);
    ck_assert(sb0.st_mtim.tv_sec == sb1.st_mtim.tv_sec && sb0.st_mtim.tv_nsec == sb1.st_mtim.tv_nsec);
}
END_TEST

/* ---------------------------------------------------- 11: smaller messages */

START_TEST(test_smaller_messages) {
    char a[2400];
    /* a directory given as a checkpoint: one line, no HDF5 error stack */
    snprintf(a, sizeof a, "eval %s", nb_test_tmpdir());
    ck_assert_int_eq(cli(a), 2);
    ck_assert_msg(count_lines(out) == 1 && strstr(out, "is a directory"), "%s", out);
    snprintf(a, sizeof a, "inspect %s", nb_test_tmpdir());
    ck_assert_int_eq(cli(a), 2);
    ck_assert_msg(count_lines(out) == 1 && strstr(out, "is a directory"), "%s", out);
    /* a number beyond a double */
    snprintf(a, sizeof a, "train %s --set train.optimizer.lr=1e999", write_base());
    ck_assert_int_eq(cli(a), 2);
    ck_assert_msg(!strstr(out, "null") && strstr(out, "train.optimizer.lr") && strstr(out, "beyond"), "%s", out);
}
END_TEST

/* A teacher whose weights are NaN: the message blames the teacher, not the
 * learning rate. */
START_TEST(test_nan_teacher) {
    const char *dir = copy_run("teacher");
    char ck[1100], set[1300];
    snprintf(ck, sizeof ck, "%s/last.h5", dir);
    fill_dataset(ck, "/model/fc.bias", NAN);
    snprintf(set, sizeof set, "train.distill={\"teacher\": \"%s\", \"temperature\": 4, \"weight\": 0.5}", ck);
    nb_train_result r;
    ck_assert_int_eq(train_dir("student", set, 0, &r), NB_STATUS_NUMERIC);
    ck_assert_msg(strstr(nb_last_error(), "teacher") && strstr(nb_last_error(), ck) &&
                      !strstr(nb_last_error(), "lower train.optimizer.lr"),
                  "%s", nb_last_error());
}
END_TEST

/* ------------------------------------------- 8: damaged image folders */

static void write_png(const char *path, int seed) {
    uint8_t px[16 * 16 * 3];
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (uint8_t)(i * 7 + seed * 31);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = img.height = 16;
    img.format = PNG_FORMAT_RGB;
    ck_assert(png_image_write_to_file(&img, path, 0, px, 0, NULL));
}

static void write_jpeg(const char *path) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    jpeg_stdio_dest(&c, f);
    c.image_width = c.image_height = 64;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_start_compress(&c, TRUE);
    uint8_t row[64 * 3];
    while (c.next_scanline < 64) {
        for (int x = 0; x < 64 * 3; x++) row[x] = (uint8_t)((x * 5 + (int)c.next_scanline * 11) & 255);
        JSAMPROW rp = row;
        jpeg_write_scanlines(&c, &rp, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
}

/* tmp/name/{train,val}/{ant,bee}/{0,1}.png */
static const char *make_folder(const char *name) {
    const char *dir = tmp_path(name);
    char p[1400];
    snprintf(p, sizeof p, "rm -rf '%s'", dir);
    nb_test_sh(p, NULL, 0);
    static const char *const splits[2] = {"train", "val"}, *const cls[2] = {"ant", "bee"};
    mkdir(dir, 0755);
    for (int s = 0; s < 2; s++) {
        snprintf(p, sizeof p, "%s/%s", dir, splits[s]);
        mkdir(p, 0755);
        for (int k = 0; k < 2; k++) {
            snprintf(p, sizeof p, "%s/%s/%s", dir, splits[s], cls[k]);
            mkdir(p, 0755);
            for (int j = 0; j < 2; j++) {
                snprintf(p, sizeof p, "%s/%s/%s/%d.png", dir, splits[s], cls[k], j);
                write_png(p, s * 4 + k * 2 + j);
            }
        }
    }
    return dir;
}

START_TEST(test_import_folder_damage) {
    char p[1400], a[4096];
    const char *dir = make_folder("damaged"), *h5 = tmp_path("damaged.h5");
    /* a truncated JPEG: refused, or skipped and counted with --skip-bad */
    snprintf(p, sizeof p, "%s/train/ant/cut.jpg", dir);
    write_jpeg(p);
    struct stat sb;
    ck_assert_int_eq(stat(p, &sb), 0);
    ck_assert_int_eq(truncate(p, sb.st_size * 6 / 10), 0);
    snprintf(a, sizeof a, "data import-folder %s %s --size 8", dir, h5);
    ck_assert_int_eq(cli(a), 2);
    ck_assert_msg(strstr(out, "cut.jpg: damaged JPEG: Premature end of JPEG file") && strstr(out, "--skip-bad"),
                  "%s", out);
    ck_assert(!exists(h5));
    snprintf(a, sizeof a, "data import-folder %s %s --size 8 --skip-bad", dir, h5);
    ck_assert_msg(cli(a) == 0, "%s", out);
    ck_assert_msg(strstr(out, "skipped ") && strstr(out, "cut.jpg") &&
                      strstr(out, "skipped 1 damaged or undecodable images (train 1, test 0) of 9") &&
                      strstr(out, "2 classes, 3x8x8, train 4, test 4"),
                  "%s", out);
    /* a folder inside a class folder */
    dir = make_folder("nested");
    snprintf(p, sizeof p, "%s/train/bee/more", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/train/bee/more/x.png", dir);
    write_png(p, 9);
    snprintf(a, sizeof a, "data import-folder %s %s --size 8 --force", dir, h5);
    ck_assert_int_eq(cli(a), 2);
    ck_assert_msg(strstr(out, "bee/more: a folder inside a class folder"), "%s", out);
    /* an empty class folder */
    dir = make_folder("empty");
    snprintf(p, sizeof p, "%s/train/cat", dir);
    mkdir(p, 0755);
    snprintf(a, sizeof a, "data import-folder %s %s --size 8 --force", dir, h5);
    ck_assert_int_eq(cli(a), 2);
    ck_assert_msg(strstr(out, "train/cat: empty class folder"), "%s", out);
}
END_TEST

static Suite *reliability_suite(void) {
    Suite *s = suite_create("reliability");
    TCase *tc = tcase_create("defects");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_eval_nonfinite_weights);
    tcase_add_test(tc, test_eval_other_class_count);
    tcase_add_test(tc, test_sigterm_sighup_write_last);
    tcase_add_test(tc, test_best_repaired_on_resume);
    tcase_add_test(tc, test_stale_temporary_files_removed);
    tcase_add_test(tc, test_tampered_attributes);
    tcase_add_test(tc, test_resume_finished_run);
    tcase_add_test(tc, test_failed_start_leaves_directory);
    tcase_add_test(tc, test_smaller_messages);
    tcase_add_test(tc, test_nan_teacher);
    tcase_add_test(tc, test_import_folder_damage);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(reliability_suite()); }
