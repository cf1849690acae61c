// SGEMM for the CPU core: packed panels and a register-tile micro-kernel (the
// BLIS/GotoBLAS loop order, gemm_kernel.h). OpenMP: each thread owns a
// contiguous range of C's register tiles and runs without a barrier
// (sgemm_columns: by column panels, or by rows for few columns or M >= N);
// with too few panels for that, all threads share the tiles of each packed
// block (sgemm_blocked). A is read in place, except that for op(A) = A^T each
// thread copies the row panels it uses, one depth block at a time. Two
// instruction sets, chosen at run time: AVX2 (6x16 tile, this file) and
// AVX-512 (12x32 tile, gemm_avx512.cpp).
//
// Each element of C is computed by exactly one thread in a fixed order over K,
// so results do not depend on the thread count.
#include <omp.h>

#include <cstdlib>
#include <vector>

#include "env_flag.h"
#include "gemm.h"
#include "gemm_kernel.h"
#include "invert_native/ops.h"

namespace invert_native {

// gemm_avx512.cpp
bool sgemm_avx512_built();
void sgemm_avx512_gemm_buffers(index_t M, index_t N, index_t K, index_t threads, index_t* a,
                               index_t* b);
void sgemm_avx512(bool ta, bool tb, index_t M, index_t N, index_t K, float alpha, const float* A,
                  index_t lda, const float* B, index_t ldb, const float* const* brows, float beta,
                  float* C, index_t ldc, index_t threads, float* Ap, float* Bp);
void sgemm_avx512_pack_b(index_t K, index_t N, const float* B, index_t ldb, bool trans,
                         float* Bp);
void sgemm_avx512_packed_b(index_t M, index_t N, index_t K, const float* A, index_t lda,
                           const float* Bp, float* C, index_t ldc);

namespace {

// Packing buffers of the calling thread, kept between calls so that the
// inversion loop does not allocate.
thread_local std::vector<float> buffer_a, buffer_b;

bool use_avx512() {
    static const bool yes = [] {
        if (!sgemm_avx512_built()) return false;
        if (env_flag("INVERT_NATIVE_NO_AVX512")) return false;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
        __builtin_cpu_init();
        return bool(__builtin_cpu_supports("avx512f")) && bool(__builtin_cpu_supports("avx512vl")) &&
               bool(__builtin_cpu_supports("avx512dq"));
#else
        return false;
#endif
    }();
    return yes;
}

}  // namespace

bool sgemm_uses_avx512() { return use_avx512(); }

const char* sgemm_kernel_name() { return use_avx512() ? "avx512 12x32" : "avx2 6x16"; }

index_t sgemm_row_panel() { return use_avx512() ? Tile<16>::MR : Tile<8>::MR; }

namespace {

// sgemm and sgemm_rows: B given as a matrix (brows null) or by row pointers.
void sgemm_any(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, float alpha,
               const float* A, index_t lda, const float* B, index_t ldb,
               const float* const* brows, float beta, float* C, index_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        for (index_t i = 0; i < M; ++i)
            for (index_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    const bool wide = use_avx512();
    const index_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    index_t na, nb;
    if (wide)
        sgemm_avx512_gemm_buffers(M, N, K, threads, &na, &nb);
    else
        gemm_buffer_sizes<8>(M, N, K, threads, &na, &nb);
    if (buffer_a.size() < size_t(na)) buffer_a.resize(na);
    if (buffer_b.size() < size_t(nb)) buffer_b.resize(nb);
    float* Ap = buffer_a.data();  // OpenMP workers use these pointers, not the thread_locals
    float* Bp = buffer_b.data();
    if (wide)
        sgemm_avx512(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, brows, beta, C, ldc,
                     threads, Ap, Bp);
    else
        sgemm_run<8>(trans_a, BSource{B, ldb, trans_b, brows}, M, N, K, alpha, A, lda, beta, C,
                     ldc, threads, Ap, Bp);
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, float alpha,
           const float* A, index_t lda, const float* B, index_t ldb, float beta, float* C,
           index_t ldc) {
    sgemm_any(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, nullptr, beta, C, ldc);
}

void sgemm_rows(bool trans_a, index_t M, index_t N, index_t K, float alpha, const float* A,
                index_t lda, const float* const* brows, float beta, float* C, index_t ldc) {
    sgemm_any(trans_a, false, M, N, K, alpha, A, lda, nullptr, 0, brows, beta, C, ldc);
}

std::size_t sgemm_packed_b_floats(index_t K, index_t N) {
    const index_t NR = use_avx512() ? Tile<16>::NR : Tile<8>::NR;
    return std::size_t((N + NR - 1) / NR * NR * K);
}

void sgemm_pack_b(index_t K, index_t N, const float* B, index_t ldb, bool trans, float* Bp) {
    if (use_avx512())
        sgemm_avx512_pack_b(K, N, B, ldb, trans, Bp);
    else
        pack_b_whole<8>(K, N, B, ldb, trans, Bp);
}

void sgemm_packed_b(index_t M, index_t N, index_t K, const float* A, index_t lda, const float* Bp,
                    float* C, index_t ldc) {
    if (M <= 0 || N <= 0 || K <= 0) return;
    if (use_avx512())
        sgemm_avx512_packed_b(M, N, K, A, lda, Bp, C, ldc);
    else
        sgemm_packed_b_impl<8>(M, N, K, A, lda, Bp, C, ldc);
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
