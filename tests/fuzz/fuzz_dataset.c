/* Fuzz target: the HDF5 dataset reader. Both splits of the input file are
 * opened (in memory and streamed) and, when valid, their first and last
 * examples read. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void try_split(const char *path, const char *split, int stream) {
    nb_dataset_opts o = nb_dataset_opts_default();
    o.force_stream = stream;
    o.mem_cap_bytes = (size_t)64 << 20;
    nb_dataset *ds = NULL;
    if (nb_dataset_open(path, split, &o, &ds) != NB_OK) return;
    const size_t n = nb_dataset_count(ds), eb = (size_t)nb_dataset_channels(ds) *
                                                (size_t)nb_dataset_height(ds) *
                                                (size_t)nb_dataset_width(ds);
    uint8_t *img = nb_malloc(2 * eb);
    uint8_t lab[2];
    if (img && n) {
        nb_dataset_read(ds, 0, 1, img, lab);
        nb_dataset_read(ds, n - 1, 1, img + eb, lab + 1);
    }
    nb_free(img);
    nb_dataset_free(ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nb_fuzz_init();
    const char *path = nb_fuzz_file(data, size, "h5");
    if (!path) return 0;
    try_split(path, "train", 0);
    try_split(path, "test", 1);
    unlink(path);
    return 0;
}
