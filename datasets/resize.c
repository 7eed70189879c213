/* Separable antialiased resampling: a triangle (bilinear) filter widened by
 * the downscale factor, as PIL's BILINEAR resize with reducing, so a
 * downscale averages every source pixel instead of aliasing. Taps are
 * clamped to the image (not to the region), weights renormalised. */
#include <math.h>

#include "internal.h"

size_t nb_resize_scratch_floats(int C, int H, int W, int oh, int ow) {
    (void)oh;
    size_t taps = 2 * (size_t)(W > H ? W : H) + 8;
    return (size_t)C * (size_t)H * (size_t)ow + taps;
}

/* Weights of output sample o along an axis of length n for the source
 * interval [start, start + len) mapped onto `out` samples. Returns the
 * number of taps, first tap index in *first. */
static int axis_weights(int o, double start, double len, int out, int n, float *w, int *first) {
    double scale = len / out;
    double fs = scale > 1.0 ? scale : 1.0; /* filter scale */
    double support = fs;                   /* triangle radius 1, widened */
    double center = start + ((double)o + 0.5) * scale;
    int lo = (int)floor(center - support + 0.5);
    int hi = (int)floor(center + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > n) hi = n;
    if (hi <= lo) { /* region outside the image: nearest edge pixel */
        lo = center < 0 ? 0 : n - 1;
        hi = lo + 1;
    }
    double total = 0.0;
    for (int i = lo; i < hi; i++) {
        double x = fabs(((double)i - center + 0.5) / fs);
        double v = x < 1.0 ? 1.0 - x : 0.0;
        w[i - lo] = (float)v;
        total += v;
    }
    if (total <= 0.0) { /* degenerate: take the nearest pixel */
        for (int i = lo; i < hi; i++) w[i - lo] = 0.0f;
        int near = (int)floor(center);
        if (near < lo) near = lo;
        if (near >= hi) near = hi - 1;
        w[near - lo] = 1.0f;
        total = 1.0;
    }
    for (int i = lo; i < hi; i++) w[i - lo] = (float)((double)w[i - lo] / total);
    *first = lo;
    return hi - lo;
}

void nb_resize_region(const uint8_t *src, int C, int H, int W, double x0, double y0, double w,
                      double h, float *dst, int oh, int ow, float *scratch) {
    NB_ASSERT(w > 0 && h > 0 && oh > 0 && ow > 0, "empty resize");
    float *tmp = scratch;                               /* (C, H, ow) */
    float *wt = scratch + (size_t)C * (size_t)H * (size_t)ow; /* taps */
    /* Only the source rows the vertical pass will touch. */
    double fsy = h / oh > 1.0 ? h / oh : 1.0;
    int ylo = (int)floor(y0 - fsy - 1.0), yhi = (int)ceil(y0 + h + fsy + 1.0);
    if (ylo < 0) ylo = 0;
    if (yhi > H) yhi = H;
    if (yhi <= ylo) { /* region above/below the image: keep the edge row */
        ylo = y0 < 0 ? 0 : H - 1;
        yhi = ylo + 1;
    }
    for (int ox = 0; ox < ow; ox++) {
        int first, n = axis_weights(ox, x0, w, ow, W, wt, &first);
        for (int c = 0; c < C; c++)
            for (int y = ylo; y < yhi; y++) {
                const uint8_t *row = src + ((size_t)c * (size_t)H + (size_t)y) * (size_t)W + first;
                float acc = 0.0f;
                for (int k = 0; k < n; k++) acc += wt[k] * (float)row[k];
                tmp[((size_t)c * (size_t)H + (size_t)y) * (size_t)ow + (size_t)ox] = acc;
            }
    }
    for (int oy = 0; oy < oh; oy++) {
        int first, n = axis_weights(oy, y0, h, oh, H, wt, &first);
        NB_ASSERT(first >= ylo && first + n <= yhi, "resize rows %d..%d outside %d..%d", first,
                  first + n, ylo, yhi);
        for (int c = 0; c < C; c++) {
            float *o = dst + ((size_t)c * (size_t)oh + (size_t)oy) * (size_t)ow;
            for (int ox = 0; ox < ow; ox++) o[ox] = 0.0f;
            for (int k = 0; k < n; k++) {
                const float *t = tmp + ((size_t)c * (size_t)H + (size_t)(first + k)) * (size_t)ow;
                for (int ox = 0; ox < ow; ox++) o[ox] += wt[k] * t[ox];
            }
        }
    }
}
