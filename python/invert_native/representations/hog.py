"""HOG (and the paper's HOGb) as a differentiable layer chain, numerically VLFeat 0.9.21's ``vl_hog``.

:class:`HOG` is a :class:`~invert_native.nn.Sequential` of two layers, each a
native op with a forward and a backward-to-input:

1. ``cells`` (:func:`ops.hog_cells_forward`) -- the image gradient, orientation
   binning and spatial pooling, fused:

   * gradient: ``[-1 0 1]`` central differences along x and y (no 1/2), on
     interior pixels only (the one-pixel border has none); for colour images,
     at each pixel the channel with the largest ``gx^2 + gy^2`` is used (the
     first on ties);
   * orientation binning into K = 2 * O directed orientations, bin ``b`` at the
     angle ``b * pi / O`` measured from +x towards +y, y pointing down (so
     clockwise on screen). ``hard``: all of ``|g|`` to the nearest bin (an exact
     tie between two bins, e.g. a vertical gradient with O = 9, goes to the bin
     of lower axis index ``b mod O``, as in VLFeat); ``bilinear`` (HOGb, VLFeat's
     ``vl_hog_set_use_bilinear_orientation_assignments``): ``|g|`` split
     linearly in angle between the two nearest bins, the angle to the nearest
     as VLFeat computes it (``acos``); ``relu``: the paper's
     approximation ``max(0, <g, u_b> - a |g|) / (1 - a)``, ``a = cos(pi / O)``
     (not in VLFeat; scaled so that a gradient on a bin centre gives ``|g|``);
   * pooling: pixel ``x`` sits at ``(x + 0.5) / cell - 0.5`` in cell units and
     is split linearly between the two nearest cells (the triangular kernel
     ``1 - |t| / cell``); the grid has ``(H + cell // 2) // cell`` by
     ``(W + cell // 2) // cell`` cells.

2. ``norm`` (:func:`ops.hog_norm_forward`) -- VLFeat's block normalisation:
   each cell has four factors ``f_i = 1 / sqrt(E_i + 1e-4)``, one per 2 x 2
   block around it (up-left, up-right, down-left, down-right; blocks that
   stick out of the grid repeat the edge cells), ``E_i`` the block's sum of
   squared undirected histograms ``u_k = h_k + h_{k+O}``. Then

   * ``uoctti`` (D = 3 O + 4 = 31): dims ``0 .. 2O-1`` directed
     ``0.5 * sum_i min(0.2, f_i h_k)``; dims ``2O .. 3O-1`` undirected, the same
     on ``u_k``; dims ``3O + i`` texture, ``sum_k min(0.2, f_i u_k) / sqrt(18)``
     (VLFeat's constant 18, whatever O). ``texture=False`` drops the texture
     dims: the paper's 27-dimensional HOG.
   * ``dalaltriggs`` (D = 4 O = 36): dim ``i * O + k`` = ``min(0.2, f_i u_k)``,
     block ``i`` in the order up-left, up-right, down-left, down-right. (This is
     VLFeat's "Dalal-Triggs": undirected histograms, each block's factor, no
     renormalisation after the clamp.)

Input and output
----------------
``HOG.forward(x)``: x (N, C, H, W) float32, NumPy or CuPy, C = 1 (grey) or 3
(colour), pixel values in [0, 255] as VLFeat expects: the 1e-4 in the block
factor makes features depend (slightly) on the pixel scale, so [0, 1] images
give different features. Returns (N, D, h, w), channel d being VLFeat's
feature dimension d (``vl_hog_extract`` stores exactly this, per image, as a
planar D x h x w array). ``backward(dy)`` returns dx (N, C, H, W).

Where the chain differs from VLFeat, and why
--------------------------------------------
The forward computes what VLFeat 0.9.21's ``vl_hog_put_image`` computes, operation for
operation where bins and channels are chosen: the orientation scan scores the raw
gradient ``gx * cos + gy * sin`` per axis in float, without fused multiply-adds (built
with ``-ffp-contract=off`` / ``--fmad=false``), both scores start at -1 (so with
``orientations=1`` a vertical gradient goes to bin 0, as in VLFeat) and bilinear binning
takes VLFeat's ``acosf(min(s / |g|, 1)) / (pi / O)`` in its mixed float/double
arithmetic. Measured against libvl on scikit-image's photos, crops of every size, O = 1
to 32 and synthetic ramps and edges (bin-centre ramps included): relative L2 error per
image below 1e-6 for hard and bilinear binning alike. What remains:

* Arithmetic after the binning is float32 throughout; VLFeat computes the block
  factors and the clamped sums in double (the ~1e-7 above).
* Bilinear binning's backward differentiates the exact angle between the gradient and
  its nearest bin (``atan2(|u x g|, <u, g>)``), not VLFeat's ``acos``: acos has an
  infinite slope at a bin centre and loses accuracy near it (float rounding ``e``
  becomes an angle error of ``sqrt(2 e)``, ~3e-4 rad), so the forward (VLFeat's value)
  and the backward (the smooth function it approximates) differ by that rounding.
* On the GPU, ``acosf`` is CUDA's (within 2 ulp of glibc's): HOGb features may differ
  from the CPU's in the last bits.
* With ``orientations=1`` there is a single axis: VLFeat's scan gives only one bin, so
  bilinear binning puts ``(1 - angle / pi) |g|`` in it and drops the rest; the chain
  does the same.
* Gradients of the kinks (chosen sub-gradients): hard binning passes the
  gradient through ``|g|`` only (the bin choice is piecewise constant), the
  channel selection to the selected channel only, and a pixel with ``g = 0``
  passes none; bilinear binning has a kink on each bin centre (the slope of
  the side VLFeat assigns the second bin to is used); the clamp
  ``min(0.2, v)`` passes the gradient where ``v <= 0.2``.
* ``binning="relu"`` is the paper's ReLU approximation; VLFeat has no such option.
"""

from __future__ import annotations

import numpy as np

from .. import _backend, ops
from ..invert import SHALLOW_LAMBDA_TV, SHALLOW_SCHEDULE, code_lambda_alpha
from ..nn import Layer, Sequential
from ._image import as_float32, real_array
from ._pixels import GreyLevelOffset

__all__ = ["HOG", "hog"]


class HogCells(Layer):
    """Gradient + orientation binning + cell pooling: (N, C, H, W) -> (N, 2*O, h, w)."""

    def __init__(self, cell_size=8, orientations=9, binning="hard"):
        super().__init__()
        self.cell_size, self.orientations, self.binning = cell_size, orientations, binning

    def forward(self, x):
        hist, pix, assign = ops.hog_cells_forward(x, self.cell_size, self.orientations,
                                                  self.binning)
        self._cache = (tuple(x.shape), pix, assign)
        return hist

    def backward(self, dy):
        x_shape, pix, assign = self._cached()
        return ops.hog_cells_backward(dy, pix, assign, x_shape, self.cell_size,
                                      self.orientations, self.binning, _trusted=True)

    def __repr__(self):
        return (f"HogCells(cell_size={self.cell_size}, orientations={self.orientations}, "
                f"binning={self.binning!r})")


class HogNorm(Layer):
    """Block normalisation, clamp and projection: (N, 2*O, h, w) -> (N, D, h, w)."""

    def __init__(self, variant="uoctti", texture=True):
        super().__init__()
        self.variant, self.texture = variant, texture

    def forward(self, hist):
        y, blocks = ops.hog_norm_forward(hist, self.variant, self.texture)
        self._cache = (hist, blocks)
        return y

    def backward(self, dy):
        hist, blocks = self._cached()
        return ops.hog_norm_backward(hist, blocks, dy, self.variant, self.texture)

    def __repr__(self):
        return f"HogNorm(variant={self.variant!r}, texture={self.texture})"


class HOG(GreyLevelOffset, Sequential):
    """HOG features (VLFeat ``vl_hog``) as a two-layer chain; see the module documentation.

    Args:
        cell_size: cell side in pixels (8).
        orientations: O undirected orientations (9), 2*O directed bins; 1..32.
        variant: ``"uoctti"`` (D = 3 O + 4) or ``"dalaltriggs"`` (D = 4 O).
        bilinear: bilinear orientation assignment (the paper's HOGb) instead of hard.
        texture: keep UoCTTI's 4 texture dims; False gives the paper's 27-D HOG.
        binning: overrides ``bilinear``: ``"hard"``, ``"bilinear"`` or ``"relu"`` (the
            paper's ReLU approximation of the binning).

    ``forward(x)``: (N, C, H, W) float32 in [0, 255], C = 1 or 3 -> (N, D, h, w), with
    ``h = (H + cell_size // 2) // cell_size`` (likewise w); h and w must be >= 2.
    ``backward(dy)`` -> dx (N, C, H, W). Raises ValueError on non-finite pixels.
    """

    def __init__(self, cell_size=8, orientations=9, variant="uoctti", bilinear=False,
                 texture=True, *, binning=None):
        if binning is None:
            binning = "bilinear" if bilinear else "hard"
        elif bilinear and binning != "bilinear":
            raise ValueError(f"HOG: bilinear=True contradicts binning={binning!r}")
        if binning not in ops.hog.BINNINGS:
            raise ValueError(f"HOG: binning must be 'hard', 'bilinear' or 'relu', got {binning!r}")
        if variant not in ops.hog.VARIANTS:
            raise ValueError(f"HOG: variant must be 'uoctti' or 'dalaltriggs', got {variant!r}")
        if not isinstance(texture, (bool, np.bool_)):
            raise TypeError(f"HOG: texture must be a bool, got {texture!r}")
        if variant == "dalaltriggs" and not texture:
            raise ValueError("HOG: texture=False applies to the UoCTTI variant only "
                             "(Dalal-Triggs has no texture dims)")
        for name, v, hi in (("cell_size", cell_size, None), ("orientations", orientations, 32)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"HOG: {name} must be an integer, got {v!r}")
            if v < 1 or (hi is not None and v > hi):
                raise ValueError(f"HOG: {name} must be in [1, {hi or 'inf'}], got {v}")
        self.cell_size, self.orientations = int(cell_size), int(orientations)
        self.variant, self.binning, self.texture = variant, binning, bool(texture)
        super().__init__([
            ("cells", HogCells(self.cell_size, self.orientations, binning)),
            ("norm", HogNorm(variant, self.texture)),
        ])

    @property
    def dimension(self) -> int:
        """Features per cell (D)."""
        O = self.orientations
        if self.variant == "dalaltriggs":
            return 4 * O
        return 3 * O + (4 if self.texture else 0)

    def output_shape(self, x_shape):
        """(N, D, h, w) for an input of shape (N, C, H, W)."""
        N, _, H, W = x_shape
        c = self.cell_size
        return (N, self.dimension, (H + c // 2) // c, (W + c // 2) // c)

    def _run(self, x, stop):
        if stop > 0 and (isinstance(x, np.ndarray) or _backend.is_cupy(x)):
            if x.ndim != 4 or x.shape[1] not in (1, 3):
                raise ValueError(f"HOG: x must be images (N, C, H, W) with C = 1 or 3, got "
                                 f"shape {tuple(x.shape)}")
            if x.dtype == np.float32:  # other dtypes: ops raises TypeError
                _backend.check_finite(x, "HOG: x")
        return super()._run(x, stop)

    # What invert() uses when not told otherwise: the authors' Table 1 settings, i.e.
    # lambda_alpha of their code at this image scale (2.16e8 at 227x227x3, see
    # code_lambda_alpha), lambda_V = SHALLOW_LAMBDA_TV, beta = 2, and the schedule
    # 0.004 x [1, 0.1, 0.01, 0.001] for 200 iterations each.
    paper_schedule = SHALLOW_SCHEDULE

    @staticmethod
    def paper_lambdas(sigma):
        return code_lambda_alpha(sigma), SHALLOW_LAMBDA_TV

    def __repr__(self):
        return (f"HOG(cell_size={self.cell_size}, orientations={self.orientations}, "
                f"variant={self.variant!r}, binning={self.binning!r}, texture={self.texture})")


def hog(image, cell_size=8, variant="uoctti", bilinear=False, texture=True, *, orientations=9,
        binning=None):
    """HOG of one image, shaped as VLFeat's MATLAB ``vl_hog`` returns it: (h, w, D).

    Args:
        image: (H, W) grey or (H, W, 3) colour image, values in [0, 255] (NumPy or
            CuPy). Floats are used as float32; integer images (e.g. uint8) are
            converted to float32 with their values unchanged. (H, W, 1) is grey.
        cell_size, variant, bilinear, texture, orientations, binning: as :class:`HOG`.

    Returns:
        float32 array (h, w, D), ``h = (H + cell_size // 2) // cell_size`` (likewise w):
        ``out[y, x, d]`` is feature d of the cell in row y, column x (D = 31 for UoCTTI
        with 9 orientations, 27 without texture, 36 for Dalal-Triggs).

    Raises:
        ValueError: wrong shape or channel count, non-finite pixels, values beyond
            float32 range, or fewer than 2 x 2 cells. TypeError: an image that is not an
            array of real numbers (None, a string, bool, complex or object dtypes).
    """
    image, xp = real_array(image, "hog", "image")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"hog: expected an (H, W) grey or (H, W, 3) colour image, got shape "
                         f"{tuple(image.shape)}")
    planes = image[None, :, :] if image.ndim == 2 else image.transpose(2, 0, 1)
    x = as_float32(planes, xp, "hog", "the image")[None]
    net = HOG(cell_size, orientations, variant, bilinear, texture, binning=binning)
    y = net.forward(x)
    return xp.ascontiguousarray(y[0].transpose(1, 2, 0))
