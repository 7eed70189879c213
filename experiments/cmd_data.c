/* `nibble data ...`: dispatch to the dataset subcommands and their shared
 * helpers (error lines, exit codes, flag parsing, progress). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_data.h"
#include "nb_cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand subcommands[] = {
    {"import-cifar10", nb_data_import_cifar10,
     "DIR OUT.h5: import the CIFAR-10 binary distribution"},
    {"import-folder", nb_data_import_folder,
     "DIR OUT.h5 --size S: import train/ and val/ (or test/) class folders of JPEG/PNG"},
    {"inspect", nb_data_inspect,
     "FILE.h5|synthetic:shapes10: validate, count per class, mean/std, contact sheet"},
    {"bench", nb_data_bench, "FILE.h5|synthetic:shapes10: loader throughput and peak memory"},
};

static void data_usage(FILE *f) {
    fprintf(f, "usage: nibble data SUBCOMMAND [ARGS...]\n\nsubcommands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(f, "  %-15s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(f,
            "\n`nibble data SUBCOMMAND --help` describes each one. Files use the HDF5 schema of\n"
            "docs/datasets.md. Exit codes: 0 success, 2 bad usage or bad input, 1 internal "
            "failure.\n");
}

int nb_cmd_data(int argc, char **argv) {
    if (argc < 2) {
        data_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        data_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (!strcmp(argv[1], subcommands[i].name)) return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "nibble data: unknown subcommand '%s'\n\n", argv[1]);
    data_usage(stderr);
    return 2;
}

int nb_data_fail(const char *cmd, nb_status st) {
    const char *msg = nb_last_error();
    fprintf(stderr, "nibble data %s: %s\n", cmd, msg[0] ? msg : nb_status_name(st));
    return nb_cli_exit_code(st);
}

int nb_data_parse_long(const char *cmd, const char *flag, const char *s, long lo, long hi,
                       long *out) {
    char full[64];
    snprintf(full, sizeof full, "data %s", cmd);
    return nb_cli_parse_long(full, flag, s, lo, hi, out);
}

void nb_data_progress(size_t done, size_t total, void *user) {
    nb_progress *p = user;
    if (p->total != (long)total) { /* the total is known once the importer has listed inputs */
        p->total = total > 0 ? (long)total : 1;
        p->every = p->total / 10 > 0 ? p->total / 10 : 1;
    }
    if (done >= total) nb_progress_finish(p, (double)done, NULL);
    else nb_progress_update(p, (long)done, (double)done, NULL);
}
