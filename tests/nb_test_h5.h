/* HDF5 writing helpers shared by the PyTorch-oracle suites (test_torch.c,
 * test_torch_quant.c): float32 datasets (groups made on the way) and scalar
 * attributes. Failures fail the test. */
#ifndef NB_TEST_H5_H
#define NB_TEST_H5_H

#include <hdf5.h>
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

/* Runs the oracle on the case file; returns the opened result file. */
#endif
