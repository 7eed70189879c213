/* HDF5 helpers shared by datasets/, checkpoints (io/) and export (quant/). Not
 * installed: users never include it. */
#ifndef NB_H5_UTIL_H
#define NB_H5_UTIL_H

#include <hdf5.h>

#include "nb_core.h"

/* h5_util.c: HDF5 helpers. HDF5's automatic error printing is per thread
 * (thread-safe build): quiet_begin turns it off and remembers the old
 * handler, quiet_end restores it. */
typedef struct {
    H5E_auto2_t fn;
    void *data;
} nb_h5_quiet;
void nb_h5_quiet_begin(nb_h5_quiet *q);
void nb_h5_quiet_end(const nb_h5_quiet *q);
/* The innermost message of this thread's HDF5 error stack ("" if none). */
const char *nb_h5_error_detail(char *buf, size_t n);
/* "uint8", "int32", "float32", "string", "compound", ... */
const char *nb_h5_type_name(hid_t type, char *buf, size_t n);
/* "(1000, 3, 32, 32)", "(10,)" of rank dims; "scalar" for rank 0. */
const char *nb_h5_dims_str(int rank, const hsize_t *dims, char *buf, size_t n);
/* The same of a dataspace. */
const char *nb_h5_space_str(hid_t space, char *buf, size_t n);
/* Variable-length UTF-8 string type (caller closes with H5Tclose). */
hid_t nb_h5_vlen_str_type(void);
/* Attribute name of loc with file type ftype from buf (memory type mtype):
 * a scalar for rank 0, else n values. 1 on success; on failure 0 with
 * HDF5's error stack still holding the reason (for nb_h5_error_detail). */
int nb_h5_write_attr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank, hsize_t n,
                     const void *buf);

/* Files written whole: built in memory (the core driver without a backing
 * store, named tmp), then nb_h5_mem_write puts the file image into tmp and
 * syncs it (the caller renames tmp over path). Messages name path. */
hid_t nb_h5_mem_create(const char *tmp);
nb_status nb_h5_mem_write(const char *path, const char *tmp, hid_t f);

/* h5_attrs.c: checked reads of root attributes (messages name the file,
 * the attribute, its type and shape). Strings are nb_strdup'ed; the array
 * reader hands back all *count entries even on error (free them). A
 * missing attribute's message carries the dataset schema's hint: other
 * callers check H5Aexists first. */
nb_status nb_h5_attr_int(const char *path, hid_t loc, const char *name, int *v);
nb_status nb_h5_attr_floats(const char *path, hid_t loc, const char *name, int count,
                            float *out);
nb_status nb_h5_attr_string(const char *path, hid_t loc, const char *name, char **out);
nb_status nb_h5_attr_strings(const char *path, hid_t loc, const char *name, int max_count,
                             char ***out, int *count);

#endif /* NB_H5_UTIL_H */
