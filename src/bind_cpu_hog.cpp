// pybind11 bindings of the CPU HOG ops (into invert_native._cpu; internal: the
// public API is invert_native.ops.hog_*). Every array is checked (dtype,
// contiguity, shape) so that a direct call with bad arrays raises.
#include "bind_util.h"
#include "invert_native/hog.h"

namespace py = pybind11;
using namespace invert_native;
using namespace invert_native::bind;

namespace {

const index_t* iptr(const py::array& a) { return static_cast<const index_t*>(a.data()); }
index_t* miptr(py::array& a) { return static_cast<index_t*>(a.mutable_data()); }

// Shapes of the image x and of what hog_cells keeps: hist, pix, assign.
void check_cells(const HogCellsParams& p, py::array& hist, py::array& pix, py::array& assign,
                 bool hist_out, bool state_out) {
    check(hist, hist_out ? "hist" : "dhist", 4, {p.N, p.K(), p.h, p.w}, hist_out);
    check(pix, "pix", 4, {p.N, 4, p.H, p.W}, state_out);
    check(assign, "assign", 4, {p.N, 3, p.H, p.W}, state_out, true);
}

}  // namespace

namespace invert_native::bind {

void bind_hog_cpu(py::module_& m) {
    m.def("hog_cells_params",
          [](index_t N, index_t C, index_t H, index_t W, index_t cell, index_t O, int binning) {
              const auto p = make_hog_cells_params(N, C, H, W, cell, O, binning);
              return py::make_tuple(p.h, p.w);
          },
          "Validate hog_cells parameters; return the cell grid (h, w).");
    m.def("hog_norm_params",
          [](index_t N, index_t K, index_t h, index_t w, int variant, bool texture) {
              return make_hog_norm_params(N, K, h, w, variant, texture).D;
          },
          "Validate hog_norm parameters; return the output dimension D.");

    m.def("hog_cells_forward",
          [](py::array x, py::array hist, py::array pix, py::array assign, index_t cell,
             index_t O, int binning) {
              check(x, "x", 4);
              const Shape s = shape_of(x);
              const auto p = make_hog_cells_params(s[0], s[1], s[2], s[3], cell, O, binning);
              check_cells(p, hist, pix, assign, true, true);
              py::gil_scoped_release nogil;
              hog_cells_forward(p, cptr(x), mptr(hist), mptr(pix), miptr(assign));
          },
          "Gradient, orientation binning and cell pooling (internal).");
    m.def("hog_cells_backward",
          [](py::array pix, py::array assign, py::array dhist, py::array dx, index_t cell,
             index_t O, int binning) {
              check(dx, "dx", 4, {}, true);
              const Shape s = shape_of(dx);
              const auto p = make_hog_cells_params(s[0], s[1], s[2], s[3], cell, O, binning);
              check_cells(p, dhist, pix, assign, false, false);
              check_hog_assign(p, iptr(assign));
              py::gil_scoped_release nogil;
              hog_cells_backward(p, cptr(pix), iptr(assign), cptr(dhist), mptr(dx));
          },
          "dx of hog_cells (overwrites dx; internal).");

    m.def("hog_norm_forward",
          [](py::array hist, py::array y, py::array blocks, int variant, bool texture) {
              check(hist, "hist", 4);
              const Shape s = shape_of(hist);
              const auto p = make_hog_norm_params(s[0], s[1], s[2], s[3], variant, texture);
              check(y, "y", 4, {p.N, p.D, p.h, p.w}, true);
              check(blocks, "blocks", 3, {p.N, p.h + 1, p.w + 1}, true);
              py::gil_scoped_release nogil;
              hog_norm_forward(p, cptr(hist), mptr(y), mptr(blocks));
          },
          "HOG block normalisation, clamp and projection (internal).");
    m.def("hog_norm_backward",
          [](py::array hist, py::array blocks, py::array dy, py::array dhist, int variant,
             bool texture) {
              check(hist, "hist", 4);
              const Shape s = shape_of(hist);
              const auto p = make_hog_norm_params(s[0], s[1], s[2], s[3], variant, texture);
              check(blocks, "blocks", 3, {p.N, p.h + 1, p.w + 1});
              check(dy, "dy", 4, {p.N, p.D, p.h, p.w});
              check(dhist, "dhist", 4, s, true);
              py::gil_scoped_release nogil;
              hog_norm_backward(p, cptr(hist), cptr(blocks), cptr(dy), mptr(dhist));
          },
          "dhist of hog_norm (overwrites dhist; internal).");
}

}  // namespace invert_native::bind
