// Dense SIFT spatial binning: the triangular filter along one axis, on the CPU.
//
// Forward runs VLFeat's running sums (dsift_triangle_lines) on a block of
// lines at once, the inner loops across the lines: along H the lines are
// columns, side by side in memory (the loops vectorise); along W rows. Backward is the
// transpose of the exact filter, tap by tap: outputs whose window lies inside
// the line over a whole run of contiguous x (a vectorisable multiply-add), the
// few near the ends through dsift_triangle_backward_at.
#include <vector>

#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {

namespace {

// dst[x] = scale * sum_u w[u] src[x + u * step] for x in [0, len), in u order
// (the order of dsift_triangle_backward_at; the filter is symmetric).
inline void tri_run(const float* __restrict src, float* __restrict dst, index_t len, index_t step,
                    index_t b) {
    for (index_t x = 0; x < len; ++x) dst[x] = 0.0f;
    for (index_t u = -b + 1; u <= b - 1; ++u) {
        const float w = dsift_tri(u, b);
        const float* s = src + u * step;
        for (index_t x = 0; x < len; ++x) dst[x] += w * s[x];
    }
    const float scale = dsift_triangle_scale(b);
    for (index_t x = 0; x < len; ++x) dst[x] *= scale;
}

void triangle_backward_pass(const DsiftParams& p, DsiftAxis axis, const float* src, float* dst) {
    const index_t planes = p.N * p.K, plane = p.H * p.W, b = p.bin_size;
    // interior outputs [lo, hi): window inside the line and not an end sample
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
                    for (index_t x = 0; x < lo; ++x)
                        dp[x] = dsift_triangle_backward_at(row, p.W, 1, b, x);
                    tri_run(row + lo, dp + lo, hi - lo, 1, b);
                    for (index_t x = hi; x < p.W; ++x)
                        dp[x] = dsift_triangle_backward_at(row, p.W, 1, b, x);
                } else {
                    for (index_t x = 0; x < p.W; ++x)
                        dp[x] = dsift_triangle_backward_at(row, p.W, 1, b, x);
                }
            } else if (y >= lo && y < hi) {
                tri_run(sp + y * p.W, dp, p.W, p.W, b);
            } else {
                for (index_t x = 0; x < p.W; ++x)
                    dp[x] = dsift_triangle_backward_at(sp + x, p.H, p.W, b, y);
            }
        }
}

}  // namespace

void dsift_triangle_forward(const DsiftParams& p, DsiftAxis axis, const float* x, float* y) {
    const index_t planes = p.N * p.K, plane = p.H * p.W, b = p.bin_size;
    // lines in blocks (columns along H, rows along W), so that the work splits
    // between threads and each thread's buffer stays small
    constexpr index_t kCols = 64, kRows = 16;
    const bool along_h = axis == DsiftAxis::H;
    const index_t lines = along_h ? p.W : p.H, per = along_h ? kCols : kRows;
    const index_t n = along_h ? p.H : p.W, blocks = (lines + per - 1) / per;
#pragma omp parallel
    {
        thread_local std::vector<float> buf;  // this thread's running sums, reused
        if (buf.size() < std::size_t((n + b) * per)) buf.resize(std::size_t((n + b) * per));
#pragma omp for collapse(2) schedule(static)
        for (index_t c = 0; c < planes; ++c)
            for (index_t k = 0; k < blocks; ++k) {
                const index_t l0 = k * per, L = imin(per, lines - l0);
                const float* src = x + c * plane;
                float* dst = y + c * plane;
                if (along_h)  // lanes: columns l0.., contiguous; samples W apart
                    dsift_triangle_lines(src + l0, p.W, 1, dst + l0, p.W, 1, n, L, b, buf.data(),
                                         L);
                else  // lanes: rows l0.., W apart; samples contiguous
                    dsift_triangle_lines(src + l0 * p.W, 1, p.W, dst + l0 * p.W, 1, p.W, n, L, b,
                                         buf.data(), L);
            }
    }
}

// Overwrites dx.
void dsift_triangle_backward(const DsiftParams& p, DsiftAxis axis, const float* dy, float* dx) {
    triangle_backward_pass(p, axis, dy, dx);
}

}  // namespace invert_native
