/* The order of an epoch. In memory it is a Fisher-Yates permutation. When
 * streaming it is what a bounded-memory reader can produce: the chunks
 * (aligned with the file's HDF5 chunks, so each is decompressed once) in a
 * shuffled order, each example passing through a shuffle buffer of
 * `buffer` example copies from which a random one is emitted and replaced
 * by the next arrival (TensorFlow's shuffle buffer). Every example comes
 * out exactly once per epoch in both modes. */
#include <string.h>

#include "internal.h"

#define ORDER_SALT 0x6a09e667f3bcc909ULL /* order streams apart from augmentation */

struct nb_sampler {
    const nb_dataset *ds;
    int shuffle;
    uint64_t seed;
    nb_rng rng;
    uint32_t *perm;       /* memory: (N) */
    /* streaming */
    size_t emitted;       /* positions handed out this epoch */
    size_t cap, fill;     /* shuffle buffer capacity and use, in examples */
    uint8_t *buf;         /* (cap, C, H, W) */
    uint32_t *buf_idx;    /* (cap) */
    uint8_t *chunk;       /* (chunk_rows, C, H, W) */
    size_t chunk_first, chunk_n, chunk_pos;
    uint32_t *chunk_order; /* (nchunks) */
    size_t nchunks, next_chunk;
};

nb_status nb_sampler_new(const nb_dataset *ds, int shuffle, uint64_t seed, size_t buffer,
                         nb_sampler **out) {
    *out = NULL;
    nb_sampler *s = nb_calloc(1, sizeof *s);
    if (!s) return NB_STATUS_OOM;
    s->ds = ds;
    s->shuffle = shuffle;
    s->seed = seed;
    size_t N = ds->count, eb = ds->example_bytes;
    if (ds->images) {
        if (!(s->perm = nb_malloc(N * sizeof(uint32_t)))) goto oom;
    } else {
        size_t rows = ds->chunk_rows < N ? ds->chunk_rows : N;
        s->nchunks = (N + ds->chunk_rows - 1) / ds->chunk_rows;
        if (buffer == 0) {
            size_t bytes = ds->mem_cap / 2 < ((size_t)64 << 20) ? ds->mem_cap / 2 : (size_t)64 << 20;
            buffer = bytes / eb;
            if (buffer < rows) buffer = rows;
        }
        s->cap = shuffle ? (buffer < N ? buffer : N) : 0;
        if (!(s->chunk = nb_malloc(rows * eb))) goto oom;
        if (!(s->chunk_order = nb_malloc(s->nchunks * sizeof(uint32_t)))) goto oom;
        if (s->cap && (!(s->buf = nb_malloc(s->cap * eb)) ||
                       !(s->buf_idx = nb_malloc(s->cap * sizeof(uint32_t)))))
            goto oom;
    }
    *out = s;
    return NB_OK;
oom:
    nb_sampler_free(s);
    return NB_STATUS_OOM;
}

void nb_sampler_free(nb_sampler *s) {
    if (!s) return;
    nb_free(s->perm);
    nb_free(s->buf);
    nb_free(s->buf_idx);
    nb_free(s->chunk);
    nb_free(s->chunk_order);
    nb_free(s);
}

int nb_sampler_streaming(const nb_sampler *s) { return s->perm == NULL; }

void nb_sampler_start(nb_sampler *s, int epoch) {
    nb_rng_seed(&s->rng, s->seed ^ ORDER_SALT, (uint64_t)(uint32_t)epoch);
    if (s->perm) {
        for (size_t i = 0; i < s->ds->count; i++) s->perm[i] = (uint32_t)i;
        if (s->shuffle) nb_rng_shuffle(&s->rng, s->perm, s->ds->count);
        return;
    }
    for (size_t c = 0; c < s->nchunks; c++) s->chunk_order[c] = (uint32_t)c;
    if (s->shuffle) nb_rng_shuffle(&s->rng, s->chunk_order, s->nchunks);
    s->emitted = s->fill = 0;
    s->next_chunk = s->chunk_n = s->chunk_pos = 0;
}

/* The next example in chunk order: copies its pixels to dst. */
static nb_status pull(nb_sampler *s, uint8_t *dst, uint32_t *idx) {
    const nb_dataset *ds = s->ds;
    if (s->chunk_pos == s->chunk_n) {
        NB_ASSERT(s->next_chunk < s->nchunks, "streaming sampler ran past the epoch");
        size_t c = s->chunk_order[s->next_chunk++];
        s->chunk_first = c * ds->chunk_rows;
        s->chunk_n = ds->count - s->chunk_first < ds->chunk_rows ? ds->count - s->chunk_first
                                                                   : ds->chunk_rows;
        s->chunk_pos = 0;
        nb_status st = nb_ds_stream_read(ds, s->chunk_first, s->chunk_n, s->chunk);
        if (st != NB_OK) {
            s->chunk_n = 0;
            return st;
        }
    }
    memcpy(dst, s->chunk + s->chunk_pos * ds->example_bytes, ds->example_bytes);
    *idx = (uint32_t)(s->chunk_first + s->chunk_pos);
    s->chunk_pos++;
    return NB_OK;
}

static int input_left(const nb_sampler *s) {
    return s->chunk_pos < s->chunk_n || s->next_chunk < s->nchunks;
}

nb_status nb_sampler_take(nb_sampler *s, size_t pos, size_t n, uint32_t *indices, uint8_t *raw) {
    NB_ASSERT(pos + n <= s->ds->count, "take [%zu, +%zu) of %zu", pos, n, s->ds->count);
    if (s->perm) {
        memcpy(indices, s->perm + pos, n * sizeof(uint32_t));
        return NB_OK;
    }
    NB_ASSERT(pos == s->emitted, "streaming positions must be taken in order");
    size_t eb = s->ds->example_bytes;
    nb_status st;
    for (size_t k = 0; k < n; k++) {
        uint8_t *dst = raw + k * eb;
        if (!s->cap) { /* no shuffle: file order */
            if ((st = pull(s, dst, &indices[k])) != NB_OK) return st;
            s->emitted++;
            continue;
        }
        while (s->fill < s->cap && input_left(s)) {
            if ((st = pull(s, s->buf + s->fill * eb, &s->buf_idx[s->fill])) != NB_OK) return st;
            s->fill++;
        }
        NB_ASSERT(s->fill > 0, "shuffle buffer empty before the epoch ended");
        size_t j = nb_rng_below(&s->rng, (uint32_t)s->fill);
        memcpy(dst, s->buf + j * eb, eb);
        indices[k] = s->buf_idx[j];
        if (input_left(s)) {
            if ((st = pull(s, s->buf + j * eb, &s->buf_idx[j])) != NB_OK) return st;
        } else {
            s->fill--;
            if (j != s->fill) {
                memcpy(s->buf + j * eb, s->buf + s->fill * eb, eb);
                s->buf_idx[j] = s->buf_idx[s->fill];
            }
        }
        s->emitted++;
    }
    return NB_OK;
}
