/* `nibble train CONFIG [--set KEY=VALUE]... [--resume RUN_DIR]`. */
#include <getopt.h>
#include <signal.h>
#include <string.h>

#include "nb_cli.h"
#include "nibble.h"

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: nibble train CONFIG.json [--set KEY=VALUE]... [--resume RUN_DIR]\n"
            "       nibble train --resume RUN_DIR [--set KEY=VALUE]...\n"
            "\n"
            "Runs the experiment a config describes (docs/configs.md) and writes its run\n"
            "directory (output.dir, default runs/NAME): config.json, metrics.csv (a row per\n"
            "epoch), steps.csv, last.h5 (after every epoch) and best.h5 (best test top-1).\n"
            "\n"
            "  --set KEY=VALUE   override a config key, e.g. --set train.epochs=5\n"
            "                    --set data.path=cifar10.h5 (VALUE is JSON, else a string)\n"
            "  --resume RUN_DIR  continue that run from its last.h5, exactly where it\n"
            "                    stopped; without CONFIG the run's own config is used\n"
            "\n"
            "Ctrl-C (SIGINT), SIGTERM and SIGHUP finish the current step, write last.h5 and\n"
            "exit with status 130, 143 and 129; a second one of the same kind kills at once.\n"
            "A NaN or Inf loss stops the run (status 1) and keeps the last good last.h5.\n"
            "Resuming a finished run says so and exits with status 0.\n"
            "Exit codes: 0 success, 2 bad usage or bad input (or out of memory), 1 failure,\n"
            "130 SIGINT, 143 SIGTERM, 129 SIGHUP.\n");
}

static volatile sig_atomic_t stop_flag;

/* SIGINT, SIGTERM (kill, systemd, docker, SLURM) and SIGHUP: the signal's
 * number, so the exit status can be 128 + it. */
static void on_stop_signal(int sig) {
    stop_flag = sig; /* a second one kills: SA_RESETHAND restored the default */
}

static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP};

int nb_cmd_train(int argc, char **argv) {
    static const struct option longopts[] = {{"set", required_argument, 0, 's'},
                                              {"resume", required_argument, 0, 'r'},
                                              {"help", no_argument, 0, 'h'},
                                              {0, 0, 0, 0}};
    const char *sets[64], *resume = NULL;
    int n_sets = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (n_sets == (int)(sizeof sets / sizeof sets[0])) {
                fprintf(stderr, "nibble train: at most 64 --set options\n");
                return 2;
            }
            sets[n_sets++] = optarg;
            break;
        case 'r': resume = optarg; break;
        case 'h': train_usage(stdout); return 0;
        default:
            fprintf(stderr, "nibble train: unknown or incomplete option '%s'\n", argv[optind - 1]);
            train_usage(stderr);
            return 2;
        }
    }
    const char *path = optind < argc ? argv[optind++] : NULL;
    if (optind < argc) {
        fprintf(stderr, "nibble train: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!path && !resume) {
        fprintf(stderr, "nibble train: a CONFIG.json (or --resume RUN_DIR) is required\n");
        train_usage(stderr);
        return 2;
    }
    nb_config cfg;
    nb_status st;
    if (path) {
        st = nb_config_load(path, sets, n_sets, &cfg);
    } else {
        char last[NB_CFG_PATH_MAX + 16];
        snprintf(last, sizeof last, "%s/last.h5", resume);
        st = nb_config_from_checkpoint(last, sets, n_sets, &cfg);
    }
    if (st != NB_OK) {
        fprintf(stderr, "nibble train: %s\n", nb_last_error());
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
        sigaction(stop_signals[i], &sa, NULL);

    nb_train_opts o = nb_train_opts_default();
    o.resume_dir = resume;
    o.stop = &stop_flag;
    nb_train_result r;
    st = nb_train(&cfg, &o, &r);
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
        signal(stop_signals[i], SIG_DFL);
    if (st != NB_OK) {
        fprintf(stderr, "nibble train: %s\n", nb_last_error());
        if (st == NB_STATUS_INTERRUPTED) return 128 + (stop_flag ? (int)stop_flag : SIGINT);
        return nb_cli_exit_code(st);
    }
    if (r.complete) {
        printf("%s: this run is already complete (%d of %d epochs, best test top-1 %.2f%%); "
               "checkpoint %s/last.h5. HINT: --set train.epochs=N trains it further\n",
               cfg.name, r.epochs_done, cfg.train.epochs, 100.0 * r.best_top1, r.run_dir);
        return 0;
    }
    printf("%s: test top-1 %.2f%% top-5 %.2f%% loss %.4f (%ld images) after %d epochs, best top-1 "
           "%.2f%%, %.1f s; checkpoint %s/last.h5\n",
           cfg.name, 100.0 * r.last.top1, 100.0 * r.last.top5, r.last.loss, r.last.n, r.epochs_done,
           100.0 * r.best_top1, r.seconds, r.run_dir);
    return 0;
}
