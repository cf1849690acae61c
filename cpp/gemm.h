// SGEMM entry points internal to the CPU core (the public sgemm is in ops.h).
#pragma once

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

}  // namespace invert_native
