// Dense SIFT descriptor normalisation (L2, clamp, L2) on the CPU (maths in dsift_maths.h).
//
// One descriptor per iteration; its channels are ny*nx floats apart, so the
// inner loops stride. Descriptors are independent: no reduction across them.
#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {

void dsift_normalize_forward(const DsiftParams& p, const float* d, float* y, float* norms) {
    const index_t F = p.ny * p.nx, D = p.D();
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t f = 0; f < F; ++f) {
            const index_t base = n * D * F + f;
            dsift_normalize_forward_at(p, d + base, y + base, F, &norms[(n * 2) * F + f],
                                       &norms[(n * 2 + 1) * F + f]);
        }
}

// Overwrites dd.
void dsift_normalize_backward(const DsiftParams& p, const float* d, const float* norms,
                              const float* dy, float* dd) {
    const index_t F = p.ny * p.nx, D = p.D();
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t f = 0; f < F; ++f) {
            const index_t base = n * D * F + f;
            dsift_normalize_backward_at(p, d + base, dy + base, dd + base, F,
                                        norms[(n * 2) * F + f], norms[(n * 2 + 1) * F + f]);
        }
}

}  // namespace invert_native
