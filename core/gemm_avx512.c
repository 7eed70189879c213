/*
 * AVX-512F sgemm kernels. The file is compiled for baseline x86-64; every
 * function carries target("avx512f") and runs only after the dispatcher in
 * gemm_kernels.c saw __builtin_cpu_supports("avx512f").
 *
 * nn: C (M, N) = [C +] A (M, K) * B (K, N). The micro-kernel keeps an
 * 8 x 32 tile of C in 16 zmm registers, K innermost: per k it loads
 * B[k, j:j+32] (contiguous, in place: at these sizes B sits in L1/L2, and
 * packing it would cost more than it saves) and broadcasts 8 values of A.
 * A is read from a packed copy (8 values per k, contiguous) unless the
 * caller's view already has contiguous rows (a_rs == 1, the W^T case).
 *
 * nt: C (M, N) = [C +] A (M, K) * B (N, K)^T, K contiguous in both. Three
 * ways, picked by shape in nb_sgemm_nt_avx512 (measured at the ResNet
 * shapes): dot products along K for small M and long K; B transposed into
 * panels for the nn micro-kernel when K is short; or C^T = B * A^T with A
 * transposed into a panel and each tile transposed on its way into C.
 *
 * The order of the fp32 additions depends only on M, N, K (no
 * alignment-dependent peeling, no threads), so results are deterministic.
 * K is split into blocks whose partial sums go through C.
 */
#include "gemm_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define NB_AVX512 __attribute__((target("avx512f")))
#define NB_KERNEL static inline __attribute__((always_inline, target("avx512f")))

enum {
    MR = 8,     /* rows of the register tile */
    NR = 32,    /* columns of the register tile: two zmm */
    KC = 128,   /* nn k block: packed A block and B strip stay in L1 */
    MC = 64,    /* rows of A packed at once (multiple of MR) */
    KC_T = 256, /* nt k block for the panels (kc, NR) */
};

static inline int min_int(int a, int b) { return a < b ? a : b; }

/* Lanes j < n (n may be <= 0 or >= 16). */
NB_KERNEL __mmask16 tail_mask(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* 8 x 8 block transpose: dst[c * ldd + r] (= or +=) src[r * lds + c]. */
NB_KERNEL void transpose8x8(const float *src, ptrdiff_t lds, float *dst, ptrdiff_t ldd,
                            const int acc) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    __m256 o[8] = {
        _mm256_permute2f128_ps(s0, s4, 0x20), _mm256_permute2f128_ps(s1, s5, 0x20),
        _mm256_permute2f128_ps(s2, s6, 0x20), _mm256_permute2f128_ps(s3, s7, 0x20),
        _mm256_permute2f128_ps(s0, s4, 0x31), _mm256_permute2f128_ps(s1, s5, 0x31),
        _mm256_permute2f128_ps(s2, s6, 0x31), _mm256_permute2f128_ps(s3, s7, 0x31),
    };
    for (int i = 0; i < 8; i++) {
        if (acc) o[i] = _mm256_add_ps(_mm256_loadu_ps(dst + i * ldd), o[i]);
        _mm256_storeu_ps(dst + i * ldd, o[i]);
    }
}

/* Pack A[0:mc, 0:kc] (element (i, k) at a[i * a_rs + k * a_cs]) into blocks
 * of MR rows: block ib holds kc runs of min(MR, mc - ib) values, k-major. */
static NB_AVX512 void pack_a(int mc, int kc, const float *a, ptrdiff_t a_rs,
                             ptrdiff_t a_cs, float *restrict ap) {
    for (int ib = 0; ib < mc; ib += MR) {
        int mr = min_int(MR, mc - ib);
        const float *ab = a + ib * a_rs;
        int k = 0;
        if (mr == MR && a_cs == 1)
            for (; k + 8 <= kc; k += 8) transpose8x8(ab + k, a_rs, ap + k * MR, MR, 0);
        for (; k < kc; k++)
            for (int r = 0; r < mr; r++) ap[k * mr + r] = ab[r * a_rs + k * a_cs];
        ap += mr * kc;
    }
}

/* Panel (kc, NR) = X[0:n, 0:kc]^T for X with rows ldx apart; columns n..NR-1
 * are zero. */
static NB_AVX512 void pack_t(int n, int kc, const float *x, ptrdiff_t ldx,
                             float *restrict panel) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        int k = 0;
        for (; k + 8 <= kc; k += 8)
            transpose8x8(x + j * ldx + k, ldx, panel + k * NR + j, NR, 0);
        for (; k < kc; k++)
            for (int jj = 0; jj < 8; jj++) panel[k * NR + j + jj] = x[(j + jj) * ldx + k];
    }
    for (int k = 0; k < kc; k++) {
        for (int jj = j; jj < n; jj++) panel[k * NR + jj] = x[jj * ldx + k];
        for (int jj = n; jj < NR; jj++) panel[k * NR + jj] = 0.0f;
    }
}

/* Apply X to each row of the register tile. The kernels use named
 * accumulators, not arrays: GCC keeps arrays of vectors in memory. */
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/* --------------------------------------------------------------- nn */

/* C[0:mr, 0:32] (= or +=) sum_k a[k * a_ks + r] * b[k * ldb + j]. With
 * full == 0 only the columns in masks m0 (0..15) and m1 (16..31) are read
 * and written; full == 1 keeps mask moves out of the k loop. */
NB_KERNEL void kern_nn(const int mr, const int full, int kc, const float *restrict a,
                       ptrdiff_t a_ks, const float *restrict b, ptrdiff_t ldb,
                       float *restrict c, ptrdiff_t ldc, __mmask16 m0, __mmask16 m1,
                       int acc) {
#define NN_ZERO(r) __m512 c0_##r = _mm512_setzero_ps(), c1_##r = _mm512_setzero_ps();
#define NN_FMA(r)                                                                   \
    if (mr > r) {                                                                   \
        __m512 av = _mm512_set1_ps(a[r]);                                           \
        c0_##r = _mm512_fmadd_ps(av, b0, c0_##r);                                   \
        c1_##r = _mm512_fmadd_ps(av, b1, c1_##r);                                   \
    }
#define NN_STORE(r)                                                                 \
    if (mr > r) {                                                                   \
        float *cr = c + r * ldc;                                                    \
        if (full) {                                                                 \
            if (acc) {                                                              \
                c0_##r = _mm512_add_ps(_mm512_loadu_ps(cr), c0_##r);                \
                c1_##r = _mm512_add_ps(_mm512_loadu_ps(cr + 16), c1_##r);           \
            }                                                                       \
            _mm512_storeu_ps(cr, c0_##r);                                           \
            _mm512_storeu_ps(cr + 16, c1_##r);                                      \
        } else {                                                                    \
            if (acc) {                                                              \
                c0_##r = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), c0_##r);      \
                c1_##r = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), c1_##r); \
            }                                                                       \
            _mm512_mask_storeu_ps(cr, m0, c0_##r);                                  \
            _mm512_mask_storeu_ps(cr + 16, m1, c1_##r);                             \
        }                                                                           \
    }
    ROWS(NN_ZERO)
    for (int k = 0; k < kc; k++) {
        __m512 b0 = full ? _mm512_loadu_ps(b) : _mm512_maskz_loadu_ps(m0, b);
        __m512 b1 = full ? _mm512_loadu_ps(b + 16) : _mm512_maskz_loadu_ps(m1, b + 16);
        ROWS(NN_FMA)
        a += a_ks;
        b += ldb;
    }
    ROWS(NN_STORE)
#undef NN_ZERO
#undef NN_FMA
#undef NN_STORE
}

typedef void (*kern_nn_fn)(int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                           float *, ptrdiff_t, __mmask16, __mmask16, int);

#define KERN_NN(n, full)                                                            \
    static NB_AVX512 void kern_nn_##n##_##full(int kc, const float *a, ptrdiff_t a_ks, \
                                               const float *b, ptrdiff_t ldb, float *c, \
                                               ptrdiff_t ldc, __mmask16 m0,            \
                                               __mmask16 m1, int acc) {                \
        kern_nn(n, full, kc, a, a_ks, b, ldb, c, ldc, m0, m1, acc);                    \
    }
#define KERN_NN_BOTH(n) KERN_NN(n, 0) KERN_NN(n, 1)
KERN_NN_BOTH(1)
KERN_NN_BOTH(2)
KERN_NN_BOTH(3)
KERN_NN_BOTH(4)
KERN_NN_BOTH(5)
KERN_NN_BOTH(6)
KERN_NN_BOTH(7)
KERN_NN_BOTH(8)

/* [full][mr] */
static const kern_nn_fn kern_nn_table[2][MR + 1] = {
    {NULL, kern_nn_1_0, kern_nn_2_0, kern_nn_3_0, kern_nn_4_0, kern_nn_5_0, kern_nn_6_0,
     kern_nn_7_0, kern_nn_8_0},
    {NULL, kern_nn_1_1, kern_nn_2_1, kern_nn_3_1, kern_nn_4_1, kern_nn_5_1, kern_nn_6_1,
     kern_nn_7_1, kern_nn_8_1},
};

NB_AVX512 void nb_sgemm_nn_avx512(int M, int N, int K, const float *A, ptrdiff_t a_rs,
                                  ptrdiff_t a_cs, const float *B, ptrdiff_t ldb,
                                  int accumulate, float *C, ptrdiff_t ldc) {
    _Alignas(64) float ap[MC * KC]; /* 32 KiB */
    int direct = a_rs == 1;         /* rows of A contiguous: read it in place */
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = min_int(KC, K - k0);
        int acc = accumulate || k0 > 0;
        for (int i0 = 0; i0 < M; i0 += MC) {
            int mc = min_int(MC, M - i0);
            const float *a0 = A + i0 * a_rs + k0 * a_cs;
            if (!direct) pack_a(mc, kc, a0, a_rs, a_cs, ap);
            /* Each (kc, 32) strip of B is reused by the mc / 8 row tiles. */
            for (int j0 = 0; j0 < N; j0 += NR) {
                __mmask16 m0 = tail_mask(N - j0), m1 = tail_mask(N - j0 - 16);
                const kern_nn_fn *kern = kern_nn_table[N - j0 >= NR];
                const float *b = B + k0 * ldb + j0;
                for (int ib = 0; ib < mc; ib += MR) {
                    int mr = min_int(MR, mc - ib);
                    float *c = C + (i0 + ib) * ldc + j0;
                    if (direct)
                        kern[mr](kc, a0 + ib, a_cs, b, ldb, c, ldc, m0, m1, acc);
                    else
                        kern[mr](kc, ap + ib * kc, mr, b, ldb, c, ldc, m0, m1, acc);
                }
            }
        }
    }
}

/* --------------------------------------------------------------- nt */

/* Sum each of v[0..15] (v[4 i + j] for tile element (i, j)) across its
 * lanes: 128-bit lane i of the result holds row i, columns 0..3. */
NB_KERNEL __m512 reduce16(const __m512 *v) {
    __m512 t[8], u[4], w[2];
    for (int p = 0; p < 8; p++)
        t[p] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * p], v[2 * p + 1]),
                             _mm512_unpackhi_ps(v[2 * p], v[2 * p + 1]));
    for (int q = 0; q < 4; q++)
        u[q] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * q], t[2 * q + 1], 0x44),
                             _mm512_shuffle_ps(t[2 * q], t[2 * q + 1], 0xEE));
    for (int h = 0; h < 2; h++)
        w[h] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * h], u[2 * h + 1], 0x44),
                             _mm512_shuffle_f32x4(u[2 * h], u[2 * h + 1], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88),
                         _mm512_shuffle_f32x4(w[0], w[1], 0xDD));
}

/* A 4 x 4 tile of C by dot products along K, 16 lanes of partial sums per
 * element. Rows/columns beyond mr/nr repeat the last valid one (computed,
 * not stored). */
static NB_AVX512 void kern_nt_dot(int mr, int nr, int K, const float *a, ptrdiff_t lda,
                                  const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc,
                                  int acc) {
    const float *ar[4], *br[4];
    for (int r = 0; r < 4; r++) {
        ar[r] = a + min_int(r, mr - 1) * lda;
        br[r] = b + min_int(r, nr - 1) * ldb;
    }
    __m512 v[16];
    for (int n = 0; n < 16; n++) v[n] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 av[4], bv[4];
        for (int r = 0; r < 4; r++) {
            av[r] = _mm512_loadu_ps(ar[r] + k);
            bv[r] = _mm512_loadu_ps(br[r] + k);
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) v[4 * i + j] = _mm512_fmadd_ps(av[i], bv[j], v[4 * i + j]);
    }
    if (k < K) {
        __mmask16 m = tail_mask(K - k);
        __m512 av[4], bv[4];
        for (int r = 0; r < 4; r++) {
            av[r] = _mm512_maskz_loadu_ps(m, ar[r] + k);
            bv[r] = _mm512_maskz_loadu_ps(m, br[r] + k);
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) v[4 * i + j] = _mm512_fmadd_ps(av[i], bv[j], v[4 * i + j]);
    }
    __m512 sum = reduce16(v);
    if (mr == 4 && nr == 4) {
        __m128 row[4] = {_mm512_castps512_ps128(sum), _mm512_extractf32x4_ps(sum, 1),
                         _mm512_extractf32x4_ps(sum, 2), _mm512_extractf32x4_ps(sum, 3)};
        for (int i = 0; i < 4; i++) {
            if (acc) row[i] = _mm_add_ps(_mm_loadu_ps(c + i * ldc), row[i]);
            _mm_storeu_ps(c + i * ldc, row[i]);
        }
        return;
    }
    _Alignas(64) float s[16];
    _mm512_store_ps(s, sum);
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            c[i * ldc + j] = acc ? c[i * ldc + j] + s[4 * i + j] : s[4 * i + j];
}

static NB_AVX512 void nt_dot(int M, int N, int K, const float *A, ptrdiff_t lda,
                             const float *B, ptrdiff_t ldb, int accumulate, float *C,
                             ptrdiff_t ldc) {
    if ((size_t)M * K * sizeof(float) <= 32 * 1024) {
        /* All of A stays in L1: stream B once. */
        for (int j0 = 0; j0 < N; j0 += 4)
            for (int i0 = 0; i0 < M; i0 += 4)
                kern_nt_dot(min_int(4, M - i0), min_int(4, N - j0), K, A + i0 * lda, lda,
                            B + j0 * ldb, ldb, C + i0 * ldc + j0, ldc, accumulate);
    } else {
        for (int i0 = 0; i0 < M; i0 += 4)
            for (int j0 = 0; j0 < N; j0 += 4)
                kern_nt_dot(min_int(4, M - i0), min_int(4, N - j0), K, A + i0 * lda, lda,
                            B + j0 * ldb, ldb, C + i0 * ldc + j0, ldc, accumulate);
    }
}

/* nt with 32-row strips of B transposed into (kc, 32) panels for the nn
 * micro-kernel: N * K transposes, amortised over M / 8 row tiles. */
static NB_AVX512 void nt_pack_b(int M, int N, int K, const float *A, ptrdiff_t lda,
                                const float *B, ptrdiff_t ldb, int accumulate, float *C,
                                ptrdiff_t ldc) {
    _Alignas(64) float ap[MC * KC]; /* 32 KiB */
    _Alignas(64) float bp[KC * NR]; /* 16 KiB */
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = min_int(KC, K - k0);
        int acc = accumulate || k0 > 0;
        for (int i0 = 0; i0 < M; i0 += MC) {
            int mc = min_int(MC, M - i0);
            pack_a(mc, kc, A + i0 * lda + k0, lda, 1, ap);
            for (int j0 = 0; j0 < N; j0 += NR) {
                int nr = min_int(NR, N - j0);
                __mmask16 m0 = tail_mask(nr), m1 = tail_mask(nr - 16);
                const kern_nn_fn *kern = kern_nn_table[nr == NR];
                pack_t(nr, kc, B + j0 * ldb + k0, ldb, bp);
                for (int ib = 0; ib < mc; ib += MR) {
                    int mr = min_int(MR, mc - ib);
                    kern[mr](kc, ap + ib * kc, mr, bp, NR, C + (i0 + ib) * ldc + j0, ldc, m0,
                             m1, acc);
                }
            }
        }
    }
}

/* One tile of C^T = B * A^T: t(r, m) = sum_k b[r * ldb + k] * at[k * NR + m]
 * for mr rows of B (columns of C) and the 32 columns of the packed A^T
 * (rows of C); then C[m * ldc + r] (= or +=) t(r, m) for m < mc. */
NB_KERNEL void kern_ntT(const int mr, int kc, const float *restrict b, ptrdiff_t ldb,
                        const float *restrict at, float *restrict c, ptrdiff_t ldc, int mc,
                        int acc) {
#define NT_ZERO(r) __m512 c0_##r = _mm512_setzero_ps(), c1_##r = _mm512_setzero_ps();
#define NT_FMA(r)                                                                   \
    if (mr > r) {                                                                   \
        __m512 bv = _mm512_set1_ps(b[r * ldb]);                                     \
        c0_##r = _mm512_fmadd_ps(bv, a0, c0_##r);                                   \
        c1_##r = _mm512_fmadd_ps(bv, a1, c1_##r);                                   \
    }
#define NT_SPILL(r)                                                                 \
    if (mr > r) {                                                                   \
        _mm512_store_ps(tile[r], c0_##r);                                           \
        _mm512_store_ps(tile[r] + 16, c1_##r);                                      \
    }
    ROWS(NT_ZERO)
    for (int k = 0; k < kc; k++) {
        __m512 a0 = _mm512_load_ps(at), a1 = _mm512_load_ps(at + 16);
        ROWS(NT_FMA)
        at += NR;
        b += 1;
    }
    _Alignas(64) float tile[MR][NR];
    ROWS(NT_SPILL)
    int m = 0;
    if (mr == MR)
        for (; m + 8 <= mc; m += 8) transpose8x8(tile[0] + m, NR, c + m * ldc, ldc, acc);
    for (; m < mc; m++)
        for (int r = 0; r < mr; r++)
            c[m * ldc + r] = acc ? c[m * ldc + r] + tile[r][m] : tile[r][m];
#undef NT_ZERO
#undef NT_FMA
#undef NT_SPILL
}

typedef void (*kern_ntT_fn)(int, const float *, ptrdiff_t, const float *, float *,
                            ptrdiff_t, int, int);

#define KERN_NTT(n)                                                                 \
    static NB_AVX512 void kern_ntT_##n(int kc, const float *b, ptrdiff_t ldb,       \
                                       const float *at, float *c, ptrdiff_t ldc,    \
                                       int mc, int acc) {                           \
        kern_ntT(n, kc, b, ldb, at, c, ldc, mc, acc);                               \
    }
KERN_NTT(1)
KERN_NTT(2)
KERN_NTT(3)
KERN_NTT(4)
KERN_NTT(5)
KERN_NTT(6)
KERN_NTT(7)
KERN_NTT(8)

static const kern_ntT_fn kern_ntT_table[MR + 1] = {
    NULL, kern_ntT_1, kern_ntT_2, kern_ntT_3, kern_ntT_4,
    kern_ntT_5, kern_ntT_6, kern_ntT_7, kern_ntT_8,
};

/* nt as C^T = B * A^T: 32 rows of A transposed into a (kc, 32) panel, B's
 * rows broadcast in place, each 8 x 32 tile transposed on its way into C.
 * M * K + M * N transposes: good when K is long next to M. */
static NB_AVX512 void nt_pack_a(int M, int N, int K, const float *A, ptrdiff_t lda,
                                const float *B, ptrdiff_t ldb, int accumulate, float *C,
                                ptrdiff_t ldc) {
    _Alignas(64) float at[KC_T * NR]; /* 32 KiB */
    for (int k0 = 0; k0 < K; k0 += KC_T) {
        int kc = min_int(KC_T, K - k0);
        int acc = accumulate || k0 > 0;
        for (int m0 = 0; m0 < M; m0 += NR) {
            int mc = min_int(NR, M - m0);
            pack_t(mc, kc, A + m0 * lda + k0, lda, at);
            for (int n0 = 0; n0 < N; n0 += MR)
                kern_ntT_table[min_int(MR, N - n0)](kc, B + n0 * ldb + k0, ldb, at,
                                                    C + m0 * ldc + n0, ldc, mc, acc);
        }
    }
}

NB_AVX512 void nb_sgemm_nt_avx512(int M, int N, int K, const float *A, ptrdiff_t lda,
                                  const float *B, ptrdiff_t ldb, int accumulate, float *C,
                                  ptrdiff_t ldc) {
    /* Measured at the dW shapes: dot products win for M <= 16 with long K
     * (the panel methods would waste half of each 32-wide tile); otherwise
     * transposing B costs N * K, amortised over M, and the C^T route costs
     * M * (K + N), amortised over K: pick by K against M. */
    if (M <= 16 && K >= 128)
        nt_dot(M, N, K, A, lda, B, ldb, accumulate, C, ldc);
    else if (K < 2 * M)
        nt_pack_b(M, N, K, A, lda, B, ldb, accumulate, C, ldc);
    else
        nt_pack_a(M, N, K, A, lda, B, ldb, accumulate, C, ldc);
}

#endif
