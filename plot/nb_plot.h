/*
 * nb_plot.h — PNG pictures without a plotting program: an RGB raster
 * canvas with a built-in 5x7 bitmap font, a PNG writer, and three charts
 * drawn on it (a heat map, a histogram with marker lines, a line chart).
 * Drawing is integer and deterministic: the same input gives the same
 * bytes. The look is described in docs/plots.md.
 *
 * Example (bits x layers sensitivity):
 *     const char *layers[] = {"conv1", "layer1.0.conv1"};
 *     const char *bits[] = {"2 bits", "3", "4"};
 *     float drop[2 * 3] = {9.1f, 2.0f, 0.4f, 3.3f, 0.8f, 0.1f}; // (rows, cols)
 *     nb_heatmap_opts o = nb_heatmap_opts_default();
 *     o.log_scale = 1;
 *     if (nb_plot_heatmap("sens.png", "accuracy drop (%)", 2, layers, 3, bits,
 *                         drop, &o) != NB_OK)
 *         fprintf(stderr, "%s\n", nb_last_error());
 *
 * Files are written to a temporary file beside the target and renamed, so a
 * failed write leaves nothing behind. plot/ uses core/ and libpng only.
 */
#ifndef NB_PLOT_H
#define NB_PLOT_H

#include "nb_core.h"

typedef struct {
    uint8_t r, g, b;
} nb_rgb;

/* Colour i (any i >= 0, cycling) of a ten-colour qualitative palette
 * (matplotlib's "tab10": blue, orange, green, red, purple, ...). */
nb_rgb nb_plot_color(int i);

/* ------------------------------------------------------------------ PNG */

/* Write interleaved RGB (h, w, 3) as an 8-bit PNG (libpng), through a
 * temporary file renamed onto path. Borrows rgb. NB_STATUS_IO naming path
 * when the file cannot be written; nothing is left behind then. */
nb_status nb_png_write(const char *path, const uint8_t *rgb, int w, int h);

/* --------------------------------------------------------------- canvas */

typedef struct {
    int w, h;
    uint8_t *rgb; /* (h, w, 3) interleaved, owned */
} nb_canvas;

/* Allocate a w x h canvas filled with bg. NB_STATUS_BAD_INPUT for a side
 * outside 1..65535 or more than 2^28 pixels, NB_STATUS_OOM; c is zeroed on
 * failure. */
nb_status nb_canvas_init(nb_canvas *c, int w, int h, nb_rgb bg);
void nb_canvas_deinit(nb_canvas *c);
/* nb_png_write of the canvas. */
nb_status nb_canvas_write_png(const nb_canvas *c, const char *path);

/* Primitives clip to the canvas; coordinates are pixels, y downwards. */
void nb_canvas_rect(nb_canvas *c, int x, int y, int w, int h, nb_rgb col);
/* A straight line from (x0, y0) to (x1, y1) with a square pen `width`
 * pixels wide (Bresenham; both ends included). */
void nb_canvas_line(nb_canvas *c, int x0, int y0, int x1, int y1, int width, nb_rgb col);

/* ----------------------------------------------------------------- text */

/* The font: printable ASCII in 5x7 glyphs (lower case with 2-pixel
 * descenders), NB_FONT_ADVANCE pixels a character at scale 1; other bytes
 * draw as '?'. Text is drawn at integer scale factors. */
#define NB_FONT_W 5
#define NB_FONT_H 7       /* cap height; descenders go 2 rows below */
#define NB_FONT_ADVANCE 6

/* Width in pixels of s at `scale` (the last character's spacing column
 * not counted). */
int nb_text_width(const char *s, int scale);
/* Draw s with its top-left corner (cap line) at (x, y). */
void nb_canvas_text(nb_canvas *c, int x, int y, int scale, nb_rgb col, const char *s);
/* Draw s turned 90 degrees anticlockwise, reading upwards from y: the cap
 * line runs down column x and the glyphs lie to the right of it. */
void nb_canvas_text_up(nb_canvas *c, int x, int y, int scale, nb_rgb col, const char *s);

/* --------------------------------------------------------------- charts */

typedef struct {
    int log_scale;         /* colour by log10(value): values <= 0 take the lowest colour; linear
                            * when no value is positive */
    int annotate;          /* print each value in its cell when it fits (default 1) */
    const char *bar_label; /* beside the colour bar; NULL for none */
} nb_heatmap_opts;

nb_heatmap_opts nb_heatmap_opts_default(void);

/* A heat map of values (n_rows, n_cols), row-major: row labels on the left
 * (long ones shortened from the front), column labels on top, a viridis
 * colour scale over the finite values with a colour bar labelled min, mid
 * and max. NaN and infinite cells are grey and hatched ("n/a"). Borrows
 * everything; labels or their arrays may be NULL (numbered from 0), opts NULL
 * means defaults. NB_STATUS_BAD_INPUT for an empty or too large grid,
 * NB_STATUS_IO naming path. */
nb_status nb_plot_heatmap(const char *path, const char *title, int n_rows,
                          const char *const *row_labels, int n_cols,
                          const char *const *col_labels, const float *values,
                          const nb_heatmap_opts *opts);

/* A set of vertical marker lines (histogram) or one curve (line chart). */
typedef struct {
    const char *label; /* legend text; NULL or "" keeps it out of the legend */
    const float *x;    /* (n) positions */
    const float *y;    /* (n) curve values; unused by marker sets */
    int n;
    nb_rgb color;
} nb_plot_series;

/* A histogram of the finite entries of values (n) in `bins` equal bins over
 * their range (1..10000), with n_markers sets of vertical lines over it
 * (set 0 solid, set 1 dashed, alternating) and a legend naming the sets.
 * Axes with ticks; the y axis counts. x_label may be NULL. Borrows
 * everything. NB_STATUS_BAD_INPUT without a finite value or for bins out of
 * range, NB_STATUS_IO naming path. */
nb_status nb_plot_histogram(const char *path, const char *title, const float *values, size_t n,
                            int bins, const nb_plot_series *markers, int n_markers,
                            const char *x_label);

/* A line chart of n_series curves (x[i], y[i]) joined in order, a point
 * with a non-finite coordinate breaking its curve, with a legend. Labels
 * may be NULL. Borrows everything. NB_STATUS_BAD_INPUT without a finite
 * point, NB_STATUS_IO naming path. */
nb_status nb_plot_lines(const char *path, const char *title, const nb_plot_series *series,
                        int n_series, const char *x_label, const char *y_label);

#endif /* NB_PLOT_H */
