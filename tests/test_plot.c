/* plot/: PNG files decoded here, independently of libpng (chunks, every
 * CRC, IHDR, zlib inflate, row filters) and compared with libpng's decode
 * and, where /usr/bin/python3 has PIL, with Pillow's; the font; heat maps,
 * histograms and line charts checked at known pixels; write errors and
 * allocation failures leave no file behind. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "nb_test.h"

/* ------------------------------------------------------ a PNG decoder */

typedef struct {
    int w, h;
    uint8_t *rgb; /* (h, w, 3) */
} image;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* Decode an 8-bit RGB, non-interlaced PNG into *im (malloc'd pixels):
 * NULL, or what is wrong with it. */
static const char *try_decode(const char *path, image *im) {
    static char why[256];
    im->rgb = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return "cannot open";
    fseek(f, 0, SEEK_END);
    const long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len), *idat = NULL, *raw = NULL;
    const int got_all = buf && fread(buf, 1, (size_t)len, f) == (size_t)len;
    fclose(f);
    size_t idat_len = 0;
    int chunks = 0, ended = 0;
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
#define FAIL(...)                                 \
    do {                                          \
        snprintf(why, sizeof why, __VA_ARGS__);   \
        goto fail;                                \
    } while (0)
    if (!got_all) FAIL("cannot read");
    if (len < 8 || memcmp(buf, sig, 8)) FAIL("no PNG signature");
    for (long at = 8; at < len; chunks++) {
        if (at + 12 > len || ended) FAIL("a chunk past the end or after IEND");
        const uint32_t n = be32(buf + at);
        const uint8_t *type = buf + at + 4, *data = buf + at + 8;
        if (at + 12 + (long)n > len) FAIL("chunk %.4s runs past the end", (const char *)type);
        const uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), type, n + 4);
        if (crc != be32(data + n)) FAIL("bad CRC in chunk %.4s", (const char *)type);
        if (chunks == 0) {
            if (memcmp(type, "IHDR", 4) || n != 13) FAIL("IHDR is not first");
            im->w = (int)be32(data);
            im->h = (int)be32(data + 4);
            /* bit depth 8, RGB, deflate, filter method 0, no interlace */
            if (data[8] != 8 || data[9] != 2 || data[10] || data[11] || data[12])
                FAIL("IHDR %d %d %d %d %d", data[8], data[9], data[10], data[11], data[12]);
        } else if (!memcmp(type, "IDAT", 4)) {
            idat = realloc(idat, idat_len + n);
            memcpy(idat + idat_len, data, n);
            idat_len += n;
        } else if (!memcmp(type, "IEND", 4)) {
            ended = 1;
        }
        at += 12 + (long)n;
    }
    if (!ended || !idat_len) FAIL("no IDAT or IEND");
    const size_t stride = (size_t)im->w * 3, raw_len = (stride + 1) * (size_t)im->h;
    raw = malloc(raw_len);
    uLongf out_len = (uLongf)raw_len;
    if (uncompress(raw, &out_len, idat, (uLong)idat_len) != Z_OK || out_len != raw_len)
        FAIL("IDAT does not inflate to %zu bytes", raw_len);
    im->rgb = malloc(stride * (size_t)im->h);
    for (int y = 0; y < im->h; y++) {
        const uint8_t *in = raw + (size_t)y * (stride + 1) + 1;
        uint8_t *out = im->rgb + (size_t)y * stride;
        const uint8_t *up = y ? out - stride : NULL;
        const int filter = in[-1];
        if (filter > 4) FAIL("row %d: filter %d", y, filter);
        for (size_t x = 0; x < stride; x++) {
            const int a = x >= 3 ? out[x - 3] : 0, b = up ? up[x] : 0,
                      c = up && x >= 3 ? up[x - 3] : 0;
            const int pred = filter == 0   ? 0
                             : filter == 1 ? a
                             : filter == 2 ? b
                             : filter == 3 ? (a + b) / 2
                                           : paeth(a, b, c);
            out[x] = (uint8_t)(in[x] + pred);
        }
    }
#undef FAIL
    free(raw);
    free(idat);
    free(buf);
    return NULL;
fail:
    free(im->rgb);
    im->rgb = NULL;
    free(raw);
    free(idat);
    free(buf);
    return why;
}

static image decode(const char *path) {
    image im;
    const char *why = try_decode(path, &im);
    ck_assert_msg(why == NULL, "%s: %s", path, why);
    return im;
}

static const uint8_t *px(const image *im, int x, int y) {
    /* not ck_assert: in fork mode each passing check writes to a pipe */
    if (x < 0 || y < 0 || x >= im->w || y >= im->h)
        ck_abort_msg("pixel (%d, %d) outside %d x %d", x, y, im->w, im->h);
    return im->rgb + ((size_t)y * (size_t)im->w + (size_t)x) * 3;
}

static int is(const uint8_t *p, nb_rgb c) { return p[0] == c.r && p[1] == c.g && p[2] == c.b; }

/* The box spanned by runs of at least min_run pixels of colour c. */
typedef struct {
    int x0, y0, x1, y1; /* inclusive; x0 > x1 when none */
} box;

static box find_box(const image *im, nb_rgb c, int min_run) {
    box b = {im->w, im->h, -1, -1};
    for (int y = 0; y < im->h; y++)
        for (int x = 0, run = 0; x < im->w; x++) {
            run = is(px(im, x, y), c) ? run + 1 : 0;
            if (run == min_run) {
                b.x0 = b.x0 < x - run + 1 ? b.x0 : x - run + 1;
                b.y0 = b.y0 < y ? b.y0 : y;
                b.y1 = y;
            }
            if (run >= min_run && x > b.x1) b.x1 = x;
        }
    return b;
}

static long count_colour(const image *im, box b, nb_rgb c) {
    long n = 0;
    for (int y = b.y0; y <= b.y1; y++)
        for (int x = b.x0; x <= b.x1; x++) n += is(px(im, x, y), c);
    return n;
}

/* Where /usr/bin/python3 has PIL: Pillow's decode of path matches ours. */
static void pillow_agrees(const char *path, const image *im) {
    if (nb_test_sh("/usr/bin/python3 -c 'import PIL' 2>/dev/null", NULL, 0) != 0) {
        nb_test_skip("PNG decoded by Pillow", "/usr/bin/python3 cannot import PIL");
        return;
    }
    char cmd[2048], out[256];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import sys, zlib; from PIL import Image; "
             "i = Image.open(sys.argv[1]); print(i.mode, i.size[0], i.size[1], "
             "zlib.crc32(i.convert(\"RGB\").tobytes()))' %s 2>&1",
             path);
    ck_assert_int_eq(nb_test_sh(cmd, out, sizeof out), 0);
    char want[256];
    snprintf(want, sizeof want, "RGB %d %d %lu\n", im->w, im->h,
             crc32(0L, im->rgb, (uInt)((size_t)im->w * (size_t)im->h * 3)));
    ck_assert_str_eq(out, want);
}

/* No file in dir whose name starts with prefix. */
static int leftovers(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    ck_assert(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += !strncmp(e->d_name, prefix, strlen(prefix));
    closedir(d);
    return n;
}

/* ------------------------------------------------------------- PNG files */

START_TEST(test_png_round_trip) {
    nb_canvas c;
    ck_assert_int_eq(nb_canvas_init(&c, 301, 97, (nb_rgb){1, 2, 3}), NB_OK);
    for (int y = 0; y < c.h; y++)
        for (int x = 0; x < c.w; x++)
            if ((x * 7 + y * 13) % 11 < 6)
                nb_canvas_rect(&c, x, y, 1, 1, (nb_rgb){(uint8_t)x, (uint8_t)y, (uint8_t)(x ^ y)});
    const char *p = nb_test_tmp_path("pattern.png");
    ck_assert_int_eq(nb_canvas_write_png(&c, p), NB_OK);
    image im = decode(p);
    ck_assert_int_eq(im.w, 301);
    ck_assert_int_eq(im.h, 97);
    ck_assert(!memcmp(im.rgb, c.rgb, (size_t)c.w * (size_t)c.h * 3));
    /* libpng reads it the same; so does Pillow where it is installed */
    uint8_t *lib;
    int w, h;
    ck_assert_int_eq(nb_image_load(p, &lib, &w, &h), NB_OK);
    ck_assert(w == im.w && h == im.h && !memcmp(lib, im.rgb, (size_t)w * (size_t)h * 3));
    nb_free(lib);
    pillow_agrees(p, &im);
    /* the decoder notices a damaged byte in the first IDAT's data */
    FILE *f = fopen(p, "r+b");
    uint8_t head[4096];
    const size_t n = fread(head, 1, sizeof head, f);
    size_t at = 8;
    while (at + 8 < n && memcmp(head + at + 4, "IDAT", 4)) at += 12 + be32(head + at);
    ck_assert_msg(at + 20 < n, "no IDAT in the first %zu bytes", n);
    fseek(f, (long)at + 8 + 10, SEEK_SET);
    fputc(head[at + 8 + 10] ^ 0x10, f);
    fclose(f);
    image bad;
    const char *why = try_decode(p, &bad);
    ck_assert_msg(why && strstr(why, "bad CRC in chunk IDAT"), "%s", why ? why : "decoded");
    free(im.rgb);
    nb_canvas_deinit(&c);
    ck_assert_int_eq(leftovers(nb_test_tmpdir(), "pattern.png.tmp"), 0);
}
END_TEST

START_TEST(test_png_write_errors) {
    nb_canvas c;
    ck_assert_int_eq(nb_canvas_init(&c, 8, 8, (nb_rgb){9, 9, 9}), NB_OK);
    /* a folder that does not exist */
    ck_assert_int_eq(nb_canvas_write_png(&c, "/nonexistent-dir/plot.png"), NB_STATUS_IO);
    ck_assert_msg(strstr(nb_last_error(), "/nonexistent-dir/plot.png"), "%s", nb_last_error());
    /* the target is a folder: the temporary file is written, the rename
     * fails, and the temporary file goes */
    const char *dir = nb_test_tmp_path("a-folder.png");
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    ck_assert_int_eq(nb_canvas_write_png(&c, dir), NB_STATUS_IO);
    ck_assert_msg(strstr(nb_last_error(), "a-folder.png: cannot write PNG"), "%s", nb_last_error());
    ck_assert_int_eq(leftovers(nb_test_tmpdir(), "a-folder.png.tmp"), 0);
    /* a folder without write permission (root writes anyway) */
    const char *ro = nb_test_tmp_path("read-only");
    ck_assert_int_eq(mkdir(ro, 0555), 0);
    if (geteuid() == 0) {
        nb_test_skip("PNG into a read-only folder", "running as root");
    } else {
        char path[1100];
        snprintf(path, sizeof path, "%s/x.png", ro);
        ck_assert_int_eq(nb_canvas_write_png(&c, path), NB_STATUS_IO);
        ck_assert_msg(strstr(nb_last_error(), path) && strstr(nb_last_error(), "ermission"), "%s",
                      nb_last_error());
        ck_assert_int_eq(leftovers(ro, "x.png"), 0);
    }
    /* a canvas of no size, or too big */
    nb_canvas bad;
    ck_assert_int_eq(nb_canvas_init(&bad, 0, 5, (nb_rgb){0, 0, 0}), NB_STATUS_BAD_INPUT);
    ck_assert_int_eq(nb_canvas_init(&bad, 70000, 5, (nb_rgb){0, 0, 0}), NB_STATUS_BAD_INPUT);
    ck_assert(bad.rgb == NULL);
    nb_canvas_deinit(&c);
}
END_TEST

/* ------------------------------------------------------------------ text */

START_TEST(test_font) {
    ck_assert_int_eq(nb_text_width("abc", 2), (3 * NB_FONT_ADVANCE - 1) * 2);
    ck_assert_int_eq(nb_text_width("", 3), 0);
    nb_canvas c;
    const nb_rgb ink = {0, 0, 0};
    ck_assert_int_eq(nb_canvas_init(&c, 12, 20, (nb_rgb){255, 255, 255}), NB_OK);
    image im = {c.w, c.h, c.rgb};
    /* '|' is the middle column, rows 0..6; at scale 2 columns 4-5, rows 0..13 */
    nb_canvas_text(&c, 0, 0, 2, ink, "|");
    for (int y = 0; y < c.h; y++)
        for (int x = 0; x < c.w; x++)
            ck_assert_msg(is(px(&im, x, y), ink) == (x >= 4 && x <= 5 && y < 14), "(%d, %d)", x, y);
    /* turned up from (1, 12): along the text is up, the glyph's top row is
     * column 1, so '|' becomes a row: columns 1..7, row 12 - 1 - 2 = 9 */
    nb_canvas_rect(&c, 0, 0, c.w, c.h, (nb_rgb){255, 255, 255});
    nb_canvas_text_up(&c, 1, 12, 1, ink, "|");
    for (int y = 0; y < c.h; y++)
        for (int x = 0; x < c.w; x++)
            ck_assert_msg(is(px(&im, x, y), ink) == (x >= 1 && x <= 7 && y == 9), "(%d, %d)", x, y);
    /* bytes outside printable ASCII draw as '?'; text is clipped, not overrun */
    nb_canvas_rect(&c, 0, 0, c.w, c.h, (nb_rgb){255, 255, 255});
    nb_canvas_text(&c, 0, 0, 1, ink, "\xC3");
    uint8_t q[12 * 20 * 3];
    memcpy(q, c.rgb, sizeof q);
    nb_canvas_rect(&c, 0, 0, c.w, c.h, (nb_rgb){255, 255, 255});
    nb_canvas_text(&c, 0, 0, 1, ink, "?");
    ck_assert(!memcmp(q, c.rgb, sizeof q));
    nb_canvas_text(&c, -30, 15, 4, ink, "clipped text");
    nb_canvas_text_up(&c, 10, 3, 4, ink, "clipped");
    nb_canvas_deinit(&c);
}
END_TEST

/* -------------------------------------------------------------- heat map */

/* The viridis stops at 0, 0.2, ..., 1 (matplotlib). */
static const nb_rgb stop[6] = {{68, 1, 84},     {65, 68, 135},  {42, 120, 142},
                               {34, 168, 132}, {122, 209, 81}, {253, 231, 37}};
static const nb_rgb na = {214, 214, 214};

START_TEST(test_heatmap_cells) {
    /* values 0..5 over 2 x 3 cells: each cell takes an exact stop colour */
    const char *rows[] = {"first", "layer3.2.conv2"};
    const char *cols[] = {"2 bits", "3", "4"};
    float v[6] = {0, 1, 2, 3, 4, 5};
    nb_heatmap_opts o = nb_heatmap_opts_default();
    o.annotate = 0;
    const char *p = nb_test_tmp_path("cells.png");
    ck_assert_int_eq(nb_plot_heatmap(p, "cells", 2, rows, 3, cols, v, &o), NB_OK);
    image im = decode(p);
    box b[6];
    for (int i = 0; i < 6; i++) {
        b[i] = find_box(&im, stop[i], 30); /* cells are wide; colour bar rows are not */
        ck_assert_msg(b[i].x1 > b[i].x0, "no cell of value %d", i);
        /* a solid rectangle */
        long area = (long)(b[i].x1 - b[i].x0 + 1) * (b[i].y1 - b[i].y0 + 1);
        ck_assert_int_eq(count_colour(&im, b[i], stop[i]), area);
        ck_assert_int_eq(b[i].y1 - b[i].y0, b[0].y1 - b[0].y0);
        ck_assert_int_eq(b[i].x1 - b[i].x0, b[0].x1 - b[0].x0);
    }
    /* laid out row-major: rows share their top edge, columns their left edge */
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(b[k].y0, b[0].y0);
        ck_assert_int_eq(b[3 + k].y0, b[3].y0);
        ck_assert_int_eq(b[3 + k].x0, b[k].x0);
        if (k) ck_assert_int_gt(b[k].x0, b[k - 1].x1);
    }
    ck_assert_int_gt(b[3].y0, b[0].y1);
    /* the colour bar: a column with every stop, brightest at the top */
    const int bar_x = b[2].x1 + 30;
    int top = -1, bottom = -1;
    for (int y = 0; y < im.h; y++) {
        if (is(px(&im, bar_x, y), stop[5]) && top < 0) top = y;
        if (is(px(&im, bar_x, y), stop[0])) bottom = y;
    }
    ck_assert_msg(top >= 0 && bottom > top, "no colour bar at x = %d", bar_x);
    free(im.rgb);

    /* the same with the values written in: white on dark, dark on light */
    o.annotate = 1;
    ck_assert_int_eq(nb_plot_heatmap(p, "cells", 2, rows, 3, cols, v, &o), NB_OK);
    im = decode(p);
    box dark = find_box(&im, stop[0], 30), light = find_box(&im, stop[5], 30);
    ck_assert_int_gt(count_colour(&im, dark, (nb_rgb){255, 255, 255}), 10);
    ck_assert_int_gt(count_colour(&im, light, (nb_rgb){34, 34, 34}), 10);
    free(im.rgb);

    /* the same bytes every time */
    const char *q = nb_test_tmp_path("cells2.png");
    ck_assert_int_eq(nb_plot_heatmap(q, "cells", 2, rows, 3, cols, v, &o), NB_OK);
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", p, q);
    ck_assert_int_eq(nb_test_sh(cmd, NULL, 0), 0);
}
END_TEST

START_TEST(test_heatmap_log_and_na) {
    /* log scale: 1, 10, ..., 1e5 are the stops; 0 and -1 take the lowest */
    float v[8] = {1, 10, 100, 1e3f, 1e4f, 1e5f, 0, -1};
    nb_heatmap_opts o = nb_heatmap_opts_default();
    o.log_scale = 1;
    o.annotate = 0;
    const char *p = nb_test_tmp_path("log.png");
    ck_assert_int_eq(nb_plot_heatmap(p, NULL, 8, NULL, 1, NULL, v, &o), NB_OK);
    image im = decode(p);
    box b[6];
    for (int i = 0; i < 6; i++) {
        b[i] = find_box(&im, stop[i], 30);
        ck_assert_msg(b[i].x1 > b[i].x0, "no cell of 10^%d", i);
        if (i) ck_assert_int_gt(b[i].y0, b[i - 1].y0); /* one column, rows downwards */
    }
    /* rows 6 and 7 have stop 0 too: value 1's box runs down over them */
    ck_assert_int_gt(b[0].y1, b[5].y1);
    free(im.rgb);

    /* NaN and infinity: grey, hatched cells and an "n/a" key; no crash */
    float w[6] = {1, NAN, 3, INFINITY, 5, 6};
    const char *rows[] = {"a", NULL};
    ck_assert_int_eq(nb_plot_heatmap(p, "n/a", 2, rows, 3, NULL, w, NULL), NB_OK);
    im = decode(p);
    box g = find_box(&im, na, 5); /* hatching breaks the runs */
    ck_assert_msg(g.x1 > g.x0, "no n/a cell");
    /* the n/a cells are row 0 column 1 and row 1 column 0 (grey or its
     * hatching near their top-left corners); the key is below them */
    box c1 = find_box(&im, stop[0], 30), c6 = find_box(&im, stop[5], 30);
    const int pitch_x = (c6.x0 - c1.x0) / 2, pitch_y = c6.y0 - c1.y0;
    const nb_rgb hatch = {168, 168, 168};
    for (int d = 1; d < 4; d++) {
        const uint8_t *nan_cell = px(&im, c1.x0 + pitch_x + d, c1.y0 + 2);
        const uint8_t *inf_cell = px(&im, c1.x0 + 2, c1.y0 + pitch_y + d);
        ck_assert(is(nan_cell, na) || is(nan_cell, hatch));
        ck_assert(is(inf_cell, na) || is(inf_cell, hatch));
    }
    ck_assert_int_gt(g.y1, c6.y1 + 20);
    free(im.rgb);
    float all_nan[2] = {NAN, NAN};
    ck_assert_int_eq(nb_plot_heatmap(p, "all n/a", 1, NULL, 2, NULL, all_nan, &o), NB_OK);
    im = decode(p);
    ck_assert_int_gt(find_box(&im, na, 5).x1, 0);
    free(im.rgb);
}
END_TEST

START_TEST(test_heatmap_errors) {
    float v[2] = {1, 2};
    const char *p = nb_test_tmp_path("bad.png");
    ck_assert_int_eq(nb_plot_heatmap(p, "t", 0, NULL, 2, NULL, v, NULL), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "bad.png: heat map of 0 x 2 cells"));
    ck_assert_int_eq(nb_plot_heatmap(p, "t", 1, NULL, 100000, NULL, v, NULL), NB_STATUS_BAD_INPUT);
    ck_assert_int_eq(access(p, F_OK), -1);
    ck_assert_int_eq(nb_plot_heatmap("/nonexistent-dir/h.png", "t", 1, NULL, 2, NULL, v, NULL),
                     NB_STATUS_IO);
    ck_assert(strstr(nb_last_error(), "/nonexistent-dir/h.png"));
    /* every failed allocation is a status, and no file */
    const char *q = nb_test_tmp_path("oom.png");
    nb_status st = NB_STATUS_OOM;
    for (long n = 1; st == NB_STATUS_OOM && n < 100; n++) {
        nb_alloc_fail_after(n);
        st = nb_plot_heatmap(q, "t", 1, NULL, 2, NULL, v, NULL);
        nb_alloc_fail_after(0);
        ck_assert_int_eq(access(q, F_OK) == 0, st == NB_OK);
    }
    ck_assert_int_eq(st, NB_OK);
    /* a long row label loses its front, not the grid */
    const char *rows[] = {"a.very.long.module.path.that.goes.on.layer3.2.conv2"};
    ck_assert_int_eq(nb_plot_heatmap(p, NULL, 1, rows, 2, NULL, v, NULL), NB_OK);
    image im = decode(p);
    ck_assert_int_lt(im.w, 700);
    free(im.rgb);
}
END_TEST

/* ------------------------------------------------------------- histogram */

static const nb_rgb bar_fill = {158, 176, 199}, red = {255, 0, 0}, blue = {0, 0, 255};

/* Rows of colour c in column x. */
static int column_count(const image *im, int x, nb_rgb c) {
    int n = 0;
    for (int y = 0; y < im->h; y++) n += is(px(im, x, y), c);
    return n;
}

START_TEST(test_histogram_bars) {
    /* 10 values in the low bin, 30 in the high one, NaN ignored */
    float v[41];
    for (int i = 0; i < 10; i++) v[i] = -1.0f;
    for (int i = 10; i < 40; i++) v[i] = 1.0f;
    v[40] = NAN;
    const float at_mid[1] = {0.0f}, at_quarter[2] = {-0.5f, 2.5f};
    const nb_plot_series m[2] = {
        {.label = "solid", .x = at_mid, .n = 1, .color = red},
        {.label = "dashed", .x = at_quarter, .n = 2, .color = blue},
    };
    const char *p = nb_test_tmp_path("hist.png");
    ck_assert_int_eq(nb_plot_histogram(p, "two bars", v, 41, 2, m, 2, "value"), NB_OK);
    image im = decode(p);
    /* two bars (runs of columns with bar colour), the right one three
     * times as tall */
    int runs = 0, x0[3] = {0}, x1[3] = {0}, hgt[3] = {0};
    for (int x = 0, prev = 0; x < im.w; x++) {
        const int n = column_count(&im, x, bar_fill);
        if (n && !prev && runs < 3) x0[runs++] = x;
        if (n) {
            x1[runs - 1] = x;
            hgt[runs - 1] = n > hgt[runs - 1] ? n : hgt[runs - 1];
        }
        prev = n;
    }
    ck_assert_int_eq(runs, 2);
    const int lo_x0 = x0[0], lo_x1 = x1[0], hi_x0 = x0[1], hi_x1 = x1[1];
    const int lo_h = hgt[0], hi_h = hgt[1];
    ck_assert_msg(lo_x0 >= 0 && hi_x0 > lo_x1, "bars at %d-%d and %d-%d", lo_x0, lo_x1, hi_x0,
                  hi_x1);
    ck_assert_msg(abs(hi_h - 3 * lo_h) <= 3, "bar heights %d and %d", lo_h, hi_h);
    /* the solid red line at 0 sits between the bars (they meet there) */
    int red_x = -1, red_n = 0;
    for (int x = 0; x < im.w; x++) {
        const int n = column_count(&im, x, red);
        if (n > red_n) {
            red_n = n;
            red_x = x;
        }
    }
    ck_assert_msg(red_x >= lo_x1 - 2 && red_x <= hi_x0 + 2, "red line at %d, bars %d..%d|%d..%d",
                  red_x, lo_x0, lo_x1, hi_x0, hi_x1);
    ck_assert_int_gt(red_n, 3 * lo_h / 2);
    /* the dashed blue lines: one inside the low bar, one right of the high
     * bar (the axis reaches out to it), each broken into dashes */
    int blue_cols = 0, past = 0;
    for (int x = 0; x < im.w; x++) {
        const int n = column_count(&im, x, blue);
        if (n > red_n / 2) {
            blue_cols++;
            ck_assert_int_lt(n, red_n); /* gaps */
            past |= x > hi_x1;
        }
    }
    ck_assert_int_eq(blue_cols, 2 * 3); /* two lines, 3 pixels wide */
    ck_assert(past);
    pillow_agrees(p, &im);
    free(im.rgb);

    /* one value: a range is made around it */
    ck_assert_int_eq(nb_plot_histogram(p, NULL, v, 1, 10, NULL, 0, NULL), NB_OK);
    ck_assert_int_eq(nb_plot_histogram(p, "t", v, 41, 0, NULL, 0, NULL), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "hist.png: histogram bins 0"));
    float nan[3] = {NAN, INFINITY, -INFINITY};
    ck_assert_int_eq(nb_plot_histogram(p, "t", nan, 3, 10, NULL, 0, NULL), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "no finite"));
    ck_assert_int_eq(nb_plot_histogram(p, "t", NULL, 0, 10, NULL, 0, NULL), NB_STATUS_BAD_INPUT);
}
END_TEST

/* ------------------------------------------------------------ line chart */

START_TEST(test_lines) {
    const nb_rgb green = {0, 160, 0};
    float x[5] = {0, 1, 2, 3, 4}, up[5] = {0, 1, 2, 3, 4}, broken[5] = {4, 3, NAN, 1, 0};
    const nb_plot_series s[2] = {
        {.label = "up", .x = x, .y = up, .n = 5, .color = green},
        {.label = NULL, .x = x, .y = broken, .n = 5, .color = red}, /* no legend swatch */
    };
    const char *p = nb_test_tmp_path("lines.png");
    ck_assert_int_eq(nb_plot_lines(p, "lines", s, 2, "epoch", "loss"), NB_OK);
    image im = decode(p);
    /* green rises to the right: its leftmost pixel is lower on screen */
    int gl = -1, gl_y = 0, gr_y = 0;
    for (int xx = 0; xx < im.w; xx++)
        for (int y = 0; y < im.h; y++)
            if (is(px(&im, xx, y), green)) {
                if (gl < 0) {
                    gl = xx;
                    gl_y = y;
                }
                gr_y = y;
            }
    ck_assert_int_ge(gl, 0);
    ck_assert_int_gt(gl_y, gr_y + 100);
    /* red has no columns between x = 1 and x = 3 (the NaN at 2): half its
     * width is a gap */
    int first = -1, last = -1, gap = 0;
    for (int xx = 0; xx < im.w; xx++) {
        if (!column_count(&im, xx, red)) continue;
        if (last >= 0 && xx - last > gap) gap = xx - last;
        if (first < 0) first = xx;
        last = xx;
    }
    ck_assert_msg(gap * 100 > 45 * (last - first), "gap %d in %d..%d", gap, first, last);
    free(im.rgb);
    float allnan[1] = {NAN};
    const nb_plot_series none = {.label = "x", .x = x, .y = allnan, .n = 1, .color = green};
    ck_assert_int_eq(nb_plot_lines(p, NULL, &none, 1, NULL, NULL), NB_STATUS_BAD_INPUT);
    ck_assert(strstr(nb_last_error(), "lines.png: line chart"));
    /* one point is a dot */
    const nb_plot_series dot = {.label = NULL, .x = x, .y = up, .n = 1, .color = green};
    ck_assert_int_eq(nb_plot_lines(p, NULL, &dot, 1, NULL, NULL), NB_OK);
    im = decode(p);
    ck_assert_int_eq(count_colour(&im, (box){0, 0, im.w - 1, im.h - 1}, green), 25);
    free(im.rgb);
}
END_TEST

int main(void) {
    Suite *s = suite_create("plot");
    TCase *tc = tcase_create("plot");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_png_round_trip);
    tcase_add_test(tc, test_png_write_errors);
    tcase_add_test(tc, test_font);
    tcase_add_test(tc, test_heatmap_cells);
    tcase_add_test(tc, test_heatmap_log_and_na);
    tcase_add_test(tc, test_heatmap_errors);
    tcase_add_test(tc, test_histogram_bars);
    tcase_add_test(tc, test_lines);
    suite_add_tcase(s, tc);
    return nb_test_run(s);
}
