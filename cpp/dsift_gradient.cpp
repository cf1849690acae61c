// Dense SIFT gradient + bilinear orientation binning on the CPU (maths in dsift_maths.h).
#include <vector>

#include "invert_native/dsift.h"
#include "invert_native/dsift_maths.h"

namespace invert_native {

void dsift_gradient_forward(const DsiftParams& p, const float* x, float* h) {
    const index_t plane = p.H * p.W;
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t y = 0; y < p.H; ++y) {
            const float* xp = x + n * plane;
            float* hn = h + n * p.K * plane;
            for (index_t xx = 0; xx < p.W; ++xx)
                dsift_gradient_forward_at(p, xp, hn + y * p.W + xx, plane, y, xx);
        }
}

// Overwrites dx. Two passes: d loss / d g per pixel into a reused workspace,
// then each pixel gathers from its neighbours' (dsift_gradient_gather_at).
void dsift_gradient_backward(const DsiftParams& p, const float* x, const float* dh, float* dx) {
    const index_t plane = p.H * p.W;
    // Reused between calls; thread-local to the calling thread (OpenMP workers use the pointer).
    thread_local std::vector<float> buffer;
    buffer.resize(size_t(2 * p.N * plane));
    float* dg = buffer.data();  // [N, 2, H, W]: dgx, dgy
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t y = 0; y < p.H; ++y) {
            const float* xp = x + n * plane;
            const float* dhn = dh + n * p.K * plane;
            float* gx = dg + 2 * n * plane;
            for (index_t xx = 0; xx < p.W; ++xx) {
                const index_t i = y * p.W + xx;
                dsift_gradient_dg_at(p, xp, dhn + i, plane, y, xx, &gx[i], &gx[plane + i]);
            }
        }
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t n = 0; n < p.N; ++n)
        for (index_t y = 0; y < p.H; ++y) {
            const float* gx = dg + 2 * n * plane;
            for (index_t xx = 0; xx < p.W; ++xx)
                dx[n * plane + y * p.W + xx] = dsift_gradient_gather_at(p, gx, gx + plane, y, xx);
        }
}

}  // namespace invert_native
