/* Commands of the nibble CLI. Each takes argv with argv[0] = the command
 * name and returns the process exit code: 0 success, 2 bad usage, bad
 * input or out of memory, 1 internal failure. */
#ifndef NB_CLI_H
#define NB_CLI_H

#include "nb_core.h"

int nb_cmd_bench(int argc, char **argv);
int nb_cmd_train(int argc, char **argv);
int nb_cmd_ptq(int argc, char **argv);
int nb_cmd_eval(int argc, char **argv);
int nb_cmd_inspect(int argc, char **argv);
int nb_cmd_export(int argc, char **argv);
int nb_cmd_allocate(int argc, char **argv);
int nb_cmd_sensitivity(int argc, char **argv);
/* inspect --codebook: the histogram of an ADQ layer's weights with its
 * codebook at init and after training, as a PNG. */
nb_status nb_inspect_codebook(const char *path, int in_channels, const char *layer, const char *png);

/* Parse the value of an integer flag in [lo, hi]; on a bad value print
 * "nibble CMD: FLAG expects an integer in LO..HI, got 'S'" and return 0. */
int nb_cli_parse_long(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out);
int nb_cmd_data(int argc, char **argv);

/* The exit code for a failed status: 2 for bad input, unreadable files or
 * out of memory, 1 otherwise. */
int nb_cli_exit_code(nb_status st);

#endif
