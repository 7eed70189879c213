/* Evaluation metrics, and a tiny model trained end to end on shapes10. */
#include <string.h>

#include "nb_test.h"

START_TEST(test_topk_hand_values) {
    /* 3 examples, 7 classes */
    float z[3][7] = {{0, 5, 1, 2, 3, 4, -1}, /* label 1: top-1 */
                     {6, 5, 4, 3, 2, 1, 0},  /* label 5: 6th largest -> not in top-5 */
                     {1, 1, 1, 1, 1, 1, 1}}; /* label 4, all tied: 4 rank above -> top-5 only */
    int32_t labels[3] = {1, 5, 4};
    nb_tensor t;
    nb_tensor_wrap(&t, &z[0][0], 2, (int[]){3, 7});
    long c1 = 0, c5 = 0;
    nb_topk_correct(&t, labels, &c1, &c5);
    ck_assert_int_eq(c1, 1);
    ck_assert_int_eq(c5, 2);
}
END_TEST

static nb_loader *make_loader(nb_dataset *ds, int train, uint64_t seed) {
    nb_loader_opts o = nb_loader_opts_default();
    o.batch = 50;
    o.shuffle = train;
    o.augment = 0;
    o.drop_last = 0;
    o.seed = seed;
    nb_loader *l;
    ck_assert_int_eq(nb_loader_new(ds, &o, &l), NB_OK);
    return l;
}

/* Trains smallcnn for `epochs` on 3000 shapes10 images; returns test top-1
 * and writes the per-epoch mean training loss. */
static double train_smallcnn(int epochs, float *epoch_loss) {
    nb_dataset *tr, *te;
    ck_assert_int_eq(nb_dataset_synthetic("shapes10", "train", 3000, 3, &tr), NB_OK);
    ck_assert_int_eq(nb_dataset_synthetic("shapes10", "test", 500, 3, &te), NB_OK);
    nb_loader *ltr = make_loader(tr, 1, 7), *lte = make_loader(te, 0, 7);
    nb_rng rng;
    nb_rng_seed(&rng, 5, 0);
    nb_model_opts mo = nb_model_opts_default();
    mo.width = 8;
    nb_model *m = nb_model_build("smallcnn", &mo, &rng);
    float *mom = nb_calloc(m->n_param_floats, sizeof(float));
    nb_tape *t = nb_tape_new();
    nb_sgd_opts so = nb_sgd_opts_default();
    int step = 0;
    for (int e = 0; e < epochs; e++) {
        ck_assert_int_eq(nb_loader_start_epoch(ltr, e), NB_OK);
        double sum = 0;
        int batches = 0;
        const float *x;
        const int32_t *y;
        int n;
        while (nb_loader_next(ltr, &x, &y, &n) == NB_OK && n > 0) {
            nb_tensor xt;
            nb_tensor_wrap(&xt, (float *)x, 4, (int[]){n, 3, 32, 32});
            nb_model_zero_grad(m);
            nb_tensor *loss = nb_cross_entropy(t, nb_model_forward(m, t, &xt), y, 0.0f);
            sum += loss->data[0];
            batches++;
            ck_assert_int_eq(nb_backward(t, loss), NB_OK);
            nb_sgd_update(&so, 0.1f, 5e-4f, m->param_data, m->param_grad, mom, m->n_param_floats, step++ == 0);
            nb_tape_reset(t);
        }
        epoch_loss[e] = (float)(sum / batches);
    }
    ck_assert_int_eq(nb_loader_start_epoch(lte, 0), NB_OK);
    nb_eval_result r;
    ck_assert_int_eq(nb_evaluate(m, lte, t, &r), NB_OK);
    ck_assert_int_eq(r.n, 500);
    ck_assert_int_eq(m->pass, NB_PASS_TRAIN); /* restored */
    nb_tape_free(t);
    nb_free(mom);
    nb_model_free(m);
    nb_loader_free(ltr);
    nb_loader_free(lte);
    nb_dataset_free(tr);
    nb_dataset_free(te);
    return r.top1;
}

START_TEST(test_smallcnn_learns_shapes10) {
    nb_set_threads(2);
    float loss[6], again[6];
    double top1 = train_smallcnn(6, loss);
    ck_assert_float_lt(loss[5], 0.8f * loss[0]);  /* the loss falls */
    ck_assert_double_gt(top1, 0.25);            /* well above chance (0.10) */
    double top1b = train_smallcnn(6, again);     /* and the run repeats exactly */
    ck_assert_mem_eq(loss, again, sizeof loss);
    ck_assert_double_eq(top1, top1b);
}
END_TEST

static Suite *runner_suite(void) {
    Suite *s = suite_create("runner");
    TCase *tc = tcase_create("runner");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_topk_hand_values);
    tcase_add_test(tc, test_smallcnn_learns_shapes10);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(runner_suite()); }
