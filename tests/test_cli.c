/* End-to-end tests of the nibble command line (binary from $NB_CLI). */
#include <stdio.h>
#include <string.h>

#include "nb_test.h"

static char out[65536];

static int run(const char *args) {
    const char *cli = nb_test_cli();
    ck_assert_msg(cli != NULL, "NB_CLI is not set to the nibble binary");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", cli, args);
    return nb_test_sh(cmd, out, sizeof out);
}

START_TEST(test_help_and_usage_errors) {
    ck_assert_int_eq(run("--help"), 0);
    ck_assert(strstr(out, "bench") != NULL);
    ck_assert_int_eq(run(""), 2);
    ck_assert_int_eq(run("frobnicate"), 2);
    ck_assert(strstr(out, "unknown command 'frobnicate'") != NULL);
    ck_assert_int_eq(run("bench --help"), 0);
    ck_assert(strstr(out, "--threads") != NULL);
    ck_assert_int_eq(run("bench --batch zero"), 2);
    ck_assert_msg(strstr(out, "--batch expects an integer in 1..1000000, got 'zero'") != NULL, "%s", out);
    ck_assert_int_eq(run("bench --model resnet99"), 2);
    ck_assert(strstr(out, "unknown model 'resnet99'") != NULL);
    ck_assert_int_eq(run("bench --bogus"), 2);
    ck_assert(strstr(out, "--bogus") != NULL);
    ck_assert_int_eq(run("bench --shortcut C"), 2);
}
END_TEST

START_TEST(test_bench_json) {
    ck_assert_int_eq(run("bench --model resnet20 --batch 8 --steps 2 --warmup 1 --eval-batch 8 --threads 2 --json"), 0);
    const char *keys[] = {"\"train_img_s\"", "\"eval_img_s\"", "\"peak_rss_mb\"", "\"gflops\"", "\"params\": 269722"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        ck_assert_msg(strstr(out, keys[i]) != NULL, "no %s in: %s", keys[i], out);
    double img_s = 0;
    const char *p = strstr(out, "\"train_img_s\": ");
    ck_assert(p && sscanf(p + 15, "%lf", &img_s) == 1);
    ck_assert_double_gt(img_s, 0.0);
    ck_assert_int_eq(run("bench --model smallcnn --batch 4 --steps 1 --warmup 0 --no-eval"), 0);
    ck_assert(strstr(out, "train:") != NULL);
}
END_TEST

/* Same seed and thread count: the same numbers, bit for bit. */
START_TEST(test_bench_deterministic) {
    char first[256] = "";
    for (int rep = 0; rep < 2; rep++) {
        ck_assert_int_eq(run("bench --model resnet20 --batch 16 --steps 3 --warmup 0 --no-eval --threads 2 --seed 5 --json"), 0);
        const char *p = strstr(out, "\"final_loss\": ");
        ck_assert_ptr_nonnull(p);
        if (rep == 0)
            snprintf(first, sizeof first, "%s", p);
        else
            ck_assert_str_eq(p, first);
    }
    ck_assert_int_eq(run("bench --model resnet20 --batch 16 --steps 3 --warmup 0 --no-eval --threads 2 --seed 6 --json"), 0);
    ck_assert_str_ne(strstr(out, "\"final_loss\": "), first);
}
END_TEST

static Suite *cli_suite(void) {
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_help_and_usage_errors);
    tcase_add_test(tc, test_bench_json);
    tcase_add_test(tc, test_bench_deterministic);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(cli_suite()); }
