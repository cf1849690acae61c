// Dense SIFT gradient + bilinear orientation binning on the GPU.
//
// Schedule: one thread per pixel (n, y, x); forward writes the K channels of
// its pixel (dsift_gradient_forward_at), backward gathers the derivatives of
// its four neighbours and itself (dsift_gradient_backward_at). The CPU core
// runs the same functions in a loop over rows; neighbouring threads take
// neighbouring x, so loads and stores of each channel are coalesced.
#include "cuda_check.cuh"  // first: its diagnostics settings must cover the maths headers

#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {
namespace {

__global__ void dsift_gradient_forward_kernel(const DsiftParams p, index_t total,
                                              const float* __restrict__ x,  // [N, 1, H, W]
                                              float* __restrict__ h) {      // [N, K, H, W]
    const index_t plane = p.H * p.W;
    const index_t stride = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const index_t pix = i % plane, n = i / plane;
        dsift_gradient_forward_at(p, x + n * plane, h + n * p.K * plane + pix, plane,
                                  pix / p.W, pix % p.W);
    }
}

__global__ void dsift_gradient_backward_kernel(const DsiftParams p, index_t total,
                                               const float* __restrict__ x,   // [N, 1, H, W]
                                               const float* __restrict__ dh,  // [N, K, H, W]
                                               float* __restrict__ dx) {      // [N, 1, H, W]
    const index_t plane = p.H * p.W;
    const index_t stride = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const index_t pix = i % plane, n = i / plane;
        dx[i] = dsift_gradient_backward_at(p, x + n * plane, dh + n * p.K * plane, pix / p.W,
                                           pix % p.W);
    }
}

}  // namespace

void launch_dsift_gradient_forward(const DsiftParams& p, const float* x, float* h,
                                   CUstream_st* stream) {
    const index_t total = p.N * p.H * p.W;
    if (total == 0) return;
    dsift_gradient_forward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0,
                                    stream>>>(p, total, x, h);
    INV_CUDA_CHECK_LAUNCH();
}

// Overwrites dx.
void launch_dsift_gradient_backward(const DsiftParams& p, const float* x, const float* dh,
                                    float* dx, CUstream_st* stream) {
    const index_t total = p.N * p.H * p.W;
    if (total == 0) return;
    dsift_gradient_backward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0,
                                     stream>>>(p, total, x, dh, dx);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace invert_native
