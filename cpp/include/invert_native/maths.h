// Per-element maths shared by the CPU core and the CUDA core.
//
// Every function here is written once and compiled for both the host (C++ loops
// in cpp/) and the device (kernels in cuda/), so the CPU tests exercise the
// arithmetic that the GPU runs and the GPU tests only have to compare the two
// backends. Loop schedules (GEMM tiling, thread mapping) differ per backend;
// the value of one element does not.
#pragma once

#include <cmath>

#include "invert_native/params.h"

namespace invert_native {

// Starting an OpenMP team costs microseconds (milliseconds when the cores are
// busy with other work): loops doing less than this many simple per-float
// steps run on the calling thread. Measured with ReLU on the 2-core VM: one
// thread was faster than two up to ~128 K floats there under load; 32 K keeps
// CaffeNet relu3 (65 K) parallel for a quiet machine.
constexpr index_t kOmpMinWork = index_t(1) << 15;

template <typename T>
INV_HD T imin(T a, T b) { return a < b ? a : b; }
template <typename T>
INV_HD T imax(T a, T b) { return a > b ? a : b; }

// ------------------------------------------------------------------ ReLU
// The gradient at exactly 0 is 0 (the subgradient PyTorch and Caffe use).
// NaN propagates, as in PyTorch and Caffe; -0 becomes +0.
INV_HD float relu_forward_elem(float x) { return (x > 0.0f || x != x) ? x : 0.0f; }
INV_HD float relu_backward_elem(float x, float dy) { return x > 0.0f ? dy : 0.0f; }

// ----------------------------------------------------------------- conv2d
// One output element y[n, k, oy, ox] (direct form). The CPU core computes the
// same sum through im2col + GEMM; the CUDA core calls this per thread.
INV_HD float conv2d_forward_at(const Conv2dParams& p,
                               const float* x,  // [N, C, H, W]
                               const float* w,  // [K, C/groups, kh, kw]
                               const float* b,  // [K] or nullptr
                               index_t n, index_t k, index_t oy, index_t ox) {
    const index_t Cg = p.Cg();
    const index_t g = k / p.Kg();
    float acc = b ? b[k] : 0.0f;
    const index_t iy0 = oy * p.stride_h - p.pad_h;
    const index_t ix0 = ox * p.stride_w - p.pad_w;
    for (index_t c = 0; c < Cg; ++c) {
        const float* xc = x + ((n * p.C + g * Cg + c) * p.H) * p.W;
        const float* wc = w + ((k * Cg + c) * p.kh) * p.kw;
        for (index_t u = 0; u < p.kh; ++u) {
            const index_t iy = iy0 + u;
            if (iy < 0 || iy >= p.H) continue;
            for (index_t v = 0; v < p.kw; ++v) {
                const index_t ix = ix0 + v;
                if (ix < 0 || ix >= p.W) continue;
                acc += wc[u * p.kw + v] * xc[iy * p.W + ix];
            }
        }
    }
    return acc;
}

// One input-gradient element dx[n, c, iy, ix] = sum over the outputs whose
// window covers (iy, ix) (gather form: no atomics, deterministic).
INV_HD float conv2d_backward_at(const Conv2dParams& p,
                                const float* dy,  // [N, K, Ho, Wo]
                                const float* w,   // [K, C/groups, kh, kw]
                                index_t n, index_t c, index_t iy, index_t ix) {
    const index_t Cg = p.Cg(), Kg = p.Kg();
    const index_t g = c / Cg, cg = c % Cg;
    float acc = 0.0f;
    for (index_t u = 0; u < p.kh; ++u) {
        const index_t ty = iy + p.pad_h - u;  // = oy * stride_h
        if (ty < 0 || ty % p.stride_h) continue;
        const index_t oy = ty / p.stride_h;
        if (oy >= p.Ho) continue;
        for (index_t v = 0; v < p.kw; ++v) {
            const index_t tx = ix + p.pad_w - v;
            if (tx < 0 || tx % p.stride_w) continue;
            const index_t ox = tx / p.stride_w;
            if (ox >= p.Wo) continue;
            for (index_t kk = 0; kk < Kg; ++kk) {
                const index_t k = g * Kg + kk;
                acc += w[((k * Cg + cg) * p.kh + u) * p.kw + v] *
                       dy[((n * p.K + k) * p.Ho + oy) * p.Wo + ox];
            }
        }
    }
    return acc;
}

// -------------------------------------------------------------- maxpool2d
// Window of output o along one axis, clipped to the image (Caffe's rule:
// padded cells exist only to place windows and never win the max).
INV_HD void pool_window(index_t o, index_t size, index_t k, index_t s, index_t pad,
                        index_t* begin, index_t* end) {
    index_t b = o * s - pad;
    index_t e = imin(b + k, size + pad);
    *begin = imax(b, index_t(0));
    *end = imin(e, size);
}

// Whether cell value v replaces the running maximum best of a window scanned in
// row-major order. Tie rule: the first maximum wins (strict >). A NaN never
// wins, except that an all-NaN window keeps NaN at its first cell.
INV_HD bool maxpool_takes(float v, float best) { return v > best || (best != best && v == v); }

// Max over the window of output (oy, ox) in plane xp [H, W] (rule: maxpool_takes).
// Writes the winner's index within the plane to *argmax.
INV_HD float maxpool2d_forward_at(const Pool2dParams& p, const float* xp, index_t oy, index_t ox,
                                  index_t* argmax) {
    index_t y0, y1, x0, x1;
    pool_window(oy, p.H, p.kh, p.stride_h, p.pad_h, &y0, &y1);
    pool_window(ox, p.W, p.kw, p.stride_w, p.pad_w, &x0, &x1);
    index_t best_i = y0 * p.W + x0;
    float best = xp[best_i];
    for (index_t iy = y0; iy < y1; ++iy)
        for (index_t ix = x0; ix < x1; ++ix) {
            const float v = xp[iy * p.W + ix];
            if (maxpool_takes(v, best)) {
                best = v;
                best_i = iy * p.W + ix;
            }
        }
    *argmax = best_i;
    return best;
}

// Range of outputs whose window can contain input index i along one axis.
INV_HD void pool_outputs_covering(index_t i, index_t out, index_t k, index_t s, index_t pad,
                                  index_t* begin, index_t* end) {
    // o*s - pad <= i < o*s - pad + k  <=>  (i + pad - k)/s < o <= (i + pad)/s
    const index_t t = i + pad - k;
    *begin = t < 0 ? 0 : t / s + 1;
    *end = imin((i + pad) / s + 1, out);
}

// dx of one input cell (gather form): the sum of dy over the outputs whose
// recorded argmax is this cell.
INV_HD float maxpool2d_backward_at(const Pool2dParams& p,
                                   const float* dyp,        // [Ho, Wo] plane
                                   const index_t* argmaxp,  // [Ho, Wo] plane
                                   index_t iy, index_t ix) {
    index_t oy0, oy1, ox0, ox1;
    pool_outputs_covering(iy, p.Ho, p.kh, p.stride_h, p.pad_h, &oy0, &oy1);
    pool_outputs_covering(ix, p.Wo, p.kw, p.stride_w, p.pad_w, &ox0, &ox1);
    const index_t me = iy * p.W + ix;
    float acc = 0.0f;
    for (index_t oy = oy0; oy < oy1; ++oy)
        for (index_t ox = ox0; ox < ox1; ++ox)
            if (argmaxp[oy * p.Wo + ox] == me) acc += dyp[oy * p.Wo + ox];
    return acc;
}

// -------------------------------------------------------------------- LRN
// Caffe's cross-channel LRN:  scale_c = k + (alpha/n) * sum_{c' in win(c)} x_c'^2,
// y_c = x_c * scale_c^(-beta), win(c) = [c - (n-1)/2, c - (n-1)/2 + n - 1] ∩ [0, C).
INV_HD void lrn_window(index_t c, index_t C, index_t n, index_t* begin, index_t* end) {
    const index_t b = c - (n - 1) / 2;
    *begin = imax(b, index_t(0));
    *end = imin(b + n, C);
}

// Channels c' whose window contains c (the transpose of lrn_window).
INV_HD void lrn_window_transposed(index_t c, index_t C, index_t n, index_t* begin, index_t* end) {
    const index_t pre = (n - 1) / 2;
    *begin = imax(c + pre - n + 1, index_t(0));
    *end = imin(c + pre + 1, C);
}

INV_HD float lrn_scale(const LrnParams& p, float sum_sq) {
    return p.k + (p.alpha / float(p.size)) * sum_sq;
}

// scale_c at one pixel. xs points at channel 0 of that pixel; channels are
// `plane` (= H*W) floats apart. Sums in ascending channel order on both backends.
INV_HD float lrn_scale_at(const LrnParams& p, const float* xs, index_t plane, index_t c) {
    index_t c0, c1;
    lrn_window(c, p.C, p.size, &c0, &c1);
    float s = 0.0f;
    for (index_t j = c0; j < c1; ++j) s += xs[j * plane] * xs[j * plane];
    return lrn_scale(p, s);
}

// One term dy_c' * y_c' / scale_c' of acc_c (see lrn_backward_elem).
INV_HD float lrn_backward_term(float dy, float y, float scale) { return dy * y / scale; }

// acc_c of lrn_backward_elem at one pixel (pointers at channel 0 of the pixel).
INV_HD float lrn_backward_acc_at(const LrnParams& p, const float* dys, const float* ys,
                                 const float* scales, index_t plane, index_t c) {
    index_t c0, c1;
    lrn_window_transposed(c, p.C, p.size, &c0, &c1);
    float acc = 0.0f;
    for (index_t j = c0; j < c1; ++j)
        acc += lrn_backward_term(dys[j * plane], ys[j * plane], scales[j * plane]);
    return acc;
}

// scale^(-beta). With kCaffeBeta (beta = 0.75, every LRN of CaffeNet and
// AlexNet) as 1 / (s^(1/2) s^(1/4)): two square roots and a division, a few
// ulp from powf and vectorisable. The CPU core picks the form once per call;
// lrn_pow_neg_beta picks it per element (the CUDA kernels): the same values.
template <bool kCaffeBeta>
INV_HD float lrn_pow_neg_beta_t(float scale, float beta) {
    if (kCaffeBeta) {
        const float r = sqrtf(scale);
        return 1.0f / (r * sqrtf(r));
    }
    return powf(scale, -beta);
}
INV_HD bool lrn_caffe_beta(float beta) { return beta == 0.75f; }
INV_HD float lrn_pow_neg_beta(float scale, float beta) {
    return lrn_caffe_beta(beta) ? lrn_pow_neg_beta_t<true>(scale, beta)
                                : lrn_pow_neg_beta_t<false>(scale, beta);
}

INV_HD float lrn_output(const LrnParams& p, float x, float scale) {
    return x * lrn_pow_neg_beta(scale, p.beta);
}

// dx_c = dy_c * scale_c^(-beta) - (2 alpha beta / n) * x_c * acc_c, where
// acc_c = sum_{c' : c in win(c')} dy_c' * y_c' / scale_c'.
template <bool kCaffeBeta>
INV_HD float lrn_backward_elem_t(const LrnParams& p, float x, float scale, float dy, float acc) {
    return dy * lrn_pow_neg_beta_t<kCaffeBeta>(scale, p.beta) -
           (2.0f * p.alpha * p.beta / float(p.size)) * x * acc;
}
INV_HD float lrn_backward_elem(const LrnParams& p, float x, float scale, float dy, float acc) {
    return lrn_caffe_beta(p.beta) ? lrn_backward_elem_t<true>(p, x, scale, dy, acc)
                                  : lrn_backward_elem_t<false>(p, x, scale, dy, acc);
}

}  // namespace invert_native
