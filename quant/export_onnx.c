/* The ONNX writer: the export IR (nb_export.h) as an ONNX model in QDQ
 * form, encoded by the protobuf-c code that the build generates from
 * Debian's onnx.proto. docs/export.md ("ONNX") describes the graph; in
 * short, per conv/linear layer:
 *
 *   input   uniform: [Sub β] Clip QuantizeLinear DequantizeLinear [Add β]
 *           n2uq:    Unsqueeze GreaterOrEqual(T) Cast ReduceSum Mul(s) Q DQ
 *   weight  uniform: int8/uint8 codes -> DequantizeLinear(axis 0, s·mul)
 *           codebook: uint8 indices -> Cast [Add row offsets] Gather Mul(α·mul)
 *           float (and per-group uniform): the float weights ŵ·mul
 *   layer   Conv or Gemm(transB) with the folded bias.
 *
 * The batchnorm's multiplier goes into the weight's dequantization, so the
 * ONNX layer computes Σ (ŵ·mul)·x̂ + bias where nibble computes mul·Σ ŵ·x̂ +
 * bias: the same up to float rounding. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "nb_export.h"
#include "onnx.pb-c.h"

/* Initializers are raw_data, which ONNX defines as little-endian: the
 * machine's bytes as they are. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "quant/export_onnx.c writes tensor bytes as they are in memory: little-endian only"
#endif

enum { OX_PER_NODE = 16 }; /* bound on ONNX nodes and on initializers per IR node */

/* Everything the model holds (messages, strings, arrays, tensor bytes) comes
 * from one arena freed after writing. An allocation failure longjmps back
 * to nb_export_onnx (Lua's protected-call idea), so the graph code needs no
 * check after each of its few hundred allocations. */
typedef struct {
    nb_arena *arena;
    jmp_buf oom;
    Onnx__GraphProto *g; /* node and initializer sized for OX_PER_NODE per IR node */
    size_t cap;
} ox;

static void *ox_alloc(ox *b, size_t n) {
    void *p = nb_arena_alloc(b->arena, n ? n : 1);
    if (!p) longjmp(b->oom, 1);
    return memset(p, 0, n ? n : 1);
}

__attribute__((format(printf, 2, 3))) static char *ox_str(ox *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = ox_alloc(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* An initializer: name, ONNX element type, shape dims[nd] (nd = 0: a scalar),
 * its bytes copied from data.
 * Returns the name for use as a node input. */
static const char *ox_init(ox *b, const char *name, int dtype, int nd, const int64_t *dims, const void *data) {
    NB_ASSERT(b->g->n_initializer < b->cap, "onnx: more than %zu initializers", b->cap);
    static const size_t elem[] = {[ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT] = 4, [ONNX__TENSOR_PROTO__DATA_TYPE__UINT8] = 1,
                                  [ONNX__TENSOR_PROTO__DATA_TYPE__INT8] = 1, [ONNX__TENSOR_PROTO__DATA_TYPE__INT32] = 4,
                                  [ONNX__TENSOR_PROTO__DATA_TYPE__INT64] = 8};
    Onnx__TensorProto *t = ox_alloc(b, sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = ox_str(b, "%s", name);
    t->has_data_type = 1;
    t->data_type = dtype;
    t->n_dims = (size_t)nd;
    t->dims = ox_alloc(b, sizeof(int64_t) * (size_t)nd);
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)(t->dims[i] = dims[i]);
    t->has_raw_data = 1;
    t->raw_data.len = n * elem[dtype];
    t->raw_data.data = ox_alloc(b, t->raw_data.len);
    memcpy(t->raw_data.data, data, t->raw_data.len);
    b->g->initializer[b->g->n_initializer++] = t;
    return t->name;
}

static const char *ox_scalar(ox *b, const char *name, float v) {
    return ox_init(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 0, NULL, &v);
}

static const char *ox_ints(ox *b, const char *name, int n, const int64_t *v) {
    return ox_init(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, (int64_t[]){n}, v);
}

/* A zero point: one (nd = 0) or n (nd = 1) of z, uint8 or int8 per the grid. */
static const char *ox_zero_point(ox *b, const char *name, int is_u8, int nd, int64_t n, const int32_t *z) {
    uint8_t *v = ox_alloc(b, (size_t)n);
    for (int64_t i = 0; i < n; i++) v[i] = is_u8 ? (uint8_t)z[i] : (uint8_t)(int8_t)z[i];
    return ox_init(b, name, is_u8 ? ONNX__TENSOR_PROTO__DATA_TYPE__UINT8 : ONNX__TENSOR_PROTO__DATA_TYPE__INT8, nd,
                   &n, v);
}

/* A node op_type(in...) -> out (named after its output); in is
 * NULL-terminated. Room for 4 attributes. */
static Onnx__NodeProto *ox_node(ox *b, const char *op, const char *out, const char *const *in) {
    NB_ASSERT(b->g->n_node < b->cap, "onnx: more than %zu nodes", b->cap);
    Onnx__NodeProto *n = ox_alloc(b, sizeof *n);
    onnx__node_proto__init(n);
    while (in[n->n_input]) n->n_input++;
    n->input = ox_alloc(b, sizeof(char *) * n->n_input);
    for (size_t i = 0; i < n->n_input; i++) n->input[i] = ox_str(b, "%s", in[i]);
    n->n_output = 1;
    n->output = ox_alloc(b, sizeof(char *));
    n->output[0] = ox_str(b, "%s", out);
    n->name = n->output[0];
    n->op_type = ox_str(b, "%s", op);
    n->attribute = ox_alloc(b, sizeof(Onnx__AttributeProto *) * 4);
    b->g->node[b->g->n_node++] = n;
    return n;
}
#define OX_NODE(b, op, out, ...) ox_node(b, op, out, (const char *const[]){__VA_ARGS__, NULL})

/* Attribute name = the k ints v (k = 0: the single int v[0]). */
static void ox_attr(ox *b, Onnx__NodeProto *n, const char *name, int k, const int64_t *v) {
    NB_ASSERT(n->n_attribute < 4, "onnx: %s has more than 4 attributes", n->op_type);
    Onnx__AttributeProto *a = ox_alloc(b, sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = ox_str(b, "%s", name);
    a->has_type = 1;
    if (k == 0) {
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
        a->has_i = 1;
        a->i = v[0];
    } else {
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        a->n_ints = (size_t)k;
        a->ints = ox_alloc(b, sizeof(int64_t) * (size_t)k);
        memcpy(a->ints, v, sizeof(int64_t) * (size_t)k);
    }
    n->attribute[n->n_attribute++] = a;
}

/* ------------------------------------------------------------- layers */

/* The input quantizer of l on value x; returns the quantized value's name.
 * Uniform: nibble computes q = clamp(rint((x - β)/s) + z, qmin, qmax) and
 * x̂ = s·(q - z) + β. QuantizeLinear computes saturate(rint(c/s) + z) (ties
 * to even, as rint) but saturates to the 8-bit type's range, so the Clip
 * first bounds c to [(qmin - z)·s, (qmax - z)·s]: inside it nothing changes,
 * and a clipped c = fl((qmax - z)·s) gives c/s within two ulps of the
 * integer qmax - z (|qmax - z| <= 255), which rint returns exactly: the same
 * q for every x. DequantizeLinear is (q - z)·s, then Add β. */
static const char *input_quant(ox *b, const nb_xlayer *l, const char *x) {
    const char *L = l->name;
    if (l->akind == NB_XA_UNIFORM) {
        const int u8 = l->aqmin >= 0;
        if (l->aoffset != 0.0f)
            x = OX_NODE(b, "Sub", ox_str(b, "%s.input.centered", L), x,
                        ox_scalar(b, ox_str(b, "%s.input.offset", L), l->aoffset))->output[0];
        x = OX_NODE(b, "Clip", ox_str(b, "%s.input.clipped", L), x,
                    ox_scalar(b, ox_str(b, "%s.input.min", L), (float)(l->aqmin - l->azero) * l->ascale),
                    ox_scalar(b, ox_str(b, "%s.input.max", L), (float)(l->aqmax - l->azero) * l->ascale))->output[0];
        const char *s = ox_scalar(b, ox_str(b, "%s.input.scale", L), l->ascale);
        const char *z = ox_zero_point(b, ox_str(b, "%s.input.zero_point", L), u8, 0, 1, &l->azero);
        x = OX_NODE(b, "QuantizeLinear", ox_str(b, "%s.input.q", L), x, s, z)->output[0];
        x = OX_NODE(b, "DequantizeLinear", ox_str(b, "%s.input.dq", L), x, s, z)->output[0];
        if (l->aoffset != 0.0f)
            x = OX_NODE(b, "Add", ox_str(b, "%s.input.hat", L), x, ox_str(b, "%s.input.offset", L))->output[0];
        return x;
    }
    if (l->akind == NB_XA_N2UQ) {
        /* s·#{i : x >= T_i}: x as [..., 1] against the thresholds [n], the
         * booleans counted over the last axis; the count then goes through a
         * uint8 Q/DQ pair on s (exact: q·s/s rounds back to q), which keeps
         * the layer's input in QDQ form for runtimes that fuse it. */
        const char *axes = ox_ints(b, ox_str(b, "%s.input.axes", L), 1, (int64_t[]){-1});
        const char *u = OX_NODE(b, "Unsqueeze", ox_str(b, "%s.input.unsqueezed", L), x, axes)->output[0];
        const char *thr = ox_init(b, ox_str(b, "%s.input.thresholds", L), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1,
                                  (int64_t[]){l->n_thr}, l->thr);
        const char *ge = OX_NODE(b, "GreaterOrEqual", ox_str(b, "%s.input.above", L), u, thr)->output[0];
        Onnx__NodeProto *c = OX_NODE(b, "Cast", ox_str(b, "%s.input.above_f", L), ge);
        ox_attr(b, c, "to", 0, (int64_t[]){ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT});
        Onnx__NodeProto *r = OX_NODE(b, "ReduceSum", ox_str(b, "%s.input.count", L), c->output[0], axes);
        ox_attr(b, r, "keepdims", 0, (int64_t[]){0});
        const char *s = ox_scalar(b, ox_str(b, "%s.input.scale", L), l->ascale);
        const char *z = ox_zero_point(b, ox_str(b, "%s.input.zero_point", L), 1, 0, 1, (int32_t[]){0});
        x = OX_NODE(b, "Mul", ox_str(b, "%s.input.levels", L), r->output[0], s)->output[0];
        x = OX_NODE(b, "QuantizeLinear", ox_str(b, "%s.input.q", L), x, s, z)->output[0];
        return OX_NODE(b, "DequantizeLinear", ox_str(b, "%s.input.dq", L), x, s, z)->output[0];
    }
    return x;
}

/* The weight of l (folded multiplier included) as a value; returns its name. */
static const char *weight(ox *b, const nb_xlayer *l) {
    const char *L = l->name;
    const int nd = l->is_conv ? 4 : 2;
    const int64_t dims[4] = {l->oc, l->ic, l->kh, l->kw}, col[4] = {l->oc, 1, 1, 1};
    const size_t K = l->numel / (size_t)l->oc;
    const int per_tensor = l->L.rows == 1 && l->n_scales == 1, per_channel = l->L.rows == l->oc && l->n_scales == l->oc;
    if (l->wkind == NB_XW_UNIFORM && (per_tensor || per_channel)) {
        /* per-axis DequantizeLinear: scale s_c·mul[c], zero point z_c (a
         * per-tensor s and z repeated: mul differs per channel) */
        const int u8 = l->qmin >= 0;
        uint8_t *q = ox_alloc(b, l->numel);
        for (size_t i = 0; i < l->numel; i++) q[i] = u8 ? (uint8_t)l->codes[i] : (uint8_t)(int8_t)l->codes[i];
        const char *codes =
            ox_init(b, ox_str(b, "%s.weight.codes", L),
                    u8 ? ONNX__TENSOR_PROTO__DATA_TYPE__UINT8 : ONNX__TENSOR_PROTO__DATA_TYPE__INT8, nd, dims, q);
        float *s = ox_alloc(b, sizeof(float) * (size_t)l->oc);
        int32_t *z = ox_alloc(b, sizeof(int32_t) * (size_t)l->oc);
        for (int c = 0; c < l->oc; c++) {
            s[c] = l->scale[per_channel ? c : 0] * l->mul[c];
            z[c] = l->zero_point[per_channel ? c : 0];
        }
        Onnx__NodeProto *n = OX_NODE(
            b, "DequantizeLinear", ox_str(b, "%s.weight", L), codes,
            ox_init(b, ox_str(b, "%s.weight.scale", L), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, dims, s),
            ox_zero_point(b, ox_str(b, "%s.weight.zero_point", L), u8, 1, l->oc, z));
        ox_attr(b, n, "axis", 0, (int64_t[]){0});
        return n->output[0];
    }
    if (l->wkind == NB_XW_CODEBOOK) {
        /* codebook[r][q]·α·mul[c]: the indices (uint8, as int32 for Gather)
         * plus r·ncodes for per-channel codebooks index the flattened table */
        uint8_t *q = ox_alloc(b, l->numel);
        for (size_t i = 0; i < l->numel; i++) q[i] = (uint8_t)l->codes[i];
        const char *idx = ox_init(b, ox_str(b, "%s.weight.indices", L), ONNX__TENSOR_PROTO__DATA_TYPE__UINT8, nd,
                                  dims, q);
        Onnx__NodeProto *c = OX_NODE(b, "Cast", ox_str(b, "%s.weight.indices_i32", L), idx);
        ox_attr(b, c, "to", 0, (int64_t[]){ONNX__TENSOR_PROTO__DATA_TYPE__INT32});
        idx = c->output[0];
        if (l->cb_rows > 1) {
            int32_t *off = ox_alloc(b, sizeof(int32_t) * (size_t)l->oc);
            for (int r = 0; r < l->oc; r++) off[r] = r * l->ncodes;
            idx = OX_NODE(b, "Add", ox_str(b, "%s.weight.flat_indices", L), idx,
                          ox_init(b, ox_str(b, "%s.weight.row_offset", L), ONNX__TENSOR_PROTO__DATA_TYPE__INT32, nd,
                                  col, off))->output[0];
        }
        const char *cb = ox_init(b, ox_str(b, "%s.weight.codebook", L), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1,
                                 (int64_t[]){(int64_t)l->cb_rows * l->ncodes}, l->codebook);
        const char *code = OX_NODE(b, "Gather", ox_str(b, "%s.weight.code", L), cb, idx)->output[0];
        float *am = ox_alloc(b, sizeof(float) * (size_t)l->oc);
        for (int r = 0; r < l->oc; r++) am[r] = l->alpha * l->mul[r];
        return OX_NODE(b, "Mul", ox_str(b, "%s.weight", L), code,
                       ox_init(b, ox_str(b, "%s.weight.alpha_mul", L), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, nd, col,
                               am))->output[0];
    }
    /* float weights, and uniform per-group ones (DequantizeLinear takes one
     * scale per channel at most before opset 21): ŵ·mul as floats */
    float *w = ox_alloc(b, sizeof(float) * l->numel);
    if (l->wkind == NB_XW_FLOAT) memcpy(w, l->wfloat, sizeof(float) * l->numel);
    else nb_xlayer_weights(l, w);
    for (size_t i = 0; i < l->numel; i++) w[i] *= l->mul[i / K];
    return ox_init(b, ox_str(b, "%s.weight", L), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, nd, dims, w);
}

/* Conv or Gemm of layer l on value x -> out. */
static void layer(ox *b, const nb_xlayer *l, const char *x, const char *out) {
    x = input_quant(b, l, x);
    const char *w = weight(b, l);
    const char *bias = ox_init(b, ox_str(b, "%s.bias", l->name), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1,
                               (int64_t[]){l->oc}, l->bias);
    if (l->is_conv) {
        Onnx__NodeProto *n = OX_NODE(b, "Conv", out, x, w, bias);
        ox_attr(b, n, "kernel_shape", 2, (int64_t[]){l->kh, l->kw});
        ox_attr(b, n, "strides", 2, (int64_t[]){l->stride, l->stride});
        ox_attr(b, n, "pads", 4, (int64_t[]){l->pad, l->pad, l->pad, l->pad});
    } else {
        ox_attr(b, OX_NODE(b, "Gemm", out, x, w, bias), "transB", 0, (int64_t[]){1});
    }
}

/* -------------------------------------------------------------- graph */

/* A graph input or output: float, shape [N, d1, ...] with N symbolic. */
static Onnx__ValueInfoProto *value_info(ox *b, const char *name, int nd, const int64_t *d) {
    Onnx__ValueInfoProto *v = ox_alloc(b, sizeof *v);
    Onnx__TypeProto *tp = ox_alloc(b, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = ox_alloc(b, sizeof *tt);
    Onnx__TensorShapeProto *sh = ox_alloc(b, sizeof *sh);
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    v->name = ox_str(b, "%s", name);
    v->type = tp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sh;
    sh->n_dim = (size_t)nd + 1;
    sh->dim = ox_alloc(b, sizeof(Onnx__TensorShapeProto__Dimension *) * sh->n_dim);
    for (size_t i = 0; i < sh->n_dim; i++) {
        Onnx__TensorShapeProto__Dimension *dim = sh->dim[i] = ox_alloc(b, sizeof *dim);
        onnx__tensor_shape_proto__dimension__init(dim);
        if (i == 0) {
            dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dim->dim_param = ox_str(b, "N");
        } else {
            dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dim->dim_value = d[i - 1];
        }
    }
    return v;
}

/* Checks what the graph code relies on: node inputs earlier in the list,
 * layer indices and kinds, codes that fit 8 bits. */
static nb_status check_ir(const nb_xmodel *x) {
    if (x->n_nodes < 2 || x->nodes[0].op != NB_G_INPUT)
        return nb_set_error(NB_STATUS_BAD_INPUT, "onnx: %s: the node list does not start with the input", x->arch);
    for (int i = 1; i < x->n_nodes; i++) {
        const nb_xnode *n = &x->nodes[i];
        const int lin = n->op == NB_G_CONV || n->op == NB_G_LINEAR;
        if (n->op <= NB_G_INPUT || n->op >= NB_G_COUNT || n->a < 0 || n->a >= i || n->b >= i ||
            (n->op == NB_G_ADD && n->b < 0) || (lin && (n->layer < 0 || n->layer >= x->n_layers)) ||
            (lin && x->layers[n->layer].is_conv != (n->op == NB_G_CONV)))
            return nb_set_error(NB_STATUS_BAD_INPUT, "onnx: %s: node %d (%s) is malformed", x->arch, i,
                                n->op > NB_G_INPUT && n->op < NB_G_COUNT ? nb_gop_name(n->op) : "?");
    }
    for (int i = 0; i < x->n_layers; i++) {
        const nb_xlayer *l = &x->layers[i];
        if ((l->wkind == NB_XW_UNIFORM && (l->qmin < -128 || l->qmax > 255 || (l->qmin < 0 && l->qmax > 127))) ||
            (l->wkind == NB_XW_CODEBOOK && (l->ncodes < 1 || l->ncodes > 256 || (l->cb_rows != 1 && l->cb_rows != l->oc))) ||
            (l->akind == NB_XA_UNIFORM && (l->aqmin < -128 || l->aqmax > 255 || (l->aqmin < 0 && l->aqmax > 127))) ||
            (l->akind == NB_XA_N2UQ && (l->n_thr < 1 || l->n_thr > 255)))
            return nb_set_error(NB_STATUS_BAD_INPUT, "onnx: layer %s: its codes do not fit 8 bits", l->name);
    }
    return NB_OK;
}

/* Metadata entry key = value. */
static void meta(ox *b, Onnx__ModelProto *m, const char *key, const char *value) {
    Onnx__StringStringEntryProto *e = ox_alloc(b, sizeof *e);
    onnx__string_string_entry_proto__init(e);
    e->key = ox_str(b, "%s", key);
    e->value = ox_str(b, "%s", value);
    m->metadata_props[m->n_metadata_props++] = e;
}

/* "a,b,c" of n floats (%.9g: they read back as the same floats). */
static char *float_list(ox *b, const float *v, int n) {
    char *s = ox_str(b, "%.9g", (double)v[0]);
    for (int i = 1; i < n; i++) s = ox_str(b, "%s,%.9g", s, (double)v[i]);
    return s;
}

/* The whole model, in b's arena. */
static Onnx__ModelProto *build(ox *b, const nb_xmodel *x, int opset) {
    Onnx__ModelProto *m = ox_alloc(b, sizeof *m);
    Onnx__GraphProto *g = b->g = ox_alloc(b, sizeof *g);
    Onnx__OperatorSetIdProto *os = ox_alloc(b, sizeof *os);
    onnx__model_proto__init(m);
    onnx__graph_proto__init(g);
    onnx__operator_set_id_proto__init(os);
    m->has_ir_version = 1;
    m->ir_version = opset <= 14 ? 7 : 8; /* the IR version ONNX released with the opset */
    m->producer_name = "nibble";
    m->n_opset_import = 1;
    m->opset_import = ox_alloc(b, sizeof os);
    m->opset_import[0] = os;
    os->domain = "";
    os->has_version = 1;
    os->version = opset;
    m->graph = g;
    g->name = ox_str(b, "%s", x->arch);
    g->doc_string = "nibble export, QDQ (docs/export.md)";
    b->cap = (size_t)x->n_nodes * OX_PER_NODE;
    g->node = ox_alloc(b, sizeof(Onnx__NodeProto *) * b->cap);
    g->initializer = ox_alloc(b, sizeof(Onnx__TensorProto *) * b->cap);

    m->metadata_props = ox_alloc(b, sizeof(Onnx__StringStringEntryProto *) * (size_t)(x->n_layers + 3));
    meta(b, m, "arch", x->arch);
    if (x->n_norm > 0) {
        meta(b, m, "mean", float_list(b, x->mean, x->n_norm));
        meta(b, m, "std", float_list(b, x->std, x->n_norm));
    }
    for (int i = 0; i < x->n_layers; i++) {
        const nb_xlayer *l = &x->layers[i];
        meta(b, m, ox_str(b, "bits.%s", l->name),
             ox_str(b, "w%d a%d (%s, %s)", l->wkind == NB_XW_FLOAT ? 32 : l->wbits,
                    l->akind == NB_XA_NONE ? 32 : l->abits, l->wkind == NB_XW_FLOAT ? "float" : l->wmethod,
                    l->akind == NB_XA_NONE ? "float" : l->amethod));
    }

    /* name[i]: node i's output; shape[i]: its (C, H, W), H = W = 0 once
     * flat (N, C). The shortcut's padding needs its input's C, the graph's
     * output type the last node's shape. */
    const char **name = ox_alloc(b, sizeof(char *) * (size_t)x->n_nodes);
    int64_t(*shape)[3] = ox_alloc(b, sizeof *shape * (size_t)x->n_nodes);
    name[0] = "input";
    shape[0][0] = x->in_c, shape[0][1] = x->in_h, shape[0][2] = x->in_w;
    for (int i = 1; i < x->n_nodes; i++) {
        const nb_xnode *n = &x->nodes[i];
        const char *a = name[n->a];
        const int64_t *in = shape[n->a];
        int64_t *sh = shape[i];
        const char *out = i == x->n_nodes - 1 ? "logits"
                          : n->op == NB_G_CONV || n->op == NB_G_LINEAR
                              ? x->layers[n->layer].name
                              : ox_str(b, "%s_%d", nb_gop_name(n->op), i);
        memcpy(sh, in, sizeof shape[0]);
        switch (n->op) {
        case NB_G_CONV:
        case NB_G_LINEAR: {
            const nb_xlayer *l = &x->layers[n->layer];
            layer(b, l, a, out);
            sh[0] = l->oc;
            if (l->is_conv) {
                sh[1] = (in[1] + 2 * l->pad - l->kh) / l->stride + 1;
                sh[2] = (in[2] + 2 * l->pad - l->kw) / l->stride + 1;
            }
            break;
        }
        case NB_G_RELU: OX_NODE(b, "Relu", out, a); break;
        case NB_G_ADD: OX_NODE(b, "Add", out, a, name[n->b]); break;
        case NB_G_SHORTCUT_PAD: {
            /* x[:, :, ::s, ::s], then zero channels: (out_c - C)/2 before, the rest after */
            const char *p = ox_str(b, "%s.", out);
            const char *sl = OX_NODE(b, "Slice", ox_str(b, "%sslice", p), a,
                                     ox_ints(b, ox_str(b, "%sstarts", p), 2, (int64_t[]){0, 0}),
                                     ox_ints(b, ox_str(b, "%sends", p), 2, (int64_t[]){INT64_MAX, INT64_MAX}),
                                     ox_ints(b, ox_str(b, "%saxes", p), 2, (int64_t[]){2, 3}),
                                     ox_ints(b, ox_str(b, "%ssteps", p), 2, (int64_t[]){n->stride, n->stride}))
                                 ->output[0];
            const int64_t before = (n->out_c - in[0]) / 2, after = n->out_c - in[0] - before;
            OX_NODE(b, "Pad", out, sl,
                    ox_ints(b, ox_str(b, "%spads", p), 8, (int64_t[]){0, before, 0, 0, 0, after, 0, 0}));
            sh[0] = n->out_c;
            sh[1] = (in[1] + n->stride - 1) / n->stride;
            sh[2] = (in[2] + n->stride - 1) / n->stride;
            break;
        }
        case NB_G_MAXPOOL: {
            Onnx__NodeProto *mp = OX_NODE(b, "MaxPool", out, a);
            ox_attr(b, mp, "kernel_shape", 2, (int64_t[]){n->k, n->k});
            ox_attr(b, mp, "strides", 2, (int64_t[]){n->stride, n->stride});
            ox_attr(b, mp, "pads", 4, (int64_t[]){n->pad, n->pad, n->pad, n->pad});
            sh[1] = (in[1] + 2 * n->pad - n->k) / n->stride + 1;
            sh[2] = (in[2] + 2 * n->pad - n->k) / n->stride + 1;
            break;
        }
        case NB_G_GAP:
            OX_NODE(b, "Flatten", out,
                    OX_NODE(b, "GlobalAveragePool", ox_str(b, "%s.pool", out), a)->output[0]);
            sh[1] = sh[2] = 0;
            break;
        default: NB_ASSERT(0, "onnx: node %d: op %d", i, (int)n->op);
        }
        name[i] = out;
    }
    const int64_t *last = shape[x->n_nodes - 1];
    g->n_input = g->n_output = 1;
    g->input = ox_alloc(b, sizeof(Onnx__ValueInfoProto *));
    g->output = ox_alloc(b, sizeof(Onnx__ValueInfoProto *));
    g->input[0] = value_info(b, "input", 3, shape[0]);
    g->output[0] = value_info(b, "logits", last[1] ? 3 : 1, last);
    return m;
}

/* protobuf-c's output sink: straight into the file (no copy of the model's
 * bytes in memory); a failed fwrite shows in ferror at the end. */
typedef struct {
    ProtobufCBuffer base;
    FILE *f;
} file_sink;

static void sink_append(ProtobufCBuffer *buf, size_t len, const uint8_t *data) {
    file_sink *s = (file_sink *)buf;
    if (len) fwrite(data, 1, len, s->f);
}

nb_status nb_export_onnx(const nb_xmodel *x, const char *path, int opset) {
    if (opset < 13 || opset > 17)
        return nb_set_error(NB_STATUS_BAD_INPUT, "opset %d: nibble writes 13 to 17", opset);
    nb_status st = check_ir(x);
    if (st != NB_OK) return st;
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= sizeof tmp)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%.64s...: path too long", path);
    ox b = {.arena = nb_arena_new((size_t)1 << 20)};
    if (!b.arena) return NB_STATUS_OOM;
    FILE *f = NULL;
    if (setjmp(b.oom)) {
        st = nb_set_error(NB_STATUS_OOM, "%s: out of memory building the ONNX model", path);
        goto cleanup;
    }
    Onnx__ModelProto *m = build(&b, x, opset);
    if (!(f = fopen(tmp, "wb"))) {
        st = nb_set_error(NB_STATUS_IO, "%s: cannot write ONNX model: %s", path, strerror(errno));
        goto cleanup;
    }
    file_sink sink = {{sink_append}, f};
    protobuf_c_message_pack_to_buffer(&m->base, &sink.base);
    const int ok = !ferror(f) && fflush(f) == 0 && fsync(fileno(f)) == 0; /* on disk before the rename */
    const int err = errno;
    const int closed = fclose(f) == 0;
    f = NULL;
    if (!ok || !closed || rename(tmp, path) != 0) {
        st = nb_set_error(NB_STATUS_IO, "%s: cannot write ONNX model: %s", path, strerror(ok ? errno : err));
        remove(tmp);
    }
cleanup:
    if (f) {
        fclose(f);
        remove(tmp);
    }
    nb_arena_free(b.arena);
    return st;
}
