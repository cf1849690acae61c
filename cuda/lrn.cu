// Cross-channel LRN forward and backward on the GPU.
//
// Schedule: one thread per element (n, c, h, w). Forward sums x^2 over the
// channel window with lrn_scale_at and writes scale and y; backward gathers
// acc_c over the transposed window with lrn_backward_acc_at and applies
// lrn_backward_elem (all maths.h). The CPU core runs the same per-element
// functions, parallel over (n, c) planes with an inner loop over pixels; here
// neighbouring threads take neighbouring pixels of one plane, so every load
// of a channel is coalesced. Each element re-reads its size-channel window
// (a running sum along c would save reads but change the rounding).
#include "cuda_check.cuh"  // first: its diagnostics settings must cover maths.h

#include "invert_native/cuda_ops.h"
#include "invert_native/maths.h"

namespace invert_native {
namespace {

__global__ void lrn_forward_kernel(const LrnParams p, index_t total,
                                   const float* __restrict__ x,  // [N, C, H, W]
                                   float* __restrict__ y,        // [N, C, H, W]
                                   float* __restrict__ scale) {  // [N, C, H, W]
    const index_t plane = p.H * p.W;
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
        const index_t pix = i % plane;
        const index_t c = (i / plane) % p.C;
        const index_t n = i / (plane * p.C);
        const float s = lrn_scale_at(p, x + n * p.C * plane + pix, plane, c);
        scale[i] = s;
        y[i] = lrn_output(p, x[i], s);
    }
}

__global__ void lrn_backward_kernel(const LrnParams p, index_t total,
                                    const float* __restrict__ x,      // [N, C, H, W]
                                    const float* __restrict__ y,      // [N, C, H, W]
                                    const float* __restrict__ scale,  // [N, C, H, W]
                                    const float* __restrict__ dy,     // [N, C, H, W]
                                    float* __restrict__ dx) {         // [N, C, H, W]
    const index_t plane = p.H * p.W;
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
        const index_t pix = i % plane;
        const index_t c = (i / plane) % p.C;
        const index_t n = i / (plane * p.C);
        const index_t pixel0 = n * p.C * plane + pix;  // channel 0 of this pixel
        const float acc =
            lrn_backward_acc_at(p, dy + pixel0, y + pixel0, scale + pixel0, plane, c);
        dx[i] = lrn_backward_elem(p, x[i], scale[i], dy[i], acc);
    }
}

}  // namespace

void launch_lrn_forward(const LrnParams& p, const float* x, float* y, float* scale,
                        cudaStream_t stream) {
    const index_t total = p.N * p.C * p.H * p.W;
    if (total == 0) return;
    lrn_forward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0, stream>>>(
        p, total, x, y, scale);
    INV_CUDA_CHECK_LAUNCH();
}

// Overwrites dx.
void launch_lrn_backward(const LrnParams& p, const float* x, const float* y, const float* scale,
                         const float* dy, float* dx, cudaStream_t stream) {
    const index_t total = p.N * p.C * p.H * p.W;
    if (total == 0) return;
    lrn_backward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0, stream>>>(
        p, total, x, y, scale, dy, dx);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace invert_native
