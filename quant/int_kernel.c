/* The integer engine's kernels (layouts and contracts in int_kernel.h).
 *
 * The file is compiled for baseline x86-64; the VNNI and AVX2 functions
 * carry target attributes and run only after nb_ik_path_supported saw the
 * CPU features. Register tiles: VNNI keeps NC columns x V zmm of 16
 * channels in NC·V <= 24 accumulators (per 4 k: V weight loads, NC
 * broadcasts of 4 codes, NC·V vpdpbusd); AVX2 keeps 6 columns x 2 ymm of 8
 * channels (per 2 k: 2 loads, 6 broadcasts, 12 vpmaddwd). All integer
 * arithmetic is exact, so every path gives the same sums. */
#include "int_kernel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NB_IK_X86 1
#define NB_T_VNNI "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni"
#define NB_T_AVX2 "avx2"
#else
#define NB_IK_X86 0
#endif

#define NB_IK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

static const char *const path_names[NB_IK_COUNT] = {"scalar", "avx2", "vnni"};

const char *nb_ik_path_name(nb_ik_path p) { return (unsigned)p < NB_IK_COUNT ? path_names[p] : NULL; }

int nb_ik_path_supported(nb_ik_path p) {
#if NB_IK_X86
    __builtin_cpu_init();
    switch (p) {
    case NB_IK_SCALAR: return 1;
    case NB_IK_AVX2: return __builtin_cpu_supports("avx2");
    case NB_IK_VNNI:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
    default: return 0;
    }
#else
    return p == NB_IK_SCALAR;
#endif
}

nb_ik_path nb_ik_path_pick(void) {
    const char *want = getenv("NB_INT_KERNEL");
    if (want)
        for (int p = 0; p < NB_IK_COUNT; p++)
            if (!strcmp(want, path_names[p]) && nb_ik_path_supported((nb_ik_path)p)) return (nb_ik_path)p;
    for (int p = NB_IK_COUNT - 1; p > 0; p--)
        if (nb_ik_path_supported((nb_ik_path)p)) return (nb_ik_path)p;
    return NB_IK_SCALAR;
}

/* ------------------------------------------------------------ requantizer */

int nb_rq_make(double M, double b, int k, nb_rq *q) {
    memset(q, 0, sizeof *q);
    q->n = 1;
    if (!(k >= 0 && k <= 24) || !isfinite(M) || !isfinite(b)) return 0;
    const double B = rint(ldexp(b, k));
    if (fabs(B) >= 2147483648.0) return 0;
    q->B = (int32_t)B;
    const double Mk = ldexp(M, -k);
    /* |acc·2^k + B| < 2^31, so with |Mk| < 2^-32 the product is below 1/2
     * and rounds to 0: M0 = 0 is exact */
    if (fabs(Mk) < 0x1p-32) return 1;
    int e;
    const double m = frexp(fabs(Mk), &e); /* |Mk| = m·2^e, m in [0.5, 1) */
    int64_t m0 = (int64_t)rint(ldexp(m, 31));
    if (m0 == ((int64_t)1 << 31)) {
        m0 >>= 1;
        e++;
    }
    if (31 - e > 62 || 31 - e < 1) return 0;
    q->M0 = (int32_t)(Mk < 0 ? -m0 : m0);
    q->n = 31 - e;
    return 1;
}

/* ------------------------------------------------------------------ codes */

#define RND_MAGIC 12582912.0f /* 1.5·2^23: (v + M) - M is rint for |v| <= 2^22 */

/* clamp(rint(x / s) + z, qmin, qmax) - qmin, as quant/fakequant.c rounds,
 * with the clamp moved before the rounding (the same for integer bounds lo
 * = qmin - z, hi = qmax - z) and written as max/min, so the loops
 * vectorise; a NaN input gives qmin's code. */
static inline int32_t uniform_u(float x, float s, float lo, float hi, int32_t zoff) {
    float v = x / s;
    v = v > lo ? v : lo;
    v = v < hi ? v : hi;
    return (int32_t)((v + RND_MAGIC) - RND_MAGIC) + zoff;
}

/* #{i : x >= thr[i]} over ascending thresholds (a NaN input gives 0). */
static inline int32_t n2uq_code(float x, const float *thr, int n) {
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (x >= thr[mid]) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

uint8_t nb_ik_code(const nb_ik_grid *g, float x) {
    if (g->n2uq) return (uint8_t)(n2uq_code(x, g->thr, g->n_thr) - g->qmin);
    return (uint8_t)uniform_u(x, g->s, (float)(g->qmin - g->z), (float)(g->qmax - g->z), g->z - g->qmin);
}

NB_IK_CLONES static void codes_uniform(const float *x, size_t n, float s, float lo, float hi, int32_t zoff,
                                       uint8_t *u) {
    for (size_t i = 0; i < n; i++) u[i] = (uint8_t)uniform_u(x[i], s, lo, hi, zoff);
}

void nb_ik_codes(const nb_ik_grid *g, const float *x, size_t n, uint8_t *u) {
    if (!g->n2uq)
        codes_uniform(x, n, g->s, (float)(g->qmin - g->z), (float)(g->qmax - g->z), g->z - g->qmin, u);
    else
        for (size_t i = 0; i < n; i++) u[i] = (uint8_t)(n2uq_code(x[i], g->thr, g->n_thr) - g->qmin);
}

/* -------------------------------------------------------------- epilogues */

NB_IK_CLONES void nb_ik_dequant(const int32_t *C, int ldc, int ncols, int OC, const int32_t *corr, const float *S,
                                int accumulate, float *F, int ldf) {
    for (int j = 0; j < ncols; j++) {
        const int32_t *c = C + (size_t)j * ldc;
        float *f = F + (size_t)j * ldf;
        if (accumulate)
            for (int o = 0; o < OC; o++) f[o] += (float)(c[o] - corr[o]) * S[o];
        else
            for (int o = 0; o < OC; o++) f[o] = (float)(c[o] - corr[o]) * S[o];
    }
}

NB_IK_CLONES static void finish_f32(const float *F, int ldf, int ncols, int OC, float a, const float *bias, int relu,
                                    float *out) {
    for (int j = 0; j < ncols; j++) {
        const float *f = F + (size_t)j * ldf;
        float *y = out + (size_t)j * OC;
        if (relu)
            for (int o = 0; o < OC; o++) {
                const float v = f[o] * a + bias[o];
                y[o] = v > 0.0f ? v : 0.0f;
            }
        else
            for (int o = 0; o < OC; o++) y[o] = f[o] * a + bias[o];
    }
}

NB_IK_CLONES static void finish_uniform(const float *F, int ldf, int ncols, int OC, float a, const float *bias,
                                        int relu, const nb_ik_grid *g, uint8_t *out) {
    const float s = g->s, lo = (float)(g->qmin - g->z), hi = (float)(g->qmax - g->z);
    const int32_t zoff = g->z - g->qmin;
    for (int j = 0; j < ncols; j++) {
        const float *f = F + (size_t)j * ldf;
        uint8_t *u = out + (size_t)j * OC;
        if (relu)
            for (int o = 0; o < OC; o++) {
                const float v = f[o] * a + bias[o];
                u[o] = (uint8_t)uniform_u(v > 0.0f ? v : 0.0f, s, lo, hi, zoff);
            }
        else
            for (int o = 0; o < OC; o++) u[o] = (uint8_t)uniform_u(f[o] * a + bias[o], s, lo, hi, zoff);
    }
}

void nb_ik_finish(const float *F, int ldf, int ncols, int OC, float a, const float *bias, int relu,
                  const nb_ik_grid *g, void *out) {
    if (!g) {
        finish_f32(F, ldf, ncols, OC, a, bias, relu, out);
    } else if (!g->n2uq) {
        finish_uniform(F, ldf, ncols, OC, a, bias, relu, g, out);
    } else {
        for (int j = 0; j < ncols; j++) {
            const float *f = F + (size_t)j * ldf;
            uint8_t *u = (uint8_t *)out + (size_t)j * OC;
            for (int o = 0; o < OC; o++) {
                float v = f[o] * a + bias[o];
                v = relu && !(v > 0.0f) ? 0.0f : v;
                u[o] = (uint8_t)(n2uq_code(v, g->thr, g->n_thr) - g->qmin);
            }
        }
    }
}

NB_IK_CLONES static void finish_int_f32(const int32_t *C, int ldc, int ncols, int OC, const int32_t *corr,
                                        const float *S, const float *bias, int relu, float *out) {
    for (int j = 0; j < ncols; j++) {
        const int32_t *c = C + (size_t)j * ldc;
        float *y = out + (size_t)j * OC;
        if (relu)
            for (int o = 0; o < OC; o++) {
                const float v = (float)(c[o] - corr[o]) * S[o] + bias[o];
                y[o] = v > 0.0f ? v : 0.0f;
            }
        else
            for (int o = 0; o < OC; o++) y[o] = (float)(c[o] - corr[o]) * S[o] + bias[o];
    }
}

NB_IK_CLONES static void finish_int_uniform(const int32_t *C, int ldc, int ncols, int OC, const int32_t *corr,
                                            const float *S, const float *bias, int relu, const nb_ik_grid *g,
                                            uint8_t *out) {
    const float s = g->s, lo = (float)(g->qmin - g->z), hi = (float)(g->qmax - g->z);
    const int32_t zoff = g->z - g->qmin;
    for (int j = 0; j < ncols; j++) {
        const int32_t *c = C + (size_t)j * ldc;
        uint8_t *u = out + (size_t)j * OC;
        for (int o = 0; o < OC; o++) {
            float v = (float)(c[o] - corr[o]) * S[o] + bias[o];
            v = relu && !(v > 0.0f) ? 0.0f : v;
            u[o] = (uint8_t)uniform_u(v, s, lo, hi, zoff);
        }
    }
}

void nb_ik_finish_int(const int32_t *C, int ldc, int ncols, int OC, const int32_t *corr, const float *S,
                      const float *bias, int relu, const nb_ik_grid *g, void *out) {
    if (!g) {
        finish_int_f32(C, ldc, ncols, OC, corr, S, bias, relu, out);
    } else if (!g->n2uq) {
        finish_int_uniform(C, ldc, ncols, OC, corr, S, bias, relu, g, out);
    } else {
        for (int j = 0; j < ncols; j++) {
            const int32_t *c = C + (size_t)j * ldc;
            uint8_t *u = (uint8_t *)out + (size_t)j * OC;
            for (int o = 0; o < OC; o++) {
                float v = (float)(c[o] - corr[o]) * S[o] + bias[o];
                v = relu && !(v > 0.0f) ? 0.0f : v;
                u[o] = (uint8_t)(n2uq_code(v, g->thr, g->n_thr) - g->qmin);
            }
        }
    }
}

static void requant_scalar(const int32_t *C, int ldc, int ncols, int OC, const int32_t *corr, const nb_ik_rq_tab *t,
                           uint8_t *out) {
    for (int j = 0; j < ncols; j++) {
        const int32_t *c = C + (size_t)j * ldc;
        uint8_t *u = out + (size_t)j * OC;
        for (int o = 0; o < OC; o++) {
            const nb_rq q = {(int32_t)t->B[o], (int32_t)t->M0[o], (int32_t)t->n[o], t->off[o]};
            int32_t r = nb_rq_apply(&q, t->k, c[o] - corr[o]);
            r = t->relu && r < 0 ? 0 : r;
            r += t->z;
            r = r < t->qmin ? t->qmin : r > t->qmax ? t->qmax : r;
            u[o] = (uint8_t)(r - t->qmin);
        }
    }
}

#if NB_IK_X86
/* 8 lanes of the requantizer in int64: r = round_even((A·M0) / 2^n). */
static inline __attribute__((always_inline, target(NB_T_VNNI))) __m256i rq8(__m512i A, __m512i M0, __m512i n,
                                                                         __m512i half) {
    const __m512i P = _mm512_mullo_epi64(A, M0);
    const __m512i bit = _mm512_and_si512(_mm512_srav_epi64(P, n), _mm512_set1_epi64(1));
    return _mm512_cvtepi64_epi32(_mm512_srav_epi64(_mm512_add_epi64(_mm512_add_epi64(P, half), bit), n));
}

__attribute__((target(NB_T_VNNI))) static void requant_avx512(const int32_t *C, int ldc, int ncols, int OC,
                                                             const int32_t *corr, const nb_ik_rq_tab *t,
                                                             uint8_t *out) {
    const __m512i zero = _mm512_setzero_si512(), z = _mm512_set1_epi32(t->z);
    const __m512i lo = _mm512_set1_epi32(t->qmin), hi = _mm512_set1_epi32(t->qmax);
    const int k = t->k;
    for (int o = 0; o < OC; o += 16) {
        const __mmask16 m = OC - o >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (OC - o)) - 1u);
        /* per-channel constants stay in registers across the columns */
        const __m512i B0 = _mm512_loadu_si512(t->B + o), B1 = _mm512_loadu_si512(t->B + o + 8);
        const __m512i M0 = _mm512_loadu_si512(t->M0 + o), M1 = _mm512_loadu_si512(t->M0 + o + 8);
        const __m512i n0 = _mm512_loadu_si512(t->n + o), n1 = _mm512_loadu_si512(t->n + o + 8);
        const __m512i h0 = _mm512_loadu_si512(t->half + o), h1 = _mm512_loadu_si512(t->half + o + 8);
        const __m512i off = _mm512_loadu_si512(t->off + o), cr = _mm512_loadu_si512(corr + o);
        for (int j = 0; j < ncols; j++) {
            const __m512i acc = _mm512_sub_epi32(_mm512_loadu_si512(C + (size_t)j * ldc + o), cr);
            const __m512i a0 = _mm512_add_epi64(_mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc)), k), B0);
            const __m512i a1 =
                _mm512_add_epi64(_mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc, 1)), k), B1);
            __m512i r = _mm512_inserti64x4(_mm512_castsi256_si512(rq8(a0, M0, n0, h0)), rq8(a1, M1, n1, h1), 1);
            r = _mm512_add_epi32(r, off);
            if (t->relu) r = _mm512_max_epi32(r, zero);
            r = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(r, z), lo), hi);
            _mm_mask_storeu_epi8(out + (size_t)j * OC + o, m, _mm512_cvtepi32_epi8(_mm512_sub_epi32(r, lo)));
        }
    }
}
#endif

void nb_ik_requant(nb_ik_path p, const int32_t *C, int ldc, int ncols, int OC, const int32_t *corr,
                   const nb_ik_rq_tab *t, uint8_t *out) {
#if NB_IK_X86
    if (p == NB_IK_VNNI) {
        requant_avx512(C, ldc, ncols, OC, corr, t, out);
        return;
    }
#endif
    (void)p;
    requant_scalar(C, ldc, ncols, OC, corr, t, out);
}

/* ----------------------------------------------------------------- im2row */

/* Short runs (a 3-tap row of 16 channels is 48 bytes): fixed 16/8-byte
 * moves, overlapping at the end, instead of a memcpy call. */
static inline void copy_u8(uint8_t *d, const uint8_t *s, int n) {
    if (n >= 16) {
        int i = 0;
        for (; i + 16 <= n; i += 16) memcpy(d + i, s + i, 16);
        if (i < n) memcpy(d + n - 16, s + n - 16, 16);
    } else if (n >= 8) {
        memcpy(d, s, 8);
        memcpy(d + n - 8, s + n - 8, 8);
    } else {
        for (int i = 0; i < n; i++) d[i] = s[i];
    }
}

#if NB_IK_X86
/* Whole 64-byte moves: up to 63 bytes beyond n are read from src and
 * written to d. The rows of a tile are written in order and each row's runs
 * by ascending position, so what lands beyond a run is overwritten by the
 * next run, the group padding (written last) or the next row; the tile and
 * the value buffers carry NB_IK_SLACK bytes at their end. The group
 * padding, written after the runs, is filled to its exact length. */
static inline __attribute__((target(NB_T_VNNI))) void copy_u8_512(uint8_t *d, const uint8_t *s, int n) {
    for (int i = 0; i < n; i += 64) _mm512_storeu_si512(d + i, _mm512_loadu_si512(s + i));
}

static inline __attribute__((target(NB_T_VNNI))) void fill_u8_512(uint8_t *d, int v, int n) {
    const __m512i x = _mm512_set1_epi8((char)v);
    for (int i = 0; i < n; i += 64) _mm512_storeu_si512(d + i, x);
}
#endif

/* Elements [0, n) of one run from src (codes or floats). m and wide are
 * constants where this is inlined. */
static inline __attribute__((always_inline)) void im_copy(nb_ik_xmode m, int wide, void *d, const void *s, int n,
                                                          int zeff) {
#if NB_IK_X86
    if (m == NB_IK_X_U8 && wide) {
        copy_u8_512(d, s, n);
        return;
    }
#endif
    (void)wide;
    if (m == NB_IK_X_U8) copy_u8(d, s, n);
    else if (m == NB_IK_X_S16)
        for (int i = 0; i < n; i++) ((int16_t *)d)[i] = (int16_t)(((const uint8_t *)s)[i] - zeff);
    else if (m == NB_IK_X_F_CODES)
        for (int i = 0; i < n; i++) ((float *)d)[i] = (float)(((const uint8_t *)s)[i] - zeff);
    else
        memcpy(d, s, sizeof(float) * (size_t)n);
}

static inline __attribute__((always_inline)) void im_fill(nb_ik_xmode m, int wide, void *d, int n, int v) {
#if NB_IK_X86
    if (m == NB_IK_X_U8 && wide) {
        fill_u8_512(d, v, n);
        return;
    }
#endif
    (void)wide;
    if (m == NB_IK_X_U8) memset(d, v, (size_t)n);
    else if (m == NB_IK_X_S16)
        for (int i = 0; i < n; i++) ((int16_t *)d)[i] = (int16_t)v;
    else
        for (int i = 0; i < n; i++) ((float *)d)[i] = (float)v;
}

/* Padding is real 0: the code z_eff in u8 rows, 0 in centred and float
 * ones. The output pixel advances column by column (no divisions). */
static inline __attribute__((always_inline)) void im2row(nb_ik_xmode m, int wide, const nb_ik_geom *g,
                                                         const void *in, long j0, int nc, int ncr, void *X) {
    const size_t es = m == NB_IK_X_U8 ? 1 : m == NB_IK_X_S16 ? 2 : 4, ies = m == NB_IK_X_F_F ? 4 : 1;
    const int Kp = g->Kp, C = g->C, H = g->H, W = g->W, OW = g->OW, OHW = g->OH * g->OW;
    const int padv = m == NB_IK_X_U8 ? g->zeff : 0, zeff = g->zeff;
    long n = j0 / OHW;
    int oh = (int)(j0 % OHW) / OW, ow = (int)(j0 % OHW) % OW;
    for (int jj = 0; jj < ncr; jj++) {
        char *x = (char *)X + (size_t)jj * Kp * es;
        if (jj >= nc) {
            memset(x, 0, (size_t)Kp * es);
            continue;
        }
        const int ih0 = oh * g->stride - g->pad, iw0 = ow * g->stride - g->pad;
        const char *img = (const char *)in + (size_t)n * H * W * C * ies;
        if (++ow == OW) {
            ow = 0;
            if (++oh == g->OH) oh = 0, n++;
        }
        if (g->inside) {
            for (int r = 0; r < g->n_runs; r++) {
                const nb_ik_run *u = &g->runs[r];
                im_copy(m, wide, x + (size_t)u->dst * es,
                        img + ((size_t)(ih0 + u->kh) * W + (size_t)(iw0 + u->kw)) * C * ies, C * u->ntaps, zeff);
            }
        } else {
            for (int r = 0; r < g->n_runs; r++) {
                const nb_ik_run *u = &g->runs[r];
                char *d = x + (size_t)u->dst * es;
                const int ih = ih0 + u->kh, iw = iw0 + u->kw;
                if (ih < 0 || ih >= H) {
                    im_fill(m, wide, d, u->clen * u->ntaps, padv);
                    continue;
                }
                const char *row = img + ((size_t)ih * W * C + (size_t)u->c0) * ies;
                if (u->clen == C && iw >= 0 && iw + u->ntaps <= W) {
                    im_copy(m, wide, d, row + (size_t)iw * C * ies, C * u->ntaps, zeff);
                    continue;
                }
                for (int t = 0; t < u->ntaps; t++, d += (size_t)u->clen * es) {
                    if (iw + t < 0 || iw + t >= W) im_fill(m, wide, d, u->clen, padv);
                    else im_copy(m, wide, d, row + (size_t)(iw + t) * C * ies, u->clen, zeff);
                }
            }
        }
        /* exact-length fills: these come after the runs they sit between */
        for (int z = 0; z < g->n_zeros; z++) im_fill(m, 0, x + (size_t)g->zeros[z].dst * es, g->zeros[z].len, 0);
    }
}

#if NB_IK_X86
__attribute__((target(NB_T_VNNI))) static void im2row_u8_512(const nb_ik_geom *g, const void *in, long j0, int nc,
                                                            int ncr, void *X) {
    im2row(NB_IK_X_U8, 1, g, in, j0, nc, ncr, X);
}
#endif

static void im2row_u8(const nb_ik_geom *g, const void *in, long j0, int nc, int ncr, void *X) {
    im2row(NB_IK_X_U8, 0, g, in, j0, nc, ncr, X);
}

NB_IK_CLONES static void im2row_s16(const nb_ik_geom *g, const void *in, long j0, int nc, int ncr, void *X) {
    im2row(NB_IK_X_S16, 0, g, in, j0, nc, ncr, X);
}

NB_IK_CLONES static void im2row_f_codes(const nb_ik_geom *g, const void *in, long j0, int nc, int ncr, void *X) {
    im2row(NB_IK_X_F_CODES, 0, g, in, j0, nc, ncr, X);
}

static void im2row_f_f(const nb_ik_geom *g, const void *in, long j0, int nc, int ncr, void *X) {
    im2row(NB_IK_X_F_F, 0, g, in, j0, nc, ncr, X);
}

void nb_ik_im2row(nb_ik_path p, nb_ik_xmode m, const nb_ik_geom *g, const void *in, long j0, int nc, int ncr,
                  void *X) {
    switch (m) {
    case NB_IK_X_U8:
#if NB_IK_X86
        if (p == NB_IK_VNNI) {
            im2row_u8_512(g, in, j0, nc, ncr, X);
            return;
        }
#endif
        im2row_u8(g, in, j0, nc, ncr, X);
        return;
    case NB_IK_X_S16: im2row_s16(g, in, j0, nc, ncr, X); return;
    case NB_IK_X_F_CODES: im2row_f_codes(g, in, j0, nc, ncr, X); return;
    default: im2row_f_f(g, in, j0, nc, ncr, X); return;
    }
    (void)p;
}

/* ------------------------------------------------------------------ GEMMs */

#if NB_IK_X86
/* NC columns x V·16 channels over k quads [kq0, kq1); C at the tile's
 * (column 0, channel 0). */
static inline __attribute__((always_inline, target(NB_T_VNNI))) void
vnni_block(const uint8_t *X, ptrdiff_t Kp, const int8_t *W, ptrdiff_t OCp, int kq0, int kq1, int32_t *C,
           ptrdiff_t ldc, const int V, const int NC) {
    __m512i acc[24][4];
#pragma GCC unroll 24
    for (int c = 0; c < NC; c++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) acc[c][v] = _mm512_setzero_si512();
    for (int kq = kq0; kq < kq1; kq++) {
        const int8_t *wp = W + (size_t)kq * OCp * 4;
        __m512i w[4];
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) w[v] = _mm512_loadu_si512(wp + 64 * v);
        const uint8_t *xp = X + 4 * (size_t)kq;
#pragma GCC unroll 24
        for (int c = 0; c < NC; c++) {
            int32_t x4;
            memcpy(&x4, xp + c * Kp, 4);
            const __m512i b = _mm512_set1_epi32(x4);
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) acc[c][v] = _mm512_dpbusd_epi32(acc[c][v], b, w[v]);
        }
    }
#pragma GCC unroll 24
    for (int c = 0; c < NC; c++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) _mm512_storeu_si512(C + c * ldc + 16 * v, acc[c][v]);
}

__attribute__((target(NB_T_VNNI))) static void gemm_vnni(const uint8_t *X, int Kp, int ncols, const int8_t *W,
                                                        int OCp, int k0, int k1, int32_t *C, int ldc) {
    for (int o = 0; o < OCp; o += 64) {
        const int V = OCp - o >= 64 ? 4 : (OCp - o) / 16;
        const int8_t *Wo = W + (size_t)o * 4;
        for (int j = 0; j < ncols; j += 24 / V) {
            const uint8_t *Xj = X + (size_t)j * Kp;
            int32_t *Cj = C + (size_t)j * ldc + o;
            switch (V) {
            case 4: vnni_block(Xj, Kp, Wo, OCp, k0 / 4, k1 / 4, Cj, ldc, 4, 6); break;
            case 3: vnni_block(Xj, Kp, Wo, OCp, k0 / 4, k1 / 4, Cj, ldc, 3, 8); break;
            case 2: vnni_block(Xj, Kp, Wo, OCp, k0 / 4, k1 / 4, Cj, ldc, 2, 12); break;
            default: vnni_block(Xj, Kp, Wo, OCp, k0 / 4, k1 / 4, Cj, ldc, 1, 24); break;
            }
        }
    }
}

/* 6 columns x 16 channels over k pairs [kp0, kp1). */
__attribute__((target(NB_T_AVX2))) static void gemm_avx2(const int16_t *X, int Kp, int ncols, const int16_t *W,
                                                        int OCp, int k0, int k1, int32_t *C, int ldc) {
    for (int o = 0; o < OCp; o += 16) {
        const int16_t *Wo = W + (size_t)o * 2;
        for (int j = 0; j < ncols; j += 6) {
            const int16_t *Xj = X + (size_t)j * Kp;
            __m256i acc[6][2];
            for (int c = 0; c < 6; c++) acc[c][0] = acc[c][1] = _mm256_setzero_si256();
            for (int kp = k0 / 2; kp < k1 / 2; kp++) {
                const int16_t *wp = Wo + (size_t)kp * OCp * 2;
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)wp);
                const __m256i w1 = _mm256_loadu_si256((const __m256i *)(wp + 16));
                for (int c = 0; c < 6; c++) {
                    int32_t x2;
                    memcpy(&x2, Xj + (size_t)c * Kp + 2 * kp, 4);
                    const __m256i b = _mm256_set1_epi32(x2);
                    acc[c][0] = _mm256_add_epi32(acc[c][0], _mm256_madd_epi16(b, w0));
                    acc[c][1] = _mm256_add_epi32(acc[c][1], _mm256_madd_epi16(b, w1));
                }
            }
            for (int c = 0; c < 6; c++) {
                int32_t *Cc = C + (size_t)(j + c) * ldc + o;
                _mm256_storeu_si256((__m256i *)Cc, acc[c][0]);
                _mm256_storeu_si256((__m256i *)(Cc + 8), acc[c][1]);
            }
        }
    }
}
#endif

void nb_ik_gemm_u8s8(const uint8_t *X, int Kp, int ncols, const int8_t *W, int OCp, int k0, int k1, int32_t *C,
                     int ldc) {
#if NB_IK_X86
    gemm_vnni(X, Kp, ncols, W, OCp, k0, k1, C, ldc);
#else
    (void)X, (void)Kp, (void)ncols, (void)W, (void)OCp, (void)k0, (void)k1, (void)C, (void)ldc;
#endif
}

static void gemm_scalar(const int16_t *X, int Kp, int ncols, const int16_t *W, int OCp, int k0, int k1, int32_t *C,
                        int ldc) {
    for (int j = 0; j < ncols; j++) {
        int32_t *c = C + (size_t)j * ldc;
        for (int o = 0; o < OCp; o++) c[o] = 0;
        for (int k = k0; k < k1; k++) {
            const int32_t x = X[(size_t)j * Kp + k];
            const int16_t *w = W + ((size_t)(k / 2) * OCp) * 2 + (k & 1);
            for (int o = 0; o < OCp; o++) c[o] += x * w[2 * o];
        }
    }
}

void nb_ik_gemm_s16(nb_ik_path p, const int16_t *X, int Kp, int ncols, const int16_t *W, int OCp, int k0, int k1,
                    int32_t *C, int ldc) {
#if NB_IK_X86
    if (p != NB_IK_SCALAR) {
        gemm_avx2(X, Kp, ncols, W, OCp, k0, k1, C, ldc);
        return;
    }
#endif
    (void)p;
    gemm_scalar(X, Kp, ncols, W, OCp, k0, k1, C, ldc);
}
