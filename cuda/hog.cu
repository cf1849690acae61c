// HOG ops on the GPU: hog_cells and hog_norm, forward and backward.
//
// Schedule: every pass is one kernel with one thread per output element
// (grid-stride loops), each element computed by the same hog_maths.h function
// the CPU core calls, so both backends add in the same order:
//   hog_cells forward:  per pixel (gradient, channel, bins), then per cell a
//                       gather of all its bins over the cell's pixels;
//   hog_cells backward: per pixel dL/dg into the workspace, then per input
//                       element a gather from its four neighbours;
//   hog_norm forward:   per block factor, then per output element;
//   hog_norm backward:  per (cell, factor) dL/df into the workspace, then per
//                       histogram element.
// Gathers need no atomics: results are deterministic. Built with --fmad=false
// (CMakeLists.txt), as the CPU core without contraction, so bin and channel
// choices compare the same products as VLFeat; acosf (bilinear binning) is
// CUDA's, within 2 ulp of glibc's.
#include "cuda_check.cuh"  // first: its diagnostics settings must cover the maths headers

#include "invert_native/hog.h"
#include "invert_native/hog_maths.h"

namespace invert_native {
namespace {

#define INV_GRID_STRIDE(e, total)                                                             \
    for (index_t e = index_t(blockIdx.x) * blockDim.x + threadIdx.x; e < (total);            \
         e += index_t(gridDim.x) * blockDim.x)

__global__ void hog_pixel_kernel(const HogCellsParams p,
                                 const float* __restrict__ x,   // [N, C, H, W]
                                 float* __restrict__ pix,       // [N, 4, H, W]
                                 index_t* __restrict__ assign) {  // [N, 3, H, W]
    const index_t plane = p.H * p.W;
    INV_GRID_STRIDE(e, p.N * plane) {
        const index_t n = e / plane, i = e % plane;
        hog_store_pixel(hog_pixel_at(p, x + n * p.C * plane, i / p.W, i % p.W), plane, n, i, pix,
                        assign);
    }
}

__global__ void hog_cell_kernel(const HogCellsParams p,
                                const float* __restrict__ pix,       // [N, 4, H, W]
                                const index_t* __restrict__ assign,  // [N, 3, H, W]
                                float* __restrict__ hist) {          // [N, 2*O, h, w]
    const index_t plane = p.H * p.W, cells = p.h * p.w, K = p.K();
    INV_GRID_STRIDE(e, p.N * cells) {
        const index_t c = e % cells, n = e / cells;
        hog_cell_hist_at(p, pix + n * 4 * plane, assign + n * 3 * plane, c / p.w, c % p.w,
                         hist + n * K * cells + c, cells);
    }
}

__global__ void hog_pixel_backward_kernel(const HogCellsParams p,
                                          const float* __restrict__ pix,       // [N, 4, H, W]
                                          const index_t* __restrict__ assign,  // [N, 3, H, W]
                                          const float* __restrict__ dhist,     // [N, 2*O, h, w]
                                          float* __restrict__ dg) {            // [N, 2, H, W]
    const index_t plane = p.H * p.W, cells = p.h * p.w;
    INV_GRID_STRIDE(e, p.N * plane) {
        const index_t n = e / plane, i = e % plane;
        float* dgn = dg + n * 2 * plane;
        hog_pixel_backward_at(p, pix + n * 4 * plane, assign + n * 3 * plane,
                              dhist + n * p.K() * cells, i / p.W, i % p.W, &dgn[i],
                              &dgn[plane + i]);
    }
}

__global__ void hog_input_backward_kernel(const HogCellsParams p,
                                          const index_t* __restrict__ assign,  // [N, 3, H, W]
                                          const float* __restrict__ dg,        // [N, 2, H, W]
                                          float* __restrict__ dx) {            // [N, C, H, W]
    const index_t plane = p.H * p.W;
    INV_GRID_STRIDE(e, p.N * p.C * plane) {
        const index_t i = e % plane, c = (e / plane) % p.C, n = e / (plane * p.C);
        dx[e] = hog_input_backward_at(p, assign + n * 3 * plane, dg + n * 2 * plane, c, i / p.W,
                                      i % p.W);
    }
}

__global__ void hog_block_kernel(const HogNormParams p,
                                 const float* __restrict__ hist,  // [N, 2*O, h, w]
                                 float* __restrict__ blocks) {    // [N, h+1, w+1]
    const index_t nb = (p.h + 1) * (p.w + 1), cells = p.h * p.w;
    INV_GRID_STRIDE(e, p.N * nb) {
        const index_t n = e / nb, b = e % nb;
        blocks[e] = hog_block_factor_at(p, hist + n * p.K() * cells, b / (p.w + 1),
                                        b % (p.w + 1));
    }
}

__global__ void hog_norm_output_kernel(const HogNormParams p,
                                       const float* __restrict__ hist,    // [N, 2*O, h, w]
                                       const float* __restrict__ blocks,  // [N, h+1, w+1]
                                       float* __restrict__ y) {           // [N, D, h, w]
    const index_t nb = (p.h + 1) * (p.w + 1), cells = p.h * p.w;
    INV_GRID_STRIDE(e, p.N * p.D * cells) {
        const index_t c = e % cells, d = (e / cells) % p.D, n = e / (cells * p.D);
        y[e] = hog_norm_output_at(p, hist + n * p.K() * cells, blocks + n * nb, d, c / p.w,
                                  c % p.w);
    }
}

__global__ void hog_norm_dfactor_kernel(const HogNormParams p,
                                        const float* __restrict__ hist,    // [N, 2*O, h, w]
                                        const float* __restrict__ blocks,  // [N, h+1, w+1]
                                        const float* __restrict__ dy,      // [N, D, h, w]
                                        float* __restrict__ g) {           // [N, 4, h, w]
    const index_t nb = (p.h + 1) * (p.w + 1), cells = p.h * p.w;
    INV_GRID_STRIDE(e, p.N * 4 * cells) {
        const index_t c = e % cells, i = (e / cells) % 4, n = e / (cells * 4);
        g[e] = hog_norm_dfactor_at(p, hist + n * p.K() * cells, blocks + n * nb,
                                   dy + n * p.D * cells, i, c / p.w, c % p.w);
    }
}

__global__ void hog_norm_backward_kernel(const HogNormParams p,
                                         const float* __restrict__ hist,    // [N, 2*O, h, w]
                                         const float* __restrict__ blocks,  // [N, h+1, w+1]
                                         const float* __restrict__ dy,      // [N, D, h, w]
                                         const float* __restrict__ g,       // [N, 4, h, w]
                                         float* __restrict__ dhist) {       // [N, 2*O, h, w]
    const index_t nb = (p.h + 1) * (p.w + 1), cells = p.h * p.w, K = p.K();
    INV_GRID_STRIDE(e, p.N * K * cells) {
        const index_t c = e % cells, k = (e / cells) % K, n = e / (cells * K);
        dhist[e] = hog_norm_backward_at(p, hist + n * K * cells, blocks + n * nb,
                                        dy + n * p.D * cells, g + n * 4 * cells, k, c / p.w,
                                        c % p.w);
    }
}

#undef INV_GRID_STRIDE

}  // namespace

void launch_hog_cells_forward(const HogCellsParams& p, const float* x, float* hist, float* pix,
                              index_t* assign, cudaStream_t stream) {
    const index_t pixels = p.N * p.H * p.W, cells = p.N * p.h * p.w;
    if (pixels <= 0 || cells <= 0) return;
    hog_pixel_kernel<<<cuda_detail::grid_size(pixels), cuda_detail::kBlockSize, 0, stream>>>(
        p, x, pix, assign);
    INV_CUDA_CHECK_LAUNCH();
    hog_cell_kernel<<<cuda_detail::grid_size(cells), cuda_detail::kBlockSize, 0, stream>>>(
        p, pix, assign, hist);
    INV_CUDA_CHECK_LAUNCH();
}

// Overwrites dx; workspace: [N, 2, H, W] floats.
void launch_hog_cells_backward(const HogCellsParams& p, const float* pix, const index_t* assign,
                               const float* dhist, float* dx, float* workspace,
                               cudaStream_t stream) {
    const index_t pixels = p.N * p.H * p.W;
    if (pixels <= 0) return;
    hog_pixel_backward_kernel<<<cuda_detail::grid_size(pixels), cuda_detail::kBlockSize, 0,
                                stream>>>(p, pix, assign, dhist, workspace);
    INV_CUDA_CHECK_LAUNCH();
    hog_input_backward_kernel<<<cuda_detail::grid_size(pixels * p.C), cuda_detail::kBlockSize, 0,
                                stream>>>(p, assign, workspace, dx);
    INV_CUDA_CHECK_LAUNCH();
}

void launch_hog_norm_forward(const HogNormParams& p, const float* hist, float* y, float* blocks,
                             cudaStream_t stream) {
    const index_t nblocks = p.N * (p.h + 1) * (p.w + 1), outs = p.N * p.D * p.h * p.w;
    if (outs <= 0) return;
    hog_block_kernel<<<cuda_detail::grid_size(nblocks), cuda_detail::kBlockSize, 0, stream>>>(
        p, hist, blocks);
    INV_CUDA_CHECK_LAUNCH();
    hog_norm_output_kernel<<<cuda_detail::grid_size(outs), cuda_detail::kBlockSize, 0, stream>>>(
        p, hist, blocks, y);
    INV_CUDA_CHECK_LAUNCH();
}

// Overwrites dhist; workspace: [N, 4, h, w] floats.
void launch_hog_norm_backward(const HogNormParams& p, const float* hist, const float* blocks,
                              const float* dy, float* dhist, float* workspace,
                              cudaStream_t stream) {
    const index_t cells = p.N * p.h * p.w;
    if (cells <= 0) return;
    hog_norm_dfactor_kernel<<<cuda_detail::grid_size(4 * cells), cuda_detail::kBlockSize, 0,
                              stream>>>(p, hist, blocks, dy, workspace);
    INV_CUDA_CHECK_LAUNCH();
    hog_norm_backward_kernel<<<cuda_detail::grid_size(p.K() * cells), cuda_detail::kBlockSize,
                               0, stream>>>(p, hist, blocks, dy, workspace, dhist);
    INV_CUDA_CHECK_LAUNCH();
}

}  // namespace invert_native
