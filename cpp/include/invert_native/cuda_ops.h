// The CUDA core: launchers for every op, on the caller's stream.
//
// Same parameter structs and semantics as ops.h (the CPU core): pointers are
// device pointers to C-contiguous float32 (argmax: int64); backward launchers
// OVERWRITE dx. Launchers return at once on empty work, check
// cudaGetLastError() after each launch and throw invert_native::CudaError
// (file, line, CUDA message) on failure. They never synchronise the stream.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "invert_native/params.h"
#include "invert_native/descent.h"
#include "invert_native/regularisers.h"

namespace invert_native {

struct CudaError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

void launch_conv2d_forward(const Conv2dParams& p, const float* x, const float* w, const float* b,
                           float* y, cudaStream_t stream);
void launch_conv2d_backward(const Conv2dParams& p, const float* dy, const float* w, float* dx,
                            cudaStream_t stream);

void launch_relu_forward(index_t n, const float* x, float* y, cudaStream_t stream);
void launch_relu_backward(index_t n, const float* x, const float* dy, float* dx,
                          cudaStream_t stream);

void launch_maxpool2d_forward(const Pool2dParams& p, const float* x, float* y, index_t* argmax,
                              cudaStream_t stream);
void launch_maxpool2d_backward(const Pool2dParams& p, const float* dy, const index_t* argmax,
                               float* dx, cudaStream_t stream);

void launch_lrn_forward(const LrnParams& p, const float* x, float* y, float* scale,
                        cudaStream_t stream);
void launch_lrn_backward(const LrnParams& p, const float* x, const float* y, const float* scale,
                         const float* dy, float* dx, cudaStream_t stream);

void launch_linear_forward(const LinearParams& p, const float* x, const float* w, const float* b,
                           float* y, cudaStream_t stream);
void launch_linear_backward(const LinearParams& p, const float* dy, const float* w, float* dx,
                            cudaStream_t stream);

// Regularisers: per-element terms of the sum (the caller reduces them per
// image) and the gradient, both overwritten.
void launch_tv_forward(const TvParams& p, const float* x, float* terms, float* dx,
                       cudaStream_t stream);
void launch_alpha_norm_forward(const AlphaNormParams& p, const float* x, float* terms, float* dx,
                               cudaStream_t stream);
void launch_descent_step(const DescentParams& p, const float* g_data, const float* g_alpha,
                         const float* g_tv, float* x, float* mu, cudaStream_t stream);

}  // namespace invert_native
