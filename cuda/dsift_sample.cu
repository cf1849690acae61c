// Dense SIFT descriptor assembly (bins -> frames) on the GPU.
//
// Schedule: forward, one thread per descriptor element (n, c, fy, fx)
// (dsift_sample_at); backward, one thread per map element (n, t, y, x)
// gathering the at most nbin^2 (frame, bin) pairs centred there
// (dsift_sample_backward_at). Same functions as the CPU core.
#include "cuda_check.cuh"  // first: its diagnostics settings must cover the maths headers

#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {
namespace {

__global__ void dsift_sample_forward_kernel(const DsiftParams p, index_t total,
                                            const float* __restrict__ s,  // [N, K, H, W]
                                            float* __restrict__ d) {      // [N, D, ny, nx]
    const index_t F = p.ny * p.nx, D = p.D();
    const index_t stride = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const index_t f = i % F, c = (i / F) % D, n = i / (F * D);
        d[i] = dsift_sample_at(p, s, n, c, f / p.nx, f % p.nx);
    }
}

__global__ void dsift_sample_backward_kernel(const DsiftParams p, index_t total,
                                             const float* __restrict__ dd,  // [N, D, ny, nx]
                                             float* __restrict__ ds) {      // [N, K, H, W]
    const index_t plane = p.H * p.W;
    const index_t stride = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const index_t pix = i % plane, t = (i / plane) % p.K, n = i / (plane * p.K);
        ds[i] = dsift_sample_backward_at(p, dd, n, t, pix / p.W, pix % p.W);
    }
}

}  // namespace

void launch_dsift_sample_forward(const DsiftParams& p, const float* s, float* d,
                                 CUstream_st* stream) {
    const index_t total = p.N * p.D() * p.ny * p.nx;
    if (total == 0) return;
    dsift_sample_forward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0,
                                  stream>>>(p, total, s, d);
    INV_CUDA_CHECK_LAUNCH();
}

// Overwrites ds.
void launch_dsift_sample_backward(const DsiftParams& p, const float* dd, float* ds,
                                  CUstream_st* stream) {
    const index_t total = p.N * p.K * p.H * p.W;
    if (total == 0) return;
    dsift_sample_backward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0,
                                   stream>>>(p, total, dd, ds);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace invert_native
