"""Dense SIFT as a differentiable layer chain, numerically VLFeat 0.9.21's ``vl_dsift``.

:class:`DSIFT` is a :class:`~invert_native.nn.Sequential` of five layers (names in
brackets), each a native op with a forward and a backward-to-input:

1. ``gradient`` -- image gradient by VLFeat's differences (half central differences,
   one-sided at the image border) and bilinear binning of its angle into K = 8
   directed orientations, weighted by the gradient magnitude (:func:`ops.dsift_gradient_forward`);
2. ``bin_y``, ``bin_x`` -- bilinear spatial binning: a triangular filter of support
   2 * bin_size along each axis, image edge replicated, computed through running sums as
   VLFeat's ``vl_imconvcoltri_f`` (:func:`ops.dsift_triangle_forward`);
3. ``sample`` -- 4 x 4 bins per frame, every ``step`` pixels, each bin weighted by the
   mean of VLFeat's Gaussian window over its support: the "fast" (flat-window) mode
   of ``vl_dsift`` (:func:`ops.dsift_sample_forward`);
4. ``normalize`` -- L2, clamp at 0.2, L2 (:func:`ops.dsift_normalize_forward`).

Input and output
----------------
``DSIFT.forward(x)`` takes grey images (N, 1, H, W) float32 and returns (N, 128, ny, nx):
channel ``(by * 4 + bx) * 8 + t`` is orientation t (angle 2 pi t / 8 from +x towards +y,
y pointing down) of spatial bin (bx, by) -- VLFeat's descriptor element order -- and
(fy, fx) is the frame whose centre is pixel
``(x0 + fx * step + 1.5 * bin_size, y0 + fy * step + 1.5 * bin_size)``, 0-based
(x0 = y0 = 0 without bounds). ``ny, nx = (H - 1 - 3 * bin_size) // step + 1, ...``.

Pixel range: VLFeat takes any float image; descriptors are invariant to adding a
constant and (up to two tiny floors) to scaling the pixels. The floors are VLFeat's:
a gradient whose squared magnitude is below 1e-8 counts as 0, and descriptor norms get
2^-23 added. Use [0, 255] (or the paper's 255 * gray - 128), where the floors matter only
in near-flat regions; MATLAB users who pass ``im2single`` images in [0, 1] get the same
descriptors except where the gradient is below 1e-4 grey levels per pixel. Either way the
chain gives VLFeat's descriptors (see below).

Where this differs from VLFeat, and why
---------------------------------------
The forward repeats ``vl_dsift_process``'s float operations one by one: its gradient
stencil, its fast ``vl_fast_atan2_f`` and bit-trick ``vl_fast_sqrt_f`` (with its zero below
1e-8), the angle quantised in double, the triangular filter computed as
``vl_imconvcoltri_f`` does (running sums along whole columns and rows), the window weights
``(mean * bin_size)`` and both normalisations with their floors, all without fused
multiply-adds. Against libvl the descriptors are bit-identical: measured on the
scikit-image photos at full size ([0, 255] and [0, 1] pixels), crops, bounds and synthetic
edges. That matters beyond the last digit: VLFeat's running sums round relative to the
whole line, and where a descriptor's norm is tiny (dark or low-contrast regions, [0, 1]
images) its floor and eps turn any other summation order into O(1) differences (a direct
sum of the taps was 1e-2 to 4e-2 off per image on such images). What differs:

* Backward differentiates the smooth functions the forward evaluates: the fast atan2 is a
  rational function of (gx, |gy|) whose two branches join with equal slope, so backward
  uses its exact derivative; the fast sqrt (within ~5e-6 of sqrt) counts as sqrt; the
  running sums count as the triangular filter they compute (backward is its transpose).
* ``exact_atan2=True`` uses ``atan2f`` instead of the fast atan2 (off by up to ~6e-3 rad),
  so descriptors then differ from VLFeat's by about 5e-3 relative L2 per image (up to
  ~1.5e-2 per component).
* Only the flat window (``fast=True``) is implemented. VLFeat's default Gaussian window
  gives every bin its own spatial kernel, so the binned maps could not be shared between
  frames; ``fast=False`` raises NotImplementedError.
* VLFeat's C library applies no contrast threshold: where the image is flat the
  descriptor is all zeros (0 / eps); so does the chain. (MATLAB's ``vl_phow`` zeroes
  low-contrast descriptors itself; that is not part of ``vl_dsift``.)
* Gradients at kinks: at a pixel whose gradient is below the 1e-8 floor the gradient is 0;
  clamped descriptor entries (u > 0.2) pass no gradient, entries at exactly 0.2 do. The
  bilinear orientation weights have kinks at the bin centres (one-sided slopes; the one of
  the bin the angle floors to is used).

The paper's Table 1 network (Mahendran & Vedaldi) used bin size 5, a descriptor every
3 bins (step 15) and no second L2 normalisation: :meth:`DSIFT.table1`.
"""

from __future__ import annotations

import numpy as np

from .. import _backend, ops
from ..invert import SHALLOW_LAMBDA_TV, SHALLOW_SCHEDULE, code_lambda_alpha
from ..nn import Layer, Sequential
from ..ops.dsift import DsiftConfig, dsift_geometry
from ._image import as_float32, real_array
from ._pixels import GreyLevelOffset

__all__ = ["DSIFT", "dsift"]


class _DsiftLayer(Layer):
    def __init__(self, config: DsiftConfig):
        super().__init__()
        self.config = config

    def __repr__(self):
        return f"{type(self).__name__}()"


class DsiftGradient(_DsiftLayer):
    """Gradient + bilinear orientation binning: (N, 1, H, W) -> (N, K, H, W)."""

    def forward(self, x):
        h = ops.dsift_gradient_forward(x, self.config)
        self._cache = x
        return h

    def backward(self, dy):
        return ops.dsift_gradient_backward(self._cached(), dy, self.config)


class DsiftTriangle(_DsiftLayer):
    """Triangular spatial filter along axis 2 (H) or 3 (W)."""

    def __init__(self, config: DsiftConfig, axis: int):
        super().__init__(config)
        self.axis = axis

    def forward(self, x):
        y = ops.dsift_triangle_forward(x, self.axis, self.config)
        self._cache = True
        return y

    def backward(self, dy):
        self._cached()
        return ops.dsift_triangle_backward(dy, self.axis, self.config)

    def __repr__(self):
        return f"DsiftTriangle(axis={self.axis}, bin_size={self.config.bin_size})"


class DsiftSample(_DsiftLayer):
    """Bins -> descriptors: (N, K, H, W) -> (N, D, ny, nx)."""

    def forward(self, s):
        d = ops.dsift_sample_forward(s, self.config)
        self._cache = tuple(s.shape)
        return d

    def backward(self, dy):
        return ops.dsift_sample_backward(dy, self._cached(), self.config)


class DsiftNormalize(_DsiftLayer):
    """L2, clamp, L2 of each descriptor (N, D, ny, nx)."""

    def forward(self, d):
        y, norms = ops.dsift_normalize_forward(d, self.config)
        self._cache = (d, norms)
        return y

    def backward(self, dy):
        d, norms = self._cached()
        return ops.dsift_normalize_backward(d, norms, dy, self.config)


class DSIFT(GreyLevelOffset, Sequential):
    """Dense SIFT (VLFeat ``vl_dsift``, flat "fast" window) as a layer chain.

    Args:
        bin_size: pixels per spatial bin (VLFeat ``binSize``, MATLAB ``'Size'``).
        step: frame step in pixels, an int or an (x, y) pair; default ``bin_size``.
        fast: must be True (the flat window; see the module documentation).
        orientations: orientation bins (8). With 1, as in libvl, the channel holds the
            magnitude times the angle's fraction of a turn (VLFeat stores the bilinear
            shares (1 - frac) and frac to bin 0 in turn, the second overwriting the first).
        num_bins: spatial bins per side (4); the descriptor has
            ``orientations * num_bins**2`` = 128 dimensions.
        bounds: ``(xmin, ymin, xmax, ymax)``, 0-based inclusive pixels, or None; clamped
            to the image as MATLAB's ``vl_dsift`` does.
        window_size: VLFeat's Gaussian window size in bins (2.0).
        second_l2: normalise again after the clamp (VLFeat: True; paper Table 1: False).
        clamp: clamp after the first normalisation (0.2).
        exact_atan2: atan2 instead of VLFeat's fast approximation.

    ``forward(x)``: x (N, 1, H, W) float32 (NumPy or CuPy) -> (N, 128, ny, nx); see the
    module documentation for the layout. ``backward(dy)`` -> dx (N, 1, H, W).
    """

    def __init__(self, bin_size=8, step=None, fast=True, *, orientations=8, num_bins=4,
                 bounds=None, window_size=2.0, second_l2=True, clamp=0.2, exact_atan2=False):
        if not fast:
            raise NotImplementedError(
                "DSIFT: only the flat window (fast=True) is implemented; VLFeat's Gaussian "
                "window gives each spatial bin its own kernel")
        config = DsiftConfig(bin_size=bin_size, step=bin_size if step is None else step,
                             orientations=orientations, num_bins=num_bins, bounds=bounds,
                             window_size=window_size, exact_atan2=exact_atan2,
                             second_l2=second_l2, clamp=clamp)
        # validate now rather than at the first forward (the frame grid needs the image size)
        K, nbin, b, sx, sy = config.hyper("DSIFT")[:5]
        for name, v in (("orientations", K), ("num_bins", nbin), ("bin_size", b), ("step", sx),
                        ("step", sy)):
            if v <= 0:
                raise ValueError(f"DSIFT: {name} must be positive, got {v}")
        if config.window_size <= 0 or config.clamp <= 0:
            raise ValueError("DSIFT: window_size and clamp must be positive")
        self.config = config
        super().__init__([
            ("gradient", DsiftGradient(config)),
            ("bin_y", DsiftTriangle(config, 2)),
            ("bin_x", DsiftTriangle(config, 3)),
            ("sample", DsiftSample(config)),
            ("normalize", DsiftNormalize(config)),
        ])

    # What invert() uses when not told otherwise: the authors' Table 1 settings, i.e.
    # lambda_alpha of their code at this image scale (2.16e8 at 227x227x3, see
    # code_lambda_alpha), lambda_V = SHALLOW_LAMBDA_TV, beta = 2, and the schedule
    # 0.004 x [1, 0.1, 0.01, 0.001] for 200 iterations each.
    paper_schedule = SHALLOW_SCHEDULE

    @staticmethod
    def paper_lambdas(sigma):
        return code_lambda_alpha(sigma), SHALLOW_LAMBDA_TV

    @classmethod
    def table1(cls, **kwargs) -> "DSIFT":
        """The paper's Table 1 network: bin size 5, a descriptor every 3 bins, one L2."""
        args = dict(bin_size=5, step=15, second_l2=False)
        args.update(kwargs)
        return cls(**args)

    @property
    def descriptor_size(self) -> int:
        return self.config.descriptor_size

    def output_shape(self, x_shape):
        """(N, D, ny, nx) for an input of shape (N, 1, H, W)."""
        N, _, H, W = x_shape
        ny, nx, _, _ = dsift_geometry(self.config, H, W)
        return (N, self.descriptor_size, ny, nx)

    def frames(self, H: int, W: int) -> np.ndarray:
        """Frame centres (ny * nx, 2) as (x, y), 0-based, in the order of the output's
        flattened (fy, fx) -- the order and values of ``vl_dsift_get_keypoints``."""
        ny, nx, x0, y0 = dsift_geometry(self.config, H, W)
        sx, sy = (self.config.step, self.config.step) if np.isscalar(self.config.step) \
            else self.config.step
        half = 0.5 * self.config.bin_size * (self.config.num_bins - 1)
        fy, fx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        return np.stack([x0 + fx.ravel() * sx + half, y0 + fy.ravel() * sy + half],
                        axis=1).astype(np.float64)

    def _run(self, x, stop):
        if stop > 0 and (isinstance(x, np.ndarray) or _backend.is_cupy(x)):
            if x.ndim != 4 or x.shape[1] != 1:
                raise ValueError(
                    f"DSIFT: x must be grey images (N, 1, H, W), got shape {tuple(x.shape)}; "
                    "convert colour to grey first (e.g. 0.299 R + 0.587 G + 0.114 B)")
            if x.dtype == np.float32:
                _backend.check_finite(x, "DSIFT: x")
        return super()._run(x, stop)

    def __repr__(self):
        c = self.config
        return (f"DSIFT(bin_size={c.bin_size}, step={c.step}, orientations={c.orientations}, "
                f"num_bins={c.num_bins}, second_l2={c.second_l2}, exact_atan2={c.exact_atan2})")


def dsift(gray, step=1, bin_size=3, fast=True, *, bounds=None, window_size=2.0,
          exact_atan2=False):
    """Dense SIFT of one grey image, shaped as VLFeat returns it.

    Args:
        gray: (H, W) image (or (H, W, 1)), NumPy or CuPy. Floats are used as float32;
            integer images (e.g. uint8 in [0, 255]) are converted to float32 with their
            values unchanged. Colour images are refused: convert them to grey first,
            e.g. ``gray = rgb @ [0.299, 0.587, 0.114]`` (values stay in [0, 255]).
        step, bin_size: VLFeat's ``Step`` and ``Size`` (MATLAB ``vl_dsift`` defaults 1, 3).
        fast: must be True: VLFeat's flat window (MATLAB ``'Fast'``).
        bounds: ``(xmin, ymin, xmax, ymax)``, 0-based inclusive, or None. Bounds reaching
            past the image are clamped to it, as MATLAB's ``vl_dsift`` does.
        window_size: VLFeat's ``WindowSize`` (2.0).
        exact_atan2: atan2 instead of VLFeat's fast approximation.

    Returns:
        (frames, descriptors): frames (K, 2) float64, the (x, y) centre of each frame in
        0-based pixel coordinates (``vl_dsift_get_keypoints``; MATLAB's ``vl_dsift`` adds 1);
        descriptors (K, 128) float32, one row per frame in the same order (frames by rows of
        the grid, x fastest), elements in the C library's order (orientation fastest, then
        bin x, then bin y), L2-normalised, clamped at 0.2, L2-normalised again (MATLAB
        returns them reordered for its column-major images, and scaled to uint8 unless
        ``'FloatDescriptors'``). Both are NumPy arrays for NumPy input, and CuPy for CuPy.

    Raises:
        ValueError: a colour or otherwise wrongly shaped image, NaN or Inf pixels, values
            beyond float32 range, or an image (bounds) too small for one descriptor.
        TypeError: ``gray`` is not an array of real numbers (None, a string, bool,
            complex or object dtypes).
    """
    gray, xp = real_array(gray, "dsift", "gray")
    if gray.ndim == 3 and gray.shape[2] == 1:
        gray = gray[:, :, 0]
    if gray.ndim != 2:
        raise ValueError(
            f"dsift: expected a grey image (H, W), got shape {tuple(gray.shape)}; convert colour "
            "images to grey first, e.g. gray = rgb @ [0.299, 0.587, 0.114]")
    x = as_float32(gray, xp, "dsift", "the image")[None, None]
    net = DSIFT(bin_size=bin_size, step=step, fast=fast, bounds=bounds, window_size=window_size,
                exact_atan2=exact_atan2)
    y = net.forward(x)
    frames = net.frames(gray.shape[0], gray.shape[1])
    descriptors = y[0].reshape(y.shape[1], -1).T.copy()
    if xp is not np:
        frames = xp.asarray(frames)
    return frames, descriptors
