/* `nibble export CHECKPOINT --format nibble|onnx -o OUT`: a trained
 * (quantized) checkpoint as a packed integer file or an ONNX QDQ model. */
#include <getopt.h>
#include <string.h>
#include <sys/stat.h>

#include "nb_cli.h"
#include "nb_export.h"
#include "run_internal.h"

static void export_usage(FILE *f) {
    fprintf(f,
            "usage: nibble export CHECKPOINT.h5 [--format nibble|onnx] [-o OUT] [--opset N]\n"
            "                     [--data FILE.h5]\n"
            "\n"
            "Writes a checkpoint's model with its batchnorms folded into the convolutions\n"
            "and every quantized tensor as integer codes (docs/export.md):\n"
            "\n"
            "  --format nibble  (default) the packed file: codes bit-packed at their width,\n"
            "                   scales, zero points, codebooks, folded biases, activation\n"
            "                   quantizers, architecture and config (OUT default: the\n"
            "                   checkpoint's name with .nq.h5). `nibble inspect OUT` lists\n"
            "                   it, `nibble eval OUT` runs it on the integer engine.\n"
            "  --format onnx    ONNX in QDQ form (QuantizeLinear/DequantizeLinear around\n"
            "                   weights and activations; codebook weights as a Gather),\n"
            "                   input \"input\" (N, C, H, W) normalised as nibble's loader\n"
            "                   does, output \"logits\" (OUT default: .onnx)\n"
            "  --opset N        ONNX opset, 13 to 17 (default 13)\n"
            "  --data FILE      dataset whose normalisation (mean, std) the file records\n"
            "                   (default: the checkpoint config's data.path; without one\n"
            "                   the file says the normalisation is unknown)\n"
            "\n"
            "The integer codes are read back from each quantizer's own forward and checked\n"
            "to reproduce the fake-quant weights bit for bit. Exit codes: 0 success, 2 bad\n"
            "usage or bad input, 1 internal failure.\n");
}

/* OUT from the checkpoint's path: "runs/x/best.h5" -> "runs/x/best<ext>". */
static void default_out(const char *ckpt, const char *ext, char *out, size_t n) {
    const size_t len = strlen(ckpt);
    const size_t stem = len > 3 && !strcmp(ckpt + len - 3, ".h5") ? len - 3 : len;
    snprintf(out, n, "%.*s%s", (int)stem, ckpt, ext);
}

/* Input channels and size the checkpoint's model was built for, and the
 * dataset's normalisation into x_norm (unknown without the dataset). */
static nb_status model_shape(const nb_config *cfg, const char *data, nb_xmodel *x_norm, int *C, int *size) {
    nb_config c = *cfg;
    if (data) {
        snprintf(c.data.path, sizeof c.data.path, "%s", data);
        c.data.train_count = c.data.test_count = 0;
    }
    nb_dataset *ds = NULL;
    nb_loader *l = NULL;
    nb_status st = nb_run_open_split(&c, "test", &ds);
    if (st == NB_OK) st = nb_run_loader(&c, ds, 0, 1, &l);
    if (st == NB_OK) {
        *C = nb_dataset_channels(ds);
        *size = nb_loader_out_h(l);
        x_norm->n_norm = *C <= 4 ? *C : 0;
        for (int i = 0; i < x_norm->n_norm; i++) {
            x_norm->mean[i] = nb_dataset_mean(ds)[i];
            x_norm->std[i] = nb_dataset_std(ds)[i];
        }
    } else if (!data) { /* the config's dataset is optional, an explicit --data is not */
        fprintf(stderr, "nibble export: note: %s (the normalisation stays unknown; use --data)\n", nb_last_error());
        st = NB_OK;
        *C = 3;
        *size = c.data.size > 0 ? c.data.size : 32;
    }
    nb_loader_free(l);
    nb_dataset_free(ds);
    return st;
}

int nb_cmd_export(int argc, char **argv) {
    static const struct option longopts[] = {{"format", required_argument, 0, 'f'}, {"output", required_argument, 0, 'o'},
                                             {"opset", required_argument, 0, 's'},  {"data", required_argument, 0, 'd'},
                                             {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    const char *format = "nibble", *out = NULL, *data = NULL;
    long opset = 13;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (strcmp(optarg, "nibble") && strcmp(optarg, "onnx")) {
                fprintf(stderr, "nibble export: --format expects nibble or onnx, got '%s'\n", optarg);
                return 2;
            }
            format = optarg;
            break;
        case 'o': out = optarg; break;
        case 's':
            if (!nb_cli_parse_long("export", "--opset", optarg, 13, 17, &opset)) return 2;
            break;
        case 'd': data = optarg; break;
        case 'h': export_usage(stdout); return 0;
        default:
            fprintf(stderr, "nibble export: unknown or incomplete option '%s'\n", argv[optind - 1]);
            export_usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "nibble export: expected one CHECKPOINT.h5\n");
        export_usage(stderr);
        return 2;
    }
    const int onnx = !strcmp(format, "onnx");
    const char *ckpt = argv[optind];
    char outbuf[4096];
    if (!out) {
        default_out(ckpt, onnx ? ".onnx" : ".nq.h5", outbuf, sizeof outbuf);
        out = outbuf;
    }
    nb_config cfg;
    nb_model *m = NULL;
    nb_xmodel *x = NULL, norm = {0};
    char *json = NULL;
    int C = 3, size = 32;
    nb_status st = nb_checkpoint_read_config(ckpt, &json, NULL, 0);
    if (st == NB_OK) st = nb_config_parse(json, ckpt, NULL, 0, &cfg);
    if (st == NB_OK) st = model_shape(&cfg, data, &norm, &C, &size);
    if (st == NB_OK) st = nb_model_from_config(&cfg, ckpt, C, size, &m);
    if (st == NB_OK) st = nb_export_build(m, &x);
    if (st == NB_OK) {
        x->n_norm = norm.n_norm;
        memcpy(x->mean, norm.mean, sizeof x->mean);
        memcpy(x->std, norm.std, sizeof x->std);
        x->config_json = json; /* the file records the training config */
        json = NULL;
        st = onnx ? nb_export_onnx(x, out, (int)opset) : nb_export_write_packed(x, out);
    }
    nb_free(json);
    if (st == NB_OK) {
        struct stat sb;
        const long bytes = stat(out, &sb) == 0 ? (long)sb.st_size : -1;
        nb_export_summary(x, stdout);
        printf("wrote %s (%s, %ld bytes)\n", out, onnx ? "ONNX QDQ" : "packed", bytes);
    }
    nb_xmodel_free(x);
    nb_model_free(m);
    if (st != NB_OK) {
        fprintf(stderr, "nibble export: %s\n", nb_last_error());
        return nb_cli_exit_code(st);
    }
    return 0;
}
