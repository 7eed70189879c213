/* Fixtures for the datasets tests: dataset files written directly with the
 * HDF5 C API (valid or broken on purpose) and a CIFAR-10 binary folder.
 * Header-only (static inline) so each test executable takes what it uses. */
#ifndef NB_TEST_DATA_H
#define NB_TEST_DATA_H

#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* What to write, and what to break. */
typedef struct {
    int n[2];             /* train, test examples */
    int C, H, W, classes;
    int chunk;            /* rows per chunk of images, 0 = contiguous */
    const char *omit_attr;    /* root attribute left out */
    const char *omit_dataset; /* e.g. "test/labels" */
    int images_float;     /* /train/images as float32 */
    int labels_int16;     /* /train/labels as int16 */
    int bad_label;        /* last train label = classes */
    int labels_short;     /* /test/labels one shorter than images */
    int images_rank3;     /* /train/images as (N, C*H, W) */
    int attr_channels;    /* channels attribute value, 0 = C */
} nb_fixture;

static inline nb_fixture nb_fixture_default(void) {
    nb_fixture f;
    memset(&f, 0, sizeof f);
    f.n[0] = 40;
    f.n[1] = 20;
    f.C = 3;
    f.H = 8;
    f.W = 8;
    f.classes = 10;
    f.chunk = 16;
    return f;
}

/* Deterministic pixel of example i of split s. */
static inline uint8_t nb_fixture_pixel(int s, int i, int c, int y, int x) {
    return (uint8_t)((s * 101 + i * 7 + c * 59 + y * 13 + x * 3 + (i * y) % 17) & 255);
}

static inline uint8_t nb_fixture_label(int s, int i, int classes) {
    return (uint8_t)((i * 3 + s) % classes);
}

static inline void nb_fixture_attr(hid_t file, const char *name, hid_t type, int rank, hsize_t n,
                                   const void *buf) {
    hid_t sp = rank ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, type, buf);
    H5Aclose(a);
    H5Sclose(sp);
}

/* Write a schema file as described by f; returns 0 on success. */
static inline int nb_fixture_write(const char *path, const nb_fixture *f) {
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) return -1;
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, H5T_VARIABLE);
    H5Tset_cset(str, H5T_CSET_UTF8);
    const char *name = "fixture", *source = "written by nb_test_data.h";
    const char *names[16] = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7",
                             "c8", "c9", "c10", "c11", "c12", "c13", "c14", "c15"};
    float mean[4] = {0.5f, 0.4f, 0.3f, 0.2f}, std[4] = {0.25f, 0.2f, 0.3f, 0.1f};
    int channels = f->attr_channels ? f->attr_channels : f->C;
#define NB_FX_ATTR(nm, type, rank, n, buf) \
    if (!f->omit_attr || strcmp(f->omit_attr, nm)) nb_fixture_attr(file, nm, type, rank, n, buf)
    NB_FX_ATTR("name", str, 0, 1, &name);
    NB_FX_ATTR("source", str, 0, 1, &source);
    NB_FX_ATTR("classes", str, 1, (hsize_t)f->classes, names);
    NB_FX_ATTR("mean", H5T_NATIVE_FLOAT, 1, (hsize_t)f->C, mean);
    NB_FX_ATTR("std", H5T_NATIVE_FLOAT, 1, (hsize_t)f->C, std);
    NB_FX_ATTR("height", H5T_NATIVE_INT, 0, 1, &f->H);
    NB_FX_ATTR("width", H5T_NATIVE_INT, 0, 1, &f->W);
    NB_FX_ATTR("channels", H5T_NATIVE_INT, 0, 1, &channels);
#undef NB_FX_ATTR
    static const char *const split[2] = {"train", "test"};
    for (int s = 0; s < 2; s++) {
        int N = f->n[s];
        size_t ex = (size_t)f->C * (size_t)f->H * (size_t)f->W;
        hid_t g = H5Gcreate2(file, split[s], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        uint8_t *img = malloc(ex * (size_t)(N ? N : 1));
        float *fimg = malloc(sizeof(float) * ex * (size_t)(N ? N : 1));
        uint8_t *lab = malloc((size_t)(N ? N : 1));
        short *lab16 = malloc(sizeof(short) * (size_t)(N ? N : 1));
        for (int i = 0; i < N; i++) {
            for (int c = 0; c < f->C; c++)
                for (int y = 0; y < f->H; y++)
                    for (int x = 0; x < f->W; x++) {
                        size_t k = (size_t)i * ex + ((size_t)c * f->H + y) * f->W + x;
                        img[k] = nb_fixture_pixel(s, i, c, y, x);
                        fimg[k] = img[k];
                    }
            lab[i] = nb_fixture_label(s, i, f->classes);
            lab16[i] = lab[i];
        }
        if (s == 0 && f->bad_label && N) lab[N - 1] = (uint8_t)f->classes;
        char dname[64];
        snprintf(dname, sizeof dname, "%s/images", split[s]);
        if (!f->omit_dataset || strcmp(f->omit_dataset, dname)) {
            int fl = s == 0 && f->images_float, r3 = s == 0 && f->images_rank3;
            hsize_t d4[4] = {(hsize_t)N, (hsize_t)f->C, (hsize_t)f->H, (hsize_t)f->W};
            hsize_t d3[3] = {(hsize_t)N, (hsize_t)(f->C * f->H), (hsize_t)f->W};
            hid_t sp = r3 ? H5Screate_simple(3, d3, NULL) : H5Screate_simple(4, d4, NULL);
            hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
            if (f->chunk && N > 0 && !r3) {
                hsize_t ch[4] = {(hsize_t)(N < f->chunk ? N : f->chunk), (hsize_t)f->C,
                                 (hsize_t)f->H, (hsize_t)f->W};
                H5Pset_chunk(dcpl, 4, ch);
                H5Pset_shuffle(dcpl);
                H5Pset_deflate(dcpl, 4);
            }
            hid_t d = H5Dcreate2(g, "images", fl ? H5T_IEEE_F32LE : H5T_STD_U8LE, sp, H5P_DEFAULT,
                                 dcpl, H5P_DEFAULT);
            if (N) H5Dwrite(d, fl ? H5T_NATIVE_FLOAT : H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL,
                            H5P_DEFAULT, fl ? (void *)fimg : (void *)img);
            H5Dclose(d);
            H5Pclose(dcpl);
            H5Sclose(sp);
        }
        snprintf(dname, sizeof dname, "%s/labels", split[s]);
        if (!f->omit_dataset || strcmp(f->omit_dataset, dname)) {
            int i16 = s == 0 && f->labels_int16;
            hsize_t n = (hsize_t)N - (s == 1 && f->labels_short ? 1 : 0);
            hid_t sp = H5Screate_simple(1, &n, NULL);
            hid_t d = H5Dcreate2(g, "labels", i16 ? H5T_STD_I16LE : H5T_STD_U8LE, sp, H5P_DEFAULT,
                                 H5P_DEFAULT, H5P_DEFAULT);
            if (n) H5Dwrite(d, i16 ? H5T_NATIVE_SHORT : H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL,
                            H5P_DEFAULT, i16 ? (void *)lab16 : (void *)lab);
            H5Dclose(d);
            H5Sclose(sp);
        }
        free(img);
        free(fimg);
        free(lab);
        free(lab16);
        H5Gclose(g);
    }
    H5Tclose(str);
    return H5Fclose(file) < 0 ? -1 : 0;
}

/* A fake CIFAR-10 binary folder in dir: 5 train batches of per_batch
 * records, a test batch of n_test, batches.meta.txt. Record r of batch b
 * has label (b * 7 + r) % 10 and pixels nb_cifar_pixel(b, r, k). */
static inline uint8_t nb_cifar_pixel(int b, int r, int k) {
    return (uint8_t)((b * 31 + r * 17 + k * 5 + (k >> 7) * r) & 255);
}

static inline int nb_cifar_write(const char *dir, int per_batch, int n_test) {
    mkdir(dir, 0755);
    char p[4096];
    static const char *const files[6] = {"data_batch_1.bin", "data_batch_2.bin",
                                         "data_batch_3.bin", "data_batch_4.bin",
                                         "data_batch_5.bin", "test_batch.bin"};
    for (int b = 0; b < 6; b++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[b]);
        FILE *f = fopen(p, "wb");
        if (!f) return -1;
        int n = b < 5 ? per_batch : n_test;
        for (int r = 0; r < n; r++) {
            fputc((b * 7 + r) % 10, f);
            for (int k = 0; k < 3072; k++) fputc(nb_cifar_pixel(b, r, k), f);
        }
        fclose(f);
    }
    snprintf(p, sizeof p, "%s/batches.meta.txt", dir);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    fputs("airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n", f);
    fclose(f);
    return 0;
}

#endif
