/* Internals shared by the files of plot/; users include nb_plot.h. */
#ifndef NB_PLOT_INTERNAL_H
#define NB_PLOT_INTERNAL_H

#include <stddef.h>

#include "nb_plot.h"

/* The look: colours and text sizes every chart shares. */
#define PLOT_BG ((nb_rgb){255, 255, 255})
#define PLOT_INK ((nb_rgb){34, 34, 34})     /* text */
#define PLOT_AXIS ((nb_rgb){90, 90, 90})    /* axis lines and ticks */
#define PLOT_GRID ((nb_rgb){232, 232, 232}) /* grid lines */
#define PLOT_MARGIN 14
#define PLOT_TITLE_SCALE 2
#define PLOT_LABEL_SCALE 2 /* axis labels, row/column labels, legend */
#define PLOT_TICK_SCALE 2  /* tick labels, colour bar labels */
#define PLOT_MARKER_WIDTH 3 /* histogram marker lines, pixels */
#define PLOT_CHART_W 800    /* histograms and line charts, pixels */
#define PLOT_CHART_H 500
#define PLOT_MIN_PLOT_H 300 /* the plot area's least height */

static inline int plot_imax(int a, int b) { return a > b ? a : b; }

/* Ticks at multiples of a 1-2-5 step over [lo, hi]. */
typedef struct {
    double lo, hi; /* the range the axis shows */
    double step;
    long first;    /* the first tick is first * step */
    int count;
    int decimals;  /* for labels; -1: three significant digits */
} plot_ticks;

/* An empty range [v, v] made [v - |v|/2, v + |v|/2] ([-0.5, 0.5] for 0). */
void plot_widen(double *lo, double *hi);
void plot_ticks_make(plot_ticks *t, double lo, double hi);
double plot_tick(const plot_ticks *t, int i);
/* The label of tick value v (stored in buf of n bytes). */
void plot_tick_label(const plot_ticks *t, double v, char *buf, size_t n);
/* v with three significant digits ("0.512", "12.3", "1.23e-05"); "n/a"
 * when not finite. */
void plot_format_value(double v, char *buf, size_t n);
/* s shortened to max_chars by dropping leading characters behind "..". */
void plot_shorten(const char *s, int max_chars, char *buf, size_t n);

/* The viridis colour map at t in [0, 1] (clamped). */
nb_rgb plot_viridis(double t);

/* A chart with x and y axes: what it shows, and the legend's entries. */
typedef enum { PLOT_KEY_LINE, PLOT_KEY_MARKER } plot_key;
typedef struct {
    const char *title, *x_label, *y_label; /* NULL for none */
    double xlo, xhi, ylo, yhi;             /* the data range the axes show */
    const nb_plot_series *series;          /* (n_series) legend entries: the labelled ones */
    int n_series;
    plot_key key;                          /* legend swatches: a line or a marker set's line */
} plot_frame_spec;

/* The drawing: the canvas, the plot area and the ticks. */
typedef struct {
    nb_canvas cv;
    int px, py, pw, ph; /* plot area, pixels */
    plot_ticks xt, yt;
} plot_frame;

/* Make the canvas and draw the title, the legend (in rows between the
 * title and the plot area), grid, ticks, tick labels and axis labels. The
 * caller draws the data, then plot_frame_finish. */
nb_status plot_frame_begin(plot_frame *f, const plot_frame_spec *spec);
int plot_frame_x(const plot_frame *f, double x);
int plot_frame_y(const plot_frame *f, double y);
/* A vertical line across the plot area at pixel column x, solid or in
 * dashes. */
void plot_frame_vline(plot_frame *f, int x, int width, int dashed, nb_rgb col);
/* Draw the axis lines, write the PNG to path and free the canvas (also on
 * failure). */
nb_status plot_frame_finish(plot_frame *f, const char *path);

#endif /* NB_PLOT_INTERNAL_H */
