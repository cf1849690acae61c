// TV^beta and alpha-norm on the GPU: gradient and per-element value terms.
//
// Schedule: one thread per element computing its gradient and its term of the
// sum with the functions of regularisers.h; the per-image sum of the terms is
// left to the caller (the Python layer reduces them with CuPy in float64),
// where the CPU core sums per-row partials in float64.
#include "cuda_check.cuh"  // first: its diagnostics settings must cover the maths headers

#include "invert_native/cuda_ops.h"
#include "invert_native/regularisers.h"

namespace invert_native {
namespace {

__global__ void tv_forward_kernel(TvParams p,
                                  const float* __restrict__ x,  // [N, C, H, W]
                                  float* __restrict__ terms,    // [N, C, H, W]
                                  float* __restrict__ dx) {     // [N, C, H, W]
    const index_t total = p.N * p.C * p.H * p.W, plane = p.H * p.W;
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t e = index_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
        const index_t q = e / plane, r = e % plane;
        terms[e] = tv_at(p, x + q * plane, r / p.W, r % p.W, &dx[e]);
    }
}

__global__ void alpha_norm_forward_kernel(AlphaNormParams p,
                                          const float* __restrict__ x,  // [N, M]
                                          float* __restrict__ terms,    // [N, M]
                                          float* __restrict__ dx) {     // [N, M]
    const index_t total = p.N * p.M;
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t e = index_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step)
        terms[e] = alpha_norm_at(p, x[e], &dx[e]);
}

}  // namespace

void launch_tv_forward(const TvParams& p, const float* x, float* terms, float* dx,
                       cudaStream_t stream) {
    const index_t total = p.N * p.C * p.H * p.W;
    if (total <= 0) return;
    tv_forward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0, stream>>>(
        p, x, terms, dx);
    INV_CUDA_CHECK_LAUNCH();
}

void launch_alpha_norm_forward(const AlphaNormParams& p, const float* x, float* terms, float* dx,
                               cudaStream_t stream) {
    const index_t total = p.N * p.M;
    if (total <= 0) return;
    alpha_norm_forward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0,
                                stream>>>(p, x, terms, dx);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace invert_native
