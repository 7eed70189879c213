/* Per-channel mean and population std of uint8 images, pixels / 255, from
 * exact integer sums (no drift however many pixels are added). */
#include <math.h>
#include <string.h>

#include "internal.h"

void nb_pixel_stats_init(nb_pixel_stats *s, int C) {
    NB_ASSERT(C >= 1 && C <= 4, "pixel stats for %d channels", C);
    memset(s, 0, sizeof *s);
    s->C = C;
}

void nb_pixel_stats_add(nb_pixel_stats *s, const uint8_t *images, size_t n, size_t hw) {
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < s->C; c++) {
            const uint8_t *p = images + (i * (size_t)s->C + (size_t)c) * hw;
            uint64_t sum = 0, sumsq = 0;
            for (size_t k = 0; k < hw; k++) {
                sum += p[k];
                sumsq += (uint64_t)p[k] * p[k];
            }
            s->n[c] += hw;
            s->sum[c] += sum;
            s->sumsq[c] += sumsq;
        }
}

void nb_pixel_stats_get(const nb_pixel_stats *s, float *mean, float *std) {
    for (int c = 0; c < s->C; c++) {
        if (s->n[c] == 0) {
            mean[c] = 0.0f;
            std[c] = 1.0f;
            continue;
        }
        long double n = (long double)s->n[c];
        long double m = (long double)s->sum[c] / n;
        long double var = (long double)s->sumsq[c] / n - m * m;
        if (var < 0) var = 0;
        mean[c] = (float)(m / 255.0L);
        std[c] = (float)(sqrtl(var) / 255.0L);
        if (!(std[c] > 0.0f)) std[c] = 1.0f; /* a constant channel: keep the division finite */
    }
}
