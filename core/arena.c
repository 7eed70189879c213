/* The per-step arena. Chunks are chained; reset rewinds to the first chunk
 * and, when a step spilled into more chunks, replaces them all by a single
 * chunk the size of the step's peak use, so the next step of the same shape
 * allocates nothing. Release (to a mark) rewinds inside the step: chunks
 * made after the mark are freed. */
#include "nb_core.h"

#define ARENA_ALIGN 64

/* Under AddressSanitizer every allocation is followed by a poisoned red
 * zone, so an op that writes past its tensor is caught like a heap overflow. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define REDZONE 64
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define REDZONE 0
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

typedef struct chunk {
    struct chunk *next;
    size_t size; /* usable bytes after the header */
    size_t used;
} chunk;

struct nb_arena {
    chunk *head;    /* current chunk (list in reverse order of creation) */
    size_t chunk_bytes;
    size_t used;    /* since reset */
    size_t step_peak; /* max of used since reset */
    size_t peak;
    size_t capacity;
};

#define HDR ((sizeof(chunk) + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN)

static chunk *chunk_new(size_t size) {
    chunk *c = nb_malloc(HDR + size);
    if (!c) return NULL;
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

nb_arena *nb_arena_new(size_t chunk_bytes) {
    nb_arena *a = nb_calloc(1, sizeof *a);
    if (!a) return NULL;
    a->chunk_bytes = chunk_bytes ? chunk_bytes : (size_t)1 << 20;
    return a;
}

void nb_arena_free(nb_arena *a) {
    if (!a) return;
    for (chunk *c = a->head, *n; c; c = n) {
        n = c->next;
        nb_free(c);
    }
    nb_free(a);
}

void *nb_arena_alloc(nb_arena *a, size_t bytes) {
    size_t need = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN + REDZONE;
    if (need == REDZONE) need += ARENA_ALIGN;
    chunk *c = a->head;
    if (!c || c->size - c->used < need) {
        size_t sz = need > a->chunk_bytes ? need : a->chunk_bytes;
        chunk *n = chunk_new(sz);
        if (!n) return NULL;
        POISON((char *)n + HDR, sz);
        n->next = a->head;
        a->head = n;
        a->capacity += sz;
        c = n;
    }
    void *p = (char *)c + HDR + c->used;
    UNPOISON(p, bytes);
    c->used += need;
    a->used += need;
    if (a->used > a->step_peak) a->step_peak = a->used;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

nb_arena_mark nb_arena_get_mark(const nb_arena *a) {
    return (nb_arena_mark){a->head, a->head ? a->head->used : 0, a->used};
}

void nb_arena_release(nb_arena *a, nb_arena_mark m) {
    while (a->head && a->head != (chunk *)m.chunk) {
        chunk *c = a->head;
        a->head = c->next;
        a->capacity -= c->size;
        nb_free(c);
    }
    if (a->head) {
        NB_ASSERT(m.chunk_used <= a->head->used, "arena: release to a mark past the current position");
        POISON((char *)a->head + HDR + m.chunk_used, a->head->used - m.chunk_used);
        a->head->used = m.chunk_used;
    }
    a->used = m.used;
}

void nb_arena_reset(nb_arena *a) {
    if (a->head && (a->head->next || a->head->size < a->step_peak)) {
        /* The step spilled: merge into one chunk big enough for all of it.
         * If that allocation fails, keep the chain (still correct). */
        size_t total = a->step_peak > a->chunk_bytes ? a->step_peak : a->chunk_bytes;
        chunk *one = chunk_new(total);
        if (one) {
            POISON((char *)one + HDR, total);
            for (chunk *c = a->head, *n; c; c = n) {
                n = c->next;
                nb_free(c);
            }
            a->head = one;
            a->capacity = total;
        }
    }
    for (chunk *c = a->head; c; c = c->next) {
        c->used = 0;
        POISON((char *)c + HDR, c->size);
    }
    /* After a failed merge, allocation restarts in the newest chunk only;
     * older chunks stay reserved until the next successful merge. */
    a->used = 0;
    a->step_peak = 0;
}

size_t nb_arena_used(const nb_arena *a) { return a->used; }
size_t nb_arena_peak(const nb_arena *a) { return a->peak; }
size_t nb_arena_capacity(const nb_arena *a) { return a->capacity; }
