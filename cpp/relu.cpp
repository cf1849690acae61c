// ReLU forward and backward on the CPU (maths in maths.h).
//
// Small tensors skip OpenMP altogether (kOmpMinWork): no team start-up.
#include "invert_native/maths.h"
#include "invert_native/ops.h"

namespace invert_native {

void relu_forward(index_t n, const float* x, float* y) {
    if (n < kOmpMinWork) {
        for (index_t i = 0; i < n; ++i) y[i] = relu_forward_elem(x[i]);
        return;
    }
#pragma omp parallel for simd schedule(static)
    for (index_t i = 0; i < n; ++i) y[i] = relu_forward_elem(x[i]);
}

void relu_backward(index_t n, const float* x, const float* dy, float* dx) {
    if (n < kOmpMinWork) {
        for (index_t i = 0; i < n; ++i) dx[i] = relu_backward_elem(x[i], dy[i]);
        return;
    }
#pragma omp parallel for simd schedule(static)
    for (index_t i = 0; i < n; ++i) dx[i] = relu_backward_elem(x[i], dy[i]);
}

}  // namespace invert_native
