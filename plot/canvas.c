/* The raster canvas: allocation, clipped rectangles and lines, the
 * qualitative palette. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_SIDE 65535
#define MAX_PIXELS ((size_t)1 << 28)

nb_rgb nb_plot_color(int i) {
    static const nb_rgb tab10[10] = {
        {31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},   {148, 103, 189},
        {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
    };
    NB_ASSERT(i >= 0, "negative palette index %d", i);
    return tab10[i % 10];
}

nb_status nb_canvas_init(nb_canvas *c, int w, int h, nb_rgb bg) {
    NB_ASSERT(c, "NULL canvas");
    memset(c, 0, sizeof *c);
    if (w < 1 || h < 1 || w > MAX_SIDE || h > MAX_SIDE || (size_t)w * (size_t)h > MAX_PIXELS)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "picture of %d x %d pixels (each side 1..%d, at most %zu pixels)", w, h,
                            MAX_SIDE, MAX_PIXELS);
    c->rgb = nb_malloc((size_t)w * (size_t)h * 3);
    if (!c->rgb) return NB_STATUS_OOM;
    c->w = w;
    c->h = h;
    nb_canvas_rect(c, 0, 0, w, h, bg);
    return NB_OK;
}

void nb_canvas_deinit(nb_canvas *c) {
    if (!c) return;
    nb_free(c->rgb);
    memset(c, 0, sizeof *c);
}

nb_status nb_canvas_write_png(const nb_canvas *c, const char *path) {
    NB_ASSERT(c && c->rgb, "canvas not initialised");
    return nb_png_write(path, c->rgb, c->w, c->h);
}

void nb_canvas_rect(nb_canvas *c, int x, int y, int w, int h, nb_rgb col) {
    int x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int x1 = x + w > c->w ? c->w : x + w, y1 = y + h > c->h ? c->h : y + h;
    for (int yy = y0; yy < y1; yy++)
        for (int xx = x0; xx < x1; xx++) {
            uint8_t *p = c->rgb + ((size_t)yy * (size_t)c->w + (size_t)xx) * 3;
            p[0] = col.r;
            p[1] = col.g;
            p[2] = col.b;
        }
}

void nb_canvas_line(nb_canvas *c, int x0, int y0, int x1, int y1, int width, nb_rgb col) {
    /* The pen's square is centred on the pixel, rounding towards up-left
     * for even widths. */
    const int off = (width - 1) / 2;
    const int dx = abs(x1 - x0), dy = -abs(y1 - y0);
    const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int e = dx + dy;
    for (;;) {
        nb_canvas_rect(c, x0 - off, y0 - off, width, width, col);
        if (x0 == x1 && y0 == y1) break;
        const int e2 = 2 * e;
        if (e2 >= dy) {
            e += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            e += dx;
            y0 += sy;
        }
    }
}
