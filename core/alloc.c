/* The allocator every module goes through, with a failure-injection hook for
 * tests (Lua's ltests.c idea): nb_alloc_fail_after(n) fails the n-th call. */
#include "nb_core.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define NB_ALIGN 64

static atomic_long fail_countdown; /* 0 = off */
static atomic_ullong alloc_count;

void nb_alloc_fail_after(long n) { atomic_store(&fail_countdown, n > 0 ? n : 0); }

uint64_t nb_alloc_count(void) { return atomic_load(&alloc_count); }

static int should_fail(void) {
    long c = atomic_load(&fail_countdown);
    while (c > 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &c, c - 1)) return c == 1;
    }
    return 0;
}

/* posix_memalign without the failure hook; NULL with a message on failure. */
static void *aligned_new(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, NB_ALIGN, bytes) != 0) return NULL;
    atomic_fetch_add(&alloc_count, 1);
    return p;
}

void *nb_malloc(size_t bytes) {
    if (bytes == 0) bytes = 1;
    void *p = should_fail() ? NULL : aligned_new(bytes);
    if (!p) nb_set_error(NB_STATUS_OOM, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *nb_calloc(size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) {
        nb_set_error(NB_STATUS_OOM, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    void *p = nb_malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void *nb_realloc(void *p, size_t bytes) {
    if (!p) return nb_malloc(bytes);
    if (bytes == 0) bytes = 1;
    /* realloc() would lose posix_memalign's alignment, so grow by moving to
     * a new aligned block; on failure p stays valid and unchanged, as with
     * realloc. Every call counts for the failure hook, even one that fits
     * in place. */
    void *r = NULL;
    const size_t old = malloc_usable_size(p);
    if (!should_fail()) {
        if (bytes <= old) return p;
        r = aligned_new(bytes);
    }
    if (!r) {
        nb_set_error(NB_STATUS_OOM, "out of memory reallocating to %zu bytes", bytes);
        return NULL;
    }
    memcpy(r, p, old);
    free(p);
    return r;
}

void nb_free(void *p) { free(p); }

char *nb_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = nb_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
