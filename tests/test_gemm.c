/* nibble's sgemm kernels (core/gemm_*.c): every path this CPU runs against a
 * double-precision reference, at the ResNet-20 conv shapes and at random
 * odd ones; determinism; columns past N untouched; path selection. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gemm_internal.h"
#include "nb_test.h"

/* Error bound relative to the largest |C| of the reference. */
#define TOL 1e-5
/* Value in C's padding columns (j >= N), which no path may touch. */
#define SENTINEL 12345.0f

typedef struct {
    int nt;             /* 0: nb_sgemm_nn, 1: nb_sgemm_nt */
    int M, N, K;
    ptrdiff_t a_rs, a_cs; /* nn: A(i, k) = A[i * a_rs + k * a_cs]; nt: a_rs = lda */
    int ldb, ldc;
    float beta;
} gemm_case;

typedef struct {
    float *A, *B, *C, *C0; /* C0: C before the call */
    size_t na, nb, nc;
    double *ref;
    double scale; /* max |ref| */
} gemm_data;

static size_t a_len(const gemm_case *g) {
    return (size_t)((g->M - 1) * g->a_rs + (g->K - 1) * g->a_cs + 1);
}

static size_t b_len(const gemm_case *g) {
    return g->nt ? (size_t)(g->N - 1) * g->ldb + g->K : (size_t)(g->K - 1) * g->ldb + g->N;
}

static void fill(float *p, size_t n, nb_rng *r) {
    for (size_t i = 0; i < n; i++) p[i] = 2.0f * nb_rng_uniform(r) - 1.0f;
}

/* Inputs, C before the call (NaN when beta is 0: it must not be read) and
 * the double-precision reference. */
static void data_init(gemm_data *d, const gemm_case *g, nb_rng *r) {
    d->na = a_len(g);
    d->nb = b_len(g);
    d->nc = (size_t)g->M * g->ldc;
    d->A = malloc(d->na * sizeof(float));
    d->B = malloc(d->nb * sizeof(float));
    d->C = malloc(d->nc * sizeof(float));
    d->C0 = malloc(d->nc * sizeof(float));
    d->ref = malloc((size_t)g->M * g->N * sizeof(double));
    ck_assert(d->A && d->B && d->C && d->C0 && d->ref);
    fill(d->A, d->na, r);
    fill(d->B, d->nb, r);
    for (int i = 0; i < g->M; i++)
        for (int j = 0; j < g->ldc; j++)
            d->C0[(size_t)i * g->ldc + j] =
                j >= g->N ? SENTINEL : g->beta == 0.0f ? NAN : 2.0f * nb_rng_uniform(r) - 1.0f;
    d->scale = 0.0;
    for (int i = 0; i < g->M; i++)
        for (int j = 0; j < g->N; j++) {
            double s = g->beta != 0.0f ? (double)d->C0[(size_t)i * g->ldc + j] : 0.0;
            for (int k = 0; k < g->K; k++) {
                double a = d->A[i * g->a_rs + k * g->a_cs];
                double b = g->nt ? d->B[(size_t)j * g->ldb + k] : d->B[(size_t)k * g->ldb + j];
                s += a * b;
            }
            d->ref[(size_t)i * g->N + j] = s;
            if (fabs(s) > d->scale) d->scale = fabs(s);
        }
}

static void data_deinit(gemm_data *d) {
    free(d->A);
    free(d->B);
    free(d->C);
    free(d->C0);
    free(d->ref);
}

static void call(nb_gemm_path p, const gemm_case *g, const float *A, const float *B, float *C) {
    if (g->nt)
        nb_sgemm_nt_path(p, g->M, g->N, g->K, A, (int)g->a_rs, B, g->ldb, g->beta, C, g->ldc);
    else
        nb_sgemm_nn_path(p, g->M, g->N, g->K, A, g->a_rs, g->a_cs, B, g->ldb, g->beta, C,
                         g->ldc);
}

static void run(nb_gemm_path p, const gemm_case *g, const gemm_data *d, float *C) {
    memcpy(C, d->C0, d->nc * sizeof(float));
    call(p, g, d->A, d->B, C);
}

/* C matches the reference within TOL * scale, is finite, and its padding
 * columns still hold the sentinel. */
static void check(nb_gemm_path p, const gemm_case *g, const gemm_data *d, const float *C) {
    double tol = TOL * (d->scale > 0.0 ? d->scale : 1.0);
    for (int i = 0; i < g->M; i++)
        for (int j = 0; j < g->ldc; j++) {
            float c = C[(size_t)i * g->ldc + j];
            if (j >= g->N) {
                ck_assert_msg(c == SENTINEL, "%s %s M%d N%d K%d: padding C[%d][%d] written",
                              nb_gemm_path_name(p), g->nt ? "nt" : "nn", g->M, g->N, g->K, i, j);
                continue;
            }
            double want = d->ref[(size_t)i * g->N + j];
            ck_assert_msg(isfinite(c) && fabs(c - want) <= tol,
                          "%s %s M%d N%d K%d a_rs %td a_cs %td ldb %d ldc %d beta %g: "
                          "C[%d][%d] = %.9g, want %.9g (tol %.3g)",
                          nb_gemm_path_name(p), g->nt ? "nt" : "nn", g->M, g->N, g->K, g->a_rs,
                          g->a_cs, g->ldb, g->ldc, (double)g->beta, i, j, (double)c, want, tol);
        }
}

/* Correct, and the same bits when run again. */
static void run_case(nb_gemm_path p, const gemm_case *g, nb_rng *r) {
    gemm_data d;
    data_init(&d, g, r);
    float *again = malloc(d.nc * sizeof(float));
    ck_assert_ptr_nonnull(again);
    run(p, g, &d, d.C);
    check(p, g, &d, d.C);
    run(p, g, &d, again);
    ck_assert_msg(memcmp(d.C, again, d.nc * sizeof(float)) == 0,
                  "%s %s M%d N%d K%d: second run differs", nb_gemm_path_name(p),
                  g->nt ? "nt" : "nn", g->M, g->N, g->K);
    free(again);
    data_deinit(&d);
}

static int skip_unsupported(nb_gemm_path p) {
    if (nb_gemm_path_supported(p)) return 0;
    nb_test_skip(nb_gemm_path_name(p), "this CPU cannot run it");
    return 1;
}

/* The per-image shapes of ResNet-20 on CIFAR (see bench/gemm_bench.c). */
static const int fwd_shapes[][3] = {{16, 1024, 144}, {32, 256, 288}, {64, 64, 576},
                                    {32, 256, 144},  {64, 64, 288},  {16, 1024, 27}};
static const int dcol_shapes[][3] = {
    {144, 1024, 16}, {288, 256, 32}, {576, 64, 64}, {144, 256, 32}, {288, 64, 64}};
static const int dw_shapes[][3] = {{16, 144, 1024}, {32, 288, 256}, {64, 576, 64},
                                   {32, 144, 256},  {64, 288, 64},  {16, 27, 1024}};

START_TEST(test_resnet_shapes) {
    nb_gemm_path p = (nb_gemm_path)_i;
    if (skip_unsupported(p)) return;
    nb_rng r;
    nb_rng_seed(&r, 11, (uint64_t)p);
    for (int beta = 0; beta < 2; beta++) {
        for (size_t s = 0; s < sizeof fwd_shapes / sizeof fwd_shapes[0]; s++) {
            int M = fwd_shapes[s][0], N = fwd_shapes[s][1], K = fwd_shapes[s][2];
            gemm_case g = {0, M, N, K, K, 1, N, N, (float)beta};
            run_case(p, &g, &r);
        }
        for (size_t s = 0; s < sizeof dcol_shapes / sizeof dcol_shapes[0]; s++) {
            int M = dcol_shapes[s][0], N = dcol_shapes[s][1], K = dcol_shapes[s][2];
            gemm_case g = {0, M, N, K, 1, M, N, N, (float)beta}; /* W^T view of W (K, M) */
            run_case(p, &g, &r);
        }
        for (size_t s = 0; s < sizeof dw_shapes / sizeof dw_shapes[0]; s++) {
            int M = dw_shapes[s][0], N = dw_shapes[s][1], K = dw_shapes[s][2];
            gemm_case g = {1, M, N, K, K, 1, K, N, (float)beta};
            run_case(p, &g, &r);
        }
    }
}
END_TEST

/* Random shapes in 1..70 with padded leading dimensions, both A views,
 * beta 0 and 1; nn and nt. */
START_TEST(test_random_shapes) {
    nb_gemm_path p = (nb_gemm_path)_i;
    if (skip_unsupported(p)) return;
    nb_rng r;
    nb_rng_seed(&r, 23, (uint64_t)p);
    for (int t = 0; t < 400; t++) {
        gemm_case g;
        g.nt = t % 2;
        g.M = 1 + (int)nb_rng_below(&r, 70);
        g.N = 1 + (int)nb_rng_below(&r, 70);
        g.K = 1 + (int)nb_rng_below(&r, 70);
        int pad = t % 3 == 0 ? 0 : (int)nb_rng_below(&r, 9);
        g.beta = (float)nb_rng_below(&r, 2);
        if (g.nt || nb_rng_below(&r, 2)) {
            g.a_rs = g.K + pad; /* row-major A */
            g.a_cs = 1;
        } else {
            g.a_rs = 1; /* transpose of a row-major (K, M) */
            g.a_cs = g.M + pad;
        }
        g.ldb = (g.nt ? g.K : g.N) + (int)nb_rng_below(&r, 9) * (t % 3 != 0);
        g.ldc = g.N + (int)nb_rng_below(&r, 9) * (t % 3 != 0);
        run_case(p, &g, &r);
    }
}
END_TEST

/* Larger odd shapes: several k blocks, row blocks and tails at once. */
START_TEST(test_large_odd_shapes) {
    nb_gemm_path p = (nb_gemm_path)_i;
    if (skip_unsupported(p)) return;
    nb_rng r;
    nb_rng_seed(&r, 31, (uint64_t)p);
    static const int shapes[][3] = {{131, 77, 301}, {7, 300, 517}, {97, 33, 1000},
                                    {200, 45, 9},   {1, 1000, 3},  {70, 1, 600}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int v = 0; v < 4; v++) {
            int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            float beta = (float)(v & 1);
            gemm_case nn = v < 2 ? (gemm_case){0, M, N, K, K + 3, 1, N + 5, N + 1, beta}
                                 : (gemm_case){0, M, N, K, 1, M + 2, N, N + 7, beta};
            gemm_case nt = {1, M, N, K, K + v, 1, K + 2 * v, N + v, beta};
            run_case(p, &nn, &r);
            run_case(p, &nt, &r);
        }
}
END_TEST

/* nn with neither stride of A equal to 1 (e.g. every other element). */
START_TEST(test_general_strides) {
    nb_gemm_path p = (nb_gemm_path)_i;
    if (skip_unsupported(p)) return;
    nb_rng r;
    nb_rng_seed(&r, 41, (uint64_t)p);
    gemm_case a = {0, 13, 37, 29, 2 * 29, 2, 37, 40, 1.0f};
    gemm_case b = {0, 40, 19, 150, 3, 3 * 41, 19, 19, 0.0f};
    run_case(p, &a, &r);
    run_case(p, &b, &r);
}
END_TEST

/* Same bits whatever the alignment of the buffers. */
START_TEST(test_alignment_independent) {
    nb_gemm_path p = (nb_gemm_path)_i;
    if (skip_unsupported(p)) return;
    nb_rng r;
    nb_rng_seed(&r, 43, (uint64_t)p);
    gemm_case cases[] = {{0, 32, 256, 288, 288, 1, 256, 256, 0.0f},
                         {0, 144, 256, 32, 1, 144, 256, 256, 1.0f},
                         {1, 32, 288, 256, 256, 1, 256, 288, 1.0f},
                         {1, 16, 27, 1024, 1024, 1, 1024, 27, 1.0f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const gemm_case *g = &cases[c];
        gemm_data d;
        data_init(&d, g, &r);
        run(p, g, &d, d.C);
        for (int off = 1; off < 4; off++) {
            float *A = malloc((d.na + off) * sizeof(float)), *B = malloc((d.nb + off) * sizeof(float));
            float *C = malloc((d.nc + off) * sizeof(float));
            ck_assert(A && B && C);
            memcpy(A + off, d.A, d.na * sizeof(float));
            memcpy(B + off, d.B, d.nb * sizeof(float));
            memcpy(C + off, d.C0, d.nc * sizeof(float));
            call(p, g, A + off, B + off, C + off);
            ck_assert_msg(memcmp(C + off, d.C, d.nc * sizeof(float)) == 0,
                          "%s case %zu: result depends on alignment (offset %d)",
                          nb_gemm_path_name(p), c, off);
            free(A);
            free(B);
            free(C);
        }
        data_deinit(&d);
    }
}
END_TEST

typedef struct {
    nb_gemm_path p;
    const gemm_case *g;
    const gemm_data *d;
    float *C;
} thread_job;

static void *thread_run(void *arg) {
    thread_job *j = arg;
    for (int rep = 0; rep < 20; rep++) run(j->p, j->g, j->d, j->C);
    return NULL;
}

/* Two threads calling at once get the single-thread bits (no shared state). */
START_TEST(test_concurrent_calls) {
    nb_gemm_path p = (nb_gemm_path)_i;
    if (skip_unsupported(p)) return;
    nb_rng r;
    nb_rng_seed(&r, 47, (uint64_t)p);
    gemm_case cases[] = {{0, 64, 64, 288, 288, 1, 64, 64, 0.0f},
                         {1, 64, 288, 64, 64, 1, 64, 288, 1.0f},
                         {1, 32, 144, 256, 256, 1, 256, 144, 1.0f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        gemm_data d;
        data_init(&d, &cases[c], &r);
        run(p, &cases[c], &d, d.C);
        float *C1 = malloc(d.nc * sizeof(float)), *C2 = malloc(d.nc * sizeof(float));
        ck_assert(C1 && C2);
        thread_job j1 = {p, &cases[c], &d, C1}, j2 = {p, &cases[c], &d, C2};
        pthread_t t1, t2;
        ck_assert_int_eq(pthread_create(&t1, NULL, thread_run, &j1), 0);
        ck_assert_int_eq(pthread_create(&t2, NULL, thread_run, &j2), 0);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        ck_assert(memcmp(C1, d.C, d.nc * sizeof(float)) == 0);
        ck_assert(memcmp(C2, d.C, d.nc * sizeof(float)) == 0);
        free(C1);
        free(C2);
        data_deinit(&d);
    }
}
END_TEST

/* The public entry points run the active path; K = 0 and empty C work. */
START_TEST(test_public_api) {
    const char *isa = nb_sgemm_isa();
    nb_gemm_path p = nb_gemm_path_active();
    ck_assert_str_eq(isa, nb_gemm_path_name(p));
    ck_assert(nb_gemm_path_supported(p));
    ck_assert(nb_gemm_path_supported(NB_GEMM_PATH_BLAS));
    nb_rng r;
    nb_rng_seed(&r, 53, 0);
    gemm_case g = {0, 19, 45, 33, 33, 1, 45, 45, 1.0f};
    gemm_data d;
    data_init(&d, &g, &r);
    memcpy(d.C, d.C0, d.nc * sizeof(float));
    nb_sgemm_nn(g.M, g.N, g.K, d.A, g.a_rs, g.a_cs, d.B, g.ldb, g.beta, d.C, g.ldc);
    check(p, &g, &d, d.C);
    data_deinit(&d);
    gemm_case h = {1, 21, 10, 50, 50, 1, 50, 12, 0.0f};
    data_init(&d, &h, &r);
    memcpy(d.C, d.C0, d.nc * sizeof(float));
    nb_sgemm_nt(h.M, h.N, h.K, d.A, (int)h.a_rs, d.B, h.ldb, h.beta, d.C, h.ldc);
    check(p, &h, &d, d.C);
    data_deinit(&d);
    /* K = 0: C = beta * C. */
    float c[6] = {NAN, NAN, NAN, 1, 2, 3};
    nb_sgemm_nn(1, 3, 0, NULL, 0, 1, NULL, 3, 0.0f, c, 3);
    nb_sgemm_nt(1, 3, 0, NULL, 0, NULL, 0, 1.0f, c + 3, 3);
    for (int i = 0; i < 3; i++) ck_assert_float_eq(c[i], 0.0f);
    for (int i = 3; i < 6; i++) ck_assert_float_eq(c[i], (float)(i - 2));
    nb_sgemm_nn(0, 3, 4, NULL, 4, 1, NULL, 3, 0.0f, NULL, 3);
}
END_TEST

static char log_seen[512];
static void log_capture(nb_log_level level, const char *msg, void *user) {
    (void)level;
    (void)user;
    snprintf(log_seen, sizeof log_seen, "%s", msg);
}

/* In a fresh child process (the choice is made once per process): the
 * path NB_GEMM asks for, or the default with a warning. Returns the name. */
static void isa_with_env(const char *value, char *out, size_t n, char *log, size_t nlog) {
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fd[0]);
        setenv("NB_GEMM", value, 1);
        nb_log_set(log_capture, NULL);
        char buf[600];
        int len = snprintf(buf, sizeof buf, "%s|%s", nb_sgemm_isa(), log_seen);
        ssize_t w = write(fd[1], buf, (size_t)len);
        _exit(w == len ? 0 : 1);
    }
    close(fd[1]);
    char buf[600] = {0};
    ssize_t got = read(fd[0], buf, sizeof buf - 1);
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    ck_assert(got > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char *bar = strchr(buf, '|');
    ck_assert_ptr_nonnull(bar);
    *bar = '\0';
    snprintf(out, n, "%s", buf);
    snprintf(log, nlog, "%s", bar + 1);
}

START_TEST(test_env_override) {
    nb_gemm_path best = NB_GEMM_PATH_BLAS;
    for (int p = NB_GEMM_PATH_COUNT - 1; p > 0; p--)
        if (nb_gemm_path_supported((nb_gemm_path)p)) {
            best = (nb_gemm_path)p;
            break;
        }
    char isa[64], log[512];
    for (int p = 0; p < NB_GEMM_PATH_COUNT; p++) {
        const char *name = nb_gemm_path_name((nb_gemm_path)p);
        isa_with_env(name, isa, sizeof isa, log, sizeof log);
        if (nb_gemm_path_supported((nb_gemm_path)p)) {
            ck_assert_str_eq(isa, name);
            ck_assert_str_eq(log, "");
        } else {
            ck_assert_str_eq(isa, nb_gemm_path_name(best));
            ck_assert(strstr(log, "cannot run") != NULL);
        }
    }
    isa_with_env("sse9", isa, sizeof isa, log, sizeof log);
    ck_assert_str_eq(isa, nb_gemm_path_name(best));
    ck_assert(strstr(log, "NB_GEMM=sse9 is not one of") != NULL);
    isa_with_env("", isa, sizeof isa, log, sizeof log);
    ck_assert_str_eq(isa, nb_gemm_path_name(best));
}
END_TEST

static Suite *gemm_suite(void) {
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("gemm");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_resnet_shapes, 0, NB_GEMM_PATH_COUNT);
    tcase_add_loop_test(tc, test_random_shapes, 0, NB_GEMM_PATH_COUNT);
    tcase_add_loop_test(tc, test_large_odd_shapes, 0, NB_GEMM_PATH_COUNT);
    tcase_add_loop_test(tc, test_general_strides, 0, NB_GEMM_PATH_COUNT);
    tcase_add_loop_test(tc, test_alignment_independent, 0, NB_GEMM_PATH_COUNT);
    tcase_add_loop_test(tc, test_concurrent_calls, 0, NB_GEMM_PATH_COUNT);
    tcase_add_test(tc, test_public_api);
    tcase_add_test(tc, test_env_override);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(gemm_suite()); }
