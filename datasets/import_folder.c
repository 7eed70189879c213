/* Importer for ImageNet-style class folders:
 *     DIR/train/<class>/<image>     (train split)
 *     DIR/val/<class>/<image>       (test split; DIR/test/... if no val)
 * Images are JPEG or PNG (recognised by content; names ending in .jpg,
 * .jpeg or .png in any case; hidden files skipped). Classes are the sorted
 * subfolder names of DIR/train (byte order, like torchvision's
 * ImageFolder); val/test classes must be among them. Each image is center-
 * cropped to a square and resized to size x size with an antialiased
 * bilinear filter. Train is shuffled with the seed unless shuffle = 0;
 * test keeps class-then-name order. Nothing is dropped silently: an empty
 * class folder, a folder inside a class folder and a damaged image are
 * errors (damaged images are skipped and logged with skip_bad). Decoding runs in parallel, in blocks
 * of one HDF5 chunk (256 images), the write order stays deterministic. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "internal.h"

#define BLOCK 256

typedef struct {
    char *path;
    uint8_t label;
} entry;

typedef struct {
    char **v;
    size_t n, cap;
} strlist;

static int push(strlist *l, const char *s) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **v = nb_realloc(l->v, cap * sizeof(char *));
        if (!v) return 0;
        l->v = v;
        l->cap = cap;
    }
    return (l->v[l->n] = nb_strdup(s)) ? (l->n++, 1) : 0;
}

static void strlist_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) nb_free(l->v[i]);
    nb_free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* a/b into buf; 0 (with an error set) when it does not fit. */
static int join(char *buf, size_t n, const char *a, const char *b) {
    int len = snprintf(buf, n, "%s/%s", a, b);
    if (len < 0 || (size_t)len >= n) {
        nb_set_error(NB_STATUS_BAD_INPUT, "%s/%s: path too long", a, b);
        return 0;
    }
    return 1;
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png"));
}

/* Sorted names in dir: subdirectories (want_dirs) or image files. */
static nb_status list_dir(const char *dir, int want_dirs, strlist *out) {
    DIR *d = opendir(dir);
    if (!d) return nb_set_error(NB_STATUS_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    struct dirent *e;
    char p[4096];
    nb_status st = NB_OK;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (!join(p, sizeof p, dir, e->d_name)) {
            st = NB_STATUS_BAD_INPUT;
            break;
        }
        if (!want_dirs && is_dir(p)) {
            st = nb_set_error(NB_STATUS_BAD_INPUT,
                              "%s: a folder inside a class folder (nested folders are not imported; "
                              "HINT: move its images up into %s)", p, dir);
            break;
        }
        int ok = want_dirs ? is_dir(p) : is_image_name(e->d_name);
        if (ok && !push(out, e->d_name)) {
            st = NB_STATUS_OOM;
            break;
        }
    }
    closedir(d);
    if (out->n) qsort(out->v, out->n, sizeof(char *), cmp_str);
    return st;
}

/* All images of one split as (path, label), class by class, names sorted. */
static nb_status list_split(const char *root, const strlist *classes, int is_train,
                            entry **out, size_t *count) {
    strlist dirs = {0};
    nb_status st = list_dir(root, 1, &dirs);
    entry *v = NULL;
    size_t n = 0, cap = 0;
    char p[4096];
    for (size_t i = 0; i < dirs.n && st == NB_OK; i++) {
        const char *cls = dirs.v[i];
        char *const *hit = bsearch(&cls, classes->v, classes->n, sizeof(char *), cmp_str);
        if (!hit) {
            st = nb_set_error(NB_STATUS_BAD_INPUT,
                              "%s/%s: class '%s' is not among the %zu train classes", root, cls,
                              cls, classes->n);
            break;
        }
        int label = (int)(hit - classes->v);
        strlist files = {0};
        if (!join(p, sizeof p, root, cls)) {
            st = NB_STATUS_BAD_INPUT;
            break;
        }
        st = list_dir(p, 0, &files);
        if (st == NB_OK && files.n == 0)
            st = nb_set_error(NB_STATUS_BAD_INPUT,
                              "%s: empty class folder (no .jpg, .jpeg or .png images; HINT: remove "
                              "it or add images)", p);
        for (size_t k = 0; k < files.n && st == NB_OK; k++) {
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                entry *nv = nb_realloc(v, cap * sizeof(entry));
                if (!nv) {
                    st = NB_STATUS_OOM;
                    break;
                }
                v = nv;
            }
            char fp[4096];
            if (!join(fp, sizeof fp, p, files.v[k])) {
                st = NB_STATUS_BAD_INPUT;
                break;
            }
            if (!(v[n].path = nb_strdup(fp))) {
                st = NB_STATUS_OOM;
                break;
            }
            v[n++].label = (uint8_t)label;
        }
        strlist_free(&files);
    }
    strlist_free(&dirs);
    if (st == NB_OK && n == 0)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: no images found (expected %s/<class>/*.jpg, "
                          "*.jpeg or *.png)%s",
                          root, root, is_train ? "" : "; the test split must not be empty");
    *out = v;
    *count = n;
    return st;
}

static void entries_free(entry *v, size_t n) {
    for (size_t i = 0; i < n; i++) nb_free(v[i].path);
    nb_free(v);
}

/* Decode, center-crop, resize: out (3, S, S). */
static nb_status load_one(const char *path, int S, uint8_t *out) {
    uint8_t *rgb = NULL, *planar = NULL;
    float *tmp = NULL, *scratch = NULL;
    int w, h;
    nb_status st = nb_image_load(path, &rgb, &w, &h);
    if (st != NB_OK) return st;
    int side = w < h ? w : h, x0 = (w - side) / 2, y0 = (h - side) / 2;
    size_t plane = (size_t)S * (size_t)S;
    if (side == S) { /* no resampling: exact pixels */
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++)
                    out[(size_t)c * plane + (size_t)y * (size_t)S + (size_t)x] =
                        rgb[(((size_t)(y0 + y)) * (size_t)w + (size_t)(x0 + x)) * 3 + (size_t)c];
        nb_free(rgb);
        return NB_OK;
    }
    size_t hw = (size_t)w * (size_t)h;
    planar = nb_malloc(3 * hw);
    tmp = nb_malloc(3 * plane * sizeof(float));
    scratch = nb_malloc(nb_resize_scratch_floats(3, h, w, S, S) * sizeof(float));
    if (!planar || !tmp || !scratch) {
        st = NB_STATUS_OOM;
        goto done;
    }
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++) planar[(size_t)c * hw + i] = rgb[i * 3 + (size_t)c];
    nb_resize_region(planar, 3, h, w, x0, y0, side, side, tmp, S, S, scratch);
    for (size_t i = 0; i < 3 * plane; i++) {
        float v = tmp[i];
        out[i] = (uint8_t)(v <= 0.0f ? 0 : v >= 255.0f ? 255 : lrintf(v));
    }
done:
    nb_free(rgb);
    nb_free(planar);
    nb_free(tmp);
    nb_free(scratch);
    return st;
}

/* Decode one split block by block in parallel and append it to w; with
 * skip_bad, images that fail are logged, counted in *skipped and left out. */
static nb_status import_split(nb_h5_writer *w, int split, const entry *v, size_t n, int S,
                              int threads, size_t *done, size_t total, const nb_import_opts *o,
                              size_t *skipped) {
    size_t eb = 3 * (size_t)S * (size_t)S;
    uint8_t *images = nb_malloc(BLOCK * eb), labels[BLOCK];
    nb_status *sts = nb_malloc(BLOCK * sizeof(nb_status));
    char(*msgs)[512] = nb_malloc(BLOCK * 512);
    nb_status st = NB_OK;
    if (!images || !sts || !msgs) st = NB_STATUS_OOM;
    for (size_t first = 0; first < n && st == NB_OK; first += BLOCK) {
        long m = (long)(n - first < BLOCK ? n - first : BLOCK);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (long k = 0; k < m; k++) {
            sts[k] = load_one(v[first + (size_t)k].path, S, images + (size_t)k * eb);
            if (sts[k] != NB_OK) snprintf(msgs[k], 512, "%s", nb_last_error());
            labels[k] = v[first + (size_t)k].label;
        }
        long kept = 0;
        for (long k = 0; k < m && st == NB_OK; k++) { /* the first failure in file order */
            if (sts[k] == NB_OK) {
                if (kept != k) {
                    memmove(images + (size_t)kept * eb, images + (size_t)k * eb, eb);
                    labels[kept] = labels[k];
                }
                kept++;
            } else if (o->skip_bad && sts[k] == NB_STATUS_BAD_INPUT) {
                nb_log(NB_LOG_WARN, "skipped %s", msgs[k]);
                (*skipped)++;
            } else {
                st = nb_set_error(sts[k], "%s%s", msgs[k],
                                  sts[k] == NB_STATUS_BAD_INPUT ? " (HINT: --skip-bad skips such images)" : "");
            }
        }
        if (st == NB_OK) st = nb_h5_writer_append(w, split, images, labels, (size_t)kept);
        *done += (size_t)m;
        if (o->progress) o->progress(*done, total, o->progress_user);
    }
    nb_free(images);
    nb_free(sts);
    nb_free(msgs);
    return st;
}

nb_status nb_import_folder(const char *dir, const char *out, const nb_import_opts *opts) {
    NB_ASSERT(dir && out, "NULL argument");
    nb_import_opts o = opts ? *opts : nb_import_opts_default();
    if (o.size < 1 || o.size > 4096)
        return nb_set_error(NB_STATUS_BAD_INPUT, "import-folder: size %d not in 1..4096", o.size);
    char train_dir[4096], test_dir[4096];
    if (!join(train_dir, sizeof train_dir, dir, "train") ||
        !join(test_dir, sizeof test_dir, dir, "test"))
        return NB_STATUS_BAD_INPUT;
    if (!is_dir(dir))
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: not a directory", dir);
    if (!is_dir(train_dir))
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "%s: no train/ folder (expected %s/train/<class>/<image> and "
                            "%s/val/<class>/<image> or %s/test/<class>/<image>)",
                            dir, dir, dir, dir);
    join(test_dir, sizeof test_dir, dir, "val");
    if (!is_dir(test_dir)) join(test_dir, sizeof test_dir, dir, "test");
    if (!is_dir(test_dir))
        return nb_set_error(NB_STATUS_BAD_INPUT,
                            "%s: no val/ or test/ folder (expected %s/val/<class>/<image>)", dir,
                            dir);
    strlist classes = {0};
    entry *sp[2] = {NULL, NULL};
    size_t n[2] = {0, 0};
    nb_h5_writer *w = NULL;
    nb_status st = list_dir(train_dir, 1, &classes);
    if (st == NB_OK && classes.n == 0)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: no class folders", train_dir);
    if (st == NB_OK && classes.n > 256)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: %zu class folders, at most 256 (uint8 labels)",
                          train_dir, classes.n);
    if (st == NB_OK) st = list_split(train_dir, &classes, 1, &sp[0], &n[0]);
    if (st == NB_OK) st = list_split(test_dir, &classes, 0, &sp[1], &n[1]);
    if (st != NB_OK) goto done;
    if (o.shuffle) {
        nb_rng r;
        nb_rng_seed(&r, o.seed, 0);
        for (size_t i = n[0]; i > 1; i--) { /* Fisher-Yates over the entries */
            size_t j = nb_rng_below(&r, (uint32_t)i);
            entry t = sp[0][i - 1];
            sp[0][i - 1] = sp[0][j];
            sp[0][j] = t;
        }
    }
    const char *name = o.name;
    char base[256];
    if (!name) {
        snprintf(base, sizeof base, "%s", dir);
        size_t len = strlen(base);
        while (len > 1 && base[len - 1] == '/') base[--len] = '\0';
        const char *slash = strrchr(base, '/');
        name = slash ? slash + 1 : base;
    }
    char source[4600];
    snprintf(source, sizeof source,
             "image folders %s/{train,%s} imported by nibble data import-folder: center crop, "
             "antialiased bilinear resize to %dx%d; train %s",
             dir, strrchr(test_dir, '/') + 1, o.size, o.size,
             o.shuffle ? "shuffled" : "in class/name order");
    if (o.shuffle) {
        size_t len = strlen(source);
        snprintf(source + len, sizeof source - len, " with seed %llu", (unsigned long long)o.seed);
    }
    nb_h5_writer_meta m = {.name = name, .source = source, .classes = (int)classes.n,
                           .class_names = (const char *const *)classes.v, .C = 3, .H = o.size,
                           .W = o.size, .count = {n[0], n[1]}, .overwrite = o.overwrite,
                           .may_shrink = o.skip_bad};
    if ((st = nb_h5_writer_create(out, &m, &w)) != NB_OK) goto done;
    int threads = o.threads > 0 ? o.threads : nb_get_threads();
    size_t done_n = 0, skipped[2] = {0, 0};
    for (int s = 0; s < 2 && st == NB_OK; s++) {
        st = import_split(w, s, sp[s], n[s], o.size, threads, &done_n, n[0] + n[1], &o, &skipped[s]);
        if (st == NB_OK && skipped[s] == n[s])
            st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: every one of its %zu images was skipped",
                              s ? test_dir : train_dir, n[s]);
    }
    if (st == NB_OK && skipped[0] + skipped[1])
        nb_log(NB_LOG_WARN, "%s: skipped %zu damaged or undecodable images (train %zu, test %zu) of %zu",
               dir, skipped[0] + skipped[1], skipped[0], skipped[1], n[0] + n[1]);
    if (st == NB_OK) st = nb_h5_writer_finish(w);
    else nb_h5_writer_abort(w);
done:
    strlist_free(&classes);
    entries_free(sp[0], n[0]);
    entries_free(sp[1], n[1]);
    return st;
}
