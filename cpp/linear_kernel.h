// The fully connected kernels of linear.cpp, templated on the vector width,
// for inclusion by linear.cpp (AVX2, VW = 8) and linear_avx512.cpp (compiled
// with AVX-512 flags, VW = 16). As in gemm_kernel.h, everything here has
// internal linkage and uses no standard-library templates, so that no AVX-512
// code can reach, through a shared inline symbol, the paths that run on CPUs
// without it.
//
// At the batch sizes of inversion (1 to a few restarts) these are
// matrix-vector products bound by reading the weights (batch 1) or by the
// multiply-adds (batches of a few): each direction streams the weight matrix
// exactly once per call, whatever the batch. Forward: parallel over groups of
// kRows output rows, each row's dot products summed lane by lane (VW lanes)
// and the lanes added in a fixed order. Backward: every dx element is summed
// over the weight rows in increasing order, one row at a time (no lane
// reduction: the same result for either vector width).
#pragma once

#include <omp.h>

#include <cstring>

#include "invert_native/params.h"

namespace invert_native {
namespace {

constexpr index_t kLinStreamMaxBatch = 16;  // above this, SGEMM reuses each weight tile enough
constexpr index_t kLinRows = 4;             // forward: weight rows streamed together
constexpr index_t kLinRowsBack = 8;         // backward: at most this many rows per pass
constexpr index_t kLinColBlock = 1024;      // dx columns per block when adding the row partials
constexpr index_t kLinL1Floats = 8192;      // 32 KiB: what a forward column block keeps in L1 (of 48)
constexpr index_t kLinBackFloats = 16384;   // 64 KiB: a backward column block's dx pieces
                                            // (measured: fc6 at batch 8 7.0 ms, 8.1 with 32 KiB)
constexpr index_t kLinRowStreamMaxFloats = 16384;  // backward streams rows while dx fits L1
constexpr index_t kLinRowChunks = 16;       // backward's partial sums (fixed: the order of the sums)

inline index_t lmin_(index_t a, index_t b) { return a < b ? a : b; }
inline index_t lmax_(index_t a, index_t b) { return a > b ? a : b; }

template <int VW>
struct LinVec {  // VW floats, unaligned, allowed to alias float
    typedef float type __attribute__((vector_size(VW * 4), aligned(4), may_alias));
};

template <int VW>
inline typename LinVec<VW>::type lload(const float* p) {
    return *reinterpret_cast<const typename LinVec<VW>::type*>(p);
}
template <int VW>
inline void lstore(float* p, typename LinVec<VW>::type v) {
    *reinterpret_cast<typename LinVec<VW>::type*>(p) = v;
}

// The lanes of v added in a fixed order (a pairwise tree), so that results do
// not depend on the caller.
inline float lhsum(LinVec<8>::type v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}
inline float lhsum(LinVec<16>::type v) {
    return (((v[0] + v[8]) + (v[4] + v[12])) + ((v[1] + v[9]) + (v[5] + v[13]))) +
           (((v[2] + v[10]) + (v[6] + v[14])) + ((v[3] + v[11]) + (v[7] + v[15])));
}

// acc[n][r] += w[r][i0, i1) . x[n][i0, i1) lane by lane, for the kLinRows
// rows w[r] and NB inputs x[n] (stride I): each weight vector is loaded once
// for the NB inputs. The lane accumulators live in memory between column
// blocks, so a row's sum is the same sequence of operations however the
// columns are split.
template <int VW, int NB>
void dot_rows(const float* const* w, const float* x, index_t I, index_t i0, index_t i1,
              typename LinVec<VW>::type (*acc)[kLinRows]) {
    typedef typename LinVec<VW>::type vec;
    vec a[kLinRows][NB];
    for (index_t r = 0; r < kLinRows; ++r)
        for (int n = 0; n < NB; ++n) a[r][n] = acc[n][r];
    for (index_t i = i0; i + VW <= i1; i += VW) {
        vec xv[NB];
        for (int n = 0; n < NB; ++n) xv[n] = lload<VW>(x + n * I + i);
        for (index_t r = 0; r < kLinRows; ++r) {
            const vec wv = lload<VW>(w[r] + i);
            for (int n = 0; n < NB; ++n) a[r][n] += wv * xv[n];
        }
    }
    for (index_t r = 0; r < kLinRows; ++r)
        for (int n = 0; n < NB; ++n) acc[n][r] = a[r][n];
}

// y = x w^T (+ b) for N <= kLinStreamMaxBatch, kLinRows rows at a time, each
// read from memory once for all the batch. With several inputs the columns go
// in blocks small enough that the kLinRows weight pieces and the inputs'
// pieces stay in L1 while groups of inputs pass over them (the rows whole
// would live in L2 and be re-read from there for every group). Groups of
// inputs: pairs for VW = 8 (16 ymm registers), fours for VW = 16 (32 zmm).
template <int VW>
void linear_forward_stream(const LinearParams& p, const float* x, const float* w, const float* b,
                           float* y) {
    typedef typename LinVec<VW>::type vec;
    constexpr int NG = VW == 16 ? 4 : 2;
    const index_t vec_end = p.I / VW * VW;
    const index_t block =
        p.N <= 2 ? vec_end : lmax_(64, kLinL1Floats / (kLinRows + p.N) / VW * VW);
    const index_t groups = (p.O + kLinRows - 1) / kLinRows;
#pragma omp parallel for schedule(static)
    for (index_t g = 0; g < groups; ++g) {
        const index_t o0 = g * kLinRows, rows = lmin_(kLinRows, p.O - o0);
        const float* wr[kLinRows];
        for (index_t r = 0; r < kLinRows; ++r) wr[r] = w + (o0 + lmin_(r, rows - 1)) * p.I;
        vec acc[kLinStreamMaxBatch][kLinRows] = {};  // a partial group repeats its last row
        for (index_t i0 = 0; i0 < vec_end; i0 += block) {
            const index_t i1 = lmin_(vec_end, i0 + block);
            index_t n = 0;
            for (; n + NG <= p.N; n += NG) dot_rows<VW, NG>(wr, x + n * p.I, p.I, i0, i1, acc + n);
            if (NG == 4 && n + 2 <= p.N) {
                dot_rows<VW, 2>(wr, x + n * p.I, p.I, i0, i1, acc + n);
                n += 2;
            }
            if (n < p.N) dot_rows<VW, 1>(wr, x + n * p.I, p.I, i0, i1, acc + n);
        }
        for (index_t n = 0; n < p.N; ++n)
            for (index_t r = 0; r < rows; ++r) {
                float s = lhsum(acc[n][r]);
                for (index_t t = vec_end; t < p.I; ++t) s += wr[r][t] * x[n * p.I + t];
                y[n * p.O + o0 + r] = b ? s + b[o0 + r] : s;
            }
    }
}

// d[n][i] += g[n][0] * w[0][i] + ... + g[n][R-1] * w[R-1][i] (added one row
// at a time, in order) for the NB outputs d[n] (stride I) and their
// coefficients g[n][r], columns [i0, i1): the R weight vectors are loaded once
// for the NB outputs, whose coefficients stay in registers, and each d vector
// is loaded and stored once per R rows.
template <int VW, int R, int NB>
void add_rows_r(const float* const* w, const float (*g)[kLinRowsBack], float* d, index_t I,
                index_t i0, index_t i1) {
    typedef typename LinVec<VW>::type vec;
    vec gv[NB][R];
    for (int n = 0; n < NB; ++n)
        for (int r = 0; r < R; ++r) gv[n][r] = vec{} + g[n][r];
    index_t i = i0;
    for (; i + VW <= i1; i += VW) {
        vec wv[R];
        for (int r = 0; r < R; ++r) wv[r] = lload<VW>(w[r] + i);
        for (int n = 0; n < NB; ++n) {
            vec v = lload<VW>(d + n * I + i);
            for (int r = 0; r < R; ++r) v += gv[n][r] * wv[r];
            lstore<VW>(d + n * I + i, v);
        }
    }
    for (; i < i1; ++i)
        for (int n = 0; n < NB; ++n) {
            float v = d[n * I + i];
            for (int r = 0; r < R; ++r) v += g[n][r] * w[r][i];
            d[n * I + i] = v;
        }
}

// out[n * ldo + i - i0] += sum over the rows o = rows[a0], ..., rows[a1 - 1],
// in that order, of dy[n, o] * w[o, i] for columns i in [i0, i1):
// kLinRows weight rows per pass, so that each out vector is loaded and stored
// once per kLinRows rows.
template <int VW>
void add_rows(const LinearParams& p, const float* dy, const float* w, const index_t* rows,
              index_t a0, index_t a1, index_t i0, index_t i1, float* out, index_t ldo) {
    const index_t len = i1 - i0;
    // R rows per pass: 8 for VW = 16 (32 zmm: 8 weight vectors, 2 x 8
    // coefficients), 4 for VW = 8 (16 ymm)
    constexpr int R = VW == 16 ? 8 : 4;
    constexpr int NG = 2;
    index_t a = a0;
    for (; a + R <= a1; a += R) {
        const float* wr[R];
        for (int r = 0; r < R; ++r) wr[r] = w + rows[a + r] * p.I + i0;
        float g[kLinStreamMaxBatch][kLinRowsBack];
        for (index_t n = 0; n < p.N; ++n)
            for (int r = 0; r < R; ++r) g[n][r] = dy[n * p.O + rows[a + r]];
        index_t n = 0;
        for (; n + NG <= p.N; n += NG)
            add_rows_r<VW, R, NG>(wr, g + n, out + n * ldo, ldo, 0, len);
        if (n < p.N) add_rows_r<VW, R, 1>(wr, g + n, out + n * ldo, ldo, 0, len);
    }
    for (; a < a1; ++a) {
        const float* wr = w + rows[a] * p.I + i0;
        for (index_t n = 0; n < p.N; ++n) {
            const float g = dy[n * p.O + rows[a]];
            float* d = out + n * ldo;
            for (index_t i = 0; i < len; ++i) d[i] += g * wr[i];
        }
    }
}

// Backward for batches whose dx does not fit L1: parallel over blocks of
// columns, so that a block of every dx row stays in L1 while all the (active)
// weight rows pass. The order over the rows is the same for every element,
// whatever the blocks or the thread count.
template <int VW>
void linear_backward_columns(const LinearParams& p, const float* dy, const float* w,
                             const index_t* rows, index_t count, float* dx) {
    // the kLinRows weight pieces and the N dx pieces of a block in L1
    // the weight pieces and the N dx pieces of a block near L1, and a whole
    // number of blocks per thread (fc7, 4096 columns in 7 blocks of 672 on 2
    // threads, measured 1.45x slower than in 8 of 512). The blocks change no
    // sum: each dx element adds the rows in the same order.
    const index_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    const index_t most = lmax_(64, kLinBackFloats / (kLinRowsBack + p.N) / VW * VW);
    index_t blocks = (p.I + most - 1) / most;
    blocks = (blocks + threads - 1) / threads * threads;
    const index_t block = ((p.I + blocks - 1) / blocks + VW - 1) / VW * VW;
#pragma omp parallel for schedule(static)
    for (index_t blk = 0; blk < blocks; ++blk) {
        const index_t i0 = blk * block, i1 = lmin_(p.I, i0 + block);
        if (i0 >= i1) continue;  // rounding the block up to VW can leave the last ones empty
        // The block's dx pieces summed in a contiguous buffer: in place, the N
        // pieces lie p.I floats apart (fc6: 36 KiB, a multiple of 4 KiB), so
        // that they and the weight pieces all fall into the same L1 sets.
        alignas(64) float local[kLinBackFloats + kLinStreamMaxBatch * 64];  // N * block fits
        const index_t len = i1 - i0;
        std::memset(local, 0, sizeof(float) * p.N * len);
        add_rows<VW>(p, dy, w, rows, 0, count, i0, i1, local, len);
        for (index_t n = 0; n < p.N; ++n)
            std::memcpy(dx + n * p.I + i0, local + n * len, sizeof(float) * len);
    }
}

// Backward for a dx that fits L1 (batch 1 of CaffeNet's layers): the active
// weight rows streamed whole and in order (each row contiguous: the
// prefetcher's best case; by columns the rows are read in 4 KiB pieces, which
// measured 1.2-1.4x PyTorch's GEMV at batch 1): `chunks` fixed ranges of the
// active rows, each summed into its own partial dx (part0, chunks * N * I
// floats; it stays in L1), then the partials added in chunk order. The order
// of every sum is fixed by the chunks, not by the threads.
template <int VW>
void linear_backward_rows(const LinearParams& p, const float* dy, const float* w,
                          const index_t* rows, index_t count, index_t chunks, float* part0,
                          float* dx) {
    const index_t groups = (count + kLinRows - 1) / kLinRows;
    const index_t part_size = p.N * p.I;
#pragma omp parallel for schedule(static)
    for (index_t ch = 0; ch < chunks; ++ch) {
        // active rows [a0, a1), multiples of kLinRows except at the end
        const index_t a0 = lmin_(count, groups * ch / chunks * kLinRows);
        const index_t a1 = lmin_(count, groups * (ch + 1) / chunks * kLinRows);
        float* part = part0 + ch * part_size;
        std::memset(part, 0, part_size * sizeof(float));
        add_rows<VW>(p, dy, w, rows, a0, a1, 0, p.I, part, p.I);
    }
    // dx = the partials in chunk order, parallel over blocks of dx
    const index_t blocks = (part_size + kLinColBlock - 1) / kLinColBlock;
#pragma omp parallel for schedule(static)
    for (index_t blk = 0; blk < blocks; ++blk) {
        const index_t i0 = blk * kLinColBlock, i1 = lmin_(part_size, i0 + kLinColBlock);
        std::memcpy(dx + i0, part0 + i0, (i1 - i0) * sizeof(float));
        for (index_t ch = 1; ch < chunks; ++ch) {
            const float* part = part0 + ch * part_size;
            for (index_t i = i0; i < i1; ++i) dx[i] += part[i];
        }
    }
}

}  // namespace
}  // namespace invert_native
