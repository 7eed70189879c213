/* Finite-difference gradient checker (central differences, L summed in
 * double against a fixed random projection of the output). */
#include "nb_autograd.h"

#include <math.h>
#include <string.h>

nb_gradcheck_opts nb_gradcheck_opts_default(void) {
    return (nb_gradcheck_opts){.eps = 1e-2, .tol = 1e-2, .atol = 1e-3, .max_samples = 64, .seed = 1};
}

static double project(const nb_tensor *out, const float *r) {
    double s = 0.0;
    for (size_t i = 0; i < out->numel; i++) s += (double)out->data[i] * (double)r[i];
    return s;
}

static double eval_at(nb_tape *tape, nb_gradcheck_fn fn, void *user, nb_tensor **inputs,
                      const float *r) {
    nb_tape_reset(tape);
    int old = nb_tape_set_grad(tape, 0);
    nb_tensor *out = fn(tape, inputs, user);
    double v = project(out, r);
    nb_tape_set_grad(tape, old);
    return v;
}

nb_status nb_gradcheck(nb_tape *tape, nb_gradcheck_fn fn, void *user, nb_tensor **inputs,
                       int n_inputs, const nb_gradcheck_opts *opts, nb_gradcheck_result *res) {
    nb_gradcheck_opts o = opts ? *opts : nb_gradcheck_opts_default();
    nb_gradcheck_result rr = {0};
    nb_status st = NB_OK;
    nb_rng rng;
    nb_rng_seed(&rng, o.seed, 99);

    /* Analytic pass. */
    nb_tape_reset(tape);
    for (int i = 0; i < n_inputs; i++) {
        if (inputs[i]->grad_pooled) inputs[i]->grad = NULL;
        inputs[i]->grad_pooled = 0;
        if (inputs[i]->is_param && inputs[i]->grad)
            memset(inputs[i]->grad, 0, inputs[i]->numel * sizeof(float));
    }
    nb_tensor *out = fn(tape, inputs, user);
    size_t n_out = out->numel;
    float *r = nb_malloc(n_out * sizeof(float));
    float **analytic = nb_calloc((size_t)n_inputs, sizeof(float *));
    if (!r || !analytic) {
        nb_free(r);
        nb_free(analytic);
        return NB_STATUS_OOM;
    }
    for (size_t i = 0; i < n_out; i++) r[i] = nb_rng_uniform(&rng) * 2.0f - 1.0f;
    NB_ASSERT(out->requires_grad, "gradcheck: output does not depend on any input");
    nb_backward_seed(tape, out, r);
    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i]->requires_grad) continue;
        analytic[i] = nb_malloc(inputs[i]->numel * sizeof(float));
        NB_ASSERT(analytic[i], "out of memory");
        if (inputs[i]->grad)
            memcpy(analytic[i], inputs[i]->grad, inputs[i]->numel * sizeof(float));
        else
            memset(analytic[i], 0, inputs[i]->numel * sizeof(float));
    }

    /* Numeric pass over a sample of elements of each input. */
    for (int i = 0; i < n_inputs && st == NB_OK; i++) {
        if (!analytic[i]) continue;
        nb_tensor *x = inputs[i];
        size_t n = x->numel;
        double gmax = 0.0; /* errors below atol * gmax are float noise */
        for (size_t j = 0; j < n; j++) gmax = fmax(gmax, fabs((double)analytic[i][j]));
        const double floor = o.atol * fmax(gmax, 1e-6);
        size_t k = (o.max_samples <= 0 || (size_t)o.max_samples >= n) ? n : (size_t)o.max_samples;
        for (size_t s = 0; s < k; s++) {
            size_t j = k == n ? s : nb_rng_below(&rng, (uint32_t)n);
            float orig = x->data[j];
            double h = o.eps * fmax(1.0, fabs((double)orig)) ;
            x->data[j] = (float)((double)orig + h);
            double hp = (double)x->data[j] - (double)orig; /* the step actually taken */
            double lp = eval_at(tape, fn, user, inputs, r);
            x->data[j] = (float)((double)orig - h);
            double hm = (double)orig - (double)x->data[j];
            double lm = eval_at(tape, fn, user, inputs, r);
            x->data[j] = orig;
            double l0 = eval_at(tape, fn, user, inputs, r);
            double num = (lp - lm) / (hp + hm);
            double right = (lp - l0) / hp, left = (l0 - lm) / hm;
            double scale = fmax(fabs(right), fabs(left));
            if (fabs(right - left) > 0.1 * scale + floor) {
                rr.skipped++; /* a kink or rounding boundary inside [x-h, x+h] */
                continue;
            }
            double a = analytic[i][j];
            double err = fabs(a - num);
            double rel = err < floor ? 0.0 : err / fmax(fabs(a) + fabs(num), 1e-12) * 2.0;
            rr.checked++;
            if (rel > rr.max_err) {
                rr.max_err = rel;
                rr.worst_input = i;
                rr.worst_index = (int)j;
                rr.worst_analytic = a;
                rr.worst_numeric = num;
            }
            if (rel > o.tol && st == NB_OK)
                st = nb_set_error(NB_STATUS_NUMERIC,
                                  "gradcheck: input %d element %zu: analytic %.6g, numeric %.6g (rel err %.3g > %.3g)",
                                  i, j, a, num, rel, o.tol);
        }
    }
    for (int i = 0; i < n_inputs; i++) nb_free(analytic[i]);
    nb_free(analytic);
    nb_free(r);
    nb_tape_reset(tape);
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i]->grad_pooled) {
            inputs[i]->grad = NULL;
            inputs[i]->grad_pooled = 0;
        }
    if (res) *res = rr;
    return st;
}
