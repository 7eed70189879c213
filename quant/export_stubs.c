/* TEMPORARY until the ONNX writer and the integer engine merge. */
#include "nb_export.h"
nb_status nb_export_onnx(const nb_xmodel *x, const char *path, int opset) {
    (void)x; (void)opset;
    return nb_set_error(NB_STATUS_BAD_INPUT, "%s: ONNX export is not built yet", path);
}
nb_status nb_int_engine_new(const nb_xmodel *x, nb_int_engine **out) {
    (void)x; *out = NULL;
    return nb_set_error(NB_STATUS_BAD_INPUT, "the integer engine is not built yet");
}
void nb_int_engine_free(nb_int_engine *e) { (void)e; }
nb_status nb_int_engine_forward(nb_int_engine *e, const float *images, int N, float *logits) {
    (void)e; (void)images; (void)N; (void)logits;
    return NB_STATUS_BAD_INPUT;
}
