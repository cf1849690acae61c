// Max-pooling forward and backward on the CPU (maths in maths.h).
//
// Backward scatters each dy to its recorded argmax, visiting outputs in
// row-major order: the same summation order as the gather form the CUDA core
// uses, so both backends give identical sums.
#include <cstring>

#include "invert_native/maths.h"
#include "invert_native/ops.h"

namespace invert_native {

void maxpool2d_forward(const Pool2dParams& p, const float* x, float* y, index_t* argmax) {
    const index_t planes = p.N * p.C, in = p.H * p.W, out = p.Ho * p.Wo;
#pragma omp parallel for schedule(static)
    for (index_t q = 0; q < planes; ++q) {
        const float* xp = x + q * in;
        for (index_t oy = 0; oy < p.Ho; ++oy)
            for (index_t ox = 0; ox < p.Wo; ++ox) {
                const index_t o = q * out + oy * p.Wo + ox;
                y[o] = maxpool2d_forward_at(p, xp, oy, ox, &argmax[o]);
            }
    }
}

void maxpool2d_backward(const Pool2dParams& p, const float* dy, const index_t* argmax, float* dx) {
    const index_t planes = p.N * p.C, in = p.H * p.W, out = p.Ho * p.Wo;
#pragma omp parallel for schedule(static)
    for (index_t q = 0; q < planes; ++q) {
        float* dxp = dx + q * in;
        std::memset(dxp, 0, sizeof(float) * in);
        for (index_t o = 0; o < out; ++o) {
            const index_t i = argmax[q * out + o];
            if (i >= 0 && i < in) dxp[i] += dy[q * out + o];  // guard: argmax comes from the caller
        }
    }
}

}  // namespace invert_native
