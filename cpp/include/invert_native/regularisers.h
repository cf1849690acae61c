// The image priors of the inversion objective: the total-variation norm
// TV^beta and the alpha-norm, each computed with its gradient in one pass.
#pragma once

#include <cmath>

#include "invert_native/params.h"

namespace invert_native {

struct TvParams {
    index_t N, C, H, W;  // x [N, C, H, W]; the sum runs per image over channels and pixels
    float beta;          // exponent of the gradient norm (paper: 2; 1 gives "spiky" images)
    float floor;         // beta < 2 only: d1^2 + d2^2 below it is smoothed (see tv_term_weight)
};

struct AlphaNormParams {
    index_t N, M;  // x [N, M] (M = C*H*W values per image)
    float alpha;   // exponent (paper: 6)
};

inline TvParams make_tv_params(index_t N, index_t C, index_t H, index_t W, double beta,
                               double floor) {
    using namespace detail;
    const char* op = "tv";
    require_nchw(op, N, C, H, W);
    require(std::isfinite(beta) && beta > 0.0, "tv: beta must be a positive number");
    // a float32 floor that rounds to 0 or a subnormal would give an infinite weight
    require(std::isfinite(floor) && std::isnormal(float(floor)) && floor > 0.0,
            "tv: floor must be a positive number representable in float32 (>= 1.2e-38)");
    checked_mul(checked_mul(checked_mul(N, C, op), H, op), W, op);
    return TvParams{N, C, H, W, float(beta), float(floor)};
}

inline AlphaNormParams make_alpha_norm_params(index_t N, index_t M, double alpha) {
    using namespace detail;
    require_positive(N, "alpha_norm", "batch size N of x");
    require_positive(M, "alpha_norm", "values per image");
    require(std::isfinite(alpha) && alpha >= 1.0, "alpha_norm: alpha must be a number >= 1");
    checked_mul(N, M, "alpha_norm");
    return AlphaNormParams{N, M, float(alpha)};
}

// ---------------------------------------------------------------- TV^beta
// Forward differences with the last column/row replicated (so the last
// difference is 0), as in the authors' code:
//   d1 = x[i, j+1] - x[i, j],  d2 = x[i+1, j] - x[i, j],  v = d1^2 + d2^2
//   R  = sum_{i,j} f(v),  f(v) = v^(beta/2)
// Its gradient, with w = 2 f'(v) (= beta v^(beta/2 - 1)):
//   dR/dx[i,j] = -w[i,j] (d1[i,j] + d2[i,j]) + w[i,j-1] d1[i,j-1] + w[i-1,j] d2[i-1,j]
//
// Floor, for beta < 2 only (there w grows without bound as v -> 0, and is
// infinite on flat regions): below v = floor, f is replaced by its tangent in v,
//   f(v) = floor^(beta/2) + (beta/2) floor^(beta/2 - 1) (v - floor),
// so w = beta floor^(beta/2 - 1) is constant there. f stays continuous with a
// continuous derivative, and value and gradient are those of one function. For
// beta >= 2 nothing is floored (w is finite and tends to 0 or 2). The floor is
// in the units of x squared: the caller sets it below the squared differences
// that matter (invert() passes a floor of 1e-5 grey levels^2 divided by sigma^2).

// d1, d2 at (i, j) of plane xp [H, W].
INV_HD void tv_diffs(const TvParams& p, const float* xp, index_t i, index_t j, float* d1,
                     float* d2) {
    const float v = xp[i * p.W + j];
    *d1 = j + 1 < p.W ? xp[i * p.W + j + 1] - v : 0.0f;
    *d2 = i + 1 < p.H ? xp[(i + 1) * p.W + j] - v : 0.0f;
}

// The term f(v) of one pixel, returned, and its weight w = 2 f'(v), in *w,
// from one powf: v^(beta/2) = v * v^(beta/2 - 1) (within an ulp or two of powf).
// The CPU loop computes each pixel's weight once and hands it to its neighbours;
// the CUDA kernel's tv_at recomputes its neighbours' weights with tv_weight.
INV_HD float tv_term_weight(const TvParams& p, float d1, float d2, float* w) {
    const float v = d1 * d1 + d2 * d2;
    if (p.beta == 2.0f) {
        *w = 2.0f;
        return v;
    }
    if (p.beta > 2.0f) {
        const float t = powf(v, 0.5f * p.beta - 1.0f);
        *w = p.beta * t;
        return v * t;
    }
    const float vf = v > p.floor ? v : p.floor;
    // beta = 1 (the paper's other setting): v^(-1/2) without the general powf
    const float t = p.beta == 1.0f ? 1.0f / sqrtf(vf) : powf(vf, 0.5f * p.beta - 1.0f);
    *w = p.beta * t;
    // v t above the floor; the tangent floor t + (beta/2) t (v - floor) below it
    return t * (vf - 0.5f * p.beta * (vf - v));
}

INV_HD float tv_weight(const TvParams& p, float d1, float d2) {
    float w;
    tv_term_weight(p, d1, d2, &w);
    return w;
}

// Value term and gradient at (i, j) of plane xp (gather form: each output
// element is written by one thread).
INV_HD float tv_at(const TvParams& p, const float* xp, index_t i, index_t j, float* dx) {
    float d1, d2, w;
    tv_diffs(p, xp, i, j, &d1, &d2);
    const float term = tv_term_weight(p, d1, d2, &w);
    float g = -w * (d1 + d2);
    if (j > 0) {
        float e1, e2;
        tv_diffs(p, xp, i, j - 1, &e1, &e2);
        g += tv_weight(p, e1, e2) * e1;
    }
    if (i > 0) {
        float e1, e2;
        tv_diffs(p, xp, i - 1, j, &e1, &e2);
        g += tv_weight(p, e1, e2) * e2;
    }
    *dx = g;
    return term;
}

// ------------------------------------------------------------- alpha-norm
// R = sum |x|^alpha,  dR/dx = alpha |x|^(alpha-1) sign(x)
// Integer exponents (the paper's alpha = 6) by repeated squaring: a few
// multiplications (a few ulps) instead of a powf per element.
INV_HD float alpha_pow(float a, float e) {
    if (e >= 0.0f && e <= 16.0f && e == floorf(e)) {
        float t = 1.0f, base = a;
        for (int k = int(e); k > 0; k >>= 1) {
            if (k & 1) t *= base;
            base *= base;
        }
        return t;
    }
    return powf(a, e);
}

// alpha_pow(a, E) with E known when compiling (the same multiplications in the same
// order, so the same bits), for CPU loops that the compiler then vectorises.
// Unrolled by the templates themselves: a loop here, even of constant trip count, kept
// GCC from vectorising the loops that call it.
template <int K>
INV_HD float alpha_pow_step(float t, float base) {
    if constexpr (K == 0) {
        return t;
    } else {
        return alpha_pow_step<(K >> 1)>((K & 1) ? t * base : t, base * base);
    }
}

template <int E>
INV_HD float alpha_pow_int(float a) {
    return alpha_pow_step<E>(1.0f, a);
}

// |x|^alpha, with its derivative in dx, from t = |x|^(alpha - 1).
INV_HD float alpha_norm_from(float alpha, float x, float t, float* dx) {
    const float sign = x >= 0.0f ? 1.0f : -1.0f;  // a select of constants: no branch
    *dx = sign * (alpha * t);
    return t * fabsf(x);
}

INV_HD float alpha_norm_at(const AlphaNormParams& p, float x, float* dx) {
    return alpha_norm_from(p.alpha, x, alpha_pow(fabsf(x), p.alpha - 1.0f), dx);
}

// CPU core (cpp/regularisers.cpp). value: [N] per-image sums (float64
// accumulation, deterministic); dx: [N, C, H, W] (overwritten).
void tv_forward(const TvParams& p, const float* x, double* value, float* dx);
void alpha_norm_forward(const AlphaNormParams& p, const float* x, double* value, float* dx);

}  // namespace invert_native
