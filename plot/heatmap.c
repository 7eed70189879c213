/* Heat maps: a grid of coloured cells with row and column labels, values
 * written in the cells, and a colour bar (per-layer sensitivity against
 * bit width). */
#include <math.h>
#include <stdio.h>

#include "internal.h"

#define MAX_ROWS 600
#define MAX_COLS 200
#define ROW_H 26            /* pixels a row */
#define MAX_ROW_CHARS 28    /* longer row labels lose their front */
#define MAX_COL_CHARS 16
#define MAX_ANNOTATED_W 1600 /* wider grids drop the values in the cells */
#define BAR_W 20
#define BAR_MIN_H (3 * NB_FONT_H * PLOT_TICK_SCALE + 36) /* its three labels, spaced */
#define NA ((nb_rgb){214, 214, 214})
#define NA_HATCH ((nb_rgb){168, 168, 168})
#define WHITE ((nb_rgb){255, 255, 255})

nb_heatmap_opts nb_heatmap_opts_default(void) {
    return (nb_heatmap_opts){.log_scale = 0, .annotate = 1, .bar_label = NULL};
}

/* The colour scale over the finite values. */
typedef struct {
    int log, any; /* any: a finite value exists */
    double lo, hi; /* in value units (positive when log) */
} scale;

static void scale_make(scale *s, const float *v, size_t n, int want_log) {
    s->lo = INFINITY;
    s->hi = -INFINITY;
    double plo = INFINITY, phi = -INFINITY; /* positive values only */
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i])) continue;
        s->lo = fmin(s->lo, (double)v[i]);
        s->hi = fmax(s->hi, (double)v[i]);
        if (v[i] > 0.0f) {
            plo = fmin(plo, (double)v[i]);
            phi = fmax(phi, (double)v[i]);
        }
    }
    s->any = s->lo <= s->hi;
    s->log = want_log && plo <= phi;
    if (s->log) {
        s->lo = plo;
        s->hi = phi;
    }
}

/* Position of finite v on the scale, 0 (lowest) to 1. */
static double scale_at(const scale *s, double v) {
    if (s->hi <= s->lo) return 0.5;
    if (s->log) return (log10(fmax(v, s->lo)) - log10(s->lo)) / (log10(s->hi) - log10(s->lo));
    return (v - s->lo) / (s->hi - s->lo);
}

/* The value at position t of the scale. */
static double scale_value(const scale *s, double t) {
    if (s->log) return pow(10.0, log10(s->lo) + t * (log10(s->hi) - log10(s->lo)));
    return s->lo + t * (s->hi - s->lo);
}

static void hatch(nb_canvas *c, int x, int y, int w, int h) {
    nb_canvas_rect(c, x, y, w, h, NA);
    for (int yy = y; yy < y + h; yy++)
        for (int xx = x; xx < x + w; xx++)
            if ((xx + yy) % 7 == 0) nb_canvas_rect(c, xx, yy, 1, 1, NA_HATCH);
}

/* Dark text on light colours, white on dark ones. */
static nb_rgb ink_on(nb_rgb bg) {
    return 299 * bg.r + 587 * bg.g + 114 * bg.b > 140000 ? PLOT_INK : WHITE;
}

static void label_of(const char *const *labels, int i, int max_chars, char *buf, size_t n) {
    if (labels && labels[i])
        plot_shorten(labels[i], max_chars, buf, n);
    else
        snprintf(buf, n, "%d", i);
}

nb_status nb_plot_heatmap(const char *path, const char *title, int n_rows,
                          const char *const *row_labels, int n_cols,
                          const char *const *col_labels, const float *values,
                          const nb_heatmap_opts *opts) {
    NB_ASSERT(path && (values || n_rows <= 0 || n_cols <= 0), "bad heat map arguments");
    const nb_heatmap_opts o = opts ? *opts : nb_heatmap_opts_default();
    if (n_rows < 1 || n_cols < 1 || n_rows > MAX_ROWS || n_cols > MAX_COLS)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "%s: heat map of %d x %d cells (rows 1..%d, columns 1..%d)", path,
                            n_rows, n_cols, MAX_ROWS, MAX_COLS);
    const size_t cells = (size_t)n_rows * (size_t)n_cols;
    scale sc;
    scale_make(&sc, values, cells, o.log_scale);
    char buf[64];
    const int L = PLOT_LABEL_SCALE, T = PLOT_TICK_SCALE, th = NB_FONT_H * L;

    /* Widths: the row label column, a cell (its column label, its value). */
    int row_w = 0, col_w = 0, val_w = 0;
    for (int r = 0; r < n_rows; r++) {
        label_of(row_labels, r, MAX_ROW_CHARS, buf, sizeof buf);
        row_w = plot_imax(row_w, nb_text_width(buf, L));
    }
    for (int k = 0; k < n_cols; k++) {
        label_of(col_labels, k, MAX_COL_CHARS, buf, sizeof buf);
        col_w = plot_imax(col_w, nb_text_width(buf, L));
    }
    for (size_t i = 0; i < cells && o.annotate; i++) {
        plot_format_value(values[i], buf, sizeof buf);
        val_w = plot_imax(val_w, nb_text_width(buf, T));
    }
    int cell_w = plot_imax(plot_imax(col_w, val_w) + 18, 56);
    int annotate = o.annotate && n_cols * cell_w <= MAX_ANNOTATED_W;
    if (!annotate) cell_w = plot_imax(col_w + 10, 40);

    const int has_title = title && *title;
    const int gx = PLOT_MARGIN + row_w + 10; /* the grid's top-left corner */
    const int gy = PLOT_MARGIN + (has_title ? NB_FONT_H * PLOT_TITLE_SCALE + 18 : 0) + th + 10;
    const int gw = n_cols * cell_w, gh = n_rows * ROW_H;
    /* The colour bar beside the grid, its labels right of it. */
    const int bx = gx + gw + 24, by = gy, bh = plot_imax(gh, BAR_MIN_H);
    const double ticks[3] = {1.0, 0.5, 0.0};
    int tick_w = nb_text_width("n/a", L);
    for (int i = 0; i < 3 && sc.any; i++) {
        plot_format_value(scale_value(&sc, ticks[i]), buf, sizeof buf);
        tick_w = plot_imax(tick_w, nb_text_width(buf, T));
    }
    const int has_bar_label = o.bar_label && *o.bar_label;
    int w = bx + BAR_W + 6 + 6 + tick_w + (has_bar_label ? 14 + th : 0) + PLOT_MARGIN;
    int has_na = 0;
    for (size_t i = 0; i < cells; i++) has_na |= !isfinite(values[i]);
    int h = by + bh + (has_na ? 12 + BAR_W : 0) + PLOT_MARGIN;
    h = plot_imax(h, gy + gh + PLOT_MARGIN);
    if (has_title) w = plot_imax(w, nb_text_width(title, PLOT_TITLE_SCALE) + 2 * PLOT_MARGIN);

    nb_canvas cv;
    nb_status st = nb_canvas_init(&cv, w, h, PLOT_BG);
    if (st != NB_OK) return st;
    if (has_title)
        nb_canvas_text(&cv, (w - nb_text_width(title, PLOT_TITLE_SCALE)) / 2, PLOT_MARGIN,
                       PLOT_TITLE_SCALE, PLOT_INK, title);
    for (int k = 0; k < n_cols; k++) {
        label_of(col_labels, k, MAX_COL_CHARS, buf, sizeof buf);
        nb_canvas_text(&cv, gx + k * cell_w + (cell_w - nb_text_width(buf, L)) / 2, gy - th - 10,
                       L, PLOT_INK, buf);
    }
    for (int r = 0; r < n_rows; r++) {
        const int y = gy + r * ROW_H;
        label_of(row_labels, r, MAX_ROW_CHARS, buf, sizeof buf);
        nb_canvas_text(&cv, gx - 10 - nb_text_width(buf, L), y + (ROW_H - th) / 2, L, PLOT_INK,
                       buf);
        for (int k = 0; k < n_cols; k++) {
            const float v = values[(size_t)r * (size_t)n_cols + (size_t)k];
            const int x = gx + k * cell_w;
            /* one pixel of white between cells */
            nb_rgb col = NA;
            if (isfinite(v)) {
                col = plot_viridis(scale_at(&sc, (double)v));
                nb_canvas_rect(&cv, x, y, cell_w - 1, ROW_H - 1, col);
            } else {
                hatch(&cv, x, y, cell_w - 1, ROW_H - 1);
            }
            if (!annotate) continue;
            plot_format_value((double)v, buf, sizeof buf);
            nb_canvas_text(&cv, x + (cell_w - 1 - nb_text_width(buf, T)) / 2,
                           y + (ROW_H - 1 - NB_FONT_H * T) / 2, T, ink_on(col), buf);
        }
    }
    /* The colour bar, top = highest, one colour a row of pixels. */
    if (sc.any) {
        for (int y = 0; y < bh; y++)
            nb_canvas_rect(&cv, bx, by + y, BAR_W, 1, plot_viridis(1.0 - (double)y / (bh - 1)));
        for (int i = 0; i < 3; i++) {
            const int y = by + (int)lrint((1.0 - ticks[i]) * (bh - 1));
            nb_canvas_rect(&cv, bx + BAR_W, y, 5, 1, PLOT_AXIS);
            plot_format_value(scale_value(&sc, ticks[i]), buf, sizeof buf);
            /* centred on its tick, kept within the bar's height */
            int ty = plot_imax(y - NB_FONT_H * T / 2, by);
            if (ty > by + bh - NB_FONT_H * T) ty = by + bh - NB_FONT_H * T;
            nb_canvas_text(&cv, bx + BAR_W + 12, ty, T, PLOT_INK, buf);
        }
    }
    if (has_bar_label)
        nb_canvas_text_up(&cv, bx + BAR_W + 12 + tick_w + 14,
                          by + (bh + nb_text_width(o.bar_label, L)) / 2, L, PLOT_INK, o.bar_label);
    if (has_na) {
        const int y = by + bh + 12;
        hatch(&cv, bx, y, BAR_W, BAR_W);
        nb_canvas_text(&cv, bx + BAR_W + 12, y + (BAR_W - th) / 2, L, PLOT_INK, "n/a");
    }
    st = nb_canvas_write_png(&cv, path);
    nb_canvas_deinit(&cv);
    return st;
}
