/* Crash safety (issue 13): `nibble train` killed with SIGKILL at random
 * moments, a third of them aimed at checkpoint writes (the kill follows the
 * creation of a *.h5.tmp-PID file by 0-3 ms, seen through inotify). After
 * every kill each published last.h5 and best.h5 loads; every chain of kills
 * is then resumed to the end, after which no temporary file is left and
 * last.h5, best.h5 and metrics.csv equal those of an uninterrupted run bit
 * for bit. Chains of up to 6 kills run until NB_CRASH_KILLS kills (default
 * 36, 10 under AddressSanitizer) have been made. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "nb_test.h"

#define KILLS_PER_CHAIN 6

static const char *cfg_json =
    "{\"name\": \"crash\", \"seed\": 3, \"threads\": 2,\n"
    " \"data\": {\"path\": \"synthetic:shapes10\", \"train_count\": 200, \"test_count\": 100,\n"
    "          \"augment\": false},\n"
    " \"model\": {\"arch\": \"smallcnn\", \"width\": 4},\n"
    " \"train\": {\"epochs\": 3, \"batch_size\": 50,\n"
    "   \"optimizer\": {\"name\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9}}}\n";

static char cfg_path[600];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int exists(const char *p) { return access(p, F_OK) == 0; }

/* nibble train (fresh, or --resume when dir holds last.h5) in a child. */
static pid_t start(const char *dir) {
    char last[800], set_dir[800];
    snprintf(last, sizeof last, "%s/last.h5", dir);
    snprintf(set_dir, sizeof set_dir, "output.dir=%s", dir);
    const char *bin = nb_test_cli();
    const int resume = exists(last);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        if (resume)
            execl(bin, bin, "train", "--resume", dir, (char *)NULL);
        else
            execl(bin, bin, "train", cfg_path, "--set", set_dir, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Exit status of pid (waited for), -SIG when killed. */
static int reap(pid_t pid) {
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

static int run_to_end(const char *dir) { return reap(start(dir)); }

/* The model's parameters and buffers in a checkpoint (NULL if it does not
 * load: a test failure by the caller). */
static float *weights(const char *path, size_t *n) {
    nb_config c;
    nb_model *m;
    if (nb_config_from_checkpoint(path, NULL, 0, &c) != NB_OK || nb_model_from_config(&c, path, 3, 32, &m) != NB_OK)
        return NULL;
    *n = m->n_param_floats + m->n_buffer_floats;
    float *w = nb_malloc(sizeof(float) * *n);
    memcpy(w, m->param_data, sizeof(float) * m->n_param_floats);
    memcpy(w + m->n_param_floats, m->buffer_data, sizeof(float) * m->n_buffer_floats);
    nb_model_free(m);
    return w;
}

/* Every published checkpoint of dir loads: model, optimizer state, meta. */
static void check_published(const char *dir, int kill_no) {
    static const char *const names[] = {"last.h5", "best.h5"};
    for (int i = 0; i < 2; i++) {
        char p[800];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        if (!exists(p)) continue;
        nb_ckpt_meta m;
        ck_assert_msg(nb_checkpoint_load_state(p, NULL, &m) == NB_OK, "kill %d: %s", kill_no, nb_last_error());
        nb_free((void *)m.config_json);
        size_t n;
        float *w = weights(p, &n);
        ck_assert_msg(w != NULL, "kill %d: %s", kill_no, nb_last_error());
        nb_free(w);
    }
}

static int tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp-") != NULL;
    closedir(d);
    return n;
}

/* metrics.csv without its timing columns. */
static void metrics(const char *dir, char *out, size_t n) {
    char p[800], line[512];
    snprintf(p, sizeof p, "%s/metrics.csv", dir);
    FILE *f = fopen(p, "r");
    ck_assert_ptr_nonnull(f);
    size_t len = 0;
    out[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        int commas = 0;
        for (char *c = line; *c; c++)
            if (*c == ',' && ++commas == 6) *c = '\0';
        len += (size_t)snprintf(out + len, n - len, "%s\n", strtok(line, "\n"));
    }
    fclose(f);
}

/* Kill the child k ms after the n-th *.h5.tmp-* file appears in dir (or
 * when it ends first). Returns 1 when it was killed. */
static int kill_at_write(pid_t pid, const char *dir, int n, int delay_us) {
    int fd = inotify_init1(IN_NONBLOCK);
    ck_assert_int_ge(fd, 0);
    int wd = inotify_add_watch(fd, dir, IN_CREATE);
    ck_assert_int_ge(wd, 0);
    int seen = 0;
    char buf[4096] __attribute__((aligned(8)));
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) { /* ended first: put it back for reap */
            close(fd);
            return -1 - (WIFEXITED(status) ? WEXITSTATUS(status) : 128);
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5) <= 0) continue;
        ssize_t len = read(fd, buf, sizeof buf);
        for (char *c = buf; len > 0 && c < buf + len;) {
            const struct inotify_event *e = (const struct inotify_event *)c;
            if (e->len && strstr(e->name, ".h5.tmp-")) seen++;
            c += sizeof *e + e->len;
        }
        if (seen >= n) break;
    }
    const double t0 = now();
    while ((now() - t0) * 1e6 < delay_us) {
    }
    kill(pid, SIGKILL);
    close(fd);
    return 1;
}

START_TEST(test_kill9_then_resume_is_exact) {
    const char *tmp = nb_test_tmpdir();
    ck_assert_ptr_nonnull(nb_test_cli());
    nb_log_set_level(NB_LOG_WARN);
    snprintf(cfg_path, sizeof cfg_path, "%s/crash.json", tmp);
    FILE *f = fopen(cfg_path, "w");
    fputs(cfg_json, f);
    fclose(f);
    int target = 36; /* kills */
#if defined(__SANITIZE_ADDRESS__)
    target = 10;
#endif
    if (getenv("NB_CRASH_KILLS")) target = atoi(getenv("NB_CRASH_KILLS"));

    char ref[700], ref_last[800], ref_best[800];
    snprintf(ref, sizeof ref, "%s/ref", tmp);
    const double t0 = now();
    ck_assert_int_eq(run_to_end(ref), 0);
    const double t_run = now() - t0;
    snprintf(ref_last, sizeof ref_last, "%s/last.h5", ref);
    snprintf(ref_best, sizeof ref_best, "%s/best.h5", ref);
    size_t n_ref, n;
    float *w_last = weights(ref_last, &n_ref), *w_best = weights(ref_best, &n);
    ck_assert(w_last && w_best);
    static char m_ref[1 << 14], m_run[1 << 14];
    metrics(ref, m_ref, sizeof m_ref);

    nb_rng rng;
    nb_rng_seed(&rng, 2024, 0);
    int kills = 0, aimed = 0, finished_early = 0; /* kills: the process was killed */
    int ch;
    for (ch = 0; kills < target && ch < 4 * target; ch++) {
        char dir[700], p[800];
        snprintf(dir, sizeof dir, "%s/chain%d", tmp, ch);
        mkdir(dir, 0755);
        for (int k = 0; k < KILLS_PER_CHAIN; k++) {
            pid_t pid = start(dir);
            if (k % 3 == 2) { /* aimed at the 1st..3rd checkpoint write */
                int r = kill_at_write(pid, dir, 1 + (int)nb_rng_below(&rng, 3), (int)nb_rng_below(&rng, 3000));
                if (r == 1) {
                    ck_assert_int_eq(reap(pid), -SIGKILL);
                    aimed++;
                    kills++;
                } else {
                    ck_assert_int_eq(-1 - r, 0); /* it ended by itself, successfully */
                    finished_early++;
                }
            } else {
                /* a resumed run has less left to do than a whole one */
                usleep((useconds_t)(nb_rng_uniform(&rng) * t_run * (k ? 0.35e6 : 0.7e6)));
                kill(pid, SIGKILL);
                int st = reap(pid);
                ck_assert_msg(st == -SIGKILL || st == 0, "exit %d", st);
                finished_early += st == 0;
                kills += st != 0;
            }
            check_published(dir, k);
            snprintf(p, sizeof p, "%s/last.h5", dir);
            nb_ckpt_meta m;
            if (exists(p) && nb_checkpoint_load_state(p, NULL, &m) == NB_OK) {
                nb_free((void *)m.config_json);
                if (m.epoch == 3) break; /* done: nothing left to kill */
            }
        }
        ck_assert_int_eq(run_to_end(dir), 0); /* resume (or start) to the end */
        ck_assert_msg(tmp_files(dir) == 0, "chain %d: temporary files left", ch);
        snprintf(p, sizeof p, "%s/last.h5", dir);
        float *w = weights(p, &n);
        ck_assert_msg(w && n == n_ref && !memcmp(w, w_last, n * sizeof(float)), "chain %d: last.h5 differs", ch);
        nb_free(w);
        snprintf(p, sizeof p, "%s/best.h5", dir);
        w = weights(p, &n);
        ck_assert_msg(w && n == n_ref && !memcmp(w, w_best, n * sizeof(float)), "chain %d: best.h5 differs", ch);
        nb_free(w);
        metrics(dir, m_run, sizeof m_run);
        ck_assert_str_eq(m_run, m_ref);
    }
    printf("crash safety: %d kill -9 (%d aimed at checkpoint writes, %d runs ended first) in %d chains, "
           "each resumed to a bit-identical end (reference run %.2f s)\n",
           kills, aimed, finished_early, ch, t_run);
    nb_free(w_last);
    nb_free(w_best);
}
END_TEST

static Suite *crash_suite(void) {
    Suite *s = suite_create("crash");
    TCase *tc = tcase_create("crash");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_kill9_then_resume_is_exact);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(crash_suite()); }
