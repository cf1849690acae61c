// Cross-channel LRN forward and backward on the CPU (maths in maths.h).
//
// The CUDA core computes each element with lrn_scale_at / lrn_backward_acc_at;
// here the same window sums run channel by channel over a whole plane (the
// same terms added in the same ascending-channel order), so that the loops
// over pixels vectorise, and the form of scale^(-beta) is chosen once per call.
#include "invert_native/maths.h"
#include "invert_native/ops.h"

namespace invert_native {
namespace {

template <bool kCaffeBeta>
void forward_planes(const LrnParams& p, const float* x, float* y, float* scale) {
    const index_t plane = p.H * p.W;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t c = 0; c < p.C; ++c) {
            const float* xn = x + n * p.C * plane;
            const index_t base = (n * p.C + c) * plane;
            float* s = scale + base;  // holds the sum of squares, then the scale
            index_t c0, c1;
            lrn_window(c, p.C, p.size, &c0, &c1);
            for (index_t i = 0; i < plane; ++i) s[i] = 0.0f;
            for (index_t j = c0; j < c1; ++j) {
                const float* xj = xn + j * plane;
#pragma omp simd
                for (index_t i = 0; i < plane; ++i) s[i] += xj[i] * xj[i];
            }
#pragma omp simd
            for (index_t i = 0; i < plane; ++i) {
                s[i] = lrn_scale(p, s[i]);
                y[base + i] = x[base + i] * lrn_pow_neg_beta_t<kCaffeBeta>(s[i], p.beta);
            }
        }
}

template <bool kCaffeBeta>
void backward_planes(const LrnParams& p, const float* x, const float* y, const float* scale,
                     const float* dy, float* dx) {
    const index_t plane = p.H * p.W;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t c = 0; c < p.C; ++c) {
            const index_t off = n * p.C * plane;
            const index_t base = off + c * plane;
            float* acc = dx + base;  // holds acc_c, then dx
            index_t c0, c1;
            lrn_window_transposed(c, p.C, p.size, &c0, &c1);
            for (index_t i = 0; i < plane; ++i) acc[i] = 0.0f;
            for (index_t j = c0; j < c1; ++j) {
                const float *dyj = dy + off + j * plane, *yj = y + off + j * plane,
                            *sj = scale + off + j * plane;
#pragma omp simd
                for (index_t i = 0; i < plane; ++i) acc[i] += lrn_backward_term(dyj[i], yj[i], sj[i]);
            }
#pragma omp simd
            for (index_t i = 0; i < plane; ++i)
                acc[i] = lrn_backward_elem_t<kCaffeBeta>(p, x[base + i], scale[base + i],
                                                         dy[base + i], acc[i]);
        }
}

}  // namespace

void lrn_forward(const LrnParams& p, const float* x, float* y, float* scale) {
    if (lrn_caffe_beta(p.beta))
        forward_planes<true>(p, x, y, scale);
    else
        forward_planes<false>(p, x, y, scale);
}

void lrn_backward(const LrnParams& p, const float* x, const float* y, const float* scale,
                  const float* dy, float* dx) {
    if (lrn_caffe_beta(p.beta))
        backward_planes<true>(p, x, y, scale, dy, dx);
    else
        backward_planes<false>(p, x, y, scale, dy, dx);
}

}  // namespace invert_native
