/* `nibble data ...` — placeholder until the datasets module lands. */
#include <stdio.h>

#include "nb_cli.h"

int nb_cmd_data(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "nibble data: not built yet\n");
    return 1;
}
