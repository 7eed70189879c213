/* nb_dataset: the object common to file-backed, streamed and synthetic
 * splits — metadata, accessors, in-memory construction, raw reads. */
#include <string.h>

#include "internal.h"

nb_dataset_opts nb_dataset_opts_default(void) {
    nb_dataset_opts o = {.mem_cap_bytes = 0, .force_stream = 0};
    return o;
}

nb_dataset *nb_ds_new(void) {
    nb_dataset *ds = nb_calloc(1, sizeof *ds);
    if (!ds) return NULL;
    ds->file = H5I_INVALID_HID;
    ds->dset = H5I_INVALID_HID;
    return ds;
}

nb_status nb_ds_set_meta(nb_dataset *ds, const char *name, const char *source, const char *path,
                         const char *split, int classes, const char *const *class_names, int C,
                         int H, int W, const float *mean, const float *std) {
    NB_ASSERT(classes > 0 && C > 0 && H > 0 && W > 0, "bad dataset geometry");
    NB_ASSERT(strlen(split) < sizeof ds->split, "split name too long");
    strcpy(ds->split, split);
    ds->classes = classes;
    ds->C = C;
    ds->H = H;
    ds->W = W;
    ds->example_bytes = (size_t)C * (size_t)H * (size_t)W;
    ds->name = nb_strdup(name ? name : "");
    ds->source = nb_strdup(source ? source : "");
    ds->path = nb_strdup(path ? path : "");
    ds->mean = nb_malloc((size_t)C * sizeof(float));
    ds->std = nb_malloc((size_t)C * sizeof(float));
    ds->class_names = nb_calloc((size_t)classes, sizeof(char *));
    if (!ds->name || !ds->source || !ds->path || !ds->mean || !ds->std || !ds->class_names)
        return NB_STATUS_OOM;
    memcpy(ds->mean, mean, (size_t)C * sizeof(float));
    memcpy(ds->std, std, (size_t)C * sizeof(float));
    for (int i = 0; i < classes; i++) {
        char num[16];
        snprintf(num, sizeof num, "%d", i);
        ds->class_names[i] = nb_strdup(class_names && class_names[i] ? class_names[i] : num);
        if (!ds->class_names[i]) return NB_STATUS_OOM;
    }
    return NB_OK;
}

void nb_dataset_free(nb_dataset *ds) {
    if (!ds) return;
    nb_ds_stream_close(ds);
    if (ds->class_names)
        for (int i = 0; i < ds->classes; i++) nb_free(ds->class_names[i]);
    nb_free(ds->class_names);
    nb_free(ds->name);
    nb_free(ds->source);
    nb_free(ds->path);
    nb_free(ds->mean);
    nb_free(ds->std);
    nb_free(ds->labels);
    nb_free(ds->images);
    nb_free(ds);
}

nb_status nb_dataset_from_arrays(const char *name, int classes, const char *const *class_names,
                                 int C, int H, int W, size_t count, const uint8_t *images,
                                 const uint8_t *labels, const float *mean, const float *std,
                                 nb_dataset **out) {
    NB_ASSERT(out && images && labels && mean && std, "NULL argument");
    *out = NULL;
    if (classes < 1 || classes > 256 || C < 1 || H < 1 || W < 1 || count == 0 ||
        count > UINT32_MAX)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "dataset %s: bad geometry (%zu examples, %d classes, %dx%dx%d)",
                            name ? name : "", count, classes, C, H, W);
    for (size_t i = 0; i < count; i++)
        if (labels[i] >= classes)
            return nb_set_error(NB_STATUS_BAD_INPUT,
                                "dataset %s: label %d at index %zu but only %d classes",
                                name ? name : "", labels[i], i, classes);
    for (int c = 0; c < C; c++)
        if (!(std[c] > 0.0f))
            return nb_set_error(NB_STATUS_BAD_INPUT, "dataset %s: std[%d] = %g must be > 0",
                                name ? name : "", c, (double)std[c]);
    nb_dataset *ds = nb_ds_new();
    if (!ds) return NB_STATUS_OOM;
    nb_status st = nb_ds_set_meta(ds, name, "", "", "train", classes, class_names, C, H, W, mean,
                                  std);
    if (st != NB_OK) goto fail;
    ds->count = count;
    ds->labels = nb_malloc(count);
    ds->images = nb_malloc(count * ds->example_bytes);
    if (!ds->labels || !ds->images) {
        st = NB_STATUS_OOM;
        goto fail;
    }
    memcpy(ds->labels, labels, count);
    memcpy(ds->images, images, count * ds->example_bytes);
    *out = ds;
    return NB_OK;
fail:
    nb_dataset_free(ds);
    return st;
}

nb_status nb_dataset_open_source(const char *source, const char *split,
                                 const nb_dataset_opts *opts, uint64_t seed, nb_dataset **out) {
    NB_ASSERT(source && out, "NULL argument");
    if (!strncmp(source, "synthetic:", 10))
        return nb_dataset_synthetic(source + 10, split, 0, seed, out);
    return nb_dataset_open(source, split, opts, out);
}

size_t nb_dataset_count(const nb_dataset *ds) { return ds->count; }
int nb_dataset_classes(const nb_dataset *ds) { return ds->classes; }
int nb_dataset_channels(const nb_dataset *ds) { return ds->C; }
int nb_dataset_height(const nb_dataset *ds) { return ds->H; }
int nb_dataset_width(const nb_dataset *ds) { return ds->W; }
const float *nb_dataset_mean(const nb_dataset *ds) { return ds->mean; }
const float *nb_dataset_std(const nb_dataset *ds) { return ds->std; }
const char *nb_dataset_name(const nb_dataset *ds) { return ds->name; }
const char *nb_dataset_split(const nb_dataset *ds) { return ds->split; }
const char *nb_dataset_source(const nb_dataset *ds) { return ds->source; }
const char *nb_dataset_path(const nb_dataset *ds) { return ds->path; }
int nb_dataset_streaming(const nb_dataset *ds) { return ds->images == NULL; }
const uint8_t *nb_dataset_labels(const nb_dataset *ds) { return ds->labels; }

const char *nb_dataset_class_name(const nb_dataset *ds, int i) {
    NB_ASSERT(i >= 0 && i < ds->classes, "class %d of %d", i, ds->classes);
    return ds->class_names[i];
}

nb_status nb_dataset_read(const nb_dataset *ds, size_t first, size_t n, uint8_t *images,
                          uint8_t *labels) {
    NB_ASSERT(first <= ds->count && n <= ds->count - first, "read [%zu, +%zu) of %zu", first,
              n, ds->count);
    if (labels) memcpy(labels, ds->labels + first, n);
    if (!images || n == 0) return NB_OK;
    if (ds->images) {
        memcpy(images, ds->images + first * ds->example_bytes, n * ds->example_bytes);
        return NB_OK;
    }
    return nb_ds_stream_read(ds, first, n, images);
}
