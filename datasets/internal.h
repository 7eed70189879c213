/* Internals shared by the files of datasets/; users include nb_datasets.h. */
#ifndef NB_DATASETS_INTERNAL_H
#define NB_DATASETS_INTERNAL_H

#include <hdf5.h>

#include "h5_util.h"
#include "nb_datasets.h"

#define NB_DS_DEFAULT_MEM_CAP ((size_t)4 << 30)

struct nb_dataset {
    char *name;          /* `name` attribute */
    char *source;        /* `source` attribute, "" if none */
    char *path;          /* file path, "" for in-memory sets */
    char split[8];       /* "train" | "test" */
    int classes;
    char **class_names;  /* (classes) */
    int C, H, W;
    float *mean, *std;   /* (C) */
    size_t count;        /* N */
    size_t example_bytes; /* C * H * W */
    uint8_t *labels;     /* (N), always in memory */
    uint8_t *images;     /* (N, C, H, W) in memory; NULL when streaming */
    /* streaming */
    hid_t file, dset;    /* open while streaming, else H5I_INVALID_HID */
    size_t chunk_rows;   /* rows per chunk along N (reads are chunk-aligned) */
    size_t mem_cap;      /* the cap the split was opened with */
};

/* dataset.c: an empty dataset (handles invalid) and its metadata setter,
 * which copies every string and array. */
nb_dataset *nb_ds_new(void);
nb_status nb_ds_set_meta(nb_dataset *ds, const char *name, const char *source, const char *path,
                         const char *split, int classes, const char *const *class_names, int C,
                         int H, int W, const float *mean, const float *std);

/* h5_reader.c: chunk reads of a streamed split; closing its handles. */
nb_status nb_ds_stream_read(const nb_dataset *ds, size_t first, size_t n, uint8_t *images);
void nb_ds_stream_close(nb_dataset *ds);

/* h5_writer.c: writes a file in the schema, split by split, chunk by
 * chunk, into a temporary name renamed to `path` by finish. */
typedef struct nb_h5_writer nb_h5_writer;
typedef struct {
    const char *name, *source;
    int classes;
    const char *const *class_names;
    int C, H, W;
    size_t count[2]; /* train, test: at most that many */
    int overwrite;
    int may_shrink;  /* finish may come with fewer examples appended than
                        count (skipped inputs): the file has the appended */
} nb_h5_writer_meta;
nb_status nb_h5_writer_create(const char *path, const nb_h5_writer_meta *m, nb_h5_writer **out);
/* Append n examples (n, C, H, W) + labels to split 0 (train) or 1 (test);
 * train pixels feed the mean/std. */
nb_status nb_h5_writer_append(nb_h5_writer *w, int split, const uint8_t *images,
                              const uint8_t *labels, size_t n);
/* Write labels, mean/std and close; rename into place. Frees w. */
nb_status nb_h5_writer_finish(nb_h5_writer *w);
/* Close and delete the temporary file. Frees w. NULL is a no-op. */
void nb_h5_writer_abort(nb_h5_writer *w);

/* stats.c: per-channel sums for mean/std over uint8 images. */
typedef struct {
    int C;
    uint64_t n[4], sum[4], sumsq[4]; /* pixels, sum, sum of squares per channel */
} nb_pixel_stats;
void nb_pixel_stats_init(nb_pixel_stats *s, int C);
void nb_pixel_stats_add(nb_pixel_stats *s, const uint8_t *images, size_t n, size_t hw);
/* mean and population std of pixel / 255 (C). */
void nb_pixel_stats_get(const nb_pixel_stats *s, float *mean, float *std);

/* resize.c: separable antialiased resampling with a triangle filter whose
 * support widens with the downscale factor (PIL's BILINEAR "reducing").
 * Maps the source rectangle (x0, y0, w, h) (pixel units, may be
 * fractional, inside the image) onto an (oh, ow) output. src is planar
 * (C, H, W) uint8; dst planar (C, oh, ow) float values in 0..255.
 * scratch must hold nb_resize_scratch_floats(...) floats. */
size_t nb_resize_scratch_floats(int C, int H, int W, int oh, int ow);
void nb_resize_region(const uint8_t *src, int C, int H, int W, double x0, double y0, double w,
                      double h, float *dst, int oh, int ow, float *scratch);

/* augment.c: one example from raw (C, H, W) uint8 to (C, oh, ow)
 * normalised floats. Randomness comes only from an nb_rng seeded with
 * (seed, epoch << 32 | index): identical for any thread or batch layout. */
typedef struct {
    int C, H, W, oh, ow;
    int augment, pad, flip, rrc;
    uint64_t seed;
    const float *lut; /* (C, 256): (v / 255 - mean[c]) / std[c] */
    const float *mean, *std; /* (C) */
} nb_augment;
void nb_augment_example(const nb_augment *a, const uint8_t *src, uint32_t index, int epoch,
                        float *out, float *scratch);

/* sampler.c: the order of an epoch. In memory: a permutation, and any
 * range of positions can be taken from any thread. Streaming: chunks in
 * shuffled order through a shuffle buffer of example copies; ranges must
 * be taken in order and their pixels come out in `raw`. Everything depends
 * only on (seed, epoch). */
typedef struct nb_sampler nb_sampler;
/* buffer: streaming shuffle buffer in examples (0 = default). */
nb_status nb_sampler_new(const nb_dataset *ds, int shuffle, uint64_t seed, size_t buffer,
                         nb_sampler **out);
void nb_sampler_free(nb_sampler *s);
void nb_sampler_start(nb_sampler *s, int epoch);
/* Positions [pos, pos + n) of the epoch: indices (n) and, when streaming,
 * pixels (n, C, H, W) into raw. */
nb_status nb_sampler_take(nb_sampler *s, size_t pos, size_t n, uint32_t *indices, uint8_t *raw);
int nb_sampler_streaming(const nb_sampler *s);

/* synthetic.c: shapes10's fixed normalisation constants. */
extern const float nb_shapes10_mean[3], nb_shapes10_std[3];

#endif /* NB_DATASETS_INTERNAL_H */
