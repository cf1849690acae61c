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

// Overwrites ds (pixels that are no bin centre get 0). The CPU scatters each
// (n, t) plane's frames from one thread, bins (by, bx) outermost: every pixel
// receives its terms in the order dsift_sample_backward_at gathers them, with
// no per-pixel search over the bins.
void dsift_sample_backward(const DsiftParams& p, const float* dd, float* ds) {
    const index_t D = p.D(), F = p.ny * p.nx, plane = p.H * p.W;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t t = 0; t < p.K; ++t) {
            float* dst = ds + (n * p.K + t) * plane;
            for (index_t i = 0; i < plane; ++i) dst[i] = 0.0f;
            for (index_t by = 0; by < p.nbin; ++by)
                for (index_t bx = 0; bx < p.nbin; ++bx) {
                    const float w = dsift_bin_weight(p, bx, by);
                    const float* src = dd + (n * D + (by * p.nbin + bx) * p.K + t) * F;
                    for (index_t fy = 0; fy < p.ny; ++fy) {
                        float* row = dst + (p.y0 + fy * p.step_y + by * p.bin_size) * p.W +
                                     p.x0 + bx * p.bin_size;
                        for (index_t fx = 0; fx < p.nx; ++fx)
                            row[fx * p.step_x] += w * src[fy * p.nx + fx];
                    }
                }
        }
}

}  // namespace invert_native
