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
constexpr index_t kColBlock = 1024;      // dx columns per block when adding the row partials
constexpr index_t kL1Floats = 8192;      // 32 KiB: what a column block may keep in L1 (of 48)
constexpr index_t kRowStreamMaxFloats = 16384;  // backward streams rows while dx fits L1 (64 KiB)
constexpr index_t kRowChunks = 16;       // backward's partial sums (fixed: the order of the sums)

// Eight floats, unaligned, allowed to alias float (the build targets AVX2, x86-64-v3).
typedef float v8 __attribute__((vector_size(32), aligned(4), may_alias));
inline v8 load8(const float* p) { return *reinterpret_cast<const v8*>(p); }
inline void store8(float* p, v8 v) { *reinterpret_cast<v8*>(p) = v; }
inline float hsum(v8 v) {  // a fixed order, so results do not depend on the caller
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// acc[n][r] += w[r][i0, i1) . x[n][i0, i1) lane by lane, for the kRows rows w[r]
// and NB inputs x[n] (stride I): each weight vector is loaded once for the NB
// inputs. The lane accumulators live in memory between column blocks, so a
// row's sum is the same sequence of operations however the columns are split.
template <int NB>
void dot_rows(const float* const* w, const float* x, index_t I, index_t i0, index_t i1,
              v8 (*acc)[kRows]) {
    v8 a[kRows][NB];
    for (index_t r = 0; r < kRows; ++r)
        for (int n = 0; n < NB; ++n) a[r][n] = acc[n][r];
    for (index_t i = i0; i + 8 <= i1; i += 8) {
        v8 xv[NB];
        for (int n = 0; n < NB; ++n) xv[n] = load8(x + n * I + i);
        for (index_t r = 0; r < kRows; ++r) {
            const v8 wv = load8(w[r] + i);
            for (int n = 0; n < NB; ++n) a[r][n] += wv * xv[n];
        }
    }
    for (index_t r = 0; r < kRows; ++r)
        for (int n = 0; n < NB; ++n) acc[n][r] = a[r][n];
}

// d[n][i] += g[n][0] * w[0][i] + ... + g[n][3] * w[3][i] (added one row at a
// time, in order) for the NB outputs d[n] (stride I) and their coefficients
// g[n][r], columns [i0, i1): the kRows weight vectors are loaded once for the
// NB outputs, whose coefficients stay in registers.
template <int NB>
void add_four_rows(const float* const* w, const float (*g)[kRows], float* d, index_t I,
                   index_t i0, index_t i1) {
    v8 gv[NB][kRows];
    for (int n = 0; n < NB; ++n)
        for (index_t r = 0; r < kRows; ++r) gv[n][r] = v8{} + g[n][r];
    index_t i = i0;
    for (; i + 8 <= i1; i += 8) {
        const v8 w0 = load8(w[0] + i), w1 = load8(w[1] + i), w2 = load8(w[2] + i),
                 w3 = load8(w[3] + i);
        for (int n = 0; n < NB; ++n) {
            v8 v = load8(d + n * I + i);
            v += gv[n][0] * w0;
            v += gv[n][1] * w1;
            v += gv[n][2] * w2;
            v += gv[n][3] * w3;
            store8(d + n * I + i, v);
        }
    }
    for (; i < i1; ++i)
        for (int n = 0; n < NB; ++n) {
            const float* gn = g[n];
            float v = d[n * I + i];
            v += gn[0] * w[0][i];
            v += gn[1] * w[1][i];
            v += gn[2] * w[2][i];
            v += gn[3] * w[3][i];
            d[n * I + i] = v;
        }
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

// out[n, i] += sum over the rows o = rows[a0], ..., rows[a1 - 1], in that
// order, of dy[n, o] * w[o, i] for columns i in [i0, i1) (out rows p.I apart):
// kRows weight rows per pass, so that each out vector is loaded and stored
// once per kRows rows.
void add_rows(const LinearParams& p, const float* dy, const float* w, const index_t* rows,
              index_t a0, index_t a1, index_t i0, index_t i1, float* out) {
    static_assert(kRows == 4, "add_four_rows adds four rows");
    index_t a = a0;
    for (; a + kRows <= a1; a += kRows) {
        const float* wr[kRows];
        for (index_t r = 0; r < kRows; ++r) wr[r] = w + rows[a + r] * p.I;
        float g[kStreamMaxBatch][kRows];
        for (index_t n = 0; n < p.N; ++n)
            for (index_t r = 0; r < kRows; ++r) g[n][r] = dy[n * p.O + rows[a + r]];
        index_t n = 0;
        for (; n + 2 <= p.N; n += 2) add_four_rows<2>(wr, g + n, out + n * p.I, p.I, i0, i1);
        if (n < p.N) add_four_rows<1>(wr, g + n, out + n * p.I, p.I, i0, i1);
    }
    for (; a < a1; ++a) {
        const float* wr = w + rows[a] * p.I;
        for (index_t n = 0; n < p.N; ++n) {
            const float g = dy[n * p.O + rows[a]];
            float* d = out + n * p.I;
            for (index_t i = i0; i < i1; ++i) d[i] += g * wr[i];
        }
    }
}

// Backward for batches whose dx does not fit L1: parallel over blocks of
// columns, so that a block of every dx row stays in L1 while all the weight
// rows pass.
// The order over o is the same for every element, whatever the blocks or the
// thread count.
void backward_by_columns(const LinearParams& p, const float* dy, const float* w,
                         const index_t* rows, index_t count, float* dx) {
    // the kRows weight pieces and the N dx pieces of a block in L1
    const index_t block = std::max<index_t>(64, kL1Floats / (kRows + p.N) / 8 * 8);
    const index_t blocks = (p.I + block - 1) / block;
#pragma omp parallel for schedule(static)
    for (index_t blk = 0; blk < blocks; ++blk) {
        const index_t i0 = blk * block, i1 = std::min(p.I, i0 + block);
        for (index_t n = 0; n < p.N; ++n) std::memset(dx + n * p.I + i0, 0, (i1 - i0) * sizeof(float));
        add_rows(p, dy, w, rows, 0, count, i0, i1, dx);
    }
}

// The active rows of the calling thread's last backward (only grows).
thread_local std::vector<index_t> active;
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
    // time, each read from memory once for all the batch. With several inputs
    // the columns go in blocks small enough that the kRows weight pieces and
    // the inputs' pieces stay in L1 while pairs of inputs pass over them (the
    // rows whole would live in L2 and be re-read from there for every pair).
    const index_t vec_end = p.I / 8 * 8;
    const index_t block = p.N <= 2 ? vec_end : std::max<index_t>(64, kL1Floats / (kRows + p.N) / 8 * 8);
    const index_t groups = (p.O + kRows - 1) / kRows;
#pragma omp parallel for schedule(static)
    for (index_t g = 0; g < groups; ++g) {
        const index_t o0 = g * kRows, rows = std::min(kRows, p.O - o0);
        const float* wr[kRows];
        for (index_t r = 0; r < kRows; ++r) wr[r] = w + (o0 + std::min(r, rows - 1)) * p.I;
        v8 acc[kStreamMaxBatch][kRows] = {};  // a partial group repeats its last row
        for (index_t i0 = 0; i0 < vec_end; i0 += block) {
            const index_t i1 = std::min(vec_end, i0 + block);
            index_t n = 0;
            for (; n + 2 <= p.N; n += 2) dot_rows<2>(wr, x + n * p.I, p.I, i0, i1, acc + n);
            if (n < p.N) dot_rows<1>(wr, x + n * p.I, p.I, i0, i1, acc + n);
        }
        for (index_t n = 0; n < p.N; ++n)
            for (index_t r = 0; r < rows; ++r) {
                float s = hsum(acc[n][r]);
                for (index_t t = vec_end; t < p.I; ++t) s += wr[r][t] * x[n * p.I + t];
                y[n * p.O + o0 + r] = b ? s + b[o0 + r] : s;
            }
    }
}

void linear_backward(const LinearParams& p, const float* dy, const float* w, float* dx) {
    if (p.N > kStreamMaxBatch) {
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
    if (p.N * p.I > kRowStreamMaxFloats) {
        backward_by_columns(p, dy, w, rows, count, dx);
        return;
    }
    // dx[n, :] = sum over the active rows o of dy[n, o] * w[o, :] with the
    // weight rows streamed whole and in order (each row contiguous: the
    // prefetcher's best case; backward_by_columns reads 4 KiB pieces of every
    // row and measured 1.2-1.4x PyTorch's GEMV at batch 1): kRowChunks fixed
    // ranges of the active rows, each summed into its own partial dx (which
    // stays in L1), then the partials added in chunk order. The order of every
    // sum is fixed by the chunks, not by the threads, so results do not depend
    // on the thread count.
    const index_t groups = (count + kRows - 1) / kRows;
    const index_t chunks = std::min(kRowChunks, groups);
    const std::size_t part_size = std::size_t(p.N * p.I);
    thread_local std::vector<float> partials;  // only grows
    if (partials.size() < chunks * part_size) partials.resize(chunks * part_size);
    float* part0 = partials.data();
#pragma omp parallel for schedule(static)
    for (index_t ch = 0; ch < chunks; ++ch) {
        // active rows [a0, a1), multiples of kRows except at the end
        const index_t a0 = std::min(count, groups * ch / chunks * kRows);
        const index_t a1 = std::min(count, groups * (ch + 1) / chunks * kRows);
        float* part = part0 + ch * part_size;
        std::memset(part, 0, part_size * sizeof(float));
        add_rows(p, dy, w, rows, a0, a1, 0, p.I, part);
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
