/* Contact sheets: a PNG with one row of samples per class, labelled with
 * the class names in plot/'s 5x7 pixel font. */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "nb_plot.h"

#define TEXT_SCALE 2
#define MAX_LABEL_CHARS 24
#define GAP 2

/* Paste planar (C, H, W) at (x0, y0), upscaled by `scale` (nearest). */
static void paste(uint8_t *rgb, int sw, int x0, int y0, const uint8_t *img, int C, int H, int W,
                  int scale) {
    size_t plane = (size_t)H * (size_t)W;
    for (int y = 0; y < H * scale; y++)
        for (int x = 0; x < W * scale; x++) {
            size_t src = (size_t)(y / scale) * (size_t)W + (size_t)(x / scale);
            uint8_t *o = rgb + ((size_t)(y0 + y) * (size_t)sw + (size_t)(x0 + x)) * 3;
            for (int c = 0; c < 3; c++) o[c] = img[(C >= 3 ? (size_t)c : 0) * plane + src];
        }
}

nb_status nb_dataset_contact_sheet(const nb_dataset *ds, int per_class, const char *png_path) {
    NB_ASSERT(ds && png_path, "NULL argument");
    if (per_class < 1 || per_class > 256)
        return nb_set_error(NB_STATUS_BAD_INPUT, "contact sheet: per-class count %d not in 1..256",
                            per_class);
    int C = ds->C, H = ds->H, W = ds->W, K = ds->classes;
    int scale = 1;
    while (H * scale < 64 && W * scale < 64) scale++;
    int tw = W * scale, th = H * scale;
    size_t chars = 4; /* the label column fits the longest name (up to 24 characters) */
    for (int k = 0; k < K; k++)
        if (strlen(ds->class_names[k]) > chars) chars = strlen(ds->class_names[k]);
    if (chars > MAX_LABEL_CHARS) chars = MAX_LABEL_CHARS;
    int label_w = (int)chars * NB_FONT_ADVANCE * TEXT_SCALE + 2 * GAP;
    int row_h = th > NB_FONT_H * TEXT_SCALE ? th : NB_FONT_H * TEXT_SCALE;
    int sw = label_w + per_class * (tw + GAP) + GAP;
    int sh = K * (row_h + GAP) + GAP;
    nb_canvas sheet;
    nb_status st = nb_canvas_init(&sheet, sw, sh, (nb_rgb){40, 40, 40});
    uint8_t *img = st == NB_OK ? nb_malloc(ds->example_bytes) : NULL;
    int *filled = nb_calloc((size_t)K, sizeof(int));
    if (st != NB_OK || !img || !filled) {
        st = st != NB_OK ? st : NB_STATUS_OOM;
        goto done;
    }
    for (int k = 0; k < K; k++) {
        char name[MAX_LABEL_CHARS + 1];
        snprintf(name, sizeof name, "%s", ds->class_names[k]);
        nb_canvas_text(&sheet, GAP,
                       GAP + k * (row_h + GAP) + (row_h - NB_FONT_H * TEXT_SCALE) / 2, TEXT_SCALE,
                       (nb_rgb){235, 235, 235}, name);
    }
    int left = K;
    for (size_t i = 0; i < ds->count && left > 0; i++) {
        int k = ds->labels[i];
        if (filled[k] == per_class) continue;
        if ((st = nb_dataset_read(ds, i, 1, img, NULL)) != NB_OK) goto done;
        paste(sheet.rgb, sw, label_w + filled[k] * (tw + GAP), GAP + k * (row_h + GAP), img, C, H,
              W, scale);
        if (++filled[k] == per_class) left--;
    }
    st = nb_canvas_write_png(&sheet, png_path);
done:
    nb_canvas_deinit(&sheet);
    nb_free(img);
    nb_free(filled);
    return st;
}
