/* HDF5 helpers shared by the PyTorch-oracle suites (test_torch.c,
 * test_torch_quant.c, test_torch_lsq.c): float32 datasets (groups made on
 * the way) and scalar attributes written, datasets read back, the oracle
 * script run and its answer compared. Failures fail the test. */
#ifndef NB_TEST_H5_H
#define NB_TEST_H5_H

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nb_test.h"

static inline void h5_write(hid_t f, const char *name, const float *data, int ndim, const int *shape) {
    hsize_t dims[4];
    for (int i = 0; i < ndim; i++) dims[i] = (hsize_t)shape[i];
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    hid_t d = H5Dcreate2(f, name, H5T_NATIVE_FLOAT, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_msg(d >= 0, "create %s", name);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(d);
    H5Sclose(sp);
    H5Pclose(lcpl);
}

static inline void h5_write_tensor(hid_t f, const char *name, const nb_tensor *t) {
    int shape[4];
    for (int i = 0; i < t->ndim; i++) shape[i] = t->shape[i];
    if (t->ndim == 0) {
        shape[0] = 1;
        h5_write(f, name, t->data, 1, shape);
    } else {
        h5_write(f, name, t->data, t->ndim, shape);
    }
}

static inline void h5_attr_str(hid_t f, const char *name, const char *v) {
    hid_t ty = H5Tcopy(H5T_C_S1);
    H5Tset_size(ty, strlen(v) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, ty, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, ty, v);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(ty);
}

static inline void h5_attr_num(hid_t f, const char *name, double v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_NATIVE_DOUBLE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
    H5Sclose(sp);
}

/* The dataset name as n values of type ty (elem bytes each), in a malloc'd
 * array (one spare element). */
static inline void *h5_read(hid_t f, const char *name, hid_t ty, size_t elem, size_t *n) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    ck_assert_msg(d >= 0, "oracle has no %s", name);
    hid_t sp = H5Dget_space(d);
    *n = (size_t)H5Sget_simple_extent_npoints(sp);
    void *v = calloc(*n + 1, elem);
    ck_assert_ptr_nonnull(v);
    H5Dread(d, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Sclose(sp);
    H5Dclose(d);
    return v;
}

/* The one number in dataset name. */
static inline double h5_read_num(hid_t f, const char *name) {
    size_t n;
    double *v = h5_read(f, name, H5T_NATIVE_DOUBLE, sizeof(double), &n);
    ck_assert_uint_eq(n, 1);
    const double x = v[0];
    free(v);
    return x;
}

/* Whether /usr/bin/python3 has torch, numpy and h5py: looked up, not
 * imported (the imports take seconds; the oracle does them once). */
static inline int nb_oracle_available(void) {
    return nb_test_sh("/usr/bin/python3 -c 'import importlib.util as u, sys; "
                      "sys.exit(not (u.find_spec(\"torch\") and u.find_spec(\"numpy\") and "
                      "u.find_spec(\"h5py\")))' 2>/dev/null",
                      NULL, 0) == 0;
}

/* Runs tests/<script> (under $NB_SOURCE_DIR) on the case file in; returns
 * the opened result file, or a negative id when python cannot import
 * torch, numpy or h5py after all (the script exits with 77). */
static inline hid_t nb_oracle_run(const char *script, const char *in) {
    char out[600], cmd[2048], log[4096];
    snprintf(out, sizeof out, "%s.out.h5", in);
    const char *src = getenv("NB_SOURCE_DIR");
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/%s %s %s 2>&1", src ? src : ".", script, in, out);
    int rc = nb_test_sh(cmd, log, sizeof log);
    if (rc == 77) return -1;
    ck_assert_msg(rc == 0, "oracle %s failed (%d): %s", script, rc, log);
    hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_msg(f >= 0, "cannot open %s", out);
    return f;
}

/* max |ours - torch| / max |torch| over the oracle's dataset name (n
 * values); fails at tol or above, naming what and the worst element. */
static inline double nb_oracle_close(hid_t f, const char *what, const char *name, const float *ours, size_t n,
                                     double tol) {
    size_t m;
    float *ref = h5_read(f, name, H5T_NATIVE_FLOAT, sizeof(float), &m);
    ck_assert_msg(m == n, "%s: oracle has %zu values, nibble %zu", name, m, n);
    double maxref = 0, maxdiff = 0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        const double dd = fabs((double)ours[i] - (double)ref[i]);
        maxref = fmax(maxref, fabs((double)ref[i]));
        if (dd > maxdiff) {
            maxdiff = dd;
            worst = i;
        }
    }
    const double rel = maxdiff / fmax(maxref, 1e-30);
    ck_assert_msg(rel < tol,
                  "%s: %s: max |nibble - torch| / max |torch| = %.3g >= %.0e (worst element %zu: nibble %.8g, "
                  "torch %.8g)",
                  what, name, rel, tol, worst, (double)ours[worst], (double)ref[worst]);
    free(ref);
    return rel;
}

/* Sums against the oracle's dataset name, element j within tol of the
 * oracle's size_name[j] (float64: the sum of the absolute values of the
 * terms, the scale of a sum's float error, where a plain relative error is
 * meaningless for a sum that cancels). Returns the largest |ours - torch| /
 * size; with rel, the largest |ours - torch| / max |torch| as well. */
static inline double nb_oracle_close_sums(hid_t f, const char *what, const char *name, const char *size_name,
                                          const float *ours, size_t n, double tol, double *rel) {
    size_t m, ms;
    float *ref = h5_read(f, name, H5T_NATIVE_FLOAT, sizeof(float), &m);
    double *size = h5_read(f, size_name, H5T_NATIVE_DOUBLE, sizeof(double), &ms);
    ck_assert_msg(m == n && ms == n, "%s: oracle has %zu / %zu values, nibble %zu", name, m, ms, n);
    double worst = 0, maxdiff = 0, maxref = 0;
    for (size_t j = 0; j < n; j++) {
        const double d = fabs((double)ours[j] - (double)ref[j]), e = d / fmax(size[j], 1e-30);
        ck_assert_msg(e < tol, "%s: %s[%zu]: nibble %.9g, torch %.9g: |difference| = %.3g of the sum's size %.6g "
                      "(tolerance %.0e)", what, name, j, (double)ours[j], (double)ref[j], e, size[j], tol);
        worst = fmax(worst, e);
        maxdiff = fmax(maxdiff, d);
        maxref = fmax(maxref, fabs((double)ref[j]));
    }
    if (rel) *rel = maxdiff / fmax(maxref, 1e-30);
    free(ref);
    free(size);
    return worst;
}

#endif
