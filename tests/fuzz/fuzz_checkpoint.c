/* Fuzz target: the checkpoint loader. The input file is read as a
 * checkpoint of a smallcnn (width 4, 10 classes) with an SGD optimizer:
 * model (strict and not), optimizer state and meta, stored config, listing.
 * A load that fails must leave the model as it was. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static nb_model *model;
static nb_optimizer *opt;
static float *snapshot;

static void setup(void) {
    nb_rng r;
    nb_rng_seed(&r, 1, 0);
    nb_model_opts mo = nb_model_opts_default();
    mo.width = 4;
    model = nb_model_build("smallcnn", &mo, &r);
    nb_optim_opts oo = nb_optim_opts_default();
    oo.momentum = 0.9f;
    opt = nb_optimizer_new(&oo);
    if (!model || !opt || nb_optimizer_add_group(opt, "all", 1.0f, 0.0f) < 0 ||
        nb_optimizer_add_segment(opt, 0, model->param_data, model->param_grad, model->n_param_floats) != NB_OK)
        abort();
    snapshot = malloc(sizeof(float) * model->n_param_floats);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nb_fuzz_init();
    if (!model) setup();
    const char *path = nb_fuzz_file(data, size, "h5");
    if (!path) return 0;
    memcpy(snapshot, model->param_data, sizeof(float) * model->n_param_floats);
    for (int strict = 0; strict < 2; strict++)
        if (nb_checkpoint_load_model(path, model, strict) != NB_OK &&
            memcmp(snapshot, model->param_data, sizeof(float) * model->n_param_floats) != 0)
            abort(); /* a failed load changed the model */
    nb_ckpt_meta meta;
    if (nb_checkpoint_load_state(path, opt, &meta) == NB_OK) nb_free((void *)meta.config_json);
    char *json = NULL, arch[32];
    if (nb_checkpoint_read_config(path, &json, arch, sizeof arch) == NB_OK) {
        nb_config c;
        nb_config_parse(json, path, NULL, 0, &c);
    }
    nb_free(json);
    nb_ckpt_tensor *ts = NULL;
    int n = 0;
    nb_checkpoint_list(path, &ts, &n);
    nb_free(ts);
    unlink(path);
    return 0;
}
