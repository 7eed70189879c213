/* GEMM through OpenBLAS, thread settings, clocks and peak RSS. */
#include "nb_core.h"

#include <cblas.h>
#include <omp.h>
#include <sys/resource.h>
#include <time.h>

void nb_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta,
             float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
                B, ldb, beta, C, ldc);
}

static int n_threads = 0; /* 0: not set yet, nb_get_threads sets 1 */

void nb_set_threads(int n) {
    if (n < 1) n = 1;
    n_threads = n;
    omp_set_num_threads(n);
    /* Our kernels split work over images; each sgemm runs on one core. */
    openblas_set_num_threads(1);
}

int nb_get_threads(void) {
    if (n_threads == 0) nb_set_threads(1);
    return n_threads;
}

void nb_thread_range(size_t n, size_t *lo, size_t *hi) {
    const size_t th = (size_t)omp_get_thread_num(), k = (size_t)omp_get_num_threads();
    *lo = n * th / k;
    *hi = n * (th + 1) / k;
}

double nb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double nb_peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}
