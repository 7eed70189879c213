/* Float32 tensors: shape checks, heap and arena construction, fills. */
#include "nb_core.h"

#include <string.h>

size_t nb_shape_numel(int ndim, const int *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

static nb_status check_shape(int ndim, const int *shape) {
    if (ndim < 0 || ndim > NB_MAX_DIMS)
        return nb_set_error(NB_STATUS_BAD_INPUT, "tensor rank %d is outside 0..%d", ndim, NB_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0)
            return nb_set_error(NB_STATUS_BAD_INPUT, "tensor dimension %d has size %d (must be > 0)", i, shape[i]);
    return NB_OK;
}

static void set_shape(nb_tensor *t, int ndim, const int *shape) {
    t->ndim = ndim;
    for (int i = 0; i < NB_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    t->numel = nb_shape_numel(ndim, shape);
}

nb_tensor *nb_tensor_new(int ndim, const int *shape) {
    if (check_shape(ndim, shape) != NB_OK) return NULL;
    nb_tensor *t = nb_calloc(1, sizeof *t);
    if (!t) return NULL;
    set_shape(t, ndim, shape);
    t->data = nb_calloc(t->numel, sizeof(float));
    if (!t->data) {
        nb_free(t);
        return NULL;
    }
    t->owns_data = 1;
    return t;
}

void nb_tensor_free(nb_tensor *t) {
    if (!t) return;
    if (t->owns_data) {
        nb_free(t->data);
        nb_free(t->grad);
    }
    nb_free(t);
}

nb_tensor *nb_tensor_arena(nb_arena *a, int ndim, const int *shape) {
    NB_ASSERT(check_shape(ndim, shape) == NB_OK, "%s", nb_last_error());
    nb_tensor *t = nb_arena_alloc(a, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    set_shape(t, ndim, shape);
    t->data = nb_arena_alloc(a, t->numel * sizeof(float));
    if (!t->data) return NULL;
    return t;
}

void nb_tensor_wrap(nb_tensor *t, float *data, int ndim, const int *shape) {
    memset(t, 0, sizeof *t);
    set_shape(t, ndim, shape);
    t->data = data;
}

int nb_tensor_same_shape(const nb_tensor *a, const nb_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

char *nb_shape_str(const nb_tensor *t, char *buf, size_t n) {
    size_t off = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ", %d" : "%d", t->shape[i]);
    if (off < n) snprintf(buf + off, n - off, ")");
    return buf;
}

void nb_tensor_zero(nb_tensor *t) { memset(t->data, 0, t->numel * sizeof(float)); }

void nb_tensor_fill(nb_tensor *t, float v) {
    for (size_t i = 0; i < t->numel; i++) t->data[i] = v;
}
