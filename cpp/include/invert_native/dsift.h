// Dense SIFT (VLFeat 0.9.21's vl_dsift with the flat "fast" window) as a chain
// of four differentiable ops, on the CPU core and the CUDA core:
//
//   x [N, 1, H, W]  --dsift_gradient-->  h [N, K, H, W]     gradient + bilinear orientation binning
//                   --dsift_triangle (axis H), dsift_triangle (axis W)-->
//                   s [N, K, H, W]                           bilinear spatial binning (triangle)
//                   --dsift_sample-->    d [N, D, ny, nx]    4x4 bins per frame, Gaussian-mean weights
//                   --dsift_normalize--> y [N, D, ny, nx]    L2, clamp at 0.2, L2
//
// with D = K * nbin * nbin (128 for VLFeat's 8 orientations and 4x4 bins).
// Channel c = (by * nbin + bx) * K + t of d and y is VLFeat's descriptor element
// order (orientation fastest, then bin x, then bin y), and frame (fy, fx) is the
// frame at row-major position fy * nx + fx of vl_dsift_get_keypoints.
//
// Every op is a gather (one output element reads its inputs; no atomics), so
// both backends are deterministic. Backward functions OVERWRITE dx. Per-element
// maths is in dsift_maths.h, shared by the CPU loops and the CUDA kernels.
#pragma once

#include <cmath>
#include <string>

#include "invert_native/params.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*; declared here so this header needs no CUDA

namespace invert_native {

// Largest number of spatial bins per side (size of the window-mean table).
constexpr int kDsiftMaxBins = 16;
// VLFeat's VL_EPSILON_F, added to every descriptor norm.
constexpr float kDsiftEps = 1.19209290e-07f;
// VLFeat's vl_fast_sqrt_f returns 0 below this (compared in double).
constexpr double kDsiftSqrtFloor = 1e-8;

struct DsiftParams {
    index_t N, H, W;          // image x [N, 1, H, W]
    index_t K;                // orientation bins (VLFeat numBinT, 8)
    index_t nbin;             // spatial bins per side (numBinX = numBinY, 4)
    index_t bin_size;         // pixels per spatial bin (binSizeX = binSizeY)
    index_t step_x, step_y;   // frame sampling steps in pixels
    index_t x0, y0;           // bounds min: the upper-left bin centre of frame (0, 0)
    index_t nx, ny;           // frames per row / column (derived, >= 1)
    float clamp;              // descriptor clamp after the first L2 (0.2)
    bool exact_atan2;         // atan2f instead of VLFeat's vl_fast_atan2_f
    bool second_l2;           // L2-normalise again after the clamp (VLFeat: yes)
    float window_mean[kDsiftMaxBins];  // mean of VLFeat's Gaussian window over bin i's support

    INV_HD index_t D() const { return K * nbin * nbin; }  // descriptor size
};

// VLFeat's _vl_dsift_get_bin_window_mean: the mean of exp(-z^2/2),
// z = (u - delta) / (bin_size * window_size), over u = -bin_size+1 .. bin_size-1,
// with delta = bin_size * (i - (nbin-1)/2) the offset of bin i from the frame centre.
inline float dsift_window_mean(index_t bin_size, index_t nbin, index_t i, double window_size) {
    const float delta = float(bin_size) * (float(i) - 0.5f * float(nbin - 1));
    const float sigma = float(bin_size) * float(window_size);
    float acc = 0.0f;
    for (index_t u = -bin_size + 1; u <= bin_size - 1; ++u) {
        const float z = (float(u) - delta) / sigma;
        acc += std::exp(-0.5f * z * z);
    }
    return acc / float(2 * bin_size - 1);
}

// Validates the geometry and derives the frame grid as vl_dsift does: frames
// start at (xmin, ymin) and step while the last bin centre stays <= (xmax, ymax).
// Bounds reaching past the image are clamped to it, as MATLAB's vl_dsift does
// (xmin, ymin >= 0; xmax <= W-1, ymax <= H-1); xmax or ymax < 0 mean the image
// edge (no bounds).
inline DsiftParams make_dsift_params(index_t N, index_t H, index_t W, index_t K, index_t nbin,
                                     index_t bin_size, index_t step_x, index_t step_y,
                                     index_t xmin, index_t ymin, index_t xmax, index_t ymax,
                                     double window_size, bool exact_atan2, bool second_l2,
                                     double clamp) {
    using namespace detail;
    const char* op = "dsift";
    require_positive(N, op, "batch size N");
    require_positive(K, op, "orientations");
    require_positive(nbin, op, "number of spatial bins");
    require(nbin <= kDsiftMaxBins,
            "dsift: at most " + str(kDsiftMaxBins) + " spatial bins per side, got " + str(nbin));
    require_positive(bin_size, op, "bin_size");
    require_positive(step_x, op, "step");
    require_positive(step_y, op, "step");
    require(window_size > 0.0 && std::isfinite(window_size),
            "dsift: window_size must be positive and finite");
    require(clamp > 0.0 && std::isfinite(clamp), "dsift: clamp must be positive and finite");
    require(H >= 2 && W >= 2, "dsift: the image must be at least 2x2 pixels, got " + str(H) +
                                  "x" + str(W));
    const index_t bx0 = xmin, by0 = ymin, bx1 = xmax, by1 = ymax;
    xmin = xmin < 0 ? 0 : xmin;
    ymin = ymin < 0 ? 0 : ymin;
    xmax = xmax < 0 || xmax > W - 1 ? W - 1 : xmax;
    ymax = ymax < 0 || ymax > H - 1 ? H - 1 : ymax;
    require(xmin <= xmax && ymin <= ymax,
            "dsift: bounds (xmin, ymin, xmax, ymax) = (" + str(bx0) + ", " + str(by0) + ", " +
                str(bx1) + ", " + str(by1) + ") leave no pixel of the " + str(H) + "x" + str(W) +
                " image");
    // (implied by the descriptor fitting below unless nbin = 1; the triangle's
    // running sums need n + bin_size floats per line)
    require(bin_size <= (H > W ? H : W), "dsift: bin_size " + str(bin_size) +
                                             " is larger than the " + str(H) + "x" + str(W) +
                                             " image");
    const index_t span = (nbin - 1) * bin_size;  // first to last bin centre
    const index_t range_x = xmax - xmin - span, range_y = ymax - ymin - span;
    require(range_x >= 0 && range_y >= 0,
            "dsift: the image (or bounds) of " + str(ymax - ymin + 1) + "x" + str(xmax - xmin + 1) +
                " pixels is too small for one descriptor: " + str(nbin) + " bins of " +
                str(bin_size) + " pixels need at least " + str(span + 1) + "x" + str(span + 1));
    DsiftParams p{};
    p.N = N, p.H = H, p.W = W, p.K = K, p.nbin = nbin, p.bin_size = bin_size;
    p.step_x = step_x, p.step_y = step_y, p.x0 = xmin, p.y0 = ymin;
    p.nx = range_x / step_x + 1;
    p.ny = range_y / step_y + 1;
    p.clamp = float(clamp);
    p.exact_atan2 = exact_atan2;
    p.second_l2 = second_l2;
    for (index_t i = 0; i < nbin; ++i)
        p.window_mean[i] = dsift_window_mean(bin_size, nbin, i, window_size);
    checked_mul(checked_mul(checked_mul(N, K, op), H, op), W, op);
    checked_mul(checked_mul(checked_mul(N, p.D(), op), p.ny, op), p.nx, op);
    return p;
}

// Which image axis dsift_triangle filters.
enum class DsiftAxis : int { H = 2, W = 3 };

// Floats of running sums the CUDA triangle forward needs: (n + bin_size) per
// line, n the line's length.
inline index_t dsift_triangle_workspace_size(const DsiftParams& p, DsiftAxis axis) {
    const index_t n = axis == DsiftAxis::H ? p.H : p.W, lines = p.N * p.K * (p.H * p.W / n);
    return lines * (n + p.bin_size);
}

inline DsiftAxis make_dsift_axis(index_t axis) {
    detail::require(axis == 2 || axis == 3,
                    "dsift_triangle: axis must be 2 (H) or 3 (W), got " + detail::str(axis));
    return axis == 2 ? DsiftAxis::H : DsiftAxis::W;
}

// ------------------------------------------------------------- CPU core
// Gradient by VLFeat's differences (half central, one-sided at the border),
// then bilinear binning of its angle into K directed orientations, weighted by
// its magnitude: h_t = |g| max(0, 1 - |angle - 2 pi t / K| K / (2 pi)).
void dsift_gradient_forward(const DsiftParams& p,
                            const float* x,  // [N, 1, H, W]
                            float* h);       // [N, K, H, W]

void dsift_gradient_backward(const DsiftParams& p,
                             const float* x,   // [N, 1, H, W] forward input
                             const float* dh,  // [N, K, H, W]
                             float* dx);       // [N, 1, H, W] (overwritten)

// Unit-integral triangular filter (bin_size - |u|) / bin_size^2, |u| < bin_size,
// along one axis, with the image edge replicated (VLFeat's
// VL_PAD_BY_CONTINUITY), computed as vl_imconvcoltri_f does (running sums
// along whole lines: dsift_triangle_lines).
void dsift_triangle_forward(const DsiftParams& p, DsiftAxis axis,
                            const float* x,  // [N, K, H, W]
                            float* y);       // [N, K, H, W]

void dsift_triangle_backward(const DsiftParams& p, DsiftAxis axis,
                             const float* dy,  // [N, K, H, W]
                             float* dx);       // [N, K, H, W] (overwritten)

// Descriptor assembly: d[n, (by*nbin + bx)*K + t, fy, fx] =
// w(bx, by) * s[n, t, y0 + fy*step_y + by*bin_size, x0 + fx*step_x + bx*bin_size],
// w(bx, by) = (window_mean[bx] * bin_size) * (window_mean[by] * bin_size).
void dsift_sample_forward(const DsiftParams& p,
                          const float* s,  // [N, K, H, W]
                          float* d);       // [N, D, ny, nx]

void dsift_sample_backward(const DsiftParams& p,
                           const float* dd,  // [N, D, ny, nx]
                           float* ds);       // [N, K, H, W] (overwritten)

// Per descriptor: u = d / (|d| + eps), v = min(u, clamp), y = v / (|v| + eps)
// (y = v without second_l2), |.| VLFeat's fast sqrt of the sum of squares.
// norms keeps |d| and |v| (0 below the fast sqrt's floor) for backward.
void dsift_normalize_forward(const DsiftParams& p,
                             const float* d,  // [N, D, ny, nx]
                             float* y,        // [N, D, ny, nx]
                             float* norms);   // [N, 2, ny, nx]

void dsift_normalize_backward(const DsiftParams& p,
                              const float* d,      // [N, D, ny, nx] forward input
                              const float* norms,  // [N, 2, ny, nx] from forward
                              const float* dy,     // [N, D, ny, nx]
                              float* dd);          // [N, D, ny, nx] (overwritten)

// ------------------------------------------------------------ CUDA core
// Same semantics on device pointers, launched on `stream` (a cudaStream_t)
// without synchronising; errors throw CudaError (cuda_ops.h). Defined only in
// the CUDA library (invert_native::cuda).
void launch_dsift_gradient_forward(const DsiftParams& p, const float* x, float* h,
                                   CUstream_st* stream);
void launch_dsift_gradient_backward(const DsiftParams& p, const float* x, const float* dh,
                                    float* dx, CUstream_st* stream);
// workspace: dsift_triangle_workspace_size floats (the running sums of every line).
void launch_dsift_triangle_forward(const DsiftParams& p, DsiftAxis axis, const float* x, float* y,
                                   float* workspace, CUstream_st* stream);
void launch_dsift_triangle_backward(const DsiftParams& p, DsiftAxis axis, const float* dy,
                                    float* dx, CUstream_st* stream);
void launch_dsift_sample_forward(const DsiftParams& p, const float* s, float* d,
                                 CUstream_st* stream);
void launch_dsift_sample_backward(const DsiftParams& p, const float* dd, float* ds,
                                  CUstream_st* stream);
void launch_dsift_normalize_forward(const DsiftParams& p, const float* d, float* y, float* norms,
                                    CUstream_st* stream);
void launch_dsift_normalize_backward(const DsiftParams& p, const float* d, const float* norms,
                                     const float* dy, float* dd, CUstream_st* stream);

}  // namespace invert_native
