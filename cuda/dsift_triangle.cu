// Dense SIFT triangular spatial filter along one axis on the GPU.
//
// Schedule: one thread per element (n, t, y, x) reading its 2*bin_size - 1
// taps (dsift_triangle_at / dsift_triangle_backward_at, as the CPU core).
// Neighbouring threads take neighbouring x: along W they share taps through
// the cache, along H every tap load is coalesced.
#include "cuda_check.cuh"  // first: its diagnostics settings must cover the maths headers

#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {
namespace {

template <bool kBackward>
__global__ void dsift_triangle_kernel(const DsiftParams p, DsiftAxis axis, index_t total,
                                      const float* __restrict__ src,  // [N, K, H, W]
                                      float* __restrict__ dst) {      // [N, K, H, W]
    const index_t plane = p.H * p.W, b = p.bin_size;
    const index_t stride = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const index_t pix = i % plane, y = pix / p.W, x = pix % p.W;
        const float* sp = src + (i - pix);
        if (axis == DsiftAxis::W)
            dst[i] = kBackward ? dsift_triangle_backward_at(sp + y * p.W, p.W, 1, b, x)
                               : dsift_triangle_at(sp + y * p.W, p.W, 1, b, x);
        else
            dst[i] = kBackward ? dsift_triangle_backward_at(sp + x, p.H, p.W, b, y)
                               : dsift_triangle_at(sp + x, p.H, p.W, b, y);
    }
}

template <bool kBackward>
void launch_triangle(const DsiftParams& p, DsiftAxis axis, const float* src, float* dst,
                     cudaStream_t stream) {
    const index_t total = p.N * p.K * p.H * p.W;
    if (total == 0) return;
    dsift_triangle_kernel<kBackward><<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0,
                                       stream>>>(p, axis, total, src, dst);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_dsift_triangle_forward(const DsiftParams& p, DsiftAxis axis, const float* x, float* y,
                                   CUstream_st* stream) {
    launch_triangle<false>(p, axis, x, y, stream);
}

// Overwrites dx.
void launch_dsift_triangle_backward(const DsiftParams& p, DsiftAxis axis, const float* dy,
                                    float* dx, CUstream_st* stream) {
    launch_triangle<true>(p, axis, dy, dx, stream);
}

}  // namespace invert_native
