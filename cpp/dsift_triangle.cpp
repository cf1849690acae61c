// Dense SIFT spatial binning: the triangular filter along one axis, on the CPU.
//
// One line (a row for axis W, a column for axis H) per inner loop; along H the
// line is strided by W, so rows are walked in the outer loop and the x loop
// stays innermost (contiguous loads and stores).
#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {

namespace {

template <bool kBackward>
void triangle_pass(const DsiftParams& p, DsiftAxis axis, const float* src, float* dst) {
    const index_t planes = p.N * p.K, plane = p.H * p.W, b = p.bin_size;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t c = 0; c < planes; ++c)
        for (index_t y = 0; y < p.H; ++y) {
            const float* sp = src + c * plane;
            float* dp = dst + c * plane + y * p.W;
            for (index_t x = 0; x < p.W; ++x) {
                if (axis == DsiftAxis::W)
                    dp[x] = kBackward ? dsift_triangle_backward_at(sp + y * p.W, p.W, 1, b, x)
                                      : dsift_triangle_at(sp + y * p.W, p.W, 1, b, x);
                else
                    dp[x] = kBackward ? dsift_triangle_backward_at(sp + x, p.H, p.W, b, y)
                                      : dsift_triangle_at(sp + x, p.H, p.W, b, y);
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
