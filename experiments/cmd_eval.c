/* `nibble eval CHECKPOINT [--data FILE] [--split S] [--json]`. */
#include <getopt.h>
#include <math.h>
#include <string.h>

#include "nb_cli.h"
#include "nb_export.h"
#include "run_internal.h"

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: nibble eval CHECKPOINT.h5 [--data FILE.h5|synthetic:NAME] [--split test|train]\n"
            "                   [--batch N] [--threads N] [--json] [--engine fake|int]\n"
            "       nibble eval MODEL.nq.h5 [--compare CHECKPOINT.h5] [same options]\n"
            "\n"
            "Evaluates a checkpoint (model and settings from the config stored in it) on a\n"
            "split without augmentation: top-1, top-5, mean cross-entropy and the count.\n"
            "\n"
            "  --engine fake (default for checkpoints) nibble's float forward, with fake\n"
            "                quantization for a quantized model\n"
            "  --engine int  (the only engine for packed exports) the integer reference\n"
            "                engine (docs/export.md): convolutions on integer codes with\n"
            "                int32 accumulation or codebook lookup, fixed-point\n"
            "                requantization; on a checkpoint it also runs the fake-quant\n"
            "                model on the same images and prints both, the largest logit\n"
            "                difference and how many top-1 answers agree\n"
            "  --compare CKPT  with a packed export: the same comparison against CKPT\n"
            "  --dump DIR    with the integer engine: raw little-endian files in DIR (which\n"
            "                must exist): images.f32 (the normalised inputs), labels.i32,\n"
            "                logits_int.f32 and, with a fake-quant model, logits_fake.f32\n"
            "                (for scripts/ort_eval.js, docs/export.md)\n"
            "\n"
            "  --data FILE   dataset (default: the checkpoint config's data.path)\n"
            "  --split S     test (default) or train\n"
            "  --batch N     batch size (default 256)\n"
            "  --threads N   worker threads (default: the config's)\n"
            "  --json        one JSON object with keys top1, top5 (fractions), loss (null\n"
            "                when NaN or Inf), n, nonfinite (images with NaN or Inf logits);\n"
            "                with a comparison also fake_top1, max_logit_diff, top1_agree\n"
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

typedef struct {
    const char *path;
    int packed, engine_int;
    const char *compare, *data, *split, *dump;
    int batch, threads, json;
} eval_args;

/* The config a packed export was trained with (its data settings). */
static nb_status packed_config(const char *path, const nb_xmodel *x, const char *data, nb_config *cfg) {
    if (x->config_json) return nb_config_parse(x->config_json, path, NULL, 0, cfg);
    if (!data)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s has no training config to find its data in: pass --data FILE.h5",
                            path);
    nb_config_defaults(cfg);
    return NB_OK;
}

/* The integer engine's result line(s) or JSON object, with the fake-quant
 * model's beside it when one ran (ref_path). */
static void print_int(const eval_args *a, const char *data, const nb_eval_result *r, const char *ref_path,
                      const nb_eval_result *rr, const nb_eval_compare *k) {
    if (a->json) {
        char loss[32];
        if (isfinite(r->loss)) snprintf(loss, sizeof loss, "%.6f", r->loss);
        else snprintf(loss, sizeof loss, "null");
        printf("{\"engine\": \"int\", \"top1\": %.6f, \"top5\": %.6f, \"loss\": %s, \"n\": %ld, \"nonfinite\": %ld",
               r->top1, r->top5, loss, r->n, r->nonfinite);
        if (ref_path)
            printf(", \"fake_top1\": %.6f, \"max_logit_diff\": %.6g, \"top1_agree\": %ld", rr->top1, k->max_abs_diff,
                   k->top1_agree);
        printf("}\n");
        return;
    }
    print_result(r, 0, a->path, data, a->split);
    printf("  engine: int (integer codes, int32 accumulation)\n");
    if (ref_path)
        printf("  fake-quant %s: top-1 %.2f%% top-5 %.2f%%; logits: largest |difference| %.3g, same top-1 on %ld "
               "of %ld images\n",
               ref_path, 100.0 * rr->top1, 100.0 * rr->top5, k->max_abs_diff, k->top1_agree, k->n);
}

/* A checkpoint on the fake-quant forward (or, with engine_int, on the
 * integer engine exported in memory, beside the fake-quant forward), or a
 * packed export on the integer engine (beside --compare's checkpoint). */
static int run_eval(const eval_args *a) {
    nb_config cfg;
    nb_xmodel *x = NULL;
    nb_model *m = NULL;
    nb_int_engine *e = NULL;
    nb_dataset *ds = NULL;
    nb_loader *l = NULL;
    nb_tape *tape = NULL;
    nb_eval_result r = {0}, rr = {0};
    nb_eval_compare k = {0};
    const char *model_path = a->packed ? a->compare : a->path; /* the checkpoint run in float, if any */
    nb_status st = a->packed ? nb_export_read_packed(a->path, &x) : nb_config_from_checkpoint(a->path, NULL, 0, &cfg);
    if (st == NB_OK && a->packed) st = packed_config(a->path, x, a->data, &cfg);
    if (st != NB_OK) goto done;
    if (a->data) {
        snprintf(cfg.data.path, sizeof cfg.data.path, "%s", a->data);
        cfg.data.train_count = cfg.data.test_count = 0;
    }
    nb_set_threads(a->threads > 0 ? a->threads : cfg.threads > 0 ? cfg.threads : 2);
    if ((st = nb_run_open_split(&cfg, a->split, &ds)) != NB_OK) goto done;
    if ((st = nb_run_loader(&cfg, ds, 0, a->batch, &l)) != NB_OK) goto done;
    if (model_path) {
        /* Only the checkpoint config's model settings and seed shape the model, not --data. */
        nb_config mc;
        if (a->packed && (st = nb_config_from_checkpoint(model_path, NULL, 0, &mc)) != NB_OK) goto done;
        st = nb_model_from_config(a->packed ? &mc : &cfg, model_path, nb_dataset_channels(ds), nb_loader_out_h(l), &m);
        if (st != NB_OK) goto done;
    }
    if (a->engine_int && !a->packed && (st = nb_export_build(m, &x)) != NB_OK) goto done;
    /* Another data file must have exactly the model's classes (with fewer,
     * top-5 of a model with up to 5 more classes means nothing). */
    const int classes = m ? m->opts.num_classes : x->opts.num_classes;
    if (a->data ? classes != nb_dataset_classes(ds) : classes < nb_dataset_classes(ds)) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s has %d classes, the model in %s has %d", cfg.data.path,
                          nb_dataset_classes(ds), m ? model_path : a->path, classes);
        goto done;
    }
    if (x && (nb_dataset_channels(ds) != x->in_c || nb_loader_out_h(l) != x->in_h || classes != x->opts.num_classes)) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: the model takes %dx%dx%d images and gives %d classes; %s has %dx%dx%d images%s%s",
                          a->path, x->in_c, x->in_h, x->in_w, x->opts.num_classes, cfg.data.path,
                          nb_dataset_channels(ds), nb_loader_out_h(l), nb_loader_out_w(l),
                          m ? ", and the model in " : "", m ? model_path : "");
        goto done;
    }
    if (x && (st = nb_int_engine_new(x, &e)) != NB_OK) goto done;
    if (!(tape = nb_tape_new())) {
        st = NB_STATUS_OOM;
        goto done;
    }
    if ((st = nb_loader_start_epoch(l, 0)) == NB_OK)
        st = e ? nb_evaluate_int(e, classes, m, l, tape, a->dump, &r, &rr, &k) : nb_evaluate(m, l, tape, &r);
done:
    nb_tape_free(tape);
    nb_int_engine_free(e);
    nb_xmodel_free(x);
    nb_model_free(m);
    nb_loader_free(l);
    nb_dataset_free(ds);
    if (st != NB_OK) {
        fprintf(stderr, "nibble eval: %s\n", nb_last_error());
        return nb_cli_exit_code(st);
    }
    if (a->engine_int) print_int(a, cfg.data.path, &r, model_path, &rr, &k);
    else print_result(&r, a->json, a->path, cfg.data.path, a->split);
    if (r.nonfinite) {
        fprintf(stderr,
                "nibble eval: %ld of %ld images gave NaN or Inf logits (counted as wrong): the "
                "weights in %s are not finite (HINT: a diverged run; evaluate an earlier checkpoint)\n",
                r.nonfinite, r.n, a->path);
        return 1;
    }
    return 0;
}

int nb_cmd_eval(int argc, char **argv) {
    static const struct option longopts[] = {
        {"data", required_argument, 0, 'd'}, {"split", required_argument, 0, 'p'},
        {"batch", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'},       {"help", no_argument, 0, 'h'},
        {"engine", required_argument, 0, 'e'}, {"compare", required_argument, 0, 'c'},
        {"dump", required_argument, 0, 'u'},
        {0, 0, 0, 0}};
    const char *data = NULL, *split = "test", *engine = NULL, *compare = NULL, *dump = NULL;
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
        case 'e':
            if (strcmp(optarg, "fake") && strcmp(optarg, "int")) {
                fprintf(stderr, "nibble eval: --engine expects fake or int, got '%s'\n", optarg);
                return 2;
            }
            engine = optarg;
            break;
        case 'c': compare = optarg; break;
        case 'u': dump = optarg; break;
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
    const int packed = nb_export_is_packed(ckpt), engine_int = packed || (engine && !strcmp(engine, "int"));
    if (packed && engine && !strcmp(engine, "fake")) {
        fprintf(stderr, "nibble eval: %s is a packed export: it runs on --engine int only\n", ckpt);
        return 2;
    }
    if (dump && !engine_int) {
        fprintf(stderr, "nibble eval: --dump goes with the integer engine (--engine int or a packed export)\n");
        return 2;
    }
    if (compare && !packed) {
        fprintf(stderr, "nibble eval: --compare goes with a packed export (MODEL.nq.h5); for a checkpoint use "
                        "--engine int\n");
        return 2;
    }
    const eval_args a = {ckpt, packed, engine_int, compare, data, split, dump, (int)batch, (int)threads, json};
    return run_eval(&a);
}
