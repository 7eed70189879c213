/* `nibble bench` — placeholder until layers land. */
#include <stdio.h>

#include "nb_cli.h"

int nb_cmd_bench(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "nibble bench: not built yet\n");
    return 1;
}
