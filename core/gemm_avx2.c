/*
 * AVX2 + FMA sgemm kernels (x86-64-v3, e.g. AMD Zen 3 or Intel Haswell and
 * later). Compiled for baseline x86-64; every function carries
 * target("avx2,fma") and runs only after the dispatcher saw both features.
 *
 * Same structure as gemm_avx512.c, sized for 16 ymm registers:
 * nn: a 6 x 16 register tile of C (12 accumulators), per k two loads of
 * B[k, j:j+16] and 6 broadcasts of A (packed, or in place when a_rs == 1).
 * nt: C^T = B * A^T in 8 x 8 tiles transposed on their way into C; B
 * transposed into (kc, 16) panels for the nn kernel when K is short; dot
 * products along K (4 x 3 tiles) when N is small and K long.
 *
 * The order of the fp32 additions depends only on M, N, K: deterministic.
 */
#include "gemm_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define NB_AVX2 __attribute__((target("avx2,fma")))
#define NB_KERNEL static inline __attribute__((always_inline, target("avx2,fma")))

enum {
    MR = 6,     /* rows of the nn register tile */
    NR = 16,    /* columns of the nn register tile: two ymm */
    KC = 128,   /* nn k block */
    MC = 48,    /* rows of A packed at once (multiple of MR) */
    KC_T = 256, /* nt k block for the C^T route's (kc, 8) panel */
};

static inline int min_int(int a, int b) { return a < b ? a : b; }

/* Lanes j < n set (n may be <= 0 or >= 8). */
NB_KERNEL __m256i tail_mask(int n) {
    __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota);
}

/* 8 x 8 transpose of registers: in place, r[i] becomes column i. */
NB_KERNEL void transpose8(__m256 *r) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* dst[c * ldd + r] = src[r * lds + c] for r < 8, c < 8. */
NB_KERNEL void transpose8x8(const float *src, ptrdiff_t lds, float *dst, ptrdiff_t ldd) {
    __m256 r[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lds);
    transpose8(r);
    for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + i * ldd, r[i]);
}

/* Pack A[0:mc, 0:kc] (element (i, k) at a[i * a_rs + k * a_cs]) into blocks
 * of MR rows, k-major within a block. Writes up to 2 floats past the end
 * (the 6-row transpose stores 8 lanes; the extra two are overwritten by the
 * next store or land in the caller's slack). */
static NB_AVX2 void pack_a(int mc, int kc, const float *a, ptrdiff_t a_rs, ptrdiff_t a_cs,
                           float *restrict ap) {
    for (int ib = 0; ib < mc; ib += MR) {
        int mr = min_int(MR, mc - ib);
        const float *ab = a + ib * a_rs;
        int k = 0;
        if (mr == MR && a_cs == 1)
            for (; k + 8 <= kc; k += 8) {
                __m256 r[8];
                for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(ab + min_int(i, 5) * a_rs + k);
                transpose8(r);
                for (int i = 0; i < 8; i++) _mm256_storeu_ps(ap + (k + i) * MR, r[i]);
            }
        for (; k < kc; k++)
            for (int r = 0; r < mr; r++) ap[k * mr + r] = ab[r * a_rs + k * a_cs];
        ap += mr * kc;
    }
}

/* Panel (kc, w) = X[0:n, 0:kc]^T for X with rows ldx apart, w = 8 or 16;
 * columns n..w-1 are zero. */
static NB_AVX2 void pack_t(int n, int w, int kc, const float *x, ptrdiff_t ldx,
                           float *restrict panel) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        int k = 0;
        for (; k + 8 <= kc; k += 8) transpose8x8(x + j * ldx + k, ldx, panel + k * w + j, w);
        for (; k < kc; k++)
            for (int jj = 0; jj < 8; jj++) panel[k * w + j + jj] = x[(j + jj) * ldx + k];
    }
    for (int k = 0; k < kc; k++) {
        for (int jj = j; jj < n; jj++) panel[k * w + jj] = x[jj * ldx + k];
        for (int jj = n; jj < w; jj++) panel[k * w + jj] = 0.0f;
    }
}

/* --------------------------------------------------------------- nn */

/* Apply X to each row of the nn register tile (named accumulators: GCC
 * keeps arrays of vectors in memory). */
#define ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)

/* C[0:mr, 0:16] (= or +=) sum_k a[k * a_ks + r] * b[k * ldb + j]. With
 * full == 0 only the columns in masks m0 (0..7) and m1 (8..15) are read and
 * written. */
NB_KERNEL void kern_nn(const int mr, const int full, int kc, const float *restrict a,
                       ptrdiff_t a_ks, const float *restrict b, ptrdiff_t ldb,
                       float *restrict c, ptrdiff_t ldc, __m256i m0, __m256i m1, int acc) {
#define NN_ZERO(r) __m256 c0_##r = _mm256_setzero_ps(), c1_##r = _mm256_setzero_ps();
#define NN_FMA(r)                                                                   \
    if (mr > r) {                                                                   \
        __m256 av = _mm256_broadcast_ss(a + r);                                     \
        c0_##r = _mm256_fmadd_ps(av, b0, c0_##r);                                   \
        c1_##r = _mm256_fmadd_ps(av, b1, c1_##r);                                   \
    }
#define NN_STORE(r)                                                                 \
    if (mr > r) {                                                                   \
        float *cr = c + r * ldc;                                                    \
        if (full) {                                                                 \
            if (acc) {                                                              \
                c0_##r = _mm256_add_ps(_mm256_loadu_ps(cr), c0_##r);                \
                c1_##r = _mm256_add_ps(_mm256_loadu_ps(cr + 8), c1_##r);            \
            }                                                                       \
            _mm256_storeu_ps(cr, c0_##r);                                           \
            _mm256_storeu_ps(cr + 8, c1_##r);                                       \
        } else {                                                                    \
            if (acc) {                                                              \
                c0_##r = _mm256_add_ps(_mm256_maskload_ps(cr, m0), c0_##r);         \
                c1_##r = _mm256_add_ps(_mm256_maskload_ps(cr + 8, m1), c1_##r);     \
            }                                                                       \
            _mm256_maskstore_ps(cr, m0, c0_##r);                                    \
            _mm256_maskstore_ps(cr + 8, m1, c1_##r);                                \
        }                                                                           \
    }
    ROWS6(NN_ZERO)
    for (int k = 0; k < kc; k++) {
        __m256 b0 = full ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, m0);
        __m256 b1 = full ? _mm256_loadu_ps(b + 8) : _mm256_maskload_ps(b + 8, m1);
        ROWS6(NN_FMA)
        a += a_ks;
        b += ldb;
    }
    ROWS6(NN_STORE)
#undef NN_ZERO
#undef NN_FMA
#undef NN_STORE
}

typedef void (*kern_nn_fn)(int, const float *, ptrdiff_t, const float *, ptrdiff_t,
                           float *, ptrdiff_t, __m256i, __m256i, int);

#define KERN_NN(n, full)                                                            \
    static NB_AVX2 void kern_nn_##n##_##full(int kc, const float *a, ptrdiff_t a_ks, \
                                             const float *b, ptrdiff_t ldb, float *c, \
                                             ptrdiff_t ldc, __m256i m0, __m256i m1,  \
                                             int acc) {                              \
        kern_nn(n, full, kc, a, a_ks, b, ldb, c, ldc, m0, m1, acc);                  \
    }
#define KERN_NN_BOTH(n) KERN_NN(n, 0) KERN_NN(n, 1)
KERN_NN_BOTH(1)
KERN_NN_BOTH(2)
KERN_NN_BOTH(3)
KERN_NN_BOTH(4)
KERN_NN_BOTH(5)
KERN_NN_BOTH(6)

/* [full][mr] */
static const kern_nn_fn kern_nn_table[2][MR + 1] = {
    {NULL, kern_nn_1_0, kern_nn_2_0, kern_nn_3_0, kern_nn_4_0, kern_nn_5_0, kern_nn_6_0},
    {NULL, kern_nn_1_1, kern_nn_2_1, kern_nn_3_1, kern_nn_4_1, kern_nn_5_1, kern_nn_6_1},
};

NB_AVX2 void nb_sgemm_nn_avx2(int M, int N, int K, const float *A, ptrdiff_t a_rs,
                              ptrdiff_t a_cs, const float *B, ptrdiff_t ldb, int accumulate,
                              float *C, ptrdiff_t ldc) {
    _Alignas(32) float ap[MC * KC + 8]; /* 24 KiB, + slack for pack_a */
    int direct = a_rs == 1;             /* rows of A contiguous: read in place */
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = min_int(KC, K - k0);
        int acc = accumulate || k0 > 0;
        for (int i0 = 0; i0 < M; i0 += MC) {
            int mc = min_int(MC, M - i0);
            const float *a0 = A + i0 * a_rs + k0 * a_cs;
            if (!direct) pack_a(mc, kc, a0, a_rs, a_cs, ap);
            for (int j0 = 0; j0 < N; j0 += NR) {
                __m256i m0 = tail_mask(N - j0), m1 = tail_mask(N - j0 - 8);
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

/* Lane n of the result: the sum of v[n]'s 8 lanes. */
NB_KERNEL __m256 reduce8(__m256 v0, __m256 v1, __m256 v2, __m256 v3, __m256 v4, __m256 v5,
                         __m256 v6, __m256 v7) {
    __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(v0, v1), _mm256_hadd_ps(v2, v3));
    __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(v4, v5), _mm256_hadd_ps(v6, v7));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                         _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Lane n of the result: the sum of v[n]'s 8 lanes, n < 4. */
NB_KERNEL __m128 reduce4(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
    __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(v0, v1), _mm256_hadd_ps(v2, v3));
    return _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
}

/* A 4 x 3 tile of C by dot products along K (B's 3 rows held in registers,
 * A's rows streamed), 8 lanes of partial sums per element. Rows/columns
 * beyond mr/nr repeat the last valid one (computed, not stored). */
static NB_AVX2 void kern_nt_dot(int mr, int nr, int K, const float *a, ptrdiff_t lda,
                                const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc,
                                int acc) {
    const float *a0 = a, *a1 = a + min_int(1, mr - 1) * lda;
    const float *a2 = a + min_int(2, mr - 1) * lda, *a3 = a + min_int(3, mr - 1) * lda;
    const float *b0 = b, *b1 = b + min_int(1, nr - 1) * ldb, *b2 = b + min_int(2, nr - 1) * ldb;
    __m256 v00 = _mm256_setzero_ps(), v01 = v00, v02 = v00, v10 = v00, v11 = v00, v12 = v00;
    __m256 v20 = v00, v21 = v00, v22 = v00, v30 = v00, v31 = v00, v32 = v00;
    __m256i m = _mm256_set1_epi32(-1);
    for (int k = 0; k < K; k += 8) {
        int full = k + 8 <= K;
        if (!full) m = tail_mask(K - k);
#define LD(p) (full ? _mm256_loadu_ps((p) + k) : _mm256_maskload_ps((p) + k, m))
        __m256 x0 = LD(b0), x1 = LD(b1), x2 = LD(b2), y;
        y = LD(a0);
        v00 = _mm256_fmadd_ps(y, x0, v00);
        v01 = _mm256_fmadd_ps(y, x1, v01);
        v02 = _mm256_fmadd_ps(y, x2, v02);
        y = LD(a1);
        v10 = _mm256_fmadd_ps(y, x0, v10);
        v11 = _mm256_fmadd_ps(y, x1, v11);
        v12 = _mm256_fmadd_ps(y, x2, v12);
        y = LD(a2);
        v20 = _mm256_fmadd_ps(y, x0, v20);
        v21 = _mm256_fmadd_ps(y, x1, v21);
        v22 = _mm256_fmadd_ps(y, x2, v22);
        y = LD(a3);
        v30 = _mm256_fmadd_ps(y, x0, v30);
        v31 = _mm256_fmadd_ps(y, x1, v31);
        v32 = _mm256_fmadd_ps(y, x2, v32);
#undef LD
    }
    float s[12];
    _mm256_storeu_ps(s, reduce8(v00, v01, v02, v10, v11, v12, v20, v21));
    _mm_storeu_ps(s + 8, reduce4(v22, v30, v31, v32));
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            c[i * ldc + j] = acc ? c[i * ldc + j] + s[3 * i + j] : s[3 * i + j];
}

static NB_AVX2 void nt_dot(int M, int N, int K, const float *A, ptrdiff_t lda,
                           const float *B, ptrdiff_t ldb, int accumulate, float *C,
                           ptrdiff_t ldc) {
    for (int i0 = 0; i0 < M; i0 += 4)
        for (int j0 = 0; j0 < N; j0 += 3)
            kern_nt_dot(min_int(4, M - i0), min_int(3, N - j0), K, A + i0 * lda, lda,
                        B + j0 * ldb, ldb, C + i0 * ldc + j0, ldc, accumulate);
}

/* nt with 16-row strips of B transposed into (kc, 16) panels for the nn
 * micro-kernel: N * K transposes, amortised over M / 6 row tiles. */
static NB_AVX2 void nt_pack_b(int M, int N, int K, const float *A, ptrdiff_t lda,
                              const float *B, ptrdiff_t ldb, int accumulate, float *C,
                              ptrdiff_t ldc) {
    _Alignas(32) float ap[MC * KC + 8]; /* 24 KiB, + slack for pack_a */
    _Alignas(32) float bp[KC * NR];     /* 8 KiB */
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = min_int(KC, K - k0);
        int acc = accumulate || k0 > 0;
        for (int i0 = 0; i0 < M; i0 += MC) {
            int mc = min_int(MC, M - i0);
            pack_a(mc, kc, A + i0 * lda + k0, lda, 1, ap);
            for (int j0 = 0; j0 < N; j0 += NR) {
                int nr = min_int(NR, N - j0);
                __m256i m0 = tail_mask(nr), m1 = tail_mask(nr - 8);
                const kern_nn_fn *kern = kern_nn_table[nr == NR];
                pack_t(nr, NR, kc, B + j0 * ldb + k0, ldb, bp);
                for (int ib = 0; ib < mc; ib += MR) {
                    int mr = min_int(MR, mc - ib);
                    kern[mr](kc, ap + ib * kc, mr, bp, NR, C + (i0 + ib) * ldc + j0, ldc, m0,
                             m1, acc);
                }
            }
        }
    }
}

/* One 8 x 8 tile of C^T = B * A^T: t(r, m) = sum_k b[r * ldb + k] * at[k * 8 + m]
 * for nb rows of B (columns of C); then C[m * ldc + r] (= or +=) t(r, m)
 * for m < mc. Rows of B beyond nb repeat the last valid one. */
static NB_AVX2 void kern_ntT(int nb, int kc, const float *b, ptrdiff_t ldb,
                             const float *restrict at, float *restrict c, ptrdiff_t ldc,
                             int mc, int acc) {
    const float *b0 = b, *b1 = b + min_int(1, nb - 1) * ldb, *b2 = b + min_int(2, nb - 1) * ldb;
    const float *b3 = b + min_int(3, nb - 1) * ldb, *b4 = b + min_int(4, nb - 1) * ldb;
    const float *b5 = b + min_int(5, nb - 1) * ldb, *b6 = b + min_int(6, nb - 1) * ldb;
    const float *b7 = b + min_int(7, nb - 1) * ldb;
    __m256 t0 = _mm256_setzero_ps(), t1 = t0, t2 = t0, t3 = t0, t4 = t0, t5 = t0, t6 = t0,
           t7 = t0;
    for (int k = 0; k < kc; k++) {
        __m256 x = _mm256_load_ps(at + k * 8);
        t0 = _mm256_fmadd_ps(_mm256_broadcast_ss(b0 + k), x, t0);
        t1 = _mm256_fmadd_ps(_mm256_broadcast_ss(b1 + k), x, t1);
        t2 = _mm256_fmadd_ps(_mm256_broadcast_ss(b2 + k), x, t2);
        t3 = _mm256_fmadd_ps(_mm256_broadcast_ss(b3 + k), x, t3);
        t4 = _mm256_fmadd_ps(_mm256_broadcast_ss(b4 + k), x, t4);
        t5 = _mm256_fmadd_ps(_mm256_broadcast_ss(b5 + k), x, t5);
        t6 = _mm256_fmadd_ps(_mm256_broadcast_ss(b6 + k), x, t6);
        t7 = _mm256_fmadd_ps(_mm256_broadcast_ss(b7 + k), x, t7);
    }
    __m256 r[8] = {t0, t1, t2, t3, t4, t5, t6, t7};
    transpose8(r); /* r[m] = row m of C, columns 0..7 */
    if (nb == 8) {
        for (int m = 0; m < mc; m++) {
            if (acc) r[m] = _mm256_add_ps(_mm256_loadu_ps(c + m * ldc), r[m]);
            _mm256_storeu_ps(c + m * ldc, r[m]);
        }
        return;
    }
    __m256i mask = tail_mask(nb);
    for (int m = 0; m < mc; m++) {
        if (acc) r[m] = _mm256_add_ps(_mm256_maskload_ps(c + m * ldc, mask), r[m]);
        _mm256_maskstore_ps(c + m * ldc, mask, r[m]);
    }
}

/* nt as C^T = B * A^T: 8 rows of A transposed into a (kc, 8) panel, B's
 * rows broadcast in place, each 8 x 8 tile transposed on its way into C. */
static NB_AVX2 void nt_pack_a(int M, int N, int K, const float *A, ptrdiff_t lda,
                              const float *B, ptrdiff_t ldb, int accumulate, float *C,
                              ptrdiff_t ldc) {
    _Alignas(32) float at[KC_T * 8]; /* 8 KiB */
    for (int k0 = 0; k0 < K; k0 += KC_T) {
        int kc = min_int(KC_T, K - k0);
        int acc = accumulate || k0 > 0;
        for (int m0 = 0; m0 < M; m0 += 8) {
            int mc = min_int(8, M - m0);
            pack_t(mc, 8, kc, A + m0 * lda + k0, lda, at);
            for (int n0 = 0; n0 < N; n0 += 8)
                kern_ntT(min_int(8, N - n0), kc, B + n0 * ldb + k0, ldb, at,
                         C + m0 * ldc + n0, ldc, mc, acc);
        }
    }
}

/* Rows r < nb of a (nb, 16) tile of C^T: t(r, j) = sum_k b_r[k] * at[k * 16 + j]
 * with B's rows broadcast in place and A^T packed as a (kc, 16) panel: the
 * nn micro-kernel's 6 x 16 shape (2 loads + 6 broadcasts per 12 FMAs).
 * first: ct = t, else ct += t (ct rows 16 floats apart). Rows beyond nb
 * repeat the last valid one (computed, not stored). */
static NB_AVX2 void kern_ntP(int nb, int kc, const float *b, ptrdiff_t ldb,
                             const float *restrict at, float *restrict ct, int first) {
    const float *b0 = b, *b1 = b + min_int(1, nb - 1) * ldb, *b2 = b + min_int(2, nb - 1) * ldb;
    const float *b3 = b + min_int(3, nb - 1) * ldb, *b4 = b + min_int(4, nb - 1) * ldb;
    const float *b5 = b + min_int(5, nb - 1) * ldb;
#define NTP_ZERO(r) __m256 c0_##r = _mm256_setzero_ps(), c1_##r = _mm256_setzero_ps();
#define NTP_FMA(r)                                                                  \
    {                                                                               \
        __m256 bv = _mm256_broadcast_ss(b##r + k);                                  \
        c0_##r = _mm256_fmadd_ps(bv, x0, c0_##r);                                   \
        c1_##r = _mm256_fmadd_ps(bv, x1, c1_##r);                                   \
    }
#define NTP_STORE(r)                                                                \
    if (nb > r) {                                                                   \
        float *cr = ct + r * 16;                                                    \
        if (!first) {                                                               \
            c0_##r = _mm256_add_ps(_mm256_load_ps(cr), c0_##r);                     \
            c1_##r = _mm256_add_ps(_mm256_load_ps(cr + 8), c1_##r);                 \
        }                                                                           \
        _mm256_store_ps(cr, c0_##r);                                                \
        _mm256_store_ps(cr + 8, c1_##r);                                            \
    }
    ROWS6(NTP_ZERO)
    for (int k = 0; k < kc; k++) {
        __m256 x0 = _mm256_load_ps(at + k * 16), x1 = _mm256_load_ps(at + k * 16 + 8);
        ROWS6(NTP_FMA)
    }
    ROWS6(NTP_STORE)
#undef NTP_ZERO
#undef NTP_FMA
#undef NTP_STORE
}

enum { NTP_MAX_N = 512 }; /* columns of C held as C^T on the stack (32 KiB) */

/* nt as C^T = B * A^T, 16 columns of C^T (rows of A) at a time: A's rows
 * packed into (kc, 16) panels, C^T accumulated over all of K in a (N, 16)
 * buffer and transposed into C once. For the weight-gradient shapes (few
 * rows of A, long K). N <= NTP_MAX_N. */
static NB_AVX2 void nt_panel(int M, int N, int K, const float *A, ptrdiff_t lda,
                             const float *B, ptrdiff_t ldb, int accumulate, float *C,
                             ptrdiff_t ldc) {
    _Alignas(32) float at[KC_T * 16]; /* 16 KiB */
    _Alignas(32) float ct[NTP_MAX_N * 16];
    for (int m0 = 0; m0 < M; m0 += 16) {
        const int mc = min_int(16, M - m0);
        for (int k0 = 0; k0 < K; k0 += KC_T) {
            const int kc = min_int(KC_T, K - k0);
            pack_t(mc, 16, kc, A + m0 * lda + k0, lda, at);
            for (int n0 = 0; n0 < N; n0 += MR)
                kern_ntP(min_int(MR, N - n0), kc, B + n0 * ldb + k0, ldb, at, ct + n0 * 16, k0 == 0);
        }
        for (int m = 0; m < mc; m++) {
            float *c = C + (m0 + m) * ldc;
            if (accumulate)
                for (int n = 0; n < N; n++) c[n] += ct[n * 16 + m];
            else
                for (int n = 0; n < N; n++) c[n] = ct[n * 16 + m];
        }
    }
}

NB_AVX2 void nb_sgemm_nt_avx2(int M, int N, int K, const float *A, ptrdiff_t lda,
                              const float *B, ptrdiff_t ldb, int accumulate, float *C,
                              ptrdiff_t ldc) {
    /* Measured at the dW shapes: dot products for few columns and long K,
     * transposing B for short K, else the (kc, 16)-panel C^T route (5% less
     * CPU time for the ResNet-20 step on the AVX2 EPYC than the (kc, 8) one,
     * which stays for N > NTP_MAX_N). */
    if (N < 32 && K >= 128)
        nt_dot(M, N, K, A, lda, B, ldb, accumulate, C, ldc);
    else if (K < 2 * M)
        nt_pack_b(M, N, K, A, lda, B, ldb, accumulate, C, ldc);
    else if (N <= NTP_MAX_N)
        nt_panel(M, N, K, A, lda, B, ldb, accumulate, C, ldc);
    else
        nt_pack_a(M, N, K, A, lda, B, ldb, accumulate, C, ldc);
}

#endif
