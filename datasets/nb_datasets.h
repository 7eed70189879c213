/*
 * nb_datasets.h — image-classification data for training and evaluation.
 *
 * A dataset is one split ("train" or "test") of an HDF5 file in the
 * project's schema (../shared/data/README.md: /train and /test groups with
 * images uint8 (N, C, H, W) and labels uint8 (N), root attributes name,
 * classes, mean, std, height, width, channels, source), or of a built-in
 * synthetic set generated in memory ("shapes10"). Opening validates the
 * schema; a split that fits under the memory cap is loaded whole, a bigger
 * one is streamed chunk by chunk. A loader turns a dataset into batches of
 * normalised floats: per-epoch shuffling, augmentation (pad + random crop,
 * horizontal flip, random-resized-crop) and background prefetch threads.
 * Everything random depends only on (seed, epoch, example index), so
 * batches are identical with or without prefetch, in memory or streamed
 * (same multiset per epoch), and after a resume at epoch k.
 *
 * Example:
 *     nb_dataset *ds;
 *     if (nb_dataset_open("cifar10.h5", "train", NULL, &ds) != NB_OK)
 *         fprintf(stderr, "%s\n", nb_last_error());
 *     nb_loader_opts o = nb_loader_opts_default();   // batch 128, pad 4, flip
 *     o.seed = 42;
 *     nb_loader *l;
 *     nb_loader_new(ds, &o, &l);
 *     for (int epoch = 0; epoch < 10; epoch++) {
 *         nb_loader_start_epoch(l, epoch);
 *         const float *x; const int32_t *y; int n;
 *         while (nb_loader_next(l, &x, &y, &n) == NB_OK && n > 0)
 *             train_step(x, y, n);              // x: (n, C, H, W)
 *     }
 *     nb_loader_free(l);
 *     nb_dataset_free(ds);
 */
#ifndef NB_DATASETS_H
#define NB_DATASETS_H

#include "nb_core.h"

/* ------------------------------------------------------------- datasets */

typedef struct nb_dataset nb_dataset; /* one split, read-only after open */

typedef struct {
    size_t mem_cap_bytes; /* load the split whole when its images fit; 0 = 4 GiB */
    int force_stream;     /* stream chunk by chunk even when it would fit */
} nb_dataset_opts;

nb_dataset_opts nb_dataset_opts_default(void);

/* Open one split ("train" or "test") of an HDF5 file in the schema and
 * validate it (attributes, dtypes, ranks, counts, labels < classes). opts
 * may be NULL (defaults). *out is owned by the caller (nb_dataset_free).
 * Errors: NB_STATUS_IO when the file cannot be opened, NB_STATUS_BAD_INPUT
 * for anything wrong inside it (the message names file, dataset, shape). */
nb_status nb_dataset_open(const char *path, const char *split, const nb_dataset_opts *opts,
                          nb_dataset **out);

/* A built-in synthetic split generated in memory, deterministically from
 * seed: name "shapes10" (10 classes of coloured shapes, 3x32x32). count 0
 * = default (10000 train, 2000 test). Train and test of one seed are
 * independent draws. Owned by the caller. */
nb_status nb_dataset_synthetic(const char *name, const char *split, size_t count, uint64_t seed,
                               nb_dataset **out);

/* Either of the above from one string: "synthetic:NAME" (default count)
 * or a path. seed is used only by synthetic sets. */
nb_status nb_dataset_open_source(const char *source, const char *split,
                                 const nb_dataset_opts *opts, uint64_t seed, nb_dataset **out);

/* An in-memory split from caller arrays (copied): images (count, C, H, W),
 * labels (count) < classes, mean/std (C), class_names (classes) or NULL
 * ("0", "1", ...). For tests and for data made by other code. */
nb_status nb_dataset_from_arrays(const char *name, int classes, const char *const *class_names,
                                 int C, int H, int W, size_t count, const uint8_t *images,
                                 const uint8_t *labels, const float *mean, const float *std,
                                 nb_dataset **out);

void nb_dataset_free(nb_dataset *ds);

size_t nb_dataset_count(const nb_dataset *ds);
int nb_dataset_classes(const nb_dataset *ds);
int nb_dataset_channels(const nb_dataset *ds); /* C */
int nb_dataset_height(const nb_dataset *ds);   /* H */
int nb_dataset_width(const nb_dataset *ds);    /* W */
const float *nb_dataset_mean(const nb_dataset *ds); /* (C), pixels /255 */
const float *nb_dataset_std(const nb_dataset *ds);  /* (C), population std */
const char *nb_dataset_class_name(const nb_dataset *ds, int i); /* borrowed */
const char *nb_dataset_name(const nb_dataset *ds);              /* borrowed */
const char *nb_dataset_split(const nb_dataset *ds);             /* "train"|"test" */
const char *nb_dataset_source(const nb_dataset *ds); /* provenance text, "" if none */
const char *nb_dataset_path(const nb_dataset *ds);   /* file path, "" if synthetic */
int nb_dataset_streaming(const nb_dataset *ds);      /* 1 when streamed from disk */
/* All labels (count), always in memory; borrowed. */
const uint8_t *nb_dataset_labels(const nb_dataset *ds);
/* Copy raw examples [first, first + n) into images (n, C, H, W) and labels
 * (n) (either may be NULL). Reads the file in streaming mode (thread-safe).
 * Errors: NB_STATUS_IO/BAD_INPUT when the file cannot be read. */
nb_status nb_dataset_read(const nb_dataset *ds, size_t first, size_t n, uint8_t *images,
                          uint8_t *labels);

/* --------------------------------------------------------------- loader */

typedef struct nb_loader nb_loader;

typedef struct {
    int batch;             /* examples per batch (default 128) */
    int drop_last;         /* drop the last partial batch (default 0: keep) */
    int shuffle;           /* new order every epoch (default 1) */
    int augment;           /* apply pad/flip/rrc (default 1); off = eval */
    int pad;               /* zero padding for the random crop (default 4) */
    int flip;              /* random horizontal flip (default 1) */
    int rrc;               /* random-resized-crop (scale 0.08-1, ratio 3/4-4/3)
                              instead of pad + crop (default 0) */
    int out_h, out_w;      /* output size, 0 = native; without augmentation
                              a different size is a center crop (or zero pad) */
    int prefetch;          /* background threads preparing batches ahead
                              (default 1); 0 = made in nb_loader_next */
    uint64_t seed;         /* order and augmentation (default 0) */
    size_t shuffle_buffer; /* streaming only: examples in the shuffle buffer,
                              0 = as many as fit in min(64 MiB, mem cap / 2) */
} nb_loader_opts;

nb_loader_opts nb_loader_opts_default(void);

/* A loader over ds (borrowed: must outlive the loader). Owned by the
 * caller (nb_loader_free). Errors: NB_STATUS_BAD_INPUT for bad options
 * (message names the option), NB_STATUS_OOM. */
nb_status nb_loader_new(nb_dataset *ds, const nb_loader_opts *o, nb_loader **out);
void nb_loader_free(nb_loader *l);

/* Begin epoch `epoch` (>= 0), abandoning any unfinished one. The order and
 * the augmentation depend only on (seed, epoch), so a resumed run at epoch
 * k sees the same batches. Prefetch threads start working at once. */
nb_status nb_loader_start_epoch(nb_loader *l, int epoch);

/* Next batch: images (n, C, out_h, out_w) normalised floats
 * ((pixel / 255 - mean[c]) / std[c]) and labels (n); pointers owned by the
 * loader, valid until the next call (or start_epoch). *n = 0 at the end
 * of the epoch, and again on later calls. Calling it before the first
 * start_epoch is a programmer error (asserts). Errors (a streamed file
 * that fails to read) end the epoch. */
nb_status nb_loader_next(nb_loader *l, const float **images, const int32_t **labels, int *n);

/* Dataset indices of the examples of the batch last returned (n);
 * borrowed, valid until the next call. */
const uint32_t *nb_loader_indices(const nb_loader *l);

size_t nb_loader_batches_per_epoch(const nb_loader *l);
int nb_loader_out_c(const nb_loader *l);
int nb_loader_out_h(const nb_loader *l);
int nb_loader_out_w(const nb_loader *l);
/* Seconds the consumer spent blocked in nb_loader_next since the loader
 * was made (with prefetch 0 that is all the batch-making time). */
double nb_loader_wait_seconds(const nb_loader *l);

/* ------------------------------------------------------------ importers */

/* Progress callback for the importers: `done` of `total` images. */
typedef void (*nb_import_progress_fn)(size_t done, size_t total, void *user);

typedef struct {
    const char *name;   /* the file's `name` attribute (default from the input) */
    int size;           /* import-folder: output height = width (required, > 0) */
    int shuffle;        /* import-folder: shuffle the train split (default 1) */
    uint64_t seed;      /* ... with this seed (default 0) */
    int threads;        /* decoding threads (default nb_get_threads()) */
    int overwrite;      /* replace an existing output file (default 0) */
    int skip_bad;       /* import-folder: skip images that do not decode or
                           are damaged, each logged (default 0: an error) */
    nb_import_progress_fn progress;
    void *progress_user;
} nb_import_opts;

nb_import_opts nb_import_opts_default(void);

/* Import the official CIFAR-10 binary distribution from dir (the
 * cifar-10-batches-bin folder or its parent): data_batch_1..5.bin (train),
 * test_batch.bin (test), batches.meta.txt (class names). Writes out in the
 * schema (official order kept); the file appears only when complete.
 * Errors name the offending file (NB_STATUS_BAD_INPUT / NB_STATUS_IO). */
nb_status nb_import_cifar10(const char *dir, const char *out, const nb_import_opts *o);

/* Import class folders: dir/train/<class>/<image> and dir/val/<class>/ (or
 * dir/test/<class>/); images are JPEG or PNG (by content), RGB or gray,
 * center-cropped to a square and resized to o->size with an antialiased
 * bilinear (triangle) filter. Classes are the sorted names of dir/train's
 * subfolders. A damaged image (a decoder warning), an empty class folder
 * and a folder inside a class folder are errors naming the path (with
 * o->skip_bad, damaged or undecodable images are skipped and logged). See
 * docs/datasets.md. */
nb_status nb_import_folder(const char *dir, const char *out, const nb_import_opts *o);

/* ------------------------------------------------------- images, sheets */

/* Decode a JPEG or PNG file (by its signature) to RGB: *pixels (h, w, 3)
 * interleaved, allocated with nb_malloc and owned by the caller. */
nb_status nb_image_load(const char *path, uint8_t **pixels, int *w, int *h);

/* A contact sheet of ds: one row per class with the first per_class
 * examples of that class (file order), class names on the left, tiles
 * scaled up to at least 64 px. Written as PNG. */
nb_status nb_dataset_contact_sheet(const nb_dataset *ds, int per_class, const char *png_path);

#endif /* NB_DATASETS_H */
