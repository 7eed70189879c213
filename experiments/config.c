/*
 * Experiment configs: JSON text -> cJSON tree -> typed nb_config.
 *
 * With alloc_files.c (the bit-allocation files, which share the file
 * reading and parse errors here), the only file that includes cJSON. A load
 * reads the file, detaches its "extends", checks the tree against the
 * schema (config_schema.c) under the file's own name, loads and merges the
 * base, then applies each --set to the merged tree and checks it again under
 * that override's name — so every message names where the bad value came
 * from. Required keys are checked last, once everything is merged, and
 * quant.bitmap's file is read then. The cJSON tree never outlives the call.
 */
#include <cjson/cJSON.h>

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"
#include "nb_layers.h"

#define MAX_EXTENDS 16 /* files in one extends chain */
#define KEY_MAX 256    /* longest key path we keep */

/* The files of the extends chain being loaded, outermost first. */
typedef struct {
    char real[MAX_EXTENDS][NB_CFG_PATH_MAX]; /* realpath, for cycle detection */
    char shown[MAX_EXTENDS][NB_CFG_PATH_MAX]; /* as named in messages */
    int n;
} chain;

/* ---------------------------------------------------------------- values */

void nb_cfg_show(const cJSON *v, char *buf, size_t n) {
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        snprintf(buf, n, "(a value)");
        return;
    }
    if (strlen(s) > 60) memcpy(s + 57, "...", 4);
    snprintf(buf, n, "%s", s);
    cJSON_free(s);
}

static nb_status bad_value(const char *src, const char *path, const char *expected, const cJSON *v,
                           const char *extra) {
    char got[80];
    nb_cfg_show(v, got, sizeof got);
    return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: expected %s, got %s%s", src, path, expected, got,
                        extra ? extra : "");
}

/* `"a", "b", "c"` into buf. */
static void quote_list(const char *const *names, char *buf, size_t n) {
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s\"%s\"", i ? ", " : "", names[i]);
}

static nb_status set_choice(const char *src, const char *path, const nb_cfg_key *k, const char *const *names,
                            const cJSON *v, char *f) {
    char list[512], expected[560], hint[128] = "";
    quote_list(names, list, sizeof list);
    snprintf(expected, sizeof expected, "one of %s", list);
    if (!cJSON_IsString(v)) return bad_value(src, path, expected, v, NULL);
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], v->valuestring) == 0) {
            if (k->kind == NB_CFG_CHAR)
                *f = names[i][0];
            else
                strncpy(f, names[i], k->size); /* pads with NULs (memcmp-stable) */
            return NB_OK;
        }
    }
    const char *near = nb_cfg_suggest_among(names, v->valuestring);
    if (near) snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", near);
    return bad_value(src, path, expected, v, hint);
}

/* A number checked against the key's range and, for integers, the field's
 * type; *out is the value. */
static nb_status get_number(const char *src, const char *path, const nb_cfg_key *k, const cJSON *v,
                            double *out) {
    char expected[96];
    nb_cfg_describe(k, expected, sizeof expected);
    int integer = nb_cfg_is_integer(k);
    if (cJSON_IsNumber(v) && !isfinite(v->valuedouble)) /* 1e999: cJSON prints it as null */
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: expected %s, got a number beyond the range "
                            "of a double", src, path, expected);
    if (!cJSON_IsNumber(v)) return bad_value(src, path, expected, v, NULL);
    double d = v->valuedouble;
    if ((integer && d != floor(d)) || !nb_cfg_in_range(k, d)) return bad_value(src, path, expected, v, NULL);
    int fits = 1;
    if (k->kind == NB_CFG_INT) fits = d >= INT_MIN && d <= INT_MAX;
    if (k->kind == NB_CFG_LONG) fits = d >= (double)LONG_MIN && d < -(double)LONG_MIN;
    if (k->kind == NB_CFG_FLOAT) fits = fabs(d) <= (double)FLT_MAX && nb_cfg_in_range(k, (double)(float)d);
    if (!fits) return bad_value(src, path, expected, v, " (out of range for the field)");
    *out = d;
    return NB_OK;
}

static nb_status apply_object(const char *src, const cJSON *obj, const char *prefix, nb_config *c);

/* Whether an earlier member of obj has item's key (cJSON keeps duplicates). */
static int repeats_key(const cJSON *obj, const cJSON *item) {
    for (const cJSON *prev = obj->child; prev != item; prev = prev->next)
        if (strcmp(prev->string, item->string) == 0) return 1;
    return 0;
}

/* The keys of one quant.layers rule. */
static const char *const rule_keys[] = {"weight_bits", "act_bits", "weight_method", "act_method",
                                        "weight_granularity", "group_size", NULL};

/* quant.layers: {"NAME or GLOB": {rule keys}} -> nb_qrule[] in file order
 * (later rules override earlier ones where both match a layer). */
static nb_status apply_rules(const char *src, const char *path, const nb_cfg_key *k, const cJSON *v,
                             nb_config *c) {
    if (!cJSON_IsObject(v)) return bad_value(src, path, "an object of layer name or glob -> settings", v, NULL);
    nb_qrule *rules = (nb_qrule *)((char *)c + k->off);
    int n = 0;
    for (const cJSON *it = v->child; it; it = it->next) {
        char rp[KEY_MAX];
        const int rl = snprintf(rp, sizeof rp, "%s.\"%s\"", path, it->string);
        if (rl < 0 || rl >= (int)sizeof rp)
            return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: a layer name or glob is too long", src, path);
        if (n == NB_QUANT_MAX_RULES)
            return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: at most %d rules", src, path, NB_QUANT_MAX_RULES);
        if (repeats_key(v, it)) return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: duplicate key", src, rp);
        nb_qrule *r = &rules[n];
        memset(r, 0, sizeof *r);
        if (!it->string[0] || strlen(it->string) >= sizeof r->pattern)
            return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: a layer name or glob of 1..%zu bytes", src, rp,
                                sizeof r->pattern - 1);
        snprintf(r->pattern, sizeof r->pattern, "%s", it->string);
        if (!cJSON_IsObject(it))
            return bad_value(src, rp, "an object with weight_bits, act_bits, weight_method, act_method, "
                             "weight_granularity or group_size", it, NULL);
        for (const cJSON *f = it->child; f; f = f->next) {
            char fp[KEY_MAX + 64];
            snprintf(fp, sizeof fp, "%s.%s", rp, f->string);
            if (repeats_key(it, f)) return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: duplicate key", src, fp);
            const char *name = f->string;
            if (!strcmp(name, "weight_bits") || !strcmp(name, "act_bits") || !strcmp(name, "group_size")) {
                const int group = !strcmp(name, "group_size");
                const int wbits = !strcmp(name, "weight_bits"); /* 1 bit: adq codebooks */
                const double lo = group || wbits ? 1 : 2, hi = group ? 1 << 20 : 8;
                if (!cJSON_IsNumber(f) || f->valuedouble != floor(f->valuedouble) || f->valuedouble < lo ||
                    f->valuedouble > hi)
                    return bad_value(src, fp, group ? "an integer >= 1" : wbits ? "an integer in [1, 8]" : "an integer in [2, 8]", f, NULL);
                int *dst = group ? &r->group_size : !strcmp(name, "weight_bits") ? &r->weight_bits : &r->act_bits;
                *dst = (int)f->valuedouble;
                continue;
            }
            const char *const *names = NULL;
            char *dst = NULL;
            if (!strcmp(name, "weight_method")) names = nb_cfg_weight_methods, dst = r->weight_method;
            if (!strcmp(name, "act_method")) names = nb_cfg_act_methods, dst = r->act_method;
            if (!strcmp(name, "weight_granularity")) names = nb_cfg_granularities, dst = r->weight_granularity;
            if (!names) {
                const char *near = nb_cfg_suggest_among(rule_keys, name);
                char hint[96] = "";
                if (near) snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", near);
                return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: unknown key%s", src, fp, hint);
            }
            nb_cfg_key ek = {.kind = NB_CFG_ENUM, .size = NB_QNAME};
            nb_status st = set_choice(src, fp, &ek, names, f, dst);
            if (st != NB_OK) return st;
        }
        n++;
    }
    *(int *)((char *)c + k->off2) = n;
    return NB_OK;
}

/* quant.bitmap: "" (none), a file name (read by resolve_bitmap once the
 * tree is final, so an overridden base's file is never opened), or the
 * resolved object {"file": PATH, "layers": {...}} the effective config
 * holds. Here only the form is checked and the path kept. */
static nb_status apply_bitmap(const char *src, const char *path, const nb_cfg_key *k, const cJSON *v, nb_config *c) {
    static const char *const keys[] = {"file", "layers", NULL};
    nb_bitmap_config *b = (nb_bitmap_config *)((char *)c + k->off);
    const cJSON *file = v;
    char fp[KEY_MAX + 16];
    if (cJSON_IsObject(v)) {
        for (const cJSON *it = v->child; it; it = it->next) {
            snprintf(fp, sizeof fp, "%s.%s", path, it->string);
            if (repeats_key(v, it)) return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: duplicate key", src, fp);
            if (strcmp(it->string, "file") && strcmp(it->string, "layers")) {
                const char *near = nb_cfg_suggest_among(keys, it->string);
                char hint[64] = "";
                if (near) snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", near);
                return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: unknown key%s", src, fp, hint);
            }
        }
        snprintf(fp, sizeof fp, "%s.file", path);
        file = cJSON_GetObjectItemCaseSensitive(v, "file");
        if (!file) return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: required key is missing", src, fp);
        if (!cJSON_IsString(file) || !file->valuestring[0]) return bad_value(src, fp, "a file name", file, NULL);
        nb_qrule *scratch = nb_malloc(NB_QUANT_MAX_RULES * sizeof *scratch);
        if (!scratch) return NB_STATUS_OOM;
        int n;
        snprintf(fp, sizeof fp, "%s.layers", path);
        nb_status st = nb_cfg_bitmap_rules(src, fp, cJSON_GetObjectItemCaseSensitive(v, "layers"), scratch,
                                           NB_QUANT_MAX_RULES, &n);
        nb_free(scratch);
        if (st != NB_OK) return st;
    } else if (!cJSON_IsString(v)) {
        return bad_value(src, path, "a bitmap file name (or {\"file\": ..., \"layers\": {...}})", v, NULL);
    }
    if (strlen(file->valuestring) >= sizeof b->path) {
        char expected[64];
        snprintf(expected, sizeof expected, "a file name of at most %zu bytes", sizeof b->path - 1);
        return bad_value(src, file == v ? path : fp, expected, file, NULL);
    }
    snprintf(b->path, sizeof b->path, "%s", file->valuestring);
    return NB_OK;
}

/* Check v against k and store it in c. */
static nb_status apply_value(const char *src, const char *path, const nb_cfg_key *k, const cJSON *v,
                             nb_config *c) {
    char *f = (char *)c + k->off;
    char expected[256];
    double d;
    nb_status st;
    switch (k->kind) {
    case NB_CFG_OBJECT:
        if (!cJSON_IsObject(v)) return bad_value(src, path, "an object", v, NULL);
        return apply_object(src, v, path, c);
    case NB_CFG_AUGMENT:
        if (cJSON_IsFalse(v)) {
            *(int *)f = 0;
            return NB_OK;
        }
        if (!cJSON_IsObject(v)) return bad_value(src, path, "false or an object", v, NULL);
        *(int *)f = 1;
        return apply_object(src, v, path, c);
    case NB_CFG_QRULES: return apply_rules(src, path, k, v, c);
    case NB_CFG_BITMAP: return apply_bitmap(src, path, k, v, c);
    case NB_CFG_INT:
    case NB_CFG_LONG:
    case NB_CFG_U64:
    case NB_CFG_FLOAT:
    case NB_CFG_DOUBLE:
        if ((st = get_number(src, path, k, v, &d)) != NB_OK) return st;
        if (k->kind == NB_CFG_INT) *(int *)f = (int)d;
        if (k->kind == NB_CFG_LONG) *(long *)f = (long)d;
        if (k->kind == NB_CFG_U64) *(uint64_t *)f = (uint64_t)d;
        if (k->kind == NB_CFG_FLOAT) *(float *)f = (float)d;
        if (k->kind == NB_CFG_DOUBLE) *(double *)f = d;
        return NB_OK;
    case NB_CFG_BOOL:
        if (!cJSON_IsBool(v)) return bad_value(src, path, "true or false", v, NULL);
        *(int *)f = cJSON_IsTrue(v) ? 1 : 0;
        return NB_OK;
    case NB_CFG_STRING:
        if (!cJSON_IsString(v)) return bad_value(src, path, "a string", v, NULL);
        if ((k->flags & NB_CFG_NONEMPTY) && !v->valuestring[0])
            return bad_value(src, path, "a non-empty string", v, NULL);
        if (strlen(v->valuestring) >= k->size) {
            snprintf(expected, sizeof expected, "a string of at most %zu bytes", k->size - 1);
            return bad_value(src, path, expected, v, NULL);
        }
        strncpy(f, v->valuestring, k->size);
        return NB_OK;
    case NB_CFG_ENUM:
    case NB_CFG_CHAR: return set_choice(src, path, k, k->names, v, f);
    case NB_CFG_ARCH: return set_choice(src, path, k, nb_model_archs(), v, f);
    case NB_CFG_PAIR: {
        char range[96];
        nb_cfg_range(k, range, sizeof range);
        snprintf(expected, sizeof expected, "an array of 2 numbers, each %s", range);
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2) return bad_value(src, path, expected, v, NULL);
        float pair[2];
        for (int i = 0; i < 2; i++) {
            if (get_number(src, path, k, cJSON_GetArrayItem(v, i), &d) != NB_OK)
                return bad_value(src, path, expected, v, NULL);
            pair[i] = (float)d;
        }
        *(float *)f = pair[0];
        *(float *)((char *)c + k->off2) = pair[1];
        return NB_OK;
    }
    case NB_CFG_MILESTONES: {
        char range[96];
        nb_cfg_range(k, range, sizeof range);
        snprintf(expected, sizeof expected, "an increasing array of at most %d numbers %s",
                 NB_SCHED_MAX_MILESTONES, range);
        int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
        if (n < 0 || n > NB_SCHED_MAX_MILESTONES) return bad_value(src, path, expected, v, NULL);
        double m[NB_SCHED_MAX_MILESTONES] = {0};
        for (int i = 0; i < n; i++) {
            if (get_number(src, path, k, cJSON_GetArrayItem(v, i), &m[i]) != NB_OK || (i && !(m[i] > m[i - 1])))
                return bad_value(src, path, expected, v, NULL);
        }
        memcpy(f, m, sizeof m);
        *(int *)((char *)c + k->off2) = n;
        return NB_OK;
    }
    case NB_CFG_KIND_COUNT: break;
    }
    return nb_set_error(NB_STATUS_INTERNAL, "%s: %s: bad schema entry", src, path);
}

/* Check every key of obj (at `prefix`, "" for the top) and store it in c. */
static nb_status apply_object(const char *src, const cJSON *obj, const char *prefix, nb_config *c) {
    for (const cJSON *it = obj->child; it; it = it->next) {
        char path[KEY_MAX];
        int len = snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", it->string);
        if (repeats_key(obj, it)) return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: duplicate key", src, path);
        const nb_cfg_key *k = len < (int)sizeof path ? nb_cfg_find(path) : NULL;
        if (!k) {
            if (!prefix[0] && strcmp(it->string, "extends") == 0)
                return nb_set_error(NB_STATUS_BAD_INPUT, "%s: extends: can only be given in a file", src);
            const char *near = nb_cfg_suggest(prefix, it->string);
            if (near)
                return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: unknown key (did you mean \"%s\"?)", src, path,
                                    near);
            return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: unknown key", src, path);
        }
        nb_status st = apply_value(src, path, k, it, c);
        if (st != NB_OK) return st;
    }
    return NB_OK;
}

/* Validate a whole tree on a scratch config (the message names src). */
static nb_status check_tree(const char *src, const cJSON *root) {
    nb_config scratch;
    nb_config_defaults(&scratch);
    return apply_object(src, root, "", &scratch);
}

/* The item at a dotted path, or NULL. */
static const cJSON *lookup(const cJSON *root, const char *path) {
    char buf[KEY_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *node = root;
    char *save = NULL;
    for (char *seg = strtok_r(buf, ".", &save); seg && node; seg = strtok_r(NULL, ".", &save))
        node = cJSON_IsObject(node) ? cJSON_GetObjectItemCaseSensitive(node, seg) : NULL;
    return node;
}

/* ----------------------------------------------------------------- files */

nb_status nb_cfg_parse_object(const char *text, const char *src, cJSON **out) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        int line = 1, col = 1;
        for (const char *p = text; end && p < end && *p; p++) {
            if (*p == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        /* Python's json module writes these by default */
        const char *at = end ? end + strspn(end, " \t\r\n-") : "";
        const int nonfinite = !strncmp(at, "NaN", 3) || !strncmp(at, "nan", 3) || !strncmp(at, "Infinity", 8) ||
                              !strncmp(at, "inf", 3);
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: invalid JSON at line %d, column %d%s", src, line, col,
                            nonfinite ? " (NaN and Infinity are not JSON numbers)" : "");
    }
    if (!cJSON_IsObject(root)) {
        nb_status st = bad_value(src, "(top level)", "an object", root, NULL);
        cJSON_Delete(root);
        return st;
    }
    *out = root;
    return NB_OK;
}

char *nb_cfg_read_text(const char *path, const char *context, nb_status *st) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (!f) goto fail;
    for (;;) {
        if (cap - len < 4096) {
            char *nb = nb_realloc(buf, cap = cap ? 2 * cap : 8192);
            if (!nb) {
                nb_free(buf);
                fclose(f);
                *st = NB_STATUS_OOM;
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0) break;
    }
    if (ferror(f)) goto fail;
    fclose(f);
    buf[len] = '\0';
    return buf;
fail: {
    int e = errno;
    if (f) fclose(f);
    nb_free(buf);
    *st = nb_set_error(NB_STATUS_IO, "%s%scannot read %s: %s", context ? context : "", context ? ": " : "", path,
                 strerror(e));
    return NULL;
}
}

/* Merge child into base key by key: objects merge recursively, any other
 * child value replaces the base's. Consumes child's items. */
static void merge(cJSON *base, cJSON *child) {
    cJSON *it = child->child;
    while (it) {
        cJSON *next = it->next;
        cJSON_DetachItemViaPointer(child, it);
        cJSON *b = cJSON_GetObjectItemCaseSensitive(base, it->string);
        if (b && cJSON_IsObject(b) && cJSON_IsObject(it)) {
            merge(b, it);
            cJSON_Delete(it);
        } else if (b) {
            cJSON_ReplaceItemViaPointer(base, b, it);
        } else {
            cJSON_AddItemToObject(base, it->string, it);
        }
        it = next;
    }
}

static nb_status load_file(const char *path, const char *context, chain *ch, cJSON **out);

/* text (named src; "extends" relative to dir, "" = working dir) -> checked
 * tree with its bases merged in. */
static nb_status tree_from_text(const char *text, const char *src, const char *dir, chain *ch, cJSON **out) {
    cJSON *root = NULL;
    nb_status st = nb_cfg_parse_object(text, src, &root);
    if (st != NB_OK) return st;
    cJSON *ext = cJSON_DetachItemFromObjectCaseSensitive(root, "extends");
    if ((st = check_tree(src, root)) != NB_OK) goto fail;
    if (ext) {
        if (!cJSON_IsString(ext) || !ext->valuestring[0]) {
            st = bad_value(src, "extends", "a file name", ext, NULL);
            goto fail;
        }
        char base_path[NB_CFG_PATH_MAX];
        const char *e = ext->valuestring;
        if (snprintf(base_path, sizeof base_path, "%s%s", e[0] == '/' ? "" : dir, e) >= (int)sizeof base_path) {
            st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: extends: path too long", src);
            goto fail;
        }
        char context[NB_CFG_PATH_MAX + 16];
        snprintf(context, sizeof context, "%s: extends", src);
        cJSON *base;
        if ((st = load_file(base_path, context, ch, &base)) != NB_OK) goto fail;
        merge(base, root);
        cJSON_Delete(root);
        root = base;
    }
    cJSON_Delete(ext);
    *out = root;
    return NB_OK;
fail:
    cJSON_Delete(ext);
    cJSON_Delete(root);
    return st;
}

static nb_status load_file(const char *path, const char *context, chain *ch, cJSON **out) {
    char *real = realpath(path, NULL);
    if (real) {
        for (int i = 0; i < ch->n; i++) {
            if (strcmp(ch->real[i], real) != 0) continue;
            char cycle[2048];
            size_t len = 0;
            for (int j = i; j < ch->n && len < sizeof cycle; j++)
                len += (size_t)snprintf(cycle + len, sizeof cycle - len, "%s -> ", ch->shown[j]);
            if (len < sizeof cycle) snprintf(cycle + len, sizeof cycle - len, "%s", path);
            free(real);
            return nb_set_error(NB_STATUS_BAD_INPUT, "%s: cycle: %s", context, cycle);
        }
    }
    if (ch->n == MAX_EXTENDS) {
        free(real);
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: more than %d files in the extends chain", context,
                            MAX_EXTENDS);
    }
    snprintf(ch->real[ch->n], NB_CFG_PATH_MAX, "%s", real ? real : path);
    snprintf(ch->shown[ch->n], NB_CFG_PATH_MAX, "%s", path);
    free(real);
    ch->n++;
    nb_status st = NB_STATUS_IO;
    char *text = nb_cfg_read_text(path, context, &st);
    if (text) {
        char dir[NB_CFG_PATH_MAX];
        const char *slash = strrchr(path, '/');
        int dl = slash ? (int)(slash - path) + 1 : 0;
        snprintf(dir, sizeof dir, "%.*s", dl, path);
        st = tree_from_text(text, path, dir, ch, out);
        nb_free(text);
    }
    ch->n--;
    return st;
}

/* ------------------------------------------------------------- overrides */

/* Set "a.b.c=value" in root, creating objects on the way (a non-object in
 * the way is replaced). The value is JSON when it parses, else a string.
 * "extends=..." is let through: the check_tree after each override rejects
 * a top-level "extends" with the override's name. */
static nb_status apply_override(cJSON *root, const char *ov, const char *src) {
    const char *eq = strchr(ov, '=');
    if (!eq || eq == ov) return nb_set_error(NB_STATUS_BAD_INPUT, "%s: expected KEY.PATH=VALUE", src);
    char key[KEY_MAX];
    if (eq - ov >= (int)sizeof key) return nb_set_error(NB_STATUS_BAD_INPUT, "%s: key path too long", src);
    memcpy(key, ov, (size_t)(eq - ov));
    key[eq - ov] = '\0';
    if (key[0] == '.' || key[strlen(key) - 1] == '.' || strstr(key, ".."))
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: \"%s\" is not a key path", src, key);
    cJSON *value = cJSON_ParseWithOpts(eq + 1, NULL, 1);
    if (!value) value = cJSON_CreateString(eq + 1);
    if (!value) return nb_set_error(NB_STATUS_OOM, "%s: out of memory", src);
    cJSON *node = root;
    char *seg = key;
    for (char *dot; (dot = strchr(seg, '.')); seg = dot + 1) {
        *dot = '\0';
        cJSON *child = cJSON_GetObjectItemCaseSensitive(node, seg);
        if (!child || !cJSON_IsObject(child)) {
            cJSON *obj = cJSON_CreateObject();
            if (!obj || !(child ? cJSON_ReplaceItemInObjectCaseSensitive(node, seg, obj)
                                : cJSON_AddItemToObject(node, seg, obj))) {
                cJSON_Delete(obj);
                cJSON_Delete(value);
                return nb_set_error(NB_STATUS_OOM, "%s: out of memory", src);
            }
            child = obj;
        }
        node = child;
    }
    cJSON *old = cJSON_GetObjectItemCaseSensitive(node, seg);
    if (!(old ? cJSON_ReplaceItemInObjectCaseSensitive(node, seg, value)
              : cJSON_AddItemToObject(node, seg, value))) {
        cJSON_Delete(value);
        return nb_set_error(NB_STATUS_OOM, "%s: out of memory", src);
    }
    return NB_OK;
}

/* ------------------------------------------------------------ the config */

/* quant.bitmap's layers (from its file, or from the resolved object) as
 * weight-bit rules placed before quant.layers' own, which still override
 * them. */
static nb_status resolve_bitmap(const char *src, const cJSON *root, nb_config *c) {
    const cJSON *v = lookup(root, "quant.bitmap");
    if (!v || (cJSON_IsString(v) && !v->valuestring[0])) return NB_OK;
    nb_qrule *rules = nb_malloc(NB_QUANT_MAX_RULES * sizeof *rules);
    if (!rules) return NB_STATUS_OOM;
    char context[NB_CFG_PATH_MAX + 32];
    snprintf(context, sizeof context, "%s: quant.bitmap", src);
    int n = 0;
    nb_status st = cJSON_IsString(v) ? nb_cfg_bitmap_read(context, v->valuestring, rules, NB_QUANT_MAX_RULES, &n)
                                     : nb_cfg_bitmap_rules(src, "quant.bitmap.layers",
                                                           cJSON_GetObjectItemCaseSensitive(v, "layers"), rules,
                                                           NB_QUANT_MAX_RULES, &n);
    nb_quant_policy *q = &c->quant;
    if (st == NB_OK && n + q->n_rules > NB_QUANT_MAX_RULES)
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: its %d layers and the %d rules of quant.layers make more than %d "
                          "rules", context, n, q->n_rules, NB_QUANT_MAX_RULES);
    if (st == NB_OK && !strcmp(q->weights.method, "none"))
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: sets weight bits, but quant.weights.method is \"none\" (set "
                          "a method, e.g. \"lsq\" or \"uniform\")", context);
    if (st == NB_OK) {
        memmove(q->rules + n, q->rules, (size_t)q->n_rules * sizeof *q->rules);
        memcpy(q->rules, rules, (size_t)n * sizeof *rules);
        q->n_rules += n;
        c->bitmap.n_rules = n;
    }
    nb_free(rules);
    return st;
}

/* Overrides, required keys, derived defaults; consumes root. src names the
 * config in messages; "name" defaults to the base name of `stem` without
 * ".json" ("run" when that is empty). */
static nb_status finish(cJSON *root, const char *src, const char *stem, const char *source_file,
                        const char *const *overrides, int n, nb_config *out) {
    nb_status st = NB_OK;
    nb_config c;
    for (int i = 0; i < n && st == NB_OK; i++) {
        char name[KEY_MAX + 8];
        snprintf(name, sizeof name, "--set %s", overrides[i]);
        st = apply_override(root, overrides[i], name);
        if (st == NB_OK) st = check_tree(name, root);
    }
    if (st != NB_OK) goto done;
    nb_config_defaults(&c);
    if ((st = apply_object(src, root, "", &c)) != NB_OK) goto done;
    if ((st = resolve_bitmap(src, root, &c)) != NB_OK) goto done;
    for (int i = 0; i < nb_cfg_n_keys; i++) {
        const nb_cfg_key *k = &nb_cfg_keys[i];
        if ((k->flags & NB_CFG_REQUIRED) && !lookup(root, k->path)) {
            st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: required key is missing", src, k->path);
            goto done;
        }
    }
    const nb_optimizer_config *o = &c.train.optimizer;
    if (o->nesterov && (o->momentum <= 0 || o->dampening != 0)) {
        st = nb_set_error(NB_STATUS_BAD_INPUT,
                          "%s: train.optimizer.nesterov: needs momentum > 0 and dampening 0", src);
        goto done;
    }
    if (c.quant.first_bits == 1 || c.quant.last_bits == 1) {
        st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: quant.%s_layer_bits: expected 0 (as the rest) or 2..8, got 1",
                          src, c.quant.first_bits == 1 ? "first" : "last");
        goto done;
    }
    snprintf(c.quant.activations.granularity, sizeof c.quant.activations.granularity, "tensor");
    if (!c.name[0]) {
        /* base name without ".json" */
        const char *base = strrchr(stem, '/') ? strrchr(stem, '/') + 1 : stem;
        size_t len = strlen(base);
        if (len > 5 && strcmp(base + len - 5, ".json") == 0) len -= 5;
        if (len >= sizeof c.name) len = sizeof c.name - 1;
        memcpy(c.name, base, len);
        if (!len) strcpy(c.name, "run");
    }
    if (!c.output.dir[0]) snprintf(c.output.dir, sizeof c.output.dir, "runs/%s", c.name);
    if (!c.output.steps_every) c.output.steps_every = c.train.log_every;
    snprintf(c.source, sizeof c.source, "%s", source_file);
    memcpy(out, &c, sizeof c);
done:
    cJSON_Delete(root);
    return st;
}

nb_status nb_config_load(const char *path, const char *const *overrides, int n, nb_config *out) {
    if (strlen(path) >= NB_CFG_PATH_MAX)
        return nb_set_error(NB_STATUS_BAD_INPUT, "%.64s...: config path too long", path);
    chain *ch = nb_calloc(1, sizeof *ch);
    if (!ch) return NB_STATUS_OOM;
    cJSON *root = NULL;
    nb_status st = load_file(path, NULL, ch, &root);
    nb_free(ch);
    if (st != NB_OK) return st;
    return finish(root, path, path, path, overrides, n, out);
}

nb_status nb_config_parse(const char *json, const char *name, const char *const *overrides, int n,
                          nb_config *out) {
    const char *src = name ? name : "(string)";
    chain *ch = nb_calloc(1, sizeof *ch);
    if (!ch) return NB_STATUS_OOM;
    cJSON *root = NULL;
    nb_status st = tree_from_text(json, src, "", ch, &root);
    nb_free(ch);
    if (st != NB_OK) return st;
    return finish(root, src, name ? name : "", "", overrides, n, out);
}

/* --------------------------------------------------------------- to_json */

/* Numbers are written as raw text we format, not through cJSON's printer,
 * which prints 15 significant digits and accepts an approximate read-back:
 * %.17g-exact doubles, the shortest decimal that reads back as the same
 * float (0.1, not 0.10000000149011612), and integers as integers. */
static cJSON *double_item(double d) {
    char buf[NB_CFG_NUM_LEN];
    nb_cfg_fmt_double(buf, d);
    return cJSON_CreateRaw(buf);
}

static cJSON *float_item(float f) {
    char buf[40];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return cJSON_CreateRaw(buf);
}

static cJSON *int_item(long long v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    return cJSON_CreateRaw(buf);
}

static cJSON *make_item(const nb_cfg_key *k, const nb_config *c) {
    const char *f = (const char *)c + k->off;
    switch (k->kind) {
    case NB_CFG_OBJECT: return cJSON_CreateObject();
    case NB_CFG_QRULES: {
        cJSON *o = cJSON_CreateObject();
        const nb_qrule *r = (const nb_qrule *)f;
        /* the bitmap's rules come first and are written under quant.bitmap */
        for (int i = c->bitmap.n_rules; o && i < *(const int *)((const char *)c + k->off2); i++) {
            cJSON *e = cJSON_CreateObject();
            if (!e || !cJSON_AddItemToObject(o, r[i].pattern, e)) {
                cJSON_Delete(e);
                cJSON_Delete(o);
                return NULL;
            }
            if (r[i].weight_bits) cJSON_AddItemToObject(e, "weight_bits", int_item(r[i].weight_bits));
            if (r[i].act_bits) cJSON_AddItemToObject(e, "act_bits", int_item(r[i].act_bits));
            if (r[i].weight_method[0]) cJSON_AddStringToObject(e, "weight_method", r[i].weight_method);
            if (r[i].act_method[0]) cJSON_AddStringToObject(e, "act_method", r[i].act_method);
            if (r[i].weight_granularity[0]) cJSON_AddStringToObject(e, "weight_granularity", r[i].weight_granularity);
            if (r[i].group_size) cJSON_AddItemToObject(e, "group_size", int_item(r[i].group_size));
        }
        return o;
    }
    case NB_CFG_BITMAP: {
        /* resolved, so that a checkpoint's config never needs the file again */
        const nb_bitmap_config *b = (const nb_bitmap_config *)f;
        if (!b->path[0]) return cJSON_CreateString("");
        cJSON *o = cJSON_CreateObject(), *l = cJSON_CreateObject();
        if (!o || !l || !cJSON_AddStringToObject(o, "file", b->path) || !cJSON_AddItemToObject(o, "layers", l)) {
            cJSON_Delete(o);
            cJSON_Delete(l);
            return NULL;
        }
        for (int i = 0; i < b->n_rules; i++)
            cJSON_AddItemToObject(l, c->quant.rules[i].pattern, int_item(c->quant.rules[i].weight_bits));
        return o;
    }
    case NB_CFG_AUGMENT: return *(const int *)f ? cJSON_CreateObject() : cJSON_CreateFalse();
    case NB_CFG_INT: return int_item(*(const int *)f);
    case NB_CFG_LONG: return int_item(*(const long *)f);
    case NB_CFG_U64: return int_item((long long)*(const uint64_t *)f); /* <= 2^53 */
    case NB_CFG_FLOAT: return float_item(*(const float *)f);
    case NB_CFG_DOUBLE: return double_item(*(const double *)f);
    case NB_CFG_BOOL: return cJSON_CreateBool(*(const int *)f);
    case NB_CFG_STRING:
    case NB_CFG_ENUM:
    case NB_CFG_ARCH: return cJSON_CreateString(f);
    case NB_CFG_CHAR: return cJSON_CreateString((char[]){*f, '\0'});
    case NB_CFG_PAIR: {
        cJSON *a = cJSON_CreateArray();
        cJSON_AddItemToArray(a, float_item(*(const float *)f));
        cJSON_AddItemToArray(a, float_item(*(const float *)((const char *)c + k->off2)));
        return a;
    }
    case NB_CFG_MILESTONES: {
        cJSON *a = cJSON_CreateArray();
        const double *m = (const double *)f;
        for (int i = 0; a && i < *(const int *)((const char *)c + k->off2); i++)
            cJSON_AddItemToArray(a, double_item(m[i]));
        return a;
    }
    case NB_CFG_KIND_COUNT: break;
    }
    return NULL;
}

char *nb_config_to_json(const nb_config *c) {
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    for (int i = 0; ok && i < nb_cfg_n_keys; i++) {
        const nb_cfg_key *k = &nb_cfg_keys[i];
        const char *dot = strrchr(k->path, '.');
        cJSON *parent = root;
        if (dot) {
            char prefix[KEY_MAX];
            snprintf(prefix, sizeof prefix, "%.*s", (int)(dot - k->path), k->path);
            parent = (cJSON *)lookup(root, prefix);
            if (!cJSON_IsObject(parent)) continue; /* under "augment": false */
        }
        cJSON *item = make_item(k, c);
        ok = item && cJSON_AddItemToObject(parent, dot ? dot + 1 : k->path, item);
        if (!ok) cJSON_Delete(item);
    }
    char *s = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    char *copy = s ? nb_strdup(s) : NULL;
    cJSON_free(s);
    if (!copy) nb_set_error(NB_STATUS_OOM, "nb_config_to_json: out of memory");
    return copy;
}
