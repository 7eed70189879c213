/* Histograms with sets of vertical marker lines (a weight distribution
 * and the codebook levels over it). */
#include <math.h>

#include "internal.h"

#define MAX_BINS 10000
#define BAR ((nb_rgb){158, 176, 199})
#define BAR_EDGE ((nb_rgb){120, 140, 166})

nb_status nb_plot_histogram(const char *path, const char *title, const float *values, size_t n,
                            int bins, const nb_plot_series *markers, int n_markers,
                            const char *x_label) {
    NB_ASSERT(path && (values || n == 0) && n_markers >= 0 && (markers || n_markers == 0),
              "bad histogram arguments");
    if (bins < 1 || bins > MAX_BINS)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: histogram bins %d not in 1..%d", path, bins,
                            MAX_BINS);
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (isfinite(values[i])) {
            lo = fmin(lo, (double)values[i]);
            hi = fmax(hi, (double)values[i]);
        }
    if (lo > hi)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: histogram of %zu values has no finite one",
                            path, n);
    plot_widen(&lo, &hi);
    long *counts = nb_calloc((size_t)bins, sizeof *counts);
    if (!counts) return NB_STATUS_OOM;
    long top = 1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(values[i])) continue;
        int b = (int)(((double)values[i] - lo) / (hi - lo) * bins);
        if (b >= bins) b = bins - 1; /* the maximum closes the last bin */
        if (++counts[b] > top) top = counts[b];
    }
    double xlo = lo, xhi = hi; /* the markers may lie outside the data */
    for (int s = 0; s < n_markers; s++)
        for (int i = 0; i < markers[s].n; i++)
            if (isfinite(markers[s].x[i])) {
                xlo = fmin(xlo, (double)markers[s].x[i]);
                xhi = fmax(xhi, (double)markers[s].x[i]);
            }
    const double pad = 0.03 * (xhi - xlo);
    const plot_frame_spec spec = {.title = title, .x_label = x_label, .y_label = "count",
                                  .xlo = xlo - pad, .xhi = xhi + pad, .ylo = 0.0,
                                  .yhi = (double)top * 1.08, .series = markers,
                                  .n_series = n_markers, .key = PLOT_KEY_MARKER};
    plot_frame f;
    nb_status st = plot_frame_begin(&f, &spec);
    if (st != NB_OK) goto done;
    const int base = plot_frame_y(&f, 0.0);
    for (int b = 0; b < bins; b++) {
        if (!counts[b]) continue;
        const int x0 = plot_frame_x(&f, lo + (hi - lo) * b / bins);
        int x1 = plot_frame_x(&f, lo + (hi - lo) * (b + 1) / bins);
        const int y = plot_frame_y(&f, (double)counts[b]);
        if (x1 <= x0) x1 = x0 + 1;
        nb_canvas_rect(&f.cv, x0, y, x1 - x0, base - y + 1, BAR_EDGE);
        if (x1 - x0 >= 3 && base - y >= 2) /* an outline when the bar is big enough */
            nb_canvas_rect(&f.cv, x0 + 1, y + 1, x1 - x0 - 2, base - y, BAR);
    }
    for (int s = 0; s < n_markers; s++)
        for (int i = 0; i < markers[s].n; i++)
            if (isfinite(markers[s].x[i]))
                plot_frame_vline(&f, plot_frame_x(&f, markers[s].x[i]), PLOT_MARKER_WIDTH, s % 2,
                                 markers[s].color);
    st = plot_frame_finish(&f, path);
done:
    nb_free(counts);
    return st;
}
