// pybind11 module invert_native._cuda: thin bindings of the CUDA core
// (cuda_ops.h). Internal: the public API is invert_native.ops, which validates
// the CuPy arrays (dtype, shape, contiguity, device) and passes their device
// pointers and CuPy's current stream here as Python ints.
//
// Each function builds its parameter struct with the make_*_params functions
// of params.h (std::invalid_argument -> ValueError), releases the GIL, and
// launches on the given stream (0 = the legacy default stream) without
// synchronising. CUDA errors raise invert_native::CudaError -> RuntimeError.
#include <pybind11/pybind11.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "bind_cuda_util.h"
#include "invert_native/cuda_ops.h"
#include "invert_native/params.h"

namespace py = pybind11;
using invert_native::index_t;
using namespace invert_native::bind;

// Op families bound from their own files (src/bind_cuda_<family>.cpp).
namespace invert_native::bind {
void bind_regularisers_cuda(py::module_& m);
void bind_dsift_cuda(py::module_& m);
void bind_hog_cuda(py::module_& m);
}  // namespace invert_native::bind

namespace {

// weight.shape[1] implied by the arguments (the Python layer checked the
// weight's shape); groups <= 0 is left for make_conv2d_params to reject.
index_t conv_weight_c(index_t C, index_t groups) { return groups > 0 ? C / groups : C; }

}  // namespace

PYBIND11_MODULE(_cuda, m) {
    namespace inv = invert_native;
    m.doc() = "Internal CUDA core of invert_native; use invert_native.ops, which validates arrays.";
    invert_native::bind::bind_regularisers_cuda(m);
    invert_native::bind::bind_dsift_cuda(m);
    invert_native::bind::bind_hog_cuda(m);

    m.def(
        "conv2d_forward",
        [](ptr_t x, ptr_t w, ptr_t b, ptr_t y, index_t N, index_t C, index_t H, index_t W,
           index_t K, index_t kh, index_t kw, index_t stride_h, index_t stride_w, index_t pad_h,
           index_t pad_w, index_t groups, ptr_t stream) {
            const auto p = inv::make_conv2d_params(N, C, H, W, K, conv_weight_c(C, groups), kh,
                                                   kw, stride_h, stride_w, pad_h, pad_w, groups);
            const float* xp = as_ptr<const float>(x, "x");
            const float* wp = as_ptr<const float>(w, "w");
            float* yp = as_ptr<float>(y, "y");
            py::gil_scoped_release nogil;
            inv::launch_conv2d_forward(p, xp, wp, as_ptr_or_null<const float>(b), yp,
                                       as_stream(stream));
        },
        "Internal: y = conv2d(x, w) + b (b=0: no bias) on a CUDA stream; public API: "
        "invert_native.ops, which validates arrays.",
        py::arg("x"), py::arg("w"), py::arg("b"), py::arg("y"), py::arg("N"), py::arg("C"),
        py::arg("H"), py::arg("W"), py::arg("K"), py::arg("kh"), py::arg("kw"),
        py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"),
        py::arg("groups"), py::arg("stream"));

    m.def(
        "conv2d_backward",
        [](ptr_t dy, ptr_t w, ptr_t dx, index_t N, index_t C, index_t H, index_t W, index_t K,
           index_t kh, index_t kw, index_t stride_h, index_t stride_w, index_t pad_h,
           index_t pad_w, index_t groups, ptr_t stream) {
            const auto p = inv::make_conv2d_params(N, C, H, W, K, conv_weight_c(C, groups), kh,
                                                   kw, stride_h, stride_w, pad_h, pad_w, groups);
            const float* dyp = as_ptr<const float>(dy, "dy");
            const float* wp = as_ptr<const float>(w, "w");
            float* dxp = as_ptr<float>(dx, "dx");
            py::gil_scoped_release nogil;
            inv::launch_conv2d_backward(p, dyp, wp, dxp, as_stream(stream));
        },
        "Internal: dx = conv2d backward-to-input (overwrites dx) on a CUDA stream; public API: "
        "invert_native.ops, which validates arrays.",
        py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("N"), py::arg("C"), py::arg("H"),
        py::arg("W"), py::arg("K"), py::arg("kh"), py::arg("kw"), py::arg("stride_h"),
        py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"), py::arg("groups"),
        py::arg("stream"));

    m.def(
        "relu_forward",
        [](index_t n, ptr_t x, ptr_t y, ptr_t stream) {
            if (n < 0) throw std::invalid_argument("relu: n must be non-negative");
            if (n == 0) return;
            const float* xp = as_ptr<const float>(x, "x");
            float* yp = as_ptr<float>(y, "y");
            py::gil_scoped_release nogil;
            inv::launch_relu_forward(n, xp, yp, as_stream(stream));
        },
        "Internal: y = max(x, 0) over n elements on a CUDA stream; public API: "
        "invert_native.ops, which validates arrays.",
        py::arg("n"), py::arg("x"), py::arg("y"), py::arg("stream"));

    m.def(
        "relu_backward",
        [](index_t n, ptr_t x, ptr_t dy, ptr_t dx, ptr_t stream) {
            if (n < 0) throw std::invalid_argument("relu: n must be non-negative");
            if (n == 0) return;
            const float* xp = as_ptr<const float>(x, "x");
            const float* dyp = as_ptr<const float>(dy, "dy");
            float* dxp = as_ptr<float>(dx, "dx");
            py::gil_scoped_release nogil;
            inv::launch_relu_backward(n, xp, dyp, dxp, as_stream(stream));
        },
        "Internal: dx = dy where x > 0 else 0 (overwrites dx) on a CUDA stream; public API: "
        "invert_native.ops, which validates arrays.",
        py::arg("n"), py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("stream"));

    m.def(
        "maxpool2d_forward",
        [](ptr_t x, ptr_t y, ptr_t argmax, index_t N, index_t C, index_t H, index_t W, index_t kh,
           index_t kw, index_t stride_h, index_t stride_w, index_t pad_h, index_t pad_w,
           ptr_t stream) {
            const auto p = inv::make_pool2d_params(N, C, H, W, kh, kw, stride_h, stride_w, pad_h,
                                                   pad_w);
            const float* xp = as_ptr<const float>(x, "x");
            float* yp = as_ptr<float>(y, "y");
            index_t* ap = as_ptr<index_t>(argmax, "argmax");
            py::gil_scoped_release nogil;
            inv::launch_maxpool2d_forward(p, xp, yp, ap, as_stream(stream));
        },
        "Internal: y, argmax (int64, within each HxW plane) = max-pool of x on a CUDA stream; "
        "public API: invert_native.ops, which validates arrays.",
        py::arg("x"), py::arg("y"), py::arg("argmax"), py::arg("N"), py::arg("C"), py::arg("H"),
        py::arg("W"), py::arg("kh"), py::arg("kw"), py::arg("stride_h"), py::arg("stride_w"),
        py::arg("pad_h"), py::arg("pad_w"), py::arg("stream"));

    m.def(
        "maxpool2d_backward",
        [](ptr_t dy, ptr_t argmax, ptr_t dx, index_t N, index_t C, index_t H, index_t W,
           index_t kh, index_t kw, index_t stride_h, index_t stride_w, index_t pad_h,
           index_t pad_w, ptr_t stream) {
            const auto p = inv::make_pool2d_params(N, C, H, W, kh, kw, stride_h, stride_w, pad_h,
                                                   pad_w);
            const float* dyp = as_ptr<const float>(dy, "dy");
            const index_t* ap = as_ptr<const index_t>(argmax, "argmax");
            float* dxp = as_ptr<float>(dx, "dx");
            py::gil_scoped_release nogil;
            inv::launch_maxpool2d_backward(p, dyp, ap, dxp, as_stream(stream));
        },
        "Internal: dx = max-pool backward-to-input (overwrites dx) on a CUDA stream; public API: "
        "invert_native.ops, which validates arrays.",
        py::arg("dy"), py::arg("argmax"), py::arg("dx"), py::arg("N"), py::arg("C"), py::arg("H"),
        py::arg("W"), py::arg("kh"), py::arg("kw"), py::arg("stride_h"), py::arg("stride_w"),
        py::arg("pad_h"), py::arg("pad_w"), py::arg("stream"));

    m.def(
        "lrn_forward",
        [](ptr_t x, ptr_t y, ptr_t scale, index_t N, index_t C, index_t H, index_t W,
           index_t size, double alpha, double beta, double k, ptr_t stream) {
            const auto p = inv::make_lrn_params(N, C, H, W, size, alpha, beta, k);
            const float* xp = as_ptr<const float>(x, "x");
            float* yp = as_ptr<float>(y, "y");
            float* sp = as_ptr<float>(scale, "scale");
            py::gil_scoped_release nogil;
            inv::launch_lrn_forward(p, xp, yp, sp, as_stream(stream));
        },
        "Internal: y, scale = cross-channel LRN of x on a CUDA stream; public API: "
        "invert_native.ops, which validates arrays.",
        py::arg("x"), py::arg("y"), py::arg("scale"), py::arg("N"), py::arg("C"), py::arg("H"),
        py::arg("W"), py::arg("size"), py::arg("alpha"), py::arg("beta"), py::arg("k"),
        py::arg("stream"));

    m.def(
        "lrn_backward",
        [](ptr_t x, ptr_t y, ptr_t scale, ptr_t dy, ptr_t dx, index_t N, index_t C, index_t H,
           index_t W, index_t size, double alpha, double beta, double k, ptr_t stream) {
            const auto p = inv::make_lrn_params(N, C, H, W, size, alpha, beta, k);
            const float* xp = as_ptr<const float>(x, "x");
            const float* yp = as_ptr<const float>(y, "y");
            const float* sp = as_ptr<const float>(scale, "scale");
            const float* dyp = as_ptr<const float>(dy, "dy");
            float* dxp = as_ptr<float>(dx, "dx");
            py::gil_scoped_release nogil;
            inv::launch_lrn_backward(p, xp, yp, sp, dyp, dxp, as_stream(stream));
        },
        "Internal: dx = LRN backward-to-input (overwrites dx) on a CUDA stream; public API: "
        "invert_native.ops, which validates arrays.",
        py::arg("x"), py::arg("y"), py::arg("scale"), py::arg("dy"), py::arg("dx"), py::arg("N"),
        py::arg("C"), py::arg("H"), py::arg("W"), py::arg("size"), py::arg("alpha"),
        py::arg("beta"), py::arg("k"), py::arg("stream"));

    m.def(
        "linear_forward",
        [](ptr_t x, ptr_t w, ptr_t b, ptr_t y, index_t N, index_t I, index_t O, ptr_t stream) {
            const auto p = inv::make_linear_params(N, I, O, I);
            const float* xp = as_ptr<const float>(x, "x");
            const float* wp = as_ptr<const float>(w, "w");
            float* yp = as_ptr<float>(y, "y");
            py::gil_scoped_release nogil;
            inv::launch_linear_forward(p, xp, wp, as_ptr_or_null<const float>(b), yp,
                                       as_stream(stream));
        },
        "Internal: y = x w^T + b (b=0: no bias) on a CUDA stream; public API: "
        "invert_native.ops, which validates arrays.",
        py::arg("x"), py::arg("w"), py::arg("b"), py::arg("y"), py::arg("N"), py::arg("I"),
        py::arg("O"), py::arg("stream"));

    m.def(
        "linear_backward",
        [](ptr_t dy, ptr_t w, ptr_t dx, index_t N, index_t I, index_t O, ptr_t stream) {
            const auto p = inv::make_linear_params(N, I, O, I);
            const float* dyp = as_ptr<const float>(dy, "dy");
            const float* wp = as_ptr<const float>(w, "w");
            float* dxp = as_ptr<float>(dx, "dx");
            py::gil_scoped_release nogil;
            inv::launch_linear_backward(p, dyp, wp, dxp, as_stream(stream));
        },
        "Internal: dx = dy w (overwrites dx) on a CUDA stream; public API: invert_native.ops, "
        "which validates arrays.",
        py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("N"), py::arg("I"), py::arg("O"),
        py::arg("stream"));

    m.def(
        "device_count",
        []() {
            int count = 0;
            if (cudaGetDeviceCount(&count) != cudaSuccess) {
                (void)cudaGetLastError();  // clear the error so later calls do not report it
                return 0;
            }
            return count;
        },
        "Internal: number of CUDA devices, 0 when there is no driver or device.");

    m.def(
        "cuda_runtime_version",
        []() {
            int version = 0;
            const cudaError_t err = cudaRuntimeGetVersion(&version);
            if (err != cudaSuccess)
                throw inv::CudaError(std::string("cudaRuntimeGetVersion: ") +
                                     cudaGetErrorString(err));
            return version;
        },
        "Internal: CUDA runtime version linked into _cuda (e.g. 13000 for 13.0).");
}
