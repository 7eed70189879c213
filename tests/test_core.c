#include <math.h>
#include <string.h>

#include "nb_test.h"

START_TEST(test_error_message) {
    nb_status s = nb_set_error(NB_STATUS_BAD_INPUT, "key %s: got %d", "train.lr", 3);
    ck_assert_int_eq(s, NB_STATUS_BAD_INPUT);
    ck_assert_str_eq(nb_last_error(), "key train.lr: got 3");
    ck_assert_str_eq(nb_status_name(NB_STATUS_OOM), "out of memory");
    nb_clear_error();
    ck_assert_str_eq(nb_last_error(), "");
}
END_TEST

START_TEST(test_alloc_failure_injection) {
    nb_alloc_fail_after(2);
    void *a = nb_malloc(16);
    void *b = nb_malloc(16);
    void *c = nb_malloc(16);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_null(b);
    ck_assert_ptr_nonnull(c);
    ck_assert(strstr(nb_last_error(), "out of memory") != NULL);
    nb_free(a);
    nb_free(c);
    /* A tensor whose data allocation fails returns NULL and leaks nothing. */
    nb_alloc_fail_after(2);
    ck_assert_ptr_null(nb_tensor_new(2, (int[]){3, 3}));
    nb_alloc_fail_after(0);
}
END_TEST

/* nb_realloc keeps the 64-byte alignment and the contents; when it fails
 * the old block is still valid and unchanged (as with realloc). */
START_TEST(test_realloc_keeps_block_on_failure) {
    int *p = nb_malloc(sizeof(int) * 4);
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < 4; i++) p[i] = 10 + i;
    nb_alloc_fail_after(1);
    ck_assert_ptr_null(nb_realloc(p, sizeof(int) * 100000));
    for (int i = 0; i < 4; i++) ck_assert_int_eq(p[i], 10 + i);
    int *q = nb_realloc(p, sizeof(int) * 100000);
    ck_assert_ptr_nonnull(q);
    ck_assert_uint_eq((uintptr_t)q % 64, 0);
    for (int i = 0; i < 4; i++) ck_assert_int_eq(q[i], 10 + i);
    q[99999] = 7;
    ck_assert_ptr_eq(nb_realloc(q, sizeof(int) * 8), q); /* shrinking keeps the block */
    nb_free(q);
}
END_TEST

START_TEST(test_tensor_shapes) {
    nb_tensor *t = nb_tensor_new(4, (int[]){2, 3, 4, 5});
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->numel, 120);
    for (size_t i = 0; i < t->numel; i++) ck_assert_float_eq(t->data[i], 0.0f);
    char buf[64];
    ck_assert_str_eq(nb_shape_str(t, buf, sizeof buf), "(2, 3, 4, 5)");
    nb_tensor_free(t);
    ck_assert_ptr_null(nb_tensor_new(5, (int[]){1, 1, 1, 1, 1}));
    ck_assert(strstr(nb_last_error(), "rank 5") != NULL);
    ck_assert_ptr_null(nb_tensor_new(2, (int[]){3, 0}));
    ck_assert(strstr(nb_last_error(), "dimension 1 has size 0") != NULL);
}
END_TEST

START_TEST(test_arena_steady_state) {
    nb_arena *a = nb_arena_new(1024);
    for (int step = 0; step < 4; step++) {
        uint64_t before = nb_alloc_count();
        for (int i = 0; i < 10; i++) {
            float *p = nb_arena_alloc(a, 1000);
            ck_assert_ptr_nonnull(p);
            ck_assert_uint_eq((uintptr_t)p % 64, 0);
            memset(p, 0xab, 1000);
        }
        uint64_t grew = nb_alloc_count() - before;
        if (step >= 1) ck_assert_uint_eq(grew, 0); /* merged after step 0 */
        ck_assert_uint_ge(nb_arena_used(a), 10000);
        nb_arena_reset(a);
        ck_assert_uint_eq(nb_arena_used(a), 0);
    }
    ck_assert_uint_ge(nb_arena_peak(a), 10240);
    nb_arena_free(a);
}
END_TEST

/* Release to a mark: memory after the mark is reused, chunks made after it
 * go back, the used count rewinds, and reset sizes the one chunk for the
 * step's peak (not for the sum of everything allocated). */
START_TEST(test_arena_mark_release) {
    nb_arena *a = nb_arena_new(4096);
    for (int step = 0; step < 3; step++) {
        uint64_t before = nb_alloc_count();
        char *keep = nb_arena_alloc(a, 1000);
        memset(keep, 0x5a, 1000);
        const size_t used = nb_arena_used(a);
        for (int op = 0; op < 8; op++) { /* 8 ops of 10 KB scratch each */
            nb_arena_mark m = nb_arena_get_mark(a);
            char *s1 = nb_arena_alloc(a, 6000), *s2 = nb_arena_alloc(a, 4000);
            ck_assert_ptr_nonnull(s1);
            ck_assert_ptr_nonnull(s2);
            memset(s1, op, 6000);
            memset(s2, op, 4000);
            nb_arena_release(a, m);
            ck_assert_uint_eq(nb_arena_used(a), used);
            /* the next allocation lands where the released scratch began */
            nb_arena_mark m2 = nb_arena_get_mark(a);
            char *again = nb_arena_alloc(a, 6000);
            if (step > 0) ck_assert_ptr_eq(again, s1);
            nb_arena_release(a, m2);
        }
        for (int i = 0; i < 1000; i++) ck_assert_int_eq(keep[i], 0x5a); /* kept data untouched */
        if (step > 0) ck_assert_uint_eq(nb_alloc_count() - before, 0);
        nb_arena_reset(a);
        /* one chunk of the peak (kept + one op's scratch), not 8 ops' worth */
        ck_assert_uint_lt(nb_arena_capacity(a), 20000);
    }
    ck_assert_uint_lt(nb_arena_peak(a), 12000);
    nb_arena_free(a);
}
END_TEST

START_TEST(test_rng_reproducible) {
    nb_rng a, b, c;
    nb_rng_seed(&a, 42, 1);
    nb_rng_seed(&b, 42, 1);
    nb_rng_seed(&c, 42, 2);
    int differ = 0;
    for (int i = 0; i < 100; i++) {
        uint32_t x = nb_rng_u32(&a), y = nb_rng_u32(&b), z = nb_rng_u32(&c);
        ck_assert_uint_eq(x, y);
        differ += x != z;
    }
    ck_assert_int_gt(differ, 90);
    /* PCG32 reference: seed 42, stream 54 (pcg32-demo) starts 0xa15c02b7. */
    nb_rng r;
    nb_rng_seed(&r, 42, 54);
    ck_assert_uint_eq(nb_rng_u32(&r), 0xa15c02b7u);
    ck_assert_uint_eq(nb_rng_u32(&r), 0x7b47f409u);
    /* Moments of the normal generator. */
    double s = 0, s2 = 0;
    int n = 200000;
    for (int i = 0; i < n; i++) {
        double v = nb_rng_normal(&a);
        s += v;
        s2 += v * v;
    }
    ck_assert_double_lt(fabs(s / n), 0.01);
    ck_assert_double_lt(fabs(s2 / n - 1.0), 0.02);
    /* Shuffle is a permutation. */
    uint32_t p[100];
    for (uint32_t i = 0; i < 100; i++) p[i] = i;
    nb_rng_shuffle(&a, p, 100);
    int seen[100] = {0};
    for (int i = 0; i < 100; i++) seen[p[i]]++;
    for (int i = 0; i < 100; i++) ck_assert_int_eq(seen[i], 1);
}
END_TEST

START_TEST(test_gemm_matches_naive) {
    nb_rng r;
    nb_rng_seed(&r, 7, 0);
    int M = 7, N = 5, K = 9;
    float A[9 * 7], B[9 * 5], C[7 * 5];
    for (int i = 0; i < K * M; i++) A[i] = nb_rng_normal(&r);
    for (int i = 0; i < K * N; i++) B[i] = nb_rng_normal(&r);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            for (int i = 0; i < M * N; i++) C[i] = 1.0f;
            nb_gemm(ta, tb, M, N, K, 2.0f, A, ta ? M : K, B, tb ? K : N, 0.5f, C, N);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double acc = 0;
                    for (int k = 0; k < K; k++) {
                        float a = ta ? A[k * M + i] : A[i * K + k];
                        float b = tb ? B[j * K + k] : B[k * N + j];
                        acc += (double)a * b;
                    }
                    ck_assert_double_eq_tol(C[i * N + j], 2.0 * acc + 0.5, 1e-4);
                }
        }
}
END_TEST

static char captured[256];
static void capture(nb_log_level level, const char *msg, void *user) {
    (void)user;
    snprintf(captured, sizeof captured, "%d:%s", (int)level, msg);
}

START_TEST(test_log_callback) {
    nb_log_set(capture, NULL);
    nb_log(NB_LOG_WARN, "hello %d", 5);
    ck_assert_str_eq(captured, "2:hello 5");
    captured[0] = '\0';
    nb_log(NB_LOG_DEBUG, "hidden");
    ck_assert_str_eq(captured, "");
    nb_log_set(NULL, NULL);
}
END_TEST

START_TEST(test_progress_plain_lines) {
    FILE *f = tmpfile();
    nb_progress p;
    nb_progress_init(&p, "epoch 1", 20, f);
    ck_assert_int_eq(p.tty, 0);
    for (long i = 1; i <= 20; i++) nb_progress_update(&p, i, (double)i * 128, "loss 1.0");
    nb_progress_finish(&p, 20 * 128, "loss 0.5");
    rewind(f);
    char line[256];
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        ck_assert(strstr(line, "epoch 1") == line);
        ck_assert(strchr(line, '\r') == NULL);
    }
    ck_assert_int_eq(lines, 10); /* every 2 steps below 20, then the final line */
    fclose(f);
}
END_TEST

static Suite *core_suite(void) {
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_error_message);
    tcase_add_test(tc, test_alloc_failure_injection);
    tcase_add_test(tc, test_realloc_keeps_block_on_failure);
    tcase_add_test(tc, test_tensor_shapes);
    tcase_add_test(tc, test_arena_steady_state);
    tcase_add_test(tc, test_arena_mark_release);
    tcase_add_test(tc, test_rng_reproducible);
    tcase_add_test(tc, test_gemm_matches_naive);
    tcase_add_test(tc, test_log_callback);
    tcase_add_test(tc, test_progress_plain_lines);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(core_suite()); }
