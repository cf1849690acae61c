"""ReLU: the CPU core against a float64 NumPy reference and PyTorch autograd."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close, f32, require
from invert_native import ops


def ref_relu_forward(x):
    x = np.asarray(x, np.float64)
    return np.where(x > 0, x, 0.0)


def ref_relu_backward(x, dy):
    """dx = dy where x > 0; the gradient at exactly 0 is 0."""
    return np.where(np.asarray(x) > 0, np.asarray(dy, np.float64), 0.0)


def away_from_zero(rng, shape, margin=1e-2):
    """Normal samples pushed at least `margin` away from the kink at 0."""
    z = rng.standard_normal(shape)
    return f32(np.sign(z) * (np.abs(z) + margin) + (z == 0) * margin)


SHAPES = [
    (1,), (7,), (13, 5), (2, 3, 5, 7), (3, 13, 11, 9), (2, 5, 1, 1), (1, 1, 1, 1),
    (4, 16, 8, 8), (1, 96, 55, 55), (8, 4096), (2, 3, 4, 5, 6),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_backward_match_numpy(rng, shape):
    x = away_from_zero(rng, shape)
    dy = f32(rng.standard_normal(shape))
    y = ops.relu_forward(x)
    dx = ops.relu_backward(x, dy)
    assert y.shape == x.shape and y.dtype == np.float32
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert_close(y, ref_relu_forward(x), what="y")
    assert_close(dx, ref_relu_backward(x, dy), what="dx")
    # ReLU is exact in float32: no rounding at all
    np.testing.assert_array_equal(y, np.maximum(x, 0))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_torch_autograd(rng, shape):
    torch = require("torch")
    x = away_from_zero(rng, shape)
    dy = f32(rng.standard_normal(shape))
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    yt = torch.nn.functional.relu(xt)
    yt.backward(torch.tensor(dy.astype(np.float64)))
    assert_close(ops.relu_forward(x), yt, what="y vs torch")
    assert_close(ops.relu_backward(x, dy), xt.grad, what="dx vs torch")


def test_gradient_at_the_kink_is_zero():
    x = f32([[0.0, -0.0, 1e-30, -1e-30, 2.0, -2.0]])
    dy = f32([[5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    np.testing.assert_array_equal(ops.relu_forward(x), f32([[0, 0, 1e-30, 0, 2, 0]]))
    np.testing.assert_array_equal(ops.relu_backward(x, dy), f32([[0, 0, 5, 0, 5, 0]]))


def test_forward_never_returns_negative_zero():
    y = ops.relu_forward(f32([-0.0, -1.0, 0.0]))
    assert not np.any(np.signbit(y))


def test_nan_propagates_through_forward():
    """ops: 'Values are not checked for NaN/Inf here; NaNs propagate' (as in Caffe and PyTorch)."""
    y = ops.relu_forward(f32([np.nan, 1.0, -1.0]))
    assert np.isnan(y[0]), f"relu_forward(NaN) returned {y[0]!r}, expected NaN"
    np.testing.assert_array_equal(y[1:], f32([1.0, 0.0]))


def test_infinities():
    y = ops.relu_forward(f32([np.inf, -np.inf]))
    np.testing.assert_array_equal(y, f32([np.inf, 0.0]))


def test_zero_dimensional_array():
    x = np.array(3.0, dtype=np.float32)
    y = ops.relu_forward(x)
    assert y.shape == () and y == 3.0
    assert ops.relu_backward(x, np.array(2.0, dtype=np.float32)) == 2.0
