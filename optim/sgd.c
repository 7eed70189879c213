/* SGD with momentum, dampening, Nesterov and coupled weight decay. */
#include "nb_optim.h"

nb_sgd_opts nb_sgd_opts_default(void) { return (nb_sgd_opts){.momentum = 0.9f}; }

void nb_sgd_update(const nb_sgd_opts *o, float lr, float wd, float *p, const float *g,
                   float *buf, size_t n, int first_step) {
    const float mu = o->momentum, damp = 1.0f - o->dampening;
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * p[i];
        if (mu != 0.0f) {
            buf[i] = first_step ? d : mu * buf[i] + damp * d;
            d = o->nesterov ? d + mu * buf[i] : buf[i];
        }
        p[i] -= lr * d;
    }
}
