/* Importer for the official CIFAR-10 binary distribution
 * (cifar-10-binary.tar.gz): data_batch_1..5.bin, test_batch.bin, each a
 * sequence of 3073-byte records (1 label byte, then 32x32 R, G and B
 * planes, i.e. already (C, H, W)), and batches.meta.txt (class names, one
 * per line). The official order is kept. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define REC_PIXELS 3072
#define REC_BYTES (1 + REC_PIXELS)
#define CLASSES 10
#define BLOCK 256 /* records per write: one HDF5 chunk */

static const char *const cifar_names[CLASSES] = {"airplane", "automobile", "bird", "cat", "deer",
                                                 "dog", "frog", "horse", "ship", "truck"};
static const char *const batch_files[6] = {"data_batch_1.bin", "data_batch_2.bin",
                                           "data_batch_3.bin", "data_batch_4.bin",
                                           "data_batch_5.bin", "test_batch.bin"};

nb_import_opts nb_import_opts_default(void) {
    nb_import_opts o = {.name = NULL, .size = 0, .shuffle = 1, .seed = 0, .threads = 0,
                        .overwrite = 0, .progress = NULL, .progress_user = NULL};
    return o;
}

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Class names from batches.meta.txt (blank lines ignored). */
static nb_status read_meta(const char *path, char names[CLASSES][64]) {
    FILE *f = fopen(path, "r");
    if (!f) return nb_set_error(NB_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    char line[256];
    int n = 0;
    nb_status st = NB_OK;
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t')) len--;
        line[len] = '\0';
        if (len == 0) continue;
        if (n == CLASSES) {
            n++;
            break;
        }
        snprintf(names[n++], 64, "%s", line);
    }
    fclose(f);
    if (n != CLASSES)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: expected %d class names (one per line), found %s%d",
                          path, CLASSES, n > CLASSES ? "more than " : "", n > CLASSES ? CLASSES : n);
    return st;
}

/* Records in a batch file, checking its size. */
static nb_status count_records(const char *path, size_t *n) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return nb_set_error(NB_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    if (sb.st_size <= 0 || sb.st_size % REC_BYTES != 0)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "%s: size %lld is not a positive multiple of %d bytes (1 label + %d "
                            "pixel bytes per record): truncated or not a CIFAR-10 binary batch",
                            path, (long long)sb.st_size, REC_BYTES, REC_PIXELS);
    *n = (size_t)sb.st_size / REC_BYTES;
    return NB_OK;
}

static nb_status copy_batch(const char *path, size_t n, nb_h5_writer *w, int split,
                            uint8_t *rec, uint8_t *images, uint8_t *labels, size_t *done,
                            size_t total, const nb_import_opts *o) {
    FILE *f = fopen(path, "rb");
    if (!f) return nb_set_error(NB_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    nb_status st = NB_OK;
    for (size_t i = 0; i < n && st == NB_OK;) {
        size_t m = n - i < BLOCK ? n - i : BLOCK;
        if (fread(rec, REC_BYTES, m, f) != m) {
            st = nb_set_error(NB_STATUS_IO, "%s: read error at record %zu", path, i);
            break;
        }
        for (size_t k = 0; k < m; k++) {
            const uint8_t *r = rec + k * REC_BYTES;
            if (r[0] >= CLASSES) {
                st = nb_set_error(NB_STATUS_BAD_INPUT,
                                  "%s: record %zu has label %d (CIFAR-10 labels are 0..%d)", path,
                                  i + k, r[0], CLASSES - 1);
                break;
            }
            labels[k] = r[0];
            memcpy(images + k * REC_PIXELS, r + 1, REC_PIXELS);
        }
        if (st == NB_OK) st = nb_h5_writer_append(w, split, images, labels, m);
        i += m;
        *done += m;
        if (o->progress) o->progress(*done, total, o->progress_user);
    }
    fclose(f);
    return st;
}

nb_status nb_import_cifar10(const char *dir, const char *out, const nb_import_opts *opts) {
    NB_ASSERT(dir && out, "NULL argument");
    nb_import_opts o = opts ? *opts : nb_import_opts_default();
    char base[4096], path[6][4200], meta[4200];
    snprintf(base, sizeof base, "%s", dir);
    snprintf(meta, sizeof meta, "%s/data_batch_1.bin", base);
    if (!is_file(meta)) {
        snprintf(base, sizeof base, "%s/cifar-10-batches-bin", dir);
        snprintf(meta, sizeof meta, "%s/data_batch_1.bin", base);
        if (!is_file(meta))
            return nb_set_error(NB_STATUS_BAD_INPUT,
                                "%s: no data_batch_1.bin here or in %s/cifar-10-batches-bin "
                                "(expected the CIFAR-10 binary version: data_batch_1..5.bin, "
                                "test_batch.bin, batches.meta.txt)",
                                dir, dir);
    }
    char names_buf[CLASSES][64];
    const char *names[CLASSES];
    snprintf(meta, sizeof meta, "%s/batches.meta.txt", base);
    nb_status st;
    if (is_file(meta)) {
        if ((st = read_meta(meta, names_buf)) != NB_OK) return st;
        for (int i = 0; i < CLASSES; i++) names[i] = names_buf[i];
    } else {
        nb_log(NB_LOG_WARN, "%s: missing; using the standard CIFAR-10 class names", meta);
        for (int i = 0; i < CLASSES; i++) names[i] = cifar_names[i];
    }
    size_t n[6], count[2] = {0, 0};
    for (int b = 0; b < 6; b++) {
        snprintf(path[b], sizeof path[b], "%s/%s", base, batch_files[b]);
        if ((st = count_records(path[b], &n[b])) != NB_OK) return st;
        count[b == 5] += n[b];
    }
    char source[4600];
    snprintf(source, sizeof source,
             "CIFAR-10 binary distribution (https://www.cs.toronto.edu/~kriz/cifar.html, "
             "cifar-10-binary.tar.gz) imported from %s by nibble data import-cifar10; official "
             "order",
             base);
    nb_h5_writer_meta m = {.name = o.name ? o.name : "cifar10", .source = source,
                           .classes = CLASSES, .class_names = names, .C = 3, .H = 32, .W = 32,
                           .count = {count[0], count[1]}, .overwrite = o.overwrite};
    nb_h5_writer *w = NULL;
    uint8_t *rec = nb_malloc((size_t)BLOCK * REC_BYTES);
    uint8_t *images = nb_malloc((size_t)BLOCK * REC_PIXELS);
    uint8_t *labels = nb_malloc(BLOCK);
    if (!rec || !images || !labels) {
        st = NB_STATUS_OOM;
        goto done;
    }
    if ((st = nb_h5_writer_create(out, &m, &w)) != NB_OK) goto done;
    size_t done_n = 0, total = count[0] + count[1];
    for (int b = 0; b < 6 && st == NB_OK; b++)
        st = copy_batch(path[b], n[b], w, b == 5, rec, images, labels, &done_n, total, &o);
    if (st == NB_OK) st = nb_h5_writer_finish(w);
    else nb_h5_writer_abort(w);
done:
    nb_free(rec);
    nb_free(images);
    nb_free(labels);
    return st;
}
