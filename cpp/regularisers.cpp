// TV^beta and alpha-norm on the CPU: value and gradient in one pass.
//
// Per-image values are summed in float64 through per-row partial sums added in
// a fixed order, so they do not depend on the thread count.
#include <cmath>
#include <vector>

#include "invert_native/regularisers.h"

namespace invert_native {

// Rows are walked in blocks of kRows by one thread each, so every pixel's
// weight is computed once (tv_term_weight) and passed on to its right and
// lower neighbours; only a block's first row recomputes the row above it.
// Each output still adds its three terms in tv_at's order.
void tv_forward(const TvParams& p, const float* x, double* value, float* dx) {
    constexpr index_t kRows = 16;
    const index_t rows = p.N * p.C * p.H, planes = p.N * p.C, W = p.W;
    const index_t blocks_per_plane = (p.H + kRows - 1) / kRows, blocks = planes * blocks_per_plane;
    // Reused between calls (no allocation per iteration). Thread-local to the
    // calling thread: OpenMP workers must use this pointer, not the name.
    thread_local std::vector<double> buffer;
    thread_local std::vector<float> lines;
    buffer.resize(rows);
    lines.resize(size_t(blocks * 2 * W));
    double* partial = buffer.data();
    float* line_base = lines.data();
#pragma omp parallel for schedule(static)
    for (index_t bk = 0; bk < blocks; ++bk) {
        const index_t plane = bk / blocks_per_plane, i0 = (bk % blocks_per_plane) * kRows;
        const index_t i1 = i0 + kRows < p.H ? i0 + kRows : p.H;
        const float* xp = x + plane * p.H * W;
        float* dxp = dx + plane * p.H * W;
        float* up = line_base + bk * 2 * W;  // w * d2 of the row above
        float* cur = up + W;                 // w * d2 of this row
        if (i0 > 0)
            for (index_t j = 0; j < W; ++j) {
                float d1, d2, w;
                tv_diffs(p, xp, i0 - 1, j, &d1, &d2);
                tv_term_weight(p, d1, d2, &w);
                up[j] = w * d2;
            }
        for (index_t i = i0; i < i1; ++i) {
            double s = 0.0;
            float left = 0.0f;  // w * d1 of (i, j - 1)
            for (index_t j = 0; j < W; ++j) {
                float d1, d2, w;
                tv_diffs(p, xp, i, j, &d1, &d2);
                s += tv_term_weight(p, d1, d2, &w);
                float g = -w * (d1 + d2);
                if (j > 0) g += left;
                if (i > 0) g += up[j];
                dxp[i * W + j] = g;
                left = w * d1;
                cur[j] = w * d2;
            }
            partial[plane * p.H + i] = s;
            float* t = up;
            up = cur;
            cur = t;
        }
    }
    const index_t per_image = p.C * p.H;
    for (index_t n = 0; n < p.N; ++n) {
        double s = 0.0;
        for (index_t r = 0; r < per_image; ++r) s += partial[n * per_image + r];
        value[n] = s;
    }
}

namespace {
constexpr index_t kAlphaChunk = 4096;  // values per partial sum (fixed: the order of the sums)

// One chunk: terms and gradients element by element (pow_of: |x| -> |x|^(alpha-1)), in a
// loop the compiler vectorises, then the terms summed in float64 over 8 lanes in a fixed
// order (one chain of dependent adds per element would cost its latency each time).
template <class Pow>
double alpha_chunk(float alpha, const float* __restrict x, float* __restrict dx, index_t count,
                   Pow pow_of) {
    float terms[kAlphaChunk];
    for (index_t i = 0; i < count; ++i) {
        float d;  // a local, so that the loop has no stores the compiler must order
        terms[i] = alpha_norm_from(alpha, x[i], pow_of(fabsf(x[i])), &d);
        dx[i] = d;
    }
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    index_t i = 0;
    for (; i + 8 <= count; i += 8)
        for (int l = 0; l < 8; ++l) lane[l] += terms[i + l];
    for (int l = 0; i < count; ++i, ++l) lane[l] += terms[i];
    return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

template <class Pow>
void alpha_norm_chunks(const AlphaNormParams& p, const float* x, float* dx, double* value,
                       Pow pow_of) {
    const index_t chunks = (p.M + kAlphaChunk - 1) / kAlphaChunk;
    thread_local std::vector<double> buffer;
    buffer.resize(p.N * chunks);
    double* partial = buffer.data();
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t c = 0; c < chunks; ++c) {
            const index_t b = c * kAlphaChunk, e = b + kAlphaChunk < p.M ? b + kAlphaChunk : p.M;
            partial[n * chunks + c] =
                alpha_chunk(p.alpha, x + n * p.M + b, dx + n * p.M + b, e - b, pow_of);
        }
    for (index_t n = 0; n < p.N; ++n) {
        double s = 0.0;
        for (index_t c = 0; c < chunks; ++c) s += partial[n * chunks + c];
        value[n] = s;
    }
}

// Integer exponents alpha - 1 in [0, 16] (alpha_pow's repeated squaring) with the
// exponent a compile-time constant; others through powf.
template <int E>
void alpha_norm_int(const AlphaNormParams& p, int e, const float* x, float* dx, double* value) {
    if (e == E)
        alpha_norm_chunks(p, x, dx, value, [](float a) { return alpha_pow_int<E>(a); });
    else if constexpr (E < 16)
        alpha_norm_int<E + 1>(p, e, x, dx, value);
}
}  // namespace

void alpha_norm_forward(const AlphaNormParams& p, const float* x, double* value, float* dx) {
    const float e = p.alpha - 1.0f;
    if (e >= 0.0f && e <= 16.0f && e == floorf(e))
        alpha_norm_int<0>(p, int(e), x, dx, value);
    else
        alpha_norm_chunks(p, x, dx, value, [e](float a) { return alpha_pow(a, e); });
}

}  // namespace invert_native
