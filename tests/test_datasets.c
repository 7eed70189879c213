/* datasets/: reader validation and errors, synthetic set, loader
 * (batches, normalisation, augmentation, determinism, streaming, prefetch),
 * importers (round trips through generated CIFAR binaries and JPEG/PNG
 * folders), contact sheets. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* jpeglib.h needs size_t and FILE first. */
#include <jpeglib.h>
#include <png.h>

#include "nb_test.h"
#include "nb_test_data.h"

/* ---------------------------------------------------------------- helpers */

static const char *tmp_path(const char *name) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", nb_test_tmpdir(), name);
    return b;
}

static const char *write_fixture(const char *name, const nb_fixture *f) {
    const char *p = tmp_path(name);
    ck_assert_int_eq(nb_fixture_write(p, f), 0);
    return p;
}

/* Everything one epoch of a loader produced. */
typedef struct {
    float *x;
    int32_t *y;
    uint32_t *idx;
    size_t n, batches, ex; /* examples, batches, floats per example */
    int last;              /* size of the last batch */
} epoch_dump;

static epoch_dump run_epoch(nb_loader *l, int epoch, size_t ex) {
    epoch_dump d = {0};
    d.ex = ex;
    size_t cap = 0;
    ck_assert_int_eq(nb_loader_start_epoch(l, epoch), NB_OK);
    const float *x;
    const int32_t *y;
    int n;
    for (;;) {
        ck_assert_int_eq(nb_loader_next(l, &x, &y, &n), NB_OK);
        if (n == 0) break;
        if (d.n + (size_t)n > cap) {
            cap = 2 * (d.n + (size_t)n);
            d.x = realloc(d.x, cap * ex * sizeof(float));
            d.y = realloc(d.y, cap * sizeof(int32_t));
            d.idx = realloc(d.idx, cap * sizeof(uint32_t));
        }
        memcpy(d.x + d.n * ex, x, (size_t)n * ex * sizeof(float));
        memcpy(d.y + d.n, y, (size_t)n * sizeof(int32_t));
        memcpy(d.idx + d.n, nb_loader_indices(l), (size_t)n * sizeof(uint32_t));
        d.n += (size_t)n;
        d.batches++;
        d.last = n;
    }
    /* The end is sticky. */
    ck_assert_int_eq(nb_loader_next(l, &x, &y, &n), NB_OK);
    ck_assert_int_eq(n, 0);
    return d;
}

static void dump_free(epoch_dump *d) {
    free(d->x);
    free(d->y);
    free(d->idx);
}

static int dumps_equal(const epoch_dump *a, const epoch_dump *b) {
    return a->n == b->n && a->batches == b->batches &&
           !memcmp(a->x, b->x, a->n * a->ex * sizeof(float)) &&
           !memcmp(a->y, b->y, a->n * sizeof(int32_t)) &&
           !memcmp(a->idx, b->idx, a->n * sizeof(uint32_t));
}

static size_t ex_floats(const nb_dataset *ds) {
    return (size_t)nb_dataset_channels(ds) * nb_dataset_height(ds) * nb_dataset_width(ds);
}

/* -------------------------------------------------------------- synthetic */

START_TEST(test_synthetic_deterministic) {
    nb_dataset *a, *b, *c, *t, *p;
    ck_assert_int_eq(nb_dataset_synthetic("shapes10", "train", 300, 3, &a), NB_OK);
    ck_assert_int_eq(nb_dataset_synthetic("shapes10", "train", 300, 3, &b), NB_OK);
    ck_assert_int_eq(nb_dataset_synthetic("shapes10", "train", 300, 4, &c), NB_OK);
    ck_assert_int_eq(nb_dataset_synthetic("shapes10", "test", 300, 3, &t), NB_OK);
    ck_assert_int_eq(nb_dataset_synthetic("shapes10", "train", 120, 3, &p), NB_OK);
    ck_assert_uint_eq(nb_dataset_count(a), 300);
    ck_assert_int_eq(nb_dataset_classes(a), 10);
    ck_assert_int_eq(nb_dataset_channels(a), 3);
    ck_assert_int_eq(nb_dataset_height(a), 32);
    ck_assert_int_eq(nb_dataset_width(a), 32);
    ck_assert_str_eq(nb_dataset_name(a), "shapes10");
    ck_assert_str_eq(nb_dataset_class_name(a, 0), "circle");
    ck_assert_str_eq(nb_dataset_class_name(a, 9), "checker");
    ck_assert_str_eq(nb_dataset_split(t), "test");
    ck_assert_int_eq(nb_dataset_streaming(a), 0);
    size_t bytes = 300 * 3072;
    uint8_t *ia = malloc(bytes), *ib = malloc(bytes), *ic = malloc(bytes), *it = malloc(bytes);
    uint8_t la[300];
    ck_assert_int_eq(nb_dataset_read(a, 0, 300, ia, la), NB_OK);
    ck_assert_int_eq(nb_dataset_read(b, 0, 300, ib, NULL), NB_OK);
    ck_assert_int_eq(nb_dataset_read(c, 0, 300, ic, NULL), NB_OK);
    ck_assert_int_eq(nb_dataset_read(t, 0, 300, it, NULL), NB_OK);
    ck_assert(!memcmp(ia, ib, bytes));           /* same seed: same images */
    ck_assert(memcmp(ia, ic, bytes) != 0);       /* another seed: others */
    ck_assert(memcmp(ia, it, bytes) != 0);       /* test is another draw */
    ck_assert(!memcmp(ia, ib, 120 * 3072));
    uint8_t *ip = malloc(120 * 3072);
    ck_assert_int_eq(nb_dataset_read(p, 0, 120, ip, NULL), NB_OK);
    ck_assert(!memcmp(ia, ip, 120 * 3072));      /* a smaller count is a prefix */
    int per_class[10] = {0};
    for (int i = 0; i < 300; i++) per_class[la[i]]++;
    for (int k = 0; k < 10; k++) ck_assert_int_eq(per_class[k], 30);
    /* The fixed normalisation constants match the data. */
    for (int ch = 0; ch < 3; ch++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < 300; i++)
            for (int k = 0; k < 1024; k++) {
                double v = ia[(size_t)i * 3072 + (size_t)ch * 1024 + k] / 255.0;
                s += v;
                s2 += v * v;
            }
        double m = s / (300 * 1024.0), sd = sqrt(s2 / (300 * 1024.0) - m * m);
        ck_assert_double_eq_tol(m, nb_dataset_mean(a)[ch], 0.05); /* 300 samples only */
        ck_assert_double_eq_tol(sd, nb_dataset_std(a)[ch], 0.05);
    }
    free(ia), free(ib), free(ic), free(it), free(ip);
    nb_dataset_free(a), nb_dataset_free(b), nb_dataset_free(c), nb_dataset_free(t);
    nb_dataset_free(p);
}
END_TEST

START_TEST(test_synthetic_errors) {
    nb_dataset *d = (nb_dataset *)1;
    ck_assert_int_eq(nb_dataset_synthetic("shapes11", "train", 0, 0, &d), NB_STATUS_BAD_INPUT);
    ck_assert_ptr_null(d);
    ck_assert(strstr(nb_last_error(), "shapes11") && strstr(nb_last_error(), "shapes10"));
    ck_assert_int_eq(nb_dataset_synthetic("shapes10", "val", 0, 0, &d), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "'val'") != NULL);
    ck_assert_int_eq(nb_dataset_open_source("synthetic:shapes10", "test", NULL, 1, &d), NB_OK);
    ck_assert_uint_eq(nb_dataset_count(d), 2000); /* default test size */
    nb_dataset_free(d);
}
END_TEST

/* ---------------------------------------------------------------- reader */

START_TEST(test_open_fixture_memory_and_stream) {
    nb_fixture f = nb_fixture_default();
    const char *p = write_fixture("ok.h5", &f);
    nb_dataset_opts so = nb_dataset_opts_default();
    so.force_stream = 1;
    for (int s = 0; s < 2; s++) {
        const char *split = s ? "test" : "train";
        nb_dataset *m, *st;
        ck_assert_int_eq(nb_dataset_open(p, split, NULL, &m), NB_OK);
        ck_assert_int_eq(nb_dataset_open(p, split, &so, &st), NB_OK);
        ck_assert_int_eq(nb_dataset_streaming(m), 0);
        ck_assert_int_eq(nb_dataset_streaming(st), 1);
        ck_assert_uint_eq(nb_dataset_count(m), (size_t)f.n[s]);
        ck_assert_str_eq(nb_dataset_name(m), "fixture");
        ck_assert_str_eq(nb_dataset_source(m), "written by nb_test_data.h");
        ck_assert_str_eq(nb_dataset_class_name(m, 3), "c3");
        ck_assert_float_eq(nb_dataset_mean(st)[1], 0.4f);
        ck_assert_float_eq(nb_dataset_std(st)[2], 0.3f);
        size_t ex = 3 * 8 * 8, n = (size_t)f.n[s];
        uint8_t *a = malloc(n * ex), *b = malloc(n * ex), la[64], lb[64];
        ck_assert_int_eq(nb_dataset_read(m, 0, n, a, la), NB_OK);
        ck_assert_int_eq(nb_dataset_read(st, 0, n, b, lb), NB_OK);
        ck_assert(!memcmp(a, b, n * ex));
        ck_assert(!memcmp(la, lb, n));
        for (int i = 0; i < (int)n; i++) {
            ck_assert_int_eq(la[i], nb_fixture_label(s, i, 10));
            ck_assert_int_eq(a[(size_t)i * ex + 2 * 64 + 5 * 8 + 7], nb_fixture_pixel(s, i, 2, 5, 7));
        }
        /* A read across chunk boundaries (chunks of 16 rows). */
        ck_assert_int_eq(nb_dataset_read(st, 13, 7, b, NULL), NB_OK);
        ck_assert(!memcmp(b, a + 13 * ex, 7 * ex));
        free(a), free(b);
        nb_dataset_free(m), nb_dataset_free(st);
    }
    /* Over the memory cap: streamed without being asked. */
    nb_dataset_opts cap = nb_dataset_opts_default();
    cap.mem_cap_bytes = 1000;
    nb_dataset *d;
    ck_assert_int_eq(nb_dataset_open(p, "train", &cap, &d), NB_OK);
    ck_assert_int_eq(nb_dataset_streaming(d), 1);
    nb_dataset_free(d);
}
END_TEST

START_TEST(test_open_cifar10_mini) {
    const char *p = nb_test_shared_data("cifar10-mini.h5");
    if (!p) {
        nb_test_skip("test_open_cifar10_mini", "../shared/data/cifar10-mini.h5 absent");
        return;
    }
    nb_dataset *tr, *te;
    ck_assert_int_eq(nb_dataset_open(p, "train", NULL, &tr), NB_OK);
    ck_assert_int_eq(nb_dataset_open(p, "test", NULL, &te), NB_OK);
    ck_assert_uint_eq(nb_dataset_count(tr), 1000);
    ck_assert_uint_eq(nb_dataset_count(te), 200);
    ck_assert_str_eq(nb_dataset_name(tr), "cifar10-mini");
    ck_assert_str_eq(nb_dataset_class_name(tr, 0), "airplane");
    ck_assert_str_eq(nb_dataset_class_name(tr, 9), "truck");
    ck_assert_float_eq_tol(nb_dataset_mean(tr)[0], 0.4876f, 1e-4f);
    ck_assert_float_eq_tol(nb_dataset_std(tr)[2], 0.2597f, 1e-4f);
    int per_class[10] = {0};
    for (size_t i = 0; i < 1000; i++) per_class[nb_dataset_labels(tr)[i]]++;
    for (int k = 0; k < 10; k++) ck_assert_int_eq(per_class[k], 100);
    /* Pixels of the file's mean/std agree with the attributes. */
    uint8_t *img = malloc(1000 * 3072);
    ck_assert_int_eq(nb_dataset_read(tr, 0, 1000, img, NULL), NB_OK);
    double s = 0;
    for (size_t k = 0; k < 1024 * 1000; k++) s += img[(k / 1024) * 3072 + k % 1024];
    ck_assert_double_eq_tol(s / (1024.0 * 1000) / 255.0, nb_dataset_mean(tr)[0], 1e-3);
    /* One epoch through the loader (augmented, prefetched). */
    nb_loader_opts o = nb_loader_opts_default();
    o.seed = 5;
    nb_loader *l;
    ck_assert_int_eq(nb_loader_new(tr, &o, &l), NB_OK);
    ck_assert_uint_eq(nb_loader_batches_per_epoch(l), 8);
    epoch_dump d = run_epoch(l, 0, 3072);
    ck_assert_uint_eq(d.n, 1000);
    ck_assert_int_eq(d.last, 1000 - 7 * 128);
    for (size_t i = 0; i < d.n; i++) ck_assert_int_eq(d.y[i], nb_dataset_labels(tr)[d.idx[i]]);
    dump_free(&d);
    nb_loader_free(l);
    free(img);
    nb_dataset_free(tr);
    nb_dataset_free(te);
}
END_TEST

/* Broken files: each must fail with the status and a message naming what. */
typedef struct {
    const char *what;
    const char *split;
    nb_status status;
    const char *expect; /* substring of the message */
    void (*make)(nb_fixture *f);
} bad_case;

static void mk_missing_labels(nb_fixture *f) { f->omit_dataset = "test/labels"; }
static void mk_missing_images(nb_fixture *f) { f->omit_dataset = "train/images"; }
static void mk_float_images(nb_fixture *f) { f->images_float = 1; }
static void mk_int16_labels(nb_fixture *f) { f->labels_int16 = 1; }
static void mk_bad_label(nb_fixture *f) { f->bad_label = 1; }
static void mk_empty_test(nb_fixture *f) { f->n[1] = 0; }
static void mk_no_mean(nb_fixture *f) { f->omit_attr = "mean"; }
static void mk_no_classes(nb_fixture *f) { f->omit_attr = "classes"; }
static void mk_no_height(nb_fixture *f) { f->omit_attr = "height"; }
static void mk_short_labels(nb_fixture *f) { f->labels_short = 1; }
static void mk_rank3(nb_fixture *f) { f->images_rank3 = 1; }
static void mk_channels(nb_fixture *f) { f->attr_channels = 1; }
static void mk_no_source(nb_fixture *f) { f->omit_attr = "source"; } /* allowed */

static const bad_case bad_cases[] = {
    {"missing /test/labels", "test", NB_STATUS_BAD_INPUT, "missing dataset /test/labels", mk_missing_labels},
    {"missing /train/images", "train", NB_STATUS_BAD_INPUT, "missing dataset /train/images", mk_missing_images},
    {"float32 images", "train", NB_STATUS_BAD_INPUT, "/train/images has type float32 with shape (40, 3, 8, 8), expected uint8", mk_float_images},
    {"int16 labels", "train", NB_STATUS_BAD_INPUT, "/train/labels has type int16 with shape (40,), expected uint8", mk_int16_labels},
    {"label 10 of 10 classes", "train", NB_STATUS_BAD_INPUT, "/train/labels[39] = 10 but the file has 10 classes", mk_bad_label},
    {"empty split", "test", NB_STATUS_BAD_INPUT, "split /test is empty: /test/images has shape (0, 3, 8, 8)", mk_empty_test},
    {"no mean", "train", NB_STATUS_BAD_INPUT, "missing root attribute 'mean'", mk_no_mean},
    {"no classes", "test", NB_STATUS_BAD_INPUT, "missing root attribute 'classes'", mk_no_classes},
    {"no height", "train", NB_STATUS_BAD_INPUT, "missing root attribute 'height'", mk_no_height},
    {"label count", "test", NB_STATUS_BAD_INPUT, "/test/labels has shape (19,) but /test/images has shape (20, 3, 8, 8): the counts differ", mk_short_labels},
    {"rank 3 images", "train", NB_STATUS_BAD_INPUT, "/train/images has shape (40, 24, 8), expected rank 4", mk_rank3},
    {"channels attribute", "train", NB_STATUS_BAD_INPUT, "root attribute 'mean' has shape (3,), expected 1 value (one per channel)", mk_channels},
    {"no source (allowed)", "train", NB_OK, "", mk_no_source},
};

START_TEST(test_bad_files) {
    const bad_case *c = &bad_cases[_i];
    nb_fixture f = nb_fixture_default();
    c->make(&f);
    char name[64];
    snprintf(name, sizeof name, "bad%d.h5", _i);
    const char *p = write_fixture(name, &f);
    nb_dataset *d = (nb_dataset *)1;
    nb_status st = nb_dataset_open(p, c->split, NULL, &d);
    ck_assert_msg(st == c->status, "%s: status %d (%s)", c->what, st, nb_last_error());
    if (st != NB_OK) {
        ck_assert_ptr_null(d);
        ck_assert_msg(strstr(nb_last_error(), c->expect) != NULL, "%s: message '%s'", c->what,
                      nb_last_error());
        ck_assert_msg(strstr(nb_last_error(), p) == nb_last_error(), "%s: no file name in '%s'",
                      c->what, nb_last_error());
    } else {
        nb_dataset_free(d);
    }
}
END_TEST

START_TEST(test_bad_files_other) {
    nb_dataset *d = (nb_dataset *)1;
    /* Not HDF5 at all. */
    const char *txt = tmp_path("notes.h5");
    FILE *f = fopen(txt, "w");
    fputs("this is not an HDF5 file\n", f);
    fclose(f);
    ck_assert_int_eq(nb_dataset_open(txt, "train", NULL, &d), NB_STATUS_BAD_INPUT);
    ck_assert_ptr_null(d);
    ck_assert(strstr(nb_last_error(), "not an HDF5 file") && strstr(nb_last_error(), txt));
    /* Truncated: a valid file cut in half. */
    nb_fixture fx = nb_fixture_default();
    fx.n[0] = 400;
    const char *p = write_fixture("trunc.h5", &fx);
    struct stat sb;
    stat(p, &sb);
    ck_assert_int_eq(truncate(p, sb.st_size / 2), 0);
    ck_assert_int_eq(nb_dataset_open(p, "train", NULL, &d), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "truncated") && strstr(nb_last_error(), p), "%s",
                  nb_last_error());
    /* Missing file, a directory, an unknown split. */
    ck_assert_int_eq(nb_dataset_open(tmp_path("nope.h5"), "train", NULL, &d), NB_STATUS_IO);
    ck_assert(strstr(nb_last_error(), "nope.h5: cannot open: No such file") != NULL);
    ck_assert_int_eq(nb_dataset_open(nb_test_tmpdir(), "train", NULL, &d), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "is a directory") != NULL);
    ck_assert_int_eq(nb_dataset_open(txt, "val", NULL, &d), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "unknown split 'val'") != NULL);
    /* A file whose chunk data is corrupt opens (the header is fine) but
     * reading fails with a message instead of a crash, in both modes. */
    fx = nb_fixture_default();
    fx.n[0] = 64;
    p = write_fixture("corrupt.h5", &fx);
    nb_dataset *ok;
    nb_dataset_opts so = nb_dataset_opts_default();
    so.force_stream = 1;
    ck_assert_int_eq(nb_dataset_open(p, "train", &so, &ok), NB_OK);
    nb_dataset_free(ok);
    FILE *g = fopen(p, "r+b");
    /* Overwrite the middle of the file (chunk data) with garbage. */
    fseek(g, 0, SEEK_END);
    long size = ftell(g);
    fseek(g, size / 2, SEEK_SET);
    for (int i = 0; i < 600; i++) fputc(0xA5, g);
    fclose(g);
    nb_status st = nb_dataset_open(p, "train", NULL, &d);
    if (st == NB_OK) { /* the garbage missed the images: nothing to check */
        nb_dataset_free(d);
    } else {
        ck_assert_msg(strstr(nb_last_error(), p) == nb_last_error(), "%s", nb_last_error());
    }
}
END_TEST

START_TEST(test_from_arrays_checks) {
    uint8_t img[2 * 3 * 4 * 4] = {0}, lab[2] = {0, 5};
    float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.2f, 0.2f, 0.2f};
    nb_dataset *d;
    ck_assert_int_eq(nb_dataset_from_arrays("x", 5, NULL, 3, 4, 4, 2, img, lab, mean, std, &d),
                     NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "label 5 at index 1") != NULL);
    lab[1] = 4;
    std[1] = 0.0f;
    ck_assert_int_eq(nb_dataset_from_arrays("x", 5, NULL, 3, 4, 4, 2, img, lab, mean, std, &d),
                     NB_STATUS_BAD_INPUT);
    std[1] = 0.2f;
    ck_assert_int_eq(nb_dataset_from_arrays("x", 5, NULL, 3, 4, 4, 2, img, lab, mean, std, &d),
                     NB_OK);
    ck_assert_str_eq(nb_dataset_class_name(d, 4), "4");
    nb_dataset_free(d);
}
END_TEST

/* ---------------------------------------------------------------- loader */

START_TEST(test_loader_batches) {
    nb_dataset *ds;
    ck_assert_int_eq(nb_dataset_synthetic("shapes10", "train", 1000, 1, &ds), NB_OK);
    for (int drop = 0; drop < 2; drop++) {
        nb_loader_opts o = nb_loader_opts_default();
        o.drop_last = drop;
        o.prefetch = drop; /* both paths */
        nb_loader *l;
        ck_assert_int_eq(nb_loader_new(ds, &o, &l), NB_OK);
        ck_assert_uint_eq(nb_loader_batches_per_epoch(l), drop ? 7 : 8);
        ck_assert_int_eq(nb_loader_out_h(l), 32);
        epoch_dump d = run_epoch(l, 0, 3072);
        ck_assert_uint_eq(d.batches, drop ? 7 : 8);
        ck_assert_uint_eq(d.n, drop ? 896 : 1000);
        ck_assert_int_eq(d.last, drop ? 128 : 104);
        char *seen = calloc(1000, 1);
        for (size_t i = 0; i < d.n; i++) {
            ck_assert_uint_lt(d.idx[i], 1000);
            ck_assert_int_eq(seen[d.idx[i]], 0);
            seen[d.idx[i]] = 1;
            ck_assert_int_eq(d.y[i], nb_dataset_labels(ds)[d.idx[i]]);
        }
        free(seen);
        dump_free(&d);
        nb_loader_free(l);
    }
    nb_loader_opts o = nb_loader_opts_default();
    nb_loader *l = (nb_loader *)1;
    o.batch = 0;
    ck_assert_int_eq(nb_loader_new(ds, &o, &l), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "batch = 0") != NULL);
    ck_assert_ptr_null(l);
    o = nb_loader_opts_default();
    o.batch = 2000;
    o.drop_last = 1;
    ck_assert_int_eq(nb_loader_new(ds, &o, &l), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "leaves no batch") != NULL);
    nb_dataset_free(ds);
}
END_TEST

START_TEST(test_loader_normalise_exact) {
    nb_fixture f = nb_fixture_default();
    const char *p = write_fixture("norm.h5", &f);
    nb_dataset *ds;
    ck_assert_int_eq(nb_dataset_open(p, "test", NULL, &ds), NB_OK);
    nb_loader_opts o = nb_loader_opts_default();
    o.augment = 0;
    o.shuffle = 0;
    o.batch = 7;
    nb_loader *l;
    ck_assert_int_eq(nb_loader_new(ds, &o, &l), NB_OK);
    epoch_dump d = run_epoch(l, 3, 192);
    ck_assert_uint_eq(d.n, 20);
    const float *mean = nb_dataset_mean(ds), *std = nb_dataset_std(ds);
    for (int i = 0; i < 20; i++) {
        ck_assert_uint_eq(d.idx[i], (uint32_t)i); /* no shuffle: file order */
        ck_assert_int_eq(d.y[i], nb_fixture_label(1, i, 10));
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++) {
                    float want = ((float)nb_fixture_pixel(1, i, c, y, x) / 255.0f - mean[c]) / std[c];
                    ck_assert_float_eq(d.x[(size_t)i * 192 + (size_t)c * 64 + y * 8 + x], want);
                }
    }
    dump_free(&d);
    nb_loader_free(l);
    nb_dataset_free(ds);
}
END_TEST

/* A dataset whose pixels identify their position: value = 1 + (y * W + x)
 * % 250 in every channel, so a crop's offset can be recovered. */
static nb_dataset *position_dataset(int n, int H, int W) {
    size_t ex = 3 * (size_t)H * W;
    uint8_t *img = malloc((size_t)n * ex), *lab = calloc((size_t)n, 1);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            for (int k = 0; k < H * W; k++) img[(size_t)i * ex + (size_t)c * H * W + k] = (uint8_t)(1 + k % 250);
    float mean[3] = {0, 0, 0}, std[3] = {1.0f / 255.0f, 1.0f / 255.0f, 1.0f / 255.0f};
    nb_dataset *ds;
    ck_assert_int_eq(nb_dataset_from_arrays("pos", 2, NULL, 3, H, W, (size_t)n, img, lab, mean, std, &ds), NB_OK);
    free(img);
    free(lab);
    return ds;
}

START_TEST(test_augment_crop_flip) {
    /* mean 0, std 1/255: normalised value = pixel value (0 = padding). */
    nb_dataset *ds = position_dataset(200, 12, 12);
    nb_loader_opts o = nb_loader_opts_default();
    o.seed = 9;
    nb_loader *l;
    ck_assert_int_eq(nb_loader_new(ds, &o, &l), NB_OK);
    epoch_dump d = run_epoch(l, 0, 3 * 144);
    int seen_dx[9] = {0}, seen_dy[9] = {0}, flips = 0;
    for (size_t i = 0; i < d.n; i++) {
        const float *x = d.x + i * d.ex;
        int found = 0;
        for (int fl = 0; fl < 2 && !found; fl++)
            for (int dy = -4; dy <= 4 && !found; dy++)
                for (int dx = -4; dx <= 4 && !found; dx++) {
                    int ok = 1;
                    for (int c = 0; c < 3 && ok; c++)
                        for (int y = 0; y < 12 && ok; y++)
                            for (int xx = 0; xx < 12 && ok; xx++) {
                                int sy = y + dy, sx = dx + (fl ? 11 - xx : xx);
                                float want = (sy < 0 || sy >= 12 || sx < 0 || sx >= 12) ? 0.0f : (float)(1 + (sy * 12 + sx) % 250);
                                ok = fabsf(x[c * 144 + y * 12 + xx] - want) < 1e-3f;
                            }
                    if (ok) {
                        found = 1;
                        seen_dx[dx + 4]++;
                        seen_dy[dy + 4]++;
                        flips += fl;
                    }
                }
        ck_assert_msg(found, "example %zu is not a padded crop of its source", i);
    }
    for (int k = 0; k < 9; k++) ck_assert(seen_dx[k] > 0 && seen_dy[k] > 0);
    ck_assert(flips > 60 && flips < 140);
    dump_free(&d);
    nb_loader_free(l);
    /* Evaluation: center crop (smaller output) and zero pad (bigger). */
    o.augment = 0;
    o.out_h = 8;
    o.out_w = 10;
    ck_assert_int_eq(nb_loader_new(ds, &o, &l), NB_OK);
    d = run_epoch(l, 0, 3 * 80);
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 10; x++)
            ck_assert_float_eq_tol(d.x[80 + y * 10 + x], (float)(1 + ((y + 2) * 12 + x + 1) % 250), 1e-3f);
    dump_free(&d);
    nb_loader_free(l);
    o.out_h = o.out_w = 16;
    ck_assert_int_eq(nb_loader_new(ds, &o, &l), NB_OK);
    d = run_epoch(l, 0, 3 * 256);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) {
            int sy = y - 2, sx = x - 2;
            float want = (sy < 0 || sy >= 12 || sx < 0 || sx >= 12) ? 0.0f : (float)(1 + (sy * 12 + sx) % 250);
            ck_assert_float_eq_tol(d.x[y * 16 + x], want, 1e-3f);
        }
    dump_free(&d);
    nb_loader_free(l);
    nb_dataset_free(ds);
}
END_TEST

START_TEST(test_augment_rrc) {
    /* A constant image stays constant through any resized crop; a ramp
     * stays within its range; the result is deterministic. */
    size_t ex = 3 * 20 * 24;
    uint8_t *img = malloc(2 * ex), lab[2] = {0, 1};
    for (size_t k = 0; k < ex; k++) {
        img[k] = 77;
        img[ex + k] = (uint8_t)(40 + (k % 24) * 5);
    }
    float mean[3] = {0, 0, 0}, std[3] = {1.0f / 255.0f, 1.0f / 255.0f, 1.0f / 255.0f};
    nb_dataset *ds;
    ck_assert_int_eq(nb_dataset_from_arrays("rrc", 2, NULL, 3, 20, 24, 2, img, lab, mean, std, &ds), NB_OK);
    nb_loader_opts o = nb_loader_opts_default();
    o.rrc = 1;
    o.out_h = 16;
    o.out_w = 16;
    o.batch = 2;
    o.shuffle = 0;
    nb_loader *l, *l2;
    ck_assert_int_eq(nb_loader_new(ds, &o, &l), NB_OK);
    o.prefetch = 0;
    ck_assert_int_eq(nb_loader_new(ds, &o, &l2), NB_OK);
    for (int e = 0; e < 20; e++) {
        epoch_dump a = run_epoch(l, e, 3 * 256), b = run_epoch(l2, e, 3 * 256);
        ck_assert(dumps_equal(&a, &b));
        for (int k = 0; k < 3 * 256; k++) {
            ck_assert_float_eq_tol(a.x[k], 77.0f, 1e-3f);
            ck_assert(a.x[3 * 256 + k] >= 40.0f - 1e-3f && a.x[3 * 256 + k] <= 155.0f + 1e-3f);
        }
        dump_free(&a);
        dump_free(&b);
    }
    nb_loader_free(l);
    nb_loader_free(l2);
    nb_dataset_free(ds);
    free(img);
}
END_TEST

START_TEST(test_loader_determinism) {
    nb_dataset *ds;
    ck_assert_int_eq(nb_dataset_synthetic("shapes10", "train", 600, 2, &ds), NB_OK);
    nb_loader_opts o = nb_loader_opts_default();
    o.seed = 11;
    o.batch = 50;
    nb_loader *l[3];
    int prefetch[3] = {0, 1, 3};
    for (int k = 0; k < 3; k++) {
        o.prefetch = prefetch[k];
        ck_assert_int_eq(nb_loader_new(ds, &o, &l[k]), NB_OK);
    }
    epoch_dump e0[3], e1[3];
    for (int k = 0; k < 3; k++) {
        e0[k] = run_epoch(l[k], 0, 3072);
        e1[k] = run_epoch(l[k], 1, 3072);
    }
    for (int k = 1; k < 3; k++) {
        ck_assert_msg(dumps_equal(&e0[0], &e0[k]), "prefetch %d differs at epoch 0", prefetch[k]);
        ck_assert_msg(dumps_equal(&e1[0], &e1[k]), "prefetch %d differs at epoch 1", prefetch[k]);
    }
    /* Another epoch: another order (and other crops). */
    ck_assert(memcmp(e0[0].idx, e1[0].idx, 600 * sizeof(uint32_t)) != 0);
    /* Resume: a fresh loader starting at epoch 1 sees the same batches. */
    o.prefetch = 2;
    nb_loader *r;
    ck_assert_int_eq(nb_loader_new(ds, &o, &r), NB_OK);
    epoch_dump re = run_epoch(r, 1, 3072);
    ck_assert(dumps_equal(&re, &e1[0]));
    /* Going back to epoch 0 reproduces it too. */
    epoch_dump again = run_epoch(l[1], 0, 3072);
    ck_assert(dumps_equal(&again, &e0[0]));
    /* Another seed: another order. */
    o.seed = 12;
    nb_loader *s;
    ck_assert_int_eq(nb_loader_new(ds, &o, &s), NB_OK);
    epoch_dump se = run_epoch(s, 0, 3072);
    ck_assert(memcmp(se.idx, e0[0].idx, 600 * sizeof(uint32_t)) != 0);
    dump_free(&re), dump_free(&again), dump_free(&se);
    for (int k = 0; k < 3; k++) {
        dump_free(&e0[k]);
        dump_free(&e1[k]);
        nb_loader_free(l[k]);
    }
    nb_loader_free(r);
    nb_loader_free(s);
    nb_dataset_free(ds);
}
END_TEST

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Streaming vs memory on one file: every epoch, each example exactly once;
 * the same augmented pixels for the same (epoch, index); identical with
 * any number of prefetch threads; a shuffled order. */
static void check_stream_vs_memory(const char *p, size_t buffer, int batch) {
    nb_dataset *mem, *str;
    nb_dataset_opts so = nb_dataset_opts_default();
    so.force_stream = 1;
    ck_assert_int_eq(nb_dataset_open(p, "train", NULL, &mem), NB_OK);
    ck_assert_int_eq(nb_dataset_open(p, "train", &so, &str), NB_OK);
    ck_assert_int_eq(nb_dataset_streaming(str), 1);
    size_t N = nb_dataset_count(mem), ex = ex_floats(mem);
    nb_loader_opts o = nb_loader_opts_default();
    o.seed = 21;
    o.batch = batch;
    o.shuffle_buffer = buffer;
    nb_loader *lm, *ls0, *ls2;
    o.prefetch = 1;
    ck_assert_int_eq(nb_loader_new(mem, &o, &lm), NB_OK);
    o.prefetch = 0;
    ck_assert_int_eq(nb_loader_new(str, &o, &ls0), NB_OK);
    o.prefetch = 2;
    ck_assert_int_eq(nb_loader_new(str, &o, &ls2), NB_OK);
    uint32_t *pos = malloc(N * sizeof(uint32_t)), *sorted = malloc(N * sizeof(uint32_t));
    for (int e = 0; e < 2; e++) {
        epoch_dump m = run_epoch(lm, e, ex), s0 = run_epoch(ls0, e, ex), s2 = run_epoch(ls2, e, ex);
        ck_assert(dumps_equal(&s0, &s2));
        ck_assert_uint_eq(s0.n, N);
        memcpy(sorted, s0.idx, N * sizeof(uint32_t));
        qsort(sorted, N, sizeof(uint32_t), cmp_u32);
        for (size_t i = 0; i < N; i++) ck_assert_uint_eq(sorted[i], i); /* a permutation */
        for (size_t i = 0; i < N; i++) pos[m.idx[i]] = (uint32_t)i;
        size_t in_order = 0;
        for (size_t i = 0; i < N; i++) {
            size_t j = pos[s0.idx[i]];
            ck_assert_int_eq(s0.y[i], m.y[j]);
            ck_assert(!memcmp(s0.x + i * ex, m.x + j * ex, ex * sizeof(float)));
            in_order += i > 0 && s0.idx[i] == s0.idx[i - 1] + 1;
        }
        ck_assert_msg(in_order < N / 4, "streaming order barely shuffled (%zu runs)", in_order);
        dump_free(&m), dump_free(&s0), dump_free(&s2);
    }
    free(pos);
    free(sorted);
    nb_loader_free(lm), nb_loader_free(ls0), nb_loader_free(ls2);
    nb_dataset_free(mem), nb_dataset_free(str);
}

START_TEST(test_stream_same_multiset) {
    nb_fixture f = nb_fixture_default();
    f.n[0] = 500;
    f.chunk = 32;
    check_stream_vs_memory(write_fixture("stream.h5", &f), 100, 64);
    /* Contiguous (unchunked) images and no shuffle buffer bigger than N. */
    f.chunk = 0;
    check_stream_vs_memory(write_fixture("stream_contig.h5", &f), 5000, 33);
}
END_TEST

START_TEST(test_stream_cifar10_mini) {
    const char *p = nb_test_shared_data("cifar10-mini.h5");
    if (!p) {
        nb_test_skip("test_stream_cifar10_mini", "../shared/data/cifar10-mini.h5 absent");
        return;
    }
    check_stream_vs_memory(p, 300, 128);
}
END_TEST

/* Whether prefetch hides the time to make a batch is a speed property: it
 * is measured by `nibble data bench --step-ms N` (the consumer's wait in the
 * steady state), not asserted here, since timings in unit tests flake on a
 * loaded machine. Prefetch correctness (same batches for any number of
 * prefetch threads) is tested above. */

START_TEST(test_restart_mid_epoch) {
    nb_fixture f = nb_fixture_default();
    f.n[0] = 300;
    const char *p = write_fixture("restart.h5", &f);
    nb_dataset_opts so = nb_dataset_opts_default();
    so.force_stream = 1;
    for (int stream = 0; stream < 2; stream++) {
        nb_dataset *ds;
        ck_assert_int_eq(nb_dataset_open(p, "train", stream ? &so : NULL, &ds), NB_OK);
        nb_loader_opts o = nb_loader_opts_default();
        o.batch = 10;
        o.prefetch = 3;
        o.shuffle_buffer = 50;
        nb_loader *l;
        ck_assert_int_eq(nb_loader_new(ds, &o, &l), NB_OK);
        epoch_dump full = run_epoch(l, 4, 192);
        for (int rep = 0; rep < 5; rep++) { /* abandon epochs after a few batches */
            ck_assert_int_eq(nb_loader_start_epoch(l, 4), NB_OK);
            const float *x;
            const int32_t *y;
            int n;
            for (int b = 0; b < rep; b++) {
                ck_assert_int_eq(nb_loader_next(l, &x, &y, &n), NB_OK);
                ck_assert_int_eq(n, 10);
                ck_assert(!memcmp(x, full.x + (size_t)b * 10 * 192, 10 * 192 * sizeof(float)));
            }
        }
        epoch_dump again = run_epoch(l, 4, 192);
        ck_assert(dumps_equal(&full, &again));
        dump_free(&full);
        dump_free(&again);
        ck_assert_int_eq(nb_loader_start_epoch(l, 5), NB_OK);
        nb_loader_free(l); /* mid-epoch, with workers busy */
        nb_dataset_free(ds);
    }
}
END_TEST

START_TEST(test_alloc_failures) {
    /* Every allocation failing in turn: a clean status, no crash, no leak. */
    int oks = 0;
    for (long k = 1; k < 200; k++) {
        nb_alloc_fail_after(k);
        nb_dataset *ds = NULL;
        nb_loader *l = NULL;
        nb_status st = nb_dataset_synthetic("shapes10", "train", 30, 0, &ds);
        if (st == NB_OK) {
            nb_loader_opts o = nb_loader_opts_default();
            o.batch = 8;
            o.prefetch = 2;
            o.rrc = (int)(k & 1);
            st = nb_loader_new(ds, &o, &l);
        }
        nb_alloc_fail_after(0);
        ck_assert(st == NB_OK || st == NB_STATUS_OOM);
        if (st == NB_OK) {
            oks++;
            epoch_dump d = run_epoch(l, 0, 3072);
            ck_assert_uint_eq(d.n, 30);
            dump_free(&d);
        }
        nb_loader_free(l);
        nb_dataset_free(ds);
        if (oks > 3) break;
    }
    ck_assert_int_gt(oks, 0);
}
END_TEST

/* ------------------------------------------------------------- importers */

START_TEST(test_import_cifar10_roundtrip) {
    const char *root = tmp_path("cifar-src");
    mkdir(root, 0755);
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/cifar-10-batches-bin", root);
    ck_assert_int_eq(nb_cifar_write(dir, 30, 25), 0);
    const char *out = tmp_path("cifar.h5");
    /* From the parent folder (as the tarball extracts). */
    ck_assert_int_eq(nb_import_cifar10(root, out, NULL), NB_OK);
    nb_dataset *tr, *te;
    ck_assert_int_eq(nb_dataset_open(out, "train", NULL, &tr), NB_OK);
    ck_assert_int_eq(nb_dataset_open(out, "test", NULL, &te), NB_OK);
    ck_assert_uint_eq(nb_dataset_count(tr), 150);
    ck_assert_uint_eq(nb_dataset_count(te), 25);
    ck_assert_str_eq(nb_dataset_name(tr), "cifar10");
    ck_assert_str_eq(nb_dataset_class_name(tr, 1), "automobile");
    uint8_t *img = malloc(150 * 3072), lab[150];
    ck_assert_int_eq(nb_dataset_read(tr, 0, 150, img, lab), NB_OK);
    double sum[3] = {0}, sq[3] = {0};
    for (int i = 0; i < 150; i++) {
        int b = i / 30, r = i % 30;
        ck_assert_int_eq(lab[i], (b * 7 + r) % 10);
        for (int k = 0; k < 3072; k++) {
            ck_assert_int_eq(img[(size_t)i * 3072 + k], nb_cifar_pixel(b, r, k));
            double v = img[(size_t)i * 3072 + k] / 255.0;
            sum[k / 1024] += v;
            sq[k / 1024] += v * v;
        }
    }
    for (int c = 0; c < 3; c++) { /* mean/std over train, population std */
        double m = sum[c] / (150 * 1024.0);
        ck_assert_double_eq_tol(nb_dataset_mean(tr)[c], m, 1e-6);
        ck_assert_double_eq_tol(nb_dataset_std(tr)[c], sqrt(sq[c] / (150 * 1024.0) - m * m), 1e-6);
    }
    ck_assert_int_eq(nb_dataset_read(te, 0, 25, img, lab), NB_OK);
    for (int r = 0; r < 25; r++) {
        ck_assert_int_eq(lab[r], (5 * 7 + r) % 10);
        ck_assert(img[(size_t)r * 3072 + 1000] == nb_cifar_pixel(5, r, 1000));
    }
    /* The layout is exactly the schema's. */
    hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/train/images", H5P_DEFAULT);
    hid_t dcpl = H5Dget_create_plist(d);
    hsize_t chunk[4];
    ck_assert_int_eq(H5Pget_layout(dcpl), H5D_CHUNKED);
    ck_assert_int_eq(H5Pget_chunk(dcpl, 4, chunk), 4);
    ck_assert_uint_eq(chunk[0], 150);
    ck_assert_uint_eq(chunk[1], 3);
    ck_assert_int_eq(H5Pget_nfilters(dcpl), 2);
    unsigned flags, cd[4];
    size_t ncd = 4;
    ck_assert_int_eq(H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, 0, NULL, NULL), H5Z_FILTER_SHUFFLE);
    ncd = 4;
    ck_assert_int_eq(H5Pget_filter2(dcpl, 1, &flags, &ncd, cd, 0, NULL, NULL), H5Z_FILTER_DEFLATE);
    ck_assert_uint_eq(cd[0], 4);
    H5Pclose(dcpl);
    H5Dclose(d);
    hid_t a = H5Aopen(f, "classes", H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    ck_assert_int_gt(H5Tis_variable_str(t), 0);
    ck_assert_int_eq(H5Tget_cset(t), H5T_CSET_UTF8);
    H5Tclose(t);
    H5Aclose(a);
    a = H5Aopen(f, "height", H5P_DEFAULT);
    t = H5Aget_type(a);
    ck_assert(H5Tequal(t, H5T_STD_I32LE) > 0);
    H5Tclose(t);
    H5Aclose(a);
    a = H5Aopen(f, "mean", H5P_DEFAULT);
    t = H5Aget_type(a);
    ck_assert(H5Tequal(t, H5T_IEEE_F32LE) > 0);
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(f);
    /* An existing output is not replaced unless asked. */
    ck_assert_int_eq(nb_import_cifar10(dir, out, NULL), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "already exists") != NULL);
    nb_import_opts o = nb_import_opts_default();
    o.overwrite = 1;
    o.name = "cifar10-test";
    ck_assert_int_eq(nb_import_cifar10(dir, out, &o), NB_OK);
    nb_dataset *again;
    ck_assert_int_eq(nb_dataset_open(out, "train", NULL, &again), NB_OK);
    ck_assert_str_eq(nb_dataset_name(again), "cifar10-test");
    nb_dataset_free(again);
    free(img);
    nb_dataset_free(tr);
    nb_dataset_free(te);
}
END_TEST

START_TEST(test_import_cifar10_errors) {
    const char *dir = tmp_path("cifar-bad");
    ck_assert_int_eq(nb_cifar_write(dir, 4, 3), 0);
    const char *out = tmp_path("cifar-bad.h5");
    char p[1200];
    /* A truncated batch. */
    snprintf(p, sizeof p, "%s/data_batch_3.bin", dir);
    ck_assert_int_eq(truncate(p, 3073 * 4 - 100), 0);
    ck_assert_int_eq(nb_import_cifar10(dir, out, NULL), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "data_batch_3.bin: size 12192 is not a positive multiple of 3073"));
    ck_assert_int_eq(access(out, F_OK), -1); /* nothing written */
    /* A label out of range (in a batch rewritten whole). */
    ck_assert_int_eq(nb_cifar_write(dir, 4, 3), 0);
    snprintf(p, sizeof p, "%s/test_batch.bin", dir);
    FILE *f = fopen(p, "r+b");
    fseek(f, 2 * 3073, SEEK_SET);
    fputc(12, f);
    fclose(f);
    ck_assert_int_eq(nb_import_cifar10(dir, out, NULL), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "test_batch.bin: record 2 has label 12"));
    ck_assert_int_eq(access(out, F_OK), -1);
    /* No temporary left behind either. */
    char cmd[1300], listing[256];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp", nb_test_tmpdir());
    nb_test_sh(cmd, listing, sizeof listing);
    ck_assert_int_eq(atoi(listing), 0);
    /* Missing batch, wrong folder, bad meta file. */
    ck_assert_int_eq(nb_cifar_write(dir, 4, 3), 0);
    snprintf(p, sizeof p, "%s/data_batch_5.bin", dir);
    unlink(p);
    ck_assert_int_eq(nb_import_cifar10(dir, out, NULL), NB_STATUS_IO);
    ck_assert(strstr(nb_last_error(), "data_batch_5.bin: cannot open"));
    ck_assert_int_eq(nb_import_cifar10(nb_test_tmpdir(), out, NULL), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "no data_batch_1.bin"));
    ck_assert_int_eq(nb_cifar_write(dir, 4, 3), 0);
    snprintf(p, sizeof p, "%s/batches.meta.txt", dir);
    f = fopen(p, "w");
    fputs("cat\ndog\n", f);
    fclose(f);
    ck_assert_int_eq(nb_import_cifar10(dir, out, NULL), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "expected 10 class names (one per line), found 2"));
}
END_TEST

/* Image writers for the folder fixtures. */
static void write_png(const char *path, const uint8_t *px, int w, int h, int gray) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = gray ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
    ck_assert(png_image_write_to_file(&img, path, 0, px, 0, NULL));
}

static void write_jpeg(const char *path, const uint8_t *px, int w, int h) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 80, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * (size_t)w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
}

/* Reference decode with plain libjpeg (default settings): (h, w, 3). */
static uint8_t *read_jpeg(const char *path, int *w, int *h) {
    struct jpeg_decompress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_decompress(&c);
    FILE *f = fopen(path, "rb");
    jpeg_stdio_src(&c, f);
    jpeg_read_header(&c, TRUE);
    c.out_color_space = JCS_RGB;
    jpeg_start_decompress(&c);
    *w = (int)c.output_width;
    *h = (int)c.output_height;
    uint8_t *px = malloc((size_t)*w * (size_t)*h * 3);
    while (c.output_scanline < c.output_height) {
        JSAMPROW row = px + (size_t)c.output_scanline * (size_t)*w * 3;
        jpeg_read_scanlines(&c, &row, 1);
    }
    jpeg_finish_decompress(&c);
    jpeg_destroy_decompress(&c);
    fclose(f);
    return px;
}

/* Expected (3, S, S) of a file in the folder fixture: PNG pixels exactly,
 * JPEG as libjpeg decodes it; center crop when the image is not square. */
typedef struct {
    char path[1200];
    int label;
} folder_item;

static void expected_planar(const folder_item *it, int S, uint8_t *out) {
    int w, h, gray = strstr(it->path, "gray") != NULL;
    uint8_t *px;
    if (strstr(it->path, ".jpg") || strstr(it->path, ".JPEG")) {
        px = read_jpeg(it->path, &w, &h);
    } else {
        png_image img;
        memset(&img, 0, sizeof img);
        img.version = PNG_IMAGE_VERSION;
        ck_assert(png_image_begin_read_from_file(&img, it->path));
        img.format = gray ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
        w = (int)img.width;
        h = (int)img.height;
        px = malloc(PNG_IMAGE_SIZE(img));
        ck_assert(png_image_finish_read(&img, NULL, px, 0, NULL));
    }
    int x0 = (w - S) / 2, y0 = (h - S) / 2, cs = gray ? 1 : 3;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                out[(c * S + y) * S + x] = px[((size_t)(y0 + y) * (size_t)w + (size_t)(x0 + x)) * (size_t)cs + (size_t)(gray ? 0 : c)];
    free(px);
}

/* dir/{train,val}/<class>/ with PNG, JPEG, gray PNG and a wider PNG. */
static int make_folder(const char *dir, folder_item *items, int S) {
    static const char *const classes[3] = {"cat", "dog", "emu"};
    char p[1100];
    int n = 0;
    mkdir(dir, 0755);
    for (int s = 0; s < 2; s++) {
        snprintf(p, sizeof p, "%s/%s", dir, s ? "val" : "train");
        mkdir(p, 0755);
        for (int k = 0; k < (s ? 2 : 3); k++) {
            snprintf(p, sizeof p, "%s/%s/%s", dir, s ? "val" : "train", classes[k]);
            mkdir(p, 0755);
            for (int j = 0; j < 4; j++) {
                int w = j == 3 ? S + 6 : S, h = S;
                uint8_t *px = malloc((size_t)w * h * 3);
                for (int i = 0; i < w * h * 3; i++)
                    px[i] = (uint8_t)((i * 7 + j * 40 + k * 90 + s * 13 + (i / 7) * (i % 5)) & 255);
                folder_item *it = &items[n++];
                it->label = k;
                static const char *const names[4] = {"a.png", "b.jpg", "c_gray.PNG", "d.png"};
                snprintf(it->path, sizeof it->path, "%s/%s", p, names[j]);
                if (j == 1) write_jpeg(it->path, px, w, h);
                else write_png(it->path, px, w, h, j == 2);
                free(px);
            }
        }
        /* Files that are not images are ignored. */
        snprintf(p, sizeof p, "%s/%s/cat/notes.txt", dir, s ? "val" : "train");
        FILE *f = fopen(p, "w");
        fputs("ignored", f);
        fclose(f);
    }
    return n;
}

START_TEST(test_import_folder_roundtrip) {
    const int S = 16;
    folder_item items[32];
    const char *dir = tmp_path("folder");
    int n = make_folder(dir, items, S);
    ck_assert_int_eq(n, 20);
    const char *out = tmp_path("folder.h5");
    nb_import_opts o = nb_import_opts_default();
    o.size = S;
    o.shuffle = 0;
    o.threads = 2;
    ck_assert_int_eq(nb_import_folder(dir, out, &o), NB_OK);
    nb_dataset *sp[2];
    ck_assert_int_eq(nb_dataset_open(out, "train", NULL, &sp[0]), NB_OK);
    ck_assert_int_eq(nb_dataset_open(out, "test", NULL, &sp[1]), NB_OK);
    ck_assert_uint_eq(nb_dataset_count(sp[0]), 12);
    ck_assert_uint_eq(nb_dataset_count(sp[1]), 8);
    ck_assert_int_eq(nb_dataset_classes(sp[0]), 3);
    ck_assert_str_eq(nb_dataset_class_name(sp[0], 2), "emu");
    ck_assert_str_eq(nb_dataset_name(sp[0]), "folder");
    size_t ex = 3 * S * S;
    uint8_t *got = malloc(12 * ex), want[3 * 16 * 16], lab[12];
    /* Files sorted by name within a class: a.png, b.jpg, c_gray.PNG, d.png. */
    for (int s = 0; s < 2; s++) {
        int cnt = (int)nb_dataset_count(sp[s]);
        ck_assert_int_eq(nb_dataset_read(sp[s], 0, (size_t)cnt, got, lab), NB_OK);
        for (int i = 0; i < cnt; i++) {
            const folder_item *it = &items[s * 12 + i];
            ck_assert_int_eq(lab[i], it->label);
            expected_planar(it, S, want);
            ck_assert_msg(!memcmp(got + (size_t)i * ex, want, ex), "pixels of %s differ", it->path);
        }
    }
    nb_dataset_free(sp[1]);
    /* Default: train shuffled once: the same examples in another order. */
    const char *out2 = tmp_path("folder-shuffled.h5");
    o.shuffle = 1;
    o.name = "shuffled";
    ck_assert_int_eq(nb_import_folder(dir, out2, &o), NB_OK);
    nb_dataset *sh;
    ck_assert_int_eq(nb_dataset_open(out2, "train", NULL, &sh), NB_OK);
    uint8_t *got2 = malloc(12 * ex), lab2[12];
    ck_assert_int_eq(nb_dataset_read(sh, 0, 12, got2, lab2), NB_OK);
    ck_assert_int_eq(nb_dataset_read(sp[0], 0, 12, got, lab), NB_OK);
    int moved = 0;
    for (int i = 0; i < 12; i++) {
        int match = -1;
        for (int j = 0; j < 12 && match < 0; j++)
            if (!memcmp(got2 + (size_t)i * ex, got + (size_t)j * ex, ex) && lab2[i] == lab[j]) match = j;
        ck_assert_int_ge(match, 0);
        moved += match != i;
    }
    ck_assert_int_gt(moved, 0);
    free(got2);
    nb_dataset_free(sh);
    /* Resizing: a constant image stays constant; a 2x downscale averages. */
    const char *rdir = tmp_path("resize");
    char p[1200];
    mkdir(rdir, 0755);
    for (int s = 0; s < 2; s++) {
        snprintf(p, sizeof p, "%s/%s", rdir, s ? "test" : "train");
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/%s/k", rdir, s ? "test" : "train");
        mkdir(p, 0755);
        uint8_t px[40 * 32 * 3];
        for (int i = 0; i < 40 * 32; i++) {
            int x = i % 40;
            px[3 * i] = 200;
            px[3 * i + 1] = (uint8_t)(x % 2 ? 100 : 0); /* alternating columns */
            px[3 * i + 2] = 17;
        }
        snprintf(p, sizeof p, "%s/%s/k/wide.png", rdir, s ? "test" : "train");
        write_png(p, px, 40, 32, 0);
    }
    o.size = 16;
    o.name = NULL;
    const char *rout = tmp_path("resize.h5");
    ck_assert_int_eq(nb_import_folder(rdir, rout, &o), NB_OK);
    nb_dataset *rd;
    ck_assert_int_eq(nb_dataset_open(rout, "test", NULL, &rd), NB_OK);
    ck_assert_str_eq(nb_dataset_source(rd) + strlen(nb_dataset_source(rd)) - 6, "seed 0");
    ck_assert_int_eq(nb_dataset_read(rd, 0, 1, got, NULL), NB_OK);
    for (int k = 0; k < 256; k++) {
        ck_assert_int_eq(got[k], 200);
        ck_assert_int_eq(got[256 + k], 50); /* antialiased: mean of 0 and 100 */
        ck_assert_int_eq(got[512 + k], 17);
    }
    nb_dataset_free(rd);
    free(got);
    nb_dataset_free(sp[0]);
}
END_TEST

START_TEST(test_import_folder_errors) {
    nb_import_opts o = nb_import_opts_default();
    o.size = 8;
    const char *out = tmp_path("ferr.h5");
    const char *dir = tmp_path("ferr");
    char p[1200];
    mkdir(dir, 0755);
    ck_assert_int_eq(nb_import_folder(dir, out, &o), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "no train/ folder"));
    snprintf(p, sizeof p, "%s/train", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/train/a", dir);
    mkdir(p, 0755);
    ck_assert_int_eq(nb_import_folder(dir, out, &o), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "no val/ or test/ folder"));
    snprintf(p, sizeof p, "%s/val", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/val/zebra", dir);
    mkdir(p, 0755);
    uint8_t px[8 * 8 * 3] = {0};
    snprintf(p, sizeof p, "%s/train/a/x.png", dir);
    write_png(p, px, 8, 8, 0);
    ck_assert_int_eq(nb_import_folder(dir, out, &o), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "class 'zebra' is not among the 1 train classes"));
    snprintf(p, sizeof p, "%s/val/zebra", dir);
    rmdir(p);
    snprintf(p, sizeof p, "%s/val/a", dir);
    mkdir(p, 0755);
    ck_assert_int_eq(nb_import_folder(dir, out, &o), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "val/a: empty class folder"));
    /* A corrupt image: the error names it; nothing is written. */
    snprintf(p, sizeof p, "%s/val/a/broken.jpg", dir);
    FILE *f = fopen(p, "wb");
    fputc(0xff, f), fputc(0xd8, f), fputc(0xff, f);
    fputs("garbage", f);
    fclose(f);
    ck_assert_int_eq(nb_import_folder(dir, out, &o), NB_STATUS_BAD_INPUT);
    ck_assert_msg(strstr(nb_last_error(), "broken.jpg: cannot decode JPEG"), "%s", nb_last_error());
    ck_assert_int_eq(access(out, F_OK), -1);
    snprintf(p, sizeof p, "%s/val/a/text.png", dir);
    f = fopen(p, "w");
    fputs("not a png", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/val/a/broken.jpg", dir);
    unlink(p);
    ck_assert_int_eq(nb_import_folder(dir, out, &o), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "text.png: not a JPEG or PNG image"));
    o.size = 0;
    ck_assert_int_eq(nb_import_folder(dir, out, &o), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "size 0"));
}
END_TEST

START_TEST(test_contact_sheet) {
    nb_dataset *ds;
    ck_assert_int_eq(nb_dataset_synthetic("shapes10", "test", 100, 0, &ds), NB_OK);
    const char *p = tmp_path("sheet.png");
    ck_assert_int_eq(nb_dataset_contact_sheet(ds, 5, p), NB_OK);
    uint8_t *px;
    int w, h;
    ck_assert_int_eq(nb_image_load(p, &px, &w, &h), NB_OK);
    /* 5 tiles of 64 px (32 scaled 2x), 2 px gaps, a label column for 8
     * characters ("triangle") of 12 px. */
    ck_assert_int_eq(w, 8 * 6 * 2 + 4 + 5 * 66 + 2);
    ck_assert_int_eq(h, 10 * 66 + 2);
    /* Tile (row 3, column 2) is example 3 + 10 * 2 (labels cycle), scaled. */
    uint8_t ex[3072];
    ck_assert_int_eq(nb_dataset_read(ds, 23, 1, ex, NULL), NB_OK);
    int x0 = 8 * 6 * 2 + 4 + 2 * 66, y0 = 2 + 3 * 66;
    for (int c = 0; c < 3; c++)
        ck_assert_int_eq(px[((size_t)(y0 + 9) * (size_t)w + (size_t)(x0 + 21)) * 3 + (size_t)c],
                         ex[c * 1024 + 4 * 32 + 10]);
    nb_free(px);
    ck_assert_int_eq(nb_dataset_contact_sheet(ds, 0, p), NB_STATUS_BAD_INPUT);
    ck_assert_int_eq(nb_dataset_contact_sheet(ds, 2, "/nonexistent-dir/x.png"), NB_STATUS_IO);
    nb_dataset_free(ds);
}
END_TEST

static Suite *datasets_suite(void) {
    Suite *s = suite_create("datasets");
    TCase *tc = tcase_create("datasets");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_synthetic_deterministic);
    tcase_add_test(tc, test_synthetic_errors);
    tcase_add_test(tc, test_open_fixture_memory_and_stream);
    tcase_add_test(tc, test_open_cifar10_mini);
    tcase_add_loop_test(tc, test_bad_files, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, test_bad_files_other);
    tcase_add_test(tc, test_from_arrays_checks);
    tcase_add_test(tc, test_loader_batches);
    tcase_add_test(tc, test_loader_normalise_exact);
    tcase_add_test(tc, test_augment_crop_flip);
    tcase_add_test(tc, test_augment_rrc);
    tcase_add_test(tc, test_loader_determinism);
    tcase_add_test(tc, test_stream_same_multiset);
    tcase_add_test(tc, test_stream_cifar10_mini);
    tcase_add_test(tc, test_restart_mid_epoch);
    tcase_add_test(tc, test_alloc_failures);
    tcase_add_test(tc, test_import_cifar10_roundtrip);
    tcase_add_test(tc, test_import_cifar10_errors);
    tcase_add_test(tc, test_import_folder_roundtrip);
    tcase_add_test(tc, test_import_folder_errors);
    tcase_add_test(tc, test_contact_sheet);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(datasets_suite()); }
