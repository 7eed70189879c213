/* Writing PNG files: libpng's simplified API (already linked for image
 * import) onto a temporary file beside the target, renamed into place once
 * libpng and the close have both succeeded. */
#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "nb_plot.h"

nb_status nb_png_write(const char *path, const uint8_t *rgb, int w, int h) {
    NB_ASSERT(path && rgb && w > 0 && h > 0, "bad PNG arguments");
    size_t tmp_len = strlen(path) + 32;
    char *tmp = nb_malloc(tmp_len);
    if (!tmp) return NB_STATUS_OOM;
    snprintf(tmp, tmp_len, "%s.tmp-%ld", path, (long)getpid());
    nb_status st = NB_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        /* Name the target: the temporary name is ours, the folder is the user's. */
        st = nb_set_error(NB_STATUS_IO, "%s: cannot write PNG: %s", path, strerror(errno));
        goto done;
    }
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = PNG_FORMAT_RGB;
    errno = 0;
    const int ok = png_image_write_to_stdio(&img, f, 0, rgb, 0, NULL);
    const int write_errno = errno; /* fwrite's reason (ENOSPC) beats libpng's "Write Error" */
    const int closed = fclose(f) == 0;
    if (!ok || !closed) {
        st = nb_set_error(NB_STATUS_IO, "%s: cannot write PNG: %s", path,
                          ok ? strerror(errno) : write_errno ? strerror(write_errno) : img.message);
        remove(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        st = nb_set_error(NB_STATUS_IO, "%s: cannot write PNG: %s", path, strerror(errno));
        remove(tmp);
    }
done:
    nb_free(tmp);
    return st;
}
