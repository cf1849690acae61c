// Fully connected forward and backward on the CPU.
//
// Batches up to 16 (the restarts of an inversion) stream the weights once per
// call in each direction (linear_kernel.h), with AVX-512 where the CPU has it
// (the same run-time check as the SGEMM) and AVX2 otherwise; larger batches go
// through the packed SGEMM. Backward reads only the weight rows whose dy is
// nonzero for some sample. Results do not depend on the thread count;
// backward's do not depend on the vector width either (no lane sums), while
// forward's lane sums differ in the last bits between AVX2 and AVX-512.
#include <cstring>
#include <vector>

#include "invert_native/ops.h"
#include "linear_kernel.h"

namespace invert_native {

// gemm.cpp: whether the AVX-512 kernels run (CPU check, INVERT_NATIVE_NO_AVX512)
bool sgemm_uses_avx512();

// linear_avx512.cpp
bool linear_avx512_built();
void linear_forward_stream_avx512(const LinearParams& p, const float* x, const float* w,
                                  const float* b, float* y);
void linear_backward_columns_avx512(const LinearParams& p, const float* dy, const float* w,
                                    const index_t* rows, index_t count, float* dx);
void linear_backward_rows_avx512(const LinearParams& p, const float* dy, const float* w,
                                 const index_t* rows, index_t count, index_t chunks, float* part0,
                                 float* dx);

namespace {

bool wide() {
    static const bool yes = linear_avx512_built() && sgemm_uses_avx512();
    return yes;
}

// The weight rows backward must read: those o with dy[n, o] != 0 for some n,
// in increasing order (rows[0, count)). A row whose coefficients are all zero
// adds exactly zero to dx, so it is skipped: after a ReLU (dy masked by its
// inactive units, about half of them with random weights and most with trained
// ones) backward reads only the active rows of the weights.
index_t active_rows(const LinearParams& p, const float* dy, index_t* rows) {
    index_t count = 0;
    for (index_t o = 0; o < p.O; ++o) {
        bool any = false;
        for (index_t n = 0; n < p.N && !any; ++n) any = dy[n * p.O + o] != 0.0f;
        if (any) rows[count++] = o;
    }
    return count;
}

// Buffers of the calling thread, kept between calls (they only grow) so that
// the inversion loop does not allocate.
thread_local std::vector<index_t> active;
thread_local std::vector<float> partials;

}  // namespace

void linear_forward(const LinearParams& p, const float* x, const float* w, const float* b,
                    float* y) {
    if (p.N > kLinStreamMaxBatch) {
        sgemm(false, true, p.N, p.O, p.I, 1.0f, x, p.I, w, p.I, 0.0f, y, p.O);
        if (b)
            for (index_t n = 0; n < p.N; ++n)
                for (index_t o = 0; o < p.O; ++o) y[n * p.O + o] += b[o];
        return;
    }
    if (wide())
        linear_forward_stream_avx512(p, x, w, b, y);
    else
        linear_forward_stream<8>(p, x, w, b, y);
}

void linear_backward(const LinearParams& p, const float* dy, const float* w, float* dx) {
    if (p.N > kLinStreamMaxBatch) {
        sgemm(false, false, p.N, p.I, p.O, 1.0f, dy, p.O, w, p.I, 0.0f, dx, p.I);
        return;
    }
    if (active.size() < std::size_t(p.O)) active.resize(p.O);
    index_t* rows = active.data();
    const index_t count = active_rows(p, dy, rows);
    if (count == 0) {
        std::memset(dx, 0, std::size_t(p.N * p.I) * sizeof(float));
        return;
    }
    if (p.N * p.I > kLinRowStreamMaxFloats) {
        if (wide())
            linear_backward_columns_avx512(p, dy, w, rows, count, dx);
        else
            linear_backward_columns<8>(p, dy, w, rows, count, dx);
        return;
    }
    const index_t chunks = std::min(kLinRowChunks, (count + kLinRows - 1) / kLinRows);
    const std::size_t need = std::size_t(chunks * p.N * p.I);
    if (partials.size() < need) partials.resize(need);
    if (wide())
        linear_backward_rows_avx512(p, dy, w, rows, count, chunks, partials.data(), dx);
    else
        linear_backward_rows<8>(p, dy, w, rows, count, chunks, partials.data(), dx);
}

}  // namespace invert_native
