/* Shared by the experiments/cmd_data*.c files (`nibble data ...`). */
#ifndef NB_CMD_DATA_H
#define NB_CMD_DATA_H

#include <stdint.h>

#include "nibble.h"

/* Subcommands: argv[0] is the subcommand name. Exit codes as nb_cli.h. */
int nb_data_import_cifar10(int argc, char **argv);
int nb_data_import_folder(int argc, char **argv);
int nb_data_inspect(int argc, char **argv);
int nb_data_bench(int argc, char **argv);

/* Print "nibble data CMD: <nb_last_error()>" (one line) and return the
 * exit code for st: 2 for bad input or unreadable files, 1 otherwise. */
int nb_data_fail(const char *cmd, nb_status st);
/* Parse an integer flag value in [lo, hi]; prints the error and returns 0
 * when it is not one. */
int nb_data_parse_long(const char *cmd, const char *flag, const char *s, long lo, long hi,
                       long *out);
/* Progress callback for the importers (an nb_progress in user). */
void nb_data_progress(size_t done, size_t total, void *user);

#endif
