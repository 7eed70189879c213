/* Contact sheets: a PNG with one row of samples per class, labelled with
 * the class names in a built-in 5x7 pixel font. */
#include <ctype.h>
#include <string.h>

#include "internal.h"

#define GLYPH_W 5
#define GLYPH_H 7
#define TEXT_SCALE 2
#define MAX_LABEL_CHARS 24
#define GAP 2

typedef struct {
    char c;
    uint8_t rows[GLYPH_H]; /* 5 bits a row, bit 4 = leftmost */
} glyph;

static const glyph font[] = {
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}}, {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}}, {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}}, {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}}, {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}}, {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}}, {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}}, {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}}, {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}}, {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}}, {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {' ', {0, 0, 0, 0, 0, 0, 0}},
    {'?', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}},
};

static const glyph *find_glyph(char c) {
    c = (char)toupper((unsigned char)c);
    for (size_t i = 0; i < sizeof font / sizeof font[0]; i++)
        if (font[i].c == c) return &font[i];
    return &font[sizeof font / sizeof font[0] - 1];
}

static void draw_text(uint8_t *rgb, int sw, int x0, int y0, const char *s) {
    for (int i = 0; s[i] && i < MAX_LABEL_CHARS; i++) {
        const glyph *g = find_glyph(s[i]);
        for (int gy = 0; gy < GLYPH_H; gy++)
            for (int gx = 0; gx < GLYPH_W; gx++) {
                if (!(g->rows[gy] >> (GLYPH_W - 1 - gx) & 1)) continue;
                for (int dy = 0; dy < TEXT_SCALE; dy++)
                    for (int dx = 0; dx < TEXT_SCALE; dx++) {
                        int x = x0 + (i * (GLYPH_W + 1) + gx) * TEXT_SCALE + dx;
                        int y = y0 + gy * TEXT_SCALE + dy;
                        memset(rgb + ((size_t)y * (size_t)sw + (size_t)x) * 3, 235, 3);
                    }
            }
    }
}

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
    int label_w = (int)chars * (GLYPH_W + 1) * TEXT_SCALE + 2 * GAP;
    int row_h = th > GLYPH_H * TEXT_SCALE ? th : GLYPH_H * TEXT_SCALE;
    int sw = label_w + per_class * (tw + GAP) + GAP;
    int sh = K * (row_h + GAP) + GAP;
    uint8_t *rgb = nb_malloc((size_t)sw * (size_t)sh * 3);
    uint8_t *img = nb_malloc(ds->example_bytes);
    int *filled = nb_calloc((size_t)K, sizeof(int));
    nb_status st = NB_OK;
    if (!rgb || !img || !filled) {
        st = NB_STATUS_OOM;
        goto done;
    }
    memset(rgb, 40, (size_t)sw * (size_t)sh * 3);
    for (int k = 0; k < K; k++)
        draw_text(rgb, sw, GAP, GAP + k * (row_h + GAP) + (row_h - GLYPH_H * TEXT_SCALE) / 2,
                  ds->class_names[k]);
    int left = K;
    for (size_t i = 0; i < ds->count && left > 0; i++) {
        int k = ds->labels[i];
        if (filled[k] == per_class) continue;
        if ((st = nb_dataset_read(ds, i, 1, img, NULL)) != NB_OK) goto done;
        paste(rgb, sw, label_w + filled[k] * (tw + GAP), GAP + k * (row_h + GAP), img, C, H, W,
              scale);
        if (++filled[k] == per_class) left--;
    }
    st = nb_png_write(png_path, rgb, sw, sh);
done:
    nb_free(rgb);
    nb_free(img);
    nb_free(filled);
    return st;
}
