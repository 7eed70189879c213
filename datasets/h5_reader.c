/* Opening one split of a dataset file: schema validation with messages
 * that name file, dataset and shape; whole-split load under the memory
 * cap, chunk-aligned streaming reads above it. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* The schema's uint8 datasets: check type and rank, return space + dims. */
static nb_status check_u8(const char *path, const char *dpath, hid_t dset, int rank,
                          const char *rank_hint, hid_t *space, hsize_t *dims) {
    char t[64], s[64];
    hid_t type = H5Dget_type(dset);
    *space = H5Dget_space(dset);
    nb_status st = NB_OK;
    if (type < 0 || *space < 0) {
        char d[256];
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot read the header of %s (%s)", path,
                          dpath, nb_h5_error_detail(d, sizeof d));
    } else if (H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != 1 ||
               H5Tget_sign(type) != H5T_SGN_NONE) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s has type %s with shape %s, expected uint8",
                          path, dpath, nb_h5_type_name(type, t, sizeof t),
                          nb_h5_space_str(*space, s, sizeof s));
    } else if (H5Sget_simple_extent_ndims(*space) != rank) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s has shape %s, expected %s", path, dpath,
                          nb_h5_space_str(*space, s, sizeof s), rank_hint);
    } else {
        H5Sget_simple_extent_dims(*space, dims, NULL);
    }
    if (type >= 0) H5Tclose(type);
    return st;
}

static nb_status open_member(const char *path, hid_t grp, const char *split, const char *name,
                             hid_t *dset) {
    if (H5Lexists(grp, name, H5P_DEFAULT) <= 0)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "%s: missing dataset /%s/%s (the schema needs /%s/images and "
                            "/%s/labels)",
                            path, split, name, split, split);
    *dset = H5Dopen2(grp, name, H5P_DEFAULT);
    if (*dset < 0) {
        char d[256];
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: /%s/%s is not a readable dataset (%s)", path,
                            split, name, nb_h5_error_detail(d, sizeof d));
    }
    return NB_OK;
}

/* Root attributes into ds's metadata. */
static nb_status read_meta(const char *path, hid_t file, const char *split, nb_dataset *ds) {
    int C = 0, H = 0, W = 0, nclasses = 0;
    char *name = NULL, *source = NULL, **classes = NULL;
    float mean[16], std[16];
    nb_status st;
    if ((st = nb_h5_attr_int(path, file, "channels", &C)) != NB_OK) goto done;
    if ((st = nb_h5_attr_int(path, file, "height", &H)) != NB_OK) goto done;
    if ((st = nb_h5_attr_int(path, file, "width", &W)) != NB_OK) goto done;
    if (C < 1 || C > 16 || H < 1 || W < 1 || H > 65536 || W > 65536) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: attributes channels = %d, height = %d, width = %d are out of range "
                          "(1..16 channels, 1..65536 pixels)",
                          path, C, H, W);
        goto done;
    }
    if ((st = nb_h5_attr_strings(path, file, "classes", 256, &classes, &nclasses)) != NB_OK)
        goto done;
    if ((st = nb_h5_attr_floats(path, file, "mean", C, mean)) != NB_OK) goto done;
    if ((st = nb_h5_attr_floats(path, file, "std", C, std)) != NB_OK) goto done;
    for (int c = 0; c < C; c++)
        if (!isfinite(mean[c]) || !isfinite(std[c]) || !(std[c] > 0.0f)) {
            st = nb_set_error(NB_STATUS_BAD_INPUT,
                              "%s: root attributes mean[%d] = %g, std[%d] = %g: need finite "
                              "values and std > 0",
                              path, c, (double)mean[c], c, (double)std[c]);
            goto done;
        }
    if ((st = nb_h5_attr_string(path, file, "name", &name)) != NB_OK) goto done;
    /* `source` is provenance only: read it when present. */
    if (H5Aexists(file, "source") > 0 &&
        (st = nb_h5_attr_string(path, file, "source", &source)) != NB_OK)
        goto done;
    st = nb_ds_set_meta(ds, name, source, path, split, nclasses, (const char *const *)classes, C,
                        H, W, mean, std);
done:
    for (int i = 0; i < nclasses; i++) nb_free(classes[i]);
    nb_free(classes);
    nb_free(name);
    nb_free(source);
    return st;
}

/* Validate /split/images and /split/labels against ds's metadata, read the
 * labels. *img stays open for the caller. */
static nb_status read_split(const char *path, hid_t file, nb_dataset *ds, hid_t *img) {
    const char *split = ds->split;
    char ip[32], lp[32], s1[64], s2[64], d[256];
    snprintf(ip, sizeof ip, "/%s/images", split);
    snprintf(lp, sizeof lp, "/%s/labels", split);
    hid_t grp = H5I_INVALID_HID, lab = H5I_INVALID_HID, isp = H5I_INVALID_HID,
          lsp = H5I_INVALID_HID;
    hsize_t idims[4] = {0}, ldims[1] = {0};
    nb_status st = NB_OK;
    if (H5Lexists(file, split, H5P_DEFAULT) <= 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: missing group /%s (the schema needs /train and /test)", path, split);
        goto done;
    }
    if ((grp = H5Gopen2(file, split, H5P_DEFAULT)) < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: /%s is not a group", path, split);
        goto done;
    }
    if ((st = open_member(path, grp, split, "images", img)) != NB_OK) goto done;
    if ((st = open_member(path, grp, split, "labels", &lab)) != NB_OK) goto done;
    if ((st = check_u8(path, ip, *img, 4, "rank 4 (N, C, H, W)", &isp, idims)) != NB_OK) goto done;
    if ((st = check_u8(path, lp, lab, 1, "rank 1 (N,)", &lsp, ldims)) != NB_OK) goto done;
    if (idims[1] != (hsize_t)ds->C || idims[2] != (hsize_t)ds->H || idims[3] != (hsize_t)ds->W) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: %s has shape %s but the attributes say (N, %d, %d, %d) "
                          "(channels, height, width)",
                          path, ip, nb_h5_space_str(isp, s1, sizeof s1), ds->C, ds->H, ds->W);
        goto done;
    }
    if (ldims[0] != idims[0]) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: %s has shape %s but %s has shape %s: the counts differ", path, lp,
                          nb_h5_space_str(lsp, s1, sizeof s1), ip,
                          nb_h5_space_str(isp, s2, sizeof s2));
        goto done;
    }
    if (idims[0] == 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: split /%s is empty: %s has shape %s", path,
                          split, ip, nb_h5_space_str(isp, s1, sizeof s1));
        goto done;
    }
    if (idims[0] > UINT32_MAX) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s has shape %s: more than 2^32 examples",
                          path, ip, nb_h5_space_str(isp, s1, sizeof s1));
        goto done;
    }
    ds->count = (size_t)idims[0];
    if (!(ds->labels = nb_malloc(ds->count))) {
        st = NB_STATUS_OOM;
        goto done;
    }
    if (H5Dread(lab, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, ds->labels) < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot read %s with shape %s (%s)", path, lp,
                          nb_h5_space_str(lsp, s1, sizeof s1), nb_h5_error_detail(d, sizeof d));
        goto done;
    }
    for (size_t i = 0; i < ds->count; i++)
        if (ds->labels[i] >= ds->classes) {
            st = nb_set_error(NB_STATUS_BAD_INPUT,
                              "%s: %s[%zu] = %d but the file has %d classes (labels must be "
                              "0..%d)",
                              path, lp, i, ds->labels[i], ds->classes, ds->classes - 1);
            goto done;
        }
done:
    if (isp >= 0) H5Sclose(isp);
    if (lsp >= 0) H5Sclose(lsp);
    if (lab >= 0) H5Dclose(lab);
    if (grp >= 0) H5Gclose(grp);
    return st;
}

/* Rows per chunk along N: the file's chunking, or ~8 MiB for contiguous data. */
static size_t chunk_rows_of(hid_t img, size_t example_bytes) {
    size_t rows = 0;
    hid_t dcpl = H5Dget_create_plist(img);
    if (dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED) {
        hsize_t cd[4] = {0};
        if (H5Pget_chunk(dcpl, 4, cd) == 4) rows = (size_t)cd[0];
    }
    if (dcpl >= 0) H5Pclose(dcpl);
    if (rows == 0) rows = ((size_t)8 << 20) / example_bytes;
    /* Huge chunks: read in pieces of at most 256 MiB (bounded memory). */
    if (rows > ((size_t)256 << 20) / example_bytes) rows = ((size_t)256 << 20) / example_bytes;
    return rows ? rows : 1;
}

nb_status nb_dataset_open(const char *path, const char *split, const nb_dataset_opts *opts,
                          nb_dataset **out) {
    NB_ASSERT(path && split && out, "NULL argument");
    *out = NULL;
    if (strcmp(split, "train") && strcmp(split, "test"))
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: unknown split '%s' (expected train or test)",
                            path, split);
    nb_dataset_opts o = opts ? *opts : nb_dataset_opts_default();
    size_t cap = o.mem_cap_bytes ? o.mem_cap_bytes : NB_DS_DEFAULT_MEM_CAP;
    struct stat sb;
    if (stat(path, &sb) != 0 || access(path, R_OK) != 0)
        return nb_set_error(NB_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: is a directory, expected an HDF5 file", path);

    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    nb_status st = NB_OK;
    hid_t file = H5I_INVALID_HID, img = H5I_INVALID_HID, dapl = H5I_INVALID_HID;
    nb_dataset *ds = NULL;
    char d[256];
    if (H5Fis_hdf5(path) <= 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: not an HDF5 file (no HDF5 signature)", path);
        goto cleanup;
    }
    if ((file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: cannot open as HDF5: %s (truncated or corrupt file?)", path,
                          nb_h5_error_detail(d, sizeof d));
        goto cleanup;
    }
    if (!(ds = nb_ds_new())) {
        st = NB_STATUS_OOM;
        goto cleanup;
    }
    if ((st = read_meta(path, file, split, ds)) != NB_OK) goto cleanup;
    if ((st = read_split(path, file, ds, &img)) != NB_OK) goto cleanup;
    ds->chunk_rows = chunk_rows_of(img, ds->example_bytes);
    ds->mem_cap = cap;
    if (!o.force_stream && ds->count <= cap / ds->example_bytes) {
        size_t bytes = ds->count * ds->example_bytes;
        if (!(ds->images = nb_malloc(bytes))) {
            st = nb_set_error(NB_STATUS_OOM,
                              "%s: cannot load /%s/images (%zu MiB) into memory (HINT: a smaller "
                              "mem_cap_bytes streams it instead)",
                              path, split, bytes >> 20);
            goto cleanup;
        }
        if (H5Dread(img, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, ds->images) < 0) {
            st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot read /%s/images (%s)", path, split,
                              nb_h5_error_detail(d, sizeof d));
            goto cleanup;
        }
    } else {
        /* Keep the file open; a chunk cache of two chunks (at most 64 MiB)
         * serves the row-by-row reads of `inspect`, the loader reads whole
         * chunks. */
        size_t cache = 2 * ds->chunk_rows * ds->example_bytes;
        if (cache > ((size_t)64 << 20)) cache = (size_t)64 << 20;
        if (cache < ((size_t)1 << 20)) cache = (size_t)1 << 20;
        H5Dclose(img);
        dapl = H5Pcreate(H5P_DATASET_ACCESS);
        H5Pset_chunk_cache(dapl, H5D_CHUNK_CACHE_NSLOTS_DEFAULT, cache,
                           H5D_CHUNK_CACHE_W0_DEFAULT);
        char ip[32];
        snprintf(ip, sizeof ip, "/%s/images", split);
        if ((img = H5Dopen2(file, ip, dapl)) < 0) {
            st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot reopen %s (%s)", path, ip,
                              nb_h5_error_detail(d, sizeof d));
            goto cleanup;
        }
        ds->file = file;
        ds->dset = img;
        file = img = H5I_INVALID_HID; /* owned by ds now */
    }
    *out = ds;
    ds = NULL;
cleanup:
    if (dapl >= 0) H5Pclose(dapl);
    if (img >= 0) H5Dclose(img);
    if (file >= 0) H5Fclose(file);
    nb_dataset_free(ds);
    nb_h5_quiet_end(&q);
    return st;
}

nb_status nb_ds_stream_read(const nb_dataset *ds, size_t first, size_t n, uint8_t *images) {
    NB_ASSERT(ds->dset >= 0, "dataset is not streaming");
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    nb_status st = NB_OK;
    hsize_t start[4] = {first, 0, 0, 0};
    hsize_t count[4] = {n, (hsize_t)ds->C, (hsize_t)ds->H, (hsize_t)ds->W};
    hid_t fsp = H5Dget_space(ds->dset);
    hid_t msp = H5Screate_simple(4, count, NULL);
    if (fsp < 0 || msp < 0 || H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread(ds->dset, H5T_NATIVE_UCHAR, msp, fsp, H5P_DEFAULT, images) < 0) {
        char d[256];
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot read /%s/images rows %zu..%zu (%s)",
                          ds->path, ds->split, first, first + n - 1,
                          nb_h5_error_detail(d, sizeof d));
    }
    if (msp >= 0) H5Sclose(msp);
    if (fsp >= 0) H5Sclose(fsp);
    nb_h5_quiet_end(&q);
    return st;
}

void nb_ds_stream_close(nb_dataset *ds) {
    if (ds->dset < 0 && ds->file < 0) return;
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    if (ds->dset >= 0) H5Dclose(ds->dset);
    if (ds->file >= 0) H5Fclose(ds->file);
    ds->dset = ds->file = H5I_INVALID_HID;
    nb_h5_quiet_end(&q);
}
