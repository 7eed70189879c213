/* JPEG (libjpeg-turbo) and PNG (libpng) decoding to interleaved RGB
 * (plot/png.c writes PNG). Library errors become nb_status messages naming
 * the file; libjpeg's default exit()-on-error and its stderr warnings are replaced.
 * A warning about corrupt image data (a truncated file, a bad CRC) makes
 * the image an error ("damaged"): the libraries would decode on with gray. */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
/* jpeglib.h needs size_t and FILE first. */
#include <jpeglib.h>
#include <png.h>

#include "internal.h"

#define MAX_PIXELS ((size_t)1 << 28) /* refuse images above 268 Mpixel */

typedef struct {
    struct jpeg_error_mgr pub; /* first: libjpeg casts cinfo->err to this */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    char warning[JMSG_LENGTH_MAX]; /* the first corrupt-data warning, "" if none */
} jpeg_err;

static void jpeg_fail(j_common_ptr c) {
    jpeg_err *e = (jpeg_err *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jump, 1);
}

static void jpeg_silent(j_common_ptr c) { (void)c; }

/* Level -1 is a warning about corrupt data ("Premature end of JPEG file"
 * for a truncated one): libjpeg decodes on with gray, so keep the first one
 * to refuse the image; other levels are trace messages. */
static void jpeg_emit(j_common_ptr c, int level) {
    jpeg_err *e = (jpeg_err *)c->err;
    if (level >= 0) return;
    if (c->err->num_warnings++ == 0) (*c->err->format_message)(c, e->warning);
}

static nb_status decode_jpeg(const char *path, const uint8_t *buf, size_t len, uint8_t **pixels,
                             int *w, int *h) {
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    uint8_t *volatile out = NULL;
    uint8_t *volatile row = NULL;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpeg_fail;
    err.pub.output_message = jpeg_silent;
    err.pub.emit_message = jpeg_emit;
    err.warning[0] = '\0';
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        nb_free(out);
        nb_free(row);
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot decode JPEG: %s", path, err.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, buf, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    /* CMYK/YCCK (Adobe, inverted) come out as CMYK and are converted below. */
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    size_t W = cinfo.output_width, H = cinfo.output_height, comps = (size_t)cinfo.output_components;
    if (W == 0 || H == 0 || W * H > MAX_PIXELS || comps != (cmyk ? 4u : 3u)) {
        jpeg_destroy_decompress(&cinfo);
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: unsupported JPEG (%zux%zu, %zu components)",
                            path, W, H, comps);
    }
    out = nb_malloc(W * H * 3);
    row = nb_malloc(W * comps);
    if (!out || !row) {
        jpeg_destroy_decompress(&cinfo);
        nb_free(out);
        nb_free(row);
        return NB_STATUS_OOM;
    }
    while (cinfo.output_scanline < H) {
        size_t y = cinfo.output_scanline;
        JSAMPROW rp = row;
        jpeg_read_scanlines(&cinfo, &rp, 1);
        uint8_t *o = out + y * W * 3;
        if (!cmyk) {
            memcpy(o, row, W * 3);
        } else {
            for (size_t x = 0; x < W; x++) {
                unsigned k = row[4 * x + 3];
                for (int c = 0; c < 3; c++) o[3 * x + c] = (uint8_t)((row[4 * x + c] * k + 127) / 255);
            }
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    nb_free(row);
    if (err.pub.num_warnings) {
        nb_free(out);
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: damaged JPEG: %s", path, err.warning);
    }
    *pixels = out;
    *w = (int)W;
    *h = (int)H;
    return NB_OK;
}

static nb_status decode_png(const char *path, const uint8_t *buf, size_t len, uint8_t **pixels,
                            int *w, int *h) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, buf, len))
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot decode PNG: %s", path, img.message);
    if (img.width == 0 || img.height == 0 || (size_t)img.width * img.height > MAX_PIXELS) {
        png_image_free(&img);
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: unsupported PNG size %ux%u", path,
                            img.width, img.height);
    }
    img.format = PNG_FORMAT_RGB; /* gray and palette expand; alpha composites on black */
    uint8_t *out = nb_malloc(PNG_IMAGE_SIZE(img));
    if (!out) {
        png_image_free(&img);
        return NB_STATUS_OOM;
    }
    png_color black = {0, 0, 0};
    if (!png_image_finish_read(&img, &black, out, 0, NULL)) {
        nb_free(out);
        png_image_free(&img);
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: cannot decode PNG: %s", path, img.message);
    }
    /* Warnings about ancillary chunks (lower-case first letter: "iCCP:
     * known incorrect sRGB profile") concern metadata; any other warning
     * is about the image data. */
    if ((img.warning_or_error & PNG_IMAGE_WARNING) &&
        !(img.message[0] >= 'a' && img.message[0] <= 'z' && img.message[4] == ':')) {
        nb_free(out);
        png_image_free(&img);
        return nb_set_error(NB_STATUS_BAD_INPUT, "%s: damaged PNG: %s", path, img.message);
    }
    *pixels = out;
    *w = (int)img.width;
    *h = (int)img.height;
    png_image_free(&img);
    return NB_OK;
}

nb_status nb_image_load(const char *path, uint8_t **pixels, int *w, int *h) {
    NB_ASSERT(path && pixels && w && h, "NULL argument");
    *pixels = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return nb_set_error(NB_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    nb_status st = NB_OK;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : (size_t)1 << 16;
            uint8_t *nbuf = nb_realloc(buf, cap);
            if (!nbuf) {
                st = NB_STATUS_OOM;
                break;
            }
            buf = nbuf;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) {
            if (ferror(f)) st = nb_set_error(NB_STATUS_IO, "%s: read error: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (st == NB_OK) {
        static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
        if (len >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff)
            st = decode_jpeg(path, buf, len, pixels, w, h);
        else if (len >= 8 && !memcmp(buf, png_sig, 8))
            st = decode_png(path, buf, len, pixels, w, h);
        else
            st = nb_set_error(NB_STATUS_BAD_INPUT, "%s: not a JPEG or PNG image (%zu bytes)", path,
                              len);
    }
    nb_free(buf);
    return st;
}
