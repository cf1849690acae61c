// TV^beta and alpha-norm on the CPU: value and gradient in one pass.
//
// Per-image values are summed in float64 through per-row partial sums added in
// a fixed order, so they do not depend on the thread count.
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

void alpha_norm_forward(const AlphaNormParams& p, const float* x, double* value, float* dx) {
    constexpr index_t kChunk = 4096;
    const index_t chunks = (p.M + kChunk - 1) / kChunk;
    thread_local std::vector<double> buffer;
    buffer.resize(p.N * chunks);
    double* partial = buffer.data();
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t c = 0; c < chunks; ++c) {
            const index_t b = c * kChunk, e = b + kChunk < p.M ? b + kChunk : p.M;
            double s = 0.0;
            for (index_t i = n * p.M + b; i < n * p.M + e; ++i) s += alpha_norm_at(p, x[i], &dx[i]);
            partial[n * chunks + c] = s;
        }
    for (index_t n = 0; n < p.N; ++n) {
        double s = 0.0;
        for (index_t c = 0; c < chunks; ++c) s += partial[n * chunks + c];
        value[n] = s;
    }
}

}  // namespace invert_native
