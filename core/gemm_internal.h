/*
 * gemm_internal.h — nibble's own sgemm kernels, shared by core/gemm_*.c,
 * tests/test_gemm.c and bench/gemm_bench.c. Users call nb_sgemm_nn /
 * nb_sgemm_nt (nb_core.h), which pick a path once per process.
 *
 * Paths: AVX-512F (core/gemm_avx512.c), AVX2+FMA (core/gemm_avx2.c), both
 * compiled for baseline x86-64 with function target attributes, and a
 * portable one over OpenBLAS (core/gemm_kernels.c). Every path is
 * deterministic: the order of the fp32 additions depends only on M, N, K.
 */
#ifndef NB_GEMM_INTERNAL_H
#define NB_GEMM_INTERNAL_H

#include <stddef.h>

typedef enum {
    NB_GEMM_PATH_BLAS = 0,
    NB_GEMM_PATH_AVX2,
    NB_GEMM_PATH_AVX512,
    NB_GEMM_PATH_COUNT
} nb_gemm_path;

/* "blas", "avx2", "avx512"; NULL for a value out of range. */
const char *nb_gemm_path_name(nb_gemm_path p);
/* 1 when this CPU (and OS) can run path p; BLAS is always supported. */
int nb_gemm_path_supported(nb_gemm_path p);
/* The path nb_sgemm_nn/nt use (decided on first call, NB_GEMM overrides). */
nb_gemm_path nb_gemm_path_active(void);

/* nb_sgemm_nn / nb_sgemm_nt on an explicit path (asserts it is supported).
 * Same contract as the public functions in nb_core.h. */
void nb_sgemm_nn_path(nb_gemm_path p, int M, int N, int K, const float *A,
                      ptrdiff_t a_rs, ptrdiff_t a_cs, const float *B, int ldb,
                      float beta, float *C, int ldc);
void nb_sgemm_nt_path(nb_gemm_path p, int M, int N, int K, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C,
                      int ldc);

/* The SIMD kernels. Arguments are already checked (M, N, K >= 1, beta 0 or
 * 1, leading dimensions large enough); call only on a CPU that supports
 * the path. `accumulate` is 1 for beta = 1 (C is read), 0 for beta = 0. */
void nb_sgemm_nn_avx512(int M, int N, int K, const float *A, ptrdiff_t a_rs,
                        ptrdiff_t a_cs, const float *B, ptrdiff_t ldb,
                        int accumulate, float *C, ptrdiff_t ldc);
void nb_sgemm_nt_avx512(int M, int N, int K, const float *A, ptrdiff_t lda,
                        const float *B, ptrdiff_t ldb, int accumulate, float *C,
                        ptrdiff_t ldc);
void nb_sgemm_nn_avx2(int M, int N, int K, const float *A, ptrdiff_t a_rs,
                      ptrdiff_t a_cs, const float *B, ptrdiff_t ldb,
                      int accumulate, float *C, ptrdiff_t ldc);
void nb_sgemm_nt_avx2(int M, int N, int K, const float *A, ptrdiff_t lda,
                      const float *B, ptrdiff_t ldb, int accumulate, float *C,
                      ptrdiff_t ldc);

#endif
