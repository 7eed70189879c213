/* `nibble bench`: throughput of the training step (forward, cross-entropy,
 * backward, SGD) and of inference on synthetic input, peak RSS and achieved
 * GFLOP/s. Matches ../shared/bench/torch_resnet20.py's measurement: median
 * step time after warm-up. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "nb_cli.h"
#include "nb_export.h"
#include "nibble.h"

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: nibble bench [--model NAME] [--batch N] [--threads N] [--steps N]\n"
            "                    [--warmup N] [--eval-batch N] [--size PX] [--classes N]\n"
            "                    [--shortcut A|B] [--stem auto|imagenet|cifar] [--seed N]\n"
            "                    [--no-eval] [--profile] [--json]\n"
            "                    [--quant CONFIG.json | --wbits N --abits N]\n"
            "\n"
            "Times the FP32 training step (forward, softmax cross-entropy, backward,\n"
            "SGD momentum 0.9 with weight decay 5e-4) and inference on synthetic input.\n"
            "Reports img/s from the median step time after warm-up, peak RSS and the\n"
            "achieved GFLOP/s (a training step counts 6 x forward MACs x batch FLOP, the\n"
            "direct convolution's count: Winograd layers do fewer).\n"
            "\n"
            "  --model NAME     resnet20|32|44|56, resnet18|34, smallcnn (default resnet20)\n"
            "  --batch N        training batch (default 128)\n"
            "  --threads N      worker threads (default 2)\n"
            "  --steps N        timed training steps (default 20)\n"
            "  --warmup N       untimed steps first (default 5)\n"
            "  --eval-batch N   inference batch (default 256)\n"
            "  --size PX        input height = width (default 32)\n"
            "  --classes N      output classes (default 10)\n"
            "  --shortcut A|B   CIFAR ResNet shortcut (default A)\n"
            "  --stem S         ImageNet ResNets: imagenet (7x7/2 conv + 3x3/2 max-pool),\n"
            "                   cifar (3x3/1 conv), auto (imagenet from 128 px up; default)\n"
            "  --no-eval        skip the inference measurement\n"
            "  --profile        after the timed steps, a table of time per node kind\n"
            "                   (conv geometry and path, batchnorm, ...), forward and\n"
            "                   backward ms per step (on stderr with --json)\n"
            "  --quant CONFIG   time the quantized step: the model and quant section of an\n"
            "                   experiment config (fake-quant weights and activations; the\n"
            "                   activation scales are calibrated on one synthetic batch)\n"
            "  --wbits N, --abits N  the default fixed-quantizer policy (uniform, per-channel\n"
            "                   symmetric weights recomputed every step, per-tensor\n"
            "                   activations, first/last layer 8 bits) at N bits; 0 = FP32\n"
            "  --json           print one JSON object (keys train_img_s, eval_img_s,\n"
            "                   peak_rss_mb, gflops, ...)\n"
            "\n"
            "A quantized model's inference is also timed on the integer engine (nibble\n"
            "eval --engine int, docs/export.md): key int_eval_img_s.\n");
}

static int parse_int(const char *flag, const char *s, int lo, int *out) {
    long v;
    if (!nb_cli_parse_long("bench", flag, s, lo, 1000000, &v)) return 0;
    *out = (int)v;
    return 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int nb_cmd_bench(int argc, char **argv) {
    const char *arch = "resnet20";
    int batch = 128, threads = 2, steps = 20, warmup = 5, eval_batch = 256, size = 32, classes = 10;
    int json = 0, no_eval = 0, seed = 0, wbits = 0, abits = 0, profile = 0, stem_set = 0;
    nb_stem stem = NB_STEM_AUTO;
    const char *quant_cfg = NULL;
    nb_shortcut shortcut = NB_SHORTCUT_A;
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},  {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"steps", required_argument, 0, 's'},
        {"warmup", required_argument, 0, 'w'}, {"eval-batch", required_argument, 0, 'e'},
        {"size", required_argument, 0, 'z'},   {"classes", required_argument, 0, 'c'},
        {"shortcut", required_argument, 0, 'S'}, {"seed", required_argument, 0, 'r'},
        {"no-eval", no_argument, 0, 'n'},      {"json", no_argument, 0, 'j'},
        {"quant", required_argument, 0, 'Q'},  {"wbits", required_argument, 0, 'W'},
        {"abits", required_argument, 0, 'A'},  {"stem", required_argument, 0, 'T'},
        {"profile", no_argument, 0, 'P'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int ok = 1;
        switch (c) {
        case 'm': arch = optarg; break;
        case 'b': ok = parse_int("--batch", optarg, 1, &batch); break;
        case 't': ok = parse_int("--threads", optarg, 1, &threads); break;
        case 's': ok = parse_int("--steps", optarg, 1, &steps); break;
        case 'w': ok = parse_int("--warmup", optarg, 0, &warmup); break;
        case 'e': ok = parse_int("--eval-batch", optarg, 1, &eval_batch); break;
        case 'z': ok = parse_int("--size", optarg, 8, &size); break;
        case 'c': ok = parse_int("--classes", optarg, 1, &classes); break;
        case 'r': ok = parse_int("--seed", optarg, 0, &seed); break;
        case 'S':
            if (!strcmp(optarg, "A") || !strcmp(optarg, "a")) shortcut = NB_SHORTCUT_A;
            else if (!strcmp(optarg, "B") || !strcmp(optarg, "b")) shortcut = NB_SHORTCUT_B;
            else {
                fprintf(stderr, "nibble bench: --shortcut expects A or B, got '%s'\n", optarg);
                ok = 0;
            }
            break;
        case 'n': no_eval = 1; break;
        case 'P': profile = 1; break;
        case 'T':
            stem_set = 1;
            if (!nb_stem_from_name(optarg, &stem)) {
                fprintf(stderr, "nibble bench: --stem expects auto, imagenet or cifar, got '%s'\n", optarg);
                ok = 0;
            }
            break;
        case 'Q': quant_cfg = optarg; break;
        case 'W':
        case 'A': {
            long v;
            ok = nb_cli_parse_long("bench", c == 'W' ? "--wbits" : "--abits", optarg, 0, 8, &v);
            if (ok && v == 1) {
                fprintf(stderr, "nibble bench: %s expects 0 (FP32) or 2..8, got 1\n", c == 'W' ? "--wbits" : "--abits");
                ok = 0;
            }
            *(c == 'W' ? &wbits : &abits) = (int)v;
            break;
        }
        case 'j': json = 1; break;
        case 'h': bench_usage(stdout); return 0;
        default:
            fprintf(stderr, "nibble bench: unknown or incomplete option '%s'\n", argv[optind - 1]);
            bench_usage(stderr);
            return 2;
        }
        if (!ok) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "nibble bench: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }

    if (quant_cfg && (wbits || abits)) {
        fprintf(stderr, "nibble bench: --quant and --wbits/--abits exclude each other\n");
        return 2;
    }
    nb_set_threads(threads);
    nb_rng rng;
    nb_rng_seed(&rng, (uint64_t)seed, 0);
    nb_model_opts mo = nb_model_opts_default();
    mo.num_classes = classes;
    mo.input_size = size;
    mo.shortcut = shortcut;
    mo.stem = stem;
    nb_quant_policy policy;
    nb_quant_policy_default(&policy);
    if (quant_cfg) {
        /* The config's model and quant section; the bench's own flags keep
         * batch, threads, size and classes. */
        nb_config cfg;
        if (nb_config_load(quant_cfg, NULL, 0, &cfg) != NB_OK) {
            fprintf(stderr, "nibble bench: %s\n", nb_last_error());
            return 2;
        }
        policy = cfg.quant;
        arch = nb_strdup(cfg.model.arch);
        mo.shortcut = cfg.model.shortcut == 'B' ? NB_SHORTCUT_B : NB_SHORTCUT_A;
        mo.width = cfg.model.width;
        if (!stem_set && !nb_stem_from_name(cfg.model.stem, &mo.stem)) mo.stem = NB_STEM_AUTO;
    } else {
        if (wbits) snprintf(policy.weights.method, sizeof policy.weights.method, "uniform");
        if (abits) snprintf(policy.activations.method, sizeof policy.activations.method, "uniform");
        policy.weights.bits = wbits ? wbits : 8;
        policy.activations.bits = abits ? abits : 8;
    }
    nb_model *m = nb_model_build(arch, &mo, &rng);
    if (!m) {
        fprintf(stderr, "nibble bench: %s\n", nb_last_error());
        return 2;
    }
    const int quantized = nb_quant_enabled(&policy);
    if (quantized && nb_quant_attach(m, &policy) != NB_OK) {
        fprintf(stderr, "nibble bench: %s\n", nb_last_error());
        nb_model_free(m);
        return 2;
    }
    double macs = nb_model_macs(m, size, size);
    nb_tensor *x = nb_tensor_new(4, (int[]){batch, mo.in_channels, size, size});
    int32_t *labels = nb_malloc(sizeof(int32_t) * (size_t)batch);
    float *mom = nb_calloc(m->n_param_floats, sizeof(float));
    /* learned quantizer parameters (step sizes, ADQ's α) take SGD too */
    nb_model_ext *qx = m->quant;
    float *qmom = nb_calloc(qx ? qx->n_param_floats + 1 : 1, sizeof(float));
    double *times = nb_malloc(sizeof(double) * (size_t)(steps > 8 ? steps : 8));
    nb_tape *tape = nb_tape_new();
    if (!x || !labels || !mom || !qmom || !times || !tape) {
        fprintf(stderr, "nibble bench: %s\n", nb_last_error());
        return 1;
    }
    nb_tensor_fill_normal(x, &rng, 0.0f, 1.0f);
    for (int i = 0; i < batch; i++) labels[i] = (int32_t)nb_rng_below(&rng, (uint32_t)classes);

    if (quantized) {
        /* Activation scales from one calibration forward on the bench's batch. */
        const int had = nb_tape_set_grad(tape, 0);
        nb_model_set_pass(m, NB_PASS_CALIBRATE);
        nb_model_forward(m, tape, x);
        nb_tape_reset(tape);
        nb_tape_set_grad(tape, had);
        if (nb_quant_calibrate_finish(m) != NB_OK) {
            fprintf(stderr, "nibble bench: %s\n", nb_last_error());
            return 1;
        }
    }
    nb_sgd_opts so = nb_sgd_opts_default();
    nb_model_train(m, 1);
    float loss = 0.0f;
    int rc = 0;
    nb_profile *prof = profile ? nb_profile_new() : NULL;
    if (prof) nb_tape_set_profile(tape, prof);
    for (int s = 0; s < warmup + steps; s++) {
        double t0 = nb_now();
        nb_model_zero_grad(m);
        if (prof) {
            if (s == warmup) nb_profile_clear(prof);
            nb_tape_profile_mark(tape);
        }
        nb_tensor *l = nb_cross_entropy(tape, nb_model_forward(m, tape, x), labels, 0.0f);
        loss = l->data[0];
        if (nb_backward(tape, l) != NB_OK) {
            fprintf(stderr, "nibble bench: step %d: %s\n", s, nb_last_error());
            rc = 1;
            break;
        }
        nb_sgd_update(&so, 0.05f, 5e-4f, m->param_data, m->param_grad, mom, m->n_param_floats, s == 0);
        if (qx && qx->n_param_floats) {
            nb_sgd_update(&so, 0.05f, 0.0f, qx->param_data, qx->param_grad, qmom, qx->n_param_floats, s == 0);
        }
        /* what the runner does after a step (ADQ's EMA codebook update) */
        if (qx && qx->after_step && qx->after_step(qx->owner) != NB_OK) {
            fprintf(stderr, "nibble bench: step %d: %s\n", s, nb_last_error());
            rc = 1;
            break;
        }
        nb_tape_reset(tape);
        if (s >= warmup) times[s - warmup] = nb_now() - t0;
    }
    if (prof) {
        nb_tape_set_profile(tape, NULL);
        if (!rc) nb_profile_print(prof, steps, json ? stderr : stdout);
        nb_profile_free(prof);
    }
    double arena_mb = (double)nb_arena_peak(nb_tape_arena(tape)) / 1048576.0;
    double arena_cap_mb = (double)nb_arena_capacity(nb_tape_arena(tape)) / 1048576.0;
    double pool_mb = (double)nb_tape_pool_bytes(tape) / 1048576.0;
    double med = rc ? 0.0 : median(times, steps);
    double train_img_s = rc ? 0.0 : batch / med;
    double rss_train = nb_peak_rss_mb();

    double eval_img_s = 0.0, int_img_s = 0.0;
    if (!no_eval && !rc) {
        nb_tensor_free(x);
        x = nb_tensor_new(4, (int[]){eval_batch, mo.in_channels, size, size});
        nb_tensor_fill_normal(x, &rng, 0.0f, 1.0f);
        nb_model_train(m, 0);
        nb_tape_set_grad(tape, 0);
        int n = steps / 2 > 4 ? steps / 2 : 4;
        for (int s = 0; s < n + 1; s++) {
            double t0 = nb_now();
            nb_model_forward(m, tape, x);
            nb_tape_reset(tape);
            if (s > 0) times[s - 1] = nb_now() - t0;
        }
        eval_img_s = eval_batch / median(times, n);
        /* a quantized model also on the integer engine (docs/export.md) */
        nb_xmodel *xm = NULL;
        nb_int_engine *e = NULL;
        float *logits = NULL;
        if (quantized && nb_export_build(m, &xm) == NB_OK && nb_int_engine_new(xm, &e) == NB_OK &&
            (logits = nb_malloc((size_t)eval_batch * (size_t)classes * sizeof(float)))) {
            for (int s = 0; s < n + 1; s++) {
                double t0 = nb_now();
                if (nb_int_engine_forward(e, x->data, eval_batch, logits) != NB_OK) break;
                if (s > 0) times[s - 1] = nb_now() - t0;
                if (s == n) int_img_s = eval_batch / median(times, n);
            }
        }
        if (quantized && int_img_s == 0.0) fprintf(stderr, "nibble bench: no integer engine: %s\n", nb_last_error());
        nb_free(logits);
        nb_int_engine_free(e);
        nb_xmodel_free(xm);
    }
    double gflops = 6.0 * macs * batch * train_img_s / batch / 1e9;
    double rss = nb_peak_rss_mb();
    if (json) {
        printf("{\"model\": \"%s\", \"threads\": %d, \"batch\": %d, \"steps\": %d, \"params\": %zu, "
               "\"macs_per_img_fwd\": %.0f, \"train_step_ms_med\": %.2f, \"train_img_s\": %.1f, "
               "\"eval_batch\": %d, \"eval_img_s\": %.1f, \"peak_rss_train_mb\": %.1f, "
               "\"peak_rss_mb\": %.1f, \"arena_mb\": %.1f, \"arena_capacity_mb\": %.1f, \"grad_pool_mb\": %.1f, \"gflops\": %.2f, "
               "\"final_loss\": %.9g, \"sgemm\": \"%s\", \"quant\": %s, \"int_eval_img_s\": %.1f}\n",
               arch, threads, batch, steps, nb_model_param_count(m), macs, med * 1e3, train_img_s,
               eval_batch, eval_img_s, rss_train, rss, arena_mb, arena_cap_mb, pool_mb, gflops, (double)loss, nb_sgemm_isa(),
               quantized ? "true" : "false", int_img_s);
    } else {
        printf("model %s (%zu parameters, %.2f M MACs/image), batch %d, %d threads, sgemm %s%s\n", arch,
               nb_model_param_count(m), macs / 1e6, batch, threads, nb_sgemm_isa(),
               quantized ? ", fake-quantized" : "");
        printf("train: %.1f img/s (median step %.1f ms over %d steps), %.1f GFLOP/s\n", train_img_s,
               med * 1e3, steps, gflops);
        if (!no_eval) printf("eval:  %.1f img/s (batch %d)\n", eval_img_s, eval_batch);
        if (int_img_s > 0.0) printf("eval on the integer engine: %.1f img/s (batch %d)\n", int_img_s, eval_batch);
        printf("memory: peak RSS %.1f MiB (training step %.1f MiB; arena %.1f MiB used of %.1f MiB held, gradient "
               "pool %.1f MiB)\n",
               rss, rss_train, arena_mb, arena_cap_mb, pool_mb);
    }
    nb_tape_free(tape);
    nb_free(times);
    nb_free(mom);
    nb_free(qmom);
    nb_free(labels);
    nb_tensor_free(x);
    nb_model_free(m);
    if (quant_cfg) nb_free((void *)arch);
    return rc;
}
