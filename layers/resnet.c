/* Model builders: CIFAR ResNets (He et al. 2016, 6n+2 layers, 16/32/64
 * channels, option A or B shortcuts), ImageNet ResNet-18/34 (torchvision
 * layout and names, stem selectable) and a small CNN for tests. */
#include <string.h>

#include "internal.h"

/* Marks a module whose input comes from a ReLU (NULL: its registration
 * failed, which nb_model_finalize reports). */
static void input_nonneg(nb_module *mod) {
    if (mod) mod->input_nonneg = 1;
}

typedef struct {
    nb_conv2d_module *conv1, *conv2, *down_conv; /* down_conv: option B only */
    nb_bn_module *bn1, *bn2, *down_bn;
    int stride, out_c, pad_shortcut;             /* pad_shortcut: option A */
} basic_block;

typedef struct {
    nb_conv2d_module *conv1;
    nb_bn_module *bn1;
    int maxpool;
    basic_block *blocks;
    int n_blocks;
    nb_linear_module *fc;
} resnet;

static void resnet_free(void *p) {
    resnet *r = p;
    if (!r) return;
    nb_free(r->blocks);
    nb_free(r);
}

static nb_tensor *block_forward(basic_block *b, nb_tape *t, nb_tensor *x, int training) {
    nb_tensor *h = nb_conv2d_module_forward(b->conv1, t, x);
    /* bn1's output goes to conv2 alone: its input quantizer may run inside
     * bn1 (the stem's bn1 and the block-ending add feed a conv and a
     * shortcut, and stay apart) */
    h = nb_bn_relu_conv_module_forward(b->bn1, b->conv2, t, h, training);
    nb_tensor *sc = x;
    if (b->down_conv)
        sc = nb_bn_module_forward(b->down_bn, t, nb_conv2d_module_forward(b->down_conv, t, x), training, 0);
    else if (b->pad_shortcut)
        sc = nb_shortcut_pad(t, x, b->stride, b->out_c);
    /* relu(bn2(h) + sc) in one op: bn2's output is not kept */
    return nb_bn_add_relu_module_forward(b->bn2, t, h, sc, training);
}

static nb_tensor *resnet_forward(nb_model *m, nb_tape *t, nb_tensor *x) {
    resnet *r = m->net;
    nb_tensor *h = nb_conv2d_module_forward(r->conv1, t, x);
    h = nb_bn_module_forward(r->bn1, t, h, nb_model_bn_batch_stats(m), 1);
    if (r->maxpool) h = nb_maxpool2d(t, h, 3, 2, 1);
    for (int i = 0; i < r->n_blocks; i++) h = block_forward(&r->blocks[i], t, h, nb_model_bn_batch_stats(m));
    return nb_linear_module_forward(r->fc, t, nb_global_avgpool(t, h));
}

/* Graph emission: nodes appended to a bounded array; an overflow is
 * remembered and reported once at the end. */
typedef struct {
    nb_gnode *n;
    int cap, len;
} gbuf;

static int gpush(gbuf *g, nb_gop op, int a, int b, void *mod) {
    if (g->len < g->cap) g->n[g->len] = (nb_gnode){op, a, b, (nb_module *)mod, 0, 0, 0, 0};
    return g->len++;
}

static int gfinish(const gbuf *g, const nb_model *m) {
    if (g->len > g->cap) {
        nb_set_error(NB_STATUS_BAD_INPUT, "%s: its graph has %d nodes, room for %d", m->arch, g->len, g->cap);
        return -1;
    }
    return g->len;
}

static int resnet_graph(const nb_model *m, nb_gnode *nodes, int cap) {
    const resnet *r = m->net;
    gbuf g = {nodes, cap, 0};
    int h = gpush(&g, NB_G_INPUT, -1, -1, NULL);
    h = gpush(&g, NB_G_RELU, gpush(&g, NB_G_CONV, h, -1, r->conv1), -1, NULL);
    if (r->maxpool) {
        h = gpush(&g, NB_G_MAXPOOL, h, -1, NULL);
        if (h < cap) nodes[h].k = 3, nodes[h].stride = 2, nodes[h].pad = 1;
    }
    for (int i = 0; i < r->n_blocks; i++) {
        const basic_block *b = &r->blocks[i];
        int y = gpush(&g, NB_G_RELU, gpush(&g, NB_G_CONV, h, -1, b->conv1), -1, NULL);
        y = gpush(&g, NB_G_CONV, y, -1, b->conv2);
        int sc = h;
        if (b->down_conv) sc = gpush(&g, NB_G_CONV, h, -1, b->down_conv);
        else if (b->pad_shortcut) {
            sc = gpush(&g, NB_G_SHORTCUT_PAD, h, -1, NULL);
            if (sc < cap) nodes[sc].stride = b->stride, nodes[sc].out_c = b->out_c;
        }
        h = gpush(&g, NB_G_RELU, gpush(&g, NB_G_ADD, y, sc, NULL), -1, NULL);
    }
    gpush(&g, NB_G_LINEAR, gpush(&g, NB_G_GAP, h, -1, NULL), -1, r->fc);
    return gfinish(&g, m);
}

/* Adds one stage of `n` basic blocks named layer<stage>.<i>. */
static int add_stage(nb_model *m, resnet *r, int stage, int n, int in_c, int out_c, int stride,
                     nb_shortcut sc) {
    char name[80];
    for (int i = 0; i < n; i++) {
        basic_block *b = &r->blocks[r->n_blocks++];
        memset(b, 0, sizeof *b);
        int s = i == 0 ? stride : 1, ic = i == 0 ? in_c : out_c;
        b->stride = s;
        b->out_c = out_c;
        snprintf(name, sizeof name, "layer%d.%d.conv1", stage, i);
        b->conv1 = nb_model_add_conv(m, name, ic, out_c, 3, s, 1, 0);
        snprintf(name, sizeof name, "layer%d.%d.bn1", stage, i);
        b->bn1 = nb_model_add_bn(m, name, out_c);
        snprintf(name, sizeof name, "layer%d.%d.conv2", stage, i);
        b->conv2 = nb_model_add_conv(m, name, out_c, out_c, 3, 1, 1, 0);
        snprintf(name, sizeof name, "layer%d.%d.bn2", stage, i);
        b->bn2 = nb_model_add_bn(m, name, out_c);
        /* Block inputs come from a ReLU (the stem's or the previous add's). */
        input_nonneg(b->conv1 ? &b->conv1->base : NULL);
        input_nonneg(b->conv2 ? &b->conv2->base : NULL);
        nb_model_link_bn(b->conv1, b->bn1, 1);
        nb_model_link_bn(b->conv2, b->bn2, 1); /* add, then ReLU */
        if (s != 1 || ic != out_c) {
            if (sc == NB_SHORTCUT_A) {
                b->pad_shortcut = 1;
            } else {
                snprintf(name, sizeof name, "layer%d.%d.downsample.0", stage, i);
                b->down_conv = nb_model_add_conv(m, name, ic, out_c, 1, s, 0, 0);
                snprintf(name, sizeof name, "layer%d.%d.downsample.1", stage, i);
                b->down_bn = nb_model_add_bn(m, name, out_c);
                input_nonneg(b->down_conv ? &b->down_conv->base : NULL);
                nb_model_link_bn(b->down_conv, b->down_bn, 1);
            }
        }
    }
    return out_c;
}

int nb_stem_from_name(const char *name, nb_stem *out) {
    static const char *const names[NB_STEM_COUNT] = {"auto", "imagenet", "cifar"};
    for (int i = 0; i < NB_STEM_COUNT; i++)
        if (!strcmp(name, names[i])) {
            *out = (nb_stem)i;
            return 1;
        }
    return 0;
}

nb_stem nb_stem_resolve(nb_stem stem, int input_size) {
    if (stem != NB_STEM_AUTO) return stem;
    return input_size >= 128 ? NB_STEM_IMAGENET : NB_STEM_CIFAR;
}

static nb_model *build_resnet(const char *arch, const nb_model_opts *o, nb_rng *rng,
                              const int *blocks, int n_stages, const int *widths, int imagenet) {
    nb_model *m = nb_model_begin(arch, o);
    resnet *r = nb_calloc(1, sizeof *r);
    int total = 0;
    for (int s = 0; s < n_stages; s++) total += blocks[s];
    if (!m || !r || !(r->blocks = nb_calloc((size_t)total, sizeof(basic_block)))) {
        resnet_free(r);
        nb_model_free(m);
        return NULL;
    }
    m->net = r;
    m->net_free = resnet_free;
    m->forward = resnet_forward;
    m->graph = resnet_graph;
    nb_shortcut sc = o->shortcut;
    if (imagenet) {
        if (nb_stem_resolve(o->stem, o->input_size) == NB_STEM_IMAGENET) {
            r->conv1 = nb_model_add_conv(m, "conv1", o->in_channels, widths[0], 7, 2, 3, 0);
            r->maxpool = 1;
        } else {
            r->conv1 = nb_model_add_conv(m, "conv1", o->in_channels, widths[0], 3, 1, 1, 0);
        }
        sc = NB_SHORTCUT_B; /* torchvision: 1x1 conv + BN downsample */
    } else {
        r->conv1 = nb_model_add_conv(m, "conv1", o->in_channels, widths[0], 3, 1, 1, 0);
    }
    r->bn1 = nb_model_add_bn(m, "bn1", widths[0]);
    nb_model_link_bn(r->conv1, r->bn1, 1);
    int c = widths[0];
    for (int s = 0; s < n_stages; s++)
        c = add_stage(m, r, s + 1, blocks[s], c, widths[s], s == 0 ? 1 : 2, sc);
    r->fc = nb_model_add_linear(m, "fc", c, o->num_classes, 1);
    input_nonneg(r->fc ? &r->fc->base : NULL); /* average of ReLU outputs */
    if (nb_model_finalize(m, rng) != NB_OK) {
        nb_model_free(m);
        return NULL;
    }
    return m;
}

/* smallcnn: three conv-bn-relu stages (width w, 2w, 4w) with 2x2 max pooling
 * between them, global average pooling, a linear classifier. */
typedef struct {
    nb_conv2d_module *conv[3];
    nb_bn_module *bn[3];
    nb_linear_module *fc;
} smallcnn;

static void smallcnn_free(void *p) { nb_free(p); }

static nb_tensor *smallcnn_forward(nb_model *m, nb_tape *t, nb_tensor *x) {
    smallcnn *s = m->net;
    nb_tensor *h = x;
    for (int i = 0; i < 3; i++) {
        h = nb_bn_module_forward(s->bn[i], t, nb_conv2d_module_forward(s->conv[i], t, h), nb_model_bn_batch_stats(m), 1);
        if (i < 2) h = nb_maxpool2d(t, h, 2, 2, 0);
    }
    return nb_linear_module_forward(s->fc, t, nb_global_avgpool(t, h));
}

static int smallcnn_graph(const nb_model *m, nb_gnode *nodes, int cap) {
    const smallcnn *s = m->net;
    gbuf g = {nodes, cap, 0};
    int h = gpush(&g, NB_G_INPUT, -1, -1, NULL);
    for (int i = 0; i < 3; i++) {
        h = gpush(&g, NB_G_RELU, gpush(&g, NB_G_CONV, h, -1, s->conv[i]), -1, NULL);
        if (i < 2) {
            h = gpush(&g, NB_G_MAXPOOL, h, -1, NULL);
            if (h < cap) nodes[h].k = 2, nodes[h].stride = 2, nodes[h].pad = 0;
        }
    }
    gpush(&g, NB_G_LINEAR, gpush(&g, NB_G_GAP, h, -1, NULL), -1, s->fc);
    return gfinish(&g, m);
}

static nb_model *build_smallcnn(const char *arch, const nb_model_opts *o, nb_rng *rng) {
    nb_model *m = nb_model_begin(arch, o);
    smallcnn *s = nb_calloc(1, sizeof *s);
    if (!m || !s) {
        nb_free(s);
        nb_model_free(m);
        return NULL;
    }
    m->net = s;
    m->net_free = smallcnn_free;
    m->forward = smallcnn_forward;
    m->graph = smallcnn_graph;
    int c = o->in_channels, w = o->width;
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "features.%d.conv", i);
        s->conv[i] = nb_model_add_conv(m, name, c, w << i, 3, 1, 1, 0);
        snprintf(name, sizeof name, "features.%d.bn", i);
        s->bn[i] = nb_model_add_bn(m, name, w << i);
        nb_model_link_bn(s->conv[i], s->bn[i], 1);
        if (i > 0) input_nonneg(s->conv[i] ? &s->conv[i]->base : NULL);
        c = w << i;
    }
    s->fc = nb_model_add_linear(m, "fc", c, o->num_classes, 1);
    input_nonneg(s->fc ? &s->fc->base : NULL);
    if (nb_model_finalize(m, rng) != NB_OK) {
        nb_model_free(m);
        return NULL;
    }
    return m;
}

typedef struct {
    const char *name;
    int blocks[4];
    int n_stages;
    int imagenet;
} arch_def;

static const arch_def archs[] = {
    {"resnet20", {3, 3, 3}, 3, 0},    {"resnet32", {5, 5, 5}, 3, 0},
    {"resnet44", {7, 7, 7}, 3, 0},    {"resnet56", {9, 9, 9}, 3, 0},
    {"resnet18", {2, 2, 2, 2}, 4, 1}, {"resnet34", {3, 4, 6, 3}, 4, 1},
};

const char *const *nb_model_archs(void) {
    static const char *const names[] = {"resnet20", "resnet32", "resnet44", "resnet56",
                                        "resnet18", "resnet34", "smallcnn", NULL};
    return names;
}

nb_model *nb_model_build(const char *arch, const nb_model_opts *o, nb_rng *rng) {
    if (o->num_classes < 1 || o->in_channels < 1 || o->input_size < 8 || o->width < 1 ||
        o->shortcut >= NB_SHORTCUT_COUNT || o->stem >= NB_STEM_COUNT) {
        nb_set_error(NB_STATUS_BAD_INPUT,
                     "model %s: bad options (classes %d, channels %d, input size %d, width %d)", arch,
                     o->num_classes, o->in_channels, o->input_size, o->width);
        return NULL;
    }
    if (!strcmp(arch, "smallcnn")) return build_smallcnn(arch, o, rng);
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        const arch_def *a = &archs[i];
        if (strcmp(arch, a->name)) continue;
        static const int cifar_w[] = {16, 32, 64}, imagenet_w[] = {64, 128, 256, 512};
        return build_resnet(arch, o, rng, a->blocks, a->n_stages, a->imagenet ? imagenet_w : cifar_w,
                            a->imagenet);
    }
    nb_set_error(NB_STATUS_BAD_INPUT,
                 "unknown model '%s' (known: resnet20, resnet32, resnet44, resnet56, resnet18, resnet34, smallcnn)",
                 arch);
    return NULL;
}
