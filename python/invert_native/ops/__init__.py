"""Native ops with array-type dispatch: NumPy arrays run on the CPU core, CuPy arrays on the CUDA core.

Every op is a pair ``<op>_forward`` / ``<op>_backward``; backward returns the
gradient with respect to the op's input (never weight gradients: inversion does
not need them). Layout is float32 NCHW with a batch dimension N >= 1.

Input rules, the same for every op:

* Arrays must be ``numpy.ndarray`` or ``cupy.ndarray`` of dtype float32
  (``argmax``: int64); anything else raises ``TypeError``. Nothing is cast
  silently: convert with ``x.astype(np.float32)``.
* All arrays of one call must live on the same device: NumPy and CuPy arrays
  mixed in one call raise ``TypeError``; CuPy arrays on two different GPUs
  raise ``ValueError``.
* Non-contiguous arrays (slices, transposes, negative strides) are accepted
  and copied to a C-contiguous buffer first; the caller's arrays are never
  written to. Outputs are new arrays of the input's type (or, inside
  ``with reusing(workspace):``, arrays of a :class:`Workspace` reused from one pass
  of a loop to the next: how :func:`invert_native.invert` avoids allocating).
* Wrong ranks, shapes that do not agree, ``groups`` that do not divide the
  channels, kernels larger than the padded input, zero-size dimensions,
  non-positive strides, negative padding and integers beyond int64 raise
  ``ValueError`` naming the argument.
* Values are not checked for NaN/Inf here (that would cost a pass over every
  tensor). What a NaN does follows each op's arithmetic: conv2d, linear and LRN
  spread it to every output that reads it; ReLU passes it through; max-pool
  ignores it while its window holds a non-NaN value (a NaN never beats a
  number) and returns NaN only for an all-NaN window (argmax: the window's
  first cell). The public entry points that take user images check.

CUDA work is launched on CuPy's current stream of the arrays' device and is
not synchronised.
"""

from ._core import (conv2d_backward, conv2d_forward, linear_backward, linear_forward,
                    lrn_backward, lrn_forward, maxpool2d_backward, maxpool2d_forward,
                    relu_backward, relu_forward)
from ._dispatch import Workspace, reusing
from .regularisers import alpha_norm_forward, descent_step, tv_forward
from .dsift import (DsiftConfig, dsift_geometry, dsift_gradient_backward, dsift_gradient_forward,
                    dsift_normalize_backward, dsift_normalize_forward, dsift_sample_backward,
                    dsift_sample_forward, dsift_triangle_backward, dsift_triangle_forward)
from .hog import hog_cells_backward, hog_cells_forward, hog_norm_backward, hog_norm_forward

__all__ = [
    "Workspace", "reusing",
    "conv2d_forward", "conv2d_backward",
    "relu_forward", "relu_backward",
    "maxpool2d_forward", "maxpool2d_backward",
    "lrn_forward", "lrn_backward",
    "linear_forward", "linear_backward",
    "tv_forward", "alpha_norm_forward", "descent_step",
    "DsiftConfig", "dsift_geometry",
    "dsift_gradient_forward", "dsift_gradient_backward",
    "dsift_triangle_forward", "dsift_triangle_backward",
    "dsift_sample_forward", "dsift_sample_backward",
    "dsift_normalize_forward", "dsift_normalize_backward",
    "hog_cells_forward", "hog_cells_backward",
    "hog_norm_forward", "hog_norm_backward",
]
