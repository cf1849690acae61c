// Shape parameters of every op, shared by the CPU core and the CUDA core.
//
// Each op takes one plain struct (shapes, strides, pads, groups). The make_*
// functions validate their arguments and derive the output size; they throw
// std::invalid_argument with a message that names the offending argument, which
// the Python bindings turn into ValueError. Sizes are int64 so that index
// arithmetic never overflows on large tensors.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

// Inline functions callable from host and device code (the per-element maths).
#if defined(__CUDACC__)
#define INV_HD __host__ __device__ __forceinline__
#else
#define INV_HD inline
#endif

namespace invert_native {

using index_t = std::int64_t;

namespace detail {
inline std::string str(index_t v) { return std::to_string(v); }
inline std::string str_real(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
}
inline void require(bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument(msg);
}
// Product of sizes, refusing results that do not fit in index_t.
inline index_t checked_mul(index_t a, index_t b, const char* what) {
    if (a != 0 && b > std::numeric_limits<index_t>::max() / a)
        throw std::invalid_argument(std::string(what) + ": tensor size overflows 64-bit indexing");
    return a * b;
}
inline void require_positive(index_t v, const char* op, const char* name) {
    require(v > 0, std::string(op) + ": " + name + " must be positive, got " + str(v));
}
// The batch, channels, height and width of an NCHW input x, all positive.
inline void require_nchw(const char* op, index_t N, index_t C, index_t H, index_t W) {
    require_positive(N, op, "batch size N of x");
    require_positive(C, op, "channels C of x");
    require_positive(H, op, "height of x");
    require_positive(W, op, "width of x");
}
inline void require_nonneg(index_t v, const char* op, const char* name) {
    require(v >= 0, std::string(op) + ": " + name + " must be non-negative, got " + str(v));
}
// size + 2 * pad (both >= 0), refusing a padding whose padded size does not fit in index_t
// (signed overflow would be undefined behaviour, and wrap to a "valid" size).
inline index_t padded_size(index_t size, index_t pad, const char* op, const char* axis) {
    require(pad <= (std::numeric_limits<index_t>::max() - size) / 2,
            std::string(op) + ": padding " + str(pad) + " is too large for an input " + axis +
                " of " + str(size) + " (the padded size overflows 64-bit indexing)");
    return size + 2 * pad;
}
}  // namespace detail

// ---------------------------------------------------------------- conv2d
struct Conv2dParams {
    index_t N, C, H, W;          // input  x [N, C, H, W]
    index_t K;                   // output channels; weight [K, C/groups, kh, kw]
    index_t kh, kw;              // kernel size
    index_t stride_h, stride_w;  // stride
    index_t pad_h, pad_w;        // zero padding on each side
    index_t groups;              // C and K are both split into `groups` equal parts
    index_t Ho, Wo;              // output y [N, K, Ho, Wo] (derived)

    INV_HD index_t Cg() const { return C / groups; }  // input channels per group
    INV_HD index_t Kg() const { return K / groups; }  // output channels per group
};

// weight_c is the weight's second dimension (input channels per group).
inline Conv2dParams make_conv2d_params(index_t N, index_t C, index_t H, index_t W, index_t K,
                                       index_t weight_c, index_t kh, index_t kw,
                                       index_t stride_h, index_t stride_w, index_t pad_h,
                                       index_t pad_w, index_t groups) {
    using namespace detail;
    const char* op = "conv2d";
    require_nchw(op, N, C, H, W);
    require_positive(K, op, "output channels (weight.shape[0])");
    require_positive(kh, op, "kernel height (weight.shape[2])");
    require_positive(kw, op, "kernel width (weight.shape[3])");
    require_positive(stride_h, op, "stride");
    require_positive(stride_w, op, "stride");
    require_nonneg(pad_h, op, "padding");
    require_nonneg(pad_w, op, "padding");
    require_positive(groups, op, "groups");
    require(C % groups == 0, "conv2d: groups=" + str(groups) + " does not divide the " + str(C) +
                                 " channels of x");
    require(K % groups == 0, "conv2d: groups=" + str(groups) + " does not divide the " + str(K) +
                                 " output channels of weight");
    require(weight_c == C / groups,
            "conv2d: weight.shape[1] must be C/groups = " + str(C / groups) + " (x has " + str(C) +
                " channels, groups=" + str(groups) + "), got " + str(weight_c));
    const index_t Hp = padded_size(H, pad_h, op, "height");
    const index_t Wp = padded_size(W, pad_w, op, "width");
    require(kh <= Hp && kw <= Wp, "conv2d: kernel " + str(kh) + "x" + str(kw) +
                                      " is larger than the padded input " + str(Hp) + "x" + str(Wp));
    Conv2dParams p{N, C, H, W, K, kh, kw, stride_h, stride_w, pad_h, pad_w, groups, 0, 0};
    p.Ho = (Hp - kh) / stride_h + 1;
    p.Wo = (Wp - kw) / stride_w + 1;
    checked_mul(checked_mul(checked_mul(N, K, op), p.Ho, op), p.Wo, op);
    checked_mul(checked_mul(checked_mul(N, C, op), H, op), W, op);
    // im2col workspace of one group of one image
    checked_mul(checked_mul(checked_mul(p.Cg(), kh, op), kw, op), checked_mul(p.Ho, p.Wo, op), op);
    return p;
}

// ------------------------------------------------------------- maxpool2d
struct Pool2dParams {
    index_t N, C, H, W;          // input  x [N, C, H, W]
    index_t kh, kw;              // window
    index_t stride_h, stride_w;
    index_t pad_h, pad_w;        // padded cells never win the max
    index_t Ho, Wo;              // output y [N, C, Ho, Wo] (derived, Caffe's ceil mode)
};

// Caffe's output size: ceil((H + 2p - k) / s) + 1, minus one if the last window
// would start inside the bottom/right padding. Caffe applies that correction
// only when p > 0, which leaves an empty last window when s > k (H=6, k=2,
// s=3); we apply it always, as PyTorch does, so every window holds a cell.
// The two rules agree whenever Caffe's windows are all non-empty.
// Needs H >= 1, k >= 1, s >= 1, p >= 0, k <= H + 2p and H + 2p representable
// (make_pool2d_params checks); written so that no intermediate overflows, even
// for strides near 2^63.
inline index_t caffe_pool_out(index_t H, index_t k, index_t s, index_t p) {
    const index_t span = H + 2 * p - k;                // >= 0
    index_t o = span / s + (span % s != 0) + 1;        // ceil(span / s) + 1
    if (o - 1 > (H + p - 1) / s) --o;                  // (o - 1) * s >= H + p
    return o;
}

inline Pool2dParams make_pool2d_params(index_t N, index_t C, index_t H, index_t W, index_t kh,
                                       index_t kw, index_t stride_h, index_t stride_w,
                                       index_t pad_h, index_t pad_w) {
    using namespace detail;
    const char* op = "max_pool2d";
    require_nchw(op, N, C, H, W);
    require_positive(kh, op, "kernel_size");
    require_positive(kw, op, "kernel_size");
    require_positive(stride_h, op, "stride");
    require_positive(stride_w, op, "stride");
    require_nonneg(pad_h, op, "padding");
    require_nonneg(pad_w, op, "padding");
    require(pad_h < kh && pad_w < kw, "max_pool2d: padding must be smaller than kernel_size");
    const index_t Hp = padded_size(H, pad_h, op, "height");
    const index_t Wp = padded_size(W, pad_w, op, "width");
    require(kh <= Hp && kw <= Wp, "max_pool2d: kernel " + str(kh) + "x" + str(kw) +
                                      " is larger than the padded input " + str(Hp) + "x" + str(Wp));
    Pool2dParams p{N, C, H, W, kh, kw, stride_h, stride_w, pad_h, pad_w, 0, 0};
    p.Ho = caffe_pool_out(H, kh, stride_h, pad_h);
    p.Wo = caffe_pool_out(W, kw, stride_w, pad_w);
    checked_mul(checked_mul(checked_mul(N, C, op), H, op), W, op);
    return p;
}

// ------------------------------------------------------------------- LRN
struct LrnParams {
    index_t N, C, H, W;  // x, y, scale all [N, C, H, W]
    index_t size;        // n (odd): channels in the window c-(n-1)/2 .. c+(n-1)/2 (Caffe), clipped
    float alpha, beta, k;
};

inline LrnParams make_lrn_params(index_t N, index_t C, index_t H, index_t W, index_t size,
                                 double alpha, double beta, double k) {
    using namespace detail;
    const char* op = "lrn";
    require_nchw(op, N, C, H, W);
    require_positive(size, op, "size");
    require(size % 2 == 1, "lrn: size must be odd (a window centred on each channel, as in Caffe), got " + str(size));
    require(std::isfinite(alpha) && std::isfinite(beta) && std::isfinite(k),
            "lrn: alpha, beta and k must be finite");
    require(alpha >= 0.0, "lrn: alpha must be non-negative");
    require(k > 0.0, "lrn: k must be positive (the scale k + alpha/n*sum(x^2) must stay > 0)");
    // The core computes in float32: the checks above must hold for the rounded values too
    // (k = 1e-300 rounds to 0 and alpha = 1e300 to inf, and either turns every output into NaN).
    // (compared in double first: converting a double beyond float's range is undefined)
    const double fmax = std::numeric_limits<float>::max();
    require(std::fabs(alpha) <= fmax && std::fabs(beta) <= fmax && k <= fmax,
            "lrn: alpha, beta and k must be finite in float32 (|value| <= 3.4e38), the precision "
            "the core computes in");
    const float af = float(alpha), bf = float(beta), kf = float(k);
    require(kf > 0.0f, "lrn: k must be positive in float32 (>= 1.4e-45), the precision the core "
                       "computes in; got " + str_real(k) + ", which rounds to 0");
    // the backward's coefficient 2 alpha beta / n (maths.h, lrn_backward_elem)
    require(std::isfinite(2.0f * af * bf / float(size)),
            "lrn: 2 * alpha * beta / size must be finite in float32, the precision the core "
            "computes in");
    checked_mul(checked_mul(checked_mul(N, C, op), H, op), W, op);
    return LrnParams{N, C, H, W, size, af, bf, kf};
}

// ---------------------------------------------------------------- linear
struct LinearParams {
    index_t N;  // batch; x [N, I] (any per-sample shape, flattened), y [N, O]
    index_t I;  // input features;  weight [O, I]
    index_t O;  // output features; bias [O]
};

inline LinearParams make_linear_params(index_t N, index_t I, index_t O, index_t weight_i) {
    using namespace detail;
    const char* op = "linear";
    require_positive(N, op, "batch size N of x");
    require_positive(I, op, "input features of x");
    require_positive(O, op, "output features (weight.shape[0])");
    require(weight_i == I, "linear: weight.shape[1] must equal the " + str(I) +
                               " features of one flattened sample of x, got " + str(weight_i));
    checked_mul(N, I, op);
    checked_mul(N, O, op);
    checked_mul(O, I, op);
    return LinearParams{N, I, O};
}

}  // namespace invert_native
