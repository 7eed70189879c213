/* The export IR (quant/nb_export.h): a quantized model's layers as integer
 * codes with their scales, the batchnorm folded into a per-channel
 * multiplier and bias, and the network as nodes.
 *
 * Codes are read back from the quantizer's own forward: the weights are
 * fake-quantized by the same kernel the evaluation forward uses, and each
 * code is the integer (or codebook index) that gives that value, checked to
 * give it again bit for bit. So the IR cannot drift from the model: a
 * quantizer whose output is not on its grid is an error, not a rounding. */
#include <math.h>
#include <string.h>

#include "internal.h"
#include "nb_autograd.h"
#include "nb_export.h"

void nb_xmodel_free(nb_xmodel *x) {
    if (!x) return;
    for (int i = 0; i < x->n_layers; i++) {
        nb_xlayer *l = &x->layers[i];
        nb_free(l->codes);
        nb_free(l->scale);
        nb_free(l->zero_point);
        nb_free(l->codebook);
        nb_free(l->wfloat);
        nb_free(l->mul);
        nb_free(l->bias);
        nb_free(l->thr);
    }
    nb_free(x->layers);
    nb_free(x->nodes);
    nb_free(x->config_json);
    nb_free(x);
}

int nb_xbits(long n) {
    int b = 1;
    while ((1L << b) < n) b++;
    return b;
}

size_t nb_xlayer_code_bytes(const nb_xlayer *l) {
    if (l->wkind == NB_XW_FLOAT) return l->numel * sizeof(float);
    return (l->numel * (size_t)l->wbits + 7) / 8;
}

size_t nb_xlayer_scale_index(const nb_xlayer *l, size_t e) {
    const size_t ng = (l->L.K + l->L.G - 1) / l->L.G;
    return (e / l->L.K) * ng + (e % l->L.K) / l->L.G;
}

void nb_xlayer_weights(const nb_xlayer *l, float *w) {
    switch (l->wkind) {
    case NB_XW_FLOAT: memcpy(w, l->wfloat, l->numel * sizeof(float)); break;
    case NB_XW_UNIFORM:
        for (size_t e = 0; e < l->numel; e++) {
            const size_t j = nb_xlayer_scale_index(l, e);
            const float z = (float)l->zero_point[j];
            w[e] = l->scale[j] * ((float)l->codes[e] - z); /* fq_segment's s·(q - z) */
        }
        break;
    case NB_XW_CODEBOOK: {
        const size_t K = l->numel / (size_t)l->cb_rows;
        for (size_t e = 0; e < l->numel; e++) {
            const float c = l->codebook[(e / K) * (size_t)l->ncodes + (size_t)l->codes[e]];
            w[e] = l->alpha == 1.0f ? c : l->alpha * c; /* nb_cb_forward's */
        }
        break;
    }
    default: break;
    }
}

int nb_xlayer_input_code(const nb_xlayer *l, float x) {
    if (l->akind == NB_XA_N2UQ) {
        int q = 0;
        for (int i = 0; i < l->n_thr; i++) q += x >= l->thr[i];
        return q;
    }
    float q = nb_fq_round((x - l->aoffset) / l->ascale) + (float)l->azero;
    q = q < (float)l->aqmin ? (float)l->aqmin : q;
    q = q > (float)l->aqmax ? (float)l->aqmax : q;
    return (int)q;
}

void nb_xlayer_quant_input(const nb_xlayer *l, float *x, size_t n) {
    if (l->akind == NB_XA_NONE) return;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != x[i]) continue; /* NaN stays NaN */
        const int q = nb_xlayer_input_code(l, x[i]);
        x[i] = l->akind == NB_XA_N2UQ ? l->ascale * (float)q : l->ascale * (float)(q - l->azero) + l->aoffset;
    }
}

/* ------------------------------------------------------------------ build */

static nb_quantizer *find_q(nb_quantizer *qs, int n, const nb_module *mod, int is_weight) {
    for (int i = 0; i < n; i++)
        if (qs[i].mod == mod && qs[i].is_weight == is_weight && qs[i].method != NB_QM_NONE) return &qs[i];
    return NULL;
}

static void *take(size_t n, size_t size, nb_status *st) {
    void *p = nb_calloc(n ? n : 1, size);
    if (!p) *st = NB_STATUS_OOM;
    return p;
}

/* Uniform codes of the fake-quant weights y (each s·(q - z) for a grid
 * integer q): q = rint(y/s) + z, which must be in [qmin, qmax] and give y
 * back bit for bit. */
static nb_status uniform_codes(nb_xlayer *l, const nb_quantizer *q, const float *y) {
    for (size_t e = 0; e < l->numel; e++) {
        const size_t j = nb_xlayer_scale_index(l, e);
        const float s = l->scale[j], z = (float)l->zero_point[j];
        const float c = nb_fq_round(y[e] / s) + z;
        if (!(c >= (float)l->qmin && c <= (float)l->qmax && s * (c - z) == y[e]))
            return nb_set_error(NB_STATUS_BAD_INPUT,
                                "%s: weight %zu: the quantizer gives %.9g, not on its grid (scale %g, zero point %g, "
                                "codes %d..%d)",
                                q->name, e, (double)y[e], (double)s, (double)z, l->qmin, l->qmax);
        l->codes[e] = (int32_t)c;
    }
    return NB_OK;
}

/* Codebook indices of y (each value α·c for a code c of its row). */
static nb_status codebook_codes(nb_xlayer *l, const nb_quantizer *q, const float *y) {
    const size_t K = l->numel / (size_t)l->cb_rows;
    for (size_t e = 0; e < l->numel; e++) {
        const float *c = l->codebook + (e / K) * (size_t)l->ncodes;
        int lo = 0, hi = l->ncodes - 1, found = -1;
        while (lo <= hi) { /* α > 0: α·c ascends with c */
            const int mid = (lo + hi) / 2;
            const float v = l->alpha == 1.0f ? c[mid] : l->alpha * c[mid];
            if (v == y[e]) {
                found = mid;
                break;
            }
            if (v < y[e]) lo = mid + 1;
            else hi = mid - 1;
        }
        if (found < 0)
            return nb_set_error(NB_STATUS_BAD_INPUT, "%s: weight %zu: %.9g is not a code of its codebook", q->name, e,
                                (double)y[e]);
        l->codes[e] = found;
    }
    return NB_OK;
}

static nb_status weights_ir(nb_xlayer *l, const nb_quantizer *q, const float *w) {
    nb_status st = NB_OK;
    if (!q) {
        l->wkind = NB_XW_FLOAT;
        snprintf(l->wmethod, sizeof l->wmethod, "none");
        if ((l->wfloat = take(l->numel, sizeof(float), &st))) memcpy(l->wfloat, w, l->numel * sizeof(float));
        return st;
    }
    snprintf(l->wmethod, sizeof l->wmethod, "%s", nb_qmethod_name(q->method));
    float *y = take(l->numel, sizeof(float), &st);
    l->codes = take(l->numel, sizeof(int32_t), &st);
    if (st != NB_OK) goto done;
    if (q->method == NB_QM_ADQ) {
        const nb_cb_args a = {q->L.rows, q->L.K, q->ncodes, q->codebook, q->step, 0, 1.0f};
        l->wkind = NB_XW_CODEBOOK;
        l->cb_rows = q->L.rows;
        l->ncodes = q->ncodes;
        l->alpha = q->step ? q->step->data[0] : 1.0f;
        l->wbits = nb_xbits(q->ncodes);
        l->gran = q->L.rows > 1 ? NB_QG_CHANNEL : NB_QG_TENSOR;
        l->L = q->L;
        if (!(l->alpha > 0.0f))
            return nb_set_error(NB_STATUS_BAD_INPUT, "%s: the codebook scale is %g", q->name, (double)l->alpha);
        if (!(l->codebook = take((size_t)l->cb_rows * (size_t)l->ncodes, sizeof(float), &st))) goto done;
        memcpy(l->codebook, q->codebook, (size_t)l->cb_rows * (size_t)l->ncodes * sizeof(float));
        nb_cb_forward(&a, w, y);
        st = codebook_codes(l, q, y);
        goto done;
    }
    l->wkind = NB_XW_UNIFORM;
    l->gran = q->gran;
    l->L = q->L;
    l->n_scales = (int)nb_fq_layout_scales(&q->L);
    l->scale = take((size_t)l->n_scales, sizeof(float), &st);
    l->zero_point = take((size_t)l->n_scales, sizeof(int32_t), &st);
    if (st != NB_OK) goto done;
    if (q->method == NB_QM_BINARY || q->method == NB_QM_TERNARY) {
        /* α·t, t in {-1, 1} or {-1, 0, 1}: the grid [-1, 1] with scale α per row */
        float *alpha = take((size_t)q->L.rows, sizeof(float), &st);
        if (!alpha) goto done;
        nb_binary_ternary_forward(w, y, q->L.rows, q->L.K, q->method == NB_QM_TERNARY, alpha);
        l->L = (nb_fq_layout){q->L.rows, q->L.K, q->L.K};
        l->n_scales = q->L.rows;
        for (int r = 0; r < q->L.rows; r++) l->scale[r] = alpha[r] > 0.0f ? alpha[r] : 1.0f;
        nb_free(alpha);
        l->qmin = -1;
        l->qmax = 1;
    } else {
        l->qmin = q->qmin;
        l->qmax = q->qmax;
        if (q->method == NB_QM_LSQ) {
            const nb_lsq_args a = {NB_LSQ_LSQ, q->L, q->step, NULL, q->qmin, q->qmax, 1.0f};
            nb_lsq_forward(&a, w, y);
            for (int j = 0; j < l->n_scales; j++) l->scale[j] = q->step->data[j];
        } else {
            nb_fq_forward(&q->L, q->scale, q->zero_point, q->qmin, q->qmax, w, y);
            for (int j = 0; j < l->n_scales; j++) {
                l->scale[j] = q->scale[j];
                l->zero_point[j] = (int32_t)q->zero_point[j];
            }
        }
    }
    for (int j = 0; j < l->n_scales; j++)
        if (!(l->scale[j] > 0.0f) || !isfinite(l->scale[j])) {
            st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: scale %d is %g", q->name, j, (double)l->scale[j]);
            goto done;
        }
    l->wbits = nb_xbits((long)l->qmax - l->qmin + 1);
    st = uniform_codes(l, q, y);
done:
    nb_free(y);
    if (st == NB_STATUS_OOM) nb_set_error(st, "export of %s: out of memory", l->name);
    return st;
}

static nb_status input_ir(nb_xlayer *l, const nb_quantizer *q) {
    if (!q) {
        l->akind = NB_XA_NONE;
        snprintf(l->amethod, sizeof l->amethod, "none");
        return NB_OK;
    }
    snprintf(l->amethod, sizeof l->amethod, "%s", nb_qmethod_name(q->method));
    l->aqmin = q->qmin;
    l->aqmax = q->qmax;
    if (q->method == NB_QM_N2UQ) {
        l->akind = NB_XA_N2UQ;
        l->n_thr = q->qmax;
        l->abits = nb_xbits((long)q->qmax + 1);
        l->ascale = q->step->data[0];
        l->aqmin = 0;
        if (!(l->thr = nb_calloc((size_t)l->n_thr, sizeof(float))))
            return nb_set_error(NB_STATUS_OOM, "export of %s: out of memory", l->name);
        double t = (double)q->t0->data[0]; /* as n2uq_consts_make */
        for (int i = 0; i < l->n_thr; i++) {
            l->thr[i] = (float)t;
            if (i + 1 < l->n_thr) t += (double)q->intervals->data[i];
        }
    } else {
        l->akind = NB_XA_UNIFORM;
        l->abits = nb_xbits((long)q->qmax - q->qmin + 1);
        switch (q->method) {
        case NB_QM_LSQ: l->ascale = q->step->data[0]; break;
        case NB_QM_LSQ_PLUS:
            l->ascale = q->step->data[0];
            l->aoffset = q->offset->data[0];
            break;
        case NB_QM_PACT: l->ascale = q->step->data[0] / (float)q->qmax; break; /* nb_lsq_consts_make's */
        default:
            l->ascale = q->scale[0];
            l->azero = (int32_t)q->zero_point[0];
            break;
        }
    }
    if (!(l->ascale > 0.0f) || !isfinite(l->ascale))
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: the input scale is %g", q->name, (double)l->ascale);
    return NB_OK;
}

void nb_xlayer_geometry(nb_xlayer *l, const nb_module *mod) {
    snprintf(l->name, sizeof l->name, "%s", mod->name);
    const nb_tensor *w = nb_module_weight((nb_module *)mod);
    l->is_conv = mod->type == NB_MOD_CONV2D;
    l->oc = w->shape[0];
    l->ic = w->shape[1];
    l->kh = l->is_conv ? w->shape[2] : 1;
    l->kw = l->is_conv ? w->shape[3] : 1;
    if (l->is_conv) {
        const nb_conv2d_module *c = (const nb_conv2d_module *)mod;
        l->stride = c->p.stride;
        l->pad = c->p.pad;
    }
    l->numel = w->numel;
}

static nb_status layer_ir(nb_xlayer *l, nb_module *mod, nb_quantizer *qs, int nq) {
    nb_xlayer_geometry(l, mod);
    nb_status st = NB_OK;
    l->mul = take((size_t)l->oc, sizeof(float), &st);
    l->bias = take((size_t)l->oc, sizeof(float), &st);
    if (st != NB_OK) return nb_set_error(st, "export of %s: out of memory", l->name);
    for (int c = 0; c < l->oc; c++) { /* the batchnorm folded as nb_quant_fold_bn folds it */
        double k, b;
        nb_quant_bn_coeffs(mod, c, &k, &b);
        l->mul[c] = (float)k;
        l->bias[c] = (float)b;
    }
    if ((st = weights_ir(l, find_q(qs, nq, mod, 1), nb_module_weight(mod)->data)) != NB_OK) return st;
    return input_ir(l, find_q(qs, nq, mod, 0));
}

/* One evaluation forward of a zero image: quantizers that set themselves
 * up lazily (recomputed weight scales, first-use initialisation) do it now,
 * as `nibble eval` would. */
static nb_status probe(nb_model *m) {
    const int C = m->opts.in_channels, S = m->opts.input_size;
    nb_tape *t = nb_tape_new();
    nb_tensor *x = nb_tensor_new(4, (int[]){1, C, S, S});
    nb_status st = t && x ? NB_OK : nb_set_error(NB_STATUS_OOM, "export: out of memory");
    if (st == NB_OK) {
        const nb_pass was = m->pass;
        nb_tape_set_grad(t, 0);
        nb_model_train(m, 0);
        memset(x->data, 0, x->numel * sizeof(float));
        nb_model_forward(m, t, x);
        nb_model_set_pass(m, was);
    }
    nb_tensor_free(x);
    nb_tape_free(t);
    return st;
}

nb_status nb_xmodel_graph(nb_xmodel *x, const nb_model *m, nb_gnode **mods) {
    *mods = NULL;
    const int cap = 16 + 4 * m->n_modules;
    nb_gnode *g = nb_calloc((size_t)cap, sizeof *g);
    if (!g) return nb_set_error(NB_STATUS_OOM, "%s: out of memory", m->arch);
    const int n = nb_model_graph(m, g, cap);
    if (n < 0) {
        nb_free(g);
        return NB_STATUS_BAD_INPUT;
    }
    snprintf(x->arch, sizeof x->arch, "%s", m->arch);
    x->opts = m->opts;
    x->in_c = m->opts.in_channels;
    x->in_h = x->in_w = m->opts.input_size;
    int nl = 0;
    for (int i = 0; i < n; i++) nl += g[i].op == NB_G_CONV || g[i].op == NB_G_LINEAR;
    x->nodes = nb_calloc((size_t)n, sizeof *x->nodes);
    x->layers = nb_calloc((size_t)(nl ? nl : 1), sizeof *x->layers);
    if (!x->nodes || !x->layers) {
        nb_free(g);
        return nb_set_error(NB_STATUS_OOM, "%s: out of memory", m->arch);
    }
    x->n_nodes = n;
    for (int i = 0, l = 0; i < n; i++) {
        const int lin = g[i].op == NB_G_CONV || g[i].op == NB_G_LINEAR;
        x->nodes[i] = (nb_xnode){g[i].op, g[i].a, g[i].b, lin ? l++ : -1, g[i].k, g[i].stride, g[i].pad, g[i].out_c};
    }
    *mods = g;
    return NB_OK;
}

nb_status nb_export_build(nb_model *m, nb_xmodel **out) {
    *out = NULL;
    if (m->quant && !nb_quant_ready(m))
        return nb_set_error(NB_STATUS_BAD_INPUT, "the model's quantizers are not calibrated (run ptq or train first)");
    nb_status st = probe(m);
    if (st != NB_OK) return st;
    nb_xmodel *x = nb_calloc(1, sizeof *x);
    nb_gnode *g = NULL;
    if (!x) return nb_set_error(NB_STATUS_OOM, "export: out of memory");
    st = nb_xmodel_graph(x, m, &g);
    int nq = 0;
    nb_quantizer *qs = nb_quant_list(m, &nq);
    for (int i = 0; i < x->n_nodes && st == NB_OK; i++)
        if (x->nodes[i].layer >= 0) st = layer_ir(&x->layers[x->n_layers++], g[i].mod, qs, nq);
    nb_free(g);
    if (st != NB_OK) {
        nb_xmodel_free(x);
        return st;
    }
    *out = x;
    return NB_OK;
}
