// The fused momentum step of the inversion on the GPU: one thread per value, the maths of
// descent.h (built with --fmad=false, see CMakeLists.txt, to round as the CPU core).
#include "cuda_check.cuh"  // first: its diagnostics settings must cover the maths headers

#include "invert_native/cuda_ops.h"
#include "invert_native/descent.h"

namespace invert_native {
namespace {

__global__ void descent_step_kernel(DescentParams p, const float* __restrict__ g_data,
                                    const float* __restrict__ g_alpha,
                                    const float* __restrict__ g_tv, float* __restrict__ x,
                                    float* __restrict__ mu) {
    const index_t step = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.count; i += step)
        descent_step_at(p, g_data[i], g_alpha[i], g_tv[i], &x[i], &mu[i]);
}

}  // namespace

void launch_descent_step(const DescentParams& p, const float* g_data, const float* g_alpha,
                         const float* g_tv, float* x, float* mu, cudaStream_t stream) {
    if (p.count <= 0) return;
    descent_step_kernel<<<cuda_detail::grid_size(p.count), cuda_detail::kBlockSize, 0, stream>>>(
        p, g_data, g_alpha, g_tv, x, mu);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace invert_native
