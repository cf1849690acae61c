// Bindings of the CUDA HOG ops into _cuda (internal: invert_native.ops.hog_*
// validates the CuPy arrays and passes device pointers, shapes and CuPy's
// current stream as ints). Shapes are re-validated by the make_* functions.
#include <pybind11/pybind11.h>

#include "bind_cuda_util.h"  // first: cuda_runtime.h, which enables hog.h's launchers
#include "invert_native/hog.h"

namespace py = pybind11;

namespace invert_native::bind {

void bind_hog_cuda(py::module_& m) {
    m.def("hog_cells_forward",
          [](ptr_t x, ptr_t hist, ptr_t pix, ptr_t assign, index_t N, index_t C, index_t H,
             index_t W, index_t cell, index_t O, int binning, ptr_t stream) {
              const auto p = make_hog_cells_params(N, C, H, W, cell, O, binning);
              const float* xp = as_ptr<const float>(x, "x");
              float* hp = as_ptr<float>(hist, "hist");
              float* pp = as_ptr<float>(pix, "pix");
              index_t* ap = as_ptr<index_t>(assign, "assign");
              py::gil_scoped_release nogil;
              launch_hog_cells_forward(p, xp, hp, pp, ap, as_stream(stream));
          },
          "Internal: HOG gradient, binning and cell pooling on a CUDA stream.");
    m.def("hog_cells_backward",
          [](ptr_t pix, ptr_t assign, ptr_t dhist, ptr_t dx, ptr_t work, index_t N, index_t C,
             index_t H, index_t W, index_t cell, index_t O, int binning, ptr_t stream) {
              const auto p = make_hog_cells_params(N, C, H, W, cell, O, binning);
              const float* pp = as_ptr<const float>(pix, "pix");
              const index_t* ap = as_ptr<const index_t>(assign, "assign");
              const float* dhp = as_ptr<const float>(dhist, "dhist");
              float* dxp = as_ptr<float>(dx, "dx");
              float* wp = as_ptr<float>(work, "workspace");
              py::gil_scoped_release nogil;
              launch_hog_cells_backward(p, pp, ap, dhp, dxp, wp, as_stream(stream));
          },
          "Internal: dx of hog_cells (overwrites dx) on a CUDA stream.");
    m.def("hog_norm_forward",
          [](ptr_t hist, ptr_t y, ptr_t blocks, index_t N, index_t K, index_t h, index_t w,
             int variant, bool texture, ptr_t stream) {
              const auto p = make_hog_norm_params(N, K, h, w, variant, texture);
              const float* hp = as_ptr<const float>(hist, "hist");
              float* yp = as_ptr<float>(y, "y");
              float* bp = as_ptr<float>(blocks, "blocks");
              py::gil_scoped_release nogil;
              launch_hog_norm_forward(p, hp, yp, bp, as_stream(stream));
          },
          "Internal: HOG block normalisation on a CUDA stream.");
    m.def("hog_norm_backward",
          [](ptr_t hist, ptr_t blocks, ptr_t dy, ptr_t dhist, ptr_t work, index_t N, index_t K,
             index_t h, index_t w, int variant, bool texture, ptr_t stream) {
              const auto p = make_hog_norm_params(N, K, h, w, variant, texture);
              const float* hp = as_ptr<const float>(hist, "hist");
              const float* bp = as_ptr<const float>(blocks, "blocks");
              const float* dyp = as_ptr<const float>(dy, "dy");
              float* dhp = as_ptr<float>(dhist, "dhist");
              float* wp = as_ptr<float>(work, "workspace");
              py::gil_scoped_release nogil;
              launch_hog_norm_backward(p, hp, bp, dyp, dhp, wp, as_stream(stream));
          },
          "Internal: dhist of hog_norm (overwrites dhist) on a CUDA stream.");
}

}  // namespace invert_native::bind
