// Shared-memory tiled SGEMM for the CUDA core, row-major:
//
//   C[M, N] = A[M, K] · op(B) (+ bias[N] on every row),
//   op(B) = B stored [K, N], or with TRANS_B = true, B^T with B stored [N, K].
//
// Schedule: a 32x32 block of threads computes one 32x32 tile of C; each step
// along K stages a 32x32 tile of A and of op(B) in shared memory, zero-filled
// past the edges, so any M, N, K works (not only multiples of 32). Each thread
// adds its K products in ascending k. This is deliberately simple: the CPU
// core uses its own SGEMM schedule (sgemm in cpp/gemm.cpp, packed and cache
// blocked for SIMD), so the two backends agree up to the rounding order.
#pragma once

#include <stdexcept>
#include <string>

#include "invert_native/params.h"

#include "cuda_check.cuh"

namespace invert_native {
namespace cuda_detail {

constexpr int kGemmTile = 32;

template <bool TRANS_B>
__global__ void sgemm_tiled_kernel(index_t M, index_t N, index_t K,
                                   const float* __restrict__ A,     // [M, K]
                                   const float* __restrict__ B,     // [K, N], or [N, K] if TRANS_B
                                   const float* __restrict__ bias,  // [N] or nullptr
                                   float* __restrict__ C) {         // [M, N] (overwritten)
    // As[m][k] and Bs[k][n]; the +1 column keeps the transposed store of Bs
    // free of shared-memory bank conflicts.
    __shared__ float As[kGemmTile][kGemmTile];
    __shared__ float Bs[kGemmTile][kGemmTile + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const index_t m0 = index_t(blockIdx.y) * kGemmTile, n0 = index_t(blockIdx.x) * kGemmTile;
    const index_t row = m0 + ty, col = n0 + tx;  // this thread's element of C
    float acc = 0.0f;
    for (index_t k0 = 0; k0 < K; k0 += kGemmTile) {
        As[ty][tx] = (row < M && k0 + tx < K) ? A[row * K + k0 + tx] : 0.0f;
        if constexpr (TRANS_B) {
            // read B[n0 + ty, k0 + tx] (coalesced along k), store transposed
            const index_t n = n0 + ty;
            Bs[tx][ty] = (n < N && k0 + tx < K) ? B[n * K + k0 + tx] : 0.0f;
        } else {
            Bs[ty][tx] = (k0 + ty < K && col < N) ? B[(k0 + ty) * N + col] : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < kGemmTile; ++kk) acc += As[ty][kk] * Bs[kk][tx];
        __syncthreads();
    }
    if (row < M && col < N) C[row * N + col] = bias ? acc + bias[col] : acc;
}

// Launches sgemm_tiled_kernel on `stream`; returns at once when C is empty.
template <bool TRANS_B>
void launch_sgemm_tiled(index_t M, index_t N, index_t K, const float* A, const float* B,
                        const float* bias, float* C, cudaStream_t stream) {
    if (M <= 0 || N <= 0) return;
    const index_t tiles_m = (M + kGemmTile - 1) / kGemmTile;
    const index_t tiles_n = (N + kGemmTile - 1) / kGemmTile;
    if (tiles_m > 65535 || tiles_n > 2147483647)
        throw std::invalid_argument("CUDA sgemm: a " + std::to_string(M) + "x" +
                                    std::to_string(N) + " output exceeds the launch grid");
    const dim3 grid(static_cast<unsigned int>(tiles_n), static_cast<unsigned int>(tiles_m));
    const dim3 block(kGemmTile, kGemmTile);
    sgemm_tiled_kernel<TRANS_B><<<grid, block, 0, stream>>>(M, N, K, A, B, bias, C);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda_detail
}  // namespace invert_native
