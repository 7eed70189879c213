/* Small HDF5 helpers: quiet error stacks, readable type and shape names,
 * attribute writing. */
#include <stdio.h>
#include <string.h>

#include "h5_util.h"

void nb_h5_quiet_begin(nb_h5_quiet *q) {
    q->fn = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->fn, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void nb_h5_quiet_end(const nb_h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->fn, q->data); }

typedef struct {
    char *buf;
    size_t n;
} detail_ctx;

static herr_t keep_innermost(unsigned n, const H5E_error2_t *e, void *user) {
    (void)n;
    detail_ctx *c = user;
    /* Walking downward, the last entry is the innermost cause. A failed
     * system call's entry is a multi-line dump ("file write failed: time =
     * ...\n, ..., error message = 'No space left on device', buf = ..."):
     * keep only the system's message. */
    const char *m = e->desc ? strstr(e->desc, "error message = '") : NULL;
    if (m) {
        m += strlen("error message = '");
        const char *end = strchr(m, '\'');
        snprintf(c->buf, c->n, "%.*s", end ? (int)(end - m) : (int)strlen(m), m);
    } else if (e->desc && e->desc[0]) {
        snprintf(c->buf, c->n, "%s", e->desc);
        for (char *p = c->buf; *p; p++)
            if (*p == '\n') *p = ' ';
    }
    return 0;
}

const char *nb_h5_error_detail(char *buf, size_t n) {
    if (n == 0) return buf;
    buf[0] = '\0';
    detail_ctx c = {buf, n};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, keep_innermost, &c);
    return buf;
}

const char *nb_h5_type_name(hid_t type, char *buf, size_t n) {
    size_t size = H5Tget_size(type);
    switch (H5Tget_class(type)) {
    case H5T_INTEGER:
        snprintf(buf, n, "%s%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int", size * 8);
        break;
    case H5T_FLOAT: snprintf(buf, n, "float%zu", size * 8); break;
    case H5T_STRING: snprintf(buf, n, "string"); break;
    case H5T_COMPOUND: snprintf(buf, n, "compound"); break;
    case H5T_ENUM: snprintf(buf, n, "enum"); break;
    case H5T_ARRAY: snprintf(buf, n, "array"); break;
    case H5T_VLEN: snprintf(buf, n, "vlen"); break;
    case H5T_OPAQUE: snprintf(buf, n, "opaque"); break;
    case H5T_BITFIELD: snprintf(buf, n, "bitfield%zu", size * 8); break;
    case H5T_REFERENCE: snprintf(buf, n, "reference"); break;
    default: snprintf(buf, n, "unknown type"); break;
    }
    return buf;
}

const char *nb_h5_dims_str(int rank, const hsize_t *dims, char *buf, size_t n) {
    if (rank == 0) {
        snprintf(buf, n, "scalar");
        return buf;
    }
    size_t len = 0;
    len += (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < rank && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%llu%s", i ? ", " : "",
                                (unsigned long long)dims[i], rank == 1 ? "," : "");
    if (len < n) snprintf(buf + len, n - len, ")");
    return buf;
}

const char *nb_h5_space_str(hid_t space, char *buf, size_t n) {
    int rank = H5Sget_simple_extent_ndims(space);
    if (rank < 0) {
        snprintf(buf, n, "(unknown shape)");
        return buf;
    }
    hsize_t dims[H5S_MAX_RANK];
    if (rank > 0) H5Sget_simple_extent_dims(space, dims, NULL);
    return nb_h5_dims_str(rank, dims, buf, n);
}

hid_t nb_h5_vlen_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

int nb_h5_write_attr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank, hsize_t n,
                     const void *buf) {
    hid_t sp = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    hid_t a = sp < 0 ? H5I_INVALID_HID : H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, mtype, buf) >= 0;
    /* Every HDF5 call, the closes too, clears the error stack: set the
     * failure's aside so the caller's message can still give the reason. */
    hid_t err = ok ? H5I_INVALID_HID : H5Eget_current_stack();
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    if (err >= 0) H5Eset_current_stack(err);
    return ok;
}
