// The AVX-512 instantiation of the SGEMM kernel. CMake compiles this file
// with AVX-512 flags; gemm.cpp calls it only after checking the CPU at run time.
#include "gemm_kernel.h"

namespace invert_native {

#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
bool sgemm_avx512_built() { return true; }
void sgemm_avx512_gemm_buffers(index_t M, index_t N, index_t K, index_t threads, index_t* a,
                               index_t* b) {
    gemm_buffer_sizes<16>(M, N, K, threads, a, b);
}
void sgemm_avx512(bool ta, bool tb, index_t M, index_t N, index_t K, float alpha, const float* A,
                  index_t lda, const float* B, index_t ldb, const float* const* brows, float beta,
                  float* C, index_t ldc, index_t threads, float* Ap, float* Bp) {
    sgemm_run<16>(ta, BSource{B, ldb, tb, brows}, M, N, K, alpha, A, lda, beta, C, ldc, threads,
                  Ap, Bp);
}
void sgemm_avx512_pack_b(index_t K, index_t N, const float* B, index_t ldb, bool trans,
                         float* Bp) {
    pack_b_whole<16>(K, N, B, ldb, trans, Bp);
}
void sgemm_avx512_packed_b(index_t M, index_t N, index_t K, const float* A, index_t lda,
                           const float* Bp, float* C, index_t ldc) {
    sgemm_packed_b_impl<16>(M, N, K, A, lda, Bp, C, ldc);
}
#else
bool sgemm_avx512_built() { return false; }
void sgemm_avx512_gemm_buffers(index_t, index_t, index_t, index_t, index_t* a, index_t* b) {
    *a = *b = 0;
}
void sgemm_avx512(bool, bool, index_t, index_t, index_t, float, const float*, index_t,
                  const float*, index_t, const float* const*, float, float*, index_t, index_t,
                  float*, float*) {}
void sgemm_avx512_pack_b(index_t, index_t, const float*, index_t, bool, float*) {}
void sgemm_avx512_packed_b(index_t, index_t, index_t, const float*, index_t, const float*, float*,
                           index_t) {}
#endif

}  // namespace invert_native
