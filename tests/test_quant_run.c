/* Quantization end to end on the built-in shapes10 data: QAT in nibble
 * train (exact resume of weights and quantizer state), nibble ptq (the
 * result, the checkpoint nibble eval reads back as the quantized network)
 * and the bad inputs ptq must refuse without writing anything. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nb_test.h"

/* smallcnn on shapes10: 600 train / 200 test images, batch 50, 2 epochs. */
static const char *base_json =
    "{\"name\": \"qtiny\", \"seed\": 5, \"threads\": 2,\n"
    " \"data\": {\"path\": \"synthetic:shapes10\", \"train_count\": 600, \"test_count\": 200,\n"
    "          \"augment\": false},\n"
    " \"model\": {\"arch\": \"smallcnn\", \"width\": 8},\n"
    " \"train\": {\"epochs\": 2, \"batch_size\": 50, \"log_every\": 5,\n"
    "   \"optimizer\": {\"name\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9, \"weight_decay\": 5e-4},\n"
    "   \"schedule\": {\"name\": \"cosine\"}}}\n";

static const char *tmp(const char *name) {
    static char buf[4][600];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", nb_test_tmpdir(), name);
    return buf[k];
}

/* Writes tmpdir/name; returns its path (static storage, one per name slot:
 * copy it before the next call). */
static const char *write_file(const char *name, const char *text) {
    static char paths[8][600];
    static int k;
    char *p = paths[k = (k + 1) % 8];
    snprintf(p, 600, "%s", tmp(name));
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static const char *qat_sets[] = {"quant.weights.method=\"uniform\"", "quant.weights.bits=4",
                                 "quant.activations.method=\"uniform\"", "quant.activations.bits=4",
                                 "quant.calibration.batches=3", "quant.calibration.batch_size=40", NULL};
/* LSQ weights per channel, LSQ+ activations (both kinds of learned state) */
static const char *lsq_sets[] = {"quant.weights.method=\"lsq\"", "quant.weights.bits=3",
                                 "quant.activations.method=\"lsq+\"", "quant.activations.bits=3",
                                 "quant.lr_scale=2", NULL};

/* ADQ codebooks per output channel, asymmetric, with a learned global scale
 * and EMA every 2 steps after 3 (all the codebook state), N2UQ activations
 * (thresholds, widths, output scale) */
static const char *adq_sets[] = {"quant.weights.method=\"adq\"", "quant.weights.bits=2",
                                 "quant.weights.symmetric=false", "quant.weights.granularity=\"channel\"",
                                 "quant.adq.learn_scale=true", "quant.adq.ema_period=2", "quant.adq.ema_warmup=3",
                                 "quant.adq.init=\"kmeans\"", "quant.activations.method=\"n2uq\"",
                                 "quant.activations.bits=3", NULL};

/* Trains the tiny config with the sets qs (NULL-terminated) into tmp/dir. */
static nb_status run_quant(const char *dir, const char *const *qs, const char *extra, long stop_after, int resume) {
    nb_config c;
    const char *sets[16];
    char d[700];
    snprintf(d, sizeof d, "output.dir=%s", tmp(dir));
    int n = 0;
    for (int i = 0; qs[i]; i++) sets[n++] = qs[i];
    if (extra) sets[n++] = extra;
    sets[n++] = d;
    ck_assert_msg(nb_config_load(write_file("qtiny.json", base_json), sets, n, &c) == NB_OK, "%s", nb_last_error());
    nb_train_opts o = nb_train_opts_default();
    FILE *devnull = fopen("/dev/null", "w");
    o.progress = devnull;
    o.stop_after_steps = stop_after;
    o.resume_dir = resume ? tmp(dir) : NULL;
    nb_train_result r;
    nb_status st = nb_train(&c, &o, &r);
    fclose(devnull);
    return st;
}

static void run_qat(const char *dir, const char *const *qs, long stop_after, int resume) {
    const nb_status st = run_quant(dir, qs, NULL, stop_after, resume);
    ck_assert_msg(st == (stop_after ? NB_STATUS_INTERRUPTED : NB_OK), "%s", nb_last_error());
}

/* Parameters, buffers and quantizer state of dir/last.h5, through the
 * same loader nibble eval uses. */
static float *state_of(const char *dir, size_t *n) {
    char path[700];
    snprintf(path, sizeof path, "%s/last.h5", tmp(dir));
    nb_config c;
    nb_model *m;
    ck_assert_msg(nb_config_from_checkpoint(path, NULL, 0, &c) == NB_OK &&
                      nb_model_from_config(&c, path, 3, 32, &m) == NB_OK,
                  "%s", nb_last_error());
    ck_assert_ptr_nonnull(m->quant);
    *n = m->n_param_floats + m->n_buffer_floats + m->quant->n_buffer_floats + m->quant->n_param_floats;
    float *s = malloc(sizeof(float) * *n), *p = s;
    memcpy(p, m->param_data, sizeof(float) * m->n_param_floats);
    p += m->n_param_floats;
    memcpy(p, m->buffer_data, sizeof(float) * m->n_buffer_floats);
    p += m->n_buffer_floats;
    memcpy(p, m->quant->buffer_data, sizeof(float) * m->quant->n_buffer_floats);
    p += m->quant->n_buffer_floats;
    memcpy(p, m->quant->param_data, sizeof(float) * m->quant->n_param_floats);
    nb_model_free(m);
    return s;
}

/* A run stopped mid-epoch and resumed ends exactly where the uninterrupted
 * run does: weights, batchnorm, quantizer state and learned steps. */
static void check_resume(const char *const *qs, const char *full, const char *cut) {
    run_qat(full, qs, 0, 0);
    run_qat(cut, qs, 7, 0); /* mid-epoch 1 */
    run_qat(cut, qs, 0, 1);
    size_t na, nb;
    float *a = state_of(full, &na), *b = state_of(cut, &nb);
    ck_assert_int_eq(na, nb);
    for (size_t i = 0; i < na; i++) ck_assert_msg(a[i] == b[i], "state %zu: %.9g vs %.9g", i, (double)a[i], (double)b[i]);
    free(a);
    free(b);
}

START_TEST(test_qat_resume_exact) { check_resume(qat_sets, "qat_full", "qat_cut"); }
END_TEST

START_TEST(test_lsq_resume_exact) { check_resume(lsq_sets, "lsq_full", "lsq_cut"); }
END_TEST

START_TEST(test_adq_resume_exact) {
    check_resume(adq_sets, "adq_full", "adq_cut");
    /* the codebooks moved (EMA ran) and the same seed gives the same run */
    size_t na, nb;
    run_qat("adq_again", adq_sets, 0, 0);
    float *a = state_of("adq_full", &na), *b = state_of("adq_again", &nb);
    ck_assert_int_eq(na, nb);
    ck_assert(!memcmp(a, b, sizeof(float) * na));
    free(a);
    free(b);
}
END_TEST

/* A step size driven to Inf or NaN (its learning rate overflows: 10 x 3e38)
 * stops the run at the first step through the NaN guard, naming the
 * quantizer; the frozen-batchnorm recipe key trains. */
START_TEST(test_lsq_nan_guard) {
    const char *qs[] = {"quant.weights.method=\"lsq\"", "quant.activations.method=\"lsq\"",
                        "quant.activations.bits=2", "quant.lr_scale=3e38", NULL};
    const nb_status st = run_quant("lsq_nan", qs, "train.optimizer.lr=10", 0, 0);
    ck_assert_int_eq(st, NB_STATUS_NUMERIC);
    ck_assert_msg(strstr(nb_last_error(), "step 1 (epoch 1, batch 1): the step size of quantizer ") &&
                      strstr(nb_last_error(), "; stopping. No checkpoint was written yet"),
                  "%s", nb_last_error());
    ck_assert_int_eq(run_quant("lsq_freeze", qs + 2, "train.freeze_bn_epochs=1", 0, 0), NB_OK);
}
END_TEST

static int cli(const char *args, char *out, size_t n) {
    char cmd[8192];
    const int len = snprintf(cmd, sizeof cmd, "%s %s 2>&1", nb_test_cli(), args);
    ck_assert(len > 0 && len < (int)sizeof cmd);
    return nb_test_sh(cmd, out, n);
}

/* A number after "key": in a JSON line. */
static double json_num(const char *s, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\": ", key);
    const char *p = strstr(s, k);
    ck_assert_msg(p != NULL, "no %s in %s", key, s);
    return strtod(p + strlen(k), NULL);
}

static int exists(const char *p) { return access(p, F_OK) == 0; }

/* A one-epoch FP32 run of fp.json on 100 images into tmp/dir; its
 * checkpoint's path into ckpt. */
static void small_fp32(const char *dir, char *ckpt, size_t n) {
    char args[2048], out[1 << 14];
    snprintf(args, sizeof args, "train %s --set output.dir=%s --set train.epochs=1 --set data.train_count=100",
             tmp("fp.json"), tmp(dir));
    ck_assert_msg(cli(args, out, sizeof out) == 0, "%s", out);
    snprintf(ckpt, n, "%s/last.h5", tmp(dir));
}

START_TEST(test_ptq_cli) {
    if (!nb_test_cli()) {
        nb_test_skip("ptq cli", "NB_CLI is not set");
        return;
    }
    static char out[1 << 16];
    char args[4096];
    const char *cfg = write_file("fp.json", base_json);
    /* an FP32 model to quantize */
    snprintf(args, sizeof args, "train %s --set output.dir=%s", cfg, tmp("fp"));
    ck_assert_msg(cli(args, out, sizeof out) == 0, "%.2000s", out);
    char fp_ckpt[700];
    snprintf(fp_ckpt, sizeof fp_ckpt, "%s/last.h5", tmp("fp"));
    const char *ptq = write_file("ptq.json", "{\"extends\": \"fp.json\", \"quant\": {\"weights\": {\"method\": "
                                             "\"uniform\", \"bits\": 3}, \"activations\": {\"method\": \"uniform\", "
                                             "\"bits\": 4, \"observer\": \"mse\"}, \"calibration\": {\"batches\": 4, "
                                             "\"batch_size\": 50}}}");
    snprintf(args, sizeof args, "ptq %s --set init.checkpoint=%s --set output.dir=%s", ptq, fp_ckpt, tmp("q"));
    ck_assert_msg(cli(args, out, sizeof out) == 0, "%.2000s", out);
    ck_assert_msg(strstr(out, "qtiny: test top-1 ") && strstr(out, "FP32 top-1") && strstr(out, "calibration"), "%s", out);
    ck_assert_msg(strstr(out, "features.1.conv") && strstr(out, "3 sym channel"), "per-layer table: %s", out);
    char q_ckpt[700], result[700];
    snprintf(q_ckpt, sizeof q_ckpt, "%s/last.h5", tmp("q"));
    snprintf(result, sizeof result, "cat %s/result.json", tmp("q"));
    static char res[4096], ev[4096], evfp[4096];
    ck_assert_int_eq(nb_test_sh(result, res, sizeof res), 0);
    /* nibble eval of the quantized checkpoint is the quantized network:
     * exactly ptq's figures, and not the FP32 network's */
    snprintf(args, sizeof args, "eval %s --json --batch 256", q_ckpt);
    ck_assert_msg(cli(args, ev, sizeof ev) == 0, "%s", ev);
    snprintf(args, sizeof args, "eval %s --json --batch 256", fp_ckpt);
    ck_assert_msg(cli(args, evfp, sizeof evfp) == 0, "%s", evfp);
    ck_assert_msg(json_num(ev, "loss") == json_num(res, "loss") && json_num(ev, "top1") == json_num(res, "top1"),
                  "eval %s vs ptq %s", ev, res);
    ck_assert_msg(json_num(ev, "loss") != json_num(evfp, "loss"), "the quantized checkpoint evaluates as FP32: %s", ev);
    ck_assert(json_num(res, "fp32_top1") == json_num(evfp, "top1"));
    /* inspect lists the quantizer state and the per-layer table */
    snprintf(args, sizeof args, "inspect %s --no-config", q_ckpt);
    ck_assert_msg(cli(args, out, sizeof out) == 0, "%s", out);
    ck_assert_msg(strstr(out, "quant/features.0.conv.weight/scale") && strstr(out, "x smaller"), "%s", out);
    /* export: the packed file lists its 3-bit layers, and the integer engine
     * on it (or on the checkpoint, exported in memory) agrees with eval */
    snprintf(args, sizeof args, "export %s -o %s/q.nq.h5", q_ckpt, tmp("q"));
    ck_assert_msg(cli(args, out, sizeof out) == 0, "%s", out);
    ck_assert_msg(strstr(out, "wrote ") && strstr(out, "packed"), "%s", out);
    snprintf(args, sizeof args, "inspect %s/q.nq.h5 --no-config", tmp("q"));
    ck_assert_msg(cli(args, out, sizeof out) == 0, "%s", out);
    ck_assert_msg(strstr(out, "uniform 3-bit channel [-4,3]") && strstr(out, "x smaller"), "%s", out);
    static char evi[4096];
    snprintf(args, sizeof args, "eval %s/q.nq.h5 --compare %s --json", tmp("q"), q_ckpt);
    ck_assert_msg(cli(args, evi, sizeof evi) == 0, "%s", evi);
    ck_assert_msg(json_num(evi, "fake_top1") == json_num(ev, "top1") && json_num(evi, "n") == json_num(ev, "n") &&
                      fabs(json_num(evi, "top1") - json_num(ev, "top1")) <= 0.02 &&
                      json_num(evi, "top1_agree") >= 0.97 * json_num(ev, "n"),
                  "%s against %s", evi, ev);
    snprintf(args, sizeof args, "eval %s --engine int --json", q_ckpt);
    static char evc[4096];
    ck_assert_msg(cli(args, evc, sizeof evc) == 0, "%s", evc);
    ck_assert_msg(json_num(evc, "top1") == json_num(evi, "top1") && json_num(evc, "loss") == json_num(evi, "loss"),
                  "in memory %s, from the file %s", evc, evi);
    snprintf(args, sizeof args, "eval %s/q.nq.h5 --engine fake", tmp("q"));
    ck_assert_int_eq(cli(args, out, sizeof out), 2);
    ck_assert_msg(strstr(out, "runs on --engine int only"), "%s", out);
    /* a second run into the same directory is refused */
    snprintf(args, sizeof args, "ptq %s --set init.checkpoint=%s --set output.dir=%s", ptq, fp_ckpt, tmp("q"));
    ck_assert_int_eq(cli(args, out, sizeof out), 2);
    ck_assert_msg(strstr(out, "already exists"), "%s", out);
    /* ptq of a quantized checkpoint is refused */
    snprintf(args, sizeof args, "ptq %s --set init.checkpoint=%s --set output.dir=%s", ptq, q_ckpt, tmp("qq"));
    ck_assert_int_eq(cli(args, out, sizeof out), 2);
    ck_assert_msg(strstr(out, "holds quantizer state") && !exists(tmp("qq")), "%s", out);
}
END_TEST

/* Bad input: exit 2, a message naming the problem, nothing written. */
START_TEST(test_ptq_bad_input) {
    if (!nb_test_cli()) {
        nb_test_skip("ptq bad input", "NB_CLI is not set");
        return;
    }
    static char out[1 << 16];
    char args[4096];
    write_file("fp.json", base_json);
    const char *q = write_file("bad.json", "{\"extends\": \"fp.json\", \"quant\": {\"weights\": {\"method\": "
                                           "\"uniform\", \"bits\": 4}}}");
    struct {
        const char *sets, *msg;
    } cases[] = {
        {"", "init.checkpoint: ptq quantizes a trained FP32 checkpoint"},
        {"--set init.checkpoint=/nonexistent/x.h5", "/nonexistent/x.h5"},
        {"--set init.checkpoint=CORRUPT", "corrupt.h5"},
        {"--set init.checkpoint=OTHERARCH", "HINT: the checkpoint holds a smallcnn, the model is a resnet20"},
        {"--set init.checkpoint=OTHERARCH --set quant.layers={\"layer9.*\":{\"weight_bits\":2}}", ""},
        {"--set quant.weights.bits=12", "quant.weights.bits: expected an integer in [1, 8], got 12"},
        {"--set quant.weights.methd=\"uniform\"", "quant.weights.methd: unknown key (did you mean \"method\"?)"},
        {"--set quant.weights.method=\"none\" --set init.checkpoint=X", "quant: nothing to quantize"},
    };
    const char *corrupt = write_file("corrupt.h5", "this is not an HDF5 file at all\n");
    /* a smallcnn checkpoint for a resnet20 config */
    char fp_ckpt[700];
    small_fp32("fp_small", fp_ckpt, sizeof fp_ckpt);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char sets[1024];
        snprintf(sets, sizeof sets, "%s", cases[i].sets);
        char *p;
        if ((p = strstr(sets, "CORRUPT"))) {
            char rest[1024];
            snprintf(rest, sizeof rest, "%s", p + 7);
            snprintf(p, sizeof sets - (size_t)(p - sets), "%s%s", corrupt, rest);
        }
        if ((p = strstr(sets, "OTHERARCH"))) {
            char rest[1024];
            snprintf(rest, sizeof rest, "%s", p + 9);
            snprintf(p, sizeof sets - (size_t)(p - sets), "%s --set model.arch=resnet20%s", fp_ckpt, rest);
        }
        char dir[64];
        snprintf(dir, sizeof dir, "bad%zu", i);
        snprintf(args, sizeof args, "ptq %s %s --set output.dir=%s", q, sets, tmp(dir));
        const int rc = cli(args, out, sizeof out);
        ck_assert_msg(rc == 2, "case %zu (%s): exit %d: %.2000s", i, sets, rc, out);
        ck_assert_msg(strstr(out, cases[i].msg), "case %zu: %s", i, out);
        ck_assert_msg(!exists(tmp(dir)), "case %zu wrote %s", i, tmp(dir));
    }
    /* an unmatched glob names itself (on the right architecture) */
    snprintf(args, sizeof args,
             "ptq %s --set init.checkpoint=%s --set 'quant.layers={\"layer9.*\":{\"weight_bits\":2}}' --set "
             "output.dir=%s",
             q, fp_ckpt, tmp("badglob"));
    ck_assert_int_eq(cli(args, out, sizeof out), 2);
    ck_assert_msg(strstr(out, "quant.layers.\"layer9.*\": matches no layer of smallcnn") && !exists(tmp("badglob")),
                  "%s", out);
    /* train refuses a folded (PTQ) policy */
    snprintf(args, sizeof args, "train %s --set quant.fold_bn=true --set output.dir=%s", q, tmp("badfold"));
    ck_assert_int_eq(cli(args, out, sizeof out), 2);
    ck_assert_msg(strstr(out, "quant.fold_bn: a model with folded batchnorm cannot train"), "%s", out);
    /* LSQ without an FP32 start warns (and trains); with one it does not */
    const char *lsq = write_file("lsq.json", "{\"extends\": \"fp.json\", \"quant\": {\"weights\": {\"method\": "
                                             "\"lsq\", \"bits\": 4}, \"activations\": {\"method\": \"lsq\", "
                                             "\"bits\": 4}}, \"train\": {\"epochs\": 1}, \"data\": {\"train_count\": 100}}");
    snprintf(args, sizeof args, "train %s --set output.dir=%s", lsq, tmp("lsq_noinit"));
    ck_assert_int_eq(cli(args, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "learned quantizers (lsq, lsq+, pact, adq) start from a trained FP32 model") &&
                      strstr(out, "init.checkpoint is empty"), "%s", out);
    snprintf(args, sizeof args, "train %s --set init.checkpoint=%s --set output.dir=%s", lsq, fp_ckpt, tmp("lsq_init"));
    ck_assert_int_eq(cli(args, out, sizeof out), 0);
    ck_assert_msg(!strstr(out, "init.checkpoint is empty"), "%s", out);
}
END_TEST


/* The ADQ pipeline through the CLI: sensitivity (three metrics) of an FP32
 * checkpoint -> allocate -> a bitmap-driven ADQ run with N2UQ activations
 * -> inspect --codebook; and the commands' bad input (exit 2, nothing
 * written). */
START_TEST(test_adq_cli) {
    char args[4096], out[1 << 16];
    write_file("fp.json", base_json);
    char fp_ckpt[700];
    small_fp32("fp_adq", fp_ckpt, sizeof fp_ckpt);
    const char *adq = write_file("adq.json", "{\"extends\": \"fp.json\", \"quant\": {\"weights\": {\"method\": "
                                             "\"adq\", \"bits\": 3, \"granularity\": \"tensor\"}, \"activations\": "
                                             "{\"method\": \"n2uq\", \"bits\": 3}}, \"train\": {\"epochs\": 1}, "
                                             "\"data\": {\"train_count\": 100}}");
    const char *metrics[3] = {"hessian", "fisher", "loss_delta"};
    for (int k = 0; k < 3; k++) {
        char js[64], png[64];
        snprintf(js, sizeof js, "sens_%s.json", metrics[k]);
        snprintf(png, sizeof png, "sens_%s.png", metrics[k]);
        snprintf(args, sizeof args,
                 "sensitivity %s --checkpoint %s --metric %s --set sensitivity.samples=3 --set sensitivity.batches=2 "
                 "--set sensitivity.batch_size=20 -o %s",
                 adq, fp_ckpt, metrics[k], tmp(js));
        ck_assert_msg(cli(args, out, sizeof out) == 0, "%s", out);
        ck_assert_msg(exists(tmp(png)), "no heat map %s: %s", tmp(png), out);
        FILE *f = fopen(tmp(js), "r");
        char text[1 << 15];
        const size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = 0;
        ck_assert_msg(strstr(text, "\"nibble-sensitivity-1\"") && strstr(text, "\"features.1.conv\"") &&
                          strstr(text, "\"first\"") && strstr(text, "\"omega\"") && strstr(text, metrics[k]),
                      "%s", text);
    }
    /* the hessian table drives the allocator; its bitmap drives a run */
    snprintf(args, sizeof args, "allocate %s --avg-bits 2.5 -o %s", tmp("sens_hessian.json"), tmp("alloc.json"));
    ck_assert_msg(cli(args, out, sizeof out) == 0, "%s", out);
    snprintf(args, sizeof args, "train %s --set init.checkpoint=%s --set quant.bitmap=\"%s\" --set output.dir=%s", adq,
             fp_ckpt, tmp("alloc.json"), tmp("adq_run"));
    ck_assert_msg(cli(args, out, sizeof out) == 0, "%s", out);
    ck_assert_msg(strstr(out, "n2uq 3 unsigned") && strstr(out, "codebook features.1.conv.weight"), "%s", out);
    char ck[700], png[700];
    snprintf(ck, sizeof ck, "%s/last.h5", tmp("adq_run"));
    snprintf(png, sizeof png, "%s/cb.png", tmp("adq_run"));
    snprintf(args, sizeof args, "inspect %s --no-config --codebook features.1.conv --png %s", ck, png);
    ck_assert_msg(cli(args, out, sizeof out) == 0, "%s", out);
    ck_assert_msg(exists(png) && strstr(out, "at init:") && strstr(out, "trained:"), "%s", out);
    /* a layer without a codebook, a lone --png */
    snprintf(args, sizeof args, "inspect %s --codebook fc --png %s/x.png", ck, tmp("adq_run"));
    ck_assert_int_eq(cli(args, out, sizeof out), 2);
    ck_assert_msg(strstr(out, "--codebook fc:") && strstr(out, "codebook weight quantizer"), "%s", out);
    snprintf(args, sizeof args, "inspect %s --png %s/x.png", ck, tmp("adq_run"));
    ck_assert_int_eq(cli(args, out, sizeof out), 2);
    /* sensitivity's bad input */
    struct {
        const char *args, *msg;
    } bad[] = {
        {"--candidates 4,3", "--candidates expects ascending bit widths"},
        {"--candidates 2,x", "--candidates expects ascending bit widths"},
        {"--metric hutchinson", "sensitivity.metric"},
        {"--checkpoint /nonexistent.h5", "/nonexistent.h5"},
        {"--set sensitivity.samples=0", "sensitivity.samples"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "sensitivity %s %s -o %s/s%zu.json", adq, bad[i].args, tmp("sens_bad"), i);
        if (!strstr(bad[i].args, "--checkpoint")) {
            char more[800];
            snprintf(more, sizeof more, " --checkpoint %s", fp_ckpt);
            strncat(args, more, sizeof args - strlen(args) - 1);
        }
        const int rc = cli(args, out, sizeof out);
        ck_assert_msg(rc == 2 && strstr(out, bad[i].msg), "case %zu: exit %d: %s", i, rc, out);
        ck_assert(!exists(tmp("sens_bad")));
    }
    /* 1 bit needs codebooks */
    snprintf(args, sizeof args, "sensitivity %s --checkpoint %s --candidates 1,2 -o %s", tmp("fp.json"), fp_ckpt,
             tmp("s1.json"));
    ck_assert_int_eq(cli(args, out, sizeof out), 2);
    ck_assert_msg(strstr(out, "1 bits needs quant.weights.method \"adq\""), "%s", out);
}
END_TEST

int main(void) {
    Suite *s = suite_create("quant_run");
    TCase *tc = tcase_create("quant_run");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_qat_resume_exact);
    tcase_add_test(tc, test_lsq_resume_exact);
    tcase_add_test(tc, test_adq_resume_exact);
    tcase_add_test(tc, test_lsq_nan_guard);
    tcase_add_test(tc, test_ptq_cli);
    tcase_add_test(tc, test_ptq_bad_input);
    tcase_add_test(tc, test_adq_cli);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
