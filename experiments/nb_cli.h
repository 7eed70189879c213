/* Commands of the nibble CLI. Each takes argv with argv[0] = the command
 * name and returns the process exit code: 0 success, 2 bad usage or bad
 * input, 1 internal failure. */
#ifndef NB_CLI_H
#define NB_CLI_H

int nb_cmd_bench(int argc, char **argv);
int nb_cmd_data(int argc, char **argv);

#endif
