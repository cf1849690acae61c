// Cross-channel LRN forward and backward on the CPU (maths in maths.h).
#include "invert_native/maths.h"
#include "invert_native/ops.h"

namespace invert_native {

void lrn_forward(const LrnParams& p, const float* x, float* y, float* scale) {
    const index_t plane = p.H * p.W;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t c = 0; c < p.C; ++c) {
            const float* xn = x + n * p.C * plane;
            const index_t base = (n * p.C + c) * plane;
            for (index_t i = 0; i < plane; ++i) {
                const float s = lrn_scale_at(p, xn + i, plane, c);
                scale[base + i] = s;
                y[base + i] = lrn_output(p, x[base + i], s);
            }
        }
}

void lrn_backward(const LrnParams& p, const float* x, const float* y, const float* scale,
                  const float* dy, float* dx) {
    const index_t plane = p.H * p.W;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t c = 0; c < p.C; ++c) {
            const index_t off = n * p.C * plane;
            const index_t base = off + c * plane;
            for (index_t i = 0; i < plane; ++i) {
                const float acc =
                    lrn_backward_acc_at(p, dy + off + i, y + off + i, scale + off + i, plane, c);
                dx[base + i] = lrn_backward_elem(p, x[base + i], scale[base + i], dy[base + i], acc);
            }
        }
}

}  // namespace invert_native
