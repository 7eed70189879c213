/* A full disk (issue 13): checkpoint and dataset writes on a small tmpfs
 * end with exit 2 and one line naming the file and "No space left on
 * device", never a crash; what was published stays loadable and no
 * temporary file is left. Needs root and a mount the sandbox allows; prints
 * SKIP otherwise. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nb_test.h"
#include "nb_test_data.h"

static char out[1 << 16];
static char mnt[512];

static int cli(const char *args) {
    const char *bin = nb_test_cli();
    ck_assert_msg(bin != NULL, "NB_CLI is not set to the nibble binary");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin, args);
    return nb_test_sh(cmd, out, sizeof out);
}

/* Mount a tmpfs of kb KiB at tmp/full (again: resize). 0 when it cannot. */
static int mount_tmpfs(int kb, int remount) {
    char opts[64];
    snprintf(opts, sizeof opts, "size=%dk", kb);
    snprintf(mnt, sizeof mnt, "%s/full", nb_test_tmpdir());
    mkdir(mnt, 0755);
    return mount("tmpfs", mnt, "tmpfs", remount ? MS_REMOUNT : 0, opts) == 0;
}

static int skip_unless_mounted(const char *what, int kb) {
    if (geteuid() != 0) {
        nb_test_skip(what, "not root: cannot mount a small tmpfs");
        return 1;
    }
    if (!mount_tmpfs(kb, 0)) {
        nb_test_skip(what, "mounting a tmpfs failed (a sandbox without mount rights?)");
        return 1;
    }
    return 0;
}

/* Names in dir containing ".tmp" (temporary files left behind). */
static int tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp") != NULL;
    closedir(d);
    return n;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static const char *cfg_json =
    "{\"name\": \"full\", \"seed\": 3, \"threads\": 2,\n"
    " \"data\": {\"path\": \"synthetic:shapes10\", \"train_count\": 100, \"test_count\": 50,\n"
    "          \"augment\": false},\n"
    " \"model\": {\"arch\": \"smallcnn\", \"width\": 16},\n"
    " \"train\": {\"epochs\": 2, \"batch_size\": 50,\n"
    "   \"optimizer\": {\"name\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9}}}\n";

/* last.h5 of this model is about 210 KB: 300 KiB hold it, not best.h5 too. */
START_TEST(test_checkpoint_on_full_disk) {
    if (skip_unless_mounted("checkpoint on a full disk", 300)) return;
    char cfg[600], a[4096], dir[700], last[800];
    snprintf(cfg, sizeof cfg, "%s/full.json", nb_test_tmpdir());
    FILE *f = fopen(cfg, "w");
    fputs(cfg_json, f);
    fclose(f);
    snprintf(dir, sizeof dir, "%s/run", mnt);
    snprintf(last, sizeof last, "%s/last.h5", dir);
    snprintf(a, sizeof a, "train %s --set output.dir=%s", cfg, dir);
    ck_assert_msg(cli(a) == 2, "%s", out);
    const char *msg = strstr(out, "nibble train: ");
    ck_assert_msg(msg && strstr(msg, "best.h5") && strstr(msg, "No space left on device") &&
                      count_lines(msg) == 1,
                  "%s", out);
    ck_assert_int_eq(tmp_files(dir), 0);
    nb_ckpt_meta m;
    ck_assert_msg(nb_checkpoint_load_state(last, NULL, &m) == NB_OK, "%s", nb_last_error());
    nb_free((void *)m.config_json);
    ck_assert_int_eq(m.epoch, 1);
    /* the second epoch's last.h5 does not fit either: the first stays */
    snprintf(a, sizeof a, "train --resume %s", dir);
    ck_assert_int_eq(cli(a), 2);
    ck_assert_msg(strstr(out, "No space left on device"), "%s", out);
    ck_assert_msg(nb_checkpoint_load_state(last, NULL, &m) == NB_OK, "%s", nb_last_error());
    nb_free((void *)m.config_json);
    ck_assert_int_eq(m.epoch, 1);
    ck_assert_int_eq(tmp_files(dir), 0);
    /* room again: the resume writes best.h5 and finishes the run */
    ck_assert(mount_tmpfs(2048, 1));
    ck_assert_msg(cli(a) == 0, "%s", out);
    snprintf(a, sizeof a, "%s/best.h5", dir);
    ck_assert_msg(nb_checkpoint_load_state(a, NULL, &m) == NB_OK, "%s", nb_last_error());
    nb_free((void *)m.config_json);
    ck_assert_int_eq(tmp_files(dir), 0);
    umount(mnt);
}
END_TEST

START_TEST(test_import_on_full_disk) {
    if (skip_unless_mounted("dataset import on a full disk", 64)) return;
    char src[600], a[4096], dst[700];
    snprintf(src, sizeof src, "%s/cifar-bin", nb_test_tmpdir());
    ck_assert_int_eq(nb_cifar_write(src, 200, 100), 0);
    snprintf(dst, sizeof dst, "%s/c.h5", mnt);
    snprintf(a, sizeof a, "data import-cifar10 %s %s", src, dst);
    ck_assert_msg(cli(a) == 2, "%s", out);
    const char *msg = strstr(out, "nibble data import-cifar10: ");
    ck_assert_msg(msg && strstr(msg, "c.h5: cannot write") && strstr(msg, "No space left on device") &&
                      count_lines(msg) == 1,
                  "%s", out);
    ck_assert(access(dst, F_OK) != 0);
    ck_assert_int_eq(tmp_files(mnt), 0);
    umount(mnt);
}
END_TEST

/* Runs in the parent after the tests: a failed test leaves no mount. */
static void unmount_all(void) {
    if (mnt[0]) umount(mnt);
    else {
        char p[600];
        snprintf(p, sizeof p, "%s/full", nb_test_tmpdir());
        umount(p);
    }
}

static Suite *fulldisk_suite(void) {
    Suite *s = suite_create("fulldisk");
    TCase *tc = tcase_create("fulldisk");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, NULL, unmount_all);
    tcase_add_test(tc, test_checkpoint_on_full_disk);
    tcase_add_test(tc, test_import_on_full_disk);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(fulldisk_suite()); }
