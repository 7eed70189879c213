/* Helpers shared by the CLI commands. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "nb_cli.h"

/* Out of memory is an input-size problem (batch size, threads, image size),
 * so it shares bad input's code. */
int nb_cli_exit_code(nb_status st) {
    return st == NB_STATUS_BAD_INPUT || st == NB_STATUS_IO || st == NB_STATUS_OOM ? 2 : 1;
}

int nb_cli_parse_long(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno || v < lo || v > hi) {
        fprintf(stderr, "nibble %s: %s expects an integer in %ld..%ld, got '%s'\n", cmd, flag, lo, hi, s);
        return 0;
    }
    *out = v;
    return 1;
}
