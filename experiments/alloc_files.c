/*
 * The files around bit allocation (nb_alloc_files.h): the sensitivity file
 * (read, strictly), the bitmap (written by `nibble allocate`, read for a
 * config's quant.bitmap). With config.c, the files that include cJSON: the
 * file reading and parse errors are config.c's (config_internal.h).
 */
#include <cjson/cJSON.h>

#include <math.h>
#include <string.h>

#include "config_internal.h"
#include "nb_alloc_files.h"
#include "run_internal.h"

static const char *const metrics[] = {"hessian", "fisher", "loss_delta", NULL};
static const char *const roles[] = {"first", "last", "hidden", NULL};

/* "SRC: KEY: expected WHAT, got V" (or "required key is missing"). */
static nb_status expected(const char *src, const char *key, const char *what, const cJSON *v) {
    if (!v) return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: required key is missing (expected %s)", src, key, what);
    char got[80];
    if (cJSON_IsNumber(v) && !isfinite(v->valuedouble)) /* cJSON shows 1e999 as null */
        snprintf(got, sizeof got, "a number beyond the range of a double");
    else
        nb_cfg_show(v, got, sizeof got);
    return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: expected %s, got %s", src, key, what, got);
}

/* A repeated key among obj's members (cJSON keeps both). */
static nb_status no_repeats(const char *src, const char *prefix, const cJSON *obj) {
    for (const cJSON *it = obj->child; it; it = it->next)
        for (const cJSON *prev = obj->child; prev != it; prev = prev->next)
            if (!strcmp(prev->string, it->string))
                return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s%s%s: duplicate key", src, prefix,
                                    prefix[0] ? "." : "", it->string);
    return NB_OK;
}

/* v is an integer in [lo, hi]. */
static int is_int_in(const cJSON *v, double lo, double hi) {
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble == floor(v->valuedouble) &&
           v->valuedouble >= lo && v->valuedouble <= hi;
}

/* A string member of at most size - 1 bytes, one of names when given. */
static nb_status get_string(const char *src, const cJSON *obj, const char *key, const char *shown,
                            const char *const *names, char *dst, size_t size) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    char what[128];
    size_t len = names ? (size_t)snprintf(what, sizeof what, "one of ")
                       : (size_t)snprintf(what, sizeof what, "a string of at most %zu bytes", size - 1);
    for (int k = 0; names && names[k] && len < sizeof what; k++)
        len += (size_t)snprintf(what + len, sizeof what - len, "%s\"%s\"", k ? ", " : "", names[k]);
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= size) return expected(src, shown, what, v);
    if (names) {
        int k = 0;
        while (names[k] && strcmp(names[k], v->valuestring)) k++;
        if (!names[k]) return expected(src, shown, what, v);
    }
    if (dst) snprintf(dst, size, "%s", v->valuestring);
    return NB_OK;
}

/* ------------------------------------------------------- sensitivity file */

static nb_status read_layer(const char *src, const cJSON *v, int i, const nb_sensitivity *s, nb_sens_layer *y) {
    char key[64];
    snprintf(key, sizeof key, "layers[%d]", i);
    if (!cJSON_IsObject(v)) return expected(src, key, "an object with name, params, role and omega", v);
    nb_status st = no_repeats(src, key, v);
    if (st != NB_OK) return st;
    char shown[96];
    snprintf(shown, sizeof shown, "%s.name", key);
    if ((st = get_string(src, v, "name", shown, NULL, y->name, sizeof y->name)) != NB_OK) return st;
    if (!y->name[0]) return expected(src, shown, "a layer name", cJSON_GetObjectItemCaseSensitive(v, "name"));
    for (int k = 0; k < i; k++)
        if (!strcmp(s->layers[k].name, y->name))
            return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: \"%s\" repeats layers[%d]", src, shown, y->name, k);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(v, "params");
    snprintf(shown, sizeof shown, "%s.params", key);
    if (!is_int_in(p, 1, 1125899906842624.0)) return expected(src, shown, "an integer in [1, 2^50]", p);
    y->params = (int64_t)p->valuedouble;
    snprintf(shown, sizeof shown, "%s.role", key);
    if ((st = get_string(src, v, "role", shown, roles, y->role, sizeof y->role)) != NB_OK) return st;
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(v, "omega");
    snprintf(shown, sizeof shown, "%s.omega", key);
    char what[96];
    snprintf(what, sizeof what, "an array of %d numbers, one per candidate", s->n_candidates);
    if (!cJSON_IsArray(o) || cJSON_GetArraySize(o) != s->n_candidates) return expected(src, shown, what, o);
    int j = 0;
    for (const cJSON *e = o->child; e; e = e->next, j++) {
        snprintf(shown, sizeof shown, "%s.omega[%d]", key, j);
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || e->valuedouble < 0)
            return expected(src, shown, "a finite number >= 0", e);
        y->omega[j] = e->valuedouble;
    }
    return NB_OK;
}

static nb_status read_sensitivity(const char *src, const cJSON *root, nb_sensitivity *s) {
    nb_status st = no_repeats(src, "", root);
    if (st != NB_OK) return st;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(f) || strcmp(f->valuestring, NB_SENSITIVITY_FORMAT) != 0)
        return expected(src, "format", "\"" NB_SENSITIVITY_FORMAT "\" (a file `nibble sensitivity` writes)", f);
    if ((st = get_string(src, root, "arch", "arch", NULL, s->arch, sizeof s->arch)) != NB_OK ||
        (st = get_string(src, root, "config", "config", NULL, NULL, NB_CFG_PATH_MAX)) != NB_OK ||
        (st = get_string(src, root, "checkpoint", "checkpoint", NULL, NULL, NB_CFG_PATH_MAX)) != NB_OK ||
        (st = get_string(src, root, "metric", "metric", metrics, s->metric, sizeof s->metric)) != NB_OK)
        return st;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "candidates");
    const int K = cJSON_IsArray(c) ? cJSON_GetArraySize(c) : 0;
    if (K < 1 || K > NB_ALLOC_MAX_CANDIDATES)
        return expected(src, "candidates", "an array of 1..8 ascending bit widths", c);
    s->n_candidates = 0;
    for (const cJSON *e = c->child; e; e = e->next) {
        char key[32];
        const int j = s->n_candidates;
        snprintf(key, sizeof key, "candidates[%d]", j);
        if (!is_int_in(e, 1, 8)) return expected(src, key, "an integer in [1, 8]", e);
        if (j && e->valuedouble <= s->candidates[j - 1]) {
            char what[64];
            snprintf(what, sizeof what, "more than candidates[%d] = %d (ascending)", j - 1, s->candidates[j - 1]);
            return expected(src, key, what, e);
        }
        s->candidates[s->n_candidates++] = (int)e->valuedouble;
    }
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(root, "layers");
    const int L = cJSON_IsArray(ls) ? cJSON_GetArraySize(ls) : 0;
    if (L < 1) return expected(src, "layers", "a non-empty array of layers", ls);
    if (!(s->layers = nb_calloc((size_t)L, sizeof *s->layers))) return NB_STATUS_OOM;
    for (const cJSON *e = ls->child; e; e = e->next, s->n_layers++)
        if ((st = read_layer(src, e, s->n_layers, s, &s->layers[s->n_layers])) != NB_OK) return st;
    return NB_OK;
}

nb_status nb_sensitivity_load(const char *path, nb_sensitivity *out) {
    nb_status st = NB_OK;
    char *text = nb_cfg_read_text(path, NULL, &st);
    if (!text) return st;
    cJSON *root = NULL;
    nb_sensitivity s = {0};
    st = nb_cfg_parse_object(text, path, &root);
    nb_free(text);
    if (st == NB_OK) st = read_sensitivity(path, root, &s);
    cJSON_Delete(root);
    if (st != NB_OK) {
        nb_sensitivity_deinit(&s);
        return st;
    }
    *out = s;
    return NB_OK;
}

void nb_sensitivity_deinit(nb_sensitivity *s) {
    nb_free(s->layers);
    s->layers = NULL;
    s->n_layers = 0;
}

/* ------------------------------------------------------------------ bitmap */

static cJSON *number(double v) {
    char buf[NB_CFG_NUM_LEN];
    nb_cfg_fmt_double(buf, v);
    return cJSON_CreateRaw(buf);
}

nb_status nb_bitmap_save(const char *path, const nb_bitmap *b) {
    cJSON *root = cJSON_CreateObject(), *layers = cJSON_CreateObject();
    int ok = root && layers && cJSON_AddStringToObject(root, "format", NB_BITMAP_FORMAT) &&
             cJSON_AddStringToObject(root, "source", b->source) && cJSON_AddStringToObject(root, "metric", b->metric) &&
             cJSON_AddStringToObject(root, "method", b->method) &&
             cJSON_AddItemToObject(root, "avg_bits_budget", number(b->avg_bits_budget)) &&
             cJSON_AddItemToObject(root, "avg_bits", number(b->avg_bits)) &&
             cJSON_AddStringToObject(root, "convention", b->convention) &&
             cJSON_AddItemToObject(root, "weight_bytes", number(b->weight_bytes));
    for (int i = 0; ok && i < b->n; i++) ok = cJSON_AddItemToObject(layers, b->names[i], cJSON_CreateNumber(b->bits[i]));
    if (ok) {
        ok = cJSON_AddItemToObject(root, "layers", layers);
        if (ok) layers = NULL; /* root owns it */
    }
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(layers);
    cJSON_Delete(root);
    if (!text) return nb_set_error(NB_STATUS_OOM, "%s: out of memory writing the bitmap", path);
    const size_t n = strlen(text);
    char *line = nb_malloc(n + 2);
    nb_status st = NB_STATUS_OOM;
    if (line) {
        memcpy(line, text, n);
        memcpy(line + n, "\n", 2);
        st = nb_run_write_text(path, line);
    }
    cJSON_free(text);
    nb_free(line);
    return st;
}

nb_status nb_cfg_bitmap_rules(const char *src, const char *key, const cJSON *layers, nb_qrule *rules, int max,
                              int *n) {
    if (!cJSON_IsObject(layers)) return expected(src, key, "an object of layer name -> weight bits", layers);
    nb_status st = no_repeats(src, key, layers);
    if (st != NB_OK) return st;
    int k = 0;
    for (const cJSON *it = layers->child; it; it = it->next, k++) {
        char shown[NB_LAYER_NAME_MAX + 128];
        snprintf(shown, sizeof shown, "%s.\"%.*s\"", key, NB_LAYER_NAME_MAX, it->string);
        if (k == max) return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: more than %d layers", src, key, max);
        if (!it->string[0] || strlen(it->string) >= sizeof rules[k].pattern)
            return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: a layer name of 1..%zu bytes", src, shown,
                                sizeof rules[k].pattern - 1);
        if (strpbrk(it->string, "*?[]"))
            return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: an exact layer name, not a glob", src, shown);
        if (!is_int_in(it, 1, 8)) return expected(src, shown, "an integer in [1, 8] (weight bits)", it);
        memset(&rules[k], 0, sizeof rules[k]);
        snprintf(rules[k].pattern, sizeof rules[k].pattern, "%s", it->string);
        rules[k].weight_bits = (int)it->valuedouble;
    }
    if (!k) return nb_set_error(NB_STATUS_BAD_INPUT, "%s: %s: no layers", src, key);
    *n = k;
    return NB_OK;
}

nb_status nb_cfg_bitmap_read(const char *context, const char *path, nb_qrule *rules, int max, int *n) {
    nb_status st = NB_OK;
    char *text = nb_cfg_read_text(path, context, &st);
    if (!text) return st;
    char src[2 * NB_CFG_PATH_MAX + 32];
    snprintf(src, sizeof src, "%s: %s", context, path);
    cJSON *root = NULL;
    st = nb_cfg_parse_object(text, src, &root);
    nb_free(text);
    if (st == NB_OK) st = no_repeats(src, "", root);
    if (st == NB_OK) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "format");
        if (!cJSON_IsString(f) || strcmp(f->valuestring, NB_BITMAP_FORMAT) != 0)
            st = expected(src, "format", "\"" NB_BITMAP_FORMAT "\" (a file `nibble allocate` writes)", f);
    }
    if (st == NB_OK) st = nb_cfg_bitmap_rules(src, "layers", cJSON_GetObjectItemCaseSensitive(root, "layers"), rules, max, n);
    cJSON_Delete(root);
    return st;
}
