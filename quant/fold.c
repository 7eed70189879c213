/* Batchnorm folding (ALGORITHMS.md §3): w' = w γ/√(σ²+ε) per output
 * channel, b' = β + (b - μ) γ/√(σ²+ε). The batchnorm module stays in the
 * network as an exact bias add (γ = 1, μ = 0, σ² = 1, ε = 0: (x - 0)/√1·1
 * + b' = x + b'), so a folded checkpoint has the same tensors as any other
 * and the forward code needs no second path. */
#include <math.h>

#include "internal.h"

static void mark(nb_bn_module *bn) { bn->eps = 0.0f; }

void nb_quant_bn_coeffs(const nb_module *mod, int c, double *mul, double *bias) {
    const nb_tensor *b = mod->type == NB_MOD_CONV2D ? ((const nb_conv2d_module *)mod)->bias
                                                    : ((const nb_linear_module *)mod)->bias;
    const double bb = b ? (double)b->data[c] : 0.0;
    const nb_bn_module *bn = (const nb_bn_module *)mod->bn;
    if (!bn) {
        *mul = 1.0;
        *bias = bb;
        return;
    }
    *mul = (double)bn->weight->data[c] / sqrt((double)bn->running_var->data[c] + (double)bn->eps);
    *bias = (double)bn->bias->data[c] + (bb - (double)bn->running_mean->data[c]) * *mul;
}

void nb_quant_fold_bn(nb_model *m) {
    for (int i = 0; i < m->n_modules; i++) {
        nb_module *mod = m->modules[i];
        if (mod->type != NB_MOD_CONV2D || !mod->bn) continue;
        nb_conv2d_module *c = (nb_conv2d_module *)mod;
        nb_bn_module *bn = (nb_bn_module *)mod->bn;
        const int OC = c->weight->shape[0];
        const size_t per = c->weight->numel / (size_t)OC;
        for (int oc = 0; oc < OC; oc++) {
            double k, b;
            nb_quant_bn_coeffs(mod, oc, &k, &b);
            float *w = c->weight->data + (size_t)oc * per;
            for (size_t j = 0; j < per; j++) w[j] = (float)((double)w[j] * k);
            bn->bias->data[oc] = (float)b;
            if (c->bias) c->bias->data[oc] = 0.0f;
            bn->weight->data[oc] = 1.0f;
            bn->running_mean->data[oc] = 0.0f;
            bn->running_var->data[oc] = 1.0f;
        }
        mark(bn);
    }
}

void nb_quant_mark_folded(nb_model *m) {
    for (int i = 0; i < m->n_modules; i++) {
        nb_module *mod = m->modules[i];
        if (mod->type == NB_MOD_CONV2D && mod->bn) mark((nb_bn_module *)mod->bn);
    }
}
