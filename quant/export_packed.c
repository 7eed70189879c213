/* The packed file (docs/export.md "Packed file"): an HDF5 file with three
 * blobs and a JSON layer table, so a 2-bit weight costs 2 bits and the
 * file's own overhead stays a few kilobytes whatever the layer count.
 *
 *   root attributes  nb_format "nibble-packed", nb_version 1,
 *                    model  (JSON: arch, num_classes, in_channels, input_size,
 *                            shortcut, stem, width, mean, std),
 *                    layers (JSON: one record per conv/linear layer in
 *                            forward order, fields and blob slices),
 *                    config (the training config, JSON; optional)
 *   /codes   uint8   every layer's codes, bit-packed at its width (code -
 *                    qmin for uniform grids, the index for codebooks), LSB
 *                    first, each layer from a byte boundary
 *   /floats  float32 scales, codebooks, multipliers, biases, input scales,
 *                    thresholds, unquantized weights
 *   /ints    int32   zero points
 * A slice is [offset, count] into a blob. Reading validates everything a
 * hand edit can break: shapes against the architecture, bit widths against
 * the grids, every code against its range, scales finite and positive. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "h5_util.h"
#include "internal.h"
#include "nb_export.h"

/* ------------------------------------------------------------------ blobs */

typedef struct {
    uint8_t *codes;
    size_t n_codes, cap_codes;
    float *floats;
    size_t n_floats, cap_floats;
    int32_t *ints;
    size_t n_ints, cap_ints;
    int oom;
} blobs;

static int grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    void *q = nb_realloc(*p, c * size);
    if (!q) return 0;
    *p = q;
    *cap = c;
    return 1;
}

/* Appends n floats; returns the slice [offset, n] as a JSON array. */
static cJSON *put_floats(blobs *b, const float *v, size_t n) {
    if (!grow((void **)&b->floats, &b->cap_floats, b->n_floats + n, sizeof(float))) {
        b->oom = 1;
        return cJSON_CreateNull();
    }
    memcpy(b->floats + b->n_floats, v, n * sizeof(float));
    const double s[2] = {(double)b->n_floats, (double)n};
    b->n_floats += n;
    return cJSON_CreateDoubleArray(s, 2);
}

static cJSON *put_ints(blobs *b, const int32_t *v, size_t n) {
    if (!grow((void **)&b->ints, &b->cap_ints, b->n_ints + n, sizeof(int32_t))) {
        b->oom = 1;
        return cJSON_CreateNull();
    }
    memcpy(b->ints + b->n_ints, v, n * sizeof(int32_t));
    const double s[2] = {(double)b->n_ints, (double)n};
    b->n_ints += n;
    return cJSON_CreateDoubleArray(s, 2);
}

/* codes - base packed at bits each, LSB first. */
static cJSON *put_codes(blobs *b, const int32_t *codes, size_t n, int bits, int base) {
    const size_t bytes = (n * (size_t)bits + 7) / 8;
    if (!grow((void **)&b->codes, &b->cap_codes, b->n_codes + bytes, 1)) {
        b->oom = 1;
        return cJSON_CreateNull();
    }
    uint8_t *o = b->codes + b->n_codes;
    memset(o, 0, bytes);
    for (size_t i = 0; i < n; i++) {
        const uint32_t v = (uint32_t)(codes[i] - base);
        const size_t bit = i * (size_t)bits;
        for (int k = 0; k < bits; k++)
            if (v >> k & 1u) o[(bit + (size_t)k) >> 3] |= (uint8_t)(1u << ((bit + (size_t)k) & 7));
    }
    const double s[2] = {(double)b->n_codes, (double)bytes};
    b->n_codes += bytes;
    return cJSON_CreateDoubleArray(s, 2);
}

static void unpack(const uint8_t *p, size_t n, int bits, int base, int32_t *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t v = 0;
        const size_t bit = i * (size_t)bits;
        for (int k = 0; k < bits; k++) v |= (uint32_t)(p[(bit + (size_t)k) >> 3] >> ((bit + (size_t)k) & 7) & 1u) << k;
        out[i] = (int32_t)v + base;
    }
}

/* ------------------------------------------------------------------ write */

static const char *const wkind_names[NB_XW_COUNT] = {"float", "uniform", "codebook"};
static const char *const akind_names[NB_XA_COUNT] = {"none", "uniform", "n2uq"};

static cJSON *weight_json(blobs *b, const nb_xlayer *l) {
    cJSON *w = cJSON_CreateObject();
    cJSON_AddStringToObject(w, "kind", wkind_names[l->wkind]);
    cJSON_AddStringToObject(w, "method", l->wmethod);
    if (l->wkind == NB_XW_FLOAT) {
        cJSON_AddItemToObject(w, "values", put_floats(b, l->wfloat, l->numel));
        return w;
    }
    cJSON_AddNumberToObject(w, "bits", l->wbits);
    cJSON_AddStringToObject(w, "granularity", nb_qgran_name(l->gran));
    if (l->wkind == NB_XW_UNIFORM) {
        cJSON_AddNumberToObject(w, "qmin", l->qmin);
        cJSON_AddNumberToObject(w, "qmax", l->qmax);
        cJSON_AddNumberToObject(w, "rows", l->L.rows);
        cJSON_AddNumberToObject(w, "group", (double)l->L.G);
        cJSON_AddItemToObject(w, "scale", put_floats(b, l->scale, (size_t)l->n_scales));
        cJSON_AddItemToObject(w, "zero_point", put_ints(b, l->zero_point, (size_t)l->n_scales));
        cJSON_AddItemToObject(w, "codes", put_codes(b, l->codes, l->numel, l->wbits, l->qmin));
    } else {
        cJSON_AddNumberToObject(w, "rows", l->cb_rows);
        cJSON_AddNumberToObject(w, "ncodes", l->ncodes);
        cJSON_AddItemToObject(w, "alpha", put_floats(b, &l->alpha, 1));
        cJSON_AddItemToObject(w, "codebook", put_floats(b, l->codebook, (size_t)l->cb_rows * (size_t)l->ncodes));
        cJSON_AddItemToObject(w, "codes", put_codes(b, l->codes, l->numel, l->wbits, 0));
    }
    return w;
}

static cJSON *input_json(blobs *b, const nb_xlayer *l) {
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "kind", akind_names[l->akind]);
    cJSON_AddStringToObject(a, "method", l->amethod);
    if (l->akind == NB_XA_NONE) return a;
    cJSON_AddNumberToObject(a, "bits", l->abits);
    cJSON_AddItemToObject(a, "scale", put_floats(b, &l->ascale, 1));
    if (l->akind == NB_XA_UNIFORM) {
        cJSON_AddNumberToObject(a, "qmin", l->aqmin);
        cJSON_AddNumberToObject(a, "qmax", l->aqmax);
        cJSON_AddNumberToObject(a, "zero_point", l->azero);
        cJSON_AddItemToObject(a, "offset", put_floats(b, &l->aoffset, 1));
    } else {
        cJSON_AddItemToObject(a, "thresholds", put_floats(b, l->thr, (size_t)l->n_thr));
    }
    return a;
}

static char *model_json(const nb_xmodel *x) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "arch", x->arch);
    cJSON_AddNumberToObject(m, "num_classes", x->opts.num_classes);
    cJSON_AddNumberToObject(m, "in_channels", x->opts.in_channels);
    cJSON_AddNumberToObject(m, "input_size", x->opts.input_size);
    cJSON_AddNumberToObject(m, "shortcut", x->opts.shortcut);
    cJSON_AddNumberToObject(m, "stem", x->opts.stem);
    cJSON_AddNumberToObject(m, "width", x->opts.width);
    cJSON_AddItemToObject(m, "mean", cJSON_CreateFloatArray(x->mean, x->n_norm));
    cJSON_AddItemToObject(m, "std", cJSON_CreateFloatArray(x->std, x->n_norm));
    char *s = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    return s;
}

static int write_attr_str(hid_t f, const char *name, const char *v) {
    hid_t t = nb_h5_vlen_str_type();
    if (t < 0) return 0;
    const int ok = nb_h5_write_attr(f, name, t, t, 0, 1, &v);
    H5Tclose(t);
    return ok;
}

static int write_blob(hid_t f, const char *name, hid_t ftype, hid_t mtype, const void *data, size_t n) {
    const hsize_t dims[1] = {n};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    if (sp < 0) return 0;
    hid_t d = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int ok = d >= 0 && (n == 0 || H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return ok;
}

nb_status nb_export_write_packed(const nb_xmodel *x, const char *path) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= sizeof tmp)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%.64s...: path too long", path);
    blobs b = {0};
    cJSON *layers = cJSON_CreateArray();
    for (int i = 0; i < x->n_layers; i++) {
        const nb_xlayer *l = &x->layers[i];
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "name", l->name);
        cJSON_AddStringToObject(r, "kind", l->is_conv ? "conv" : "linear");
        const int shape[4] = {l->oc, l->ic, l->kh, l->kw};
        cJSON_AddItemToObject(r, "shape", cJSON_CreateIntArray(shape, l->is_conv ? 4 : 2));
        cJSON_AddNumberToObject(r, "stride", l->stride);
        cJSON_AddNumberToObject(r, "pad", l->pad);
        cJSON_AddItemToObject(r, "weight", weight_json(&b, l));
        cJSON_AddItemToObject(r, "mul", put_floats(&b, l->mul, (size_t)l->oc));
        cJSON_AddItemToObject(r, "bias", put_floats(&b, l->bias, (size_t)l->oc));
        cJSON_AddItemToObject(r, "input", input_json(&b, l));
        cJSON_AddItemToArray(layers, r);
    }
    char *ltext = cJSON_PrintUnformatted(layers), *mtext = model_json(x);
    cJSON_Delete(layers);
    nb_status st = NB_OK;
    if (b.oom || !ltext || !mtext) st = nb_set_error(NB_STATUS_OOM, "%s: out of memory", path);
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    hid_t f = st == NB_OK ? nb_h5_mem_create(tmp) : H5I_INVALID_HID;
    if (st == NB_OK) {
        const int32_t version = NB_PACKED_VERSION;
        int ok = f >= 0 && write_attr_str(f, "nb_format", NB_PACKED_FORMAT) &&
                 nb_h5_write_attr(f, "nb_version", H5T_STD_I32LE, H5T_NATIVE_INT32, 0, 1, &version) &&
                 write_attr_str(f, "model", mtext) && write_attr_str(f, "layers", ltext) &&
                 (!x->config_json || write_attr_str(f, "config", x->config_json)) &&
                 write_blob(f, "codes", H5T_STD_U8LE, H5T_NATIVE_UINT8, b.codes, b.n_codes) &&
                 write_blob(f, "floats", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, b.floats, b.n_floats) &&
                 write_blob(f, "ints", H5T_STD_I32LE, H5T_NATIVE_INT32, b.ints, b.n_ints) &&
                 H5Fflush(f, H5F_SCOPE_GLOBAL) >= 0;
        if (!ok) {
            char d[256];
            st = nb_set_error(NB_STATUS_IO, "%s: cannot write (%s)", path, nb_h5_error_detail(d, sizeof d));
        }
    }
    if (st == NB_OK) st = nb_h5_mem_write(path, tmp, f);
    if (f >= 0) H5Fclose(f);
    if (st == NB_OK && rename(tmp, path) != 0)
        st = nb_set_error(NB_STATUS_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    if (st != NB_OK && f >= 0) unlink(tmp);
    nb_h5_quiet_end(&q);
    cJSON_free(ltext);
    cJSON_free(mtext);
    nb_free(b.codes);
    nb_free(b.floats);
    nb_free(b.ints);
    return st;
}

/* ------------------------------------------------------------------- read */

/* The reader's state: the file's blobs and the path for messages. */
typedef struct {
    const char *path;
    uint8_t *codes;
    size_t n_codes;
    float *floats;
    size_t n_floats;
    int32_t *ints;
    size_t n_ints;
} reader;

__attribute__((format(printf, 3, 4))) static nb_status bad(const reader *r, const char *layer, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nb_set_error(NB_STATUS_BAD_INPUT, "%s: layer %s: %s", r->path, layer, msg);
}

/* An integer field of o (must be present, integral, within [lo, hi]). */
static nb_status get_int(const reader *r, const char *layer, const cJSON *o, const char *key, long lo, long hi,
                         int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return bad(r, layer, "%s is missing or not a number", key);
    const double d = v->valuedouble;
    if (d != floor(d) || d < (double)lo || d > (double)hi)
        return bad(r, layer, "%s must be an integer in [%ld, %ld]", key, lo, hi);
    *out = (int)d;
    return NB_OK;
}

static const char *get_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The slice o[key] = [offset, count] of a blob of size total, count must be n. */
static nb_status get_slice(const reader *r, const char *layer, const cJSON *o, const char *key, size_t total,
                           size_t n, size_t *off) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    const cJSON *a = cJSON_GetArrayItem(v, 0), *c = cJSON_GetArrayItem(v, 1);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || !cJSON_IsNumber(a) || !cJSON_IsNumber(c))
        return bad(r, layer, "%s is missing (expected [offset, count])", key);
    if (c->valuedouble != (double)n)
        return bad(r, layer, "%s has %ld values, the layer needs %zu", key, (long)c->valuedouble, n);
    if (a->valuedouble < 0 || a->valuedouble != floor(a->valuedouble) || a->valuedouble + (double)n > (double)total)
        return bad(r, layer, "%s: [%ld, %zu] lies outside its blob of %zu", key, (long)a->valuedouble, n, total);
    *off = (size_t)a->valuedouble;
    return NB_OK;
}

/* n floats from the /floats slice o[key], all finite (and > 0 with positive). */
static nb_status get_floats(const reader *r, const char *layer, const cJSON *o, const char *key, size_t n,
                            int positive, float **out) {
    size_t off;
    nb_status st = get_slice(r, layer, o, key, r->n_floats, n, &off);
    if (st != NB_OK) return st;
    for (size_t i = 0; i < n; i++) {
        const float v = r->floats[off + i];
        if (!isfinite(v) || (positive && !(v > 0.0f)))
            return bad(r, layer, "%s[%zu] is %g: %s", key, i, (double)v, positive ? "must be finite and > 0" : "not finite");
    }
    if (!(*out = nb_malloc((n ? n : 1) * sizeof(float))))
        return nb_set_error(NB_STATUS_OOM, "%s: out of memory", r->path);
    memcpy(*out, r->floats + off, n * sizeof(float));
    return NB_OK;
}

static nb_status get_codes(const reader *r, nb_xlayer *l, const cJSON *w, int base, int hi) {
    size_t off;
    const size_t bytes = (l->numel * (size_t)l->wbits + 7) / 8;
    nb_status st = get_slice(r, l->name, w, "codes", r->n_codes, bytes, &off);
    if (st != NB_OK) return st;
    if (!(l->codes = nb_malloc(l->numel * sizeof(int32_t))))
        return nb_set_error(NB_STATUS_OOM, "%s: out of memory", r->path);
    unpack(r->codes + off, l->numel, l->wbits, base, l->codes);
    for (size_t i = 0; i < l->numel; i++)
        if (l->codes[i] > hi)
            return bad(r, l->name, "weight code %zu is %ld, beyond the range (at most %d)", i, (long)l->codes[i], hi);
    return NB_OK;
}

static nb_status read_weight(const reader *r, nb_xlayer *l, const cJSON *w) {
    const char *kind = get_str(w, "kind"), *method = get_str(w, "method");
    snprintf(l->wmethod, sizeof l->wmethod, "%s", method ? method : "?");
    nb_status st;
    if (kind && !strcmp(kind, "float")) {
        l->wkind = NB_XW_FLOAT;
        return get_floats(r, l->name, w, "values", l->numel, 0, &l->wfloat);
    }
    if (!kind || (strcmp(kind, "uniform") && strcmp(kind, "codebook")))
        return bad(r, l->name, "weight.kind must be float, uniform or codebook");
    const char *gran = get_str(w, "granularity");
    l->gran = !gran ? NB_QG_COUNT : !strcmp(gran, "tensor") ? NB_QG_TENSOR : !strcmp(gran, "channel") ? NB_QG_CHANNEL
                                   : !strcmp(gran, "group") ? NB_QG_GROUP : NB_QG_COUNT;
    if (l->gran == NB_QG_COUNT)
        return bad(r, l->name, "weight.granularity must be tensor, channel or group");
    if ((st = get_int(r, l->name, w, "bits", 1, 8, &l->wbits)) != NB_OK) return st;
    if (!strcmp(kind, "codebook")) {
        l->wkind = NB_XW_CODEBOOK;
        if ((st = get_int(r, l->name, w, "ncodes", 2, 256, &l->ncodes)) != NB_OK ||
            (st = get_int(r, l->name, w, "rows", 1, l->oc, &l->cb_rows)) != NB_OK)
            return st;
        if (l->cb_rows != 1 && l->cb_rows != l->oc)
            return bad(r, l->name, "weight.rows is %d: 1 or the %d output channels", l->cb_rows, l->oc);
        if (l->wbits != nb_xbits(l->ncodes))
            return bad(r, l->name, "weight.bits is %d, but %d codes take %d bits", l->wbits, l->ncodes,
                       nb_xbits(l->ncodes));
        float *alpha = NULL;
        if ((st = get_floats(r, l->name, w, "alpha", 1, 1, &alpha)) != NB_OK) return st;
        l->alpha = alpha[0];
        nb_free(alpha);
        if ((st = get_floats(r, l->name, w, "codebook", (size_t)l->cb_rows * (size_t)l->ncodes, 0, &l->codebook)) !=
            NB_OK)
            return st;
        for (int row = 0; row < l->cb_rows; row++)
            for (int k = 1; k < l->ncodes; k++)
                if (!(l->codebook[row * l->ncodes + k] > l->codebook[row * l->ncodes + k - 1]))
                    return bad(r, l->name, "weight.codebook row %d is not ascending at code %d", row, k);
        l->L = (nb_fq_layout){l->cb_rows, l->numel / (size_t)l->cb_rows, l->numel / (size_t)l->cb_rows};
        return get_codes(r, l, w, 0, l->ncodes - 1);
    }
    l->wkind = NB_XW_UNIFORM;
    int rows = 1, group = 1;
    if ((st = get_int(r, l->name, w, "qmin", -128, 255, &l->qmin)) != NB_OK ||
        (st = get_int(r, l->name, w, "qmax", l->qmin + 1, 255, &l->qmax)) != NB_OK ||
        (st = get_int(r, l->name, w, "rows", 1, l->oc, &rows)) != NB_OK ||
        (st = get_int(r, l->name, w, "group", 1, (long)l->numel, &group)) != NB_OK)
        return st;
    if (l->wbits != nb_xbits((long)l->qmax - l->qmin + 1))
        return bad(r, l->name, "weight.bits is %d, but the grid [%d, %d] takes %d bits", l->wbits, l->qmin,
                   l->qmax, nb_xbits((long)l->qmax - l->qmin + 1));
    if ((rows != 1 && rows != l->oc) || (size_t)group > l->numel / (size_t)rows)
        return bad(r, l->name, "weight.rows %d / group %d do not fit the weight", rows, group);
    l->L = (nb_fq_layout){rows, l->numel / (size_t)rows, (size_t)group};
    l->n_scales = (int)nb_fq_layout_scales(&l->L);
    if ((st = get_floats(r, l->name, w, "scale", (size_t)l->n_scales, 1, &l->scale)) != NB_OK) return st;
    size_t off;
    if ((st = get_slice(r, l->name, w, "zero_point", r->n_ints, (size_t)l->n_scales, &off)) != NB_OK) return st;
    if (!(l->zero_point = nb_malloc((size_t)l->n_scales * sizeof(int32_t))))
        return nb_set_error(NB_STATUS_OOM, "%s: out of memory", r->path);
    for (int j = 0; j < l->n_scales; j++) {
        l->zero_point[j] = r->ints[off + (size_t)j];
        if (l->zero_point[j] < l->qmin || l->zero_point[j] > l->qmax)
            return bad(r, l->name, "weight.zero_point[%d] = %d is outside the grid [%d, %d]", j, (int)l->zero_point[j], l->qmin, l->qmax);
    }
    return get_codes(r, l, w, l->qmin, l->qmax);
}

static nb_status read_input(const reader *r, nb_xlayer *l, const cJSON *a) {
    const char *kind = get_str(a, "kind"), *method = get_str(a, "method");
    snprintf(l->amethod, sizeof l->amethod, "%s", method ? method : "?");
    if (!kind || (strcmp(kind, "none") && strcmp(kind, "uniform") && strcmp(kind, "n2uq")))
        return bad(r, l->name, "input.kind must be none, uniform or n2uq");
    if (!strcmp(kind, "none")) {
        l->akind = NB_XA_NONE;
        return NB_OK;
    }
    nb_status st;
    float *v = NULL;
    if ((st = get_int(r, l->name, a, "bits", 1, 8, &l->abits)) != NB_OK ||
        (st = get_floats(r, l->name, a, "scale", 1, 1, &v)) != NB_OK)
        return st;
    l->ascale = v[0];
    nb_free(v);
    if (!strcmp(kind, "n2uq")) {
        l->akind = NB_XA_N2UQ;
        l->n_thr = (1 << l->abits) - 1;
        l->aqmin = 0;
        l->aqmax = l->n_thr;
        if ((st = get_floats(r, l->name, a, "thresholds", (size_t)l->n_thr, 0, &l->thr)) != NB_OK) return st;
        for (int i = 1; i < l->n_thr; i++)
            if (!(l->thr[i] > l->thr[i - 1]))
                return bad(r, l->name, "input.thresholds[%d] is not above the one before", i);
        return NB_OK;
    }
    l->akind = NB_XA_UNIFORM;
    if ((st = get_int(r, l->name, a, "qmin", -128, 255, &l->aqmin)) != NB_OK ||
        (st = get_int(r, l->name, a, "qmax", l->aqmin + 1, 255, &l->aqmax)) != NB_OK ||
        (st = get_int(r, l->name, a, "zero_point", l->aqmin, l->aqmax, &l->azero)) != NB_OK)
        return st;
    if (l->abits != nb_xbits((long)l->aqmax - l->aqmin + 1))
        return bad(r, l->name, "input.bits is %d, but the grid [%d, %d] takes %d bits", l->abits, l->aqmin,
                   l->aqmax, nb_xbits((long)l->aqmax - l->aqmin + 1));
    if ((st = get_floats(r, l->name, a, "offset", 1, 0, &v)) != NB_OK) return st;
    l->aoffset = v[0];
    nb_free(v);
    return NB_OK;
}

/* Layer i from record o, against the architecture's module mod. */
static nb_status read_layer(const reader *r, nb_xlayer *l, const cJSON *o, const nb_module *mod) {
    const char *name = get_str(o, "name");
    snprintf(l->name, sizeof l->name, "%s", name ? name : "?");
    if (!name || strcmp(name, mod->name))
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: layer %s: the architecture has %s here", r->path, l->name,
                            mod->name);
    const nb_tensor *w = nb_module_weight((nb_module *)mod);
    nb_xlayer_geometry(l, mod);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(o, "shape");
    int ok = cJSON_IsArray(shape) && cJSON_GetArraySize(shape) == w->ndim;
    for (int d = 0; ok && d < w->ndim; d++) {
        const cJSON *v = cJSON_GetArrayItem(shape, d);
        ok = cJSON_IsNumber(v) && v->valuedouble == (double)w->shape[d];
    }
    if (!ok) {
        char want[64];
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: layer %s: shape is not the architecture's %s", r->path,
                            l->name, nb_shape_str(w, want, sizeof want));
    }
    const cJSON *wj = cJSON_GetObjectItemCaseSensitive(o, "weight"), *aj = cJSON_GetObjectItemCaseSensitive(o, "input");
    if (!cJSON_IsObject(wj) || !cJSON_IsObject(aj))
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: layer %s: weight or input record missing", r->path, l->name);
    nb_status st;
    if ((st = read_weight(r, l, wj)) != NB_OK || (st = read_input(r, l, aj)) != NB_OK ||
        (st = get_floats(r, l->name, o, "mul", (size_t)l->oc, 0, &l->mul)) != NB_OK ||
        (st = get_floats(r, l->name, o, "bias", (size_t)l->oc, 0, &l->bias)) != NB_OK)
        return st;
    return NB_OK;
}

/* A 1-D dataset of f into a fresh buffer. */
static nb_status read_blob(const char *path, hid_t f, const char *name, hid_t mtype, size_t size, void **out,
                           size_t *n) {
    char d[256];
    hid_t ds = H5Lexists(f, name, H5P_DEFAULT) > 0 ? H5Dopen2(f, name, H5P_DEFAULT) : H5I_INVALID_HID;
    if (ds < 0) return nb_set_error(NB_STATUS_BAD_INPUT, "%s: the dataset /%s is missing", path, name);
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[1] = {0};
    nb_status st = NB_OK;
    if (sp < 0 || H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_dims(sp, dims, NULL) != 1)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: /%s must be one-dimensional (it is %s)", path, name,
                          sp >= 0 ? nb_h5_space_str(sp, d, sizeof d) : "unreadable");
    else if (!(*out = nb_malloc(dims[0] ? (size_t)dims[0] * size : 1)))
        st = nb_set_error(NB_STATUS_OOM, "%s: out of memory for /%s", path, name);
    else if (dims[0] && H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot read /%s (%s)", path, name,
                          nb_h5_error_detail(d, sizeof d));
    *n = (size_t)dims[0];
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return st;
}

static nb_status read_text_attr(const char *path, hid_t f, const char *name, int required, char **out) {
    *out = NULL;
    if (H5Aexists(f, name) <= 0)
        return required ? nb_set_error(NB_STATUS_BAD_INPUT, "%s: the root attribute %s is missing", path, name)
                        : NB_OK;
    return nb_h5_attr_string(path, f, name, out);
}

/* The architecture named by the model record, built (weights unused) for
 * its layer shapes and graph. */
static nb_status model_from_json(const char *path, const char *text, nb_xmodel *x, nb_model **out) {
    cJSON *m = cJSON_Parse(text);
    if (!cJSON_IsObject(m)) {
        cJSON_Delete(m);
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: the model attribute is not a JSON object", path);
    }
    const char *arch = get_str(m, "arch");
    nb_model_opts o = nb_model_opts_default();
    struct {
        const char *key;
        int *v;
        long lo, hi;
    } f[] = {{"num_classes", &o.num_classes, 1, 100000}, {"in_channels", &o.in_channels, 1, 4},
             {"input_size", &o.input_size, 1, 4096},      {"shortcut", (int *)&o.shortcut, 0, NB_SHORTCUT_COUNT - 1},
             {"stem", (int *)&o.stem, 0, NB_STEM_COUNT - 1}, {"width", &o.width, 1, 4096}};
    reader r = {.path = path};
    nb_status st = arch ? NB_OK : nb_set_error(NB_STATUS_BAD_INPUT, "%s: model.arch is missing", path);
    for (size_t i = 0; st == NB_OK && i < sizeof f / sizeof f[0]; i++)
        st = get_int(&r, "(model)", m, f[i].key, f[i].lo, f[i].hi, f[i].v);
    const cJSON *mean = cJSON_GetObjectItemCaseSensitive(m, "mean"), *sd = cJSON_GetObjectItemCaseSensitive(m, "std");
    x->n_norm = cJSON_GetArraySize(mean);
    if (st == NB_OK && (x->n_norm > 4 || cJSON_GetArraySize(sd) != x->n_norm))
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: model.mean and model.std must list one value per channel", path);
    for (int c = 0; st == NB_OK && c < x->n_norm; c++) {
        x->mean[c] = (float)cJSON_GetArrayItem(mean, c)->valuedouble;
        x->std[c] = (float)cJSON_GetArrayItem(sd, c)->valuedouble;
    }
    if (st == NB_OK) {
        nb_rng rng;
        nb_rng_seed(&rng, 0, 0);
        if (!(*out = nb_model_build(arch, &o, &rng)))
            st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: model: %s", path, nb_last_error());
    }
    cJSON_Delete(m);
    return st;
}

nb_status nb_export_read_packed(const char *path, nb_xmodel **out) {
    *out = NULL;
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    nb_xmodel *x = nb_calloc(1, sizeof *x);
    reader r = {.path = path};
    nb_model *m = NULL;
    nb_gnode *g = NULL;
    char *fmt = NULL, *mtext = NULL, *ltext = NULL;
    cJSON *layers = NULL;
    nb_status st = NB_OK;
    if (!x) st = nb_set_error(NB_STATUS_OOM, "%s: out of memory", path);
    else if (f < 0)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: not an HDF5 file (or unreadable)", path);
    else if ((st = read_text_attr(path, f, "nb_format", 1, &fmt)) == NB_OK && strcmp(fmt, NB_PACKED_FORMAT))
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: nb_format is \"%s\", not a packed export (\"%s\")", path, fmt,
                          NB_PACKED_FORMAT);
    int version = 0;
    if (st == NB_OK && (st = nb_h5_attr_int(path, f, "nb_version", &version)) == NB_OK && version != NB_PACKED_VERSION)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: nb_version %d, this nibble reads %d", path, version,
                          NB_PACKED_VERSION);
    if (st == NB_OK && (st = read_text_attr(path, f, "model", 1, &mtext)) == NB_OK &&
        (st = read_text_attr(path, f, "layers", 1, &ltext)) == NB_OK)
        st = read_text_attr(path, f, "config", 0, &x->config_json);
    if (st == NB_OK) st = read_blob(path, f, "codes", H5T_NATIVE_UINT8, 1, (void **)&r.codes, &r.n_codes);
    if (st == NB_OK) st = read_blob(path, f, "floats", H5T_NATIVE_FLOAT, sizeof(float), (void **)&r.floats, &r.n_floats);
    if (st == NB_OK) st = read_blob(path, f, "ints", H5T_NATIVE_INT32, sizeof(int32_t), (void **)&r.ints, &r.n_ints);
    if (st == NB_OK) st = model_from_json(path, mtext, x, &m);
    if (st == NB_OK) st = nb_xmodel_graph(x, m, &g);
    if (st == NB_OK) {
        layers = cJSON_Parse(ltext);
        int nl = 0;
        for (int i = 0; i < x->n_nodes; i++) nl += x->nodes[i].layer >= 0;
        if (!cJSON_IsArray(layers))
            st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: the layers attribute is not a JSON array", path);
        else if (cJSON_GetArraySize(layers) != nl)
            st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: %d layer records, %s has %d conv/linear layers", path,
                              cJSON_GetArraySize(layers), x->arch, nl);
    }
    for (int i = 0; st == NB_OK && i < x->n_nodes; i++) {
        if (x->nodes[i].layer < 0) continue;
        st = read_layer(&r, &x->layers[x->n_layers], cJSON_GetArrayItem(layers, x->n_layers), g[i].mod);
        x->n_layers++;
    }
    cJSON_Delete(layers);
    nb_free(g);
    nb_model_free(m);
    nb_free(fmt);
    nb_free(mtext);
    nb_free(ltext);
    nb_free(r.codes);
    nb_free(r.floats);
    nb_free(r.ints);
    if (f >= 0) H5Fclose(f);
    nb_h5_quiet_end(&q);
    if (st != NB_OK) {
        nb_xmodel_free(x);
        return st;
    }
    *out = x;
    return NB_OK;
}

int nb_export_is_packed(const char *path) {
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    char *fmt = NULL;
    int yes = f >= 0 && H5Aexists(f, "nb_format") > 0 && nb_h5_attr_string(path, f, "nb_format", &fmt) == NB_OK &&
              !strcmp(fmt, NB_PACKED_FORMAT);
    nb_free(fmt);
    if (f >= 0) H5Fclose(f);
    nb_h5_quiet_end(&q);
    return yes;
}

/* ---------------------------------------------------------------- summary */

double nb_export_summary(const nb_xmodel *x, FILE *f) {
    fprintf(f, "%-24s %-9s %-22s %-18s %10s %10s\n", "layer", "shape", "weights", "input", "params", "bytes");
    double bytes = 0.0, fp32 = 0.0;
    for (int i = 0; i < x->n_layers; i++) {
        const nb_xlayer *l = &x->layers[i];
        char shape[32], w[48], a[48];
        snprintf(shape, sizeof shape, "%dx%dx%dx%d", l->oc, l->ic, l->kh, l->kw);
        if (l->wkind == NB_XW_FLOAT) snprintf(w, sizeof w, "float32");
        else if (l->wkind == NB_XW_UNIFORM)
            snprintf(w, sizeof w, "%s %d-bit %s [%d,%d]", l->wmethod, l->wbits, nb_qgran_name(l->gran), l->qmin,
                     l->qmax);
        else
            snprintf(w, sizeof w, "%s %d codes %d-bit %s", l->wmethod, l->ncodes, l->wbits, nb_qgran_name(l->gran));
        if (l->akind == NB_XA_NONE) snprintf(a, sizeof a, "float32");
        else
            snprintf(a, sizeof a, "%s %d-bit [%d,%d]", l->amethod, l->abits, l->aqmin, l->aqmax);
        /* the codes plus every float and int the layer stores */
        double lb = (double)nb_xlayer_code_bytes(l) + 8.0 * l->oc;
        if (l->wkind == NB_XW_UNIFORM) lb += 8.0 * l->n_scales;
        if (l->wkind == NB_XW_CODEBOOK) lb += 4.0 * ((double)l->cb_rows * l->ncodes + 1);
        if (l->akind != NB_XA_NONE) lb += 8.0 + 4.0 * l->n_thr;
        bytes += lb;
        fp32 += 4.0 * ((double)l->numel + l->oc);
        fprintf(f, "%-24s %-9s %-22s %-18s %10zu %10.0f\n", l->name, shape, w, a, l->numel, lb);
    }
    fprintf(f, "%s: %d layers, %.0f bytes of weights, scales and biases against %.0f in FP32 (weights and folded "
               "biases): %.2fx smaller\n",
            x->arch, x->n_layers, bytes, fp32, fp32 / (bytes > 0.0 ? bytes : 1.0));
    return fp32;
}
