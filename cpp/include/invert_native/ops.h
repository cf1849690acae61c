// The CPU core: forward and backward-to-input of every op, float32, NCHW.
//
// All pointers are C-contiguous float32 (argmax: int64). Backward functions
// OVERWRITE their output (dx) — they never accumulate. Nothing writes to an
// input. Functions throw std::invalid_argument on bad parameters (see
// params.h). Parallelised with OpenMP; the thread count follows
// OMP_NUM_THREADS or set_num_threads().
#pragma once

#include <cstddef>

#include "invert_native/params.h"

namespace invert_native {

// Number of OpenMP threads the CPU core uses (<= 0 restores the default).
void set_num_threads(int n);
int get_num_threads();

// ------------------------------------------------------------------ conv2d
// Schedule: per group, im2col of one image or (batches of small outputs) a
// chunk of images into a workspace, then one SGEMM per chunk; see conv2d.cpp
// (the CUDA core uses the direct form of maths.h instead). 3x3 stride-1
// layers with >= 32 channels a group each side and >= 96 tiles of 2x2
// outputs in the call use Winograd F(2x2, 3x3) (16 SGEMMs on transformed
// tiles; the filter transforms cached per thread, reused only while the
// weights are bit for bit those they came from); INVERT_NATIVE_NO_WINOGRAD=1
// turns it off. Results do not depend on the chunking or the thread count.
// Workspace: conv2d_workspace_size(p) floats (the same for forward and
// backward), or nullptr to use an internal per-thread buffer that only grows.
std::size_t conv2d_workspace_size(const Conv2dParams& p);

void conv2d_forward(const Conv2dParams& p,
                    const float* x,  // [N, C, H, W]
                    const float* w,  // [K, C/groups, kh, kw]
                    const float* b,  // [K] or nullptr
                    float* y,        // [N, K, Ho, Wo] (overwritten)
                    float* workspace = nullptr);

void conv2d_backward(const Conv2dParams& p,
                     const float* dy,  // [N, K, Ho, Wo]
                     const float* w,   // [K, C/groups, kh, kw]
                     float* dx,        // [N, C, H, W] (overwritten)
                     float* workspace = nullptr);

// -------------------------------------------------------------------- ReLU
void relu_forward(index_t n, const float* x, float* y);                       // [n]
void relu_backward(index_t n, const float* x, const float* dy, float* dx);    // [n]; x = forward input

// --------------------------------------------------------------- maxpool2d
void maxpool2d_forward(const Pool2dParams& p,
                       const float* x,    // [N, C, H, W]
                       float* y,          // [N, C, Ho, Wo]
                       index_t* argmax);  // [N, C, Ho, Wo] index of the winner within its H*W plane

// Returns how many argmax entries lie outside their input plane (their dy are
// dropped; a caller that did not take argmax from maxpool2d_forward should check).
index_t maxpool2d_backward(const Pool2dParams& p,
                           const float* dy,        // [N, C, Ho, Wo]
                           const index_t* argmax,  // [N, C, Ho, Wo] from maxpool2d_forward
                           float* dx);             // [N, C, H, W] (overwritten)

// --------------------------------------------------------------------- LRN
void lrn_forward(const LrnParams& p,
                 const float* x,  // [N, C, H, W]
                 float* y,        // [N, C, H, W]
                 float* scale);   // [N, C, H, W] kept for backward

void lrn_backward(const LrnParams& p,
                  const float* x,      // [N, C, H, W] forward input
                  const float* y,      // [N, C, H, W] forward output
                  const float* scale,  // [N, C, H, W] from lrn_forward
                  const float* dy,     // [N, C, H, W]
                  float* dx);          // [N, C, H, W] (overwritten)

// ------------------------------------------------------------------ linear
void linear_forward(const LinearParams& p,
                    const float* x,  // [N, I]
                    const float* w,  // [O, I]
                    const float* b,  // [O] or nullptr
                    float* y);       // [N, O]

void linear_backward(const LinearParams& p,
                     const float* dy,  // [N, O]
                     const float* w,   // [O, I]
                     float* dx);       // [N, I] (overwritten)

// -------------------------------------------------------------------- GEMM
// C[M, N] = alpha * op(A) op(B) + beta * C, row-major, op = transpose when
// trans_* is true. A: [M, K] (or [K, M]), B: [K, N] (or [N, K]).
// Uses AVX-512 where the CPU has it (set INVERT_NATIVE_NO_AVX512=1 to force
// the AVX2 path), AVX2 otherwise.
void sgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, float alpha,
           const float* A, index_t lda, const float* B, index_t ldb, float beta, float* C,
           index_t ldc);

// Which SGEMM micro-kernel runs on this machine (for reports and benchmarks).
const char* sgemm_kernel_name();

}  // namespace invert_native
