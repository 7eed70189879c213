/* The built-in synthetic dataset "shapes10": 10 classes of coloured shapes
 * (circle, square, triangle, cross, ring, stripes, star, crescent, frame,
 * checker) at 3x32x32, drawn with antialiased signed distance functions
 * over a two-colour gradient background, with position, scale, rotation,
 * aspect and colour jitter, background clutter (dots and strokes, some
 * over the shape) and Gaussian pixel noise. Example i of a split is drawn
 * from its own PCG32 stream, so the set is identical for a seed whatever
 * the thread count, and a smaller count is a prefix of a bigger one. */
#include <math.h>
#include <string.h>

#include "internal.h"

#define S10_SIZE 32
#define S10_CLASSES 10

static const char *const s10_names[S10_CLASSES] = {
    "circle", "square", "triangle", "cross", "ring",
    "stripes", "star", "crescent", "frame", "checker"};

/* Measured over 50,000 train examples (seed 0); fixed so that train, test
 * and any seed normalise identically. */
const float nb_shapes10_mean[3] = {0.4998f, 0.4995f, 0.4989f};
const float nb_shapes10_std[3] = {0.2283f, 0.2365f, 0.2256f};

static float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }
static float maxf(float a, float b) { return a > b ? a : b; }
static float minf(float a, float b) { return a < b ? a : b; }
static float lenf(float x, float y) { return sqrtf(x * x + y * y); }
static float signf(float v) { return (v > 0.0f) - (v < 0.0f); }

/* Exact box distance, half sizes (bx, by). */
static float sd_box(float x, float y, float bx, float by) {
    float qx = fabsf(x) - bx, qy = fabsf(y) - by;
    return lenf(maxf(qx, 0.0f), maxf(qy, 0.0f)) + minf(maxf(qx, qy), 0.0f);
}

/* Equilateral triangle with half side r (Inigo Quilez's formulation). */
static float sd_triangle(float x, float y, float r) {
    const float k = 1.7320508f;
    x = fabsf(x) - r;
    y = y + r / k;
    if (x + k * y > 0.0f) {
        float nx = (x - k * y) * 0.5f, ny = (-k * x - y) * 0.5f;
        x = nx;
        y = ny;
    }
    x -= clampf(x, -2.0f * r, 0.0f);
    return -lenf(x, y) * signf(y);
}

/* Five-pointed star, outer radius r, inner ratio rf (Inigo Quilez). */
static float sd_star5(float x, float y, float r, float rf) {
    const float k1x = 0.809016994f, k1y = -0.587785252f;
    const float k2x = -k1x, k2y = k1y;
    x = fabsf(x);
    float d1 = 2.0f * maxf(k1x * x + k1y * y, 0.0f);
    x -= d1 * k1x;
    y -= d1 * k1y;
    float d2 = 2.0f * maxf(k2x * x + k2y * y, 0.0f);
    x -= d2 * k2x;
    y -= d2 * k2y;
    x = fabsf(x);
    y -= r;
    float bax = rf * -k1y, bay = rf * k1x - 1.0f;
    float h = clampf((x * bax + y * bay) / (bax * bax + bay * bay), 0.0f, r);
    return lenf(x - bax * h, y - bay * h) * signf(y * bax - x * bay);
}

/* Signed distance (pixels) of class `cls` of radius R at local point. */
static float shape_sdf(int cls, float x, float y, float R) {
    switch (cls) {
    case 0: return lenf(x, y) - R;
    case 1: return sd_box(x, y, 0.8f * R, 0.8f * R);
    case 2: return sd_triangle(x, y, 0.95f * R);
    case 3: return minf(sd_box(x, y, R, 0.3f * R), sd_box(x, y, 0.3f * R, R));
    case 4: return fabsf(lenf(x, y) - 0.72f * R) - 0.22f * R;
    case 5: { /* three bars clipped to a disc */
        float period = 0.62f * R;
        float v = y / period + 0.5f;
        float bars = (fabsf(v - floorf(v) - 0.5f) - 0.25f) * period;
        return maxf(lenf(x, y) - R, bars);
    }
    case 6: return sd_star5(x, y, 1.1f * R, 0.45f);
    case 7: return maxf(lenf(x, y) - R, -(lenf(x - 0.5f * R, y) - 0.78f * R));
    case 8: return maxf(sd_box(x, y, 0.85f * R, 0.85f * R), -sd_box(x, y, 0.5f * R, 0.5f * R));
    default: { /* 3x3 checkerboard in a square */
        float b = 0.85f * R, s = 2.0f * b / 3.0f;
        float u = (x + b) / s, v = (y + b) / s;
        float fu = u - floorf(u), fv = v - floorf(v);
        float edge = minf(minf(fu, 1.0f - fu), minf(fv, 1.0f - fv)) * s;
        int odd = ((int)floorf(u) + (int)floorf(v)) & 1;
        return maxf(sd_box(x, y, b, b), odd ? edge : -edge);
    }
    }
}

static float lum(const float *c) { return 0.299f * c[0] + 0.587f * c[1] + 0.114f * c[2]; }

static void rand_color(nb_rng *r, float *c) {
    for (int k = 0; k < 3; k++) c[k] = nb_rng_uniform(r);
}

/* Alpha-composite colour c with coverage from an SDF over the image. */
static void paint(float *img, const float *c, float alpha, float d, int idx) {
    float a = clampf(0.5f - d, 0.0f, 1.0f) * alpha;
    if (a <= 0.0f) return;
    for (int k = 0; k < 3; k++) {
        float *p = img + k * S10_SIZE * S10_SIZE + idx;
        *p = *p * (1.0f - a) + c[k] * a;
    }
}

/* Pixel range [lo, hi) covering [a - r, b + r] on a 32-pixel axis. */
static void span(float a, float b, float r, int *lo, int *hi) {
    float mn = minf(a, b) - r - 1.0f, mx = maxf(a, b) + r + 1.0f;
    *lo = mn < 0.0f ? 0 : mn > 32.0f ? 32 : (int)mn;
    *hi = mx < 0.0f ? 0 : mx > 32.0f ? 32 : (int)mx + 1;
    if (*hi > S10_SIZE) *hi = S10_SIZE;
}

/* A dot or a stroke of random colour, small next to the shapes. */
static void clutter(float *img, nb_rng *r) {
    float c[3];
    rand_color(r, c);
    float alpha = 0.5f + 0.5f * nb_rng_uniform(r);
    float x0 = 32.0f * nb_rng_uniform(r), y0 = 32.0f * nb_rng_uniform(r);
    int stroke = nb_rng_below(r, 2);
    float rad = stroke ? 0.5f + 0.6f * nb_rng_uniform(r) : 1.0f + 1.8f * nb_rng_uniform(r);
    float ang = 6.2831853f * nb_rng_uniform(r), len = stroke ? 4.0f + 10.0f * nb_rng_uniform(r) : 0.0f;
    float dx = cosf(ang), dy = sinf(ang);
    int xl, xh, yl, yh;
    span(x0, x0 + len * dx, rad, &xl, &xh);
    span(y0, y0 + len * dy, rad, &yl, &yh);
    for (int y = yl; y < yh; y++)
        for (int x = xl; x < xh; x++) {
            float px = (float)x + 0.5f - x0, py = (float)y + 0.5f - y0;
            float t = clampf(px * dx + py * dy, 0.0f, len); /* distance to a segment */
            paint(img, c, alpha, lenf(px - t * dx, py - t * dy) - rad, y * S10_SIZE + x);
        }
}

/* Draw example `label` into out (3, 32, 32) from the generator r. */
static void shapes10_draw(nb_rng *r, int label, uint8_t *out) {
    float img[3 * S10_SIZE * S10_SIZE];
    float c1[3], c2[3], fg[3];
    rand_color(r, c1);
    rand_color(r, c2);
    float ga = 6.2831853f * nb_rng_uniform(r), gs = (0.3f + 0.6f * nb_rng_uniform(r)) / 32.0f;
    float gx = cosf(ga) * gs, gy = sinf(ga) * gs;
    for (int y = 0; y < S10_SIZE; y++)
        for (int x = 0; x < S10_SIZE; x++) {
            float t = clampf(0.5f + ((float)x - 15.5f) * gx + ((float)y - 15.5f) * gy, 0.0f, 1.0f);
            for (int k = 0; k < 3; k++)
                img[k * S10_SIZE * S10_SIZE + y * S10_SIZE + x] = c1[k] + (c2[k] - c1[k]) * t;
        }
    int n_under = (int)nb_rng_below(r, 3), n_over = (int)nb_rng_below(r, 2);
    for (int i = 0; i < n_under; i++) clutter(img, r);
    /* Foreground: luminance and colour contrast with the mean background. */
    float bg[3] = {0.5f * (c1[0] + c2[0]), 0.5f * (c1[1] + c2[1]), 0.5f * (c1[2] + c2[2])};
    for (int tries = 0; tries < 32; tries++) {
        rand_color(r, fg);
        float dist = lenf(lenf(fg[0] - bg[0], fg[1] - bg[1]), fg[2] - bg[2]);
        if (fabsf(lum(fg) - lum(bg)) > 0.3f && dist > 0.45f) break;
    }
    float cx = 16.0f + 12.0f * (nb_rng_uniform(r) - 0.5f);
    float cy = 16.0f + 12.0f * (nb_rng_uniform(r) - 0.5f);
    float R = 7.5f + 4.0f * nb_rng_uniform(r);
    float rot = 6.2831853f * nb_rng_uniform(r), cr = cosf(rot), sr = sinf(rot);
    float sx = 0.85f + 0.3f * nb_rng_uniform(r), sy = 0.85f + 0.3f * nb_rng_uniform(r);
    float alpha = 0.8f + 0.2f * nb_rng_uniform(r);
    /* Every shape lies within 1.25 R of its centre before the stretch. */
    int xl, xh, yl, yh;
    span(cx, cx, 1.25f * R * maxf(sx, sy), &xl, &xh);
    span(cy, cy, 1.25f * R * maxf(sx, sy), &yl, &yh);
    for (int y = yl; y < yh; y++)
        for (int x = xl; x < xh; x++) {
            float px = (float)x + 0.5f - cx, py = (float)y + 0.5f - cy;
            float lx = (cr * px + sr * py) / sx, ly = (-sr * px + cr * py) / sy;
            /* Dividing by the stretch keeps the distance roughly in pixels. */
            float d = shape_sdf(label, lx, ly, R) * sqrtf(sx * sy);
            paint(img, fg, alpha, d, y * S10_SIZE + x);
        }
    for (int i = 0; i < n_over; i++) clutter(img, r);
    /* Pixel noise: the sum of four random bytes is near-Gaussian (mean 510,
     * std 147.8) at a fraction of Box-Muller's cost. */
    float sigma = (0.01f + 0.04f * nb_rng_uniform(r)) / 147.8f;
    for (int i = 0; i < 3 * S10_SIZE * S10_SIZE; i++) {
        uint32_t u = nb_rng_u32(r);
        int sum = (int)(u & 255) + (int)(u >> 8 & 255) + (int)(u >> 16 & 255) + (int)(u >> 24);
        float v = img[i] + sigma * (float)(sum - 510);
        out[i] = (uint8_t)lrintf(255.0f * clampf(v, 0.0f, 1.0f));
    }
}

nb_status nb_dataset_synthetic(const char *name, const char *split, size_t count, uint64_t seed,
                               nb_dataset **out) {
    NB_ASSERT(name && split && out, "NULL argument");
    *out = NULL;
    if (strcmp(name, "shapes10"))
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "unknown synthetic dataset '%s' (available: shapes10)", name);
    int split_id = !strcmp(split, "train") ? 1 : !strcmp(split, "test") ? 2 : 0;
    if (!split_id)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "synthetic:%s: unknown split '%s' (expected train or test)", name,
                            split);
    if (count == 0) count = split_id == 1 ? 10000 : 2000;
    if (count > ((size_t)1 << 24))
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "synthetic:%s: %zu examples requested, at most 16777216", name, count);
    char source[160];
    snprintf(source, sizeof source,
             "nibble built-in synthetic dataset shapes10 (seed %llu, %zu %s examples)",
             (unsigned long long)seed, count, split);
    nb_dataset *ds = nb_ds_new();
    if (!ds) return NB_STATUS_OOM;
    nb_status st = nb_ds_set_meta(ds, "shapes10", source, "", split, S10_CLASSES, s10_names, 3,
                                  S10_SIZE, S10_SIZE, nb_shapes10_mean, nb_shapes10_std);
    if (st != NB_OK) goto fail;
    ds->count = count;
    ds->chunk_rows = 256;
    ds->labels = nb_malloc(count);
    ds->images = nb_malloc(count * ds->example_bytes);
    if (!ds->labels || !ds->images) {
        st = NB_STATUS_OOM;
        goto fail;
    }
    long n = (long)count;
    size_t eb = ds->example_bytes;
    uint8_t *images = ds->images, *labels = ds->labels;
#pragma omp parallel for schedule(dynamic, 64) num_threads(nb_get_threads())
    for (long i = 0; i < n; i++) {
        nb_rng r;
        nb_rng_seed(&r, seed, ((uint64_t)split_id << 40) | (uint64_t)i);
        int label = (int)(i % S10_CLASSES);
        labels[i] = (uint8_t)label;
        shapes10_draw(&r, label, images + (size_t)i * eb);
    }
    *out = ds;
    return NB_OK;
fail:
    nb_dataset_free(ds);
    return st;
}
