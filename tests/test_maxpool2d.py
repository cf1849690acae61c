"""max_pool2d (Caffe's ceil mode): the CPU core against a float64 NumPy reference and PyTorch.

Gradient comparisons draw tie-free inputs (a random permutation of distinct
values), where max-pool is differentiable and every implementation agrees;
the tie rule and the padding rule have their own tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import assert_close, f32, require
from invert_native import ops


# ------------------------------------------------------------------ reference
def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def caffe_pool_out(H, k, s, p):
    """Ho = ceil((H + 2p - k) / s) + 1, less one if the last window starts at or past H + p
    (that is, entirely in the bottom padding or beyond)."""
    o = math.ceil((H + 2 * p - k) / s) + 1
    if (o - 1) * s >= H + p:
        o -= 1
    return o


def ref_maxpool2d(x, kernel_size, stride=None, padding=0):
    """float64 max and first-in-row-major-order argmax over windows clipped to the image."""
    x = np.asarray(x, np.float64)
    (kh, kw) = _pair(kernel_size)
    (sh, sw) = _pair(kernel_size if stride is None else stride)
    (ph, pw) = _pair(padding)
    N, C, H, W = x.shape
    Ho, Wo = caffe_pool_out(H, kh, sh, ph), caffe_pool_out(W, kw, sw, pw)
    y = np.empty((N, C, Ho, Wo))
    argmax = np.empty((N, C, Ho, Wo), np.int64)
    for oy in range(Ho):
        y0, y1 = max(oy * sh - ph, 0), min(oy * sh - ph + kh, H)
        for ox in range(Wo):
            x0, x1 = max(ox * sw - pw, 0), min(ox * sw - pw + kw, W)
            assert y0 < y1 and x0 < x1, "every window must hold at least one image cell"
            win = x[:, :, y0:y1, x0:x1].reshape(N, C, -1)
            j = win.argmax(axis=2)  # first maximum in row-major order
            y[:, :, oy, ox] = np.take_along_axis(win, j[..., None], 2)[..., 0]
            argmax[:, :, oy, ox] = (y0 + j // (x1 - x0)) * W + x0 + j % (x1 - x0)
    return y, argmax


def ref_maxpool2d_backward(dy, argmax, x_shape):
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W))
    np.add.at(dx, (np.arange(N * C)[:, None], argmax.reshape(N * C, -1)),
              np.asarray(dy, np.float64).reshape(N * C, -1))
    return dx.reshape(x_shape)


def distinct(rng, shape):
    """Values with no ties anywhere: a permutation of evenly spaced numbers, centred on 0."""
    n = int(np.prod(shape))
    assert n < 2 ** 23
    return f32((rng.permutation(n) - n / 2).reshape(shape) / n)


# ---------------------------------------------------------------------- cases
# (id, N, C, H, W, kernel, stride, padding)
CASES = [
    ("k3s2-ceil", 2, 3, 8, 10, 3, 2, 0),       # ceil mode adds a row and a column
    ("k2s2", 2, 5, 8, 8, 2, 2, 0),
    ("k2s2-odd", 2, 5, 9, 7, 2, 2, 0),
    ("k3s2-pad1", 2, 13, 9, 11, 3, 2, 1),
    ("k3s3-pad1", 1, 3, 6, 6, 3, 3, 1),
    ("k3s1-pad1", 2, 3, 10, 10, 3, 1, 1),
    ("anisotropic", 2, 4, 5, 7, (2, 3), (2, 1), (1, 1)),
    ("k4s3-pad2", 2, 3, 11, 10, 4, 3, 2),
    ("whole-plane", 3, 1, 5, 5, 5, 1, 0),
    ("k1s1", 2, 3, 4, 5, 1, 1, 0),
    ("stride-default", 2, 5, 9, 9, 3, None, 0),
    ("stride-gt-kernel", 1, 2, 8, 8, 2, 3, 0),
    ("one-channel", 4, 1, 13, 13, 3, 2, 1),
    ("k3s2-pad1-ceil", 2, 3, 8, 10, 3, 2, 1),   # ceil mode with padding
    ("k2s2-pad1-drop", 2, 3, 5, 6, 2, 2, 1),    # the window starting in the padding is dropped
]

# CaffeNet's pools: 3x3 stride 2.
CAFFENET = [
    ("pool1", 1, 96, 55, 55, 3, 2, 0),
    ("pool1-batch2", 2, 96, 55, 55, 3, 2, 0),
    ("pool2", 1, 256, 27, 27, 3, 2, 0),
    ("pool5", 1, 256, 13, 13, 3, 2, 0),
]

ALL = CASES + CAFFENET


def ids(cases):
    return [c[0] for c in cases]


def torch_compatible(kernel, padding):
    """PyTorch requires padding <= kernel // 2."""
    return all(p <= k // 2 for k, p in zip(_pair(kernel), _pair(padding)))


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_forward_matches_numpy(rng, case):
    _, N, C, H, W, k, s, p = case
    x = distinct(rng, (N, C, H, W))
    y, argmax = ops.maxpool2d_forward(x, k, s, p)
    y_ref, argmax_ref = ref_maxpool2d(x, k, s, p)
    assert y.dtype == np.float32 and argmax.dtype == np.int64
    assert y.shape == y_ref.shape
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_array_equal(y, y_ref.astype(np.float32))  # a max is exact


@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_backward_matches_numpy(rng, case):
    _, N, C, H, W, k, s, p = case
    x = distinct(rng, (N, C, H, W))
    y, argmax = ops.maxpool2d_forward(x, k, s, p)
    dy = f32(rng.standard_normal(y.shape))
    dx = ops.maxpool2d_backward(dy, argmax, x.shape, k, s, p)
    _, argmax_ref = ref_maxpool2d(x, k, s, p)
    assert dx.dtype == np.float32 and dx.shape == x.shape
    assert_close(dx, ref_maxpool2d_backward(dy, argmax_ref, x.shape), what="dx")


@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_matches_torch_ceil_mode(rng, case):
    torch = require("torch")
    _, N, C, H, W, k, s, p = case
    if not torch_compatible(k, p):
        pytest.skip("PyTorch needs padding <= kernel_size // 2")
    x = distinct(rng, (N, C, H, W))
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    yt, it = torch.nn.functional.max_pool2d(xt, k, s, p, ceil_mode=True, return_indices=True)
    # Caffe's and PyTorch's ceil-mode sizes agree on this case
    kh, kw = _pair(k)
    sh, sw = _pair(k if s is None else s)
    ph, pw = _pair(p)
    assert tuple(yt.shape[2:]) == (caffe_pool_out(H, kh, sh, ph), caffe_pool_out(W, kw, sw, pw))
    y, argmax = ops.maxpool2d_forward(x, k, s, p)
    dy = f32(rng.standard_normal(y.shape))
    yt.backward(torch.tensor(dy.astype(np.float64)))
    dx = ops.maxpool2d_backward(dy, argmax, x.shape, k, s, p)
    assert_close(y, yt, what="y vs torch")
    np.testing.assert_array_equal(argmax, it.numpy())  # both index within the H*W plane
    assert_close(dx, xt.grad, what="dx vs torch")


# (H, kernel, stride, pad, expected Ho), worked by hand from
# Ho = ceil((H + 2p - k) / s) + 1, minus 1 if (Ho - 1) * s >= H + p.
SIZES = [
    (55, 3, 2, 0, 27),   # pool1
    (27, 3, 2, 0, 13),   # pool2
    (13, 3, 2, 0, 6),    # pool5
    (6, 3, 2, 0, 3),     # ceil mode: floor mode would give 2
    (7, 2, 2, 0, 4),     # ceil mode: floor mode would give 3
    (8, 2, 2, 0, 4),
    (5, 2, 2, 1, 3),     # ceil gives 4, but the 4th window would start in the padding
    (6, 2, 2, 1, 4),
    (7, 3, 3, 1, 3),
    (8, 2, 3, 1, 3),     # ceil gives 4, dropped: starts at 9 - 1 = 8 = H
    (10, 3, 3, 1, 4),
    (3, 3, 1, 1, 3),
    (1, 1, 1, 0, 1),
    (5, 5, 1, 0, 1),
    (4, 1, 2, 0, 2),     # stride > kernel: ceil gives 3, whose window starts at 4 = H
    (9, 2, 3, 0, 3),     # stride > kernel: ceil gives 4, whose window starts at 9 = H
    (8, 2, 3, 0, 3),
]


@pytest.mark.parametrize("H, k, s, p, expected", SIZES)
def test_caffe_output_size_formula(H, k, s, p, expected):
    assert caffe_pool_out(H, k, s, p) == expected
    x = np.zeros((1, 1, H, H + 1), np.float32)
    y, argmax = ops.maxpool2d_forward(x, k, s, p)
    assert y.shape == (1, 1, expected, caffe_pool_out(H + 1, k, s, p))
    assert argmax.shape == y.shape


@pytest.mark.parametrize("H, k, s, p, expected", [c for c in SIZES if c[3] <= c[1] // 2])
def test_output_size_agrees_with_torch_ceil_mode(H, k, s, p, expected):
    torch = require("torch")
    x = torch.zeros((1, 1, H, H))
    assert torch.nn.functional.max_pool2d(x, k, s, p, ceil_mode=True).shape[2] == expected


@pytest.mark.parametrize("H, k, s", [(4, 1, 2), (9, 2, 3), (10, 1, 3), (7, 2, 5)])
def test_stride_larger_than_kernel_windows_stay_in_the_image(rng, H, k, s):
    """No output may come from a window that holds no image cell (no reads outside the input)."""
    x = distinct(rng, (2, 3, H, H))
    y, argmax = ops.maxpool2d_forward(x, k, s, 0)
    y_ref, argmax_ref = ref_maxpool2d(x, k, s, 0)
    assert y.shape == y_ref.shape
    assert np.all((argmax >= 0) & (argmax < H * H)), "argmax points outside the H*W plane"
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_array_equal(y, y_ref.astype(np.float32))


def test_ties_go_to_the_first_maximum_in_row_major_order():
    # one 2x2 window over a 2x3 plane... each window has two equal maxima
    x = f32([[[[1, 5, 0, 2],
               [5, 3, 2, 2]]]])
    y, argmax = ops.maxpool2d_forward(x, 2, 2, 0)
    np.testing.assert_array_equal(y, f32([[[[5, 2]]]]))
    # window 0: 5 at (0,1) and (1,0) -> (0,1) = 1; window 1: 2 at (0,3),(1,2),(1,3) -> (0,3) = 3
    np.testing.assert_array_equal(argmax, [[[[1, 3]]]])
    dx = ops.maxpool2d_backward(f32([[[[10, 20]]]]), argmax, x.shape, 2, 2, 0)
    np.testing.assert_array_equal(dx, f32([[[[0, 10, 0, 20], [0, 0, 0, 0]]]]))


@pytest.mark.parametrize("k, s, p", [(3, 2, 0), (3, 2, 1), (2, 1, 0), (3, 1, 1), (4, 3, 2)])
def test_ties_on_a_constant_plane(k, s, p):
    """Every window's winner is its top-left image cell; overlapping windows add up there."""
    N, C, H, W = 2, 3, 7, 8
    x = np.full((N, C, H, W), 0.5, np.float32)
    y, argmax = ops.maxpool2d_forward(x, k, s, p)
    assert np.all(y == 0.5)
    _, argmax_ref = ref_maxpool2d(x, k, s, p)
    np.testing.assert_array_equal(argmax, argmax_ref)
    for oy in range(y.shape[2]):
        for ox in range(y.shape[3]):
            assert np.all(argmax[:, :, oy, ox] == max(oy * s - p, 0) * W + max(ox * s - p, 0))
    dy = np.ones(y.shape, np.float32)
    dx = ops.maxpool2d_backward(dy, argmax, x.shape, k, s, p)
    np.testing.assert_array_equal(dx, ref_maxpool2d_backward(dy, argmax_ref, x.shape))
    assert dx.sum() == dy.sum()


def test_ties_per_window_in_random_integer_input(rng):
    """Many ties (values from {0, 1, 2}): argmax and dx follow the first-maximum rule."""
    x = f32(rng.integers(0, 3, (2, 5, 11, 12)))
    for k, s, p in [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1)]:
        y, argmax = ops.maxpool2d_forward(x, k, s, p)
        y_ref, argmax_ref = ref_maxpool2d(x, k, s, p)
        np.testing.assert_array_equal(y, y_ref.astype(np.float32))
        np.testing.assert_array_equal(argmax, argmax_ref)
        dy = f32(rng.standard_normal(y.shape))
        dx = ops.maxpool2d_backward(dy, argmax, x.shape, k, s, p)
        assert_close(dx, ref_maxpool2d_backward(dy, argmax_ref, x.shape), what="dx")


@pytest.mark.parametrize("k, s, p", [(3, 2, 1), (3, 1, 1), (2, 2, 1), (4, 3, 2), (5, 2, 2)])
def test_padded_cells_never_win(rng, k, s, p):
    """All-negative input with padding: a zero-padded max would return 0; Caffe's never does."""
    x = f32(-1.0 - rng.random((2, 3, 7, 6)))
    y, argmax = ops.maxpool2d_forward(x, k, s, p)
    assert np.all(y < 0), "a padded cell won the max"
    H, W = x.shape[2:]
    assert np.all((argmax >= 0) & (argmax < H * W))
    planes = x.reshape(x.shape[0], x.shape[1], -1)
    np.testing.assert_array_equal(np.take_along_axis(planes, argmax.reshape(*y.shape[:2], -1), 2),
                                  y.reshape(*y.shape[:2], -1))
    y_ref, argmax_ref = ref_maxpool2d(x, k, s, p)
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_array_equal(y, y_ref.astype(np.float32))
    dy = f32(rng.standard_normal(y.shape))
    dx = ops.maxpool2d_backward(dy, argmax, x.shape, k, s, p)
    assert_close(dx, ref_maxpool2d_backward(dy, argmax_ref, x.shape), what="dx")
    assert_close(dx.sum(), dy.astype(np.float64).sum(), what="sum of dx")


def test_backward_overwrites_and_accumulates_over_overlapping_windows():
    """A cell that wins several overlapping windows receives the sum of their dy."""
    x = np.zeros((1, 1, 5, 5), np.float32)
    x[0, 0, 2, 2] = 1.0  # the centre wins all four 3x3 stride-2 windows
    y, argmax = ops.maxpool2d_forward(x, 3, 2, 0)
    assert y.shape == (1, 1, 2, 2) and np.all(argmax == 12)
    dy = f32([[[[1, 2], [3, 4]]]])
    dx = ops.maxpool2d_backward(dy, argmax, x.shape, 3, 2, 0)
    expected = np.zeros_like(x)
    expected[0, 0, 2, 2] = 10.0
    np.testing.assert_array_equal(dx, expected)


def test_nan_never_wins_unless_the_whole_window_is_nan():
    """The documented NaN rule: a NaN never wins; an all-NaN window gives NaN at its first cell."""
    nan = np.nan
    x = f32([[[[nan, 1.0, nan, nan],
               [2.0, nan, nan, nan]]]])
    y, argmax = ops.maxpool2d_forward(x, 2, 2, 0)
    assert y[0, 0, 0, 0] == 2.0 and argmax[0, 0, 0, 0] == 4
    assert np.isnan(y[0, 0, 0, 1]) and argmax[0, 0, 0, 1] == 2
