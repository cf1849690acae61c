// The fused momentum step of the inversion on the CPU (maths in descent.h). Built without
// fused multiply-adds (CMakeLists.txt), so that it rounds as the CUDA core and as NumPy.
#include "invert_native/descent.h"

namespace invert_native {

void descent_step(const DescentParams& p, const float* __restrict g_data,
                  const float* __restrict g_alpha, const float* __restrict g_tv,
                  float* __restrict x, float* __restrict mu) {
#pragma omp parallel for simd schedule(static)
    for (index_t i = 0; i < p.count; ++i) descent_step_at(p, g_data[i], g_alpha[i], g_tv[i], &x[i], &mu[i]);
}

}  // namespace invert_native
