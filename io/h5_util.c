/* Small HDF5 helpers: quiet error stacks, readable type and shape names,
 * attribute writing, files written whole from memory. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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

/* The file image of f (an in-memory file) into tmp, synced: fsync so that
 * the rename never publishes a file whose data is still in the page cache
 * only (a crash would leave a truncated checkpoint). HDF5 itself never
 * writes to the disk: HDF5 1.10 cannot recover from a failed write (a full
 * disk) and crashes in its exit handler, so every disk error is ours. */
nb_status nb_h5_mem_write(const char *path, const char *tmp, hid_t f) {
    char d[256];
    ssize_t size = H5Fget_file_image(f, NULL, 0);
    unsigned char *buf = size > 0 ? nb_malloc((size_t)size) : NULL;
    if (size <= 0 || !buf || H5Fget_file_image(f, buf, (size_t)size) != size) {
        nb_status st = size > 0 && !buf
                           ? nb_set_error(NB_STATUS_OOM, "%s: out of memory for the %zd-byte file image",
                                          path, size)
                           : nb_set_error(NB_STATUS_IO, "%s: cannot build the file image (%s)", path,
                                          nb_h5_error_detail(d, sizeof d));
        nb_free(buf);
        return st;
    }
    nb_status st = NB_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        st = nb_set_error(NB_STATUS_IO, "%s: cannot create %s (%s)", path, tmp, strerror(errno));
        nb_free(buf);
        return st;
    }
    for (size_t done = 0; done < (size_t)size && st == NB_OK;) {
        ssize_t n = write(fd, buf + done, (size_t)size - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            st = nb_set_error(NB_STATUS_IO, "%s: cannot write %s: %s", path, tmp,
                              n < 0 ? strerror(errno) : "no progress");
        else
            done += (size_t)n;
    }
    if (st == NB_OK && fsync(fd) != 0)
        st = nb_set_error(NB_STATUS_IO, "%s: cannot sync %s: %s", path, tmp, strerror(errno));
    if (close(fd) != 0 && st == NB_OK)
        st = nb_set_error(NB_STATUS_IO, "%s: cannot write %s: %s", path, tmp, strerror(errno));
    nb_free(buf);
    return st;
}

/* An in-memory HDF5 file (the core driver without a backing store). */
hid_t nb_h5_mem_create(const char *tmp) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    hid_t f = H5I_INVALID_HID;
    if (fapl >= 0 && H5Pset_fapl_core(fapl, (size_t)1 << 20, 0) >= 0)
        f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    return f;
}
