/* Shared helpers for the Check suites. */
#ifndef NB_TEST_H
#define NB_TEST_H

#include <check.h>

#include "nibble.h"

/* Run a suite (fork mode unless CK_FORK=no), print Check's summary line and
 * return the process exit status (0 when every test passed). */
int nb_test_run(Suite *s);

/* Path of a file in ../shared/data (from $NB_SHARED_DATA) or NULL when it is
 * absent; the returned string is static storage overwritten by the next call. */
const char *nb_test_shared_data(const char *file);

/* Path of the nibble CLI under test ($NB_CLI) or NULL. */
const char *nb_test_cli(void);

/* A fresh temporary directory (static storage, one per process). */
const char *nb_test_tmpdir(void);

/* nb_test_tmpdir()/name, in one of 8 static buffers used in turn (so the
 * result stays valid across the next 7 calls). */
const char *nb_test_tmp_path(const char *name);

/* Report a skipped check on stdout (Check has no skip state). */
void nb_test_skip(const char *what, const char *why);

/* Run a shell command; returns its exit status (or -1), output captured into
 * out (NUL-terminated, truncated to n) when out is not NULL. */
int nb_test_sh(const char *cmd, char *out, size_t n);

/* The quantization suites' small model: smallcnn, width 8, 10 classes,
 * weights from seed 11 (aborts the test on failure). */
nb_model *nb_test_smallcnn(void);
/* The quantizer called name ("features.1.conv.weight") of m; aborts the
 * test when there is none. */
nb_quantizer *nb_test_quantizer(nb_model *m, const char *name);

/* A model for the export tests: arch ("smallcnn", "resnet20", ...; shortcut
 * NB_SHORTCUT_A or B) with weights from seed 11, batchnorm statistics and
 * affine parameters set to random non-trivial values (so folding matters),
 * quantized per p (NULL: FP32; p->fold_bn folds first, as PTQ does),
 * calibrated on 2 batches of 8 random images and trained `steps` SGD steps
 * (lr 0.05) on them; returned in evaluation mode. Aborts the test on failure. */
nb_model *nb_test_export_model(const char *arch, int shortcut, const nb_quant_policy *p, int steps);

/* One row of the export tests' model tables: nb_test_export_model(arch,
 * shortcut, the policy the other fields describe, steps); wmethod "none"
 * gives the FP32 model. */
typedef struct {
    const char *name, *arch;
    int shortcut;
    const char *wmethod, *wgran;
    int wbits, group;           /* group: the group size of granularity "group" */
    const char *amethod;
    int abits, asym, fold, steps;
} nb_test_qcase;

nb_model *nb_test_qcase_model(const nb_test_qcase *c);
/* The policy row c describes (what nb_test_qcase_model quantizes with), for
 * a test that changes a field before nb_test_export_model. */
void nb_test_qcase_policy(const nb_test_qcase *c, nb_quant_policy *p);
#endif
