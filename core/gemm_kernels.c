/*
 * nb_sgemm_nn / nb_sgemm_nt: argument checks, the choice of path (once per
 * process, thread-safe), and the portable path over OpenBLAS. The SIMD
 * kernels live in gemm_avx512.c and gemm_avx2.c.
 *
 * Path selection: the best the CPU supports (AVX-512F, else AVX2 + FMA,
 * else OpenBLAS), unless NB_GEMM=avx512|avx2|blas names another one; a
 * request the CPU cannot run, or an unknown name, logs a warning and keeps
 * the default.
 */
#include "nb_core.h"
#include "gemm_internal.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define NB_HAVE_X86_KERNELS 1
#else
#define NB_HAVE_X86_KERNELS 0
#endif

static const char *const path_names[NB_GEMM_PATH_COUNT] = {
    [NB_GEMM_PATH_BLAS] = "blas",
    [NB_GEMM_PATH_AVX2] = "avx2",
    [NB_GEMM_PATH_AVX512] = "avx512",
};
_Static_assert(sizeof path_names / sizeof path_names[0] == NB_GEMM_PATH_COUNT,
               "one name per path");

const char *nb_gemm_path_name(nb_gemm_path p) {
    return (unsigned)p < NB_GEMM_PATH_COUNT ? path_names[p] : NULL;
}

int nb_gemm_path_supported(nb_gemm_path p) {
    switch (p) {
    case NB_GEMM_PATH_BLAS: return 1;
#if NB_HAVE_X86_KERNELS
    /* __builtin_cpu_supports also checks that the OS saves the registers
     * (XGETBV), so a kernel with AVX-512 off in XCR0 falls back. */
    case NB_GEMM_PATH_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case NB_GEMM_PATH_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f");
#endif
    default: return 0;
    }
}

static nb_gemm_path active_path;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

static void choose_path(void) {
    nb_gemm_path best = NB_GEMM_PATH_BLAS;
    if (nb_gemm_path_supported(NB_GEMM_PATH_AVX512))
        best = NB_GEMM_PATH_AVX512;
    else if (nb_gemm_path_supported(NB_GEMM_PATH_AVX2))
        best = NB_GEMM_PATH_AVX2;
    const char *want = getenv("NB_GEMM");
    if (want && *want) {
        int p = 0;
        while (p < NB_GEMM_PATH_COUNT && strcmp(want, path_names[p]) != 0) p++;
        if (p == NB_GEMM_PATH_COUNT)
            nb_log(NB_LOG_WARN, "NB_GEMM=%s is not one of avx512, avx2, blas; using %s",
                   want, path_names[best]);
        else if (!nb_gemm_path_supported((nb_gemm_path)p))
            nb_log(NB_LOG_WARN, "NB_GEMM=%s: this CPU cannot run it; using %s", want,
                   path_names[best]);
        else
            best = (nb_gemm_path)p;
    }
    active_path = best;
}

nb_gemm_path nb_gemm_path_active(void) {
    pthread_once(&active_once, choose_path);
    return active_path;
}

const char *nb_sgemm_isa(void) { return path_names[nb_gemm_path_active()]; }

/* ------------------------------------------------------ portable path */

/* A view no BLAS layout describes (neither stride 1): one dot product per
 * element, k in increasing order. Slow, but only odd callers get here. */
static void naive_nn(int M, int N, int K, const float *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
                     const float *B, ptrdiff_t ldb, int accumulate, float *C, ptrdiff_t ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0.0f;
            for (int k = 0; k < K; k++) s += A[i * a_rs + k * a_cs] * B[k * ldb + j];
            C[i * ldc + j] = accumulate ? C[i * ldc + j] + s : s;
        }
}

static void blas_nn(int M, int N, int K, const float *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
                    const float *B, int ldb, float beta, float *C, int ldc) {
    /* A as row-major (M, K), lda = a_rs; or as the transpose of a row-major
     * (K, M), lda = a_cs. A stride of a size-1 dimension is irrelevant. */
    ptrdiff_t rs = M == 1 ? K : a_rs, cs = K == 1 ? M : a_cs;
    if ((a_cs == 1 || K == 1) && rs >= K && rs <= 0x7fffffff)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, (int)rs,
                    B, ldb, beta, C, ldc);
    else if ((a_rs == 1 || M == 1) && cs >= M && cs <= 0x7fffffff)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1.0f, A, (int)cs, B,
                    ldb, beta, C, ldc);
    else
        naive_nn(M, N, K, A, a_rs, a_cs, B, ldb, beta != 0.0f, C, ldc);
}

/* ---------------------------------------------------------- dispatch */

static void check_common(int M, int N, int K, const void *A, const void *B, float beta,
                         const void *C, int ldb_min, int ldb, int ldc) {
    NB_ASSERT(M >= 0 && N >= 0 && K >= 0, "sgemm: negative size M %d N %d K %d", M, N, K);
    NB_ASSERT(beta == 0.0f || beta == 1.0f, "sgemm: beta must be 0 or 1, got %g",
              (double)beta);
    NB_ASSERT(ldc >= N, "sgemm: ldc %d < N %d", ldc, N);
    NB_ASSERT(ldb >= ldb_min, "sgemm: ldb %d < %d", ldb, ldb_min);
    NB_ASSERT(C != NULL || M == 0 || N == 0, "sgemm: C is NULL");
    NB_ASSERT((A != NULL && B != NULL) || M == 0 || N == 0 || K == 0,
              "sgemm: A or B is NULL");
}

/* K == 0: C = beta * C. Returns 1 when nothing is left to do. */
static int trivial(int M, int N, int K, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return 1;
    if (K > 0) return 0;
    if (beta == 0.0f)
        for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof *C);
    return 1;
}

static void run_nn(nb_gemm_path p, int M, int N, int K, const float *A, ptrdiff_t a_rs,
                   ptrdiff_t a_cs, const float *B, int ldb, float beta, float *C, int ldc) {
    int acc = beta != 0.0f;
    switch (p) {
#if NB_HAVE_X86_KERNELS
    case NB_GEMM_PATH_AVX512:
        nb_sgemm_nn_avx512(M, N, K, A, a_rs, a_cs, B, ldb, acc, C, ldc);
        return;
    case NB_GEMM_PATH_AVX2:
        nb_sgemm_nn_avx2(M, N, K, A, a_rs, a_cs, B, ldb, acc, C, ldc);
        return;
#endif
    default: blas_nn(M, N, K, A, a_rs, a_cs, B, ldb, beta, C, ldc); return;
    }
}

static void run_nt(nb_gemm_path p, int M, int N, int K, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc) {
    int acc = beta != 0.0f;
    switch (p) {
#if NB_HAVE_X86_KERNELS
    case NB_GEMM_PATH_AVX512:
        nb_sgemm_nt_avx512(M, N, K, A, lda, B, ldb, acc, C, ldc);
        return;
    case NB_GEMM_PATH_AVX2:
        nb_sgemm_nt_avx2(M, N, K, A, lda, B, ldb, acc, C, ldc);
        return;
#endif
    default:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb,
                    beta, C, ldc);
        return;
    }
}

void nb_sgemm_nn_path(nb_gemm_path p, int M, int N, int K, const float *A,
                      ptrdiff_t a_rs, ptrdiff_t a_cs, const float *B, int ldb,
                      float beta, float *C, int ldc) {
    NB_ASSERT(nb_gemm_path_supported(p), "sgemm: path %d not supported here", (int)p);
    check_common(M, N, K, A, B, beta, C, N, ldb, ldc);
    if (trivial(M, N, K, beta, C, ldc)) return;
    run_nn(p, M, N, K, A, a_rs, a_cs, B, ldb, beta, C, ldc);
}

void nb_sgemm_nt_path(nb_gemm_path p, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc) {
    NB_ASSERT(nb_gemm_path_supported(p), "sgemm: path %d not supported here", (int)p);
    check_common(M, N, K, A, B, beta, C, K, ldb, ldc);
    NB_ASSERT(lda >= K, "sgemm_nt: lda %d < K %d", lda, K);
    if (trivial(M, N, K, beta, C, ldc)) return;
    run_nt(p, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

void nb_sgemm_nn(int M, int N, int K, const float *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
                 const float *B, int ldb, float beta, float *C, int ldc) {
    check_common(M, N, K, A, B, beta, C, N, ldb, ldc);
    if (trivial(M, N, K, beta, C, ldc)) return;
    run_nn(nb_gemm_path_active(), M, N, K, A, a_rs, a_cs, B, ldb, beta, C, ldc);
}

void nb_sgemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc) {
    check_common(M, N, K, A, B, beta, C, K, ldb, ldc);
    NB_ASSERT(lda >= K, "sgemm_nt: lda %d < K %d", lda, K);
    if (trivial(M, N, K, beta, C, ldc)) return;
    run_nt(nb_gemm_path_active(), M, N, K, A, lda, B, ldb, beta, C, ldc);
}
