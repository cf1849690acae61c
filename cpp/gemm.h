// SGEMM entry points internal to the CPU core (the public sgemm is in ops.h).
#pragma once

#include <cstddef>

#include "invert_native/params.h"

namespace invert_native {

// C[M, N] = alpha * op(A) @ B + beta * C, row-major, with row k of B given as
// brows[k] (N floats from there): shifted views of one buffer make an
// implicit column matrix. Same loop nests, kernels and results as sgemm.
void sgemm_rows(bool trans_a, index_t M, index_t N, index_t K, float alpha, const float* A,
                index_t lda, const float* const* brows, float beta, float* C, index_t ldc);

// Rows of the register tile of the SGEMM chosen at run time (12 with
// AVX-512, 6 with AVX2): rows of A are multiplied in panels of this many.
index_t sgemm_row_panel();

// B [K, N] (op(B) = B^T when trans) packed once for sgemm_packed_b, whose
// floats sgemm_packed_b_floats gives (panels of the run-time tile's width).
std::size_t sgemm_packed_b_floats(index_t K, index_t N);
void sgemm_pack_b(index_t K, index_t N, const float* B, index_t ldb, bool trans, float* Bp);

// C[M, N] = A[M, K] @ B (C overwritten, A's rows lda apart), B packed by
// sgemm_pack_b, on the calling thread alone. Each element of C gets the same
// sums as from sgemm, wherever its row lies in A.
void sgemm_packed_b(index_t M, index_t N, index_t K, const float* A, index_t lda, const float* Bp,
                    float* C, index_t ldc);

}  // namespace invert_native
