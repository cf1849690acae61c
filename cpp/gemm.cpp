// SGEMM for the CPU core: packed panels and a 6x16 register-tile micro-kernel
// (the BLIS/GotoBLAS loop order), OpenMP over the tiles of one packed block.
//
// Each element of C is computed by exactly one thread in a fixed order over K,
// so results do not depend on the thread count. Written with GCC vector
// extensions so that the same source uses SSE, AVX2 or AVX-512 registers,
// whatever the target flags allow.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "invert_native/ops.h"

namespace invert_native {
namespace {

constexpr index_t MR = 6;     // rows of the register tile
constexpr index_t NR = 16;    // columns of the register tile (two 8-float vectors)
constexpr index_t MC = 144;   // rows of A packed per block (fits L2 with KC)
constexpr index_t KC = 256;   // depth of one packed block
constexpr index_t NC = 2048;  // columns of B packed per block

typedef float v8 __attribute__((vector_size(32), aligned(4)));

// Element (i, j) of op(M) for a row-major matrix with leading dimension ld.
inline float at(const float* m, index_t ld, bool trans, index_t i, index_t j) {
    return trans ? m[j * ld + i] : m[i * ld + j];
}

// Pack rows [i0, i0+mc) x depth [p0, p0+kc) of op(A) into MR-row panels,
// each stored k-major: panel[k * MR + r]. Rows past M are zero.
void pack_a(const float* A, index_t lda, bool trans, index_t M, index_t i0, index_t mc, index_t p0,
            index_t kc, float* out) {
    const index_t panels = (mc + MR - 1) / MR;
#pragma omp for schedule(static)
    for (index_t q = 0; q < panels; ++q) {
        float* dst = out + q * MR * kc;
        for (index_t r = 0; r < MR; ++r) {
            const index_t i = i0 + q * MR + r;
            if (i < M && q * MR + r < mc) {
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
// each stored k-major: panel[k * NR + c]. Columns past N are zero.
void pack_b(const float* B, index_t ldb, bool trans, index_t N, index_t p0, index_t kc, index_t j0,
            index_t nc, float* out) {
    const index_t panels = (nc + NR - 1) / NR;
#pragma omp for schedule(static)
    for (index_t q = 0; q < panels; ++q) {
        float* dst = out + q * NR * kc;
        const index_t jb = j0 + q * NR;
        const index_t w = std::min(NR, std::min(N - jb, j0 + nc - jb));
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
inline void micro_kernel(index_t kc, const float* Ap, const float* Bp, float* C, index_t ldc,
                         index_t mr, index_t nr, float alpha, float beta) {
    v8 acc[MR][2];
#pragma GCC unroll 6
    for (index_t r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = v8{};
    for (index_t k = 0; k < kc; ++k) {
        const v8 b0 = *reinterpret_cast<const v8*>(Bp + k * NR);
        const v8 b1 = *reinterpret_cast<const v8*>(Bp + k * NR + 8);
#pragma GCC unroll 6
        for (index_t r = 0; r < MR; ++r) {
            const float a = Ap[k * MR + r];
            acc[r][0] += a * b0;
            acc[r][1] += a * b1;
        }
    }
    alignas(64) float tile[MR][NR];
    for (index_t r = 0; r < MR; ++r) {
        std::memcpy(&tile[r][0], &acc[r][0], 8 * sizeof(float));
        std::memcpy(&tile[r][8], &acc[r][1], 8 * sizeof(float));
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

// Packing buffers of the calling thread, kept between calls so that the
// inversion loop does not allocate.
struct GemmBuffers {
    std::vector<float> a, b;
};
thread_local GemmBuffers buffers;

}  // namespace

void sgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, float alpha,
           const float* A, index_t lda, const float* B, index_t ldb, float beta, float* C,
           index_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        for (index_t i = 0; i < M; ++i)
            for (index_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    const index_t kc_max = std::min(KC, K);
    const index_t nc_max = std::min(NC, (N + NR - 1) / NR * NR);
    const index_t mc_max = std::min(MC, (M + MR - 1) / MR * MR);
    GemmBuffers& buf = buffers;
    if (buf.b.size() < size_t(kc_max * nc_max)) buf.b.resize(kc_max * nc_max);
    if (buf.a.size() < size_t(kc_max * mc_max)) buf.a.resize(kc_max * mc_max);
    float* Ap = buf.a.data();
    float* Bp = buf.b.data();

#pragma omp parallel
    for (index_t j0 = 0; j0 < N; j0 += NC) {
        const index_t nc = std::min(NC, N - j0);
        const index_t npanels = (nc + NR - 1) / NR;
        for (index_t p0 = 0; p0 < K; p0 += KC) {
            const index_t kc = std::min(KC, K - p0);
            const float beta_k = p0 == 0 ? beta : 1.0f;
            pack_b(B, ldb, trans_b, N, p0, kc, j0, nc, Bp);  // ends with a barrier
            for (index_t i0 = 0; i0 < M; i0 += MC) {
                const index_t mc = std::min(MC, M - i0);
                const index_t mpanels = (mc + MR - 1) / MR;
                pack_a(A, lda, trans_a, M, i0, mc, p0, kc, Ap);  // ends with a barrier
#pragma omp for collapse(2) schedule(static)
                for (index_t jq = 0; jq < npanels; ++jq)
                    for (index_t iq = 0; iq < mpanels; ++iq) {
                        const index_t i = i0 + iq * MR, j = j0 + jq * NR;
                        micro_kernel(kc, Ap + iq * MR * kc, Bp + jq * NR * kc, C + i * ldc + j, ldc,
                                     std::min(MR, M - i), std::min(NR, N - j), alpha, beta_k);
                    }
            }
        }
    }
}

void set_num_threads(int n) {
    if (n <= 0) {
        // back to what OMP_NUM_THREADS (or the machine) says
        n = omp_get_num_procs();
        if (const char* env = std::getenv("OMP_NUM_THREADS")) {
            const int e = std::atoi(env);
            if (e > 0) n = e;
        }
    }
    omp_set_num_threads(n);
}

int get_num_threads() { return omp_get_max_threads(); }

}  // namespace invert_native
