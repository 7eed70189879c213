/* The tape: node list, arena, gradient pool, the reverse walk. */
#include "nb_autograd.h"
#include "internal.h"

#include <math.h>
#include <setjmp.h>
#include <string.h>

/* Gradient buffers of non-parameter tensors come from a pool of blocks
 * reused best-fit. A tensor's gradient is complete once the node that
 * produced it runs backward (every consumer comes later on the tape), so the
 * walk hands it back right after: peak memory holds a few gradients, not
 * one per activation. */
typedef struct {
    float *data;
    size_t bytes;
    int in_use;
} pool_block;

struct nb_tape {
    nb_arena *arena;
    nb_node *nodes;
    size_t n_nodes, cap_nodes;
    pool_block *blocks;
    size_t n_blocks, cap_blocks;
    int grad_enabled;
    jmp_buf *guard; /* the running nb_tape_protect call, NULL if none */
    nb_profile *prof;
    double prof_last; /* when the previous node was recorded */
};

nb_tape *nb_tape_new(void) {
    nb_tape *t = nb_calloc(1, sizeof *t);
    if (!t) return NULL;
    t->arena = nb_arena_new((size_t)64 << 20);
    if (!t->arena) {
        nb_free(t);
        return NULL;
    }
    t->grad_enabled = 1;
    return t;
}

void nb_tape_free(nb_tape *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_blocks; i++) nb_free(t->blocks[i].data);
    nb_free(t->blocks);
    nb_free(t->nodes);
    nb_arena_free(t->arena);
    nb_free(t);
}

void nb_tape_reset(nb_tape *t) {
    if (t->prof) nb_profile_add_nodes(t->prof, t->nodes, t->n_nodes);
    t->n_nodes = 0;
    for (size_t i = 0; i < t->n_blocks; i++) t->blocks[i].in_use = 0;
    nb_arena_reset(t->arena);
}

nb_arena *nb_tape_arena(nb_tape *t) { return t->arena; }

static double mib(size_t bytes) { return (double)bytes / 1048576.0; }

/* An allocation of the step failed: inside nb_tape_protect, set a message
 * naming what (and what the tape already holds) and jump out to it; else
 * return, so the caller's NB_ASSERT reports it. */
static void out_of_memory(nb_tape *t, const char *what, size_t bytes) {
    if (!t->guard) return;
    nb_set_error(NB_STATUS_OOM,
                 "out of memory allocating %s (%.1f MiB; this step already holds %.1f MiB of "
                 "activations and scratch and %.1f MiB of gradients)",
                 what, mib(bytes), mib(nb_arena_capacity(t->arena)), mib(nb_tape_pool_bytes(t)));
    longjmp(*t->guard, 1);
}

/* "a (256, 64, 32, 32) tensor" */
static void tensor_what(char *buf, size_t n, const char *kind, int ndim, const int *shape) {
    nb_tensor shown;
    char s[96];
    nb_tensor_wrap(&shown, NULL, ndim, shape);
    snprintf(buf, n, "%s %s", kind, nb_shape_str(&shown, s, sizeof s));
}

nb_tensor *nb_tape_tensor(nb_tape *t, int ndim, const int *shape) {
    nb_tensor *x = nb_tensor_arena(t->arena, ndim, shape);
    if (!x && t->guard) {
        char what[160];
        tensor_what(what, sizeof what, "a tensor", ndim, shape);
        out_of_memory(t, what, nb_shape_numel(ndim, shape) * sizeof(float));
    }
    return x;
}

void *nb_tape_scratch(nb_tape *t, size_t bytes) {
    void *p = nb_arena_alloc(t->arena, bytes);
    if (!p) out_of_memory(t, "scratch memory", bytes);
    return p;
}

nb_arena_mark nb_tape_mark(nb_tape *t) { return nb_arena_get_mark(t->arena); }

void nb_tape_release(nb_tape *t, nb_arena_mark m) { nb_arena_release(t->arena, m); }

nb_status nb_tape_protect(nb_tape *t, nb_status (*fn)(void *user), void *user) {
    jmp_buf here, *const outer = t->guard;
    const int grad = t->grad_enabled;
    nb_status st;
    t->guard = &here;
    if (setjmp(here) == 0) {
        st = fn(user);
    } else {
        /* Everything the step made lives in the tape: forget it (the
         * reset may try to allocate too, and overwrite the message). */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nb_last_error());
        t->grad_enabled = grad;
        nb_tape_reset(t);
        st = nb_set_error(NB_STATUS_OOM, "%s", msg);
    }
    t->guard = outer;
    return st;
}

void nb_tape_set_profile(nb_tape *t, nb_profile *p) {
    t->prof = p;
    t->prof_last = nb_now();
}

void nb_tape_profile_mark(nb_tape *t) { t->prof_last = nb_now(); }

int nb_tape_set_grad(nb_tape *t, int enabled) {
    int old = t->grad_enabled;
    t->grad_enabled = enabled;
    return old;
}


int nb_tape_wants(const nb_tape *t, const nb_tensor *a, const nb_tensor *b, const nb_tensor *c) {
    if (!t->grad_enabled) return 0;
    return (a && a->requires_grad) || (b && b->requires_grad) || (c && c->requires_grad);
}

nb_node *nb_tape_record(nb_tape *t, const nb_op_def *op, nb_tensor *out, nb_tensor *in0,
                        nb_tensor *in1, nb_tensor *in2) {
    if (t->n_nodes == t->cap_nodes) {
        size_t cap = t->cap_nodes ? 2 * t->cap_nodes : 256;
        nb_node *n = nb_realloc(t->nodes, cap * sizeof *n);
        if (!n) out_of_memory(t, "the tape's node list", cap * sizeof *n);
        if (!n) return NULL;
        t->nodes = n;
        t->cap_nodes = cap;
    }
    nb_node *n = &t->nodes[t->n_nodes++];
    memset(n, 0, sizeof *n);
    if (t->prof) {
        const double now = nb_now();
        n->t_fwd = now - t->prof_last;
        t->prof_last = now;
    }
    n->op = op;
    n->out = out;
    n->in[0] = in0;
    n->in[1] = in1;
    n->in[2] = in2;
    out->requires_grad = 1;
    return n;
}

/* The smallest free block that holds `bytes` (a later stage's smaller
 * gradients reuse the first stage's blocks: the pool holds about as many
 * blocks as gradients are live at once, not that many per size), else a
 * new block. The same sequence of requests makes the same choices, so a
 * step of the same shape allocates nothing new. */
static float *pool_get(nb_tape *t, size_t bytes) {
    pool_block *best = NULL;
    for (size_t i = 0; i < t->n_blocks; i++) {
        pool_block *b = &t->blocks[i];
        if (!b->in_use && b->bytes >= bytes && (!best || b->bytes < best->bytes)) best = b;
    }
    if (best) {
        best->in_use = 1;
        return best->data;
    }
    /* Free blocks too small for this request go back to the system: the
     * backward meets the small gradients (late stages) first, and would
     * otherwise keep them beside the large ones for good. */
    size_t kept = 0;
    for (size_t i = 0; i < t->n_blocks; i++) {
        if (!t->blocks[i].in_use) {
            nb_free(t->blocks[i].data);
            continue;
        }
        t->blocks[kept++] = t->blocks[i];
    }
    t->n_blocks = kept;
    if (t->n_blocks == t->cap_blocks) {
        size_t cap = t->cap_blocks ? 2 * t->cap_blocks : 32;
        pool_block *nb = nb_realloc(t->blocks, cap * sizeof *nb);
        if (!nb) return NULL;
        t->blocks = nb;
        t->cap_blocks = cap;
    }
    float *d = nb_malloc(bytes);
    if (!d) return NULL;
    t->blocks[t->n_blocks++] = (pool_block){d, bytes, 1};
    return d;
}

static void pool_put(nb_tape *t, float *d) {
    for (size_t i = 0; i < t->n_blocks; i++)
        if (t->blocks[i].data == d) {
            t->blocks[i].in_use = 0;
            return;
        }
    NB_ASSERT(0, "gradient buffer %p not from this tape's pool", (void *)d);
}

float *nb_tape_grad_fresh(nb_tape *tape, nb_tensor *t, int *fresh) {
    *fresh = 0;
    if (t->grad) return t->grad;
    NB_ASSERT(!t->is_param, "parameter %s has no gradient buffer", t->name ? t->name : "?");
    float *g = pool_get(tape, t->numel * sizeof(float));
    if (!g) {
        char what[160];
        tensor_what(what, sizeof what, "the gradient of a", t->ndim, t->shape);
        out_of_memory(tape, what, t->numel * sizeof(float));
    }
    NB_ASSERT(g, "out of memory for a gradient of %zu floats", t->numel);
    t->grad = g;
    t->grad_pooled = 1;
    *fresh = 1;
    return g;
}

float *nb_tape_grad(nb_tape *tape, nb_tensor *t) {
    int fresh;
    float *g = nb_tape_grad_fresh(tape, t, &fresh);
    if (fresh) memset(g, 0, t->numel * sizeof(float));
    return g;
}

float *nb_tape_grad_inplace(nb_tape *tape, nb_tensor *from, nb_tensor *to, int *fresh) {
    if (to->grad || to->is_param || !from->grad_pooled || from->numel != to->numel)
        return nb_tape_grad_fresh(tape, to, fresh);
    *fresh = 1;
    /* The walk returns from's buffer to the pool after this node; it now
     * belongs to `to`, whose producer runs later and hands it back then. */
    to->grad = from->grad;
    to->grad_pooled = 1;
    from->grad = NULL;
    from->grad_pooled = 0;
    return to->grad;
}

size_t nb_tape_nodes(const nb_tape *t) { return t->n_nodes; }

size_t nb_tape_pool_bytes(const nb_tape *t) {
    size_t s = 0;
    for (size_t i = 0; i < t->n_blocks; i++) s += t->blocks[i].bytes;
    return s;
}

static nb_status walk(nb_tape *t) {
    for (size_t i = t->n_nodes; i-- > 0;) {
        nb_node *n = &t->nodes[i];
        if (!n->out->grad) continue; /* nothing flowed into this output */
        const double t0 = t->prof ? nb_now() : 0.0;
        const nb_arena_mark m = nb_arena_get_mark(t->arena);
        n->op->backward(t, n);
        nb_arena_release(t->arena, m);
        if (t->prof) n->t_bwd = nb_now() - t0;
        if (n->out->grad && n->out->grad_pooled) {
            pool_put(t, n->out->grad);
            n->out->grad = NULL;
            n->out->grad_pooled = 0;
        }
    }
    return NB_OK;
}

nb_status nb_backward_seed(nb_tape *t, nb_tensor *out, const float *seed) {
    if (!out->requires_grad)
        return nb_set_error(NB_STATUS_INTERNAL, "backward from a tensor that does not require grad");
    float *g = nb_tape_grad(t, out);
    memcpy(g, seed, out->numel * sizeof(float));
    return walk(t);
}

nb_status nb_backward(nb_tape *t, nb_tensor *loss) {
    if (loss->numel != 1)
        return nb_set_error(NB_STATUS_INTERNAL, "backward needs a scalar loss, got %zu elements", loss->numel);
    if (!isfinite(loss->data[0]))
        return nb_set_error(NB_STATUS_NUMERIC, "loss is %f", (double)loss->data[0]);
    const float one = 1.0f;
    return nb_backward_seed(t, loss, &one);
}
