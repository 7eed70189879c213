/* Layer sensitivity for mixed-precision bit allocation (ALGORITHMS.md §5,
 * [recon]): the weight quantization error of a layer at b bits under the
 * policy's weight quantizer, and Hutchinson's estimate of the trace of
 * each layer's Hessian block from finite-difference Hessian-vector
 * products, which need only first-order gradients:
 *
 *   Hz ≈ (∇L(w + D z) - ∇L(w - D z)) / 2,   D = diag(ε_l),  z Rademacher,
 *   Tr(H_ll) ≈ mean over samples of z_lᵀ (Hz)_l / ε_l.
 *
 * One z over all layers serves every layer at once (z_l independent of
 * the other blocks, so the cross terms vanish in expectation, as in
 * PyHessian and HAWQ-V2). ε_l = fd_eps · rms(w_l) (fd_eps itself for a
 * layer of zeros): the same relative step in every layer. */
#include <math.h>
#include <string.h>

#include "internal.h"

nb_status nb_quant_weight_q(const nb_quant_policy *p, const float *w, int oc, size_t numel, int bits, float *out) {
    const int per_channel = !strcmp(p->weights.granularity, "channel");
    const int rows = per_channel ? oc : 1;
    const size_t K = numel / (size_t)rows;
    for (size_t i = 0; i < numel; i++)
        if (!isfinite(w[i])) return nb_set_error(NB_STATUS_NUMERIC, "weight %zu is %g", i, (double)w[i]);
    if (!strcmp(p->weights.method, "adq")) {
        if (bits < 1 || bits > 8) return nb_set_error(NB_STATUS_BAD_INPUT, "codebooks take 1..8 bits, got %d", bits);
        const nb_cb_spec s = {bits, p->weights.symmetric};
        const int how = nb_cb_init_from_name(p->adq.init);
        if (how < 0) return nb_set_error(NB_STATUS_BAD_INPUT, "quant.adq.init: unknown \"%s\"", p->adq.init);
        const int nc = nb_cb_ncodes(&s);
        float codes[256];
        double mid[255];
        for (int r = 0; r < rows; r++) {
            const float *wr = w + (size_t)r * K;
            nb_status st = nb_cb_init_codes(&s, (nb_cb_init)how, p->adq.kmeans_iters, wr, K, codes);
            if (st != NB_OK) return st;
            nb_cb_midpoints(codes, nc, mid);
            for (size_t i = 0; i < K; i++) out[(size_t)r * K + i] = codes[nb_cb_assign(mid, nc, wr[i])];
        }
        return NB_OK;
    }
    /* uniform (and lsq, whose step starts elsewhere): the symmetric abs-max
     * grid at b bits, per the granularity */
    if (bits < 2 || bits > 8) return nb_set_error(NB_STATUS_BAD_INPUT, "uniform weights take 2..8 bits, got %d", bits);
    const nb_qspec spec = {.bits = bits, .is_signed = 1, .symmetric = 1, .narrow = p->weights.narrow};
    int qmin, qmax;
    nb_qspec_range(&spec, &qmin, &qmax);
    for (int r = 0; r < rows; r++) {
        const float *wr = w + (size_t)r * K;
        float lo = 0.0f, hi = 0.0f;
        for (size_t i = 0; i < K; i++) {
            lo = fminf(lo, wr[i]);
            hi = fmaxf(hi, wr[i]);
        }
        float scale;
        int32_t z;
        nb_qparams_from_range(&spec, lo, hi, &scale, &z);
        for (size_t i = 0; i < K; i++) {
            const float q = fminf(fmaxf(nb_fq_round(wr[i] / scale), (float)qmin), (float)qmax);
            out[(size_t)r * K + i] = q * scale;
        }
    }
    return NB_OK;
}

nb_status nb_hutchinson_trace(float *w, const nb_segment *seg, int nseg, nb_grad_fn grad, void *ctx, int samples,
                              float fd_eps, uint64_t seed, float *gbuf, float *gbuf2, double *trace,
                              nb_sample_fn on_sample, void *sample_ctx) {
    size_t total = 0;
    for (int l = 0; l < nseg; l++) total += seg[l].n;
    float *save = nb_malloc((total + 1) * sizeof(float)), *eps = nb_malloc(((size_t)nseg + 1) * sizeof(float));
    signed char *z = nb_malloc(total + 1);
    if (!save || !eps || !z) {
        nb_free(save);
        nb_free(eps);
        nb_free(z);
        return NB_STATUS_OOM;
    }
    size_t o = 0;
    for (int l = 0; l < nseg; l++) {
        double ss = 0.0;
        for (size_t i = 0; i < seg[l].n; i++) ss += (double)w[seg[l].off + i] * (double)w[seg[l].off + i];
        const double rms = seg[l].n ? sqrt(ss / (double)seg[l].n) : 0.0;
        eps[l] = rms > 0.0 ? (float)((double)fd_eps * rms) : fd_eps;
        memcpy(save + o, w + seg[l].off, seg[l].n * sizeof(float));
        o += seg[l].n;
        trace[l] = 0.0;
    }
    nb_rng rng;
    nb_rng_seed(&rng, seed, 7);
    nb_status st = NB_OK;
    for (int s = 0; s < samples && st == NB_OK; s++) {
        for (size_t i = 0; i < total; i++) z[i] = (nb_rng_below(&rng, 2) ? 1 : -1);
        for (int sign = 0; sign < 2 && st == NB_OK; sign++) {
            o = 0;
            for (int l = 0; l < nseg; l++) {
                const float d = sign ? -eps[l] : eps[l];
                for (size_t i = 0; i < seg[l].n; i++) w[seg[l].off + i] = save[o + i] + d * (float)z[o + i];
                o += seg[l].n;
            }
            st = grad(ctx, sign ? gbuf2 : gbuf);
        }
        if (st != NB_OK) break;
        o = 0;
        for (int l = 0; l < nseg; l++) {
            double acc = 0.0;
            for (size_t i = 0; i < seg[l].n; i++)
                acc += (double)z[o + i] * ((double)gbuf[seg[l].off + i] - (double)gbuf2[seg[l].off + i]);
            trace[l] += acc / (2.0 * (double)eps[l]);
            o += seg[l].n;
        }
        if (on_sample) on_sample(sample_ctx, s + 1);
    }
    o = 0;
    for (int l = 0; l < nseg; l++) { /* the weights exactly as they were */
        memcpy(w + seg[l].off, save + o, seg[l].n * sizeof(float));
        o += seg[l].n;
        if (samples > 0) trace[l] /= samples;
    }
    nb_free(save);
    nb_free(eps);
    nb_free(z);
    return st;
}
