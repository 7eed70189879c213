/* `nibble eval CHECKPOINT [--data FILE] [--split S] [--json]`. */
#include <getopt.h>
#include <math.h>
#include <string.h>

#include "nb_cli.h"
#include "run_internal.h"

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: nibble eval CHECKPOINT.h5 [--data FILE.h5|synthetic:NAME] [--split test|train]\n"
            "                   [--batch N] [--threads N] [--json]\n"
            "\n"
            "Evaluates a checkpoint (model and settings from the config stored in it) on a\n"
            "split without augmentation: top-1, top-5, mean cross-entropy and the count.\n"
            "\n"
            "  --data FILE   dataset (default: the checkpoint config's data.path)\n"
            "  --split S     test (default) or train\n"
            "  --batch N     batch size (default 256)\n"
            "  --threads N   worker threads (default: the config's)\n"
            "  --json        one JSON object with keys top1, top5 (fractions), loss (null\n"
            "                when NaN or Inf), n, nonfinite (images with NaN or Inf logits)\n"
            "\n"
            "--data must have the model's number of classes. Images whose logits are not\n"
            "finite count as wrong; when there are any, the result is printed and the exit\n"
            "status is 1. Exit codes: 0 success, 2 bad usage or bad input (or out of\n"
            "memory), 1 non-finite logits or internal failure.\n");
}

/* The result line, or one JSON object; a NaN or Inf loss is JSON null. */
static void print_result(const nb_eval_result *r, int json, const char *ckpt, const char *data,
                         const char *split) {
    char loss[32];
    if (json) {
        if (isfinite(r->loss)) snprintf(loss, sizeof loss, "%.6f", r->loss);
        else snprintf(loss, sizeof loss, "null");
        printf("{\"top1\": %.6f, \"top5\": %.6f, \"loss\": %s, \"n\": %ld, \"nonfinite\": %ld}\n",
               r->top1, r->top5, loss, r->n, r->nonfinite);
        return;
    }
    if (isfinite(r->loss)) snprintf(loss, sizeof loss, "%.4f", r->loss);
    else snprintf(loss, sizeof loss, "%s", isnan(r->loss) ? "NaN" : "Inf");
    printf("%s on %s (%s): top-1 %.2f%% top-5 %.2f%% loss %s (%ld images", ckpt, data, split,
           100.0 * r->top1, 100.0 * r->top5, loss, r->n);
    if (r->nonfinite) printf(", %ld with NaN or Inf logits", r->nonfinite);
    printf(")\n");
}

int nb_cmd_eval(int argc, char **argv) {
    static const struct option longopts[] = {
        {"data", required_argument, 0, 'd'}, {"split", required_argument, 0, 'p'},
        {"batch", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *data = NULL, *split = "test";
    long batch = 256, threads = 0;
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'p':
            if (strcmp(optarg, "test") && strcmp(optarg, "train")) {
                fprintf(stderr, "nibble eval: --split expects test or train, got '%s'\n", optarg);
                return 2;
            }
            split = optarg;
            break;
        case 'b':
            if (!nb_cli_parse_long("eval", "--batch", optarg, 1, 65536, &batch)) return 2;
            break;
        case 't':
            if (!nb_cli_parse_long("eval", "--threads", optarg, 1, 1024, &threads)) return 2;
            break;
        case 'j': json = 1; break;
        case 'h': eval_usage(stdout); return 0;
        default:
            fprintf(stderr, "nibble eval: unknown or incomplete option '%s'\n", argv[optind - 1]);
            eval_usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "nibble eval: expected one CHECKPOINT.h5\n");
        eval_usage(stderr);
        return 2;
    }
    const char *ckpt = argv[optind];
    nb_config cfg;
    nb_status st = nb_config_from_checkpoint(ckpt, NULL, 0, &cfg);
    nb_dataset *ds = NULL;
    nb_loader *l = NULL;
    nb_model *m = NULL;
    nb_tape *tape = NULL;
    nb_eval_result r = {0};
    if (st != NB_OK) goto done;
    if (data) {
        snprintf(cfg.data.path, sizeof cfg.data.path, "%s", data);
        cfg.data.train_count = cfg.data.test_count = 0;
    }
    nb_set_threads(threads > 0 ? (int)threads : cfg.threads > 0 ? cfg.threads : 2);
    if ((st = nb_run_open_split(&cfg, split, &ds)) != NB_OK) goto done;
    if ((st = nb_run_loader(&cfg, ds, 0, (int)batch, &l)) != NB_OK) goto done;
    /* Only cfg's model settings and seed shape the model, not the --data change above. */
    st = nb_model_from_config(&cfg, ckpt, nb_dataset_channels(ds), nb_loader_out_h(l), &m);
    if (st != NB_OK) goto done;
    /* Another data file must have exactly the model's classes (with fewer,
     * top-5 of a model with up to 5 more classes means nothing). */
    if (data ? m->opts.num_classes != nb_dataset_classes(ds)
             : m->opts.num_classes < nb_dataset_classes(ds)) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s has %d classes, the model in %s has %d",
                          cfg.data.path, nb_dataset_classes(ds), ckpt, m->opts.num_classes);
        goto done;
    }
    if (!(tape = nb_tape_new())) {
        st = NB_STATUS_OOM;
        goto done;
    }
    if ((st = nb_loader_start_epoch(l, 0)) == NB_OK) st = nb_evaluate(m, l, tape, &r);
done:
    nb_tape_free(tape);
    nb_model_free(m);
    nb_loader_free(l);
    nb_dataset_free(ds);
    if (st != NB_OK) {
        fprintf(stderr, "nibble eval: %s\n", nb_last_error());
        return nb_cli_exit_code(st);
    }
    print_result(&r, json, ckpt, cfg.data.path, split);
    if (r.nonfinite) {
        fprintf(stderr,
                "nibble eval: %ld of %ld images gave NaN or Inf logits (counted as wrong): the "
                "weights in %s are not finite (HINT: a diverged run; evaluate an earlier checkpoint)\n",
                r.nonfinite, r.n, ckpt);
        return 1;
    }
    return 0;
}
