/*
 * nb_optim.h — optimizers over flat parameter arrays.
 *
 * The model keeps parameters and gradients in contiguous blocks, so an
 * update is one loop over (param, grad, state) ranges; parameter groups
 * (their own lr and weight decay) are ranges of those blocks.
 *
 * Example:
 *     nb_sgd_opts o = nb_sgd_opts_default();   // momentum 0.9
 *     nb_sgd_update(&o, lr, wd, p, g, momentum_buf, n, step == 0);
 */
#ifndef NB_OPTIM_H
#define NB_OPTIM_H

#include <stddef.h>

typedef struct {
    float momentum;   /* default 0.9 */
    float dampening;  /* default 0 */
    int nesterov;     /* default 0 */
} nb_sgd_opts;

nb_sgd_opts nb_sgd_opts_default(void);

/* PyTorch's SGD on n elements: g' = g + wd p; buf = g' on the first step,
 * else momentum buf + (1 - dampening) g'; step = nesterov ? g' + momentum
 * buf : buf; p -= lr step. buf (n floats) is the caller's momentum state. */
void nb_sgd_update(const nb_sgd_opts *o, float lr, float wd, float *p, const float *g,
                   float *buf, size_t n, int first_step);

#endif
