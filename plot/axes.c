/* What the charts share: ticks and number labels, the colour map, the frame
 * with its axes, grid and legend. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define TICK_TARGET 6 /* about this many ticks an axis */
#define TICK_LEN 5

void plot_widen(double *lo, double *hi) {
    if (*hi > *lo) return;
    const double half = *lo != 0.0 ? fabs(*lo) * 0.5 : 0.5;
    *lo -= half;
    *hi += half;
}

void plot_ticks_make(plot_ticks *t, double lo, double hi) {
    plot_widen(&lo, &hi);
    const double raw = (hi - lo) / TICK_TARGET;
    const double mag = pow(10.0, floor(log10(raw)));
    const double f = raw / mag;
    t->step = (f < 1.5 ? 1.0 : f < 3.0 ? 2.0 : f < 7.0 ? 5.0 : 10.0) * mag;
    t->lo = lo;
    t->hi = hi;
    /* the tolerance keeps ticks that sit on an end despite rounding */
    t->first = (long)ceil(lo / t->step - 1e-9);
    t->count = (int)(floor(hi / t->step + 1e-9) - (double)t->first) + 1;
    const double big = fmax(fabs(lo), fabs(hi));
    t->decimals = big >= 1e5 || t->step < 1e-4 ? -1 : (int)fmax(0.0, -floor(log10(t->step) + 1e-9));
}

double plot_tick(const plot_ticks *t, int i) { return (double)(t->first + i) * t->step; }

void plot_tick_label(const plot_ticks *t, double v, char *buf, size_t n) {
    if (fabs(v) < t->step * 1e-6) v = 0.0; /* no "-0.0" */
    if (t->decimals < 0)
        snprintf(buf, n, "%.3g", v);
    else
        snprintf(buf, n, "%.*f", t->decimals, v);
}

void plot_format_value(double v, char *buf, size_t n) {
    const double a = fabs(v);
    if (!isfinite(v))
        snprintf(buf, n, "n/a");
    else if (a == 0.0)
        snprintf(buf, n, "0");
    else if (a >= 1e-3 && a < 1e5)
        snprintf(buf, n, "%.*f", (int)fmax(0.0, 2.0 - floor(log10(a))), v);
    else
        snprintf(buf, n, "%.2e", v);
}

void plot_shorten(const char *s, int max_chars, char *buf, size_t n) {
    const size_t len = strlen(s);
    if (len <= (size_t)max_chars || max_chars < 3)
        snprintf(buf, n, "%s", s);
    else
        snprintf(buf, n, "..%s", s + len - (size_t)(max_chars - 2));
}

nb_rgb plot_viridis(double t) {
    /* matplotlib's viridis at 0, 0.1, ..., 1 */
    static const nb_rgb stops[11] = {
        {68, 1, 84},    {72, 36, 117},   {65, 68, 135},  {53, 95, 141},
        {42, 120, 142}, {33, 145, 140},  {34, 168, 132}, {68, 191, 112},
        {122, 209, 81}, {189, 223, 38},  {253, 231, 37},
    };
    if (!(t > 0.0)) t = 0.0; /* NaN too */
    if (t > 1.0) t = 1.0;
    const double u = t * 10.0;
    int i = (int)u;
    if (i > 9) i = 9;
    const double w = u - i;
    const nb_rgb a = stops[i], b = stops[i + 1];
    return (nb_rgb){(uint8_t)lrint(a.r + w * (b.r - a.r)), (uint8_t)lrint(a.g + w * (b.g - a.g)),
                    (uint8_t)lrint(a.b + w * (b.b - a.b))};
}

/* ---------------------------------------------------------------- frame */

static int text_h(int scale) { return NB_FONT_H * scale; }

/* The legend: one entry a labelled series, laid out in rows centred over
 * the plot area (never over the data). */
#define KEY_W 24   /* the swatch */
#define KEY_GAP 8  /* swatch to label */
#define KEY_SEP 28 /* between entries */
#define KEY_ROW (text_h(PLOT_LABEL_SCALE) + 10)

static int key_w(const nb_plot_series *s) {
    return KEY_W + KEY_GAP + nb_text_width(s->label, PLOT_LABEL_SCALE);
}

static int labelled(const nb_plot_series *s) { return s->label && *s->label; }

/* Lay out the legend in rows at most `width` wide: row_of[i] and x_of[i]
 * (relative to the centred row's left end) per entry, row widths in
 * row_w; returns the number of rows. */
static int legend_rows(const plot_frame_spec *sp, int width, int *row_of, int *x_of, int *row_w) {
    int rows = 0, x = 0;
    for (int i = 0; i < sp->n_series; i++) {
        if (!labelled(&sp->series[i])) continue;
        const int kw = key_w(&sp->series[i]);
        if (rows == 0 || x + KEY_SEP + kw > width) {
            row_w[rows++] = 0;
            x = 0;
        } else {
            x += KEY_SEP;
        }
        row_of[i] = rows - 1;
        x_of[i] = x;
        x += kw;
        row_w[rows - 1] = x;
    }
    return rows;
}

/* A vertical line over rows [y0, y1), solid or in dashes. */
static void vline(nb_canvas *c, int x, int y0, int y1, int width, int dashed, nb_rgb col) {
    const int dash = 8, gap = 5; /* pixels */
    for (int y = y0; y < y1; y += dashed ? dash + gap : y1 - y0) {
        const int len = dashed && y + dash < y1 ? dash : y1 - y;
        nb_canvas_rect(c, x - (width - 1) / 2, y, width, len, col);
    }
}

static void legend(plot_frame *f, const plot_frame_spec *sp, int y) {
    int *row_of = nb_calloc((size_t)sp->n_series * 2 + 1, sizeof(int));
    int *row_w = nb_calloc((size_t)sp->n_series + 1, sizeof(int));
    if (!row_of || !row_w) goto done; /* the legend is lost, not the chart */
    int *x_of = row_of + sp->n_series;
    legend_rows(sp, f->pw, row_of, x_of, row_w);
    const int th = text_h(PLOT_LABEL_SCALE);
    for (int i = 0; i < sp->n_series; i++) {
        const nb_plot_series *s = &sp->series[i];
        if (!labelled(s)) continue;
        const int x = f->px + (f->pw - row_w[row_of[i]]) / 2 + x_of[i];
        const int ky = y + row_of[i] * KEY_ROW;
        if (sp->key == PLOT_KEY_LINE)
            nb_canvas_rect(&f->cv, x, ky + th / 2 - 1, KEY_W, 3, s->color);
        else
            vline(&f->cv, x + KEY_W / 2, ky - 3, ky + th + 3, PLOT_MARKER_WIDTH, i % 2, s->color);
        nb_canvas_text(&f->cv, x + KEY_W + KEY_GAP, ky, PLOT_LABEL_SCALE, PLOT_INK, s->label);
    }
done:
    nb_free(row_of);
    nb_free(row_w);
}

nb_status plot_frame_begin(plot_frame *f, const plot_frame_spec *sp) {
    memset(f, 0, sizeof *f);
    plot_ticks_make(&f->xt, sp->xlo, sp->xhi);
    plot_ticks_make(&f->yt, sp->ylo, sp->yhi);
    char buf[64];
    int yw = 0; /* the widest y tick label */
    for (int i = 0; i < f->yt.count; i++) {
        plot_tick_label(&f->yt, plot_tick(&f->yt, i), buf, sizeof buf);
        yw = plot_imax(yw, nb_text_width(buf, PLOT_TICK_SCALE));
    }
    const char *title = sp->title, *x_label = sp->x_label, *y_label = sp->y_label;
    const int has_title = title && *title, has_x = x_label && *x_label, has_y = y_label && *y_label;
    /* A title wider than the picture widens it. */
    const int w = plot_imax(PLOT_CHART_W, has_title ? nb_text_width(title, PLOT_TITLE_SCALE) +
                                                          2 * PLOT_MARGIN : 0);
    f->px = PLOT_MARGIN + (has_y ? text_h(PLOT_LABEL_SCALE) + 12 : 0) + yw + TICK_LEN + 6;
    f->pw = w - f->px - PLOT_MARGIN - 24; /* room for half the last x tick label */
    int rows = 0;
    {
        int *scratch = nb_calloc((size_t)sp->n_series * 3 + 1, sizeof(int));
        if (!scratch) return NB_STATUS_OOM;
        rows = legend_rows(sp, f->pw, scratch, scratch + sp->n_series, scratch + 2 * sp->n_series);
        nb_free(scratch);
    }
    const int legend_y = PLOT_MARGIN + (has_title ? text_h(PLOT_TITLE_SCALE) + 20 : 0);
    f->py = legend_y + rows * KEY_ROW + (rows ? 8 : 6);
    const int bottom = TICK_LEN + 6 + text_h(PLOT_TICK_SCALE) +
                       (has_x ? 12 + text_h(PLOT_LABEL_SCALE) : 0) + PLOT_MARGIN;
    /* Many legend rows make the picture taller, not the plot flatter. */
    const int h = plot_imax(PLOT_CHART_H, f->py + PLOT_MIN_PLOT_H + bottom);
    f->ph = h - f->py - bottom;
    nb_status st = nb_canvas_init(&f->cv, w, h, PLOT_BG);
    if (st != NB_OK) return st;
    nb_canvas *c = &f->cv;
    if (has_title)
        nb_canvas_text(c, (w - nb_text_width(title, PLOT_TITLE_SCALE)) / 2, PLOT_MARGIN,
                       PLOT_TITLE_SCALE, PLOT_INK, title);
    legend(f, sp, legend_y);
    const int base = f->py + f->ph; /* the row below the plot area */
    for (int i = 0; i < f->xt.count; i++) {
        const double v = plot_tick(&f->xt, i);
        const int x = plot_frame_x(f, v);
        nb_canvas_rect(c, x, f->py, 1, f->ph, PLOT_GRID);
        nb_canvas_rect(c, x, base, 1, TICK_LEN, PLOT_AXIS);
        plot_tick_label(&f->xt, v, buf, sizeof buf);
        nb_canvas_text(c, x - nb_text_width(buf, PLOT_TICK_SCALE) / 2, base + TICK_LEN + 6,
                       PLOT_TICK_SCALE, PLOT_INK, buf);
    }
    for (int i = 0; i < f->yt.count; i++) {
        const double v = plot_tick(&f->yt, i);
        const int y = plot_frame_y(f, v);
        nb_canvas_rect(c, f->px, y, f->pw, 1, PLOT_GRID);
        nb_canvas_rect(c, f->px - TICK_LEN, y, TICK_LEN, 1, PLOT_AXIS);
        plot_tick_label(&f->yt, v, buf, sizeof buf);
        nb_canvas_text(c, f->px - TICK_LEN - 6 - nb_text_width(buf, PLOT_TICK_SCALE),
                       y - text_h(PLOT_TICK_SCALE) / 2, PLOT_TICK_SCALE, PLOT_INK, buf);
    }
    if (has_x)
        nb_canvas_text(c, f->px + (f->pw - nb_text_width(x_label, PLOT_LABEL_SCALE)) / 2,
                       h - PLOT_MARGIN - text_h(PLOT_LABEL_SCALE), PLOT_LABEL_SCALE, PLOT_INK,
                       x_label);
    if (has_y)
        nb_canvas_text_up(c, PLOT_MARGIN,
                          f->py + (f->ph + nb_text_width(y_label, PLOT_LABEL_SCALE)) / 2,
                          PLOT_LABEL_SCALE, PLOT_INK, y_label);
    return NB_OK;
}

int plot_frame_x(const plot_frame *f, double x) {
    return f->px + (int)lrint((x - f->xt.lo) / (f->xt.hi - f->xt.lo) * (f->pw - 1));
}

int plot_frame_y(const plot_frame *f, double y) {
    return f->py + f->ph - 1 - (int)lrint((y - f->yt.lo) / (f->yt.hi - f->yt.lo) * (f->ph - 1));
}

void plot_frame_vline(plot_frame *f, int x, int width, int dashed, nb_rgb col) {
    vline(&f->cv, x, f->py, f->py + f->ph, width, dashed, col);
}

nb_status plot_frame_finish(plot_frame *f, const char *path) {
    nb_canvas *c = &f->cv;
    nb_canvas_rect(c, f->px - 1, f->py, 1, f->ph + 1, PLOT_AXIS);
    nb_canvas_rect(c, f->px - 1, f->py + f->ph, f->pw + 1, 1, PLOT_AXIS);
    const nb_status st = nb_canvas_write_png(c, path);
    nb_canvas_deinit(c);
    return st;
}
