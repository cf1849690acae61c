// The SGEMM loop nest and micro-kernel, templated on the vector width, for
// inclusion by gemm.cpp (AVX2) and gemm_avx512.cpp (compiled with AVX-512
// flags). Everything here has internal linkage (anonymous namespace) and uses
// no standard-library templates, so that no AVX-512 code can leak, through a
// shared inline symbol, into the paths that run on CPUs without it.
#pragma once

#include <omp.h>

#include <cstring>

#include "invert_native/params.h"

namespace invert_native {
namespace {

inline index_t imin_(index_t a, index_t b) { return a < b ? a : b; }

// Register tile: MR rows x NR = 2 vectors of VW floats. Blocks: MC rows of A
// and KC of depth are packed per block (A block ~ L2), NC columns of B.
template <int VW>
struct Tile;
template <>
struct Tile<8> {  // AVX2: 12 accumulators of 8 floats
    static constexpr index_t MR = 6, NR = 16, MC = 144, KC = 256, NC = 2048;
};
template <>
struct Tile<16> {  // AVX-512: 24 accumulators of 16 floats (of 32 zmm registers)
    static constexpr index_t MR = 12, NR = 32, MC = 144, KC = 256, NC = 2048;
};

// Element (i, j) of op(M) for a row-major matrix with leading dimension ld.
inline float at(const float* m, index_t ld, bool trans, index_t i, index_t j) {
    return trans ? m[j * ld + i] : m[i * ld + j];
}

// One partial row panel: rows [i, i+mr) of op(A), depth [p0, p0+kc), stored
// k-major, dst[k * MR + r], rows past mr zero.
template <index_t MR>
void pack_a_panel(const float* A, index_t lda, bool trans, index_t i, index_t mr, index_t p0,
                  index_t kc, float* dst) {
    for (index_t r = 0; r < MR; ++r)
        for (index_t k = 0; k < kc; ++k)
            dst[k * MR + r] = r >= mr  ? 0.0f
                              : trans ? A[(p0 + k) * lda + i + r]
                                      : A[(i + r) * lda + p0 + k];
}

// Pack the partial last MR-row panel of rows [i0, i0+mc) x depth [p0, p0+kc)
// of op(A). Full panels are not copied: the kernel reads them in place (row r
// of A at stride lda, or for op(A) = A^T the MR contiguous floats of each row
// of A), which saves a pass over the weights of every convolution call.
template <index_t MR>
void pack_a(const float* A, index_t lda, bool trans, index_t i0, index_t mc, index_t p0,
            index_t kc, float* out) {
    const index_t q = mc / MR;  // the partial panel, if any
    if (q * MR == mc) return;
#pragma omp single
    pack_a_panel<MR>(A, lda, trans, i0 + q * MR, mc - q * MR, p0, kc, out);
}

// Where op(B) comes from: a row-major matrix (B, ldb, trans), or, when rows
// is set, one pointer per row of B (not transposed): row k is rows[k][0..N).
// Row pointers let a convolution hand the product shifted views of one padded
// plane as the rows of its column matrix, which is then never written out
// (an implicit im2col: see the phase schedule in conv2d.cpp).
struct BSource {
    const float* B;
    index_t ldb;
    bool trans;
    const float* const* rows;
};

// Pack depth [p0, p0+kc) x columns [j0, j0+nc) of op(B) into NR-column panels,
// each stored k-major: panel[k * NR + c]. Columns past the block are zero.
template <index_t NR>
void pack_b_panel(const BSource& b, index_t p0, index_t kc, index_t jb, index_t w, float* dst) {
    for (index_t k = 0; k < kc; ++k) {
        float* d = dst + k * NR;
        if (b.trans) {
            for (index_t c = 0; c < w; ++c) d[c] = at(b.B, b.ldb, true, p0 + k, jb + c);
        } else {
            const float* row = b.rows ? b.rows[p0 + k] + jb : b.B + (p0 + k) * b.ldb + jb;
            if (w == NR) {
                std::memcpy(d, row, NR * sizeof(float));
                continue;
            }
            for (index_t c = 0; c < w; ++c) d[c] = row[c];
        }
        for (index_t c = w; c < NR; ++c) d[c] = 0.0f;
    }
}

template <index_t NR>
void pack_b(const BSource& b, index_t p0, index_t kc, index_t j0, index_t nc, float* out) {
    const index_t panels = (nc + NR - 1) / NR;
#pragma omp for schedule(static)
    for (index_t q = 0; q < panels; ++q) {
        const index_t jb = j0 + q * NR;
        pack_b_panel<NR>(b, p0, kc, jb, imin_(NR, j0 + nc - jb), out + q * NR * kc);
    }
}

// Rows of B the kernel prefetches ahead of the one it multiplies. B streams
// from L2 (a chunk's panels do not fit L1 beside A's panel), and the hardware
// prefetchers did not keep up: 16 rows ahead measured 9-12 % faster on one
// row panel sweeping 6 column panels (rows past the panel's end are only
// prefetched, never read, and a prefetch does not fault).
constexpr index_t kPrefetchRows = 16;

// Where the kernel reads row k of its B panel: a packed panel (k * NR floats
// in), or, for a full panel of B given by row pointers, the rows in place
// (rows[k] + j): no copy, and the row panels of the block reuse it from L1.
template <index_t NR>
struct PackedPanel {
    const float* p;
    const float* row(index_t k) const { return p + k * NR; }
    // where the kernel prefetches for row k (only prefetched: may lie past the panel)
    static constexpr bool prefetch = true;
    const float* ahead(index_t k) const { return p + (k + kPrefetchRows) * NR; }
};
struct RowsPanel {
    const float* const* rows;
    index_t j;
    const float* row(index_t k) const { return rows[k] + j; }
    // not prefetched: the rows are shifts of a few planes that share cache
    // lines, and the pointer load a prefetch needs cost conv1 10 %
    static constexpr bool prefetch = false;
};

// C[mr x nr] (leading dim ldc) = alpha * Ap * Bp + beta * C; beta == 0 never reads C.
// Row r of the A panel at depth k is Ap[k * as + r] (packed: as = MR; A^T in
// place: as = lda), or Ap[r * as + k] when ROWS (A in place: as = lda).
// Not inlined: inlined into the large loop nests, GCC's register allocation
// spilled a B vector to the stack inside the k loop (about 35 % slower). Its
// internal linkage still compiles it only with the flags of the file that
// instantiates it (VW = 16 only in gemm_avx512.cpp).
template <int VW, bool ROWS, class Panel>
__attribute__((noinline)) void micro_kernel(index_t kc, const float* Ap,
                                                        index_t as, Panel Bp, float* C, index_t ldc,
                                                        index_t mr, index_t nr, float alpha,
                                                        float beta) {
    typedef float vec __attribute__((vector_size(VW * 4), aligned(4)));
    constexpr index_t MR = Tile<VW>::MR, NR = Tile<VW>::NR;
    vec acc[MR][2];
#pragma GCC unroll 12
    for (index_t r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = vec{};
    if (nr <= VW) {
        // A last column panel at most half full (e.g. 169 = 5*32 + 9 columns
        // of a 13x13 conv): skip the empty half of the tile.
        for (index_t k = 0; k < kc; ++k) {
            if constexpr (Panel::prefetch) __builtin_prefetch(Bp.ahead(k), 0, 3);
            const vec b0 = *reinterpret_cast<const vec*>(Bp.row(k));
#pragma GCC unroll 12
            for (index_t r = 0; r < MR; ++r)
                acc[r][0] += (ROWS ? Ap[r * as + k] : Ap[k * as + r]) * b0;
        }
    } else {
        for (index_t k = 0; k < kc; ++k) {
            const float* bk = Bp.row(k);
            if constexpr (Panel::prefetch) {
                const float* ahead = Bp.ahead(k);
                __builtin_prefetch(ahead, 0, 3);
                __builtin_prefetch(ahead + VW, 0, 3);
            }
            const vec b0 = *reinterpret_cast<const vec*>(bk);
            const vec b1 = *reinterpret_cast<const vec*>(bk + VW);
#pragma GCC unroll 12
            for (index_t r = 0; r < MR; ++r) {
                const float a = ROWS ? Ap[r * as + k] : Ap[k * as + r];
                acc[r][0] += a * b0;
                acc[r][1] += a * b1;
            }
        }
    }
    if (mr == MR && nr == NR) {
        for (index_t r = 0; r < MR; ++r) {
            vec* c = reinterpret_cast<vec*>(C + r * ldc);
            if (beta == 0.0f) {
                c[0] = alpha * acc[r][0];
                c[1] = alpha * acc[r][1];
            } else {
                c[0] = alpha * acc[r][0] + beta * c[0];
                c[1] = alpha * acc[r][1] + beta * c[1];
            }
        }
        return;
    }
    alignas(64) float tile[MR][NR];
    for (index_t r = 0; r < MR; ++r) {
        std::memcpy(&tile[r][0], &acc[r][0], VW * sizeof(float));
        std::memcpy(&tile[r][VW], &acc[r][1], VW * sizeof(float));
    }
    for (index_t r = 0; r < mr; ++r) {
        float* c = C + r * ldc;
        if (beta == 0.0f) {
            for (index_t j = 0; j < nr; ++j) c[j] = alpha * tile[r][j];
        } else {
            for (index_t j = 0; j < nr; ++j) c[j] = alpha * tile[r][j] + beta * c[j];
        }
    }
}

// The BLIS loop nest: for each NC x KC block of B (packed by all threads), for
// each MC x KC block of A (read in place, see pack_a), all threads share the
// register tiles of the block. Each C element is written by one thread.
template <int VW>
__attribute__((always_inline)) inline void sgemm_blocked(bool trans_a, const BSource& bsrc,
                                                         index_t M, index_t N, index_t K,
                                                         float alpha, const float* A, index_t lda,
                                                         float beta, float* C, index_t ldc,
                                                         float* Ap, float* Bp) {
    using T = Tile<VW>;
    constexpr index_t MR = T::MR, NR = T::NR, MC = T::MC, KC = T::KC, NC = T::NC;

#pragma omp parallel
    for (index_t j0 = 0; j0 < N; j0 += NC) {
        const index_t nc = imin_(NC, N - j0);
        const index_t npanels = (nc + NR - 1) / NR;
        for (index_t p0 = 0; p0 < K; p0 += KC) {
            const index_t kc = imin_(KC, K - p0);
            const float beta_k = p0 == 0 ? beta : 1.0f;
            pack_b<NR>(bsrc, p0, kc, j0, nc, Bp);  // ends with a barrier
            for (index_t i0 = 0; i0 < M; i0 += MC) {
                const index_t mc = imin_(MC, M - i0);
                const index_t mpanels = (mc + MR - 1) / MR;
                pack_a<MR>(A, lda, trans_a, i0, mc, p0, kc, Ap);  // a barrier if it packs
#pragma omp for collapse(2) schedule(static)
                for (index_t jq = 0; jq < npanels; ++jq)
                    for (index_t iq = 0; iq < mpanels; ++iq) {
                        const index_t i = i0 + iq * MR, j = j0 + jq * NR;
                        const index_t mr = imin_(MR, M - i), nr = imin_(NR, N - j);
                        float* c = C + i * ldc + j;
                        const PackedPanel<NR> bp{Bp + jq * NR * kc};
                        if (i + MR > i0 + mc)  // the packed partial panel
                            micro_kernel<VW, false>(kc, Ap, MR, bp, c, ldc, mr, nr, alpha, beta_k);
                        else if (trans_a)
                            micro_kernel<VW, false>(kc, A + p0 * lda + i, lda, bp, c, ldc, mr, nr,
                                                    alpha, beta_k);
                        else
                            micro_kernel<VW, true>(kc, A + i * lda + p0, lda, bp, c, ldc, mr, nr,
                                                   alpha, beta_k);
                    }
            }
        }
    }
}

// Column panels per chunk that one thread packs and sweeps in sgemm_columns
// (chunks of a thread's panels are balanced, each at most this wide).
constexpr index_t kChunkPanels = 8;

// Op(A) rows [i, i+MR) at depth [p0, p0+kc) when op(A) = A^T: the MR
// contiguous floats of rows p0..p0+kc of A, copied k-major (dst[k * MR + r]).
// Read in place, the kernel would fetch them at a stride of lda floats for
// every column panel, a page or more apart for the large convolutions'
// backward (one row of W per depth step): lines that neither stay in L1 (the
// stride maps them onto a few sets) nor get prefetched. Copied once per
// thread, row panel and depth block, they are reused from L1 by every column
// panel. (Software prefetch of the next rows here measured no gain.)
template <index_t MR>
void pack_at_panel(const float* A, index_t lda, index_t i, index_t p0, index_t kc, float* dst) {
    const float* s = A + p0 * lda + i;
    for (index_t k = 0; k < kc; ++k)
        std::memcpy(dst + k * MR, s + k * lda, MR * sizeof(float));
}

// The same products, without a barrier: each thread owns a part of the
// register tiles of C and packs its own panels of B (in balanced chunks of at
// most kChunkPanels column panels, one KC block at a time). Split by columns,
// a thread owns a contiguous range of the NR-column panels, for all rows.
// Split by rows (by_rows: few columns, or more rows than columns), the tiles
// of each chunk are numbered row panel by row panel and each thread takes an
// equal contiguous share: it then reads only its share of A (e.g. the backward
// of a 13x13 convolution: W^T of 2304 rows, 169 columns), and a partial last
// row panel (M = 128 = 10*12 + 8) does not unbalance the threads. A is read in
// place, except for a partial last row panel and op(A) = A^T, whose panels are
// packed privately. For the small convolutions (13x13 outputs: a few panels,
// K in the thousands) the barriers of sgemm_blocked, two per KC block, cost
// more than this saves, in particular when another process or thread pool
// shares the cores. Every split computes each element of C with the same KC
// blocks in the same order, so results do not depend on the thread count.
// Ap: MR*KC floats per thread, Bp: kChunkPanels*NR*KC floats per thread, for
// `threads` threads.
template <int VW>
__attribute__((always_inline)) inline void sgemm_columns(bool trans_a, const BSource& bsrc,
                                                         index_t M, index_t N, index_t K,
                                                         float alpha, const float* A, index_t lda,
                                                         float beta, float* C, index_t ldc,
                                                         index_t threads, bool by_rows,
                                                         float* Ap, float* Bp) {
    using T = Tile<VW>;
    constexpr index_t MR = T::MR, NR = T::NR, KC = T::KC;
    const index_t panels = (N + NR - 1) / NR, mpanels = (M + MR - 1) / MR;
    // A^T panels are copied (pack_at_panel, conv3-5 backward 1.3-1.6x faster)
    // only when A's rows are a page or more apart: closer rows stay in L1 read
    // in place, and there the copy cost up to 10 % (conv1, rows 1.4 KiB apart).
    const bool copy_at = trans_a && lda * index_t(sizeof(float)) >= 4096;
#pragma omp parallel num_threads(int(threads))  // at most the threads the buffers are sized for
    {
        const index_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        float* ap = Ap + t * MR * KC;
        float* bp = Bp + t * kChunkPanels * NR * KC;
        const index_t q_begin = by_rows ? 0 : panels * t / nt;
        const index_t q_end = by_rows ? panels : panels * (t + 1) / nt;
        const index_t nq = q_end - q_begin;
        const index_t chunks = (nq + kChunkPanels - 1) / kChunkPanels;
        for (index_t ch = 0; ch < chunks; ++ch) {
            const index_t qa = q_begin + nq * ch / chunks, qb = q_begin + nq * (ch + 1) / chunks;
            const index_t npan = qb - qa;
            // This thread's tiles of the chunk, numbered row panel by row
            // panel: all of them, or (by_rows) an equal share of them.
            const index_t tiles = mpanels * npan;
            const index_t t0 = by_rows ? tiles * t / nt : 0;
            const index_t t1 = by_rows ? tiles * (t + 1) / nt : tiles;
            if (t0 >= t1) continue;
            const index_t r_begin = t0 / npan, r_end = (t1 - 1) / npan + 1;
            // the panels of B it needs: all, unless its tiles lie in one row panel
            const index_t pq0 = r_end - r_begin == 1 ? t0 % npan : 0;
            const index_t pq1 = r_end - r_begin == 1 ? (t1 - 1) % npan + 1 : npan;
            const index_t j0 = qa * NR;
            const index_t nc = imin_(npan * NR, N - j0);
            for (index_t p0 = 0; p0 < K; p0 += KC) {
                const index_t kc = imin_(KC, K - p0);
                const float beta_k = p0 == 0 ? beta : 1.0f;
                for (index_t q = pq0; q < pq1; ++q) {
                    const index_t jb = j0 + q * NR, w = imin_(NR, j0 + nc - jb);
                    if (bsrc.rows && w == NR) continue;  // the kernel reads the rows in place
                    pack_b_panel<NR>(bsrc, p0, kc, jb, w, bp + q * NR * kc);
                }
                for (index_t iq = r_begin; iq < r_end; ++iq) {
                    const index_t i = iq * MR, mr = imin_(MR, M - i);
                    const bool packed = mr < MR || copy_at;
                    if (mr < MR)
                        pack_a_panel<MR>(A, lda, trans_a, i, mr, p0, kc, ap);
                    else if (copy_at)
                        pack_at_panel<MR>(A, lda, i, p0, kc, ap);
                    const index_t qs = iq == r_begin ? t0 - iq * npan : 0;
                    const index_t qe = iq == r_end - 1 ? t1 - iq * npan : npan;
                    for (index_t q = qs; q < qe; ++q) {
                        const index_t j = j0 + q * NR, nr = imin_(NR, N - j);
                        float* c = C + i * ldc + j;
                        auto tile = [&](auto b) {
                            if (packed)
                                micro_kernel<VW, false>(kc, ap, MR, b, c, ldc, mr, nr, alpha,
                                                        beta_k);
                            else if (trans_a)
                                micro_kernel<VW, false>(kc, A + p0 * lda + i, lda, b, c, ldc, mr,
                                                        nr, alpha, beta_k);
                            else
                                micro_kernel<VW, true>(kc, A + i * lda + p0, lda, b, c, ldc, mr,
                                                       nr, alpha, beta_k);
                        };
                        if (bsrc.rows && nr == NR)
                            tile(RowsPanel{bsrc.rows + p0, j});
                        else
                            tile(PackedPanel<NR>{bp + q * NR * kc});
                    }
                }
            }
        }
    }
}

// Which loop nest computes the product: sgemm_columns split by rows when
// there are at least two row panels per thread and either few columns (e.g.
// 169 of a 13x13 convolution: 6 panels of 32, which split by columns gives
// 3 : 2.3 panels) or at least as many rows as columns (each thread then packs
// all of B but reads only its share of the larger A); split by columns when
// every thread gets at least two column panels; else sgemm_blocked. All use
// the same KC blocks, so the choice (which depends on the thread count) does
// not change any result.
constexpr index_t kRowsMaxColumns = 256;
enum class Nest { columns, rows, blocked };
template <int VW>
Nest choose_nest(index_t M, index_t N, index_t threads) {
    const index_t panels = (N + Tile<VW>::NR - 1) / Tile<VW>::NR;
    const index_t mpanels = (M + Tile<VW>::MR - 1) / Tile<VW>::MR;
    if (threads > 1 && mpanels >= 2 * threads && (N <= kRowsMaxColumns || M >= N))
        return Nest::rows;
    if (panels >= 2 * threads) return Nest::columns;
    return Nest::blocked;
}

// Floats of packing buffer that the product needs for A and for B.
template <int VW>
void gemm_buffer_sizes(index_t M, index_t N, index_t K, index_t threads, index_t* a,
                       index_t* b) {
    using T = Tile<VW>;
    const index_t kc = imin_(T::KC, K);
    if (choose_nest<VW>(M, N, threads) != Nest::blocked) {
        *a = threads * T::MR * T::KC;
        *b = threads * kChunkPanels * T::NR * T::KC;
    } else {
        *a = kc * T::MR;  // one partial panel
        *b = kc * imin_(T::NC, (N + T::NR - 1) / T::NR * T::NR);
    }
}

// The product, by whichever loop nest suits it.
template <int VW>
__attribute__((always_inline)) inline void sgemm_run(bool trans_a, const BSource& bsrc, index_t M,
                                                     index_t N, index_t K, float alpha,
                                                     const float* A, index_t lda, float beta,
                                                     float* C, index_t ldc, index_t threads,
                                                     float* Ap, float* Bp) {
    const Nest nest = choose_nest<VW>(M, N, threads);
    if (nest != Nest::blocked)
        sgemm_columns<VW>(trans_a, bsrc, M, N, K, alpha, A, lda, beta, C, ldc, threads,
                          nest == Nest::rows, Ap, Bp);
    else
        sgemm_blocked<VW>(trans_a, bsrc, M, N, K, alpha, A, lda, beta, C, ldc, Ap, Bp);
}

// B [K, N] (op(B) = B^T when trans) packed once for sgemm_packed_b: panel q
// (columns [q*NR, q*NR + NR), zero past N) at q * K * NR, stored k-major.
template <int VW>
void pack_b_whole(index_t K, index_t N, const float* B, index_t ldb, bool trans, float* Bp) {
    constexpr index_t NR = Tile<VW>::NR;
    const BSource src{B, ldb, trans, nullptr};
    for (index_t q = 0; q * NR < N; ++q)
        pack_b_panel<NR>(src, 0, K, q * NR, imin_(NR, N - q * NR), Bp + q * K * NR);
}

// C[M, N] = A[M, K] @ B on the calling thread, A read in place (rows lda
// apart), B packed by pack_b_whole: for the many small products that one
// thread makes in a row (Winograd's, tile block by tile block), with no
// packing of B and no OpenMP at all.
template <int VW>
void sgemm_packed_b_impl(index_t M, index_t N, index_t K, const float* A, index_t lda,
                         const float* Bp, float* C, index_t ldc) {
    using T = Tile<VW>;
    constexpr index_t MR = T::MR, NR = T::NR, KC = T::KC;
    alignas(64) float ap[MR * KC];  // a partial last row panel, packed
    for (index_t p0 = 0; p0 < K; p0 += KC) {
        const index_t kc = imin_(KC, K - p0);
        const float beta = p0 == 0 ? 0.0f : 1.0f;
        for (index_t i = 0; i < M; i += MR) {
            const index_t mr = imin_(MR, M - i);
            if (mr < MR) pack_a_panel<MR>(A, lda, false, i, mr, p0, kc, ap);
            for (index_t j = 0; j < N; j += NR) {
                const PackedPanel<NR> b{Bp + j * K + p0 * NR};
                const index_t nr = imin_(NR, N - j);
                if (mr < MR)
                    micro_kernel<VW, false>(kc, ap, MR, b, C + i * ldc + j, ldc, mr, nr, 1.0f,
                                            beta);
                else
                    micro_kernel<VW, true>(kc, A + i * lda + p0, lda, b, C + i * ldc + j, ldc,
                                           mr, nr, 1.0f, beta);
            }
        }
    }
}

}  // namespace
}  // namespace invert_native
