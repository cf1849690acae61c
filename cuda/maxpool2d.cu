// Max-pooling forward and backward on the GPU.
//
// Schedule: forward, one thread per output element evaluating
// maxpool2d_forward_at (maths.h) and recording its argmax; backward, one
// thread per input element gathering, with maxpool2d_backward_at, the dy of
// the outputs whose argmax it is. The CPU core loops over planes and
// scatters dy to the argmax instead (cheaper serially); the gather form needs
// no atomics, so the GPU result is deterministic. Both visit the outputs of a
// cell in row-major order, so the sums agree.
#include "cuda_check.cuh"  // first: its diagnostics settings must cover maths.h

#include "invert_native/cuda_ops.h"
#include "invert_native/maths.h"

namespace invert_native {
namespace {

__global__ void maxpool2d_forward_kernel(const Pool2dParams p, index_t total,
                                         const float* __restrict__ x,  // [N, C, H, W]
                                         float* __restrict__ y,        // [N, C, Ho, Wo]
                                         index_t* __restrict__ argmax) {  // [N, C, Ho, Wo]
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
        const index_t ox = i % p.Wo;
        const index_t oy = (i / p.Wo) % p.Ho;
        const index_t plane = i / (p.Wo * p.Ho);  // n * C + c
        index_t winner;
        y[i] = maxpool2d_forward_at(p, x + plane * p.H * p.W, oy, ox, &winner);
        argmax[i] = winner;
    }
}

__global__ void maxpool2d_backward_kernel(const Pool2dParams p, index_t total,
                                          const float* __restrict__ dy,        // [N, C, Ho, Wo]
                                          const index_t* __restrict__ argmax,  // [N, C, Ho, Wo]
                                          float* __restrict__ dx) {            // [N, C, H, W]
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
        const index_t ix = i % p.W;
        const index_t iy = (i / p.W) % p.H;
        const index_t plane = i / (p.W * p.H);  // n * C + c
        const index_t out = plane * p.Ho * p.Wo;
        dx[i] = maxpool2d_backward_at(p, dy + out, argmax + out, iy, ix);
    }
}

}  // namespace

void launch_maxpool2d_forward(const Pool2dParams& p, const float* x, float* y, index_t* argmax,
                              cudaStream_t stream) {
    const index_t total = p.N * p.C * p.Ho * p.Wo;
    if (total == 0) return;
    maxpool2d_forward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0,
                               stream>>>(p, total, x, y, argmax);
    INV_CUDA_CHECK_LAUNCH();
}

// Overwrites dx.
void launch_maxpool2d_backward(const Pool2dParams& p, const float* dy, const index_t* argmax,
                               float* dx, cudaStream_t stream) {
    const index_t total = p.N * p.C * p.H * p.W;
    if (total == 0) return;
    maxpool2d_backward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0,
                                stream>>>(p, total, dy, argmax, dx);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace invert_native
