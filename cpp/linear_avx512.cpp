// The AVX-512 instantiation of the fully connected kernels (linear_kernel.h).
// CMake compiles this file with AVX-512 flags; linear.cpp calls it only after
// the run-time CPU check that also picks the AVX-512 SGEMM.
#include "linear_kernel.h"

namespace invert_native {

#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
bool linear_avx512_built() { return true; }
void linear_forward_stream_avx512(const LinearParams& p, const float* x, const float* w,
                                  const float* b, float* y) {
    linear_forward_stream<16>(p, x, w, b, y);
}
void linear_backward_columns_avx512(const LinearParams& p, const float* dy, const float* w,
                                    const index_t* rows, index_t count, float* dx) {
    linear_backward_columns<16>(p, dy, w, rows, count, dx);
}
void linear_backward_rows_avx512(const LinearParams& p, const float* dy, const float* w,
                                 const index_t* rows, index_t count, index_t chunks, float* part0,
                                 float* dx) {
    linear_backward_rows<16>(p, dy, w, rows, count, chunks, part0, dx);
}
#else
bool linear_avx512_built() { return false; }
void linear_forward_stream_avx512(const LinearParams&, const float*, const float*, const float*,
                                  float*) {}
void linear_backward_columns_avx512(const LinearParams&, const float*, const float*,
                                    const index_t*, index_t, float*) {}
void linear_backward_rows_avx512(const LinearParams&, const float*, const float*, const index_t*,
                                 index_t, index_t, float*, float*) {}
#endif

}  // namespace invert_native
