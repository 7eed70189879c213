/* The tape on its own: recording, reverse walk, accumulation, no-grad,
 * gradient-buffer reuse, and a gradient checker that really fails. Ops are
 * defined here, as any module would define them: the tape only sees
 * nb_op_def. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nb_test.h"

/* y = x^2 elementwise; `factor` is 2 for the true derivative. */
static float square_factor = 2.0f;

static void square_backward(nb_tape *t, nb_node *n) {
    nb_tensor *x = n->in[0];
    float *dx = nb_tape_grad(t, x);
    for (size_t i = 0; i < x->numel; i++) dx[i] += square_factor * x->data[i] * n->out->grad[i];
}

/* The backward also takes scratch memory, as the conv kernels do. */
static size_t scratch_used_in_backward;

static void square_backward_scratch(nb_tape *t, nb_node *n) {
    float *tmp = nb_tape_scratch(t, 64 * 1024);
    memset(tmp, 0, 64 * 1024);
    scratch_used_in_backward = nb_arena_used(nb_tape_arena(t));
    square_backward(t, n);
}

static void square_describe(const nb_node *n, char *buf, size_t len) {
    snprintf(buf, len, "square of %zu", n->out->numel);
}

static const nb_op_def square_op = {"square", square_backward_scratch, square_describe};

static nb_tensor *square(nb_tape *t, nb_tensor *x) {
    nb_tensor *y = nb_tape_tensor(t, x->ndim, x->shape);
    for (size_t i = 0; i < x->numel; i++) y->data[i] = x->data[i] * x->data[i];
    if (nb_tape_wants(t, x, NULL, NULL)) nb_tape_record(t, &square_op, y, x, NULL, NULL);
    return y;
}

/* s = sum(x) as a scalar. */
static void sum_backward(nb_tape *t, nb_node *n) {
    nb_tensor *x = n->in[0];
    float *dx = nb_tape_grad(t, x);
    for (size_t i = 0; i < x->numel; i++) dx[i] += n->out->grad[0];
}

static const nb_op_def sum_op = {"sum", sum_backward, NULL};

static nb_tensor *sum(nb_tape *t, nb_tensor *x) {
    nb_tensor *y = nb_tape_tensor(t, 1, (int[]){1});
    double s = 0;
    for (size_t i = 0; i < x->numel; i++) s += x->data[i];
    y->data[0] = (float)s;
    if (nb_tape_wants(t, x, NULL, NULL)) nb_tape_record(t, &sum_op, y, x, NULL, NULL);
    return y;
}

static nb_tensor *leaf(int n, float start) {
    nb_tensor *x = nb_tensor_new(1, (int[]){n});
    for (int i = 0; i < n; i++) x->data[i] = start + 0.5f * (float)i;
    x->requires_grad = 1;
    return x;
}

START_TEST(test_reverse_walk_and_accumulation) {
    /* L = sum(x^2) + sum(x): x used by two ops, dL/dx = 2x + 1 */
    nb_tensor *x = leaf(5, -1.0f);
    nb_tape *t = nb_tape_new();
    nb_tensor *a = sum(t, square(t, x)), *b = sum(t, x);
    nb_tensor *l = nb_tape_tensor(t, 1, (int[]){1});
    l->data[0] = a->data[0] + b->data[0];
    /* seed both partial losses: backward from a, then from b, accumulates */
    ck_assert_int_eq(nb_backward(t, a), NB_OK);
    ck_assert_int_eq(nb_tape_nodes(t), 3);
    float one = 1.0f;
    ck_assert_int_eq(nb_backward_seed(t, b, &one), NB_OK);
    for (int i = 0; i < 5; i++) ck_assert_float_eq_tol(x->grad[i], 2.0f * x->data[i] + 1.0f, 1e-6f);
    nb_tape_free(t);
    x->grad = NULL;
    nb_tensor_free(x);
}
END_TEST

START_TEST(test_no_grad_and_requires_grad) {
    nb_tensor *x = leaf(3, 1.0f);
    nb_tape *t = nb_tape_new();
    ck_assert_int_eq(nb_tape_set_grad(t, 0), 1);
    nb_tensor *y = square(t, x);
    ck_assert_int_eq(nb_tape_nodes(t), 0);
    ck_assert_int_eq(y->requires_grad, 0);
    nb_tape_set_grad(t, 1);
    x->requires_grad = 0; /* constants record nothing either */
    y = square(t, x);
    ck_assert_int_eq(nb_tape_nodes(t), 0);
    ck_assert_int_ne(nb_backward(t, sum(t, y)), NB_OK);
    nb_tape_free(t);
    nb_tensor_free(x);
}
END_TEST

START_TEST(test_backward_rejects_bad_loss) {
    nb_tensor *x = leaf(3, 1.0f);
    nb_tape *t = nb_tape_new();
    ck_assert_int_eq(nb_backward(t, square(t, x)), NB_STATUS_INTERNAL); /* not a scalar */
    ck_assert(strstr(nb_last_error(), "scalar") != NULL);
    nb_tensor *l = sum(t, x);
    l->data[0] = NAN;
    ck_assert_int_eq(nb_backward(t, l), NB_STATUS_NUMERIC);
    nb_tape_free(t);
    nb_tensor_free(x);
}
END_TEST

START_TEST(test_gradient_buffers_recycled) {
    /* A chain of 20 squares needs a handful of gradient buffers, not 20, and
     * the second step allocates nothing. */
    nb_tensor *x = leaf(1000, 0.0f);
    nb_tensor_fill(x, 1.0f); /* stays finite through x^(2^20) */
    nb_tape *t = nb_tape_new();
    size_t pool = 0;
    uint64_t allocs = 0;
    for (int step = 0; step < 3; step++) {
        if (step == 2) allocs = nb_alloc_count();
        nb_tensor *h = x;
        for (int i = 0; i < 20; i++) h = square(t, h);
        ck_assert_int_eq(nb_backward(t, sum(t, h)), NB_OK);
        if (step == 1) pool = nb_tape_pool_bytes(t);
        nb_tape_reset(t);
        x->grad = NULL;
    }
    ck_assert_uint_le(pool, 4 * 1000 * sizeof(float));
    ck_assert_uint_eq(nb_alloc_count(), allocs);
    nb_tape_free(t);
    nb_tensor_free(x);
}
END_TEST

static nb_tensor *square_fn(nb_tape *t, nb_tensor **in, void *user) {
    (void)user;
    return square(t, in[0]);
}

START_TEST(test_gradcheck_catches_wrong_backward) {
    nb_tensor *x = leaf(8, -1.7f);
    nb_tensor *in[1] = {x};
    nb_tape *t = nb_tape_new();
    nb_gradcheck_result r;
    square_factor = 2.0f;
    ck_assert_int_eq(nb_gradcheck(t, square_fn, NULL, in, 1, NULL, &r), NB_OK);
    ck_assert_int_eq(r.checked, 8);
    square_factor = 2.1f; /* a 5% error in the derivative */
    ck_assert_int_eq(nb_gradcheck(t, square_fn, NULL, in, 1, NULL, &r), NB_STATUS_NUMERIC);
    ck_assert(strstr(nb_last_error(), "gradcheck: input 0 element") != NULL);
    ck_assert_double_gt(r.max_err, 0.02);
    square_factor = 2.0f;
    nb_tape_free(t);
    nb_tensor_free(x);
}
END_TEST

/* The reverse walk gives each backward's scratch back when it returns, and
 * the profile counts every node under its description. */
START_TEST(test_walk_releases_scratch_and_profiles) {
    nb_tensor *x = leaf(100, 0.1f);
    nb_tensor_fill(x, 0.9f); /* stays finite through x^32 */
    nb_tape *t = nb_tape_new();
    nb_profile *p = nb_profile_new();
    nb_tape_set_profile(t, p);
    for (int step = 0; step < 2; step++) {
        nb_tape_profile_mark(t);
        nb_tensor *h = x;
        for (int i = 0; i < 5; i++) h = square(t, h);
        nb_tensor *l = sum(t, h);
        const size_t fwd_used = nb_arena_used(nb_tape_arena(t));
        ck_assert_int_eq(nb_backward(t, l), NB_OK);
        /* 5 backwards took 64 KB each; the arena holds only the forward's */
        ck_assert_uint_eq(nb_arena_used(nb_tape_arena(t)), fwd_used);
        ck_assert_uint_ge(scratch_used_in_backward, fwd_used + 64 * 1024);
        ck_assert_uint_lt(nb_arena_peak(nb_tape_arena(t)), fwd_used + 2 * 64 * 1024);
        nb_tape_reset(t);
        x->grad = NULL;
    }
    nb_tape_set_profile(t, NULL);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    nb_profile_print(p, 2, f);
    fclose(f);
    /* per step: 5 squares (described by the op) and one sum (name + shape) */
    ck_assert_msg(strstr(buf, "square of 100") != NULL, "%s", buf);
    char *row = strstr(buf, "square of 100");
    int count = 0;
    ck_assert_int_eq(sscanf(row + strlen("square of 100"), "%d", &count), 1);
    ck_assert_int_eq(count, 5);
    ck_assert_msg(strstr(buf, "\nsum ") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "\nall nodes ") != NULL, "%s", buf);
    free(buf);
    nb_profile_free(p);
    nb_tape_free(t);
    nb_tensor_free(x);
}
END_TEST

static Suite *autograd_suite(void) {
    Suite *s = suite_create("autograd");
    TCase *tc = tcase_create("tape");
    tcase_add_test(tc, test_reverse_walk_and_accumulation);
    tcase_add_test(tc, test_no_grad_and_requires_grad);
    tcase_add_test(tc, test_backward_rejects_bad_loss);
    tcase_add_test(tc, test_gradient_buffers_recycled);
    tcase_add_test(tc, test_gradcheck_catches_wrong_backward);
    tcase_add_test(tc, test_walk_releases_scratch_and_profiles);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(autograd_suite()); }
