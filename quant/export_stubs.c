/* TEMPORARY until the ONNX writer merges. */
#include "nb_export.h"
nb_status nb_export_onnx(const nb_xmodel *x, const char *path, int opset) {
    (void)x; (void)opset;
    return nb_set_error(NB_STATUS_BAD_INPUT, "%s: ONNX export is not built yet", path);
}
