/* Run directories: creating them, writing small files atomically, and
 * keeping them consistent across kills: temporary files that a
 * killed write left behind, best.h5 after a stop between the last.h5 and
 * best.h5 writes of a best epoch, and the position a checkpoint claims. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "run_internal.h"

/* The PID of a temporary name "NAME.tmp-PID", or 0 when name is not one. */
static long tmp_pid(const char *name) {
    const char *t = strstr(name, ".tmp-");
    if (!t || t == name || !isdigit((unsigned char)t[5])) return 0;
    char *end;
    long pid = strtol(t + 5, &end, 10);
    return *end == '\0' && pid > 0 ? pid : 0;
}

static int pid_alive(long pid) {
    return pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

int nb_run_remove_stale_tmp(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    char path[NB_CFG_PATH_MAX + 300];
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        const long pid = tmp_pid(e->d_name);
        if (!pid || pid_alive(pid)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0) {
            nb_log(NB_LOG_INFO, "removed %s (left by a write of process %ld, which was stopped)", path, pid);
            removed++;
        }
    }
    closedir(d);
    return removed;
}

/* Copy from to `to` through a temporary file, synced and renamed. */
static nb_status copy_atomic(const char *from, const char *to) {
    char tmp[NB_CFG_PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", to, (long)getpid());
    nb_status st = NB_OK;
    int in = open(from, O_RDONLY), out = -1;
    if (in < 0) return nb_set_error(NB_STATUS_IO, "cannot read %s: %s", from, strerror(errno));
    out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) {
        st = nb_set_error(NB_STATUS_IO, "cannot write %s: %s", tmp, strerror(errno));
        goto done;
    }
    char buf[1 << 16];
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            st = nb_set_error(NB_STATUS_IO, "cannot read %s: %s", from, strerror(errno));
            goto done;
        }
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                st = nb_set_error(NB_STATUS_IO, "cannot write %s: %s", tmp,
                                  w < 0 ? strerror(errno) : "no progress");
                goto done;
            }
            done += w;
        }
    }
    if (fsync(out) != 0 || close(out) != 0) {
        out = -1;
        st = nb_set_error(NB_STATUS_IO, "cannot write %s: %s", tmp, strerror(errno));
        goto done;
    }
    out = -1;
    if (rename(tmp, to) != 0) st = nb_set_error(NB_STATUS_IO, "cannot rename %s: %s", tmp, strerror(errno));
done:
    if (out >= 0) close(out);
    close(in);
    if (st != NB_OK) unlink(tmp);
    return st;
}

/* A best epoch writes last.h5, then best.h5, with the same state and the
 * same best_top1. best_top1 changes only in such an epoch, and a failed
 * best.h5 write ends the run, so a best.h5 that is missing or holds another
 * best_top1 (and an older epoch) than a last.h5 at an epoch boundary means
 * the run stopped between the two writes: last.h5 is the best state. */
nb_status nb_run_repair_best(const char *last, const char *best, const nb_ckpt_meta *m) {
    if (m->best_top1 < 0.0 || m->step_in_epoch != 0) return NB_OK;
    if (access(best, F_OK) == 0) {
        nb_ckpt_meta b;
        if (nb_checkpoint_load_state(best, NULL, &b) != NB_OK) return NB_OK; /* not ours to judge */
        nb_free((void *)b.config_json);
        if (b.best_top1 == m->best_top1 || b.epoch >= m->epoch) return NB_OK;
    }
    nb_status st = copy_atomic(last, best);
    if (st == NB_OK)
        nb_log(NB_LOG_INFO, "%s written from %s: the run had stopped between the two writes of its best "
               "epoch (%d)", best, last, m->epoch);
    return st;
}

nb_status nb_run_check_position(const char *last, const nb_ckpt_meta *m, long steps_per_epoch) {
    if (m->step_in_epoch >= steps_per_epoch)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "%s: step_in_epoch is %ld, but an epoch of this run has %ld steps (HINT: "
                            "resume with the data and train.batch_size of the run that wrote it)",
                            last, m->step_in_epoch, steps_per_epoch);
    return NB_OK;
}

/* mkdir -p; NB_STATUS_IO naming the path on failure. */
nb_status nb_run_mkdirs(const char *path) {
    char buf[NB_CFG_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        const int end = *p == '\0';
        if (*p == '/' || end) {
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return nb_set_error(NB_STATUS_IO, "cannot create directory %s: %s", buf, strerror(errno));
            if (end) break;
            *p = '/';
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return nb_set_error(NB_STATUS_IO, "%s is not a directory", path);
    return NB_OK;
}

/* Write text to path through a temporary file and a rename. */
nb_status nb_run_write_text(const char *path, const char *text) {
    char tmp[NB_CFG_PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return nb_set_error(NB_STATUS_IO, "cannot write %s: %s", tmp, strerror(errno));
    const int ok = fputs(text, f) >= 0;
    if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
        remove(tmp);
        return nb_set_error(NB_STATUS_IO, "cannot write %s: %s", path, strerror(errno));
    }
    return NB_OK;
}

