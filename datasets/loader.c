/* Batches from a dataset: the epoch order from the sampler, per-example
 * augmentation + normalisation, and `prefetch` background threads that
 * make batches ahead of the consumer.
 *
 * Batch b of an epoch holds positions [b * batch, ...) of the sampler's
 * order and lives in slot b % nslots. Workers claim batches in order, make
 * them in parallel (streaming: the sampler's gather step runs in batch
 * order, the augmentation in parallel) and mark them ready; the consumer
 * takes them in order and holds one slot until its next call. A batch's
 * content depends only on (seed, epoch, b), never on which thread made it
 * or when. start_epoch bumps a generation counter so work for an
 * abandoned epoch is dropped. */
#include <pthread.h>
#include <string.h>

#include "internal.h"

enum { SLOT_FREE, SLOT_BUSY, SLOT_READY, SLOT_HELD };

typedef struct {
    float *images;     /* (batch, C, oh, ow) */
    int32_t *labels;   /* (batch) */
    uint32_t *indices; /* (batch) */
    uint8_t *raw;      /* (batch, C, H, W) streaming only */
    int n, state;
    size_t batch;      /* which batch of the epoch it holds */
} slot;

typedef struct {
    nb_loader *l;
    int id;
} worker_arg;

struct nb_loader {
    nb_dataset *ds;
    nb_loader_opts o;
    nb_augment aug;
    float *lut;            /* (C, 256) */
    nb_sampler *sampler;
    size_t nbatches;
    int nslots;
    slot *slots;           /* (nslots) */
    int nworkers;          /* background threads; 0 = synchronous */
    float **scratch;       /* per worker: resize scratch (rrc only) */
    pthread_t *threads;
    worker_arg *args;
    int started;           /* threads running */
    pthread_mutex_t mu;
    pthread_cond_t work;   /* workers wait here */
    pthread_cond_t done;   /* consumer and start_epoch wait here */
    int quit, active, epoch;
    uint64_t gen;          /* bumped by start_epoch */
    size_t next_claim, next_gather, next_consume;
    int held, busy;
    nb_status err;         /* first worker failure of the epoch */
    char errmsg[512];
    double wait;
    const uint32_t *last_indices;
};

nb_loader_opts nb_loader_opts_default(void) {
    nb_loader_opts o = {.batch = 128, .drop_last = 0, .shuffle = 1, .augment = 1, .pad = 4,
                        .flip = 1, .rrc = 0, .out_h = 0, .out_w = 0, .prefetch = 1, .seed = 0,
                        .shuffle_buffer = 0};
    return o;
}

static void record_error(nb_loader *l, nb_status st) {
    if (l->err != NB_OK) return;
    l->err = st;
    snprintf(l->errmsg, sizeof l->errmsg, "%s", nb_last_error());
}

/* Make batch b (epoch, generation gen) into s. Returns
 * NB_STATUS_INTERRUPTED when the epoch was abandoned meanwhile. */
static nb_status make_batch(nb_loader *l, slot *s, size_t b, int epoch, uint64_t gen,
                            float *scratch) {
    const nb_dataset *ds = l->ds;
    size_t B = (size_t)l->o.batch, pos = b * B;
    size_t n = ds->count - pos < B ? ds->count - pos : B;
    int streaming = nb_sampler_streaming(l->sampler);
    if (streaming && l->nworkers) {
        pthread_mutex_lock(&l->mu);
        while (l->next_gather != b && l->gen == gen && l->err == NB_OK)
            pthread_cond_wait(&l->work, &l->mu);
        int go = l->next_gather == b && l->gen == gen && l->err == NB_OK;
        pthread_mutex_unlock(&l->mu);
        if (!go) return NB_STATUS_INTERRUPTED;
    }
    nb_status st = nb_sampler_take(l->sampler, pos, n, s->indices, s->raw);
    if (streaming && l->nworkers) {
        pthread_mutex_lock(&l->mu);
        if (l->gen == gen) {
            if (st == NB_OK) l->next_gather++;
            else record_error(l, st);
        }
        pthread_cond_broadcast(&l->work);
        pthread_cond_broadcast(&l->done);
        pthread_mutex_unlock(&l->mu);
    }
    if (st != NB_OK) return st;
    size_t out_ex = (size_t)ds->C * (size_t)l->aug.oh * (size_t)l->aug.ow;
    for (size_t k = 0; k < n; k++) {
        uint32_t idx = s->indices[k];
        const uint8_t *src = streaming ? s->raw + k * ds->example_bytes
                                       : ds->images + (size_t)idx * ds->example_bytes;
        nb_augment_example(&l->aug, src, idx, epoch, s->images + k * out_ex, scratch);
        s->labels[k] = ds->labels[idx];
    }
    s->n = (int)n;
    return NB_OK;
}

static int claimable(const nb_loader *l) {
    return l->active && l->err == NB_OK && l->next_claim < l->nbatches &&
           l->slots[l->next_claim % (size_t)l->nslots].state == SLOT_FREE;
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    nb_loader *l = wa->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->quit && !claimable(l)) pthread_cond_wait(&l->work, &l->mu);
        if (l->quit) break;
        size_t b = l->next_claim++;
        slot *s = &l->slots[b % (size_t)l->nslots];
        s->state = SLOT_BUSY;
        s->batch = b;
        uint64_t gen = l->gen;
        int epoch = l->epoch;
        l->busy++;
        pthread_mutex_unlock(&l->mu);
        nb_status st = make_batch(l, s, b, epoch, gen, l->scratch[wa->id]);
        pthread_mutex_lock(&l->mu);
        l->busy--;
        if (gen == l->gen && st == NB_OK) {
            s->state = SLOT_READY;
        } else {
            s->state = SLOT_FREE;
            if (gen == l->gen && st != NB_STATUS_INTERRUPTED) record_error(l, st);
        }
        pthread_cond_broadcast(&l->done);
        pthread_cond_broadcast(&l->work);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static nb_status check_opts(const nb_dataset *ds, const nb_loader_opts *o) {
    const char *bad = NULL;
    long v = 0;
    if (o->batch < 1 || o->batch > (1 << 20)) bad = "batch", v = o->batch;
    else if (o->pad < 0 || o->pad > 4096) bad = "pad", v = o->pad;
    else if (o->prefetch < 0 || o->prefetch > 64) bad = "prefetch", v = o->prefetch;
    else if (o->out_h < 0 || o->out_h > 65536) bad = "out_h", v = o->out_h;
    else if (o->out_w < 0 || o->out_w > 65536) bad = "out_w", v = o->out_w;
    if (bad)
        return nb_set_error(NB_STATUS_BAD_INPUT, "loader: option %s = %ld is out of range", bad, v);
    if (o->drop_last && ds->count < (size_t)o->batch)
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "loader: batch %d with drop_last leaves no batch from %zu examples",
                            o->batch, ds->count);
    return NB_OK;
}

nb_status nb_loader_new(nb_dataset *ds, const nb_loader_opts *o, nb_loader **out) {
    NB_ASSERT(ds && o && out, "NULL argument");
    *out = NULL;
    nb_status st = check_opts(ds, o);
    if (st != NB_OK) return st;
    nb_loader *l = nb_calloc(1, sizeof *l);
    if (!l) return NB_STATUS_OOM;
    l->ds = ds;
    l->o = *o;
    l->held = -1;
    l->epoch = -1;
    int C = ds->C, oh = o->out_h ? o->out_h : ds->H, ow = o->out_w ? o->out_w : ds->W;
    l->aug = (nb_augment){.C = C, .H = ds->H, .W = ds->W, .oh = oh, .ow = ow,
                          .augment = o->augment, .pad = o->pad, .flip = o->flip, .rrc = o->rrc,
                          .seed = o->seed, .mean = ds->mean, .std = ds->std};
    size_t B = (size_t)o->batch;
    l->nbatches = o->drop_last ? ds->count / B : (ds->count + B - 1) / B;
    l->nworkers = o->prefetch;
    l->nslots = l->nworkers ? 2 * l->nworkers + 1 : 1;
    int nscratch = l->nworkers ? l->nworkers : 1;
    if (!(l->lut = nb_malloc((size_t)C * 256 * sizeof(float)))) goto oom;
    for (int c = 0; c < C; c++)
        for (int v = 0; v < 256; v++)
            l->lut[c * 256 + v] = ((float)v / 255.0f - ds->mean[c]) / ds->std[c];
    l->aug.lut = l->lut;
    if ((st = nb_sampler_new(ds, o->shuffle, o->seed, o->shuffle_buffer, &l->sampler)) != NB_OK)
        goto fail;
    if (!(l->slots = nb_calloc((size_t)l->nslots, sizeof(slot)))) goto oom;
    size_t out_ex = (size_t)C * (size_t)oh * (size_t)ow;
    for (int i = 0; i < l->nslots; i++) {
        slot *s = &l->slots[i];
        if (!(s->images = nb_malloc(B * out_ex * sizeof(float))) ||
            !(s->labels = nb_malloc(B * sizeof(int32_t))) ||
            !(s->indices = nb_malloc(B * sizeof(uint32_t))))
            goto oom;
        if (nb_sampler_streaming(l->sampler) && !(s->raw = nb_malloc(B * ds->example_bytes)))
            goto oom;
    }
    if (!(l->scratch = nb_calloc((size_t)nscratch, sizeof(float *)))) goto oom;
    if (o->rrc && o->augment)
        for (int i = 0; i < nscratch; i++)
            if (!(l->scratch[i] = nb_malloc(nb_resize_scratch_floats(C, ds->H, ds->W, oh, ow) *
                                            sizeof(float))))
                goto oom;
    if (l->nworkers) {
        if (!(l->threads = nb_calloc((size_t)l->nworkers, sizeof(pthread_t))) ||
            !(l->args = nb_calloc((size_t)l->nworkers, sizeof(worker_arg))))
            goto oom;
        pthread_mutex_init(&l->mu, NULL);
        pthread_cond_init(&l->work, NULL);
        pthread_cond_init(&l->done, NULL);
        for (int i = 0; i < l->nworkers; i++) {
            l->args[i] = (worker_arg){l, i};
            if (pthread_create(&l->threads[i], NULL, worker_main, &l->args[i]) != 0) {
                st = nb_set_error(NB_STATUS_INTERNAL, "loader: cannot start prefetch thread %d", i);
                goto fail;
            }
            l->started++;
        }
    }
    *out = l;
    return NB_OK;
oom:
    st = NB_STATUS_OOM;
fail:
    nb_loader_free(l);
    return st;
}

void nb_loader_free(nb_loader *l) {
    if (!l) return;
    if (l->nworkers && l->threads) {
        if (l->started) {
            pthread_mutex_lock(&l->mu);
            l->quit = 1;
            l->gen++;
            pthread_cond_broadcast(&l->work);
            pthread_mutex_unlock(&l->mu);
            for (int i = 0; i < l->started; i++) pthread_join(l->threads[i], NULL);
        }
        if (l->args) { /* the sync objects exist once args were allocated */
            pthread_cond_destroy(&l->done);
            pthread_cond_destroy(&l->work);
            pthread_mutex_destroy(&l->mu);
        }
    }
    nb_free(l->threads);
    nb_free(l->args);
    if (l->slots)
        for (int i = 0; i < l->nslots; i++) {
            nb_free(l->slots[i].images);
            nb_free(l->slots[i].labels);
            nb_free(l->slots[i].indices);
            nb_free(l->slots[i].raw);
        }
    nb_free(l->slots);
    if (l->scratch)
        for (int i = 0; i < (l->nworkers ? l->nworkers : 1); i++) nb_free(l->scratch[i]);
    nb_free(l->scratch);
    nb_sampler_free(l->sampler);
    nb_free(l->lut);
    nb_free(l);
}

nb_status nb_loader_start_epoch(nb_loader *l, int epoch) {
    NB_ASSERT(l && epoch >= 0, "bad epoch %d", epoch);
    if (l->nworkers) {
        pthread_mutex_lock(&l->mu);
        l->gen++;
        l->active = 0;
        pthread_cond_broadcast(&l->work);
        while (l->busy > 0) pthread_cond_wait(&l->done, &l->mu);
    }
    /* No worker is inside make_batch now and none can claim (inactive). */
    for (int i = 0; i < l->nslots; i++) l->slots[i].state = SLOT_FREE;
    l->held = -1;
    l->next_claim = l->next_gather = l->next_consume = 0;
    l->err = NB_OK;
    l->errmsg[0] = '\0';
    l->last_indices = NULL;
    nb_sampler_start(l->sampler, epoch);
    l->epoch = epoch;
    l->active = 1;
    if (l->nworkers) {
        pthread_cond_broadcast(&l->work);
        pthread_mutex_unlock(&l->mu);
    }
    return NB_OK;
}

static nb_status next_sync(nb_loader *l, slot **out) {
    double t0 = nb_now();
    size_t b = l->next_consume;
    nb_status st = make_batch(l, &l->slots[0], b, l->epoch, l->gen, l->scratch[0]);
    l->wait += nb_now() - t0;
    if (st != NB_OK) {
        l->next_consume = l->nbatches; /* the epoch ends at an error */
        return st;
    }
    l->next_consume++;
    *out = &l->slots[0];
    return NB_OK;
}

static nb_status next_async(nb_loader *l, slot **out) {
    pthread_mutex_lock(&l->mu);
    size_t b = l->next_consume;
    int i = (int)(b % (size_t)l->nslots);
    slot *s = &l->slots[i];
    double t0 = nb_now();
    while (!(s->state == SLOT_READY && s->batch == b) && l->err == NB_OK)
        pthread_cond_wait(&l->done, &l->mu);
    l->wait += nb_now() - t0;
    if (!(s->state == SLOT_READY && s->batch == b)) {
        nb_status st = l->err;
        l->next_consume = l->nbatches;
        pthread_mutex_unlock(&l->mu);
        return nb_set_error(st, "%s", l->errmsg);
    }
    s->state = SLOT_HELD;
    l->held = i;
    l->next_consume++;
    pthread_mutex_unlock(&l->mu);
    *out = s;
    return NB_OK;
}

nb_status nb_loader_next(nb_loader *l, const float **images, const int32_t **labels, int *n) {
    NB_ASSERT(l && images && labels && n, "NULL argument");
    NB_ASSERT(l->active, "nb_loader_next before nb_loader_start_epoch");
    *images = NULL;
    *labels = NULL;
    *n = 0;
    l->last_indices = NULL;
    if (l->nworkers && l->held >= 0) {
        pthread_mutex_lock(&l->mu);
        l->slots[l->held].state = SLOT_FREE;
        l->held = -1;
        pthread_cond_broadcast(&l->work);
        pthread_mutex_unlock(&l->mu);
    }
    if (l->next_consume >= l->nbatches) return NB_OK;
    slot *s = NULL;
    nb_status st = l->nworkers ? next_async(l, &s) : next_sync(l, &s);
    if (st != NB_OK) return st;
    *images = s->images;
    *labels = s->labels;
    *n = s->n;
    l->last_indices = s->indices;
    return NB_OK;
}

const uint32_t *nb_loader_indices(const nb_loader *l) { return l->last_indices; }
size_t nb_loader_batches_per_epoch(const nb_loader *l) { return l->nbatches; }
int nb_loader_out_c(const nb_loader *l) { return l->ds->C; }
int nb_loader_out_h(const nb_loader *l) { return l->aug.oh; }
int nb_loader_out_w(const nb_loader *l) { return l->aug.ow; }
double nb_loader_wait_seconds(const nb_loader *l) { return l->wait; }
