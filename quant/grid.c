/* Integer grids: the range of a spec and the scale/zero point of a real
 * range (ALGORITHMS.md §1). */
#include <math.h>

#include "nb_quant.h"

void nb_qspec_range(const nb_qspec *q, int *qmin, int *qmax) {
    const int b = q->bits;
    if (q->symmetric && q->is_signed) {
        *qmax = (1 << (b - 1)) - 1;
        *qmin = q->narrow ? -*qmax : -(1 << (b - 1));
    } else {
        *qmin = 0;
        *qmax = (1 << b) - 1;
    }
}

void nb_qparams_from_range(const nb_qspec *q, float lo, float hi, float *scale, int32_t *zero_point) {
    if (lo > 0.0f) lo = 0.0f;
    if (hi < 0.0f) hi = 0.0f;
    int qmin, qmax;
    nb_qspec_range(q, &qmin, &qmax);
    float s;
    int32_t z = 0;
    if (q->symmetric) {
        /* Unsigned symmetric grids (after a ReLU) only see hi. */
        const float m = q->is_signed ? fmaxf(-lo, hi) : hi;
        s = m / (float)qmax;
    } else {
        s = (hi - lo) / (float)(qmax - qmin);
    }
    if (!(s > 0.0f) || !isfinite(s)) s = 1.0f; /* all zeros: any step represents them */
    if (!q->symmetric) {
        float zf = rintf(-lo / s);
        if (zf < (float)qmin) zf = (float)qmin;
        if (zf > (float)qmax) zf = (float)qmax;
        z = (int32_t)zf;
    }
    *scale = s;
    *zero_point = z;
}
