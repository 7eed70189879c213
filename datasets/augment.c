/* Per-example augmentation and normalisation: zero-pad + random crop,
 * horizontal flip, random-resized-crop (torchvision's sampling), and the
 * deterministic evaluation view (center crop or zero pad). */
#include <math.h>

#include "internal.h"

static int floor_half(int v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

/* torchvision RandomResizedCrop(scale = (0.08, 1), ratio = (3/4, 4/3)):
 * region (x, y, w, h) in source pixels. */
static void rrc_region(nb_rng *r, int H, int W, int *x, int *y, int *w, int *h) {
    double area = (double)H * (double)W;
    double lr0 = log(3.0 / 4.0), lr1 = log(4.0 / 3.0);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * (0.08 + 0.92 * (double)nb_rng_uniform(r));
        double aspect = exp(lr0 + (lr1 - lr0) * (double)nb_rng_uniform(r));
        int cw = (int)lround(sqrt(target * aspect));
        int ch = (int)lround(sqrt(target / aspect));
        if (cw > 0 && cw <= W && ch > 0 && ch <= H) {
            *y = (int)nb_rng_below(r, (uint32_t)(H - ch + 1));
            *x = (int)nb_rng_below(r, (uint32_t)(W - cw + 1));
            *w = cw;
            *h = ch;
            return;
        }
    }
    double in_ratio = (double)W / (double)H;
    int cw = W, ch = H;
    if (in_ratio < 3.0 / 4.0) ch = (int)lround(W / (3.0 / 4.0));
    else if (in_ratio > 4.0 / 3.0) cw = (int)lround(H * (4.0 / 3.0));
    *w = cw;
    *h = ch;
    *x = (W - cw) / 2;
    *y = (H - ch) / 2;
}

void nb_augment_example(const nb_augment *a, const uint8_t *src, uint32_t index, int epoch,
                        float *out, float *scratch) {
    const int C = a->C, H = a->H, W = a->W, oh = a->oh, ow = a->ow;
    const size_t plane = (size_t)oh * (size_t)ow;
    nb_rng r;
    nb_rng_seed(&r, a->seed, ((uint64_t)(uint32_t)epoch << 32) | index);
    if (a->augment && a->rrc) {
        int x, y, w, h;
        rrc_region(&r, H, W, &x, &y, &w, &h);
        int flip = a->flip && (nb_rng_u32(&r) & 1u);
        nb_resize_region(src, C, H, W, x, y, w, h, out, oh, ow, scratch);
        for (int c = 0; c < C; c++) {
            float m = a->mean[c], s = a->std[c];
            float *o = out + (size_t)c * plane;
            for (size_t k = 0; k < plane; k++) o[k] = (o[k] / 255.0f - m) / s;
            if (flip)
                for (int yy = 0; yy < oh; yy++) {
                    float *row = o + (size_t)yy * (size_t)ow;
                    for (int l = 0, rr = ow - 1; l < rr; l++, rr--) {
                        float t = row[l];
                        row[l] = row[rr];
                        row[rr] = t;
                    }
                }
        }
        return;
    }
    /* Top-left of the output window in source coordinates; outside the
     * image reads as pixel value 0 (zero padding before normalisation). */
    int y0 = floor_half(H - oh), x0 = floor_half(W - ow), flip = 0;
    if (a->augment) {
        int ry = H + 2 * a->pad - oh, rx = W + 2 * a->pad - ow;
        if (ry >= 0) y0 = -a->pad + (int)nb_rng_below(&r, (uint32_t)ry + 1);
        if (rx >= 0) x0 = -a->pad + (int)nb_rng_below(&r, (uint32_t)rx + 1);
        flip = a->flip && (nb_rng_u32(&r) & 1u);
    }
    for (int c = 0; c < C; c++) {
        const float *lut = a->lut + (size_t)c * 256;
        const uint8_t *sp = src + (size_t)c * (size_t)H * (size_t)W;
        float *o = out + (size_t)c * plane;
        for (int y = 0; y < oh; y++) {
            int sy = y0 + y;
            float *orow = o + (size_t)y * (size_t)ow;
            if (sy < 0 || sy >= H) {
                for (int x = 0; x < ow; x++) orow[x] = lut[0];
                continue;
            }
            const uint8_t *srow = sp + (size_t)sy * (size_t)W;
            /* Source columns x0 .. x0 + ow - 1, mirrored when flipping. */
            for (int x = 0; x < ow; x++) {
                int sx = x0 + (flip ? ow - 1 - x : x);
                orow[x] = (sx >= 0 && sx < W) ? lut[srow[sx]] : lut[0];
            }
        }
    }
}
