/* The integer reference engine (nb_export.h; docs/export.md "Integer
 * engine"): runs an export IR on integer codes and reproduces the
 * fake-quant evaluation forward up to float summation order.
 *
 * Values live in NHWC (channels last), float or as uint8 codes u = q - qmin
 * of the one conv that consumes them. A conv is a GEMM over output pixels:
 * im2row gathers each pixel's receptive field in the packed K order (runs
 * of contiguous channels: whole kernel rows, the input first copied into a
 * border of real 0 so no bounds are checked), then
 *   integer path  codes x (q_w - z_w) in int32 (int_kernel.c), one GEMM per
 *                 scale group, y = Σ_g acc_g·(s_x·s_w,g·mul) + bias; when
 *                 the value goes (through a ReLU) to exactly one conv with
 *                 a uniform input grid, that conv's codes come straight
 *                 from the accumulator (fixed-point requantization);
 *   float path    codebook / float weights, LSQ+ offsets, float inputs:
 *                 the dequantized weights (·mul) in an fp32 GEMM.
 * Residual adds, shortcuts, pooling and the logits stay in float.
 *
 * Work is split into chunks of images (all nodes run per chunk, so the
 * buffers hold a chunk) and each conv into tiles of NB_IK_TC output pixels,
 * one tile per thread at a time; no sum crosses tiles, so the results do
 * not depend on the thread count. */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "int_kernel.h"
#include "nb_export.h"

#define CHUNK_MAX 64                  /* images per pass at most */
#define SLOT_BYTES ((size_t)32 << 20) /* ... and a value buffer of at most ~32 MiB */
#define ELEM_BLOCK 16384              /* elementwise work per thread step */
#define RQ_MAX_K 16                   /* extra fraction bits of the requantizer's bias */

typedef enum { VAL_F32 = 0, VAL_U8 } val_repr;
typedef enum { IN_CODES = 0, IN_FLOAT, IN_XHAT } in_kind;
typedef enum { CP_INT = 0, CP_FLOAT } conv_path;
typedef enum { OUT_F32 = 0, OUT_RQ, OUT_FQ } out_kind;

typedef struct {
    const char *name;       /* the layer's (borrowed from the engine's copy) */
    int node, consumer;     /* its node; the conv node reading its codes (OUT_RQ / OUT_FQ) */
    int OC, OCp, KH, KW;
    int K;                  /* C·KH·KW (g.Kp: packed, segments padded to 4) */
    nb_ik_geom g;           /* input and output shapes, the im2row runs */
    nb_ik_geom gt;          /* the same as its tiles see the input (padded: pad 0, H, W + 2 pad) */
    int padded;             /* its input is copied with the zero border (whole-channel runs) */
    int nseg;
    int *seg;               /* nseg + 1 packed offsets */
    /* input */
    in_kind in;
    nb_ik_grid grid;        /* IN_CODES: its grid; u = q - qmin (g.zeff = z - qmin: real 0) */
    nb_xlayer aq;           /* IN_XHAT: the input quantizer's fields (nb_xlayer_quant_input) */
    int codes_in;           /* its input value holds its codes already */
    /* compute */
    conv_path cp;
    nb_ik_path ip;          /* CP_INT: VNNI (u8s8) or AVX2 / scalar (s16) */
    int8_t *w8;             /* (Kp/4, OCp, 4) */
    int16_t *w16;           /* (Kp/2, OCp, 2) */
    float *wf;              /* (Kp, OCp): W^T, the GEMM's B */
    int32_t *corr;          /* (nseg, OCp) z_eff·Σ w (VNNI), else 0 */
    float *S;               /* (nseg, OCp) s_x·s_w·mul */
    float *bias;            /* (OCp) */
    float in_scale;         /* CP_FLOAT */
    /* output */
    out_kind out;
    int relu;
    nb_ik_rq_tab rq;
    int64_t *rq_mem;        /* B, M0, n, half (OCp each) */
    int32_t *rq_off;
} iconv;

typedef struct {
    nb_gop op;
    int a, b;
    int C, H, W;            /* output per image */
    val_repr repr;
    int slot;
    int alias;              /* a ReLU fused into the conv or add before it: the value is a's */
    int relu;               /* add: apply the ReLU that follows */
    int conv;               /* conv / linear: index into convs */
    int k, stride, pad, out_c;
} inode;

typedef struct {
    void *x;     /* im2row tile */
    int32_t *c;  /* (NB_IK_TC, OCp) */
    float *f;    /* (NB_IK_TC, OCp) */
} tscratch;

struct nb_int_engine {
    int in_c, in_h, in_w, classes;
    nb_ik_path path;
    int n_nodes, n_convs;
    inode *nodes;
    iconv *convs;
    char (*names)[80];
    float *thr;               /* the N2UQ thresholds of every layer, copied */
    int chunk;
    int n_slots;
    size_t *slot_cap;         /* bytes per image */
    void **slot;              /* chunk·slot_cap bytes */
    uint8_t *qbuf;            /* a conv's input codes (chunk·qbuf_cap) */
    float *fbuf;              /* a conv's x̂ (chunk·fbuf_cap floats) */
    size_t qbuf_cap, fbuf_cap;
    size_t tx_bytes, tc_n;    /* per-thread tile sizes */
    int n_scratch;
    tscratch *scr;
};

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

static nb_status bad_layer(const nb_xlayer *l, const char *fmt, const char *what) {
    return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: layer %s: %s%s", l->name, fmt, what ? what : "");
}

/* ------------------------------------------------------------ validation */

static int finite_pos(float v) { return isfinite(v) && v > 0.0f; }

static int all_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

/* The checks the engine relies on (the packed file's reader checks more). */
static nb_status check_layer(const nb_xlayer *l) {
    if (l->oc < 1 || l->ic < 1 || l->kh < 1 || l->kw < 1 || (l->is_conv && (l->stride < 1 || l->pad < 0)) ||
        l->numel != (size_t)l->oc * (size_t)l->ic * (size_t)l->kh * (size_t)l->kw)
        return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: layer %s: bad shape (%d, %d, %d, %d) stride %d pad %d",
                            l->name, l->oc, l->ic, l->kh, l->kw, l->stride, l->pad);
    if (!l->is_conv && (l->kh != 1 || l->kw != 1)) return bad_layer(l, "a linear layer with a kernel", NULL);
    if (!l->mul || !l->bias || !all_finite(l->mul, (size_t)l->oc) || !all_finite(l->bias, (size_t)l->oc))
        return bad_layer(l, "mul and bias missing or not finite", NULL);
    switch (l->wkind) {
    case NB_XW_FLOAT:
        if (!l->wfloat || !all_finite(l->wfloat, l->numel)) return bad_layer(l, "float weights missing or not finite", NULL);
        break;
    case NB_XW_UNIFORM: {
        const nb_fq_layout *L = &l->L;
        if (!l->codes || !l->scale || !l->zero_point || L->rows < 1 || L->G < 1 || L->G > L->K ||
            (size_t)L->rows * L->K != l->numel || (L->rows != 1 && L->rows != l->oc) ||
            (size_t)l->n_scales != nb_fq_layout_scales(L) || l->qmin > l->qmax)
            return bad_layer(l, "weight layout, scales or range inconsistent", NULL);
        for (int i = 0; i < l->n_scales; i++)
            if (!finite_pos(l->scale[i]) || l->zero_point[i] < -65535 || l->zero_point[i] > 65535)
                return bad_layer(l, "a weight scale is not finite and positive, or a zero point out of range", NULL);
        for (size_t i = 0; i < l->numel; i++)
            if (l->codes[i] < l->qmin || l->codes[i] > l->qmax) return bad_layer(l, "a weight code out of range", NULL);
        break;
    }
    case NB_XW_CODEBOOK:
        if (!l->codes || !l->codebook || l->ncodes < 1 || (l->cb_rows != 1 && l->cb_rows != l->oc) ||
            !isfinite(l->alpha) || !all_finite(l->codebook, (size_t)l->cb_rows * (size_t)l->ncodes))
            return bad_layer(l, "codebook missing or not finite", NULL);
        for (size_t i = 0; i < l->numel; i++)
            if (l->codes[i] < 0 || l->codes[i] >= l->ncodes) return bad_layer(l, "a codebook index out of range", NULL);
        break;
    default: return bad_layer(l, "unsupported weight kind", NULL);
    }
    switch (l->akind) {
    case NB_XA_NONE: break;
    case NB_XA_UNIFORM:
        if (!finite_pos(l->ascale) || !isfinite(l->aoffset) || l->aqmin > l->aqmax || l->aqmax - l->aqmin > 65535)
            return bad_layer(l, "input scale, offset or range invalid", NULL);
        break;
    case NB_XA_N2UQ:
        if (!finite_pos(l->ascale) || l->n_thr < 1 || l->n_thr > 65535 || !l->thr || !all_finite(l->thr, (size_t)l->n_thr))
            return bad_layer(l, "N2UQ thresholds or scale invalid", NULL);
        for (int i = 1; i < l->n_thr; i++)
            if (l->thr[i] < l->thr[i - 1]) return bad_layer(l, "N2UQ thresholds not ascending", NULL);
        break;
    default: return bad_layer(l, "unsupported input quantizer", NULL);
    }
    return NB_OK;
}

/* ------------------------------------------------------------ one conv */

/* The input side of cv from its layer: codes when the grid fits a byte and
 * real 0 is a code, else x̂ or the float input itself. */
static void plan_input(iconv *cv, const nb_xlayer *l, const float *thr_copy) {
    memset(&cv->grid, 0, sizeof cv->grid);
    memset(&cv->aq, 0, sizeof cv->aq);
    snprintf(cv->aq.name, sizeof cv->aq.name, "%s", l->name);
    cv->aq.akind = l->akind;
    cv->aq.aqmin = l->aqmin, cv->aq.aqmax = l->aqmax, cv->aq.azero = l->azero;
    cv->aq.ascale = l->ascale, cv->aq.aoffset = l->aoffset;
    cv->aq.n_thr = l->n_thr, cv->aq.thr = (float *)thr_copy;
    cv->in = IN_FLOAT;
    if (l->akind == NB_XA_UNIFORM) {
        cv->in = l->aoffset == 0.0f && l->aqmax - l->aqmin <= 255 && l->azero >= l->aqmin && l->azero <= l->aqmax
                     ? IN_CODES
                     : IN_XHAT;
        cv->grid = (nb_ik_grid){0, l->ascale, l->azero, l->aqmin, l->aqmax, 0, NULL};
    } else if (l->akind == NB_XA_N2UQ) {
        cv->in = l->n_thr <= 255 ? IN_CODES : IN_XHAT;
        cv->grid = (nb_ik_grid){1, l->ascale, 0, 0, l->n_thr, l->n_thr, thr_copy};
    }
    cv->g.zeff = cv->grid.z - cv->grid.qmin;
}

/* The packed K order: per segment [ka, kb) of the original (c, kh, kw)
 * order, runs of whole channel ranges per kernel row when the segment holds
 * whole channels, else one run per element; each segment padded to 4.
 * kmap[p] = the original k at packed position p, -1 for padding. */
static nb_status plan_runs(iconv *cv, int G, int **kmap_out) {
    const int KK = cv->KH * cv->KW, K = cv->K;
    cv->nseg = (K + G - 1) / G;
    const int max_runs = K + cv->nseg * cv->KH, max_kp = K + 3 * cv->nseg;
    cv->g.runs = nb_malloc(sizeof(nb_ik_run) * (size_t)max_runs);
    cv->g.zeros = nb_malloc(sizeof(nb_ik_zero) * (size_t)cv->nseg);
    cv->seg = nb_malloc(sizeof(int) * (size_t)(cv->nseg + 1));
    int *kmap = nb_malloc(sizeof(int) * (size_t)max_kp);
    if (!cv->g.runs || !cv->g.zeros || !cv->seg || !kmap) {
        nb_free(kmap);
        return NB_STATUS_OOM;
    }
    int pos = 0;
    cv->g.n_runs = cv->g.n_zeros = 0;
    for (int g = 0; g < cv->nseg; g++) {
        const int ka = g * G, kb = ka + G < K ? ka + G : K;
        cv->seg[g] = pos;
        if (ka % KK == 0 && kb % KK == 0) {
            const int c0 = ka / KK, c1 = kb / KK;
            for (int kh = 0; kh < cv->KH; kh++) {
                cv->g.runs[cv->g.n_runs++] = (nb_ik_run){kh, 0, c0, c1 - c0, cv->KW, pos};
                for (int t = 0; t < cv->KW; t++)
                    for (int c = c0; c < c1; c++) kmap[pos++] = (c * cv->KH + kh) * cv->KW + t;
            }
        } else {
            for (int k = ka; k < kb; k++) {
                cv->g.runs[cv->g.n_runs++] = (nb_ik_run){(k % KK) / cv->KW, k % cv->KW, k / KK, 1, 1, pos};
                kmap[pos++] = k;
            }
        }
        if (pos % 4) {
            cv->g.zeros[cv->g.n_zeros++] = (nb_ik_zero){pos, 4 - pos % 4};
            while (pos % 4) kmap[pos++] = -1;
        }
    }
    cv->seg[cv->nseg] = cv->g.Kp = pos;
    *kmap_out = kmap;
    return NB_OK;
}

/* q_w - z_w of weight (o, k) (uniform). */
static int32_t wcode(const nb_xlayer *l, int o, int k) {
    const size_t e = (size_t)o * (size_t)(l->ic * l->kh * l->kw) + (size_t)k;
    return l->codes[e] - l->zero_point[nb_xlayer_scale_index(l, e)];
}

/* ŵ (the fake-quant weight) of weight (o, k). */
static float wdeq(const nb_xlayer *l, int o, int k) {
    const size_t e = (size_t)o * (size_t)(l->ic * l->kh * l->kw) + (size_t)k;
    if (l->wkind == NB_XW_FLOAT) return l->wfloat[e];
    if (l->wkind == NB_XW_CODEBOOK)
        return l->alpha * l->codebook[(size_t)(l->cb_rows == 1 ? 0 : o) * (size_t)l->ncodes + (size_t)l->codes[e]];
    const size_t j = nb_xlayer_scale_index(l, e);
    return l->scale[j] * (float)(l->codes[e] - l->zero_point[j]);
}

/* Whether the integer path can run layer l: uniform weights with one
 * scale per (channel, group) and int32 sums that cannot overflow. */
static int int_capable(const iconv *cv, const nb_xlayer *l, int *fits_s8) {
    if (cv->in != IN_CODES || l->wkind != NB_XW_UNIFORM) return 0;
    if (l->L.rows == 1 && l->L.G != l->L.K) return 0; /* groups across channels */
    if ((double)cv->g.Kp * 255.0 * 255.0 >= 2147483647.0) return 0;
    int lo = 0, hi = 0;
    for (int o = 0; o < l->oc; o++)
        for (int k = 0; k < cv->K; k++) {
            const int32_t w = wcode(l, o, k);
            lo = w < lo ? w : lo;
            hi = w > hi ? w : hi;
        }
    *fits_s8 = lo >= -128 && hi <= 127;
    return lo >= -255 && hi <= 255;
}

static nb_status pack_weights(iconv *cv, const nb_xlayer *l, const int *kmap, nb_ik_path path) {
    const int OCp = cv->OCp, Kp = cv->g.Kp;
    cv->bias = nb_calloc((size_t)OCp, sizeof(float));
    if (!cv->bias) return NB_STATUS_OOM;
    for (int o = 0; o < l->oc; o++) cv->bias[o] = l->bias[o];
    if (cv->cp == CP_FLOAT) {
        cv->wf = nb_calloc((size_t)OCp * (size_t)Kp, sizeof(float));
        if (!cv->wf) return NB_STATUS_OOM;
        for (int o = 0; o < cv->OC; o++)
            for (int p = 0; p < Kp; p++)
                if (kmap[p] >= 0) cv->wf[(size_t)p * OCp + o] = wdeq(l, o, kmap[p]) * l->mul[o];
        cv->in_scale = cv->in == IN_CODES ? cv->grid.s : 1.0f;
        return NB_OK;
    }
    cv->corr = nb_calloc((size_t)cv->nseg * (size_t)OCp, sizeof(int32_t));
    cv->S = nb_calloc((size_t)cv->nseg * (size_t)OCp, sizeof(float));
    if (path == NB_IK_VNNI) cv->w8 = nb_calloc((size_t)Kp * (size_t)OCp, 1);
    else cv->w16 = nb_calloc((size_t)Kp * (size_t)OCp, sizeof(int16_t));
    if (!cv->corr || !cv->S || (!cv->w8 && !cv->w16)) return NB_STATUS_OOM;
    const size_t ng = (l->L.K + l->L.G - 1) / l->L.G;
    for (int g = 0; g < cv->nseg; g++)
        for (int o = 0; o < cv->OC; o++) {
            int32_t sum = 0;
            for (int p = cv->seg[g]; p < cv->seg[g + 1]; p++) {
                const int32_t w = kmap[p] >= 0 ? wcode(l, o, kmap[p]) : 0;
                sum += w;
                if (cv->w8) cv->w8[((size_t)(p / 4) * OCp + o) * 4 + p % 4] = (int8_t)w;
                else cv->w16[((size_t)(p / 2) * OCp + o) * 2 + p % 2] = (int16_t)w;
            }
            if (cv->w8) cv->corr[(size_t)g * OCp + o] = cv->g.zeff * sum;
            /* the scale of (o, g): rows = OC (channel, group) or 1 (tensor) */
            const float sw = l->scale[(l->L.rows == 1 ? 0 : (size_t)o * ng) + (size_t)g];
            cv->S[(size_t)g * OCp + o] = (float)((double)cv->grid.s * (double)sw * (double)l->mul[o]);
        }
    return NB_OK;
}

/* The fixed-point requantizer of cv's output onto grid g (the consumer's,
 * uniform): 1 when every channel has one, 0 (then OUT_FQ) otherwise. */
static int plan_requant(iconv *cv, const nb_xlayer *l, const nb_ik_grid *g) {
    if (cv->cp != CP_INT || cv->nseg != 1 || g->n2uq) return 0;
    /* |acc| <= bound: Σ_k |w| times the largest |q - z| of the input */
    const int umax = cv->grid.qmax - cv->grid.qmin;
    const double xmax = (double)(cv->g.zeff > umax - cv->g.zeff ? cv->g.zeff : umax - cv->g.zeff);
    double bound = 0.0;
    for (int o = 0; o < cv->OC; o++) {
        double s = 0.0;
        for (int k = 0; k < cv->K; k++) s += fabs((double)wcode(l, o, k));
        bound = s * xmax > bound ? s * xmax : bound;
    }
    nb_rq *q = nb_malloc(sizeof(nb_rq) * (size_t)cv->OC);
    if (!q) return -1;
    int k = RQ_MAX_K;
    for (; k >= 0; k--) {
        int ok = 1;
        for (int o = 0; o < cv->OC && ok; o++) {
            const double S = (double)cv->grid.s * (double)l->scale[l->L.rows == 1 ? 0 : o] * (double)l->mul[o];
            if (l->mul[o] == 0.0f) {
                /* y = bias: a constant code */
                nb_rq_make(0.0, 0.0, k, &q[o]);
                const float v = cv->bias[o] / g->s;
                q[o].off = (int32_t)(fabsf(v) < 4194304.0f ? rintf(v) : copysignf(4194304.0f, v));
                continue;
            }
            ok = nb_rq_make(S / (double)g->s, (double)cv->bias[o] / S, k, &q[o]) &&
                 bound * ldexp(1.0, k) + fabs((double)q[o].B) < 2147483647.0;
        }
        if (ok) break;
    }
    if (k < 0) {
        nb_free(q);
        return 0;
    }
    const int OCp = cv->OCp;
    cv->rq_mem = nb_calloc(4 * (size_t)OCp, sizeof(int64_t));
    cv->rq_off = nb_calloc((size_t)OCp, sizeof(int32_t));
    if (!cv->rq_mem || !cv->rq_off) {
        nb_free(q);
        return -1;
    }
    int64_t *B = cv->rq_mem, *M0 = B + OCp, *n = M0 + OCp, *half = n + OCp;
    for (int o = 0; o < OCp; o++) {
        const nb_rq r = o < cv->OC ? q[o] : (nb_rq){0, 0, 1, 0};
        B[o] = r.B;
        M0[o] = r.M0;
        n[o] = r.n;
        half[o] = ((int64_t)1 << (r.n - 1)) - 1;
        cv->rq_off[o] = r.off;
    }
    nb_free(q);
    cv->rq = (nb_ik_rq_tab){k, cv->relu, g->z, g->qmin, g->qmax, B, M0, n, half, cv->rq_off};
    return 1;
}

/* ------------------------------------------------------------ the graph */

static const char *node_what(const nb_xmodel *x, int i, char *buf, size_t n) {
    const nb_xnode *d = &x->nodes[i];
    if ((d->op == NB_G_CONV || d->op == NB_G_LINEAR) && d->layer >= 0 && d->layer < x->n_layers)
        snprintf(buf, n, "node %d (%s %s)", i, nb_gop_name(d->op), x->layers[d->layer].name);
    else
        snprintf(buf, n, "node %d (%s)", i, (unsigned)d->op < NB_G_COUNT ? nb_gop_name(d->op) : "unknown op");
    return buf;
}

/* Output shapes, checked against the inputs and layers. */
static nb_status plan_shapes(nb_int_engine *e, const nb_xmodel *x) {
    char w[160];
    for (int i = 0; i < x->n_nodes; i++) {
        const nb_xnode *d = &x->nodes[i];
        inode *n = &e->nodes[i];
        *n = (inode){d->op, d->a, d->b, 0, 0, 0, VAL_F32, -1, 0, 0, -1, d->k, d->stride, d->pad, d->out_c};
        if ((unsigned)d->op >= NB_G_COUNT || (i == 0) != (d->op == NB_G_INPUT))
            return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: %s: node 0 must be the input and only it",
                                node_what(x, i, w, sizeof w));
        if (d->op == NB_G_INPUT) {
            n->C = x->in_c, n->H = x->in_h, n->W = x->in_w;
            if (n->C < 1 || n->H < 1 || n->W < 1)
                return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: bad input shape (%d, %d, %d)", n->C, n->H, n->W);
            continue;
        }
        const int two = d->op == NB_G_ADD;
        if (d->a < 0 || d->a >= i || (two && (d->b < 0 || d->b >= i)))
            return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: %s: input %d/%d is not an earlier node",
                                node_what(x, i, w, sizeof w), d->a, d->b);
        const inode *a = &e->nodes[d->a];
        n->C = a->C, n->H = a->H, n->W = a->W;
        switch (d->op) {
        case NB_G_CONV:
        case NB_G_LINEAR: {
            if (d->layer < 0 || d->layer >= x->n_layers)
                return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: %s: layer %d of %d", node_what(x, i, w, sizeof w),
                                    d->layer, x->n_layers);
            const nb_xlayer *l = &x->layers[d->layer];
            nb_status st = check_layer(l);
            if (st != NB_OK) return st;
            if ((d->op == NB_G_CONV) != (l->is_conv != 0))
                return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: %s: the layer is a %s", node_what(x, i, w, sizeof w),
                                    l->is_conv ? "conv" : "linear");
            const int s = l->is_conv ? l->stride : 1, p = l->is_conv ? l->pad : 0;
            if (a->C != l->ic || (!l->is_conv && (a->H != 1 || a->W != 1)) || a->H + 2 * p < l->kh ||
                a->W + 2 * p < l->kw)
                return nb_set_error(NB_STATUS_BAD_INPUT,
                                    "int engine: %s: input (%d, %d, %d) does not fit weights (%d, %d, %d, %d)",
                                    node_what(x, i, w, sizeof w), a->C, a->H, a->W, l->oc, l->ic, l->kh, l->kw);
            n->C = l->oc;
            n->H = (a->H + 2 * p - l->kh) / s + 1;
            n->W = (a->W + 2 * p - l->kw) / s + 1;
            n->conv = e->n_convs++;
            break;
        }
        case NB_G_ADD:
            if (e->nodes[d->b].C != a->C || e->nodes[d->b].H != a->H || e->nodes[d->b].W != a->W)
                return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: %s: inputs of different shapes",
                                    node_what(x, i, w, sizeof w));
            break;
        case NB_G_SHORTCUT_PAD:
            if (d->stride < 1 || d->out_c < a->C)
                return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: %s: stride %d, %d channels to %d",
                                    node_what(x, i, w, sizeof w), d->stride, a->C, d->out_c);
            n->C = d->out_c;
            n->H = (a->H + d->stride - 1) / d->stride;
            n->W = (a->W + d->stride - 1) / d->stride;
            break;
        case NB_G_MAXPOOL:
            if (d->k < 1 || d->stride < 1 || d->pad < 0 || d->pad > d->k / 2 || a->H + 2 * d->pad < d->k ||
                a->W + 2 * d->pad < d->k)
                return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: %s: k %d stride %d pad %d on (%d, %d)",
                                    node_what(x, i, w, sizeof w), d->k, d->stride, d->pad, a->H, a->W);
            n->H = (a->H + 2 * d->pad - d->k) / d->stride + 1;
            n->W = (a->W + 2 * d->pad - d->k) / d->stride + 1;
            break;
        case NB_G_GAP: n->H = n->W = 1; break;
        default: break; /* relu */
        }
    }
    const inode *last = &e->nodes[x->n_nodes - 1];
    if (last->H != 1 || last->W != 1 || last->C != x->opts.num_classes)
        return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: the last node gives (%d, %d, %d), not %d logits", last->C,
                            last->H, last->W, x->opts.num_classes);
    return NB_OK;
}

/* Node index of the only consumer of value v, -1 if it has none or several. */
static int only_consumer(const nb_xmodel *x, const int *uses, int v) {
    if (uses[v] != 1) return -1;
    for (int i = v + 1; i < x->n_nodes; i++)
        if (x->nodes[i].a == v || (x->nodes[i].op == NB_G_ADD && x->nodes[i].b == v)) return i;
    return -1;
}

/* Fusion: a conv or add whose value goes only to a ReLU takes the ReLU; a
 * conv whose value (after it) goes only to one conv reading codes writes
 * those codes. */
static void plan_fusion(nb_int_engine *e, const nb_xmodel *x, const int *uses) {
    for (int i = 0; i < x->n_nodes; i++) {
        inode *n = &e->nodes[i];
        if (n->op == NB_G_ADD) {
            const int c = only_consumer(x, uses, i);
            if (c >= 0 && e->nodes[c].op == NB_G_RELU) n->relu = 1, e->nodes[c].alias = 1;
        }
        if (n->conv < 0) continue;
        iconv *cv = &e->convs[n->conv];
        int v = i, c = only_consumer(x, uses, i);
        if (c >= 0 && e->nodes[c].op == NB_G_RELU) {
            cv->relu = 1;
            e->nodes[c].alias = 1;
            v = c;
            c = only_consumer(x, uses, c);
        }
        if (c < 0 || e->nodes[c].conv < 0 || e->convs[e->nodes[c].conv].in != IN_CODES) continue;
        cv->consumer = c;
        e->convs[e->nodes[c].conv].codes_in = 1;
        e->nodes[i].repr = e->nodes[v].repr = VAL_U8;
    }
}

/* Buffers: each value takes a free slot; a ReLU fused into its conv, and a
 * ReLU or an add whose input dies there, reuse their input's. */
static nb_status plan_slots(nb_int_engine *e, const nb_xmodel *x, const int *uses_in) {
    const int N = x->n_nodes;
    int *uses = nb_malloc(sizeof(int) * (size_t)N), *busy = nb_calloc((size_t)N, sizeof(int));
    e->slot_cap = nb_calloc((size_t)N, sizeof(size_t));
    if (!uses || !busy || !e->slot_cap) {
        nb_free(uses);
        nb_free(busy);
        return NB_STATUS_OOM;
    }
    memcpy(uses, uses_in, sizeof(int) * (size_t)N);
    for (int i = 0; i < N; i++) {
        inode *n = &e->nodes[i];
        const size_t bytes = (size_t)n->C * n->H * n->W * (n->repr == VAL_U8 ? 1 : 4);
        int s = -1;
        if (n->alias || (n->op == NB_G_RELU && uses[n->a] == 1)) s = e->nodes[n->a].slot;
        else if (n->op == NB_G_ADD && n->a != n->b && uses[n->a] == 1) s = e->nodes[n->a].slot;
        else if (n->op == NB_G_ADD && n->a != n->b && uses[n->b] == 1) s = e->nodes[n->b].slot;
        for (int t = 0; s < 0 && t < e->n_slots; t++)
            if (!busy[t]) s = t;
        if (s < 0) s = e->n_slots++;
        busy[s] = 1;
        n->slot = s;
        e->slot_cap[s] = bytes > e->slot_cap[s] ? bytes : e->slot_cap[s];
        const int in[2] = {n->a, n->op == NB_G_ADD ? n->b : -1};
        for (int t = 0; t < 2; t++)
            if (in[t] >= 0 && --uses[in[t]] == 0 && e->nodes[in[t]].slot != s) busy[e->nodes[in[t]].slot] = 0;
        if (uses[i] == 0 && i != N - 1) busy[s] = 0;
    }
    nb_free(uses);
    nb_free(busy);
    return NB_OK;
}

static nb_status plan_conv(nb_int_engine *e, const nb_xmodel *x, int i, const float *thr_copy) {
    const nb_xlayer *l = &x->layers[x->nodes[i].layer];
    const inode *a = &e->nodes[x->nodes[i].a], *n = &e->nodes[i];
    iconv *cv = &e->convs[n->conv];
    cv->name = e->names[n->conv];
    snprintf(e->names[n->conv], sizeof e->names[0], "%s", l->name);
    cv->node = i;
    cv->consumer = -1;
    cv->OC = l->oc;
    cv->OCp = round_up(l->oc, 16);
    cv->g.C = a->C, cv->g.H = a->H, cv->g.W = a->W;
    cv->KH = l->kh, cv->KW = l->kw;
    cv->g.stride = l->is_conv ? l->stride : 1;
    cv->g.pad = l->is_conv ? l->pad : 0;
    cv->g.OH = n->H, cv->g.OW = n->W;
    cv->K = l->ic * l->kh * l->kw;
    plan_input(cv, l, thr_copy);
    /* the integer path's segments are the weight groups; the float path
     * folds every scale into its weights and takes whole channels */
    const int grouped = l->wkind == NB_XW_UNIFORM && l->L.rows == l->oc && l->L.G < l->L.K;
    int fits_s8 = 0;
    cv->cp = CP_FLOAT;
    int *kmap = NULL;
    nb_status st = plan_runs(cv, grouped ? (int)l->L.G : cv->K, &kmap);
    if (st != NB_OK) return nb_set_error(st, "int engine: layer %s: out of memory", l->name);
    if (int_capable(cv, l, &fits_s8)) {
        cv->cp = CP_INT;
        cv->ip = e->path == NB_IK_VNNI && !fits_s8 ? NB_IK_AVX2 : e->path;
    } else if (grouped) {
        /* rebuild in whole channels for the float path */
        nb_free(cv->g.runs);
        nb_free(cv->g.zeros);
        nb_free(cv->seg);
        nb_free(kmap);
        cv->g.runs = NULL, cv->g.zeros = NULL, cv->seg = NULL;
        st = plan_runs(cv, cv->K, &kmap);
        if (st != NB_OK) return nb_set_error(st, "int engine: layer %s: out of memory", l->name);
    }
    st = pack_weights(cv, l, kmap, cv->cp == CP_INT ? cv->ip : NB_IK_SCALAR);
    nb_free(kmap);
    /* whole-channel runs read whole pixels: with the input copied into a
     * zero border, every window lies inside and im2row checks no bounds */
    int full = 1;
    for (int r = 0; r < cv->g.n_runs; r++) full &= cv->g.runs[r].clen == cv->g.C;
    cv->padded = full && cv->g.pad > 0;
    cv->gt = cv->g;
    if (cv->padded) cv->gt.H += 2 * cv->g.pad, cv->gt.W += 2 * cv->g.pad, cv->gt.pad = 0;
    cv->gt.inside = full;
    if (st != NB_OK) return nb_set_error(st, "int engine: layer %s: out of memory for its weights", l->name);
    return NB_OK;
}

static nb_status plan_outputs(nb_int_engine *e, const nb_xmodel *x) {
    for (int c = 0; c < e->n_convs; c++) {
        iconv *cv = &e->convs[c];
        if (cv->consumer < 0) continue;
        const iconv *to = &e->convs[e->nodes[cv->consumer].conv];
        const int r = plan_requant(cv, &x->layers[x->nodes[cv->node].layer], &to->grid);
        if (r < 0) return nb_set_error(NB_STATUS_OOM, "int engine: layer %s: out of memory", cv->name);
        cv->out = r ? OUT_RQ : OUT_FQ;
    }
    return NB_OK;
}

/* Whether cv's input goes through prep_image: quantized, x̂ or padded. */
static int needs_prep(const iconv *cv) {
    return (cv->in == IN_CODES && !cv->codes_in) || cv->in == IN_XHAT || cv->padded;
}

static nb_status alloc_buffers(nb_int_engine *e) {
    size_t most = 1;
    for (int s = 0; s < e->n_slots; s++) most = e->slot_cap[s] > most ? e->slot_cap[s] : most;
    e->chunk = (int)(SLOT_BYTES / most);
    e->chunk = e->chunk < 1 ? 1 : e->chunk > CHUNK_MAX ? CHUNK_MAX : e->chunk;
    e->slot = nb_calloc((size_t)e->n_slots, sizeof(void *));
    if (!e->slot) return NB_STATUS_OOM;
    for (int s = 0; s < e->n_slots; s++)
        if (!(e->slot[s] = nb_malloc(e->slot_cap[s] * (size_t)e->chunk + NB_IK_SLACK))) return NB_STATUS_OOM;
    for (int c = 0; c < e->n_convs; c++) {
        const iconv *cv = &e->convs[c];
        const size_t in_n = (size_t)cv->gt.C * cv->gt.H * cv->gt.W;
        if (needs_prep(cv) && cv->in == IN_CODES) e->qbuf_cap = in_n > e->qbuf_cap ? in_n : e->qbuf_cap;
        if (needs_prep(cv) && cv->in != IN_CODES) e->fbuf_cap = in_n > e->fbuf_cap ? in_n : e->fbuf_cap;
        const size_t es = cv->cp == CP_FLOAT ? 4 : cv->ip == NB_IK_VNNI ? 1 : 2;
        const size_t xb = (size_t)NB_IK_TC * (size_t)cv->g.Kp * es, cn = (size_t)NB_IK_TC * (size_t)cv->OCp;
        e->tx_bytes = xb > e->tx_bytes ? xb : e->tx_bytes;
        e->tc_n = cn > e->tc_n ? cn : e->tc_n;
    }
    if (e->qbuf_cap && !(e->qbuf = nb_malloc(e->qbuf_cap * (size_t)e->chunk + NB_IK_SLACK))) return NB_STATUS_OOM;
    if (e->fbuf_cap && !(e->fbuf = nb_malloc(sizeof(float) * e->fbuf_cap * (size_t)e->chunk + NB_IK_SLACK)))
        return NB_STATUS_OOM;
    return NB_OK;
}

/* Per-thread tiles for n threads (kept across calls). */
static nb_status ensure_scratch(nb_int_engine *e, int n) {
    if (n <= e->n_scratch) return NB_OK;
    tscratch *s = nb_realloc(e->scr, sizeof(tscratch) * (size_t)n);
    if (!s) return nb_set_error(NB_STATUS_OOM, "int engine: out of memory for %d threads' tiles", n);
    e->scr = s;
    for (int t = e->n_scratch; t < n; t++) {
        s[t].x = nb_malloc(e->tx_bytes + NB_IK_SLACK);
        s[t].c = nb_malloc(sizeof(int32_t) * e->tc_n + 64);
        s[t].f = nb_malloc(sizeof(float) * e->tc_n + 64);
        if (!s[t].x || !s[t].c || !s[t].f) {
            nb_free(s[t].x);
            nb_free(s[t].c);
            nb_free(s[t].f);
            return nb_set_error(NB_STATUS_OOM, "int engine: out of memory for %d threads' tiles", n);
        }
        e->n_scratch = t + 1;
    }
    return NB_OK;
}

void nb_int_engine_free(nb_int_engine *e) {
    if (!e) return;
    for (int c = 0; e->convs && c < e->n_convs; c++) {
        iconv *cv = &e->convs[c];
        nb_free(cv->g.runs);
        nb_free(cv->g.zeros);
        nb_free(cv->seg);
        nb_free(cv->w8);
        nb_free(cv->w16);
        nb_free(cv->wf);
        nb_free(cv->corr);
        nb_free(cv->S);
        nb_free(cv->bias);
        nb_free(cv->rq_mem);
        nb_free(cv->rq_off);
    }
    for (int s = 0; e->slot && s < e->n_slots; s++) nb_free(e->slot[s]);
    for (int t = 0; t < e->n_scratch; t++) {
        nb_free(e->scr[t].x);
        nb_free(e->scr[t].c);
        nb_free(e->scr[t].f);
    }
    nb_free(e->scr);
    nb_free(e->slot);
    nb_free(e->slot_cap);
    nb_free(e->qbuf);
    nb_free(e->fbuf);
    nb_free(e->nodes);
    nb_free(e->convs);
    nb_free(e->names);
    nb_free(e->thr);
    nb_free(e);
}

nb_status nb_int_engine_new(const nb_xmodel *x, nb_int_engine **out) {
    if (!out) return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: no output pointer");
    *out = NULL;
    if (!x || x->n_nodes < 2 || !x->nodes || (x->n_layers > 0 && !x->layers) || x->n_layers < 0)
        return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: an empty model (%d nodes)", x ? x->n_nodes : 0);
    nb_int_engine *e = nb_calloc(1, sizeof *e);
    int *uses = nb_calloc((size_t)x->n_nodes, sizeof(int));
    nb_status st = NB_STATUS_OOM;
    if (!e || !uses) goto oom;
    e->path = nb_ik_path_pick();
    e->in_c = x->in_c, e->in_h = x->in_h, e->in_w = x->in_w;
    e->classes = x->opts.num_classes;
    e->n_nodes = x->n_nodes;
    if (!(e->nodes = nb_calloc((size_t)x->n_nodes, sizeof(inode)))) goto oom;
    if ((st = plan_shapes(e, x)) != NB_OK) goto fail;
    st = NB_STATUS_OOM;
    size_t n_thr = 0;
    for (int i = 0; i < x->n_nodes; i++)
        if (e->nodes[i].conv >= 0 && x->layers[x->nodes[i].layer].akind == NB_XA_N2UQ)
            n_thr += (size_t)x->layers[x->nodes[i].layer].n_thr;
    e->convs = nb_calloc((size_t)e->n_convs + 1, sizeof(iconv));
    e->names = nb_calloc((size_t)e->n_convs + 1, sizeof e->names[0]);
    e->thr = nb_malloc(sizeof(float) * (n_thr + 1));
    if (!e->convs || !e->names || !e->thr) goto oom;
    n_thr = 0;
    for (int i = 0; i < x->n_nodes; i++) {
        const nb_xnode *d = &x->nodes[i];
        if (d->op != NB_G_INPUT) uses[d->a]++;
        if (d->op == NB_G_ADD) uses[d->b]++;
        if (e->nodes[i].conv < 0) continue;
        const nb_xlayer *l = &x->layers[d->layer];
        float *thr = NULL;
        if (l->akind == NB_XA_N2UQ) {
            thr = e->thr + n_thr;
            memcpy(thr, l->thr, sizeof(float) * (size_t)l->n_thr);
            n_thr += (size_t)l->n_thr;
        }
        if ((st = plan_conv(e, x, i, thr)) != NB_OK) goto fail;
    }
    plan_fusion(e, x, uses);
    if ((st = plan_outputs(e, x)) != NB_OK) goto fail;
    if ((st = plan_slots(e, x, uses)) != NB_OK) goto oom;
    if ((st = alloc_buffers(e)) != NB_OK) goto oom;
    if ((st = ensure_scratch(e, nb_get_threads())) != NB_OK) goto fail;
    nb_free(uses);
    for (int c = 0; c < e->n_convs; c++) {
        static const char *const ins[] = {"codes", "float", "x-hat"}, *const outs[] = {"float", "requantized codes", "codes"};
        const iconv *cv = &e->convs[c];
        nb_log(NB_LOG_DEBUG, "int engine: %s: %s GEMM (%s), %d group(s), input %s%s, output %s%s", cv->name,
               cv->cp == CP_INT ? "integer" : "float", cv->cp == CP_INT ? nb_ik_path_name(cv->ip) : "sgemm", cv->nseg,
               ins[cv->in], cv->padded ? " (padded)" : "", outs[cv->out], cv->relu ? " + relu" : "");
    }
    *out = e;
    return NB_OK;
oom:
    st = nb_set_error(NB_STATUS_OOM, "int engine: out of memory for model %s", x->arch);
fail:
    nb_free(uses);
    nb_int_engine_free(e);
    return st;
}

/* ------------------------------------------------------------ forward */

/* One tile of output pixels j0 .. j0 + nc - 1. */
static void conv_tile(const nb_int_engine *e, const iconv *cv, const void *in, long j0, int nc, void *out,
                      const tscratch *ts) {
    const int ncr = round_up(nc, NB_IK_COLS), OC = cv->OC, OCp = cv->OCp;
    const nb_ik_grid *og = cv->out == OUT_F32 ? NULL : &e->convs[e->nodes[cv->consumer].conv].grid;
    void *o = cv->out == OUT_F32 ? (void *)((float *)out + j0 * OC) : (void *)((uint8_t *)out + j0 * OC);
    if (cv->cp == CP_FLOAT) {
        nb_ik_im2row(e->path, cv->in == IN_CODES ? NB_IK_X_F_CODES : NB_IK_X_F_F, &cv->gt, in, j0, nc, ncr, ts->x);
        nb_sgemm_nn(nc, OCp, cv->g.Kp, ts->x, cv->g.Kp, 1, cv->wf, OCp, 0.0f, ts->f, OCp);
        nb_ik_finish(ts->f, OCp, nc, OC, cv->in_scale, cv->bias, cv->relu, og, o);
        return;
    }
    nb_ik_im2row(cv->ip, cv->ip == NB_IK_VNNI ? NB_IK_X_U8 : NB_IK_X_S16, &cv->gt, in, j0, nc, ncr, ts->x);
    for (int g = 0; g < cv->nseg; g++) {
        if (cv->ip == NB_IK_VNNI)
            nb_ik_gemm_u8s8(ts->x, cv->g.Kp, ncr, cv->w8, OCp, cv->seg[g], cv->seg[g + 1], ts->c, OCp);
        else
            nb_ik_gemm_s16(cv->ip, ts->x, cv->g.Kp, ncr, cv->w16, OCp, cv->seg[g], cv->seg[g + 1], ts->c, OCp);
        if (cv->out == OUT_RQ) {
            nb_ik_requant(cv->ip, ts->c, OCp, nc, OC, cv->corr, &cv->rq, o);
            return;
        }
        if (cv->nseg == 1) {
            nb_ik_finish_int(ts->c, OCp, nc, OC, cv->corr, cv->S, cv->bias, cv->relu, og, o);
            return;
        }
        nb_ik_dequant(ts->c, OCp, nc, OC, cv->corr + (size_t)g * OCp, cv->S + (size_t)g * OCp, g > 0, ts->f, OCp);
    }
    nb_ik_finish(ts->f, OCp, nc, OC, 1.0f, cv->bias, cv->relu, og, o);
}

/* One image of cv's input as its tiles read it (geometry gt): its codes
 * (from floats, or as they came), x̂, or the floats, inside a border of
 * real 0 (code z_eff, or 0.0) when padded. */
static void prep_image(const iconv *cv, const void *src, void *dst) {
    const int C = cv->g.C, H = cv->g.H, W = cv->g.W, p = cv->padded ? cv->g.pad : 0, Wp = cv->gt.W;
    const int codes = cv->in == IN_CODES;
    const size_t es = codes ? 1 : sizeof(float), ses = codes && cv->codes_in ? 1 : sizeof(float);
    const size_t row = (size_t)W * C;
    char *d = dst;
    if (p) {
        const size_t border = ((size_t)p * Wp + p) * C; /* the top rows and the first row's left edge */
        if (codes) {
            memset(d, cv->g.zeff, border);
            for (int ih = 0; ih < H; ih++) memset(d + (((size_t)(ih + p) * Wp + p + W) * C), cv->g.zeff, 2 * (size_t)p * C);
        } else {
            memset(d, 0, border * es);
            for (int ih = 0; ih < H; ih++) memset(d + (((size_t)(ih + p) * Wp + p + W) * C) * es, 0, 2 * (size_t)p * C * es);
        }
        /* the bottom rows, after the p pixels the last edge filled */
        const size_t tail = ((size_t)p * Wp - p) * C;
        memset(d + (((size_t)(H + p) * Wp + p) * C) * es, codes ? cv->g.zeff : 0, tail * es);
    }
    for (int ih = 0; ih < H; ih++) {
        const char *s = (const char *)src + (size_t)ih * row * ses;
        char *o = d + (((size_t)(ih + p) * Wp + p) * C) * es;
        if (codes && !cv->codes_in) nb_ik_codes(&cv->grid, (const float *)s, row, (uint8_t *)o);
        else memcpy(o, s, row * es);
        if (cv->in == IN_XHAT) nb_xlayer_quant_input(&cv->aq, (float *)o, row);
    }
}

static void conv_forward(nb_int_engine *e, const iconv *cv, const void *in, void *out, int Nc, int nt) {
    if (needs_prep(cv)) {
        const int codes = cv->in == IN_CODES;
        const size_t src_img = (size_t)cv->g.C * cv->g.H * cv->g.W * (codes && cv->codes_in ? 1 : sizeof(float));
        const size_t dst_img = (size_t)cv->gt.C * cv->gt.H * cv->gt.W * (codes ? 1 : sizeof(float));
        char *dst = codes ? (char *)e->qbuf : (char *)e->fbuf;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (long n = 0; n < Nc; n++) prep_image(cv, (const char *)in + (size_t)n * src_img, dst + (size_t)n * dst_img);
        in = dst;
    }
    const long ncols = (long)Nc * cv->g.OH * cv->g.OW, ntiles = (ncols + NB_IK_TC - 1) / NB_IK_TC;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (long t = 0; t < ntiles; t++) {
        const long j0 = t * NB_IK_TC;
        conv_tile(e, cv, in, j0, (int)(ncols - j0 < NB_IK_TC ? ncols - j0 : NB_IK_TC), out,
                  &e->scr[omp_get_thread_num()]);
    }
}

/* Elementwise and pooling ops on float NHWC values of Nc images. */
static void node_forward(const inode *n, const inode *a, const float *x, const float *y2, float *y, int Nc, int nt) {
    const size_t total = (size_t)Nc * n->C * n->H * n->W;
    const long nblk = (long)((total + ELEM_BLOCK - 1) / ELEM_BLOCK);
    switch (n->op) {
    case NB_G_RELU:
    case NB_G_ADD:
#pragma omp parallel for schedule(static) num_threads(nt)
        for (long b = 0; b < nblk; b++) {
            const size_t i0 = (size_t)b * ELEM_BLOCK, i1 = i0 + ELEM_BLOCK < total ? i0 + ELEM_BLOCK : total;
            if (n->op == NB_G_RELU)
                for (size_t i = i0; i < i1; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
            else if (n->relu)
                for (size_t i = i0; i < i1; i++) {
                    const float v = x[i] + y2[i];
                    y[i] = v > 0.0f ? v : 0.0f;
                }
            else
                for (size_t i = i0; i < i1; i++) y[i] = x[i] + y2[i];
        }
        break;
    case NB_G_SHORTCUT_PAD: {
        const int before = (n->C - a->C) / 2;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (long r = 0; r < (long)Nc * n->H; r++) {
            const long img = r / n->H;
            const int oh = (int)(r % n->H);
            for (int ow = 0; ow < n->W; ow++) {
                float *d = y + ((size_t)r * n->W + ow) * n->C;
                const float *s = x + (((size_t)img * a->H + (size_t)oh * n->stride) * a->W + (size_t)ow * n->stride) * a->C;
                memset(d, 0, sizeof(float) * (size_t)n->C);
                memcpy(d + before, s, sizeof(float) * (size_t)a->C);
            }
        }
        break;
    }
    case NB_G_MAXPOOL: {
        const int C = n->C;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (long r = 0; r < (long)Nc * n->H; r++) {
            const long img = r / n->H;
            const int oh = (int)(r % n->H);
            for (int ow = 0; ow < n->W; ow++) {
                float *d = y + ((size_t)r * n->W + ow) * C;
                int have = 0;
                /* as nb_maxpool2d: the first tap inside, then strictly greater ones */
                for (int kh = 0; kh < n->k; kh++) {
                    const int ih = oh * n->stride - n->pad + kh;
                    if (ih < 0 || ih >= a->H) continue;
                    for (int kw = 0; kw < n->k; kw++) {
                        const int iw = ow * n->stride - n->pad + kw;
                        if (iw < 0 || iw >= a->W) continue;
                        const float *s = x + (((size_t)img * a->H + ih) * a->W + iw) * C;
                        if (!have)
                            memcpy(d, s, sizeof(float) * (size_t)C);
                        else
                            for (int c = 0; c < C; c++) d[c] = s[c] > d[c] ? s[c] : d[c];
                        have = 1;
                    }
                }
                if (!have)
                    for (int c = 0; c < C; c++) d[c] = -FLT_MAX;
            }
        }
        break;
    }
    case NB_G_GAP: {
        const int C = n->C, HW = a->H * a->W;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (long img = 0; img < Nc; img++) {
            float *d = y + (size_t)img * C;
            const float *s = x + (size_t)img * HW * C;
            for (int c = 0; c < C; c++) d[c] = 0.0f;
            /* the pixels in order, as nb_global_avgpool sums them */
            for (int p = 0; p < HW; p++)
                for (int c = 0; c < C; c++) d[c] += s[(size_t)p * C + c];
            for (int c = 0; c < C; c++) d[c] /= (float)HW;
        }
        break;
    }
    default: break;
    }
}

nb_status nb_int_engine_forward(nb_int_engine *e, const float *images, int N, float *logits) {
    if (!e || !images || !logits || N < 1)
        return nb_set_error(NB_STATUS_BAD_INPUT, "int engine: forward of %d images (engine %p, images %p, logits %p)", N,
                            (void *)e, (const void *)images, (void *)logits);
    const int nt = nb_get_threads();
    nb_status st = ensure_scratch(e, nt);
    if (st != NB_OK) return st;
    const size_t img_n = (size_t)e->in_c * e->in_h * e->in_w, HW = (size_t)e->in_h * e->in_w;
    for (int n0 = 0; n0 < N; n0 += e->chunk) {
        const int Nc = N - n0 < e->chunk ? N - n0 : e->chunk;
        for (int i = 0; i < e->n_nodes; i++) {
            const inode *n = &e->nodes[i];
            void *y = e->slot[n->slot];
            if (n->op == NB_G_INPUT) {
                const float *src = images + (size_t)n0 * img_n;
                float *d = y;
#pragma omp parallel for schedule(static) num_threads(nt)
                for (long img = 0; img < Nc; img++)
                    for (size_t p = 0; p < HW; p++)
                        for (int c = 0; c < e->in_c; c++)
                            d[(size_t)img * img_n + p * e->in_c + c] = src[(size_t)img * img_n + (size_t)c * HW + p];
            } else if (n->conv >= 0) {
                conv_forward(e, &e->convs[n->conv], e->slot[e->nodes[n->a].slot], y, Nc, nt);
            } else if (!n->alias) {
                node_forward(n, &e->nodes[n->a], e->slot[e->nodes[n->a].slot],
                             n->op == NB_G_ADD ? e->slot[e->nodes[n->b].slot] : NULL, y, Nc, nt);
            }
        }
        const float *res = e->slot[e->nodes[e->n_nodes - 1].slot];
        memcpy(logits + (size_t)n0 * e->classes, res, sizeof(float) * (size_t)Nc * e->classes);
    }
    return NB_OK;
}
