// Error checking and launch geometry shared by the CUDA kernels of cuda/.
//
// After every launch a launcher calls INV_CUDA_CHECK_LAUNCH(), which reads
// cudaGetLastError() and turns a failure into invert_native::CudaError (a
// std::runtime_error, so pybind11 raises RuntimeError) carrying the file, the
// line and CUDA's message. Nothing here exits, prints or synchronises.
#pragma once

// nvcc only warns when a __host__ __device__ function calls a __host__-only
// one, and then compiles the device side to an empty body: a kernel that
// silently does nothing. Make that a hard error wherever this header comes
// first (every .cu of cuda/ includes it before maths.h).
#if defined(__CUDACC__)
#pragma nv_diag_error 20011
#pragma nv_diag_error 20014
#endif

#include <cuda_runtime.h>

#include <string>

#include "invert_native/cuda_ops.h"
#include "invert_native/params.h"

namespace invert_native {
namespace cuda_detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file,
                                          int line) {
    throw CudaError(std::string(file) + ":" + std::to_string(line) + ": " + what + ": " +
                    cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

inline void check_cuda(cudaError_t err, const char* what, const char* file, int line) {
    if (err != cudaSuccess) throw_cuda_error(err, what, file, line);
}

// Threads per block of the element-wise kernels.
constexpr int kBlockSize = 256;

// Blocks for n elements. Kernels use grid-stride loops, so the grid is capped
// and any n is covered however large.
inline unsigned int grid_size(index_t n) {
    constexpr index_t kMaxBlocks = 65535;
    const index_t blocks = (n + kBlockSize - 1) / kBlockSize;
    return static_cast<unsigned int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

}  // namespace cuda_detail
}  // namespace invert_native

// Checks the kernel launch just made (configuration errors, and any earlier
// asynchronous error that the runtime reports now).
#define INV_CUDA_CHECK_LAUNCH()                                                            \
    ::invert_native::cuda_detail::check_cuda(cudaGetLastError(), "kernel launch", __FILE__, \
                                             __LINE__)
