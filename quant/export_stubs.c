/* TEMPORARY until the ONNX writer and the integer engine merge: each stub
 * drops out as soon as its real file exists (CMakeLists.txt defines
 * NB_HAVE_ONNX / NB_HAVE_INT_ENGINE then). Delete this file after both merge. */
#include "nb_export.h"
#ifndef NB_HAVE_ONNX
nb_status nb_export_onnx(const nb_xmodel *x, const char *path, int opset) {
    (void)x; (void)opset;
    return nb_set_error(NB_STATUS_BAD_INPUT, "%s: ONNX export is not built yet", path);
}
#endif
#ifndef NB_HAVE_INT_ENGINE
nb_status nb_int_engine_new(const nb_xmodel *x, nb_int_engine **out) {
    (void)x; *out = NULL;
    return nb_set_error(NB_STATUS_BAD_INPUT, "the integer engine is not built yet");
}
void nb_int_engine_free(nb_int_engine *e) { (void)e; }
nb_status nb_int_engine_forward(nb_int_engine *e, const float *images, int N, float *logits) {
    (void)e; (void)images; (void)N; (void)logits;
    return NB_STATUS_BAD_INPUT;
}
#endif
