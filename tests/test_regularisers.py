"""TV^beta and the alpha-norm: value and gradient against float64 NumPy and finite differences."""

import numpy as np
import pytest
from conftest import assert_close, require

from invert_native import ops

FLOOR = 1e-5


def tv_ref(x, beta):
    """float64 TV^beta per image, forward differences with the last one replicated (0)."""
    x = np.asarray(x, np.float64)
    d1 = np.zeros_like(x)
    d2 = np.zeros_like(x)
    d1[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    d2[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return ((d1 ** 2 + d2 ** 2) ** (beta / 2)).reshape(x.shape[0], -1).sum(axis=1)


def numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f(x).sum()
        flat[i] = old - eps
        fm = f(x).sum()
        flat[i] = old
        g.reshape(-1)[i] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("beta", [1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("shape", [(1, 1, 5, 7), (2, 3, 6, 4), (3, 2, 1, 9), (1, 3, 8, 1)])
def test_tv_matches_float64_and_finite_differences(beta, shape):
    rng = np.random.default_rng(hash((beta, shape)) % 2**32)
    x = rng.standard_normal(shape).astype(np.float32)
    value, dx = ops.tv_forward(x, beta)
    assert value.dtype == np.float64 and value.shape == (shape[0],)
    assert_close(value, tv_ref(x, beta), what="TV value")
    # random normal images keep d1^2 + d2^2 far above the floor: the gradient is exact
    x64 = x.astype(np.float64)
    assert_close(dx, numeric_grad(lambda z: tv_ref(z, beta), x64), rtol=1e-4, atol=1e-6,
                 what="TV gradient")


def test_tv_matches_torch_autograd():
    torch = require("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    for beta in (1.0, 2.0, 3.0):
        t = torch.from_numpy(x.astype(np.float64)).requires_grad_()
        d1 = torch.nn.functional.pad(t[..., :, 1:] - t[..., :, :-1], (0, 1))
        d2 = torch.nn.functional.pad(t[..., 1:, :] - t[..., :-1, :], (0, 0, 0, 1))
        v = ((d1 ** 2 + d2 ** 2) ** (beta / 2)).sum()
        v.backward()
        value, dx = ops.tv_forward(x, beta)
        assert_close(value.sum(), v.item(), what="TV value vs torch")
        assert_close(dx, t.grad, what="TV gradient vs torch")


def test_tv_floor_keeps_flat_images_finite():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 2, 2] = 1.0
    value, dx = ops.tv_forward(x, beta=1.0)
    assert np.isfinite(dx).all() and np.isfinite(value).all()
    # flat region: d = 0, the floored weight multiplies a zero difference
    assert dx[0, 0, 0, 0] == 0.0
    # terms: d1 = 1 at (2,1), d2 = 1 at (1,2), (d1, d2) = (-1, -1) at (2,2)
    assert value[0] == pytest.approx(2.0 + np.sqrt(2.0), rel=1e-6)
    # the value itself is not floored: a flat image has TV exactly 0
    assert ops.tv_forward(np.zeros((1, 1, 3, 3), np.float32), 1.0)[0][0] == 0.0


def test_tv_each_image_is_independent():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
    value, dx = ops.tv_forward(x, 2.0)
    for n in range(3):
        v1, d1 = ops.tv_forward(x[n:n + 1], 2.0)
        assert v1[0] == pytest.approx(value[n], rel=1e-12)
        np.testing.assert_array_equal(d1[0], dx[n])


@pytest.mark.parametrize("alpha", [1.0, 2.0, 6.0])
def test_alpha_norm_matches_float64_and_finite_differences(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    x[np.abs(x) < 0.05] = 0.3  # away from the kink of |x| at 0 (matters for alpha = 1)
    value, dx = ops.alpha_norm_forward(x, alpha)
    ref = lambda z: (np.abs(z) ** alpha).reshape(z.shape[0], -1).sum(axis=1)
    assert_close(value, ref(x.astype(np.float64)), what="alpha-norm value")
    assert_close(dx, numeric_grad(ref, x.astype(np.float64)), what="alpha-norm gradient")


def test_regularisers_bad_input():
    x = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="beta"):
        ops.tv_forward(x, beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        ops.tv_forward(x, beta=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        ops.alpha_norm_forward(x, alpha=0.5)
    with pytest.raises(TypeError, match="float32"):
        ops.tv_forward(x.astype(np.float64))
    with pytest.raises(ValueError, match="4 dimensions"):
        ops.tv_forward(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError):
        ops.tv_forward(np.zeros((1, 0, 3, 3), np.float32))
    y = np.ones((1, 1, 3, 3), np.float32)
    before = y.copy()
    ops.tv_forward(y[..., ::-1], 2.0)
    ops.alpha_norm_forward(y, 6.0)
    np.testing.assert_array_equal(y, before)
