// Dense SIFT descriptor assembly (bins -> frames) on the CPU (maths in dsift_maths.h).
#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {

void dsift_sample_forward(const DsiftParams& p, const float* s, float* d) {
    const index_t D = p.D();
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t c = 0; c < D; ++c) {
            float* dc = d + (n * D + c) * p.ny * p.nx;
            for (index_t fy = 0; fy < p.ny; ++fy)
                for (index_t fx = 0; fx < p.nx; ++fx)
                    dc[fy * p.nx + fx] = dsift_sample_at(p, s, n, c, fy, fx);
        }
}

// Overwrites ds (pixels that are no bin centre get 0).
void dsift_sample_backward(const DsiftParams& p, const float* dd, float* ds) {
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t t = 0; t < p.K; ++t) {
            float* dst = ds + (n * p.K + t) * p.H * p.W;
            for (index_t y = 0; y < p.H; ++y) {
                const bool used = dsift_sample_row_used(p, y);
                for (index_t x = 0; x < p.W; ++x)
                    dst[y * p.W + x] = used ? dsift_sample_backward_at(p, dd, n, t, y, x) : 0.0f;
            }
        }
}

}  // namespace invert_native
