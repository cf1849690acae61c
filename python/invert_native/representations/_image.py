"""Input checks and conversion shared by the VLFeat-style functions :func:`hog` and :func:`dsift`."""

from __future__ import annotations

import numpy as np

from .. import _backend

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def real_array(image, fn: str, name: str):
    """``(array, xp)``: ``image`` as a NumPy (or CuPy, left on its device) array of real numbers.

    TypeError naming the argument for anything else: None, strings, bool, complex or
    object arrays, ragged sequences.
    """
    if _backend.is_cupy(image):
        arr, xp = image, _backend.array_module(image)
    else:
        xp = np
        try:
            arr = np.asarray(image)
        except (TypeError, ValueError):  # e.g. a ragged list
            arr = None
    if arr is None or arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating)
                                                    or np.issubdtype(arr.dtype, np.integer)):
        got = f"dtype {arr.dtype}" if isinstance(image, np.ndarray) or _backend.is_cupy(image) \
            else type(image).__name__
        raise TypeError(f"{fn}: {name} must be an array of real numbers (NumPy or CuPy, "
                        f"floats or integers), got {got}")
    return arr, xp


def as_float32(arr, xp, fn: str, name: str):
    """A C-contiguous float32 copy of a real array (integers keep their values).

    ValueError for finite values that float32 cannot hold (they would become Inf) and,
    after the conversion, for NaN or Inf pixels.
    """
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4 and arr.size:
        peak = float(xp.abs(arr).max())  # NaN and Inf fall to the check below
        if np.isfinite(peak) and peak > _FLOAT32_MAX:
            raise ValueError(f"{fn}: {name} has values beyond float32 range (|value| up to "
                             f"{peak:.3g} > {_FLOAT32_MAX:.3g}); the features are computed "
                             "in float32: rescale the image (VLFeat expects [0, 255])")
    out = xp.ascontiguousarray(arr, dtype=xp.float32)
    _backend.check_finite(out, f"{fn}: {name}")
    return out
