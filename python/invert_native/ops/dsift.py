"""The dense SIFT ops: VLFeat's vl_dsift (flat "fast" window) as four differentiable steps.

::

    x (N, 1, H, W) --dsift_gradient--> h (N, K, H, W)        gradient, bilinear orientation binning
                   --dsift_triangle (axis 2), dsift_triangle (axis 3)--> s (N, K, H, W)
                   --dsift_sample-->    d (N, D, ny, nx)      4x4 bins per frame, window weights
                   --dsift_normalize--> y (N, D, ny, nx)      L2, clamp at 0.2, L2

D = K * num_bins**2 (128). Channel ``(by * num_bins + bx) * K + t`` of d and y is
VLFeat's descriptor element order; frame (fy, fx) has its upper-left bin centre at
pixel (x0 + fx * step_x, y0 + fy * step_y). Every op takes a :class:`DsiftConfig`
holding the hyper-parameters; shapes follow from the arrays. The usual rules of
:mod:`invert_native.ops` apply (float32, NumPy -> CPU core, CuPy -> CUDA core);
backward ops return new arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._dispatch import _Call, _check_shape, _cpu, _int, _native, _pair, _shape4

__all__ = [
    "DsiftConfig",
    "dsift_geometry",
    "dsift_gradient_forward", "dsift_gradient_backward",
    "dsift_triangle_forward", "dsift_triangle_backward",
    "dsift_sample_forward", "dsift_sample_backward",
    "dsift_normalize_forward", "dsift_normalize_backward",
]


@dataclass(frozen=True)
class DsiftConfig:
    """Hyper-parameters of dense SIFT, named as in VLFeat.

    Attributes:
        bin_size: pixels per spatial bin (VLFeat ``binSize``, MATLAB ``'Size'``).
        step: frame sampling step in pixels, an int or an (x, y) pair.
        orientations: orientation bins K (VLFeat ``numBinT``, 8). With K = 1 the one
            channel holds ``frac * mag`` (``frac``: the angle's fraction of a turn), as
            libvl's two stores to bin 0 leave it.
        num_bins: spatial bins per side (``numBinX = numBinY``, 4).
        bounds: ``(xmin, ymin, xmax, ymax)`` in 0-based pixels, inclusive, or None for
            the whole image (VLFeat ``vl_dsift_set_bounds``). Bounds reaching past the
            image are clamped to it, as MATLAB's ``vl_dsift`` does (``xmin = max(xmin,
            0)``, ``xmax = min(xmax, W - 1)``, likewise y); bounds that leave no pixel
            raise ValueError.
        window_size: VLFeat's ``windowSize`` (2.0): the Gaussian window's sigma in bins.
        exact_atan2: use atan2 instead of VLFeat's ``vl_fast_atan2_f`` (see the module
            documentation of :mod:`invert_native.representations.dsift`).
        second_l2: normalise again after the clamp (VLFeat does; the paper's Table 1
            network does not).
        clamp: the clamp after the first L2 normalisation (0.2).
    """

    bin_size: int = 8
    step: int | tuple[int, int] = 8
    orientations: int = 8
    num_bins: int = 4
    bounds: tuple[int, int, int, int] | None = None
    window_size: float = 2.0
    exact_atan2: bool = False
    second_l2: bool = True
    clamp: float = 0.2

    def hyper(self, op: str = "dsift") -> tuple:
        """The argument list the native functions take after (N, H, W)."""
        sx, sy = _pair(self.step, op, "step")
        if self.bounds is None:
            bounds = (-1, -1, -1, -1)
        else:
            try:
                bounds = tuple(_int(v, op, "bounds") for v in self.bounds)
            except TypeError:
                raise TypeError(f"{op}: bounds must be (xmin, ymin, xmax, ymax) ints, got "
                                f"{self.bounds!r}") from None
            if len(bounds) != 4:
                raise ValueError(f"{op}: bounds must be 4 ints (xmin, ymin, xmax, ymax), got "
                                 f"{self.bounds!r}")
            if bounds[2] < 0 or bounds[3] < 0:  # (negative maxima mean "no bounds" natively)
                raise ValueError(f"{op}: bounds {self.bounds!r} leave no pixel of the image "
                                 "(xmax and ymax must be >= 0)")
        for name in ("window_size", "clamp"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{op}: {name} must be a finite number, got {v!r}")
        return (_int(self.orientations, op, "orientations"), _int(self.num_bins, op, "num_bins"),
                _int(self.bin_size, op, "bin_size"), sx, sy, *bounds, float(self.window_size),
                bool(self.exact_atan2), bool(self.second_l2), float(self.clamp))

    @property
    def descriptor_size(self) -> int:
        return int(self.orientations) * int(self.num_bins) ** 2


def dsift_geometry(config: DsiftConfig, H: int, W: int):
    """The frame grid of an H x W image: ``(ny, nx, x0, y0)``.

    Frame (fy, fx) has its upper-left bin centre at (x0 + fx*step_x, y0 + fy*step_y)
    and its centre ``(num_bins - 1) * bin_size / 2`` further along each axis. Raises
    ValueError when the image (or bounds) cannot hold one descriptor.
    """
    return _native("dsift", _cpu.dsift_params, 1, _int(H, "dsift", "H"), _int(W, "dsift", "W"),
                   *config.hyper())


def _config(op, config):
    if config is None:
        return DsiftConfig()
    if not isinstance(config, DsiftConfig):
        raise TypeError(f"{op}: config must be an invert_native.ops.DsiftConfig, got "
                        f"{type(config).__name__}")
    return config


def _setup(op, config, N, H, W):
    """(N, H, W, *hyper) for the native call, and (ny, nx)."""
    config = _config(op, config)
    hyper = config.hyper(op)
    ny, nx, _, _ = _native(op, _cpu.dsift_params, N, H, W, *hyper)
    return (N, H, W, *hyper), (ny, nx), config


# ------------------------------------------------------------------ gradient
def dsift_gradient_forward(x, config=None):
    """Image gradient and bilinear orientation binning, as vl_dsift computes them.

    g = (gx, gy) by half central differences (one-sided at the image border);
    angle = VLFeat's fast atan2 (or atan2) wrapped to [0, 2 pi), y pointing down;
    h[t] = |g| * max(0, 1 - |angle - 2 pi t / K| * K / (2 pi)) (circularly).

    Args:
        x: grey images (N, 1, H, W) float32.

    Returns:
        h: (N, K, H, W).
    """
    op = "dsift_gradient_forward"
    c = _Call(op, x=x)
    x = c.array("x", x, 4)
    if x.shape[1] != 1:
        raise ValueError(f"{op}: x must be grey images (N, 1, H, W), got {x.shape[1]} channels "
                         f"in shape {tuple(x.shape)}; convert colour images to grey first")
    args, _, config = _setup(op, config, x.shape[0], x.shape[2], x.shape[3])
    h = c.empty((x.shape[0], config.orientations, x.shape[2], x.shape[3]))
    if c.cuda:
        c.launch("dsift_gradient_forward", x, h, *args)
    else:
        _cpu.dsift_gradient_forward(x, h, *args)
    return h


def dsift_gradient_backward(x, dh, config=None):
    """Gradient of :func:`dsift_gradient_forward` w.r.t. x (the forward's input).

    At pixels whose squared gradient magnitude is below VLFeat's floor of 1e-8 the
    binned value is 0 whatever the angle, and the gradient is taken as 0.
    """
    op = "dsift_gradient_backward"
    c = _Call(op, x=x, dh=dh)
    x = c.array("x", x, 4)
    dh = c.array("dh", dh, 4)
    if x.shape[1] != 1:
        raise ValueError(f"{op}: x must be grey images (N, 1, H, W), got shape {tuple(x.shape)}")
    args, _, config = _setup(op, config, x.shape[0], x.shape[2], x.shape[3])
    _check_shape(op, "dh", dh, (x.shape[0], config.orientations, x.shape[2], x.shape[3]))
    dx = c.empty(x.shape)
    if c.cuda:
        c.launch("dsift_gradient_backward", x, dh, dx, *args)
    else:
        _cpu.dsift_gradient_backward(x, dh, dx, *args)
    return dx


# ------------------------------------------------------------------ triangle
def _axis(op, axis):
    axis = _int(axis, op, "axis")
    if axis not in (2, 3):
        raise ValueError(f"{op}: axis must be 2 (H) or 3 (W), got {axis}")
    return axis


def _maps(op, c, name, a, config):
    a = c.array(name, a, 4)
    if a.shape[1] != config.orientations:
        raise ValueError(f"{op}: {name} must have {config.orientations} channels (one per "
                         f"orientation), got shape {tuple(a.shape)}")
    return a


def dsift_triangle_forward(x, axis, config=None):
    """Triangular filter (b - |u|) / b**2 (|u| < b = bin_size) along axis 2 (H) or 3 (W).

    The image edge is replicated (VLFeat's padding by continuity). Applied along
    both axes it is vl_dsift's bilinear spatial binning (up to the factor b**2 that
    :func:`dsift_sample_forward` applies): the value at a pixel is the bin centred
    there. Computed as VLFeat's ``vl_imconvcoltri_f`` computes it, through running
    sums along each whole line, so that the rounding is VLFeat's too.

    Args:
        x: orientation maps (N, K, H, W).

    Returns:
        y: (N, K, H, W).
    """
    op = "dsift_triangle_forward"
    config = _config(op, config)
    c = _Call(op, x=x)
    x = _maps(op, c, "x", x, config)
    axis = _axis(op, axis)
    args, _, _ = _setup(op, config, x.shape[0], x.shape[2], x.shape[3])
    y = c.empty(x.shape)
    if c.cuda:
        N, K, H, W = x.shape
        lines, n = N * K * (W if axis == 2 else H), (H if axis == 2 else W)
        work = c.empty((lines * (n + config.bin_size),))
        c.launch("dsift_triangle_forward", x, y, work, axis, *args)
    else:
        _cpu.dsift_triangle_forward(x, y, axis, *args)
    return y


def dsift_triangle_backward(dy, axis, config=None):
    """Gradient of :func:`dsift_triangle_forward` (its transpose, edge weights included)."""
    op = "dsift_triangle_backward"
    config = _config(op, config)
    c = _Call(op, dy=dy)
    dy = _maps(op, c, "dy", dy, config)
    axis = _axis(op, axis)
    args, _, _ = _setup(op, config, dy.shape[0], dy.shape[2], dy.shape[3])
    dx = c.empty(dy.shape)
    if c.cuda:
        c.launch("dsift_triangle_backward", dy, dx, axis, *args)
    else:
        _cpu.dsift_triangle_backward(dy, dx, axis, *args)
    return dx


# -------------------------------------------------------------------- sample
def dsift_sample_forward(s, config=None):
    """Assemble descriptors from the binned maps.

    d[n, (by*num_bins + bx)*K + t, fy, fx] = (m[bx] * b) * (m[by] * b) *
    s[n, t, y0 + fy*step_y + by*b, x0 + fx*step_x + bx*b], with b = bin_size and m[i]
    the mean of VLFeat's Gaussian window over bin i (its "fast" weighting; b turns the
    unit-integral triangles of :func:`dsift_triangle_forward` into unit height).

    Args:
        s: binned maps (N, K, H, W).

    Returns:
        d: (N, D, ny, nx).
    """
    op = "dsift_sample_forward"
    config = _config(op, config)
    c = _Call(op, s=s)
    s = _maps(op, c, "s", s, config)
    args, (ny, nx), _ = _setup(op, config, s.shape[0], s.shape[2], s.shape[3])
    d = c.empty((s.shape[0], config.descriptor_size, ny, nx))
    if c.cuda:
        c.launch("dsift_sample_forward", s, d, *args)
    else:
        _cpu.dsift_sample_forward(s, d, *args)
    return d


def dsift_sample_backward(dd, s_shape, config=None):
    """Gradient of :func:`dsift_sample_forward` w.r.t. s, of shape ``s_shape`` (N, K, H, W)."""
    op = "dsift_sample_backward"
    config = _config(op, config)
    c = _Call(op, dd=dd)
    dd = c.array("dd", dd, 4)
    N, K, H, W = _shape4(s_shape, op, "s_shape")
    if K != config.orientations:
        raise ValueError(f"{op}: s_shape must have {config.orientations} channels, got {K}")
    args, (ny, nx), _ = _setup(op, config, N, H, W)
    _check_shape(op, "dd", dd, (N, config.descriptor_size, ny, nx))
    ds = c.empty((N, K, H, W))
    if c.cuda:
        c.launch("dsift_sample_backward", dd, ds, *args)
    else:
        _cpu.dsift_sample_backward(dd, ds, *args)
    return ds


# ----------------------------------------------------------------- normalize
def _descriptors(op, c, name, a, config):
    a = c.array(name, a, 4)
    if a.shape[1] != config.descriptor_size:
        raise ValueError(f"{op}: {name} must have {config.descriptor_size} channels (the "
                         f"descriptor size), got shape {tuple(a.shape)}")
    return a


def _norm_args(op, config, d_shape):
    """Native arguments for descriptor arrays: any (H, W) with this frame grid will do."""
    config = _config(op, config)
    N, _, ny, nx = d_shape
    # normalisation is per descriptor: describe the grid as an image whose
    # frames are exactly (ny, nx), with unit steps within bounds
    span = (config.num_bins - 1) * config.bin_size
    cfg = DsiftConfig(bin_size=config.bin_size, step=1, orientations=config.orientations,
                      num_bins=config.num_bins, bounds=(0, 0, nx - 1 + span, ny - 1 + span),
                      window_size=config.window_size, exact_atan2=config.exact_atan2,
                      second_l2=config.second_l2, clamp=config.clamp)
    H, W = max(ny + span, 2, config.bin_size), max(nx + span, 2, config.bin_size)
    args, grid, _ = _setup(op, cfg, N, H, W)
    if grid != (ny, nx):
        raise ValueError(f"{op}: a frame grid of {ny}x{nx} is not possible")
    return args


def dsift_normalize_forward(d, config=None):
    """Normalise each descriptor: u = d / (|d| + eps), v = min(u, clamp), y = v / (|v| + eps).

    eps = 2^-23 (VLFeat's VL_EPSILON_F) and |.| VLFeat's ``vl_fast_sqrt_f`` of the sum of
    squares (a bit trick and two Newton steps, within ~5e-6 of sqrt; 0 where the sum is
    below 1e-8), as ``vl_dsift_process`` normalises. Without ``second_l2``, y = v.
    Backward takes the fast sqrt as sqrt.

    Args:
        d: raw descriptors (N, D, ny, nx).

    Returns:
        (y, norms): y (N, D, ny, nx) and norms (N, 2, ny, nx), the |d| and |v| that
        backward needs.
    """
    op = "dsift_normalize_forward"
    config = _config(op, config)
    c = _Call(op, d=d)
    d = _descriptors(op, c, "d", d, config)
    args = _norm_args(op, config, d.shape)
    y = c.empty(d.shape)
    norms = c.empty((d.shape[0], 2, d.shape[2], d.shape[3]))
    if c.cuda:
        c.launch("dsift_normalize_forward", d, y, norms, *args)
    else:
        _cpu.dsift_normalize_forward(d, y, norms, *args)
    return y, norms


def dsift_normalize_backward(d, norms, dy, config=None):
    """Gradient of :func:`dsift_normalize_forward` w.r.t. d, from its input d and norms.

    Elements clamped in the forward (u > clamp) get no gradient; at u == clamp the
    gradient passes (VLFeat clamps only u > clamp).
    """
    op = "dsift_normalize_backward"
    config = _config(op, config)
    c = _Call(op, d=d, norms=norms, dy=dy)
    d = _descriptors(op, c, "d", d, config)
    norms = c.array("norms", norms, 4)
    dy = c.array("dy", dy, 4)
    _check_shape(op, "norms", norms, (d.shape[0], 2, d.shape[2], d.shape[3]))
    _check_shape(op, "dy", dy, d.shape)
    args = _norm_args(op, config, d.shape)
    dd = c.empty(d.shape)
    if c.cuda:
        c.launch("dsift_normalize_backward", d, norms, dy, dd, *args)
    else:
        _cpu.dsift_normalize_backward(d, norms, dy, dd, *args)
    return dd
