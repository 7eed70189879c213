/* 3x3 stride-1 pad-1 convolutions by Winograd's minimal filtering F(2x2, 3x3)
 * (Lavin & Gray 2016): 16 multiplications per 2x2 outputs and channel pair
 * instead of 36, i.e. 2.25x fewer FLOPs in all three GEMMs of the layer.
 *
 * Each 4x4 input tile d (tiles 2 apart, covering the zero-padded image) and
 * each 3x3 filter g go to a 4x4 transform domain, V = B^T d B and
 * U = G g G^T; there the layer is 16 independent GEMMs over channels,
 * M[xi] (OC, tiles) = U[xi] (OC, C) * V[xi] (C, tiles), and each output tile
 * is Y = A^T M A (2x2). The backward is the same algebra run the other
 * way: dx is this forward on dy with the filters flipped and transposed,
 * and the filter gradient is dU[xi] = sum over tiles of dM[xi] V[xi]^T with
 * dM = A dY A^T, then dg = G^T dU G: the exact gradient of the forward.
 *
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 *
 * Work is split in chunks of R tile rows (TW tiles each) over the whole
 * batch, so a chunk may span images and the GEMMs stay wide at 8x8 images.
 * Every output element is computed by the same operations whatever the
 * chunking and thread count (the GEMM adds along K in a fixed order); the
 * filter gradient is summed per thread and reduced in thread order. The
 * transforms run 8 tiles of a row at a time in AVX2 (where the CPU has it
 * and NB_GEMM is not "blas"), else as portable loops. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_internal.h"
#include "internal.h"

enum { XI = 16 };        /* points of the 4x4 transform domain */
enum { CHUNK_FLT = 2048 }; /* chunk size: about CHUNK_FLT / (C + OC) tiles */
enum { DW_SCALE = 4 };     /* the filter gradient's chunks are 4x longer */
enum { MIN_TILES = 32 };   /* GEMMs at least 32 wide: one AVX-512 tile of columns */

int nb_conv_wino_applies(const conv_geom *g) {
    return g->KH == 3 && g->KW == 3 && g->stride == 1 && g->pad == 1 && g->C >= 8 && g->OC >= 8;
}

typedef struct {
    int N, H, W, TH, TW; /* batch, image size, tiles per column and per row */
    int R, T;            /* tile rows and tiles per chunk (T = R * TW) */
    int chunks;          /* ceil(N * TH / R) */
} wino_geom;

/* scale: chunks scale times larger (the filter gradient's GEMMs run along
 * the tiles and want them long). */
static wino_geom wino_geometry(int N, int H, int W, int C, int OC, int scale) {
    wino_geom w = {.N = N, .H = H, .W = W, .TH = (H + 1) / 2, .TW = (W + 1) / 2};
    int tiles = scale * CHUNK_FLT / (C + OC);
    if (tiles < MIN_TILES) tiles = MIN_TILES;
    w.R = tiles / w.TW > 1 ? tiles / w.TW : 1;
    if (w.R > N * w.TH) w.R = N * w.TH;
    w.T = w.R * w.TW;
    w.chunks = (N * w.TH + w.R - 1) / w.R;
    return w;
}

/* Floats from one transform-domain point's (ch, T) slice to the next: one
 * cache line more than the slice, so that the 16 streams a transform reads
 * or writes do not map to the same L1 sets (C * T is often 4 KiB). */
static size_t slice_of(const wino_geom *wg, int ch) { return (size_t)ch * wg->T + 16; }

/* ------------------------------------------------------------ transforms */

#define NB_WINO_INLINE static inline __attribute__((always_inline))

/* e[j] = xpad(row, 2j), o[j] = xpad(row, 2j + 1) for j <= TW, where xpad is
 * the row padded by one zero on the left (and zeros past W). */
NB_WINO_INLINE void split_row(const float *row, int W, int TW, float *restrict e, float *restrict o) {
    if (!row) {
        for (int j = 0; j <= TW; j++) e[j] = o[j] = 0.0f;
        return;
    }
    e[0] = 0.0f;
    const int half = W / 2;
    for (int j = 0; j < half; j++) {
        o[j] = row[2 * j];
        e[j + 1] = row[2 * j + 1];
    }
    for (int j = half; j <= TW; j++) o[j] = 0.0f;
    if (W % 2) o[half] = row[W - 1];
    for (int j = half + 1; j <= TW; j++) e[j] = 0.0f;
}

/* V[xi][c][t] for the tiles t of chunk tile rows [r0, r0 + rows) of
 * x (N, C, H, W): the input transform B^T d B. buf: 8 * (TW + 1) floats. */
NB_WINO_INLINE void in_transform_body(const wino_geom *wg, int C, const float *x, int r0, int rows,
                                      float *restrict V, float *restrict buf) {
    const int H = wg->H, W = wg->W, TW = wg->TW, T = wg->T, TWp = TW + 1;
    const size_t xs = slice_of(wg, C);
    for (int rr = 0; rr < rows; rr++) {
        const int r = r0 + rr, n = r / wg->TH, ty = r % wg->TH;
        for (int c = 0; c < C; c++) {
            const float *plane = x + ((size_t)n * C + c) * H * W;
            float *e[4], *o[4];
            for (int i = 0; i < 4; i++) {
                const int h = 2 * ty - 1 + i;
                e[i] = buf + 2 * i * TWp;
                o[i] = e[i] + TWp;
                split_row(h >= 0 && h < H ? plane + (size_t)h * W : NULL, W, TW, e[i], o[i]);
            }
            float *v = V + (size_t)c * T + (size_t)rr * TW;
            for (int tx = 0; tx < TW; tx++) {
                float s[4][4];
                for (int i = 0; i < 4; i++) {
                    const float a = e[i][tx], b = o[i][tx], cc = e[i][tx + 1], d = o[i][tx + 1];
                    s[i][0] = a - cc;
                    s[i][1] = b + cc;
                    s[i][2] = cc - b;
                    s[i][3] = b - d;
                }
                for (int j = 0; j < 4; j++) {
                    v[(0 + j) * xs + tx] = s[0][j] - s[2][j];
                    v[(4 + j) * xs + tx] = s[1][j] + s[2][j];
                    v[(8 + j) * xs + tx] = s[2][j] - s[1][j];
                    v[(12 + j) * xs + tx] = s[1][j] - s[3][j];
                }
            }
        }
    }
}

/* dM[xi][oc][t] = (A dY A^T)[xi] for the 2x2 tiles of dy (N, OC, H, W)
 * (zero past the image). buf: 4 * TW floats. */
NB_WINO_INLINE void grad_transform_body(const wino_geom *wg, int OC, const float *dy, int r0, int rows,
                                        float *restrict dM, float *restrict buf) {
    const int H = wg->H, W = wg->W, TW = wg->TW, T = wg->T;
    const size_t xs = slice_of(wg, OC);
    for (int rr = 0; rr < rows; rr++) {
        const int r = r0 + rr, n = r / wg->TH, ty = r % wg->TH;
        for (int oc = 0; oc < OC; oc++) {
            const float *plane = dy + ((size_t)n * OC + oc) * H * W;
            float *e[2] = {buf, buf + 2 * TW}, *o[2] = {buf + TW, buf + 3 * TW};
            for (int a = 0; a < 2; a++) {
                const int h = 2 * ty + a;
                const float *row = h < H ? plane + (size_t)h * W : NULL;
                for (int tx = 0; tx < TW; tx++) {
                    e[a][tx] = row ? row[2 * tx] : 0.0f;
                    o[a][tx] = row && 2 * tx + 1 < W ? row[2 * tx + 1] : 0.0f;
                }
            }
            float *m = dM + (size_t)oc * T + (size_t)rr * TW;
            for (int tx = 0; tx < TW; tx++) {
                float p[2][4];
                for (int a = 0; a < 2; a++) {
                    p[a][0] = e[a][tx];
                    p[a][1] = e[a][tx] + o[a][tx];
                    p[a][2] = e[a][tx] - o[a][tx];
                    p[a][3] = -o[a][tx];
                }
                for (int j = 0; j < 4; j++) {
                    m[(0 + j) * xs + tx] = p[0][j];
                    m[(4 + j) * xs + tx] = p[0][j] + p[1][j];
                    m[(8 + j) * xs + tx] = p[0][j] - p[1][j];
                    m[(12 + j) * xs + tx] = -p[1][j];
                }
            }
        }
    }
}

/* y (N, OC, H, W) (= or +=) A^T M A (+ bias) for the tiles of the chunk;
 * outputs past the image are dropped. buf: 4 * TW floats. */
NB_WINO_INLINE void out_transform_body(const wino_geom *wg, int OC, const float *restrict M, int r0,
                                       int rows, const float *bias, int acc, float *y,
                                       float *restrict buf) {
    const int H = wg->H, W = wg->W, TW = wg->TW, T = wg->T;
    const size_t xs = slice_of(wg, OC);
    for (int rr = 0; rr < rows; rr++) {
        const int r = r0 + rr, n = r / wg->TH, ty = r % wg->TH;
        for (int oc = 0; oc < OC; oc++) {
            const float *m = M + (size_t)oc * T + (size_t)rr * TW;
            const float bv = bias ? bias[oc] : 0.0f;
            float *y00 = buf, *y01 = buf + TW, *y10 = buf + 2 * TW, *y11 = buf + 3 * TW;
            for (int tx = 0; tx < TW; tx++) {
                float q[2][4];
                for (int j = 0; j < 4; j++) {
                    const float m0 = m[(0 + j) * xs + tx], m1 = m[(4 + j) * xs + tx];
                    const float m2 = m[(8 + j) * xs + tx], m3 = m[(12 + j) * xs + tx];
                    q[0][j] = m0 + m1 + m2;
                    q[1][j] = m1 - m2 - m3;
                }
                y00[tx] = q[0][0] + q[0][1] + q[0][2] + bv;
                y01[tx] = q[0][1] - q[0][2] - q[0][3] + bv;
                y10[tx] = q[1][0] + q[1][1] + q[1][2] + bv;
                y11[tx] = q[1][1] - q[1][2] - q[1][3] + bv;
            }
            float *plane = y + ((size_t)n * OC + oc) * H * W;
            for (int a = 0; a < 2 && 2 * ty + a < H; a++) {
                float *dst = plane + (size_t)(2 * ty + a) * W;
                const float *ev = a ? y10 : y00, *od = a ? y11 : y01;
                const int half = W / 2;
                if (acc) {
                    for (int tx = 0; tx < half; tx++) {
                        dst[2 * tx] += ev[tx];
                        dst[2 * tx + 1] += od[tx];
                    }
                    if (W % 2) dst[W - 1] += ev[half];
                } else {
                    for (int tx = 0; tx < half; tx++) {
                        dst[2 * tx] = ev[tx];
                        dst[2 * tx + 1] = od[tx];
                    }
                    if (W % 2) dst[W - 1] = ev[half];
                }
            }
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NB_WINO_AVX2 __attribute__((target("avx2,fma")))
#define NB_WINO_K static inline __attribute__((always_inline, target("avx2,fma")))

/* The AVX2 transforms work on 8 tiles of a tile row at a time. Image rows
 * are staged in zero-padded buffers (row q at sb[8 + q], zeros around), so
 * the loads at the borders and past odd widths read zeros. */
enum { SB_LEFT = 8 };

static int sb_len(int TW) { return SB_LEFT + 2 * ((TW + 7) / 8 * 8) + 24; }


/* ev = p[0], p[2], ..., p[14]; od = p[1], p[3], ..., p[15]. */
NB_WINO_K void deinterleave(const float *p, __m256 *ev, __m256 *od) {
    const __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8);
    *ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(v0, v1, 0x88)), 0xD8));
    *od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(v0, v1, 0xDD)), 0xD8));
}

/* 8 tiles' worth of one transform-domain value. Past the last tile of a
 * tile row the store spills into the next row's slots, which are written
 * after it (tile rows ascending within a channel, channels ascending), or
 * into the unused columns of a short chunk, or the slice's padding: no mask
 * (a masked store is slow on some CPUs). */
NB_WINO_K void put8(float *p, __m256 v) { _mm256_storeu_ps(p, v); }

/* Staged row pointers for image rows h0 .. h0 + n - 1 of plane (zero rows
 * outside 0 .. H - 1). */
NB_WINO_K void stage_rows(const float *plane, int H, int W, int h0, int n, float *sb, int len,
                          const float *zero, const float **out) {
    for (int i = 0; i < n; i++) {
        const int h = h0 + i;
        if (h < 0 || h >= H) {
            out[i] = zero;
        } else {
            float *b = sb + (size_t)i * len;
            memcpy(b + SB_LEFT, plane + (size_t)h * W, sizeof(float) * (size_t)W);
            out[i] = b;
        }
    }
}

/* e[j] = xpad(2j), o[j] = xpad(2j + 1) for j < TW + 8 (e, o: TW + 16 floats), xpad the image row
 * padded by one zero on the left and zeros past W (row NULL: all zero). */
NB_WINO_K void split_row_avx2(const float *row, int W, int TW, float *restrict e, float *restrict o) {
    const int n = TW + 8;
    if (!row) {
        memset(e, 0, sizeof(float) * (size_t)n);
        memset(o, 0, sizeof(float) * (size_t)n);
        return;
    }
    e[0] = 0.0f;
    int j = 0;
    for (; 2 * j + 16 <= W; j += 8) {
        __m256 ev, od;
        deinterleave(row + 2 * j, &ev, &od);
        _mm256_storeu_ps(o + j, ev);
        _mm256_storeu_ps(e + j + 1, od);
    }
    for (; 2 * j + 8 <= W; j += 4) {
        const __m128 v0 = _mm_loadu_ps(row + 2 * j), v1 = _mm_loadu_ps(row + 2 * j + 4);
        _mm_storeu_ps(o + j, _mm_shuffle_ps(v0, v1, 0x88));
        _mm_storeu_ps(e + j + 1, _mm_shuffle_ps(v0, v1, 0xDD));
    }
    for (; 2 * j + 1 < W; j++) {
        o[j] = row[2 * j];
        e[j + 1] = row[2 * j + 1];
    }
    if (2 * j < W) { /* odd W */
        o[j] = row[2 * j];
        e[j + 1] = 0.0f;
        j++;
    }
    /* here e[0 .. j] and o[0 .. j - 1] are set */
    _mm256_storeu_ps(o + j, _mm256_setzero_ps());
    _mm256_storeu_ps(e + j + 1, _mm256_setzero_ps());
}

/* buf: 8 * (TW + 16) floats: the even and odd halves of 4 padded rows. */
static NB_WINO_AVX2 void in_transform_avx2(const wino_geom *wg, int C, const float *x, int r0, int rows,
                                           float *V, float *buf) {
    const int H = wg->H, W = wg->W, TW = wg->TW, T = wg->T, len = TW + 16;
    const size_t xs = slice_of(wg, C);
    for (int c = 0; c < C; c++) {
        float *e[4], *o[4];
        for (int i = 0; i < 4; i++) {
            e[i] = buf + 2 * (size_t)i * len;
            o[i] = e[i] + len;
        }
        int prev_n = -1, prev_ty = -1;
        for (int rr = 0; rr < rows; rr++) {
            const int r = r0 + rr, n = r / wg->TH, ty = r % wg->TH;
            const float *plane = x + ((size_t)n * C + c) * H * W;
            int i0 = 0;
            if (n == prev_n && ty == prev_ty + 1) { /* rows 2, 3 of the last tile row are rows 0, 1 */
                float *te = e[0], *to = o[0];
                e[0] = e[2], o[0] = o[2], e[2] = te, o[2] = to;
                te = e[1], to = o[1];
                e[1] = e[3], o[1] = o[3], e[3] = te, o[3] = to;
                i0 = 2;
            }
            for (int i = i0; i < 4; i++) {
                const int h = 2 * ty - 1 + i;
                split_row_avx2(h >= 0 && h < H ? plane + (size_t)h * W : NULL, W, TW, e[i], o[i]);
            }
            prev_n = n, prev_ty = ty;
            float *v = V + (size_t)c * T + (size_t)rr * TW;
            for (int tx = 0; tx < TW; tx += 8) {
                __m256 s[4][4];
                for (int i = 0; i < 4; i++) {
                    const __m256 a = _mm256_loadu_ps(e[i] + tx), b = _mm256_loadu_ps(o[i] + tx);
                    const __m256 cc = _mm256_loadu_ps(e[i] + tx + 1), d = _mm256_loadu_ps(o[i] + tx + 1);
                    s[i][0] = _mm256_sub_ps(a, cc);
                    s[i][1] = _mm256_add_ps(b, cc);
                    s[i][2] = _mm256_sub_ps(cc, b);
                    s[i][3] = _mm256_sub_ps(b, d);
                }
                for (int j = 0; j < 4; j++) {
                    put8(v + (0 + j) * xs + tx, _mm256_sub_ps(s[0][j], s[2][j]));
                    put8(v + (4 + j) * xs + tx, _mm256_add_ps(s[1][j], s[2][j]));
                    put8(v + (8 + j) * xs + tx, _mm256_sub_ps(s[2][j], s[1][j]));
                    put8(v + (12 + j) * xs + tx, _mm256_sub_ps(s[1][j], s[3][j]));
                }
            }
        }
    }
}

static NB_WINO_AVX2 void grad_transform_avx2(const wino_geom *wg, int OC, const float *dy, int r0,
                                             int rows, float *dM, float *buf) {
    const int H = wg->H, W = wg->W, TW = wg->TW, T = wg->T, len = sb_len(TW);
    const size_t xs = slice_of(wg, OC);
    float *zero = buf + 4 * (size_t)len;
    memset(buf, 0, sizeof(float) * 5 * (size_t)len);
    for (int oc = 0; oc < OC; oc++) {
        for (int rr = 0; rr < rows; rr++) {
            const int r = r0 + rr, n = r / wg->TH, ty = r % wg->TH;
            const float *rp[2];
            stage_rows(dy + ((size_t)n * OC + oc) * H * W, H, W, 2 * ty, 2, buf, len, zero, rp);
            float *m = dM + (size_t)oc * T + (size_t)rr * TW;
            for (int tx = 0; tx < TW; tx += 8) {
                __m256 p[2][4];
                for (int a = 0; a < 2; a++) {
                    __m256 e, o;
                    deinterleave(rp[a] + SB_LEFT + 2 * tx, &e, &o);
                    p[a][0] = e;
                    p[a][1] = _mm256_add_ps(e, o);
                    p[a][2] = _mm256_sub_ps(e, o);
                    p[a][3] = _mm256_sub_ps(_mm256_setzero_ps(), o);
                }
                for (int j = 0; j < 4; j++) {
                    put8(m + (0 + j) * xs + tx, p[0][j]);
                    put8(m + (4 + j) * xs + tx, _mm256_add_ps(p[0][j], p[1][j]));
                    put8(m + (8 + j) * xs + tx, _mm256_sub_ps(p[0][j], p[1][j]));
                    put8(m + (12 + j) * xs + tx, _mm256_sub_ps(_mm256_setzero_ps(), p[1][j]));
                }
            }
        }
    }
}

/* M is read 8 tiles at a time: past the last tile of a chunk the loads run
 * into the slice's padding (the extra lanes are dropped). */
static NB_WINO_AVX2 void out_transform_avx2(const wino_geom *wg, int OC, const float *M, int r0, int rows,
                                            const float *bias, int acc, float *y, float *buf) {
    (void)buf;
    const int H = wg->H, W = wg->W, TW = wg->TW, T = wg->T;
    const size_t xs = slice_of(wg, OC);
    for (int rr = 0; rr < rows; rr++) {
        const int r = r0 + rr, n = r / wg->TH, ty = r % wg->TH;
        for (int oc = 0; oc < OC; oc++) {
            const float *m = M + (size_t)oc * T + (size_t)rr * TW;
            const __m256 bv = _mm256_set1_ps(bias ? bias[oc] : 0.0f);
            float *plane = y + ((size_t)n * OC + oc) * H * W;
            for (int tx = 0; tx < TW; tx += 8) {
                __m256 q[2][4];
                for (int j = 0; j < 4; j++) {
                    const __m256 m0 = _mm256_loadu_ps(m + (0 + j) * xs + tx);
                    const __m256 m1 = _mm256_loadu_ps(m + (4 + j) * xs + tx);
                    const __m256 m2 = _mm256_loadu_ps(m + (8 + j) * xs + tx);
                    const __m256 m3 = _mm256_loadu_ps(m + (12 + j) * xs + tx);
                    q[0][j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
                    q[1][j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
                }
                for (int a = 0; a < 2 && 2 * ty + a < H; a++) {
                    const __m256 ev = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(q[a][0], q[a][1]), q[a][2]), bv);
                    const __m256 od = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(q[a][1], q[a][2]), q[a][3]), bv);
                    const __m256 lo = _mm256_unpacklo_ps(ev, od), hi = _mm256_unpackhi_ps(ev, od);
                    __m256 o0 = _mm256_permute2f128_ps(lo, hi, 0x20), o1 = _mm256_permute2f128_ps(lo, hi, 0x31);
                    float *dst = plane + (size_t)(2 * ty + a) * W + 2 * tx;
                    const int cnt = W - 2 * tx < 16 ? W - 2 * tx : 16;
                    if (cnt >= 8) {
                        if (acc) o0 = _mm256_add_ps(o0, _mm256_loadu_ps(dst));
                        _mm256_storeu_ps(dst, o0);
                    }
                    if (cnt == 16) {
                        if (acc) o1 = _mm256_add_ps(o1, _mm256_loadu_ps(dst + 8));
                        _mm256_storeu_ps(dst + 8, o1);
                    } else if (cnt != 8) {
                        float tmp[16];
                        _mm256_storeu_ps(tmp, o0);
                        _mm256_storeu_ps(tmp + 8, o1);
                        for (int k = cnt > 8 ? 8 : 0; k < cnt; k++) dst[k] = acc ? dst[k] + tmp[k] : tmp[k];
                    }
                }
            }
        }
    }
}

static int use_avx2(void) {
    static int v = -1;
    if (v < 0) v = nb_gemm_path_active() != NB_GEMM_PATH_BLAS && nb_gemm_path_supported(NB_GEMM_PATH_AVX2);
    return v;
}
#else
static int sb_len(int TW) { return 2 * TW + 2; }
static int use_avx2(void) { return 0; }
#define in_transform_avx2 in_transform_base
#define grad_transform_avx2 grad_transform_base
#define out_transform_avx2 out_transform_base
#endif

static void in_transform_base(const wino_geom *wg, int C, const float *x, int r0, int rows, float *V,
                              float *buf) {
    in_transform_body(wg, C, x, r0, rows, V, buf);
}
static void grad_transform_base(const wino_geom *wg, int OC, const float *dy, int r0, int rows, float *dM,
                                float *buf) {
    grad_transform_body(wg, OC, dy, r0, rows, dM, buf);
}
static void out_transform_base(const wino_geom *wg, int OC, const float *M, int r0, int rows,
                               const float *bias, int acc, float *y, float *buf) {
    out_transform_body(wg, OC, M, r0, rows, bias, acc, y, buf);
}

static void in_transform(const wino_geom *wg, int C, const float *x, int r0, int rows, float *V, float *buf) {
    (use_avx2() ? in_transform_avx2 : in_transform_base)(wg, C, x, r0, rows, V, buf);
}
static void grad_transform(const wino_geom *wg, int OC, const float *dy, int r0, int rows, float *dM,
                           float *buf) {
    (use_avx2() ? grad_transform_avx2 : grad_transform_base)(wg, OC, dy, r0, rows, dM, buf);
}
static void out_transform(const wino_geom *wg, int OC, const float *M, int r0, int rows, const float *bias,
                          int acc, float *y, float *buf) {
    (use_avx2() ? out_transform_avx2 : out_transform_base)(wg, OC, M, r0, rows, bias, acc, y, buf);
}

/* U[xi][ci][co] = (G g G^T)[xi] for g = w[co][ci] (flip = 0), or for
 * g = w[ci][co] rotated by 180 degrees (flip = 1: the dx filters, with the
 * roles of C and OC swapped), w (OC, C, 3, 3). The threads take blocks of
 * FT_BLOCK columns co and write U in runs of FT_BLOCK, 8 columns at a time
 * in AVX2 (the 9 taps of 8 filters gathered). */
enum { FT_BLOCK = 32 };

/* One filter: taps k (row-major 3x3, already flipped) to u[xi], stride us. */
static inline void filter_point(const float k[9], float *u, size_t us) {
    float gk[4][3];
    for (int b = 0; b < 3; b++) {
        gk[0][b] = k[b];
        gk[1][b] = 0.5f * (k[b] + k[3 + b] + k[6 + b]);
        gk[2][b] = 0.5f * (k[b] - k[3 + b] + k[6 + b]);
        gk[3][b] = k[6 + b];
    }
    for (int i = 0; i < 4; i++) {
        u[(4 * i + 0) * us] = gk[i][0];
        u[(4 * i + 1) * us] = 0.5f * (gk[i][0] + gk[i][1] + gk[i][2]);
        u[(4 * i + 2) * us] = 0.5f * (gk[i][0] - gk[i][1] + gk[i][2]);
        u[(4 * i + 3) * us] = gk[i][2];
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* Columns co .. co + 7 of row ci: the same arithmetic as filter_point, lane
 * by lane (so both paths give the same U). f: the first filter, fs: floats
 * from one filter to the next. */
static NB_WINO_AVX2 void filter_point8(const float *f, int fs, int flip, float *u, size_t us) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(fs));
    __m256 k[9];
    for (int t = 0; t < 9; t++) k[t] = _mm256_i32gather_ps(f + (flip ? 8 - t : t), idx, 4);
    const __m256 h = _mm256_set1_ps(0.5f);
    __m256 gk[4][3];
    for (int b = 0; b < 3; b++) {
        gk[0][b] = k[b];
        gk[1][b] = _mm256_mul_ps(h, _mm256_add_ps(_mm256_add_ps(k[b], k[3 + b]), k[6 + b]));
        gk[2][b] = _mm256_mul_ps(h, _mm256_add_ps(_mm256_sub_ps(k[b], k[3 + b]), k[6 + b]));
        gk[3][b] = k[6 + b];
    }
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(u + (4 * i + 0) * us, gk[i][0]);
        _mm256_storeu_ps(u + (4 * i + 1) * us,
                         _mm256_mul_ps(h, _mm256_add_ps(_mm256_add_ps(gk[i][0], gk[i][1]), gk[i][2])));
        _mm256_storeu_ps(u + (4 * i + 2) * us,
                         _mm256_mul_ps(h, _mm256_add_ps(_mm256_sub_ps(gk[i][0], gk[i][1]), gk[i][2])));
        _mm256_storeu_ps(u + (4 * i + 3) * us, gk[i][2]);
    }
}
#endif

static void filter_transform(const conv_geom *g, const float *w, int flip, float *U) {
    const int CI = flip ? g->OC : g->C, CO = flip ? g->C : g->OC;
    const int blocks = (CO + FT_BLOCK - 1) / FT_BLOCK;
    const size_t us = (size_t)CI * CO;
    const int fs = flip ? 9 : g->C * 9; /* floats from filter co to co + 1 */
    const int simd = use_avx2();
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int bk = 0; bk < blocks; bk++) {
        const int c0 = bk * FT_BLOCK, c1 = c0 + FT_BLOCK < CO ? c0 + FT_BLOCK : CO;
        for (int ci = 0; ci < CI; ci++) {
            int co = c0;
            const float *f0 = flip ? w + (size_t)ci * g->C * 9 : w + (size_t)ci * 9;
#if defined(__x86_64__) && defined(__GNUC__)
            if (simd)
                for (; co + 8 <= c1; co += 8)
                    filter_point8(f0 + (size_t)co * fs, fs, flip, U + (size_t)ci * CO + co, us);
#else
            (void)simd;
#endif
            for (; co < c1; co++) {
                const float *f = f0 + (size_t)co * fs;
                float k[9];
                for (int t = 0; t < 9; t++) k[t] = f[flip ? 8 - t : t];
                filter_point(k, U + (size_t)ci * CO + co, us);
            }
        }
    }
}

/* dw (OC, C, 3, 3) += G^T dU G for dU[xi][oc][c]. */
static void filter_grad(const conv_geom *g, const float *dU, float *dw) {
    const size_t xs = (size_t)g->OC * g->C;
#pragma omp parallel for schedule(static) num_threads(nb_get_threads())
    for (int oc = 0; oc < g->OC; oc++)
        for (int c = 0; c < g->C; c++) {
            float d[4][4], t[3][4];
            for (int xi = 0; xi < XI; xi++) d[xi / 4][xi % 4] = dU[xi * xs + (size_t)oc * g->C + c];
            for (int j = 0; j < 4; j++) {
                t[0][j] = d[0][j] + 0.5f * (d[1][j] + d[2][j]);
                t[1][j] = 0.5f * (d[1][j] - d[2][j]);
                t[2][j] = 0.5f * (d[1][j] + d[2][j]) + d[3][j];
            }
            float *o = dw + ((size_t)oc * g->C + c) * 9;
            for (int a = 0; a < 3; a++) {
                o[a * 3 + 0] += t[a][0] + 0.5f * (t[a][1] + t[a][2]);
                o[a * 3 + 1] += 0.5f * (t[a][1] - t[a][2]);
                o[a * 3 + 2] += 0.5f * (t[a][1] + t[a][2]) + t[a][3];
            }
        }
}


/* One chunk of a forward-shaped convolution: y (+)= conv(x, U), x with CI
 * channels, y with CO. V: XI * CI * T floats, M: XI * CO * T. */
static void chunk_conv(const wino_geom *wg, int CI, int CO, const float *x, const float *U, int r0,
                       int rows, const float *bias, int acc, float *y, float *V, float *M, float *buf) {
    const int T = wg->T, nt = rows * wg->TW;
    const size_t vs = slice_of(wg, CI), ms = slice_of(wg, CO);
    in_transform(wg, CI, x, r0, rows, V, buf);
    for (int xi = 0; xi < XI; xi++)
        nb_sgemm_nn(CO, nt, CI, U + (size_t)xi * CI * CO, 1, CO, V + xi * vs, T, 0.0f, M + xi * ms, T);
    out_transform(wg, CO, M, r0, rows, bias, acc, y, buf);
}

/* Floats of scratch the transforms need (either implementation). */
static size_t transform_buf(const wino_geom *wg) {
    return 5 * (size_t)sb_len(wg->TW) + 8 * ((size_t)wg->TW + 16);
}

static int chunk_rows(const wino_geom *wg, int k) {
    const int r0 = k * wg->R, left = wg->N * wg->TH - r0;
    return left < wg->R ? left : wg->R;
}

void nb_conv_wino_forward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                          const float *b, float *y) {
    const wino_geom wg = wino_geometry(N, g->H, g->W, g->C, g->OC, 1);
    const int nt = nb_get_threads();
    const size_t v_sz = XI * slice_of(&wg, g->C), m_sz = XI * slice_of(&wg, g->OC);
    const size_t buf_sz = transform_buf(&wg);
    const size_t per = v_sz + m_sz + buf_sz;
    (void)use_avx2(); /* decided here, before the threads read it */
    float *U = nb_tape_scratch(t, sizeof(float) * XI * (size_t)g->C * g->OC);
    float *scratch = nb_tape_scratch(t, sizeof(float) * (size_t)nt * per);
    NB_ASSERT(U && scratch, "conv2d: %s", nb_last_error());
    filter_transform(g, w, 0, U);
#pragma omp parallel num_threads(nt)
    {
        float *V = scratch + (size_t)omp_get_thread_num() * per, *M = V + v_sz, *buf = M + m_sz;
#pragma omp for schedule(static)
        for (int k = 0; k < wg.chunks; k++)
            chunk_conv(&wg, g->C, g->OC, x, U, k * wg.R, chunk_rows(&wg, k), b, 0, y, V, M, buf);
    }
}

/* The filter gradient by transform-domain point instead of by tiles: the
 * chunks' transforms of x and dy are kept (all of them), then each thread
 * takes whole points xi and sums dU[xi] over the chunks in order. No
 * per-thread copies of dU (16 C OC floats each) to clear and reduce, and
 * the result does not depend on the thread count. Chosen when the kept
 * transforms are at most 4x the memory of the extra copies of dU: small
 * maps with many channels (ResNet-18's 8x8 and 4x4 stages; measured faster
 * there, slower from 16x16 up). */
static int dw_by_point(const conv_geom *g, const wino_geom *ww, int nt) {
    const double kept = (double)ww->chunks * ww->T * (g->C + g->OC);
    return kept <= 4.0 * (nt - 1) * g->C * g->OC;
}

void nb_conv_wino_backward(nb_tape *t, const conv_geom *g, int N, const float *x, const float *w,
                           const float *dy, float *dx, int dx_fresh, float *dw, float *db) {
    const wino_geom wx = wino_geometry(N, g->H, g->W, g->OC, g->C, 1);  /* dx chunks */
    const wino_geom ww = wino_geometry(N, g->H, g->W, g->C, g->OC, DW_SCALE); /* dw chunks */
    const int nt = nb_get_threads(), HW = g->H * g->W;
    const int by_point = dw && dw_by_point(g, &ww, nt);
    const size_t vd_sz = dx ? XI * slice_of(&wx, g->OC) : 0, mx_sz = dx ? XI * slice_of(&wx, g->C) : 0;
    const size_t v_sz = dw ? XI * slice_of(&ww, g->C) : 0, dm_sz = dw ? XI * slice_of(&ww, g->OC) : 0;
    const size_t du_sz = dw ? (size_t)XI * g->OC * g->C : 0, db_sz = db ? (size_t)g->OC : 0;
    /* per thread: dx transforms, dw transforms and partial dU (by tiles), buffers, partial db */
    const size_t own_v = by_point ? 0 : v_sz + dm_sz, own_du = by_point ? 0 : du_sz;
    const size_t buf_sz = transform_buf(dw ? &ww : &wx), du_off = vd_sz + mx_sz + own_v + buf_sz;
    const size_t per = du_off + own_du + db_sz;
    (void)use_avx2(); /* decided here, before the threads read it */
    float *Ud = dx ? nb_tape_scratch(t, sizeof(float) * XI * (size_t)g->C * g->OC) : NULL;
    float *scratch = nb_tape_scratch(t, sizeof(float) * (size_t)nt * per);
    /* by point: every chunk's V and dM, and the one dU */
    float *kept = by_point ? nb_tape_scratch(t, sizeof(float) * ((size_t)ww.chunks * (v_sz + dm_sz) + du_sz)) : NULL;
    NB_ASSERT(scratch && (!dx || Ud) && (!by_point || kept), "conv2d backward: %s", nb_last_error());
    if (dx) filter_transform(g, w, 1, Ud);
    const size_t vs = slice_of(&ww, g->C), ms = slice_of(&ww, g->OC);
#pragma omp parallel num_threads(nt)
    {
        float *Vd = scratch + (size_t)omp_get_thread_num() * per, *Mx = Vd + vd_sz, *V = Mx + mx_sz;
        float *dM = V + v_sz, *buf = V + own_v, *dU = buf + buf_sz, *dbt = dU + own_du;
        memset(dU, 0, sizeof(float) * (own_du + db_sz));
        if (dx) { /* dx (+)= conv(dy, flipped transposed filters) */
#pragma omp for schedule(static) nowait
            for (int k = 0; k < wx.chunks; k++)
                chunk_conv(&wx, g->OC, g->C, dy, Ud, k * wx.R, chunk_rows(&wx, k), NULL, !dx_fresh, dx, Vd,
                           Mx, buf);
        }
        if (db) { /* whole images per thread, independent of the chunking */
#pragma omp for schedule(static) nowait
            for (int n = 0; n < N; n++) nb_conv_sum_planes(dy + (size_t)n * g->OC * HW, g->OC, HW, dbt);
        }
        if (dw && !by_point) { /* dU[xi] (OC, C) += dM[xi] (OC, tiles) * V[xi]^T (tiles, C) */
#pragma omp for schedule(static) nowait
            for (int k = 0; k < ww.chunks; k++) {
                const int r0 = k * ww.R, rows = chunk_rows(&ww, k);
                in_transform(&ww, g->C, x, r0, rows, V, buf);
                grad_transform(&ww, g->OC, dy, r0, rows, dM, buf);
                for (int xi = 0; xi < XI; xi++)
                    nb_sgemm_nt(g->OC, g->C, rows * ww.TW, dM + xi * ms, ww.T, V + xi * vs, ww.T, 1.0f,
                                dU + (size_t)xi * g->OC * g->C, g->C);
            }
        }
        if (by_point) {
#pragma omp for schedule(static)
            for (int k = 0; k < ww.chunks; k++) {
                float *Vk = kept + (size_t)k * (v_sz + dm_sz);
                in_transform(&ww, g->C, x, k * ww.R, chunk_rows(&ww, k), Vk, buf);
                grad_transform(&ww, g->OC, dy, k * ww.R, chunk_rows(&ww, k), Vk + v_sz, buf);
            }
            float *dU1 = kept + (size_t)ww.chunks * (v_sz + dm_sz);
#pragma omp for schedule(static) nowait
            for (int xi = 0; xi < XI; xi++)
                for (int k = 0; k < ww.chunks; k++) {
                    const float *Vk = kept + (size_t)k * (v_sz + dm_sz);
                    nb_sgemm_nt(g->OC, g->C, chunk_rows(&ww, k) * ww.TW, Vk + v_sz + xi * ms, ww.T, Vk + xi * vs,
                                ww.T, k ? 1.0f : 0.0f, dU1 + (size_t)xi * g->OC * g->C, g->C);
                }
        }
    }
    /* Reduce the per-thread partial sums in thread order (deterministic:
     * each element adds the same partials in the same order, whichever
     * thread does it). */
    if (nt > 1 && (own_du || db_sz)) {
        float *dU0 = scratch + du_off;
        const long len = (long)(own_du + db_sz);
#pragma omp parallel for schedule(static) num_threads(nt)
        for (long i = 0; i < len; i++)
            for (int th = 1; th < nt; th++) dU0[i] += dU0[(size_t)th * per + (size_t)i];
    }
    const float *dbt = scratch + du_off + own_du;
    if (dw) filter_grad(g, by_point ? kept + (size_t)ww.chunks * (v_sz + dm_sz) : scratch + du_off, dw);
    if (db)
        for (int oc = 0; oc < g->OC; oc++) db[oc] += dbt[oc];
}
