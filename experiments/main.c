/* The nibble command line: dispatches `nibble COMMAND ...` through a table. */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "nb_cli.h"
#include "nibble.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"train", nb_cmd_train, "train a model from an experiment config (JSON)"},
    {"ptq", nb_cmd_ptq, "post-training quantization of an FP32 checkpoint (calibrate, evaluate, save)"},
    {"eval", nb_cmd_eval, "evaluate a checkpoint: top-1, top-5, loss"},
    {"inspect", nb_cmd_inspect, "list what a checkpoint (or a packed export) holds"},
    {"export", nb_cmd_export, "write a checkpoint as a packed integer file or ONNX (QDQ)"},
    {"sensitivity", nb_cmd_sensitivity, "per-layer sensitivity to weight bits of an FP32 checkpoint (JSON, heat map)"},
    {"allocate", nb_cmd_allocate, "mixed-precision bit widths per layer from a sensitivity file (JSON bitmap)"},
    {"bench", nb_cmd_bench, "measure training and inference throughput of a model"},
    {"data", nb_cmd_data, "import, inspect and check datasets (HDF5)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: nibble COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`nibble COMMAND --help` describes each command.\n");
}

int main(int argc, char **argv) {
    /* HDF5 1.10 cannot recover from a file whose close failed (a full disk
     * under a dataset import): its exit handler would close it again and
     * crash. Every command closes what it opened, so the process needs no
     * exit handler; this must come before any other HDF5 call. */
    H5dont_atexit();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("nibble 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "nibble: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
