// One step of the inversion's momentum descent, fused: the gradient of the objective assembled
// from its three parts, then mu <- m mu - rate g and x <- x + mu, in one pass over the image.
#pragma once

#include <cmath>

#include "invert_native/params.h"

namespace invert_native {

struct DescentParams {
    index_t count;       // values of x (all images of the batch)
    float sigma;         // scale of the data term's gradient (E is a function of sigma x)
    float lambda_alpha;  // weights of the alpha-norm's and TV's gradients
    float lambda_tv;
    float rate;          // learning rate
    float momentum;      // m
};

inline DescentParams make_descent_params(index_t count, double sigma, double lambda_alpha,
                                         double lambda_tv, double rate, double momentum) {
    using namespace detail;
    require(count >= 0, "descent_step: the number of values must be non-negative");
    for (double v : {sigma, lambda_alpha, lambda_tv, rate, momentum})
        require(std::isfinite(v) && std::isfinite(float(v)),
                "descent_step: sigma, the lambdas, the rate and the momentum must be finite "
                "in float32");
    return DescentParams{count, float(sigma), float(lambda_alpha), float(lambda_tv), float(rate),
                         float(momentum)};
}

// The step at one value, each operation rounded to float32 on its own and in this order:
//   g = (sigma g_data + lambda_alpha g_alpha) + lambda_tv g_tv
//   mu = m mu - rate g;  x = x + mu
// (the order of the NumPy code it replaced; no fused multiply-adds on either backend, see
// CMakeLists.txt, so CPU and CUDA give the same bits).
INV_HD void descent_step_at(const DescentParams& p, float g_data, float g_alpha, float g_tv,
                            float* x, float* mu) {
    const float g = (g_data * p.sigma + g_alpha * p.lambda_alpha) + g_tv * p.lambda_tv;
    const float m = *mu * p.momentum - g * p.rate;
    *mu = m;
    *x = *x + m;
}

// CPU core (cpp/descent.cpp): x and mu updated in place.
void descent_step(const DescentParams& p, const float* g_data, const float* g_alpha,
                  const float* g_tv, float* x, float* mu);

}  // namespace invert_native
