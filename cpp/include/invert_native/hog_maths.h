// Per-element maths of HOG, shared by the CPU core (cpp/hog.cpp) and the
// CUDA core (cuda/hog.cu). Facts follow VLFeat 0.9.21's vl/hog.c.
//
// The orientation binning part is generic: K = 2*A directed directions, axis
// a < A at angle a*pi/A (from +x towards +y; image y points down), direction
// a + A = -axis a. HOG uses A = O orientations (K = 18 for O = 9); dense SIFT's
// 8 directions are A = 4.
#pragma once

#include <cmath>

#include "invert_native/hog.h"
#include "invert_native/maths.h"

namespace invert_native {

constexpr float kHogPi = 3.14159265358979f;
constexpr float kHogClamp = 0.2f;              // block-normalised values saturate here
constexpr float kHogNormEps = 1e-4f;           // f = 1 / sqrt(block energy + eps)
constexpr float kHogTextureScale = 0.2357022604f;  // 1/sqrt(18), fixed in VLFeat whatever O is

// ============================================== orientation binning (generic)
// Angle between the unit gradient (nx, ny) and direction b, as atan2(|u x n|, u . n):
// the exact smooth angle that backward differentiates (forward takes VLFeat's
// acos, see hog_bilinear_cos). Accurate near 0, where acos(u . n) turns float
// rounding e into an angle error of sqrt(2 e) (~3e-4 rad).
// The angle to the best direction is at most pi/(2A) (10 degrees for O = 9),
// so tan <= 0.18: there the odd Taylor series of atan through z^11 is exact to
// float rounding (next term < 3e-9 relative at z = 0.25) and much cheaper than
// atan2f, which the rest of the range still takes.
// The two halves of orientation_angle, branch-free each, for loops that
// vectorise: the series for every lane, then atan2f only where
// orientation_angle_series_ok is false.
INV_HD float orientation_cross(float nx, float ny, float bx, float by) {
    return fabsf(bx * ny - by * nx);
}
INV_HD float orientation_dot(float nx, float ny, float bx, float by) { return bx * nx + by * ny; }
INV_HD bool orientation_angle_series_ok(float cross, float dot) {
    return (dot > 0.0f) & (cross <= 0.25f * dot);  // & : both always evaluated
}
INV_HD float orientation_angle_series(float cross, float dot) {
    const float z = cross / dot, z2 = z * z;
    const float poly =
        1.0f + z2 * (-1.0f / 3.0f +
                     z2 * (1.0f / 5.0f +
                           z2 * (-1.0f / 7.0f + z2 * (1.0f / 9.0f + z2 * (-1.0f / 11.0f)))));
    return z * poly;
}

INV_HD float orientation_angle(float nx, float ny, float bx, float by) {
    const float cross = orientation_cross(nx, ny, bx, by), dot = orientation_dot(nx, ny, bx, by);
    if (orientation_angle_series_ok(cross, dot)) return orientation_angle_series(cross, dot);
    return atan2f(cross, dot);
}

INV_HD float orientation_dir_x(const float* ux, int A, int b) {
    const float u = ux[b < A ? b : b - A];
    return b < A ? u : -u;
}
INV_HD float orientation_dir_y(const float* uy, int A, int b) {
    const float u = uy[b < A ? b : b - A];
    return b < A ? u : -u;
}

// Best two of the K = 2*A directions for the gradient (gx, gy), VLFeat
// 0.9.21's scan (vl_hog_put_image) step for step: the axes in order, each
// scored s = gx*ux + gy*uy on the gradient as it is (not normalised), giving
// the direction on the gradient's side (s < 0: a + A, |s|). Both scores start
// at -1, so the first axis always takes b0 even with s = 0 (A = 1 and a
// vertical gradient: bin 0), and a strict > keeps the first of equal scores:
// a tie goes to the lower axis index (a vertical gradient with O = 9 goes to
// bin 4, not 5). b1 stays -1 only when A = 1.
//
// orientation_scan_step is branch-free (selects only), so that a loop over
// pixels vectorises.
struct OrientationScan {
    int b0, b1;    // best and second best directions; -1: none
    float s0, s1;  // their scores <g, u_b> >= 0 (-1 before any axis)
};

INV_HD OrientationScan orientation_scan_start() { return {-1, -1, -1.0f, -1.0f}; }

INV_HD float orientation_unit(float g, float mag) { return g / imax(mag, 1e-10f); }

INV_HD void orientation_scan_step(OrientationScan& r, float gx, float gy, float uxa, float uya,
                                  int a, int A) {
    const float d = gx * uxa + gy * uya;
    const bool neg = d < 0.0f;
    const float s = neg ? -d : d;
    const int b = neg ? a + A : a;
    const bool first = s > r.s0, second = !first && s > r.s1;
    r.b1 = first ? r.b0 : (second ? b : r.b1);
    r.s1 = first ? r.s0 : (second ? s : r.s1);
    r.b0 = first ? b : r.b0;
    r.s0 = first ? s : r.s0;
}

// VLFeat's bilinear share of the second bin, in its own mixed precision:
//   angle0 = acosf(min(s0 / max(|g|, 1e-10), 1))   (quotient and min in double)
//   w1 = angle0 / (pi / O)                           (in double, stored as float)
// The caller takes acosf of hog_bilinear_cos (a scalar call: a vectorised
// acosf may round differently) and passes it to hog_bilinear_share. acos loses
// accuracy near a bin centre (float rounding e becomes an angle error of
// sqrt(2 e), ~3e-4 rad), but this is the value VLFeat computes; backward
// differentiates the exact angle (orientation_angle) instead, acos having an
// infinite slope there.
constexpr double kHogPiD = 3.141592653589793;  // VL_PI

INV_HD float hog_bilinear_cos(float s0, float mag) {
    const double c = double(s0) / fmax(double(mag), 1e-10);
    return float(c < 1.0 ? c : 1.0);
}
INV_HD float hog_bilinear_share(float angle0, index_t O) {
    return float(double(angle0) / (kHogPiD / double(O)));
}

// Share of |g| given to b0 and b1 (the bin width is pi/A = 2pi/K):
//   hard:     w0 = 1, w1 = 0;
//   bilinear: w1 = hog_bilinear_share (the angle to u_b0 over the width), w0 = 1 - w1;
//   relu:     w_j = max(0, c_j - cos(width)) / (1 - cos(width)), c_j = s_j / |g|,
//             i.e. the paper's max(0, <g,u_j> - a|g|) scaled so that a gradient
//             along u_j gives |g|. Only the two best directions can be > 0.
// cos_width = cosf(width), used by relu only (callers in a loop compute it
// once); w1_bilinear is hog_bilinear_share, used by bilinear only.
INV_HD void orientation_weights_of(OrientationBinning mode, float w1_bilinear, float s0, float s1,
                                   int b1, float mag, float cos_width, float* w0, float* w1) {
    if (mode == OrientationBinning::bilinear) {
        *w1 = w1_bilinear;
        *w0 = 1.0f - *w1;
    } else if (mode == OrientationBinning::relu) {
        const float a = cos_width;
        const float c0 = orientation_unit(s0, mag), c1 = orientation_unit(s1, mag);
        const float r1 = imax(c1 - a, 0.0f) / (1.0f - a);  // outside the select
        *w0 = imax(c0 - a, 0.0f) / (1.0f - a);
        *w1 = b1 < 0 ? 0.0f : r1;
    } else {
        *w0 = 1.0f;
        *w1 = 0.0f;
    }
}

INV_HD float orientation_cos_width(OrientationBinning mode, int A) {
    return mode == OrientationBinning::relu ? cosf(kHogPi / float(A)) : 0.0f;
}

// (dgx, dgy) from dL/dv_j, v_j = |g| w_j (the forward's bins b0, b1):
//   hard:     dv0 * g/|g| (through the magnitude only: the bin is piecewise constant);
//   bilinear: radial part (dv0 w0 + dv1 w1) g/|g| plus the angular part
//             sigma (dv1 - dv0) / width along g rotated by +90 degrees, sigma = +1
//             when b1 = b0 + 1 (mod K: g lies on the side of growing angles), else -1
//             (with A = 1 there is no b1: the side of u_b0 that g lies on), the
//             weights w from the exact angle (orientation_angle), whose
//             derivative exists on the whole bin, unlike the forward's acos at 0;
//   relu:     sum_j [s_j > a] dv_j (u_j - a g/|g|) / (1 - a).
// Zero at g = 0, where |g| has no derivative.
//
// Hard and bilinear in branch-free form, for loops that vectorise: with
// series_only the angle is orientation_angle's series even where that takes
// atan2f; *exact tells where (the caller then redoes the pixel with
// orientation_binning_backward).
INV_HD void orientation_binning_backward_hb(OrientationBinning mode, float gx, float gy, int b0,
                                            int b1, const float* ux, const float* uy, int A,
                                            float dv0, float dv1, bool series_only, bool* exact,
                                            float* dgx, float* dgy) {
    const float mag = sqrtf(gx * gx + gy * gy);
    const bool live = (b0 >= 0) & (mag > 0.0f);
    const float nx = orientation_unit(gx, mag), ny = orientation_unit(gy, mag);
    float rx, ry;
    *exact = false;
    if (mode == OrientationBinning::bilinear) {
        const float width = kHogPi / float(A);
        const int bb = b0 >= 0 ? b0 : 0;
        const float bx = orientation_dir_x(ux, A, bb), by = orientation_dir_y(uy, A, bb);
        const float cross = orientation_cross(nx, ny, bx, by), dot = orientation_dot(nx, ny, bx, by);
        const bool ok = orientation_angle_series_ok(cross, dot);
        float phi = orientation_angle_series(cross, dot);
        if (!series_only && !ok) phi = atan2f(cross, dot);
        *exact = live && !ok;
        const float t = phi / width;
        const float radial = dv0 * (1.0f - t) + dv1 * t;
        const int next = b0 + 1 == 2 * A ? 0 : b0 + 1;  // (b0 + 1) mod K
        const float side = bx * ny - by * nx;  // > 0: g at a growing angle from u_b0
        const float sigma = b1 < 0 ? (side < 0.0f ? -1.0f : 1.0f) : (b1 == next ? 1.0f : -1.0f);
        const float angular = sigma * (dv1 - dv0) / width;
        rx = nx * radial - ny * angular;
        ry = ny * radial + nx * angular;
    } else {
        rx = dv0 * nx;
        ry = dv0 * ny;
    }
    *dgx = live ? rx : 0.0f;
    *dgy = live ? ry : 0.0f;
}

INV_HD void orientation_binning_backward(OrientationBinning mode, float gx, float gy, int b0,
                                         int b1, const float* ux, const float* uy, int A,
                                         float dv0, float dv1, float* dgx, float* dgy) {
    if (mode != OrientationBinning::relu) {
        bool exact;
        orientation_binning_backward_hb(mode, gx, gy, b0, b1, ux, uy, A, dv0, dv1, false, &exact,
                                        dgx, dgy);
        return;
    }
    *dgx = 0.0f;
    *dgy = 0.0f;
    const float mag = sqrtf(gx * gx + gy * gy);
    if (b0 < 0 || !(mag > 0.0f)) return;
    const float nx = gx / imax(mag, 1e-10f);
    const float ny = gy / imax(mag, 1e-10f);
    const float width = kHogPi / float(A);
    const float a = cosf(width);
    const int bins[2] = {b0, b1};
    const float dv[2] = {dv0, dv1};
    for (int j = 0; j < 2; ++j) {
        if (bins[j] < 0) continue;
        const float bx = orientation_dir_x(ux, A, bins[j]);
        const float by = orientation_dir_y(uy, A, bins[j]);
        if (nx * bx + ny * by > a) {
            *dgx += dv[j] * (bx - a * nx) / (1.0f - a);
            *dgy += dv[j] * (by - a * ny) / (1.0f - a);
        }
    }
}

// ================================================= gradient + cell pooling
// Spatial bilinear pooling (VLFeat): pixel x sits at h = (x + 0.5)/cell - 0.5 in
// cell units; it gives 1 - frac to cell floor(h) and frac to the next cell
// (cells outside the grid get nothing). Along one axis this is the triangular
// kernel 1 - |t|/cell of the paper, centred on (c + 0.5)*cell - 0.5.
INV_HD void hog_cell_coord(index_t x, index_t cell, index_t* bin, float* frac) {
    const float hx = (float(x) + 0.5f) / float(cell) - 0.5f;
    const float b = floorf(hx);
    *bin = index_t(b);
    *frac = hx - b;
}

// Everything hog_cells keeps about one pixel.
struct HogPixel {
    float gx, gy;     // gradient of the selected channel
    float v0, v1;     // magnitude given to b0 and b1
    index_t channel;  // selected channel, -1: none
    index_t b0, b1;   // directed bins, -1: none
};

// Pixel (y, x) of image xn [C, H, W]. Gradients exist on interior pixels
// only: [-1 0 1] central differences without the 1/2, the channel with the
// largest squared magnitude wins (strict >: the first channel on ties, none
// when all are 0).
//
// In pieces, each branch-free so that a loop over the pixels of a row
// vectorises (cpp/hog.cpp): hog_gradient_step for each channel c (q points at
// pixel (y, x) of channel c), orientation_scan_step for each axis, then
// hog_pixel_from_scan (hog_pixel_at puts them together).
struct HogGradient {
    float gx, gy, g2;
    int channel;  // -1: none
};

INV_HD HogGradient hog_gradient_start() { return {0.0f, 0.0f, 0.0f, -1}; }

INV_HD void hog_gradient_step(HogGradient& g, const float* q, index_t W, int c) {
    const float gx = q[1] - q[-1];
    const float gy = q[W] - q[-W];
    const float g2 = gx * gx + gy * gy;
    const bool take = g2 > g.g2;
    g.g2 = take ? g2 : g.g2;
    g.gx = take ? gx : g.gx;
    g.gy = take ? gy : g.gy;
    g.channel = take ? c : g.channel;
}

// The binning of an interior pixel's selected gradient g (all zero when g has
// no channel): mag = sqrtf(g.g2), r the orientation scan of (g.gx, g.gy) over
// all the axes, cos_width = orientation_cos_width(mode, O), angle0 =
// acosf(hog_bilinear_cos(r.s0, mag)) for bilinear binning (ignored otherwise).
// A pixel with g = 0 gets no bin (VLFeat gives it bin 0 with weight 0 * ...).
INV_HD HogPixel hog_pixel_from_scan(index_t O, OrientationBinning mode, float cos_width,
                                    const HogGradient& g, float mag, const OrientationScan& r,
                                    float angle0) {
    float w0, w1;
    orientation_weights_of(mode, hog_bilinear_share(angle0, O), r.s0, r.s1, r.b1, mag, cos_width,
                           &w0, &w1);
    const bool live = mag > 0.0f;
    HogPixel out;
    out.gx = g.gx;
    out.gy = g.gy;
    out.channel = g.channel;
    out.b0 = live ? r.b0 : -1;
    out.b1 = (mode == OrientationBinning::hard || !live) ? -1 : r.b1;
    const float v0 = mag * w0, v1 = mag * w1;  // outside the selects (see hog_pixel_dv)
    out.v0 = live ? v0 : 0.0f;
    out.v1 = out.b1 < 0 ? 0.0f : v1;
    return out;
}

INV_HD HogPixel hog_pixel_at(const HogCellsParams& p, const float* xn, index_t y, index_t x) {
    if (y < 1 || x < 1 || y > p.H - 2 || x > p.W - 2)
        return HogPixel{0.0f, 0.0f, 0.0f, 0.0f, -1, -1, -1};
    HogGradient g = hog_gradient_start();
    for (index_t c = 0; c < p.C; ++c)
        hog_gradient_step(g, xn + (c * p.H + y) * p.W + x, p.W, int(c));
    const float mag = sqrtf(g.g2);
    OrientationScan r = orientation_scan_start();
    for (int a = 0; a < int(p.O); ++a)
        orientation_scan_step(r, g.gx, g.gy, p.ux[a], p.uy[a], a, int(p.O));
    const float angle0 =
        p.binning == OrientationBinning::bilinear ? acosf(hog_bilinear_cos(r.s0, mag)) : 0.0f;
    return hog_pixel_from_scan(p.O, p.binning, orientation_cos_width(p.binning, int(p.O)), g, mag,
                               r, angle0);
}

// Stores pixel i of image n as forward keeps it for backward:
// pix [N, 4, H*W] (gx, gy, v0, v1) and assign [N, 3, H*W] (channel, b0, b1).
INV_HD void hog_store_pixel(const HogPixel& r, index_t plane, index_t n, index_t i, float* pix,
                            index_t* assign) {
    float* pixn = pix + n * 4 * plane;
    index_t* asgn = assign + n * 3 * plane;
    pixn[i] = r.gx;
    pixn[plane + i] = r.gy;
    pixn[2 * plane + i] = r.v0;
    pixn[3 * plane + i] = r.v1;
    asgn[i] = r.channel;
    asgn[plane + i] = r.b0;
    asgn[2 * plane + i] = r.b1;
}

// The 2*O histogram values of cell (cy, cx) of one image, written to
// out[k * stride]: for each bin, the sum over the pixels around the cell (pixel
// records pixn [4, H, W], assignments asgn [3, H, W]) of v * wx * wy, in
// row-major pixel order (VLFeat's accumulation order). One pass over the
// pixels fills all the bins.
INV_HD void hog_cell_hist_at(const HogCellsParams& p, const float* pixn, const index_t* asgn,
                             index_t cy, index_t cx, float* out, index_t stride) {
    const index_t plane = p.H * p.W;
    float acc[2 * kHogMaxOrientations];
    for (index_t k = 0; k < p.K(); ++k) acc[k] = 0.0f;
    // Pixels of cell c lie in [(c - 1/2) cell - 1/2, (c + 3/2) cell - 1/2); one
    // pixel of margin each side keeps float rounding of hog_cell_coord inside
    // the range (the checks below still pick the pixels).
    const index_t half = p.cell / 2;
    const index_t y0 = imax(cy * p.cell - half - 1, index_t(1));
    const index_t y1 = imin(cy * p.cell + p.cell + half + 1, p.H - 1);
    const index_t x0 = imax(cx * p.cell - half - 1, index_t(1));
    const index_t x1 = imin(cx * p.cell + p.cell + half + 1, p.W - 1);
    for (index_t y = y0; y < y1; ++y) {
        index_t by;
        float fy;
        hog_cell_coord(y, p.cell, &by, &fy);
        if (by != cy && by + 1 != cy) continue;
        const float wy = by == cy ? 1.0f - fy : fy;
        for (index_t x = x0; x < x1; ++x) {
            index_t bx;
            float fx;
            hog_cell_coord(x, p.cell, &bx, &fx);
            if (bx != cx && bx + 1 != cx) continue;
            const float wx = bx == cx ? 1.0f - fx : fx;
            const index_t i = y * p.W + x;
            const index_t b0 = asgn[plane + i], b1 = asgn[2 * plane + i];
            if (b0 >= 0) acc[b0] += pixn[2 * plane + i] * wx * wy;
            if (b1 >= 0) acc[b1] += pixn[3 * plane + i] * wx * wy;
        }
    }
    for (index_t k = 0; k < p.K(); ++k) out[k * stride] = acc[k];
}

// dL/d(gx, gy) of pixel (y, x): gather dhist (dhn [2*O, h, w]) from the pixel's
// cells into dL/dv0, dL/dv1, then through the binning.
// dL/dv0, dL/dv1 of a pixel in cell coordinates (by, fy), (bx, fx) with bins
// b0, b1 (0, 0 where b0 < 0): the cells (by, bx), (by, bx+1), (by+1, bx),
// (by+1, bx+1) in this order, those outside the grid skipped. Branch-free.
INV_HD void hog_pixel_dv(const HogCellsParams& p, const float* dhn, index_t b0, index_t b1,
                         index_t by, float fy, index_t bx, float fx, float* dv0, float* dv1) {
    const index_t cells = p.h * p.w;
    const index_t k0 = b0 >= 0 ? b0 : 0, k1 = b1 >= 0 ? b1 : k0;
    float d0 = 0.0f, d1 = 0.0f;
    for (int j = 0; j < 2; ++j) {
        const index_t cy = by + j;
        const bool oky = b0 >= 0 && cy >= 0 && cy < p.h;
        const float wy = j == 0 ? 1.0f - fy : fy;
        for (int i = 0; i < 2; ++i) {
            const index_t cx = bx + i;
            const bool ok = oky && cx >= 0 && cx < p.w;
            const float wxy = (i == 0 ? 1.0f - fx : fx) * wy;
            const index_t cell = ok ? cy * p.w + cx : 0;
            const float h0 = dhn[k0 * cells + cell], h1 = dhn[k1 * cells + cell];
            // the float arithmetic outside the selects: a select with it inside
            // is a branch (the operation could trap), which does not vectorise
            const float t0 = d0 + wxy * h0, t1 = d1 + wxy * h1;
            d0 = ok ? t0 : d0;
            d1 = ok && b1 >= 0 ? t1 : d1;
        }
    }
    *dv0 = d0;
    *dv1 = d1;
}

INV_HD void hog_pixel_backward_at(const HogCellsParams& p, const float* pixn, const index_t* asgn,
                                  const float* dhn, index_t y, index_t x, float* dgx,
                                  float* dgy) {
    const index_t plane = p.H * p.W;
    const index_t i = y * p.W + x;
    const index_t b0 = asgn[plane + i], b1 = asgn[2 * plane + i];
    *dgx = 0.0f;
    *dgy = 0.0f;
    if (b0 < 0) return;
    index_t by, bx;
    float fy, fx;
    hog_cell_coord(y, p.cell, &by, &fy);
    hog_cell_coord(x, p.cell, &bx, &fx);
    float dv0, dv1;
    hog_pixel_dv(p, dhn, b0, b1, by, fy, bx, fx, &dv0, &dv1);
    orientation_binning_backward(p.binning, pixn[i], pixn[plane + i], int(b0), int(b1), p.ux,
                                 p.uy, int(p.O), dv0, dv1, dgx, dgy);
}

// dx[c, y, x] of one image from dL/dg (dgn [2, H, W]) and the selected
// channels (chan [H, W]): pixel (y, x) is the +1 neighbour of the central
// differences at (y, x-1) and (y-1, x) and the -1 neighbour of those at
// (y, x+1) and (y+1, x), where that pixel selected channel c.
INV_HD float hog_input_backward_at(const HogCellsParams& p, const index_t* chan, const float* dgn,
                                   index_t c, index_t y, index_t x) {
    const index_t plane = p.H * p.W;
    const index_t i = y * p.W + x;
    float acc = 0.0f;
    if (x >= 1 && chan[i - 1] == c) acc += dgn[i - 1];
    if (x + 1 < p.W && chan[i + 1] == c) acc -= dgn[i + 1];
    if (y >= 1 && chan[i - p.W] == c) acc += dgn[plane + i - p.W];
    if (y + 1 < p.H && chan[i + p.W] == c) acc -= dgn[plane + i + p.W];
    return acc;
}

// ================================================== block normalisation
INV_HD float hog_clamp(float v) { return v > kHogClamp ? kHogClamp : v; }  // passes v <= 0.2
INV_HD bool hog_clamp_passes(float v) { return !(v > kHogClamp); }

// Undirected energy of cell (cy, cx): sum_k (h_k + h_{k+O})^2 (hn [2*O, h, w]).
INV_HD float hog_cell_energy(const HogNormParams& p, const float* hn, index_t cy, index_t cx) {
    const index_t cells = p.h * p.w, c = cy * p.w + cx;
    float e = 0.0f;
    for (index_t k = 0; k < p.O; ++k) {
        const float u = hn[k * cells + c] + hn[(k + p.O) * cells + c];
        e += u * u;
    }
    return e;
}

// Factor of block (by, bx), by in [0, h], bx in [0, w]: the cells of rows
// by-1, by and columns bx-1, bx, clamped to the grid (edge cells count twice,
// as VLFeat replicates them).
INV_HD float hog_block_factor_at(const HogNormParams& p, const float* hn, index_t by, index_t bx) {
    const index_t r0 = imax(by - 1, index_t(0)), r1 = imin(by, p.h - 1);
    const index_t c0 = imax(bx - 1, index_t(0)), c1 = imin(bx, p.w - 1);
    const float s = hog_cell_energy(p, hn, r0, c0) + hog_cell_energy(p, hn, r0, c1) +
                    hog_cell_energy(p, hn, r1, c0) + hog_cell_energy(p, hn, r1, c1);
    return 1.0f / sqrtf(s + kHogNormEps);
}

// VLFeat's factors 1-4 of cell (cy, cx): the blocks up-left, up-right,
// down-left, down-right of it (bn [h+1, w+1]).
INV_HD void hog_cell_factors(const HogNormParams& p, const float* bn, index_t cy, index_t cx,
                             float f[4]) {
    const index_t bw = p.w + 1;
    f[0] = bn[cy * bw + cx];
    f[1] = bn[cy * bw + cx + 1];
    f[2] = bn[(cy + 1) * bw + cx];
    f[3] = bn[(cy + 1) * bw + cx + 1];
}

// Output dim d of cell (cy, cx). UoCTTI: d < 2*O directed 0.5 sum_i min(0.2, f_i h_d);
// then O undirected, the same on u_k = h_k + h_{k+O}; then (texture) 4 dims
// sum_k min(0.2, f_i u_k) / sqrt(18). Dalal-Triggs: d = i*O + k, min(0.2, f_i u_k).
INV_HD float hog_norm_output_at(const HogNormParams& p, const float* hn, const float* bn,
                                index_t d, index_t cy, index_t cx) {
    const index_t cells = p.h * p.w, c = cy * p.w + cx, O = p.O;
    float f[4];
    hog_cell_factors(p, bn, cy, cx, f);
    if (p.variant == HogVariant::dalaltriggs) {
        const index_t i = d / O, k = d % O;
        return hog_clamp(f[i] * (hn[k * cells + c] + hn[(k + O) * cells + c]));
    }
    if (d < 3 * O) {
        const float v = d < 2 * O ? hn[d * cells + c]
                                  : hn[(d - 2 * O) * cells + c] + hn[(d - O) * cells + c];
        return 0.5f * (hog_clamp(f[0] * v) + hog_clamp(f[1] * v) + hog_clamp(f[2] * v) +
                       hog_clamp(f[3] * v));
    }
    const float fi = f[d - 3 * O];
    float t = 0.0f;
    for (index_t k = 0; k < O; ++k) t += hog_clamp(fi * (hn[k * cells + c] + hn[(k + O) * cells + c]));
    return kHogTextureScale * t;
}

// dL/df_i of cell (cy, cx) (dyn [D, h, w]): the outputs' dependence on the
// cell's i-th factor, through the unclamped entries only.
INV_HD float hog_norm_dfactor_at(const HogNormParams& p, const float* hn, const float* bn,
                                 const float* dyn, index_t i, index_t cy, index_t cx) {
    const index_t cells = p.h * p.w, c = cy * p.w + cx, O = p.O;
    float f[4];
    hog_cell_factors(p, bn, cy, cx, f);
    const float fi = f[i];
    float g = 0.0f;
    if (p.variant == HogVariant::dalaltriggs) {
        for (index_t k = 0; k < O; ++k) {
            const float u = hn[k * cells + c] + hn[(k + O) * cells + c];
            if (hog_clamp_passes(fi * u)) g += u * dyn[(i * O + k) * cells + c];
        }
        return g;
    }
    for (index_t k = 0; k < 2 * O; ++k) {
        const float v = hn[k * cells + c];
        if (hog_clamp_passes(fi * v)) g += 0.5f * dyn[k * cells + c] * v;
    }
    const float tex = p.texture ? kHogTextureScale * dyn[(3 * O + i) * cells + c] : 0.0f;
    for (index_t k = 0; k < O; ++k) {
        const float u = hn[k * cells + c] + hn[(k + O) * cells + c];
        if (hog_clamp_passes(fi * u)) g += u * (0.5f * dyn[(2 * O + k) * cells + c] + tex);
    }
    return g;
}

// dhist[k, cy, cx]: the direct path (factors held fixed) plus the path
// through the energies of the blocks that contain the cell, with gn [4, h, w]
// = hog_norm_dfactor_at of every cell. df/dS = -f^3 / 2, dS/dh_k = 2 u_k
// times the number of times the block counts the cell (2 or 4 on the border).
INV_HD float hog_norm_backward_at(const HogNormParams& p, const float* hn, const float* bn,
                                  const float* dyn, const float* gn, index_t k, index_t cy,
                                  index_t cx) {
    const index_t cells = p.h * p.w, c = cy * p.w + cx, O = p.O, bw = p.w + 1;
    const index_t kk = k % O;
    const float hk = hn[k * cells + c];
    const float u = hn[kk * cells + c] + hn[(kk + O) * cells + c];
    float f[4];
    hog_cell_factors(p, bn, cy, cx, f);
    float acc = 0.0f;
    for (int i = 0; i < 4; ++i) {
        if (p.variant == HogVariant::dalaltriggs) {
            if (hog_clamp_passes(f[i] * u)) acc += f[i] * dyn[(i * O + kk) * cells + c];
            continue;
        }
        if (hog_clamp_passes(f[i] * hk)) acc += 0.5f * f[i] * dyn[k * cells + c];
        if (hog_clamp_passes(f[i] * u)) {
            const float tex = p.texture ? kHogTextureScale * dyn[(3 * O + i) * cells + c] : 0.0f;
            acc += f[i] * (0.5f * dyn[(2 * O + kk) * cells + c] + tex);
        }
    }
    float dS = 0.0f;  // dL/d(energy of this cell), summed over its blocks
    for (index_t by = cy; by <= cy + 1; ++by) {
        const int my = int(imax(by - 1, index_t(0)) == cy) + int(imin(by, p.h - 1) == cy);
        for (index_t bx = cx; bx <= cx + 1; ++bx) {
            const int mx = int(imax(bx - 1, index_t(0)) == cx) + int(imin(bx, p.w - 1) == cx);
            // the cells that use block (by, bx), as their factor 1, 2, 3, 4
            float G = 0.0f;
            if (by < p.h && bx < p.w) G += gn[0 * cells + by * p.w + bx];
            if (by < p.h && bx >= 1) G += gn[1 * cells + by * p.w + bx - 1];
            if (by >= 1 && bx < p.w) G += gn[2 * cells + (by - 1) * p.w + bx];
            if (by >= 1 && bx >= 1) G += gn[3 * cells + (by - 1) * p.w + bx - 1];
            const float fb = bn[by * bw + bx];
            dS += float(my * mx) * (-0.5f * fb * fb * fb) * G;
        }
    }
    return acc + 2.0f * u * dS;
}

}  // namespace invert_native
