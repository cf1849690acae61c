// The per-element maths of maths.h in direct form (what the CUDA kernels run,
// one call per element) against the CPU core of ops.h (im2col + SGEMM for
// conv2d, scatter for max-pool backward, ...), on the host. Passing means the
// GPU's arithmetic equals the CPU's up to the order of the additions, so the
// GPU tests only have to compare the two backends.
//
// Error norm: max |direct - cpu| / max |cpu| over the whole output (relative
// to the largest reference magnitude, so cancellation to near zero in one
// element does not dominate). Tolerance kRelTol. Max-pool argmax must match
// exactly (one tie rule on both backends: the first maximum wins).
//
// Standalone: no CUDA, no test framework. Prints one summary line; returns
// non-zero on any failure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "invert_native/maths.h"
#include "invert_native/ops.h"

namespace inv = invert_native;
using inv::index_t;

namespace {

constexpr double kRelTol = 1e-4;

int g_checks = 0;
int g_failures = 0;

double rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
    double diff = 0.0, scale = 0.0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
        diff = std::max(diff, std::fabs(double(got[i]) - double(ref[i])));
        scale = std::max(scale, std::fabs(double(ref[i])));
    }
    return scale > 0.0 ? diff / scale : diff;
}

void expect_close(const std::string& what, const std::vector<float>& got,
                  const std::vector<float>& ref) {
    ++g_checks;
    const double err = rel_err(got, ref);
    if (got.size() != ref.size() || !(err <= kRelTol)) {
        ++g_failures;
        std::printf("FAIL %s: max|diff|/max|ref| = %.3g > %.1g\n", what.c_str(), err, kRelTol);
    }
}

void expect_equal(const std::string& what, const std::vector<index_t>& got,
                  const std::vector<index_t>& ref) {
    ++g_checks;
    std::size_t mismatches = got.size() == ref.size() ? 0 : 1;
    for (std::size_t i = 0; i < std::min(got.size(), ref.size()); ++i)
        mismatches += got[i] != ref[i];
    if (mismatches) {
        ++g_failures;
        std::printf("FAIL %s: %zu mismatching entries\n", what.c_str(), mismatches);
    }
}

std::vector<float> uniform(std::size_t n, std::mt19937& rng) {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (float& e : v) e = dist(rng);
    return v;
}

// Small integers: many exact ties, to exercise the max-pool tie rule.
std::vector<float> quantised(std::size_t n, std::mt19937& rng) {
    std::uniform_int_distribution<int> dist(-2, 2);
    std::vector<float> v(n);
    for (float& e : v) e = float(dist(rng));
    return v;
}

// ---------------------------------------------------------------- conv2d
struct ConvCase {
    const char* name;
    index_t N, C, H, W, K, kh, kw, sh, sw, ph, pw, groups;
};

void test_conv2d(const ConvCase& c, std::mt19937& rng) {
    const auto p = inv::make_conv2d_params(c.N, c.C, c.H, c.W, c.K, c.C / c.groups, c.kh, c.kw,
                                           c.sh, c.sw, c.ph, c.pw, c.groups);
    const auto x = uniform(std::size_t(p.N * p.C * p.H * p.W), rng);
    const auto w = uniform(std::size_t(p.K * p.Cg() * p.kh * p.kw), rng);
    const auto b = uniform(std::size_t(p.K), rng);
    const auto dy = uniform(std::size_t(p.N * p.K * p.Ho * p.Wo), rng);

    for (const float* bias : {b.data(), static_cast<const float*>(nullptr)}) {
        std::vector<float> y_cpu(dy.size()), y_direct(dy.size());
        inv::conv2d_forward(p, x.data(), w.data(), bias, y_cpu.data());
        index_t i = 0;
        for (index_t n = 0; n < p.N; ++n)
            for (index_t k = 0; k < p.K; ++k)
                for (index_t oy = 0; oy < p.Ho; ++oy)
                    for (index_t ox = 0; ox < p.Wo; ++ox)
                        y_direct[i++] =
                            inv::conv2d_forward_at(p, x.data(), w.data(), bias, n, k, oy, ox);
        expect_close(std::string("conv2d_forward ") + c.name + (bias ? " (bias)" : " (no bias)"),
                     y_direct, y_cpu);
    }

    std::vector<float> dx_cpu(x.size(), 123.0f), dx_direct(x.size());  // CPU must overwrite
    inv::conv2d_backward(p, dy.data(), w.data(), dx_cpu.data());
    index_t i = 0;
    for (index_t n = 0; n < p.N; ++n)
        for (index_t ch = 0; ch < p.C; ++ch)
            for (index_t iy = 0; iy < p.H; ++iy)
                for (index_t ix = 0; ix < p.W; ++ix)
                    dx_direct[i++] = inv::conv2d_backward_at(p, dy.data(), w.data(), n, ch, iy, ix);
    expect_close(std::string("conv2d_backward ") + c.name, dx_direct, dx_cpu);
}

// -------------------------------------------------------------- maxpool2d
struct PoolCase {
    const char* name;
    index_t N, C, H, W, kh, kw, sh, sw, ph, pw;
};

void test_maxpool2d(const PoolCase& c, bool ties, std::mt19937& rng) {
    const auto p = inv::make_pool2d_params(c.N, c.C, c.H, c.W, c.kh, c.kw, c.sh, c.sw, c.ph, c.pw);
    const std::size_t in = std::size_t(p.N * p.C * p.H * p.W);
    const std::size_t out = std::size_t(p.N * p.C * p.Ho * p.Wo);
    const auto x = ties ? quantised(in, rng) : uniform(in, rng);
    const auto dy = uniform(out, rng);
    const std::string name = std::string(c.name) + (ties ? " (ties)" : "");

    std::vector<float> y_cpu(out), y_direct(out);
    std::vector<index_t> am_cpu(out), am_direct(out);
    inv::maxpool2d_forward(p, x.data(), y_cpu.data(), am_cpu.data());
    index_t i = 0;
    for (index_t plane = 0; plane < p.N * p.C; ++plane)
        for (index_t oy = 0; oy < p.Ho; ++oy)
            for (index_t ox = 0; ox < p.Wo; ++ox, ++i)
                y_direct[i] = inv::maxpool2d_forward_at(p, x.data() + plane * p.H * p.W, oy, ox,
                                                        &am_direct[i]);
    expect_close("maxpool2d_forward " + name, y_direct, y_cpu);
    expect_equal("maxpool2d_forward argmax " + name, am_direct, am_cpu);

    std::vector<float> dx_cpu(in, 123.0f), dx_direct(in);
    inv::maxpool2d_backward(p, dy.data(), am_cpu.data(), dx_cpu.data());
    i = 0;
    for (index_t plane = 0; plane < p.N * p.C; ++plane)
        for (index_t iy = 0; iy < p.H; ++iy)
            for (index_t ix = 0; ix < p.W; ++ix)
                dx_direct[i++] = inv::maxpool2d_backward_at(p, dy.data() + plane * p.Ho * p.Wo,
                                                            am_cpu.data() + plane * p.Ho * p.Wo,
                                                            iy, ix);
    expect_close("maxpool2d_backward " + name, dx_direct, dx_cpu);
}

// -------------------------------------------------------------------- LRN
// Direct form as in cuda/lrn.cu: one call of lrn_scale_at / lrn_backward_acc_at
// per element.
void test_lrn(index_t N, index_t C, index_t H, index_t W, index_t size, std::mt19937& rng) {
    const auto p = inv::make_lrn_params(N, C, H, W, size, 1e-4 * 100, 0.75, 1.0);
    const index_t plane = H * W;
    const std::size_t total = std::size_t(N * C * plane);
    auto x = uniform(total, rng);
    for (float& v : x) v *= 10.0f;  // so that alpha/n * sum(x^2) is not negligible against k
    const auto dy = uniform(total, rng);
    const std::string name = "lrn " + std::to_string(N) + "x" + std::to_string(C) + "x" +
                             std::to_string(H) + "x" + std::to_string(W) + " size " +
                             std::to_string(size);

    std::vector<float> y_cpu(total), s_cpu(total), y_direct(total), s_direct(total);
    inv::lrn_forward(p, x.data(), y_cpu.data(), s_cpu.data());
    for (std::size_t i = 0; i < total; ++i) {
        const index_t pix = index_t(i) % plane, c = (index_t(i) / plane) % C;
        const index_t n = index_t(i) / (plane * C);
        s_direct[i] = inv::lrn_scale_at(p, x.data() + n * C * plane + pix, plane, c);
        y_direct[i] = inv::lrn_output(p, x[i], s_direct[i]);
    }
    expect_close(name + " forward scale", s_direct, s_cpu);
    expect_close(name + " forward y", y_direct, y_cpu);

    std::vector<float> dx_cpu(total, 123.0f), dx_direct(total);
    inv::lrn_backward(p, x.data(), y_cpu.data(), s_cpu.data(), dy.data(), dx_cpu.data());
    for (std::size_t i = 0; i < total; ++i) {
        const index_t pix = index_t(i) % plane, c = (index_t(i) / plane) % C;
        const index_t n = index_t(i) / (plane * C);
        const index_t pixel0 = n * C * plane + pix;
        const float acc = inv::lrn_backward_acc_at(p, dy.data() + pixel0, y_cpu.data() + pixel0,
                                                   s_cpu.data() + pixel0, plane, c);
        dx_direct[i] = inv::lrn_backward_elem(p, x[i], s_cpu[i], dy[i], acc);
    }
    expect_close(name + " backward", dx_direct, dx_cpu);
}

// ------------------------------------------------------------------- ReLU
void test_relu(std::mt19937& rng) {
    const index_t n = 1001;
    auto x = quantised(std::size_t(n), rng);  // includes exact zeros (the kink)
    const auto dy = uniform(std::size_t(n), rng);
    std::vector<float> y_cpu(n), y_direct(n), dx_cpu(n, 123.0f), dx_direct(n);
    inv::relu_forward(n, x.data(), y_cpu.data());
    inv::relu_backward(n, x.data(), dy.data(), dx_cpu.data());
    for (index_t i = 0; i < n; ++i) {
        y_direct[i] = inv::relu_forward_elem(x[i]);
        dx_direct[i] = inv::relu_backward_elem(x[i], dy[i]);
    }
    expect_close("relu_forward", y_direct, y_cpu);
    expect_close("relu_backward", dx_direct, dx_cpu);
}

// ----------------------------------------------------------------- linear
// Direct sums in ascending order, as each thread of cuda/gemm.cuh adds them.
void test_linear(index_t N, index_t I, index_t O, std::mt19937& rng) {
    const auto p = inv::make_linear_params(N, I, O, I);
    const auto x = uniform(std::size_t(N * I), rng);
    const auto w = uniform(std::size_t(O * I), rng);
    const auto b = uniform(std::size_t(O), rng);
    const auto dy = uniform(std::size_t(N * O), rng);
    const std::string name = "linear N=" + std::to_string(N) + " I=" + std::to_string(I) +
                             " O=" + std::to_string(O);

    std::vector<float> y_cpu(N * O), y_direct(N * O), dx_cpu(N * I, 123.0f), dx_direct(N * I);
    inv::linear_forward(p, x.data(), w.data(), b.data(), y_cpu.data());
    inv::linear_backward(p, dy.data(), w.data(), dx_cpu.data());
    for (index_t n = 0; n < N; ++n) {
        for (index_t o = 0; o < O; ++o) {
            float acc = 0.0f;
            for (index_t i = 0; i < I; ++i) acc += x[n * I + i] * w[o * I + i];
            y_direct[n * O + o] = acc + b[o];
        }
        for (index_t i = 0; i < I; ++i) {
            float acc = 0.0f;
            for (index_t o = 0; o < O; ++o) acc += dy[n * O + o] * w[o * I + i];
            dx_direct[n * I + i] = acc;
        }
    }
    expect_close(name + " forward", y_direct, y_cpu);
    expect_close(name + " backward", dx_direct, dx_cpu);
}

}  // namespace

int main() {
    std::mt19937 rng(20150607);

    const ConvCase conv_cases[] = {
        // name                      N  C   H    W    K   kh  kw  sh sw ph pw groups
        {"3x3 plain",                1, 1,  5,   5,   1,  3,  3,  1, 1, 0, 0, 1},
        {"odd sizes stride 2 pad 1", 2, 3,  7,   9,   4,  3,  3,  2, 2, 1, 1, 1},
        {"groups 2 asymmetric",      2, 4,  9,   7,   6,  5,  3,  2, 1, 2, 1, 2},
        {"stride 3 > kernel 2",      1, 2,  10,  11,  3,  2,  2,  3, 3, 0, 0, 1},
        {"pointwise 1x1",            2, 5,  6,   7,   3,  1,  1,  1, 1, 0, 0, 1},
        {"conv2-like groups 2",      1, 6,  13,  13,  8,  5,  5,  1, 1, 2, 2, 2},
        {"CaffeNet conv1",           1, 3,  227, 227, 96, 11, 11, 4, 4, 0, 0, 1},
    };
    for (const auto& c : conv_cases) test_conv2d(c, rng);

    const PoolCase pool_cases[] = {
        // name                     N  C  H   W   kh kw sh sw ph pw
        {"3x3 s2",                  1, 1, 5,  5,  3, 3, 2, 2, 0, 0},
        {"CaffeNet pool5 shape",    2, 3, 13, 13, 3, 3, 2, 2, 0, 0},
        {"ceil mode odd sizes",     2, 2, 8,  7,  3, 3, 2, 2, 0, 0},
        {"padding asymmetric",      2, 2, 7,  8,  3, 2, 2, 1, 1, 1},
        {"CaffeNet pool1 shape",    1, 4, 55, 55, 3, 3, 2, 2, 0, 0},
    };
    for (const auto& c : pool_cases) {
        test_maxpool2d(c, false, rng);
        test_maxpool2d(c, true, rng);
    }

    test_lrn(2, 7, 5, 3, 5, rng);
    test_lrn(1, 4, 3, 3, 3, rng);
    test_lrn(1, 3, 2, 2, 5, rng);  // window wider than the channel count
    test_relu(rng);
    test_linear(2, 37, 11, rng);
    test_linear(3, 300, 65, rng);

    std::printf("test_shared_maths: %d/%d checks passed (tolerance max|diff|/max|ref| <= %.0e)\n",
                g_checks - g_failures, g_checks, kRelTol);
    return g_failures == 0 ? 0 : 1;
}
