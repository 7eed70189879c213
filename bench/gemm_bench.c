/*
 * gemm_bench — GFLOP/s of nibble's sgemm paths and of OpenBLAS at the
 * ResNet-20 (CIFAR, batch 128) per-image conv shapes, on one thread and on
 * two (each thread running its own GEMMs on its own buffers, as the conv
 * layers do; the 2T columns are the two threads' aggregate).
 *
 * Build (after building the library in build-gemm), from the repo root:
 *   cc -O2 -I/work/main/core bench/gemm_bench.c /work/main/build-gemm/libnibble.a \
 *      $(pkg-config --cflags --libs openblas hdf5 libcjson) -fopenmp -lm -o gemm_bench
 * Run:
 *   ./gemm_bench                          all shapes, every path this CPU runs
 *   ./gemm_bench -t 1 -s dW -p avx512 -1  1 s per number, dW shapes, one path, 1T only
 *   OPENBLAS_CORETYPE=SkylakeX ./gemm_bench -p blas   OpenBLAS with its AVX-512 kernel
 * "blas" is cblas_sgemm with OpenBLAS limited to one thread (what nb_gemm
 * and the blas path call). Each number is the best of 40 timed runs, the
 * columns' runs interleaved: load from other processes (or other VMs on the
 * host) only ever slows a run down, and hits every column alike.
 */
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gemm_internal.h"
#include "nb_core.h"

typedef enum { NN, NN_AT, NT } kind;

typedef struct {
    kind kind;
    int M, N, K;
    float beta;
    const char *what;
} shape;

static const shape shapes[] = {
    {NN, 16, 1024, 144, 0.0f, "fwd stage1"},
    {NN, 32, 256, 288, 0.0f, "fwd stage2"},
    {NN, 64, 64, 576, 0.0f, "fwd stage3"},
    {NN, 32, 256, 144, 0.0f, "fwd s2 first"},
    {NN, 64, 64, 288, 0.0f, "fwd s3 first"},
    {NN, 16, 1024, 27, 0.0f, "fwd stem"},
    {NN_AT, 144, 1024, 16, 0.0f, "dcol stage1"},
    {NN_AT, 288, 256, 32, 0.0f, "dcol stage2"},
    {NN_AT, 576, 64, 64, 0.0f, "dcol stage3"},
    {NN_AT, 144, 256, 32, 0.0f, "dcol s2 first"},
    {NN_AT, 288, 64, 64, 0.0f, "dcol s3 first"},
    {NT, 16, 144, 1024, 1.0f, "dW stage1"},
    {NT, 32, 288, 256, 1.0f, "dW stage2"},
    {NT, 64, 576, 64, 1.0f, "dW stage3"},
    {NT, 32, 144, 256, 1.0f, "dW s2 first"},
    {NT, 64, 288, 64, 1.0f, "dW s3 first"},
    {NT, 16, 27, 1024, 1.0f, "dW stem"},
};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

#define TRIALS 40

/* A column: one of nibble's paths, or OpenBLAS called directly. */
#define COL_OPENBLAS (-1)

typedef struct {
    const shape *s;
    int col;
    float *A, *B, *C;
    long reps;
} job;

static void run_once(const job *j) {
    const shape *s = j->s;
    int M = s->M, N = s->N, K = s->K;
    if (j->col == COL_OPENBLAS) {
        if (s->kind == NN)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, j->A, K,
                        j->B, N, s->beta, j->C, N);
        else if (s->kind == NN_AT)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1.0f, j->A, M,
                        j->B, N, s->beta, j->C, N);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, j->A, K,
                        j->B, K, s->beta, j->C, N);
        return;
    }
    nb_gemm_path p = (nb_gemm_path)j->col;
    if (s->kind == NN)
        nb_sgemm_nn_path(p, M, N, K, j->A, K, 1, j->B, N, s->beta, j->C, N);
    else if (s->kind == NN_AT) /* A is W (K, M) row-major, used as W^T */
        nb_sgemm_nn_path(p, M, N, K, j->A, 1, M, j->B, N, s->beta, j->C, N);
    else
        nb_sgemm_nt_path(p, M, N, K, j->A, K, j->B, K, s->beta, j->C, N);
}

static void *run_reps(void *arg) {
    const job *j = arg;
    for (long r = 0; r < j->reps; r++) run_once(j);
    return NULL;
}

static float *random_buf(size_t n, nb_rng *rng) {
    float *p = nb_malloc(n * sizeof *p);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) p[i] = nb_rng_uniform(rng) - 0.5f;
    return p;
}

static void job_init(job *j, const shape *s, int col, nb_rng *rng) {
    j->s = s;
    j->col = col;
    j->A = random_buf((size_t)s->M * s->K, rng);
    j->B = random_buf((size_t)s->K * s->N, rng);
    j->C = random_buf((size_t)s->M * s->N, rng);
    j->reps = 1;
}

static void job_deinit(job *j) {
    nb_free(j->A);
    nb_free(j->B);
    nb_free(j->C);
}

/* GFLOP/s of each column at one shape with `threads` threads, each thread
 * running its own copy of the shape. Trials interleave the columns (so each
 * sees the same background load) and each column keeps its best of TRIALS
 * runs of about secs / TRIALS: other load only ever slows a run down. */
static void measure(const shape *s, const int *cols, int ncols, int threads, double secs,
                    nb_rng *rng, double *gflops) {
    enum { MAX_COLS = NB_GEMM_PATH_COUNT + 1 };
    job jobs[MAX_COLS][2];
    long reps[MAX_COLS];
    double flops = 2.0 * s->M * s->N * s->K;
    for (int c = 0; c < ncols; c++) {
        for (int t = 0; t < threads; t++) job_init(&jobs[c][t], s, cols[c], rng);
        /* Calibrate on one thread. */
        for (reps[c] = 1;; reps[c] *= 2) {
            jobs[c][0].reps = reps[c];
            double t0 = nb_now();
            run_reps(&jobs[c][0]);
            double dt = nb_now() - t0;
            if (dt > secs / TRIALS / 4) {
                reps[c] = (long)((double)reps[c] * secs / TRIALS / dt) + 1;
                break;
            }
        }
        gflops[c] = 0.0;
    }
    for (int trial = 0; trial < TRIALS; trial++)
        for (int c = 0; c < ncols; c++) {
            pthread_t tid[2];
            double t0 = nb_now();
            for (int t = 0; t < threads; t++) {
                jobs[c][t].reps = reps[c];
                if (t > 0 && pthread_create(&tid[t], NULL, run_reps, &jobs[c][t]) != 0) {
                    fprintf(stderr, "pthread_create failed\n");
                    exit(1);
                }
            }
            run_reps(&jobs[c][0]);
            for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL);
            double g = flops * (double)reps[c] * threads / (nb_now() - t0) * 1e-9;
            if (g > gflops[c]) gflops[c] = g;
        }
    for (int c = 0; c < ncols; c++)
        for (int t = 0; t < threads; t++) job_deinit(&jobs[c][t]);
}

static void usage(void) {
    fprintf(stderr, "usage: gemm_bench [-t seconds] [-s shape-substring] [-p avx512,avx2,blas] [-1]\n"
                    "  -t  time per measurement (default 0.2 s)\n"
                    "  -s  only shapes whose name contains the string (e.g. fwd, dW)\n"
                    "  -p  only these columns (blas = cblas_sgemm)\n"
                    "  -1  single-thread columns only\n");
    exit(2);
}

int main(int argc, char **argv) {
    double secs = 0.2;
    const char *only = NULL, *paths = NULL;
    int one_thread = 0;
    int opt;
    while ((opt = getopt(argc, argv, "t:s:p:1h")) != -1) {
        switch (opt) {
        case 't': secs = atof(optarg); break;
        case 's': only = optarg; break;
        case 'p': paths = optarg; break;
        case '1': one_thread = 1; break;
        default: usage();
        }
    }
    if (secs <= 0 || optind != argc) usage();
    openblas_set_num_threads(1);
    nb_rng rng;
    nb_rng_seed(&rng, 1, 0);
    int cols[NB_GEMM_PATH_COUNT + 1], ncols = 0;
    for (int p = NB_GEMM_PATH_AVX512; p > NB_GEMM_PATH_BLAS; p--)
        if (nb_gemm_path_supported((nb_gemm_path)p) &&
            (!paths || strstr(paths, nb_gemm_path_name((nb_gemm_path)p))))
            cols[ncols++] = p;
    if (!paths || strstr(paths, "blas")) cols[ncols++] = COL_OPENBLAS;
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("GFLOP/s, best of %d runs; ", TRIALS);
    printf("default path %s; OpenBLAS core %s (%s)\n",
           nb_sgemm_isa(), openblas_get_corename(), core ? core : "OPENBLAS_CORETYPE unset");
    printf("%-14s %-5s %4s %5s %5s |", "conv", "op", "M", "N", "K");
    for (int c = 0; c < ncols; c++)
        printf(" %7s", cols[c] == COL_OPENBLAS ? "blas" : nb_gemm_path_name(cols[c]));
    if (!one_thread) {
        printf(" |");
        for (int c = 0; c < ncols; c++)
            printf(" %5s2T", cols[c] == COL_OPENBLAS ? "blas" : nb_gemm_path_name(cols[c]));
    }
    printf("\n");
    for (int i = 0; i < N_SHAPES; i++) {
        const shape *s = &shapes[i];
        if (only && !strstr(s->what, only)) continue;
        static const char *const kind_name[] = {"nn", "nn^T", "nt"};
        printf("%-14s %-5s %4d %5d %5d |", s->what, kind_name[s->kind], s->M, s->N, s->K);
        fflush(stdout);
        double g[NB_GEMM_PATH_COUNT + 1];
        measure(s, cols, ncols, 1, secs, &rng, g);
        for (int c = 0; c < ncols; c++) printf(" %7.1f", g[c]);
        fflush(stdout);
        if (!one_thread) {
            measure(s, cols, ncols, 2, secs, &rng, g);
            printf(" |");
            for (int c = 0; c < ncols; c++) printf(" %7.1f", g[c]);
        }
        printf("\n");
    }
    return 0;
}
