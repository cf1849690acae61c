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

// Pack depth [p0, p0+kc) x columns [j0, j0+nc) of op(B) into NR-column panels,
// each stored k-major: panel[k * NR + c]. Columns past the block are zero.
template <index_t NR>
void pack_b_panel(const float* B, index_t ldb, bool trans, index_t p0, index_t kc, index_t jb,
                  index_t w, float* dst) {
    for (index_t k = 0; k < kc; ++k) {
        float* d = dst + k * NR;
        if (!trans && w == NR) {
            std::memcpy(d, B + (p0 + k) * ldb + jb, NR * sizeof(float));
        } else {
            for (index_t c = 0; c < w; ++c) d[c] = at(B, ldb, trans, p0 + k, jb + c);
            for (index_t c = w; c < NR; ++c) d[c] = 0.0f;
        }
    }
}

template <index_t NR>
void pack_b(const float* B, index_t ldb, bool trans, index_t p0, index_t kc, index_t j0,
            index_t nc, float* out) {
    const index_t panels = (nc + NR - 1) / NR;
#pragma omp for schedule(static)
    for (index_t q = 0; q < panels; ++q) {
        const index_t jb = j0 + q * NR;
        pack_b_panel<NR>(B, ldb, trans, p0, kc, jb, imin_(NR, j0 + nc - jb), out + q * NR * kc);
    }
}

// C[mr x nr] (leading dim ldc) = alpha * Ap * Bp + beta * C; beta == 0 never reads C.
// Row r of the A panel at depth k is Ap[k * as + r] (packed: as = MR; A^T in
// place: as = lda), or Ap[r * as + k] when ROWS (A in place: as = lda).
// Always inlined, so that it is compiled for the instruction set of its caller.
template <int VW, bool ROWS>
__attribute__((always_inline)) inline void micro_kernel(index_t kc, const float* Ap,
                                                        index_t as, const float* Bp, float* C, index_t ldc,
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
            const vec b0 = *reinterpret_cast<const vec*>(Bp + k * NR);
#pragma GCC unroll 12
            for (index_t r = 0; r < MR; ++r)
                acc[r][0] += (ROWS ? Ap[r * as + k] : Ap[k * as + r]) * b0;
        }
    } else {
        for (index_t k = 0; k < kc; ++k) {
            const vec b0 = *reinterpret_cast<const vec*>(Bp + k * NR);
            const vec b1 = *reinterpret_cast<const vec*>(Bp + k * NR + VW);
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
__attribute__((always_inline)) inline void sgemm_blocked(bool trans_a, bool trans_b, index_t M,
                                                         index_t N, index_t K, float alpha,
                                                         const float* A, index_t lda,
                                                         const float* B, index_t ldb, float beta,
                                                         float* C, index_t ldc, float* Ap,
                                                         float* Bp) {
    using T = Tile<VW>;
    constexpr index_t MR = T::MR, NR = T::NR, MC = T::MC, KC = T::KC, NC = T::NC;

#pragma omp parallel
    for (index_t j0 = 0; j0 < N; j0 += NC) {
        const index_t nc = imin_(NC, N - j0);
        const index_t npanels = (nc + NR - 1) / NR;
        for (index_t p0 = 0; p0 < K; p0 += KC) {
            const index_t kc = imin_(KC, K - p0);
            const float beta_k = p0 == 0 ? beta : 1.0f;
            pack_b<NR>(B, ldb, trans_b, p0, kc, j0, nc, Bp);  // ends with a barrier
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
                        const float* bp = Bp + jq * NR * kc;
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

// Column panels per chunk that one thread packs and sweeps in sgemm_columns.
constexpr index_t kChunkPanels = 8;

// The same products, without a barrier: each thread takes a contiguous range
// of the NR-column panels of C, packs its own panels of B (in chunks of
// kChunkPanels, one KC block at a time) and computes them for all rows. A is
// read in place; a partial last row panel is packed privately. For the small
// convolutions (13x13 outputs: a few panels, K in the thousands) the
// barriers of sgemm_blocked, two per KC block, cost more than this saves,
// in particular when another process or thread pool shares the cores.
// Ap: MR*KC floats per thread, Bp: kChunkPanels*NR*KC floats per thread, for
// `threads` threads.
template <int VW>
__attribute__((always_inline)) inline void sgemm_columns(bool trans_a, bool trans_b, index_t M,
                                                         index_t N, index_t K, float alpha,
                                                         const float* A, index_t lda,
                                                         const float* B, index_t ldb, float beta,
                                                         float* C, index_t ldc,
                                                         index_t threads, float* Ap, float* Bp) {
    using T = Tile<VW>;
    constexpr index_t MR = T::MR, NR = T::NR, KC = T::KC;
    const index_t panels = (N + NR - 1) / NR, mpanels = (M + MR - 1) / MR;
#pragma omp parallel num_threads(int(threads))  // at most the threads the buffers are sized for
    {
        const index_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        float* ap = Ap + t * MR * KC;
        float* bp = Bp + t * kChunkPanels * NR * KC;
        const index_t q_end = panels * (t + 1) / nt;
        for (index_t q0 = panels * t / nt; q0 < q_end; q0 += kChunkPanels) {
            const index_t j0 = q0 * NR;
            const index_t nc = imin_(imin_(kChunkPanels, q_end - q0) * NR, N - j0);
            const index_t npan = (nc + NR - 1) / NR;
            for (index_t p0 = 0; p0 < K; p0 += KC) {
                const index_t kc = imin_(KC, K - p0);
                const float beta_k = p0 == 0 ? beta : 1.0f;
                for (index_t q = 0; q < npan; ++q) {
                    const index_t jb = j0 + q * NR;
                    pack_b_panel<NR>(B, ldb, trans_b, p0, kc, jb, imin_(NR, j0 + nc - jb),
                                     bp + q * NR * kc);
                }
                for (index_t iq = 0; iq < mpanels; ++iq) {
                    const index_t i = iq * MR, mr = imin_(MR, M - i);
                    if (mr < MR) pack_a_panel<MR>(A, lda, trans_a, i, mr, p0, kc, ap);
                    for (index_t q = 0; q < npan; ++q) {
                        const index_t j = j0 + q * NR, nr = imin_(NR, N - j);
                        float* c = C + i * ldc + j;
                        const float* b = bp + q * NR * kc;
                        if (mr < MR)
                            micro_kernel<VW, false>(kc, ap, MR, b, c, ldc, mr, nr, alpha, beta_k);
                        else if (trans_a)
                            micro_kernel<VW, false>(kc, A + p0 * lda + i, lda, b, c, ldc, mr, nr,
                                                    alpha, beta_k);
                        else
                            micro_kernel<VW, true>(kc, A + i * lda + p0, lda, b, c, ldc, mr, nr,
                                                   alpha, beta_k);
                    }
                }
            }
        }
    }
}

// Whether sgemm_columns (no barriers) rather than sgemm_blocked computes
// the product: when every thread gets at least two column panels.
template <int VW>
bool use_columns(index_t N, index_t threads) {
    return (N + Tile<VW>::NR - 1) / Tile<VW>::NR >= 2 * threads;
}

// Floats of packing buffer that the product needs for A and for B.
template <int VW>
void gemm_buffer_sizes(index_t M, index_t N, index_t K, index_t threads, index_t* a,
                       index_t* b) {
    using T = Tile<VW>;
    const index_t kc = imin_(T::KC, K);
    (void)M;
    if (use_columns<VW>(N, threads)) {
        *a = threads * T::MR * T::KC;
        *b = threads * kChunkPanels * T::NR * T::KC;
    } else {
        *a = kc * T::MR;  // one partial panel
        *b = kc * imin_(T::NC, (N + T::NR - 1) / T::NR * T::NR);
    }
}

// The product, by whichever loop nest suits it.
template <int VW>
__attribute__((always_inline)) inline void sgemm_run(bool trans_a, bool trans_b, index_t M,
                                                     index_t N, index_t K, float alpha,
                                                     const float* A, index_t lda, const float* B,
                                                     index_t ldb, float beta, float* C,
                                                     index_t ldc, index_t threads, float* Ap,
                                                     float* Bp) {
    if (use_columns<VW>(N, threads))
        sgemm_columns<VW>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads,
                          Ap, Bp);
    else
        sgemm_blocked<VW>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, Ap, Bp);
}

}  // namespace
}  // namespace invert_native
