/* `nibble data bench`: full passes over the train split through the loader
 * (shuffle + augmentation + normalisation), reporting the loader's img/s,
 * the consumer's wait time and peak RSS. With --step-ms the consumer
 * simulates a training step per batch, to check that prefetch hides the
 * data path (the steady-state wait excludes the first batch of an epoch). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cmd_data.h"

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: nibble data bench FILE.h5|synthetic:shapes10 [--threads N] [--batch N]\n"
            "                         [--stream] [--mem-cap-mb N] [--shuffle-buffer N]\n"
            "                         [--epochs N] [--no-augment] [--rrc] [--size S]\n"
            "                         [--step-ms MS] [--seed N] [--json]\n"
            "\n"
            "Makes full passes over the train split with shuffling, augmentation (pad 4 +\n"
            "random crop + flip, or --rrc) and normalisation, and reports the loader's\n"
            "throughput (img/s), the time the consumer waited, and the peak RSS.\n"
            "\n"
            "  --threads N         prefetch threads; 0 = make batches in the consumer\n"
            "                      (default 1)\n"
            "  --batch N           batch size (default 128)\n"
            "  --stream            stream chunk by chunk even if the split fits in memory\n"
            "  --mem-cap-mb N      load whole only under N MiB (default 4096)\n"
            "  --shuffle-buffer N  streaming shuffle buffer in examples (default: 64 MiB\n"
            "                      or half the memory cap)\n"
            "  --epochs N          passes (default 1)\n"
            "  --no-augment        evaluation view only\n"
            "  --rrc               random-resized-crop instead of pad + crop\n"
            "  --size S            output size (default native)\n"
            "  --step-ms MS        simulate a training step of MS ms per batch\n"
            "  --seed N            loader seed (default 0)\n"
            "  --json              one JSON object\n");
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int nb_data_bench(int argc, char **argv) {
    const char *cmd = "bench";
    long threads = 1, batch = 128, mem_cap_mb = 0, buffer = 0, epochs = 1, size = 0, step_ms = 0,
         seed = 0;
    int stream = 0, no_augment = 0, rrc = 0, json = 0;
    static const struct option longopts[] = {
        {"threads", required_argument, 0, 't'},  {"batch", required_argument, 0, 'b'},
        {"stream", no_argument, 0, 'S'},         {"mem-cap-mb", required_argument, 0, 'm'},
        {"shuffle-buffer", required_argument, 0, 'B'}, {"epochs", required_argument, 0, 'e'},
        {"no-augment", no_argument, 0, 'A'},     {"rrc", no_argument, 0, 'R'},
        {"size", required_argument, 0, 'z'},     {"step-ms", required_argument, 0, 'p'},
        {"seed", required_argument, 0, 'r'},     {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c, ok = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1 && ok) {
        switch (c) {
        case 't': ok = nb_data_parse_long(cmd, "--threads", optarg, 0, 64, &threads); break;
        case 'b': ok = nb_data_parse_long(cmd, "--batch", optarg, 1, 65536, &batch); break;
        case 'S': stream = 1; break;
        case 'm': ok = nb_data_parse_long(cmd, "--mem-cap-mb", optarg, 1, 1L << 30, &mem_cap_mb); break;
        case 'B': ok = nb_data_parse_long(cmd, "--shuffle-buffer", optarg, 1, 1L << 31, &buffer); break;
        case 'e': ok = nb_data_parse_long(cmd, "--epochs", optarg, 1, 1000, &epochs); break;
        case 'A': no_augment = 1; break;
        case 'R': rrc = 1; break;
        case 'z': ok = nb_data_parse_long(cmd, "--size", optarg, 1, 4096, &size); break;
        case 'p': ok = nb_data_parse_long(cmd, "--step-ms", optarg, 0, 100000, &step_ms); break;
        case 'r': ok = nb_data_parse_long(cmd, "--seed", optarg, 0, 2147483647, &seed); break;
        case 'j': json = 1; break;
        case 'h': bench_usage(stdout); return 0;
        default:
            fprintf(stderr, "nibble data bench: unknown or incomplete option '%s'\n",
                    argv[optind - 1]);
            bench_usage(stderr);
            return 2;
        }
    }
    if (!ok) return 2;
    if (argc - optind != 1) {
        fprintf(stderr, "nibble data bench: expected one FILE.h5 or synthetic:NAME, got %d\n",
                argc - optind);
        bench_usage(stderr);
        return 2;
    }
    const char *src = argv[optind];
    double rss0 = nb_peak_rss_mb();
    nb_dataset_opts dopts = nb_dataset_opts_default();
    dopts.mem_cap_bytes = (size_t)mem_cap_mb << 20;
    dopts.force_stream = stream;
    double t0 = nb_now();
    nb_dataset *ds = NULL;
    nb_status st = nb_dataset_open_source(src, "train", &dopts, 0, &ds);
    if (st != NB_OK) return nb_data_fail(cmd, st);
    double open_s = nb_now() - t0;
    nb_loader_opts lo = nb_loader_opts_default();
    lo.batch = (int)batch;
    lo.prefetch = (int)threads;
    lo.augment = !no_augment;
    lo.rrc = rrc;
    lo.out_h = lo.out_w = (int)size;
    lo.seed = (uint64_t)seed;
    lo.shuffle_buffer = (size_t)buffer;
    nb_loader *l = NULL;
    if ((st = nb_loader_new(ds, &lo, &l)) != NB_OK) {
        nb_dataset_free(ds);
        return nb_data_fail(cmd, st);
    }
    double pass_s = 0.0, steady_wait = 0.0, first_wait = 0.0;
    size_t images = 0;
    int rc = 0;
    for (long e = 0; e < epochs && !rc; e++) {
        double e0 = nb_now();
        nb_loader_start_epoch(l, (int)e);
        const float *x;
        const int32_t *y;
        int n;
        for (long b = 0;; b++) {
            double w0 = nb_loader_wait_seconds(l);
            if ((st = nb_loader_next(l, &x, &y, &n)) != NB_OK) {
                rc = nb_data_fail(cmd, st);
                break;
            }
            double waited = nb_loader_wait_seconds(l) - w0;
            if (b == 0) first_wait += waited;
            else steady_wait += waited;
            if (n == 0) break;
            images += (size_t)n;
            if (step_ms) sleep_ms(step_ms);
        }
        pass_s += nb_now() - e0;
    }
    double consumer_s = (double)images / (double)batch * (double)step_ms / 1000.0;
    double img_s = pass_s > 0 ? (double)images / pass_s : 0.0;
    double rss = nb_peak_rss_mb();
    const char *mode = nb_dataset_streaming(ds) ? "streaming" : "in memory";
    if (rc == 0 && json) {
        printf("{\"source\": \"%s\", \"mode\": \"%s\", \"threads\": %ld, \"batch\": %ld, "
               "\"epochs\": %ld, \"images\": %zu, \"open_s\": %.3f, \"pass_s\": %.3f, "
               "\"img_s\": %.1f, \"wait_s\": %.4f, \"first_batch_wait_s\": %.4f, "
               "\"steady_wait_s\": %.4f, \"step_ms\": %ld, \"peak_rss_mb\": %.1f, "
               "\"rss_before_open_mb\": %.1f}\n",
               src, mode, threads, batch, epochs, images, open_s, pass_s, img_s,
               nb_loader_wait_seconds(l), first_wait, steady_wait, step_ms, rss, rss0);
    } else if (rc == 0) {
        printf("%s (train, %zu examples, %dx%dx%d): %s, open %.2f s\n", src, nb_dataset_count(ds),
               nb_dataset_channels(ds), nb_dataset_height(ds), nb_dataset_width(ds), mode, open_s);
        printf("loader: batch %ld, %ld prefetch thread%s, %s, %ld epoch%s\n", batch, threads,
               threads == 1 ? "" : "s",
               no_augment ? "no augmentation" : rrc ? "random-resized-crop + flip" : "pad 4 + crop + flip",
               epochs, epochs == 1 ? "" : "s");
        if (step_ms)
            printf("consumer: %ld ms simulated step per batch (%.2f s in total)\n", step_ms,
                   consumer_s);
        printf("%.0f img/s over %zu images in %.2f s\n", img_s, images, pass_s);
        printf("consumer waited %.3f s (first batch of each epoch %.3f s, steady state %.3f s)\n",
               nb_loader_wait_seconds(l), first_wait, steady_wait);
        printf("peak RSS %.1f MiB (%.1f MiB before opening)\n", rss, rss0);
    }
    nb_loader_free(l);
    nb_dataset_free(ds);
    return rc;
}
