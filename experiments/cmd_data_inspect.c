/* `nibble data inspect`: validate both splits, print counts per split and
 * class, mean/std and provenance, optionally write a contact sheet. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd_data.h"

static void inspect_usage(FILE *f) {
    fprintf(f,
            "usage: nibble data inspect FILE.h5|synthetic:shapes10 [--sheet OUT.png]\n"
            "                           [--per-class K] [--split train|test] [--seed N]\n"
            "                           [--augment] [--rrc] [--size S]\n"
            "\n"
            "Validates both splits against the dataset schema and prints the counts per\n"
            "split and class, mean/std and the source. With --sheet, writes a PNG contact\n"
            "sheet: one row per class with its first K examples (file order). Files are\n"
            "streamed (never loaded whole), so this works on files of any size.\n"
            "\n"
            "  --sheet OUT.png  write the contact sheet\n"
            "  --per-class K    examples per class on the sheet (default 8)\n"
            "  --split NAME     split shown on the sheet (default train)\n"
            "  --seed N         seed of a synthetic set and of the augmentation (default 0)\n"
            "  --augment        show the examples as the training loader makes them (pad 4\n"
            "                   + random crop + flip, epoch 0)\n"
            "  --rrc            ... with random-resized-crop instead of pad + crop\n"
            "  --size S         output size S (default native); without --augment the\n"
            "                   evaluation view (center crop or zero pad)\n");
}

/* The first per_class examples of each class as the loader makes them
 * (augmented, or the evaluation view at another size), mapped back to
 * pixels, on a contact sheet. */
static nb_status augmented_sheet(nb_dataset *ds, int per_class, int augment, int rrc, int size,
                                 uint64_t seed, const char *path) {
    nb_loader_opts o = nb_loader_opts_default();
    o.augment = augment;
    o.shuffle = 0;
    o.prefetch = 0;
    o.rrc = rrc;
    o.out_h = o.out_w = size;
    o.seed = seed;
    nb_loader *l = NULL;
    nb_status st = nb_loader_new(ds, &o, &l);
    if (st != NB_OK) return st;
    int K = nb_dataset_classes(ds), C = nb_dataset_channels(ds);
    int oh = nb_loader_out_h(l), ow = nb_loader_out_w(l);
    size_t ex = (size_t)C * (size_t)oh * (size_t)ow, cap = (size_t)K * (size_t)per_class, n = 0;
    uint8_t *img = nb_malloc(cap * ex), *lab = nb_malloc(cap);
    int *filled = nb_calloc((size_t)K, sizeof(int));
    const char **names = nb_malloc((size_t)K * sizeof(char *));
    const float *mean = nb_dataset_mean(ds), *std = nb_dataset_std(ds);
    if (!img || !lab || !filled || !names) {
        st = NB_STATUS_OOM;
        goto done;
    }
    for (int k = 0; k < K; k++) names[k] = nb_dataset_class_name(ds, k);
    nb_loader_start_epoch(l, 0);
    const float *x;
    const int32_t *y;
    int bn;
    while (n < cap && (st = nb_loader_next(l, &x, &y, &bn)) == NB_OK && bn > 0)
        for (int i = 0; i < bn && n < cap; i++) {
            if (filled[y[i]] == per_class) continue;
            filled[y[i]]++;
            for (size_t k = 0; k < ex; k++) {
                size_t c = k / ((size_t)oh * (size_t)ow);
                float v = (x[(size_t)i * ex + k] * std[c] + mean[c]) * 255.0f;
                img[n * ex + k] = (uint8_t)(v <= 0.0f ? 0 : v >= 255.0f ? 255 : (int)(v + 0.5f));
            }
            lab[n++] = (uint8_t)y[i];
        }
    if (st == NB_OK) {
        nb_dataset *aug = NULL;
        st = nb_dataset_from_arrays(nb_dataset_name(ds), K, names, C, oh, ow, n, img, lab, mean,
                                    std, &aug);
        if (st == NB_OK) st = nb_dataset_contact_sheet(aug, per_class, path);
        nb_dataset_free(aug);
    }
done:
    nb_free(img);
    nb_free(lab);
    nb_free(filled);
    nb_free(names);
    nb_loader_free(l);
    return st;
}

int nb_data_inspect(int argc, char **argv) {
    const char *cmd = "inspect", *sheet = NULL, *sheet_split = "train";
    long per_class = 8, seed = 0, size = 0;
    int augment = 0, rrc = 0;
    static const struct option longopts[] = {
        {"sheet", required_argument, 0, 'o'}, {"per-class", required_argument, 0, 'k'},
        {"split", required_argument, 0, 's'}, {"seed", required_argument, 0, 'r'},
        {"augment", no_argument, 0, 'a'},     {"rrc", no_argument, 0, 'R'},
        {"size", required_argument, 0, 'z'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': sheet = optarg; break;
        case 'k':
            if (!nb_data_parse_long(cmd, "--per-class", optarg, 1, 256, &per_class)) return 2;
            break;
        case 's':
            if (strcmp(optarg, "train") && strcmp(optarg, "test")) {
                fprintf(stderr, "nibble data inspect: --split expects train or test, got '%s'\n",
                        optarg);
                return 2;
            }
            sheet_split = optarg;
            break;
        case 'r':
            if (!nb_data_parse_long(cmd, "--seed", optarg, 0, 2147483647, &seed)) return 2;
            break;
        case 'a': augment = 1; break;
        case 'R': rrc = augment = 1; break;
        case 'z':
            if (!nb_data_parse_long(cmd, "--size", optarg, 1, 4096, &size)) return 2;
            break;
        case 'h': inspect_usage(stdout); return 0;
        default:
            fprintf(stderr, "nibble data inspect: unknown or incomplete option '%s'\n",
                    argv[optind - 1]);
            inspect_usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 1) {
        fprintf(stderr, "nibble data inspect: expected one FILE.h5 or synthetic:NAME, got %d\n",
                argc - optind);
        inspect_usage(stderr);
        return 2;
    }
    const char *src = argv[optind];
    nb_dataset_opts o = nb_dataset_opts_default();
    o.force_stream = 1;
    nb_dataset *sp[2] = {NULL, NULL};
    static const char *const names[2] = {"train", "test"};
    for (int s = 0; s < 2; s++) {
        nb_status st = nb_dataset_open_source(src, names[s], &o, (uint64_t)seed, &sp[s]);
        if (st != NB_OK) {
            nb_dataset_free(sp[0]);
            return nb_data_fail(cmd, st);
        }
    }
    nb_dataset *tr = sp[0];
    int C = nb_dataset_channels(tr), K = nb_dataset_classes(tr);
    printf("%s: %s, %d classes, %dx%dx%d (C x H x W), schema ok\n", src, nb_dataset_name(tr), K, C,
           nb_dataset_height(tr), nb_dataset_width(tr));
    printf("source: %s\n", nb_dataset_source(tr)[0] ? nb_dataset_source(tr) : "(none)");
    printf("mean:");
    for (int i = 0; i < C; i++) printf(" %.4f", (double)nb_dataset_mean(tr)[i]);
    printf("\nstd: ");
    for (int i = 0; i < C; i++) printf(" %.4f", (double)nb_dataset_std(tr)[i]);
    printf("\n\n%-20s %10s %10s\n", "class", "train", "test");
    size_t *counts = nb_calloc(2 * (size_t)K, sizeof(size_t));
    if (!counts) {
        nb_dataset_free(sp[0]);
        nb_dataset_free(sp[1]);
        return nb_data_fail(cmd, NB_STATUS_OOM);
    }
    for (int s = 0; s < 2; s++) {
        const uint8_t *lab = nb_dataset_labels(sp[s]);
        for (size_t i = 0; i < nb_dataset_count(sp[s]); i++) counts[(size_t)s * K + lab[i]]++;
    }
    for (int k = 0; k < K; k++)
        printf("%3d %-16s %10zu %10zu\n", k, nb_dataset_class_name(tr, k), counts[k],
               counts[(size_t)K + k]);
    printf("%-20s %10zu %10zu\n", "total", nb_dataset_count(sp[0]), nb_dataset_count(sp[1]));
    nb_free(counts);
    int rc = 0;
    if (sheet) {
        nb_dataset *ds = sp[!strcmp(sheet_split, "test")];
        nb_status st = augment || size
                           ? augmented_sheet(ds, (int)per_class, augment, rrc, (int)size, (uint64_t)seed,
                                             sheet)
                           : nb_dataset_contact_sheet(ds, (int)per_class, sheet);
        if (st != NB_OK) rc = nb_data_fail(cmd, st);
        else
            printf("contact sheet (%s, %ld per class%s): %s\n", sheet_split, per_class,
                   rrc       ? ", random-resized-crop + flip"
                   : augment ? ", pad + crop + flip"
                   : size    ? ", evaluation view"
                             : "",
                   sheet);
    }
    nb_dataset_free(sp[0]);
    nb_dataset_free(sp[1]);
    return rc;
}
