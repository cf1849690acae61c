// Dense SIFT triangular spatial filter along one axis on the GPU.
//
// Schedule: forward, one thread per line (a column along H, a row along W)
// running VLFeat's running sums (dsift_triangle_lines, as the CPU core) with
// its n + bin_size sums in the workspace, laid out position-major so that
// neighbouring threads (neighbouring lines) touch neighbouring floats;
// backward, one thread per element (n, t, y, x) gathering its taps
// (dsift_triangle_backward_at, as the CPU core).
#include "cuda_check.cuh"  // first: its diagnostics settings must cover the maths headers

#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {
namespace {

__global__ void dsift_triangle_forward_kernel(const DsiftParams p, DsiftAxis axis, index_t lines,
                                              const float* __restrict__ src,  // [N, K, H, W]
                                              float* __restrict__ dst,        // [N, K, H, W]
                                              float* __restrict__ work) {  // [n + b, lines]
    const index_t plane = p.H * p.W;
    const bool along_h = axis == DsiftAxis::H;
    const index_t n = along_h ? p.H : p.W, per_plane = along_h ? p.W : p.H;
    const index_t stride = index_t(gridDim.x) * blockDim.x;
    for (index_t l = index_t(blockIdx.x) * blockDim.x + threadIdx.x; l < lines; l += stride) {
        const index_t c = l / per_plane, k = l % per_plane;
        const index_t start = c * plane + (along_h ? k : k * p.W);
        const index_t step = along_h ? p.W : 1;
        dsift_triangle_lines(src + start, step, 0, dst + start, step, 0, n, 1, p.bin_size,
                             work + l, lines);
    }
}

__global__ void dsift_triangle_backward_kernel(const DsiftParams p, DsiftAxis axis, index_t total,
                                               const float* __restrict__ src,  // [N, K, H, W]
                                               float* __restrict__ dst) {      // [N, K, H, W]
    const index_t plane = p.H * p.W, b = p.bin_size;
    const index_t stride = index_t(gridDim.x) * blockDim.x;
    for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        const index_t pix = i % plane, y = pix / p.W, x = pix % p.W;
        const float* sp = src + (i - pix);
        dst[i] = axis == DsiftAxis::W ? dsift_triangle_backward_at(sp + y * p.W, p.W, 1, b, x)
                                      : dsift_triangle_backward_at(sp + x, p.H, p.W, b, y);
    }
}

}  // namespace

void launch_dsift_triangle_forward(const DsiftParams& p, DsiftAxis axis, const float* x, float* y,
                                   float* workspace, CUstream_st* stream) {
    const index_t lines = p.N * p.K * (axis == DsiftAxis::H ? p.W : p.H);
    if (lines == 0) return;
    dsift_triangle_forward_kernel<<<cuda_detail::grid_size(lines), cuda_detail::kBlockSize, 0,
                                    stream>>>(p, axis, lines, x, y, workspace);
    INV_CUDA_CHECK_LAUNCH();
}

// Overwrites dx.
void launch_dsift_triangle_backward(const DsiftParams& p, DsiftAxis axis, const float* dy,
                                    float* dx, CUstream_st* stream) {
    const index_t total = p.N * p.K * p.H * p.W;
    if (total == 0) return;
    dsift_triangle_backward_kernel<<<cuda_detail::grid_size(total), cuda_detail::kBlockSize, 0,
                                     stream>>>(p, axis, total, dy, dx);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace invert_native
