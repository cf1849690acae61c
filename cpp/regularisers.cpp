// TV^beta and alpha-norm on the CPU: value and gradient in one pass.
//
// Per-image values are summed in float64 through per-row partial sums added in
// a fixed order, so they do not depend on the thread count.
#include <vector>

#include "invert_native/regularisers.h"

namespace invert_native {

void tv_forward(const TvParams& p, const float* x, double* value, float* dx) {
    const index_t rows = p.N * p.C * p.H;
    // Reused between calls (no allocation per iteration). Thread-local to the
    // calling thread: OpenMP workers must use this pointer, not the name.
    thread_local std::vector<double> buffer;
    buffer.resize(rows);
    double* partial = buffer.data();
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < rows; ++r) {
        const index_t plane = r / p.H, i = r % p.H;
        const float* xp = x + plane * p.H * p.W;
        float* dxp = dx + plane * p.H * p.W;
        double s = 0.0;
        for (index_t j = 0; j < p.W; ++j) s += tv_at(p, xp, i, j, &dxp[i * p.W + j]);
        partial[r] = s;
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
