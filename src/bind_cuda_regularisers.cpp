// Bindings of the CUDA regularisers (TV^beta, alpha-norm) into _cuda.
#include <pybind11/pybind11.h>

#include "bind_cuda_util.h"
#include "invert_native/cuda_ops.h"

namespace py = pybind11;

namespace invert_native::bind {

void bind_regularisers_cuda(py::module_& m) {
    m.def("tv_forward",
          [](ptr_t x, ptr_t terms, ptr_t dx, index_t N, index_t C, index_t H, index_t W,
             double beta, double floor, ptr_t stream) {
              const auto p = make_tv_params(N, C, H, W, beta, floor);
              const float* xp = as_ptr<const float>(x, "x");
              float* tp = as_ptr<float>(terms, "terms");
              float* dxp = as_ptr<float>(dx, "dx");
              py::gil_scoped_release nogil;
              launch_tv_forward(p, xp, tp, dxp, as_stream(stream));
          },
          "Internal: TV^beta terms and gradient on a CUDA stream.");
    m.def("alpha_norm_forward",
          [](ptr_t x, ptr_t terms, ptr_t dx, index_t N, index_t M, double alpha, ptr_t stream) {
              const auto p = make_alpha_norm_params(N, M, alpha);
              const float* xp = as_ptr<const float>(x, "x");
              float* tp = as_ptr<float>(terms, "terms");
              float* dxp = as_ptr<float>(dx, "dx");
              py::gil_scoped_release nogil;
              launch_alpha_norm_forward(p, xp, tp, dxp, as_stream(stream));
          },
          "Internal: |x|^alpha terms and gradient on a CUDA stream.");
    m.def("descent_step",
          [](ptr_t g_data, ptr_t g_alpha, ptr_t g_tv, ptr_t x, ptr_t mu, index_t count,
             double sigma, double lambda_alpha, double lambda_tv, double rate, double momentum,
             ptr_t stream) {
              const auto p = make_descent_params(count, sigma, lambda_alpha, lambda_tv, rate,
                                                 momentum);
              const float* gd = as_ptr<const float>(g_data, "g_data");
              const float* ga = as_ptr<const float>(g_alpha, "g_alpha");
              const float* gt = as_ptr<const float>(g_tv, "g_tv");
              float* xp = as_ptr<float>(x, "x");
              float* mp = as_ptr<float>(mu, "mu");
              py::gil_scoped_release nogil;
              launch_descent_step(p, gd, ga, gt, xp, mp, as_stream(stream));
          },
          "Internal: one fused momentum step of invert() on a CUDA stream (x, mu in place).");
}

}  // namespace invert_native::bind
