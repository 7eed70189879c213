/* Line charts: curves of (x, y) points with a legend (loss and accuracy
 * against epochs). */
#include <math.h>

#include "internal.h"

#define LINE_WIDTH 2

static int finite_at(const nb_plot_series *s, int i) {
    return i >= 0 && i < s->n && isfinite(s->x[i]) && isfinite(s->y[i]);
}

nb_status nb_plot_lines(const char *path, const char *title, const nb_plot_series *series,
                        int n_series, const char *x_label, const char *y_label) {
    NB_ASSERT(path && n_series >= 0 && (series || n_series == 0), "bad line chart arguments");
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int s = 0; s < n_series; s++) {
        NB_ASSERT(series[s].n >= 0 && (series[s].n == 0 || (series[s].x && series[s].y)),
                  "series %d has no points", s);
        for (int i = 0; i < series[s].n; i++)
            if (finite_at(&series[s], i)) {
                xlo = fmin(xlo, (double)series[s].x[i]);
                xhi = fmax(xhi, (double)series[s].x[i]);
                ylo = fmin(ylo, (double)series[s].y[i]);
                yhi = fmax(yhi, (double)series[s].y[i]);
            }
    }
    if (xlo > xhi)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: line chart of %d series has no finite point",
                            path, n_series);
    plot_widen(&xlo, &xhi);
    plot_widen(&ylo, &yhi);
    const double px = 0.02 * (xhi - xlo), py = 0.05 * (yhi - ylo);
    const plot_frame_spec spec = {.title = title, .x_label = x_label, .y_label = y_label,
                                  .xlo = xlo - px, .xhi = xhi + px, .ylo = ylo - py,
                                  .yhi = yhi + py, .series = series, .n_series = n_series,
                                  .key = PLOT_KEY_LINE};
    plot_frame f;
    nb_status st = plot_frame_begin(&f, &spec);
    if (st != NB_OK) return st;
    for (int s = 0; s < n_series; s++) {
        const nb_plot_series *c = &series[s];
        for (int i = 0; i < c->n; i++) {
            if (!finite_at(c, i)) continue;
            const int x = plot_frame_x(&f, c->x[i]), y = plot_frame_y(&f, c->y[i]);
            if (finite_at(c, i + 1))
                nb_canvas_line(&f.cv, x, y, plot_frame_x(&f, c->x[i + 1]),
                               plot_frame_y(&f, c->y[i + 1]), LINE_WIDTH, c->color);
            else if (!finite_at(c, i - 1)) /* a point on its own: a dot */
                nb_canvas_rect(&f.cv, x - 2, y - 2, 5, 5, c->color);
        }
    }
    return plot_frame_finish(&f, path);
}
