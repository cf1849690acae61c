"""TV^beta and the alpha-norm: value and gradient against float64 NumPy and finite differences."""

import numpy as np
import pytest
from conftest import assert_close, require

from invert_native import ops

FLOOR = 1e-5  # the op's default


def tv_ref(x, beta, floor=0.0):
    """float64 TV^beta per image, forward differences with the last one replicated (0).

    With floor > 0 and beta < 2, terms whose d1^2 + d2^2 = v is below the floor are the
    tangent in v at the floor, the op's smoothing: floor^(b/2) + (b/2) floor^(b/2-1) (v - floor).
    """
    x = np.asarray(x, np.float64)
    d1 = np.zeros_like(x)
    d2 = np.zeros_like(x)
    d1[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    d2[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    v = d1 ** 2 + d2 ** 2
    f = v ** (beta / 2)
    if beta < 2 and floor > 0:
        tangent = floor ** (beta / 2) + (beta / 2) * floor ** (beta / 2 - 1) * (v - floor)
        f = np.where(v < floor, tangent, f)
    return f.reshape(x.shape[0], -1).sum(axis=1)


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
    # at unit scale only the always-flat last row/column pixels meet the floor
    assert_close(value, tv_ref(x, beta, FLOOR), what="TV value")
    x64 = x.astype(np.float64)
    assert_close(dx, numeric_grad(lambda z: tv_ref(z, beta, FLOOR), x64), rtol=1e-4, atol=1e-6,
                 what="TV gradient")


@pytest.mark.parametrize("beta", [1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("shape", [(2, 3, 6, 5), (1, 1, 1, 9)])
def test_tv_at_small_scale(beta, shape):
    """x ~ 1e-3: squared differences ~ 1e-6, under the default floor of 1e-5."""
    rng = np.random.default_rng(int(beta * 10) + shape[0])
    x = (rng.standard_normal(shape) * 1e-3).astype(np.float32)
    x64 = x.astype(np.float64)
    eps = 1e-9
    # with the default floor, most terms are smoothed: value and gradient are still those
    # of one function (and for beta >= 2 nothing is floored at all)
    value, dx = ops.tv_forward(x, beta)
    assert_close(value, tv_ref(x64, beta, FLOOR), what="TV value, floored")
    assert_close(dx, numeric_grad(lambda z: tv_ref(z, beta, FLOOR), x64, eps), rtol=1e-4,
                 atol=0.0, what="TV gradient, floored")
    if beta < 2:
        assert not np.allclose(value, tv_ref(x64, beta), rtol=1e-2)  # the floor binds here
    # with a floor far below the squared differences (as invert passes in the scaled
    # variable), TV^beta and its gradient are the exact ones
    value, dx = ops.tv_forward(x, beta, floor=1e-14)
    assert_close(value, tv_ref(x64, beta), what="TV value, small floor")
    assert_close(dx, numeric_grad(lambda z: tv_ref(z, beta), x64, eps), rtol=1e-4, atol=0.0,
                 what="TV gradient, small floor")


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
        # a floor far below every difference but the corners' (always 0): the exact TV
        value, dx = ops.tv_forward(x, beta, floor=1e-12)
        assert_close(value.sum(), v.item(), what="TV value vs torch")
        assert_close(dx, t.grad, what="TV gradient vs torch")


def test_tv_floor_applies_below_beta_2_only():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 2, 2] = 1.0
    value, dx = ops.tv_forward(x, beta=1.0)
    assert np.isfinite(dx).all() and np.isfinite(value).all()
    # flat region: d = 0, the floored weight multiplies a zero difference
    assert dx[0, 0, 0, 0] == 0.0
    # terms: d1 = 1 at (2,1), d2 = 1 at (1,2), (d1, d2) = (-1, -1) at (2,2); the 13 flat
    # pixels each give the tangent's value at 0, (1 - beta/2) floor^(beta/2)
    flat = 0.5 * np.sqrt(FLOOR)
    assert value[0] == pytest.approx(2.0 + np.sqrt(2.0) + 13 * flat, rel=1e-6)
    assert ops.tv_forward(np.zeros((1, 1, 3, 3), np.float32), 1.0)[0][0] == pytest.approx(9 * flat)
    # beta >= 2: no floor at all, whatever its value
    rng = np.random.default_rng(4)
    y = (rng.standard_normal((1, 2, 6, 6)) * 1e-3).astype(np.float32)
    for beta in (2.0, 3.0):
        v1, g1 = ops.tv_forward(y, beta, floor=1e-5)
        v2, g2 = ops.tv_forward(y, beta, floor=1e30)
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(g1, g2)
    with pytest.raises(ValueError, match="floor"):
        ops.tv_forward(y, 1.0, floor=1e-40)  # a float32 subnormal
    with pytest.raises(ValueError, match="floor"):
        ops.tv_forward(y, 1.0, floor=0.0)


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


# ------------------------------------------------------------------ descent step
def _numpy_step(x, mu, gd, ga, gt, sigma, la, lt, rate, m):
    """The NumPy form the fused step replaced, operation for operation in float32."""
    f = np.float32
    x, mu, g = x.copy(), mu.copy(), gd * f(sigma)
    g += ga * f(la)
    g += gt * f(lt)
    mu *= f(m)
    mu -= g * f(rate)
    x += mu
    return x, mu


@pytest.mark.parametrize("shape", [(1, 3, 7, 5), (4, 1, 33, 17), (2, 3, 227, 227), (1, 1, 1, 1)])
def test_descent_step_is_the_numpy_update_bit_for_bit(shape):
    rng = np.random.default_rng(sum(shape))
    x, mu, gd, ga, gt = (rng.standard_normal(shape).astype(np.float32) for _ in range(5))
    consts = dict(sigma=68.92 * 3.1, lambda_alpha=0.216, lambda_tv=0.5, rate=0.004,
                  momentum=0.9)
    ref_x, ref_mu = _numpy_step(x, mu, gd, ga, gt, *consts.values())
    x0, mu0, gd0 = x.copy(), mu.copy(), gd.copy()
    ops.descent_step(x, mu, gd, ga, gt, **consts)
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(mu, ref_mu)
    np.testing.assert_array_equal(gd, gd0)  # the gradients are inputs, left alone
    # the momentum update of the assembled gradient, against float64
    g = (gd.astype(np.float64) * consts["sigma"] + ga.astype(np.float64) * consts["lambda_alpha"]
         + gt.astype(np.float64) * consts["lambda_tv"])
    mu64 = consts["momentum"] * mu0.astype(np.float64) - consts["rate"] * g
    assert_close(mu, mu64, rtol=1e-5, what="mu")
    assert_close(x, x0.astype(np.float64) + mu64, rtol=1e-5, what="x")


@pytest.mark.parametrize("bad, error, match", [
    (dict(x="f64"), TypeError, "x must be float32"),
    (dict(mu="fortran"), ValueError, "mu is updated in place"),
    (dict(x="readonly"), ValueError, "x is updated in place"),
    (dict(g_tv="shape"), ValueError, "g_tv has shape"),
    (dict(rate=float("nan")), ValueError, "rate must be a finite number"),
    (dict(sigma=0.0), ValueError, "sigma must be a finite number > 0"),
])
def test_descent_step_refuses_what_it_cannot_update_in_place(bad, error, match):
    rng = np.random.default_rng(0)
    arrays = {k: rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
              for k in ("x", "mu", "g_data", "g_alpha", "g_tv")}
    consts = dict(sigma=1.0, lambda_alpha=0.1, lambda_tv=0.5, rate=0.01, momentum=0.9)
    for k, v in bad.items():
        if v == "f64":
            arrays[k] = arrays[k].astype(np.float64)
        elif v == "fortran":
            arrays[k] = np.asfortranarray(arrays[k])
        elif v == "readonly":
            arrays[k].flags.writeable = False
        elif v == "shape":
            arrays[k] = arrays[k][:, :2]
        else:
            consts[k] = v
    with pytest.raises(error, match=match):
        ops.descent_step(arrays["x"], arrays["mu"], arrays["g_data"], arrays["g_alpha"],
                         arrays["g_tv"], **consts)
