// Dense SIFT descriptor normalisation (L2, clamp, L2) on the GPU.
//
// Schedule: one thread per descriptor (n, fy, fx), looping over its D
// channels in order (dsift_normalize_forward_at / _backward_at, as the CPU
// core, so both backends sum in the same order). Neighbouring threads take
// neighbouring frames, whose channel c lies side by side: every load and
// store of the loops is coalesced.
#include "cuda_check.cuh"  // first: its diagnostics settings must cover the maths headers

#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {
namespace {

__global__ void dsift_normalize_forward_kernel(const DsiftParams p, index_t total,
                                               const float* __restrict__ d,  // [N, D, ny, nx]
                                               float* __restrict__ y,        // [N, D, ny, nx]
                                               float* __restrict__ norms) {  // [N, 2, ny, nx]
    const index_t F = p.ny * p.nx, D = p.D();
    const index_t stride = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const index_t f = i % F, n = i / F;
        const index_t base = n * D * F + f;
        dsift_normalize_forward_at(p, d + base, y + base, F, &norms[(n * 2) * F + f],
                                   &norms[(n * 2 + 1) * F + f]);
    }
}

__global__ void dsift_normalize_backward_kernel(const DsiftParams p, index_t total,
                                                const float* __restrict__ d,      // [N, D, ny, nx]
                                                const float* __restrict__ norms,  // [N, 2, ny, nx]
                                                const float* __restrict__ dy,     // [N, D, ny, nx]
                                                float* __restrict__ dd) {         // [N, D, ny, nx]
    const index_t F = p.ny * p.nx, D = p.D();
    const index_t stride = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const index_t f = i % F, n = i / F;
        const index_t base = n * D * F + f;
        dsift_normalize_backward_at(p, d + base, dy + base, dd + base, F, norms[(n * 2) * F + f],
                                    norms[(n * 2 + 1) * F + f]);
    }
}

}  // namespace

void launch_dsift_normalize_forward(const DsiftParams& p, const float* d, float* y, float* norms,
                                    CUstream_st* stream) {
    const index_t total = p.N * p.ny * p.nx;
    if (total == 0) return;
    dsift_normalize_forward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0,
                                     stream>>>(p, total, d, y, norms);
    INV_CUDA_CHECK_LAUNCH();
}

// Overwrites dd.
void launch_dsift_normalize_backward(const DsiftParams& p, const float* d, const float* norms,
                                     const float* dy, float* dd, CUstream_st* stream) {
    const index_t total = p.N * p.ny * p.nx;
    if (total == 0) return;
    dsift_normalize_backward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0,
                                      stream>>>(p, total, d, norms, dy, dd);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace invert_native
