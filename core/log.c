/* Logging with a settable sink, and the progress bar. */
#include "nb_core.h"

#include <string.h>
#include <unistd.h>

static nb_log_fn log_fn;
static void *log_user;
static nb_log_level log_min = NB_LOG_INFO;

void nb_log_set(nb_log_fn fn, void *user) {
    log_fn = fn;
    log_user = user;
}

void nb_log_set_level(nb_log_level min_level) { log_min = min_level; }

void nb_log(nb_log_level level, const char *fmt, ...) {
    if (level < log_min) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log_fn) {
        log_fn(level, msg, log_user);
        return;
    }
    static const char *const tag[] = {"debug", "info", "warning", "error"};
    if (level == NB_LOG_INFO)
        fprintf(stderr, "%s\n", msg);
    else
        fprintf(stderr, "%s: %s\n", tag[level], msg);
}

void nb_progress_init(nb_progress *p, const char *label, long total, FILE *out) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total > 0 ? total : 1;
    p->out = out ? out : stderr;
    p->tty = isatty(fileno(p->out));
    p->every = p->total / 10 > 0 ? p->total / 10 : 1;
    p->t0 = nb_now();
}

static void fmt_secs(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

static void draw(nb_progress *p, double items, const char *extra, int final) {
    double el = nb_now() - p->t0;
    double rate = el > 0 ? items / el : 0.0;
    double eta = p->done > 0 ? el * (double)(p->total - p->done) / (double)p->done : 0.0;
    char e1[32], e2[32];
    fmt_secs(e1, sizeof e1, el);
    fmt_secs(e2, sizeof e2, eta);
    if (p->tty) {
        int width = 24, fill = (int)((double)width * (double)p->done / (double)p->total);
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        fprintf(p->out, "\r\033[K%s [%s] %ld/%ld %.0f img/s %s %s<%s", p->label, bar,
                p->done, p->total, rate, extra ? extra : "", e1, e2);
        if (final) fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s %ld/%ld %.0f img/s %s elapsed %s eta %s\n", p->label, p->done,
                p->total, rate, extra ? extra : "", e1, e2);
    }
    fflush(p->out);
}

void nb_progress_update(nb_progress *p, long done, double items, const char *extra) {
    p->done = done;
    if (p->tty) {
        double now = nb_now();
        if (now - p->last_draw < 0.1) return;
        p->last_draw = now;
        draw(p, items, extra, 0);
    } else if (done % p->every == 0 && done < p->total) {
        draw(p, items, extra, 0);
    }
}

void nb_progress_finish(nb_progress *p, double items, const char *extra) {
    p->done = p->total;
    draw(p, items, extra, 1);
}
