/* `nibble inspect CHECKPOINT`: what a checkpoint holds. */
#include <string.h>

#include <sys/stat.h>

#include "nb_cli.h"
#include "nb_export.h"
#include "nibble.h"

static void inspect_usage(FILE *f) {
    fprintf(f,
            "usage: nibble inspect CHECKPOINT.h5 [--no-config] [--codebook LAYER --png OUT.png]\n"
            "       nibble inspect MODEL.nq.h5 [--no-config]\n"
            "\n"
            "Prints a checkpoint's architecture, position (epoch, step), every tensor with\n"
            "its shape and element count, parameter totals, the per-layer table (weight and\n"
            "input method, bits, granularity, parameters, bytes, scales or learned step\n"
            "sizes; the model size at those bits against FP32) and the effective config\n"
            "it was trained with (omitted with --no-config).\n"
            "\n"
            "  --codebook LAYER --png OUT.png   for an ADQ layer (e.g. layer3.0.conv1): a\n"
            "                   histogram of its weights with its codebook levels after\n"
            "                   training and at initialisation (recomputed from the run's\n"
            "                   init.checkpoint), written as a PNG; the codes are printed\n"
            "\n"
            "A packed export (`nibble export`) is validated (bit widths, code ranges,\n"
            "scales) and listed: per layer the weight and input grids, parameters and\n"
            "bytes, the file size and the compression against FP32.\n");
}

static void to_stdout(nb_log_level level, const char *msg, void *user) {
    (void)level;
    (void)user;
    printf("%s\n", msg);
}

/* The per-layer table of the model the checkpoint describes (with its
 * quantizers), or a note why it cannot be shown. */
static void layer_table(const char *path, const long *in_channels) {
    nb_config c;
    nb_model *m = NULL;
    const int C = in_channels ? (int)*in_channels : 3;
    nb_status st = nb_config_from_checkpoint(path, NULL, 0, &c);
    if (st == NB_OK) st = nb_model_from_config(&c, path, C, c.data.size > 0 ? c.data.size : 32, &m);
    if (st != NB_OK) {
        printf("\n(no per-layer table: %s)\n", nb_last_error());
        return;
    }
    printf("\n");
    nb_log_set(to_stdout, NULL);
    nb_quant_summary(m);
    nb_log_set(NULL, NULL);
    nb_model_free(m);
}

/* A packed export: its layer table, size and normalisation. */
static int inspect_packed(const char *path, int show_config) {
    nb_xmodel *x = NULL;
    nb_status st = nb_export_read_packed(path, &x);
    if (st != NB_OK) {
        fprintf(stderr, "nibble inspect: %s\n", nb_last_error());
        return nb_cli_exit_code(st);
    }
    struct stat sb;
    const long bytes = stat(path, &sb) == 0 ? (long)sb.st_size : -1;
    printf("%s: packed %s export (%s, %d classes, input %dx%dx%d)\n\n", path, x->arch, NB_PACKED_FORMAT,
           x->opts.num_classes, x->in_c, x->in_h, x->in_w);
    const double fp32 = nb_export_summary(x, stdout);
    printf("file: %ld bytes, %.2fx smaller than the FP32 weights and folded biases (%.0f bytes)\n", bytes,
           fp32 / (double)(bytes > 0 ? bytes : 1), fp32);
    if (x->n_norm) {
        printf("input normalisation: (pixel/255 - mean)/std, mean");
        for (int c = 0; c < x->n_norm; c++) printf(" %.4f", (double)x->mean[c]);
        printf(", std");
        for (int c = 0; c < x->n_norm; c++) printf(" %.4f", (double)x->std[c]);
        printf("\n");
    } else {
        printf("input normalisation: unknown (exported without its dataset)\n");
    }
    if (show_config && x->config_json) printf("\nconfig:\n%s\n", x->config_json);
    nb_xmodel_free(x);
    return 0;
}

static long numel_of(const nb_ckpt_tensor *t) {
    long n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

int nb_cmd_inspect(int argc, char **argv) {
    const char *path = NULL, *codebook = NULL, *png = NULL;
    int show_config = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            inspect_usage(stdout);
            return 0;
        } else if ((!strcmp(argv[i], "--codebook") || !strcmp(argv[i], "--png")) && i + 1 < argc) {
            *(argv[i][2] == 'c' ? &codebook : &png) = argv[i + 1];
            i++;
        } else if (!strcmp(argv[i], "--no-config")) {
            show_config = 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "nibble inspect: unknown option '%s'\n", argv[i]);
            inspect_usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "nibble inspect: unexpected argument '%s'\n", argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        fprintf(stderr, "nibble inspect: expected one CHECKPOINT.h5\n");
        inspect_usage(stderr);
        return 2;
    }
    if (!codebook != !png) {
        fprintf(stderr, "nibble inspect: --codebook LAYER and --png OUT.png go together\n");
        return 2;
    }
    if (nb_export_is_packed(path)) {
        if (codebook) {
            fprintf(stderr, "nibble inspect: --codebook reads a training checkpoint, %s is a packed export\n", path);
            return 2;
        }
        return inspect_packed(path, show_config);
    }
    char *json = NULL, arch[32];
    nb_ckpt_meta meta;
    nb_ckpt_tensor *ts = NULL;
    int n = 0;
    nb_status st = nb_checkpoint_read_config(path, &json, arch, sizeof arch);
    if (st == NB_OK) st = nb_checkpoint_load_state(path, NULL, &meta);
    if (st == NB_OK) st = nb_checkpoint_list(path, &ts, &n);
    if (st != NB_OK) {
        fprintf(stderr, "nibble inspect: %s\n", nb_last_error());
        nb_free(json);
        nb_free(ts);
        return nb_cli_exit_code(st);
    }
    nb_free((void *)meta.config_json);
    printf("%s: %s checkpoint, epoch %d, step %ld", path, arch, meta.epoch, meta.step);
    if (meta.step_in_epoch) printf(" (%ld steps into epoch %d)", meta.step_in_epoch, meta.epoch + 1);
    if (meta.best_top1 >= 0) printf(", best test top-1 %.2f%%", 100.0 * meta.best_top1);
    printf("\n\n%-48s %-20s %-8s %10s\n", "tensor", "shape", "dtype", "elements");
    long model = 0, optim = 0, quant = 0;
    for (int i = 0; i < n; i++) {
        char shape[64] = "()";
        int len = 0;
        for (int d = 0; d < ts[i].ndim; d++)
            len += snprintf(shape + len, sizeof shape - (size_t)len, "%s%ld", d ? ", " : "(", ts[i].shape[d]);
        if (ts[i].ndim) snprintf(shape + len, sizeof shape - (size_t)len, ")");
        const long k = numel_of(&ts[i]);
        printf("%-48s %-20s %-8s %10ld\n", ts[i].name, shape, ts[i].dtype, k);
        if (!strncmp(ts[i].name, "model/", 6)) model += k;
        else if (!strncmp(ts[i].name, "optim/", 6)) optim += k;
        else if (!strncmp(ts[i].name, "quant/", 6)) quant += k;
    }
    printf("\nmodel: %ld values (parameters and buffers); optimizer state: %ld; quantizer state: %ld\n",
           model, optim, quant);
    printf("quantizers: %s\n", quant ? "see quant/ above" : "none (FP32 model)");
    /* Input channels from the first convolution's weight (OC, C, KH, KW). */
    const long *chan = NULL;
    for (int i = 0; i < n && !chan; i++)
        if (!strncmp(ts[i].name, "model/", 6) && ts[i].ndim == 4 && (!strcmp(ts[i].name, "model/conv1.weight") ||
                                                                    !strcmp(ts[i].name, "model/features.0.conv.weight")))
            chan = &ts[i].shape[1];
    layer_table(path, chan);
    if (codebook) {
        printf("\n");
        st = nb_inspect_codebook(path, chan ? (int)*chan : 3, codebook, png);
        if (st != NB_OK) {
            fprintf(stderr, "nibble inspect: %s\n", nb_last_error());
            nb_free(json);
            nb_free(ts);
            return nb_cli_exit_code(st);
        }
    }
    if (show_config && json) printf("\nconfig:\n%s\n", json);
    nb_free(json);
    nb_free(ts);
    return 0;
}
