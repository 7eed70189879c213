/* `nibble inspect CKPT --codebook LAYER --png OUT.png`: the histogram of an
 * ADQ layer's weights in a trained checkpoint with its codebook levels
 * after training (from /quant/) and at initialisation (recomputed from the
 * FP32 weights of the run's init.checkpoint with the run's quant.adq.init,
 * which is how the run started: the initialisation is deterministic). */
#include <stdio.h>
#include <string.h>

#include "nb_cli.h"
#include "nb_plot.h"
#include "nibble.h"

static nb_quantizer *find_weight_q(nb_model *m, const char *layer) {
    int n;
    nb_quantizer *q = nb_quant_list(m, &n);
    char want[128];
    snprintf(want, sizeof want, "%s.weight", layer);
    for (int i = 0; i < n; i++)
        if (!strcmp(q[i].name, want)) return &q[i];
    return NULL;
}

nb_status nb_inspect_codebook(const char *path, int C, const char *layer, const char *png) {
    nb_config c;
    nb_model *m = NULL, *m0 = NULL;
    nb_status st = nb_config_from_checkpoint(path, NULL, 0, &c);
    if (st == NB_OK) st = nb_model_from_config(&c, path, C, c.data.size > 0 ? c.data.size : 32, &m);
    if (st != NB_OK) return st;
    nb_quantizer *q = find_weight_q(m, layer);
    if (!q || q->method != NB_QM_ADQ) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "--codebook %s: %s has no %s (codebook weights are method \"adq\"; "
                          "nibble inspect %s lists the layers)", layer, path,
                          q ? "codebook weight quantizer" : "such layer", path);
        nb_model_free(m);
        return st;
    }
    const nb_tensor *w = nb_module_weight(q->mod);
    float init[256];
    int have_init = 0;
    char note[600] = "";
    /* the initial codebook: the run's recipe on its FP32 start */
    if (c.init.checkpoint[0]) {
        nb_rng rng;
        nb_rng_seed(&rng, c.seed, 0);
        m0 = nb_config_build_model(&c, C, c.data.size > 0 ? c.data.size : 32, m->opts.num_classes, &rng);
        if (m0 && nb_checkpoint_load_model(c.init.checkpoint, m0, 1) == NB_OK) {
            nb_module *mod0 = NULL;
            for (int i = 0; i < m0->n_modules; i++)
                if (!strcmp(m0->modules[i]->name, layer)) mod0 = m0->modules[i];
            const nb_quant_policy *p = &c.quant;
            const int how = nb_cb_init_from_name(p->adq.init);
            have_init = mod0 && how >= 0 && nb_cb_init_codes(&q->cb, (nb_cb_init)how, p->adq.kmeans_iters, nb_module_weight(mod0)->data,
                                                 q->L.K, init) == NB_OK;
        }
        if (!have_init) snprintf(note, sizeof note, " (no codebook at init: %s)", nb_last_error());
    } else {
        snprintf(note, sizeof note, " (no codebook at init: the run had no init.checkpoint)");
    }
    nb_plot_series mk[2];
    int nm = 0;
    char l0[64], l1[96];
    if (have_init) {
        snprintf(l0, sizeof l0, "codebook at init (%s)", c.quant.adq.init);
        mk[nm++] = (nb_plot_series){l0, init, NULL, q->ncodes, nb_plot_color(1)};
    }
    snprintf(l1, sizeof l1, "after training (%.0f EMA steps)", (double)q->ema_step[0]);
    mk[nm++] = (nb_plot_series){l1, q->codebook, NULL, q->ncodes, nb_plot_color(3)};
    char title[160];
    snprintf(title, sizeof title, "%s weights (%zu) and %d-bit codebook%s", layer, q->L.K, q->cb.bits,
             q->L.rows > 1 ? ", row 0" : "");
    st = nb_plot_histogram(png, title, w->data, q->L.K, 80, mk, nm, "weight");
    if (st == NB_OK) {
        printf("codebook %s: histogram of %zu weights with %d codes; wrote %s%s\n", layer, q->L.K, q->ncodes, png,
               note);
        if (have_init) {
            printf("  at init:");
            for (int k = 0; k < q->ncodes; k++) printf(" %.5g", (double)init[k]);
            printf("\n");
        }
        printf("  trained:");
        for (int k = 0; k < q->ncodes; k++) printf(" %.5g", (double)q->codebook[k]);
        printf("\n");
    }
    nb_model_free(m0);
    nb_model_free(m);
    return st;
}
