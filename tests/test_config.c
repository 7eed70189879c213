/* Experiment configs: defaults, every kind of error message, extends,
 * --set overrides, the to_json round trip and the shipped configs. */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_internal.h"
#include "nb_config.h"
#include "nb_test.h"

/* The smallest valid config. */
#define MIN_DATA "\"data\": {\"path\": \"synthetic:shapes10\"}"
#define MIN_MODEL "\"model\": {\"arch\": \"smallcnn\"}"
#define MIN_JSON "{" MIN_DATA ", " MIN_MODEL ", \"train\": {\"epochs\": 2, \"optimizer\": {\"lr\": 0.1}}}"

/* Write text to TMP/name (making TMP/sub/ when name has one) and return the
 * path in one of a few rotating static buffers. */
static const char *write_file(const char *name, const char *text) {
    static char paths[8][1024];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 1024, "%s/%s", nb_test_tmpdir(), name);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    mkdir(p, 0755);
    *slash = '/';
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return p;
}

/* TMP/name, for expected messages. */
static const char *tmp_path(const char *name) {
    static char p[1024];
    snprintf(p, sizeof p, "%s/%s", nb_test_tmpdir(), name);
    return p;
}

static void parse_ok(const char *json, const char *const *sets, int n, nb_config *c) {
    nb_status st = nb_config_parse(json, "t.json", sets, n, c);
    ck_assert_msg(st == NB_OK, "%s", nb_last_error());
}

/* Parse json (named "t.json") and check the status and the exact message. */
static void parse_err(const char *json, const char *const *sets, int n, nb_status want, const char *msg) {
    nb_config c;
    memset(&c, 0xab, sizeof c);
    nb_config before = c;
    nb_status st = nb_config_parse(json, "t.json", sets, n, &c);
    ck_assert_msg(st == want, "status %d, want %d (%s)", st, want, nb_last_error());
    ck_assert_str_eq(nb_last_error(), msg);
    ck_assert_mem_eq(&c, &before, sizeof c); /* *out untouched on error */
}

/* MIN_JSON with the train object replaced. */
#define WITH_TRAIN(t) "{" MIN_DATA ", " MIN_MODEL ", \"train\": " t "}"

START_TEST(test_defaults) {
    nb_config c;
    parse_ok(MIN_JSON, NULL, 0, &c);
    ck_assert_str_eq(c.name, "t");
    ck_assert_str_eq(c.source, "");
    ck_assert_int_eq(c.seed, 0);
    ck_assert_int_eq(c.threads, 0);
    ck_assert_str_eq(c.data.path, "synthetic:shapes10");
    ck_assert_int_eq(c.data.train_count, 0);
    ck_assert_int_eq(c.data.augment, 1);
    ck_assert_int_eq(c.data.pad, 4);
    ck_assert_int_eq(c.data.flip, 1);
    ck_assert_int_eq(c.data.rrc, 0);
    ck_assert_int_eq(c.data.size, 0);
    ck_assert_int_eq(c.data.stream, 0);
    ck_assert_int_eq(c.data.mem_cap_mb, 0);
    ck_assert_int_eq(c.data.prefetch, 1);
    ck_assert_str_eq(c.model.arch, "smallcnn");
    ck_assert_int_eq(c.model.num_classes, 0);
    ck_assert_int_eq(c.model.shortcut, 'A');
    ck_assert_str_eq(c.model.stem, "auto");
    ck_assert_int_eq(c.model.width, 16);
    ck_assert_float_eq(c.model.bn_momentum, 0.1f);
    ck_assert_float_eq(c.model.bn_eps, 1e-5f);
    ck_assert_str_eq(c.init.checkpoint, "");
    ck_assert_int_eq(c.init.strict, 1);
    const nb_train_config *t = &c.train;
    ck_assert_int_eq(t->epochs, 2);
    ck_assert_int_eq(t->batch_size, 128);
    ck_assert_float_eq(t->label_smoothing, 0);
    ck_assert_float_eq(t->grad_clip, 0);
    ck_assert_int_eq(t->log_every, 50);
    ck_assert_int_eq(t->eval_every, 1);
    ck_assert_str_eq(t->optimizer.name, "sgd");
    ck_assert_float_eq(t->optimizer.lr, 0.1f);
    ck_assert_float_eq(t->optimizer.momentum, 0.9f);
    ck_assert_int_eq(t->optimizer.nesterov, 0);
    ck_assert_float_eq(t->optimizer.dampening, 0);
    ck_assert_float_eq(t->optimizer.weight_decay, 0);
    ck_assert_float_eq(t->optimizer.beta1, 0.9f);
    ck_assert_float_eq(t->optimizer.beta2, 0.999f);
    ck_assert_float_eq(t->optimizer.eps, 1e-8f);
    ck_assert_int_eq(t->optimizer.no_decay_bn_bias, 1);
    ck_assert_str_eq(t->schedule.name, "constant");
    ck_assert_double_eq(t->schedule.warmup_epochs, 0);
    ck_assert_float_eq(t->schedule.warmup_start_factor, 0.01f);
    ck_assert_float_eq(t->schedule.min_lr, 0);
    ck_assert_double_eq(t->schedule.step_size, 30);
    ck_assert_float_eq(t->schedule.gamma, 0.1f);
    ck_assert_int_eq(t->schedule.n_milestones, 0);
    ck_assert_float_eq(t->schedule.pct_start, 0.3f);
    ck_assert_float_eq(t->schedule.div_factor, 25);
    ck_assert_float_eq(t->schedule.final_div_factor, 1e4f);
    ck_assert_str_eq(t->distill.teacher, "");
    ck_assert_float_eq(t->distill.temperature, 4);
    ck_assert_float_eq(t->distill.weight, 0.5f);
    ck_assert_str_eq(c.output.dir, "runs/t");
    ck_assert_int_eq(c.output.steps_every, 50); /* 0 = log_every */

    /* nb_config_defaults leaves the required keys empty */
    nb_config d;
    nb_config_defaults(&d);
    ck_assert_str_eq(d.data.path, "");
    ck_assert_str_eq(d.model.arch, "");
    ck_assert_int_eq(d.train.epochs, 0);
    ck_assert_float_eq(d.train.optimizer.lr, 0);
    ck_assert_int_eq(d.train.batch_size, 128);

    /* unnamed string: messages say "(string)", the name is "run" */
    ck_assert_int_eq(nb_config_parse(MIN_JSON, NULL, NULL, 0, &c), NB_OK);
    ck_assert_str_eq(c.name, "run");
    ck_assert_int_eq(nb_config_parse("{\"seed\": -1}", NULL, NULL, 0, &c), NB_STATUS_BAD_INPUT);
    ck_assert_str_eq(nb_last_error(), "(string): seed: expected an integer in [0, 9007199254740992], got -1");
}
END_TEST

START_TEST(test_load_file) {
    const char *p = write_file("mini.json", MIN_JSON);
    nb_config c;
    ck_assert_msg(nb_config_load(p, NULL, 0, &c) == NB_OK, "%s", nb_last_error());
    ck_assert_str_eq(c.name, "mini");
    ck_assert_str_eq(c.output.dir, "runs/mini");
    ck_assert_str_eq(c.source, p);
    /* explicit name, dir and steps_every win; {} quant is fine */
    parse_ok("{" MIN_DATA ", " MIN_MODEL ", \"name\": \"exp\", \"quant\": {}, \"output\": {\"steps_every\": 7},"
             "\"train\": {\"epochs\": 2, \"log_every\": 3, \"optimizer\": {\"lr\": 0.1}}}",
             NULL, 0, &c);
    ck_assert_str_eq(c.name, "exp");
    ck_assert_str_eq(c.output.dir, "runs/exp");
    ck_assert_int_eq(c.output.steps_every, 7);
    parse_ok("{" MIN_DATA ", " MIN_MODEL ", \"quant\": {}, \"output\": {\"dir\": \"/x/y\"},"
             "\"train\": {\"epochs\": 2, \"log_every\": 3, \"optimizer\": {\"lr\": 0.1}}}",
             NULL, 0, &c);
    ck_assert_str_eq(c.output.dir, "/x/y");
    ck_assert_int_eq(c.output.steps_every, 3);
}
END_TEST

START_TEST(test_missing_file) {
    nb_config c;
    const char *p = tmp_path("absent.json");
    ck_assert_int_eq(nb_config_load(p, NULL, 0, &c), NB_STATUS_IO);
    char want[1200];
    snprintf(want, sizeof want, "cannot read %s: No such file or directory", p);
    ck_assert_str_eq(nb_last_error(), want);
}
END_TEST

START_TEST(test_syntax_error) {
    /* cJSON stops one past the '}' where it wanted a key */
    parse_err("{\n  \"seed\": 1,\n  \"threads\": 2,\n}", NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: invalid JSON at line 4, column 2");
    parse_err("{\n\"seed\": [1,,2]}", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: invalid JSON at line 2, column 12");
    parse_err("{\"seed\": tru}", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: invalid JSON at line 1, column 10");
    parse_err("{\"seed\": 1 \"threads\": 2}", NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: invalid JSON at line 1, column 12");
    parse_err("", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: invalid JSON at line 1, column 1");
    parse_err("{} x", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: invalid JSON at line 1, column 4");
    parse_err("[1, 2]", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: (top level): expected an object, got [1,2]");
}
END_TEST

START_TEST(test_wrong_type) {
    parse_err(WITH_TRAIN("{\"epochs\": 2, \"optimizer\": {\"lr\": \"0.1\"}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.optimizer.lr: expected a number > 0, got \"0.1\"");
    parse_err("{" MIN_MODEL ", \"data\": {\"path\": 5}}", NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: data.path: expected a string, got 5");
    parse_err("{\"data\": {\"path\": \"x\", \"augment\": {\"flip\": 1}}}", NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: data.augment.flip: expected true or false, got 1");
    parse_err("{\"train\": [1, {\"a\": null}]}", NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train: expected an object, got [1,{\"a\":null}]");
    parse_err("{\"data\": {\"augment\": true}}", NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: data.augment: expected false or an object, got true");
    parse_err("{\"seed\": null}", NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: seed: expected an integer in [0, 9007199254740992], got null");
}
END_TEST

START_TEST(test_out_of_range) {
    parse_err(WITH_TRAIN("{\"epochs\": 2, \"optimizer\": {\"lr\": 0}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.optimizer.lr: expected a number > 0, got 0");
    parse_err(WITH_TRAIN("{\"optimizer\": {\"momentum\": 1}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.optimizer.momentum: expected a number in [0, 1), got 1");
    parse_err(WITH_TRAIN("{\"label_smoothing\": -0.5}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.label_smoothing: expected a number in [0, 1), got -0.5");
    parse_err(WITH_TRAIN("{\"batch_size\": 0}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.batch_size: expected an integer >= 1, got 0");
    parse_err("{\"threads\": -1}", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: threads: expected an integer >= 0, got -1");
    parse_err(WITH_TRAIN("{\"epochs\": 3e9}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.epochs: expected an integer >= 1, got 3000000000 (out of range for the field)");
    parse_err(WITH_TRAIN("{\"optimizer\": {\"lr\": 1e-50}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.optimizer.lr: expected a number > 0, got 1e-50 (out of range for the field)");
}
END_TEST

START_TEST(test_not_integer) {
    parse_err(WITH_TRAIN("{\"epochs\": 2.5, \"optimizer\": {\"lr\": 0.1}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.epochs: expected an integer >= 1, got 2.5");
}
END_TEST

START_TEST(test_unknown_key) {
    parse_err(WITH_TRAIN("{\"epochs\": 2, \"optimiser\": {\"lr\": 0.1}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.optimiser: unknown key (did you mean \"optimizer\"?)");
    parse_err("{\"sead\": 1}", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: sead: unknown key (did you mean \"seed\"?)");
    parse_err(WITH_TRAIN("{\"optimizer\": {\"rl\": 0.1}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.optimizer.rl: unknown key (did you mean \"lr\"?)");
    parse_err("{\"Data\": {}}", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: Data: unknown key (did you mean \"data\"?)");
    parse_err("{\"frobnicate\": 1}", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: frobnicate: unknown key");
    /* siblings only: "lr" is not suggested at the top level */
    parse_err("{\"xr\": 1}", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: xr: unknown key");
    parse_err("{\"data\": {\"augment\": {\"pads\": 2}}}", NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: data.augment.pads: unknown key (did you mean \"pad\"?)");
    parse_err("{\"seed\": 1, \"seed\": 2}", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: seed: duplicate key");
}
END_TEST

START_TEST(test_bad_enum) {
    parse_err("{\"model\": {\"shortcut\": \"C\"}}", NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: model.shortcut: expected one of \"A\", \"B\", got \"C\"");
    parse_err(WITH_TRAIN("{\"schedule\": {\"name\": \"cosin\"}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.schedule.name: expected one of \"constant\", \"step\", \"multistep\", \"cosine\", "
              "\"onecycle\", got \"cosin\" (did you mean \"cosine\"?)");
    parse_err(WITH_TRAIN("{\"optimizer\": {\"name\": 1}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.optimizer.name: expected one of \"sgd\", \"adamw\", got 1");
    parse_err("{\"model\": {\"stem\": \"tiny\"}}", NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: model.stem: expected one of \"auto\", \"imagenet\", \"cifar\", got \"tiny\"");
    /* model.arch: the architectures nb_model_build knows */
    char want[1024] = "t.json: model.arch: expected one of ";
    const char *const *a = nb_model_archs();
    for (int i = 0; a[i]; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s\"%s\"", i ? ", " : "", a[i]);
    strcat(want, ", got \"resnet21\" (did you mean \"resnet20\"?)");
    parse_err("{\"model\": {\"arch\": \"resnet21\"}}", NULL, 0, NB_STATUS_BAD_INPUT, want);
}
END_TEST

START_TEST(test_bad_arrays) {
    parse_err(WITH_TRAIN("{\"optimizer\": {\"betas\": [0.9]}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.optimizer.betas: expected an array of 2 numbers, each in [0, 1), got [0.9]");
    parse_err(WITH_TRAIN("{\"optimizer\": {\"betas\": [0.9, 1]}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.optimizer.betas: expected an array of 2 numbers, each in [0, 1), got [0.9,1]");
    parse_err(WITH_TRAIN("{\"schedule\": {\"milestones\": [30, 20]}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: train.schedule.milestones: expected an increasing array of at most 16 numbers >= 0, got "
              "[30,20]");
    parse_err(WITH_TRAIN("{\"schedule\": {\"milestones\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}}"), NULL, 0,
              NB_STATUS_BAD_INPUT,
              "t.json: train.schedule.milestones: expected an increasing array of at most 16 numbers >= 0, got "
              "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]");
    nb_config c;
    parse_ok(WITH_TRAIN("{\"epochs\": 1, \"optimizer\": {\"lr\": 1, \"betas\": [0.5, 0.25]},"
                        "\"schedule\": {\"milestones\": [0.5, 2, 30]}}"),
             NULL, 0, &c);
    ck_assert_float_eq(c.train.optimizer.beta1, 0.5f);
    ck_assert_float_eq(c.train.optimizer.beta2, 0.25f);
    ck_assert_int_eq(c.train.schedule.n_milestones, 3);
    ck_assert_double_eq(c.train.schedule.milestones[0], 0.5);
    ck_assert_double_eq(c.train.schedule.milestones[2], 30);
    ck_assert_double_eq(c.train.schedule.milestones[3], 0);
}
END_TEST

/* MIN_JSON with a quant section. */
#define WITH_QUANT(q) "{" MIN_DATA ", " MIN_MODEL ", \"train\": {\"epochs\": 2, \"optimizer\": {\"lr\": 0.1}}, \"quant\": " q "}"

START_TEST(test_quant_keys) {
    nb_config c;
    parse_ok(MIN_JSON, NULL, 0, &c);
    ck_assert(!nb_quant_enabled(&c.quant)); /* no quant section: FP32 */
    ck_assert_str_eq(c.quant.weights.granularity, "channel");
    ck_assert_int_eq(c.quant.first_bits, 8);
    parse_ok(WITH_QUANT("{\"weights\": {\"method\": \"uniform\", \"bits\": 4, \"granularity\": \"group\", "
                        "\"group_size\": 32}, \"activations\": {\"method\": \"uniform\", \"bits\": 4, "
                        "\"observer\": \"kl\"}, \"layers\": {\"layer3.*.conv2\": {\"weight_bits\": 2}, \"fc\": "
                        "{\"act_method\": \"none\"}}}"),
             NULL, 0, &c);
    ck_assert(nb_quant_enabled(&c.quant));
    ck_assert_int_eq(c.quant.n_rules, 2);
    ck_assert_str_eq(c.quant.rules[0].pattern, "layer3.*.conv2");
    ck_assert_int_eq(c.quant.rules[0].weight_bits, 2);
    ck_assert_str_eq(c.quant.rules[1].act_method, "none");
    ck_assert_str_eq(c.quant.activations.observer, "kl");
    /* the rules survive the effective config's round trip */
    char *json = nb_config_to_json(&c);
    nb_config back;
    parse_ok(json, NULL, 0, &back);
    nb_free(json);
    ck_assert_int_eq(back.quant.n_rules, 2);
    ck_assert(memcmp(&back.quant, &c.quant, sizeof c.quant) == 0);

    parse_err(WITH_QUANT("{\"bits\": 4}"), NULL, 0, NB_STATUS_BAD_INPUT, "t.json: quant.bits: unknown key");
    parse_err(WITH_QUANT("4"), NULL, 0, NB_STATUS_BAD_INPUT, "t.json: quant: expected an object, got 4");
    parse_err(WITH_QUANT("{\"weights\": {\"bits\": 9}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.weights.bits: expected an integer in [1, 8], got 9");
    parse_err(WITH_QUANT("{\"weights\": {\"method\": \"unifrom\"}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.weights.method: expected one of \"none\", \"uniform\", \"binary\", \"ternary\", \"lsq\", \"adq\", got "
              "\"unifrom\" (did you mean \"uniform\"?)");
    parse_err(WITH_QUANT("{\"activations\": {\"method\": \"binary\"}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.activations.method: expected one of \"none\", \"uniform\", \"lsq\", \"lsq+\", \"pact\", \"n2uq\", got \"binary\"");
    parse_err(WITH_QUANT("{\"weights\": {\"observr\": \"mse\"}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.weights.observr: unknown key (did you mean \"observer\"?)");
    parse_err(WITH_QUANT("{\"layers\": {\"fc\": {\"weight_bit\": 2}}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.layers.\"fc\".weight_bit: unknown key (did you mean \"weight_bits\"?)");
    parse_err(WITH_QUANT("{\"layers\": {\"fc\": {\"act_bits\": 1}}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.layers.\"fc\".act_bits: expected an integer in [2, 8], got 1");
    parse_err(WITH_QUANT("{\"layers\": {\"fc\": 2}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.layers.\"fc\": expected an object with weight_bits, act_bits, weight_method, "
              "act_method, weight_granularity or group_size, got 2");
    parse_err(WITH_QUANT("{\"layers\": {\"fc\": {\"weight_method\": \"pact\"}}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.layers.\"fc\".weight_method: expected one of \"none\", \"uniform\", \"binary\", "
              "\"ternary\", \"lsq\", \"adq\", got \"pact\"");
    parse_err(WITH_QUANT("{\"lsq\": {\"grad_scale\": \"exmaple\"}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.lsq.grad_scale: expected one of \"example\", \"batch\", \"none\", got \"exmaple\" "
              "(did you mean \"example\"?)");
    parse_err(WITH_QUANT("{\"lr_scale\": 0}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.lr_scale: expected a number > 0, got 0");
    parse_err(WITH_QUANT("{\"first_layer_bits\": 1}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.first_layer_bits: expected 0 (as the rest) or 2..8, got 1");
    parse_err(WITH_QUANT("{\"calibration\": {\"batches\": 0}}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.calibration.batches: expected an integer >= 1, got 0");
    const char *sets[] = {"quant.weights.bits=3"};
    parse_ok(MIN_JSON, sets, 1, &c);
    ck_assert_int_eq(c.quant.weights.bits, 3);
}
END_TEST

/* A config (smallcnn, lsq weights) with quant.bitmap = bm and quant.layers = layers. */
static const char *bitmap_cfg(const char *bm, const char *layers) {
    static char json[16384];
    snprintf(json, sizeof json,
             WITH_QUANT("{\"weights\": {\"method\": \"lsq\", \"bits\": 4}, \"bitmap\": %s, \"layers\": %s}"), bm,
             layers);
    return json;
}

#define BITMAP_OK "{\"format\": \"nibble-bitmap-1\", \"source\": \"s.json\", \"metric\": \"hessian\", " \
                  "\"layers\": {\"features.0.conv\": 8, \"features.1.conv\": 2, \"features.2.conv\": 3, \"fc\": 8}}"

START_TEST(test_quant_bitmap) {
    const char *bm = write_file("bm/alloc.json", BITMAP_OK);
    char q[1200];
    snprintf(q, sizeof q, "\"%s\"", bm);
    nb_config c;
    parse_ok(bitmap_cfg(q, "{\"features.1.conv\": {\"weight_bits\": 4}, \"f*\": {\"act_bits\": 6}}"), NULL, 0, &c);
    /* the bitmap's layers first, as exact-name weight-bit rules; then quant.layers */
    ck_assert_str_eq(c.bitmap.path, bm);
    ck_assert_int_eq(c.bitmap.n_rules, 4);
    ck_assert_int_eq(c.quant.n_rules, 6);
    const char *names[] = {"features.0.conv", "features.1.conv", "features.2.conv", "fc", "features.1.conv", "f*"};
    const int wbits[] = {8, 2, 3, 8, 4, 0};
    for (int i = 0; i < 6; i++) {
        ck_assert_str_eq(c.quant.rules[i].pattern, names[i]);
        ck_assert_int_eq(c.quant.rules[i].weight_bits, wbits[i]);
        ck_assert_int_eq(c.quant.rules[i].act_bits, i == 5 ? 6 : 0);
        if (i < 4) ck_assert(!c.quant.rules[i].weight_method[0] && !c.quant.rules[i].group_size);
    }
    /* attached: explicit rules still win (features.1.conv at 4 bits) */
    nb_rng rng;
    nb_rng_seed(&rng, 1, 0);
    nb_model *m = nb_config_build_model(&c, 3, 32, 10, &rng);
    ck_assert_ptr_nonnull(m);
    ck_assert_msg(nb_config_quantize_model(&c, m) == NB_OK, "%s", nb_last_error());
    int n = 0, seen = 0;
    nb_quantizer *qs = nb_quant_list(m, &n);
    for (int i = 0; i < n; i++) {
        if (!qs[i].is_weight) continue;
        const int want = !strcmp(qs[i].name, "features.1.conv.weight") ? 4 : !strcmp(qs[i].name, "features.2.conv.weight") ? 3 : 8;
        ck_assert_msg(qs[i].spec.bits == want, "%s: %d bits", qs[i].name, qs[i].spec.bits);
        seen++;
    }
    ck_assert_int_eq(seen, 4);
    nb_model_free(m);
    /* the effective config holds the bitmap resolved: it loads without the file */
    char *out = nb_config_to_json(&c);
    ck_assert_msg(strstr(out, "\"file\":") && strstr(out, "\"features.2.conv\":\t3"), "%s", out);
    ck_assert_int_eq(remove(bm), 0);
    nb_config back;
    parse_ok(out, NULL, 0, &back);
    nb_free(out);
    ck_assert(memcmp(&back, &c, sizeof c) == 0);
    /* a path relative to the working directory, as init.checkpoint */
    write_file("bm/alloc.json", BITMAP_OK);
    ck_assert_int_eq(chdir(nb_test_tmpdir()), 0);
    parse_ok(bitmap_cfg("\"bm/alloc.json\"", "{}"), NULL, 0, &c);
    ck_assert_int_eq(c.bitmap.n_rules, 4);
    ck_assert_str_eq(c.bitmap.path, "bm/alloc.json");
    /* "" = none; --set replaces a base's bitmap before it is read */
    parse_ok(bitmap_cfg("\"\"", "{}"), NULL, 0, &c);
    ck_assert_int_eq(c.bitmap.n_rules, 0);
    ck_assert_int_eq(c.quant.n_rules, 0);
    const char *sets[] = {"quant.bitmap=bm/alloc.json"};
    parse_ok(bitmap_cfg("\"absent.json\"", "{}"), sets, 1, &c);
    ck_assert_int_eq(c.bitmap.n_rules, 4);
}
END_TEST

/* A bitmap layer the model lacks: the message names the bitmap file. */
START_TEST(test_quant_bitmap_model) {
    const char *bm = write_file("bm/other.json", "{\"format\": \"nibble-bitmap-1\", \"layers\": {\"features.0.conv\": 8, "
                                                 "\"layer1.0.conv1\": 2}}");
    char q[1200], want[2048];
    snprintf(q, sizeof q, "\"%s\"", bm);
    nb_config c;
    parse_ok(bitmap_cfg(q, "{}"), NULL, 0, &c);
    nb_rng rng;
    nb_rng_seed(&rng, 1, 0);
    nb_model *m = nb_config_build_model(&c, 3, 32, 10, &rng);
    ck_assert_int_eq(nb_config_quantize_model(&c, m), NB_STATUS_BAD_INPUT);
    snprintf(want, sizeof want, "t: quant.bitmap: %s: layer \"layer1.0.conv1\" is not a conv or linear layer of "
             "smallcnn (a bitmap made for another model? nibble inspect lists the layers)", bm);
    ck_assert_str_eq(nb_last_error(), want);
    nb_model_free(m);
}
END_TEST

/* Every kind of bad bitmap, and its message. */
START_TEST(test_quant_bitmap_errors) {
    static const char *const cases[][2] = {
        {"{\"format\": \"nibble-bitmap-1\", \"layers\": {\"fc\": 8,}}", "invalid JSON at line 1, column 51"},
        {"{\"format\": \"nibble-bitmap-2\", \"layers\": {\"fc\": 8}}",
         "format: expected \"nibble-bitmap-1\" (a file `nibble allocate` writes), got \"nibble-bitmap-2\""},
        {"{\"layers\": {\"fc\": 8}}",
         "format: required key is missing (expected \"nibble-bitmap-1\" (a file `nibble allocate` writes))"},
        {"{\"format\": \"nibble-bitmap-1\"}", "layers: required key is missing (expected an object of layer name -> weight bits)"},
        {"{\"format\": \"nibble-bitmap-1\", \"layers\": {}}", "layers: no layers"},
        {"{\"format\": \"nibble-bitmap-1\", \"layers\": {\"fc\": 9}}",
         "layers.\"fc\": expected an integer in [1, 8] (weight bits), got 9"},
        {"{\"format\": \"nibble-bitmap-1\", \"layers\": {\"fc\": 0}}",
         "layers.\"fc\": expected an integer in [1, 8] (weight bits), got 0"},
        {"{\"format\": \"nibble-bitmap-1\", \"layers\": {\"fc\": 2.5}}",
         "layers.\"fc\": expected an integer in [1, 8] (weight bits), got 2.5"},
        {"{\"format\": \"nibble-bitmap-1\", \"layers\": {\"fc\": \"4\"}}",
         "layers.\"fc\": expected an integer in [1, 8] (weight bits), got \"4\""},
        {"{\"format\": \"nibble-bitmap-1\", \"layers\": {\"features.*\": 4}}",
         "layers.\"features.*\": an exact layer name, not a glob"},
        {"{\"format\": \"nibble-bitmap-1\", \"layers\": {\"fc\": 4, \"fc\": 2}}", "layers.fc: duplicate key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *bm = write_file("bm/bad.json", cases[i][0]);
        char q[1200], want[2048];
        snprintf(q, sizeof q, "\"%s\"", bm);
        snprintf(want, sizeof want, "t.json: quant.bitmap: %s: %s", bm, cases[i][1]);
        parse_err(bitmap_cfg(q, "{}"), NULL, 0, NB_STATUS_BAD_INPUT, want);
    }
    char q[1200], want[2048];
    const char *absent = tmp_path("bm/absent.json");
    snprintf(q, sizeof q, "\"%s\"", absent);
    snprintf(want, sizeof want, "t.json: quant.bitmap: cannot read %s: No such file or directory", absent);
    parse_err(bitmap_cfg(q, "{}"), NULL, 0, NB_STATUS_IO, want);
    const char *bm = write_file("bm/ok.json", BITMAP_OK);
    snprintf(q, sizeof q, "\"%s\"", bm);
    snprintf(want, sizeof want, "t.json: quant.bitmap: sets weight bits, but quant.weights.method is \"none\" (set a "
             "method, e.g. \"lsq\" or \"uniform\")");
    const char *none[] = {"quant.weights.method=none"};
    parse_err(bitmap_cfg(q, "{}"), none, 1, NB_STATUS_BAD_INPUT, want);
    /* the rules' limit counts both: 4 bitmap layers and 125 rules */
    char layers[8192];
    size_t len = (size_t)snprintf(layers, sizeof layers, "{");
    for (int i = 0; i < 125; i++)
        len += (size_t)snprintf(layers + len, sizeof layers - len, "%s\"r%d\": {\"act_bits\": 4}", i ? ", " : "", i);
    snprintf(layers + len, sizeof layers - len, "}");
    parse_err(bitmap_cfg(q, layers), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.bitmap: its 4 layers and the 125 rules of quant.layers make more than 128 rules");
    nb_config c;
    parse_ok(bitmap_cfg("\"\"", layers), NULL, 0, &c); /* more than the old 32 */
    ck_assert_int_eq(c.quant.n_rules, 125);
    /* the value's form, and the resolved object's */
    parse_err(bitmap_cfg("3", "{}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.bitmap: expected a bitmap file name (or {\"file\": ..., \"layers\": {...}}), got 3");
    parse_err(bitmap_cfg("{\"file\": \"a.json\", \"layer\": {}}", "{}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.bitmap.layer: unknown key (did you mean \"layers\"?)");
    parse_err(bitmap_cfg("{\"layers\": {\"fc\": 2}}", "{}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.bitmap.file: required key is missing");
    parse_err(bitmap_cfg("{\"file\": \"a.json\", \"layers\": {\"fc\": 12}}", "{}"), NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: quant.bitmap.layers.\"fc\": expected an integer in [1, 8] (weight bits), got 12");
}
END_TEST

/* One required key removed at a time. */
START_TEST(test_required_missing) {
    static const char *const cases[][2] = {
        {"{" MIN_MODEL ", \"train\": {\"epochs\": 2, \"optimizer\": {\"lr\": 0.1}}}", "data.path"},
        {"{" MIN_DATA ", \"train\": {\"epochs\": 2, \"optimizer\": {\"lr\": 0.1}}}", "model.arch"},
        {"{" MIN_DATA ", " MIN_MODEL ", \"train\": {\"optimizer\": {\"lr\": 0.1}}}", "train.epochs"},
        {"{" MIN_DATA ", " MIN_MODEL ", \"train\": {\"epochs\": 2}}", "train.optimizer.lr"},
    };
    char want[128];
    snprintf(want, sizeof want, "t.json: %s: required key is missing", cases[_i][1]);
    parse_err(cases[_i][0], NULL, 0, NB_STATUS_BAD_INPUT, want);
}
END_TEST

START_TEST(test_cross_checks) {
    parse_err(WITH_TRAIN("{\"epochs\": 2, \"optimizer\": {\"lr\": 0.1, \"nesterov\": true, \"momentum\": 0}}"), NULL, 0,
              NB_STATUS_BAD_INPUT, "t.json: train.optimizer.nesterov: needs momentum > 0 and dampening 0");
    parse_err("{" MIN_MODEL ", \"data\": {\"path\": \"\"}}", NULL, 0, NB_STATUS_BAD_INPUT,
              "t.json: data.path: expected a non-empty string, got \"\"");
    parse_err("{\"extends\": 3}", NULL, 0, NB_STATUS_BAD_INPUT, "t.json: extends: expected a file name, got 3");
}
END_TEST

START_TEST(test_extends_merge) {
    write_file("ext/base.json",
               "{" MIN_MODEL ", \"seed\": 9,"
               " \"train\": {\"epochs\": 10, \"batch_size\": 64,"
               "  \"optimizer\": {\"lr\": 0.1, \"momentum\": 0.8, \"betas\": [0.5, 0.6]}},"
               " \"data\": {\"path\": \"base.h5\", \"augment\": {\"pad\": 2, \"rrc\": true}}}");
    /* sub/child.json: nested merge, arrays and non-objects replace */
    write_file("ext/sub/child.json", "{\"extends\": \"../base.json\", \"train\": {\"epochs\": 3,"
                                     " \"optimizer\": {\"lr\": 0.05, \"betas\": [0.7, 0.8]}},"
                                     " \"data\": {\"augment\": {\"pad\": 0}}}");
    const char *grand = write_file("ext/sub/grand.json", "{\"extends\": \"child.json\", \"seed\": 4,"
                                                         " \"data\": {\"augment\": false}}");
    nb_config c;
    ck_assert_msg(nb_config_load(tmp_path("ext/sub/child.json"), NULL, 0, &c) == NB_OK, "%s", nb_last_error());
    ck_assert_str_eq(c.name, "child"); /* from the file loaded, not the base */
    ck_assert_str_eq(c.data.path, "base.h5");
    ck_assert_int_eq(c.seed, 9);
    ck_assert_int_eq(c.train.epochs, 3);
    ck_assert_int_eq(c.train.batch_size, 64);
    ck_assert_float_eq(c.train.optimizer.lr, 0.05f);
    ck_assert_float_eq(c.train.optimizer.momentum, 0.8f);
    ck_assert_float_eq(c.train.optimizer.beta1, 0.7f);
    ck_assert_float_eq(c.train.optimizer.beta2, 0.8f);
    ck_assert_int_eq(c.data.augment, 1);
    ck_assert_int_eq(c.data.pad, 0);
    ck_assert_int_eq(c.data.rrc, 1);
    /* a chain of three; "augment": false replaces the object */
    ck_assert_msg(nb_config_load(grand, NULL, 0, &c) == NB_OK, "%s", nb_last_error());
    ck_assert_str_eq(c.name, "grand");
    ck_assert_int_eq(c.seed, 4);
    ck_assert_int_eq(c.train.epochs, 3);
    ck_assert_int_eq(c.data.augment, 0);
    ck_assert_int_eq(c.data.pad, 4); /* the default: the base's object is gone */
    ck_assert_int_eq(c.data.rrc, 0);
    /* and the other way: an object over false */
    write_file("ext/off.json", "{\"extends\": \"sub/grand.json\", \"data\": {\"augment\": {\"flip\": false}}}");
    ck_assert_msg(nb_config_load(tmp_path("ext/off.json"), NULL, 0, &c) == NB_OK, "%s", nb_last_error());
    ck_assert_int_eq(c.data.augment, 1);
    ck_assert_int_eq(c.data.flip, 0);
    ck_assert_int_eq(c.data.pad, 4);
}
END_TEST

START_TEST(test_extends_errors) {
    nb_config c;
    char want[4096];
    /* a bad value in a base is reported with the base's name */
    write_file("exterr/bad.json", "{\"train\": {\"epochs\": 0}}");
    const char *p = write_file("exterr/top.json", "{\"extends\": \"bad.json\"}");
    ck_assert_int_eq(nb_config_load(p, NULL, 0, &c), NB_STATUS_BAD_INPUT);
    snprintf(want, sizeof want, "%s: train.epochs: expected an integer >= 1, got 0", tmp_path("exterr/bad.json"));
    ck_assert_str_eq(nb_last_error(), want);
    /* a missing base */
    p = write_file("exterr/lost.json", "{\"extends\": \"nope.json\"}");
    ck_assert_int_eq(nb_config_load(p, NULL, 0, &c), NB_STATUS_IO);
    snprintf(want, sizeof want, "%s: extends: cannot read ", p);
    snprintf(want + strlen(want), sizeof want - strlen(want), "%s: No such file or directory",
             tmp_path("exterr/nope.json"));
    ck_assert_str_eq(nb_last_error(), want);
    /* a cycle a -> b -> a, and a file extending itself */
    const char *a = write_file("exterr/a.json", "{\"extends\": \"b.json\"}");
    const char *b = write_file("exterr/b.json", "{\"extends\": \"a.json\"}");
    ck_assert_int_eq(nb_config_load(a, NULL, 0, &c), NB_STATUS_BAD_INPUT);
    snprintf(want, sizeof want, "%s: extends: cycle: %s -> %s -> %s", b, a, b, a);
    ck_assert_str_eq(nb_last_error(), want);
    const char *self = write_file("exterr/self.json", "{\"extends\": \"./self.json\"}");
    ck_assert_int_eq(nb_config_load(self, NULL, 0, &c), NB_STATUS_BAD_INPUT);
    snprintf(want, sizeof want, "%s: extends: cycle: %s -> %s/exterr/./self.json", self, self, nb_test_tmpdir());
    ck_assert_str_eq(nb_last_error(), want);
}
END_TEST

START_TEST(test_set_overrides) {
    nb_config c;
    const char *sets[] = {"train.epochs=5", "data.path=foo.h5", "train.optimizer.betas=[0.9,0.99]",
                          "train.schedule.name=cosine", "data.augment.flip=false", "model.shortcut=B",
                          "train.epochs=7", "name=\"123\""};
    parse_ok(MIN_JSON, sets, 8, &c);
    ck_assert_int_eq(c.train.epochs, 7); /* the last one wins */
    ck_assert_str_eq(c.data.path, "foo.h5");
    ck_assert_float_eq(c.train.optimizer.beta1, 0.9f);
    ck_assert_float_eq(c.train.optimizer.beta2, 0.99f);
    ck_assert_str_eq(c.train.schedule.name, "cosine"); /* made train.schedule */
    ck_assert_int_eq(c.data.flip, 0);
    ck_assert_int_eq(c.model.shortcut, 'B');
    ck_assert_str_eq(c.name, "123");
    ck_assert_str_eq(c.output.dir, "runs/123");
    /* an override can supply a required key */
    const char *lr[] = {"train.optimizer.lr=0.2"};
    parse_ok(WITH_TRAIN("{\"epochs\": 2}"), lr, 1, &c);
    ck_assert_float_eq(c.train.optimizer.lr, 0.2f);
    /* and through nb_config_load */
    const char *p = write_file("set.json", MIN_JSON);
    const char *ep[] = {"train.epochs=9"};
    ck_assert_msg(nb_config_load(p, ep, 1, &c) == NB_OK, "%s", nb_last_error());
    ck_assert_int_eq(c.train.epochs, 9);
}
END_TEST

START_TEST(test_set_errors) {
    const char *bad[] = {"train.epochs=abc"};
    parse_err(MIN_JSON, bad, 1, NB_STATUS_BAD_INPUT,
              "--set train.epochs=abc: train.epochs: expected an integer >= 1, got \"abc\"");
    const char *unknown[] = {"train.epochs=3", "train.optimiser.lr=0.1"};
    parse_err(MIN_JSON, unknown, 2, NB_STATUS_BAD_INPUT,
              "--set train.optimiser.lr=0.1: train.optimiser: unknown key (did you mean \"optimizer\"?)");
    const char *leaf[] = {"train.epoch=3"};
    parse_err(MIN_JSON, leaf, 1, NB_STATUS_BAD_INPUT,
              "--set train.epoch=3: train.epoch: unknown key (did you mean \"epochs\"?)");
    const char *noeq[] = {"train.epochs"};
    parse_err(MIN_JSON, noeq, 1, NB_STATUS_BAD_INPUT, "--set train.epochs: expected KEY.PATH=VALUE");
    const char *dots[] = {"train..epochs=3"};
    parse_err(MIN_JSON, dots, 1, NB_STATUS_BAD_INPUT, "--set train..epochs=3: \"train..epochs\" is not a key path");
    const char *ext[] = {"extends=x.json"};
    parse_err(MIN_JSON, ext, 1, NB_STATUS_BAD_INPUT, "--set extends=x.json: extends: can only be given in a file");
    const char *under[] = {"train.epochs.x=1"};
    parse_err(MIN_JSON, under, 1, NB_STATUS_BAD_INPUT,
              "--set train.epochs.x=1: train.epochs: expected an integer >= 1, got {\"x\":1}");
    const char *quant[] = {"quant.bits=4"};
    parse_err(MIN_JSON, quant, 1, NB_STATUS_BAD_INPUT, "--set quant.bits=4: quant.bits: unknown key");
}
END_TEST

/* Every key appears in to_json, and parse(to_json(c)) == c, byte for byte. */
static void round_trip(const char *json) {
    nb_config a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    parse_ok(json, NULL, 0, &a);
    char *out = nb_config_to_json(&a);
    ck_assert_ptr_nonnull(out);
    for (int i = 0; i < nb_cfg_n_keys; i++) {
        const char *k = nb_cfg_keys[i].path;
        if (!a.data.augment && strncmp(k, "data.augment.", 13) == 0) continue;
        const char *leaf = strrchr(k, '.') ? strrchr(k, '.') + 1 : k;
        char q[80];
        snprintf(q, sizeof q, "\"%s\":", leaf);
        ck_assert_msg(strstr(out, q) != NULL, "%s missing from\n%s", k, out);
    }
    parse_ok(out, NULL, 0, &b);
    ck_assert_msg(memcmp(&a, &b, sizeof a) == 0, "round trip differs:\n%s", out);
    nb_free(out);
}

START_TEST(test_round_trip) {
    round_trip(MIN_JSON);
    round_trip("{\"name\": \"rt\", \"seed\": 9007199254740992, \"threads\": 3,"
               " \"data\": {\"path\": \"x.h5\", \"train_count\": 5000000000, \"test_count\": 7, \"augment\": false,"
               "  \"size\": 64, \"stream\": true, \"mem_cap_mb\": 512, \"prefetch\": 0},"
               " \"model\": {\"arch\": \"resnet18\", \"num_classes\": 10, \"shortcut\": \"B\", \"stem\": \"cifar\","
               "  \"width\": 8, \"bn_momentum\": 0.01, \"bn_eps\": 1e-3},"
               " \"init\": {\"checkpoint\": \"a/b.h5\", \"strict\": false},"
               " \"train\": {\"epochs\": 90, \"batch_size\": 256, \"label_smoothing\": 0.1, \"grad_clip\": 2.5,"
               "  \"log_every\": 7, \"eval_every\": 3,"
               "  \"optimizer\": {\"name\": \"adamw\", \"lr\": 3e-4, \"momentum\": 0.95, \"nesterov\": true,"
               "   \"weight_decay\": 0.05, \"betas\": [0.9, 0.95], \"eps\": 1e-6, \"no_decay_bn_bias\": false},"
               "  \"schedule\": {\"name\": \"multistep\", \"warmup_epochs\": 0.5, \"warmup_start_factor\": 0.1,"
               "   \"min_lr\": 1e-6, \"step_size\": 2.5, \"gamma\": 0.2, \"milestones\": [30, 60.5, 80],"
               "   \"pct_start\": 0.25, \"div_factor\": 10, \"final_div_factor\": 100},"
               "  \"distill\": {\"teacher\": \"t.h5\", \"temperature\": 2, \"weight\": 0.7}},"
               " \"output\": {\"dir\": \"out\", \"steps_every\": 11}}");
    /* floats are written as their shortest decimal */
    nb_config c;
    parse_ok(MIN_JSON, NULL, 0, &c);
    char *out = nb_config_to_json(&c);
    ck_assert_msg(strstr(out, "\"lr\":\t0.1,") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"milestones\":\t[]") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "\"quant\":\t{") != NULL, "%s", out);
    nb_free(out);
}
END_TEST

START_TEST(test_shipped_configs) {
    const char *src = getenv("NB_SOURCE_DIR");
    if (!src) {
        nb_test_skip("shipped configs", "NB_SOURCE_DIR is not set");
        return;
    }
    char pattern[1024];
    snprintf(pattern, sizeof pattern, "%s/experiments/*.json", src);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0) {
        nb_test_skip("shipped configs", "no experiments/*.json");
        return;
    }
    /* shipped configs name their files (quant.bitmap, checkpoints, data)
     * from the repository's root, where the README runs them */
    char cwd[4096];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(src), 0);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        nb_config c;
        nb_status st = nb_config_load(g.gl_pathv[i], NULL, 0, &c);
        ck_assert_msg(st == NB_OK, "%s", nb_last_error());
        char *json = nb_config_to_json(&c);
        nb_config again;
        ck_assert_msg(nb_config_parse(json, g.gl_pathv[i], NULL, 0, &again) == NB_OK, "%s", nb_last_error());
        memcpy(again.source, c.source, sizeof c.source); /* the only field parse cannot know */
        ck_assert(memcmp(&c, &again, sizeof c) == 0);
        nb_free(json);
    }
    ck_assert_int_eq(chdir(cwd), 0);
    printf("loaded %zu shipped configs\n", g.gl_pathc);
    globfree(&g);
}
END_TEST

/* Failing allocations give NB_STATUS_OOM, never a crash or a leak. */
START_TEST(test_alloc_failure) {
    const char *p = write_file("oom.json", MIN_JSON);
    for (long n = 1; n <= 4; n++) {
        nb_config c;
        nb_alloc_fail_after(n);
        nb_status st = nb_config_load(p, NULL, 0, &c);
        nb_alloc_fail_after(0);
        ck_assert_msg(st == NB_OK || st == NB_STATUS_OOM, "n=%ld: %s", n, nb_last_error());
    }
}
END_TEST

static Suite *config_suite(void) {
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_load_file);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_syntax_error);
    tcase_add_test(tc, test_wrong_type);
    tcase_add_test(tc, test_out_of_range);
    tcase_add_test(tc, test_not_integer);
    tcase_add_test(tc, test_unknown_key);
    tcase_add_test(tc, test_bad_enum);
    tcase_add_test(tc, test_bad_arrays);
    tcase_add_test(tc, test_quant_keys);
    tcase_add_test(tc, test_quant_bitmap);
    tcase_add_test(tc, test_quant_bitmap_model);
    tcase_add_test(tc, test_quant_bitmap_errors);
    tcase_add_loop_test(tc, test_required_missing, 0, 4);
    tcase_add_test(tc, test_cross_checks);
    tcase_add_test(tc, test_extends_merge);
    tcase_add_test(tc, test_extends_errors);
    tcase_add_test(tc, test_set_overrides);
    tcase_add_test(tc, test_set_errors);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_shipped_configs);
    tcase_add_test(tc, test_alloc_failure);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return nb_test_run(config_suite()); }
