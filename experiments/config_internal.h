/*
 * config_internal.h — the config schema shared by config.c (the cJSON side)
 * and config_schema.c (the table, defaults and key-name helpers), and the
 * JSON file helpers config.c shares with alloc_files.c (quant.bitmap).
 * Users include nb_config.h, never this.
 */
#ifndef NB_CONFIG_INTERNAL_H
#define NB_CONFIG_INTERNAL_H

#include <stddef.h>

#include <stdio.h>
#include <stdlib.h>

#include "nb_config.h"

typedef enum {
    NB_CFG_OBJECT,     /* a nested object; its keys follow in the table */
    NB_CFG_INT,        /* int field */
    NB_CFG_LONG,       /* long field */
    NB_CFG_U64,        /* uint64_t field (exact up to 2^53) */
    NB_CFG_FLOAT,      /* float field */
    NB_CFG_DOUBLE,     /* double field */
    NB_CFG_BOOL,       /* int field, 0 | 1 */
    NB_CFG_STRING,     /* char[size] field */
    NB_CFG_ENUM,       /* char[size] field, one of names */
    NB_CFG_CHAR,       /* char field, one of names (each one character) */
    NB_CFG_ARCH,       /* char[size] field, one of nb_model_archs() */
    NB_CFG_PAIR,       /* two float fields (off, off2), each in the range */
    NB_CFG_MILESTONES, /* double[NB_SCHED_MAX_MILESTONES] at off, count (int) at off2 */
    NB_CFG_AUGMENT,    /* false | object; int flag at off */
    NB_CFG_QRULES,     /* quant.layers: {"pattern": {...}}; nb_qrule[] at off, count (int) at off2 */
    NB_CFG_BITMAP,     /* quant.bitmap: a path or {"file", "layers"}; nb_bitmap_config at off */
    NB_CFG_KIND_COUNT
} nb_cfg_kind;

/* Range flags. */
enum {
    NB_CFG_MIN = 1u << 0,      /* value >= min */
    NB_CFG_MIN_EXCL = 1u << 1, /* value > min (with NB_CFG_MIN) */
    NB_CFG_MAX = 1u << 2,      /* value <= max */
    NB_CFG_MAX_EXCL = 1u << 3, /* value < max (with NB_CFG_MAX) */
    NB_CFG_REQUIRED = 1u << 4, /* must be present after extends and --set */
    NB_CFG_NONEMPTY = 1u << 5, /* strings: "" is not allowed */
};

typedef struct {
    const char *path;  /* full dotted key path; parents precede their keys */
    nb_cfg_kind kind;
    size_t off, size;  /* field offset in nb_config and its size */
    size_t off2;       /* NB_CFG_PAIR: second field; NB_CFG_MILESTONES: count */
    unsigned flags;
    double min, max;
    double def, def2;  /* number/bool defaults (def2: second of a pair) */
    const char *sdef;  /* string/enum default */
    const char *const *names; /* NB_CFG_ENUM / NB_CFG_CHAR choices, NULL-terminated */
} nb_cfg_key;

extern const nb_cfg_key nb_cfg_keys[];
/* The quant choices, shared by the schema rows and the quant.layers rules. */
extern const char *const nb_cfg_weight_methods[], *const nb_cfg_act_methods[], *const nb_cfg_granularities[];
extern const int nb_cfg_n_keys;

/* ------------------------------------------------ JSON files (config.c) */

struct cJSON;
/* The whole file, NUL-terminated and nb_malloc'ed, or NULL with *st set:
 * NB_STATUS_IO ("cannot read PATH: why", after `context` when not NULL) or
 * NB_STATUS_OOM. */
char *nb_cfg_read_text(const char *path, const char *context, nb_status *st);
/* text -> a cJSON object (*out, owned; cJSON_Delete). NB_STATUS_BAD_INPUT
 * "SRC: invalid JSON at line L, column C" or a top level that is not an
 * object. */
nb_status nb_cfg_parse_object(const char *text, const char *src, struct cJSON **out);
/* v as compact JSON for a message, shortened past 60 characters. */
void nb_cfg_show(const struct cJSON *v, char *buf, size_t n);

/* ------------------------------------- quant.bitmap (alloc_files.c) */

/* A bitmap's "layers" object ({"NAME": BITS}, BITS in 1..8, exact layer
 * names) -> *n weight-bit rules (other fields zero) in file order, at most
 * max. Messages are "SRC: KEY.\"NAME\": what". */
nb_status nb_cfg_bitmap_rules(const char *src, const char *key, const struct cJSON *layers, nb_qrule *rules,
                              int max, int *n);
/* The same from the nibble-bitmap-1 file at path; messages name the file,
 * after `context` ("CFG: quant.bitmap"). */
nb_status nb_cfg_bitmap_read(const char *context, const char *path, nb_qrule *rules, int max, int *n);

/* The entry for a full key path, or NULL. */
const nb_cfg_key *nb_cfg_find(const char *path);
/* The key among the children of `parent` ("" for the top level) closest to
 * `key` by edit distance (transpositions count one), or NULL when none is
 * within 2 edits. Returns the last path component. */
const char *nb_cfg_suggest(const char *parent, const char *key);
/* Closest of a NULL-terminated list, same rule. */
const char *nb_cfg_suggest_among(const char *const *names, const char *s);
/* The key's range: "> 0", "in [0, 1)", "" when unbounded. */
void nb_cfg_range(const nb_cfg_key *k, char *buf, size_t n);
/* "a number > 0", "an integer in [0, 10]", ... for a numeric key. */
void nb_cfg_describe(const nb_cfg_key *k, char *buf, size_t n);
/* Whether v satisfies the key's range (not its type). */
int nb_cfg_in_range(const nb_cfg_key *k, double v);
/* Whether the key holds an integer (NB_CFG_INT, NB_CFG_LONG, NB_CFG_U64). */
int nb_cfg_is_integer(const nb_cfg_key *k);
/* The shortest %g form of v that reads back as the same double. Inline:
 * an out-of-line copy trips GCC's format-truncation check under the
 * sanitizers (a null-buffer path it invents). */
enum { NB_CFG_NUM_LEN = 40 }; /* room for any %.17g double */
static inline void nb_cfg_fmt_double(char buf[static NB_CFG_NUM_LEN], double v) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, NB_CFG_NUM_LEN, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

#endif
