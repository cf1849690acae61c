// Bindings of the CPU regularisers (TV^beta, alpha-norm) into _cpu.
#include "bind_util.h"
#include "invert_native/descent.h"
#include "invert_native/regularisers.h"

namespace invert_native::bind {

void bind_regularisers_cpu(py::module_& m) {
    m.def("tv_forward",
          [](py::array x, py::array value, py::array dx, double beta, double floor) {
              check(x, "x", 4);
              const Shape s = shape_of(x);
              const auto p = make_tv_params(s[0], s[1], s[2], s[3], beta, floor);
              if (!value.dtype().is(py::dtype::of<double>()) || value.ndim() != 1 ||
                  value.shape(0) != p.N || !(value.flags() & py::array::c_style) || !value.writeable())
                  throw py::value_error("value must be a writeable float64 array of shape (N,)");
              check(dx, "dx", 4, s, true);
              double* vp = static_cast<double*>(value.mutable_data());
              py::gil_scoped_release nogil;
              tv_forward(p, cptr(x), vp, mptr(dx));
          },
          "TV^beta per image and its gradient (overwrites value and dx; internal).");
    m.def("alpha_norm_forward",
          [](py::array x, py::array value, py::array dx, double alpha) {
              check(x, "x", int(x.ndim()));
              if (x.ndim() < 1) throw py::value_error("x must have a batch dimension");
              const index_t N = x.shape(0), M = N ? index_t(x.size()) / N : 0;
              const auto p = make_alpha_norm_params(N, M, alpha);
              if (!value.dtype().is(py::dtype::of<double>()) || value.ndim() != 1 ||
                  value.shape(0) != p.N || !(value.flags() & py::array::c_style) || !value.writeable())
                  throw py::value_error("value must be a writeable float64 array of shape (N,)");
              check(dx, "dx", int(x.ndim()), shape_of(x), true);
              double* vp = static_cast<double*>(value.mutable_data());
              py::gil_scoped_release nogil;
              alpha_norm_forward(p, cptr(x), vp, mptr(dx));
          },
          "sum |x|^alpha per image and its gradient (overwrites value and dx; internal).");
    m.def("descent_step",
          [](py::array g_data, py::array g_alpha, py::array g_tv, py::array x, py::array mu,
             double sigma, double lambda_alpha, double lambda_tv, double rate, double momentum) {
              check(x, "x", int(x.ndim()), shape_of(x), true);
              const Shape s = shape_of(x);
              check(mu, "mu", int(x.ndim()), s, true);
              check(g_data, "g_data", int(x.ndim()), s);
              check(g_alpha, "g_alpha", int(x.ndim()), s);
              check(g_tv, "g_tv", int(x.ndim()), s);
              const auto p = make_descent_params(index_t(x.size()), sigma, lambda_alpha,
                                                 lambda_tv, rate, momentum);
              py::gil_scoped_release nogil;
              descent_step(p, cptr(g_data), cptr(g_alpha), cptr(g_tv), mptr(x), mptr(mu));
          },
          py::arg("g_data"), py::arg("g_alpha"), py::arg("g_tv"), py::arg("x"), py::arg("mu"),
          py::arg("sigma"), py::arg("lambda_alpha"), py::arg("lambda_tv"), py::arg("rate"),
          py::arg("momentum"),
          "One fused momentum step of invert() (updates x and mu in place; internal).");
}

}  // namespace invert_native::bind
