"""What HOG and DSIFT give invert() to turn a reconstruction back into pixels."""

from __future__ import annotations

from .. import _backend


class GreyLevelOffset:
    """``deprocess`` for gradient-based codes of images in [0, 255].

    HOG and dense SIFT see only differences between pixels, so a constant offset is lost,
    and the inversion's alpha-norm prior centres the reconstruction on 0 (the paper inverts
    255 * gray - 128). ``deprocess`` adds ``pixel_offset`` back, so that
    :func:`invert_native.invert` returns images in the units of the inputs: mid-grey 128 for
    images in [0, 255] (the default); set ``pixel_offset = 0`` on the instance for inputs that
    are already centred. The images are not clipped.
    """

    pixel_offset = 128.0

    def deprocess(self, x):
        """(N, C, H, W) reconstruction -> (N, H, W, C) images, ``pixel_offset`` added."""
        xp = _backend.array_module(x)
        return xp.transpose(x, (0, 2, 3, 1)) + xp.float32(self.pixel_offset)
