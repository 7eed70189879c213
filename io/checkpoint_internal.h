/* Internals shared by checkpoint_read.c and checkpoint_state.c; users
 * include nb_checkpoint.h. Callers hold an nb_h5_quiet scope. Messages
 * name the file, the object and, where one was expected, its type/shape. */
#ifndef NB_CHECKPOINT_INTERNAL_H
#define NB_CHECKPOINT_INTERNAL_H

#include "h5_util.h"
#include "nb_checkpoint.h"

/* Open path read-only and check nb_format and nb_version; *out is the file
 * (the caller closes it) or H5I_INVALID_HID on error. */
nb_status nb_ckpt_open(const char *path, hid_t *out);
/* 1 with a BAD_INPUT message when path exists but is not a regular file. */
int nb_ckpt_not_a_file(const char *path);

/* NB_OK when loc (called `where` in the message, e.g. "the root",
 * "/optim") has attribute name. */
nb_status nb_ckpt_need_attr(const char *path, hid_t loc, const char *where, const char *name);

/* A scalar numeric attribute of class cls (H5T_INTEGER, H5T_FLOAT) read as
 * memory type mtype into out. */
nb_status nb_ckpt_attr_num(const char *path, hid_t loc, const char *where, const char *name,
                           H5T_class_t cls, hid_t mtype, void *out);

/* The float32 dataset <group><name> ("/model/", "fc.bias") of g, which
 * must have shape (ndim, shape), into out (numel floats). `who` ("the
 * model", "the optimizer") names the side that expects the shape. */
nb_status nb_ckpt_read_f32(const char *path, hid_t g, const char *group, const char *name,
                           int ndim, const int *shape, const char *who, float *out);

/* The links of a group that known() rejects: the first one's name (in name
 * order) and their count. */
typedef struct {
    int (*known)(void *user, const char *name);
    void *user;
    char first[128];
    int count;
} nb_ckpt_unknown;

nb_status nb_ckpt_find_unknown(const char *path, hid_t g, const char *group, nb_ckpt_unknown *u);

#endif /* NB_CHECKPOINT_INTERNAL_H */
