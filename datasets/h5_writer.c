/* Writing a dataset file exactly in the schema: images uint8 (N, C, H, W)
 * chunked (min(256, N), C, H, W) with shuffle + deflate 4, labels uint8
 * (N) contiguous, variable-length UTF-8 strings, float32 mean/std over the
 * train split, int32 height/width/channels. The file is written under a
 * temporary name and renamed into place only when complete. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct nb_h5_writer {
    char *path, *tmp;
    hid_t file;
    hid_t img[2];          /* /train/images, /test/images */
    uint8_t *labels[2];    /* (count[s]) */
    size_t count[2], done[2];
    size_t example_bytes;
    int C, H, W;
    int may_shrink;
    nb_pixel_stats stats;  /* over the train split */
};

static const char *const split_name[2] = {"train", "test"};

static nb_status h5_fail(const nb_h5_writer *w, const char *what) {
    char d[256];
    return nb_set_error(NB_STATUS_IO, "%s: cannot %s (%s)", w->path, what,
                        nb_h5_error_detail(d, sizeof d));
}

static int write_meta(hid_t file, const nb_h5_writer_meta *m) {
    hid_t st = nb_h5_vlen_str_type();
    const char *src = m->source ? m->source : "";
    int ok = nb_h5_write_attr(file, "name", st, st, 0, 1, &m->name) &&
             nb_h5_write_attr(file, "source", st, st, 0, 1, &src) &&
             nb_h5_write_attr(file, "classes", st, st, 1, (hsize_t)m->classes, m->class_names) &&
             nb_h5_write_attr(file, "height", H5T_STD_I32LE, H5T_NATIVE_INT, 0, 1, &m->H) &&
             nb_h5_write_attr(file, "width", H5T_STD_I32LE, H5T_NATIVE_INT, 0, 1, &m->W) &&
             nb_h5_write_attr(file, "channels", H5T_STD_I32LE, H5T_NATIVE_INT, 0, 1, &m->C);
    H5Tclose(st);
    return ok;
}

static hid_t create_images(hid_t file, int s, size_t n, int C, int H, int W) {
    hsize_t dims[4] = {n, (hsize_t)C, (hsize_t)H, (hsize_t)W};
    hsize_t chunk[4] = {n < 256 ? n : 256, (hsize_t)C, (hsize_t)H, (hsize_t)W};
    hid_t grp = H5Gcreate2(file, split_name[s], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = H5Screate_simple(4, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    hid_t d = H5I_INVALID_HID;
    /* A cache of two chunks so appends that straddle chunks compress each
     * chunk once. */
    size_t cache = 2 * (size_t)chunk[0] * (size_t)C * (size_t)H * (size_t)W;
    if (grp >= 0 && sp >= 0 && dcpl >= 0 && dapl >= 0 && H5Pset_chunk(dcpl, 4, chunk) >= 0 &&
        H5Pset_shuffle(dcpl) >= 0 && H5Pset_deflate(dcpl, 4) >= 0 &&
        H5Pset_chunk_cache(dapl, 521, cache, 1.0) >= 0)
        d = H5Dcreate2(grp, "images", H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, dapl);
    if (dapl >= 0) H5Pclose(dapl);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    if (grp >= 0) H5Gclose(grp);
    return d;
}

nb_status nb_h5_writer_create(const char *path, const nb_h5_writer_meta *m, nb_h5_writer **out) {
    NB_ASSERT(path && m && out && m->count[0] > 0 && m->count[1] > 0, "bad writer arguments");
    *out = NULL;
    struct stat sb;
    if (!m->overwrite && stat(path, &sb) == 0)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "%s: already exists (HINT: --force replaces it)", path);
    nb_h5_writer *w = nb_calloc(1, sizeof *w);
    if (!w) return NB_STATUS_OOM;
    w->file = w->img[0] = w->img[1] = H5I_INVALID_HID;
    w->C = m->C;
    w->H = m->H;
    w->W = m->W;
    w->may_shrink = m->may_shrink;
    w->example_bytes = (size_t)m->C * (size_t)m->H * (size_t)m->W;
    nb_pixel_stats_init(&w->stats, m->C);
    size_t plen = strlen(path);
    w->path = nb_strdup(path);
    w->tmp = nb_malloc(plen + 16);
    if (!w->path || !w->tmp) goto oom;
    for (int s = 0; s < 2; s++) {
        w->count[s] = m->count[s];
        if (!(w->labels[s] = nb_malloc(m->count[s]))) goto oom;
    }
    snprintf(w->tmp, plen + 16, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(w->tmp);
    if (fd < 0) {
        nb_status st = nb_set_error(NB_STATUS_IO, "%s: cannot create: %s", path, strerror(errno));
        w->tmp[0] = '\0';
        nb_h5_writer_abort(w);
        return st;
    }
    close(fd);
    chmod(w->tmp, 0644);
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    nb_status st = NB_OK;
    w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0 || !write_meta(w->file, m)) {
        st = h5_fail(w, "create the HDF5 file");
    } else {
        for (int s = 0; s < 2 && st == NB_OK; s++)
            if ((w->img[s] = create_images(w->file, s, m->count[s], m->C, m->H, m->W)) < 0)
                st = h5_fail(w, "create the images dataset");
    }
    nb_h5_quiet_end(&q);
    if (st != NB_OK) {
        nb_h5_writer_abort(w);
        return st;
    }
    *out = w;
    return NB_OK;
oom:
    nb_h5_writer_abort(w);
    return NB_STATUS_OOM;
}

nb_status nb_h5_writer_append(nb_h5_writer *w, int split, const uint8_t *images,
                              const uint8_t *labels, size_t n) {
    NB_ASSERT(split == 0 || split == 1, "split %d", split);
    NB_ASSERT(w->done[split] + n <= w->count[split], "append past the declared count");
    if (n == 0) return NB_OK;
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    hsize_t start[4] = {w->done[split], 0, 0, 0};
    hsize_t count[4] = {n, (hsize_t)w->C, (hsize_t)w->H, (hsize_t)w->W};
    hid_t fsp = H5Dget_space(w->img[split]);
    hid_t msp = H5Screate_simple(4, count, NULL);
    nb_status st = NB_OK;
    if (fsp < 0 || msp < 0 ||
        H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dwrite(w->img[split], H5T_NATIVE_UCHAR, msp, fsp, H5P_DEFAULT, images) < 0)
        st = h5_fail(w, "write images");
    if (msp >= 0) H5Sclose(msp);
    if (fsp >= 0) H5Sclose(fsp);
    nb_h5_quiet_end(&q);
    if (st != NB_OK) return st;
    memcpy(w->labels[split] + w->done[split], labels, n);
    if (split == 0) nb_pixel_stats_add(&w->stats, images, n, (size_t)w->H * (size_t)w->W);
    w->done[split] += n;
    return NB_OK;
}

nb_status nb_h5_writer_finish(nb_h5_writer *w) {
    NB_ASSERT(w->may_shrink || (w->done[0] == w->count[0] && w->done[1] == w->count[1]),
              "finish before all examples were appended");
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    nb_status st = NB_OK;
    for (int s = 0; s < 2 && st == NB_OK; s++) {
        if (w->done[s] == w->count[s]) continue;
        /* chunked: the extent may shrink below the created one */
        hsize_t dims[4] = {w->done[s], (hsize_t)w->C, (hsize_t)w->H, (hsize_t)w->W};
        if (H5Dset_extent(w->img[s], dims) < 0) st = h5_fail(w, "shrink the images dataset");
        w->count[s] = w->done[s];
    }
    float mean[4], std[4];
    nb_pixel_stats_get(&w->stats, mean, std);
    if (!nb_h5_write_attr(w->file, "mean", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, (hsize_t)w->C, mean) ||
        !nb_h5_write_attr(w->file, "std", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, (hsize_t)w->C, std))
        st = h5_fail(w, "write mean/std");
    for (int s = 0; s < 2 && st == NB_OK; s++) {
        char p[32];
        snprintf(p, sizeof p, "/%s/labels", split_name[s]);
        hsize_t n = w->count[s];
        hid_t sp = H5Screate_simple(1, &n, NULL);
        hid_t d = H5Dcreate2(w->file, p, H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (sp < 0 || d < 0 ||
            H5Dwrite(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, w->labels[s]) < 0)
            st = h5_fail(w, "write labels");
        if (d >= 0) H5Dclose(d);
        if (sp >= 0) H5Sclose(sp);
    }
    for (int s = 0; s < 2; s++) {
        if (w->img[s] >= 0 && H5Dclose(w->img[s]) < 0 && st == NB_OK) st = h5_fail(w, "write images");
        w->img[s] = H5I_INVALID_HID;
    }
    if (st == NB_OK && H5Fclose(w->file) < 0) st = h5_fail(w, "close the file");
    else if (st != NB_OK) H5Fclose(w->file);
    w->file = H5I_INVALID_HID;
    nb_h5_quiet_end(&q);
    if (st == NB_OK && rename(w->tmp, w->path) != 0)
        st = nb_set_error(NB_STATUS_IO, "%s: cannot rename %s into place: %s", w->path, w->tmp,
                          strerror(errno));
    if (st == NB_OK) w->tmp[0] = '\0'; /* nothing left to delete */
    nb_h5_writer_abort(w);
    return st;
}

void nb_h5_writer_abort(nb_h5_writer *w) {
    if (!w) return;
    nb_h5_quiet q;
    nb_h5_quiet_begin(&q);
    for (int s = 0; s < 2; s++)
        if (w->img[s] >= 0) H5Dclose(w->img[s]);
    if (w->file >= 0) H5Fclose(w->file);
    nb_h5_quiet_end(&q);
    if (w->tmp && w->tmp[0]) unlink(w->tmp);
    nb_free(w->tmp);
    nb_free(w->path);
    nb_free(w->labels[0]);
    nb_free(w->labels[1]);
    nb_free(w);
}
