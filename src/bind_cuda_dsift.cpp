// Bindings of the CUDA dense SIFT ops (dsift.h) into _cuda.
//
// Internal: invert_native.ops.dsift validates the CuPy arrays and passes their
// device pointers, the image geometry (N, H, W), the DSIFT hyper-parameters
// and CuPy's current stream as Python ints. make_dsift_params rebuilds the
// parameter struct (std::invalid_argument -> ValueError); launches do not
// synchronise.
#include <pybind11/pybind11.h>

#include "bind_cuda_util.h"
#include "bind_dsift_args.h"
#include "invert_native/dsift.h"

namespace py = pybind11;

namespace invert_native::bind {

namespace {


}  // namespace

void bind_dsift_cuda(py::module_& m) {
    m.def("dsift_gradient_forward",
          [](ptr_t x, ptr_t h, DSIFT_HYPER_ARGS, ptr_t stream) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              const float* xp = as_ptr<const float>(x, "x");
              float* hp = as_ptr<float>(h, "h");
              py::gil_scoped_release nogil;
              launch_dsift_gradient_forward(p, xp, hp, as_stream(stream));
          },
          "Internal: gradient + bilinear orientation binning on a CUDA stream.");
    m.def("dsift_gradient_backward",
          [](ptr_t x, ptr_t dh, ptr_t dx, DSIFT_HYPER_ARGS, ptr_t stream) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              const float* xp = as_ptr<const float>(x, "x");
              const float* dhp = as_ptr<const float>(dh, "dh");
              float* dxp = as_ptr<float>(dx, "dx");
              py::gil_scoped_release nogil;
              launch_dsift_gradient_backward(p, xp, dhp, dxp, as_stream(stream));
          },
          "Internal: gradient of dsift_gradient_forward (overwrites dx).");
    m.def("dsift_triangle_forward",
          [](ptr_t x, ptr_t y, ptr_t work, index_t axis, DSIFT_HYPER_ARGS, ptr_t stream) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              const DsiftAxis a = make_dsift_axis(axis);
              const float* xp = as_ptr<const float>(x, "x");
              float* yp = as_ptr<float>(y, "y");
              float* wp = as_ptr<float>(work, "work");
              py::gil_scoped_release nogil;
              launch_dsift_triangle_forward(p, a, xp, yp, wp, as_stream(stream));
          },
          "Internal: triangular filter along one axis (work: (n + bin_size) * lines floats, n "
          "the length of a line along the axis, lines their number).");
    m.def("dsift_triangle_backward",
          [](ptr_t dy, ptr_t dx, index_t axis, DSIFT_HYPER_ARGS, ptr_t stream) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              const DsiftAxis a = make_dsift_axis(axis);
              const float* dyp = as_ptr<const float>(dy, "dy");
              float* dxp = as_ptr<float>(dx, "dx");
              py::gil_scoped_release nogil;
              launch_dsift_triangle_backward(p, a, dyp, dxp, as_stream(stream));
          },
          "Internal: transpose of the triangular filter (overwrites dx).");
    m.def("dsift_sample_forward",
          [](ptr_t s, ptr_t d, DSIFT_HYPER_ARGS, ptr_t stream) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              const float* sp = as_ptr<const float>(s, "s");
              float* dp = as_ptr<float>(d, "d");
              py::gil_scoped_release nogil;
              launch_dsift_sample_forward(p, sp, dp, as_stream(stream));
          },
          "Internal: descriptor assembly.");
    m.def("dsift_sample_backward",
          [](ptr_t dd, ptr_t ds, DSIFT_HYPER_ARGS, ptr_t stream) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              const float* ddp = as_ptr<const float>(dd, "dd");
              float* dsp = as_ptr<float>(ds, "ds");
              py::gil_scoped_release nogil;
              launch_dsift_sample_backward(p, ddp, dsp, as_stream(stream));
          },
          "Internal: gradient of descriptor assembly (overwrites ds).");
    m.def("dsift_normalize_forward",
          [](ptr_t d, ptr_t y, ptr_t norms, DSIFT_HYPER_ARGS, ptr_t stream) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              const float* dp = as_ptr<const float>(d, "d");
              float* yp = as_ptr<float>(y, "y");
              float* np_ = as_ptr<float>(norms, "norms");
              py::gil_scoped_release nogil;
              launch_dsift_normalize_forward(p, dp, yp, np_, as_stream(stream));
          },
          "Internal: descriptor normalisation.");
    m.def("dsift_normalize_backward",
          [](ptr_t d, ptr_t norms, ptr_t dy, ptr_t dd, DSIFT_HYPER_ARGS, ptr_t stream) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              const float* dp = as_ptr<const float>(d, "d");
              const float* np_ = as_ptr<const float>(norms, "norms");
              const float* dyp = as_ptr<const float>(dy, "dy");
              float* ddp = as_ptr<float>(dd, "dd");
              py::gil_scoped_release nogil;
              launch_dsift_normalize_backward(p, dp, np_, dyp, ddp, as_stream(stream));
          },
          "Internal: gradient of the descriptor normalisation (overwrites dd).");
}

}  // namespace invert_native::bind
