/* Status names, the thread-local error message and NB_ASSERT's handler. */
#include "nb_core.h"

#include <stdlib.h>

static _Thread_local char err_buf[2048];
static _Thread_local nb_status err_status;

static const char *const status_names[] = {
    [NB_OK] = "ok",
    [NB_STATUS_BAD_INPUT] = "bad input",
    [NB_STATUS_IO] = "I/O error",
    [NB_STATUS_OOM] = "out of memory",
    [NB_STATUS_NUMERIC] = "numeric error",
    [NB_STATUS_INTERRUPTED] = "interrupted",
    [NB_STATUS_INTERNAL] = "internal error",
};
_Static_assert(sizeof status_names / sizeof status_names[0] == NB_STATUS_COUNT,
               "one name per status");

const char *nb_status_name(nb_status s) {
    if ((int)s < 0 || s >= NB_STATUS_COUNT) return "unknown status";
    return status_names[s];
}

nb_status nb_set_error(nb_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    err_status = s;
    return s;
}

const char *nb_last_error(void) { return err_buf; }

nb_status nb_last_status(void) { return err_buf[0] ? err_status : NB_STATUS_INTERNAL; }

void nb_clear_error(void) { err_buf[0] = '\0'; }

void nb_assert_fail(const char *file, int line, const char *expr, const char *fmt, ...) {
    fprintf(stderr, "nibble: assertion failed at %s:%d: %s: ", file, line, expr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}
