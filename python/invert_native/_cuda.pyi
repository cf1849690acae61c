"""Type stub of invert_native._cuda, the pybind11 module of the CUDA core (src/bind_cuda*.cpp).

Internal: use invert_native.ops, which validates CuPy arrays. Arrays cross as
device pointers (``int``, 0 for an absent bias) to C-contiguous float32 memory
(``argmax``/``assign``: int64), with the shapes as ints and CuPy's stream handle
last (0: the legacy default stream). Launches are asynchronous. Functions whose
parameters come before a ``/`` take them by position only.
"""

# ---------------------------------------------------------------- CNN ops
def conv2d_forward(x: int, w: int, b: int, y: int, N: int, C: int, H: int, W: int, K: int,
                   kh: int, kw: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                   groups: int, stream: int) -> None: ...
def conv2d_backward(dy: int, w: int, dx: int, N: int, C: int, H: int, W: int, K: int, kh: int,
                    kw: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int, groups: int,
                    stream: int) -> None: ...
def relu_forward(n: int, x: int, y: int, stream: int) -> None: ...
def relu_backward(n: int, x: int, dy: int, dx: int, stream: int) -> None: ...
def maxpool2d_forward(x: int, y: int, argmax: int, N: int, C: int, H: int, W: int, kh: int,
                      kw: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                      stream: int) -> None: ...
def maxpool2d_backward(dy: int, argmax: int, dx: int, N: int, C: int, H: int, W: int, kh: int,
                       kw: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                       stream: int) -> None: ...
def lrn_forward(x: int, y: int, scale: int, N: int, C: int, H: int, W: int, size: int,
                alpha: float, beta: float, k: float, stream: int) -> None: ...
def lrn_backward(x: int, y: int, scale: int, dy: int, dx: int, N: int, C: int, H: int, W: int,
                 size: int, alpha: float, beta: float, k: float, stream: int) -> None: ...
def linear_forward(x: int, w: int, b: int, y: int, N: int, I: int, O: int,
                   stream: int) -> None: ...
def linear_backward(dy: int, w: int, dx: int, N: int, I: int, O: int, stream: int) -> None: ...

# ---------------------------------------------------------------- regularisers
def tv_forward(x: int, terms: int, dx: int, N: int, C: int, H: int, W: int, beta: float,
               floor: float, stream: int, /) -> None: ...
def alpha_norm_forward(x: int, terms: int, dx: int, N: int, M: int, alpha: float, stream: int,
                       /) -> None: ...
def descent_step(g_data: int, g_alpha: int, g_tv: int, x: int, mu: int, count: int, sigma: float,
                 lambda_alpha: float, lambda_tv: float, rate: float, momentum: float,
                 stream: int, /) -> None: ...

# ---------------------------------------------------------------- HOG
def hog_cells_forward(x: int, hist: int, pix: int, assign: int, N: int, C: int, H: int, W: int,
                      cell: int, O: int, binning: int, stream: int, /) -> None: ...
def hog_cells_backward(pix: int, assign: int, dhist: int, dx: int, work: int, N: int, C: int,
                       H: int, W: int, cell: int, O: int, binning: int, stream: int,
                       /) -> None: ...
def hog_norm_forward(hist: int, y: int, blocks: int, N: int, K: int, h: int, w: int,
                     variant: int, texture: bool, stream: int, /) -> None: ...
def hog_norm_backward(hist: int, blocks: int, dy: int, dhist: int, work: int, N: int, K: int,
                      h: int, w: int, variant: int, texture: bool, stream: int, /) -> None: ...

# ---------------------------------------------------------------- dense SIFT
# After the pointers, every DSIFT function takes the hyper-parameters of
# src/bind_dsift_args.h, then the stream.
def dsift_gradient_forward(x: int, h: int, N: int, H: int, W: int, K: int, nbin: int,
                           bin_size: int, sx: int, sy: int, xmin: int, ymin: int, xmax: int,
                           ymax: int, window: float, exact_atan2: bool, second_l2: bool,
                           clamp: float, stream: int, /) -> None: ...
def dsift_gradient_backward(x: int, dh: int, dx: int, N: int, H: int, W: int, K: int, nbin: int,
                            bin_size: int, sx: int, sy: int, xmin: int, ymin: int, xmax: int,
                            ymax: int, window: float, exact_atan2: bool, second_l2: bool,
                            clamp: float, stream: int, /) -> None: ...
def dsift_triangle_forward(x: int, y: int, work: int, axis: int, N: int, H: int, W: int, K: int,
                           nbin: int, bin_size: int, sx: int, sy: int, xmin: int, ymin: int,
                           xmax: int, ymax: int, window: float, exact_atan2: bool,
                           second_l2: bool, clamp: float, stream: int, /) -> None: ...
def dsift_triangle_backward(dy: int, dx: int, axis: int, N: int, H: int, W: int, K: int,
                            nbin: int, bin_size: int, sx: int, sy: int, xmin: int, ymin: int,
                            xmax: int, ymax: int, window: float, exact_atan2: bool,
                            second_l2: bool, clamp: float, stream: int, /) -> None: ...
def dsift_sample_forward(s: int, d: int, N: int, H: int, W: int, K: int, nbin: int,
                         bin_size: int, sx: int, sy: int, xmin: int, ymin: int, xmax: int,
                         ymax: int, window: float, exact_atan2: bool, second_l2: bool,
                         clamp: float, stream: int, /) -> None: ...
def dsift_sample_backward(dd: int, ds: int, N: int, H: int, W: int, K: int, nbin: int,
                          bin_size: int, sx: int, sy: int, xmin: int, ymin: int, xmax: int,
                          ymax: int, window: float, exact_atan2: bool, second_l2: bool,
                          clamp: float, stream: int, /) -> None: ...
def dsift_normalize_forward(d: int, y: int, norms: int, N: int, H: int, W: int, K: int,
                            nbin: int, bin_size: int, sx: int, sy: int, xmin: int, ymin: int,
                            xmax: int, ymax: int, window: float, exact_atan2: bool,
                            second_l2: bool, clamp: float, stream: int, /) -> None: ...
def dsift_normalize_backward(d: int, norms: int, dy: int, dd: int, N: int, H: int, W: int,
                             K: int, nbin: int, bin_size: int, sx: int, sy: int, xmin: int,
                             ymin: int, xmax: int, ymax: int, window: float, exact_atan2: bool,
                             second_l2: bool, clamp: float, stream: int, /) -> None: ...

# ---------------------------------------------------------------- device
def device_count() -> int: ...
def cuda_runtime_version() -> int: ...
