/*
 * int_kernel.h — the integer engine's kernels (quant/int_kernel.c), shared
 * by quant/int_engine.c and tests/test_int_engine.c; users call the engine
 * (nb_export.h).
 *
 * A conv is a GEMM over output pixels ("columns", NHWC order, so the output
 * row of column j is the OC channels at out + j·OC):
 *   X (ncols, Kp)   one row of input codes per column (im2row), the K axis
 *                   in the engine's packed order, each scale group padded
 *                   to a multiple of 4 with zero weights
 *   W               the weights (q_w - z_w), packed once per engine:
 *                   u8s8:  (Kp/4, OCp, 4) int8   for AVX-512 VNNI (vpdpbusd)
 *                   s16:   (Kp/2, OCp, 2) int16  for AVX2 (vpmaddwd) and scalar
 *   C (ncols, OCp)  int32 sums over the k range [k0, k1) of one scale group.
 * OCp is OC rounded up to 16 and ncols a multiple of NB_IK_COLS. The VNNI
 * path multiplies the unsigned codes u = q - qmin and leaves the term
 * z_eff·Σ_k w to the caller (z_eff = z - qmin); the s16 paths multiply
 * q - z itself. Every path gives the exact integer sums (the engine checks
 * that they fit in int32).
 *
 * The fixed-point requantizer turns an accumulator into the next layer's
 * code: with real multiplier M and bias b in accumulator units,
 *   r = round((acc + b)·M)        (ties to even, as rint)
 * is computed as r = round_even((acc·2^k + B)·M0 / 2^n) + off, with B =
 * rint(b·2^k) (int32), M0 a signed 31-bit mantissa and n a right shift:
 * one int32 × int32 -> int64 product and one correctly rounded shift.
 */
#ifndef NB_INT_KERNEL_H
#define NB_INT_KERNEL_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    NB_IK_SCALAR = 0, /* portable C over the s16 layout */
    NB_IK_AVX2,       /* vpmaddwd over the s16 layout */
    NB_IK_VNNI,       /* AVX-512 VNNI vpdpbusd over the u8s8 layout */
    NB_IK_COUNT
} nb_ik_path;

#define NB_IK_COLS 24 /* column block every kernel divides */
#define NB_IK_TC 96   /* columns per tile of the engine (a multiple of NB_IK_COLS) */

/* "scalar", "avx2", "vnni"; NULL out of range. */
const char *nb_ik_path_name(nb_ik_path p);
/* Whether this CPU runs path p (scalar always). */
int nb_ik_path_supported(nb_ik_path p);
/* The fastest supported path, or the one the environment's NB_INT_KERNEL
 * (scalar|avx2|vnni) names when this CPU supports it. */
nb_ik_path nb_ik_path_pick(void);

/* im2row. The packed K order is a list of runs: clen channels from c0 at
 * ntaps consecutive taps (kh, kw + t) go to X[dst ...] (contiguous in the
 * NHWC input when clen = C); zeros are the padding entries of the groups. */
typedef struct {
    int kh, kw, c0, clen, ntaps, dst;
} nb_ik_run;

typedef struct {
    int dst, len;
} nb_ik_zero;

typedef struct {
    int C, H, W;          /* the input, NHWC */
    int OH, OW, stride, pad;
    int Kp;               /* X's row length */
    nb_ik_run *runs;
    nb_ik_zero *zeros;
    int n_runs, n_zeros;
    int zeff;             /* the code of real 0: padding of u8 rows */
    int inside;           /* pad 0 and every run covers all C channels: no bounds to check */
} nb_ik_geom;

typedef enum {
    NB_IK_X_U8 = 0,  /* u8 codes -> u8 codes (padding z_eff) */
    NB_IK_X_S16,     /* u8 codes -> int16 u - z_eff (padding 0) */
    NB_IK_X_F_CODES, /* u8 codes -> float u - z_eff (padding 0) */
    NB_IK_X_F_F,     /* floats -> floats (padding 0) */
    NB_IK_X_COUNT
} nb_ik_xmode;

#define NB_IK_SLACK 64 /* bytes an input buffer and X need beyond their end (whole-vector copies) */

/* Rows [0, ncr) of X for output pixels j0 .. j0 + nc - 1 of the images in
 * `in` (pixel j = (n·OH + oh)·OW + ow), rows nc .. ncr - 1 zero. p picks
 * the instruction set (VNNI: AVX-512 masked copies). */
void nb_ik_im2row(nb_ik_path p, nb_ik_xmode m, const nb_ik_geom *g, const void *in, long j0, int nc, int ncr,
                  void *X);

/* C[j·ldc + c] = Σ_{k0 <= k < k1} X[j·Kp + k]·W(k, c) for j < ncols, c < OCp.
 * k0, k1 multiples of 4. */
void nb_ik_gemm_u8s8(const uint8_t *X, int Kp, int ncols, const int8_t *W, int OCp, int k0, int k1, int32_t *C,
                     int ldc);
void nb_ik_gemm_s16(nb_ik_path p, const int16_t *X, int Kp, int ncols, const int16_t *W, int OCp, int k0, int k1,
                    int32_t *C, int ldc);

/* One channel's fixed-point requantizer. */
typedef struct {
    int32_t B;   /* the bias at the accumulator scale 2^-k: rint(b·2^k) */
    int32_t M0;  /* mantissa: |M0| in [2^30, 2^31), or 0 (then r = off) */
    int32_t n;   /* right shift, 1..62 */
    int32_t off; /* added after rounding (the constant code of a channel with M = 0) */
} nb_rq;

/* The requantizer for v = (acc + b)·M at k extra bits (0 <= k <= 24): 1, or
 * 0 when |b·2^k| or M·2^-k is out of range (|B| >= 2^31, |M·2^-k| >= 2^30).
 * The caller keeps |acc·2^k + B| < 2^31. M = 0 gives r = 0. */
int nb_rq_make(double M, double b, int k, nb_rq *q);

/* round_even((acc·2^k + B)·M0 / 2^n) + off. */
static inline int32_t nb_rq_apply(const nb_rq *q, int k, int32_t acc) {
    const int64_t A = (int64_t)acc * ((int64_t)1 << k) + q->B;
    const int64_t P = A * q->M0;
    /* floor((P + 2^(n-1) - 1 + bit) / 2^n), bit the parity of floor(P / 2^n):
     * rounds half to even (>> on a negative value is arithmetic in GCC) */
    const int64_t r = (P + (((int64_t)1 << (q->n - 1)) - 1) + ((P >> q->n) & 1)) >> q->n;
    return (int32_t)r + q->off;
}

/* The consumer's grid for codes: uniform (q = clamp(rint(x/s) + z)) or N2UQ
 * thresholds (q = #{i : x >= thr[i]}, thr ascending). Codes are stored as
 * u = q - qmin in [0, 255]. */
typedef struct {
    int n2uq;
    float s;
    int32_t z, qmin, qmax;
    int n_thr;
    const float *thr;
} nb_ik_grid;

/* The code u = q - qmin of x; of n values into u. */
uint8_t nb_ik_code(const nb_ik_grid *g, float x);
void nb_ik_codes(const nb_ik_grid *g, const float *x, size_t n, uint8_t *u);

/* Epilogues over a tile of ncols columns (row j of a tile at j·ld*). Per
 * channel arrays have OCp entries; outputs have ldo = OC. */
/* F[j][c] (= or +=) (float)(C[j][c] - corr[c])·S[c]. */
void nb_ik_dequant(const int32_t *C, int ldc, int ncols, int OC, const int32_t *corr, const float *S, int accumulate,
                   float *F, int ldf);
/* y = F[j][c]·a + bias[c], max(y, 0) when relu, to out (float) or, when g
 * is given, to the codes of y on g (u8). */
void nb_ik_finish(const float *F, int ldf, int ncols, int OC, float a, const float *bias, int relu,
                  const nb_ik_grid *g, void *out);
/* nb_ik_dequant then nb_ik_finish (a = 1) in one pass, for one scale group. */
void nb_ik_finish_int(const int32_t *C, int ldc, int ncols, int OC, const int32_t *corr, const float *S,
                      const float *bias, int relu, const nb_ik_grid *g, void *out);
/* Requantize: u = clamp(max(r, 0 when relu) + z, qmin, qmax) - qmin with r =
 * nb_rq_apply(rq[c], k, C[j][c] - corr[c]). The arrays B, M0, n, off are
 * rq's fields per channel, widened for the vector path. */
typedef struct {
    int k, relu;
    int32_t z, qmin, qmax;
    const int64_t *B, *M0, *n, *half; /* half = 2^(n-1) - 1 */
    const int32_t *off;
} nb_ik_rq_tab;
void nb_ik_requant(nb_ik_path p, const int32_t *C, int ldc, int ncols, int OC, const int32_t *corr,
                   const nb_ik_rq_tab *t, uint8_t *out);

#endif /* NB_INT_KERNEL_H */
