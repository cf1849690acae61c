// Dense SIFT spatial binning: the triangular filter along one axis, on the CPU.
//
// Outputs whose window lies inside the line (no edge replication, the same
// taps forward and backward: the filter is symmetric) are computed tap by tap
// over a whole run of contiguous x, so the inner loop is a vectorisable
// multiply-add along x; each output still sums its taps in the order of
// dsift_triangle_at, then divides by b. The few outputs near the ends go
// through the per-element functions of dsift_maths.h.
#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {

namespace {

// dst[x] = sum_u w[u] src[x + u * step] / b for x in [0, len), in u order.
inline void tri_run(const float* __restrict src, float* __restrict dst, index_t len, index_t step,
                    index_t b) {
    for (index_t x = 0; x < len; ++x) dst[x] = 0.0f;
    for (index_t u = -b + 1; u <= b - 1; ++u) {
        const float w = dsift_tri(u, b);
        const float* s = src + u * step;
        for (index_t x = 0; x < len; ++x) dst[x] += w * s[x];
    }
    const float fb = float(b);
    for (index_t x = 0; x < len; ++x) dst[x] /= fb;
}

template <bool kBackward>
inline float tri_edge(const float* v, index_t n, index_t stride, index_t b, index_t i) {
    return kBackward ? dsift_triangle_backward_at(v, n, stride, b, i)
                     : dsift_triangle_at(v, n, stride, b, i);
}

template <bool kBackward>
void triangle_pass(const DsiftParams& p, DsiftAxis axis, const float* src, float* dst) {
    const index_t planes = p.N * p.K, plane = p.H * p.W, b = p.bin_size;
    // interior outputs [lo, hi): window inside the line, and (backward) not an end sample
    const index_t n_line = axis == DsiftAxis::W ? p.W : p.H;
    const index_t lo = imax(b - 1, index_t(1)), hi = imin(n_line - b + 1, n_line - 1);
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t c = 0; c < planes; ++c)
        for (index_t y = 0; y < p.H; ++y) {
            const float* sp = src + c * plane;
            float* dp = dst + c * plane + y * p.W;
            if (axis == DsiftAxis::W) {
                const float* row = sp + y * p.W;
                if (lo < hi) {
                    for (index_t x = 0; x < lo; ++x) dp[x] = tri_edge<kBackward>(row, p.W, 1, b, x);
                    tri_run(row + lo, dp + lo, hi - lo, 1, b);
                    for (index_t x = hi; x < p.W; ++x)
                        dp[x] = tri_edge<kBackward>(row, p.W, 1, b, x);
                } else {
                    for (index_t x = 0; x < p.W; ++x) dp[x] = tri_edge<kBackward>(row, p.W, 1, b, x);
                }
            } else if (y >= lo && y < hi) {
                tri_run(sp + y * p.W, dp, p.W, p.W, b);
            } else {
                for (index_t x = 0; x < p.W; ++x)
                    dp[x] = tri_edge<kBackward>(sp + x, p.H, p.W, b, y);
            }
        }
}

}  // namespace

void dsift_triangle_forward(const DsiftParams& p, DsiftAxis axis, const float* x, float* y) {
    triangle_pass<false>(p, axis, x, y);
}

// Overwrites dx.
void dsift_triangle_backward(const DsiftParams& p, DsiftAxis axis, const float* dy, float* dx) {
    triangle_pass<true>(p, axis, dy, dx);
}

}  // namespace invert_native
