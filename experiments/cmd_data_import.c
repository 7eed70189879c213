/* `nibble data import-cifar10` and `nibble data import-folder`. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd_data.h"

static void cifar_usage(FILE *f) {
    fprintf(f,
            "usage: nibble data import-cifar10 DIR OUT.h5 [--name NAME] [--force]\n"
            "\n"
            "Imports the official CIFAR-10 binary distribution (cifar-10-binary.tar.gz,\n"
            "extracted): DIR is cifar-10-batches-bin/ or its parent, holding\n"
            "data_batch_1..5.bin (train, 50,000), test_batch.bin (test, 10,000) and\n"
            "batches.meta.txt (class names). Each record is 1 label byte + 3072 pixel bytes\n"
            "(R, G, B planes of 32x32). Writes OUT.h5 in the dataset schema (official order,\n"
            "mean/std over train); the file appears only when complete.\n"
            "scripts/fetch-cifar10 downloads the archive and runs this.\n"
            "\n"
            "  --name NAME   the file's name attribute (default cifar10)\n"
            "  --force       replace OUT.h5 if it exists\n");
}

static void folder_usage(FILE *f) {
    fprintf(f,
            "usage: nibble data import-folder DIR OUT.h5 --size S [--name NAME] [--no-shuffle]\n"
            "                                 [--seed N] [--threads N] [--skip-bad] [--force]\n"
            "\n"
            "Imports ImageNet-style class folders:\n"
            "  DIR/train/<class>/<image>    train split\n"
            "  DIR/val/<class>/<image>      test split (DIR/test/<class>/... if there is no val/)\n"
            "Images are JPEG or PNG (.jpg, .jpeg, .png, any case; decoded by content), RGB or\n"
            "gray; hidden files are skipped. Classes are the sorted folder names under\n"
            "DIR/train; val/test classes must be among them. Each image is center-cropped to\n"
            "a square and resized to SxS with an antialiased bilinear filter. Nothing is\n"
            "dropped silently: a damaged image (a truncated JPEG, a bad PNG checksum: any\n"
            "decoder warning about the image data), an empty class folder and a folder\n"
            "inside a class folder are errors naming the path.\n"
            "\n"
            "  --size S       output height = width in pixels (required)\n"
            "  --name NAME    the file's name attribute (default: DIR's base name)\n"
            "  --no-shuffle   keep train in class/file-name order (default: shuffled once)\n"
            "  --seed N       seed of that shuffle (default 0)\n"
            "  --threads N    decoding threads (default 2)\n"
            "  --skip-bad     skip damaged or undecodable images, each named on stderr, and\n"
            "                 report how many were skipped\n"
            "  --force        replace OUT.h5 if it exists\n");
}

/* Shared option loop; folder = 1 enables the import-folder flags. */
static int run_import(int argc, char **argv, int folder) {
    const char *cmd = argv[0];
    nb_import_opts o = nb_import_opts_default();
    o.threads = 2;
    static const struct option longopts[] = {
        {"name", required_argument, 0, 'n'},  {"size", required_argument, 0, 's'},
        {"no-shuffle", no_argument, 0, 'S'},  {"seed", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 't'}, {"force", no_argument, 0, 'f'},
        {"skip-bad", no_argument, 0, 'B'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (!folder && (c == 's' || c == 'S' || c == 'r' || c == 't' || c == 'B')) c = '?';
        switch (c) {
        case 'n': o.name = optarg; break;
        case 'f': o.overwrite = 1; break;
        case 'S': o.shuffle = 0; break;
        case 'B': o.skip_bad = 1; break;
        case 's':
            if (!nb_data_parse_long(cmd, "--size", optarg, 1, 4096, &v)) return 2;
            o.size = (int)v;
            break;
        case 'r':
            if (!nb_data_parse_long(cmd, "--seed", optarg, 0, 2147483647, &v)) return 2;
            o.seed = (uint64_t)v;
            break;
        case 't':
            if (!nb_data_parse_long(cmd, "--threads", optarg, 1, 256, &v)) return 2;
            o.threads = (int)v;
            break;
        case 'h': (folder ? folder_usage : cifar_usage)(stdout); return 0;
        default:
            fprintf(stderr, "nibble data %s: unknown or incomplete option '%s'\n", cmd,
                    argv[optind - 1]);
            (folder ? folder_usage : cifar_usage)(stderr);
            return 2;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "nibble data %s: expected DIR and OUT.h5, got %d arguments\n", cmd,
                argc - optind);
        (folder ? folder_usage : cifar_usage)(stderr);
        return 2;
    }
    if (folder && o.size == 0) {
        fprintf(stderr, "nibble data %s: --size S is required\n", cmd);
        return 2;
    }
    const char *dir = argv[optind], *out = argv[optind + 1];
    nb_progress p;
    nb_progress_init(&p, cmd, 1, stderr);
    o.progress = nb_data_progress;
    o.progress_user = &p;
    double t0 = nb_now();
    nb_status st = folder ? nb_import_folder(dir, out, &o) : nb_import_cifar10(dir, out, &o);
    if (st != NB_OK) return nb_data_fail(cmd, st);
    nb_dataset *train = NULL, *test = NULL;
    nb_dataset_opts dopts = nb_dataset_opts_default();
    dopts.force_stream = 1; /* labels and attributes are enough here */
    if ((st = nb_dataset_open(out, "train", &dopts, &train)) != NB_OK ||
        (st = nb_dataset_open(out, "test", &dopts, &test)) != NB_OK) {
        nb_dataset_free(train);
        return nb_data_fail(cmd, st);
    }
    const float *m = nb_dataset_mean(train), *s = nb_dataset_std(train);
    printf("%s: %s, %d classes, %dx%dx%d, train %zu, test %zu, mean %.4f %.4f %.4f, std %.4f %.4f "
           "%.4f (%.1f s)\n",
           out, nb_dataset_name(train), nb_dataset_classes(train), nb_dataset_channels(train),
           nb_dataset_height(train), nb_dataset_width(train), nb_dataset_count(train),
           nb_dataset_count(test), (double)m[0], (double)m[1], (double)m[2], (double)s[0],
           (double)s[1], (double)s[2], nb_now() - t0);
    nb_dataset_free(train);
    nb_dataset_free(test);
    return 0;
}

int nb_data_import_cifar10(int argc, char **argv) { return run_import(argc, argv, 0); }
int nb_data_import_folder(int argc, char **argv) { return run_import(argc, argv, 1); }
