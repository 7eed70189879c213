/* End-to-end tests of `nibble data ...` (binary from $NB_CLI): help and
 * usage errors, exit codes, one-line errors on bad files, import, inspect
 * with a contact sheet, bench. */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nb_test.h"
#include "nb_test_data.h"

static char out[65536];

/* Run `nibble ARGS`; out gets stdout and stderr, or only stderr. */
static int run_mode(const char *args, int only_stderr) {
    const char *cli = nb_test_cli();
    ck_assert_msg(cli != NULL, "NB_CLI is not set to the nibble binary");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s %s", cli, args, only_stderr ? "2>&1 >/dev/null" : "2>&1");
    return nb_test_sh(cmd, out, sizeof out);
}

static int run(const char *args) { return run_mode(args, 0); }
static int run_err(const char *args) { return run_mode(args, 1); }

static const char *tmp_path(const char *name) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", nb_test_tmpdir(), name);
    return b;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

START_TEST(test_data_help_and_usage) {
    ck_assert_int_eq(run("data --help"), 0);
    ck_assert(strstr(out, "import-cifar10") && strstr(out, "import-folder") &&
              strstr(out, "inspect") && strstr(out, "bench"));
    ck_assert_int_eq(run("data"), 2);
    ck_assert_int_eq(run("data frobnicate"), 2);
    ck_assert(strstr(out, "unknown subcommand 'frobnicate'") != NULL);
    const char *subs[] = {"import-cifar10", "import-folder", "inspect", "bench"};
    for (int i = 0; i < 4; i++) {
        char a[128], want[128];
        snprintf(a, sizeof a, "data %s --help", subs[i]);
        ck_assert_int_eq(run(a), 0);
        snprintf(want, sizeof want, "usage: nibble data %s", subs[i]);
        ck_assert_msg(strstr(out, want) != NULL, "%s: %s", a, out);
    }
    ck_assert_int_eq(run("data inspect"), 2);
    ck_assert(strstr(out, "expected one FILE.h5") != NULL);
    ck_assert_int_eq(run("data inspect a.h5 b.h5"), 2);
    ck_assert_int_eq(run("data inspect synthetic:shapes10 --per-class 0"), 2);
    ck_assert(strstr(out, "--per-class expects an integer in 1..256, got '0'") != NULL);
    ck_assert_int_eq(run("data inspect synthetic:shapes10 --split val"), 2);
    ck_assert_int_eq(run("data bench synthetic:shapes10 --threads x"), 2);
    ck_assert_int_eq(run("data import-folder a b"), 2);
    ck_assert(strstr(out, "--size S is required") != NULL);
    ck_assert_int_eq(run("data import-cifar10 --size 3 a b"), 2); /* not an option here */
    ck_assert_int_eq(run("data import-cifar10 onlyone"), 2);
    ck_assert_int_eq(run("data bench synthetic:shapes11"), 2);
    ck_assert(strstr(out, "unknown synthetic dataset 'shapes11'") != NULL);
}
END_TEST

static void check_png(const char *path, int min_w, int min_h) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    ck_assert_msg(png_image_begin_read_from_file(&img, path), "%s is not a PNG", path);
    ck_assert_int_ge((int)img.width, min_w);
    ck_assert_int_ge((int)img.height, min_h);
    png_image_free(&img);
}

START_TEST(test_data_inspect_synthetic) {
    const char *sheet = tmp_path("s10.png");
    char a[2048];
    snprintf(a, sizeof a, "data inspect synthetic:shapes10 --sheet %s --per-class 3", sheet);
    ck_assert_int_eq(run(a), 0);
    ck_assert_msg(strstr(out, "shapes10, 10 classes, 3x32x32") != NULL, "%s", out);
    ck_assert(strstr(out, "circle") && strstr(out, "checker"));
    ck_assert(strstr(out, "total                     10000       2000") != NULL);
    check_png(sheet, 3 * 64, 10 * 64);
}
END_TEST

START_TEST(test_data_inspect_cifar10_mini) {
    const char *p = nb_test_shared_data("cifar10-mini.h5");
    if (!p) {
        nb_test_skip("test_data_inspect_cifar10_mini", "../shared/data/cifar10-mini.h5 absent");
        return;
    }
    const char *sheet = tmp_path("mini.png");
    char a[2048];
    snprintf(a, sizeof a, "data inspect %s --split test --sheet %s", p, sheet);
    ck_assert_int_eq(run(a), 0);
    ck_assert_msg(strstr(out, "airplane                100         20") != NULL, "%s", out);
    ck_assert(strstr(out, "mean: 0.4876 0.4787 0.4430") != NULL);
    check_png(sheet, 8 * 64, 10 * 64);
}
END_TEST

/* Each broken file: exit 2, exactly one line on stderr, naming the file
 * and what is wrong. */
static void expect_bad(const char *path, const char *what) {
    char a[2048];
    snprintf(a, sizeof a, "data inspect %s", path);
    ck_assert_int_eq(run_err(a), 2);
    ck_assert_msg(count_lines(out) == 1, "not one line: %s", out);
    ck_assert_msg(strstr(out, "nibble data inspect: ") == out && strstr(out, path) &&
                      strstr(out, what),
                  "for %s expected '%s' in: %s", path, what, out);
}

START_TEST(test_data_bad_inputs) {
    const char *txt = tmp_path("text.h5");
    FILE *f = fopen(txt, "w");
    fputs("hello\n", f);
    fclose(f);
    expect_bad(txt, "not an HDF5 file");
    expect_bad(tmp_path("missing.h5"), "No such file");
    nb_fixture fx = nb_fixture_default();
    fx.omit_dataset = "test/labels";
    const char *p = tmp_path("nolabels.h5");
    ck_assert_int_eq(nb_fixture_write(p, &fx), 0);
    expect_bad(p, "missing dataset /test/labels");
    fx = nb_fixture_default();
    fx.bad_label = 1;
    p = tmp_path("label10.h5");
    ck_assert_int_eq(nb_fixture_write(p, &fx), 0);
    expect_bad(p, "/train/labels[39] = 10 but the file has 10 classes");
    fx = nb_fixture_default();
    fx.images_float = 1;
    p = tmp_path("float.h5");
    ck_assert_int_eq(nb_fixture_write(p, &fx), 0);
    expect_bad(p, "/train/images has type float32 with shape (40, 3, 8, 8), expected uint8");
    fx = nb_fixture_default();
    fx.n[1] = 0;
    p = tmp_path("empty.h5");
    ck_assert_int_eq(nb_fixture_write(p, &fx), 0);
    expect_bad(p, "split /test is empty");
    fx = nb_fixture_default();
    fx.omit_attr = "std";
    p = tmp_path("nostd.h5");
    ck_assert_int_eq(nb_fixture_write(p, &fx), 0);
    expect_bad(p, "missing root attribute 'std'");
    fx = nb_fixture_default();
    fx.n[0] = 300;
    p = tmp_path("trunc.h5");
    ck_assert_int_eq(nb_fixture_write(p, &fx), 0);
    ck_assert_int_eq(truncate(p, 3000), 0);
    expect_bad(p, "truncated");
    /* The same errors from bench. */
    char a[2048];
    snprintf(a, sizeof a, "data bench %s", txt);
    ck_assert_int_eq(run_err(a), 2);
    ck_assert_int_eq(count_lines(out), 1);
}
END_TEST

START_TEST(test_data_import_cifar10) {
    const char *dir = tmp_path("cifar");
    ck_assert_int_eq(nb_cifar_write(dir, 12, 10), 0);
    const char *o = tmp_path("c.h5");
    char a[4096];
    snprintf(a, sizeof a, "data import-cifar10 %s %s", dir, o);
    ck_assert_int_eq(run(a), 0);
    ck_assert_msg(strstr(out, "cifar10, 10 classes, 3x32x32, train 60, test 10") != NULL, "%s", out);
    ck_assert_int_eq(run_err(a), 2); /* exists */
    ck_assert(count_lines(out) == 1 && strstr(out, "already exists"));
    snprintf(a, sizeof a, "data import-cifar10 %s %s --force --name mine", dir, o);
    ck_assert_int_eq(run(a), 0);
    snprintf(a, sizeof a, "data inspect %s", o);
    ck_assert_int_eq(run(a), 0);
    ck_assert(strstr(out, ": mine, 10 classes") && strstr(out, "automobile"));
    snprintf(a, sizeof a, "data import-cifar10 %s %s", nb_test_tmpdir(), tmp_path("x.h5"));
    ck_assert_int_eq(run_err(a), 2);
    ck_assert(count_lines(out) == 1 && strstr(out, "no data_batch_1.bin"));
}
END_TEST

START_TEST(test_data_import_folder) {
    const char *dir = tmp_path("folder");
    char p[2048];
    mkdir(dir, 0755);
    static const char *const splits[2] = {"train", "test"}, *const cls[2] = {"ant", "bee"};
    uint8_t px[20 * 24 * 3];
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (uint8_t)(i * 13);
    for (int s = 0; s < 2; s++) {
        snprintf(p, sizeof p, "%s/%s", dir, splits[s]);
        mkdir(p, 0755);
        for (int k = 0; k < 2; k++) {
            snprintf(p, sizeof p, "%s/%s/%s", dir, splits[s], cls[k]);
            mkdir(p, 0755);
            for (int j = 0; j < 3; j++) {
                snprintf(p, sizeof p, "%s/%s/%s/%d.png", dir, splits[s], cls[k], j);
                png_image img;
                memset(&img, 0, sizeof img);
                img.version = PNG_IMAGE_VERSION;
                img.width = 24;
                img.height = 20;
                img.format = PNG_FORMAT_RGB;
                ck_assert(png_image_write_to_file(&img, p, 0, px, 0, NULL));
            }
        }
    }
    char a[4096];
    snprintf(a, sizeof a, "data import-folder %s %s --size 12 --threads 2", dir, tmp_path("f.h5"));
    ck_assert_int_eq(run(a), 0);
    ck_assert_msg(strstr(out, "folder, 2 classes, 3x12x12, train 6, test 6") != NULL, "%s", out);
    snprintf(a, sizeof a, "data inspect %s", tmp_path("f.h5"));
    ck_assert_int_eq(run(a), 0);
    ck_assert(strstr(out, "bee                       3          3") != NULL);
    snprintf(a, sizeof a, "data import-folder %s/train %s --size 12", dir, tmp_path("g.h5"));
    ck_assert_int_eq(run_err(a), 2);
    ck_assert(count_lines(out) == 1 && strstr(out, "no train/ folder"));
}
END_TEST

START_TEST(test_data_bench) {
    ck_assert_int_eq(run("data bench synthetic:shapes10 --batch 100 --json"), 0);
    const char *keys[] = {"\"img_s\"", "\"peak_rss_mb\"", "\"mode\": \"in memory\"",
                          "\"images\": 10000", "\"steady_wait_s\""};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        ck_assert_msg(strstr(out, keys[i]) != NULL, "no %s in: %s", keys[i], out);
    nb_fixture fx = nb_fixture_default();
    fx.n[0] = 500;
    const char *p = tmp_path("bench.h5");
    ck_assert_int_eq(nb_fixture_write(p, &fx), 0);
    char a[2048];
    snprintf(a, sizeof a, "data bench %s --stream --threads 2 --batch 32 --epochs 2 --json", p);
    ck_assert_int_eq(run(a), 0);
    ck_assert_msg(strstr(out, "\"mode\": \"streaming\"") && strstr(out, "\"images\": 1000"), "%s", out);
    snprintf(a, sizeof a, "data bench %s --mem-cap-mb 1 --rrc --size 6 --threads 0", p);
    ck_assert_int_eq(run(a), 0);
    ck_assert_msg(strstr(out, "in memory") && strstr(out, "random-resized-crop"), "%s", out);
}
END_TEST

static Suite *data_cli_suite(void) {
    Suite *s = suite_create("data_cli");
    TCase *tc = tcase_create("data_cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_data_help_and_usage);
    tcase_add_test(tc, test_data_inspect_synthetic);
    tcase_add_test(tc, test_data_inspect_cifar10_mini);
    tcase_add_test(tc, test_data_bad_inputs);
    tcase_add_test(tc, test_data_import_cifar10);
    tcase_add_test(tc, test_data_import_folder);
    tcase_add_test(tc, test_data_bench);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(data_cli_suite()); }
