// Max-pooling forward and backward on the CPU (maths in maths.h).
//
// Backward scatters each dy to its recorded argmax, visiting outputs in
// row-major order: the same summation order as the gather form the CUDA core
// uses, so both backends give identical sums.
#include <algorithm>
#include <cstring>

#include "invert_native/maths.h"
#include "invert_native/ops.h"

namespace invert_native {

namespace {

// Outputs [lo, hi) of a row whose windows lie wholly inside the row.
void full_columns(const Pool2dParams& p, index_t* lo, index_t* hi) {
    // ox*sw - pw >= 0: ceil(pw / sw), without forming pw + sw - 1 (strides may be near 2^63)
    *lo = p.pad_w == 0 ? 0 : std::min(p.Wo, (p.pad_w - 1) / p.stride_w + 1);
    const index_t last = p.W + p.pad_w - p.kw;                        // ox*sw - pw + kw <= W
    *hi = last < 0 ? *lo : std::max(*lo, std::min(p.Wo, last / p.stride_w + 1));
}

// The outputs [lo, hi) of output row oy: the window cells are visited in
// row-major order as in maxpool2d_forward_at, but each cell for the whole row
// at once with a branch-free select, so that the loop over outputs
// vectorises (the per-output form branches on data and mispredicts). S: the
// column stride when known at compile time (0: p.stride_w).
template <index_t S>
void pool_row(const Pool2dParams& p, const float* xp, index_t oy, index_t lo, index_t hi,
              float* y, index_t* am) {
    const index_t sw = S ? S : p.stride_w;
    index_t y0, y1;
    pool_window(oy, p.H, p.kh, p.stride_h, p.pad_h, &y0, &y1);
    const index_t first = y0 * p.W - p.pad_w;
    for (index_t ox = lo; ox < hi; ++ox) {
        y[ox] = xp[first + ox * sw];
        am[ox] = first + ox * sw;
    }
    for (index_t iy = y0; iy < y1; ++iy)
        for (index_t kx = 0; kx < p.kw; ++kx) {
            if (iy == y0 && kx == 0) continue;
            const index_t base = iy * p.W - p.pad_w + kx;
#pragma omp simd
            for (index_t ox = lo; ox < hi; ++ox) {
                const float v = xp[base + ox * sw];
                const bool take = maxpool_takes(v, y[ox]);
                y[ox] = take ? v : y[ox];
                am[ox] = take ? base + ox * sw : am[ox];
            }
        }
}

}  // namespace

void maxpool2d_forward(const Pool2dParams& p, const float* x, float* y, index_t* argmax) {
    const index_t planes = p.N * p.C, in = p.H * p.W, out = p.Ho * p.Wo;
    index_t lo, hi;
    full_columns(p, &lo, &hi);
#pragma omp parallel for schedule(static)
    for (index_t q = 0; q < planes; ++q) {
        const float* xp = x + q * in;
        for (index_t oy = 0; oy < p.Ho; ++oy) {
            const index_t o = q * out + oy * p.Wo;
            for (index_t ox = 0; ox < lo; ++ox)  // clipped windows: the per-output form
                y[o + ox] = maxpool2d_forward_at(p, xp, oy, ox, &argmax[o + ox]);
            if (p.stride_w == 2)
                pool_row<2>(p, xp, oy, lo, hi, y + o, argmax + o);
            else if (p.stride_w == 1)
                pool_row<1>(p, xp, oy, lo, hi, y + o, argmax + o);
            else
                pool_row<0>(p, xp, oy, lo, hi, y + o, argmax + o);
            for (index_t ox = hi; ox < p.Wo; ++ox)
                y[o + ox] = maxpool2d_forward_at(p, xp, oy, ox, &argmax[o + ox]);
        }
    }
}

index_t maxpool2d_backward(const Pool2dParams& p, const float* dy, const index_t* argmax,
                           float* dx) {
    const index_t planes = p.N * p.C, in = p.H * p.W, out = p.Ho * p.Wo;
    index_t outside = 0;  // counted in the same pass: a free check of the caller's argmax
#pragma omp parallel for schedule(static) reduction(+ : outside)
    for (index_t q = 0; q < planes; ++q) {
        float* dxp = dx + q * in;
        std::memset(dxp, 0, sizeof(float) * in);
        for (index_t o = 0; o < out; ++o) {
            const index_t i = argmax[q * out + o];
            if (i >= 0 && i < in)
                dxp[i] += dy[q * out + o];
            else
                ++outside;
        }
    }
    return outside;
}

}  // namespace invert_native
