/*
 * nb_alloc_files.h — the files around mixed-precision bit allocation
 * (docs/quantization.md, "Mixed precision"): the sensitivity file that
 * `nibble sensitivity` writes and `nibble allocate` reads, and the bitmap
 * that `nibble allocate` writes and a config's quant.bitmap reads.
 *
 *   {"format": "nibble-sensitivity-1", "arch": "resnet20", "config": "...",
 *    "checkpoint": "...", "metric": "hessian" | "fisher" | "loss_delta",
 *    "candidates": [2, 3, 4],
 *    "layers": [{"name": "conv1", "params": 432, "role": "first", "omega": [o2, o3, o4]}, ...]}
 *
 *   {"format": "nibble-bitmap-1", "source": "sens.json", "metric": "hessian", "method": "dp",
 *    "avg_bits_budget": 2.81, "avg_bits": 2.79, "convention": "...", "weight_bytes": 12345,
 *    "layers": {"conv1": 8, "layer1.0.conv1": 2, ...}}
 *
 * Example:
 *     nb_sensitivity s;
 *     if (nb_sensitivity_load("sens.json", &s) != NB_OK) fprintf(stderr, "%s\n", nb_last_error());
 *     ... s.layers[i].omega[j] is Ω of layer i at s.candidates[j] bits ...
 *     nb_sensitivity_deinit(&s);
 */
#ifndef NB_ALLOC_FILES_H
#define NB_ALLOC_FILES_H

#include "nb_alloc.h"

#define NB_SENSITIVITY_FORMAT "nibble-sensitivity-1"
#define NB_BITMAP_FORMAT "nibble-bitmap-1"
#define NB_LAYER_NAME_MAX 96 /* bytes with the NUL, as a quant.layers pattern */

typedef struct {
    char name[NB_LAYER_NAME_MAX];
    int64_t params;
    char role[8];                            /* "first" | "last" | "hidden" */
    double omega[NB_ALLOC_MAX_CANDIDATES];   /* (n_candidates) */
} nb_sens_layer;

typedef struct {
    char arch[32];
    char metric[16];                         /* "hessian" | "fisher" | "loss_delta" */
    int candidates[NB_ALLOC_MAX_CANDIDATES]; /* ascending, in 1..8 */
    int n_candidates;
    nb_sens_layer *layers;                   /* (n_layers), nb_malloc'ed */
    int n_layers;
} nb_sensitivity;

/* Read and validate a sensitivity file strictly: the format string, every
 * key above with its type (unknown keys are ignored, a repeated key is an
 * error), candidates strictly ascending in 1..8, unique layer names, params
 * >= 1, one finite omega >= 0 per candidate. NB_STATUS_IO when unreadable,
 * NB_STATUS_BAD_INPUT "PATH: layers[3].omega[1]: expected ..., got ...";
 * *out is written only on success (release with nb_sensitivity_deinit). */
nb_status nb_sensitivity_load(const char *path, nb_sensitivity *out);
void nb_sensitivity_deinit(nb_sensitivity *s);

/* What a bitmap records (all borrowed). */
typedef struct {
    const char *source, *metric, *method, *convention;
    double avg_bits_budget, avg_bits, weight_bytes;
    const char *const *names; /* (n) layer names */
    const int *bits;          /* (n) weight bits */
    int n;
} nb_bitmap;

/* Write b to path as nibble-bitmap-1 JSON, through a temporary file and a
 * rename (NB_STATUS_IO naming the path; NB_STATUS_OOM). */
nb_status nb_bitmap_save(const char *path, const nb_bitmap *b);

#endif /* NB_ALLOC_FILES_H */
