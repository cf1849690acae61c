// HOG ops on the CPU: hog_cells and hog_norm, forward and backward (maths in
// hog_maths.h). Each pass computes every output element with one call of the
// shared per-element function, as the CUDA kernels do, so both backends add in
// the same order; here OpenMP splits the work by rows.
#include <vector>

#include "invert_native/hog.h"
#include "invert_native/hog_maths.h"

namespace invert_native {

void hog_cells_forward(const HogCellsParams& p, const float* x, float* hist, float* pix,
                       index_t* assign) {
    const index_t plane = p.H * p.W, cells = p.h * p.w, K = p.K();
    // pass 1: gradient, channel selection and binning of every pixel
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t y = 0; y < p.H; ++y) {
            const float* xn = x + n * p.C * plane;
            for (index_t xx = 0; xx < p.W; ++xx)
                hog_store_pixel(hog_pixel_at(p, xn, y, xx), plane, n, y * p.W + xx, pix, assign);
        }
    // pass 2: every cell gathers its pixels (no write conflicts)
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t cy = 0; cy < p.h; ++cy)
            for (index_t cx = 0; cx < p.w; ++cx)
                hog_cell_hist_at(p, pix + n * 4 * plane, assign + n * 3 * plane, cy, cx,
                                 hist + n * K * cells + cy * p.w + cx, cells);
}

void hog_cells_backward(const HogCellsParams& p, const float* pix, const index_t* assign,
                        const float* dhist, float* dx, float* workspace) {
    const index_t plane = p.H * p.W, cells = p.h * p.w, K = p.K();
    // the caller's workspace, or this thread's, which only grows: no allocation per call
    thread_local std::vector<float> own;
    if (!workspace) {
        if (own.size() < hog_cells_workspace_size(p)) own.resize(hog_cells_workspace_size(p));
        workspace = own.data();
    }
    float* dg = workspace;  // [N, 2, H, W] dL/d(gx, gy)
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t y = 0; y < p.H; ++y)
            for (index_t xx = 0; xx < p.W; ++xx) {
                float* dgn = dg + n * 2 * plane;
                hog_pixel_backward_at(p, pix + n * 4 * plane, assign + n * 3 * plane,
                                      dhist + n * K * cells, y, xx, &dgn[y * p.W + xx],
                                      &dgn[plane + y * p.W + xx]);
            }
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t c = 0; c < p.C; ++c)
            for (index_t y = 0; y < p.H; ++y)
                for (index_t xx = 0; xx < p.W; ++xx)
                    dx[((n * p.C + c) * p.H + y) * p.W + xx] = hog_input_backward_at(
                        p, assign + n * 3 * plane, dg + n * 2 * plane, c, y, xx);
}

void hog_norm_forward(const HogNormParams& p, const float* hist, float* y, float* blocks) {
    const index_t cells = p.h * p.w, K = p.K(), bh = p.h + 1, bw = p.w + 1;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t by = 0; by < bh; ++by)
            for (index_t bx = 0; bx < bw; ++bx)
                blocks[(n * bh + by) * bw + bx] =
                    hog_block_factor_at(p, hist + n * K * cells, by, bx);
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t d = 0; d < p.D; ++d)
            for (index_t cy = 0; cy < p.h; ++cy)
                for (index_t cx = 0; cx < p.w; ++cx)
                    y[(n * p.D + d) * cells + cy * p.w + cx] = hog_norm_output_at(
                        p, hist + n * K * cells, blocks + n * bh * bw, d, cy, cx);
}

void hog_norm_backward(const HogNormParams& p, const float* hist, const float* blocks,
                       const float* dy, float* dhist, float* workspace) {
    const index_t cells = p.h * p.w, K = p.K(), nb = (p.h + 1) * (p.w + 1);
    // the caller's workspace, or this thread's, which only grows: no allocation per call
    thread_local std::vector<float> own;
    if (!workspace) {
        if (own.size() < hog_norm_workspace_size(p)) own.resize(hog_norm_workspace_size(p));
        workspace = own.data();
    }
    float* g = workspace;  // [N, 4, h, w] dL/d(factor i of each cell)
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t i = 0; i < 4; ++i)
            for (index_t cy = 0; cy < p.h; ++cy)
                for (index_t cx = 0; cx < p.w; ++cx)
                    g[(n * 4 + i) * cells + cy * p.w + cx] =
                        hog_norm_dfactor_at(p, hist + n * K * cells, blocks + n * nb,
                                            dy + n * p.D * cells, i, cy, cx);
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t k = 0; k < K; ++k)
            for (index_t cy = 0; cy < p.h; ++cy)
                for (index_t cx = 0; cx < p.w; ++cx)
                    dhist[(n * K + k) * cells + cy * p.w + cx] = hog_norm_backward_at(
                        p, hist + n * K * cells, blocks + n * nb, dy + n * p.D * cells,
                        g + n * 4 * cells, k, cy, cx);
}

}  // namespace invert_native
