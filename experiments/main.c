/* The nibble command line. Placeholder dispatch until commands land. */
#include <stdio.h>
#include <string.h>

#include "nibble.h"

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "nibble: no command yet\n");
    return 2;
}
