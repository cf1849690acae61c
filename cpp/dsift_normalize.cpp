// Dense SIFT descriptor normalisation (L2, clamp, L2) on the CPU (maths in dsift_maths.h).
//
// A descriptor's channels are ny*nx floats apart: backward takes one
// descriptor per iteration (strided inner loops), forward a run of adjacent
// ones. Descriptors are independent: no reduction across them.
#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {

// Forward takes runs of kLanes frames at once (dsift_normalize_forward_lanes):
// the frames are contiguous, so its inner loops vectorise.
void dsift_normalize_forward(const DsiftParams& p, const float* d, float* y, float* norms) {
    constexpr index_t kLanes = 32;
    const index_t F = p.ny * p.nx, D = p.D(), runs = (F + kLanes - 1) / kLanes;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t r = 0; r < runs; ++r) {
            const index_t f = r * kLanes, L = f + kLanes < F ? kLanes : F - f;
            const index_t base = n * D * F + f;
            dsift_normalize_forward_lanes(p, d + base, y + base, F, L, &norms[(n * 2) * F + f],
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
