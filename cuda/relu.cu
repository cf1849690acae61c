// ReLU forward and backward on the GPU.
//
// Schedule: one thread per element (grid-stride loop), the value from
// maths.h (relu_forward_elem, relu_backward_elem). The CPU core runs the same
// element functions in an OpenMP SIMD loop; being element-wise, both backends
// give bit-identical results.
#include "cuda_check.cuh"  // first: its diagnostics settings must cover maths.h

#include "invert_native/cuda_ops.h"
#include "invert_native/maths.h"

namespace invert_native {
namespace {

__global__ void relu_forward_kernel(index_t n,
                                    const float* __restrict__ x,  // [n]
                                    float* __restrict__ y) {      // [n]
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
        y[i] = relu_forward_elem(x[i]);
}

__global__ void relu_backward_kernel(index_t n,
                                     const float* __restrict__ x,   // [n] forward input
                                     const float* __restrict__ dy,  // [n]
                                     float* __restrict__ dx) {      // [n]
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
        dx[i] = relu_backward_elem(x[i], dy[i]);
}

}  // namespace

void launch_relu_forward(index_t n, const float* x, float* y, cudaStream_t stream) {
    if (n <= 0) return;
    relu_forward_kernel<<<cuda_detail::grid_size(n), cuda_detail::kBlockSize, 0, stream>>>(n, x, y);
    INV_CUDA_CHECK_LAUNCH();
}

// Overwrites dx.
void launch_relu_backward(index_t n, const float* x, const float* dy, float* dx,
                          cudaStream_t stream) {
    if (n <= 0) return;
    relu_backward_kernel<<<cuda_detail::grid_size(n), cuda_detail::kBlockSize, 0, stream>>>(
        n, x, dy, dx);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace invert_native
