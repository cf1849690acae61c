// Fully connected forward and backward-to-input on the GPU.
//
// Schedule: both directions are one tiled SGEMM (gemm.cuh):
//   forward   y[N, O]  = x[N, I] · w[O, I]^T + b   (TRANS_B, bias on each row)
//   backward  dx[N, I] = dy[N, O] · w[O, I]
// The CPU core streams the weights once per call with OpenMP SIMD dot
// products at small batch and uses its packed SGEMM above that; on the GPU
// one shared-memory tiled kernel serves every batch size. The sums are the
// same up to the order of the additions.
#include "invert_native/cuda_ops.h"

#include "gemm.cuh"

namespace invert_native {

void launch_linear_forward(const LinearParams& p, const float* x, const float* w, const float* b,
                           float* y, cudaStream_t stream) {
    cuda_detail::launch_sgemm_tiled<true>(p.N, p.O, p.I, x, w, b, y, stream);
}

// Overwrites dx.
void launch_linear_backward(const LinearParams& p, const float* dy, const float* w, float* dx,
                            cudaStream_t stream) {
    cuda_detail::launch_sgemm_tiled<false>(p.N, p.I, p.O, dy, w, nullptr, dx, stream);
}

}  // namespace invert_native
