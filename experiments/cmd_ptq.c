/* `nibble ptq CONFIG [--set KEY=VALUE]...`: post-training quantization of an
 * FP32 checkpoint (init.checkpoint): fold batchnorm, attach the config's
 * quant policy, calibrate on training batches, evaluate on the test split
 * and write the quantized checkpoint into output.dir. */
#include <getopt.h>
#include <string.h>
#include <unistd.h>

#include "nb_cli.h"
#include "run_internal.h"

static void ptq_usage(FILE *f) {
    fprintf(f,
            "usage: nibble ptq CONFIG.json [--set KEY=VALUE]...\n"
            "\n"
            "Post-training quantization: loads the FP32 checkpoint init.checkpoint, folds\n"
            "batchnorm into the convolutions, attaches the config's quant section\n"
            "(docs/configs.md), calibrates the activation observers on\n"
            "quant.calibration.batches batches of quant.calibration.batch_size training\n"
            "images (shuffled, not augmented), computes the weight scales, evaluates the\n"
            "quantized and the FP32 network on the test split, and writes the quantized\n"
            "checkpoint output.dir/last.h5 (read by nibble eval and nibble inspect), with\n"
            "config.json and result.json (top-1, top-5, loss, FP32 top-1, seconds).\n"
            "\n"
            "  --set KEY=VALUE   override a config key, e.g. --set quant.weights.bits=4\n"
            "\n"
            "Exit codes: 0 success, 2 bad usage or bad input (nothing is written then), 1 failure.\n");
}

typedef struct {
    nb_config c;
    nb_dataset *dtr, *dte;
    nb_loader *lte;
    nb_model *m;
    nb_tape *tape;
    char *json;
} ptq_run;

static void ptq_free(ptq_run *r) {
    nb_tape_free(r->tape);
    nb_model_free(r->m);
    nb_loader_free(r->lte);
    nb_dataset_free(r->dtr);
    nb_dataset_free(r->dte);
    nb_free(r->json);
}

int nb_cmd_ptq(int argc, char **argv) {
    static const struct option longopts[] = {
        {"set", required_argument, 0, 's'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *sets[64];
    int n_sets = 0, opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            if (n_sets == (int)(sizeof sets / sizeof sets[0])) {
                fprintf(stderr, "nibble ptq: at most 64 --set options\n");
                return 2;
            }
            sets[n_sets++] = optarg;
            break;
        case 'h': ptq_usage(stdout); return 0;
        default:
            fprintf(stderr, "nibble ptq: unknown or incomplete option '%s'\n", argv[optind - 1]);
            ptq_usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "nibble ptq: expected one CONFIG.json\n");
        ptq_usage(stderr);
        return 2;
    }
    ptq_run r = {0};
    nb_config *c = &r.c;
    const double t0 = nb_now();
    nb_eval_result q = {0}, fp = {0};
    double calib_s = 0.0;
    char last[NB_CFG_PATH_MAX + 16] = "", path[NB_CFG_PATH_MAX + 32];
    nb_status st = nb_config_load(argv[optind], sets, n_sets, c);
    if (st != NB_OK) goto done;
    const char *src = c->source;
    if (!c->init.checkpoint[0]) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: init.checkpoint: ptq quantizes a trained FP32 checkpoint; set "
                          "init.checkpoint (e.g. experiments/pretrained/cifar10_resnet20_fp32_e100.h5)",
                          src);
        goto done;
    }
    if (!nb_quant_enabled(&c->quant)) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: quant: nothing to quantize (quant.weights.method and "
                          "quant.activations.method are \"none\")", src);
        goto done;
    }
    snprintf(last, sizeof last, "%s/last.h5", c->output.dir);
    if (access(last, F_OK) == 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s already exists: choose another directory with --set output.dir=...", last);
        goto done;
    }
    nb_set_threads(c->threads > 0 ? c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    if ((st = nb_run_open_split(c, "train", &r.dtr)) != NB_OK) goto done;
    if ((st = nb_run_open_split(c, "test", &r.dte)) != NB_OK) goto done;
    if ((st = nb_run_loader(c, r.dte, 0, 256, &r.lte)) != NB_OK) goto done;
    const int C = nb_dataset_channels(r.dte), size = nb_loader_out_h(r.lte);
    nb_rng rng;
    nb_rng_seed(&rng, c->seed, 0);
    if (!(r.m = nb_config_build_model(c, C, size, nb_dataset_classes(r.dte), &rng))) {
        st = NB_STATUS_BAD_INPUT;
        goto done;
    }
    /* The FP32 network, strictly: a checkpoint that is already quantized
     * or of another architecture is refused here. */
    if ((st = nb_checkpoint_load_model(c->init.checkpoint, r.m, 1)) != NB_OK) goto done;
    if ((st = nb_checkpoint_load_quant(c->init.checkpoint, r.m)) != NB_OK) goto done;
    if (!(r.tape = nb_tape_new())) {
        st = NB_STATUS_OOM;
        goto done;
    }
    nb_log(NB_LOG_INFO, "%s: FP32 %s from %s; %d calibration batches of %d from %s", c->name, c->model.arch,
           c->init.checkpoint, c->quant.calib_batches, c->quant.calib_batch_size, nb_dataset_path(r.dtr));
    if ((st = nb_loader_start_epoch(r.lte, 0)) != NB_OK || (st = nb_evaluate(r.m, r.lte, r.tape, &fp)) != NB_OK)
        goto done;
    nb_quant_fold_bn(r.m); /* ALGORITHMS.md §3: fold before calibrating the weights */
    c->quant.fold_bn = 1;
    if ((st = nb_config_quantize_model(c, r.m)) != NB_OK) goto done;
    nb_quant_summary(r.m);
    const double tc = nb_now();
    if ((st = nb_run_calibrate(c, r.m, r.dtr, r.tape, stderr)) != NB_OK) goto done;
    calib_s = nb_now() - tc;
    if ((st = nb_loader_start_epoch(r.lte, 0)) != NB_OK || (st = nb_evaluate(r.m, r.lte, r.tape, &q)) != NB_OK)
        goto done;
    /* Everything computed: now write (a failure above leaves nothing). */
    r.c.model.num_classes = r.m->opts.num_classes;
    if (!strcmp(r.c.model.stem, "auto"))
        snprintf(r.c.model.stem, sizeof r.c.model.stem, "%s",
                 nb_stem_resolve(NB_STEM_AUTO, size) == NB_STEM_IMAGENET ? "imagenet" : "cifar");
    if (!(r.json = nb_config_to_json(c))) {
        st = NB_STATUS_OOM;
        goto done;
    }
    if ((st = nb_run_mkdirs(c->output.dir)) != NB_OK) goto done;
    snprintf(path, sizeof path, "%s/config.json", c->output.dir);
    if ((st = nb_run_write_text(path, r.json)) != NB_OK) goto done;
    nb_ckpt_meta meta = {.best_top1 = q.top1, .config_json = r.json};
    nb_rng_seed(&meta.rng, c->seed, 0);
    if ((st = nb_checkpoint_save(last, r.m, NULL, &meta)) != NB_OK) goto done;
    char result[512];
    snprintf(result, sizeof result,
             "{\"top1\": %.6f, \"top5\": %.6f, \"loss\": %.6f, \"n\": %ld, \"fp32_top1\": %.6f, "
             "\"calibration_s\": %.2f, \"seconds\": %.2f}\n",
             q.top1, q.top5, q.loss, q.n, fp.top1, calib_s, nb_now() - t0);
    snprintf(path, sizeof path, "%s/result.json", c->output.dir);
    st = nb_run_write_text(path, result);
done:
    ptq_free(&r);
    if (st != NB_OK) {
        fprintf(stderr, "nibble ptq: %s\n", nb_last_error());
        return nb_cli_exit_code(st);
    }
    printf("%s: test top-1 %.2f%% top-5 %.2f%% loss %.4f (%ld images), FP32 top-1 %.2f%%, calibration "
           "%.1f s, %.1f s; checkpoint %s\n",
           c->name, 100.0 * q.top1, 100.0 * q.top5, q.loss, q.n, 100.0 * fp.top1, calib_s, nb_now() - t0, last);
    return 0;
}
