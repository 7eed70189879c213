/* Shared by the fuzz harnesses: the input as a file, quiet libraries. */
#ifndef NB_FUZZ_UTIL_H
#define NB_FUZZ_UTIL_H

#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "nibble.h"

/* Once per process: no HDF5 error printing or exit handler (a harness
 * process ends with files HDF5 failed to close), no nibble log lines. */
static inline void nb_fuzz_init(void) {
    static int done;
    if (done) return;
    done = 1;
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    nb_log_set_level(NB_LOG_COUNT);
}

/* The input written to a per-process file in /dev/shm (or /tmp); the path
 * is static storage. NULL if it cannot be written. */
static inline const char *nb_fuzz_file(const uint8_t *data, size_t size, const char *ext) {
    static char path[256];
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path, sizeof path, "%s/nb-fuzz-%ld.%s", dir, (long)getpid(), ext);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    size_t w = fwrite(data, 1, size, f);
    if (fclose(f) != 0 || w != size) return NULL;
    return path;
}

#endif
