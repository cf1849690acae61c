// pybind11 bindings of the CPU core (module invert_native._cpu).
//
// Internal: the public API is invert_native.ops, which validates user input
// and allocates outputs. These functions still check every array (dtype,
// contiguity, shape agreement, writability of outputs) so that a direct call
// with bad arrays raises instead of crashing. Kernels run without the GIL.
#include "bind_util.h"
#include "invert_native/ops.h"

namespace py = pybind11;
using namespace invert_native;
using namespace invert_native::bind;

// Op families bound from their own files (src/bind_cpu_<family>.cpp).
namespace invert_native::bind {
void bind_regularisers_cpu(py::module_& m);
void bind_dsift_cpu(py::module_& m);
void bind_hog_cpu(py::module_& m);
}  // namespace invert_native::bind

namespace {

Conv2dParams conv_params(const Shape& xs, const Shape& ws, index_t sh, index_t sw, index_t ph,
                         index_t pw, index_t groups) {
    return make_conv2d_params(xs[0], xs[1], xs[2], xs[3], ws[0], ws[1], ws[2], ws[3], sh, sw, ph,
                              pw, groups);
}

Pool2dParams pool_params(const Shape& xs, index_t kh, index_t kw, index_t sh, index_t sw,
                         index_t ph, index_t pw) {
    return make_pool2d_params(xs[0], xs[1], xs[2], xs[3], kh, kw, sh, sw, ph, pw);
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
    m.doc() = "invert_native CPU core (internal; use invert_native.ops)";
    bind_regularisers_cpu(m);
    bind_dsift_cpu(m);
    bind_hog_cpu(m);

    // ------------------------------------------------------------ shapes
    m.def("conv2d_params",
          [](index_t N, index_t C, index_t H, index_t W, index_t K, index_t wc, index_t kh,
             index_t kw, index_t sh, index_t sw, index_t ph, index_t pw, index_t groups) {
              const auto p = make_conv2d_params(N, C, H, W, K, wc, kh, kw, sh, sw, ph, pw, groups);
              return py::make_tuple(p.Ho, p.Wo);
          },
          "Validate conv2d shapes; return the output size (Ho, Wo).", py::arg("N"), py::arg("C"),
          py::arg("H"), py::arg("W"), py::arg("K"), py::arg("weight_c"), py::arg("kh"),
          py::arg("kw"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"),
          py::arg("pad_w"), py::arg("groups"));
    m.def("pool2d_params",
          [](index_t N, index_t C, index_t H, index_t W, index_t kh, index_t kw, index_t sh,
             index_t sw, index_t ph, index_t pw) {
              const auto p = make_pool2d_params(N, C, H, W, kh, kw, sh, sw, ph, pw);
              return py::make_tuple(p.Ho, p.Wo);
          },
          "Validate max-pool shapes; return the output size (Ho, Wo), Caffe's ceil mode.",
          py::arg("N"), py::arg("C"), py::arg("H"), py::arg("W"), py::arg("kh"), py::arg("kw"),
          py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"));
    m.def("lrn_params",
          [](index_t N, index_t C, index_t H, index_t W, index_t size, double alpha, double beta,
             double k) { make_lrn_params(N, C, H, W, size, alpha, beta, k); },
          "Validate LRN parameters.", py::arg("N"), py::arg("C"), py::arg("H"), py::arg("W"),
          py::arg("size"), py::arg("alpha"), py::arg("beta"), py::arg("k"));
    m.def("linear_params",
          [](index_t N, index_t I, index_t O, index_t wi) { make_linear_params(N, I, O, wi); },
          "Validate linear shapes.", py::arg("N"), py::arg("I"), py::arg("O"), py::arg("weight_i"));

    // ------------------------------------------------------------ conv2d
    m.def("conv2d_forward",
          [](py::array x, py::array w, py::object b, py::array y, index_t sh, index_t sw,
             index_t ph, index_t pw, index_t groups) {
              check(x, "x", 4);
              check(w, "weight", 4);
              const auto p = conv_params(shape_of(x), shape_of(w), sh, sw, ph, pw, groups);
              const float* bp = nullptr;
              if (!b.is_none()) {
                  auto ba = b.cast<py::array>();
                  check(ba, "bias", 1, {p.K});
                  bp = cptr(ba);
              }
              check(y, "y", 4, {p.N, p.K, p.Ho, p.Wo}, true);
              py::gil_scoped_release nogil;
              conv2d_forward(p, cptr(x), cptr(w), bp, mptr(y));
          },
          "y = conv2d(x, weight) + bias (internal).", py::arg("x"), py::arg("weight"),
          py::arg("bias"), py::arg("y"), py::arg("stride_h"), py::arg("stride_w"),
          py::arg("pad_h"), py::arg("pad_w"), py::arg("groups"));
    m.def("conv2d_backward",
          [](py::array dy, py::array w, py::array dx, index_t sh, index_t sw, index_t ph,
             index_t pw, index_t groups) {
              check(dx, "dx", 4, {}, true);
              check(w, "weight", 4);
              const auto p = conv_params(shape_of(dx), shape_of(w), sh, sw, ph, pw, groups);
              check(dy, "dy", 4, {p.N, p.K, p.Ho, p.Wo});
              py::gil_scoped_release nogil;
              conv2d_backward(p, cptr(dy), cptr(w), mptr(dx));
          },
          "dx = gradient of conv2d w.r.t. its input (overwrites dx; internal).", py::arg("dy"),
          py::arg("weight"), py::arg("dx"), py::arg("stride_h"), py::arg("stride_w"),
          py::arg("pad_h"), py::arg("pad_w"), py::arg("groups"));

    // -------------------------------------------------------------- ReLU
    m.def("relu_forward",
          [](py::array x, py::array y) {
              check(x, "x", int(x.ndim()));
              check(y, "y", int(x.ndim()), shape_of(x), true);
              py::gil_scoped_release nogil;
              relu_forward(index_t(x.size()), cptr(x), mptr(y));
          },
          "y = max(x, 0) (internal).", py::arg("x"), py::arg("y"));
    m.def("relu_backward",
          [](py::array x, py::array dy, py::array dx) {
              check(x, "x", int(x.ndim()));
              check(dy, "dy", int(x.ndim()), shape_of(x));
              check(dx, "dx", int(x.ndim()), shape_of(x), true);
              py::gil_scoped_release nogil;
              relu_backward(index_t(x.size()), cptr(x), cptr(dy), mptr(dx));
          },
          "dx = dy where x > 0, else 0 (internal).", py::arg("x"), py::arg("dy"), py::arg("dx"));

    // --------------------------------------------------------- maxpool2d
    m.def("maxpool2d_forward",
          [](py::array x, py::array y, py::array argmax, index_t kh, index_t kw, index_t sh,
             index_t sw, index_t ph, index_t pw) {
              check(x, "x", 4);
              const auto p = pool_params(shape_of(x), kh, kw, sh, sw, ph, pw);
              const Shape out{p.N, p.C, p.Ho, p.Wo};
              check(y, "y", 4, out, true);
              check(argmax, "argmax", 4, out, true, true);
              py::gil_scoped_release nogil;
              maxpool2d_forward(p, cptr(x), mptr(y), static_cast<index_t*>(argmax.mutable_data()));
          },
          "Max-pool forward, recording the first maximum's index in its plane (internal).",
          py::arg("x"), py::arg("y"), py::arg("argmax"), py::arg("kh"), py::arg("kw"),
          py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"));
    m.def("maxpool2d_backward",
          [](py::array dy, py::array argmax, py::array dx, index_t kh, index_t kw, index_t sh,
             index_t sw, index_t ph, index_t pw) {
              check(dx, "dx", 4, {}, true);
              const auto p = pool_params(shape_of(dx), kh, kw, sh, sw, ph, pw);
              const Shape out{p.N, p.C, p.Ho, p.Wo};
              check(dy, "dy", 4, out);
              check(argmax, "argmax", 4, out, false, true);
              index_t outside;
              {
                  py::gil_scoped_release nogil;
                  outside = maxpool2d_backward(p, cptr(dy),
                                               static_cast<const index_t*>(argmax.data()), mptr(dx));
              }
              if (outside)
                  throw py::value_error("argmax holds " + std::to_string(outside) +
                                        " entries that are not indices into an input plane of " +
                                        std::to_string(p.H * p.W) +
                                        " values (use maxpool2d_forward's argmax)");
          },
          "Max-pool backward: dy routed to the recorded argmax (overwrites dx; internal).",
          py::arg("dy"), py::arg("argmax"), py::arg("dx"), py::arg("kh"), py::arg("kw"),
          py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"));

    // --------------------------------------------------------------- LRN
    m.def("lrn_forward",
          [](py::array x, py::array y, py::array scale, index_t size, double alpha, double beta,
             double k) {
              check(x, "x", 4);
              const Shape s = shape_of(x);
              const auto p = make_lrn_params(s[0], s[1], s[2], s[3], size, alpha, beta, k);
              check(y, "y", 4, s, true);
              check(scale, "scale", 4, s, true);
              py::gil_scoped_release nogil;
              lrn_forward(p, cptr(x), mptr(y), mptr(scale));
          },
          "Caffe cross-channel LRN forward; also writes the scale (internal).", py::arg("x"),
          py::arg("y"), py::arg("scale"), py::arg("size"), py::arg("alpha"), py::arg("beta"),
          py::arg("k"));
    m.def("lrn_backward",
          [](py::array x, py::array y, py::array scale, py::array dy, py::array dx, index_t size,
             double alpha, double beta, double k) {
              check(x, "x", 4);
              const Shape s = shape_of(x);
              const auto p = make_lrn_params(s[0], s[1], s[2], s[3], size, alpha, beta, k);
              check(y, "y", 4, s);
              check(scale, "scale", 4, s);
              check(dy, "dy", 4, s);
              check(dx, "dx", 4, s, true);
              py::gil_scoped_release nogil;
              lrn_backward(p, cptr(x), cptr(y), cptr(scale), cptr(dy), mptr(dx));
          },
          "Caffe cross-channel LRN backward (overwrites dx; internal).", py::arg("x"),
          py::arg("y"), py::arg("scale"), py::arg("dy"), py::arg("dx"), py::arg("size"),
          py::arg("alpha"), py::arg("beta"), py::arg("k"));

    // ------------------------------------------------------------ linear
    m.def("linear_forward",
          [](py::array x, py::array w, py::object b, py::array y) {
              check(x, "x", 2);
              check(w, "weight", 2);
              const auto p = make_linear_params(x.shape(0), x.shape(1), w.shape(0), w.shape(1));
              const float* bp = nullptr;
              if (!b.is_none()) {
                  auto ba = b.cast<py::array>();
                  check(ba, "bias", 1, {p.O});
                  bp = cptr(ba);
              }
              check(y, "y", 2, {p.N, p.O}, true);
              py::gil_scoped_release nogil;
              linear_forward(p, cptr(x), cptr(w), bp, mptr(y));
          },
          "y = x @ weight.T + bias, x of shape (N, I) (internal).", py::arg("x"),
          py::arg("weight"), py::arg("bias"), py::arg("y"));
    m.def("linear_backward",
          [](py::array dy, py::array w, py::array dx) {
              check(dx, "dx", 2, {}, true);
              check(w, "weight", 2);
              const auto p = make_linear_params(dx.shape(0), dx.shape(1), w.shape(0), w.shape(1));
              check(dy, "dy", 2, {p.N, p.O});
              py::gil_scoped_release nogil;
              linear_backward(p, cptr(dy), cptr(w), mptr(dx));
          },
          "dx = dy @ weight (overwrites dx; internal).", py::arg("dy"), py::arg("weight"),
          py::arg("dx"));

    // ----------------------------------------------------------- threads
    m.def("set_num_threads", &set_num_threads,
          "Threads of the CPU core; n <= 0 restores OMP_NUM_THREADS or the core count.",
          py::arg("n"));
    m.def("get_num_threads", &get_num_threads, "Threads the CPU core uses.");
    m.def("sgemm_kernel", &sgemm_kernel_name,
          "The SGEMM micro-kernel chosen for this CPU at run time (e.g. 'avx512 12x32').");
}
