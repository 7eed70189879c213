/* AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019), in
 * PyTorch's order of operations. */
#include <math.h>

#include "nb_optim.h"

void nb_adamw_update(float lr, float wd, float beta1, float beta2, float eps, float *restrict p,
                     const float *restrict g, float *restrict m, float *restrict v, size_t n, long t) {
    NB_ASSERT(t >= 1, "adamw: step %ld must be >= 1", t);
    /* The scalars are formed in double, as PyTorch does in Python. */
    const float decay = (float)(1.0 - (double)lr * (double)wd);
    const double bc1 = 1.0 - pow((double)beta1, (double)t);
    const double bc2 = 1.0 - pow((double)beta2, (double)t);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float a1 = 1.0f - beta1, a2 = 1.0f - beta2;
    /* Elementwise: the same result on any number of threads. */
#pragma omp parallel for simd schedule(static) num_threads(n >= 65536 ? nb_get_threads() : 1)
    for (size_t i = 0; i < n; i++) {
        p[i] *= decay;
        m[i] = beta1 * m[i] + a1 * g[i];
        v[i] = beta2 * v[i] + a2 * g[i] * g[i];
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] -= step_size * m[i] / denom;
    }
}
