/*
 * nb_core.h — the ground every nibble module stands on.
 *
 * Status codes and the thread-local error message, the allocator hooks,
 * float32 tensors (NCHW, up to 4 dims), the per-step arena, a seeded
 * PCG32 random generator, the GEMM wrapper over OpenBLAS, thread settings,
 * logging and a TTY-aware progress bar.
 *
 * Example:
 *     nb_rng rng;
 *     nb_rng_seed(&rng, 42, 0);
 *     nb_tensor *t = nb_tensor_new(2, (int[]){3, 4});   // heap, owned
 *     nb_tensor_fill_normal(t, &rng, 0.0f, 1.0f);
 *     nb_tensor_free(t);
 *
 * core/ knows nothing about layers, quantization or files.
 */
#ifndef NB_CORE_H
#define NB_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---------------------------------------------------------------- status */

typedef enum {
    NB_OK = 0,
    NB_STATUS_BAD_INPUT,   /* user input: config, file contents, CLI flag */
    NB_STATUS_IO,          /* the OS or a library refused a file operation */
    NB_STATUS_OOM,         /* an allocation failed */
    NB_STATUS_NUMERIC,     /* NaN/Inf where a finite number was required */
    NB_STATUS_INTERRUPTED, /* stopped by a signal (Ctrl-C) */
    NB_STATUS_INTERNAL,    /* a bug or an unexpected library failure */
    NB_STATUS_COUNT
} nb_status;

/* Name of a status ("bad input", ...); never NULL. */
const char *nb_status_name(nb_status s);

/* Set the thread-local error message (printf-style) and return `s`, so that
 * `return nb_set_error(NB_STATUS_BAD_INPUT, "...", ...);` reads naturally. */
nb_status nb_set_error(nb_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The last message set on this thread ("" if none). Borrowed, valid until the
 * next nb_set_error on this thread. */
const char *nb_last_error(void);
/* The status that message was set with, for callers of functions that
 * return NULL on error (NB_STATUS_INTERNAL when there is no message). */
nb_status nb_last_status(void);
void nb_clear_error(void);

/* Programmer errors: always on, prints file:line and the message, aborts. */
#define NB_ASSERT(cond, ...)                                                   \
    do {                                                                       \
        if (!(cond)) nb_assert_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);  \
    } while (0)
_Noreturn void nb_assert_fail(const char *file, int line, const char *expr,
                              const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---------------------------------------------------------------- memory */

/* All allocation goes through these. nb_malloc/nb_calloc/nb_realloc return
 * NULL and set an NB_STATUS_OOM message on failure. Memory is 64-byte
 * aligned (nb_realloc keeps alignment). nb_free(NULL) is a no-op. */
void *nb_malloc(size_t bytes);
void *nb_calloc(size_t count, size_t size);
void *nb_realloc(void *p, size_t bytes);
void nb_free(void *p);
char *nb_strdup(const char *s);
/* Test hook: make the n-th allocation from now fail (n >= 1); n <= 0 turns
 * failure injection off. Counts nb_malloc/nb_calloc/nb_realloc calls. */
void nb_alloc_fail_after(long n);
/* Number of successful allocations since start (for "no malloc in the
 * steady-state step" tests). */
uint64_t nb_alloc_count(void);

/* ----------------------------------------------------------------- arena */

/* A bump allocator for everything made during one training step. Grows in
 * chunks; nb_arena_reset() keeps the memory and, when the last step needed
 * more than one chunk, replaces them by one chunk the size of the step's
 * peak, so the steady state does no malloc. */
typedef struct nb_arena nb_arena;
/* A position in an arena: nb_arena_release gives back everything allocated
 * after it (an op's scratch memory once the op is done), so the next
 * allocations reuse that memory. */
typedef struct {
    void *chunk;
    size_t chunk_used, used;
} nb_arena_mark;

nb_arena *nb_arena_new(size_t chunk_bytes);
void nb_arena_free(nb_arena *a);
/* 64-byte aligned, uninitialised. NULL (with NB_STATUS_OOM set) on failure. */
void *nb_arena_alloc(nb_arena *a, size_t bytes);
void nb_arena_reset(nb_arena *a);
size_t nb_arena_used(const nb_arena *a);      /* bytes handed out since reset */
size_t nb_arena_peak(const nb_arena *a);      /* max of used over its life */
size_t nb_arena_capacity(const nb_arena *a);  /* bytes held from the system */
nb_arena_mark nb_arena_get_mark(const nb_arena *a);
/* Frees what was allocated after m (m from this arena since its last reset,
 * and no later mark released before it); chunks made after m go back to
 * the system. */
void nb_arena_release(nb_arena *a, nb_arena_mark m);

/* ---------------------------------------------------------------- tensor */

#define NB_MAX_DIMS 4

typedef struct nb_tensor {
    float *data;         /* (numel), row-major */
    float *grad;         /* same shape as data, NULL until a gradient flows */
    size_t numel;
    int ndim;
    int shape[NB_MAX_DIMS];
    uint8_t requires_grad; /* gradients flow into it in nb_backward */
    uint8_t owns_data;     /* data (and grad) freed by nb_tensor_free */
    uint8_t is_param;      /* grad is long-lived (model-owned), never pooled */
    uint8_t grad_pooled;   /* grad came from the tape's pool */
    const char *name;      /* optional, borrowed */
} nb_tensor;

/* Heap tensor with zeroed data; owned by the caller, free with
 * nb_tensor_free. NULL with a message on a bad shape or OOM. */
nb_tensor *nb_tensor_new(int ndim, const int *shape);
void nb_tensor_free(nb_tensor *t);
/* Tensor in an arena (header and data); uninitialised data. Borrowed from
 * the arena: valid until nb_arena_reset. */
nb_tensor *nb_tensor_arena(nb_arena *a, int ndim, const int *shape);
/* A header around caller memory (not freed by nb_tensor_free). */
void nb_tensor_wrap(nb_tensor *t, float *data, int ndim, const int *shape);

size_t nb_shape_numel(int ndim, const int *shape);
int nb_tensor_same_shape(const nb_tensor *a, const nb_tensor *b);
/* "(128, 16, 32, 32)" into buf; returns buf. */
char *nb_shape_str(const nb_tensor *t, char *buf, size_t n);
void nb_tensor_zero(nb_tensor *t);
void nb_tensor_fill(nb_tensor *t, float v);

/* ------------------------------------------------------------------- rng */

/* PCG32 (O'Neill 2014): 64-bit state, a stream selector, 32-bit output.
 * Every initialiser, shuffler and augmenter takes one by pointer. */
typedef struct {
    uint64_t state;
    uint64_t inc;
} nb_rng;

void nb_rng_seed(nb_rng *r, uint64_t seed, uint64_t stream);
uint32_t nb_rng_u32(nb_rng *r);
uint32_t nb_rng_below(nb_rng *r, uint32_t n); /* uniform in [0, n), unbiased */
float nb_rng_uniform(nb_rng *r);              /* uniform in [0, 1) */
float nb_rng_normal(nb_rng *r);               /* standard normal */
void nb_rng_shuffle(nb_rng *r, uint32_t *a, size_t n); /* Fisher-Yates */
void nb_tensor_fill_normal(nb_tensor *t, nb_rng *r, float mean, float std);
void nb_tensor_fill_uniform(nb_tensor *t, nb_rng *r, float lo, float hi);

/* -------------------------------------------------------- gemm / threads */

/* Row-major C = alpha * op(A) * op(B) + beta * C with op(X) = X or X^T;
 * op(A) is (M, K), op(B) is (K, N), C is (M, N). Runs single-threaded in
 * OpenBLAS: nibble parallelises over images itself (faster at ResNet
 * shapes, and deterministic). */
void nb_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta,
             float *C, int ldc);

/* nibble's own single-threaded sgemm kernels (core/gemm_kernels.c), tuned
 * for the per-image conv shapes: AVX-512F, else AVX2+FMA, else OpenBLAS,
 * chosen once per process (env NB_GEMM=avx512|avx2|blas forces one).
 * Deterministic on a given path; safe to call from several threads at once;
 * no heap allocation (up to ~50 KiB of stack). beta is 0 or 1; with beta 0,
 * C is not read. C must not overlap A or B. Bad arguments (negative sizes,
 * ldb or ldc too small, other beta) are programmer errors: NB_ASSERT. */
/* C (M, N; ldc) = beta * C + A * B. A's element (i, k) is at
 * A[i * a_rs + k * a_cs] (a_rs = lda, a_cs = 1 for row-major A; a_rs = 1,
 * a_cs = lda for the transpose of a row-major (K, M)); B (K, N; ldb). */
void nb_sgemm_nn(int M, int N, int K, const float *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
                 const float *B, int ldb, float beta, float *C, int ldc);
/* C (M, N; ldc) = beta * C + A * B^T with A (M, K; lda) and B (N, K; ldb)
 * row-major: dot products along the contiguous K. */
void nb_sgemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc);
/* The path nb_sgemm_* run on: "avx512", "avx2" or "blas". Static string. */
const char *nb_sgemm_isa(void);

/* Number of worker threads for nibble's kernels (>= 1). */
void nb_set_threads(int n);
int nb_get_threads(void);
/* Inside a parallel region: the calling thread's share [lo, hi) of n
 * items, contiguous blocks in thread order (empty shares past n). */
void nb_thread_range(size_t n, size_t *lo, size_t *hi);

/* ------------------------------------------------------ time, memory use */

double nb_now(void);          /* monotonic seconds */
double nb_peak_rss_mb(void);  /* peak resident set size of this process */

/* ------------------------------------------------------------- logging */

typedef enum {
    NB_LOG_DEBUG = 0,
    NB_LOG_INFO,
    NB_LOG_WARN,
    NB_LOG_ERROR,
    NB_LOG_COUNT
} nb_log_level;

typedef void (*nb_log_fn)(nb_log_level level, const char *msg, void *user);
/* Replace the sink (NULL restores the default: stderr, INFO and above). */
void nb_log_set(nb_log_fn fn, void *user);
void nb_log_set_level(nb_log_level min_level);
void nb_log(nb_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A progress bar: on a terminal one line redrawn in place with step, rate,
 * free text (loss...) and ETA; elsewhere a plain line every `every` steps
 * and at the end. Caller-owned struct. */
typedef struct {
    const char *label;
    long total;
    long every;     /* non-TTY: print every N steps (>= 1) */
    int tty;
    FILE *out;
    double t0;
    double last_draw;
    long done;
} nb_progress;

void nb_progress_init(nb_progress *p, const char *label, long total, FILE *out);
/* `done` items finished; `items` (e.g. images) processed so far for the
 * rate; `extra` optional text such as "loss 1.234 acc 45.6%". */
void nb_progress_update(nb_progress *p, long done, double items, const char *extra);
void nb_progress_finish(nb_progress *p, double items, const char *extra);

#endif /* NB_CORE_H */
