// Fully connected forward and backward on the CPU.
//
// At the batch sizes of inversion (1 to a few restarts) these are
// matrix-vector products bound by reading the weights, so each direction
// streams the weight matrix exactly once per call, whatever the batch:
// forward parallel over groups of output rows, backward over blocks of input
// columns or (dx small enough for L1) chunks of whole rows, several weight
// rows per pass (explicit 8-float vectors).
// Larger batches go through the packed SGEMM.
#include <algorithm>
#include <cstring>
#include <vector>

#include "invert_native/ops.h"

namespace invert_native {
namespace {
constexpr index_t kStreamMaxBatch = 16;  // above this, SGEMM reuses each weight tile enough
constexpr index_t kRows = 4;             // weight rows streamed together (4 memory streams)
constexpr index_t kColBlock = 1024;      // dx columns per task in backward (16 KiB at batch 4: L1)
constexpr index_t kRowStreamMaxFloats = 16384;  // backward streams rows while dx fits L1 (64 KiB)
constexpr index_t kRowChunks = 16;       // backward's partial sums (fixed: the order of the sums)

// Eight floats, unaligned, allowed to alias float (the build targets AVX2, x86-64-v3).
typedef float v8 __attribute__((vector_size(32), aligned(4), may_alias));
inline v8 load8(const float* p) { return *reinterpret_cast<const v8*>(p); }
inline void store8(float* p, v8 v) { *reinterpret_cast<v8*>(p) = v; }
inline float hsum(v8 v) {  // a fixed order, so results do not depend on the caller
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// out[n * ldo + r] = w[r] . x[n] for the kRows rows w[r] (length I) and NB
// inputs x[n] (stride I): each weight vector is loaded once for the NB inputs.
template <int NB>
void dot_rows(const float* const* w, const float* x, index_t I, float* out, index_t ldo) {
    v8 acc[kRows][NB] = {};
    index_t i = 0;
    for (; i + 8 <= I; i += 8) {
        v8 xv[NB];
        for (int n = 0; n < NB; ++n) xv[n] = load8(x + n * I + i);
        for (index_t r = 0; r < kRows; ++r) {
            const v8 wv = load8(w[r] + i);
            for (int n = 0; n < NB; ++n) acc[r][n] += wv * xv[n];
        }
    }
    for (index_t r = 0; r < kRows; ++r)
        for (int n = 0; n < NB; ++n) {
            float s = hsum(acc[r][n]);
            for (index_t t = i; t < I; ++t) s += w[r][t] * x[n * I + t];
            out[n * ldo + r] = s;
        }
}

// out[n, i] += sum over o in [o0, o1), in order, of dy[n, o] * w[o, i] for
// columns i in [i0, i1) (out rows p.I apart): kRows weight rows per pass, so
// that each out vector is loaded and stored once per kRows rows.
void add_rows(const LinearParams& p, const float* dy, const float* w, index_t o0, index_t o1,
              index_t i0, index_t i1, float* out) {
    index_t o = o0;
    for (; o + kRows <= o1; o += kRows) {
        const float* w0 = w + o * p.I;
        const float *w1 = w0 + p.I, *w2 = w1 + p.I, *w3 = w2 + p.I;
        for (index_t n = 0; n < p.N; ++n) {
            const float* g = dy + n * p.O + o;
            const float g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3];
            float* d = out + n * p.I;
            index_t i = i0;
            for (; i + 8 <= i1; i += 8) {
                v8 v = load8(d + i);
                v += g0 * load8(w0 + i);
                v += g1 * load8(w1 + i);
                v += g2 * load8(w2 + i);
                v += g3 * load8(w3 + i);
                store8(d + i, v);
            }
            for (; i < i1; ++i) {
                float v = d[i];
                v += g0 * w0[i];
                v += g1 * w1[i];
                v += g2 * w2[i];
                v += g3 * w3[i];
                d[i] = v;
            }
        }
    }
    for (; o < o1; ++o) {
        const float* wr = w + o * p.I;
        for (index_t n = 0; n < p.N; ++n) {
            const float g = dy[n * p.O + o];
            float* d = out + n * p.I;
            for (index_t i = i0; i < i1; ++i) d[i] += g * wr[i];
        }
    }
}

// Backward for batches whose dx does not fit L1: parallel over blocks of
// kColBlock columns, so that a block of every dx row stays in L1 while all
// the weight rows pass.
// The order over o is the same for every element, whatever the blocks or the
// thread count.
void backward_by_columns(const LinearParams& p, const float* dy, const float* w, float* dx) {
    const index_t blocks = (p.I + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static)
    for (index_t blk = 0; blk < blocks; ++blk) {
        const index_t i0 = blk * kColBlock, i1 = std::min(p.I, i0 + kColBlock);
        for (index_t n = 0; n < p.N; ++n) std::memset(dx + n * p.I + i0, 0, (i1 - i0) * sizeof(float));
        add_rows(p, dy, w, 0, p.O, i0, i1, dx);
    }
}
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
    // A matrix-vector product bound by reading the weights: kRows rows at a
    // time, each read from memory once for all the batch (pairs of inputs
    // share a pass over the rows, which stay in L1/L2).
    const index_t groups = (p.O + kRows - 1) / kRows;
#pragma omp parallel for schedule(static)
    for (index_t g = 0; g < groups; ++g) {
        const index_t o0 = g * kRows, rows = std::min(kRows, p.O - o0);
        const float* wr[kRows];
        for (index_t r = 0; r < kRows; ++r) wr[r] = w + (o0 + std::min(r, rows - 1)) * p.I;
        float out[kStreamMaxBatch][kRows];  // a partial group repeats its last row
        index_t n = 0;
        for (; n + 2 <= p.N; n += 2) dot_rows<2>(wr, x + n * p.I, p.I, &out[n][0], kRows);
        if (n < p.N) dot_rows<1>(wr, x + n * p.I, p.I, &out[n][0], kRows);
        for (n = 0; n < p.N; ++n)
            for (index_t r = 0; r < rows; ++r)
                y[n * p.O + o0 + r] = b ? out[n][r] + b[o0 + r] : out[n][r];
    }
}

void linear_backward(const LinearParams& p, const float* dy, const float* w, float* dx) {
    if (p.N > kStreamMaxBatch) {
        sgemm(false, false, p.N, p.I, p.O, 1.0f, dy, p.O, w, p.I, 0.0f, dx, p.I);
        return;
    }
    if (p.N * p.I > kRowStreamMaxFloats) {
        backward_by_columns(p, dy, w, dx);
        return;
    }
    // dx[n, :] = sum over o of dy[n, o] * w[o, :] with the weight rows streamed
    // whole and in order (each row contiguous: the prefetcher's best case;
    // backward_by_columns reads 4 KiB pieces of every row and measured 1.2-1.4x
    // PyTorch's GEMV at batch 1): kRowChunks fixed ranges of rows, each summed
    // into its own partial dx (which stays in L1), then the partials added in
    // chunk order. The order of every sum is fixed by the chunks, not by the
    // threads, so results do not depend on the thread count.
    const index_t chunks = std::min(kRowChunks, (p.O + kRows - 1) / kRows);
    const std::size_t part_size = std::size_t(p.N * p.I);
    thread_local std::vector<float> partials;  // only grows
    if (partials.size() < chunks * part_size) partials.resize(chunks * part_size);
    float* part0 = partials.data();
#pragma omp parallel for schedule(static)
    for (index_t ch = 0; ch < chunks; ++ch) {
        // rows [o0, o1), multiples of kRows except at the end
        const index_t groups = (p.O + kRows - 1) / kRows;
        const index_t o0 = std::min(p.O, groups * ch / chunks * kRows);
        const index_t o1 = std::min(p.O, groups * (ch + 1) / chunks * kRows);
        float* part = part0 + ch * part_size;
        std::memset(part, 0, part_size * sizeof(float));
        add_rows(p, dy, w, o0, o1, 0, p.I, part);
    }
    // dx = the partials in chunk order, parallel over blocks of dx
    const index_t total = p.N * p.I, blocks = (total + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static)
    for (index_t blk = 0; blk < blocks; ++blk) {
        const index_t i0 = blk * kColBlock, i1 = std::min(total, i0 + kColBlock);
        std::memcpy(dx + i0, part0 + i0, (i1 - i0) * sizeof(float));
        for (index_t ch = 1; ch < chunks; ++ch) {
            const float* part = part0 + ch * part_size;
            for (index_t i = i0; i < i1; ++i) dx[i] += part[i];
        }
    }
}

}  // namespace invert_native
