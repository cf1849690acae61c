// Using the CPU core from C++: conv -> ReLU -> max-pool -> LRN, forward and
// backward-to-input, on a random batch. The program checks its own result:
// the convolution against a plain loop, and the gradient of the scalar
// L = sum(r * chain(x)) against central finite differences.
// Exit status 0 when both checks pass.
#include <invert_native/ops.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace inv = invert_native;
using inv::index_t;

struct Chain {
    inv::Conv2dParams conv;
    inv::Pool2dParams pool;
    inv::LrnParams lrn;
    std::vector<float> w, b;
    // activations kept by forward for backward
    std::vector<float> y1, y2, y3, y4, scale;
    std::vector<index_t> argmax;

    float* run(const float* x) {
        y1.resize(conv.N * conv.K * conv.Ho * conv.Wo);
        inv::conv2d_forward(conv, x, w.data(), b.data(), y1.data());
        y2.resize(y1.size());
        inv::relu_forward(index_t(y1.size()), y1.data(), y2.data());
        y3.resize(pool.N * pool.C * pool.Ho * pool.Wo);
        argmax.resize(y3.size());
        inv::maxpool2d_forward(pool, y2.data(), y3.data(), argmax.data());
        y4.resize(y3.size());
        scale.resize(y3.size());
        inv::lrn_forward(lrn, y3.data(), y4.data(), scale.data());
        return y4.data();
    }

    void backward(const float* dy4, float* dx) {
        std::vector<float> d3(y3.size()), d2(y2.size()), d1(y1.size());
        inv::lrn_backward(lrn, y3.data(), y4.data(), scale.data(), dy4, d3.data());
        inv::maxpool2d_backward(pool, d3.data(), argmax.data(), d2.data());
        inv::relu_backward(index_t(y1.size()), y1.data(), d2.data(), d1.data());
        inv::conv2d_backward(conv, d1.data(), w.data(), dx);
    }
};

int main() {
    std::mt19937 rng(7);
    std::normal_distribution<float> randn(0.0f, 1.0f);

    // A small CaffeNet-like block: 2 images, 6 channels, 13x11, 3x3 conv with
    // padding 1 and two groups, 3x3/2 pooling (ceil mode), LRN over 5 channels.
    const index_t N = 2, C = 6, H = 13, W = 11, K = 8, groups = 2;
    Chain net;
    net.conv = inv::make_conv2d_params(N, C, H, W, K, C / groups, 3, 3, 1, 1, 1, 1, groups);
    net.pool = inv::make_pool2d_params(N, K, net.conv.Ho, net.conv.Wo, 3, 3, 2, 2, 0, 0);
    net.lrn = inv::make_lrn_params(N, K, net.pool.Ho, net.pool.Wo, 5, 1e-1, 0.75, 1.0);
    net.w.resize(K * (C / groups) * 9);
    net.b.resize(K);
    for (auto& v : net.w) v = 0.3f * randn(rng);
    for (auto& v : net.b) v = 0.1f * randn(rng);
    std::vector<float> x(N * C * H * W);
    for (auto& v : x) v = randn(rng);

    // 1. forward conv against a plain loop
    net.run(x.data());
    const auto& p = net.conv;
    double conv_err = 0.0;
    for (index_t n = 0; n < N; ++n)
        for (index_t k = 0; k < K; ++k)
            for (index_t oy = 0; oy < p.Ho; ++oy)
                for (index_t ox = 0; ox < p.Wo; ++ox) {
                    const index_t g = k / p.Kg();
                    double ref = net.b[k];
                    for (index_t c = 0; c < p.Cg(); ++c)
                        for (index_t u = 0; u < 3; ++u)
                            for (index_t v = 0; v < 3; ++v) {
                                const index_t iy = oy - 1 + u, ix = ox - 1 + v;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                ref += double(net.w[((k * p.Cg() + c) * 3 + u) * 3 + v]) *
                                       x[((n * C + g * p.Cg() + c) * H + iy) * W + ix];
                            }
                    const double got = net.y1[((n * K + k) * p.Ho + oy) * p.Wo + ox];
                    conv_err = std::fmax(conv_err, std::fabs(got - ref));
                }

    // 2. backward against central differences of L = sum(r * chain(x))
    std::vector<float> r(net.y4.size()), dx(x.size());
    for (auto& v : r) v = randn(rng);
    net.backward(r.data(), dx.data());
    // The chain is piecewise smooth: a step that flips a ReLU or changes a
    // pooling winner is not differentiable there, so such coordinates are skipped.
    net.run(x.data());
    const std::vector<index_t> base_argmax = net.argmax;
    std::vector<bool> base_sign(net.y1.size());
    for (size_t i = 0; i < net.y1.size(); ++i) base_sign[i] = net.y1[i] > 0.0f;
    auto loss = [&](const std::vector<float>& xin, bool* smooth) {
        const float* y = net.run(xin.data());
        double s = 0.0;
        for (size_t i = 0; i < r.size(); ++i) s += double(r[i]) * y[i];
        if (net.argmax != base_argmax) *smooth = false;
        for (size_t i = 0; i < net.y1.size(); ++i)
            if ((net.y1[i] > 0.0f) != base_sign[i]) *smooth = false;
        return s;
    };
    const float eps = 1e-2f;
    double worst = 0.0;
    int checked = 0;
    for (size_t i = 0; i < x.size(); i += 7) {
        std::vector<float> xp = x, xm = x;
        xp[i] += eps;
        xm[i] -= eps;
        bool smooth = true;
        const double fd = (loss(xp, &smooth) - loss(xm, &smooth)) / (2.0 * eps);
        if (!smooth) continue;
        const double rel = std::fabs(fd - dx[i]) / (std::fabs(fd) + std::fabs(dx[i]) + 1e-2);
        worst = std::fmax(worst, rel);
        ++checked;
    }
    const bool ok = conv_err < 1e-4 && worst < 2e-2 && checked > 50;
    std::printf("layer_chain: conv max abs err %.2e, gradient worst rel err %.2e over %d coords: %s\n",
                conv_err, worst, checked, ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
