// pybind11 bindings of the dense SIFT ops of the CPU core (into invert_native._cpu).
//
// Internal: the public API is invert_native.ops (dsift_*), which validates
// user input and allocates outputs. Every function here takes the image
// geometry (N, H, W) and the DSIFT hyper-parameters, rebuilds DsiftParams with
// make_dsift_params (std::invalid_argument -> ValueError) and checks every
// array against it, so a direct call with bad arrays raises instead of crashing.
#include "bind_util.h"
#include "bind_dsift_args.h"
#include "invert_native/dsift.h"

namespace py = pybind11;
using namespace invert_native;
using namespace invert_native::bind;

namespace {


Shape image_shape(const DsiftParams& p) { return {p.N, 1, p.H, p.W}; }
Shape maps_shape(const DsiftParams& p) { return {p.N, p.K, p.H, p.W}; }
Shape descr_shape(const DsiftParams& p) { return {p.N, p.D(), p.ny, p.nx}; }
Shape norms_shape(const DsiftParams& p) { return {p.N, 2, p.ny, p.nx}; }

}  // namespace

namespace invert_native::bind {

void bind_dsift_cpu(py::module_& m) {
    m.def("dsift_params",
          [](DSIFT_HYPER_ARGS) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              return py::make_tuple(p.ny, p.nx, p.x0, p.y0);
          },
          "Validate the DSIFT geometry; return (ny, nx, x0, y0) of the frame grid (internal).");
    m.def("dsift_window_means",
          [](DSIFT_HYPER_ARGS) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              py::list out;
              for (index_t i = 0; i < p.nbin; ++i) out.append(p.window_mean[i]);
              return out;
          },
          "VLFeat's Gaussian-window mean of each spatial bin (internal).");

    m.def("dsift_gradient_forward",
          [](py::array x, py::array h, DSIFT_HYPER_ARGS) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              check(x, "x", 4, image_shape(p));
              check(h, "h", 4, maps_shape(p), true);
              py::gil_scoped_release nogil;
              dsift_gradient_forward(p, cptr(x), mptr(h));
          },
          "Gradient + bilinear orientation binning (internal).");
    m.def("dsift_gradient_backward",
          [](py::array x, py::array dh, py::array dx, DSIFT_HYPER_ARGS) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              check(x, "x", 4, image_shape(p));
              check(dh, "dh", 4, maps_shape(p));
              check(dx, "dx", 4, image_shape(p), true);
              py::gil_scoped_release nogil;
              dsift_gradient_backward(p, cptr(x), cptr(dh), mptr(dx));
          },
          "Gradient of dsift_gradient_forward w.r.t. the image (overwrites dx; internal).");

    m.def("dsift_triangle_forward",
          [](py::array x, py::array y, index_t axis, DSIFT_HYPER_ARGS) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              const DsiftAxis a = make_dsift_axis(axis);
              check(x, "x", 4, maps_shape(p));
              check(y, "y", 4, maps_shape(p), true);
              py::gil_scoped_release nogil;
              dsift_triangle_forward(p, a, cptr(x), mptr(y));
          },
          "Triangular filter along one axis, edge replicated (internal).");
    m.def("dsift_triangle_backward",
          [](py::array dy, py::array dx, index_t axis, DSIFT_HYPER_ARGS) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              const DsiftAxis a = make_dsift_axis(axis);
              check(dy, "dy", 4, maps_shape(p));
              check(dx, "dx", 4, maps_shape(p), true);
              py::gil_scoped_release nogil;
              dsift_triangle_backward(p, a, cptr(dy), mptr(dx));
          },
          "Transpose of the triangular filter (overwrites dx; internal).");

    m.def("dsift_sample_forward",
          [](py::array s, py::array d, DSIFT_HYPER_ARGS) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              check(s, "s", 4, maps_shape(p));
              check(d, "d", 4, descr_shape(p), true);
              py::gil_scoped_release nogil;
              dsift_sample_forward(p, cptr(s), mptr(d));
          },
          "Descriptor assembly from the binned maps (internal).");
    m.def("dsift_sample_backward",
          [](py::array dd, py::array ds, DSIFT_HYPER_ARGS) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              check(dd, "dd", 4, descr_shape(p));
              check(ds, "ds", 4, maps_shape(p), true);
              py::gil_scoped_release nogil;
              dsift_sample_backward(p, cptr(dd), mptr(ds));
          },
          "Gradient of descriptor assembly (overwrites ds; internal).");

    m.def("dsift_normalize_forward",
          [](py::array d, py::array y, py::array norms, DSIFT_HYPER_ARGS) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              check(d, "d", 4, descr_shape(p));
              check(y, "y", 4, descr_shape(p), true);
              check(norms, "norms", 4, norms_shape(p), true);
              py::gil_scoped_release nogil;
              dsift_normalize_forward(p, cptr(d), mptr(y), mptr(norms));
          },
          "Descriptor normalisation L2, clamp, L2 (internal).");
    m.def("dsift_normalize_backward",
          [](py::array d, py::array norms, py::array dy, py::array dd, DSIFT_HYPER_ARGS) {
              const auto p = dsift_params_of(DSIFT_HYPER_PASS);
              check(d, "d", 4, descr_shape(p));
              check(norms, "norms", 4, norms_shape(p));
              check(dy, "dy", 4, descr_shape(p));
              check(dd, "dd", 4, descr_shape(p), true);
              py::gil_scoped_release nogil;
              dsift_normalize_backward(p, cptr(d), cptr(norms), cptr(dy), mptr(dd));
          },
          "Gradient of the descriptor normalisation (overwrites dd; internal).");
}

}  // namespace invert_native::bind
