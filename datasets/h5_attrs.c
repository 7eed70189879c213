/* Reading the schema's root attributes with checks that name the file, the
 * attribute, its type and its shape. Callers hold an nb_h5_quiet scope. */
#include <string.h>

#include "internal.h"

#define SCHEMA_HINT "(the schema needs name, classes, mean, std, height, width, channels)"

static nb_status attr_open(const char *path, hid_t loc, const char *name, hid_t *attr,
                           hid_t *type, hid_t *space) {
    *attr = *type = *space = H5I_INVALID_HID;
    if (H5Aexists(loc, name) <= 0)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: missing root attribute '%s' " SCHEMA_HINT,
                            path, name);
    *attr = H5Aopen(loc, name, H5P_DEFAULT);
    if (*attr >= 0) *type = H5Aget_type(*attr);
    if (*type >= 0) *space = H5Aget_space(*attr);
    if (*attr < 0 || *type < 0 || *space < 0) {
        char d[256];
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot open root attribute '%s' (%s)", path,
                            name, nb_h5_error_detail(d, sizeof d));
    }
    return NB_OK;
}

static void attr_close(hid_t attr, hid_t type, hid_t space) {
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (attr >= 0) H5Aclose(attr);
}

/* Check class and element count; count < 0 means "a rank-0/1 array of any
 * length from 1 to -count". Reports the attribute's actual type/shape. */
static nb_status attr_check(const char *path, const char *name, hid_t type, hid_t space,
                            H5T_class_t want, const char *want_str, long count, hssize_t *got) {
    char t[64], s[64];
    if (H5Tget_class(type) != want)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: root attribute '%s' has type %s, expected %s",
                            path, name, nb_h5_type_name(type, t, sizeof t), want_str);
    int rank = H5Sget_simple_extent_ndims(space);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    int ok = rank >= 0 && rank <= 1 && n >= 1 &&
             (count > 0 ? n == (hssize_t)count : n <= (hssize_t)-count);
    if (!ok) {
        if (count > 0 && want != H5T_FLOAT)
            return nb_set_error(NB_STATUS_BAD_INPUT,
                                "%s: root attribute '%s' has shape %s, expected a scalar", path,
                                name, nb_h5_space_str(space, s, sizeof s));
        if (count > 0)
            return nb_set_error(NB_STATUS_BAD_INPUT,
                                "%s: root attribute '%s' has shape %s, expected %ld value%s (one "
                                "per channel)",
                                path, name, nb_h5_space_str(space, s, sizeof s), count,
                                count == 1 ? "" : "s");
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "%s: root attribute '%s' has shape %s, expected 1 to %ld values", path,
                            name, nb_h5_space_str(space, s, sizeof s), -count);
    }
    *got = n;
    return NB_OK;
}

static nb_status read_failed(const char *path, const char *name) {
    char d[256];
    return nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot read root attribute '%s' (%s)", path, name,
                        nb_h5_error_detail(d, sizeof d));
}

nb_status nb_h5_attr_int(const char *path, hid_t loc, const char *name, int *v) {
    hid_t a, t, s;
    hssize_t n;
    nb_status st = attr_open(path, loc, name, &a, &t, &s);
    if (st == NB_OK) st = attr_check(path, name, t, s, H5T_INTEGER, "an integer", 1, &n);
    if (st == NB_OK && H5Aread(a, H5T_NATIVE_INT, v) < 0) st = read_failed(path, name);
    attr_close(a, t, s);
    return st;
}

nb_status nb_h5_attr_floats(const char *path, hid_t loc, const char *name, int count,
                            float *out) {
    hid_t a, t, s;
    hssize_t n;
    nb_status st = attr_open(path, loc, name, &a, &t, &s);
    if (st == NB_OK) st = attr_check(path, name, t, s, H5T_FLOAT, "float32", count, &n);
    if (st == NB_OK && H5Aread(a, H5T_NATIVE_FLOAT, out) < 0) st = read_failed(path, name);
    attr_close(a, t, s);
    return st;
}

/* Read n strings (variable or fixed length) into nb_strdup'ed copies. */
static nb_status read_strings(const char *path, const char *name, hid_t a, hid_t t, hid_t s,
                              size_t n, char **out) {
    nb_status st = NB_OK;
    hid_t mt = H5I_INVALID_HID;
    if (H5Tis_variable_str(t) > 0) {
        char **buf = nb_calloc(n, sizeof(char *));
        if (!buf) return NB_STATUS_OOM;
        mt = nb_h5_vlen_str_type();
        H5Tset_cset(mt, H5Tget_cset(t));
        if (H5Aread(a, mt, buf) < 0) {
            st = read_failed(path, name);
        } else {
            for (size_t i = 0; i < n; i++)
                if (!(out[i] = nb_strdup(buf[i] ? buf[i] : ""))) st = NB_STATUS_OOM;
            H5Dvlen_reclaim(mt, s, H5P_DEFAULT, buf);
        }
        nb_free(buf);
    } else {
        size_t size = H5Tget_size(t);
        char *buf = nb_calloc(n, size + 1);
        if (!buf) return NB_STATUS_OOM;
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, size + 1);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        H5Tset_cset(mt, H5Tget_cset(t));
        if (H5Aread(a, mt, buf) < 0) {
            st = read_failed(path, name);
        } else {
            for (size_t i = 0; i < n; i++) {
                buf[i * (size + 1) + size] = '\0';
                if (!(out[i] = nb_strdup(buf + i * (size + 1)))) st = NB_STATUS_OOM;
            }
        }
        nb_free(buf);
    }
    H5Tclose(mt);
    return st;
}

nb_status nb_h5_attr_string(const char *path, hid_t loc, const char *name, char **out) {
    hid_t a, t, s;
    hssize_t n;
    *out = NULL;
    nb_status st = attr_open(path, loc, name, &a, &t, &s);
    if (st == NB_OK) st = attr_check(path, name, t, s, H5T_STRING, "a string", 1, &n);
    if (st == NB_OK) st = read_strings(path, name, a, t, s, 1, out);
    attr_close(a, t, s);
    return st;
}

nb_status nb_h5_attr_strings(const char *path, hid_t loc, const char *name, int max_count,
                             char ***out, int *count) {
    hid_t a, t, s;
    hssize_t n = 0;
    *out = NULL;
    *count = 0;
    nb_status st = attr_open(path, loc, name, &a, &t, &s);
    if (st == NB_OK)
        st = attr_check(path, name, t, s, H5T_STRING, "an array of strings", -(long)max_count, &n);
    if (st == NB_OK) {
        char **v = nb_calloc((size_t)n, sizeof(char *));
        if (!v) {
            st = NB_STATUS_OOM;
        } else {
            st = read_strings(path, name, a, t, s, (size_t)n, v);
            *out = v;
            *count = (int)n; /* the caller frees all n, even after an error */
        }
    }
    attr_close(a, t, s);
    return st;
}
