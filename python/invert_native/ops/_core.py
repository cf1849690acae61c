"""The CNN ops: conv2d, ReLU, max-pool, LRN, linear (forward and backward-to-input)."""

from __future__ import annotations

import numpy as np

from ._dispatch import _Call, _check_shape, _cpu, _int, _native, _pair, _shape4

# ---------------------------------------------------------------------- conv2d
def _stride_padding(op, stride, padding):
    """Checked (stride_h, stride_w, pad_h, pad_w): strides positive, paddings non-negative."""
    sh, sw = _pair(stride, op, "stride")
    ph, pw = _pair(padding, op, "padding")
    for v in (sh, sw):
        if v <= 0:
            raise ValueError(f"{op}: stride must be positive, got {v}")
    for v in (ph, pw):
        if v < 0:
            raise ValueError(f"{op}: padding must be non-negative, got {v}")
    return sh, sw, ph, pw


def conv2d_hyper(op, stride, padding, groups):
    """Checked (stride_h, stride_w, pad_h, pad_w, groups), without an input.

    The checks that need no input, shared by the ops and the layer constructors
    (``invert_native.nn``) so that both fail with the same message; the op then
    checks the shapes in the core.
    """
    sh, sw, ph, pw = _stride_padding(op, stride, padding)
    groups = _int(groups, op, "groups")
    if groups <= 0:
        raise ValueError(f"{op}: groups must be positive, got {groups}")
    return sh, sw, ph, pw, groups


def _conv_shapes(op, x_shape, weight, stride, padding, groups):
    sh, sw, ph, pw, groups = conv2d_hyper(op, stride, padding, groups)
    N, C, H, W = x_shape
    K, wc, kh, kw = weight.shape
    Ho, Wo = _native(op, _cpu.conv2d_params, N, C, H, W, K, wc, kh, kw, sh, sw, ph, pw, groups)
    return (sh, sw, ph, pw, groups), (N, K, Ho, Wo)


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, groups=1):
    """2-D convolution (cross-correlation, as in Caffe and PyTorch) with zero padding.

    Args:
        x: input, (N, C, H, W) float32.
        weight: filters, (K, C // groups, kh, kw) float32.
        bias: optional (K,) float32.
        stride, padding: an int or an (h, w) pair.
        groups: channel groups; must divide C and K.

    Returns:
        y: (N, K, Ho, Wo) with Ho = (H + 2*pad_h - kh) // stride_h + 1 (likewise Wo).
    """
    op = "conv2d_forward"
    c = _Call(op, x=x, weight=weight, bias=bias)
    x = c.array("x", x, 4)
    weight = c.array("weight", weight, 4)
    bias = c.array("bias", bias, 1, optional=True)
    hyper, yshape = _conv_shapes(op, x.shape, weight, stride, padding, groups)
    if bias is not None:
        _check_shape(op, "bias", bias, (weight.shape[0],))
    y = c.empty(yshape)
    if c.cuda:
        c.launch("conv2d_forward", x, weight, bias, y, *x.shape, *weight.shape[:1],
                 *weight.shape[2:], *hyper)
    else:
        _cpu.conv2d_forward(x, weight, bias, y, *hyper)
    return y


def conv2d_backward(dy, weight, x_shape, stride=1, padding=0, groups=1):
    """Gradient of :func:`conv2d_forward` with respect to its input.

    Args:
        dy: gradient of the output, (N, K, Ho, Wo).
        weight: the forward's filters, (K, C // groups, kh, kw).
        x_shape: the forward input's shape (N, C, H, W).

    Returns:
        dx: (N, C, H, W), a new array.
    """
    op = "conv2d_backward"
    c = _Call(op, dy=dy, weight=weight)
    dy = c.array("dy", dy, 4)
    weight = c.array("weight", weight, 4)
    x_shape = _shape4(x_shape, op, "x_shape")
    hyper, yshape = _conv_shapes(op, x_shape, weight, stride, padding, groups)
    _check_shape(op, "dy", dy, yshape)
    dx = c.empty(x_shape)
    if c.cuda:
        c.launch("conv2d_backward", dy, weight, dx, *x_shape, *weight.shape[:1],
                 *weight.shape[2:], *hyper)
    else:
        _cpu.conv2d_backward(dy, weight, dx, *hyper)
    return dx


# ------------------------------------------------------------------------ ReLU
def _nonempty(op, name, a):
    if a.size == 0:
        raise ValueError(f"{op}: {name} has a zero-size dimension, shape {tuple(a.shape)}")


def relu_forward(x):
    """y = max(x, 0), any shape."""
    c = _Call("relu_forward", x=x)
    x = c.array("x", x)
    _nonempty("relu_forward", "x", x)
    y = c.empty(x.shape)
    if c.cuda:
        c.launch("relu_forward", x.size, x, y)
    else:
        _cpu.relu_forward(x, y)
    return y


def relu_backward(x, dy):
    """dx = dy where x > 0, else 0 (the gradient at exactly 0 is 0). x is the forward's input."""
    op = "relu_backward"
    c = _Call(op, x=x, dy=dy)
    x = c.array("x", x)
    dy = c.array("dy", dy)
    _nonempty(op, "x", x)
    _check_shape(op, "dy", dy, x.shape)
    dx = c.empty(x.shape)
    if c.cuda:
        c.launch("relu_backward", x.size, x, dy, dx)
    else:
        _cpu.relu_backward(x, dy, dx)
    return dx


# ------------------------------------------------------------------- maxpool2d
def maxpool2d_hyper(op, kernel_size, stride, padding):
    """Checked (kh, kw, stride_h, stride_w, pad_h, pad_w), without an input (as conv2d_hyper)."""
    kh, kw = _pair(kernel_size, op, "kernel_size")
    for v in (kh, kw):
        if v <= 0:
            raise ValueError(f"{op}: kernel_size must be positive, got {v}")
    sh, sw, ph, pw = _stride_padding(op, kernel_size if stride is None else stride, padding)
    if ph >= kh or pw >= kw:
        raise ValueError(f"{op}: padding must be smaller than kernel_size (padded cells never "
                         f"win, so a window must reach the input), got padding={padding!r}, "
                         f"kernel_size={kernel_size!r}")
    return kh, kw, sh, sw, ph, pw


def _pool_shapes(op, x_shape, kernel_size, stride, padding):
    kh, kw, sh, sw, ph, pw = maxpool2d_hyper(op, kernel_size, stride, padding)
    N, C, H, W = x_shape
    Ho, Wo = _native(op, _cpu.pool2d_params, N, C, H, W, kh, kw, sh, sw, ph, pw)
    return (kh, kw, sh, sw, ph, pw), (N, C, Ho, Wo)


def maxpool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling with Caffe's output size (ceil mode).

    Ho = ceil((H + 2*pad - k) / stride) + 1, less one if the last window would
    start in the padding or past the input (Caffe drops only the former, which
    leaves an empty window when stride > kernel; we drop both, as PyTorch does).
    Padded cells never win. Ties: the first maximum in
    row-major order within the window wins (backward routes the gradient there).

    Returns:
        (y, argmax): y (N, C, Ho, Wo) float32 and argmax (N, C, Ho, Wo) int64, the
        index of each winner within its H*W plane (what backward needs).
    """
    op = "maxpool2d_forward"
    c = _Call(op, x=x)
    x = c.array("x", x, 4)
    hyper, yshape = _pool_shapes(op, x.shape, kernel_size, stride, padding)
    y = c.empty(yshape)
    argmax = c.empty(yshape, np.int64)
    if c.cuda:
        c.launch("maxpool2d_forward", x, y, argmax, *x.shape, *hyper)
    else:
        _cpu.maxpool2d_forward(x, y, argmax, *hyper)
    return y, argmax


def maxpool2d_backward(dy, argmax, x_shape, kernel_size, stride=None, padding=0):
    """Gradient of :func:`maxpool2d_forward`: each dy goes to its window's recorded argmax."""
    op = "maxpool2d_backward"
    c = _Call(op, dy=dy, argmax=argmax)
    dy = c.array("dy", dy, 4)
    argmax = c.array("argmax", argmax, 4, dtype=np.int64)
    x_shape = _shape4(x_shape, op, "x_shape")
    hyper, yshape = _pool_shapes(op, x_shape, kernel_size, stride, padding)
    _check_shape(op, "dy", dy, yshape)
    _check_shape(op, "argmax", argmax, yshape)
    dx = c.empty(x_shape)
    if c.cuda:  # entries outside the plane are skipped (a check would cost a transfer)
        c.launch("maxpool2d_backward", dy, argmax, dx, *x_shape, *hyper)
    else:  # the core counts entries outside the plane in the same pass and refuses them
        _native(op, _cpu.maxpool2d_backward, dy, argmax, dx, *hyper)
    return dx


# ------------------------------------------------------------------------- LRN
def lrn_hyper(op, size, alpha, beta, k, x_shape=(1, 1, 1, 1)):
    """Checked (size, alpha, beta, k), by the core's own check (size odd, k > 0 and alpha >= 0,
    all finite in float32); without an input (layer constructors) on a 1x1x1x1 one."""
    size = _int(size, op, "size")
    try:
        alpha, beta, k = float(alpha), float(beta), float(k)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: alpha, beta and k must be numbers") from None
    except OverflowError:  # an int beyond double's range
        raise ValueError(f"{op}: alpha, beta and k must be finite") from None
    if not all(np.isfinite(v) for v in (alpha, beta, k)):
        raise ValueError(f"{op}: alpha, beta and k must be finite")
    _native(op, _cpu.lrn_params, *x_shape, size, alpha, beta, k)
    return size, alpha, beta, k


def _lrn_hyper(op, x_shape, size, alpha, beta, k):
    return lrn_hyper(op, size, alpha, beta, k, x_shape)


def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's cross-channel local response normalisation.

    scale_c = k + (alpha / size) * sum of x_j^2 over the channels j in
    [c - (size-1)//2, c + (size-1)//2] (clipped), y_c = x_c * scale_c^(-beta).
    ``size`` must be odd (as in Caffe), ``k`` positive, ``alpha`` non-negative.

    Returns:
        (y, scale), both (N, C, H, W); scale is what backward needs.
    """
    op = "lrn_forward"
    c = _Call(op, x=x)
    x = c.array("x", x, 4)
    hyper = _lrn_hyper(op, x.shape, size, alpha, beta, k)
    y = c.empty(x.shape)
    scale = c.empty(x.shape)
    if c.cuda:
        c.launch("lrn_forward", x, y, scale, *x.shape, *hyper)
    else:
        _cpu.lrn_forward(x, y, scale, *hyper)
    return y, scale


def lrn_backward(x, y, scale, dy, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Gradient of :func:`lrn_forward` w.r.t. x, from the forward's x, y and scale."""
    op = "lrn_backward"
    c = _Call(op, x=x, y=y, scale=scale, dy=dy)
    x = c.array("x", x, 4)
    y, scale, dy = (c.array(n, a, 4) for n, a in (("y", y), ("scale", scale), ("dy", dy)))
    for n, a in (("y", y), ("scale", scale), ("dy", dy)):
        _check_shape(op, n, a, x.shape)
    hyper = _lrn_hyper(op, x.shape, size, alpha, beta, k)
    dx = c.empty(x.shape)
    if c.cuda:
        c.launch("lrn_backward", x, y, scale, dy, dx, *x.shape, *hyper)
    else:
        _cpu.lrn_backward(x, y, scale, dy, dx, *hyper)
    return dx


# ---------------------------------------------------------------------- linear
def linear_forward(x, weight, bias=None):
    """Fully connected layer: y = flatten(x) @ weight.T + bias.

    Args:
        x: (N, ...) float32; each sample is flattened (C-order) to I features.
        weight: (O, I) float32.
        bias: optional (O,).

    Returns:
        y: (N, O).
    """
    op = "linear_forward"
    c = _Call(op, x=x, weight=weight, bias=bias)
    x = c.array("x", x)
    if x.ndim < 2:
        raise ValueError(f"{op}: x must have a batch dimension and at least one feature "
                         f"dimension, got shape {tuple(x.shape)}")
    weight = c.array("weight", weight, 2)
    bias = c.array("bias", bias, 1, optional=True)
    N = x.shape[0]
    I = int(np.prod(x.shape[1:]))
    O = weight.shape[0]
    _native(op, _cpu.linear_params, N, I, O, weight.shape[1])
    if bias is not None:
        _check_shape(op, "bias", bias, (O,))
    x2 = x.reshape(N, I)
    y = c.empty((N, O))
    if c.cuda:
        c.launch("linear_forward", x2, weight, bias, y, N, I, O)
    else:
        _cpu.linear_forward(x2, weight, bias, y)
    return y


def linear_backward(dy, weight, x_shape):
    """Gradient of :func:`linear_forward` w.r.t. x: dy @ weight, reshaped to ``x_shape``."""
    op = "linear_backward"
    c = _Call(op, dy=dy, weight=weight)
    dy = c.array("dy", dy, 2)
    weight = c.array("weight", weight, 2)
    try:
        x_shape = tuple(_int(d, op, "x_shape") for d in x_shape)
    except TypeError:
        raise TypeError(f"{op}: x_shape must be a tuple of ints, got {x_shape!r}") from None
    if len(x_shape) < 2:
        raise ValueError(f"{op}: x_shape must be (N, ...) with at least 2 entries, got {x_shape}")
    N = x_shape[0]
    I = int(np.prod(x_shape[1:]))
    O = weight.shape[0]
    _native(op, _cpu.linear_params, N, I, O, weight.shape[1])
    _check_shape(op, "dy", dy, (N, O))
    dx = c.empty((N, I))
    if c.cuda:
        c.launch("linear_backward", dy, weight, dx, N, I, O)
    else:
        _cpu.linear_backward(dy, weight, dx)
    return dx.reshape(x_shape)
