// conv2d forward and backward-to-input on the GPU.
//
// Schedule: one thread per output element (forward) or per input element
// (backward), each evaluating the direct sum of maths.h (conv2d_forward_at,
// conv2d_backward_at). The CPU core instead lowers each image and group to
// im2col + SGEMM, which suits its caches and SIMD units; on the GPU the direct
// form needs no workspace, exposes one thread per element, and its backward
// gathers over the outputs that cover an input, so there are no atomics and
// the result is deterministic. Both backends compute the same sums; only the
// order of the additions differs.
#include "cuda_check.cuh"  // first: its diagnostics settings must cover maths.h

#include "invert_native/cuda_ops.h"
#include "invert_native/maths.h"

namespace invert_native {
namespace {

__global__ void conv2d_forward_kernel(const Conv2dParams p, index_t total,
                                      const float* __restrict__ x,  // [N, C, H, W]
                                      const float* __restrict__ w,  // [K, C/groups, kh, kw]
                                      const float* __restrict__ b,  // [K] or nullptr
                                      float* __restrict__ y) {      // [N, K, Ho, Wo]
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
        const index_t ox = i % p.Wo;
        const index_t oy = (i / p.Wo) % p.Ho;
        const index_t k = (i / (p.Wo * p.Ho)) % p.K;
        const index_t n = i / (p.Wo * p.Ho * p.K);
        y[i] = conv2d_forward_at(p, x, w, b, n, k, oy, ox);
    }
}

__global__ void conv2d_backward_kernel(const Conv2dParams p, index_t total,
                                       const float* __restrict__ dy,  // [N, K, Ho, Wo]
                                       const float* __restrict__ w,   // [K, C/groups, kh, kw]
                                       float* __restrict__ dx) {      // [N, C, H, W]
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
        const index_t ix = i % p.W;
        const index_t iy = (i / p.W) % p.H;
        const index_t c = (i / (p.W * p.H)) % p.C;
        const index_t n = i / (p.W * p.H * p.C);
        dx[i] = conv2d_backward_at(p, dy, w, n, c, iy, ix);
    }
}

}  // namespace

void launch_conv2d_forward(const Conv2dParams& p, const float* x, const float* w, const float* b,
                           float* y, cudaStream_t stream) {
    const index_t total = p.N * p.K * p.Ho * p.Wo;
    if (total == 0) return;
    conv2d_forward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0, stream>>>(
        p, total, x, w, b, y);
    INV_CUDA_CHECK_LAUNCH();
}

// Overwrites dx.
void launch_conv2d_backward(const Conv2dParams& p, const float* dy, const float* w, float* dx,
                            cudaStream_t stream) {
    const index_t total = p.N * p.C * p.H * p.W;
    if (total == 0) return;
    conv2d_backward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0, stream>>>(
        p, total, dy, w, dx);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace invert_native
