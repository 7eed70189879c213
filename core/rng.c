/* PCG32 (XSH-RR variant, O'Neill 2014) and what is built on it. */
#include "nb_core.h"

#include <math.h>

void nb_rng_seed(nb_rng *r, uint64_t seed, uint64_t stream) {
    r->state = 0;
    r->inc = (stream << 1u) | 1u;
    (void)nb_rng_u32(r);
    r->state += seed;
    (void)nb_rng_u32(r);
}

uint32_t nb_rng_u32(nb_rng *r) {
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ULL + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

uint32_t nb_rng_below(nb_rng *r, uint32_t n) {
    NB_ASSERT(n > 0, "nb_rng_below(0)");
    uint32_t threshold = -n % n; /* reject the low values that bias the modulo */
    for (;;) {
        uint32_t x = nb_rng_u32(r);
        if (x >= threshold) return x % n;
    }
}

float nb_rng_uniform(nb_rng *r) { return (float)(nb_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

float nb_rng_normal(nb_rng *r) {
    /* Box-Muller in double, one value per call (no hidden cached state). */
    double u1 = ((double)nb_rng_u32(r) + 1.0) / 4294967297.0;
    double u2 = (double)nb_rng_u32(r) / 4294967296.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void nb_rng_shuffle(nb_rng *r, uint32_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        uint32_t j = nb_rng_below(r, (uint32_t)i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

void nb_tensor_fill_normal(nb_tensor *t, nb_rng *r, float mean, float std) {
    for (size_t i = 0; i < t->numel; i++) t->data[i] = mean + std * nb_rng_normal(r);
}

void nb_tensor_fill_uniform(nb_tensor *t, nb_rng *r, float lo, float hi) {
    for (size_t i = 0; i < t->numel; i++) t->data[i] = lo + (hi - lo) * nb_rng_uniform(r);
}
