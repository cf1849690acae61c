// Fully connected forward and backward on the CPU.
//
// At the batch sizes of inversion (1 to a few restarts) these are
// matrix-vector products bound by reading the weights, so each direction
// streams the weight matrix exactly once per call, whatever the batch:
// forward parallel over output rows, backward over blocks of input columns.
// Larger batches go through the packed SGEMM.
#include <algorithm>
#include <cstring>

#include "invert_native/ops.h"

namespace invert_native {
namespace {
constexpr index_t kStreamMaxBatch = 16;  // above this, SGEMM reuses each weight tile enough
constexpr index_t kColBlock = 512;       // dx columns per task in backward (stays in L1/L2)
}  // namespace

void linear_forward(const LinearParams& p, const float* x, const float* w, const float* b,
                    float* y) {
    if (p.N > kStreamMaxBatch) {
        sgemm(false, true, p.N, p.O, p.I, 1.0f, x, p.I, w, p.I, 0.0f, y, p.O);
        if (b)
            for (index_t n = 0; n < p.N; ++n)
                for (index_t o = 0; o < p.O; ++o) y[n * p.O + o] += b[o];
        return;
    }
#pragma omp parallel for schedule(static)
    for (index_t o = 0; o < p.O; ++o) {
        const float* wr = w + o * p.I;
        for (index_t n = 0; n < p.N; ++n) {
            const float* xr = x + n * p.I;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (index_t i = 0; i < p.I; ++i) acc += xr[i] * wr[i];
            y[n * p.O + o] = b ? acc + b[o] : acc;
        }
    }
}

void linear_backward(const LinearParams& p, const float* dy, const float* w, float* dx) {
    if (p.N > kStreamMaxBatch) {
        sgemm(false, false, p.N, p.I, p.O, 1.0f, dy, p.O, w, p.I, 0.0f, dx, p.I);
        return;
    }
    const index_t blocks = (p.I + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static)
    for (index_t blk = 0; blk < blocks; ++blk) {
        const index_t i0 = blk * kColBlock, i1 = std::min(p.I, i0 + kColBlock);
        for (index_t n = 0; n < p.N; ++n) std::memset(dx + n * p.I + i0, 0, (i1 - i0) * sizeof(float));
        for (index_t o = 0; o < p.O; ++o) {
            const float* wr = w + o * p.I;
            for (index_t n = 0; n < p.N; ++n) {
                const float g = dy[n * p.O + o];
                float* d = dx + n * p.I;
#pragma omp simd
                for (index_t i = i0; i < i1; ++i) d[i] += g * wr[i];
            }
        }
    }
}

}  // namespace invert_native
