// HOG as a chain of two differentiable ops (CPU core; CUDA launchers below).
//
//   hog_cells: image [N, C, H, W] -> directed orientation histograms of the
//              cells [N, 2*O, h, w]. Fuses the image gradient (central
//              differences, the colour channel of largest gradient), the
//              orientation binning (hard / bilinear / ReLU approximation) and
//              the triangular spatial pooling into cells.
//   hog_norm:  histograms [N, 2*O, h, w] -> features [N, D, h, w]: the block
//              normalisation with four factors per cell, the clamp at 0.2 and
//              the UoCTTI (D = 3*O + 4, or 3*O without texture) or the
//              Dalal-Triggs (D = 4*O) projection.
//
// Conventions are VLFeat 0.9.21's vl_hog (vl/hog.c); see hog_maths.h for the
// per-element arithmetic both backends share. Values of x are expected in
// [0, 255] (the 1e-4 of the block norm makes results scale dependent).
//
// All pointers are C-contiguous (float32, or int64 for `assign`). Backward
// functions OVERWRITE their output. Parameter checks throw
// std::invalid_argument (ValueError in Python).
#pragma once

#include <cmath>
#include <cstddef>
#include <string>

#include "invert_native/params.h"

namespace invert_native {

// How a gradient is assigned to the K directed orientations (hog_maths.h).
enum class OrientationBinning : int {
    hard = 0,      // all of |g| to the nearest direction (VLFeat's default, the paper's HOG)
    bilinear = 1,  // |g| split linearly in angle between the two nearest (HOGb)
    relu = 2,      // the paper's approximation: |g| max(0, cos(angle) - cos(2pi/K)) / (1 - cos(2pi/K))
};

enum class HogVariant : int { uoctti = 0, dalaltriggs = 1 };

// Largest number of undirected orientations O (the direction table lives in the
// params struct, which kernels take by value).
constexpr index_t kHogMaxOrientations = 32;

// ---------------------------------------------------------------- hog_cells
struct HogCellsParams {
    index_t N, C, H, W;  // image x [N, C, H, W], C = 1 or 3
    index_t cell;        // cell size in pixels
    index_t O;           // undirected orientations; K = 2*O directed bins
    OrientationBinning binning;
    index_t h, w;        // cells (derived): (H + cell/2) / cell, (W + cell/2) / cell
    // Axis o (o < O) points at angle o*pi/O, from +x towards +y (y points down);
    // its cos and sin rounded from double to float as VLFeat does, so that exact
    // ties between two bins (a vertical gradient, O = 9) resolve alike.
    float ux[kHogMaxOrientations];
    float uy[kHogMaxOrientations];

    INV_HD index_t K() const { return 2 * O; }  // directed bins
};

inline HogCellsParams make_hog_cells_params(index_t N, index_t C, index_t H, index_t W,
                                            index_t cell, index_t O, int binning) {
    using namespace detail;
    const char* op = "hog_cells";
    require_positive(N, op, "batch size N of x");
    require(C == 1 || C == 3, "hog_cells: x must have 1 (grey) or 3 (colour) channels, got " +
                                  str(C));
    require_positive(H, op, "height of x");
    require_positive(W, op, "width of x");
    require_positive(cell, op, "cell_size");
    require(O >= 1 && O <= kHogMaxOrientations, "hog_cells: orientations must be in [1, " +
                                                    str(kHogMaxOrientations) + "], got " + str(O));
    require(binning >= 0 && binning <= 2,
            "hog_cells: binning must be 0 (hard), 1 (bilinear) or 2 (relu), got " +
                std::to_string(binning));
    HogCellsParams p{};
    p.N = N, p.C = C, p.H = H, p.W = W, p.cell = cell, p.O = O;
    p.binning = static_cast<OrientationBinning>(binning);
    p.h = (H + cell / 2) / cell;
    p.w = (W + cell / 2) / cell;
    // VLFeat asserts width, height > 3; blocks need 2x2 cells to mean anything.
    require(H > 3 && W > 3 && p.h >= 2 && p.w >= 2,
            "hog_cells: image " + str(H) + "x" + str(W) + " is too small for HOG with cell_size " +
                str(cell) + ": it must give at least 2x2 cells ((size + cell_size/2) // cell_size "
                "= " + str(p.h) + "x" + str(p.w) + ") and be at least 4x4 pixels");
    checked_mul(checked_mul(checked_mul(N, 4, op), H, op), W, op);
    checked_mul(checked_mul(checked_mul(N, C, op), H, op), W, op);
    for (index_t o = 0; o < O; ++o) {
        const double angle = double(o) * 3.141592653589793 / double(O);
        p.ux[o] = float(std::cos(angle));
        p.uy[o] = float(std::sin(angle));
    }
    return p;
}

// Forward. Writes, besides the histograms, what backward needs per pixel:
//   pix    [N, 4, H, W]: gx, gy (the selected channel's central differences,
//                        0 on the border), v0 = |g| w0 and v1 = |g| w1 (the
//                        magnitude given to bin0 and bin1);
//   assign [N, 3, H, W]: selected channel, bin0, bin1 (-1: none, e.g. on the
//                        one-pixel border and where the gradient is 0).
void hog_cells_forward(const HogCellsParams& p,
                       const float* x,    // [N, C, H, W]
                       float* hist,       // [N, 2*O, h, w]
                       float* pix,        // [N, 4, H, W]
                       index_t* assign);  // [N, 3, H, W]

// Checks what backward indexes with: every entry of assign must be one that
// hog_cells_forward writes (channel in [-1, C), bins in [-1, 2*O)); throws
// std::invalid_argument naming `assign` otherwise. One pass of min/max.
inline void check_hog_assign(const HogCellsParams& p, const index_t* assign) {
    const index_t plane = p.H * p.W;
    for (int k = 0; k < 3; ++k) {
        index_t lo = 0, hi = 0;
        for (index_t n = 0; n < p.N; ++n) {
            const index_t* a = assign + (n * 3 + k) * plane;
            for (index_t i = 0; i < plane; ++i) {
                lo = a[i] < lo ? a[i] : lo;
                hi = a[i] > hi ? a[i] : hi;
            }
        }
        const index_t limit = k == 0 ? p.C : p.K();
        if (lo < -1 || hi >= limit)
            detail::require(false, std::string("hog_cells_backward: assign[:, ") +
                                       std::to_string(k) + "] (" +
                                       (k == 0 ? "channels" : "bins") + ") holds " +
                                       detail::str(lo < -1 ? lo : hi) + ", outside [-1, " +
                                       detail::str(limit - 1) +
                                       "]; pass the assign that hog_cells_forward returned");
    }
}

// Floats of the workspace hog_cells_backward needs (the per-pixel dL/dg).
inline std::size_t hog_cells_workspace_size(const HogCellsParams& p) {
    return std::size_t(p.N * 2 * p.H * p.W);
}

// dx from dhist (overwrites dx). Hard binning differentiates through |g|
// only (the bin choice is piecewise constant). workspace: [N, 2, H, W] floats
// or nullptr (then allocated here). assign must be valid (check_hog_assign):
// its bins index dhist.
void hog_cells_backward(const HogCellsParams& p,
                        const float* pix,       // [N, 4, H, W] from hog_cells_forward
                        const index_t* assign,  // [N, 3, H, W] from hog_cells_forward
                        const float* dhist,     // [N, 2*O, h, w]
                        float* dx,              // [N, C, H, W] (overwritten)
                        float* workspace = nullptr);

// ----------------------------------------------------------------- hog_norm
struct HogNormParams {
    index_t N, O, h, w;  // histograms [N, 2*O, h, w]
    HogVariant variant;
    bool texture;        // UoCTTI only: append the 4 texture dims
    index_t D;           // output dims (derived): 3*O + 4*texture, or 4*O (Dalal-Triggs)

    INV_HD index_t K() const { return 2 * O; }  // directed bins
};

inline HogNormParams make_hog_norm_params(index_t N, index_t K, index_t h, index_t w,
                                          int variant, bool texture) {
    using namespace detail;
    const char* op = "hog_norm";
    require_positive(N, op, "batch size N of hist");
    require(K >= 2 && K % 2 == 0 && K / 2 <= kHogMaxOrientations,
            "hog_norm: hist must have 2*O channels (directed orientations), O in [1, " +
                str(kHogMaxOrientations) + "], got " + str(K));
    require_positive(h, op, "height (cells) of hist");
    require_positive(w, op, "width (cells) of hist");
    require(variant == 0 || variant == 1,
            "hog_norm: variant must be 0 (uoctti) or 1 (dalaltriggs), got " +
                std::to_string(variant));
    require(variant == 0 || texture,
            "hog_norm: texture=False applies to the UoCTTI variant only (Dalal-Triggs has no "
            "texture dims)");
    HogNormParams p{N, K / 2, h, w, static_cast<HogVariant>(variant), texture, 0};
    p.D = p.variant == HogVariant::uoctti ? 3 * p.O + (texture ? 4 : 0) : 4 * p.O;
    checked_mul(checked_mul(checked_mul(N, p.D > K ? p.D : K, op), h + 1, op), w + 1, op);
    return p;
}

// Forward. blocks [N, h+1, w+1] keeps the normalisation factor
// 1/sqrt(sum + 1e-4) of every 2x2 block (block (by, bx) covers the cells of
// rows by-1, by and columns bx-1, bx, clamped to the grid); cell (cy, cx) uses
// blocks (cy, cx), (cy, cx+1), (cy+1, cx), (cy+1, cx+1) = VLFeat's factors 1-4.
void hog_norm_forward(const HogNormParams& p,
                      const float* hist,  // [N, 2*O, h, w]
                      float* y,           // [N, D, h, w]
                      float* blocks);     // [N, h+1, w+1]

// Floats of the workspace hog_norm_backward needs (dL/d factor, 4 per cell).
inline std::size_t hog_norm_workspace_size(const HogNormParams& p) {
    return std::size_t(p.N * 4 * p.h * p.w);
}

// dhist from dy (overwrites dhist). The clamp min(0.2, v) passes the gradient
// where v <= 0.2. workspace: [N, 4, h, w] floats or nullptr.
void hog_norm_backward(const HogNormParams& p,
                       const float* hist,    // [N, 2*O, h, w] forward input
                       const float* blocks,  // [N, h+1, w+1] from hog_norm_forward
                       const float* dy,      // [N, D, h, w]
                       float* dhist,         // [N, 2*O, h, w] (overwritten)
                       float* workspace = nullptr);

}  // namespace invert_native

// CUDA launchers: declared where the CUDA runtime header came first. Device
// pointers; same semantics as above; workspaces are required (device memory of
// the sizes above); launched on `stream`, never synchronised; failures throw
// invert_native::CudaError.
#if defined(CUDART_VERSION)
namespace invert_native {
void launch_hog_cells_forward(const HogCellsParams& p, const float* x, float* hist, float* pix,
                              index_t* assign, cudaStream_t stream);
void launch_hog_cells_backward(const HogCellsParams& p, const float* pix, const index_t* assign,
                               const float* dhist, float* dx, float* workspace,
                               cudaStream_t stream);
void launch_hog_norm_forward(const HogNormParams& p, const float* hist, float* y, float* blocks,
                             cudaStream_t stream);
void launch_hog_norm_backward(const HogNormParams& p, const float* hist, const float* blocks,
                              const float* dy, float* dhist, float* workspace,
                              cudaStream_t stream);
}  // namespace invert_native
#endif
