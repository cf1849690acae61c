// The SGEMM loop nest and micro-kernel, templated on the vector width, for
// inclusion by gemm.cpp (AVX2) and gemm_avx512.cpp (compiled with AVX-512
// flags). Everything here has internal linkage (anonymous namespace) and uses
// no standard-library templates, so that no AVX-512 code can leak, through a
// shared inline symbol, into the paths that run on CPUs without it.
#pragma once

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

// Pack rows [i0, i0+mc) x depth [p0, p0+kc) of op(A) into MR-row panels,
// each stored k-major: panel[k * MR + r]. Rows past the block are zero.
template <index_t MR>
void pack_a(const float* A, index_t lda, bool trans, index_t i0, index_t mc, index_t p0,
            index_t kc, float* out) {
    const index_t panels = (mc + MR - 1) / MR;
#pragma omp for schedule(static)
    for (index_t q = 0; q < panels; ++q) {
        float* dst = out + q * MR * kc;
        for (index_t r = 0; r < MR; ++r) {
            const index_t i = i0 + q * MR + r;
            if (q * MR + r < mc) {
                if (!trans) {
                    const float* src = A + i * lda + p0;
                    for (index_t k = 0; k < kc; ++k) dst[k * MR + r] = src[k];
                } else {
                    for (index_t k = 0; k < kc; ++k) dst[k * MR + r] = A[(p0 + k) * lda + i];
                }
            } else {
                for (index_t k = 0; k < kc; ++k) dst[k * MR + r] = 0.0f;
            }
        }
    }
}

// Pack depth [p0, p0+kc) x columns [j0, j0+nc) of op(B) into NR-column panels,
// each stored k-major: panel[k * NR + c]. Columns past the block are zero.
template <index_t NR>
void pack_b(const float* B, index_t ldb, bool trans, index_t p0, index_t kc, index_t j0,
            index_t nc, float* out) {
    const index_t panels = (nc + NR - 1) / NR;
#pragma omp for schedule(static)
    for (index_t q = 0; q < panels; ++q) {
        float* dst = out + q * NR * kc;
        const index_t jb = j0 + q * NR;
        const index_t w = imin_(NR, j0 + nc - jb);
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
}

// C[mr x nr] (leading dim ldc) = alpha * Ap * Bp + beta * C; beta == 0 never reads C.
// Always inlined, so that it is compiled for the instruction set of its caller.
template <int VW>
__attribute__((always_inline)) inline void micro_kernel(index_t kc, const float* Ap,
                                                        const float* Bp, float* C, index_t ldc,
                                                        index_t mr, index_t nr, float alpha,
                                                        float beta) {
    typedef float vec __attribute__((vector_size(VW * 4), aligned(4)));
    constexpr index_t MR = Tile<VW>::MR, NR = Tile<VW>::NR;
    vec acc[MR][2];
#pragma GCC unroll 12
    for (index_t r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = vec{};
    for (index_t k = 0; k < kc; ++k) {
        const vec b0 = *reinterpret_cast<const vec*>(Bp + k * NR);
        const vec b1 = *reinterpret_cast<const vec*>(Bp + k * NR + VW);
#pragma GCC unroll 12
        for (index_t r = 0; r < MR; ++r) {
            const float a = Ap[k * MR + r];
            acc[r][0] += a * b0;
            acc[r][1] += a * b1;
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
// each MC x KC block of A (packed by all threads), all threads share the
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
                pack_a<MR>(A, lda, trans_a, i0, mc, p0, kc, Ap);  // ends with a barrier
#pragma omp for collapse(2) schedule(static)
                for (index_t jq = 0; jq < npanels; ++jq)
                    for (index_t iq = 0; iq < mpanels; ++iq) {
                        const index_t i = i0 + iq * MR, j = j0 + jq * NR;
                        micro_kernel<VW>(kc, Ap + iq * MR * kc, Bp + jq * NR * kc,
                                         C + i * ldc + j, ldc, imin_(MR, M - i),
                                         imin_(NR, N - j), alpha, beta_k);
                    }
            }
        }
    }
}

// Floats of packing buffer that sgemm_blocked<VW> needs for A and for B.
template <int VW>
void gemm_buffer_sizes(index_t M, index_t N, index_t K, index_t* a, index_t* b) {
    using T = Tile<VW>;
    const index_t kc = imin_(T::KC, K);
    *a = kc * imin_(T::MC, (M + T::MR - 1) / T::MR * T::MR);
    *b = kc * imin_(T::NC, (N + T::NR - 1) / T::NR * T::NR);
}

}  // namespace
}  // namespace invert_native
